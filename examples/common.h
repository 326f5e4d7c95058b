/* What the example programs share: logging, command lines, addresses, I/O loops. */
#ifndef APPMSG_EXAMPLES_COMMON_H
#define APPMSG_EXAMPLES_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

#include "appmsg/appmsg.h"

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "65432"

/* Room for "host:port" as endpoint_text() writes it, for any host a user can type. */
#define ENDPOINT_LEN (APPMSG_ADDRSTRLEN + 300)

/* ---- logging ---------------------------------------------------------- */

/* Sets the program name used in log lines (call first in main). */
void prog_init(const char *name);

/* Logs one line to stderr: "app-server: message". */
void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* An appmsg_log_fn that logs each line with logf_() (ud unused). */
void log_line(void *ud, enum appmsg_log_level level, const char *line);

/* ---- command lines ------------------------------------------------------ */

enum opt_type {
  OPT_FLAG,    /* no value; dest is an int set to 1 */
  OPT_STRING,  /* dest is a const char * */
  OPT_COUNT,   /* a whole number in [min, max]; dest is an unsigned long */
  OPT_SECONDS, /* a number of seconds in [min, max], fractions allowed; dest is a double */
};

/* One option of a program. */
struct opt {
  const char *name;    /* "--timeout" */
  char short_name;     /* 'v' for -v, or 0 */
  enum opt_type type;  /* what its value is */
  void *dest;          /* where the value goes */
  const char *metavar; /* the value's name in the help ("SECONDS"), NULL for a flag */
  const char *help;    /* what it does, with its default */
  double min, max;     /* the range of a number */
};

/* A program's command line. */
struct cli {
  const char *usage;      /* after the program name: "[options] [HOST [PORT]]" */
  const char *about;      /* what the program does, a few lines */
  const struct opt *opts; /* ends with an entry whose name is NULL */
  const char *operands;   /* the operands explained, a few lines (may be NULL) */
  const char *exits;      /* the exit statuses, one a line (may be NULL: 0 and 2) */
};

/*
 * Reads argv: options anywhere before "--", as "--opt VALUE" or
 * "--opt=VALUE" (or "-x"), and -h/--help (prints the usage line, every
 * option with its meaning and default, the exit statuses; exits 0) and
 * --version (exits 0).  Everything else is an operand, stored in order in
 * pos.  A bad option, value or operand count (more than maxpos) prints
 * why and the usage to stderr and exits 2.  Returns the operand count.
 */
int cli_parse(const struct cli *c, int argc, char **argv, const char **pos, int maxpos);

/* Prints "usage: PROG USAGE" to stderr and exits 2. */
void cli_usage_error(const struct cli *c) __attribute__((noreturn));

/* Reads optional HOST and PORT operands (defaults 127.0.0.1 65432). */
void host_port(const char **pos, int npos, const char **host, const char **port);

/* ---- TLS ---------------------------------------------------------------- */

/* The TLS options of a server and of a client, with where their values go. */
struct tls_args {
  const char *cert, *key, *ca; /* --tls-cert, --tls-key; --tls-client-ca or --tls-ca */
  const char *name;            /* --tls-name (clients) */
  int use, insecure;           /* --tls, --tls-insecure (clients) */
};

/* Their entries in a program's option table (a server's, a client's). */
#define TLS_SERVER_OPTS(a)                                                                         \
  {"--tls-cert",                                                                                   \
   0,                                                                                              \
   OPT_STRING,                                                                                     \
   &(a).cert,                                                                                      \
   "FILE",                                                                                         \
   "serve over TLS with this certificate chain (PEM: certificate first)",                          \
   0,                                                                                              \
   0},                                                                                             \
      {"--tls-key", 0, OPT_STRING, &(a).key, "FILE", "the certificate's private key (PEM)", 0, 0}, \
  {                                                                                                \
    "--tls-client-ca", 0, OPT_STRING, &(a).ca, "FILE",                                             \
        "mutual TLS: require a client certificate signed by a CA in FILE", 0, 0                    \
  }
#define TLS_CLIENT_OPTS(a)                                                                          \
  {"--tls", 0, OPT_FLAG, &(a).use, NULL, "speak TLS (verifying the server's certificate)", 0, 0},   \
      {"--tls-ca", 0,      OPT_STRING,                                                              \
       &(a).ca,    "FILE", "trust the CAs in FILE (default: the system's store)",                   \
       0,          0},                                                                              \
      {"--tls-cert",                                                                                \
       0,                                                                                           \
       OPT_STRING,                                                                                  \
       &(a).cert,                                                                                   \
       "FILE",                                                                                      \
       "present this client certificate (mutual TLS)",                                              \
       0,                                                                                           \
       0},                                                                                          \
      {"--tls-key", 0, OPT_STRING, &(a).key, "FILE", "the client certificate's private key", 0, 0}, \
      {"--tls-name",                                                                                \
       0,                                                                                           \
       OPT_STRING,                                                                                  \
       &(a).name,                                                                                   \
       "NAME",                                                                                      \
       "the server's name to verify and send (default: HOST)",                                      \
       0,                                                                                           \
       0},                                                                                          \
  {                                                                                                 \
    "--tls-insecure", 0, OPT_FLAG, &(a).insecure, NULL,                                             \
        "INSECURE: do not verify the server's certificate or name", 0, 0                            \
  }

/*
 * The server's TLS context from its options: NULL (plaintext) when none
 * was given; a usage error (exit 2) for --tls-key or --tls-client-ca
 * without --tls-cert or the reverse; exit 1 with the reason for files that
 * cannot be used.
 */
struct appmsg_tls *tls_server_setup(const struct cli *c, const struct tls_args *a);

/* The client's TLS context (NULL without --tls), as tls_server_setup();
 * the --tls-* options without --tls are a usage error. */
struct appmsg_tls *tls_client_setup(const struct cli *c, const struct tls_args *a);

/* ---- addresses, errors, clocks ---------------------------------------- */

/* "host:port" as a person would type it: "[::1]:65432", "unix:/path". */
void endpoint_text(const char *host, const char *port, char *buf, size_t len);

/* A human hint for a failed connect: "connection refused", "timed out". */
const char *connect_hint(int err);

/* Milliseconds on the monotonic clock. */
uint64_t now_ms(void);

/* ---- blocking I/O (the guide's echo programs) ------------------------------ */

/* Sends all of buf on a blocking socket.  Returns 0 or a negated errno. */
int send_all(int fd, const void *buf, size_t len);

/* Reads until want bytes are in buf or the stream ends.  Returns the count
 * or a negated errno. */
ssize_t recv_upto(int fd, void *buf, size_t want);

/* ---- serving ------------------------------------------------------------ */

/*
 * Listens on host:port (saying what to check when that fails: a port in
 * use, a name that does not resolve), logs "listening on ADDRESS (what)",
 * serves until SIGINT/SIGTERM, drains for at most drain_ms and logs
 * "bye".  Returns the exit status: 0, or 1 when it could not listen.
 */
int serve(struct appmsg_service *svc, const char *host, const char *port, const char *what,
          uint32_t drain_ms);

/*
 * serve() for n services, one per thread, each on its own loop (made with
 * appmsg_service_new(&svc, NULL, ...)), all on host:port: on TCP each
 * listens with SO_REUSEPORT (the services' opts must have
 * server.reuseport set) and the kernel spreads connections among them; on
 * a Unix socket they share one.  Their status is summed.  The main thread
 * waits for SIGINT/SIGTERM, then stops every loop and each thread drains
 * its service; with tls (the context every service's connections share),
 * SIGHUP reloads its certificate and key meanwhile.  Returns the exit
 * status.
 */
int serve_threads(struct appmsg_service **svcs, size_t n, struct appmsg_tls *tls, const char *host,
                  const char *port, const char *what, uint32_t drain_ms);

/* Raises the soft RLIMIT_NOFILE to the hard one (servers hold many sockets). */
void raise_fd_limit(void);

/* ---- text ----------------------------------------------------------------- */

/*
 * Writes Python's repr() of (at most max bytes of) a bytes object into out:
 * b'...' with the quote and backslash escaped, \t \n \r, other bytes
 * outside printable ASCII as \xNN, double quotes when the bytes hold ' but
 * no "; "..." follows when it was cut short.  out needs 4 * max + 8 bytes.
 */
void bytes_repr(const unsigned char *p, size_t n, size_t max, char *out);

/* Prints bytes safely and a newline: UTF-8 text as is, other bytes as \xNN. */
void print_bytes(const unsigned char *p, size_t n);

#endif
