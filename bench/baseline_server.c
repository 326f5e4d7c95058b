/*
 * baseline-server: the least a server on this machine can do per request.
 *
 *   baseline-server [HOST [PORT]]      (defaults 127.0.0.1 65432)
 *
 * A non-blocking, level-triggered epoll echo server with no parsing: it
 * reads up to 64 KiB and writes the same bytes back.  It makes the system
 * calls a real server makes - accept4() (non-blocking, close-on-exec,
 * TCP_NODELAY as app-server sets it), read(), write(), and epoll_ctl() for
 * write interest only when a write was partial (reading pauses until the
 * rest is out) - and nothing else, so its requests per second and CPU
 * seconds per request are the practical limit that appmsg-bench's echo
 * workload measures app-server against.  A connection costs one 32-byte
 * allocation while idle.  Runs until killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 65536
#define MAX_EVENTS 256
#define ACCEPT_BATCH 64

struct conn {
  int fd;
  unsigned len, off; /* unsent bytes: out[off..len) */
  unsigned char *out;
};

static unsigned char buf[READ_CHUNK];
static int epfd;

static void drop(struct conn *c) {
  close(c->fd); /* also leaves the epoll set */
  free(c->out);
  free(c);
}

static int interest(struct conn *c, unsigned ev) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  return epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes out[off..len); returns 0 (done or would block) or -1 (broken). */
static int flush(struct conn *c) {
  while (c->off < c->len) {
    ssize_t w = write(c->fd, c->out + c->off, c->len - c->off);
    if (w > 0) {
      c->off += (unsigned)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      return 0;
    } else {
      return -1;
    }
  }
  free(c->out);
  c->out = NULL;
  c->len = c->off = 0;
  return interest(c, EPOLLIN);
}

static void on_conn(struct conn *c, unsigned ev) {
  if (c->out) { /* reading is paused until the rest is written */
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
      if (flush(c) < 0)
        drop(c);
    return;
  }
  ssize_t n = read(c->fd, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0) {
    drop(c);
    return;
  }
  ssize_t w = write(c->fd, buf, (size_t)n);
  if (w == n)
    return;
  if (w < 0 && errno != EAGAIN && errno != EINTR) {
    drop(c);
    return;
  }
  if (w < 0)
    w = 0;
  c->len = (unsigned)(n - w);
  c->off = 0;
  c->out = malloc(c->len);
  if (!c->out) {
    drop(c);
    return;
  }
  memcpy(c->out, buf + w, c->len);
  if (interest(c, EPOLLOUT) < 0)
    drop(c);
}

static void on_listener(int lfd, int *reserve) {
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if ((errno == EMFILE || errno == ENFILE) && *reserve >= 0) {
        close(*reserve); /* shed one pending connection rather than spin */
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
          close(fd);
        *reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      return; /* EAGAIN, or out of descriptors without a reserve */
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (!c || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
      free(c);
      close(fd);
      continue;
    }
    c->fd = fd;
  }
}

int main(int argc, char **argv) {
  const char *host = argc > 1 ? argv[1] : "127.0.0.1";
  const char *port = argc > 2 ? argv[2] : "65432";
  if (argc > 3 || (argc > 1 && argv[1][0] == '-')) {
    fprintf(stderr, "usage: baseline-server [HOST [PORT]]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max; /* as app-server does */
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE},
                  *res;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc) {
    fprintf(stderr, "baseline-server: cannot resolve %s:%s: %s\n", host, port, gai_strerror(rc));
    return 1;
  }
  int lfd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(lfd, res->ai_addr, res->ai_addrlen) < 0 || listen(lfd, SOMAXCONN) < 0) {
    fprintf(stderr, "baseline-server: cannot listen on %s:%s: %s\n", host, port, strerror(errno));
    return 1;
  }
  freeaddrinfo(res);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
  if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le) < 0) {
    fprintf(stderr, "baseline-server: epoll: %s\n", strerror(errno));
    return 1;
  }
  int reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
  fprintf(stderr, "baseline-server: listening on %s:%s\n", host, port);
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "baseline-server: epoll_wait: %s\n", strerror(errno));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL)
        on_listener(lfd, &reserve);
      else
        on_conn(evs[i].data.ptr, evs[i].events);
    }
  }
}
