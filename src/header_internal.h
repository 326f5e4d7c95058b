/* The header module's functions for the decoder and the encoder.  Not
 * installed. */
#ifndef APPMSG_HEADER_INTERNAL_H
#define APPMSG_HEADER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/header.h"
#include "json_internal.h"

/* Parses a header already received whole: UTF-8, JSON and field rules of
 * PROTOCOL.md section 5, steps 3-5.  buf is modified (strings are
 * unescaped in place) and h's strings point into it (h must be released
 * with appmsg__header_release_borrowed).  fast (normally 1) lets a header
 * in the canonical layout take a fast path that gives the same results as
 * the general one; tests pass 0 to compare the two.  Returns 0 or a
 * negative code, with *err filled in; on CONTENT_TOO_LARGE *claimed holds
 * the content-length as written (digits, NUL-terminated, cut at 31). */
int appmsg__header_parse(char *buf, size_t n, uint64_t max_content, int fast,
                         struct appmsg_header *h, struct appmsg__json_error *err, char claimed[32]);

/* Frees what a header filled in by appmsg__header_parse owns (its extras),
 * without freeing its borrowed strings; leaves it zeroed. */
void appmsg__header_release_borrowed(struct appmsg_header *h);

/* Writes h's text with nothing where content-length's digits go and
 * stores that place in *split; as appmsg_header_write() otherwise. */
long appmsg__header_write_split(const struct appmsg_header *h, char *out, size_t cap,
                                size_t *split);

/* Whether h has extra keys (received or added). */
static inline int appmsg__header_has_extras(const struct appmsg_header *h) {
  return h->_extras != NULL;
}

#endif
