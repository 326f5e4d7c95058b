/*
 * The loop's insides, shared by loop.c and the backends (loop_epoll.c,
 * loop_poll.c).  Not installed.
 */
#ifndef APPMSG_LOOP_BACKEND_H
#define APPMSG_LOOP_BACKEND_H

#include <stdint.h>

#include "appmsg/loop.h"
#include "loop_internal.h"
#include "platform.h"
#include "platform_config.h"

#if APPMSG_HAVE_EPOLL
#define APPMSG__HAVE_EPOLL 1
#include <sys/epoll.h>
#endif

/*
 * One slot per watched socket.  Where sockets are small integers (POSIX
 * descriptors, APPMSG__SOCKET_DENSE) the slot is the descriptor itself, in
 * a table indexed by it: 24 bytes a slot.  Where they are not (Windows
 * handles) a hash table maps each watched socket to a slot, and the slot
 * keeps the socket.
 */
struct appmsg__watch {
  appmsg_io_cb cb; /* NULL while the slot is not watched */
  void *userdata;  /* handed to cb */
  int32_t pidx;    /* poll backend: the socket's index in the pollfd array */
  uint16_t gen;    /* bumped by watch and unwatch; stale readiness carries an old one */
  uint8_t events;  /* interest: APPMSG_EV_READ | APPMSG_EV_WRITE */
  uint8_t flags;   /* WATCH_INTERNAL: the loop's own socket, does not keep the loop alive */
#if !APPMSG__SOCKET_DENSE
  appmsg_socket_t sock; /* the socket watched here */
#endif
};

#define APPMSG__WATCH_INTERNAL 0x1u

/* Readiness collected by a backend's wait(), dispatched by loop.c. */
struct appmsg__ready {
  int slot;        /* the ready socket's slot */
  unsigned events; /* APPMSG_EV_* bits */
  uint16_t gen;    /* the watch generation when the readiness was collected */
};

struct appmsg__backend {
  const char *name;
  int (*init)(struct appmsg_loop *loop);
  void (*cleanup)(struct appmsg_loop *loop);
  /* Register / change / drop a watch: loop->watch[slot] is already updated. */
  int (*add)(struct appmsg_loop *loop, int slot);
  int (*mod)(struct appmsg_loop *loop, int slot);
  void (*del)(struct appmsg_loop *loop, int slot);
  /* Waits up to timeout_ms, fills loop->ready; returns the count or -errno (-EINTR too). */
  int (*wait)(struct appmsg_loop *loop, int timeout_ms);
};

struct appmsg_loop {
  const struct appmsg__backend *backend; /* epoll or poll */
  struct appmsg__watch *watch;           /* the slots (indexed by descriptor where dense) */
  int watch_cap;                         /* slots in watch[] */
#if !APPMSG__SOCKET_DENSE
  int *slot_free;           /* free slots (a stack), watch_cap entries */
  int nslot_free;           /* entries on it */
  appmsg_socket_t *map_key; /* socket -> slot: open addressing, map_cap entries */
  int *map_slot;            /* ... the slot of each key, -1 for an empty entry */
  int map_cap;              /* a power of two, at least twice the slots in use */
#endif
  int nwatch;                       /* watched fds that keep the loop alive */
  struct appmsg__ready *ready;      /* readiness of the current iteration */
  int ready_cap;                    /* entries in ready[] */
  int stop;                         /* appmsg_loop_stop() was called */
  unsigned busy;                    /* callbacks may be on the stack (a depth) */
  uint64_t now;                     /* cached clock, ms */
  uint64_t now_ns;                  /* the same reading, ns */
  struct appmsg__deferred *dq_head; /* work for the end of the iteration (FIFO) */
  struct appmsg__deferred *dq_tail; /* ... its last node */

  /* epoll backend */
  int epfd; /* the epoll instance, -1 if none */
#ifdef APPMSG__HAVE_EPOLL
  struct epoll_event *ep_events; /* epoll_wait() buffer, ready_cap entries */
#endif

  /* poll backend */
  struct pollfd *pfd; /* compact: one entry per watched socket */
  int *pslot;         /* the slot of each entry */
  int npfd;           /* entries in use */
  int pfd_cap;        /* entries allocated */

  /* timers: a binary min-heap ordered by (_due, _seq) */
  struct appmsg_timer **heap; /* heap[i]->_index == i + 1 */
  uint32_t nheap;             /* armed timers */
  uint32_t heap_cap;          /* slots allocated */
  uint64_t timer_seq;         /* next arming sequence number */

  /* signals and appmsg_loop_stop_async(): the wake-up channel (platform.h) */
  appmsg_socket_t sig_rfd, sig_wfd; /* APPMSG_INVALID_SOCKET when not set up */
  int last_signal;                  /* the signal that last stopped the loop */

  /* One emptied output buffer, handed to the next connection that queues
   * output (appmsg__loop_spare_take/give in internal.h). */
  void *spare;
  size_t spare_cap;
};

/* The socket watched in a slot. */
static inline appmsg_socket_t appmsg__slot_sock(const struct appmsg_loop *loop, int slot) {
#if APPMSG__SOCKET_DENSE
  (void)loop;
  return slot;
#else
  return loop->watch[slot].sock;
#endif
}

/* Grows loop->ready (and the epoll buffer) to at least n entries. */
int appmsg__loop_ready_reserve(struct appmsg_loop *loop, int n);

#ifdef APPMSG__HAVE_EPOLL
extern const struct appmsg__backend appmsg__loop_epoll;
#endif
extern const struct appmsg__backend appmsg__loop_poll;

#endif
