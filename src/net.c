/*
 * Socket helpers: resolve, listen, connect, accept (with descriptor
 * shedding), addresses as text, and small option/I-O wrappers.  Errors are
 * returned, with a sentence in the caller's buffer; nothing is printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "appmsg/error.h"
#include "appmsg/net.h"
#include "util.h"

#define UNIX_PREFIX "unix:"
#define UNIX_PREFIX_LEN 5
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

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
    if (n >= SUN_PATH_MAX)
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
  int rc = getaddrinfo(node, port, &hints, res);
  if (rc == 0)
    return 0;
  *res = NULL;
  if (rc == EAI_SYSTEM) {
    int e = errno ? errno : EIO;
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", show(node), strerror(e));
    return -e;
  }
  if (rc == EAI_MEMORY) {
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", show(node), gai_strerror(rc));
    return -ENOMEM;
  }
  if (rc == EAI_SERVICE)
    appmsg__errf(err, errlen, "cannot resolve port '%s': %s", port, gai_strerror(rc));
  else
    appmsg__errf(err, errlen, "cannot resolve '%s': %s", node ? given : "*", gai_strerror(rc));
  return APPMSG_E_ADDRESS;
}

/* ---- Unix-domain addresses --------------------------------------------- */

/* "unix:/path" or "unix:@abstract" -> sockaddr_un. */
static int unix_addr(const char *host, struct sockaddr_un *sun, socklen_t *len) {
  const char *path = host + UNIX_PREFIX_LEN;
  size_t n = strlen(path);
  if (n == 0)
    return -EINVAL;
  if (n >= SUN_PATH_MAX)
    return -ENAMETOOLONG;
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  memcpy(sun->sun_path, path, n);
  if (path[0] == '@') {
    sun->sun_path[0] = '\0'; /* Linux abstract namespace: no file, length-delimited */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return 0;
}

/* 1 if the path is a socket nobody accepts on; 0 if live or not a socket (*why says which). */
static int unix_stale(const struct sockaddr_un *sun, socklen_t len, const char **why) {
  struct stat st;
  if (lstat(sun->sun_path, &st) < 0)
    return errno == ENOENT; /* vanished meanwhile: bind again */
  if (!S_ISSOCK(st.st_mode)) {
    *why = " (the file exists and is not a socket)";
    return 0;
  }
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0)
    return 0;
  int rc = connect(probe, (const struct sockaddr *)sun, len);
  int stale = rc < 0 && errno == ECONNREFUSED;
  close(probe);
  if (!stale)
    *why = " (a server is accepting on it)";
  return stale;
}

static int listen_unix(const char *host, int backlog, int *fdp, char *err, size_t errlen) {
  struct sockaddr_un sun;
  socklen_t len;
  int rc = unix_addr(host, &sun, &len);
  if (rc < 0) {
    appmsg__errf(err, errlen, "cannot listen on '%s': %s", host, strerror(-rc));
    return rc;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    rc = -errno;
    appmsg__errf(err, errlen, "cannot listen on %s: socket: %s", host, strerror(-rc));
    return rc;
  }
  const char *why = "";
  rc = bind(fd, (struct sockaddr *)&sun, len);
  if (rc < 0 && errno == EADDRINUSE && sun.sun_path[0] != '\0' && unix_stale(&sun, len, &why)) {
    unlink(sun.sun_path);
    rc = bind(fd, (struct sockaddr *)&sun, len);
  }
  if (rc == 0)
    rc = listen(fd, backlog);
  if (rc < 0) {
    rc = -errno;
    appmsg__errf(err, errlen, "cannot listen on %s: %s%s", host, strerror(-rc), why);
    close(fd);
    return rc;
  }
  *fdp = fd;
  return 0;
}

/* ---- listening ---------------------------------------------------------- */

static int listen_one(const struct addrinfo *ai, int dual_stack, int backlog, unsigned flags,
                      int *fdp) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return -errno;
  int one = 1, zero = 0;
  /* Rebinding a port with connections in TIME_WAIT must work after a restart. */
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if ((flags & APPMSG_LISTEN_REUSEPORT) &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  if (dual_stack && ai->ai_family == AF_INET6)
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  *fdp = fd;
  return 0;
}

static int listen_tcp(const char *host, const char *port, int backlog, unsigned flags, int *fdp,
                      char *err, size_t errlen) {
  struct addrinfo *res;
  int rc = appmsg_resolve(host, port, 1, &res, err, errlen);
  if (rc < 0)
    return rc;
  /* The wildcard: a dual-stack IPv6 socket first, IPv4 only if that fails. */
  int wildcard = is_wildcard(host);
  rc = -EADDRNOTAVAIL;
  for (int pass = 0; pass < (wildcard ? 2 : 1) && *fdp < 0; pass++) {
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
      if (wildcard && (pass == 0) != (ai->ai_family == AF_INET6))
        continue;
      rc = listen_one(ai, wildcard, backlog, flags, fdp);
      if (rc == 0)
        break;
      char addr[APPMSG_ADDRSTRLEN];
      if (appmsg_addr_format(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr) < 0)
        snprintf(addr, sizeof addr, "%s", show(host));
      appmsg__errf(err, errlen, "cannot listen on %s: %s", addr, strerror(-rc));
    }
  }
  freeaddrinfo(res);
  if (rc == 0)
    appmsg__errf(err, errlen, "%s", ""); /* no stale reason from an address tried before */
  return rc;
}

int appmsg_listen_flags(const char *host, const char *port, int backlog, unsigned flags, int *fdp,
                        char *err, size_t errlen) {
  *fdp = -1;
  if (backlog <= 0)
    backlog = SOMAXCONN;
  if (appmsg__is_unix(host))
    return listen_unix(host, backlog, fdp, err, errlen);
  return listen_tcp(host, port, backlog, flags, fdp, err, errlen);
}

int appmsg_listen(const char *host, const char *port, int backlog, int *fdp, char *err,
                  size_t errlen) {
  return appmsg_listen_flags(host, port, backlog, 0, fdp, err, errlen);
}

/* ---- connecting ------------------------------------------------------------ */

int appmsg_connect_addr(const struct sockaddr *addr, socklen_t addrlen, int *fdp,
                        int *in_progress) {
  *fdp = -1;
  *in_progress = 0;
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, addr, addrlen) < 0) {
    /* An interrupted connect goes on asynchronously, like EINPROGRESS. */
    if (errno != EINPROGRESS && errno != EINTR) {
      int rc = -errno;
      close(fd);
      return rc;
    }
    *in_progress = 1;
  }
  *fdp = fd;
  return 0;
}

int appmsg_connect_result(int fd) {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
    return -errno;
  return -soerr;
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
    struct sockaddr_un sun;
    socklen_t len;
    int rc = unix_addr(host, &sun, &len);
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
    rc = fn(ai->ai_addr, ai->ai_addrlen, ctx);
    if (rc == 0)
      break;
    if (appmsg_addr_format(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr) < 0)
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
  int fd;          /* the result */
  int in_progress; /* connect pending */
  int timeout_ms;  /* connect_timeout: < 0 for none */
  uint64_t deadline;
};

static int try_nonblocking(const struct sockaddr *addr, socklen_t len, void *ctx) {
  struct connect_ctx *c = ctx;
  return appmsg_connect_addr(addr, len, &c->fd, &c->in_progress);
}

int appmsg_connect(const char *host, const char *port, int *fdp, int *in_progress, char *err,
                   size_t errlen) {
  struct connect_ctx c = {.fd = -1};
  int rc = each_address(host, port, try_nonblocking, &c, err, errlen);
  *fdp = rc == 0 ? c.fd : -1;
  *in_progress = rc == 0 ? c.in_progress : 0;
  return rc;
}

/* Waits until fd is writable or the deadline passes: 0, APPMSG_E_TIMEOUT or -errno. */
static int wait_writable(int fd, int timeout_ms, uint64_t deadline) {
  for (;;) {
    int ms = -1;
    if (timeout_ms >= 0) {
      uint64_t now = appmsg__clock_ms();
      ms = now >= deadline ? 0 : (int)(deadline - now);
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n = poll(&p, 1, ms);
    if (n > 0)
      return 0;
    if (n == 0)
      return APPMSG_E_TIMEOUT;
    if (errno != EINTR)
      return -errno;
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
    close(c->fd);
    c->fd = -1;
  }
  return rc;
}

int appmsg_connect_timeout(const char *host, const char *port, int timeout_ms, int *fdp, char *err,
                           size_t errlen) {
  struct connect_ctx c = {.fd = -1, .timeout_ms = timeout_ms};
  c.deadline = appmsg__clock_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
  int rc = each_address(host, port, try_with_timeout, &c, err, errlen);
  *fdp = rc == 0 ? c.fd : -1;
  return rc;
}

/* ---- accepting ----------------------------------------------------------- */

int appmsg_accept(int listen_fd, int *fdp) {
  return appmsg_accept_peer(listen_fd, fdp, NULL, NULL);
}

int appmsg_accept_peer(int listen_fd, int *fdp, struct sockaddr *addr, socklen_t *addrlen) {
  *fdp = -1;
  socklen_t room = addrlen ? *addrlen : 0;
  for (;;) {
    if (addrlen)
      *addrlen = room;
    int fd = accept4(listen_fd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      *fdp = fd;
      return 0;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno == EWOULDBLOCK)
      return -EAGAIN;
    return -errno;
  }
}

/* A spare descriptor above stdio (so a zeroed acceptor never owns fd 0), or -1. */
static int open_reserve(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && fd <= STDERR_FILENO) {
    int high = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    close(fd);
    fd = high;
  }
  return fd;
}

int appmsg_accept_shed(int listen_fd, int *reserve_fd) {
  if (*reserve_fd >= 0) {
    close(*reserve_fd);
    *reserve_fd = -1;
  }
  int fd, rc;
  do
    fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
  while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (fd >= 0) {
    close(fd); /* the client sees EOF rather than hanging in the queue */
    rc = 1;
  } else {
    rc = errno == EWOULDBLOCK ? 0 : -errno;
  }
  *reserve_fd = open_reserve();
  return rc;
}

int appmsg_acceptor_init(struct appmsg_acceptor *a, int listen_fd) {
  a->listen_fd = listen_fd;
  a->shed = 0;
  a->reserve_fd = open_reserve();
  return a->reserve_fd < 0 ? -errno : 0;
}

int appmsg_acceptor_accept(struct appmsg_acceptor *a, int *fdp) {
  if (a->reserve_fd < 0)
    a->reserve_fd = open_reserve();
  a->peer_len = sizeof a->peer;
  int rc = appmsg_accept_peer(a->listen_fd, fdp, (struct sockaddr *)&a->peer, &a->peer_len);
  if (rc)
    a->peer_len = 0;
  if ((rc != -EMFILE && rc != -ENFILE) || a->reserve_fd < 0)
    return rc;
  int shed = appmsg_accept_shed(a->listen_fd, &a->reserve_fd);
  if (shed == 1) {
    a->shed++;
    return APPMSG_E_TOO_MANY_CONNS;
  }
  return shed == 0 ? -EAGAIN : shed;
}

void appmsg_acceptor_cleanup(struct appmsg_acceptor *a) {
  if (a->reserve_fd > STDERR_FILENO)
    close(a->reserve_fd);
  a->reserve_fd = -1;
}

/* ---- addresses as text ------------------------------------------------------ */

int appmsg_addr_format(const struct sockaddr *addr, socklen_t addrlen, char *buf, size_t len) {
  int n;
  if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) {
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    int rc = getnameinfo(addr, addrlen, host, sizeof host, serv, sizeof serv,
                         NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0)
      return rc == EAI_FAMILY ? -EAFNOSUPPORT : -EINVAL;
    n = snprintf(buf, len, addr->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
  } else if (addr->sa_family == AF_UNIX) {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)addr;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    int plen = addrlen > off ? (int)(addrlen - off) : 0;
    if (plen == 0)
      n = snprintf(buf, len, "unix:");
    else if (sun->sun_path[0] == '\0')
      n = snprintf(buf, len, "unix:@%.*s", plen - 1, sun->sun_path + 1);
    else
      n = snprintf(buf, len, "unix:%.*s", (int)strnlen(sun->sun_path, (size_t)plen), sun->sun_path);
  } else {
    return -EAFNOSUPPORT;
  }
  return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int appmsg_sockname(int fd, char *buf, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
    return -errno;
  return appmsg_addr_format((struct sockaddr *)&ss, sl, buf, len);
}

int appmsg_peername(int fd, char *buf, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
    return -errno;
  return appmsg_addr_format((struct sockaddr *)&ss, sl, buf, len);
}

int appmsg_sockport(int fd) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
    return -errno;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -EAFNOSUPPORT;
}

/* ---- options and I/O ------------------------------------------------------- */

int appmsg_ignore_sigpipe(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGPIPE, &sa, NULL) < 0 ? -errno : 0;
}

int appmsg_set_nodelay(int fd, int on) {
  int v = on ? 1 : 0;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0)
    return 0;
  int rc = -errno;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX)
    return 0; /* nothing to delay on a Unix socket */
  return rc;
}

int appmsg_set_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return -errno;
  int want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
  if (want != fl && fcntl(fd, F_SETFL, want) < 0)
    return -errno;
  return 0;
}

ssize_t appmsg_send(int fd, const void *buf, size_t len) {
  int use_write = 0;
  for (;;) {
    ssize_t n = use_write ? write(fd, buf, len) : send(fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
      return n;
    if (errno == EINTR)
      continue;
    if (errno == ENOTSOCK && !use_write) {
      use_write = 1; /* a pipe: SIGPIPE is the caller's business there */
      continue;
    }
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

ssize_t appmsg_recv(int fd, void *buf, size_t len) {
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0)
      return n;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}
