/*
 * appmsg ping: the round-trip time of the ping action, as ping(8) and redis-cli --latency.
 *
 *   appmsg ping [HOST:PORT] [-i SECONDS] [-c COUNT]
 *
 * A ping every SECONDS (default 1), one line a reply with its time, and at the end - after
 * COUNT, or on Ctrl-C - the summary: sent, answered, lost, and min/avg/max/mdev.  A connection
 * that fails is said on the ping's line and made again for the next ping.
 */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

struct ping {
  struct appmsg_loop *loop;
  struct appmsg_client *client;
  struct target t;
  struct appmsg_client_opts o;
  struct appmsg_timer tick;
  unsigned long count; /* 0: until Ctrl-C */
  unsigned long sent, finished, answered;
  double min, max, sum, sum2; /* of the times, in ms */
  int lost;                   /* the connection failed: a new client for the next ping */
};

struct one {
  struct ping *p;
  unsigned long seq;
  uint64_t sent_ns;
};

static void on_pong(const struct appmsg_reply *r, void *ud) {
  struct one *c = ud;
  struct ping *p = c->p;
  double ms = (double)(now_ns() - c->sent_ns) / 1e6;
  p->finished++;
  if (r->header && r->result && strcmp(r->result, "pong") == 0) {
    printf("reply from %s: seq=%lu time=%.3f ms\n", p->t.where, c->seq, ms);
    if (p->answered == 0 || ms < p->min)
      p->min = ms;
    if (ms > p->max)
      p->max = ms;
    p->answered++;
    p->sum += ms;
    p->sum2 += ms * ms;
  } else if (r->header) {
    printf("seq=%lu: not a pong: ", c->seq);
    print_reply(r, 0, 0, stdout);
  } else {
    char why[1024];
    failure_text(&p->t, &p->o, r, why, sizeof why);
    printf("seq=%lu: %s\n", c->seq, why);
    p->lost = 1;
  }
  fflush(stdout);
  free(c);
  if (p->count && p->finished == p->count)
    appmsg_loop_stop(p->loop);
}

static void on_tick(struct appmsg_loop *loop, struct appmsg_timer *timer, void *ud) {
  (void)loop;
  (void)timer;
  struct ping *p = ud;
  if (p->count && p->sent == p->count) {
    appmsg_timer_stop(p->loop, &p->tick);
    return;
  }
  if (p->client == NULL || p->lost) {
    appmsg_client_free(p->client);
    p->client = NULL;
    p->lost = 0;
    if (appmsg_client_new(&p->client, p->loop, p->t.ep.host, p->t.ep.port, &p->o) != 0) {
      logf_("out of memory");
      appmsg_loop_stop(p->loop);
      return;
    }
  }
  struct one *c = malloc(sizeof *c);
  if (c == NULL)
    return;
  *c = (struct one){p, ++p->sent, now_ns()};
  int rc = appmsg_client_call_args(p->client, on_pong, c, "ping", NULL, 0);
  if (rc) {
    const char *why = appmsg_client_last_error(p->client);
    printf("seq=%lu: %s\n", c->seq, *why ? why : appmsg_strerror(rc));
    p->lost = 1;
    p->finished++;
    free(c);
    if (p->count && p->finished == p->count)
      appmsg_loop_stop(p->loop);
  }
}

int cmd_ping(int argc, char **argv) {
  struct conn_args ca = {.timeout_s = 5};
  struct ping p = {0};
  double interval = 1;
  const struct opt opts[] = {
      {"--interval", 'i', OPT_SECONDS, &interval, "SECONDS", "between pings (default 1)", 0.001,
       86400},
      {"--count", 'c', OPT_COUNT, &p.count, "COUNT", "stop after COUNT pings (default: Ctrl-C)", 1,
       1e12},
      CONN_OPTS(ca, "a ping unanswered after SECONDS is lost (default 5)"),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .command = "ping",
      .usage = "[options] [HOST:PORT]",
      .about = "Sends the ping action every SECONDS and prints each reply's round-trip time;\n"
               "at the end (COUNT pings, or Ctrl-C) the number lost and min/avg/max/mdev.",
      .operands = "HOST:PORT  the server (default $APPMSG_ADDR, else 127.0.0.1:65432)",
      .exits = "0  at least one ping was answered\n"
               "1  none was\n"
               "2  usage error",
      .opts = opts,
  };
  const char *pos[2];
  int npos;
  parse_target(&cli, argc, argv, pos, 1, &p.t, &npos);
  client_opts_setup(&cli, &ca, &p.o);
  if (appmsg_loop_new(&p.loop, APPMSG_LOOP_DEFAULT) != 0) {
    logf_("cannot start");
    return EXIT_CONN;
  }
  run_every(p.loop, &p.tick, interval, on_tick, &p);
  appmsg_client_free(p.client); /* (pings still awaited: lost) */
  appmsg_loop_free(p.loop);
  appmsg_tls_free(p.o.conn.tls);
  unsigned long lost = p.sent - p.answered;
  printf("--- %s ping ---\n%lu sent, %lu answered, %.0f%% lost\n", p.t.where, p.sent, p.answered,
         p.sent ? 100.0 * (double)lost / (double)p.sent : 0.0);
  if (p.answered) {
    double avg = p.sum / (double)p.answered, var = p.sum2 / (double)p.answered - avg * avg;
    printf("rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n", p.min, avg, p.max,
           var > 0 ? sqrt(var) : 0.0);
  }
  return p.answered ? EXIT_ANSWERED : EXIT_CONN;
}
