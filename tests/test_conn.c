/*
 * The framed connection and the server, over real sockets: socketpairs
 * fed one byte at a time, pipelined frames, large content, framing errors
 * and their replies, half-close, truncation, resets, timeouts, the output
 * cap, the connection limit and the drain.  Every test runs on both loop
 * backends (_i: 0 epoll, 1 poll) and is bounded in time.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appmsg/conn.h"
#include "appmsg/net.h"
#include "appmsg/server.h"
#include "testutil.h"

static const enum appmsg_loop_backend backends[] = {APPMSG_LOOP_EPOLL, APPMSG_LOOP_POLL};

/* What the callbacks saw. */
struct seen {
  int messages;
  int errors;
  int closes;
  int eofs;
  int connects;
  int last_error;
  int close_reason;
  int connect_err;
  size_t last_len;
  struct tu_str content; /* all content received, concatenated */
  int echo;              /* reply to each message with its content */
  int abort_in_message;  /* abort from inside on_message */
  int close_in_message;  /* close from inside on_message */
  size_t reply_size;     /* reply with this many bytes instead (0: echo) */
};

static struct appmsg_header hdr;

static void on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  struct seen *s = ud;
  (void)h;
  s->messages++;
  s->last_len = len;
  tu_str_add(&s->content, content, len);
  if (s->abort_in_message) {
    appmsg_conn_abort(c, APPMSG_E_CLOSED);
    ck_assert_int_eq(appmsg_conn_send(c, &hdr, "x", 1), APPMSG_E_CLOSED);
    return;
  }
  if (s->reply_size) {
    char *big = calloc(1, s->reply_size);
    appmsg_conn_send(c, &hdr, big, s->reply_size);
    free(big);
  } else if (s->echo) {
    ck_assert_int_eq(appmsg_conn_send(c, &hdr, content, len), 0);
  }
  if (s->close_in_message)
    appmsg_conn_close(c);
}

static void on_data(struct appmsg_conn *c, const void *data, size_t len, void *ud) {
  struct seen *s = ud;
  tu_str_add(&s->content, data, len);
  appmsg_conn_send_raw(c, data, len);
}

static void on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t off, void *ud) {
  struct seen *s = ud;
  s->errors++;
  s->last_error = err;
  appmsg_conn_send_error(c, err, reason, (long long)off);
}

static void on_eof(struct appmsg_conn *c, void *ud) {
  (void)c;
  ((struct seen *)ud)->eofs++;
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  (void)c;
  struct seen *s = ud;
  s->closes++;
  s->close_reason = reason;
}

static void on_connect(struct appmsg_conn *c, int err, void *ud) {
  (void)c;
  struct seen *s = ud;
  s->connects++;
  s->connect_err = err;
}

static const struct appmsg_conn_callbacks cbs = {.on_message = on_message,
                                                 .on_error = on_error,
                                                 .on_eof = on_eof,
                                                 .on_close = on_close,
                                                 .on_connect = on_connect};
static const struct appmsg_conn_callbacks raw_cbs = {.on_data = on_data, .on_close = on_close};

static struct appmsg_loop *loop;
static struct appmsg_conn_opts opts;

static void setup(int i) {
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[i]), 0);
  appmsg_conn_opts_default(&opts);
  appmsg_header_init(&hdr);
  appmsg_header_set(&hdr, "binary/x", "binary");
  signal(SIGPIPE, SIG_IGN);
}

static void teardown(void) {
  appmsg_loop_free(loop);
  appmsg_header_cleanup(&hdr);
}

/* Runs the loop until *flag becomes non-zero or ms pass. */
static void run_until(const int *flag, int ms) {
  uint64_t end = appmsg_loop_now(loop) + (uint64_t)ms;
  appmsg_loop_run_once(loop, 0);
  while (!*flag && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 10);
}

static void pair(int sv[2]) {
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static size_t make_frame(unsigned char *out, const void *content, size_t len) {
  long n = appmsg_frame_head(&hdr, len, out, 512);
  ck_assert_int_gt(n, 0);
  memcpy(out + n, content, len);
  return (size_t)n + len;
}

/* Reads from a blocking-ish fd until n bytes or EOF or timeout. */
static size_t read_some(int fd, struct tu_str *into, size_t want, int ms) {
  size_t got = 0;
  while (got < want) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0)
      break;
    char buf[65536];
    ssize_t r = read(fd, buf, sizeof buf);
    if (r <= 0)
      break;
    tu_str_add(into, buf, (size_t)r);
    got += (size_t)r;
  }
  return got;
}

/* Decodes every frame in bytes; returns how many, checks they are clean. */
static int count_frames(const struct tu_str *bytes, int *errors_seen) {
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  int n = 0;
  for (size_t off = 0, used; off < bytes->len; off += used) {
    enum appmsg_status st = appmsg_decoder_feed(&d, bytes->p + off, bytes->len - off, &used);
    if (st == APPMSG_MESSAGE) {
      n++;
      if (errors_seen && strcmp(appmsg_decoder_header(&d)->content_type, "text/json") == 0)
        (*errors_seen)++;
    }
    ck_assert_int_ne(st, APPMSG_ERROR);
  }
  appmsg_decoder_cleanup(&d);
  return n;
}

START_TEST(one_byte_at_a_time) {
  setup(_i);
  int sv[2];
  pair(sv);
  struct seen s = {.echo = 1};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "hello, one byte at a time", 25);
  for (size_t k = 0; k < n; k++) {
    ck_assert_int_eq(write(sv[1], frame + k, 1), 1);
    appmsg_loop_run_once(loop, 0);
  }
  run_until(&s.messages, 2000);
  ck_assert_int_eq(s.messages, 1);
  struct tu_str back = {0};
  read_some(sv[1], &back, n, 2000);
  ck_assert_uint_eq(back.len, n);
  ck_assert_mem_eq(back.p, frame, n);
  close(sv[1]);
  run_until(&s.closes, 2000);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, 0);
  ck_assert_int_eq(s.eofs, 1);
  tu_str_free(&back);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(pipelined_frames_in_order) {
  setup(_i);
  int sv[2];
  pair(sv);
  struct seen s = {.echo = 1};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  struct tu_str all = {0}, want = {0};
  for (int k = 0; k < 500; k++) {
    unsigned char frame[600];
    char body[32];
    int bl = snprintf(body, sizeof body, "request %d", k);
    size_t n = make_frame(frame, body, (size_t)bl);
    tu_str_add(&all, frame, n);
    tu_str_add(&want, body, (size_t)bl);
  }
  /* One write holds them all (the socketpair buffer may split it). */
  size_t off = 0;
  while (off < all.len) {
    ssize_t w = write(sv[1], all.p + off, all.len - off);
    if (w > 0)
      off += (size_t)w;
    appmsg_loop_run_once(loop, 0);
  }
  shutdown(sv[1], SHUT_WR); /* half-close: every reply must still come */
  struct tu_str back = {0};
  for (int k = 0; k < 400 && !s.closes; k++) {
    appmsg_loop_run_once(loop, 5);
    read_some(sv[1], &back, 1, 0);
  }
  read_some(sv[1], &back, all.len, 1000);
  ck_assert_int_eq(s.messages, 500);
  ck_assert_uint_eq(s.content.len, want.len);
  ck_assert_mem_eq(s.content.p, want.p, want.len);
  ck_assert_uint_eq(back.len, all.len);
  ck_assert_mem_eq(back.p, all.p, all.len);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, 0);
  close(sv[1]);
  tu_str_free(&all);
  tu_str_free(&want);
  tu_str_free(&back);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(large_content) {
  setup(_i);
  opts.limits.max_content_length = 16u << 20;
  int sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  size_t len = 16u << 20;
  unsigned char *big = malloc(len + 512);
  unsigned char head[512];
  long hl = appmsg_frame_head(&hdr, len, head, sizeof head);
  memcpy(big, head, (size_t)hl);
  for (size_t k = 0; k < len; k++)
    big[hl + (long)k] = (unsigned char)(k * 2654435761u >> 13);
  size_t total = (size_t)hl + len, off = 0;
  appmsg_set_nonblock(sv[1], 1);
  for (int guard = 0; off < total && guard < 1000000; guard++) {
    ssize_t w = write(sv[1], big + off, total - off);
    if (w > 0)
      off += (size_t)w;
    appmsg_loop_run_once(loop, 0);
  }
  run_until(&s.messages, 5000);
  ck_assert_int_eq(s.messages, 1);
  ck_assert_uint_eq(s.content.len, len);
  ck_assert(memcmp(s.content.p, big + hl, len) == 0);
  close(sv[1]);
  run_until(&s.closes, 2000);
  free(big);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(framing_error_gets_reply_then_close) {
  setup(_i);
  int sv[2];
  pair(sv);
  struct seen s = {.echo = 1};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  /* A good frame, then an HTTP request, then more bytes that must be ignored. */
  unsigned char frame[600];
  size_t n = make_frame(frame, "ok", 2);
  ck_assert_int_eq(write(sv[1], frame, n), (ssize_t)n);
  const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ck_assert_int_eq(write(sv[1], http, strlen(http)), (ssize_t)strlen(http));
  struct tu_str back = {0};
  for (int k = 0; k < 300 && !s.closes; k++) {
    appmsg_loop_run_once(loop, 5);
    read_some(sv[1], &back, 1, 0);
    if (s.errors)
      shutdown(sv[1], SHUT_WR); /* lets the server's linger end */
  }
  read_some(sv[1], &back, 1 << 20, 200);
  ck_assert_int_eq(s.messages, 1);
  ck_assert_int_eq(s.errors, 1);
  ck_assert_int_eq(s.last_error, APPMSG_E_HEADER_NOT_OBJECT);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, APPMSG_E_HEADER_NOT_OBJECT);
  int json_replies = 0;
  ck_assert_int_eq(count_frames(&back, &json_replies), 2); /* the echo, then the error */
  ck_assert_int_eq(json_replies, 1);
  ck_assert_ptr_nonnull(memmem(back.p, back.len, "HEADER_NOT_OBJECT", 17));
  ck_assert_ptr_nonnull(memmem(back.p, back.len, "HTTP request", 12));
  close(sv[1]);
  tu_str_free(&back);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(truncated_frame) {
  setup(_i);
  int sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "0123456789", 10);
  ck_assert_int_eq(write(sv[1], frame, n - 3), (ssize_t)(n - 3));
  shutdown(sv[1], SHUT_WR);
  run_until(&s.closes, 3000);
  ck_assert_int_eq(s.errors, 1);
  ck_assert_int_eq(s.last_error, APPMSG_E_TRUNCATED);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, APPMSG_E_TRUNCATED);
  struct tu_str back = {0};
  read_some(sv[1], &back, 1 << 16, 500);
  ck_assert_ptr_nonnull(memmem(back.p, back.len, "TRUNCATED", 9));
  close(sv[1]);
  tu_str_free(&back);
  teardown();
}
END_TEST

START_TEST(idle_and_frame_timeouts) {
  setup(_i);
  opts.idle_timeout_ms = 100;
  opts.frame_timeout_ms = 100;
  int a[2], b[2];
  pair(a);
  pair(b);
  struct seen idle = {0}, stalled = {0};
  struct appmsg_conn *c1, *c2;
  ck_assert_int_eq(appmsg_conn_new(&c1, loop, a[0], &opts, &cbs, &idle), 0);
  ck_assert_int_eq(appmsg_conn_new(&c2, loop, b[0], &opts, &cbs, &stalled), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "0123456789", 10);
  ck_assert_int_eq(write(b[1], frame, n / 2), (ssize_t)(n / 2));
  uint64_t t0 = appmsg_loop_now(loop);
  for (int k = 0; k < 300 && !(idle.closes && stalled.closes); k++)
    appmsg_loop_run_once(loop, 10);
  ck_assert_int_eq(idle.closes, 1);
  ck_assert_int_eq(idle.close_reason, APPMSG_E_TIMEOUT);
  ck_assert_int_eq(idle.errors, 0); /* idle: closed without an error reply */
  ck_assert_int_eq(stalled.closes, 1);
  ck_assert_int_eq(stalled.errors, 1);
  ck_assert_int_eq(stalled.last_error, APPMSG_E_TIMEOUT);
  ck_assert_uint_ge(appmsg_loop_now(loop) - t0, 90);
  struct tu_str back = {0};
  read_some(b[1], &back, 1 << 16, 200);
  ck_assert_ptr_nonnull(memmem(back.p, back.len, "TIMEOUT", 7));
  close(a[1]);
  close(b[1]);
  tu_str_free(&back);
  teardown();
}
END_TEST

/* A peer that sends requests and never reads the replies stops being
 * read, then is cut off. */
START_TEST(output_cap) {
  setup(_i);
  opts.read_pause = 64 * 1024;
  opts.max_output = 256 * 1024;
  opts.frame_timeout_ms = 300;
  int sv[2];
  pair(sv);
  int small = 4096;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct seen s = {.reply_size = 32 * 1024};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  appmsg_set_nonblock(sv[1], 1);
  unsigned char frame[600];
  size_t n = make_frame(frame, "give me 32 KiB", 14);
  for (int k = 0; k < 2000 && !s.closes; k++) {
    (void)!write(sv[1], frame, n);
    appmsg_loop_run_once(loop, 2);
  }
  run_until(&s.closes, 3000);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_msg(s.close_reason == APPMSG_E_OUTPUT_FULL || s.close_reason == APPMSG_E_TIMEOUT,
                "reason %s", appmsg_errname(s.close_reason));
  /* Reading paused: far fewer requests were served than were sent. */
  ck_assert_int_lt(s.messages, 2000);
  close(sv[1]);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(abort_and_close_inside_callbacks) {
  setup(_i);
  int a[2], b[2];
  pair(a);
  pair(b);
  struct seen s1 = {.abort_in_message = 1}, s2 = {.echo = 1, .close_in_message = 1};
  struct appmsg_conn *c1, *c2;
  ck_assert_int_eq(appmsg_conn_new(&c1, loop, a[0], &opts, &cbs, &s1), 0);
  ck_assert_int_eq(appmsg_conn_new(&c2, loop, b[0], &opts, &cbs, &s2), 0);
  unsigned char two[1200];
  size_t n = make_frame(two, "one", 3);
  n += make_frame(two + n, "two", 3);
  ck_assert_int_eq(write(a[1], two, n), (ssize_t)n);
  ck_assert_int_eq(write(b[1], two, n), (ssize_t)n);
  run_until(&s1.closes, 2000);
  ck_assert_int_eq(s1.messages, 1); /* the second frame is never delivered */
  ck_assert_int_eq(s1.close_reason, APPMSG_E_CLOSED);
  /* close() after the first: its reply is sent, the second is not read. */
  struct tu_str back = {0};
  for (int k = 0; k < 100 && !s2.closes; k++) {
    appmsg_loop_run_once(loop, 5);
    read_some(b[1], &back, 1, 0);
    if (back.len)
      shutdown(b[1], SHUT_WR);
  }
  ck_assert_int_eq(s2.messages, 1);
  ck_assert_int_eq(s2.closes, 1);
  ck_assert_int_eq(s2.close_reason, 0);
  ck_assert_int_eq(count_frames(&back, NULL), 1);
  close(a[1]);
  close(b[1]);
  tu_str_free(&back);
  tu_str_free(&s1.content);
  tu_str_free(&s2.content);
  teardown();
}
END_TEST

START_TEST(raw_mode_echo) {
  setup(_i);
  opts.raw = 1;
  int sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &raw_cbs, &s), 0);
  const char *m = "Message 1 from client.Message 2 from client.";
  ck_assert_int_eq(write(sv[1], m, 44), 44);
  struct tu_str back = {0};
  for (int k = 0; k < 200 && back.len < 44; k++) {
    appmsg_loop_run_once(loop, 5);
    read_some(sv[1], &back, 44, 0);
  }
  ck_assert_uint_eq(back.len, 44);
  ck_assert_mem_eq(back.p, m, 44);
  close(sv[1]);
  run_until(&s.closes, 2000);
  ck_assert_int_eq(s.close_reason, 0);
  tu_str_free(&back);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(connect_refused_and_reset) {
  setup(_i);
  /* Refused: a port nobody listens on (bind one, close it). */
  int lfd;
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 16, &lfd, NULL, 0), 0);
  char port[16];
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  close(lfd);
  struct seen s = {0};
  struct appmsg_conn *c;
  int rc = appmsg_conn_connect(&c, loop, "127.0.0.1", port, &opts, &cbs, &s, NULL, 0);
  if (rc == 0) {
    run_until(&s.closes, 2000);
    ck_assert_int_eq(s.connects, 1);
    ck_assert_int_eq(s.connect_err, -ECONNREFUSED);
    ck_assert_int_eq(s.close_reason, -ECONNREFUSED);
  } else {
    ck_assert_int_eq(rc, -ECONNREFUSED);
  }
  /* Reset: the peer closes with SO_LINGER 0 right after a request. */
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 16, &lfd, NULL, 0), 0);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  int cfd;
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, 2000, &cfd, NULL, 0), 0);
  int afd = -1;
  for (int k = 0; k < 200 && afd < 0; k++)
    if (appmsg_accept(lfd, &afd) != 0)
      usleep(1000);
  ck_assert_int_ge(afd, 0);
  struct seen r = {.echo = 1};
  ck_assert_int_eq(appmsg_conn_new(&c, loop, afd, &opts, &cbs, &r), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "bye", 3);
  ck_assert_int_eq(write(cfd, frame, n), (ssize_t)n);
  struct linger lg = {1, 0};
  setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(cfd);
  run_until(&r.closes, 2000);
  ck_assert_int_eq(r.closes, 1);
  /* Either the request was read and the reply hit the reset, or the reset came first. */
  ck_assert_msg(r.close_reason == -ECONNRESET || r.close_reason == -EPIPE || r.close_reason == 0,
                "reason %s", appmsg_errname(r.close_reason));
  close(lfd);
  tu_str_free(&r.content);
  teardown();
}
END_TEST

/* The server: a limit of 2 connections refuses the third politely; drain
 * closes idle connections and lets a busy one finish. */
START_TEST(server_limit_and_drain) {
  setup(_i);
  struct appmsg_server_opts so;
  appmsg_server_opts_default(&so);
  so.max_conns = 2;
  struct seen s = {.echo = 1};
  struct appmsg_server *srv;
  char err[256];
  ck_assert_int_eq(
      appmsg_server_new(&srv, loop, "127.0.0.1", "0", &so, &cbs, NULL, &s, err, sizeof err), 0);
  char port[16];
  snprintf(port, sizeof port, "%d", appmsg_sockport(appmsg_server_fd(srv)));
  int fds[3];
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, 2000, &fds[k], NULL, 0), 0);
    for (int j = 0; j < 20; j++)
      appmsg_loop_run_once(loop, 5);
  }
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 2);
  struct tu_str refused = {0};
  read_some(fds[2], &refused, 1 << 16, 1000);
  ck_assert_ptr_nonnull(memmem(refused.p, refused.len, "TOO_MANY_CONNS", 14));
  /* Connection 0 is mid-frame when the drain starts; connection 1 is idle. */
  unsigned char frame[600];
  size_t n = make_frame(frame, "last words", 10);
  ck_assert_int_eq(write(fds[0], frame, 5), 5);
  for (int j = 0; j < 10; j++)
    appmsg_loop_run_once(loop, 2);
  appmsg_server_drain(srv);
  for (int j = 0; j < 20; j++)
    appmsg_loop_run_once(loop, 2);
  /* The idle one is told at once (EOF), and goes when its peer closes. */
  struct tu_str none = {0};
  ck_assert_uint_eq(read_some(fds[1], &none, 1, 1000), 0);
  close(fds[1]);
  fds[1] = -1;
  for (int j = 0; j < 20; j++)
    appmsg_loop_run_once(loop, 2);
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 1);
  ck_assert_int_eq(write(fds[0], frame + 5, n - 5), (ssize_t)(n - 5));
  struct tu_str back = {0};
  for (int j = 0; j < 300 && appmsg_server_conn_count(srv) > 0; j++) {
    appmsg_loop_run_once(loop, 5);
    read_some(fds[0], &back, 1, 0);
    if (back.len >= n)
      shutdown(fds[0], SHUT_WR);
  }
  read_some(fds[0], &back, n, 500);
  ck_assert_uint_eq(back.len, n);
  ck_assert_mem_eq(back.p, frame, n);
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 0);
  appmsg_server_free(srv);
  close(fds[0]);
  close(fds[2]);
  tu_str_free(&refused);
  tu_str_free(&back);
  tu_str_free(&s.content);
  teardown();
}
END_TEST

START_TEST(send_error_shape) {
  setup(_i);
  int sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  ck_assert_int_eq(appmsg_conn_send_error(c, APPMSG_E_CONTENT_TOO_LARGE,
                                          "content-length 5 is \"above\" the limit 4", 2),
                   0);
  ck_assert_int_eq(appmsg_conn_send_error(c, APPMSG_E_CONTENT_JSON, NULL, -1), 0);
  struct tu_str back = {0};
  read_some(sv[1], &back, 1 << 16, 300);
  const char *want1 = "{\"result\": \"Error: content-length 5 is \\\"above\\\" the limit 4.\", "
                      "\"error\": \"CONTENT_TOO_LARGE\", \"offset\": 2}";
  const char *want2 = "{\"result\": \"Error: content is not valid JSON.\", \"error\": "
                      "\"CONTENT_JSON\"}";
  ck_assert_ptr_nonnull(memmem(back.p, back.len, want1, strlen(want1)));
  ck_assert_ptr_nonnull(memmem(back.p, back.len, want2, strlen(want2)));
  appmsg_conn_abort(c, 0);
  ck_assert_int_eq(s.closes, 1);
  close(sv[1]);
  tu_str_free(&back);
  teardown();
}
END_TEST

/* What the close hook saw, and whether on_close had run by then. */
struct hook_seen {
  struct seen *s;
  int calls;
  int reason;
  int closes_before;
};

static void close_hook(struct appmsg_conn *c, int reason, void *arg) {
  (void)c;
  struct hook_seen *h = arg;
  h->calls++;
  h->reason = reason;
  h->closes_before = h->s->closes;
}

START_TEST(close_hook_runs_once_before_on_close_with_its_reason) {
  setup(_i);
  int sv[2];
  pair(sv);
  struct seen s = {0};
  struct hook_seen h = {.s = &s};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  appmsg_conn_set_close_hook(c, close_hook, &h);
  ck_assert_int_eq(write(sv[1], "\x00\x05{", 3), 3);
  shutdown(sv[1], SHUT_WR); /* a truncated frame ends it */
  run_until(&s.closes, 3000);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(h.calls, 1);
  ck_assert_int_eq(h.closes_before, 0);
  ck_assert_int_eq(h.reason, APPMSG_E_TRUNCATED);
  ck_assert_int_eq(s.close_reason, APPMSG_E_TRUNCATED);
  close(sv[1]);
  teardown();
}
END_TEST

int main(void) {
  Suite *s = suite_create("conn");
  TCase *tc = tcase_create("conn");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, one_byte_at_a_time, 0, 2);
  tcase_add_loop_test(tc, pipelined_frames_in_order, 0, 2);
  tcase_add_loop_test(tc, large_content, 0, 2);
  tcase_add_loop_test(tc, framing_error_gets_reply_then_close, 0, 2);
  tcase_add_loop_test(tc, truncated_frame, 0, 2);
  tcase_add_loop_test(tc, idle_and_frame_timeouts, 0, 2);
  tcase_add_loop_test(tc, output_cap, 0, 2);
  tcase_add_loop_test(tc, abort_and_close_inside_callbacks, 0, 2);
  tcase_add_loop_test(tc, raw_mode_echo, 0, 2);
  tcase_add_loop_test(tc, connect_refused_and_reset, 0, 2);
  tcase_add_loop_test(tc, server_limit_and_drain, 0, 2);
  tcase_add_loop_test(tc, send_error_shape, 0, 2);
  tcase_add_loop_test(tc, close_hook_runs_once_before_on_close_with_its_reason, 0, 2);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
