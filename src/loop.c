/*
 * The event loop's common part: the watch table, dispatch with generation
 * checks, the timer heap and the wake-up channel that signals and
 * appmsg_loop_stop_async() write to.  The readiness mechanisms live in
 * loop_epoll.c and loop_poll.c; what is the system's, in platform.h.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "loop_backend.h"
#include "util.h"

#define EV_INTEREST (APPMSG_EV_READ | APPMSG_EV_WRITE)
#define WATCH_MIN 64

#if APPMSG__SOCKET_DENSE
_Static_assert(sizeof(struct appmsg__watch) <= 24, "keep the per-fd slot small");
#endif

/* ---- clock ------------------------------------------------------------- */

static uint64_t (*clock_source)(void); /* tests only: a clock they move themselves */

static uint64_t clock_ns(void) {
  if (__builtin_expect(clock_source != NULL, 0))
    return clock_source();
  return appmsg__monotonic_ns();
}

void appmsg__set_clock(uint64_t (*now_ns)(void)) {
  clock_source = now_ns;
}

uint64_t appmsg__clock_ms(void) {
  return clock_ns() / 1000000u;
}

uint64_t appmsg__clock_ns(void) {
  return clock_ns();
}

static uint64_t update_now(struct appmsg_loop *loop) {
  loop->now_ns = clock_ns();
  loop->now = loop->now_ns / 1000000u;
  return loop->now;
}

uint64_t appmsg__loop_now_ns(const struct appmsg_loop *loop) {
  return loop->now_ns;
}

uint64_t appmsg_loop_now(const struct appmsg_loop *loop) {
  return loop->now;
}

/* ---- creation ---------------------------------------------------------- */

static int pick_backend(enum appmsg_loop_backend which, const struct appmsg__backend **out) {
  if (which == APPMSG_LOOP_DEFAULT) {
    const char *env = getenv("APPMSG_LOOP_BACKEND");
    if (env == NULL || *env == '\0')
#ifdef APPMSG__HAVE_EPOLL
      which = APPMSG_LOOP_EPOLL;
#else
      which = APPMSG_LOOP_POLL;
#endif
    else if (strcasecmp(env, "epoll") == 0)
      which = APPMSG_LOOP_EPOLL;
    else if (strcasecmp(env, "poll") == 0)
      which = APPMSG_LOOP_POLL;
    else
      return -EINVAL;
  }
  switch (which) {
  case APPMSG_LOOP_EPOLL:
#ifdef APPMSG__HAVE_EPOLL
    *out = &appmsg__loop_epoll;
    return 0;
#else
    return -ENOSYS;
#endif
  case APPMSG_LOOP_POLL:
    *out = &appmsg__loop_poll;
    return 0;
  default:
    return -EINVAL;
  }
}

static int signals_setup_pipe(struct appmsg_loop *loop);

int appmsg_loop_new(struct appmsg_loop **loopp, enum appmsg_loop_backend which) {
  const struct appmsg__backend *backend;
  *loopp = NULL;
  int rc = pick_backend(which, &backend);
  if (rc < 0)
    return rc;
  rc = appmsg__net_start();
  if (rc < 0)
    return rc;
  struct appmsg_loop *loop = appmsg__calloc(1, sizeof *loop);
  if (loop == NULL)
    return -ENOMEM;
  loop->backend = backend;
  loop->epfd = -1;
  loop->sig_rfd = loop->sig_wfd = APPMSG_INVALID_SOCKET;
  update_now(loop);
  rc = appmsg__loop_ready_reserve(loop, 64);
  if (rc == 0)
    rc = backend->init(loop);
  if (rc == 0)
    rc = signals_setup_pipe(loop);
  if (rc < 0) {
    appmsg_loop_free(loop);
    return rc;
  }
  *loopp = loop;
  return 0;
}

static void signals_teardown(struct appmsg_loop *loop);

void appmsg_loop_free(struct appmsg_loop *loop) {
  if (loop == NULL)
    return;
  /* Closes still pending finish first: their on_close callbacks run, and
   * what they hold is freed. */
  appmsg__loop_run_deferred(loop);
  signals_teardown(loop);
  if (loop->sig_rfd != APPMSG_INVALID_SOCKET) {
    appmsg_loop_unwatch(loop, loop->sig_rfd);
    appmsg__wakeup_close(loop->sig_rfd, loop->sig_wfd);
    loop->sig_rfd = loop->sig_wfd = APPMSG_INVALID_SOCKET;
  }
  for (uint32_t i = 0; i < loop->nheap; i++)
    loop->heap[i]->_index = 0;
  if (loop->backend != NULL)
    loop->backend->cleanup(loop);
  appmsg__free(loop->spare);
  appmsg__free(loop->heap);
  appmsg__free(loop->watch);
#if !APPMSG__SOCKET_DENSE
  appmsg__free(loop->slot_free);
  appmsg__free(loop->map_key);
  appmsg__free(loop->map_slot);
#endif
  appmsg__free(loop->ready);
#ifdef APPMSG__HAVE_EPOLL
  appmsg__free(loop->ep_events);
#endif
  appmsg__free(loop);
}

const char *appmsg_loop_backend_name(const struct appmsg_loop *loop) {
  return loop->backend->name;
}

void *appmsg__loop_spare_take(struct appmsg_loop *loop, size_t min, size_t *cap) {
  void *b = loop->spare;
  if (b == NULL || loop->spare_cap < min)
    return NULL;
  *cap = loop->spare_cap;
  loop->spare = NULL;
  loop->spare_cap = 0;
  return b;
}

void appmsg__loop_spare_give(struct appmsg_loop *loop, void *buf, size_t cap) {
  if (cap > APPMSG__SPARE_MAX || (loop->spare && loop->spare_cap >= cap)) {
    appmsg__free(buf);
    return;
  }
  appmsg__free(loop->spare); /* the smaller one */
  loop->spare = buf;
  loop->spare_cap = cap;
}

/* ---- work deferred to the end of the iteration ------------------------------------------ */

/* Whether d is in the queue: only its head has no predecessor. */
static int deferred_queued(const struct appmsg_loop *loop, const struct appmsg__deferred *d) {
  return d->prev != NULL || loop->dq_head == d;
}

void appmsg__loop_defer(struct appmsg_loop *loop, struct appmsg__deferred *d) {
  if (deferred_queued(loop, d))
    return;
  d->next = NULL;
  d->prev = loop->dq_tail;
  if (loop->dq_tail)
    loop->dq_tail->next = d;
  else
    loop->dq_head = d;
  loop->dq_tail = d;
}

void appmsg__loop_undefer(struct appmsg_loop *loop, struct appmsg__deferred *d) {
  if (!deferred_queued(loop, d))
    return;
  if (d->prev)
    d->prev->next = d->next;
  else
    loop->dq_head = d->next;
  if (d->next)
    d->next->prev = d->prev;
  else
    loop->dq_tail = d->prev;
  d->prev = d->next = NULL;
}

void appmsg__loop_run_deferred(struct appmsg_loop *loop) {
  struct appmsg__deferred *d;
  /* The work runs callbacks (on_close, a client's calls): the loop is busy
   * meanwhile, even when this runs from outside it (appmsg_loop_free(), a
   * free called from main), so that an object freed from one of them is
   * queued here - and freed later in this same pass - rather than freed
   * under the code that called the callback. */
  loop->busy++;
  /* One node at a time off the head: the work may queue nodes (itself too)
   * and take others out, and it may free the object d lives in. */
  while ((d = loop->dq_head) != NULL) {
    appmsg__loop_undefer(loop, d);
    d->fn(d);
  }
  loop->busy--;
}

int appmsg__loop_busy(const struct appmsg_loop *loop) {
  return loop->busy != 0;
}

void appmsg__loop_enter(struct appmsg_loop *loop) {
  loop->busy++;
}

void appmsg__loop_leave(struct appmsg_loop *loop) {
  loop->busy--;
}

int appmsg__loop_ready_reserve(struct appmsg_loop *loop, int n) {
  if (n <= loop->ready_cap)
    return 0;
  struct appmsg__ready *r = appmsg__realloc(loop->ready, (size_t)n * sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  loop->ready = r;
#ifdef APPMSG__HAVE_EPOLL
  /* The epoll buffer always has the same length as ready[]. */
  struct epoll_event *e = appmsg__realloc(loop->ep_events, (size_t)n * sizeof *e);
  if (e == NULL)
    return -ENOMEM;
  loop->ep_events = e;
#endif
  loop->ready_cap = n;
  return 0;
}

/* ---- watches: sockets to slots ----------------------------------------- */

#if APPMSG__SOCKET_DENSE

/* The slot of a watched fd, or -1. */
static int slot_find(const struct appmsg_loop *loop, appmsg_socket_t fd) {
  if (fd < 0 || fd >= loop->watch_cap || loop->watch[fd].cb == NULL)
    return -1;
  return fd;
}

/* A slot for fd, not watched yet: the fd itself, the table grown to hold it (new slots
 * zeroed: not watched, generation 0).  The slot or a negated errno. */
static int slot_make(struct appmsg_loop *loop, appmsg_socket_t fd) {
  if (fd < loop->watch_cap)
    return fd;
  size_t cap = loop->watch_cap < WATCH_MIN ? WATCH_MIN : (size_t)loop->watch_cap;
  while (cap <= (size_t)fd)
    cap += cap / 2;
  if (cap > INT_MAX)
    cap = INT_MAX;
  struct appmsg__watch *w = appmsg__realloc(loop->watch, cap * sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  memset(w + loop->watch_cap, 0, (cap - (size_t)loop->watch_cap) * sizeof *w);
  loop->watch = w;
  loop->watch_cap = (int)cap;
  return fd;
}

/* Gives an unwatched slot back. */
static void slot_drop(struct appmsg_loop *loop, int slot) {
  (void)loop;
  (void)slot;
}

#else

/* Sockets are handles: a hash table (open addressing, linear probing) maps each watched
 * one to a slot; slots come from a free list and keep their generation when reused. */

static unsigned map_hash(appmsg_socket_t s, int cap) {
  uint64_t h = (uint64_t)s * 0x9E3779B97F4A7C15u; /* Fibonacci hashing */
  return (unsigned)(h >> 32) & (unsigned)(cap - 1);
}

/* The map entry holding s, or the empty entry where it would go. */
static int map_pos(const struct appmsg_loop *loop, appmsg_socket_t s) {
  unsigned i = map_hash(s, loop->map_cap);
  while (loop->map_slot[i] >= 0 && loop->map_key[i] != s)
    i = (i + 1) & (unsigned)(loop->map_cap - 1);
  return (int)i;
}

static int slot_find(const struct appmsg_loop *loop, appmsg_socket_t s) {
  if (s == APPMSG_INVALID_SOCKET || loop->map_cap == 0)
    return -1;
  return loop->map_slot[map_pos(loop, s)];
}

static int map_grow(struct appmsg_loop *loop, int cap) {
  appmsg_socket_t *keys = appmsg__malloc((size_t)cap * sizeof *keys);
  int *slots = appmsg__malloc((size_t)cap * sizeof *slots);
  if (keys == NULL || slots == NULL) {
    appmsg__free(keys);
    appmsg__free(slots);
    return -ENOMEM;
  }
  for (int i = 0; i < cap; i++)
    slots[i] = -1;
  appmsg_socket_t *old_keys = loop->map_key;
  int *old_slots = loop->map_slot;
  int old_cap = loop->map_cap;
  loop->map_key = keys;
  loop->map_slot = slots;
  loop->map_cap = cap;
  for (int i = 0; i < old_cap; i++)
    if (old_slots[i] >= 0) {
      int j = map_pos(loop, old_keys[i]);
      keys[j] = old_keys[i];
      slots[j] = old_slots[i];
    }
  appmsg__free(old_keys);
  appmsg__free(old_slots);
  return 0;
}

static int slot_make(struct appmsg_loop *loop, appmsg_socket_t s) {
  if (loop->nslot_free == 0) { /* every slot in use: twice as many */
    int old = loop->watch_cap, cap = old < WATCH_MIN ? WATCH_MIN : old * 2;
    struct appmsg__watch *w = appmsg__realloc(loop->watch, (size_t)cap * sizeof *w);
    if (w == NULL)
      return -ENOMEM;
    loop->watch = w;
    memset(w + old, 0, (size_t)(cap - old) * sizeof *w);
    int *fl = appmsg__realloc(loop->slot_free, (size_t)cap * sizeof *fl);
    if (fl == NULL)
      return -ENOMEM; /* the larger table stays; its new slots are not free yet */
    loop->slot_free = fl;
    for (int i = cap - 1; i >= old; i--)
      fl[loop->nslot_free++] = i;
    loop->watch_cap = cap;
  }
  if (loop->map_cap < 2 * loop->watch_cap) {
    int rc = map_grow(loop, 2 * loop->watch_cap < 128 ? 128 : 4 * loop->watch_cap);
    if (rc < 0)
      return rc;
  }
  int slot = loop->slot_free[--loop->nslot_free];
  int i = map_pos(loop, s);
  loop->map_key[i] = s;
  loop->map_slot[i] = slot;
  loop->watch[slot].sock = s;
  return slot;
}

static void slot_drop(struct appmsg_loop *loop, int slot) {
  /* Backward-shift deletion keeps every probe chain unbroken. */
  unsigned mask = (unsigned)(loop->map_cap - 1);
  unsigned i = (unsigned)map_pos(loop, loop->watch[slot].sock);
  unsigned j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (loop->map_slot[j] < 0)
      break;
    unsigned home = map_hash(loop->map_key[j], loop->map_cap);
    /* Move entry j into the hole at i unless its home lies cyclically in (i, j]. */
    if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
      loop->map_key[i] = loop->map_key[j];
      loop->map_slot[i] = loop->map_slot[j];
      i = j;
    }
  }
  loop->map_slot[i] = -1;
  loop->watch[slot].sock = APPMSG_INVALID_SOCKET;
  loop->slot_free[loop->nslot_free++] = slot;
}

#endif

static struct appmsg__watch *watched(const struct appmsg_loop *loop, appmsg_socket_t fd,
                                     int *slot) {
  *slot = slot_find(loop, fd);
  return *slot < 0 ? NULL : &loop->watch[*slot];
}

static int watch_flags(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events,
                       appmsg_io_cb cb, void *userdata, unsigned flags) {
  int slot;
  if (fd == APPMSG_INVALID_SOCKET || (APPMSG__SOCKET_DENSE && (int)fd < 0))
    return -EBADF;
  if (cb == NULL || (events & ~EV_INTEREST) != 0)
    return -EINVAL;
  if (watched(loop, fd, &slot) != NULL)
    return -EEXIST;
  slot = slot_make(loop, fd);
  if (slot < 0)
    return slot;
  struct appmsg__watch *w = &loop->watch[slot];
  w->cb = cb;
  w->userdata = userdata;
  w->events = (uint8_t)events;
  w->flags = (uint8_t)flags;
  w->pidx = -1;
  w->gen++;
  int rc = loop->backend->add(loop, slot);
  if (rc < 0) {
    w->cb = NULL;
    slot_drop(loop, slot);
    return rc;
  }
  if (!(flags & APPMSG__WATCH_INTERNAL))
    loop->nwatch++;
  return 0;
}

int appmsg_loop_watch(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events,
                      appmsg_io_cb cb, void *userdata) {
  return watch_flags(loop, fd, events, cb, userdata, 0);
}

int appmsg_loop_modify(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events) {
  int slot;
  struct appmsg__watch *w = watched(loop, fd, &slot);
  if (w == NULL)
    return -ENOENT;
  if ((events & ~EV_INTEREST) != 0)
    return -EINVAL;
  if (w->events == events)
    return 0;
  uint8_t old = w->events;
  w->events = (uint8_t)events;
  int rc = loop->backend->mod(loop, slot);
  if (rc < 0)
    w->events = old;
  return rc;
}

int appmsg_loop_unwatch(struct appmsg_loop *loop, appmsg_socket_t fd) {
  int slot;
  struct appmsg__watch *w = watched(loop, fd, &slot);
  if (w == NULL)
    return -ENOENT;
  loop->backend->del(loop, slot);
  if (!(w->flags & APPMSG__WATCH_INTERNAL))
    loop->nwatch--;
  w->cb = NULL;
  w->userdata = NULL;
  w->gen++;
  slot_drop(loop, slot);
  return 0;
}

int appmsg_loop_events(const struct appmsg_loop *loop, appmsg_socket_t fd) {
  int slot;
  const struct appmsg__watch *w = watched(loop, fd, &slot);
  return w == NULL ? -ENOENT : (int)w->events;
}

/* Calls the callbacks for the n entries of loop->ready; returns how many ran. */
static int dispatch(struct appmsg_loop *loop, int n) {
  int calls = 0;
  for (int i = 0; i < n; i++) {
    /* Re-read everything: an earlier callback may have grown or changed the table. */
    const struct appmsg__ready *r = &loop->ready[i];
    struct appmsg__watch *w = &loop->watch[r->slot];
    if (w->cb == NULL || w->gen != r->gen)
      continue; /* unwatched, or watched anew, since the readiness was collected */
    unsigned ev = r->events & (w->events | APPMSG_EV_ERROR | APPMSG_EV_HUP);
    if (ev == 0)
      continue; /* interest dropped by an earlier callback */
    w->cb(loop, appmsg__slot_sock(loop, r->slot), ev, w->userdata);
    calls++;
  }
  return calls;
}

/* ---- timers: a binary min-heap of pointers, each timer knowing its slot ---- */

static int timer_less(const struct appmsg_timer *a, const struct appmsg_timer *b) {
  return a->_due < b->_due || (a->_due == b->_due && a->_seq < b->_seq);
}

static void heap_set(struct appmsg_loop *loop, uint32_t i, struct appmsg_timer *t) {
  loop->heap[i] = t;
  t->_index = i + 1;
}

static void sift_up(struct appmsg_loop *loop, uint32_t i) {
  struct appmsg_timer *t = loop->heap[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (!timer_less(t, loop->heap[parent]))
      break;
    heap_set(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_set(loop, i, t);
}

static void sift_down(struct appmsg_loop *loop, uint32_t i) {
  struct appmsg_timer *t = loop->heap[i];
  for (;;) {
    uint32_t child = 2 * i + 1;
    if (child >= loop->nheap)
      break;
    if (child + 1 < loop->nheap && timer_less(loop->heap[child + 1], loop->heap[child]))
      child++;
    if (!timer_less(loop->heap[child], t))
      break;
    heap_set(loop, i, loop->heap[child]);
    i = child;
  }
  heap_set(loop, i, t);
}

/* Restores the heap order around slot i after its timer changed. */
static void heap_fix(struct appmsg_loop *loop, uint32_t i) {
  if (i > 0 && timer_less(loop->heap[i], loop->heap[(i - 1) / 2]))
    sift_up(loop, i);
  else
    sift_down(loop, i);
}

static void heap_remove(struct appmsg_loop *loop, struct appmsg_timer *t) {
  uint32_t i = t->_index - 1;
  t->_index = 0;
  struct appmsg_timer *last = loop->heap[--loop->nheap];
  if (i < loop->nheap) {
    heap_set(loop, i, last);
    heap_fix(loop, i);
  }
}

static int heap_insert(struct appmsg_loop *loop, struct appmsg_timer *t) {
  if (loop->nheap == loop->heap_cap) {
    uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 16;
    if (cap <= loop->heap_cap)
      return -ENOMEM;
    struct appmsg_timer **h = appmsg__realloc(loop->heap, cap * sizeof *h);
    if (h == NULL)
      return -ENOMEM;
    loop->heap = h;
    loop->heap_cap = cap;
  }
  loop->heap[loop->nheap] = t;
  t->_index = ++loop->nheap;
  sift_up(loop, loop->nheap - 1);
  return 0;
}

void appmsg_timer_init(struct appmsg_timer *timer, appmsg_timer_cb cb, void *userdata) {
  memset(timer, 0, sizeof *timer);
  timer->cb = cb;
  timer->userdata = userdata;
}

int appmsg_timer_start(struct appmsg_loop *loop, struct appmsg_timer *t, uint64_t timeout_ms,
                       uint64_t repeat_ms) {
  if (t->cb == NULL)
    return -EINVAL;
  /* Round the start up to the next millisecond so a timer never fires early
     (timeout 0 means "due now", not "at the next millisecond"). */
  uint64_t ns = clock_ns();
  uint64_t start = timeout_ms == 0 ? ns / 1000000u : (ns + 999999u) / 1000000u;
  t->_due = timeout_ms > UINT64_MAX - start ? UINT64_MAX : start + timeout_ms;
  t->_repeat = repeat_ms;
  t->_seq = loop->timer_seq++;
  if (t->_index != 0) {
    heap_fix(loop, t->_index - 1);
    return 0;
  }
  return heap_insert(loop, t);
}

void appmsg_timer_stop(struct appmsg_loop *loop, struct appmsg_timer *t) {
  if (t->_index != 0)
    heap_remove(loop, t);
}

int appmsg_timer_active(const struct appmsg_timer *t) {
  return t->_index != 0;
}

/* Fires the timers due at loop->now; returns how many callbacks ran. */
static int run_timers(struct appmsg_loop *loop) {
  /* Timers armed from here on (by callbacks) wait for the next iteration. */
  uint64_t seq_limit = loop->timer_seq;
  uint64_t now = loop->now;
  int calls = 0;
  while (loop->nheap > 0) {
    struct appmsg_timer *t = loop->heap[0];
    if (t->_due > now || t->_seq >= seq_limit)
      break;
    if (t->_repeat > 0) {
      /* Re-arm before the callback, which may stop the timer and free it. */
      uint64_t next = t->_due + t->_repeat;
      t->_due = next > now ? next : now + t->_repeat;
      t->_seq = loop->timer_seq++;
      sift_down(loop, 0);
    } else {
      heap_remove(loop, t);
    }
    t->cb(loop, t, t->userdata);
    calls++;
  }
  return calls;
}

/* ---- running ----------------------------------------------------------- */

int appmsg_loop_alive(const struct appmsg_loop *loop) {
  return loop->nwatch > 0 || loop->nheap > 0 || loop->dq_head != NULL;
}

static int iterate(struct appmsg_loop *loop, int timeout_ms);

/* The wait in ms allowed by timeout_ms (-1: none) and the next timer. */
static int wait_ms(const struct appmsg_loop *loop, int timeout_ms) {
  if (loop->nheap == 0)
    return timeout_ms;
  uint64_t due = loop->heap[0]->_due;
  uint64_t until = due > loop->now ? due - loop->now : 0;
  if (until > INT_MAX)
    until = INT_MAX;
  return timeout_ms < 0 || (uint64_t)timeout_ms > until ? (int)until : timeout_ms;
}

int appmsg_loop_run_once(struct appmsg_loop *loop, int timeout_ms) {
  update_now(loop);
  loop->busy++;
  int calls = 0;
  if (loop->dq_head != NULL) { /* work queued from outside the loop: done first, no wait */
    appmsg__loop_run_deferred(loop);
    calls++;
    timeout_ms = 0;
  }
  int n = iterate(loop, timeout_ms);
  loop->busy--;
  return n < 0 ? n : calls + n;
}

/* One wait and what it brings: the ready fds' callbacks, the due timers,
 * then the work they deferred.  Returns how many callbacks ran, or a
 * negated errno. */
static int iterate(struct appmsg_loop *loop, int timeout_ms) {
  int ms = wait_ms(loop, timeout_ms);
  if (ms < 0 && !appmsg_loop_alive(loop))
    return 0; /* nothing could ever wake us */
  uint64_t deadline = ms < 0 ? 0 : loop->now + (uint64_t)ms;
  int n;
  /* A signal handler interrupting the wait is not an error: wait out the rest. */
  while ((n = loop->backend->wait(loop, ms)) == -EINTR) {
    if (ms > 0) {
      uint64_t now = update_now(loop);
      ms = now >= deadline ? 0 : (int)(deadline - now);
    }
  }
  if (n < 0)
    return n;
  update_now(loop);
  int calls = dispatch(loop, n);
  if (n == loop->ready_cap && n < 4096)
    (void)appmsg__loop_ready_reserve(loop, n * 2); /* busy: collect more per wait */
  calls += run_timers(loop);
  appmsg__loop_run_deferred(loop);
  return calls;
}

int appmsg_loop_run(struct appmsg_loop *loop) {
  int rc = 0;
  while (!loop->stop && appmsg_loop_alive(loop)) {
    rc = appmsg_loop_run_once(loop, -1);
    if (rc < 0)
      break;
  }
  loop->stop = 0;
  return rc < 0 ? rc : 0;
}

void appmsg_loop_stop(struct appmsg_loop *loop) {
  loop->stop = 1;
}

/* ---- signals: the platform's handler writes to the wake-up channel ------ */

static struct appmsg_loop *sig_owner; /* the loop that owns the process's signals */

static void on_wakeup(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events,
                      void *userdata) {
  (void)events;
  (void)userdata;
  unsigned char buf[64];
  ssize_t n;
  while ((n = appmsg__wakeup_recv(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != 0) /* 0: appmsg_loop_stop_async(), not a signal */
        loop->last_signal = buf[i];
  appmsg_loop_stop(loop);
}

int appmsg_loop_stop_async(struct appmsg_loop *loop) {
  return appmsg__wakeup_send(loop->sig_wfd, 0);
}

static void signals_teardown(struct appmsg_loop *loop) {
  if (sig_owner == loop) {
    appmsg__signals_release();
    sig_owner = NULL;
  }
}

static int signals_setup_pipe(struct appmsg_loop *loop) {
  appmsg_socket_t rd, wr;
  int rc = appmsg__wakeup_open(&rd, &wr);
  if (rc < 0)
    return rc;
  rc = watch_flags(loop, rd, APPMSG_EV_READ, on_wakeup, NULL, APPMSG__WATCH_INTERNAL);
  if (rc < 0) {
    appmsg__wakeup_close(rd, wr);
    return rc;
  }
  loop->sig_rfd = rd;
  loop->sig_wfd = wr;
  return 0;
}

int appmsg_loop_stop_on_signals(struct appmsg_loop *loop, const int *signals, size_t n) {
  if (sig_owner != NULL && sig_owner != loop)
    return -EBUSY;
  for (size_t i = 0; i < n; i++)
    if (!appmsg__signal_catchable(signals[i]))
      return -EINVAL;
  if (n == 0) {
    signals_teardown(loop);
    return 0;
  }
  int rc = appmsg__signals_catch(signals, n, loop->sig_wfd);
  sig_owner = rc == 0 ? loop : NULL;
  return rc;
}

int appmsg_loop_signal(const struct appmsg_loop *loop) {
  return loop->last_signal;
}
