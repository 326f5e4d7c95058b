/* Small things every module of the library uses: error sentences, log
 * lines, counters other threads read, the clock, the reconnect backoff.
 * Not installed; the library is built with hidden visibility, so none of
 * these is exported. */
#ifndef APPMSG_UTIL_H
#define APPMSG_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* printf-style checking of the library's own formatting functions; mingw-w64 names the C99
 * printf (its __USE_MINGW_ANSI_STDIO one, %zu and all) gnu_printf. */
#ifdef __MINGW_PRINTF_FORMAT
#define APPMSG__PRINTF(f, a) __attribute__((format(__MINGW_PRINTF_FORMAT, f, a)))
#else
#define APPMSG__PRINTF(f, a) __attribute__((format(printf, f, a)))
#endif

#include "appmsg/appmsg.h"

/* The allocator in use (alloc.h); the library allocates only through these. */
extern struct appmsg_allocator appmsg__allocator;
static inline void *appmsg__malloc(size_t n) {
  return appmsg__allocator.malloc(n);
}
static inline void *appmsg__calloc(size_t k, size_t n) {
  return appmsg__allocator.calloc(k, n);
}
static inline void *appmsg__realloc(void *p, size_t n) {
  return appmsg__allocator.realloc(p, n);
}
static inline void appmsg__free(void *p) {
  appmsg__allocator.free(p);
}
/* strdup() with the library's allocator. */
char *appmsg__strdup(const char *s);

/* Writes v in decimal into out (room for 20 bytes, no NUL); returns the length. */
size_t appmsg__u64_digits(char *out, uint64_t v);

/* appmsg_resolve() with getaddrinfo()'s flags (AI_PASSIVE, AI_NUMERICHOST ...). */
struct addrinfo;
int appmsg__resolve(const char *host, const char *port, int ai_flags, struct addrinfo **res,
                    char *err, size_t errlen);

/* Whether host names a Unix socket ("unix:/path"). */
int appmsg__is_unix(const char *host);

/* Whether err is one of the TLS layer's codes (TLS, TLS_HANDSHAKE, TLS_VERIFY). */
static inline int appmsg__is_tls_error(int err) {
  return err == APPMSG_E_TLS || err == APPMSG_E_TLS_HANDSHAKE || err == APPMSG_E_TLS_VERIFY;
}

/* Writes a message into the caller's buffer err of errlen bytes (NUL-terminated, cut to fit);
 * nothing when err is NULL or errlen is 0. */
void appmsg__errf(char *err, size_t errlen, const char *fmt, ...) APPMSG__PRINTF(3, 4);

/* Formats one log line and hands it to fn (nothing when fn is NULL). */
void appmsg__logf(appmsg_log_fn fn, void *ud, enum appmsg_log_level level, const char *fmt, ...)
    APPMSG__PRINTF(4, 5);

/* appmsg__logf() with the line's fields, which appmsg_log_fields() gives during the call. */
void appmsg__logf_fields(appmsg_log_fn fn, void *ud, enum appmsg_log_level level,
                         const struct appmsg_log_fields *f, const char *fmt, ...)
    APPMSG__PRINTF(5, 6);

/* Every field absent. */
#define APPMSG__LOG_FIELDS_NONE                                                                    \
  { NULL, NULL, NULL, -1, NULL, 0, -1.0 }

/* Adds n to a counter that other threads may read (conn.h's appmsg_counter_add()). */
#define appmsg__count appmsg_counter_add

/* Milliseconds on CLOCK_MONOTONIC, read now (the loop's own clock is
 * cached per iteration: appmsg_loop_now()). */
uint64_t appmsg__clock_ms(void);

/* The same clock in nanoseconds, read now. */
uint64_t appmsg__clock_ns(void);

/* For tests and fuzzers only: every clock of the library (loops, timers,
 * timeouts) reads now_ns() - nanoseconds of a clock the test moves itself
 * - instead of CLOCK_MONOTONIC; NULL goes back.  Process-wide; set it
 * before any loop is made. */
void appmsg__set_clock(uint64_t (*now_ns)(void));

#endif
