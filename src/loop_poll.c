/*
 * The poll(2) backend (select() on Windows, through platform.h): a
 * compact pollfd array holding only watched sockets, with each entry's
 * index kept in its watch slot and each entry's slot beside it, so watch,
 * modify and unwatch are O(1): unwatch moves the last entry into the
 * hole.  wait() copies the readiness out before any callback runs, so
 * callbacks may reshuffle the array freely.
 */
#include <errno.h>
#include <stdlib.h>

#include "loop_backend.h"
#include "util.h"

static int poll_init(struct appmsg_loop *loop) {
  (void)loop;
  return 0;
}

static void poll_cleanup(struct appmsg_loop *loop) {
  appmsg__free(loop->pfd);
  appmsg__free(loop->pslot);
  loop->pfd = NULL;
  loop->pslot = NULL;
  loop->npfd = loop->pfd_cap = 0;
}

static short poll_events(unsigned events) {
  short ev = 0;
  if (events & APPMSG_EV_READ)
    ev |= POLLIN;
  if (events & APPMSG_EV_WRITE)
    ev |= POLLOUT;
  return ev;
}

static int poll_add(struct appmsg_loop *loop, int slot) {
  if (loop->npfd == loop->pfd_cap) {
    int cap = loop->pfd_cap ? loop->pfd_cap * 2 : 64;
    struct pollfd *p = appmsg__realloc(loop->pfd, (size_t)cap * sizeof *p);
    if (p == NULL)
      return -ENOMEM;
    loop->pfd = p;
    int *ps = appmsg__realloc(loop->pslot, (size_t)cap * sizeof *ps);
    if (ps == NULL)
      return -ENOMEM;
    loop->pslot = ps;
    loop->pfd_cap = cap;
  }
  /* wait() must never allocate: keep room for every watched fd to be ready. */
  int rc = appmsg__loop_ready_reserve(loop, loop->pfd_cap);
  if (rc < 0)
    return rc;
  struct appmsg__watch *w = &loop->watch[slot];
  w->pidx = loop->npfd++;
  loop->pfd[w->pidx] =
      (struct pollfd){.fd = appmsg__slot_sock(loop, slot), .events = poll_events(w->events)};
  loop->pslot[w->pidx] = slot;
  return 0;
}

static int poll_mod(struct appmsg_loop *loop, int slot) {
  const struct appmsg__watch *w = &loop->watch[slot];
  loop->pfd[w->pidx].events = poll_events(w->events);
  return 0;
}

static void poll_del(struct appmsg_loop *loop, int slot) {
  struct appmsg__watch *w = &loop->watch[slot];
  int i = w->pidx, last = --loop->npfd;
  if (i != last) {
    loop->pfd[i] = loop->pfd[last];
    loop->pslot[i] = loop->pslot[last];
    loop->watch[loop->pslot[i]].pidx = i;
  }
  w->pidx = -1;
}

static int poll_wait(struct appmsg_loop *loop, int timeout_ms) {
  int n = appmsg__poll(loop->pfd, (size_t)loop->npfd, timeout_ms);
  if (n < 0)
    return n;
  int k = 0;
  for (int i = 0; i < loop->npfd && k < n; i++) {
    const struct pollfd *p = &loop->pfd[i];
    if (p->revents == 0)
      continue;
    unsigned ev = 0;
    if (p->revents & (POLLIN | POLLPRI))
      ev |= APPMSG_EV_READ;
    if (p->revents & POLLOUT)
      ev |= APPMSG_EV_WRITE;
    if (p->revents & (POLLERR | POLLNVAL)) /* POLLNVAL: closed while still watched */
      ev |= APPMSG_EV_ERROR;
    if (p->revents & POLLHUP)
      ev |= APPMSG_EV_HUP;
    int slot = loop->pslot[i];
    loop->ready[k++] =
        (struct appmsg__ready){.slot = slot, .events = ev, .gen = loop->watch[slot].gen};
  }
  return k;
}

const struct appmsg__backend appmsg__loop_poll = {
    .name = "poll",
    .init = poll_init,
    .cleanup = poll_cleanup,
    .add = poll_add,
    .mod = poll_mod,
    .del = poll_del,
    .wait = poll_wait,
};
