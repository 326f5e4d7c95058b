/*
 * echo-server: the guide's first program (echo-server.py), with blocking
 * sockets.  Listens on HOST:PORT, accepts one connection, prints
 * "Connected by ADDR" on stdout, sends back every byte it receives until
 * the client closes, then exits 0.
 *
 *   usage: echo-server [HOST [PORT]]      (defaults 127.0.0.1 65432)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

/* The guide reads 1024 bytes at a time; the size does not change what is echoed. */
#define CHUNK 1024

/* Echoes until end of stream.  Returns 0, or a negated errno if the connection broke. */
static int echo(appmsg_socket_t fd) {
  unsigned char buf[CHUNK];
  for (;;) {
    ssize_t n = appmsg_recv(fd, buf, sizeof buf);
    if (n <= 0)
      return (int)n;
    int rc = send_all(fd, buf, (size_t)n);
    if (rc < 0)
      return rc;
  }
}

/* Waits for one connection on a blocking listener.  Returns 0 and *fd, or a negated errno. */
static int accept_one(appmsg_socket_t lfd, appmsg_socket_t *fd) {
  /* appmsg_accept() retries EINTR/ECONNABORTED; on a blocking listener it
   * waits.  The socket it returns is non-blocking: make it blocking, as in
   * the guide. */
  int rc = appmsg_set_nonblock(lfd, 0);
  if (rc == 0)
    rc = appmsg_accept(lfd, fd);
  if (rc == 0) {
    rc = appmsg_set_nonblock(*fd, 0);
    if (rc < 0) {
      sock_close(*fd);
      *fd = APPMSG_INVALID_SOCKET;
    }
  }
  return rc;
}

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  const struct cli cli = {
      .usage = "[HOST [PORT]]",
      .about = "The guide's echo server: accepts one connection, prints \"Connected by ADDR\",\n"
               "sends back every byte it receives until the client closes, then exits.",
      .operands = "HOST  address to listen on (default 127.0.0.1)\nPORT  TCP port (default 65432)",
      .exits = "0  the client closed the connection\n1  could not listen, or the connection "
               "broke\n2  usage error",
      .opts = (const struct opt[]){{0}}, /* no options but --help and --version */
  };
  const char *pos[2], *host, *port;
  host_port(pos, cli_parse(&cli, argc, argv, pos, 2), &host, &port);

  appmsg_ignore_sigpipe();
  char err[APPMSG_NET_ERRLEN];
  appmsg_socket_t lfd;
  /* appmsg_listen() sets SO_REUSEADDR, so a restart right after a run
   * does not fail on the previous connection's TIME_WAIT. */
  int rc = appmsg_listen(host, port, 0, &lfd, err, sizeof err);
  if (rc < 0) {
    logf_("%s", err);
    return 1;
  }
  char addr[APPMSG_ADDRSTRLEN];
  if (appmsg_sockname(lfd, addr, sizeof addr) < 0)
    snprintf(addr, sizeof addr, "%s:%s", host, port);
  logf_("listening on %s", addr);

  appmsg_socket_t fd;
  rc = accept_one(lfd, &fd);
  sock_close(lfd); /* one connection only, as in the guide */
  if (rc < 0) {
    logf_("cannot accept a connection: %s", appmsg_strerror(rc));
    return 1;
  }
  char peer[APPMSG_ADDRSTRLEN];
  if (appmsg_peername(fd, peer, sizeof peer) < 0)
    snprintf(peer, sizeof peer, "?");
  printf("Connected by %s\n", peer);
  fflush(stdout);

  rc = echo(fd);
  sock_close(fd);
  if (rc < 0) {
    logf_("connection to %s broke: %s", peer, appmsg_strerror(rc));
    return 1;
  }
  logf_("%s closed the connection", peer);
  return 0;
}
