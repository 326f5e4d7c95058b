/*
 * multiconn-server: the guide's multiconn-server.py on the event loop.
 * Serves any number of clients at once and echoes every byte back as it
 * arrives (raw, unframed bytes - the Python client interoperates).  Stops
 * on SIGINT/SIGTERM: stops accepting, lets each connection finish what it
 * is sending (at most ~5 s), and exits 0.  Logs go to stderr.
 *
 *   usage: multiconn-server HOST PORT      (defaults 127.0.0.1 65432)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

#define DRAIN_MS 5000  /* how long the connections get to finish after a signal */
#define REPR_BYTES 200 /* bytes shown in an "Echoing" log line */

static void on_accept(struct appmsg_server *s, struct appmsg_conn *c, void *ud) {
  (void)s;
  (void)ud;
  logf_("Accepted connection from %s", appmsg_conn_peer(c));
}

static void on_refuse(struct appmsg_server *s, int err, void *ud) {
  (void)s;
  (void)ud;
  logf_("refused a connection: %s", appmsg_strerror(err));
}

/* The echo: whatever arrives goes straight back, in order. */
static void on_data(struct appmsg_conn *c, const void *data, size_t len, void *ud) {
  (void)ud;
  char repr[4 * REPR_BYTES + 8];
  bytes_repr(data, len, REPR_BYTES, repr);
  logf_("Echoing %s to %s", repr, appmsg_conn_peer(c));
  int rc = appmsg_conn_send_raw(c, data, len);
  if (rc < 0 && rc != APPMSG_E_CLOSED)
    logf_("cannot echo to %s: %s", appmsg_conn_peer(c), appmsg_strerror(rc));
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  (void)ud;
  if (reason == 0)
    logf_("Closing connection to %s", appmsg_conn_peer(c));
  else
    logf_("Closing connection to %s: %s", appmsg_conn_peer(c), appmsg_strerror(reason));
}

static const struct appmsg_conn_callbacks conn_cbs = {
    .on_data = on_data,
    .on_close = on_close,
};

static const struct appmsg_server_callbacks srv_cbs = {
    .on_accept = on_accept,
    .on_refuse = on_refuse,
};

/* After a signal: stop accepting and give the connections DRAIN_MS to finish. */
static void drain(struct appmsg_server *srv) {
  long left = appmsg_server_finish(srv, DRAIN_MS);
  if (left < 0)
    logf_("event loop failed while draining: %s", appmsg_strerror((int)left));
  else if (left > 0)
    logf_("closing %ld connection%s that did not finish in time", left, left == 1 ? "" : "s");
}

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  const struct cli cli = {
      .usage = "HOST PORT",
      .about = "The guide's multi-connection server: serves any number of clients at once and\n"
               "echoes every byte back as it arrives (raw, unframed bytes).",
      .operands = "HOST  address to listen on (default 127.0.0.1)\nPORT  TCP port (default 65432)",
      .exits = "0  stopped by SIGINT or SIGTERM\n1  could not listen\n2  usage error",
      .opts = (const struct opt[]){{0}}, /* no options but --help and --version */
  };
  /* The guide requires both arguments; the defaults make a bare run work too. */
  const char *pos[2], *host, *port;
  host_port(pos, cli_parse(&cli, argc, argv, pos, 2), &host, &port);

  appmsg_ignore_sigpipe();
  struct appmsg_loop *loop;
  int rc = appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT);
  if (rc < 0) {
    logf_("cannot create the event loop: %s", appmsg_strerror(rc));
    return 1;
  }
  struct appmsg_server_opts opts;
  appmsg_server_opts_default(&opts);
  opts.conn.raw = 1; /* the guide's multiconn programs exchange unframed bytes */

  char err[APPMSG_NET_ERRLEN];
  struct appmsg_server *srv;
  rc = appmsg_server_new(&srv, loop, host, port, &opts, &conn_cbs, &srv_cbs, NULL, err, sizeof err);
  if (rc < 0) {
    logf_("%s", err);
    appmsg_loop_free(loop);
    return 1;
  }
  rc = appmsg_loop_stop_on_signals(loop, (const int[]){SIGINT, SIGTERM}, 2);
  if (rc < 0) {
    logf_("cannot handle SIGINT/SIGTERM: %s", appmsg_strerror(rc));
    appmsg_server_free(srv);
    appmsg_loop_free(loop);
    return 1;
  }
  logf_("Listening on %s", appmsg_server_address(srv));

  rc = appmsg_loop_run(loop);
  int sig = appmsg_loop_signal(loop);
  int status = 0;
  if (rc < 0) {
    logf_("event loop failed: %s", appmsg_strerror(rc));
    status = 1;
  } else if (sig == SIGINT) {
    logf_("Caught keyboard interrupt, exiting");
  } else if (sig != 0) { /* SIGTERM: no other signal stops the loop */
    logf_("Caught %s, exiting", sig == SIGTERM ? "SIGTERM" : "a signal");
  }
  /* From here a second Ctrl-C kills at once, as the user expects. */
  appmsg_loop_stop_on_signals(loop, NULL, 0);
  drain(srv);
  appmsg_server_free(srv);
  appmsg_loop_free(loop);
  return status;
}
