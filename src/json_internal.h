/* The JSON scanner's insides, shared by json.c, header.c and the modules
 * that read requests and replies.  Not installed. */
#ifndef APPMSG_JSON_INTERNAL_H
#define APPMSG_JSON_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "appmsg/json.h"

/* Where and why a scan failed. */
struct appmsg__json_error {
  int code;           /* APPMSG_E_HEADER_{JSON,DEPTH,TRAILING,NOT_OBJECT,UTF8} */
  size_t offset;      /* offending byte, relative to the scanned text */
  const char *reason; /* static text */
};

/*
 * Strictly validates p[0..n) (PROTOCOL.md 2.3) as one JSON value; with
 * object_only, the value must be an object.  Does not check UTF-8 (see
 * appmsg_utf8_check()) but rejects bytes >= 0x80 outside strings.
 * Reports top-level object members to cb when cb is not NULL.
 * Returns 0, or the error code with *err filled in.
 */
int appmsg__json_scan(const char *p, size_t n, int max_depth, int object_only,
                      enum appmsg_json_type *top, appmsg_json_member_cb cb, void *ud,
                      struct appmsg__json_error *err);

/*
 * The fast path of appmsg_json_scan() for the usual request and reply: a
 * flat object of at most APPMSG__JSON_FLAT_MAX members whose keys and
 * values are all strings without escapes, any JSON whitespace between the
 * tokens ({"action": "search", "value": "morpheus"}).  p[0..n) must be
 * valid UTF-8 already.  Returns 1 after reporting the members to cb (if
 * not NULL) and setting *top (if not NULL) exactly as appmsg__json_scan()
 * would; returns 0 for any other text, having reported nothing (the caller
 * takes the general path).
 */
#define APPMSG__JSON_FLAT_MAX 8
int appmsg__json_scan_flat(const char *p, size_t n, enum appmsg_json_type *top,
                           appmsg_json_member_cb cb, void *ud);

/*
 * Whether a member's key, as written (escaped or not: key_escaped), is
 * the plain name name[0..n) once unescaped.  Every comparison of a key
 * with a name goes through here, so "\u0072esult" is "result" everywhere.
 */
int appmsg__json_key_is(const struct appmsg_json_member *m, const char *name, size_t n);

/* Whether c is JSON whitespace (space, tab, newline, carriage return). */
static inline int appmsg__json_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define APPMSG__LITTLE_ENDIAN 1
/*
 * The last n - i bytes of p[0..n) (1 to 7 of them) as the low bytes of a
 * word, zero above.  Reads nothing outside p[0..n): the eight bytes that
 * end it when there are eight, else pieces of 4, 2 and 1.
 */
static inline uint64_t appmsg__tail_word(const unsigned char *p, size_t i, size_t n) {
  size_t rest = n - i;
  uint64_t v = 0;
  if (n >= 8) {
    memcpy(&v, p + n - 8, 8);
    return v >> (8 * (8 - rest));
  }
  size_t k = 0;
  if (rest & 4) {
    uint32_t x;
    memcpy(&x, p + i, 4);
    v = x;
    k = 4;
  }
  if (rest & 2) {
    uint16_t x;
    memcpy(&x, p + i + k, 2);
    v |= (uint64_t)x << (8 * k);
    k += 2;
  }
  if (rest & 1)
    v |= (uint64_t)p[i + k] << (8 * k);
  return v;
}
#endif

/* The bytes of v that a JSON string cannot hold as they are ('"', '\\',
 * below 0x20) with their high bit set.  A borrow can also mark a byte
 * above (after) the first such byte, never one below it. */
static inline uint64_t appmsg__json_special(uint64_t v) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
  return (((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
}

/*
 * The length of the run of bytes at p[0..n) that a JSON string holds as
 * they are: everything but '"', '\\' and the control characters below
 * 0x20.  Eight bytes at a time (keys, actions and answers are mostly such
 * bytes); on a little-endian machine the word that holds the end of the
 * run gives its position at once, and the last few bytes are one more
 * word; elsewhere those are looked at one by one.
 */
static inline size_t appmsg__json_plain_run(const unsigned char *p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    uint64_t hit = appmsg__json_special(v);
    if (hit) {
#ifdef APPMSG__LITTLE_ENDIAN
      return i + (size_t)(__builtin_ctzll(hit) >> 3);
#else
      break;
#endif
    }
  }
#ifdef APPMSG__LITTLE_ENDIAN
  if (i < n) {
    /* The zero bytes above the tail look special: only the tail counts. */
    uint64_t hit =
        appmsg__json_special(appmsg__tail_word(p, i, n)) & (((uint64_t)1 << (8 * (n - i))) - 1);
    return hit ? i + (size_t)(__builtin_ctzll(hit) >> 3) : n;
  }
#endif
  while (i < n && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\')
    i++;
  return i;
}

#endif
