/* Helpers shared by the test suites. */
#ifndef APPMSG_TESTUTIL_H
#define APPMSG_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "platform_config.h"

#include "appmsg/appmsg.h"
#include "util.h"

/* Runs a suite and returns the process exit status (0 when all passed).  Says how many tests
 * were skipped (tu_skip), so that a skip is never mistaken for a pass. */
int tu_run_suite(Suite *s);

/* The backend the suites run on beside poll: epoll where the build has it, else poll again
 * (a POSIX-only build, Windows).  The suites name this instead of APPMSG_LOOP_EPOLL. */
#if APPMSG_HAVE_EPOLL
#define TU_LOOP_EPOLL APPMSG_LOOP_EPOLL
#else
#define TU_LOOP_EPOLL APPMSG_LOOP_POLL
#endif

/* memmem(), which POSIX does not have: the first n-byte needle in hay, or NULL. */
const void *tu_memmem(const void *hay, size_t hay_len, const void *needle, size_t n);

/* strndup(), which Windows does not have: the first n bytes of s and a NUL, malloc()ed; fails
 * the test when out of memory. */
char *tu_strndup(const char *s, size_t n);

/* setenv() (value NULL: unsetenv()), which Windows spells _putenv_s(); fails the test on an
 * error. */
void tu_setenv(const char *name, const char *value);

/* Sleeps for ms milliseconds (in a polling wait, never to wait for an event). */
void tu_sleep_ms(unsigned ms);

/* Records that a test is not run here, and why: prints "SKIP name: reason" at once.  Call it
 * instead of adding the test to its case, so that Check does not count it as passed. */
void tu_skip(const char *test, const char *fmt, ...) APPMSG__PRINTF(2, 3);

/*
 * The longest a test waits for an event that must come (bytes, a close, a connection, a timer
 * that is due).  Every such wait returns as soon as the event happens; this bound is reached
 * only when it never does, so it is generous: a loaded machine must not fail a test.
 */
#define TU_EVENT_MS 10000

/* A loopback TCP port that refuses connections: a socket bound to 127.0.0.1 and not listening
 * (the kernel answers a SYN with a reset).  Writes the port's number into port and returns the
 * socket, which keeps the port from any other process until the caller closes it. */
appmsg_socket_t tu_refused_port(char *port, size_t len);

/* Closes a socket (close(), closesocket()). */
void tu_close(appmsg_socket_t fd);

/* A connected pair of stream sockets, both non-blocking (socketpair() on POSIX, a loopback
 * TCP pair on Windows).  0 or a negated errno. */
int tu_socketpair(appmsg_socket_t sv[2]);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t tu_now_ms(void);

/*
 * A stopwatch for upper bounds on how late something happens.  Wall time on a shared machine
 * includes time the process was ready to run but another one had the CPU; that time says nothing
 * about the code under test.  tu_watch_ms() is the wall time since tu_watch_start() minus the
 * time this process spent waiting for a CPU (the kernel's run_delay, /proc/self/schedstat), or
 * the plain wall time where the kernel does not tell.  Single-threaded tests only.
 */
struct tu_watch {
  uint64_t wall_ns;   /* CLOCK_MONOTONIC at the start */
  uint64_t queued_ns; /* run_delay at the start (0 if unknown) */
};
void tu_watch_start(struct tu_watch *w);
uint64_t tu_watch_ms(const struct tu_watch *w);

/* A growable string. */
struct tu_str {
  char *p;
  size_t len, cap;
};
void tu_str_add(struct tu_str *s, const void *data, size_t n);
void tu_str_addf(struct tu_str *s, const char *fmt, ...) APPMSG__PRINTF(2, 3);
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
