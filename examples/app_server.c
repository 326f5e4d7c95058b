/*
 * app-server: the guide's application server in C.
 *
 *   app-server [options] [HOST [PORT]]     (defaults 127.0.0.1 65432)
 *
 * Answers any number of framed requests per connection, in order:
 *   text/json {"action": "search", "value": KEY} -> text/json {"result": ANSWER}
 *   any other content-type -> binary/custom-server-binary-type,
 *     "First 10 bytes of request: " + the first 10 bytes of the content.
 * A bad frame gets a text/json error reply (PROTOCOL.md 5.2), then the
 * connection is closed; a bad request gets an error reply and the
 * connection goes on.  SIGINT/SIGTERM: stop accepting, finish the replies
 * in flight, exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "appmsg/appmsg.h"
#include "appmsg/conn.h"
#include "appmsg/loop.h"
#include "appmsg/net.h"
#include "appmsg/server.h"
#include "common.h"

static const char usage[] =
    "[--data FILE] [--max-content BYTES] [--idle-timeout S] [--frame-timeout S] "
    "[--max-conns N] [-v] [HOST [PORT]]";

/* ---- the dataset: an open-addressing hash table of string -> string ---- */

struct entry {
  uint64_t hash;     /* 0 marks an empty slot */
  const char *key;   /* NUL-terminated UTF-8 */
  const char *value; /* NUL-terminated UTF-8 */
};

struct dataset {
  struct entry *slots;
  size_t mask; /* slot count - 1, a power of two minus one */
  size_t count;
  char *arena; /* owns the strings of a loaded file */
};

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a final mix */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 32;
  return h ? h : 1;
}

static int dataset_init(struct dataset *d, size_t n) {
  size_t cap = 16;
  while (cap < n * 2)
    cap *= 2;
  d->slots = calloc(cap, sizeof *d->slots);
  d->mask = cap - 1;
  d->count = 0;
  d->arena = NULL;
  return d->slots ? 0 : -ENOMEM;
}

static void dataset_put(struct dataset *d, const char *key, const char *value) {
  uint64_t h = hash_str(key);
  for (size_t i = h & d->mask;; i = (i + 1) & d->mask) {
    struct entry *e = &d->slots[i];
    if (e->hash == 0) {
      *e = (struct entry){h, key, value};
      d->count++;
      return;
    }
    if (e->hash == h && strcmp(e->key, key) == 0) {
      e->value = value; /* a later duplicate wins, as in a JSON object read by Python */
      return;
    }
  }
}

static const char *dataset_get(const struct dataset *d, const char *key) {
  uint64_t h = hash_str(key);
  for (size_t i = h & d->mask;; i = (i + 1) & d->mask) {
    const struct entry *e = &d->slots[i];
    if (e->hash == 0)
      return NULL;
    if (e->hash == h && strcmp(e->key, key) == 0)
      return e->value;
  }
}

static int dataset_builtin(struct dataset *d) {
  if (dataset_init(d, 3))
    return -ENOMEM;
  dataset_put(d, "morpheus", "Follow the white rabbit. \xf0\x9f\x90\xb0");
  dataset_put(d, "ring", "In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d");
  dataset_put(d, "\xf0\x9f\x90\xb6", "\xf0\x9f\x90\xbe Playing ball! \xf0\x9f\x8f\x90");
  return 0;
}

/* What the two passes over a dataset file need. */
struct loading {
  struct dataset *d;
  size_t members;   /* pass 1: how many */
  char bad_key[64]; /* pass 1: the first key whose value is not a string */
  char *arena;      /* pass 2: where the unescaped strings go */
  size_t used;      /* bytes of arena used */
};

static void count_entry(void *ud, const struct appmsg_json_member *m) {
  struct loading *l = ud;
  l->members++;
  if (m->type != APPMSG_JSON_STRING && !l->bad_key[0]) {
    size_t k = m->key_len < sizeof l->bad_key - 1 ? m->key_len : sizeof l->bad_key - 1;
    memcpy(l->bad_key, m->key, k); /* (still escaped: it is only for the message) */
    l->bad_key[k] = '\0';
  }
}

static void add_entry(void *ud, const struct appmsg_json_member *m) {
  struct loading *l = ud;
  char *key = l->arena + l->used;
  l->used += appmsg_json_unescape(m->key, m->key_len, key);
  l->arena[l->used++] = '\0';
  char *value = l->arena + l->used;
  l->used += appmsg_json_unescape(m->val, m->val_len, value);
  l->arena[l->used++] = '\0';
  dataset_put(l->d, key, value);
}

/* Loads a JSON object of string -> string with the library's strict
 * scanner: one pass to check and count, one to unescape every string into
 * a single arena; no tree, so a million keys cost little more than their
 * text and the table.  Prints why not and returns -1. */
static int dataset_load(struct dataset *d, const char *path) {
  size_t len = 0, cap = 1 << 16;
  char *buf = malloc(cap);
  FILE *f = fopen(path, "rb");
  if (!f || !buf) {
    logf_("cannot read dataset '%s': %s", path, strerror(errno));
    free(buf);
    if (f)
      fclose(f);
    return -1;
  }
  size_t k;
  while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
    len += k;
    if (len == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        logf_("dataset '%s': out of memory", path);
        free(buf);
        fclose(f);
        return -1;
      }
      buf = nb;
    }
  }
  fclose(f);
  struct loading l = {.d = d};
  enum appmsg_json_type top;
  size_t off;
  const char *why;
  int rc = appmsg_json_scan(buf, len, 64, &top, count_entry, &l, &off, &why);
  if (rc || top != APPMSG_JSON_OBJECT || l.bad_key[0]) {
    if (rc)
      logf_("dataset '%s' is not valid JSON: %s at byte %zu", path, why, off);
    else if (top != APPMSG_JSON_OBJECT)
      logf_("dataset '%s' must be a JSON object of string keys to string values", path);
    else
      logf_("dataset '%s': the value of '%s' is not a string", path, l.bad_key);
    free(buf);
    return -1;
  }
  /* Unescaped strings are never longer than their JSON text, plus a NUL each. */
  l.arena = malloc(len + 2 * l.members + 1);
  if (dataset_init(d, l.members) || !l.arena) {
    logf_("dataset '%s': out of memory", path);
    free(buf);
    free(l.arena);
    return -1;
  }
  appmsg_json_scan(buf, len, 64, NULL, add_entry, &l, NULL, NULL);
  free(buf);
  d->arena = l.arena; /* (its unused tail is never touched, so it costs no memory) */
  return 0;
}

static void dataset_free(struct dataset *d) {
  free(d->slots);
  free(d->arena);
}

/* ---- serving ------------------------------------------------------------ */

static struct dataset data;
static int verbose;
static struct appmsg_header json_header;   /* text/json, utf-8 */
static struct appmsg_header binary_header; /* binary/custom-server-binary-type, binary */

/* Sends {"result": TEXT} exactly as the guide's json.dumps writes it;
 * quoted straight into a stack buffer when it fits (the usual case). */
static void reply_result(struct appmsg_conn *c, const char *text) {
  size_t n = strlen(text);
  char stack[1024];
  memcpy(stack, "{\"result\": ", 11);
  size_t q = appmsg_json_quote(text, n, stack + 11, sizeof stack - 12);
  char *body = stack;
  if (q > sizeof stack - 12) { /* too long: quote again into a buffer of its size */
    body = malloc(11 + q + 1);
    if (!body) {
      appmsg_conn_abort(c, -ENOMEM);
      return;
    }
    memcpy(body, "{\"result\": ", 11);
    appmsg_json_quote(text, n, body + 11, q);
  }
  body[11 + q] = '}';
  appmsg_conn_send(c, &json_header, body, 11 + q + 1);
  if (body != stack)
    free(body);
}

static void reply_bad_request(struct appmsg_conn *c, int err, const char *reason, long long off) {
  if (verbose)
    logf_("%s: bad request: %s", appmsg_conn_peer(c), reason);
  appmsg_conn_send_error(c, err, reason, off);
}

static int is_utf8_name(const char *enc) {
  return !strcasecmp(enc, "utf-8") || !strcasecmp(enc, "utf8");
}

/* The members of a request that matter; a repeated key keeps its last
 * value, as Python's json module (and so the guide's server) does. */
struct request {
  struct appmsg_json_member action, value;
  int has_action, has_value;
};

static int key_is(const struct appmsg_json_member *m, const char *name) {
  size_t n = strlen(name);
  if (!m->key_escaped)
    return m->key_len == n && memcmp(m->key, name, n) == 0;
  char tmp[64]; /* an escaped key longer than this cannot spell a short name */
  return m->key_len <= sizeof tmp && appmsg_json_unescape(m->key, m->key_len, tmp) == n &&
         memcmp(tmp, name, n) == 0;
}

static void on_member(void *ud, const struct appmsg_json_member *m) {
  struct request *r = ud;
  if (key_is(m, "action")) {
    r->action = *m;
    r->has_action = 1;
  } else if (key_is(m, "value")) {
    r->value = *m;
    r->has_value = 1;
  }
}

/* A string member unescaped and NUL-terminated, in buf if it fits (else
 * allocated: free it when it is not buf), or NULL without memory. */
static char *member_string(const struct appmsg_json_member *m, char *buf, size_t cap) {
  char *s = m->val_len < cap ? buf : malloc(m->val_len + 1);
  if (s)
    s[appmsg_json_unescape(m->val, m->val_len, s)] = '\0';
  return s;
}

/* Reads a text/json request in one linear pass over its bytes, without
 * building a tree: a 16 MiB request costs its scan and nothing more. */
static void handle_json(struct appmsg_conn *c, const struct appmsg_header *h, const char *content,
                        size_t len) {
  char msg[512];
  if (!is_utf8_name(h->content_encoding)) {
    snprintf(msg, sizeof msg, "text/json content must be in utf-8, not '%.100s'",
             h->content_encoding); /* a cut character is made valid by the error reply */
    reply_bad_request(c, APPMSG_E_CONTENT_UTF8, msg, -1);
    return;
  }
  struct request r = {0};
  enum appmsg_json_type top;
  size_t off;
  const char *why;
  int rc = appmsg_json_scan(content, len, 64, &top, on_member, &r, &off, &why);
  if (rc) {
    snprintf(msg, sizeof msg, "request content is not valid JSON: %s at byte %zu", why, off);
    reply_bad_request(c, rc, msg, (long long)off);
    return;
  }
  if (top != APPMSG_JSON_OBJECT) {
    reply_result(c, "Error: the request must be a JSON object like "
                    "{\"action\": \"search\", \"value\": \"morpheus\"}.");
    return;
  }
  if (!r.has_action || r.action.type != APPMSG_JSON_STRING) {
    reply_result(c, "Error: the request needs an \"action\" string.");
    return;
  }
  char abuf[256], vbuf[256];
  char *action = member_string(&r.action, abuf, sizeof abuf);
  char *value = NULL;
  if (action == NULL) {
    appmsg_conn_abort(c, -ENOMEM);
  } else if (strcmp(action, "search") != 0) {
    char *text; /* the guide's wording, byte for byte, however long the action */
    if (asprintf(&text, "Error: invalid action '%s'.", action) < 0) {
      appmsg_conn_abort(c, -ENOMEM);
    } else {
      reply_result(c, text);
      free(text);
    }
  } else if (!r.has_value || r.value.type != APPMSG_JSON_STRING) {
    reply_result(c, "Error: \"search\" needs a \"value\" string.");
  } else if ((value = member_string(&r.value, vbuf, sizeof vbuf)) == NULL) {
    appmsg_conn_abort(c, -ENOMEM);
  } else {
    const char *answer = dataset_get(&data, value);
    char *text = NULL;
    if (answer)
      reply_result(c, answer);
    else if (asprintf(&text, "No match for '%s'.", value) < 0)
      appmsg_conn_abort(c, -ENOMEM);
    else
      reply_result(c, text);
    free(text);
  }
  if (action != abuf)
    free(action);
  if (value != vbuf)
    free(value);
}

static void handle_binary(struct appmsg_conn *c, const void *content, size_t len) {
  static const char prefix[] = "First 10 bytes of request: ";
  unsigned char body[sizeof prefix - 1 + 10];
  size_t k = len < 10 ? len : 10;
  memcpy(body, prefix, sizeof prefix - 1);
  memcpy(body + sizeof prefix - 1, content, k);
  appmsg_conn_send(c, &binary_header, body, sizeof prefix - 1 + k);
}

static void on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  (void)ud;
  if (strcmp(h->content_type, "text/json") == 0)
    handle_json(c, h, content, len);
  else
    handle_binary(c, content, len);
}

static void on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t offset,
                     void *ud) {
  (void)ud;
  logf_("%s: %s at stream offset %llu: %s; closing", appmsg_conn_peer(c), appmsg_errname(err),
        (unsigned long long)offset, reason ? reason : appmsg_strerror(err));
  appmsg_conn_send_error(c, err, reason, (long long)offset);
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  (void)ud;
  if (reason == APPMSG_E_TIMEOUT)
    logf_("%s: closed: timed out", appmsg_conn_peer(c));
  else if (reason == APPMSG_E_OUTPUT_FULL)
    logf_("%s: closed: it does not read its replies (output cap reached)", appmsg_conn_peer(c));
  else if (reason < 0 && reason != -ECONNRESET && reason != -EPIPE && verbose)
    logf_("%s: closed: %s", appmsg_conn_peer(c), appmsg_strerror(reason));
  else if (verbose)
    logf_("%s: closed", appmsg_conn_peer(c));
}

static void on_accept(struct appmsg_server *s, struct appmsg_conn *c, void *ud) {
  (void)s;
  (void)ud;
  if (verbose)
    logf_("accepted connection from %s", appmsg_conn_peer(c));
}

static void on_refuse(struct appmsg_server *s, int err, void *ud) {
  (void)s;
  (void)ud;
  static unsigned long count;
  if (count++ % 1000 == 0) /* rate-limited: a flood must not flood the log */
    logf_("refusing connections: %s (%lu so far)", appmsg_strerror(err), count);
}

/* ---- options --------------------------------------------------------------- */

static unsigned long parse_num(const char *opt, const char *text, unsigned long max) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text ? text : "", &end, 10);
  if (!text || !*text || *end || errno || v > max || text[0] == '-') {
    logf_("%s needs a number up to %lu, not '%s'", opt, max, text ? text : "");
    usage_error(usage);
  }
  return v;
}

/* Lets the process hold as many connections as the hard limit allows. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char **argv) {
  prog_init(argv[0]);
  static const char *const known[] = {"--data",         "--max-content",
                                      "--idle-timeout", "--frame-timeout",
                                      "--max-conns",    "-v",
                                      "--verbose",      NULL};
  handle_std_options(argc, argv, usage, known);
  struct appmsg_server_opts opts;
  appmsg_server_opts_default(&opts);
  opts.conn.idle_timeout_ms = 60000;
  opts.conn.frame_timeout_ms = 10000;
  const char *data_path = NULL, *pos[2] = {DEFAULT_HOST, DEFAULT_PORT};
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--data"))
      data_path = argv[++i] ? argv[i] : (usage_error(usage), NULL);
    else if (!strcmp(a, "--max-content"))
      opts.conn.limits.max_content_length = parse_num(a, argv[++i], 1UL << 52);
    else if (!strcmp(a, "--idle-timeout"))
      opts.conn.idle_timeout_ms = (uint32_t)parse_num(a, argv[++i], 86400) * 1000;
    else if (!strcmp(a, "--frame-timeout"))
      opts.conn.frame_timeout_ms = (uint32_t)parse_num(a, argv[++i], 86400) * 1000;
    else if (!strcmp(a, "--max-conns"))
      opts.max_conns = parse_num(a, argv[++i], 10000000);
    else if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
      verbose = 1;
    else if (npos < 2)
      pos[npos++] = a;
    else
      usage_error(usage);
  }
  if (data_path ? dataset_load(&data, data_path) : dataset_builtin(&data))
    return 1;
  appmsg_header_init(&json_header);
  appmsg_header_init(&binary_header);
  if (appmsg_header_set(&json_header, "text/json", "utf-8") ||
      appmsg_header_set(&binary_header, "binary/custom-server-binary-type", "binary"))
    return 1;
  appmsg_ignore_sigpipe();
  raise_fd_limit();

  struct appmsg_loop *loop;
  int rc = appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT);
  if (rc) {
    logf_("cannot create the event loop: %s", appmsg_strerror(rc));
    return 1;
  }
  static const struct appmsg_conn_callbacks cbs = {
      .on_message = on_message, .on_error = on_error, .on_close = on_close};
  static const struct appmsg_server_callbacks scbs = {.on_accept = on_accept,
                                                      .on_refuse = on_refuse};
  struct appmsg_server *srv;
  char err[APPMSG_NET_ERRLEN];
  rc = appmsg_server_new(&srv, loop, pos[0], pos[1], &opts, &cbs, &scbs, NULL, err, sizeof err);
  if (rc) {
    logf_("%s", err);
    if (rc == -EADDRINUSE)
      logf_("is another server already running on that port? pick another with: app-server "
            "%s PORT",
            pos[0]);
    appmsg_loop_free(loop);
    dataset_free(&data);
    return 1;
  }
  const int sigs[] = {SIGINT, SIGTERM};
  appmsg_loop_stop_on_signals(loop, sigs, 2);
  logf_("listening on %s (%zu keys, %s loop)", appmsg_server_address(srv), data.count,
        appmsg_loop_backend_name(loop));
  rc = appmsg_loop_run(loop);
  if (rc)
    logf_("event loop failed: %s", appmsg_strerror(rc));

  /* Drain: no new connections; finish what is in flight, for at most 10 s. */
  int sig = appmsg_loop_signal(loop);
  appmsg_loop_stop_on_signals(loop, NULL, 0); /* a second Ctrl-C kills at once */
  logf_("%s: finishing %zu connection(s)", sig == SIGINT ? "interrupted" : "terminated",
        appmsg_server_conn_count(srv));
  appmsg_server_drain(srv);
  uint64_t until = appmsg_loop_now(loop) + 10000;
  while (appmsg_server_conn_count(srv) > 0 && appmsg_loop_now(loop) < until)
    if (appmsg_loop_run_once(loop, 100) < 0)
      break;
  appmsg_server_free(srv);
  appmsg_loop_free(loop);
  appmsg_header_cleanup(&json_header);
  appmsg_header_cleanup(&binary_header);
  dataset_free(&data);
  logf_("bye");
  return rc ? 1 : 0;
}
