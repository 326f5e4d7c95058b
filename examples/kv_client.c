/*
 * kv-client: asks kv-server one question with the client library's
 * blocking call (appmsg_ask()) and prints the answer.
 *
 *   kv-client [options] [HOST PORT] set KEY VALUE | get KEY | delete KEY | keys | ping | status
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  double timeout_s = 10;
  int json = 0;
  struct tls_args tls = {0};
  const struct opt opts[] = {
      {"--timeout", 0, OPT_SECONDS, &timeout_s, "S", "give up after S seconds (default 10)", 0.001,
       86400},
      {"--json", 0, OPT_FLAG, &json, NULL, "set: VALUE is JSON text (default: a string)", 0, 0},
      TLS_CLIENT_OPTS(tls),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .usage = "[options] [HOST PORT] set KEY VALUE | get KEY | delete KEY | keys | ping | status",
      .about = "Asks kv-server one question and prints the answer (a string as it is, any\n"
               "other JSON value as JSON).",
      .operands = "HOST PORT  the server (default 127.0.0.1 65432)",
      .exits = "0  answered\n1  no answer (connection failed or timed out)\n2  usage error\n"
               "3  an error reply (NOT_FOUND, BAD_REQUEST, ...)",
      .opts = opts,
  };
  const char *pos[5];
  int n = cli_parse(&cli, argc, argv, pos, 5), k = 0;
  const char *host = DEFAULT_HOST, *port = DEFAULT_PORT;
  static const char *const acts[] = {"set", "get", "delete", "keys", "ping", "status"};
  static const int args[] = {2, 1, 1, 0, 0, 0};
  int a = -1;
  for (int i = 0; i < 6 && n > 0; i++)
    for (int at = 0; at <= 2 && at < n; at += 2) /* the action is first, or after HOST PORT */
      if (strcmp(pos[at], acts[i]) == 0 && n == at + 1 + args[i] && a < 0) {
        a = i;
        k = at;
      }
  if (a < 0)
    cli_usage_error(&cli);
  if (k == 2) {
    host = pos[0];
    port = pos[1];
  }
  const char *key = args[a] > 0 ? pos[k + 1] : NULL, *value = args[a] > 1 ? pos[k + 2] : NULL;
  struct appmsg_answer ans;
  uint32_t ms = (uint32_t)(timeout_s * 1000);
  struct appmsg_client_opts co;
  appmsg_client_opts_default(&co);
  co.conn.tls = tls_client_setup(&cli, &tls);
  co.conn.tls_server_name = tls.name;
  if (value && json) { /* the value as JSON text: the request is built by hand */
    size_t q = appmsg_json_quote(key, strlen(key), NULL, 0), cap = q + strlen(value) + 64;
    char *body = malloc(cap), *quoted = malloc(q + 1);
    if (!body || !quoted) {
      logf_("out of memory");
      return 1;
    }
    quoted[appmsg_json_quote(key, strlen(key), quoted, q)] = '\0';
    struct appmsg_call call = {.content = body};
    call.len = (size_t)snprintf(body, cap, "{\"action\": \"set\", \"key\": %s, \"value\": %s}",
                                quoted, value);
    appmsg_ask_call_with(host, port, &co, ms, &call, &ans);
    free(body);
    free(quoted);
  } else if (value) {
    appmsg_ask_with(host, port, &co, ms, &ans, acts[a], "key", key, "value", value, NULL);
  } else if (key) {
    appmsg_ask_with(host, port, &co, ms, &ans, acts[a], "key", key, NULL);
  } else {
    appmsg_ask_with(host, port, &co, ms, &ans, acts[a], NULL);
  }
  int status = 0;
  if (ans.status == 0 || ans.status == APPMSG_E_ERROR_REPLY) {
    if (ans.result)
      puts(ans.result);
    else if (ans.result_json)
      puts(ans.result_json);
    else
      print_bytes((const unsigned char *)ans.content, ans.len);
    if (ans.error) {
      logf_("error reply: %s", ans.error);
      status = 3;
    }
  } else {
    char where[ENDPOINT_LEN];
    endpoint_text(host, port, where, sizeof where);
    logf_("no answer from %s: %s", where, ans.reason ? ans.reason : appmsg_strerror(ans.status));
    status = 1;
  }
  appmsg_answer_cleanup(&ans);
  appmsg_tls_free(co.conn.tls);
  return status;
}
