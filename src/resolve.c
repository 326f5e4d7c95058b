/*
 * Name lookups off the loop (see resolve.h).
 *
 * A lookup's own record comes from the C library's allocator, not the one
 * a program may give appmsg (alloc.h): the resolver thread may free it,
 * and a program running appmsg on one thread need not make its allocator
 * thread-safe.  The thread blocks every signal: they are the program's
 * threads' to take.
 *
 * A lookup is shared by two owners, the thread that asks getaddrinfo()
 * and the loop that waits for its answer, and counts them: whichever lets
 * go last frees it.  The thread writes its answer into the lookup, then
 * one byte into the lookup's wake-up channel (platform.h: a pipe, or a
 * loopback pair on Windows); the loop, seeing it readable, takes the
 * answer.  A cancel only stops the loop waiting: the channel stays open
 * until the thread is done with it, so the thread never writes into a
 * descriptor that was closed (or, worse, reused).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/net.h"
#include "platform.h"
#include "resolve.h"
#include "util.h"

struct appmsg__lookup {
  int refs;                 /* owners left: the thread and the loop (atomic) */
  struct appmsg_loop *loop; /* the loop waiting, NULL once it no longer is */
  appmsg__lookup_cb cb;     /* the loop's callback */
  void *arg;                /* its argument */
  appmsg_socket_t rfd, wfd; /* a wake-up channel: the thread writes a byte once the answer is in */
  char *host, *port;        /* the question */
  int rc;                   /* the answer: 0 or a code */
  struct addrinfo *ai;      /* ... its addresses, until taken */
  char err[APPMSG_NET_ERRLEN];
};

static void unref(struct appmsg__lookup *l) {
  if (__atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  appmsg__wakeup_close(l->rfd, l->wfd);
  if (l->ai)
    freeaddrinfo(l->ai);
  free(l->host);
  free(l->port);
  free(l);
}

static void lookup_thread(void *arg) {
  struct appmsg__lookup *l = arg;
  l->rc = appmsg__resolve(l->host, l->port, 0, &l->ai, l->err, sizeof l->err);
  (void)appmsg__wakeup_send(l->wfd, 1);
  unref(l);
}

static void on_answer(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)events;
  struct appmsg__lookup *l = ud;
  appmsg_loop_unwatch(loop, fd);
  l->loop = NULL;
  struct addrinfo *ai = l->ai;
  l->ai = NULL; /* the callback's now */
  l->cb(l->arg, l->rc, ai, l->err);
  unref(l);
}

int appmsg__lookup_start(struct appmsg__lookup **out, struct appmsg_loop *loop, const char *host,
                         const char *port, appmsg__lookup_cb cb, void *arg) {
  struct appmsg__lookup *l = calloc(1, sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  l->rfd = l->wfd = APPMSG_INVALID_SOCKET;
  l->host = strdup(host ? host : "");
  l->port = strdup(port ? port : "");
  int rc = l->host && l->port ? 0 : -ENOMEM;
  if (rc == 0)
    rc = appmsg__wakeup_open(&l->rfd, &l->wfd);
  if (rc == 0)
    rc = appmsg_loop_watch(loop, l->rfd, APPMSG_EV_READ, on_answer, l);
  if (rc) {
    l->refs = 1;
    unref(l);
    return rc;
  }
  l->loop = loop;
  l->cb = cb;
  l->arg = arg;
  l->refs = 2;
  rc = appmsg__thread_detached(lookup_thread, l, 256 * 1024); /* getaddrinfo() needs little */
  if (rc) {
    appmsg_loop_unwatch(loop, l->rfd);
    l->refs = 1;
    unref(l);
    return rc;
  }
  *out = l;
  return 0;
}

void appmsg__lookup_cancel(struct appmsg__lookup *l) {
  if (l->loop) {
    appmsg_loop_unwatch(l->loop, l->rfd);
    l->loop = NULL;
  }
  unref(l);
}
