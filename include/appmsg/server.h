/*
 * A server: a listening socket whose connections become framed
 * connections (conn.h), with a connection limit, descriptor-exhaustion
 * handling, and a drain for a clean shutdown.
 *
 *   struct appmsg_server_opts o;
 *   appmsg_server_opts_default(&o);
 *   rc = appmsg_server_new(&srv, loop, "127.0.0.1", "65432", &o, &conn_callbacks, NULL,
 *                          NULL, err, sizeof err);
 *   appmsg_loop_stop_on_signals(loop, (int[]){SIGINT, SIGTERM}, 2);
 *   appmsg_loop_run(loop);             // until a signal
 *   appmsg_server_finish(srv, 10000);  // stop accepting; finish the replies in flight
 *   appmsg_server_free(srv);
 *
 * Over the connection limit, a new connection is accepted only to be told
 * so: it gets one error reply (PROTOCOL.md 5.2, TOO_MANY_CONNS) and is
 * closed.  When the process runs out of descriptors, pending connections
 * are accepted and closed at once with a reserve descriptor, and accepting
 * pauses briefly, so the loop never spins.
 *
 * Lifecycle: as conn.h says - no call frees anything its caller may still
 * hold; each connection's close hook and on_close run once, from the loop.
 *
 * TLS: set opts.conn.tls to a server context (tls.h) and every connection
 * is served over TLS; a handshake that fails reaches the connections'
 * on_error with the reason (a refused client certificate, a plaintext
 * frame, a timeout), then the connection closes.
 */
#ifndef APPMSG_SERVER_H
#define APPMSG_SERVER_H

#include <stddef.h>

#include "export.h"
#include "conn.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_server;

struct appmsg_server_opts {
  struct appmsg_conn_opts conn; /* options of every connection */
  size_t max_conns;             /* connections served at once; more are refused (0: no limit) */
  int backlog;                  /* listen() backlog */
  int reuseport;                /* 1: SO_REUSEPORT (several servers on one port; see net.h) */
};

/* Defaults: appmsg_conn_opts_default(), 10000 connections, backlog 511. */
APPMSG_API void appmsg_server_opts_default(struct appmsg_server_opts *o);

struct appmsg_server_callbacks {
  /* A connection was accepted (log it, set its userdata).  Optional. */
  void (*on_accept)(struct appmsg_server *s, struct appmsg_conn *c, void *ud);
  /* A connection was refused: err is APPMSG_E_TOO_MANY_CONNS, -EMFILE... Optional. */
  void (*on_refuse)(struct appmsg_server *s, int err, void *ud);
};

/*
 * Listens on host:port (see net.h; port "0" picks a free one) and serves.
 * conn_cbs are every connection's callbacks (their ud is the server's ud
 * until a callback changes it); srv_cbs may be NULL.  opts, conn_cbs and
 * srv_cbs must outlive the server.  Returns 0 and *s, or a negative code
 * with a sentence in err (if not NULL).
 */
APPMSG_API int appmsg_server_new(struct appmsg_server **s, struct appmsg_loop *loop,
                                 const char *host, const char *port,
                                 const struct appmsg_server_opts *opts,
                                 const struct appmsg_conn_callbacks *conn_cbs,
                                 const struct appmsg_server_callbacks *srv_cbs, void *ud, char *err,
                                 size_t errlen);

/*
 * appmsg_server_new() on a socket that already listens (non-blocking or
 * not), for instance a dup() of another server's socket, so that servers
 * on several threads share one Unix socket.  The server owns listen_fd
 * from now on (it closes it); it never unlinks a Unix socket's file (the
 * server that made the socket does).  Returns as appmsg_server_new().
 */
APPMSG_API int appmsg_server_new_fd(struct appmsg_server **s, struct appmsg_loop *loop,
                                    appmsg_socket_t listen_fd,
                                    const struct appmsg_server_opts *opts,
                                    const struct appmsg_conn_callbacks *conn_cbs,
                                    const struct appmsg_server_callbacks *srv_cbs, void *ud,
                                    char *err, size_t errlen);

/* The listening address as text ("127.0.0.1:65432"), thread buffer. */
APPMSG_API const char *appmsg_server_address(const struct appmsg_server *s);

/* The listening socket. */
APPMSG_API appmsg_socket_t appmsg_server_fd(const struct appmsg_server *s);

/* Connections open now (refused ones not counted). */
APPMSG_API size_t appmsg_server_conn_count(const struct appmsg_server *s);

/* Stops accepting (closes the listener) and asks every connection to close
 * once its current frame is answered and sent (the closes happen as the
 * loop runs).  Idempotent; safe from any callback. */
APPMSG_API void appmsg_server_drain(struct appmsg_server *s);

/*
 * appmsg_server_drain(), then runs the loop until every connection has
 * finished or timeout_ms have passed (whatever else the loop watches runs
 * meanwhile).  Not from a callback.  Returns the connections left (0 when
 * all finished), or a negative code if the loop failed.
 */
APPMSG_API long appmsg_server_finish(struct appmsg_server *s, uint32_t timeout_ms);

/* Stops listening, aborts the remaining connections (their on_close
 * runs) and frees the server.  From outside the loop's callbacks it is all
 * done when this returns; from a callback (the server's own, a
 * connection's, a timer) the connections finish and the memory goes at the
 * end of the loop iteration - no call frees anything its caller may still
 * hold.  NULL is fine. */
APPMSG_API void appmsg_server_free(struct appmsg_server *s);

#ifdef __cplusplus
}
#endif
#endif
