/*
 * app-client: the guide's application client in C.
 *
 *   app-client [options] [HOST PORT] ACTION VALUE
 *   app-client [options] [HOST PORT] -          (requests from stdin, one "ACTION VALUE" a line)
 *
 * "search KEY" sends text/json {"action": "search", "value": KEY} and
 * prints the result text; any other action sends the guide's binary
 * request (content ACTION followed by VALUE) and prints the binary reply.
 * With "-", every request is sent at once over one connection (pipelined)
 * and the answers are printed in order, one a line.
 *
 * Exit status: 0 when every request was answered; 1 when the connection
 * failed, timed out or ended early; 2 for a usage error; 3 when the server
 * answered with a protocol error reply (one carrying an "error" field).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "appmsg/conn.h"
#include "appmsg/loop.h"
#include "appmsg/net.h"
#include "common.h"

static const char usage[] = "[--timeout SECONDS] [-v] [HOST PORT] ACTION VALUE | [HOST PORT] -";

struct client {
  struct appmsg_loop *loop;
  size_t sent;     /* requests sent */
  size_t answered; /* replies received */
  int status;      /* exit status so far */
  int done;        /* the connection ended */
  int verbose;
  const char *where; /* "HOST:PORT" for messages */
};

/* The length of the well-formed UTF-8 sequence at p, or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  unsigned char c = p[0], lo = 0x80, hi = 0xBF;
  size_t len;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    lo = c == 0xE0 ? 0xA0 : 0x80;
    hi = c == 0xED ? 0x9F : 0xBF;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    lo = c == 0xF0 ? 0x90 : 0x80;
    hi = c == 0xF4 ? 0x8F : 0xBF;
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi)
    return 0;
  for (size_t k = 2; k < len; k++)
    if ((p[k] & 0xC0) != 0x80)
      return 0;
  return len;
}

/* Prints content safely: UTF-8 text as is, other bytes as \xNN. */
static void print_bytes(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t len = p[i] >= 0x20 && p[i] != 0x7f ? utf8_seq(p + i, n - i) : 0;
    if (len) {
      fwrite(p + i, 1, len, stdout);
      i += len;
      continue;
    }
    if (p[i] == '\n' || p[i] == '\t')
      putchar(p[i]);
    else
      printf("\\x%02x", p[i]);
    i++;
  }
  putchar('\n');
}

static void on_message(struct appmsg_conn *c, const struct appmsg_header *h, const void *content,
                       size_t len, void *ud) {
  struct client *cl = ud;
  cl->answered++;
  if (cl->verbose)
    logf_("reply %zu from %s: %s, %s, %zu bytes", cl->answered, cl->where, h->content_type,
          h->content_encoding, len);
  if (strcmp(h->content_type, "text/json") == 0) {
    cJSON *reply = cJSON_ParseWithLength(content, len);
    cJSON *result = cJSON_GetObjectItemCaseSensitive(reply, "result");
    cJSON *error = cJSON_GetObjectItemCaseSensitive(reply, "error");
    if (cJSON_IsString(result)) {
      fputs(result->valuestring, stdout);
      putchar('\n');
    } else {
      print_bytes(content, len); /* not the usual shape: show it as it came */
    }
    if (error)
      cl->status = 3;
    cJSON_Delete(reply);
  } else {
    print_bytes(content, len);
  }
  fflush(stdout);
  if (cl->answered == cl->sent)
    appmsg_conn_close(c);
}

static void on_error(struct appmsg_conn *c, int err, const char *reason, uint64_t offset,
                     void *ud) {
  (void)c;
  struct client *cl = ud;
  logf_("bad reply from %s: %s at offset %llu: %s", cl->where, appmsg_errname(err),
        (unsigned long long)offset, reason);
  cl->status = 1;
}

static void on_close(struct appmsg_conn *c, int reason, void *ud) {
  (void)c;
  struct client *cl = ud;
  cl->done = 1;
  if (cl->answered < cl->sent) {
    if (reason == APPMSG_E_TIMEOUT)
      logf_("timed out waiting for %s (%zu of %zu answered)", cl->where, cl->answered, cl->sent);
    else if (reason == 0 || reason == APPMSG_E_CLOSED || reason == -ECONNRESET ||
             reason == -EPIPE) /* a reset: the server closed with our next request unread */
      logf_("the server at %s closed the connection after %zu of %zu answers", cl->where,
            cl->answered, cl->sent);
    else
      logf_("connection to %s failed: %s (%zu of %zu answered)", cl->where, appmsg_strerror(reason),
            cl->answered, cl->sent);
    cl->status = 1;
  }
  appmsg_loop_stop(cl->loop);
}

static void on_deadline(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)t;
  struct client *cl = ud;
  if (!cl->done) {
    logf_("timed out waiting for %s (%zu of %zu answered)", cl->where, cl->answered, cl->sent);
    cl->status = 1;
  }
  appmsg_loop_stop(loop);
}

/* Builds and queues one request. */
static int send_request(struct appmsg_conn *c, const char *action, const char *value) {
  struct appmsg_header h;
  appmsg_header_init(&h);
  int rc;
  if (strcmp(action, "search") == 0) {
    size_t vl = strlen(value);
    size_t need = appmsg_json_quote(value, vl, NULL, 0) + 32;
    char *body = malloc(need);
    if (!body)
      return -ENOMEM;
    size_t n = (size_t)snprintf(body, need, "{\"action\": \"search\", \"value\": ");
    n += appmsg_json_quote(value, vl, body + n, need - n);
    body[n++] = '}';
    rc = appmsg_header_set(&h, "text/json", "utf-8");
    if (rc == 0)
      rc = appmsg_conn_send(c, &h, body, n);
    free(body);
  } else {
    /* The guide's binary request: the action and the value, concatenated. */
    size_t al = strlen(action), vl = strlen(value);
    char *body = malloc(al + vl + 1);
    if (!body)
      return -ENOMEM;
    memcpy(body, action, al);
    memcpy(body + al, value, vl);
    rc = appmsg_header_set(&h, "binary/custom-client-binary-type", "binary");
    if (rc == 0)
      rc = appmsg_conn_send(c, &h, body, al + vl);
    free(body);
  }
  appmsg_header_cleanup(&h);
  return rc;
}

/* Splits "ACTION VALUE" (VALUE may hold spaces; a missing one is ""). */
static void split_line(char *line, char **action, char **value) {
  line[strcspn(line, "\r\n")] = '\0';
  char *sp = strchr(line, ' ');
  *action = line;
  *value = sp ? (*sp = '\0', sp + 1) : line + strlen(line);
}

int main(int argc, char **argv) {
  prog_init(argv[0]);
  static const char *const known[] = {"--timeout", "-v", "--verbose", NULL};
  handle_std_options(argc, argv, usage, known);
  struct client cl = {0};
  double timeout_s = 10;
  const char *pos[4];
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--timeout")) {
      char *end;
      timeout_s = argv[i + 1] ? strtod(argv[++i], &end) : -1;
      if (timeout_s <= 0 || timeout_s > 86400 || *end) {
        logf_("--timeout needs a number of seconds");
        usage_error(usage);
      }
    } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
      cl.verbose = 1;
    } else if (!strcmp(argv[i], "--") && i + 1 < argc) {
      continue;
    } else if (npos < 4) {
      pos[npos++] = argv[i];
    } else {
      usage_error(usage);
    }
  }
  const char *host = DEFAULT_HOST, *port = DEFAULT_PORT;
  int stdin_mode = 0;
  if (npos == 3 || npos == 1) { /* [HOST PORT] - */
    if (strcmp(pos[npos - 1], "-") != 0)
      usage_error(usage);
    stdin_mode = 1;
    if (npos == 3) {
      host = pos[0];
      port = pos[1];
    }
  } else if (npos == 4) {
    host = pos[0];
    port = pos[1];
  } else if (npos != 2) {
    usage_error(usage);
  }
  char where[600];
  endpoint_text(host, port, where, sizeof where);
  cl.where = where;
  appmsg_ignore_sigpipe();

  int fd;
  char err[APPMSG_NET_ERRLEN];
  int rc = appmsg_connect_timeout(host, port, (int)(timeout_s * 1000), &fd, err, sizeof err);
  if (rc) {
    if (rc == APPMSG_E_ADDRESS)
      logf_("%s", err);
    else
      logf_("cannot connect to %s: %s; is the server running on %s?", where, connect_hint(rc),
            where);
    return 1;
  }
  if (cl.verbose)
    logf_("connected to %s", where);
  rc = appmsg_loop_new(&cl.loop, APPMSG_LOOP_DEFAULT);
  if (rc) {
    logf_("cannot create the event loop: %s", appmsg_strerror(rc));
    return 1;
  }
  struct appmsg_conn_opts opts;
  appmsg_conn_opts_default(&opts);
  opts.limits.max_content_length = APPMSG_CONTENT_LENGTH_MAX >> 20; /* trust the server more */
  opts.idle_timeout_ms = 0;
  opts.frame_timeout_ms = 0; /* the overall deadline below covers it */
  opts.read_pause = 0;
  opts.max_output = 0;
  static const struct appmsg_conn_callbacks cbs = {
      .on_message = on_message, .on_error = on_error, .on_close = on_close};
  struct appmsg_conn *c;
  rc = appmsg_conn_new(&c, cl.loop, fd, &opts, &cbs, &cl);
  if (rc) {
    logf_("cannot set up the connection: %s", appmsg_strerror(rc));
    return 1;
  }
  if (stdin_mode) {
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
      char *action, *value;
      split_line(line, &action, &value);
      if (*action == '\0')
        continue;
      if ((rc = send_request(c, action, value)) != 0)
        break;
      cl.sent++;
    }
    free(line);
  } else {
    rc = send_request(c, pos[npos - 2], pos[npos - 1]);
    cl.sent = rc == 0;
  }
  if (rc) {
    logf_("cannot send the request: %s", appmsg_strerror(rc));
    cl.status = 1;
  }
  if (cl.sent == 0)
    appmsg_conn_close(c);
  struct appmsg_timer deadline;
  appmsg_timer_init(&deadline, on_deadline, &cl);
  appmsg_timer_start(cl.loop, &deadline, (uint64_t)(timeout_s * 1000), 0);
  while (!cl.done) {
    rc = appmsg_loop_run(cl.loop);
    if (rc || !appmsg_timer_active(&deadline))
      break;
  }
  appmsg_timer_stop(cl.loop, &deadline);
  if (!cl.done)
    appmsg_conn_abort(c, APPMSG_E_TIMEOUT);
  appmsg_loop_free(cl.loop);
  return cl.status;
}
