/*
 * A strict JSON scanner (RFC 8259 plus the rules of PROTOCOL.md 2.3), UTF-8
 * validation, string unescaping and Python-style quoting.
 *
 * The scanner validates without building anything: it reports the members
 * of the top-level object as spans of the input, so reading the four
 * required header fields needs no allocation.  Errors point at the first
 * byte where the text stops being the beginning of a valid one, which is
 * what a recursive-descent reader that never backs up sees naturally.
 */
#include <string.h>

#include "json_internal.h"
#include "util.h"

struct scan {
  const char *p;                  /* the text */
  size_t n;                       /* its length */
  size_t i;                       /* the next byte to read */
  int depth;                      /* current nesting */
  int max_depth;                  /* refuse deeper nesting */
  appmsg_json_member_cb cb;       /* top-level member callback or NULL */
  void *ud;                       /* its user data */
  struct appmsg__json_error *err; /* where to report */
};

/* Per-member facts the value parsers hand back to the object parser. */
struct valinfo {
  enum appmsg_json_type type;
  int escaped;
  int plain_int;
};

static int fail(struct scan *s, int code, size_t at, const char *reason) {
  s->err->code = code;
  s->err->offset = at;
  s->err->reason = reason;
  return code;
}

static int bad(struct scan *s, const char *reason) {
  return fail(s, APPMSG_E_HEADER_JSON, s->i, reason);
}

/* JSON whitespace from i on: the index of the first other byte (or n). */
static size_t skip_ws_at(const char *p, size_t n, size_t i) {
  while (i < n && appmsg__json_ws((unsigned char)p[i]))
    i++;
  return i;
}

static void skip_ws(struct scan *s) {
  s->i = skip_ws_at(s->p, s->n, s->i);
}

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/*
 * Reads the 4 hex digits of a \u escape (s->i at the first digit).  Every
 * byte is checked as it comes, so an error points at the first byte no
 * valid text could have there: with low_only (the second half of a pair)
 * the digits must start "dc".."df"; otherwise "dc".."df" is a lone low
 * surrogate, refused at its second digit.
 */
static int read_hex4(struct scan *s, int low_only, unsigned *out) {
  unsigned v = 0;
  for (int k = 0; k < 4; k++) {
    if (s->i >= s->n)
      return bad(s, "unexpected end inside a \\u escape");
    unsigned char c = (unsigned char)s->p[s->i];
    int h = hexval(c);
    if (low_only && ((k == 0 && h != 0xD) || (k == 1 && h < 0xC)))
      return bad(s, "high surrogate not followed by a low surrogate");
    if (h < 0)
      return bad(s, "\\u escape needs 4 hex digits");
    if (!low_only && k == 1 && v == 0xD && h >= 0xC)
      return bad(s, "lone low surrogate in a \\u escape");
    v = v << 4 | (unsigned)h;
    s->i++;
  }
  *out = v;
  return 0;
}

/* A \u escape, s->i just past the 'u'.  Surrogates must come in pairs;
 * U+0000 is refused at the escape's last digit. */
static int scan_u_escape(struct scan *s) {
  unsigned cp;
  int rc = read_hex4(s, 0, &cp);
  if (rc)
    return rc;
  if (cp == 0)
    return fail(s, APPMSG_E_HEADER_JSON, s->i - 1, "\\u0000 is not allowed in a string");
  if (cp < 0xD800 || cp > 0xDBFF)
    return 0;
  for (const char *want = "\\u"; *want; want++) {
    if (s->i >= s->n)
      return bad(s, "unexpected end after a high surrogate");
    if (s->p[s->i] != *want)
      return bad(s, "high surrogate not followed by a low surrogate");
    s->i++;
  }
  return read_hex4(s, 1, &cp);
}

/* A string, s->i at the opening quote; leaves s->i past the closing one. */
static int scan_string(struct scan *s, int *escaped) {
  s->i++;
  *escaped = 0;
  for (;;) {
    /* Fast path over plain bytes. */
    s->i += appmsg__json_plain_run((const unsigned char *)s->p + s->i, s->n - s->i);
    if (s->i >= s->n)
      return bad(s, "unexpected end inside a string");
    unsigned char c = (unsigned char)s->p[s->i];
    if (c == '"') {
      s->i++;
      return 0;
    }
    if (c < 0x20)
      return bad(s, "raw control character in a string");
    /* A backslash escape. */
    *escaped = 1;
    s->i++;
    if (s->i >= s->n)
      return bad(s, "unexpected end inside an escape");
    c = (unsigned char)s->p[s->i];
    if (c == 'u') {
      s->i++;
      int rc = scan_u_escape(s);
      if (rc)
        return rc;
      continue;
    }
    if (!strchr("\"\\/bfnrt", c) || c == 0)
      return bad(s, "invalid escape in a string");
    s->i++;
  }
}

static int is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

/* A number, s->i at '-' or a digit. */
static int scan_number(struct scan *s, int *plain_int) {
  *plain_int = 1;
  if (s->p[s->i] == '-') {
    *plain_int = 0;
    s->i++;
  }
  if (s->i >= s->n)
    return bad(s, "unexpected end inside a number");
  if (s->p[s->i] == '0') {
    s->i++; /* a following digit is refused by the caller: no leading zeros */
  } else if (is_digit((unsigned char)s->p[s->i])) {
    while (s->i < s->n && is_digit((unsigned char)s->p[s->i]))
      s->i++;
  } else {
    return bad(s, "a minus sign must be followed by a digit");
  }
  if (s->i < s->n && s->p[s->i] == '.') {
    *plain_int = 0;
    s->i++;
    if (s->i >= s->n)
      return bad(s, "unexpected end inside a number");
    if (!is_digit((unsigned char)s->p[s->i]))
      return bad(s, "a decimal point must be followed by a digit");
    while (s->i < s->n && is_digit((unsigned char)s->p[s->i]))
      s->i++;
  }
  if (s->i < s->n && (s->p[s->i] == 'e' || s->p[s->i] == 'E')) {
    *plain_int = 0;
    s->i++;
    if (s->i < s->n && (s->p[s->i] == '+' || s->p[s->i] == '-'))
      s->i++;
    if (s->i >= s->n)
      return bad(s, "unexpected end inside a number");
    if (!is_digit((unsigned char)s->p[s->i]))
      return bad(s, "an exponent needs digits");
    while (s->i < s->n && is_digit((unsigned char)s->p[s->i]))
      s->i++;
  }
  return 0;
}

static int scan_literal(struct scan *s, const char *word) {
  for (const char *w = word; *w; w++) {
    if (s->i >= s->n)
      return bad(s, "unexpected end inside a literal");
    if (s->p[s->i] != *w)
      return bad(s, "unexpected character");
    s->i++;
  }
  return 0;
}

static int scan_value(struct scan *s, struct valinfo *vi);

/* An object or array, s->i at its opening bracket. */
static int scan_container(struct scan *s, int is_object) {
  if (s->depth >= s->max_depth)
    return fail(s, APPMSG_E_HEADER_DEPTH, s->i, "nested too deeply");
  s->depth++;
  int top = s->depth == 1;
  char close = is_object ? '}' : ']';
  s->i++;
  skip_ws(s);
  if (s->i < s->n && s->p[s->i] == close) {
    s->i++;
    s->depth--;
    return 0;
  }
  for (;;) {
    struct appmsg_json_member m = {0};
    if (is_object) {
      if (s->i >= s->n)
        return bad(s, "unexpected end inside an object");
      if (s->p[s->i] != '"')
        return bad(s, "expected a string key");
      size_t k0 = s->i + 1;
      int rc = scan_string(s, &m.key_escaped);
      if (rc)
        return rc;
      m.key = s->p + k0;
      m.key_len = s->i - 1 - k0;
      skip_ws(s);
      if (s->i >= s->n)
        return bad(s, "unexpected end inside an object");
      if (s->p[s->i] != ':')
        return bad(s, "expected ':' after a key");
      s->i++;
      skip_ws(s);
    }
    size_t v0 = s->i;
    struct valinfo vi;
    int rc = scan_value(s, &vi);
    if (rc)
      return rc;
    if (top && is_object && s->cb) {
      m.type = vi.type;
      m.val_escaped = vi.escaped;
      m.val_plain_int = vi.plain_int;
      m.val = s->p + v0;
      m.val_len = s->i - v0;
      if (vi.type == APPMSG_JSON_STRING) {
        m.val++;
        m.val_len -= 2;
      }
      s->cb(s->ud, &m);
    }
    skip_ws(s);
    if (s->i >= s->n)
      return bad(s,
                 is_object ? "unexpected end inside an object" : "unexpected end inside an array");
    if (s->p[s->i] == ',') {
      s->i++;
      skip_ws(s);
      continue;
    }
    if (s->p[s->i] == close) {
      s->i++;
      s->depth--;
      return 0;
    }
    return bad(s, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static int scan_value(struct scan *s, struct valinfo *vi) {
  vi->escaped = 0;
  vi->plain_int = 0;
  if (s->i >= s->n)
    return bad(s, "unexpected end where a value was expected");
  switch (s->p[s->i]) {
  case '{':
    vi->type = APPMSG_JSON_OBJECT;
    return scan_container(s, 1);
  case '[':
    vi->type = APPMSG_JSON_ARRAY;
    return scan_container(s, 0);
  case '"':
    vi->type = APPMSG_JSON_STRING;
    return scan_string(s, &vi->escaped);
  case 't':
    vi->type = APPMSG_JSON_TRUE;
    return scan_literal(s, "true");
  case 'f':
    vi->type = APPMSG_JSON_FALSE;
    return scan_literal(s, "false");
  case 'n':
    vi->type = APPMSG_JSON_NULL;
    return scan_literal(s, "null");
  default:
    if (s->p[s->i] == '-' || is_digit((unsigned char)s->p[s->i])) {
      vi->type = APPMSG_JSON_NUMBER;
      return scan_number(s, &vi->plain_int);
    }
    return bad(s, "unexpected character where a value was expected");
  }
}

int appmsg__json_scan(const char *p, size_t n, int max_depth, int object_only,
                      enum appmsg_json_type *top, appmsg_json_member_cb cb, void *ud,
                      struct appmsg__json_error *err) {
  struct scan s = {p, n, 0, 0, max_depth, cb, ud, err};
  skip_ws(&s);
  if (s.i >= n)
    return fail(&s, APPMSG_E_HEADER_NOT_OBJECT, n, "empty: no JSON value");
  if (object_only && p[s.i] != '{')
    return fail(&s, APPMSG_E_HEADER_NOT_OBJECT, s.i, "must be a JSON object");
  struct valinfo vi;
  int rc = scan_value(&s, &vi);
  if (rc)
    return rc;
  if (top)
    *top = vi.type;
  skip_ws(&s);
  if (s.i < n)
    return fail(&s, APPMSG_E_HEADER_TRAILING, s.i, "bytes after the JSON value");
  return 0;
}

/* A string without escapes at p[i] (its opening quote): the index of its
 * closing quote, or 0 when it is not one. */
static size_t plain_string_at(const char *p, size_t n, size_t i) {
  if (i >= n || p[i] != '"')
    return 0;
  i++;
  i += appmsg__json_plain_run((const unsigned char *)p + i, n - i);
  return i < n && p[i] == '"' ? i : 0;
}

int appmsg__json_scan_flat(const char *p, size_t n, enum appmsg_json_type *top,
                           appmsg_json_member_cb cb, void *ud) {
  struct appmsg_json_member m[APPMSG__JSON_FLAT_MAX];
  size_t k = 0, i = skip_ws_at(p, n, 0);
  if (i >= n || p[i] != '{')
    return 0;
  i = skip_ws_at(p, n, i + 1);
  if (i < n && p[i] == '}') {
    i++;
  } else {
    for (;;) {
      size_t kq = plain_string_at(p, n, i); /* the key's closing quote */
      if (kq == 0 || k == APPMSG__JSON_FLAT_MAX)
        return 0;
      size_t c = skip_ws_at(p, n, kq + 1);
      if (c >= n || p[c] != ':')
        return 0;
      size_t v = skip_ws_at(p, n, c + 1);
      size_t vq = plain_string_at(p, n, v); /* the value's closing quote */
      if (vq == 0)
        return 0;
      m[k++] = (struct appmsg_json_member){p + i + 1,  kq - i - 1, 0, p + v + 1,
                                           vq - v - 1, 0,          0, APPMSG_JSON_STRING};
      i = skip_ws_at(p, n, vq + 1);
      if (i >= n)
        return 0;
      if (p[i] == '}') {
        i++;
        break;
      }
      if (p[i] != ',')
        return 0;
      i = skip_ws_at(p, n, i + 1);
    }
  }
  if (skip_ws_at(p, n, i) != n)
    return 0;
  if (top)
    *top = APPMSG_JSON_OBJECT;
  if (cb)
    for (size_t j = 0; j < k; j++)
      cb(ud, &m[j]);
  return 1;
}

size_t appmsg_utf8_check(const void *buf, size_t n) {
  const unsigned char *p = buf;
  size_t i = 0;
  while (i < n) {
    /* ASCII fast path, eight bytes at a time. */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL)
        break;
      i += 8;
    }
    if (i >= n)
      break;
#ifdef APPMSG__LITTLE_ENDIAN
    /* Fewer than eight bytes left: one more word says whether they are ASCII. */
    if (i + 8 > n && (appmsg__tail_word(p, i, n) & 0x8080808080808080ULL) == 0)
      break;
#endif
    unsigned char c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0)
        lo = 0xA0; /* no overlong forms */
      else if (c == 0xED)
        hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0)
        lo = 0x90;
      else if (c == 0xF4)
        hi = 0x8F; /* nothing above U+10FFFF */
    } else {
      return i; /* 80..C1, F5..FF never start a sequence */
    }
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi)
      return i;
    for (size_t k = 2; k < len; k++)
      if (i + k >= n || (p[i + k] & 0xC0) != 0x80)
        return i;
    i += len;
  }
  return n;
}

static size_t put_utf8(char *dst, unsigned cp) {
  unsigned char *d = (unsigned char *)dst;
  if (cp < 0x80) {
    d[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (unsigned char)(0xC0 | cp >> 6);
    d[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (unsigned char)(0xE0 | cp >> 12);
    d[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    d[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (unsigned char)(0xF0 | cp >> 18);
  d[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
  d[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
  d[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

static unsigned hex4(const char *p) {
  unsigned v = 0;
  for (int k = 0; k < 4; k++)
    v = v << 4 | (unsigned)hexval((unsigned char)p[k]);
  return v;
}

/* Decodes the escape at src[*i] (a backslash, accepted by the scanner)
 * into out (1 to 4 bytes); moves *i past it and returns the byte count. */
static size_t unescape_one(const char *src, size_t *i, char *out) {
  char c = src[*i + 1];
  *i += 2;
  switch (c) {
  case 'b':
    *out = '\b';
    return 1;
  case 'f':
    *out = '\f';
    return 1;
  case 'n':
    *out = '\n';
    return 1;
  case 'r':
    *out = '\r';
    return 1;
  case 't':
    *out = '\t';
    return 1;
  case 'u': {
    unsigned cp = hex4(src + *i);
    *i += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF) { /* the scanner saw the low half */
      unsigned lo = hex4(src + *i + 2);
      *i += 6;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return put_utf8(out, cp);
  }
  default: /* '"', '\\', '/' */
    *out = c;
    return 1;
  }
}

size_t appmsg_json_unescape(const char *src, size_t n, char *dst) {
  size_t i = 0, o = 0;
  while (i < n) {
    const char *bs = memchr(src + i, '\\', n - i);
    size_t run = bs ? (size_t)(bs - (src + i)) : n - i;
    memmove(dst + o, src + i, run); /* (dst may be src: unescaping never lengthens) */
    i += run;
    o += run;
    if (i < n) {
      char tmp[4]; /* (decoded aside: an escape may be shorter than its bytes, never longer) */
      size_t k = unescape_one(src, &i, tmp);
      memcpy(dst + o, tmp, k);
      o += k;
    }
  }
  return o;
}

int appmsg__json_key_is(const struct appmsg_json_member *m, const char *name, size_t n) {
  if (!m->key_escaped)
    return m->key_len == n && memcmp(m->key, name, n) == 0;
  /* Unescaped on the fly and compared as it goes: no buffer, so no length
   * limit, and a mismatch stops at once. */
  const char *k = m->key;
  size_t i = 0, o = 0;
  while (i < m->key_len) {
    if (k[i] != '\\') {
      if (o >= n || name[o] != k[i])
        return 0;
      i++;
      o++;
      continue;
    }
    char tmp[4];
    size_t len = unescape_one(k, &i, tmp);
    if (len > n - o || memcmp(name + o, tmp, len) != 0)
      return 0;
    o += len;
  }
  return o == n;
}

size_t appmsg_json_quote(const char *s, size_t n, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
#define PUT(ch)                                                                                    \
  do {                                                                                             \
    if (o < cap)                                                                                   \
      out[o] = (ch);                                                                               \
    o++;                                                                                           \
  } while (0)
  size_t run = appmsg__json_plain_run((const unsigned char *)s, n);
  if (run == n && n + 2 <= cap) { /* nothing to escape, room for all: the usual string */
    out[0] = '"';
    if (n)
      memcpy(out + 1, s, n);
    out[n + 1] = '"';
    return n + 2;
  }
  PUT('"');
  for (size_t i = 0; i < n;) {
    /* A run of bytes written as they are: copied at once. */
    size_t j = i ? i + appmsg__json_plain_run((const unsigned char *)s + i, n - i) : run;
    if (j > i) {
      if (o < cap)
        memcpy(out + o, s + i, j - i <= cap - o ? j - i : cap - o);
      o += j - i;
      i = j;
      continue;
    }
    unsigned char c = (unsigned char)s[i++];
    PUT('\\');
    switch (c) {
    case '"':
      PUT('"');
      break;
    case '\\':
      PUT('\\');
      break;
    case '\b':
      PUT('b');
      break;
    case '\f':
      PUT('f');
      break;
    case '\n':
      PUT('n');
      break;
    case '\r':
      PUT('r');
      break;
    case '\t':
      PUT('t');
      break;
    default:
      PUT('u');
      PUT('0');
      PUT('0');
      PUT(hex[c >> 4]);
      PUT(hex[c & 15]);
      break;
    }
  }
  PUT('"');
#undef PUT
  return o;
}

int appmsg_json_scan(const void *buf, size_t n, int max_depth, enum appmsg_json_type *top,
                     appmsg_json_member_cb cb, void *ud, size_t *err_offset, const char **reason) {
  const unsigned char *p = buf;
  size_t bad_utf8 = appmsg_utf8_check(p, n);
  struct appmsg__json_error e = {0, 0, NULL};
  int rc = 0;
  if (bad_utf8 < n) {
    rc = APPMSG_E_CONTENT_UTF8;
    e.offset = bad_utf8;
    e.reason = "not valid UTF-8";
  } else if (appmsg__json_scan_flat(buf, n, top, cb, ud)) {
    /* the usual request or reply: done */
  } else if (appmsg__json_scan(buf, n, max_depth > 0 ? max_depth : 1, 0, top, cb, ud, &e) != 0) {
    rc = APPMSG_E_CONTENT_JSON;
    if (e.code == APPMSG_E_HEADER_DEPTH)
      e.reason = "nested too deeply";
    else if (e.code == APPMSG_E_HEADER_TRAILING)
      e.reason = "bytes after the JSON value";
    else if (e.code == APPMSG_E_HEADER_NOT_OBJECT)
      e.reason = "empty";
  }
  if (rc) {
    if (err_offset)
      *err_offset = e.offset;
    if (reason)
      *reason = e.reason;
  }
  return rc;
}

int appmsg_json_check(const void *buf, size_t n, int max_depth, size_t *err_offset,
                      const char **reason) {
  return appmsg_json_scan(buf, n, max_depth, NULL, NULL, NULL, err_offset, reason);
}
