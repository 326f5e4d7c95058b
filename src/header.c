/*
 * The header: parsing a received one, building and writing one to send.
 *
 * The four required fields are read by the strict scanner of json.c; a
 * header made of them alone is parsed with no allocation at all, its
 * strings unescaped in place in the decoder's header buffer.  Every other
 * member (an "extra") is kept as text, never as a parsed value: its value
 * as the JSON text received or given, its key as written (or, for a key
 * added here, the plain name given), so that what goes out is byte for
 * byte what came in (PROTOCOL.md 2.2 and 7.2).  A key is compared with a
 * name only through appmsg__json_key_is(), so "\u0072equest-id" is
 * "request-id" everywhere.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "header_internal.h"
#include "json_internal.h"
#include "util.h"

typedef struct appmsg__extra extra_t;
typedef struct appmsg__extras extras_t;

enum { F_BYTEORDER, F_TYPE, F_ENCODING, F_LENGTH, F_COUNT };

static const char *const field_name[F_COUNT] = {"byteorder", "content-type", "content-encoding",
                                                "content-length"};
static const size_t field_len[F_COUNT] = {9, 12, 16, 14};
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

/* Which required field a member's key names (as written), or -1. */
static int required_index(const struct appmsg_json_member *m) {
  for (int f = 0; f < F_COUNT; f++)
    if (appmsg__json_key_is(m, field_name[f], field_len[f]))
      return f;
  return -1;
}

/* An extra's key as the member the comparator takes: as written, or a
 * plain name (which compares byte for byte, like a key without escapes). */
static struct appmsg_json_member key_of(const extra_t *x) {
  struct appmsg_json_member m;
  memset(&m, 0, sizeof m);
  m.key = x->key;
  m.key_len = x->key_len;
  m.key_escaped = (x->flags & APPMSG__X_KEY_ESCAPED) != 0;
  return m;
}

/* A plain name as a member's key, for the checks made on keys given here. */
static struct appmsg_json_member plain_key(const char *name, size_t len) {
  struct appmsg_json_member m;
  memset(&m, 0, sizeof m);
  m.key = name;
  m.key_len = len;
  return m;
}

/* Frees what one extra owns. */
static void extra_release(extra_t *x) {
  appmsg__free(x->name);
  appmsg__free(x->str);
  if (x->flags & APPMSG__X_OWNED)
    appmsg__free((char *)x->key);
}

static void extras_free(extras_t *e) {
  if (e == NULL)
    return;
  for (size_t i = 0; i < e->count; i++)
    extra_release(&e->v[i]);
  if (e->v != e->in_block)
    appmsg__free(e->v);
  appmsg__free(e);
}

/* The index of the extra whose key is name[0..len), or -1. */
static long find_extra(const extras_t *e, const char *name, size_t len) {
  for (size_t i = 0; e && i < e->count; i++) {
    struct appmsg_json_member m = key_of(&e->v[i]);
    if (appmsg__json_key_is(&m, name, len))
      return (long)i;
  }
  return -1;
}

static const extra_t *extra_named(const struct appmsg_header *h, const char *name) {
  const extras_t *e = h->_extras;
  if (e == NULL || name == NULL) /* (the usual header: no extras) */
    return NULL;
  long i = find_extra(e, name, strlen(name));
  return i < 0 ? NULL : &e->v[i];
}

/* --- parsing ------------------------------------------------------------ */

/* Extras kept from the first scan; a header with more is scanned again to
 * find them all. */
#define EXTRAS_KEPT 8

struct collect {
  struct appmsg_json_member field[F_COUNT];    /* the required members found */
  int seen[F_COUNT];                           /* how often each was found */
  size_t extras;                               /* members that are not required */
  struct appmsg_json_member kept[EXTRAS_KEPT]; /* the first of them */
};

static void collect_member(void *ud, const struct appmsg_json_member *m) {
  struct collect *c = ud;
  int f = required_index(m);
  if (f < 0) {
    if (c->extras < EXTRAS_KEPT)
      c->kept[c->extras] = *m;
    c->extras++;
    return;
  }
  if (c->seen[f]++ == 0)
    c->field[f] = *m;
}

/* Fills in an extra from a received member: spans of the received text. */
static void extra_from_member(extra_t *x, const struct appmsg_json_member *m) {
  int quoted = m->type == APPMSG_JSON_STRING;
  x->key = m->key;
  x->key_len = m->key_len;
  x->val = m->val - quoted;
  x->val_len = m->val_len + 2 * (size_t)quoted;
  x->flags = (m->key_escaped ? APPMSG__X_KEY_ESCAPED : 0u) | (quoted ? APPMSG__X_STRING : 0u) |
             (quoted && m->val_escaped ? APPMSG__X_VAL_ESCAPED : 0u);
  x->name = NULL;
  x->str = NULL;
}

static void gather_extra(void *ud, const struct appmsg_json_member *m) {
  extras_t *e = ud;
  if (required_index(m) < 0)
    extra_from_member(&e->v[e->count++], m);
}

/* The extras of a received header, in one allocation, or NULL when out of
 * memory.  buf must still be as received (a second scan reads it). */
static extras_t *extras_received(const char *buf, size_t n, const struct collect *c) {
  extras_t *e = appmsg__malloc(sizeof *e + c->extras * sizeof(extra_t));
  if (e == NULL)
    return NULL;
  e->count = 0;
  e->cap = c->extras;
  e->v = e->in_block;
  e->type = e->encoding = NULL;
  if (c->extras <= EXTRAS_KEPT) {
    for (size_t i = 0; i < c->extras; i++)
      extra_from_member(&e->v[i], &c->kept[i]);
    e->count = c->extras;
  } else {
    struct appmsg__json_error err; /* (the first scan accepted this text) */
    appmsg__json_scan(buf, n, APPMSG_HEADER_DEPTH_MAX, 1, NULL, gather_extra, e, &err);
  }
  return e;
}

/* A key unescaped, for sorting. */
struct plain {
  const char *p; /* the key's bytes once unescaped */
  size_t len;    /* their count */
  size_t i;      /* which extra */
};

static int cmp_plain(const void *a, const void *b) {
  const struct plain *x = a, *y = b;
  int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/*
 * Whether two extras have the same key once unescaped: 1, 0, or -ENOMEM
 * if it cannot tell.  A few keys without escapes (the usual request-id
 * and the like) are compared pair by pair with nothing allocated; more,
 * or escaped ones, are unescaped once and sorted, O(k log k) in time and
 * bounded by the header's size in memory, whatever a peer sends.  Either
 * way two keys are found equal by the comparator, one as written against
 * the other as a plain name.
 */
static int extras_have_duplicate(const extras_t *e) {
  size_t k = e->count, escaped = 0, bytes = 0;
  if (k < 2)
    return 0;
  for (size_t i = 0; i < k; i++) {
    escaped |= e->v[i].flags & APPMSG__X_KEY_ESCAPED;
    bytes += e->v[i].key_len;
  }
  if (k <= EXTRAS_KEPT && !escaped) {
    for (size_t i = 1; i < k; i++)
      for (size_t j = 0; j < i; j++) {
        struct appmsg_json_member m = key_of(&e->v[i]);
        if (appmsg__json_key_is(&m, e->v[j].key, e->v[j].key_len))
          return 1;
      }
    return 0;
  }
  struct plain *s = appmsg__malloc(k * sizeof *s + bytes);
  if (s == NULL)
    return -ENOMEM;
  char *arena = (char *)(s + k);
  for (size_t i = 0; i < k; i++) {
    const extra_t *x = &e->v[i];
    s[i].i = i;
    if (x->flags & APPMSG__X_KEY_ESCAPED) {
      s[i].p = arena;
      s[i].len = appmsg_json_unescape(x->key, x->key_len, arena);
      arena += s[i].len;
    } else {
      s[i].p = x->key;
      s[i].len = x->key_len;
    }
  }
  qsort(s, k, sizeof *s, cmp_plain);
  int dup = 0;
  for (size_t i = 1; i < k && !dup; i++) {
    struct appmsg_json_member m = key_of(&e->v[s[i].i]);
    dup = appmsg__json_key_is(&m, s[i - 1].p, s[i - 1].len);
  }
  appmsg__free(s);
  return dup;
}

/* Whether a JSON string as written (the inside of its quotes) is name. */
static int string_is(const struct appmsg_json_member *m, const char *name, size_t len) {
  struct appmsg_json_member v = plain_key(m->val, m->val_len);
  v.key_escaped = m->val_escaped;
  return appmsg__json_key_is(&v, name, len);
}

/* Unescapes a string member in place and NUL-terminates it (the closing
 * quote, or an earlier byte, takes the NUL). */
static char *string_in_place(const struct appmsg_json_member *m) {
  char *v = (char *)m->val;
  size_t len = m->val_escaped ? appmsg_json_unescape(v, m->val_len, v) : m->val_len;
  v[len] = '\0';
  return v;
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
  struct collect c; /* (field[] and kept[] are read only where seen[] and extras say) */
  memset(c.seen, 0, sizeof c.seen);
  c.extras = 0;
  int rc = appmsg__json_scan(buf, n, APPMSG_HEADER_DEPTH_MAX, 1, NULL, collect_member, &c, err);
  if (rc)
    return rc;

  for (int f = 0; f < F_COUNT; f++)
    if (c.seen[f] > 1)
      return perr(err, APPMSG_E_HEADER_DUPLICATE, 0, "duplicate key in header");
  extras_t *extras = NULL;
  if (c.extras > 0) {
    /* Before the strings below are unescaped in place: a header with many
     * extras is scanned again, and the text must still be JSON then. */
    extras = extras_received(buf, n, &c);
    rc = extras ? extras_have_duplicate(extras) : -ENOMEM;
    if (rc) {
      extras_free(extras);
      return rc == 1 ? perr(err, APPMSG_E_HEADER_DUPLICATE, 0, "duplicate key in header")
                     : perr(err, -ENOMEM, 0, "out of memory");
    }
  }

  /* The four fields, in the order PROTOCOL.md section 5 gives. */
  for (int f = 0; f < F_COUNT; f++) {
    const struct appmsg_json_member *m = &c.field[f];
    enum appmsg_json_type want = f == F_LENGTH ? APPMSG_JSON_NUMBER : APPMSG_JSON_STRING;
    if (!c.seen[f])
      rc = perr(err, APPMSG_E_FIELD_MISSING, 0, missing_reason[f]);
    else if (m->type != want)
      rc = perr(err, APPMSG_E_FIELD_TYPE, 0, type_reason[f]);
    else if (f == F_BYTEORDER) {
      if (string_is(m, "little", 6))
        h->byteorder = APPMSG_BYTEORDER_LITTLE;
      else if (string_is(m, "big", 3))
        h->byteorder = APPMSG_BYTEORDER_BIG;
      else
        rc = perr(err, APPMSG_E_BYTEORDER, 0, "\"byteorder\" must be \"little\" or \"big\"");
    } else if (f == F_TYPE) {
      h->content_type = string_in_place(m); /* (no extra's bytes are touched) */
    } else if (f == F_ENCODING) {
      h->content_encoding = string_in_place(m);
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

/* --- owning a header ------------------------------------------------------ */

void appmsg_header_init(struct appmsg_header *h) {
  memset(h, 0, sizeof *h);
  h->byteorder = appmsg_byteorder_host();
}

/* Whether s is a string h allocated on its own (not borrowed from a
 * decoder, not inside a copy's block). */
static int owns_alone(const struct appmsg_header *h, const char *s) {
  const extras_t *e = h->_extras;
  return !h->_borrowed && s != NULL && !(e && (s == e->type || s == e->encoding));
}

void appmsg_header_cleanup(struct appmsg_header *h) {
  if (owns_alone(h, h->content_type))
    appmsg__free(h->content_type);
  if (owns_alone(h, h->content_encoding))
    appmsg__free(h->content_encoding);
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
  char *t = content_type ? appmsg__strdup(content_type) : NULL;
  char *e = content_encoding ? appmsg__strdup(content_encoding) : NULL;
  if ((content_type && !t) || (content_encoding && !e)) {
    appmsg__free(t);
    appmsg__free(e);
    return -ENOMEM;
  }
  if (t) {
    if (owns_alone(h, h->content_type))
      appmsg__free(h->content_type);
    h->content_type = t;
  }
  if (e) {
    if (owns_alone(h, h->content_encoding))
      appmsg__free(h->content_encoding);
    h->content_encoding = e;
  }
  return 0;
}

/* Copies len bytes and a NUL to *p, moving *p past them. */
static char *put_text(char **p, const char *s, size_t len) {
  char *d = *p;
  if (len)
    memcpy(d, s, len);
  d[len] = '\0';
  *p = d + len + 1;
  return d;
}

int appmsg_header_copy(struct appmsg_header *dst, const struct appmsg_header *src) {
  appmsg_header_init(dst);
  dst->byteorder = src->byteorder;
  dst->content_length = src->content_length;
  const extras_t *se = src->_extras;
  size_t k = se ? se->count : 0;
  size_t tlen = src->content_type ? strlen(src->content_type) : 0;
  size_t elen = src->content_encoding ? strlen(src->content_encoding) : 0;
  size_t text = (src->content_type ? tlen + 1 : 0) + (src->content_encoding ? elen + 1 : 0);
  for (size_t i = 0; i < k; i++)
    text += se->v[i].key_len + se->v[i].val_len + 2;
  if (k == 0 && text == 0)
    return 0;
  /* One block: the entries, then every byte they and the strings hold. */
  extras_t *e = appmsg__malloc(sizeof *e + k * sizeof(extra_t) + text);
  if (e == NULL)
    return -ENOMEM;
  e->count = e->cap = k;
  e->v = e->in_block;
  char *p = (char *)(e->in_block + k);
  e->type = src->content_type ? put_text(&p, src->content_type, tlen) : NULL;
  e->encoding = src->content_encoding ? put_text(&p, src->content_encoding, elen) : NULL;
  for (size_t i = 0; i < k; i++) {
    const extra_t *x = &se->v[i];
    extra_t *y = &e->v[i];
    y->key = put_text(&p, x->key, x->key_len);
    y->key_len = x->key_len;
    y->val = put_text(&p, x->val, x->val_len);
    y->val_len = x->val_len;
    y->flags = (x->flags & ~(unsigned)APPMSG__X_OWNED) | APPMSG__X_KEY_NUL;
    y->name = NULL;
    y->str = NULL;
  }
  dst->content_type = e->type;
  dst->content_encoding = e->encoding;
  dst->_extras = e;
  return 0;
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

/* --- reading extras --------------------------------------------------------- */

size_t appmsg_header_extra_count(const struct appmsg_header *h) {
  const extras_t *e = h->_extras;
  return e ? e->count : 0;
}

/* s[0..len) unescaped (or copied, when it has no escapes) into a new
 * NUL-terminated string; NULL when out of memory. */
static char *unescaped(const char *s, size_t len, int escaped) {
  char *d = appmsg__malloc(len + 1);
  if (d == NULL)
    return NULL;
  if (escaped)
    len = appmsg_json_unescape(s, len, d);
  else if (len)
    memcpy(d, s, len);
  d[len] = '\0';
  return d;
}

/* The results kept in an extra (name, str) are made on first use: the
 * header is logically const, as it changes no observable value. */
const char *appmsg_header_extra_key(const struct appmsg_header *h, size_t i) {
  extras_t *e = h->_extras;
  if (e == NULL || i >= e->count)
    return NULL;
  extra_t *x = &e->v[i];
  unsigned esc = x->flags & APPMSG__X_KEY_ESCAPED;
  if ((x->flags & APPMSG__X_KEY_NUL) && !esc)
    return x->key; /* a plain name, or a key written without escapes, with its NUL */
  if (x->name == NULL)
    x->name = unescaped(x->key, x->key_len, esc != 0);
  return x->name;
}

const char *appmsg_header_extra_string(const struct appmsg_header *h, const char *key) {
  extra_t *x = (extra_t *)extra_named(h, key);
  if (x == NULL || !(x->flags & APPMSG__X_STRING))
    return NULL;
  if (x->str == NULL) /* (the inside of the quotes) */
    x->str = unescaped(x->val + 1, x->val_len - 2, (x->flags & APPMSG__X_VAL_ESCAPED) != 0);
  return x->str;
}

long appmsg_header_extra_raw(const struct appmsg_header *h, const char *key, char *out,
                             size_t cap) {
  const extra_t *x = extra_named(h, key);
  if (x == NULL)
    return -ENOENT;
  if (out && cap)
    memcpy(out, x->val, x->val_len < cap ? x->val_len : cap);
  return (long)x->val_len;
}

char *appmsg_header_extra_json(const struct appmsg_header *h, const char *key) {
  const extra_t *x = extra_named(h, key);
  return x ? unescaped(x->val, x->val_len, 0) : NULL;
}

/* --- changing extras -------------------------------------------------------- */

/* Adds key (a plain name) with the value text val[0..vlen) - or, with
 * quote, with val[0..vlen) quoted as a JSON string - or replaces the value
 * of the extra that has that key, in its place. */
static int put_extra(struct appmsg_header *h, const char *key, const char *val, size_t vlen,
                     int quote) {
  if (h->_borrowed || key == NULL || !valid_utf8_str(key))
    return -EINVAL;
  size_t klen = strlen(key);
  struct appmsg_json_member km = plain_key(key, klen);
  if (required_index(&km) >= 0)
    return -EINVAL;
  extras_t *e = h->_extras;
  if (e == NULL && (e = h->_extras = appmsg__calloc(1, sizeof *e)) == NULL)
    return -ENOMEM;
  long at = find_extra(e, key, klen);
  if (at < 0 && e->count == e->cap) { /* grow: the entries move to an array of their own */
    size_t cap = e->cap ? 2 * e->cap : 4;
    extra_t *v = appmsg__malloc(cap * sizeof *v);
    if (v == NULL)
      return -ENOMEM;
    if (e->count)
      memcpy(v, e->v, e->count * sizeof *v);
    if (e->v != e->in_block)
      appmsg__free(e->v);
    e->v = v;
    e->cap = cap;
  }
  size_t tlen = quote ? appmsg_json_quote(val, vlen, NULL, 0) : vlen;
  char *text = appmsg__malloc(klen + tlen + 2); /* key, NUL, value text, NUL */
  if (text == NULL)
    return -ENOMEM;
  char *p = text;
  put_text(&p, key, klen);
  char *v = p;
  if (quote) {
    appmsg_json_quote(val, vlen, v, tlen);
    v[tlen] = '\0';
  } else {
    put_text(&p, val, vlen);
  }
  extra_t *x;
  if (at >= 0) {
    x = &e->v[at];
    extra_release(x);
  } else {
    x = &e->v[e->count++];
  }
  x->key = text;
  x->key_len = klen;
  x->val = v;
  x->val_len = tlen;
  x->flags = APPMSG__X_KEY_PLAIN | APPMSG__X_KEY_NUL | APPMSG__X_OWNED;
  if (v[0] == '"')
    x->flags |= APPMSG__X_STRING | (memchr(v, '\\', tlen) ? APPMSG__X_VAL_ESCAPED : 0u);
  x->name = NULL;
  x->str = NULL;
  return 0;
}

static int is_json_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int appmsg_header_set_extra_json(struct appmsg_header *h, const char *key, const char *json) {
  if (json == NULL)
    return -EINVAL;
  size_t n = strlen(json);
  /* The header object is depth 1, so a value may nest one level less. */
  int rc = appmsg_json_check(json, n, APPMSG_HEADER_DEPTH_MAX - 1, NULL, NULL);
  if (rc)
    return rc;
  while (is_json_ws(json[n - 1])) /* (the check found a value: never all blank) */
    n--;
  while (is_json_ws(*json)) {
    json++;
    n--;
  }
  return put_extra(h, key, json, n, 0);
}

int appmsg_header_set_extra_string(struct appmsg_header *h, const char *key, const char *value) {
  if (value == NULL || !valid_utf8_str(value))
    return -EINVAL;
  return put_extra(h, key, value, strlen(value), 1);
}

int appmsg_header_remove_extra(struct appmsg_header *h, const char *key) {
  if (h->_borrowed)
    return -EINVAL;
  extras_t *e = h->_extras;
  long at = key ? find_extra(e, key, strlen(key)) : -1;
  if (at < 0)
    return -ENOENT;
  extra_release(&e->v[at]);
  memmove(&e->v[at], &e->v[at + 1], (e->count - (size_t)at - 1) * sizeof *e->v);
  e->count--;
  return 0;
}

/* --- writing -------------------------------------------------------------- */

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

static void put_quoted(struct out *o, const char *s, size_t len) {
  size_t room = o->n < o->cap ? o->cap - o->n : 0;
  o->n += appmsg_json_quote(s, len, o->p ? o->p + (o->n < o->cap ? o->n : 0) : NULL, room);
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
 * offset where the digits go.  Extras go out as kept: a key as written
 * between quotes (a plain name quoted), the value's text as it is. */
static long write_parts(const struct appmsg_header *h, struct out *o, const char *digits,
                        size_t ndigits, size_t *split) {
  if (h->byteorder == APPMSG_BYTEORDER_LITTLE)
    PUT_LIT(o, "{\"byteorder\": \"little\", \"content-type\": ");
  else
    PUT_LIT(o, "{\"byteorder\": \"big\", \"content-type\": ");
  put_quoted(o, h->content_type, strlen(h->content_type));
  PUT_LIT(o, ", \"content-encoding\": ");
  put_quoted(o, h->content_encoding, strlen(h->content_encoding));
  PUT_LIT(o, ", \"content-length\": ");
  *split = o->n;
  put(o, digits, ndigits);
  const extras_t *e = h->_extras;
  for (size_t i = 0; e && i < e->count; i++) {
    const extra_t *x = &e->v[i];
    PUT_LIT(o, ", ");
    if (x->flags & APPMSG__X_KEY_PLAIN) {
      put_quoted(o, x->key, x->key_len);
    } else {
      PUT_LIT(o, "\"");
      put(o, x->key, x->key_len);
      PUT_LIT(o, "\"");
    }
    PUT_LIT(o, ": ");
    put(o, x->val, x->val_len);
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
