/*
 * The application message header: the JSON object between the 2-byte
 * length prefix and the content (see proto/PROTOCOL.md).
 *
 * The four required fields are plain C values.  Any other top-level keys
 * ("extra" keys, for protocol extensions) are kept and reachable through
 * the appmsg_header_extra_*() functions.
 *
 * Extras are kept as text, never as parsed values: each value is the JSON
 * text exactly as received (PROTOCOL.md 2.2) or exactly as given to
 * appmsg_header_set_extra_json(), and it is read back and written out
 * byte for byte: 12345678901234567, 1e400, -0, 1.0 and "\u0041" stay as
 * they are, and a request-id is echoed as the requester wrote it.  A
 * received key is kept as written too (escapes included), so that writing
 * a received header or a copy of one reproduces each extra member; a key
 * added here is a plain UTF-8 name, quoted when the header is written.
 * Keys are compared after unescaping: "\u0072equest-id" is "request-id"
 * to every function that takes a key.  Extras keep their order: as
 * received, then as added; replacing the value of a key keeps the
 * member's place.
 *
 * Three kinds of header, one set of functions:
 * - received: appmsg_decoder_header() lends one; its strings and extras
 *   belong to the decoder and it cannot be changed (the set and remove
 *   functions return -EINVAL);
 * - a copy (appmsg_header_copy()): owns a copy of every string and of
 *   every extra's text, byte for byte, and may be changed;
 * - built here: appmsg_header_init(), then the set functions.
 *
 * Ownership: a header owns its strings (except a received one, see
 * above): change them through appmsg_header_set(), never free() them.
 * appmsg_header_init() makes an empty one, appmsg_header_cleanup() frees
 * everything it owns and is safe on a zeroed struct and on a header
 * cleaned up before.  Reading a header never changes what it holds, but
 * appmsg_header_extra_key() and appmsg_header_extra_string() keep what
 * they return inside the header (made on first use): do not call them on
 * one header from two threads at once.
 */
#ifndef APPMSG_HEADER_H
#define APPMSG_HEADER_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

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
APPMSG_API enum appmsg_byteorder appmsg_byteorder_host(void);

/* "little" / "big" / "unset"; static storage. */
APPMSG_API const char *appmsg_byteorder_name(enum appmsg_byteorder bo);

struct appmsg_header {
  enum appmsg_byteorder byteorder; /* "byteorder": the sender's byte order */
  char *content_type;              /* "content-type": NUL-terminated UTF-8 (see Ownership) */
  char *content_encoding;          /* "content-encoding": NUL-terminated UTF-8 (see Ownership) */
  uint64_t content_length;         /* "content-length": bytes of content that follow */
  void *_extras;                   /* private: the other top-level keys, as text, or NULL */
  int _borrowed;                   /* private: 1 when strings and extras belong to a decoder */
};

/* Makes an empty header: host byte order, no type, no encoding, length 0. */
APPMSG_API void appmsg_header_init(struct appmsg_header *h);

/* Frees what the header owns and leaves it zeroed. */
APPMSG_API void appmsg_header_cleanup(struct appmsg_header *h);

/* Makes dst (uninitialized) an independent copy of src (of any kind), for
 * keeping a decoded header past the decoder's next call: the same fields,
 * and every extra's key and value text byte for byte, in one allocation
 * that dst owns (release it with appmsg_header_cleanup()).  dst may be
 * changed; src is not.  Returns 0 or -ENOMEM (dst is then empty but
 * valid). */
APPMSG_API int appmsg_header_copy(struct appmsg_header *dst, const struct appmsg_header *src);

/*
 * Sets content-type and content-encoding (copied; NULL leaves a field as
 * it is).  Returns 0, -EINVAL if a string is not valid UTF-8 or h is a
 * received header, or -ENOMEM.
 */
APPMSG_API int appmsg_header_set(struct appmsg_header *h, const char *content_type,
                                 const char *content_encoding);

/*
 * Checks that a header can be sent: byteorder little or big, both strings
 * present and valid UTF-8.  Returns 0 or a negative APPMSG_E_* code
 * (BYTEORDER, FIELD_MISSING, HEADER_UTF8).
 */
APPMSG_API int appmsg_header_validate(const struct appmsg_header *h);

/* Number of extra (non-required) top-level keys. */
APPMSG_API size_t appmsg_header_extra_count(const struct appmsg_header *h);

/* The key of extra number i (0-based, in the order received or added),
 * unescaped and NUL-terminated, or NULL when i is out of range (or memory
 * ran out).  Owned by the header: valid until that extra is replaced or
 * removed or the header is cleaned up (for a received header, until the
 * decoder's next call). */
APPMSG_API const char *appmsg_header_extra_key(const struct appmsg_header *h, size_t i);

/* The value of an extra key when it is a JSON string, unescaped and
 * NUL-terminated; NULL when the key is absent, its value is not a string,
 * or memory ran out.  Owned by the header and valid as long as the key
 * appmsg_header_extra_key() returns. */
APPMSG_API const char *appmsg_header_extra_string(const struct appmsg_header *h, const char *key);

/*
 * The value of an extra key as JSON text, NUL-terminated and newly
 * allocated (the caller owns it: appmsg_free() it), or NULL when the key is
 * absent (or memory ran out): the same bytes appmsg_header_extra_raw()
 * gives.
 */
APPMSG_API char *appmsg_header_extra_json(const struct appmsg_header *h, const char *key);

/*
 * The value of an extra key as JSON text, for every kind of header the
 * text kept: for a received header (and a copy of one) exactly the bytes
 * the sender wrote, from the value's first byte to its last (a string
 * with its quotes and escapes, a number as written: 1.0 stays 1.0), which
 * is how a server echoes a value back byte for byte; for a value set
 * here, the text as given.  Writes at most cap bytes to out (no NUL; out
 * may be NULL with cap 0 to measure) and returns the full length, or
 * -ENOENT when the key is absent (or is a required one).  Allocates
 * nothing.
 */
APPMSG_API long appmsg_header_extra_raw(const struct appmsg_header *h, const char *key, char *out,
                                        size_t cap);

/*
 * Adds an extra key at the end, or replaces the value of an extra that
 * has that key (after unescaping) in its place; the key is then written
 * as given.  key is a plain UTF-8 name (quoted when written).  For
 * _json, json is the value as JSON text, strictly checked (PROTOCOL.md
 * 2.3; nesting at most 31 inside the header) and then kept as given, JSON
 * whitespace around it trimmed: it is written and read back byte for byte
 * (12345678901234567 and 1e400 go out as they are).  _string takes a
 * plain UTF-8 string, kept quoted as appmsg_json_quote() quotes it.  Both
 * copy what they are given.  The four required keys cannot be set this
 * way (-EINVAL), nor can a received header be changed (-EINVAL).
 * Returns 0, -EINVAL, a negative APPMSG_E_* code for bad JSON
 * (APPMSG_E_CONTENT_JSON, APPMSG_E_CONTENT_UTF8), or -ENOMEM (h is then
 * unchanged).
 */
APPMSG_API int appmsg_header_set_extra_json(struct appmsg_header *h, const char *key,
                                            const char *json);
APPMSG_API int appmsg_header_set_extra_string(struct appmsg_header *h, const char *key,
                                              const char *value);

/* Removes an extra key (the others keep their order); returns 0, -ENOENT
 * if it was not there, or -EINVAL for a received header. */
APPMSG_API int appmsg_header_remove_extra(struct appmsg_header *h, const char *key);

/*
 * Writes the header as the JSON text a frame carries, with content-length
 * set to content_length (h->content_length is ignored), formatted as the
 * Python guide's json.dumps(..., ensure_ascii=False) does: the four
 * required keys first, ", " and ": " separators, raw UTF-8; then the
 * extras in order, each key as kept (a received one as written, one added
 * here quoted) and each value's text exactly as kept.
 * Writes at most cap bytes to out (no NUL) and returns the full length,
 * so a call with cap 0 measures; or a negative code (header_validate's).
 * Allocates nothing.  Every call writes the header anew from its fields;
 * to send the same header many times, prepare it once
 * (appmsg_prepared_new() in encoder.h).
 */
APPMSG_API long appmsg_header_write(const struct appmsg_header *h, uint64_t content_length,
                                    char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
