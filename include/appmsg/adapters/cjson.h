/*
 * A reply's result as a cJSON tree: a header-only adapter.
 *
 * The client library hands a reply's result as text (appmsg_reply.result
 * for a string, .result_json for any value, exactly as the server wrote
 * it).  A program that would rather walk a tree includes this header and
 * parses that text with cJSON:
 *
 *   #include <appmsg/adapters/cjson.h>
 *
 *   static void on_reply(const struct appmsg_reply *r, void *ud) {
 *     cJSON *res = appmsg_reply_cjson(r);     // NULL: no result, or no memory
 *     const cJSON *n = cJSON_GetObjectItemCaseSensitive(res, "count");
 *     if (cJSON_IsNumber(n))
 *       printf("%g\n", n->valuedouble);
 *     cJSON_Delete(res);                      // the caller's
 *   }
 *
 * It is header-only (static inline functions), so that libappmsg does not
 * depend on cJSON: a program that includes it links cJSON itself
 * (pkg-config libcjson).  It is not part of <appmsg/appmsg.h>.  Needs
 * cJSON 1.7.13 or later (cJSON_ParseWithLength).
 *
 * Ownership.  Each call parses anew and returns a tree the caller owns
 * and frees with cJSON_Delete(); the reply or answer may be gone by then.
 * The server's JSON was checked by the library, so NULL means that there
 * is no result (an error reply, no reply, other content) or that memory
 * ran out.  Threads: cJSON's own rules (its hooks are global).
 */
#ifndef APPMSG_ADAPTERS_CJSON_H
#define APPMSG_ADAPTERS_CJSON_H

#include <cjson/cJSON.h>

#include "../client.h"

/* The result of a reply (r->result_json) as a tree, or NULL. */
static inline cJSON *appmsg_reply_cjson(const struct appmsg_reply *r) {
  if (r == NULL || r->result_json == NULL)
    return NULL;
  return cJSON_ParseWithLength(r->result_json, r->result_json_len);
}

/* The result of an answer of appmsg_ask() (a->result_json) as a tree, or NULL. */
static inline cJSON *appmsg_answer_cjson(const struct appmsg_answer *a) {
  if (a == NULL || a->result_json == NULL)
    return NULL;
  return cJSON_Parse(a->result_json);
}

#endif
