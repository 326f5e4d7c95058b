/*
 * appmsg describe: a service's actions, from its describe action.
 *
 *   appmsg describe [HOST:PORT] [ACTION]
 *
 * Each action with its one-line summary, its parameters (name, type, required) and its result
 * type, as grpcurl describes a gRPC service; --json gives the document as the service wrote
 * it, and --names the names alone, one a line (with ACTION its parameters, as key= for a string
 * and key:= for another type), for scripts and for the shell's completion.
 */
#include <stdlib.h>
#include <string.h>

#include "tool.h"

struct describe_run {
  const char *action; /* the one asked for, or NULL */
  int json, names, color;
  int status;
  const struct target *t;
  const struct appmsg_client_opts *o;
};

static void print_doc(const struct describe_run *run, const struct service_doc *d) {
  if (run->names) {
    for (size_t i = 0; i < d->n; i++)
      if (run->action)
        for (size_t j = 0; j < d->actions[i].nparams; j++)
          printf("%s%s\n", d->actions[i].params[j].name,
                 strcmp(d->actions[i].params[j].type, "string") == 0 ? "=" : ":=");
      else
        printf("%s\n", d->actions[i].name);
    return;
  }
  if (!run->action)
    printf("%s %s at %s: %zu actions\n", d->title ? d->title : "?", d->version ? d->version : "?",
           run->t->where, d->n);
  for (size_t i = 0; i < d->n; i++) {
    if (!run->action)
      putchar('\n');
    print_action(stdout, &d->actions[i], run->color);
  }
}

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct describe_run *run = ud;
  if (r->header == NULL) {
    report_failure(run->t, run->o, r);
    run->status = EXIT_CONN;
    return;
  }
  if (r->status == APPMSG_E_ERROR_REPLY && r->error && strcmp(r->error, "NOT_FOUND") == 0 &&
      run->action) {
    logf_("%s has no action '%s' (appmsg describe lists them)", run->t->where, run->action);
    run->status = EXIT_ERROR_REPLY;
    return;
  }
  if (r->status != 0 || r->result_json == NULL) {
    if (r->result && strncmp(r->result, "Error: invalid action", 21) == 0)
      logf_("the service at %s does not describe itself (no describe action)", run->t->where);
    else
      print_reply(r, 0, 0, stderr);
    run->status = r->status == APPMSG_E_ERROR_REPLY ? EXIT_ERROR_REPLY : EXIT_CONN;
    return;
  }
  if (run->json) {
    print_json_line(stdout, r->result_json, r->result_json_len);
    run->status = EXIT_ANSWERED;
    return;
  }
  struct service_doc d;
  int rc = service_doc_parse(&d, r->result_json, r->result_json_len, run->action != NULL);
  if (rc == 0) {
    print_doc(run, &d);
    run->status = EXIT_ANSWERED;
  } else {
    logf_("the service at %s answered describe with something else than a description:",
          run->t->where);
    print_json_pretty(stderr, r->result_json, r->result_json_len, 0);
    run->status = EXIT_CONN;
  }
  service_doc_free(&d);
  fflush(stdout);
}

int cmd_describe(int argc, char **argv) {
  struct conn_args ca = {.timeout_s = 10};
  struct describe_run run = {0};
  const struct opt opts[] = {
      {"--json", 0, OPT_FLAG, &run.json, NULL, "print the description as the service wrote it", 0,
       0},
      {"--names", 0, OPT_FLAG, &run.names, NULL,
       "only the names, one a line: the actions', or ACTION's parameters' as key= (a string) or "
       "key:= (another type)",
       0, 0},
      CONN_OPTS(ca, "give up when no answer came after SECONDS (default 10)"),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .command = "describe",
      .usage = "[options] [HOST:PORT] [ACTION]",
      .about = "Lists the service's actions (its describe action): each with its summary, its\n"
               "parameters (name, type, required or optional) and the type of its result.\n"
               "A parameter shown key=TEXT is a string; key:=JSON any other JSON value.",
      .operands = "HOST:PORT  the server (default $APPMSG_ADDR, else 127.0.0.1:65432)\n"
                  "ACTION     describe this action alone",
      .exits = "0  described\n"
               "1  the connection failed, was closed, or timed out\n"
               "2  usage error\n"
               "3  no such action (or another error reply)",
      .opts = opts,
  };
  const char *pos[3];
  int npos;
  struct target t;
  int at = parse_target(&cli, argc, argv, pos, 2, &t, &npos);
  if (npos - at > 1) {
    logf_("describe takes one ACTION at most");
    cli_usage_error(&cli);
  }
  run.action = at < npos ? pos[at] : NULL;
  if (run.json && run.names) {
    logf_("--json or --names, not both");
    cli_usage_error(&cli);
  }
  struct appmsg_client_opts o;
  client_opts_setup(&cli, &ca, &o);
  run.t = &t;
  run.o = &o;
  run.color = use_color();
  run.status = EXIT_CONN;
  struct appmsg_call call = {0};
  char *body = NULL;
  struct appmsg_arg name = APPMSG_ARG_S("name", run.action);
  if (appmsg_request_build(&body, &call.len, "describe", &name, run.action ? 1 : 0) != 0) {
    logf_("'%s' cannot be an action name (not valid UTF-8)", run.action);
    appmsg_tls_free(o.conn.tls);
    return EXIT_USAGE;
  }
  call.content = body;
  if (call_once(&t, &o, &call, on_reply, &run) != 0)
    run.status = EXIT_CONN;
  free(body);
  appmsg_tls_free(o.conn.tls);
  return run.status;
}
