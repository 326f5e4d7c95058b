/* The encoder's and the decoder's functions for the connection and the
 * service.  Not installed. */
#ifndef APPMSG_CODEC_INTERNAL_H
#define APPMSG_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/decoder.h"
#include "appmsg/encoder.h"

/* Gives an empty encoder that holds no memory the buffer buf of cap bytes
 * (it frees it as its own). */
void appmsg__encoder_adopt(struct appmsg_encoder *e, void *buf, size_t cap);

/* appmsg_encoder_advance() that, when the queue empties, hands its buffer
 * to the caller (returned, its size in *cap) instead of freeing it;
 * otherwise returns NULL. */
void *appmsg__encoder_advance_keep(struct appmsg_encoder *e, size_t n, size_t *cap);

/* Drops the queued bytes after the first keep (bytes pushed last, not written yet). */
void appmsg__encoder_truncate(struct appmsg_encoder *e, size_t keep);

/* Whether e holds a buffer (it may be empty: kept for the next burst). */
static inline int appmsg__encoder_has_buffer(const struct appmsg_encoder *e) {
  return e->_buf != NULL;
}

/* The size an empty encoder's last burst grew to (its next one starts there). */
static inline size_t appmsg__encoder_hint(const struct appmsg_encoder *e) {
  return e->_hint;
}

/* Makes the decoder's header parsing take the general path only (on 0) or
 * the fast path where it can (on 1, the default).  For tests and fuzzers,
 * which check that both give the same results. */
void appmsg__decoder_set_fast_path(struct appmsg_decoder *d, int on);

/* appmsg_encoder_push_prepared() that also writes extra (extra_len bytes
 * of JSON members, each starting with ", ") after content-length. */
int appmsg__encoder_push_prepared(struct appmsg_encoder *e, const struct appmsg_prepared *p,
                                  const char *extra, size_t extra_len, const void *content,
                                  size_t len);

#endif
