/*
 * The frame encoder: pure, no I/O.
 *
 * An encoder is a queue of outgoing bytes.  appmsg_encoder_push() appends
 * one complete frame (2-byte prefix, header, content) built from a header
 * and content; the caller writes what appmsg_encoder_peek() shows and
 * reports what the write took with appmsg_encoder_advance():
 *
 *   appmsg_encoder_push(&e, &hdr, body, body_len);
 *   while (appmsg_encoder_pending(&e) > 0) {
 *     size_t n; const void *p = appmsg_encoder_peek(&e, &n);
 *     ssize_t w = appmsg_send(fd, p, n);  // or send() with MSG_NOSIGNAL
 *     if (w > 0) appmsg_encoder_advance(&e, (size_t)w); else ...
 *   }
 *
 * The queue keeps no memory once it is empty.
 */
#ifndef APPMSG_ENCODER_H
#define APPMSG_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "header.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_encoder {
  /* private */
  unsigned char *_buf; /* queued bytes live in _buf[_pos.._len) */
  size_t _pos;         /* first unsent byte */
  size_t _len;         /* end of queued bytes */
  size_t _cap;         /* allocated size of _buf */
  size_t _hint;        /* while empty (_buf freed): the size the last burst grew to */
};

/* Makes an empty encoder (equivalent to zeroing it). */
APPMSG_API void appmsg_encoder_init(struct appmsg_encoder *e);

/* Frees the queue.  Safe on a zeroed struct. */
APPMSG_API void appmsg_encoder_cleanup(struct appmsg_encoder *e);

/*
 * Appends one frame: h's fields (content-length is set to len, whatever
 * h->content_length says) and len bytes of content (copied; may be NULL
 * when len is 0).  Returns 0, or a negative code with nothing queued:
 * header_validate's codes, APPMSG_E_HEADER_TOO_LARGE when the header
 * exceeds 65535 bytes, APPMSG_E_CONTENT_TOO_LARGE above
 * APPMSG_CONTENT_LENGTH_MAX, -ENOMEM.
 */
APPMSG_API int appmsg_encoder_push(struct appmsg_encoder *e, const struct appmsg_header *h,
                                   const void *content, size_t len);

/* Appends raw bytes (for tests and unframed protocols). 0 or -ENOMEM. */
APPMSG_API int appmsg_encoder_push_raw(struct appmsg_encoder *e, const void *data, size_t len);

/* The unsent bytes, contiguous: returns a pointer and stores their count
 * in *len (0 and a non-NULL pointer when empty).  Valid until the next
 * push or advance. */
APPMSG_API const void *appmsg_encoder_peek(const struct appmsg_encoder *e, size_t *len);

/* Marks n unsent bytes as sent (n is capped at the pending count). */
APPMSG_API void appmsg_encoder_advance(struct appmsg_encoder *e, size_t n);

/* Number of unsent bytes. */
APPMSG_API size_t appmsg_encoder_pending(const struct appmsg_encoder *e);

/*
 * A prepared header: a header's text written once, to send many frames
 * with the same fields (a server's reply header) without writing it again
 * each time - a frame then costs two copies and a number.
 *
 * appmsg_prepared_new() takes a snapshot of h's fields as they are at the
 * call (h->content_length is ignored: each frame sets its own); later
 * changes to h do not reach it.  It is immutable, so one prepared header
 * may serve every connection, and every thread, at once.  Returns 0 and
 * *p (free it with appmsg_prepared_free()), or a negative code as for
 * appmsg_encoder_push() (header_validate's, APPMSG_E_HEADER_TOO_LARGE,
 * -ENOMEM).
 */
struct appmsg_prepared;
APPMSG_API int appmsg_prepared_new(struct appmsg_prepared **p, const struct appmsg_header *h);

/* Frees a prepared header.  NULL is fine. */
APPMSG_API void appmsg_prepared_free(struct appmsg_prepared *p);

/* appmsg_encoder_push() with a prepared header: the same bytes, faster. */
APPMSG_API int appmsg_encoder_push_prepared(struct appmsg_encoder *e,
                                            const struct appmsg_prepared *p, const void *content,
                                            size_t len);

/*
 * Stateless helper: writes the 2-byte prefix and the header for a frame of
 * content_length bytes into out (at most cap bytes) and returns the number
 * of bytes the prefix and header take (write again with a larger cap if
 * it is above cap), or a negative code as for appmsg_encoder_push().
 */
APPMSG_API long appmsg_frame_head(const struct appmsg_header *h, uint64_t content_length, void *out,
                                  size_t cap);

#ifdef __cplusplus
}
#endif
#endif
