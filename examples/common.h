/* Small helpers shared by the example programs: logging, usage, options. */
#ifndef APPMSG_EXAMPLES_COMMON_H
#define APPMSG_EXAMPLES_COMMON_H

#include <stdarg.h>
#include <stddef.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "65432"

/* Sets the program name used in log lines (call first in main). */
void prog_init(const char *name);

/* Logs one line to stderr: "app-server: message". */
void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Handles -h/--help and --version if argv[1] is one of them: prints usage
 * (one line) or the version to stdout and exits 0.  Also exits 2 with the
 * usage on stderr for any other argument starting with '-' that the
 * program did not declare (known is a NULL-terminated list, may be NULL). */
void handle_std_options(int argc, char **argv, const char *usage, const char *const *known);

/* Exits 2 after printing "usage: ..." to stderr. */
void usage_error(const char *usage) __attribute__((noreturn));

/* Reads the optional positional HOST and PORT (defaults 127.0.0.1 65432;
 * "--" ends options); more than two is a usage error. */
void host_port_args(int argc, char **argv, const char *usage, const char **host, const char **port);

/* "host:port" as a person would type it: "[::1]:65432", "unix:/path". */
void endpoint_text(const char *host, const char *port, char *buf, size_t len);

/* A human hint for a failed connect: "is the server running on H:P?". */
const char *connect_hint(int err);

/*
 * Writes Python's repr() of (at most max bytes of) a bytes object into out:
 * b'...' with the quote and backslash escaped, \t \n \r, other bytes
 * outside printable ASCII as \xNN, double quotes when the bytes hold ' but
 * no "; "..." follows when it was cut short.  out needs 4 * max + 8 bytes.
 */
#include <stddef.h>
void bytes_repr(const unsigned char *p, size_t n, size_t max, char *out);

#endif
