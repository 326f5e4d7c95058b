/*
 * kv-server: an in-memory key-value service.  The framework does framing, request order,
 * errors, limits, timeouts, ping, status and the drain; this file is the store and its actions:
 *   {"action": "set", "key": K, "value": V}  -> "OK"   (V: any JSON value)
 *   {"action": "get", "key": K}              -> V, or an error reply NOT_FOUND
 *   {"action": "delete", "key": K}           -> "OK", or NOT_FOUND
 *   {"action": "keys"}                       -> ["K1", "K2", ...] (sorted)
 */
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

struct item {
  char *key;   /* the tree is ordered by it */
  char *value; /* JSON text */
};

static void *store;                /* a tsearch() tree of struct item */
static struct appmsg_encoder keys; /* the "keys" reply being built */

static int by_key(const void *a, const void *b) {
  return strcmp(((const struct item *)a)->key, ((const struct item *)b)->key);
}

static void free_item(void *p) {
  struct item *it = p;
  free(it->key);
  free(it->value);
  free(it);
}

/* The item under the request's "key" (*key; a string, as described below), or NULL: a new
 * key, or the request was answered NOT_FOUND when the item must exist. */
static struct item *lookup(struct appmsg_request *req, const char **key, int must_exist) {
  *key = appmsg_request_string(req, "key");
  struct item probe = {(char *)*key, NULL}, **node = tfind(&probe, &store, by_key);
  if (node == NULL && must_exist)
    appmsg_reply_error(req, "NOT_FOUND", "no such key");
  return node ? *node : NULL;
}

static void on_set(struct appmsg_request *req, void *ud) {
  (void)ud;
  const char *key, *json;
  size_t len;
  struct item *it = lookup(req, &key, 0);
  json = appmsg_request_json(req, "value", &len);
  char *value = malloc(len + 1); /* (strndup() is not in Windows' C runtime) */
  if (value) {
    memcpy(value, json, len);
    value[len] = '\0';
  }
  if (value && it == NULL && (it = calloc(1, sizeof *it)) != NULL &&
      ((it->key = strdup(key)) == NULL || tsearch(it, &store, by_key) == NULL))
    it = (free_item(it), NULL);
  if (value == NULL || it == NULL) {
    free(value);
    appmsg_reply_error(req, "INTERNAL", "out of memory");
    return;
  }
  free(it->value);
  it->value = value;
  appmsg_reply_result(req, "OK");
}

static void on_get(struct appmsg_request *req, void *ud) {
  (void)ud;
  const char *key;
  struct item *it = lookup(req, &key, 1);
  if (it)
    appmsg_reply_json(req, it->value, strlen(it->value));
}

static void on_delete(struct appmsg_request *req, void *ud) {
  (void)ud;
  const char *key;
  struct item *it = lookup(req, &key, 1);
  if (it) {
    tdelete(it, &store, by_key);
    free_item(it);
    appmsg_reply_result(req, "OK");
  }
}

static void add_key(const void *node, VISIT v, int depth) {
  (void)depth;
  if (v != postorder && v != leaf)
    return; /* in order: each node once */
  const char *key = (*(const struct item *const *)node)->key;
  size_t n = strlen(key), q = appmsg_json_quote(key, n, NULL, 0);
  char *quoted = malloc(q);
  if (quoted && appmsg_encoder_pending(&keys) > 1)
    appmsg_encoder_push_raw(&keys, ", ", 2);
  if (quoted)
    appmsg_encoder_push_raw(&keys, quoted, appmsg_json_quote(key, n, quoted, q));
  free(quoted);
}

static void on_keys(struct appmsg_request *req, void *ud) {
  (void)ud;
  size_t n;
  appmsg_encoder_push_raw(&keys, "[", 1);
  twalk(store, add_key);
  appmsg_encoder_push_raw(&keys, "]", 1);
  const char *json = appmsg_encoder_peek(&keys, &n);
  if (appmsg_reply_json(req, json, n) != 0)
    appmsg_reply_error(req, "INTERNAL", "out of memory");
  appmsg_encoder_cleanup(&keys);
}

/* What each action takes and answers: the service checks requests against it (a missing or
 * mistyped member gets BAD_REQUEST before the handler runs) and answers "describe" with it. */
static const struct appmsg_param key_param[] = {{"key", APPMSG_TYPE_STRING, 1, "the key"}};
static const struct appmsg_param set_params[] = {
    {"key", APPMSG_TYPE_STRING, 1, "the key"},
    {"value", APPMSG_TYPE_ANY, 1, "the value: any JSON value, kept as written"}};
static const struct {
  const char *name;
  appmsg_handler_fn fn;
  struct appmsg_action_doc doc;
} actions[] = {
    {"set", on_set, {"Stores a value under a key", set_params, 2, APPMSG_TYPE_STRING, "\"OK\""}},
    {"get",
     on_get,
     {"The value under a key (NOT_FOUND if none)", key_param, 1, APPMSG_TYPE_ANY,
      "the value as it was set"}},
    {"delete",
     on_delete,
     {"Removes a key (NOT_FOUND if none)", key_param, 1, APPMSG_TYPE_STRING, "\"OK\""}},
    {"keys", on_keys, {"Every key, sorted", NULL, 0, APPMSG_TYPE_ARRAY, "the keys"}},
};

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  struct tls_args tls = {0};
  struct observe_args obs = {0};
  const struct opt opts[] = {
      TLS_SERVER_OPTS(tls), OBSERVE_OPTS(obs), {NULL, 0, 0, NULL, NULL, NULL, 0, 0}};
  const struct cli cli = {
      .usage = "[options] [HOST [PORT]]",
      .about = "An in-memory key-value service: set, get, delete, keys (and ping, status,\n"
               "describe).\n"
               "It runs on one thread; the data lives as long as the process.",
      .operands = "HOST  address to listen on (default 127.0.0.1)\nPORT  TCP port (default 65432)",
      .exits = "0  stopped by SIGINT or SIGTERM\n1  could not start\n2  usage error\n"
               "(with TLS, SIGHUP reloads the certificate and key; open connections stay)",
      .opts = opts,
  };
  const char *pos[2], *host, *port;
  host_port(pos, cli_parse(&cli, argc, argv, pos, 2), &host, &port);
  struct appmsg_service_opts o;
  appmsg_service_opts_default(&o);
  o.log = log_line; /* the library never prints: its log lines go to stderr here */
  o.server.conn.tls = tls_server_setup(&cli, &tls);
  observe_setup(&cli, &obs, &o);
  struct appmsg_service *svc = NULL;
  int status = 1;
  int rc = appmsg_service_new(&svc, NULL, &o);
  if (rc == 0)
    rc = appmsg_service_set_info(svc, "kv-server", appmsg_version());
  for (size_t i = 0; rc == 0 && i < sizeof actions / sizeof actions[0]; i++)
    rc = appmsg_service_handle_doc(svc, actions[i].name, actions[i].fn, NULL, &actions[i].doc);
  if (rc)
    logf_("cannot start: %s", appmsg_strerror(rc));
  else
    status = serve(svc, host, port, !tls.cert ? "key-value store" : "key-value store, TLS",
                   10000); /* until SIGINT/SIGTERM */
  appmsg_service_free(svc);
  appmsg_tls_free(o.server.conn.tls);
  while (store != NULL) { /* POSIX has no tdestroy(): take the root until none is left */
    struct item *it = *(struct item **)store;
    tdelete(it, &store, by_key);
    free_item(it);
  }
  return status;
}
