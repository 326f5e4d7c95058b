/*
 * The event loop: level-triggered readiness per file descriptor, timers,
 * and a clean stop on SIGINT/SIGTERM.  One loop per thread; nothing here is
 * thread-safe, and every callback runs on the thread inside
 * appmsg_loop_run().
 *
 *   struct appmsg_loop *loop;
 *   appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT);
 *   appmsg_loop_watch(loop, fd, APPMSG_EV_READ, on_io, conn);
 *   appmsg_timer_init(&conn->idle, on_idle, conn);
 *   appmsg_timer_start(loop, &conn->idle, 30000, 0);
 *   appmsg_loop_stop_on_signals(loop, (int[]){SIGINT, SIGTERM}, 2);
 *   appmsg_loop_run(loop);
 *   appmsg_loop_free(loop);
 *
 * Why the loop is opaque but the timer is not.  Its insides depend on the
 * backend (an epoll descriptor and an event buffer, or a pollfd array with
 * an fd->index map), there is one per thread so its single allocation does
 * not matter, and keeping it opaque (nng style) lets a kqueue backend or a
 * different table layout arrive without an ABI break.  Timers are the
 * opposite: one per connection, armed on every read, so struct appmsg_timer
 * is exposed (libuv style, private fields start with '_') and is embedded
 * in the caller's own struct - arming and re-arming never allocate apart
 * from the loop's heap array growing, and a zeroed timer is a valid, idle
 * timer.
 *
 * Readiness is level-triggered, like poll(): a callback is called on every
 * iteration for as long as the fd is ready and the interest is set, so a
 * callback may read only part of what is available (fairness) and will be
 * called again.  Interest changes are cheap: appmsg_loop_modify() with the
 * same events is a no-op, otherwise one epoll_ctl() (epoll) or a store
 * (poll).  A connection keeps APPMSG_EV_WRITE on only while output is queued.
 *
 * Work at the end of the iteration.  The library's connections, servers,
 * services and clients never free anything under their caller: a close,
 * an abort or a free made from a callback only marks the object, and the
 * loop finishes it once the iteration's callbacks are done (writes, close
 * hooks, on_close, frees); work asked for from outside the loop is done at
 * the start of the next appmsg_loop_run_once(), before it waits, and
 * appmsg_loop_free() does what is still pending.
 *
 * Robustness inside callbacks: any callback may watch, modify or unwatch
 * any fd (and then close it), start or stop any timer, and call
 * appmsg_loop_stop().  Readiness collected for an fd that was unwatched -
 * or unwatched and watched again, possibly as a new socket that reused the
 * number - earlier in the same iteration is dropped (each watch carries a
 * generation number), and events are masked with the interest current at
 * the moment of the call.  A callback may not free the loop, nor run it
 * recursively (appmsg_loop_run/run_once).
 *
 * Descriptors: a loop holds its backend's (the epoll instance) and a
 * wake-up pipe, used by signals and appmsg_loop_stop_async(); neither keeps
 * it alive.
 *
 * Memory: 24 bytes of bookkeeping per fd in a table indexed by fd, plus 8
 * bytes (a struct pollfd) per watched fd with the poll backend.  10,000
 * idle connections cost about 240 KB (epoll) or 320 KB (poll), plus their
 * timers (one pointer each in the heap).
 */
#ifndef APPMSG_LOOP_H
#define APPMSG_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "socket.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_loop;

/* The readiness mechanism, chosen when the loop is created. */
enum appmsg_loop_backend {
  APPMSG_LOOP_DEFAULT = 0, /* $APPMSG_LOOP_BACKEND ("epoll" or "poll"), else epoll */
  APPMSG_LOOP_EPOLL = 1,   /* epoll(7), Linux only; O(ready) per iteration */
  APPMSG_LOOP_POLL = 2,    /* poll(2); O(watched) per iteration, portable */
};

/* Event bits: interest passed to watch/modify, and readiness given to callbacks. */
#define APPMSG_EV_READ 0x1u  /* readable: data, a pending connection, or end of stream */
#define APPMSG_EV_WRITE 0x2u /* writable: room in the send buffer, or a connect finished */
#define APPMSG_EV_ERROR 0x4u /* an error is pending (always reported; see SO_ERROR) */
#define APPMSG_EV_HUP 0x8u   /* hang-up: both directions closed (always reported) */

/*
 * An fd's callback: events is the readiness (a non-empty subset of the
 * interest, plus APPMSG_EV_ERROR/APPMSG_EV_HUP, which are reported even with
 * an empty interest - react to them by unwatching, or the loop keeps
 * reporting them).  On Windows the loop waits with select(): a hang-up or
 * a reset is seen by reading (APPMSG_EV_READ, then the read's end of stream
 * or error), never without read interest, and APPMSG_EV_ERROR is a failed
 * connect.  userdata is the pointer given to appmsg_loop_watch().
 */
typedef void (*appmsg_io_cb)(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events,
                             void *userdata);

struct appmsg_timer;

/* A timer's callback; userdata is the timer's userdata field. */
typedef void (*appmsg_timer_cb)(struct appmsg_loop *loop, struct appmsg_timer *timer,
                                void *userdata);

/*
 * A one-shot or repeating timer, owned and allocated by the caller
 * (typically embedded in a connection).  Initialise with appmsg_timer_init()
 * or zero it; it must stay at the same address while it is armed, and must
 * be stopped before its memory is freed.
 */
struct appmsg_timer {
  appmsg_timer_cb cb; /* called when the timer is due */
  void *userdata;     /* handed to cb */
  uint64_t _due;      /* private: deadline, ms on the loop's CLOCK_MONOTONIC clock */
  uint64_t _repeat;   /* private: period in ms, 0 for a one-shot timer */
  uint64_t _seq;      /* private: arming order; equal deadlines fire in arming order */
  uint32_t _index;    /* private: heap position + 1, 0 while not armed */
};

/* ---- the loop ---------------------------------------------------------- */

/*
 * Creates a loop with the given backend.  APPMSG_LOOP_DEFAULT reads
 * $APPMSG_LOOP_BACKEND ("epoll" or "poll", case-insensitive; unset or empty
 * means epoll where available, else poll).  Returns 0 and sets *loop (owned
 * by the caller, freed with appmsg_loop_free()), -EINVAL for an unknown
 * backend or environment value, -ENOSYS for epoll where there is none,
 * -ENOMEM, or another negated errno from epoll_create1().
 */
APPMSG_API int appmsg_loop_new(struct appmsg_loop **loop, enum appmsg_loop_backend backend);

/*
 * Frees the loop: first finishes the work still pending (connections
 * closed or aborted since the loop last ran get their on_close), then
 * closes its own descriptors (never the watched ones), restores the
 * signal dispositions changed by appmsg_loop_stop_on_signals(), and
 * forgets all watches and timers (timers become idle).  NULL is fine.
 * Must not be called from a callback.
 */
APPMSG_API void appmsg_loop_free(struct appmsg_loop *loop);

/* The backend in use: "epoll" or "poll".  Static storage. */
APPMSG_API const char *appmsg_loop_backend_name(const struct appmsg_loop *loop);

/*
 * Runs until appmsg_loop_stop() is called (from a callback, or by a signal
 * set up with appmsg_loop_stop_on_signals()), or until nothing is left to
 * do: no fd watched, no timer armed, no work pending.  The iteration in progress when
 * stop is requested finishes first.  Returns 0, or a negated errno if the
 * backend fails (EINTR is retried, never returned).  May be called again
 * after it returned, e.g. to drain connections after a SIGTERM.
 */
APPMSG_API int appmsg_loop_run(struct appmsg_loop *loop);

/*
 * One iteration: does the work pending from outside the loop (then does
 * not block), waits up to timeout_ms (-1: until an fd is ready or the next
 * timer is due; 0: do not block) - never longer than until the next timer
 * - then calls the ready fds' callbacks and the due timers, and does the
 * work they left for the end of the iteration.  Returns how many callbacks
 * ran (0 on timeout, or at once when there is nothing to wait for and
 * timeout_ms is -1), or a negated errno.  Does not look at or clear the
 * stop flag.
 */
APPMSG_API int appmsg_loop_run_once(struct appmsg_loop *loop, int timeout_ms);

/* Asks appmsg_loop_run() to return after the current iteration. */
APPMSG_API void appmsg_loop_stop(struct appmsg_loop *loop);

/*
 * appmsg_loop_stop() from another thread (or a signal handler): the one
 * function of a loop that may be called from anywhere.  It writes to the
 * loop's wake-up channel (a pipe; a loopback socket pair on Windows), so a
 * loop waiting in epoll/poll wakes and stops after the current iteration.
 * This is how a program with a loop per thread stops them all: one thread
 * waits for the signal (sigwait() on POSIX; on Windows a loop of its own
 * with appmsg_loop_stop_on_signals() and a timer to keep it alive) and
 * calls this for every loop.  Returns 0 or a negated errno.
 */
APPMSG_API int appmsg_loop_stop_async(struct appmsg_loop *loop);

/* 1 if a user fd is watched, a timer is armed or work is pending, else 0. */
APPMSG_API int appmsg_loop_alive(const struct appmsg_loop *loop);

/*
 * The loop's clock: milliseconds on CLOCK_MONOTONIC, as of the start of the
 * current iteration's callbacks (cached, no system call: it stands still
 * while the program works outside the loop).
 */
APPMSG_API uint64_t appmsg_loop_now(const struct appmsg_loop *loop);

/* ---- watching file descriptors ---------------------------------------- */

/*
 * Starts watching fd for events (APPMSG_EV_READ and/or APPMSG_EV_WRITE, or
 * 0 to only hear of errors and hang-ups).  cb(loop, fd, ready, userdata) is
 * called while the fd is ready.  The fd stays the caller's: the loop never
 * closes it.  Unwatch it before closing it (a closed-but-watched fd is
 * tolerated by unwatch, but its number cannot be watched again until then).
 * Returns 0, -EBADF (APPMSG_INVALID_SOCKET, or a negative fd), -EINVAL (NULL
 * cb or unknown bits),
 * -EEXIST (already watched), -ENOMEM, or the backend's negated errno
 * (-EPERM: epoll cannot watch regular files).
 */
APPMSG_API int appmsg_loop_watch(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events,
                                 appmsg_io_cb cb, void *userdata);

/*
 * Replaces a watched fd's interest.  The same interest again costs
 * nothing.  Returns 0, -ENOENT if fd is not watched, -EINVAL for unknown
 * bits, or the backend's negated errno.
 */
APPMSG_API int appmsg_loop_modify(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events);

/*
 * Stops watching fd; its callback will not be called again, not even for
 * readiness already collected in the current iteration.  Returns 0 or
 * -ENOENT if fd is not watched.
 */
APPMSG_API int appmsg_loop_unwatch(struct appmsg_loop *loop, appmsg_socket_t fd);

/* A watched fd's current interest (>= 0), or -ENOENT if it is not watched. */
APPMSG_API int appmsg_loop_events(const struct appmsg_loop *loop, appmsg_socket_t fd);

/* ---- timers ------------------------------------------------------------ */

/* Sets cb and userdata and marks the timer idle.  Must not be armed. */
APPMSG_API void appmsg_timer_init(struct appmsg_timer *timer, appmsg_timer_cb cb, void *userdata);

/*
 * Arms the timer to fire timeout_ms from now (never earlier), then, if
 * repeat_ms > 0, every repeat_ms after that (a late loop skips missed
 * ticks rather than firing a burst).  If the timer is already armed it is
 * moved: this is the cheap re-arm for idle timeouts, O(log n) with no
 * allocation.  A timer (re)armed from a timer callback does not fire
 * before the next iteration, even with timeout_ms 0.  Returns 0, -EINVAL
 * (NULL cb), or -ENOMEM when the heap cannot grow (only for a timer that
 * was idle).
 *
 * For per-connection idle timeouts at very high message rates a cheaper
 * pattern still is to store the last-activity time and, when the timer
 * fires, re-arm it for the remainder instead of re-arming on every read.
 */
APPMSG_API int appmsg_timer_start(struct appmsg_loop *loop, struct appmsg_timer *timer,
                                  uint64_t timeout_ms, uint64_t repeat_ms);

/* Disarms the timer, O(log n).  Idle timers are fine. */
APPMSG_API void appmsg_timer_stop(struct appmsg_loop *loop, struct appmsg_timer *timer);

/* 1 while the timer is armed, else 0.  Inside its own one-shot callback: 0. */
APPMSG_API int appmsg_timer_active(const struct appmsg_timer *timer);

/* ---- signals ----------------------------------------------------------- */

/*
 * Makes any of the n signals in signals[] stop appmsg_loop_run() cleanly:
 * a handler (SA_RESTART) writes the signal number to a non-blocking
 * self-pipe that the loop watches; the loop then records the signal and
 * calls appmsg_loop_stop().  The program can then drain and call
 * appmsg_loop_run() again; the self-pipe does not keep a loop alive.  Only
 * one loop per process can do this at a time (-EBUSY otherwise).  Calling it
 * again replaces the set; n == 0 restores the previous dispositions (do so
 * before draining if a second Ctrl-C should kill the program).
 * appmsg_loop_free() restores them too.  A child forked without exec that
 * receives one of the signals gets the default action, not the parent's
 * self-pipe.  Returns 0, -EINVAL (SIGKILL,
 * SIGSTOP or an invalid number), -EBUSY, -ENOMEM, or a negated errno.
 *
 * On Windows the "signals" are the console's control events: Ctrl-C is
 * SIGINT; Ctrl-Break is SIGBREAK when that is in the set, else SIGTERM; the
 * console window's close, log-off and shut-down are SIGTERM (the system
 * ends the process about five seconds after a close: the drain must fit).
 * SIGHUP is accepted and never comes; other numbers are -EINVAL.
 */
APPMSG_API int appmsg_loop_stop_on_signals(struct appmsg_loop *loop, const int *signals, size_t n);

/* The signal that last stopped the loop, or 0 if none did. */
APPMSG_API int appmsg_loop_signal(const struct appmsg_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
