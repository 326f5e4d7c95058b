/*
 * The service layer over real loopback sockets: handlers by action, replies
 * in request order whatever order they are made in, replies after the
 * connection closed, the deadline, the status counters, request ids echoed
 * byte for byte, unknown actions, double replies, built-ins, content and
 * framing errors behind owed replies, end of stream and drain with replies
 * owed, and reading paused while too many replies are owed.
 *
 * The service and the test's peer share one thread: the peer is a plain
 * non-blocking socket, and every wait runs the service's loop until what
 * the test waits for has arrived (bounded in time).  Every test runs on
 * both loop backends (_i: 0 epoll, 1 poll).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <sys/ioctl.h>
#endif

#include "appmsg/appmsg.h"
#include "platform.h"
#include "testutil.h"
#include "service_internal.h" /* a request's connection (Windows), the metrics' text */

static const enum appmsg_loop_backend backends[] = {TU_LOOP_EPOLL, APPMSG_LOOP_POLL};

/* ---- the service under test ---------------------------------------------- */

static struct appmsg_loop *loop;
static struct appmsg_service *svc;
static struct appmsg_service_opts opts;
static struct tu_str logged; /* every log line, one a line */

#define MAX_HELD 64
static struct appmsg_request *held[MAX_HELD]; /* requests the "later" handler keeps */
static int nheld;
static int handled;         /* handler calls */
static int second_reply_rc; /* what the "twice" handler's second reply returned */

#ifdef _WIN32
/* The server's end of the last connection a handler ran for (see wait_delivered()). */
static appmsg_socket_t server_fd = APPMSG_INVALID_SOCKET;
#define NOTE_SERVER_END(r) (server_fd = appmsg_conn_fd((r)->sc->conn))
#else
#define NOTE_SERVER_END(r) ((void)(r))
#endif

static struct tu_str logged_fields; /* each line's fields (appmsg_log_fields()), one a line */

static void capture_log(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  (void)level;
  tu_str_addf(&logged, "%s\n", line);
  const struct appmsg_log_fields *f = appmsg_log_fields();
  tu_str_addf(&logged_fields, "peer=%s action=%s error=%s offset=%lld rid=%.*s slow=%d\n",
              f->peer ? f->peer : "-", f->action ? f->action : "-", f->error ? f->error : "-",
              f->offset, (int)f->request_id_len, f->request_id ? f->request_id : "",
              f->duration_s >= 0.03);
}

static void on_echo(struct appmsg_request *r, void *ud) {
  (void)ud;
  handled++;
  NOTE_SERVER_END(r);
  const char *v = appmsg_request_string(r, "value");
  ck_assert_int_eq(appmsg_reply_result(r, v ? v : "(none)"), 0);
}

static void on_later(struct appmsg_request *r, void *ud) {
  (void)ud;
  handled++;
  NOTE_SERVER_END(r);
  ck_assert_int_lt(nheld, MAX_HELD);
  held[nheld++] = r;
}

static void on_twice(struct appmsg_request *r, void *ud) {
  (void)ud;
  handled++;
  ck_assert_int_eq(appmsg_reply_result(r, "first"), 0);
  second_reply_rc = appmsg_reply_result(r, "second");
}

static void on_binary(struct appmsg_request *r, void *ud) {
  (void)ud;
  size_t len;
  const void *p = appmsg_request_content(r, &len);
  ck_assert_int_eq(appmsg_reply_content(r, "binary/echo", "binary", p, len), 0);
}

static void on_unknown(struct appmsg_request *r, void *ud) {
  (void)ud;
  char text[128];
  snprintf(text, sizeof text, "nobody does %s", appmsg_request_action(r));
  appmsg_reply_error(r, "NO_SUCH_ACTION", text);
}

/* Starts a service on a free loopback port with the handlers above. */
static void start(int backend, void (*tweak)(struct appmsg_service_opts *)) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[backend]), 0);
  appmsg_service_opts_default(&opts);
  opts.log = capture_log;
  opts.log_level = APPMSG_LOG_DEBUG;
  if (tweak)
    tweak(&opts);
  ck_assert_int_eq(appmsg_service_new(&svc, loop, &opts), 0);
  ck_assert_int_eq(appmsg_service_handle(svc, "echo", on_echo, NULL), 0);
  ck_assert_int_eq(appmsg_service_handle(svc, "later", on_later, NULL), 0);
  ck_assert_int_eq(appmsg_service_handle(svc, "twice", on_twice, NULL), 0);
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_service_listen(svc, "127.0.0.1", "0", err, sizeof err), 0);
  nheld = handled = second_reply_rc = 0;
#ifdef _WIN32
  server_fd = APPMSG_INVALID_SOCKET;
#endif
}

static void stop(void) {
  appmsg_service_free(svc);
  appmsg_loop_free(loop);
  tu_str_free(&logged);
  tu_str_free(&logged_fields);
  svc = NULL;
  loop = NULL;
}

/* ---- the peer -------------------------------------------------------------- */

struct frame {
  char *header;  /* the header's JSON text, NUL-terminated */
  char *content; /* NUL-terminated */
  size_t len;    /* content length */
};

struct peer {
  appmsg_socket_t fd;
  size_t sent;           /* bytes sent */
  struct tu_str in;      /* bytes received, not yet cut into frames */
  struct frame got[256]; /* frames received */
  int nframes;
  int eof;
};

static void peer_connect(struct peer *p) {
  memset(p, 0, sizeof *p);
  const char *addr = appmsg_service_address(svc);
  const char *colon = strrchr(addr, ':');
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", colon + 1, 5000, &p->fd, err, sizeof err),
                   0);
  ck_assert_int_eq(appmsg_set_nonblock(p->fd, 1), 0);
}

static void peer_close(struct peer *p) {
  if (p->fd != APPMSG_INVALID_SOCKET)
    tu_close(p->fd);
  p->fd = APPMSG_INVALID_SOCKET;
  for (int i = 0; i < p->nframes; i++) {
    free(p->got[i].header);
    free(p->got[i].content);
  }
  tu_str_free(&p->in);
  p->nframes = 0;
}

/* Sends a frame whose header is exactly hdr (as text) and content c. */
static void peer_send_raw(struct peer *p, const void *bytes, size_t n) {
  ck_assert_int_eq(appmsg_send(p->fd, bytes, n), (ssize_t)n);
  p->sent += n;
}

static void peer_send(struct peer *p, const char *hdr_extra, const char *type,
                      const char *content) {
  char frame[8192];
  size_t clen = strlen(content);
  int hl = snprintf(frame + 2, sizeof frame - 2,
                    "{\"byteorder\": \"little\", \"content-type\": \"%s\", \"content-encoding\": "
                    "\"%s\", \"content-length\": %zu%s}",
                    type, strcmp(type, "text/json") == 0 ? "utf-8" : "binary", clen,
                    hdr_extra ? hdr_extra : "");
  frame[0] = (char)(hl >> 8);
  frame[1] = (char)(hl & 0xff);
  memcpy(frame + 2 + hl, content, clen);
  peer_send_raw(p, frame, 2 + (size_t)hl + clen);
}

#ifndef _WIN32
/* Waits (at most 5 s) until everything the peer sent has reached the
 * server's socket: nothing left unacknowledged in the peer's send queue. */
static void wait_delivered(struct peer *p) {
  for (int k = 0; k < 5000; k++) {
    int queued = -1;
    if (ioctl(p->fd, TIOCOUTQ, &queued) == 0 && queued == 0)
      return;
    tu_sleep_ms(1);
  }
  ck_abort_msg("the peer's bytes did not reach the server in 5 s");
}
#else
/* Waits (at most TU_EVENT_MS) until everything the peer sent has reached the server's socket:
 * Windows does not tell how much of a send queue is unacknowledged (TIOCOUTQ), so the server's
 * end (the only connection; a handler has run for it) is asked instead - what the service has
 * read plus what waits unread there is all that was sent. */
static void wait_delivered(struct peer *p) {
  ck_assert(server_fd != APPMSG_INVALID_SOCKET);
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  for (;;) {
    struct appmsg_service_stats st;
    appmsg_service_stats(svc, &st);
    size_t unread = 0;
    ck_assert_int_eq(appmsg__sock_pending(server_fd, &unread), 0);
    if (st.bytes_in + unread == p->sent)
      return;
    ck_assert_msg(tu_now_ms() < end, "the peer's bytes did not reach the server in %d ms",
                  TU_EVENT_MS);
    tu_sleep_ms(1);
  }
}
#endif

/* Cuts complete frames off p->in. */
static void cut_frames(struct peer *p) {
  for (;;) {
    if (p->in.len < 2)
      return;
    const unsigned char *b = (const unsigned char *)p->in.p;
    size_t hl = ((size_t)b[0] << 8) | b[1];
    if (p->in.len < 2 + hl)
      return;
    char *hdr = tu_strndup(p->in.p + 2, hl);
    const char *cl = strstr(hdr, "\"content-length\": ");
    ck_assert_ptr_nonnull(cl);
    size_t clen = strtoul(cl + 18, NULL, 10);
    if (p->in.len < 2 + hl + clen) {
      free(hdr);
      return;
    }
    ck_assert_int_lt(p->nframes, 256);
    struct frame *f = &p->got[p->nframes++];
    f->header = hdr;
    f->content = tu_strndup(p->in.p + 2 + hl, clen);
    f->len = clen;
    size_t used = 2 + hl + clen;
    memmove(p->in.p, p->in.p + used, p->in.len - used);
    p->in.len -= used;
  }
}

/* Runs the service's loop and reads the peer until it holds n frames (or
 * its end of stream, when n < 0), for at most ms.  Returns the count. */
static int pump(struct peer *p, int n, int ms) {
  uint64_t end = appmsg_loop_now(loop) + (uint64_t)ms;
  for (;;) {
    char buf[65536];
    ssize_t r;
    while (p->fd != APPMSG_INVALID_SOCKET && (r = appmsg_recv(p->fd, buf, sizeof buf)) > 0)
      tu_str_add(&p->in, buf, (size_t)r);
    if (p->fd != APPMSG_INVALID_SOCKET && r == 0)
      p->eof = 1;
    cut_frames(p);
    if ((n >= 0 && p->nframes >= n) || (n < 0 && p->eof) || appmsg_loop_now(loop) >= end)
      return p->nframes;
    appmsg_loop_run_once(loop, 10);
  }
}

/* Runs the loop until cond() holds or ms pass. */
static void run_until(int (*cond)(void), int ms) {
  uint64_t end = appmsg_loop_now(loop) + (uint64_t)ms;
  while (!cond() && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 10);
}

static int no_connections(void) {
  struct appmsg_service_stats st;
  appmsg_service_stats(svc, &st);
  return st.connections == 0;
}

static int target_held;
static int enough_held(void) {
  return nheld >= target_held;
}

static void wait_held(int n) {
  target_held = n;
  run_until(enough_held, 5000);
  ck_assert_int_eq(nheld, n);
}

/* The string result of a text/json reply {"result": "..."}, or "" (static). */
static const char *result_of(const struct frame *f) {
  static char out[1024];
  cJSON *j = cJSON_Parse(f->content);
  cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "result");
  snprintf(out, sizeof out, "%s", cJSON_IsString(r) ? r->valuestring : "");
  cJSON_Delete(j);
  return out;
}

static const char *error_of(const struct frame *f) {
  static char out[128];
  cJSON *j = cJSON_Parse(f->content);
  cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
  snprintf(out, sizeof out, "%s", cJSON_IsString(e) ? e->valuestring : "");
  cJSON_Delete(j);
  return out;
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(replies_leave_in_request_order_when_answered_out_of_order) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\", \"value\": \"A\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\", \"value\": \"B\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"C\"}");
  wait_held(2);
  ck_assert_int_eq(pump(&p, 1, 200), 0); /* C is answered, but must wait for A and B */
  ck_assert_int_eq(appmsg_reply_result(held[1], "B"), 0);
  ck_assert_int_eq(pump(&p, 1, 200), 0); /* B waits for A */
  ck_assert_int_eq(appmsg_reply_result(held[0], "A"), 0);
  ck_assert_int_eq(pump(&p, 3, 5000), 3);
  ck_assert_str_eq(result_of(&p.got[0]), "A");
  ck_assert_str_eq(result_of(&p.got[1]), "B");
  ck_assert_str_eq(result_of(&p.got[2]), "C");
  /* Held requests read their members after their handler returned. */
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\", \"value\": \"D\\u00e9\"}");
  wait_held(3);
  ck_assert_str_eq(appmsg_request_string(held[2], "value"), "D\xc3\xa9");
  ck_assert_str_eq(appmsg_request_action(held[2]), "later");
  ck_assert_str_eq(appmsg_request_header(held[2])->content_type, "text/json");
  ck_assert_int_eq(appmsg_request_alive(held[2]), 1);
  ck_assert_int_eq(appmsg_reply_result(held[2], appmsg_request_string(held[2], "value")), 0);
  ck_assert_int_eq(pump(&p, 4, 5000), 4);
  ck_assert_str_eq(result_of(&p.got[3]), "D\xc3\xa9");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(replies_made_later_one_after_another_leave_together) {
  /* As when a database's answers arrive: 50 replies made outside any
   * callback of the connection are written once, when the loop goes on,
   * not with one write each. */
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  for (int k = 0; k < 50; k++)
    peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  wait_held(50);
  for (int k = 0; k < 50; k++) {
    char text[16];
    snprintf(text, sizeof text, "r%d", k);
    ck_assert_int_eq(appmsg_reply_result(held[k], text), 0);
  }
  char buf[8192];
  ck_assert_int_eq(appmsg_recv(p.fd, buf, sizeof buf), -EAGAIN); /* nothing yet */
  ck_assert_int_eq(pump(&p, 50, 5000), 50);
  for (int k = 0; k < 50; k++) {
    char text[16];
    snprintf(text, sizeof text, "r%d", k);
    ck_assert_str_eq(result_of(&p.got[k]), text);
  }
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(a_reply_after_the_connection_closed_is_dropped_and_logged) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  wait_held(1);
  /* A reset, so that the server knows at once that nobody will read (after
   * a plain close it could be a half-close: the reply would still be sent). */
  struct linger lg = {1, 0};
  setsockopt(p.fd, SOL_SOCKET, SO_LINGER, (const void *)&lg, sizeof lg);
  peer_close(&p);
  run_until(no_connections, 5000);
  ck_assert(no_connections());
  ck_assert_int_eq(appmsg_request_alive(held[0]), 0);
  ck_assert_int_eq(appmsg_reply_result(held[0], "too late"), APPMSG_E_CLOSED);
  ck_assert_ptr_nonnull(strstr(logged.p, "after its connection had closed"));
  struct appmsg_service_stats st;
  appmsg_service_stats(svc, &st);
  ck_assert_uint_eq(st.pending, 0);
  stop();
}
END_TEST

static void short_deadline(struct appmsg_service_opts *o) {
  o->deadline_ms = 200;
}

START_TEST(an_unanswered_request_gets_a_timeout_reply_at_the_deadline) {
  start(_i, short_deadline);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, ", \"request-id\": 9", "text/json", "{\"action\": \"later\"}");
  wait_held(1);
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  ck_assert_str_eq(error_of(&p.got[0]), "TIMEOUT");
  ck_assert_ptr_nonnull(strstr(p.got[0].header, "\"request-id\": 9}"));
  ck_assert_int_eq(appmsg_request_alive(held[0]), 0);
  /* The connection goes on; the late reply is dropped and logged. */
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"next\"}");
  ck_assert_int_eq(pump(&p, 2, 5000), 2);
  ck_assert_str_eq(result_of(&p.got[1]), "next");
  ck_assert_int_eq(appmsg_reply_result(held[0], "late"), APPMSG_E_CLOSED);
  ck_assert_ptr_nonnull(strstr(logged.p, "after the deadline"));
  ck_assert_int_eq(pump(&p, 3, 300), 2);
  ck_assert_uint_eq(appmsg_service_error_count(svc, "TIMEOUT"), 1);
  peer_close(&p);
  stop();
}
END_TEST

/* A member of the status object, as a number (-1 if absent). */
static double status_number(cJSON *status, const char *a, const char *b) {
  cJSON *x = cJSON_GetObjectItemCaseSensitive(status, a);
  if (b)
    x = cJSON_GetObjectItemCaseSensitive(x, b);
  return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

START_TEST(status_counters_move_as_requests_replies_and_errors_do) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"ping\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"nope\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": ");      /* CONTENT_JSON */
  peer_send(&p, NULL, "text/json", "[1, 2]");             /* BAD_REQUEST */
  peer_send(&p, NULL, "text/json", "{\"value\": \"x\"}"); /* BAD_REQUEST */
  ck_assert_int_eq(pump(&p, 5, 5000), 5); /* (sent, so that bytes_out counts them) */
  peer_send(&p, NULL, "text/json", "{\"action\": \"status\"}");
  ck_assert_int_eq(pump(&p, 6, 5000), 6);
  ck_assert_str_eq(result_of(&p.got[0]), "pong");
  ck_assert_str_eq(result_of(&p.got[1]), "Error: invalid action 'nope'.");
  ck_assert_str_eq(error_of(&p.got[2]), "CONTENT_JSON");
  ck_assert_ptr_nonnull(strstr(p.got[2].content, "\"offset\": 11"));
  ck_assert_str_eq(error_of(&p.got[3]), "BAD_REQUEST");
  ck_assert_str_eq(error_of(&p.got[4]), "BAD_REQUEST");
  cJSON *j = cJSON_Parse(p.got[5].content);
  cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "result");
  ck_assert(cJSON_IsObject(st));
  ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(st, "version")->valuestring, appmsg_version());
  ck_assert(status_number(st, "uptime_s", NULL) >= 0);
  ck_assert(status_number(st, "connections", NULL) == 1);
  ck_assert(status_number(st, "requests", NULL) == 6);
  ck_assert(status_number(st, "replies", NULL) == 5); /* the status reply is not sent yet */
  ck_assert(status_number(st, "errors", "INVALID_ACTION") == 1);
  ck_assert(status_number(st, "errors", "CONTENT_JSON") == 1);
  ck_assert(status_number(st, "errors", "BAD_REQUEST") == 2);
  ck_assert(status_number(st, "bytes_in", NULL) > 100);
  ck_assert(status_number(st, "bytes_out", NULL) > 100);
  cJSON_Delete(j);
  struct appmsg_service_stats s;
  appmsg_service_stats(svc, &s);
  ck_assert_uint_eq(s.requests, 6);
  ck_assert_uint_eq(s.replies, 6);
  ck_assert_uint_eq(s.errors, 4);
  peer_close(&p);
  stop();
}
END_TEST

static size_t status_extra(void *ud, char *out, size_t cap) {
  (void)ud;
  return (size_t)snprintf(out, cap, "\"store\": {\"connected\": true, \"note\": \"%0300d\"}", 7);
}

START_TEST(a_status_hook_adds_members) {
  start(_i, NULL);
  appmsg_service_status_hook(svc, status_extra, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"status\"}");
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  cJSON *j = cJSON_Parse(p.got[0].content);
  cJSON *store = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(j, "result"), "store");
  ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(store, "connected")));
  ck_assert_uint_eq(strlen(cJSON_GetObjectItemCaseSensitive(store, "note")->valuestring), 300);
  cJSON_Delete(j);
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(request_ids_are_echoed_byte_for_byte_and_absent_when_absent) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  static const char *const ids[] = {"1.0", "\"\\u0041b\"", "{\"a\": [1, {\"b\": null}]}", "-0",
                                    "\"\xf0\x9f\x90\xb6\""};
  const int n = (int)(sizeof ids / sizeof ids[0]);
  char extra[128];
  for (int k = 0; k < n; k++) {
    snprintf(extra, sizeof extra, ", \"request-id\": %s", ids[k]);
    peer_send(&p, extra, "text/json", "{\"action\": \"echo\", \"value\": \"x\"}");
  }
  peer_send(&p, ", \"request-id\": 77", "text/json", "{\"action\": \"nope\"}"); /* invalid action */
  peer_send(&p, ", \"request-id\": 78", "text/json", "[]");                     /* BAD_REQUEST */
  peer_send(&p, ", \"request-id\": 79", "binary/x", "abc");                     /* no handler */
  peer_send(&p, ", \"x-other\": 1", "text/json", "{\"action\": \"echo\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\"}");
  ck_assert_int_eq(pump(&p, n + 5, 5000), n + 5);
  for (int k = 0; k < n; k++) {
    snprintf(extra, sizeof extra, ", \"request-id\": %s}", ids[k]);
    const char *h = p.got[k].header;
    ck_assert_msg(strlen(h) > strlen(extra) && strcmp(h + strlen(h) - strlen(extra), extra) == 0,
                  "reply header %s does not end with %s", h, extra);
  }
  ck_assert_ptr_nonnull(strstr(p.got[n].header, "\"request-id\": 77}"));
  ck_assert_ptr_nonnull(strstr(p.got[n + 1].header, "\"request-id\": 78}"));
  ck_assert_ptr_nonnull(strstr(p.got[n + 2].header, "\"request-id\": 79}"));
  ck_assert_str_eq(error_of(&p.got[n + 2]), "BAD_REQUEST");
  for (int k = n + 3; k < n + 5; k++)
    ck_assert_str_eq(p.got[k].header,
                     "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
                     "\"content-encoding\": \"utf-8\", \"content-length\": 20}");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(unknown_actions_get_the_guide_wording_or_the_applications_answer) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"delete\", \"value\": \"x\"}");
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  ck_assert_str_eq(p.got[0].content, "{\"result\": \"Error: invalid action 'delete'.\"}");
  appmsg_service_handle_unknown(svc, on_unknown, NULL);
  peer_send(&p, NULL, "text/json", "{\"action\": \"delete\"}");
  ck_assert_int_eq(pump(&p, 2, 5000), 2);
  ck_assert_str_eq(p.got[1].content,
                   "{\"result\": \"Error: nobody does delete.\", \"error\": \"NO_SUCH_ACTION\"}");
  /* Removing a handler makes its action unknown. */
  ck_assert_int_eq(appmsg_service_handle(svc, "echo", NULL, NULL), 0);
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\"}");
  ck_assert_int_eq(pump(&p, 3, 5000), 3);
  ck_assert_str_eq(error_of(&p.got[2]), "NO_SUCH_ACTION");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(a_second_reply_inside_the_handler_is_refused_and_logged) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"twice\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"after\"}");
  ck_assert_int_eq(pump(&p, 2, 5000), 2);
  ck_assert_int_eq(second_reply_rc, -EALREADY);
  ck_assert_str_eq(result_of(&p.got[0]), "first");
  ck_assert_str_eq(result_of(&p.got[1]), "after");
  ck_assert_int_eq(pump(&p, 3, 200), 2);
  ck_assert_ptr_nonnull(strstr(logged.p, "replied twice"));
  peer_close(&p);
  stop();
}
END_TEST

static void no_builtins(struct appmsg_service_opts *o) {
  o->builtins = 0;
}

START_TEST(builtins_can_be_switched_off) {
  start(_i, no_builtins);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"ping\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"status\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\"}");
  ck_assert_int_eq(pump(&p, 3, 5000), 3);
  ck_assert_str_eq(result_of(&p.got[0]), "Error: invalid action 'ping'.");
  ck_assert_str_eq(result_of(&p.got[1]), "Error: invalid action 'status'.");
  ck_assert_str_eq(result_of(&p.got[2]), "Error: invalid action 'describe'.");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(binary_requests_go_to_the_binary_handler) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "binary/x", "no handler yet");
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  ck_assert_str_eq(error_of(&p.got[0]), "BAD_REQUEST");
  appmsg_service_handle_binary(svc, on_binary, NULL);
  peer_send(&p, NULL, "binary/x", "\x01\x02 bytes");
  ck_assert_int_eq(pump(&p, 2, 5000), 2);
  ck_assert_ptr_nonnull(strstr(p.got[1].header, "\"content-type\": \"binary/echo\""));
  ck_assert_str_eq(p.got[1].content, "\x01\x02 bytes");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(content_errors_are_answered_and_the_connection_goes_on) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  char frame[256];
  const char *hdr = "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
                    "\"content-encoding\": \"latin-1\", \"content-length\": 2}";
  size_t hl = strlen(hdr);
  frame[0] = 0;
  frame[1] = (char)hl;
  memcpy(frame + 2, hdr, hl);
  memcpy(frame + 2 + hl, "{}", 2);
  peer_send_raw(&p, frame, 2 + hl + 2);
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"\xff\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"ok\"}");
  ck_assert_int_eq(pump(&p, 3, 5000), 3);
  ck_assert_str_eq(error_of(&p.got[0]), "BAD_REQUEST"); /* an encoding it cannot read */
  ck_assert_str_eq(error_of(&p.got[1]), "CONTENT_UTF8");
  ck_assert_ptr_nonnull(strstr(p.got[1].content, "\"offset\": 29"));
  ck_assert_str_eq(result_of(&p.got[2]), "ok");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(a_framing_error_reply_comes_after_the_replies_owed) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\", \"value\": \"A\"}");
  wait_held(1);
  peer_send_raw(&p, "\x00\x00", 2); /* HEADER_EMPTY */
  ck_assert_int_eq(pump(&p, 1, 300), 0);
  ck_assert_int_eq(appmsg_reply_result(held[0], "A"), 0);
  ck_assert_int_eq(pump(&p, -1, 5000), 2);
  ck_assert(p.eof);
  ck_assert_str_eq(result_of(&p.got[0]), "A");
  ck_assert_str_eq(error_of(&p.got[1]), "HEADER_EMPTY");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(the_peers_end_of_stream_waits_for_the_replies_owed) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\", \"value\": \"A\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\", \"value\": \"B\"}");
  appmsg__sock_shutdown_write(p.fd);
  wait_held(2);
  ck_assert_int_eq(pump(&p, 1, 300), 0);
  ck_assert_int_eq(appmsg_reply_result(held[1], "B"), 0);
  ck_assert_int_eq(appmsg_reply_error(held[0], "NOT_FOUND", "no A"), 0);
  ck_assert_int_eq(pump(&p, -1, 5000), 2);
  ck_assert(p.eof);
  ck_assert_str_eq(error_of(&p.got[0]), "NOT_FOUND");
  ck_assert_str_eq(result_of(&p.got[1]), "B");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(a_drain_waits_for_the_replies_owed) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  wait_held(1);
  appmsg_service_drain(svc);
  ck_assert_int_eq(pump(&p, 1, 300), 0);
  ck_assert(!p.eof);
  ck_assert_int_eq(appmsg_reply_result(held[0], "done"), 0);
  ck_assert_int_eq(pump(&p, -1, 5000), 1);
  ck_assert(p.eof);
  run_until(no_connections, 5000);
  ck_assert(no_connections());
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(a_drain_answers_every_request_that_had_arrived) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"first\"}");
  ck_assert_int_eq(pump(&p, 1, 5000), 1); /* accepted and served */
  for (int k = 0; k < 40; k++)
    peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"queued\"}");
  wait_delivered(&p);        /* all of it in the server's socket (the stack may be lazy) */
  appmsg_service_drain(svc); /* before the loop has read any of it */
  ck_assert_int_eq(pump(&p, -1, 5000), 41);
  ck_assert(p.eof);
  ck_assert_str_eq(result_of(&p.got[40]), "queued");
  peer_close(&p);
  stop();
}
END_TEST

static void few_pending(struct appmsg_service_opts *o) {
  o->max_pending = 4;
}

START_TEST(too_many_owed_replies_pause_reading) {
  start(_i, few_pending);
  struct peer p;
  peer_connect(&p);
  struct tu_str burst = {0};
  for (int k = 0; k < 10; k++) {
    char body[64], frame[512];
    int bl = snprintf(body, sizeof body, "{\"action\": \"later\", \"value\": \"%d\"}", k);
    int hl = snprintf(frame + 2, sizeof frame - 2,
                      "{\"byteorder\": \"big\", \"content-type\": \"text/json\", "
                      "\"content-encoding\": \"utf-8\", \"content-length\": %d}",
                      bl);
    frame[0] = 0;
    frame[1] = (char)hl;
    memcpy(frame + 2 + hl, body, (size_t)bl);
    tu_str_add(&burst, frame, 2 + (size_t)hl + (size_t)bl);
  }
  peer_send_raw(&p, burst.p, burst.len); /* all ten in one write: one read on the server */
  tu_str_free(&burst);
  wait_held(4);
  ck_assert_int_eq(pump(&p, 1, 200), 0);
  ck_assert_int_eq(handled, 4); /* the rest waits, unread */
  for (int k = 0; k < 10; k++) {
    target_held = k + 1;
    run_until(enough_held, 5000);
    ck_assert_int_ge(nheld, k + 1);
    ck_assert_int_le(nheld - k, 4); /* never more than 4 owed */
    ck_assert_int_eq(appmsg_reply_result(held[k], appmsg_request_string(held[k], "value")), 0);
  }
  ck_assert_int_eq(pump(&p, 10, 5000), 10);
  for (int k = 0; k < 10; k++) {
    char want[4];
    snprintf(want, sizeof want, "%d", k);
    ck_assert_str_eq(result_of(&p.got[k]), want);
  }
  peer_close(&p);
  stop();
}
END_TEST

/* ---- budgets ------------------------------------------------------------------------------ */

/* A "later" (or "echo") request with a value of n bytes, appended to b. */
static void add_frame(struct tu_str *b, const char *action, int k, size_t n) {
  struct tu_str body = {0};
  tu_str_addf(&body, "{\"action\": \"%s\", \"n\": %d, \"value\": \"", action, k);
  for (size_t i = 0; i < n; i++)
    tu_str_add(&body, "v", 1);
  tu_str_add(&body, "\"}", 2);
  char hdr[256];
  int hl = snprintf(hdr, sizeof hdr,
                    "{\"byteorder\": \"big\", \"content-type\": \"text/json\", "
                    "\"content-encoding\": \"utf-8\", \"content-length\": %zu}",
                    body.len);
  unsigned char prefix[2] = {(unsigned char)(hl >> 8), (unsigned char)hl};
  tu_str_add(b, prefix, 2);
  tu_str_add(b, hdr, (size_t)hl);
  tu_str_add(b, body.p, body.len);
  tu_str_free(&body);
}

/* Bytes a peer still has to send: sent as the socket takes them. */
struct outbox {
  struct tu_str b;
  size_t off;
};

static void outbox_push(struct peer *p, struct outbox *o) {
  while (o->off < o->b.len) {
    ssize_t w = appmsg_send(p->fd, o->b.p + o->off, o->b.len - o->off);
    if (w <= 0)
      return;
    o->off += (size_t)w;
    p->sent += (size_t)w;
  }
}

/* Runs the loop for ms, pushing the peers' bytes, answering nothing. */
static void run_pushing(struct peer *p, struct outbox *o, int np, int ms) {
  uint64_t end = tu_now_ms() + (uint64_t)ms;
  while (tu_now_ms() < end) {
    for (int i = 0; i < np; i++)
      outbox_push(&p[i], &o[i]);
    appmsg_loop_run_once(loop, 5);
  }
}

static void conn_budget_64k(struct appmsg_service_opts *o) {
  o->max_conn_bytes = 64 * 1024;
}

START_TEST(owed_bytes_past_the_connection_budget_pause_its_reading) {
  start(_i, conn_budget_64k);
  struct peer p;
  peer_connect(&p);
  struct outbox o = {0};
  for (int k = 0; k < 20; k++)
    add_frame(&o.b, "later", k, 16 * 1024);
  /* Owed requests of 16 KiB each: past 64 KiB held, the connection is not read any more. */
  run_pushing(&p, &o, 1, 300);
  ck_assert_int_ge(nheld, 4);
  ck_assert_int_le(nheld, 5);
  int most = nheld;
  /* Answered one by one as they come: reading resumes under half the budget, and the number
   * owed at once never passes what the budget allows. */
  for (int k = 0; k < 20; k++) {
    target_held = k + 1;
    uint64_t end = tu_now_ms() + 5000;
    while (nheld < k + 1 && tu_now_ms() < end) {
      outbox_push(&p, &o);
      appmsg_loop_run_once(loop, 5);
    }
    ck_assert_int_ge(nheld, k + 1);
    if (nheld - k > most)
      most = nheld - k;
    char n[16];
    snprintf(n, sizeof n, "%d", k);
    ck_assert_int_eq(appmsg_reply_result(held[k], n), 0);
  }
  ck_assert_int_le(most, 5);
  ck_assert_int_eq(pump(&p, 20, 5000), 20);
  for (int k = 0; k < 20; k++) {
    char want[16];
    snprintf(want, sizeof want, "%d", k);
    ck_assert_str_eq(result_of(&p.got[k]), want);
  }
  tu_str_free(&o.b);
  peer_close(&p);
  stop();
}
END_TEST

static void service_budget_96k(struct appmsg_service_opts *o) {
  o->max_conn_bytes = 0;
  o->max_service_bytes = 96 * 1024;
}

START_TEST(owed_bytes_past_the_service_budget_pause_every_connection_that_adds) {
  start(_i, service_budget_96k);
  struct peer p[2];
  struct outbox o[2] = {{{0}, 0}, {{0}, 0}};
  for (int i = 0; i < 2; i++) {
    peer_connect(&p[i]);
    for (int k = 0; k < 10; k++)
      add_frame(&o[i].b, "later", 10 * i + k, 16 * 1024);
  }
  run_pushing(p, o, 2, 300);
  /* 96 KiB hold six requests of 16 KiB: the seventh is over the budget. */
  ck_assert_int_ge(nheld, 6);
  ck_assert_int_le(nheld, 7);
  int answered = 0;
  while (answered < 20) {
    uint64_t end = tu_now_ms() + 5000;
    while (nheld <= answered && tu_now_ms() < end) {
      outbox_push(&p[0], &o[0]);
      outbox_push(&p[1], &o[1]);
      appmsg_loop_run_once(loop, 5);
    }
    ck_assert_int_gt(nheld, answered);
    ck_assert_int_le(nheld - answered, 7);
    ck_assert_int_eq(appmsg_reply_result(held[answered], "ok"), 0);
    answered++;
  }
  ck_assert_int_eq(pump(&p[0], 10, 5000), 10);
  ck_assert_int_eq(pump(&p[1], 10, 5000), 10);
  for (int i = 0; i < 2; i++) {
    tu_str_free(&o[i].b);
    peer_close(&p[i]);
  }
  stop();
}
END_TEST

static void service_budget_output(struct appmsg_service_opts *o) {
  o->max_service_bytes = 256 * 1024;
  o->server.conn.read_pause = 64u << 20; /* only the service's budget pauses here */
  o->server.conn.max_output = 0;
}

START_TEST(output_queued_counts_against_the_service_budget_until_it_drains) {
  start(_i, service_budget_output);
  struct peer p;
  peer_connect(&p);
  int small = 16 * 1024;
  setsockopt(p.fd, SOL_SOCKET, SO_RCVBUF, (const void *)&small, sizeof small);
  struct outbox o = {0};
  enum { N = 300 };
  for (int k = 0; k < N; k++)
    add_frame(&o.b, "echo", k, 16 * 1024);
  /* The peer sends and does not read: the replies (4.8 MB) fill the kernel's buffers, then the
   * service's output, and past 256 KiB held the service stops reading. */
  int before = -1;
  uint64_t end = tu_now_ms() + 10000;
  while (tu_now_ms() < end && handled != before) {
    before = handled;
    run_pushing(&p, &o, 1, 300);
  }
  ck_assert_int_eq(handled, before); /* it stopped: 300 ms without a new request handled */
  ck_assert_int_lt(handled, N);
  /* The peer reads: the output drains, the service reads again, every reply arrives. */
  int got = 0;
  end = tu_now_ms() + 20000;
  while (got < N && tu_now_ms() < end) {
    outbox_push(&p, &o);
    pump(&p, 0, 0); /* what has arrived, cut into frames: counted, then dropped */
    got += p.nframes;
    for (int i = 0; i < p.nframes; i++) {
      free(p.got[i].header);
      free(p.got[i].content);
    }
    p.nframes = 0;
    appmsg_loop_run_once(loop, 5);
  }
  ck_assert_int_eq(got, N);
  ck_assert_int_eq(handled, N);
  tu_str_free(&o.b);
  peer_close(&p);
  stop();
}
END_TEST

/* ---- what a review found: each of these once used freed memory, spun or closed wrongly ---- */

static void short_deadline_200(struct appmsg_service_opts *o) {
  o->deadline_ms = 200;
}

START_TEST(a_late_reply_after_the_deadline_and_the_close_is_dropped) {
  start(_i, short_deadline_200);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  ck_assert_int_eq(pump(&p, 1, 5000), 1); /* the TIMEOUT reply in its place */
  ck_assert_str_eq(error_of(&p.got[0]), "TIMEOUT");
  peer_close(&p);
  run_until(no_connections, 5000);
  ck_assert(no_connections());
  /* The handler answers at last: dropped and said so - its connection's state is long gone. */
  ck_assert_int_eq(appmsg_reply_result(held[0], "late"), APPMSG_E_CLOSED);
  ck_assert_ptr_nonnull(strstr(logged.p, "after the deadline had passed"));
  stop();
}
END_TEST

START_TEST(a_service_freed_with_an_expired_request_unanswered_frees_it) {
  start(_i, short_deadline_200);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  peer_close(&p);
  run_until(no_connections, 5000);
  stop(); /* the request the application never answered goes with the service (LeakSanitizer) */
}
END_TEST

static void frame_timeout_200(struct appmsg_service_opts *o) {
  o->server.conn.frame_timeout_ms = 200;
  o->deadline_ms = 1500;
}

START_TEST(a_stalled_frame_behind_owed_replies_is_reported_once) {
  start(_i, frame_timeout_200);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  wait_held(1);
  peer_send_raw(&p, "\x00\x40{\"by", 5); /* the start of a frame, then silence */
  /* The frame timeout fires once: one error, queued behind the owed reply; the connection
   * stops reading and waits for that reply - it does not time out again and again. */
  uint64_t end = tu_now_ms() + 800;
  int woke = 0;
  while (tu_now_ms() < end)
    woke += appmsg_loop_run_once(loop, 20) > 0;
  ck_assert_int_le(woke, 10);
  ck_assert_uint_eq(appmsg_service_error_count(svc, "TIMEOUT"), 1);
  ck_assert_int_eq(appmsg_reply_result(held[0], "done"), 0);
  ck_assert_int_eq(pump(&p, -1, 5000), 2); /* the reply, the error, then the end */
  ck_assert_str_eq(result_of(&p.got[0]), "done");
  ck_assert_str_eq(error_of(&p.got[1]), "TIMEOUT");
  peer_close(&p);
  stop();
}
END_TEST

static void tight_conn_budget(struct appmsg_service_opts *o) {
  o->server.conn.frame_timeout_ms = 300;
  o->max_conn_bytes = 2000;
}

START_TEST(a_frame_half_read_while_reading_is_paused_is_not_timed_out) {
  start(_i, tight_conn_budget);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  wait_held(2);
  /* The start of a third request; then the second is answered with 3000 bytes, which wait
   * behind the first's reply: past the budget, the connection is not read. */
  const char third[] = "{\"action\": \"echo\", \"value\": \"three\"}";
  char frame[512];
  int hl = snprintf(frame + 2, sizeof frame - 2,
                    "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
                    "\"content-encoding\": \"utf-8\", \"content-length\": %zu}",
                    strlen(third));
  frame[0] = (char)(hl >> 8);
  frame[1] = (char)hl;
  memcpy(frame + 2 + hl, third, strlen(third));
  size_t n = 2 + (size_t)hl + strlen(third);
  peer_send_raw(&p, frame, 10);
  wait_delivered(&p);
  appmsg_loop_run_once(loop, 10);
  char big[3001];
  memset(big, 'x', 3000);
  big[3000] = '\0';
  ck_assert_int_eq(appmsg_reply_result(held[1], big), 0);
  peer_send_raw(&p, frame + 10, n - 10); /* the rest comes at once, and waits unread */
  uint64_t end = tu_now_ms() + 600;      /* twice the frame timeout */
  while (tu_now_ms() < end)
    appmsg_loop_run_once(loop, 20);
  ck_assert_uint_eq(appmsg_service_error_count(svc, "TIMEOUT"), 0);
  /* The first answered: under the budget, the third is read and answered. */
  ck_assert_int_eq(appmsg_reply_result(held[0], "one"), 0);
  ck_assert_int_eq(pump(&p, 3, 5000), 3);
  ck_assert_str_eq(result_of(&p.got[0]), "one");
  ck_assert_ptr_nonnull(strstr(p.got[1].content, big)); /* (longer than result_of() keeps) */
  ck_assert_str_eq(result_of(&p.got[2]), "three");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(a_later_protocol_version_is_a_bad_request) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, ", \"appmsg-version\": \"1.1\"", "text/json",
            "{\"action\": \"echo\", \"value\": \"a\"}");
  peer_send(&p, ", \"appmsg-version\": \"2.0\"", "text/json",
            "{\"action\": \"echo\", \"value\": \"b\"}");
  peer_send(&p, ", \"appmsg-version\": 2", "binary/x", "c");
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"d\"}");
  /* Compared once unescaped (PROTOCOL.md 2.7). */
  peer_send(&p, ", \"appmsg-version\": \"\\u0031.2\"", "text/json",
            "{\"action\": \"echo\", \"value\": \"e\"}");
  peer_send(&p, ", \"appmsg-version\": \"\\u0032.0\"", "text/json",
            "{\"action\": \"echo\", \"value\": \"f\"}");
  ck_assert_int_eq(pump(&p, 6, 5000), 6);
  ck_assert_str_eq(result_of(&p.got[0]), "a");
  ck_assert_str_eq(error_of(&p.got[1]), "BAD_REQUEST");
  ck_assert_ptr_nonnull(strstr(p.got[1].content, "unsupported appmsg version \\\"2.0\\\""));
  ck_assert_str_eq(error_of(&p.got[2]), "BAD_REQUEST");
  ck_assert_str_eq(result_of(&p.got[3]), "d");
  ck_assert_str_eq(result_of(&p.got[4]), "e");
  ck_assert_str_eq(error_of(&p.got[5]), "BAD_REQUEST");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(replies_check_what_they_send) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json",
            "{\"action\": \"later\", \"n\": 42, \"f\": 1.5, \"big\": 1e400}");
  wait_held(1);
  struct appmsg_request *r = held[0];
  long long v;
  ck_assert_int_eq(appmsg_request_int(r, "n", &v), 0);
  ck_assert_int_eq(v, 42);
  ck_assert_int_eq(appmsg_request_int(r, "f", &v), -EINVAL);
  ck_assert_int_eq(appmsg_request_int(r, "none", &v), -ENOENT);
  size_t len;
  const char *raw = appmsg_request_json(r, "big", &len);
  ck_assert_int_eq((int)len, 5);
  ck_assert_int_eq(memcmp(raw, "1e400", 5), 0);
  ck_assert_ptr_null(appmsg_request_string(r, "n")); /* not a string */
  ck_assert_int_eq(appmsg_reply_result(r, "bad \xff utf-8"), -EINVAL);
  ck_assert_int_eq(appmsg_reply_json(r, "{nope", 5), -EINVAL);
  ck_assert_int_eq(appmsg_reply_error(r, "lower_case", "x"), -EINVAL);
  ck_assert_int_eq(appmsg_reply_json(r, "[1, {\"a\": null}]", 16), 0); /* still owed until now */
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  ck_assert_str_eq(p.got[0].content, "{\"result\": [1, {\"a\": null}]}");
  peer_close(&p);
  stop();
}
END_TEST

/* ---- described actions ------------------------------------------------------ */

static const struct appmsg_param typed_params[] = {
    {"s", APPMSG_TYPE_STRING, 1, "a string"}, {"n", APPMSG_TYPE_INTEGER, 1, NULL},
    {"x", APPMSG_TYPE_NUMBER, 0, NULL},       {"b", APPMSG_TYPE_BOOLEAN, 0, NULL},
    {"o", APPMSG_TYPE_OBJECT, 0, NULL},       {"a", APPMSG_TYPE_ARRAY, 0, NULL},
    {"z", APPMSG_TYPE_NULL, 0, NULL},         {"any", APPMSG_TYPE_ANY, 0, NULL},
};
static const struct appmsg_action_doc typed_doc = {"Takes one of each type", typed_params,
                                                   sizeof typed_params / sizeof typed_params[0],
                                                   APPMSG_TYPE_STRING, "what it read"};

/* Reads what it described with no checks of its own, and says what it read. */
static void on_typed(struct appmsg_request *r, void *ud) {
  (void)ud;
  handled++;
  const char *str = appmsg_request_string(r, "s");
  long long n = -1;
  double x = -1;
  int b = -1;
  ck_assert_ptr_nonnull(str);
  ck_assert_int_eq(appmsg_request_int(r, "n", &n), 0);
  int xrc = appmsg_request_number(r, "x", &x), brc = appmsg_request_bool(r, "b", &b);
  ck_assert(xrc == 0 || xrc == -ENOENT);
  ck_assert(brc == 0 || brc == -ENOENT);
  char out[300];
  snprintf(out, sizeof out, "%s %lld %g %d", str, n, x, b);
  appmsg_reply_result(r, out);
}

START_TEST(described_actions_have_their_members_checked_before_the_handler) {
  start(_i, NULL);
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "typed", on_typed, NULL, &typed_doc), 0);
  static const struct {
    const char *request;
    const char *result; /* the handler's answer, or the BAD_REQUEST sentence */
  } cases[] = {
      {"{\"action\": \"typed\", \"s\": \"h\\u00e9\", \"n\": -9223372036854775808}",
       "h\u00e9 -9223372036854775808 -1 -1"},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 7, \"x\": 2.5e1, \"b\": true, \"o\": {}, "
       "\"a\": [], \"z\": null, \"any\": [1]}",
       "a 7 25 1"},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": \"x\", \"n\": 3, \"b\": false}", "a 3 -1 0"},
      {"{\"action\": \"typed\", \"n\": 1}", "Error: the request needs member 's' (a string)."},
      {"{\"action\": \"typed\", \"s\": \"a\"}",
       "Error: the request needs member 'n' (an integer)."},
      {"{\"action\": \"typed\", \"s\": 5, \"n\": 1}",
       "Error: member 's' must be a string, not a number."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1.5}",
       "Error: member 'n' must be an integer, not a number with a fraction or exponent."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1e2}",
       "Error: member 'n' must be an integer, not a number with a fraction or exponent."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 9223372036854775808}",
       "Error: member 'n' is beyond the range of a 64-bit integer."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"x\": \"1\"}",
       "Error: member 'x' must be a number, not a string."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"x\": 1e400}",
       "Error: member 'x' is beyond the range of a double."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"b\": 1}",
       "Error: member 'b' must be a boolean, not a number."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"o\": []}",
       "Error: member 'o' must be an object, not an array."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"a\": {}}",
       "Error: member 'a' must be an array, not an object."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"z\": false}",
       "Error: member 'z' must be null, not a boolean."},
      {"{\"action\": \"typed\", \"s\": null, \"n\": 1}",
       "Error: member 's' must be a string, not null."},
      {"{\"action\": \"typed\", \"s\": \"a\", \"n\": 1, \"n\": 0.5}",
       "Error: member 'n' must be an integer, not a number with a fraction or exponent."},
  };
  size_t ncases = sizeof cases / sizeof cases[0];
  struct peer p;
  peer_connect(&p);
  for (size_t i = 0; i < ncases; i++)
    peer_send(&p, "", "text/json", cases[i].request);
  ck_assert_int_eq(pump(&p, (int)ncases, 5000), (int)ncases);
  for (size_t i = 0; i < ncases; i++) {
    cJSON *want = cJSON_Parse("{}");
    cJSON_AddStringToObject(want, "r", cases[i].result);
    ck_assert_msg(strcmp(result_of(&p.got[i]), cJSON_GetObjectItem(want, "r")->valuestring) == 0,
                  "case %zu: %s", i, p.got[i].content);
    ck_assert_str_eq(error_of(&p.got[i]), i < 3 ? "" : "BAD_REQUEST");
    cJSON_Delete(want);
  }
  ck_assert_int_eq(handled, 3); /* the handler never saw a request it would have to check */
  ck_assert_int_eq((int)appmsg_service_error_count(svc, "BAD_REQUEST"), (int)ncases - 3);
  /* Registered again without a description: no checks, the handler sees everything. */
  ck_assert_int_eq(appmsg_service_handle(svc, "typed", on_echo, NULL), 0);
  peer_send(&p, NULL, "text/json", "{\"action\": \"typed\", \"value\": \"free\"}");
  ck_assert_int_eq(pump(&p, (int)ncases + 1, 5000), (int)ncases + 1);
  ck_assert_str_eq(result_of(&p.got[ncases]), "free");
  peer_close(&p);
  stop();
}
END_TEST

/* The methods of a describe reply, by name (borrowed from doc). */
static cJSON *method_named(cJSON *doc, const char *name) {
  cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItem(doc, "methods")) {
    if (strcmp(cJSON_GetObjectItem(m, "name")->valuestring, name) == 0)
      return m;
  }
  return NULL;
}

START_TEST(describe_answers_every_action_and_one_by_name) {
  start(_i, NULL);
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "typed", on_typed, NULL, &typed_doc), 0);
  struct peer p;
  peer_connect(&p);
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\"}");
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  ck_assert_int_eq(appmsg_service_set_info(svc, "test-service", "3.1"), 0);
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\", \"name\": \"typed\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\", \"name\": \"nope\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\", \"name\": 1}");
  ck_assert_int_eq(pump(&p, 5, 5000), 5);

  cJSON *all = cJSON_Parse(p.got[0].content), *doc = cJSON_GetObjectItem(all, "result");
  ck_assert_str_eq(cJSON_GetObjectItem(doc, "openrpc")->valuestring, "1.2.6");
  cJSON *info = cJSON_GetObjectItem(doc, "info");
  ck_assert_str_eq(cJSON_GetObjectItem(info, "title")->valuestring, "appmsg service");
  ck_assert_str_eq(cJSON_GetObjectItem(info, "version")->valuestring, appmsg_version());
  /* Every action, sorted by name: the built-ins and the application's. */
  static const char *const names[] = {"describe", "echo",  "later", "ping",
                                      "status",   "twice", "typed"};
  cJSON *methods = cJSON_GetObjectItem(doc, "methods");
  ck_assert_int_eq(cJSON_GetArraySize(methods), 7);
  for (int i = 0; i < 7; i++)
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(methods, i), "name")->valuestring,
                     names[i]);
  cJSON *echo = method_named(doc, "echo");
  ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(echo, "x-described")));
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(echo, "params")), 0);
  cJSON *describe = method_named(doc, "describe");
  ck_assert_ptr_null(cJSON_GetObjectItem(describe, "x-described"));
  cJSON *dparam = cJSON_GetArrayItem(cJSON_GetObjectItem(describe, "params"), 0);
  ck_assert_str_eq(cJSON_GetObjectItem(dparam, "name")->valuestring, "name");
  ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(dparam, "required")));
  cJSON_Delete(all);

  all = cJSON_Parse(p.got[1].content);
  info = cJSON_GetObjectItem(cJSON_GetObjectItem(all, "result"), "info");
  ck_assert_str_eq(cJSON_GetObjectItem(info, "title")->valuestring, "test-service");
  ck_assert_str_eq(cJSON_GetObjectItem(info, "version")->valuestring, "3.1");
  cJSON_Delete(all);

  /* One action: its parameters in the order declared, each type as a JSON Schema. */
  cJSON *one = cJSON_Parse(p.got[2].content), *m = cJSON_GetObjectItem(one, "result");
  ck_assert_str_eq(cJSON_GetObjectItem(m, "name")->valuestring, "typed");
  ck_assert_str_eq(cJSON_GetObjectItem(m, "summary")->valuestring, "Takes one of each type");
  ck_assert_str_eq(cJSON_GetObjectItem(m, "paramStructure")->valuestring, "by-name");
  static const char *const types[] = {"string", "integer", "number", "boolean",
                                      "object", "array",   "null",   NULL};
  cJSON *params = cJSON_GetObjectItem(m, "params");
  ck_assert_int_eq(cJSON_GetArraySize(params), 8);
  for (int i = 0; i < 8; i++) {
    cJSON *prm = cJSON_GetArrayItem(params, i), *schema = cJSON_GetObjectItem(prm, "schema");
    ck_assert_str_eq(cJSON_GetObjectItem(prm, "name")->valuestring, typed_params[i].name);
    ck_assert(cJSON_IsBool(cJSON_GetObjectItem(prm, "required")));
    ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItem(prm, "required")), i < 2);
    if (types[i])
      ck_assert_str_eq(cJSON_GetObjectItem(schema, "type")->valuestring, types[i]);
    else
      ck_assert_int_eq(cJSON_GetArraySize(schema), 0); /* any: {} */
  }
  ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(params, 0), "summary")->valuestring,
                   "a string");
  ck_assert_ptr_null(cJSON_GetObjectItem(cJSON_GetArrayItem(params, 1), "summary"));
  cJSON *res = cJSON_GetObjectItem(m, "result");
  ck_assert_str_eq(cJSON_GetObjectItem(res, "summary")->valuestring, "what it read");
  ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "schema"), "type")->valuestring,
                   "string");
  cJSON_Delete(one);

  ck_assert_str_eq(error_of(&p.got[3]), "NOT_FOUND");
  ck_assert_str_eq(result_of(&p.got[3]), "Error: no action 'nope'.");
  ck_assert_str_eq(error_of(&p.got[4]), "BAD_REQUEST");

  /* A removed action is gone from the list. */
  ck_assert_int_eq(appmsg_service_handle(svc, "typed", NULL, NULL), 0);
  peer_send(&p, NULL, "text/json", "{\"action\": \"describe\", \"name\": \"typed\"}");
  ck_assert_int_eq(pump(&p, 6, 5000), 6);
  ck_assert_str_eq(error_of(&p.got[5]), "NOT_FOUND");
  peer_close(&p);
  stop();
}
END_TEST

START_TEST(bad_descriptions_are_refused) {
  start(_i, NULL);
  struct appmsg_param ps[2] = {{"k", APPMSG_TYPE_STRING, 1, NULL}, {"k", APPMSG_TYPE_ANY, 0, NULL}};
  struct appmsg_action_doc d = {"x", ps, 2, APPMSG_TYPE_ANY, NULL};
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), -EINVAL); /* twice */
  ps[1].name = "action";
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), -EINVAL);
  ps[1].name = NULL;
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), -EINVAL);
  ps[1].name = "v";
  ps[1].type = (enum appmsg_type)99;
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), -EINVAL);
  ps[1].type = APPMSG_TYPE_ANY;
  ps[1].summary = "bad \xff";
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), -EINVAL);
  ps[1].summary = NULL;
  d.params = NULL;
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), -EINVAL);
  d.params = ps;
  ck_assert_int_eq(appmsg_service_handle_doc(svc, "a", on_echo, NULL, &d), 0);
  ck_assert_int_eq(appmsg_service_set_info(svc, "t", NULL), -EINVAL);
  ck_assert_int_eq(appmsg_service_set_info(svc, "\xc3", "1"), -EINVAL);
  ck_assert_str_eq(appmsg_type_name(APPMSG_TYPE_ANY), "any");
  ck_assert_str_eq(appmsg_type_name(APPMSG_TYPE_INTEGER), "integer");
  ck_assert_ptr_null(appmsg_type_name((enum appmsg_type)99));
  stop();
}
END_TEST

/* ---- measurements ------------------------------------------------------------------ */

static uint64_t clock_shift; /* what the test adds to the real clock */

static uint64_t shifted_clock(void) {
  return appmsg__monotonic_ns() + clock_shift;
}

static void slow_10ms(struct appmsg_service_opts *o) {
  o->slow_ms = 10;
}

/* The status object, asked on a connection of its own (p: already connected). */
static cJSON *ask_status(struct peer *q) {
  int before = q->nframes;
  peer_send(q, NULL, "text/json", "{\"action\": \"status\"}");
  ck_assert_int_eq(pump(q, before + 1, 5000), before + 1);
  cJSON *j = cJSON_Parse(q->got[before].content);
  ck_assert_ptr_nonnull(j);
  return j;
}

static double action_number(cJSON *status, const char *action, const char *what) {
  cJSON *acts = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(status, "result"), "actions");
  cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(acts, action), what);
  return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

START_TEST(requests_are_counted_and_timed_by_action) {
  start(_i, slow_10ms);
  clock_shift = 0;
  appmsg__set_clock(shifted_clock);
  ck_assert_int_eq(appmsg_service_handle(svc, "we\"ird\\", on_echo, NULL), 0);
  struct peer p, q;
  peer_connect(&p);
  peer_connect(&q);
  peer_send(&p, NULL, "text/json", "{\"action\": \"echo\", \"value\": \"x\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"nope\"}");
  peer_send(&p, NULL, "text/json", "[1]");
  peer_send(&p, NULL, "binary/x", "b");
  peer_send(&p, NULL, "text/json", "{\"action\": \"we\\\"ird\\\\\"}");
  ck_assert_int_eq(pump(&p, 5, 5000), 5);
  peer_send(&p, ", \"request-id\": 7", "text/json", "{\"action\": \"later\"}");
  peer_send(&p, NULL, "text/json", "{\"action\": \"later\"}");
  wait_held(2);
  cJSON *st = ask_status(&q);
  ck_assert(action_number(st, "echo", "requests") == 1);
  ck_assert(action_number(st, "echo", "errors") == 0);
  ck_assert(action_number(st, "_unknown", "errors") == 1);
  ck_assert(action_number(st, "_invalid", "errors") == 1);
  ck_assert(action_number(st, "_binary", "errors") == 1);
  ck_assert(action_number(st, "later", "pending") == 2);
  ck_assert(action_number(st, "later", "requests") == 0);
  ck_assert(action_number(st, "twice", "requests") == 0);   /* registered: listed at 0 */
  ck_assert(action_number(st, "_other", "requests") == -1); /* nothing counted: not listed */
  cJSON_Delete(st);

  clock_shift = 30000000; /* 30 ms pass before the replies (and the real time the test takes) */
  ck_assert_int_eq(appmsg_reply_result(held[0], "late"), 0);
  ck_assert_int_eq(appmsg_reply_error(held[1], "NOT_FOUND", "gone"), 0);
  ck_assert_int_eq(pump(&p, 7, 5000), 7);
  st = ask_status(&q);
  ck_assert(action_number(st, "later", "requests") == 2);
  ck_assert(action_number(st, "later", "errors") == 1);
  ck_assert(action_number(st, "later", "pending") == 0);
  ck_assert(action_number(st, "later", "max_s") >= 0.03);
  ck_assert(action_number(st, "later", "p99_s") >= 0.03 * (1 - 1.0 / 32)); /* (a bucket's middle) */
  ck_assert(action_number(st, "echo", "max_s") < 0.03);
  cJSON_Delete(st);
  /* Both were slow: logged with their action, peer and request id, as text and as fields. */
  ck_assert_ptr_nonnull(strstr(logged.p, "slow request: action 'later' answered in "));
  ck_assert_ptr_nonnull(strstr(logged.p, "(request-id 7)"));
  const char *slow = strstr(logged_fields.p, " action=later error=- offset=-1 rid=7 slow=1");
  ck_assert_ptr_nonnull(slow);
  while (slow > logged_fields.p && slow[-1] != '\n')
    slow--;
  ck_assert_int_eq(strncmp(slow, "peer=127.0.0.1:", 15), 0);
  ck_assert_ptr_null(strstr(logged.p, "action 'echo' answered"));

  /* The Prometheus text: every family, summed, labels escaped. */
  struct appmsg__text t = {NULL, 0, 0, 0};
  appmsg__svc_metrics_text(svc, &t);
  ck_assert(!t.failed);
  appmsg__text_addf(&t, "%c", '\0');
  static const char *const want[] = {
      "# TYPE appmsg_requests_total counter\n",
      "appmsg_requests_total{action=\"later\"} 2\n",
      "appmsg_request_errors_total{action=\"later\"} 1\n",
      "appmsg_requests_in_flight{action=\"later\"} 0\n",
      "appmsg_requests_total{action=\"we\\\"ird\\\\\"} 1\n",
      "# TYPE appmsg_request_duration_seconds histogram\n",
      "appmsg_request_duration_seconds_bucket{action=\"later\",le=\"0.024641535\"} 0\n",
      "appmsg_request_duration_seconds_bucket{action=\"later\",le=\"+Inf\"} 2\n",
      "appmsg_request_duration_seconds_count{action=\"later\"} 2\n",
      "appmsg_request_duration_seconds_sum{action=\"later\"} 0.",
      "appmsg_errors_total{error=\"NOT_FOUND\"} 1\n",
      "appmsg_errors_total{error=\"INVALID_ACTION\"} 1\n",
      "appmsg_build_info{version=\"",
      "appmsg_connections 2\n",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (strstr(t.p, want[i]) == NULL) {
      fprintf(stderr, "%s", t.p);
      ck_abort_msg("missing %s (the text is above)", want[i]);
    }
  free(t.p);
  appmsg__set_clock(NULL);
  peer_close(&p);
  peer_close(&q);
  stop();
}
END_TEST

/* An application's metrics: a line long enough that the library must ask again with room. */
static size_t app_metrics(void *ud, char *out, size_t cap) {
  (void)ud;
  char big[3000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  return (size_t)snprintf(out, cap,
                          "# HELP app_things Things.\n# TYPE app_things gauge\n"
                          "app_things{what=\"%s\"} 3\n",
                          big);
}

START_TEST(a_metrics_hook_adds_the_applications_families) {
  start(_i, NULL);
  appmsg_service_metrics_hook(svc, app_metrics, NULL);
  struct appmsg__text t = {malloc(64), 0, 64, 0};
  appmsg__svc_metrics_text(svc, &t);
  ck_assert(!t.failed);
  appmsg__text_addf(&t, "%c", '\0');
  ck_assert_ptr_nonnull(strstr(t.p, "# TYPE app_things gauge\napp_things{what=\"xxx"));
  ck_assert_ptr_nonnull(strstr(t.p, "\"} 3\n"));
  ck_assert_ptr_null(strstr(t.p, "appmsg_tls_")); /* no TLS here */
  free(t.p);
  appmsg_service_metrics_hook(svc, NULL, NULL);
  struct appmsg__text u = {NULL, 0, 0, 0};
  appmsg__svc_metrics_text(svc, &u);
  appmsg__text_addf(&u, "%c", '\0');
  ck_assert_ptr_null(strstr(u.p, "app_things"));
  free(u.p);
  stop();
}
END_TEST

START_TEST(framing_errors_are_logged_with_their_fields) {
  start(_i, NULL);
  struct peer p;
  peer_connect(&p);
  peer_send_raw(&p, "\x00\x05{\"a\":", 7);
  ck_assert_int_eq(pump(&p, 1, 5000), 1);
  ck_assert_ptr_nonnull(strstr(logged_fields.p, "error=HEADER_JSON offset=7"));
  ck_assert_ptr_nonnull(strstr(logged.p, "HEADER_JSON at stream offset 7"));
  peer_close(&p);
  stop();
}
END_TEST

int main(void) {
  Suite *s = suite_create("service");
  TCase *tc = tcase_create("service");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, replies_leave_in_request_order_when_answered_out_of_order, 0, 2);
  tcase_add_loop_test(tc, replies_made_later_one_after_another_leave_together, 0, 2);
  tcase_add_loop_test(tc, a_reply_after_the_connection_closed_is_dropped_and_logged, 0, 2);
  tcase_add_loop_test(tc, an_unanswered_request_gets_a_timeout_reply_at_the_deadline, 0, 2);
  tcase_add_loop_test(tc, status_counters_move_as_requests_replies_and_errors_do, 0, 2);
  tcase_add_loop_test(tc, a_status_hook_adds_members, 0, 2);
  tcase_add_loop_test(tc, request_ids_are_echoed_byte_for_byte_and_absent_when_absent, 0, 2);
  tcase_add_loop_test(tc, unknown_actions_get_the_guide_wording_or_the_applications_answer, 0, 2);
  tcase_add_loop_test(tc, a_second_reply_inside_the_handler_is_refused_and_logged, 0, 2);
  tcase_add_loop_test(tc, builtins_can_be_switched_off, 0, 2);
  tcase_add_loop_test(tc, binary_requests_go_to_the_binary_handler, 0, 2);
  tcase_add_loop_test(tc, content_errors_are_answered_and_the_connection_goes_on, 0, 2);
  tcase_add_loop_test(tc, a_framing_error_reply_comes_after_the_replies_owed, 0, 2);
  tcase_add_loop_test(tc, the_peers_end_of_stream_waits_for_the_replies_owed, 0, 2);
  tcase_add_loop_test(tc, a_drain_waits_for_the_replies_owed, 0, 2);
  tcase_add_loop_test(tc, a_drain_answers_every_request_that_had_arrived, 0, 2);
  tcase_add_loop_test(tc, too_many_owed_replies_pause_reading, 0, 2);
  tcase_add_loop_test(tc, a_later_protocol_version_is_a_bad_request, 0, 2);
  tcase_add_loop_test(tc, replies_check_what_they_send, 0, 2);
  tcase_add_loop_test(tc, owed_bytes_past_the_connection_budget_pause_its_reading, 0, 2);
  tcase_add_loop_test(tc, owed_bytes_past_the_service_budget_pause_every_connection_that_adds, 0,
                      2);
  tcase_add_loop_test(tc, output_queued_counts_against_the_service_budget_until_it_drains, 0, 2);
  tcase_add_loop_test(tc, a_late_reply_after_the_deadline_and_the_close_is_dropped, 0, 2);
  tcase_add_loop_test(tc, a_service_freed_with_an_expired_request_unanswered_frees_it, 0, 2);
  tcase_add_loop_test(tc, a_stalled_frame_behind_owed_replies_is_reported_once, 0, 2);
  tcase_add_loop_test(tc, a_frame_half_read_while_reading_is_paused_is_not_timed_out, 0, 2);
  tcase_add_loop_test(tc, described_actions_have_their_members_checked_before_the_handler, 0, 2);
  tcase_add_loop_test(tc, describe_answers_every_action_and_one_by_name, 0, 2);
  tcase_add_loop_test(tc, bad_descriptions_are_refused, 0, 2);
  tcase_add_loop_test(tc, requests_are_counted_and_timed_by_action, 0, 2);
  tcase_add_loop_test(tc, framing_errors_are_logged_with_their_fields, 0, 2);
  tcase_add_loop_test(tc, a_metrics_hook_adds_the_applications_families, 0, 2);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
