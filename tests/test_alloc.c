/*
 * Allocation failures, every one of them: a session - a service and a
 * client on one loop, pipelined calls, a handler that answers later from a
 * timer, an error reply (bad JSON), a binary call, the status action, a
 * framing error from a plain-socket peer, then the close - runs once to
 * count the allocations it makes (A), then once more for every N in 1..A
 * with allocation N failing (appmsg_set_allocator()).  Each run must end
 * within a bounded time with every call's callback run once, every
 * connection closed, the loop empty (appmsg_loop_run() returns at once),
 * every block the library took given back (counted by the allocator, so a
 * leak is caught in the run that made it, not only by LSan at exit), and
 * every outcome among the correct ones: a call may fail (-ENOMEM at once,
 * NOT_SENT, CLOSED, an INTERNAL error reply, -ENOMEM as its status) but
 * never hang and never receive another call's reply.
 *
 * Each run is a child process of its own: a crash or a sanitizer report
 * names the N that caused it, and LSan checks each child at its exit.
 * Windows has no fork(): there the runs are made in this process, one after
 * the other, the allocator set for each and reset after it (a failing
 * allocation leaves nothing behind that the next run could meet: the
 * library keeps no state between its objects but the allocator itself, and
 * a run's blocks are all counted back).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef _WIN32
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#endif

#include "appmsg/appmsg.h"
#include "testutil.h"
#include "util.h"

/* ---- the allocator: counts, fails the Nth, and knows what is still out --------------- */

static long alloc_count; /* allocations made (malloc, calloc, realloc) */
static long fail_at;     /* the allocation that fails (0: none) */
static long failed;      /* allocations that failed */
static long live;        /* blocks handed out and not freed */

#if defined(__SANITIZE_ADDRESS__)
void __sanitizer_print_stack_trace(void);
#endif
static int trace_failure; /* $APPMSG_ALLOC_TRACE: print where the failing allocation was made */

static int fail_now(void) {
  alloc_count++;
  if (alloc_count == fail_at) {
    failed++;
#if defined(__SANITIZE_ADDRESS__)
    if (trace_failure)
      __sanitizer_print_stack_trace();
#endif
    return 1;
  }
  return 0;
}

static void *t_malloc(size_t n) {
  if (fail_now())
    return NULL;
  void *p = malloc(n);
  if (p)
    live++;
  return p;
}

static void *t_calloc(size_t k, size_t n) {
  if (fail_now())
    return NULL;
  void *p = calloc(k, n);
  if (p)
    live++;
  return p;
}

static void *t_realloc(void *q, size_t n) {
  if (fail_now())
    return NULL;
  void *p = realloc(q, n);
  if (p && q == NULL)
    live++;
  return p;
}

static void t_free(void *p) {
  if (p)
    live--;
  free(p);
}

static const struct appmsg_allocator counting = {t_malloc, t_calloc, t_realloc, t_free};

/* ---- checks inside a run (a child process: no Check calls there) ---------------------- */

static char run_error[512];

#define EXPECT(cond, ...)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      if (!run_error[0])                                                                           \
        snprintf(run_error, sizeof run_error, __VA_ARGS__);                                        \
      return -1;                                                                                   \
    }                                                                                              \
  } while (0)

/* ---- the session -------------------------------------------------------------------------- */

#define SESSION_MS 5000 /* the most a run may take: a run that needs more is wedged */
#define NCALLS 8
#define BIG 70000 /* a request larger than a read (64 KiB) */

struct call {
  const char *name;
  const char *want;       /* the result a reply must carry (NULL: the status action's) */
  const char *want_error; /* the error name the correct reply carries, or NULL */
  int rc;                 /* what the call returned */
  int calls;              /* callback runs */
  int status, cause;
  char result[64], error[32];
};

static struct {
  struct appmsg_loop *loop;
  struct appmsg_service *svc;
  struct appmsg_client *client;
  struct appmsg_timer later_timer;
  struct appmsg_request *later; /* the request answered from the timer */
  int later_rc;
  struct call calls[NCALLS];
  appmsg_socket_t peer;  /* the plain-socket peer */
  struct tu_str peer_rx; /* what it received */
  int peer_eof;
} S;

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct call *k = ud;
  k->calls++;
  k->status = r->status;
  k->cause = r->cause;
  snprintf(k->result, sizeof k->result, "%s", r->result ? r->result : "");
  if (r->status == 0 && r->result && strlen(r->result) == BIG) /* the large echo */
    snprintf(k->result, sizeof k->result, "big:%s", strspn(r->result, "b") == BIG ? "ok" : "bad");
  if (r->status == 0 && !k->want && r->result_json) /* the status action: an object */
    snprintf(k->result, sizeof k->result, "%.12s", r->result_json);
  if (r->status == 0 && r->header && strcmp(r->header->content_type, "text/json") != 0)
    snprintf(k->result, sizeof k->result, "%.*s", (int)r->len, (const char *)r->content);
  snprintf(k->error, sizeof k->error, "%s", r->error ? r->error : "");
}

/* A careful application: a reply refused for lack of memory (the request is still owed) is
 * answered INTERNAL instead. */
static int or_internal(struct appmsg_request *r, int rc) {
  if (rc == -ENOMEM)
    rc = appmsg_reply_error(r, "INTERNAL", "out of memory");
  return rc;
}

static void h_echo(struct appmsg_request *r, void *ud) {
  (void)ud;
  const char *v = appmsg_request_string(r, "value");
  or_internal(r, v ? appmsg_reply_result(r, v) : -ENOMEM); /* (NULL: no memory for it) */
}

static void on_later_timer(struct appmsg_loop *l, struct appmsg_timer *t, void *ud) {
  (void)l;
  (void)t;
  (void)ud;
  if (S.later) {
    S.later_rc = or_internal(S.later, appmsg_reply_result(S.later, "two"));
    S.later = NULL;
  }
}

static void h_later(struct appmsg_request *r, void *ud) {
  (void)ud;
  S.later = r;
  if (appmsg_timer_start(S.loop, &S.later_timer, 1, 0) != 0) { /* (no room in the heap) */
    S.later = NULL;
    or_internal(r, -ENOMEM);
  }
}

static void h_binary(struct appmsg_request *r, void *ud) {
  (void)ud;
  size_t len;
  const void *p = appmsg_request_content(r, &len);
  or_internal(r, appmsg_reply_content(r, "binary/back", "binary", p, len));
}

static void peer_pump(void) {
  if (S.peer == APPMSG_INVALID_SOCKET || S.peer_eof)
    return;
  char buf[4096];
  for (;;) {
    ssize_t n = appmsg_recv(S.peer, buf, sizeof buf); /* (non-blocking) */
    if (n > 0) {
      tu_str_add(&S.peer_rx, buf, (size_t)n);
      continue;
    }
    if (n != -EAGAIN) /* the end, or an error (EINTR is retried inside) */
      S.peer_eof = 1;
    return;
  }
}

static int calls_done(void) {
  for (int i = 0; i < NCALLS; i++)
    if (S.calls[i].rc == 0 && S.calls[i].calls == 0)
      return 0;
  return 1;
}

/* Runs the loop until done() or the session's end; returns 0, or -1 when time ran out. */
static int run_until(int (*done)(void), uint64_t end) {
  for (;;) {
    peer_pump();
    if (done())
      return 0;
    if (tu_now_ms() >= end)
      return -1;
    if (appmsg_loop_run_once(S.loop, 5) < 0)
      return -1;
  }
}

static int peer_done(void) {
  /* it read the end: it closes too (the server lingers for it) */
  if (S.peer != APPMSG_INVALID_SOCKET && S.peer_eof) {
    tu_close(S.peer);
    S.peer = APPMSG_INVALID_SOCKET;
  }
  return S.peer == APPMSG_INVALID_SOCKET;
}

static int service_idle(void) {
  struct appmsg_service_stats st;
  appmsg_service_stats(S.svc, &st);
  return st.connections == 0 && st.pending == 0;
}

static size_t frame(char *out, const char *type, const char *content) {
  size_t clen = strlen(content);
  int hl = sprintf(out + 2,
                   "{\"byteorder\": \"little\", \"content-type\": \"%s\", \"content-encoding\": "
                   "\"utf-8\", \"content-length\": %zu}",
                   type, clen);
  out[0] = (char)(hl >> 8);
  out[1] = (char)(hl & 0xff);
  memcpy(out + 2 + hl, content, clen);
  return 2 + (size_t)hl + clen;
}

/* Whether a call's outcome is one of the correct ones (strict when nothing failed). */
static int outcome_ok(const struct call *k, int strict, char *why, size_t n) {
  if (k->rc != 0) {
    snprintf(why, n, "returned %d", k->rc);
    return !strict && k->rc == -ENOMEM;
  }
  if (k->calls != 1) {
    snprintf(why, n, "%d callbacks", k->calls);
    return 0;
  }
  int correct =
      k->want_error
          ? k->status == APPMSG_E_ERROR_REPLY && strcmp(k->error, k->want_error) == 0
          : k->status == 0 &&
                strcmp(k->result, k->want ? k->want : "{\"title\": \"a" /* ("appmsg service") */) ==
                    0;
  if (correct)
    return 1;
  snprintf(why, n, "status %d (%s) cause %d result '%s' error '%s'", k->status,
           appmsg_errname(k->status), k->cause, k->result, k->error);
  if (strict)
    return 0;
  if (k->status == 0 || (k->status == APPMSG_E_ERROR_REPLY && strcmp(k->error, "INTERNAL") != 0))
    return 0; /* a reply that is not its own */
  return k->status == APPMSG_E_ERROR_REPLY || k->status == APPMSG_E_CLOSED ||
         k->status == APPMSG_E_NOT_SENT || k->status == -ENOMEM;
}

/* One session; backend 0 epoll, 1 poll.  Returns 0 when it ended as it must. */
static int session(int backend, int strict) {
  static const enum appmsg_loop_backend backends[] = {TU_LOOP_EPOLL, APPMSG_LOOP_POLL};
  memset(&S, 0, sizeof S);
  S.peer = APPMSG_INVALID_SOCKET;
  uint64_t end = tu_now_ms() + SESSION_MS;
  struct appmsg_service_opts so;
  appmsg_service_opts_default(&so);
  so.max_pending = 2; /* the pipelined calls pause its reading: input waits, stashed */
  struct appmsg_client_opts co;
  appmsg_client_opts_default(&co);
  co.max_in_flight = 3; /* the rest wait in the client's queue */
  co.request_ids = 1;
  co.backoff_min_ms = 1;
  co.backoff_max_ms = 5;
  co.call_timeout_ms = 60000; /* (a call that waits for it is wedged) */
  char err[APPMSG_NET_ERRLEN], port[16];
  int rc = appmsg_loop_new(&S.loop, backends[backend]);
  EXPECT(rc == 0 || (!strict && rc == -ENOMEM), "appmsg_loop_new: %d", rc);
  if (rc)
    return 0;
  appmsg_timer_init(&S.later_timer, on_later_timer, NULL);
  rc = appmsg_service_new(&S.svc, S.loop, &so);
  EXPECT(rc == 0 || (!strict && rc == -ENOMEM), "appmsg_service_new: %d", rc);
  if (rc == 0)
    rc = appmsg_service_handle(S.svc, "echo", h_echo, NULL);
  if (rc == 0)
    rc = appmsg_service_handle(S.svc, "later", h_later, NULL);
  if (rc == 0)
    appmsg_service_handle_binary(S.svc, h_binary, NULL);
  if (rc == 0) {
    rc = appmsg_service_listen(S.svc, "127.0.0.1", "0", err, sizeof err);
    EXPECT(rc == 0 || (!strict && rc == -ENOMEM), "appmsg_service_listen: %d %s", rc, err);
  }
  EXPECT(rc == 0 || !strict, "setup: %d", rc);
  if (rc == 0) {
    snprintf(port, sizeof port, "%s", strrchr(appmsg_service_address(S.svc), ':') + 1);
    rc = appmsg_client_new(&S.client, S.loop, "127.0.0.1", port, &co);
    EXPECT(rc == 0 || (!strict && rc == -ENOMEM), "appmsg_client_new: %d", rc);
  }
  if (rc == 0) {
    /* Pipelined calls, made before the connection is up. */
    struct call *k = S.calls;
    k[0] = (struct call){.name = "echo one", .want = "one"};
    k[1] = (struct call){.name = "later two", .want = "two"};
    k[2] = (struct call){.name = "bad JSON", .want_error = "CONTENT_JSON"};
    k[3] = (struct call){.name = "echo four", .want = "four"};
    k[4] = (struct call){.name = "binary",
                         .want = "\x01\x02"
                                 "five"};
    k[5] = (struct call){.name = "ping", .want = "pong"};
    k[6] = (struct call){.name = "status", .want = NULL};
    k[7] = (struct call){.name = "big echo", .want = "big:ok"};
    k[0].rc = appmsg_client_call(S.client, on_reply, &k[0], "echo", "value", "one", NULL);
    k[1].rc = appmsg_client_call(S.client, on_reply, &k[1], "later", NULL);
    struct appmsg_call bad = {.content = "{\"action\": ", .len = 11};
    k[2].rc = appmsg_client_send(S.client, &bad, on_reply, &k[2]);
    k[3].rc = appmsg_client_call(S.client, on_reply, &k[3], "echo", "value", "four", NULL);
    struct appmsg_call bin = {.content_type = "binary/x",
                              .content = "\x01\x02"
                                         "five",
                              .len = 6,
                              .request_id = "[5]"};
    k[4].rc = appmsg_client_send(S.client, &bin, on_reply, &k[4]);
    k[5].rc = appmsg_client_call(S.client, on_reply, &k[5], "ping", NULL);
    k[6].rc = appmsg_client_call(S.client, on_reply, &k[6], "status", NULL);
    static char big[BIG + 1];
    memset(big, 'b', BIG);
    k[7].rc = appmsg_client_call(S.client, on_reply, &k[7], "echo", "value", big, NULL);
    /* A plain-socket peer: one good request, then a frame whose header length is 0. */
    EXPECT(appmsg_connect_timeout("127.0.0.1", port, SESSION_MS, &S.peer, err, sizeof err) == 0,
           "peer connect: %s", err);
    EXPECT(appmsg_set_nonblock(S.peer, 1) == 0, "peer non-blocking");
    char f[512];
    size_t n = frame(f, "text/json", "{\"action\": \"echo\", \"value\": \"raw\"}");
    memcpy(f + n, "\0\0", 2);
    if (appmsg_send(S.peer, f, n + 2) != (ssize_t)(n + 2))
      S.peer_eof = 1;
    EXPECT(run_until(calls_done, end) == 0, "wedged: a call's callback never ran");
    EXPECT(run_until(peer_done, end) == 0, "wedged: the peer's connection was never closed");
    for (int i = 0; i < NCALLS; i++) {
      char why[256];
      EXPECT(outcome_ok(&k[i], strict, why, sizeof why), "call '%s': %s", k[i].name, why);
    }
    if (strict) {
      EXPECT(S.peer_rx.p && strstr(S.peer_rx.p + 2, "\"raw\"") &&
                 tu_memmem(S.peer_rx.p, S.peer_rx.len, "HEADER_EMPTY", 12),
             "the peer's reply and error reply");
      EXPECT(S.later_rc == 0, "the later reply: %d", S.later_rc);
    } else if (S.peer_rx.p) {
      EXPECT(!tu_memmem(S.peer_rx.p, S.peer_rx.len, "\"one\"", 5) &&
                 !tu_memmem(S.peer_rx.p, S.peer_rx.len, "\"four\"", 6),
             "the peer received a reply to another connection's request");
    }
  }
  /* The close: the client, then the service's connections, then the service. */
  appmsg_client_free(S.client);
  if (S.svc && appmsg_service_server(S.svc))
    EXPECT(run_until(service_idle, end) == 0, "wedged: the service's connections never closed");
  appmsg_service_free(S.svc);
  if (S.later) /* (its request went with the service: the timer has nothing to answer) */
    S.later = NULL;
  appmsg_timer_stop(S.loop, &S.later_timer);
  EXPECT(!appmsg_loop_alive(S.loop), "the loop still has work");
  EXPECT(appmsg_loop_run(S.loop) == 0, "appmsg_loop_run");
  appmsg_loop_free(S.loop);
  if (S.peer != APPMSG_INVALID_SOCKET)
    tu_close(S.peer);
  tu_str_free(&S.peer_rx);
  return 0;
}

#ifndef _WIN32
/* Runs a session in a child with allocation n failing (0: none); returns the child's
 * allocation count through a pipe, and its verdict. */
static int run_child(int backend, long n, long *count, long *fails, char *why, size_t whylen) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(p[0]);
    alloc_count = failed = live = 0;
    fail_at = n;
    appmsg_set_allocator(&counting);
    run_error[0] = '\0';
    int rc = session(backend, n == 0);
    if (rc == 0 && live != 0)
      snprintf(run_error, sizeof run_error, "%ld block(s) of the library's never freed", live);
    char msg[600];
    int len = snprintf(msg, sizeof msg, "%ld %ld %s", alloc_count, failed, run_error);
    if (write(p[1], msg, (size_t)len) < 0)
      _exit(3);
    close(p[1]);
    appmsg_set_allocator(NULL);
    exit(run_error[0] ? 1 : 0); /* (exit, not _exit: LSan looks for leaks at exit) */
  }
  close(p[1]);
  char msg[600] = {0};
  size_t got = 0;
  ssize_t r;
  while (got < sizeof msg - 1 && (r = read(p[0], msg + got, sizeof msg - 1 - got)) > 0)
    got += (size_t)r;
  close(p[0]);
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  int off = 0;
  *fails = 0;
  if (sscanf(msg, "%ld %ld %n", count, fails, &off) < 2)
    *count = -1;
  snprintf(why, whylen, "%s", msg + off);
  if (WIFSIGNALED(status)) {
    snprintf(why, whylen, "killed by signal %d (a crash or a sanitizer report: see above)",
             WTERMSIG(status));
    return -1;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (!why[0])
      snprintf(why, whylen, "exit status %d (a sanitizer report: see above)", WEXITSTATUS(status));
    return -1;
  }
  return 0;
}
#else
/* Windows has no fork(): runs a session in this process with allocation n failing (0: none);
 * returns its allocation count and its verdict.  (A crash ends the whole suite here.) */
static int run_child(int backend, long n, long *count, long *fails, char *why, size_t whylen) {
  alloc_count = failed = live = 0;
  fail_at = n;
  ck_assert_int_eq(appmsg_set_allocator(&counting), 0);
  run_error[0] = '\0';
  int rc = session(backend, n == 0);
  ck_assert_int_eq(appmsg_set_allocator(NULL), 0); /* (process-wide: the next run sets it again) */
  fail_at = 0;
  if (rc == 0 && live != 0)
    snprintf(run_error, sizeof run_error, "%ld block(s) of the library's never freed", live);
  *count = alloc_count;
  *fails = failed;
  snprintf(why, whylen, "%s", run_error);
  return run_error[0] ? -1 : 0;
}
#endif

START_TEST(every_allocation_of_a_session_fails_in_turn) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  const char *backend_name = _i || !APPMSG_HAVE_EPOLL ? "poll" : "epoll";
  char why[600];
  long a = 0, fails, hit = 0;
  uint64_t t0 = tu_now_ms();
  ck_assert_msg(run_child(_i, 0, &a, &fails, why, sizeof why) == 0,
                "%s: the session without failures: %s", backend_name, why);
  ck_assert_int_gt(a, 50);
  long most = a;
  /* $APPMSG_ALLOC_ONLY=N runs only that N (with $APPMSG_ALLOC_TRACE=1, under ASan, the stack
   * of the allocation that fails is printed). */
  const char *only = getenv("APPMSG_ALLOC_ONLY");
  trace_failure = getenv("APPMSG_ALLOC_TRACE") != NULL;
  for (long n = only ? atol(only) : 1; n <= (only ? atol(only) : a); n++) {
    long count;
    int rc = run_child(_i, n, &count, &fails, why, sizeof why);
    ck_assert_msg(rc == 0, "%s: allocation %ld of %ld failing: %s", backend_name, n, a, why);
    hit += fails;
    if (count > most)
      most = count;
  }
  printf("alloc sweep (%s): A = %ld allocations (at most %ld in a run), each failed in turn "
         "(%ld runs met their failure), in %.1f s\n",
         backend_name, a, most, hit, (double)(tu_now_ms() - t0) / 1000.0);
  fflush(stdout);
}
END_TEST

int main(void) {
  Suite *s = suite_create("alloc");
  TCase *tc = tcase_create("alloc");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, every_allocation_of_a_session_fails_in_turn, 0, 2);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
