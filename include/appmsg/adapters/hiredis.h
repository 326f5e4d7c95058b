/*
 * hiredis on appmsg's event loop: a header-only adapter.
 *
 * hiredis's asynchronous API (hiredis/async.h) does no waiting of its own:
 * it asks an event library, through hooks in redisAsyncContext.ev, to
 * start and stop watching its socket for reading and writing, and expects
 * to be called back (redisAsyncHandleRead/Write) when the socket is ready.
 * This header fills in those hooks with appmsg_loop_watch/modify/unwatch,
 * so that any appmsg program can talk to Redis on the loop it already
 * runs, with no thread and no second loop:
 *
 *   #include <appmsg/adapters/hiredis.h>
 *
 *   redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", 6379);
 *   if (ac == NULL || ac->err || appmsg_hiredis_attach(loop, ac) != 0) {
 *     ...;                                 // ac->errstr says why, when ac is not NULL
 *     if (ac) redisAsyncFree(ac);
 *   }
 *   ac->data = me;                         // for the callbacks
 *   redisAsyncSetConnectCallback(ac, on_connect);
 *   redisAsyncSetDisconnectCallback(ac, on_disconnect);
 *   redisAsyncCommand(ac, on_reply, request, "GET %s", key);
 *   appmsg_loop_run(loop);
 *
 * It is header-only (static inline functions), like hiredis's own
 * adapters, so that libappmsg does not depend on hiredis: a program that
 * includes it links hiredis itself (pkg-config hiredis).  It is not part
 * of <appmsg/appmsg.h>.  Written for hiredis 0.14 (Debian 12) and 1.x;
 * with 1.x, hiredis's own timeouts (redisAsyncSetTimeout, the connect
 * timeout) also run on the loop's timers.  hiredis 0.14 has no timeouts
 * at all: a program must bound its requests in time itself (a timer of its
 * own that frees a context that does not answer).
 *
 * Interest.  The loop keeps one watch per descriptor, so the read and
 * write interest hiredis asks for separately are kept together and applied
 * as one appmsg_loop_modify().  The socket is watched from attach to
 * cleanup.  While the loop's callback is inside hiredis, interest changes
 * are collected and applied once when hiredis returns: after each write
 * hiredis drops write interest and asks for read interest, which is then
 * a single change.  An error or hang-up the loop reports is handed to
 * hiredis as readiness of whatever it waits for (reading when it waits for
 * nothing): reading then finds the end of stream or the error, and a
 * pending connect finds its outcome, so a dead Redis is noticed at once.
 *
 * Ownership and the cleanup contract.  appmsg_hiredis_attach() allocates
 * a small struct appmsg_hiredis and stores it in ac->ev.data; it belongs
 * to the context from then on.  hiredis calls the cleanup hook whenever it
 * frees the context - redisAsyncFree(), a disconnect (redisAsyncDisconnect,
 * an error, the server closing), a failed connect - and the cleanup stops
 * watching the socket before hiredis closes it, disarms the timer and frees
 * the struct.  So the program never frees the adapter; it frees (or loses)
 * the context as hiredis says, and the loop forgets the socket by itself.
 * A context freed from inside a hiredis callback that the loop called is
 * safe: the adapter frees its struct only after hiredis returns.  Every
 * context attached to a loop must be freed (redisAsyncFree) before
 * appmsg_loop_free(), since the cleanup talks to the loop.
 *
 * Lifecycle.  As everywhere in appmsg, nothing is freed under its caller:
 * the adapter's struct goes only after hiredis returns to the loop, and
 * appmsg calls made from a hiredis callback (a reply to an appmsg request,
 * a connection closed) are finished by the loop at the end of the
 * iteration.
 *
 * Threads.  Like everything on an appmsg loop, a context attached to it
 * belongs to the loop's thread: every hiredis call on it and every one of
 * its callbacks happens there.  Contexts on different loops (one per
 * thread) are independent.
 *
 * Failures.  If the loop cannot watch the socket (-ENOMEM, or epoll's
 * limit on watches), the hook cannot say so to hiredis: the context then
 * stops making progress, appmsg_hiredis_error() returns the code, and a
 * program that bounds its requests in time (as above) frees it when they
 * run out.  The next request for interest tries to watch again.
 */
#ifndef APPMSG_ADAPTERS_HIREDIS_H
#define APPMSG_ADAPTERS_HIREDIS_H

#include <errno.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "../loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the adapter keeps for one context (in ac->ev.data; fields private). */
struct appmsg_hiredis {
  struct appmsg_loop *loop; /* the loop the context runs on */
  redisAsyncContext *ac;    /* the context */
  appmsg_socket_t fd;       /* its socket, as given at attach time */
  unsigned events;          /* the interest hiredis asked for: APPMSG_EV_READ | APPMSG_EV_WRITE */
  int watched;              /* 1 while fd is watched with events */
  int busy;                 /* 1 while the loop's callback is inside hiredis */
  int freed;                /* hiredis cleaned up during that call: free on the way out */
  int error;                /* the loop's last refusal to watch fd (negative), or 0 */
#if HIREDIS_MAJOR >= 1
  struct appmsg_timer timer; /* hiredis's timeout (connect or command) */
#endif
};

static inline void appmsg__hiredis_on_io(struct appmsg_loop *loop, appmsg_socket_t fd,
                                         unsigned ready, void *ud);

/* Makes the loop's interest in fd a->events: the first time a watch,
 * then a modify (the loop ignores one that changes nothing).  A refusal is
 * kept in a->error; the next change of interest tries again. */
static inline void appmsg__hiredis_apply(struct appmsg_hiredis *a) {
  int rc;
  if (a->watched) {
    rc = appmsg_loop_modify(a->loop, a->fd, a->events);
  } else {
    rc = appmsg_loop_watch(a->loop, a->fd, a->events, appmsg__hiredis_on_io, a);
    a->watched = rc == 0;
  }
  if (rc)
    a->error = rc;
}

/* Sets the interest hiredis asks for.  Inside the loop's callback it is
 * applied once, when hiredis returns: after a write hiredis drops write
 * interest and asks for read interest in turn, which is one change. */
static inline void appmsg__hiredis_want(struct appmsg_hiredis *a, unsigned events) {
  if (events == a->events && a->watched)
    return;
  a->events = events;
  if (!a->busy)
    appmsg__hiredis_apply(a);
}

static inline void appmsg__hiredis_add_read(void *privdata) {
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)privdata;
  appmsg__hiredis_want(a, a->events | APPMSG_EV_READ);
}

static inline void appmsg__hiredis_del_read(void *privdata) {
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)privdata;
  appmsg__hiredis_want(a, a->events & ~APPMSG_EV_READ);
}

static inline void appmsg__hiredis_add_write(void *privdata) {
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)privdata;
  appmsg__hiredis_want(a, a->events | APPMSG_EV_WRITE);
}

static inline void appmsg__hiredis_del_write(void *privdata) {
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)privdata;
  appmsg__hiredis_want(a, a->events & ~APPMSG_EV_WRITE);
}

/* After the loop's callback called into hiredis: the struct is freed if
 * hiredis freed the context meanwhile, else the interest is applied. */
static inline void appmsg__hiredis_done(struct appmsg_hiredis *a) {
  a->busy = 0;
  if (a->freed)
    free(a);
  else
    appmsg__hiredis_apply(a);
}

/* The loop's callback: hands readiness to hiredis. */
static inline void appmsg__hiredis_on_io(struct appmsg_loop *loop, appmsg_socket_t fd,
                                         unsigned ready, void *ud) {
  (void)loop;
  (void)fd;
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)ud;
  redisAsyncContext *ac = a->ac;
  int trouble = (ready & (APPMSG_EV_ERROR | APPMSG_EV_HUP)) != 0;
  if (trouble) /* news for whichever side hiredis waits on; reading when none */
    ready |= a->events ? a->events : APPMSG_EV_READ;
  a->busy = 1;
  if ((ready & APPMSG_EV_READ) && (trouble || (a->events & APPMSG_EV_READ)))
    redisAsyncHandleRead(ac);
  /* Reading may have freed the context (a disconnect): then a->freed is set
   * and ac is gone.  It may have changed the interest too. */
  if (!a->freed && (ready & APPMSG_EV_WRITE) && (a->events & APPMSG_EV_WRITE))
    redisAsyncHandleWrite(ac);
  appmsg__hiredis_done(a);
}

/* hiredis is freeing the context: forget the socket (hiredis closes it
 * right after) and the timer; free the struct unless the loop's callback
 * is still inside hiredis, which frees it on its way out. */
static inline void appmsg__hiredis_cleanup(void *privdata) {
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)privdata;
  if (a == NULL)
    return;
  if (a->watched)
    appmsg_loop_unwatch(a->loop, a->fd);
  a->watched = 0;
  a->events = 0;
#if HIREDIS_MAJOR >= 1
  appmsg_timer_stop(a->loop, &a->timer);
  a->ac->ev.scheduleTimer = NULL;
#endif
  /* Whatever hiredis does with the context from here on reaches no hook. */
  a->ac->ev.addRead = NULL;
  a->ac->ev.delRead = NULL;
  a->ac->ev.addWrite = NULL;
  a->ac->ev.delWrite = NULL;
  a->ac->ev.cleanup = NULL;
  a->ac->ev.data = NULL;
  if (a->busy)
    a->freed = 1;
  else
    free(a);
}

#if HIREDIS_MAJOR >= 1
static inline void appmsg__hiredis_on_timer(struct appmsg_loop *loop, struct appmsg_timer *t,
                                            void *ud) {
  (void)loop;
  (void)t;
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)ud;
  a->busy = 1;
  redisAsyncHandleTimeout(a->ac);
  appmsg__hiredis_done(a);
}

static inline void appmsg__hiredis_schedule_timer(void *privdata, struct timeval tv) {
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)privdata;
  uint64_t ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
  if (appmsg_timer_start(a->loop, &a->timer, ms, 0) != 0)
    a->error = -ENOMEM;
}
#endif

/*
 * Runs ac on loop: fills in ac->ev and starts watching the socket - for
 * writing when the connect is still under way or commands are waiting to
 * be sent, which lets the loop finish the connect, else for reading.
 * Attach right after redisAsyncConnect*() succeeded (ac->err == 0), before
 * setting the connect callback.  Returns 0; -EINVAL (NULL argument);
 * -EBADF (no socket: the connect failed, see ac->err); -EEXIST (ac is
 * attached already, here or to another event library); -ENOMEM; or the
 * loop's error for the watch (then nothing is attached and ac is still the
 * caller's to free).
 */
static inline int appmsg_hiredis_attach(struct appmsg_loop *loop, redisAsyncContext *ac) {
  if (loop == NULL || ac == NULL)
    return -EINVAL;
  if (ac->c.fd < 0)
    return -EBADF;
  if (ac->ev.data != NULL || ac->ev.addRead != NULL)
    return -EEXIST;
  struct appmsg_hiredis *a = (struct appmsg_hiredis *)calloc(1, sizeof *a);
  if (a == NULL)
    return -ENOMEM;
  a->loop = loop;
  a->ac = ac;
  a->fd = (int)ac->c.fd;
  int waiting = !(ac->c.flags & REDIS_CONNECTED) || (ac->c.obuf && sdslen(ac->c.obuf) > 0);
  a->events = waiting ? APPMSG_EV_WRITE : APPMSG_EV_READ;
  appmsg__hiredis_apply(a);
  if (!a->watched) {
    int rc = a->error;
    free(a);
    return rc;
  }
#if HIREDIS_MAJOR >= 1
  appmsg_timer_init(&a->timer, appmsg__hiredis_on_timer, a);
  ac->ev.scheduleTimer = appmsg__hiredis_schedule_timer;
#endif
  ac->ev.data = a;
  ac->ev.addRead = appmsg__hiredis_add_read;
  ac->ev.delRead = appmsg__hiredis_del_read;
  ac->ev.addWrite = appmsg__hiredis_add_write;
  ac->ev.delWrite = appmsg__hiredis_del_write;
  ac->ev.cleanup = appmsg__hiredis_cleanup;
  return 0;
}

/* The loop's last refusal to watch the socket of ac, a context attached
 * with appmsg_hiredis_attach() (a negated errno), or 0; 0 too once hiredis
 * cleaned up, or for NULL. */
static inline int appmsg_hiredis_error(const redisAsyncContext *ac) {
  const struct appmsg_hiredis *a = ac ? (const struct appmsg_hiredis *)ac->ev.data : NULL;
  return a ? a->error : 0;
}

#ifdef __cplusplus
}
#endif
#endif
