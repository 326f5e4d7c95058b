/*
 * The epoll backend (Linux): level-triggered, one epoll_ctl() per watch,
 * interest change and unwatch.  The event's data carries the slot (the fd) and the
 * watch generation, so readiness for a watch that was replaced in the same
 * iteration is recognised as stale by loop.c.
 */
#include "loop_backend.h"

#ifdef APPMSG__HAVE_EPOLL

#include <errno.h>
#include <unistd.h>

static int epoll_init(struct appmsg_loop *loop) {
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  return loop->epfd < 0 ? -errno : 0;
}

static void epoll_cleanup(struct appmsg_loop *loop) {
  if (loop->epfd >= 0)
    close(loop->epfd);
  loop->epfd = -1;
}

static int ctl(struct appmsg_loop *loop, int op, int fd) {
  const struct appmsg__watch *w = &loop->watch[fd];
  struct epoll_event ev = {0};
  if (w->events & APPMSG_EV_READ)
    ev.events |= EPOLLIN;
  if (w->events & APPMSG_EV_WRITE)
    ev.events |= EPOLLOUT;
  ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)w->gen << 32;
  return epoll_ctl(loop->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static int epoll_add(struct appmsg_loop *loop, int fd) {
  return ctl(loop, EPOLL_CTL_ADD, fd);
}

static int epoll_mod(struct appmsg_loop *loop, int fd) {
  return ctl(loop, EPOLL_CTL_MOD, fd);
}

static void epoll_del(struct appmsg_loop *loop, int fd) {
  /* Fails harmlessly (EBADF/ENOENT) if the caller already closed the fd. */
  struct epoll_event ev = {0};
  (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, &ev);
}

static int epoll_wait_ready(struct appmsg_loop *loop, int timeout_ms) {
  int n = epoll_wait(loop->epfd, loop->ep_events, loop->ready_cap, timeout_ms);
  if (n < 0)
    return -errno;
  for (int i = 0; i < n; i++) {
    const struct epoll_event *e = &loop->ep_events[i];
    struct appmsg__ready *r = &loop->ready[i];
    unsigned ev = 0;
    if (e->events & (EPOLLIN | EPOLLPRI))
      ev |= APPMSG_EV_READ;
    if (e->events & EPOLLOUT)
      ev |= APPMSG_EV_WRITE;
    if (e->events & EPOLLERR)
      ev |= APPMSG_EV_ERROR;
    if (e->events & EPOLLHUP)
      ev |= APPMSG_EV_HUP;
    r->slot = (int)(uint32_t)e->data.u64;
    r->gen = (uint16_t)(e->data.u64 >> 32);
    r->events = ev;
  }
  return n;
}

const struct appmsg__backend appmsg__loop_epoll = {
    .name = "epoll",
    .init = epoll_init,
    .cleanup = epoll_cleanup,
    .add = epoll_add,
    .mod = epoll_mod,
    .del = epoll_del,
    .wait = epoll_wait_ready,
};

#endif
