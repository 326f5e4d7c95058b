/*
 * app-server: the guide's application server, as a service (service.h).
 *
 *   text/json {"action": "search", "value": KEY} -> {"result": ANSWER}
 *   any other content type -> binary/custom-server-binary-type,
 *     "First 10 bytes of request: " + the first 10 bytes of the content
 *
 * The service does the rest: framing and its errors, request order,
 * unknown actions (the guide's wording), ping and status, timeouts,
 * limits, the drain on SIGINT/SIGTERM.  With --redis the answers come
 * from Redis (redis_store.h), and --load fills Redis from a --data file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"
#include "dataset.h"
#include "redis_store.h"

/* Where a thread's answers come from: the dataset (shared, read only), or
 * the thread's own Redis store when store is set. */
struct source {
  const struct dataset *set;
  struct redis_store *store;
};

static void on_search(struct appmsg_request *req, void *ud) {
  const struct source *data = ud;
  const char *key = appmsg_request_string(req, "value"); /* a string: see search_doc */
  if (data->store) {
    redis_store_search(data->store, req, key);
    return;
  }
  const char *answer = dataset_get(data->set, key);
  if (answer)
    appmsg_reply_result(req, answer);
  else
    reply_no_match(req, key);
}

/* What search takes and answers (the service checks requests against it and answers
 * "describe" with it). */
static const struct appmsg_param search_params[] = {
    {"value", APPMSG_TYPE_STRING, 1, "the word to look up (\"morpheus\", \"ring\", ...)"}};
static const struct appmsg_action_doc search_doc = {
    "Looks a word up in the guide's table (or in Redis, with --redis)", search_params, 1,
    APPMSG_TYPE_STRING, "the answer, or \"No match for 'WORD'.\""};

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
  prog_init(&argc, &argv);
  struct appmsg_service_opts o;
  appmsg_service_opts_default(&o);
  const char *data_path = NULL, *redis = NULL, *load = NULL;
  struct redis_store_opts ro;
  redis_store_opts_default(&ro);
  double redis_timeout = ro.timeout_ms / 1000.0;
  unsigned long max_content = 1UL << 20, max_conns = 10000;
  double idle = 60, frame = 10, deadline = 30, handshake = 10;
  int verbose = 0;
  struct tls_args tls = {0};
  struct observe_args obs = {0};
  const char *threads_text = "1";
  const struct opt opts[] = {
      {"--data", 0, OPT_STRING, &data_path, "FILE",
       "answer searches from FILE, a JSON object of strings (default: the guide's 3 keys)", 0, 0},
      {"--redis", 0, OPT_STRING, &redis, "ADDR",
       "answer searches from Redis at ADDR (HOST:PORT, [IPV6]:PORT or unix:/path)", 0, 0},
      {"--redis-prefix", 0, OPT_STRING, &ro.prefix, "P",
       "with --redis: search KEY reads the Redis key P+KEY (default: none)", 0, 0},
      {"--redis-timeout", 0, OPT_SECONDS, &redis_timeout, "S",
       "with --redis: a search Redis does not answer in S gets UNAVAILABLE (default 1)", 0.001,
       3600},
      {"--load", 0, OPT_STRING, &load, "FILE",
       "with --redis: write FILE (as for --data) into Redis, report the count and exit", 0, 0},
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
      OBSERVE_OPTS(obs),
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
  long threads = strcmp(threads_text, "auto") == 0 ? cpu_count() : strtol(threads_text, &end, 10);
  if (strcmp(threads_text, "auto") != 0 && (*end || end == threads_text))
    threads = 0;
  if (threads < 1 || threads > 1024) {
    logf_("--threads needs a number from 1 to 1024, or auto, not '%s'", threads_text);
    cli_usage_error(&cli);
  }
  if ((load || ro.prefix[0]) && !redis) {
    logf_("%s needs --redis", load ? "--load" : "--redis-prefix");
    cli_usage_error(&cli);
  }
  struct redis_addr addr;
  char what[APPMSG_ADDRSTRLEN + 600];
  if (redis && redis_addr_parse(redis, &addr, what, sizeof what) != 0) {
    logf_("--redis: %s", what);
    cli_usage_error(&cli);
  }
  if (redis && data_path) {
    logf_("--data and --redis are two sources of answers: pick one");
    cli_usage_error(&cli);
  }
  ro.addr = redis;
  ro.timeout_ms = (uint32_t)(redis_timeout * 1000 + 0.5);
  if (redis && !load && deadline > 0 && redis_timeout >= deadline)
    logf_("note: --redis-timeout %g is not below --deadline %g: searches Redis does not answer get "
          "TIMEOUT first",
          redis_timeout, deadline);
  if (load)
    return redis_load(redis, ro.prefix, load, ro.timeout_ms);

  o.server.conn.limits.max_content_length = max_content;
  o.server.conn.idle_timeout_ms = (uint32_t)(idle * 1000);
  o.server.conn.frame_timeout_ms = (uint32_t)(frame * 1000);
  o.server.max_conns = max_conns;
  o.deadline_ms = (uint32_t)(deadline * 1000);
  o.server.reuseport = threads > 1 && appmsg_can_share_port(); /* else one shared listener */
  o.log = log_line;
  o.log_level = verbose ? APPMSG_LOG_DEBUG : APPMSG_LOG_INFO;
  o.server.conn.tls = tls_server_setup(&cli, &tls);
  o.server.conn.handshake_timeout_ms = (uint32_t)(handshake * 1000);
  observe_setup(&cli, &obs, &o);

  struct dataset data = {0};
  if (!redis && (data_path ? dataset_load(&data, data_path) : dataset_builtin(&data)))
    return 1;
  appmsg_ignore_sigpipe();
  raise_fd_limit();
  /* One service per thread, each on a loop of its own; the dataset is shared, read only; with
   * --redis each thread has its own store (its own connection to Redis). */
  struct appmsg_service **svcs = calloc((size_t)threads, sizeof *svcs);
  struct source *srcs = calloc((size_t)threads, sizeof *srcs);
  struct redis_store **stores = calloc((size_t)threads, sizeof *stores);
  int rc = svcs && srcs && stores ? 0 : -ENOMEM, store_failed = 0;
  for (long i = 0; i < threads && rc == 0 && !store_failed; i++) {
    srcs[i].set = &data;
    rc = appmsg_service_new(&svcs[i], NULL, &o);
    if (rc == 0)
      rc = appmsg_service_set_info(svcs[i], "app-server", appmsg_version());
    if (rc == 0)
      rc = appmsg_service_handle_doc(svcs[i], "search", on_search, &srcs[i], &search_doc);
    if (rc == 0)
      appmsg_service_handle_binary(svcs[i], on_binary, NULL);
    if (rc == 0 && redis) {
      store_failed =
          redis_store_new(&stores[i], appmsg_service_loop(svcs[i]), &ro, what, sizeof what) != 0;
      srcs[i].store = stores[i];
      if (!store_failed) {
        appmsg_service_status_hook(svcs[i], redis_store_status, stores[i]);
        appmsg_service_metrics_hook(svcs[i], redis_store_metrics, stores[i]);
      }
    }
  }
  if (rc == 0 && !store_failed && redis)
    rc = redis_store_group(stores, (size_t)threads);
  int status = 1;
  if (rc) {
    logf_("cannot start: %s", appmsg_strerror(rc));
  } else if (store_failed) {
    logf_("%s", what);
  } else {
    const char *backend = appmsg_loop_backend_name(appmsg_service_loop(svcs[0]));
    const char *secure = !tls.cert ? "" : tls.ca ? ", mutual TLS" : ", TLS";
    if (redis)
      snprintf(what, sizeof what, "data in Redis at %s, %s loop%s", redis, backend, secure);
    else
      snprintf(what, sizeof what, "%zu keys, %s loop%s", data.count, backend, secure);
    status = threads == 1
                 ? serve(svcs[0], host, port, what, 10000)
                 : serve_threads(svcs, (size_t)threads, o.server.conn.tls, host, port, what, 10000);
  }
  /* The stores first: they answer the requests still waiting for Redis. */
  for (long i = 0; stores && i < threads; i++)
    redis_store_free(stores[i]);
  for (long i = 0; svcs && i < threads; i++)
    appmsg_service_free(svcs[i]);
  free(stores);
  free(srcs);
  free(svcs);
  appmsg_tls_free(o.server.conn.tls);
  dataset_free(&data);
  return status;
}
