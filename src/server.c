/* The server: listener, connection list and limit, drain (see server.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/net.h"
#include "appmsg/server.h"
#include "appmsg/tls.h"
#include "conn_internal.h"
#include "loop_internal.h"
#include "platform.h"
#include "util.h"

#define MAX_REFUSING 64     /* refused connections being told so at once */
#define ACCEPT_PAUSE_MS 100 /* pause after running out of descriptors */
#define ACCEPT_BATCH 64     /* accepts per readiness event, for fairness */

struct appmsg_server {
  struct appmsg_loop *loop;
  const struct appmsg_server_opts *opts;
  const struct appmsg_conn_callbacks *conn_cbs;
  const struct appmsg_server_callbacks *srv_cbs;
  void *ud;
  struct appmsg_acceptor acc;   /* listener + reserve descriptor */
  struct appmsg_timer resume;   /* re-enables accepting after a pause */
  struct appmsg_conn *conns;    /* every open connection, refused ones too (a list) */
  size_t count;                 /* connections served */
  size_t refusing;              /* connections being refused */
  int listening;                /* the listener is open */
  int freed;                    /* appmsg_server_free() was called */
  struct appmsg__deferred gone; /* frees the server at the end of the iteration */
  char *unix_path;              /* a Unix socket's file, removed when the server stops */
  uint64_t unix_id[2];          /* which file that was (not one made by someone since) */
};

void appmsg_server_opts_default(struct appmsg_server_opts *o) {
  memset(o, 0, sizeof *o);
  appmsg_conn_opts_default(&o->conn);
  o->max_conns = 10000;
  o->backlog = 511;
}

/* Keeps c in the server's list (its links live in the connection). */
static void track(struct appmsg_server *s, struct appmsg_conn *c) {
  struct appmsg__conn_link *l = appmsg__conn_link(c);
  l->prev = NULL;
  l->next = s->conns;
  if (s->conns)
    appmsg__conn_link(s->conns)->prev = c;
  s->conns = c;
}

static void untrack(struct appmsg_server *s, struct appmsg_conn *c) {
  struct appmsg__conn_link *l = appmsg__conn_link(c);
  if (l->prev)
    appmsg__conn_link(l->prev)->next = l->next;
  else
    s->conns = l->next;
  if (l->next)
    appmsg__conn_link(l->next)->prev = l->prev;
  l->prev = l->next = NULL;
}

/* Close hooks: a connection leaves the list as it ends. */
static void served_closed(struct appmsg_conn *c, int reason, void *arg) {
  (void)reason;
  struct appmsg_server *s = arg;
  untrack(s, c);
  s->count--;
}

static void refused_closed(struct appmsg_conn *c, int reason, void *arg) {
  (void)reason;
  struct appmsg_server *s = arg;
  untrack(s, c);
  s->refusing--;
}

/* A refused connection needs no callbacks: it only sends its error reply. */
static const struct appmsg_conn_callbacks refuse_cbs = {0};

/* Tells a connection over the limit so, through an ordinary (closing)
 * connection, so its request cannot turn our close into a reset. */
static void refuse(struct appmsg_server *s, appmsg_socket_t fd) {
  if (s->srv_cbs && s->srv_cbs->on_refuse)
    s->srv_cbs->on_refuse(s, APPMSG_E_TOO_MANY_CONNS, s->ud);
  /* Freed by on_refuse, the server has ended its connections already and
   * its memory goes at the end of the iteration: a connection made now
   * would outlive it and report to it.  (Drained, it still tells the peer
   * why: the refusal closes itself.) */
  if (s->freed || s->refusing >= MAX_REFUSING || s->opts->conn.raw) {
    appmsg__sock_close(fd); /* a raw (unframed) peer would not understand an error frame */
    return;
  }
  struct appmsg_conn *c;
  if (appmsg__conn_new_accepted(&c, s->loop, fd, &s->opts->conn, &refuse_cbs, NULL,
                                (struct sockaddr *)&s->acc.peer, s->acc.peer_len) != 0)
    return;
  track(s, c);
  appmsg_conn_set_close_hook(c, refused_closed, s);
  s->refusing++;
  char reason[128];
  snprintf(reason, sizeof reason, "too many connections (the limit is %zu); try again later",
           s->opts->max_conns);
  appmsg_conn_send_error(c, APPMSG_E_TOO_MANY_CONNS, reason, -1);
  appmsg_conn_close(c);
}

static void on_resume(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)t;
  struct appmsg_server *s = ud;
  if (s->listening)
    appmsg_loop_modify(loop, s->acc.listen_fd, APPMSG_EV_READ);
}

/* Accepts up to max pending connections. */
static void accept_some(struct appmsg_server *s, int max) {
  struct appmsg_loop *loop = s->loop;
  for (int k = 0; k < max && s->listening; k++) { /* (a callback may drain or free s) */
    appmsg_socket_t cfd;
    int rc = appmsg_acceptor_accept(&s->acc, &cfd);
    if (rc == -EAGAIN)
      return;
    if (rc == APPMSG_E_TOO_MANY_CONNS) { /* out of descriptors: one was shed */
      if (s->srv_cbs && s->srv_cbs->on_refuse)
        s->srv_cbs->on_refuse(s, -EMFILE, s->ud);
      continue;
    }
    if (rc < 0) { /* -EMFILE with no reserve, -ENOBUFS...: pause, never spin */
      if (s->srv_cbs && s->srv_cbs->on_refuse)
        s->srv_cbs->on_refuse(s, rc, s->ud);
      if (!s->listening)
        return; /* the callback drained or freed the server */
      appmsg_loop_modify(loop, s->acc.listen_fd, 0);
      appmsg_timer_start(loop, &s->resume, ACCEPT_PAUSE_MS, 0);
      return;
    }
    if (s->opts->max_conns && s->count >= s->opts->max_conns) {
      refuse(s, cfd);
      continue;
    }
    struct appmsg_conn *c;
    if (appmsg__conn_new_accepted(&c, loop, cfd, &s->opts->conn, s->conn_cbs, s->ud,
                                  (struct sockaddr *)&s->acc.peer, s->acc.peer_len) != 0)
      continue; /* out of memory: the connection is closed */
    track(s, c);
    appmsg_conn_set_close_hook(c, served_closed, s);
    s->count++;
    if (s->srv_cbs && s->srv_cbs->on_accept)
      s->srv_cbs->on_accept(s, c, s->ud);
  }
}

static void on_listen(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)loop;
  (void)fd;
  (void)events;
  accept_some(ud, ACCEPT_BATCH); /* a batch at a time: fair to the connections served */
}

/* A server's connections accept: a TLS context must be a server's. */
static int tls_role_ok(const struct appmsg_server_opts *opts, char *err, size_t errlen) {
  if (opts->conn.tls == NULL || appmsg_tls_is_server(opts->conn.tls))
    return 1;
  appmsg__errf(err, errlen, "a server needs a TLS server context, not a client's");
  return 0;
}

/* Serves on fd (owned from now on); owner: whether to unlink a Unix socket's file at the end. */
static int serve_fd(struct appmsg_server **out, struct appmsg_loop *loop, appmsg_socket_t fd,
                    int owner, const struct appmsg_server_opts *opts,
                    const struct appmsg_conn_callbacks *conn_cbs,
                    const struct appmsg_server_callbacks *srv_cbs, void *ud, char *err,
                    size_t errlen) {
  if (!tls_role_ok(opts, err, errlen)) {
    appmsg__sock_close(fd);
    return -EINVAL;
  }
  struct appmsg_server *s = appmsg__calloc(1, sizeof *s);
  int rc = s ? appmsg_set_nonblock(fd, 1) : -ENOMEM;
  if (rc == 0)
    rc = appmsg_acceptor_init(&s->acc, fd);
  if (rc == 0)
    rc = appmsg_loop_watch(loop, fd, APPMSG_EV_READ, on_listen, s);
  if (rc) {
    appmsg__errf(err, errlen, "cannot serve: %s", appmsg_strerror(rc));
    if (s)
      appmsg_acceptor_cleanup(&s->acc);
    appmsg__sock_close(fd);
    appmsg__free(s);
    return rc;
  }
  s->loop = loop;
  s->opts = opts;
  s->conn_cbs = conn_cbs;
  s->srv_cbs = srv_cbs;
  s->ud = ud;
  s->listening = 1;
  appmsg_timer_init(&s->resume, on_resume, s);
  char name[APPMSG_ADDRSTRLEN];
  if (owner && appmsg_sockname(fd, name, sizeof name) > 5 && strncmp(name, "unix:/", 6) == 0 &&
      appmsg__file_identity(name + 5, s->unix_id) == 0)
    s->unix_path = appmsg__strdup(name + 5);
  *out = s;
  return 0;
}

int appmsg_server_new(struct appmsg_server **out, struct appmsg_loop *loop, const char *host,
                      const char *port, const struct appmsg_server_opts *opts,
                      const struct appmsg_conn_callbacks *conn_cbs,
                      const struct appmsg_server_callbacks *srv_cbs, void *ud, char *err,
                      size_t errlen) {
  if (!tls_role_ok(opts, err, errlen))
    return -EINVAL;
  appmsg_socket_t fd;
  int rc = appmsg_listen_flags(host, port, opts->backlog,
                               opts->reuseport ? APPMSG_LISTEN_REUSEPORT : 0, &fd, err, errlen);
  if (rc)
    return rc;
  return serve_fd(out, loop, fd, 1, opts, conn_cbs, srv_cbs, ud, err, errlen);
}

int appmsg_server_new_fd(struct appmsg_server **out, struct appmsg_loop *loop,
                         appmsg_socket_t listen_fd, const struct appmsg_server_opts *opts,
                         const struct appmsg_conn_callbacks *conn_cbs,
                         const struct appmsg_server_callbacks *srv_cbs, void *ud, char *err,
                         size_t errlen) {
  return serve_fd(out, loop, listen_fd, 0, opts, conn_cbs, srv_cbs, ud, err, errlen);
}

const char *appmsg_server_address(const struct appmsg_server *s) {
  static _Thread_local char buf[APPMSG_ADDRSTRLEN];
  if (!s->listening || appmsg_sockname(s->acc.listen_fd, buf, sizeof buf) < 0)
    strcpy(buf, "?");
  return buf;
}

appmsg_socket_t appmsg_server_fd(const struct appmsg_server *s) {
  return s->listening ? s->acc.listen_fd : APPMSG_INVALID_SOCKET;
}

size_t appmsg_server_conn_count(const struct appmsg_server *s) {
  return s->count;
}

static void free_server(struct appmsg__deferred *d) {
  struct appmsg_server *s =
      (struct appmsg_server *)((char *)d - offsetof(struct appmsg_server, gone));
  appmsg__free(s);
}

static void stop_listening(struct appmsg_server *s) {
  if (!s->listening)
    return;
  s->listening = 0;
  appmsg_timer_stop(s->loop, &s->resume);
  appmsg_loop_unwatch(s->loop, s->acc.listen_fd);
  appmsg__sock_close(s->acc.listen_fd);
  appmsg_acceptor_cleanup(&s->acc);
  uint64_t id[2];
  if (s->unix_path && appmsg__file_identity(s->unix_path, id) == 0 && id[0] == s->unix_id[0] &&
      id[1] == s->unix_id[1])
    appmsg__unix_unlink(s->unix_path);
  appmsg__free(s->unix_path);
  s->unix_path = NULL;
}

void appmsg_server_drain(struct appmsg_server *s) {
  if (s->freed)
    return;
  /* Whoever connected before the drain is served: the accept queue is emptied before the
   * listener closes (closing it would reset them).  on_accept runs here, perhaps from
   * outside the loop, and may free the server: the loop is marked busy meanwhile, so that
   * the free waits for the deferred queue instead of happening under this code. */
  struct appmsg_loop *loop = s->loop;
  appmsg__loop_enter(loop);
  if (s->listening)
    accept_some(s, s->opts->backlog > 0 ? 4 * s->opts->backlog : 4096);
  appmsg__loop_leave(loop);
  if (s->freed)
    return; /* (freed by on_accept: its connections were ended there) */
  stop_listening(s);
  for (struct appmsg_conn *c = s->conns; c; c = appmsg__conn_link(c)->next)
    appmsg_conn_close_when_idle(c);
}

long appmsg_server_finish(struct appmsg_server *s, uint32_t timeout_ms) {
  appmsg_server_drain(s);
  uint64_t until = appmsg_loop_now(s->loop) + timeout_ms;
  while (s->count + s->refusing > 0 && appmsg_loop_now(s->loop) < until) {
    int rc = appmsg_loop_run_once(s->loop, 100);
    if (rc < 0)
      return rc;
  }
  return (long)s->count;
}

void appmsg_server_free(struct appmsg_server *s) {
  if (s == NULL || s->freed)
    return;
  s->freed = 1;
  stop_listening(s);
  appmsg_timer_stop(s->loop, &s->resume);
  /* The connections end on their own from now on: they no longer report
   * to the server, whose memory may go before they finish. */
  struct appmsg_conn *c;
  while ((c = s->conns) != NULL) {
    untrack(s, c);
    appmsg_conn_set_close_hook(c, NULL, NULL);
    appmsg_conn_abort(c, APPMSG_E_CLOSED);
  }
  s->count = s->refusing = 0;
  /* From outside the loop's callbacks everything ends now (the
   * connections' on_close run here); from inside, at the end of the
   * iteration, since the caller may be the server's own callback. */
  appmsg__deferred_init(&s->gone, free_server);
  if (appmsg__loop_busy(s->loop)) {
    appmsg__loop_defer(s->loop, &s->gone);
  } else {
    appmsg__loop_run_deferred(s->loop);
    free_server(&s->gone);
  }
}
