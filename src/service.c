/*
 * The service: a server whose requests go to handlers by action, with
 * replies kept in request order (see include/appmsg/service.h).
 *
 * The common case costs no allocation: a request object comes from the
 * service's free list, its members are spans into the decoder's content,
 * and a handler that answers at once writes its reply straight into the
 * connection's output queue, behind a prepared header.  Only a request
 * still owed when its handler returns is made to stand alone (its content
 * taken over from the decoder, its header copied), queued on its
 * connection, given a deadline and a hold on the connection.
 *
 * Per connection, the requests not yet sent form a queue in arrival order;
 * the one at its head writes its reply to the connection directly, the
 * others keep theirs until their turn.  Each queued request holds the
 * connection (appmsg_conn_hold()), so a drain, an end of stream or a
 * framing error waits for every reply owed before the connection closes.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "appmsg/service.h"
#include "appmsg/tls.h"
#include "codec_internal.h"
#include "conn_internal.h"
#include "header_internal.h"
#include "json_internal.h"
#include "loop_internal.h"
#include "util.h"

#define REQUEST_DEPTH_MAX 64 /* nesting allowed in a text/json request */
#define ERROR_NAMES_MAX 64   /* distinct error names counted; more count as OTHER */
#define TYPE_CACHE 4         /* prepared headers kept for binary replies */
#define KEEP_BYTES 4096      /* scratch memory a pooled request keeps between uses */

/* A member of a request object, and its text once unescaped. */
struct member {
  struct appmsg_json_member m;
  const char *text; /* NUL-terminated, in scratch; NULL until asked for */
};

struct appmsg_request {
  struct appmsg_service *svc;       /* its service */
  struct appmsg_conn *conn;         /* its connection, NULL once that closed */
  struct appmsg_request *next;      /* next in its connection's queue, or in the free list */
  struct appmsg_request *live_prev; /* the owed requests (freed with the service) */
  struct appmsg_request *live_next; /* ... */
  struct appmsg_timer deadline;     /* armed while owed */
  const struct appmsg_header *hdr;  /* the header: borrowed, or &hdr_copy */
  struct appmsg_header hdr_copy;    /* a copy, once the request stands alone */
  const char *content;              /* the content: borrowed, or content_owned */
  size_t len;                       /* its length */
  void *content_owned;              /* taken over from the decoder */
  const char *action;               /* unescaped, in scratch; NULL for binary */
  struct member *members;           /* top-level members of a text/json object */
  size_t nmembers;                  /* how many */
  size_t members_cap;               /* room in members */
  char *scratch;                    /* unescaped strings (never moves while in use) */
  size_t scratch_used;              /* bytes used */
  size_t scratch_cap;               /* bytes allocated */
  char *rid;                        /* ", \"request-id\": VALUE" for the reply, or NULL */
  size_t rid_len;                   /* its length */
  char rid_inline[64];              /* rid when it fits */
  struct appmsg_encoder out;        /* the reply, while it waits for earlier ones */
  unsigned in_handler : 1;          /* its handler is running */
  unsigned answered : 1;            /* the application replied (or will never be asked) */
  unsigned replied : 1;             /* a reply exists (the application's or TIMEOUT) */
  unsigned expired : 1;             /* the deadline passed first */
  unsigned queued : 1;              /* in its connection's queue */
  unsigned live : 1;                /* in the live list */
};

/* A connection's queue of requests whose replies are not yet sent. */
struct pending {
  struct appmsg_request *head, *tail;
  uint32_t count;
  int paused;                 /* reading stopped: too many owed */
  int to_flush;               /* in the service's flush list */
  struct appmsg_conn *conn;   /* its connection (for the flush) */
  struct pending *flush_next; /* next in the flush list */
};

struct handler {
  char *name; /* the action, NUL-terminated */
  size_t len; /* its length */
  appmsg_handler_fn fn;
  void *ud;
};

struct type_cache {
  char *type, *encoding;       /* the strings it was made for */
  struct appmsg_prepared *hdr; /* their prepared header */
};

struct error_count {
  char name[65];
  uint64_t n;
};

struct appmsg_service {
  struct appmsg_loop *loop;
  struct appmsg_loop *own_loop; /* the loop it made, freed with it */
  struct appmsg_service *self;  /* itself (a group of one) */
  const struct appmsg_service_opts *opts;
  struct appmsg_server *srv;        /* after listen */
  struct appmsg_server_opts sopts;  /* opts->server with the counters pointer set */
  struct appmsg_conn_counters io;   /* bytes in and out */
  struct handler *handlers;         /* open addressing, power-of-two size */
  size_t nhandlers, handlers_cap;   /* used, size */
  struct handler binary, unknown;   /* the other two handlers */
  appmsg_status_fn status_fn;       /* extra status members */
  void *status_ud;                  /* ... */
  struct appmsg_prepared *json_hdr; /* text/json, utf-8 */
  struct type_cache types[TYPE_CACHE];
  unsigned types_next;    /* the cache entry to replace next */
  struct pending **by_fd; /* connections with a queue, by descriptor */
  size_t by_fd_len;
  struct appmsg_request *free_list;               /* pooled request objects */
  struct appmsg_request *live;                    /* requests owed, orphaned or expired */
  uint64_t started;                               /* loop time of creation */
  struct appmsg_service_stats st;                 /* counters (bytes come from io) */
  struct error_count errors[ERROR_NAMES_MAX + 1]; /* the last one is OTHER */
  size_t nerrors;                                 /* names in use before OTHER */
  struct appmsg_service **group;                  /* the services that report as one */
  size_t ngroup;                                  /* (NULL, 0: just this one) */
  uint64_t refusals; /* connections refused, for rate-limiting their log */
  /* Connections given replies from outside their callbacks in this loop
   * iteration, written once at its end by flush_timer (0 ms). */
  struct pending *flush_list;
  struct appmsg_timer flush_timer;
};

/* ---- small things --------------------------------------------------------- */

/* The counters have one writer (the service's thread) and may be read by
 * the services of other threads (a group's status): relaxed atomic loads
 * and stores, which cost plain moves. */
#define ADD(counter, n)                                                                            \
  __atomic_store_n(&(counter), __atomic_load_n(&(counter), __ATOMIC_RELAXED) + (uint64_t)(n),      \
                   __ATOMIC_RELAXED)
#define GET(counter) __atomic_load_n(&(counter), __ATOMIC_RELAXED)

/* Logs a line when the service's log level asks for it. */
#define svc_log(s, level, ...)                                                                     \
  do {                                                                                             \
    if ((level) <= (s)->opts->log_level)                                                           \
      appmsg__logf((s)->opts->log, (s)->opts->log_ud, level, __VA_ARGS__);                         \
  } while (0)

/* Counts an error reply by name.  A name is written before it is published
 * (nerrors, a release store), so that other threads read whole names. */
static void count_error(struct appmsg_service *s, const char *name) {
  ADD(s->st.errors, 1);
  size_t n = s->nerrors;
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->errors[i].name, name) == 0) {
      ADD(s->errors[i].n, 1);
      return;
    }
  if (n < ERROR_NAMES_MAX) {
    snprintf(s->errors[n].name, sizeof s->errors[n].name, "%s", name);
    ADD(s->errors[n].n, 1);
    __atomic_store_n(&s->nerrors, n + 1, __ATOMIC_RELEASE);
  } else {
    ADD(s->errors[ERROR_NAMES_MAX].n, 1); /* "OTHER", named at creation */
  }
}

static uint64_t hash_name(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return h;
}

static struct handler *find_handler(const struct appmsg_service *s, const char *name, size_t n) {
  if (s->handlers_cap == 0)
    return NULL;
  size_t mask = s->handlers_cap - 1;
  for (size_t i = hash_name(name, n) & mask;; i = (i + 1) & mask) {
    struct handler *h = &s->handlers[i];
    if (h->name == NULL)
      return NULL;
    if (h->len == n && memcmp(h->name, name, n) == 0)
      return h;
  }
}

static int name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 64)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!((name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= '0' && name[i] <= '9') ||
          name[i] == '_'))
      return 0;
  return 1;
}

/* ---- request objects -------------------------------------------------------- */

static struct appmsg_request *request_get(struct appmsg_service *s) {
  struct appmsg_request *r = s->free_list;
  if (r)
    s->free_list = r->next;
  else if ((r = calloc(1, sizeof *r)) == NULL)
    return NULL;
  r->svc = s;
  return r;
}

static void live_unlink(struct appmsg_request *r) {
  struct appmsg_service *s = r->svc;
  if (!r->live)
    return;
  if (r->live_prev)
    r->live_prev->live_next = r->live_next;
  else
    s->live = r->live_next;
  if (r->live_next)
    r->live_next->live_prev = r->live_prev;
  r->live = 0;
}

/* Back to the pool, keeping small scratch buffers for the next request. */
static void request_put(struct appmsg_request *r) {
  struct appmsg_service *s = r->svc;
  if (r->live)
    ADD(s->st.pending, -1);
  live_unlink(r);
  if (appmsg_timer_active(&r->deadline))
    appmsg_timer_stop(s->loop, &r->deadline);
  if (r->hdr == &r->hdr_copy) /* (a request answered in its handler has none of these) */
    appmsg_header_cleanup(&r->hdr_copy);
  free(r->content_owned);
  if (appmsg__encoder_has_buffer(&r->out)) /* (a reply that waited for earlier ones) */
    appmsg_encoder_cleanup(&r->out);
  if (r->rid != r->rid_inline)
    free(r->rid);
  if (r->scratch_cap > KEEP_BYTES) {
    free(r->scratch);
    r->scratch = NULL;
    r->scratch_cap = 0;
  }
  if (r->members_cap * sizeof *r->members > KEEP_BYTES) {
    free(r->members);
    r->members = NULL;
    r->members_cap = 0;
  }
  /* Back to the state calloc() gave it, field by field: the timer and the
   * encoder are clean once stopped and cleaned up, the header copy once
   * cleaned up, and the rest is set here (a memset of the whole object
   * would cost more than the request's own bookkeeping). */
  r->conn = NULL;
  r->hdr = NULL;
  r->content = NULL;
  r->len = 0;
  r->content_owned = NULL;
  r->action = NULL;
  r->nmembers = 0;
  r->scratch_used = 0;
  r->rid = NULL;
  r->rid_len = 0;
  r->in_handler = r->answered = r->replied = r->expired = r->queued = r->live = 0;
  r->next = s->free_list;
  s->free_list = r;
}

/* ---- per-connection queues ---------------------------------------------------- */

static struct pending *pending_of(struct appmsg_service *s, struct appmsg_conn *c) {
  size_t fd = (size_t)appmsg_conn_fd(c);
  return fd < s->by_fd_len ? s->by_fd[fd] : NULL;
}

static struct pending *pending_make(struct appmsg_service *s, struct appmsg_conn *c) {
  size_t fd = (size_t)appmsg_conn_fd(c);
  if (fd >= s->by_fd_len) {
    size_t n = s->by_fd_len ? s->by_fd_len : 64;
    while (n <= fd)
      n *= 2;
    struct pending **t = realloc(s->by_fd, n * sizeof *t);
    if (t == NULL)
      return NULL;
    memset(t + s->by_fd_len, 0, (n - s->by_fd_len) * sizeof *t);
    s->by_fd = t;
    s->by_fd_len = n;
  }
  if (s->by_fd[fd] == NULL)
    s->by_fd[fd] = calloc(1, sizeof(struct pending));
  return s->by_fd[fd];
}

static void enqueue(struct appmsg_service *s, struct pending *q, struct appmsg_request *r) {
  r->queued = 1;
  r->next = NULL;
  if (q->tail)
    q->tail->next = r;
  else
    q->head = r;
  q->tail = r;
  q->count++;
  appmsg_conn_hold(r->conn);
  if (!q->paused && s->opts->max_pending && q->count >= s->opts->max_pending) {
    q->paused = 1;
    appmsg_conn_set_reading(r->conn, 0);
  }
}

/* Takes the head off its queue (its reply has gone out). */
static void dequeue_head(struct appmsg_service *s, struct pending *q) {
  struct appmsg_request *r = q->head;
  q->head = r->next;
  if (q->head == NULL)
    q->tail = NULL;
  q->count--;
  r->queued = 0;
  r->next = NULL;
  struct appmsg_conn *c = r->conn;
  if (q->paused && q->count < (s->opts->max_pending + 1) / 2) {
    q->paused = 0;
    appmsg_conn_set_reading(c, 1);
  }
  appmsg_conn_release(c);
}

/* A request whose reply has left and which the application no longer
 * holds is done. */
static void maybe_done(struct appmsg_request *r) {
  if (!r->queued && !r->in_handler && r->answered)
    request_put(r);
}

/* Sends every reply at the head of c's queue that is ready. */
static void flush_queue(struct appmsg_service *s, struct appmsg_conn *c) {
  struct pending *q = pending_of(s, c);
  while (q && q->head && q->head->replied) {
    struct appmsg_request *r = q->head;
    size_t n;
    const void *p = appmsg_encoder_peek(&r->out, &n);
    if (n)
      appmsg_conn_send_raw(c, p, n); /* (a failure ends c; its close orphans the rest) */
    appmsg_encoder_cleanup(&r->out);
    dequeue_head(s, q);
    maybe_done(r);
  }
}

/* ---- making replies -------------------------------------------------------------- */

static const struct appmsg_prepared *type_header(struct appmsg_service *s, const char *type,
                                                 const char *encoding) {
  for (unsigned i = 0; i < TYPE_CACHE; i++) {
    struct type_cache *t = &s->types[i];
    if (t->hdr && strcmp(t->type, type) == 0 && strcmp(t->encoding, encoding) == 0)
      return t->hdr;
  }
  struct appmsg_header h;
  appmsg_header_init(&h);
  struct appmsg_prepared *p = NULL;
  char *tc = strdup(type), *ec = strdup(encoding);
  if (tc && ec && appmsg_header_set(&h, type, encoding) == 0 && appmsg_prepared_new(&p, &h) == 0) {
    struct type_cache *t = &s->types[s->types_next++ % TYPE_CACHE];
    free(t->type);
    free(t->encoding);
    appmsg_prepared_free(t->hdr);
    *t = (struct type_cache){tc, ec, p};
  } else {
    free(tc);
    free(ec);
  }
  appmsg_header_cleanup(&h);
  return p;
}

/*
 * Delivers a reply for r: to the connection at once when r is not behind
 * earlier requests, else into r->out until its turn.  The caller checked
 * that r may still reply.  Returns 0 or a negative code (nothing made).
 */
static int deliver_reply(struct appmsg_request *r, const struct appmsg_prepared *hdr,
                         const void *content, size_t len, const char *error_name) {
  struct appmsg_service *s = r->svc;
  struct pending *q = pending_of(s, r->conn);
  int rc;
  if (!r->queued || (q && q->head == r)) {
    rc = appmsg__conn_send_prepared_ex(r->conn, hdr, r->rid, r->rid_len, content, len);
    if (rc == APPMSG_E_CLOSED || rc == APPMSG_E_OUTPUT_FULL)
      rc = 0; /* the connection is ending: it counts as made, and is dropped */
    if (rc)
      return rc;
    r->replied = 1;
    if (r->queued) {
      dequeue_head(s, q);
      flush_queue(s, r->conn);
    }
  } else {
    rc = appmsg__encoder_push_prepared(&r->out, hdr, r->rid, r->rid_len, content, len);
    if (rc)
      return rc;
    r->replied = 1;
  }
  ADD(s->st.replies, 1);
  if (error_name)
    count_error(s, error_name);
  return 0;
}

/* Whether the application may reply to r now; if not, finishes r when
 * that was its last use.  Returns 0 or the code the reply call returns. */
static int may_reply(struct appmsg_request *r) {
  if (r->answered) {
    svc_log(r->svc, APPMSG_LOG_WARN, "a handler replied twice to one request (action '%s')",
            r->action ? r->action : "(binary)");
    return -EALREADY;
  }
  if (r->conn == NULL || r->expired) {
    svc_log(r->svc, APPMSG_LOG_INFO, "a reply came %s (action '%s'); dropped",
            r->expired ? "after the deadline had passed" : "after its connection had closed",
            r->action ? r->action : "(binary)");
    r->answered = 1;
    maybe_done(r);
    return APPMSG_E_CLOSED;
  }
  return 0;
}

/* Runs f(r, ...) as a reply made by the application: inside its handler
 * nothing else is needed; outside, the connection is entered around it,
 * and r is finished when done. */
static int finish_reply(struct appmsg_request *r, int rc) {
  if (rc)
    return rc;
  r->answered = 1;
  if (!r->in_handler) {
    live_unlink(r);
    ADD(r->svc->st.pending, -1);
    appmsg_timer_stop(r->svc->loop, &r->deadline);
    maybe_done(r);
  }
  return 0;
}

/*
 * Replies made outside their connection's callbacks (later: from a timer,
 * or from another library's callback, such as a Redis client's) are not
 * written one by one: the connection is put on the service's flush list
 * and written once at the end of the loop iteration (a 0 ms timer), so the
 * many replies that one read from a database brings leave in one write
 * per connection, as replies made inside handlers do.
 */
static void on_flush(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct appmsg_service *s = ud;
  struct pending *q;
  /* One at a time off the list: settling one connection may end it, and
   * its close takes it off the list (never another one). */
  while ((q = s->flush_list) != NULL) {
    s->flush_list = q->flush_next;
    q->to_flush = 0;
    appmsg__conn_enter(q->conn);
    appmsg__conn_leave(q->conn); /* writes; may end the connection (and free q) */
  }
}

/* Leaves c after a reply made outside: later, with the others, or now
 * when that cannot be arranged. */
static void leave_outside(struct appmsg_service *s, struct appmsg_conn *c) {
  struct pending *q = pending_of(s, c);
  if (q && !q->to_flush &&
      (appmsg_timer_active(&s->flush_timer) ||
       appmsg_timer_start(s->loop, &s->flush_timer, 0, 0) == 0)) {
    q->to_flush = 1;
    q->conn = c;
    q->flush_next = s->flush_list;
    s->flush_list = q;
  }
  if (q && q->to_flush)
    appmsg__conn_leave_later(c);
  else
    appmsg__conn_leave(c);
}

/* Wraps a reply made outside any callback of r's connection. */
#define OUTSIDE_BEGIN(r)                                                                           \
  struct appmsg_service *svc_ = (r)->svc;                                                          \
  struct appmsg_conn *entered_ = (r)->in_handler ? NULL : (r)->conn;                               \
  if (entered_)                                                                                    \
  appmsg__conn_enter(entered_)
#define OUTSIDE_END()                                                                              \
  if (entered_)                                                                                    \
  leave_outside(svc_, entered_)

/* {"result": QUOTED} for text of n bytes into buf (or a new allocation,
 * *heap) and its length.  Quoted once when it fits, the usual case. */
static char *result_body(const char *text, size_t n, char *buf, size_t cap, size_t *len,
                         char **heap) {
  char *b = buf;
  *heap = NULL;
  size_t q = appmsg_json_quote(text, n, b + 11, cap - 12);
  if (q > cap - 12) { /* too long: quote again into a buffer of its size */
    if ((b = *heap = malloc(q + 12)) == NULL)
      return NULL;
    appmsg_json_quote(text, n, b + 11, q);
  }
  memcpy(b, "{\"result\": ", 11);
  b[11 + q] = '}';
  *len = 12 + q;
  return b;
}

int appmsg_reply_result(struct appmsg_request *r, const char *text) {
  size_t n = text ? strlen(text) : 0;
  if (text == NULL || appmsg_utf8_check(text, n) != n)
    return -EINVAL;
  int rc = may_reply(r);
  if (rc)
    return rc;
  char stack[1024], *heap;
  size_t len;
  const char *body = result_body(text, n, stack, sizeof stack, &len, &heap);
  OUTSIDE_BEGIN(r);
  rc = body ? deliver_reply(r, r->svc->json_hdr, body, len, NULL) : -ENOMEM;
  rc = finish_reply(r, rc);
  OUTSIDE_END();
  free(heap);
  return rc;
}

int appmsg_reply_json(struct appmsg_request *r, const char *json, size_t len) {
  if (json == NULL || appmsg_json_check(json, len, REQUEST_DEPTH_MAX, NULL, NULL) != 0)
    return -EINVAL;
  int rc = may_reply(r);
  if (rc)
    return rc;
  char stack[1024];
  char *body = len + 12 <= sizeof stack ? stack : malloc(len + 12);
  if (body) {
    memcpy(body, "{\"result\": ", 11);
    memcpy(body + 11, json, len);
    body[11 + len] = '}';
  }
  OUTSIDE_BEGIN(r);
  rc = body ? deliver_reply(r, r->svc->json_hdr, body, len + 12, NULL) : -ENOMEM;
  rc = finish_reply(r, rc);
  OUTSIDE_END();
  if (body != stack)
    free(body);
  return rc;
}

/* The error reply without the may_reply() check (for the service's own). */
static int error_reply(struct appmsg_request *r, const char *name, const char *reason,
                       long long offset) {
  char body[APPMSG__ERROR_BODY_MAX];
  size_t n = appmsg__error_body(name, reason, offset, body);
  return deliver_reply(r, r->svc->json_hdr, body, n, name);
}

int appmsg_reply_error(struct appmsg_request *r, const char *name, const char *reason) {
  if (name == NULL || reason == NULL || !name_ok(name) ||
      appmsg_utf8_check(reason, strlen(reason)) != strlen(reason))
    return -EINVAL;
  int rc = may_reply(r);
  if (rc)
    return rc;
  OUTSIDE_BEGIN(r);
  rc = finish_reply(r, error_reply(r, name, reason, -1));
  OUTSIDE_END();
  return rc;
}

int appmsg_reply_content(struct appmsg_request *r, const char *content_type,
                         const char *content_encoding, const void *content, size_t len) {
  if (content_type == NULL || content_encoding == NULL || (content == NULL && len > 0))
    return -EINVAL;
  int rc = may_reply(r);
  if (rc)
    return rc;
  const struct appmsg_prepared *hdr = type_header(r->svc, content_type, content_encoding);
  if (hdr == NULL)
    return appmsg_utf8_check(content_type, strlen(content_type)) != strlen(content_type) ||
                   appmsg_utf8_check(content_encoding, strlen(content_encoding)) !=
                       strlen(content_encoding)
               ? -EINVAL
               : -ENOMEM;
  OUTSIDE_BEGIN(r);
  rc = finish_reply(r, deliver_reply(r, hdr, content, len, NULL));
  OUTSIDE_END();
  return rc;
}

/* ---- reading requests ------------------------------------------------------------ */

static void collect_member(void *ud, const struct appmsg_json_member *m) {
  struct appmsg_request *r = ud;
  if (r->nmembers == r->members_cap) {
    size_t cap = r->members_cap ? 2 * r->members_cap : 8;
    struct member *nm = realloc(r->members, cap * sizeof *nm);
    if (nm == NULL) {
      r->members_cap = (size_t)-1; /* marks the failure; see read_json() */
      return;
    }
    r->members = nm;
    r->members_cap = cap;
  }
  if (r->members_cap != (size_t)-1)
    r->members[r->nmembers++] = (struct member){*m, NULL};
}

/* The last member named key, or NULL. */
static struct member *find_member(const struct appmsg_request *r, const char *key) {
  size_t n = strlen(key);
  for (size_t i = r->nmembers; i-- > 0;)
    if (appmsg__json_key_is(&r->members[i].m, key, n))
      return &r->members[i];
  return NULL;
}

int appmsg_request_member(const struct appmsg_request *r, const char *key,
                          struct appmsg_json_member *m) {
  const struct member *f = find_member(r, key);
  if (f == NULL)
    return -ENOENT;
  *m = f->m;
  return 0;
}

const char *appmsg_request_json(const struct appmsg_request *r, const char *key, size_t *len) {
  const struct member *f = find_member(r, key);
  if (f == NULL)
    return NULL;
  int quoted = f->m.type == APPMSG_JSON_STRING;
  *len = f->m.val_len + 2 * (size_t)quoted;
  return f->m.val - quoted;
}

/*
 * A string member unescaped into scratch, NUL-terminated, once.  Scratch
 * is sized, the first time, for every string member at once (unescaping
 * never lengthens a string), so it never moves and the texts handed out
 * stay valid as long as the request.
 */
static const char *member_text(struct appmsg_request *r, struct member *f) {
  if (f->text)
    return f->text;
  if (r->scratch_used == 0) {
    size_t need = 0;
    for (size_t i = 0; i < r->nmembers; i++)
      if (r->members[i].m.type == APPMSG_JSON_STRING)
        need += r->members[i].m.val_len + 1;
    if (need > r->scratch_cap) {
      char *b = malloc(need);
      if (b == NULL)
        return NULL;
      free(r->scratch);
      r->scratch = b;
      r->scratch_cap = need;
    }
  }
  char *dst = r->scratch + r->scratch_used;
  size_t k = f->m.val_len;
  if (f->m.val_escaped)
    k = appmsg_json_unescape(f->m.val, k, dst);
  else
    memcpy(dst, f->m.val, k);
  dst[k] = '\0';
  r->scratch_used += k + 1;
  f->text = dst;
  return dst;
}

const char *appmsg_request_string(struct appmsg_request *r, const char *key) {
  struct member *f = find_member(r, key);
  if (f == NULL || f->m.type != APPMSG_JSON_STRING)
    return NULL;
  return member_text(r, f);
}

int appmsg_request_int(const struct appmsg_request *r, const char *key, long long *v) {
  struct appmsg_json_member m;
  if (appmsg_request_member(r, key, &m) != 0)
    return -ENOENT;
  if (m.type != APPMSG_JSON_NUMBER)
    return -EINVAL;
  size_t i = m.val_len > 0 && m.val[0] == '-';
  if (i == m.val_len)
    return -EINVAL;
  unsigned long long acc = 0, limit = i ? 9223372036854775808ULL : 9223372036854775807ULL;
  for (; i < m.val_len; i++) {
    if (m.val[i] < '0' || m.val[i] > '9')
      return -EINVAL; /* a fraction or an exponent */
    unsigned d = (unsigned)(m.val[i] - '0');
    if (acc > (limit - d) / 10)
      return -ERANGE;
    acc = acc * 10 + d;
  }
  *v = m.val[0] == '-'
           ? (acc == 9223372036854775808ULL ? (-9223372036854775807LL - 1) : -(long long)acc)
           : (long long)acc;
  return 0;
}

const char *appmsg_request_action(const struct appmsg_request *r) {
  return r->action;
}

const struct appmsg_header *appmsg_request_header(const struct appmsg_request *r) {
  return r->hdr;
}

const void *appmsg_request_content(const struct appmsg_request *r, size_t *len) {
  *len = r->len;
  return r->content ? r->content : "";
}

const char *appmsg_request_peer(const struct appmsg_request *r) {
  return r->conn ? appmsg_conn_peer(r->conn) : "(gone)";
}

int appmsg_request_alive(const struct appmsg_request *r) {
  return r->conn != NULL && !r->expired && !r->answered;
}

struct appmsg_service *appmsg_request_service(const struct appmsg_request *r) {
  return r->svc;
}

/* Reads a text/json request: encoding, JSON, object, action.  Returns 0
 * when r has a string action, else answers r itself and returns -1. */
static int read_json(struct appmsg_request *r) {
  const struct appmsg_header *h = r->hdr;
  char msg[300];
  const char *enc = h->content_encoding;
  if (strcmp(enc, "utf-8") != 0 && strcasecmp(enc, "utf-8") != 0 && strcasecmp(enc, "utf8") != 0) {
    snprintf(msg, sizeof msg, "text/json content must be in utf-8, not '%.100s'",
             h->content_encoding); /* a cut character is made valid by the error reply */
    error_reply(r, "BAD_REQUEST", msg, -1);
    return -1;
  }
  enum appmsg_json_type top;
  size_t off;
  const char *why;
  r->nmembers = 0;
  int rc =
      appmsg_json_scan(r->content, r->len, REQUEST_DEPTH_MAX, &top, collect_member, r, &off, &why);
  if (rc) {
    snprintf(msg, sizeof msg, "request content is not valid JSON: %s at byte %zu", why, off);
    error_reply(r, appmsg_errname(rc), msg, (long long)off);
    return -1;
  }
  if (r->members_cap == (size_t)-1) {
    r->members_cap = 0;
    error_reply(r, "INTERNAL", "out of memory", -1);
    return -1;
  }
  if (top != APPMSG_JSON_OBJECT) {
    error_reply(r, "BAD_REQUEST",
                "the request must be a JSON object like "
                "{\"action\": \"search\", \"value\": \"morpheus\"}",
                -1);
    return -1;
  }
  struct member *f = find_member(r, "action");
  if (f == NULL || f->m.type != APPMSG_JSON_STRING) {
    error_reply(r, "BAD_REQUEST", "the request needs an \"action\" string", -1);
    return -1;
  }
  if ((r->action = member_text(r, f)) == NULL) {
    error_reply(r, "INTERNAL", "out of memory", -1);
    return -1;
  }
  return 0;
}

/* The guide's answer to an action nobody handles. */
static void invalid_action(struct appmsg_request *r, void *ud) {
  (void)ud;
  char stack[512], *text = stack;
  size_t need = strlen(r->action) + 32;
  if (need > sizeof stack && (text = malloc(need)) == NULL) {
    error_reply(r, "INTERNAL", "out of memory", -1);
    r->answered = 1;
    return;
  }
  snprintf(text, need, "Error: invalid action '%s'.", r->action);
  char body[1024], *heap;
  size_t len;
  const char *b = result_body(text, strlen(text), body, sizeof body, &len, &heap);
  if (b && deliver_reply(r, r->svc->json_hdr, b, len, NULL) == 0)
    count_error(r->svc, "INVALID_ACTION");
  r->answered = 1;
  free(heap);
  if (text != stack)
    free(text);
}

static void builtin_ping(struct appmsg_request *r, void *ud) {
  (void)ud;
  appmsg_reply_json(r, "\"pong\"", 6);
}

/* A growing text buffer for the status reply. */
struct text {
  char *p;
  size_t len, cap;
  int failed;
};

static void text_addf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_addf(struct text *t, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = t->failed ? -1 : vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = 1;
      return;
    }
    if ((size_t)n < t->cap - t->len) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = 2 * t->cap + (size_t)n;
    char *np = realloc(t->p, cap);
    if (np == NULL) {
      t->failed = 1;
      return;
    }
    t->p = np;
    t->cap = cap;
  }
}

/* The services a status reports: the group, or s alone. */
static struct appmsg_service *const *group_of(const struct appmsg_service *s, size_t *n) {
  if (s->ngroup) {
    *n = s->ngroup;
    return s->group;
  }
  *n = 1;
  return &s->self;
}

/* Writes the errors object of a status: every name's count, summed over the group. */
static void status_errors(const struct appmsg_service *s, struct text *t) {
  size_t n, written = 0;
  struct appmsg_service *const *m = group_of(s, &n);
  for (size_t a = 0; a < n; a++) {
    size_t na = __atomic_load_n(&m[a]->nerrors, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i <= na; i++) {
      const char *name = m[a]->errors[i < na ? i : ERROR_NAMES_MAX].name;
      int seen = 0; /* counted already, with an earlier member's */
      for (size_t b = 0; b < a && !seen; b++)
        seen = appmsg_service_error_count(m[b], name) > 0;
      uint64_t total = 0;
      for (size_t b = a; b < n && !seen; b++)
        total += appmsg_service_error_count(m[b], name);
      if (!seen && total > 0)
        text_addf(t, "%s\"%s\": %llu", written++ ? ", " : "", name, (unsigned long long)total);
    }
  }
}

static void builtin_status(struct appmsg_request *r, void *ud) {
  (void)ud;
  struct appmsg_service *s = r->svc;
  struct appmsg_service_stats st;
  appmsg_service_stats_total(s, &st);
  struct text t = {malloc(512), 0, 512, 0};
  t.failed = t.p == NULL;
  size_t threads;
  group_of(s, &threads);
  text_addf(&t,
            "{\"version\": \"%s\", \"uptime_s\": %llu, \"connections\": %llu, "
            "\"connections_total\": %llu, \"requests\": %llu, \"replies\": %llu, "
            "\"pending\": %llu, \"threads\": %zu, \"errors\": {",
            appmsg_version(), (unsigned long long)(st.uptime_ms / 1000),
            (unsigned long long)st.connections, (unsigned long long)st.connections_total,
            (unsigned long long)st.requests, (unsigned long long)st.replies,
            (unsigned long long)st.pending, threads);
  status_errors(s, &t);
  text_addf(&t, "}, \"bytes_in\": %llu, \"bytes_out\": %llu", (unsigned long long)st.bytes_in,
            (unsigned long long)st.bytes_out);
  if (s->status_fn && !t.failed) {
    text_addf(&t, ", ");
    size_t n = t.failed ? 0 : s->status_fn(s->status_ud, t.p + t.len, t.cap - t.len);
    if (n >= t.cap - t.len && !t.failed) {
      char *np = realloc(t.p, t.len + n + 1);
      t.failed = np == NULL;
      if (np) {
        t.p = np;
        t.cap = t.len + n + 1;
        n = s->status_fn(s->status_ud, t.p + t.len, t.cap - t.len);
        t.failed = n >= t.cap - t.len; /* it changed its mind */
      }
    }
    if (n == 0)
      t.len -= 2; /* nothing added: no separator */
    else
      t.len += n;
  }
  text_addf(&t, "}");
  if (t.failed || appmsg_reply_json(r, t.p, t.len) != 0) {
    if (!r->answered)
      appmsg_reply_error(r, "INTERNAL", "the status could not be written");
  }
  free(t.p);
}

/* ---- the deadline ---------------------------------------------------------------- */

static void on_deadline(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct appmsg_request *r = ud;
  struct appmsg_service *s = r->svc;
  if (r->conn == NULL || r->replied)
    return;
  svc_log(s, APPMSG_LOG_WARN, "%s: request (action '%s') not answered in %u ms: TIMEOUT",
          appmsg_conn_peer(r->conn), r->action ? r->action : "(binary)", s->opts->deadline_ms);
  struct appmsg_conn *c = r->conn;
  appmsg__conn_enter(c);
  r->expired = 1;
  char reason[96];
  snprintf(reason, sizeof reason, "the request was not answered within %u ms",
           s->opts->deadline_ms);
  error_reply(r, "TIMEOUT", reason, -1);
  appmsg__conn_leave(c);
}

/* ---- connection callbacks ------------------------------------------------------ */

static char empty_string[] = "";

/* What an owed request shows as its header when no copy could be made. */
static const struct appmsg_header empty_header = {
    APPMSG_BYTEORDER_LITTLE, empty_string, empty_string, 0, NULL, 1};

/*
 * Makes r, whose handler returned without answering, stand alone: its
 * content and header must outlive the decoder's message; it is queued on
 * its connection (which it holds) and given its deadline.  Without memory
 * for that it is answered INTERNAL in the application's place, and the
 * application's reply, when it comes, is dropped.
 */
static void make_owed(struct appmsg_service *s, struct appmsg_request *r, struct appmsg_conn *c) {
  size_t len;
  void *content = appmsg__conn_take_content(c, &len);
  if (content) {
    r->content_owned = content; /* the same bytes: member spans stay valid */
    r->content = content;
  }
  r->live = 1;
  r->live_prev = NULL;
  r->live_next = s->live;
  if (s->live)
    s->live->live_prev = r;
  s->live = r;
  ADD(s->st.pending, 1);
  int oom = appmsg_header_copy(&r->hdr_copy, r->hdr) != 0;
  r->hdr = oom ? &empty_header : &r->hdr_copy;
  if (!r->queued) {
    struct pending *q = pending_make(s, c);
    if (q == NULL) {
      svc_log(s, APPMSG_LOG_ERROR, "%s: out of memory; closing", appmsg_conn_peer(c));
      r->conn = NULL; /* orphaned at once: the reply will be dropped */
      appmsg_conn_abort(c, -ENOMEM);
      return;
    }
    enqueue(s, q, r);
  }
  if (!oom && s->opts->deadline_ms) {
    appmsg_timer_init(&r->deadline, on_deadline, r);
    oom = appmsg_timer_start(s->loop, &r->deadline, s->opts->deadline_ms, 0) != 0;
  }
  if (oom) {
    svc_log(s, APPMSG_LOG_ERROR, "%s: out of memory for a request answered later",
            appmsg_conn_peer(c));
    r->expired = 1;
    error_reply(r, "INTERNAL", "the server ran out of memory", -1);
  }
}

/* The request-id to echo, as the extra member text of the reply header. */
static void read_request_id(struct appmsg_request *r) {
  static const char key[] = ", \"request-id\": ";
  long n = appmsg_header_extra_raw(r->hdr, "request-id", NULL, 0);
  if (n < 0)
    return;
  size_t need = sizeof key - 1 + (size_t)n;
  if (need > APPMSG_HEADER_LENGTH_MAX - 256) {
    svc_log(r->svc, APPMSG_LOG_WARN, "%s: a request-id of %ld bytes is too long to echo",
            appmsg_conn_peer(r->conn), n);
    return;
  }
  r->rid = need <= sizeof r->rid_inline ? r->rid_inline : malloc(need);
  if (r->rid == NULL)
    return; /* (the reply goes without it) */
  memcpy(r->rid, key, sizeof key - 1);
  appmsg_header_extra_raw(r->hdr, "request-id", r->rid + sizeof key - 1, (size_t)n);
  r->rid_len = sizeof key - 1 + (size_t)n;
}

/* Whether the request's "appmsg-version", if any, is one this server reads
 * (a string starting with "1."); if not, answers BAD_REQUEST (PROTOCOL.md 2.7). */
static int version_ok(struct appmsg_request *r) {
  char v[64];
  long n = appmsg_header_extra_raw(r->hdr, "appmsg-version", v, sizeof v - 1);
  if (n < 0 || (n >= 4 && (size_t)n < sizeof v && memcmp(v, "\"1.", 3) == 0))
    return 1;
  char msg[128];
  v[n < (long)sizeof v - 1 ? n : (long)sizeof v - 1] = '\0';
  snprintf(msg, sizeof msg, "unsupported appmsg version %s; this server speaks 1.x", v);
  error_reply(r, "BAD_REQUEST", msg, -1);
  return 0;
}

static void on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  struct appmsg_service *s = ud;
  ADD(s->st.requests, 1);
  struct appmsg_request *r = request_get(s);
  if (r == NULL) {
    appmsg_conn_abort(c, -ENOMEM);
    return;
  }
  r->conn = c;
  r->hdr = h;
  r->content = content;
  r->len = len;
  if (appmsg__header_has_extras(h))
    read_request_id(r);
  struct pending *q = pending_of(s, c);
  if (q && q->head)
    enqueue(s, q, r); /* behind replies still owed: its own must wait */
  const struct handler *hd = NULL;
  r->in_handler = 1;
  if (appmsg__header_has_extras(h) && !version_ok(r)) {
    r->answered = 1; /* a later version's request: answered BAD_REQUEST */
  } else if (strcmp(h->content_type, "text/json") == 0) {
    if (read_json(r) == 0) {
      hd = find_handler(s, r->action, strlen(r->action));
      if (hd == NULL)
        hd = &s->unknown;
    } else {
      r->answered = 1;
    }
  } else if (s->binary.fn) {
    hd = &s->binary;
  } else {
    char msg[300];
    snprintf(msg, sizeof msg, "no handler for content-type '%.200s'", h->content_type);
    error_reply(r, "BAD_REQUEST", msg, -1);
    r->answered = 1;
  }
  if (hd)
    hd->fn(r, hd->ud);
  r->in_handler = 0;
  if (r->answered) {
    r->replied = 1; /* (if its reply could not be made, nothing more is owed for it) */
    if (!r->queued)
      request_put(r);
    else
      flush_queue(s, c); /* a queued one is freed when its turn comes */
    return;
  }
  make_owed(s, r, c);
}

static void on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t offset,
                     void *ud) {
  struct appmsg_service *s = ud;
  const char *text = reason ? reason : appmsg_strerror(err);
  if (appmsg__is_tls_error(err))
    svc_log(s, APPMSG_LOG_WARN, "%s: %s: %s; closing", appmsg_conn_peer(c), appmsg_errname(err),
            text); /* who and why; a stream offset means nothing here */
  else
    svc_log(s, APPMSG_LOG_WARN, "%s: %s at stream offset %llu: %s; closing", appmsg_conn_peer(c),
            appmsg_errname(err), (unsigned long long)offset, text);
  struct pending *q = pending_of(s, c);
  ADD(s->st.replies, 1);
  count_error(s, appmsg_errname(err));
  if (q == NULL || q->head == NULL) {
    appmsg_conn_send_error(c, err, reason, (long long)offset);
    return;
  }
  /* Replies are owed: the error reply goes last, in a request of its own. */
  struct appmsg_request *r = request_get(s);
  char body[APPMSG__ERROR_BODY_MAX];
  size_t n = appmsg__error_body(appmsg_errname(err), text, (long long)offset, body);
  if (r == NULL || appmsg__encoder_push_prepared(&r->out, s->json_hdr, NULL, 0, body, n) != 0) {
    if (r)
      request_put(r);
    return; /* no memory: the connection closes without it */
  }
  r->conn = c;
  r->answered = 1;
  r->replied = 1;
  enqueue(s, q, r);
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  struct appmsg_service *s = ud;
  ADD(s->st.connections, -1);
  if (reason == APPMSG_E_TIMEOUT)
    svc_log(s, APPMSG_LOG_WARN, "%s: closed: timed out", appmsg_conn_peer(c));
  else if (reason == APPMSG_E_OUTPUT_FULL)
    svc_log(s, APPMSG_LOG_WARN, "%s: closed: it does not read its replies (output cap reached)",
            appmsg_conn_peer(c));
  else if (reason < 0)
    svc_log(s, APPMSG_LOG_DEBUG, "%s: closed: %s", appmsg_conn_peer(c), appmsg_strerror(reason));
  else
    svc_log(s, APPMSG_LOG_DEBUG, "%s: closed", appmsg_conn_peer(c));
  size_t fd = (size_t)appmsg_conn_fd(c);
  struct pending *q = fd < s->by_fd_len ? s->by_fd[fd] : NULL;
  if (q == NULL)
    return;
  s->by_fd[fd] = NULL;
  for (struct pending **p = &s->flush_list; q->to_flush && *p; p = &(*p)->flush_next)
    if (*p == q) {
      *p = q->flush_next;
      break;
    }
  for (struct appmsg_request *r = q->head, *next; r; r = next) {
    next = r->next;
    r->queued = 0;
    r->next = NULL;
    r->conn = NULL; /* an owed one waits for its reply, which is dropped */
    appmsg_timer_stop(s->loop, &r->deadline);
    maybe_done(r);
  }
  free(q);
}

static void on_accept(struct appmsg_server *srv, struct appmsg_conn *c, void *ud) {
  (void)srv;
  struct appmsg_service *s = ud;
  ADD(s->st.connections, 1);
  ADD(s->st.connections_total, 1);
  svc_log(s, APPMSG_LOG_DEBUG, "accepted connection from %s", appmsg_conn_peer(c));
}

static void on_refuse(struct appmsg_server *srv, int err, void *ud) {
  (void)srv;
  struct appmsg_service *s = ud;
  static const char name[] = "TOO_MANY_CONNS";
  if (err == APPMSG_E_TOO_MANY_CONNS) {
    ADD(s->st.replies, 1);
    count_error(s, name);
  }
  if (s->refusals++ % 1000 == 0) /* a flood must not flood the log */
    svc_log(s, APPMSG_LOG_WARN, "refusing connections: %s (%llu so far)", appmsg_strerror(err),
            (unsigned long long)s->refusals);
}

static const struct appmsg_conn_callbacks conn_cbs = {
    .on_message = on_message, .on_error = on_error, .on_close = on_close};
static const struct appmsg_server_callbacks server_cbs = {.on_accept = on_accept,
                                                          .on_refuse = on_refuse};

/* ---- the service ------------------------------------------------------------------- */

void appmsg_service_opts_default(struct appmsg_service_opts *o) {
  memset(o, 0, sizeof *o);
  appmsg_server_opts_default(&o->server);
  o->deadline_ms = 30000;
  o->max_pending = 1024;
  o->builtins = APPMSG_BUILTIN_PING | APPMSG_BUILTIN_STATUS;
  o->log_level = APPMSG_LOG_INFO;
}

int appmsg_service_new(struct appmsg_service **out, struct appmsg_loop *loop,
                       const struct appmsg_service_opts *opts) {
  struct appmsg_service *s = calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  if (loop == NULL) {
    int rc = appmsg_loop_new(&s->own_loop, APPMSG_LOOP_DEFAULT);
    if (rc) {
      free(s);
      return rc;
    }
    loop = s->own_loop;
  }
  s->loop = loop;
  s->opts = opts;
  s->started = appmsg_loop_now(loop);
  s->self = s;
  appmsg_timer_init(&s->flush_timer, on_flush, s);
  strcpy(s->errors[ERROR_NAMES_MAX].name, "OTHER");
  s->unknown.fn = invalid_action;
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc = appmsg_header_set(&h, "text/json", "utf-8");
  if (rc == 0)
    rc = appmsg_prepared_new(&s->json_hdr, &h);
  appmsg_header_cleanup(&h);
  if (rc == 0 && (opts->builtins & APPMSG_BUILTIN_PING))
    rc = appmsg_service_handle(s, "ping", builtin_ping, NULL);
  if (rc == 0 && (opts->builtins & APPMSG_BUILTIN_STATUS))
    rc = appmsg_service_handle(s, "status", builtin_status, NULL);
  if (rc) {
    appmsg_service_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int appmsg_service_handle(struct appmsg_service *s, const char *action, appmsg_handler_fn fn,
                          void *ud) {
  if (action == NULL || appmsg_utf8_check(action, strlen(action)) != strlen(action))
    return -EINVAL;
  size_t n = strlen(action);
  struct handler *h = find_handler(s, action, n);
  if (h) {
    if (fn) {
      h->fn = fn;
      h->ud = ud;
      return 0;
    }
    /* Removal: rebuild the table without it (rare, so simple). */
    struct handler *old = s->handlers;
    size_t cap = s->handlers_cap;
    s->handlers = NULL;
    s->handlers_cap = s->nhandlers = 0;
    int rc = 0;
    for (size_t i = 0; i < cap; i++) {
      if (old[i].name && &old[i] != h && rc == 0)
        rc = appmsg_service_handle(s, old[i].name, old[i].fn, old[i].ud);
      free(old[i].name);
    }
    free(old);
    return rc;
  }
  if (fn == NULL)
    return 0;
  if (2 * (s->nhandlers + 1) > s->handlers_cap) {
    size_t cap = s->handlers_cap ? 2 * s->handlers_cap : 16;
    struct handler *t = calloc(cap, sizeof *t);
    if (t == NULL)
      return -ENOMEM;
    for (size_t i = 0; i < s->handlers_cap; i++) {
      struct handler *o = &s->handlers[i];
      if (o->name == NULL)
        continue;
      size_t k = hash_name(o->name, o->len) & (cap - 1);
      while (t[k].name)
        k = (k + 1) & (cap - 1);
      t[k] = *o;
    }
    free(s->handlers);
    s->handlers = t;
    s->handlers_cap = cap;
  }
  char *name = strdup(action);
  if (name == NULL)
    return -ENOMEM;
  size_t k = hash_name(name, n) & (s->handlers_cap - 1);
  while (s->handlers[k].name)
    k = (k + 1) & (s->handlers_cap - 1);
  s->handlers[k] = (struct handler){name, n, fn, ud};
  s->nhandlers++;
  return 0;
}

void appmsg_service_handle_binary(struct appmsg_service *s, appmsg_handler_fn fn, void *ud) {
  s->binary = (struct handler){NULL, 0, fn, ud};
}

void appmsg_service_handle_unknown(struct appmsg_service *s, appmsg_handler_fn fn, void *ud) {
  s->unknown = (struct handler){NULL, 0, fn ? fn : invalid_action, fn ? ud : NULL};
}

void appmsg_service_status_hook(struct appmsg_service *s, appmsg_status_fn fn, void *ud) {
  s->status_fn = fn;
  s->status_ud = ud;
}

int appmsg_service_listen(struct appmsg_service *s, const char *host, const char *port, char *err,
                          size_t errlen) {
  if (s->srv) {
    appmsg__errf(err, errlen, "the service is already listening");
    return -EALREADY;
  }
  s->sopts = s->opts->server;
  s->sopts.conn.counters = &s->io;
  return appmsg_server_new(&s->srv, s->loop, host, port, &s->sopts, &conn_cbs, &server_cbs, s, err,
                           errlen);
}

int appmsg_service_listen_fd(struct appmsg_service *s, int listen_fd, char *err, size_t errlen) {
  if (s->srv) {
    appmsg__errf(err, errlen, "the service is already listening");
    close(listen_fd);
    return -EALREADY;
  }
  s->sopts = s->opts->server;
  s->sopts.conn.counters = &s->io;
  return appmsg_server_new_fd(&s->srv, s->loop, listen_fd, &s->sopts, &conn_cbs, &server_cbs, s,
                              err, errlen);
}

long appmsg_service_finish(struct appmsg_service *s, uint32_t drain_ms) {
  long left = s->srv ? appmsg_server_finish(s->srv, drain_ms) : 0;
  if (left < 0)
    svc_log(s, APPMSG_LOG_ERROR, "event loop failed while draining: %s",
            appmsg_strerror((int)left));
  else if (left > 0)
    svc_log(s, APPMSG_LOG_WARN, "closing %ld connection(s) that did not finish in time", left);
  return left;
}

const char *appmsg_service_address(const struct appmsg_service *s) {
  return s->srv ? appmsg_server_address(s->srv) : "?";
}

struct appmsg_server *appmsg_service_server(struct appmsg_service *s) {
  return s->srv;
}

void appmsg_service_drain(struct appmsg_service *s) {
  if (s->srv)
    appmsg_server_drain(s->srv);
}

int appmsg_service_run(struct appmsg_service *s, uint32_t drain_ms) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  /* Under TLS, SIGHUP reloads the certificate and key, and the service goes on. */
  struct appmsg_tls *tls = s->opts->server.conn.tls;
  int rc, sig;
  for (;;) {
    rc = appmsg_loop_stop_on_signals(s->loop, sigs, tls ? 3 : 2);
    if (rc == 0)
      rc = appmsg_loop_run(s->loop);
    sig = appmsg_loop_signal(s->loop);
    if (rc < 0 || sig != SIGHUP || tls == NULL)
      break;
    char err[512];
    if (appmsg_tls_reload(tls, err, sizeof err) == 0)
      svc_log(s, APPMSG_LOG_INFO,
              "SIGHUP: reloaded the TLS certificate and key; connections "
              "open now keep theirs");
    else
      svc_log(s, APPMSG_LOG_ERROR, "SIGHUP: %s; still serving with the previous certificate", err);
  }
  appmsg_loop_stop_on_signals(s->loop, NULL, 0); /* a second Ctrl-C kills at once */
  if (rc < 0) {
    svc_log(s, APPMSG_LOG_ERROR, "event loop failed: %s", appmsg_strerror(rc));
    return rc;
  }
  size_t open = s->srv ? appmsg_server_conn_count(s->srv) : 0;
  svc_log(s, APPMSG_LOG_INFO, "%s: finishing %zu connection(s)",
          sig == SIGINT ? "interrupted" : "terminated", open);
  appmsg_service_finish(s, drain_ms);
  return sig;
}

void appmsg_service_free(struct appmsg_service *s) {
  if (s == NULL)
    return;
  appmsg_server_free(s->srv); /* each connection's close orphans its requests */
  appmsg_timer_stop(s->loop, &s->flush_timer);
  while (s->live) {
    struct appmsg_request *r = s->live;
    r->answered = 1;
    r->queued = 0;
    request_put(r);
  }
  while (s->free_list) {
    struct appmsg_request *r = s->free_list;
    s->free_list = r->next;
    free(r->scratch);
    free(r->members);
    free(r);
  }
  for (size_t i = 0; i < s->handlers_cap; i++)
    free(s->handlers[i].name);
  free(s->handlers);
  for (unsigned i = 0; i < TYPE_CACHE; i++) {
    free(s->types[i].type);
    free(s->types[i].encoding);
    appmsg_prepared_free(s->types[i].hdr);
  }
  for (size_t i = 0; i < s->by_fd_len; i++)
    free(s->by_fd[i]);
  free(s->by_fd);
  appmsg_prepared_free(s->json_hdr);
  free(s->group);
  appmsg_loop_free(s->own_loop);
  free(s);
}

struct appmsg_loop *appmsg_service_loop(const struct appmsg_service *s) {
  return s->loop;
}

void appmsg_service_stats(const struct appmsg_service *s, struct appmsg_service_stats *out) {
  out->uptime_ms = appmsg_loop_now(s->loop) - s->started;
  out->connections = GET(s->st.connections);
  out->connections_total = GET(s->st.connections_total);
  out->requests = GET(s->st.requests);
  out->replies = GET(s->st.replies);
  out->errors = GET(s->st.errors);
  out->pending = GET(s->st.pending);
  out->bytes_in = appmsg_counter_get(&s->io.bytes_in);
  out->bytes_out = appmsg_counter_get(&s->io.bytes_out);
}

void appmsg_service_stats_total(const struct appmsg_service *s, struct appmsg_service_stats *out) {
  size_t n;
  struct appmsg_service *const *m = group_of(s, &n);
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < n; i++) {
    struct appmsg_service_stats one;
    appmsg_service_stats(m[i], &one);
    out->connections += one.connections;
    out->connections_total += one.connections_total;
    out->requests += one.requests;
    out->replies += one.replies;
    out->errors += one.errors;
    out->pending += one.pending;
    out->bytes_in += one.bytes_in;
    out->bytes_out += one.bytes_out;
  }
  out->uptime_ms = appmsg_loop_now(s->loop) - s->started; /* this one's: they started together */
}

uint64_t appmsg_service_error_count(const struct appmsg_service *s, const char *name) {
  size_t n = __atomic_load_n(&s->nerrors, __ATOMIC_ACQUIRE);
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->errors[i].name, name) == 0)
      return GET(s->errors[i].n);
  return strcmp(name, "OTHER") == 0 ? GET(s->errors[ERROR_NAMES_MAX].n) : 0;
}

int appmsg_service_group(struct appmsg_service *const *services, size_t n) {
  for (size_t i = 0; i < n; i++) {
    struct appmsg_service **copy = malloc(n * sizeof *copy);
    if (copy == NULL)
      return -ENOMEM; /* (the ones done keep their group: each still counts itself) */
    memcpy(copy, services, n * sizeof *copy);
    free(services[i]->group);
    services[i]->group = copy;
    services[i]->ngroup = n;
  }
  return 0;
}
