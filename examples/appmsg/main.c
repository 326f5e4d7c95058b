/*
 * appmsg: talk to any appmsg service from a shell.
 *
 *   appmsg call [HOST:PORT] ACTION [key=TEXT ...] [key:=JSON ...]
 *   appmsg [prompt [HOST:PORT]]
 *   appmsg describe [HOST:PORT] [ACTION]
 *   appmsg bench [HOST:PORT] ACTION [params] -c CONNS -P PIPELINE (-n N | -t SECONDS)
 *   appmsg ping [HOST:PORT] [-i SECONDS] [-c COUNT]
 *   appmsg watch [HOST:PORT] [-i SECONDS] [-c COUNT]
 *
 * One subcommand a file; what they share is in shared.c (tool.h), and the command lines are
 * read by common.c's parser, as every program of the project's.
 */
#include "tool.h"

static const struct cli_command commands[] = {
    {"call", cmd_call, "send one request and print its answer"},
    {"prompt", cmd_prompt, "an interactive prompt (the default; reads a pipe too)"},
    {"describe", cmd_describe, "the service's actions, their parameters and results"},
    {"bench", cmd_bench, "load any action: requests/s and latency percentiles"},
    {"ping", cmd_ping, "round-trip time of the ping action, once a second"},
    {"watch", cmd_watch, "the service's counters as rates, once a second"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv) {
  prog_init(&argc, &argv);
  appmsg_ignore_sigpipe();
  const struct opt none[] = {{NULL, 0, 0, NULL, NULL, NULL, 0, 0}};
  const struct cli cli = {
      .usage = "[COMMAND] [options] [HOST:PORT] ...",
      .about = "Talks to any appmsg service from a shell: calls its actions, describes them,\n"
               "loads them, watches its counters.  With no command: the prompt.\n"
               "The server is HOST:PORT when given (host:port, [v6addr]:port, :port,\n"
               "unix:/path), else $APPMSG_ADDR, else 127.0.0.1:65432.\n"
               "appmsg COMMAND --help explains each command.",
      .opts = none,
      .exits = "0  answered\n"
               "1  the connection failed, was closed, or timed out\n"
               "2  usage error\n"
               "3  the server answered with an error reply",
      .commands = commands,
  };
  return cli_dispatch(&cli, "prompt", argc, argv);
}
