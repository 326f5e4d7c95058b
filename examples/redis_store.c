/* app-server's data in Redis (see redis_store.h). */
#include "redis_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "dataset.h"

#ifdef APPMSG_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "appmsg/adapters/hiredis.h"
#endif

/* ---- addresses ------------------------------------------------------------------ */

static int parse_port(const char *p, int *port) {
  char *end;
  errno = 0;
  long v = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : 0;
  if (v < 1 || v > 65535 || errno || *end)
    return -1;
  *port = (int)v;
  return 0;
}

int redis_addr_parse(const char *text, struct redis_addr *a, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  if (strncmp(text, "unix:", 5) == 0) {
    const char *path = text + 5;
    if (*path == '\0' || strlen(path) >= sizeof a->path) {
      snprintf(err, errlen, "'%s': a Unix socket path must have 1 to %zu bytes", text,
               sizeof a->path - 1);
      return -1;
    }
    strcpy(a->path, path);
    snprintf(a->text, sizeof a->text, "unix:%s", path);
    return 0;
  }
  const char *host = text, *colon;
  size_t hlen;
  if (text[0] == '[') { /* [IPV6]:PORT */
    const char *close = strchr(text, ']');
    if (close == NULL || close[1] != ':')
      goto bad;
    host = text + 1;
    hlen = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strchr(text, ':');
    if (colon == NULL || strchr(colon + 1, ':') != NULL)
      goto bad; /* no port, or an IPv6 address without brackets */
    hlen = (size_t)(colon - text);
  }
  if (hlen == 0 || hlen >= sizeof a->host || parse_port(colon + 1, &a->port) != 0)
    goto bad;
  memcpy(a->host, host, hlen);
  a->host[hlen] = '\0';
  snprintf(a->text, sizeof a->text, "%s%s%s:%d", text[0] == '[' ? "[" : "", a->host,
           text[0] == '[' ? "]" : "", a->port);
  return 0;
bad:
  snprintf(err, errlen, "'%s' is not a Redis address: use HOST:PORT, [IPV6]:PORT or unix:/path",
           text);
  return -1;
}

void redis_store_opts_default(struct redis_store_opts *o) {
  memset(o, 0, sizeof *o);
  o->prefix = "";
  o->timeout_ms = 1000;
  o->backoff_min_ms = 100;
  o->backoff_max_ms = 2000;
}

#ifdef APPMSG_HAVE_HIREDIS
/* ---- the store ------------------------------------------------------------------- */

enum state { DOWN, CONNECTING, UP };

/* One command sent to Redis and waiting for its reply (hiredis's privdata). */
struct op {
  struct op *prev, *next;     /* in the store's list, oldest first */
  struct redis_store *s;      /* the store */
  struct appmsg_request *req; /* the search it answers; NULL for a connection's PING */
  const char *key;            /* the request's key (owned by req) */
  uint64_t due;               /* loop time after which Redis is late with it */
};

struct redis_store {
  struct appmsg_loop *loop;
  struct redis_addr addr;
  char *prefix; /* owned copy */
  size_t prefix_len;
  uint32_t timeout_ms, backoff_min_ms, backoff_max_ms;
  enum state state;
  redisAsyncContext *ac;      /* the connection while CONNECTING or UP, else NULL */
  struct op *head, *tail;     /* commands waiting for Redis, oldest first */
  struct op *spare;           /* freed ops, for reuse */
  struct appmsg_timer late;   /* armed while commands wait: when the oldest is due */
  struct appmsg_timer retry;  /* armed while DOWN: the next connect */
  unsigned failures;          /* connections failed or lost soon since one lasted */
  int ever_up;                /* Redis answered at least once */
  int told_down;              /* the log already says Redis cannot be reached */
  char why[192];              /* why the connection is being dropped (for the log), or "" */
  char last_error[192];       /* the last trouble, for status */
  uint64_t rng;               /* jitter */
  uint64_t down_since;        /* loop time when the last good connection was lost */
  uint64_t up_since;          /* loop time when the current connection came up */
  struct redis_store **group; /* the stores that report as one (NULL: alone) */
  size_t ngroup, index;       /* their count; this one's place among them */
  /* Counters and state: written by this store's thread only, read by the
   * group's other threads (status) - relaxed atomic stores and loads. */
  uint64_t connects, requests, in_flight, unavailable, timeouts, errors;
};

#define ADD(counter, n) appmsg_counter_add(&(counter), (uint64_t)(n))
#define GET(counter) appmsg_counter_get(&(counter))
#define SET_STATE(s, st) __atomic_store_n(&(s)->state, (st), __ATOMIC_RELAXED)

static void logs(struct redis_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logs(struct redis_store *s, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (s->ngroup > 1)
    logf_("redis %s (thread %zu): %s", s->addr.text, s->index + 1, line);
  else
    logf_("redis %s: %s", s->addr.text, line);
}

static void note_error(struct redis_store *s, const char *text) {
  snprintf(s->last_error, sizeof s->last_error, "%s", text);
}

static void connect_now(struct redis_store *s);

/* The next delay before connecting again: min, doubling, capped at max,
 * then a random point in its upper half (so that many app-servers that
 * lost the same Redis do not come back in step). */
static uint64_t backoff_ms(struct redis_store *s) {
  uint64_t d = s->backoff_min_ms;
  for (unsigned i = 1; i < s->failures && d < s->backoff_max_ms; i++)
    d *= 2;
  if (d > s->backoff_max_ms)
    d = s->backoff_max_ms;
  s->rng ^= s->rng << 13; /* xorshift64 */
  s->rng ^= s->rng >> 7;
  s->rng ^= s->rng << 17;
  return d / 2 + s->rng % (d / 2 + 1);
}

/* The connection is gone (or never came): requests now get UNAVAILABLE at
 * once until the next connect, which is scheduled.  Logs the change once. */
static void went_down(struct redis_store *s, const char *why) {
  enum state was = s->state;
  uint64_t now = appmsg_loop_now(s->loop);
  SET_STATE(s, DOWN);
  s->ac = NULL;
  /* The backoff starts again only after a connection that lasted: one
   * that Redis (or whatever listens there) ends at once keeps growing it. */
  if (was == UP && now - s->up_since >= s->backoff_max_ms)
    s->failures = 0;
  s->failures++;
  note_error(s, why);
  uint64_t delay = backoff_ms(s);
  if (was == UP)
    s->down_since = now;
  if (was == UP) {
    logs(s, "lost the connection: %s; reconnecting", why);
    s->told_down = 0;
  } else if (!s->told_down) {
    logs(s,
         "cannot connect: %s; retrying (backoff up to %.1f s); meanwhile searches get "
         "UNAVAILABLE",
         why, s->backoff_max_ms / 1000.0);
    s->told_down = 1;
  }
  if (appmsg_timer_start(s->loop, &s->retry, delay, 0) != 0)
    logs(s, "out of memory for the reconnect timer: no more reconnects");
}

/* Drops the connection ourselves (from anywhere): every waiting request
 * gets UNAVAILABLE through hiredis's NULL replies, now or, from inside a
 * hiredis callback, as soon as it returns. */
static void drop(struct redis_store *s, const char *why) {
  redisAsyncContext *ac = s->ac;
  went_down(s, why);
  if (ac)
    redisAsyncFree(ac);
}

static void became_up(struct redis_store *s) {
  uint64_t now = appmsg_loop_now(s->loop);
  SET_STATE(s, UP);
  ADD(s->connects, 1);
  if (s->ever_up)
    logs(s, "connected again after %.1f s", (now - s->down_since) / 1000.0);
  else if (s->failures)
    logs(s, "connected after %u failed attempt(s)", s->failures);
  else
    logs(s, "connected");
  s->ever_up = 1;
  s->up_since = now;
  s->told_down = 0;
}

/* ---- requests and their replies -------------------------------------------------- */

static struct op *op_new(struct redis_store *s) {
  struct op *o = s->spare;
  if (o)
    s->spare = o->next;
  else if ((o = malloc(sizeof *o)) == NULL)
    return NULL;
  memset(o, 0, sizeof *o);
  o->s = s;
  return o;
}

static void op_link(struct redis_store *s, struct op *o) {
  o->due = appmsg_loop_now(s->loop) + s->timeout_ms;
  o->prev = s->tail;
  o->next = NULL;
  if (s->tail)
    s->tail->next = o;
  else
    s->head = o;
  s->tail = o;
  ADD(s->in_flight, 1);
  if (!appmsg_timer_active(&s->late) && appmsg_timer_start(s->loop, &s->late, s->timeout_ms, 0))
    logs(s, "out of memory for the timeout timer");
}

static void op_done(struct redis_store *s, struct op *o) {
  if (o->prev)
    o->prev->next = o->next;
  else
    s->head = o->next;
  if (o->next)
    o->next->prev = o->prev;
  else
    s->tail = o->prev;
  ADD(s->in_flight, -1);
  o->next = s->spare;
  s->spare = o;
}

static void unavailable(struct redis_store *s, struct appmsg_request *req) {
  ADD(s->unavailable, 1);
  appmsg_reply_error(req, "UNAVAILABLE", "the data store is unavailable");
}

/* A string value as the result; one that is not UTF-8 text, or has a NUL
 * byte (which appmsg's JSON does not carry), gets an error reply. */
static void answer_value(struct redis_store *s, struct appmsg_request *req, const char *v,
                         size_t n) {
  int rc = memchr(v, '\0', n) ? -EINVAL : appmsg_reply_result(req, v);
  if (rc == -EINVAL) {
    ADD(s->errors, 1);
    appmsg_reply_error(req, "BAD_VALUE", "the stored value is not UTF-8 text without NUL bytes");
  } else if (rc == -ENOMEM) {
    appmsg_reply_error(req, "INTERNAL", "out of memory");
  }
}

/* A connection's PING answered: Redis is usable; or it refuses. */
static void on_pong(struct redis_store *s, redisAsyncContext *ac, const redisReply *r) {
  if (r == NULL || ac != s->ac)
    return; /* the connection is going (its going says why) */
  if (r->type == REDIS_REPLY_ERROR) {
    char why[192];
    snprintf(why, sizeof why, "Redis answered PING with: %.*s", (int)(r->len < 150 ? r->len : 150),
             r->str);
    drop(s, why);
    return;
  }
  became_up(s);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  struct op *o = privdata;
  struct redis_store *s = o->s;
  const redisReply *r = reply;
  struct appmsg_request *req = o->req;
  const char *key = o->key;
  op_done(s, o);
  if (req == NULL) {
    on_pong(s, ac, r);
    return;
  }
  if (r == NULL) {
    unavailable(s, req); /* the connection went with the request waiting */
    return;
  }
  switch (r->type) {
  case REDIS_REPLY_STRING:
    answer_value(s, req, r->str, r->len);
    return;
  case REDIS_REPLY_NIL:
    reply_no_match(req, key);
    return;
  case REDIS_REPLY_ERROR:
    if (strncmp(r->str, "WRONGTYPE", 9) != 0) { /* LOADING, NOAUTH, MISCONF, ... */
      ADD(s->errors, 1);
      if (strncmp(s->last_error, r->str, strlen(s->last_error) + 1) != 0) {
        note_error(s, r->str);
        logs(s, "Redis answers with an error: %s; those searches get UNAVAILABLE", r->str);
      }
      unavailable(s, req);
      return;
    }
    break;
  default:
    break;
  }
  ADD(s->errors, 1); /* WRONGTYPE, or an integer, array or status where a string belongs */
  appmsg_reply_error(req, "WRONG_TYPE",
                     "the data store holds something other than a string "
                     "under that key");
}

void redis_store_search(struct redis_store *s, struct appmsg_request *req, const char *key) {
  if (s->state == DOWN) {
    unavailable(s, req);
    return;
  }
  /* GET PREFIX+KEY in Redis's protocol, written here: no allocation for
   * usual keys, no printf. */
  size_t klen = strlen(key), n = s->prefix_len + klen;
  char stack[512], *cmd = stack;
  if (n + 48 > sizeof stack && (cmd = malloc(n + 48)) == NULL) {
    appmsg_reply_error(req, "INTERNAL", "out of memory");
    return;
  }
  char digits[24];
  size_t nd = 0, len = 0;
  for (size_t v = n; nd == 0 || v; v /= 10)
    digits[nd++] = (char)('0' + v % 10);
  static const char get[] = "*2\r\n$3\r\nGET\r\n$";
  memcpy(cmd, get, sizeof get - 1);
  len = sizeof get - 1;
  while (nd)
    cmd[len++] = digits[--nd];
  memcpy(cmd + len, "\r\n", 2);
  len += 2;
  memcpy(cmd + len, s->prefix, s->prefix_len);
  memcpy(cmd + len + s->prefix_len, key, klen);
  memcpy(cmd + len + n, "\r\n", 2);
  struct op *o = op_new(s);
  int rc = o ? redisAsyncFormattedCommand(s->ac, on_reply, o, cmd, len + n + 2) : REDIS_ERR;
  if (cmd != stack)
    free(cmd);
  if (rc != REDIS_OK) {
    if (o) {
      o->next = s->spare;
      s->spare = o;
    }
    unavailable(s, req);
    return;
  }
  o->req = req;
  o->key = key;
  op_link(s, o);
  ADD(s->requests, 1);
}

/* The oldest command's time is up: Redis is stuck (or was never there) -
 * drop the connection, which answers every waiting request. */
static void on_late(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)t;
  struct redis_store *s = ud;
  if (s->head == NULL)
    return;
  uint64_t now = appmsg_loop_now(loop);
  if (s->head->due > now) {
    appmsg_timer_start(loop, &s->late, s->head->due - now, 0);
    return;
  }
  ADD(s->timeouts, 1);
  char why[96];
  snprintf(why, sizeof why, "no answer within %u ms", s->timeout_ms);
  drop(s, why);
}

/* ---- the connection -------------------------------------------------------------- */

/* hiredis's reader makes reply objects through these; a reply that starts
 * when no command waits for one would trip an assertion inside hiredis
 * (0.14 aborts on a reply nobody asked for), so it is refused here: the
 * reader fails and hiredis drops the connection as for any protocol error.
 * Error replies pass: hiredis handles an unasked one itself (Redis sends
 * "-ERR max number of clients reached" that way). */
static redisReplyObjectFunctions guarded_fns;
static redisReplyObjectFunctions *plain_fns;

static int unasked(const redisReadTask *task) {
  redisAsyncContext *ac = task->privdata;
  if (task->parent != NULL || task->type == REDIS_REPLY_ERROR || ac->replies.head != NULL)
    return 0;
  struct redis_store *s = ac->data;
  snprintf(s->why, sizeof s->why, "Redis sent a reply nobody asked for");
  return 1;
}

static void *guard_string(const redisReadTask *task, char *str, size_t len) {
  return unasked(task) ? NULL : plain_fns->createString(task, str, len);
}
#if HIREDIS_MAJOR >= 1
static void *guard_array(const redisReadTask *task, size_t n) {
#else
static void *guard_array(const redisReadTask *task, int n) {
#endif
  return unasked(task) ? NULL : plain_fns->createArray(task, n);
}
static void *guard_integer(const redisReadTask *task, long long v) {
  return unasked(task) ? NULL : plain_fns->createInteger(task, v);
}
static void *guard_nil(const redisReadTask *task) {
  return unasked(task) ? NULL : plain_fns->createNil(task);
}

static void guard_replies(redisAsyncContext *ac) {
  if (plain_fns == NULL) {
    plain_fns = ac->c.reader->fn;
    guarded_fns = *plain_fns;
    guarded_fns.createString = guard_string;
    guarded_fns.createArray = guard_array;
    guarded_fns.createInteger = guard_integer;
    guarded_fns.createNil = guard_nil;
  }
  ac->c.reader->fn = &guarded_fns;
  ac->c.reader->privdata = ac;
}

static void on_connect(const redisAsyncContext *ac, int status) {
  struct redis_store *s = ac->data;
  if (status != REDIS_OK && ac == s->ac)
    went_down(s, ac->c.errstr[0] ? ac->c.errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct redis_store *s = ac->data;
  (void)status;
  if (ac != s->ac)
    return; /* dropped by us: already down */
  went_down(s, s->why[0] ? s->why : ac->errstr && ac->errstr[0] ? ac->errstr : "Redis closed it");
}

static void connect_now(struct redis_store *s) {
  s->why[0] = '\0';
  redisAsyncContext *ac = s->addr.path[0] ? redisAsyncConnectUnix(s->addr.path)
                                          : redisAsyncConnect(s->addr.host, s->addr.port);
  int rc = ac == NULL || ac->err ? -1 : appmsg_hiredis_attach(s->loop, ac);
  if (rc != 0) {
    char why[192];
    snprintf(why, sizeof why, "%s",
             ac == NULL ? "out of memory"
             : ac->err  ? ac->errstr
                        : appmsg_strerror(rc));
    if (ac)
      redisAsyncFree(ac);
    SET_STATE(s, CONNECTING); /* (so that went_down logs it as a failed connect) */
    went_down(s, why);
    return;
  }
  ac->data = s;
  guard_replies(ac);
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  s->ac = ac;
  SET_STATE(s, CONNECTING);
  /* The PING bounds the connect in time like any command, and says that
   * Redis answers before the connection counts as up. */
  struct op *o = op_new(s);
  if (o == NULL || redisAsyncCommand(ac, on_reply, o, "PING") != REDIS_OK) {
    if (o) {
      o->next = s->spare;
      s->spare = o;
    }
    drop(s, "out of memory");
    return;
  }
  op_link(s, o);
}

static void on_retry(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  connect_now(ud);
}

int redis_store_new(struct redis_store **sp, struct appmsg_loop *loop,
                    const struct redis_store_opts *o, char *err, size_t errlen) {
  struct redis_store *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (redis_addr_parse(o->addr, &s->addr, err, errlen) != 0) {
    free(s);
    return -1;
  }
  const char *prefix = o->prefix ? o->prefix : "";
  s->prefix = strdup(prefix);
  if (s->prefix == NULL) {
    free(s);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->prefix_len = strlen(prefix);
  s->loop = loop;
  s->timeout_ms = o->timeout_ms ? o->timeout_ms : 1000;
  s->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : 100;
  s->backoff_max_ms = o->backoff_max_ms > s->backoff_min_ms ? o->backoff_max_ms : s->backoff_min_ms;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  s->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)s;
  if (s->rng == 0)
    s->rng = 88172645463325252ULL;
  appmsg_timer_init(&s->late, on_late, s);
  appmsg_timer_init(&s->retry, on_retry, s);
  connect_now(s);
  *sp = s;
  return 0;
}

void redis_store_free(struct redis_store *s) {
  if (s == NULL)
    return;
  redisAsyncContext *ac = s->ac;
  s->ac = NULL;
  SET_STATE(s, DOWN);
  if (ac)
    redisAsyncFree(ac); /* every waiting request is answered */
  appmsg_timer_stop(s->loop, &s->late);
  appmsg_timer_stop(s->loop, &s->retry);
  while (s->spare) {
    struct op *o = s->spare;
    s->spare = o->next;
    free(o);
  }
  free(s->group);
  free(s->prefix);
  free(s);
}

int redis_store_group(struct redis_store **stores, size_t n) {
  for (size_t i = 0; i < n; i++) {
    struct redis_store **copy = malloc(n * sizeof *copy);
    if (copy == NULL)
      return -ENOMEM;
    memcpy(copy, stores, n * sizeof *copy);
    free(stores[i]->group);
    stores[i]->group = copy;
    stores[i]->ngroup = n;
    stores[i]->index = i;
  }
  return 0;
}

/* ---- status ------------------------------------------------------------------------- */

/* Appends text quoted as a JSON string at *p (within cap), returning the quoted length. */
static size_t quoted(const char *text, char *out, size_t used, size_t cap) {
  size_t n = strlen(text);
  return appmsg_json_quote(text, n, used < cap ? out + used : NULL, used < cap ? cap - used : 0);
}

/* The counters of a store's group, summed. */
struct totals {
  size_t n, up, connecting;
  uint64_t connects, requests, in_flight, unavailable, timeouts, errors;
};

static void sum_group(const struct redis_store *s, struct totals *t) {
  struct redis_store *const *g = s->ngroup ? s->group : (struct redis_store *const *)&s;
  memset(t, 0, sizeof *t);
  t->n = s->ngroup ? s->ngroup : 1;
  for (size_t i = 0; i < t->n; i++) {
    enum state st = __atomic_load_n(&g[i]->state, __ATOMIC_RELAXED);
    t->up += st == UP;
    t->connecting += st == CONNECTING;
    uint64_t c = GET(g[i]->connects);
    t->connects += c ? c - 1 : 0; /* (reconnects) */
    t->requests += GET(g[i]->requests);
    t->in_flight += GET(g[i]->in_flight);
    t->unavailable += GET(g[i]->unavailable);
    t->timeouts += GET(g[i]->timeouts);
    t->errors += GET(g[i]->errors);
  }
}

size_t redis_store_metrics(void *ud, char *out, size_t cap) {
  struct totals t;
  sum_group(ud, &t);
  const struct {
    const char *name, *type, *help;
    uint64_t v;
  } m[] = {
      {"appmsg_redis_connections", "gauge", "Connections to Redis (one per thread).", t.n},
      {"appmsg_redis_connections_up", "gauge", "Of those, connected now.", t.up},
      {"appmsg_redis_reconnects_total", "counter", "Connections to Redis made again.", t.connects},
      {"appmsg_redis_requests_total", "counter", "Commands sent to Redis.", t.requests},
      {"appmsg_redis_requests_in_flight", "gauge", "Commands waiting for Redis's reply.",
       t.in_flight},
      {"appmsg_redis_unavailable_total", "counter",
       "Searches answered UNAVAILABLE (Redis not connected).", t.unavailable},
      {"appmsg_redis_timeouts_total", "counter", "Commands Redis did not answer in time.",
       t.timeouts},
      {"appmsg_redis_errors_total", "counter", "Error replies from Redis.", t.errors},
  };
  size_t used = 0;
  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
    used += (size_t)snprintf(used < cap ? out + used : NULL, used < cap ? cap - used : 0,
                             "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", m[i].name, m[i].help,
                             m[i].name, m[i].type, m[i].name, (unsigned long long)m[i].v);
  return used;
}

size_t redis_store_status(void *ud, char *out, size_t cap) {
  const struct redis_store *s = ud;
  struct totals t;
  sum_group(s, &t);
  const char *state = t.up == t.n    ? "connected"
                      : t.up         ? "partial"
                      : t.connecting ? "connecting"
                                     : "down";
  size_t used = 0;
#define PUT(...)                                                                                   \
  used += (size_t)snprintf(used < cap ? out + used : NULL, used < cap ? cap - used : 0, __VA_ARGS__)
  PUT("\"redis\": {\"address\": ");
  used += quoted(s->addr.text, out, used, cap);
  PUT(", \"prefix\": ");
  used += quoted(s->prefix, out, used, cap);
  PUT(", \"connected\": %s, \"state\": \"%s\", \"connections\": %zu, \"connections_up\": %zu, "
      "\"reconnects\": %llu, \"requests\": %llu, \"in_flight\": %llu, \"unavailable\": %llu, "
      "\"timeouts\": %llu, \"errors\": %llu, \"last_error\": ",
      t.up == t.n ? "true" : "false", state, t.n, t.up, (unsigned long long)t.connects,
      (unsigned long long)t.requests, (unsigned long long)t.in_flight,
      (unsigned long long)t.unavailable, (unsigned long long)t.timeouts,
      (unsigned long long)t.errors);
  if (s->last_error[0])
    used += quoted(s->last_error, out, used, cap);
  else
    PUT("null");
  PUT("}");
#undef PUT
  return used;
}

/* ---- loading ---------------------------------------------------------------------- */

/* Waits for the oldest MSET's reply: 0, or -1 (logged). */
static int load_ack(redisContext *c, const struct redis_addr *a) {
  redisReply *r = NULL;
  if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL) {
    logf_("redis %s: %s while loading", a->text, c->errstr[0] ? c->errstr : "no reply");
    return -1;
  }
  int ok = r->type == REDIS_REPLY_STATUS;
  if (!ok)
    logf_("redis %s: the data was refused: %.*s", a->text, (int)(r->len < 300 ? r->len : 300),
          r->type == REDIS_REPLY_ERROR ? r->str : "(an unexpected reply)");
  freeReplyObject(r);
  return ok ? 0 : -1;
}

int redis_load(const char *addr_text, const char *prefix, const char *path, uint32_t timeout_ms) {
  enum { BATCH = 1000, WINDOW = 16 }; /* pairs per MSET; MSETs in flight */
  struct redis_addr a;
  char err[512];
  if (redis_addr_parse(addr_text, &a, err, sizeof err) != 0) {
    logf_("%s", err);
    return 1;
  }
  uint64_t t0 = now_ms();
  struct dataset d;
  if (dataset_load(&d, path) != 0)
    return 1;
  /* Loading competes with whatever else Redis does: a reply may take a while. */
  uint32_t wait_ms = timeout_ms > 10000 ? timeout_ms : 10000;
  struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000};
  redisContext *c = a.path[0] ? redisConnectUnixWithTimeout(a.path, tv)
                              : redisConnectWithTimeout(a.host, a.port, tv);
  const char **argv = malloc((1 + 2 * BATCH) * sizeof *argv);
  size_t *lens = malloc((1 + 2 * BATCH) * sizeof *lens);
  size_t plen = strlen(prefix ? prefix : ""), cap = 1 << 16, used = 0;
  char *keys = malloc(cap);
  int status = 1;
  if (c == NULL || c->err) {
    logf_("redis %s: cannot connect: %s", a.text, c ? c->errstr : "out of memory");
    goto out;
  }
  if (!argv || !lens || !keys || redisSetTimeout(c, tv) != REDIS_OK) {
    logf_("redis %s: out of memory", a.text);
    goto out;
  }
  argv[0] = "MSET";
  lens[0] = 4;
  size_t in_batch = 0, sent = 0, acked = 0, done = 0;
  for (size_t i = 0; i <= d.mask; i++) {
    const struct entry *e = &d.slots[i];
    if (e->hash != 0) {
      /* The batch's keys are written (prefixed) into one buffer; argv
       * points into it only once the batch is complete, so it may grow. */
      size_t kl = plen + strlen(e->key);
      if (used + kl > cap) {
        while (used + kl > cap)
          cap *= 2;
        char *nk = realloc(keys, cap);
        if (nk == NULL) {
          logf_("redis %s: out of memory", a.text);
          goto out;
        }
        keys = nk;
      }
      memcpy(keys + used, prefix, plen);
      memcpy(keys + used + plen, e->key, kl - plen);
      lens[1 + 2 * in_batch] = kl;
      argv[2 + 2 * in_batch] = e->value;
      lens[2 + 2 * in_batch] = strlen(e->value);
      used += kl;
      in_batch++;
      done++;
    }
    if (in_batch == BATCH || (in_batch > 0 && done == d.count && e->hash != 0)) {
      for (size_t k = 0, off = 0; k < in_batch; off += lens[1 + 2 * k], k++)
        argv[1 + 2 * k] = keys + off;
      if (redisAppendCommandArgv(c, (int)(1 + 2 * in_batch), argv, lens) != REDIS_OK) {
        logf_("redis %s: out of memory", a.text);
        goto out;
      }
      sent++;
      in_batch = 0;
      used = 0;
      if (sent - acked >= WINDOW) {
        if (load_ack(c, &a) != 0)
          goto out;
        acked++;
      }
    }
  }
  for (; acked < sent; acked++)
    if (load_ack(c, &a) != 0)
      goto out;
  logf_("loaded %zu keys from %s into Redis at %s%s%s%s in %.2f s", d.count, path, a.text,
        plen ? " (prefix '" : "", plen ? prefix : "", plen ? "')" : "", (now_ms() - t0) / 1000.0);
  status = 0;
out:
  if (c)
    redisFree(c);
  free(argv);
  free(lens);
  free(keys);
  dataset_free(&d);
  return status;
}

#else /* built without hiredis */

static const char without[] = "this app-server was built without hiredis: install libhiredis-dev "
                              "and build again";

int redis_store_new(struct redis_store **s, struct appmsg_loop *loop,
                    const struct redis_store_opts *o, char *err, size_t errlen) {
  (void)loop;
  (void)o;
  *s = NULL;
  snprintf(err, errlen, "%s", without);
  return -1;
}

void redis_store_search(struct redis_store *s, struct appmsg_request *req, const char *key) {
  (void)s;
  (void)key;
  appmsg_reply_error(req, "UNAVAILABLE", "the data store is unavailable");
}

size_t redis_store_status(void *ud, char *out, size_t cap) {
  (void)ud;
  (void)out;
  (void)cap;
  return 0;
}

size_t redis_store_metrics(void *ud, char *out, size_t cap) {
  return redis_store_status(ud, out, cap);
}

void redis_store_free(struct redis_store *s) {
  (void)s;
}

int redis_store_group(struct redis_store **stores, size_t n) {
  (void)stores;
  (void)n;
  return 0;
}

int redis_load(const char *addr, const char *prefix, const char *path, uint32_t timeout_ms) {
  (void)addr;
  (void)prefix;
  (void)path;
  (void)timeout_ms;
  logf_("%s", without);
  return 1;
}
#endif
