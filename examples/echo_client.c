/*
 * echo-client: the guide's echo-client.py, with a blocking socket.
 * Connects to HOST:PORT, sends "Hello, world", reads the echo and prints
 * it as Python prints bytes: "Received b'Hello, world'".
 *
 *   usage: echo-client [HOST [PORT]]      (defaults 127.0.0.1 65432)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

#define MESSAGE "Hello, world"
#define TIMEOUT_MS 5000 /* for the connect, and again for the reply */

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  const struct cli cli = {
      .usage = "[HOST [PORT]]",
      .about = "The guide's echo client: sends \"Hello, world\", reads the echo and prints it\n"
               "as Python prints bytes: Received b'Hello, world'.",
      .operands = "HOST  the server's address (default 127.0.0.1)\nPORT  its port (default 65432)",
      .exits = "0  the whole message came back\n1  could not connect, or the echo did not come "
               "back whole\n2  usage error",
      .opts = (const struct opt[]){{0}}, /* no options but --help and --version */
  };
  const char *pos[2], *host, *port;
  host_port(pos, cli_parse(&cli, argc, argv, pos, 2), &host, &port);
  char ep[ENDPOINT_LEN];
  endpoint_text(host, port, ep, sizeof ep);

  appmsg_ignore_sigpipe();
  char err[APPMSG_NET_ERRLEN];
  appmsg_socket_t fd;
  int rc = appmsg_connect_timeout(host, port, TIMEOUT_MS, &fd, err, sizeof err);
  if (rc == APPMSG_E_ADDRESS) {
    logf_("%s", err);
    return 1;
  }
  if (rc == -ECONNREFUSED) {
    logf_("cannot connect to %s: %s; is the server running on %s?", ep, connect_hint(rc), ep);
    return 1;
  }
  if (rc < 0) {
    logf_("cannot connect to %s: %s", ep, connect_hint(rc));
    return 1;
  }
  const size_t len = sizeof MESSAGE - 1;
  rc = send_all(fd, MESSAGE, len);
  if (rc < 0) {
    logf_("cannot send to %s: %s", ep, appmsg_strerror(rc));
    sock_close(fd);
    return 1;
  }

  unsigned char buf[sizeof MESSAGE - 1];
  /* Bound the wait for the reply too: a server that never answers must not hang us. */
  ssize_t got = recv_upto(fd, buf, len, TIMEOUT_MS);
  sock_close(fd);
  if (got < 0) {
    logf_("no reply from %s: %s", ep,
          got == APPMSG_E_TIMEOUT ? "timed out" : appmsg_strerror((int)got));
    return 1;
  }
  char repr[4 * sizeof buf + 4];
  bytes_repr(buf, (size_t)got, (size_t)got, repr);
  printf("Received %s\n", repr);
  fflush(stdout);
  if ((size_t)got < len) {
    logf_("%s closed the connection after %zd of %zu bytes", ep, got, len);
    return 1;
  }
  return 0;
}
