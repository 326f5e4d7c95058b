/*
 * The header: parsing a received one, building and writing one to send.
 *
 * This is the only file of the library that includes cJSON, and only for
 * the extra (non-required) keys, which are rare: a header made of the four
 * required fields is parsed by the strict scanner of json.c with no
 * allocation at all, its strings unescaped in place in the decoder's
 * header buffer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"

enum { F_BYTEORDER, F_TYPE, F_ENCODING, F_LENGTH, F_COUNT };

static const char *const field_name[F_COUNT] = {"byteorder", "content-type", "content-encoding",
                                                "content-length"};
static const char *const missing_reason[F_COUNT] = {
    "required field \"byteorder\" is missing", "required field \"content-type\" is missing",
    "required field \"content-encoding\" is missing",
    "required field \"content-length\" is missing"};
static const char *const type_reason[F_COUNT] = {
    "\"byteorder\" must be a string", "\"content-type\" must be a string",
    "\"content-encoding\" must be a string", "\"content-length\" must be a number"};

enum appmsg_byteorder appmsg_byteorder_host(void) {
  const uint16_t one = 1;
  unsigned char b;
  memcpy(&b, &one, 1);
  return b ? APPMSG_BYTEORDER_LITTLE : APPMSG_BYTEORDER_BIG;
}

const char *appmsg_byteorder_name(enum appmsg_byteorder bo) {
  switch (bo) {
  case APPMSG_BYTEORDER_LITTLE:
    return "little";
  case APPMSG_BYTEORDER_BIG:
    return "big";
  default:
    return "unset";
  }
}

/* Which required field a key names (after unescaping), or -1. */
static int required_index(const char *key, size_t len) {
  for (int f = 0; f < F_COUNT; f++)
    if (strlen(field_name[f]) == len && memcmp(field_name[f], key, len) == 0)
      return f;
  return -1;
}

struct collect {
  struct appmsg__json_member field[F_COUNT]; /* the required members found */
  int seen[F_COUNT];                         /* how often each was found */
  size_t extras;                             /* members that are not required */
};

static void collect_member(void *ud, const struct appmsg__json_member *m) {
  struct collect *c = ud;
  int f;
  if (!m->key_escaped) {
    f = required_index(m->key, m->key_len);
  } else if (m->key_len <= 96) { /* longer cannot unescape to a required name */
    char tmp[96];
    f = required_index(tmp, appmsg__json_unescape(m->key, m->key_len, tmp));
  } else {
    f = -1;
  }
  if (f < 0) {
    c->extras++;
    return;
  }
  if (c->seen[f]++ == 0)
    c->field[f] = *m;
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Builds the extras object from the whole (validated) header text and
 * checks the extra keys for duplicates.  Returns 0, 1 on a duplicate,
 * -ENOMEM. */
static int build_extras(const char *buf, size_t n, size_t count, cJSON **out) {
  cJSON *root = cJSON_ParseWithLength(buf, n);
  if (root == NULL)
    return -ENOMEM; /* the scanner accepted it, so only memory can fail */
  for (int f = 0; f < F_COUNT; f++)
    while (cJSON_GetObjectItemCaseSensitive(root, field_name[f]))
      cJSON_DeleteItemFromObjectCaseSensitive(root, field_name[f]);
  const char **keys = malloc(count * sizeof *keys);
  if (keys == NULL) {
    cJSON_Delete(root);
    return -ENOMEM;
  }
  size_t k = 0;
  for (cJSON *it = root->child; it && k < count; it = it->next)
    keys[k++] = it->string;
  qsort(keys, k, sizeof *keys, cmp_keys);
  int dup = 0;
  for (size_t i = 1; i < k && !dup; i++)
    dup = strcmp(keys[i - 1], keys[i]) == 0;
  free(keys);
  if (dup) {
    cJSON_Delete(root);
    return 1;
  }
  *out = root;
  return 0;
}

/* Unescapes a string member in place and NUL-terminates it (the closing
 * quote, or an earlier byte, takes the NUL). */
static char *string_in_place(const struct appmsg__json_member *m) {
  char *v = (char *)m->val;
  size_t len = m->val_escaped ? appmsg__json_unescape(v, m->val_len, v) : m->val_len;
  v[len] = '\0';
  return v;
}

static int perr(struct appmsg__json_error *err, int code, size_t off, const char *reason) {
  err->code = code;
  err->offset = off;
  err->reason = reason;
  return code;
}

int appmsg__header_parse(char *buf, size_t n, uint64_t max_content, struct appmsg_header *h,
                         struct appmsg__json_error *err, char claimed[32]) {
  memset(h, 0, sizeof *h);
  size_t bad = appmsg__utf8_check((const unsigned char *)buf, n);
  if (bad < n)
    return perr(err, APPMSG_E_HEADER_UTF8, bad, "header is not valid UTF-8");
  struct collect c;
  memset(&c, 0, sizeof c);
  int rc = appmsg__json_scan(buf, n, APPMSG_HEADER_DEPTH_MAX, 1, collect_member, &c, err);
  if (rc)
    return rc;

  cJSON *extras = NULL;
  for (int f = 0; f < F_COUNT; f++)
    if (c.seen[f] > 1)
      return perr(err, APPMSG_E_HEADER_DUPLICATE, 0, "duplicate key in header");
  if (c.extras > 0) {
    rc = build_extras(buf, n, c.extras, &extras);
    if (rc == 1)
      return perr(err, APPMSG_E_HEADER_DUPLICATE, 0, "duplicate key in header");
    if (rc < 0)
      return perr(err, rc, 0, "out of memory");
  }

  /* The four fields, in the order PROTOCOL.md section 5 gives. */
  for (int f = 0; f < F_COUNT; f++) {
    const struct appmsg__json_member *m = &c.field[f];
    enum appmsg__json_type want = f == F_LENGTH ? APPMSG__JSON_NUMBER : APPMSG__JSON_STRING;
    if (!c.seen[f])
      rc = perr(err, APPMSG_E_FIELD_MISSING, 0, missing_reason[f]);
    else if (m->type != want)
      rc = perr(err, APPMSG_E_FIELD_TYPE, 0, type_reason[f]);
    else if (f == F_BYTEORDER) {
      const char *v = string_in_place(m);
      if (strcmp(v, "little") == 0)
        h->byteorder = APPMSG_BYTEORDER_LITTLE;
      else if (strcmp(v, "big") == 0)
        h->byteorder = APPMSG_BYTEORDER_BIG;
      else
        rc = perr(err, APPMSG_E_BYTEORDER, 0, "\"byteorder\" must be \"little\" or \"big\"");
    } else if (f == F_TYPE) {
      h->content_type = string_in_place(m);
    } else if (f == F_ENCODING) {
      h->content_encoding = string_in_place(m);
    } else if (!m->val_plain_int) {
      rc = perr(err, APPMSG_E_CONTENT_LENGTH, 0,
                "\"content-length\" must be written as a non-negative integer (digits only)");
    } else {
      uint64_t v = 0;
      for (size_t i = 0; i < m->val_len && v <= max_content; i++)
        v = v * 10 + (uint64_t)(m->val[i] - '0'); /* stops growing past the limit */
      if (v > max_content) {
        size_t k = m->val_len < 31 ? m->val_len : 31;
        memcpy(claimed, m->val, k);
        claimed[k] = '\0';
        rc = perr(err, APPMSG_E_CONTENT_TOO_LARGE, 0, "content-length above the limit");
      }
      h->content_length = v;
    }
    if (rc)
      break;
  }
  if (rc) {
    cJSON_Delete(extras);
    memset(h, 0, sizeof *h);
    return rc;
  }
  h->_extras = extras;
  h->_borrowed = 1;
  return 0;
}

void appmsg__header_release_borrowed(struct appmsg_header *h) {
  cJSON_Delete(h->_extras);
  memset(h, 0, sizeof *h);
}

void appmsg_header_init(struct appmsg_header *h) {
  memset(h, 0, sizeof *h);
  h->byteorder = appmsg_byteorder_host();
}

void appmsg_header_cleanup(struct appmsg_header *h) {
  if (!h->_borrowed) {
    free(h->content_type);
    free(h->content_encoding);
  }
  cJSON_Delete(h->_extras);
  memset(h, 0, sizeof *h);
}

static int valid_utf8_str(const char *s) {
  size_t n = strlen(s);
  return appmsg__utf8_check((const unsigned char *)s, n) == n;
}

int appmsg_header_set(struct appmsg_header *h, const char *content_type,
                      const char *content_encoding) {
  if (h->_borrowed)
    return -EINVAL;
  if ((content_type && !valid_utf8_str(content_type)) ||
      (content_encoding && !valid_utf8_str(content_encoding)))
    return -EINVAL;
  char *t = content_type ? strdup(content_type) : NULL;
  char *e = content_encoding ? strdup(content_encoding) : NULL;
  if ((content_type && !t) || (content_encoding && !e)) {
    free(t);
    free(e);
    return -ENOMEM;
  }
  if (t) {
    free(h->content_type);
    h->content_type = t;
  }
  if (e) {
    free(h->content_encoding);
    h->content_encoding = e;
  }
  return 0;
}

int appmsg_header_copy(struct appmsg_header *dst, const struct appmsg_header *src) {
  appmsg_header_init(dst);
  dst->byteorder = src->byteorder;
  dst->content_length = src->content_length;
  int rc = appmsg_header_set(dst, src->content_type, src->content_encoding);
  if (rc == 0 && src->_extras) {
    dst->_extras = cJSON_Duplicate(src->_extras, 1);
    if (dst->_extras == NULL)
      rc = -ENOMEM;
  }
  if (rc) {
    appmsg_header_cleanup(dst);
    appmsg_header_init(dst);
  }
  return rc;
}

int appmsg_header_validate(const struct appmsg_header *h) {
  if (h->byteorder != APPMSG_BYTEORDER_LITTLE && h->byteorder != APPMSG_BYTEORDER_BIG)
    return APPMSG_E_BYTEORDER;
  if (h->content_type == NULL || h->content_encoding == NULL)
    return APPMSG_E_FIELD_MISSING;
  if (!valid_utf8_str(h->content_type) || !valid_utf8_str(h->content_encoding))
    return APPMSG_E_HEADER_UTF8;
  return 0;
}

size_t appmsg_header_extra_count(const struct appmsg_header *h) {
  return h->_extras ? (size_t)cJSON_GetArraySize(h->_extras) : 0;
}

const char *appmsg_header_extra_key(const struct appmsg_header *h, size_t i) {
  if (h->_extras == NULL || i >= appmsg_header_extra_count(h))
    return NULL;
  return cJSON_GetArrayItem(h->_extras, (int)i)->string;
}

static cJSON *extra_item(const struct appmsg_header *h, const char *key) {
  return h->_extras && key ? cJSON_GetObjectItemCaseSensitive(h->_extras, key) : NULL;
}

const char *appmsg_header_extra_string(const struct appmsg_header *h, const char *key) {
  cJSON *it = extra_item(h, key);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

char *appmsg_header_extra_json(const struct appmsg_header *h, const char *key) {
  cJSON *it = extra_item(h, key);
  return it ? cJSON_PrintUnformatted(it) : NULL;
}

/* Adds or replaces key with item (taking it over). */
static int put_extra(struct appmsg_header *h, const char *key, cJSON *item) {
  if (h->_borrowed || key == NULL || required_index(key, strlen(key)) >= 0 ||
      !valid_utf8_str(key)) {
    cJSON_Delete(item);
    return -EINVAL;
  }
  if (h->_extras == NULL && (h->_extras = cJSON_CreateObject()) == NULL) {
    cJSON_Delete(item);
    return -ENOMEM;
  }
  if (cJSON_GetObjectItemCaseSensitive(h->_extras, key))
    return cJSON_ReplaceItemInObjectCaseSensitive(h->_extras, key, item) ? 0 : -ENOMEM;
  if (!cJSON_AddItemToObject(h->_extras, key, item)) {
    cJSON_Delete(item);
    return -ENOMEM;
  }
  return 0;
}

int appmsg_header_set_extra_json(struct appmsg_header *h, const char *key, const char *json) {
  if (json == NULL)
    return -EINVAL;
  /* The header object is depth 1, so a value may nest one level less. */
  int rc = appmsg_json_check(json, strlen(json), APPMSG_HEADER_DEPTH_MAX - 1, NULL, NULL);
  if (rc)
    return rc;
  cJSON *item = cJSON_Parse(json);
  return item ? put_extra(h, key, item) : -ENOMEM;
}

int appmsg_header_set_extra_string(struct appmsg_header *h, const char *key, const char *value) {
  if (value == NULL || !valid_utf8_str(value))
    return -EINVAL;
  cJSON *item = cJSON_CreateString(value);
  return item ? put_extra(h, key, item) : -ENOMEM;
}

int appmsg_header_remove_extra(struct appmsg_header *h, const char *key) {
  if (h->_borrowed || extra_item(h, key) == NULL)
    return h->_borrowed ? -EINVAL : -ENOENT;
  cJSON_DeleteItemFromObjectCaseSensitive(h->_extras, key);
  return 0;
}

/* A bounded writer that keeps counting past its capacity. */
struct out {
  char *p;
  size_t cap;
  size_t n;
};

static void put(struct out *o, const char *s, size_t len) {
  if (o->n < o->cap)
    memcpy(o->p + o->n, s, len <= o->cap - o->n ? len : o->cap - o->n);
  o->n += len;
}

static void put_quoted(struct out *o, const char *s) {
  size_t room = o->n < o->cap ? o->cap - o->n : 0;
  o->n += appmsg_json_quote(s, strlen(s), o->p ? o->p + (o->n < o->cap ? o->n : 0) : NULL, room);
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

long appmsg_header_write(const struct appmsg_header *h, uint64_t content_length, char *out,
                         size_t cap) {
  int rc = appmsg_header_validate(h);
  if (rc)
    return rc;
  struct out o = {out, out ? cap : 0, 0};
  if (h->byteorder == APPMSG_BYTEORDER_LITTLE)
    PUT_LIT(&o, "{\"byteorder\": \"little\", \"content-type\": ");
  else
    PUT_LIT(&o, "{\"byteorder\": \"big\", \"content-type\": ");
  put_quoted(&o, h->content_type);
  PUT_LIT(&o, ", \"content-encoding\": ");
  put_quoted(&o, h->content_encoding);
  char num[32];
  int k =
      snprintf(num, sizeof num, ", \"content-length\": %llu", (unsigned long long)content_length);
  put(&o, num, (size_t)k);
  if (h->_extras) {
    for (cJSON *it = ((cJSON *)h->_extras)->child; it; it = it->next) {
      char *v = cJSON_PrintUnformatted(it);
      if (v == NULL)
        return -ENOMEM;
      PUT_LIT(&o, ", ");
      put_quoted(&o, it->string);
      PUT_LIT(&o, ": ");
      put(&o, v, strlen(v));
      free(v);
    }
  }
  PUT_LIT(&o, "}");
  return (long)o.n;
}
