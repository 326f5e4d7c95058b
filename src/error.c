/* Error names and texts, all from the one table in include/appmsg/error.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "util.h"

/* Names of the errno values a network program meets; others are "ESYSTEM". */
#define ERRNO_NAMES(X)                                                                             \
  X(EPERM)                                                                                         \
  X(ENOENT)                                                                                        \
  X(EINTR)                                                                                         \
  X(EIO)                                                                                           \
  X(EBADF)                                                                                         \
  X(EAGAIN)                                                                                        \
  X(ENOMEM)                                                                                        \
  X(EACCES)                                                                                        \
  X(EFAULT)                                                                                        \
  X(EBUSY)                                                                                         \
  X(EEXIST)                                                                                        \
  X(EINVAL)                                                                                        \
  X(ENFILE)                                                                                        \
  X(EMFILE)                                                                                        \
  X(ENOSPC)                                                                                        \
  X(EPIPE)                                                                                         \
  X(ERANGE)                                                                                        \
  X(ENAMETOOLONG)                                                                                  \
  X(ENOTSOCK)                                                                                      \
  X(EMSGSIZE)                                                                                      \
  X(EPROTONOSUPPORT)                                                                               \
  X(EOPNOTSUPP)                                                                                    \
  X(EAFNOSUPPORT)                                                                                  \
  X(EADDRINUSE)                                                                                    \
  X(EADDRNOTAVAIL)                                                                                 \
  X(ENETDOWN)                                                                                      \
  X(ENETUNREACH)                                                                                   \
  X(ECONNABORTED)                                                                                  \
  X(ECONNRESET)                                                                                    \
  X(ENOBUFS)                                                                                       \
  X(EISCONN)                                                                                       \
  X(ENOTCONN)                                                                                      \
  X(ETIMEDOUT)                                                                                     \
  X(ECONNREFUSED)                                                                                  \
  X(EHOSTUNREACH)                                                                                  \
  X(EALREADY)                                                                                      \
  X(EINPROGRESS)

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
  if (err < 0 && err > -4096)
    return strerror(-err);
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
#define ERRNO_CASE(e)                                                                              \
  case e:                                                                                          \
    return #e;
      ERRNO_NAMES(ERRNO_CASE)
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

void appmsg__logf(appmsg_log_fn fn, void *ud, enum appmsg_log_level level, const char *fmt, ...) {
  if (fn == NULL)
    return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fn(ud, level, line);
}
