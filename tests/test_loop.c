/*
 * The event loop: readiness, interest changes, watch changes from inside
 * callbacks, timers, stopping (from a callback and from a signal) and
 * EINTR.  Every test but the first runs once per backend: the test cases
 * "epoll" and "poll" make the loop in their fixture.  On Windows the pairs
 * are loopback TCP pairs, the sockets handles (the loop maps them to its
 * slots), the signals console events, and nothing interrupts a wait.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef _WIN32 /* descriptor numbers, rlimits, fork, signals and interval timers: POSIX's */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "appmsg/error.h"
#include "appmsg/loop.h"
#include "appmsg/net.h"
#include "platform.h"
#include "testutil.h"
#ifdef _WIN32
#include "loop_backend.h" /* the loop's wake-up channel, which its console handler writes to */
#endif

/* The loop under test and its backend, made by the test case's fixture. */
static struct appmsg_loop *loop;
static enum appmsg_loop_backend backend;

static void make_loop(enum appmsg_loop_backend b, const char *name) {
  backend = b;
  ck_assert_int_eq(appmsg_loop_new(&loop, b), 0);
  ck_assert_str_eq(appmsg_loop_backend_name(loop), name);
}

static void setup_epoll(void) {
#if APPMSG_HAVE_EPOLL
  make_loop(APPMSG_LOOP_EPOLL, "epoll");
#else
  /* A build without epoll says so, and the suite runs on poll a second time. */
  ck_assert_int_eq(appmsg_loop_new(&loop, APPMSG_LOOP_EPOLL), -ENOSYS);
  ck_assert_ptr_null(loop);
  make_loop(APPMSG_LOOP_POLL, "poll");
#endif
}

static void setup_poll(void) {
  make_loop(APPMSG_LOOP_POLL, "poll");
}

static void teardown(void) {
  appmsg_loop_free(loop);
  loop = NULL;
}

/* A connected non-blocking pair (a Unix pair on POSIX, a loopback TCP pair on Windows). */
static void make_pair(appmsg_socket_t sv[2]) {
  int rc = tu_socketpair(sv);
  if (rc < 0)
    ck_abort_msg("socketpair: %s", appmsg_strerror(rc));
}

/* Closes a pair.  On Windows, a loopback TCP pair, it is reset (SO_LINGER 0) rather than closed
 * in order: thousands of pairs closed in order would leave as many ports in TIME_WAIT, and the
 * next runs (and every other program on the machine) short of ports for a minute. */
static void close_pair(appmsg_socket_t sv[2]) {
#ifdef _WIN32
  struct linger lg = {1, 0};
  (void)setsockopt(sv[0], SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof lg);
#endif
  tu_close(sv[0]);
  tu_close(sv[1]);
}

/* What an I/O callback saw. */
struct seen {
  int calls;
  unsigned last;
  appmsg_socket_t fd;
};

static void on_io(struct appmsg_loop *lp, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)lp;
  struct seen *s = ud;
  s->calls++;
  s->last = events;
  s->fd = fd;
}

/* Runs iterations until want callbacks ran (a wait may return only part of the ready fds). */
static int run_until(int want) {
  int total = 0;
  for (uint64_t end = tu_now_ms() + TU_EVENT_MS; total < want && tu_now_ms() < end;) {
    int n = appmsg_loop_run_once(loop, TU_EVENT_MS);
    ck_assert_int_ge(n, 0);
    total += n;
  }
  return total;
}

/* Reads what is there, so the fd stops being ready. */
static void on_drain(struct appmsg_loop *lp, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)lp;
  char buf[64];
  on_io(lp, fd, events, ud);
  while (appmsg_recv(fd, buf, sizeof buf) > 0)
    ;
}

/* ---- backend selection --------------------------------------------------- */

START_TEST(the_backend_comes_from_the_argument_or_the_environment) {
  struct appmsg_loop *l;
  const char *old = getenv("APPMSG_LOOP_BACKEND");
  char *saved = old ? strdup(old) : NULL;
  tu_setenv("APPMSG_LOOP_BACKEND", "poll");
  ck_assert_int_eq(appmsg_loop_new(&l, APPMSG_LOOP_DEFAULT), 0);
  ck_assert_str_eq(appmsg_loop_backend_name(l), "poll");
  appmsg_loop_free(l);
  tu_setenv("APPMSG_LOOP_BACKEND", "EPOLL");
#if APPMSG_HAVE_EPOLL
  ck_assert_int_eq(appmsg_loop_new(&l, APPMSG_LOOP_DEFAULT), 0);
  ck_assert_str_eq(appmsg_loop_backend_name(l), "epoll");
  appmsg_loop_free(l);
#else
  ck_assert_int_eq(appmsg_loop_new(&l, APPMSG_LOOP_DEFAULT), -ENOSYS);
#endif
  tu_setenv("APPMSG_LOOP_BACKEND", "select");
  ck_assert_int_eq(appmsg_loop_new(&l, APPMSG_LOOP_DEFAULT), -EINVAL);
  ck_assert_ptr_null(l);
  tu_setenv("APPMSG_LOOP_BACKEND", NULL);
  ck_assert_int_eq(appmsg_loop_new(&l, APPMSG_LOOP_DEFAULT), 0);
  ck_assert_str_eq(appmsg_loop_backend_name(l), APPMSG_HAVE_EPOLL ? "epoll" : "poll");
  appmsg_loop_free(l);
  ck_assert_int_eq(appmsg_loop_new(&l, (enum appmsg_loop_backend)42), -EINVAL);
  if (saved) {
    tu_setenv("APPMSG_LOOP_BACKEND", saved);
    free(saved);
  }
  appmsg_loop_free(NULL);
}
END_TEST

/* ---- readiness ------------------------------------------------------------ */

START_TEST(readiness_is_reported_for_the_interest_only) {
  appmsg_socket_t sv[2];
  make_pair(sv);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_WRITE, on_io, &s), 0);
  ck_assert_int_eq(appmsg_loop_events(loop, sv[0]), APPMSG_EV_WRITE);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_WRITE);
  ck_assert(s.fd == sv[0]);

  /* Level-triggered: reported again while still writable. */
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 1);
  ck_assert_int_eq(s.calls, 2);

  /* Read interest only, nothing to read: no call. */
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], APPMSG_EV_READ), 0);
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], APPMSG_EV_READ), 0); /* no-op */
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
  ck_assert_int_eq(s.calls, 2);

  ck_assert_int_eq(appmsg_send(sv[1], "x", 1), 1);
  ck_assert_int_eq(appmsg_loop_run_once(loop, TU_EVENT_MS), 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_READ);

  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], APPMSG_EV_READ | APPMSG_EV_WRITE), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_READ | APPMSG_EV_WRITE);

  /* Empty interest: readable data is not reported. */
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], 0), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
  ck_assert_int_eq(appmsg_loop_unwatch(loop, sv[0]), 0);
  ck_assert_int_eq(appmsg_loop_events(loop, sv[0]), -ENOENT);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  close_pair(sv);
}
END_TEST

START_TEST(a_full_socket_is_reported_writable_once_drained) {
  appmsg_socket_t sv[2];
  make_pair(sv);
  char buf[65536];
  memset(buf, 'z', sizeof buf);
  ssize_t w;
  while ((w = appmsg_send(sv[0], buf, sizeof buf)) > 0)
    ;
  ck_assert_int_eq(w, -EAGAIN);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_WRITE, on_io, &s), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 20), 0);
  /* Drained until it is writable: a Unix pair is at once; over TCP (Windows) what the sender
     still holds moves over as the reader makes room, a window at a time. */
  for (uint64_t end = tu_now_ms() + TU_EVENT_MS; s.calls == 0 && tu_now_ms() < end;) {
    while (appmsg_recv(sv[1], buf, sizeof buf) > 0)
      ;
    ck_assert_int_ge(appmsg_loop_run_once(loop, 10), 0);
  }
  ck_assert_int_eq(s.calls, 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_WRITE);
  appmsg_loop_unwatch(loop, sv[0]);
  close_pair(sv);
}
END_TEST

/* A writer waiting for room towards a peer that has finished sending (a half-close) but does not
 * read is not woken: nothing is ready for it.  (WSAPoll() says POLLHUP there, which the
 * Windows layer must not pass on as a hang-up: the loop would spin.) */
START_TEST(a_writer_waiting_on_a_half_closed_peer_is_not_woken) {
  appmsg_socket_t sv[2];
  make_pair(sv);
  char buf[65536];
  memset(buf, 'h', sizeof buf);
  ssize_t w;
  while ((w = appmsg_send(sv[0], buf, sizeof buf)) > 0)
    ;
  ck_assert_int_eq(w, -EAGAIN);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_WRITE, on_io, &s), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
  appmsg__sock_shutdown_write(sv[1]);
  /* Half a second of waits of 50 ms: about ten of them, and no callback. */
  int waits = 0;
  for (uint64_t end = tu_now_ms() + 500; tu_now_ms() < end; waits++)
    ck_assert_int_ge(appmsg_loop_run_once(loop, 50), 0);
  ck_assert_msg(s.calls == 0, "%d callbacks (events 0x%x) in %d waits", s.calls, s.last, waits);
  ck_assert_int_le(waits, 20);
  appmsg_loop_unwatch(loop, sv[0]);
  close_pair(sv);
}
END_TEST

START_TEST(a_hangup_is_reported_whatever_the_interest) {
  appmsg_socket_t sv[2];
  make_pair(sv);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], 0, on_io, &s), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
#ifdef _WIN32
  /* Windows (select()) sees a hang-up only by reading: with no interest nothing comes; with
   * read interest the end of the stream is readable. */
  tu_close(sv[1]);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 200), 0);
  ck_assert_int_eq(s.calls, 0);
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], APPMSG_EV_READ), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, TU_EVENT_MS), 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_READ);
  char c;
  ck_assert_int_eq(appmsg_recv(sv[0], &c, 1), 0);
#else
  tu_close(sv[1]);
  ck_assert_int_eq(appmsg_loop_run_once(loop, TU_EVENT_MS), 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_HUP);
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], APPMSG_EV_READ), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 1);
  ck_assert_uint_eq(s.last, APPMSG_EV_READ | APPMSG_EV_HUP);
#endif
  appmsg_loop_unwatch(loop, sv[0]);
  tu_close(sv[0]);
}
END_TEST

START_TEST(bad_watches_are_refused) {
  appmsg_socket_t sv[2];
  make_pair(sv);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_loop_watch(loop, APPMSG_INVALID_SOCKET, APPMSG_EV_READ, on_io, &s),
                   -EBADF);
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_READ, NULL, &s), -EINVAL);
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], 0x40, on_io, &s), -EINVAL);
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_READ, on_io, &s), 0);
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_READ, on_io, &s), -EEXIST);
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[0], 0x40), -EINVAL);
  ck_assert_int_eq(appmsg_loop_modify(loop, sv[1], APPMSG_EV_READ), -ENOENT);
  ck_assert_int_eq(appmsg_loop_unwatch(loop, sv[1]), -ENOENT);
  ck_assert_int_eq(appmsg_loop_unwatch(loop, 100000), -ENOENT);
  ck_assert_int_eq(appmsg_loop_alive(loop), 1);
  /* Closing before unwatching is tolerated by unwatch. */
  tu_close(sv[0]);
  ck_assert_int_eq(appmsg_loop_unwatch(loop, sv[0]), 0);
  /* (No epoll on Windows, nor files to give it.) */
#ifndef _WIN32
  if (backend == APPMSG_LOOP_EPOLL) { /* epoll cannot watch regular files */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(appmsg_loop_watch(loop, fd, APPMSG_EV_READ, on_io, &s), -EPERM);
    ck_assert_int_eq(appmsg_loop_events(loop, fd), -ENOENT);
    close(fd);
  }
#endif
  tu_close(sv[1]);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
}
END_TEST

/* ---- changing watches from inside callbacks --------------------------------- */

struct killer {
  struct appmsg_loop *loop;
  appmsg_socket_t *victim; /* the other pair's fd, to unwatch and close */
  appmsg_socket_t spare;   /* a readable fd to dup2() onto the victim's number */
  int *kills;              /* shared count of killer callbacks */
  appmsg_socket_t *who;    /* the fd whose killer callback ran */
  struct seen *reborn;
  appmsg_socket_t *reborn_fd; /* the new socket's fd */
};

#ifdef _WIN32
/* A second handle for spare's socket, with victim's value: Windows (and Wine) hand a freed
 * handle value out again at once, so the first duplicate takes it - unless the system took it
 * meanwhile, when a few more are tried.  Returns the handle it got, victim's or else the first
 * other one (the rest closed): a watch made on it takes the victim's slot all the same. */
static appmsg_socket_t dup_onto(appmsg_socket_t spare, appmsg_socket_t victim) {
  appmsg_socket_t got[8];
  int n = 0;
  while (n < 8) {
    ck_assert_int_eq(appmsg_socket_dup(spare, &got[n]), 0);
    if (got[n++] == victim)
      break;
  }
  appmsg_socket_t d = got[n - 1] == victim ? victim : got[0];
  for (int i = 0; i < n; i++)
    if (got[i] != d)
      tu_close(got[i]);
  return d;
}
#endif

static void on_kill_other(struct appmsg_loop *lp, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)events;
  struct killer *k = ud;
  (*k->kills)++;
  *k->who = fd;
  appmsg_socket_t victim = *k->victim;
  ck_assert_int_eq(appmsg_loop_unwatch(lp, victim), 0);
  tu_close(victim);
  /* Reuse the number for a new, readable socket with another callback. */
#ifndef _WIN32
  ck_assert_int_eq(dup2(k->spare, victim), victim);
  *k->reborn_fd = victim;
#else /* (handles: no dup2(), the system picks the value) */
  *k->reborn_fd = dup_onto(k->spare, victim);
#endif
  ck_assert_int_eq(appmsg_loop_watch(lp, *k->reborn_fd, APPMSG_EV_READ, on_io, k->reborn), 0);
}

START_TEST(a_callback_may_close_another_ready_fd_and_reuse_its_number) {
  appmsg_socket_t a[2], b[2], spare[2];
  make_pair(a);
  make_pair(b);
  make_pair(spare);
  ck_assert_int_eq(appmsg_send(a[1], "a", 1), 1);
  ck_assert_int_eq(appmsg_send(b[1], "b", 1), 1);
  ck_assert_int_eq(appmsg_send(spare[1], "s", 1), 1);
  /* (Over TCP the bytes take a moment: all three are there before the loop waits, so that
     both killers are ready at the same wait and the reborn socket is readable.) */
  for (uint64_t end = tu_now_ms() + TU_EVENT_MS; tu_now_ms() < end;) {
    struct pollfd p[3] = {{.fd = a[0], .events = POLLIN},
                          {.fd = b[0], .events = POLLIN},
                          {.fd = spare[0], .events = POLLIN}};
    if (appmsg__poll(p, 3, 10) == 3)
      break;
  }
  int kills = 0;
  appmsg_socket_t survivor = APPMSG_INVALID_SOCKET, reborn_fd = APPMSG_INVALID_SOCKET;
  struct seen reborn = {0};
  struct killer ka = {loop, &b[0], spare[0], &kills, &survivor, &reborn, &reborn_fd};
  struct killer kb = {loop, &a[0], spare[0], &kills, &survivor, &reborn, &reborn_fd};
  ck_assert_int_eq(appmsg_loop_watch(loop, a[0], APPMSG_EV_READ, on_kill_other, &ka), 0);
  ck_assert_int_eq(appmsg_loop_watch(loop, b[0], APPMSG_EV_READ, on_kill_other, &kb), 0);
  /* Both are ready; whichever runs first kills the other, whose stale
     readiness - now for a new socket with the same number - must be dropped. */
  ck_assert_int_eq(appmsg_loop_run_once(loop, TU_EVENT_MS), 1);
  ck_assert_int_eq(kills, 1);
  ck_assert_int_eq(reborn.calls, 0);
  /* The survivor: unwatch it so that only the reborn fd is left. */
  ck_assert(survivor == a[0] || survivor == b[0]);
  appmsg_socket_t victim = survivor == a[0] ? b[0] : a[0];
#ifndef _WIN32
  ck_assert(reborn_fd == victim);
#endif
  ck_assert_int_eq(appmsg_loop_unwatch(loop, survivor), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, TU_EVENT_MS), 1);
  ck_assert_int_eq(reborn.calls, 1);
  ck_assert(reborn.fd == reborn_fd);
  ck_assert_int_eq(appmsg_loop_unwatch(loop, reborn_fd), 0);
  if (reborn_fd != victim)
    tu_close(reborn_fd); /* (else closed as the victim's number below) */
  close_pair(a);
  close_pair(b);
  close_pair(spare);
}
END_TEST

/* Marks which fds were reported; counts each fd once.  (A list, not a table indexed by fd:
 * Windows' handles are not small numbers.) */
struct marks {
  appmsg_socket_t hit[256]; /* the distinct fds reported */
  int distinct;
};

static int marked(const struct marks *m, appmsg_socket_t fd) {
  for (int i = 0; i < m->distinct; i++)
    if (m->hit[i] == fd)
      return 1;
  return 0;
}

static void on_mark(struct appmsg_loop *lp, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)lp;
  (void)events;
  struct marks *m = ud;
  if (!marked(m, fd)) {
    ck_assert_int_lt(m->distinct, 256);
    m->hit[m->distinct++] = fd;
  }
}

/* Runs iterations until m->distinct reaches want (or TU_EVENT_MS pass). */
static int run_until_marked(struct marks *m, int want) {
  for (uint64_t end = tu_now_ms() + TU_EVENT_MS; m->distinct < want && tu_now_ms() < end;)
    ck_assert_int_ge(appmsg_loop_run_once(loop, TU_EVENT_MS), 0);
  return m->distinct;
}

struct adder {
  appmsg_socket_t src;      /* a readable fd to dup */
  appmsg_socket_t fds[200]; /* the duplicates, watched from the callback */
  int n;
  struct marks added;
};

static void on_add_many(struct appmsg_loop *lp, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)events;
  struct adder *ad = ud;
  ck_assert_int_eq(appmsg_loop_unwatch(lp, fd), 0);
  /* Enough watches, at high enough numbers, to regrow every table mid-dispatch (on Windows,
     where the system picks the handles, the slots and the map from handles to them). */
  for (ad->n = 0; ad->n < 200; ad->n++) {
#ifndef _WIN32
    int d = fcntl(ad->src, F_DUPFD_CLOEXEC, 1000 + 3 * ad->n);
    ck_assert_int_ge(d, 0);
#else
    appmsg_socket_t d;
    ck_assert_int_eq(appmsg_socket_dup(ad->src, &d), 0);
#endif
    ad->fds[ad->n] = d;
    ck_assert_int_eq(appmsg_loop_watch(lp, d, APPMSG_EV_READ, on_mark, &ad->added), 0);
  }
}

START_TEST(watches_added_in_a_callback_wait_for_the_next_wait) {
#ifndef _WIN32 /* (no descriptor limit on Windows) */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 2000) {
    rl.rlim_cur = rl.rlim_max < 2000 ? rl.rlim_max : 2000;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < 2000) {
    printf("watches_added_in_a_callback_wait_for_the_next_wait: RLIMIT_NOFILE %lu < 2000, using "
           "low fd numbers\n",
           (unsigned long)rl.rlim_cur);
  }
#endif
  appmsg_socket_t sv[2];
  make_pair(sv);
  ck_assert_int_eq(appmsg_send(sv[1], "x", 1), 1);
  static struct adder ad;
  memset(&ad, 0, sizeof ad);
  ad.src = sv[0];
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_READ, on_add_many, &ad), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, TU_EVENT_MS), 1);
  ck_assert_int_eq(ad.added.distinct, 0); /* added during dispatch: not seen until the next wait */
  ck_assert_int_eq(run_until_marked(&ad.added, 200), 200);
  for (int i = 0; i < ad.n; i++)
    ck_assert(marked(&ad.added, ad.fds[i]));
  for (int i = 0; i < ad.n; i++) {
    ck_assert_int_eq(appmsg_loop_unwatch(loop, ad.fds[i]), 0);
    tu_close(ad.fds[i]);
  }
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  close_pair(sv);
}
END_TEST

/* 10,000 watched fds: only the ready ones are called; unwatching is cheap. */
START_TEST(of_10000_watched_fds_only_the_ready_ones_are_called) {
  enum { PAIRS = 5000 };
  int pairs = PAIRS;
#ifndef _WIN32 /* (no descriptor limit on Windows) */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = 2 * PAIRS + 64;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < want) {
    pairs = (int)(rl.rlim_cur - 64) / 2;
    printf("of_10000_watched_fds_only_the_ready_ones_are_called: RLIMIT_NOFILE is %lu, using %d "
           "pairs instead of %d\n",
           (unsigned long)rl.rlim_cur, pairs, PAIRS);
  }
#endif
  appmsg_socket_t(*sv)[2] = calloc((size_t)pairs, sizeof *sv);
  struct seen s = {0};
  /* Check records every passing assertion, so hot loops count failures instead. */
  int bad = 0;
  for (int i = 0; i < pairs; i++) {
    make_pair(sv[i]);
    bad += appmsg_loop_watch(loop, sv[i][0], APPMSG_EV_READ, on_drain, &s) != 0;
    bad += appmsg_loop_watch(loop, sv[i][1], APPMSG_EV_READ, on_drain, &s) != 0;
  }
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
  for (int i = 0; i < pairs; i += 50)
    bad += appmsg_send(sv[i][1], "x", 1) != 1;
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(run_until((pairs + 49) / 50), (pairs + 49) / 50);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
  for (int i = 0; i < pairs; i++) {
    bad += appmsg_loop_unwatch(loop, sv[i][1]) != 0;
    bad += appmsg_loop_unwatch(loop, sv[i][0]) != 0;
    close_pair(sv[i]);
  }
  ck_assert_int_eq(bad, 0);
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);
  free(sv);
}
END_TEST

/* ---- timers ------------------------------------------------------------------ */

struct fired {
  int order[16];
  int n;
  uint64_t at[16];
};

struct tag {
  struct fired *log;
  int id;
};

static void on_tag(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  (void)t;
  struct tag *tg = ud;
  tg->log->at[tg->log->n] = appmsg_loop_now(lp);
  tg->log->order[tg->log->n++] = tg->id;
}

START_TEST(timers_fire_in_deadline_order_never_early) {
  struct fired log = {0};
  struct tag tags[4];
  struct appmsg_timer t[4];
  const uint64_t ms[4] = {30, 10, 20, 10};
  struct tu_watch w;
  tu_watch_start(&w);
  uint64_t t0 = tu_now_ms();
  for (int i = 0; i < 4; i++) {
    tags[i] = (struct tag){&log, i};
    appmsg_timer_init(&t[i], on_tag, &tags[i]);
    ck_assert_int_eq(appmsg_timer_active(&t[i]), 0);
    ck_assert_int_eq(appmsg_timer_start(loop, &t[i], ms[i], 0), 0);
    ck_assert_int_eq(appmsg_timer_active(&t[i]), 1);
  }
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(log.n, 4);
  /* Equal deadlines fire in arming order. */
  ck_assert_int_eq(log.order[0], 1);
  ck_assert_int_eq(log.order[1], 3);
  ck_assert_int_eq(log.order[2], 2);
  ck_assert_int_eq(log.order[3], 0);
  for (int i = 0; i < 4; i++) {
    ck_assert_uint_ge(log.at[i], t0 + ms[log.order[i]]); /* never early */
    ck_assert_int_eq(appmsg_timer_active(&t[i]), 0);
  }
  /* Nor much later than the last deadline, in time this process could run. */
  ck_assert_uint_lt(tu_watch_ms(&w), 30 + 200);
}
END_TEST

START_TEST(timers_can_be_stopped_and_rearmed) {
  struct fired log = {0};
  struct tag ta = {&log, 0}, tb = {&log, 1}, tc = {&log, 2};
  struct appmsg_timer a, b, c;
  appmsg_timer_init(&a, on_tag, &ta);
  appmsg_timer_init(&b, on_tag, &tb);
  appmsg_timer_init(&c, on_tag, &tc);
  uint64_t t0 = tu_now_ms();
  ck_assert_int_eq(appmsg_timer_start(loop, &a, 10, 0), 0);
  ck_assert_int_eq(appmsg_timer_start(loop, &b, 20, 0), 0);
  ck_assert_int_eq(appmsg_timer_start(loop, &c, 15, 0), 0);
  appmsg_timer_stop(loop, &b);
  appmsg_timer_stop(loop, &b); /* idle: fine */
  ck_assert_int_eq(appmsg_timer_active(&b), 0);
  /* Re-arm a (moves it later, past c) - the idle-timeout pattern. */
  ck_assert_int_eq(appmsg_timer_start(loop, &a, 40, 0), 0);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(log.n, 2);
  ck_assert_int_eq(log.order[0], 2);
  ck_assert_int_eq(log.order[1], 0);
  ck_assert_uint_ge(log.at[1], t0 + 40);
  /* A zeroed timer with a callback is valid too. */
  struct appmsg_timer z;
  memset(&z, 0, sizeof z);
  ck_assert_int_eq(appmsg_timer_start(loop, &z, 0, 0), -EINVAL);
  z.cb = on_tag;
  z.userdata = &tb;
  ck_assert_int_eq(appmsg_timer_start(loop, &z, 0, 0), 0);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(log.n, 3);
  ck_assert_int_eq(log.order[2], 1);
}
END_TEST

struct ticker {
  int ticks;
  int stop_at;
  uint64_t first, last;
};

static void on_tick(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  struct ticker *tk = ud;
  ck_assert_int_eq(appmsg_timer_active(t), 1); /* a repeating timer is re-armed first */
  if (tk->ticks++ == 0)
    tk->first = appmsg_loop_now(lp);
  tk->last = appmsg_loop_now(lp);
  if (tk->ticks == tk->stop_at)
    appmsg_timer_stop(lp, t);
}

START_TEST(a_repeating_timer_ticks_until_it_is_stopped) {
  struct ticker tk = {.stop_at = 5};
  struct appmsg_timer t;
  appmsg_timer_init(&t, on_tick, &tk);
  struct tu_watch w;
  tu_watch_start(&w);
  uint64_t t0 = tu_now_ms();
  ck_assert_int_eq(appmsg_timer_start(loop, &t, 5, 10), 0);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(tk.ticks, 5);
  ck_assert_uint_ge(tk.first, t0 + 5);
  ck_assert_uint_ge(tk.last, t0 + 5 + 40);      /* five ticks, 10 ms apart, never early */
  ck_assert_uint_lt(tu_watch_ms(&w), 45 + 200); /* and none skipped or much delayed */
  ck_assert_int_eq(appmsg_timer_active(&t), 0);
}
END_TEST

/* A timer re-armed with timeout 0 from its own callback waits for the next iteration. */
static void on_rearm_zero(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  int *n = ud;
  if (++*n < 1000)
    appmsg_timer_start(lp, t, 0, 0);
}

START_TEST(a_zero_timer_rearmed_from_its_callback_waits_a_turn) {
  int n = 0;
  struct appmsg_timer t;
  appmsg_timer_init(&t, on_rearm_zero, &n);
  ck_assert_int_eq(appmsg_timer_start(loop, &t, 0, 0), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 1);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(n, 1000);
}
END_TEST

enum { MANY = 10000 };

struct many {
  struct appmsg_timer t[MANY];
  int cancelled[MANY];
  int fired[MANY];
  uint64_t last_due;
  int nfired;
  int bad_order, early;
};

static void on_many(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  struct many *m = ud;
  int i = (int)(t - m->t);
  /* _due is private; the test reads it to check the heap's order. */
  if (t->_due < m->last_due)
    m->bad_order++;
  if (appmsg_loop_now(lp) < t->_due)
    m->early++;
  m->last_due = t->_due;
  m->fired[i]++;
  m->nfired++;
}

START_TEST(ten_thousand_timers_fire_in_order_and_rearm_cheaply) {
  struct many *m = calloc(1, sizeof *m);
  srand(12345);
  /* Check records every passing assertion, so hot loops count failures instead. */
  int bad = 0;
  for (int i = 0; i < MANY; i++) {
    appmsg_timer_init(&m->t[i], on_many, m);
    bad += appmsg_timer_start(loop, &m->t[i], (uint64_t)(rand() % 100), 0) != 0;
  }
  /* Many cheap re-arms (the per-read idle timeout), then some cancellations. */
  struct tu_watch w;
  tu_watch_start(&w);
  for (int r = 0; r < 20; r++)
    for (int i = 0; i < MANY; i++)
      bad += appmsg_timer_start(loop, &m->t[i], (uint64_t)(rand() % 100), 0) != 0;
  uint64_t rearm_ms = tu_watch_ms(&w);
  ck_assert_int_eq(bad, 0);
  int expect = MANY;
  for (int i = 0; i < MANY; i += 7) {
    appmsg_timer_stop(loop, &m->t[i]);
    m->cancelled[i] = 1;
    expect--;
  }
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(m->nfired, expect);
  ck_assert_int_eq(m->bad_order, 0);
  ck_assert_int_eq(m->early, 0);
  for (int i = 0; i < MANY; i++)
    bad += m->fired[i] != !m->cancelled[i];
  ck_assert_int_eq(bad, 0);
  ck_assert_uint_lt(rearm_ms, 1000); /* 200,000 re-arms: each one logarithmic, not linear */
  ck_assert_uint_lt(tu_watch_ms(&w), 1000 + 100 + 400);
  free(m);
}
END_TEST

/* ---- stopping ------------------------------------------------------------------ */

static void on_stop_every_3(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  (void)t;
  int *n = ud;
  if (++*n % 3 == 0)
    appmsg_loop_stop(lp);
}

START_TEST(a_callback_can_stop_the_loop) {
  /* Nothing to do: run returns at once. */
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(appmsg_loop_run_once(loop, -1), 0);

  appmsg_socket_t sv[2];
  make_pair(sv);
  struct seen s = {0};
  ck_assert_int_eq(appmsg_loop_watch(loop, sv[0], APPMSG_EV_READ, on_io, &s), 0);
  int n = 0;
  struct appmsg_timer t;
  appmsg_timer_init(&t, on_stop_every_3, &n);
  ck_assert_int_eq(appmsg_timer_start(loop, &t, 1, 1), 0);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(n, 3);
  ck_assert_int_eq(appmsg_loop_alive(loop), 1);
  /* The stop flag is cleared: the loop runs again, to the next stop. */
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(n, 6);
  /* stop() before run(): run() returns without an iteration. */
  n = 100;
  appmsg_loop_stop(loop);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(n, 100);
  appmsg_timer_stop(loop, &t);
  appmsg_loop_unwatch(loop, sv[0]);
  close_pair(sv);
}
END_TEST

#ifdef _WIN32
/*
 * What the library's handler of console control events does when one comes (platform_win32.c,
 * on_console_event): it writes the signal's number to the wake-up channel of the loop that owns
 * the signals.  No event can be sent to this process alone: GenerateConsoleCtrlEvent() fails
 * where the process has no console (under ctest and Wine: error 12), and where it has one it
 * signals every process on that console - ctest and the shell with the test.  So the test writes
 * what the handler would: what is tested is the loop's side, from the channel on.
 */
static void raise_console_event(struct appmsg_loop *lp, int signo) {
  ck_assert_int_eq(appmsg__wakeup_send(lp->sig_wfd, (unsigned char)signo), 0);
}
#endif

/* Raises a signal from a timer callback, then arms a guard. */
struct raiser {
  int signo;
  struct appmsg_timer *guard;
};

static void on_raise(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  (void)t;
  struct raiser *r = ud;
#ifndef _WIN32
  raise(r->signo);
#else
  raise_console_event(lp, r->signo);
#endif
  /* The self-pipe is readable from here on: the next wait returns at once, and an iteration
     reads its descriptors before it runs its timers, so the guard can only find the signal
     unseen if it was lost.  Armed after the raise, the guard does not depend on how soon this
     callback ran on a busy machine. */
  ck_assert_int_eq(appmsg_timer_start(lp, r->guard, 1500, 0), 0);
}

/* Records the loop's last signal when it fires, and stops the loop. */
static void on_guard(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  (void)t;
  *(int *)ud = appmsg_loop_signal(lp);
  appmsg_loop_stop(lp);
}

/* Both platforms' part of a_signal_stops_the_loop: a signal raised while the loop runs stops it
 * (SIGTERM, from a timer), and one that comes while it is not running stops the next run
 * (SIGINT). */
static void signals_stop_runs(void) {
  struct appmsg_timer fire, guard_timer, *guard = &guard_timer;
  int guard_saw = -1; /* -1: the guard has not fired */
  struct raiser r = {SIGTERM, guard};
  appmsg_timer_init(&fire, on_raise, &r);
  appmsg_timer_init(guard, on_guard, &guard_saw);
  ck_assert_int_eq(appmsg_timer_start(loop, &fire, 10, 0), 0);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_msg(appmsg_loop_signal(loop) == SIGTERM, "the signal did not stop the loop");
  ck_assert_msg(guard_saw == -1 || guard_saw == SIGTERM,
                "an iteration ran the guard without reading the signal first");

  guard_saw = -1;
#ifndef _WIN32
  kill(getpid(), SIGINT);
#else
  raise_console_event(loop, SIGINT);
#endif
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(appmsg_loop_signal(loop), SIGINT);
  ck_assert(guard_saw == -1 || guard_saw == SIGINT);
  appmsg_timer_stop(loop, guard);
}

#ifndef _WIN32
START_TEST(a_signal_stops_the_loop) {
  struct sigaction before_int, before_term, sa;
  sigaction(SIGINT, NULL, &before_int);
  sigaction(SIGTERM, NULL, &before_term);
  const int sigs[] = {SIGINT, SIGTERM};
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, sigs, 2), 0);
  ck_assert_int_eq(appmsg_loop_signal(loop), 0);
  /* The self-pipe alone does not keep the loop alive. */
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);

  /* A forked child gets the default action and does not touch our pipe. */
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    raise(SIGTERM);
    _exit(0);
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  ck_assert_int_eq(appmsg_loop_run_once(loop, 0), 0);
  ck_assert_int_eq(appmsg_loop_signal(loop), 0);

  /* A signal stops the loop, while it runs or before the next run. */
  signals_stop_runs();

  /* Only one loop may own the signals; SIGKILL cannot be caught. */
  struct appmsg_loop *other;
  ck_assert_int_eq(appmsg_loop_new(&other, backend), 0);
  ck_assert_int_eq(appmsg_loop_stop_on_signals(other, sigs, 2), -EBUSY);
  const int kill9 = SIGKILL;
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, &kill9, 1), -EINVAL);
  appmsg_loop_free(other);

  /* Drain: give the dispositions back, then run to completion. */
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, NULL, 0), 0);
  sigaction(SIGTERM, NULL, &sa);
  ck_assert(sa.sa_handler == before_term.sa_handler);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);

  /* appmsg_loop_free() restores them as well. */
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, sigs, 1), 0);
  sigaction(SIGINT, NULL, &sa);
  ck_assert(sa.sa_handler != before_int.sa_handler);
  appmsg_loop_free(loop);
  loop = NULL; /* freed: nothing left for the fixture */
  sigaction(SIGINT, NULL, &sa);
  ck_assert(sa.sa_handler == before_int.sa_handler);
}
END_TEST

#else
/* Windows: the same, with console control events (see raise_console_event()); no fork(), and
 * no dispositions to look at - the handler's release is seen as another loop taking it. */
START_TEST(a_signal_stops_the_loop) {
  const int sigs[] = {SIGINT, SIGTERM};
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, sigs, 2), 0);
  ck_assert_int_eq(appmsg_loop_signal(loop), 0);
  /* The wake-up channel alone does not keep the loop alive. */
  ck_assert_int_eq(appmsg_loop_alive(loop), 0);

  /* A signal stops the loop, while it runs or before the next run. */
  signals_stop_runs();

  /* Only one loop may own the signals; what is not a console event cannot be caught. */
  struct appmsg_loop *other;
  ck_assert_int_eq(appmsg_loop_new(&other, backend), 0);
  ck_assert_int_eq(appmsg_loop_stop_on_signals(other, sigs, 2), -EBUSY);
  const int segv = SIGSEGV;
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, &segv, 1), -EINVAL);
  const int brk[] = {SIGBREAK, SIGHUP}; /* (SIGHUP is taken, and never comes) */
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, brk, 2), 0);

  /* Drain: give the handler back (another loop may take it now), then run to completion. */
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, NULL, 0), 0);
  ck_assert_int_eq(appmsg_loop_stop_on_signals(other, sigs, 2), 0);
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, sigs, 2), -EBUSY);
  appmsg_loop_free(other); /* appmsg_loop_free() gives it back as well */
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_int_eq(appmsg_loop_stop_on_signals(loop, sigs, 1), 0);
  appmsg_loop_free(loop);
  loop = NULL; /* freed: nothing left for the fixture */
  ck_assert_int_eq(appmsg_loop_new(&other, backend), 0);
  ck_assert_int_eq(appmsg_loop_stop_on_signals(other, sigs, 2), 0);
  appmsg_loop_free(other);
}
END_TEST
#endif

/* ---- EINTR -------------------------------------------------------------------- */

#ifndef _WIN32 /* no SIGALRM or setitimer() on Windows: nothing interrupts its waits */

static volatile sig_atomic_t alarms;

static void on_alarm(int signo) {
  (void)signo;
  alarms++;
}

static void on_done(struct appmsg_loop *lp, struct appmsg_timer *t, void *ud) {
  (void)t;
  *(uint64_t *)ud = appmsg_loop_now(lp);
}

START_TEST(interrupted_waits_are_resumed) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: every tick interrupts the wait */
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGALRM, &sa, &old), 0);
  struct itimerval it = {{0, 2000}, {0, 2000}};
  alarms = 0;
  ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);

  /* run_once() waits its whole timeout despite the interruptions. */
  uint64_t t0 = tu_now_ms();
  int before = alarms;
  ck_assert_int_eq(appmsg_loop_run_once(loop, 60), 0);
  ck_assert_uint_ge(tu_now_ms() - t0, 59);
  ck_assert_int_gt(alarms - before, 0); /* it was interrupted: a tick comes every 2 ms */

  /* run() is not ended by them either. */
  uint64_t done = 0;
  struct appmsg_timer t;
  appmsg_timer_init(&t, on_done, &done);
  t0 = tu_now_ms();
  before = alarms;
  ck_assert_int_eq(appmsg_timer_start(loop, &t, 60, 0), 0);
  ck_assert_int_eq(appmsg_loop_run(loop), 0);
  ck_assert_uint_ge(done, t0 + 60);
  ck_assert_int_gt(alarms - before, 0);

  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  sigaction(SIGALRM, &old, NULL);
}
END_TEST
#endif

/* Every test that takes the loop from the fixture, for one backend. */
static TCase *backend_case(const char *name, void (*setup)(void)) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, readiness_is_reported_for_the_interest_only);
  tcase_add_test(tc, a_full_socket_is_reported_writable_once_drained);
  tcase_add_test(tc, a_hangup_is_reported_whatever_the_interest);
  tcase_add_test(tc, a_writer_waiting_on_a_half_closed_peer_is_not_woken);
  tcase_add_test(tc, bad_watches_are_refused);
  tcase_add_test(tc, a_callback_may_close_another_ready_fd_and_reuse_its_number);
  tcase_add_test(tc, watches_added_in_a_callback_wait_for_the_next_wait);
  tcase_add_test(tc, of_10000_watched_fds_only_the_ready_ones_are_called);
  tcase_add_test(tc, timers_fire_in_deadline_order_never_early);
  tcase_add_test(tc, timers_can_be_stopped_and_rearmed);
  tcase_add_test(tc, a_repeating_timer_ticks_until_it_is_stopped);
  tcase_add_test(tc, a_zero_timer_rearmed_from_its_callback_waits_a_turn);
  tcase_add_test(tc, ten_thousand_timers_fire_in_order_and_rearm_cheaply);
  tcase_add_test(tc, a_callback_can_stop_the_loop);
  tcase_add_test(tc, a_signal_stops_the_loop);
#ifndef _WIN32 /* no SIGALRM or setitimer() on Windows */
  tcase_add_test(tc, interrupted_waits_are_resumed);
#endif
  return tc;
}

int main(void) {
  Suite *s = suite_create("loop");
  TCase *tc = tcase_create("backend");
  tcase_add_test(tc, the_backend_comes_from_the_argument_or_the_environment);
  suite_add_tcase(s, tc);
  suite_add_tcase(s, backend_case("epoll", setup_epoll));
  suite_add_tcase(s, backend_case("poll", setup_poll));
  return tu_run_suite(s);
}
