/*
 * libFuzzer target for the decoder.  The first input byte picks the limits
 * and a chunking pattern; the rest is the stream.  Checks, besides the
 * sanitizers' memory checks:
 *   - the outcome (messages, then clean end / error code and offset) is the
 *     same fed whole and fed in the chosen chunks;
 *   - feed() never consumes more than it was given, NEED_MORE consumes all;
 *   - every decoded message re-encodes and decodes to the same fields;
 *   - the canonical-header fast path and the general path agree.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "codec_internal.h"
#include "util.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                            \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* A cheap digest of the outcome sequence. */
struct outcome {
  uint64_t digest;
  int messages;
  int err;
  uint64_t err_off;
};

static void mix(uint64_t *h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    *h = (*h ^ b[i]) * 1099511628211ULL;
}

static void roundtrip(const struct appmsg_header *h, const void *content, size_t len) {
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  if (appmsg_encoder_push(&e, h, content, len) != 0) {
    appmsg_encoder_cleanup(&e);
    return; /* e.g. an extras-heavy header re-encoded above 64 KiB */
  }
  size_t n;
  const unsigned char *p = appmsg_encoder_peek(&e, &n);
  struct appmsg_limits lim = {APPMSG_CONTENT_LENGTH_MAX, 65535};
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, &lim);
  size_t used;
  CHECK(appmsg_decoder_feed(&d, p, n, &used) == APPMSG_MESSAGE);
  CHECK(used == n);
  const struct appmsg_header *g = appmsg_decoder_header(&d);
  CHECK(g->byteorder == h->byteorder);
  CHECK(strcmp(g->content_type, h->content_type) == 0);
  CHECK(strcmp(g->content_encoding, h->content_encoding) == 0);
  CHECK(g->content_length == len);
  CHECK(appmsg_header_extra_count(g) == appmsg_header_extra_count(h));
  size_t glen;
  const void *gc = appmsg_decoder_content(&d, &glen);
  CHECK(glen == len && (len == 0 || memcmp(gc, content, len) == 0));
  appmsg_decoder_cleanup(&d);
  appmsg_encoder_cleanup(&e);
}

static void run(const uint8_t *data, size_t size, const struct appmsg_limits *lim, size_t chunk,
                int check_roundtrip, int fast_path, struct outcome *o) {
  struct appmsg_decoder d;
  CHECK(appmsg_decoder_init(&d, lim) == 0);
  appmsg__decoder_set_fast_path(&d, fast_path);
  memset(o, 0, sizeof *o);
  o->digest = 1469598103934665603ULL;
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < chunk ? size - off : chunk;
    size_t end = off + n;
    while (off < end) {
      size_t used;
      enum appmsg_status st = appmsg_decoder_feed(&d, data + off, end - off, &used);
      CHECK(used <= end - off);
      CHECK(st != APPMSG_NEED_MORE || used == end - off);
      off += used;
      if (st == APPMSG_MESSAGE) {
        const struct appmsg_header *h = appmsg_decoder_header(&d);
        size_t len;
        const void *c = appmsg_decoder_content(&d, &len);
        CHECK(h && c && len == h->content_length);
        o->messages++;
        mix(&o->digest, h->content_type, strlen(h->content_type) + 1);
        mix(&o->digest, h->content_encoding, strlen(h->content_encoding) + 1);
        mix(&o->digest, &h->byteorder, sizeof h->byteorder);
        mix(&o->digest, c, len);
        if (check_roundtrip)
          roundtrip(h, c, len);
      } else if (st == APPMSG_ERROR) {
        o->err = appmsg_decoder_error(&d);
        o->err_off = appmsg_decoder_error_offset(&d);
        CHECK(o->err < 0 && appmsg_decoder_reason(&d) != NULL);
        CHECK(o->err_off <= d.offset + 1);
        appmsg_decoder_cleanup(&d);
        return;
      }
    }
  }
  o->err = appmsg_decoder_finish(&d);
  o->err_off = o->err ? appmsg_decoder_error_offset(&d) : 0;
  appmsg_decoder_cleanup(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t mode = data[0];
  data++;
  size--;
  struct appmsg_limits lim;
  appmsg_limits_default(&lim);
  if (mode & 0x80)
    lim.max_content_length = mode & 0x3F; /* tiny limits reach the limit paths */
  if (mode & 0x40)
    lim.max_header_length = 64 + (mode & 0x3F);
  size_t chunk = 1 + (mode % 7) * (mode % 5); /* 1..25 */
  struct outcome whole, cut, general;
  run(data, size, &lim, size ? size : 1, 1, 1, &whole);
  run(data, size, &lim, chunk, 0, 1, &cut);
  /* The general path must agree with the fast one. */
  run(data, size, &lim, size ? size : 1, 0, 0, &general);
  CHECK(whole.messages == general.messages && whole.digest == general.digest);
  CHECK(whole.err == general.err && whole.err_off == general.err_off);
  CHECK(whole.messages == cut.messages);
  CHECK(whole.digest == cut.digest);
  CHECK(whole.err == cut.err);
  CHECK(whole.err_off == cut.err_off);
  return 0;
}
