/*
 * A service's HTTP endpoint (appmsg_service_metrics_listen(), src/http.c)
 * over real loopback sockets: /metrics, /status, the page and its files,
 * HEAD, 404, 405, pipelined keep-alive requests answered in order,
 * HTTP/1.0 and "Connection: close", and hostile peers - an oversized head
 * (431), a body (413), garbage (400), a slow head (408), an idle
 * keep-alive connection, too many connections, a peer that never reads -
 * while the service's appmsg port goes on answering a ping.  Then the
 * endpoint freed from its own handler, and the service freed with HTTP
 * connections open (ASan and the leak checker judge those).
 *
 * The service, its HTTP peers and its appmsg peer share one thread: peers
 * are plain non-blocking sockets, and every wait runs the loop until what
 * the test waits for has come (bounded by TU_EVENT_MS).  The limits that
 * take time are made short through appmsg__service_metrics_listen_ex().
 * Every test runs on both loop backends (_i: 0 epoll, 1 poll).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "http.h"
#include "platform.h"
#include "testutil.h"

static const enum appmsg_loop_backend backends[] = {TU_LOOP_EPOLL, APPMSG_LOOP_POLL};

/* ---- the service under test -------------------------------------------------------------- */

static struct appmsg_loop *loop;
static struct appmsg_service *svc;
static struct appmsg_service_opts opts;
static struct tu_str logged; /* every log line, one a line */
static char http_port[16];

static void capture_log(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  (void)level;
  tu_str_addf(&logged, "%s\n", line);
}

static int log_has(const char *text) {
  return logged.len && tu_memmem(logged.p, logged.len, text, strlen(text)) != NULL;
}

static void on_echo(struct appmsg_request *r, void *ud) {
  (void)ud;
  const char *v = appmsg_request_string(r, "value");
  appmsg_reply_result(r, v ? v : "(none)");
}

/* Starts a service with the endpoint on free loopback ports; lim NULL: the defaults. */
static void start_with(int backend, const struct appmsg__http_limits *lim) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[backend]), 0);
  appmsg_service_opts_default(&opts);
  opts.log = capture_log;
  opts.log_level = APPMSG_LOG_DEBUG;
  ck_assert_int_eq(appmsg_service_new(&svc, loop, &opts), 0);
  ck_assert_int_eq(appmsg_service_handle(svc, "echo", on_echo, NULL), 0);
  char err[APPMSG_NET_ERRLEN];
  ck_assert_str_eq(appmsg_service_metrics_address(svc), "?");
  ck_assert_int_eq(appmsg_service_listen(svc, "127.0.0.1", "0", err, sizeof err), 0);
  ck_assert_int_eq(appmsg__service_metrics_listen_ex(svc, "127.0.0.1", "0", lim, err, sizeof err),
                   0);
  const char *addr = appmsg_service_metrics_address(svc);
  ck_assert_msg(strncmp(addr, "127.0.0.1:", 10) == 0, "address %s", addr);
  snprintf(http_port, sizeof http_port, "%s", addr + 10);
}

static void start(int backend) {
  start_with(backend, NULL);
}

static void stop(void) {
  appmsg_service_free(svc);
  appmsg_loop_free(loop);
  tu_str_free(&logged);
  svc = NULL;
  loop = NULL;
}

/* Runs the loop until cond() holds; fails the test after TU_EVENT_MS. */
static void run_until(int (*cond)(void), const char *what) {
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (!cond()) {
    ck_assert_msg(tu_now_ms() < end, "%s did not happen within %d ms", what, TU_EVENT_MS);
    appmsg_loop_run_once(loop, 10);
  }
}

/* ---- HTTP peers ---------------------------------------------------------------------------- */

struct hpeer {
  appmsg_socket_t fd;
  struct tu_str in; /* bytes received, not yet cut into responses */
  int closed;       /* end of stream or a reset seen */
};

struct resp {
  int status;
  char head[4096]; /* the header lines, NUL-terminated */
  char *body;      /* NUL-terminated (malloc'd) */
  size_t len;      /* Content-Length */
};

static void hconnect(struct hpeer *p) {
  memset(p, 0, sizeof *p);
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", http_port, 5000, &p->fd, err, sizeof err),
                   0);
  ck_assert_int_eq(appmsg_set_nonblock(p->fd, 1), 0);
}

static void hclose(struct hpeer *p) {
  if (p->fd != APPMSG_INVALID_SOCKET)
    tu_close(p->fd);
  p->fd = APPMSG_INVALID_SOCKET;
  tu_str_free(&p->in);
}

static void hsend(struct hpeer *p, const char *text) {
  size_t n = strlen(text), off = 0;
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (off < n) {
    ssize_t r = appmsg_send(p->fd, text + off, n - off);
    if (r > 0)
      off += (size_t)r;
    else
      ck_assert_msg(r == -EAGAIN && tu_now_ms() < end, "send: %s", appmsg_strerror((int)r));
    if (off < n)
      appmsg_loop_run_once(loop, 5);
  }
}

/* Reads what has arrived (without waiting). */
static void hread(struct hpeer *p) {
  char buf[65536];
  ssize_t r;
  while (!p->closed && (r = appmsg_recv(p->fd, buf, sizeof buf)) != -EAGAIN) {
    if (r <= 0) {
      p->closed = 1; /* end of stream, or a reset */
      break;
    }
    tu_str_add(&p->in, buf, (size_t)r);
  }
}

/* Cuts one complete response off p->in (head_only: a response to HEAD, without a body). */
static int cut_response(struct hpeer *p, int head_only, struct resp *r) {
  const char *end = p->in.len ? tu_memmem(p->in.p, p->in.len, "\r\n\r\n", 4) : NULL;
  if (end == NULL)
    return 0;
  size_t hl = (size_t)(end - p->in.p) + 4;
  ck_assert_uint_lt(hl, sizeof r->head);
  memcpy(r->head, p->in.p, hl);
  r->head[hl] = '\0';
  ck_assert_msg(sscanf(r->head, "HTTP/1.1 %d ", &r->status) == 1, "status line: %s", r->head);
  const char *cl = strstr(r->head, "\r\nContent-Length: ");
  ck_assert_ptr_nonnull(cl);
  r->len = strtoul(cl + 18, NULL, 10);
  size_t blen = head_only ? 0 : r->len;
  if (p->in.len < hl + blen)
    return 0;
  r->body = tu_strndup(p->in.p + hl, blen);
  memmove(p->in.p, p->in.p + hl + blen, p->in.len - hl - blen);
  p->in.len -= hl + blen;
  return 1;
}

/* Waits for the next response. */
static void response(struct hpeer *p, int head_only, struct resp *r) {
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  for (;;) {
    hread(p);
    if (cut_response(p, head_only, r))
      return;
    ck_assert_msg(!p->closed, "the connection closed before a response came");
    ck_assert_msg(tu_now_ms() < end, "no response within %d ms", TU_EVENT_MS);
    appmsg_loop_run_once(loop, 10);
  }
}

/* Waits for the server to close the connection. */
static void wait_closed(struct hpeer *p) {
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  for (;;) {
    hread(p);
    if (p->closed)
      return;
    ck_assert_msg(tu_now_ms() < end, "the server did not close within %d ms", TU_EVENT_MS);
    appmsg_loop_run_once(loop, 10);
  }
}

static const char *header_of(const struct resp *r, const char *name, char *out, size_t cap) {
  char key[128];
  snprintf(key, sizeof key, "\r\n%s: ", name);
  const char *h = strstr(r->head, key);
  if (h == NULL)
    return NULL;
  h += strlen(key);
  size_t n = strcspn(h, "\r");
  snprintf(out, cap, "%.*s", (int)n, h);
  return out;
}

static void expect_header(const struct resp *r, const char *name, const char *value) {
  char v[1024];
  ck_assert_msg(header_of(r, name, v, sizeof v) != NULL, "no %s in\n%s", name, r->head);
  ck_assert_str_eq(v, value);
}

static void resp_free(struct resp *r) {
  free(r->body);
  r->body = NULL;
}

/* One request on a new connection; the response in r. */
static void get_once(const char *request, int head_only, struct resp *r) {
  struct hpeer p;
  hconnect(&p);
  hsend(&p, request);
  response(&p, head_only, r);
  hclose(&p);
}

/* ---- the appmsg port answers all the while ----------------------------------------------- */

static void ping_answers(void) {
  appmsg_socket_t fd;
  char err[APPMSG_NET_ERRLEN];
  const char *addr = appmsg_service_address(svc);
  ck_assert_int_eq(
      appmsg_connect_timeout("127.0.0.1", strrchr(addr, ':') + 1, 5000, &fd, err, sizeof err), 0);
  ck_assert_int_eq(appmsg_set_nonblock(fd, 1), 0);
  static const char body[] = "{\"action\": \"ping\"}";
  char frame[512];
  int hl = snprintf(frame + 2, sizeof frame - 2,
                    "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
                    "\"content-encoding\": \"utf-8\", \"content-length\": %zu}",
                    sizeof body - 1);
  frame[0] = (char)(hl >> 8);
  frame[1] = (char)(hl & 0xff);
  memcpy(frame + 2 + hl, body, sizeof body - 1);
  size_t n = 2 + (size_t)hl + sizeof body - 1;
  ck_assert_int_eq(appmsg_send(fd, frame, n), (ssize_t)n);
  struct tu_str in = {0};
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (!(in.len && tu_memmem(in.p, in.len, "pong", 4))) {
    char buf[4096];
    ssize_t r = appmsg_recv(fd, buf, sizeof buf);
    if (r > 0)
      tu_str_add(&in, buf, (size_t)r);
    ck_assert_msg(r > 0 || r == -EAGAIN, "the appmsg port closed: %s", appmsg_strerror((int)r));
    ck_assert_msg(tu_now_ms() < end, "no pong from the appmsg port within %d ms", TU_EVENT_MS);
    appmsg_loop_run_once(loop, 5);
  }
  tu_str_free(&in);
  tu_close(fd);
}

/* ---- tests ---------------------------------------------------------------------------------- */

START_TEST(metrics_status_and_the_page_are_served_with_their_headers) {
  start(_i);
  struct resp r;
  get_once("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  expect_header(&r, "Cache-Control", "no-store");
  expect_header(&r, "X-Content-Type-Options", "nosniff");
  ck_assert_ptr_nonnull(strstr(r.body, "# TYPE appmsg_build_info gauge"));
  ck_assert_uint_eq(strlen(r.body), r.len);
  resp_free(&r);

  get_once("GET /status HTTP/1.1\r\nHost: x\r\n\r\n", 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Content-Type", "application/json");
  cJSON *j = cJSON_Parse(r.body);
  ck_assert_ptr_nonnull(j);
  ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "version")));
  ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "requests")));
  cJSON_Delete(j);
  resp_free(&r);

  char v[1024];
  get_once("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Content-Type", "text/html; charset=utf-8");
  ck_assert_ptr_nonnull(header_of(&r, "Content-Security-Policy", v, sizeof v));
  ck_assert_ptr_nonnull(strstr(v, "default-src 'none'"));
  ck_assert_ptr_null(strstr(v, "unsafe-inline"));
  ck_assert_ptr_nonnull(strstr(r.body, "<canvas"));
  ck_assert_ptr_nonnull(strstr(r.body, "app.js"));
  ck_assert_ptr_null(strstr(r.body, "http://")); /* nothing from elsewhere */
  ck_assert_ptr_null(strstr(r.body, "https://"));
  resp_free(&r);

  get_once("GET /app.js HTTP/1.1\r\n\r\n", 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Content-Type", "text/javascript; charset=utf-8");
  ck_assert_ptr_nonnull(strstr(r.body, "fetch("));
  resp_free(&r);
  get_once("GET /app.css?v=1 HTTP/1.1\r\n\r\n", 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Content-Type", "text/css; charset=utf-8");
  resp_free(&r);
  ping_answers();
  stop();
}
END_TEST

START_TEST(head_sends_the_headers_of_get_without_the_body) {
  start(_i);
  struct hpeer p;
  hconnect(&p);
  hsend(&p, "HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  struct resp h, g;
  response(&p, 1, &h);
  response(&p, 0, &g);
  ck_assert_int_eq(h.status, 200);
  ck_assert_int_eq(g.status, 200);
  ck_assert_uint_eq(h.len, g.len);
  ck_assert_uint_gt(g.len, 100);
  ck_assert_str_eq(h.body, "");
  ck_assert_ptr_nonnull(strstr(g.body, "<html"));
  resp_free(&h);
  resp_free(&g);
  hclose(&p);
  stop();
}
END_TEST

START_TEST(unknown_paths_are_404_and_other_methods_405) {
  start(_i);
  struct hpeer p;
  hconnect(&p);
  struct resp r;
  hsend(&p, "GET /nope HTTP/1.1\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 404);
  resp_free(&r);
  /* A POST without a body: 405, and the connection goes on. */
  hsend(&p, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 405);
  expect_header(&r, "Allow", "GET, HEAD");
  resp_free(&r);
  hsend(&p, "OPTIONS * HTTP/1.1\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 405);
  resp_free(&r);
  hsend(&p, "GET /metrics HTTP/1.1\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  /* With a body it is not read: 405 and close. */
  hsend(&p, "PUT /status HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 405);
  expect_header(&r, "Connection", "close");
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  ck_assert(log_has("PUT is not served here"));
  stop();
}
END_TEST

START_TEST(pipelined_requests_are_answered_in_order_on_one_connection) {
  start(_i);
  struct hpeer p;
  hconnect(&p);
  struct tu_str burst = {0};
  for (int k = 0; k < 30; k++) {
    static const char *const paths[] = {"/status?k=", "/metrics?k=", "/nope?k=", "/app.css?k="};
    tu_str_addf(&burst, "%s %s%d HTTP/1.1\r\nHost: x\r\n\r\n", k % 5 == 4 ? "HEAD" : "GET",
                paths[k % 4], k);
  }
  tu_str_add(&burst, "", 1);
  hsend(&p, burst.p);
  tu_str_free(&burst);
  static const char *const types[] = {"application/json",
                                      "text/plain; version=0.0.4; charset=utf-8",
                                      "text/plain; charset=utf-8", "text/css; charset=utf-8"};
  for (int k = 0; k < 30; k++) {
    struct resp r;
    response(&p, k % 5 == 4, &r);
    ck_assert_int_eq(r.status, k % 4 == 2 ? 404 : 200);
    expect_header(&r, "Content-Type", types[k % 4]);
    resp_free(&r);
  }
  /* Still open: keep-alive. */
  hread(&p);
  ck_assert(!p.closed);
  hclose(&p);
  ping_answers();
  stop();
}
END_TEST

START_TEST(http_1_0_and_connection_close_end_the_connection_after_the_response) {
  start(_i);
  struct hpeer p;
  struct resp r;
  hconnect(&p);
  hsend(&p, "GET /status HTTP/1.0\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Connection", "close");
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  /* HTTP/1.0 asking for keep-alive is closed all the same. */
  hconnect(&p);
  hsend(&p, "GET /status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  response(&p, 0, &r);
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  /* HTTP/1.1 with Connection: close; what follows it is not answered. */
  hconnect(&p);
  hsend(&p, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\nGET /status HTTP/1.1\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 200);
  expect_header(&r, "Connection", "close");
  resp_free(&r);
  wait_closed(&p);
  ck_assert_uint_eq(p.in.len, 0);
  hclose(&p);
  stop();
}
END_TEST

/* A request whose head is n bytes long (a padding header makes up the length). */
static char *head_of_length(size_t n) {
  static const char start_line[] = "GET /status HTTP/1.1\r\nX-Pad: ";
  size_t fixed = strlen(start_line) + 4; /* "\r\n\r\n" */
  ck_assert_uint_gt(n, fixed);
  char *req = malloc(n + 1);
  ck_assert_ptr_nonnull(req);
  memcpy(req, start_line, strlen(start_line));
  memset(req + strlen(start_line), 'a', n - fixed);
  memcpy(req + n - 4, "\r\n\r\n", 5);
  return req;
}

START_TEST(a_head_over_8_kib_is_431_and_one_at_the_limit_is_served) {
  start(_i);
  struct resp r;
  char *ok = head_of_length(8 * 1024 - 2);
  get_once(ok, 0, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  free(ok);

  struct hpeer p;
  hconnect(&p);
  char *big = head_of_length(9 * 1024);
  hsend(&p, big);
  free(big);
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 431);
  expect_header(&r, "Connection", "close");
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  ck_assert(log_has(" 431 Request Header Fields Too Large"));
  ck_assert(log_has("HTTP 127.0.0.1:")); /* with the peer */

  /* Endless headers, sent in pieces: cut off at the limit all the same. */
  hconnect(&p);
  hsend(&p, "GET / HTTP/1.1\r\n");
  for (int k = 0; k < 400 && !p.closed; k++) {
    hsend(&p, "X-Some-Header: some value\r\n");
    appmsg_loop_run_once(loop, 0);
    hread(&p);
  }
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 431);
  resp_free(&r);
  hclose(&p);
  ping_answers();
  stop();
}
END_TEST

START_TEST(a_request_body_is_413_and_closes) {
  start(_i);
  struct hpeer p;
  struct resp r;
  hconnect(&p);
  hsend(&p, "GET /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 413);
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  hconnect(&p);
  hsend(&p, "GET /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 413);
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  /* A length of 2^40 costs nothing. */
  hconnect(&p);
  hsend(&p, "HEAD / HTTP/1.1\r\nContent-Length: 1099511627776\r\n\r\n");
  response(&p, 0, &r);
  ck_assert_int_eq(r.status, 413);
  resp_free(&r);
  wait_closed(&p);
  hclose(&p);
  ck_assert(log_has("413 Content Too Large"));
  stop();
}
END_TEST

START_TEST(garbage_is_400_and_closes) {
  start(_i);
  static const char *const garbage[] = {
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS client hello */
      "hello there\r\n\r\n",
      "GET /\r\n\r\n",                        /* HTTP/0.9: 505 */
      "GET / HTTP/1.1\r\nBad Header\r\n\r\n", /* no colon */
      "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "GET /a\x01 HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
  };
  for (size_t k = 0; k < sizeof garbage / sizeof *garbage; k++) {
    struct hpeer p;
    struct resp r;
    hconnect(&p);
    hsend(&p, garbage[k]);
    response(&p, 0, &r);
    ck_assert_msg(r.status == (k == 2 ? 505 : 400), "case %zu: %d", k, r.status);
    resp_free(&r);
    wait_closed(&p);
    hclose(&p);
  }
  ck_assert(log_has("400 Bad Request"));
  ping_answers();
  stop();
}
END_TEST

static int is_closed_peer(struct hpeer *p) {
  hread(p);
  return p->closed;
}

START_TEST(a_slow_head_is_408_and_an_idle_keep_alive_connection_is_closed) {
  struct appmsg__http_limits lim;
  appmsg__http_limits_default(&lim);
  lim.head_timeout_ms = 300;
  lim.idle_timeout_ms = 600;
  start_with(_i, &lim);
  /* Slowloris: a head that never ends, a byte at a time. */
  struct hpeer slow, idle, silent;
  hconnect(&slow);
  hconnect(&silent);
  hconnect(&idle);
  struct tu_watch w;
  tu_watch_start(&w);
  hsend(&idle, "GET /status HTTP/1.1\r\n\r\n");
  struct resp r;
  response(&idle, 0, &r);
  resp_free(&r);
  static const char drip[] = "GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  for (size_t k = 0; k < sizeof drip - 1 && !is_closed_peer(&slow); k++) {
    char one[2] = {drip[k], 0};
    hsend(&slow, one);
    uint64_t until = tu_now_ms() + 20;
    while (tu_now_ms() < until)
      appmsg_loop_run_once(loop, 5);
  }
  response(&slow, 0, &r);
  ck_assert_int_eq(r.status, 408);
  resp_free(&r);
  wait_closed(&slow);
  /* Connected and silent: 408 as well (nothing was answered). */
  response(&silent, 0, &r);
  ck_assert_int_eq(r.status, 408);
  resp_free(&r);
  wait_closed(&silent);
  /* Idle after a response: closed without one. */
  wait_closed(&idle);
  ck_assert_uint_eq(idle.in.len, 0);
  ck_assert_uint_ge(tu_watch_ms(&w), 500);
  hclose(&slow);
  hclose(&silent);
  hclose(&idle);
  ck_assert(log_has("no complete request head within 300 ms"));
  /* After one answer a slow second head is closed without a 408. */
  struct hpeer two;
  hconnect(&two);
  hsend(&two, "GET /status HTTP/1.1\r\n\r\nGET /sta");
  response(&two, 0, &r);
  resp_free(&r);
  wait_closed(&two);
  ck_assert_uint_eq(two.in.len, 0);
  hclose(&two);
  ck_assert(log_has("request head not complete within 300 ms"));
  ping_answers();
  stop();
}
END_TEST

START_TEST(connections_past_the_limit_are_closed_at_once) {
  struct appmsg__http_limits lim;
  appmsg__http_limits_default(&lim);
  lim.max_conns = 4;
  start_with(_i, &lim);
  struct hpeer p[4], extra[3];
  for (int k = 0; k < 4; k++)
    hconnect(&p[k]);
  /* The four are served (so they are known to be accepted before the others come). */
  for (int k = 0; k < 4; k++) {
    struct resp r;
    hsend(&p[k], "GET /status HTTP/1.1\r\n\r\n");
    response(&p[k], 0, &r);
    resp_free(&r);
  }
  for (int k = 0; k < 3; k++) {
    hconnect(&extra[k]);
    hsend(&extra[k], "GET /status HTTP/1.1\r\n\r\n");
  }
  for (int k = 0; k < 3; k++) {
    wait_closed(&extra[k]);
    ck_assert_uint_eq(extra[k].in.len, 0);
    hclose(&extra[k]);
  }
  ck_assert(log_has("closed at once: 4 are open, the limit"));
  /* Logged once for the burst, not once per connection. */
  const char *first = tu_memmem(logged.p, logged.len, "closed at once", 14);
  ck_assert_ptr_null(
      tu_memmem(first + 1, logged.len - (size_t)(first + 1 - logged.p), "closed at once", 14));
  /* The four still work; once one goes, a newcomer is served. */
  struct resp r;
  hsend(&p[0], "GET /metrics HTTP/1.1\r\n\r\n");
  response(&p[0], 0, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  hclose(&p[1]);
  struct hpeer late;
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  for (;;) { /* (the server sees p[1] go when it next reads it) */
    hconnect(&late);
    hsend(&late, "GET /status HTTP/1.1\r\n\r\n");
    uint64_t until = tu_now_ms() + 200;
    while (tu_now_ms() < until && !late.closed && late.in.len == 0) {
      appmsg_loop_run_once(loop, 5);
      hread(&late);
    }
    if (late.in.len)
      break;
    ck_assert_msg(tu_now_ms() < end, "no room made by a closed connection");
    hclose(&late);
  }
  response(&late, 0, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  hclose(&late);
  for (int k = 0; k < 4; k++)
    hclose(&p[k]);
  ping_answers();
  stop();
}
END_TEST

static int cut_off_logged(void) {
  return log_has("connection cut off");
}

START_TEST(a_peer_that_never_reads_is_cut_off_and_others_are_served) {
  struct appmsg__http_limits lim;
  appmsg__http_limits_default(&lim);
  lim.output_timeout_ms = 300;
  lim.read_pause = 64 * 1024;
  start_with(_i, &lim);
  struct hpeer p;
  hconnect(&p);
  (void)appmsg__sock_setint(p.fd, SOL_SOCKET, SO_RCVBUF, 4096);
  /* Thousands of pipelined requests for the page, and not one byte read: megabytes owed. */
  struct tu_str burst = {0};
  for (int k = 0; k < 4000; k++)
    tu_str_addf(&burst, "GET / HTTP/1.1\r\n\r\n");
  size_t off = 0;
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (off < burst.len && !cut_off_logged()) {
    ssize_t r = appmsg_send(p.fd, burst.p + off, burst.len - off);
    if (r > 0)
      off += (size_t)r;
    else if (r != -EAGAIN)
      break; /* (reset: cut off already) */
    ck_assert_msg(tu_now_ms() < end, "the requests were not taken within %d ms", TU_EVENT_MS);
    appmsg_loop_run_once(loop, 5);
  }
  tu_str_free(&burst);
  /* Meanwhile another peer is served, and the appmsg port answers. */
  struct resp r;
  get_once("GET /status HTTP/1.1\r\n\r\n", 0, &r);
  ck_assert_int_eq(r.status, 200);
  resp_free(&r);
  ping_answers();
  run_until(cut_off_logged, "cutting off the peer that does not read");
  ck_assert(log_has("did not read its responses for 300 ms"));
  hclose(&p);
  stop();
}
END_TEST

/* ---- lifetimes ------------------------------------------------------------------------------ */

static struct appmsg__http *self_freeing;
static int handler_calls;

static void free_in_handler(void *ud, const char *method, const char *path,
                            struct appmsg__http_response *res) {
  (void)ud;
  (void)method;
  (void)path;
  handler_calls++;
  appmsg__http_free(self_freeing); /* under its own callback */
  appmsg__text_addf(&res->text, "still answered into a closing connection\n");
}

START_TEST(the_endpoint_freed_from_its_own_handler_goes_without_a_trace) {
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[_i]), 0);
  handler_calls = 0;
  char err[APPMSG_NET_ERRLEN];
  struct appmsg__http_log log = {capture_log, NULL, APPMSG_LOG_DEBUG};
  ck_assert_int_eq(appmsg__http_new(&self_freeing, loop, "127.0.0.1", "0", NULL, free_in_handler,
                                    NULL, &log, err, sizeof err),
                   0);
  const char *addr = appmsg__http_address(self_freeing);
  snprintf(http_port, sizeof http_port, "%s", strrchr(addr, ':') + 1);
  struct hpeer p, q;
  hconnect(&p);
  hconnect(&q); /* a second connection, idle, ended with the endpoint */
  hsend(&p, "GET /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
  wait_closed(&p);
  wait_closed(&q);
  ck_assert_int_eq(handler_calls, 1); /* the second request was never read */
  hclose(&p);
  hclose(&q);
  while (appmsg_loop_alive(loop))
    appmsg_loop_run_once(loop, 10);
  appmsg_loop_free(loop);
  loop = NULL;
  tu_str_free(&logged);
}
END_TEST

static void free_service_on_timer(struct appmsg_loop *l, struct appmsg_timer *t, void *ud) {
  (void)l;
  (void)t;
  (void)ud;
  appmsg_service_free(svc); /* from a callback of the loop: finished at the end of the turn */
  svc = NULL;
}

START_TEST(the_service_freed_with_http_connections_open_ends_them) {
  struct appmsg__http_limits lim;
  appmsg__http_limits_default(&lim);
  lim.read_pause = 16 * 1024;
  start_with(_i, &lim);
  struct hpeer mid, idle, full;
  hconnect(&mid);
  hconnect(&idle);
  hconnect(&full);
  hsend(&mid, "GET /status HTTP/1.1\r\nHost: ");
  struct resp r;
  hsend(&idle, "GET /status HTTP/1.1\r\n\r\n");
  response(&idle, 0, &r);
  resp_free(&r);
  struct tu_str burst = {0};
  for (int k = 0; k < 200; k++)
    tu_str_addf(&burst, "GET / HTTP/1.1\r\n\r\n");
  tu_str_add(&burst, "", 1);
  hsend(&full, burst.p);
  tu_str_free(&burst);
  for (int k = 0; k < 20; k++)
    appmsg_loop_run_once(loop, 5);
  ck_assert_uint_eq(appmsg__http_conn_count(svc->http), 3);
  if (_i == 0) {
    /* From outside the loop. */
    appmsg_service_free(svc);
    svc = NULL;
  } else {
    /* From one of the loop's callbacks. */
    struct appmsg_timer t;
    appmsg_timer_init(&t, free_service_on_timer, NULL);
    appmsg_timer_start(loop, &t, 0, 0);
    while (svc)
      appmsg_loop_run_once(loop, 10);
  }
  wait_closed(&mid);
  wait_closed(&idle);
  wait_closed(&full);
  hclose(&mid);
  hclose(&idle);
  hclose(&full);
  appmsg_loop_free(loop);
  loop = NULL;
  tu_str_free(&logged);
}
END_TEST

START_TEST(a_second_endpoint_is_refused_and_a_bad_address_explained) {
  start(_i);
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_service_metrics_listen(svc, "127.0.0.1", "0", err, sizeof err),
                   -EALREADY);
  ck_assert_ptr_nonnull(strstr(err, "already"));
  struct appmsg_service *other;
  ck_assert_int_eq(appmsg_service_new(&other, loop, &opts), 0);
  ck_assert_int_ne(appmsg_service_metrics_listen(other, "127.0.0.1", http_port, err, sizeof err),
                   0);
  ck_assert_uint_gt(strlen(err), 0);
  ck_assert_str_eq(appmsg_service_metrics_address(other), "?");
  appmsg_service_free(other);
  ck_assert(log_has("metrics and status page on http://127.0.0.1:"));
  stop();
}
END_TEST

int main(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("http");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, metrics_status_and_the_page_are_served_with_their_headers, 0, 2);
  tcase_add_loop_test(tc, head_sends_the_headers_of_get_without_the_body, 0, 2);
  tcase_add_loop_test(tc, unknown_paths_are_404_and_other_methods_405, 0, 2);
  tcase_add_loop_test(tc, pipelined_requests_are_answered_in_order_on_one_connection, 0, 2);
  tcase_add_loop_test(tc, http_1_0_and_connection_close_end_the_connection_after_the_response, 0,
                      2);
  tcase_add_loop_test(tc, a_head_over_8_kib_is_431_and_one_at_the_limit_is_served, 0, 2);
  tcase_add_loop_test(tc, a_request_body_is_413_and_closes, 0, 2);
  tcase_add_loop_test(tc, garbage_is_400_and_closes, 0, 2);
  tcase_add_loop_test(tc, a_slow_head_is_408_and_an_idle_keep_alive_connection_is_closed, 0, 2);
  tcase_add_loop_test(tc, connections_past_the_limit_are_closed_at_once, 0, 2);
  tcase_add_loop_test(tc, a_peer_that_never_reads_is_cut_off_and_others_are_served, 0, 2);
  tcase_add_loop_test(tc, the_endpoint_freed_from_its_own_handler_goes_without_a_trace, 0, 2);
  tcase_add_loop_test(tc, the_service_freed_with_http_connections_open_ends_them, 0, 2);
  tcase_add_loop_test(tc, a_second_endpoint_is_refused_and_a_bad_address_explained, 0, 2);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
