/*
 * The service's counters (see include/appmsg/service.h): requests, replies
 * and error replies by name, summed over a group of services on other
 * threads, and the built-in ping and status actions that report them.
 *
 * Every counter has one writer, the service's own thread; a group's status
 * reads the others' with relaxed atomic loads (no lock on the request
 * path).  An error name is written before it is published (nerrors, a
 * release store), so that other threads read whole names.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_internal.h"

/* Counts an error reply by name.  A name is written before it is published
 * (nerrors, a release store), so that other threads read whole names. */
void appmsg__svc_count_error(struct appmsg_service *s, const char *name) {
  APPMSG__ADD(s->st.errors, 1);
  size_t n = s->nerrors;
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->errors[i].name, name) == 0) {
      APPMSG__ADD(s->errors[i].n, 1);
      return;
    }
  if (n < APPMSG__ERROR_NAMES_MAX) {
    snprintf(s->errors[n].name, sizeof s->errors[n].name, "%s", name);
    APPMSG__ADD(s->errors[n].n, 1);
    __atomic_store_n(&s->nerrors, n + 1, __ATOMIC_RELEASE);
  } else {
    APPMSG__ADD(s->errors[APPMSG__ERROR_NAMES_MAX].n, 1); /* "OTHER", named at creation */
  }
}

void appmsg__svc_builtin_ping(struct appmsg_request *r, void *ud) {
  (void)ud;
  /* Refused for lack of memory, the request would stay owed until the
   * deadline: a ping never answers later, so it answers INTERNAL now. */
  if (appmsg_reply_json(r, "\"pong\"", 6) != 0)
    appmsg_reply_error(r, "INTERNAL", "out of memory");
}

/* A growing text buffer (service_internal.h). */

/* Makes room for n more bytes (and a NUL); 0, or -1 once memory ran out (t->failed). */
int appmsg__text_room(struct appmsg__text *t, size_t n) {
  if (t->failed)
    return -1;
  if (n < t->cap - t->len)
    return 0;
  size_t cap = 2 * t->cap + n + 1;
  char *np = appmsg__realloc(t->p, cap);
  if (np == NULL) {
    t->failed = 1;
    return -1;
  }
  t->p = np;
  t->cap = cap;
  return 0;
}

size_t appmsg__text_hook(struct appmsg__text *t, size_t (*fn)(void *, char *, size_t), void *ud) {
  if (t->failed)
    return 0;
  size_t room = t->cap - t->len, n = fn(ud, t->p ? t->p + t->len : NULL, room);
  if (n >= room) { /* it did not fit: again with room */
    if (appmsg__text_room(t, n) != 0)
      return 0;
    room = t->cap - t->len;
    n = fn(ud, t->p + t->len, room);
    if (n >= room) { /* it changed its mind */
      t->failed = 1;
      return 0;
    }
  }
  t->len += n;
  return n;
}

void appmsg__text_addf(struct appmsg__text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    t->failed = 1;
    return;
  }
  if (appmsg__text_room(t, (size_t)n) != 0)
    return;
  va_start(ap, fmt);
  vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

void appmsg__text_add_quoted(struct appmsg__text *t, const char *s) {
  size_t n = strlen(s), q = appmsg_json_quote(s, n, NULL, 0);
  if (appmsg__text_room(t, q) != 0)
    return;
  t->len += appmsg_json_quote(s, n, t->p + t->len, q);
}

void appmsg__svc_each_error(struct appmsg_service *s, appmsg__error_total_fn fn, void *ud) {
  size_t n;
  struct appmsg_service *const *m = appmsg__svc_group(s, &n);
  for (size_t a = 0; a < n; a++) {
    size_t na = __atomic_load_n(&m[a]->nerrors, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i <= na; i++) {
      const char *name = m[a]->errors[i < na ? i : APPMSG__ERROR_NAMES_MAX].name;
      int seen = 0; /* counted already, with an earlier member's */
      for (size_t b = 0; b < a && !seen; b++)
        seen = appmsg_service_error_count(m[b], name) > 0;
      uint64_t total = 0;
      for (size_t b = a; b < n && !seen; b++)
        total += appmsg_service_error_count(m[b], name);
      if (!seen && total > 0)
        fn(ud, name, total);
    }
  }
}

struct status_errors {
  struct appmsg__text *t;
  size_t written;
};

static void status_error(void *ud, const char *name, uint64_t n) {
  struct status_errors *se = ud;
  appmsg__text_addf(se->t, "%s\"%s\": %llu", se->written++ ? ", " : "", name,
                    (unsigned long long)n);
}

/* One member of the status's "actions": a registered action always, the others once they
 * counted something. */
struct status_actions {
  struct appmsg__text *t;
  size_t written;
};

static void status_action(void *ud, const struct appmsg__action_total *a) {
  struct status_actions *sa = ud;
  if (a->other && a->requests == 0 && a->pending == 0)
    return;
  appmsg__text_addf(sa->t, "%s", sa->written++ ? ", " : "");
  appmsg__text_add_quoted(sa->t, a->name);
  appmsg__text_addf(sa->t,
                    ": {\"requests\": %llu, \"errors\": %llu, \"pending\": %llu, \"p50_s\": %.9g, "
                    "\"p99_s\": %.9g, \"max_s\": %.9g}",
                    (unsigned long long)a->requests, (unsigned long long)a->errors,
                    (unsigned long long)a->pending, (double)appmsg__action_quantile(a, 0.5) / 1e9,
                    (double)appmsg__action_quantile(a, 0.99) / 1e9, (double)a->max_ns / 1e9);
}

void appmsg__svc_builtin_status(struct appmsg_request *r, void *ud) {
  (void)ud;
  struct appmsg__text t = {appmsg__malloc(512), 0, 512, 0};
  t.failed = t.p == NULL;
  appmsg__svc_status_json(r->svc, &t);
  if (t.failed || appmsg_reply_json(r, t.p, t.len) != 0) {
    if (!r->answered)
      appmsg_reply_error(r, "INTERNAL", "the status could not be written");
  }
  appmsg__free(t.p);
}

void appmsg__svc_status_json(struct appmsg_service *s, struct appmsg__text *t) {
  struct appmsg_service_stats st;
  appmsg_service_stats_total(s, &st);
  size_t threads;
  appmsg__svc_group(s, &threads);
  appmsg__text_addf(t, "{\"title\": ");
  appmsg__text_add_quoted(t, s->title ? s->title : "appmsg service");
  appmsg__text_addf(t,
                    ", \"version\": \"%s\", \"uptime_s\": %llu, \"connections\": %llu, "
                    "\"connections_total\": %llu, \"requests\": %llu, \"replies\": %llu, "
                    "\"pending\": %llu, \"threads\": %zu, \"errors\": {",
                    appmsg_version(), (unsigned long long)(st.uptime_ms / 1000),
                    (unsigned long long)st.connections, (unsigned long long)st.connections_total,
                    (unsigned long long)st.requests, (unsigned long long)st.replies,
                    (unsigned long long)st.pending, threads);
  struct status_errors se = {t, 0};
  appmsg__svc_each_error(s, status_error, &se);
  appmsg__text_addf(t, "}, \"bytes_in\": %llu, \"bytes_out\": %llu, \"actions\": {",
                    (unsigned long long)st.bytes_in, (unsigned long long)st.bytes_out);
  struct status_actions sa = {t, 0};
  if (appmsg__svc_each_action(s, status_action, &sa) != 0)
    t->failed = 1;
  appmsg__text_addf(t, "}");
  if (s->status_fn && !t->failed) {
    appmsg__text_addf(t, ", ");
    if (appmsg__text_hook(t, s->status_fn, s->status_ud) == 0 && !t->failed)
      t->len -= 2; /* nothing added: no separator */
  }

  appmsg__text_addf(t, "}");
}

void appmsg_service_stats(const struct appmsg_service *s, struct appmsg_service_stats *out) {
  out->uptime_ms = appmsg__clock_ms() - s->started;
  out->connections = APPMSG__GET(s->st.connections);
  out->connections_total = APPMSG__GET(s->st.connections_total);
  out->requests = APPMSG__GET(s->st.requests);
  out->replies = APPMSG__GET(s->st.replies);
  out->errors = APPMSG__GET(s->st.errors);
  out->pending = APPMSG__GET(s->st.pending);
  out->bytes_in = appmsg_counter_get(&s->io.bytes_in);
  out->bytes_out = appmsg_counter_get(&s->io.bytes_out);
}

void appmsg_service_stats_total(const struct appmsg_service *s, struct appmsg_service_stats *out) {
  size_t n;
  struct appmsg_service *const *m = appmsg__svc_group(s, &n);
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
  out->uptime_ms = appmsg__clock_ms() - s->started; /* this one's: they started together */
}

uint64_t appmsg_service_error_count(const struct appmsg_service *s, const char *name) {
  size_t n = __atomic_load_n(&s->nerrors, __ATOMIC_ACQUIRE);
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->errors[i].name, name) == 0)
      return APPMSG__GET(s->errors[i].n);
  return strcmp(name, "OTHER") == 0 ? APPMSG__GET(s->errors[APPMSG__ERROR_NAMES_MAX].n) : 0;
}

int appmsg_service_group(struct appmsg_service *const *services, size_t n) {
  for (size_t i = 0; i < n; i++) {
    struct appmsg_service **copy = appmsg__malloc(n * sizeof *copy);
    if (copy == NULL)
      return -ENOMEM; /* (the ones done keep their group: each still counts itself) */
    memcpy(copy, services, n * sizeof *copy);
    appmsg__free(services[i]->group);
    services[i]->group = copy;
    services[i]->ngroup = n;
  }
  return 0;
}
