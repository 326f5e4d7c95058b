/* What the example programs share: logging, command lines, addresses, I/O loops. */
#ifndef APPMSG_EXAMPLES_COMMON_H
#define APPMSG_EXAMPLES_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

#include "appmsg/appmsg.h"

/* ---- what differs on Windows ----------------------------------------------------
 *
 * Every difference between POSIX systems and Windows that the programs meet is
 * here and in the same section of common.c (each helper below is one
 * #ifdef _WIN32 there); the programs themselves have none.  Sockets are
 * appmsg_socket_t and errors negated errno values on both (appmsg/socket.h).
 * Also there, for serve_threads(): how the main thread waits for SIGINT and
 * SIGTERM (sigwait() on POSIX; a loop of its own on Windows, which has no
 * sigwait()).  The appmsg command's prompt has no line editing on Windows
 * (there is no libedit: APPMSG_HAVE_LIBEDIT is not defined): it reads
 * standard input through stdin_open(), and is_terminal() tells it whether to
 * show its prompt and wait for each answer.
 */

/* The printf checking of logf_(): mingw-w64's C99 printf (%zu, %lld) is gnu_printf. */
#ifdef _WIN32
#define PRINTF_LIKE(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#endif

/* Closes a socket the program made or accepted itself (close(); closesocket() on Windows).
 * APPMSG_INVALID_SOCKET is ignored. */
void sock_close(appmsg_socket_t s);

/* Waits until s is readable (data, the end of the stream, or an error to read), at most
 * timeout_ms (< 0: no limit): poll(); WSAPoll() on Windows, where SO_RCVTIMEO cannot bound
 * a receive on the library's sockets.  Returns 1 when readable, 0 when the time ran out, or
 * a negated errno (-EIO for a failure on Windows, whose codes are not errno values). */
int wait_readable(appmsg_socket_t s, int timeout_ms);

/* The processors online (sysconf(), -1 if unknown; GetSystemInfo() on Windows, at least 1). */
long cpu_count(void);

/* Raises the soft RLIMIT_NOFILE to the hard one (servers hold many sockets).  Nothing on
 * Windows, which counts no sockets against a descriptor limit. */
void raise_fd_limit(void);

/*
 * Standard input as a socket the loop can watch, for app-client's "-".  On
 * POSIX it is stdin itself (fd 0), as the loop watches any descriptor.  On
 * Windows, whose loop (WSAPoll) watches sockets only, it is the reading end
 * of a connected loopback TCP pair: a thread of its own reads stdin and
 * sends what it reads into the other end, and closes that end at the end of
 * the input (the reading end then reads 0); a read error ends the input
 * too, and stdin_read() returns it.  *fd is non-blocking on Windows; on
 * POSIX it is stdin as the program was given it.  Returns 0 and *fd, owned
 * by the caller until stdin_close(), or a negated errno (Windows: the pair
 * or the thread could not be made).
 */
int stdin_open(appmsg_socket_t *fd);

/* Reads what stdin_open()'s fd holds: the bytes read, 0 at the end of the input, -EAGAIN
 * when nothing is there yet, or a negated errno (read(); on Windows the error the thread
 * met reading stdin, once the bytes it read before are used). */
ssize_t stdin_read(appmsg_socket_t fd, void *buf, size_t len);

/* Lets go of stdin_open()'s fd: nothing on POSIX (stdin stays open); on Windows closes the
 * reading end (the thread, if still reading, ends at its next send, or with the process). */
void stdin_close(appmsg_socket_t fd);

/* The time now, UTC, to the millisecond (clock_gettime(CLOCK_REALTIME) and gmtime_r();
 * GetSystemTimeAsFileTime() and gmtime_s() on Windows). */
struct tm;
void wall_clock_utc(struct tm *tm, int *ms);

/* The program's name for log lines, from argv[0]: what follows the last '/' (or, on
 * Windows, '\\' or ':'), without a final ".exe" on Windows.  Static storage. */
const char *prog_name(const char *argv0);

/* Whether fd (0, 1, 2) is a terminal: isatty(); _isatty() on Windows, where a console is one. */
int is_terminal(int fd);

/* The directory of the user's own files: $HOME; on Windows %USERPROFILE% (else $HOME).  NULL
 * when neither is set. */
const char *home_dir(void);

/* Makes a directory only the user may enter (mkdir(path, 0700); _mkdir() on Windows).  Returns
 * 0, also when it is there already, or a negated errno. */
int make_dir(const char *path);

/* ---- end of what differs on Windows ---------------------------------------------- */

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "65432"

/* Room for "host:port" as endpoint_text() writes it, for any host a user can type. */
#define ENDPOINT_LEN (APPMSG_ADDRSTRLEN + 300)

/* ---- logging ---------------------------------------------------------- */

/* Call first in main: sets the program name used in log lines (prog_name() of argv[0]).  On
 * Windows it also replaces *argv by the arguments in UTF-8, as on POSIX (the C runtime's are
 * in the ANSI code page, which has no emoji; the new array is never freed), and has a
 * console show UTF-8 output (its code page restored at exit). */
void prog_init(int *argc, char ***argv);

/* Logs one line to stderr: "app-server: message". */
void logf_(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* An appmsg_log_fn that logs each line with logf_() (ud unused). */
void log_line(void *ud, enum appmsg_log_level level, const char *line);

/* ---- command lines ------------------------------------------------------ */

enum opt_type {
  OPT_FLAG,    /* no value; dest is an int set to 1 */
  OPT_STRING,  /* dest is a const char * */
  OPT_COUNT,   /* a whole number in [min, max]; dest is an unsigned long */
  OPT_SECONDS, /* a number of seconds in [min, max], fractions allowed; dest is a double */
  OPT_LIST,    /* a string that may be given several times; dest is a struct opt_list */
};

/* The values of an OPT_LIST option, in the order given (at most OPT_LIST_MAX of them). */
#define OPT_LIST_MAX 32
struct opt_list {
  const char *v[OPT_LIST_MAX];
  int n;
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
  const char *usage;                  /* after the program name: "[options] [HOST [PORT]]" */
  const char *about;                  /* what the program does, a few lines */
  const struct opt *opts;             /* ends with an entry whose name is NULL */
  const char *operands;               /* the operands explained, a few lines (may be NULL) */
  const char *exits;                  /* the exit statuses, one a line (may be NULL: 0 and 2) */
  const struct cli_command *commands; /* a program of subcommands: them (else NULL) */
  const char *command;                /* a subcommand's cli: its name ("call"), else NULL */
};

/* A subcommand of a program made of several ("appmsg call ..."): run() gets argv from the
 * subcommand's name on (argv[0] is "call"), parses it with cli_parse() as a program of its
 * own (its cli's command is its name: usage and help then say "appmsg call"), and returns the
 * exit status. */
struct cli_command {
  const char *name;                  /* "call"; NULL ends the table */
  int (*run)(int argc, char **argv); /* the subcommand */
  const char *summary;               /* one line for the program's help */
};

/*
 * Reads argv: options anywhere before "--", as "--opt VALUE" or
 * "--opt=VALUE" (or "-x"), and -h/--help (prints the usage line, every
 * option with its meaning and default, the exit statuses; exits 0) and
 * --version (exits 0).  In a build whose library has no TLS (where
 * examples/CMakeLists.txt defines APPMSG_EXAMPLES_NO_TLS: always on
 * Windows), both add the line "TLS: not in this build (built without
 * OpenSSL)" for a program with --tls options.  Everything else is an
 * operand, stored in order in pos.  A bad option, value or operand count
 * (more than maxpos) prints why and the usage to stderr and exits 2.
 * Returns the operand count.
 */
int cli_parse(const struct cli *c, int argc, char **argv, const char **pos, int maxpos);

/*
 * For a program of subcommands (c->commands): runs the one argv[1] names
 * with argv from there on, and returns its exit status.  With no
 * subcommand, or when argv[1] is an option other than -h, --help and
 * --version, runs dflt (if not NULL) with the whole command line, its
 * argv[0] being dflt's name.  -h/--help (the usage, c->about, every
 * subcommand with its summary) and --version exit 0; an unknown
 * subcommand is a usage error (exit 2).
 */
int cli_dispatch(const struct cli *c, const char *dflt, int argc, char **argv);

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
int send_all(appmsg_socket_t fd, const void *buf, size_t len);

/* Reads until want bytes are in buf or the stream ends, each read waiting at most
 * timeout_ms (< 0: no limit; see wait_readable()).  Returns the count, APPMSG_E_TIMEOUT
 * when a read waited that long, or a negated errno. */
ssize_t recv_upto(appmsg_socket_t fd, void *buf, size_t want, int timeout_ms);

/* ---- lines of standard input, read as a loop runs --------------------------------- */

/* Standard input cut into lines while a loop serves its other users (app-client -, the appmsg
 * prompt over a pipe).  Zero it, set fd (stdin_open()'s) and loop; free buf at the end. */
struct line_input {
  appmsg_socket_t fd;       /* stdin, as stdin_open() gives it */
  struct appmsg_loop *loop; /* run while stdin has nothing to read */
  char *buf;
  size_t start, len, cap; /* the bytes not yet used are buf[start, len) */
  int eof;
  int plain_file; /* the loop cannot watch stdin (a regular file): read it without waiting */
};

/* The next line (NUL-terminated, a last line without a newline too; valid until the next
 * call), or NULL at the end of the input or on a failure (*err: a negated errno from the read,
 * or the loop's error).  The loop runs while a line is incomplete. */
char *line_input_next(struct line_input *in, int *err);

/* ---- observing a service ------------------------------------------------------ */

/* A server's options for watching it run, with where their values go. */
struct observe_args {
  const char *metrics;    /* --metrics ADDR:PORT */
  const char *log_format; /* --log-format text|json */
  unsigned long slow_ms;  /* --slow-ms MS */
  int no_measure;         /* --no-measure */
};

#define OBSERVE_OPTS(a)                                                                            \
  {"--metrics",                                                                                    \
   0,                                                                                              \
   OPT_STRING,                                                                                     \
   &(a).metrics,                                                                                   \
   "ADDR:PORT",                                                                                    \
   "serve /metrics (Prometheus), /status and a status page over HTTP on ADDR:PORT, e.g. "          \
   "127.0.0.1:9465 (default: off; it has no authentication: keep it on loopback)",                 \
   0,                                                                                              \
   0},                                                                                             \
      {"--log-format",                                                                             \
       0,                                                                                          \
       OPT_STRING,                                                                                 \
       &(a).log_format,                                                                            \
       "FORMAT",                                                                                   \
       "text (default), or json: one object per line (time, level, prog, msg, peer, action, "      \
       "error, offset, request_id, duration_s)",                                                   \
       0,                                                                                          \
       0},                                                                                         \
      {"--slow-ms",                                                                                \
       0,                                                                                          \
       OPT_COUNT,                                                                                  \
       &(a).slow_ms,                                                                               \
       "MS",                                                                                       \
       "log requests answered MS milliseconds or more after they arrived (default 0: off; at "     \
       "most 10 lines a second)",                                                                  \
       0,                                                                                          \
       86400000},                                                                                  \
  {                                                                                                \
    "--no-measure", 0, OPT_FLAG, &(a).no_measure, NULL,                                            \
        "do not count and time requests by action (to weigh what it costs)", 0, 0                  \
  }

/* Applies the options to a service's options (the log format is the program's: logf_() and
 * log_line() write JSON lines from now on); a usage error (exit 2) for a bad --log-format or
 * --metrics.  serve() and serve_threads() then start the metrics endpoint. */
void observe_setup(const struct cli *c, const struct observe_args *a,
                   struct appmsg_service_opts *o);

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
 * server.reuseport set where appmsg_can_share_port()) and the kernel
 * spreads connections among them; on a Unix socket, and where the system
 * cannot spread a port's connections (appmsg_can_share_port() is 0:
 * Windows, the POSIX-only build), they share the first one's listener.
 * Their status is summed.  The main thread waits for SIGINT/SIGTERM (on
 * Windows: Ctrl-C, Ctrl-Break, the console's close), then stops every loop
 * and each thread drains its service; with tls (the context every
 * service's connections share), SIGHUP reloads its certificate and key
 * meanwhile (POSIX).  Returns the exit status.
 */
int serve_threads(struct appmsg_service **svcs, size_t n, struct appmsg_tls *tls, const char *host,
                  const char *port, const char *what, uint32_t drain_ms);

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
