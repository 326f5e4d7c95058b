/* What the example programs share (see common.h). */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- what differs on Windows (see common.h) ---------------------------------------- */

#ifdef _WIN32
#include <direct.h>
#include <io.h>
#include <windows.h>
#include <shellapi.h> /* (after windows.h, whose types it uses) */
#else
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#ifdef APPMSG_EXAMPLES_NO_TLS /* the library was built without TLS (always so on Windows) */
static const char *const tls_absent = "TLS: not in this build (built without OpenSSL)";
#else
static const char *const tls_absent = NULL;
#endif

#ifdef _WIN32

void wall_clock_utc(struct tm *tm, int *ms) {
  FILETIME ft;
  GetSystemTimeAsFileTime(&ft); /* 100 ns units since 1601 */
  uint64_t t = ((uint64_t)ft.dwHighDateTime << 32 | ft.dwLowDateTime) / 10000 - 11644473600000ULL;
  time_t secs = (time_t)(t / 1000);
  *ms = (int)(t % 1000);
  gmtime_s(tm, &secs);
}

const char *prog_name(const char *argv0) {
  static char name[256];
  const char *base = argv0;
  for (const char *p = argv0; *p; p++)
    if (*p == '/' || *p == '\\' || *p == ':')
      base = p + 1;
  snprintf(name, sizeof name, "%s", base);
  size_t n = strlen(name);
  if (n > 4 && _stricmp(name + n - 4, ".exe") == 0)
    name[n - 4] = '\0';
  return name;
}

void sock_close(appmsg_socket_t s) {
  if (s != APPMSG_INVALID_SOCKET)
    closesocket(s);
}

int is_terminal(int fd) {
  return _isatty(fd) != 0;
}

const char *home_dir(void) {
  const char *h = getenv("USERPROFILE");
  return h && *h ? h : getenv("HOME");
}

int make_dir(const char *path) {
  return _mkdir(path) == 0 || errno == EEXIST ? 0 : -errno;
}

int wait_readable(appmsg_socket_t s, int timeout_ms) {
  WSAPOLLFD p = {.fd = s, .events = POLLRDNORM};
  int n = WSAPoll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
  return n > 0 ? 1 : n == 0 ? 0 : -EIO;
}

long cpu_count(void) {
  SYSTEM_INFO si;
  GetSystemInfo(&si); /* (the processors of this process's group: at most 64) */
  return si.dwNumberOfProcessors > 0 ? (long)si.dwNumberOfProcessors : 1;
}

void raise_fd_limit(void) {
  /* Windows counts no sockets against a descriptor limit: nothing to raise. */
}

/* Why the stdin thread stopped reading early: an errno value, 0 if it did not. */
static volatile LONG pump_errno;

/* The stdin thread: copies stdin into the writing end of the pair until the end of the
 * input, then closes it; the reading end then reads 0 (or -pump_errno, see stdin_read()). */
static void *pump_stdin(void *arg) {
  appmsg_socket_t wr = (appmsg_socket_t)(uintptr_t)arg;
  static char buf[65536];
  for (;;) {
    int n = _read(0, buf, sizeof buf); /* text mode: CR LF read as LF, as lines are */
    if (n < 0)
      InterlockedExchange(&pump_errno, errno ? errno : EIO);
    if (n <= 0 || send_all(wr, buf, (size_t)n) < 0)
      break; /* the end of the input, a read error, or the reading end is closed */
  }
  closesocket(wr);
  return NULL;
}

int stdin_open(appmsg_socket_t *fd) {
  appmsg_socket_t l, wr = APPMSG_INVALID_SOCKET, rd = APPMSG_INVALID_SOCKET;
  char port[16], mine[APPMSG_ADDRSTRLEN], who[APPMSG_ADDRSTRLEN];
  *fd = APPMSG_INVALID_SOCKET;
  int rc = appmsg_listen("127.0.0.1", "0", 1, &l, NULL, 0);
  if (rc < 0)
    return rc;
  if ((rc = appmsg_sockport(l)) > 0) {
    snprintf(port, sizeof port, "%d", rc);
    rc = appmsg_connect_timeout("127.0.0.1", port, 5000, &wr, NULL, 0); /* blocking */
  }
  if (rc == 0 && (rc = appmsg_sockname(wr, mine, sizeof mine)) > 0)
    rc = appmsg_set_nonblock(l, 0); /* the accept waits: the connect is done, it is queued */
  while (rc == 0) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    rc = appmsg_accept_peer(l, &rd, (struct sockaddr *)&peer, &plen);
    if (rc < 0 || (appmsg_addr_format((struct sockaddr *)&peer, plen, who, sizeof who) > 0 &&
                   strcmp(who, mine) == 0))
      break;
    closesocket(rd); /* another process's connection to the port: not ours */
    rd = APPMSG_INVALID_SOCKET;
  }
  closesocket(l);
  pthread_t t;
  if (rc == 0) {
    appmsg_set_nodelay(wr, 1); /* each line as soon as it is read */
    if (pthread_create(&t, NULL, pump_stdin, (void *)(uintptr_t)wr) != 0)
      rc = -EAGAIN;
  }
  if (rc < 0) {
    sock_close(wr);
    sock_close(rd);
    return rc;
  }
  pthread_detach(t);
  *fd = rd;
  return 0;
}

ssize_t stdin_read(appmsg_socket_t fd, void *buf, size_t len) {
  ssize_t n = appmsg_recv(fd, buf, len);
  LONG e = InterlockedCompareExchange(&pump_errno, 0, 0);
  return n == 0 && e != 0 ? -(ssize_t)e : n;
}

void stdin_close(appmsg_socket_t fd) {
  sock_close(fd);
}

/* Output in UTF-8 to a console (the answers hold emoji), its code page restored at exit. */
static UINT console_cp;

static void console_restore(void) {
  SetConsoleOutputCP(console_cp);
}

/* What prog_init() does first: the arguments in UTF-8, the console's output in UTF-8. */
static void platform_start(int *argc, char ***argv) {
  int n = 0;
  wchar_t **wide = CommandLineToArgvW(GetCommandLineW(), &n);
  char **utf8 = wide && n > 0 ? calloc((size_t)n + 1, sizeof *utf8) : NULL;
  int i = 0;
  for (; utf8 && i < n; i++) {
    int len = WideCharToMultiByte(CP_UTF8, 0, wide[i], -1, NULL, 0, NULL, NULL);
    if (len <= 0 || (utf8[i] = malloc((size_t)len)) == NULL)
      break;
    WideCharToMultiByte(CP_UTF8, 0, wide[i], -1, utf8[i], len, NULL, NULL);
  }
  if (utf8 && i == n) {
    *argc = n;
    *argv = utf8;
  } else if (utf8) { /* keep the C runtime's */
    while (i > 0)
      free(utf8[--i]);
    free(utf8);
  }
  LocalFree(wide);
  if ((_isatty(_fileno(stdout)) || _isatty(_fileno(stderr))) &&
      (console_cp = GetConsoleOutputCP()) != 0 && console_cp != CP_UTF8 &&
      SetConsoleOutputCP(CP_UTF8))
    atexit(console_restore);
}

/* serve_threads()'s wait for the end: Windows has no sigwait(), so the main thread runs a
 * loop of its own that stops on SIGINT and SIGTERM (Ctrl-C; Ctrl-Break and the console's
 * close), kept running by a timer (a loop with only its signals to wait for would return at
 * once).  There is no SIGHUP, and no TLS to reload. */
static struct appmsg_loop *stop_loop;
static struct appmsg_timer stop_keep;

static void keep_waiting(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  (void)ud;
}

static int stop_signals_begin(struct appmsg_tls *tls) {
  (void)tls;
  int rc = appmsg_loop_new(&stop_loop, APPMSG_LOOP_DEFAULT);
  if (rc == 0)
    rc = appmsg_loop_stop_on_signals(stop_loop, (const int[]){SIGINT, SIGTERM}, 2);
  if (rc == 0) {
    appmsg_timer_init(&stop_keep, keep_waiting, NULL);
    rc = appmsg_timer_start(stop_loop, &stop_keep, 86400000, 86400000);
  }
  if (rc < 0) {
    appmsg_loop_free(stop_loop);
    stop_loop = NULL;
  }
  return rc;
}

static int stop_signals_wait(void) {
  int rc = appmsg_loop_run(stop_loop);
  if (rc < 0)
    logf_("cannot wait for Ctrl-C: %s", appmsg_strerror(rc));
  appmsg_loop_stop_on_signals(stop_loop, NULL, 0); /* a second Ctrl-C ends the drain */
  return appmsg_loop_signal(stop_loop);
}

static void stop_signals_end(void) {
  appmsg_timer_stop(stop_loop, &stop_keep);
  appmsg_loop_free(stop_loop);
  stop_loop = NULL;
}

#else /* POSIX */

void wall_clock_utc(struct tm *tm, int *ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  *ms = (int)(ts.tv_nsec / 1000000);
  gmtime_r(&ts.tv_sec, tm);
}

const char *prog_name(const char *argv0) {
  const char *slash = strrchr(argv0, '/');
  return slash ? slash + 1 : argv0;
}

void sock_close(appmsg_socket_t s) {
  if (s != APPMSG_INVALID_SOCKET)
    close(s);
}

int is_terminal(int fd) {
  return isatty(fd);
}

const char *home_dir(void) {
  return getenv("HOME");
}

int make_dir(const char *path) {
  return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

int wait_readable(appmsg_socket_t s, int timeout_ms) {
  struct pollfd p = {.fd = s, .events = POLLIN};
  int n;
  do
    n = poll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
  while (n < 0 && errno == EINTR);
  return n > 0 ? 1 : n == 0 ? 0 : -errno;
}

long cpu_count(void) {
  return sysconf(_SC_NPROCESSORS_ONLN);
}

void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int stdin_open(appmsg_socket_t *fd) {
  *fd = STDIN_FILENO; /* the loop watches it as it is */
  return 0;
}

ssize_t stdin_read(appmsg_socket_t fd, void *buf, size_t len) {
  ssize_t n = read(fd, buf, len);
  return n < 0 ? -errno : n;
}

void stdin_close(appmsg_socket_t fd) {
  (void)fd; /* stdin stays open */
}

static void platform_start(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
}

/* serve_threads()'s wait for the end: only the main thread takes SIGINT and SIGTERM, with
 * sigwait(); the workers, started after stop_signals_begin(), inherit a mask that blocks
 * them.  With tls, SIGHUP reloads its certificate and key meanwhile, for every thread at
 * once (the context is shared). */
static sigset_t stop_sigs, stop_old;
static struct appmsg_tls *stop_tls;

static int stop_signals_begin(struct appmsg_tls *tls) {
  stop_tls = tls;
  sigemptyset(&stop_sigs);
  sigaddset(&stop_sigs, SIGINT);
  sigaddset(&stop_sigs, SIGTERM);
  if (tls)
    sigaddset(&stop_sigs, SIGHUP);
  return -pthread_sigmask(SIG_BLOCK, &stop_sigs, &stop_old);
}

static int stop_signals_wait(void) {
  int sig = 0;
  while (sigwait(&stop_sigs, &sig) == 0 && sig == SIGHUP) {
    char why[512];
    if (appmsg_tls_reload(stop_tls, why, sizeof why) == 0)
      logf_("SIGHUP: reloaded the TLS certificate and key; connections open now keep theirs");
    else
      logf_("SIGHUP: %s; still serving with the previous certificate", why);
  }
  return sig;
}

static void stop_signals_end(void) {
  pthread_sigmask(SIG_SETMASK, &stop_old, NULL);
}

#endif

/* ---- end of what differs on Windows ------------------------------------------------ */

static const char *prog = "appmsg";

void prog_init(int *argc, char ***argv) {
  platform_start(argc, argv);
  prog = prog_name((*argv)[0]);
}

static int log_json; /* --log-format json */

/* A log line being made: written whole, with one call, so that lines from several threads
 * never mix. */
struct line_buf {
  char p[16384];
  size_t len;
};

static void line_addf(struct line_buf *l, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void line_addf(struct line_buf *l, const char *fmt, ...) {
  if (l->len >= sizeof l->p)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(l->p + l->len, sizeof l->p - l->len, fmt, ap);
  va_end(ap);
  l->len = n < 0 ? sizeof l->p : l->len + (size_t)n;
}

/* A JSON string member ", \"key\": \"...\"" of text: at most 2048 bytes of it (a long action
 * name is cut, at a character's start), a byte that is not UTF-8 written as U+FFFD, so that
 * the line stays valid JSON whatever a program logs. */
static void json_member(struct line_buf *l, const char *key, const char *text) {
  char fixed[2048 + 4], quoted[2 * 6 * sizeof fixed];
  size_t n = strlen(text), k = 0;
  for (size_t i = 0; i < n && k < sizeof fixed - 4;) {
    size_t ok = appmsg_utf8_check(text + i, n - i), room = sizeof fixed - 4 - k;
    size_t take = ok < room ? ok : room;
    while (take < ok && take > 0 && ((unsigned char)text[i + take] & 0xc0) == 0x80)
      take--; /* (cut before a character, not inside one) */
    memcpy(fixed + k, text + i, take);
    k += take;
    i += take;
    if (take < ok)
      break;     /* no more room */
    if (i < n) { /* a byte that is not UTF-8 */
      memcpy(fixed + k, "\xef\xbf\xbd", 3);
      k += 3;
      i++;
    }
  }
  size_t q = appmsg_json_quote(fixed, k, quoted, sizeof quoted); /* (6 bytes a byte at most) */
  line_addf(l, ", \"%s\": %.*s", key, (int)q, quoted);
}

/* One log line as a JSON object: time (RFC 3339, UTC, milliseconds), level, prog, msg, and the
 * library's fields for the line (appmsg_log_fields()). */
static void log_json_line(enum appmsg_log_level level, const char *msg,
                          const struct appmsg_log_fields *f) {
  static const char *const levels[] = {"error", "warn", "info", "debug"};
  struct tm tm;
  int ms;
  wall_clock_utc(&tm, &ms);
  struct line_buf *l = malloc(sizeof *l);
  if (l == NULL)
    return;
  l->len = 0;
  line_addf(l, "{\"time\": \"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\", \"level\": \"%s\"",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms,
            levels[(unsigned)level < 4 ? level : 2]);
  json_member(l, "prog", prog);
  json_member(l, "msg", msg);
  if (f->peer)
    json_member(l, "peer", f->peer);
  if (f->action)
    json_member(l, "action", f->action);
  if (f->error)
    json_member(l, "error", f->error);
  if (f->offset >= 0)
    line_addf(l, ", \"offset\": %lld", f->offset);
  if (f->request_id && f->request_id_len < 4096) /* (JSON as received; a longer one is left out) */
    line_addf(l, ", \"request_id\": %.*s", (int)f->request_id_len, f->request_id);
  if (f->duration_s >= 0)
    line_addf(l, ", \"duration_s\": %.6f", f->duration_s);
  line_addf(l, "}\n");
  if (l->len < sizeof l->p) { /* (a line that did not fit is not written half) */
    fwrite(l->p, 1, l->len, stderr);
    fflush(stderr);
  }
  free(l);
}

void logf_(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (log_json)
    log_json_line(APPMSG_LOG_INFO, line, appmsg_log_fields());
  else
    fprintf(stderr, "%s: %s\n", prog, line);
  fflush(stderr);
}

void log_line(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  if (log_json)
    log_json_line(level, line, appmsg_log_fields());
  else
    fprintf(stderr, "%s: %s\n", prog, line);
  fflush(stderr);
}

/* ---- lines of standard input, read as a loop runs --------------------------------- */

static void on_stdin_readable(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events,
                              void *ud) {
  (void)loop;
  (void)fd;
  (void)events;
  *(int *)ud = 1;
}

/* Runs the loop until stdin is readable.  Returns 0 or the loop's error. */
static int wait_stdin(struct line_input *in) {
  if (in->plain_file)
    return 0;
  int ready = 0;
  int rc = appmsg_loop_watch(in->loop, in->fd, APPMSG_EV_READ, on_stdin_readable, &ready);
  if (rc == -EPERM) { /* a regular file */
    in->plain_file = 1;
    return 0;
  }
  if (rc)
    return rc;
  while (!ready && rc >= 0)
    rc = appmsg_loop_run_once(in->loop, -1);
  appmsg_loop_unwatch(in->loop, in->fd); /* not watched while lines are used */
  return rc < 0 ? rc : 0;
}

char *line_input_next(struct line_input *in, int *err) {
  for (;;) {
    char *p = in->buf + in->start;
    char *nl = in->len > in->start ? memchr(p, '\n', in->len - in->start) : NULL;
    if (nl || (in->eof && in->len > in->start)) {
      char *end = nl ? nl : in->buf + in->len; /* (cap > len: room for the NUL) */
      *end = '\0';
      in->start = nl ? (size_t)(nl - in->buf) + 1 : in->len;
      return p;
    }
    if (in->eof)
      return NULL;
    if (in->start > 0) { /* keep the start of a line, drop what was used */
      memmove(in->buf, p, in->len - in->start);
      in->len -= in->start;
      in->start = 0;
    }
    if (in->cap - in->len < 4096) {
      size_t cap = in->cap ? 2 * in->cap : 65536;
      char *b = realloc(in->buf, cap);
      if (b == NULL) {
        *err = -ENOMEM;
        return NULL;
      }
      in->buf = b;
      in->cap = cap;
    }
    if ((*err = wait_stdin(in)) != 0)
      return NULL;
    ssize_t n = stdin_read(in->fd, in->buf + in->len, in->cap - in->len - 1);
    if (n == -EINTR || n == -EAGAIN)
      continue;
    if (n < 0) {
      *err = (int)n;
      return NULL;
    }
    if (n == 0)
      in->eof = 1;
    in->len += (size_t)n;
  }
}

/* ---- observing a service ------------------------------------------------------ */

static struct appmsg_endpoint metrics_ep; /* --metrics, for serve() and serve_threads() */
static int metrics_on;

void observe_setup(const struct cli *c, const struct observe_args *a,
                   struct appmsg_service_opts *o) {
  if (a->log_format && strcmp(a->log_format, "json") != 0 && strcmp(a->log_format, "text") != 0) {
    logf_("--log-format is text or json, not '%s'", a->log_format);
    cli_usage_error(c);
  }
  log_json = a->log_format && strcmp(a->log_format, "json") == 0;
  o->slow_ms = (uint32_t)a->slow_ms;
  o->measure = !a->no_measure;
  struct appmsg_endpoint *ep = &metrics_ep;
  if (a->metrics && (appmsg_endpoint_parse(a->metrics, DEFAULT_HOST, "", ep) != 0 ||
                     (ep->port[0] == '\0' && strncmp(ep->host, "unix:", 5) != 0))) {
    logf_("--metrics '%s' is not an address: give host:port (127.0.0.1:9465), [v6addr]:port "
          "or :port",
          a->metrics);
    cli_usage_error(c);
  }
  metrics_on = a->metrics != NULL;
}

/* Starts the metrics endpoint on svc when --metrics asked for it: 0, or 1 after saying why. */
static int metrics_listen(struct appmsg_service *svc) {
  if (!metrics_on)
    return 0;
  char err[APPMSG_NET_ERRLEN];
  if (appmsg_service_metrics_listen(svc, metrics_ep.host, metrics_ep.port, err, sizeof err) != 0) {
    logf_("--metrics: %s", err);
    return 1;
  }
  return 0; /* (the service logs where: "metrics and status page on http://...") */
}

/* ---- command lines ---------------------------------------------------------- */

/* The program's name, and a subcommand's after it ("appmsg call"). */
static void print_prog(FILE *f, const struct cli *c) {
  fprintf(f, "%s%s%s", prog, c->command ? " " : "", c->command ? c->command : "");
}

void cli_usage_error(const struct cli *c) {
  fprintf(stderr, "usage: ");
  print_prog(stderr, c);
  fprintf(stderr, " %s\n(", c->usage);
  print_prog(stderr, c);
  fprintf(stderr, " --help explains every option)\n");
  exit(2);
}

/* Prints an indented block of lines, each prefixed. */
static void print_block(const char *text) {
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    printf("  %.*s\n", (int)n, p);
    p += n + (nl != NULL);
  }
}

/* Whether the program has the --tls options (TLS_SERVER_OPTS or TLS_CLIENT_OPTS). */
static int takes_tls(const struct cli *c) {
  for (const struct opt *o = c->opts; o && o->name; o++)
    if (strcmp(o->name, "--tls-cert") == 0)
      return 1;
  return 0;
}

static void print_help(const struct cli *c) {
  printf("usage: ");
  print_prog(stdout, c);
  printf(" %s\n\n%s\n", c->usage, c->about);
  if (c->commands) {
    printf("\ncommands:\n");
    for (const struct cli_command *k = c->commands; k->name; k++)
      printf("  %-26s %s\n", k->name, k->summary);
  }
  if (c->operands) {
    printf("\noperands:\n");
    print_block(c->operands);
  }
  printf("\noptions:\n");
  for (const struct opt *o = c->opts; o && o->name; o++) {
    char left[64];
    snprintf(left, sizeof left, "%s%c%s%s%s%s", o->short_name ? "-" : "",
             o->short_name ? o->short_name : ' ', o->short_name ? ", " : " ", o->name,
             o->metavar ? " " : "", o->metavar ? o->metavar : "");
    printf("  %-26s %s\n", o->short_name ? left : left + 2, o->help);
  }
  printf("  %-26s %s\n", "-h, --help", "show this help and exit");
  printf("  %-26s %s\n", "--version", "show the version and exit");
  if (tls_absent && takes_tls(c))
    printf("\n%s\n", tls_absent);
  printf("\nexit status:\n");
  print_block(c->exits ? c->exits : "0  success\n2  usage error");
}

/* Stores an option's value; exits 2 when it is not one. */
static void set_value(const struct cli *c, const struct opt *o, const char *v) {
  char *end = NULL;
  switch (o->type) {
  case OPT_FLAG:
    *(int *)o->dest = 1;
    return;
  case OPT_STRING:
    *(const char **)o->dest = v;
    return;
  case OPT_LIST: {
    struct opt_list *l = o->dest;
    if (l->n < OPT_LIST_MAX) {
      l->v[l->n++] = v;
      return;
    }
    logf_("%s may be given at most %d times", o->name, OPT_LIST_MAX);
    break;
  }
  case OPT_COUNT: {
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*v && *v != '-' && *end == '\0' && errno == 0 && n >= o->min && n <= o->max) {
      *(unsigned long *)o->dest = (unsigned long)n;
      return;
    }
    logf_("%s needs a whole number from %.0f to %.0f, not '%s'", o->name, o->min, o->max, v);
    break;
  }
  case OPT_SECONDS: {
    double d = strtod(v, &end);
    if (*v && end != v && *end == '\0' && d >= o->min && d <= o->max) {
      *(double *)o->dest = d;
      return;
    }
    logf_("%s needs a number of seconds from %g to %g, not '%s'", o->name, o->min, o->max, v);
    break;
  }
  }
  cli_usage_error(c);
}

/* The option arg names (with any "=VALUE" cut off), or NULL. */
static const struct opt *find_opt(const struct cli *c, const char *arg, const char **value) {
  *value = NULL;
  for (const struct opt *o = c->opts; o && o->name; o++) {
    size_t n = strlen(o->name);
    if (strncmp(arg, o->name, n) == 0 && (arg[n] == '\0' || arg[n] == '=')) {
      *value = arg[n] == '=' ? arg + n + 1 : NULL;
      return o;
    }
    if (o->short_name && arg[1] == o->short_name && arg[2] == '\0')
      return o;
  }
  return NULL;
}

int cli_parse(const struct cli *c, int argc, char **argv, const char **pos, int maxpos) {
  int npos = 0, options = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (options && strcmp(a, "--") == 0) {
      options = 0;
      continue;
    }
    if (!options || a[0] != '-' || a[1] == '\0') { /* an operand ("-" is one) */
      if (npos == maxpos) {
        logf_("too many operands ('%s')", a);
        cli_usage_error(c);
      }
      pos[npos++] = a;
      continue;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      print_help(c);
      exit(0);
    }
    if (strcmp(a, "--version") == 0) {
      printf("%s (appmsg) %s\n", prog, appmsg_version());
      if (tls_absent && takes_tls(c))
        printf("%s\n", tls_absent);
      exit(0);
    }
    const char *value;
    const struct opt *o = find_opt(c, a, &value);
    if (o == NULL) {
      logf_("unknown option '%s'", a);
      cli_usage_error(c);
    }
    if (o->type == OPT_FLAG) {
      if (value) {
        logf_("%s takes no value", o->name);
        cli_usage_error(c);
      }
    } else if (value == NULL) {
      if (i + 1 == argc) {
        logf_("%s needs a value (%s)", o->name, o->metavar);
        cli_usage_error(c);
      }
      value = argv[++i];
    }
    set_value(c, o, value);
  }
  return npos;
}

int cli_dispatch(const struct cli *c, const char *dflt, int argc, char **argv) {
  const char *a = argc > 1 ? argv[1] : NULL;
  if (a && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "--version") == 0))
    cli_parse(c, 2, argv, NULL, 0); /* (exits) */
  const struct cli_command *k = c->commands;
  if (a && a[0] != '-')
    for (; k->name && strcmp(k->name, a) != 0; k++)
      ;
  else
    for (; k->name && (dflt == NULL || strcmp(k->name, dflt) != 0); k++)
      ;
  if (k->name == NULL) {
    if (a && a[0] != '-')
      logf_("no command '%s'", a);
    cli_usage_error(c);
  }
  if (a && a[0] != '-')
    return k->run(argc - 1, argv + 1);
  argv[0] = (char *)k->name; /* the default command, given the whole command line */
  return k->run(argc, argv);
}

void host_port(const char **pos, int npos, const char **host, const char **port) {
  *host = npos > 0 ? pos[0] : DEFAULT_HOST;
  *port = npos > 1 ? pos[1] : DEFAULT_PORT;
}

/* ---- addresses, errors, clocks ------------------------------------------------- */

const char *connect_hint(int err) {
  switch (err) {
  case -ECONNREFUSED:
    return "connection refused";
  case -ETIMEDOUT:
  case APPMSG_E_TIMEOUT:
    return "timed out";
  case -EHOSTUNREACH:
  case -ENETUNREACH:
    return "no route to host";
  default:
    return appmsg_strerror(err);
  }
}

void bytes_repr(const unsigned char *p, size_t n, size_t max, char *out) {
  size_t shown = n < max ? n : max;
  int squote = memchr(p, '\'', shown) != NULL, dquote = memchr(p, '"', shown) != NULL;
  char quote = squote && !dquote ? '"' : '\'';
  char *o = out;
  *o++ = 'b';
  *o++ = quote;
  for (size_t i = 0; i < shown; i++) {
    unsigned char ch = p[i];
    if (ch == (unsigned char)quote || ch == '\\') {
      *o++ = '\\';
      *o++ = (char)ch;
    } else if (ch == '\t' || ch == '\n' || ch == '\r') {
      *o++ = '\\';
      *o++ = ch == '\t' ? 't' : ch == '\n' ? 'n' : 'r';
    } else if (ch < 0x20 || ch >= 0x7f) {
      o += sprintf(o, "\\x%02x", ch);
    } else {
      *o++ = (char)ch;
    }
  }
  *o++ = quote;
  strcpy(o, shown < n ? "..." : "");
}

void print_bytes(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    /* The well-formed UTF-8 sequence at p + i, if any: its length from its lead byte. */
    unsigned char b = p[i];
    size_t len = b < 0x80                 ? 1
                 : b >= 0xC2 && b <= 0xDF ? 2
                 : b >= 0xE0 && b <= 0xEF ? 3
                 : b >= 0xF0 && b <= 0xF4 ? 4
                                          : 0;
    if (b < 0x20 || b == 0x7f || len > n - i || appmsg_utf8_check(p + i, len) != len)
      len = 0;
    if (len) {
      fwrite(p + i, 1, len, stdout);
      i += len;
    } else {
      if (p[i] == '\n' || p[i] == '\t')
        putchar(p[i]);
      else
        printf("\\x%02x", p[i]);
      i++;
    }
  }
  putchar('\n');
}

uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int send_all(appmsg_socket_t fd, const void *buf, size_t len) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t w = appmsg_send(fd, p, len);
    if (w < 0)
      return (int)w;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

ssize_t recv_upto(appmsg_socket_t fd, void *buf, size_t want, int timeout_ms) {
  size_t got = 0;
  while (got < want) {
    int ready = timeout_ms < 0 ? 1 : wait_readable(fd, timeout_ms);
    if (ready <= 0)
      return ready == 0 ? APPMSG_E_TIMEOUT : ready;
    ssize_t n = appmsg_recv(fd, (unsigned char *)buf + got, want - got);
    if (n < 0)
      return n;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

int serve(struct appmsg_service *svc, const char *host, const char *port, const char *what,
          uint32_t drain_ms) {
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_service_listen(svc, host, port, err, sizeof err);
  if (rc) {
    logf_("%s", err);
    if (rc == -EADDRINUSE)
      logf_("is another server already running on that port? pick another with: %s %s PORT", prog,
            host);
    return 1;
  }
  logf_("listening on %s (%s)", appmsg_service_address(svc), what);
  if (metrics_listen(svc) != 0)
    return 1;
  rc = appmsg_service_run(svc, drain_ms);
  logf_("bye");
  return rc < 0 ? 1 : 0;
}

/* One thread of serve_threads(): its loop until stopped, then its drain. */
struct worker {
  struct appmsg_service *svc;
  uint32_t drain_ms;
  pthread_t thread;
};

static void *work(void *arg) {
  struct worker *w = arg;
  int rc = appmsg_loop_run(appmsg_service_loop(w->svc));
  if (rc < 0)
    logf_("event loop failed: %s", appmsg_strerror(rc));
  appmsg_service_finish(w->svc, w->drain_ms);
  return NULL;
}

int serve_threads(struct appmsg_service **svcs, size_t n, struct appmsg_tls *tls, const char *host,
                  const char *port, const char *what, uint32_t drain_ms) {
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_service_listen(svcs[0], host, port, err, sizeof err);
  if (rc) {
    logf_("%s", err);
    if (rc == -EADDRINUSE)
      logf_("is another server already running on that port? pick another with: %s %s PORT", prog,
            host);
    return 1;
  }
  /* The others on the same port: the one the first got, when port was 0. */
  const char *addr = appmsg_service_address(svcs[0]);
  char actual[16];
  snprintf(actual, sizeof actual, "%s", strrchr(addr, ':') ? strrchr(addr, ':') + 1 : port);
  /* A Unix socket, or a system that cannot spread one port's connections among several
   * listeners: every thread accepts on the first one's listener. */
  int shared = strncmp(host, "unix:", 5) == 0 || !appmsg_can_share_port();
  for (size_t i = 1; i < n && rc == 0; i++) {
    if (shared) {
      appmsg_socket_t fd;
      rc = appmsg_socket_dup(appmsg_server_fd(appmsg_service_server(svcs[0])), &fd);
      if (rc == 0)
        rc = appmsg_service_listen_fd(svcs[i], fd, err, sizeof err);
      else
        snprintf(err, sizeof err, "cannot share the listener: %s", appmsg_strerror(rc));
    } else {
      rc = appmsg_service_listen(svcs[i], host, actual, err, sizeof err);
    }
  }
  if (rc == 0)
    rc = appmsg_service_group(svcs, n);
  if (rc) {
    logf_("cannot listen with %zu threads: %s", n, rc == -ENOMEM ? "out of memory" : err);
    return 1;
  }
  if (metrics_listen(svcs[0]) != 0) /* (its loop serves the whole group's metrics) */
    return 1;
  /* Only this thread waits for SIGINT and SIGTERM: set up before the workers start. */
  if ((rc = stop_signals_begin(tls)) < 0) {
    logf_("cannot wait for SIGINT and SIGTERM: %s", appmsg_strerror(rc));
    return 1;
  }
  struct worker *w = calloc(n, sizeof *w);
  size_t started = 0;
  for (; w && started < n; started++) {
    w[started] = (struct worker){svcs[started], drain_ms, 0};
    if (pthread_create(&w[started].thread, NULL, work, &w[started]) != 0)
      break;
  }
  int status = 0, sig = 0;
  if (started < n) {
    logf_("cannot start %zu threads (%zu started)", n, started);
    status = 1;
  } else {
    logf_("listening on %s (%s, %zu threads)", appmsg_service_address(svcs[0]), what, n);
    sig = stop_signals_wait();
    struct appmsg_service_stats st;
    appmsg_service_stats_total(svcs[0], &st);
    logf_("%s: finishing %llu connection(s)", sig == SIGINT ? "interrupted" : "terminated",
          (unsigned long long)st.connections);
  }
  for (size_t i = 0; i < started; i++)
    appmsg_loop_stop_async(appmsg_service_loop(svcs[i]));
  for (size_t i = 0; i < started; i++)
    pthread_join(w[i].thread, NULL);
  free(w);
  stop_signals_end();
  logf_("bye");
  return status;
}

void endpoint_text(const char *host, const char *port, char *buf, size_t len) {
  if (strncmp(host, "unix:", 5) == 0)
    snprintf(buf, len, "%s", host);
  else if (strchr(host, ':') != NULL && host[0] != '[')
    snprintf(buf, len, "[%s]:%s", host, port);
  else
    snprintf(buf, len, "%s:%s", host, port);
}

struct appmsg_tls *tls_server_setup(const struct cli *c, const struct tls_args *a) {
  if (!a->cert && !a->key && !a->ca)
    return NULL;
  if (!a->cert || !a->key) {
    logf_("--tls-cert and --tls-key go together%s",
          a->ca ? " (and --tls-client-ca needs them)" : "");
    cli_usage_error(c);
  }
  struct appmsg_tls *tls;
  char err[512];
  if (appmsg_tls_server_new(&tls, a->cert, a->key, a->ca, err, sizeof err) != 0) {
    logf_("%s", err);
    exit(1);
  }
  return tls;
}

struct appmsg_tls *tls_client_setup(const struct cli *c, const struct tls_args *a) {
  if (!a->use) {
    if (a->ca || a->cert || a->key || a->name || a->insecure) {
      logf_("the --tls-* options need --tls");
      cli_usage_error(c);
    }
    return NULL;
  }
  if (!a->cert != !a->key) {
    logf_("--tls-cert and --tls-key go together");
    cli_usage_error(c);
  }
  if (a->insecure)
    logf_("warning: --tls-insecure: the server's certificate is not verified; anyone on the "
          "path can read and change this traffic");
  struct appmsg_tls *tls;
  char err[512];
  if (appmsg_tls_client_new(&tls, a->ca, a->cert, a->key,
                            a->insecure ? APPMSG_TLS_INSECURE_SKIP_VERIFY : 0, err,
                            sizeof err) != 0) {
    logf_("%s", err);
    exit(1);
  }
  return tls;
}
