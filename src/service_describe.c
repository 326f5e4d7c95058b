/*
 * Described actions (see include/appmsg/service.h): a description copied
 * into one block, the check of a request's members against it before the
 * handler runs, and the built-in describe action, which answers every
 * action's description as an OpenRPC document (PROTOCOL.md, section 7).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_internal.h"
#include "service_internal.h"

static const char *const type_names[] = {
    [APPMSG_TYPE_ANY] = "any",         [APPMSG_TYPE_STRING] = "string",
    [APPMSG_TYPE_INTEGER] = "integer", [APPMSG_TYPE_NUMBER] = "number",
    [APPMSG_TYPE_BOOLEAN] = "boolean", [APPMSG_TYPE_OBJECT] = "object",
    [APPMSG_TYPE_ARRAY] = "array",     [APPMSG_TYPE_NULL] = "null",
};

const char *appmsg_type_name(enum appmsg_type t) {
  return (unsigned)t < sizeof type_names / sizeof type_names[0] ? type_names[t] : NULL;
}

/* ---- the copy ------------------------------------------------------------------------------ */

static int text_ok(const char *s) {
  return s == NULL || appmsg_utf8_check(s, strlen(s)) == strlen(s);
}

static size_t text_size(const char *s) {
  return s ? strlen(s) + 1 : 0;
}

/* Copies s to *at (advanced), or gives NULL for NULL. */
static const char *put_text(char **at, const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = memcpy(*at, s, n);
  *at += n;
  return d;
}

int appmsg__doc_copy(const struct appmsg_action_doc *doc, struct appmsg__doc **out) {
  if (!text_ok(doc->summary) || !text_ok(doc->result_about) ||
      appmsg_type_name(doc->result) == NULL || (doc->nparams > 0 && doc->params == NULL))
    return -EINVAL;
  size_t size = sizeof(struct appmsg__doc) + doc->nparams * sizeof(struct appmsg_param) +
                text_size(doc->summary) + text_size(doc->result_about);
  for (size_t i = 0; i < doc->nparams; i++) {
    const struct appmsg_param *p = &doc->params[i];
    if (p->name == NULL || !text_ok(p->name) || strcmp(p->name, "action") == 0 ||
        !text_ok(p->summary) || appmsg_type_name(p->type) == NULL)
      return -EINVAL;
    for (size_t j = 0; j < i; j++)
      if (strcmp(doc->params[j].name, p->name) == 0)
        return -EINVAL;
    size += text_size(p->name) + text_size(p->summary);
  }
  struct appmsg__doc *d = appmsg__malloc(size);
  if (d == NULL)
    return -ENOMEM;
  d->params = (struct appmsg_param *)(d + 1);
  d->nparams = doc->nparams;
  d->result = doc->result;
  char *at = (char *)(d->params + doc->nparams);
  d->summary = put_text(&at, doc->summary);
  d->result_about = put_text(&at, doc->result_about);
  for (size_t i = 0; i < doc->nparams; i++) {
    const struct appmsg_param *p = &doc->params[i];
    d->params[i].type = p->type;
    d->params[i].required = p->required != 0;
    d->params[i].name = put_text(&at, p->name);
    d->params[i].summary = put_text(&at, p->summary);
  }
  *out = d;
  return 0;
}

/* ---- the check before the handler ------------------------------------------------------------ */

static const char *json_type_name(enum appmsg_json_type t) {
  switch (t) {
  case APPMSG_JSON_STRING:
    return "a string";
  case APPMSG_JSON_NUMBER:
    return "a number";
  case APPMSG_JSON_OBJECT:
    return "an object";
  case APPMSG_JSON_ARRAY:
    return "an array";
  case APPMSG_JSON_TRUE:
  case APPMSG_JSON_FALSE:
    return "a boolean";
  case APPMSG_JSON_NULL:
    return "null";
  }
  return "another value";
}

static const char *a_type(enum appmsg_type t) {
  switch (t) {
  case APPMSG_TYPE_STRING:
    return "a string";
  case APPMSG_TYPE_INTEGER:
    return "an integer";
  case APPMSG_TYPE_NUMBER:
    return "a number";
  case APPMSG_TYPE_BOOLEAN:
    return "a boolean";
  case APPMSG_TYPE_OBJECT:
    return "an object";
  case APPMSG_TYPE_ARRAY:
    return "an array";
  case APPMSG_TYPE_NULL:
    return "null";
  case APPMSG_TYPE_ANY:
    break;
  }
  return "any JSON value";
}

static int type_matches(enum appmsg_type want, enum appmsg_json_type got) {
  switch (want) {
  case APPMSG_TYPE_ANY:
    return 1;
  case APPMSG_TYPE_STRING:
    return got == APPMSG_JSON_STRING;
  case APPMSG_TYPE_INTEGER:
  case APPMSG_TYPE_NUMBER:
    return got == APPMSG_JSON_NUMBER;
  case APPMSG_TYPE_BOOLEAN:
    return got == APPMSG_JSON_TRUE || got == APPMSG_JSON_FALSE;
  case APPMSG_TYPE_OBJECT:
    return got == APPMSG_JSON_OBJECT;
  case APPMSG_TYPE_ARRAY:
    return got == APPMSG_JSON_ARRAY;
  case APPMSG_TYPE_NULL:
    return got == APPMSG_JSON_NULL;
  }
  return 0;
}

static int refuse(struct appmsg_request *r, const char *msg) {
  appmsg__svc_error_reply(r, "BAD_REQUEST", msg, -1);
  return -1;
}

int appmsg__svc_check_params(struct appmsg_request *r, const struct appmsg__doc *doc) {
  char msg[300];
  for (size_t i = 0; i < doc->nparams; i++) {
    const struct appmsg_param *p = &doc->params[i];
    struct appmsg__member *f = appmsg__svc_member(r, p->name);
    if (f == NULL) {
      if (!p->required)
        continue;
      snprintf(msg, sizeof msg, "the request needs member '%.100s' (%s)", p->name, a_type(p->type));
      return refuse(r, msg);
    }
    if (!type_matches(p->type, f->m.type)) {
      snprintf(msg, sizeof msg, "member '%.100s' must be %s, not %s", p->name, a_type(p->type),
               json_type_name(f->m.type));
      return refuse(r, msg);
    }
    if (p->type == APPMSG_TYPE_INTEGER) {
      long long v;
      int rc = appmsg__member_int(&f->m, &v); /* (the member found above, not searched again) */
      if (rc == -ERANGE) {
        snprintf(msg, sizeof msg, "member '%.100s' is beyond the range of a 64-bit integer",
                 p->name);
        return refuse(r, msg);
      }
      if (rc != 0) {
        snprintf(msg, sizeof msg,
                 "member '%.100s' must be an integer, not a number with a fraction or exponent",
                 p->name);
        return refuse(r, msg);
      }
    } else if (p->type == APPMSG_TYPE_NUMBER) {
      double v;
      if (appmsg__member_number(&f->m, &v) == -ERANGE) {
        snprintf(msg, sizeof msg, "member '%.100s' is beyond the range of a double", p->name);
        return refuse(r, msg);
      }
    } else if (p->type == APPMSG_TYPE_STRING && appmsg__svc_member_text(r, f) == NULL) {
      appmsg__svc_error_reply(r, "INTERNAL", "out of memory", -1);
      return -1;
    }
  }
  return 0;
}

/* ---- describe ------------------------------------------------------------------------------- */

static void add_schema(struct appmsg__text *t, enum appmsg_type type) {
  const char *name = appmsg_type_name(type); /* (in the enum: checked by the copy) */
  if (type == APPMSG_TYPE_ANY || name == NULL)
    appmsg__text_addf(t, "{}");
  else
    appmsg__text_addf(t, "{\"type\": \"%s\"}", name);
}

static void add_summary(struct appmsg__text *t, const char *summary) {
  if (summary && summary[0]) {
    appmsg__text_addf(t, ", \"summary\": ");
    appmsg__text_add_quoted(t, summary);
  }
}

static void add_method(struct appmsg__text *t, const struct appmsg__handler *h) {
  const struct appmsg__doc *d = h->doc;
  appmsg__text_addf(t, "{\"name\": ");
  appmsg__text_add_quoted(t, h->name);
  if (d)
    add_summary(t, d->summary);
  appmsg__text_addf(t, ", \"paramStructure\": \"by-name\", \"params\": [");
  for (size_t i = 0; d && i < d->nparams; i++) {
    appmsg__text_addf(t, "%s{\"name\": ", i ? ", " : "");
    appmsg__text_add_quoted(t, d->params[i].name);
    add_summary(t, d->params[i].summary);
    appmsg__text_addf(t,
                      ", \"required\": %s, \"schema\": ", d->params[i].required ? "true" : "false");
    add_schema(t, d->params[i].type);
    appmsg__text_addf(t, "}");
  }
  appmsg__text_addf(t, "], \"result\": {\"name\": \"result\"");
  if (d)
    add_summary(t, d->result_about);
  appmsg__text_addf(t, ", \"schema\": ");
  add_schema(t, d ? d->result : APPMSG_TYPE_ANY);
  appmsg__text_addf(t, d ? "}}" : "}, \"x-described\": false}");
}

static int by_name(const void *a, const void *b) {
  const struct appmsg__handler *x = *(const struct appmsg__handler *const *)a;
  const struct appmsg__handler *y = *(const struct appmsg__handler *const *)b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->name, y->name, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

void appmsg__svc_builtin_describe(struct appmsg_request *r, void *ud) {
  (void)ud;
  struct appmsg_service *s = r->svc;
  struct appmsg__text t = {appmsg__malloc(1024), 0, 1024, 0};
  t.failed = t.p == NULL;
  const char *name = appmsg_request_string(r, "name"); /* a string: checked as described */
  if (name) {
    const struct appmsg__handler *h = appmsg__svc_find_handler(s, name, strlen(name));
    if (h == NULL) {
      char msg[200];
      snprintf(msg, sizeof msg, "no action '%.100s'", name);
      appmsg_reply_error(r, "NOT_FOUND", msg);
      appmsg__free(t.p);
      return;
    }
    add_method(&t, h);
  } else {
    const struct appmsg__handler **all = appmsg__malloc((s->nhandlers + 1) * sizeof *all);
    size_t n = 0;
    t.failed |= all == NULL;
    for (size_t i = 0; all && i < s->handlers_cap; i++)
      if (s->handlers[i].name)
        all[n++] = &s->handlers[i];
    if (all)
      qsort(all, n, sizeof *all, by_name);
    appmsg__text_addf(&t, "{\"openrpc\": \"1.2.6\", \"info\": {\"title\": ");
    appmsg__text_add_quoted(&t, s->title ? s->title : "appmsg service");
    appmsg__text_addf(&t, ", \"version\": ");
    appmsg__text_add_quoted(&t, s->version ? s->version : appmsg_version());
    appmsg__text_addf(&t, "}, \"methods\": [");
    for (size_t i = 0; i < n; i++) {
      if (i)
        appmsg__text_addf(&t, ", ");
      add_method(&t, all[i]);
    }
    appmsg__text_addf(&t, "]}");
    appmsg__free(all);
  }
  if (t.failed || appmsg_reply_json(r, t.p, t.len) != 0) {
    if (!r->answered)
      appmsg_reply_error(r, "INTERNAL", "the description could not be written");
  }
  appmsg__free(t.p);
}

int appmsg_service_set_info(struct appmsg_service *s, const char *title, const char *version) {
  if (title == NULL || version == NULL || !text_ok(title) || !text_ok(version))
    return -EINVAL;
  char *t = appmsg__strdup(title), *v = appmsg__strdup(version);
  if (t == NULL || v == NULL) {
    appmsg__free(t);
    appmsg__free(v);
    return -ENOMEM;
  }
  appmsg__free(s->title);
  appmsg__free(s->version);
  s->title = t;
  s->version = v;
  return 0;
}
