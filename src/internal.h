/* Declarations shared between appmsg's source files; not installed.  The
 * library is built with hidden visibility, so none of these is exported. */
#ifndef APPMSG_INTERNAL_H
#define APPMSG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "appmsg/appmsg.h"

/* Where and why a scan failed. */
struct appmsg__json_error {
  int code;           /* APPMSG_E_HEADER_{JSON,DEPTH,TRAILING,NOT_OBJECT,UTF8} */
  size_t offset;      /* offending byte, relative to the scanned text */
  const char *reason; /* static text */
};

/*
 * Strictly validates p[0..n) (PROTOCOL.md 2.3) as one JSON value; with
 * object_only, the value must be an object.  Does not check UTF-8 (see
 * appmsg_utf8_check()) but rejects bytes >= 0x80 outside strings.
 * Reports top-level object members to cb when cb is not NULL.
 * Returns 0, or the error code with *err filled in.
 */
int appmsg__json_scan(const char *p, size_t n, int max_depth, int object_only,
                      enum appmsg_json_type *top, appmsg_json_member_cb cb, void *ud,
                      struct appmsg__json_error *err);

/*
 * The fast path of appmsg_json_scan() for the usual request and reply: a
 * flat object of at most APPMSG__JSON_FLAT_MAX members whose keys and
 * values are all strings without escapes, any JSON whitespace between the
 * tokens ({"action": "search", "value": "morpheus"}).  p[0..n) must be
 * valid UTF-8 already.  Returns 1 after reporting the members to cb (if
 * not NULL) and setting *top (if not NULL) exactly as appmsg__json_scan()
 * would; returns 0 for any other text, having reported nothing (the caller
 * takes the general path).
 */
#define APPMSG__JSON_FLAT_MAX 8
int appmsg__json_scan_flat(const char *p, size_t n, enum appmsg_json_type *top,
                           appmsg_json_member_cb cb, void *ud);

/* Parses a header already received whole: UTF-8, JSON and field rules of
 * PROTOCOL.md section 5, steps 3-5.  buf is modified (strings are
 * unescaped in place) and h's strings point into it (h must be released
 * with appmsg__header_release_borrowed).  fast (normally 1) lets a header
 * in the canonical layout take a fast path that gives the same results as
 * the general one; tests pass 0 to compare the two.  Returns 0 or a
 * negative code, with *err filled in; on CONTENT_TOO_LARGE *claimed holds
 * the content-length as written (digits, NUL-terminated, cut at 31). */
int appmsg__header_parse(char *buf, size_t n, uint64_t max_content, int fast,
                         struct appmsg_header *h, struct appmsg__json_error *err, char claimed[32]);

/* Frees what a header filled in by appmsg__header_parse owns (its extras),
 * without freeing its borrowed strings; leaves it zeroed. */
void appmsg__header_release_borrowed(struct appmsg_header *h);

/* Writes h's text with nothing where content-length's digits go and
 * stores that place in *split; as appmsg_header_write() otherwise. */
long appmsg__header_write_split(const struct appmsg_header *h, char *out, size_t cap,
                                size_t *split);

/* Writes v in decimal into out (room for 20 bytes, no NUL); returns the length. */
size_t appmsg__u64_digits(char *out, uint64_t v);

/* Whether host names a Unix socket ("unix:/path"). */
int appmsg__is_unix(const char *host);

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define APPMSG__LITTLE_ENDIAN 1
/*
 * The last n - i bytes of p[0..n) (1 to 7 of them) as the low bytes of a
 * word, zero above.  Reads nothing outside p[0..n): the eight bytes that
 * end it when there are eight, else pieces of 4, 2 and 1.
 */
static inline uint64_t appmsg__tail_word(const unsigned char *p, size_t i, size_t n) {
  size_t rest = n - i;
  uint64_t v = 0;
  if (n >= 8) {
    memcpy(&v, p + n - 8, 8);
    return v >> (8 * (8 - rest));
  }
  size_t k = 0;
  if (rest & 4) {
    uint32_t x;
    memcpy(&x, p + i, 4);
    v = x;
    k = 4;
  }
  if (rest & 2) {
    uint16_t x;
    memcpy(&x, p + i + k, 2);
    v |= (uint64_t)x << (8 * k);
    k += 2;
  }
  if (rest & 1)
    v |= (uint64_t)p[i + k] << (8 * k);
  return v;
}
#endif

/* The bytes of v that a JSON string cannot hold as they are ('"', '\\',
 * below 0x20) with their high bit set.  A borrow can also mark a byte
 * above (after) the first such byte, never one below it. */
static inline uint64_t appmsg__json_special(uint64_t v) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
  return (((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
}

/*
 * The length of the run of bytes at p[0..n) that a JSON string holds as
 * they are: everything but '"', '\\' and the control characters below
 * 0x20.  Eight bytes at a time (keys, actions and answers are mostly such
 * bytes); on a little-endian machine the word that holds the end of the
 * run gives its position at once, and the last few bytes are one more
 * word; elsewhere those are looked at one by one.
 */
static inline size_t appmsg__json_plain_run(const unsigned char *p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    uint64_t hit = appmsg__json_special(v);
    if (hit) {
#ifdef APPMSG__LITTLE_ENDIAN
      return i + (size_t)(__builtin_ctzll(hit) >> 3);
#else
      break;
#endif
    }
  }
#ifdef APPMSG__LITTLE_ENDIAN
  if (i < n) {
    /* The zero bytes above the tail look special: only the tail counts. */
    uint64_t hit =
        appmsg__json_special(appmsg__tail_word(p, i, n)) & (((uint64_t)1 << (8 * (n - i))) - 1);
    return hit ? i + (size_t)(__builtin_ctzll(hit) >> 3) : n;
  }
#endif
  while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
    i++;
  return i;
}

/*
 * An output buffer passed from connection to connection.  A connection's
 * output queue is empty between bursts and holds no memory then (an idle
 * connection should cost nothing); at one request in flight every reply is
 * a burst, and a malloc and a free per reply would be most of the queue's
 * cost.  So a connection whose queue empties gives the buffer to its loop
 * (which keeps the largest one, up to APPMSG__SPARE_MAX bytes, and frees
 * the others), and the next connection to queue output takes it when it
 * is at least as large as that connection's last burst.  One thread per
 * loop, like everything on a loop.
 */
#define APPMSG__SPARE_MAX ((size_t)64 * 1024)
struct appmsg_loop;
/* The spare buffer (its size in *cap) when it has at least min bytes, else NULL. */
void *appmsg__loop_spare_take(struct appmsg_loop *loop, size_t min, size_t *cap);
void appmsg__loop_spare_give(struct appmsg_loop *loop, void *buf, size_t cap);

/* Gives an empty encoder that holds no memory the buffer buf of cap bytes
 * (it frees it as its own). */
void appmsg__encoder_adopt(struct appmsg_encoder *e, void *buf, size_t cap);

/* appmsg_encoder_advance() that, when the queue empties, hands its buffer
 * to the caller (returned, its size in *cap) instead of freeing it;
 * otherwise returns NULL. */
void *appmsg__encoder_advance_keep(struct appmsg_encoder *e, size_t n, size_t *cap);

/* Whether err is one of the TLS layer's codes (TLS, TLS_HANDSHAKE, TLS_VERIFY). */
static inline int appmsg__is_tls_error(int err) {
  return err == APPMSG_E_TLS || err == APPMSG_E_TLS_HANDSHAKE || err == APPMSG_E_TLS_VERIFY;
}

/* Writes a message into the caller's buffer err of errlen bytes (NUL-terminated, cut to fit);
 * nothing when err is NULL or errlen is 0. */
void appmsg__errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats one log line and hands it to fn (nothing when fn is NULL). */
void appmsg__logf(appmsg_log_fn fn, void *ud, enum appmsg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Makes the decoder's header parsing take the general path only (on 0) or
 * the fast path where it can (on 1, the default).  For tests and fuzzers,
 * which check that both give the same results. */
void appmsg__decoder_set_fast_path(struct appmsg_decoder *d, int on);

/* appmsg_encoder_push_prepared() that also writes extra (extra_len bytes
 * of JSON members, each starting with ", ") after content-length. */
int appmsg__encoder_push_prepared(struct appmsg_encoder *e, const struct appmsg_prepared *p,
                                  const char *extra, size_t extra_len, const void *content,
                                  size_t len);

/* The standard error reply's content (PROTOCOL.md):
 * {"result": "Error: REASON.", "error": "NAME", "offset": OFFSET}, offset
 * only when >= 0.  The reason is cut at APPMSG__ERROR_REASON_MAX bytes and
 * bytes that are not UTF-8 become '?'; name at 64 bytes.  out needs room
 * for APPMSG__ERROR_BODY_MAX bytes.  Returns the length (no NUL). */
#define APPMSG__ERROR_REASON_MAX 512
#define APPMSG__ERROR_BODY_MAX (6 * APPMSG__ERROR_REASON_MAX + 160)
size_t appmsg__error_body(const char *name, const char *reason, long long offset, char *out);

/* Marks the connection busy around work done outside its own callbacks
 * (a reply made from a timer): sends are batched and the connection is
 * not freed until leave, which settles it - and may end it, so c must not
 * be used after leave. */
void appmsg__conn_enter(struct appmsg_conn *c);
void appmsg__conn_leave(struct appmsg_conn *c);

/* Leaves without settling: the caller promises an appmsg__conn_enter() +
 * appmsg__conn_leave() pair soon (in the same loop iteration), which
 * writes what was queued - so that many replies made one after another
 * from outside leave in one write.  Until then c is not freed. */
void appmsg__conn_leave_later(struct appmsg_conn *c);

/* appmsg_conn_send_prepared() with extra header members (see
 * appmsg__encoder_push_prepared()). */
int appmsg__conn_send_prepared_ex(struct appmsg_conn *c, const struct appmsg_prepared *p,
                                  const char *extra, size_t extra_len, const void *content,
                                  size_t len);

/* Hands the content of the message being delivered over to the caller
 * (appmsg_decoder_take_content() on the connection's decoder). */
void *appmsg__conn_take_content(struct appmsg_conn *c, size_t *len);

/* appmsg_conn_new() for a socket just accepted from peer (no getpeername). */
struct sockaddr;
int appmsg__conn_new_accepted(struct appmsg_conn **c, struct appmsg_loop *loop, int fd,
                              const struct appmsg_conn_opts *opts,
                              const struct appmsg_conn_callbacks *cbs, void *ud,
                              const struct sockaddr *peer, unsigned peer_len);

/* ---- TLS (tls.c): the transport under a framed connection ---------------------------------- */

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
int appmsg__tls_conn_new(struct appmsg__tls_conn **t, struct appmsg_tls *tls, int fd,
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

/* appmsg_conn_tls_info() for the TLS state. */
int appmsg__tls_describe(const struct appmsg__tls_conn *t, char *buf, size_t len);

#endif
