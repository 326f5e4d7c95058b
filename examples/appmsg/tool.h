/* What the subcommands of appmsg share: the endpoint, the connection's options, requests made
 * of words, the printing of replies, and a service's description. */
#ifndef APPMSG_TOOL_H
#define APPMSG_TOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "appmsg/appmsg.h"
#include "common.h"

/* Exit statuses, as app-client's. */
#define EXIT_ANSWERED 0
#define EXIT_CONN 1 /* the connection failed, was closed, or timed out */
#define EXIT_USAGE 2
#define EXIT_ERROR_REPLY 3 /* the server answered with an error reply */

/* The subcommands (main.c dispatches). */
int cmd_call(int argc, char **argv);
int cmd_prompt(int argc, char **argv);
int cmd_describe(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_ping(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* ---- where, and how to connect ---------------------------------------------------------- */

/* The server: an operand HOST:PORT, else $APPMSG_ADDR, else 127.0.0.1:65432. */
struct target {
  struct appmsg_endpoint ep; /* host and port */
  char where[ENDPOINT_LEN];  /* "127.0.0.1:65432", for messages */
};

/* The options every subcommand that connects has, with where their values go. */
struct conn_args {
  double timeout_s;    /* --timeout */
  struct tls_args tls; /* --tls ... */
};

#define CONN_OPTS(a, what)                                                                         \
  {"--timeout", 0, OPT_SECONDS, &(a).timeout_s, "SECONDS", what, 0.001, 86400},                    \
      TLS_CLIENT_OPTS((a).tls)

/* Whether an operand is an endpoint rather than an action: unix:/path, [v6]:port, host:port,
 * :port (an action or a key=value never looks so: no '=' and a colon). */
int is_endpoint(const char *s);

/* Sets *t from an operand (NULL: $APPMSG_ADDR, else the default); a bad one is a usage error. */
void target_set(const struct cli *c, struct target *t, const char *operand);

/* Reads the command line (cli_parse(), at most maxpos operands into pos, *npos of them) and
 * the server from its first operand when that is HOST:PORT, else as target_set() does.  With
 * maxpos 1 that operand must be HOST:PORT (a usage error otherwise).  Returns the index of
 * the first operand after the server (0 or 1). */
int parse_target(const struct cli *c, int argc, char **argv, const char **pos, int maxpos,
                 struct target *t, int *npos);

/* Runs the loop, cb called at once and every interval_s seconds, until SIGINT or SIGTERM (or
 * the loop is stopped); tick is stopped at the end. */
void run_every(struct appmsg_loop *loop, struct appmsg_timer *tick, double interval_s,
               appmsg_timer_cb cb, void *ud);

/* Client options from the connection's: timeouts, TLS (the context is the caller's to free
 * with appmsg_tls_free(o->conn.tls)), no reconnecting. */
void client_opts_setup(const struct cli *c, struct conn_args *a, struct appmsg_client_opts *o);

/* Why a call got no reply (r->header NULL), with what to check, as a sentence in buf. */
void failure_text(const struct target *t, const struct appmsg_client_opts *o,
                  const struct appmsg_reply *r, char *buf, size_t len);

/* Says it on stderr. */
void report_failure(const struct target *t, const struct appmsg_client_opts *o,
                    const struct appmsg_reply *r);

/* Says why a call was refused at once (rc from appmsg_client_send()). */
void report_refused(const struct target *t, struct appmsg_client *cl, int rc);

/* ---- one request, one reply ------------------------------------------------------------------ */

/* Sends one request to t over a connection of its own and waits for its reply, which cb gets
 * (the loop and client are made and freed here).  Returns 0 once cb ran, or the code the send
 * refused the request with (said on stderr; cb never runs). */
int call_once(const struct target *t, const struct appmsg_client_opts *o,
              const struct appmsg_call *call, appmsg_call_fn cb, void *ud);

/* ---- requests made of words --------------------------------------------------------------- */

/* A request's members from words key=TEXT and key:=JSON (httpie's syntax). */
struct params {
  struct appmsg_arg *args; /* n of them, pointing into owned */
  char **owned;            /* the keys, copied */
  size_t n;
};

/* Reads the words; on a bad one, says why in err and returns -EINVAL.  Returns 0 or -ENOMEM. */
int params_parse(struct params *p, char *const *words, size_t n, char *err, size_t errlen);
void params_free(struct params *p);

/* The request {"action": action, params...} as a call's content (malloc'd, in *body). */
int request_make(const char *action, const struct params *p, char **body, size_t *len);

/* ---- printing ---------------------------------------------------------------------------- */

/* Whether to colour what goes to stdout: a terminal, and NO_COLOR unset or empty. */
int use_color(void);

/* JSON text (checked) indented two spaces a level, keys, strings and numbers coloured when
 * color is set; a newline follows. */
void print_json_pretty(FILE *f, const char *json, size_t len, int color);

/* JSON text (checked) on one line, whitespace between tokens dropped; a newline follows. */
void print_json_line(FILE *f, const char *json, size_t len);

/* Prints a reply for a person (strings as text, other results indented, error replies as
 * "NAME: reason" to errors, binary content safely on a terminal and as it is otherwise), or,
 * with json, its content as one line of JSON.  Returns the exit status it stands for. */
int print_reply(const struct appmsg_reply *r, int json, int color, FILE *errors);

/* ---- a service's description (the describe action) ----------------------------------------- */

struct param_doc {
  char *name, *type, *summary; /* type: "string" ... or "any"; summary may be NULL */
  int required;
};

struct action_doc {
  char *name, *summary; /* summary may be NULL */
  char *result_type, *result_summary;
  int described; /* 0: registered without a description ("x-described": false) */
  struct param_doc *params;
  size_t nparams;
};

struct service_doc {
  char *title, *version;
  struct action_doc *actions;
  size_t n;
};

/* Reads describe's result (the whole document, or one method when one is true).  Returns 0,
 * -EINVAL (not shaped as describe answers) or -ENOMEM. */
int service_doc_parse(struct service_doc *d, const char *json, size_t len, int one);
void service_doc_free(struct service_doc *d);
const struct action_doc *service_doc_find(const struct service_doc *d, const char *name);

/* An action as "describe ACTION" prints it: its line, summary, parameters, result. */
void print_action(FILE *f, const struct action_doc *a, int color);

/* The time on the monotonic clock, in nanoseconds. */
uint64_t now_ns(void);

#endif
