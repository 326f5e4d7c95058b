/*
 * The service's insides, shared by its four files (not installed):
 *
 *   service.c          the service's lifecycle: handlers, listening, drain, free
 *   service_request.c  reading a request: the checks, the action, the members
 *   service_reply.c    replies: made now or later, kept in request order, budgets
 *   service_status.c   counters, error names, the ping and status actions
 *
 * Ownership.  The service owns a struct appmsg__svc_conn per connection,
 * made when the connection is accepted and kept as its user data, freed in
 * its on_close: a connection's state lives and dies with it.  A request
 * belongs to the service; while its reply is owed the application holds
 * it, and a request whose connection closed first (sc NULL) waits for that
 * reply, which is then dropped.  Requests are never freed under a caller:
 * one answered outside its handler is retired to the end of the loop
 * iteration.
 */
#ifndef APPMSG_SERVICE_INTERNAL_H
#define APPMSG_SERVICE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/service.h"
#include "histogram.h"
#include "loop_internal.h"
#include "util.h"

#define APPMSG__REQUEST_DEPTH_MAX 64 /* nesting allowed in a text/json request */
#define APPMSG__ERROR_NAMES_MAX 64   /* distinct error names counted; more count as OTHER */
#define APPMSG__TYPE_CACHE 4         /* prepared headers kept for binary replies */

struct appmsg__svc_conn;

#define APPMSG__ACTIONS_MAX 128 /* actions measured by name (more: under "_other") */
#define APPMSG__LE_COUNT 17     /* the Prometheus histogram's bounds (service_metrics.c) */
/* The latency histogram of an action: histogram.h's buckets four at a time (a relative error of
 * 1/32 at most), up to 2^40 ns (18 minutes; longer counts there too). */
#define APPMSG__LAT_SHIFT 2
#define APPMSG__LAT_BUCKETS                                                                        \
  ((41 - APPMSG__HISTOGRAM_SUB_BITS) * (APPMSG__HISTOGRAM_SUB >> APPMSG__LAT_SHIFT))

/* What the service measured for one action - or for one of the names of requests that have
 * none: "_unknown" (no handler), "_binary", "_invalid" (no action could be read), "_other"
 * (past APPMSG__ACTIONS_MAX).  One writer, the service's thread; a group's status and metrics
 * read the others' with relaxed loads.  Its name is written before it is published (nactions,
 * a release store), and it lives as long as the service. */
struct appmsg__action_stats {
  char *name;        /* the action */
  uint64_t pending;  /* requests owed a reply now (a gauge) */
  uint64_t requests; /* answered: replies made (a TIMEOUT reply included) */
  uint64_t errors;   /* of those, error replies */
  uint64_t sum_ns;   /* their latencies summed (arrival to reply queued) */
  uint64_t max_ns;   /* the longest */
  uint64_t *lat;     /* APPMSG__LAT_BUCKETS counts, made with its first reply (release store) */
};

/* A member of a request object, and its text once unescaped. */
struct appmsg__member {
  struct appmsg_json_member m;
  const char *text; /* NUL-terminated, in scratch; NULL until asked for */
};

struct appmsg_request {
  struct appmsg_service *svc;       /* its service */
  struct appmsg__svc_conn *sc;      /* its connection's state, NULL once that closed */
  struct appmsg_request *next;      /* next in its connection's queue, or in a free list */
  struct appmsg_request *live_prev; /* the owed requests (freed with the service) */
  struct appmsg_request *live_next; /* ... */
  struct appmsg_timer deadline;     /* armed while owed */
  const struct appmsg_header *hdr;  /* the header: borrowed, or &hdr_copy */
  struct appmsg_header hdr_copy;    /* a copy, once the request stands alone */
  const char *content;              /* the content: borrowed, or content_owned */
  size_t len;                       /* its length */
  void *content_owned;              /* taken over from the decoder */
  const char *action;               /* unescaped, in scratch; NULL for binary */
  struct appmsg__member *members;   /* top-level members of a text/json object */
  size_t nmembers;                  /* how many */
  size_t members_cap;               /* room in members */
  char *scratch;                    /* unescaped strings (never moves while in use) */
  size_t scratch_used;              /* bytes used */
  size_t scratch_cap;               /* bytes allocated */
  struct appmsg__action_stats *as;  /* where it is measured; NULL once it was (or never) */
  uint64_t arrived_ns;              /* the loop's clock when it arrived */
  char *rid;                        /* ", \"request-id\": VALUE" for the reply, or NULL */
  size_t rid_len;                   /* its length */
  char rid_inline[64];              /* rid when it fits */
  struct appmsg_encoder out;        /* the reply, while it waits for earlier ones */
  size_t held;                      /* bytes counted against the budgets for it */
  unsigned in_handler : 1;          /* its handler is running */
  unsigned answered : 1;            /* the application replied (or will never be asked) */
  unsigned replied : 1;             /* a reply exists (the application's or TIMEOUT) */
  unsigned expired : 1;             /* the deadline passed first */
  unsigned queued : 1;              /* in its connection's queue */
  unsigned live : 1;                /* in the live list (owed, or held by the application) */
  unsigned retired : 1;             /* done: back to the pool at the end of the iteration */
  unsigned owed_counted : 1;        /* counted in its action's pending */
};

/* Why a connection's reading is paused (appmsg__svc_conn.pause). */
#define APPMSG__PAUSE_COUNT 0x1u   /* max_pending replies owed */
#define APPMSG__PAUSE_BYTES 0x2u   /* the connection's byte budget */
#define APPMSG__PAUSE_SERVICE 0x4u /* the service's byte budget */

/* A connection's state: its user data from its first message to on_close.  Until that message
 * its user data is the service's `fresh`, shared by every connection that has sent nothing yet
 * (conn NULL: nothing of it is a connection's), so that an idle connection costs no more. */
struct appmsg__svc_conn {
  struct appmsg_service *svc;         /* its service */
  struct appmsg_conn *conn;           /* the connection */
  struct appmsg_request *head, *tail; /* requests whose replies are not yet sent, in order */
  size_t held;                        /* bytes its owed requests and waiting replies hold */
  struct appmsg__svc_conn *wait_prev; /* in the service's list of connections paused */
  struct appmsg__svc_conn *wait_next; /* for its byte budget */
  uint32_t count;                     /* how many requests are in the queue */
  unsigned pause : 3;                 /* APPMSG__PAUSE_* reasons it does not read */
  unsigned waiting : 1;               /* in the service's list */
};

/* An action's description (service_describe.c): one allocation with its strings. */
struct appmsg__doc {
  const char *summary;         /* or NULL */
  struct appmsg_param *params; /* names and summaries point into the same block */
  size_t nparams;
  enum appmsg_type result;
  const char *result_about; /* or NULL */
};

struct appmsg__handler {
  char *name; /* the action, NUL-terminated */
  size_t len; /* its length */
  appmsg_handler_fn fn;
  void *ud;
  struct appmsg__doc *doc;            /* its description, or NULL */
  struct appmsg__action_stats *stats; /* where its requests are measured (the service's) */
};

struct appmsg__type_cache {
  char *type, *encoding;       /* the strings it was made for */
  struct appmsg_prepared *hdr; /* their prepared header */
};

struct appmsg__error_count {
  char name[65];
  uint64_t n;
};

struct appmsg_service {
  struct appmsg_loop *loop;
  struct appmsg_loop *own_loop; /* the loop it made, freed with it */
  struct appmsg_service *self;  /* itself (a group of one) */
  const struct appmsg_service_opts *opts;
  struct appmsg_server *srv;              /* after listen */
  struct appmsg__http *http;              /* the HTTP endpoint (http.h), or NULL */
  struct appmsg_server_opts sopts;        /* opts->server with the counters pointer set */
  struct appmsg_conn_counters io;         /* bytes in and out, output queued */
  struct appmsg__handler *handlers;       /* open addressing, power-of-two size */
  size_t nhandlers, handlers_cap;         /* used, size */
  struct appmsg__handler binary, unknown; /* the other two handlers */
  char *title, *version;                  /* describe's info (NULL: the defaults) */
  appmsg_metrics_fn metrics_fn;           /* extra metrics */
  void *metrics_ud;                       /* ... */
  appmsg_status_fn status_fn;             /* extra status members */
  void *status_ud;                        /* ... */
  struct appmsg_prepared *json_hdr;       /* text/json, utf-8 */
  struct appmsg__type_cache types[APPMSG__TYPE_CACHE];
  unsigned types_next;                 /* the cache entry to replace next */
  struct appmsg_request *free_list;    /* pooled request objects */
  struct appmsg_request *live;         /* requests owed, orphaned or expired */
  struct appmsg__svc_conn fresh;       /* the user data of connections yet to send */
  struct appmsg_request *retired;      /* done, back to the pool at the end of the iteration */
  struct appmsg__deferred retire_work; /* ... which does that */
  size_t held;                         /* bytes all owed requests and waiting replies hold */
  struct appmsg__svc_conn *waiting;    /* connections paused for the service's byte budget */
  struct appmsg_timer budget_timer;    /* looks again while some are (output drains unseen) */
  uint64_t started;                    /* loop time of creation */
  struct appmsg_service_stats st;      /* counters (bytes come from io) */
  struct appmsg__error_count errors[APPMSG__ERROR_NAMES_MAX + 1]; /* the last one is OTHER */
  size_t nerrors;                                                 /* names in use before OTHER */
  struct appmsg__action_stats *actions[APPMSG__ACTIONS_MAX + 4];  /* the four others first */
  size_t nactions;                                                /* published (release store) */
  uint64_t slow_logged_at;       /* the loop time (ms) of the last slow-request line's second */
  unsigned slow_lines;           /* lines logged in that second */
  uint64_t slow_suppressed;      /* slow requests not logged since the last line */
  struct appmsg_service **group; /* the services that report as one */
  size_t ngroup;                 /* (NULL, 0: just this one) */
  uint64_t refusals;             /* connections refused, for rate-limiting their log */
  int freed;                     /* appmsg_service_free() was called */
  struct appmsg__deferred gone;  /* frees the service at the end of the iteration */
};

/* The counters have one writer (the service's thread) and may be read by
 * the services of other threads (a group's status). */
#define APPMSG__ADD(counter, n) appmsg__count(&(counter), (uint64_t)(n))
#define APPMSG__GET(counter) appmsg_counter_get(&(counter))

/* Whether a line of this level would be made (before its fields are: a peer's address costs a
 * getnameinfo()). */
static inline int appmsg__svc_logs(const struct appmsg_service *s, enum appmsg_log_level level) {
  return level <= s->opts->log_level && s->opts->log != NULL;
}

/* Logs a line with its fields (conn.h's appmsg_log_fields) when the service's level asks. */
#define appmsg__svc_logx(s, level, fields, ...)                                                    \
  do {                                                                                             \
    if ((level) <= (s)->opts->log_level)                                                           \
      appmsg__logf_fields((s)->opts->log, (s)->opts->log_ud, level, fields, __VA_ARGS__);          \
  } while (0)

/* Logs a line when the service's log level asks for it. */
#define appmsg__svc_log(s, level, ...)                                                             \
  do {                                                                                             \
    if ((level) <= (s)->opts->log_level)                                                           \
      appmsg__logf((s)->opts->log, (s)->opts->log_ud, level, __VA_ARGS__);                         \
  } while (0)

/* A growing text buffer: p (malloc'd, cap bytes, len used); failed once memory ran out, after
 * which nothing more is added. */
struct appmsg__text {
  char *p;
  size_t len, cap;
  int failed;
};

/* Makes room for n more bytes and a NUL: 0, or -1 once memory ran out (t->failed). */
int appmsg__text_room(struct appmsg__text *t, size_t n);

/* Appends what a hook (appmsg_status_fn, appmsg_metrics_fn) writes, with as much room as it
 * asks for; returns the bytes added. */
size_t appmsg__text_hook(struct appmsg__text *t, size_t (*fn)(void *, char *, size_t), void *ud);

/* Appends printf-style text; appends s quoted as a JSON string (s is valid UTF-8). */
void appmsg__text_addf(struct appmsg__text *t, const char *fmt, ...) APPMSG__PRINTF(2, 3);
void appmsg__text_add_quoted(struct appmsg__text *t, const char *s);

/* ---- service.c ---- */

/* The handler registered for the action name[0..n), or NULL. */
const struct appmsg__handler *appmsg__svc_find_handler(const struct appmsg_service *s,
                                                       const char *name, size_t n);

/* ---- service_request.c ---- */

/* The service's connection callbacks (conn.h) and server callbacks (server.h). */
extern const struct appmsg_conn_callbacks appmsg__svc_conn_cbs;
extern const struct appmsg_server_callbacks appmsg__svc_server_cbs;

/* The last member named key, or NULL; a string member's text, unescaped once (NULL: no
 * memory). */
struct appmsg__member *appmsg__svc_member(const struct appmsg_request *r, const char *key);
const char *appmsg__svc_member_text(struct appmsg_request *r, struct appmsg__member *f);

/* The log fields of a request (peer, action, request-id) and of a connection (peer). */
struct appmsg_log_fields appmsg__svc_request_fields(const struct appmsg_request *r);
struct appmsg_log_fields appmsg__svc_conn_fields(struct appmsg_conn *c);

/* appmsg_request_int() and appmsg_request_number() of a member already found. */
int appmsg__member_int(const struct appmsg_json_member *m, long long *v);
int appmsg__member_number(const struct appmsg_json_member *m, double *v);

/* The guide's answer to an action nobody handles (the default unknown handler). */
void appmsg__svc_invalid_action(struct appmsg_request *r, void *ud);

/* ---- service_describe.c ---- */

/* A copy of doc in one block (freed with appmsg__free()): 0 and *out, -EINVAL or -ENOMEM. */
int appmsg__doc_copy(const struct appmsg_action_doc *doc, struct appmsg__doc **out);

/* Checks r's members against doc: 0, or -1 once r was answered with BAD_REQUEST (or INTERNAL,
 * when a string could not be unescaped for lack of memory). */
int appmsg__svc_check_params(struct appmsg_request *r, const struct appmsg__doc *doc);

/* The describe action. */
void appmsg__svc_builtin_describe(struct appmsg_request *r, void *ud);

/* ---- service_reply.c ---- */

/* A request object from the pool, or NULL without memory. */
struct appmsg_request *appmsg__svc_request_get(struct appmsg_service *s);

/* Back to the pool at once (only where nobody else can hold r). */
void appmsg__svc_request_put(struct appmsg_request *r);

/* Puts r, answered and sent, back to the pool: at once when its handler
 * is running the show (in_handler), else at the end of the iteration. */
void appmsg__svc_request_done(struct appmsg_request *r);

/* Queues r on its connection behind the replies still owed there. */
int appmsg__svc_enqueue(struct appmsg__svc_conn *sc, struct appmsg_request *r);

/* Sends every reply at the head of sc's queue that is ready. */
void appmsg__svc_flush_queue(struct appmsg__svc_conn *sc);

/* Makes r, whose handler returned without answering, stand alone (see service_reply.c). */
void appmsg__svc_make_owed(struct appmsg_request *r);

/* An error reply (a framing error's: body, n bytes, named name) queued
 * behind the replies owed on sc, counted like them.  Returns 0 or -ENOMEM. */
int appmsg__svc_error_last(struct appmsg__svc_conn *sc, const char *name, const char *body,
                           size_t n);

/* The error reply, made by the service itself (no checks of the application's calls). */
int appmsg__svc_error_reply(struct appmsg_request *r, const char *name, const char *reason,
                            long long offset);

/* {"result": QUOTED} of text[0..n) into buf (cap bytes) or a new
 * allocation (*heap); returns it and its length, or NULL without memory. */
char *appmsg__svc_result_body(const char *text, size_t n, char *buf, size_t cap, size_t *len,
                              char **heap);

/* A reply delivered whole (in order) with a prepared header. */
int appmsg__svc_deliver(struct appmsg_request *r, const struct appmsg_prepared *hdr,
                        const void *content, size_t len, const char *error_name);

/* Re-reads the budgets of sc and pauses or resumes its reading. */
void appmsg__svc_budget(struct appmsg__svc_conn *sc);

/* A connection closed: its queued requests are orphaned or retired, its
 * budgets released; sc is freed. */
void appmsg__svc_conn_closed(struct appmsg__svc_conn *sc);

/* The service's timers and deferred work, for appmsg_service_new(). */
void appmsg__svc_reply_init(struct appmsg_service *s);

/* Releases what replies hold at the service's end (owed requests, the pool). */
void appmsg__svc_reply_cleanup(struct appmsg_service *s);

/* ---- service_status.c ---- */

/* Counts an error reply sent under name. */
void appmsg__svc_count_error(struct appmsg_service *s, const char *name);

/* The services that report as one: s's group, or s alone. */
static inline struct appmsg_service *const *appmsg__svc_group(const struct appmsg_service *s,
                                                              size_t *n) {
  *n = s->ngroup ? s->ngroup : 1;
  return s->ngroup ? s->group : &s->self;
}

/* Calls fn for every error name counted by s's group, each once, with the sum (not 0). */
typedef void (*appmsg__error_total_fn)(void *ud, const char *name, uint64_t n);
void appmsg__svc_each_error(struct appmsg_service *s, appmsg__error_total_fn fn, void *ud);

/* The status object (the status action's result) appended to t: the counters summed over the
 * group, and the status hook's members.  t->failed when memory ran out. */
void appmsg__svc_status_json(struct appmsg_service *s, struct appmsg__text *t);

/* ---- service_metrics.c ---- */

/* The stats of the action name (made on first use; "_other" past APPMSG__ACTIONS_MAX), or NULL
 * without memory. */
struct appmsg__action_stats *appmsg__svc_action_stats(struct appmsg_service *s, const char *name);

/* The four others: made first, in this order, by appmsg_service_new(). */
#define APPMSG__AS_UNKNOWN 0
#define APPMSG__AS_BINARY 1
#define APPMSG__AS_INVALID 2
#define APPMSG__AS_OTHER 3

/* r starts to be measured under as (its arrival: the loop's clock now). */
static inline void appmsg__svc_measure_start(struct appmsg_request *r,
                                             struct appmsg__action_stats *as) {
  r->as = as;
  r->arrived_ns = appmsg__loop_now_ns(r->svc->loop);
}

/* r's handler returned without answering: it is owed (in flight) under its action. */
static inline void appmsg__svc_measure_owed(struct appmsg_request *r) {
  if (r->as) {
    appmsg__count(&r->as->pending, 1);
    r->owed_counted = 1;
  }
}

/* r's reply was made (an error reply when error_name): counted, timed, the slow ones logged. */
void appmsg__svc_measure_reply(struct appmsg_request *r, const char *error_name);

/* r ends unanswered (its connection closed, or no memory): it is no longer in flight. */
static inline void appmsg__svc_measure_drop(struct appmsg_request *r) {
  if (r->as && r->owed_counted)
    appmsg__count(&r->as->pending, (uint64_t)-1);
  r->as = NULL;
  r->owed_counted = 0;
}

/* One action's measurements summed over a group. */
struct appmsg__action_total {
  const char *name;
  int other; /* one of the four names for requests without a registered action */
  uint64_t requests, errors, pending, sum_ns, max_ns;
  uint64_t lat[APPMSG__LAT_BUCKETS]; /* the latency histogram, summed */
};
typedef void (*appmsg__action_total_fn)(void *ud, const struct appmsg__action_total *t);

/* Calls fn for every action measured by s's group, each name once, summed.  Returns 0, or
 * -ENOMEM (fn never called). */
int appmsg__svc_each_action(struct appmsg_service *s, appmsg__action_total_fn fn, void *ud);

/* The latency at quantile q (0..1) of t, in ns, within 1/32 of one measured (0 when none). */
uint64_t appmsg__action_quantile(const struct appmsg__action_total *t, double q);

/* Frees the service's stats (at its end). */
void appmsg__svc_metrics_cleanup(struct appmsg_service *s);

/* The service's metrics (summed over its group) in the Prometheus text format 0.0.4, appended to
 * t.  t->failed when memory ran out. */
void appmsg__svc_metrics_text(struct appmsg_service *s, struct appmsg__text *t);

/* The built-in actions. */
void appmsg__svc_builtin_ping(struct appmsg_request *r, void *ud);
void appmsg__svc_builtin_status(struct appmsg_request *r, void *ud);

#endif
