/*
 * A client: calls instead of sockets.
 *
 * A client keeps one connection to a server (host and port as in net.h:
 * IPv4, IPv6, a host name - every resolved address is tried in turn - or
 * unix:/path) and turns requests into calls: each call sends one request
 * and its callback runs once, with the reply or with why there is none.
 * Many calls may be in flight at once on the connection (pipelined); each
 * reply is matched to its call in order, and by "request-id" when the
 * reply carries one.  A whole program:
 *
 *   #include <stdio.h>
 *   #include <appmsg/appmsg.h>
 *
 *   static void on_reply(const struct appmsg_reply *r, void *ud) {
 *     if (r->status == 0)
 *       printf("%s\n", r->result);            // {"result": "..."}: the string
 *     else
 *       printf("failed: %s\n", r->reason);    // an error reply, a timeout, ...
 *     appmsg_client_free(ud);                 // done: the loop has nothing left
 *   }
 *
 *   int main(void) {
 *     struct appmsg_loop *loop;
 *     struct appmsg_client *cl;
 *     struct appmsg_client_opts o;
 *     appmsg_client_opts_default(&o);
 *     if (appmsg_loop_new(&loop, APPMSG_LOOP_DEFAULT) != 0 ||
 *         appmsg_client_new(&cl, loop, "127.0.0.1", "65432", &o) != 0)
 *       return 1;
 *     if (appmsg_client_call(cl, on_reply, cl, "search", "value", "morpheus", NULL) != 0)
 *       appmsg_client_free(cl);
 *     appmsg_loop_run(loop);                  // returns once the client is freed
 *     appmsg_loop_free(loop);
 *     return 0;
 *   }
 *
 * A client keeps its loop alive while it exists (it reconnects when it
 * must); free it when its work is done, or stop the loop.
 *
 * Connecting.  The client connects when made, and again by itself after
 * the connection is lost or cannot be made: after a delay that doubles
 * from backoff_min_ms up to backoff_max_ms, with jitter (a random delay
 * between half and all of it), so that many clients of one server do not
 * come back in step; never a busy loop.  A connection that works resets
 * the delay.  A host name is looked up off the loop, on a thread of its
 * own, one lookup at a time per client: a resolver that never answers
 * holds that client's attempts (each fails after connect_timeout_ms), never
 * the loop or other clients.  An address needs no lookup.
 *
 * Queue and budgets.  A call goes to the connection at once when the
 * client is connected, under max_in_flight, and the connection's unsent
 * bytes are under max_queued_bytes.  Otherwise it waits in the queue - at
 * most max_queued calls and max_queued_bytes bytes, connected or not - and
 * is sent when there is room; past that, the call fails at once with
 * APPMSG_E_QUEUE_FULL (a program feeding many calls runs the loop until
 * replies make room, as app-client does with its standard input).  With
 * max_queued 0 nothing waits.  A call that timed out while in flight keeps
 * its place as a placeholder, so that later replies still match; when the
 * placeholders fill max_in_flight (or pass max_queued when that is 0, or 1024) the
 * server is taken to be no longer answering on this connection, and the
 * client connects again.
 *
 * Outcomes.  Every call has a timeout (the client's call_timeout_ms, or its
 * own), counted from the moment of the call, waiting in the queue
 * included.  A call ends one way (appmsg_reply.status, below):
 *   - answered: 0, or APPMSG_E_ERROR_REPLY for an error reply;
 *   - APPMSG_E_NOT_SENT: never written to the socket (the connect failed,
 *     it timed out in the queue, the client was freed first, or the
 *     connection was lost before its bytes left): the server never saw
 *     it, and it is safe to send again; cause says why;
 *   - APPMSG_E_TIMEOUT: handed to the connection, and no reply in time (it
 *     may still be sent and acted on; a late reply is read and dropped);
 *   - APPMSG_E_CLOSED: sent, and the connection was lost (or the client
 *     was freed) before the reply: the server may or may not have acted on
 *     it, so the library never sends it again.
 *
 * Callbacks.  A call that returns 0 has its callback run exactly once,
 * later, from the loop - never from inside the call itself - with the
 * reply or the reason; a call that returns an error never runs it.  The
 * client runs a callback only when its own state is whole, so a callback
 * may do anything: make new calls, free the client, free or stop the loop's
 * other users.  appmsg_client_free() runs the callbacks of every call still
 * waiting (APPMSG_E_NOT_SENT or APPMSG_E_CLOSED) before it returns.
 *
 * Lifecycle: no call here frees anything its caller may still hold.
 * appmsg_client_free() from a callback marks the client and the loop frees
 * its memory at the end of the iteration (the client's own code may be
 * under the callback); from outside the loop's callbacks it frees at once.
 *
 * TLS.  opts->conn.tls (a client context, tls.h) makes every connection
 * TLS; the name verified is opts->conn.tls_server_name, or else the host.
 * The connect timeout covers the handshake.  A handshake that fails is
 * reported like a failed connect, with its sentence ("TLS with HOST:PORT
 * failed: the server's certificate is not valid for 'HOST' ..."); a
 * refusal that comes after the handshake (a server that does not accept
 * our certificate, under TLS 1.3) fails the calls in flight with the TLS
 * code (APPMSG_E_TLS_VERIFY ...) rather than APPMSG_E_CLOSED.
 *
 * Threads and ownership.  A client belongs to one loop and one thread.
 * The caller owns the client and frees it; opts must outlive it.  The
 * reply given to a callback, and everything it points to, is valid only
 * during the callback.
 */
#ifndef APPMSG_CLIENT_H
#define APPMSG_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "conn.h"
#include "header.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_client;

struct appmsg_client_opts {
  struct appmsg_conn_opts conn; /* limits and output cap (conn.h); idle/frame timeouts unused */
  uint32_t connect_timeout_ms;  /* per connect attempt to one address, resolving included
                                   (0: none of its own) */
  uint32_t call_timeout_ms;     /* a call's default timeout (0: none) */
  uint32_t backoff_min_ms;      /* the first delay before connecting again (0: 100 ms) */
  uint32_t backoff_max_ms;      /* the largest (0: 5 s; never below backoff_min_ms) */
  size_t max_queued;            /* calls waiting to be sent, connected or not (0: none wait) */
  size_t max_queued_bytes;      /* bytes of requests waiting to be sent: the queue's, and the
                                   connection's not yet written (0: no limit; one request
                                   larger than this may wait alone) */
  size_t max_in_flight;         /* calls sent and not yet answered (0: no limit) */
  int reconnect;                /* 0: a lost connection is not made again (calls then fail) */
  int request_ids;              /* 1: number every request with a "request-id" */
  appmsg_log_fn log;            /* connection events (NULL: none) */
  void *log_ud;                 /* handed to log */
};

/* Defaults: appmsg_conn_opts_default() with 1 GiB content and no
 * timeouts of its own, connect 5 s, calls 10 s, backoff 100 ms to 5 s,
 * 1024 calls and 4 MiB queued, no in-flight limit, reconnect on, no
 * request ids. */
APPMSG_API void appmsg_client_opts_default(struct appmsg_client_opts *o);

/* What a call's callback gets. */
struct appmsg_reply {
  int status;                         /* 0, or why there is no usable reply (below) */
  int cause;                          /* the error behind a status that is not 0: the connect
                                         error, APPMSG_E_TIMEOUT, -ECONNRESET ... (or 0) */
  const char *reason;                 /* a sentence when status != 0 ("timed out after 10 s") */
  const struct appmsg_header *header; /* the reply's header, or NULL when none came */
  const void *content;                /* the reply's content ("" when none) */
  size_t len;                         /* its length */
  const char *result;                 /* text/json {"result": "..."}: the string, else NULL */
  const char *result_json;            /* text/json {"result": X}: X as JSON text, else NULL */
  size_t result_json_len;             /* its length */
  const char *error;                  /* an error reply's name ("NOT_FOUND"), else NULL */
};
/*
 * status is one of:
 *   0                    a reply; for an error reply {"result": ..., "error": NAME},
 *                        status is APPMSG_E_ERROR_REPLY instead, with error = NAME
 *                        and reason = its result text
 *   APPMSG_E_ERROR_REPLY the server answered with an error reply (see above)
 *   APPMSG_E_NOT_SENT    never sent: safe to send again; cause is the connect error
 *                        (-ECONNREFUSED, APPMSG_E_ADDRESS, a TLS code ...),
 *                        APPMSG_E_TIMEOUT (its time ran out in the queue), APPMSG_E_CLOSED
 *                        (the client was freed) or why the connection was lost
 *   APPMSG_E_TIMEOUT     sent, no reply within the call's timeout
 *   APPMSG_E_CLOSED      sent, and the connection was lost (cause: why, e.g.
 *                        -ECONNRESET) or the client was freed: it may have run
 *   other codes          sent, and the connection ended on a reply that could not be
 *                        read (a framing error such as APPMSG_E_HEADER_NOT_OBJECT, a
 *                        TLS failure, -ENOMEM): every call in flight gets that code
 */

/* A call's callback. */
typedef void (*appmsg_call_fn)(const struct appmsg_reply *r, void *ud);

/* One request, for appmsg_client_send(). */
struct appmsg_call {
  const char *content_type;     /* NULL: "text/json" */
  const char *content_encoding; /* NULL: "utf-8" for text/json, else "binary" */
  const void *content;          /* the content (copied) */
  size_t len;                   /* its length */
  uint32_t timeout_ms;          /* 0: the client's call_timeout_ms */
  const char *request_id;       /* a request-id's value as JSON text, or NULL */
  const char *const *extras;    /* more header members: key, value as JSON text, key, value ...,
                                   NULL (or NULL: none); not the required keys, and request-id
                                   goes in request_id (replies are matched by it) */
};

/*
 * Makes a client for host:port and starts connecting (a name is looked up
 * off the loop; the connection is made as the loop runs).  Returns 0 and
 * *c, or -ENOMEM; an address that cannot be reached is not an error here:
 * calls report it.
 */
APPMSG_API int appmsg_client_new(struct appmsg_client **c, struct appmsg_loop *loop,
                                 const char *host, const char *port,
                                 const struct appmsg_client_opts *opts);

/*
 * Sends a request (or queues it: see above).  Returns 0 (cb runs once,
 * later), or an error with cb never run: -EINVAL (a bad header field or
 * request-id, or a client being freed), APPMSG_E_QUEUE_FULL (no room:
 * try again once replies came), the last connect error when the client
 * gave up connecting (reconnect off) or waits to connect again with no
 * queue allowed, or -ENOMEM.
 */
APPMSG_API int appmsg_client_send(struct appmsg_client *c, const struct appmsg_call *call,
                                  appmsg_call_fn cb, void *ud);

/*
 * A text/json request {"action": ACTION, KEY: VALUE, ...} built from
 * string pairs (UTF-8, quoted here), the list ending with NULL:
 *   appmsg_client_call(c, cb, ud, "search", "value", "morpheus", NULL);
 * Returns as appmsg_client_send().
 */
APPMSG_API int appmsg_client_call(struct appmsg_client *c, appmsg_call_fn cb, void *ud,
                                  const char *action, ...);

/* ---- typed members -------------------------------------------------------
 *
 * A request's members with their JSON types, so that no caller writes JSON
 * by hand for a number:
 *
 *   const struct appmsg_arg args[] = {APPMSG_ARG_S("key", "a"), APPMSG_ARG_I("value", 42)};
 *   appmsg_client_call_args(c, on_reply, ud, "set", args, 2);
 *
 * or, in C99 and later, with the array made in place:
 *
 *   appmsg_client_call_args(c, on_reply, ud, "set",
 *                           APPMSG_ARGS(APPMSG_ARG_S("key", "a"), APPMSG_ARG_I("value", 42)));
 *
 * The reply's result as a tree: appmsg/adapters/cjson.h.
 */
enum appmsg_arg_type {
  APPMSG_ARG_STRING = 1, /* s: UTF-8 text, quoted here */
  APPMSG_ARG_INT,        /* i */
  APPMSG_ARG_NUMBER,     /* d: a finite double, written in its shortest exact form */
  APPMSG_ARG_BOOL,       /* i: 0 is false, anything else true */
  APPMSG_ARG_NULL,       /* null */
  APPMSG_ARG_JSON,       /* s, len: any JSON value as text (len 0: strlen(s)), strictly checked */
};

/* One member of a request object. */
struct appmsg_arg {
  const char *key;           /* the member's key (UTF-8, quoted here) */
  enum appmsg_arg_type type; /* which of the fields below holds its value */
  const char *s;             /* APPMSG_ARG_STRING, APPMSG_ARG_JSON */
  size_t len;                /* APPMSG_ARG_JSON: the length of s (0: up to its NUL) */
  long long i;               /* APPMSG_ARG_INT, APPMSG_ARG_BOOL */
  double d;                  /* APPMSG_ARG_NUMBER */
};

#define APPMSG_ARG_S(k, v)                                                                         \
  { (k), APPMSG_ARG_STRING, (v), 0, 0, 0.0 }
#define APPMSG_ARG_I(k, v)                                                                         \
  { (k), APPMSG_ARG_INT, NULL, 0, (long long)(v), 0.0 }
#define APPMSG_ARG_D(k, v)                                                                         \
  { (k), APPMSG_ARG_NUMBER, NULL, 0, 0, (double)(v) }
#define APPMSG_ARG_B(k, v)                                                                         \
  { (k), APPMSG_ARG_BOOL, NULL, 0, (v) ? 1 : 0, 0.0 }
#define APPMSG_ARG_NIL(k)                                                                          \
  { (k), APPMSG_ARG_NULL, NULL, 0, 0, 0.0 }
#define APPMSG_ARG_J(k, json)                                                                      \
  { (k), APPMSG_ARG_JSON, (json), 0, 0, 0.0 }
/* An array of members made in place and its length, as two arguments (C99). */
#define APPMSG_ARGS(...)                                                                           \
  (const struct appmsg_arg[]){__VA_ARGS__},                                                        \
      sizeof((const struct appmsg_arg[]){__VA_ARGS__}) / sizeof(struct appmsg_arg)

/*
 * The content of a text/json request {"action": ACTION, KEY: VALUE, ...}
 * made from typed members, in *out (malloc'd; the caller frees it) and its
 * length in *len.  Returns 0, -EINVAL (invalid UTF-8, a NULL key, a number
 * that is not finite, JSON text that is not one valid value; nothing is
 * made) or -ENOMEM.
 */
APPMSG_API int appmsg_request_build(char **out, size_t *len, const char *action,
                                    const struct appmsg_arg *args, size_t n);

/* appmsg_client_call() with typed members.  Returns as appmsg_client_send(),
 * -EINVAL also for what appmsg_request_build() refuses. */
APPMSG_API int appmsg_client_call_args(struct appmsg_client *c, appmsg_call_fn cb, void *ud,
                                       const char *action, const struct appmsg_arg *args, size_t n);

/* Why the last connect attempt (or the connection) failed, as a sentence
 * ("cannot connect to unix:/run/x.sock: No such file or directory"), or ""
 * when nothing failed.  For the error a call returned at once.  Valid until
 * the client's next callback or call. */
APPMSG_API const char *appmsg_client_last_error(const struct appmsg_client *c);

/* Whether the client is connected now. */
APPMSG_API int appmsg_client_connected(const struct appmsg_client *c);

/* Calls waiting for their callback: queued and in flight (not the
 * placeholders of calls that timed out). */
APPMSG_API size_t appmsg_client_pending(const struct appmsg_client *c);

/* Connections made so far (1 after the first, more after reconnects). */
APPMSG_API uint64_t appmsg_client_connects(const struct appmsg_client *c);

/* Frees the client: the callbacks of calls still waiting run first
 * (APPMSG_E_NOT_SENT for those not sent, APPMSG_E_CLOSED for those in
 * flight), then its connection ends.  From a callback, its memory goes at
 * the end of the loop iteration (see Lifecycle above).  NULL is fine. */
APPMSG_API void appmsg_client_free(struct appmsg_client *c);

/* ---- one question, one answer ------------------------------------------ */

/* What appmsg_ask() hands back; everything in it is owned by it. */
struct appmsg_answer {
  int status;         /* as appmsg_reply.status */
  int cause;          /* as appmsg_reply.cause */
  char *reason;       /* as appmsg_reply.reason, or NULL */
  char *content_type; /* the reply's, or NULL */
  char *content;      /* the reply's content, NUL-terminated for convenience */
  size_t len;         /* its length */
  char *result;       /* as appmsg_reply.result, or NULL */
  char *result_json;  /* as appmsg_reply.result_json, NUL-terminated, or NULL */
  char *error;        /* as appmsg_reply.error, or NULL */
};

/*
 * The blocking convenience for small programs: connects to host:port,
 * sends the request of appmsg_client_call() (string pairs ending with
 * NULL), waits at most timeout_ms for the answer, closes, and fills in
 * *a (release it with appmsg_answer_cleanup()).  Runs a loop of its own;
 * do not call it from a callback.  Returns a->status (a refused connect
 * is APPMSG_E_NOT_SENT with a->cause -ECONNREFUSED).
 *
 *   struct appmsg_answer a;
 *   if (appmsg_ask("127.0.0.1", "65432", 5000, &a, "search", "value", "ring", NULL) == 0)
 *     puts(a.result);
 *   appmsg_answer_cleanup(&a);
 */
APPMSG_API int appmsg_ask(const char *host, const char *port, uint32_t timeout_ms,
                          struct appmsg_answer *a, const char *action, ...);

/* appmsg_ask() for any request (binary ones too). */
APPMSG_API int appmsg_ask_call(const char *host, const char *port, uint32_t timeout_ms,
                               const struct appmsg_call *call, struct appmsg_answer *a);

/* appmsg_ask() and appmsg_ask_call() with a client's options (TLS among
 * them: opts->conn.tls); the connect and call timeouts become timeout_ms,
 * reconnecting is off and one call may wait.  opts NULL: the defaults. */
APPMSG_API int appmsg_ask_with(const char *host, const char *port,
                               const struct appmsg_client_opts *opts, uint32_t timeout_ms,
                               struct appmsg_answer *a, const char *action, ...);
APPMSG_API int appmsg_ask_call_with(const char *host, const char *port,
                                    const struct appmsg_client_opts *opts, uint32_t timeout_ms,
                                    const struct appmsg_call *call, struct appmsg_answer *a);

/* appmsg_ask_with() with typed members (opts NULL: the defaults). */
APPMSG_API int appmsg_ask_args(const char *host, const char *port,
                               const struct appmsg_client_opts *opts, uint32_t timeout_ms,
                               struct appmsg_answer *a, const char *action,
                               const struct appmsg_arg *args, size_t n);

/* Frees what an answer holds and zeroes it.  Safe on a zeroed answer. */
APPMSG_API void appmsg_answer_cleanup(struct appmsg_answer *a);

#ifdef __cplusplus
}
#endif
#endif
