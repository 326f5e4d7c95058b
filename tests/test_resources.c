/*
 * What the library costs while it waits, and what it keeps over time: a
 * connected idle client and service, and a client waiting for a reply
 * that never comes, use almost no CPU and almost no loop iterations; a
 * million pipelined calls against a service whose output passes its
 * read_pause are all answered, in order, with the right content; 100,000
 * connect/close cycles leave the descriptors, the resident memory and the
 * library's own heap where they were after a warm-up.
 *
 * These are measurements, not sleeps: a loop that spins (a write interest
 * left on a connected socket, a timer re-armed for "now") burns a core and
 * runs thousands of iterations in two seconds, and the bounds below sit
 * far under that and far over what a quiet loop costs.  Every test runs
 * on both loop backends.
 *
 * The services of the first three tests run on a thread of their own, on
 * a loop of their own, as a server runs in a process of its own: each
 * loop's iterations and each thread's CPU time are then counted apart, so
 * a spin is pinned on the side that spins, and neither side's waiting can
 * be hidden by the other's (on one loop, the client's wait would also be
 * the server's).  The connect/close test puts its server on the client's
 * loop instead: one thread makes the process quiet at known points (every
 * connection closed on both sides) where descriptors and memory can be
 * compared exactly.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <time.h>
#ifndef _WIN32 /* rusage, thread CPU clocks, /proc: POSIX's measures below */
#include <dirent.h>
#include <sys/resource.h>
#endif

#include "appmsg/appmsg.h"
#include "platform.h"
#include "service_internal.h" /* the service's output gauge (io.out_queued) */
#include "testutil.h"

#ifdef _WIN32
#define PSAPI_VERSION 2 /* GetProcessMemoryInfo is kernel32's K32GetProcessMemoryInfo */
#include <psapi.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#if UNDER_ASAN
/* Empties ASan's quarantine of freed blocks and gives free memory back to the system. */
void __sanitizer_purge_allocator(void);
#endif

/* The waiting window of the CPU tests, and what may be spent in it: 2% of one core. */
#define WINDOW_MS 2000
#define CPU_MAX_US 40000
/* Loop iterations allowed in a window.  A quiet loop needs one or two (the wait that ends it,
 * the one that wrote a request); a spinning one runs thousands. */
#define ITER_MAX 10

/* ---- measuring ----------------------------------------------------------------------------- */

#ifndef _WIN32
typedef clockid_t thread_clock; /* a thread's CPU clock */

static uint64_t tv_us(struct timeval tv) {
  return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* CPU time (user + system) of the whole process, in microseconds. */
static uint64_t process_cpu_us(void) {
  struct rusage ru;
  ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
  return tv_us(ru.ru_utime) + tv_us(ru.ru_stime);
}

/* CPU time of a thread, by its CPU clock. */
static uint64_t thread_cpu_us(thread_clock id) {
  struct timespec ts;
  ck_assert_int_eq(clock_gettime(id, &ts), 0);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The calling thread's clock, and another thread's. */
static thread_clock this_thread_clock(void) {
  return CLOCK_THREAD_CPUTIME_ID;
}

static thread_clock clock_of(pthread_t t) {
  clockid_t id;
  ck_assert_int_eq(pthread_getcpuclockid(t, &id), 0);
  return id;
}

/* Descriptors the process holds (the directory's own is counted every time alike). */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  ck_assert_ptr_nonnull(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

/* A line of /proc/self/status in kB ("VmRSS:", "VmHWM:"). */
static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  ck_assert_ptr_nonnull(f);
  char line[256];
  long kb = -1;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0) {
      kb = strtol(line + kl, NULL, 10);
      break;
    }
  fclose(f);
  ck_assert_int_ge(kb, 0);
  return kb;
}

/* The resident size of the process, in kB. */
static long rss_kb(void) {
  return status_kb("VmRSS:");
}

/* The usable size of a block of malloc's. */
static size_t usable_size(void *p) {
  return malloc_usable_size(p);
}
#else
typedef HANDLE thread_clock; /* a thread, whose times GetThreadTimes() reads */

/* A FILETIME duration (100 ns units) in microseconds. */
static uint64_t ft_us(FILETIME f) {
  return (((uint64_t)f.dwHighDateTime << 32) | f.dwLowDateTime) / 10u;
}

/* CPU time (user + system) of the whole process, in microseconds (not clock(), which is wall
 * time on Windows). */
static uint64_t process_cpu_us(void) {
  FILETIME created, exited, kernel, user;
  ck_assert(GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user));
  return ft_us(kernel) + ft_us(user);
}

/* CPU time of a thread. */
static uint64_t thread_cpu_us(thread_clock t) {
  FILETIME created, exited, kernel, user;
  ck_assert(GetThreadTimes(t, &created, &exited, &kernel, &user));
  return ft_us(kernel) + ft_us(user);
}

/* The calling thread, and another thread (winpthreads keeps its handle). */
static thread_clock this_thread_clock(void) {
  return GetCurrentThread();
}

static thread_clock clock_of(pthread_t t) {
  HANDLE h = pthread_gethandle(t);
  ck_assert_ptr_nonnull(h);
  return h;
}

/* Handles the process holds (sockets are handles).  Wine's GetProcessHandleCount() answers 0
 * (a stub): then the valid handle values are counted, which the system hands out lowest
 * first, so that any handle kept is among them. */
static int open_fds(void) {
  DWORD n = 0;
  ck_assert(GetProcessHandleCount(GetCurrentProcess(), &n));
  if (n > 0)
    return (int)n;
  int valid = 0;
  for (uintptr_t h = 4; h < 4 * 65536u; h += 4) {
    DWORD flags;
    if (GetHandleInformation((HANDLE)h, &flags))
      valid++;
  }
  ck_assert_int_gt(valid, 0);
  return valid;
}

/* The resident size (working set) of the process, in kB. */
static long rss_kb(void) {
  PROCESS_MEMORY_COUNTERS pmc;
  memset(&pmc, 0, sizeof pmc);
  pmc.cb = sizeof pmc;
  ck_assert(GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc));
  return (long)(pmc.WorkingSetSize / 1024u);
}

/* The usable size of a block of malloc's. */
static size_t usable_size(void *p) {
  return _msize(p);
}
#endif

/* ---- the library's heap, counted ------------------------------------------------------------ */

/* Bytes the library holds now, through appmsg_set_allocator(): blocks are counted at their
 * usable size, the same number at allocation and at free. */
static atomic_long lib_bytes;

static void *count_malloc(size_t n) {
  void *p = malloc(n);
  if (p)
    atomic_fetch_add(&lib_bytes, (long)usable_size(p));
  return p;
}

static void *count_calloc(size_t k, size_t n) {
  void *p = calloc(k, n);
  if (p)
    atomic_fetch_add(&lib_bytes, (long)usable_size(p));
  return p;
}

static void *count_realloc(void *old, size_t n) {
  size_t before = old ? usable_size(old) : 0;
  void *p = realloc(old, n);
  if (p)
    atomic_fetch_add(&lib_bytes, (long)usable_size(p) - (long)before);
  else if (n == 0)
    atomic_fetch_sub(&lib_bytes, (long)before);
  return p;
}

static void count_free(void *p) {
  if (p)
    atomic_fetch_sub(&lib_bytes, (long)usable_size(p));
  free(p);
}

static const struct appmsg_allocator counting = {count_malloc, count_calloc, count_realloc,
                                                 count_free};

/* ---- a service on a thread of its own ---------------------------------------------------- */

struct bg {
  struct appmsg_loop *loop;
  struct appmsg_service *svc;
  struct appmsg_service_opts o;
  appmsg_socket_t stop[2];   /* a byte on stop[1] ends the thread (tu_socketpair()) */
  atomic_int stopping;       /* set by the stop pair's callback */
  atomic_ulong iterations;   /* appmsg_loop_run_once() calls that returned */
  atomic_int loop_error;     /* the loop's error, if it failed */
  atomic_ulong peak_out;     /* the most output the service had queued after a reply */
  atomic_ulong handler_errs; /* requests the handlers could not answer */
  pthread_t thread;
  thread_clock cpu; /* the thread's CPU clock */
  char port[16];
};

static void bg_on_stop(struct appmsg_loop *l, appmsg_socket_t fd, unsigned ev, void *ud) {
  (void)l;
  (void)ev;
  struct bg *b = ud;
  char x;
  while (appmsg_recv(fd, &x, 1) == 1)
    ;
  atomic_store(&b->stopping, 1);
}

static void *bg_main(void *arg) {
  struct bg *b = arg;
  while (!atomic_load(&b->stopping)) {
    int rc = appmsg_loop_run_once(b->loop, -1);
    if (rc < 0) {
      atomic_store(&b->loop_error, rc);
      break;
    }
    atomic_fetch_add(&b->iterations, 1);
  }
  return NULL;
}

/* Starts a service on backend with the handlers add() registers; tune() may change its options
 * first.  Both may be NULL. */
static void bg_start(struct bg *b, int backend, void (*tune)(struct appmsg_service_opts *),
                     void (*add)(struct bg *)) {
  memset(b, 0, sizeof *b);
  ck_assert_int_eq(appmsg_loop_new(&b->loop, (enum appmsg_loop_backend)backend), 0);
  appmsg_service_opts_default(&b->o);
  if (tune)
    tune(&b->o);
  ck_assert_int_eq(appmsg_service_new(&b->svc, b->loop, &b->o), 0);
  if (add)
    add(b);
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_service_listen(b->svc, "127.0.0.1", "0", err, sizeof err);
  ck_assert_msg(rc == 0, "listen: %s", err);
  snprintf(b->port, sizeof b->port, "%s", strrchr(appmsg_service_address(b->svc), ':') + 1);
  ck_assert_int_eq(tu_socketpair(b->stop), 0);
  ck_assert_int_eq(appmsg_loop_watch(b->loop, b->stop[0], APPMSG_EV_READ, bg_on_stop, b), 0);
  ck_assert_int_eq(pthread_create(&b->thread, NULL, bg_main, b), 0);
  b->cpu = clock_of(b->thread);
}

static void bg_stop(struct bg *b) {
  ck_assert_int_eq(appmsg_send(b->stop[1], "x", 1), 1);
  pthread_join(b->thread, NULL);
  ck_assert_int_eq(atomic_load(&b->loop_error), 0);
  appmsg_service_free(b->svc);
  appmsg_loop_unwatch(b->loop, b->stop[0]);
  tu_close(b->stop[0]);
  tu_close(b->stop[1]);
  appmsg_loop_free(b->loop);
}

/* ---- what the client side sees ----------------------------------------------------------- */

struct seen {
  size_t calls, ok;
  int last_status;
  char last_result[128], last_reason[256];
};

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct seen *s = ud;
  s->calls++;
  s->last_status = r->status;
  snprintf(s->last_result, sizeof s->last_result, "%s", r->result ? r->result : "");
  snprintf(s->last_reason, sizeof s->last_reason, "%s", r->reason ? r->reason : "");
  if (r->status == 0)
    s->ok++;
}

/* Runs loop until *count reaches want, at most ms; returns the iterations it took. */
static unsigned long run_until(struct appmsg_loop *loop, const size_t *count, size_t want,
                               uint64_t ms) {
  uint64_t end = tu_now_ms() + ms;
  unsigned long iterations = 0;
  for (uint64_t now; *count < want && (now = tu_now_ms()) < end; iterations++)
    ck_assert_int_ge(appmsg_loop_run_once(loop, (int)(end - now)), 0);
  return iterations;
}

/* ---- 1a: idle ------------------------------------------------------------------------------ */

START_TEST(an_idle_connected_client_and_service_cost_no_cpu) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  struct bg b;
  bg_start(&b, _i, NULL, NULL);
  struct appmsg_loop *loop;
  ck_assert_int_eq(appmsg_loop_new(&loop, (enum appmsg_loop_backend)_i), 0);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", b.port, &o), 0);
  /* One round trip: connected at both ends, the request read, the reply written and read. */
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "ping", NULL), 0);
  run_until(loop, &s.calls, 1, TU_EVENT_MS);
  ck_assert_msg(s.ok == 1, "ping: %s", s.last_reason);
  ck_assert(appmsg_client_connected(c));

  uint64_t proc0 = process_cpu_us(), main0 = thread_cpu_us(this_thread_clock());
  uint64_t svc0 = thread_cpu_us(b.cpu);
  unsigned long siter0 = atomic_load(&b.iterations), citer = 0;
  uint64_t t0 = tu_now_ms(), end = t0 + WINDOW_MS;
  for (uint64_t now; (now = tu_now_ms()) < end; citer++)
    ck_assert_int_ge(appmsg_loop_run_once(loop, (int)(end - now)), 0);
  uint64_t proc = process_cpu_us() - proc0;
  uint64_t mainc = thread_cpu_us(this_thread_clock()) - main0;
  uint64_t svcc = thread_cpu_us(b.cpu) - svc0, took = tu_now_ms() - t0;
  unsigned long siter = atomic_load(&b.iterations) - siter0;
  printf("idle %s: %llu ms: process %.1f ms CPU (client thread %.1f, service thread %.1f); "
         "client loop %lu iterations, service loop %lu\n",
         appmsg_loop_backend_name(loop), (unsigned long long)took, proc / 1000.0, mainc / 1000.0,
         svcc / 1000.0, citer, siter);
  fflush(stdout);
  ck_assert_msg(proc < CPU_MAX_US, "the process spent %.1f ms of CPU idling for %llu ms",
                proc / 1000.0, (unsigned long long)took);
  ck_assert_msg(citer <= ITER_MAX, "the idle client's loop ran %lu iterations in %llu ms", citer,
                (unsigned long long)took);
  ck_assert_msg(siter <= ITER_MAX, "the idle service's loop ran %lu iterations in %llu ms", siter,
                (unsigned long long)took);
  ck_assert(appmsg_client_connected(c));
  appmsg_client_free(c);
  appmsg_loop_free(loop);
  bg_stop(&b);
}
END_TEST

/* ---- 1b: a reply that never comes ---------------------------------------------------------- */

START_TEST(a_client_waiting_for_a_silent_server_costs_no_cpu_and_times_out) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  appmsg_socket_t lfd;
  char err[APPMSG_NET_ERRLEN], port[16];
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 4, &lfd, err, sizeof err), 0);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  struct appmsg_loop *loop;
  ck_assert_int_eq(appmsg_loop_new(&loop, (enum appmsg_loop_backend)_i), 0);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.call_timeout_ms = WINDOW_MS;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  for (uint64_t now; !appmsg_client_connected(c) && (now = tu_now_ms()) < end;)
    ck_assert_int_ge(appmsg_loop_run_once(loop, (int)(end - now)), 0);
  ck_assert(appmsg_client_connected(c));
  /* The server: accepts, and never reads or writes. */
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  ck_assert_int_eq(appmsg__poll(&p, 1, TU_EVENT_MS), 1);
  appmsg_socket_t afd;
  ck_assert_int_eq(appmsg_accept(lfd, &afd), 0);
  ck_assert_int_eq(appmsg_set_nonblock(afd, 0), 0);

  struct seen s = {0};
  uint64_t proc0 = process_cpu_us(), t0 = tu_now_ms();
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "search", "value", "ring", NULL), 0);
  unsigned long iter = run_until(loop, &s.calls, 1, WINDOW_MS + TU_EVENT_MS);
  uint64_t proc = process_cpu_us() - proc0, took = tu_now_ms() - t0;
  size_t arrived = 0;
  ck_assert_int_eq(appmsg__sock_pending(afd, &arrived), 0);
  printf("silent server %s: waited %llu ms: %.1f ms CPU, %lu iterations, request of %zu bytes "
         "arrived, status %s\n",
         appmsg_loop_backend_name(loop), (unsigned long long)took, proc / 1000.0, iter, arrived,
         appmsg_errname(s.last_status));
  fflush(stdout);
  ck_assert_uint_eq(s.calls, 1);
  ck_assert_msg(s.last_status == APPMSG_E_TIMEOUT, "the call ended with %s: %s",
                appmsg_errname(s.last_status), s.last_reason);
  ck_assert_uint_ge(took, WINDOW_MS);
  ck_assert_uint_gt(arrived, 0); /* it was sent: the client waited for the reply, not to write */
  ck_assert_msg(proc < CPU_MAX_US, "the client spent %.1f ms of CPU waiting %llu ms for a reply",
                proc / 1000.0, (unsigned long long)took);
  ck_assert_msg(iter <= ITER_MAX, "the waiting client's loop ran %lu iterations in %llu ms", iter,
                (unsigned long long)took);
  appmsg_client_free(c);
  appmsg_loop_free(loop);
  tu_close(afd);
  tu_close(lfd);
}
END_TEST

/* ---- 1c: a million pipelined calls -------------------------------------------------------- */

/* A million calls in both builds: on two cores, 3 s plain and 20 s under ASan alone, 5 to 9 s
 * and 26 to 46 s while the other build's tests run. */
#define PIPELINE_CALLS 1000000u
#define PIPELINE_WINDOW 5000u /* calls in flight */
#define REPLY_LEN 4096u       /* the result text of each reply */
#define PIPELINE_MS 600000u   /* the bound on the whole run: over 10 times the slowest seen */

/* The result of call i: "i:" then bytes of pattern from (i % 61), REPLY_LEN in all. */
static char pattern[2 * REPLY_LEN];

static void init_pattern(void) {
  for (size_t k = 0; k < sizeof pattern; k++)
    pattern[k] = (char)('A' + k % 52 + (k % 52 >= 26 ? 6 : 0)); /* letters only: no escaping */
}

static size_t result_for(unsigned long i, char *out) {
  int n = snprintf(out, 24, "%lu:", i);
  memcpy(out + n, pattern + i % 61, REPLY_LEN - (size_t)n);
  out[REPLY_LEN] = '\0';
  return REPLY_LEN;
}

static void on_big(struct appmsg_request *r, void *ud) {
  struct bg *b = ud;
  const char *v = appmsg_request_string(r, "value");
  static _Thread_local char text[REPLY_LEN + 1];
  if (v == NULL) {
    atomic_fetch_add(&b->handler_errs, 1);
    appmsg_reply_error(r, "BAD_REQUEST", "no value");
    return;
  }
  result_for(strtoul(v, NULL, 10), text);
  if (appmsg_reply_result(r, text) != 0)
    atomic_fetch_add(&b->handler_errs, 1);
  /* The reply is queued on the connection now: what the service holds for sending. */
  unsigned long q = (unsigned long)appmsg_counter_get(&b->svc->io.out_queued);
  unsigned long peak = atomic_load(&b->peak_out);
  while (q > peak && !atomic_compare_exchange_weak(&b->peak_out, &peak, q))
    ;
}

static void add_big(struct bg *b) {
  ck_assert_int_eq(appmsg_service_handle(b->svc, "big", on_big, b), 0);
}

struct pipeline {
  struct appmsg_client *c;
  unsigned long issued, answered; /* calls made, replies seen (in order) */
  unsigned long bad;              /* replies out of order, failed or with the wrong content */
  unsigned long queue_full;       /* calls refused with APPMSG_E_QUEUE_FULL, to be made again */
  int other_rc;                   /* a call refused for another reason */
  char first_bad[200];
};

static void on_big_reply(const struct appmsg_reply *r, void *ud);

/* Makes calls until PIPELINE_WINDOW are in flight (or all are made), or the client's queue is
 * full; the loop then runs and they are made again, from here or from a reply's callback. */
static void top_up(struct pipeline *p) {
  while (p->issued < PIPELINE_CALLS && p->issued - p->answered < PIPELINE_WINDOW &&
         p->other_rc == 0) {
    char v[24];
    snprintf(v, sizeof v, "%lu", p->issued);
    int rc = appmsg_client_call(p->c, on_big_reply, (void *)(uintptr_t)(p->issued + 1), "big",
                                "value", v, NULL);
    if (rc == APPMSG_E_QUEUE_FULL) {
      p->queue_full++;
      return;
    }
    if (rc != 0) {
      p->other_rc = rc;
      return;
    }
    p->issued++;
  }
}

static struct pipeline pl;

static void note_bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note_bad(const char *fmt, ...) {
  if (pl.bad++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pl.first_bad, sizeof pl.first_bad, fmt, ap);
    va_end(ap);
  }
}

static void on_big_reply(const struct appmsg_reply *r, void *ud) {
  unsigned long i = (unsigned long)(uintptr_t)ud - 1; /* the call this callback belongs to */
  if (i != pl.answered) {
    note_bad("callback of call %lu ran when call %lu was next", i, pl.answered);
  } else if (r->status != 0 || r->result == NULL) {
    note_bad("call %lu failed: %s (%s)", i, appmsg_errname(r->status), r->reason ? r->reason : "");
  } else {
    static char want[REPLY_LEN + 1];
    result_for(i, want);
    if (strlen(r->result) != REPLY_LEN || memcmp(r->result, want, REPLY_LEN) != 0)
      note_bad("call %lu got the wrong content (%lu bytes)", i, strlen(r->result));
  }
  pl.answered++;
  top_up(&pl);
}

START_TEST(a_million_pipelined_calls_past_the_read_pause_are_all_answered_in_order) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  init_pattern();
  struct bg b;
  bg_start(&b, _i, NULL, add_big);
  struct appmsg_loop *loop;
  ck_assert_int_eq(appmsg_loop_new(&loop, (enum appmsg_loop_backend)_i), 0);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  /* Small budgets, so that the client's queue fills and the caller has to wait for room. */
  o.max_queued = 256;
  o.max_queued_bytes = 64 * 1024;
  o.call_timeout_ms = 60000; /* a backstop: a stall fails the calls instead of hanging */
  memset(&pl, 0, sizeof pl);
  ck_assert_int_eq(appmsg_client_new(&pl.c, loop, "127.0.0.1", b.port, &o), 0);
  uint64_t t0 = tu_now_ms(), end = t0 + PIPELINE_MS;
  top_up(&pl);
  for (uint64_t now; pl.answered < PIPELINE_CALLS && pl.other_rc == 0 && pl.bad == 0 &&
                     (now = tu_now_ms()) < end;) {
    ck_assert_int_ge(appmsg_loop_run_once(loop, (int)(end - now)), 0);
    top_up(&pl); /* the calls the full queue refused */
  }
  uint64_t took = tu_now_ms() - t0;
  unsigned long peak = atomic_load(&b.peak_out);
  size_t read_pause = b.o.server.conn.read_pause;
  printf("pipeline %s: %lu calls (%u in flight, %u-byte results) answered in %llu ms; %lu "
         "refused with QUEUE_FULL and made again; the service's output peaked at "
         "%lu bytes (read_pause %zu)\n",
         appmsg_loop_backend_name(loop), pl.answered, PIPELINE_WINDOW, REPLY_LEN,
         (unsigned long long)took, pl.queue_full, peak, read_pause);
  fflush(stdout);
  ck_assert_msg(pl.bad == 0, "%lu bad replies; the first: %s", pl.bad, pl.first_bad);
  ck_assert_msg(pl.other_rc == 0, "a call was refused: %s", appmsg_strerror(pl.other_rc));
  ck_assert_msg(pl.answered == PIPELINE_CALLS, "%lu of %u calls answered in %llu ms", pl.answered,
                PIPELINE_CALLS, (unsigned long long)took);
  ck_assert_uint_eq(appmsg_client_connects(pl.c), 1);
  ck_assert_uint_eq(appmsg_client_pending(pl.c), 0);
  ck_assert_uint_eq(atomic_load(&b.handler_errs), 0);
  /* The client did have to wait for room (the first window alone is ten times its byte budget). */
  ck_assert_uint_gt(pl.queue_full, 0);
  /* The service's output did pass read_pause, and reading paused there: what is queued past it
   * is at most the replies to one read's requests (a connection reads 64 KiB at a time; every
   * request frame here is over 120 bytes, every reply frame under REPLY_LEN + 200), not the
   * window's 20 MB. */
  ck_assert_msg(peak > read_pause, "the service's output never passed read_pause (%lu bytes)",
                peak);
  size_t one_read = (65536 / 120 + 1) * (REPLY_LEN + 200);
  ck_assert_msg(peak <= read_pause + one_read,
                "the service queued %lu bytes of output: reading did not pause at %zu", peak,
                read_pause);
  appmsg_client_free(pl.c);
  appmsg_loop_free(loop);
  bg_stop(&b);
}
END_TEST

/* ---- 1d: connect/close cycles ---------------------------------------------------------------- */

#define CYCLES 100000u
#define CYCLES_WARMUP 10000u
#define CYCLES_MS 600000u
/* What memory may move between the two measures.  Any leak per cycle is at least one block of
 * the smallest size (32 bytes from malloc) times the 90,000 cycles measured: 2.8 MB.  The
 * library's own bytes, counted through its allocator at quiet points, move only by the buffers
 * its loop keeps for reuse (the spare output buffer: 64 KiB at most); the resident size also
 * moves by the pages malloc keeps or returns at the top of its heaps. */
#define LIB_SLACK (64 * 1024L)
#define RSS_SLACK_KB 1024L

/* The server: one reply per connection, then a graceful close - so the server closes first,
 * its side keeps the TIME_WAIT, and the client's 28,000 ephemeral ports are not used up by
 * 100,000 connections in seconds. */
static void once_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                         size_t len, void *ud) {
  (void)h;
  (void)content;
  (void)len;
  (void)ud;
  static const char body[] = "{\"result\": \"bye\"}";
  struct appmsg_header rh;
  appmsg_header_init(&rh);
  ck_assert_int_eq(appmsg_header_set(&rh, "text/json", "utf-8"), 0);
  ck_assert_int_eq(appmsg_conn_send(c, &rh, body, sizeof body - 1), 0);
  appmsg_header_cleanup(&rh);
  appmsg_conn_close(c);
}

struct snapshot {
  int fds;
  long rss_kb;
  long lib;
};

/* Runs the loop until the server's connections are all closed, then measures. */
static struct snapshot quiet_snapshot(struct appmsg_loop *loop, struct appmsg_server *srv) {
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  for (uint64_t now; appmsg_server_conn_count(srv) > 0 && (now = tu_now_ms()) < end;)
    ck_assert_int_ge(appmsg_loop_run_once(loop, (int)(end - now)), 0);
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 0);
#if UNDER_ASAN
  __sanitizer_purge_allocator(); /* (see the cycles) */
#endif
  struct snapshot s = {open_fds(), rss_kb(), atomic_load(&lib_bytes)};
  return s;
}

/*
 * Each cycle is a whole client: appmsg_client_new(), one call, appmsg_client_free() from outside
 * the callbacks (which finishes at once).  That makes and frees everything a connection has on
 * both sides - the client itself, its call pool and prepared header, the connection, its
 * decoder and output buffers, the socket, the loop's watch and timers - and runs the server's
 * graceful close and the client's end of stream.  A client that reconnects by itself would keep
 * the client object (a leak in its making or freeing would not show) and be paced by its
 * backoff, which waits at least half of backoff_min_ms, with jitter, per cycle.
 */
START_TEST(a_hundred_thousand_connect_close_cycles_keep_descriptors_and_memory_flat) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  atomic_store(&lib_bytes, 0);
  ck_assert_int_eq(appmsg_set_allocator(&counting), 0);
  struct appmsg_loop *loop;
  ck_assert_int_eq(appmsg_loop_new(&loop, (enum appmsg_loop_backend)_i), 0);
  struct appmsg_server_opts so;
  appmsg_server_opts_default(&so);
  struct appmsg_conn_callbacks cbs = {.on_message = once_message};
  struct appmsg_server *srv;
  char err[APPMSG_NET_ERRLEN], port[16];
  int rc = appmsg_server_new(&srv, loop, "127.0.0.1", "0", &so, &cbs, NULL, NULL, err, sizeof err);
  ck_assert_msg(rc == 0, "server: %s", err);
  snprintf(port, sizeof port, "%s", strrchr(appmsg_server_address(srv), ':') + 1);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct seen s = {0};
  struct snapshot warm = {0}, last = {0};
  uint64_t t0 = tu_now_ms(), end = t0 + CYCLES_MS, warm_at = 0;
  for (unsigned i = 0; i < CYCLES; i++) {
    struct appmsg_client *c;
    ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
    ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "hello", NULL), 0);
    for (uint64_t now; s.calls == i && (now = tu_now_ms()) < end;)
      ck_assert_int_ge(appmsg_loop_run_once(loop, (int)(end - now)), 0);
    ck_assert_msg(s.ok == i + 1, "cycle %u: %s (%s)", i, appmsg_errname(s.last_status),
                  s.last_reason);
    ck_assert_str_eq(s.last_result, "bye");
    appmsg_client_free(c);
#if UNDER_ASAN
    /* ASan keeps freed blocks in a quarantine of 256 MB and takes new ones from fresh memory
     * meanwhile: the heap, and the shadow memory that describes it, grow until the quarantine
     * is full, whatever the program does.  Emptied now and then, it holds a thousand cycles'
     * frees (use after free within them is still caught) and the heap stays the program's. */
    if (i % 1000 == 999)
      __sanitizer_purge_allocator();
#endif
    if (i + 1 == CYCLES_WARMUP) {
      warm = quiet_snapshot(loop, srv);
      warm_at = tu_now_ms();
    }
  }
  last = quiet_snapshot(loop, srv);
  uint64_t took = tu_now_ms() - t0;
  printf("cycles %s: %u connect/call/close cycles in %llu ms (%.1f us each after the warm-up); "
         "after %u: %d fds, VmRSS %ld kB, library %ld bytes; after %u: %d fds, VmRSS %ld kB, "
         "library %ld bytes\n",
         appmsg_loop_backend_name(loop), CYCLES, (unsigned long long)took,
         (tu_now_ms() - warm_at) * 1000.0 / (CYCLES - CYCLES_WARMUP), CYCLES_WARMUP, warm.fds,
         warm.rss_kb, warm.lib, CYCLES, last.fds, last.rss_kb, last.lib);
  fflush(stdout);
  /* Quiet at both points - every connection closed on both sides - so every descriptor is
   * accounted for: not one more. */
  ck_assert_int_eq(last.fds, warm.fds);
  ck_assert_msg(last.lib <= warm.lib + LIB_SLACK, "the library holds %ld bytes more",
                last.lib - warm.lib);
  ck_assert_msg(last.rss_kb <= warm.rss_kb + RSS_SLACK_KB, "VmRSS grew by %ld kB",
                last.rss_kb - warm.rss_kb);
  appmsg_server_free(srv);
  appmsg_loop_free(loop);
  ck_assert_int_eq(atomic_load(&lib_bytes), 0); /* and everything it had is given back */
  appmsg_set_allocator(NULL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("resources");
  TCase *idle = tcase_create("waiting");
  tcase_set_timeout(idle, 60);
  tcase_add_loop_test(idle, an_idle_connected_client_and_service_cost_no_cpu, TU_LOOP_EPOLL,
                      APPMSG_LOOP_POLL + 1);
  tcase_add_loop_test(idle, a_client_waiting_for_a_silent_server_costs_no_cpu_and_times_out,
                      TU_LOOP_EPOLL, APPMSG_LOOP_POLL + 1);
  suite_add_tcase(s, idle);
  TCase *load = tcase_create("load");
  /* Above PIPELINE_MS and CYCLES_MS, which bound the tests themselves. */
  tcase_set_timeout(load, 900);
  tcase_add_loop_test(load, a_million_pipelined_calls_past_the_read_pause_are_all_answered_in_order,
                      TU_LOOP_EPOLL, APPMSG_LOOP_POLL + 1);
  tcase_add_loop_test(load,
                      a_hundred_thousand_connect_close_cycles_keep_descriptors_and_memory_flat,
                      TU_LOOP_EPOLL, APPMSG_LOOP_POLL + 1);
  suite_add_tcase(s, load);
  return tu_run_suite(s);
}
