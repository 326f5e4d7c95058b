/*
 * The platform layer on POSIX systems (platform.h).  What is Linux only -
 * accept4(), pipe2(), SOCK_NONBLOCK/SOCK_CLOEXEC, MSG_NOSIGNAL,
 * SO_REUSEPORT - is used where CMake found it (platform_config.h), with
 * the POSIX way beside it: fcntl() after the call, SO_NOSIGPIPE on the
 * socket (macOS, the BSDs), or no SO_REUSEPORT at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "platform.h"
#include "platform_config.h"

/* ---- start-up and errors -------------------------------------------------------------- */

int appmsg__net_start(void) {
  return 0;
}

int appmsg__sock_errno(void) {
  return errno;
}

int appmsg__errno_from_system(int code) {
  return code;
}

int appmsg__sock_errno_value(int code) {
  return code;
}

int appmsg__gai_errno(int eai) {
  return eai == EAI_SYSTEM ? (errno ? errno : EIO) : 0;
}

const char *appmsg__gai_strerror(int eai) {
  return gai_strerror(eai);
}

int appmsg__ignore_sigpipe(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGPIPE, &sa, NULL) < 0 ? -errno : 0;
}

/* ---- sockets -------------------------------------------------------------------------- */

static int set_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  return fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0 ? -errno : 0;
}

int appmsg__sock_nonblock(appmsg_socket_t s, int on) {
  int fl = fcntl(s, F_GETFL);
  if (fl < 0)
    return -errno;
  int want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
  if (want != fl && fcntl(s, F_SETFL, want) < 0)
    return -errno;
  return 0;
}

/* What socket() and accept() leave to be done by hand: close-on-exec, non-blocking mode,
 * no SIGPIPE.  Closes fd on failure. */
static int finish_socket(int fd, int flags_done, int nonblock) {
  int rc = 0;
  if (!flags_done) {
    rc = set_cloexec(fd);
    if (rc == 0 && nonblock)
      rc = appmsg__sock_nonblock(fd, 1);
  }
#if APPMSG_HAVE_SO_NOSIGPIPE
  if (rc == 0) {
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one); /* not on Unix pairs */
  }
#endif
  if (rc < 0)
    close(fd);
  return rc;
}

int appmsg__sock_open(int family, int type, int protocol, appmsg_socket_t *s) {
  *s = -1;
#if APPMSG_HAVE_SOCK_FLAGS
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  int done = 1;
#else
  int fd = socket(family, type, protocol);
  int done = 0;
#endif
  if (fd < 0)
    return -errno;
  int rc = finish_socket(fd, done, 1);
  if (rc == 0)
    *s = fd;
  return rc;
}

int appmsg__sock_accept(appmsg_socket_t l, int nonblock, appmsg_socket_t *s, struct sockaddr *addr,
                        socklen_t *addrlen) {
  *s = -1;
  socklen_t room = addrlen ? *addrlen : 0;
  for (;;) {
    if (addrlen)
      *addrlen = room;
#if APPMSG_HAVE_ACCEPT4
    int fd = accept4(l, addr, addrlen, SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0));
    int done = 1;
#else
    int fd = accept(l, addr, addrlen);
    int done = 0;
#endif
    if (fd >= 0) {
      int rc = finish_socket(fd, done, nonblock);
      if (rc == 0)
        *s = fd;
      return rc;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

int appmsg__sock_dup(appmsg_socket_t s, appmsg_socket_t *out) {
  *out = fcntl(s, F_DUPFD_CLOEXEC, 0);
  return *out < 0 ? -errno : 0;
}

int appmsg__can_share_port(void) {
  return APPMSG_HAVE_SO_REUSEPORT;
}

void appmsg__sock_close(appmsg_socket_t s) {
  if (s >= 0)
    close(s);
}

void appmsg__sock_shutdown_write(appmsg_socket_t s) {
  (void)shutdown(s, SHUT_WR);
}

int appmsg__sock_setint(appmsg_socket_t s, int level, int name, int value) {
  return setsockopt(s, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

int appmsg__sock_getint(appmsg_socket_t s, int level, int name, int *value) {
  socklen_t len = sizeof *value;
  return getsockopt(s, level, name, value, &len) < 0 ? -errno : 0;
}

int appmsg__sock_listen_opts(appmsg_socket_t s, int share) {
  (void)appmsg__sock_setint(s, SOL_SOCKET, SO_REUSEADDR, 1);
  if (!share)
    return 0;
#if APPMSG_HAVE_SO_REUSEPORT
  return appmsg__sock_setint(s, SOL_SOCKET, SO_REUSEPORT, 1);
#else
  return -EOPNOTSUPP;
#endif
}

ssize_t appmsg__sock_send(appmsg_socket_t s, const void *buf, size_t len) {
#if APPMSG_HAVE_MSG_NOSIGNAL
  const int flags = MSG_NOSIGNAL;
#else
  const int flags = 0; /* SO_NOSIGPIPE was set when the socket was made */
#endif
  for (;;) {
    ssize_t n = send(s, buf, len, flags);
    if (n >= 0)
      return n;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

ssize_t appmsg__sock_recv(appmsg_socket_t s, void *buf, size_t len) {
  for (;;) {
    ssize_t n = read(s, buf, len);
    if (n >= 0)
      return n;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

ssize_t appmsg__fd_write(appmsg_socket_t s, const void *buf, size_t len) {
  for (;;) {
    ssize_t n = write(s, buf, len);
    if (n >= 0)
      return n;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

int appmsg__sock_pending(appmsg_socket_t s, size_t *n) {
  int avail = 0;
  if (ioctl(s, FIONREAD, &avail) < 0)
    return -errno;
  *n = avail > 0 ? (size_t)avail : 0;
  return 0;
}

int appmsg__poll(struct pollfd *fds, size_t n, int timeout_ms) {
  int rc = poll(fds, (nfds_t)n, timeout_ms);
  return rc < 0 ? -errno : rc;
}

int appmsg__reserve_open(appmsg_socket_t *r) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd >= 0 && fd <= STDERR_FILENO) { /* above stdio: a zeroed acceptor never owns fd 0 */
    int high = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    close(fd);
    fd = high;
  }
  *r = fd;
  return fd < 0 ? -errno : 0;
}

void appmsg__reserve_close(appmsg_socket_t r) {
  if (r > STDERR_FILENO)
    close(r);
}

int appmsg__reserve_needed(void) {
  return 1;
}

/* ---- Unix-domain sockets -------------------------------------------------------------- */

#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

size_t appmsg__unix_path_max(void) {
  return SUN_PATH_MAX - 1;
}

int appmsg__unix_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len) {
  struct sockaddr_un *sun = (struct sockaddr_un *)ss;
  size_t n = strlen(path);
  if (n == 0)
    return -EINVAL;
  if (n >= SUN_PATH_MAX)
    return -ENAMETOOLONG;
  memset(ss, 0, sizeof *ss);
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

int appmsg__unix_clear_stale(const struct sockaddr_storage *ss, socklen_t len, const char **why) {
  const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
  if (sun->sun_path[0] == '\0')
    return 0; /* abstract: no file to remove */
  struct stat st;
  if (lstat(sun->sun_path, &st) < 0)
    return errno == ENOENT; /* vanished meanwhile: bind again */
  if (!S_ISSOCK(st.st_mode)) {
    *why = " (the file exists and is not a socket)";
    return 0;
  }
  appmsg_socket_t probe;
  if (appmsg__sock_open(AF_UNIX, SOCK_STREAM, 0, &probe) < 0)
    return 0;
  int rc = connect(probe, (const struct sockaddr *)sun, len);
  int stale = rc < 0 && errno == ECONNREFUSED;
  close(probe);
  if (!stale) {
    *why = " (a server is accepting on it)";
    return 0;
  }
  unlink(sun->sun_path);
  return 1;
}

int appmsg__unix_format(const struct sockaddr *addr, socklen_t addrlen, char *buf, size_t cap) {
  const struct sockaddr_un *sun = (const struct sockaddr_un *)addr;
  size_t off = offsetof(struct sockaddr_un, sun_path);
  int plen = addrlen > off ? (int)(addrlen - off) : 0;
  int n;
  if (plen == 0)
    n = snprintf(buf, cap, "unix:");
  else if (sun->sun_path[0] == '\0')
    n = snprintf(buf, cap, "unix:@%.*s", plen - 1, sun->sun_path + 1);
  else
    n = snprintf(buf, cap, "unix:%.*s", (int)strnlen(sun->sun_path, (size_t)plen), sun->sun_path);
  return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int appmsg__file_identity(const char *path, uint64_t id[2]) {
  struct stat st;
  if (stat(path, &st) < 0)
    return -errno;
  id[0] = (uint64_t)st.st_dev;
  id[1] = (uint64_t)st.st_ino;
  return 0;
}

void appmsg__unix_unlink(const char *path) {
  unlink(path);
}

/* ---- the loop's wake-up channel: a pipe ----------------------------------------------- */

int appmsg__wakeup_open(appmsg_socket_t *rd, appmsg_socket_t *wr) {
  int p[2];
  *rd = *wr = -1;
#if APPMSG_HAVE_PIPE2
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
    return -errno;
#else
  if (pipe(p) < 0)
    return -errno;
  for (int i = 0; i < 2; i++) {
    int rc = set_cloexec(p[i]);
    if (rc == 0)
      rc = appmsg__sock_nonblock(p[i], 1);
    if (rc < 0) {
      close(p[0]);
      close(p[1]);
      return rc;
    }
  }
#endif
  *rd = p[0];
  *wr = p[1];
  return 0;
}

int appmsg__wakeup_send(appmsg_socket_t wr, unsigned char b) {
  for (;;) {
    if (write(wr, &b, 1) == 1 || errno == EAGAIN)
      return 0; /* (a full pipe already holds a wake-up) */
    if (errno != EINTR)
      return -errno;
  }
}

ssize_t appmsg__wakeup_recv(appmsg_socket_t rd, unsigned char *buf, size_t len) {
  for (;;) {
    ssize_t n = read(rd, buf, len);
    if (n >= 0)
      return n;
    if (errno == EAGAIN)
      return 0;
    if (errno != EINTR)
      return -errno;
  }
}

void appmsg__wakeup_close(appmsg_socket_t rd, appmsg_socket_t wr) {
  if (rd >= 0)
    close(rd);
  if (wr >= 0)
    close(wr);
}

/* ---- signals: a process-wide handler writing to the wake-up channel ------------------- */

/* Signal numbers are below NSIG, which POSIX does not name (glibc hides it without
 * _GNU_SOURCE): 65 covers Linux's real-time signals, and macOS's and the BSDs' 32. */
#ifdef NSIG
#define SIG_LIMIT NSIG
#else
#define SIG_LIMIT 65
#endif

static volatile sig_atomic_t sig_fd = -1;    /* read by the handler */
static volatile pid_t sig_pid;               /* the process that set the handler up */
static struct sigaction sig_prev[SIG_LIMIT]; /* dispositions to restore */
static unsigned char sig_caught[SIG_LIMIT];  /* which of them are ours */

static void on_signal(int signo) {
  int saved = errno;
  if (getpid() != sig_pid) {
    /* A forked child without a loop of its own: do what it would have done. */
    signal(signo, SIG_DFL);
    raise(signo);
    errno = saved;
    return;
  }
  int fd = sig_fd;
  if (fd >= 0)
    (void)appmsg__wakeup_send(fd, (unsigned char)signo);
  errno = saved;
}

int appmsg__signal_catchable(int signo) {
  return signo > 0 && signo < SIG_LIMIT && signo != SIGKILL && signo != SIGSTOP;
}

void appmsg__signals_release(void) {
  for (int i = 1; i < SIG_LIMIT; i++)
    if (sig_caught[i]) {
      sigaction(i, &sig_prev[i], NULL);
      sig_caught[i] = 0;
    }
  sig_fd = -1;
}

int appmsg__signals_catch(const int *signals, size_t n, appmsg_socket_t wr) {
  appmsg__signals_release();
  sig_pid = getpid();
  sig_fd = wr;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  for (size_t i = 0; i < n; i++) {
    int signo = signals[i];
    if (sig_caught[signo])
      continue; /* named twice */
    if (sigaction(signo, &sa, &sig_prev[signo]) < 0) {
      int err = -errno;
      appmsg__signals_release();
      return err;
    }
    sig_caught[signo] = 1;
  }
  return 0;
}

/* ---- time, threads, the process ------------------------------------------------------- */

uint64_t appmsg__monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct thread_start {
  void (*fn)(void *);
  void *arg;
};

static void *thread_main(void *p) {
  struct thread_start t = *(struct thread_start *)p;
  free(p);
  t.fn(t.arg);
  return NULL;
}

int appmsg__thread_detached(void (*fn)(void *), void *arg, size_t stack) {
  /* libc's allocator: the thread frees it, whatever allocator the library was given */
  struct thread_start *t = malloc(sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  t->fn = fn;
  t->arg = arg;
  pthread_attr_t attr;
  pthread_t tid;
  sigset_t all, old;
  sigfillset(&all);
  int rc = pthread_attr_init(&attr);
  if (rc == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (stack >= (size_t)PTHREAD_STACK_MIN)
      pthread_attr_setstacksize(&attr, stack);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread starts with every signal blocked */
    rc = pthread_create(&tid, &attr, thread_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
  }
  if (rc != 0) {
    free(t);
    return -rc;
  }
  return 0;
}

int appmsg__mutex_init(appmsg__mutex *m) {
  return -pthread_mutex_init(m, NULL);
}

void appmsg__mutex_lock(appmsg__mutex *m) {
  pthread_mutex_lock(m);
}

void appmsg__mutex_unlock(appmsg__mutex *m) {
  pthread_mutex_unlock(m);
}

void appmsg__mutex_destroy(appmsg__mutex *m) {
  pthread_mutex_destroy(m);
}

void appmsg__once(appmsg__once_t *once, void (*fn)(void)) {
  pthread_once(once, fn);
}

void appmsg__sleep_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

int appmsg__sock_pair(appmsg_socket_t sv[2]) {
  int p[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) < 0)
    return -errno;
  for (int i = 0; i < 2; i++) {
    int rc = finish_socket(p[i], 0, 1);
    if (rc < 0) {
      close(p[1 - i]); /* (finish_socket() closed p[i]) */
      return rc;
    }
  }
  sv[0] = p[0];
  sv[1] = p[1];
  return 0;
}

uint64_t appmsg__process_id(void) {
  return (uint64_t)getpid();
}
