/*
 * The service's metrics in the Prometheus text format 0.0.4 (see
 * appmsg_service_metrics_listen() in include/appmsg/service.h): base units
 * (seconds, bytes), counters named _total, histograms as _bucket{le},
 * _sum and _count, a # HELP and # TYPE line before each family, every
 * value summed over the service's group.  Label values come from bounded
 * sets only: the actions the application registered (an unknown action
 * counts under "_unknown") and the error names the service counts (at
 * most 64, then "OTHER").
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "service_internal.h"
#include "tls_internal.h"

/* ---- measuring ------------------------------------------------------------------------------ */

/* The Prometheus histogram's bounds: 50 us to 10 s, as Prometheus's client libraries space
 * them, each moved down to the edge of the latency histogram's bucket at or below it (so that
 * "le" holds exactly: 1 ms is written le="0.000999423"). */
static const uint64_t le_ns[APPMSG__LE_COUNT] = {
    50000,     100000,     250000,     500000,     1000000,    2500000,
    5000000,   10000000,   25000000,   50000000,   100000000,  250000000,
    500000000, 1000000000, 2500000000, 5000000000, 10000000000};

/* The last latency bucket whose values are all at or below ns (its highest value in *edge). */
static unsigned lat_bucket_below(uint64_t ns, uint64_t *edge) {
  unsigned k = appmsg__histogram_index(ns) >> APPMSG__LAT_SHIFT; /* the bucket holding ns */
  uint64_t hi =
      appmsg__histogram_bucket_high((k << APPMSG__LAT_SHIFT) + (1u << APPMSG__LAT_SHIFT) - 1);
  if (hi > ns) { /* it straddles ns: the one before */
    k--;
    hi = appmsg__histogram_bucket_high((k << APPMSG__LAT_SHIFT) + (1u << APPMSG__LAT_SHIFT) - 1);
  }
  *edge = hi;
  return k;
}

struct appmsg__action_stats *appmsg__svc_action_stats(struct appmsg_service *s, const char *name) {
  for (size_t i = 0; i < s->nactions; i++)
    if (strcmp(s->actions[i]->name, name) == 0)
      return s->actions[i];
  if (s->nactions >= APPMSG__ACTIONS_MAX + 4)
    return s->actions[APPMSG__AS_OTHER];
  struct appmsg__action_stats *as = appmsg__calloc(1, sizeof *as);
  if (as == NULL || (as->name = appmsg__strdup(name)) == NULL) {
    appmsg__free(as);
    return NULL;
  }
  s->actions[s->nactions] = as;
  __atomic_store_n(&s->nactions, s->nactions + 1, __ATOMIC_RELEASE);
  return as;
}

void appmsg__svc_metrics_cleanup(struct appmsg_service *s) {
  for (size_t i = 0; i < s->nactions; i++) {
    appmsg__free(s->actions[i]->lat);
    appmsg__free(s->actions[i]->name);
    appmsg__free(s->actions[i]);
  }
  s->nactions = 0;
}

/* Logs a slow request: at most 10 lines in a second of the loop's clock, the rest counted and
 * told in the next line. */
static void slow_log(struct appmsg_request *r, uint64_t ns) {
  struct appmsg_service *s = r->svc;
  uint64_t now = appmsg_loop_now(s->loop);
  if (now - s->slow_logged_at >= 1000) {
    s->slow_logged_at = now;
    s->slow_lines = 0;
  }
  if (s->slow_lines >= 10) {
    s->slow_suppressed++;
    return;
  }
  s->slow_lines++;
  char more[64] = "";
  if (s->slow_suppressed)
    snprintf(more, sizeof more, " (and %llu more not logged)",
             (unsigned long long)s->slow_suppressed);
  s->slow_suppressed = 0;
  struct appmsg_log_fields f = appmsg__svc_request_fields(r);
  f.duration_s = (double)ns / 1e9;
  const char *rid = f.request_id;
  appmsg__svc_logx(s, APPMSG_LOG_WARN, &f,
                   "%s: slow request: action '%s' answered in %.3f ms%s%.*s%s%s",
                   f.peer ? f.peer : "(gone)", r->action ? r->action : "(binary)", (double)ns / 1e6,
                   rid ? " (request-id " : "", rid ? (int)f.request_id_len : 0, rid ? rid : "",
                   rid ? ")" : "", more);
}

void appmsg__svc_measure_reply(struct appmsg_request *r, const char *error_name) {
  struct appmsg__action_stats *as = r->as;
  r->as = NULL;
  uint64_t ns = appmsg__clock_ns() - r->arrived_ns;
  if (ns > (uint64_t)1 << 62)
    ns = 0; /* (a test's clock moved back) */
  if (r->owed_counted)
    appmsg__count(&as->pending, (uint64_t)-1);
  r->owed_counted = 0;
  appmsg__count(&as->requests, 1);
  if (error_name)
    appmsg__count(&as->errors, 1);
  appmsg__count(&as->sum_ns, ns);
  if (ns > as->max_ns)
    __atomic_store_n(&as->max_ns, ns, __ATOMIC_RELAXED);
  uint64_t *lat = as->lat;
  if (lat == NULL && (lat = appmsg__calloc(APPMSG__LAT_BUCKETS, sizeof *lat)) != NULL)
    __atomic_store_n(&as->lat, lat, __ATOMIC_RELEASE);
  if (lat) { /* (without memory for it, the counters and bounds above still count) */
    unsigned i = appmsg__histogram_index(ns) >> APPMSG__LAT_SHIFT;
    appmsg__count(&lat[i < APPMSG__LAT_BUCKETS ? i : APPMSG__LAT_BUCKETS - 1], 1);
  }
  uint32_t slow = r->svc->opts->slow_ms;
  if (slow && ns >= (uint64_t)slow * 1000000u)
    slow_log(r, ns);
}

/* ---- reading, summed over the group ---------------------------------------------------------- */

/* Adds as's measurements into t. */
static void add_stats(struct appmsg__action_total *t, const struct appmsg__action_stats *as) {
  t->pending += APPMSG__GET(as->pending);
  t->requests += APPMSG__GET(as->requests);
  t->errors += APPMSG__GET(as->errors);
  t->sum_ns += APPMSG__GET(as->sum_ns);
  uint64_t mx = APPMSG__GET(as->max_ns);
  t->max_ns = mx > t->max_ns ? mx : t->max_ns;
  const uint64_t *lat = __atomic_load_n(&as->lat, __ATOMIC_ACQUIRE);
  for (unsigned k = 0; lat && k < APPMSG__LAT_BUCKETS; k++)
    t->lat[k] += APPMSG__GET(lat[k]);
}

/* The stats named name of a member of the group, or NULL. */
static const struct appmsg__action_stats *stats_named(const struct appmsg_service *m,
                                                      const char *name) {
  size_t n = __atomic_load_n(&m->nactions, __ATOMIC_ACQUIRE);
  for (size_t j = 0; j < n; j++)
    if (strcmp(m->actions[j]->name, name) == 0)
      return m->actions[j];
  return NULL;
}

int appmsg__svc_each_action(struct appmsg_service *s, appmsg__action_total_fn fn, void *ud) {
  struct appmsg__action_total *t = appmsg__malloc(sizeof *t); /* (its histogram is large) */
  if (t == NULL)
    return -ENOMEM;
  size_t n;
  struct appmsg_service *const *m = appmsg__svc_group(s, &n);
  for (size_t a = 0; a < n; a++) {
    size_t na = __atomic_load_n(&m[a]->nactions, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < na; i++) {
      const char *name = m[a]->actions[i]->name;
      int seen = 0; /* summed already, with an earlier member's */
      for (size_t b = 0; b < a && !seen; b++)
        seen = stats_named(m[b], name) != NULL;
      if (seen)
        continue;
      memset(t, 0, sizeof *t);
      t->name = name;
      t->other = i < 4;
      for (size_t b = a; b < n; b++) {
        const struct appmsg__action_stats *as = stats_named(m[b], name);
        if (as)
          add_stats(t, as);
      }
      fn(ud, t);
    }
  }
  appmsg__free(t);
  return 0;
}

uint64_t appmsg__action_quantile(const struct appmsg__action_total *t, double q) {
  uint64_t count = 0;
  for (unsigned k = 0; k < APPMSG__LAT_BUCKETS; k++)
    count += t->lat[k];
  if (count == 0)
    return 0;
  double r = q * (double)count; /* the rank wanted, 1-based: ceil(q * count), at least 1 */
  uint64_t rank = (uint64_t)r, seen = 0;
  rank += (double)rank < r;
  rank += rank == 0;
  for (unsigned k = 0; k < APPMSG__LAT_BUCKETS; k++) {
    seen += t->lat[k];
    if (seen >= rank) { /* the middle of the bucket, never above the largest measured */
      unsigned fine = k << APPMSG__LAT_SHIFT;
      uint64_t lo = appmsg__histogram_bucket_low(fine),
               hi = appmsg__histogram_bucket_high(fine + (1u << APPMSG__LAT_SHIFT) - 1);
      uint64_t mid = lo + (hi - lo) / 2;
      return mid < t->max_ns ? mid : t->max_ns;
    }
  }
  return t->max_ns;
}

/* ---- the Prometheus text format -------------------------------------------------------------- */

/* A metric family's # HELP and # TYPE lines. */
static void family(struct appmsg__text *t, const char *name, const char *type, const char *help) {
  appmsg__text_addf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label's value, escaped as the format asks (backslash, double quote, line feed). */
static void add_label(struct appmsg__text *t, const char *v) {
  for (const char *p = v; *p; p++) {
    size_t n = strcspn(p, "\\\"\n");
    appmsg__text_addf(t, "%.*s", (int)n, p);
    p += n;
    if (*p == '\0')
      break;
    appmsg__text_addf(t, "\\%c", *p == '\n' ? 'n' : *p);
  }
}

/* Which part of each action's measurements a pass writes. */
enum pass { REQUESTS, ERRORS, PENDING, DURATION };

struct action_pass {
  struct appmsg__text *t;
  enum pass pass;
};

static void action_lines(void *ud, const struct appmsg__action_total *a) {
  struct action_pass *ap = ud;
  struct appmsg__text *t = ap->t;
  if (a->other && a->requests == 0 && a->pending == 0)
    return; /* (the four others appear once they counted something) */
  static const char *const names[] = {"appmsg_requests_total", "appmsg_request_errors_total",
                                      "appmsg_requests_in_flight"};
  if (ap->pass != DURATION) {
    uint64_t v = ap->pass == REQUESTS ? a->requests : ap->pass == ERRORS ? a->errors : a->pending;
    appmsg__text_addf(t, "%s{action=\"", names[ap->pass]);
    add_label(t, a->name);
    appmsg__text_addf(t, "\"} %llu\n", (unsigned long long)v);
    return;
  }
  uint64_t cum = 0;
  unsigned next = 0; /* the latency bucket to add next */
  for (unsigned b = 0; b < APPMSG__LE_COUNT; b++) {
    uint64_t edge;
    unsigned last = lat_bucket_below(le_ns[b], &edge);
    for (; next <= last; next++)
      cum += a->lat[next];
    appmsg__text_addf(t, "appmsg_request_duration_seconds_bucket{action=\"");
    add_label(t, a->name);
    appmsg__text_addf(t, "\",le=\"%.9g\"} %llu\n", (double)edge / 1e9, (unsigned long long)cum);
  }
  cum = a->requests; /* (+Inf, _count: every reply, its latency bucket made or not) */
  appmsg__text_addf(t, "appmsg_request_duration_seconds_bucket{action=\"");
  add_label(t, a->name);
  appmsg__text_addf(t, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
  appmsg__text_addf(t, "appmsg_request_duration_seconds_sum{action=\"");
  add_label(t, a->name);
  appmsg__text_addf(t, "\"} %.9f\n", (double)a->sum_ns / 1e9);
  appmsg__text_addf(t, "appmsg_request_duration_seconds_count{action=\"");
  add_label(t, a->name);
  appmsg__text_addf(t, "\"} %llu\n", (unsigned long long)cum);
}

static void error_line(void *ud, const char *name, uint64_t n) {
  /* (names are A-Z, 0-9 and '_': nothing to escape) */
  appmsg__text_addf(ud, "appmsg_errors_total{error=\"%s\"} %llu\n", name, (unsigned long long)n);
}

void appmsg__svc_metrics_text(struct appmsg_service *s, struct appmsg__text *t) {
  struct appmsg_service_stats st;
  appmsg_service_stats_total(s, &st);
  family(t, "appmsg_build_info", "gauge", "The appmsg library's version (always 1).");
  appmsg__text_addf(t, "appmsg_build_info{version=\"%s\"} 1\n", appmsg_version());
  family(t, "appmsg_uptime_seconds", "gauge", "Seconds since the service started.");
  appmsg__text_addf(t, "appmsg_uptime_seconds %.3f\n", (double)st.uptime_ms / 1000.0);
  const struct {
    const char *name, *type, *help;
    uint64_t v;
  } totals[] = {
      {"appmsg_connections", "gauge", "Connections open now.", st.connections},
      {"appmsg_connections_accepted_total", "counter", "Connections accepted.",
       st.connections_total},
      {"appmsg_replies_total", "counter", "Replies sent, error replies included.", st.replies},
      {"appmsg_pending_requests", "gauge", "Requests owed a reply now.", st.pending},
      {"appmsg_received_bytes_total", "counter", "Bytes received.", st.bytes_in},
      {"appmsg_sent_bytes_total", "counter", "Bytes sent.", st.bytes_out},
  };
  for (size_t i = 0; i < sizeof totals / sizeof totals[0]; i++) {
    family(t, totals[i].name, totals[i].type, totals[i].help);
    appmsg__text_addf(t, "%s %llu\n", totals[i].name, (unsigned long long)totals[i].v);
  }
  family(t, "appmsg_errors_total", "counter", "Error replies sent, by error name.");
  appmsg__svc_each_error(s, error_line, t);
  static const struct {
    const char *name, *type, *help;
  } fam[] = {
      {"appmsg_requests_total", "counter", "Requests answered, by action."},
      {"appmsg_request_errors_total", "counter", "Error replies among them, by action."},
      {"appmsg_requests_in_flight", "gauge", "Requests owed a reply now, by action."},
      {"appmsg_request_duration_seconds", "histogram",
       "Time from a request's arrival to its reply being queued, by action."},
  };
  for (enum pass p = REQUESTS; p <= DURATION; p++) {
    family(t, fam[p].name, fam[p].type, fam[p].help);
    struct action_pass ap = {t, p};
    if (appmsg__svc_each_action(s, action_lines, &ap) != 0)
      t->failed = 1;
  }
  long long not_after;
  struct appmsg_tls *tls = s->opts->server.conn.tls;
  if (tls && appmsg__tls_not_after(tls, &not_after) == 0) {
    family(t, "appmsg_tls_certificate_expiry_timestamp_seconds", "gauge",
           "When the certificate served to new connections expires (its notAfter), in seconds "
           "since 1970.");
    appmsg__text_addf(t, "appmsg_tls_certificate_expiry_timestamp_seconds %lld\n", not_after);
  }
  if (s->metrics_fn) /* the application's, as the status hook's */
    appmsg__text_hook(t, s->metrics_fn, s->metrics_ud);
}
