/*
 * bench-codec: in-process encode and decode rates of the message module,
 * beside two baselines run in the same process on the same bytes:
 *   memcpy      - copying the frame once (decoding cannot beat one copy)
 *   cJSON_Parse - parsing the header alone with cJSON (what a naive
 *                 decoder would spend on the header)
 * Frames: a search request (the guide's, 146 bytes), 4 KiB and 1 MiB of
 * content; decoded fed whole and in 1 KiB chunks.  Each figure is the best
 * of 5 repetitions.
 *
 *   bench-codec [SECONDS_PER_CASE]     (default 0.3)
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appmsg/appmsg.h"

static double per_case = 0.3;
static volatile size_t sink; /* keeps results alive */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct frame {
  const char *name;
  unsigned char *bytes;
  size_t len;     /* whole frame */
  size_t hdr_off; /* header start (2) */
  size_t hdr_len; /* header length */
  size_t content; /* content length */
  unsigned char *body;
  struct appmsg_header h;
};

typedef void (*op_fn)(struct frame *f, size_t arg);

static void op_decode(struct frame *f, size_t chunk) {
  static struct appmsg_decoder d;
  static int ready;
  if (!ready) {
    struct appmsg_limits lim = {2u << 20, 65535};
    appmsg_decoder_init(&d, &lim);
    ready = 1;
  }
  if (chunk == 0)
    chunk = f->len;
  for (size_t off = 0; off < f->len;) {
    size_t n = f->len - off < chunk ? f->len - off : chunk, used;
    size_t end = off + n;
    while (off < end) {
      enum appmsg_status st = appmsg_decoder_feed(&d, f->bytes + off, end - off, &used);
      off += used;
      if (st == APPMSG_MESSAGE) {
        size_t len;
        sink += ((const unsigned char *)appmsg_decoder_content(&d, &len))[0] + len;
      } else if (st == APPMSG_ERROR) {
        fprintf(stderr, "decode error: %s\n", appmsg_decoder_reason(&d));
        exit(1);
      }
    }
  }
}

static void op_encode(struct frame *f, size_t unused) {
  (void)unused;
  static struct appmsg_encoder e;
  if (appmsg_encoder_push(&e, &f->h, f->body, f->content) != 0)
    exit(1);
  size_t n;
  sink += ((const unsigned char *)appmsg_encoder_peek(&e, &n))[n - 1];
  appmsg_encoder_advance(&e, n);
}

static void op_memcpy(struct frame *f, size_t unused) {
  (void)unused;
  static unsigned char *dst;
  static size_t cap;
  if (cap < f->len) {
    free(dst);
    dst = malloc(cap = f->len);
  }
  memcpy(dst, f->bytes, f->len);
  sink += dst[f->len - 1];
}

static void op_cjson_header(struct frame *f, size_t unused) {
  (void)unused;
  cJSON *v = cJSON_ParseWithLength((const char *)f->bytes + f->hdr_off, f->hdr_len);
  sink += v != NULL;
  cJSON_Delete(v);
}

/* Runs op for about per_case seconds, as 5 timed repetitions, and returns
 * the best rate: on a shared or virtual machine noise only ever slows a
 * CPU-bound loop down, so the fastest repetition is the most faithful. */
static double rate(op_fn op, struct frame *f, size_t arg) {
  double slice = per_case / 5, best = 0;
  size_t iters = 1;
  for (;;) { /* calibrate: iterations for one slice */
    double t0 = now_s();
    for (size_t k = 0; k < iters; k++)
      op(f, arg);
    double dt = now_s() - t0;
    if (dt >= slice / 4) {
      iters = (size_t)((double)iters * slice / dt) + 1;
      break;
    }
    iters *= 4;
  }
  for (int r = 0; r < 5; r++) {
    double t0 = now_s();
    for (size_t k = 0; k < iters; k++)
      op(f, arg);
    double ops = (double)iters / (now_s() - t0);
    if (ops > best)
      best = ops;
  }
  return best;
}

static void make_frame(struct frame *f, const char *name, const char *type, const void *body,
                       size_t n) {
  f->name = name;
  appmsg_header_init(&f->h);
  appmsg_header_set(&f->h, type, type[0] == 't' ? "utf-8" : "binary");
  f->body = malloc(n ? n : 1);
  memcpy(f->body, body, n);
  f->content = n;
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  appmsg_encoder_push(&e, &f->h, body, n);
  size_t len;
  const void *p = appmsg_encoder_peek(&e, &len);
  f->bytes = malloc(len);
  memcpy(f->bytes, p, len);
  f->len = len;
  f->hdr_off = 2;
  f->hdr_len = (size_t)f->bytes[0] << 8 | f->bytes[1];
  appmsg_encoder_cleanup(&e);
}

static void row(const char *frame, const char *what, double ops, size_t bytes, double base) {
  printf("%-14s %-26s %14.0f %12.1f %10.2f\n", frame, what, ops, ops * (double)bytes / 1e6,
         base > 0 ? ops * (double)bytes / 1e6 / base : 0.0);
}

int main(int argc, char **argv) {
  if (argc > 1)
    per_case = atof(argv[1]) > 0 ? atof(argv[1]) : per_case;
  const char *search = "{\"action\": \"search\", \"value\": \"morpheus\"}";
  unsigned char *blob = malloc(1u << 20);
  for (size_t i = 0; i < (1u << 20); i++)
    blob[i] = (unsigned char)(i * 2654435761u >> 11);
  struct frame frames[3];
  make_frame(&frames[0], "search 146 B", "text/json", search, strlen(search));
  make_frame(&frames[1], "4 KiB", "binary/custom-client-binary-type", blob, 4096);
  make_frame(&frames[2], "1 MiB", "binary/custom-client-binary-type", blob, 1u << 20);

  printf("appmsg %s bench-codec, %.1f s per case; MB/s counts whole frame bytes;\n"
         "'x memcpy' is the MB/s ratio to a plain memcpy of the same frame.\n\n",
         appmsg_version(), per_case);
  printf("%-14s %-26s %14s %12s %10s\n", "frame", "operation", "frames/s", "MB/s", "x memcpy");
  for (int k = 0; k < 3; k++) {
    struct frame *f = &frames[k];
    double mc = rate(op_memcpy, f, 0);
    double mc_mbs = mc * (double)f->len / 1e6;
    char label[32];
    snprintf(label, sizeof label, "%s", f->name);
    row(label, "memcpy (baseline)", mc, f->len, mc_mbs);
    double cj = rate(op_cjson_header, f, 0);
    printf("%-14s %-26s %14.0f %12s %10s\n", "", "cJSON_Parse(header only)", cj, "-", "-");
    row("", "decode, whole", rate(op_decode, f, 0), f->len, mc_mbs);
    row("", "decode, 1 KiB chunks", rate(op_decode, f, 1024), f->len, mc_mbs);
    row("", "encode", rate(op_encode, f, 0), f->len, mc_mbs);
    printf("%-14s header %zu B, content %zu B: decoding the whole frame takes %.2fx the time\n"
           "%-14s cJSON_Parse takes for its header alone\n\n",
           "", f->hdr_len, f->content, cj / rate(op_decode, f, 0), "");
  }
  free(blob);
  for (int k = 0; k < 3; k++) {
    free(frames[k].bytes);
    free(frames[k].body);
    appmsg_header_cleanup(&frames[k].h);
  }
  return 0;
}
