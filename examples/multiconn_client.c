/*
 * multiconn-client: the guide's multiconn-client.py on the event loop.
 * Opens NUM_CONNS connections at once; each sends "Message 1 from client."
 * and "Message 2 from client." (raw, unframed bytes) and closes once it
 * has received as many bytes back as it sent.  "Received ..." lines go to
 * stdout, the rest of the log to stderr.  Exits 0 when every connection
 * completed, 1 if one failed or the time ran out.
 *
 *   usage: multiconn-client [--timeout SECONDS] HOST PORT NUM_CONNS
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

#define DEFAULT_TIMEOUT_S 10.0
#define MAX_CONNS 100000
#define REPR_BYTES 200 /* bytes shown in a log line */

/* What every connection sends, as in the guide. */
static const char *const messages[] = {"Message 1 from client.", "Message 2 from client."};
#define NMESSAGES (sizeof messages / sizeof messages[0])

struct run;

/* One of the client's connections (the guide's types.SimpleNamespace). */
struct client {
  struct run *run;       /* the whole run */
  struct appmsg_conn *c; /* the connection, NULL once it has ended */
  int id;                /* 1-based, as in the guide */
  size_t sent_total;     /* bytes sent (the guide's msg_total) */
  size_t recv_total;     /* bytes received back */
};

struct run {
  struct appmsg_loop *loop;    /* the one loop */
  struct appmsg_timer timeout; /* ends a run that takes too long */
  double timeout_s;            /* for the message */
  const char *ep;              /* "host:port" for messages */
  struct client *clients;      /* n of them */
  int n;                       /* connections asked for */
  int open;                    /* connections not yet ended */
  int failed;                  /* connections that did not complete */
  int first_err;               /* why the first failed connection failed (0: short reply) */
  char first_reason[APPMSG_NET_ERRLEN]; /* ... in words */
};

/* Records and logs a connection that did not complete. */
static void fail(struct run *r, int id, int err, const char *reason) {
  if (r->failed++ == 0) {
    r->first_err = err;
    snprintf(r->first_reason, sizeof r->first_reason, "%s", reason);
  }
  logf_("connection %d failed: %s", id, reason);
}

static void on_connect(struct appmsg_conn *c, int err, void *ud) {
  struct client *cl = ud;
  if (err != 0)
    return; /* on_close follows and reports it */
  for (size_t i = 0; i < NMESSAGES; i++) {
    size_t len = strlen(messages[i]);
    char repr[4 * REPR_BYTES + 8];
    bytes_repr((const unsigned char *)messages[i], len, REPR_BYTES, repr);
    logf_("Sending %s to connection %d", repr, cl->id);
    if (appmsg_conn_send_raw(c, messages[i], len) < 0)
      return; /* the connection is ending: on_close reports why */
    cl->sent_total += len;
  }
}

static void on_data(struct appmsg_conn *c, const void *data, size_t len, void *ud) {
  struct client *cl = ud;
  char repr[4 * REPR_BYTES + 8];
  bytes_repr(data, len, REPR_BYTES, repr);
  printf("Received %s from connection %d\n", repr, cl->id);
  fflush(stdout);
  cl->recv_total += len;
  /* As in the guide: done once everything sent has come back. */
  if (cl->recv_total >= cl->sent_total) {
    logf_("Closing connection %d", cl->id);
    appmsg_conn_close(c);
  }
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  (void)c;
  struct client *cl = ud;
  struct run *r = cl->run;
  char why[APPMSG_NET_ERRLEN];
  cl->c = NULL;
  r->open--;
  if (reason == -ECONNREFUSED || reason == -ETIMEDOUT || reason == -EHOSTUNREACH ||
      reason == -ENETUNREACH) {
    snprintf(why, sizeof why, "cannot connect to %s: %s", r->ep, connect_hint(reason));
    fail(r, cl->id, reason, why);
  } else if (reason != 0) {
    fail(r, cl->id, reason, appmsg_strerror(reason));
  } else if (cl->recv_total > cl->sent_total) {
    snprintf(why, sizeof why, "the server sent back %zu bytes, more than the %zu sent",
             cl->recv_total, cl->sent_total);
    fail(r, cl->id, 0, why);
  } else if (cl->recv_total < cl->sent_total || cl->sent_total == 0) {
    snprintf(why, sizeof why, "the server closed the connection after echoing %zu of %zu bytes",
             cl->recv_total, cl->sent_total);
    fail(r, cl->id, 0, why);
  }
  if (r->open == 0) {
    appmsg_timer_stop(r->loop, &r->timeout);
    appmsg_loop_stop(r->loop);
  }
}

static const struct appmsg_conn_callbacks cbs = {
    .on_connect = on_connect,
    .on_data = on_data,
    .on_close = on_close,
};

static void on_timeout(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct run *r = ud;
  logf_("timed out after %g s with %d of %d connections unfinished", r->timeout_s, r->open, r->n);
  for (int i = 0; i < r->n; i++)
    if (r->clients[i].c != NULL)
      appmsg_conn_abort(r->clients[i].c, APPMSG_E_TIMEOUT); /* on_close runs now */
}

/* Starts every connection.  Returns how many are under way. */
static int start_all(struct run *r, const char *host, const char *port,
                     const struct appmsg_conn_opts *opts) {
  for (int i = 0; i < r->n; i++) {
    struct client *cl = &r->clients[i];
    char err[APPMSG_NET_ERRLEN];
    cl->run = r;
    cl->id = i + 1;
    logf_("Starting connection %d to %s", cl->id, r->ep);
    int rc = appmsg_conn_connect(&cl->c, r->loop, host, port, opts, &cbs, cl, err, sizeof err);
    if (rc == 0) {
      r->open++;
      continue;
    }
    cl->c = NULL;
    if (rc == -ECONNREFUSED) {
      snprintf(err, sizeof err, "cannot connect to %s: %s", r->ep, connect_hint(rc));
    } else if (rc == APPMSG_E_ADDRESS) {
      fail(r, cl->id, rc, err);
      r->failed += r->n - cl->id; /* the same name fails for all: do not try the rest */
      break;
    }
    fail(r, cl->id, rc, err);
  }
  return r->open;
}

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  struct run r = {.timeout_s = DEFAULT_TIMEOUT_S};
  const struct opt cli_opts[] = {
      {"--timeout", 0, OPT_SECONDS, &r.timeout_s, "SECONDS",
       "give up on connections not finished after SECONDS (default 10)", 0.001, 86400},
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .usage = "[--timeout SECONDS] HOST PORT NUM_CONNS",
      .about = "The guide's multi-connection client: opens NUM_CONNS connections at once; each\n"
               "sends two messages (raw, unframed bytes) and closes once they have come back.",
      .operands = "HOST       the server's address\nPORT       its port\n"
                  "NUM_CONNS  connections to open at once, 1 to 100000",
      .exits = "0  every connection completed\n1  a connection failed or the time ran out\n"
               "2  usage error",
      .opts = cli_opts,
  };
  const char *pos[3];
  if (cli_parse(&cli, argc, argv, pos, 3) != 3)
    cli_usage_error(&cli);
  char *end;
  long n = strtol(pos[2], &end, 10);
  if (end == pos[2] || *end != '\0' || n < 1 || n > MAX_CONNS) {
    logf_("NUM_CONNS must be a number from 1 to %d, not '%s'", MAX_CONNS, pos[2]);
    cli_usage_error(&cli);
  }
  r.n = (int)n;
  char ep[ENDPOINT_LEN];
  endpoint_text(pos[0], pos[1], ep, sizeof ep);
  r.ep = ep;

  appmsg_ignore_sigpipe();
  int rc = appmsg_loop_new(&r.loop, APPMSG_LOOP_DEFAULT);
  if (rc < 0) {
    logf_("cannot create the event loop: %s", appmsg_strerror(rc));
    return 1;
  }
  r.clients = calloc((size_t)r.n, sizeof *r.clients);
  if (r.clients == NULL) {
    logf_("out of memory for %d connections", r.n);
    appmsg_loop_free(r.loop);
    return 1;
  }
  struct appmsg_conn_opts opts;
  appmsg_conn_opts_default(&opts);
  opts.raw = 1; /* the guide's multiconn programs exchange unframed bytes */

  if (start_all(&r, pos[0], pos[1], &opts) > 0) {
    appmsg_timer_init(&r.timeout, on_timeout, &r);
    rc = appmsg_timer_start(r.loop, &r.timeout, (uint64_t)(r.timeout_s * 1000.0 + 0.5), 0);
    if (rc == 0)
      rc = appmsg_loop_run(r.loop);
    if (rc < 0)
      logf_("event loop failed: %s", appmsg_strerror(rc));
    appmsg_timer_stop(r.loop, &r.timeout);
  }
  /* Ends what a failed loop left behind (normally nothing): each counts as failed. */
  for (int i = 0; i < r.n; i++)
    if (r.clients[i].c != NULL)
      appmsg_conn_abort(r.clients[i].c, APPMSG_E_CLOSED);
  appmsg_loop_free(r.loop);
  free(r.clients);

  if (r.failed == 0)
    return 0;
  if (r.first_err == -ECONNREFUSED)
    logf_("%d of %d connections failed: %s; is the server running on %s?", r.failed, r.n,
          r.first_reason, ep);
  else
    logf_("%d of %d connections failed: %s", r.failed, r.n, r.first_reason);
  return 1;
}
