/*
 * client-bench: load through the client library (client.h), to weigh what
 * the library costs beside appmsg-bench's hand-written client.
 *
 *   client-bench [-h HOST] [-p PORT] [-c CLIENTS] [-P PIPELINE] [--duration S]
 *                [--warmup N] [--timeout S] [-q]
 *
 * CLIENTS clients on one loop (one thread), each keeping PIPELINE search
 * calls in flight ("search morpheus", as appmsg-bench's search workload)
 * and checking every reply's result.  Prints, like appmsg-bench:
 *   RESULT rps=... p50_us=... p99_us=... p999_us=... max_us=... errors=... requests=... total=...
 * Bounded: stops after --duration seconds (default 5), gives up after
 * --timeout (default 60).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appmsg/appmsg.h"

#define BUCKETS 200000 /* latency histogram: 1 us buckets up to 200 ms, then one more */
#define EXPECTED "Follow the white rabbit. \xf0\x9f\x90\xb0"

struct load;

struct call_slot {
  struct load *load;
  struct appmsg_client *client;
  uint64_t sent_ns;
};

struct load {
  struct appmsg_loop *loop;
  uint64_t warmup, done, measured, errors;
  uint64_t start_ns, end_ns, stop_ns;
  int stopping;
  unsigned in_flight;
  uint64_t *hist;
  double max_us;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_reply(const struct appmsg_reply *r, void *ud);

static void issue(struct call_slot *s) {
  s->sent_ns = now_ns();
  if (appmsg_client_call(s->client, on_reply, s, "search", "value", "morpheus", NULL) == 0)
    s->load->in_flight++;
  else
    s->load->errors++;
}

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct call_slot *s = ud;
  struct load *l = s->load;
  uint64_t t = now_ns();
  l->in_flight--;
  l->done++;
  if (r->status != 0 || r->result == NULL || strcmp(r->result, EXPECTED) != 0) {
    l->errors++;
  } else if (l->done > l->warmup) {
    if (l->start_ns == 0)
      l->start_ns = t;
    l->measured++;
    double us = (double)(t - s->sent_ns) / 1000.0;
    size_t b = us < BUCKETS ? (size_t)us : BUCKETS;
    l->hist[b]++;
    if (us > l->max_us)
      l->max_us = us;
  }
  if (t >= l->stop_ns && l->start_ns) {
    if (!l->stopping)
      l->end_ns = t;
    l->stopping = 1;
  }
  if (!l->stopping)
    issue(s);
  if (l->stopping && l->in_flight == 0)
    appmsg_loop_stop(l->loop);
}

static double percentile(const struct load *l, double q) {
  uint64_t want = (uint64_t)(q * (double)l->measured), seen = 0;
  for (size_t b = 0; b <= BUCKETS; b++) {
    seen += l->hist[b];
    if (seen > want)
      return (double)b + 0.5;
  }
  return l->max_us;
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *port = "65432";
  int clients = 50, pipeline = 16, quiet = 0;
  double duration = 5, timeout = 60;
  unsigned long warmup = 100000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-q")) {
      quiet = 1;
      continue;
    }
    if (v == NULL) {
      fprintf(stderr, "usage: client-bench [-h HOST] [-p PORT] [-c CLIENTS] [-P PIPELINE] "
                      "[--duration S] [--warmup N] [--timeout S] [-q]\n");
      return 2;
    }
    i++;
    if (!strcmp(a, "-h"))
      host = v;
    else if (!strcmp(a, "-p"))
      port = v;
    else if (!strcmp(a, "-c"))
      clients = atoi(v);
    else if (!strcmp(a, "-P"))
      pipeline = atoi(v);
    else if (!strcmp(a, "--duration"))
      duration = atof(v);
    else if (!strcmp(a, "--warmup"))
      warmup = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--timeout"))
      timeout = atof(v);
    else {
      fprintf(stderr, "client-bench: unknown option %s\n", a);
      return 2;
    }
  }
  if (clients < 1 || pipeline < 1 || duration <= 0) {
    fprintf(stderr, "client-bench: -c, -P and --duration must be positive\n");
    return 2;
  }
  struct load l = {.warmup = warmup};
  l.hist = calloc(BUCKETS + 1, sizeof *l.hist);
  struct appmsg_client **cl = calloc((size_t)clients, sizeof *cl);
  struct call_slot *slots = calloc((size_t)clients * (size_t)pipeline, sizeof *slots);
  if (!l.hist || !cl || !slots || appmsg_loop_new(&l.loop, APPMSG_LOOP_DEFAULT) != 0) {
    fprintf(stderr, "client-bench: out of memory\n");
    return 1;
  }
  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.call_timeout_ms = (uint32_t)(timeout * 1000);
  for (int c = 0; c < clients; c++) {
    if (appmsg_client_new(&cl[c], l.loop, host, port, &o) != 0) {
      fprintf(stderr, "client-bench: cannot make client %d\n", c);
      return 1;
    }
  }
  /* The clock starts with the first measured reply; the run lasts duration after the warm-up. */
  l.stop_ns = UINT64_MAX;
  for (int c = 0; c < clients; c++)
    for (int k = 0; k < pipeline; k++) {
      struct call_slot *s = &slots[c * pipeline + k];
      s->load = &l;
      s->client = cl[c];
      issue(s);
    }
  uint64_t give_up = now_ns() + (uint64_t)(timeout * 1e9);
  while (!l.stopping || l.in_flight > 0) {
    if (l.start_ns && l.stop_ns == UINT64_MAX)
      l.stop_ns = l.start_ns + (uint64_t)(duration * 1e9);
    if (appmsg_loop_run_once(l.loop, 100) < 0 || now_ns() > give_up)
      break;
  }
  double secs = l.end_ns > l.start_ns ? (double)(l.end_ns - l.start_ns) / 1e9 : 0;
  double rps = secs > 0 ? (double)l.measured / secs : 0;
  if (!quiet)
    printf("client-bench: %d client(s), pipeline %d: %llu replies verified in %.3f s, %.1f "
           "requests/s\n",
           clients, pipeline, (unsigned long long)l.measured, secs, rps);
  printf("RESULT rps=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%llu "
         "requests=%llu total=%llu\n",
         rps, percentile(&l, 0.5), percentile(&l, 0.99), percentile(&l, 0.999), l.max_us,
         (unsigned long long)l.errors, (unsigned long long)l.measured, (unsigned long long)l.done);
  for (int c = 0; c < clients; c++)
    appmsg_client_free(cl[c]);
  appmsg_loop_free(l.loop);
  free(slots);
  free(cl);
  free(l.hist);
  return l.errors ? 1 : 0;
}
