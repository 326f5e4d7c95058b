/*
 * What the loop offers the library's other modules: work deferred to the
 * end of the iteration, and the spare output buffer.  Not installed.
 *
 * Deferred work is how the library keeps its one lifecycle rule - no call
 * frees anything its caller may still hold.  A call that must write,
 * close or free (a send, an abort, a client freed from its own callback)
 * only records what it wants and queues the object's node here; the loop
 * runs the queue after the iteration's callbacks (and before it waits,
 * for work queued from outside the loop), when no callback of the library
 * or the application is on the stack.  Each node is queued at most once
 * at a time; work queued while the queue runs runs in the same pass.
 */
#ifndef APPMSG_LOOP_INTERNAL_H
#define APPMSG_LOOP_INTERNAL_H

#include <stddef.h>

#include "appmsg/loop.h"

/* A node of the deferred queue, embedded in the object that needs the work. */
struct appmsg__deferred {
  void (*fn)(struct appmsg__deferred *d); /* the work; it may queue d again */
  struct appmsg__deferred *prev, *next;   /* in the queue (queued: prev, or the queue's head) */
};

/* Sets up a node (not queued) with its work. */
static inline void appmsg__deferred_init(struct appmsg__deferred *d,
                                         void (*fn)(struct appmsg__deferred *)) {
  d->fn = fn;
  d->prev = d->next = NULL;
}

/* Queues d (nothing if it is queued already). */
void appmsg__loop_defer(struct appmsg_loop *loop, struct appmsg__deferred *d);

/* Takes d out of the queue if it is there (before its object is freed). */
void appmsg__loop_undefer(struct appmsg_loop *loop, struct appmsg__deferred *d);

/* Runs the queue until it is empty.  Only where no callback is on the
 * stack: the loop itself, appmsg_loop_free(), and a free made from
 * outside the loop's callbacks. */
void appmsg__loop_run_deferred(struct appmsg_loop *loop);

/* 1 while callbacks may be on the stack - appmsg_loop_run_once() is
 * running, or library code called from outside the loop is running the
 * application's callbacks (enter/leave) - : an object freed then must
 * wait for the deferred queue, since its own code may be under the
 * callback that frees it. */
int appmsg__loop_busy(const struct appmsg_loop *loop);

/* The loop's clock as read at the start of its current iteration (when its wait returned), in
 * nanoseconds: when what the iteration handles had arrived, at the latest. */
uint64_t appmsg__loop_now_ns(const struct appmsg_loop *loop);

/* Brackets library code that runs callbacks from outside the loop (a
 * drain called from main accepts, and runs on_accept): frees made from
 * them are deferred, as inside the loop. */
void appmsg__loop_enter(struct appmsg_loop *loop);
void appmsg__loop_leave(struct appmsg_loop *loop);

/*
 * An output buffer passed from connection to connection.  A connection's
 * output queue is empty between bursts and holds no memory then (an idle
 * connection should cost nothing); at one request in flight every reply is
 * a burst, and a malloc and a free per reply would be most of the queue's
 * cost.  So a connection whose queue empties gives the buffer to its loop
 * (which keeps the largest one, up to APPMSG__SPARE_MAX bytes, and frees
 * the others), and the next connection to queue output takes it when it
 * is at least as large as that connection's last burst.  One thread per
 * loop, like everything on a loop.
 */
#define APPMSG__SPARE_MAX ((size_t)64 * 1024)
/* The spare buffer (its size in *cap) when it has at least min bytes, else NULL. */
void *appmsg__loop_spare_take(struct appmsg_loop *loop, size_t min, size_t *cap);
void appmsg__loop_spare_give(struct appmsg_loop *loop, void *buf, size_t cap);

#endif
