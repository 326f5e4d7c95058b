/*
 * Socket helpers: resolve, listen, connect and accept over IPv4, IPv6,
 * host names and Unix-domain paths; small wrappers for the socket options
 * and I/O calls a framed connection needs.
 *
 * Addresses are given as a host and a port, as in the Python guide's
 * "app-server.py <host> <port>":
 *
 *   host "127.0.0.1", "::1", "[::1]", "localhost", "example.org";
 *        NULL, "" or "*" for appmsg_listen(): every local address
 *        (IPv6 dual-stack where possible, else IPv4);
 *        "unix:/path/to/sock" for a Unix-domain stream socket (port ignored).
 *   port "65432", a service name from /etc/services, or "0" (listen only:
 *        the kernel picks a free port; read it back with appmsg_sockname()).
 *
 * appmsg_endpoint_parse() splits one "host:port" string into the two.
 *
 * Errors: functions return 0 (or a count) on success and a negative code
 * on failure: a negated errno for system errors (-ECONNREFUSED, -EMFILE),
 * APPMSG_E_ADDRESS when a name cannot be resolved, APPMSG_E_TIMEOUT.  Those
 * that resolve names also take an optional error buffer (err, errlen; NULL
 * and 0 when not wanted) and put a full human sentence into it, e.g.
 *
 *   cannot resolve 'nohost.invalid': Name or service not known
 *   cannot listen on 127.0.0.1:80: Permission denied
 *
 * so a program can print it as is.  The library never prints anything.
 *
 * Every socket made here is non-blocking and close-on-exec (on Windows: not
 * inheritable) - except the one appmsg_connect_timeout() hands back, which
 * is blocking - and belongs to the caller, who closes it (close(), or
 * closesocket() on Windows).  appmsg_send() never raises SIGPIPE
 * (MSG_NOSIGNAL, SO_NOSIGPIPE, or nothing to do on Windows);
 * appmsg_ignore_sigpipe() covers code that uses write().
 *
 * Sockets are appmsg_socket_t (socket.h): an int on POSIX, a SOCKET on
 * Windows, APPMSG_INVALID_SOCKET when there is none.  Errors are the same
 * negated errno values on every system: a Winsock error is given as the
 * errno it stands for (WSAECONNREFUSED as -ECONNREFUSED, WSAEWOULDBLOCK as
 * -EAGAIN), with the same sentence from appmsg_strerror().  Windows has no
 * Unix-domain sockets in this library ("unix:" is -EAFNOSUPPORT there).
 */
#ifndef APPMSG_NET_H
#define APPMSG_NET_H

#include <stddef.h>
#include "export.h"
#include "socket.h"

#ifdef __cplusplus
extern "C" {
#endif

struct addrinfo;

/* A comfortable size for the error buffers taken below. */
#define APPMSG_NET_ERRLEN 256

/* Enough for any address appmsg_sockname() prints ("unix:" + a 107-byte path). */
#define APPMSG_ADDRSTRLEN 128

/* The parts of a "host:port" endpoint, see appmsg_endpoint_parse(). */
struct appmsg_endpoint {
  char host[256]; /* host without brackets, or "unix:/path"; "" if none was given */
  char port[32];  /* port or service; "" for Unix paths or if none was given */
};

/*
 * Splits text into host and port:
 *   "127.0.0.1:65432", "localhost:65432", "[::1]:65432" -> host, port
 *   "::1", "fe80::1%eth0" (two or more colons, no brackets) -> host only
 *   "[::1]", "localhost"                                    -> host only
 *   "65432" (digits only)                                   -> port only
 *   "unix:/run/app.sock"                                    -> host "unix:/run/app.sock"
 * A part not given is copied from default_host / default_port (NULL: "").
 * Returns 0, -EINVAL (empty text, unbalanced brackets, junk after "]"), or
 * -ENAMETOOLONG (a part does not fit, or a Unix path longer than a
 * sockaddr_un holds).
 */
APPMSG_API int appmsg_endpoint_parse(const char *text, const char *default_host,
                                     const char *default_port, struct appmsg_endpoint *ep);

/*
 * getaddrinfo() for stream sockets, accepting "[v6]" brackets; passive
 * non-zero adds AI_PASSIVE (and turns NULL/""/"*" into the wildcard).  On
 * success *res is the list, owned by the caller (freeaddrinfo()).  Returns
 * 0, APPMSG_E_ADDRESS (reason in err: "cannot resolve 'HOST': ..."),
 * -ENOMEM, or another negated errno.  Unix paths are not resolved here.
 */
APPMSG_API int appmsg_resolve(const char *host, const char *port, int passive,
                              struct addrinfo **res, char *err, size_t errlen);

/*
 * Creates a listening socket on host/port and stores it in *fd
 * (APPMSG_INVALID_SOCKET on failure).  TCP: tries each resolved address until one binds, with
 * SO_REUSEADDR; for the wildcard, IPv6 with IPV6_V6ONLY off first.  Unix
 * paths: if the path exists and is a socket nobody accepts on (a stale
 * file left by a crashed server) it is unlinked and bound again; a live
 * socket or a non-socket file gives -EADDRINUSE.  The caller unlinks the
 * path after closing.  backlog <= 0 means SOMAXCONN.  Returns 0,
 * APPMSG_E_ADDRESS, or a negated errno, with a reason in err.
 */
APPMSG_API int appmsg_listen(const char *host, const char *port, int backlog, appmsg_socket_t *fd,
                             char *err, size_t errlen);

/* appmsg_listen() with flags: APPMSG_LISTEN_REUSEPORT sets SO_REUSEPORT on a
 * TCP socket, so that several sockets - one per thread or per process -
 * listen on one port and the kernel spreads new connections among them
 * (by a hash of the connection's addresses).  Ignored for Unix paths.
 * Where the system cannot (appmsg_can_share_port() is 0: Windows, and the
 * POSIX-only build for macOS and the BSDs, whose SO_REUSEPORT does not
 * spread connections) it fails with -EOPNOTSUPP: share one listener
 * between threads instead, each with its own appmsg_socket_dup(). */
#define APPMSG_LISTEN_REUSEPORT 0x1u
APPMSG_API int appmsg_listen_flags(const char *host, const char *port, int backlog, unsigned flags,
                                   appmsg_socket_t *fd, char *err, size_t errlen);

/*
 * Starts a non-blocking connect to host/port.  On 0, *fd is the socket and
 * *in_progress says whether the connect is still pending (EINPROGRESS): then
 * wait until the fd is writable (APPMSG_EV_WRITE) and call
 * appmsg_connect_result().  Of several resolved addresses the first whose
 * connect does not fail at once is used (use appmsg_connect_timeout() or
 * appmsg_resolve() + appmsg_connect_addr() to fall back on later errors).
 * Unix sockets connect at once or fail (-EAGAIN: the server's backlog is
 * full).  Returns 0, APPMSG_E_ADDRESS or a negated errno (-ECONNREFUSED can
 * come at once), with a reason in err; *fd is APPMSG_INVALID_SOCKET on
 * failure.
 */
APPMSG_API int appmsg_connect(const char *host, const char *port, appmsg_socket_t *fd,
                              int *in_progress, char *err, size_t errlen);

/* 1 where APPMSG_LISTEN_REUSEPORT is available, else 0. */
APPMSG_API int appmsg_can_share_port(void);

/* A second handle for the same socket (dup(); WSADuplicateSocket() on Windows), e.g. for
 * another thread's loop to accept on the same listener.  Each handle is closed on its own.
 * Returns 0 and *out, or a negated errno. */
APPMSG_API int appmsg_socket_dup(appmsg_socket_t fd, appmsg_socket_t *out);

/* appmsg_connect() for one address, e.g. from appmsg_resolve(). Same results, no reason. */
APPMSG_API int appmsg_connect_addr(const struct sockaddr *addr, socklen_t addrlen,
                                   appmsg_socket_t *fd, int *in_progress);

/*
 * The outcome of a pending connect, once its fd is writable: 0 if
 * connected, else the negated SO_ERROR (-ECONNREFUSED, -ETIMEDOUT, ...).
 * Calling it before the fd is writable may return 0 for a connect still in
 * progress.
 */
APPMSG_API int appmsg_connect_result(appmsg_socket_t fd);

/*
 * Connects with a deadline, for simple clients: resolves, then tries each
 * address in turn until one connects, all within timeout_ms (< 0: no
 * limit; name resolution itself cannot be bounded).  On 0, *fd is a
 * connected, *blocking*, close-on-exec socket (appmsg_set_nonblock() to
 * change).  Returns APPMSG_E_TIMEOUT, APPMSG_E_ADDRESS, or the last
 * address's negated errno, with a reason in err.
 */
APPMSG_API int appmsg_connect_timeout(const char *host, const char *port, int timeout_ms,
                                      appmsg_socket_t *fd, char *err, size_t errlen);

/*
 * Accepts one pending connection as a non-blocking, close-on-exec socket
 * in *fd.  Returns 0; -EAGAIN when none is pending (wait for
 * APPMSG_EV_READ); -EMFILE / -ENFILE when out of descriptors - the
 * connection stays queued and the listener stays readable, so a
 * level-triggered loop would spin: shed it with appmsg_accept_shed() or use
 * struct appmsg_acceptor, which does; or another negated errno.  EINTR and
 * ECONNABORTED (the client gave up while queued) are retried.
 */
APPMSG_API int appmsg_accept(appmsg_socket_t listen_fd, appmsg_socket_t *fd);

/* appmsg_accept() that also stores the peer's address (as accept4() gives
 * it, at no extra cost) in addr, of room *addrlen, updated to its length. */
APPMSG_API int appmsg_accept_peer(appmsg_socket_t listen_fd, appmsg_socket_t *fd,
                                  struct sockaddr *addr, socklen_t *addrlen);

/*
 * The descriptor-exhaustion escape hatch (the libev/libuv "reserve fd"
 * pattern): closes *reserve_fd to free one descriptor, accepts the pending
 * connection with it and closes that at once (the client sees EOF), then
 * reopens *reserve_fd (on /dev/null; Windows, which has no descriptor limit,
 * keeps no reserve).  Returns 1 if a connection was shed,
 * 0 if none was pending, or a negated errno; *reserve_fd is invalid if it could
 * not be reopened (another thread took the descriptor) - try again later.
 */
APPMSG_API int appmsg_accept_shed(appmsg_socket_t listen_fd, appmsg_socket_t *reserve_fd);

/*
 * An accept loop that survives running out of descriptors.  The caller
 * owns listen_fd; the acceptor owns reserve_fd.  Use:
 *
 *   on listener readable:
 *     for (;;) {
 *       rc = appmsg_acceptor_accept(&srv->acc, &fd);
 *       if (rc == 0) { new_conn(fd); continue; }
 *       if (rc == APPMSG_E_TOO_MANY_CONNS) { log_rate_limited(); continue; }
 *       if (rc == -EAGAIN) break;
 *       // -EMFILE/-ENFILE without a reserve, or another error: stop
 *       // reading the listener (appmsg_loop_modify(loop, lfd, 0)) and arm a
 *       // timer to resume in ~100 ms.
 *       break;
 *     }
 */
struct appmsg_acceptor {
  appmsg_socket_t listen_fd;    /* the listening socket (caller's) */
  appmsg_socket_t reserve_fd;   /* spare descriptor for shedding, or APPMSG_INVALID_SOCKET */
  unsigned long shed;           /* connections accepted-and-closed for want of descriptors */
  struct sockaddr_storage peer; /* the peer of the connection last accepted */
  socklen_t peer_len;           /* its length (0 if unknown) */
};

/* Sets up an acceptor for listen_fd and opens the reserve. Returns 0 or a negated errno. */
APPMSG_API int appmsg_acceptor_init(struct appmsg_acceptor *a, appmsg_socket_t listen_fd);

/*
 * Accepts one connection into *fd (0), or returns -EAGAIN when none is
 * pending, APPMSG_E_TOO_MANY_CONNS when the process is out of descriptors
 * and one pending connection was shed (keep accepting: the queue shrinks),
 * -EMFILE / -ENFILE when out of descriptors with no reserve to shed with,
 * or another negated errno.  A missing reserve is reopened on each call.
 */
APPMSG_API int appmsg_acceptor_accept(struct appmsg_acceptor *a, appmsg_socket_t *fd);

/* Closes the reserve (not the listener). Safe on a zeroed or cleaned-up acceptor. */
APPMSG_API void appmsg_acceptor_cleanup(struct appmsg_acceptor *a);

/* ---- addresses as text ---------------------------------------------------- */

/*
 * Prints an address: "127.0.0.1:5000", "[::1]:5000", "[fe80::1%eth0]:5000",
 * "unix:/path", "unix:@abstract", or "unix:" for an unnamed socket.
 * Returns the length written (NUL-terminated), -ENOSPC if buf is too small
 * (APPMSG_ADDRSTRLEN always suffices), or -EAFNOSUPPORT.
 */
APPMSG_API int appmsg_addr_format(const struct sockaddr *addr, socklen_t addrlen, char *buf,
                                  size_t len);

/* appmsg_addr_format() of the socket's local address. Returns the length or a negated errno. */
APPMSG_API int appmsg_sockname(appmsg_socket_t fd, char *buf, size_t len);

/* appmsg_addr_format() of the socket's peer. -ENOTCONN if not connected. */
APPMSG_API int appmsg_peername(appmsg_socket_t fd, char *buf, size_t len);

/* The local TCP port (e.g. after listening on port "0"), or a negated errno. */
APPMSG_API int appmsg_sockport(appmsg_socket_t fd);

/* ---- options and I/O ----------------------------------------------------- */

/* Makes the system's socket library ready: WSAStartup() on Windows, once per process (the
 * library does it itself when it makes its first socket or loop; call this first only to
 * make sockets of your own with the system's calls).  Nothing on POSIX.  0 or a negated
 * errno. */
APPMSG_API int appmsg_net_init(void);

/* Sets SIGPIPE to SIG_IGN for the whole process (nothing to do on Windows, which has no
 * SIGPIPE). Returns 0 or a negated errno. */
APPMSG_API int appmsg_ignore_sigpipe(void);

/* TCP_NODELAY on (1) or off (0); a no-op returning 0 on Unix sockets. 0 or a negated errno. */
APPMSG_API int appmsg_set_nodelay(appmsg_socket_t fd, int on);

/* O_NONBLOCK on (1) or off (0). Returns 0 or a negated errno. */
APPMSG_API int appmsg_set_nonblock(appmsg_socket_t fd, int on);

/*
 * send() without SIGPIPE (write() for what is not a socket, on POSIX),
 * EINTR retried.
 * Returns the bytes written (> 0 unless len is 0), -EAGAIN when the buffer
 * is full, or a negated errno (-EPIPE, -ECONNRESET).
 */
APPMSG_API ssize_t appmsg_send(appmsg_socket_t fd, const void *buf, size_t len);

/* read(), EINTR retried: bytes read, 0 at end of stream, -EAGAIN, or a negated errno. */
APPMSG_API ssize_t appmsg_recv(appmsg_socket_t fd, void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
