/*
 * The frame encoder: a byte queue that frames are appended to and that a
 * writer drains from the front (see include/appmsg/encoder.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "header_internal.h"
#include "util.h"

/* The largest first allocation an empty queue makes from what it last needed. */
#define HINT_MAX ((size_t)64 * 1024)

void appmsg_encoder_init(struct appmsg_encoder *e) {
  memset(e, 0, sizeof *e);
}

void appmsg_encoder_cleanup(struct appmsg_encoder *e) {
  appmsg__free(e->_buf);
  memset(e, 0, sizeof *e);
}

/* Makes room for extra more bytes at the end of the queue, first sliding
 * the unsent bytes to the front when that is enough. */
static int reserve(struct appmsg_encoder *e, size_t extra) {
  size_t pending = e->_len - e->_pos;
  if (extra > SIZE_MAX / 2 - pending)
    return -ENOMEM;
  if (e->_cap - e->_len >= extra)
    return 0;
  if (e->_pos > 0 && e->_cap - pending >= extra && pending <= e->_pos) {
    memcpy(e->_buf, e->_buf + e->_pos, pending); /* no overlap: pending <= _pos */
    e->_pos = 0;
    e->_len = pending;
    return 0;
  }
  /* An empty queue starts at the size the last burst of replies reached:
   * one allocation per burst, not one per doubling. */
  size_t cap = e->_cap ? e->_cap : e->_hint > 256 ? e->_hint : 256;
  while (cap < pending + extra)
    cap *= 2;
  unsigned char *nb = appmsg__malloc(cap);
  if (nb == NULL)
    return -ENOMEM;
  if (pending)
    memcpy(nb, e->_buf + e->_pos, pending);
  appmsg__free(e->_buf);
  e->_buf = nb;
  e->_cap = cap;
  e->_pos = 0;
  e->_len = pending;
  return 0;
}

long appmsg_frame_head(const struct appmsg_header *h, uint64_t content_length, void *out,
                       size_t cap) {
  if (content_length > APPMSG_CONTENT_LENGTH_MAX)
    return APPMSG_E_CONTENT_TOO_LARGE;
  unsigned char *o = out;
  long hlen = appmsg_header_write(h, content_length, cap >= 2 ? (char *)o + 2 : NULL,
                                  cap >= 2 ? cap - 2 : 0);
  if (hlen < 0)
    return hlen;
  if (hlen > (long)APPMSG_HEADER_LENGTH_MAX)
    return APPMSG_E_HEADER_TOO_LARGE;
  if (cap >= 2) {
    o[0] = (unsigned char)(hlen >> 8);
    o[1] = (unsigned char)(hlen & 0xFF);
  }
  return hlen + 2;
}

int appmsg_encoder_push(struct appmsg_encoder *e, const struct appmsg_header *h,
                        const void *content, size_t len) {
  /* Most headers fit a guess; measure first only when they do not. */
  size_t guess = 256;
  for (;;) {
    int rc = reserve(e, guess + len);
    if (rc)
      return rc;
    long n = appmsg_frame_head(h, len, e->_buf + e->_len, guess);
    if (n < 0)
      return (int)n;
    if ((size_t)n <= guess) {
      if (len)
        memcpy(e->_buf + e->_len + n, content, len);
      e->_len += (size_t)n + len;
      return 0;
    }
    guess = (size_t)n;
  }
}

struct appmsg_prepared {
  size_t split; /* where content-length's digits go */
  size_t len;   /* bytes of text, without the digits */
  char text[];  /* the header's text */
};

int appmsg_prepared_new(struct appmsg_prepared **out, const struct appmsg_header *h) {
  size_t split;
  long len = appmsg__header_write_split(h, NULL, 0, &split);
  if (len < 0)
    return (int)len;
  if (len + 1 > (long)APPMSG_HEADER_LENGTH_MAX) /* no room left for a digit */
    return APPMSG_E_HEADER_TOO_LARGE;
  struct appmsg_prepared *p = appmsg__malloc(sizeof *p + (size_t)len);
  if (p == NULL)
    return -ENOMEM;
  if (appmsg__header_write_split(h, p->text, (size_t)len, &p->split) != len) {
    appmsg__free(p);
    return -ENOMEM; /* the header changed under us: not reached single-threaded */
  }
  p->len = (size_t)len;
  *out = p;
  return 0;
}

void appmsg_prepared_free(struct appmsg_prepared *p) {
  appmsg__free(p);
}

int appmsg__encoder_push_prepared(struct appmsg_encoder *e, const struct appmsg_prepared *p,
                                  const char *extra, size_t extra_len, const void *content,
                                  size_t len) {
  if ((uint64_t)len > APPMSG_CONTENT_LENGTH_MAX)
    return APPMSG_E_CONTENT_TOO_LARGE;
  char digits[20];
  size_t nd = appmsg__u64_digits(digits, len);
  size_t hlen = p->len + nd + extra_len;
  if (hlen > APPMSG_HEADER_LENGTH_MAX)
    return APPMSG_E_HEADER_TOO_LARGE;
  int rc = reserve(e, 2 + hlen + len);
  if (rc)
    return rc;
  unsigned char *o = e->_buf + e->_len;
  o[0] = (unsigned char)(hlen >> 8);
  o[1] = (unsigned char)(hlen & 0xFF);
  o += 2;
  memcpy(o, p->text, p->split);
  o += p->split;
  memcpy(o, digits, nd);
  o += nd;
  if (extra_len) {
    memcpy(o, extra, extra_len);
    o += extra_len;
  }
  memcpy(o, p->text + p->split, p->len - p->split);
  o += p->len - p->split;
  if (len)
    memcpy(o, content, len);
  e->_len += 2 + hlen + len;
  return 0;
}

int appmsg_encoder_push_prepared(struct appmsg_encoder *e, const struct appmsg_prepared *p,
                                 const void *content, size_t len) {
  return appmsg__encoder_push_prepared(e, p, NULL, 0, content, len);
}

int appmsg_encoder_push_raw(struct appmsg_encoder *e, const void *data, size_t len) {
  if (len == 0)
    return 0;
  int rc = reserve(e, len);
  if (rc)
    return rc;
  memcpy(e->_buf + e->_len, data, len);
  e->_len += len;
  return 0;
}

const void *appmsg_encoder_peek(const struct appmsg_encoder *e, size_t *len) {
  *len = e->_len - e->_pos;
  return e->_buf ? (const void *)(e->_buf + e->_pos) : (const void *)"";
}

void *appmsg__encoder_advance_keep(struct appmsg_encoder *e, size_t n, size_t *cap) {
  size_t pending = e->_len - e->_pos;
  e->_pos += n < pending ? n : pending;
  if (e->_pos != e->_len)
    return NULL;
  /* Empty: the memory goes, an idle connection should cost nothing. */
  void *b = e->_buf;
  *cap = e->_cap;
  e->_hint = e->_cap < HINT_MAX ? e->_cap : HINT_MAX;
  e->_buf = NULL;
  e->_cap = e->_len = e->_pos = 0;
  return b;
}

void appmsg_encoder_advance(struct appmsg_encoder *e, size_t n) {
  size_t cap;
  appmsg__free(appmsg__encoder_advance_keep(e, n, &cap));
}

void appmsg__encoder_truncate(struct appmsg_encoder *e, size_t keep) {
  if (keep < e->_len - e->_pos)
    e->_len = e->_pos + keep;
}

void appmsg__encoder_adopt(struct appmsg_encoder *e, void *buf, size_t cap) {
  e->_buf = buf;
  e->_cap = cap;
  e->_pos = e->_len = 0;
}

size_t appmsg_encoder_pending(const struct appmsg_encoder *e) {
  return e->_len - e->_pos;
}
