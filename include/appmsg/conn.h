/*
 * A framed connection: a non-blocking socket, a decoder for what arrives,
 * a queue for what leaves, one timer, and callbacks.
 *
 *   static void on_message(struct appmsg_conn *c, const struct appmsg_header *h,
 *                          const void *content, size_t len, void *ud) {
 *     appmsg_conn_send(c, &reply_header, reply, reply_len);   // queued, in order
 *   }
 *   struct appmsg_conn_callbacks cbs = {.on_message = on_message, .on_close = on_close};
 *   appmsg_conn_new(&c, loop, fd, &opts, &cbs, userdata);
 *
 * Reading.  Each time the socket is readable the connection reads up to
 * 64 KiB into a buffer shared by all connections of the thread and feeds
 * it to the decoder; every complete message goes to on_message, in order,
 * several per read when a peer pipelines.  Content is copied once, from
 * that buffer into the message's own buffer; an idle connection holds no
 * buffer at all.
 *
 * Writing.  appmsg_conn_send() appends a frame to the queue; the loop
 * writes the queue when the current iteration's callbacks are done (a
 * send made outside the loop is written when it next runs).  So replies
 * made while a read is handled leave with one send() after it, and replies
 * made one after another from a timer or another library's callback leave
 * together too.  What the kernel does not take waits for the socket to be
 * writable.  Sends never raise SIGPIPE on a vanished peer (MSG_NOSIGNAL, or
 * SO_NOSIGPIPE where the system has that instead; Windows has no SIGPIPE).
 *
 * Protections (struct appmsg_conn_opts): the decoder's limits; a timeout
 * for a connection idle between messages and a shorter one for a frame
 * (or a reply) that stops moving; a cap on queued output - reading pauses
 * while more than read_pause bytes wait to be sent (a peer that does not
 * read its replies stops being served), and a send that would queue more
 * than max_output bytes closes the connection.
 *
 * Lifecycle: no call here frees anything its caller may still hold.
 * Close, abort, send and the rest only record what they want; the loop
 * does the work at the end of the iteration, and a connection that ended
 * is finished there: its close hook, then on_close, run once, and its
 * memory is freed when on_close returns.  So every function of this
 * header is safe from every callback (of this connection or another) and
 * from outside them all, and the pointer stays valid until on_close
 * returns - calls made on an ended connection do nothing, or return
 * APPMSG_E_CLOSED.  A connection ended from outside the loop is finished
 * when the loop next runs, or by appmsg_loop_free().
 *
 * Ending.  on_close(c, reason, ud) is called exactly once: reason 0 for a
 * clean end (the peer closed between frames and every reply was sent, or
 * appmsg_conn_close() finished), or the error that ended it
 * (APPMSG_E_TRUNCATED, APPMSG_E_TIMEOUT, APPMSG_E_OUTPUT_FULL, a decoder
 * error, -ECONNRESET, ...).  A peer that half-closes after its last
 * request still gets every reply.  When the decoder fails, on_error is
 * called first, while the connection can still send one last reply; the
 * connection then stops reading, sends what is queued, and closes.  The
 * socket is closed as soon as the connection ends (before on_close), so
 * that a process short of descriptors gets it back at once.
 *
 * TLS (opts.tls, see tls.h): the same connection over TLS.  A server
 * context makes the connection the accepting side, a client context the
 * connecting side, whether it comes from appmsg_conn_connect() or
 * appmsg_conn_new(); a TLS client's on_connect reports the end of the
 * handshake (0 once the server is verified).  TLS failures reach on_error
 * and on_close with APPMSG_E_TLS* codes.
 *
 * Ownership: the library allocates and frees the connection; the caller
 * must not use the pointer after on_close returns.  opts and cbs must
 * outlive the connection (one struct of each is usually shared by all
 * connections of a server).  Not thread-safe: one loop, one thread; every
 * callback runs on the loop's thread.
 */
#ifndef APPMSG_CONN_H
#define APPMSG_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "decoder.h"
#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_conn;

/* How much a log line matters; lines go to an appmsg_log_fn (service.h,
 * client.h).  The library itself never prints. */
enum appmsg_log_level {
  APPMSG_LOG_ERROR = 0, /* the program cannot do what it was asked (out of memory, a bug) */
  APPMSG_LOG_WARN = 1,  /* a peer misbehaved or a limit was hit (framing errors, timeouts) */
  APPMSG_LOG_INFO = 2,  /* notable events (a data store lost, a reconnect) */
  APPMSG_LOG_DEBUG = 3, /* every connection and request */
};

/* Receives one log line (no newline; valid only during the call).  What the line is about is
 * also at hand as fields, during the call: appmsg_log_fields(). */
typedef void (*appmsg_log_fn)(void *ud, enum appmsg_log_level level, const char *line);

/*
 * The values a log line shows, as fields, for logs a machine reads (one
 * JSON object per line, say): each is also in the line's text.  Absent
 * ones are NULL (offset -1, duration_s below 0).
 */
struct appmsg_log_fields {
  const char *peer;       /* the peer's address ("127.0.0.1:5555", "unix:/run/x.sock") */
  const char *action;     /* the request's action */
  const char *error;      /* an error's name ("HEADER_JSON", "TIMEOUT") */
  long long offset;       /* a stream offset (PROTOCOL.md 1.1) */
  const char *request_id; /* the request's request-id: its JSON text as received (not NUL-
                             terminated: request_id_len bytes) */
  size_t request_id_len;
  double duration_s; /* how long it took (a slow request) */
};

/* Inside an appmsg_log_fn: the fields of the line being logged, valid during that call.
 * Elsewhere, and for lines without fields: every field absent.  Never NULL.  Per thread. */
APPMSG_API const struct appmsg_log_fields *appmsg_log_fields(void);

/*
 * Totals that connections add to, when their options point to one: one
 * struct is usually shared by every connection of a server (one thread
 * writes it).  Another thread may read a total with appmsg_counter_get().
 */
struct appmsg_conn_counters {
  uint64_t bytes_in;    /* bytes received */
  uint64_t bytes_out;   /* bytes sent */
  uint64_t messages_in; /* complete messages received */
  uint64_t out_queued;  /* bytes queued for sending now (a gauge: it goes down as they leave) */
};

/* Reads a counter written by another thread (a relaxed atomic load). */
static inline uint64_t appmsg_counter_get(const uint64_t *counter) {
  return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/* Adds n (wrapping: -1 as a uint64_t takes one away) to a counter that one
 * thread writes and others may read with appmsg_counter_get(): a relaxed
 * load and store, which cost a plain add. */
static inline void appmsg_counter_add(uint64_t *counter, uint64_t n) {
  __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

struct appmsg_conn_opts {
  struct appmsg_limits limits; /* frame limits (decoder) */
  uint32_t idle_timeout_ms;    /* close a connection idle between frames; 0: never */
  uint32_t frame_timeout_ms;   /* close when a frame, or queued output, stops moving; 0: never */
  size_t read_pause;           /* stop reading while more output than this is queued */
  size_t max_output;           /* a send beyond this much queued output closes (0: no cap) */
  int raw;                     /* 1: no framing, on_data gets the bytes (guide's multiconn) */
  struct appmsg_conn_counters *counters; /* totals to add to, or NULL */
  struct appmsg_tls *tls;                /* TLS under the framing (tls.h); NULL: plaintext */
  const char *tls_server_name;   /* TLS clients: the name to verify and send as SNI; NULL: the
                                    host given to appmsg_conn_connect() */
  uint32_t handshake_timeout_ms; /* a TLS handshake must end within this; 0: never */
};

/* Fills in the defaults: 1 MiB content, idle 300 s, frame 30 s, pause at 256 KiB, cap 16 MiB,
 * plaintext, TLS handshake 10 s. */
APPMSG_API void appmsg_conn_opts_default(struct appmsg_conn_opts *o);

/*
 * The callbacks.  Each runs on the loop's thread, from the loop; any of
 * them may call any function of conn.h on this connection or another
 * (the effects come when the callback has returned), and ud is the
 * connection's user data at the time.  Those marked optional may be NULL.
 */
struct appmsg_conn_callbacks {
  /* A complete message, once per message, in order; none after the
   * connection stopped reading (a close, a pause) until it reads again.
   * header and content are borrowed until it returns (appmsg_header_copy()
   * or copy the content to keep them).  Optional (raw mode uses on_data). */
  void (*on_message)(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                     size_t len, void *ud);
  /* Raw mode only: bytes as they arrive (borrowed until it returns). */
  void (*on_data)(struct appmsg_conn *c, const void *data, size_t len, void *ud);
  /* At most once: a framing error or a stalled frame (err, reason,
   * stream offset) - the last chance to send a reply - or a TLS failure
   * (tls.h), after which no reply can be sent.  on_close follows.
   * Optional. */
  void (*on_error)(struct appmsg_conn *c, int err, const char *reason, uint64_t offset, void *ud);
  /* Once, for an outgoing connection: it finished connecting - under TLS,
   * finished its handshake - err 0, or why it failed (on_close follows a
   * failure).  Optional. */
  void (*on_connect)(struct appmsg_conn *c, int err, void *ud);
  /* At most once: the peer finished sending (end of stream between
   * frames); replies still queued will be sent, then on_close(0).
   * Optional. */
  void (*on_eof)(struct appmsg_conn *c, void *ud);
  /* Exactly once, last: the connection ended (reason above); its socket is
   * closed already, and its memory is freed when this returns.  Optional. */
  void (*on_close)(struct appmsg_conn *c, int reason, void *ud);
};

/*
 * Wraps a connected socket (made non-blocking here).  The connection owns
 * fd from now on, even when this fails.  Returns 0 and *c, or -ENOMEM /
 * the loop's error; with a TLS client context that verifies, -EINVAL when
 * opts->tls_server_name is NULL.
 */
APPMSG_API int appmsg_conn_new(struct appmsg_conn **c, struct appmsg_loop *loop, appmsg_socket_t fd,
                               const struct appmsg_conn_opts *opts,
                               const struct appmsg_conn_callbacks *cbs, void *ud);

/*
 * Wraps a socket whose non-blocking connect is in progress (from
 * appmsg_connect_addr()); on_connect reports the outcome, within
 * frame_timeout_ms if that is set.  Owns fd from now on, even when this
 * fails.  Returns as appmsg_conn_new().  A client that tries every
 * resolved address in turn is built on this (client.h does so).
 */
APPMSG_API int appmsg_conn_new_connecting(struct appmsg_conn **c, struct appmsg_loop *loop,
                                          appmsg_socket_t fd, const struct appmsg_conn_opts *opts,
                                          const struct appmsg_conn_callbacks *cbs, void *ud);

/*
 * Starts a non-blocking connect to host:port (see net.h for the forms) and
 * wraps it; on_connect reports the outcome.  Returns 0 and *c, or an
 * immediate failure (APPMSG_E_ADDRESS, -ECONNREFUSED ...) with a sentence
 * in err (if not NULL).  Only the first resolved address is tried; the
 * client library (client.h) tries them all.  A host name is resolved here,
 * on the calling thread, and may wait for the resolver as getaddrinfo()
 * does: with a loop already serving others, give an address, or use
 * client.h, which resolves off the loop.  With a TLS client context
 * the server's name is opts->tls_server_name, or else host (-EINVAL when
 * neither is a name: a Unix socket path).
 */
APPMSG_API int appmsg_conn_connect(struct appmsg_conn **c, struct appmsg_loop *loop,
                                   const char *host, const char *port,
                                   const struct appmsg_conn_opts *opts,
                                   const struct appmsg_conn_callbacks *cbs, void *ud, char *err,
                                   size_t errlen);

/*
 * Queues one frame (see appmsg_encoder_push()), written when the loop runs
 * (above).  Returns 0; a negative code for a bad header; APPMSG_E_CLOSED
 * once the connection is closing; or APPMSG_E_OUTPUT_FULL, after which the
 * connection closes (the peer does not read).
 */
APPMSG_API int appmsg_conn_send(struct appmsg_conn *c, const struct appmsg_header *h,
                                const void *content, size_t len);

/* appmsg_conn_send() with a prepared header (encoder.h): for replies sent
 * again and again with the same header. */
struct appmsg_prepared;
APPMSG_API int appmsg_conn_send_prepared(struct appmsg_conn *c, const struct appmsg_prepared *p,
                                         const void *content, size_t len);

/*
 * Sends the standard error reply of PROTOCOL.md on c: a text/json message
 * {"result": "Error: REASON.", "error": "NAME", "offset": OFFSET}, NAME
 * being appmsg_errname(err), REASON reason (or appmsg_strerror(err) when
 * NULL; bytes that are not UTF-8 become '?'), "offset" only when offset is
 * >= 0.  Returns what appmsg_conn_send() does.
 */
APPMSG_API int appmsg_conn_send_error(struct appmsg_conn *c, int err, const char *reason,
                                      long long offset);

/* Queues raw bytes (raw mode, or hand-made frames).  As appmsg_conn_send(). */
APPMSG_API int appmsg_conn_send_raw(struct appmsg_conn *c, const void *data, size_t len);

/*
 * Closes gracefully: stops reading new messages, sends what is queued,
 * shuts down the write side, waits briefly for the peer to close (so that
 * unread input cannot turn the close into a reset that destroys the last
 * reply), then calls on_close(0).  Idempotent.
 */
APPMSG_API void appmsg_conn_close(struct appmsg_conn *c);

/* Ends the connection now, dropping queued output: no more callbacks but
 * its close hook and on_close(reason), which run at the end of the loop
 * iteration (for a call from outside the loop: when it next runs), never
 * inside this call.  The socket is closed at once.  Idempotent. */
APPMSG_API void appmsg_conn_abort(struct appmsg_conn *c, int reason);

/* Closes once the connection is quiet: every request that has arrived is
 * answered and sent, no frame is half read, no hold is left, and a read
 * finds nothing more waiting (a peer that keeps sending is served until
 * it pauses).  Used to drain a server on SIGTERM: a client loses nothing
 * it sent before the drain, and sees an end of stream, not a reset, after
 * its last answer.  A raw connection closes once it is quiet and its
 * queued output is sent. */
APPMSG_API void appmsg_conn_close_when_idle(struct appmsg_conn *c);

/*
 * Holds: replies owed.  An owner that answers a message later (after
 * on_message returned) takes a hold for it and releases it once the reply
 * is queued.  While holds are taken, a graceful close - the peer's end of
 * stream, appmsg_conn_close(), a drain, even a framing error - stops
 * reading at once but waits for the holds before it flushes and closes,
 * so that late replies still leave; sends stay allowed meanwhile.  The
 * idle timeout does not run while a hold is taken (the peer is waiting,
 * not idle).  An abort ignores holds.  Release each hold exactly once;
 * releasing with none taken does nothing.
 */
APPMSG_API void appmsg_conn_hold(struct appmsg_conn *c);
APPMSG_API void appmsg_conn_release(struct appmsg_conn *c);

/*
 * Stops (on 0) or resumes (on 1) reading: for an owner with too much work
 * in hand for this peer.  Messages that had arrived in the same read as
 * the one after which reading stopped are kept and delivered first when
 * reading resumes; no message is delivered while stopped.
 */
APPMSG_API void appmsg_conn_set_reading(struct appmsg_conn *c, int on);

/*
 * The close hook: fn(c, reason, arg) is called once as the connection
 * ends, just before on_close and with the same reason.  It is for code
 * that keeps connections on someone else's behalf - a server keeps its
 * list of connections with it - so that the callbacks stay the
 * application's.  One hook per connection: a second call replaces the
 * first, NULL removes it.  Like on_close, the hook may call anything
 * (calls on c do nothing by then).
 */
typedef void (*appmsg_conn_hook_fn)(struct appmsg_conn *c, int reason, void *arg);
APPMSG_API void appmsg_conn_set_close_hook(struct appmsg_conn *c, appmsg_conn_hook_fn fn,
                                           void *arg);

/* Accessors. */
/* The socket, or APPMSG_INVALID_SOCKET once the connection has ended (the number may already
 * belong to another socket: key tables by the connection, not by it). */
APPMSG_API appmsg_socket_t appmsg_conn_fd(const struct appmsg_conn *c);
APPMSG_API void *appmsg_conn_userdata(const struct appmsg_conn *c);
APPMSG_API void appmsg_conn_set_userdata(struct appmsg_conn *c, void *ud);
APPMSG_API size_t appmsg_conn_pending(const struct appmsg_conn *c); /* bytes queued for sending */
/* The peer as text ("127.0.0.1:5555", "[::1]:5555", "unix:"), in a buffer
 * of the calling thread that the next call overwrites. */
APPMSG_API const char *appmsg_conn_peer(const struct appmsg_conn *c);

#ifdef __cplusplus
}
#endif
#endif
