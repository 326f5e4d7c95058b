/*
 * TLS with OpenSSL 3 (see include/appmsg/tls.h): contexts, and the TLS
 * transport under a framed connection.  The only file that includes
 * OpenSSL's headers.
 *
 * The socket is reached through a BIO of our own rather than OpenSSL's
 * socket BIO: it sends without SIGPIPE (OpenSSL's uses write(), which
 * raises SIGPIPE on a vanished peer), remembers the socket's errno and
 * its end of stream, and keeps the first bytes a peer sends so that a
 * plaintext appmsg frame can be named as such.
 *
 * Modes: partial writes (SSL_write returns after each record, so the
 * encoder can advance by what went out), a moving write buffer (a retried
 * write may find the queue reallocated; its bytes are the same), released
 * buffers (an idle connection keeps no 16 KiB read and write buffers), and
 * read-ahead (one recv() takes several records; the connection drains
 * them with appmsg__tls_pending() before it waits on the socket again).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The system's headers first: on Windows, OpenSSL's undo the names <wincrypt.h> takes
 * (X509_NAME, ...) only when they come after it. */
#include "platform.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "appmsg/loop.h"
#include "appmsg/net.h"
#include "appmsg/tls.h"
#include "tls_internal.h"
#include "util.h"

/* The ALPN protocol list: one name, length-prefixed. */
static const unsigned char alpn_list[] = {6, 'a', 'p', 'p', 'm', 's', 'g'};

struct appmsg_tls {
  appmsg__mutex lock; /* guards ctx: a reload may come from another thread */
  SSL_CTX *ctx;       /* what new connections are made from */
  int server;         /* 1: server context, 0: client */
  unsigned flags;     /* APPMSG_TLS_* */
  char *cert;         /* certificate chain file, or NULL */
  char *key;          /* private key file, or NULL */
  char *ca;           /* CA file (server: client CAs; client: trusted CAs), or NULL */
};

struct appmsg__tls_conn {
  SSL *ssl;               /* OpenSSL's connection (owns the BIO) */
  appmsg_socket_t fd;     /* the socket (the framed connection's) */
  int sys_err;            /* errno of the socket call that failed last, 0 if none */
  unsigned char first[3]; /* the first bytes received, to recognise plaintext frames */
  unsigned char nfirst;   /* how many of first[] are set */
  unsigned server : 1;    /* accepting side */
  unsigned eof : 1;       /* the socket reached its end of stream */
  char name[];            /* a client's server name (NUL-terminated; "" if none) */
};

/* ---- sentences ---------------------------------------------------------------------------- */

static _Thread_local char reason_buf[512];

/* A certificate verification failure, as the verify callback saw it during
 * the OpenSSL call in progress on this thread. */
static _Thread_local struct {
  int set;           /* a failure was recorded */
  int err;           /* X509_V_ERR_* */
  int depth;         /* 0: the peer's own certificate */
  char subject[256]; /* the certificate's subject */
} vfail;

const char *appmsg__tls_reason(void) {
  return reason_buf;
}

/* The text of the oldest error in OpenSSL's queue (the cause rather than
 * its consequences), then an empty queue. */
static const char *queue_text(char *buf, size_t len) {
  unsigned long e = ERR_get_error();
  if (e == 0)
    snprintf(buf, len, "unknown error");
  else if (ERR_GET_LIB(e) == ERR_LIB_SYS)
    snprintf(buf, len, "%s", appmsg_strerror(-appmsg__errno_from_system(ERR_GET_REASON(e))));
  else if (ERR_reason_error_string(e))
    snprintf(buf, len, "%s", ERR_reason_error_string(e));
  else
    ERR_error_string_n(e, buf, len);
  ERR_clear_error();
  return buf;
}

/* "CN=name" when the subject has a common name, else the whole subject. */
static void subject_text(X509 *cert, char *buf, size_t len) {
  X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
  char cn[200];
  if (name == NULL)
    snprintf(buf, len, "(none)");
  else if (X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof cn) > 0)
    snprintf(buf, len, "CN=%s", cn);
  else
    X509_NAME_oneline(name, buf, (int)len);
}

static int verify_cb(int ok, X509_STORE_CTX *x) {
  if (!ok && !vfail.set) {
    vfail.set = 1;
    vfail.err = X509_STORE_CTX_get_error(x);
    vfail.depth = X509_STORE_CTX_get_error_depth(x);
    subject_text(X509_STORE_CTX_get_current_cert(x), vfail.subject, sizeof vfail.subject);
  }
  return ok;
}

/* ---- contexts -------------------------------------------------------------------------------- */

/* A server accepts the ALPN name "appmsg"; a client that offers others only is refused. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg) {
  (void)ssl;
  (void)arg;
  for (unsigned i = 0; i < inlen;) {
    unsigned n = in[i];
    if (i + 1 + n > inlen)
      break;
    if (n == alpn_list[0] && memcmp(in + i + 1, alpn_list + 1, n) == 0) {
      *out = in + i + 1;
      *outlen = (unsigned char)n;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + n;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int load_chain(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen) {
  char why[256];
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    appmsg__errf(err, errlen, "cannot read the certificate chain '%s': %s", cert,
                 queue_text(why, sizeof why));
    return APPMSG_E_TLS;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH)
      appmsg__errf(err, errlen, "the private key '%s' does not match the certificate '%s'", key,
                   cert);
    else
      appmsg__errf(err, errlen, "cannot read the private key '%s': %s", key,
                   queue_text(why, sizeof why));
    ERR_clear_error();
    return APPMSG_E_TLS;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    appmsg__errf(err, errlen, "the private key '%s' does not match the certificate '%s': %s", key,
                 cert, queue_text(why, sizeof why));
    return APPMSG_E_TLS;
  }
  return 0;
}

/* A new OpenSSL context from tls's files and flags. */
static int make_ctx(const struct appmsg_tls *tls, SSL_CTX **out, char *err, size_t errlen) {
  char why[256];
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(tls->server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) {
    appmsg__errf(err, errlen, "cannot make a TLS context: %s", queue_text(why, sizeof why));
    return -ENOMEM;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* No renegotiation (a client could make the server do handshakes at
   * will); a TCP end of stream without close_notify is an end of stream,
   * which the framing checks (inside a frame it is a truncation). */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                               SSL_OP_NO_COMPRESSION |
                               (tls->server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  int rc = 0;
  if (tls->server) {
    rc = load_chain(ctx, tls->cert, tls->key, err, errlen);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    /* Resumption by ticket only: no session cache growing with the clients. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, alpn_list + 1, sizeof alpn_list - 1);
    if (rc == 0 && tls->ca) {
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(tls->ca);
      if (names == NULL || SSL_CTX_load_verify_locations(ctx, tls->ca, NULL) != 1) {
        appmsg__errf(err, errlen, "cannot read the client CA file '%s': %s", tls->ca,
                     queue_text(why, sizeof why));
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        rc = APPMSG_E_TLS;
      } else {
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
      }
    }
  } else {
    if (tls->flags & APPMSG_TLS_INSECURE_SKIP_VERIFY) {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
      if (tls->ca ? SSL_CTX_load_verify_locations(ctx, tls->ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        appmsg__errf(err, errlen, "cannot read the CA file '%s': %s",
                     tls->ca ? tls->ca : "(system store)", queue_text(why, sizeof why));
        rc = APPMSG_E_TLS;
      }
    }
    if (rc == 0 && SSL_CTX_set_alpn_protos(ctx, alpn_list, sizeof alpn_list) != 0) {
      appmsg__errf(err, errlen, "cannot set ALPN: %s", queue_text(why, sizeof why));
      rc = -ENOMEM;
    }
    if (rc == 0 && tls->cert)
      rc = load_chain(ctx, tls->cert, tls->key, err, errlen);
  }
  ERR_clear_error();
  if (rc) {
    SSL_CTX_free(ctx);
    return rc;
  }
  *out = ctx;
  return 0;
}

static char *dup_or_null(const char *s, int *failed) {
  if (s == NULL)
    return NULL;
  char *d = appmsg__strdup(s);
  if (d == NULL)
    *failed = 1;
  return d;
}

static int tls_new(struct appmsg_tls **out, int server, const char *ca, const char *cert,
                   const char *key, unsigned flags, char *err, size_t errlen) {
  struct appmsg_tls *tls = appmsg__calloc(1, sizeof *tls);
  if (tls == NULL) {
    appmsg__errf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  int failed = 0;
  tls->server = server;
  tls->flags = flags;
  tls->cert = dup_or_null(cert, &failed);
  tls->key = dup_or_null(key, &failed);
  tls->ca = dup_or_null(ca, &failed);
  int rc = failed ? -ENOMEM : 0;
  if (failed)
    appmsg__errf(err, errlen, "out of memory");
  if (rc == 0 && appmsg__mutex_init(&tls->lock) != 0) {
    appmsg__errf(err, errlen, "cannot make a lock");
    rc = -ENOMEM;
  } else if (rc == 0 && (rc = make_ctx(tls, &tls->ctx, err, errlen)) != 0) {
    appmsg__mutex_destroy(&tls->lock);
  }
  if (rc) {
    appmsg__free(tls->cert);
    appmsg__free(tls->key);
    appmsg__free(tls->ca);
    appmsg__free(tls);
    return rc;
  }
  *out = tls;
  return 0;
}

int appmsg_tls_server_new(struct appmsg_tls **tls, const char *cert_chain_file,
                          const char *key_file, const char *client_ca_file, char *err,
                          size_t errlen) {
  if (cert_chain_file == NULL || key_file == NULL) {
    appmsg__errf(err, errlen, "a TLS server needs a certificate chain and a private key");
    return -EINVAL;
  }
  return tls_new(tls, 1, client_ca_file, cert_chain_file, key_file, 0, err, errlen);
}

int appmsg_tls_client_new(struct appmsg_tls **tls, const char *ca_file, const char *cert_chain_file,
                          const char *key_file, unsigned flags, char *err, size_t errlen) {
  if ((cert_chain_file == NULL) != (key_file == NULL)) {
    appmsg__errf(err, errlen,
                 "a client certificate needs its private key, and a key its certificate");
    return -EINVAL;
  }
  if (flags & ~APPMSG_TLS_INSECURE_SKIP_VERIFY) {
    appmsg__errf(err, errlen, "unknown TLS flags 0x%x", flags);
    return -EINVAL;
  }
  return tls_new(tls, 0, ca_file, cert_chain_file, key_file, flags, err, errlen);
}

int appmsg_tls_reload(struct appmsg_tls *tls, char *err, size_t errlen) {
  SSL_CTX *fresh;
  int rc = make_ctx(tls, &fresh, err, errlen);
  if (rc)
    return rc;
  appmsg__mutex_lock(&tls->lock);
  SSL_CTX *old = tls->ctx;
  tls->ctx = fresh;
  appmsg__mutex_unlock(&tls->lock);
  SSL_CTX_free(old); /* connections made from it hold references of their own */
  return 0;
}

void appmsg_tls_free(struct appmsg_tls *tls) {
  if (tls == NULL)
    return;
  SSL_CTX_free(tls->ctx);
  appmsg__mutex_destroy(&tls->lock);
  appmsg__free(tls->cert);
  appmsg__free(tls->key);
  appmsg__free(tls->ca);
  appmsg__free(tls);
}

int appmsg_tls_is_server(const struct appmsg_tls *tls) {
  return tls->server;
}

int appmsg__tls_not_after(struct appmsg_tls *tls, long long *t) {
  int rc = -ENOENT;
  appmsg__mutex_lock(&tls->lock); /* (a reload may swap the context meanwhile) */
  X509 *cert = tls->ctx ? SSL_CTX_get0_certificate(tls->ctx) : NULL;
  const ASN1_TIME *end = cert ? X509_get0_notAfter(cert) : NULL;
  struct tm tm;
  if (end && ASN1_TIME_to_tm(end, &tm) == 1) {
    /* Days since 1970 from the civil date (a leap-year count: no timegm(), which is not POSIX). */
    long long y = tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    *t = days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    rc = 0;
  }
  appmsg__mutex_unlock(&tls->lock);
  return rc;
}

/* ---- the socket BIO ------------------------------------------------------------------------------ */

static int bio_write(BIO *b, const char *buf, int len) {
  struct appmsg__tls_conn *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t n = appmsg_send(t->fd, buf, (size_t)len);
  if (n >= 0)
    return (int)n;
  if (n == -EAGAIN) {
    BIO_set_retry_write(b);
  } else {
    t->sys_err = (int)-n;
    errno = t->sys_err;
  }
  return -1;
}

static int bio_read(BIO *b, char *buf, int len) {
  struct appmsg__tls_conn *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t n = appmsg_recv(t->fd, buf, (size_t)len);
  if (n > 0) {
    for (ssize_t i = 0; i < n && t->nfirst < sizeof t->first; i++)
      t->first[t->nfirst++] = (unsigned char)buf[i];
    return (int)n;
  }
  if (n == 0) {
    t->eof = 1;
    return 0;
  }
  if (n == -EAGAIN) {
    BIO_set_retry_read(b);
  } else {
    t->sys_err = (int)-n;
    errno = t->sys_err;
  }
  return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  struct appmsg__tls_conn *t = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1; /* nothing is buffered here */
  case BIO_CTRL_EOF:
    return t ? t->eof : 0;
  default:
    return 0;
  }
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *sock_method;
static appmsg__once_t sock_once = APPMSG__ONCE_INIT;

static void make_sock_method(void) {
  int index = BIO_get_new_index();
  BIO_METHOD *m = index < 0 ? NULL : BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "appmsg socket");
  if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
      BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
    sock_method = m;
  else
    BIO_meth_free(m);
}

/* ---- connections ------------------------------------------------------------------------------- */

int appmsg__tls_conn_new(struct appmsg__tls_conn **out, struct appmsg_tls *tls, appmsg_socket_t fd,
                         const char *server_name) {
  appmsg__once(&sock_once, make_sock_method);
  if (sock_method == NULL)
    return -ENOMEM;
  int verify = !tls->server && !(tls->flags & APPMSG_TLS_INSECURE_SKIP_VERIFY);
  if (server_name == NULL || tls->server)
    server_name = "";
  if (verify && !*server_name)
    return -EINVAL; /* no name: nothing to verify the certificate against */
  /* "[::1]" is the address ::1. */
  size_t nl = strlen(server_name);
  if (nl >= 2 && server_name[0] == '[' && server_name[nl - 1] == ']') {
    server_name++;
    nl -= 2;
  }
  struct appmsg__tls_conn *t = appmsg__calloc(1, sizeof *t + nl + 1);
  if (t == NULL)
    return -ENOMEM;
  memcpy(t->name, server_name, nl);
  t->fd = fd;
  t->server = tls->server ? 1 : 0;
  ERR_clear_error();
  appmsg__mutex_lock(&tls->lock);
  t->ssl = SSL_new(tls->ctx);
  appmsg__mutex_unlock(&tls->lock);
  BIO *b = t->ssl ? BIO_new(sock_method) : NULL;
  if (b == NULL) {
    SSL_free(t->ssl);
    appmsg__free(t);
    ERR_clear_error();
    return -ENOMEM;
  }
  BIO_set_data(b, t);
  SSL_set_bio(t->ssl, b, b);
  int ok = 1;
  if (t->server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    unsigned char addr[16];
    int is_ip = inet_pton(AF_INET, t->name, addr) == 1 || inet_pton(AF_INET6, t->name, addr) == 1;
    /* SNI carries host names only (RFC 6066); an address is checked as one. */
    if (*t->name && !is_ip)
      ok = SSL_set_tlsext_host_name(t->ssl, t->name) == 1;
    if (ok && verify) {
      if (is_ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), t->name) == 1;
      } else {
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(t->ssl, t->name) == 1;
      }
    }
  }
  ERR_clear_error();
  if (!ok) {
    SSL_free(t->ssl);
    appmsg__free(t);
    return -EINVAL;
  }
  *out = t;
  return 0;
}

void appmsg__tls_conn_free(struct appmsg__tls_conn *t) {
  if (t == NULL)
    return;
  SSL_free(t->ssl);
  appmsg__free(t);
  ERR_clear_error();
}

/* Whether the peer's first bytes are a plaintext appmsg frame's: 0x00, a length byte, '{'. */
static int plaintext_peer(const struct appmsg__tls_conn *t) {
  return t->nfirst >= 3 && t->first[0] == 0 && t->first[2] == '{';
}

int appmsg__tls_pending(const struct appmsg__tls_conn *t) {
  return SSL_has_pending(t->ssl);
}

/* Certificate alerts: the peer refused our certificate (or wanted one). */
static int cert_alert(int reason) {
  switch (reason - SSL_AD_REASON_OFFSET) {
  case SSL_AD_BAD_CERTIFICATE:
  case SSL_AD_UNSUPPORTED_CERTIFICATE:
  case SSL_AD_CERTIFICATE_REVOKED:
  case SSL_AD_CERTIFICATE_EXPIRED:
  case SSL_AD_CERTIFICATE_UNKNOWN:
  case SSL_AD_UNKNOWN_CA:
  case SSL_AD_ACCESS_DENIED:
  case SSL_AD_CERTIFICATE_REQUIRED:
    return 1;
  default:
    return 0;
  }
}

/* The sentence for a verification failure we detected ourselves. */
static void local_verify_failure(const struct appmsg__tls_conn *t, long result) {
  int err = vfail.set ? vfail.err : (int)result;
  const char *what = X509_verify_cert_error_string(err);
  const char *whose = t->server ? "client" : "server";
  if (err == X509_V_ERR_HOSTNAME_MISMATCH || err == X509_V_ERR_IP_ADDRESS_MISMATCH)
    snprintf(reason_buf, sizeof reason_buf,
             "the server's certificate is not valid for '%s': %s (its subject is %s)", t->name,
             what, vfail.set ? vfail.subject : "?");
  else if (vfail.set)
    snprintf(reason_buf, sizeof reason_buf,
             "the %s's certificate was refused: %s (subject %s, depth %d)", whose, what,
             vfail.subject, vfail.depth);
  else
    snprintf(reason_buf, sizeof reason_buf, "the %s's certificate was refused: %s", whose, what);
}

/* Makes the sentence for a failed call and returns its code. */
static int failure(struct appmsg__tls_conn *t, int in_handshake) {
  const char *peer = t->server ? "client" : "server";
  unsigned long e = ERR_peek_error();
  int lib = ERR_GET_LIB(e), reason = ERR_GET_REASON(e);
  char text[256];
  int code = in_handshake ? APPMSG_E_TLS_HANDSHAKE : APPMSG_E_TLS;
  if (in_handshake && plaintext_peer(t)) {
    snprintf(reason_buf, sizeof reason_buf,
             "the %s sent a plaintext appmsg frame; is it using TLS?", peer);
  } else if (lib == ERR_LIB_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    local_verify_failure(t, SSL_get_verify_result(t->ssl));
    code = APPMSG_E_TLS_VERIFY;
  } else if (lib == ERR_LIB_SSL && reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    snprintf(reason_buf, sizeof reason_buf,
             "the client sent no certificate (this server requires one)");
    code = APPMSG_E_TLS_VERIFY;
  } else if (lib == ERR_LIB_SSL && cert_alert(reason)) {
    snprintf(reason_buf, sizeof reason_buf, "the %s refused our certificate (%s)", peer,
             queue_text(text, sizeof text));
    code = APPMSG_E_TLS_VERIFY;
  } else if (e == 0 && t->eof) {
    snprintf(reason_buf, sizeof reason_buf, "the %s closed the connection %s", peer,
             in_handshake ? "during the TLS handshake" : "in the middle of a TLS record");
    code = in_handshake ? APPMSG_E_TLS_HANDSHAKE : APPMSG_E_TRUNCATED;
  } else if (e == 0) {
    snprintf(reason_buf, sizeof reason_buf, "TLS failure with no reason given");
  } else {
    queue_text(text, sizeof text);
    if (in_handshake && t->nfirst > 0 && t->first[0] != 0x16)
      snprintf(reason_buf, sizeof reason_buf,
               "the %s did not start a TLS handshake (first byte 0x%02x: %s)", peer, t->first[0],
               text);
    else
      snprintf(reason_buf, sizeof reason_buf, "%s%s", in_handshake ? "TLS handshake: " : "", text);
  }
  ERR_clear_error();
  return code;
}

/* What a call that returned n <= 0 means (see internal.h). */
static long result(struct appmsg__tls_conn *t, int n, unsigned *want, int in_handshake) {
  switch (SSL_get_error(t->ssl, n)) {
  case SSL_ERROR_WANT_READ:
    *want = APPMSG_EV_READ;
    return -EAGAIN;
  case SSL_ERROR_WANT_WRITE:
    *want = APPMSG_EV_WRITE;
    return -EAGAIN;
  case SSL_ERROR_ZERO_RETURN:
    /* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) the socket's end of
     * stream; the latter with part of a record received - part of a header
     * buffered, or a header read and its body awaited - is a truncation. */
    if (t->eof && (SSL_has_pending(t->ssl) || strcmp(SSL_rstate_string(t->ssl), "RB") == 0)) {
      snprintf(reason_buf, sizeof reason_buf,
               "the %s closed the connection in the middle of a TLS record",
               t->server ? "client" : "server");
      ERR_clear_error();
      return APPMSG_E_TRUNCATED;
    }
    ERR_clear_error();
    return 0;
  case SSL_ERROR_SYSCALL:
    if (t->sys_err) {
      ERR_clear_error();
      return -t->sys_err;
    }
    return failure(t, in_handshake);
  default:
    return failure(t, in_handshake);
  }
}

int appmsg__tls_handshake(struct appmsg__tls_conn *t, unsigned *want) {
  ERR_clear_error();
  vfail.set = 0;
  t->sys_err = 0;
  int n = SSL_do_handshake(t->ssl);
  if (n == 1)
    return 0;
  long rc = result(t, n, want, 1);
  if (rc == 0) { /* the peer closed the connection */
    if (t->server && t->nfirst == 0)
      return 1; /* before it sent anything: a plain end of stream */
    snprintf(reason_buf, sizeof reason_buf, "the %s closed the connection during the TLS handshake",
             t->server ? "client" : "server");
    return APPMSG_E_TLS_HANDSHAKE;
  }
  return (int)rc;
}

long appmsg__tls_read(struct appmsg__tls_conn *t, void *buf, size_t len, unsigned *want) {
  ERR_clear_error();
  t->sys_err = 0;
  int n = SSL_read(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
  return n > 0 ? n : result(t, n, want, 0);
}

long appmsg__tls_write(struct appmsg__tls_conn *t, const void *buf, size_t len, unsigned *want) {
  ERR_clear_error();
  t->sys_err = 0;
  int n = SSL_write(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
  if (n > 0)
    return n;
  long rc = result(t, n, want, 0);
  return rc == 0 ? -EPIPE : rc; /* the peer's close_notify does not stop our writing */
}

int appmsg__tls_shutdown(struct appmsg__tls_conn *t, unsigned *want) {
  ERR_clear_error();
  t->sys_err = 0;
  int n = SSL_shutdown(t->ssl);
  if (n >= 0) /* 0: ours is sent, the peer's not seen (the linger reads on) */
    return 0;
  int e = SSL_get_error(t->ssl, n);
  ERR_clear_error();
  if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
    *want = e == SSL_ERROR_WANT_WRITE ? APPMSG_EV_WRITE : APPMSG_EV_READ;
    return -EAGAIN;
  }
  return 0; /* cannot be sent (the connection failed): close without it */
}

int appmsg__tls_describe(const struct appmsg__tls_conn *t, char *buf, size_t len) {
  if (len == 0)
    return 0;
  buf[0] = '\0';
  if (t == NULL || !SSL_is_init_finished(t->ssl))
    return 0;
  char who[256] = "";
  X509 *peer = SSL_get0_peer_certificate(t->ssl);
  if (peer)
    subject_text(peer, who, sizeof who);
  int n = snprintf(buf, len, "%s %s%s%s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
                   peer ? ", peer " : "", who);
  if (n < 0)
    return 0;
  return (size_t)n < len ? n : (int)len - 1;
}
