/*
 * The application message header: the JSON object between the 2-byte
 * length prefix and the content (see proto/PROTOCOL.md).
 *
 * The four required fields are plain C values.  Any other top-level keys
 * ("extra" keys, for protocol extensions) are kept and reachable through
 * the appmsg_header_extra_*() functions; their values are exchanged as
 * JSON text so that no JSON library appears in this API.
 *
 * Ownership: a header owns its strings.  appmsg_header_init() makes an
 * empty one, appmsg_header_cleanup() frees everything it owns and is safe
 * on a zeroed struct and on a header cleaned up before.
 */
#ifndef APPMSG_HEADER_H
#define APPMSG_HEADER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest content-length any appmsg limit may be set to: 2^53 - 1, the
 * largest integer every JSON implementation represents exactly. */
#define APPMSG_CONTENT_LENGTH_MAX ((uint64_t)9007199254740991ULL)

/* The largest header length the 16-bit prefix can express. */
#define APPMSG_HEADER_LENGTH_MAX 65535u

/* Nesting deeper than this inside the header is refused (HEADER_DEPTH). */
#define APPMSG_HEADER_DEPTH_MAX 32

enum appmsg_byteorder {
  APPMSG_BYTEORDER_UNSET = 0, /* only in an initialized, not yet set header */
  APPMSG_BYTEORDER_LITTLE = 1,
  APPMSG_BYTEORDER_BIG = 2,
};

/* The byte order of this machine, as a sender puts it in "byteorder". */
enum appmsg_byteorder appmsg_byteorder_host(void);

/* "little" / "big" / "unset"; static storage. */
const char *appmsg_byteorder_name(enum appmsg_byteorder bo);

struct appmsg_header {
  enum appmsg_byteorder byteorder; /* "byteorder": the sender's byte order */
  char *content_type;              /* "content-type": NUL-terminated UTF-8, owned */
  char *content_encoding;          /* "content-encoding": NUL-terminated UTF-8, owned */
  uint64_t content_length;         /* "content-length": bytes of content that follow */
  void *_extras;                   /* private: the other top-level keys (an opaque JSON object) */
  int _borrowed;                   /* private: 1 when the strings belong to a decoder */
  void *_wcache; /* private: this header's bytes around the length, for repeated sends */
};

/* Makes an empty header: host byte order, no type, no encoding, length 0. */
void appmsg_header_init(struct appmsg_header *h);

/* Frees what the header owns and leaves it zeroed. */
void appmsg_header_cleanup(struct appmsg_header *h);

/* Makes dst (uninitialized) an independent copy of src, for keeping a
 * decoded header past the decoder's next call.  Returns 0 or -ENOMEM
 * (dst is then empty but valid). */
int appmsg_header_copy(struct appmsg_header *dst, const struct appmsg_header *src);

/*
 * Sets content-type and content-encoding (copied; NULL leaves a field as
 * it is).  Returns 0, -EINVAL if a string is not valid UTF-8, or -ENOMEM.
 */
int appmsg_header_set(struct appmsg_header *h, const char *content_type,
                      const char *content_encoding);

/*
 * Checks that a header can be sent: byteorder little or big, both strings
 * present and valid UTF-8.  Returns 0 or a negative APPMSG_E_* code
 * (BYTEORDER, FIELD_MISSING, HEADER_UTF8).
 */
int appmsg_header_validate(const struct appmsg_header *h);

/* Number of extra (non-required) top-level keys. */
size_t appmsg_header_extra_count(const struct appmsg_header *h);

/* The key of extra number i (0-based, in the order received or added), or
 * NULL when i is out of range.  Valid until the header changes. */
const char *appmsg_header_extra_key(const struct appmsg_header *h, size_t i);

/* The value of an extra key when it is a JSON string, else NULL.  Valid
 * until the header changes. */
const char *appmsg_header_extra_string(const struct appmsg_header *h, const char *key);

/*
 * The value of an extra key as compact JSON text, newly allocated (free()
 * it), or NULL when the key is absent (or memory ran out).
 */
char *appmsg_header_extra_json(const struct appmsg_header *h, const char *key);

/*
 * Adds or replaces an extra key.  json is the value as JSON text (strictly
 * checked, see proto/PROTOCOL.md); _string takes a plain string value.
 * The four required keys cannot be set this way (-EINVAL).  Returns 0,
 * -EINVAL, a negative APPMSG_E_* code for bad JSON, or -ENOMEM.
 */
int appmsg_header_set_extra_json(struct appmsg_header *h, const char *key, const char *json);
int appmsg_header_set_extra_string(struct appmsg_header *h, const char *key, const char *value);

/* Removes an extra key; returns 0, or -ENOENT if it was not there. */
int appmsg_header_remove_extra(struct appmsg_header *h, const char *key);

/*
 * (Change a header's strings with appmsg_header_set(): a header that has
 * been written caches its text, and notices new pointers or byteorder but
 * not bytes changed in place.)
 *
 * Writes the header as the JSON text a frame carries, with content-length
 * set to content_length (h->content_length is ignored), formatted as the
 * Python guide's json.dumps(..., ensure_ascii=False) does: the four
 * required keys first, ", " and ": " separators, raw UTF-8.
 * Writes at most cap bytes to out (no NUL) and returns the full length,
 * so a call with cap 0 measures; or a negative code (header_validate's, or
 * -ENOMEM).
 */
long appmsg_header_write(const struct appmsg_header *h, uint64_t content_length, char *out,
                         size_t cap);

/*
 * Quotes a UTF-8 string as a JSON string literal the way Python's
 * json.dumps(s, ensure_ascii=False) does ('"', '\\', \b \f \n \r \t
 * escaped, other control characters as \u00XX, everything else raw).
 * Writes at most cap bytes (no NUL) and returns the full quoted length.
 */
size_t appmsg_json_quote(const char *s, size_t n, char *out, size_t cap);

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
int appmsg_json_check(const void *buf, size_t n, int max_depth, size_t *err_offset,
                      const char **reason);

/*
 * appmsg_json_check() that also tells the top-level value's kind (*top,
 * if not NULL) and, when it is an object, reports each of its members to
 * cb (if not NULL) as spans of buf, without allocating: a request can be
 * read in one linear pass whatever it holds.  Members come in order, so a
 * caller that keeps the last of a repeated key reads as Python does.
 * Reasons here are short ("nested too deeply"); offsets are into buf.
 */
int appmsg_json_scan(const void *buf, size_t n, int max_depth, enum appmsg_json_type *top,
                     appmsg_json_member_cb cb, void *ud, size_t *err_offset, const char **reason);

/*
 * Unescapes the inside of a JSON string that appmsg_json_scan() accepted
 * (a member's key or string value) into dst, which has room for n bytes
 * and may be src itself.  Returns the unescaped length (no NUL is added).
 */
size_t appmsg_json_unescape(const char *src, size_t n, char *dst);

#ifdef __cplusplus
}
#endif
#endif
