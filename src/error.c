/* Error names and texts, all from the one table in include/appmsg/error.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "util.h"

/* The errno values a network program meets, with the sentences glibc gives them: the same
 * sentence on every system (Windows' C library knows none of the socket ones, and Winsock's
 * errors arrive here as these values, platform.h).  Others are "ESYSTEM" and strerror()'s. */
#define ERRNO_TABLE(X)                                                                             \
  X(EPERM, "Operation not permitted")                                                              \
  X(ENOENT, "No such file or directory")                                                           \
  X(EINTR, "Interrupted system call")                                                              \
  X(EIO, "Input/output error")                                                                     \
  X(EBADF, "Bad file descriptor")                                                                  \
  X(EAGAIN, "Resource temporarily unavailable")                                                    \
  X(ENOMEM, "Cannot allocate memory")                                                              \
  X(EACCES, "Permission denied")                                                                   \
  X(EFAULT, "Bad address")                                                                         \
  X(EBUSY, "Device or resource busy")                                                              \
  X(EEXIST, "File exists")                                                                         \
  X(EINVAL, "Invalid argument")                                                                    \
  X(ENFILE, "Too many open files in system")                                                       \
  X(EMFILE, "Too many open files")                                                                 \
  X(ENOSPC, "No space left on device")                                                             \
  X(EPIPE, "Broken pipe")                                                                          \
  X(ERANGE, "Numerical result out of range")                                                       \
  X(ENAMETOOLONG, "File name too long")                                                            \
  X(ENOSYS, "Function not implemented")                                                            \
  X(ELOOP, "Too many levels of symbolic links")                                                    \
  X(ENOTSOCK, "Socket operation on non-socket")                                                    \
  X(EDESTADDRREQ, "Destination address required")                                                  \
  X(EMSGSIZE, "Message too long")                                                                  \
  X(EPROTOTYPE, "Protocol wrong type for socket")                                                  \
  X(ENOPROTOOPT, "Protocol not available")                                                         \
  X(EPROTONOSUPPORT, "Protocol not supported")                                                     \
  X(EOPNOTSUPP, "Operation not supported")                                                         \
  X(EAFNOSUPPORT, "Address family not supported by protocol")                                      \
  X(EADDRINUSE, "Address already in use")                                                          \
  X(EADDRNOTAVAIL, "Cannot assign requested address")                                              \
  X(ENETDOWN, "Network is down")                                                                   \
  X(ENETUNREACH, "Network is unreachable")                                                         \
  X(ENETRESET, "Network dropped connection on reset")                                              \
  X(ECONNABORTED, "Software caused connection abort")                                              \
  X(ECONNRESET, "Connection reset by peer")                                                        \
  X(ENOBUFS, "No buffer space available")                                                          \
  X(EISCONN, "Transport endpoint is already connected")                                            \
  X(ENOTCONN, "Transport endpoint is not connected")                                               \
  X(ETIMEDOUT, "Connection timed out")                                                             \
  X(ECONNREFUSED, "Connection refused")                                                            \
  X(EHOSTUNREACH, "No route to host")                                                              \
  X(EALREADY, "Operation already in progress")                                                     \
  X(EINPROGRESS, "Operation now in progress")

const char *appmsg_strerror(int err) {
  switch (err) {
  case APPMSG_OK:
    return "success";
#define TEXT_CASE(name, value, text)                                                               \
  case APPMSG_E_##name:                                                                            \
    return text;
    APPMSG_ERROR_TABLE(TEXT_CASE)
#undef TEXT_CASE
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    switch (-err) {
#define ERRNO_TEXT(e, text)                                                                        \
  case e:                                                                                          \
    return text;
      ERRNO_TABLE(ERRNO_TEXT)
#undef ERRNO_TEXT
    default:
      return strerror(-err);
    }
  }
  return "unknown error";
}

const char *appmsg_errname(int err) {
  switch (err) {
  case APPMSG_OK:
    return "OK";
#define NAME_CASE(name, value, text)                                                               \
  case APPMSG_E_##name:                                                                            \
    return #name;
    APPMSG_ERROR_TABLE(NAME_CASE)
#undef NAME_CASE
  default:
    break;
  }
  if (err < 0 && err > -4096) {
    switch (-err) {
#define ERRNO_CASE(e, text)                                                                        \
  case e:                                                                                          \
    return #e;
      ERRNO_TABLE(ERRNO_CASE)
#undef ERRNO_CASE
    default:
      return "ESYSTEM";
    }
  }
  return "UNKNOWN";
}

int appmsg_errcode(const char *name) {
  if (name == NULL)
    return 0;
  if (strncmp(name, "APPMSG_E_", 9) == 0)
    name += 9;
#define CODE_CMP(ename, value, text)                                                               \
  if (strcmp(name, #ename) == 0)                                                                   \
    return value;
  APPMSG_ERROR_TABLE(CODE_CMP)
#undef CODE_CMP
  return 0;
}

const char *appmsg_version(void) {
  return APPMSG_VERSION_STRING;
}

struct appmsg_allocator appmsg__allocator = {malloc, calloc, realloc, free};

int appmsg_set_allocator(const struct appmsg_allocator *a) {
  static const struct appmsg_allocator libc = {malloc, calloc, realloc, free};
  if (a == NULL)
    a = &libc;
  if (!a->malloc || !a->calloc || !a->realloc || !a->free)
    return -EINVAL;
  appmsg__allocator = *a;
  return 0;
}

void appmsg_free(void *p) {
  appmsg__free(p);
}

char *appmsg__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = appmsg__malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

void appmsg__errf(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const struct appmsg_log_fields no_fields = APPMSG__LOG_FIELDS_NONE;
static _Thread_local const struct appmsg_log_fields *fields_now; /* during a log call */

const struct appmsg_log_fields *appmsg_log_fields(void) {
  return fields_now ? fields_now : &no_fields;
}

static void vlogf(appmsg_log_fn fn, void *ud, enum appmsg_log_level level,
                  const struct appmsg_log_fields *f, const char *fmt, va_list ap) {
  char line[1024];
  vsnprintf(line, sizeof line, fmt, ap);
  const struct appmsg_log_fields *outer = fields_now; /* (a log call inside a log callback) */
  fields_now = f;
  fn(ud, level, line);
  fields_now = outer;
}

void appmsg__logf(appmsg_log_fn fn, void *ud, enum appmsg_log_level level, const char *fmt, ...) {
  if (fn == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  vlogf(fn, ud, level, NULL, fmt, ap);
  va_end(ap);
}

void appmsg__logf_fields(appmsg_log_fn fn, void *ud, enum appmsg_log_level level,
                         const struct appmsg_log_fields *f, const char *fmt, ...) {
  if (fn == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  vlogf(fn, ud, level, f, fmt, ap);
  va_end(ap);
}
