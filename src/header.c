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

#include "header_internal.h"
#include "json_internal.h"
#include "util.h"

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
  struct appmsg_json_member field[F_COUNT]; /* the required members found */
  int seen[F_COUNT];                        /* how often each was found */
  size_t extras;                            /* members that are not required */
};

static void collect_member(void *ud, const struct appmsg_json_member *m) {
  struct collect *c = ud;
  int f;
  if (!m->key_escaped) {
    f = required_index(m->key, m->key_len);
  } else if (m->key_len <= 96) { /* longer cannot unescape to a required name */
    char tmp[96];
    f = required_index(tmp, appmsg_json_unescape(m->key, m->key_len, tmp));
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

/*
 * The extra keys of a header.  A header built to be sent keeps them as a
 * cJSON object; a received one keeps only the header text and builds the
 * object the first time the application asks: as a tree, a 64 KiB header
 * of extras would cost some 40 times its size, and most programs never
 * look at extras at all.
 */
struct extras {
  cJSON *tree;     /* the extra keys as an object, or NULL until built */
  const char *raw; /* the received header text (borrowed), while tree is NULL */
  size_t raw_len;  /* its length */
  char *strings;   /* a received header's content-type and content-encoding */
};

static void extras_free(struct extras *e) {
  if (e) {
    cJSON_Delete(e->tree);
    free(e->strings);
    free(e);
  }
}

/* The extras object of h, built from the received text on first use (the
 * header is logically const: building it changes no observable value). */
static cJSON *tree_of(const struct appmsg_header *h) {
  struct extras *e = h->_extras;
  if (e == NULL)
    return NULL;
  if (e->tree == NULL && e->raw != NULL) {
    cJSON *root = cJSON_ParseWithLength(e->raw, e->raw_len);
    if (root == NULL)
      return NULL; /* the scanner accepted the text, so only memory can fail */
    for (int f = 0; f < F_COUNT; f++)
      cJSON_DeleteItemFromObjectCaseSensitive(root, field_name[f]);
    e->tree = root; /* (raw stays: appmsg_header_extra_raw() reads it) */
  }
  return e->tree;
}

/* Collects the extra keys' spans for the duplicate check. */
struct keyspan {
  const char *p;
  size_t len;
};

struct keys {
  struct keyspan *v; /* room for every extra key */
  size_t n;          /* how many so far */
  char *arena;       /* unescaped copies of escaped keys */
  size_t used;       /* bytes of arena used */
};

static void collect_key(void *ud, const struct appmsg_json_member *m) {
  struct keys *k = ud;
  const char *key = m->key;
  size_t len = m->key_len;
  if (m->key_escaped) {
    char *dst = k->arena + k->used;
    len = appmsg_json_unescape(m->key, m->key_len, dst);
    key = dst;
    k->used += len;
  }
  if (required_index(key, len) >= 0)
    return;
  k->v[k->n].p = key;
  k->v[k->n].len = len;
  k->n++;
}

static int cmp_span(const void *a, const void *b) {
  const struct keyspan *x = a, *y = b;
  int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Whether two extra keys are equal after unescaping: O(k log k) in time,
 * transient memory bounded by the header's size.  -ENOMEM if it cannot
 * tell. */
static int extras_have_duplicate(const char *buf, size_t n, size_t count) {
  struct keys k = {malloc(count * sizeof *k.v), 0, malloc(n ? n : 1), 0};
  int dup = -ENOMEM;
  if (k.v && k.arena) {
    struct appmsg__json_error e;
    appmsg__json_scan(buf, n, APPMSG_HEADER_DEPTH_MAX, 1, NULL, collect_key, &k, &e);
    qsort(k.v, k.n, sizeof *k.v, cmp_span);
    dup = 0;
    for (size_t i = 1; i < k.n && !dup; i++)
      dup = cmp_span(&k.v[i - 1], &k.v[i]) == 0;
  }
  free(k.v);
  free(k.arena);
  return dup;
}

/* Unescapes a string member in place and NUL-terminates it (the closing
 * quote, or an earlier byte, takes the NUL). */
static char *string_in_place(const struct appmsg_json_member *m) {
  char *v = (char *)m->val;
  size_t len = m->val_escaped ? appmsg_json_unescape(v, m->val_len, v) : m->val_len;
  v[len] = '\0';
  return v;
}

/* Unescapes a string member into dst (room for val_len + 1), with a NUL. */
static char *string_copy(const struct appmsg_json_member *m, char *dst) {
  size_t len = m->val_escaped ? appmsg_json_unescape(m->val, m->val_len, dst) : m->val_len;
  if (!m->val_escaped)
    memcpy(dst, m->val, len);
  dst[len] = '\0';
  return dst;
}

static int perr(struct appmsg__json_error *err, int code, size_t off, const char *reason) {
  err->code = code;
  err->offset = off;
  err->reason = reason;
  return code;
}

/* Reads a content-length written as digits, refusing it above the limit
 * (CONTENT_TOO_LARGE, with the digits as written in claimed).  The value
 * stops growing once past the limit, so 2^64 + 5 cannot wrap around. */
static int read_length(const char *digits, size_t n, uint64_t max_content, uint64_t *out,
                       struct appmsg__json_error *err, char claimed[32]) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && v <= max_content; i++)
    v = v * 10 + (uint64_t)(digits[i] - '0');
  *out = v;
  if (v <= max_content)
    return 0;
  size_t k = n < 31 ? n : 31;
  memcpy(claimed, digits, k);
  claimed[k] = '\0';
  return perr(err, APPMSG_E_CONTENT_TOO_LARGE, 0, "content-length above the limit");
}

/* Matches a literal at *i. */
static int lit(const char *buf, size_t n, size_t *i, const char *s, size_t len) {
  if (n - *i < len || memcmp(buf + *i, s, len) != 0)
    return 0;
  *i += len;
  return 1;
}

/* A string of plain bytes (no escape, no control character, no quote) up
 * to its closing quote, at *i just past the opening one; NUL-terminated in
 * place.  Returns it, or NULL when it is not that simple.  Always inlined:
 * both its uses are on every frame's path, where the compiler would
 * otherwise keep a call. */
static inline __attribute__((always_inline)) char *plain_string(char *buf, size_t n, size_t *i) {
  size_t start = *i;
  size_t k = start + appmsg__json_plain_run((const unsigned char *)buf + start, n - start);
  if (k >= n || buf[k] != '"')
    return NULL;
  *i = k + 1;
  return buf + start;
}

#define LIT(s) lit(buf, n, &i, s, sizeof(s) - 1)

/*
 * The fast path: a header written the way the guide's Python and appmsg
 * write it - the four fields in order, ", " and ": " separators, strings
 * without escapes, nothing else - is read with a few comparisons.  Any
 * other header, and any header this path would have to refuse (except for
 * its content-length limit), goes to the general path, which gives the
 * same answer for every header this path accepts.  Returns 1 when done
 * (*rc set), 0 to take the general path.
 */
static int parse_canonical(char *buf, size_t n, uint64_t max_content, struct appmsg_header *h,
                           struct appmsg__json_error *err, char claimed[32], int *rc) {
  size_t i = 0;
  enum appmsg_byteorder bo;
  if (!LIT("{\"byteorder\": \""))
    return 0;
  if (LIT("little\""))
    bo = APPMSG_BYTEORDER_LITTLE;
  else if (LIT("big\""))
    bo = APPMSG_BYTEORDER_BIG;
  else
    return 0;
  if (!LIT(", \"content-type\": \""))
    return 0;
  size_t t0 = i;
  char *type = plain_string(buf, n, &i);
  size_t t1 = i - 1;
  if (!type || !LIT(", \"content-encoding\": \""))
    return 0;
  size_t e0 = i;
  char *enc = plain_string(buf, n, &i);
  size_t e1 = i - 1;
  if (!enc || !LIT(", \"content-length\": "))
    return 0;
  size_t d0 = i;
  while (i < n && buf[i] >= '0' && buf[i] <= '9')
    i++;
  size_t digits = i - d0;
  if (digits == 0 || (digits > 1 && buf[d0] == '0') || !LIT("}"))
    return 0;
  while (i < n && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
    i++;
  if (i != n)
    return 0;
  const unsigned char *u = (const unsigned char *)buf;
  if (appmsg_utf8_check(u + t0, t1 - t0) != t1 - t0 ||
      appmsg_utf8_check(u + e0, e1 - e0) != e1 - e0)
    return 0;
  uint64_t v;
  if ((*rc = read_length(buf + d0, digits, max_content, &v, err, claimed)) != 0)
    return 1;
  buf[t1] = '\0';
  buf[e1] = '\0';
  h->byteorder = bo;
  h->content_type = type;
  h->content_encoding = enc;
  h->content_length = v;
  h->_borrowed = 1;
  *rc = 0;
  return 1;
}

#undef LIT

int appmsg__header_parse(char *buf, size_t n, uint64_t max_content, int fast,
                         struct appmsg_header *h, struct appmsg__json_error *err,
                         char claimed[32]) {
  memset(h, 0, sizeof *h);
  int fast_rc;
  if (fast && parse_canonical(buf, n, max_content, h, err, claimed, &fast_rc)) {
    if (fast_rc)
      memset(h, 0, sizeof *h);
    return fast_rc;
  }
  size_t bad = appmsg_utf8_check(buf, n);
  if (bad < n)
    return perr(err, APPMSG_E_HEADER_UTF8, bad, "header is not valid UTF-8");
  struct collect c;
  memset(&c, 0, sizeof c);
  int rc = appmsg__json_scan(buf, n, APPMSG_HEADER_DEPTH_MAX, 1, NULL, collect_member, &c, err);
  if (rc)
    return rc;

  for (int f = 0; f < F_COUNT; f++)
    if (c.seen[f] > 1)
      return perr(err, APPMSG_E_HEADER_DUPLICATE, 0, "duplicate key in header");
  struct extras *extras = NULL;
  if (c.extras > 0) {
    rc = extras_have_duplicate(buf, n, c.extras);
    if (rc == 1)
      return perr(err, APPMSG_E_HEADER_DUPLICATE, 0, "duplicate key in header");
    /* With extras the text must stay as received (they are built from it
     * later), so the two strings are unescaped into a buffer of their own. */
    size_t room = (c.seen[F_TYPE] ? c.field[F_TYPE].val_len : 0) +
                  (c.seen[F_ENCODING] ? c.field[F_ENCODING].val_len : 0) + 2;
    extras = rc == 0 ? calloc(1, sizeof *extras) : NULL;
    if (extras)
      extras->strings = malloc(room);
    if (extras == NULL || extras->strings == NULL) {
      extras_free(extras);
      return perr(err, -ENOMEM, 0, "out of memory");
    }
    extras->raw = buf;
    extras->raw_len = n;
  }
  char *strings = extras ? extras->strings : NULL;

  /* The four fields, in the order PROTOCOL.md section 5 gives. */
  for (int f = 0; f < F_COUNT; f++) {
    const struct appmsg_json_member *m = &c.field[f];
    enum appmsg_json_type want = f == F_LENGTH ? APPMSG_JSON_NUMBER : APPMSG_JSON_STRING;
    if (!c.seen[f])
      rc = perr(err, APPMSG_E_FIELD_MISSING, 0, missing_reason[f]);
    else if (m->type != want)
      rc = perr(err, APPMSG_E_FIELD_TYPE, 0, type_reason[f]);
    else if (f == F_BYTEORDER) {
      char tmp[64]; /* longer cannot unescape to "little" or "big" */
      const char *v = m->val_len < sizeof tmp ? string_copy(m, tmp) : "";
      if (strcmp(v, "little") == 0)
        h->byteorder = APPMSG_BYTEORDER_LITTLE;
      else if (strcmp(v, "big") == 0)
        h->byteorder = APPMSG_BYTEORDER_BIG;
      else
        rc = perr(err, APPMSG_E_BYTEORDER, 0, "\"byteorder\" must be \"little\" or \"big\"");
    } else if (f == F_TYPE || f == F_ENCODING) {
      char *v = strings ? string_copy(m, strings) : string_in_place(m);
      if (strings)
        strings += strlen(v) + 1;
      *(f == F_TYPE ? &h->content_type : &h->content_encoding) = v;
    } else if (!m->val_plain_int) {
      rc = perr(err, APPMSG_E_CONTENT_LENGTH, 0,
                "\"content-length\" must be written as a non-negative integer (digits only)");
    } else {
      rc = read_length(m->val, m->val_len, max_content, &h->content_length, err, claimed);
    }
    if (rc)
      break;
  }
  if (rc) {
    extras_free(extras);
    memset(h, 0, sizeof *h);
    return rc;
  }
  h->_extras = extras;
  h->_borrowed = 1;
  return 0;
}

void appmsg__header_release_borrowed(struct appmsg_header *h) {
  extras_free(h->_extras);
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
  extras_free(h->_extras);
  memset(h, 0, sizeof *h);
}

static int valid_utf8_str(const char *s) {
  size_t n = strlen(s);
  return appmsg_utf8_check(s, n) == n;
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
  cJSON *tree = tree_of(src);
  if (rc == 0 && tree) {
    struct extras *e = calloc(1, sizeof *e);
    if (e && (e->tree = cJSON_Duplicate(tree, 1)) != NULL)
      dst->_extras = e;
    else {
      free(e);
      rc = -ENOMEM;
    }
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
  cJSON *t = tree_of(h);
  return t ? (size_t)cJSON_GetArraySize(t) : 0;
}

const char *appmsg_header_extra_key(const struct appmsg_header *h, size_t i) {
  if (i >= appmsg_header_extra_count(h))
    return NULL;
  return cJSON_GetArrayItem(tree_of(h), (int)i)->string;
}

static cJSON *extra_item(const struct appmsg_header *h, const char *key) {
  cJSON *t = tree_of(h);
  return t && key ? cJSON_GetObjectItemCaseSensitive(t, key) : NULL;
}

const char *appmsg_header_extra_string(const struct appmsg_header *h, const char *key) {
  cJSON *it = extra_item(h, key);
  return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* Looks for one key among the members of a received header's text. */
struct find_raw {
  const char *key; /* the key looked for */
  size_t key_len;  /* its length */
  const char *val; /* the last matching member's value text, with quotes */
  size_t val_len;  /* its length */
};

static void find_raw_member(void *ud, const struct appmsg_json_member *m) {
  struct find_raw *f = ud;
  if (m->key_escaped) {
    char tmp[256];
    if (m->key_len > sizeof tmp || appmsg_json_unescape(m->key, m->key_len, tmp) != f->key_len ||
        memcmp(tmp, f->key, f->key_len) != 0)
      return;
  } else if (m->key_len != f->key_len || memcmp(m->key, f->key, f->key_len) != 0) {
    return;
  }
  int quoted = m->type == APPMSG_JSON_STRING;
  f->val = m->val - quoted;
  f->val_len = m->val_len + 2 * (size_t)quoted;
}

long appmsg_header_extra_raw(const struct appmsg_header *h, const char *key, char *out,
                             size_t cap) {
  struct extras *e = h->_extras;
  if (e == NULL || key == NULL || required_index(key, strlen(key)) >= 0)
    return -ENOENT;
  if (e->raw != NULL) {
    struct find_raw f = {key, strlen(key), NULL, 0};
    struct appmsg__json_error err;
    if (f.key_len > 256 || appmsg__json_scan(e->raw, e->raw_len, APPMSG_HEADER_DEPTH_MAX, 1, NULL,
                                             find_raw_member, &f, &err) != 0)
      return -ENOENT; /* (the decoder accepted this text, so the scan cannot fail) */
    if (f.val == NULL)
      return -ENOENT;
    if (out)
      memcpy(out, f.val, f.val_len < cap ? f.val_len : cap);
    return (long)f.val_len;
  }
  char *text = appmsg_header_extra_json(h, key);
  if (text == NULL)
    return extra_item(h, key) ? -ENOMEM : -ENOENT;
  size_t n = strlen(text);
  if (out)
    memcpy(out, text, n < cap ? n : cap);
  free(text);
  return (long)n;
}

char *appmsg_header_extra_json(const struct appmsg_header *h, const char *key) {
  const struct extras *e = h->_extras;
  if (e && e->raw) { /* received: the text as the sender wrote it (PROTOCOL.md 2.2) */
    long n = appmsg_header_extra_raw(h, key, NULL, 0);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (text) {
      appmsg_header_extra_raw(h, key, text, (size_t)n);
      text[n] = '\0';
    }
    return text;
  }
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
  struct extras *e = h->_extras;
  if (e == NULL && (e = h->_extras = calloc(1, sizeof *e)) == NULL) {
    cJSON_Delete(item);
    return -ENOMEM;
  }
  if (e->tree == NULL && (e->tree = cJSON_CreateObject()) == NULL) {
    cJSON_Delete(item);
    return -ENOMEM;
  }
  if (cJSON_GetObjectItemCaseSensitive(e->tree, key))
    return cJSON_ReplaceItemInObjectCaseSensitive(e->tree, key, item) ? 0 : -ENOMEM;
  if (!cJSON_AddItemToObject(e->tree, key, item)) {
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
  cJSON_DeleteItemFromObjectCaseSensitive(tree_of(h), key);
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

size_t appmsg__u64_digits(char *out, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t k = 0; k < n; k++)
    out[k] = tmp[n - 1 - k];
  return n;
}

/* Writes the header with the length's digits given; *split gets the
 * offset where the digits go. */
static long write_parts(const struct appmsg_header *h, struct out *o, const char *digits,
                        size_t ndigits, size_t *split) {
  if (h->byteorder == APPMSG_BYTEORDER_LITTLE)
    PUT_LIT(o, "{\"byteorder\": \"little\", \"content-type\": ");
  else
    PUT_LIT(o, "{\"byteorder\": \"big\", \"content-type\": ");
  put_quoted(o, h->content_type);
  PUT_LIT(o, ", \"content-encoding\": ");
  put_quoted(o, h->content_encoding);
  PUT_LIT(o, ", \"content-length\": ");
  *split = o->n;
  put(o, digits, ndigits);
  cJSON *tree = tree_of(h);
  for (cJSON *it = tree ? tree->child : NULL; it; it = it->next) {
    char *v = cJSON_PrintUnformatted(it);
    if (v == NULL)
      return -ENOMEM;
    PUT_LIT(o, ", ");
    put_quoted(o, it->string);
    PUT_LIT(o, ": ");
    put(o, v, strlen(v));
    free(v);
  }
  PUT_LIT(o, "}");
  return (long)o->n;
}

long appmsg__header_write_split(const struct appmsg_header *h, char *out, size_t cap,
                                size_t *split) {
  int rc = appmsg_header_validate(h);
  if (rc)
    return rc;
  struct out o = {out, out ? cap : 0, 0};
  return write_parts(h, &o, "", 0, split);
}

long appmsg_header_write(const struct appmsg_header *h, uint64_t content_length, char *out,
                         size_t cap) {
  int rc = appmsg_header_validate(h);
  if (rc)
    return rc;
  char digits[20];
  size_t nd = appmsg__u64_digits(digits, content_length);
  struct out o = {out, out ? cap : 0, 0};
  size_t split;
  return write_parts(h, &o, digits, nd, &split);
}
