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
  char *content_type;              /* "content-type": NUL-terminated UTF-8, owned */
  char *content_encoding;          /* "content-encoding": NUL-terminated UTF-8, owned */
  uint64_t content_length;         /* "content-length": bytes of content that follow */
  void *_extras;                   /* private: the other top-level keys (an opaque JSON object) */
  int _borrowed;                   /* private: 1 when the strings belong to a decoder */
};

/* Makes an empty header: host byte order, no type, no encoding, length 0. */
APPMSG_API void appmsg_header_init(struct appmsg_header *h);

/* Frees what the header owns and leaves it zeroed. */
APPMSG_API void appmsg_header_cleanup(struct appmsg_header *h);

/* Makes dst (uninitialized) an independent copy of src, for keeping a
 * decoded header past the decoder's next call.  Returns 0 or -ENOMEM
 * (dst is then empty but valid). */
APPMSG_API int appmsg_header_copy(struct appmsg_header *dst, const struct appmsg_header *src);

/*
 * Sets content-type and content-encoding (copied; NULL leaves a field as
 * it is).  Returns 0, -EINVAL if a string is not valid UTF-8, or -ENOMEM.
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

/* The key of extra number i (0-based, in the order received or added), or
 * NULL when i is out of range.  Valid until the header changes. */
APPMSG_API const char *appmsg_header_extra_key(const struct appmsg_header *h, size_t i);

/* The value of an extra key when it is a JSON string, else NULL.  Valid
 * until the header changes. */
APPMSG_API const char *appmsg_header_extra_string(const struct appmsg_header *h, const char *key);

/*
 * The value of an extra key as JSON text, newly allocated (free() it), or
 * NULL when the key is absent (or memory ran out): for a received header
 * the text exactly as the sender wrote it (9007199254740991 and 1e400 stay
 * as they are; see appmsg_header_extra_raw()), for a header built here the
 * compact text of the value.
 */
APPMSG_API char *appmsg_header_extra_json(const struct appmsg_header *h, const char *key);

/*
 * The value of an extra key as JSON text: for a received header, exactly
 * the bytes the sender wrote (a string with its quotes and escapes, a
 * number as written: 1.0 stays 1.0), which is how a server echoes a value
 * back byte for byte; for a header built here, the compact text of the
 * value.  Writes at most cap bytes to out (no NUL; out may be NULL with
 * cap 0 to measure) and returns the full length, or -ENOENT when the key
 * is absent (or is a required one), or -ENOMEM.
 */
APPMSG_API long appmsg_header_extra_raw(const struct appmsg_header *h, const char *key, char *out,
                                        size_t cap);

/*
 * Adds or replaces an extra key.  json is the value as JSON text (strictly
 * checked, see proto/PROTOCOL.md); _string takes a plain string value.
 * The four required keys cannot be set this way (-EINVAL).  Returns 0,
 * -EINVAL, a negative APPMSG_E_* code for bad JSON, or -ENOMEM.
 */
APPMSG_API int appmsg_header_set_extra_json(struct appmsg_header *h, const char *key,
                                            const char *json);
APPMSG_API int appmsg_header_set_extra_string(struct appmsg_header *h, const char *key,
                                              const char *value);

/* Removes an extra key; returns 0, or -ENOENT if it was not there. */
APPMSG_API int appmsg_header_remove_extra(struct appmsg_header *h, const char *key);

/*
 * Writes the header as the JSON text a frame carries, with content-length
 * set to content_length (h->content_length is ignored), formatted as the
 * Python guide's json.dumps(..., ensure_ascii=False) does: the four
 * required keys first, ", " and ": " separators, raw UTF-8.
 * Writes at most cap bytes to out (no NUL) and returns the full length,
 * so a call with cap 0 measures; or a negative code (header_validate's, or
 * -ENOMEM).  Every call writes the header anew from its fields; to send
 * the same header many times, prepare it once (appmsg_prepared_new() in
 * encoder.h).
 */
APPMSG_API long appmsg_header_write(const struct appmsg_header *h, uint64_t content_length,
                                    char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
