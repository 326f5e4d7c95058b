/*
 * app-client: the guide's application client, on the client library
 * (client.h).
 *
 *   app-client [options] [HOST PORT] ACTION VALUE
 *   app-client [options] [HOST PORT] ping | status
 *   app-client [options] [HOST PORT] -          (requests from stdin, one "ACTION VALUE" a line)
 *
 * "search KEY" (and ping, status) are sent as text/json requests and the
 * result is printed; any other action is sent as the guide's binary
 * request (ACTION followed by VALUE) and the binary reply is printed.
 * With "-", each request is sent over one connection as soon as its line
 * is read, without waiting for the answers before it (pipelined), and the
 * answers are printed in order, one a line, as they come.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

struct run {
  struct appmsg_loop *loop;
  struct appmsg_client *client;
  const char *where;      /* "HOST:PORT" for messages */
  const char *request_id; /* --request-id, as JSON text */
  size_t sent, answered;  /* calls made, replies printed */
  size_t finished;        /* calls whose callback ran */
  int status;             /* exit status so far */
  int verbose;
  int lost_reported; /* the connection's end has been told */
  int reading;       /* stdin is still being read: more calls will come */
};

/* One member of the status object, printed "name: value". */
static void print_member(void *ud, const struct appmsg_json_member *m) {
  (void)ud;
  char key[256];
  size_t kn = m->key_len < sizeof key ? appmsg_json_unescape(m->key, m->key_len, key) : 0;
  printf("%.*s: ", (int)kn, key);
  if (m->type == APPMSG_JSON_STRING) {
    char *v = malloc(m->val_len + 1);
    if (v) {
      v[appmsg_json_unescape(m->val, m->val_len, v)] = '\0';
      fputs(v, stdout);
      free(v);
    }
  } else {
    fwrite(m->val, 1, m->val_len, stdout);
  }
  putchar('\n');
}

/* A result that is a JSON object (status): one "name: value" line a member. */
static int print_object(const char *json, size_t len) {
  enum appmsg_json_type top;
  if (appmsg_json_scan(json, len, 64, &top, NULL, NULL, NULL, NULL) != 0 ||
      top != APPMSG_JSON_OBJECT)
    return -1;
  appmsg_json_scan(json, len, 64, NULL, print_member, NULL, NULL, NULL);
  return 0;
}

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct run *run = ud;
  run->finished++;
  if (r->header) {
    run->answered++;
    if (run->verbose)
      logf_("reply %zu from %s: %s, %s, %zu bytes", run->answered, run->where,
            r->header->content_type, r->header->content_encoding, r->len);
    if (run->request_id) {
      long n = appmsg_header_extra_raw(r->header, "request-id", NULL, 0);
      char id[256];
      if (n >= 0 && (size_t)n < sizeof id) {
        appmsg_header_extra_raw(r->header, "request-id", id, sizeof id);
        logf_("reply %zu has request-id %.*s", run->answered, (int)n, id);
      } else {
        logf_("reply %zu has no request-id", run->answered);
      }
    }
    if (r->result)
      puts(r->result);
    else if (!r->result_json || print_object(r->result_json, r->result_json_len) != 0)
      print_bytes(r->content, r->len); /* not the usual shape: show it as it came */
    if (r->status == APPMSG_E_ERROR_REPLY)
      run->status = 3;
  } else if (!run->lost_reported) {
    run->lost_reported = 1;
    run->status = 1;
    if (r->status == APPMSG_E_TIMEOUT ||
        (r->status == APPMSG_E_NOT_SENT && r->cause == APPMSG_E_TIMEOUT))
      logf_("timed out waiting for %s (%zu of %zu answered)", run->where, run->answered, run->sent);
    else if (r->status == APPMSG_E_NOT_SENT && r->cause < 0 && r->cause > -4096)
      logf_("cannot connect to %s: %s; is the server running on %s?", run->where,
            connect_hint(r->cause), run->where); /* an errno: the connect failed */
    else if (r->status == APPMSG_E_CLOSED)
      logf_("the server at %s closed the connection after %zu of %zu answers", run->where,
            run->answered, run->sent);
    else if (r->status < 0 && r->status > -4096) /* an errno: the connect failed */
      logf_("cannot connect to %s: %s; is the server running on %s?", run->where,
            connect_hint(r->status), run->where);
    else /* a name that does not resolve, TLS, a reply that is not a frame: says what and why */
      logf_("%s (%zu of %zu answered)", r->reason, run->answered, run->sent);
  }
  fflush(stdout);
  if (run->finished == run->sent && !run->reading)
    appmsg_loop_stop(run->loop);
}

/* Sends one request: search, ping and status as text/json; others binary. */
static int send_request(struct run *run, const char *action, const char *value) {
  struct appmsg_call call = {.request_id = run->request_id};
  char *body = NULL;
  int rc;
  if (strcmp(action, "search") == 0 || strcmp(action, "ping") == 0 ||
      strcmp(action, "status") == 0) {
    if (run->request_id == NULL) /* the common case: the library builds the JSON */
      return value ? appmsg_client_call(run->client, on_reply, run, action, "value", value, NULL)
                   : appmsg_client_call(run->client, on_reply, run, action, NULL);
    size_t need = 64 + 6 * (strlen(action) + (value ? strlen(value) : 0));
    if ((body = malloc(need)) == NULL)
      return -ENOMEM;
    size_t n = (size_t)snprintf(body, need, "{\"action\": ");
    n += appmsg_json_quote(action, strlen(action), body + n, need - n);
    if (value) {
      n += (size_t)snprintf(body + n, need - n, ", \"value\": ");
      n += appmsg_json_quote(value, strlen(value), body + n, need - n);
    }
    body[n++] = '}';
    call.content = body;
    call.len = n;
  } else {
    /* The guide's binary request: the action and the value, concatenated. */
    size_t al = strlen(action), vl = value ? strlen(value) : 0;
    if ((body = malloc(al + vl + 1)) == NULL)
      return -ENOMEM;
    memcpy(body, action, al);
    memcpy(body + al, value ? value : "", vl);
    call.content_type = "binary/custom-client-binary-type";
    call.content_encoding = "binary";
    call.content = body;
    call.len = al + vl;
  }
  rc = appmsg_client_send(run->client, &call, on_reply, run);
  free(body);
  return rc;
}

/* Splits "ACTION VALUE" (VALUE may hold spaces; a missing one is ""). */
static void split_line(char *line, char **action, char **value) {
  line[strcspn(line, "\r\n")] = '\0';
  char *sp = strchr(line, ' ');
  *action = line;
  *value = sp ? (*sp = '\0', sp + 1) : line + strlen(line);
}

/* --request-id's value as JSON text: JSON as given, anything else as a string. */
static char *request_id_json(const char *text) {
  size_t n = strlen(text);
  if (appmsg_json_check(text, n, 31, NULL, NULL) == 0)
    return strdup(text);
  size_t q = appmsg_json_quote(text, n, NULL, 0);
  char *s = malloc(q + 1);
  if (s) {
    appmsg_json_quote(text, n, s, q);
    s[q] = '\0';
  }
  return s;
}

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  struct run run = {0};
  double timeout_s = 10;
  const char *request_id = NULL;
  struct tls_args tls = {0};
  const struct opt opts[] = {
      {"--timeout", 0, OPT_SECONDS, &timeout_s, "S",
       "give up when the answers have not come after S seconds (default 10)", 0.001, 86400},
      {"--request-id", 0, OPT_STRING, &request_id, "ID",
       "send a request-id (JSON, or else a string) and show the one each reply carries", 0, 0},
      {"--verbose", 'v', OPT_FLAG, &run.verbose, NULL, "log the connection and every reply", 0, 0},
      TLS_CLIENT_OPTS(tls),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .usage = "[options] [HOST PORT] ACTION VALUE | [HOST PORT] ping|status | [HOST PORT] -",
      .about = "The guide's application client: sends a request and prints the answer.\n"
               "search KEY is a text/json request; any other ACTION is sent as the guide's\n"
               "binary request (ACTION then VALUE); ping and status ask the server itself.",
      .operands = "HOST PORT  the server (default 127.0.0.1 65432; unix:/path with any PORT)\n"
                  "ACTION     search, ping, status, or any word for a binary request\n"
                  "VALUE      the key to search for, or the binary request's text\n"
                  "-          read one \"ACTION VALUE\" a line from stdin; each is sent as it is\n"
                  "           read, and the answers are printed in order as they come",
      .exits = "0  every request was answered\n"
               "1  the connection failed (TLS refused included), was closed early, or timed out\n"
               "2  usage error\n"
               "3  the server answered with an error reply",
      .opts = opts,
  };
  const char *pos[4];
  int npos = cli_parse(&cli, argc, argv, pos, 4);
  /* The operands: [HOST PORT] then "-", or ACTION [VALUE]. */
  int stdin_mode = npos >= 1 && strcmp(pos[npos - 1], "-") == 0 && (npos == 1 || npos == 3);
  int has_host = stdin_mode ? npos == 3 : npos >= 3;
  int nreq = npos - (has_host ? 2 : 0);
  const char *action = NULL, *value = NULL;
  if (!stdin_mode) {
    if (nreq < 1 || nreq > 2)
      cli_usage_error(&cli);
    action = pos[npos - nreq];
    value = nreq == 2 ? pos[npos - 1] : NULL;
    if (value == NULL && strcmp(action, "ping") != 0 && strcmp(action, "status") != 0) {
      logf_("%s needs a VALUE", action);
      cli_usage_error(&cli);
    }
  }
  const char *host = has_host ? pos[0] : DEFAULT_HOST, *port = has_host ? pos[1] : DEFAULT_PORT;
  char where[ENDPOINT_LEN];
  endpoint_text(host, port, where, sizeof where);
  run.where = where;
  char *rid = request_id ? request_id_json(request_id) : NULL;
  run.request_id = rid;
  appmsg_ignore_sigpipe();

  struct appmsg_client_opts o;
  appmsg_client_opts_default(&o);
  o.connect_timeout_ms = o.call_timeout_ms = (uint32_t)(timeout_s * 1000);
  o.reconnect = 0;
  /* The calls in flight are bounded too, not only the queue: every request the kernel's socket
   * buffers hold is a call kept until its answer, and with no bound "-" would hold as many as
   * its input has lines, up to what the kernel buffers (10 MB of requests, 20 MB of memory by
   * default, far more where tcp_wmem/tcp_rmem are raised).  4096 keep the server as busy. */
  o.max_in_flight = 4096;
  o.log = run.verbose ? log_line : NULL;
  o.conn.tls = tls_client_setup(&cli, &tls);
  o.conn.tls_server_name = tls.name;
  int rc = appmsg_loop_new(&run.loop, APPMSG_LOOP_DEFAULT);
  if (rc == 0)
    rc = appmsg_client_new(&run.client, run.loop, host, port, &o);
  if (rc) {
    logf_("cannot start: %s", appmsg_strerror(rc));
    return 1;
  }
  if (stdin_mode) {
    /* Lines are read as the calls can take them: when the client's queue
     * is full, the loop runs until answers make room (a file of a million
     * lines costs the memory of the queue, not of the file). */
    struct line_input in = {0};
    int in_err = stdin_open(&in.fd);
    in.loop = run.loop;
    char *line;
    run.reading = 1;
    while (rc == 0 && in_err == 0 && (line = line_input_next(&in, &in_err)) != NULL) {
      char *a, *v;
      split_line(line, &a, &v);
      if (*a == '\0')
        continue;
      while ((rc = send_request(&run, a, v)) == APPMSG_E_QUEUE_FULL) {
        int lrc = appmsg_loop_run_once(run.loop, -1);
        if (lrc < 0) {
          rc = lrc;
          break;
        }
      }
      if (rc == 0)
        run.sent++;
    }
    run.reading = 0;
    free(in.buf);
    stdin_close(in.fd);
    if (in_err) {
      logf_("cannot read the requests from stdin: %s", appmsg_strerror(in_err));
      run.status = 1;
    }
  } else if ((rc = send_request(&run, action, value)) == 0) {
    run.sent = 1;
  }
  if (rc) { /* refused at once: the connect already failed (or no memory) */
    const char *why = appmsg_client_last_error(run.client);
    if (rc < 0 && rc > -4096 && *why)
      logf_("%s; is the server running on %s?", why, run.where);
    else
      logf_("cannot send the request: %s", *why ? why : appmsg_strerror(rc));
    run.status = 1;
  }
  int lrc = run.finished < run.sent ? appmsg_loop_run(run.loop) : 0; /* every answer, or why */
  if (lrc < 0) {
    logf_("event loop failed: %s", appmsg_strerror(lrc));
    run.status = 1;
  }
  appmsg_client_free(run.client);
  appmsg_loop_free(run.loop);
  appmsg_tls_free(o.conn.tls);
  free(rid);
  return run.status;
}
