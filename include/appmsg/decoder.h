/*
 * The incremental frame decoder: pure, no I/O.
 *
 * Feed it any chunk of the byte stream - one byte, half a header, three
 * frames at once - and it answers NEED_MORE, MESSAGE or ERROR:
 *
 *   for (size_t off = 0, used; off < n; off += used) {
 *     st = appmsg_decoder_feed(&d, buf + off, n - off, &used);
 *     if (st == APPMSG_MESSAGE)
 *       handle(appmsg_decoder_header(&d), appmsg_decoder_content(&d, &len));
 *     else if (st == APPMSG_ERROR)
 *       return fail(appmsg_decoder_error(&d), appmsg_decoder_reason(&d));
 *   }
 *   ... at end of stream: if (appmsg_decoder_finish(&d) < 0) truncated.
 *
 * feed() stops after each complete message, so a buffer holding several
 * frames is walked by calling it again with the rest.  Limits are checked
 * before anything is allocated: a header length is checked against
 * max_header_length as soon as its two bytes arrive, and content-length
 * against max_content_length as soon as the header is complete, so a
 * claimed content-length of 1e15 costs nothing.  Errors are sticky: once
 * feed() returned ERROR it returns ERROR (consuming nothing) until
 * appmsg_decoder_reset().
 *
 * Memory: a frame needs one header buffer (its length, at most 64 KiB)
 * and one content buffer (content-length bytes, none for 0; allocated
 * once, and every content byte is copied exactly once, from the caller's
 * chunk into it).  Both are allocated only when the frame needs them and
 * are kept for the next frame when small - a header buffer of up to
 * 1 KiB, a content buffer of up to 4 KiB - so a stream of small frames
 * costs no allocation per frame; larger ones are freed when their message
 * is released (by the next feed(), reset() or cleanup()).  So between
 * frames an idle decoder may hold up to 5 KiB, until reset() or
 * cleanup().  A content buffer handed over by take_content() is the
 * caller's.  A header of the four required fields costs no allocation; a
 * header with extra keys costs one, freed with its message.  An error
 * with a formatted reason allocates that reason, kept until reset() or
 * cleanup().  (Under AddressSanitizer no buffer is kept between frames,
 * so that a read past the end of one is caught.)
 */
#ifndef APPMSG_DECODER_H
#define APPMSG_DECODER_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "header.h"

#ifdef __cplusplus
extern "C" {
#endif

enum appmsg_status {
  APPMSG_ERROR = -1,    /* a protocol error; see appmsg_decoder_error() */
  APPMSG_NEED_MORE = 0, /* every byte consumed, the frame is not complete */
  APPMSG_MESSAGE = 1,   /* one complete message is ready */
};

/* Default limits, see proto/PROTOCOL.md "Limits". */
#define APPMSG_DEFAULT_MAX_CONTENT_LENGTH ((uint64_t)1 << 20) /* 1 MiB */
#define APPMSG_DEFAULT_MAX_HEADER_LENGTH APPMSG_HEADER_LENGTH_MAX

struct appmsg_limits {
  uint64_t max_content_length; /* largest content-length accepted, bytes */
  uint32_t max_header_length;  /* largest header length accepted, 1..65535 */
};

/* Fills in the defaults (1 MiB content, 65535-byte header). */
APPMSG_API void appmsg_limits_default(struct appmsg_limits *lim);

struct appmsg_decoder {
  /* read-only */
  struct appmsg_limits limits; /* in force; set by init */
  uint64_t offset;             /* stream bytes consumed since init/reset */
  /* private */
  int _state;                   /* where in the frame we are */
  int _err;                     /* sticky error code, 0 if none */
  uint64_t _frame_start;        /* stream offset of the current frame */
  uint64_t _err_offset;         /* stream offset the error points at */
  const char *_reason;          /* the error's reason (static or _reason_alloc) */
  char *_reason_alloc;          /* a formatted reason, allocated on error only */
  char *_hbuf;                  /* header bytes (kept for the next frame when small) */
  unsigned char *_content;      /* content bytes (kept for the next frame when small) */
  uint32_t _hcap;               /* bytes allocated at _hbuf */
  uint32_t _ccap;               /* bytes allocated at _content */
  uint64_t _chave;              /* content bytes received */
  uint32_t _hlen;               /* header length from the prefix */
  uint32_t _hhave;              /* header bytes received */
  unsigned char _prefix[2];     /* the length prefix as received */
  unsigned char _prefix_have;   /* prefix bytes received */
  unsigned char _seen_open;     /* 1 once the header's '{' was seen */
  unsigned char _content_taken; /* 1 after appmsg_decoder_take_content() */
  unsigned char _general_only;  /* 1: no fast path for canonical headers (tests) */
  struct appmsg_header _hdr;    /* the parsed header of the current message */
};

/*
 * Prepares a decoder.  lim may be NULL for the defaults.  Returns 0, or
 * -EINVAL when a limit is out of range (max_header_length 0 or above
 * 65535, max_content_length above APPMSG_CONTENT_LENGTH_MAX or above
 * SIZE_MAX).
 */
APPMSG_API int appmsg_decoder_init(struct appmsg_decoder *d, const struct appmsg_limits *lim);

/* Frees everything the decoder owns.  Safe on a zeroed struct. */
APPMSG_API void appmsg_decoder_cleanup(struct appmsg_decoder *d);

/* Forgets any partial frame, message and error; offset restarts at 0. */
APPMSG_API void appmsg_decoder_reset(struct appmsg_decoder *d);

/*
 * Consumes bytes from data[0..len) and stores how many in *consumed (never
 * NULL).  Returns MESSAGE when a frame completed (the bytes after it are
 * not consumed), NEED_MORE when all len bytes were consumed without
 * completing one, or ERROR.  The input is never kept after the call.
 * A message stays readable until the next feed(), reset() or cleanup().
 */
APPMSG_API enum appmsg_status appmsg_decoder_feed(struct appmsg_decoder *d, const void *data,
                                                  size_t len, size_t *consumed);

/*
 * Tells the decoder the stream ended.  Returns 0 when it ended cleanly
 * between frames, else APPMSG_E_TRUNCATED (which becomes the sticky error,
 * with the offset of the stream's end) or the error already set.
 */
APPMSG_API int appmsg_decoder_finish(struct appmsg_decoder *d);

/* Whether bytes of an unfinished frame have been consumed (for telling a
 * stalled frame from an idle connection). */
APPMSG_API int appmsg_decoder_in_frame(const struct appmsg_decoder *d);

/* The current message's header, or NULL when feed() did not just return
 * MESSAGE.  Borrowed: valid until the next feed(), reset() or cleanup(). */
APPMSG_API const struct appmsg_header *appmsg_decoder_header(const struct appmsg_decoder *d);

/* The current message's content and its length (never NULL when a message
 * is ready, even for length 0), or NULL.  Borrowed, like the header. */
APPMSG_API const void *appmsg_decoder_content(const struct appmsg_decoder *d, size_t *len);

/* Hands the content buffer over to the caller (appmsg_free() it); later calls to
 * appmsg_decoder_content() return NULL for this message.  NULL if none. */
APPMSG_API void *appmsg_decoder_take_content(struct appmsg_decoder *d, size_t *len);

/* The sticky error code (a negative APPMSG_E_* or -ENOMEM), or 0. */
APPMSG_API int appmsg_decoder_error(const struct appmsg_decoder *d);

/* A one-line human reason for the error ("content-length 2000000 is above
 * the limit 1048576"), or NULL.  Valid until reset() or cleanup(). */
APPMSG_API const char *appmsg_decoder_reason(const struct appmsg_decoder *d);

/* The stream offset the error points at (see proto/PROTOCOL.md). */
APPMSG_API uint64_t appmsg_decoder_error_offset(const struct appmsg_decoder *d);

#ifdef __cplusplus
}
#endif
#endif
