/*
 * The lifecycle rule, cell by cell: from every callback the library runs,
 * and from outside them all (main, between loop iterations), every public
 * call that makes sense there - on the same object and on another - and
 * then: each callback ran exactly once (counted), nothing was used after it
 * was freed (ASan), nothing leaked (LSan, at the child's exit: Check runs
 * every cell in a process of its own), the loop kept running and the other
 * connections were not disturbed (a witness answers a round trip).  On
 * Windows, where Check cannot fork, the cells run one after the other in
 * one process: each closes every socket it made, and every wait is bounded.
 *
 * The matrix is data: a table of cells (family, site, action, target) made
 * at start-up and run with tcase_add_loop_test(), each cell on both loop
 * backends.  The families:
 *
 *   conn     a framed (or raw) connection's own callbacks - on_connect,
 *            on_message (between two messages of one read), on_data,
 *            on_error, on_eof, on_close, the close hook - a timer, main,
 *            and main while the connect is still in progress, times send,
 *            send_error, close, abort, close_when_idle, hold, release and
 *            set_reading, on the connection itself and on another one.
 *            The peers are plain sockets the test reads and writes.
 *   server   a server's on_accept (from the loop, and from a drain called
 *            from main), on_refuse, its connections' on_message and
 *            on_close, a timer, and main, times appmsg_server_free/drain
 *            and calls on its connections.
 *   service  a handler (at once), a request answered later (from a timer,
 *            from main, from another request's handler), after its
 *            connection was reset, after its deadline (and after the
 *            deadline and then the close), times every reply call, a
 *            second reply, a refused one then a good one, a new client
 *            call, appmsg_client_free and appmsg_service_free.
 *   client   a call's callback with each outcome - a reply, an error
 *            reply, a timeout, the connection lost, never sent (refused,
 *            queued too long), the client freed from main, the connection
 *            lost in the deferred work another free from main runs - times
 *            a new call, appmsg_client_free with other calls pending, both,
 *            and the free of another client.  The server is a plain socket
 *            the test answers for.
 *
 * And three sequences: a drain asked for while reading is paused,
 * appmsg_loop_free() finishing what main asked for, and
 * appmsg_service_free() from a handler of a service on its own loop.
 * `test_lifecycle --list` prints the cells with their loop indexes;
 * $LIFECYCLE_LOG=1 prints the service's log lines.
 *
 * No fixed sleeps: every wait runs the loop until what it waits for
 * happened, bounded by TU_EVENT_MS.  "Nothing happened" is checked after
 * a barrier - a round trip through a witness connection on the same loop,
 * which takes more than the one iteration a close needs to show.  Time
 * jumps (call timeouts, request deadlines) move the library's clock
 * (appmsg__set_clock), never wait for it.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef _WIN32
#include <poll.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include "appmsg/appmsg.h"
#include "platform.h"
#include "testutil.h"
#include "util.h"

static const enum appmsg_loop_backend backends[] = {TU_LOOP_EPOLL, APPMSG_LOOP_POLL};

/* ---- common: the cell, the clock, the loop ---------------------------------------------- */

static char cell[160]; /* the cell being run, for messages */
static struct appmsg_loop *loop;
static int in_call; /* 1 while the test is inside an appmsg call (no callback may run) */

#define CHECK(cond) ck_assert_msg((cond), "%s: %s", cell, #cond)
#define CHECK_EQ(a, b)                                                                             \
  do {                                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                                            \
    ck_assert_msg(a_ == b_, "%s: %s == %s (%lld != %lld)", cell, #a, #b, a_, b_);                  \
  } while (0)

/* The library's clock: the real one, plus a skew the test adds to when it
 * needs time to pass (timeouts, deadlines). */
static uint64_t skew_ns;
static uint64_t test_clock(void) {
  return appmsg__monotonic_ns() + skew_ns;
}
static void skip_ms(uint64_t ms) {
  skew_ns += ms * 1000000u;
}

/* Calls an appmsg function with in_call set: a callback that runs inside it fails the cell. */
#define CALL(expr)                                                                                 \
  do {                                                                                             \
    in_call++;                                                                                     \
    expr;                                                                                          \
    in_call--;                                                                                     \
  } while (0)

/* A callback checks that it does not run inside a call that only records. */
#define IN_CALLBACK() ck_assert_msg(in_call == 0, "%s: a callback ran inside a call", cell)

/* ---- plain-socket peers ----------------------------------------------------------------- */

struct peer {
  appmsg_socket_t fd;
  struct tu_str rx; /* every byte received */
  int eof;          /* read 0, or a reset */
  int reset;        /* the read failed (ECONNRESET) */
};

#define MAX_PEERS 16
static struct peer *peers[MAX_PEERS]; /* pumped while the loop runs */
static int npeers;

static void peer_add(struct peer *p, appmsg_socket_t fd) {
  memset(p, 0, sizeof *p);
  p->fd = fd;
  ck_assert_int_eq(appmsg_set_nonblock(fd, 1), 0); /* (peer_pump reads what is there) */
  ck_assert_int_lt(npeers, MAX_PEERS);
  peers[npeers++] = p;
}

static void peer_pump(struct peer *p) {
  if (p->fd == APPMSG_INVALID_SOCKET || p->eof)
    return;
  char buf[8192];
  for (;;) {
    ssize_t n = appmsg_recv(p->fd, buf, sizeof buf); /* (non-blocking: peer_add) */
    if (n > 0) {
      tu_str_add(&p->rx, buf, (size_t)n);
      continue;
    }
    if (n == 0) {
      p->eof = 1;
    } else if (n != -EAGAIN) {
      p->eof = 1;
      p->reset = 1;
    }
    return;
  }
}

static void peer_close(struct peer *p) {
  if (p->fd != APPMSG_INVALID_SOCKET)
    tu_close(p->fd);
  p->fd = APPMSG_INVALID_SOCKET;
}

/* Closes with a reset (SO_LINGER 0): the other side's next send fails at once. */
static void peer_reset(struct peer *p) {
  struct linger lg = {1, 0};
  setsockopt(p->fd, SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof lg);
  peer_close(p);
}

static void peers_free(void) {
  for (int i = 0; i < npeers; i++) {
    peer_close(peers[i]);
    tu_str_free(&peers[i]->rx);
  }
  npeers = 0;
}

static int peer_has(const struct peer *p, const char *s) {
  return p->rx.p && tu_memmem(p->rx.p, p->rx.len, s, strlen(s)) != NULL;
}

static void peer_write(struct peer *p, const void *b, size_t n) {
  ck_assert_int_eq(appmsg_send(p->fd, b, n), (ssize_t)n);
}

/* A frame with binary content (or text/json when json is set). */
static size_t make_frame(char *out, size_t cap, const char *content, int json) {
  size_t clen = strlen(content);
  int hl = snprintf(out + 2, cap - 2,
                    "{\"byteorder\": \"little\", \"content-type\": \"%s\", \"content-encoding\": "
                    "\"%s\", \"content-length\": %zu}",
                    json ? "text/json" : "binary/test", json ? "utf-8" : "binary", clen);
  ck_assert(hl > 0 && (size_t)hl + 2 + clen <= cap);
  out[0] = (char)(hl >> 8);
  out[1] = (char)(hl & 0xff);
  memcpy(out + 2 + hl, content, clen);
  return 2 + (size_t)hl + clen;
}

static void peer_send_frame(struct peer *p, const char *content) {
  char f[4096];
  peer_write(p, f, make_frame(f, sizeof f, content, 0));
}

/* Cuts the next complete frame off the front of p->rx into *content (NUL-terminated,
 * caller frees); 0 when none is complete. */
static int peer_next_frame(struct peer *p, size_t *used, char **content) {
  if (p->rx.len < *used + 2)
    return 0;
  const unsigned char *b = (const unsigned char *)p->rx.p + *used;
  size_t hl = ((size_t)b[0] << 8) | b[1];
  if (p->rx.len < *used + 2 + hl)
    return 0;
  char *hdr = tu_strndup((const char *)b + 2, hl);
  const char *cl = strstr(hdr, "\"content-length\": ");
  ck_assert_ptr_nonnull(cl);
  size_t clen = strtoul(cl + 18, NULL, 10);
  free(hdr);
  if (p->rx.len < *used + 2 + hl + clen)
    return 0;
  *content = tu_strndup((const char *)b + 2 + hl, clen);
  *used += 2 + hl + clen;
  return 1;
}

/* A listening plain socket on a free loopback port. */
static appmsg_socket_t listen_port(char *port, size_t n) {
  appmsg_socket_t fd;
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 16, &fd, err, sizeof err), 0);
  snprintf(port, n, "%d", appmsg_sockport(fd));
  return fd;
}

/* Accepts the connection whose peer's local port is want (0: any), waiting at most
 * TU_EVENT_MS; returns the non-blocking fd. */
static appmsg_socket_t accept_from(appmsg_socket_t lfd, int want) {
  struct pollfd pfd = {lfd, POLLIN, 0};
  ck_assert_msg(appmsg__poll(&pfd, 1, TU_EVENT_MS) == 1, "%s: no connection to accept", cell);
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  appmsg_socket_t fd;
  int rc = appmsg_accept_peer(lfd, &fd, (struct sockaddr *)&a, &alen);
  ck_assert_msg(rc == 0, "%s: accept: %s", cell, appmsg_strerror(rc));
  ck_assert_msg(want == 0 || ntohs(a.sin_port) == want, "%s: accepted another connection", cell);
  return fd;
}

static int local_port(appmsg_socket_t fd) {
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  return ntohs(a.sin_port);
}

/* Whether a connect to 127.0.0.1:port is refused now. */
static int refused(const char *port) {
  appmsg_socket_t fd;
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &fd, err, sizeof err);
  if (rc == 0)
    tu_close(fd);
  return rc == -ECONNREFUSED;
}

static void pump_all(void) {
  for (int i = 0; i < npeers; i++)
    peer_pump(peers[i]);
}

static void (*tick)(void); /* the family's own work between iterations (its peer server) */

/* Runs the loop until cond holds, at most TU_EVENT_MS. */
#define RUN_UNTIL(cond)                                                                            \
  do {                                                                                             \
    uint64_t end_ = tu_now_ms() + TU_EVENT_MS;                                                     \
    for (;;) {                                                                                     \
      pump_all();                                                                                  \
      if (tick)                                                                                    \
        tick();                                                                                    \
      if (cond)                                                                                    \
        break;                                                                                     \
      ck_assert_msg(tu_now_ms() < end_, "%s: timed out waiting for %s", cell, #cond);              \
      ck_assert_int_ge(appmsg_loop_run_once(loop, 5), 0);                                          \
    }                                                                                              \
  } while (0)

static void common_setup(int backend) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  skew_ns = 0;
  in_call = 0;
  npeers = 0;
  tick = NULL;
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[backend]), 0);
}

/* The end of every cell: nothing left on the loop, and it can be freed. */
static void common_teardown(void) {
  CHECK(!appmsg_loop_alive(loop));
  appmsg_loop_free(loop);
  loop = NULL;
  peers_free();
}

/* ==== family 1: a connection's callbacks ================================================== */

enum csite {
  C_CONNECT,
  C_MESSAGE,
  C_DATA,
  C_ERROR,
  C_EOF,
  C_CLOSE,
  C_HOOK,
  C_TIMER,
  C_MAIN,
  C_CONNECTING,
  C_N
};
static const char *const csite_names[] = {
    "on_connect", "on_message", "on_data", "on_error", "on_eof",
    "on_close",   "close hook", "a timer", "main",     "main, while the connect is in progress"};

enum cact {
  A_SEND,
  A_SEND_ERROR,
  A_CLOSE,
  A_ABORT,
  A_CLOSE_WHEN_IDLE,
  A_HOLD,
  A_RELEASE,
  A_READ_OFF,
  A_READ_ON,
  A_N
};
static const char *const cact_names[] = {
    "appmsg_conn_send",    "appmsg_conn_send_error",      "appmsg_conn_close",
    "appmsg_conn_abort",   "appmsg_conn_close_when_idle", "appmsg_conn_hold",
    "appmsg_conn_release", "appmsg_conn_set_reading(0)",  "appmsg_conn_set_reading(1)"};

/* A connection of the cell: 0 the subject (whose callback acts), 1 the other, 2 the witness. */
struct tconn {
  struct appmsg_conn *c; /* NULL once on_close has run */
  struct peer peer;      /* the plain socket at the other end */
  struct tu_str got;     /* contents received (messages or raw bytes) */
  int connects, messages, datas, errors, eofs, hooks, closes;
  int reason; /* on_close's */
};

static struct tconn tcs[3];
static struct {
  int site, act, self; /* the cell: self 1 acts on the subject, 0 on the other */
  int fired;           /* the action ran */
  int rc;              /* what a send returned */
  int gone;            /* the target had ended when acted on (its on_close or hook) */
  int ending;          /* the target was closing already (on_error, on_eof) */
} cc;
static struct appmsg_timer user_timer;
static struct appmsg_conn_opts copts;

static int send_text(struct appmsg_conn *c, const char *text) {
  struct appmsg_header h;
  appmsg_header_init(&h);
  ck_assert_int_eq(appmsg_header_set(&h, "binary/test", "binary"), 0);
  int rc = appmsg_conn_send(c, &h, text, strlen(text));
  appmsg_header_cleanup(&h);
  return rc;
}

static void conn_act(void) {
  struct tconn *t = cc.self ? &tcs[0] : &tcs[1];
  struct appmsg_conn *c = t->c;
  CHECK(c != NULL);
  cc.fired = 1;
  in_call++;
  switch (cc.act) {
  case A_SEND:
    cc.rc =
        copts.raw ? appmsg_conn_send_raw(c, "from-callback", 13) : send_text(c, "from-callback");
    break;
  case A_SEND_ERROR:
    cc.rc = appmsg_conn_send_error(c, APPMSG_E_TIMEOUT, "error-from-callback", 7);
    break;
  case A_CLOSE:
    appmsg_conn_close(c);
    break;
  case A_ABORT:
    appmsg_conn_abort(c, -ECONNABORTED);
    CHECK(appmsg_conn_fd(c) == APPMSG_INVALID_SOCKET); /* the socket goes at once */
    break;
  case A_CLOSE_WHEN_IDLE:
    appmsg_conn_close_when_idle(c);
    break;
  case A_HOLD:
    appmsg_conn_hold(c);
    break;
  case A_RELEASE:
    appmsg_conn_release(c);
    break;
  case A_READ_OFF:
    appmsg_conn_set_reading(c, 0);
    break;
  case A_READ_ON:
    appmsg_conn_set_reading(c, 1);
    break;
  }
  in_call--;
}

/* Acts when this is the subject's callback of the cell's site (once). */
static void maybe_act(struct tconn *t, int site) {
  if (t == &tcs[0] && cc.site == site && !cc.fired)
    conn_act();
}

/* Every connection echoes what starts with "echo:" (the round trips). */
static void echo(struct appmsg_conn *c, const void *data, size_t len) {
  char text[256];
  if (len < 5 || len >= sizeof text || memcmp(data, "echo:", 5) != 0)
    return;
  memcpy(text, data, len);
  text[len] = '\0';
  int rc;
  CALL(rc = copts.raw ? appmsg_conn_send_raw(c, text, len) : send_text(c, text));
  (void)rc;
}

static void t_on_connect(struct appmsg_conn *c, int err, void *ud) {
  IN_CALLBACK();
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(err, 0);
  CHECK_EQ(++t->connects, 1);
  CHECK_EQ(t->closes, 0);
  maybe_act(t, C_CONNECT);
}

static void t_on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                         size_t len, void *ud) {
  IN_CALLBACK();
  (void)h;
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(t->closes, 0);
  t->messages++;
  tu_str_add(&t->got, content, len);
  tu_str_add(&t->got, "|", 1);
  echo(c, content, len);
  maybe_act(t, C_MESSAGE);
}

static void t_on_data(struct appmsg_conn *c, const void *data, size_t len, void *ud) {
  IN_CALLBACK();
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(t->closes, 0);
  t->datas++;
  tu_str_add(&t->got, data, len);
  echo(c, data, len);
  maybe_act(t, C_DATA);
}

static void t_on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t offset,
                       void *ud) {
  IN_CALLBACK();
  (void)reason;
  (void)offset;
  (void)err;
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(++t->errors, 1);
  CHECK_EQ(t->closes, 0);
  maybe_act(t, C_ERROR);
}

static void t_on_eof(struct appmsg_conn *c, void *ud) {
  IN_CALLBACK();
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(++t->eofs, 1);
  CHECK_EQ(t->closes, 0);
  maybe_act(t, C_EOF);
}

static void t_hook(struct appmsg_conn *c, int reason, void *arg) {
  IN_CALLBACK();
  struct tconn *t = arg;
  CHECK(t->c == c);
  CHECK_EQ(++t->hooks, 1);
  CHECK_EQ(t->closes, 0);
  CHECK(appmsg_conn_fd(c) == APPMSG_INVALID_SOCKET); /* the socket is gone before the end is told */
  (void)reason;
  maybe_act(t, C_HOOK);
}

static void t_on_close(struct appmsg_conn *c, int reason, void *ud) {
  IN_CALLBACK();
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(++t->closes, 1);
  CHECK_EQ(t->hooks, 1); /* the hook first, with the same reason */
  t->reason = reason;
  maybe_act(t, C_CLOSE);
  t->c = NULL; /* freed when this returns */
}

static const struct appmsg_conn_callbacks tcbs = {.on_message = t_on_message,
                                                  .on_data = t_on_data,
                                                  .on_error = t_on_error,
                                                  .on_connect = t_on_connect,
                                                  .on_eof = t_on_eof,
                                                  .on_close = t_on_close};

static void on_user_timer(struct appmsg_loop *l, struct appmsg_timer *t, void *ud) {
  IN_CALLBACK();
  (void)l;
  (void)t;
  (void)ud;
  if (cc.site == C_TIMER && !cc.fired)
    conn_act();
}

static int barrier_seq;

/* A round trip through the witness: the loop runs and other connections are served. */
static void barrier(void) {
  char token[32];
  snprintf(token, sizeof token, "echo:witness-%d", ++barrier_seq);
  if (copts.raw)
    peer_write(&tcs[2].peer, token, strlen(token));
  else
    peer_send_frame(&tcs[2].peer, token);
  RUN_UNTIL(peer_has(&tcs[2].peer, token));
}

/* A round trip through connection t: it still reads and writes. */
static void round_trip(struct tconn *t, const char *what) {
  char token[64];
  snprintf(token, sizeof token, "echo:%s-%d", what, ++barrier_seq);
  if (copts.raw)
    peer_write(&t->peer, token, strlen(token));
  else
    peer_send_frame(&t->peer, token);
  RUN_UNTIL(peer_has(&t->peer, token));
}

static int got_has(const struct tconn *t, const char *s) {
  return t->got.p && tu_memmem(t->got.p, t->got.len, s, strlen(s)) != NULL;
}

static int all_closed(void) {
  return tcs[0].closes && tcs[1].closes && tcs[2].closes;
}

/* Whether connection i is open and its peer can still talk to it once the action is done. */
static int stays_open(int i) {
  int target = cc.self ? 0 : 1;
  if (i == 0 && (cc.site == C_ERROR || cc.site == C_EOF || cc.site == C_CLOSE || cc.site == C_HOOK))
    return 0;
  if (i == target &&
      (cc.act == A_CLOSE || cc.act == A_ABORT || cc.act == A_CLOSE_WHEN_IDLE || cc.act == A_HOLD))
    return 0;
  return 1;
}

/* What the action must have done to its target, seen from the target's peer. */
static void conn_check_outcome(void) {
  struct tconn *t = cc.self ? &tcs[0] : &tcs[1];
  int first_of_two = cc.self && cc.site == C_MESSAGE; /* a second message came in the same read */
  switch (cc.act) {
  case A_SEND:
  case A_SEND_ERROR: {
    const char *token = cc.act == A_SEND ? "from-callback" : "error-from-callback";
    if (cc.gone) {
      CHECK_EQ(cc.rc, APPMSG_E_CLOSED);
    } else {
      CHECK_EQ(cc.rc, 0);
      RUN_UNTIL(peer_has(&t->peer, token));
    }
    break;
  }
  case A_CLOSE:
    if (!cc.gone) {
      RUN_UNTIL(t->peer.eof);
      CHECK(!t->peer.reset);
    }
    if (first_of_two)
      CHECK_EQ(t->messages, 1); /* no message is delivered once a close is asked for */
    break;
  case A_ABORT:
    if (!cc.gone) {
      RUN_UNTIL(t->closes == 1 && t->peer.eof);
      CHECK_EQ(t->reason, -ECONNABORTED);
    }
    if (first_of_two)
      CHECK_EQ(t->messages, 1);
    break;
  case A_CLOSE_WHEN_IDLE:
    if (!cc.gone) {
      RUN_UNTIL(t->peer.eof);
      CHECK(!t->peer.reset);
    }
    if (first_of_two)
      CHECK_EQ(t->messages, 2); /* what had arrived is served first */
    break;
  case A_HOLD:
    if (cc.gone)
      break;
    /* A close waits for the hold (for a target that is ending, its own close does). */
    CALL(appmsg_conn_close(t->c));
    barrier();
    CHECK(!t->peer.eof);
    CHECK_EQ(t->closes, 0);
    CALL(appmsg_conn_release(t->c));
    RUN_UNTIL(t->peer.eof);
    CHECK(!t->peer.reset);
    break;
  case A_READ_OFF:
    if (cc.gone || cc.ending)
      break;
    barrier();
    if (first_of_two)
      CHECK_EQ(t->messages, 1); /* the second waits */
    if (copts.raw)
      peer_write(&t->peer, "after-off", 9);
    else
      peer_send_frame(&t->peer, "after-off");
    barrier();
    CHECK(!got_has(t, "after-off"));
    CALL(appmsg_conn_set_reading(t->c, 1));
    RUN_UNTIL(got_has(t, "after-off"));
    if (first_of_two)
      CHECK_EQ(t->messages, 3);
    break;
  case A_RELEASE:
  case A_READ_ON:
    break;
  }
}

/* Sends what makes the subject's callback of the site run. */
static void conn_trigger(void) {
  struct peer *p = &tcs[0].peer;
  switch (cc.site) {
  case C_MESSAGE: { /* two frames in one write: the action runs between them */
    char f[512];
    size_t n = make_frame(f, sizeof f, "first", 0);
    n += make_frame(f + n, sizeof f - n, "second", 0);
    peer_write(p, f, n);
    break;
  }
  case C_DATA:
    peer_write(p, "raw-bytes", 9);
    break;
  case C_ERROR:
    peer_write(p, "\0\0", 2); /* a header length of 0: HEADER_EMPTY */
    break;
  case C_EOF:
  case C_CLOSE:
  case C_HOOK:
    appmsg__sock_shutdown_write(p->fd); /* the end of the stream, between frames */
    break;
  case C_TIMER:
    ck_assert_int_eq(appmsg_timer_start(loop, &user_timer, 0, 0), 0);
    break;
  case C_MAIN:
    conn_act();
    break;
  case C_CONNECTING:
    break; /* done already */
  }
}

static void conn_cell(int backend, int site, int act, int self) {
  common_setup(backend);
  memset(tcs, 0, sizeof tcs);
  memset(&cc, 0, sizeof cc);
  cc.site = site;
  cc.act = act;
  cc.self = self;
  cc.gone = self && (site == C_CLOSE || site == C_HOOK);
  cc.ending = self && (site == C_ERROR || site == C_EOF);
  appmsg_conn_opts_default(&copts);
  copts.raw = site == C_DATA;
  appmsg_timer_init(&user_timer, on_user_timer, NULL);
  char port[16];
  appmsg_socket_t lfd = listen_port(port, sizeof port);
  for (int i = 0; i < 3; i++) {
    char err[APPMSG_NET_ERRLEN];
    int rc = appmsg_conn_connect(&tcs[i].c, loop, "127.0.0.1", port, &copts, &tcbs, &tcs[i], err,
                                 sizeof err);
    ck_assert_msg(rc == 0, "%s: connect: %s", cell, err);
    appmsg_conn_set_close_hook(tcs[i].c, t_hook, &tcs[i]);
    peer_add(&tcs[i].peer, accept_from(lfd, local_port(appmsg_conn_fd(tcs[i].c))));
  }
  if (site == C_CONNECTING)
    conn_act(); /* the loop has not run: every connect is still in progress */
  /* Connected (an action on the other connection from the subject's on_connect may end it
   * before it is). */
  RUN_UNTIL((tcs[0].connects || tcs[0].closes) && (tcs[1].connects || tcs[1].closes) &&
            tcs[2].connects);
  conn_trigger();
  RUN_UNTIL(cc.fired);
  barrier();
  conn_check_outcome();
  for (int i = 0; i < 2; i++)
    if (stays_open(i)) {
      CHECK(tcs[i].c != NULL);
      round_trip(&tcs[i], i ? "other" : "subject");
    }
  barrier();
  /* The end: every peer goes, every connection ends, once. */
  for (int i = 0; i < 3; i++)
    peer_close(&tcs[i].peer);
  RUN_UNTIL(all_closed());
  for (int i = 0; i < 3; i++) {
    CHECK_EQ(tcs[i].closes, 1);
    CHECK_EQ(tcs[i].hooks, 1);
    CHECK(tcs[i].connects <= 1 && tcs[i].eofs <= 1 && tcs[i].errors <= 1);
    tu_str_free(&tcs[i].got);
  }
  CHECK(!appmsg_timer_active(&user_timer));
  tu_close(lfd);
  common_teardown();
}

/* ==== family 2: a server ================================================================== */

enum ssite { SV_ACCEPT, SV_MESSAGE, SV_CLOSE, SV_TIMER, SV_MAIN, SV_DRAIN_ACCEPT, SV_REFUSE, SV_N };
static const char *const ssite_names[] = {"on_accept",
                                          "a connection's on_message",
                                          "a connection's on_close",
                                          "a timer",
                                          "main",
                                          "on_accept run by appmsg_server_drain() from main",
                                          "on_refuse (over max_conns)"};

enum sact {
  B_SERVER_FREE,
  B_SERVER_DRAIN,
  B_SEND_SELF,
  B_CLOSE_SELF,
  B_ABORT_SELF,
  B_ABORT_OTHER,
  B_N
};
static const char *const sact_names[] = {"appmsg_server_free",      "appmsg_server_drain",
                                         "appmsg_conn_send on it",  "appmsg_conn_close on it",
                                         "appmsg_conn_abort on it", "appmsg_conn_abort on another"};

/* A connection a server accepted; slot i is peer i's. */
struct sconn {
  struct appmsg_conn *c; /* NULL once closed */
  struct peer peer;
  int server; /* 1 or 2 */
  int accepts, messages, closes, reason;
};

#define MAX_SLOTS 6
static struct sconn slots[MAX_SLOTS];
static int nslots;
static struct appmsg_server *srv1, *srv2; /* the server under test, the witness's */
static char port1[16], port2[16];
static struct {
  int site, act;
  int self, other; /* slots */
  int fired, rc;
} sc;
static struct appmsg_server_opts sopts;

static void server_act(int self) {
  sc.fired = 1;
  sc.self = self;
  struct appmsg_conn *c = slots[self].c, *o = slots[sc.other].c;
  /* From main, a free completes at once (on_close runs inside it) and a drain accepts what is
   * queued (on_accept runs inside it); the other calls only record. */
  switch (sc.act) {
  case B_SERVER_FREE:
    appmsg_server_free(srv1);
    srv1 = NULL;
    return;
  case B_SERVER_DRAIN:
    appmsg_server_drain(srv1);
    return;
  }
  in_call++;
  switch (sc.act) {
  case B_SEND_SELF:
    sc.rc = send_text(c, "from-callback");
    break;
  case B_CLOSE_SELF:
    appmsg_conn_close(c);
    break;
  case B_ABORT_SELF:
    appmsg_conn_abort(c, -ECONNABORTED);
    break;
  case B_ABORT_OTHER:
    appmsg_conn_abort(o, -ECONNABORTED);
    break;
  }
  in_call--;
}

static void s_on_accept(struct appmsg_server *s, struct appmsg_conn *c, void *ud) {
  IN_CALLBACK();
  (void)ud;
  CHECK(nslots < MAX_SLOTS);
  struct sconn *k = &slots[nslots];
  CHECK_EQ(++k->accepts, 1);
  k->c = c;
  k->server = s == srv1 ? 1 : 2;
  appmsg_conn_set_userdata(c, k);
  nslots++;
  if (k->server == 1 && (sc.site == SV_ACCEPT || sc.site == SV_DRAIN_ACCEPT) && !sc.fired &&
      nslots - 1 == sc.self)
    server_act(nslots - 1);
}

static void s_on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                         size_t len, void *ud) {
  IN_CALLBACK();
  (void)h;
  struct sconn *k = ud;
  CHECK(k->c == c && k->closes == 0);
  k->messages++;
  echo(c, content, len);
  if (sc.site == SV_MESSAGE && !sc.fired && k == &slots[sc.self])
    server_act(sc.self);
}

static void s_on_close(struct appmsg_conn *c, int reason, void *ud) {
  IN_CALLBACK();
  struct sconn *k = ud;
  CHECK(k->c == c);
  CHECK_EQ(++k->closes, 1);
  k->reason = reason;
  if (sc.site == SV_CLOSE && !sc.fired && k == &slots[sc.self])
    server_act(sc.self);
  k->c = NULL;
}

static void s_on_timer(struct appmsg_loop *l, struct appmsg_timer *t, void *ud) {
  IN_CALLBACK();
  (void)l;
  (void)t;
  (void)ud;
  if (sc.site == SV_TIMER && !sc.fired)
    server_act(sc.self);
}

static int refusals;

static void s_on_refuse(struct appmsg_server *s, int err, void *ud) {
  IN_CALLBACK();
  (void)ud;
  CHECK(s == srv1);
  CHECK_EQ(err, APPMSG_E_TOO_MANY_CONNS);
  refusals++;
  if (sc.site == SV_REFUSE && !sc.fired)
    server_act(sc.self);
}

static const struct appmsg_conn_callbacks s_conn_cbs = {.on_message = s_on_message,
                                                        .on_close = s_on_close};
static const struct appmsg_server_callbacks s_srv_cbs = {.on_accept = s_on_accept,
                                                         .on_refuse = s_on_refuse};

/* Connects peer slot nslots to a server's port; with wait, until the server accepted it. */
static struct sconn *server_peer(const char *port, int wait) {
  appmsg_socket_t fd;
  char err[APPMSG_NET_ERRLEN];
  int want = nslots;
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &fd, err, sizeof err), 0);
  ck_assert_int_eq(appmsg_set_nonblock(fd, 1), 0);
  peer_add(&slots[want].peer, fd);
  if (wait)
    RUN_UNTIL(nslots > want);
  return &slots[want];
}

static void server_barrier(void) {
  char token[32];
  snprintf(token, sizeof token, "echo:witness-%d", ++barrier_seq);
  peer_send_frame(&slots[0].peer, token);
  RUN_UNTIL(peer_has(&slots[0].peer, token));
}

static int server1_all_closed(void) {
  for (int i = 1; i < nslots; i++)
    if (slots[i].closes == 0)
      return 0;
  return 1;
}

static int server1_peers_eof(void) {
  /* (a peer the test closed reads nothing) */
  for (int i = 1; i < nslots; i++)
    if (!slots[i].peer.eof && slots[i].peer.fd != APPMSG_INVALID_SOCKET)
      return 0;
  return 1;
}

static void server_cell(int backend, int site, int act) {
  common_setup(backend);
  memset(slots, 0, sizeof slots);
  nslots = 0;
  memset(&sc, 0, sizeof sc);
  sc.site = site;
  sc.act = act;
  refusals = 0;
  appmsg_server_opts_default(&sopts);
  static struct appmsg_server_opts sopts1;
  sopts1 = sopts;
  if (site == SV_REFUSE)
    sopts1.max_conns = 2;
  struct peer refused_peer = {.fd = APPMSG_INVALID_SOCKET};
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_server_new(&srv2, loop, "127.0.0.1", "0", &sopts, &s_conn_cbs, &s_srv_cbs,
                                     NULL, err, sizeof err),
                   0);
  ck_assert_int_eq(appmsg_server_new(&srv1, loop, "127.0.0.1", "0", &sopts1, &s_conn_cbs,
                                     &s_srv_cbs, NULL, err, sizeof err),
                   0);
  snprintf(port1, sizeof port1, "%d", appmsg_sockport(appmsg_server_fd(srv1)));
  snprintf(port2, sizeof port2, "%d", appmsg_sockport(appmsg_server_fd(srv2)));
  /* Slot 0: the witness, on server 2; slots 1 and 2 on server 1. */
  server_peer(port2, 1);
  server_peer(port1, 1);
  server_peer(port1, 1);
  sc.self = 1;
  sc.other = 2;
  struct appmsg_timer timer;
  appmsg_timer_init(&timer, s_on_timer, NULL);
  switch (site) {
  case SV_ACCEPT: /* a third connection's accept */
    sc.self = 3;
    sc.other = 1;
    server_peer(port1, 0);
    break;
  case SV_MESSAGE:
    peer_send_frame(&slots[1].peer, "go");
    break;
  case SV_CLOSE:
    peer_close(&slots[1].peer);
    break;
  case SV_TIMER:
    ck_assert_int_eq(appmsg_timer_start(loop, &timer, 0, 0), 0);
    break;
  case SV_MAIN:
    server_act(1);
    break;
  case SV_DRAIN_ACCEPT: /* connected, not yet accepted: the drain accepts it, outside the loop */
    sc.self = 3;
    sc.other = 1;
    server_peer(port1, 0);
    struct pollfd lp = {appmsg_server_fd(srv1), POLLIN, 0}; /* queued on the listener */
    ck_assert_int_eq(appmsg__poll(&lp, 1, TU_EVENT_MS), 1);
    appmsg_server_drain(srv1); /* (on_accept runs inside: the drain accepts what is queued) */
    CHECK(sc.fired);           /* the kernel had the connection queued before the drain */
    break;
  case SV_REFUSE: { /* a third connection, over the limit: told so, then closed */
    appmsg_socket_t fd;
    ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port1, TU_EVENT_MS, &fd, err, sizeof err),
                     0);
    ck_assert_int_eq(appmsg_set_nonblock(fd, 1), 0);
    peer_add(&refused_peer, fd);
    break;
  }
  }
  RUN_UNTIL(sc.fired);
  server_barrier();
  struct sconn *self = &slots[sc.self], *other = &slots[sc.other];
  int gone = site == SV_CLOSE;
  int drained = site == SV_DRAIN_ACCEPT || act == B_SERVER_DRAIN;
  switch (act) {
  case B_SERVER_FREE:
    RUN_UNTIL(server1_all_closed() && server1_peers_eof());
    for (int i = 1; i < nslots; i++)
      CHECK(slots[i].c == NULL);
    CHECK(refused(port1));
    break;
  case B_SERVER_DRAIN:
    RUN_UNTIL(server1_peers_eof());
    CHECK(refused(port1));
    break;
  case B_SEND_SELF:
    if (gone) {
      CHECK_EQ(sc.rc, APPMSG_E_CLOSED);
    } else {
      CHECK_EQ(sc.rc, 0);
      RUN_UNTIL(peer_has(&self->peer, "from-callback"));
    }
    break;
  case B_CLOSE_SELF:
    if (!gone)
      RUN_UNTIL(self->peer.eof);
    break;
  case B_ABORT_SELF:
    if (!gone) {
      RUN_UNTIL(self->closes && self->peer.eof);
      CHECK_EQ(self->reason, -ECONNABORTED);
    }
    break;
  case B_ABORT_OTHER:
    RUN_UNTIL(other->closes && other->peer.eof);
    CHECK_EQ(other->reason, -ECONNABORTED);
    break;
  }
  if (drained && srv1)
    RUN_UNTIL(server1_peers_eof());
  if (site == SV_REFUSE) { /* the refused peer is told, or cut off with the server */
    RUN_UNTIL(refused_peer.eof);
    CHECK(act == B_SERVER_FREE || peer_has(&refused_peer, "TOO_MANY_CONNS"));
    CHECK_EQ(refusals, 1);
    peer_close(&refused_peer); /* (the refused connection lingers for this) */
  }
  /* Connections of server 1 the action left alone still serve. */
  for (int i = 1; i < nslots; i++)
    if (slots[i].c && !slots[i].peer.eof && slots[i].peer.fd != APPMSG_INVALID_SOCKET) {
      char token[32];
      snprintf(token, sizeof token, "echo:alive-%d", i);
      peer_send_frame(&slots[i].peer, token);
      RUN_UNTIL(peer_has(&slots[i].peer, token));
    }
  server_barrier();
  /* The end: half from the peers, the rest by appmsg_server_free() from main. */
  for (int i = 1; i < nslots; i += 2)
    peer_close(&slots[i].peer);
  RUN_UNTIL(slots[1].closes);
  appmsg_server_free(srv1); /* (its on_close callbacks run inside: allowed from main) */
  srv1 = NULL;
  appmsg_server_free(srv2);
  srv2 = NULL;
  for (int i = 0; i < nslots; i++) {
    CHECK_EQ(slots[i].accepts, 1);
    CHECK_EQ(slots[i].closes, 1);
  }
  CHECK(!appmsg_timer_active(&timer));
  common_teardown();
}

/* ==== family 3: a service and its clients on one loop ===================================== */

enum vsite {
  V_HANDLER,
  V_TIMER,
  V_MAIN,
  V_OTHER_HANDLER,
  V_AFTER_CLOSE,
  V_AFTER_DEADLINE,
  V_AFTER_DEADLINE_CLOSE,
  V_N
};
static const char *const vsite_names[] = {
    "its handler",
    "a timer, the request answered later",
    "main, the request answered later",
    "another request's handler",
    "a timer, after the request's connection was reset",
    "a timer, after the request's deadline passed",
    "a timer, after the request's deadline passed and then its connection closed"};

enum vact {
  R_RESULT,
  R_ERROR,
  R_JSON,
  R_CONTENT,
  R_TWICE,
  R_BAD_THEN_GOOD,
  R_NEW_CALL,
  R_CLIENT_FREE,
  R_SERVICE_FREE,
  R_N
};
static const char *const vact_names[] = {
    "appmsg_reply_result",
    "appmsg_reply_error",
    "appmsg_reply_json",
    "appmsg_reply_content",
    "a second reply",
    "a refused reply (-EINVAL), then a reply",
    "appmsg_client_call, then a reply",
    "appmsg_client_free of the requester's client, then a reply",
    "appmsg_service_free"};

/* A client call and what its callback saw. */
struct tcall {
  const char *value; /* the value sent (the echo answers it) */
  int calls;         /* callback runs */
  int status, cause;
  char result[64], error[32], result_json[64];
};

static struct {
  int site, act;
  int fired;
  int rc, rc2;                 /* what the reply calls returned */
  struct appmsg_request *held; /* the subject request, answered later */
  struct appmsg_service *svc;  /* the service under test, NULL once freed */
  struct appmsg_service *wsvc; /* the witness's */
  struct appmsg_client *c1;    /* the subject request's client, NULL once freed */
  struct appmsg_client *c2;    /* another client of the service */
  struct appmsg_client *cw;    /* the witness's client */
  struct tcall a, b, d;        /* the subject call, the one behind it, a new one */
  int handled;                 /* the subject handler ran */
  int twice_logged;            /* "replied twice" lines */
} vs;
static struct appmsg_service_opts vopts, wopts;
static struct appmsg_client_opts kopts;

static void v_log(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  (void)level;
  if (getenv("LIFECYCLE_LOG"))
    fprintf(stderr, "log: %s\n", line);
  if (strstr(line, "replied twice"))
    vs.twice_logged++;
}

static void on_call(const struct appmsg_reply *r, void *ud) {
  IN_CALLBACK();
  struct tcall *k = ud;
  CHECK_EQ(++k->calls, 1);
  k->status = r->status;
  k->cause = r->cause;
  snprintf(k->result, sizeof k->result, "%s", r->result ? r->result : "");
  snprintf(k->error, sizeof k->error, "%s", r->error ? r->error : "");
  snprintf(k->result_json, sizeof k->result_json, "%.*s", (int)r->result_json_len,
           r->result_json ? r->result_json : "");
  if (r->status == 0 && r->header && strcmp(r->header->content_type, "text/json") != 0)
    snprintf(k->result, sizeof k->result, "%.*s", (int)r->len, (const char *)r->content);
}

static void v_echo(struct appmsg_request *r, void *ud) {
  IN_CALLBACK();
  (void)ud;
  const char *v = appmsg_request_string(r, "value");
  int rc;
  CALL(rc = appmsg_reply_result(r, v ? v : ""));
  CHECK_EQ(rc, 0);
}

static void service_act(struct appmsg_request *r) {
  vs.fired = 1;
  int rc = 0;
  switch (vs.act) {
  case R_RESULT:
    CALL(vs.rc = appmsg_reply_result(r, "value-A"));
    break;
  case R_ERROR:
    CALL(vs.rc = appmsg_reply_error(r, "NOT_FOUND", "no such thing"));
    break;
  case R_JSON:
    CALL(vs.rc = appmsg_reply_json(r, "[1, 2]", 6));
    break;
  case R_CONTENT:
    CALL(vs.rc = appmsg_reply_content(r, "binary/x", "binary", "bytes", 5));
    break;
  case R_TWICE:
    CALL(vs.rc = appmsg_reply_result(r, "value-A"));
    CALL(vs.rc2 = appmsg_reply_result(r, "again")); /* the request lives until the iteration ends */
    break;
  case R_BAD_THEN_GOOD:
    CALL(vs.rc2 = appmsg_reply_error(r, "not a name", "x"));
    CALL(vs.rc = appmsg_reply_result(r, "value-A"));
    break;
  case R_NEW_CALL: {
    struct appmsg_client *c = vs.c1 ? vs.c1 : vs.c2;
    CALL(rc = appmsg_client_call(c, on_call, &vs.d, "echo", "value", vs.d.value, NULL));
    CHECK_EQ(rc, 0);
    CALL(vs.rc = appmsg_reply_result(r, "value-A"));
    break;
  }
  case R_CLIENT_FREE:
    /* (the callbacks of the calls still waiting run inside the free) */
    if (vs.c1) {
      appmsg_client_free(vs.c1);
      vs.c1 = NULL;
    } else {
      appmsg_client_free(vs.c2);
      vs.c2 = NULL;
    }
    CALL(vs.rc = appmsg_reply_result(r, "value-A"));
    break;
  case R_SERVICE_FREE:
    appmsg_service_free(vs.svc); /* (from main its connections' ends run inside) */
    vs.svc = NULL;
    break;
  }
}

static void v_subject(struct appmsg_request *r, void *ud) {
  IN_CALLBACK();
  (void)ud;
  vs.handled++;
  if (vs.site == V_HANDLER && !vs.fired)
    service_act(r);
  else
    vs.held = r; /* answered later */
}

static void v_trigger(struct appmsg_request *r, void *ud) {
  IN_CALLBACK();
  (void)ud;
  if (vs.site == V_OTHER_HANDLER && !vs.fired && vs.held)
    service_act(vs.held);
  if (vs.act != R_SERVICE_FREE) {
    int rc;
    CALL(rc = appmsg_reply_result(r, "triggered"));
    CHECK_EQ(rc, 0);
  }
}

static void v_on_timer(struct appmsg_loop *l, struct appmsg_timer *t, void *ud) {
  IN_CALLBACK();
  (void)l;
  (void)t;
  (void)ud;
  if (!vs.fired)
    service_act(vs.held);
}

static void service_barrier(void) {
  struct tcall w = {.value = "witness"};
  int rc;
  CALL(rc = appmsg_client_call(vs.cw, on_call, &w, "echo", "value", "witness", NULL));
  CHECK_EQ(rc, 0);
  RUN_UNTIL(w.calls == 1);
  CHECK_EQ(w.status, 0);
  CHECK(strcmp(w.result, "witness") == 0);
}

static struct appmsg_service *make_service(struct appmsg_service_opts *o) {
  struct appmsg_service *s;
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_service_new(&s, loop, o), 0);
  ck_assert_int_eq(appmsg_service_handle(s, "echo", v_echo, NULL), 0);
  ck_assert_int_eq(appmsg_service_handle(s, "subject", v_subject, NULL), 0);
  ck_assert_int_eq(appmsg_service_handle(s, "trigger", v_trigger, NULL), 0);
  ck_assert_int_eq(appmsg_service_listen(s, "127.0.0.1", "0", err, sizeof err), 0);
  return s;
}

static struct appmsg_client *make_client(struct appmsg_service *s) {
  char port[16];
  snprintf(port, sizeof port, "%s", strrchr(appmsg_service_address(s), ':') + 1);
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &kopts), 0);
  return c;
}

/* Whether a reply to a live request must have been accepted (0), or dropped (CLOSED). */
static int reply_expected_rc(void) {
  return vs.site == V_AFTER_CLOSE || vs.site == V_AFTER_DEADLINE ||
                 vs.site == V_AFTER_DEADLINE_CLOSE
             ? APPMSG_E_CLOSED
             : 0;
}

/* What the subject call must have seen when the action's reply reached it. */
static void check_subject_reply(void) {
  struct tcall *a = &vs.a;
  switch (vs.act) {
  case R_RESULT:
  case R_TWICE:
  case R_BAD_THEN_GOOD:
  case R_NEW_CALL:
    CHECK_EQ(a->status, 0);
    CHECK(strcmp(a->result, "value-A") == 0);
    break;
  case R_ERROR:
    CHECK_EQ(a->status, APPMSG_E_ERROR_REPLY);
    CHECK(strcmp(a->error, "NOT_FOUND") == 0);
    break;
  case R_JSON:
    CHECK_EQ(a->status, 0);
    CHECK(strcmp(a->result_json, "[1, 2]") == 0);
    break;
  case R_CONTENT:
    CHECK_EQ(a->status, 0);
    CHECK(strcmp(a->result, "bytes") == 0);
    break;
  }
}

static int lost(int status) {
  return status == APPMSG_E_CLOSED || status == APPMSG_E_NOT_SENT;
}

static void service_cell(int backend, int site, int act) {
  common_setup(backend);
  memset(&vs, 0, sizeof vs);
  vs.site = site;
  vs.act = act;
  vs.a.value = "A";
  vs.b.value = "B";
  vs.d.value = "D";
  appmsg_service_opts_default(&vopts);
  vopts.deadline_ms = 1000;
  vopts.log = v_log;
  vopts.log_level = APPMSG_LOG_DEBUG;
  appmsg_service_opts_default(&wopts);
  appmsg_client_opts_default(&kopts);
  kopts.backoff_min_ms = 5;
  kopts.backoff_max_ms = 20;
  vs.svc = make_service(&vopts);
  vs.wsvc = make_service(&wopts);
  vs.c1 = make_client(vs.svc);
  vs.c2 = make_client(vs.svc);
  vs.cw = make_client(vs.wsvc);
  struct appmsg_timer timer;
  appmsg_timer_init(&timer, v_on_timer, NULL);
  service_barrier();
  /* The subject request, and one pipelined behind it whose reply must wait for it: from c1,
   * or from a plain socket that resets the connection. */
  int rc;
  struct peer raw;
  if (site == V_AFTER_CLOSE) {
    appmsg_socket_t fd;
    char err[APPMSG_NET_ERRLEN];
    ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1",
                                            strrchr(appmsg_service_address(vs.svc), ':') + 1,
                                            TU_EVENT_MS, &fd, err, sizeof err),
                     0);
    peer_add(&raw, fd);
    char f[512];
    size_t n = make_frame(f, sizeof f, "{\"action\": \"subject\", \"value\": \"A\"}", 1);
    n += make_frame(f + n, sizeof f - n, "{\"action\": \"echo\", \"value\": \"B\"}", 1);
    peer_write(&raw, f, n);
    vs.a.calls = vs.b.calls = 1; /* (no calls of a client's: nothing to count) */
  } else {
    CALL(rc = appmsg_client_call(vs.c1, on_call, &vs.a, "subject", "value", "A", NULL));
    CHECK_EQ(rc, 0);
    CALL(rc = appmsg_client_call(vs.c1, on_call, &vs.b, "echo", "value", "B", NULL));
    CHECK_EQ(rc, 0);
  }
  RUN_UNTIL(vs.handled == 1);
  switch (site) {
  case V_HANDLER:
    break;
  case V_TIMER:
    ck_assert_int_eq(appmsg_timer_start(loop, &timer, 0, 0), 0);
    break;
  case V_MAIN:
    service_barrier(); /* (its reply is owed: nothing for A or B meanwhile) */
    CHECK_EQ(vs.a.calls + vs.b.calls, 0);
    service_act(vs.held);
    break;
  case V_OTHER_HANDLER: {
    struct tcall t = {.value = "trigger"};
    CALL(rc = appmsg_client_call(vs.c2, on_call, &t, "trigger", NULL));
    CHECK_EQ(rc, 0);
    RUN_UNTIL(vs.fired && t.calls == 1);
    CHECK(vs.act == R_SERVICE_FREE ? lost(t.status) : t.status == 0);
    break;
  }
  case V_AFTER_CLOSE: {
    struct appmsg_service_stats st;
    RUN_UNTIL((appmsg_service_stats(vs.svc, &st), st.requests == 2));
    peer_reset(&raw);
    RUN_UNTIL((appmsg_service_stats(vs.svc, &st), st.connections == 2));
    ck_assert_int_eq(appmsg_timer_start(loop, &timer, 0, 0), 0);
    break;
  }
  case V_AFTER_DEADLINE:
  case V_AFTER_DEADLINE_CLOSE:
    skip_ms(vopts.deadline_ms + 1000);
    RUN_UNTIL(vs.a.calls == 1 && vs.b.calls == 1); /* TIMEOUT in the handler's place */
    CHECK_EQ(vs.a.status, APPMSG_E_ERROR_REPLY);
    CHECK(strcmp(vs.a.error, "TIMEOUT") == 0);
    CHECK_EQ(vs.b.status, 0);
    if (site == V_AFTER_DEADLINE_CLOSE) {
      struct appmsg_service_stats st;
      appmsg_client_free(vs.c1); /* nothing is owed on its connection any more */
      vs.c1 = NULL;
      RUN_UNTIL((appmsg_service_stats(vs.svc, &st), st.connections == 2));
    }
    ck_assert_int_eq(appmsg_timer_start(loop, &timer, 0, 0), 0);
    break;
  }
  RUN_UNTIL(vs.fired);
  service_barrier();
  /* What the calls saw. */
  if (act == R_SERVICE_FREE) {
    RUN_UNTIL(vs.a.calls == 1 && vs.b.calls == 1);
    if (site < V_AFTER_CLOSE)
      CHECK(lost(vs.a.status) && lost(vs.b.status));
  } else if (act == R_CLIENT_FREE && site < V_AFTER_CLOSE) {
    CHECK_EQ(vs.a.calls, 1); /* the free ran their callbacks */
    CHECK_EQ(vs.b.calls, 1);
    CHECK(lost(vs.a.status) && lost(vs.b.status));
    CHECK(vs.rc == 0 || vs.rc == APPMSG_E_CLOSED);
  } else {
    CHECK_EQ(vs.rc, reply_expected_rc());
    if (reply_expected_rc() == 0) { /* (else A and B had their answers before the action) */
      RUN_UNTIL(vs.a.calls == 1 && vs.b.calls == 1);
      check_subject_reply();
      CHECK_EQ(vs.b.status, 0); /* the reply behind it, in order */
      CHECK(strcmp(vs.b.result, "B") == 0);
    }
    if (act == R_TWICE) {
      CHECK_EQ(vs.rc2, -EALREADY);
      CHECK(vs.twice_logged >= 1);
    }
    if (act == R_BAD_THEN_GOOD)
      CHECK_EQ(vs.rc2, -EINVAL);
  }
  if (act == R_NEW_CALL) {
    RUN_UNTIL(vs.d.calls == 1);
    CHECK_EQ(vs.d.status, 0);
    CHECK(strcmp(vs.d.result, "D") == 0);
  }
  if (vs.svc) {
    struct appmsg_service_stats st;
    RUN_UNTIL((appmsg_service_stats(vs.svc, &st), st.pending == 0));
  }
  /* The other client still works (unless its service is gone). */
  if (vs.c2 && vs.svc) {
    struct tcall k = {.value = "still"};
    CALL(rc = appmsg_client_call(vs.c2, on_call, &k, "echo", "value", "still", NULL));
    CHECK_EQ(rc, 0);
    RUN_UNTIL(k.calls == 1);
    CHECK_EQ(k.status, 0);
  }
  service_barrier();
  /* The end, from main: clients, then services (their on_close callbacks run inside). */
  appmsg_client_free(vs.c1);
  appmsg_client_free(vs.c2);
  appmsg_client_free(vs.cw);
  appmsg_service_free(vs.svc);
  appmsg_service_free(vs.wsvc);
  CHECK_EQ(vs.a.calls, 1);
  CHECK_EQ(vs.b.calls, 1);
  CHECK(vs.d.calls <= 1);
  CHECK(vs.handled == 1);
  CHECK(!appmsg_timer_active(&timer));
  common_teardown();
}

/* ==== family 4: a client's calls ========================================================== */

enum ksite {
  K_REPLY,
  K_ERROR_REPLY,
  K_TIMEOUT,
  K_CLOSED,
  K_REFUSED,
  K_QUEUE_TIMEOUT,
  K_FREED,
  K_OUTSIDE,
  K_N
};
static const char *const ksite_names[] = {
    "a call's callback with a reply",
    "a call's callback with an error reply",
    "a call's callback with a timeout",
    "a call's callback, the connection lost",
    "a call's callback, never sent: connection refused",
    "a call's callback, never sent: timed out in the queue",
    "a call's callback run by appmsg_client_free() from main",
    "a call's callback, the connection lost in work another free from main runs"};

enum kact { K_NONE, K_NEW_CALL, K_CLIENT_FREE, K_NEW_CALL_THEN_FREE, K_FREE_OTHER, K_NACT };
static const char *const kact_names[] = {
    "nothing", "appmsg_client_call", "appmsg_client_free (other calls pending)",
    "appmsg_client_call, then appmsg_client_free", "appmsg_client_free of another client"};

/* The fake server: plain sockets the test answers for. */
struct fconn {
  struct peer p;
  size_t used; /* bytes of p.rx cut into frames */
  int nheld;   /* requests held */
  char held[8][64];
  char held_rid[8][32];
  int dropped;
};

#define MAX_FCONNS 8
static struct {
  appmsg_socket_t lfd;
  char port[16];
  struct fconn c[MAX_FCONNS];
  int n;
  int release; /* answer the held requests */
  int accepts;
} fs;

static struct {
  int site, act;
  int fired;
  int rc;                  /* what the new call returned */
  struct appmsg_client *c; /* the client under test, NULL once freed */
  struct appmsg_client *x; /* another client (freed by K_FREE_OTHER, or by main for K_OUTSIDE) */
  struct appmsg_client *w; /* the witness's */
  struct tcall a, b, cc, d, h, xh, big[2];
} ks;
static struct appmsg_client_opts kxopts; /* the other clients' */

/* Copies the JSON string value of "key" in text, or "" (the test's own requests: no escapes). */
static void json_string(const char *text, const char *key, char *out, size_t n) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": \"", key);
  const char *p = strstr(text, pat);
  out[0] = '\0';
  if (p) {
    p += strlen(pat);
    const char *e = strchr(p, '"');
    snprintf(out, n, "%.*s", e ? (int)(e - p) : 0, p);
  }
}

/* The request-id of a frame's header, as JSON text, or "". */
static void frame_rid(const char *header, char *out, size_t n) {
  const char *p = strstr(header, "\"request-id\": ");
  out[0] = '\0';
  if (p) {
    p += 14;
    size_t k = strcspn(p, ",}");
    snprintf(out, n, "%.*s", (int)k, p);
  }
}

static void fs_reply(struct fconn *f, const char *rid, const char *content) {
  char frame[1024];
  size_t clen = strlen(content);
  int hl = snprintf(frame + 2, sizeof frame - 2,
                    "{\"byteorder\": \"little\", \"content-type\": \"text/json\", "
                    "\"content-encoding\": \"utf-8\", \"content-length\": %zu%s%s}",
                    clen, rid[0] ? ", \"request-id\": " : "", rid);
  frame[0] = (char)(hl >> 8);
  frame[1] = (char)(hl & 0xff);
  memcpy(frame + 2 + hl, content, clen);
  if (appmsg_send(f->p.fd, frame, 2 + (size_t)hl + clen) < 0)
    f->dropped = 1; /* (the client went) */
}

static void fs_answer(struct fconn *f, const char *value, const char *rid) {
  char body[256];
  snprintf(body, sizeof body, "{\"result\": \"%s\"}", value);
  fs_reply(f, rid, body);
}

/* The fake server's work between iterations: accept, read requests, answer. */
static void fs_tick(void) {
  for (;;) {
    appmsg_socket_t fd;
    if (appmsg_accept(fs.lfd, &fd) != 0)
      break;
    ck_assert_int_lt(fs.n, MAX_FCONNS);
    struct fconn *f = &fs.c[fs.n++];
    memset(f, 0, sizeof *f);
    peer_add(&f->p, fd);
    fs.accepts++;
  }
  for (int i = 0; i < fs.n; i++) {
    struct fconn *f = &fs.c[i];
    if (f->p.fd == APPMSG_INVALID_SOCKET)
      continue;
    peer_pump(&f->p);
    for (;;) {
      if (f->dropped || f->p.rx.len < f->used + 2)
        break;
      const unsigned char *b = (const unsigned char *)f->p.rx.p + f->used;
      size_t hl = ((size_t)b[0] << 8) | b[1];
      if (f->p.rx.len < f->used + 2 + hl)
        break;
      char *hdr = tu_strndup((const char *)b + 2, hl);
      char rid[32], *content;
      frame_rid(hdr, rid, sizeof rid);
      free(hdr);
      if (!peer_next_frame(&f->p, &f->used, &content))
        break;
      char value[64];
      json_string(content, "value", value, sizeof value);
      free(content);
      if (strncmp(value, "ok-", 3) == 0) {
        fs_answer(f, value, rid);
      } else if (strncmp(value, "err-", 4) == 0) {
        fs_reply(f, rid, "{\"result\": \"Error: no such thing.\", \"error\": \"NOT_FOUND\"}");
      } else if (strncmp(value, "drop-", 5) == 0) {
        f->dropped = 1;
      } else if (f->nheld < 8) { /* hold-*, and anything else */
        snprintf(f->held[f->nheld], sizeof f->held[0], "%s", value);
        snprintf(f->held_rid[f->nheld++], sizeof f->held_rid[0], "%s", rid);
      }
    }
    if (fs.release && !f->dropped) {
      for (int k = 0; k < f->nheld; k++)
        fs_answer(f, f->held[k], f->held_rid[k]);
      f->nheld = 0;
    }
    if (f->dropped || f->p.eof)
      peer_close(&f->p); /* the client's calls on it are lost */
  }
}

/* Whether the fake server holds a request with this value. */
static int fs_holding(const char *value) {
  for (int i = 0; i < fs.n; i++)
    for (int k = 0; k < fs.c[i].nheld; k++)
      if (strcmp(fs.c[i].held[k], value) == 0)
        return 1;
  return 0;
}

static int k_lost(const struct tcall *k) {
  return k->status == APPMSG_E_CLOSED || k->status == APPMSG_E_NOT_SENT;
}

/* Every callback ran once, and a reply, when there was one, was the call's own. */
static void check_call(const struct tcall *k, const char *name) {
  ck_assert_msg(k->calls == 1, "%s: call %s: %d callbacks", cell, name, k->calls);
  if (k->status == 0)
    ck_assert_msg(strcmp(k->result, k->value) == 0, "%s: call %s got '%s'", cell, name, k->result);
  else if (k->status == APPMSG_E_ERROR_REPLY)
    ck_assert_msg(strncmp(k->value, "err-", 4) == 0, "%s: call %s got an error reply", cell, name);
  else
    ck_assert_msg(k_lost(k) || k->status == APPMSG_E_TIMEOUT, "%s: call %s: status %d", cell, name,
                  k->status);
}

static int k_call(struct appmsg_client *c, struct tcall *k, uint32_t timeout_ms);

static void client_act(void) {
  ks.fired = 1;
  switch (ks.act) {
  case K_NONE:
    break;
  case K_NEW_CALL:
  case K_NEW_CALL_THEN_FREE:
    ks.rc = ks.c ? k_call(ks.c, &ks.d, 0) : -EINVAL;
    if (ks.act == K_NEW_CALL)
      break;
    /* fall through */
  case K_CLIENT_FREE:
    appmsg_client_free(ks.c); /* (the other calls' callbacks run inside) */
    ks.c = NULL;
    break;
  case K_FREE_OTHER:
    appmsg_client_free(ks.x);
    ks.x = NULL;
    break;
  }
}

static void on_subject_call(const struct appmsg_reply *r, void *ud) {
  on_call(r, ud);
  if (!ks.fired)
    client_act();
}

static int k_call(struct appmsg_client *c, struct tcall *k, uint32_t timeout_ms) {
  char content[4096];
  int n = snprintf(content, sizeof content, "{\"action\": \"x\", \"value\": \"%s\"", k->value);
  if (k == &ks.big[0] || k == &ks.big[1]) { /* a large request */
    n += snprintf(content + n, sizeof content - (size_t)n, ", \"pad\": \"");
    memset(content + n, 'p', 3000);
    n += 3000;
    n += snprintf(content + n, sizeof content - (size_t)n, "\"");
  }
  n += snprintf(content + n, sizeof content - (size_t)n, "}");
  struct appmsg_call call = {.content = content, .len = (size_t)n, .timeout_ms = timeout_ms};
  int rc;
  CALL(rc = appmsg_client_send(c, &call, k == &ks.a ? on_subject_call : on_call, k));
  return rc;
}

static void witness_call(void) {
  struct tcall w = {.value = "ok-witness"};
  CHECK_EQ(k_call(ks.w, &w, 0), 0);
  RUN_UNTIL(w.calls == 1);
  CHECK_EQ(w.status, 0);
  CHECK(strcmp(w.result, "ok-witness") == 0);
}

static void client_cell(int backend, int site, int act) {
  common_setup(backend);
  memset(&ks, 0, sizeof ks);
  memset(&fs, 0, sizeof fs);
  ks.site = site;
  ks.act = act;
  ks.d.value = "ok-D";
  ks.b.value = "ok-B";
  ks.cc.value = "hold-C";
  ks.h.value = "hold-H";
  ks.xh.value = "hold-X";
  ks.big[0].value = "ok-big0";
  ks.big[1].value = "ok-big1";
  static const char *const avalues[] = {"ok-A",   "err-A",  "hold-A", "drop-A",
                                        "hold-A", "hold-A", "hold-A", "hold-A"};
  ks.a.value = avalues[site];
  fs.lfd = listen_port(fs.port, sizeof fs.port);
  tick = fs_tick;
  appmsg_client_opts_default(&kopts);
  kopts.request_ids = 1;
  kopts.backoff_min_ms = 5;
  kopts.backoff_max_ms = 20;
  kopts.call_timeout_ms = 60000;
  kxopts = kopts;
  char port[16];
  snprintf(port, sizeof port, "%s", fs.port);
  appmsg_socket_t refused_fd = APPMSG_INVALID_SOCKET;
  if (site == K_REFUSED) {
    refused_fd = tu_refused_port(port, sizeof port);
    kopts.reconnect = 0;
  }
  if (site == K_QUEUE_TIMEOUT)
    kopts.max_in_flight = 1;
  if (site == K_OUTSIDE) {
    kopts.conn.max_output = 4096; /* the second large request breaks it: the connection ends */
    kopts.max_queued_bytes = 0;
  }
  ck_assert_int_eq(appmsg_client_new(&ks.c, loop, "127.0.0.1", port, &kopts), 0);
  ck_assert_int_eq(appmsg_client_new(&ks.x, loop, "127.0.0.1", fs.port, &kxopts), 0);
  ck_assert_int_eq(appmsg_client_new(&ks.w, loop, "127.0.0.1", fs.port, &kxopts), 0);
  witness_call();
  CHECK_EQ(k_call(ks.x, &ks.xh, 0), 0);
  /* The calls: (H, holding the one place in flight,) A, whose callback acts, then B and C. */
  if (site == K_QUEUE_TIMEOUT)
    CHECK_EQ(k_call(ks.c, &ks.h, 0), 0);
  int ra = k_call(ks.c, &ks.a, site == K_TIMEOUT || site == K_QUEUE_TIMEOUT ? 1000 : 0);
  if (site == K_REFUSED && ra != 0) {
    /* (the refusal came before the call: nothing to act from) */
    CHECK_EQ(ra, -ECONNREFUSED);
    ks.a.calls = 1;
    ks.a.status = APPMSG_E_NOT_SENT;
    client_act();
  } else {
    CHECK_EQ(ra, 0);
  }
  /* (with a timeout, C's ends with A's: both fail in one pass of the client's timer) */
  int rb = ks.c ? k_call(ks.c, &ks.b, 0) : -EINVAL;
  int rc = ks.c ? k_call(ks.c, &ks.cc, site == K_TIMEOUT ? 1000 : 0) : -EINVAL;
  if (site != K_REFUSED) {
    CHECK_EQ(rb, 0);
    CHECK_EQ(rc, 0);
  }
  if (rb != 0)
    ks.b.calls = 1, ks.b.status = APPMSG_E_NOT_SENT;
  if (rc != 0)
    ks.cc.calls = 1, ks.cc.status = APPMSG_E_NOT_SENT;
  switch (site) {
  case K_TIMEOUT:
  case K_QUEUE_TIMEOUT:
    RUN_UNTIL(fs_holding(site == K_QUEUE_TIMEOUT ? "hold-H" : "hold-A"));
    skip_ms(2000);
    break;
  case K_FREED:
    RUN_UNTIL(fs_holding("hold-A")); /* A reached the server */
    appmsg_client_free(ks.c);
    ks.c = NULL;
    CHECK(ks.fired);
    break;
  case K_OUTSIDE:
    RUN_UNTIL(fs_holding("hold-A"));
    CHECK_EQ(k_call(ks.c, &ks.big[0], 0), 0); /* into the connection's output */
    CHECK_EQ(k_call(ks.c, &ks.big[1], 0), 0); /* over its cap: the connection ends */
    CHECK(!ks.fired);
    appmsg_client_free(ks.x); /* runs the work waiting: the connection's end, A's callback */
    ks.x = NULL;
    CHECK(ks.fired);
    break;
  }
  RUN_UNTIL(ks.fired);
  fs.release = 1;
  witness_call();
  /* A's outcome. */
  switch (site) {
  case K_REPLY:
    CHECK_EQ(ks.a.status, 0);
    break;
  case K_ERROR_REPLY:
    CHECK_EQ(ks.a.status, APPMSG_E_ERROR_REPLY);
    CHECK(strcmp(ks.a.error, "NOT_FOUND") == 0);
    break;
  case K_TIMEOUT:
    CHECK_EQ(ks.a.status, APPMSG_E_TIMEOUT);
    break;
  case K_CLOSED:
    CHECK_EQ(ks.a.status, APPMSG_E_CLOSED);
    break;
  case K_REFUSED:
    CHECK_EQ(ks.a.status, APPMSG_E_NOT_SENT);
    if (ra == 0)
      CHECK_EQ(ks.a.cause, -ECONNREFUSED);
    break;
  case K_QUEUE_TIMEOUT:
    CHECK_EQ(ks.a.status, APPMSG_E_NOT_SENT);
    CHECK_EQ(ks.a.cause, APPMSG_E_TIMEOUT);
    break;
  case K_FREED:
  case K_OUTSIDE:
    CHECK(k_lost(&ks.a));
    break;
  }
  /* A new call made from the callback: while the client lives it must be answered, by this
   * connection or, after a lost one, by the next. */
  if ((act == K_NEW_CALL || act == K_NEW_CALL_THEN_FREE) && site != K_REFUSED && site != K_FREED)
    CHECK_EQ(ks.rc, 0);
  if (ks.rc == 0 && (act == K_NEW_CALL || act == K_NEW_CALL_THEN_FREE) && ks.fired &&
      site != K_FREED) {
    RUN_UNTIL(ks.d.calls == 1);
    if (ks.c)
      CHECK_EQ(ks.d.status, 0);
  }
  if (act == K_NEW_CALL && site == K_FREED)
    CHECK_EQ(ks.rc, -EINVAL); /* the client is being freed */
  if (act == K_NEW_CALL && site == K_REFUSED)
    CHECK_EQ(ks.rc, -ECONNREFUSED); /* not trying any more */
  /* The calls still waiting finish once the server answers what it held. */
  if (ks.c)
    RUN_UNTIL(ks.b.calls == 1 && ks.cc.calls == 1 && (site != K_QUEUE_TIMEOUT || ks.h.calls));
  if (ks.c && site != K_REFUSED && site != K_CLOSED && site != K_OUTSIDE) {
    CHECK_EQ(ks.b.status, 0);
    CHECK_EQ(ks.cc.status, site == K_TIMEOUT ? APPMSG_E_TIMEOUT : 0);
  }
  witness_call();
  /* The end, from main: the callbacks of what still waits run inside the frees. */
  appmsg_client_free(ks.c);
  appmsg_client_free(ks.x);
  appmsg_client_free(ks.w);
  check_call(&ks.a, "A");
  check_call(&ks.b, "B");
  check_call(&ks.cc, "C");
  check_call(&ks.xh, "X");
  if (site == K_QUEUE_TIMEOUT)
    check_call(&ks.h, "H");
  if (site == K_OUTSIDE) {
    check_call(&ks.big[0], "big0");
    check_call(&ks.big[1], "big1");
  }
  if (ks.rc == 0 && (act == K_NEW_CALL || act == K_NEW_CALL_THEN_FREE))
    check_call(&ks.d, "D");
  else
    CHECK_EQ(ks.d.calls, 0); /* a call that returned an error never runs its callback */
  tick = NULL;
  for (int i = 0; i < fs.n; i++)
    peer_close(&fs.c[i].p);
  tu_close(fs.lfd);
  if (refused_fd != APPMSG_INVALID_SOCKET)
    tu_close(refused_fd);
  common_teardown();
}

/* A drain asked for while reading is paused waits for reading to resume, then closes the
 * connection once it is quiet: the look at whether input waits is not lost meanwhile. */
START_TEST(a_drain_asked_while_paused_closes_once_reading_resumes) {
  snprintf(cell, sizeof cell, "drain while paused (%s)", _i ? "poll" : "epoll");
  common_setup(_i);
  memset(tcs, 0, sizeof tcs);
  memset(&cc, 0, sizeof cc);
  cc.site = -1;
  appmsg_conn_opts_default(&copts);
  char port[16];
  appmsg_socket_t lfd = listen_port(port, sizeof port);
  for (int i = 0; i < 3; i++) {
    char err[APPMSG_NET_ERRLEN];
    ck_assert_int_eq(appmsg_conn_connect(&tcs[i].c, loop, "127.0.0.1", port, &copts, &tcbs, &tcs[i],
                                         err, sizeof err),
                     0);
    appmsg_conn_set_close_hook(tcs[i].c, t_hook, &tcs[i]);
    peer_add(&tcs[i].peer, accept_from(lfd, local_port(appmsg_conn_fd(tcs[i].c))));
  }
  RUN_UNTIL(tcs[0].connects && tcs[1].connects && tcs[2].connects);
  round_trip(&tcs[0], "before");
  CALL(appmsg_conn_set_reading(tcs[0].c, 0));
  barrier();
  CALL(appmsg_conn_close_when_idle(tcs[0].c));
  barrier();
  CHECK(!tcs[0].peer.eof); /* paused: not looked at yet */
  CALL(appmsg_conn_set_reading(tcs[0].c, 1));
  RUN_UNTIL(tcs[0].peer.eof);
  CHECK(!tcs[0].peer.reset);
  for (int i = 0; i < 3; i++)
    peer_close(&tcs[i].peer);
  RUN_UNTIL(all_closed());
  for (int i = 0; i < 3; i++)
    tu_str_free(&tcs[i].got);
  tu_close(lfd);
  common_teardown();
}
END_TEST

/* appmsg_loop_free() finishes what was asked from main: a connection aborted, and another one
 * its on_close aborts in turn - each on_close once, inside the free, nothing left behind. */
static struct appmsg_conn *chain_next;

static void chain_on_close(struct appmsg_conn *c, int reason, void *ud) {
  struct tconn *t = ud;
  CHECK(t->c == c);
  CHECK_EQ(++t->closes, 1);
  t->reason = reason;
  t->c = NULL;
  if (chain_next) {
    struct appmsg_conn *n = chain_next;
    chain_next = NULL;
    CALL(appmsg_conn_abort(n, -ECONNABORTED));
  }
}

START_TEST(appmsg_loop_free_finishes_what_main_asked_for) {
  snprintf(cell, sizeof cell, "loop free (%s)", _i ? "poll" : "epoll");
  common_setup(_i);
  memset(tcs, 0, sizeof tcs);
  appmsg_conn_opts_default(&copts);
  static const struct appmsg_conn_callbacks cbs = {.on_close = chain_on_close};
  appmsg_socket_t sv[2][2];
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(tu_socketpair(sv[i]), 0);
    ck_assert_int_eq(appmsg_conn_new(&tcs[i].c, loop, sv[i][0], &copts, &cbs, &tcs[i]), 0);
  }
  chain_next = tcs[1].c;
  CALL(appmsg_conn_abort(tcs[0].c, -ETIMEDOUT));
  CHECK_EQ(tcs[0].closes, 0); /* not inside the call */
  appmsg_loop_free(loop);     /* (the on_close callbacks run inside: allowed) */
  loop = NULL;
  CHECK_EQ(tcs[0].closes, 1);
  CHECK_EQ(tcs[0].reason, -ETIMEDOUT);
  CHECK_EQ(tcs[1].closes, 1);
  CHECK_EQ(tcs[1].reason, -ECONNABORTED);
  for (int i = 0; i < 2; i++)
    tu_close(sv[i][1]);
}
END_TEST

/* appmsg_service_free() from a handler of a service on a loop of its own cannot free the loop
 * running it: it stops the loop and logs; freed once the loop has returned. */
static int own_logged;
static int own_handled;

static void own_log(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  if (level == APPMSG_LOG_ERROR && strstr(line, "appmsg_service_free()"))
    __atomic_add_fetch(&own_logged, 1, __ATOMIC_RELAXED);
}

static void own_stop(struct appmsg_request *r, void *ud) {
  struct appmsg_service *s = ud;
  __atomic_add_fetch(&own_handled, 1, __ATOMIC_RELAXED);
  appmsg_service_free(s); /* stops its loop instead */
  appmsg_reply_result(r, "stopping");
}

static int own_returned; /* the thread's appmsg_loop_run() returned */

static void *own_run(void *arg) {
  appmsg_loop_run(appmsg_service_loop(arg));
  __atomic_store_n(&own_returned, 1, __ATOMIC_RELEASE);
  return NULL;
}

START_TEST(appmsg_service_free_from_a_handler_of_a_service_on_its_own_loop_stops_it) {
  snprintf(cell, sizeof cell, "service on its own loop (%s)", _i ? "poll" : "epoll");
  common_setup(_i);
  /* (the loop it makes itself) */
  tu_setenv("APPMSG_LOOP_BACKEND", _i || !APPMSG_HAVE_EPOLL ? "poll" : "epoll");
  own_logged = own_handled = own_returned = 0;
  struct appmsg_service_opts o;
  appmsg_service_opts_default(&o);
  o.log = own_log;
  struct appmsg_service *s;
  char err[APPMSG_NET_ERRLEN];
  ck_assert_int_eq(appmsg_service_new(&s, NULL, &o), 0);
  ck_assert_int_eq(appmsg_service_handle(s, "stop", own_stop, s), 0);
  ck_assert_int_eq(appmsg_service_listen(s, "127.0.0.1", "0", err, sizeof err), 0);
  char port[16];
  snprintf(port, sizeof port, "%s", strrchr(appmsg_service_address(s), ':') + 1);
  pthread_t th;
  ck_assert_int_eq(pthread_create(&th, NULL, own_run, s), 0);
  appmsg_client_opts_default(&kopts);
  kopts.reconnect = 0;
  struct appmsg_client *c;
  ck_assert_int_eq(appmsg_client_new(&c, loop, "127.0.0.1", port, &kopts), 0);
  struct tcall k = {.value = "stopping"}, after = {.value = "after"};
  ck_assert_int_eq(appmsg_client_call(c, on_call, &k, "stop", NULL), 0);
  RUN_UNTIL(k.calls == 1); /* the reply made after the refused free still leaves */
  CHECK_EQ(k.status, 0);
  CHECK(strcmp(k.result, "stopping") == 0);
  RUN_UNTIL(__atomic_load_n(&own_returned, __ATOMIC_ACQUIRE)); /* the loop stopped */
  pthread_join(th, NULL);
  CHECK_EQ(own_handled, 1);
  CHECK_EQ(own_logged, 1);
  /* Stopped, not freed: a request now waits; freeing from outside ends the connection. */
  ck_assert_int_eq(appmsg_client_call(c, on_call, &after, "stop", NULL), 0);
  appmsg_service_free(s);
  RUN_UNTIL(after.calls == 1);
  CHECK(after.status == APPMSG_E_CLOSED || after.status == APPMSG_E_NOT_SENT);
  CHECK_EQ(own_handled, 1);
  appmsg_client_free(c);
  tu_setenv("APPMSG_LOOP_BACKEND", NULL);
  common_teardown();
}
END_TEST

/* ==== the table ============================================================================ */

enum family { F_CONN, F_SERVER, F_SERVICE, F_CLIENT };

struct cellspec {
  int family, site, act, self;
};

#define MAX_CELLS 2048
static struct cellspec cells[MAX_CELLS];
static int ncells;
static int cell_base[4], cell_count[4]; /* each family's cells: cells[base .. base + count) */

static void add_cell(int family, int site, int act, int self) {
  if (ncells == MAX_CELLS)
    abort(); /* (not in a test: no ck_assert here) */
  cells[ncells++] = (struct cellspec){family, site, act, self};
}

static void make_conn_cells(void) {
  for (int site = 0; site < C_N; site++)
    for (int act = 0; act < A_N; act++)
      for (int self = 0; self < 2; self++)
        add_cell(F_CONN, site, act, self);
}

static void make_server_cells(void) {
  for (int site = 0; site < SV_N; site++)
    for (int act = 0; act < B_N; act++)
      add_cell(F_SERVER, site, act, 0);
}

START_TEST(server_matrix) {
  const struct cellspec *c = &cells[cell_base[F_SERVER] + _i / 2];
  int backend = _i % 2;
  snprintf(cell, sizeof cell, "server cell %d (%s): %s from %s", _i, backend ? "poll" : "epoll",
           sact_names[c->act], ssite_names[c->site]);
  server_cell(backend, c->site, c->act);
}
END_TEST

static void make_service_cells(void) {
  for (int site = 0; site < V_N; site++)
    for (int act = 0; act < R_N; act++)
      add_cell(F_SERVICE, site, act, 0);
}

START_TEST(service_matrix) {
  const struct cellspec *c = &cells[cell_base[F_SERVICE] + _i / 2];
  int backend = _i % 2;
  snprintf(cell, sizeof cell, "service cell %d (%s): %s from %s", _i, backend ? "poll" : "epoll",
           vact_names[c->act], vsite_names[c->site]);
  service_cell(backend, c->site, c->act);
}
END_TEST

static void make_client_cells(void) {
  for (int site = 0; site < K_N; site++)
    for (int act = 0; act < K_NACT; act++)
      add_cell(F_CLIENT, site, act, 0);
}

START_TEST(client_matrix) {
  const struct cellspec *c = &cells[cell_base[F_CLIENT] + _i / 2];
  int backend = _i % 2;
  snprintf(cell, sizeof cell, "client cell %d (%s): %s from %s", _i, backend ? "poll" : "epoll",
           kact_names[c->act], ksite_names[c->site]);
  client_cell(backend, c->site, c->act);
}
END_TEST

START_TEST(conn_matrix) {
  const struct cellspec *c = &cells[cell_base[F_CONN] + _i / 2];
  int backend = _i % 2;
  snprintf(cell, sizeof cell, "conn cell %d (%s): %s on %s from %s", _i, backend ? "poll" : "epoll",
           cact_names[c->act], c->self ? "itself" : "another", csite_names[c->site]);
  conn_cell(backend, c->site, c->act, c->self);
}
END_TEST

static void make_cells(void) {
  void (*makers[])(void) = {make_conn_cells, make_server_cells, make_service_cells,
                            make_client_cells};
  for (int f = 0; f < (int)(sizeof makers / sizeof *makers); f++) {
    cell_base[f] = ncells;
    makers[f]();
    cell_count[f] = ncells - cell_base[f];
  }
}

int main(int argc, char **argv) {
  appmsg__set_clock(test_clock);
  make_cells();
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    static const char *const fam[] = {"conn_matrix", "server_matrix", "service_matrix",
                                      "client_matrix"};
    for (int i = 0; i < ncells; i++) {
      const struct cellspec *c = &cells[i];
      int k = i - cell_base[c->family];
      const char *what = "";
      char buf[200];
      switch (c->family) {
      case F_CONN:
        snprintf(buf, sizeof buf, "%s on %s from %s", cact_names[c->act],
                 c->self ? "itself" : "another", csite_names[c->site]);
        what = buf;
        break;
      case F_SERVER:
        snprintf(buf, sizeof buf, "%s from %s", sact_names[c->act], ssite_names[c->site]);
        what = buf;
        break;
      case F_SERVICE:
        snprintf(buf, sizeof buf, "%s from %s", vact_names[c->act], vsite_names[c->site]);
        what = buf;
        break;
      case F_CLIENT:
        snprintf(buf, sizeof buf, "%s from %s", kact_names[c->act], ksite_names[c->site]);
        what = buf;
        break;
      }
      printf("%s:%d,%d (epoll, poll): %s\n", fam[c->family], 2 * k, 2 * k + 1, what);
    }
    return 0;
  }
  Suite *s = suite_create("lifecycle");
  TCase *tc = tcase_create("conn");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, conn_matrix, 0, 2 * cell_count[F_CONN]);
  tcase_add_loop_test(tc, a_drain_asked_while_paused_closes_once_reading_resumes, 0, 2);
  tcase_add_loop_test(tc, appmsg_loop_free_finishes_what_main_asked_for, 0, 2);
  suite_add_tcase(s, tc);
  tc = tcase_create("server");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, server_matrix, 0, 2 * cell_count[F_SERVER]);
  suite_add_tcase(s, tc);
  tc = tcase_create("service");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, service_matrix, 0, 2 * cell_count[F_SERVICE]);
  tcase_add_loop_test(tc, appmsg_service_free_from_a_handler_of_a_service_on_its_own_loop_stops_it,
                      0, 2);
  suite_add_tcase(s, tc);
  tc = tcase_create("client");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, client_matrix, 0, 2 * cell_count[F_CLIENT]);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
