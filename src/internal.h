/* Declarations shared between appmsg's source files; not installed. */
#ifndef APPMSG_INTERNAL_H
#define APPMSG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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
 * appmsg__utf8_check) but rejects bytes >= 0x80 outside strings.
 * Reports top-level object members to cb when cb is not NULL.
 * Returns 0, or the error code with *err filled in.
 */
int appmsg__json_scan(const char *p, size_t n, int max_depth, int object_only,
                      enum appmsg_json_type *top, appmsg_json_member_cb cb, void *ud,
                      struct appmsg__json_error *err);

/* Returns n when p[0..n) is well-formed UTF-8, else the offset of the
 * first byte of the first ill-formed sequence. */
size_t appmsg__utf8_check(const unsigned char *p, size_t n);

/* Parses a header already received whole: UTF-8, JSON and field rules of
 * PROTOCOL.md section 5, steps 3-5.  buf is modified (strings are
 * unescaped in place) and h's strings point into it (h must be released
 * with appmsg__header_release_borrowed).  Returns 0 or a negative code,
 * with *err filled in; on CONTENT_TOO_LARGE *claimed holds the
 * content-length as written (digits, NUL-terminated, cut at 31). */
int appmsg__header_parse(char *buf, size_t n, uint64_t max_content, struct appmsg_header *h,
                         struct appmsg__json_error *err, char claimed[32]);

/* 1 (the default): headers in the canonical layout take a fast path that
 * gives the same results as the general one; tests set it to 0 to compare. */
extern int appmsg__header_fast_path;

/* Frees what a header filled in by appmsg__header_parse owns (its extras),
 * without freeing its borrowed strings; leaves it zeroed. */
void appmsg__header_release_borrowed(struct appmsg_header *h);

/* A framed connection (conn.c); server.c reads its list links and flags. */
#include "appmsg/conn.h"
struct appmsg_conn {
  struct appmsg_decoder dec;               /* what arrives */
  struct appmsg_encoder enc;               /* what leaves */
  struct appmsg_timer timer;               /* the one timer (see above) */
  struct appmsg_loop *loop;                /* the loop it runs on */
  const struct appmsg_conn_opts *opts;     /* shared options (caller's) */
  const struct appmsg_conn_callbacks *cbs; /* shared callbacks (caller's) */
  void *ud;                                /* the caller's pointer */
  uint64_t last_rx;                        /* loop time of the last byte received */
  uint64_t last_tx;                        /* loop time output last moved (or was queued) */
  uint64_t timer_due;                      /* when the timer is set to fire */
  uint64_t linger_until;                   /* end of the closing linger */
  struct appmsg_conn *_prev, *_next;       /* a server's list of connections */
  void *_server;                           /* the server that owns it, if any */
  int fd;                                  /* the socket */
  int reason;                              /* why it is closing (0: clean) */
  uint32_t peer_scope;                     /* the peer's IPv6 scope id */
  uint16_t peer_family;                    /* AF_INET, AF_INET6, AF_UNIX; 0 unknown */
  uint16_t peer_port;                      /* network order */
  unsigned char peer_addr[16];             /* kept so a vanished peer can still be named */
  unsigned busy;                           /* callbacks of this connection running */
  unsigned connecting : 1;                 /* a connect is in progress */
  unsigned eof : 1;                        /* the peer finished sending */
  unsigned closing : 1;                    /* no more messages: flush, then close */
  unsigned shut : 1;                       /* our write side is shut down */
  unsigned dead : 1;                       /* aborted: finish as soon as callbacks return */
  unsigned when_idle : 1;                  /* close once the current frame is answered */
  unsigned refused : 1;                    /* accepted over the limit, only to say so */
};

void appmsg__conn_link(struct appmsg_conn *c, void *server, struct appmsg_conn **head);
void appmsg__conn_unlink(struct appmsg_conn *c, struct appmsg_conn **head);
struct appmsg_conn *appmsg__conn_next(const struct appmsg_conn *c);
/* appmsg_conn_new() for a socket just accepted from peer (no getpeername). */
struct sockaddr;
int appmsg__conn_new_accepted(struct appmsg_conn **c, struct appmsg_loop *loop, int fd,
                              const struct appmsg_conn_opts *opts,
                              const struct appmsg_conn_callbacks *cbs, void *ud,
                              const struct sockaddr *peer, unsigned peer_len);
/* Called by a connection of a server as it ends, before its on_close. */
void appmsg__server_conn_closed(void *server, struct appmsg_conn *c);

#endif
