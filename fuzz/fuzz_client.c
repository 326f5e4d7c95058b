/*
 * libFuzzer target for the client (client.h), checked against a model.
 *
 * The input is a sequence of operations (fuzz/fuzz_client_ops.py reads and
 * writes them as text; fuzz/corpus-seeds/fuzz_client/ holds the seeds).  The
 * harness plays the server itself, on the same thread: a listening Unix
 * socket (abstract name) it owns, whose connections it accepts - or leaves in
 * its backlog - reads and answers: replies whole or in pieces across loop
 * iterations, out of order by request-id, error replies, replies nobody asked
 * for, bytes that are no frame, a close with half a reply sent; it stops
 * listening, closes its listener with connections in the backlog, and comes
 * back.  The clock is the harness's (appmsg__set_clock), moved only by the
 * input; the loop runs one iteration at a time (appmsg_loop_run_once(loop, 0))
 * and never waits.  Callbacks make calls, free the client, or both.
 *
 * The model.  Beside the real client runs a model of it (m_*): its state
 * (connecting, up, waiting to connect again, down), its queue and its calls in
 * flight (placeholders of timed-out calls among them), the bytes handed to the
 * connection and not written yet, the backoff window, the connections and
 * what the server sent on each (the client's decoder is modelled by a decoder
 * fed the same bytes).  Before each operation the model works out, in order,
 * the callbacks that will run - each call's status, its cause (or the causes
 * allowed) and the reply it gets - and what every call made from a callback
 * returns; the real callbacks are checked against that list as they run, and
 * none may run inside a call or for a call that returned an error.  The rules,
 * from client.h and client.c:
 *   - a call goes straight to the connection when the queue is empty, the
 *     client is connected, under max_in_flight (placeholders count) and the
 *     frame fits max_queued_bytes with the unwritten bytes (one frame always
 *     may go when nothing waits); else it waits in the queue (max_queued; its
 *     bytes, the queue's and the unwritten ones together count against
 *     max_queued_bytes, a frame always fits when nothing waits), else
 *     APPMSG_E_QUEUE_FULL; down, or waiting with no queue allowed: the last
 *     error; queued calls move on at connecting, after each reply and when the
 *     connection has written its output;
 *   - a reply goes to the first call in flight with its request-id (the JSON
 *     text, trimmed, any length), else to the oldest: status 0 with its
 *     content, result, result_json; APPMSG_E_ERROR_REPLY with the name and the
 *     result as reason; a late one (its call timed out) is dropped; one with
 *     nobody in flight ends the connection;
 *   - a call times out at its deadline (its timeout, or the client's, from the
 *     call): NOT_SENT with cause TIMEOUT from the queue, TIMEOUT in flight
 *     (becoming a placeholder); more placeholders than max_queued (or 1024) -
 *     or a max_in_flight window full of them - make the connection again;
 *   - a lost connection fails its calls in flight: those whose bytes were
 *     written with the loss's code (CLOSED; a bad frame's code; TRUNCATED for
 *     a close inside a frame), the others NOT_SENT; the cause is the reason
 *     (0 -> CLOSED, -EPIPE, -ECONNRESET, TIMEOUT for too many placeholders);
 *     then the client waits a jittered backoff and connects again (or with
 *     reconnect off gives up: what waits fails NOT_SENT);
 *   - a bad frame ends the connection in the iteration that reads it;
 *   - appmsg_client_free() fails everything at once (CLOSED for calls written,
 *     NOT_SENT otherwise), inside the free; from a callback too, where later
 *     calls then return -EINVAL.
 * The jitter is unknown to the model: it keeps the window [d/2, d] and the
 * clock never stops inside it (op_advance), so each iteration knows whether
 * the client connected again; when the retry and a call's timeout come in the
 * same iteration, which ran first is unknown, and the model allows both
 * outcomes where it matters.  Written-or-not is known because the server
 * always reads what arrives (the socket never fills); each iteration's
 * writes are modelled where they happen (after an event, at the end of the
 * iteration, or before it for what calls made outside the loop handed over).
 *
 * After each operation: appmsg_client_pending(), _connected() and
 * _connects() agree with the model; the server has received exactly the
 * requests the model says were written, each frame checked byte for byte
 * (content, type, encoding, request-id, length); every connection the client
 * made was accepted (or waits in the backlog), and one the client dropped is
 * closed.  At the end every call has had its callback and everything is freed
 * (LeakSanitizer).
 *
 * Allocation failures.  A quarter of the inputs make the library's
 * allocations fail where the input says (appmsg_set_allocator()), inside the
 * library's calls only.  The model cannot say where -ENOMEM lands, so these
 * check the contract instead: every call that returned 0 gets exactly one
 * callback, none runs inside a call or for a call that returned an error;
 * appmsg_client_pending() counts the calls still owed a callback; a call whose
  * timeout has passed has had its callback once the loop has run; a client
 * freed has called every callback; nothing leaks.  Some of these inputs also
 * give the client's sockets the smallest send buffer (the target links with
 * --wrap=connect) and let the server stop reading, so that writes stop half-way
 * and connections are lost with calls half written: how many bytes the kernel
 * took is the kernel's business, so the server's reading decides - a call
 * whose callback said NOT_SENT must never reach the server whole, one answered
 * or failed with a connection's code (written) must reach it whole, and every
 * request that arrives is its call's, byte for byte.
 *
 * Not covered: TLS, names to resolve, addresses that connect slowly,
 * appmsg_ask().
 *
 * FUZZ_CLIENT_VERBOSE=1 prints each step, what the model expects and what
 * ran.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "appmsg/appmsg.h"
#include "util.h"

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "check failed: %s (line %d): ", #cond, __LINE__);                            \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static int verbose;
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
  if (!verbose)
    return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* ---- input and clock ---------------------------------------------------------------------- */

static const uint8_t *in_p;
static size_t in_n, in_off;

static unsigned take(unsigned mod) {
  return in_off < in_n ? in_p[in_off++] % mod : 0;
}

static uint64_t now_ms; /* the clock every part of the library reads */
static uint64_t fake_ns(void) {
  return now_ms * 1000000u;
}

/* ---- what the harness keeps ------------------------------------------------------------- */

#define MAX_CALLS 320
#define MAX_CONNS 128
#define MAX_UNITS 400
#define MAX_CLIENTS 12
#define MAX_EV 1200
#define MAX_OUT 65536
#define MAX_DEPTH 3

enum { ST_CONNECTING = 1, ST_UP, ST_WAITING, ST_DOWN };
enum { W_NEW, W_REJECTED, W_QUEUE, W_FLIGHT, W_DONE };
enum { A_NONE, A_CALL, A_FREE, A_CALL_FREE, A_FREE_CALL, A_CALL2 };
enum { K_CALL, K_JSON, K_JSON_GENERAL, K_BINARY, K_BAD_UTF8 };

/* One call: its request as the library is given it and as the server must receive it, and where
 * the model has it. */
struct call {
  int client;                  /* the client it was made on */
  int accepted;                /* (allocation failures) the call returned 0 */
  uint64_t due;                /* (allocation failures) when its timeout ends (0: none) */
  int claim;                   /* (allocation failures) its callback said it was written (1)
                                 or never written (2) */
  int received;                /* (allocation failures) the server has read all of it */
  int depth;                   /* made from the callback of a call of depth - 1 */
  uint32_t seed;               /* the calls its callback makes come from this */
  int action;                  /* what its callback does (A_*) */
  int kind;                    /* K_* */
  char name[16];               /* K_CALL: the action's name */
  char value[520];             /* K_CALL: the value given */
  unsigned char content[1200]; /* the request's content as the server must see it */
  size_t len;
  const char *ctype, *cenc;          /* as given to appmsg_client_send (NULL: defaults) */
  const char *want_ctype, *want_enc; /* as the frame must carry them */
  const char *rid_given;             /* request_id given, or NULL */
  int rid_ok;                        /* the request-id is valid JSON */
  int has_rid;                       /* the frame carries a request-id */
  char rid[100];                     /* its JSON text, trimmed, as a server reads it */
  size_t rid_len;
  uint32_t timeout_ms; /* as given (0: the client's) */
  uint64_t deadline;   /* 0: none */
  size_t frame_len;    /* the frame's length */
  int where;           /* W_* */
  int conn;            /* the connection it was handed to */
  int flushed;         /* its bytes were written to the socket */
  int placeholder;     /* timed out while in flight: no callback left */
  int done;            /* the real callback has run */
};

/* A connection: the client's side as the model sees it, and the server's (harness's) side. */
struct conn {
  int client;
  int pfd;               /* the server's socket (-1: not accepted yet, or closed) */
  int accepted;          /* the server accepted it */
  int client_open;       /* the client still has it */
  int up;                /* the client knows it is connected */
  int dead;              /* (model) the client is ending it in this iteration */
  int reason;            /* ...with this reason */
  int conn_err;          /* ...and this error set by the client (a bad reply ...) */
  int peer_closed;       /* the server closed its socket */
  int peer_eof;          /* the server read the end of the client's stream */
  int poisoned;          /* bytes that are no frame were sent: nothing more is */
  int eof_read;          /* the client read the end of the server's stream */
  int maybe_extra;       /* the client may or may not have made this one (see m_timers) */
  int reset;             /* never accepted: the listener closed with it in its backlog */
  int handed[MAX_CALLS]; /* calls handed to it, in order */
  int nhanded, nflushed;
  struct appmsg_decoder pdec; /* the server's reading of the requests */
  size_t pread, pstart;       /* bytes read; where the request being read began */
  int nreceived;              /* requests the server has read */
  int unans[MAX_CALLS];       /* requests not answered yet by the server */
  int nunans;
  char (*unrid)[48];           /* (allocation failures) their request-ids, "" for none */
  unsigned char *out;          /* everything the server sends, written or not yet */
  size_t olen, written, cread; /* bytes in out; written to the socket; read by the client */
  struct appmsg_decoder cdec;  /* the client's decoder, as the model sees it */
  size_t msg_start;            /* where the client's next frame begins */
  int units[MAX_UNITS / 4];    /* the frames the server sent (unit numbers) */
  int nunits;
};

/* A frame the server sent and what the client must make of it. */
struct unit {
  size_t start;      /* its first byte in its connection's out */
  int call;          /* the call it answers (-1: none) */
  char ctype[64];    /* content-type */
  size_t coff, clen; /* content: at out + coff */
  int status;        /* 0 or APPMSG_E_ERROR_REPLY */
  int has_result;    /* result is a string */
  char result[2100]; /* ...unescaped */
  int has_rj;        /* result_json */
  char rj[2100];     /* ...as JSON text */
  int has_error;     /* error */
  char error[80];    /* ...the name */
};

struct client {
  struct appmsg_client *c; /* the real one (NULL once freed) */
  struct appmsg_client_opts o;
  int live;             /* (model) not freed */
  int freeing;          /* (model) appmsg_client_free() was called */
  int state;            /* ST_* */
  int conn;             /* its connection, or -1 */
  int q[MAX_CALLS], nq; /* the queue */
  int f[MAX_CALLS], nf; /* in flight, placeholders too */
  size_t qbytes;        /* frames in the queue */
  size_t unflushed;     /* bytes handed to the connection and not written */
  size_t stale;         /* placeholders */
  uint32_t backoff, bmin, bmax;
  int retry;         /* a connect waits for its time: */
  uint64_t rlo, rhi; /* ...somewhere in [rlo, rhi] (jitter) */
  int last_err;
  uint64_t next_id; /* automatic request-ids given */
  uint64_t connects;
};

enum { EV_CB, EV_RC };
/* What must happen next: a callback (with its outcome) or a call's return code. */
struct ev {
  int type;
  int call;      /* EV_RC: -1 when no call is made (out of room) */
  int status;    /* EV_CB */
  int causes[3]; /* EV_CB: the causes allowed */
  int ncauses;
  int unit;   /* EV_CB: the reply, or -1 */
  int rcs[3]; /* EV_RC: the return codes allowed */
  int nrcs;
};

static struct {
  struct appmsg_loop *loop;
  int lfd;       /* the listening socket, -1 when not listening */
  int accepting; /* the server accepts what waits in its backlog */
  char name[64];
  char host[80];
  struct call calls[MAX_CALLS];
  int ncalls;
  struct conn conns[MAX_CONNS];
  int nconns;
  struct unit units[MAX_UNITS];
  int nunits;
  struct client clients[MAX_CLIENTS];
  int nclients;
  int cur; /* the client in use, -1: none */
  struct ev ev[MAX_EV];
  int nev, pev;
  int expecting; /* the real callbacks may run now */
  int in_call;   /* inside appmsg_client_call/send (no callback may run) */
  int amb_retry; /* the retry timer may have fired before the timeouts timer */
  int full;      /* out of room: the input stops here */
  int chaos;     /* allocations fail: the contract is checked, not the model */
  int small_buf; /* (allocation failures) the client's sockets take a few KiB at a time */
  int unread;    /* (allocation failures) the server does not read for now */
  int lib;       /* inside a call of the library: its allocations may fail */
  uint64_t allocs, fail_at; /* allocations so far; the one that fails (0: none) */
  unsigned fail_every;      /* ...and every n-th (0: none) */
} H;

static unsigned char rxbuf[65536];

static struct client *cur(void) {
  return H.cur >= 0 ? &H.clients[H.cur] : NULL;
}

/* ---- small helpers ------------------------------------------------------------------------- */

static uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

static const char *trim(const char *s, size_t *len) {
  size_t n = strlen(s);
  while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
    s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
    n--;
  *len = n;
  return s;
}

static void ev_push(struct ev e) {
  CHECK(H.nev < MAX_EV, "too many expected events");
  H.ev[H.nev++] = e;
}

static const char *st_name(int s) {
  switch (s) {
  case ST_CONNECTING:
    return "CONNECTING";
  case ST_UP:
    return "UP";
  case ST_WAITING:
    return "WAITING";
  case ST_DOWN:
    return "DOWN";
  }
  return "?";
}

/* ---- making calls ------------------------------------------------------------------------- */

static const char *const rids[] = {
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    "7",
    " 8 ",
    "\"a\"",
    "[1, 2]",
    "1",
    "\"123e4567-e89b-12d3-a456-426614174000\"",
    "\"dup\"",
    "bad",
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
};
static const uint32_t timeouts[] = {0, 1, 5, 30, 31, 100, 1000, 10000};

/* Appends s quoted as JSON the way the library quotes ("\"" and "\\" escaped, nothing else
 * in the alphabet used). */
static size_t quote(unsigned char *o, const char *s) {
  size_t n = 0;
  o[n++] = '"';
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      o[n++] = '\\';
    o[n++] = (unsigned char)*s;
  }
  o[n++] = '"';
  return n;
}

/* The frame's length: the header as appmsg_header_write() writes it, with the request-id's text
 * as written after ", \"request-id\": ". */
static size_t frame_len(const char *ctype, const char *cenc, size_t len, const char *rid_text) {
  struct appmsg_header h;
  appmsg_header_init(&h);
  CHECK(appmsg_header_set(&h, ctype, cenc) == 0, "header");
  long hl = appmsg_header_write(&h, len, NULL, 0);
  appmsg_header_cleanup(&h);
  CHECK(hl > 0, "header length");
  return 2 + (size_t)hl + (rid_text ? 16 + strlen(rid_text) : 0) + len;
}

/* A new call from 5 bytes of parameters. */
static int new_call(const uint8_t b[5], int depth) {
  if (H.ncalls >= MAX_CALLS) {
    H.full = 1;
    return -1;
  }
  int k = H.ncalls++;
  struct call *x = &H.calls[k];
  memset(x, 0, sizeof *x);
  x->client = H.cur;
  x->depth = depth;
  x->conn = -1;
  x->seed = mix32((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                  (uint32_t)b[3] << 24 | (uint32_t)k << 1) ^
            b[4];
  static const int acts[16] = {A_NONE, A_NONE,      A_NONE,      A_NONE, A_NONE, A_NONE,
                               A_NONE, A_NONE,      A_NONE,      A_CALL, A_CALL, A_CALL,
                               A_FREE, A_CALL_FREE, A_FREE_CALL, A_CALL2};
  x->action = depth >= MAX_DEPTH ? A_NONE : acts[b[4] % 16];
  static const int kinds[8] = {K_CALL,         K_CALL,   K_JSON,   K_JSON,
                               K_JSON_GENERAL, K_BINARY, K_BINARY, K_BAD_UTF8};
  x->kind = kinds[b[0] % 8];
  size_t plen = b[3] % 64;
  if (b[3] >= 224)
    plen *= 8;
  if (x->kind == K_CALL || x->kind == K_BAD_UTF8) {
    static const char alpha[] = "abcxyz09 \"\\";
    size_t n = 0;
    for (size_t i = 0; i < plen && n + 3 < sizeof x->value; i++) {
      uint32_t r = mix32(x->seed + (uint32_t)i);
      if (r % 29 == 0) {
        x->value[n++] = (char)0xc3; /* é */
        x->value[n++] = (char)0xa9;
      } else {
        x->value[n++] = alpha[r % (sizeof alpha - 1)];
      }
    }
    if (x->kind == K_BAD_UTF8)
      x->value[n++] = (char)0xff;
    x->value[n] = '\0';
    snprintf(x->name, sizeof x->name, "a%d", k);
    size_t m = 0;
    memcpy(x->content, "{\"action\": ", 11);
    m = 11;
    m += quote(x->content + m, x->name);
    memcpy(x->content + m, ", \"value\": ", 11);
    m += 11;
    m += quote(x->content + m, x->value);
    x->content[m++] = '}';
    x->len = m;
    x->want_ctype = "text/json";
    x->want_enc = "utf-8";
  } else if (x->kind == K_JSON || x->kind == K_JSON_GENERAL) {
    int m = snprintf((char *)x->content, sizeof x->content, "{\"n\": %d, \"pad\": \"", k);
    for (size_t i = 0; i < plen; i++)
      x->content[m++] = (unsigned char)('a' + i % 26);
    x->content[m++] = '"';
    x->content[m++] = '}';
    x->len = (size_t)m;
    if (x->kind == K_JSON_GENERAL) {
      x->ctype = "text/json";
      x->cenc = "utf-8";
    }
    x->want_ctype = "text/json";
    x->want_enc = "utf-8";
  } else {
    for (size_t i = 0; i < plen; i++)
      x->content[i] = (unsigned char)(mix32(x->seed ^ (uint32_t)i) & 0xff);
    if (plen >= 4)
      snprintf((char *)x->content, 4, "%03d", k % 1000);
    x->len = plen;
    x->ctype = "binary/custom-client-binary-type";
    x->cenc = b[2] & 0x80 ? "binary" : NULL;
    x->want_ctype = x->ctype;
    x->want_enc = "binary";
  }
  if (x->kind != K_CALL && x->kind != K_BAD_UTF8) {
    x->rid_given = rids[b[1] % 16];
    x->timeout_ms = timeouts[b[2] % 8];
  }
  return k;
}

/* A call made from a callback: its parameters come from the parent's seed. */
static int new_nested_call(int parent, int slot) {
  uint32_t s = mix32(H.calls[parent].seed + 0x9e3779b9u * (uint32_t)(slot + 1));
  uint8_t b[5] = {(uint8_t)s, (uint8_t)(s >> 8), (uint8_t)(s >> 16), (uint8_t)(s >> 24),
                  (uint8_t)mix32(s)};
  return new_call(b, H.calls[parent].depth + 1);
}

/* ---- the model ---------------------------------------------------------------------------- */

static void m_action(int k);
static void m_attempt_failed(struct client *cl);

static size_t m_pending(const struct client *cl) {
  return (size_t)cl->nq + (size_t)cl->nf - cl->stale;
}

/* Whether a call of n bytes may be handed to the connection now: connected, under max_in_flight,
 * and under the byte budget (a frame always may go when nothing is waiting). */
static int m_room(const struct client *cl, size_t n) {
  if (cl->state != ST_UP || cl->conn < 0 || H.conns[cl->conn].dead)
    return 0;
  if (cl->o.max_in_flight && (size_t)cl->nf >= cl->o.max_in_flight)
    return 0;
  return cl->unflushed == 0 || cl->o.max_queued_bytes == 0 ||
         cl->unflushed + n <= cl->o.max_queued_bytes;
}

static void m_hand(struct client *cl, int k) {
  struct conn *mc = &H.conns[cl->conn];
  struct call *x = &H.calls[k];
  x->where = W_FLIGHT;
  x->conn = cl->conn;
  cl->f[cl->nf++] = k;
  mc->handed[mc->nhanded++] = k;
  cl->unflushed += x->frame_len;
  note("  model: call %d handed to conn %d (%zu bytes unwritten)", k, cl->conn, cl->unflushed);
}

static void m_send_queued(struct client *cl) {
  while (cl->nq > 0 && !cl->freeing && m_room(cl, H.calls[cl->q[0]].frame_len)) {
    int k = cl->q[0];
    memmove(cl->q, cl->q + 1, (size_t)(cl->nq - 1) * sizeof cl->q[0]);
    cl->nq--;
    cl->qbytes -= H.calls[k].frame_len;
    m_hand(cl, k);
  }
}

/* A callback that must run now: the call's outcome, then what its callback does. */
static void m_callback(int k, int status, const int *causes, int ncauses, int unit) {
  struct call *x = &H.calls[k];
  struct ev e = {.type = EV_CB, .call = k, .status = status, .ncauses = ncauses, .unit = unit};
  for (int i = 0; i < ncauses; i++)
    e.causes[i] = causes[i];
  ev_push(e);
  if (x->where != W_FLIGHT || !x->placeholder)
    x->where = W_DONE;
  note("  expect: callback of call %d: %s (cause %s)%s", k, appmsg_errname(status),
       appmsg_errname(causes[0]), unit >= 0 ? " with a reply" : "");
  m_action(k);
}

static void m_fail(int k, int status, int cause) {
  m_callback(k, status, &cause, 1, -1);
}

/* The model of appmsg_client_call/send: the return codes allowed, in rcs (all of them errors, or
 * exactly {0}). */
static int m_call(struct client *cl, int k, int *rcs) {
  struct call *x = &H.calls[k];
  x->where = W_REJECTED;
  if (cl == NULL || cl->freeing) {
    rcs[0] = -EINVAL;
    return 1;
  }
  if (x->kind == K_BAD_UTF8) {
    rcs[0] = -EINVAL;
    return 1;
  }
  if (cl->state == ST_DOWN || (cl->state == ST_WAITING && cl->o.max_queued == 0)) {
    int n = 0;
    rcs[n++] = cl->last_err ? cl->last_err : APPMSG_E_CLOSED;
    if (H.amb_retry && cl->state == ST_WAITING) /* the retry may have come first */
      rcs[n++] = H.lfd >= 0 ? APPMSG_E_QUEUE_FULL : -ECONNREFUSED;
    return n;
  }
  /* The request-id: given, or automatic, or none. */
  const char *rid = x->rid_given;
  char auto_id[24];
  int is_auto = rid == NULL && cl->o.request_ids;
  x->rid_ok = 1;
  if (rid && (strcmp(rid, "bad") == 0 || rid[0] == '\0')) {
    x->rid_ok = 0;
    rcs[0] = -EINVAL;
    rcs[1] = APPMSG_E_QUEUE_FULL;
    return 2;
  }
  const char *written_rid = NULL; /* the text after "request-id": in the frame */
  if (rid) {
    x->has_rid = 1;
    size_t n;
    const char *t = trim(rid, &n);
    memcpy(x->rid, t, n);
    x->rid[n] = '\0';
    x->rid_len = n;
    written_rid = x->rid; /* trimmed: whitespace around JSON text is no part of it */
  }
  /* The frame's length (an automatic id's digits are not known yet: the next number's). */
  if (is_auto) {
    snprintf(auto_id, sizeof auto_id, "%llu", (unsigned long long)cl->next_id + 1);
    written_rid = auto_id;
  }
  x->frame_len = frame_len(x->want_ctype, x->want_enc, x->len, written_rid);
  /* The frame goes straight to the connection when nothing waits in the queue and it fits the
   * byte budget with the bytes not written yet (one frame always may go when nothing waits).
   * (The library builds it there whenever the bytes waiting alone are within the budget, and
   * takes it back into the queue when it does not fit: an automatic id is used either way.) */
  int built = cl->nq == 0 && m_room(cl, 0);
  int direct = built && m_room(cl, x->frame_len);
  if (!built && cl->nq >= (int)cl->o.max_queued) {
    rcs[0] = APPMSG_E_QUEUE_FULL;
    return 1;
  }
  if (is_auto) {
    cl->next_id++;
    x->has_rid = 1;
    snprintf(x->rid, sizeof x->rid, "%llu", (unsigned long long)cl->next_id);
    x->rid_len = strlen(x->rid);
  }
  size_t waiting = cl->qbytes + cl->unflushed; /* the queue's and the connection's unwritten */
  if (!direct &&
      (cl->nq >= (int)cl->o.max_queued || (waiting > 0 && cl->o.max_queued_bytes &&
                                           waiting + x->frame_len > cl->o.max_queued_bytes))) {
    rcs[0] = APPMSG_E_QUEUE_FULL;
    return 1;
  }
  x->client = (int)(cl - H.clients);
  if (direct) {
    m_hand(cl, k);
  } else {
    x->where = W_QUEUE;
    cl->q[cl->nq++] = k;
    cl->qbytes += x->frame_len;
    note("  model: call %d queued (%d in the queue)", k, cl->nq);
  }
  uint32_t t = x->timeout_ms ? x->timeout_ms : cl->o.call_timeout_ms;
  x->deadline = t ? now_ms + t : 0;
  rcs[0] = 0;
  return 1;
}

/* A nested call, made from a callback: the model says what it returns. */
static void m_nested_call(int parent, int slot) {
  int k = new_nested_call(parent, slot);
  struct ev e = {.type = EV_RC, .call = k};
  if (k >= 0)
    e.nrcs = m_call(cur(), k, e.rcs);
  ev_push(e);
  note("  expect: call %d from the callback of %d returns %s%s", k, parent,
       k >= 0 ? appmsg_errname(e.rcs[0]) : "(none made)", e.nrcs > 1 ? " (or another)" : "");
}

/* The calls in flight end with the connection: a call the socket took whole gets code, one it
 * did not NOT_SENT, both with cause; a timed-out call's placeholder just goes. */
static void m_fail_flight(struct client *cl, int code, int cause) {
  int l[MAX_CALLS], n = cl->nf;
  memcpy(l, cl->f, (size_t)n * sizeof l[0]);
  cl->nf = 0;
  cl->stale = 0;
  cl->unflushed = 0;
  for (int i = 0; i < n; i++) {
    struct call *x = &H.calls[l[i]];
    if (x->placeholder) {
      x->where = W_DONE;
      continue;
    }
    m_fail(l[i], x->flushed ? code : APPMSG_E_NOT_SENT, cause);
  }
}

/* appmsg_client_free(), from a callback or not. */
static void m_free(struct client *cl) {
  if (cl->freeing)
    return;
  note("  model: client %d freed", (int)(cl - H.clients));
  cl->freeing = 1;
  cl->live = 0;
  cl->retry = 0;
  if (cl->conn >= 0) {
    H.conns[cl->conn].client_open = 0;
    cl->conn = -1;
  }
  cl->state = ST_DOWN;
  m_fail_flight(cl, APPMSG_E_CLOSED, APPMSG_E_CLOSED);
  int q[MAX_CALLS], nq = cl->nq;
  memcpy(q, cl->q, (size_t)nq * sizeof q[0]);
  cl->nq = 0;
  cl->qbytes = 0;
  for (int i = 0; i < nq; i++)
    m_fail(q[i], APPMSG_E_NOT_SENT, APPMSG_E_CLOSED);
}

static void m_action(int k) {
  struct client *cl = cur();
  switch (H.calls[k].action) {
  case A_CALL:
    m_nested_call(k, 0);
    break;
  case A_FREE:
    if (cl)
      m_free(cl);
    break;
  case A_CALL_FREE:
    m_nested_call(k, 0);
    if (cl)
      m_free(cl);
    break;
  case A_FREE_CALL:
    if (cl)
      m_free(cl);
    m_nested_call(k, 0);
    break;
  case A_CALL2:
    m_nested_call(k, 0);
    m_nested_call(k, 1);
    break;
  }
}

/* The connection ended (on_close of a working connection). */
static void m_lose(struct client *cl, int reason, int conn_err) {
  struct conn *mc = &H.conns[cl->conn];
  int code = conn_err && conn_err != APPMSG_E_TIMEOUT ? conn_err : APPMSG_E_CLOSED;
  int cause = reason ? reason : code;
  note("  model: conn %d lost (reason %s, calls get %s)", cl->conn, appmsg_errname(reason),
       appmsg_errname(code));
  mc->client_open = 0;
  mc->dead = 1;
  cl->conn = -1;
  cl->last_err = code;
  cl->state = cl->o.reconnect ? ST_WAITING : ST_DOWN;
  m_fail_flight(cl, code, cause);
  if (!cl->freeing)
    m_attempt_failed(cl);
}

static void m_attempt_failed(struct client *cl) {
  int give_up = !cl->o.reconnect;
  cl->state = give_up ? ST_DOWN : ST_WAITING;
  if (!give_up) {
    uint32_t d = cl->backoff;
    cl->retry = 1;
    cl->rlo = now_ms + d / 2;
    cl->rhi = now_ms + d;
    uint64_t next = (uint64_t)d * 2;
    cl->backoff = next > cl->bmax ? cl->bmax : (uint32_t)next;
    note("  model: connect again in [%llu, %llu]", (unsigned long long)cl->rlo,
         (unsigned long long)cl->rhi);
  }
  if (give_up || cl->o.max_queued == 0) {
    int q[MAX_CALLS], nq = cl->nq;
    memcpy(q, cl->q, (size_t)nq * sizeof q[0]);
    cl->nq = 0;
    cl->qbytes = 0;
    for (int i = 0; i < nq; i++)
      m_fail(q[i], APPMSG_E_NOT_SENT, cl->last_err);
  }
}

static void m_attempt(struct client *cl) {
  if (H.lfd >= 0 && H.nconns < MAX_CONNS) {
    struct conn *mc = &H.conns[H.nconns];
    memset(mc, 0, sizeof *mc);
    mc->client = (int)(cl - H.clients);
    mc->pfd = -1;
    mc->client_open = 1;
    cl->conn = H.nconns++;
    cl->state = ST_CONNECTING;
    note("  model: connecting (conn %d)", cl->conn);
    return;
  }
  if (H.lfd >= 0)
    H.full = 1; /* (no room for another connection: the input stops here) */
  cl->last_err = -ECONNREFUSED;
  note("  model: connect refused");
  m_attempt_failed(cl);
}

/* Writes what was handed to the connection: 0, or -EPIPE when the server has closed it. */
static int m_flush(struct client *cl) {
  if (cl->unflushed == 0)
    return 0;
  struct conn *mc = &H.conns[cl->conn];
  if (mc->peer_closed)
    return -EPIPE;
  for (int i = mc->nflushed; i < mc->nhanded; i++)
    H.calls[mc->handed[i]].flushed = 1;
  mc->nflushed = mc->nhanded;
  cl->unflushed = 0;
  return 0;
}

/* The connection's work: write what was handed to it, then (the output emptied) hand it what
 * waited for that; or end it.  In a pass of the loop's deferred work (pass) this repeats until
 * nothing moves; after a socket event what is handed then is written at the iteration's end. */
static void m_settle(struct client *cl, int pass) {
  for (;;) {
    if (!cl->live || cl->conn < 0)
      return;
    struct conn *mc = &H.conns[cl->conn];
    if (!mc->dead) {
      size_t had = cl->unflushed;
      if (m_flush(cl) < 0) {
        mc->dead = 1;
        mc->reason = -EPIPE;
      } else if (had > 0) {
        m_send_queued(cl);
        if (pass && cl->unflushed > 0)
          continue;
      }
    }
    if (mc->dead)
      m_lose(cl, mc->reason, mc->conn_err);
    return;
  }
}

/* Which call a reply answers: the first in flight with its request-id, else the oldest. */
static int m_match(struct client *cl, const struct appmsg_header *h) {
  char rid[128];
  long n = appmsg_header_extra_raw(h, "request-id", rid, sizeof rid);
  int at = -1;
  if (n > 0 && (size_t)n < sizeof rid)
    for (int i = 0; i < cl->nf && at < 0; i++) {
      struct call *x = &H.calls[cl->f[i]];
      if (x->has_rid && x->rid_len == (size_t)n && memcmp(x->rid, rid, (size_t)n) == 0)
        at = i;
    }
  if (at < 0 && cl->nf > 0)
    at = 0;
  if (at < 0)
    return -1;
  int k = cl->f[at];
  memmove(cl->f + at, cl->f + at + 1, (size_t)(cl->nf - at - 1) * sizeof cl->f[0]);
  cl->nf--;
  return k;
}

static void m_on_message(struct client *cl, struct conn *mc, int u, const struct appmsg_header *h) {
  int k = m_match(cl, h);
  if (k < 0) {
    note("  model: a reply nobody asked for: the connection ends");
    mc->dead = 1;
    mc->reason = APPMSG_E_CLOSED;
    mc->conn_err = APPMSG_E_CLOSED;
    return;
  }
  struct call *x = &H.calls[k];
  if (x->placeholder) {
    note("  model: the late reply of call %d is dropped", k);
    cl->stale--;
    x->where = W_DONE;
  } else {
    int cause = H.units[u].status;
    m_callback(k, H.units[u].status, &cause, 1, u);
  }
  if (cl->live && !cl->freeing)
    m_send_queued(cl);
}

/* The client reads n bytes of what the server wrote. */
static void m_read(struct client *cl, struct conn *mc, size_t n) {
  const unsigned char *p = mc->out + mc->cread;
  for (size_t off = 0, used; off < n && !mc->dead && cl->live; off += used) {
    enum appmsg_status st = appmsg_decoder_feed(&mc->cdec, p + off, n - off, &used);
    if (st == APPMSG_MESSAGE) {
      int u = -1;
      for (int i = 0; i < mc->nunits && u < 0; i++)
        if (H.units[mc->units[i]].start == mc->msg_start)
          u = mc->units[i];
      CHECK(u >= 0, "no unit starts at %zu", mc->msg_start);
      mc->msg_start = mc->cread + off + used;
      m_on_message(cl, mc, u, appmsg_decoder_header(&mc->cdec));
    } else if (st == APPMSG_ERROR) {
      int code = appmsg_decoder_error(&mc->cdec);
      note("  model: bad reply (%s): the connection ends", appmsg_errname(code));
      mc->dead = 1;
      mc->reason = code;
      mc->conn_err = code;
    }
  }
  mc->cread += n;
}

/* The connection's socket is ready in this iteration: connected, or something to read. */
static void m_dispatch(struct client *cl) {
  struct conn *mc = &H.conns[cl->conn];
  if (!mc->up && mc->reset) {
    /* The connect failed after all (SO_ERROR): the next address, none - wait and try again. */
    note("  model: conn %d was reset before it was accepted: the connect failed", cl->conn);
    mc->client_open = 0;
    mc->dead = 1;
    cl->conn = -1;
    cl->last_err = -ECONNRESET;
    m_attempt_failed(cl);
    return;
  }
  if (!mc->up) {
    mc->up = 1;
    cl->state = ST_UP;
    cl->connects++;
    cl->backoff = cl->bmin;
    note("  model: connected (conn %d)", cl->conn);
    m_send_queued(cl);
    m_settle(cl, 0);
    return;
  }
  if (mc->written > mc->cread) {
    size_t n = mc->written - mc->cread;
    m_read(cl, mc, n < 65536 ? n : 65536);
  } else if (mc->peer_closed && !mc->eof_read && mc->reset) {
    mc->eof_read = 1;
    note("  model: conn %d was reset before it was accepted: the read fails", cl->conn);
    mc->dead = 1;
    mc->reason = -ECONNRESET;
  } else if (mc->peer_closed && !mc->eof_read) {
    mc->eof_read = 1;
    int rc = appmsg_decoder_finish(&mc->cdec);
    note("  model: the server closed conn %d%s", cl->conn, rc ? " inside a frame" : "");
    mc->dead = 1;
    mc->reason = rc;
    mc->conn_err = rc;
  } else {
    return;
  }
  m_settle(cl, 0);
}

static size_t m_stale_max(const struct client *cl) {
  if (cl->o.max_in_flight)
    return cl->o.max_in_flight - 1; /* a window full of placeholders can never move */
  return cl->o.max_queued ? cl->o.max_queued : 1024;
}

static void m_on_timeouts(struct client *cl) {
  int due[MAX_CALLS], nd = 0;
  for (int i = 0; i < cl->nq;) {
    struct call *x = &H.calls[cl->q[i]];
    if (x->deadline && x->deadline <= now_ms) {
      due[nd++] = cl->q[i];
      cl->qbytes -= x->frame_len;
      memmove(cl->q + i, cl->q + i + 1, (size_t)(cl->nq - i - 1) * sizeof cl->q[0]);
      cl->nq--;
    } else {
      i++;
    }
  }
  for (int i = 0; i < nd; i++)
    m_fail(due[i], APPMSG_E_NOT_SENT, APPMSG_E_TIMEOUT);
  for (int i = 0; i < cl->nf && cl->live; i++) {
    struct call *x = &H.calls[cl->f[i]];
    if (!x->placeholder && x->deadline && x->deadline <= now_ms) {
      cl->stale++;
      x->placeholder = 1;
      m_fail(cl->f[i], APPMSG_E_TIMEOUT, APPMSG_E_TIMEOUT);
    }
  }
  if (!cl->live || cl->freeing)
    return;
  if (cl->conn >= 0 && cl->state == ST_UP && cl->stale > m_stale_max(cl)) {
    note("  model: %zu calls timed out in flight: connect again", cl->stale);
    struct conn *mc = &H.conns[cl->conn];
    mc->dead = 1;
    mc->reason = APPMSG_E_TIMEOUT;
    mc->conn_err = APPMSG_E_TIMEOUT;
  }
}

static void m_on_retry(struct client *cl) {
  cl->retry = 0;
  m_attempt(cl);
}

static void m_timers(struct client *cl) {
  int retry = cl->retry && now_ms >= cl->rhi;
  CHECK(!cl->retry || now_ms < cl->rlo || now_ms >= cl->rhi, "the clock stopped in the window");
  int tmo = 0;
  for (int i = 0; i < cl->nq; i++)
    tmo |= H.calls[cl->q[i]].deadline && H.calls[cl->q[i]].deadline <= now_ms;
  for (int i = 0; i < cl->nf; i++)
    tmo |= !H.calls[cl->f[i]].placeholder && H.calls[cl->f[i]].deadline &&
           H.calls[cl->f[i]].deadline <= now_ms;
  if (retry && tmo) {
    /* Both timers are due; which fires first depends on the jitter.  Only calls made from the
     * timeout callbacks can tell (m_call), and a connection the retry makes may then be
     * dropped at once by a free (maybe_extra). */
    H.amb_retry = 1;
    int before = H.nconns;
    m_on_timeouts(cl);
    H.amb_retry = 0;
    if (cl->live) {
      m_on_retry(cl);
    } else if (H.lfd >= 0 && before == H.nconns && H.nconns < MAX_CONNS) {
      struct conn *mc = &H.conns[H.nconns++];
      memset(mc, 0, sizeof *mc);
      mc->client = (int)(cl - H.clients);
      mc->pfd = -1;
      mc->maybe_extra = 1;
    }
  } else if (retry) {
    m_on_retry(cl);
  } else if (tmo) {
    m_on_timeouts(cl);
  }
}

/* One iteration of the loop, as the model sees it. */
static void m_run_once(void) {
  struct client *cl = cur();
  if (cl == NULL || !cl->live)
    return;
  /* Work queued from outside the loop: what calls handed over is written. */
  if (cl->conn >= 0 && cl->unflushed > 0)
    m_settle(cl, 1);
  /* The socket's readiness. */
  if (cl->live && cl->conn >= 0)
    m_dispatch(cl);
  /* Timers. */
  if (cl->live)
    m_timers(cl);
  /* The iteration's deferred work. */
  if (cl->live && cl->conn >= 0 && (cl->unflushed > 0 || H.conns[cl->conn].dead))
    m_settle(cl, 1);
}

/* ---- allocation failures ------------------------------------------------------------------ */

/* The library's allocator: the C library's, failing where the input says - only inside the
 * library's calls made by the harness (the harness's own use of the codec allocates too). */
static int alloc_fails(void) {
  if (!H.lib)
    return 0;
  H.allocs++;
  return (H.fail_at && H.allocs == H.fail_at) || (H.fail_every && H.allocs % H.fail_every == 0);
}
static void *f_malloc(size_t n) {
  return alloc_fails() ? NULL : malloc(n);
}
static void *f_calloc(size_t k, size_t n) {
  return alloc_fails() ? NULL : calloc(k, n);
}
static void *f_realloc(void *p, size_t n) {
  return alloc_fails() ? NULL : realloc(p, n);
}
static const struct appmsg_allocator failing = {f_malloc, f_calloc, f_realloc, free};

/* The library's connect() (the target links with --wrap=connect): the client's socket gets the
 * smallest send buffer when the input asks, so that writes stop half-way and a connection lost
 * then leaves calls half written. */
int __real_connect(int fd, const struct sockaddr *addr, socklen_t len);
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len);
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  if (H.small_buf) {
    int v = 1; /* (the kernel's minimum, a few KiB) */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
  }
  return __real_connect(fd, addr, len);
}

/* (Allocation failures) which call a request is, from its content (-1: cannot tell). */
static int request_call(const char *ctype, const unsigned char *c, size_t n) {
  int k = -1;
  char s[32];
  size_t m = n < sizeof s - 1 ? n : sizeof s - 1;
  memcpy(s, c, m);
  s[m] = '\0';
  if (sscanf(s, "{\"action\": \"a%d", &k) == 1 || sscanf(s, "{\"n\": %d", &k) == 1)
    return k >= 0 && k < H.ncalls ? k : -1;
  if (strcmp(ctype, "text/json") != 0 && n >= 4 && c[3] == 0 && sscanf(s, "%3d", &k) == 1)
    return k >= 0 && k < H.ncalls ? k : -1;
  return -1;
}

/* ---- the real side ----------------------------------------------------------------------- */

static void on_reply(const struct appmsg_reply *r, void *ud);

static int do_call(struct appmsg_client *c, int k) {
  struct call *x = &H.calls[k];
  int rc;
  H.in_call++;
  H.lib++;
  if (x->kind == K_CALL || x->kind == K_BAD_UTF8) {
    rc = appmsg_client_call(c, on_reply, x, x->name, "value", x->value, NULL);
  } else {
    struct appmsg_call ac = {.content_type = x->ctype,
                             .content_encoding = x->cenc,
                             .content = x->len ? x->content : NULL,
                             .len = x->len,
                             .timeout_ms = x->timeout_ms,
                             .request_id = x->rid_given};
    rc = appmsg_client_send(c, &ac, on_reply, x);
  }
  H.lib--;
  H.in_call--;
  if (rc == 0) {
    x->accepted = 1;
    uint32_t t = x->timeout_ms ? x->timeout_ms : H.clients[x->client].o.call_timeout_ms;
    x->due = t ? now_ms + t : 0;
  }
  return rc;
}

static struct ev *next_ev(void) {
  CHECK(H.pev < H.nev, "an event the model did not expect (%d expected)", H.nev);
  return &H.ev[H.pev++];
}

static void real_nested_call(int parent) {
  struct ev *e = next_ev();
  CHECK(e->type == EV_RC, "the callback of %d makes a call; the model expected a callback of %d",
        parent, e->call);
  if (e->call < 0)
    return;
  int rc = do_call(H.clients[H.calls[parent].client].c, e->call);
  int ok = 0;
  for (int i = 0; i < e->nrcs; i++)
    ok |= rc == e->rcs[i];
  CHECK(ok, "call %d made from the callback of %d returned %s, the model says %s", e->call, parent,
        appmsg_errname(rc), appmsg_errname(e->rcs[0]));
}

static void real_free(int k) {
  appmsg_client_free(H.clients[H.calls[k].client].c);
}

static int same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* A callback when allocations fail: the contract, not the model. */
static void chaos_reply(const struct appmsg_reply *r, struct call *x, int k) {
  CHECK(x->accepted && !x->done, "call %d: a callback for a call that %s", k,
        x->done ? "had one" : "returned an error");
  x->done = 1;
  note("  real: callback of call %d: %s (cause %s)", k, appmsg_errname(r->status),
       appmsg_errname(r->cause));
  CHECK(r->content != NULL && r->status <= 0, "call %d: status %d", k, r->status);
  CHECK((r->status == 0 || r->status == APPMSG_E_ERROR_REPLY) == (r->header != NULL),
        "call %d: %s with%s a header", k, appmsg_errname(r->status), r->header ? "" : "out");
  if (r->header == NULL)
    CHECK(r->reason && r->reason[0] && r->len == 0, "call %d: a failure without its reason", k);
  /* NOT_SENT: never written.  Answered, or failed with a connection's code (CLOSED, a bad
   * reply's...): written whole.  (A timeout says nothing.)  The server's reading tells. */
  if (r->status == APPMSG_E_NOT_SENT)
    x->claim = 2;
  else if (r->status != APPMSG_E_TIMEOUT)
    x->claim = 1;
  CHECK(!(x->claim == 2 && x->received), "call %d: NOT_SENT, and the server has it", k);
  struct client *cl = &H.clients[x->client];
  int acts[2] = {-1, -1}; /* calls, frees */
  switch (x->action) {
  case A_CALL:
    acts[0] = 0;
    break;
  case A_FREE:
    acts[0] = 2;
    break;
  case A_CALL_FREE:
    acts[0] = 0, acts[1] = 2;
    break;
  case A_FREE_CALL:
    acts[0] = 2, acts[1] = 0;
    break;
  case A_CALL2:
    acts[0] = 0, acts[1] = 1;
    break;
  }
  for (int i = 0; i < 2; i++) {
    if (acts[i] == 2) {
      cl->freeing = 1;
      H.lib++;
      appmsg_client_free(cl->c);
      H.lib--;
    } else if (acts[i] >= 0) {
      int j = new_nested_call(k, acts[i]);
      if (j >= 0) {
        int rc = do_call(cl->c, j);
        CHECK(!cl->freeing || rc < 0, "call %d on a client freed: %s", j, appmsg_errname(rc));
      }
    }
  }
}

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct call *x = ud;
  int k = (int)(x - H.calls);
  CHECK(k >= 0 && k < H.ncalls, "a callback with a pointer that is no call");
  CHECK(!H.in_call, "the callback of call %d ran inside a call", k);
  CHECK(H.expecting, "the callback of call %d ran outside the loop", k);
  if (H.chaos) {
    chaos_reply(r, x, k);
    return;
  }
  CHECK(!x->done, "the callback of call %d ran twice (status %s)", k, appmsg_errname(r->status));
  CHECK(x->where != W_REJECTED, "the callback of call %d, which returned an error, ran", k);
  struct ev *e = next_ev();
  CHECK(e->type == EV_CB && e->call == k,
        "callback of call %d (status %s, cause %s); the model expected %s of call %d", k,
        appmsg_errname(r->status), appmsg_errname(r->cause),
        e->type == EV_CB ? "the callback" : "a call made", e->call);
  x->done = 1;
  note("  real: callback of call %d: %s (cause %s)", k, appmsg_errname(r->status),
       appmsg_errname(r->cause));
  CHECK(r->status == e->status, "call %d: status %s, the model says %s (cause %s; %s)", k,
        appmsg_errname(r->status), appmsg_errname(e->status), appmsg_errname(r->cause),
        r->reason ? r->reason : "");
  int ok = 0;
  for (int i = 0; i < e->ncauses; i++)
    ok |= r->cause == e->causes[i];
  CHECK(ok, "call %d (%s): cause %s, the model says %s (%s)", k, appmsg_errname(r->status),
        appmsg_errname(r->cause), appmsg_errname(e->causes[0]), r->reason ? r->reason : "");
  CHECK(r->content != NULL, "call %d: content NULL", k);
  if (e->unit < 0) {
    CHECK(r->header == NULL && r->len == 0 && r->result == NULL && r->result_json == NULL &&
              r->error == NULL,
          "call %d: a failure with reply fields", k);
    CHECK(r->reason && r->reason[0], "call %d: a failure without a reason", k);
  } else {
    const struct unit *u = &H.units[e->unit];
    const struct conn *mc = NULL;
    for (int i = 0; i < H.nconns && !mc; i++)
      for (int j = 0; j < H.conns[i].nunits; j++)
        if (H.conns[i].units[j] == e->unit)
          mc = &H.conns[i];
    CHECK(mc, "unit %d", e->unit);
    CHECK(r->header && strcmp(r->header->content_type, u->ctype) == 0, "call %d: reply type", k);
    CHECK(r->len == u->clen && memcmp(r->content, mc->out + u->coff, u->clen) == 0,
          "call %d: the reply's content is not the one sent (%zu bytes, want %zu)", k, r->len,
          u->clen);
    CHECK(same_str(r->result, u->has_result ? u->result : NULL), "call %d: result '%s', want '%s'",
          k, r->result ? r->result : "(null)", u->has_result ? u->result : "(null)");
    CHECK((r->result_json == NULL) == !u->has_rj &&
              (!u->has_rj || (r->result_json_len == strlen(u->rj) &&
                              memcmp(r->result_json, u->rj, r->result_json_len) == 0)),
          "call %d: result_json '%.*s', want '%s'", k, r->result_json ? (int)r->result_json_len : 6,
          r->result_json ? r->result_json : "(null)", u->has_rj ? u->rj : "(null)");
    CHECK(same_str(r->error, u->has_error ? u->error : NULL), "call %d: error '%s', want '%s'", k,
          r->error ? r->error : "(null)", u->has_error ? u->error : "(null)");
    if (r->status == APPMSG_E_ERROR_REPLY)
      CHECK(r->reason && strcmp(r->reason, u->has_result ? u->result
                                                         : "the server answered with an error "
                                                           "reply") == 0,
            "call %d: error reply's reason '%s'", k, r->reason ? r->reason : "(null)");
  }
  switch (x->action) {
  case A_CALL:
    real_nested_call(k);
    break;
  case A_FREE:
    real_free(k);
    break;
  case A_CALL_FREE:
    real_nested_call(k);
    real_free(k);
    break;
  case A_FREE_CALL:
    real_free(k);
    real_nested_call(k);
    break;
  case A_CALL2:
    real_nested_call(k);
    real_nested_call(k);
    break;
  }
}

/* ---- the server side ---------------------------------------------------------------------- */

static void listen_start(void) {
  if (H.lfd >= 0)
    return;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t n = strlen(H.name);
  memcpy(a.sun_path + 1, H.name, n);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
  CHECK(bind(fd, (struct sockaddr *)&a, len) == 0, "bind: %s", strerror(errno));
  CHECK(listen(fd, 128) == 0, "listen: %s", strerror(errno));
  H.lfd = fd;
}

/* Reads the requests that arrived on a connection; notes the end of the client's stream. */
static void peer_drain(struct conn *mc) {
  if (mc->pfd < 0 || H.unread)
    return;
  for (;;) {
    ssize_t n = recv(mc->pfd, rxbuf, sizeof rxbuf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN)
      break;
    if (n <= 0) {
      mc->peer_eof = 1;
      break;
    }
    for (size_t off = 0, used; off < (size_t)n; off += used) {
      enum appmsg_status st = appmsg_decoder_feed(&mc->pdec, rxbuf + off, (size_t)n - off, &used);
      CHECK(st != APPMSG_ERROR, "conn %zu: the server could not read a request: %s",
            (size_t)(mc - H.conns), appmsg_decoder_reason(&mc->pdec));
      if (st != APPMSG_MESSAGE)
        continue;
      size_t end = mc->pread + off + used, flen = end - mc->pstart;
      mc->pstart = end;
      if (H.chaos) {
        if (mc->unrid == NULL)
          CHECK((mc->unrid = calloc(MAX_CALLS, sizeof *mc->unrid)) != NULL, "calloc");
        if (mc->nunans >= MAX_CALLS)
          continue;
        long rn = appmsg_header_extra_raw(appmsg_decoder_header(&mc->pdec), "request-id",
                                          mc->unrid[mc->nunans], sizeof mc->unrid[0] - 1);
        mc->unrid[mc->nunans][rn > 0 && rn < 48 ? rn : 0] = '\0';
        mc->unans[mc->nunans++] = -1;
        mc->nreceived++;
        size_t clen;
        const unsigned char *c = appmsg_decoder_content(&mc->pdec, &clen);
        int k = request_call(appmsg_decoder_header(&mc->pdec)->content_type, c, clen);
        if (k >= 0) {
          struct call *x = &H.calls[k];
          CHECK(clen == x->len && memcmp(c, x->content, clen) == 0,
                "call %d: the request's content is not the call's: %zu bytes '%.*s', want %zu "
                "'%.*s'",
                k, clen, (int)(clen < 80 ? clen : 80), (const char *)c, x->len,
                (int)(x->len < 80 ? x->len : 80), (const char *)x->content);
          CHECK(x->claim != 2, "call %d: the server has it, its callback said NOT_SENT", k);
          CHECK(!x->received, "call %d: the server has it twice", k);
          x->received = 1;
        }
        continue;
      }
      CHECK(mc->nreceived < mc->nflushed,
            "conn %zu: a request the model did not see written (%d received, %d written)",
            (size_t)(mc - H.conns), mc->nreceived + 1, mc->nflushed);
      int k = mc->handed[mc->nreceived++];
      struct call *x = &H.calls[k];
      const struct appmsg_header *h = appmsg_decoder_header(&mc->pdec);
      size_t clen;
      const void *c = appmsg_decoder_content(&mc->pdec, &clen);
      CHECK(strcmp(h->content_type, x->want_ctype) == 0 &&
                strcmp(h->content_encoding, x->want_enc) == 0,
            "call %d: request type %s/%s", k, h->content_type, h->content_encoding);
      CHECK(clen == x->len && memcmp(c, x->content, clen) == 0,
            "call %d: the request's content is not the call's (%zu bytes, want %zu: %.*s)", k, clen,
            x->len, (int)clen, (const char *)c);
      char rid[128];
      long rn = appmsg_header_extra_raw(h, "request-id", rid, sizeof rid);
      CHECK((rn > 0) == (x->has_rid != 0), "call %d: request-id present %d, want %d", k, rn > 0,
            x->has_rid);
      if (rn > 0)
        CHECK((size_t)rn == x->rid_len && memcmp(rid, x->rid, x->rid_len) == 0,
              "call %d: request-id %.*s, want %s", k, (int)rn, rid, x->rid);
      CHECK(flen == x->frame_len, "call %d: a frame of %zu bytes, the model says %zu", k, flen,
            x->frame_len);
      mc->unans[mc->nunans++] = k;
      note("  server: conn %zu received call %d", (size_t)(mc - H.conns), k);
    }
    mc->pread += (size_t)n;
  }
}

static void peer_close(struct conn *mc) {
  if (mc->pfd >= 0) {
    close(mc->pfd);
    mc->pfd = -1;
  }
  mc->peer_closed = 1;
}

/* Accepts what waits, reads what arrived, and checks both against the model. */
static void pump(void) {
  for (int i = 0; i < H.nconns; i++)
    if (!H.conns[i].accepted && !H.conns[i].reset && H.conns[i].maybe_extra)
      H.accepting = 1; /* (the server looks at once whether it came) */
  while (H.lfd >= 0 && H.accepting) {
    int fd = accept4(H.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      CHECK(errno == EAGAIN || errno == EINTR, "accept: %s", strerror(errno));
      if (errno == EAGAIN)
        break;
      continue;
    }
    int i = 0;
    while (i < H.nconns && (H.conns[i].accepted || H.conns[i].reset))
      i++;
    if (i == H.nconns && H.full && !H.chaos) {
      close(fd); /* (out of records: the model did not make it; the input ends here) */
      continue;
    }
    if (H.chaos && i == H.nconns) { /* (no model: a record for each connection that comes) */
      if (H.nconns == MAX_CONNS) {
        close(fd);
        H.full = 1;
        continue;
      }
      memset(&H.conns[i], 0, sizeof H.conns[i]);
      H.conns[i].client_open = 1;
      H.nconns++;
    }
    CHECK(i < H.nconns, "a connection the model did not expect");
    struct conn *mc = &H.conns[i];
    mc->accepted = 1;
    mc->pfd = fd;
    CHECK(appmsg_decoder_init(&mc->pdec, NULL) == 0, "decoder");
    note("  server: accepted conn %d", i);
  }
  for (int i = 0; i < H.nconns; i++) {
    struct conn *mc = &H.conns[i];
    if (!mc->accepted) {
      if (mc->reset || (H.lfd >= 0 && !H.accepting))
        continue; /* gone with the listener, or waiting in its backlog */
      CHECK(mc->maybe_extra, "conn %d was made and not accepted", i);
      mc->accepted = 1; /* it was not made after all */
      mc->peer_closed = mc->peer_eof = 1;
      continue;
    }
    peer_drain(mc);
    if (H.chaos) {
      if (mc->peer_eof && mc->pfd >= 0)
        peer_close(mc);
      continue;
    }
    if (mc->pfd >= 0 || !mc->peer_closed)
      CHECK(mc->nreceived == mc->nflushed, "conn %d: the server has %d requests, the model says %d",
            i, mc->nreceived, mc->nflushed);
    if (mc->peer_eof && mc->pfd >= 0) {
      CHECK(!mc->client_open, "conn %d: the client ended a connection the model says it has", i);
      CHECK(appmsg_decoder_in_frame(&mc->pdec) == 0, "conn %d: a request cut short", i);
      peer_close(mc);
    }
    if (mc->pfd >= 0)
      CHECK(mc->client_open, "conn %d: the model says the client closed it; it is open", i);
  }
}

/* The connection the server writes to: the newest one open. */
static struct conn *peer_cur(void) {
  for (int i = H.nconns - 1; i >= 0; i--)
    if (H.conns[i].pfd >= 0)
      return &H.conns[i];
  return NULL;
}

static void peer_room(struct conn *mc, size_t n) {
  if (mc->out == NULL)
    mc->out = malloc(MAX_OUT);
  CHECK(mc->out, "malloc");
  (void)n;
}

/* Writes out up to end. */
static void peer_write(struct conn *mc, size_t end) {
  while (mc->written < end && mc->pfd >= 0) {
    ssize_t n =
        send(mc->pfd, mc->out + mc->written, end - mc->written, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    mc->written += (size_t)n;
  }
}

/* A new unit (a frame the server sends), or -1 when there is no room. */
static int new_unit(struct conn *mc, size_t need) {
  if (H.nunits >= MAX_UNITS || mc->nunits >= (int)(sizeof mc->units / sizeof mc->units[0]) ||
      mc->olen + need > MAX_OUT) {
    H.full = 1;
    return -1;
  }
  peer_room(mc, need);
  int u = H.nunits++;
  memset(&H.units[u], 0, sizeof H.units[u]);
  H.units[u].start = mc->olen;
  H.units[u].call = -1;
  mc->units[mc->nunits++] = u;
  return u;
}

/* Appends a reply of the given kind to mc's output (not written yet): unit u. */
static void build_reply(struct conn *mc, int u, int kind, int tag, const char *rid, size_t rid_n,
                        size_t big) {
  struct unit *x = &H.units[u];
  char c[2200];
  int n = 0;
  const char *ctype = "text/json", *enc = "utf-8";
  switch (kind) {
  default: /* a plain result */
    n = snprintf(c, sizeof c, "{\"result\": \"r%d-ok\"}", tag);
    x->has_result = 1;
    snprintf(x->result, sizeof x->result, "r%d-ok", tag);
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "\"r%d-ok\"", tag);
    break;
  case 1: /* escapes */
    n = snprintf(c, sizeof c, "{\"result\": \"q\\\"%d\\\\ \\u00e9 \\/\\t\"}", tag);
    x->has_result = 1;
    snprintf(x->result, sizeof x->result, "q\"%d\\ \xc3\xa9 /\t", tag);
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "\"q\\\"%d\\\\ \\u00e9 \\/\\t\"", tag);
    break;
  case 2: /* a result that is no string */
    n = snprintf(c, sizeof c, "{\"result\": [1, \"r%d\"], \"n\": 2}", tag);
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "[1, \"r%d\"]", tag);
    break;
  case 3: /* no result */
    n = snprintf(c, sizeof c, "{\"other\": \"r%d\"}", tag);
    break;
  case 4: /* an error reply */
    n = snprintf(c, sizeof c, "{\"result\": \"Error: no r%d.\", \"error\": \"NOT_FOUND\"}", tag);
    x->status = APPMSG_E_ERROR_REPLY;
    x->has_result = 1;
    snprintf(x->result, sizeof x->result, "Error: no r%d.", tag);
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "\"Error: no r%d.\"", tag);
    x->has_error = 1;
    snprintf(x->error, sizeof x->error, "NOT_FOUND");
    break;
  case 5: /* "error" that is no string: not an error reply */
    n = snprintf(c, sizeof c, "{\"result\": \"x%d\", \"error\": 5}", tag);
    x->has_result = 1;
    snprintf(x->result, sizeof x->result, "x%d", tag);
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "\"x%d\"", tag);
    break;
  case 6: /* binary */
    ctype = "binary/custom-server-binary-type";
    enc = "binary";
    n = snprintf(c, sizeof c, "..r%d", tag);
    c[0] = 0;
    c[1] = (char)0xff;
    break;
  case 7: /* an error reply whose result is no string */
    n = snprintf(c, sizeof c, "{\"error\": \"E%d\", \"result\": {\"a\": 1}}", tag);
    x->status = APPMSG_E_ERROR_REPLY;
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "{\"a\": 1}");
    x->has_error = 1;
    snprintf(x->error, sizeof x->error, "E%d", tag);
    break;
  case 8: /* text/json that is no JSON */
    n = snprintf(c, sizeof c, "{\"result\": \"r%d\"", tag);
    break;
  case 9: /* large */
    n = snprintf(c, sizeof c, "{\"result\": \"");
    for (size_t i = 0; i < big; i++)
      c[n++] = (char)('A' + i % 26);
    memcpy(c + n, "\"}", 2);
    n += 2;
    x->has_result = 1;
    memcpy(x->result, c + 12, big);
    x->result[big] = '\0';
    x->has_rj = 1;
    memcpy(x->rj, c + 11, big + 2);
    x->rj[big + 2] = '\0';
    break;
  case 10: /* no space after the colon: not the common reply's shape */
    n = snprintf(c, sizeof c, "{\"result\":\"r%d\"}", tag);
    x->has_result = 1;
    snprintf(x->result, sizeof x->result, "r%d", tag);
    x->has_rj = 1;
    snprintf(x->rj, sizeof x->rj, "\"r%d\"", tag);
    break;
  }
  snprintf(x->ctype, sizeof x->ctype, "%s", ctype);
  struct appmsg_header h;
  appmsg_header_init(&h);
  CHECK(appmsg_header_set(&h, ctype, enc) == 0, "reply header");
  if (rid) {
    char r[128];
    memcpy(r, rid, rid_n);
    r[rid_n] = '\0';
    CHECK(appmsg_header_set_extra_json(&h, "request-id", r) == 0, "reply request-id %s", r);
  }
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  CHECK(appmsg_encoder_push(&e, &h, c, (size_t)n) == 0, "encode");
  size_t fl;
  const void *p = appmsg_encoder_peek(&e, &fl);
  CHECK(mc->olen + fl <= MAX_OUT, "out");
  memcpy(mc->out + mc->olen, p, fl);
  x->coff = mc->olen + fl - (size_t)n;
  x->clen = (size_t)n;
  mc->olen += fl;
  appmsg_encoder_cleanup(&e);
  appmsg_header_cleanup(&h);
}

/* ---- operations --------------------------------------------------------------------------- */

static void begin_expect(void) {
  H.nev = H.pev = 0;
}

static void end_expect(const char *what) {
  CHECK(H.pev == H.nev, "%s: %d callbacks or calls the model expected did not happen (next: %s %d)",
        what, H.nev - H.pev, H.pev < H.nev && H.ev[H.pev].type == EV_CB ? "callback of" : "call",
        H.pev < H.nev ? H.ev[H.pev].call : -1);
}

/* After the model freed the client from a callback: the real one is gone too. */
static void settle_clients(void) {
  struct client *cl = cur();
  if (cl && !cl->live) {
    cl->c = NULL;
    H.cur = -1;
  }
}

/* (Allocation failures) every call of client i that returned 0 has had its callback. */
static void chaos_all_done(int i) {
  for (int k = 0; k < H.ncalls; k++)
    CHECK(H.calls[k].client != i || !H.calls[k].accepted || H.calls[k].done,
          "call %d of a client freed never had its callback", k);
}

static void check_client(void) {
  struct client *cl = cur();
  if (cl == NULL)
    return;
  if (H.chaos) {
    size_t n = 0;
    for (int k = 0; k < H.ncalls; k++)
      n += H.calls[k].client == H.cur && H.calls[k].accepted && !H.calls[k].done;
    CHECK(appmsg_client_pending(cl->c) == n, "pending %zu, %zu calls wait for their callback",
          appmsg_client_pending(cl->c), n);
    return;
  }
  CHECK(appmsg_client_pending(cl->c) == m_pending(cl), "pending %zu, the model says %zu",
        appmsg_client_pending(cl->c), m_pending(cl));
  CHECK(appmsg_client_connected(cl->c) == (cl->state == ST_UP), "connected %d, the model says %s",
        appmsg_client_connected(cl->c), st_name(cl->state));
  CHECK(appmsg_client_connects(cl->c) == cl->connects, "connects %llu, the model says %llu",
        (unsigned long long)appmsg_client_connects(cl->c), (unsigned long long)cl->connects);
  int n = 0;
  for (int i = 0; i < H.ncalls; i++)
    n += H.calls[i].client == H.cur &&
         (H.calls[i].where == W_QUEUE || (H.calls[i].where == W_FLIGHT && !H.calls[i].placeholder));
  CHECK((size_t)n == m_pending(cl), "model: %d calls waiting, lists say %zu", n, m_pending(cl));
}

static void op_new_client(void) {
  if (H.cur >= 0 || H.nclients >= MAX_CLIENTS) {
    if (H.nclients >= MAX_CLIENTS)
      H.full = 1;
    return;
  }
  struct client *cl = &H.clients[H.nclients];
  memset(cl, 0, sizeof *cl);
  struct appmsg_client_opts *o = &cl->o;
  appmsg_client_opts_default(o);
  unsigned a = take(256), b = take(256), c = take(256), d = take(256);
  static const size_t mq[] = {1024, 1024, 0, 1, 2, 3, 8};
  o->max_queued = mq[a % 7];
  static const size_t mqb[] = {(size_t)4 << 20, 0, 150, 400, 1500};
  o->max_queued_bytes = mqb[(a / 7) % 5];
  o->max_in_flight = b % 4;
  o->reconnect = (b >> 2) % 4 != 3;
  o->request_ids = (b >> 4) & 1;
  static const uint32_t tmo[] = {10000, 0, 30, 100, 1000};
  o->call_timeout_ms = tmo[c % 5];
  static const uint32_t bo[][2] = {{100, 5000}, {2, 2}, {2, 16}, {10, 40}, {50, 0}, {5, 3}, {0, 0}};
  o->backoff_min_ms = bo[(c / 5) % 7][0];
  o->backoff_max_ms = bo[(c / 5) % 7][1];
  static const uint64_t mcl[] = {(uint64_t)1 << 30, (uint64_t)1 << 30, 64, 300};
  o->conn.limits.max_content_length = mcl[d % 4];
  o->conn.limits.max_header_length = (d / 4) % 2 ? 1024 : 65535;
  /* client.h: 0 is the default (100 ms, 5 s); the largest is never below the smallest. */
  cl->bmin = o->backoff_min_ms ? o->backoff_min_ms : 100;
  cl->bmax = o->backoff_max_ms ? o->backoff_max_ms : 5000;
  if (cl->bmax < cl->bmin)
    cl->bmax = cl->bmin;
  cl->backoff = cl->bmin;
  cl->live = 1;
  cl->conn = -1;
  H.cur = H.nclients++;
  note("op: new client %d: max_queued %zu, max_queued_bytes %zu, max_in_flight %zu, reconnect "
       "%d, request_ids %d, timeout %u, backoff %u..%u, max content %llu, max header %u",
       H.cur, o->max_queued, o->max_queued_bytes, o->max_in_flight, o->reconnect, o->request_ids,
       o->call_timeout_ms, o->backoff_min_ms, o->backoff_max_ms,
       (unsigned long long)o->conn.limits.max_content_length, o->conn.limits.max_header_length);
  if (H.chaos) {
    H.lib++;
    int rc = appmsg_client_new(&cl->c, H.loop, H.host, "0", o);
    H.lib--;
    CHECK(rc == 0 || rc == -ENOMEM, "appmsg_client_new: %s", appmsg_errname(rc));
    if (rc)
      H.cur = -1;
    return;
  }
  begin_expect();
  m_attempt(cl);
  end_expect("new (model)");
  CHECK(appmsg_client_new(&cl->c, H.loop, H.host, "0", o) == 0, "appmsg_client_new");
  if (cl->conn >= 0)
    CHECK(appmsg_decoder_init(&H.conns[cl->conn].cdec, &o->conn.limits) == 0, "decoder");
}

/* Sets up the model decoders of connections made since the last look. */
static void init_cdecs(void) {
  for (int i = 0; i < H.nconns && !H.chaos; i++) {
    struct conn *mc = &H.conns[i];
    if (mc->out == NULL && !mc->maybe_extra) {
      peer_room(mc, 0);
      if (mc->cdec.limits.max_header_length == 0)
        CHECK(appmsg_decoder_init(&mc->cdec, &H.clients[mc->client].o.conn.limits) == 0, "dec");
    }
  }
}

static void op_call(void) {
  uint8_t b[5];
  for (int i = 0; i < 5; i++)
    b[i] = (uint8_t)take(256);
  struct client *cl = cur();
  if (cl == NULL)
    return;
  int k = new_call(b, 0);
  if (k < 0)
    return;
  if (H.chaos) {
    int rc = do_call(cl->c, k);
    note("op: call %d returned %s", k, appmsg_errname(rc));
    CHECK(H.calls[k].kind != K_BAD_UTF8 || rc == -EINVAL, "a value that is no UTF-8: %s",
          appmsg_errname(rc));
    return;
  }
  begin_expect();
  int rcs[3];
  int n = m_call(cl, k, rcs);
  int rc = do_call(cl->c, k);
  note("op: call %d (kind %d, rid %s, timeout %u, %zu bytes, action %d) returned %s", k,
       H.calls[k].kind, H.calls[k].rid_given ? H.calls[k].rid_given : "-", H.calls[k].timeout_ms,
       H.calls[k].len, H.calls[k].action, appmsg_errname(rc));
  int ok = 0;
  for (int i = 0; i < n; i++)
    ok |= rc == rcs[i];
  CHECK(ok, "call %d returned %s, the model says %s", k, appmsg_errname(rc),
        appmsg_errname(rcs[0]));
  end_expect("call");
}

static void op_run(void) {
  note("op: run once at %llu", (unsigned long long)now_ms);
  if (H.chaos) {
    H.expecting = 1;
    H.lib++;
    int rc = appmsg_loop_run_once(H.loop, 0);
    H.lib--;
    H.expecting = 0;
    CHECK(rc >= 0, "run_once: %d", rc);
    struct client *cl = cur();
    if (cl && cl->freeing) { /* freed from a callback */
      chaos_all_done(H.cur);
      cl->c = NULL;
      H.cur = -1;
    }
    /* A call's timeout is not lost: out of memory or not, a call whose time is up has had its
     * callback once the loop has run at that time. */
    for (int k = 0; k < H.ncalls; k++) {
      struct call *x = &H.calls[k];
      CHECK(!x->accepted || x->done || !x->due || x->due > now_ms,
            "call %d: its timeout ended at %llu, the loop ran at %llu, no callback", k,
            (unsigned long long)x->due, (unsigned long long)now_ms);
    }
    return;
  }
  begin_expect();
  m_run_once();
  H.expecting = 1;
  int rc = appmsg_loop_run_once(H.loop, 0);
  H.expecting = 0;
  CHECK(rc >= 0, "run_once: %d", rc);
  end_expect("run_once");
  settle_clients();
  init_cdecs();
}

static void op_advance(void) {
  static const uint32_t adv[] = {1,   2,   5,   10,   29,   30,   31,   50,   99,    100,
                                 101, 500, 999, 1000, 1001, 1999, 2000, 5000, 10000, 10001};
  uint64_t t = now_ms + adv[take(20)];
  struct client *cl = cur();
  if (cl && cl->live && cl->retry && t >= cl->rlo && t < cl->rhi)
    t = cl->rhi; /* never inside the window: each iteration knows whether it came */
  note("op: clock %llu -> %llu", (unsigned long long)now_ms, (unsigned long long)t);
  now_ms = t;
}

static void op_free(void) {
  struct client *cl = cur();
  if (cl == NULL)
    return;
  note("op: free the client");
  if (H.chaos) {
    cl->freeing = 1;
    H.expecting = 1;
    H.lib++;
    appmsg_client_free(cl->c);
    H.lib--;
    H.expecting = 0;
    chaos_all_done(H.cur);
    cl->c = NULL;
    H.cur = -1;
    return;
  }
  begin_expect();
  m_free(cl);
  H.expecting = 1;
  appmsg_client_free(cl->c);
  H.expecting = 0;
  end_expect("free");
  cl->c = NULL;
  H.cur = -1;
}

/* The oldest unanswered request (or the chosen one) gets a reply: whole, or its first piece. */
static void op_reply(int pick) {
  unsigned kind = take(16), how = take(8), which = pick ? take(8) : 0, bigsel = take(4);
  struct conn *mc = peer_cur();
  if (mc == NULL || mc->poisoned || mc->nunans == 0)
    return;
  peer_write(mc, mc->olen); /* what is in progress goes first */
  int i = (int)(which % (unsigned)mc->nunans);
  int k = mc->unans[i];
  char r[48] = "";
  if (mc->unrid) { /* (allocation failures: the request-id the request carried) */
    memcpy(r, mc->unrid[i], sizeof r);
    memmove(mc->unrid + i, mc->unrid + i + 1, (size_t)(mc->nunans - i - 1) * sizeof mc->unrid[0]);
  }
  memmove(mc->unans + i, mc->unans + i + 1, (size_t)(mc->nunans - i - 1) * sizeof mc->unans[0]);
  mc->nunans--;
  int u = new_unit(mc, 4400);
  if (u < 0)
    return;
  H.units[u].call = k;
  static const size_t bigs[] = {40, 250, 1000, 2000};
  if (k < 0) { /* (allocation failures: no model) */
    build_reply(mc, u, kind > 10 ? 0 : (int)kind, u, r[0] ? r : NULL, strlen(r), bigs[bigsel]);
  } else {
    struct call *x = &H.calls[k];
    build_reply(mc, u, kind > 10 ? 0 : (int)kind, k, x->has_rid ? x->rid : NULL, x->rid_len,
                bigs[bigsel]);
  }
  size_t end = mc->olen, start = H.units[u].start;
  if (how >= 5 && end - start > 1) { /* split: a first piece now */
    size_t cut = how == 5 ? 1 : how == 6 ? 2 + (end - start) / 3 : end - start - 1;
    end = start + cut;
  }
  note("op: server replies to call %d (kind %u) on conn %zu: %zu of %zu bytes", k, kind,
       (size_t)(mc - H.conns), end - start, mc->olen - start);
  peer_write(mc, end);
}

/* The next piece of a reply in progress. */
static void op_piece(void) {
  unsigned how = take(4);
  struct conn *mc = peer_cur();
  if (mc == NULL || mc->written >= mc->olen)
    return;
  size_t left = mc->olen - mc->written;
  size_t n = how == 0 ? 1 : how == 1 ? (left + 1) / 2 : left;
  note("op: server writes %zu more bytes on conn %zu", n, (size_t)(mc - H.conns));
  peer_write(mc, mc->written + n);
}

/* (Allocation failures) which allocation of the library fails next: one, every n-th, or none. */
static void op_fail(void) {
  unsigned how = take(4), n = take(64);
  H.fail_at = how == 0 ? H.allocs + 1 + n : 0;
  H.fail_every = how == 1 ? 2 + n % 16 : 0;
  note("op: allocation %llu fails, and every %u-th", (unsigned long long)H.fail_at, H.fail_every);
}

/* A reply nobody asked for. */
static void op_unsolicited(void) {
  unsigned kind = take(11), r = take(4);
  struct conn *mc = peer_cur();
  if (mc == NULL || mc->poisoned)
    return;
  peer_write(mc, mc->olen);
  int u = new_unit(mc, 400);
  if (u < 0)
    return;
  static const char *const rr[] = {NULL, "\"zz\"", "999", "1"};
  build_reply(mc, u, (int)kind, 9000 + u, rr[r], rr[r] ? strlen(rr[r]) : 0, 40);
  note("op: server sends a reply nobody asked for (kind %u, request-id %s)", kind,
       rr[r] ? rr[r] : "-");
  peer_write(mc, mc->olen);
}

/* Bytes that are no frame: nothing more is sent on that connection. */
static void op_garbage(void) {
  unsigned kind = take(8);
  struct conn *mc = peer_cur();
  if (mc == NULL || mc->poisoned)
    return;
  peer_write(mc, mc->olen);
  /* Raw bytes, or (framed) a header text preceded by its true length. */
  static const struct {
    int framed;
    const char *b;
    size_t n;
  } g[] = {
#define G(f, s) {f, s, sizeof(s) - 1}
      G(0, "\0\0"),
      G(1, "hello"),
      G(1, "[]"),
      G(1, "{\"byteorder\": \"little\"}"),
      G(0, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      G(1, "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", "
           "\"content-length\": 99999999}"),
      G(1, "\"\xff\""),
      G(1, "{\"byteorder\": \"little\", \"content-type\": \"a\", \"content-encoding\": \"b\", "
           "\"content-length\": -1}"),
#undef G
  };
  size_t n = g[kind].n + (g[kind].framed ? 2 : 0);
  if (mc->olen + n > MAX_OUT) {
    H.full = 1;
    return;
  }
  peer_room(mc, n);
  if (g[kind].framed) {
    mc->out[mc->olen++] = (unsigned char)(g[kind].n >> 8);
    mc->out[mc->olen++] = (unsigned char)(g[kind].n & 0xff);
  }
  memcpy(mc->out + mc->olen, g[kind].b, g[kind].n);
  mc->olen += g[kind].n;
  mc->poisoned = 1;
  note("op: server sends garbage %u on conn %zu", kind, (size_t)(mc - H.conns));
  peer_write(mc, mc->olen);
}

static void op_peer_close(void) {
  struct conn *mc = peer_cur();
  if (mc == NULL)
    return;
  note("op: server closes conn %zu (%zu of %zu bytes written)", (size_t)(mc - H.conns), mc->written,
       mc->olen);
  int unread = H.unread;
  H.unread = 0; /* (what was written is read before the close) */
  peer_drain(mc);
  pump(); /* (checks what was read) */
  H.unread = unread;
  if (mc->pfd >= 0)
    peer_close(mc);
}

static void op_listen(int on) {
  if (on == 2) {
    if (H.lfd < 0)
      return;
    note("op: server closes its listener without accepting what waits");
    close(H.lfd);
    H.lfd = -1;
    for (int i = 0; i < H.nconns; i++)
      if (!H.conns[i].accepted && !H.conns[i].reset) {
        H.conns[i].reset = 1;
        H.conns[i].peer_closed = 1;
      }
    return;
  }
  if (on == 3 && H.chaos) {
    H.unread = !H.unread;
    note("op: server %s reading", H.unread ? "stops" : "resumes");
    return;
  }
  if (on == 3) {
    H.accepting = !H.accepting;
    note("op: server %s accepting", H.accepting ? "resumes" : "stops");
    return;
  }
  if (on) {
    note("op: server listens");
    listen_start();
  } else if (H.lfd >= 0) {
    note("op: server stops listening");
    H.accepting = 1;
    pump(); /* what is in the backlog is accepted first */
    close(H.lfd);
    H.lfd = -1;
  }
}

/* ---- the run ------------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  verbose = getenv("FUZZ_CLIENT_VERBOSE") != NULL;
  appmsg__set_clock(fake_ns);
  appmsg_set_allocator(&failing);
  return 0;
}

static void teardown(void) {
  struct client *cl = cur();
  if (cl)
    op_free();
  H.unread = 0;
  pump();
  for (int i = 0; i < H.ncalls && H.chaos; i++) /* (the server has read all there is) */
    CHECK(H.calls[i].claim != 1 || H.calls[i].received ||
              request_call(H.calls[i].want_ctype, H.calls[i].content, H.calls[i].len) != i,
          "call %d: its callback said it was written; the server never got it whole", i);
  for (int i = 0; i < H.ncalls; i++)
    CHECK(H.chaos ? !H.calls[i].accepted || H.calls[i].done
                  : H.calls[i].where == W_REJECTED || H.calls[i].done,
          "call %d never had its callback (model: %d)", i, H.calls[i].where);
  for (int i = 0; i < H.nconns; i++) {
    struct conn *mc = &H.conns[i];
    if (mc->pfd >= 0)
      close(mc->pfd);
    appmsg_decoder_cleanup(&mc->pdec);
    appmsg_decoder_cleanup(&mc->cdec);
    free(mc->out);
    free(mc->unrid);
  }
  if (H.lfd >= 0)
    close(H.lfd);
  appmsg_loop_free(H.loop);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned runs;
  in_p = data;
  in_n = size;
  in_off = 0;
  memset(&H, 0, offsetof(__typeof__(H), calls));
  H.ncalls = H.nconns = H.nunits = H.nclients = 0;
  H.nev = H.pev = 0;
  H.expecting = H.in_call = H.amb_retry = H.full = 0;
  H.cur = -1;
  H.lfd = -1;
  H.accepting = 1;
  now_ms = 1000000;
  snprintf(H.name, sizeof H.name, "appmsg-fuzz-client-%d-%u", (int)getpid(), runs++);
  snprintf(H.host, sizeof H.host, "unix:@%s", H.name);
  unsigned setup = take(256);
  H.chaos = (setup & 0x18) == 0x18; /* a quarter of the inputs */
  H.small_buf = H.chaos && (setup & 0x20);
  H.unread = 0;
  H.allocs = H.fail_at = 0;
  H.fail_every = 0;
  if (H.chaos)
    op_fail();
  CHECK(appmsg_loop_new(&H.loop, setup & 1 ? APPMSG_LOOP_POLL : APPMSG_LOOP_EPOLL) == 0, "loop");
  if ((setup & 6) != 6)
    listen_start();
  op_new_client();
  init_cdecs();
  pump();
  check_client();
  while (in_off < in_n && !H.full) {
    unsigned op = take(32);
    if (op < 5)
      op_call();
    else if (op < 11)
      op_run();
    else if (op < 14)
      op_reply(0);
    else if (op < 15)
      op_reply(1);
    else if (op < 17)
      op_piece();
    else if (op < 20)
      op_advance();
    else if (op < 21 && H.chaos)
      op_fail();
    else if (op < 21)
      op_unsolicited();
    else if (op < 22)
      op_garbage();
    else if (op < 23)
      op_peer_close();
    else if (op < 24)
      op_listen(0);
    else if (op < 25)
      op_listen(1);
    else if (op < 26)
      op_free();
    else if (op < 27)
      op_new_client();
    else if (op < 30) {
      op_advance();
      op_run();
    } else if (op < 31) {
      op_listen(2);
    } else {
      op_listen(3);
    }
    init_cdecs();
    pump();
    check_client();
  }
  teardown();
  return 0;
}
