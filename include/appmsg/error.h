/*
 * appmsg error codes.
 *
 * Every function that can fail returns an int: 0 (or a non-negative count)
 * on success, a negative code on failure.  System errors are negated errno
 * values (-ECONNRESET, -ENOMEM, ...); appmsg's own errors live in a band of
 * their own below APPMSG_E_BASE so the two can never collide.  Names and
 * texts come from the one table below, so appmsg_strerror() and the enum
 * cannot drift apart.
 */
#ifndef APPMSG_ERROR_H
#define APPMSG_ERROR_H

#include "export.h"
#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, value, text): the protocol and library errors, in one table. */
#define APPMSG_ERROR_TABLE(X)                                                                      \
  X(HEADER_EMPTY, -20001, "header length is 0")                                                    \
  X(HEADER_TOO_LARGE, -20002, "header length above the limit")                                     \
  X(HEADER_UTF8, -20003, "header is not valid UTF-8")                                              \
  X(HEADER_JSON, -20004, "header is not valid JSON")                                               \
  X(HEADER_NOT_OBJECT, -20005, "header is not a JSON object")                                      \
  X(HEADER_TRAILING, -20006, "bytes after the header's JSON object")                               \
  X(HEADER_DEPTH, -20007, "header nested too deeply")                                              \
  X(HEADER_DUPLICATE, -20008, "duplicate key in header")                                           \
  X(FIELD_MISSING, -20009, "required header field missing")                                        \
  X(FIELD_TYPE, -20010, "header field has the wrong type")                                         \
  X(BYTEORDER, -20011, "byteorder is neither \"little\" nor \"big\"")                              \
  X(CONTENT_LENGTH, -20012, "content-length is not a non-negative integer")                        \
  X(CONTENT_TOO_LARGE, -20013, "content-length above the limit")                                   \
  X(TRUNCATED, -20014, "stream ended inside a frame")                                              \
  X(CONTENT_UTF8, -20015, "content is not valid UTF-8")                                            \
  X(CONTENT_JSON, -20016, "content is not valid JSON")                                             \
  X(ADDRESS, -20017, "cannot resolve address")                                                     \
  X(TIMEOUT, -20018, "timed out")                                                                  \
  X(CLOSED, -20019, "connection closed")                                                           \
  X(OUTPUT_FULL, -20020, "too many unsent bytes queued")                                           \
  X(TOO_MANY_CONNS, -20021, "too many connections")                                                \
  X(ERROR_REPLY, -20022, "the server answered with an error reply")                                \
  X(TLS, -20023, "TLS error")                                                                      \
  X(TLS_HANDSHAKE, -20024, "TLS handshake failed")                                                 \
  X(TLS_VERIFY, -20025, "TLS certificate refused")                                                 \
  X(NOT_SENT, -20026, "the request was never sent")                                                \
  X(QUEUE_FULL, -20027, "too many calls waiting")

/* The band of appmsg's own codes: APPMSG_E_BASE > code > APPMSG_E_BASE-1000. */
#define APPMSG_E_BASE (-20000)

enum appmsg_error {
  APPMSG_OK = 0,
#define APPMSG__ERR_ENUM(name, value, text) APPMSG_E_##name = (value),
  APPMSG_ERROR_TABLE(APPMSG__ERR_ENUM)
#undef APPMSG__ERR_ENUM
};

/*
 * A human text for any code this library returns: appmsg's own codes from
 * the table, negated errno values through strerror().  Never NULL; the
 * string is static (for errno values it is the C library's, so do not keep
 * it across calls from other threads).
 */
APPMSG_API const char *appmsg_strerror(int err);

/*
 * The symbolic name of a code: "HEADER_EMPTY", "ECONNRESET", "OK".
 * Never NULL; static storage.  A negated errno value the table does not
 * name gives "ESYSTEM" (appmsg_strerror() still has its text); any other
 * unknown code gives "UNKNOWN".
 */
APPMSG_API const char *appmsg_errname(int err);

/*
 * The inverse of appmsg_errname() for appmsg's own codes ("HEADER_EMPTY"
 * -> APPMSG_E_HEADER_EMPTY; the "APPMSG_E_" prefix is optional).  Returns 0
 * when the name is unknown.  Used by tests that read proto/vectors.
 */
APPMSG_API int appmsg_errcode(const char *name);

#ifdef __cplusplus
}
#endif
#endif
