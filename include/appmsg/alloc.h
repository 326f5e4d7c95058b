/*
 * The library's memory: where appmsg gets it from.
 *
 *   static const struct appmsg_allocator mine = {my_malloc, my_calloc, my_realloc, my_free};
 *   appmsg_set_allocator(&mine);     // before any other appmsg call
 *
 * Every byte the library allocates itself - loops, connections, buffers,
 * headers, requests, calls, TLS contexts' own state - comes from these
 * four functions, as in libuv's uv_replace_allocator() and hiredis's
 * hiredisSetAllocators(): a program can count it, cap it, pool it, or make
 * an allocation fail on purpose to see what the library does then (the
 * library's own tests do: every allocation of a session fails in turn).
 * What other libraries allocate for it is theirs: OpenSSL's and the C
 * library's (getaddrinfo()) memory does not come from here, nor does the
 * small record of a name lookup, which the client's resolver thread may
 * free.
 *
 * The functions must behave as the C library's do (calloc zeroes, realloc
 * of NULL allocates, free of NULL does nothing) and may fail by returning
 * NULL: the library then fails the call that needed the memory
 * (-ENOMEM), or ends the one connection that needed it, and goes on.
 *
 * Threads: the allocator is process-wide.  Set it once, before any other
 * appmsg function runs on any thread, and keep it (memory allocated with
 * one allocator must not be freed by another); the four functions are
 * called from every thread that runs appmsg, and must be thread-safe if
 * the program runs appmsg on several.
 */
#ifndef APPMSG_ALLOC_H
#define APPMSG_ALLOC_H

#include <stddef.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct appmsg_allocator {
  void *(*malloc)(size_t size);               /* as malloc(3) */
  void *(*calloc)(size_t count, size_t size); /* as calloc(3) */
  void *(*realloc)(void *ptr, size_t size);   /* as realloc(3) */
  void (*free)(void *ptr);                    /* as free(3) */
};

/*
 * Makes the library allocate with a's functions (copied); NULL goes back
 * to the C library's.  Returns 0, or -EINVAL when a function is missing.
 */
APPMSG_API int appmsg_set_allocator(const struct appmsg_allocator *a);

/* Frees memory the library handed over (appmsg_decoder_take_content(),
 * appmsg_header_extra_json()) with the allocator's free.  NULL is fine. */
APPMSG_API void appmsg_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
