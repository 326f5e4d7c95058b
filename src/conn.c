/*
 * The framed connection (see include/appmsg/conn.h).
 *
 * Lifecycle.  Nothing here frees a connection while anyone may still hold
 * it.  The calls of conn.h only record what they want - bytes queued, a
 * close asked for, an abort - and queue the connection's deferred node on
 * its loop (touch()); the loop runs settle() at the end of the iteration,
 * when no callback is on the stack: it writes what is queued, moves a
 * close along, sets the interest and the timer, and for a connection that
 * ended runs the close hook and on_close, once, and frees it (finish()).
 * Readiness (on_io) and the timer (on_timer) read and decide, then settle
 * at once: the loop calls them directly, so nothing else is on the stack
 * there either.  So every call is safe from every callback and from
 * outside them all, with no count of callbacks in progress: a connection
 * marked dead stays allocated, and the code after each callback only
 * looks at its flags.
 *
 * One timer per connection, re-armed lazily: reads only record the time;
 * the timer, when it fires, works out which deadline applies now (linger,
 * output stalled, frame stalled, idle) and either acts or sleeps again
 * until the remaining time is up.  A change to a stricter state (a frame
 * starts, output queues) pulls the timer in if it was set for later.
 *
 * Bytes cross the socket through the transport calls below (tp_read,
 * tp_write): the socket itself, or TLS (tls.c).  Under TLS a read may have
 * to wait for the socket to be writable and a write for it to be
 * readable, so each side keeps the readiness it waits for (rd_want,
 * wr_want); the framing above does not know which transport it has.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/conn.h"
#include "appmsg/net.h"
#include "appmsg/tls.h"
#include "codec_internal.h"
#include "conn_internal.h"
#include "loop_internal.h"
#include "platform.h"
#include "tls_internal.h"
#include "util.h"

#define READ_CHUNK 65536
#define LINGER_MS 2000 /* how long a closing connection waits for the peer's EOF */
#define TLS_ROUNDS 4   /* READ_CHUNKs read per event while TLS holds buffered records */

static _Thread_local unsigned char rbuf[READ_CHUNK];

/* Input kept while reading is paused (rare: its length lives with it). */
struct stash {
  size_t len;
  unsigned char data[];
};

/* A framed connection.  Nothing outside this file looks inside. */
struct appmsg_conn {
  struct appmsg_decoder dec;               /* what arrives */
  struct appmsg_encoder enc;               /* what leaves */
  struct appmsg_timer timer;               /* the one timer (see above) */
  struct appmsg_loop *loop;                /* the loop it runs on */
  const struct appmsg_conn_opts *opts;     /* shared options (caller's) */
  const struct appmsg_conn_callbacks *cbs; /* shared callbacks (caller's) */
  void *ud;                                /* the caller's pointer */
  appmsg_conn_hook_fn hook;                /* the owner's close hook, or NULL */
  void *hook_arg;                          /* its argument */
  appmsg__conn_written_fn written;         /* the owner's hook for an emptied output, or NULL */
  struct appmsg__tls_conn *tls;            /* TLS under the framing; NULL: plaintext */
  uint64_t last_rx;                        /* loop time of the last byte received (handshake:
                                              when it started) */
  uint64_t last_tx;                        /* loop time output last moved (or was queued) */
  uint64_t timer_due;                      /* when the timer is set to fire */
  uint64_t linger_until;                   /* end of the closing linger */
  struct stash *stash;                     /* input read but not fed: reading was paused */
  size_t dropped;                          /* output dropped unsent by a TLS failure */
  appmsg_socket_t fd;                      /* the socket */
  int reason;                              /* why it is closing (0: clean) */
  uint32_t peer_scope;                     /* the peer's IPv6 scope id */
  uint16_t peer_family;                    /* AF_INET, AF_INET6, AF_UNIX; 0 unknown */
  uint16_t peer_port;                      /* network order */
  unsigned char peer_addr[16];             /* kept so a vanished peer can still be named */
  struct appmsg__deferred work;            /* settle(), queued by touch() */
  struct appmsg__conn_link link;           /* in its owner's list */
  unsigned holds;                          /* replies the owner still owes (appmsg_conn_hold) */
  unsigned connecting : 1;                 /* a connect is in progress */
  unsigned eof : 1;                        /* the peer finished sending */
  unsigned close_req : 1;                  /* no more messages; close once holds are 0 */
  unsigned closing : 1;                    /* ...and they are: flush, then close */
  unsigned paused : 1;                     /* the owner stopped reading */
  unsigned shut : 1;                       /* our write side is shut down */
  unsigned dead : 1;                       /* ended: finished at the end of the iteration */
  unsigned finishing : 1;                  /* finish() is running: the hook, then on_close */
  unsigned watched : 1;                    /* the fd is on the loop */
  unsigned parked : 1;                     /* a hang-up or error came while not reading */
  unsigned drain_probe : 1;                /* a drain began: look once whether input waits */
  unsigned errored : 1;                    /* on_error was called (it is called once) */
  unsigned read_on : 1;                    /* it read when last settled (see settle()) */
  unsigned when_idle : 1;                  /* close once quiet: nothing to read, nothing owed */
  unsigned quiet : 1;                      /* the last read found nothing to read */
  unsigned handshaking : 1;                /* a TLS handshake is in progress */
  unsigned outgoing : 1;                   /* the TLS client side (on_connect after handshake) */
  unsigned notify_wait : 1;                /* close_notify waits for wr_want */
  unsigned all_written : 1;                /* the output emptied: the written hook is owed */
  unsigned rd_want : 2;                    /* readiness a read (or handshake) waits for */
  unsigned wr_want : 2;                    /* readiness a write waits for */
};

void appmsg_conn_opts_default(struct appmsg_conn_opts *o) {
  memset(o, 0, sizeof *o);
  appmsg_limits_default(&o->limits);
  o->idle_timeout_ms = 300000;
  o->frame_timeout_ms = 30000;
  o->read_pause = 256 * 1024;
  o->max_output = 16 * 1024 * 1024;
  o->handshake_timeout_ms = 10000;
}

static uint64_t now_ms(const struct appmsg_conn *c) {
  return appmsg_loop_now(c->loop);
}

/* Keeps the peer's address in 24 bytes, to name it even after it left. */
static void remember_peer(struct appmsg_conn *c, const struct sockaddr *sa, socklen_t len) {
  c->peer_family = 0;
  if (sa == NULL || (size_t)len < sizeof sa->sa_family)
    return;
  if (sa->sa_family == AF_INET && (size_t)len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    memcpy(c->peer_addr, &in->sin_addr, 4);
    c->peer_port = in->sin_port;
  } else if (sa->sa_family == AF_INET6 && (size_t)len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    memcpy(c->peer_addr, &in6->sin6_addr, 16);
    c->peer_port = in6->sin6_port;
    c->peer_scope = in6->sin6_scope_id;
  } else if (sa->sa_family != AF_UNIX) {
    return;
  }
  c->peer_family = sa->sa_family;
}

static void lookup_peer(struct appmsg_conn *c) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0)
    remember_peer(c, (struct sockaddr *)&ss, len);
}

/* Drops what is queued for sending (the end, or a TLS failure). */
static void drop_output(struct appmsg_conn *c) {
  if (c->opts->counters)
    appmsg__count(&c->opts->counters->out_queued, -(uint64_t)appmsg_encoder_pending(&c->enc));
  appmsg_encoder_cleanup(&c->enc);
  appmsg_encoder_init(&c->enc);
}

struct appmsg__conn_link *appmsg__conn_link(struct appmsg_conn *c) {
  return &c->link;
}

/* Queues settle() for the end of the iteration (once; not while finishing). */
static void touch(struct appmsg_conn *c) {
  if (!c->finishing)
    appmsg__loop_defer(c->loop, &c->work);
}

static void stop_watching(struct appmsg_conn *c) {
  if (c->watched) {
    appmsg_loop_unwatch(c->loop, c->fd);
    c->watched = 0;
  }
}

/* Gives the socket and the TLS state back: off the loop, closed (fd APPMSG_INVALID_SOCKET). */
static void release_socket(struct appmsg_conn *c) {
  stop_watching(c);
  appmsg__tls_conn_free(c->tls);
  c->tls = NULL;
  appmsg__sock_close(c->fd);
  c->fd = APPMSG_INVALID_SOCKET;
}

/* The end of every connection, from settle(): the close hook and
 * on_close run once, then everything is freed.  Calls made from them on c
 * find it dead and do nothing (touch() too). */
static void finish(struct appmsg_conn *c) {
  c->finishing = 1;
  appmsg__loop_undefer(c->loop, &c->work);
  appmsg_timer_stop(c->loop, &c->timer);
  stop_watching(c);
  if (c->hook)
    c->hook(c, c->reason, c->hook_arg);
  if (c->cbs->on_close)
    c->cbs->on_close(c, c->reason, c->ud);
  appmsg_timer_stop(c->loop, &c->timer); /* (in case on_close's calls armed it) */
  release_socket(c);
  appmsg__free(c->stash);
  appmsg_decoder_cleanup(&c->dec);
  drop_output(c);
  appmsg__free(c);
}

void appmsg_conn_abort(struct appmsg_conn *c, int reason) {
  if (c->dead)
    return;
  c->dead = 1;
  if (!c->reason)
    c->reason = reason;
  /* No more readiness or timeouts, and the descriptor goes now - a
   * process short of descriptors gets it back for the next accept in this
   * same iteration.  The loop finishes the rest. */
  appmsg_timer_stop(c->loop, &c->timer);
  release_socket(c);
  touch(c);
}

static int reading(const struct appmsg_conn *c);

/* The earliest deadline the current state calls for, 0 if none.  The
 * frame and idle deadlines run only while the connection reads: a frame
 * (or a peer) that waits because we do not read is not stalled, and the
 * time starts again when reading does (settle()). */
static uint64_t deadline(const struct appmsg_conn *c) {
  const struct appmsg_conn_opts *o = c->opts;
  if (c->shut)
    return c->linger_until;
  if (c->connecting)
    return o->frame_timeout_ms ? c->last_tx + o->frame_timeout_ms : 0;
  if (c->handshaking)
    return o->handshake_timeout_ms ? c->last_rx + o->handshake_timeout_ms : 0;
  uint64_t d = 0;
  if (appmsg_encoder_pending(&c->enc) > 0 && o->frame_timeout_ms)
    d = c->last_tx + o->frame_timeout_ms;
  uint64_t r = 0;
  if (!reading(c))
    r = 0;
  else if (appmsg_decoder_in_frame(&c->dec) && o->frame_timeout_ms)
    r = c->last_rx + o->frame_timeout_ms;
  else if (c->holds == 0 && o->idle_timeout_ms)
    r = c->last_rx + o->idle_timeout_ms;
  if (r && (!d || r < d))
    d = r;
  return d;
}

/* Pulls the timer in when the state asks for an earlier deadline.
 * Returns 0, or -ENOMEM when the loop's timer heap cannot grow (the
 * connection cannot be bounded in time, so the caller ends it). */
static int rearm(struct appmsg_conn *c) {
  uint64_t due = deadline(c);
  if (!due)
    return 0;
  if (appmsg_timer_active(&c->timer) && c->timer_due <= due)
    return 0;
  uint64_t now = now_ms(c);
  c->timer_due = due;
  return appmsg_timer_start(c->loop, &c->timer, due > now ? due - now : 0, 0);
}

static void on_io(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events, void *ud);

/* Whether the connection reads now: not once the peer finished or no more
 * messages are wanted (but a lingering one reads on to see the EOF), nor
 * while the owner paused reading, stashed input waits, or too much output
 * waits for a peer that does not read it. */
static int reading(const struct appmsg_conn *c) {
  if (c->shut)
    return 1;
  if (c->eof || c->close_req || c->paused || c->stash)
    return 0;
  return !(c->opts->read_pause && appmsg_encoder_pending(&c->enc) > c->opts->read_pause);
}

/* Sets the interest the state calls for.  A socket that reported a
 * hang-up or an error while it was not being read is taken off the loop
 * while nothing is wanted of it (epoll and poll report those whatever the
 * interest, so it would wake the loop on every iteration); it comes back
 * when reading resumes or output waits, and the hang-up is met then, in
 * order.  Returns 0, or the loop's error. */
static int update_interest(struct appmsg_conn *c) {
  unsigned ev = 0;
  if (c->connecting) {
    ev = APPMSG_EV_WRITE;
  } else if (c->handshaking) {
    ev = c->rd_want;
  } else {
    if (reading(c))
      ev |= c->rd_want;
    if (appmsg_encoder_pending(&c->enc) || c->notify_wait)
      ev |= c->wr_want;
  }
  if (c->parked && ev == 0) {
    stop_watching(c);
    return 0;
  }
  if (c->watched)
    return appmsg_loop_modify(c->loop, c->fd, ev);
  int rc = appmsg_loop_watch(c->loop, c->fd, ev, on_io, c);
  c->watched = rc == 0;
  return rc;
}

/* ---- the transport ------------------------------------------------------------------------ */

/* Bytes in: > 0, 0 at the end of the stream, -EAGAIN (wait for rd_want), or a failure. */
static long tp_read(struct appmsg_conn *c, void *buf, size_t len) {
  if (!c->tls)
    return appmsg_recv(c->fd, buf, len);
  unsigned want = APPMSG_EV_READ;
  long n = appmsg__tls_read(c->tls, buf, len, &want);
  c->rd_want = n == -EAGAIN ? want : APPMSG_EV_READ;
  return n;
}

/* Bytes out: > 0, -EAGAIN (wait for wr_want; under TLS, retry with the same bytes), or a failure. */
static long tp_write(struct appmsg_conn *c, const void *buf, size_t len) {
  if (!c->tls)
    return appmsg_send(c->fd, buf, len);
  unsigned want = APPMSG_EV_WRITE;
  long n = appmsg__tls_write(c->tls, buf, len, &want);
  c->wr_want = n == -EAGAIN ? want : APPMSG_EV_WRITE;
  return n;
}

/* Leaves TLS for the raw socket: after close_notify, or after a failure
 * (the lingering close then reads and discards raw bytes). */
static void drop_tls(struct appmsg_conn *c) {
  appmsg__tls_conn_free(c->tls);
  c->tls = NULL;
  c->handshaking = 0;
  c->notify_wait = 0;
  c->rd_want = APPMSG_EV_READ;
  c->wr_want = APPMSG_EV_WRITE;
}

/* Marks n queued bytes as sent; a buffer that empties goes to the loop's
 * spare (internal.h), an idle connection holds none.  Not inlined: queued()
 * calls it on a rare path and stays small. */
__attribute__((noinline)) static void output_sent(struct appmsg_conn *c, size_t n) {
  size_t cap;
  void *emptied = appmsg__encoder_advance_keep(&c->enc, n, &cap);
  if (emptied)
    appmsg__loop_spare_give(c->loop, emptied, cap);
}

/* Writes what the transport takes.  Returns 0, or a negative code when the
 * connection broke (the caller aborts). */
static int flush(struct appmsg_conn *c) {
  if (c->connecting || c->handshaking)
    return 0; /* queued output waits for the connect and the handshake */
  while (appmsg_encoder_pending(&c->enc) > 0) {
    size_t n;
    const void *p = appmsg_encoder_peek(&c->enc, &n);
    long w = tp_write(c, p, n);
    if (w == -EAGAIN)
      return 0;
    if (w < 0)
      return (int)w;
    output_sent(c, (size_t)w);
    if (appmsg_encoder_pending(&c->enc) == 0)
      c->all_written = 1;
    c->last_tx = now_ms(c);
    if (c->opts->counters) {
      appmsg__count(&c->opts->counters->bytes_out, (uint64_t)w);
      appmsg__count(&c->opts->counters->out_queued, -(uint64_t)w);
    }
  }
  return 0;
}

/* Moves a closing connection along: once the output is out, shut the
 * write side and linger for the peer's EOF (so our unread input cannot
 * turn into a reset that destroys the last reply). */
static void progress_close(struct appmsg_conn *c) {
  if (c->dead || !c->closing || c->connecting || appmsg_encoder_pending(&c->enc) > 0)
    return;
  if (!c->shut) {
    if (c->tls) {
      unsigned want = APPMSG_EV_WRITE;
      if (!c->handshaking && appmsg__tls_shutdown(c->tls, &want) == -EAGAIN) {
        c->wr_want = want; /* close_notify waits for room */
        c->notify_wait = 1;
        return;
      }
      drop_tls(c);
    }
    appmsg__sock_shutdown_write(c->fd);
    c->shut = 1;
    c->linger_until = now_ms(c) + LINGER_MS;
  }
  if (c->eof)
    appmsg_conn_abort(c, 0); /* nothing more can come or go: done */
}

static void feed_stash(struct appmsg_conn *c);

/* Begins a graceful close that will report reason: no more messages are
 * read; once the owner's holds are released, the output is flushed and the
 * connection closes. */
static void begin_close(struct appmsg_conn *c, int reason) {
  if (!c->reason)
    c->reason = reason;
  c->close_req = 1;
  if (c->holds == 0)
    c->closing = 1;
}

static void on_readable(struct appmsg_conn *c);

static void failed(struct appmsg_conn *c, int err);

/* The deferred work of the connection, at the end of the iteration: input
 * stashed while reading was paused, records TLS holds, a drain's first
 * look, then output, the close, the interest and the timer - or, for a
 * connection that ended, finish().  Callbacks it runs may touch() c
 * again; the loop then runs this once more. */
static void settle(struct appmsg__deferred *d) {
  struct appmsg_conn *c = (struct appmsg_conn *)((char *)d - offsetof(struct appmsg_conn, work));
  if (!c->dead && c->stash && !c->paused)
    feed_stash(c);
  /* The drain's look waits until it can be made: a connect or a handshake
   * in progress, or reading paused, would read nothing now, and without
   * the look a connection with nothing more to send is never seen quiet. */
  if (!c->dead && c->drain_probe && !c->connecting && !c->handshaking && reading(c)) {
    c->drain_probe = 0; /* what has arrived is read and answered, or it is quiet already */
    on_readable(c);
  }
  /* Records OpenSSL took in while reading was paused: the socket will not say so. */
  if (!c->dead && c->tls && !c->handshaking && reading(c) && appmsg__tls_pending(c->tls))
    on_readable(c);
  if (!c->dead) {
    int rc = flush(c);
    if (rc < 0)
      failed(c, rc);
  }
  if (!c->dead && c->all_written) {
    /* Everything queued is written: the owner may queue what waited for that (touch() brings
     * it here again, in this iteration). */
    c->all_written = 0;
    if (c->written)
      c->written(c, c->ud);
  }
  if (!c->dead) {
    /* A drain ends a connection once it is quiet: every request that had
     * arrived is answered, no frame is half read, nothing more is waiting. */
    if (c->when_idle && !c->close_req && c->quiet && !c->stash && !appmsg_decoder_in_frame(&c->dec))
      begin_close(c, 0);
    progress_close(c);
  }
  if (!c->dead) {
    /* Reading again after a pause: the frame and idle clocks start now. */
    int r = reading(c);
    if (r && !c->read_on)
      c->last_rx = now_ms(c);
    c->read_on = r ? 1 : 0;
    int rc = update_interest(c);
    if (rc == 0)
      rc = rearm(c); /* -ENOMEM: it could not be bounded in time any more */
    if (rc < 0)
      appmsg_conn_abort(c, rc);
  }
  if (c->dead)
    finish(c);
}

/* settle() at once, from the loop's own callbacks (on_io, on_timer): no
 * callback of the library or the application is on the stack there
 * either, and a connection that ended gives its descriptor back before
 * the loop dispatches the next ready one (an accept short of descriptors
 * needs it). */
static void settle_now(struct appmsg_conn *c) {
  appmsg__loop_undefer(c->loop, &c->work);
  settle(&c->work);
}

/* A framing error, a stalled frame or a TLS failure: on_error hears the
 * first (only the first: the connection is closing from then on). */
static void protocol_error(struct appmsg_conn *c, int err, const char *reason, uint64_t off) {
  int first = !c->errored;
  c->errored = 1;
  if (first && c->cbs->on_error)
    c->cbs->on_error(c, err, reason, off, c->ud);
  begin_close(c, err);
}

/* Keeps input that arrived in the same read as a message after which the
 * owner paused reading (the read buffer is shared by every connection). */
static void stash(struct appmsg_conn *c, const unsigned char *p, size_t n) {
  struct stash *b = appmsg__malloc(offsetof(struct stash, data) + n);
  if (b == NULL) {
    appmsg_conn_abort(c, -ENOMEM);
    return;
  }
  b->len = n;
  memcpy(b->data, p, n);
  appmsg__free(c->stash);
  c->stash = b;
}

static void deliver(struct appmsg_conn *c, const unsigned char *p, size_t n);

/* Feeds stashed input once reading resumes (it may pause again). */
static void feed_stash(struct appmsg_conn *c) {
  struct stash *b = c->stash;
  c->stash = NULL;
  if (!c->close_req && !c->dead)
    deliver(c, b->data, b->len);
  appmsg__free(b);
}

static void deliver(struct appmsg_conn *c, const unsigned char *p, size_t n) {
  if (c->opts->raw) {
    if (c->cbs->on_data)
      c->cbs->on_data(c, p, n, c->ud);
    return;
  }
  for (size_t off = 0, used; off < n && !c->close_req && !c->dead; off += used) {
    enum appmsg_status st = appmsg_decoder_feed(&c->dec, p + off, n - off, &used);
    if (st == APPMSG_MESSAGE) {
      size_t len;
      const void *content = appmsg_decoder_content(&c->dec, &len);
      if (c->opts->counters)
        appmsg__count(&c->opts->counters->messages_in, 1);
      if (c->cbs->on_message)
        c->cbs->on_message(c, appmsg_decoder_header(&c->dec), content, len, c->ud);
      if (c->paused && off + used < n && !c->close_req && !c->dead) {
        stash(c, p + off + used, n - off - used); /* fed when reading resumes */
        return;
      }
    } else if (st == APPMSG_ERROR) {
      protocol_error(c, appmsg_decoder_error(&c->dec), appmsg_decoder_reason(&c->dec),
                     appmsg_decoder_error_offset(&c->dec));
    }
  }
}

/* A TLS failure (code and sentence from tls.c, or a handshake timeout):
 * on_error hears it, then the connection closes.  What is queued is
 * dropped and nothing more can be sent - it would leave in the clear
 * (PROTOCOL.md 8: a plaintext frame on a TLS port gets no reply either);
 * the TLS state goes and the lingering close goes on on the raw socket,
 * so that an alert OpenSSL wrote is read by the peer, not reset away.
 * Every failure is told, whatever state the connection was in. */
static void tls_failed(struct appmsg_conn *c, int err, const char *why) {
  int in_handshake = c->handshaking;
  char reason[512];
  snprintf(reason, sizeof reason, "%s", why);
  drop_tls(c);
  c->dropped += appmsg_encoder_pending(&c->enc); /* never sent (appmsg__conn_unsent()) */
  drop_output(c);
  c->close_req = 1; /* appmsg_conn_send() refuses from now on, replies owed or not */
  c->closing = 1;
  protocol_error(c, err, reason, c->dec.offset);
  if (in_handshake && c->outgoing && c->cbs->on_connect && !c->dead)
    c->cbs->on_connect(c, err, c->ud);
}

/* A transport failure: TLS's own codes go through tls_failed(), anything
 * else (a reset, a broken pipe) ends the connection at once. */
static void failed(struct appmsg_conn *c, int err) {
  if (c->tls && err < APPMSG_E_BASE)
    tls_failed(c, err, appmsg__tls_reason());
  else
    appmsg_conn_abort(c, err);
}

/* What a read returned: bytes to deliver, the end of the stream, or a failure. */
static void got(struct appmsg_conn *c, long n) {
  if (n < 0) {
    failed(c, (int)n);
    return;
  }
  c->last_rx = now_ms(c);
  if (n > 0 && c->opts->counters)
    appmsg__count(&c->opts->counters->bytes_in, (uint64_t)n);
  if (n > 0) {
    if (!c->close_req && !c->eof)
      deliver(c, rbuf, (size_t)n);
    return; /* a closing connection discards what still arrives */
  }
  /* End of stream. */
  c->eof = 1;
  if (c->shut) {
    appmsg_conn_abort(c, 0);
    return;
  }
  if (c->close_req)
    return;
  int rc = c->opts->raw ? 0 : appmsg_decoder_finish(&c->dec);
  if (rc) {
    protocol_error(c, rc, appmsg_decoder_reason(&c->dec), appmsg_decoder_error_offset(&c->dec));
    return;
  }
  if (c->cbs->on_eof)
    c->cbs->on_eof(c, c->ud);
  begin_close(c, 0); /* the replies still owed (holds) are sent first */
}

/* Reads a chunk into rbuf.  Plain: one read.  TLS: records until rbuf is
 * full or OpenSSL has nothing buffered (the next record would need the
 * socket: it is read on its next readiness, which saves the read that
 * would only say EAGAIN).  Returns what tp_read does; when bytes were read
 * and then the stream ended or failed, that result is left in *after. */
static long read_chunk(struct appmsg_conn *c, long *after) {
  if (!c->tls)
    return tp_read(c, rbuf, sizeof rbuf);
  size_t n = 0;
  while (n < sizeof rbuf) {
    long r = tp_read(c, rbuf + n, sizeof rbuf - n);
    if (r <= 0) {
      if (n == 0)
        return r;
      if (r != -EAGAIN)
        *after = r;
      break;
    }
    n += (size_t)r;
    if (!c->tls || !appmsg__tls_pending(c->tls))
      break;
  }
  return (long)n;
}

static void on_readable(struct appmsg_conn *c) {
  /* Under TLS, records already buffered must be read now: the socket will
   * not report them.  A few chunks at most per event, for fairness; what
   * is left when reading pauses is read when it resumes (settle()). */
  for (int round = 0; round < TLS_ROUNDS; round++) {
    long after = -EAGAIN;
    long n = read_chunk(c, &after);
    c->quiet = n == -EAGAIN;
    if (n == -EAGAIN)
      return;
    got(c, n);
    if (after != -EAGAIN && !c->dead)
      got(c, after);
    if (c->dead || n <= 0)
      return;
    int buffered = c->tls && !c->handshaking && appmsg__tls_pending(c->tls);
    if (buffered && reading(c))
      continue;
    /* Draining: the peer is quiet when nothing more waits to be read - no
     * new readiness would come to say so. */
    size_t avail = 0; /* (set when the call succeeds; LTO cannot tell) */
    if (c->when_idle && !buffered && appmsg__sock_pending(c->fd, &avail) == 0 && avail == 0)
      c->quiet = 1;
    return;
  }
}

/* Drives the TLS handshake one step: on its end, a client is told (once
 * its server is verified) and what arrived with the last flight is read. */
static void handshake(struct appmsg_conn *c) {
  unsigned want = APPMSG_EV_READ;
  int rc = appmsg__tls_handshake(c->tls, &want);
  if (rc == -EAGAIN) {
    c->rd_want = want;
    return;
  }
  if (rc == 1) { /* the peer left before it began: a plain end */
    c->eof = 1;
    appmsg_conn_abort(c, 0);
    return;
  }
  if (rc < 0) {
    if (rc < APPMSG_E_BASE) {
      tls_failed(c, rc, appmsg__tls_reason());
    } else {
      if (c->outgoing && c->cbs->on_connect)
        c->cbs->on_connect(c, rc, c->ud);
      appmsg_conn_abort(c, rc);
    }
    return;
  }
  c->handshaking = 0;
  c->rd_want = APPMSG_EV_READ;
  c->last_rx = c->last_tx = now_ms(c);
  if (c->outgoing && c->cbs->on_connect)
    c->cbs->on_connect(c, 0, c->ud);
  /* What came with the last flight is read now; a draining server looks
   * at once whether the client is quiet (a handshake is not a request). */
  if (!c->dead && c->tls && reading(c) && (c->when_idle || appmsg__tls_pending(c->tls)))
    on_readable(c);
}

static void on_connected(struct appmsg_conn *c) {
  int rc = appmsg_connect_result(c->fd);
  c->connecting = 0;
  if (rc == 0)
    lookup_peer(c);
  c->last_rx = c->last_tx = now_ms(c);
  if (rc == 0 && c->tls) {
    handshake(c); /* on_connect when it is done */
    return;
  }
  if (c->cbs->on_connect)
    c->cbs->on_connect(c, rc, c->ud);
  if (rc)
    appmsg_conn_abort(c, rc);
}

static void on_io(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)loop;
  (void)fd;
  struct appmsg_conn *c = ud;
  if (c->connecting) {
    on_connected(c);
  } else if (c->handshaking) {
    handshake(c);
  } else {
    if (events & c->wr_want) {
      int rc = flush(c);
      if (rc < 0)
        failed(c, rc);
    }
    if (!c->dead) {
      if (reading(c) && (events & (c->rd_want | APPMSG_EV_HUP | APPMSG_EV_ERROR)))
        on_readable(c); /* (a hang-up or an error is met by reading: EOF, or the error) */
      else if (events & (APPMSG_EV_HUP | APPMSG_EV_ERROR))
        c->parked = 1; /* met when reading resumes, after what came before it */
    }
  }
  settle_now(c);
}

static void on_timer(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct appmsg_conn *c = ud;
  uint64_t now = now_ms(c), due = deadline(c);
  if (due == 0 || due > now) {
    if (due) {
      c->timer_due = due;
      if (appmsg_timer_start(c->loop, &c->timer, due - now, 0) < 0)
        appmsg_conn_abort(c, -ENOMEM); /* cannot be bounded in time any more */
    }
    return;
  }
  if (c->shut) {
    appmsg_conn_abort(c, 0); /* lingered long enough */
  } else if (c->connecting) {
    c->connecting = 0;
    if (c->cbs->on_connect)
      c->cbs->on_connect(c, APPMSG_E_TIMEOUT, c->ud);
    appmsg_conn_abort(c, APPMSG_E_TIMEOUT);
  } else if (c->handshaking) {
    char why[96];
    snprintf(why, sizeof why, "the TLS handshake did not finish within %u ms",
             (unsigned)c->opts->handshake_timeout_ms);
    tls_failed(c, APPMSG_E_TIMEOUT, why);
  } else if (appmsg_encoder_pending(&c->enc) > 0 && c->last_tx + c->opts->frame_timeout_ms <= now) {
    appmsg_conn_abort(c, APPMSG_E_TIMEOUT); /* the peer does not read its replies */
  } else if (reading(c) && appmsg_decoder_in_frame(&c->dec)) {
    protocol_error(c, APPMSG_E_TIMEOUT, "the rest of the frame did not arrive in time",
                   c->dec.offset);
  } else if (reading(c) && c->holds == 0) {
    begin_close(c, APPMSG_E_TIMEOUT); /* idle */
  }
  settle_now(c);
}

static int make_conn(struct appmsg_conn **out, struct appmsg_loop *loop, appmsg_socket_t fd,
                     const struct appmsg_conn_opts *opts, const struct appmsg_conn_callbacks *cbs,
                     void *ud, int connecting, const char *tls_name) {
  struct appmsg_conn *c = appmsg__calloc(1, sizeof *c);
  int rc = c ? appmsg_set_nonblock(fd, 1) : -ENOMEM;
  if (rc == 0)
    rc = appmsg_decoder_init(&c->dec, &opts->limits);
  if (rc == 0 && opts->tls) {
    rc = appmsg__tls_conn_new(&c->tls, opts->tls, fd, tls_name);
    c->handshaking = 1;
    c->outgoing = !appmsg_tls_is_server(opts->tls);
  }
  /* A TLS client speaks first: its handshake starts once the socket is writable. */
  unsigned first = connecting || (c && c->outgoing) ? APPMSG_EV_WRITE : APPMSG_EV_READ;
  if (rc == 0)
    rc = appmsg_loop_watch(loop, fd, first, on_io, c);
  if (rc) {
    if (c)
      appmsg__tls_conn_free(c->tls);
    appmsg__free(c);
    appmsg__sock_close(fd);
    return rc;
  }
  /* A read waits for the socket to be readable - a TLS client's first
   * handshake step for it to be writable - never for the connect. */
  c->rd_want = c->outgoing ? first : APPMSG_EV_READ;
  c->wr_want = APPMSG_EV_WRITE;
  c->watched = 1;
  c->read_on = 1;
  appmsg__deferred_init(&c->work, settle);
  appmsg_set_nodelay(fd, 1);
  c->loop = loop;
  c->fd = fd;
  c->opts = opts;
  c->cbs = cbs;
  c->ud = ud;
  c->connecting = connecting ? 1 : 0;
  c->last_rx = c->last_tx = appmsg_loop_now(loop);
  appmsg_timer_init(&c->timer, on_timer, c);
  if (rearm(c) < 0) {
    appmsg_loop_unwatch(loop, fd);
    appmsg_decoder_cleanup(&c->dec);
    appmsg__tls_conn_free(c->tls);
    appmsg__free(c);
    appmsg__sock_close(fd);
    return -ENOMEM;
  }
  *out = c;
  return 0;
}

int appmsg__conn_new_accepted(struct appmsg_conn **c, struct appmsg_loop *loop, appmsg_socket_t fd,
                              const struct appmsg_conn_opts *opts,
                              const struct appmsg_conn_callbacks *cbs, void *ud,
                              const struct sockaddr *peer, unsigned peer_len) {
  int rc = make_conn(c, loop, fd, opts, cbs, ud, 0, NULL);
  if (rc == 0)
    remember_peer(*c, peer, peer_len);
  return rc;
}

int appmsg_conn_new(struct appmsg_conn **c, struct appmsg_loop *loop, appmsg_socket_t fd,
                    const struct appmsg_conn_opts *opts, const struct appmsg_conn_callbacks *cbs,
                    void *ud) {
  int rc = make_conn(c, loop, fd, opts, cbs, ud, 0, opts->tls_server_name);
  if (rc == 0)
    lookup_peer(*c);
  return rc;
}

int appmsg_conn_new_connecting(struct appmsg_conn **c, struct appmsg_loop *loop, appmsg_socket_t fd,
                               const struct appmsg_conn_opts *opts,
                               const struct appmsg_conn_callbacks *cbs, void *ud) {
  return make_conn(c, loop, fd, opts, cbs, ud, 1, opts->tls_server_name);
}

void *appmsg__conn_take_content(struct appmsg_conn *c, size_t *len) {
  return appmsg_decoder_take_content(&c->dec, len);
}

int appmsg_conn_connect(struct appmsg_conn **c, struct appmsg_loop *loop, const char *host,
                        const char *port, const struct appmsg_conn_opts *opts,
                        const struct appmsg_conn_callbacks *cbs, void *ud, char *err,
                        size_t errlen) {
  appmsg_socket_t fd;
  int pending;
  const char *name = opts->tls_server_name;
  if (name == NULL && host && !appmsg__is_unix(host))
    name = host;
  if (opts->tls && appmsg_tls_is_server(opts->tls)) {
    appmsg__errf(err, errlen, "an outgoing connection needs a TLS client context, not a server's");
    return -EINVAL;
  }
  int rc = appmsg_connect(host, port, &fd, &pending, err, errlen);
  if (rc)
    return rc;
  rc = make_conn(c, loop, fd, opts, cbs, ud, 1, name);
  if (rc == -EINVAL && opts->tls)
    appmsg__errf(err, errlen,
                 "a TLS connection to %s needs the server's name to verify "
                 "(appmsg_conn_opts.tls_server_name)",
                 host ? host : "?");
  else if (rc)
    appmsg__errf(err, errlen, "cannot set up the connection: %s", appmsg_strerror(rc));
  return rc;
}

/* Whether queuing more bytes breaks the output cap. */
static int over_cap(const struct appmsg_conn *c, size_t more) {
  size_t pending = appmsg_encoder_pending(&c->enc);
  return c->opts->max_output && pending > 0 && pending + more > c->opts->max_output;
}

/* Whether bytes may be queued: not once closing, and not beyond the cap
 * (which ends the connection: its peer does not read). */
static int may_queue(struct appmsg_conn *c, size_t len, size_t *before) {
  *before = appmsg_encoder_pending(&c->enc);
  if (c->dead || c->closing)
    return APPMSG_E_CLOSED;
  if (over_cap(c, len)) {
    appmsg_conn_abort(c, APPMSG_E_OUTPUT_FULL);
    return APPMSG_E_OUTPUT_FULL;
  }
  if (appmsg_encoder_pending(&c->enc) == 0) {
    c->last_tx = now_ms(c); /* the output-stall clock starts now */
    if (!appmsg__encoder_has_buffer(&c->enc)) {
      size_t cap;
      void *b = appmsg__loop_spare_take(c->loop, appmsg__encoder_hint(&c->enc), &cap);
      if (b)
        appmsg__encoder_adopt(&c->enc, b, cap);
    }
  }
  return 0;
}

/* Queued bytes are written at the end of the iteration, all of them
 * together (pipelined replies, and replies made from timers, batch
 * naturally). */
static int queued(struct appmsg_conn *c, int rc, size_t before) {
  /* Nothing was queued after all (a refused frame, an empty one): the
   * buffer may_queue() took goes back. */
  if (__builtin_expect(appmsg_encoder_pending(&c->enc) == 0, 0) &&
      appmsg__encoder_has_buffer(&c->enc))
    output_sent(c, 0);
  if (rc == 0) {
    if (c->opts->counters)
      appmsg__count(&c->opts->counters->out_queued, appmsg_encoder_pending(&c->enc) - before);
    touch(c);
  }
  return rc;
}

int appmsg_conn_send(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                     size_t len) {
  size_t before;
  int rc = may_queue(c, len, &before);
  return rc ? rc : queued(c, appmsg_encoder_push(&c->enc, h, content, len), before);
}

int appmsg__conn_send_prepared_ex(struct appmsg_conn *c, const struct appmsg_prepared *p,
                                  const char *extra, size_t extra_len, const void *content,
                                  size_t len) {
  size_t before;
  int rc = may_queue(c, len, &before);
  return rc ? rc
            : queued(c, appmsg__encoder_push_prepared(&c->enc, p, extra, extra_len, content, len),
                     before);
}

int appmsg_conn_send_raw(struct appmsg_conn *c, const void *data, size_t len) {
  size_t before;
  int rc = may_queue(c, len, &before);
  return rc ? rc : queued(c, appmsg_encoder_push_raw(&c->enc, data, len), before);
}

void appmsg_conn_close(struct appmsg_conn *c) {
  if (c->dead || c->close_req)
    return;
  begin_close(c, 0);
  touch(c);
}

void appmsg_conn_close_when_idle(struct appmsg_conn *c) {
  if (c->when_idle || c->dead)
    return;
  c->when_idle = 1;
  c->drain_probe = 1;
  touch(c);
}

appmsg_socket_t appmsg_conn_fd(const struct appmsg_conn *c) {
  return c->fd;
}

void *appmsg_conn_userdata(const struct appmsg_conn *c) {
  return c->ud;
}

void appmsg_conn_set_userdata(struct appmsg_conn *c, void *ud) {
  c->ud = ud;
}

size_t appmsg_conn_pending(const struct appmsg_conn *c) {
  return appmsg_encoder_pending(&c->enc);
}

size_t appmsg__conn_unsent(const struct appmsg_conn *c) {
  return appmsg_encoder_pending(&c->enc) + c->dropped;
}

const char *appmsg_conn_peer(const struct appmsg_conn *c) {
  static _Thread_local char buf[APPMSG_ADDRSTRLEN];
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len = 0;
  if (c->peer_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = c->peer_port;
    memcpy(&in->sin_addr, c->peer_addr, 4);
    len = sizeof *in;
  } else if (c->peer_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = c->peer_port;
    in6->sin6_scope_id = c->peer_scope;
    memcpy(&in6->sin6_addr, c->peer_addr, 16);
    len = sizeof *in6;
  } else if (c->peer_family == AF_UNIX) {
    return "unix:";
  }
  if (len == 0 || appmsg_addr_format((struct sockaddr *)&ss, len, buf, sizeof buf) < 0)
    return "?";
  return buf;
}

void appmsg_conn_hold(struct appmsg_conn *c) {
  c->holds++;
}

void appmsg_conn_release(struct appmsg_conn *c) {
  if (c->holds == 0)
    return;
  if (--c->holds == 0 && c->close_req)
    c->closing = 1;
  touch(c);
}

void appmsg_conn_set_reading(struct appmsg_conn *c, int on) {
  if (c->paused == !on)
    return;
  c->paused = !on;
  touch(c);
}

void appmsg__conn_unsend(struct appmsg_conn *c, size_t keep) {
  size_t n = appmsg_encoder_pending(&c->enc);
  if (keep >= n)
    return;
  if (c->opts->counters)
    appmsg__count(&c->opts->counters->out_queued, -(uint64_t)(n - keep));
  appmsg__encoder_truncate(&c->enc, keep);
}

void appmsg__conn_set_written_hook(struct appmsg_conn *c, appmsg__conn_written_fn fn) {
  c->written = fn;
}

void appmsg_conn_set_close_hook(struct appmsg_conn *c, appmsg_conn_hook_fn fn, void *arg) {
  c->hook = fn;
  c->hook_arg = arg;
}

int appmsg_conn_send_prepared(struct appmsg_conn *c, const struct appmsg_prepared *p,
                              const void *content, size_t len) {
  size_t before;
  int rc = may_queue(c, len, &before);
  return rc ? rc : queued(c, appmsg_encoder_push_prepared(&c->enc, p, content, len), before);
}

/* Replaces what is not well-formed UTF-8 (a reason built from peer bytes,
 * or cut short) with '?', so that a reply is always valid JSON text. */
static void utf8_sanitize(char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t bad = appmsg_utf8_check(s + i, n - i);
    if (bad == n - i)
      break;
    s[i + bad] = '?';
    i += bad + 1;
  }
}

size_t appmsg__error_body(const char *name, const char *reason, long long offset, char *out) {
  char sentence[APPMSG__ERROR_REASON_MAX];
  size_t tl = strlen(reason);
  /* "Error: " + the reason, ending with a full stop as the guide's texts do. */
  snprintf(sentence, sizeof sentence, "Error: %s%s", reason,
           tl && (reason[tl - 1] == '.' || reason[tl - 1] == '?') ? "" : ".");
  utf8_sanitize(sentence);
  size_t n = 0;
  memcpy(out, "{\"result\": ", 11);
  n += 11;
  /* Room for the worst case: every byte of the sentence quoted as \u00XX. */
  n += appmsg_json_quote(sentence, strlen(sentence), out + n, 6 * sizeof sentence + 2);
  if (offset >= 0)
    n += (size_t)sprintf(out + n, ", \"error\": \"%.64s\", \"offset\": %lld}", name, offset);
  else
    n += (size_t)sprintf(out + n, ", \"error\": \"%.64s\"}", name);
  return n;
}

int appmsg_conn_send_error(struct appmsg_conn *c, int err, const char *reason, long long offset) {
  char body[APPMSG__ERROR_BODY_MAX];
  size_t n =
      appmsg__error_body(appmsg_errname(err), reason ? reason : appmsg_strerror(err), offset, body);
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc = appmsg_header_set(&h, "text/json", "utf-8");
  if (rc == 0)
    rc = appmsg_conn_send(c, &h, body, n);
  appmsg_header_cleanup(&h);
  return rc;
}

int appmsg_conn_tls_info(const struct appmsg_conn *c, char *buf, size_t len) {
  if (c->tls)
    return appmsg__tls_describe(c->tls, buf, len);
  if (len)
    buf[0] = '\0';
  return 0;
}
