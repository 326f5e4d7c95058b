/*
 * Name lookups that never block the loop (resolve.c).  Not installed.
 *
 * getaddrinfo() may wait for a DNS server for as long as it likes, and a
 * loop that waits with it stalls every connection on it.  A lookup runs
 * getaddrinfo() on a thread of its own and hands the answer to the loop's
 * thread through a pipe the loop watches (a numeric address needs none of
 * this: appmsg__resolve() with AI_NUMERICHOST answers it at once).  A resolver
 * that never answers holds only its own thread and the lookup waiting for
 * it: whoever asked can give up (cancel) and ask again later.
 */
#ifndef APPMSG_RESOLVE_H
#define APPMSG_RESOLVE_H

#include <stddef.h>

#include "appmsg/loop.h"

struct addrinfo;
struct appmsg__lookup;

/*
 * The answer, on the loop's thread, once: rc 0 and ai (the caller's now:
 * freeaddrinfo() it), or a negative code with a sentence in err (valid
 * during the call).  The lookup is gone when it returns.
 */
typedef void (*appmsg__lookup_cb)(void *arg, int rc, struct addrinfo *ai, const char *err);

/*
 * Looks host:port up (as appmsg_resolve(), not passive).  Returns 0 and
 * *l, after which cb runs once from the loop (never from this call) unless
 * the lookup is cancelled first; or a negative code (-ENOMEM, -EAGAIN: no
 * thread could be made) with cb never run.
 */
int appmsg__lookup_start(struct appmsg__lookup **l, struct appmsg_loop *loop, const char *host,
                         const char *port, appmsg__lookup_cb cb, void *arg);

/* Forgets a lookup whose answer has not come: cb will not run.  Its
 * thread, if it still waits for the resolver, frees the rest when it ends. */
void appmsg__lookup_cancel(struct appmsg__lookup *l);

#endif
