/* Helpers shared by the test suites. */
#ifndef APPMSG_TESTUTIL_H
#define APPMSG_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "appmsg/appmsg.h"

/* Runs a suite and returns the process exit status (0 when all passed). */
int tu_run_suite(Suite *s);

/* A growable string. */
struct tu_str {
  char *p;
  size_t len, cap;
};
void tu_str_add(struct tu_str *s, const void *data, size_t n);
void tu_str_addf(struct tu_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tu_str_free(struct tu_str *s);

/* One test vector from proto/vectors (see its README.md). */
struct tu_vec {
  char path[512];           /* file it came from */
  unsigned char *stream;    /* the input bytes */
  size_t len;               /* their count */
  struct appmsg_limits lim; /* decoder limits */
  char *expect;             /* the expected trace (see tu_trace_*) */
  char *checks;             /* per message, in order: '1' if a content-check line is expected */
  int content_depth;        /* limit-content-depth: the content check's nesting limit */
};

/* Loads every *.vec under dir (recursively, sorted by path).  Returns the
 * count; aborts the test program on a malformed file. */
size_t tu_load_vectors(const char *dir, struct tu_vec **out);
void tu_free_vectors(struct tu_vec *v, size_t n);

/*
 * Decodes v->stream cut into chunks at the given ascending cut points
 * (ncuts of them, each in 1..len-1) and returns the outcome trace, in the
 * same text form as tu_vec.expect (caller frees).
 */
/* 0: tu_decode_trace() decodes headers by the general path only (the
 * fast path for canonical headers must give the same traces). */
extern int tu_fast_path;

char *tu_decode_trace(const struct tu_vec *v, const size_t *cuts, size_t ncuts);

/* Appends a message's trace lines for a decoded header and content. */
void tu_trace_message(struct tu_str *t, const struct appmsg_header *h, const void *content,
                      size_t len);

/* Hex decoding: returns the byte count, or -1 on a bad digit. */
long tu_unhex(const char *hex, unsigned char *out, size_t cap);

/* Reads a whole file; NULL if it cannot. */
unsigned char *tu_read_file(const char *path, size_t *len);

#endif
