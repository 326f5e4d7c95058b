/*
 * appmsg call: one request, its answer printed.
 *
 *   appmsg call [HOST:PORT] ACTION [key=TEXT ...] [key:=JSON ...]
 *   appmsg call [HOST:PORT] -d '{"action": ...}' | -d @FILE [--content-type TYPE]
 *
 * key=TEXT is a string member, key:=JSON any JSON value (httpie's syntax); the request is made
 * by appmsg_request_build().  -d sends content as it is: a text/json request (checked), or with
 * --content-type any bytes (a binary request).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

struct call_run {
  int json, color, verbose;
  int status;
  const struct target *t;
  const struct appmsg_client_opts *o;
};

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct call_run *run = ud;
  if (r->header == NULL) {
    report_failure(run->t, run->o, r);
    run->status = EXIT_CONN;
    return;
  }
  if (run->verbose) {
    long n = appmsg_header_write(r->header, r->len, NULL, 0);
    char *h = n > 0 ? malloc((size_t)n) : NULL;
    if (h) {
      appmsg_header_write(r->header, r->len, h, (size_t)n);
      fprintf(stderr, "< %.*s\n", (int)n, h);
      free(h);
    }
  }
  run->status = print_reply(r, run->json, run->color, stderr);
}

/* -d's value: the text itself, or @FILE's bytes (@- standard input).  Exits 2 when the file
 * cannot be read. */
static char *data_read(const struct cli *c, const char *d, size_t *len) {
  if (d[0] != '@') {
    *len = strlen(d);
    return strdup(d);
  }
  FILE *f = strcmp(d, "@-") == 0 ? stdin : fopen(d + 1, "rb");
  if (f == NULL) {
    logf_("-d %s: cannot open '%s': %s", d, d + 1, strerror(errno));
    cli_usage_error(c);
  }
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  for (size_t got = 1; buf && got > 0;) {
    if (cap - n < 4096) {
      char *b = realloc(buf, cap *= 2);
      if (b == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = b;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
  }
  int bad = buf == NULL || ferror(f);
  if (f != stdin)
    fclose(f);
  if (bad) {
    logf_("-d %s: cannot read '%s'", d, d + 1);
    free(buf);
    exit(EXIT_CONN);
  }
  *len = n;
  return buf;
}

/* --header NAME:=JSON or NAME=TEXT: the name in *key and the value as JSON text (both
 * malloc'd). */
static char *header_value(const struct cli *c, const char *h, char **key) {
  const char *eq = strchr(h, '=');
  if (eq == NULL || eq == h) {
    logf_("--header '%s': give NAME:=JSON or NAME=TEXT", h);
    cli_usage_error(c);
  }
  int json = eq[-1] == ':';
  size_t klen = (size_t)(eq - h) - (size_t)json;
  static const char *const required[] = {"byteorder", "content-type", "content-encoding",
                                         "content-length"};
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
    if (strlen(required[i]) == klen && strncmp(h, required[i], klen) == 0) {
      logf_("--header %s: the four required members are the library's to write", required[i]);
      cli_usage_error(c);
    }
  if ((*key = malloc(klen + 1)) == NULL) {
    logf_("out of memory");
    exit(1);
  }
  memcpy(*key, h, klen);
  (*key)[klen] = '\0';
  const char *v = eq + 1;
  size_t off = 0;
  const char *why = NULL;
  if (json && appmsg_json_check(v, strlen(v), 31, &off, &why) != 0) {
    logf_("--header %s is not JSON (%s at byte %zu)", h, why ? why : "invalid", off);
    cli_usage_error(c);
  }
  if (json)
    return strdup(v);
  size_t q = appmsg_json_quote(v, strlen(v), NULL, 0);
  char *s = malloc(q + 1);
  if (s) {
    appmsg_json_quote(v, strlen(v), s, q);
    s[q] = '\0';
  }
  return s;
}

int cmd_call(int argc, char **argv) {
  struct conn_args ca = {.timeout_s = 10};
  struct call_run run = {0};
  const char *data = NULL, *ctype = NULL;
  struct opt_list headers = {{0}, 0};
  const struct opt opts[] = {
      {"--data", 'd', OPT_STRING, &data, "DATA",
       "send DATA (or @FILE's bytes, @- standard input) as the request instead of ACTION", 0, 0},
      {"--content-type", 0, OPT_STRING, &ctype, "TYPE",
       "-d's content type (default text/json; any other makes a binary request)", 0, 0},
      {"--header", 0, OPT_LIST, &headers, "NAME:=JSON",
       "a header member (request-id, or any extra): NAME:=JSON, or NAME=TEXT for a string", 0, 0},
      {"--json", 0, OPT_FLAG, &run.json, NULL, "print the reply's content as one line of JSON", 0,
       0},
      {"--verbose", 'v', OPT_FLAG, &run.verbose, NULL, "show the reply's header on stderr", 0, 0},
      CONN_OPTS(ca, "give up when no answer came after SECONDS (default 10)"),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .command = "call",
      .usage = "[options] [HOST:PORT] ACTION [key=TEXT ...] [key:=JSON ...]\n"
               "       appmsg call [options] [HOST:PORT] -d DATA|@FILE [--content-type TYPE]",
      .about = "Sends one request and prints the answer: a string as text, any other result\n"
               "as indented JSON (coloured on a terminal unless NO_COLOR is set), an error\n"
               "reply as NAME: reason on stderr, binary content safely on a terminal and as\n"
               "it is into a pipe or a file.",
      .operands = "HOST:PORT  the server (host:port, [v6addr]:port, :port, unix:/path; default\n"
                  "           $APPMSG_ADDR, else 127.0.0.1:65432)\n"
                  "ACTION     the action to call (appmsg describe lists them)\n"
                  "key=TEXT   a member whose value is the string TEXT\n"
                  "key:=JSON  a member whose value is JSON: 42, true, null, [1,2], {\"a\":1},\n"
                  "           '\"text\"'",
      .exits = "0  answered\n"
               "1  the connection failed, was closed, or timed out\n"
               "2  usage error\n"
               "3  the server answered with an error reply",
      .opts = opts,
  };
  enum { MAXPOS = 1024 };
  const char **pos = calloc(MAXPOS, sizeof *pos);
  if (pos == NULL)
    return EXIT_CONN;
  int npos;
  struct target t;
  int at = parse_target(&cli, argc, argv, pos, MAXPOS, &t, &npos);
  if (ctype && !data) {
    logf_("--content-type goes with -d");
    cli_usage_error(&cli);
  }
  if (data && at < npos) {
    logf_("give ACTION and members, or -d, not both ('%s')", pos[at]);
    cli_usage_error(&cli);
  }
  if (!data && at == npos) {
    logf_("which action? (appmsg describe lists them)");
    cli_usage_error(&cli);
  }
  struct appmsg_call call = {0};
  char *body = NULL, *rid = NULL;
  struct params p;
  char err[1024];
  /* request-id goes as the call's own (replies are matched by it); the others as extras. */
  char *extras[2 * OPT_LIST_MAX + 1] = {NULL};
  int nextras = 0;
  for (int i = 0; i < headers.n; i++) {
    char *key, *value = header_value(&cli, headers.v[i], &key);
    if (strcmp(key, "request-id") == 0) {
      free(rid);
      rid = value;
      free(key);
    } else {
      extras[nextras++] = key;
      extras[nextras++] = value;
    }
  }
  call.request_id = rid;
  call.extras = nextras ? (const char *const *)extras : NULL;
  if (data) {
    body = data_read(&cli, data, &call.len);
    int is_json = ctype == NULL || strcmp(ctype, "text/json") == 0;
    enum appmsg_json_type top;
    size_t off = 0;
    const char *why = NULL;
    if (body && is_json &&
        (appmsg_json_scan(body, call.len, 64, &top, NULL, NULL, &off, &why) != 0 ||
         top != APPMSG_JSON_OBJECT)) {
      logf_("-d: a text/json request is a JSON object {\"action\": ...}%s%s (at byte %zu); "
            "give --content-type for other content",
            why ? ": " : "", why ? why : "", off);
      cli_usage_error(&cli);
    }
    call.content_type = ctype;
    call.content_encoding = is_json ? NULL : "binary";
  } else {
    int rc =
        params_parse(&p, (char *const *)pos + at + 1, (size_t)(npos - at - 1), err, sizeof err);
    if (rc == -EINVAL) {
      logf_("%s", err);
      cli_usage_error(&cli);
    }
    if (rc == 0 && (rc = request_make(pos[at], &p, &body, &call.len)) == -EINVAL) {
      logf_("'%s' cannot be an action (not valid UTF-8)", pos[at]);
      cli_usage_error(&cli);
    }
    params_free(&p);
  }
  call.content = body;
  struct appmsg_client_opts o;
  client_opts_setup(&cli, &ca, &o);
  run.t = &t;
  run.o = &o;
  run.color = use_color();
  run.status = EXIT_CONN;
  if (body == NULL)
    logf_("out of memory");
  else if (call_once(&t, &o, &call, on_reply, &run) != 0)
    run.status = EXIT_CONN;
  appmsg_tls_free(o.conn.tls);
  free(body);
  free(rid);
  for (int i = 0; i < nextras; i++)
    free(extras[i]);
  free(pos);
  return run.status;
}
