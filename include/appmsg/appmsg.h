/*
 * appmsg: framed application messages over TCP, compatible with the
 * "application message" of the Socket Programming in Python guide.
 *
 * The umbrella header: include this one.  The wire format is specified in
 * proto/PROTOCOL.md.
 */
#ifndef APPMSG_APPMSG_H
#define APPMSG_APPMSG_H

#define APPMSG_VERSION_MAJOR 0
#define APPMSG_VERSION_MINOR 1
#define APPMSG_VERSION_PATCH 0
#define APPMSG_VERSION_STRING "0.1.0"

#include "error.h"
#include "header.h"
#include "decoder.h"
#include "encoder.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version string, e.g. "0.1.0". */
const char *appmsg_version(void);

#ifdef __cplusplus
}
#endif
#endif
