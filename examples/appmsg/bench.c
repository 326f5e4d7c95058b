/*
 * appmsg bench: load any action of any service, as redis-benchmark and ghz do.
 *
 *   appmsg bench [HOST:PORT] ACTION [key=TEXT ...] [key:=JSON ...] [-c CONNS] [-P PIPELINE]
 *                [-n REQUESTS | -t SECONDS] [-T THREADS] [--warmup SECONDS] [--json]
 *
 * CONNS clients (connections) spread over THREADS threads, each thread with a loop of its own
 * (as client-bench's one loop, many clients): every client keeps PIPELINE calls in flight, a
 * new call made as each reply comes.  The request is built once (appmsg_request_build()) and
 * sent as it is.  Replies to calls made during the warm-up are not counted; the others go into
 * a latency histogram per thread (src/histogram.c: log-linear, within 1%), merged at the end.
 * Every reply is compared with the thread's first one (mismatches are counted: a service
 * whose answers should not change can be checked under load), and error replies are counted
 * by name.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "tool.h"

#define ERR_NAMES 16 /* error names counted apart per thread; more are "OTHER" */

struct bench;

struct err_count {
  char name[65];
  uint64_t n;
};

struct worker;

/* One call slot: PIPELINE of them per client. */
struct slot {
  struct worker *w;
  struct appmsg_client *cl;
  uint64_t sent_ns;
};

struct worker {
  struct bench *b;
  struct appmsg_loop *loop;
  struct appmsg_client **clients;
  size_t nclients;
  struct slot *slots;
  size_t nslots;
  struct appmsg__histogram hist; /* the latencies measured, in ns */
  uint64_t measured;             /* replies measured (error replies too) */
  uint64_t progress;             /* replies, for the progress line (read by the main thread) */
  uint64_t errors, mismatches;
  uint64_t first_ns, last_ns; /* the first measured call made, the last measured reply */
  struct err_count errs[ERR_NAMES];
  size_t nerrs;
  char *first; /* the first reply's content (and its status in first_status) */
  size_t first_len;
  int first_status;
  size_t in_flight;
  int stopping;
  int failed;    /* a connection failed: the run ends */
  char why[512]; /* the first failure, as report_failure() would say it */
  pthread_t thread;
  int started;
};

struct bench {
  const struct target *t;
  struct appmsg_client_opts o;
  const char *body;
  size_t len;
  unsigned long conns, pipeline, threads;
  unsigned long long n;          /* -n (0: -t) */
  uint64_t measure_from, end_ns; /* measuring starts at; -t: no call made after */
  uint64_t measured_calls;       /* -n: measured calls made so far (all threads, atomic) */
  int stop;                      /* Ctrl-C or a failure: every worker winds down (atomic) */
  struct appmsg_loop *main_loop; /* the main thread's: progress, and the end */
  uint64_t workers_done;         /* (atomic) */
};

static void count_error(struct worker *w, const char *name) {
  size_t i = 0;
  for (; i < w->nerrs && strcmp(w->errs[i].name, name) != 0; i++)
    ;
  if (i == w->nerrs) {
    if (w->nerrs == ERR_NAMES) {
      i = ERR_NAMES - 1;
      name = "OTHER";
    } else {
      snprintf(w->errs[i].name, sizeof w->errs[i].name, "%s", name);
      w->nerrs++;
    }
  }
  w->errs[i].n++;
  w->errors++;
}

static void on_reply(const struct appmsg_reply *r, void *ud);

/* Makes the slot's next call, unless the run is ending.  Returns 0 or the refusal. */
static int next_call(struct slot *s) {
  struct worker *w = s->w;
  struct bench *b = w->b;
  uint64_t t = now_ns();
  if (w->stopping || __atomic_load_n(&b->stop, __ATOMIC_RELAXED) || (b->end_ns && t >= b->end_ns)) {
    w->stopping = 1;
    return 0;
  }
  if (b->n && t >= b->measure_from &&
      __atomic_fetch_add(&b->measured_calls, 1, __ATOMIC_RELAXED) >= b->n) {
    w->stopping = 1;
    return 0;
  }
  struct appmsg_call call = {.content = b->body, .len = b->len};
  s->sent_ns = t;
  int rc = appmsg_client_send(s->cl, &call, on_reply, s);
  if (rc == 0) {
    w->in_flight++;
  } else if (!w->failed) {
    w->failed = 1;
    const char *why = appmsg_client_last_error(s->cl);
    snprintf(w->why, sizeof w->why, "%s", *why ? why : appmsg_strerror(rc));
    w->stopping = 1;
  }
  return rc;
}

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct slot *s = ud;
  struct worker *w = s->w;
  uint64_t t = now_ns();
  w->in_flight--;
  appmsg_counter_add(&w->progress, 1);
  if (r->header == NULL) { /* no reply: the connection failed; the run ends */
    if (!w->failed) {
      w->failed = 1;
      if (r->status == APPMSG_E_NOT_SENT && r->cause < 0 && r->cause > -4096)
        snprintf(w->why, sizeof w->why,
                 "cannot connect to %s: %s \xe2\x80\x94 is the server "
                 "running? (set APPMSG_ADDR or give HOST:PORT)",
                 w->b->t->where, appmsg_strerror(r->cause));
      else
        snprintf(w->why, sizeof w->why, "%s", r->reason ? r->reason : "no reply");
    }
    count_error(w, r->status == APPMSG_E_TIMEOUT  ? "TIMEOUT"
                   : r->status == APPMSG_E_CLOSED ? "CLOSED"
                                                  : "NOT_SENT");
    w->stopping = 1;
    __atomic_store_n(&w->b->stop, 1, __ATOMIC_RELAXED);
  } else {
    if (w->first == NULL && (w->first = malloc(r->len + 1)) != NULL) {
      memcpy(w->first, r->content, r->len);
      w->first_len = r->len;
      w->first_status = r->status;
    } else if (w->first && (r->status != w->first_status || r->len != w->first_len ||
                            memcmp(r->content, w->first, r->len) != 0)) {
      w->mismatches++;
    }
    if (s->sent_ns >= w->b->measure_from) {
      if (w->measured == 0 || s->sent_ns < w->first_ns)
        w->first_ns = s->sent_ns;
      w->measured++;
      w->last_ns = t;
      appmsg__histogram_record(&w->hist, t - s->sent_ns);
      if (r->status == APPMSG_E_ERROR_REPLY)
        count_error(w, r->error ? r->error : "ERROR");
    }
  }
  if (!w->stopping)
    next_call(s);
  if (w->stopping && w->in_flight == 0)
    appmsg_loop_stop(w->loop);
}

static void *work(void *arg) {
  struct worker *w = arg;
  struct bench *b = w->b;
  int rc = appmsg_loop_new(&w->loop, APPMSG_LOOP_DEFAULT);
  for (size_t i = 0; rc == 0 && i < w->nclients; i++)
    rc = appmsg_client_new(&w->clients[i], w->loop, b->t->ep.host, b->t->ep.port, &b->o);
  if (rc) {
    w->failed = 1;
    snprintf(w->why, sizeof w->why, "cannot start: %s", appmsg_strerror(rc));
  }
  for (size_t i = 0; rc == 0 && i < w->nslots; i++) {
    w->slots[i] = (struct slot){w, w->clients[i / b->pipeline], 0};
    rc = next_call(&w->slots[i]);
  }
  if (w->in_flight > 0)
    appmsg_loop_run(w->loop);
  for (size_t i = 0; i < w->nclients; i++)
    appmsg_client_free(w->clients[i]);
  appmsg_loop_free(w->loop);
  w->loop = NULL;
  if (__atomic_add_fetch(&b->workers_done, 1, __ATOMIC_RELAXED) == b->threads)
    appmsg_loop_stop_async(b->main_loop);
  return NULL;
}

/* The progress line, once a second on a terminal. */
struct progress {
  struct bench *b;
  struct worker *w;
  uint64_t start_ns, last;
  int visible; /* a terminal: show it (else the timer only keeps the loop waiting) */
  int shown;
};

static void on_tick(struct appmsg_loop *loop, struct appmsg_timer *timer, void *ud) {
  (void)loop;
  (void)timer;
  struct progress *p = ud;
  uint64_t done = 0, t = now_ns();
  if (!p->visible)
    return;
  for (unsigned long i = 0; i < p->b->threads; i++)
    done += appmsg_counter_get(&p->w[i].progress);
  fprintf(stderr, "\r%6.1f s  %12llu replies  %10.0f replies/s   ", (double)(t - p->start_ns) / 1e9,
          (unsigned long long)done, (double)(done - p->last));
  p->last = done;
  p->shown = 1;
}

static double ms(uint64_t ns) {
  return (double)ns / 1e6;
}

static void report(const struct bench *b, const char *action, double warmup, int json,
                   const struct worker *w, const struct appmsg__histogram *h) {
  uint64_t measured = 0, errors = 0, mismatches = 0, first = UINT64_MAX, last = 0;
  struct err_count all[ERR_NAMES * 4];
  size_t nall = 0;
  for (unsigned long i = 0; i < b->threads; i++) {
    measured += w[i].measured;
    errors += w[i].errors;
    mismatches += w[i].mismatches;
    if (w[i].measured && w[i].first_ns < first)
      first = w[i].first_ns;
    if (w[i].last_ns > last)
      last = w[i].last_ns;
    /* Threads whose first reply differs from thread 0's: every reply of theirs differs. */
    if (i > 0 && w[0].first && w[i].first &&
        (w[i].first_len != w[0].first_len || w[i].first_status != w[0].first_status ||
         memcmp(w[i].first, w[0].first, w[0].first_len) != 0))
      mismatches += w[i].measured - w[i].mismatches;
    for (size_t e = 0; e < w[i].nerrs; e++) {
      size_t k = 0;
      for (; k < nall && strcmp(all[k].name, w[i].errs[e].name) != 0; k++)
        ;
      if (k == nall && nall < sizeof all / sizeof all[0])
        all[nall++] = w[i].errs[e];
      else if (k < nall)
        all[k].n += w[i].errs[e].n;
    }
  }
  double secs = last > first && first != UINT64_MAX ? (double)(last - first) / 1e9 : 0;
  double rps = secs > 0 ? (double)measured / secs : 0;
  static const double qs[] = {0.5, 0.9, 0.99, 0.999};
  static const char *const qn[] = {"p50", "p90", "p99", "p99.9"};
  if (json) {
    size_t q = appmsg_json_quote(action, strlen(action), NULL, 0);
    char *qa = malloc(q + 1);
    if (qa == NULL)
      return;
    appmsg_json_quote(action, strlen(action), qa, q);
    printf("{\"action\": %.*s, \"connections\": %lu, \"pipeline\": %lu, \"threads\": %lu, "
           "\"warmup_s\": %g, \"seconds\": %.6f, \"requests\": %llu, \"rps\": %.1f, "
           "\"latency_ms\": {",
           (int)q, qa, b->conns, b->pipeline, b->threads, warmup, secs,
           (unsigned long long)measured, rps);
    free(qa);
    for (int i = 0; i < 4; i++)
      printf("\"%s\": %.6f, ", qn[i], ms(appmsg__histogram_quantile(h, qs[i])));
    printf("\"max\": %.6f, \"min\": %.6f, \"mean\": %.6f}, \"errors\": {",
           ms(appmsg__histogram_max(h)), ms(appmsg__histogram_min(h)),
           appmsg__histogram_mean(h) / 1e6);
    for (size_t k = 0; k < nall; k++)
      printf("%s\"%s\": %llu", k ? ", " : "", all[k].name, (unsigned long long)all[k].n);
    printf("}, \"errors_total\": %llu, \"mismatches\": %llu}\n", (unsigned long long)errors,
           (unsigned long long)mismatches);
    return;
  }
  printf("appmsg bench %s at %s: %lu connection%s, pipeline %lu, %lu thread%s\n", action,
         b->t->where, b->conns, b->conns == 1 ? "" : "s", b->pipeline, b->threads,
         b->threads == 1 ? "" : "s");
  printf("  requests    %llu in %.3f s (after %g s of warm-up): %.0f requests/s\n",
         (unsigned long long)measured, secs, warmup, rps);
  printf("  latency ms ");
  for (int i = 0; i < 4; i++)
    printf(" %s %.3f ", qn[i], ms(appmsg__histogram_quantile(h, qs[i])));
  printf(" max %.3f  mean %.3f\n", ms(appmsg__histogram_max(h)), appmsg__histogram_mean(h) / 1e6);
  printf("  errors      %llu", (unsigned long long)errors);
  for (size_t k = 0; k < nall; k++)
    printf("%s%s %llu", k ? ", " : " (", all[k].name, (unsigned long long)all[k].n);
  printf("%s\n", nall ? ")" : "");
  printf("  mismatches  %llu (replies that differ from the first)\n",
         (unsigned long long)mismatches);
}

int cmd_bench(int argc, char **argv) {
  struct conn_args ca = {.timeout_s = 10};
  unsigned long conns = 50, pipeline = 1, threads = 1, n = 0;
  double secs = 0, warmup = 1;
  int json = 0;
  const struct opt opts[] = {
      {"--connections", 'c', OPT_COUNT, &conns, "CONNS", "connections (default 50)", 1, 100000},
      {"--pipeline", 'P', OPT_COUNT, &pipeline, "PIPELINE",
       "requests in flight per connection (default 1)", 1, 100000},
      {"--requests", 'n', OPT_COUNT, &n, "N", "stop after N requests measured", 1, 1e15},
      {"--time", 't', OPT_SECONDS, &secs, "SECONDS",
       "stop after SECONDS of measuring (default 10 without -n)", 0.001, 86400},
      {"--threads", 'T', OPT_COUNT, &threads, "THREADS",
       "threads, each with a loop and its share of the connections (default 1)", 1, 256},
      {"--warmup", 0, OPT_SECONDS, &warmup, "SECONDS",
       "load for SECONDS before measuring (default 1; 0: none)", 0, 3600},
      {"--json", 0, OPT_FLAG, &json, NULL, "print the results as one line of JSON", 0, 0},
      CONN_OPTS(ca, "a call unanswered for SECONDS fails the run (default 10)"),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .command = "bench",
      .usage = "[options] [HOST:PORT] ACTION [key=TEXT ...] [key:=JSON ...]",
      .about = "Loads one action of any service: CONNS connections, each with PIPELINE\n"
               "requests in flight, for SECONDS (-t) or N requests (-n) after a warm-up.\n"
               "Prints requests/s, latency percentiles p50, p90, p99, p99.9 and max (from a\n"
               "histogram within 1%), error replies by name, and the replies that differ from\n"
               "the first.  On a terminal a progress line is shown once a second.",
      .operands = "HOST:PORT  the server (default $APPMSG_ADDR, else 127.0.0.1:65432)\n"
                  "ACTION     the action to call, with its members as appmsg call takes them",
      .exits = "0  every request was answered\n"
               "1  a connection failed, was closed, or a call timed out\n"
               "2  usage error\n"
               "3  some replies were error replies",
      .opts = opts,
  };
  enum { MAXPOS = 1024 };
  const char **pos = calloc(MAXPOS, sizeof *pos);
  if (pos == NULL)
    return EXIT_CONN;
  int npos;
  struct target t;
  int at = parse_target(&cli, argc, argv, pos, MAXPOS, &t, &npos);
  if (at == npos) {
    logf_("which action? (appmsg describe lists them)");
    cli_usage_error(&cli);
  }
  if (n && secs > 0) {
    logf_("give -n or -t, not both");
    cli_usage_error(&cli);
  }
  if (!n && secs == 0)
    secs = 10;
  if (threads > conns)
    threads = conns;
  struct params p;
  char err[1024], *body = NULL;
  size_t len = 0;
  int rc = params_parse(&p, (char *const *)pos + at + 1, (size_t)(npos - at - 1), err, sizeof err);
  if (rc == -EINVAL) {
    logf_("%s", err);
    cli_usage_error(&cli);
  }
  if (rc == 0 && (rc = request_make(pos[at], &p, &body, &len)) == -EINVAL) {
    logf_("'%s' cannot be an action (not valid UTF-8)", pos[at]);
    cli_usage_error(&cli);
  }
  params_free(&p);
  struct bench b = {.t = &t,
                    .body = body,
                    .len = len,
                    .conns = conns,
                    .pipeline = pipeline,
                    .threads = threads,
                    .n = n};
  client_opts_setup(&cli, &ca, &b.o);
  b.o.max_queued = pipeline; /* (every slot's call goes out at once, or waits its turn) */
  struct worker *w = calloc(threads, sizeof *w);
  struct appmsg_client **cls = calloc(conns, sizeof *cls);
  struct slot *slots = calloc(conns * pipeline, sizeof *slots);
  if (rc || !w || !cls || !slots || appmsg_loop_new(&b.main_loop, APPMSG_LOOP_DEFAULT) != 0) {
    logf_("out of memory");
    return EXIT_CONN;
  }
  uint64_t start = now_ns();
  b.measure_from = start + (uint64_t)(warmup * 1e9);
  b.end_ns = secs > 0 ? b.measure_from + (uint64_t)(secs * 1e9) : 0;
  for (unsigned long i = 0, c = 0; i < threads; i++) {
    size_t mine = conns / threads + (i < conns % threads);
    w[i].b = &b;
    w[i].clients = cls + c;
    w[i].nclients = mine;
    w[i].slots = slots + c * pipeline;
    w[i].nslots = mine * pipeline;
    c += mine;
  }
  struct progress pr = {&b, w, start, 0, !json && is_terminal(2), 0};
  struct appmsg_timer tick;
  appmsg_timer_init(&tick, on_tick, &pr);
  appmsg_timer_start(b.main_loop, &tick, 1000, 1000);
  appmsg_loop_stop_on_signals(b.main_loop, (const int[]){SIGINT}, 1);
  for (unsigned long i = 0; i < threads; i++)
    w[i].started = pthread_create(&w[i].thread, NULL, work, &w[i]) == 0;
  for (unsigned long i = 0; i < threads; i++)
    if (!w[i].started && __atomic_add_fetch(&b.workers_done, 1, __ATOMIC_RELAXED) == threads)
      appmsg_loop_stop(b.main_loop);
  /* Until every worker is done; a Ctrl-C makes them wind down (the results so far are shown). */
  while (__atomic_load_n(&b.workers_done, __ATOMIC_RELAXED) < threads) {
    if (appmsg_loop_run(b.main_loop) < 0)
      break;
    if (appmsg_loop_signal(b.main_loop))
      __atomic_store_n(&b.stop, 1, __ATOMIC_RELAXED);
  }
  for (unsigned long i = 0; i < threads; i++)
    if (w[i].started)
      pthread_join(w[i].thread, NULL);
  appmsg_timer_stop(b.main_loop, &tick);
  appmsg_loop_stop_on_signals(b.main_loop, NULL, 0);
  appmsg_loop_free(b.main_loop);
  if (pr.shown)
    fprintf(stderr, "\r%70s\r", "");
  struct appmsg__histogram *h = malloc(sizeof *h);
  int status = EXIT_ANSWERED;
  uint64_t measured = 0;
  for (unsigned long i = 0; i < threads; i++)
    measured += w[i].measured;
  if (h && (measured > 0 || !(w[0].failed))) {
    appmsg__histogram_init(h);
    for (unsigned long i = 0; i < threads; i++)
      appmsg__histogram_merge(h, &w[i].hist);
    report(&b, pos[at], warmup, json, w, h);
    fflush(stdout);
  }
  for (unsigned long i = 0; i < threads; i++) {
    if (w[i].failed && status != EXIT_CONN) {
      logf_("%s", w[i].why);
      status = EXIT_CONN;
    }
    if (w[i].errors && status == EXIT_ANSWERED)
      status = EXIT_ERROR_REPLY;
    free(w[i].first);
  }
  free(h);
  free(w);
  free(cls);
  free(slots);
  free(body);
  free(pos);
  appmsg_tls_free(b.o.conn.tls);
  return status;
}
