/*
 * Reading a request (see include/appmsg/service.h): the checks made before
 * any handler runs, the action, the members a handler asks for, and the
 * connection callbacks that feed the service.
 */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec_internal.h"
#include "conn_internal.h"
#include "header_internal.h"
#include "json_internal.h"
#include "service_internal.h"

/* ---- the members of a text/json request ------------------------------------------------- */

static void collect_member(void *ud, const struct appmsg_json_member *m) {
  struct appmsg_request *r = ud;
  if (r->nmembers == r->members_cap) {
    size_t cap = r->members_cap ? 2 * r->members_cap : 8;
    struct appmsg__member *nm = appmsg__realloc(r->members, cap * sizeof *nm);
    if (nm == NULL) {
      r->members_cap = (size_t)-1; /* marks the failure; see read_json() */
      return;
    }
    r->members = nm;
    r->members_cap = cap;
  }
  if (r->members_cap != (size_t)-1)
    r->members[r->nmembers++] = (struct appmsg__member){*m, NULL};
}

/* The last member named key, or NULL. */
struct appmsg__member *appmsg__svc_member(const struct appmsg_request *r, const char *key) {
  size_t n = strlen(key);
  for (size_t i = r->nmembers; i-- > 0;)
    if (appmsg__json_key_is(&r->members[i].m, key, n))
      return &r->members[i];
  return NULL;
}

int appmsg_request_member(const struct appmsg_request *r, const char *key,
                          struct appmsg_json_member *m) {
  const struct appmsg__member *f = appmsg__svc_member(r, key);
  if (f == NULL)
    return -ENOENT;
  *m = f->m;
  return 0;
}

const char *appmsg_request_json(const struct appmsg_request *r, const char *key, size_t *len) {
  const struct appmsg__member *f = appmsg__svc_member(r, key);
  if (f == NULL)
    return NULL;
  int quoted = f->m.type == APPMSG_JSON_STRING;
  *len = f->m.val_len + 2 * (size_t)quoted;
  return f->m.val - quoted;
}

/*
 * A string member unescaped into scratch, NUL-terminated, once.  Scratch
 * is sized, the first time, for every string member at once (unescaping
 * never lengthens a string), so it never moves and the texts handed out
 * stay valid as long as the request.
 */
const char *appmsg__svc_member_text(struct appmsg_request *r, struct appmsg__member *f) {
  if (f->text)
    return f->text;
  if (r->scratch_used == 0) {
    size_t need = 0;
    for (size_t i = 0; i < r->nmembers; i++)
      if (r->members[i].m.type == APPMSG_JSON_STRING)
        need += r->members[i].m.val_len + 1;
    if (need > r->scratch_cap) {
      char *b = appmsg__malloc(need);
      if (b == NULL)
        return NULL;
      appmsg__free(r->scratch);
      r->scratch = b;
      r->scratch_cap = need;
    }
  }
  char *dst = r->scratch + r->scratch_used;
  size_t k = f->m.val_len;
  if (f->m.val_escaped)
    k = appmsg_json_unescape(f->m.val, k, dst);
  else
    memcpy(dst, f->m.val, k);
  dst[k] = '\0';
  r->scratch_used += k + 1;
  f->text = dst;
  return dst;
}

const char *appmsg_request_string(struct appmsg_request *r, const char *key) {
  struct appmsg__member *f = appmsg__svc_member(r, key);
  if (f == NULL || f->m.type != APPMSG_JSON_STRING)
    return NULL;
  return appmsg__svc_member_text(r, f);
}

int appmsg_request_int(const struct appmsg_request *r, const char *key, long long *v) {
  struct appmsg_json_member m;
  if (appmsg_request_member(r, key, &m) != 0)
    return -ENOENT;
  return appmsg__member_int(&m, v);
}

int appmsg__member_int(const struct appmsg_json_member *mp, long long *v) {
  struct appmsg_json_member m = *mp;
  if (m.type != APPMSG_JSON_NUMBER)
    return -EINVAL;
  size_t i = m.val_len > 0 && m.val[0] == '-';
  if (i == m.val_len)
    return -EINVAL;
  unsigned long long acc = 0, limit = i ? 9223372036854775808ULL : 9223372036854775807ULL;
  for (; i < m.val_len; i++) {
    if (m.val[i] < '0' || m.val[i] > '9')
      return -EINVAL; /* a fraction or an exponent */
    unsigned d = (unsigned)(m.val[i] - '0');
    if (acc > (limit - d) / 10)
      return -ERANGE;
    acc = acc * 10 + d;
  }
  *v = m.val[0] == '-'
           ? (acc == 9223372036854775808ULL ? (-9223372036854775807LL - 1) : -(long long)acc)
           : (long long)acc;
  return 0;
}

int appmsg_request_number(const struct appmsg_request *r, const char *key, double *v) {
  struct appmsg_json_member m;
  if (appmsg_request_member(r, key, &m) != 0)
    return -ENOENT;
  return appmsg__member_number(&m, v);
}

int appmsg__member_number(const struct appmsg_json_member *mp, double *v) {
  struct appmsg_json_member m = *mp;
  if (m.type != APPMSG_JSON_NUMBER)
    return -EINVAL;
  char stack[64], *text = stack;
  if (m.val_len >= sizeof stack && (text = appmsg__malloc(m.val_len + 1)) == NULL)
    return -ENOMEM;
  memcpy(text, m.val, m.val_len);
  text[m.val_len] = '\0';
  /* strtod() reads the locale's decimal point: JSON's '.' is given as that. */
  char point = localeconv()->decimal_point[0];
  if (point != '.' && point != '\0')
    for (char *q = text; *q; q++)
      if (*q == '.')
        *q = point;
  errno = 0;
  double d = strtod(text, NULL); /* JSON's number grammar is a subset of strtod()'s */
  int overflow = errno == ERANGE && (d > 1.0 || d < -1.0);
  if (text != stack)
    appmsg__free(text);
  if (overflow)
    return -ERANGE;
  *v = d; /* (an underflow reads as the nearest: 0 or a subnormal) */
  return 0;
}

int appmsg_request_bool(const struct appmsg_request *r, const char *key, int *v) {
  struct appmsg_json_member m;
  if (appmsg_request_member(r, key, &m) != 0)
    return -ENOENT;
  if (m.type != APPMSG_JSON_TRUE && m.type != APPMSG_JSON_FALSE)
    return -EINVAL;
  *v = m.type == APPMSG_JSON_TRUE;
  return 0;
}

const char *appmsg_request_action(const struct appmsg_request *r) {
  return r->action;
}

const struct appmsg_header *appmsg_request_header(const struct appmsg_request *r) {
  return r->hdr;
}

const void *appmsg_request_content(const struct appmsg_request *r, size_t *len) {
  *len = r->len;
  return r->content ? r->content : "";
}

const char *appmsg_request_peer(const struct appmsg_request *r) {
  return r->sc ? appmsg_conn_peer(r->sc->conn) : "(gone)";
}

int appmsg_request_alive(const struct appmsg_request *r) {
  return r->sc != NULL && !r->expired && !r->answered;
}

struct appmsg_service *appmsg_request_service(const struct appmsg_request *r) {
  return r->svc;
}

/* Reads a text/json request: encoding, JSON, object, action.  Returns 0
 * when r has a string action, else answers r itself and returns -1. */

/* ---- checks before the handler ------------------------------------------------------------ */

static int read_json(struct appmsg_request *r) {
  const struct appmsg_header *h = r->hdr;
  char msg[300];
  const char *enc = h->content_encoding;
  if (strcmp(enc, "utf-8") != 0 && strcasecmp(enc, "utf-8") != 0 && strcasecmp(enc, "utf8") != 0) {
    snprintf(msg, sizeof msg, "text/json content must be in utf-8, not '%.100s'",
             h->content_encoding); /* a cut character is made valid by the error reply */
    appmsg__svc_error_reply(r, "BAD_REQUEST", msg, -1);
    return -1;
  }
  enum appmsg_json_type top;
  size_t off;
  const char *why;
  r->nmembers = 0;
  int rc = appmsg_json_scan(r->content, r->len, APPMSG__REQUEST_DEPTH_MAX, &top, collect_member, r,
                            &off, &why);
  if (rc) {
    snprintf(msg, sizeof msg, "request content is not valid JSON: %s at byte %zu", why, off);
    appmsg__svc_error_reply(r, appmsg_errname(rc), msg, (long long)off);
    return -1;
  }
  if (r->members_cap == (size_t)-1) {
    r->members_cap = 0;
    appmsg__svc_error_reply(r, "INTERNAL", "out of memory", -1);
    return -1;
  }
  if (top != APPMSG_JSON_OBJECT) {
    appmsg__svc_error_reply(r, "BAD_REQUEST",
                            "the request must be a JSON object like "
                            "{\"action\": \"search\", \"value\": \"morpheus\"}",
                            -1);
    return -1;
  }
  struct appmsg__member *f = appmsg__svc_member(r, "action");
  if (f == NULL || f->m.type != APPMSG_JSON_STRING) {
    appmsg__svc_error_reply(r, "BAD_REQUEST", "the request needs an \"action\" string", -1);
    return -1;
  }
  if ((r->action = appmsg__svc_member_text(r, f)) == NULL) {
    appmsg__svc_error_reply(r, "INTERNAL", "out of memory", -1);
    return -1;
  }
  return 0;
}

/* The guide's answer to an action nobody handles. */

void appmsg__svc_invalid_action(struct appmsg_request *r, void *ud) {
  (void)ud;
  char stack[512], *text = stack;
  size_t need = strlen(r->action) + 32;
  if (need > sizeof stack && (text = appmsg__malloc(need)) == NULL) {
    appmsg__svc_error_reply(r, "INTERNAL", "out of memory", -1);
    r->answered = 1;
    return;
  }
  snprintf(text, need, "Error: invalid action '%s'.", r->action);
  char body[1024], *heap;
  size_t len;
  const char *b = appmsg__svc_result_body(text, strlen(text), body, sizeof body, &len, &heap);
  if (b)
    appmsg__svc_deliver(r, r->svc->json_hdr, b, len, "INVALID_ACTION"); /* (counted as one) */
  r->answered = 1;
  appmsg__free(heap);
  if (text != stack)
    appmsg__free(text);
}

static void read_request_id(struct appmsg_request *r) {
  static const char key[] = ", \"request-id\": ";
  long n = appmsg_header_extra_raw(r->hdr, "request-id", NULL, 0);
  if (n < 0)
    return;
  size_t need = sizeof key - 1 + (size_t)n;
  if (need > APPMSG_HEADER_LENGTH_MAX - 256) {
    struct appmsg_log_fields f = appmsg__svc_request_fields(r);
    appmsg__svc_logx(r->svc, APPMSG_LOG_WARN, &f,
                     "%s: a request-id of %ld bytes is too long to echo", f.peer, n);
    return;
  }
  r->rid = need <= sizeof r->rid_inline ? r->rid_inline : appmsg__malloc(need);
  if (r->rid == NULL)
    return; /* (the reply goes without it) */
  memcpy(r->rid, key, sizeof key - 1);
  appmsg_header_extra_raw(r->hdr, "request-id", r->rid + sizeof key - 1, (size_t)n);
  r->rid_len = sizeof key - 1 + (size_t)n;
}

/* Whether the request's "appmsg-version", if any, is one this server reads
 * (a string starting with "1."); if not, answers BAD_REQUEST (PROTOCOL.md 2.7). */
static int version_ok(struct appmsg_request *r) {
  char v[64];
  long n = appmsg_header_extra_raw(r->hdr, "appmsg-version", v, sizeof v - 1);
  if (n < 0)
    return 1;
  /* A string starting "1." once unescaped (PROTOCOL.md 2.7: "\u0031.2" is 1.2). */
  const char *text = v[0] == '"' ? appmsg_header_extra_string(r->hdr, "appmsg-version") : NULL;
  if (text && text[0] == '1' && text[1] == '.')
    return 1;
  char msg[128];
  v[n < (long)sizeof v - 1 ? n : (long)sizeof v - 1] = '\0';
  snprintf(msg, sizeof msg, "unsupported appmsg version %s; this server speaks 1.x", v);
  appmsg__svc_error_reply(r, "BAD_REQUEST", msg, -1);
  return 0;
}

/* ---- log fields ---------------------------------------------------------------------------- */

#define RID_PREFIX 16 /* strlen(", \"request-id\": "): r->rid holds the value after it */

struct appmsg_log_fields appmsg__svc_request_fields(const struct appmsg_request *r) {
  struct appmsg_log_fields f = APPMSG__LOG_FIELDS_NONE;
  f.peer = r->sc ? appmsg_conn_peer(r->sc->conn) : NULL;
  f.action = r->action;
  if (r->rid && r->rid_len > RID_PREFIX) {
    f.request_id = r->rid + RID_PREFIX;
    f.request_id_len = r->rid_len - RID_PREFIX;
  }
  return f;
}

struct appmsg_log_fields appmsg__svc_conn_fields(struct appmsg_conn *c) {
  struct appmsg_log_fields f = APPMSG__LOG_FIELDS_NONE;
  f.peer = appmsg_conn_peer(c);
  return f;
}

/* ---- the connection callbacks --------------------------------------------------------------- */

/* No memory for what a message needs: the connection ends (its replies would go astray). */
static void out_of_memory(struct appmsg_service *s, struct appmsg_conn *c, const char *what) {
  struct appmsg_log_fields f = appmsg__svc_conn_fields(c);
  f.error = "INTERNAL";
  appmsg__svc_logx(s, APPMSG_LOG_ERROR, &f, "%s: out of memory for %s; closing", f.peer, what);
  appmsg_conn_abort(c, -ENOMEM);
}

static void on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  struct appmsg__svc_conn *sc = ud;
  struct appmsg_service *s = sc->svc;
  if (sc->conn == NULL) { /* its first message: its state now */
    sc = appmsg__calloc(1, sizeof *sc);
    if (sc == NULL) {
      out_of_memory(s, c, "a connection");
      return;
    }
    sc->svc = s;
    sc->conn = c;
    appmsg_conn_set_userdata(c, sc);
  }
  APPMSG__ADD(s->st.requests, 1);
  struct appmsg_request *r = appmsg__svc_request_get(s);
  if (r == NULL) {
    out_of_memory(s, c, "a request");
    return;
  }
  r->sc = sc;
  r->hdr = h;
  r->content = content;
  r->len = len;
  if (appmsg__header_has_extras(h))
    read_request_id(r);
  if (sc->head)
    appmsg__svc_enqueue(sc, r); /* behind replies still owed: its own must wait */
  const struct appmsg__handler *hd = NULL;
  r->in_handler = 1;
  int json = strcmp(h->content_type, "text/json") == 0;
  if (s->opts->measure)
    appmsg__svc_measure_start(r, s->actions[json ? APPMSG__AS_INVALID : APPMSG__AS_BINARY]);
  if (appmsg__header_has_extras(h) && !version_ok(r)) {
    r->answered = 1; /* a later version's request: answered BAD_REQUEST (measured as such) */
  } else if (json) {
    if (read_json(r) == 0) {
      hd = appmsg__svc_find_handler(s, r->action, strlen(r->action));
      if (r->as)
        r->as = hd ? hd->stats : s->actions[APPMSG__AS_UNKNOWN];
      if (hd == NULL) {
        hd = &s->unknown;
      } else if (hd->doc && appmsg__svc_check_params(r, hd->doc) != 0) {
        hd = NULL; /* answered BAD_REQUEST */
        r->answered = 1;
      }
    } else {
      r->answered = 1;
    }
  } else if (s->binary.fn) {
    hd = &s->binary;
  } else {
    char msg[300];
    snprintf(msg, sizeof msg, "no handler for content-type '%.200s'", h->content_type);
    appmsg__svc_error_reply(r, "BAD_REQUEST", msg, -1);
    r->answered = 1;
  }
  if (hd)
    hd->fn(r, hd->ud);
  r->in_handler = 0;
  if (r->answered) {
    if (!r->replied) {
      /* The service's own reply (an error reply, the invalid-action answer)
       * could not be made, for lack of memory: without it the replies after
       * it would answer the wrong requests (a client matches them in
       * order), so the connection ends, as when a TIMEOUT reply cannot be
       * made. */
      out_of_memory(s, c, "a reply");
    }
    r->replied = 1; /* (nothing more is owed for it) */
    if (!r->queued)
      appmsg__svc_request_put(r); /* nobody else holds it: back to the pool now */
    else
      appmsg__svc_flush_queue(sc); /* a queued one is done when its turn comes */
  } else {
    appmsg__svc_make_owed(r);
  }
  appmsg__svc_budget(sc);
}

static void on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t offset,
                     void *ud) {
  struct appmsg__svc_conn *sc = ud;
  struct appmsg_service *s = sc->svc;
  const char *text = reason ? reason : appmsg_strerror(err);
  struct appmsg_log_fields f = appmsg__svc_conn_fields(c);
  f.error = appmsg_errname(err);
  if (appmsg__is_tls_error(err)) {
    /* Nothing more can be sent on this connection (it would leave in the clear). */
    appmsg__svc_logx(s, APPMSG_LOG_WARN, &f, "%s: %s: %s; closing", f.peer, f.error,
                     text); /* who and why; a stream offset means nothing */
    return;
  }
  f.offset = (long long)offset;
  appmsg__svc_logx(s, APPMSG_LOG_WARN, &f, "%s: %s at stream offset %llu: %s; closing", f.peer,
                   f.error, (unsigned long long)offset, text);
  /* A failure of the server's own - no memory to read the frame - is not an error of the
   * peer's framing: PROTOCOL.md 5.4 names it INTERNAL, with no offset, and a system error's
   * name (ENOMEM) is not a name of the protocol. */
  int internal = err > APPMSG_E_BASE;
  const char *name = internal ? "INTERNAL" : appmsg_errname(err);
  char body[APPMSG__ERROR_BODY_MAX];
  size_t n = appmsg__error_body(name, text, internal ? -1 : (long long)offset, body);
  if (sc->head == NULL) {
    if (appmsg__conn_send_prepared_ex(c, s->json_hdr, NULL, 0, body, n) == 0) {
      APPMSG__ADD(s->st.replies, 1);
      appmsg__svc_count_error(s, name);
    }
    return;
  }
  /* Replies are owed: the error reply goes last, in a request of its own.
   * Without memory for it the owed replies still leave, then the
   * connection closes without it. */
  if (appmsg__svc_error_last(sc, name, body, n) != 0)
    appmsg__svc_logx(s, APPMSG_LOG_ERROR, &f, "%s: out of memory for the error reply", f.peer);
}

static void log_close(struct appmsg_service *s, struct appmsg_conn *c, int reason);

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  struct appmsg__svc_conn *sc = ud;
  struct appmsg_service *s = sc->svc;
  APPMSG__ADD(s->st.connections, -1);
  int warn = reason == APPMSG_E_TIMEOUT || reason == APPMSG_E_OUTPUT_FULL;
  if (appmsg__svc_logs(s, warn ? APPMSG_LOG_WARN : APPMSG_LOG_DEBUG))
    log_close(s, c, reason);
  if (sc->conn) /* (not the service's fresh) */
    appmsg__svc_conn_closed(sc);
}

/* Logs a connection's end (the peer's address is formatted only for a line that is made). */
static void log_close(struct appmsg_service *s, struct appmsg_conn *c, int reason) {
  struct appmsg_log_fields f = appmsg__svc_conn_fields(c);
  if (reason < 0)
    f.error = appmsg_errname(reason);
  if (reason == APPMSG_E_TIMEOUT)
    appmsg__svc_logx(s, APPMSG_LOG_WARN, &f, "%s: closed: timed out", f.peer);
  else if (reason == APPMSG_E_OUTPUT_FULL)
    appmsg__svc_logx(s, APPMSG_LOG_WARN, &f,
                     "%s: closed: it does not read its replies (output cap reached)", f.peer);
  else if (reason < 0)
    appmsg__svc_logx(s, APPMSG_LOG_DEBUG, &f, "%s: closed: %s", f.peer, appmsg_strerror(reason));
  else
    appmsg__svc_logx(s, APPMSG_LOG_DEBUG, &f, "%s: closed", f.peer);
}

static void on_accept(struct appmsg_server *srv, struct appmsg_conn *c, void *ud) {
  (void)srv;
  struct appmsg_service *s = ud;
  appmsg_conn_set_userdata(c, &s->fresh); /* its own state comes with its first message */
  APPMSG__ADD(s->st.connections, 1);
  APPMSG__ADD(s->st.connections_total, 1);
  if (appmsg__svc_logs(s, APPMSG_LOG_DEBUG)) {
    struct appmsg_log_fields f = appmsg__svc_conn_fields(c);
    appmsg__svc_logx(s, APPMSG_LOG_DEBUG, &f, "accepted connection from %s", f.peer);
  }
}

static void on_refuse(struct appmsg_server *srv, int err, void *ud) {
  (void)srv;
  struct appmsg_service *s = ud;
  static const char name[] = "TOO_MANY_CONNS";
  if (err == APPMSG_E_TOO_MANY_CONNS) {
    APPMSG__ADD(s->st.replies, 1);
    appmsg__svc_count_error(s, name);
  }
  struct appmsg_log_fields f = APPMSG__LOG_FIELDS_NONE;
  f.error = appmsg_errname(err);
  if (s->refusals++ % 1000 == 0) /* a flood must not flood the log */
    appmsg__svc_logx(s, APPMSG_LOG_WARN, &f, "refusing connections: %s (%llu so far)",
                     appmsg_strerror(err), (unsigned long long)s->refusals);
}

const struct appmsg_conn_callbacks appmsg__svc_conn_cbs = {
    .on_message = on_message, .on_error = on_error, .on_close = on_close};
const struct appmsg_server_callbacks appmsg__svc_server_cbs = {.on_accept = on_accept,
                                                               .on_refuse = on_refuse};
