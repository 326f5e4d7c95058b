/* Small helpers shared by the example programs. */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appmsg/appmsg.h"

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

void usage_error(const char *usage) {
  fprintf(stderr, "usage: %s %s\n", prog, usage);
  exit(2);
}

void handle_std_options(int argc, char **argv, const char *usage, const char *const *known) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("usage: %s %s\n", prog, usage);
      exit(0);
    }
    if (!strcmp(a, "--version")) {
      printf("%s (appmsg) %s\n", prog, appmsg_version());
      exit(0);
    }
    if (!strcmp(a, "--"))
      return;
    if (a[0] == '-' && a[1] != '\0') {
      int ok = 0;
      for (const char *const *k = known; k && *k && !ok; k++)
        ok = !strncmp(a, *k, strlen(*k));
      if (!ok && !(a[1] >= '0' && a[1] <= '9')) {
        fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
        usage_error(usage);
      }
    }
  }
}

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

void host_port_args(int argc, char **argv, const char *usage, const char **host,
                    const char **port) {
  const char *pos[2] = {DEFAULT_HOST, DEFAULT_PORT};
  int npos = 0, dashdash = 0;
  for (int i = 1; i < argc; i++) {
    if (!dashdash && strcmp(argv[i], "--") == 0) {
      dashdash = 1;
      continue;
    }
    if (npos == 2)
      usage_error(usage);
    pos[npos++] = argv[i];
  }
  *host = pos[0];
  *port = pos[1];
}

void endpoint_text(const char *host, const char *port, char *buf, size_t len) {
  if (strncmp(host, "unix:", 5) == 0)
    snprintf(buf, len, "%s", host);
  else if (strchr(host, ':') != NULL && host[0] != '[')
    snprintf(buf, len, "[%s]:%s", host, port);
  else
    snprintf(buf, len, "%s:%s", host, port);
}
