/*
 * The framed connection and the server, over real sockets: socketpairs
 * fed one byte at a time, pipelined frames, large content, framing errors
 * and their replies, half-close, truncation, resets, timeouts, the output
 * cap, the connection limit and the drain.  Every test runs on both loop
 * backends (the test cases "epoll" and "poll" make the loop in their
 * fixture) and is bounded in time: every wait for an event ends when it
 * comes, or after TU_EVENT_MS when it never does.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32 /* Unix socket pairs, SIGPIPE, SIOCOUTQ: POSIX's (Linux's) */
#include <fcntl.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "appmsg/conn.h"
#include "appmsg/net.h"
#include "appmsg/server.h"
#include "platform.h"
#include "testutil.h"

#ifdef _WIN32
#define SHUT_WR SD_SEND /* shutdown()'s sending side, as Winsock names it */
#endif

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

/* The fixture: a loop on one backend, default options, a binary header. */
static void setup(enum appmsg_loop_backend backend) {
  ck_assert_int_eq(appmsg_loop_new(&loop, backend), 0);
  appmsg_conn_opts_default(&opts);
  appmsg_header_init(&hdr);
  ck_assert_int_eq(appmsg_header_set(&hdr, "binary/x", "binary"), 0);
#ifndef _WIN32 /* (no SIGPIPE on Windows) */
  signal(SIGPIPE, SIG_IGN);
#endif
}

static void setup_epoll(void) {
  setup(TU_LOOP_EPOLL);
}

static void setup_poll(void) {
  setup(APPMSG_LOOP_POLL);
}

static void teardown(void) {
  appmsg_loop_free(loop);
  appmsg_header_cleanup(&hdr);
}

/* Runs the loop until *flag becomes non-zero, or TU_EVENT_MS pass. */
static void run_until(const int *flag) {
  uint64_t end = appmsg_loop_now(loop) + TU_EVENT_MS;
  appmsg_loop_run_once(loop, 0);
  while (!*flag && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 10);
}

/* A connected pair: sv[0] for the connection under test, sv[1] the test's end.  On Windows a
 * loopback TCP pair, sv[1] left non-blocking: a write that does not fit must not hang the
 * suite, which no per-test timeout bounds there. */
static void pair(appmsg_socket_t sv[2]) {
#ifndef _WIN32
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
#else
  ck_assert_int_eq(tu_socketpair(sv), 0);
#endif
}

static size_t make_frame(unsigned char *out, const void *content, size_t len) {
  long n = appmsg_frame_head(&hdr, len, out, 512);
  ck_assert_int_gt(n, 0);
  memcpy(out + n, content, len);
  return (size_t)n + len;
}

/* Reads once what fd holds, waiting up to ms for it: the byte count, 0 at
 * EOF, a negative value when nothing came in time (or on a read error). */
static ssize_t read_once(appmsg_socket_t fd, struct tu_str *into, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (appmsg__poll(&p, 1, ms) <= 0)
    return -1;
  char buf[65536];
  ssize_t r = appmsg_recv(fd, buf, sizeof buf);
  if (r > 0)
    tu_str_add(into, buf, (size_t)r);
  return r;
}

/* Reads what fd holds now, without waiting. */
static void read_ready(appmsg_socket_t fd, struct tu_str *into) {
  (void)read_once(fd, into, 0);
}

/* Runs the loop and reads fd until want more bytes came, or EOF, or
 * TU_EVENT_MS passed; returns how many came. */
static size_t read_some(appmsg_socket_t fd, struct tu_str *into, size_t want) {
  size_t before = into->len;
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (into->len - before < want && tu_now_ms() < end) {
    if (read_once(fd, into, 0) == 0)
      break;
    appmsg_loop_run_once(loop, 5);
  }
  return into->len - before;
}

/* Runs the loop and reads fd to the end of the stream: 1 when the EOF came
 * within TU_EVENT_MS, else 0. */
static int read_to_eof(appmsg_socket_t fd, struct tu_str *into) {
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (tu_now_ms() < end) {
    if (read_once(fd, into, 0) == 0)
      return 1;
    appmsg_loop_run_once(loop, 5);
  }
  return 0;
}

/* Runs the loop until the server holds n connections, or TU_EVENT_MS pass. */
static void run_until_conns(struct appmsg_server *srv, size_t n) {
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (appmsg_server_conn_count(srv) != n && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 5);
}

/* Runs the loop until everything written on the TCP socket fd has reached the
 * other end (nothing left unacknowledged), then once more so that the other
 * end, in this loop, reads it.  peer is that end's connection. */
static void run_until_delivered(appmsg_socket_t fd, struct appmsg_conn *peer) {
#ifndef _WIN32
  (void)peer;
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  int queued = 1;
  while (ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0 && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 5);
  ck_assert_int_eq(queued, 0);
  appmsg_loop_run_once(loop, 0);
#else
  /* No SIOCOUTQ: seen from the other end instead - the bytes are there (its socket is
     readable), then the loop runs until its connection has read them all. */
  (void)fd;
  appmsg_socket_t s = appmsg_conn_fd(peer);
  struct pollfd p = {.fd = s, .events = POLLIN};
  ck_assert_int_eq(appmsg__poll(&p, 1, TU_EVENT_MS), 1);
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  size_t queued = 1;
  while (appmsg__sock_pending(s, &queued) == 0 && queued > 0 && tu_now_ms() < end)
    appmsg_loop_run_once(loop, 5);
  ck_assert_uint_eq(queued, 0);
#endif
}

/* The connections a server accepted, in order. */
static struct appmsg_conn *accepted[8];
static int naccepted;

static void on_accept(struct appmsg_server *srv, struct appmsg_conn *c, void *ud) {
  (void)srv;
  (void)ud;
  if (naccepted < 8)
    accepted[naccepted++] = c;
}

static const struct appmsg_server_callbacks srv_cbs = {.on_accept = on_accept};

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

START_TEST(a_frame_fed_one_byte_at_a_time_decodes) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {.echo = 1};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "hello, one byte at a time", 25);
  for (size_t k = 0; k < n; k++) {
    ck_assert_int_eq(appmsg_send(sv[1], frame + k, 1), 1);
    appmsg_loop_run_once(loop, 0);
  }
  run_until(&s.messages);
  ck_assert_int_eq(s.messages, 1);
  struct tu_str back = {0};
  read_some(sv[1], &back, n);
  ck_assert_uint_eq(back.len, n);
  ck_assert_mem_eq(back.p, frame, n);
  tu_close(sv[1]);
  run_until(&s.closes);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, 0);
  ck_assert_int_eq(s.eofs, 1);
  tu_str_free(&back);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(pipelined_frames_are_all_answered_in_order_after_a_half_close) {
  appmsg_socket_t sv[2];
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
    ssize_t w = appmsg_send(sv[1], all.p + off, all.len - off);
    if (w > 0)
      off += (size_t)w;
    appmsg_loop_run_once(loop, 0);
  }
  shutdown(sv[1], SHUT_WR); /* half-close: every reply must still come */
  struct tu_str back = {0};
  for (int k = 0; k < 400 && !s.closes; k++) {
    appmsg_loop_run_once(loop, 5);
    read_ready(sv[1], &back);
  }
  ck_assert(read_to_eof(sv[1], &back));
  ck_assert_int_eq(s.messages, 500);
  ck_assert_uint_eq(s.content.len, want.len);
  ck_assert_mem_eq(s.content.p, want.p, want.len);
  ck_assert_uint_eq(back.len, all.len);
  ck_assert_mem_eq(back.p, all.p, all.len);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, 0);
  tu_close(sv[1]);
  tu_str_free(&all);
  tu_str_free(&want);
  tu_str_free(&back);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(a_16_mib_frame_arrives_whole) {
  opts.limits.max_content_length = 16u << 20;
  appmsg_socket_t sv[2];
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
    ssize_t w = appmsg_send(sv[1], big + off, total - off);
    if (w > 0)
      off += (size_t)w;
    appmsg_loop_run_once(loop, 0);
  }
  run_until(&s.messages);
  ck_assert_int_eq(s.messages, 1);
  ck_assert_uint_eq(s.content.len, len);
  ck_assert(memcmp(s.content.p, big + hl, len) == 0);
  tu_close(sv[1]);
  run_until(&s.closes);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, 0);
  free(big);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(a_framing_error_gets_a_reply_then_the_connection_closes) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {.echo = 1};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  /* A good frame, then an HTTP request, then more bytes that must be ignored. */
  unsigned char frame[600];
  size_t n = make_frame(frame, "ok", 2);
  ck_assert_int_eq(appmsg_send(sv[1], frame, n), (ssize_t)n);
  const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ck_assert_int_eq(appmsg_send(sv[1], http, strlen(http)), (ssize_t)strlen(http));
  struct tu_str back = {0};
  for (int k = 0; k < 300 && !s.closes; k++) {
    appmsg_loop_run_once(loop, 5);
    read_ready(sv[1], &back);
    if (s.errors)
      shutdown(sv[1], SHUT_WR); /* lets the server's linger end */
  }
  ck_assert(read_to_eof(sv[1], &back));
  ck_assert_int_eq(s.messages, 1);
  ck_assert_int_eq(s.errors, 1);
  ck_assert_int_eq(s.last_error, APPMSG_E_HEADER_NOT_OBJECT);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, APPMSG_E_HEADER_NOT_OBJECT);
  int json_replies = 0;
  ck_assert_int_eq(count_frames(&back, &json_replies), 2); /* the echo, then the error */
  ck_assert_int_eq(json_replies, 1);
  ck_assert_ptr_nonnull(tu_memmem(back.p, back.len, "HEADER_NOT_OBJECT", 17));
  ck_assert_ptr_nonnull(tu_memmem(back.p, back.len, "HTTP request", 12));
  tu_close(sv[1]);
  tu_str_free(&back);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(a_frame_cut_short_by_eof_is_truncated) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "0123456789", 10);
  ck_assert_int_eq(appmsg_send(sv[1], frame, n - 3), (ssize_t)(n - 3));
  shutdown(sv[1], SHUT_WR);
  run_until(&s.closes);
  ck_assert_int_eq(s.errors, 1);
  ck_assert_int_eq(s.last_error, APPMSG_E_TRUNCATED);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, APPMSG_E_TRUNCATED);
  struct tu_str back = {0};
  ck_assert(read_to_eof(sv[1], &back));
  ck_assert_ptr_nonnull(tu_memmem(back.p, back.len, "TRUNCATED", 9));
  tu_close(sv[1]);
  tu_str_free(&back);
}
END_TEST

START_TEST(idle_and_stalled_connections_time_out) {
  opts.idle_timeout_ms = 100;
  opts.frame_timeout_ms = 100;
  appmsg_socket_t a[2], b[2];
  pair(a);
  pair(b);
  struct seen idle = {0}, stalled = {0};
  struct appmsg_conn *c1, *c2;
  ck_assert_int_eq(appmsg_conn_new(&c1, loop, a[0], &opts, &cbs, &idle), 0);
  ck_assert_int_eq(appmsg_conn_new(&c2, loop, b[0], &opts, &cbs, &stalled), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "0123456789", 10);
  ck_assert_int_eq(appmsg_send(b[1], frame, n / 2), (ssize_t)(n / 2));
  uint64_t t0 = appmsg_loop_now(loop);
  /* Each is closed after its timeout and the linger for our EOF, which never comes. */
  while (!(idle.closes && stalled.closes) && appmsg_loop_now(loop) < t0 + TU_EVENT_MS)
    appmsg_loop_run_once(loop, 10);
  ck_assert_int_eq(idle.closes, 1);
  ck_assert_int_eq(idle.close_reason, APPMSG_E_TIMEOUT);
  ck_assert_int_eq(idle.errors, 0); /* idle: closed without an error reply */
  ck_assert_int_eq(stalled.closes, 1);
  ck_assert_int_eq(stalled.errors, 1);
  ck_assert_int_eq(stalled.last_error, APPMSG_E_TIMEOUT);
  ck_assert_uint_ge(appmsg_loop_now(loop) - t0, 90);
  struct tu_str back = {0};
  ck_assert(read_to_eof(b[1], &back));
  ck_assert_ptr_nonnull(tu_memmem(back.p, back.len, "TIMEOUT", 7));
  tu_close(a[1]);
  tu_close(b[1]);
  tu_str_free(&back);
}
END_TEST

/* A peer that sends requests and never reads the replies stops being
 * read, then is cut off. */
START_TEST(a_peer_that_never_reads_is_paused_then_cut_off) {
  opts.read_pause = 64 * 1024;
  opts.max_output = 256 * 1024;
  opts.frame_timeout_ms = 300;
  appmsg_socket_t sv[2];
  pair(sv);
  int small = 4096;
  appmsg__sock_setint(sv[0], SOL_SOCKET, SO_SNDBUF, small);
  appmsg__sock_setint(sv[1], SOL_SOCKET, SO_RCVBUF, small);
  struct seen s = {.reply_size = 32 * 1024};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  appmsg_set_nonblock(sv[1], 1);
  unsigned char frame[600];
  size_t n = make_frame(frame, "give me 32 KiB", 14);
  size_t sent = 0; /* bytes */
  for (int k = 0; k < 2000 && !s.closes; k++) {
    ssize_t w = appmsg_send(sv[1], frame + sent % n, n - sent % n);
    if (w > 0)
      sent += (size_t)w;
    appmsg_loop_run_once(loop, 2);
  }
  run_until(&s.closes);
  ck_assert_int_eq(s.closes, 1);
  /* Cut off when its output passed max_output, or stopped moving for the frame timeout:
     whichever comes first depends on how much each read took in. */
  ck_assert_msg(s.close_reason == APPMSG_E_OUTPUT_FULL || s.close_reason == APPMSG_E_TIMEOUT,
                "reason %s", appmsg_errname(s.close_reason));
  /* Reading paused: requests were left unread. */
  ck_assert_uint_lt((size_t)s.messages, sent / n);
  tu_close(sv[1]);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(abort_and_close_work_inside_callbacks) {
  appmsg_socket_t a[2], b[2];
  pair(a);
  pair(b);
  struct seen s1 = {.abort_in_message = 1}, s2 = {.echo = 1, .close_in_message = 1};
  struct appmsg_conn *c1, *c2;
  ck_assert_int_eq(appmsg_conn_new(&c1, loop, a[0], &opts, &cbs, &s1), 0);
  ck_assert_int_eq(appmsg_conn_new(&c2, loop, b[0], &opts, &cbs, &s2), 0);
  unsigned char two[1200];
  size_t n = make_frame(two, "one", 3);
  n += make_frame(two + n, "two", 3);
  ck_assert_int_eq(appmsg_send(a[1], two, n), (ssize_t)n);
  ck_assert_int_eq(appmsg_send(b[1], two, n), (ssize_t)n);
  run_until(&s1.closes);
  ck_assert_int_eq(s1.messages, 1); /* the second frame is never delivered */
  ck_assert_int_eq(s1.close_reason, APPMSG_E_CLOSED);
  /* close() after the first: its reply is sent, the second is not read. */
  struct tu_str back = {0};
  for (int k = 0; k < 100 && !s2.closes; k++) {
    appmsg_loop_run_once(loop, 5);
    read_ready(b[1], &back);
    if (back.len)
      shutdown(b[1], SHUT_WR);
  }
  ck_assert_int_eq(s2.messages, 1);
  ck_assert_int_eq(s2.closes, 1);
  ck_assert_int_eq(s2.close_reason, 0);
  ck_assert_int_eq(count_frames(&back, NULL), 1);
  tu_close(a[1]);
  tu_close(b[1]);
  tu_str_free(&back);
  tu_str_free(&s1.content);
  tu_str_free(&s2.content);
}
END_TEST

START_TEST(raw_mode_passes_bytes_through) {
  opts.raw = 1;
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &raw_cbs, &s), 0);
  const char *m = "Message 1 from client.Message 2 from client.";
  ck_assert_int_eq(appmsg_send(sv[1], m, 44), 44);
  struct tu_str back = {0};
  for (int k = 0; k < 200 && back.len < 44; k++) {
    appmsg_loop_run_once(loop, 5);
    read_ready(sv[1], &back);
  }
  ck_assert_uint_eq(back.len, 44);
  ck_assert_mem_eq(back.p, m, 44);
  tu_close(sv[1]);
  run_until(&s.closes);
  ck_assert_int_eq(s.close_reason, 0);
  tu_str_free(&back);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(a_refused_connect_and_a_reset_end_the_connection) {
  /* Refused: a port that is bound but not listening, held until the end, so that no other
     process can take it meanwhile. */
  char port[16];
  appmsg_socket_t holder = tu_refused_port(port, sizeof port);
  struct seen s = {0};
  struct appmsg_conn *c;
  int rc = appmsg_conn_connect(&c, loop, "127.0.0.1", port, &opts, &cbs, &s, NULL, 0);
  if (rc == 0) {
    run_until(&s.closes);
    ck_assert_int_eq(s.connects, 1);
    ck_assert_int_eq(s.connect_err, -ECONNREFUSED);
    ck_assert_int_eq(s.close_reason, -ECONNREFUSED);
  } else {
    ck_assert_int_eq(rc, -ECONNREFUSED);
  }
  tu_close(holder);
  /* Reset: the peer closes with SO_LINGER 0 right after a request. */
  appmsg_socket_t lfd;
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 16, &lfd, NULL, 0), 0);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  appmsg_socket_t cfd;
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &cfd, NULL, 0), 0);
  struct pollfd lp = {.fd = lfd, .events = POLLIN};
  ck_assert_int_eq(appmsg__poll(&lp, 1, TU_EVENT_MS), 1);
  appmsg_socket_t afd = APPMSG_INVALID_SOCKET;
  ck_assert_int_eq(appmsg_accept(lfd, &afd), 0);
  struct seen r = {.echo = 1};
  ck_assert_int_eq(appmsg_conn_new(&c, loop, afd, &opts, &cbs, &r), 0);
  unsigned char frame[600];
  size_t n = make_frame(frame, "bye", 3);
  ck_assert_int_eq(appmsg_send(cfd, frame, n), (ssize_t)n);
  struct linger lg = {1, 0};
  setsockopt(cfd, SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof lg);
  tu_close(cfd);
  run_until(&r.closes);
  ck_assert_int_eq(r.closes, 1);
  /* Either the request was read and the reply hit the reset, or the reset came first. */
  ck_assert_msg(r.close_reason == -ECONNRESET || r.close_reason == -EPIPE || r.close_reason == 0,
                "reason %s", appmsg_errname(r.close_reason));
  tu_close(lfd);
  tu_str_free(&r.content);
}
END_TEST

/* The server: a limit of 2 connections refuses the third politely; drain
 * closes idle connections and lets a busy one finish. */
START_TEST(the_server_refuses_above_its_limit_and_drains) {
  struct appmsg_server_opts so;
  appmsg_server_opts_default(&so);
  so.max_conns = 2;
  struct seen s = {.echo = 1};
  struct appmsg_server *srv;
  char err[256];
  naccepted = 0;
  ck_assert_int_eq(
      appmsg_server_new(&srv, loop, "127.0.0.1", "0", &so, &cbs, &srv_cbs, &s, err, sizeof err), 0);
  char port[16];
  snprintf(port, sizeof port, "%d", appmsg_sockport(appmsg_server_fd(srv)));
  appmsg_socket_t fds[3];
  for (int k = 0; k < 2; k++) {
    ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &fds[k], NULL, 0), 0);
    run_until_conns(srv, (size_t)k + 1);
  }
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &fds[2], NULL, 0), 0);
  struct tu_str refused = {0};
  ck_assert(read_to_eof(fds[2], &refused)); /* the reply, then the write side shut */
  ck_assert_ptr_nonnull(tu_memmem(refused.p, refused.len, "TOO_MANY_CONNS", 14));
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 2);
  /* Connection 0 is mid-frame when the drain starts; connection 1 is idle. */
  unsigned char frame[600];
  size_t n = make_frame(frame, "last words", 10);
  ck_assert_int_eq(appmsg_send(fds[0], frame, 5), 5);
  ck_assert_int_eq(naccepted, 2);
  run_until_delivered(fds[0], accepted[0]);
  appmsg_server_drain(srv);
  /* The idle one is told at once (EOF), and goes when its peer closes. */
  struct tu_str none = {0};
  ck_assert(read_to_eof(fds[1], &none));
  ck_assert_uint_eq(none.len, 0);
  tu_close(fds[1]);
  fds[1] = APPMSG_INVALID_SOCKET;
  run_until_conns(srv, 1);
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 1);
  ck_assert_int_eq(appmsg_send(fds[0], frame + 5, n - 5), (ssize_t)(n - 5));
  struct tu_str back = {0};
  for (int j = 0; j < 300 && appmsg_server_conn_count(srv) > 0; j++) {
    appmsg_loop_run_once(loop, 5);
    read_ready(fds[0], &back);
    if (back.len >= n)
      shutdown(fds[0], SHUT_WR);
  }
  ck_assert(read_to_eof(fds[0], &back));
  ck_assert_uint_eq(back.len, n);
  ck_assert_mem_eq(back.p, frame, n);
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 0);
  appmsg_server_free(srv);
  tu_close(fds[0]);
  tu_close(fds[2]);
  tu_str_free(&refused);
  tu_str_free(&back);
  tu_str_free(&s.content);
}
END_TEST

START_TEST(error_replies_have_the_shape_the_guides_client_prints) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  ck_assert_int_eq(appmsg_conn_send_error(c, APPMSG_E_CONTENT_TOO_LARGE,
                                          "content-length 5 is \"above\" the limit 4", 2),
                   0);
  ck_assert_int_eq(appmsg_conn_send_error(c, APPMSG_E_CONTENT_JSON, NULL, -1), 0);
  struct tu_str back = {0};
  uint64_t end = tu_now_ms() + TU_EVENT_MS;
  while (count_frames(&back, NULL) < 2 && tu_now_ms() < end) {
    appmsg_loop_run_once(loop, 0); /* sends are written when the loop runs */
    read_once(sv[1], &back, 100);
  }
  ck_assert_int_eq(count_frames(&back, NULL), 2);
  const char *want1 = "{\"result\": \"Error: content-length 5 is \\\"above\\\" the limit 4.\", "
                      "\"error\": \"CONTENT_TOO_LARGE\", \"offset\": 2}";
  const char *want2 = "{\"result\": \"Error: content is not valid JSON.\", \"error\": "
                      "\"CONTENT_JSON\"}";
  ck_assert_ptr_nonnull(tu_memmem(back.p, back.len, want1, strlen(want1)));
  ck_assert_ptr_nonnull(tu_memmem(back.p, back.len, want2, strlen(want2)));
  appmsg_conn_abort(c, 0);
  ck_assert_int_eq(s.closes, 0); /* only marked: the loop finishes it */
  appmsg_loop_run_once(loop, 0);
  ck_assert_int_eq(s.closes, 1);
  tu_close(sv[1]);
  tu_str_free(&back);
}
END_TEST

/* What the close hook saw, and whether on_close had run by then. */
struct hook_seen {
  struct seen *s;
  int calls;
  int reason;
  int closes_before;
};

/* Pauses reading after the first two messages (the owner has too much in hand). */
static void pause_after_message(struct appmsg_conn *c, const struct appmsg_header *h,
                                const void *content, size_t len, void *ud) {
  on_message(c, h, content, len, ud);
  if (((struct seen *)ud)->messages <= 2)
    appmsg_conn_set_reading(c, 0);
}

static const struct appmsg_conn_callbacks pausing_cbs = {
    .on_message = pause_after_message, .on_eof = on_eof, .on_close = on_close};

START_TEST(a_hang_up_while_reading_is_paused_waits_its_turn) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &pausing_cbs, &s), 0);
  unsigned char f[600];
  size_t n = make_frame(f, "one", 3);
  ck_assert_int_eq(appmsg_send(sv[1], f, n), (ssize_t)n);
  run_until(&s.messages);
  ck_assert_int_eq(s.messages, 1); /* and reading is paused now */
  /* Two more frames, then the peer goes: a Unix socket reports a hang-up at once (a TCP one,
   * on Windows, once what came before it is read). */
  n = make_frame(f, "two", 3);
  n += make_frame(f + n, "three", 5);
  ck_assert_int_eq(appmsg_send(sv[1], f, n), (ssize_t)n);
  tu_close(sv[1]);
  /* Paused: nothing is delivered, the connection is not closed, and the loop does not spin on
   * the hang-up it cannot act on yet. */
  int woke = 0;
  for (int i = 0; i < 20; i++)
    woke += appmsg_loop_run_once(loop, 10);
  ck_assert_int_eq(s.messages, 1);
  ck_assert_int_eq(s.closes, 0);
  ck_assert_int_le(woke, 2);
  /* Reading resumes: the rest arrives in order, then the end. */
  appmsg_conn_set_reading(c, 1);
  uint64_t end = appmsg_loop_now(loop) + TU_EVENT_MS;
  while (s.messages < 2 && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 10);
  ck_assert_int_eq(s.messages, 2);
  appmsg_conn_set_reading(c, 1);
  run_until(&s.closes);
  ck_assert_int_eq(s.messages, 3);
  ck_assert_int_eq((int)s.content.len, 11);
  ck_assert_mem_eq(s.content.p, "onetwothree", 11);
  ck_assert_msg(s.eofs == 1 && s.close_reason == 0, "eofs %d, close reason %s", s.eofs,
                appmsg_errname(s.close_reason));
  tu_str_free(&s.content);
}
END_TEST

START_TEST(a_connection_ended_from_outside_finishes_when_the_loop_runs) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  /* A send and an abort from outside every callback: nothing is freed under the caller, who
   * may still look at the connection; its descriptor is given back at once. */
  ck_assert_int_eq(appmsg_conn_send(c, &hdr, "x", 1), 0);
  appmsg_conn_abort(c, APPMSG_E_CLOSED);
  ck_assert(appmsg_conn_fd(c) == APPMSG_INVALID_SOCKET);
  ck_assert_int_eq(appmsg_conn_send(c, &hdr, "y", 1), APPMSG_E_CLOSED);
  appmsg_conn_abort(c, 0);
  appmsg_conn_close(c);
  appmsg_conn_hold(c);
  appmsg_conn_release(c);
  appmsg_conn_set_reading(c, 0);
  ck_assert_int_eq(s.closes, 0);
  appmsg_loop_run_once(loop, 0);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(s.close_reason, APPMSG_E_CLOSED);
  appmsg_loop_run_once(loop, 0);
  ck_assert_int_eq(s.closes, 1);
  tu_close(sv[1]);
}
END_TEST

START_TEST(a_connection_ended_just_before_the_loop_is_freed_still_closes) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  appmsg_conn_abort(c, APPMSG_E_CLOSED);
  appmsg_loop_free(loop); /* finishes it: on_close runs, nothing leaks */
  loop = NULL;
  ck_assert_int_eq(s.closes, 1);
  tu_close(sv[1]);
  ck_assert_int_eq(appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT), 0); /* for the teardown */
}
END_TEST

static void close_hook(struct appmsg_conn *c, int reason, void *arg) {
  (void)c;
  struct hook_seen *h = arg;
  h->calls++;
  h->reason = reason;
  h->closes_before = h->s->closes;
}

START_TEST(close_hook_runs_once_before_on_close_with_its_reason) {
  appmsg_socket_t sv[2];
  pair(sv);
  struct seen s = {0};
  struct hook_seen h = {.s = &s};
  struct appmsg_conn *c;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &opts, &cbs, &s), 0);
  appmsg_conn_set_close_hook(c, close_hook, &h);
  ck_assert_int_eq(appmsg_send(sv[1], "\x00\x05{", 3), 3);
  shutdown(sv[1], SHUT_WR); /* a truncated frame ends it */
  run_until(&s.closes);
  ck_assert_int_eq(s.closes, 1);
  ck_assert_int_eq(h.calls, 1);
  ck_assert_int_eq(h.closes_before, 0);
  ck_assert_int_eq(h.reason, APPMSG_E_TRUNCATED);
  ck_assert_int_eq(s.close_reason, APPMSG_E_TRUNCATED);
  tu_close(sv[1]);
}
END_TEST

/* Every test, on one backend. */
static TCase *backend_case(const char *name, void (*setup_backend)(void)) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup_backend, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, a_frame_fed_one_byte_at_a_time_decodes);
  tcase_add_test(tc, pipelined_frames_are_all_answered_in_order_after_a_half_close);
  tcase_add_test(tc, a_16_mib_frame_arrives_whole);
  tcase_add_test(tc, a_framing_error_gets_a_reply_then_the_connection_closes);
  tcase_add_test(tc, a_frame_cut_short_by_eof_is_truncated);
  tcase_add_test(tc, idle_and_stalled_connections_time_out);
  tcase_add_test(tc, a_peer_that_never_reads_is_paused_then_cut_off);
  tcase_add_test(tc, abort_and_close_work_inside_callbacks);
  tcase_add_test(tc, raw_mode_passes_bytes_through);
  tcase_add_test(tc, a_refused_connect_and_a_reset_end_the_connection);
  tcase_add_test(tc, the_server_refuses_above_its_limit_and_drains);
  tcase_add_test(tc, error_replies_have_the_shape_the_guides_client_prints);
  tcase_add_test(tc, close_hook_runs_once_before_on_close_with_its_reason);
  tcase_add_test(tc, a_hang_up_while_reading_is_paused_waits_its_turn);
  tcase_add_test(tc, a_connection_ended_from_outside_finishes_when_the_loop_runs);
  tcase_add_test(tc, a_connection_ended_just_before_the_loop_is_freed_still_closes);
  return tc;
}

int main(void) {
  Suite *s = suite_create("conn");
  suite_add_tcase(s, backend_case("epoll", setup_epoll));
  suite_add_tcase(s, backend_case("poll", setup_poll));
  return tu_run_suite(s);
}
