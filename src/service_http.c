/*
 * A service's HTTP endpoint (appmsg_service_metrics_listen() in
 * include/appmsg/service.h): the routes of the HTTP server of http.c.
 *
 *   /metrics   the Prometheus text (service_metrics.c)
 *   /status    the status object as JSON (service_status.c)
 *   /          the status page, and its script and style sheet (/app.js,
 *              /app.css): files of src/status_page embedded at build time
 *
 * The page is served with a Content-Security-Policy that allows nothing
 * but this origin: no inline script or style, no other host.
 */
#include <errno.h>
#include <string.h>

#include "http.h"
#include "service_internal.h"

#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define STATUS_TYPE "application/json"

/* The page's policy: its own files, and fetch() to /status; nothing inline, nothing else. */
static const char page_headers[] =
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'\r\n"
    "Referrer-Policy: no-referrer\r\n";

static void route(void *ud, const char *method, const char *path,
                  struct appmsg__http_response *res) {
  (void)method; /* HEAD is GET without the body, which http.c leaves out */
  struct appmsg_service *s = ud;
  if (strcmp(path, "/metrics") == 0) {
    res->content_type = METRICS_TYPE;
    appmsg__svc_metrics_text(s, &res->text);
    return;
  }
  if (strcmp(path, "/status") == 0) {
    res->content_type = STATUS_TYPE;
    appmsg__svc_status_json(s, &res->text);
    appmsg__text_addf(&res->text, "\n");
    return;
  }
  if (strcmp(path, "/index.html") == 0)
    path = "/";
  for (size_t i = 0; i < appmsg__page_nfiles; i++) {
    const struct appmsg__page_file *f = &appmsg__page_files[i];
    if (strcmp(path, f->path) == 0) {
      res->content_type = f->content_type;
      res->headers = page_headers;
      res->body = f->data;
      res->len = f->len;
      return;
    }
  }
  static const char not_found[] = "404 Not Found: /metrics, /status and / are served here\n";
  res->status = 404;
  res->body = not_found;
  res->len = sizeof not_found - 1;
}

int appmsg__service_metrics_listen_ex(struct appmsg_service *s, const char *host, const char *port,
                                      const struct appmsg__http_limits *lim, char *err,
                                      size_t errlen) {
  if (s->http) {
    appmsg__errf(err, errlen, "the service serves its metrics already, on %s",
                 appmsg__http_address(s->http));
    return -EALREADY;
  }
  if (s->freed) {
    appmsg__errf(err, errlen, "the service is being freed");
    return -EINVAL;
  }
  struct appmsg__http_log log = {s->opts->log, s->opts->log_ud, s->opts->log_level};
  int rc = appmsg__http_new(&s->http, s->loop, host, port, lim, route, s, &log, err, errlen);
  if (rc == 0)
    appmsg__svc_log(s, APPMSG_LOG_INFO, "metrics and status page on http://%s/",
                    appmsg__http_address(s->http));
  return rc;
}

int appmsg_service_metrics_listen(struct appmsg_service *s, const char *host, const char *port,
                                  char *err, size_t errlen) {
  return appmsg__service_metrics_listen_ex(s, host, port, NULL, err, errlen);
}

const char *appmsg_service_metrics_address(const struct appmsg_service *s) {
  return appmsg__http_address(s->http);
}
