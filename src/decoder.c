/*
 * The incremental frame decoder (see include/appmsg/decoder.h and
 * proto/PROTOCOL.md section 5 for the rules and error offsets).
 *
 * Three phases per frame - the 2-byte prefix, the header, the content -
 * each copying min(available, needed) bytes.  Limits are checked before
 * the buffer of a phase is allocated; the header's first non-blank byte
 * is checked as it arrives so that a peer speaking another protocol is
 * refused at once instead of after 18,245 bytes of "GET / HTTP/1.1...".
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "header_internal.h"
#include "util.h"

enum { ST_PREFIX, ST_HEADER, ST_CONTENT, ST_MESSAGE, ST_ERROR };

void appmsg_limits_default(struct appmsg_limits *lim) {
  lim->max_content_length = APPMSG_DEFAULT_MAX_CONTENT_LENGTH;
  lim->max_header_length = APPMSG_DEFAULT_MAX_HEADER_LENGTH;
}

int appmsg_decoder_init(struct appmsg_decoder *d, const struct appmsg_limits *lim) {
  memset(d, 0, sizeof *d);
  if (lim == NULL) {
    appmsg_limits_default(&d->limits);
  } else {
    if (lim->max_header_length == 0 || lim->max_header_length > APPMSG_HEADER_LENGTH_MAX ||
        lim->max_content_length > APPMSG_CONTENT_LENGTH_MAX ||
        lim->max_content_length > SIZE_MAX) /* (a 32-bit size_t cannot hold more) */
      return -EINVAL;
    d->limits = *lim;
  }
  return 0;
}

/* Buffers up to these sizes are kept from one frame to the next, so that
 * a stream of small frames costs no allocation per frame.  Under
 * AddressSanitizer none is kept: every frame gets buffers of its exact
 * size, so that a read past the end of a header or content is caught. */
#if defined(__SANITIZE_ADDRESS__)
#define KEEP_NOTHING 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEP_NOTHING 1
#endif
#endif
#ifdef KEEP_NOTHING
#define KEEP_HEADER 0u
#define KEEP_CONTENT 0u
#else
#define KEEP_HEADER 1024u
#define KEEP_CONTENT 4096u
#endif

/* Frees the buffers. */
static void drop_buffers(struct appmsg_decoder *d) {
  appmsg__free(d->_hbuf);
  appmsg__free(d->_content);
  d->_hbuf = NULL;
  d->_content = NULL;
  d->_hcap = d->_ccap = 0;
}

/* buf if its cap bytes hold n, else a new allocation of n bytes (buf is
 * freed); NULL when out of memory. */
static void *reuse(void *buf, uint32_t *cap, size_t n) {
  if (buf && *cap >= n)
    return buf;
  appmsg__free(buf);
  void *b = appmsg__malloc(n);
  *cap = b == NULL ? 0 : n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  return b;
}

/* Ends the frame in progress or the message just delivered; its buffers
 * stay for the next frame when they are small. */
static void release_frame(struct appmsg_decoder *d) {
  appmsg__header_release_borrowed(&d->_hdr);
  if (d->_hcap > KEEP_HEADER) {
    appmsg__free(d->_hbuf);
    d->_hbuf = NULL;
    d->_hcap = 0;
  }
  if (d->_ccap > KEEP_CONTENT) {
    appmsg__free(d->_content);
    d->_content = NULL;
    d->_ccap = 0;
  }
  d->_hlen = d->_hhave = 0;
  d->_chave = 0;
  d->_seen_open = 0;
  d->_content_taken = 0;
}

void appmsg_decoder_cleanup(struct appmsg_decoder *d) {
  release_frame(d);
  drop_buffers(d);
  appmsg__free(d->_reason_alloc);
  d->_reason_alloc = NULL;
  d->_reason = NULL;
}

void appmsg_decoder_reset(struct appmsg_decoder *d) {
  struct appmsg_limits lim = d->limits;
  unsigned char general_only = d->_general_only;
  appmsg_decoder_cleanup(d);
  memset(d, 0, sizeof *d);
  d->limits = lim;
  d->_general_only = general_only;
}

void appmsg__decoder_set_fast_path(struct appmsg_decoder *d, int on) {
  d->_general_only = on ? 0 : 1;
}

/* Sets the sticky error.  A reason formatted with arguments is allocated
 * (errors are rare); if that fails the static text of the code is used. */
static void set_error(struct appmsg_decoder *d, int code, uint64_t offset, const char *fmt, ...)
    APPMSG__PRINTF(4, 5);

static void set_error(struct appmsg_decoder *d, int code, uint64_t offset, const char *fmt, ...) {
  d->_state = ST_ERROR;
  d->_err = code;
  d->_err_offset = offset;
  d->_reason = appmsg_strerror(code);
  appmsg__free(d->_reason_alloc);
  d->_reason_alloc = NULL;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && (d->_reason_alloc = appmsg__malloc((size_t)n + 1)) != NULL) {
      va_start(ap, fmt);
      vsnprintf(d->_reason_alloc, (size_t)n + 1, fmt, ap);
      va_end(ap);
      d->_reason = d->_reason_alloc;
    }
  }
  release_frame(d);
}

static int starts_with(const unsigned char *s, size_t n, const char *lit) {
  size_t k = strlen(lit);
  return n >= k && memcmp(s, lit, k) == 0;
}

/* Names the likely mistake when a frame does not start like one: the
 * bytes are the prefix and the header bytes up to the offending one. */
static const char *sniff(const unsigned char *s, size_t n) {
  static const char *const http[] = {"GET", "POS", "PUT", "HEA", "DEL",
                                     "OPT", "PAT", "CON", "TRA", "PRI"};
  if (n >= 2 && s[0] == 0x16 && s[1] == 0x03)
    return "this looks like a TLS handshake; appmsg runs over plain TCP";
  if (n >= 1 && (s[0] == '{' || s[0] == '['))
    return "this looks like JSON sent without the 2-byte length prefix";
  for (size_t i = 0; i < sizeof http / sizeof *http; i++)
    if (starts_with(s, n, http[i]))
      return "this looks like an HTTP request; appmsg frames start with a 2-byte header length";
  if (starts_with(s, n, "SSH"))
    return "this looks like an SSH client";
  return NULL;
}

/* Rule 2: the first non-blank header byte must be '{'.  Checks the bytes
 * just copied to _hbuf[from.._hhave); returns 0 or sets the error. */
static int check_first_byte(struct appmsg_decoder *d, uint32_t from) {
  for (uint32_t i = from; i < d->_hhave; i++) {
    unsigned char c = (unsigned char)d->_hbuf[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
      continue;
    if (c == '{') {
      d->_seen_open = 1;
      return 0;
    }
    unsigned char sample[8];
    size_t k = 0;
    sample[k++] = d->_prefix[0];
    sample[k++] = d->_prefix[1];
    for (uint32_t j = 0; j <= i && k < sizeof sample; j++)
      sample[k++] = (unsigned char)d->_hbuf[j];
    const char *hint = sniff(sample, k);
    if (hint)
      set_error(d, APPMSG_E_HEADER_NOT_OBJECT, d->_frame_start + 2 + i,
                "header must be a JSON object starting with '{': %s", hint);
    else
      set_error(d, APPMSG_E_HEADER_NOT_OBJECT, d->_frame_start + 2 + i,
                "header must be a JSON object starting with '{', not byte 0x%02x", c);
    return -1;
  }
  return 0;
}

/* The prefix is complete: rule 1, then the header buffer. */
static int start_header(struct appmsg_decoder *d) {
  d->_hlen = (uint32_t)d->_prefix[0] << 8 | d->_prefix[1];
  if (d->_hlen == 0) {
    set_error(d, APPMSG_E_HEADER_EMPTY, d->_frame_start, "header length is 0");
    return -1;
  }
  if (d->_hlen > d->limits.max_header_length) {
    const char *hint = sniff(d->_prefix, 2);
    if (!hint && d->_prefix[0] >= 'A' && d->_prefix[0] <= 'Z' && d->_prefix[1] >= 'A' &&
        d->_prefix[1] <= 'Z')
      hint = "this looks like text; is the peer speaking another protocol?";
    set_error(d, APPMSG_E_HEADER_TOO_LARGE, d->_frame_start,
              "header length %u is above the limit %u%s%s", d->_hlen, d->limits.max_header_length,
              hint ? ": " : "", hint ? hint : "");
    return -1;
  }
  d->_hbuf = reuse(d->_hbuf, &d->_hcap, d->_hlen);
  if (d->_hbuf == NULL) {
    set_error(d, -ENOMEM, d->_frame_start, "out of memory for a %u-byte header", d->_hlen);
    return -1;
  }
  return 0;
}

/* The header is complete: rules 2-5, then the content buffer.  Returns
 * 1 when the message is complete (no content), 0 to go on, -1 on error. */
static int finish_header(struct appmsg_decoder *d) {
  uint64_t hstart = d->_frame_start + 2;
  if (!d->_seen_open) {
    set_error(d, APPMSG_E_HEADER_NOT_OBJECT, hstart + d->_hlen,
              "header holds only whitespace, not a JSON object");
    return -1;
  }
  struct appmsg__json_error e;
  char claimed[32] = "";
  int rc = appmsg__header_parse(d->_hbuf, d->_hlen, d->limits.max_content_length, !d->_general_only,
                                &d->_hdr, &e, claimed);
  if (rc == APPMSG_E_CONTENT_TOO_LARGE) {
    set_error(d, rc, hstart, "content-length %s is above the limit %llu", claimed,
              (unsigned long long)d->limits.max_content_length);
    return -1;
  }
  if (rc && e.offset == 0 && rc != APPMSG_E_HEADER_UTF8 && rc != APPMSG_E_HEADER_JSON) {
    set_error(d, rc, hstart, "%s", e.reason); /* a field error: about the header as a whole */
    return -1;
  }
  if (rc) {
    set_error(d, rc, hstart + e.offset, "%s (header byte %zu)", e.reason, e.offset);
    return -1;
  }
  if (d->_hdr.content_length == 0)
    return 1;
  d->_content = reuse(d->_content, &d->_ccap, (size_t)d->_hdr.content_length);
  if (d->_content == NULL) {
    set_error(d, -ENOMEM, hstart, "out of memory for %llu bytes of content",
              (unsigned long long)d->_hdr.content_length);
    return -1;
  }
  return 0;
}

enum appmsg_status appmsg_decoder_feed(struct appmsg_decoder *d, const void *data, size_t len,
                                       size_t *consumed) {
  const unsigned char *p = data;
  size_t i = 0;
  *consumed = 0;
  if (d->_state == ST_ERROR)
    return APPMSG_ERROR;
  if (d->_state == ST_MESSAGE) {
    release_frame(d);
    d->_state = ST_PREFIX;
  }
  enum appmsg_status st = APPMSG_NEED_MORE;
  while (i < len && st == APPMSG_NEED_MORE) {
    switch (d->_state) {
    case ST_PREFIX:
      if (d->_prefix_have == 0)
        d->_frame_start = d->offset + i;
      d->_prefix[d->_prefix_have++] = p[i++];
      if (d->_prefix_have == 2) {
        d->_prefix_have = 0;
        if (start_header(d) < 0)
          st = APPMSG_ERROR;
        else
          d->_state = ST_HEADER;
      }
      break;
    case ST_HEADER: {
      size_t take = d->_hlen - d->_hhave;
      if (take > len - i)
        take = len - i;
      uint32_t from = d->_hhave;
      memcpy(d->_hbuf + from, p + i, take);
      d->_hhave += (uint32_t)take;
      i += take;
      if (!d->_seen_open && check_first_byte(d, from) < 0) {
        /* Consumed through the offending byte only. */
        i = (size_t)(d->_err_offset - d->offset) + 1;
        st = APPMSG_ERROR;
        break;
      }
      if (d->_hhave < d->_hlen)
        break;
      int done = finish_header(d);
      if (done < 0)
        st = APPMSG_ERROR;
      else if (done > 0)
        st = APPMSG_MESSAGE;
      else
        d->_state = ST_CONTENT;
      break;
    }
    case ST_CONTENT: {
      uint64_t need = d->_hdr.content_length - d->_chave;
      size_t take = need < len - i ? (size_t)need : len - i;
      memcpy(d->_content + d->_chave, p + i, take);
      d->_chave += take;
      i += take;
      if (d->_chave == d->_hdr.content_length)
        st = APPMSG_MESSAGE;
      break;
    }
    default:
      break;
    }
  }
  if (st == APPMSG_MESSAGE)
    d->_state = ST_MESSAGE;
  *consumed = i;
  d->offset += i;
  return st;
}

int appmsg_decoder_finish(struct appmsg_decoder *d) {
  if (d->_state == ST_ERROR)
    return d->_err;
  if (appmsg_decoder_in_frame(d)) {
    set_error(d, APPMSG_E_TRUNCATED, d->offset,
              "stream ended inside a frame, %llu bytes after its start",
              (unsigned long long)(d->offset - d->_frame_start));
    return d->_err;
  }
  return 0;
}

int appmsg_decoder_in_frame(const struct appmsg_decoder *d) {
  switch (d->_state) {
  case ST_PREFIX:
    return d->_prefix_have > 0;
  case ST_HEADER:
  case ST_CONTENT:
    return 1;
  default:
    return 0;
  }
}

const struct appmsg_header *appmsg_decoder_header(const struct appmsg_decoder *d) {
  return d->_state == ST_MESSAGE ? &d->_hdr : NULL;
}

const void *appmsg_decoder_content(const struct appmsg_decoder *d, size_t *len) {
  if (d->_state != ST_MESSAGE || d->_content_taken) {
    if (len)
      *len = 0;
    return NULL;
  }
  if (len)
    *len = (size_t)d->_hdr.content_length;
  return d->_hdr.content_length ? (const void *)d->_content : (const void *)"";
}

void *appmsg_decoder_take_content(struct appmsg_decoder *d, size_t *len) {
  if (d->_state != ST_MESSAGE || d->_content_taken) {
    if (len)
      *len = 0;
    return NULL;
  }
  void *c = d->_hdr.content_length ? d->_content : appmsg__malloc(1);
  if (c == NULL)
    return NULL;
  if (c == d->_content) { /* it is the caller's now */
    d->_content = NULL;
    d->_ccap = 0;
  }
  d->_content_taken = 1;
  if (len)
    *len = (size_t)d->_hdr.content_length;
  return c;
}

int appmsg_decoder_error(const struct appmsg_decoder *d) {
  return d->_err;
}

const char *appmsg_decoder_reason(const struct appmsg_decoder *d) {
  return d->_err ? d->_reason : NULL;
}

uint64_t appmsg_decoder_error_offset(const struct appmsg_decoder *d) {
  return d->_err_offset;
}
