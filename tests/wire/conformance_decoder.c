/*
 * The decoder side of the conformance kit (proto/tools/conformance) for
 * appmsg's C decoder: reads the kit's commands on stdin and answers on
 * stdout, as proto/vectors/README.md describes:
 *
 *   stream C H D  ->  ready          a new stream, with these limits (or refused, out of range)
 *   feed HEX      ->  outcomes, fed  one appmsg_decoder_feed() chunk
 *   end           ->  outcomes, ended
 *
 * An outcome is "error NAME OFFSET" or one "message ..." line.  Only the
 * public API is used, as any application would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "appmsg/appmsg.h"

static void put_hex(const void *data, size_t n) {
  static const char digits[] = "0123456789abcdef";
  const unsigned char *p = data;
  if (n == 0) {
    putchar('-');
    return;
  }
  for (size_t i = 0; i < n; i++) {
    putchar(digits[p[i] >> 4]);
    putchar(digits[p[i] & 15]);
  }
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes hex text in place; returns the byte count or -1. */
static long unhex(char *text) {
  size_t n = strlen(text);
  if (n % 2)
    return -1;
  for (size_t i = 0; i < n; i += 2) {
    int a = hexval((unsigned char)text[i]), b = hexval((unsigned char)text[i + 1]);
    if (a < 0 || b < 0)
      return -1;
    text[i / 2] = (char)(a << 4 | b);
  }
  return (long)(n / 2);
}

/* The extra keys as one JSON object text, hex-encoded ("-" when none). */
static int put_extras(const struct appmsg_header *h) {
  size_t n = appmsg_header_extra_count(h);
  if (n == 0) {
    putchar('-');
    return 0;
  }
  put_hex("{", 1);
  for (size_t i = 0; i < n; i++) {
    const char *key = appmsg_header_extra_key(h, i);
    char *json = appmsg_header_extra_json(h, key);
    if (!json)
      return -1;
    size_t qlen = appmsg_json_quote(key, strlen(key), NULL, 0);
    char *quoted = malloc(qlen);
    if (!quoted) {
      free(json);
      return -1;
    }
    appmsg_json_quote(key, strlen(key), quoted, qlen);
    if (i > 0)
      put_hex(", ", 2);
    put_hex(quoted, qlen);
    put_hex(": ", 2);
    put_hex(json, strlen(json));
    free(quoted);
    free(json);
  }
  put_hex("}", 1);
  return 0;
}

/* PROTOCOL.md 3.2: text/json (exactly) in utf-8 or utf8 (any ASCII case). */
static int content_checked(const struct appmsg_header *h) {
  return strcmp(h->content_type, "text/json") == 0 &&
         (strcasecmp(h->content_encoding, "utf-8") == 0 ||
          strcasecmp(h->content_encoding, "utf8") == 0);
}

static int put_message(const struct appmsg_decoder *d, int depth) {
  const struct appmsg_header *h = appmsg_decoder_header(d);
  size_t len;
  const void *content = appmsg_decoder_content(d, &len);
  printf("message %s ", appmsg_byteorder_name(h->byteorder));
  put_hex(h->content_type, strlen(h->content_type));
  putchar(' ');
  put_hex(h->content_encoding, strlen(h->content_encoding));
  printf(" %llu ", (unsigned long long)h->content_length);
  put_hex(content, len);
  putchar(' ');
  if (put_extras(h) != 0)
    return -1;
  if (!content_checked(h)) {
    fputs(" -\n", stdout);
  } else {
    size_t off = 0;
    int rc = appmsg_json_check(content, len, depth, &off, NULL);
    if (rc == 0)
      fputs(" ok\n", stdout);
    else
      printf(" %s:%zu\n", appmsg_errname(rc), off);
  }
  return 0;
}

int main(void) {
  struct appmsg_decoder d;
  int have = 0, failed = 0, depth = 64;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    if (line[n - 1] == '\n')
      line[--n] = '\0';
    char *arg = strchr(line, ' ');
    if (arg)
      *arg++ = '\0';
    if (strcmp(line, "stream") == 0 && arg) {
      struct appmsg_limits lim;
      unsigned long long c, hl;
      appmsg_limits_default(&lim);
      if (sscanf(arg, "%llu %llu %d", &c, &hl, &depth) != 3)
        return 2;
      if (have)
        appmsg_decoder_cleanup(&d);
      have = 0;
      /* Out of PROTOCOL.md section 4's ranges: refused, and no stream until the next one. */
      lim.max_content_length = c;
      lim.max_header_length = hl > UINT32_MAX ? UINT32_MAX : (uint32_t)hl;
      if (depth < 1 || appmsg_decoder_init(&d, &lim) != 0) {
        puts("refused");
        fflush(stdout);
        continue;
      }
      have = 1;
      failed = 0;
      puts("ready");
    } else if (strcmp(line, "feed") == 0 && have) {
      long len = unhex(arg ? arg : (char *)"");
      if (len < 0)
        return 2;
      for (size_t off = 0; off < (size_t)len && !failed;) {
        size_t used = 0;
        enum appmsg_status st = appmsg_decoder_feed(&d, arg + off, (size_t)len - off, &used);
        off += used;
        if (st == APPMSG_MESSAGE) {
          if (put_message(&d, depth) != 0)
            return 2;
        } else if (st == APPMSG_ERROR) {
          printf("error %s %llu\n", appmsg_errname(appmsg_decoder_error(&d)),
                 (unsigned long long)appmsg_decoder_error_offset(&d));
          failed = 1;
        } else if (used == 0) {
          break;
        }
      }
      puts("fed");
    } else if (strcmp(line, "end") == 0 && have) {
      int rc = failed ? 0 : appmsg_decoder_finish(&d);
      if (rc != 0)
        printf("error %s %llu\n", appmsg_errname(rc),
               (unsigned long long)appmsg_decoder_error_offset(&d));
      puts("ended");
    } else if (strcmp(line, "quit") == 0) {
      break;
    } else {
      fprintf(stderr, "conformance_decoder: unknown command '%s'\n", line);
      return 2;
    }
    fflush(stdout);
  }
  if (have)
    appmsg_decoder_cleanup(&d);
  free(line);
  return 0;
}
