/*
 * The JSON toolkit appmsg reads and writes headers with, public so that
 * programs can read requests the same way: a strict, allocation-free
 * scanner (RFC 8259 grammar, strict UTF-8, no raw control characters, no
 * U+0000 escape, bounded nesting), a quoter that writes strings as the
 * Python guide's json.dumps(..., ensure_ascii=False) does, and a UTF-8
 * check.
 *
 * Nothing here allocates or keeps a pointer past the call; every function
 * is thread-safe (no global state).
 */
#ifndef APPMSG_JSON_H
#define APPMSG_JSON_H

#include <stddef.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Returns n when p[0..n) is well-formed UTF-8 (Unicode's definition: no
 * overlong forms, no surrogates, nothing above U+10FFFF), else the offset
 * of the first byte of the first ill-formed sequence.
 */
APPMSG_API size_t appmsg_utf8_check(const void *p, size_t n);

/*
 * Quotes a UTF-8 string as a JSON string literal the way Python's
 * json.dumps(s, ensure_ascii=False) does ('"', '\\', \b \f \n \r \t
 * escaped, other control characters as \u00XX, everything else raw).
 * Writes at most cap bytes (no NUL) and returns the full quoted length.
 */
APPMSG_API size_t appmsg_json_quote(const char *s, size_t n, char *out, size_t cap);

/* JSON value kinds, as appmsg_json_scan() reports them. */
enum appmsg_json_type {
  APPMSG_JSON_STRING,
  APPMSG_JSON_NUMBER,
  APPMSG_JSON_OBJECT,
  APPMSG_JSON_ARRAY,
  APPMSG_JSON_TRUE,
  APPMSG_JSON_FALSE,
  APPMSG_JSON_NULL,
};

/* One member of a top-level object, as spans of the scanned text. */
struct appmsg_json_member {
  const char *key;            /* key bytes between the quotes, still escaped */
  size_t key_len;             /* their count */
  int key_escaped;            /* 1 if the key contains a backslash escape */
  const char *val;            /* the value's bytes (for a string: without its quotes) */
  size_t val_len;             /* their count */
  int val_escaped;            /* for strings: 1 if the value contains an escape */
  int val_plain_int;          /* for numbers: 1 if written as digits only */
  enum appmsg_json_type type; /* the value's kind */
};

/* Called for each member of the top-level object, in order. */
typedef void (*appmsg_json_member_cb)(void *ud, const struct appmsg_json_member *m);

/*
 * Strictly checks that buf[0..n) is one JSON value (optionally surrounded
 * by JSON whitespace) in valid UTF-8: RFC 8259 grammar, no raw control
 * characters in strings, no U+0000 escape, nesting at most max_depth.
 * Returns 0, APPMSG_E_CONTENT_UTF8 or APPMSG_E_CONTENT_JSON; on error sets
 * *err_offset (if not NULL) to the offending byte and *reason (if not
 * NULL) to a static description.
 */
APPMSG_API int appmsg_json_check(const void *buf, size_t n, int max_depth, size_t *err_offset,
                                 const char **reason);

/*
 * appmsg_json_check() that also tells the top-level value's kind (*top,
 * if not NULL) and, when it is an object, reports each of its members to
 * cb (if not NULL) as spans of buf, without allocating: a request can be
 * read in one linear pass whatever it holds.  Members come in order, so a
 * caller that keeps the last of a repeated key reads as Python does.
 * Reasons here are short ("nested too deeply"); offsets are into buf.
 */
APPMSG_API int appmsg_json_scan(const void *buf, size_t n, int max_depth,
                                enum appmsg_json_type *top, appmsg_json_member_cb cb, void *ud,
                                size_t *err_offset, const char **reason);

/*
 * Unescapes the inside of a JSON string that appmsg_json_scan() accepted
 * (a member's key or string value) into dst, which has room for n bytes
 * and may be src itself.  Returns the unescaped length (no NUL is added).
 */
APPMSG_API size_t appmsg_json_unescape(const char *src, size_t n, char *dst);

#ifdef __cplusplus
}
#endif
#endif
