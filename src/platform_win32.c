/*
 * The platform layer on Windows (platform.h), on Winsock 2: select() for
 * the loop (see appmsg__poll() for why not WSAPoll()), a loopback TCP pair
 * for its wake-up, console control events for its signals,
 * QueryPerformanceCounter() for its clock.
 *
 * What differs from POSIX, and why:
 * - Sockets are handles, made not inheritable (WSA_FLAG_NO_HANDLE_INHERIT)
 *   as POSIX makes them close-on-exec, and overlapped as socket() makes
 *   them (without it SO_RCVTIMEO and SO_SNDTIMEO have no effect).  An accepted socket inherits the
 *   listener's non-blocking mode; it is set explicitly anyway.
 * - There is no SIGPIPE, so nothing to suppress on send().
 * - Listeners take SO_EXCLUSIVEADDRUSE, so that no other process can bind
 *   the same port while one listens (Windows' SO_REUSEADDR would let it);
 *   there is no SO_REUSEPORT: sharing a port between listeners is -EOPNOTSUPP.
 * - There is no descriptor limit to run out of: the acceptor keeps no
 *   reserve.
 * - No Unix-domain sockets in this build: "unix:" endpoints are
 *   -EAFNOSUPPORT.
 */
#include <errno.h>
#include <limits.h>
#include <process.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"

/* ---- start-up and errors -------------------------------------------------------------- */

static INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
static int wsa_status;

static BOOL CALLBACK wsa_start(PINIT_ONCE once, PVOID param, PVOID *ctx) {
  (void)once;
  (void)param;
  (void)ctx;
  WSADATA data;
  int rc = WSAStartup(MAKEWORD(2, 2), &data);
  wsa_status = rc == 0 ? 0 : -appmsg__errno_from_wsa(rc);
  return TRUE;
}

int appmsg__net_start(void) {
  InitOnceExecuteOnce(&wsa_once, wsa_start, NULL, NULL);
  return wsa_status;
}

int appmsg__sock_errno(void) {
  return appmsg__errno_from_wsa(WSAGetLastError());
}

int appmsg__errno_from_system(int code) {
  switch (code) {
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND:
  case ERROR_INVALID_DRIVE:
    return ENOENT;
  case ERROR_ACCESS_DENIED:
  case ERROR_SHARING_VIOLATION:
  case ERROR_LOCK_VIOLATION:
    return EACCES;
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
    return ENOMEM;
  case ERROR_FILE_EXISTS:
  case ERROR_ALREADY_EXISTS:
    return EEXIST;
  case ERROR_TOO_MANY_OPEN_FILES:
    return EMFILE;
  case ERROR_FILENAME_EXCED_RANGE:
    return ENAMETOOLONG;
  case ERROR_INVALID_NAME:
  case ERROR_INVALID_PARAMETER:
    return EINVAL;
  case ERROR_DIRECTORY:
    return ENOTDIR;
  default:
    return code >= 10000 ? appmsg__errno_from_wsa(code) : EIO;
  }
}

int appmsg__sock_errno_value(int code) {
  return appmsg__errno_from_wsa(code);
}

int appmsg__gai_errno(int eai) {
  (void)eai;
  return 0; /* no EAI_SYSTEM: Winsock's getaddrinfo() returns WSA codes */
}

const char *appmsg__gai_strerror(int eai) {
  switch (eai) {
  case WSAHOST_NOT_FOUND:
    return "Name or service not known";
  case WSATRY_AGAIN:
    return "Temporary failure in name resolution";
  case WSANO_RECOVERY:
    return "Non-recoverable failure in name resolution";
  case WSANO_DATA:
    return "No address associated with hostname";
  case WSATYPE_NOT_FOUND:
    return "Servname not supported for ai_socktype";
  case WSAEAFNOSUPPORT:
    return "Address family for hostname not supported";
  case WSA_NOT_ENOUGH_MEMORY:
    return "Memory allocation failure";
  case WSAEINVAL:
    return "Invalid value for ai_flags";
  default:
    return "Unknown error in name resolution";
  }
}

int appmsg__ignore_sigpipe(void) {
  return 0;
}

/* ---- sockets -------------------------------------------------------------------------- */

int appmsg__sock_nonblock(appmsg_socket_t s, int on) {
  u_long v = on ? 1 : 0;
  return ioctlsocket(s, FIONBIO, &v) != 0 ? -appmsg__sock_errno() : 0;
}

int appmsg__sock_open(int family, int type, int protocol, appmsg_socket_t *s) {
  *s = INVALID_SOCKET;
  int rc = appmsg__net_start();
  if (rc < 0)
    return rc;
  SOCKET fd =
      WSASocketW(family, type, protocol, NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (fd == INVALID_SOCKET)
    return -appmsg__sock_errno();
  rc = appmsg__sock_nonblock(fd, 1);
  if (rc < 0) {
    closesocket(fd);
    return rc;
  }
  *s = fd;
  return 0;
}

int appmsg__sock_accept(appmsg_socket_t l, int nonblock, appmsg_socket_t *s, struct sockaddr *addr,
                        socklen_t *addrlen) {
  *s = INVALID_SOCKET;
  socklen_t room = addrlen ? *addrlen : 0;
  for (;;) {
    if (addrlen)
      *addrlen = room;
    SOCKET fd = accept(l, addr, addrlen);
    if (fd != INVALID_SOCKET) {
      (void)SetHandleInformation((HANDLE)fd, HANDLE_FLAG_INHERIT, 0);
      int rc = appmsg__sock_nonblock(fd, nonblock);
      if (rc < 0) {
        closesocket(fd);
        return rc;
      }
      *s = fd;
      return 0;
    }
    /* A connection that went away before it was taken is skipped, as POSIX's ECONNABORTED
     * is (Winsock says WSAECONNRESET; Wine says WSAENOTCONN). */
    int e = appmsg__sock_errno();
    if (e == EINTR || e == ECONNABORTED || e == ECONNRESET || e == ENOTCONN)
      continue;
    return -e;
  }
}

int appmsg__sock_dup(appmsg_socket_t s, appmsg_socket_t *out) {
  WSAPROTOCOL_INFOW info;
  *out = INVALID_SOCKET;
  if (WSADuplicateSocketW(s, GetCurrentProcessId(), &info) != 0)
    return -appmsg__sock_errno();
  SOCKET d = WSASocketW(FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, &info, 0,
                        WSA_FLAG_NO_HANDLE_INHERIT);
  if (d == INVALID_SOCKET)
    return -appmsg__sock_errno();
  *out = d;
  return 0;
}

int appmsg__can_share_port(void) {
  return 0;
}

void appmsg__sock_close(appmsg_socket_t s) {
  if (s != INVALID_SOCKET)
    closesocket(s);
}

void appmsg__sock_shutdown_write(appmsg_socket_t s) {
  (void)shutdown(s, SD_SEND);
}

int appmsg__sock_setint(appmsg_socket_t s, int level, int name, int value) {
  return setsockopt(s, level, name, (const char *)&value, sizeof value) != 0 ? -appmsg__sock_errno()
                                                                             : 0;
}

int appmsg__sock_getint(appmsg_socket_t s, int level, int name, int *value) {
  int len = sizeof *value;
  return getsockopt(s, level, name, (char *)value, &len) != 0 ? -appmsg__sock_errno() : 0;
}

int appmsg__sock_listen_opts(appmsg_socket_t s, int share) {
  if (share)
    return -EOPNOTSUPP;
  return appmsg__sock_setint(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1);
}

ssize_t appmsg__sock_send(appmsg_socket_t s, const void *buf, size_t len) {
  for (;;) {
    int n = send(s, buf, len > INT_MAX ? INT_MAX : (int)len, 0);
    if (n != SOCKET_ERROR)
      return n;
    int e = appmsg__sock_errno();
    if (e != EINTR)
      return -e;
  }
}

ssize_t appmsg__sock_recv(appmsg_socket_t s, void *buf, size_t len) {
  for (;;) {
    int n = recv(s, buf, len > INT_MAX ? INT_MAX : (int)len, 0);
    if (n == 0 && len > 0) {
      /* Wine reads a reset as an end of stream (Windows says WSAECONNRESET); WSAPoll() still
       * tells them apart: POLLERR comes with a reset only. */
      WSAPOLLFD p = {.fd = s, .events = POLLRDNORM};
      if (WSAPoll(&p, 1, 0) == 1 && (p.revents & POLLERR))
        return -ECONNRESET;
    }
    if (n != SOCKET_ERROR)
      return n;
    int e = appmsg__sock_errno();
    if (e != EINTR)
      return -e;
  }
}

ssize_t appmsg__fd_write(appmsg_socket_t s, const void *buf, size_t len) {
  (void)s;
  (void)buf;
  (void)len;
  return -ENOTSOCK;
}

int appmsg__sock_pending(appmsg_socket_t s, size_t *n) {
  u_long avail = 0;
  if (ioctlsocket(s, FIONREAD, &avail) != 0)
    return -appmsg__sock_errno();
  *n = avail;
  return 0;
}

/* A socket set of any size: Winsock's fd_set is a count and an array, FD_SETSIZE only the
 * default length of that array, so a longer one is made the same way (as libevent does). */
struct set {
  u_int count;
  SOCKET sock[];
};

/* This thread's three sets, grown to the largest call so far (libc's allocator: a loop's
 * thread keeps them until it ends). */
static _Thread_local struct set *sets[3];
static _Thread_local size_t sets_cap;

static int sets_reserve(size_t n) {
  if (n <= sets_cap)
    return 0;
  for (int i = 0; i < 3; i++) {
    struct set *t = realloc(sets[i], sizeof(struct set) + n * sizeof(SOCKET));
    if (t == NULL)
      return -ENOMEM;
    sets[i] = t;
  }
  sets_cap = n;
  return 0;
}

/* Marks revents with bit for the sockets in set (what select() left in it).  select() keeps
 * the sockets of a set in the order they were given, so one walk finds them; a set in any
 * other order is matched one by one. */
static void mark(struct pollfd *fds, size_t n, const struct set *set, short bit) {
  u_int k = 0;
  for (size_t i = 0; i < n && k < set->count; i++)
    if (fds[i].fd == set->sock[k]) {
      fds[i].revents |= bit;
      k++;
    }
  for (; k < set->count; k++)
    for (size_t i = 0; i < n; i++)
      if (fds[i].fd == set->sock[k])
        fds[i].revents |= bit;
}

/*
 * poll() on select().  WSAPoll() is not used: it reports POLLHUP, whatever was asked, as soon
 * as the peer has finished sending (a half-close: the socket can still be written), so a
 * loop waiting for room to write to such a peer would be woken again and again; and before
 * Windows 10 2004 it does not report a failed non-blocking connect at all.  select() reports
 * an end of stream or a reset as readable (the read says which), as POSIX does, and a failed
 * connect in its exception set (POLLERR here).  No hang-up is reported without read interest.
 */
int appmsg__poll(struct pollfd *fds, size_t n, int timeout_ms) {
  if (sets_reserve(n) < 0)
    return -ENOMEM;
  struct set *rd = sets[0], *wr = sets[1], *ex = sets[2];
  rd->count = wr->count = ex->count = 0;
  for (size_t i = 0; i < n; i++) {
    fds[i].revents = 0;
    if (fds[i].fd == INVALID_SOCKET)
      continue;
    if (fds[i].events & POLLIN)
      rd->sock[rd->count++] = fds[i].fd;
    if (fds[i].events & POLLOUT)
      wr->sock[wr->count++] = fds[i].fd;
    ex->sock[ex->count++] = fds[i].fd; /* a failed connect */
  }
  if (ex->count == 0) { /* select() refuses three empty sets */
    Sleep(timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
    return 0;
  }
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  int rc = select(0, rd->count ? (fd_set *)rd : NULL, wr->count ? (fd_set *)wr : NULL, (fd_set *)ex,
                  timeout_ms < 0 ? NULL : &tv);
  if (rc == SOCKET_ERROR)
    return -appmsg__sock_errno();
  if (rc == 0)
    return 0;
  if (rd->count)
    mark(fds, n, rd, POLLIN);
  if (wr->count)
    mark(fds, n, wr, POLLOUT);
  mark(fds, n, ex, POLLERR);
  int ready = 0;
  for (size_t i = 0; i < n; i++)
    ready += fds[i].revents != 0;
  return ready;
}

int appmsg__reserve_open(appmsg_socket_t *r) {
  *r = INVALID_SOCKET;
  return 0;
}

void appmsg__reserve_close(appmsg_socket_t r) {
  (void)r;
}

int appmsg__reserve_needed(void) {
  return 0;
}

/* ---- Unix-domain sockets: not in this build ------------------------------------------- */

size_t appmsg__unix_path_max(void) {
  return 107;
}

int appmsg__unix_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len) {
  (void)path;
  (void)ss;
  (void)len;
  return -EAFNOSUPPORT;
}

int appmsg__unix_clear_stale(const struct sockaddr_storage *ss, socklen_t len, const char **why) {
  (void)ss;
  (void)len;
  (void)why;
  return 0;
}

int appmsg__unix_format(const struct sockaddr *addr, socklen_t len, char *buf, size_t cap) {
  (void)addr;
  (void)len;
  int n = snprintf(buf, cap, "unix:");
  return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int appmsg__file_identity(const char *path, uint64_t id[2]) {
  (void)path;
  (void)id;
  return -ENOSYS;
}

void appmsg__unix_unlink(const char *path) {
  (void)path;
}

/* ---- the loop's wake-up channel: a loopback TCP pair ---------------------------------- */

/* Whether a and b name the same address and port. */
static int same_addr(const struct sockaddr_in *a, const struct sockaddr_in *b) {
  return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

int appmsg__wakeup_open(appmsg_socket_t *rd, appmsg_socket_t *wr) {
  *rd = *wr = INVALID_SOCKET;
  SOCKET l = INVALID_SOCKET, a = INVALID_SOCKET, c = INVALID_SOCKET;
  struct sockaddr_in addr, mine, peer;
  int len = sizeof addr;
  int rc = appmsg__sock_open(AF_INET, SOCK_STREAM, 0, &l);
  if (rc < 0)
    return rc;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  rc = appmsg__sock_setint(l, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1);
  if (rc == 0 && (bind(l, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(l, 1) != 0 ||
                  getsockname(l, (struct sockaddr *)&addr, &len) != 0))
    rc = -appmsg__sock_errno();
  if (rc == 0)
    rc = appmsg__sock_open(AF_INET, SOCK_STREAM, 0, &c);
  /* The connect and accept block: both ends are this process's, on loopback. */
  if (rc == 0)
    rc = appmsg__sock_nonblock(c, 0);
  if (rc == 0 && connect(c, (struct sockaddr *)&addr, sizeof addr) != 0)
    rc = -appmsg__sock_errno();
  len = sizeof mine;
  if (rc == 0 && getsockname(c, (struct sockaddr *)&mine, &len) != 0)
    rc = -appmsg__sock_errno();
  if (rc == 0)
    rc = appmsg__sock_nonblock(l, 0);
  while (rc == 0) {
    socklen_t plen = sizeof peer;
    rc = appmsg__sock_accept(l, 1, &a, (struct sockaddr *)&peer, &plen);
    if (rc == 0 && !same_addr(&peer, &mine)) {
      closesocket(a); /* another process's connection to the port: not ours */
      a = INVALID_SOCKET;
      continue;
    }
    break;
  }
  if (rc == 0)
    rc = appmsg__sock_nonblock(c, 1);
  if (rc == 0)
    (void)appmsg__sock_setint(c, IPPROTO_TCP, TCP_NODELAY, 1);
  appmsg__sock_close(l);
  if (rc < 0) {
    appmsg__sock_close(a);
    appmsg__sock_close(c);
    return rc;
  }
  *rd = a;
  *wr = c;
  return 0;
}

int appmsg__wakeup_send(appmsg_socket_t wr, unsigned char b) {
  ssize_t n = appmsg__sock_send(wr, &b, 1);
  return n == 1 || n == -EAGAIN ? 0 : (int)n; /* (a full channel already holds a wake-up) */
}

ssize_t appmsg__wakeup_recv(appmsg_socket_t rd, unsigned char *buf, size_t len) {
  ssize_t n = appmsg__sock_recv(rd, buf, len);
  return n == -EAGAIN ? 0 : n;
}

void appmsg__wakeup_close(appmsg_socket_t rd, appmsg_socket_t wr) {
  appmsg__sock_close(rd);
  appmsg__sock_close(wr);
}

/* ---- console control events as signals ------------------------------------------------ */

static SRWLOCK sig_lock = SRWLOCK_INIT;
static SOCKET sig_fd = INVALID_SOCKET;   /* where the handler writes; under sig_lock */
static int sig_int, sig_term, sig_break; /* which of SIGINT, SIGTERM, SIGBREAK are caught */
static int sig_installed;                /* the handler is registered */
static HANDLE sig_released;              /* set when the signals are released */

/* Runs on a thread of its own, made by the system for each event. */
static BOOL WINAPI on_console_event(DWORD event) {
  int signo = 0;
  AcquireSRWLockShared(&sig_lock);
  if (event == CTRL_C_EVENT && sig_int)
    signo = SIGINT;
  else if (event == CTRL_BREAK_EVENT && sig_break)
    signo = SIGBREAK;
  else if (event != CTRL_C_EVENT && sig_term)
    signo = SIGTERM; /* Ctrl-Break, the window's close, log-off, shut-down */
  SOCKET fd = sig_fd;
  HANDLE released = sig_released;
  if (signo && fd != INVALID_SOCKET)
    (void)appmsg__wakeup_send(fd, (unsigned char)signo);
  ReleaseSRWLockShared(&sig_lock);
  if (!signo)
    return FALSE; /* the default: the process ends */
  if (event == CTRL_CLOSE_EVENT || event == CTRL_LOGOFF_EVENT || event == CTRL_SHUTDOWN_EVENT) {
    /* The system ends the process when this returns (or after about five seconds): give
     * the loop that time to drain. */
    if (released != NULL)
      WaitForSingleObject(released, 4500);
  }
  return TRUE;
}

int appmsg__signal_catchable(int signo) {
  return signo == SIGINT || signo == SIGTERM || signo == SIGBREAK || signo == SIGHUP;
}

void appmsg__signals_release(void) {
  AcquireSRWLockExclusive(&sig_lock);
  sig_fd = INVALID_SOCKET;
  sig_int = sig_term = sig_break = 0;
  if (sig_released != NULL)
    SetEvent(sig_released);
  ReleaseSRWLockExclusive(&sig_lock);
}

int appmsg__signals_catch(const int *signals, size_t n, appmsg_socket_t wr) {
  appmsg__signals_release();
  AcquireSRWLockExclusive(&sig_lock);
  int rc = 0;
  if (sig_released == NULL)
    sig_released = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (sig_released != NULL)
    ResetEvent(sig_released);
  if (!sig_installed) {
    if (SetConsoleCtrlHandler(on_console_event, TRUE))
      sig_installed = 1;
    else
      rc = -EINVAL;
  }
  if (rc == 0) {
    for (size_t i = 0; i < n; i++) {
      sig_int |= signals[i] == SIGINT;
      sig_term |= signals[i] == SIGTERM;
      sig_break |= signals[i] == SIGBREAK;
    }
    sig_fd = wr;
  }
  ReleaseSRWLockExclusive(&sig_lock);
  return rc;
}

/* ---- time, threads, the process ------------------------------------------------------- */

uint64_t appmsg__monotonic_ns(void) {
  static LARGE_INTEGER freq;
  LARGE_INTEGER now;
  if (freq.QuadPart == 0)
    QueryPerformanceFrequency(&freq); /* fixed at boot; a race writes the same value */
  QueryPerformanceCounter(&now);
  uint64_t f = (uint64_t)freq.QuadPart, c = (uint64_t)now.QuadPart;
  return c / f * 1000000000u + c % f * 1000000000u / f;
}

struct thread_start {
  void (*fn)(void *);
  void *arg;
};

static unsigned __stdcall thread_main(void *p) {
  struct thread_start t = *(struct thread_start *)p;
  free(p);
  t.fn(t.arg);
  return 0;
}

int appmsg__thread_detached(void (*fn)(void *), void *arg, size_t stack) {
  struct thread_start *t = malloc(sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  t->fn = fn;
  t->arg = arg;
  uintptr_t h = _beginthreadex(NULL, (unsigned)stack, thread_main, t, 0, NULL);
  if (h == 0) {
    free(t);
    return -EAGAIN;
  }
  CloseHandle((HANDLE)h);
  return 0;
}

int appmsg__mutex_init(appmsg__mutex *m) {
  InitializeSRWLock(m);
  return 0;
}

void appmsg__mutex_lock(appmsg__mutex *m) {
  AcquireSRWLockExclusive(m);
}

void appmsg__mutex_unlock(appmsg__mutex *m) {
  ReleaseSRWLockExclusive(m);
}

void appmsg__mutex_destroy(appmsg__mutex *m) {
  (void)m;
}

struct once_call {
  void (*fn)(void);
};

static BOOL CALLBACK once_run(PINIT_ONCE once, PVOID param, PVOID *ctx) {
  (void)once;
  (void)ctx;
  ((struct once_call *)param)->fn();
  return TRUE;
}

void appmsg__once(appmsg__once_t *once, void (*fn)(void)) {
  struct once_call call = {fn};
  InitOnceExecuteOnce(once, once_run, &call, NULL);
}

void appmsg__sleep_ms(unsigned ms) {
  Sleep(ms);
}

int appmsg__sock_pair(appmsg_socket_t sv[2]) {
  return appmsg__wakeup_open(&sv[0], &sv[1]);
}

uint64_t appmsg__process_id(void) {
  return (uint64_t)GetCurrentProcessId();
}
