/* What the example programs share (see common.h). */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "appmsg";

void prog_init(const char *name) {
  const char *slash = strrchr(name, '/');
  prog = slash ? slash + 1 : name;
}

void logf_(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n", prog, line);
}

void log_line(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  (void)level;
  logf_("%s", line);
}

/* ---- command lines ---------------------------------------------------------- */

void cli_usage_error(const struct cli *c) {
  fprintf(stderr, "usage: %s %s\n(%s --help explains every option)\n", prog, c->usage, prog);
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

static void print_help(const struct cli *c) {
  printf("usage: %s %s\n\n%s\n", prog, c->usage, c->about);
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

int send_all(int fd, const void *buf, size_t len) {
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

ssize_t recv_upto(int fd, void *buf, size_t want) {
  size_t got = 0;
  while (got < want) {
    ssize_t n = appmsg_recv(fd, (unsigned char *)buf + got, want - got);
    if (n < 0)
      return n;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
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
  int is_unix = strncmp(host, "unix:", 5) == 0;
  for (size_t i = 1; i < n && rc == 0; i++) {
    if (is_unix) {
      int fd = dup(appmsg_server_fd(appmsg_service_server(svcs[0])));
      rc = fd < 0 ? -errno : appmsg_service_listen_fd(svcs[i], fd, err, sizeof err);
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
  /* Only this thread takes SIGINT and SIGTERM (sigwait below): the workers block them. */
  sigset_t sigs, old;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  if (tls)
    sigaddset(&sigs, SIGHUP); /* a reload, for every thread at once (the context is shared) */
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
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
    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP) {
      char why[512];
      if (appmsg_tls_reload(tls, why, sizeof why) == 0)
        logf_("SIGHUP: reloaded the TLS certificate and key; connections open now keep theirs");
      else
        logf_("SIGHUP: %s; still serving with the previous certificate", why);
    }
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
  pthread_sigmask(SIG_SETMASK, &old, NULL);
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
