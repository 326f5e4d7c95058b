/*
 * TLS in a build without OpenSSL (APPMSG_WITH_TLS=OFF): every context
 * call fails with APPMSG_E_TLS and says why, so a program asked for TLS
 * stops with that sentence instead of sending in the clear.  No
 * connection ever has TLS state, so the connection's TLS calls are never
 * reached; they fail the same way should one be.
 */
#include <errno.h>

#include "appmsg/tls.h"
#include "tls_internal.h"
#include "util.h"

#define NO_TLS "this build of appmsg has no TLS (built without OpenSSL)"

static int refuse(struct appmsg_tls **tls, char *err, size_t errlen) {
  if (tls)
    *tls = NULL;
  appmsg__errf(err, errlen, "%s", NO_TLS);
  return APPMSG_E_TLS;
}

int appmsg_tls_server_new(struct appmsg_tls **tls, const char *cert_chain_file,
                          const char *key_file, const char *client_ca_file, char *err,
                          size_t errlen) {
  (void)cert_chain_file;
  (void)key_file;
  (void)client_ca_file;
  return refuse(tls, err, errlen);
}

int appmsg_tls_client_new(struct appmsg_tls **tls, const char *ca_file, const char *cert_chain_file,
                          const char *key_file, unsigned flags, char *err, size_t errlen) {
  (void)ca_file;
  (void)cert_chain_file;
  (void)key_file;
  (void)flags;
  return refuse(tls, err, errlen);
}

int appmsg_tls_reload(struct appmsg_tls *tls, char *err, size_t errlen) {
  (void)tls;
  return refuse(NULL, err, errlen);
}

void appmsg_tls_free(struct appmsg_tls *tls) {
  (void)tls;
}

int appmsg_tls_is_server(const struct appmsg_tls *tls) {
  (void)tls;
  return 0;
}

int appmsg__tls_not_after(struct appmsg_tls *tls, long long *t) {
  (void)tls;
  (void)t;
  return -ENOENT;
}

int appmsg__tls_conn_new(struct appmsg__tls_conn **t, struct appmsg_tls *tls, appmsg_socket_t fd,
                         const char *server_name) {
  (void)tls;
  (void)fd;
  (void)server_name;
  *t = NULL;
  return APPMSG_E_TLS;
}

void appmsg__tls_conn_free(struct appmsg__tls_conn *t) {
  (void)t;
}

int appmsg__tls_handshake(struct appmsg__tls_conn *t, unsigned *want) {
  (void)t;
  (void)want;
  return APPMSG_E_TLS;
}

long appmsg__tls_read(struct appmsg__tls_conn *t, void *buf, size_t len, unsigned *want) {
  (void)t;
  (void)buf;
  (void)len;
  (void)want;
  return APPMSG_E_TLS;
}

long appmsg__tls_write(struct appmsg__tls_conn *t, const void *buf, size_t len, unsigned *want) {
  (void)t;
  (void)buf;
  (void)len;
  (void)want;
  return APPMSG_E_TLS;
}

int appmsg__tls_shutdown(struct appmsg__tls_conn *t, unsigned *want) {
  (void)t;
  (void)want;
  return 0;
}

int appmsg__tls_pending(const struct appmsg__tls_conn *t) {
  (void)t;
  return 0;
}

const char *appmsg__tls_reason(void) {
  return NO_TLS;
}

int appmsg__tls_describe(const struct appmsg__tls_conn *t, char *buf, size_t len) {
  (void)t;
  if (len > 0)
    buf[0] = '\0';
  return 0;
}
