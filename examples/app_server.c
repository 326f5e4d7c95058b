/*
 * app-server: the guide's application server, as a service (service.h).
 *
 *   text/json {"action": "search", "value": KEY} -> {"result": ANSWER}
 *   any other content type -> binary/custom-server-binary-type,
 *     "First 10 bytes of request: " + the first 10 bytes of the content
 *
 * The service does the rest: framing and its errors, request order,
 * unknown actions (the guide's wording), ping and status, timeouts,
 * limits, the drain on SIGINT/SIGTERM.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "appmsg/appmsg.h"
#include "common.h"
#include "dataset.h"

static void on_search(struct appmsg_request *req, void *ud) {
  const struct dataset *data = ud;
  const char *key = appmsg_request_string(req, "value");
  if (key == NULL) {
    appmsg_reply_error(req, "BAD_REQUEST", "\"search\" needs a \"value\" string");
    return;
  }
  const char *answer = dataset_get(data, key);
  if (answer) {
    appmsg_reply_result(req, answer);
    return;
  }
  char stack[512], *text = stack; /* the guide's wording, however long the key */
  size_t need = strlen(key) + 32;
  if (need > sizeof stack && (text = malloc(need)) == NULL) {
    appmsg_reply_error(req, "INTERNAL", "out of memory");
    return;
  }
  snprintf(text, need, "No match for '%s'.", key);
  appmsg_reply_result(req, text);
  if (text != stack)
    free(text);
}

static void on_binary(struct appmsg_request *req, void *ud) {
  (void)ud;
  static const char prefix[] = "First 10 bytes of request: ";
  unsigned char body[sizeof prefix - 1 + 10];
  size_t len;
  const void *content = appmsg_request_content(req, &len);
  size_t k = len < 10 ? len : 10;
  memcpy(body, prefix, sizeof prefix - 1);
  memcpy(body + sizeof prefix - 1, content, k);
  appmsg_reply_content(req, "binary/custom-server-binary-type", "binary", body,
                       sizeof prefix - 1 + k);
}

int main(int argc, char **argv) {
  prog_init(argv[0]);
  struct appmsg_service_opts o;
  appmsg_service_opts_default(&o);
  const char *data_path = NULL;
  unsigned long max_content = 1UL << 20, max_conns = 10000;
  double idle = 60, frame = 10, deadline = 30, handshake = 10;
  int verbose = 0;
  struct tls_args tls = {0};
  const char *threads_text = "1";
  const struct opt opts[] = {
      {"--data", 0, OPT_STRING, &data_path, "FILE",
       "answer searches from FILE, a JSON object of strings (default: the guide's 3 keys)", 0, 0},
      {"--max-content", 0, OPT_COUNT, &max_content, "BYTES",
       "largest content accepted (default 1048576)", 0, 4503599627370496.0},
      {"--idle-timeout", 0, OPT_SECONDS, &idle, "S",
       "close a connection idle this long (default 60; 0: never)", 0, 86400},
      {"--frame-timeout", 0, OPT_SECONDS, &frame, "S",
       "close when a frame, or a reply, stops moving this long (default 10)", 0, 86400},
      {"--deadline", 0, OPT_SECONDS, &deadline, "S",
       "a request not answered in S gets a TIMEOUT reply (default 30)", 0, 86400},
      {"--max-conns", 0, OPT_COUNT, &max_conns, "N",
       "connections served at once; more are told to retry (default 10000)", 1, 10000000},
      {"--threads", 0, OPT_STRING, &threads_text, "N",
       "serve with N threads, each its own loop, on one port (default 1; auto: one per CPU)", 0, 0},
      {"--verbose", 'v', OPT_FLAG, &verbose, NULL, "log every connection", 0, 0},
      TLS_SERVER_OPTS(tls),
      {"--handshake-timeout", 0, OPT_SECONDS, &handshake, "S",
       "TLS: close a connection whose handshake is not done in S (default 10)", 0.001, 86400},
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .usage = "[options] [HOST [PORT]]",
      .about = "The guide's application server: answers {\"action\": \"search\", \"value\": KEY}\n"
               "requests and binary requests, any number per connection, in order.",
      .operands = "HOST  address to listen on: IPv4, IPv6, a host name or unix:/path "
                  "(default 127.0.0.1)\nPORT  TCP port (default 65432; 0 picks a free one)",
      .exits = "0  stopped by SIGINT or SIGTERM after finishing the replies in flight\n"
               "1  could not start (address in use, bad dataset, unusable TLS files, ...)\n"
               "2  usage error\n"
               "(with TLS, SIGHUP reloads the certificate and key; open connections stay)",
      .opts = opts,
  };
  const char *pos[2], *host, *port;
  host_port(pos, cli_parse(&cli, argc, argv, pos, 2), &host, &port);
  char *end;
  long threads = strcmp(threads_text, "auto") == 0 ? sysconf(_SC_NPROCESSORS_ONLN)
                                                   : strtol(threads_text, &end, 10);
  if (strcmp(threads_text, "auto") != 0 && (*end || end == threads_text))
    threads = 0;
  if (threads < 1 || threads > 1024) {
    logf_("--threads needs a number from 1 to 1024, or auto, not '%s'", threads_text);
    cli_usage_error(&cli);
  }

  o.server.conn.limits.max_content_length = max_content;
  o.server.conn.idle_timeout_ms = (uint32_t)(idle * 1000);
  o.server.conn.frame_timeout_ms = (uint32_t)(frame * 1000);
  o.server.max_conns = max_conns;
  o.deadline_ms = (uint32_t)(deadline * 1000);
  o.server.reuseport = threads > 1;
  o.log = log_line;
  o.log_level = verbose ? APPMSG_LOG_DEBUG : APPMSG_LOG_INFO;
  o.server.conn.tls = tls_server_setup(&cli, &tls);
  o.server.conn.handshake_timeout_ms = (uint32_t)(handshake * 1000);

  struct dataset data;
  if (data_path ? dataset_load(&data, data_path) : dataset_builtin(&data))
    return 1;
  appmsg_ignore_sigpipe();
  raise_fd_limit();
  /* One service per thread, each on a loop of its own; the dataset is shared, read only. */
  struct appmsg_service **svcs = calloc((size_t)threads, sizeof *svcs);
  int rc = svcs ? 0 : -ENOMEM;
  for (long i = 0; i < threads && rc == 0; i++) {
    rc = appmsg_service_new(&svcs[i], NULL, &o);
    if (rc == 0)
      rc = appmsg_service_handle(svcs[i], "search", on_search, &data);
    if (rc == 0)
      appmsg_service_handle_binary(svcs[i], on_binary, NULL);
  }
  int status = 1;
  if (rc) {
    logf_("cannot start: %s", appmsg_strerror(rc));
  } else {
    char what[64];
    snprintf(what, sizeof what, "%zu keys, %s loop%s", data.count,
             appmsg_loop_backend_name(appmsg_service_loop(svcs[0])),
             !tls.cert ? ""
             : tls.ca  ? ", mutual TLS"
                       : ", TLS");
    status = threads == 1
                 ? serve(svcs[0], host, port, what, 10000)
                 : serve_threads(svcs, (size_t)threads, o.server.conn.tls, host, port, what, 10000);
  }
  for (long i = 0; svcs && i < threads; i++)
    appmsg_service_free(svcs[i]);
  free(svcs);
  appmsg_tls_free(o.server.conn.tls);
  dataset_free(&data);
  return status;
}
