/*
 * appmsg watch: the service's status counters as rates, as redis-cli --stat.
 *
 *   appmsg watch [HOST:PORT] [-i SECONDS] [-c COUNT]
 *
 * Asks for status every SECONDS (default 1) and prints, from the difference with the last
 * answer, requests/s, replies/s, error replies/s, the connections open, and bytes in and out
 * per second; the header line is repeated every 20 lines.  The status request itself counts
 * (one request and one reply per line).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

#define HEADER_EVERY 20

struct sample {
  double requests, replies, errors, connections, bytes_in, bytes_out;
  uint64_t at_ns;
};

struct watch {
  struct appmsg_loop *loop;
  struct appmsg_client *client;
  struct target t;
  struct appmsg_client_opts o;
  struct appmsg_timer tick;
  unsigned long count, lines;
  struct sample last;
  int have_last; /* last holds an answer of this connection */
  int waiting;   /* a status request is in flight */
  int lost;
  int answered;
};

/* A member's number (0 for another type). */
static double number(const struct appmsg_json_member *m) {
  char num[64];
  if (m->type != APPMSG_JSON_NUMBER)
    return 0;
  snprintf(num, sizeof num, "%.*s", (int)(m->val_len < 63 ? m->val_len : 63), m->val);
  return strtod(num, NULL);
}

/* One member of "errors": a count per name, summed. */
static void on_error_count(void *ud, const struct appmsg_json_member *m) {
  *(double *)ud += number(m);
}

/* One member of the status object: the counters shown are kept. */
static void on_counter(void *ud, const struct appmsg_json_member *m) {
  struct sample *s = ud;
  char key[32];
  if (m->key_len >= sizeof key)
    return;
  key[appmsg_json_unescape(m->key, m->key_len, key)] = '\0';
  if (m->type == APPMSG_JSON_OBJECT && strcmp(key, "errors") == 0) {
    appmsg_json_scan(m->val, m->val_len, 64, NULL, on_error_count, &s->errors, NULL, NULL);
    return;
  }
  double v = number(m);
  if (strcmp(key, "requests") == 0)
    s->requests = v;
  else if (strcmp(key, "replies") == 0)
    s->replies = v;
  else if (strcmp(key, "connections") == 0)
    s->connections = v;
  else if (strcmp(key, "bytes_in") == 0)
    s->bytes_in = v;
  else if (strcmp(key, "bytes_out") == 0)
    s->bytes_out = v;
}

/* The counters of a status result; -1 when it is not an object. */
static int sample_read(struct sample *s, const char *json, size_t len) {
  enum appmsg_json_type top;
  memset(s, 0, sizeof *s);
  if (appmsg_json_scan(json, len, 64, &top, NULL, NULL, NULL, NULL) != 0 ||
      top != APPMSG_JSON_OBJECT)
    return -1;
  appmsg_json_scan(json, len, 64, NULL, on_counter, s, NULL, NULL);
  return 0;
}

/* Bytes per second as a person reads them: 950 B, 12.3 kB, 4.56 MB. */
static const char *rate_text(double v, char *buf, size_t len) {
  const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  for (; v >= 1000 && u < 4; u++)
    v /= 1000;
  snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
  return buf;
}

static void on_status(const struct appmsg_reply *r, void *ud) {
  struct watch *w = ud;
  struct sample s;
  w->waiting = 0;
  if (r->header == NULL) {
    report_failure(&w->t, &w->o, r);
    w->lost = 1;
    w->have_last = 0;
    return;
  }
  if (r->status != 0 || !r->result_json || sample_read(&s, r->result_json, r->result_json_len)) {
    logf_("the service at %s answered status with something else than its counters:", w->t.where);
    print_reply(r, 0, 0, stderr);
    appmsg_loop_stop(w->loop);
    return;
  }
  w->answered = 1;
  s.at_ns = now_ns();
  if (w->have_last) {
    double dt = (double)(s.at_ns - w->last.at_ns) / 1e9;
    if (w->lines % HEADER_EVERY == 0)
      printf("%-8s %10s %10s %9s %7s %11s %11s\n", "time", "req/s", "replies/s", "errors/s",
             "conns", "in/s", "out/s");
    char clock[16], in[32], out[32];
    time_t now = time(NULL);
    strftime(clock, sizeof clock, "%H:%M:%S", localtime(&now));
    printf("%-8s %10.0f %10.0f %9.0f %7.0f %11s %11s\n", clock,
           (s.requests - w->last.requests) / dt, (s.replies - w->last.replies) / dt,
           (s.errors - w->last.errors) / dt, s.connections,
           rate_text((s.bytes_in - w->last.bytes_in) / dt, in, sizeof in),
           rate_text((s.bytes_out - w->last.bytes_out) / dt, out, sizeof out));
    fflush(stdout);
    if (w->count && ++w->lines == w->count)
      appmsg_loop_stop(w->loop);
    else if (!w->count)
      w->lines++;
  }
  w->last = s;
  w->have_last = 1;
}

static void on_tick(struct appmsg_loop *loop, struct appmsg_timer *timer, void *ud) {
  (void)loop;
  (void)timer;
  struct watch *w = ud;
  if (w->waiting)
    return; /* (the last one is still awaited: skip a beat) */
  if (w->client == NULL || w->lost) {
    appmsg_client_free(w->client);
    w->client = NULL;
    w->lost = 0;
    if (appmsg_client_new(&w->client, w->loop, w->t.ep.host, w->t.ep.port, &w->o) != 0) {
      logf_("out of memory");
      appmsg_loop_stop(w->loop);
      return;
    }
  }
  int rc = appmsg_client_call_args(w->client, on_status, w, "status", NULL, 0);
  if (rc) {
    report_refused(&w->t, w->client, rc);
    w->lost = 1;
  } else {
    w->waiting = 1;
  }
}

int cmd_watch(int argc, char **argv) {
  struct conn_args ca = {.timeout_s = 5};
  struct watch w = {0};
  double interval = 1;
  const struct opt opts[] = {
      {"--interval", 'i', OPT_SECONDS, &interval, "SECONDS", "between lines (default 1)", 0.01,
       86400},
      {"--count", 'c', OPT_COUNT, &w.count, "COUNT", "stop after COUNT lines (default: Ctrl-C)", 1,
       1e12},
      CONN_OPTS(ca, "a status unanswered after SECONDS is a failure (default 5)"),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .command = "watch",
      .usage = "[options] [HOST:PORT]",
      .about = "Prints the service's counters (its status action) every SECONDS as rates:\n"
               "requests/s, replies/s, error replies/s, connections open, bytes in and out\n"
               "per second.  The header is repeated every 20 lines.",
      .operands = "HOST:PORT  the server (default $APPMSG_ADDR, else 127.0.0.1:65432)",
      .exits = "0  the counters were read\n"
               "1  they never were (no connection, or no status action)\n"
               "2  usage error",
      .opts = opts,
  };
  const char *pos[2];
  int npos;
  parse_target(&cli, argc, argv, pos, 1, &w.t, &npos);
  client_opts_setup(&cli, &ca, &w.o);
  if (appmsg_loop_new(&w.loop, APPMSG_LOOP_DEFAULT) != 0) {
    logf_("cannot start");
    return EXIT_CONN;
  }
  run_every(w.loop, &w.tick, interval, on_tick, &w);
  appmsg_client_free(w.client);
  appmsg_loop_free(w.loop);
  appmsg_tls_free(w.o.conn.tls);
  return w.answered ? EXIT_ANSWERED : EXIT_CONN;
}
