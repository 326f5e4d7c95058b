/* The connection's functions for the server, the service and the client.
 * Not installed. */
#ifndef APPMSG_CONN_INTERNAL_H
#define APPMSG_CONN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/conn.h"
#include "appmsg/encoder.h"

/* The standard error reply's content (PROTOCOL.md):
 * {"result": "Error: REASON.", "error": "NAME", "offset": OFFSET}, offset
 * only when >= 0.  The reason is cut at APPMSG__ERROR_REASON_MAX bytes and
 * bytes that are not UTF-8 become '?'; name at 64 bytes.  out needs room
 * for APPMSG__ERROR_BODY_MAX bytes.  Returns the length (no NUL). */
#define APPMSG__ERROR_REASON_MAX 512
#define APPMSG__ERROR_BODY_MAX (6 * APPMSG__ERROR_REASON_MAX + 160)
size_t appmsg__error_body(const char *name, const char *reason, long long offset, char *out);

/* appmsg_conn_send_prepared() with extra header members (see
 * appmsg__encoder_push_prepared()). */
int appmsg__conn_send_prepared_ex(struct appmsg_conn *c, const struct appmsg_prepared *p,
                                  const char *extra, size_t extra_len, const void *content,
                                  size_t len);

/* Links for the owner that keeps a list of its connections (a server):
 * they live in the connection, so the list needs no memory of its own
 * and nothing in it can outlive its connection. */
struct appmsg__conn_link {
  struct appmsg_conn *prev, *next;
};
struct appmsg__conn_link *appmsg__conn_link(struct appmsg_conn *c);

/* Bytes handed to the connection that never reached its socket: queued
 * still, or dropped by a TLS failure (nothing can be sent after one). */
size_t appmsg__conn_unsent(const struct appmsg_conn *c);

/* Hands the content of the message being delivered over to the caller
 * (appmsg_decoder_take_content() on the connection's decoder). */
void *appmsg__conn_take_content(struct appmsg_conn *c, size_t *len);

/* The written hook: fn(c, ud) is called when the connection has written everything that was queued
 * on it, from the loop's work on the connection (never from inside a call of conn.h), with its
 * userdata; it may queue more.  For the client, whose calls wait in its own queue while the
 * bytes before them are not written.  NULL removes it. */
typedef void (*appmsg__conn_written_fn)(struct appmsg_conn *c, void *ud);
void appmsg__conn_set_written_hook(struct appmsg_conn *c, appmsg__conn_written_fn fn);

/* Takes back the bytes queued after the first keep - the caller's last sends, not written yet
 * (sends only queue; the loop writes). */
void appmsg__conn_unsend(struct appmsg_conn *c, size_t keep);

/* appmsg_conn_new() for a socket just accepted from peer (no getpeername). */
struct sockaddr;
int appmsg__conn_new_accepted(struct appmsg_conn **c, struct appmsg_loop *loop, appmsg_socket_t fd,
                              const struct appmsg_conn_opts *opts,
                              const struct appmsg_conn_callbacks *cbs, void *ud,
                              const struct sockaddr *peer, unsigned peer_len);

#endif
