/*
 * Replies: made now or later, kept in request order, within budgets (see
 * include/appmsg/service.h and service_internal.h).
 *
 * The common case costs no allocation: a request object comes from the
 * service's free list, and a handler that answers at once writes its reply
 * straight into the connection's output queue, behind a prepared header.
 * Only a request still owed when its handler returns is made to stand
 * alone (its content taken over from the decoder, its header copied),
 * queued on its connection, given a deadline and a hold on the connection.
 *
 * Per connection, the requests not yet sent form a queue in arrival order;
 * the one at its head writes its reply to the connection directly, the
 * others keep theirs until their turn.  Each queued request holds the
 * connection (appmsg_conn_hold()), so a drain, an end of stream or a
 * framing error waits for every reply owed before the connection closes.
 *
 * A reply made outside the connection's callbacks (from a timer, from a
 * database client's callback) is queued like any other; the connection
 * writes at the end of the loop iteration, so the many replies one
 * database read brings leave in one write per connection.
 *
 * Budgets.  Owed requests and replies waiting for their turn hold memory:
 * their bytes count against the connection's budget (max_conn_bytes) and
 * the service's (max_service_bytes, which also counts the output its
 * connections have queued).  Past a budget, or past max_pending replies
 * owed, the connection stops reading; it reads again once it is back under
 * half its own budget, and under three quarters of the service's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "conn_internal.h"
#include "service_internal.h"

#define KEEP_BYTES 4096    /* scratch memory a pooled request keeps between uses */
#define BUDGET_CHECK_MS 50 /* how often a service over its budget looks again */
#define HEADER_COST 128    /* bytes counted for a copied header beyond its strings */

/* ---- request objects ------------------------------------------------------------------- */

struct appmsg_request *appmsg__svc_request_get(struct appmsg_service *s) {
  struct appmsg_request *r = s->free_list;
  if (r)
    s->free_list = r->next;
  else if ((r = appmsg__calloc(1, sizeof *r)) == NULL)
    return NULL;
  r->svc = s;
  return r;
}

static void service_budget(struct appmsg_service *s);

/* Adds n bytes to what r holds, for its connection and the service. */
static void hold_bytes(struct appmsg_request *r, size_t n) {
  r->held += n;
  r->svc->held += n;
  if (r->sc)
    r->sc->held += n;
}

/* Gives back n of the bytes r holds. */
static void unhold_bytes(struct appmsg_request *r, size_t n) {
  r->held -= n;
  r->svc->held -= n;
  if (r->sc)
    r->sc->held -= n;
}

/* Ends everything r takes part in but its memory: its bytes, the live
 * list, the deadline. */
static void detach(struct appmsg_request *r) {
  struct appmsg_service *s = r->svc;
  if (r->held)
    unhold_bytes(r, r->held);
  if (r->live) {
    APPMSG__ADD(s->st.pending, -1);
    if (r->live_prev)
      r->live_prev->live_next = r->live_next;
    else
      s->live = r->live_next;
    if (r->live_next)
      r->live_next->live_prev = r->live_prev;
    r->live = 0;
  }
  if (appmsg_timer_active(&r->deadline))
    appmsg_timer_stop(s->loop, &r->deadline);
}

/* Back to the pool, keeping small scratch buffers for the next request. */
void appmsg__svc_request_put(struct appmsg_request *r) {
  struct appmsg_service *s = r->svc;
  detach(r);
  appmsg__svc_measure_drop(r); /* (unanswered: no longer in flight) */
  if (r->hdr == &r->hdr_copy)  /* (a request answered in its handler has none of these) */
    appmsg_header_cleanup(&r->hdr_copy);
  appmsg__free(r->content_owned);
  if (appmsg__encoder_has_buffer(&r->out)) /* (a reply that waited for earlier ones) */
    appmsg_encoder_cleanup(&r->out);
  if (r->rid != r->rid_inline)
    appmsg__free(r->rid);
  if (r->scratch_cap > KEEP_BYTES) {
    appmsg__free(r->scratch);
    r->scratch = NULL;
    r->scratch_cap = 0;
  }
  if (r->members_cap * sizeof *r->members > KEEP_BYTES) {
    appmsg__free(r->members);
    r->members = NULL;
    r->members_cap = 0;
  }
  /* Back to the state appmsg__calloc() gave it, field by field: the timer and the
   * encoder are clean once stopped and cleaned up, the header copy once
   * cleaned up, and the rest is set here (a memset of the whole object
   * would cost more than the request's own bookkeeping). */
  r->sc = NULL;
  r->hdr = NULL;
  r->content = NULL;
  r->len = 0;
  r->content_owned = NULL;
  r->action = NULL;
  r->nmembers = 0;
  r->scratch_used = 0;
  r->rid = NULL;
  r->rid_len = 0;
  r->in_handler = r->answered = r->replied = r->expired = r->queued = r->live = r->retired = 0;
  r->next = s->free_list;
  s->free_list = r;
}

/* The deferred work: retired requests go back to the pool. */
static void put_retired(struct appmsg__deferred *d) {
  struct appmsg_service *s =
      (struct appmsg_service *)((char *)d - offsetof(struct appmsg_service, retire_work));
  struct appmsg_request *r;
  while ((r = s->retired) != NULL) {
    s->retired = r->next;
    appmsg__svc_request_put(r);
  }
}

void appmsg__svc_request_done(struct appmsg_request *r) {
  struct appmsg_service *s = r->svc;
  if (r->retired)
    return;
  detach(r); /* its bytes count no more: the budgets may let reading resume */
  r->retired = 1;
  r->next = s->retired;
  s->retired = r;
  appmsg__loop_defer(s->loop, &s->retire_work);
  if (r->sc)
    appmsg__svc_budget(r->sc);
  service_budget(s);
}

/* A request whose reply has left and which the application no longer
 * holds is done. */
static void maybe_done(struct appmsg_request *r) {
  if (!r->queued && !r->in_handler && r->answered)
    appmsg__svc_request_done(r);
}

/* ---- budgets ------------------------------------------------------------------------------ */

static int over_service(const struct appmsg_service *s, size_t limit) {
  return s->held + (size_t)APPMSG__GET(s->io.out_queued) > limit;
}

/* Applies the pause reasons p to sc's reading. */
static void apply_pause(struct appmsg__svc_conn *sc, unsigned p) {
  if ((sc->pause == 0) != (p == 0))
    appmsg_conn_set_reading(sc->conn, p == 0);
  sc->pause = p;
}

static void wait_unlink(struct appmsg__svc_conn *sc) {
  struct appmsg_service *s = sc->svc;
  if (!sc->waiting)
    return;
  if (sc->wait_prev)
    sc->wait_prev->wait_next = sc->wait_next;
  else
    s->waiting = sc->wait_next;
  if (sc->wait_next)
    sc->wait_next->wait_prev = sc->wait_prev;
  sc->wait_prev = sc->wait_next = NULL;
  sc->waiting = 0;
}

/* Resumes the connections paused for the service's budget once the
 * service is back under three quarters of it. */
static void service_budget(struct appmsg_service *s) {
  if (s->waiting == NULL) {
    appmsg_timer_stop(s->loop, &s->budget_timer); /* (its connections closed meanwhile) */
    return;
  }
  if (over_service(s, s->opts->max_service_bytes / 4 * 3))
    return;
  struct appmsg__svc_conn *sc;
  while ((sc = s->waiting) != NULL) {
    wait_unlink(sc);
    apply_pause(sc, sc->pause & ~APPMSG__PAUSE_SERVICE);
  }
  appmsg_timer_stop(s->loop, &s->budget_timer);
}

static void on_budget_timer(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  service_budget(ud);
}

void appmsg__svc_budget(struct appmsg__svc_conn *sc) {
  struct appmsg_service *s = sc->svc;
  const struct appmsg_service_opts *o = s->opts;
  unsigned p = sc->pause;
  if (o->max_pending) {
    if (sc->count >= o->max_pending)
      p |= APPMSG__PAUSE_COUNT;
    else if (sc->count < (o->max_pending + 1) / 2)
      p &= ~APPMSG__PAUSE_COUNT;
  }
  if (o->max_conn_bytes) {
    if (sc->held > o->max_conn_bytes)
      p |= APPMSG__PAUSE_BYTES;
    else if (sc->held <= o->max_conn_bytes / 2)
      p &= ~APPMSG__PAUSE_BYTES;
  }
  if (o->max_service_bytes && !sc->waiting && over_service(s, o->max_service_bytes)) {
    p |= APPMSG__PAUSE_SERVICE;
    sc->waiting = 1;
    sc->wait_prev = NULL;
    sc->wait_next = s->waiting;
    if (s->waiting)
      s->waiting->wait_prev = sc;
    s->waiting = sc;
    /* Output draining makes room too, unseen here: look again now and then. */
    if (!appmsg_timer_active(&s->budget_timer))
      appmsg_timer_start(s->loop, &s->budget_timer, BUDGET_CHECK_MS, BUDGET_CHECK_MS);
  }
  apply_pause(sc, p);
}

/* ---- per-connection queues -------------------------------------------------------------- */

int appmsg__svc_enqueue(struct appmsg__svc_conn *sc, struct appmsg_request *r) {
  r->queued = 1;
  r->next = NULL;
  if (sc->tail)
    sc->tail->next = r;
  else
    sc->head = r;
  sc->tail = r;
  sc->count++;
  appmsg_conn_hold(sc->conn);
  return 0;
}

/* Takes the head off its queue (its reply has gone out).  The request
 * leaves its connection with it: what it still holds (an expired request
 * the application has not answered yet) is the service's alone, and
 * nothing of it refers to the connection's state, which may go first. */
static void dequeue_head(struct appmsg__svc_conn *sc) {
  struct appmsg_request *r = sc->head;
  sc->head = r->next;
  if (sc->head == NULL)
    sc->tail = NULL;
  sc->count--;
  r->queued = 0;
  r->next = NULL;
  sc->held -= r->held;
  r->sc = NULL;
  appmsg_conn_release(sc->conn);
}

void appmsg__svc_flush_queue(struct appmsg__svc_conn *sc) {
  int moved = 0;
  while (sc->head && sc->head->replied) {
    struct appmsg_request *r = sc->head;
    size_t n;
    const void *p = appmsg_encoder_peek(&r->out, &n);
    /* A connection that is ending drops the reply; one that had no memory
     * to queue it must end too, or the replies after it would answer the
     * wrong requests. */
    if (n && appmsg_conn_send_raw(sc->conn, p, n) == -ENOMEM)
      appmsg_conn_abort(sc->conn, -ENOMEM);
    if (n)
      unhold_bytes(r, n);
    appmsg_encoder_cleanup(&r->out);
    dequeue_head(sc);
    maybe_done(r);
    moved = 1;
  }
  if (moved)
    appmsg__svc_budget(sc);
}

void appmsg__svc_conn_closed(struct appmsg__svc_conn *sc) {
  struct appmsg_service *s = sc->svc;
  wait_unlink(sc);
  for (struct appmsg_request *r = sc->head, *next; r; r = next) {
    next = r->next;
    r->queued = 0;
    r->next = NULL;
    /* What it holds stays the service's until it is done; the connection goes. */
    sc->held -= r->held;
    r->sc = NULL;
    /* An owed one waits for the application's reply, which is dropped; it
     * needs no deadline any more. */
    if (appmsg_timer_active(&r->deadline))
      appmsg_timer_stop(s->loop, &r->deadline);
    maybe_done(r);
  }
  appmsg__free(sc);
  service_budget(s);
}

/* ---- making replies ---------------------------------------------------------------------- */

static const struct appmsg_prepared *type_header(struct appmsg_service *s, const char *type,
                                                 const char *encoding) {
  for (unsigned i = 0; i < APPMSG__TYPE_CACHE; i++) {
    struct appmsg__type_cache *t = &s->types[i];
    if (t->hdr && strcmp(t->type, type) == 0 && strcmp(t->encoding, encoding) == 0)
      return t->hdr;
  }
  struct appmsg_header h;
  appmsg_header_init(&h);
  struct appmsg_prepared *p = NULL;
  char *tc = appmsg__strdup(type), *ec = appmsg__strdup(encoding);
  if (tc && ec && appmsg_header_set(&h, type, encoding) == 0 && appmsg_prepared_new(&p, &h) == 0) {
    struct appmsg__type_cache *t = &s->types[s->types_next++ % APPMSG__TYPE_CACHE];
    appmsg__free(t->type);
    appmsg__free(t->encoding);
    appmsg_prepared_free(t->hdr);
    *t = (struct appmsg__type_cache){tc, ec, p};
  } else {
    appmsg__free(tc);
    appmsg__free(ec);
  }
  appmsg_header_cleanup(&h);
  return p;
}

/* (service_internal.h) */
int appmsg__svc_error_last(struct appmsg__svc_conn *sc, const char *name, const char *body,
                           size_t n) {
  struct appmsg_service *s = sc->svc;
  struct appmsg_request *r = appmsg__svc_request_get(s);
  if (r == NULL || appmsg__encoder_push_prepared(&r->out, s->json_hdr, NULL, 0, body, n) != 0) {
    if (r)
      appmsg__svc_request_put(r);
    return -ENOMEM;
  }
  r->sc = sc;
  r->answered = 1;
  r->replied = 1;
  appmsg__svc_enqueue(sc, r);
  hold_bytes(r, appmsg_encoder_pending(&r->out));
  APPMSG__ADD(s->st.replies, 1);
  appmsg__svc_count_error(s, name);
  return 0;
}

/*
 * Delivers a reply for r: to the connection at once when r is not behind
 * earlier requests, else into r->out until its turn.  The caller checked
 * that r may still reply (r->sc is set).  Returns 0 or a negative code
 * (nothing made).
 */
int appmsg__svc_deliver(struct appmsg_request *r, const struct appmsg_prepared *hdr,
                        const void *content, size_t len, const char *error_name) {
  struct appmsg_service *s = r->svc;
  struct appmsg__svc_conn *sc = r->sc;
  int rc;
  if (!r->queued || sc->head == r) {
    rc = appmsg__conn_send_prepared_ex(sc->conn, hdr, r->rid, r->rid_len, content, len);
    if (rc == APPMSG_E_CLOSED || rc == APPMSG_E_OUTPUT_FULL)
      rc = 0; /* the connection is ending: it counts as made, and is dropped */
    if (rc)
      return rc;
    r->replied = 1;
    if (r->as) /* (while it still knows its connection) */
      appmsg__svc_measure_reply(r, error_name);
    if (r->queued) {
      dequeue_head(sc);
      appmsg__svc_flush_queue(sc);
      appmsg__svc_budget(sc);
    }
  } else {
    rc = appmsg__encoder_push_prepared(&r->out, hdr, r->rid, r->rid_len, content, len);
    if (rc)
      return rc;
    r->replied = 1;
    if (r->as)
      appmsg__svc_measure_reply(r, error_name);
    hold_bytes(r, appmsg_encoder_pending(&r->out));
    appmsg__svc_budget(sc);
  }
  APPMSG__ADD(s->st.replies, 1);
  if (error_name)
    appmsg__svc_count_error(s, error_name);
  return 0;
}

int appmsg__svc_error_reply(struct appmsg_request *r, const char *name, const char *reason,
                            long long offset) {
  char body[APPMSG__ERROR_BODY_MAX];
  size_t n = appmsg__error_body(name, reason, offset, body);
  return appmsg__svc_deliver(r, r->svc->json_hdr, body, n, name);
}

/* Whether the application may reply to r now; if not, finishes r when
 * that was its last use.  Returns 0 or the code the reply call returns. */
static int may_reply(struct appmsg_request *r) {
  if (__builtin_expect(!r->answered && !r->retired && r->sc && !r->expired, 1))
    return 0; /* (the usual case: no log fields to make, no peer's address to format) */
  struct appmsg_log_fields f = appmsg__svc_request_fields(r);
  if (r->answered || r->retired) {
    appmsg__svc_logx(r->svc, APPMSG_LOG_WARN, &f,
                     "a handler replied twice to one request (action '%s')",
                     r->action ? r->action : "(binary)");
    return -EALREADY;
  }
  if (r->sc == NULL || r->expired) {
    appmsg__svc_logx(r->svc, APPMSG_LOG_INFO, &f, "a reply came %s (action '%s'); dropped",
                     r->expired ? "after the deadline had passed"
                                : "after its connection had closed",
                     r->action ? r->action : "(binary)");
    r->answered = 1;
    maybe_done(r);
    return APPMSG_E_CLOSED;
  }
  return 0;
}

/* After the application's reply call: r is answered; outside its handler
 * it is done once its reply has left. */
static int finish_reply(struct appmsg_request *r, int rc) {
  if (rc)
    return rc;
  r->answered = 1;
  maybe_done(r);
  return 0;
}

char *appmsg__svc_result_body(const char *text, size_t n, char *buf, size_t cap, size_t *len,
                              char **heap) {
  char *b = buf;
  *heap = NULL;
  size_t q = appmsg_json_quote(text, n, b + 11, cap - 12);
  if (q > cap - 12) { /* too long: quote again into a buffer of its size */
    if ((b = *heap = appmsg__malloc(q + 12)) == NULL)
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
  const char *body = appmsg__svc_result_body(text, n, stack, sizeof stack, &len, &heap);
  rc = body ? appmsg__svc_deliver(r, r->svc->json_hdr, body, len, NULL) : -ENOMEM;
  appmsg__free(heap);
  return finish_reply(r, rc);
}

int appmsg_reply_json(struct appmsg_request *r, const char *json, size_t len) {
  if (json == NULL || appmsg_json_check(json, len, APPMSG__REQUEST_DEPTH_MAX, NULL, NULL) != 0)
    return -EINVAL;
  int rc = may_reply(r);
  if (rc)
    return rc;
  char stack[1024];
  char *body = len + 12 <= sizeof stack ? stack : appmsg__malloc(len + 12);
  if (body) {
    memcpy(body, "{\"result\": ", 11);
    memcpy(body + 11, json, len);
    body[11 + len] = '}';
  }
  rc = body ? appmsg__svc_deliver(r, r->svc->json_hdr, body, len + 12, NULL) : -ENOMEM;
  if (body != stack)
    appmsg__free(body);
  return finish_reply(r, rc);
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

int appmsg_reply_error(struct appmsg_request *r, const char *name, const char *reason) {
  if (name == NULL || reason == NULL || !name_ok(name) ||
      appmsg_utf8_check(reason, strlen(reason)) != strlen(reason))
    return -EINVAL;
  int rc = may_reply(r);
  if (rc)
    return rc;
  return finish_reply(r, appmsg__svc_error_reply(r, name, reason, -1));
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
  return finish_reply(r, appmsg__svc_deliver(r, hdr, content, len, NULL));
}

/* ---- requests answered later --------------------------------------------------------------- */

static void on_deadline(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct appmsg_request *r = ud;
  struct appmsg_service *s = r->svc;
  if (r->sc == NULL || r->replied)
    return;
  struct appmsg_log_fields f = appmsg__svc_request_fields(r);
  f.error = "TIMEOUT";
  appmsg__svc_logx(s, APPMSG_LOG_WARN, &f,
                   "%s: request (action '%s') not answered in %u ms: TIMEOUT", f.peer,
                   r->action ? r->action : "(binary)", s->opts->deadline_ms);
  r->expired = 1;
  char reason[96];
  snprintf(reason, sizeof reason, "the request was not answered within %u ms",
           s->opts->deadline_ms);
  if (appmsg__svc_error_reply(r, "TIMEOUT", reason, -1) != 0) {
    /* No memory even for that: the connection cannot keep its order any
     * more, and would wait for this reply for ever. */
    appmsg__svc_logx(s, APPMSG_LOG_ERROR, &f, "%s: out of memory for a TIMEOUT reply; closing",
                     f.peer);
    appmsg_conn_abort(r->sc->conn, -ENOMEM);
  }
}

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
void appmsg__svc_make_owed(struct appmsg_request *r) {
  struct appmsg_service *s = r->svc;
  struct appmsg__svc_conn *sc = r->sc;
  size_t len;
  void *content = appmsg__conn_take_content(sc->conn, &len);
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
  APPMSG__ADD(s->st.pending, 1);
  appmsg__svc_measure_owed(r);
  int oom = appmsg_header_copy(&r->hdr_copy, r->hdr) != 0;
  r->hdr = oom ? &empty_header : &r->hdr_copy;
  hold_bytes(r, r->len + r->rid_len + HEADER_COST + strlen(r->hdr->content_type) +
                    strlen(r->hdr->content_encoding));
  if (!r->queued)
    appmsg__svc_enqueue(sc, r);
  if (!oom && s->opts->deadline_ms) {
    appmsg_timer_init(&r->deadline, on_deadline, r);
    oom = appmsg_timer_start(s->loop, &r->deadline, s->opts->deadline_ms, 0) != 0;
  }
  if (oom) {
    struct appmsg_log_fields f = appmsg__svc_request_fields(r);
    f.error = "INTERNAL";
    appmsg__svc_logx(s, APPMSG_LOG_ERROR, &f, "%s: out of memory for a request answered later",
                     f.peer);
    r->expired = 1;
    if (appmsg__svc_error_reply(r, "INTERNAL", "the server ran out of memory", -1) != 0)
      appmsg_conn_abort(sc->conn, -ENOMEM); /* (its order could not be kept) */
  }
}

/* ---- the service's share -------------------------------------------------------------------- */

void appmsg__svc_reply_init(struct appmsg_service *s) {
  appmsg__deferred_init(&s->retire_work, put_retired);
  appmsg_timer_init(&s->budget_timer, on_budget_timer, s);
}

void appmsg__svc_reply_cleanup(struct appmsg_service *s) {
  appmsg_timer_stop(s->loop, &s->budget_timer);
  appmsg__loop_undefer(s->loop, &s->retire_work);
  put_retired(&s->retire_work);
  while (s->live) {
    struct appmsg_request *r = s->live;
    r->queued = 0;
    appmsg__svc_request_put(r);
  }
  while (s->free_list) {
    struct appmsg_request *r = s->free_list;
    s->free_list = r->next;
    appmsg__free(r->scratch);
    appmsg__free(r->members);
    appmsg__free(r);
  }
  for (unsigned i = 0; i < APPMSG__TYPE_CACHE; i++) {
    appmsg__free(s->types[i].type);
    appmsg__free(s->types[i].encoding);
    appmsg_prepared_free(s->types[i].hdr);
  }
}
