/*
 * The service's lifecycle (see include/appmsg/service.h): made, given its
 * handlers, listening, drained and freed.  Reading requests is in
 * service_request.c, replies in service_reply.c, counters in
 * service_status.c; their shared state is in service_internal.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/tls.h"
#include "http.h"
#include "platform.h"
#include "service_internal.h"

static uint64_t hash_name(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return h;
}

const struct appmsg__handler *appmsg__svc_find_handler(const struct appmsg_service *s,
                                                       const char *name, size_t n) {
  if (s->handlers_cap == 0)
    return NULL;
  size_t mask = s->handlers_cap - 1;
  for (size_t i = hash_name(name, n) & mask;; i = (i + 1) & mask) {
    const struct appmsg__handler *h = &s->handlers[i];
    if (h->name == NULL)
      return NULL;
    if (h->len == n && memcmp(h->name, name, n) == 0)
      return h;
  }
}

void appmsg_service_opts_default(struct appmsg_service_opts *o) {
  memset(o, 0, sizeof *o);
  appmsg_server_opts_default(&o->server);
  o->deadline_ms = 30000;
  o->max_pending = 1024;
  o->max_conn_bytes = (size_t)8 << 20;
  o->max_service_bytes = (size_t)256 << 20;
  o->builtins = APPMSG_BUILTIN_PING | APPMSG_BUILTIN_STATUS | APPMSG_BUILTIN_DESCRIBE;
  o->log_level = APPMSG_LOG_INFO;
  o->measure = 1;
}

/* The built-ins' descriptions. */
static const struct appmsg_action_doc ping_doc = {"Answers \"pong\" at once: a health check", NULL,
                                                  0, APPMSG_TYPE_STRING, "\"pong\""};
static const struct appmsg_action_doc status_doc = {
    "The service's counters since it started", NULL, 0, APPMSG_TYPE_OBJECT,
    "version, uptime_s, connections, requests, replies, errors by name, bytes in and out"};
static const struct appmsg_param describe_params[] = {
    {"name", APPMSG_TYPE_STRING, 0, "one action's description instead of all"},
};
static const struct appmsg_action_doc describe_doc = {
    "The actions of this service, their parameters and results", describe_params, 1,
    APPMSG_TYPE_OBJECT, "an OpenRPC document, or one method of it when a name is given"};

int appmsg_service_new(struct appmsg_service **out, struct appmsg_loop *loop,
                       const struct appmsg_service_opts *opts) {
  struct appmsg_service *s = appmsg__calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  if (loop == NULL) {
    int rc = appmsg_loop_new(&s->own_loop, APPMSG_LOOP_DEFAULT);
    if (rc) {
      appmsg__free(s);
      return rc;
    }
    loop = s->own_loop;
  }
  s->loop = loop;
  s->opts = opts;
  s->started = appmsg__clock_ms();
  s->self = s;
  s->fresh.svc = s;
  appmsg__svc_reply_init(s);
  strcpy(s->errors[APPMSG__ERROR_NAMES_MAX].name, "OTHER");
  s->unknown.fn = appmsg__svc_invalid_action;
  static const char *const others[] = {"_unknown", "_binary", "_invalid", "_other"};
  for (size_t i = 0; i < 4; i++)
    if (appmsg__svc_action_stats(s, others[i]) == NULL) {
      appmsg_service_free(s);
      return -ENOMEM;
    }
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc = appmsg_header_set(&h, "text/json", "utf-8");
  if (rc == 0)
    rc = appmsg_prepared_new(&s->json_hdr, &h);
  appmsg_header_cleanup(&h);
  if (rc == 0 && (opts->builtins & APPMSG_BUILTIN_PING))
    rc = appmsg_service_handle_doc(s, "ping", appmsg__svc_builtin_ping, NULL, &ping_doc);
  if (rc == 0 && (opts->builtins & APPMSG_BUILTIN_STATUS))
    rc = appmsg_service_handle_doc(s, "status", appmsg__svc_builtin_status, NULL, &status_doc);
  if (rc == 0 && (opts->builtins & APPMSG_BUILTIN_DESCRIBE))
    rc =
        appmsg_service_handle_doc(s, "describe", appmsg__svc_builtin_describe, NULL, &describe_doc);
  if (rc) {
    appmsg_service_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* Puts a handler for name[0..n) in the table, which has room; takes name and doc. */
static void table_put(struct appmsg__handler *t, size_t cap, struct appmsg__handler h) {
  size_t k = hash_name(h.name, h.len) & (cap - 1);
  while (t[k].name)
    k = (k + 1) & (cap - 1);
  t[k] = h;
}

/* Makes a table of cap entries from the current one, leaving out skip (whose name and doc the
 * caller frees).  Returns 0 or -ENOMEM (nothing changed). */
static int table_rebuild(struct appmsg_service *s, size_t cap, const struct appmsg__handler *skip) {
  struct appmsg__handler *t = appmsg__calloc(cap, sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < s->handlers_cap; i++)
    if (s->handlers[i].name && &s->handlers[i] != skip)
      table_put(t, cap, s->handlers[i]);
  appmsg__free(s->handlers);
  s->handlers = t;
  s->handlers_cap = cap;
  return 0;
}

int appmsg_service_handle_doc(struct appmsg_service *s, const char *action, appmsg_handler_fn fn,
                              void *ud, const struct appmsg_action_doc *doc) {
  if (action == NULL || appmsg_utf8_check(action, strlen(action)) != strlen(action))
    return -EINVAL;
  struct appmsg__doc *d = NULL;
  if (fn && doc) {
    int rc = appmsg__doc_copy(doc, &d);
    if (rc)
      return rc;
  }
  struct appmsg__action_stats *as = fn ? appmsg__svc_action_stats(s, action) : NULL;
  if (fn && as == NULL) {
    appmsg__free(d);
    return -ENOMEM;
  }
  size_t n = strlen(action);
  struct appmsg__handler *h = (struct appmsg__handler *)appmsg__svc_find_handler(s, action, n);
  if (h) {
    if (fn) {
      appmsg__free(h->doc);
      h->fn = fn;
      h->ud = ud;
      h->doc = d;
      h->stats = as;
      return 0;
    }
    /* Removal: the table made again without it (rare, so simple). */
    struct appmsg__handler gone = *h;
    int rc = table_rebuild(s, s->handlers_cap, h);
    if (rc)
      return rc;
    appmsg__free(gone.name);
    appmsg__free(gone.doc);
    s->nhandlers--;
    return 0;
  }
  if (fn == NULL)
    return 0;
  char *name = appmsg__strdup(action);
  int rc = name ? 0 : -ENOMEM;
  if (rc == 0 && 2 * (s->nhandlers + 1) > s->handlers_cap)
    rc = table_rebuild(s, s->handlers_cap ? 2 * s->handlers_cap : 16, NULL);
  if (rc) {
    appmsg__free(name);
    appmsg__free(d);
    return rc;
  }
  table_put(s->handlers, s->handlers_cap, (struct appmsg__handler){name, n, fn, ud, d, as});
  s->nhandlers++;
  return 0;
}

int appmsg_service_handle(struct appmsg_service *s, const char *action, appmsg_handler_fn fn,
                          void *ud) {
  return appmsg_service_handle_doc(s, action, fn, ud, NULL);
}

void appmsg_service_handle_binary(struct appmsg_service *s, appmsg_handler_fn fn, void *ud) {
  s->binary = (struct appmsg__handler){NULL, 0, fn, ud, NULL, NULL};
}

void appmsg_service_handle_unknown(struct appmsg_service *s, appmsg_handler_fn fn, void *ud) {
  s->unknown = (struct appmsg__handler){NULL,           0,    fn ? fn : appmsg__svc_invalid_action,
                                        fn ? ud : NULL, NULL, NULL};
}

void appmsg_service_metrics_hook(struct appmsg_service *s, appmsg_metrics_fn fn, void *ud) {
  s->metrics_fn = fn;
  s->metrics_ud = ud;
}

void appmsg_service_status_hook(struct appmsg_service *s, appmsg_status_fn fn, void *ud) {
  s->status_fn = fn;
  s->status_ud = ud;
}

int appmsg_service_listen(struct appmsg_service *s, const char *host, const char *port, char *err,
                          size_t errlen) {
  if (s->srv) {
    appmsg__errf(err, errlen, "the service is already listening");
    return -EALREADY;
  }
  s->sopts = s->opts->server;
  s->sopts.conn.counters = &s->io;
  return appmsg_server_new(&s->srv, s->loop, host, port, &s->sopts, &appmsg__svc_conn_cbs,
                           &appmsg__svc_server_cbs, s, err, errlen);
}

int appmsg_service_listen_fd(struct appmsg_service *s, appmsg_socket_t listen_fd, char *err,
                             size_t errlen) {
  if (s->srv) {
    appmsg__errf(err, errlen, "the service is already listening");
    appmsg__sock_close(listen_fd);
    return -EALREADY;
  }
  s->sopts = s->opts->server;
  s->sopts.conn.counters = &s->io;
  return appmsg_server_new_fd(&s->srv, s->loop, listen_fd, &s->sopts, &appmsg__svc_conn_cbs,
                              &appmsg__svc_server_cbs, s, err, errlen);
}

long appmsg_service_finish(struct appmsg_service *s, uint32_t drain_ms) {
  long left = s->srv ? appmsg_server_finish(s->srv, drain_ms) : 0;
  if (left < 0)
    appmsg__svc_log(s, APPMSG_LOG_ERROR, "event loop failed while draining: %s",
                    appmsg_strerror((int)left));
  else if (left > 0)
    appmsg__svc_log(s, APPMSG_LOG_WARN, "closing %ld connection(s) that did not finish in time",
                    left);
  return left;
}

const char *appmsg_service_address(const struct appmsg_service *s) {
  return s->srv ? appmsg_server_address(s->srv) : "?";
}

struct appmsg_server *appmsg_service_server(struct appmsg_service *s) {
  return s->srv;
}

void appmsg_service_drain(struct appmsg_service *s) {
  if (s->srv)
    appmsg_server_drain(s->srv);
}

int appmsg_service_run(struct appmsg_service *s, uint32_t drain_ms) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  /* Under TLS, SIGHUP reloads the certificate and key, and the service goes on. */
  struct appmsg_tls *tls = s->opts->server.conn.tls;
  int rc, sig;
  for (;;) {
    rc = appmsg_loop_stop_on_signals(s->loop, sigs, tls ? 3 : 2);
    if (rc == 0)
      rc = appmsg_loop_run(s->loop);
    sig = appmsg_loop_signal(s->loop);
    if (rc < 0 || sig != SIGHUP || tls == NULL)
      break;
    char err[512];
    if (appmsg_tls_reload(tls, err, sizeof err) == 0)
      appmsg__svc_log(s, APPMSG_LOG_INFO,
                      "SIGHUP: reloaded the TLS certificate and key; connections "
                      "open now keep theirs");
    else
      appmsg__svc_log(s, APPMSG_LOG_ERROR,
                      "SIGHUP: %s; still serving with the previous certificate", err);
  }
  appmsg_loop_stop_on_signals(s->loop, NULL, 0); /* a second Ctrl-C kills at once */
  if (rc < 0) {
    appmsg__svc_log(s, APPMSG_LOG_ERROR, "event loop failed: %s", appmsg_strerror(rc));
    return rc;
  }
  size_t open = s->srv ? appmsg_server_conn_count(s->srv) : 0;
  appmsg__svc_log(s, APPMSG_LOG_INFO, "%s: finishing %zu connection(s)",
                  sig == SIGINT ? "interrupted" : "terminated", open);
  appmsg_service_finish(s, drain_ms);
  return sig;
}

static void free_service(struct appmsg__deferred *d) {
  struct appmsg_service *s =
      (struct appmsg_service *)((char *)d - offsetof(struct appmsg_service, gone));
  appmsg__svc_reply_cleanup(s); /* owed requests (their pointers die here), the pool */
  for (size_t i = 0; i < s->handlers_cap; i++) {
    appmsg__free(s->handlers[i].name);
    appmsg__free(s->handlers[i].doc);
  }
  appmsg__free(s->handlers);
  appmsg__free(s->title);
  appmsg__free(s->version);
  appmsg__svc_metrics_cleanup(s);
  appmsg_prepared_free(s->json_hdr);
  appmsg__free(s->group);
  struct appmsg_loop *own = s->own_loop;
  appmsg__free(s);
  appmsg_loop_free(own);
}

void appmsg_service_free(struct appmsg_service *s) {
  if (s == NULL || s->freed)
    return;
  int inside = appmsg__loop_busy(s->loop);
  if (inside && s->own_loop) {
    /* Its own loop is running this very call and cannot be freed under it:
     * the loop is asked to stop, and the service must be freed once
     * appmsg_service_run() (or appmsg_loop_run()) has returned. */
    appmsg__svc_log(s, APPMSG_LOG_ERROR,
                    "appmsg_service_free() called from a callback of the service's own loop; "
                    "stopping the loop instead (free the service after it returns)");
    appmsg_loop_stop(s->loop);
    return;
  }
  s->freed = 1;
  /* Every connection is aborted; its on_close releases its requests.  The
   * service goes after them, at the end of the iteration when this is
   * called from a callback, else now. */
  appmsg_server_free(s->srv);
  s->srv = NULL;
  appmsg__http_free(s->http); /* its connections end too */
  s->http = NULL;
  appmsg__deferred_init(&s->gone, free_service);
  if (inside) {
    appmsg__loop_defer(s->loop, &s->gone);
  } else {
    appmsg__loop_run_deferred(s->loop); /* (what the loop still had to do, first) */
    free_service(&s->gone);             /* (its own loop too, if it made one) */
  }
}

struct appmsg_loop *appmsg_service_loop(const struct appmsg_service *s) {
  return s->loop;
}
