/*
 * Socket helpers: resolve, listen, connect, accept (with descriptor
 * shedding), addresses as text, and small option/I-O wrappers.  Errors are
 * returned, with a sentence in the caller's buffer; nothing is printed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "appmsg/error.h"
#include "appmsg/net.h"
#include "platform.h"
#include "util.h"

#define UNIX_PREFIX "unix:"
#define UNIX_PREFIX_LEN 5

int appmsg__is_unix(const char *host) {
  return host != NULL && strncmp(host, UNIX_PREFIX, UNIX_PREFIX_LEN) == 0;
}

static int is_wildcard(const char *host) {
  return host == NULL || host[0] == '\0' || strcmp(host, "*") == 0;
}

static const char *show(const char *s) {
  return s == NULL ? "" : s;
}

/* ---- endpoints ------------------------------------------------------------ */

static int copy_part(char *dst, size_t cap, const char *src, size_t len) {
  if (len >= cap)
    return -ENAMETOOLONG;
  memcpy(dst, src, len);
  dst[len] = '\0';
  return 0;
}

static int all_digits(const char *s) {
  if (*s == '\0')
    return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9')
      return 0;
  return 1;
}

int appmsg_endpoint_parse(const char *text, const char *default_host, const char *default_port,
                          struct appmsg_endpoint *ep) {
  memset(ep, 0, sizeof *ep);
  if (text == NULL || text[0] == '\0')
    return -EINVAL;
  const char *host = NULL, *port = NULL;
  size_t hlen = 0, plen = 0;
  if (appmsg__is_unix(text)) {
    size_t n = strlen(text + UNIX_PREFIX_LEN);
    if (n == 0)
      return -EINVAL;
    if (n > appmsg__unix_path_max())
      return -ENAMETOOLONG;
    return copy_part(ep->host, sizeof ep->host, text, strlen(text));
  }
  const char *colon = strchr(text, ':');
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (close == NULL || close == text + 1)
      return -EINVAL;
    host = text + 1;
    hlen = (size_t)(close - host);
    if (close[1] == ':') {
      port = close + 2;
      plen = strlen(port);
      if (plen == 0)
        return -EINVAL;
    } else if (close[1] != '\0') {
      return -EINVAL;
    }
  } else if (colon != NULL && strchr(colon + 1, ':') == NULL) {
    host = text; /* exactly one colon: host:port (host may be empty) */
    hlen = (size_t)(colon - text);
    port = colon + 1;
    plen = strlen(port);
    if (plen == 0)
      return -EINVAL;
  } else if (colon == NULL && all_digits(text)) {
    port = text;
    plen = strlen(text);
  } else {
    host = text; /* a name, an IPv4 address, or a bare IPv6 address */
    hlen = strlen(text);
  }
  if (hlen == 0) {
    host = show(default_host);
    hlen = strlen(host);
  }
  if (port == NULL) {
    port = show(default_port);
    plen = strlen(port);
  }
  int rc = copy_part(ep->host, sizeof ep->host, host, hlen);
  return rc < 0 ? rc : copy_part(ep->port, sizeof ep->port, port, plen);
}

/* ---- resolving -------------------------------------------------------- */

int appmsg_resolve(const char *host, const char *port, int passive, struct addrinfo **res,
                   char *err, size_t errlen) {
  return appmsg__resolve(host, port, passive ? AI_PASSIVE : 0, res, err, errlen);
}

int appmsg__resolve(const char *host, const char *port, int ai_flags, struct addrinfo **res,
                    char *err, size_t errlen) {
  int passive = (ai_flags & AI_PASSIVE) != 0;
  *res = NULL;
  const char *given = host;
  char name[256];
  const char *node = NULL;
  if (port == NULL || port[0] == '\0') {
    appmsg__errf(err, errlen, "no port given for '%s'", show(host));
    return -EINVAL;
  }
  if (!(passive && is_wildcard(host)) && host != NULL && host[0] != '\0') {
    size_t n = strlen(host);
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']') {
      host++;
      n -= 2;
    }
    if (copy_part(name, sizeof name, host, n) < 0) {
      appmsg__errf(err, errlen, "cannot resolve '%s': name too long", given);
      return APPMSG_E_ADDRESS;
    }
    node = name;
  }
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = ai_flags;
  int rc = appmsg__net_start();
  if (rc < 0) {
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", show(given), appmsg_strerror(rc));
    return rc;
  }
  rc = getaddrinfo(node, port, &hints, res);
  if (rc == 0)
    return 0;
  *res = NULL;
  int sys = appmsg__gai_errno(rc);
  if (sys) {
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", show(node), appmsg_strerror(-sys));
    return -sys;
  }
  if (rc == EAI_MEMORY) {
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", show(node), appmsg__gai_strerror(rc));
    return -ENOMEM;
  }
  if (rc == EAI_SERVICE)
    appmsg__errf(err, errlen, "cannot resolve port '%s': %s", port, appmsg__gai_strerror(rc));
  else
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", node ? given : "*",
                 appmsg__gai_strerror(rc));
  return APPMSG_E_ADDRESS;
}

/* ---- Unix-domain sockets ------------------------------------------------ */

static int listen_unix(const char *host, int backlog, appmsg_socket_t *fdp, char *err,
                       size_t errlen) {
  struct sockaddr_storage sun;
  socklen_t len;
  int rc = appmsg__unix_addr(host + UNIX_PREFIX_LEN, &sun, &len);
  if (rc < 0) {
    appmsg__errf(err, errlen, "cannot listen on '%s': %s", host, appmsg_strerror(rc));
    return rc;
  }
  appmsg_socket_t fd;
  rc = appmsg__sock_open(AF_UNIX, SOCK_STREAM, 0, &fd);
  if (rc < 0) {
    appmsg__errf(err, errlen, "cannot listen on %s: socket: %s", host, appmsg_strerror(rc));
    return rc;
  }
  const char *why = "";
  rc = bind(fd, (struct sockaddr *)&sun, len);
  if (rc != 0 && appmsg__sock_errno() == EADDRINUSE && appmsg__unix_clear_stale(&sun, len, &why))
    rc = bind(fd, (struct sockaddr *)&sun, len);
  if (rc == 0)
    rc = listen(fd, backlog);
  if (rc != 0) {
    rc = -appmsg__sock_errno();
    appmsg__errf(err, errlen, "cannot listen on %s: %s%s", host, appmsg_strerror(rc), why);
    appmsg__sock_close(fd);
    return rc;
  }
  *fdp = fd;
  return 0;
}

/* ---- listening ---------------------------------------------------------- */

static int listen_one(const struct addrinfo *ai, int dual_stack, int backlog, unsigned flags,
                      appmsg_socket_t *fdp) {
  appmsg_socket_t fd;
  int rc = appmsg__sock_open(ai->ai_family, ai->ai_socktype, ai->ai_protocol, &fd);
  if (rc < 0)
    return rc;
  /* A restart rebinds a port with connections in TIME_WAIT; no one else shares it. */
  rc = appmsg__sock_listen_opts(fd, (flags & APPMSG_LISTEN_REUSEPORT) != 0);
  if (rc < 0) {
    appmsg__sock_close(fd);
    return rc;
  }
  if (dual_stack && ai->ai_family == AF_INET6)
    (void)appmsg__sock_setint(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
  if (bind(fd, ai->ai_addr, (socklen_t)ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
    rc = -appmsg__sock_errno();
    appmsg__sock_close(fd);
    return rc;
  }
  *fdp = fd;
  return 0;
}

static int listen_tcp(const char *host, const char *port, int backlog, unsigned flags,
                      appmsg_socket_t *fdp, char *err, size_t errlen) {
  struct addrinfo *res;
  int rc = appmsg_resolve(host, port, 1, &res, err, errlen);
  if (rc < 0)
    return rc;
  /* The wildcard: a dual-stack IPv6 socket first, IPv4 only if that fails. */
  int wildcard = is_wildcard(host);
  rc = -EADDRNOTAVAIL;
  for (int pass = 0; pass < (wildcard ? 2 : 1) && *fdp == APPMSG_INVALID_SOCKET; pass++) {
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
      if (wildcard && (pass == 0) != (ai->ai_family == AF_INET6))
        continue;
      rc = listen_one(ai, wildcard, backlog, flags, fdp);
      if (rc == 0)
        break;
      char addr[APPMSG_ADDRSTRLEN];
      if (appmsg_addr_format(ai->ai_addr, (socklen_t)ai->ai_addrlen, addr, sizeof addr) < 0)
        snprintf(addr, sizeof addr, "%s", show(host));
      appmsg__errf(err, errlen, "cannot listen on %s: %s", addr, appmsg_strerror(rc));
    }
  }
  freeaddrinfo(res);
  if (rc == 0)
    appmsg__errf(err, errlen, "%s", ""); /* no stale reason from an address tried before */
  return rc;
}

int appmsg_listen_flags(const char *host, const char *port, int backlog, unsigned flags,
                        appmsg_socket_t *fdp, char *err, size_t errlen) {
  *fdp = APPMSG_INVALID_SOCKET;
  if (backlog <= 0)
    backlog = SOMAXCONN;
  if (appmsg__is_unix(host))
    return listen_unix(host, backlog, fdp, err, errlen);
  return listen_tcp(host, port, backlog, flags, fdp, err, errlen);
}

int appmsg_listen(const char *host, const char *port, int backlog, appmsg_socket_t *fdp, char *err,
                  size_t errlen) {
  return appmsg_listen_flags(host, port, backlog, 0, fdp, err, errlen);
}

/* ---- connecting ------------------------------------------------------------ */

int appmsg_connect_addr(const struct sockaddr *addr, socklen_t addrlen, appmsg_socket_t *fdp,
                        int *in_progress) {
  *fdp = APPMSG_INVALID_SOCKET;
  *in_progress = 0;
  appmsg_socket_t fd;
  int rc = appmsg__sock_open(addr->sa_family, SOCK_STREAM, 0, &fd);
  if (rc < 0)
    return rc;
  if (connect(fd, addr, addrlen) != 0) {
    /* An interrupted connect goes on asynchronously, like EINPROGRESS; Winsock says
     * WSAEWOULDBLOCK (EAGAIN) for a connect in progress, except on Unix sockets, where
     * EAGAIN means a full backlog. */
    int e = appmsg__sock_errno();
    if (e != EINPROGRESS && e != EINTR && (e != EAGAIN || addr->sa_family == AF_UNIX)) {
      appmsg__sock_close(fd);
      return -e;
    }
    *in_progress = 1;
  }
  *fdp = fd;
  return 0;
}

int appmsg_connect_result(appmsg_socket_t fd) {
  int soerr = 0;
  int rc = appmsg__sock_getint(fd, SOL_SOCKET, SO_ERROR, &soerr);
  if (rc < 0)
    return rc;
  return -appmsg__sock_errno_value(soerr);
}

/*
 * Calls fn(addr, ctx) for host/port's addresses in order until it returns
 * 0 or APPMSG_E_TIMEOUT; a Unix path is one address.  Returns the last
 * result, with "cannot connect to ADDR: reason" in err on failure.
 */
typedef int (*try_fn)(const struct sockaddr *addr, socklen_t len, void *ctx);

static int each_address(const char *host, const char *port, try_fn fn, void *ctx, char *err,
                        size_t errlen) {
  char addr[APPMSG_ADDRSTRLEN];
  if (appmsg__is_unix(host)) {
    struct sockaddr_storage sun;
    socklen_t len;
    int rc = appmsg__unix_addr(host + UNIX_PREFIX_LEN, &sun, &len);
    if (rc == 0)
      rc = fn((struct sockaddr *)&sun, len, ctx);
    if (rc < 0)
      appmsg__errf(err, errlen, "cannot connect to %s: %s", host, appmsg_strerror(rc));
    return rc;
  }
  struct addrinfo *res;
  int rc = appmsg_resolve(host, port, 0, &res, err, errlen);
  if (rc < 0)
    return rc;
  rc = -EADDRNOTAVAIL;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    rc = fn(ai->ai_addr, (socklen_t)ai->ai_addrlen, ctx);
    if (rc == 0)
      break;
    if (appmsg_addr_format(ai->ai_addr, (socklen_t)ai->ai_addrlen, addr, sizeof addr) < 0)
      snprintf(addr, sizeof addr, "%s", show(host));
    appmsg__errf(err, errlen, "cannot connect to %s: %s", addr, appmsg_strerror(rc));
    if (rc == APPMSG_E_TIMEOUT)
      break;
  }
  freeaddrinfo(res);
  if (rc == 0)
    appmsg__errf(err, errlen, "%s", ""); /* no stale reason from an address tried before */
  return rc;
}

struct connect_ctx {
  appmsg_socket_t fd; /* the result */
  int in_progress;    /* connect pending */
  int timeout_ms;     /* connect_timeout: < 0 for none */
  uint64_t deadline;
};

static int try_nonblocking(const struct sockaddr *addr, socklen_t len, void *ctx) {
  struct connect_ctx *c = ctx;
  return appmsg_connect_addr(addr, len, &c->fd, &c->in_progress);
}

int appmsg_connect(const char *host, const char *port, appmsg_socket_t *fdp, int *in_progress,
                   char *err, size_t errlen) {
  struct connect_ctx c = {.fd = APPMSG_INVALID_SOCKET};
  int rc = each_address(host, port, try_nonblocking, &c, err, errlen);
  *fdp = rc == 0 ? c.fd : APPMSG_INVALID_SOCKET;
  *in_progress = rc == 0 ? c.in_progress : 0;
  return rc;
}

/* Waits until fd is writable or the deadline passes: 0, APPMSG_E_TIMEOUT or -errno. */
static int wait_writable(appmsg_socket_t fd, int timeout_ms, uint64_t deadline) {
  for (;;) {
    int ms = -1;
    if (timeout_ms >= 0) {
      uint64_t now = appmsg__clock_ms();
      ms = now >= deadline ? 0 : (int)(deadline - now);
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n = appmsg__poll(&p, 1, ms);
    if (n > 0)
      return 0;
    if (n == 0) /* a refused connect that the system's poll does not report: ask the socket */
      return appmsg_connect_result(fd) < 0 ? 0 : APPMSG_E_TIMEOUT;
    if (n != -EINTR)
      return n;
  }
}

static int try_with_timeout(const struct sockaddr *addr, socklen_t len, void *ctx) {
  struct connect_ctx *c = ctx;
  int rc = appmsg_connect_addr(addr, len, &c->fd, &c->in_progress);
  if (rc < 0)
    return rc;
  if (c->in_progress) {
    rc = wait_writable(c->fd, c->timeout_ms, c->deadline);
    if (rc == 0)
      rc = appmsg_connect_result(c->fd);
  }
  if (rc == 0)
    rc = appmsg_set_nonblock(c->fd, 0);
  if (rc < 0) {
    appmsg__sock_close(c->fd);
    c->fd = APPMSG_INVALID_SOCKET;
  }
  return rc;
}

int appmsg_connect_timeout(const char *host, const char *port, int timeout_ms, appmsg_socket_t *fdp,
                           char *err, size_t errlen) {
  struct connect_ctx c = {.fd = APPMSG_INVALID_SOCKET, .timeout_ms = timeout_ms};
  c.deadline = appmsg__clock_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
  int rc = each_address(host, port, try_with_timeout, &c, err, errlen);
  *fdp = rc == 0 ? c.fd : APPMSG_INVALID_SOCKET;
  return rc;
}

/* ---- accepting ----------------------------------------------------------- */

int appmsg_accept(appmsg_socket_t listen_fd, appmsg_socket_t *fdp) {
  return appmsg_accept_peer(listen_fd, fdp, NULL, NULL);
}

int appmsg_accept_peer(appmsg_socket_t listen_fd, appmsg_socket_t *fdp, struct sockaddr *addr,
                       socklen_t *addrlen) {
  return appmsg__sock_accept(listen_fd, 1, fdp, addr, addrlen);
}

int appmsg_accept_shed(appmsg_socket_t listen_fd, appmsg_socket_t *reserve_fd) {
  appmsg__reserve_close(*reserve_fd);
  *reserve_fd = APPMSG_INVALID_SOCKET;
  appmsg_socket_t fd;
  int rc = appmsg__sock_accept(listen_fd, 0, &fd, NULL, NULL);
  if (rc == 0) {
    appmsg__sock_close(fd); /* the client sees EOF rather than hanging in the queue */
    rc = 1;
  } else if (rc == -EAGAIN) {
    rc = 0;
  }
  (void)appmsg__reserve_open(reserve_fd);
  return rc;
}

int appmsg_acceptor_init(struct appmsg_acceptor *a, appmsg_socket_t listen_fd) {
  a->listen_fd = listen_fd;
  a->shed = 0;
  return appmsg__reserve_open(&a->reserve_fd);
}

int appmsg_acceptor_accept(struct appmsg_acceptor *a, appmsg_socket_t *fdp) {
  if (a->reserve_fd == APPMSG_INVALID_SOCKET && appmsg__reserve_needed())
    (void)appmsg__reserve_open(&a->reserve_fd);
  a->peer_len = sizeof a->peer;
  int rc = appmsg_accept_peer(a->listen_fd, fdp, (struct sockaddr *)&a->peer, &a->peer_len);
  if (rc)
    a->peer_len = 0;
  if ((rc != -EMFILE && rc != -ENFILE) || a->reserve_fd == APPMSG_INVALID_SOCKET)
    return rc;
  int shed = appmsg_accept_shed(a->listen_fd, &a->reserve_fd);
  if (shed == 1) {
    a->shed++;
    return APPMSG_E_TOO_MANY_CONNS;
  }
  return shed == 0 ? -EAGAIN : shed;
}

void appmsg_acceptor_cleanup(struct appmsg_acceptor *a) {
  appmsg__reserve_close(a->reserve_fd);
  a->reserve_fd = APPMSG_INVALID_SOCKET;
}

/* ---- addresses as text ------------------------------------------------------ */

int appmsg_addr_format(const struct sockaddr *addr, socklen_t addrlen, char *buf, size_t len) {
  int n;
  if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) {
    char host[APPMSG__HOSTLEN], serv[APPMSG__SERVLEN];
    int rc = getnameinfo(addr, addrlen, host, sizeof host, serv, sizeof serv,
                         NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0)
      return rc == EAI_FAMILY ? -EAFNOSUPPORT : -EINVAL;
    n = snprintf(buf, len, addr->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
  } else if (addr->sa_family == AF_UNIX) {
    return appmsg__unix_format(addr, addrlen, buf, len);
  } else {
    return -EAFNOSUPPORT;
  }
  return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int appmsg_sockname(appmsg_socket_t fd, char *buf, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
    return -appmsg__sock_errno();
  return appmsg_addr_format((struct sockaddr *)&ss, sl, buf, len);
}

int appmsg_peername(appmsg_socket_t fd, char *buf, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
    return -appmsg__sock_errno();
  return appmsg_addr_format((struct sockaddr *)&ss, sl, buf, len);
}

int appmsg_sockport(appmsg_socket_t fd) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
    return -appmsg__sock_errno();
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -EAFNOSUPPORT;
}

/* ---- options and I/O ------------------------------------------------------- */

int appmsg_net_init(void) {
  return appmsg__net_start();
}

int appmsg_ignore_sigpipe(void) {
  return appmsg__ignore_sigpipe();
}

int appmsg_set_nodelay(appmsg_socket_t fd, int on) {
  int rc = appmsg__sock_setint(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
  if (rc == 0)
    return 0;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX)
    return 0; /* nothing to delay on a Unix socket */
  return rc;
}

int appmsg_can_share_port(void) {
  return appmsg__can_share_port();
}

int appmsg_socket_dup(appmsg_socket_t fd, appmsg_socket_t *out) {
  return appmsg__sock_dup(fd, out);
}

int appmsg_set_nonblock(appmsg_socket_t fd, int on) {
  return appmsg__sock_nonblock(fd, on);
}

ssize_t appmsg_send(appmsg_socket_t fd, const void *buf, size_t len) {
  ssize_t n = appmsg__sock_send(fd, buf, len);
  if (n == -ENOTSOCK) /* a pipe: SIGPIPE is the caller's business there */
    n = appmsg__fd_write(fd, buf, len);
  return n;
}

ssize_t appmsg_recv(appmsg_socket_t fd, void *buf, size_t len) {
  return appmsg__sock_recv(fd, buf, len);
}
