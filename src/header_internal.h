/* The header module's functions for the decoder and the encoder, and the
 * layout of a header's extras (read only by header.c and the inline test
 * below).  Not installed. */
#ifndef APPMSG_HEADER_INTERNAL_H
#define APPMSG_HEADER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/header.h"
#include "json_internal.h"

/*
 * One extra member: its key and its value, both as JSON text.  The value
 * is always the text as received or as given (a string with its quotes
 * and escapes); the key is the text between its quotes as received, or,
 * for a member added by appmsg_header_set_extra_*(), the plain name given
 * (APPMSG__X_KEY_PLAIN), quoted when the header is written.
 */
struct appmsg__extra {
  const char *key; /* the key's bytes (see above) */
  const char *val; /* the value's JSON text */
  size_t key_len;  /* bytes at key */
  size_t val_len;  /* bytes at val */
  unsigned flags;  /* APPMSG__X_* */
  char *name;      /* the key unescaped, with a NUL: made by extra_key() when needed */
  char *str;       /* a string value unescaped, with a NUL: made by extra_string() */
};

enum {
  APPMSG__X_KEY_ESCAPED = 1,  /* the key as written holds backslash escapes */
  APPMSG__X_KEY_PLAIN = 2,    /* the key is a plain name, quoted when written */
  APPMSG__X_KEY_NUL = 4,      /* a NUL follows the key's bytes */
  APPMSG__X_OWNED = 8,        /* key starts an allocation of its own that also holds val */
  APPMSG__X_STRING = 16,      /* the value is a JSON string */
  APPMSG__X_VAL_ESCAPED = 32, /* that string holds backslash escapes */
};

/*
 * A header's extras, in order.  One allocation for a received header (the
 * entries, pointing into the decoder's header buffer) and for a copy (the
 * entries, then the copied text: content-type, content-encoding, and each
 * member's key and value, each followed by a NUL); a header built here
 * starts with the struct alone and keeps its entries in an array of their
 * own, each added member in an allocation of its own.
 */
struct appmsg__extras {
  size_t count;                    /* extras in use */
  size_t cap;                      /* room at v */
  struct appmsg__extra *v;         /* the extras: at in_block, or an array of their own */
  char *type;                      /* content-type's copy in this block (a copy), or NULL */
  char *encoding;                  /* content-encoding's copy in this block, or NULL */
  struct appmsg__extra in_block[]; /* a received header's or a copy's entries */
};

/* Parses a header already received whole: UTF-8, JSON and field rules of
 * PROTOCOL.md section 5, steps 3-5.  buf is modified (content-type and
 * content-encoding are unescaped in place, the extras' bytes are left as
 * received) and h's strings and extras point into it (h must be released
 * with appmsg__header_release_borrowed).  A header without extras costs
 * no allocation; one with extras costs one.  fast (normally 1) lets a
 * header in the canonical layout take a fast path that gives the same
 * results as the general one; tests pass 0 to compare the two.  Returns
 * 0 or a negative code, with *err filled in; on CONTENT_TOO_LARGE
 * *claimed holds the content-length as written (digits, NUL-terminated,
 * cut at 31). */
int appmsg__header_parse(char *buf, size_t n, uint64_t max_content, int fast,
                         struct appmsg_header *h, struct appmsg__json_error *err, char claimed[32]);

/* Frees what a header filled in by appmsg__header_parse owns (its extras),
 * without freeing its borrowed strings; leaves it zeroed. */
void appmsg__header_release_borrowed(struct appmsg_header *h);

/* Writes h's text with nothing where content-length's digits go and
 * stores that place in *split; as appmsg_header_write() otherwise. */
long appmsg__header_write_split(const struct appmsg_header *h, char *out, size_t cap,
                                size_t *split);

/* Whether h has extra keys (received, copied or added). */
static inline int appmsg__header_has_extras(const struct appmsg_header *h) {
  const struct appmsg__extras *e = h->_extras;
  return e != NULL && e->count > 0;
}

#endif
