/*
 * The platform layer: everything the library needs from the system that
 * differs between POSIX systems and Windows, behind one interface.  Two
 * implementations, one per build: platform_posix.c (Linux, macOS, the
 * BSDs; Linux-only calls behind CMake's feature checks, platform_config.h)
 * and platform_win32.c (Winsock 2).  platform_wsa.c, built everywhere, maps
 * Winsock error codes to errno values.
 *
 * No other file of the library includes a system header beyond the C
 * standard library's, the socket declarations of appmsg/socket.h and the
 * address lookup below, or tests a platform macro.  The one exception is
 * the epoll backend (loop_epoll.c), built only where epoll exists.
 *
 * Errors are negated errno values, the same numbers on every system: a
 * Winsock error is mapped by appmsg__errno_from_wsa() (WSAEWOULDBLOCK is
 * EAGAIN, WSAECONNREFUSED is ECONNREFUSED, ...), so the library and its
 * users compare against one set of codes and print one set of sentences
 * (appmsg_strerror()).
 *
 * Not installed.
 */
#ifndef APPMSG_PLATFORM_H
#define APPMSG_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/socket.h"

#ifdef _WIN32
#include <signal.h>
#include <windows.h>
/* The signal numbers the library's callers name; SIGHUP is never raised on Windows. */
#ifndef SIGHUP
#define SIGHUP 1
#endif
typedef SRWLOCK appmsg__mutex;
typedef INIT_ONCE appmsg__once_t;
#define APPMSG__ONCE_INIT INIT_ONCE_STATIC_INIT
#define APPMSG__SOCKET_DENSE 0 /* handles: not small integers, the loop maps them */
#else
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
typedef pthread_mutex_t appmsg__mutex;
typedef pthread_once_t appmsg__once_t;
#define APPMSG__ONCE_INIT PTHREAD_ONCE_INIT
#define APPMSG__SOCKET_DENSE 1 /* descriptors: small integers, the loop indexes by them */
#endif

/* Room for a numeric host and port (getnameinfo()'s NI_MAXHOST, NI_MAXSERV). */
#define APPMSG__HOSTLEN 1025
#define APPMSG__SERVLEN 32

/* ---- start-up and errors -------------------------------------------------------------- */

/* Makes the socket library ready (WSAStartup() once; nothing on POSIX). 0 or a negated errno. */
int appmsg__net_start(void);

/* The error of the socket call that just failed, as a positive errno value. */
int appmsg__sock_errno(void);

/* The errno value a Winsock error code stands for (EIO for codes of no socket meaning).
 * Pure arithmetic on the documented codes: built, and tested, on every system. */
int appmsg__errno_from_wsa(int wsa_code);

/* A system call's error code as OpenSSL records it (errno; GetLastError() on Windows) as an
 * errno value. */
int appmsg__errno_from_system(int code);

/* An error code a socket reports of itself (SO_ERROR) as an errno value. */
int appmsg__sock_errno_value(int code);

/* getaddrinfo()'s failures: the errno value behind EAI_SYSTEM (0 for every other code), and
 * the sentence for a code. */
int appmsg__gai_errno(int eai);
const char *appmsg__gai_strerror(int eai);

/* SIGPIPE ignored process-wide (nothing to do on Windows). 0 or a negated errno. */
int appmsg__ignore_sigpipe(void);

/* ---- sockets -------------------------------------------------------------------------- */

/* socket() made non-blocking and close-on-exec, and without SIGPIPE where the system can
 * say so per socket (SO_NOSIGPIPE).  0 or a negated errno. */
int appmsg__sock_open(int family, int type, int protocol, appmsg_socket_t *s);

/* accept() of one pending connection, close-on-exec, non-blocking if nonblock.  0; -EAGAIN
 * when none is pending; -EINTR and -ECONNABORTED are retried here; else a negated errno. */
int appmsg__sock_accept(appmsg_socket_t l, int nonblock, appmsg_socket_t *s, struct sockaddr *addr,
                        socklen_t *addrlen);

/* A second handle for the same socket, close-on-exec (dup(); WSADuplicateSocket() on
 * Windows).  0 or a negated errno. */
int appmsg__sock_dup(appmsg_socket_t s, appmsg_socket_t *out);

/* Whether listeners can share a port, the system spreading connections among them
 * (SO_REUSEPORT on Linux). */
int appmsg__can_share_port(void);

/* Closes a socket (closesocket() on Windows). */
void appmsg__sock_close(appmsg_socket_t s);

/* shutdown() of the sending side (SHUT_WR, SD_SEND); errors ignored. */
void appmsg__sock_shutdown_write(appmsg_socket_t s);

/* Non-blocking mode on or off. 0 or a negated errno. */
int appmsg__sock_nonblock(appmsg_socket_t s, int on);

/* Integer socket options. 0 or a negated errno. */
int appmsg__sock_setint(appmsg_socket_t s, int level, int name, int value);
int appmsg__sock_getint(appmsg_socket_t s, int level, int name, int *value);

/* A listener's address reuse: a restart rebinds a port with connections in TIME_WAIT (POSIX
 * SO_REUSEADDR), and no other process can bind the port while it listens (Windows
 * SO_EXCLUSIVEADDRUSE; POSIX refuses that already).  share: several sockets on one port
 * (SO_REUSEPORT); -EOPNOTSUPP where the system has no such option. */
int appmsg__sock_listen_opts(appmsg_socket_t s, int share);

/* send() without SIGPIPE (MSG_NOSIGNAL, SO_NOSIGPIPE, or none needed), EINTR retried:
 * bytes sent, -EAGAIN when the buffer is full, or a negated errno. */
ssize_t appmsg__sock_send(appmsg_socket_t s, const void *buf, size_t len);

/* recv(), EINTR retried: bytes, 0 at end of stream, -EAGAIN, or a negated errno.  On POSIX
 * a descriptor that is not a socket (a pipe, a file) is read with read(). */
ssize_t appmsg__sock_recv(appmsg_socket_t s, void *buf, size_t len);

/* write() for what is not a socket (POSIX: a pipe a test hands a connection); -ENOTSOCK on
 * Windows. */
ssize_t appmsg__fd_write(appmsg_socket_t s, const void *buf, size_t len);

/* Bytes ready to read without waiting (FIONREAD) in *n. 0 or a negated errno. */
int appmsg__sock_pending(appmsg_socket_t s, size_t *n);

/* poll() (on Windows select(), as poll() reports it; an empty set waits as a sleep): ready count, 0 on
 * timeout, or a negated errno (-EINTR on POSIX when a signal came). */
int appmsg__poll(struct pollfd *fds, size_t n, int timeout_ms);

/* A descriptor held in reserve for shedding connections when the process runs out (POSIX:
 * /dev/null above stdio).  0 with *r set, or a negated errno; on Windows, where sockets are
 * not counted against a descriptor limit, 0 with *r = APPMSG_INVALID_SOCKET. */
int appmsg__reserve_open(appmsg_socket_t *r);
void appmsg__reserve_close(appmsg_socket_t r);
/* Whether the system can run out of descriptors (and the acceptor needs a reserve). */
int appmsg__reserve_needed(void);

/* ---- Unix-domain sockets -------------------------------------------------------------- */

/* "/path" or "@abstract" (Linux) as a socket address. 0, -EINVAL, -ENAMETOOLONG, or
 * -EAFNOSUPPORT where the build has no Unix-domain sockets. */
int appmsg__unix_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len);
/* The longest path appmsg__unix_addr() takes. */
size_t appmsg__unix_path_max(void);
/* Whether a bind that failed with EADDRINUSE met a stale socket file (nobody accepts on
 * it): then it is removed and 1 returned; else 0, with *why saying what is there. */
int appmsg__unix_clear_stale(const struct sockaddr_storage *ss, socklen_t len, const char **why);
/* "unix:/path", "unix:@abstract" or "unix:" for a Unix address. Length, or -ENOSPC. */
int appmsg__unix_format(const struct sockaddr *addr, socklen_t len, char *buf, size_t cap);
/* Which file a path names now (device and inode), so that a server removes its own socket
 * file and not one made by someone since. 0 or a negated errno. */
int appmsg__file_identity(const char *path, uint64_t id[2]);
/* Removes a socket file (the server's, when it stops). */
void appmsg__unix_unlink(const char *path);

/* ---- the loop's wake-up channel ------------------------------------------------------- */

/* A connected pair: *rd is watched by a loop, *wr written from any thread or a signal
 * handler (a pipe on POSIX, a loopback TCP pair on Windows). Both non-blocking.
 * 0 or a negated errno. */
int appmsg__wakeup_open(appmsg_socket_t *rd, appmsg_socket_t *wr);
/* Writes one byte; a full channel already holds a wake-up and counts as done.  0 or a
 * negated errno.  Async-signal-safe on POSIX. */
int appmsg__wakeup_send(appmsg_socket_t wr, unsigned char b);
/* Reads what is there: bytes read (0 when empty), or a negated errno. */
ssize_t appmsg__wakeup_recv(appmsg_socket_t rd, unsigned char *buf, size_t len);
void appmsg__wakeup_close(appmsg_socket_t rd, appmsg_socket_t wr);

/* ---- signals, or Windows console events ----------------------------------------------- */

/* Whether signo can be caught (POSIX: a valid number but SIGKILL and SIGSTOP; Windows:
 * SIGINT, SIGTERM, SIGBREAK and SIGHUP, which is accepted and never comes). */
int appmsg__signal_catchable(int signo);

/* Process-wide: from now on each of the n signals writes its number as one byte to wr
 * (replacing any earlier set, whose dispositions are restored first).  On Windows Ctrl-C is
 * SIGINT, and Ctrl-Break, the console window's close, log-off and shut-down are SIGTERM.
 * 0 or a negated errno (nothing caught then). */
int appmsg__signals_catch(const int *signals, size_t n, appmsg_socket_t wr);
/* Restores what appmsg__signals_catch() replaced; nothing is written to wr after it. */
void appmsg__signals_release(void);

/* ---- time, threads, the process ------------------------------------------------------- */

/* A monotonic clock in nanoseconds. */
uint64_t appmsg__monotonic_ns(void);

/* Starts a detached thread running fn(arg) with a stack of about stack bytes, with every
 * signal blocked (POSIX).  0 or a negated errno. */
int appmsg__thread_detached(void (*fn)(void *), void *arg, size_t stack);

int appmsg__mutex_init(appmsg__mutex *m);
void appmsg__mutex_lock(appmsg__mutex *m);
void appmsg__mutex_unlock(appmsg__mutex *m);
void appmsg__mutex_destroy(appmsg__mutex *m);
/* Runs fn once per process whatever the number of threads calling. */
void appmsg__once(appmsg__once_t *once, void (*fn)(void));

/* Sleeps ms milliseconds (the tests' polling waits; the library never sleeps). */
void appmsg__sleep_ms(unsigned ms);

/* A connected pair of non-blocking stream sockets: socketpair(AF_UNIX) on POSIX, a
 * loopback TCP pair on Windows (the tests' peers).  0 or a negated errno. */
int appmsg__sock_pair(appmsg_socket_t sv[2]);

/* The process id (for seeding). */
uint64_t appmsg__process_id(void);

#endif
