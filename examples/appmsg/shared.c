/* What the subcommands of appmsg share (see tool.h). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tool.h"

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- where, and how to connect ---------------------------------------------------------- */

int is_endpoint(const char *s) {
  if (strncmp(s, "unix:", 5) == 0)
    return 1;
  return strchr(s, '=') == NULL && strchr(s, ':') != NULL;
}

void target_set(const struct cli *c, struct target *t, const char *operand) {
  const char *text = operand, *from = "HOST:PORT";
  if (text == NULL && (text = getenv("APPMSG_ADDR")) != NULL && *text)
    from = "APPMSG_ADDR";
  else if (text == NULL || *text == '\0')
    text = DEFAULT_HOST ":" DEFAULT_PORT;
  int rc = appmsg_endpoint_parse(text, DEFAULT_HOST, DEFAULT_PORT, &t->ep);
  if (rc == 0 && strncmp(t->ep.host, "unix:", 5) != 0 && t->ep.port[0] == '\0')
    rc = -EINVAL;
  if (rc) {
    logf_("%s '%s' is not an address: give host:port, [v6addr]:port, :port or unix:/path", from,
          text);
    cli_usage_error(c);
  }
  endpoint_text(t->ep.host, t->ep.port, t->where, sizeof t->where);
}

int parse_target(const struct cli *c, int argc, char **argv, const char **pos, int maxpos,
                 struct target *t, int *npos) {
  *npos = cli_parse(c, argc, argv, pos, maxpos);
  int at = *npos > 0 && is_endpoint(pos[0]);
  if (maxpos == 1 && *npos == 1 && !at) {
    logf_("'%s' is not HOST:PORT (host:port, [v6addr]:port, :port, unix:/path)", pos[0]);
    cli_usage_error(c);
  }
  target_set(c, t, at ? pos[0] : NULL);
  return at;
}

void run_every(struct appmsg_loop *loop, struct appmsg_timer *tick, double interval_s,
               appmsg_timer_cb cb, void *ud) {
  appmsg_timer_init(tick, cb, ud);
  uint64_t ms = (uint64_t)(interval_s * 1000);
  appmsg_timer_start(loop, tick, 0, ms ? ms : 1);
  appmsg_loop_stop_on_signals(loop, (const int[]){SIGINT, SIGTERM}, 2);
  appmsg_loop_run(loop);
  appmsg_loop_stop_on_signals(loop, NULL, 0);
  appmsg_timer_stop(loop, tick);
}

void client_opts_setup(const struct cli *c, struct conn_args *a, struct appmsg_client_opts *o) {
  appmsg_client_opts_default(o);
  uint32_t ms = (uint32_t)(a->timeout_s * 1000);
  o->connect_timeout_ms = o->call_timeout_ms = ms ? ms : 1;
  o->reconnect = 0;
  o->conn.tls = tls_client_setup(c, &a->tls);
  o->conn.tls_server_name = a->tls.name;
}

static const char *const HINT = "is the server running? (set APPMSG_ADDR or give HOST:PORT)";

void failure_text(const struct target *t, const struct appmsg_client_opts *o,
                  const struct appmsg_reply *r, char *buf, size_t len) {
  double secs = o->call_timeout_ms / 1000.0;
  if (r->status == APPMSG_E_TIMEOUT ||
      (r->status == APPMSG_E_NOT_SENT && r->cause == APPMSG_E_TIMEOUT))
    snprintf(buf, len,
             "no answer from %s within %g s: is the server busy or stuck? (--timeout "
             "SECONDS)",
             t->where, secs);
  else if (r->status == APPMSG_E_NOT_SENT && r->cause < 0 && r->cause > -4096)
    snprintf(buf, len, "cannot connect to %s: %s \xe2\x80\x94 %s", t->where,
             appmsg_strerror(r->cause), HINT);
  else if (r->status == APPMSG_E_CLOSED)
    snprintf(buf, len, "the server at %s closed the connection before answering", t->where);
  else if (r->status == APPMSG_E_NOT_SENT && r->cause == APPMSG_E_ADDRESS)
    snprintf(buf, len, "%s \xe2\x80\x94 check the host name (set APPMSG_ADDR or give HOST:PORT)",
             r->reason);
  else
    snprintf(buf, len, "%s", r->reason ? r->reason : appmsg_strerror(r->status));
}

void report_failure(const struct target *t, const struct appmsg_client_opts *o,
                    const struct appmsg_reply *r) {
  char why[1024];
  failure_text(t, o, r, why, sizeof why);
  logf_("%s", why);
}

void report_refused(const struct target *t, struct appmsg_client *cl, int rc) {
  const char *why = appmsg_client_last_error(cl);
  if (rc == -EINVAL)
    logf_("the request cannot be sent: %s", appmsg_strerror(rc));
  else if (*why)
    logf_("%s \xe2\x80\x94 %s", why, HINT);
  else
    logf_("cannot send to %s: %s", t->where, appmsg_strerror(rc));
}

/* ---- one request, one reply ------------------------------------------------------------------ */

static char *dup_n(const char *s, size_t n) {
  if (s == NULL)
    return NULL;
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static char *dup_s(const char *s) {
  return s ? dup_n(s, strlen(s)) : NULL;
}
struct once {
  appmsg_call_fn cb;
  void *ud;
  int done;
};

static void on_once(const struct appmsg_reply *r, void *ud) {
  struct once *o = ud;
  o->cb(r, o->ud);
  o->done = 1;
}

int call_once(const struct target *t, const struct appmsg_client_opts *o,
              const struct appmsg_call *call, appmsg_call_fn cb, void *ud) {
  struct appmsg_loop *loop = NULL;
  struct appmsg_client *cl = NULL;
  struct once once = {cb, ud, 0};
  int rc = appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT);
  if (rc == 0)
    rc = appmsg_client_new(&cl, loop, t->ep.host, t->ep.port, o);
  if (rc) {
    logf_("cannot start: %s", appmsg_strerror(rc));
    appmsg_loop_free(loop);
    return rc;
  }
  rc = appmsg_client_send(cl, call, on_once, &once);
  if (rc)
    report_refused(t, cl, rc);
  while (rc == 0 && !once.done) {
    int lrc = appmsg_loop_run_once(loop, -1);
    if (lrc < 0) {
      logf_("event loop failed: %s", appmsg_strerror(lrc));
      rc = lrc;
    }
  }
  appmsg_client_free(cl);
  appmsg_loop_free(loop);
  return rc;
}

/* ---- requests made of words --------------------------------------------------------------- */

int params_parse(struct params *p, char *const *words, size_t n, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  if (n == 0)
    return 0;
  p->args = calloc(n, sizeof *p->args);
  p->owned = calloc(n, sizeof *p->owned);
  if (!p->args || !p->owned)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *w = words[i], *eq = strchr(w, '=');
    if (eq == NULL) {
      snprintf(err, errlen, "'%s' is neither key=TEXT nor key:=JSON", w);
      return -EINVAL;
    }
    int json = eq > w && eq[-1] == ':';
    size_t klen = (size_t)(eq - w) - (size_t)json;
    if (klen == 0) {
      snprintf(err, errlen, "'%s' has no key before '%s'", w, json ? ":=" : "=");
      return -EINVAL;
    }
    if ((p->owned[i] = dup_n(w, klen)) == NULL)
      return -ENOMEM;
    p->n = i + 1;
    if (strcmp(p->owned[i], "action") == 0) {
      snprintf(err, errlen, "'%s': the action is the word before the members, not a member", w);
      return -EINVAL;
    }
    if (appmsg_utf8_check(w, strlen(w)) != strlen(w)) {
      snprintf(err, errlen, "'%s' is not valid UTF-8", p->owned[i]);
      return -EINVAL;
    }
    const char *v = eq + 1;
    if (json) {
      size_t off = 0;
      const char *why = NULL;
      if (appmsg_json_check(v, strlen(v), 64, &off, &why) != 0) {
        snprintf(err, errlen,
                 "%s:=%s is not JSON (%s at byte %zu); write %s=TEXT for a string, or quote it: "
                 "%s:='\"...\"'",
                 p->owned[i], v, why ? why : "invalid", off, p->owned[i], p->owned[i]);
        return -EINVAL;
      }
      p->args[i] = (struct appmsg_arg)APPMSG_ARG_J(p->owned[i], v);
    } else {
      p->args[i] = (struct appmsg_arg)APPMSG_ARG_S(p->owned[i], v);
    }
  }
  return 0;
}

void params_free(struct params *p) {
  for (size_t i = 0; i < p->n; i++)
    free(p->owned[i]);
  free(p->owned);
  free(p->args);
  memset(p, 0, sizeof *p);
}

int request_make(const char *action, const struct params *p, char **body, size_t *len) {
  return appmsg_request_build(body, len, action, p->args, p->n);
}

/* ---- printing ---------------------------------------------------------------------------- */

int use_color(void) {
  const char *no = getenv("NO_COLOR");
  return is_terminal(1) && (no == NULL || *no == '\0');
}

#define C_KEY "\x1b[34;1m"
#define C_STR "\x1b[32m"
#define C_NUM "\x1b[36m"
#define C_LIT "\x1b[35m"
#define C_ERR "\x1b[31;1m"
#define C_OFF "\x1b[0m"

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The end of the string token starting at s[i] (its opening quote): the index after it. */
static size_t string_end(const char *s, size_t n, size_t i) {
  for (i++; i < n && s[i] != '"'; i++)
    if (s[i] == '\\')
      i++;
  return i < n ? i + 1 : n;
}

static size_t skip_ws(const char *s, size_t n, size_t i) {
  while (i < n && is_ws(s[i]))
    i++;
  return i;
}

static void indent(FILE *f, int depth) {
  fputc('\n', f);
  for (int d = 0; d < depth; d++)
    fputs("  ", f);
}

void print_json_pretty(FILE *f, const char *s, size_t n, int color) {
  int depth = 0;
  for (size_t i = skip_ws(s, n, 0); i < n; i = skip_ws(s, n, i)) {
    char c = s[i];
    if (c == '"') {
      size_t e = string_end(s, n, i);
      int key = skip_ws(s, n, e) < n && s[skip_ws(s, n, e)] == ':';
      fprintf(f, "%s%.*s%s", color ? (key ? C_KEY : C_STR) : "", (int)(e - i), s + i,
              color ? C_OFF : "");
      i = e;
    } else if (c == '{' || c == '[') {
      size_t next = skip_ws(s, n, i + 1);
      if (next < n && (s[next] == '}' || s[next] == ']')) {
        fprintf(f, "%c%c", c, s[next]);
        i = next + 1;
      } else {
        fputc(c, f);
        indent(f, ++depth);
        i++;
      }
    } else if (c == '}' || c == ']') {
      indent(f, --depth);
      fputc(c, f);
      i++;
    } else if (c == ',') {
      fputc(',', f);
      indent(f, depth);
      i++;
    } else if (c == ':') {
      fputs(": ", f);
      i++;
    } else { /* a number, true, false or null */
      size_t e = i;
      while (e < n && !is_ws(s[e]) && !strchr(",]}", s[e]))
        e++;
      fprintf(f, "%s%.*s%s", color ? (c == '-' || (c >= '0' && c <= '9') ? C_NUM : C_LIT) : "",
              (int)(e - i), s + i, color ? C_OFF : "");
      i = e;
    }
  }
  fputc('\n', f);
}

void print_json_line(FILE *f, const char *s, size_t n) {
  for (size_t i = skip_ws(s, n, 0); i < n; i = skip_ws(s, n, i)) {
    size_t e = s[i] == '"' ? string_end(s, n, i) : i + 1;
    fwrite(s + i, 1, e - i, f);
    i = e;
  }
  fputc('\n', f);
}

/* Binary content: on a terminal shown safely, with its type; otherwise written as it is. */
static void print_binary(const struct appmsg_reply *r) {
  if (is_terminal(1)) {
    fprintf(stderr, "(%s, %s, %zu bytes)\n", r->header->content_type,
            r->header->content_encoding ? r->header->content_encoding : "?", r->len);
    print_bytes(r->content, r->len);
  } else {
    fwrite(r->content, 1, r->len, stdout);
  }
}

/* A binary reply under --json: its header's fields and its content as a string (UTF-8) or as
 * hexadecimal digits. */
static void print_binary_json(const struct appmsg_reply *r) {
  const char *ct = r->header->content_type ? r->header->content_type : "";
  size_t q = appmsg_json_quote(ct, strlen(ct), NULL, 0);
  char *qt = malloc(q + 1);
  if (qt == NULL)
    return;
  appmsg_json_quote(ct, strlen(ct), qt, q);
  printf("{\"content-type\": %.*s, \"content-length\": %zu, ", (int)q, qt, r->len);
  free(qt);
  if (appmsg_utf8_check(r->content, r->len) == r->len) {
    size_t n = appmsg_json_quote(r->content, r->len, NULL, 0);
    char *s = malloc(n);
    if (s) {
      appmsg_json_quote(r->content, r->len, s, n);
      printf("\"content\": %.*s}\n", (int)n, s);
      free(s);
    }
  } else {
    printf("\"content-hex\": \"");
    for (size_t i = 0; i < r->len; i++)
      printf("%02x", ((const unsigned char *)r->content)[i]);
    printf("\"}\n");
  }
}

int print_reply(const struct appmsg_reply *r, int json, int color, FILE *errors) {
  int is_json = r->header->content_type && strcmp(r->header->content_type, "text/json") == 0 &&
                appmsg_json_check(r->content, r->len, 64, NULL, NULL) == 0;
  int status = r->status == APPMSG_E_ERROR_REPLY ? EXIT_ERROR_REPLY : EXIT_ANSWERED;
  if (json) {
    if (is_json)
      print_json_line(stdout, r->content, r->len);
    else
      print_binary_json(r);
  } else if (r->status == APPMSG_E_ERROR_REPLY) {
    const char *why = r->reason ? r->reason : "";
    if (strncmp(why, "Error: ", 7) == 0)
      why += 7;
    int ecolor = color && (errors == stdout || is_terminal(2));
    fprintf(errors, "%s%s%s: %s\n", ecolor ? C_ERR : "", r->error ? r->error : "ERROR",
            ecolor ? C_OFF : "", why);
  } else if (r->result) {
    puts(r->result);
  } else if (r->result_json) {
    print_json_pretty(stdout, r->result_json, r->result_json_len, color);
  } else if (is_json) {
    print_json_pretty(stdout, r->content, r->len, color);
  } else {
    print_binary(r);
  }
  fflush(stdout);
  return status;
}

/* ---- a service's description ------------------------------------------------------------- */

/* Reading describe's document with the library's scanner (the JSON was checked when it came):
 * a member of an object by key, and the elements of an array. */

struct find {
  const char *key;
  struct appmsg_json_member m;
  int found;
};

static void on_member(void *ud, const struct appmsg_json_member *m) {
  struct find *f = ud;
  char key[128];
  if (m->key_len >= sizeof key)
    return;
  key[appmsg_json_unescape(m->key, m->key_len, key)] = '\0';
  if (strcmp(key, f->key) == 0) { /* (the last one, when a key repeats) */
    f->m = *m;
    f->found = 1;
  }
}

/* The member key of the object obj[0, n): 1 and *m, or 0 (absent, or obj is no object). */
static int member(const char *obj, size_t n, const char *key, struct appmsg_json_member *m) {
  struct find f = {key, {0}, 0};
  enum appmsg_json_type top;
  if (obj == NULL || appmsg_json_scan(obj, n, 64, &top, on_member, &f, NULL, NULL) != 0 ||
      top != APPMSG_JSON_OBJECT || !f.found)
    return 0;
  *m = f.m;
  return 1;
}

/* A string member, unescaped and malloc'd, or NULL. */
static char *member_string(const char *obj, size_t n, const char *key) {
  struct appmsg_json_member m;
  if (!member(obj, n, key, &m) || m.type != APPMSG_JSON_STRING)
    return NULL;
  char *s = malloc(m.val_len + 1);
  if (s)
    s[appmsg_json_unescape(m.val, m.val_len, s)] = '\0';
  return s;
}

/* An object or array member's text: 1 and *text, *len, or 0. */
static int member_text(const char *obj, size_t n, const char *key, enum appmsg_json_type type,
                       const char **text, size_t *len) {
  struct appmsg_json_member m;
  if (!member(obj, n, key, &m) || m.type != type)
    return 0;
  *text = m.val;
  *len = m.val_len;
  return 1;
}

/* The elements of the array s[0, n) (checked JSON), each as a span, to fn; returns the count. */
static size_t array_each(const char *s, size_t n, int (*fn)(void *ud, const char *el, size_t len),
                         void *ud) {
  size_t i = skip_ws(s, n, 0), count = 0;
  if (i >= n || s[i] != '[')
    return 0;
  for (i++;;) {
    i = skip_ws(s, n, i);
    if (i >= n || s[i] == ']')
      return count;
    size_t start = i;
    for (int depth = 0; i < n; i++) {
      char c = s[i];
      if (c == '"')
        i = string_end(s, n, i) - 1;
      else if (c == '{' || c == '[')
        depth++;
      else if ((c == '}' || c == ']') && depth-- == 0)
        break;
      else if (c == ',' && depth == 0)
        break;
    }
    size_t e = i;
    while (e > start && is_ws(s[e - 1]))
      e--;
    if (fn == NULL || fn(ud, s + start, e - start) == 0)
      count++;
    if (i < n && s[i] == ',')
      i++;
  }
}

/* A schema's type: {"type": T} is T, {} is "any". */
static char *schema_type(const char *holder, size_t n) {
  const char *schema;
  size_t len;
  char *t = member_text(holder, n, "schema", APPMSG_JSON_OBJECT, &schema, &len)
                ? member_string(schema, len, "type")
                : NULL;
  return t ? t : dup_s("any");
}

static int param_parse(void *ud, const char *p, size_t n) {
  struct action_doc *a = ud;
  struct param_doc *d = &a->params[a->nparams];
  struct appmsg_json_member m;
  if ((d->name = member_string(p, n, "name")) == NULL)
    return -1;
  d->type = schema_type(p, n);
  d->summary = member_string(p, n, "summary");
  d->required = member(p, n, "required", &m) && m.type == APPMSG_JSON_TRUE;
  a->nparams++;
  return 0;
}

/* Returns 0, -EINVAL (no name: nothing was kept) or -ENOMEM. */
static int method_parse(struct action_doc *a, const char *m, size_t n) {
  struct appmsg_json_member x;
  if ((a->name = member_string(m, n, "name")) == NULL)
    return -EINVAL;
  a->summary = member_string(m, n, "summary");
  a->described = !(member(m, n, "x-described", &x) && x.type == APPMSG_JSON_FALSE);
  const char *res = NULL, *ps = NULL;
  size_t rlen = 0, plen = 0;
  if (member_text(m, n, "result", APPMSG_JSON_OBJECT, &res, &rlen))
    a->result_summary = member_string(res, rlen, "summary");
  a->result_type = res ? schema_type(res, rlen) : dup_s("any");
  size_t np = member_text(m, n, "params", APPMSG_JSON_ARRAY, &ps, &plen)
                  ? array_each(ps, plen, NULL, NULL)
                  : 0;
  if (np > 0 && (a->params = calloc(np, sizeof *a->params)) == NULL)
    return -ENOMEM;
  if (np > 0)
    array_each(ps, plen, param_parse, a);
  return 0;
}

struct methods {
  struct service_doc *d;
  int rc;
};

static int method_add(void *ud, const char *m, size_t n) {
  struct methods *ms = ud;
  int rc = method_parse(&ms->d->actions[ms->d->n], m, n);
  if (rc != -EINVAL) /* (a method without a name is skipped; nothing of it was kept) */
    ms->d->n++;
  if (rc == -ENOMEM)
    ms->rc = rc;
  return rc;
}

int service_doc_parse(struct service_doc *d, const char *json, size_t len, int one) {
  memset(d, 0, sizeof *d);
  enum appmsg_json_type top;
  if (appmsg_json_scan(json, len, 64, &top, NULL, NULL, NULL, NULL) != 0 ||
      top != APPMSG_JSON_OBJECT)
    return -EINVAL;
  if (one) {
    if ((d->actions = calloc(1, sizeof *d->actions)) == NULL)
      return -ENOMEM;
    struct methods ms = {d, 0};
    method_add(&ms, json, len);
    return d->n ? ms.rc : -EINVAL;
  }
  const char *info, *methods;
  size_t ilen, mlen;
  if (member_text(json, len, "info", APPMSG_JSON_OBJECT, &info, &ilen)) {
    d->title = member_string(info, ilen, "title");
    d->version = member_string(info, ilen, "version");
  }
  if (!member_text(json, len, "methods", APPMSG_JSON_ARRAY, &methods, &mlen))
    return -EINVAL;
  size_t n = array_each(methods, mlen, NULL, NULL);
  if (n > 0 && (d->actions = calloc(n, sizeof *d->actions)) == NULL)
    return -ENOMEM;
  struct methods ms = {d, 0};
  if (n > 0)
    array_each(methods, mlen, method_add, &ms);
  return ms.rc;
}

void service_doc_free(struct service_doc *d) {
  for (size_t i = 0; i < d->n; i++) {
    struct action_doc *a = &d->actions[i];
    for (size_t j = 0; j < a->nparams; j++) {
      free(a->params[j].name);
      free(a->params[j].type);
      free(a->params[j].summary);
    }
    free(a->params);
    free(a->name);
    free(a->summary);
    free(a->result_type);
    free(a->result_summary);
  }
  free(d->actions);
  free(d->title);
  free(d->version);
  memset(d, 0, sizeof *d);
}

const struct action_doc *service_doc_find(const struct service_doc *d, const char *name) {
  for (size_t i = 0; i < d->n; i++)
    if (strcmp(d->actions[i].name, name) == 0)
      return &d->actions[i];
  return NULL;
}

void print_action(FILE *f, const struct action_doc *a, int color) {
  fprintf(f, "%s%s%s", color ? C_KEY : "", a->name, color ? C_OFF : "");
  for (size_t j = 0; j < a->nparams; j++) {
    const struct param_doc *p = &a->params[j];
    fprintf(f, " %s%s%s%s", p->required ? "" : "[", p->name,
            strcmp(p->type, "string") == 0 ? "=TEXT" : ":=JSON", p->required ? "" : "]");
  }
  if (a->described)
    fprintf(f, " -> %s\n", a->result_type);
  else
    fprintf(f, "  (not described: its parameters are not known)\n");
  if (a->summary)
    fprintf(f, "    %s\n", a->summary);
  for (size_t j = 0; j < a->nparams; j++) {
    const struct param_doc *p = &a->params[j];
    fprintf(f, "    %-12s %-8s %-9s %s\n", p->name, p->type, p->required ? "required" : "optional",
            p->summary ? p->summary : "");
  }
  if (a->described && a->result_summary)
    fprintf(f, "    %-12s %-8s %-9s %s\n", "-> result", a->result_type, "", a->result_summary);
}
