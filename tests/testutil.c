/* Helpers shared by the test suites: suite runner, strings, vectors. */
#include "testutil.h"

#include "codec_internal.h"
#include "platform.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void die(const char *what, const char *detail) {
  fprintf(stderr, "testutil: %s: %s\n", what, detail);
  exit(2);
}

static int skipped;

void tu_skip(const char *test, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("SKIP %s: ", test);
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
  skipped++;
}

int tu_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  if (skipped)
    printf("%d test(s) skipped (see SKIP above); they are not counted as checks\n", skipped);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static uint64_t mono_ns(void) {
  return appmsg__monotonic_ns();
}

appmsg_socket_t tu_refused_port(char *port, size_t len) {
  appmsg_socket_t fd;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int rc = appmsg__sock_open(AF_INET, SOCK_STREAM, 0, &fd);
  if (rc == 0 && (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
                  getsockname(fd, (struct sockaddr *)&a, &alen) != 0))
    rc = -appmsg__sock_errno();
  if (rc < 0)
    die("cannot bind a loopback port", appmsg_strerror(rc));
  snprintf(port, len, "%u", (unsigned)ntohs(a.sin_port));
  return fd;
}

void tu_close(appmsg_socket_t fd) {
  appmsg__sock_close(fd);
}

int tu_socketpair(appmsg_socket_t sv[2]) {
  return appmsg__sock_pair(sv);
}

uint64_t tu_now_ms(void) {
  return mono_ns() / 1000000u;
}

/* Nanoseconds this process has spent runnable but not running; 0 if the kernel does not say. */
static uint64_t run_delay_ns(void) {
  FILE *f = fopen("/proc/self/schedstat", "r");
  unsigned long long on_cpu = 0, queued = 0;
  if (!f)
    return 0;
  if (fscanf(f, "%llu %llu", &on_cpu, &queued) != 2)
    queued = 0;
  fclose(f);
  return queued;
}

void tu_watch_start(struct tu_watch *w) {
  w->queued_ns = run_delay_ns();
  w->wall_ns = mono_ns();
}

uint64_t tu_watch_ms(const struct tu_watch *w) {
  uint64_t wall = mono_ns() - w->wall_ns;
  uint64_t queued = run_delay_ns() - w->queued_ns;
  return (queued < wall ? wall - queued : 0) / 1000000u;
}

void tu_str_add(struct tu_str *s, const void *data, size_t n) {
  if (s->len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->len + n + 1)
      cap *= 2;
    s->p = realloc(s->p, cap);
    if (!s->p)
      die("out of memory", "");
    s->cap = cap;
  }
  memcpy(s->p + s->len, data, n);
  s->len += n;
  s->p[s->len] = '\0';
}

const void *tu_memmem(const void *hay, size_t hay_len, const void *needle, size_t n) {
  const unsigned char *h = hay;
  if (n == 0)
    return hay;
  for (size_t i = 0; i + n <= hay_len; i++)
    if (h[i] == *(const unsigned char *)needle && memcmp(h + i, needle, n) == 0)
      return h + i;
  return NULL;
}

char *tu_strndup(const char *s, size_t n) {
  char *p = malloc(n + 1);
  ck_assert_ptr_nonnull(p);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

void tu_setenv(const char *name, const char *value) {
#ifdef _WIN32
  ck_assert_int_eq(_putenv_s(name, value ? value : ""), 0); /* ("" removes it) */
#else
  ck_assert_int_eq(value ? setenv(name, value, 1) : unsetenv(name), 0);
#endif
}

void tu_sleep_ms(unsigned ms) {
  appmsg__sleep_ms(ms);
}

void tu_str_addf(struct tu_str *s, const char *fmt, ...) {
  va_list ap, again;
  va_start(ap, fmt);
  va_copy(again, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *tmp = n < 0 ? NULL : malloc((size_t)n + 1);
  if (tmp == NULL)
    die("out of memory", "");
  vsnprintf(tmp, (size_t)n + 1, fmt, again);
  va_end(again);
  tu_str_add(s, tmp, (size_t)n);
  free(tmp);
}

void tu_str_free(struct tu_str *s) {
  free(s->p);
  memset(s, 0, sizeof *s);
}

static int hexdig(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

long tu_unhex(const char *hex, unsigned char *out, size_t cap) {
  size_t n = 0;
  for (const char *p = hex; *p;) {
    if (isspace((unsigned char)*p)) {
      p++;
      continue;
    }
    int a = hexdig((unsigned char)p[0]), b = p[1] ? hexdig((unsigned char)p[1]) : -1;
    if (a < 0 || b < 0 || n >= cap)
      return -1;
    out[n++] = (unsigned char)(a << 4 | b);
    p += 2;
  }
  return (long)n;
}

unsigned char *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  struct tu_str s = {0};
  char buf[65536];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, f)) > 0)
    tu_str_add(&s, buf, k);
  fclose(f);
  if (!s.p)
    tu_str_add(&s, "", 0);
  *len = s.len;
  return (unsigned char *)s.p;
}

/* The escapes of `str` lines: \\ \n \r \t \xNN. */
static void add_escaped(struct tu_str *s, const char *text, const char *path) {
  for (const char *p = text; *p; p++) {
    if (*p != '\\') {
      tu_str_add(s, p, 1);
      continue;
    }
    p++;
    char c;
    switch (*p) {
    case '\\':
      c = '\\';
      break;
    case 'n':
      c = '\n';
      break;
    case 'r':
      c = '\r';
      break;
    case 't':
      c = '\t';
      break;
    case 'x': {
      int a = hexdig((unsigned char)p[1]), b = a >= 0 ? hexdig((unsigned char)p[2]) : -1;
      if (a < 0 || b < 0)
        die("bad \\x escape", path);
      c = (char)(a << 4 | b);
      p += 2;
      break;
    }
    default:
      die("bad escape", path);
      return;
    }
    tu_str_add(s, &c, 1);
  }
}

static void add_hex(struct tu_str *s, const char *hex, const char *path) {
  size_t cap = strlen(hex) / 2 + 1;
  unsigned char *tmp = malloc(cap);
  long n = tu_unhex(hex, tmp, cap);
  if (n < 0)
    die("bad hex", path);
  tu_str_add(s, tmp, (size_t)n);
  free(tmp);
}

static void trace_hex(struct tu_str *t, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    char two[2] = {digits[p[i] >> 4], digits[p[i] & 15]};
    tu_str_add(t, two, 2);
  }
}

/* Extras are compared as compact JSON printed by one printer. */
static void trace_extra(struct tu_str *t, const char *key, const char *json) {
  cJSON *v = cJSON_Parse(json);
  char *c = v ? cJSON_PrintUnformatted(v) : NULL;
  tu_str_addf(t, "  extra %s %s\n", key, c ? c : "<bad json>");
  free(c);
  cJSON_Delete(v);
}

void tu_trace_message(struct tu_str *t, const struct appmsg_header *h, const void *content,
                      size_t len) {
  tu_str_addf(t, "message\n  byteorder %s\n  content-type ", appmsg_byteorder_name(h->byteorder));
  trace_hex(t, (const unsigned char *)h->content_type, strlen(h->content_type));
  tu_str_add(t, "\n  content-encoding ", 20);
  trace_hex(t, (const unsigned char *)h->content_encoding, strlen(h->content_encoding));
  tu_str_addf(t, "\n  content-length %llu\n", (unsigned long long)h->content_length);
  for (size_t i = 0; i < appmsg_header_extra_count(h); i++) {
    const char *k = appmsg_header_extra_key(h, i);
    char *j = appmsg_header_extra_json(h, k);
    trace_extra(t, k, j);
    free(j);
  }
  tu_str_add(t, "  content ", 10);
  trace_hex(t, content, len);
  tu_str_add(t, "\n", 1);
}

/* Expected-message fields gathered while reading a .vec file. */
struct pending {
  int open;
  struct tu_str type, enc, content, extras, check;
  char byteorder[16];
  unsigned long long length;
};

static void flush_message(struct tu_str *t, struct pending *m) {
  if (!m->open)
    return;
  tu_str_addf(t, "message\n  byteorder %s\n  content-type ", m->byteorder);
  trace_hex(t, (unsigned char *)(m->type.p ? m->type.p : ""), m->type.len);
  tu_str_add(t, "\n  content-encoding ", 20);
  trace_hex(t, (unsigned char *)(m->enc.p ? m->enc.p : ""), m->enc.len);
  tu_str_addf(t, "\n  content-length %llu\n", m->length);
  if (m->extras.p)
    tu_str_add(t, m->extras.p, m->extras.len);
  tu_str_add(t, "  content ", 10);
  trace_hex(t, (unsigned char *)(m->content.p ? m->content.p : ""), m->content.len);
  tu_str_add(t, "\n", 1);
  if (m->check.p)
    tu_str_addf(t, "  content-check %s\n", m->check.p);
  tu_str_free(&m->check);
  tu_str_free(&m->type);
  tu_str_free(&m->enc);
  tu_str_free(&m->content);
  tu_str_free(&m->extras);
  memset(m, 0, sizeof *m);
}

static void load_one(const char *path, struct tu_vec *v) {
  size_t flen;
  char *text = (char *)tu_read_file(path, &flen);
  if (!text)
    die("cannot read", path);
  memset(v, 0, sizeof *v);
  snprintf(v->path, sizeof v->path, "%s", path);
  appmsg_limits_default(&v->lim);
  v->content_depth = 64;
  struct tu_str stream = {0}, exp = {0}, checks = {0};
  struct pending m = {0};
  int ended = 0;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    if (line[strspn(line, " \t")] == '\0' || *line == '#') /* blank lines and comments */
      continue;
    char *sp = strchr(line, ' ');
    const char *arg = sp ? sp + 1 : "";
    if (sp)
      *sp = '\0';
    const char *kw = line;
    if (!strcmp(kw, "hex")) {
      add_hex(&stream, arg, path);
    } else if (!strcmp(kw, "str")) {
      add_escaped(&stream, arg, path);
    } else if (!strcmp(kw, "hdr")) {
      struct tu_str h = {0};
      add_escaped(&h, arg, path);
      unsigned char pre[2] = {(unsigned char)(h.len >> 8), (unsigned char)(h.len & 0xFF)};
      tu_str_add(&stream, pre, 2);
      if (h.len)
        tu_str_add(&stream, h.p, h.len);
      tu_str_free(&h);
    } else if (!strcmp(kw, "fill")) {
      unsigned long n;
      unsigned b;
      if (sscanf(arg, "%lu %x", &n, &b) != 2)
        die("bad fill", path);
      unsigned char c = (unsigned char)b;
      for (unsigned long k = 0; k < n; k++)
        tu_str_add(&stream, &c, 1);
    } else if (!strcmp(kw, "limit-content")) {
      v->lim.max_content_length = strtoull(arg, NULL, 10);
    } else if (!strcmp(kw, "limit-header")) {
      v->lim.max_header_length = (uint32_t)strtoul(arg, NULL, 10);
    } else if (!strcmp(kw, "limit-content-depth")) {
      v->content_depth = atoi(arg);
    } else if (!strcmp(kw, "content-check")) {
      if (!m.open)
        die("content-check outside a message", path);
      tu_str_add(&m.check, arg, strlen(arg));
      checks.p[checks.len - 1] = '1';
    } else if (!strcmp(kw, "message")) {
      flush_message(&exp, &m);
      tu_str_add(&checks, "0", 1);
      m.open = 1;
      snprintf(m.byteorder, sizeof m.byteorder, "unset");
    } else if (!strcmp(kw, "byteorder")) {
      snprintf(m.byteorder, sizeof m.byteorder, "%s", arg);
    } else if (!strcmp(kw, "content-type")) {
      add_escaped(&m.type, arg, path);
    } else if (!strcmp(kw, "content-encoding")) {
      add_escaped(&m.enc, arg, path);
    } else if (!strcmp(kw, "content-length")) {
      m.length = strtoull(arg, NULL, 10);
    } else if (!strcmp(kw, "content-hex")) {
      add_hex(&m.content, arg, path);
    } else if (!strcmp(kw, "content-str")) {
      add_escaped(&m.content, arg, path);
    } else if (!strcmp(kw, "extra")) {
      const char *sp2 = strchr(arg, ' ');
      if (!sp2)
        die("bad extra", path);
      char key[256];
      snprintf(key, sizeof key, "%.*s", (int)(sp2 - arg), arg);
      trace_extra(&m.extras, key, sp2 + 1);
    } else if (!strcmp(kw, "error")) {
      flush_message(&exp, &m);
      char name[64];
      unsigned long long off;
      if (sscanf(arg, "%63s %llu", name, &off) != 2 || appmsg_errcode(name) == 0)
        die("bad error line", path);
      tu_str_addf(&exp, "error %s %llu\n", name, off);
      ended = 1;
    } else if (!strcmp(kw, "end")) {
      flush_message(&exp, &m);
    } else {
      die("unknown directive", kw);
    }
  }
  flush_message(&exp, &m);
  if (!ended)
    tu_str_add(&exp, "end\n", 4);
  if (!stream.p)
    tu_str_add(&stream, "", 0);
  v->stream = (unsigned char *)stream.p;
  v->len = stream.len;
  v->expect = exp.p;
  if (!checks.p)
    tu_str_add(&checks, "", 0);
  v->checks = checks.p;
  free(text);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk(const char *dir, struct tu_str *paths) {
  DIR *d = opendir(dir);
  if (d == NULL)
    die("cannot list", dir);
  char **names = NULL;
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.')
      continue;
    names = realloc(names, (n + 1) * sizeof *names);
    if (names == NULL || (names[n] = strdup(e->d_name)) == NULL)
      die("out of memory", dir);
    n++;
  }
  closedir(d);
  qsort(names, n, sizeof *names, by_name); /* the same order on every system */
  for (size_t i = 0; i < n; i++) {
    const char *name = names[i];
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    size_t nl = strlen(name);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
      walk(path, paths);
    else if (nl > 4 && !strcmp(name + nl - 4, ".vec"))
      tu_str_addf(paths, "%s\n", path);
    free(names[i]);
  }
  free(names);
}

size_t tu_load_vectors(const char *dir, struct tu_vec **out) {
  struct tu_str paths = {0};
  walk(dir, &paths);
  size_t n = 0, cap = 0;
  struct tu_vec *v = NULL;
  for (char *p = paths.p, *nl; p && *p; p = nl + 1) {
    nl = strchr(p, '\n');
    *nl = '\0';
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      v = realloc(v, cap * sizeof *v);
    }
    load_one(p, &v[n++]);
  }
  tu_str_free(&paths);
  *out = v;
  return n;
}

void tu_free_vectors(struct tu_vec *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].stream);
    free(v[i].expect);
    free(v[i].checks);
  }
  free(v);
}

int tu_fast_path = 1;

char *tu_decode_trace(const struct tu_vec *v, const size_t *cuts, size_t ncuts) {
  struct appmsg_decoder d;
  struct tu_str t = {0};
  if (appmsg_decoder_init(&d, &v->lim) != 0)
    die("bad limits", v->path);
  appmsg__decoder_set_fast_path(&d, tu_fast_path);
  size_t start = 0, nmsg = 0;
  int failed = 0;
  for (size_t c = 0; c <= ncuts && !failed; c++) {
    size_t end = c < ncuts ? cuts[c] : v->len;
    size_t off = start;
    while (off < end) {
      size_t used;
      enum appmsg_status st = appmsg_decoder_feed(&d, v->stream + off, end - off, &used);
      if (used > end - off || (st == APPMSG_NEED_MORE && used != end - off))
        die("feed consumed the wrong number of bytes", v->path);
      off += used;
      if (st == APPMSG_MESSAGE) {
        size_t len;
        const void *content = appmsg_decoder_content(&d, &len);
        tu_trace_message(&t, appmsg_decoder_header(&d), content, len);
        if (v->checks[nmsg] == '1') { /* the content check of PROTOCOL.md 3.2 */
          size_t eoff = 0;
          int rc = appmsg_json_check(content, len, v->content_depth, &eoff, NULL);
          if (rc == 0)
            tu_str_add(&t, "  content-check ok\n", 19);
          else
            tu_str_addf(&t, "  content-check %s %zu\n", appmsg_errname(rc), eoff);
        }
        if (v->checks[nmsg] != '\0')
          nmsg++;
      } else if (st == APPMSG_ERROR) {
        tu_str_addf(&t, "error %s %llu\n", appmsg_errname(appmsg_decoder_error(&d)),
                    (unsigned long long)appmsg_decoder_error_offset(&d));
        if (appmsg_decoder_reason(&d) == NULL)
          tu_str_add(&t, "(no reason)\n", 12);
        failed = 1;
        break;
      }
    }
    start = end;
  }
  if (!failed) {
    int rc = appmsg_decoder_finish(&d);
    if (rc == 0)
      tu_str_add(&t, "end\n", 4);
    else
      tu_str_addf(&t, "error %s %llu\n", appmsg_errname(rc),
                  (unsigned long long)appmsg_decoder_error_offset(&d));
  }
  appmsg_decoder_cleanup(&d);
  return t.p;
}
