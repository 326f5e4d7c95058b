/*
 * A small HTTP/1.1 server on an appmsg loop, for a service's observability
 * endpoint (appmsg_service_metrics_listen()).  Not installed.
 *
 * Requests are read by http_parser (the Node.js parser, as Debian ships
 * it); this file only drives it and keeps the limits.  GET and HEAD are
 * served: a handler is called with the method and the path (the query
 * string cut off) and fills in a response, answered at once.  Keep-alive
 * and pipelined requests are answered in order; "Connection: close" and
 * HTTP/1.0 close after the response.
 *
 * Hostile or broken peers (each event logged with the peer):
 *   - a request head longer than max_head:        431, then close
 *   - a request with a body (GET and HEAD have none): 413, then close
 *   - a method other than GET or HEAD:             405 with "Allow", and
 *                                                  close if it had a body
 *   - input that is not HTTP/1.x:                  400, then close
 *   - a head not complete within head_timeout_ms:  408 if nothing was
 *                                                  answered yet, and close
 *   - nothing for idle_timeout_ms between requests: close (keep-alive ends)
 *   - more than max_conns connections:             accepted and closed at
 *                                                  once (logged at most once
 *                                                  a second)
 *   - a peer that does not read its responses:     pipelined requests wait
 *     while more than read_pause bytes are queued; output that stops moving
 *     for output_timeout_ms, or more than max_output bytes queued, ends the
 *     connection.
 * Nothing here blocks the loop; the listener and connections are the
 * library's own (server.h, conn.h in raw mode), so the loop's other users
 * - a service's appmsg port - are served as before.
 *
 * Lifetime: appmsg__http_free() may be called from anywhere, the handler
 * included; the memory goes once the last connection's on_close ran
 * (nothing is freed under its caller).
 */
#ifndef APPMSG_HTTP_H
#define APPMSG_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/conn.h"
#include "appmsg/loop.h"
#include "appmsg/service.h"

struct appmsg__http;

/* The limits of an endpoint (appmsg__http_limits_default() gives the ones in brackets). */
struct appmsg__http_limits {
  size_t max_head;          /* bytes of a request head, request line included [8 KiB] */
  uint32_t head_timeout_ms; /* a head must be complete within this [5 s] */
  uint32_t idle_timeout_ms; /* a keep-alive connection may wait this long between requests [30 s] */
  uint32_t
      output_timeout_ms; /* queued output that stops moving this long ends the connection [10 s] */
  size_t max_conns;      /* connections at once [64] */
  size_t read_pause;     /* pipelined requests wait while more output is queued [256 KiB] */
  size_t max_output;     /* output queued for one connection at most [8 MiB] */
};

void appmsg__http_limits_default(struct appmsg__http_limits *l);

/* A growing text buffer (service_internal.h). */
#include "service_internal.h"

/*
 * A response, filled in by the handler.  status 0 is taken as 200.  The
 * body is either body[0..len) (borrowed: it must stay valid until the
 * handler returns; static data usually) or, when body is NULL, text - built
 * by the handler with appmsg__text_addf() and freed by the server; text
 * that ran out of memory (text.failed) becomes a 500.  headers: extra
 * header lines, each ending in "\r\n" (static storage), or NULL.
 */
struct appmsg__http_response {
  int status;               /* 200, 404 ... */
  const char *content_type; /* "text/plain; charset=utf-8" when NULL */
  const char *headers;      /* extra header lines, or NULL */
  const void *body;         /* the body, borrowed, or NULL */
  size_t len;               /* its length */
  struct appmsg__text text; /* the body built per request, when body is NULL */
};

/* The handler: method is "GET" or "HEAD", path the request's path (NUL-terminated, no query
 * string), both valid during the call.  For HEAD the body is made as for GET (its length is
 * sent) and not sent.  It may call appmsg__http_free(). */
typedef void (*appmsg__http_handler_fn)(void *ud, const char *method, const char *path,
                                        struct appmsg__http_response *res);

/* Where the endpoint logs: the service's log function, its user data and level. */
struct appmsg__http_log {
  appmsg_log_fn fn;
  void *ud;
  enum appmsg_log_level level;
};

/*
 * Listens on host:port (net.h forms) and serves on loop.  lim NULL: the
 * defaults; lim and log are copied.  Returns 0 and *out, or a negative
 * code with a sentence in err.
 */
int appmsg__http_new(struct appmsg__http **out, struct appmsg_loop *loop, const char *host,
                     const char *port, const struct appmsg__http_limits *lim,
                     appmsg__http_handler_fn fn, void *ud, const struct appmsg__http_log *log,
                     char *err, size_t errlen);

/* The listening address as text (thread buffer), or "?". */
const char *appmsg__http_address(const struct appmsg__http *h);

/* Connections open now. */
size_t appmsg__http_conn_count(const struct appmsg__http *h);

/* Closes the listener and ends every connection (their output dropped); the memory goes once
 * their on_close ran.  NULL is fine.  Safe from the handler. */
void appmsg__http_free(struct appmsg__http *h);

/* ---- service_http.c ---- */

/* appmsg_service_metrics_listen() with limits of the caller's (the tests' short ones). */
int appmsg__service_metrics_listen_ex(struct appmsg_service *s, const char *host, const char *port,
                                      const struct appmsg__http_limits *lim, char *err,
                                      size_t errlen);

/* The status page's files, embedded at build time (status_page_data.c, made by
 * src/status_page/embed.cmake). */
struct appmsg__page_file {
  const char *path;         /* "/", "/app.js" ... */
  const char *content_type; /* its media type */
  const unsigned char *data;
  size_t len;
};
extern const struct appmsg__page_file appmsg__page_files[];
extern const size_t appmsg__page_nfiles;

#endif
