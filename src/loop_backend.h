/*
 * The loop's insides, shared by loop.c and the backends (loop_epoll.c,
 * loop_poll.c).  Not installed.
 */
#ifndef APPMSG_LOOP_BACKEND_H
#define APPMSG_LOOP_BACKEND_H

#include <poll.h>
#include <signal.h>
#include <stdint.h>

#include "appmsg/loop.h"
#include "loop_internal.h"

#ifdef __linux__
#define APPMSG__HAVE_EPOLL 1
#include <sys/epoll.h>
#endif

/* One slot per fd number, in a table indexed by fd: 24 bytes. */
struct appmsg__watch {
  appmsg_io_cb cb; /* NULL while the fd is not watched */
  void *userdata;  /* handed to cb */
  int32_t pidx;    /* poll backend: the fd's index in the pollfd array */
  uint16_t gen;    /* bumped by watch and unwatch; stale readiness carries an old one */
  uint8_t events;  /* interest: APPMSG_EV_READ | APPMSG_EV_WRITE */
  uint8_t flags;   /* WATCH_INTERNAL: the loop's own fd, does not keep the loop alive */
};

#define APPMSG__WATCH_INTERNAL 0x1u

/* Readiness collected by a backend's wait(), dispatched by loop.c. */
struct appmsg__ready {
  int fd;          /* the ready fd */
  unsigned events; /* APPMSG_EV_* bits */
  uint16_t gen;    /* the watch generation when the readiness was collected */
};

struct appmsg__backend {
  const char *name;
  int (*init)(struct appmsg_loop *loop);
  void (*cleanup)(struct appmsg_loop *loop);
  /* Register / change / drop a watch: loop->watch[fd] is already updated. */
  int (*add)(struct appmsg_loop *loop, int fd);
  int (*mod)(struct appmsg_loop *loop, int fd);
  void (*del)(struct appmsg_loop *loop, int fd);
  /* Waits up to timeout_ms, fills loop->ready; returns the count or -errno (-EINTR too). */
  int (*wait)(struct appmsg_loop *loop, int timeout_ms);
};

struct appmsg_loop {
  const struct appmsg__backend *backend; /* epoll or poll */
  struct appmsg__watch *watch;           /* per-fd slots, indexed by fd */
  int watch_cap;                         /* slots in watch[] */
  int nwatch;                            /* watched fds that keep the loop alive */
  struct appmsg__ready *ready;           /* readiness of the current iteration */
  int ready_cap;                         /* entries in ready[] */
  int stop;                              /* appmsg_loop_stop() was called */
  unsigned busy;                         /* callbacks may be on the stack (a depth) */
  uint64_t now;                          /* cached clock, ms */
  struct appmsg__deferred *dq_head;      /* work for the end of the iteration (FIFO) */
  struct appmsg__deferred *dq_tail;      /* ... its last node */

  /* epoll backend */
  int epfd; /* the epoll instance, -1 if none */
#ifdef APPMSG__HAVE_EPOLL
  struct epoll_event *ep_events; /* epoll_wait() buffer, ready_cap entries */
#endif

  /* poll backend */
  struct pollfd *pfd; /* compact: one entry per watched fd */
  int npfd;           /* entries in use */
  int pfd_cap;        /* entries allocated */

  /* timers: a binary min-heap ordered by (_due, _seq) */
  struct appmsg_timer **heap; /* heap[i]->_index == i + 1 */
  uint32_t nheap;             /* armed timers */
  uint32_t heap_cap;          /* slots allocated */
  uint64_t timer_seq;         /* next arming sequence number */

  /* signals */
  int sig_rfd, sig_wfd;          /* the self-pipe, -1 when not set up */
  int last_signal;               /* the signal that last stopped the loop */
  struct appmsg__sigsave *saved; /* previous dispositions to restore */
  size_t nsaved;                 /* entries in saved[] */

  /* One emptied output buffer, handed to the next connection that queues
   * output (appmsg__loop_spare_take/give in internal.h). */
  void *spare;
  size_t spare_cap;
};

struct appmsg__sigsave {
  int signo;             /* the signal */
  struct sigaction prev; /* its disposition before appmsg_loop_stop_on_signals() */
};

/* Grows loop->ready (and the epoll buffer) to at least n entries. */
int appmsg__loop_ready_reserve(struct appmsg_loop *loop, int n);

#ifdef APPMSG__HAVE_EPOLL
extern const struct appmsg__backend appmsg__loop_epoll;
#endif
extern const struct appmsg__backend appmsg__loop_poll;

#endif
