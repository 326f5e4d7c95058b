/* The server: listener, connection list and limit, drain (see server.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "appmsg/net.h"
#include "appmsg/server.h"
#include "internal.h"

#define MAX_REFUSING 64     /* refused connections being told so at once */
#define ACCEPT_PAUSE_MS 100 /* pause after running out of descriptors */
#define ACCEPT_BATCH 64     /* accepts per readiness event, for fairness */

struct appmsg_server {
  struct appmsg_loop *loop;
  const struct appmsg_server_opts *opts;
  const struct appmsg_conn_callbacks *conn_cbs;
  const struct appmsg_server_callbacks *srv_cbs;
  void *ud;
  struct appmsg_acceptor acc; /* listener + reserve descriptor */
  struct appmsg_timer resume; /* re-enables accepting after a pause */
  struct appmsg_conn *head;   /* every connection, refused ones too */
  size_t count;               /* connections served */
  size_t refusing;            /* connections being refused */
  int listening;              /* the listener is open */
  char *unix_path;            /* a Unix socket's file, removed when the server stops */
  struct stat unix_st;        /* which file that was (not one made by someone since) */
};

void appmsg_server_opts_default(struct appmsg_server_opts *o) {
  memset(o, 0, sizeof *o);
  appmsg_conn_opts_default(&o->conn);
  o->max_conns = 10000;
  o->backlog = 511;
}

/* Replaces what is not well-formed UTF-8 (a reason built from peer bytes,
 * or cut short) with '?', so that a reply is always valid JSON text. */
static void utf8_sanitize(char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t bad = appmsg__utf8_check((const unsigned char *)s + i, n - i);
    if (bad == n - i)
      break;
    s[i + bad] = '?';
    i += bad + 1;
  }
}

int appmsg_conn_send_error(struct appmsg_conn *c, int err, const char *reason, long long offset) {
  const char *text = reason ? reason : appmsg_strerror(err);
  char sentence[512];
  size_t tl = strlen(text);
  /* "Error: " + the reason, ending with a full stop as the guide's texts do. */
  snprintf(sentence, sizeof sentence, "Error: %s%s", text,
           tl && (text[tl - 1] == '.' || text[tl - 1] == '?') ? "" : ".");
  utf8_sanitize(sentence);
  /* Room for the worst case: every byte of the sentence quoted as \u00XX. */
  char quoted[6 * sizeof sentence + 3];
  size_t q = appmsg_json_quote(sentence, strlen(sentence), quoted, sizeof quoted - 1);
  quoted[q] = '\0';
  char body[sizeof quoted + 96];
  int n;
  if (offset >= 0)
    n = snprintf(body, sizeof body, "{\"result\": %s, \"error\": \"%s\", \"offset\": %lld}", quoted,
                 appmsg_errname(err), offset);
  else
    n = snprintf(body, sizeof body, "{\"result\": %s, \"error\": \"%s\"}", quoted,
                 appmsg_errname(err));
  if (n < 0 || (size_t)n >= sizeof body)
    return -EINVAL; /* not reached: body has room for the longest reply */
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc = appmsg_header_set(&h, "text/json", "utf-8");
  if (rc == 0)
    rc = appmsg_conn_send(c, &h, body, (size_t)n);
  appmsg_header_cleanup(&h);
  return rc;
}

void appmsg__server_conn_closed(void *server, struct appmsg_conn *c) {
  struct appmsg_server *s = server;
  appmsg__conn_unlink(c, &s->head);
  if (c->refused)
    s->refusing--;
  else
    s->count--;
}

/* A refused connection needs no callbacks: it only sends its error reply. */
static const struct appmsg_conn_callbacks refuse_cbs = {0};

/* Tells a connection over the limit so, through an ordinary (closing)
 * connection, so its request cannot turn our close into a reset. */
static void refuse(struct appmsg_server *s, int fd) {
  if (s->srv_cbs && s->srv_cbs->on_refuse)
    s->srv_cbs->on_refuse(s, APPMSG_E_TOO_MANY_CONNS, s->ud);
  if (s->refusing >= MAX_REFUSING || s->opts->conn.raw) {
    close(fd); /* a raw (unframed) peer would not understand an error frame */
    return;
  }
  struct appmsg_conn *c;
  if (appmsg__conn_new_accepted(&c, s->loop, fd, &s->opts->conn, &refuse_cbs, NULL,
                                (struct sockaddr *)&s->acc.peer, s->acc.peer_len) != 0)
    return;
  c->refused = 1;
  s->refusing++;
  appmsg__conn_link(c, s, &s->head);
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

static void on_listen(struct appmsg_loop *loop, int fd, unsigned events, void *ud) {
  (void)fd;
  (void)events;
  struct appmsg_server *s = ud;
  for (int k = 0; k < ACCEPT_BATCH && s->listening; k++) {
    int cfd;
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
    s->count++;
    appmsg__conn_link(c, s, &s->head);
    if (s->srv_cbs && s->srv_cbs->on_accept)
      s->srv_cbs->on_accept(s, c, s->ud);
  }
}

int appmsg_server_new(struct appmsg_server **out, struct appmsg_loop *loop, const char *host,
                      const char *port, const struct appmsg_server_opts *opts,
                      const struct appmsg_conn_callbacks *conn_cbs,
                      const struct appmsg_server_callbacks *srv_cbs, void *ud, char *err,
                      size_t errlen) {
  struct appmsg_server *s = calloc(1, sizeof *s);
  if (s == NULL)
    return -ENOMEM;
  int fd;
  int rc = appmsg_listen(host, port, opts->backlog, &fd, err, errlen);
  if (rc) {
    free(s);
    return rc;
  }
  rc = appmsg_acceptor_init(&s->acc, fd);
  if (rc == 0)
    rc = appmsg_loop_watch(loop, fd, APPMSG_EV_READ, on_listen, s);
  if (rc) {
    if (err && errlen)
      snprintf(err, errlen, "cannot serve: %s", appmsg_strerror(rc));
    appmsg_acceptor_cleanup(&s->acc);
    close(fd);
    free(s);
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
  if (appmsg_sockname(fd, name, sizeof name) > 5 && strncmp(name, "unix:/", 6) == 0 &&
      stat(name + 5, &s->unix_st) == 0)
    s->unix_path = strdup(name + 5);
  *out = s;
  return 0;
}

const char *appmsg_server_address(const struct appmsg_server *s) {
  static _Thread_local char buf[APPMSG_ADDRSTRLEN];
  if (!s->listening || appmsg_sockname(s->acc.listen_fd, buf, sizeof buf) < 0)
    strcpy(buf, "?");
  return buf;
}

int appmsg_server_fd(const struct appmsg_server *s) {
  return s->listening ? s->acc.listen_fd : -1;
}

size_t appmsg_server_conn_count(const struct appmsg_server *s) {
  return s->count;
}

static void stop_listening(struct appmsg_server *s) {
  if (!s->listening)
    return;
  s->listening = 0;
  appmsg_timer_stop(s->loop, &s->resume);
  appmsg_loop_unwatch(s->loop, s->acc.listen_fd);
  close(s->acc.listen_fd);
  appmsg_acceptor_cleanup(&s->acc);
  struct stat st;
  if (s->unix_path && stat(s->unix_path, &st) == 0 && st.st_ino == s->unix_st.st_ino &&
      st.st_dev == s->unix_st.st_dev)
    unlink(s->unix_path);
  free(s->unix_path);
  s->unix_path = NULL;
}

void appmsg_server_drain(struct appmsg_server *s) {
  stop_listening(s);
  for (struct appmsg_conn *c = s->head, *next; c; c = next) {
    next = appmsg__conn_next(c);
    appmsg_conn_close_when_idle(c); /* may end c at once */
  }
}

void appmsg_server_free(struct appmsg_server *s) {
  if (s == NULL)
    return;
  stop_listening(s);
  while (s->head)
    appmsg_conn_abort(s->head, APPMSG_E_CLOSED);
  free(s);
}
