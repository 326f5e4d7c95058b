/* TLS (tls.c): the transport under a framed connection.  Not installed. */
#ifndef APPMSG_TLS_INTERNAL_H
#define APPMSG_TLS_INTERNAL_H

#include "appmsg/socket.h"
#include <stddef.h>

#include "appmsg/tls.h"
#include "util.h"

/* One connection's TLS state; NULL in a connection means plaintext. */
struct appmsg__tls_conn;
struct appmsg_tls;

/*
 * Makes the TLS state for a connection on fd, as a server or a client as
 * tls says.  server_name (clients: the name to verify and send as SNI;
 * may be NULL only with APPMSG_TLS_INSECURE_SKIP_VERIFY) is copied.
 * Returns 0 and *t, -ENOMEM, -EINVAL (a client without a name) or
 * APPMSG_E_TLS.
 */
int appmsg__tls_conn_new(struct appmsg__tls_conn **t, struct appmsg_tls *tls, appmsg_socket_t fd,
                         const char *server_name);
void appmsg__tls_conn_free(struct appmsg__tls_conn *t);

/*
 * The I/O calls.  Each returns what the plain calls do (bytes > 0; for
 * read 0 at the end of the stream: close_notify, or a TCP end of stream
 * between records) or -EAGAIN with *want set to the readiness to wait for
 * (APPMSG_EV_READ or APPMSG_EV_WRITE: either can come from either call),
 * or a failure: a negated errno (the socket's), or APPMSG_E_TLS,
 * APPMSG_E_TLS_HANDSHAKE, APPMSG_E_TLS_VERIFY or APPMSG_E_TRUNCATED with a
 * sentence from appmsg__tls_reason().  A write after -EAGAIN must be
 * retried with the same bytes (the buffer may have moved, and may have
 * grown).  handshake returns 0 once the handshake is done.  shutdown sends
 * close_notify: 0 once it is out (or cannot be sent), or -EAGAIN.
 */
int appmsg__tls_handshake(struct appmsg__tls_conn *t, unsigned *want);
long appmsg__tls_read(struct appmsg__tls_conn *t, void *buf, size_t len, unsigned *want);
long appmsg__tls_write(struct appmsg__tls_conn *t, const void *buf, size_t len, unsigned *want);
int appmsg__tls_shutdown(struct appmsg__tls_conn *t, unsigned *want);

/* 1 if OpenSSL holds received bytes not yet read (decrypted or not). */
int appmsg__tls_pending(const struct appmsg__tls_conn *t);

/* The sentence for the last failure on this thread (static, thread's buffer). */
const char *appmsg__tls_reason(void);

/* When the certificate new connections are given stops being valid (its notAfter), in seconds
 * since 1970 (UTC): 0 and *t, or -ENOENT (no certificate: a client context without one). */
int appmsg__tls_not_after(struct appmsg_tls *tls, long long *t);

/* appmsg_conn_tls_info() for the TLS state. */
int appmsg__tls_describe(const struct appmsg__tls_conn *t, char *buf, size_t len);

#endif
