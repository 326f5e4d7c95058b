/*
 * Socket helpers over loopback only: listen/connect/accept round trips on
 * IPv4, IPv6, host names and Unix paths, stale socket files, resolution and
 * connect errors, timeouts, and shedding connections when out of
 * descriptors.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#ifndef _WIN32 /* descriptors, rlimits, Unix sockets, fork: POSIX's cases below */
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "appmsg/error.h"
#include "appmsg/loop.h"
#include "appmsg/net.h"
#include "platform.h"
#include "testutil.h"

/* Waits for events on fd; returns revents (0 on timeout). */
static short wait_fd(appmsg_socket_t fd, short events, int ms) {
  struct pollfd p = {.fd = fd, .events = events};
  int n;
  while ((n = appmsg__poll(&p, 1, ms)) == -EINTR)
    ;
  ck_assert_int_ge(n, 0);
  return n == 0 ? 0 : p.revents;
}

/* Accepts one connection, waiting for it. */
static appmsg_socket_t accept_one(appmsg_socket_t lfd) {
  appmsg_socket_t fd = APPMSG_INVALID_SOCKET;
  ck_assert(wait_fd(lfd, POLLIN, TU_EVENT_MS) & POLLIN);
  ck_assert_int_eq(appmsg_accept(lfd, &fd), 0);
  ck_assert(fd != APPMSG_INVALID_SOCKET);
#ifndef _WIN32 /* (Windows cannot say whether a socket is non-blocking) */
  ck_assert_int_ne(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
#endif
  return fd;
}

/* Sends a message each way between two connected sockets. */
static void exchange(appmsg_socket_t a, appmsg_socket_t b) {
  char buf[16];
  ck_assert_int_eq(appmsg_send(a, "ping", 4), 4);
  ck_assert(wait_fd(b, POLLIN, TU_EVENT_MS) & POLLIN);
  ck_assert_int_eq(appmsg_recv(b, buf, sizeof buf), 4);
  ck_assert_int_eq(memcmp(buf, "ping", 4), 0);
  ck_assert_int_eq(appmsg_send(b, "pong!", 5), 5);
  ck_assert(wait_fd(a, POLLIN, TU_EVENT_MS) & POLLIN);
  ck_assert_int_eq(appmsg_recv(a, buf, sizeof buf), 5);
  ck_assert_int_eq(memcmp(buf, "pong!", 5), 0);
}

/*
 * Listens on host port 0, connects non-blocking to the printed address,
 * accepts, checks both ends' names and exchanges messages.  prefix is what
 * appmsg_sockname() must start with.
 */
static void roundtrip(const char *listen_host, const char *connect_host, const char *prefix) {
  char err[APPMSG_NET_ERRLEN] = "", name[APPMSG_ADDRSTRLEN], port[16];
  appmsg_socket_t lfd;
  int rc = appmsg_listen(listen_host, "0", 16, &lfd, err, sizeof err);
  ck_assert_msg(rc == 0, "listen on %s: %s (%s)", listen_host, appmsg_strerror(rc), err);
  ck_assert_int_gt(appmsg_sockname(lfd, name, sizeof name), 0);
  ck_assert_msg(strncmp(name, prefix, strlen(prefix)) == 0, "sockname %s", name);
  int p = appmsg_sockport(lfd);
  ck_assert_int_gt(p, 0);
  snprintf(port, sizeof port, "%d", p);
  /* The printed address ends in the port. */
  ck_assert_str_eq(name + strlen(name) - strlen(port), port);

  appmsg_socket_t cfd;
  int pending;
  ck_assert_int_eq(appmsg_connect(connect_host, port, &cfd, &pending, err, sizeof err), 0);
  if (pending) {
    ck_assert(wait_fd(cfd, POLLOUT, TU_EVENT_MS) & POLLOUT);
    ck_assert_int_eq(appmsg_connect_result(cfd), 0);
  }
  appmsg_socket_t sfd = accept_one(lfd);
  char local[APPMSG_ADDRSTRLEN], peer[APPMSG_ADDRSTRLEN];
  ck_assert_int_gt(appmsg_sockname(cfd, local, sizeof local), 0);
  ck_assert_int_gt(appmsg_peername(sfd, peer, sizeof peer), 0);
  ck_assert_str_eq(local, peer);
  ck_assert_int_eq(appmsg_set_nodelay(cfd, 1), 0);
  ck_assert_int_eq(appmsg_set_nodelay(sfd, 1), 0);
  exchange(cfd, sfd);
  tu_close(cfd);
  tu_close(sfd);
  tu_close(lfd);
}

/* ---- endpoints -------------------------------------------------------------- */

START_TEST(endpoints_parse_into_host_and_port) {
  static const struct {
    const char *text, *host, *port;
    int rc;
  } cases[] = {
      {"127.0.0.1:65432", "127.0.0.1", "65432", 0},
      {"localhost:80", "localhost", "80", 0},
      {"[::1]:65432", "::1", "65432", 0},
      {"[::1]", "::1", "9999", 0},
      {"::1", "::1", "9999", 0},
      {"fe80::1%lo", "fe80::1%lo", "9999", 0},
      {"localhost", "localhost", "9999", 0},
      {"65432", "dflt", "65432", 0},
      {":65432", "dflt", "65432", 0},
      {"unix:/tmp/app.sock", "unix:/tmp/app.sock", "", 0},
      {"unix:@abstract", "unix:@abstract", "", 0},
      {"", "", "", -EINVAL},
      {"host:", "", "", -EINVAL},
      {"[::1", "", "", -EINVAL},
      {"[]:80", "", "", -EINVAL},
      {"[::1]x", "", "", -EINVAL},
      {"[::1]:", "", "", -EINVAL},
      {"unix:", "", "", -EINVAL},
  };
  struct appmsg_endpoint ep;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = appmsg_endpoint_parse(cases[i].text, "dflt", "9999", &ep);
    ck_assert_msg(rc == cases[i].rc, "'%s': rc %d", cases[i].text, rc);
    if (rc == 0) {
      ck_assert_str_eq(ep.host, cases[i].host);
      ck_assert_str_eq(ep.port, cases[i].port);
    }
  }
  char longpath[200];
  memset(longpath, 'a', sizeof longpath);
  memcpy(longpath, "unix:/", 6);
  longpath[sizeof longpath - 1] = '\0';
  ck_assert_int_eq(appmsg_endpoint_parse(longpath, NULL, NULL, &ep), -ENAMETOOLONG);
  ck_assert_int_eq(appmsg_endpoint_parse("localhost", NULL, NULL, &ep), 0);
  ck_assert_str_eq(ep.port, "");
}
END_TEST

/* ---- round trips ----------------------------------------------------------- */

START_TEST(an_ipv4_loopback_connection_round_trips) {
  roundtrip("127.0.0.1", "127.0.0.1", "127.0.0.1:");
}
END_TEST

/* Whether this kernel can make IPv6 sockets and bind ::1; if not, why not. */
static int ipv6_usable(char *why, size_t len) {
  appmsg_socket_t fd;
  int rc = appmsg__sock_open(AF_INET6, SOCK_STREAM, 0, &fd);
  if (rc < 0) {
    snprintf(why, len, "IPv6 is not available here (socket(AF_INET6): %s)", appmsg_strerror(rc));
    return 0;
  }
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (!ok)
    snprintf(why, len, "::1 cannot be bound here (%s)", appmsg_strerror(-appmsg__sock_errno()));
  tu_close(fd);
  return ok;
}

/* Registered only where ipv6_usable(); skipped visibly elsewhere. */
START_TEST(an_ipv6_loopback_connection_round_trips) {
  roundtrip("::1", "::1", "[::1]:");
  roundtrip("[::1]", "[::1]", "[::1]:");
}
END_TEST

START_TEST(localhost_round_trips_whatever_it_resolves_to) {
  char err[APPMSG_NET_ERRLEN] = "", port[16];
  appmsg_socket_t lfd, cfd;
  ck_assert_int_eq(appmsg_listen("localhost", "0", 0, &lfd, err, sizeof err), 0);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  /* Whatever localhost resolves to, the timeout connect tries each address. */
  int rc = appmsg_connect_timeout("localhost", port, TU_EVENT_MS, &cfd, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
#ifndef _WIN32
  ck_assert_int_eq(fcntl(cfd, F_GETFL) & O_NONBLOCK, 0); /* handed back blocking */
#endif
  appmsg_socket_t sfd = accept_one(lfd);
  exchange(cfd, sfd);
  tu_close(cfd);
  tu_close(sfd);
  tu_close(lfd);
}
END_TEST

START_TEST(a_wildcard_listener_takes_ipv4_clients) {
  char err[APPMSG_NET_ERRLEN] = "", name[APPMSG_ADDRSTRLEN], port[16];
  appmsg_socket_t lfd, cfd;
  ck_assert_int_eq(appmsg_listen(NULL, "0", 0, &lfd, err, sizeof err), 0);
  ck_assert_int_gt(appmsg_sockname(lfd, name, sizeof name), 0);
  ck_assert_msg(strncmp(name, "[::]:", 5) == 0 || strncmp(name, "0.0.0.0:", 8) == 0, "%s", name);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  /* Dual-stack (or IPv4-only): IPv4 loopback clients get through. */
  ck_assert_int_eq(appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &cfd, err, sizeof err),
                   0);
  appmsg_socket_t sfd = accept_one(lfd);
  exchange(cfd, sfd);
  tu_close(cfd);
  tu_close(sfd);
  tu_close(lfd);
  ck_assert_int_eq(appmsg_listen("*", "0", 0, &lfd, err, sizeof err), 0);
  tu_close(lfd);
}
END_TEST

#ifndef _WIN32 /* no Unix-domain sockets on Windows (-EAFNOSUPPORT there) */
/* A fresh directory under /tmp for Unix socket files; removed by cleanup_dir(). */
static void make_dir(char *dir, size_t len) {
  snprintf(dir, len, "/tmp/appmsg-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

START_TEST(unix_sockets_round_trip_and_only_stale_files_are_replaced) {
  char dir[64], host[128], err[APPMSG_NET_ERRLEN] = "", name[APPMSG_ADDRSTRLEN];
  make_dir(dir, sizeof dir);
  snprintf(host, sizeof host, "unix:%s/s.sock", dir);
  int lfd, cfd, pending;
  ck_assert_int_eq(appmsg_listen(host, NULL, 0, &lfd, err, sizeof err), 0);
  ck_assert_int_gt(appmsg_sockname(lfd, name, sizeof name), 0);
  ck_assert_str_eq(name, host);
  ck_assert_int_eq(appmsg_connect(host, NULL, &cfd, &pending, err, sizeof err), 0);
  ck_assert_int_eq(pending, 0); /* Unix connects complete at once */
  appmsg_socket_t sfd = accept_one(lfd);
  ck_assert_int_gt(appmsg_peername(cfd, name, sizeof name), 0);
  ck_assert_str_eq(name, host);
  ck_assert_int_gt(appmsg_peername(sfd, name, sizeof name), 0);
  ck_assert_str_eq(name, "unix:");                 /* the client is unnamed */
  ck_assert_int_eq(appmsg_set_nodelay(sfd, 1), 0); /* a no-op on Unix sockets */
  ck_assert_int_eq(appmsg_sockport(sfd), -EAFNOSUPPORT);
  exchange(cfd, sfd);
  tu_close(cfd);
  tu_close(sfd);

  /* A second server on a live socket: refused, and the first keeps working. */
  int lfd2;
  ck_assert_int_eq(appmsg_listen(host, NULL, 0, &lfd2, err, sizeof err), -EADDRINUSE);
  ck_assert_int_eq(lfd2, -1);
  ck_assert_msg(strstr(err, "a server is accepting on it") != NULL, "%s", err);
  ck_assert_int_eq(appmsg_connect_timeout(host, NULL, TU_EVENT_MS, &cfd, err, sizeof err), 0);
  tu_close(cfd);

  /* The server dies without unlinking: the stale file is replaced. */
  tu_close(lfd);
  struct stat st;
  ck_assert_int_eq(lstat(host + 5, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  ck_assert_int_eq(appmsg_listen(host, NULL, 0, &lfd, err, sizeof err), 0);
  ck_assert_int_eq(appmsg_connect_timeout(host, NULL, TU_EVENT_MS, &cfd, err, sizeof err), 0);
  sfd = accept_one(lfd);
  exchange(cfd, sfd);
  tu_close(cfd);
  tu_close(sfd);
  tu_close(lfd);
  unlink(host + 5);

  /* A regular file in the way is never removed. */
  int f = open(host + 5, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ck_assert_int_ge(f, 0);
  tu_close(f);
  ck_assert_int_eq(appmsg_listen(host, NULL, 0, &lfd, err, sizeof err), -EADDRINUSE);
  ck_assert_msg(strstr(err, "not a socket") != NULL, "%s", err);
  ck_assert_int_eq(lstat(host + 5, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  unlink(host + 5);

  /* Nobody there: -ENOENT; a path too long for sockaddr_un: -ENAMETOOLONG. */
  ck_assert_int_eq(appmsg_connect(host, NULL, &cfd, &pending, err, sizeof err), -ENOENT);
  ck_assert_msg(strstr(err, host) != NULL, "%s", err);
  char longhost[200];
  memset(longhost, 'a', sizeof longhost);
  memcpy(longhost, "unix:/", 6);
  longhost[sizeof longhost - 1] = '\0';
  ck_assert_int_eq(appmsg_listen(longhost, NULL, 0, &lfd, err, sizeof err), -ENAMETOOLONG);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(abstract_unix_sockets_round_trip) {
  char host[64], err[APPMSG_NET_ERRLEN], name[APPMSG_ADDRSTRLEN];
  snprintf(host, sizeof host, "unix:@appmsg-test-%ld", (long)getpid());
  int lfd, cfd, pending;
  ck_assert_int_eq(appmsg_listen(host, NULL, 0, &lfd, err, sizeof err), 0);
  ck_assert_int_gt(appmsg_sockname(lfd, name, sizeof name), 0);
  ck_assert_str_eq(name, host);
  ck_assert_int_eq(appmsg_connect(host, NULL, &cfd, &pending, err, sizeof err), 0);
  appmsg_socket_t sfd = accept_one(lfd);
  exchange(cfd, sfd);
  tu_close(cfd);
  tu_close(sfd);
  tu_close(lfd);
}
END_TEST

#endif

/* ---- errors ------------------------------------------------------------------ */

START_TEST(unknown_hosts_and_services_are_address_errors) {
  char err[APPMSG_NET_ERRLEN] = "";
  appmsg_socket_t fd = 42;
  int pending = 42;
  const char *want = "cannot resolve 'nohost.invalid': ";
  ck_assert_int_eq(appmsg_connect("nohost.invalid", "80", &fd, &pending, err, sizeof err),
                   APPMSG_E_ADDRESS);
  ck_assert(fd == APPMSG_INVALID_SOCKET);
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0 && strlen(err) > strlen(want), "%s", err);
  printf("reason as a program would print it: %s\n", err);
  err[0] = '\0';
  ck_assert_int_eq(appmsg_connect_timeout("nohost.invalid", "80", 100, &fd, err, sizeof err),
                   APPMSG_E_ADDRESS);
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
  err[0] = '\0';
  ck_assert_int_eq(appmsg_listen("nohost.invalid", "0", 0, &fd, err, sizeof err), APPMSG_E_ADDRESS);
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
  struct addrinfo *res = (struct addrinfo *)&fd;
  ck_assert_int_eq(appmsg_resolve("nohost.invalid", "80", 0, &res, NULL, 0), APPMSG_E_ADDRESS);
  ck_assert_ptr_null(res);
  /* A bad service name, and no port at all. */
  ck_assert_int_eq(appmsg_connect("127.0.0.1", "no-such-service", &fd, &pending, err, sizeof err),
                   APPMSG_E_ADDRESS);
  ck_assert_msg(strstr(err, "port 'no-such-service'") != NULL, "%s", err);
  ck_assert_int_eq(appmsg_connect("127.0.0.1", NULL, &fd, &pending, err, sizeof err), -EINVAL);
  /* Resolving works: localhost and a bracketed literal. */
  ck_assert_int_eq(appmsg_resolve("localhost", "80", 0, &res, NULL, 0), 0);
  freeaddrinfo(res);
  ck_assert_int_eq(appmsg_resolve("[::1]", "80", 0, &res, NULL, 0), 0);
  ck_assert_int_eq(res->ai_family, AF_INET6);
  freeaddrinfo(res);
}
END_TEST

START_TEST(a_refused_connection_is_econnrefused) {
  char port[16], err[APPMSG_NET_ERRLEN] = "";
  appmsg_socket_t holder = tu_refused_port(port, sizeof port);
  appmsg_socket_t fd;
  int pending;
  int rc = appmsg_connect("127.0.0.1", port, &fd, &pending, err, sizeof err);
  if (rc == 0) {
    ck_assert_int_eq(pending, 1);
    short ev = wait_fd(fd, POLLOUT, TU_EVENT_MS);
    ck_assert(ev & (POLLOUT | POLLERR | POLLHUP));
    ck_assert_int_eq(appmsg_connect_result(fd), -ECONNREFUSED);
    tu_close(fd);
  } else {
    ck_assert_int_eq(rc, -ECONNREFUSED); /* some kernels refuse at once on loopback */
  }
  rc = appmsg_connect_timeout("127.0.0.1", port, TU_EVENT_MS, &fd, err, sizeof err);
  ck_assert_int_eq(rc, -ECONNREFUSED);
  ck_assert(fd == APPMSG_INVALID_SOCKET);
  char want[64];
  snprintf(want, sizeof want, "cannot connect to 127.0.0.1:%s: ", port);
  ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
  tu_close(holder);
}
END_TEST

START_TEST(a_connect_timeout_expires_when_the_backlog_is_full) {
  /* A backlog of 1 holds about two connections; after that SYNs are dropped. */
  char port[16], err[APPMSG_NET_ERRLEN];
  appmsg_socket_t lfd, fds[8];
  int n = 0, rc = 0;
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 1, &lfd, NULL, 0), 0);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  uint64_t t0 = 0, t1 = 0, ms_running = 0;
  for (; n < 8; n++) {
    struct tu_watch w;
    tu_watch_start(&w);
    t0 = tu_now_ms();
    rc = appmsg_connect_timeout("127.0.0.1", port, 100, &fds[n], err, sizeof err);
    t1 = tu_now_ms();
    ms_running = tu_watch_ms(&w);
    if (rc != 0)
      break;
  }
  ck_assert_int_eq(rc, APPMSG_E_TIMEOUT);
  ck_assert_msg(strstr(err, "timed out") != NULL, "%s", err);
  ck_assert_uint_ge(t1 - t0, 95);     /* not early (the clocks count whole milliseconds) */
  ck_assert_uint_lt(ms_running, 600); /* nor late, in time this process could run */
  while (n-- > 0)
    tu_close(fds[n]);
  tu_close(lfd);
}
END_TEST

START_TEST(accepting_with_nothing_pending_is_eagain) {
  appmsg_socket_t lfd, fd = 42;
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 0, &lfd, NULL, 0), 0);
  ck_assert_int_eq(appmsg_accept(lfd, &fd), -EAGAIN);
  ck_assert(fd == APPMSG_INVALID_SOCKET);
  struct appmsg_acceptor acc;
  ck_assert_int_eq(appmsg_acceptor_init(&acc, lfd), 0);
#ifndef _WIN32
  ck_assert_int_gt(acc.reserve_fd, 2);
#else
  ck_assert(acc.reserve_fd == APPMSG_INVALID_SOCKET); /* no descriptor limit to keep one for */
#endif
  ck_assert_int_eq(appmsg_acceptor_accept(&acc, &fd), -EAGAIN);
  appmsg_acceptor_cleanup(&acc);
  appmsg_acceptor_cleanup(&acc);
  ck_assert(acc.reserve_fd == APPMSG_INVALID_SOCKET);
  tu_close(lfd);
#ifndef _WIN32
  struct appmsg_acceptor zero;
  memset(&zero, 0, sizeof zero);
  appmsg_acceptor_cleanup(&zero); /* a zeroed acceptor owns nothing, not even fd 0 */
  ck_assert_int_ge(fcntl(0, F_GETFD), 0);
#endif
}
END_TEST

#ifndef _WIN32 /* no descriptor limit, rlimits or fork() on Windows */
/* ---- EMFILE ------------------------------------------------------------------ */

struct shed_state {
  struct appmsg_acceptor acc;
  int readable_calls; /* listener callbacks */
  int accepted, shed, eagain, other;
};

static void on_listener(struct appmsg_loop *loop, int fd, unsigned events, void *ud) {
  (void)loop;
  (void)fd;
  (void)events;
  struct shed_state *s = ud;
  s->readable_calls++;
  for (;;) {
    int cfd, rc = appmsg_acceptor_accept(&s->acc, &cfd);
    if (rc == 0) {
      s->accepted++;
      tu_close(cfd);
    } else if (rc == APPMSG_E_TOO_MANY_CONNS) {
      s->shed++;
    } else if (rc == -EAGAIN) {
      s->eagain++;
      return;
    } else {
      s->other++;
      return;
    }
  }
}

/* The child's body: returns 0 when every check passed, else the failing step. */
static int emfile_child(void) {
  int lfd, cfd, pending;
  if (appmsg_listen("127.0.0.1", "0", 0, &lfd, NULL, 0) < 0)
    return 1;
  char port[16];
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  struct shed_state s = {0};
  if (appmsg_acceptor_init(&s.acc, lfd) < 0)
    return 2;
  struct appmsg_loop *loop;
  if (appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT) < 0)
    return 3;
  if (appmsg_loop_watch(loop, lfd, APPMSG_EV_READ, on_listener, &s) < 0)
    return 4;
  /* The client connects first: the kernel completes the handshake and queues it. */
  if (appmsg_connect("127.0.0.1", port, &cfd, &pending, NULL, 0) < 0)
    return 5;
  if (pending && !(wait_fd(cfd, POLLOUT, TU_EVENT_MS) & POLLOUT))
    return 6;

  /* Now use up every descriptor. */
  struct rlimit rl = {128, 128};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = 128;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
    return 7;
  int filled = 0;
  while (dup(0) >= 0)
    filled++;
  if (errno != EMFILE || filled == 0)
    return 8;

  /* Plain accept reports EMFILE and leaves the connection queued. */
  int fd;
  if (appmsg_accept(lfd, &fd) != -EMFILE)
    return 9;
  /* The loop's callback sheds it through the reserve descriptor. */
  if (appmsg_loop_run_once(loop, TU_EVENT_MS) != 1)
    return 10;
  if (s.shed != 1 || s.accepted != 0 || s.eagain != 1 || s.other != 0 || s.acc.shed != 1)
    return 11;
  if (s.acc.reserve_fd < 0)
    return 12; /* reopened */
  /* The client sees end of stream. */
  char c;
  if (!(wait_fd(cfd, POLLIN, TU_EVENT_MS) & (POLLIN | POLLHUP)) || read(cfd, &c, 1) != 0)
    return 13;
  /* And the loop does not spin: the listener is quiet now. */
  int calls = 0;
  for (int i = 0; i < 5; i++)
    calls += appmsg_loop_run_once(loop, 10);
  if (calls != 0 || s.readable_calls != 1)
    return 14;
  appmsg_loop_free(loop);
  appmsg_acceptor_cleanup(&s.acc);
  return 0;
}

START_TEST(out_of_descriptors_a_pending_connection_is_shed) {
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    alarm(4 * TU_EVENT_MS / 1000); /* bounded, whatever happens */
    _exit(emfile_child());
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status), "child died with signal %d", WTERMSIG(status));
  ck_assert_msg(WEXITSTATUS(status) == 0, "child failed at step %d", WEXITSTATUS(status));
}
END_TEST

#endif

/* ---- options and I/O ------------------------------------------------------------ */

START_TEST(socket_options_and_io_helpers_do_what_they_say) {
  appmsg_socket_t sv[2];
  ck_assert_int_eq(tu_socketpair(sv), 0);
  ck_assert_int_eq(appmsg_set_nonblock(sv[0], 1), 0);
#ifndef _WIN32
  ck_assert_int_ne(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
#endif
  char buf[8];
  ck_assert_int_eq(appmsg_recv(sv[0], buf, sizeof buf), -EAGAIN);
  ck_assert_int_eq(appmsg_set_nonblock(sv[0], 0), 0);
#ifndef _WIN32
  ck_assert_int_eq(fcntl(sv[0], F_GETFL) & O_NONBLOCK, 0);
  ck_assert_int_eq(appmsg_set_nonblock(-1, 1), -EBADF);
#else
  ck_assert_int_eq(appmsg_set_nonblock(APPMSG_INVALID_SOCKET, 1), -ENOTSOCK);
#endif
  tu_close(sv[1]);
  ck_assert_int_eq(appmsg_recv(sv[0], buf, sizeof buf), 0);
  /* No SIGPIPE: an error instead of death (-EPIPE on a Unix pair; over TCP, as on Windows,
   * the first send may still be taken, and the reset comes after). */
  ssize_t sent = appmsg_send(sv[0], "x", 1);
  for (int i = 0; sent == 1 && i < 100; i++) {
    tu_sleep_ms(10);
    sent = appmsg_send(sv[0], "x", 1);
  }
  ck_assert_msg(sent == -EPIPE || sent == -ECONNRESET || sent == -ECONNABORTED, "send: %s",
                appmsg_strerror((int)sent));
  tu_close(sv[0]);

#ifndef _WIN32
  /* Non-sockets fall back to write(). */
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  ck_assert_int_eq(appmsg_send(p[1], "abc", 3), 3);
  ck_assert_int_eq(appmsg_recv(p[0], buf, sizeof buf), 3);
  tu_close(p[0]);
  tu_close(p[1]);
#endif

  /* TCP_NODELAY really set. */
  appmsg_socket_t lfd, cfd;
  int pending, on = 0;
  char port[16];
  ck_assert_int_eq(appmsg_listen("127.0.0.1", "0", 0, &lfd, NULL, 0), 0);
  snprintf(port, sizeof port, "%d", appmsg_sockport(lfd));
  ck_assert_int_eq(appmsg_connect("127.0.0.1", port, &cfd, &pending, NULL, 0), 0);
  ck_assert_int_eq(appmsg_set_nodelay(cfd, 1), 0);
  ck_assert_int_eq(appmsg__sock_getint(cfd, IPPROTO_TCP, TCP_NODELAY, &on), 0);
  ck_assert_int_ne(on, 0);
#ifndef _WIN32
  ck_assert_int_eq(appmsg_set_nodelay(-1, 1), -EBADF);
#else
  ck_assert_int_eq(appmsg_set_nodelay(APPMSG_INVALID_SOCKET, 1), -ENOTSOCK);
#endif
  tu_close(cfd);
  tu_close(lfd);

  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
#ifndef _WIN32 /* (no SIGPIPE there) */
  struct sigaction sa;
  sigaction(SIGPIPE, NULL, &sa);
  ck_assert(sa.sa_handler == SIG_IGN);
#endif

  /* Formatting: a too-small buffer and an unknown family. */
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(65432)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char small[8], name[APPMSG_ADDRSTRLEN];
  ck_assert_int_eq(appmsg_addr_format((struct sockaddr *)&a, sizeof a, small, sizeof small),
                   -ENOSPC);
  ck_assert_int_eq(appmsg_addr_format((struct sockaddr *)&a, sizeof a, name, sizeof name), 15);
  ck_assert_str_eq(name, "127.0.0.1:65432");
  struct sockaddr bogus = {.sa_family = AF_APPLETALK}; /* (Windows has the name too) */
  ck_assert_int_eq(appmsg_addr_format(&bogus, sizeof bogus, name, sizeof name), -EAFNOSUPPORT);
}
END_TEST

/* Winsock's errors become the errno values, and so the codes and sentences, that a POSIX
 * system gives for the same failure; the sentences are glibc's wherever the program runs. */
static const struct {
  int wsa;          /* Winsock's documented code */
  int err;          /* the errno value it stands for */
  const char *name; /* appmsg_errname() */
  const char *text; /* appmsg_strerror() */
} wsa_table[] = {
    {10035, EAGAIN, "EAGAIN", "Resource temporarily unavailable"},    /* WSAEWOULDBLOCK */
    {10036, EINPROGRESS, "EINPROGRESS", "Operation now in progress"}, /* WSAEINPROGRESS */
    {10054, ECONNRESET, "ECONNRESET", "Connection reset by peer"},    /* WSAECONNRESET */
    {10061, ECONNREFUSED, "ECONNREFUSED", "Connection refused"},      /* WSAECONNREFUSED */
    {10048, EADDRINUSE, "EADDRINUSE", "Address already in use"},      /* WSAEADDRINUSE */
    {10049, EADDRNOTAVAIL, "EADDRNOTAVAIL", "Cannot assign requested address"},
    {10024, EMFILE, "EMFILE", "Too many open files"},         /* WSAEMFILE */
    {10055, ENOBUFS, "ENOBUFS", "No buffer space available"}, /* WSAENOBUFS */
    {10060, ETIMEDOUT, "ETIMEDOUT", "Connection timed out"},  /* WSAETIMEDOUT */
    {10053, ECONNABORTED, "ECONNABORTED", "Software caused connection abort"},
    {10057, ENOTCONN, "ENOTCONN", "Transport endpoint is not connected"},
    {10058, EPIPE, "EPIPE", "Broken pipe"}, /* WSAESHUTDOWN */
    {10051, ENETUNREACH, "ENETUNREACH", "Network is unreachable"},
    {10065, EHOSTUNREACH, "EHOSTUNREACH", "No route to host"},
    {10064, EHOSTUNREACH, "EHOSTUNREACH", "No route to host"}, /* WSAEHOSTDOWN */
    {10050, ENETDOWN, "ENETDOWN", "Network is down"},
    {10052, ENETRESET, "ENETRESET", "Network dropped connection on reset"},
    {10038, ENOTSOCK, "ENOTSOCK", "Socket operation on non-socket"},
    {10022, EINVAL, "EINVAL", "Invalid argument"},
    {10009, EBADF, "EBADF", "Bad file descriptor"},
    {10013, EACCES, "EACCES", "Permission denied"},
    {10014, EFAULT, "EFAULT", "Bad address"},
    {10004, EINTR, "EINTR", "Interrupted system call"},
    {10037, EALREADY, "EALREADY", "Operation already in progress"},
    {10040, EMSGSIZE, "EMSGSIZE", "Message too long"},
    {10045, EOPNOTSUPP, "EOPNOTSUPP", "Operation not supported"},
    {10047, EAFNOSUPPORT, "EAFNOSUPPORT", "Address family not supported by protocol"},
    {10043, EPROTONOSUPPORT, "EPROTONOSUPPORT", "Protocol not supported"},
    {10056, EISCONN, "EISCONN", "Transport endpoint is already connected"},
    {8, ENOMEM, "ENOMEM", "Cannot allocate memory"}, /* WSA_NOT_ENOUGH_MEMORY */
};

START_TEST(winsock_errors_read_as_the_posix_errno_and_sentence) {
  for (size_t i = 0; i < sizeof wsa_table / sizeof wsa_table[0]; i++) {
    int e = appmsg__errno_from_wsa(wsa_table[i].wsa);
    ck_assert_msg(e == wsa_table[i].err, "WSA %d: errno %d, want %d (%s)", wsa_table[i].wsa, e,
                  wsa_table[i].err, wsa_table[i].name);
    ck_assert_str_eq(appmsg_errname(-e), wsa_table[i].name);
    ck_assert_str_eq(appmsg_strerror(-e), wsa_table[i].text);
  }
  /* A code of no socket meaning is an I/O error, never success or a crash. */
  ck_assert_int_eq(appmsg__errno_from_wsa(12345), EIO);
  ck_assert_int_eq(appmsg__errno_from_wsa(0), 0);
#ifdef _WIN32
  /* The numbers written in the table are <winsock2.h>'s. */
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAEWOULDBLOCK), EAGAIN);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAECONNRESET), ECONNRESET);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAECONNREFUSED), ECONNREFUSED);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAEADDRINUSE), EADDRINUSE);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAEMFILE), EMFILE);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAENOBUFS), ENOBUFS);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSAETIMEDOUT), ETIMEDOUT);
  ck_assert_int_eq(appmsg__errno_from_wsa(WSA_NOT_ENOUGH_MEMORY), ENOMEM);
#else
  /* On this system the sentences are the C library's own. */
  for (size_t i = 0; i < sizeof wsa_table / sizeof wsa_table[0]; i++)
    ck_assert_str_eq(appmsg_strerror(-wsa_table[i].err), strerror(wsa_table[i].err));
#endif
}
END_TEST

static Suite *net_suite(void) {
  Suite *s = suite_create("net");
  TCase *tc = tcase_create("addresses");
  tcase_add_test(tc, endpoints_parse_into_host_and_port);
  tcase_add_test(tc, unknown_hosts_and_services_are_address_errors);
  suite_add_tcase(s, tc);

  tc = tcase_create("roundtrip");
  tcase_add_test(tc, an_ipv4_loopback_connection_round_trips);
  char why[160];
  if (ipv6_usable(why, sizeof why))
    tcase_add_test(tc, an_ipv6_loopback_connection_round_trips);
  else
    tu_skip("an_ipv6_loopback_connection_round_trips", "%s", why);
  tcase_add_test(tc, localhost_round_trips_whatever_it_resolves_to);
  tcase_add_test(tc, a_wildcard_listener_takes_ipv4_clients);
#ifndef _WIN32
  tcase_add_test(tc, unix_sockets_round_trip_and_only_stale_files_are_replaced);
  tcase_add_test(tc, abstract_unix_sockets_round_trip);
#endif
  suite_add_tcase(s, tc);

  tc = tcase_create("errors");
  tcase_add_test(tc, a_refused_connection_is_econnrefused);
  tcase_add_test(tc, a_connect_timeout_expires_when_the_backlog_is_full);
  tcase_add_test(tc, accepting_with_nothing_pending_is_eagain);
#ifndef _WIN32
  tcase_add_test(tc, out_of_descriptors_a_pending_connection_is_shed);
#endif
  tcase_add_test(tc, socket_options_and_io_helpers_do_what_they_say);
  tcase_add_test(tc, winsock_errors_read_as_the_posix_errno_and_sentence);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(net_suite());
}
