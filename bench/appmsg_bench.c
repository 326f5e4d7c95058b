/*
 * appmsg-bench: a load generator for appmsg servers, in the manner of
 * redis-benchmark.
 *
 *   appmsg-bench [-h HOST] [-p PORT] [-c CONNS] [-n REQUESTS | --duration S] [-P PIPELINE]
 *                [--new-conn] [--workload search|binary|echo] [--size BYTES] [--warmup N]
 *                [--threads N] [--timeout S] [-q] [TLS options]
 *   appmsg-bench [-h HOST] [-p PORT] --idle N [--hold S] [TLS options]
 *   TLS options: --tls [--tls-ca FILE [--tls-name NAME]] [--tls-cert FILE --tls-key FILE]
 *
 * One thread (or --threads N, each with its own epoll and its share of the
 * connections) drives CONNS non-blocking connections through a
 * level-triggered epoll loop.  Each connection keeps PIPELINE requests in
 * flight (a sliding window: every reply read lets one more request go, and
 * the requests made after one read leave in one write).  With --new-conn,
 * each of the CONNS slots does what the guide's client does - connect, send
 * one request, read the reply, close - over and over.
 *
 * Workloads (every reply is checked, byte for byte):
 *   search  text/json {"action": "search", "value": "morpheus"} (the guide's
 *           146-byte frame); the reply must be text/json, utf-8,
 *           {"result": "Follow the white rabbit. 🐰"}
 *   binary  --size BYTES of binary/custom-client-binary-type content; the reply
 *           must be binary/custom-server-binary-type, binary,
 *           "First 10 bytes of request: " + the first 10 content bytes
 *   echo    raw, unframed messages (the search frame's bytes, or --size
 *           BYTES) that the server sends back (baseline-server, the guide's
 *           multiconn server); the bytes received must equal those sent
 * Framed replies are read with the appmsg decoder (the strict header check
 * and the per-frame allocations are part of what a real client pays).
 *
 * Latency is per request, from the write() that sends it (with --new-conn:
 * from the connect()) to the read() that completes its reply, kept in a
 * log-bucket histogram (1/64 relative resolution, like HdrHistogram with 2
 * significant digits); percentiles are the bucket's highest value.
 *
 * Every request ends as a verified reply or as an error: a wrong reply, a
 * connection lost with requests in flight, a failed connect, a request
 * never answered before the deadline.  Errors make the exit status 1.
 * The last line printed is machine-readable:
 *   RESULT rps=... p50_us=... p99_us=... p999_us=... max_us=... errors=... requests=... total=...
 * (requests: verified replies measured; total: with the warm-up ones).
 *
 * --tls speaks TLS (OpenSSL, used directly, as redis-benchmark does: the
 * load generator shares no TLS code with the servers it measures), offering
 * ALPN "appmsg"; with --tls-ca the server's chain and name (--tls-name,
 * default localhost) are verified, else nothing is; --tls-cert/--tls-key
 * present a client certificate.  Every connection makes a full handshake
 * (no session resumption), so --new-conn measures one handshake per
 * request.  Latency with --new-conn includes the handshake.
 *
 * --idle N opens N connections, prints "IDLE connected=N failed=F", holds
 * them for --hold seconds (default 10) or until SIGTERM/SIGINT, then prints
 * "IDLE held=H dropped=D" (D: connections the server closed meanwhile).
 * With --tls, a connection counts as connected once its handshake is done.
 *
 * Bounded: -n stops after that many requests, --duration after that many
 * seconds, and either gives up after --timeout seconds (default 60, or the
 * duration + 30) counting what is unanswered as errors; a run stops early
 * after 1000 errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "appmsg/appmsg.h"
#include "appmsg/net.h"

#define READ_CHUNK 65536
#define MAX_EVENTS 512
#define MAX_ERRORS 1000        /* a run stops issuing requests after this many errors */
#define DRAIN_NS 5000000000ULL /* after the last request is issued, wait this long for replies */
#define MAX_PRINTED 5          /* error details printed to stderr */

enum workload { WL_SEARCH, WL_BINARY, WL_ECHO };

static const char *const workload_names[] = {"search", "binary", "echo"};

/* ---- configuration ----------------------------------------------------------------------------
 */

static struct {
  const char *host, *port;
  int conns;
  uint64_t requests; /* -n; 0 with --duration */
  double duration;   /* seconds; 0 with -n */
  int pipeline;
  int new_conn;
  enum workload wl;
  long size; /* -1: the workload's default */
  uint64_t warmup;
  int threads;
  double timeout;
  int quiet;
  long idle;
  double hold;
  int tls;
  const char *tls_ca, *tls_name, *tls_cert, *tls_key;
} cfg = {.tls_name = "localhost",
         .host = "127.0.0.1",
         .port = "65432",
         .conns = 50,
         .pipeline = 1,
         .wl = WL_SEARCH,
         .size = -1,
         .threads = 1,
         .hold = 10};

/* The request, (pipeline + 1) copies of it back to back (so that any
 * window of up to pipeline requests starting anywhere in one is
 * contiguous), and the reply expected for it. */
static unsigned char *req;
static size_t req_len;
static unsigned char *req_rep;
static const char *exp_type, *exp_enc;
static unsigned char *exp_content;
static size_t exp_len;

static struct sockaddr_storage srv_addr;
static socklen_t srv_addrlen;

/* ---- shared state ------------------------------------------------------------------------------
 */

static _Atomic uint64_t g_issued;   /* request numbers handed out */
static _Atomic int g_stop;          /* 1: issue no more requests */
static _Atomic uint64_t g_errors;   /* failed requests */
static _Atomic uint64_t g_start_ns; /* when the first measured request was issued */
static _Atomic int g_ready;         /* threads connected and waiting to start */
static _Atomic int g_go;            /* 1: start issuing */
static _Atomic int g_printed;       /* error details printed so far */
static uint64_t g_limit;            /* warmup + requests, or UINT64_MAX */
static uint64_t g_duration_ns;
static uint64_t g_deadline_ns; /* give up at this time */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...) {
  if (atomic_fetch_add(&g_printed, 1) >= MAX_PRINTED)
    return;
  va_list ap;
  va_start(ap, fmt);
  fputs("appmsg-bench: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void add_errors(uint64_t n) {
  if (n && atomic_fetch_add(&g_errors, n) + n >= MAX_ERRORS)
    atomic_store(&g_stop, 1);
}

/* ---- the histogram -----------------------------------------------------------------------------
 */

/* Values (ns) below 128 have a bucket each; above, each power of two is cut
 * into 64 buckets, so a bucket spans at most 1/64 of its values. */
#define HIST_BUCKETS (128 + 58 * 64)

struct hist {
  uint64_t b[HIST_BUCKETS];
  uint64_t n, max;
};

static unsigned hist_index(uint64_t v) {
  if (v < 128)
    return (unsigned)v;
  unsigned bit = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = bit - 6;
  return 128 + (shift - 1) * 64 + (unsigned)((v >> shift) - 64);
}

static uint64_t hist_high(unsigned i) {
  if (i < 128)
    return i;
  unsigned shift = (i - 128) / 64 + 1;
  uint64_t m = (i - 128) % 64 + 64;
  if (shift >= 57)
    return UINT64_MAX;
  return ((m + 1) << shift) - 1;
}

static void hist_add(struct hist *h, uint64_t v) {
  h->b[hist_index(v)]++;
  h->n++;
  if (v > h->max)
    h->max = v;
}

static void hist_merge(struct hist *into, const struct hist *h) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    into->b[i] += h->b[i];
  into->n += h->n;
  if (h->max > into->max)
    into->max = h->max;
}

/* The value at or below which the fraction q of the samples lies. */
static uint64_t hist_quantile(const struct hist *h, double q) {
  if (h->n == 0)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999);
  if (rank < 1)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= rank) {
      uint64_t v = hist_high(i);
      return v < h->max ? v : h->max;
    }
  }
  return h->max;
}

/* ---- connections -------------------------------------------------------------------------------
 */

enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_SENT, C_DEAD, C_DONE };

struct inflight {
  uint64_t ts;
  int measured;
};

struct thread;

struct conn {
  struct thread *t;
  int fd;
  SSL *ssl;     /* --tls: the connection's TLS, NULL otherwise */
  int tls_done; /* --tls --new-conn: the handshake is finished */
  int state;
  unsigned events; /* the epoll interest in force */
  uint64_t tx_pos; /* request-stream bytes written */
  size_t pending;  /* request-stream bytes still to write */
  size_t rx_in;    /* echo: bytes of the current reply matched */
  struct appmsg_decoder dec;
  struct inflight *ring; /* pipeline entries */
  unsigned head, count;
};

struct thread {
  int id, epfd;
  struct conn *conns;
  int nconns;
  int connected;
  struct hist h;
  uint64_t ok;      /* verified replies, measured */
  uint64_t ok_all;  /* verified replies, warm-up included */
  uint64_t last_ns; /* when the last measured reply arrived */
  uint64_t stop_seen_ns;
  unsigned char *rbuf;
  pthread_t th;
};

static int set_interest(struct conn *c, unsigned ev) {
  if (c->events == ev)
    return 0;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  int op = c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(c->t->epfd, op, c->fd, &e) < 0)
    return -errno;
  c->events = ev;
  return 0;
}

/* ---- TLS -----------------------------------------------------------------------------------
 */

static SSL_CTX *tls_ctx;

static int tls_setup(void) {
  static const unsigned char alpn[] = {6, 'a', 'p', 'p', 'm', 's', 'g'};
  tls_ctx = SSL_CTX_new(TLS_client_method());
  if (!tls_ctx)
    return -1;
  SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_read_ahead(tls_ctx, 1); /* one read() for many records; drained below */
  SSL_CTX_set_alpn_protos(tls_ctx, alpn, sizeof alpn);
  if (cfg.tls_ca) {
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(tls_ctx, cfg.tls_ca, NULL) != 1) {
      fprintf(stderr, "appmsg-bench: cannot read %s\n", cfg.tls_ca);
      return -1;
    }
  }
  if (cfg.tls_cert && (SSL_CTX_use_certificate_chain_file(tls_ctx, cfg.tls_cert) != 1 ||
                       SSL_CTX_use_PrivateKey_file(tls_ctx, cfg.tls_key, SSL_FILETYPE_PEM) != 1)) {
    fprintf(stderr, "appmsg-bench: cannot read %s / %s\n", cfg.tls_cert, cfg.tls_key);
    return -1;
  }
  return 0;
}

static SSL *tls_new(int fd) {
  SSL *ssl = SSL_new(tls_ctx);
  if (!ssl)
    return NULL;
  SSL_set_fd(ssl, fd);
  SSL_set_connect_state(ssl);
  SSL_set_tlsext_host_name(ssl, cfg.tls_name);
  if (cfg.tls_ca)
    SSL_set1_host(ssl, cfg.tls_name);
  return ssl;
}

static const char *tls_why(void) {
  static _Thread_local char buf[256];
  unsigned long e = ERR_get_error();
  if (e)
    ERR_error_string_n(e, buf, sizeof buf);
  else
    snprintf(buf, sizeof buf, "%s", errno ? strerror(errno) : "connection closed");
  ERR_clear_error();
  return buf;
}

/* A non-blocking step: SSL_do_handshake.  1 done, 0 wait (*ev: the readiness), -1 failed. */
static int tls_step(SSL *ssl, unsigned *ev) {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl);
  if (r == 1)
    return 1;
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    *ev = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
    return 0;
  }
  return -1;
}

/* What SSL_read()/SSL_write() returned, as read()/write() would say it: bytes, 0 at the end
 * (reads only), -1 with errno (EAGAIN to wait). */
static ssize_t ssl_result(SSL *ssl, int r, int reading) {
  if (r > 0)
    return r;
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  if (reading && (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)))
    return 0;
  if (e != SSL_ERROR_SYSCALL)
    errno = EPROTO;
  return -1;
}

/* read()/write() or their TLS forms: bytes, 0 at the end, -1 with errno (EAGAIN to wait). */
static ssize_t io_read(struct conn *c, void *buf, size_t len) {
  if (!c->ssl)
    return read(c->fd, buf, len);
  ERR_clear_error();
  return ssl_result(c->ssl, SSL_read(c->ssl, buf, (int)len), 1);
}

static ssize_t io_write(struct conn *c, const void *buf, size_t len) {
  if (!c->ssl)
    return write(c->fd, buf, len);
  ERR_clear_error();
  return ssl_result(c->ssl, SSL_write(c->ssl, buf, (int)len), 0);
}

/* Hands out the next request number, or 0 when no more may be issued. */
static int claim(uint64_t now, int *measured) {
  if (atomic_load_explicit(&g_stop, memory_order_relaxed))
    return 0;
  uint64_t i = atomic_fetch_add_explicit(&g_issued, 1, memory_order_relaxed);
  if (i >= g_limit) {
    atomic_store(&g_stop, 1);
    return 0;
  }
  if (i == cfg.warmup) {
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&g_start_ns, &zero, now);
  }
  if (g_duration_ns) {
    uint64_t start = atomic_load_explicit(&g_start_ns, memory_order_relaxed);
    if (start && now >= start + g_duration_ns) {
      atomic_store(&g_stop, 1);
      return 0;
    }
  }
  *measured = i >= cfg.warmup;
  return 1;
}

static void ring_push(struct conn *c, uint64_t ts, int measured) {
  unsigned p = (unsigned)cfg.pipeline;
  struct inflight *f = &c->ring[(c->head + c->count) % p];
  f->ts = ts;
  f->measured = measured;
  c->count++;
}

/* A reply arrived: ok says whether it was the right one. */
static int complete(struct conn *c, uint64_t now, int ok) {
  if (c->count == 0) {
    complain("a reply arrived for no request (fd %d)", c->fd);
    add_errors(1);
    return -1;
  }
  struct inflight *f = &c->ring[c->head];
  c->head = (c->head + 1) % (unsigned)cfg.pipeline;
  c->count--;
  if (!ok) {
    add_errors(1);
    return 0;
  }
  struct thread *t = c->t;
  t->ok_all++;
  if (f->measured) {
    hist_add(&t->h, now - f->ts);
    t->ok++;
    t->last_ns = now;
  }
  return 0;
}

/* Ends a connection; what it had in flight counts as errors. */
static void conn_drop(struct conn *c, int next_state) {
  add_errors(c->count);
  c->count = 0;
  c->head = 0;
  if (c->ssl) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  c->tls_done = 0;
  if (c->fd >= 0) {
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
  }
  c->events = 0;
  c->pending = 0;
  c->tx_pos = 0;
  c->rx_in = 0;
  appmsg_decoder_reset(&c->dec);
  c->state = next_state;
}

/* Writes what is pending; returns 0 or -1 after dropping the connection. */
static int flush_out(struct conn *c) {
  while (c->pending > 0) {
    const unsigned char *p = req_rep + (size_t)(c->tx_pos % req_len);
    ssize_t w = io_write(c, p, c->pending);
    if (w > 0) {
      c->tx_pos += (uint64_t)w;
      c->pending -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN)
      break;
    complain("write: %s", w < 0 ? strerror(errno) : "wrote nothing");
    conn_drop(c, cfg.new_conn ? C_IDLE : C_DEAD);
    return -1;
  }
  if (cfg.new_conn)
    return 0; /* edge-triggered: interest never changes */
  unsigned want = EPOLLIN | (c->pending ? EPOLLOUT : 0u);
  if (set_interest(c, want) < 0) {
    complain("epoll_ctl: %s", strerror(errno));
    conn_drop(c, C_DEAD);
    return -1;
  }
  return 0;
}

/* Persistent connections: fills the window and writes. */
static int top_up(struct conn *c, uint64_t now) {
  int measured;
  while (c->count < (unsigned)cfg.pipeline && claim(now, &measured)) {
    ring_push(c, now, measured);
    c->pending += req_len;
  }
  return flush_out(c);
}

/* Checks the bytes received; returns the number of replies completed
 * (>= 0) or -1 when the stream is out of step (the connection is dropped). */
static int on_bytes(struct conn *c, const unsigned char *p, size_t n, uint64_t now) {
  int done = 0;
  if (cfg.wl == WL_ECHO) {
    while (n > 0) {
      size_t k = req_len - c->rx_in;
      if (k > n)
        k = n;
      if (memcmp(p, req + c->rx_in, k) != 0) {
        complain("echo mismatch at byte %zu of a reply", c->rx_in);
        add_errors(1);
        conn_drop(c, cfg.new_conn ? C_IDLE : C_DEAD);
        return -1;
      }
      c->rx_in += k;
      p += k;
      n -= k;
      if (c->rx_in == req_len) {
        c->rx_in = 0;
        if (complete(c, now, 1) < 0) {
          conn_drop(c, cfg.new_conn ? C_IDLE : C_DEAD);
          return -1;
        }
        done++;
      }
    }
    return done;
  }
  for (size_t off = 0, used; off < n; off += used) {
    enum appmsg_status st = appmsg_decoder_feed(&c->dec, p + off, n - off, &used);
    if (st == APPMSG_MESSAGE) {
      const struct appmsg_header *h = appmsg_decoder_header(&c->dec);
      size_t len;
      const void *content = appmsg_decoder_content(&c->dec, &len);
      int ok = strcmp(h->content_type, exp_type) == 0 &&
               strcmp(h->content_encoding, exp_enc) == 0 && len == exp_len &&
               memcmp(content, exp_content, len) == 0;
      if (!ok)
        complain("unexpected reply: %s/%s, %zu bytes: %.*s", h->content_type, h->content_encoding,
                 len, (int)(len < 200 ? len : 200), (const char *)content);
      if (complete(c, now, ok) < 0) {
        conn_drop(c, cfg.new_conn ? C_IDLE : C_DEAD);
        return -1;
      }
      done++;
    } else if (st == APPMSG_ERROR) {
      complain(
          "bad reply frame: %s at offset %llu: %s", appmsg_errname(appmsg_decoder_error(&c->dec)),
          (unsigned long long)appmsg_decoder_error_offset(&c->dec), appmsg_decoder_reason(&c->dec));
      conn_drop(c, cfg.new_conn ? C_IDLE : C_DEAD);
      return -1;
    }
  }
  return done;
}

/* ---- persistent connections ---------------------------------------------------------------------
 */

static int start_connect(struct conn *c, unsigned interest) {
  int fd, in_progress;
  int rc = appmsg_connect_addr((const struct sockaddr *)&srv_addr, srv_addrlen, &fd, &in_progress);
  if (rc < 0) {
    complain("connect: %s", appmsg_strerror(rc));
    return rc;
  }
  c->fd = fd;
  c->events = 0;
  c->state = C_CONNECTING;
  struct epoll_event e = {.events = interest, .data.ptr = c};
  if (epoll_ctl(c->t->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
    rc = -errno;
    complain("epoll_ctl: %s", strerror(errno));
    close(fd);
    c->fd = -1;
    return rc;
  }
  c->events = interest;
  return 0;
}

static void persistent_event(struct conn *c, unsigned ev) {
  struct thread *t = c->t;
  if (c->state == C_CONNECTING) {
    int rc = appmsg_connect_result(c->fd);
    if (rc) {
      complain("connect: %s", appmsg_strerror(rc));
      add_errors(1);
      conn_drop(c, C_DEAD);
      return;
    }
    appmsg_set_nodelay(c->fd, 1);
    if (cfg.tls) {
      c->ssl = tls_new(c->fd);
      c->state = C_HANDSHAKE;
    } else {
      c->state = C_OPEN;
      t->connected++;
      set_interest(c, EPOLLIN);
      return;
    }
  }
  if (c->state == C_HANDSHAKE) {
    unsigned want = 0;
    int r = c->ssl ? tls_step(c->ssl, &want) : -1;
    if (r < 0) {
      complain("TLS handshake: %s", tls_why());
      add_errors(1);
      conn_drop(c, C_DEAD);
    } else if (r == 0) {
      set_interest(c, want);
    } else {
      c->state = C_OPEN;
      t->connected++;
      set_interest(c, EPOLLIN);
    }
    return;
  }
  if (c->state != C_OPEN)
    return;
  uint64_t now = now_ns();
  if (ev & EPOLLOUT) {
    if (flush_out(c) < 0)
      return;
  }
  /* Under TLS, read until OpenSSL has nothing buffered (the socket would not say). */
  for (int more = 1; more && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR));) {
    more = 0;
    ssize_t n = io_read(c, t->rbuf, READ_CHUNK);
    if (n > 0) {
      if (on_bytes(c, t->rbuf, (size_t)n, now) < 0)
        return;
      more = c->ssl && SSL_has_pending(c->ssl);
    } else if (n == 0) {
      if (c->count > 0 || !atomic_load(&g_stop))
        complain("the server closed a connection with %u request(s) in flight", c->count);
      if (c->count == 0 && !atomic_load(&g_stop))
        add_errors(1);
      conn_drop(c, C_DEAD);
      return;
    } else if (errno != EAGAIN && errno != EINTR) {
      complain("read: %s", strerror(errno));
      conn_drop(c, C_DEAD);
      return;
    }
  }
  if (atomic_load_explicit(&g_go, memory_order_relaxed))
    top_up(c, now);
}

/* ---- a new connection per request ---------------------------------------------------------------
 */

static void slot_next(struct conn *c, uint64_t now) {
  for (;;) {
    int measured;
    if (!claim(now, &measured)) {
      c->state = C_DONE;
      return;
    }
    ring_push(c, now, measured);
    if (start_connect(c, EPOLLIN | EPOLLOUT | EPOLLET) == 0) {
      c->pending = req_len;
      c->tx_pos = 0;
      return;
    }
    conn_drop(c, C_IDLE); /* counts the request as an error */
  }
}

static void newconn_event(struct conn *c, unsigned ev) {
  struct thread *t = c->t;
  uint64_t now = now_ns();
  if (c->state == C_CONNECTING && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    if (ev & EPOLLERR) {
      int rc = appmsg_connect_result(c->fd);
      complain("connect: %s", appmsg_strerror(rc ? rc : -ECONNRESET));
      conn_drop(c, C_IDLE);
      slot_next(c, now);
      return;
    }
    c->state = C_SENT;
    if (cfg.tls) {
      c->ssl = tls_new(c->fd);
      if (!c->ssl) {
        conn_drop(c, C_IDLE);
        slot_next(c, now);
        return;
      }
    }
  }
  if (c->state == C_SENT && c->ssl && !c->tls_done) {
    unsigned want;
    int r = tls_step(c->ssl, &want); /* edge-triggered: either readiness may move it */
    if (r < 0) {
      complain("TLS handshake: %s", tls_why());
      conn_drop(c, C_IDLE);
      slot_next(c, now);
      return;
    }
    if (r == 0)
      return;
    c->tls_done = 1;
    ev |= EPOLLOUT | EPOLLIN;
  }
  if (c->state == C_SENT && c->pending > 0 && (ev & EPOLLOUT)) {
    if (flush_out(c) < 0) {
      slot_next(c, now);
      return;
    }
  }
  if (c->state == C_SENT && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    for (;;) { /* edge-triggered: read until EAGAIN or the reply is complete */
      ssize_t n = io_read(c, t->rbuf, READ_CHUNK);
      if (n > 0) {
        int done = on_bytes(c, t->rbuf, (size_t)n, now);
        if (done < 0) {
          slot_next(c, now);
          return;
        }
        if (c->count == 0) { /* the reply is complete: close and go again */
          if (c->ssl) {
            SSL_shutdown(c->ssl); /* close_notify, as a polite client sends */
            SSL_free(c->ssl);
            c->ssl = NULL;
            c->tls_done = 0;
          }
          close(c->fd);
          c->fd = -1;
          c->events = 0;
          appmsg_decoder_reset(&c->dec);
          c->rx_in = 0;
          c->state = C_IDLE;
          slot_next(c, now);
          return;
        }
        continue;
      }
      if (n == 0) {
        complain("the server closed the connection before the whole reply");
        conn_drop(c, C_IDLE);
        slot_next(c, now);
        return;
      }
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN) {
        complain("read: %s", strerror(errno));
        conn_drop(c, C_IDLE);
        slot_next(c, now);
      }
      return;
    }
  }
}

/* ---- the thread
 * ---------------------------------------------------------------------------------- */

static int conns_busy(const struct thread *t) {
  for (int i = 0; i < t->nconns; i++) {
    const struct conn *c = &t->conns[i];
    if (c->count > 0 && c->state != C_DEAD && c->state != C_DONE)
      return 1;
    if (cfg.new_conn && c->state != C_DONE && c->state != C_DEAD && !atomic_load(&g_stop))
      return 1;
  }
  return 0;
}

static void *thread_main(void *arg) {
  struct thread *t = arg;
  struct epoll_event evs[MAX_EVENTS];
  int nthreads = cfg.threads;

  if (!cfg.new_conn) {
    /* Connect every connection first; the clock starts once all are up. */
    for (int i = 0; i < t->nconns; i++) {
      struct conn *c = &t->conns[i];
      if (start_connect(c, EPOLLOUT) < 0) {
        add_errors(1);
        c->state = C_DEAD;
      }
    }
    uint64_t until = now_ns() + 10000000000ULL;
    for (;;) {
      int up = 0, dead = 0;
      for (int i = 0; i < t->nconns; i++) {
        up += t->conns[i].state == C_OPEN;
        dead += t->conns[i].state == C_DEAD;
      }
      if (up + dead == t->nconns || now_ns() > until)
        break;
      int n = epoll_wait(t->epfd, evs, MAX_EVENTS, 100);
      for (int i = 0; i < n; i++)
        persistent_event(evs[i].data.ptr, evs[i].events);
    }
  }
  atomic_fetch_add(&g_ready, 1);
  while (atomic_load(&g_ready) < nthreads)
    usleep(1000);
  atomic_store(&g_go, 1);

  uint64_t now = now_ns();
  for (int i = 0; i < t->nconns; i++) {
    struct conn *c = &t->conns[i];
    if (cfg.new_conn)
      slot_next(c, now);
    else if (c->state == C_OPEN)
      top_up(c, now);
  }
  for (;;) {
    now = now_ns();
    if (g_duration_ns) {
      uint64_t start = atomic_load(&g_start_ns);
      if (start && now >= start + g_duration_ns)
        atomic_store(&g_stop, 1);
    }
    if (atomic_load(&g_stop)) {
      if (!t->stop_seen_ns)
        t->stop_seen_ns = now;
      if (!conns_busy(t) || now > t->stop_seen_ns + DRAIN_NS)
        break;
    } else if (!conns_busy(t) && !cfg.new_conn) {
      int alive = 0;
      for (int i = 0; i < t->nconns; i++)
        alive += t->conns[i].state == C_OPEN;
      if (!alive)
        break; /* every connection was lost */
    }
    if (now > g_deadline_ns) {
      complain("gave up after the --timeout of %.0f s", cfg.timeout);
      atomic_store(&g_stop, 1);
      break;
    }
    int n = epoll_wait(t->epfd, evs, MAX_EVENTS, 50);
    if (n < 0 && errno != EINTR) {
      complain("epoll_wait: %s", strerror(errno));
      break;
    }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (cfg.new_conn)
        newconn_event(c, evs[i].events);
      else
        persistent_event(c, evs[i].events);
    }
  }
  /* Whatever is still in flight was not answered. */
  for (int i = 0; i < t->nconns; i++) {
    struct conn *c = &t->conns[i];
    if (c->count > 0)
      complain("%u request(s) not answered in time", c->count);
    conn_drop(c, C_DONE);
  }
  return NULL;
}

/* ---- idle connections
 * ------------------------------------------------------------------------------ */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig) {
  got_signal = sig;
}

static void raise_nofile(rlim_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    struct rlimit more = {need, need}; /* works as root */
    if (setrlimit(RLIMIT_NOFILE, &more) == 0)
      return;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* An idle TLS connection became readable: reads what came (session
 * tickets); 1 while it stays open. */
static int tls_alive(SSL *ssl) {
  char buf[4096];
  ERR_clear_error();
  int r = SSL_read(ssl, buf, sizeof buf);
  if (r > 0)
    return 0; /* data on an idle connection: an error reply */
  int e = SSL_get_error(ssl, r);
  ERR_clear_error();
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

static int run_idle(void) {
  long n = cfg.idle;
  raise_nofile((rlim_t)n + 64);
  int *fds = malloc((size_t)n * sizeof *fds);
  unsigned char *up = calloc((size_t)n, 1); /* 1 once connected, 2 while its handshake runs */
  SSL **ssls = calloc((size_t)n, sizeof *ssls);
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (!fds || !up || !ssls || epfd < 0) {
    fprintf(stderr, "appmsg-bench: out of memory or descriptors\n");
    return 1;
  }
  long started = 0, connected = 0, failed = 0, dropped = 0, connecting = 0;
  struct epoll_event evs[MAX_EVENTS];
  uint64_t until = now_ns() + 60000000000ULL;
  while (connected + failed + dropped < n && now_ns() < until && !got_signal) {
    while (started < n && connecting < 256) { /* at most 256 handshakes at once */
      int fd, pending;
      long i = started++;
      int rc = appmsg_connect_addr((const struct sockaddr *)&srv_addr, srv_addrlen, &fd, &pending);
      if (rc < 0) {
        if (failed++ == 0)
          fprintf(stderr, "appmsg-bench: connect %ld: %s\n", i, appmsg_strerror(rc));
        fds[i] = -1;
        continue;
      }
      fds[i] = fd;
      struct epoll_event e = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
      epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
      connecting++;
    }
    int k = epoll_wait(epfd, evs, MAX_EVENTS, 100);
    for (int j = 0; j < k; j++) {
      long i = (long)evs[j].data.u64;
      int fd = fds[i];
      if (fd < 0)
        continue;
      if (up[i] != 1) { /* a connect or a handshake step */
        int rc = up[i] ? 0 : appmsg_connect_result(fd);
        if (rc == 0 && !(evs[j].events & (EPOLLERR | EPOLLHUP))) {
          unsigned want = EPOLLIN | EPOLLRDHUP;
          int step = 1;
          if (cfg.tls) {
            if (!ssls[i])
              ssls[i] = tls_new(fd);
            step = ssls[i] ? tls_step(ssls[i], &want) : -1;
            up[i] = 2;
          }
          if (step >= 0) {
            if (step == 1) {
              up[i] = 1;
              connected++;
              connecting--;
              want = EPOLLIN | EPOLLRDHUP;
            }
            struct epoll_event e = {.events = want, .data.u64 = (uint64_t)i};
            epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e);
            continue;
          }
          rc = -EPROTO;
        }
        connecting--;
        if (failed++ == 0)
          fprintf(stderr, "appmsg-bench: connect %ld: %s\n", i,
                  rc == -EPROTO ? tls_why() : appmsg_strerror(rc ? rc : -ECONNRESET));
      } else if (ssls[i] && tls_alive(ssls[i])) {
        continue; /* session tickets: the connection is idle all the same */
      } else {    /* the server closed (or answered) an established connection */
        connected--;
        dropped++;
      }
      SSL_free(ssls[i]);
      ssls[i] = NULL;
      close(fd);
      fds[i] = -1;
    }
  }
  printf("IDLE connected=%ld failed=%ld\n", connected, n - connected - dropped);
  fflush(stdout);
  uint64_t hold_until = now_ns() + (uint64_t)(cfg.hold * 1e9);
  while (!got_signal && now_ns() < hold_until) {
    int k = epoll_wait(epfd, evs, MAX_EVENTS, 100);
    for (int j = 0; j < k; j++) {
      long i = (long)evs[j].data.u64;
      if (fds[i] < 0)
        continue;
      if (up[i] == 1 && ssls[i] && tls_alive(ssls[i]))
        continue;
      if (up[i] == 1)
        dropped++;
      SSL_free(ssls[i]);
      ssls[i] = NULL;
      close(fds[i]);
      fds[i] = -1;
    }
  }
  long held = 0;
  for (long i = 0; i < started; i++)
    if (fds[i] >= 0) {
      held += up[i] == 1;
      SSL_free(ssls[i]);
      close(fds[i]);
    }
  free(ssls);
  printf("IDLE held=%ld dropped=%ld\n", held, dropped);
  free(fds);
  free(up);
  close(epfd);
  return held == n && dropped == 0 ? 0 : 1;
}

/* ---- setup
 * ---------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f, "usage: appmsg-bench [-h HOST] [-p PORT] [-c CONNS] [-n REQUESTS | --duration S]\n"
             "                    [-P PIPELINE] [--new-conn] [--workload search|binary|echo]\n"
             "                    [--size BYTES] [--warmup N] [--threads N] [--timeout S] [-q]\n"
             "       appmsg-bench [-h HOST] [-p PORT] --idle N [--hold S]\n"
             "TLS: --tls [--tls-ca FILE [--tls-name NAME]] [--tls-cert FILE --tls-key FILE]\n"
             "defaults: 127.0.0.1 65432, 50 connections, pipeline 1, -n 100000, search\n");
}

static double num_arg(const char *opt, const char *v, double lo, double hi) {
  char *end;
  if (!v) {
    fprintf(stderr, "appmsg-bench: %s needs a value\n", opt);
    exit(2);
  }
  errno = 0;
  double d = strtod(v, &end);
  if (!*v || *end || errno || d < lo || d > hi) {
    fprintf(stderr, "appmsg-bench: %s needs a number from %g to %g, not '%s'\n", opt, lo, hi, v);
    exit(2);
  }
  return d;
}

static void parse_args(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(a, "-h") || !strcmp(a, "--host")) {
      if (!v)
        goto bad;
      cfg.host = v, i++;
    } else if (!strcmp(a, "-p") || !strcmp(a, "--port")) {
      if (!v)
        goto bad;
      cfg.port = v, i++;
    } else if (!strcmp(a, "-c")) {
      cfg.conns = (int)num_arg(a, v, 1, 100000), i++;
    } else if (!strcmp(a, "-n")) {
      cfg.requests = (uint64_t)num_arg(a, v, 1, 1e15), i++;
    } else if (!strcmp(a, "-P")) {
      cfg.pipeline = (int)num_arg(a, v, 1, 4096), i++;
    } else if (!strcmp(a, "--new-conn")) {
      cfg.new_conn = 1;
    } else if (!strcmp(a, "--workload")) {
      if (!v)
        goto bad;
      if (!strcmp(v, "search"))
        cfg.wl = WL_SEARCH;
      else if (!strcmp(v, "binary"))
        cfg.wl = WL_BINARY;
      else if (!strcmp(v, "echo"))
        cfg.wl = WL_ECHO;
      else
        goto bad;
      i++;
    } else if (!strcmp(a, "--size")) {
      cfg.size = (long)num_arg(a, v, 0, 1 << 20), i++;
    } else if (!strcmp(a, "--duration")) {
      cfg.duration = num_arg(a, v, 0.001, 3600), i++;
    } else if (!strcmp(a, "--warmup")) {
      cfg.warmup = (uint64_t)num_arg(a, v, 0, 1e12), i++;
    } else if (!strcmp(a, "--threads")) {
      cfg.threads = (int)num_arg(a, v, 1, 64), i++;
    } else if (!strcmp(a, "--timeout")) {
      cfg.timeout = num_arg(a, v, 0.1, 86400), i++;
    } else if (!strcmp(a, "--idle")) {
      cfg.idle = (long)num_arg(a, v, 1, 1000000), i++;
    } else if (!strcmp(a, "--hold")) {
      cfg.hold = num_arg(a, v, 0, 3600), i++;
    } else if (!strcmp(a, "-q")) {
      cfg.quiet = 1;
    } else if (!strcmp(a, "--tls")) {
      cfg.tls = 1;
    } else if (!strcmp(a, "--tls-ca") || !strcmp(a, "--tls-name") || !strcmp(a, "--tls-cert") ||
               !strcmp(a, "--tls-key")) {
      if (!v)
        goto bad;
      const char **slot = a[6] == 'c' && a[7] == 'a' ? &cfg.tls_ca
                          : a[6] == 'n'              ? &cfg.tls_name
                          : a[6] == 'c'              ? &cfg.tls_cert
                                                     : &cfg.tls_key;
      *slot = v, i++;
    } else {
      goto bad;
    }
    continue;
  bad:
    fprintf(stderr, "appmsg-bench: bad argument '%s'%s%s\n", a, v ? " before " : "", v ? v : "");
    usage(stderr);
    exit(2);
  }
  if (!cfg.tls && (cfg.tls_ca || cfg.tls_cert || cfg.tls_key)) {
    fprintf(stderr, "appmsg-bench: the --tls-* options need --tls\n");
    exit(2);
  }
  if (!cfg.tls_cert != !cfg.tls_key) {
    fprintf(stderr, "appmsg-bench: --tls-cert and --tls-key go together\n");
    exit(2);
  }
  if (cfg.requests && cfg.duration) {
    fprintf(stderr, "appmsg-bench: give -n or --duration, not both\n");
    exit(2);
  }
  if (!cfg.requests && !cfg.duration)
    cfg.requests = 100000;
  if (cfg.new_conn)
    cfg.pipeline = 1;
  if (cfg.threads > cfg.conns)
    cfg.threads = cfg.conns;
  if (cfg.timeout == 0)
    cfg.timeout = cfg.duration ? cfg.duration + 30 : 60;
}

/* Builds the request and the expected reply for the workload. */
static int build_workload(void) {
  struct appmsg_header h;
  static const char search[] = "{\"action\": \"search\", \"value\": \"morpheus\"}";
  static const char answer[] = "{\"result\": \"Follow the white rabbit. \xf0\x9f\x90\xb0\"}";
  static const char first10[] = "First 10 bytes of request: ";
  const void *content;
  size_t clen;
  unsigned char *bin = NULL;
  appmsg_header_init(&h);
  if (cfg.wl == WL_BINARY || (cfg.wl == WL_ECHO && cfg.size >= 0)) {
    clen = cfg.wl == WL_BINARY && cfg.size < 0 ? 64 : (size_t)cfg.size;
    bin = malloc(clen + 1);
    if (!bin)
      return -1;
    for (size_t i = 0; i < clen; i++) /* printable, varied: "double42" spirit */
      bin[i] = (unsigned char)("binary-request-0123456789abcdefghijklmnopqrstuvwxyz"[i % 51]);
    content = bin;
    if (appmsg_header_set(&h, "binary/custom-client-binary-type", "binary"))
      return -1;
  } else {
    content = search;
    clen = sizeof search - 1;
    if (appmsg_header_set(&h, "text/json", "utf-8"))
      return -1;
  }
  if (cfg.wl == WL_ECHO && cfg.size >= 0) {
    req_len = clen; /* raw bytes, no frame */
    req = bin;
    bin = NULL;
  } else {
    long hl = appmsg_frame_head(&h, clen, NULL, 0);
    if (hl < 0)
      return -1;
    req_len = (size_t)hl + clen;
    req = malloc(req_len);
    if (!req || appmsg_frame_head(&h, clen, req, (size_t)hl) != hl)
      return -1;
    memcpy(req + hl, content, clen);
  }
  appmsg_header_cleanup(&h);
  if (cfg.wl == WL_SEARCH) {
    exp_type = "text/json";
    exp_enc = "utf-8";
    exp_len = sizeof answer - 1;
    exp_content = malloc(exp_len);
    if (!exp_content)
      return -1;
    memcpy(exp_content, answer, exp_len);
  } else if (cfg.wl == WL_BINARY) {
    size_t k = clen < 10 ? clen : 10;
    exp_type = "binary/custom-server-binary-type";
    exp_enc = "binary";
    exp_len = sizeof first10 - 1 + k;
    exp_content = malloc(exp_len);
    if (!exp_content)
      return -1;
    memcpy(exp_content, first10, sizeof first10 - 1);
    memcpy(exp_content + sizeof first10 - 1, bin, k);
  }
  free(bin);
  if (req_len == 0) {
    fprintf(stderr, "appmsg-bench: an echo message needs at least one byte\n");
    return -1;
  }
  size_t copies = (size_t)cfg.pipeline + 1;
  req_rep = malloc(copies * req_len);
  if (!req_rep)
    return -1;
  for (size_t i = 0; i < copies; i++)
    memcpy(req_rep + i * req_len, req, req_len);
  return 0;
}

static int resolve(void) {
  struct addrinfo *res;
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_resolve(cfg.host, cfg.port, 0, &res, err, sizeof err);
  if (rc) {
    fprintf(stderr, "appmsg-bench: %s\n", err);
    return -1;
  }
  memcpy(&srv_addr, res->ai_addr, res->ai_addrlen);
  srv_addrlen = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  if (resolve())
    return 1;
  if (cfg.tls && tls_setup()) {
    fprintf(stderr, "appmsg-bench: cannot set up TLS: %s\n", tls_why());
    return 1;
  }
  if (cfg.idle) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    return run_idle();
  }
  if (build_workload()) {
    fprintf(stderr, "appmsg-bench: cannot build the request\n");
    return 1;
  }
  raise_nofile((rlim_t)cfg.conns + 64);
  g_limit = cfg.duration ? UINT64_MAX : cfg.warmup + cfg.requests;
  g_duration_ns = (uint64_t)(cfg.duration * 1e9);
  uint64_t t0 = now_ns();
  g_deadline_ns = t0 + (uint64_t)(cfg.timeout * 1e9);

  int nt = cfg.threads;
  struct thread *ts = calloc((size_t)nt, sizeof *ts);
  struct conn *conns = calloc((size_t)cfg.conns, sizeof *conns);
  struct inflight *rings = calloc((size_t)cfg.conns * (size_t)cfg.pipeline, sizeof *rings);
  if (!ts || !conns || !rings) {
    fprintf(stderr, "appmsg-bench: out of memory\n");
    return 1;
  }
  for (int i = 0, first = 0; i < nt; i++) {
    struct thread *t = &ts[i];
    int share = cfg.conns / nt + (i < cfg.conns % nt);
    t->id = i;
    t->conns = conns + first;
    t->nconns = share;
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->rbuf = malloc(READ_CHUNK);
    if (t->epfd < 0 || !t->rbuf) {
      fprintf(stderr, "appmsg-bench: epoll_create1: %s\n", strerror(errno));
      return 1;
    }
    for (int j = 0; j < share; j++) {
      struct conn *c = &t->conns[j];
      c->t = t;
      c->fd = -1;
      c->state = C_IDLE;
      c->ring = rings + (size_t)(first + j) * (size_t)cfg.pipeline;
      appmsg_decoder_init(&c->dec, NULL);
    }
    first += share;
  }
  for (int i = 1; i < nt; i++)
    if (pthread_create(&ts[i].th, NULL, thread_main, &ts[i]) != 0) {
      fprintf(stderr, "appmsg-bench: cannot start a thread\n");
      return 1;
    }
  thread_main(&ts[0]);
  for (int i = 1; i < nt; i++)
    pthread_join(ts[i].th, NULL);

  struct hist *h = calloc(1, sizeof *h);
  uint64_t ok = 0, ok_all = 0, last = 0;
  for (int i = 0; i < nt; i++) {
    hist_merge(h, &ts[i].h);
    ok += ts[i].ok;
    ok_all += ts[i].ok_all;
    if (ts[i].last_ns > last)
      last = ts[i].last_ns;
  }
  uint64_t errors = atomic_load(&g_errors);
  if (!cfg.duration && ok_all + errors < g_limit) {
    uint64_t missing = g_limit - ok_all - errors;
    complain("%llu request(s) were never completed", (unsigned long long)missing);
    errors += missing;
  }
  uint64_t start = atomic_load(&g_start_ns);
  double secs = start && last > start ? (double)(last - start) / 1e9 : 0;
  double rps = secs > 0 ? (double)ok / secs : 0;
  double p50 = (double)hist_quantile(h, 0.50) / 1e3, p99 = (double)hist_quantile(h, 0.99) / 1e3,
         p999 = (double)hist_quantile(h, 0.999) / 1e3, pmax = (double)h->max / 1e3;
  if (!cfg.quiet) {
    printf("appmsg-bench: %s workload, %s port %s, %d connection(s)%s, pipeline %d, %d thread(s)\n",
           workload_names[cfg.wl], cfg.host, cfg.port, cfg.conns,
           cfg.new_conn ? " (a new connection per request)" : "", cfg.pipeline, nt);
    printf("  request %zu bytes; %llu replies verified (%llu measured, %llu warm-up), %llu "
           "error(s)\n",
           req_len, (unsigned long long)ok_all, (unsigned long long)ok,
           (unsigned long long)(ok_all - ok), (unsigned long long)errors);
    printf("  %.3f s, %.1f requests/s\n", secs, rps);
    printf("  latency (us): p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", p50, p99, p999, pmax);
  }
  printf("RESULT rps=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%llu "
         "requests=%llu total=%llu\n",
         rps, p50, p99, p999, pmax, (unsigned long long)errors, (unsigned long long)ok,
         (unsigned long long)ok_all);
  for (int i = 0; i < cfg.conns; i++)
    appmsg_decoder_cleanup(&conns[i].dec);
  for (int i = 0; i < nt; i++) {
    close(ts[i].epfd);
    free(ts[i].rbuf);
  }
  free(h);
  free(ts);
  free(conns);
  free(rings);
  free(req);
  free(req_rep);
  free(exp_content);
  SSL_CTX_free(tls_ctx);
  return errors || ok == 0 ? 1 : 0;
}
