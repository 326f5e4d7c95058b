/*
 * TLS under the framed connection, over real loopback sockets: handshakes
 * on both loop backends, content crossing many records, pipelined frames,
 * replies that must wait for a slow reader, close_notify both ways, mutual
 * TLS accepted and refused, the client's verification (untrusted CA, wrong
 * name, expired certificate, IP addresses), the handshake timeout, a
 * plaintext frame and garbage on a TLS port, a peer that leaves in the
 * middle of a record or a frame, renegotiation and key updates, reloads,
 * and the API's refusals.
 *
 * Certificates are made by tests/tls/make_certs.sh (the openssl command)
 * into a temporary directory when the suite starts; on Windows, which has
 * neither sh nor that command, the same ones are made with the OpenSSL
 * library (make_certs() below).  Peers that must do what the library would
 * not (one-byte records, renegotiation, half a record) are OpenSSL clients
 * of the test's own, on a thread, with blocking sockets bounded by
 * timeouts; the loop under test runs on the main thread, until a flag is
 * set or a time limit passes.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifndef _WIN32
#include <sys/time.h> /* struct timeval (SO_RCVTIMEO) */
#endif

#include "appmsg/conn.h"
#include "appmsg/net.h"
#include "appmsg/server.h"
#include "appmsg/tls.h"
#include "platform.h"
#include "testutil.h"

/* After <windows.h> (platform.h), whose wincrypt.h names X509_NAME too: OpenSSL's headers
 * take the name back. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#ifdef _WIN32 /* the certificates, made in-process */
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#endif

static const enum appmsg_loop_backend backends[] = {TU_LOOP_EPOLL, APPMSG_LOOP_POLL};
static char certdir[256];

/* certdir/name, in one of a few rotating buffers. */
static const char *cert(const char *name) {
  static char bufs[8][512];
  static int k;
  char *b = bufs[k++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", certdir, name);
  return b;
}

/* ---- what each side saw ------------------------------------------------------------------- */

struct seen {
  int messages, errors, closes, connects, eofs;
  int last_error, close_reason, connect_err;
  char reason[512];      /* the last on_error reason */
  struct tu_str content; /* every message's content, in order */
  int echo;              /* reply with the content */
  size_t reply_size;     /* reply with this many pattern bytes instead */
  int close_after;       /* close gracefully after this many messages (0: never) */
  struct appmsg_conn *conn;
};

static struct appmsg_header hdr;
static struct appmsg_loop *loop;

static unsigned char pattern(size_t k) {
  return (unsigned char)(k * 2654435761u >> 13);
}

static void on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  (void)h;
  struct seen *s = ud;
  s->messages++;
  tu_str_add(&s->content, content, len);
  if (s->reply_size) {
    unsigned char *big = malloc(s->reply_size);
    for (size_t k = 0; k < s->reply_size; k++)
      big[k] = pattern(k);
    ck_assert_int_eq(appmsg_conn_send(c, &hdr, big, s->reply_size), 0);
    free(big);
  } else if (s->echo) {
    ck_assert_int_eq(appmsg_conn_send(c, &hdr, content, len), 0);
  }
  if (s->close_after && s->messages == s->close_after)
    appmsg_conn_close(c);
}

static void on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t off, void *ud) {
  struct seen *s = ud;
  s->errors++;
  s->last_error = err;
  snprintf(s->reason, sizeof s->reason, "%s", reason ? reason : "");
  int rc = appmsg_conn_send_error(c, err, reason, (long long)off);
  /* After a TLS failure nothing can be sent: it would leave in the clear. */
  if (err != APPMSG_E_TRUNCATED)
    ck_assert_int_eq(rc, APPMSG_E_CLOSED);
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  struct seen *s = ud;
  s->closes++;
  s->close_reason = reason;
  if (s->conn == c)
    s->conn = NULL;
}

static void on_connect(struct appmsg_conn *c, int err, void *ud) {
  (void)c;
  struct seen *s = ud;
  s->connects++;
  s->connect_err = err;
}

static void on_eof(struct appmsg_conn *c, void *ud) {
  (void)c;
  ((struct seen *)ud)->eofs++;
}

static const struct appmsg_conn_callbacks cbs = {.on_message = on_message,
                                                 .on_error = on_error,
                                                 .on_close = on_close,
                                                 .on_connect = on_connect,
                                                 .on_eof = on_eof};

/* ---- the server under test and clients made with the library ------------------------------- */

static struct appmsg_server *srv;
static struct appmsg_server_opts sopts;
static struct appmsg_tls *stls;
static struct seen ss; /* every server connection's callbacks */
static char port[16];
static struct appmsg_conn_opts copts;

static void setup_backend(int i) {
  ck_assert_int_eq(appmsg_ignore_sigpipe(), 0);
  ck_assert_int_eq(appmsg_loop_new(&loop, backends[i]), 0);
  appmsg_header_init(&hdr);
  appmsg_header_set(&hdr, "binary/x", "binary");
  memset(&ss, 0, sizeof ss);
  ss.echo = 1;
  appmsg_conn_opts_default(&copts);
}

static void start_server(const char *crt, const char *key, const char *client_ca) {
  char err[256] = "";
  int rc = appmsg_tls_server_new(&stls, crt, key, client_ca, err, sizeof err);
  ck_assert_msg(rc == 0, "server context: %s", err);
  appmsg_server_opts_default(&sopts);
  sopts.conn.tls = stls;
  sopts.conn.limits.max_content_length = 64u << 20;
  sopts.conn.max_output = 0;
  rc = appmsg_server_new(&srv, loop, "127.0.0.1", "0", &sopts, &cbs, NULL, &ss, err, sizeof err);
  ck_assert_msg(rc == 0, "server: %s", err);
  snprintf(port, sizeof port, "%d", appmsg_sockport(appmsg_server_fd(srv)));
}

static void setup(int i) {
  setup_backend(i);
  start_server(cert("server.pem"), cert("server.key"), NULL);
}

static void teardown(void) {
  appmsg_server_free(srv);
  srv = NULL;
  for (int k = 0; k < 50 && appmsg_loop_alive(loop); k++)
    appmsg_loop_run_once(loop, 5);
  appmsg_loop_free(loop);
  appmsg_tls_free(stls);
  stls = NULL;
  appmsg_header_cleanup(&hdr);
  tu_str_free(&ss.content);
}

/* Runs the loop until *flag >= want or ms pass. */
static void run_until(const int *flag, int want, int ms) {
  uint64_t end = appmsg_loop_now(loop) + (uint64_t)ms;
  appmsg_loop_run_once(loop, 0);
  while (*flag < want && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 10);
}

static struct appmsg_tls *client_tls(const char *ca, const char *crt, const char *key,
                                     unsigned flags) {
  struct appmsg_tls *t;
  char err[256] = "";
  int rc = appmsg_tls_client_new(&t, ca, crt, key, flags, err, sizeof err);
  ck_assert_msg(rc == 0, "client context: %s", err);
  return t;
}

/* A library client to the server under test at host, verifying name. */
static struct appmsg_conn *connect_to(struct appmsg_tls *t, const char *host, const char *name,
                                      struct seen *cs) {
  copts.tls = t;
  copts.tls_server_name = name;
  copts.limits.max_content_length = 64u << 20;
  struct appmsg_conn *c;
  char err[256] = "";
  int rc = appmsg_conn_connect(&c, loop, host, port, &copts, &cbs, cs, err, sizeof err);
  ck_assert_msg(rc == 0, "connect: %s", err);
  cs->conn = c;
  return c;
}

/* ---- raw peers: an OpenSSL client (or plain TCP) on a thread ------------------------------- */

struct peer {
  int (*fn)(struct peer *p); /* what the peer does; its result goes to rc */
  appmsg_socket_t fd;
  SSL_CTX *ctx;
  SSL *ssl;
  int max_version; /* 0, or TLS1_2_VERSION for renegotiation */
  int rc;
  struct tu_str got; /* what it read */
  char note[256];    /* what it saw, for messages */
  atomic_int done;
  int done_flag; /* mirrors done for run_until */
};

static void *peer_main(void *arg) {
  struct peer *p = arg;
  p->rc = p->fn(p);
  atomic_store(&p->done, 1);
  return NULL;
}

/* A blocking TCP connection to the server under test, every call bounded by 5 s. */
static appmsg_socket_t tcp_connect(void) {
  appmsg_socket_t fd;
  if (appmsg__sock_open(AF_INET, SOCK_STREAM, 0, &fd) < 0)
    return APPMSG_INVALID_SOCKET;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
#ifdef _WIN32
  DWORD tv = 5000; /* (milliseconds there) */
#else
  struct timeval tv = {5, 0};
#endif
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, (const char *)&tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, (const char *)&tv, sizeof tv);
  if (appmsg__sock_nonblock(fd, 0) < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    tu_close(fd);
    return APPMSG_INVALID_SOCKET;
  }
  return fd;
}

/* TLS client handshake on a fresh connection, trusting the test CA. */
static int ssl_open(struct peer *p) {
  p->fd = tcp_connect();
  if (p->fd == APPMSG_INVALID_SOCKET)
    return -1;
  p->ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(p->ctx, cert("ca.pem"), NULL);
  SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
  if (p->max_version)
    SSL_CTX_set_max_proto_version(p->ctx, p->max_version);
  p->ssl = SSL_new(p->ctx);
  SSL_set_fd(p->ssl, (int)p->fd); /* (OpenSSL takes a SOCKET as an int on Windows) */
  SSL_set1_host(p->ssl, "localhost");
  SSL_set_tlsext_host_name(p->ssl, "localhost");
  if (SSL_connect(p->ssl) != 1) {
    snprintf(p->note, sizeof p->note, "handshake failed");
    return -1;
  }
  return 0;
}

static void ssl_close(struct peer *p) {
  SSL_free(p->ssl);
  SSL_CTX_free(p->ctx);
  if (p->fd != APPMSG_INVALID_SOCKET)
    tu_close(p->fd);
  p->ssl = NULL;
  p->ctx = NULL;
  p->fd = APPMSG_INVALID_SOCKET;
}

/* Reads replies until n frames are complete (or the stream ends): returns how many. */
static int ssl_read_frames(struct peer *p, int n) {
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  int frames = 0;
  while (frames < n) {
    unsigned char buf[16384];
    int r = SSL_read(p->ssl, buf, sizeof buf);
    if (r <= 0)
      break;
    tu_str_add(&p->got, buf, (size_t)r);
    for (size_t off = 0, used; off < (size_t)r; off += used)
      if (appmsg_decoder_feed(&d, buf + off, (size_t)r - off, &used) == APPMSG_MESSAGE)
        frames++;
  }
  appmsg_decoder_cleanup(&d);
  return frames;
}

static size_t frame(unsigned char *out, size_t cap, const void *content, size_t len) {
  long n = appmsg_frame_head(&hdr, len, out, cap);
  ck_assert_int_gt(n, 0);
  ck_assert_uint_le((size_t)n + len, cap);
  memcpy(out + n, content, len);
  return (size_t)n + len;
}

/* Runs the loop while the peer works (at most ms), then joins it. */
static void run_peer(struct peer *p, int ms) {
  pthread_t th;
  p->fd = APPMSG_INVALID_SOCKET;
  ck_assert_int_eq(pthread_create(&th, NULL, peer_main, p), 0);
  uint64_t end = appmsg_loop_now(loop) + (uint64_t)ms;
  while (!atomic_load(&p->done) && appmsg_loop_now(loop) < end)
    appmsg_loop_run_once(loop, 5);
  pthread_join(th, NULL);
  for (int k = 0; k < 5; k++)
    appmsg_loop_run_once(loop, 1);
}

/* Afterwards: a fresh library client is still served. */
static void fresh_client_served(void) {
  struct appmsg_tls *t = client_tls(cert("ca.pem"), NULL, NULL, 0);
  struct seen cs = {0};
  int before = ss.messages;
  connect_to(t, "127.0.0.1", "localhost", &cs);
  run_until(&cs.connects, 1, 3000);
  ck_assert_int_eq(cs.connect_err, 0);
  ck_assert_int_eq(appmsg_conn_send(cs.conn, &hdr, "still there?", 12), 0);
  run_until(&cs.messages, 1, 3000);
  ck_assert_int_eq(cs.messages, 1);
  ck_assert_int_eq(ss.messages, before + 1);
  appmsg_conn_close(cs.conn);
  run_until(&cs.closes, 1, 3000);
  ck_assert_int_eq(cs.closes, 1);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
}

/* ---- handshakes and data -------------------------------------------------------------------- */

START_TEST(handshake_echo_and_close_notify) {
  setup(_i);
  struct appmsg_tls *t = client_tls(cert("ca.pem"), NULL, NULL, 0);
  struct seen cs = {0};
  struct appmsg_conn *c = connect_to(t, "127.0.0.1", "localhost", &cs);
  /* Queued before the handshake: leaves encrypted after it. */
  ck_assert_int_eq(appmsg_conn_send(c, &hdr, "early", 5), 0);
  run_until(&cs.connects, 1, 3000);
  ck_assert_int_eq(cs.connect_err, 0);
  char info[256];
  ck_assert_int_gt(appmsg_conn_tls_info(c, info, sizeof info), 0);
  ck_assert_msg(strstr(info, "TLSv1.3") != NULL, "%s", info);
  ck_assert_msg(strstr(info, "peer CN=localhost") != NULL, "%s", info);
  ck_assert_int_eq(appmsg_conn_send(c, &hdr, "hello over TLS", 14), 0);
  run_until(&cs.messages, 2, 3000);
  ck_assert_int_eq(cs.messages, 2);
  ck_assert_uint_eq(cs.content.len, 19);
  ck_assert_mem_eq(cs.content.p, "earlyhello over TLS", 19);
  /* A graceful close sends close_notify: the server sees a clean end. */
  appmsg_conn_close(c);
  run_until(&ss.closes, 1, 3000);
  run_until(&cs.closes, 1, 3000);
  ck_assert_int_eq(ss.closes, 1);
  ck_assert_int_eq(ss.close_reason, 0);
  ck_assert_int_eq(ss.eofs, 1);
  ck_assert_int_eq(ss.errors, 0);
  ck_assert_int_eq(cs.close_reason, 0);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
  teardown();
}
END_TEST

/* 8 MiB each way (hundreds of records), and 64 requests whose 256 KiB
 * replies pile up behind a reader that keeps the server's writes waiting:
 * the queue grows (and moves) under a write OpenSSL must retry. */
START_TEST(large_content_and_waiting_writes) {
  setup(_i);
  struct appmsg_tls *t = client_tls(cert("ca.pem"), NULL, NULL, 0);
  struct seen cs = {0};
  struct appmsg_conn *c = connect_to(t, "127.0.0.1", "localhost", &cs);
  size_t len = 8u << 20;
  unsigned char *big = malloc(len);
  for (size_t k = 0; k < len; k++)
    big[k] = pattern(k);
  ck_assert_int_eq(appmsg_conn_send(c, &hdr, big, len), 0);
  run_until(&cs.messages, 1, 20000);
  ck_assert_int_eq(ss.messages, 1);
  ck_assert_int_eq(cs.messages, 1);
  ck_assert_uint_eq(cs.content.len, len);
  ck_assert(memcmp(cs.content.p, big, len) == 0);
  free(big);
  tu_str_free(&cs.content);
  ss.reply_size = 256 * 1024;
  for (int k = 0; k < 64; k++)
    ck_assert_int_eq(appmsg_conn_send(c, &hdr, "more", 4), 0);
  run_until(&cs.messages, 65, 20000);
  ck_assert_int_eq(cs.messages, 65);
  ck_assert_uint_eq(cs.content.len, 64 * ss.reply_size);
  for (size_t k = 0; k < cs.content.len; k += 4099)
    ck_assert_uint_eq((unsigned char)cs.content.p[k], pattern(k % ss.reply_size));
  appmsg_conn_close(c);
  run_until(&cs.closes, 1, 3000);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
  teardown();
}
END_TEST

START_TEST(pipelined_frames_in_order) {
  setup(_i);
  struct appmsg_tls *t = client_tls(cert("ca.pem"), NULL, NULL, 0);
  struct seen cs = {0};
  struct appmsg_conn *c = connect_to(t, "127.0.0.1", "localhost", &cs);
  struct tu_str want = {0};
  for (int k = 0; k < 500; k++) {
    char body[32];
    int n = snprintf(body, sizeof body, "request %d;", k);
    tu_str_add(&want, body, (size_t)n);
    ck_assert_int_eq(appmsg_conn_send(c, &hdr, body, (size_t)n), 0);
  }
  run_until(&cs.messages, 500, 10000);
  ck_assert_int_eq(cs.messages, 500);
  ck_assert_uint_eq(cs.content.len, want.len);
  ck_assert_mem_eq(cs.content.p, want.p, want.len);
  appmsg_conn_close(c);
  run_until(&cs.closes, 1, 3000);
  tu_str_free(&want);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
  teardown();
}
END_TEST

/* An OpenSSL client sending a frame in one-byte records, then two frames
 * in one record; the server closes after the third reply with close_notify. */
static int one_byte_records(struct peer *p) {
  if (ssl_open(p))
    return -1;
  unsigned char f[600];
  size_t n = frame(f, sizeof f, "one byte at a time", 18);
  for (size_t k = 0; k < n; k++)
    if (SSL_write(p->ssl, f + k, 1) != 1)
      return -2;
  unsigned char two[1200];
  size_t m = frame(two, sizeof two, "second", 6);
  m += frame(two + m, sizeof two - m, "third", 5);
  if (SSL_write(p->ssl, two, (int)m) != (int)m)
    return -3;
  if (ssl_read_frames(p, 3) != 3)
    return -4;
  /* Then close_notify from the server, not a bare TCP end. */
  unsigned char b[16];
  int r = SSL_read(p->ssl, b, sizeof b);
  int e = SSL_get_error(p->ssl, r);
  snprintf(p->note, sizeof p->note, "last read %d, error %d", r, e);
  int ok = r == 0 && e == SSL_ERROR_ZERO_RETURN;
  SSL_shutdown(p->ssl);
  ssl_close(p);
  return ok ? 0 : -5;
}

START_TEST(one_byte_records_and_server_close_notify) {
  setup(_i);
  ss.close_after = 3;
  struct peer p = {.fn = one_byte_records};
  run_peer(&p, 10000);
  ck_assert_msg(p.rc == 0, "peer: %d (%s)", p.rc, p.note);
  ck_assert_int_eq(ss.messages, 3);
  ck_assert_uint_eq(ss.content.len, 29);
  ck_assert_mem_eq(ss.content.p, "one byte at a timesecondthird", 29);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.close_reason, 0);
  tu_str_free(&p.got);
  fresh_client_served();
  teardown();
}
END_TEST

/* ---- mutual TLS ----------------------------------------------------------------------------- */

START_TEST(mutual_tls_accepted) {
  setup_backend(0);
  start_server(cert("server.pem"), cert("server.key"), cert("ca.pem"));
  struct appmsg_tls *t = client_tls(cert("ca.pem"), cert("client.pem"), cert("client.key"), 0);
  struct seen cs = {0};
  connect_to(t, "127.0.0.1", "localhost", &cs);
  run_until(&cs.connects, 1, 3000);
  ck_assert_int_eq(cs.connect_err, 0);
  ck_assert_int_eq(appmsg_conn_send(cs.conn, &hdr, "with a certificate", 18), 0);
  run_until(&cs.messages, 1, 3000);
  ck_assert_int_eq(cs.messages, 1);
  ck_assert_int_eq(ss.errors, 0);
  appmsg_conn_close(cs.conn);
  run_until(&cs.closes, 1, 3000);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
  teardown();
}
END_TEST

/* A client refused by a server that wants certificates: the server's
 * reason (which the program logs) and the client's both say why. */
static void refused_client(const char *crt, const char *key, const char *server_says,
                           const char *client_says) {
  struct appmsg_tls *t =
      client_tls(cert("ca.pem"), crt ? cert(crt) : NULL, key ? cert(key) : NULL, 0);
  struct seen cs = {0};
  memset(&ss, 0, sizeof ss);
  ss.echo = 1;
  connect_to(t, "127.0.0.1", "localhost", &cs);
  /* Under TLS 1.3 the client may finish first and hear of the refusal at its next read. */
  appmsg_conn_send(cs.conn, &hdr, "let me in", 9);
  run_until(&cs.closes, 1, 5000);
  run_until(&ss.closes, 1, 5000);
  ck_assert_int_eq(ss.messages, 0);
  ck_assert_int_eq(cs.messages, 0);
  ck_assert_int_eq(ss.errors, 1);
  ck_assert_int_eq(ss.last_error, APPMSG_E_TLS_VERIFY);
  ck_assert_msg(strstr(ss.reason, server_says) != NULL, "server: %s", ss.reason);
  ck_assert_int_eq(cs.closes, 1);
  ck_assert_int_eq(cs.errors, 1);
  ck_assert_msg(cs.last_error == APPMSG_E_TLS_VERIFY, "client: %s %s",
                appmsg_errname(cs.last_error), cs.reason);
  ck_assert_msg(strstr(cs.reason, client_says) != NULL, "client: %s", cs.reason);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
}

START_TEST(mutual_tls_refused) {
  setup_backend(0);
  start_server(cert("server.pem"), cert("server.key"), cert("ca.pem"));
  refused_client(NULL, NULL, "the client sent no certificate",
                 "the server refused our certificate");
  refused_client("other.pem", "other.key",
                 "unable to get local issuer certificate (subject CN=localhost",
                 "the server refused our certificate");
  refused_client("expired.pem", "expired.key", "certificate has expired (subject CN=localhost",
                 "the server refused our certificate");
  struct appmsg_tls *t = client_tls(cert("ca.pem"), cert("client.pem"), cert("client.key"), 0);
  struct seen cs = {0};
  connect_to(t, "127.0.0.1", "localhost", &cs);
  appmsg_conn_send(cs.conn, &hdr, "fresh", 5);
  run_until(&cs.messages, 1, 3000);
  ck_assert_int_eq(cs.messages, 1);
  appmsg_conn_close(cs.conn);
  run_until(&cs.closes, 1, 3000);
  tu_str_free(&cs.content);
  appmsg_tls_free(t);
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 0);
  teardown();
}
END_TEST

/* ---- the client's verification --------------------------------------------------------------- */

/* server_code: what the server hears of it (the client's alert). */
static void refused_server(struct appmsg_tls *t, const char *host, const char *name,
                           const char *says, int server_code) {
  struct seen cs = {0};
  memset(&ss, 0, sizeof ss);
  ss.echo = 1;
  connect_to(t, host, name, &cs);
  appmsg_conn_send(cs.conn, &hdr, "secret", 6);
  run_until(&cs.closes, 1, 5000);
  ck_assert_int_eq(cs.closes, 1);
  ck_assert_int_eq(cs.connects, 1);
  ck_assert_int_eq(cs.connect_err, APPMSG_E_TLS_VERIFY);
  ck_assert_int_eq(cs.close_reason, APPMSG_E_TLS_VERIFY);
  ck_assert_int_eq(cs.errors, 1);
  ck_assert_msg(strstr(cs.reason, says) != NULL, "client: %s", cs.reason);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.messages, 0); /* the request never left */
  ck_assert_msg(ss.last_error == server_code, "server: %s %s", appmsg_errname(ss.last_error),
                ss.reason);
  if (server_code == APPMSG_E_TLS_VERIFY)
    ck_assert_msg(strstr(ss.reason, "the client refused our certificate") != NULL, "server: %s",
                  ss.reason);
}

START_TEST(client_verification) {
  setup_backend(0);
  start_server(cert("server.pem"), cert("server.key"), NULL);
  struct appmsg_tls *ok = client_tls(cert("ca.pem"), NULL, NULL, 0);
  refused_server(ok, "127.0.0.1", "wrong.example",
                 "the server's certificate is not valid for 'wrong.example'", APPMSG_E_TLS_VERIFY);
  refused_server(ok, "127.0.0.1", "127.0.0.2",
                 "the server's certificate is not valid for '127.0.0.2'", APPMSG_E_TLS_VERIFY);
  struct appmsg_tls *other = client_tls(cert("other-ca.pem"), NULL, NULL, 0);
  refused_server(other, "127.0.0.1", "localhost",
                 "the server's certificate was refused: unable to get local issuer certificate",
                 APPMSG_E_TLS_VERIFY);
  appmsg_tls_free(other);
  /* Names that match: an IP address (the host given to connect), a DNS name. */
  const char *hosts[] = {"127.0.0.1", "localhost"};
  for (int k = 0; k < 2; k++) {
    struct seen cs = {0};
    connect_to(ok, hosts[k], NULL, &cs);
    run_until(&cs.connects, 1, 3000);
    ck_assert_msg(cs.connect_err == 0, "%s: %s", hosts[k], cs.reason);
    appmsg_conn_close(cs.conn);
    run_until(&cs.closes, 1, 3000);
  }
  /* Skipping verification only by the flag that says so. */
  struct appmsg_tls *insecure =
      client_tls(cert("other-ca.pem"), NULL, NULL, APPMSG_TLS_INSECURE_SKIP_VERIFY);
  struct seen cs = {0};
  connect_to(insecure, "127.0.0.1", "wrong.example", &cs);
  run_until(&cs.connects, 1, 3000);
  ck_assert_int_eq(cs.connect_err, 0);
  appmsg_conn_close(cs.conn);
  run_until(&cs.closes, 1, 3000);
  appmsg_tls_free(insecure);
  appmsg_tls_free(ok);
  teardown();
  /* An expired server certificate. */
  setup_backend(0);
  start_server(cert("expired.pem"), cert("expired.key"), NULL);
  ok = client_tls(cert("ca.pem"), NULL, NULL, 0);
  refused_server(ok, "127.0.0.1", "localhost",
                 "the server's certificate was refused: certificate has expired",
                 APPMSG_E_TLS_VERIFY);
  appmsg_tls_free(ok);
  teardown();
}
END_TEST

START_TEST(ipv6_address_as_name) {
  setup_backend(0);
  char err[256];
  ck_assert_int_eq(
      appmsg_tls_server_new(&stls, cert("server.pem"), cert("server.key"), NULL, err, sizeof err),
      0);
  appmsg_server_opts_default(&sopts);
  sopts.conn.tls = stls;
  if (appmsg_server_new(&srv, loop, "::1", "0", &sopts, &cbs, NULL, &ss, err, sizeof err) != 0) {
    appmsg_tls_free(stls); /* no IPv6 here: nothing to test */
    stls = NULL;
    appmsg_loop_free(loop);
    appmsg_header_cleanup(&hdr);
    return;
  }
  snprintf(port, sizeof port, "%d", appmsg_sockport(appmsg_server_fd(srv)));
  struct appmsg_tls *t = client_tls(cert("ca.pem"), NULL, NULL, 0);
  struct seen cs = {0};
  connect_to(t, "::1", NULL, &cs);
  run_until(&cs.connects, 1, 3000);
  ck_assert_msg(cs.connect_err == 0, "%s", cs.reason);
  appmsg_conn_close(cs.conn);
  run_until(&cs.closes, 1, 3000);
  appmsg_tls_free(t);
  teardown();
}
END_TEST

/* ---- hostile peers ------------------------------------------------------------------------------ */

static int send_plaintext_frame(struct peer *p) {
  p->fd = tcp_connect();
  unsigned char f[600];
  size_t n = frame(f, sizeof f, "plaintext", 9);
  if (appmsg_send(p->fd, f, n) != (ssize_t)n)
    return -1;
  /* The server closes without a reply (PROTOCOL.md 8): read to the end. */
  for (int k = 0; k < 100; k++) {
    char b[4096];
    ssize_t r = appmsg_recv(p->fd, b, sizeof b);
    if (r <= 0)
      break;
    tu_str_add(&p->got, b, (size_t)r);
  }
  tu_close(p->fd);
  return 0;
}

static int send_garbage(struct peer *p) {
  p->fd = tcp_connect();
  const char *g = "this is not a ClientHello at all\r\n\r\n";
  appmsg_send(p->fd, g, strlen(g));
  char b[256];
  while (appmsg_recv(p->fd, b, sizeof b) > 0)
    ;
  tu_close(p->fd);
  return 0;
}

START_TEST(plaintext_frame_and_garbage_refused) {
  setup(0);
  struct peer p = {.fn = send_plaintext_frame};
  run_peer(&p, 8000);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.errors, 1);
  ck_assert_int_eq(ss.last_error, APPMSG_E_TLS_HANDSHAKE);
  ck_assert_str_eq(ss.reason, "the client sent a plaintext appmsg frame; is it using TLS?");
  ck_assert_int_eq(ss.messages, 0);
  ck_assert_uint_eq(p.got.len, 0); /* not a byte in the clear */
  tu_str_free(&p.got);
  memset(&ss, 0, sizeof ss);
  ss.echo = 1;
  struct peer g = {.fn = send_garbage};
  run_peer(&g, 8000);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.errors, 1);
  ck_assert_int_eq(ss.last_error, APPMSG_E_TLS_HANDSHAKE);
  ck_assert_msg(strstr(ss.reason, "did not start a TLS handshake") != NULL, "%s", ss.reason);
  fresh_client_served();
  ck_assert_uint_eq(appmsg_server_conn_count(srv), 0);
  teardown();
}
END_TEST

/* A handshake that stalls: a TCP connection that says nothing, and one
 * that sends the first 10 bytes of a ClientHello. */
static int stall(struct peer *p) {
  appmsg_socket_t a = tcp_connect(), b = tcp_connect();
  const unsigned char partial[10] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03};
  appmsg_send(b, partial, sizeof partial);
  char buf[64];
  ssize_t ra = appmsg_recv(a, buf, sizeof buf), rb = appmsg_recv(b, buf, sizeof buf);
  snprintf(p->note, sizeof p->note, "reads %zd %zd", ra, rb);
  tu_close(a);
  tu_close(b);
  return ra == 0 && rb == 0 ? 0 : -1; /* both closed by the server */
}

START_TEST(handshake_timeout) {
  setup_backend(_i);
  start_server(cert("server.pem"), cert("server.key"), NULL);
  sopts.conn.handshake_timeout_ms = 300;
  uint64_t t0 = appmsg_loop_now(loop);
  struct peer p = {.fn = stall};
  run_peer(&p, 8000);
  ck_assert_msg(p.rc == 0, "%s", p.note);
  run_until(&ss.closes, 2, 3000);
  ck_assert_int_eq(ss.closes, 2);
  ck_assert_int_eq(ss.errors, 2);
  ck_assert_int_eq(ss.last_error, APPMSG_E_TIMEOUT);
  ck_assert_msg(strstr(ss.reason, "TLS handshake did not finish within 300 ms") != NULL, "%s",
                ss.reason);
  ck_assert_uint_ge(appmsg_loop_now(loop) - t0, 290);
  fresh_client_served();
  teardown();
}
END_TEST

/* After the handshake: the header of a record, and nothing more. */
static int half_a_record(struct peer *p) {
  if (ssl_open(p))
    return -1;
  const unsigned char head[5] = {0x17, 0x03, 0x03, 0x00, 0x40};
  appmsg_send(p->fd, head, sizeof head);
  /* An end of stream, not a reset (closing with the server's session
   * tickets unread would send one): shut down, then read to the end. */
  appmsg__sock_shutdown_write(p->fd);
  char b[4096];
  while (appmsg_recv(p->fd, b, sizeof b) > 0)
    ;
  ssl_close(p);
  return 0;
}

/* Half a frame, then close_notify. */
static int close_notify_mid_frame(struct peer *p) {
  if (ssl_open(p))
    return -1;
  unsigned char f[600];
  size_t n = frame(f, sizeof f, "0123456789", 10);
  SSL_write(p->ssl, f, (int)n - 4);
  SSL_shutdown(p->ssl);
  /* The server's error reply cannot come (it may not reply under TLS once
   * the stream has ended; it closes): read until the end. */
  char b[256];
  while (SSL_read(p->ssl, b, sizeof b) > 0)
    ;
  ssl_close(p);
  return 0;
}

START_TEST(peer_leaves_mid_record_or_mid_frame) {
  setup(0);
  struct peer p = {.fn = half_a_record};
  run_peer(&p, 8000);
  ck_assert_int_eq(p.rc, 0);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.closes, 1);
  ck_assert_int_eq(ss.last_error, APPMSG_E_TRUNCATED);
  ck_assert_msg(strstr(ss.reason, "in the middle of a TLS record") != NULL, "%s", ss.reason);
  memset(&ss, 0, sizeof ss);
  ss.echo = 1;
  struct peer q = {.fn = close_notify_mid_frame};
  run_peer(&q, 8000);
  ck_assert_int_eq(q.rc, 0);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.closes, 1);
  ck_assert_int_eq(ss.last_error, APPMSG_E_TRUNCATED);
  ck_assert_int_eq(ss.close_reason, APPMSG_E_TRUNCATED);
  fresh_client_served();
  teardown();
}
END_TEST

/* TLS 1.2 renegotiation is refused; a TLS 1.3 key update is honoured. */
static int renegotiate(struct peer *p) {
  p->max_version = TLS1_2_VERSION;
  if (ssl_open(p))
    return -1;
  unsigned char f[600];
  size_t n = frame(f, sizeof f, "before", 6);
  SSL_write(p->ssl, f, (int)n);
  if (ssl_read_frames(p, 1) != 1)
    return -2;
  int reneg = SSL_renegotiate(p->ssl) == 1 && SSL_do_handshake(p->ssl) == 1;
  /* Whatever the client's library makes of the refusal, no new handshake completes. */
  unsigned char b[256];
  int r = SSL_read(p->ssl, b, sizeof b);
  snprintf(p->note, sizeof p->note, "renegotiation %d, read %d, pending %d", reneg, r,
           SSL_renegotiate_pending(p->ssl));
  ssl_close(p);
  return reneg ? -3 : 0;
}

static int key_update(struct peer *p) {
  if (ssl_open(p))
    return -1;
  unsigned char f[600];
  for (int k = 0; k < 3; k++) {
    if (SSL_key_update(p->ssl, SSL_KEY_UPDATE_REQUESTED) != 1)
      return -2;
    size_t n = frame(f, sizeof f, "after a key update", 18);
    if (SSL_write(p->ssl, f, (int)n) != (int)n)
      return -3;
    if (ssl_read_frames(p, 1) != 1)
      return -4;
  }
  SSL_shutdown(p->ssl);
  ssl_close(p);
  return 0;
}

START_TEST(renegotiation_refused_key_update_honoured) {
  setup(0);
  struct peer p = {.fn = renegotiate};
  run_peer(&p, 8000);
  ck_assert_msg(p.rc == 0, "%s", p.note);
  run_until(&ss.closes, 1, 3000);
  ck_assert_int_eq(ss.messages, 1);
  tu_str_free(&p.got);
  struct peer k = {.fn = key_update};
  run_peer(&k, 8000);
  ck_assert_msg(k.rc == 0, "key update: %d", k.rc);
  ck_assert_int_eq(ss.messages, 4);
  tu_str_free(&k.got);
  fresh_client_served();
  teardown();
}
END_TEST

/* ---- reload ------------------------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to) {
  size_t n;
  unsigned char *d = tu_read_file(from, &n);
  ck_assert_ptr_nonnull(d);
  FILE *f = fopen(to, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(d, 1, n, f), n);
  fclose(f);
  free(d);
}

static void peer_name(struct appmsg_tls *t, struct seen *cs, char *info, size_t len) {
  memset(cs, 0, sizeof *cs);
  connect_to(t, "127.0.0.1", "localhost", cs);
  run_until(&cs->connects, 1, 3000);
  ck_assert_int_eq(cs->connect_err, 0);
  appmsg_conn_tls_info(cs->conn, info, len);
}

START_TEST(reload_keeps_connections) {
  setup_backend(0);
  char crt[600], key[600];
  snprintf(crt, sizeof crt, "%s/reload-%d.pem", certdir, (int)getpid());
  snprintf(key, sizeof key, "%s/reload-%d.key", certdir, (int)getpid());
  copy_file(cert("server.pem"), crt);
  copy_file(cert("server.key"), key);
  start_server(crt, key, NULL);
  struct appmsg_tls *t = client_tls(cert("ca.pem"), NULL, NULL, 0);
  struct seen a, b, c;
  char info[256];
  peer_name(t, &a, info, sizeof info);
  ck_assert_msg(strstr(info, "peer CN=localhost") && !strstr(info, "localhost-2"), "%s", info);
  copy_file(cert("server2.pem"), crt);
  copy_file(cert("server2.key"), key);
  char err[256] = "";
  ck_assert_msg(appmsg_tls_reload(stls, err, sizeof err) == 0, "%s", err);
  peer_name(t, &b, info, sizeof info);
  ck_assert_msg(strstr(info, "peer CN=localhost-2") != NULL, "%s", info);
  /* A file that cannot be used: the reload fails and says why; the last good one stays. */
  FILE *f = fopen(crt, "w");
  fputs("not a certificate\n", f);
  fclose(f);
  ck_assert_int_eq(appmsg_tls_reload(stls, err, sizeof err), APPMSG_E_TLS);
  ck_assert_msg(strstr(err, "cannot read the certificate chain") && strstr(err, crt), "%s", err);
  peer_name(t, &c, info, sizeof info);
  ck_assert_msg(strstr(info, "peer CN=localhost-2") != NULL, "%s", info);
  /* The connection made before the reloads is still served. */
  ck_assert_ptr_nonnull(a.conn);
  ck_assert_int_eq(appmsg_conn_send(a.conn, &hdr, "still here", 10), 0);
  run_until(&a.messages, 1, 3000);
  ck_assert_int_eq(a.messages, 1);
  struct seen *all[] = {&a, &b, &c};
  for (int k = 0; k < 3; k++) {
    appmsg_conn_close(all[k]->conn);
    run_until(&all[k]->closes, 1, 3000);
    tu_str_free(&all[k]->content);
  }
  unlink(crt);
  unlink(key);
  appmsg_tls_free(t);
  teardown();
}
END_TEST

/* ---- the API's refusals ------------------------------------------------------------------------- */

START_TEST(api_refusals) {
  struct appmsg_tls *t = NULL;
  char err[512];
  ck_assert_int_eq(
      appmsg_tls_server_new(&t, "/nonexistent/cert.pem", cert("server.key"), NULL, err, sizeof err),
      APPMSG_E_TLS);
  ck_assert_msg(strstr(err, "'/nonexistent/cert.pem'") != NULL, "%s", err);
  ck_assert_msg(strstr(err, "No such file") != NULL, "%s", err); /* (GetLastError()'s too) */
  ck_assert_int_eq(
      appmsg_tls_server_new(&t, cert("server.pem"), cert("client.key"), NULL, err, sizeof err),
      APPMSG_E_TLS);
  ck_assert_msg(strstr(err, "does not match"), "%s", err);
  ck_assert_int_eq(appmsg_tls_server_new(&t, cert("server.pem"), cert("server.key"),
                                         "/nonexistent/ca.pem", err, sizeof err),
                   APPMSG_E_TLS);
  ck_assert_msg(strstr(err, "client CA file"), "%s", err);
  ck_assert_int_eq(appmsg_tls_server_new(&t, NULL, cert("server.key"), NULL, err, sizeof err),
                   -EINVAL);
  ck_assert_int_eq(appmsg_tls_client_new(&t, NULL, cert("client.pem"), NULL, 0, err, sizeof err),
                   -EINVAL);
  ck_assert_int_eq(appmsg_tls_client_new(&t, NULL, NULL, NULL, 0x80, err, sizeof err), -EINVAL);
  ck_assert_int_eq(appmsg_tls_client_new(&t, "/nonexistent/ca.pem", NULL, NULL, 0, err, sizeof err),
                   APPMSG_E_TLS);
  appmsg_tls_free(NULL);
  /* A server needs a server context; a client connection a client context and a name. */
  setup(0);
  struct appmsg_tls *cl = client_tls(NULL, NULL, NULL, 0);
  ck_assert_int_eq(appmsg_tls_is_server(cl), 0);
  ck_assert_int_eq(appmsg_tls_is_server(stls), 1);
  struct appmsg_server_opts o;
  appmsg_server_opts_default(&o);
  o.conn.tls = cl;
  struct appmsg_server *s2;
  ck_assert_int_eq(
      appmsg_server_new(&s2, loop, "127.0.0.1", "0", &o, &cbs, NULL, NULL, err, sizeof err),
      -EINVAL);
  copts.tls = stls;
  struct appmsg_conn *c;
  ck_assert_int_eq(
      appmsg_conn_connect(&c, loop, "127.0.0.1", port, &copts, &cbs, NULL, err, sizeof err),
      -EINVAL);
  appmsg_socket_t sv[2];
  ck_assert_int_eq(tu_socketpair(sv), 0);
  copts.tls = cl;
  copts.tls_server_name = NULL;
  ck_assert_int_eq(appmsg_conn_new(&c, loop, sv[0], &copts, &cbs, NULL), -EINVAL);
  tu_close(sv[1]);
  /* Plaintext connections describe no TLS. */
  struct seen cs = {0};
  copts.tls = NULL;
  ck_assert_int_eq(
      appmsg_conn_connect(&c, loop, "127.0.0.1", port, &copts, &cbs, &cs, err, sizeof err), 0);
  char info[64] = "x";
  ck_assert_int_eq(appmsg_conn_tls_info(c, info, sizeof info), 0);
  ck_assert_str_eq(info, "");
  appmsg_conn_abort(c, 0);
  appmsg_tls_free(cl);
  teardown();
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("tls");
  TCase *tc = tcase_create("tls");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, handshake_echo_and_close_notify, 0, 2);
  tcase_add_loop_test(tc, large_content_and_waiting_writes, 0, 2);
  tcase_add_loop_test(tc, pipelined_frames_in_order, 0, 2);
  tcase_add_loop_test(tc, one_byte_records_and_server_close_notify, 0, 2);
  tcase_add_test(tc, mutual_tls_accepted);
  tcase_add_test(tc, mutual_tls_refused);
  tcase_add_test(tc, client_verification);
  tcase_add_test(tc, ipv6_address_as_name);
  tcase_add_test(tc, plaintext_frame_and_garbage_refused);
  tcase_add_loop_test(tc, handshake_timeout, 0, 2);
  tcase_add_test(tc, peer_leaves_mid_record_or_mid_frame);
  tcase_add_test(tc, renegotiation_refused_key_update_honoured);
  tcase_add_test(tc, reload_keeps_connections);
  tcase_add_test(tc, api_refusals);
  suite_add_tcase(s, tc);
  return s;
}

#ifdef _WIN32
/* ---- the certificates on Windows: make_certs.sh's, made with the OpenSSL library ------------ */

struct made {
  EVP_PKEY *key;
  X509 *crt;
};

enum kind { CA, SERVER, CLIENT };

static int add_ext(X509 *crt, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, crt, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  int ok = ext != NULL && X509_add_ext(crt, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

/* Writes certdir/name.key and certdir/name.pem. */
static int write_pair(const char *name, const struct made *m) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s.key", certdir, name);
  BIO *b = BIO_new_file(path, "wb");
  int ok = b != NULL && PEM_write_bio_PrivateKey(b, m->key, NULL, NULL, 0, NULL, NULL) == 1;
  BIO_free(b);
  snprintf(path, sizeof path, "%s/%s.pem", certdir, name);
  b = ok ? BIO_new_file(path, "wb") : NULL;
  ok = b != NULL && PEM_write_bio_X509(b, m->crt) == 1;
  BIO_free(b);
  return ok;
}

/* A P-256 key and a certificate for it with subject CN=cn, issued by ca (self-signed when NULL)
 * with make_certs.sh's extensions for its kind, valid for days from now or, when from is not
 * NULL, from from to to (ASN.1 GeneralizedTime). */
static int issue(const char *name, struct made *m, const struct made *ca, const char *cn,
                 enum kind kind, long serial, long days, const char *from, const char *to) {
  m->key = EVP_EC_gen("P-256");
  m->crt = X509_new();
  if (m->key == NULL || m->crt == NULL)
    return 0;
  X509 *crt = m->crt;
  X509_NAME *subject = X509_get_subject_name(crt);
  int ok = X509_set_version(crt, 2) && ASN1_INTEGER_set(X509_get_serialNumber(crt), serial) &&
           X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                                      -1, 0) &&
           X509_set_issuer_name(crt, ca ? X509_get_subject_name(ca->crt) : subject) &&
           X509_set_pubkey(crt, m->key);
  if (ok && from)
    ok = ASN1_TIME_set_string_X509(X509_getm_notBefore(crt), from) &&
         ASN1_TIME_set_string_X509(X509_getm_notAfter(crt), to);
  else if (ok)
    ok = X509_gmtime_adj(X509_getm_notBefore(crt), 0) &&
         X509_gmtime_adj(X509_getm_notAfter(crt), days * 86400L);
  X509 *issuer = ca ? ca->crt : crt;
  ok = ok && add_ext(crt, issuer, NID_subject_key_identifier, "hash") &&
       add_ext(crt, issuer, NID_authority_key_identifier, "keyid:always");
  if (kind == CA)
    ok = ok && add_ext(crt, issuer, NID_basic_constraints, "critical,CA:TRUE");
  else
    ok = ok && add_ext(crt, issuer, NID_basic_constraints, "critical,CA:FALSE");
  if (kind == SERVER)
    ok = ok && add_ext(crt, issuer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") &&
         add_ext(crt, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
  if (kind == CLIENT)
    ok = ok && add_ext(crt, issuer, NID_ext_key_usage, "clientAuth");
  ok = ok && X509_sign(crt, ca ? ca->key : m->key, EVP_sha256()) > 0;
  return ok && write_pair(name, m);
}

/* What make_certs.sh makes (see there), into certdir. */
static int make_certs(void) {
  struct made ca = {0}, other_ca = {0}, m[5] = {{0}};
  int ok = issue("ca", &ca, NULL, "appmsg test CA", CA, 1, 3650, NULL, NULL) &&
           issue("other-ca", &other_ca, NULL, "appmsg other CA", CA, 1, 3650, NULL, NULL) &&
           issue("server", &m[0], &ca, "localhost", SERVER, 0x1000, 30, NULL, NULL) &&
           issue("server2", &m[1], &ca, "localhost-2", SERVER, 0x1001, 30, NULL, NULL) &&
           issue("client", &m[2], &ca, "appmsg-test-client", CLIENT, 0x1002, 30, NULL, NULL) &&
           issue("expired", &m[3], &ca, "localhost", SERVER, 0x1003, 0, "20200101000000Z",
                 "20200102000000Z") &&
           issue("other", &m[4], &other_ca, "localhost", SERVER, 0x1000, 30, NULL, NULL);
  if (!ok)
    ERR_print_errors_fp(stderr);
  struct made *all[] = {&ca, &other_ca, &m[0], &m[1], &m[2], &m[3], &m[4]};
  for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
    EVP_PKEY_free(all[k]->key);
    X509_free(all[k]->crt);
  }
  return ok;
}

/* A fresh directory under the user's temporary directory, in certdir. */
static int make_certdir(void) {
  char tmp[MAX_PATH + 1];
  DWORD n = GetTempPathA(sizeof tmp, tmp);
  if (n == 0 || n > sizeof tmp)
    return 0;
  for (unsigned k = 0; k < 100; k++) {
    snprintf(certdir, sizeof certdir, "%sappmsg-tls-%lu-%u", tmp,
             (unsigned long)GetCurrentProcessId(), k);
    if (CreateDirectoryA(certdir, NULL))
      return 1;
    if (GetLastError() != ERROR_ALREADY_EXISTS)
      return 0;
  }
  return 0;
}

/* Removes certdir and the files in it. */
static int remove_certdir(void) {
  char pattern[300];
  snprintf(pattern, sizeof pattern, "%s\\*", certdir);
  WIN32_FIND_DATAA f;
  HANDLE h = FindFirstFileA(pattern, &f);
  if (h != INVALID_HANDLE_VALUE) {
    do {
      char path[600];
      snprintf(path, sizeof path, "%s\\%s", certdir, f.cFileName);
      if (!(f.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY))
        DeleteFileA(path);
    } while (FindNextFileA(h, &f));
    FindClose(h);
  }
  return RemoveDirectoryA(certdir) != 0;
}

int main(void) {
  if (!make_certdir()) {
    fprintf(stderr, "cannot make a temporary directory\n");
    return 1;
  }
  if (!make_certs()) {
    fprintf(stderr, "cannot make the test certificates in %s\n", certdir);
    return 1;
  }
  int rc = tu_run_suite(suite());
  if (!remove_certdir())
    fprintf(stderr, "could not remove %s\n", certdir);
  return rc;
}
#else
int main(void) {
  snprintf(certdir, sizeof certdir, "%s/appmsg-tls-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(certdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "sh '%s/tests/tls/make_certs.sh' '%s'", APPMSG_SOURCE_DIR, certdir);
  if (system(cmd) != 0) {
    fprintf(stderr, "cannot make the test certificates (is the openssl command installed?)\n");
    return 1;
  }
  int rc = tu_run_suite(suite());
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", certdir);
  return rc;
}
#endif
