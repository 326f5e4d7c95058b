/*
 * A service: a server made of actions.
 *
 * A service is a server (server.h: listener, connection limit, timeouts,
 * output cap, drain) that reads every request, hands it to a handler and
 * sends the replies back in request order.  A request is either
 *   - text/json content shaped {"action": NAME, ...} (the guide's request
 *     form): it goes to the handler registered for NAME, or to the
 *     unknown-action handler, which by default answers with the guide's
 *     wording {"result": "Error: invalid action 'NAME'."}; or
 *   - any other content type (the guide's binary requests): it goes to the
 *     binary handler.
 *
 *   static void on_get(struct appmsg_request *req, void *ud) {
 *     const char *key = appmsg_request_string(req, "key");
 *     const char *value = key ? lookup(ud, key) : NULL;
 *     if (value)
 *       appmsg_reply_result(req, value);                    // {"result": "..."}
 *     else
 *       appmsg_reply_error(req, "NOT_FOUND", "no such key"); // an error reply
 *   }
 *
 *   struct appmsg_service_opts o;
 *   appmsg_service_opts_default(&o);
 *   appmsg_service_new(&svc, NULL, &o);      // NULL: on a loop of its own
 *   appmsg_service_handle(svc, "get", on_get, table);
 *   appmsg_service_listen(svc, "127.0.0.1", "65432", err, sizeof err);
 *   appmsg_service_run(svc, 10000);      // until SIGINT/SIGTERM, then drain
 *   appmsg_service_free(svc);
 *
 * Checks before any handler runs.  text/json content must be in utf-8 and
 * be valid JSON (else a CONTENT_UTF8 / CONTENT_JSON error reply with the
 * offset into the content); it must be an object with a string "action"
 * (else BAD_REQUEST).  Framing errors (PROTOCOL.md) get their error reply
 * and end the connection, as with a plain server.  In every case the
 * connection goes on after a content or request error.
 *
 * Replies.  A handler answers with one of the appmsg_reply_*() functions:
 * a result (a string, or any JSON value), an error reply with a name, or
 * content of any type.  It may answer at once or later - after a timer or
 * a call to another system: a request that is not answered when its
 * handler returns stays owed, and the request pointer stays valid until
 * the one reply is made.  Replies leave each connection in request order,
 * even when a later request is answered first (the earlier one's reply is
 * waited for).  A request not answered within the service's deadline gets
 * a TIMEOUT error reply in its place; the handler's reply, when it comes,
 * is then dropped (and logged).  If the connection closes first, the reply
 * is dropped too.  Either way the reply call is safe, logs and returns
 * APPMSG_E_CLOSED.  A second reply is refused with -EALREADY (and logged)
 * while the request is still the application's (inside its handler, or
 * until the end of the loop iteration after a reply made outside it).
 * Every request must be answered exactly once; after a reply made outside
 * the handler the request is the library's again: do not use the pointer.
 * Replies made outside a handler (from a timer, or from another library's
 * callback, such as a database client's) are queued and written at the end
 * of the loop's current iteration: many made one after another leave in
 * one write per connection.
 *
 * Budgets.  Replies owed hold memory: a request answered later keeps its
 * content and header, and a reply made before an earlier one's waits in
 * memory for its turn.  A connection stops being read while it owes
 * max_pending replies or its owed requests and waiting replies hold more
 * than max_conn_bytes, or while the whole service holds more than
 * max_service_bytes (those bytes plus the output queued on every
 * connection); it reads again once back under half its own limits and
 * three quarters of the service's.  The output queued on one connection is
 * bounded by its read_pause and max_output (conn.h).  Reading pauses, it
 * never fails: a peer that pipelines faster than the service answers is
 * simply read more slowly.
 *
 * Request ids (PROTOCOL.md).  When a request's header carries the extra
 * key "request-id" (any JSON value), its reply's header carries
 * "request-id" with the same value, byte for byte as the requester wrote
 * it.  Error replies to content and request errors carry it too; replies to
 * framing errors cannot (the header may be unreadable).
 *
 * Built-in actions (APPMSG_BUILTIN_*, switched on by default; a handler
 * registered under the same name replaces one):
 *   {"action": "ping"}   -> {"result": "pong"}
 *   {"action": "describe"} -> {"result": {"openrpc": ..., "methods": [...]}}
 *     and {"action": "describe", "name": ACTION} -> one method (see
 *     "described actions" below)
 *   {"action": "status"} -> {"result": {"title": ..., "version": ..., "uptime_s": ...,
 *     "connections": ..., "connections_total": ..., "requests": ...,
 *     "replies": ..., "pending": ..., "threads": ..., "errors": {NAME: count, ...},
 *     "bytes_in": ..., "bytes_out": ...}} plus the members a status hook
 *     adds.  "errors" counts every error reply sent by name (the guide's
 *     invalid-action reply, which has no name, as INVALID_ACTION).
 *
 * Lifecycle: no call here frees anything its caller may still hold.  A
 * handler and any callback may call every function of this header; a
 * request answered outside its handler, a connection closing, and a
 * service freed from a callback are finished at the end of the loop
 * iteration.
 *
 * Threads and ownership.  A service belongs to one loop and one thread;
 * nothing here is thread-safe, and every handler runs on the loop's
 * thread.  The caller owns the service (appmsg_service_free()); the service
 * owns its connections and requests.  opts must outlive the service.
 * The library never prints: log lines go to opts.log.
 */
#ifndef APPMSG_SERVICE_H
#define APPMSG_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "conn.h"
#include "json.h"
#include "loop.h"
#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_service;
struct appmsg_request;

/* A request handler: answer req now or later (see above).  ud is the
 * pointer given when the handler was registered. */
typedef void (*appmsg_handler_fn)(struct appmsg_request *req, void *ud);

/* Built-in actions, for appmsg_service_opts.builtins. */
#define APPMSG_BUILTIN_PING 0x1u     /* {"action": "ping"} -> {"result": "pong"} */
#define APPMSG_BUILTIN_STATUS 0x2u   /* {"action": "status"} -> the counters */
#define APPMSG_BUILTIN_DESCRIBE 0x4u /* {"action": "describe"} -> the actions (below) */

struct appmsg_service_opts {
  struct appmsg_server_opts server; /* listener and connection options (server.h) */
  uint32_t deadline_ms;             /* a request owed this long gets a TIMEOUT reply (0: never) */
  uint32_t max_pending;             /* replies owed per connection before reading pauses */
  size_t max_conn_bytes;    /* bytes one connection's owed requests and waiting replies may hold
                               before its reading pauses (0: no limit) */
  size_t max_service_bytes; /* bytes all of them, and the output queued on every connection, may
                               hold before reading pauses (0: no limit) */
  unsigned builtins;        /* APPMSG_BUILTIN_* to switch on */
  appmsg_log_fn log;        /* where log lines go (NULL: nowhere) */
  void *log_ud;             /* handed to log */
  enum appmsg_log_level log_level; /* lines less important than this are not made */
  int measure;      /* 1: count and time every request by action (see "Measurements" below);
                       0: only the service's totals */
  uint32_t slow_ms; /* a request answered this long after it arrived is logged (WARN, with its
                       action, duration, peer and request id; at most 10 lines a second, the rest
                       counted in the next line); 0: none */
};

/* Defaults: appmsg_server_opts_default(), deadline 30 s, 1024 pending,
 * 8 MiB per connection and 256 MiB per service held, ping, status and describe on,
 * requests measured, no slow-request log,
 * no log, level INFO. */
APPMSG_API void appmsg_service_opts_default(struct appmsg_service_opts *o);

/* Makes a service on loop - or, when loop is NULL, on a loop of its own
 * (APPMSG_LOOP_DEFAULT, freed with the service; see appmsg_service_loop()).
 * It serves once appmsg_service_listen() is called.  Returns 0 and *s,
 * -ENOMEM, or the loop's error. */
APPMSG_API int appmsg_service_new(struct appmsg_service **s, struct appmsg_loop *loop,
                                  const struct appmsg_service_opts *opts);

/*
 * Registers fn for requests whose "action" is action (a UTF-8 string;
 * copied), replacing any handler or built-in of that name; fn NULL
 * removes it (a built-in too: the action then counts as unknown).
 * Returns 0, -EINVAL or -ENOMEM.
 */
APPMSG_API int appmsg_service_handle(struct appmsg_service *s, const char *action,
                                     appmsg_handler_fn fn, void *ud);

/* ---- described actions ------------------------------------------------
 *
 * An action may be registered with a description: a one-line summary, its
 * parameters (members of the request object, each with a type and whether
 * it is required) and the type of its result.  The service then checks a
 * request before its handler runs: a required member that is missing, or
 * a described member of another type, gets a BAD_REQUEST error reply that
 * names the member ("member 'value' must be an integer, not a string"),
 * and the handler is not called.  So a handler reads what it described
 * with no checks of its own: appmsg_request_string() of a required string
 * member is never NULL (it was unescaped before the handler ran), and
 * appmsg_request_int(), _number() and _bool() of a required member of
 * that type return 0.  Members not described are not looked at (a typo in
 * an optional member's name goes unnoticed; a required one's is caught as
 * missing), and when a key repeats the last one counts, as everywhere.
 *
 * The built-in describe action (APPMSG_BUILTIN_DESCRIBE) answers every
 * action's description, shaped as an OpenRPC document (PROTOCOL.md,
 * section 7); actions registered with appmsg_service_handle() are listed
 * by name, marked "x-described": false, and are not checked.
 */

/* The type of a parameter or of a result. */
enum appmsg_type {
  APPMSG_TYPE_ANY = 0, /* any JSON value */
  APPMSG_TYPE_STRING,  /* a JSON string */
  APPMSG_TYPE_INTEGER, /* a JSON number written as an integer (no fraction or exponent) that
                          fits in 64 bits: appmsg_request_int() */
  APPMSG_TYPE_NUMBER,  /* any JSON number: appmsg_request_number() */
  APPMSG_TYPE_BOOLEAN, /* true or false: appmsg_request_bool() */
  APPMSG_TYPE_OBJECT,  /* a JSON object: appmsg_request_json() */
  APPMSG_TYPE_ARRAY,   /* a JSON array: appmsg_request_json() */
  APPMSG_TYPE_NULL,    /* null (a result that says nothing but "done") */
};

/* The type's name as describe and error replies spell it ("integer"; "any" for
 * APPMSG_TYPE_ANY), or NULL for a value outside the enum. */
APPMSG_API const char *appmsg_type_name(enum appmsg_type t);

/* One parameter of an action: a member of the request object. */
struct appmsg_param {
  const char *name;      /* the member's key (UTF-8) */
  enum appmsg_type type; /* what its value must be */
  int required;          /* 1: a request without it is refused */
  const char *summary;   /* one line for a person, or NULL */
};

/* What an action does, takes and answers.  Everything is copied. */
struct appmsg_action_doc {
  const char *summary;               /* one line for a person, or NULL */
  const struct appmsg_param *params; /* nparams of them (names distinct, not "action") */
  size_t nparams;
  enum appmsg_type result;  /* the type of the reply's "result" */
  const char *result_about; /* one line on the result, or NULL */
};

/*
 * appmsg_service_handle() with a description (doc NULL: none, as
 * appmsg_service_handle()).  Registering the action again, either way,
 * replaces the description too; describing a built-in replaces it.
 * Returns 0, -EINVAL (bad UTF-8, a parameter without a name, named
 * "action" or named twice, a type outside the enum) or -ENOMEM.
 */
APPMSG_API int appmsg_service_handle_doc(struct appmsg_service *s, const char *action,
                                         appmsg_handler_fn fn, void *ud,
                                         const struct appmsg_action_doc *doc);

/* The title and version describe reports for the service (its "info";
 * copied): the program's name and its own version, say "kv-server",
 * "1.0".  By default "appmsg service" and the library's version.  The title
 * is also status's "title" (and the status page's heading).  Returns 0,
 * -EINVAL or -ENOMEM. */
APPMSG_API int appmsg_service_set_info(struct appmsg_service *s, const char *title,
                                       const char *version);

/* The handler for requests of any content type but text/json (NULL: they
 * get a BAD_REQUEST error reply). */
APPMSG_API void appmsg_service_handle_binary(struct appmsg_service *s, appmsg_handler_fn fn,
                                             void *ud);

/* The handler for actions nobody registered (NULL: the guide's reply,
 * {"result": "Error: invalid action 'NAME'."}). */
APPMSG_API void appmsg_service_handle_unknown(struct appmsg_service *s, appmsg_handler_fn fn,
                                              void *ud);

/*
 * A status hook: fn writes extra members for the status reply - JSON text
 * such as "\"store\": {\"connected\": true}" (no braces, no leading
 * comma) - into out, at most cap bytes, and returns the full length (it is
 * called again with more room when that is above cap).  NULL removes it.
 */
typedef size_t (*appmsg_status_fn)(void *ud, char *out, size_t cap);
APPMSG_API void appmsg_service_status_hook(struct appmsg_service *s, appmsg_status_fn fn, void *ud);

/*
 * A metrics hook: fn writes more of the metrics endpoint's exposition (the
 * Prometheus text format 0.0.4: "# HELP", "# TYPE" and sample lines, each
 * ending in a line feed) into out, at most cap bytes, and returns the full
 * length (it is called again with more room when that is above cap).  The
 * application's own state, as the status hook gives it to status: a data
 * store's connections, say.  Called on the thread of the service that
 * serves the endpoint.  NULL removes it.
 */
typedef size_t (*appmsg_metrics_fn)(void *ud, char *out, size_t cap);
APPMSG_API void appmsg_service_metrics_hook(struct appmsg_service *s, appmsg_metrics_fn fn,
                                            void *ud);

/* Listens on host:port (net.h forms; "0" picks a free port) and serves.
 * Once per service.  Returns 0, or a negative code with a sentence in err. */
APPMSG_API int appmsg_service_listen(struct appmsg_service *s, const char *host, const char *port,
                                     char *err, size_t errlen);

/* appmsg_service_listen() on a socket that already listens (see
 * appmsg_server_new_fd()), e.g. a dup() of another thread's service's Unix
 * socket.  The service owns listen_fd from now on. */
APPMSG_API int appmsg_service_listen_fd(struct appmsg_service *s, appmsg_socket_t listen_fd,
                                        char *err, size_t errlen);

/*
 * Serves the service's metrics over HTTP on host:port (net.h forms; "0"
 * picks a free port), on the service's own loop, beside its appmsg port:
 *   GET /metrics  the counters and per-action latency histograms in the
 *                 Prometheus text format 0.0.4 (summed over the group),
 *                 the TLS certificate's expiry when TLS is on, and what a
 *                 metrics hook adds
 *   GET /status   the status action's result, as JSON
 *   GET /         a status page for a person: live rates, latency per
 *                 action and a chart of the last minutes, redrawn every
 *                 second from /status; everything served from here
 * HEAD too; anything else is 405, an unknown path 404.  Requests are read
 * by a real HTTP/1.1 parser with limits of their own (8 KiB of request
 * head, a few seconds to send it, a few dozen connections): a hostile or
 * slow HTTP peer gets a 4xx or is closed and never disturbs the appmsg
 * port.  Bind it to loopback unless it is meant to be reached from
 * elsewhere (it has no authentication).  Once per service; for a group,
 * one of its services serves for all.  Returns 0, or a negative code with a
 * sentence in err.
 */
APPMSG_API int appmsg_service_metrics_listen(struct appmsg_service *s, const char *host,
                                             const char *port, char *err, size_t errlen);

/* The metrics endpoint's address as text ("127.0.0.1:9465"; thread buffer), or "?". */
APPMSG_API const char *appmsg_service_metrics_address(const struct appmsg_service *s);

/* The listening address as text ("127.0.0.1:65432"; thread buffer), or "?". */
APPMSG_API const char *appmsg_service_address(const struct appmsg_service *s);

/* The loop the service runs on. */
APPMSG_API struct appmsg_loop *appmsg_service_loop(const struct appmsg_service *s);

/* The server underneath (its connection count, its descriptor), or NULL
 * before appmsg_service_listen(). */
APPMSG_API struct appmsg_server *appmsg_service_server(struct appmsg_service *s);

/* Stops accepting and closes every connection once it owes nothing and its
 * current frame is answered.  Idempotent. */
APPMSG_API void appmsg_service_drain(struct appmsg_service *s);

/*
 * appmsg_service_drain(), then runs the loop until every connection has
 * finished (its replies owed sent) or drain_ms have passed, logging what
 * is cut off.  Returns the connections left, or a negative code if the
 * loop failed.  For a thread of a program with a loop per thread, once
 * its loop was stopped (appmsg_loop_stop_async()).
 */
APPMSG_API long appmsg_service_finish(struct appmsg_service *s, uint32_t drain_ms);

/*
 * Runs the loop until SIGINT or SIGTERM (which it handles meanwhile), then
 * drains: no new connections, the replies in flight are finished, for at
 * most drain_ms.  A second signal during the drain ends the process as
 * usual.  With TLS (opts.server.conn.tls), SIGHUP reloads the certificate
 * and key (appmsg_tls_reload(), logged either way) and the service goes
 * on: connections open then keep what they have.  Returns the signal that
 * stopped it, or a negative code if the loop failed.
 */
APPMSG_API int appmsg_service_run(struct appmsg_service *s, uint32_t drain_ms);

/*
 * Frees the service: open connections are aborted (their requests
 * dropped), owed requests freed (their pointers die with it).  From
 * outside the loop's callbacks everything ends before it returns; from a
 * callback (a handler, a timer of the application's) on a loop the
 * application made, the memory goes at the end of the iteration.  A
 * service on a loop of its own cannot free that loop while it runs this
 * very call: from its callbacks this only stops the loop (and logs) - free
 * it once appmsg_service_run() or appmsg_loop_run() returned.  NULL is
 * fine.
 */
APPMSG_API void appmsg_service_free(struct appmsg_service *s);

/*
 * Measurements.  Every request is counted and timed under its action (a
 * registered one, or "_unknown" for an action nobody handles, "_binary"
 * for other content types, "_invalid" for a request whose action could
 * not be read, and "_other" past 128 registered actions): requests
 * answered, error replies among them, requests in flight, and the time
 * from its arrival (when the loop woke up for the read that completed its
 * frame) to its reply being queued, in a histogram.  The status action
 * reports them under "actions" ({NAME: {"requests", "errors", "pending",
 * "p50_s", "p99_s", "max_s"}}), and the metrics endpoint in full (see
 * appmsg_service_metrics_listen()).  It costs a clock read per reply; the
 * counters have one writer, the service's thread, and are summed over a
 * group when read.
 */

/* The counters, as the status action reports them. */
struct appmsg_service_stats {
  uint64_t uptime_ms;         /* since appmsg_service_new() */
  uint64_t connections;       /* open now */
  uint64_t connections_total; /* accepted since the start (refused ones not counted) */
  uint64_t requests;          /* complete requests received */
  uint64_t replies;           /* replies sent (error replies included) */
  uint64_t errors;            /* error replies sent, all names together */
  uint64_t pending;           /* requests owed a reply now */
  uint64_t bytes_in;          /* bytes received */
  uint64_t bytes_out;         /* bytes sent */
};
APPMSG_API void appmsg_service_stats(const struct appmsg_service *s,
                                     struct appmsg_service_stats *out);

/*
 * Several services that report as one - one per thread, each with its own
 * loop, listening on one port (server.h's reuseport) - form a group: their
 * status action, and appmsg_service_stats_total(), sum the counters of
 * all of them.  Each thread writes only its own counters (no lock on the
 * request path); status reads the others' with relaxed atomic loads.  Form
 * the group before the loops run, and free its services only after every
 * loop has stopped.  Returns 0 or -ENOMEM.
 */
APPMSG_API int appmsg_service_group(struct appmsg_service *const *services, size_t n);

/* The counters summed over the service's group (its own when alone). */
APPMSG_API void appmsg_service_stats_total(const struct appmsg_service *s,
                                           struct appmsg_service_stats *out);

/* How many error replies named name this service sent (0 if none). */
APPMSG_API uint64_t appmsg_service_error_count(const struct appmsg_service *s, const char *name);

/* ---- inside a handler: the request ------------------------------------ */

/* The action (unescaped, NUL-terminated), or NULL for a binary request. */
APPMSG_API const char *appmsg_request_action(const struct appmsg_request *r);

/* The request's header: content type, encoding, extra keys (header.h). */
APPMSG_API const struct appmsg_header *appmsg_request_header(const struct appmsg_request *r);

/* The content and its length (never NULL). */
APPMSG_API const void *appmsg_request_content(const struct appmsg_request *r, size_t *len);

/* The peer as text ("127.0.0.1:5555"; thread buffer, next call overwrites). */
APPMSG_API const char *appmsg_request_peer(const struct appmsg_request *r);

/*
 * A member of a text/json request object, read by the strict scanner
 * without building a tree (the last one when a key repeats, as Python
 * reads it): 0 and *m (spans into the content), or -ENOENT.
 */
APPMSG_API int appmsg_request_member(const struct appmsg_request *r, const char *key,
                                     struct appmsg_json_member *m);

/* A member's value as JSON text, exactly as the request wrote it (a string
 * with its quotes), and its length in *len; NULL when it is absent.
 * Borrowed: valid as long as the request. */
APPMSG_API const char *appmsg_request_json(const struct appmsg_request *r, const char *key,
                                           size_t *len);

/* A string member, unescaped and NUL-terminated, or NULL when it is absent
 * or not a string (or memory ran out).  Owned by the request. */
APPMSG_API const char *appmsg_request_string(struct appmsg_request *r, const char *key);

/* An integer member (written as an integer that fits in long long): 0 and
 * *v, or -ENOENT (absent), -EINVAL (another type or form), -ERANGE. */
APPMSG_API int appmsg_request_int(const struct appmsg_request *r, const char *key, long long *v);

/* A number member: 0 and *v (the nearest double), or -ENOENT (absent),
 * -EINVAL (not a number), -ERANGE (beyond a double's range). */
APPMSG_API int appmsg_request_number(const struct appmsg_request *r, const char *key, double *v);

/* A boolean member: 0 and *v (1 for true, 0 for false), or -ENOENT (absent)
 * or -EINVAL (not true or false). */
APPMSG_API int appmsg_request_bool(const struct appmsg_request *r, const char *key, int *v);

/*
 * Whether a reply made now would reach the peer: 1 while the connection
 * is open and the deadline has not passed, else 0 - so a handler working
 * later can stop early.
 */
APPMSG_API int appmsg_request_alive(const struct appmsg_request *r);

/* The service a request belongs to. */
APPMSG_API struct appmsg_service *appmsg_request_service(const struct appmsg_request *r);

/* ---- replies: exactly one per request --------------------------------- */

/*
 * Each reply function returns 0 when the reply is sent (or queued behind
 * earlier ones); -EINVAL for bad input (nothing is sent, the request is
 * still owed); -EALREADY when the request was answered already (only
 * possible inside its handler); APPMSG_E_CLOSED when the connection is
 * gone or the deadline passed (the reply is dropped, the request freed);
 * or -ENOMEM.
 */

/* {"result": "TEXT"}: text is UTF-8 (quoted as Python's json.dumps does). */
APPMSG_API int appmsg_reply_result(struct appmsg_request *r, const char *text);

/* {"result": JSON}: json is any JSON value as text, strictly checked. */
APPMSG_API int appmsg_reply_json(struct appmsg_request *r, const char *json, size_t len);

/*
 * An error reply, {"result": "Error: REASON.", "error": "NAME"}: name is
 * 1 to 64 characters of A-Z, 0-9 and '_' (the library's names, such as
 * BAD_REQUEST, TIMEOUT, UNAVAILABLE, INTERNAL, or the application's own,
 * such as NOT_FOUND); reason is UTF-8 text (a full stop is added).
 */
APPMSG_API int appmsg_reply_error(struct appmsg_request *r, const char *name, const char *reason);

/* Content of any type: content_type and encoding are UTF-8 strings
 * ("binary/custom-server-binary-type", "binary"). */
APPMSG_API int appmsg_reply_content(struct appmsg_request *r, const char *content_type,
                                    const char *content_encoding, const void *content, size_t len);

#ifdef __cplusplus
}
#endif
#endif
