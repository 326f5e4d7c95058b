/*
 * app-server's data in Redis: searches answered with GET PREFIX+KEY
 * through hiredis's asynchronous API, on the service's own loop
 * (appmsg/adapters/hiredis.h).
 *
 * One store keeps one connection to Redis; every search is one GET on it,
 * so a client's pipelined searches become pipelined GETs (the service
 * still sends the replies in request order).  Every request is answered
 * exactly once:
 *   - a string value: {"result": VALUE};
 *   - no such key: the guide's {"result": "No match for 'KEY'."};
 *   - something other than a string under the key (WRONGTYPE, or a reply
 *     of another type): a WRONG_TYPE error reply; a value that is not UTF-8
 *     text, or has a NUL byte: BAD_VALUE;
 *   - Redis not connected, not answering within the store's timeout, lost
 *     while the request waited, or answering with an error (LOADING,
 *     NOAUTH, ...): {"result": "Error: the data store is unavailable.",
 *     "error": "UNAVAILABLE"} - at once when Redis is known to be down.
 * When the oldest GET waits longer than the timeout, Redis is taken to be
 * stuck: the connection is dropped (every waiting request gets
 * UNAVAILABLE) and made again.  Connecting is retried with exponential
 * backoff and jitter, capped at a couple of seconds; a new connection is
 * in use once Redis answers its PING.  The log gets one line per change
 * of state (connected, lost, cannot connect, Redis errors), never one per
 * request; status shows the counters (redis_store_status()).
 *
 * A store belongs to its loop's thread; a program with a loop per thread
 * gives each its own store (its own connection) and groups them, so that
 * status reports them together.  hiredis 0.14 resolves a host name with a
 * blocking getaddrinfo() on every connect: give an address.
 */
#ifndef APPMSG_EXAMPLES_REDIS_STORE_H
#define APPMSG_EXAMPLES_REDIS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "appmsg/appmsg.h"

/* Where Redis is, from "HOST:PORT", "[IPV6]:PORT" or "unix:/path". */
struct redis_addr {
  char host[256]; /* an address or name; empty for a Unix socket */
  int port;       /* 1..65535 */
  char path[108]; /* a Unix socket's path, or empty */
  char text[400]; /* as a person would write it, for the log */
};

/* Reads text into *a.  Returns 0, or -1 with a sentence in err. */
int redis_addr_parse(const char *text, struct redis_addr *a, char *err, size_t errlen);

struct redis_store_opts {
  const char *addr;        /* "HOST:PORT", "[::1]:PORT" or "unix:/path" */
  const char *prefix;      /* put before every key (NULL or "": none) */
  uint32_t timeout_ms;     /* the longest a request waits for Redis (> 0) */
  uint32_t backoff_min_ms; /* the first delay before connecting again */
  uint32_t backoff_max_ms; /* the cap of the doubling delay (jittered down to half) */
};

/* Defaults: no prefix, 1 s, backoff 100 ms doubling up to 2 s. */
void redis_store_opts_default(struct redis_store_opts *o);

struct redis_store;

/* Makes a store on loop and starts connecting (it serves at once: while
 * the first connect is under way requests wait for it, bounded by the
 * timeout).  Returns 0, or -1 with a sentence in err (a bad address). */
int redis_store_new(struct redis_store **s, struct appmsg_loop *loop,
                    const struct redis_store_opts *o, char *err, size_t errlen);

/* Answers req (now or later) with the value of key in Redis; key is the
 * request's own (valid until the reply).  Exactly one reply, always. */
void redis_store_search(struct redis_store *s, struct appmsg_request *req, const char *key);

/*
 * Stores of one program, one per thread, that report as one (like
 * appmsg_service_group()): status sums their counters, and their log lines
 * say which thread's connection they are about.  Before the loops run; the
 * stores are freed only after every loop has stopped.  0 or -ENOMEM.
 */
int redis_store_group(struct redis_store **stores, size_t n);

/*
 * An appmsg_status_fn (ud: the store): "redis": {"address": ...,
 * "prefix": ..., "connected": (every connection up), "state": "connected",
 * "connecting", "down" or "partial", "connections": (one per thread),
 * "connections_up": ..., "reconnects": ..., "requests": (GETs sent),
 * "in_flight": ..., "unavailable": (searches answered UNAVAILABLE),
 * "timeouts": (connections dropped for not answering), "errors": (error
 * replies and values of the wrong type), "last_error": (this thread's
 * connection's, or null)}.  The counters are summed over the group.
 */
size_t redis_store_status(void *ud, char *out, size_t cap);

/* The same counters for the metrics endpoint (appmsg_metrics_fn): appmsg_redis_connections,
 * _connections_up, _reconnects_total, _requests_total, _requests_in_flight,
 * _unavailable_total, _timeouts_total and _errors_total, summed over the group. */
size_t redis_store_metrics(void *ud, char *out, size_t cap);

/* Closes the connection (waiting requests get UNAVAILABLE) and frees the
 * store.  Before the loop is freed; not from a callback of the store's.
 * NULL is fine. */
void redis_store_free(struct redis_store *s);

/*
 * app-server --load: writes the --data style JSON file path into Redis at
 * addr, each key with prefix before it, in pipelined MSET batches, and
 * logs the count.  Blocking; timeout_ms bounds the connect and each wait
 * for Redis.  Returns the exit status: 0, or 1 (logged why).
 */
int redis_load(const char *addr, const char *prefix, const char *path, uint32_t timeout_ms);

#endif
