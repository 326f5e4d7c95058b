/*
 * The poll(2) backend: a compact pollfd array holding only watched fds,
 * with each fd's index kept in its watch slot (the fd->index map), so
 * watch, modify and unwatch are O(1): unwatch moves the last entry into
 * the hole.  wait() copies the readiness out before any callback runs, so
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
  loop->pfd = NULL;
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

static int poll_add(struct appmsg_loop *loop, int fd) {
  if (loop->npfd == loop->pfd_cap) {
    int cap = loop->pfd_cap ? loop->pfd_cap * 2 : 64;
    struct pollfd *p = appmsg__realloc(loop->pfd, (size_t)cap * sizeof *p);
    if (p == NULL)
      return -ENOMEM;
    loop->pfd = p;
    loop->pfd_cap = cap;
  }
  /* wait() must never allocate: keep room for every watched fd to be ready. */
  int rc = appmsg__loop_ready_reserve(loop, loop->pfd_cap);
  if (rc < 0)
    return rc;
  struct appmsg__watch *w = &loop->watch[fd];
  w->pidx = loop->npfd++;
  loop->pfd[w->pidx] = (struct pollfd){.fd = fd, .events = poll_events(w->events)};
  return 0;
}

static int poll_mod(struct appmsg_loop *loop, int fd) {
  const struct appmsg__watch *w = &loop->watch[fd];
  loop->pfd[w->pidx].events = poll_events(w->events);
  return 0;
}

static void poll_del(struct appmsg_loop *loop, int fd) {
  struct appmsg__watch *w = &loop->watch[fd];
  int i = w->pidx, last = --loop->npfd;
  if (i != last) {
    loop->pfd[i] = loop->pfd[last];
    loop->watch[loop->pfd[i].fd].pidx = i;
  }
  w->pidx = -1;
}

static int poll_wait(struct appmsg_loop *loop, int timeout_ms) {
  int n = poll(loop->pfd, (nfds_t)loop->npfd, timeout_ms);
  if (n < 0)
    return -errno;
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
    loop->ready[k++] =
        (struct appmsg__ready){.fd = p->fd, .events = ev, .gen = loop->watch[p->fd].gen};
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
