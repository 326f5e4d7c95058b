/*
 * The hiredis adapter (appmsg/adapters/hiredis.h) against a small fake
 * Redis served on the same loop (one thread): a connect and 10,000
 * pipelined GETs answered in order, the interest the loop holds at each
 * step (write while connecting or sending, read only once all is sent),
 * a server that closes mid-pipeline (the rest get NULL replies, the socket
 * is forgotten before hiredis closes it), a refused connect, the context
 * freed from inside a reply callback, a Redis that hangs up while idle,
 * a Unix socket, and the attach errors.  Every test runs once per backend:
 * _i 0 is epoll, 1 is poll.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "appmsg/appmsg.h"
#include "appmsg/adapters/hiredis.h"
#include "testutil.h"

static const enum appmsg_loop_backend backends[] = {TU_LOOP_EPOLL, APPMSG_LOOP_POLL};

/* ---- a fake Redis on the loop ----------------------------------------------- */

/* It answers PING with +PONG and GET k with the bulk string "v:k"; after
 * close_after answers (0: never) it closes the connection; silent: it
 * reads and never answers. */
struct fake {
  struct appmsg_loop *loop;
  int lfd;           /* listening */
  int cfd;           /* the one accepted connection, or -1 */
  char in[1 << 16];  /* unparsed input */
  size_t in_len;     /* its length */
  char out[1 << 20]; /* answers not yet written */
  size_t out_len;    /* their length */
  long answered;     /* commands answered */
  long close_after;  /* close after this many answers (0: never) */
  int silent;        /* read, never answer */
  int close_on_hold; /* close as soon as the connection is accepted and idle */
  char path[108];    /* a Unix socket's path, or "" */
  char port[16];     /* the TCP port */
};

static void fake_close(struct fake *f) {
  f->out_len = 0;
  if (f->cfd >= 0) {
    appmsg_loop_unwatch(f->loop, f->cfd);
    close(f->cfd);
    f->cfd = -1;
  }
}

/* The length of the first whole command in f->in (a RESP array of bulk
 * strings), with its arguments in argv/lens; 0 when it is not all there. */
static size_t parse_command(const char *p, size_t n, const char **argv, size_t *lens, int *argc) {
  const char *end = p + n, *q = p;
  if (q == end || *q != '*')
    return 0;
  char *nl;
  long count = strtol(q + 1, &nl, 10);
  if (nl + 2 > end)
    return 0;
  q = nl + 2;
  *argc = 0;
  for (long i = 0; i < count; i++) {
    if (q >= end || *q != '$')
      return 0;
    long len = strtol(q + 1, &nl, 10);
    if (nl + 2 > end || nl + 2 + len + 2 > end)
      return 0;
    if (*argc < 4) {
      argv[*argc] = nl + 2;
      lens[*argc] = (size_t)len;
      (*argc)++;
    }
    q = nl + 2 + len + 2;
  }
  return (size_t)(q - p);
}

static void fake_answer(struct fake *f, const char **argv, const size_t *lens, int argc) {
  char *out = f->out + f->out_len;
  size_t room = sizeof f->out - f->out_len;
  int n;
  if (argc >= 1 && lens[0] == 4 && strncmp(argv[0], "PING", 4) == 0)
    n = snprintf(out, room, "+PONG\r\n");
  else if (argc == 2 && lens[1] < 500)
    n = snprintf(out, room, "$%zu\r\nv:%.*s\r\n", lens[1] + 2, (int)lens[1], argv[1]);
  else
    n = snprintf(out, room, "-ERR unknown\r\n");
  ck_assert_int_lt(n, (int)room);
  f->out_len += (size_t)n;
}

/* Writes what it can of the answers; watches for writability while some are left. */
static void fake_flush(struct fake *f) {
  ssize_t w = f->out_len ? write(f->cfd, f->out, f->out_len) : 0;
  if (w > 0) {
    memmove(f->out, f->out + w, f->out_len - (size_t)w);
    f->out_len -= (size_t)w;
  }
  appmsg_loop_modify(f->loop, f->cfd, APPMSG_EV_READ | (f->out_len ? APPMSG_EV_WRITE : 0));
}

static void fake_on_conn(struct appmsg_loop *loop, int fd, unsigned events, void *ud) {
  (void)loop;
  struct fake *f = ud;
  if (events & APPMSG_EV_WRITE)
    fake_flush(f);
  if (!(events & (APPMSG_EV_READ | APPMSG_EV_HUP | APPMSG_EV_ERROR)) ||
      sizeof f->out - f->out_len < 4096)
    return; /* (no reading while the answers do not fit) */
  ssize_t r = read(fd, f->in + f->in_len, sizeof f->in - f->in_len);
  if (r <= 0) {
    fake_close(f);
    return;
  }
  f->in_len += (size_t)r;
  const char *argv[4];
  size_t lens[4], used, off = 0;
  int argc;
  while ((used = parse_command(f->in + off, f->in_len - off, argv, lens, &argc)) > 0) {
    off += used;
    if (f->silent)
      continue;
    fake_answer(f, argv, lens, argc);
    if (++f->answered == f->close_after) {
      fake_flush(f);
      fake_close(f);
      return;
    }
    if (sizeof f->out - f->out_len < 4096)
      break;
  }
  memmove(f->in, f->in + off, f->in_len - off);
  f->in_len -= off;
  fake_flush(f);
}

static void fake_on_listen(struct appmsg_loop *loop, int fd, unsigned events, void *ud) {
  (void)events;
  struct fake *f = ud;
  int cfd;
  if (appmsg_accept(fd, &cfd) != 0)
    return;
  ck_assert_int_lt(f->cfd, 0); /* one client per test */
  f->cfd = cfd;
  if (f->close_on_hold) {
    fake_close(f);
    return;
  }
  ck_assert_int_eq(appmsg_loop_watch(loop, cfd, APPMSG_EV_READ, fake_on_conn, f), 0);
}

static void fake_start(struct fake *f, struct appmsg_loop *loop, int unix_socket) {
  memset(f, 0, sizeof *f);
  f->loop = loop;
  f->cfd = -1;
  char err[APPMSG_NET_ERRLEN], host[140];
  if (unix_socket) {
    snprintf(f->path, sizeof f->path, "/tmp/appmsg-test-hiredis-%ld.sock", (long)getpid());
    snprintf(host, sizeof host, "unix:%s", f->path);
  } else {
    snprintf(host, sizeof host, "127.0.0.1");
  }
  ck_assert_msg(appmsg_listen(host, "0", 16, &f->lfd, err, sizeof err) == 0, "%s", err);
  snprintf(f->port, sizeof f->port, "%d", unix_socket ? 0 : appmsg_sockport(f->lfd));
  ck_assert_int_eq(appmsg_loop_watch(loop, f->lfd, APPMSG_EV_READ, fake_on_listen, f), 0);
}

static void fake_stop(struct fake *f) {
  fake_close(f);
  appmsg_loop_unwatch(f->loop, f->lfd);
  close(f->lfd);
  if (f->path[0])
    unlink(f->path);
}

/* ---- the client side ---------------------------------------------------------------- */

#define MAX_CMDS 10000

static struct {
  int connected;      /* onConnect status + 1, 0 before */
  int disconnected;   /* onDisconnect status + 1, 0 before */
  long replies;       /* reply callbacks run */
  long nulls;         /* of which with a NULL reply */
  long wrong;         /* replies that were not "v:KEY" */
  long free_at;       /* redisAsyncFree() from the reply callback numbered this (0: never) */
  int events_in_disc; /* appmsg_loop_events() of the socket, seen in onDisconnect */
  int fd;             /* the context's socket */
  struct appmsg_loop *loop;
} seen;

static void on_connect(const redisAsyncContext *ac, int status) {
  (void)ac;
  seen.connected = status + 2; /* REDIS_OK 0 -> 2, REDIS_ERR -1 -> 1 */
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  (void)ac;
  seen.disconnected = status + 2;
  seen.events_in_disc = appmsg_loop_events(seen.loop, seen.fd);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  long i = (long)(intptr_t)privdata;
  redisReply *r = reply;
  seen.replies++;
  if (r == NULL) {
    seen.nulls++;
  } else {
    char want[32];
    snprintf(want, sizeof want, "v:k%ld", i);
    if (r->type != REDIS_REPLY_STRING || strcmp(r->str, want) != 0)
      seen.wrong++;
  }
  if (seen.replies == seen.free_at)
    redisAsyncFree(ac); /* from inside a callback the loop called */
}

/* Runs the loop until done() or 10 s (then fails). */
static void run_until(struct appmsg_loop *loop, int (*done)(void)) {
  uint64_t end = appmsg_loop_now(loop) + 10000;
  while (!done()) {
    ck_assert_msg(appmsg_loop_now(loop) < end, "timed out");
    ck_assert_int_ge(appmsg_loop_run_once(loop, 100), 0);
  }
}

static long want_replies;
static int all_replied(void) {
  return seen.replies >= want_replies;
}
static int disconnected(void) {
  return seen.disconnected != 0;
}
static int connect_failed(void) {
  return seen.connected == 1;
}

static struct appmsg_loop *setup(int i) {
  memset(&seen, 0, sizeof seen);
  struct appmsg_loop *loop = NULL;
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[i]), 0);
  seen.loop = loop;
  return loop;
}

static redisAsyncContext *connect_to(struct appmsg_loop *loop, const struct fake *f) {
  redisAsyncContext *ac =
      f->path[0] ? redisAsyncConnectUnix(f->path) : redisAsyncConnect("127.0.0.1", atoi(f->port));
  ck_assert_ptr_nonnull(ac);
  ck_assert_msg(ac->err == 0, "%s", ac->errstr);
  ck_assert_int_eq(appmsg_hiredis_attach(loop, ac), 0);
  seen.fd = (int)ac->c.fd;
  ck_assert_int_eq(redisAsyncSetConnectCallback(ac, on_connect), REDIS_OK);
  ck_assert_int_eq(redisAsyncSetDisconnectCallback(ac, on_disconnect), REDIS_OK);
  return ac;
}

static void send_gets(redisAsyncContext *ac, long n) {
  for (long k = 0; k < n; k++) {
    char key[32];
    snprintf(key, sizeof key, "k%ld", k);
    ck_assert_int_eq(redisAsyncCommand(ac, on_reply, (void *)(intptr_t)k, "GET %s", key), REDIS_OK);
  }
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(ten_thousand_pipelined_gets_are_answered_in_order) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  redisAsyncContext *ac = connect_to(loop, &f);
  /* Connecting: the loop watches for writability (the connect's outcome). */
  ck_assert_int_eq(appmsg_loop_events(loop, seen.fd), APPMSG_EV_WRITE);
  send_gets(ac, MAX_CMDS);
  want_replies = MAX_CMDS;
  run_until(loop, all_replied);
  ck_assert_int_eq(seen.connected, 2);
  ck_assert_int_eq(seen.nulls, 0);
  ck_assert_int_eq(seen.wrong, 0);
  ck_assert_int_eq(f.answered, MAX_CMDS);
  /* All sent and answered: read interest only. */
  ck_assert_int_eq(appmsg_loop_events(loop, seen.fd), APPMSG_EV_READ);
  ck_assert_int_eq(appmsg_hiredis_error(ac), 0);
  /* A command from outside the loop's callback asks for writing at once. */
  send_gets(ac, 1);
  ck_assert_int_eq(appmsg_loop_events(loop, seen.fd), APPMSG_EV_READ | APPMSG_EV_WRITE);
  want_replies = MAX_CMDS + 1;
  run_until(loop, all_replied);
  /* Freed by the program: the socket is forgotten, nothing else stays. */
  redisAsyncFree(ac);
  ck_assert_int_eq(seen.disconnected, 2); /* REDIS_OK */
  ck_assert_int_eq(seen.events_in_disc, -ENOENT);
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

START_TEST(a_server_that_closes_mid_pipeline_gives_null_replies_and_is_forgotten) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  f.close_after = 3;
  redisAsyncContext *ac = connect_to(loop, &f);
  send_gets(ac, 10);
  run_until(loop, disconnected);
  ck_assert_int_eq(seen.disconnected, 1); /* REDIS_ERR */
  ck_assert_int_eq(seen.replies, 10);
  ck_assert_int_eq(seen.nulls, 7);
  ck_assert_int_eq(seen.wrong, 0);
  ck_assert_int_eq(seen.events_in_disc, -ENOENT); /* unwatched before hiredis closed it */
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

START_TEST(a_hang_up_while_idle_is_noticed_at_once) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  redisAsyncContext *ac = connect_to(loop, &f);
  send_gets(ac, 1);
  want_replies = 1;
  run_until(loop, all_replied);
  fake_close(&f); /* nothing pending: only the end of stream tells */
  run_until(loop, disconnected);
  ck_assert_int_eq(seen.disconnected, 1);
  ck_assert_int_eq(seen.nulls, 0);
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

START_TEST(a_refused_connect_fails_its_commands_and_leaves_nothing) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  int port = atoi(f.port);
  fake_stop(&f); /* nothing listens there now */
  redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", port);
  ck_assert_ptr_nonnull(ac);
  if (ac->err) { /* refused at once: there is no socket to attach */
    ck_assert_int_eq(appmsg_hiredis_attach(loop, ac), -EBADF);
    redisAsyncFree(ac);
  } else {
    ck_assert_int_eq(appmsg_hiredis_attach(loop, ac), 0);
    seen.fd = (int)ac->c.fd;
    redisAsyncSetConnectCallback(ac, on_connect);
    send_gets(ac, 5);
    run_until(loop, connect_failed);
    ck_assert_int_eq(seen.nulls, 5);
  }
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

START_TEST(freeing_the_context_from_a_reply_callback_is_safe) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  redisAsyncContext *ac = connect_to(loop, &f);
  seen.free_at = 2;
  send_gets(ac, 100);
  want_replies = 100;
  run_until(loop, all_replied); /* 2 replies, then 98 NULLs as the context goes */
  ck_assert_int_eq(seen.nulls, 98);
  ck_assert_int_eq(seen.wrong, 0);
  ck_assert_int_eq(seen.disconnected, 2);
  ck_assert_int_eq(seen.events_in_disc, -ENOENT);
  /* Let the fake see the end of stream, then nothing is left. */
  for (int k = 0; k < 50 && f.cfd >= 0; k++)
    appmsg_loop_run_once(loop, 100);
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

START_TEST(a_unix_socket_works_the_same) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 1);
  redisAsyncContext *ac = connect_to(loop, &f);
  send_gets(ac, 1000);
  want_replies = 1000;
  run_until(loop, all_replied);
  ck_assert_int_eq(seen.nulls, 0);
  ck_assert_int_eq(seen.wrong, 0);
  redisAsyncFree(ac);
  ck_assert_int_eq(appmsg_loop_events(loop, seen.fd), -ENOENT);
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

START_TEST(a_silent_server_leaves_commands_waiting_until_the_program_frees_the_context) {
  /* hiredis 0.14 has no timeouts: the program's own timer ends the wait. */
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  f.silent = 1;
  redisAsyncContext *ac = connect_to(loop, &f);
  send_gets(ac, 10);
  for (int k = 0; k < 5; k++)
    appmsg_loop_run_once(loop, 20);
  ck_assert_int_eq(seen.replies, 0);
  redisAsyncFree(ac);
  ck_assert_int_eq(seen.nulls, 10);
  for (int k = 0; k < 50 && f.cfd >= 0; k++)
    appmsg_loop_run_once(loop, 100);
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

#if HIREDIS_MAJOR >= 1
START_TEST(hiredis_timeouts_run_on_the_loops_timers) {
  /* hiredis 1.x bounds commands itself (redisAsyncSetTimeout) through the
   * adapter's timer: a silent server's commands fail in time. */
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  f.silent = 1;
  redisAsyncContext *ac = connect_to(loop, &f);
  struct timeval tv = {0, 200000};
  ck_assert_int_eq(redisAsyncSetTimeout(ac, tv), REDIS_OK);
  send_gets(ac, 3);
  uint64_t t0 = appmsg_loop_now(loop);
  run_until(loop, disconnected);
  ck_assert_int_ge(appmsg_loop_now(loop) - t0, 150);
  ck_assert_int_eq(seen.nulls, 3);
  for (int k = 0; k < 50 && f.cfd >= 0; k++)
    appmsg_loop_run_once(loop, 100);
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST
#endif

START_TEST(attach_refuses_bad_arguments_and_a_second_attach) {
  struct appmsg_loop *loop = setup(_i);
  struct fake f;
  fake_start(&f, loop, 0);
  redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", atoi(f.port));
  ck_assert_ptr_nonnull(ac);
  ck_assert_int_eq(appmsg_hiredis_attach(NULL, ac), -EINVAL);
  ck_assert_int_eq(appmsg_hiredis_attach(loop, NULL), -EINVAL);
  ck_assert_int_eq(appmsg_hiredis_attach(loop, ac), 0);
  ck_assert_int_eq(appmsg_hiredis_attach(loop, ac), -EEXIST);
  seen.fd = (int)ac->c.fd;
  redisAsyncFree(ac);
  ck_assert_int_eq(appmsg_loop_events(loop, seen.fd), -ENOENT);
  for (int k = 0; k < 50; k++) /* the fake may accept, then see the end of stream */
    if (appmsg_loop_run_once(loop, 20) == 0)
      break;
  fake_stop(&f);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  appmsg_loop_free(loop);
}
END_TEST

int main(void) {
  Suite *s = suite_create("hiredis adapter");
  TCase *tc = tcase_create("adapter");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, ten_thousand_pipelined_gets_are_answered_in_order, 0, 2);
  tcase_add_loop_test(tc, a_server_that_closes_mid_pipeline_gives_null_replies_and_is_forgotten, 0,
                      2);
  tcase_add_loop_test(tc, a_hang_up_while_idle_is_noticed_at_once, 0, 2);
  tcase_add_loop_test(tc, a_refused_connect_fails_its_commands_and_leaves_nothing, 0, 2);
  tcase_add_loop_test(tc, freeing_the_context_from_a_reply_callback_is_safe, 0, 2);
  tcase_add_loop_test(tc, a_unix_socket_works_the_same, 0, 2);
  tcase_add_loop_test(
      tc, a_silent_server_leaves_commands_waiting_until_the_program_frees_the_context, 0, 2);
  tcase_add_loop_test(tc, attach_refuses_bad_arguments_and_a_second_attach, 0, 2);
#if HIREDIS_MAJOR >= 1
  tcase_add_loop_test(tc, hiredis_timeouts_run_on_the_loops_timers, 0, 2);
#endif
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
