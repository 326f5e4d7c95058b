/*
 * The client library (see include/appmsg/client.h).
 *
 * Calls live in three places: the queue (not sent yet: not connected, or
 * over max_in_flight or the byte budget), the in-flight list (handed to
 * the connection, in the order the replies will come) and the free list.
 * A call that times out while in flight stays in the in-flight list
 * without its callback, as a placeholder, so that the replies after it
 * still match their calls; too many placeholders mean a server that no
 * longer answers, and the connection is made again.
 *
 * Timeouts cost no timer per call: each call keeps its deadline, and one
 * timer per client is armed for the earliest known.  When it fires, the
 * calls whose time is up fail and the timer is armed again for the
 * earliest left; a call that ends earlier costs nothing (at high rates,
 * arming and stopping a timer per call was most of the library's cost).
 *
 * Lifecycle.  Every callback of a call may make calls and may free the
 * client, so the client never runs one while its own state is half
 * changed: a lost connection first takes its calls off the in-flight list
 * and sets the state they will see, then tells them.  A client freed from
 * a callback is only marked; its memory goes at the end of the loop
 * iteration, and the code after each callback looks at the mark.
 *
 * Names are looked up off the loop (resolve.c): a numeric address at once,
 * a name on a resolver thread, one lookup per client at a time, so that a
 * resolver that never answers holds one thread, not one per attempt.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "appmsg/client.h"
#include "codec_internal.h"
#include "conn_internal.h"
#include "header_internal.h"
#include "json_internal.h"
#include "loop_internal.h"
#include "resolve.h"
#include "platform.h"
#include "util.h"

struct call {
  struct call *next;    /* in the queue, the in-flight list or the free list */
  appmsg_call_fn cb;    /* NULL once it has been answered (a placeholder) */
  void *ud;             /* handed to cb */
  uint64_t deadline;    /* clock time its timeout ends (0: none) */
  unsigned char *frame; /* its frame while queued (allocated) */
  size_t frame_len;     /* the frame's length */
  uint64_t end;         /* once sent: where its frame ends in the bytes handed to the connection */
  char rid[32];         /* the request-id it was sent with, as JSON text */
  char *rid_long;       /* ...in an allocation of its own when it does not fit rid */
  size_t rid_len;       /* 0: none */
};

enum state {
  S_RESOLVING,  /* the name is being looked up */
  S_CONNECTING, /* a connect (and a TLS handshake) is under way */
  S_UP,         /* connected */
  S_WAITING,    /* waiting to try again (backoff) */
  S_DOWN,       /* not trying any more (reconnect off) */
};

struct list {
  struct call *head, *tail;
  size_t n;
};

struct appmsg_client {
  struct appmsg_loop *loop;
  const struct appmsg_client_opts *opts;
  struct appmsg_conn_opts copts; /* opts->conn as the connection uses it */
  char *host, *port;             /* where to */
  char where[APPMSG_ADDRSTRLEN]; /* "host:port" for messages */
  enum state state;
  struct appmsg_conn *conn;      /* while connecting or up */
  struct appmsg__lookup *lookup; /* a name lookup not answered yet */
  struct addrinfo *ai_list;      /* the addresses of this attempt */
  struct addrinfo *ai_next;      /* the next one to try */
  int unix_tried;                /* a Unix path: tried in this attempt */
  struct appmsg_timer retry;     /* backoff, and the resolve and connect timeouts */
  struct appmsg_timer timeouts;  /* armed for the earliest call deadline */
  uint64_t timeouts_due;         /* when */
  uint32_t backoff;              /* the next delay, before jitter */
  int last_err;                  /* why the last attempt failed */
  char last_reason[APPMSG_NET_ERRLEN];
  int conn_err;                        /* why the connection failed (TLS, a bad reply), or 0 */
  char conn_reason[APPMSG_NET_ERRLEN]; /* its sentence */
  struct list queue, flight;           /* see above */
  size_t queued_bytes;                 /* the frames in the queue */
  uint64_t handed;                     /* bytes handed to the connection since it was made */
  size_t stale;                        /* placeholders in flight */
  struct call *free_calls;             /* pooled */
  struct appmsg_prepared *json;        /* text/json, utf-8 */
  uint64_t next_id;                    /* automatic request ids */
  uint64_t connects;                   /* connections made */
  uint64_t rng;                        /* jitter */
  int freeing;                         /* appmsg_client_free() was called */
  struct appmsg__deferred gone;        /* frees the client at the end of the iteration */
};

/* ---- small things ------------------------------------------------------ */

#define cl_log(c, level, ...) appmsg__logf((c)->opts->log, (c)->opts->log_ud, level, __VA_ARGS__)

static void push(struct list *l, struct call *k) {
  k->next = NULL;
  if (l->tail)
    l->tail->next = k;
  else
    l->head = k;
  l->tail = k;
  l->n++;
}

static struct call *pop(struct list *l) {
  struct call *k = l->head;
  if (k) {
    l->head = k->next;
    if (l->head == NULL)
      l->tail = NULL;
    l->n--;
    k->next = NULL;
  }
  return k;
}

/* Takes k out of l, wherever it is (O(n); for id matches). */
static void unlink_call(struct list *l, struct call *k) {
  struct call *prev = NULL;
  for (struct call *x = l->head; x; prev = x, x = x->next) {
    if (x != k)
      continue;
    if (prev)
      prev->next = x->next;
    else
      l->head = x->next;
    if (l->tail == x)
      l->tail = prev;
    l->n--;
    x->next = NULL;
    return;
  }
}

/* The request-id a call was sent with (rid_len bytes). */
static const char *call_rid(const struct call *k) {
  return k->rid_long ? k->rid_long : k->rid;
}

static void call_put(struct appmsg_client *c, struct call *k) {
  appmsg__free(k->frame);
  appmsg__free(k->rid_long);
  memset(k, 0, sizeof *k);
  k->next = c->free_calls;
  c->free_calls = k;
}

/* Runs k's callback (once) with a reply that is not one: status, the
 * sentence, and the error behind it (cause). */
static void fail_call(struct call *k, int status, int cause, const char *reason) {
  appmsg_call_fn cb = k->cb;
  k->cb = NULL;
  if (cb) {
    struct appmsg_reply r = {.status = status, .cause = cause, .reason = reason, .content = ""};
    cb(&r, k->ud);
  }
}

/* Fails every call of l (taken off it first: callbacks may make calls) and pools them. */
static void fail_list(struct appmsg_client *c, struct list *l, int status, int cause,
                      const char *reason) {
  struct list mine = *l;
  *l = (struct list){0};
  struct call *k;
  while ((k = pop(&mine)) != NULL) {
    fail_call(k, status, cause, reason);
    call_put(c, k);
  }
}

static uint64_t next_random(struct appmsg_client *c) {
  c->rng ^= c->rng << 13; /* xorshift64: jitter needs no more */
  c->rng ^= c->rng >> 7;
  c->rng ^= c->rng << 17;
  return c->rng;
}

/* The backoff's bounds: 0 means the default (100 ms, 5 s); the largest is
 * never below the smallest - never a busy loop. */
static uint32_t backoff_min(const struct appmsg_client *c) {
  return c->opts->backoff_min_ms ? c->opts->backoff_min_ms : 100;
}

static uint32_t backoff_max(const struct appmsg_client *c) {
  uint32_t m = c->opts->backoff_max_ms ? c->opts->backoff_max_ms : 5000;
  return m < backoff_min(c) ? backoff_min(c) : m;
}

/* The most placeholders a connection may collect before it is made again.  Placeholders count
 * against max_in_flight: a window full of them sends nothing more until late replies come, which
 * a server that dropped the requests never sends - so a full window is too many. */
static size_t stale_max(const struct appmsg_client *c) {
  if (c->opts->max_in_flight)
    return c->opts->max_in_flight - 1;
  return c->opts->max_queued ? c->opts->max_queued : 1024;
}

/* ---- sending ----------------------------------------------------------- */

/* Bytes handed to the connection and not yet written to its socket. */
static size_t unsent(const struct appmsg_client *c) {
  return c->conn ? appmsg_conn_pending(c->conn) : 0;
}

/* Whether a frame of n bytes fits the byte budget beside the waiting bytes (one frame always
 * fits when nothing waits, however large). */
static int fits_budget(const struct appmsg_client *c, size_t waiting, size_t n) {
  return waiting == 0 || c->opts->max_queued_bytes == 0 || waiting + n <= c->opts->max_queued_bytes;
}

/* Whether n more bytes fit the byte budget: the queue's and the
 * connection's unsent bytes together wait. */
static int bytes_fit(const struct appmsg_client *c, size_t n) {
  return fits_budget(c, c->queued_bytes + unsent(c), n);
}

/* Whether a frame of n bytes may be handed to the connection now:
 * connected, under max_in_flight, within the byte budget. */
static int room_to_send(const struct appmsg_client *c, size_t n) {
  if (c->state != S_UP || c->conn == NULL)
    return 0;
  if (c->opts->max_in_flight && c->flight.n >= c->opts->max_in_flight)
    return 0;
  return fits_budget(c, unsent(c), n);
}

static void push_front(struct list *l, struct call *k) {
  k->next = l->head;
  l->head = k;
  if (l->tail == NULL)
    l->tail = k;
  l->n++;
}

/* A call whose frame the connection has just taken: in flight, ending where the bytes handed
 * over end now (see lost()). */
static void in_flight(struct appmsg_client *c, struct call *k) {
  c->handed += k->frame_len;
  k->end = c->handed;
  push(&c->flight, k);
}

/* Hands queued calls to the connection while there is room.  Runs the
 * callback of a call that cannot be handed over for lack of memory. */
static void send_queued(struct appmsg_client *c) {
  while (c->queue.head && !c->freeing && room_to_send(c, c->queue.head->frame_len)) {
    struct call *k = pop(&c->queue);
    c->queued_bytes -= k->frame_len;
    int rc = appmsg_conn_send_raw(c->conn, k->frame, k->frame_len);
    if (rc == APPMSG_E_CLOSED || rc == APPMSG_E_OUTPUT_FULL) {
      /* The connection is ending: the call was not handed over, and waits
       * for the next one. */
      push_front(&c->queue, k);
      c->queued_bytes += k->frame_len;
      return;
    }
    if (rc != 0) {
      /* No memory to hand it over (the connection goes on): it fails,
       * never sent, and the calls behind it go on - kept in the queue it
       * would wait for an event that may never come. */
      char reason[APPMSG_ADDRSTRLEN + 64];
      snprintf(reason, sizeof reason, "not sent to %s: %s", c->where, appmsg_strerror(rc));
      fail_call(k, APPMSG_E_NOT_SENT, rc, reason);
      call_put(c, k);
      continue;
    }
    appmsg__free(k->frame);
    k->frame = NULL;
    in_flight(c, k);
  }
}

/* Arms the timeouts timer for a deadline if it is the earliest known.  Returns 0, or -ENOMEM
 * when the loop's timer heap cannot grow (only for a timer that is not armed). */
static int arm_timeouts(struct appmsg_client *c, uint64_t deadline) {
  if (appmsg_timer_active(&c->timeouts) && c->timeouts_due <= deadline)
    return 0;
  uint64_t now = appmsg__clock_ms();
  int rc = appmsg_timer_start(c->loop, &c->timeouts, deadline > now ? deadline - now : 0, 0);
  if (rc == 0)
    c->timeouts_due = deadline;
  return rc;
}

/* Why a queued call is still not sent, for its callback. */
static void not_sent_reason(const struct appmsg_client *c, char *out, size_t n) {
  if (c->state == S_UP)
    snprintf(out, n, "not sent to %s in time: the calls before it were not answered", c->where);
  else if (c->last_err)
    snprintf(out, n, "not sent: %s", c->last_reason);
  else
    snprintf(out, n, "not sent: no connection to %s in time", c->where);
}

static void on_timeouts(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)t;
  struct appmsg_client *c = ud;
  uint64_t now = appmsg_loop_now(loop), next = 0;
  /* The queue's calls whose time is up are taken off it first (their
   * callbacks may make calls); they were never sent. */
  struct list due = {0};
  for (struct call *k = c->queue.head, *prev = NULL, *nk; k; k = nk) {
    nk = k->next;
    if (!(k->deadline && k->deadline <= now)) {
      prev = k;
      continue;
    }
    if (prev)
      prev->next = nk;
    else
      c->queue.head = nk;
    if (c->queue.tail == k)
      c->queue.tail = prev;
    c->queue.n--;
    c->queued_bytes -= k->frame_len;
    push(&due, k);
  }
  char reason[APPMSG_NET_ERRLEN + 64];
  not_sent_reason(c, reason, sizeof reason);
  fail_list(c, &due, APPMSG_E_NOT_SENT, APPMSG_E_TIMEOUT, reason);
  /* In flight, a late call stays as a placeholder.  Callbacks only append
   * to this list, and a client freed meanwhile keeps its memory until the
   * end of the iteration, so walking it is safe. */
  snprintf(reason, sizeof reason, "no reply from %s in time", c->where);
  for (struct call *k = c->flight.head; k; k = k->next)
    if (k->cb && k->deadline && k->deadline <= now) {
      c->stale++;
      fail_call(k, APPMSG_E_TIMEOUT, APPMSG_E_TIMEOUT, reason);
    }
  if (c->freeing)
    return;
  if (c->conn && c->state == S_UP && c->stale > stale_max(c)) {
    /* The server no longer answers on this connection: the replies owed
     * would only be read and dropped.  A new connection starts afresh. */
    c->conn_err = APPMSG_E_TIMEOUT;
    snprintf(c->conn_reason, sizeof c->conn_reason,
             "%zu calls to %s timed out without a reply; connecting again", c->stale, c->where);
    cl_log(c, APPMSG_LOG_WARN, "%s", c->conn_reason);
    appmsg_conn_abort(c->conn, APPMSG_E_TIMEOUT);
  }
  for (int w = 0; w < 2; w++)
    for (struct call *k = w ? c->flight.head : c->queue.head; k; k = k->next)
      if (k->cb && k->deadline && (next == 0 || k->deadline < next))
        next = k->deadline;
  if (next)
    arm_timeouts(c, next);
}

/* Writes the frame of a call (header with its request-id, content) into
 * e, or straight into the connection's output when e is NULL. */
static int build_frame(struct appmsg_client *c, struct call *k, const struct appmsg_call *call,
                       struct appmsg_encoder *e) {
  char extra[64 + sizeof k->rid];
  size_t extra_len = 0;
  const char *rid = call->request_id;
  char auto_id[24];
  if (rid == NULL && c->opts->request_ids) {
    snprintf(auto_id, sizeof auto_id, "%llu", (unsigned long long)++c->next_id);
    rid = auto_id;
  }
  const char *type = call->content_type ? call->content_type : "text/json";
  int is_json = strcmp(type, "text/json") == 0;
  const char *enc = call->content_encoding ? call->content_encoding : is_json ? "utf-8" : "binary";
  size_t rid_n = rid ? strlen(rid) : 0;
  /* A request-id is JSON text: the whitespace around it is no part of the value, which is what
   * the server reads and echoes - the call is kept, sent and matched with the value alone. */
  while (rid_n && appmsg__json_ws((unsigned char)rid[0]))
    rid++, rid_n--;
  while (rid_n && appmsg__json_ws((unsigned char)rid[rid_n - 1]))
    rid_n--;
  if (rid && rid_n > 0) {
    char *to = k->rid;
    if (rid_n >= sizeof k->rid && (to = k->rid_long = appmsg__malloc(rid_n)) == NULL)
      return -ENOMEM;
    memcpy(to, rid, rid_n);
    k->rid_len = rid_n;
  }
  if (is_json && call->content_encoding == NULL && call->extras == NULL &&
      (rid == NULL || (k->rid_len > 0 && k->rid_long == NULL))) {
    if (rid) {
      if (appmsg_json_check(rid, k->rid_len, APPMSG_HEADER_DEPTH_MAX - 1, NULL, NULL) != 0)
        return -EINVAL;
      extra_len =
          (size_t)snprintf(extra, sizeof extra, ", \"request-id\": %.*s", (int)k->rid_len, k->rid);
    }
    if (e == NULL)
      return appmsg__conn_send_prepared_ex(c->conn, c->json, extra, extra_len, call->content,
                                           call->len);
    return appmsg__encoder_push_prepared(e, c->json, extra, extra_len, call->content, call->len);
  }
  /* The general path: any type, any request-id. */
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc = appmsg_header_set(&h, type, enc);
  if (rc == 0 && rid)
    rc = appmsg_header_set_extra_json(&h, "request-id", rid);
  for (const char *const *x = call->extras; rc == 0 && x && x[0]; x += 2) {
    if (x[1] == NULL || strcmp(x[0], "request-id") == 0)
      rc = -EINVAL;
    else
      rc = appmsg_header_set_extra_json(&h, x[0], x[1]); /* (checks key and value) */
  }
  if (rc == 0)
    rc = e ? appmsg_encoder_push(e, &h, call->content, call->len)
           : appmsg_conn_send(c->conn, &h, call->content, call->len);
  appmsg_header_cleanup(&h);
  return rc < 0 && rc != -ENOMEM && rc != APPMSG_E_CLOSED && rc != APPMSG_E_OUTPUT_FULL ? -EINVAL
                                                                                        : rc;
}

/* Puts a call's frame in the queue, within its limits. */
static int enqueue_call(struct appmsg_client *c, struct call *k, const struct appmsg_call *call) {
  if (c->queue.n >= c->opts->max_queued)
    return APPMSG_E_QUEUE_FULL;
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  int rc = build_frame(c, k, call, &e);
  size_t n = 0;
  const void *p = rc == 0 ? appmsg_encoder_peek(&e, &n) : NULL;
  if (rc == 0 && !bytes_fit(c, n))
    rc = APPMSG_E_QUEUE_FULL;
  if (rc == 0) {
    k->frame = appmsg__malloc(n ? n : 1);
    rc = k->frame ? 0 : -ENOMEM;
  }
  if (rc == 0) {
    memcpy(k->frame, p, n);
    k->frame_len = n;
    push(&c->queue, k);
    c->queued_bytes += n;
  }
  appmsg_encoder_cleanup(&e);
  return rc;
}

int appmsg_client_send(struct appmsg_client *c, const struct appmsg_call *call, appmsg_call_fn cb,
                       void *ud) {
  if (cb == NULL || call == NULL || (call->content == NULL && call->len > 0) || c->freeing)
    return -EINVAL;
  if (c->state == S_DOWN || (c->state == S_WAITING && c->opts->max_queued == 0))
    return c->last_err ? c->last_err : APPMSG_E_CLOSED;
  /* From the moment of the call, not from the loop's clock, which stands still while the
   * program works outside the loop.  The timer is armed first: a call is never taken that
   * could not time out. */
  uint32_t t = call->timeout_ms ? call->timeout_ms : c->opts->call_timeout_ms;
  uint64_t deadline = t ? appmsg__clock_ms() + t : 0;
  if (deadline && arm_timeouts(c, deadline) != 0)
    return -ENOMEM;
  struct call *k = c->free_calls;
  if (k)
    c->free_calls = k->next;
  else if ((k = appmsg__calloc(1, sizeof *k)) == NULL)
    return -ENOMEM;
  memset(k, 0, sizeof *k);
  k->cb = cb;
  k->ud = ud;
  int rc = -EAGAIN;
  if (c->queue.n == 0 && room_to_send(c, 0)) {
    /* Straight into the connection's output: no copy of our own. */
    size_t before = appmsg_conn_pending(c->conn);
    rc = build_frame(c, k, call, NULL);
    if (rc == 0) {
      k->frame_len = appmsg_conn_pending(c->conn) - before;
      if (fits_budget(c, before, k->frame_len)) {
        in_flight(c, k);
      } else { /* over the budget (the bytes waiting count, queue or not): taken back */
        appmsg__conn_unsend(c->conn, before);
        rc = APPMSG_E_QUEUE_FULL;
      }
    } else if (rc == APPMSG_E_CLOSED || rc == APPMSG_E_OUTPUT_FULL) {
      rc = -EAGAIN; /* the connection is ending: the call waits for the next one */
    }
  }
  if (rc == -EAGAIN)
    rc = enqueue_call(c, k, call);
  if (rc) {
    call_put(c, k);
    return rc;
  }
  k->deadline = deadline;
  return 0;
}

/* A request's content, on the stack while it is small. */
struct body {
  char *p;
  size_t len, cap;
  char stack[512];
};

/* Makes room for n more bytes. */
static int body_room(struct body *b, size_t n) {
  if (b->cap - b->len >= n)
    return 0;
  size_t cap = 2 * b->cap + n;
  char *np = b->p == b->stack ? appmsg__malloc(cap) : appmsg__realloc(b->p, cap);
  if (np == NULL)
    return -ENOMEM;
  if (b->p == b->stack)
    memcpy(np, b->stack, b->len);
  b->p = np;
  b->cap = cap;
  return 0;
}

static int body_add(struct body *b, const char *s, size_t n) {
  int rc = body_room(b, n);
  if (rc == 0) {
    memcpy(b->p + b->len, s, n);
    b->len += n;
  }
  return rc;
}

/* Appends s quoted as a JSON string. */
static int body_quoted(struct body *b, const char *s) {
  size_t n = strlen(s);
  if (appmsg_utf8_check(s, n) != n)
    return -EINVAL;
  size_t q = appmsg_json_quote(s, n, b->p + b->len, b->cap - b->len);
  if (q > b->cap - b->len) { /* it did not fit: quote again with room */
    int rc = body_room(b, q);
    if (rc)
      return rc;
    appmsg_json_quote(s, n, b->p + b->len, q);
  }
  b->len += q;
  return 0;
}

/* Sends b as a text/json request when rc is 0, and lets b go. */
static int send_body(struct appmsg_client *c, struct body *b, int rc, appmsg_call_fn cb, void *ud) {
  if (rc == 0) {
    struct appmsg_call call = {0};
    call.content = b->p;
    call.len = b->len;
    rc = appmsg_client_send(c, &call, cb, ud);
  }
  if (b->p != b->stack)
    appmsg__free(b->p);
  return rc;
}

static int call_va(struct appmsg_client *c, appmsg_call_fn cb, void *ud, const char *action,
                   va_list ap) {
  struct body b;
  b.p = b.stack;
  b.len = 0;
  b.cap = sizeof b.stack;
  int rc = body_add(&b, "{\"action\": ", 11);
  if (rc == 0)
    rc = action ? body_quoted(&b, action) : -EINVAL;
  for (const char *key; rc == 0 && (key = va_arg(ap, const char *)) != NULL;) {
    const char *value = va_arg(ap, const char *);
    rc = value ? body_add(&b, ", ", 2) : -EINVAL;
    if (rc == 0)
      rc = body_quoted(&b, key);
    if (rc == 0)
      rc = body_add(&b, ": ", 2);
    if (rc == 0)
      rc = body_quoted(&b, value);
  }
  if (rc == 0)
    rc = body_add(&b, "}", 1);
  return send_body(c, &b, rc, cb, ud);
}

int appmsg_client_call(struct appmsg_client *c, appmsg_call_fn cb, void *ud, const char *action,
                       ...) {
  va_list ap;
  va_start(ap, action);
  int rc = call_va(c, cb, ud, action, ap);
  va_end(ap);
  return rc;
}

/* ---- typed members ------------------------------------------------------------- */

/* Appends d in the shortest form that reads back as the same double. */
static int body_number(struct body *b, double d) {
  if (!isfinite(d))
    return -EINVAL;
  char num[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(num, sizeof num, "%.*g", prec, d);
    if (strtod(num, NULL) == d)
      break;
  }
  /* printf() writes the locale's decimal point (',' in some): JSON's is '.'. */
  char point = localeconv()->decimal_point[0];
  if (point != '.' && point != '\0')
    for (char *q = num; *q; q++)
      if (*q == point)
        *q = '.';
  /* "%g" never writes a form JSON refuses ("inf", a leading "+" or "."): only digits, '-',
   * '.', 'e' and the exponent's sign, which JSON takes as they are. */
  return body_add(b, num, strlen(num));
}

static int body_arg(struct body *b, const struct appmsg_arg *a) {
  char num[32];
  int rc = a->key ? body_add(b, ", ", 2) : -EINVAL;
  if (rc == 0)
    rc = body_quoted(b, a->key);
  if (rc == 0)
    rc = body_add(b, ": ", 2);
  if (rc)
    return rc;
  switch (a->type) {
  case APPMSG_ARG_STRING:
    return a->s ? body_quoted(b, a->s) : -EINVAL;
  case APPMSG_ARG_INT:
    snprintf(num, sizeof num, "%lld", a->i);
    return body_add(b, num, strlen(num));
  case APPMSG_ARG_NUMBER:
    return body_number(b, a->d);
  case APPMSG_ARG_BOOL:
    return a->i ? body_add(b, "true", 4) : body_add(b, "false", 5);
  case APPMSG_ARG_NULL:
    return body_add(b, "null", 4);
  case APPMSG_ARG_JSON: {
    if (a->s == NULL)
      return -EINVAL;
    size_t n = a->len ? a->len : strlen(a->s);
    if (appmsg_json_check(a->s, n, 64, NULL, NULL) != 0)
      return -EINVAL;
    return body_add(b, a->s, n);
  }
  }
  return -EINVAL;
}

/* The request {"action": ACTION, ...} of typed members into b. */
static int body_args(struct body *b, const char *action, const struct appmsg_arg *args, size_t n) {
  b->p = b->stack;
  b->len = 0;
  b->cap = sizeof b->stack;
  int rc = action ? body_add(b, "{\"action\": ", 11) : -EINVAL;
  if (rc == 0)
    rc = body_quoted(b, action);
  if (rc == 0 && n > 0 && args == NULL)
    rc = -EINVAL;
  for (size_t i = 0; rc == 0 && i < n; i++)
    rc = body_arg(b, &args[i]);
  if (rc == 0)
    rc = body_add(b, "}", 1);
  return rc;
}

int appmsg_request_build(char **out, size_t *len, const char *action, const struct appmsg_arg *args,
                         size_t n) {
  struct body b;
  int rc = body_args(&b, action, args, n);
  char *p = NULL;
  if (rc == 0 && (p = appmsg__malloc(b.len + 1)) == NULL)
    rc = -ENOMEM;
  if (rc == 0) {
    memcpy(p, b.p, b.len);
    p[b.len] = '\0';
    *out = p;
    *len = b.len;
  }
  if (b.p != b.stack)
    appmsg__free(b.p);
  return rc;
}

int appmsg_client_call_args(struct appmsg_client *c, appmsg_call_fn cb, void *ud,
                            const char *action, const struct appmsg_arg *args, size_t n) {
  struct body b;
  int rc = body_args(&b, action, args, n);
  return send_body(c, &b, rc, cb, ud);
}

/* ---- replies ----------------------------------------------------------------- */

/* What a text/json reply says: "result" and "error", last ones winning. */
struct reply_members {
  struct appmsg_json_member result, error;
  int has_result, has_error;
};

static void reply_member(void *ud, const struct appmsg_json_member *m) {
  struct reply_members *r = ud;
  if (appmsg__json_key_is(m, "result", 6)) {
    r->result = *m;
    r->has_result = 1;
  } else if (appmsg__json_key_is(m, "error", 5)) {
    r->error = *m;
    r->has_error = 1;
  }
}

/* The length of TEXT when content is exactly {"result": "TEXT"}, TEXT
 * holding no backslash, quote or control character and being valid UTF-8
 * (so that it needs no unescaping); else 0 and the general path. */
static size_t plain_result(const void *content, size_t len) {
  static const char head[] = "{\"result\": \"";
  const unsigned char *p = content;
  if (len < sizeof head + 1 || memcmp(p, head, sizeof head - 1) != 0 || p[len - 2] != '"' ||
      p[len - 1] != '}')
    return 0;
  size_t n = len - (sizeof head - 1) - 2;
  const unsigned char *t = p + sizeof head - 1;
  if (appmsg__json_plain_run(t, n) != n)
    return 0;
  return appmsg_utf8_check(t, n) == n ? n : 0;
}

/* Which call a reply answers: the one whose request-id it carries, else
 * the oldest in flight. */
static struct call *match(struct appmsg_client *c, const struct appmsg_header *h) {
  struct call *k = NULL;
  if (appmsg__header_has_extras(h) && c->flight.head) {
    char buf[64], *rid = buf;
    long n = appmsg_header_extra_raw(h, "request-id", buf, sizeof buf);
    if (n > (long)sizeof buf && (rid = appmsg__malloc((size_t)n)) != NULL)
      appmsg_header_extra_raw(h, "request-id", rid, (size_t)n);
    if (n > 0 && rid)
      for (struct call *x = c->flight.head; x; x = x->next)
        if (x->rid_len == (size_t)n && memcmp(call_rid(x), rid, (size_t)n) == 0) {
          unlink_call(&c->flight, x);
          k = x;
          break;
        }
    if (rid != buf)
      appmsg__free(rid);
  }
  if (k == NULL)
    k = pop(&c->flight);
  if (k && k->cb == NULL)
    c->stale--; /* the late reply of a call that timed out */
  return k;
}

static void on_message(struct appmsg_conn *conn, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  struct appmsg_client *c = ud;
  if (c == NULL)
    return; /* the client is gone */
  struct call *k = match(c, h);
  if (k == NULL) {
    c->conn_err = APPMSG_E_CLOSED;
    snprintf(c->conn_reason, sizeof c->conn_reason, "%s sent a reply nobody asked for", c->where);
    cl_log(c, APPMSG_LOG_WARN, "%s; closing", c->conn_reason);
    appmsg_conn_abort(conn, APPMSG_E_CLOSED);
    return;
  }
  if (k->cb) {
    struct appmsg_reply r = {.header = h, .content = content, .len = len};
    struct reply_members m = {0};
    char stack[512], *heap = NULL, errname[65];
    enum appmsg_json_type top;
    size_t plain = strcmp(h->content_type, "text/json") == 0 ? plain_result(content, len) : 0;
    int oom = 0; /* no memory for the result's text */
    if (plain) { /* {"result": "TEXT"} with nothing to unescape: the common reply */
      char *b = plain < sizeof stack ? stack : (heap = appmsg__malloc(plain + 1));
      if (b) {
        memcpy(b, (const char *)content + 12, plain);
        b[plain] = '\0';
        r.result = b;
      } else {
        oom = 1;
      }
      r.result_json = (const char *)content + 11;
      r.result_json_len = plain + 2;
    } else if (strcmp(h->content_type, "text/json") == 0 &&
               appmsg_json_scan(content, len, 64, &top, reply_member, &m, NULL, NULL) == 0 &&
               top == APPMSG_JSON_OBJECT && m.has_result) {
      const struct appmsg_json_member *res = &m.result;
      int quoted = res->type == APPMSG_JSON_STRING;
      r.result_json = res->val - quoted;
      r.result_json_len = res->val_len + 2 * (size_t)quoted;
      if (quoted) {
        char *b = res->val_len < sizeof stack ? stack : (heap = appmsg__malloc(res->val_len + 1));
        if (b) {
          b[appmsg_json_unescape(res->val, res->val_len, b)] = '\0';
          r.result = b;
        } else {
          oom = 1;
        }
      }
      if (m.has_error && m.error.type == APPMSG_JSON_STRING && m.error.val_len < sizeof errname) {
        errname[appmsg_json_unescape(m.error.val, m.error.val_len, errname)] = '\0';
        r.error = errname;
        r.status = APPMSG_E_ERROR_REPLY;
        r.cause = APPMSG_E_ERROR_REPLY;
        r.reason = r.result ? r.result : "the server answered with an error reply";
      }
    }
    if (oom) {
      /* A reply whose result cannot be given is not given as a success
       * without it: the call fails with -ENOMEM (its header and content are
       * still there); the connection and the other calls go on. */
      r.status = r.cause = -ENOMEM;
      r.reason = "out of memory for the reply's result";
      r.result = NULL;
      r.error = NULL;
    }
    appmsg_call_fn cb = k->cb;
    k->cb = NULL;
    cb(&r, k->ud);
    appmsg__free(heap);
  }
  call_put(c, k);
  if (!c->freeing)
    send_queued(c);
}

/* A TLS failure (or a handshake that timed out) ends the connection as on_close says; its
 * sentence is kept for the calls it fails. */
static int tls_failure(const struct appmsg_client *c, int err) {
  return c->copts.tls &&
         (appmsg__is_tls_error(err) || (err == APPMSG_E_TIMEOUT && c->state == S_CONNECTING));
}

static void on_error(struct appmsg_conn *conn, int err, const char *reason, uint64_t offset,
                     void *ud) {
  struct appmsg_client *c = ud;
  if (c == NULL)
    return;
  /* The connection ends on this: its calls in flight fail with this code and sentence. */
  const char *why = reason ? reason : appmsg_strerror(err);
  c->conn_err = err;
  if (tls_failure(c, err)) {
    snprintf(c->conn_reason, sizeof c->conn_reason, "TLS with %s failed: %s", c->where, why);
    cl_log(c, APPMSG_LOG_WARN, "%s", c->conn_reason);
    return;
  }
  snprintf(c->conn_reason, sizeof c->conn_reason, "bad reply from %s: %s at offset %llu: %s",
           c->where, appmsg_errname(err), (unsigned long long)offset, why);
  cl_log(c, APPMSG_LOG_WARN, "%s", c->conn_reason);
  /* Nothing more can be read from this connection, and a client owes its server nothing: it
   * ends now, and the calls in flight get the code in this iteration.  (The connection's
   * graceful close would half-close it and linger up to 2 s for the server's EOF: the calls
   * would wait for a reply that cannot come, and one whose timeout came first would be
   * reported as late.) */
  appmsg_conn_abort(conn, err);
}

/* ---- connecting ---------------------------------------------------------------- */

static void attempt(struct appmsg_client *c);
static void try_next(struct appmsg_client *c);

/* Every address failed (or the name did): wait and try again, or give up.
 * The calls waiting are told last, when the client is as they will see it. */
static void attempt_failed(struct appmsg_client *c) {
  freeaddrinfo(c->ai_list);
  c->ai_list = c->ai_next = NULL;
  int give_up = !c->opts->reconnect;
  c->state = give_up ? S_DOWN : S_WAITING;
  if (give_up) {
    cl_log(c, APPMSG_LOG_INFO, "%s", c->last_reason);
  } else {
    uint32_t d = c->backoff;
    uint32_t delay = d / 2 + (uint32_t)(next_random(c) % (d - d / 2 + 1));
    uint64_t next = (uint64_t)d * 2;
    uint32_t max = backoff_max(c);
    c->backoff = next > max ? max : (uint32_t)next;
    if (appmsg_timer_start(c->loop, &c->retry, delay, 0) == 0) {
      cl_log(c, APPMSG_LOG_INFO, "%s; trying again in %u ms", c->last_reason, delay);
    } else {
      /* No timer to connect again with (the loop's timer heap cannot grow): the client gives
       * up as with reconnect off, rather than wait for ever without trying. */
      c->state = S_DOWN;
      give_up = 1;
      c->last_err = -ENOMEM;
      snprintf(c->last_reason, sizeof c->last_reason,
               "cannot connect to %s again: no memory for the timer", c->where);
      cl_log(c, APPMSG_LOG_WARN, "%s", c->last_reason);
    }
  }
  if (give_up || c->opts->max_queued == 0) {
    char reason[APPMSG_NET_ERRLEN + 16];
    snprintf(reason, sizeof reason, "not sent: %s", c->last_reason);
    c->queued_bytes = 0;
    fail_list(c, &c->queue, APPMSG_E_NOT_SENT, c->last_err, reason);
  }
}

static void on_retry(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct appmsg_client *c = ud;
  if (c->state == S_CONNECTING && c->conn) {
    /* The connect took too long: next address.  A connect refused meanwhile says so in the
     * socket's error, where a poll that does not report failed connects (Windows' WSAPoll()
     * before Windows 10 2004) leaves it. */
    int soerr = appmsg_connect_result(appmsg_conn_fd(c->conn));
    appmsg_conn_abort(c->conn, soerr < 0 ? soerr : APPMSG_E_TIMEOUT);
  } else if (c->state == S_RESOLVING) {
    /* The resolver has not answered: this attempt fails, the lookup goes
     * on (the next attempt waits for it rather than start another). */
    c->last_err = APPMSG_E_ADDRESS;
    snprintf(c->last_reason, sizeof c->last_reason, "cannot resolve '%s': no answer within %u ms",
             c->host, c->opts->connect_timeout_ms);
    attempt_failed(c);
  } else if (c->state == S_WAITING) {
    attempt(c);
  }
}

static void on_connect(struct appmsg_conn *conn, int err, void *ud) {
  (void)conn;
  struct appmsg_client *c = ud;
  if (c == NULL || err)
    return; /* (on_close follows a failure: the next address) */
  appmsg_timer_stop(c->loop, &c->retry);
  freeaddrinfo(c->ai_list);
  c->ai_list = c->ai_next = NULL;
  c->state = S_UP;
  c->connects++;
  c->backoff = backoff_min(c);
  cl_log(c, APPMSG_LOG_INFO, "connected to %s", c->where);
  send_queued(c);
}

/*
 * Fails the calls of a connection that is lost (list, taken off the
 * client already).  Of the bytes handed to the connection, the first
 * written reached its socket: a call whose frame ends after them was
 * never sent (APPMSG_E_NOT_SENT: safe to try again); the others were,
 * and may have run (status).  (Each call knows where its frame ends: the
 * calls in flight are not all the bytes handed over - a call answered
 * before its bytes left, which a reply naming it by request-id can do, is
 * gone from the list, its bytes not.)
 */
static void lost(struct appmsg_client *c, struct list *l, uint64_t written, int status, int cause,
                 const char *why) {
  char not_sent[APPMSG_NET_ERRLEN + 16];
  snprintf(not_sent, sizeof not_sent, "not sent: %s", why);
  struct call *k;
  while ((k = pop(l)) != NULL) {
    if (k->end <= written)
      fail_call(k, status, cause, why);
    else
      fail_call(k, APPMSG_E_NOT_SENT, cause, not_sent);
    call_put(c, k);
  }
}

static void on_close(struct appmsg_conn *conn, int reason, void *ud) {
  struct appmsg_client *c = ud;
  if (c == NULL)
    return;
  uint64_t written = c->handed - appmsg__conn_unsent(conn);
  c->conn = NULL;
  int conn_err = c->conn_err;
  c->conn_err = 0;
  if (c->state == S_CONNECTING) {
    appmsg_timer_stop(c->loop, &c->retry);
    c->last_err = reason ? reason : APPMSG_E_CLOSED;
    if (conn_err) /* the handshake failed: its own sentence says why */
      snprintf(c->last_reason, sizeof c->last_reason, "%s", c->conn_reason);
    else
      snprintf(c->last_reason, sizeof c->last_reason, "cannot connect to %s: %s", c->where,
               reason == APPMSG_E_TIMEOUT ? "timed out" : appmsg_strerror(c->last_err));
    try_next(c);
    return;
  }
  /* A working connection ended: what was in flight is lost.  A bad reply or a TLS failure
   * (under TLS 1.3 a refusal of our certificate can come after the handshake) gives the
   * calls its own code and sentence; anything else is APPMSG_E_CLOSED. */
  char why[APPMSG_NET_ERRLEN];
  if (conn_err)
    snprintf(why, sizeof why, "%s", c->conn_reason);
  else
    snprintf(why, sizeof why, "the connection to %s was lost%s%s", c->where, reason ? ": " : "",
             reason ? appmsg_strerror(reason) : " (the server closed it)");
  int code = conn_err && conn_err != APPMSG_E_TIMEOUT ? conn_err : APPMSG_E_CLOSED;
  cl_log(c, APPMSG_LOG_INFO, "%s", why);
  c->last_err = code;
  snprintf(c->last_reason, sizeof c->last_reason, "%s", why);
  /* The state the callbacks see: not connected, waiting (or down). */
  c->state = c->opts->reconnect ? S_WAITING : S_DOWN;
  struct list gone = c->flight;
  c->flight = (struct list){0};
  c->stale = 0;
  lost(c, &gone, written, code, reason ? reason : code, why);
  if (!c->freeing)
    attempt_failed(c); /* waits backoff_min (jittered), then connects again */
}

/* The connection wrote everything handed to it: calls that waited for the byte budget go now,
 * not at the next reply (which may not come before their timeouts, or at all). */
static void on_written(struct appmsg_conn *conn, void *ud) {
  (void)conn;
  struct appmsg_client *c = ud;
  if (c != NULL && !c->freeing)
    send_queued(c);
}

static const struct appmsg_conn_callbacks conn_cbs = {
    .on_message = on_message, .on_error = on_error, .on_connect = on_connect, .on_close = on_close};

/* Starts a connect to the next address of this attempt, or ends it. */
static void try_next(struct appmsg_client *c) {
  for (;;) {
    appmsg_socket_t fd = APPMSG_INVALID_SOCKET;
    int pending = 0, rc;
    if (appmsg__is_unix(c->host)) {
      if (c->unix_tried)
        break;
      c->unix_tried = 1;
      char err[APPMSG_NET_ERRLEN];
      rc = appmsg_connect(c->host, c->port, &fd, &pending, err, sizeof err);
      if (rc)
        snprintf(c->last_reason, sizeof c->last_reason, "%s", err);
    } else {
      struct addrinfo *ai = c->ai_next;
      if (ai == NULL)
        break;
      c->ai_next = ai->ai_next;
      rc = appmsg_connect_addr(ai->ai_addr, (socklen_t)ai->ai_addrlen, &fd, &pending);
      if (rc)
        snprintf(c->last_reason, sizeof c->last_reason, "cannot connect to %s: %s", c->where,
                 appmsg_strerror(rc));
    }
    if (rc == 0)
      rc = appmsg_conn_new_connecting(&c->conn, c->loop, fd, &c->copts, &conn_cbs, c);
    if (rc == 0) {
      appmsg__conn_set_written_hook(c->conn, on_written);
      c->handed = 0;
      c->state = S_CONNECTING;
      /* Without its timeout the connect could wait for ever: it fails (on_close follows).
       * (connect_timeout_ms 0: none of its own.) */
      if (c->opts->connect_timeout_ms &&
          appmsg_timer_start(c->loop, &c->retry, c->opts->connect_timeout_ms, 0) != 0)
        appmsg_conn_abort(c->conn, -ENOMEM);
      return; /* on_connect, or on_close and the next one */
    }
    c->conn = NULL;
    c->last_err = rc;
  }
  attempt_failed(c);
}

/* The answer of a name lookup. */
static void looked_up(void *arg, int rc, struct addrinfo *ai, const char *err) {
  struct appmsg_client *c = arg;
  c->lookup = NULL;
  if (c->state != S_RESOLVING) { /* this attempt gave up on it; the next asks again */
    if (ai)
      freeaddrinfo(ai);
    return;
  }
  appmsg_timer_stop(c->loop, &c->retry);
  if (rc) {
    c->last_err = rc;
    snprintf(c->last_reason, sizeof c->last_reason, "%s", err);
    attempt_failed(c);
    return;
  }
  c->ai_list = c->ai_next = ai;
  try_next(c);
}

/* A new round: resolve, then try each address. */
static void attempt(struct appmsg_client *c) {
  c->unix_tried = 0;
  if (appmsg__is_unix(c->host)) {
    try_next(c);
    return;
  }
  /* An address needs no resolver. */
  if (appmsg__resolve(c->host, c->port, AI_NUMERICHOST | AI_NUMERICSERV, &c->ai_list, NULL, 0) ==
      0) {
    c->ai_next = c->ai_list;
    try_next(c);
    return;
  }
  c->state = S_RESOLVING;
  if (c->lookup == NULL) {
    int rc = appmsg__lookup_start(&c->lookup, c->loop, c->host, c->port, looked_up, c);
    if (rc) {
      c->lookup = NULL;
      c->last_err = rc;
      snprintf(c->last_reason, sizeof c->last_reason, "cannot resolve '%s': %s", c->host,
               appmsg_strerror(rc));
      attempt_failed(c);
      return;
    }
  }
  if (c->opts->connect_timeout_ms &&
      appmsg_timer_start(c->loop, &c->retry, c->opts->connect_timeout_ms, 0) != 0) {
    c->last_err = -ENOMEM; /* no timeout for the lookup: this attempt fails now */
    snprintf(c->last_reason, sizeof c->last_reason, "cannot resolve '%s': %s", c->host,
             appmsg_strerror(-ENOMEM));
    attempt_failed(c);
  }
}

/* ---- the client ----------------------------------------------------------------- */

void appmsg_client_opts_default(struct appmsg_client_opts *o) {
  memset(o, 0, sizeof *o);
  appmsg_conn_opts_default(&o->conn);
  o->conn.limits.max_content_length = (uint64_t)1 << 30;
  o->conn.idle_timeout_ms = 0;
  o->conn.frame_timeout_ms = 0;
  o->conn.read_pause = 0;
  o->conn.max_output = 0;
  o->connect_timeout_ms = 5000;
  o->call_timeout_ms = 10000;
  o->backoff_min_ms = 100;
  o->backoff_max_ms = 5000;
  o->max_queued = 1024;
  o->max_queued_bytes = (size_t)4 << 20;
  o->reconnect = 1;
}

static void really_free(struct appmsg__deferred *d);

int appmsg_client_new(struct appmsg_client **out, struct appmsg_loop *loop, const char *host,
                      const char *port, const struct appmsg_client_opts *opts) {
  struct appmsg_client *c = appmsg__calloc(1, sizeof *c);
  if (c == NULL)
    return -ENOMEM;
  c->loop = loop;
  c->opts = opts;
  c->copts = opts->conn;
  c->copts.idle_timeout_ms = 0;
  c->copts.frame_timeout_ms = 0; /* connects are timed here; calls have their own timeouts */
  c->host = appmsg__strdup(host ? host : "127.0.0.1");
  /* TLS: the server's name to verify is the host's, unless another is given. */
  if (c->host && c->copts.tls && !c->copts.tls_server_name && !appmsg__is_unix(c->host))
    c->copts.tls_server_name = c->host;
  c->port = appmsg__strdup(port ? port : "65432");
  c->backoff = backoff_min(c);
  c->rng = (uint64_t)time(NULL) ^ (appmsg__process_id() << 32) ^ (uint64_t)(uintptr_t)c;
  if (c->rng == 0)
    c->rng = 88172645463325252ULL;
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc = c->host && c->port ? appmsg_header_set(&h, "text/json", "utf-8") : -ENOMEM;
  if (rc == 0)
    rc = appmsg_prepared_new(&c->json, &h);
  appmsg_header_cleanup(&h);
  if (rc) {
    appmsg__free(c->host);
    appmsg__free(c->port);
    appmsg__free(c);
    return rc;
  }
  if (appmsg__is_unix(c->host))
    snprintf(c->where, sizeof c->where, "%s", c->host);
  else if (strchr(c->host, ':') && c->host[0] != '[')
    snprintf(c->where, sizeof c->where, "[%s]:%s", c->host, c->port);
  else
    snprintf(c->where, sizeof c->where, "%s:%s", c->host, c->port);
  appmsg_timer_init(&c->retry, on_retry, c);
  appmsg_timer_init(&c->timeouts, on_timeouts, c);
  appmsg__deferred_init(&c->gone, really_free);
  attempt(c); /* (no call yet: no callback can run) */
  *out = c;
  return 0;
}

const char *appmsg_client_last_error(const struct appmsg_client *c) {
  return c->last_err ? c->last_reason : "";
}

int appmsg_client_connected(const struct appmsg_client *c) {
  return c->state == S_UP;
}

size_t appmsg_client_pending(const struct appmsg_client *c) {
  return c->queue.n + c->flight.n - c->stale;
}

uint64_t appmsg_client_connects(const struct appmsg_client *c) {
  return c->connects;
}

static void really_free(struct appmsg__deferred *d) {
  struct appmsg_client *c =
      (struct appmsg_client *)((char *)d - offsetof(struct appmsg_client, gone));
  struct call *k;
  while ((k = pop(&c->queue)) != NULL)
    call_put(c, k);
  while ((k = pop(&c->flight)) != NULL)
    call_put(c, k);
  while ((k = c->free_calls) != NULL) {
    c->free_calls = k->next;
    appmsg__free(k);
  }
  appmsg_prepared_free(c->json);
  appmsg__free(c->host);
  appmsg__free(c->port);
  appmsg__free(c);
}

void appmsg_client_free(struct appmsg_client *c) {
  if (c == NULL || c->freeing)
    return;
  c->freeing = 1;
  appmsg_timer_stop(c->loop, &c->retry);
  appmsg_timer_stop(c->loop, &c->timeouts);
  if (c->lookup) {
    appmsg__lookup_cancel(c->lookup);
    c->lookup = NULL;
  }
  freeaddrinfo(c->ai_list);
  c->ai_list = c->ai_next = NULL;
  uint64_t written = c->handed;
  if (c->conn) {
    written -= appmsg__conn_unsent(c->conn);
    appmsg_conn_set_userdata(c->conn, NULL); /* its last callbacks find no client */
    appmsg_conn_abort(c->conn, APPMSG_E_CLOSED);
    c->conn = NULL;
  }
  c->state = S_DOWN;
  static const char why[] = "the client was closed";
  struct list l = c->flight;
  c->flight = (struct list){0};
  c->stale = 0;
  lost(c, &l, written, APPMSG_E_CLOSED, APPMSG_E_CLOSED, why);
  c->queued_bytes = 0;
  fail_list(c, &c->queue, APPMSG_E_NOT_SENT, APPMSG_E_CLOSED, "not sent: the client was closed");
  /* Its memory goes at the end of the iteration when a callback called
   * this (the client's own code may be under it), else now. */
  if (appmsg__loop_busy(c->loop)) {
    appmsg__loop_defer(c->loop, &c->gone);
  } else {
    appmsg__loop_run_deferred(c->loop);
    really_free(&c->gone);
  }
}

/* ---- one question, one answer ----------------------------------------------------- */

struct ask {
  struct appmsg_answer *a;
  int done;
};

static char *dup_n(const void *p, size_t n) {
  char *s = appmsg__malloc(n + 1);
  if (s) {
    memcpy(s, p, n);
    s[n] = '\0';
  }
  return s;
}

static void on_answer(const struct appmsg_reply *r, void *ud) {
  struct ask *q = ud;
  struct appmsg_answer *a = q->a;
  a->status = r->status;
  a->cause = r->cause;
  a->reason = r->reason ? appmsg__strdup(r->reason) : NULL;
  a->content_type = r->header ? appmsg__strdup(r->header->content_type) : NULL;
  a->content = dup_n(r->content, r->len);
  a->len = r->len;
  a->result = r->result ? appmsg__strdup(r->result) : NULL;
  a->result_json = r->result_json ? dup_n(r->result_json, r->result_json_len) : NULL;
  a->error = r->error ? appmsg__strdup(r->error) : NULL;
  q->done = 1;
}

/* Runs a one-call client; send starts the call. */
static int ask(const char *host, const char *port, const struct appmsg_client_opts *with,
               uint32_t timeout_ms, struct appmsg_answer *a,
               int (*send)(struct appmsg_client *, struct ask *, void *), void *arg) {
  memset(a, 0, sizeof *a);
  struct appmsg_loop *loop;
  int rc = appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT);
  if (rc)
    return a->status = rc;
  struct appmsg_client_opts o;
  if (with)
    o = *with;
  else
    appmsg_client_opts_default(&o);
  o.connect_timeout_ms = timeout_ms;
  o.call_timeout_ms = timeout_ms;
  o.reconnect = 0;
  o.max_queued = 1;
  struct appmsg_client *c;
  struct ask q = {a, 0};
  rc = appmsg_client_new(&c, loop, host, port, &o);
  if (rc == 0) {
    rc = send(c, &q, arg);
    while (rc == 0 && !q.done)
      if (appmsg_loop_run_once(loop, -1) < 0)
        break;
    appmsg_client_free(c);
  }
  appmsg_loop_free(loop);
  if (!q.done) {
    a->status = rc ? rc : APPMSG_E_CLOSED;
    a->reason = appmsg__strdup(appmsg_strerror(a->status));
  }
  return a->status;
}

struct ask_va {
  const char *action;
  va_list *ap;
};

static int send_va(struct appmsg_client *c, struct ask *q, void *arg) {
  struct ask_va *v = arg;
  return call_va(c, on_answer, q, v->action, *v->ap);
}

static int send_call(struct appmsg_client *c, struct ask *q, void *arg) {
  return appmsg_client_send(c, arg, on_answer, q);
}

int appmsg_ask(const char *host, const char *port, uint32_t timeout_ms, struct appmsg_answer *a,
               const char *action, ...) {
  va_list ap;
  va_start(ap, action);
  struct ask_va v = {action, &ap};
  int rc = ask(host, port, NULL, timeout_ms, a, send_va, &v);
  va_end(ap);
  return rc;
}

int appmsg_ask_call(const char *host, const char *port, uint32_t timeout_ms,
                    const struct appmsg_call *call, struct appmsg_answer *a) {
  return ask(host, port, NULL, timeout_ms, a, send_call, (void *)call);
}

int appmsg_ask_call_with(const char *host, const char *port, const struct appmsg_client_opts *opts,
                         uint32_t timeout_ms, const struct appmsg_call *call,
                         struct appmsg_answer *a) {
  return ask(host, port, opts, timeout_ms, a, send_call, (void *)call);
}

int appmsg_ask_with(const char *host, const char *port, const struct appmsg_client_opts *opts,
                    uint32_t timeout_ms, struct appmsg_answer *a, const char *action, ...) {
  va_list ap;
  va_start(ap, action);
  struct ask_va v = {action, &ap};
  int rc = ask(host, port, opts, timeout_ms, a, send_va, &v);
  va_end(ap);
  return rc;
}

struct ask_args {
  const char *action;
  const struct appmsg_arg *args;
  size_t n;
};

static int send_args(struct appmsg_client *c, struct ask *q, void *arg) {
  struct ask_args *v = arg;
  return appmsg_client_call_args(c, on_answer, q, v->action, v->args, v->n);
}

int appmsg_ask_args(const char *host, const char *port, const struct appmsg_client_opts *opts,
                    uint32_t timeout_ms, struct appmsg_answer *a, const char *action,
                    const struct appmsg_arg *args, size_t n) {
  struct ask_args v = {action, args, n};
  return ask(host, port, opts, timeout_ms, a, send_args, &v);
}

void appmsg_answer_cleanup(struct appmsg_answer *a) {
  appmsg__free(a->reason);
  appmsg__free(a->content_type);
  appmsg__free(a->content);
  appmsg__free(a->result);
  appmsg__free(a->result_json);
  appmsg__free(a->error);
  memset(a, 0, sizeof *a);
}
