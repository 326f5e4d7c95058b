/*
 * The client library against real services on loopback: 10,000 pipelined
 * calls matched on one connection (by order, and by request-id), per-call
 * timeouts with late replies dropped, a server stopped and started again
 * mid-stream (queued calls succeed after the reconnect, the backoff shows
 * in the attempts' timestamps), every resolved address tried, error
 * replies decoded, refused connections, max_in_flight, freeing from a
 * callback, the blocking call; the queue's limits (calls and bytes), calls
 * that time out unanswered making the client connect again, timeouts
 * counted from the call, calls never sent told apart, and a resolver that
 * never answers stalling only its own client.
 *
 * The services run on the client's own loop (one thread), except for the
 * blocking call, whose server runs on a thread of its own.
 */

/* A private /etc/hosts needs a Linux mount namespace (unshare()), which the POSIX-only
 * build's headers hide: this suite asks for Linux's own declarations. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <dirent.h>
#include <dlfcn.h>
#include <netdb.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>
#endif

#include "appmsg/adapters/cjson.h"
#include "appmsg/appmsg.h"
#include "platform.h"
#include "testutil.h"
#ifdef _WIN32
#include <tlhelp32.h> /* (after platform.h's <windows.h>) */
#endif

static struct appmsg_loop *loop;
static struct appmsg_service *svc;
static struct appmsg_service_opts sopts;
static char port[16];

#define MAX_HELD 64
static struct appmsg_request *held[MAX_HELD];
static int nheld;

static void on_echo(struct appmsg_request *r, void *ud) {
  (void)ud;
  const char *v = appmsg_request_string(r, "value");
  appmsg_reply_result(r, v ? v : "");
}

static void on_later(struct appmsg_request *r, void *ud) {
  (void)ud;
  if (nheld < MAX_HELD)
    held[nheld++] = r;
}

static void on_missing(struct appmsg_request *r, void *ud) {
  (void)ud;
  appmsg_reply_error(r, "NOT_FOUND", "there is no such thing");
}

/* A reply whose keys are written with escapes, as a JSON writer may: the same "result" and
 * "error" members to any JSON reader. */
static void on_escaped(struct appmsg_request *r, void *ud) {
  (void)ud;
  const char *v = appmsg_request_string(r, "value");
  const char *json =
      v && strcmp(v, "error") == 0
          ? "{\"\\u0072esult\": \"Error: gone.\", \"\\u0065rror\": \"NOT_\\u0046OUND\"}"
          : "{\"r\\u0065sult\": \"found \\u00e9\", \"resul\": \"not this\"}";
  appmsg_reply_content(r, "text/json", "utf-8", json, strlen(json));
}

static void on_binary(struct appmsg_request *r, void *ud) {
  (void)ud;
  size_t len;
  const void *p = appmsg_request_content(r, &len);
  appmsg_reply_content(r, "binary/back", "binary", p, len);
}

/* Starts the service on host (a free port the first time, port after). */
static void service_start(const char *host) {
  appmsg_service_opts_default(&sopts);
  ck_assert_int_eq(appmsg_service_new(&svc, loop, &sopts), 0);
  appmsg_service_handle(svc, "echo", on_echo, NULL);
  appmsg_service_handle(svc, "later", on_later, NULL);
  appmsg_service_handle(svc, "missing", on_missing, NULL);
  appmsg_service_handle(svc, "escaped", on_escaped, NULL);
  appmsg_service_handle_binary(svc, on_binary, NULL);
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_service_listen(svc, host, port[0] ? port : "0", err, sizeof err);
  ck_assert_msg(rc == 0, "listen: %s", err);
  const char *addr = appmsg_service_address(svc);
  snprintf(port, sizeof port, "%s", strrchr(addr, ':') + 1);
}

static void service_stop(void) {
  appmsg_service_free(svc);
  svc = NULL;
}

static void setup(void) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  ck_assert_int_eq(appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT), 0);
  port[0] = '\0';
  nheld = 0;
}

static void teardown(void) {
  appmsg_service_free(svc);
  svc = NULL;
  appmsg_loop_free(loop);
}

/* Runs the loop until *flag reaches want or ms pass. */
static void run_until(const size_t *flag, size_t want, int ms) {
  uint64_t end = appmsg_loop_now(loop) + (uint64_t)ms;
  while (*flag < want && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 10);
}

/* What the callbacks saw. */
struct seen {
  size_t calls, ok, mismatched, timeouts, closed, errors, other;
  int last_status;
  int last_cause;
  char last_result[256], last_error[64], last_reason[256];
};

struct slot {
  struct seen *seen;
  int index; /* the value the reply must carry */
};

static void on_numbered(const struct appmsg_reply *r, void *ud) {
  struct slot *s = ud;
  s->seen->calls++;
  char want[16];
  snprintf(want, sizeof want, "%d", s->index);
  if (r->status == 0 && r->result && strcmp(r->result, want) == 0)
    s->seen->ok++;
  else
    s->seen->mismatched++;
}

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct seen *s = ud;
  s->calls++;
  s->last_status = r->status;
  s->last_cause = r->cause;
  snprintf(s->last_result, sizeof s->last_result, "%s", r->result ? r->result : "");
  snprintf(s->last_error, sizeof s->last_error, "%s", r->error ? r->error : "");
  snprintf(s->last_reason, sizeof s->last_reason, "%s", r->reason ? r->reason : "");
  if (r->status == 0)
    s->ok++;
  else if (r->status == APPMSG_E_TIMEOUT)
    s->timeouts++;
  else if (r->status == APPMSG_E_CLOSED)
    s->closed++;
  else if (r->status == APPMSG_E_ERROR_REPLY)
    s->errors++;
  else
    s->other++;
}

static void pipelined(int request_ids) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.request_ids = request_ids;
  o.max_queued = 20000;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  enum { N = 10000 };
  static struct slot slots[N];
  struct seen seen = {0};
  for (int i = 0; i < N; i++) {
    char v[16];
    snprintf(v, sizeof v, "%d", i);
    slots[i] = (struct slot){&seen, i};
    ck_assert_int_eq(appmsg_client_call(c, on_numbered, &slots[i], "echo", "value", v, NULL), 0);
  }
  run_until(&seen.calls, N, 30000);
  ck_assert_uint_eq(seen.calls, N);
  ck_assert_uint_eq(seen.ok, N);
  ck_assert_uint_eq(appmsg_client_connects(c), 1);
  ck_assert_uint_eq(appmsg_client_pending(c), 0);
  appmsg_client_free(c);
}

START_TEST(ten_thousand_pipelined_calls_on_one_connection_are_all_matched) {
  pipelined(0);
}
END_TEST

START_TEST(ten_thousand_pipelined_calls_with_request_ids_are_all_matched) {
  pipelined(1);
}
END_TEST

START_TEST(a_call_times_out_and_its_late_reply_is_dropped) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen slow = {0}, next = {0};
  struct appmsg_call call = {.content = "{\"action\": \"later\"}", .timeout_ms = 100};
  call.len = strlen(call.content);
  uint64_t t0 = appmsg_loop_now(loop);
  ck_assert_int_eq(appmsg_client_send(c, &call, on_reply, &slow), 0);
  run_until(&slow.calls, 1, 5000);
  ck_assert_uint_eq(slow.timeouts, 1);
  ck_assert_uint_ge(appmsg_loop_now(loop) - t0, 100);
  ck_assert_int_eq(nheld, 1);
  /* The late reply comes and is dropped; the next call gets its own. */
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &next, "echo", "value", "mine", NULL), 0);
  ck_assert_int_eq(appmsg_reply_result(held[0], "late"), 0);
  run_until(&next.calls, 1, 5000);
  ck_assert_uint_eq(next.ok, 1);
  ck_assert_str_eq(next.last_result, "mine");
  ck_assert_uint_eq(slow.calls, 1);
  appmsg_client_free(c);
}
END_TEST

/* The client's log: when it decided to try again, and after how long. */
static uint64_t retry_at[64];
static unsigned retry_ms[64];
static size_t nretries;

static void note_retry(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  (void)level;
  const char *p = strstr(line, "trying again in ");
  if (p && nretries < 64) {
    retry_at[nretries] = appmsg_loop_now(loop);
    retry_ms[nretries++] = (unsigned)strtoul(p + 16, NULL, 10);
  }
}

START_TEST(calls_queued_while_the_server_is_down_succeed_after_it_comes_back) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 400;
  o.log = note_retry;
  nretries = 0;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen first = {0}, during = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &first, "echo", "value", "1", NULL), 0);
  run_until(&first.calls, 1, 5000);
  ck_assert_uint_eq(first.ok, 1);
  /* The server goes away; calls made now wait for it. */
  service_stop();
  size_t attempts = 4;
  run_until(&nretries, attempts, 10000);
  ck_assert_uint_ge(nretries, attempts);
  ck_assert(!appmsg_client_connected(c));
  for (int i = 0; i < 5; i++)
    ck_assert_int_eq(appmsg_client_call(c, on_reply, &during, "echo", "value", "back", NULL), 0);
  ck_assert_uint_eq(during.calls, 0);
  service_start("127.0.0.1"); /* the same port */
  run_until(&during.calls, 5, 10000);
  ck_assert_uint_eq(during.ok, 5);
  ck_assert_str_eq(during.last_result, "back");
  ck_assert_uint_eq(appmsg_client_connects(c), 2);
  /* The delays doubled (with jitter: each between half and all of its step), and the
   * attempts came no sooner than they said. */
  for (size_t i = 0; i + 1 < nretries && i < 4; i++) {
    unsigned step = 20u << (i + 1) > 400 ? 400 : 20u << (i + 1);
    ck_assert_uint_ge(retry_ms[i + 1], step / 2);
    ck_assert_uint_le(retry_ms[i + 1], step);
    ck_assert_uint_ge(retry_at[i + 1] - retry_at[i], retry_ms[i]);
  }
  appmsg_client_free(c);
}
END_TEST

#ifndef _WIN32 /* a private /etc/hosts needs a Linux mount namespace: Windows has none */
/* Makes multi.test resolve to ::1, 127.0.0.1 and 127.0.0.2, in this
 * process only (a private mount namespace with its own /etc/hosts).
 * Returns 0, or -1 when that is not allowed (not root). */
static int private_hosts(void) {
  if (geteuid() != 0)
    return -1;
  char path[] = "/tmp/appmsg-hosts-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *text = "::1 multi.test\n127.0.0.1 multi.test\n127.0.0.2 multi.test\n";
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  ck_assert_msg(unshare(CLONE_NEWNS) == 0, "unshare: %s", strerror(errno));
  ck_assert_int_eq(mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL), 0);
  ck_assert_msg(mount(path, "/etc/hosts", "none", MS_BIND, NULL) == 0, "bind: %s", strerror(errno));
  unlink(path);
  return 0;
}

START_TEST(every_resolved_address_is_tried_in_turn) {
  if (private_hosts() != 0) {
    fprintf(stderr, "test_client: SKIPPED every_resolved_address_is_tried_in_turn: needs root "
                    "for a private /etc/hosts\n");
    return;
  }
  struct addrinfo *res;
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_resolve("multi.test", "1", 0, &res, err, sizeof err), 0);
  int n = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
    n++;
  freeaddrinfo(res);
  ck_assert_int_eq(n, 3);
  service_start("127.0.0.2"); /* only the last address answers */
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "multi.test", port, &o), 0);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "echo", "value", "found", NULL), 0);
  run_until(&s.calls, 1, 10000);
  ck_assert_uint_eq(s.ok, 1);
  ck_assert_str_eq(s.last_result, "found");
  ck_assert_uint_eq(appmsg_client_connects(c), 1);
  appmsg_client_free(c);
}
END_TEST
#endif

START_TEST(an_error_reply_is_decoded_into_its_name_and_reason) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "missing", NULL), 0);
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "nope", NULL), 0);
  run_until(&s.calls, 2, 5000);
  ck_assert_uint_eq(s.errors, 1);
  ck_assert_uint_eq(s.ok, 1); /* the guide's invalid-action reply has no error name */
  ck_assert_str_eq(s.last_result, "Error: invalid action 'nope'.");
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "missing", NULL), 0);
  run_until(&s.calls, 3, 5000);
  ck_assert_int_eq(s.last_status, APPMSG_E_ERROR_REPLY);
  ck_assert_str_eq(s.last_error, "NOT_FOUND");
  ck_assert_str_eq(s.last_reason, "Error: there is no such thing.");
  appmsg_client_free(c);
}
END_TEST

START_TEST(reply_keys_written_with_escapes_are_read_as_their_names) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "escaped", "value", "result", NULL), 0);
  run_until(&s.calls, 1, 5000);
  ck_assert_int_eq(s.last_status, 0);
  ck_assert_str_eq(s.last_result, "found \xc3\xa9");
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "escaped", "value", "error", NULL), 0);
  run_until(&s.calls, 2, 5000);
  ck_assert_int_eq(s.last_status, APPMSG_E_ERROR_REPLY);
  ck_assert_str_eq(s.last_error, "NOT_FOUND");
  ck_assert_str_eq(s.last_reason, "Error: gone.");
  appmsg_client_free(c);
}
END_TEST

/* A port nobody listens on (bound, then closed). */
static void dead_port(char *out, size_t cap) {
  appmsg_socket_t fd;
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 1, &fd, err, sizeof err), 0);
  snprintf(out, cap, "%d", appmsg_sockport(fd));
  tu_close(fd);
}

START_TEST(a_refused_connection_fails_the_calls_that_wait_for_it) {
  char dead[16];
  dead_port(dead, sizeof dead);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.reconnect = 0;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", dead, &o), 0);
  struct seen s = {0};
  int rc = appmsg_client_call(c, on_reply, &s, "echo", NULL);
  if (rc == 0) { /* queued while the connect was under way */
    run_until(&s.calls, 1, 5000);
    ck_assert_uint_eq(s.calls, 1);
    ck_assert_int_eq(s.last_status, APPMSG_E_NOT_SENT); /* never sent: safe to try again */
    ck_assert_int_eq(s.last_cause, -ECONNREFUSED);
    ck_assert_ptr_nonnull(strstr(s.last_reason, "refused"));
  } else {
    ck_assert_int_eq(rc, -ECONNREFUSED);
  }
  /* Not trying any more: a new call fails at once with the reason. */
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "echo", NULL), -ECONNREFUSED);
  appmsg_client_free(c);
  /* With reconnecting on but no queue, a call made while the server is
   * unreachable fails at once too. */
  appmsg_client_opts_default(&o);
  o.max_queued = 0;
  o.backoff_min_ms = 5000;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", dead, &o), 0);
  size_t never = 0;
  run_until(&never, 1, 200); /* the first attempt fails */
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "echo", NULL), -ECONNREFUSED);
  appmsg_client_free(c);
}
END_TEST

START_TEST(max_in_flight_bounds_the_calls_sent_at_once) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.max_in_flight = 2;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen s = {0};
  for (int i = 0; i < 5; i++)
    ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "later", NULL), 0);
  size_t two = 0;
  for (int i = 0; i < 50 && nheld < 2; i++)
    appmsg_loop_run_once(loop, 10);
  run_until(&two, 1, 200); /* time for more to arrive, if they were sent */
  ck_assert_int_eq(nheld, 2);
  ck_assert_int_eq(appmsg_reply_result(held[0], "a"), 0);
  for (int i = 0; i < 50 && nheld < 3; i++)
    appmsg_loop_run_once(loop, 10);
  ck_assert_int_eq(nheld, 3);
  for (int i = 1; i < 5; i++) {
    for (int k = 0; k < 50 && nheld <= i; k++)
      appmsg_loop_run_once(loop, 10);
    ck_assert_int_eq(appmsg_reply_result(held[i], "b"), 0);
  }
  run_until(&s.calls, 5, 5000);
  ck_assert_uint_eq(s.ok, 5);
  appmsg_client_free(c);
}
END_TEST

/* ---- budgets, outcomes, resolution --------------------------------------------------------- */

static size_t count_status(const struct seen *s) {
  return s->calls;
}

START_TEST(a_full_queue_refuses_the_call_at_once_and_runs_no_callback) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.max_in_flight = 1;
  o.max_queued = 3;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (!appmsg_client_connected(c) && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 10);
  ck_assert(appmsg_client_connected(c));
  struct seen s = {0}, refused = {0};
  /* One in flight (held by the service), three queued: the fifth has no room. */
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "later", NULL), 0);
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &refused, "later", NULL), APPMSG_E_QUEUE_FULL);
  for (int i = 0; i < 500 && nheld < 1; i++)
    appmsg_loop_run_once(loop, 10);
  ck_assert_int_eq(nheld, 1);
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &refused, "later", NULL), APPMSG_E_QUEUE_FULL);
  ck_assert_uint_eq(appmsg_client_pending(c), 4);
  /* An answer makes room: one queued call goes out, and one more fits. */
  ck_assert_int_eq(appmsg_reply_result(held[0], "0"), 0);
  run_until(&s.calls, 1, 5000);
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "later", NULL), 0);
  for (int k = 1; k < 5; k++) {
    for (int i = 0; i < 500 && nheld <= k; i++)
      appmsg_loop_run_once(loop, 10);
    ck_assert_int_eq(nheld, k + 1);
    ck_assert_int_eq(appmsg_reply_result(held[k], "x"), 0);
  }
  run_until(&s.calls, 5, 5000);
  ck_assert_uint_eq(s.ok, 5);
  ck_assert_uint_eq(count_status(&refused), 0); /* refused calls never run their callback */
  appmsg_client_free(c);
}
END_TEST

START_TEST(the_queue_is_bounded_in_bytes_while_the_server_is_away) {
  char dead[16];
  appmsg_socket_t hold = tu_refused_port(dead, sizeof dead);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.max_queued = 100;
  o.max_queued_bytes = 1000;
  o.call_timeout_ms = 60000;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", dead, &o), 0);
  char big[300];
  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  struct seen s = {0};
  int queued = 0, rc;
  while ((rc = appmsg_client_call(c, on_reply, &s, "echo", "value", big, NULL)) == 0)
    queued++;
  ck_assert_int_eq(rc, APPMSG_E_QUEUE_FULL);
  ck_assert_int_eq(queued, 2); /* each frame is about 420 bytes: two fit in 1000, three do not */
  appmsg_client_free(c);
  /* Freed before they could be sent: never sent, and said so. */
  ck_assert_uint_eq(s.calls, 2);
  ck_assert_int_eq(s.last_status, APPMSG_E_NOT_SENT);
  ck_assert_int_eq(s.last_cause, APPMSG_E_CLOSED);
  tu_close(hold);
}
END_TEST

START_TEST(calls_that_timed_out_unanswered_make_the_client_connect_again) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.max_in_flight = 2;
  o.call_timeout_ms = 100;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "later", NULL), 0);
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "later", NULL), 0);
  run_until(&s.calls, 2, 5000);
  ck_assert_uint_eq(s.timeouts, 2);
  /* Both in-flight slots hold placeholders of calls the server never answered: the client
   * connects again instead of waiting for those replies for ever. */
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (appmsg_client_connects(c) < 2 && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 10);
  ck_assert_uint_eq(appmsg_client_connects(c), 2);
  struct seen next = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &next, "echo", "value", "again", NULL), 0);
  run_until(&next.calls, 1, 5000);
  ck_assert_uint_eq(next.ok, 1);
  ck_assert_str_eq(next.last_result, "again");
  appmsg_client_free(c);
}
END_TEST

START_TEST(a_call_times_out_counting_from_the_call_not_from_the_loop) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (!appmsg_client_connected(c) && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 10);
  ck_assert(appmsg_client_connected(c));
  /* The program works outside the loop for a while (the loop's clock stands still)... */
  tu_sleep_ms(600);
  /* ...then calls with 400 ms to spare: they count from now, not from the loop's last look. */
  struct seen s = {0};
  struct appmsg_call call = {.content = "{\"action\": \"later\"}", .timeout_ms = 400};
  call.len = strlen(call.content);
  uint64_t t0 = tu_now_ms();
  ck_assert_int_eq(appmsg_client_send(c, &call, on_reply, &s), 0);
  run_until(&s.calls, 1, 5000);
  ck_assert_uint_eq(s.timeouts, 1);
  ck_assert_uint_ge(tu_now_ms() - t0, 400);
  appmsg_client_free(c);
}
END_TEST

START_TEST(a_call_never_sent_says_so_with_its_cause) {
  char dead[16];
  appmsg_socket_t hold = tu_refused_port(dead, sizeof dead);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.call_timeout_ms = 300; /* reconnect on: the call waits in the queue until its time is up */
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", dead, &o), 0);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(c, on_reply, &s, "echo", NULL), 0);
  run_until(&s.calls, 1, 5000);
  ck_assert_int_eq(s.last_status, APPMSG_E_NOT_SENT);
  ck_assert_int_eq(s.last_cause, APPMSG_E_TIMEOUT);
  ck_assert_ptr_nonnull(strstr(s.last_reason, "not sent"));
  ck_assert_ptr_nonnull(strstr(s.last_reason, "refused"));
  appmsg_client_free(c);
  tu_close(hold);
}
END_TEST

/* A resolver that never answers, for one name: the library's lookups go through this
 * getaddrinfo() (the test links the static library); every other name goes to the C library's
 * (Winsock's on Windows). */
#define HANG_NAME "hang.appmsg.test"
static pthread_mutex_t hang_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hang_cv = PTHREAD_COND_INITIALIZER;
static int hang_release, hang_entered;

#ifndef _WIN32
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
  static int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
#else
/* (<ws2tcpip.h> may declare it dllimport; this program's definition is the one it links) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wattributes"
int WSAAPI getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res) {
  static int(WSAAPI * real)(const char *, const char *, const struct addrinfo *,
                            struct addrinfo **);
#endif
  if (node && strcmp(node, HANG_NAME) == 0) {
    if (hints && (hints->ai_flags & AI_NUMERICHOST))
      return EAI_NONAME; /* an address check never asks a resolver */
    pthread_mutex_lock(&hang_mu);
    hang_entered++;
    while (!hang_release)
      pthread_cond_wait(&hang_cv, &hang_mu);
    pthread_mutex_unlock(&hang_mu);
    return EAI_AGAIN;
  }
#ifndef _WIN32
  if (real == NULL)
    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
#else
  if (real == NULL) {
    FARPROC f = GetProcAddress(GetModuleHandleA("ws2_32.dll"), "getaddrinfo");
    memcpy(&real, &f, sizeof real);
  }
#endif
  return real(node, service, hints, res);
}
#ifdef _WIN32
#pragma GCC diagnostic pop
#endif

#ifndef _WIN32
static int threads_now(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  for (struct dirent *e; d && (e = readdir(d)) != NULL;)
    n += e->d_name[0] != '.';
  if (d)
    closedir(d);
  return n;
}
#else
static int threads_now(void) {
  int n = 0;
  DWORD me = GetCurrentProcessId();
  HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
  ck_assert(snap != INVALID_HANDLE_VALUE);
  THREADENTRY32 t = {.dwSize = sizeof t};
  for (BOOL more = Thread32First(snap, &t); more; more = Thread32Next(snap, &t))
    n += t.th32OwnerProcessID == me;
  CloseHandle(snap);
  return n;
}
#endif

static struct appmsg_client *chain_client;
static size_t chain_done, chain_ok;

static void chained(const struct appmsg_reply *r, void *ud) {
  (void)ud;
  chain_done++;
  chain_ok += r->status == 0;
  if (chain_done < 200)
    appmsg_client_call(chain_client, chained, NULL, "echo", "value", "x", NULL);
}

START_TEST(a_resolver_that_never_answers_stalls_only_the_client_that_asked) {
  service_start("127.0.0.1");
  int threads0 = threads_now();
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.connect_timeout_ms = 100; /* each attempt gives the resolver 100 ms */
  o.call_timeout_ms = 1000;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 50;
  struct appmsg_client *stuck;
  ck_assert_int_eq(appmsg_client_new(&stuck, loop, HANG_NAME, port, &o), 0);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(stuck, on_reply, &s, "echo", NULL), 0);
  /* Another client on the same loop is served as if nothing were wrong. */
  ck_assert_int_eq(appmsg_client_new(&chain_client, loop, "127.0.0.1", port, &o), 0);
  chain_done = chain_ok = 0;
  ck_assert_int_eq(appmsg_client_call(chain_client, chained, NULL, "echo", "value", "x", NULL), 0);
  struct tu_watch w;
  tu_watch_start(&w);
  run_until(&chain_done, 200, 10000);
  ck_assert_uint_eq(chain_ok, 200);
  ck_assert_uint_lt(tu_watch_ms(&w), 5000);
  /* The stuck client's call ends when its time is up: never sent, the resolver named. */
  run_until(&s.calls, 1, 5000);
  ck_assert_int_eq(s.last_status, APPMSG_E_NOT_SENT);
  ck_assert_ptr_nonnull(strstr(s.last_reason, "no answer"));
  /* Many attempts, one lookup: a resolver that hangs holds one thread, not one per attempt. */
  pthread_mutex_lock(&hang_mu);
  ck_assert_int_eq(hang_entered, 1);
  hang_release = 1;
  pthread_cond_broadcast(&hang_cv);
  pthread_mutex_unlock(&hang_mu);
  appmsg_client_free(stuck);
  appmsg_client_free(chain_client);
  /* The lookup's thread ends by itself once the resolver answers (and frees what it holds). */
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (threads_now() > threads0 && tu_now_ms() < end)
    tu_sleep_ms(1);
  ck_assert_int_eq(threads_now(), threads0);
}
END_TEST

static struct appmsg_client *frees_itself;

static void free_own_client(const struct appmsg_reply *r, void *ud) {
  on_reply(r, ud);
  appmsg_client_free(frees_itself);
}

START_TEST(a_callback_freeing_its_client_during_another_free_outside_the_loop_is_safe) {
  /* A listener of our own that resets the client's connection while the loop is not running. */
  appmsg_socket_t lfd;
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 4, &lfd, err, sizeof err), 0);
  char p[16];
  snprintf(p, sizeof p, "%d", appmsg_sockport(lfd));
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  ck_assert_int_eq(appmsg_client_new(&frees_itself, loop, "127.0.0.1", p, &o), 0);
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (!appmsg_client_connected(frees_itself) && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 10);
  ck_assert(appmsg_client_connected(frees_itself));
  struct pollfd pl = {.fd = lfd, .events = POLLIN}; /* (the listener does not block) */
  ck_assert_int_eq(appmsg__poll(&pl, 1, TU_EVENT_MS), 1);
  appmsg_socket_t afd;
  ck_assert_int_eq(appmsg_accept(lfd, &afd), 0);
  struct linger lg = {1, 0};
  setsockopt(afd, SOL_SOCKET, SO_LINGER, (const void *)&lg, sizeof lg);
  tu_close(afd); /* a reset */
  /* Outside the loop: a call (its bytes wait for the loop), then another client freed, which
   * finishes the loop's pending work - the write fails, the connection ends, and the call's
   * callback frees its own client from inside that work. */
  struct seen s = {0};
  ck_assert_int_eq(appmsg_client_call(frees_itself, free_own_client, &s, "ping", NULL), 0);
  struct appmsg_client *other;
  ck_assert_int_eq(appmsg_client_new(&other, loop, "127.0.0.1", p, &o), 0);
  tu_sleep_ms(20); /* the reset has reached the client's socket */
  appmsg_client_free(other);
  run_until(&s.calls, 1, 5000);
  ck_assert_uint_eq(s.calls, 1);
  tu_close(lfd);
}
END_TEST

static struct appmsg_client *to_free;

static void free_in_callback(const struct appmsg_reply *r, void *ud) {
  on_reply(r, ud);
  appmsg_client_free(to_free);
}

START_TEST(freeing_the_client_from_a_callback_ends_the_other_calls) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  ck_assert_int_eq(appmsg_client_new(&to_free, loop, "127.0.0.1", port, &o), 0);
  struct seen s = {0}, rest = {0};
  ck_assert_int_eq(appmsg_client_call(to_free, free_in_callback, &s, "echo", "value", "x", NULL),
                   0);
  ck_assert_int_eq(appmsg_client_call(to_free, on_reply, &rest, "later", NULL), 0);
  ck_assert_int_eq(appmsg_client_call(to_free, on_reply, &rest, "echo", NULL), 0);
  run_until(&s.calls, 1, 5000);
  ck_assert_uint_eq(s.ok, 1);
  ck_assert_uint_eq(rest.calls, 2);
  ck_assert_uint_eq(rest.closed, 2);
  size_t never = 0;
  run_until(&never, 1, 100); /* the service sees the connection go */
}
END_TEST

START_TEST(binary_calls_and_given_request_ids) {
  service_start("127.0.0.1");
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct seen s = {0};
  struct appmsg_call call = {
      .content_type = "binary/x", .content = "\x00\x01\x02", .len = 3, .request_id = "\"abc\""};
  ck_assert_int_eq(appmsg_client_send(c, &call, on_reply, &s), 0);
  struct appmsg_call bad = {.content = "{}", .len = 2, .request_id = "{nope"};
  ck_assert_int_eq(appmsg_client_send(c, &bad, on_reply, &s), -EINVAL);
  run_until(&s.calls, 1, 5000);
  ck_assert_uint_eq(s.ok, 1);
  appmsg_client_free(c);
}
END_TEST

/* ---- the blocking call: its server runs on a thread of its own ---------- */

struct bg {
  struct appmsg_loop *loop;
  struct appmsg_service *svc;
  struct appmsg_service_opts o;
  appmsg_socket_t stop[2]; /* a byte on stop[1] ends the thread's loop */
  pthread_t thread;
  char port[16];
};

static void on_stop(struct appmsg_loop *l, appmsg_socket_t fd, unsigned ev, void *ud) {
  (void)fd;
  (void)ev;
  (void)ud;
  appmsg_loop_stop(l);
}

static void *bg_run(void *arg) {
  struct bg *b = arg;
  appmsg_loop_run(b->loop);
  return NULL;
}

START_TEST(the_blocking_call_asks_one_question) {
  struct bg b;
  memset(&b, 0, sizeof b);
  ck_assert_int_eq(appmsg_loop_new(&b.loop, APPMSG_LOOP_DEFAULT), 0);
  appmsg_service_opts_default(&b.o);
  ck_assert_int_eq(appmsg_service_new(&b.svc, b.loop, &b.o), 0);
  appmsg_service_handle(b.svc, "echo", on_echo, NULL);
  appmsg_service_handle(b.svc, "missing", on_missing, NULL);
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_service_listen(b.svc, "127.0.0.1", "0", err, sizeof err), 0);
  snprintf(b.port, sizeof b.port, "%s", strrchr(appmsg_service_address(b.svc), ':') + 1);
  ck_assert_int_eq(tu_socketpair(b.stop), 0);
  ck_assert_int_eq(appmsg_loop_watch(b.loop, b.stop[0], APPMSG_EV_READ, on_stop, NULL), 0);
  ck_assert_int_eq(pthread_create(&b.thread, NULL, bg_run, &b), 0);

  struct appmsg_answer a;
  ck_assert_int_eq(appmsg_ask("127.0.0.1", b.port, 5000, &a, "echo", "value", "ring", NULL), 0);
  ck_assert_str_eq(a.result, "ring");
  ck_assert_str_eq(a.content_type, "text/json");
  appmsg_answer_cleanup(&a);
  ck_assert_int_eq(appmsg_ask("127.0.0.1", b.port, 5000, &a, "missing", NULL),
                   APPMSG_E_ERROR_REPLY);
  ck_assert_str_eq(a.error, "NOT_FOUND");
  appmsg_answer_cleanup(&a);
  ck_assert_int_eq(appmsg_ask("127.0.0.1", b.port, 5000, &a, "ping", NULL), 0);
  ck_assert_str_eq(a.result, "pong");
  appmsg_answer_cleanup(&a);
  ck_assert_int_eq(appmsg_ask_args("127.0.0.1", b.port, NULL, 5000, &a, "echo",
                                   APPMSG_ARGS(APPMSG_ARG_S("value", "typed"))),
                   0);
  cJSON *tree = appmsg_answer_cjson(&a);
  ck_assert(cJSON_IsString(tree));
  ck_assert_str_eq(tree->valuestring, "typed");
  cJSON_Delete(tree);
  appmsg_answer_cleanup(&a);
  ck_assert_int_eq(appmsg_ask_args("127.0.0.1", b.port, NULL, 5000, &a, "echo",
                                   APPMSG_ARGS(APPMSG_ARG_D("value", NAN))),
                   -EINVAL);
  appmsg_answer_cleanup(&a);
  char dead[16];
  dead_port(dead, sizeof dead);
  ck_assert_int_eq(appmsg_ask("127.0.0.1", dead, 5000, &a, "ping", NULL), APPMSG_E_NOT_SENT);
  ck_assert_int_eq(a.cause, -ECONNREFUSED);
  ck_assert_ptr_nonnull(a.reason);
  appmsg_answer_cleanup(&a);
  ck_assert_int_eq(appmsg_ask("no-such-host.invalid", "1", 5000, &a, "ping", NULL),
                   APPMSG_E_NOT_SENT);
  ck_assert_int_eq(a.cause, APPMSG_E_ADDRESS);
  appmsg_answer_cleanup(&a);

  ck_assert_int_eq(appmsg_send(b.stop[1], "x", 1), 1);
  pthread_join(b.thread, NULL);
  appmsg_service_free(b.svc);
  appmsg_loop_unwatch(b.loop, b.stop[0]);
  tu_close(b.stop[0]);
  tu_close(b.stop[1]);
  appmsg_loop_free(b.loop);
}
END_TEST

/* ---- typed members ------------------------------------------------------------- */

START_TEST(typed_members_make_the_json_a_caller_would_write) {
  char *out;
  size_t len;
  const struct appmsg_arg args[] = {
      APPMSG_ARG_S("key", "caf\xc3\xa9 \"q\""),
      APPMSG_ARG_I("n", -9223372036854775807LL - 1),
      APPMSG_ARG_D("f", 0.1),
      APPMSG_ARG_D("g", 1e300),
      APPMSG_ARG_D("h", -2.5),
      APPMSG_ARG_B("yes", 7),
      APPMSG_ARG_B("no", 0),
      APPMSG_ARG_NIL("none"),
      APPMSG_ARG_J("j", " {\"x\": [1, 2.5e3]}"),
  };
  ck_assert_int_eq(appmsg_request_build(&out, &len, "set", args, sizeof args / sizeof args[0]), 0);
  ck_assert_str_eq(out,
                   "{\"action\": \"set\", \"key\": \"caf\xc3\xa9 \\\"q\\\"\", "
                   "\"n\": -9223372036854775808, \"f\": 0.1, \"g\": 1e+300, \"h\": -2.5, "
                   "\"yes\": true, \"no\": false, \"none\": null, \"j\":  {\"x\": [1, 2.5e3]}}");
  ck_assert_uint_eq(len, strlen(out));
  /* What any JSON reader makes of it: the values given. */
  cJSON *j = cJSON_Parse(out);
  ck_assert_double_eq(cJSON_GetObjectItem(j, "f")->valuedouble, 0.1);
  ck_assert_double_eq(cJSON_GetObjectItem(j, "g")->valuedouble, 1e300);
  cJSON_Delete(j);
  free(out);
  /* A double that needs all 17 digits reads back exactly. */
  const struct appmsg_arg third[] = {APPMSG_ARG_D("t", 1.0 / 3.0)};
  ck_assert_int_eq(appmsg_request_build(&out, &len, "x", third, 1), 0);
  ck_assert_str_eq(out, "{\"action\": \"x\", \"t\": 0.3333333333333333}");
  free(out);
  ck_assert_int_eq(appmsg_request_build(&out, &len, "ping", NULL, 0), 0);
  ck_assert_str_eq(out, "{\"action\": \"ping\"}");
  free(out);
  /* Refused, nothing made. */
  const struct appmsg_arg bad[][1] = {
      {APPMSG_ARG_D("nan", NAN)},   {APPMSG_ARG_D("inf", INFINITY)},
      {APPMSG_ARG_J("j", "{nope")}, {APPMSG_ARG_J("j", "1 2")},
      {APPMSG_ARG_J("j", "")},      {APPMSG_ARG_S("s", "bad \xff")},
      {APPMSG_ARG_S(NULL, "v")},    {APPMSG_ARG_S("k", NULL)},
      {APPMSG_ARG_S("\xc3", "v")},  {{"k", (enum appmsg_arg_type)42, NULL, 0, 0, 0.0}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    out = NULL;
    ck_assert_msg(appmsg_request_build(&out, &len, "x", bad[i], 1) == -EINVAL, "case %zu", i);
    ck_assert_ptr_null(out);
  }
  ck_assert_int_eq(appmsg_request_build(&out, &len, NULL, NULL, 0), -EINVAL);
  ck_assert_int_eq(appmsg_request_build(&out, &len, "x", NULL, 1), -EINVAL);
  /* A JSON value given with its length need not end with a NUL. */
  const struct appmsg_arg cut[] = {{"j", APPMSG_ARG_JSON, "[1]garbage", 3, 0, 0.0}};
  ck_assert_int_eq(appmsg_request_build(&out, &len, "x", cut, 1), 0);
  ck_assert_str_eq(out, "{\"action\": \"x\", \"j\": [1]}");
  free(out);
}
END_TEST

static void on_sum(struct appmsg_request *r, void *ud) {
  (void)ud;
  long long a, b;
  double f;
  int flag;
  appmsg_request_int(r, "a", &a); /* checked as described */
  appmsg_request_int(r, "b", &b);
  appmsg_request_number(r, "f", &f);
  appmsg_request_bool(r, "flag", &flag);
  char json[160];
  snprintf(json, sizeof json, "{\"sum\": %lld, \"f\": %g, \"flag\": %s, \"list\": [1, \"two\"]}",
           a + b, f, flag ? "true" : "false");
  appmsg_reply_json(r, json, strlen(json));
}

static const struct appmsg_param sum_params[] = {{"a", APPMSG_TYPE_INTEGER, 1, NULL},
                                                 {"b", APPMSG_TYPE_INTEGER, 1, NULL},
                                                 {"f", APPMSG_TYPE_NUMBER, 1, NULL},
                                                 {"flag", APPMSG_TYPE_BOOLEAN, 1, NULL}};
static const struct appmsg_action_doc sum_doc = {"adds", sum_params, 4, APPMSG_TYPE_OBJECT, NULL};

struct tree_seen {
  size_t calls;
  long long sum;
  double f;
  int flag, list, status;
  char error[64];
};

static void on_tree(const struct appmsg_reply *r, void *ud) {
  struct tree_seen *t = ud;
  t->calls++;
  t->status = r->status;
  snprintf(t->error, sizeof t->error, "%s", r->error ? r->error : "");
  cJSON *res = appmsg_reply_cjson(r);
  if (res && r->status == 0) {
    t->sum = (long long)cJSON_GetObjectItem(res, "sum")->valuedouble;
    t->f = cJSON_GetObjectItem(res, "f")->valuedouble;
    t->flag = cJSON_IsTrue(cJSON_GetObjectItem(res, "flag"));
    t->list = cJSON_GetArraySize(cJSON_GetObjectItem(res, "list"));
  }
  cJSON_Delete(res); /* (an error reply's result is a tree too: the string) */
}

START_TEST(typed_calls_reach_a_described_action_and_results_parse_as_a_tree) {
  service_start("127.0.0.1");
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "sum", on_sum, NULL, &sum_doc), 0);
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &o), 0);
  struct tree_seen t = {0}, bad = {0};
  ck_assert_int_eq(
      appmsg_client_call_args(c, on_tree, &t, "sum",
                              APPMSG_ARGS(APPMSG_ARG_I("a", 40), APPMSG_ARG_I("b", 2),
                                          APPMSG_ARG_D("f", 0.25), APPMSG_ARG_B("flag", 1))),
      0);
  ck_assert_int_eq(
      appmsg_client_call_args(c, on_tree, &bad, "sum",
                              APPMSG_ARGS(APPMSG_ARG_S("a", "40"), APPMSG_ARG_I("b", 2),
                                          APPMSG_ARG_D("f", 1), APPMSG_ARG_B("flag", 0))),
      0);
  /* Refused at once, no callback. */
  ck_assert_int_eq(
      appmsg_client_call_args(c, on_tree, &bad, "sum", APPMSG_ARGS(APPMSG_ARG_D("f", NAN))),
      -EINVAL);
  run_until(&bad.calls, 1, 5000);
  run_until(&t.calls, 1, 5000);
  ck_assert_int_eq(t.status, 0);
  ck_assert_int_eq((int)t.sum, 42);
  ck_assert_double_eq(t.f, 0.25);
  ck_assert_int_eq(t.flag, 1);
  ck_assert_int_eq(t.list, 2);
  ck_assert_int_eq(bad.status, APPMSG_E_ERROR_REPLY);
  ck_assert_str_eq(bad.error, "BAD_REQUEST");
  ck_assert_uint_eq(bad.calls, 1);
  appmsg_client_free(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("client");
  TCase *tc = tcase_create("client");
  tcase_set_timeout(tc, 120);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, typed_members_make_the_json_a_caller_would_write);
  tcase_add_test(tc, typed_calls_reach_a_described_action_and_results_parse_as_a_tree);
  tcase_add_test(tc, ten_thousand_pipelined_calls_on_one_connection_are_all_matched);
  tcase_add_test(tc, ten_thousand_pipelined_calls_with_request_ids_are_all_matched);
  tcase_add_test(tc, a_call_times_out_and_its_late_reply_is_dropped);
  tcase_add_test(tc, calls_queued_while_the_server_is_down_succeed_after_it_comes_back);
#ifndef _WIN32 /* (see the test) */
  tcase_add_test(tc, every_resolved_address_is_tried_in_turn);
#endif
  tcase_add_test(tc, an_error_reply_is_decoded_into_its_name_and_reason);
  tcase_add_test(tc, reply_keys_written_with_escapes_are_read_as_their_names);
  tcase_add_test(tc, a_refused_connection_fails_the_calls_that_wait_for_it);
  tcase_add_test(tc, max_in_flight_bounds_the_calls_sent_at_once);
  tcase_add_test(tc, freeing_the_client_from_a_callback_ends_the_other_calls);
  tcase_add_test(tc, binary_calls_and_given_request_ids);
  tcase_add_test(tc, the_blocking_call_asks_one_question);
  tcase_add_test(tc, a_full_queue_refuses_the_call_at_once_and_runs_no_callback);
  tcase_add_test(tc, the_queue_is_bounded_in_bytes_while_the_server_is_away);
  tcase_add_test(tc, calls_that_timed_out_unanswered_make_the_client_connect_again);
  tcase_add_test(tc, a_call_times_out_counting_from_the_call_not_from_the_loop);
  tcase_add_test(tc, a_call_never_sent_says_so_with_its_cause);
  tcase_add_test(tc, a_resolver_that_never_answers_stalls_only_the_client_that_asked);
  tcase_add_test(tc, a_callback_freeing_its_client_during_another_free_outside_the_loop_is_safe);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
