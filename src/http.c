/*
 * The HTTP/1.1 endpoint (see http.h): a server of raw connections (server.h,
 * conn.h) whose bytes go through http_parser.
 *
 * How the parser is driven.  Its callbacks only note an event and pause it
 * (http_parser_pause()), so that http_parser_execute() returns at each
 * event with the count of bytes it used: the request's head is measured
 * exactly from its first byte (message begin) to its end (headers
 * complete), and the parser is never handed more of a head than the limit
 * allows, so an oversized head costs no more than max_head bytes of work.
 * The response is made at "headers complete" (GET and HEAD have no body;
 * a request with one is refused there), which keeps pipelined answers in
 * request order without any queue of our own.
 *
 * Time.  One timer per connection: from the accept, the first head must be
 * complete within head_timeout_ms; between requests the connection may
 * stay idle for idle_timeout_ms; a new request's first byte gives its head
 * head_timeout_ms again.  Output that stops moving is the connection's own
 * business (frame_timeout_ms of conn.h, here output_timeout_ms).
 *
 * Back-pressure.  Responses are queued as requests are parsed; once more
 * than read_pause bytes wait, parsing stops and what is left of the input
 * is kept (at most one read's worth) until the connection has written
 * everything (its written hook), and the connection stops reading
 * meanwhile.
 */
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "appmsg/net.h"
#include "appmsg/server.h"
#include "conn_internal.h"
#include "http.h"
#include "loop_internal.h"
#include "util.h"

#define REFUSAL_LOG_MS 1000 /* refused connections: at most a log line this often */

/* What the last parser callback stopped at. */
enum event { EV_NONE, EV_BEGIN, EV_HEADERS, EV_COMPLETE };

struct appmsg__http {
  struct appmsg_loop *loop;
  struct appmsg_server *srv;
  struct appmsg_server_opts sopts; /* raw connections with the limits below */
  struct appmsg__http_limits lim;
  struct appmsg__http_log log;
  appmsg__http_handler_fn fn; /* the handler and its user data */
  void *ud;
  size_t nconns;                /* connections whose on_close has not run yet */
  uint64_t refused;             /* connections refused since the last log line about it */
  uint64_t refused_at;          /* loop time of that line */
  unsigned freed : 1;           /* appmsg__http_free() was called */
  unsigned freeing : 1;         /* ... and is ending the connections now */
  struct appmsg__deferred gone; /* frees it after the last connection's end */
  char addr[APPMSG_ADDRSTRLEN]; /* the listening address */
};

/* A connection's state (its user data). */
struct hconn {
  struct appmsg__http *h;
  struct appmsg_conn *c;
  http_parser p;
  struct appmsg_timer timer;    /* head, idle (see above) */
  enum event event;             /* set by the parser's callbacks */
  char *url;                    /* the request target, as it arrives */
  size_t url_len, url_cap;      /* (at most max_head bytes: it is part of the head) */
  size_t head;                  /* bytes of the current head so far */
  char *rest;                   /* input not parsed yet while output drains */
  size_t rest_len;              /* its length */
  uint64_t answered;            /* responses queued */
  unsigned in_head : 1;         /* between a request's first byte and its headers' end */
  unsigned stopped : 1;         /* no more requests are read (closing) */
  unsigned waiting : 1;         /* parsing paused until the output drains */
  char peer[APPMSG_ADDRSTRLEN]; /* for the log */
};

#define http_log(h, lvl, ...)                                                                      \
  do {                                                                                             \
    if ((lvl) <= (h)->log.level)                                                                   \
      appmsg__logf((h)->log.fn, (h)->log.ud, lvl, __VA_ARGS__);                                    \
  } while (0)

void appmsg__http_limits_default(struct appmsg__http_limits *l) {
  l->max_head = 8 * 1024;
  l->head_timeout_ms = 5000;
  l->idle_timeout_ms = 30000;
  l->output_timeout_ms = 10000;
  l->max_conns = 64;
  l->read_pause = 256 * 1024;
  l->max_output = (size_t)8 << 20;
}

/* ---- the parser's callbacks: note the event and pause ------------------------------------ */

static int on_message_begin(http_parser *p) {
  ((struct hconn *)p->data)->event = EV_BEGIN;
  http_parser_pause(p, 1);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  ((struct hconn *)p->data)->event = EV_HEADERS;
  http_parser_pause(p, 1);
  return 0;
}

static int on_message_complete(http_parser *p) {
  ((struct hconn *)p->data)->event = EV_COMPLETE;
  http_parser_pause(p, 1);
  return 0;
}

/* The target, in pieces.  Its bytes are part of the head, which the caller bounds: the buffer
 * never grows past max_head (+1 for the NUL added later). */
static int on_url(http_parser *p, const char *at, size_t n) {
  struct hconn *hc = p->data;
  if (hc->url_len + n + 1 > hc->url_cap) {
    size_t cap = hc->url_cap ? hc->url_cap : 256;
    while (cap < hc->url_len + n + 1)
      cap *= 2;
    char *u = appmsg__realloc(hc->url, cap);
    if (u == NULL)
      return 1; /* the parser stops with HPE_CB_url; answered as a server error */
    hc->url = u;
    hc->url_cap = cap;
  }
  memcpy(hc->url + hc->url_len, at, n);
  hc->url_len += n;
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* ---- responses --------------------------------------------------------------------------- */

static const char *reason_phrase(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

/* The Date header's value (RFC 9110's IMF-fixdate) for t seconds since 1970, computed here:
 * gmtime() is not thread-safe and gmtime_r() not everywhere. */
static void http_date(char out[64], long long t) {
  static const char wd[] = "ThuFriSatSunMonTueWed"; /* 1970-01-01 was a Thursday */
  static const char mn[] = "MarAprMayJunJulAugSepOctNovDecJanFeb";
  long long days = t / 86400, secs = t % 86400;
  if (secs < 0) {
    secs += 86400;
    days--;
  }
  int wday = (int)(((days % 7) + 7) % 7);
  /* Days to a civil date, counting years from March (the leap day last). */
  long long z = days + 719468; /* days since 0000-03-01 */
  long long era = (z >= 0 ? z : z - 146096) / 146097;
  long long doe = z - era * 146097;                                      /* [0, 146096] */
  long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
  long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
  long long mp = (5 * doy + 2) / 153;                                    /* March = 0 */
  int day = (int)(doy - (153 * mp + 2) / 5 + 1);
  long long year = yoe + era * 400 + (mp >= 10);
  snprintf(out, 64, "%.3s, %02d %.3s %04lld %02d:%02d:%02d GMT", wd + 3 * wday, day, mn + 3 * mp,
           year, (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
}

/* Queues a response; close: "Connection: close" and no more requests.  body may be NULL
 * (HEAD, with len the length announced).  Returns 0, or the connection's error (it is ending
 * then). */
static int respond(struct hconn *hc, int status, const char *type, const char *headers,
                   const void *body, size_t len, int close) {
  char date[64], head[2048];
  http_date(date, (long long)time(NULL));
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\n"
                   "Date: %s\r\n"
                   "Content-Type: %s\r\n"
                   "Content-Length: %zu\r\n"
                   "Cache-Control: no-store\r\n"
                   "X-Content-Type-Options: nosniff\r\n"
                   "%s%s\r\n",
                   status, reason_phrase(status), date, type ? type : "text/plain; charset=utf-8",
                   len, headers ? headers : "", close ? "Connection: close\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof head)
    return -EINVAL; /* (the handler's headers are static and short) */
  int rc = appmsg_conn_send_raw(hc->c, head, (size_t)n);
  if (rc == 0 && body && len)
    rc = appmsg_conn_send_raw(hc->c, body, len);
  hc->answered++;
  if (close || rc) {
    hc->stopped = 1;
    appmsg_conn_close(hc->c);
  }
  return rc;
}

/* Refuses the request with status and a one-line body, logs why (with the peer), and closes
 * when close is set. */
static void refuse(struct hconn *hc, int status, int close, const char *headers, const char *fmt,
                   ...) APPMSG__PRINTF(5, 6);
static void refuse(struct hconn *hc, int status, int close, const char *headers, const char *fmt,
                   ...) {
  char why[256], body[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  int n = snprintf(body, sizeof body, "%d %s: %s\n", status, reason_phrase(status), why);
  if (n < 0 || (size_t)n >= sizeof body)
    n = (int)strlen(body);
  http_log(hc->h, APPMSG_LOG_WARN, "HTTP %s: %d %s (%s)%s", hc->peer, status, reason_phrase(status),
           why, close ? "; closing" : "");
  respond(hc, status, NULL, headers, body, (size_t)n, close);
}

/* The path of the target (query and fragment cut off), NUL-terminated in hc->url, or NULL for
 * a target that is not a URL. */
static const char *target_path(struct hconn *hc) {
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (hc->url_len == 0 || http_parser_parse_url(hc->url, hc->url_len, 0, &u) != 0)
    return NULL;
  if (!(u.field_set & (1u << UF_PATH)))
    return "/"; /* "http://host" */
  char *path = hc->url + u.field_data[UF_PATH].off;
  path[u.field_data[UF_PATH].len] = '\0'; /* (room: url_cap > url_len) */
  return path;
}

/* A GET or HEAD without a body: the handler's response. */
static void serve(struct hconn *hc, int close) {
  struct appmsg__http *h = hc->h;
  int head_only = hc->p.method == HTTP_HEAD;
  const char *path = target_path(hc);
  if (path == NULL) {
    refuse(hc, 400, 1, NULL, "the request target is not a path");
    return;
  }
  struct appmsg__http_response res;
  memset(&res, 0, sizeof res);
  h->fn(h->ud, head_only ? "HEAD" : "GET", path, &res);
  const void *body = res.body;
  size_t len = res.len;
  if (body == NULL) {
    body = res.text.p;
    len = res.text.len;
  }
  int status = res.status ? res.status : 200;
  if (res.body == NULL && res.text.failed) {
    http_log(h, APPMSG_LOG_ERROR, "HTTP %s: GET %s: out of memory for the response", hc->peer,
             path);
    static const char oom[] = "500 Internal Server Error: out of memory\n";
    respond(hc, 500, NULL, NULL, oom, sizeof oom - 1, 1);
  } else {
    http_log(h, APPMSG_LOG_DEBUG, "HTTP %s: %s %s -> %d (%zu bytes)", hc->peer,
             head_only ? "HEAD" : "GET", path, status, len);
    /* HEAD: the same header, the length announced, no body. */
    if (respond(hc, status, res.content_type, res.headers, head_only ? NULL : body, len, close) ==
        APPMSG_E_OUTPUT_FULL)
      http_log(h, APPMSG_LOG_WARN,
               "HTTP %s: more than %zu bytes of responses unread; closing the connection", hc->peer,
               h->lim.max_output);
  }
  appmsg__free(res.text.p);
}

/* A request's head is complete: answer it (or refuse it). */
static void headers_done(struct hconn *hc) {
  http_parser *p = &hc->p;
  int has_body =
      (p->flags & F_CHUNKED) || (p->content_length != 0 && p->content_length != ULLONG_MAX);
  /* HTTP/1.0 closes after the response, whatever it asked for; so does an Upgrade, which the
   * parser does not read past. */
  int close = !http_should_keep_alive(p) || p->http_minor == 0 || p->upgrade;
  if (p->http_major != 1) {
    refuse(hc, 505, 1, NULL, "HTTP/%u.%u is not served here", p->http_major, p->http_minor);
  } else if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
    refuse(hc, 405, close || has_body, "Allow: GET, HEAD\r\n",
           "%s is not served here (GET and HEAD are)",
           http_method_str((enum http_method)p->method));
  } else if (has_body) {
    refuse(hc, 413, 1, NULL, "a %s request has no body here",
           http_method_str((enum http_method)p->method));
  } else {
    serve(hc, close);
  }
}

/* ---- input ------------------------------------------------------------------------------- */

static void arm(struct hconn *hc, uint32_t ms) {
  if (appmsg_timer_start(hc->h->loop, &hc->timer, ms, 0) < 0) {
    hc->stopped = 1; /* cannot be bounded in time: ended */
    appmsg_conn_abort(hc->c, -ENOMEM);
  }
}

/* Keeps input for later (parsing waits for the output to drain). */
static void keep(struct hconn *hc, const char *p, size_t n) {
  char *r = appmsg__malloc(hc->rest_len + n);
  if (r == NULL) {
    hc->stopped = 1;
    appmsg_conn_abort(hc->c, -ENOMEM);
    return;
  }
  if (hc->rest_len)
    memcpy(r, hc->rest, hc->rest_len);
  memcpy(r + hc->rest_len, p, n);
  appmsg__free(hc->rest);
  hc->rest = r;
  hc->rest_len += n;
}

/* After a response: wait for the output when much is queued, else for the next request. */
static void after_response(struct hconn *hc) {
  const struct appmsg__http_limits *lim = &hc->h->lim;
  if (hc->stopped)
    return;
  if (appmsg_conn_pending(hc->c) > lim->read_pause) {
    hc->waiting = 1;
    appmsg_conn_set_reading(hc->c, 0);
    appmsg_timer_stop(hc->h->loop, &hc->timer); /* (stalled output: the connection's timeout) */
    return;
  }
  arm(hc, lim->idle_timeout_ms);
}

static void feed(struct hconn *hc, const char *data, size_t n) {
  const struct appmsg__http_limits *lim = &hc->h->lim;
  while (n > 0 && !hc->stopped) {
    if (hc->waiting) {
      keep(hc, data, n);
      return;
    }
    size_t give = n;
    if (hc->in_head) {
      if (hc->head >= lim->max_head) {
        refuse(hc, 431, 1, NULL, "the request head is longer than %zu bytes", lim->max_head);
        return;
      }
      if (give > lim->max_head - hc->head)
        give = lim->max_head - hc->head;
    }
    hc->event = EV_NONE;
    size_t used = http_parser_execute(&hc->p, &parser_settings, data, give);
    enum http_errno e = HTTP_PARSER_ERRNO(&hc->p);
    if (e == HPE_PAUSED) {
      http_parser_pause(&hc->p, 0);
    } else if (e == HPE_CB_url) {
      http_log(hc->h, APPMSG_LOG_ERROR, "HTTP %s: out of memory for a request", hc->peer);
      static const char oom[] = "500 Internal Server Error: out of memory\n";
      respond(hc, 500, NULL, NULL, oom, sizeof oom - 1, 1);
      return;
    } else if (e == HPE_HEADER_OVERFLOW) {
      refuse(hc, 431, 1, NULL, "the request head is too long");
      return;
    } else if (e != HPE_OK) {
      refuse(hc, 400, 1, NULL, "not an HTTP/1.x request: %s", http_errno_description(e));
      return;
    }
    if (hc->in_head)
      hc->head += used;
    data += used;
    n -= used;
    switch (hc->event) {
    case EV_BEGIN:
      hc->in_head = 1;
      hc->head = 1; /* the byte that began it */
      hc->url_len = 0;
      if (hc->answered > 0) /* (the first head keeps the deadline set at the accept) */
        arm(hc, lim->head_timeout_ms);
      break;
    case EV_HEADERS:
      hc->in_head = 0;
      headers_done(hc);
      after_response(hc);
      break;
    case EV_COMPLETE:
      break;
    case EV_NONE:
      if (used < give && e == HPE_OK) {
        /* The parser stopped early (an upgrade it will not read past): answered already,
         * and closing. */
        hc->stopped = 1;
        appmsg_conn_close(hc->c);
        return;
      }
      break;
    }
  }
}

/* ---- connections ------------------------------------------------------------------------- */

static void on_data(struct appmsg_conn *c, const void *data, size_t len, void *ud) {
  (void)c;
  struct hconn *hc = ud;
  if (hc && !hc->stopped)
    feed(hc, data, len);
}

/* Everything queued was written: parsing goes on with what was kept. */
static void on_written(struct appmsg_conn *c, void *ud) {
  struct hconn *hc = ud;
  if (hc == NULL || !hc->waiting || hc->stopped)
    return;
  hc->waiting = 0;
  appmsg_conn_set_reading(c, 1);
  arm(hc, hc->in_head ? hc->h->lim.head_timeout_ms : hc->h->lim.idle_timeout_ms);
  char *rest = hc->rest;
  size_t n = hc->rest_len;
  hc->rest = NULL;
  hc->rest_len = 0;
  if (n)
    feed(hc, rest, n);
  appmsg__free(rest);
}

static void on_timer(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct hconn *hc = ud;
  const struct appmsg__http_limits *lim = &hc->h->lim;
  if (hc->stopped || hc->waiting)
    return;
  if (hc->answered == 0) {
    refuse(hc, 408, 1, NULL, "no complete request head within %u ms", lim->head_timeout_ms);
  } else if (hc->in_head) {
    http_log(hc->h, APPMSG_LOG_WARN,
             "HTTP %s: request head not complete within %u ms; closing the connection", hc->peer,
             lim->head_timeout_ms);
    hc->stopped = 1;
    appmsg_conn_close(hc->c);
  } else {
    http_log(hc->h, APPMSG_LOG_DEBUG, "HTTP %s: idle for %u ms; closing the connection", hc->peer,
             lim->idle_timeout_ms);
    hc->stopped = 1;
    appmsg_conn_close(hc->c);
  }
}

static void free_endpoint(struct appmsg__deferred *d) {
  appmsg__free((struct appmsg__http *)((char *)d - offsetof(struct appmsg__http, gone)));
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  (void)c;
  struct hconn *hc = ud;
  if (hc == NULL)
    return;
  struct appmsg__http *h = hc->h;
  if (reason == APPMSG_E_TIMEOUT)
    http_log(h, APPMSG_LOG_WARN,
             "HTTP %s: the peer did not read its responses for %u ms; connection cut off", hc->peer,
             h->lim.output_timeout_ms);
  else if (reason == APPMSG_E_OUTPUT_FULL)
    http_log(h, APPMSG_LOG_WARN,
             "HTTP %s: more than %zu bytes of responses unread; connection cut off", hc->peer,
             h->lim.max_output);
  else if (reason < 0 && reason != APPMSG_E_CLOSED)
    http_log(h, APPMSG_LOG_DEBUG, "HTTP %s: connection ended: %s", hc->peer,
             appmsg_strerror(reason));
  appmsg_timer_stop(h->loop, &hc->timer);
  appmsg__free(hc->url);
  appmsg__free(hc->rest);
  appmsg__free(hc);
  h->nconns--;
  /* The connection still reads its options (h->sopts) as it finishes after this: h goes at
   * the end of the deferred work now running. */
  if (h->freed && !h->freeing && h->nconns == 0)
    appmsg__loop_defer(h->loop, &h->gone);
}

static const struct appmsg_conn_callbacks conn_cbs = {
    .on_data = on_data,
    .on_close = on_close,
};

static void on_accept(struct appmsg_server *s, struct appmsg_conn *c, void *ud) {
  (void)s;
  struct appmsg__http *h = ud;
  struct hconn *hc = appmsg__calloc(1, sizeof *hc);
  if (hc == NULL) {
    appmsg_conn_set_userdata(c, NULL);
    appmsg_conn_abort(c, -ENOMEM);
    http_log(h, APPMSG_LOG_ERROR, "HTTP: out of memory for a connection");
    return;
  }
  hc->h = h;
  hc->c = c;
  http_parser_init(&hc->p, HTTP_REQUEST);
  hc->p.data = hc;
  snprintf(hc->peer, sizeof hc->peer, "%s", appmsg_conn_peer(c));
  appmsg_timer_init(&hc->timer, on_timer, hc);
  appmsg_conn_set_userdata(c, hc);
  appmsg__conn_set_written_hook(c, on_written);
  h->nconns++;
  http_log(h, APPMSG_LOG_DEBUG, "HTTP %s: connected", hc->peer);
  arm(hc, h->lim.head_timeout_ms);
}

static void on_refuse(struct appmsg_server *s, int err, void *ud) {
  (void)s;
  struct appmsg__http *h = ud;
  uint64_t now = appmsg_loop_now(h->loop);
  h->refused++;
  if (h->refused_at && now - h->refused_at < REFUSAL_LOG_MS)
    return;
  if (err == APPMSG_E_TOO_MANY_CONNS)
    http_log(h, APPMSG_LOG_WARN, "HTTP: %llu connection(s) closed at once: %zu are open, the limit",
             (unsigned long long)h->refused, h->lim.max_conns);
  else
    http_log(h, APPMSG_LOG_WARN, "HTTP: %llu connection(s) refused: %s",
             (unsigned long long)h->refused, appmsg_strerror(err));
  h->refused = 0;
  h->refused_at = now;
}

static const struct appmsg_server_callbacks server_cbs = {
    .on_accept = on_accept,
    .on_refuse = on_refuse,
};

int appmsg__http_new(struct appmsg__http **out, struct appmsg_loop *loop, const char *host,
                     const char *port, const struct appmsg__http_limits *lim,
                     appmsg__http_handler_fn fn, void *ud, const struct appmsg__http_log *log,
                     char *err, size_t errlen) {
  struct appmsg__http *h = appmsg__calloc(1, sizeof *h);
  if (h == NULL) {
    appmsg__errf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  h->loop = loop;
  if (lim)
    h->lim = *lim;
  else
    appmsg__http_limits_default(&h->lim);
  if (log)
    h->log = *log;
  h->fn = fn;
  h->ud = ud;
  appmsg_server_opts_default(&h->sopts);
  h->sopts.max_conns = h->lim.max_conns;
  h->sopts.backlog = 64;
  h->sopts.conn.raw = 1; /* (a refused connection is closed at once, with no appmsg frame) */
  h->sopts.conn.idle_timeout_ms = 0; /* the timer above */
  h->sopts.conn.frame_timeout_ms = h->lim.output_timeout_ms;
  h->sopts.conn.read_pause = h->lim.read_pause;
  h->sopts.conn.max_output = h->lim.max_output;
  int rc = appmsg_server_new(&h->srv, loop, host, port, &h->sopts, &conn_cbs, &server_cbs, h, err,
                             errlen);
  if (rc) {
    appmsg__free(h);
    return rc;
  }
  snprintf(h->addr, sizeof h->addr, "%s", appmsg_server_address(h->srv));
  *out = h;
  return 0;
}

const char *appmsg__http_address(const struct appmsg__http *h) {
  return h ? h->addr : "?";
}

size_t appmsg__http_conn_count(const struct appmsg__http *h) {
  return h->nconns;
}

void appmsg__http_free(struct appmsg__http *h) {
  if (h == NULL || h->freed)
    return;
  h->freed = 1;
  appmsg__deferred_init(&h->gone, free_endpoint);
  /* The server ends every connection: at once from outside the loop (their on_close run in
   * there), else at the end of the iteration; the last on_close frees h. */
  h->freeing = 1;
  appmsg_server_free(h->srv);
  h->srv = NULL;
  h->freeing = 0;
  if (h->nconns == 0)
    free_endpoint(&h->gone); /* (every connection has finished: none reads h any more) */
}
