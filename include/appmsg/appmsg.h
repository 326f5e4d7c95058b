/*
 * appmsg: framed application messages over TCP, compatible with the
 * "application message" of the Socket Programming in Python guide.  The
 * wire format is specified in proto/PROTOCOL.md.
 *
 * The umbrella header: it includes every public header, so a program needs
 * only this one.  Each module's header can also be included alone:
 *
 *   error.h    error codes, names and texts
 *   alloc.h    where the library's memory comes from
 *   json.h     the strict JSON scanner, quoting, UTF-8 check
 *   header.h   the message header as C values
 *   decoder.h  bytes in, messages out (pure, no I/O)
 *   encoder.h  messages in, bytes out (pure, no I/O)
 *   loop.h     the event loop and timers
 *   net.h      addresses, listening, connecting, accepting
 *   conn.h     a framed connection on a loop
 *   server.h   a listener serving framed connections
 *   service.h  a server made of actions: handlers, replies in order
 *   client.h   calls instead of sockets: pipelined, matched, reconnecting
 *   tls.h      TLS contexts for servers and outgoing connections
 */
#ifndef APPMSG_APPMSG_H
#define APPMSG_APPMSG_H

#include "export.h"
#include "appmsg/version.h"

#include "error.h"
#include "alloc.h"
#include "socket.h"
#include "json.h"
#include "header.h"
#include "decoder.h"
#include "encoder.h"
#include "loop.h"
#include "net.h"
#include "conn.h"
#include "server.h"
#include "service.h"
#include "client.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library linked, e.g. "0.2.0" (APPMSG_VERSION_STRING
 * is the version of the headers compiled against). */
APPMSG_API const char *appmsg_version(void);

#ifdef __cplusplus
}
#endif
#endif
