/*
 * TLS under the framing: a context that a server or an outgoing
 * connection is given, and the framed connection (conn.h) speaks TLS
 * instead of plain bytes.  Frames are the same bytes inside TLS as
 * outside it; only the transport changes.
 *
 *   struct appmsg_tls *tls;
 *   rc = appmsg_tls_server_new(&tls, "server.pem", "server.key", NULL, err, sizeof err);
 *   opts.conn.tls = tls;                       // struct appmsg_server_opts
 *   appmsg_server_new(&srv, loop, host, port, &opts, &cbs, NULL, NULL, err, sizeof err);
 *   ...
 *   appmsg_tls_reload(tls, err, sizeof err);   // on SIGHUP: new certificate, same connections
 *   ...
 *   appmsg_server_free(srv);
 *   appmsg_tls_free(tls);
 *
 *   appmsg_tls_client_new(&tls, "ca.pem", NULL, NULL, 0, err, sizeof err);
 *   opts.tls = tls;                            // struct appmsg_conn_opts
 *   appmsg_conn_connect(&c, loop, "localhost", "65432", &opts, &cbs, ud, err, sizeof err);
 *
 * What a context sets.  TLS 1.2 at least, TLS 1.3 preferred, OpenSSL's
 * default cipher suites; renegotiation refused; the ALPN protocol name
 * "appmsg" offered by clients and accepted by servers (a client that
 * offers ALPN without "appmsg" is refused; one that offers none is
 * served).  A client verifies the server's certificate chain against the
 * CA file given (or the system's store) and the server's name (a DNS name
 * or an IP address, from appmsg_conn_opts.tls_server_name or the host
 * given to appmsg_conn_connect()), which it also sends as SNI; only the
 * flag APPMSG_TLS_INSECURE_SKIP_VERIFY turns verification off.  A server
 * given a client CA file requires every client to present a certificate
 * signed by one of those CAs (mutual TLS).  Sockets are written as plain
 * connections are: never with SIGPIPE.  A build without OpenSSL
 * (APPMSG_WITH_TLS=OFF, as the Windows build is) fails every call here
 * with APPMSG_E_TLS and says so.
 *
 * How a connection uses it.  The handshake is driven by the loop, bounded
 * by appmsg_conn_opts.handshake_timeout_ms (default 10 s).  A client's
 * on_connect is called once the handshake is done (and the server
 * verified); messages sent before that are queued and leave encrypted
 * after it.  Reads drain every record OpenSSL has buffered before the
 * connection waits on the socket again; a write that could not finish is
 * resumed with the same bytes.  A graceful close (appmsg_conn_close(),
 * the end of a drain, an idle timeout) sends close_notify before the
 * usual shutdown and linger.  A peer that closes the TCP connection
 * without close_notify between frames ends the stream like a plain end of
 * stream; inside a frame or a TLS record it is an error
 * (APPMSG_E_TRUNCATED).
 *
 * Failures reach the connection's on_error callback with a code and a
 * sentence, then the connection closes (on_close with the same code):
 *   APPMSG_E_TLS_VERIFY     a certificate was refused, by us or by the
 *                           peer: "the client's certificate was refused:
 *                           certificate has expired (subject CN=..., depth
 *                           0)", "the client sent no certificate",
 *                           "the server's certificate was refused: hostname
 *                           mismatch (...)", ...
 *   APPMSG_E_TLS_HANDSHAKE  any other handshake failure, among them "the
 *                           client sent a plaintext appmsg frame; is it
 *                           using TLS?"
 *   APPMSG_E_TLS            a TLS failure after the handshake (a bad
 *                           record, an alert from the peer)
 *   APPMSG_E_TIMEOUT        the handshake did not finish in time
 * on_error cannot reply (sending returns APPMSG_E_CLOSED): what is queued
 * is dropped, never sent in the clear - not even to a plaintext client
 * (PROTOCOL.md section 8).  A client's on_connect gets the same code after
 * on_error.
 *
 * Ownership and threads.  The caller owns a context and frees it with
 * appmsg_tls_free() after every server and connection that uses it is
 * gone (a connection lets go of it as soon as it ends, before its
 * on_close); a context must outlive the options that point to it.  One context
 * may serve every connection of a thread, and of several threads at once:
 * its functions may be called from any thread, including
 * appmsg_tls_reload() while other threads' connections start handshakes
 * with it (a lock guards the switch).  A connection keeps the certificate
 * it started its handshake with until it ends.  OpenSSL's error queue is
 * per thread; the library clears it around each call it makes.
 *
 * The library never prints: file and key errors come back as sentences in
 * err (if not NULL), e.g. "cannot read the certificate chain 'server.pem':
 * No such file or directory".
 */
#ifndef APPMSG_TLS_H
#define APPMSG_TLS_H

#include <stddef.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_tls;
struct appmsg_conn;

/* appmsg_tls_client_new() flags. */
#define APPMSG_TLS_INSECURE_SKIP_VERIFY 0x1u /* no certificate or name check: tests only */

/*
 * A server context: the certificate chain (PEM: the server's certificate
 * first, then its intermediates) and its private key (PEM, unencrypted),
 * and, for mutual TLS, client_ca_file (PEM: the CAs whose certificates
 * clients must present; NULL: clients need none).  The key must match the
 * certificate.  The file names are kept for appmsg_tls_reload().
 * Returns 0 and *tls, or -ENOMEM, -EINVAL (a NULL file name) or
 * APPMSG_E_TLS (a file that cannot be read or used), with a sentence in
 * err.
 */
APPMSG_API int appmsg_tls_server_new(struct appmsg_tls **tls, const char *cert_chain_file,
                                     const char *key_file, const char *client_ca_file, char *err,
                                     size_t errlen);

/*
 * A client context: the CAs to trust (PEM file; NULL: the system's
 * store), and, for servers that ask for one (mutual TLS), a certificate
 * chain and its key (both or neither; NULL: none).  flags: 0 or
 * APPMSG_TLS_INSECURE_SKIP_VERIFY.  Returns as appmsg_tls_server_new().
 */
APPMSG_API int appmsg_tls_client_new(struct appmsg_tls **tls, const char *ca_file,
                                     const char *cert_chain_file, const char *key_file,
                                     unsigned flags, char *err, size_t errlen);

/*
 * Reads the context's files again (certificate, key, CA) into a new
 * OpenSSL context and, if every one loads, switches to it: handshakes
 * that start from now on use it; open connections go on with what they
 * have.  On failure the old files stay in use.  Returns 0, or what
 * appmsg_tls_server_new() returns, with a sentence in err.
 */
APPMSG_API int appmsg_tls_reload(struct appmsg_tls *tls, char *err, size_t errlen);

/* Frees a context (see above for when).  NULL is fine. */
APPMSG_API void appmsg_tls_free(struct appmsg_tls *tls);

/* 1 for a server context, 0 for a client one. */
APPMSG_API int appmsg_tls_is_server(const struct appmsg_tls *tls);

/*
 * What a TLS connection negotiated, as text: "TLSv1.3
 * TLS_AES_256_GCM_SHA384, peer CN=client" ("peer ..." only when the peer
 * presented a certificate).  Returns the length written (NUL-terminated,
 * cut to fit len), 0 when c is plaintext or its handshake is not done.
 */
APPMSG_API int appmsg_conn_tls_info(const struct appmsg_conn *c, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
