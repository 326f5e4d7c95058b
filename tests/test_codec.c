/*
 * Unit tests of the message module: decoder, encoder, header, JSON check
 * and the error table.  Byte-exact cases live in proto/vectors and are run
 * by test_vectors; these tests cover the API around them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "header_internal.h"
#include "json_internal.h"
#include "util.h"
#include "testutil.h"

/* Under AddressSanitizer, let an impossible malloc return NULL as the C
 * library does, so the ENOMEM path below is tested rather than aborted. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}

/* Builds one frame from header text and content. */
static size_t frame(unsigned char *out, const char *hdr, const void *content, size_t clen) {
  size_t h = strlen(hdr);
  out[0] = (unsigned char)(h >> 8);
  out[1] = (unsigned char)h;
  memcpy(out + 2, hdr, h);
  memcpy(out + 2 + h, content, clen);
  return 2 + h + clen;
}

static void make_header(struct appmsg_header *h, const char *type, const char *enc) {
  appmsg_header_init(h);
  ck_assert_int_eq(appmsg_header_set(h, type, enc), 0);
}

/* Drains an encoder into a string. */
static struct tu_str drain(struct appmsg_encoder *e, size_t step) {
  struct tu_str s = {0};
  while (appmsg_encoder_pending(e) > 0) {
    size_t n;
    const void *p = appmsg_encoder_peek(e, &n);
    ck_assert_uint_gt(n, 0);
    size_t k = n < step ? n : step;
    tu_str_add(&s, p, k);
    appmsg_encoder_advance(e, k);
  }
  return s;
}

/* --- decoder ----------------------------------------------------------- */

START_TEST(several_frames_in_one_buffer_come_out_one_per_call) {
  unsigned char buf[1024];
  const char *h1 = "{\"byteorder\": \"little\", \"content-type\": \"a\", "
                   "\"content-encoding\": \"b\", \"content-length\": 3}";
  const char *h2 = "{\"byteorder\": \"big\", \"content-type\": \"c\", "
                   "\"content-encoding\": \"d\", \"content-length\": 0}";
  size_t n1 = frame(buf, h1, "xyz", 3);
  size_t n2 = frame(buf + n1, h2, "", 0);
  size_t n3 = frame(buf + n1 + n2, h1, "123", 3);
  size_t total = n1 + n2 + n3;
  struct appmsg_decoder d;
  ck_assert_int_eq(appmsg_decoder_init(&d, NULL), 0);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, total, &used), APPMSG_MESSAGE);
  ck_assert_uint_eq(used, n1);
  size_t len;
  ck_assert_mem_eq(appmsg_decoder_content(&d, &len), "xyz", 3);
  ck_assert_str_eq(appmsg_decoder_header(&d)->content_type, "a");
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf + n1, total - n1, &used), APPMSG_MESSAGE);
  ck_assert_uint_eq(used, n2);
  ck_assert_int_eq(appmsg_decoder_header(&d)->byteorder, APPMSG_BYTEORDER_BIG);
  ck_assert_ptr_nonnull(appmsg_decoder_content(&d, &len));
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf + n1 + n2, n3, &used), APPMSG_MESSAGE);
  ck_assert_uint_eq(used, n3);
  ck_assert_mem_eq(appmsg_decoder_content(&d, &len), "123", 3);
  ck_assert_uint_eq(d.offset, total);
  /* An empty feed after a message releases it and asks for more. */
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, 0, &used), APPMSG_NEED_MORE);
  ck_assert_ptr_null(appmsg_decoder_header(&d));
  ck_assert_int_eq(appmsg_decoder_finish(&d), 0);
  appmsg_decoder_cleanup(&d);
}
END_TEST

START_TEST(errors_are_sticky_until_reset) {
  unsigned char bad[] = {0, 0, 0, 5};
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, bad, sizeof bad, &used), APPMSG_ERROR);
  ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_EMPTY);
  ck_assert_uint_eq(appmsg_decoder_error_offset(&d), 0);
  ck_assert_ptr_nonnull(appmsg_decoder_reason(&d));
  ck_assert_int_eq(appmsg_decoder_feed(&d, bad, sizeof bad, &used), APPMSG_ERROR);
  ck_assert_uint_eq(used, 0);
  ck_assert_int_eq(appmsg_decoder_finish(&d), APPMSG_E_HEADER_EMPTY);
  appmsg_decoder_reset(&d);
  ck_assert_int_eq(appmsg_decoder_error(&d), 0);
  ck_assert_ptr_null(appmsg_decoder_reason(&d));
  unsigned char buf[256];
  size_t n = frame(buf,
                   "{\"byteorder\": \"little\", \"content-type\": \"\", "
                   "\"content-encoding\": \"\", \"content-length\": 1}",
                   "!", 1);
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, n, &used), APPMSG_MESSAGE);
  appmsg_decoder_cleanup(&d);
}
END_TEST

START_TEST(limits_are_validated) {
  struct appmsg_decoder d;
  struct appmsg_limits lim;
  appmsg_limits_default(&lim);
  ck_assert_uint_eq(lim.max_content_length, 1048576);
  ck_assert_uint_eq(lim.max_header_length, 65535);
  lim.max_header_length = 0;
  ck_assert_int_eq(appmsg_decoder_init(&d, &lim), -EINVAL);
  lim.max_header_length = 65536;
  ck_assert_int_eq(appmsg_decoder_init(&d, &lim), -EINVAL);
  lim.max_header_length = 100;
  lim.max_content_length = APPMSG_CONTENT_LENGTH_MAX + 1;
  ck_assert_int_eq(appmsg_decoder_init(&d, &lim), -EINVAL);
  lim.max_content_length = APPMSG_CONTENT_LENGTH_MAX;
  ck_assert_int_eq(appmsg_decoder_init(&d, &lim), 0);
  appmsg_decoder_cleanup(&d);
}
END_TEST

/* The content-length limit is checked when the header's last byte arrives,
 * before the content: the decoder never waits for, or allocates, it. */
START_TEST(the_content_limit_is_checked_before_the_content) {
  unsigned char buf[256];
  size_t n = frame(buf,
                   "{\"byteorder\": \"little\", \"content-type\": \"t\", "
                   "\"content-encoding\": \"e\", \"content-length\": 1000000000000000}",
                   "", 0);
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, n - 1, &used), APPMSG_NEED_MORE);
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf + n - 1, 1, &used), APPMSG_ERROR);
  ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_CONTENT_TOO_LARGE);
  ck_assert_ptr_nonnull(strstr(appmsg_decoder_reason(&d), "1000000000000000"));
  ck_assert_ptr_nonnull(strstr(appmsg_decoder_reason(&d), "1048576"));
  appmsg_decoder_cleanup(&d);
}
END_TEST

/* With the limit at its maximum, a claim the machine cannot hold fails
 * with -ENOMEM instead of crashing.  2^53 - 1 bytes (8 PiB) is more than
 * any 64-bit process can map (x86-64 and arm64 give a process at most
 * 128 TiB unless it asks for more; a 32-bit size_t cannot even express
 * it), and the decoder allocates the content as soon as the header is in,
 * so the one correct outcome is the error, at the header's start. */
START_TEST(content_that_cannot_be_allocated_is_enomem) {
  unsigned char buf[256];
  size_t n = frame(buf,
                   "{\"byteorder\": \"little\", \"content-type\": \"t\", "
                   "\"content-encoding\": \"e\", \"content-length\": 9007199254740991}",
                   "", 0);
  struct appmsg_limits lim;
  appmsg_limits_default(&lim);
  lim.max_content_length = APPMSG_CONTENT_LENGTH_MAX;
  struct appmsg_decoder d;
  ck_assert_int_eq(appmsg_decoder_init(&d, &lim), 0);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, n, &used), APPMSG_ERROR);
  ck_assert_int_eq(appmsg_decoder_error(&d), -ENOMEM);
  ck_assert_uint_eq(appmsg_decoder_error_offset(&d), 2);
  ck_assert_ptr_nonnull(strstr(appmsg_decoder_reason(&d), "9007199254740991"));
  ck_assert_ptr_null(appmsg_decoder_header(&d));
  /* Sticky, like every error. */
  ck_assert_int_eq(appmsg_decoder_feed(&d, "x", 1, &used), APPMSG_ERROR);
  ck_assert_uint_eq(used, 0);
  ck_assert_int_eq(appmsg_decoder_finish(&d), -ENOMEM);
  appmsg_decoder_cleanup(&d);
}
END_TEST

START_TEST(header_lengths_1_and_65535_and_the_limit_are_exact) {
  /* 65535: the object padded with whitespace to the largest length. */
  const char *obj = "{\"byteorder\": \"little\", \"content-type\": \"t\", "
                    "\"content-encoding\": \"e\", \"content-length\": 2}";
  size_t total = 2 + 65535 + 2;
  unsigned char *buf = malloc(total);
  buf[0] = 0xFF;
  buf[1] = 0xFF;
  memset(buf + 2, ' ', 65535);
  memcpy(buf + 2, obj, strlen(obj));
  memcpy(buf + 2 + 65535, "ok", 2);
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, total, &used), APPMSG_MESSAGE);
  ck_assert_uint_eq(used, total);
  /* The same with a 65534 limit is refused on the prefix alone. */
  struct appmsg_limits lim = {1048576, 65534};
  appmsg_decoder_cleanup(&d);
  appmsg_decoder_init(&d, &lim);
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, total, &used), APPMSG_ERROR);
  ck_assert_uint_eq(used, 2);
  ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_TOO_LARGE);
  appmsg_decoder_cleanup(&d);
  /* Length 1: "{" alone ends inside the object. */
  unsigned char one[] = {0, 1, '{'};
  appmsg_decoder_init(&d, NULL);
  ck_assert_int_eq(appmsg_decoder_feed(&d, one, 3, &used), APPMSG_ERROR);
  ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_JSON);
  ck_assert_uint_eq(appmsg_decoder_error_offset(&d), 3);
  appmsg_decoder_cleanup(&d);
  free(buf);
}
END_TEST

START_TEST(content_up_to_the_limit_decodes_and_one_byte_more_is_refused) {
  struct appmsg_limits lim = {16, 65535};
  char hdr[256];
  unsigned char buf[512];
  for (unsigned len = 0; len <= 17; len++) {
    snprintf(hdr, sizeof hdr,
             "{\"byteorder\": \"little\", \"content-type\": \"t\", "
             "\"content-encoding\": \"e\", \"content-length\": %u}",
             len);
    size_t n = frame(buf, hdr, "0123456789abcdefg", len);
    struct appmsg_decoder d;
    appmsg_decoder_init(&d, &lim);
    size_t used;
    enum appmsg_status st = appmsg_decoder_feed(&d, buf, n, &used);
    if (len <= 16) {
      ck_assert_int_eq(st, APPMSG_MESSAGE);
      size_t clen;
      const void *c = appmsg_decoder_content(&d, &clen);
      ck_assert_uint_eq(clen, len);
      ck_assert_mem_eq(c, "0123456789abcdefg", len);
    } else {
      ck_assert_int_eq(st, APPMSG_ERROR);
      ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_CONTENT_TOO_LARGE);
    }
    appmsg_decoder_cleanup(&d);
  }
}
END_TEST

START_TEST(finish_reports_truncation_at_every_cut) {
  unsigned char buf[256];
  size_t n = frame(buf,
                   "{\"byteorder\": \"little\", \"content-type\": \"t\", "
                   "\"content-encoding\": \"e\", \"content-length\": 4}",
                   "abcd", 4);
  for (size_t cut = 0; cut <= n; cut++) {
    struct appmsg_decoder d;
    appmsg_decoder_init(&d, NULL);
    size_t used;
    ck_assert_int_eq(appmsg_decoder_in_frame(&d), 0);
    enum appmsg_status st = appmsg_decoder_feed(&d, buf, cut, &used);
    if (cut == 0 || cut == n) {
      ck_assert_int_eq(appmsg_decoder_in_frame(&d), 0);
      ck_assert_int_eq(appmsg_decoder_finish(&d), 0);
      ck_assert_int_eq(st, cut == n ? APPMSG_MESSAGE : APPMSG_NEED_MORE);
    } else {
      ck_assert_int_eq(st, APPMSG_NEED_MORE);
      ck_assert_int_eq(appmsg_decoder_in_frame(&d), 1);
      ck_assert_int_eq(appmsg_decoder_finish(&d), APPMSG_E_TRUNCATED);
      ck_assert_uint_eq(appmsg_decoder_error_offset(&d), cut);
    }
    appmsg_decoder_cleanup(&d);
  }
}
END_TEST

START_TEST(take_content_hands_the_content_over) {
  unsigned char buf[256];
  size_t n = frame(buf,
                   "{\"byteorder\": \"little\", \"content-type\": \"t\", "
                   "\"content-encoding\": \"e\", \"content-length\": 4}",
                   "abcd", 4);
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  size_t used, len;
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, n, &used), APPMSG_MESSAGE);
  char *c = appmsg_decoder_take_content(&d, &len);
  ck_assert_uint_eq(len, 4);
  ck_assert_mem_eq(c, "abcd", 4);
  ck_assert_ptr_null(appmsg_decoder_content(&d, &len));
  ck_assert_ptr_null(appmsg_decoder_take_content(&d, &len));
  ck_assert_ptr_nonnull(appmsg_decoder_header(&d));
  appmsg_decoder_cleanup(&d);
  free(c);
}
END_TEST

START_TEST(other_protocols_are_named_in_the_reason) {
  struct {
    const char *bytes;
    size_t len;
    const char *hint;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, "HTTP"},
      {"POST /x HTTP/1.1\r\n", 18, "HTTP"},
      {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11, "TLS"},
      {"{\"action\": \"search\", \"value\": \"x\"}", 34, "without the 2-byte length"},
      {"SSH-2.0-OpenSSH_9.2\r\n", 21, "SSH"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    struct appmsg_decoder d;
    appmsg_decoder_init(&d, NULL);
    size_t used;
    ck_assert_int_eq(appmsg_decoder_feed(&d, cases[k].bytes, cases[k].len, &used), APPMSG_ERROR);
    ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_NOT_OBJECT);
    ck_assert_msg(strstr(appmsg_decoder_reason(&d), cases[k].hint), "case %zu: %s", k,
                  appmsg_decoder_reason(&d));
    appmsg_decoder_cleanup(&d);
  }
  /* With a small header limit, the prefix alone already tells. */
  struct appmsg_limits lim = {1024, 4096};
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, &lim);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, "GET / HTTP/1.1\r\n", 16, &used), APPMSG_ERROR);
  ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_TOO_LARGE);
  ck_assert_ptr_nonnull(strstr(appmsg_decoder_reason(&d), "another protocol"));
  appmsg_decoder_cleanup(&d);
}
END_TEST

START_TEST(extra_header_keys_are_kept_in_order) {
  unsigned char buf[512];
  size_t n =
      frame(buf,
            "{\"byteorder\": \"little\", \"x-id\": 7, \"content-type\": \"t\", "
            "\"content-encoding\": \"e\", \"content-length\": 0, \"x-tag\": \"\\u00e9t\\u00e9\", "
            "\"\xf0\x9f\x90\xb6\": [true, null, {\"k\": -1.5e3}]}",
            "", 0);
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(&d, buf, n, &used), APPMSG_MESSAGE);
  const struct appmsg_header *h = appmsg_decoder_header(&d);
  ck_assert_uint_eq(appmsg_header_extra_count(h), 3);
  ck_assert_str_eq(appmsg_header_extra_key(h, 0), "x-id");
  ck_assert_str_eq(appmsg_header_extra_key(h, 1), "x-tag");
  ck_assert_str_eq(appmsg_header_extra_key(h, 2), "\xf0\x9f\x90\xb6");
  ck_assert_ptr_null(appmsg_header_extra_key(h, 3));
  ck_assert_str_eq(appmsg_header_extra_string(h, "x-tag"), "\xc3\xa9t\xc3\xa9");
  ck_assert_ptr_null(appmsg_header_extra_string(h, "x-id"));
  char *j = appmsg_header_extra_json(h, "x-id");
  ck_assert_str_eq(j, "7");
  free(j);
  j = appmsg_header_extra_json(h, "\xf0\x9f\x90\xb6");
  ck_assert_str_eq(j, "[true, null, {\"k\": -1.5e3}]"); /* as the sender wrote it */
  free(j);
  ck_assert_ptr_null(appmsg_header_extra_json(h, "nope"));
  /* A copy outlives the decoder's message. */
  struct appmsg_header copy;
  ck_assert_int_eq(appmsg_header_copy(&copy, h), 0);
  appmsg_decoder_cleanup(&d);
  ck_assert_str_eq(copy.content_type, "t");
  ck_assert_str_eq(appmsg_header_extra_string(&copy, "x-tag"), "\xc3\xa9t\xc3\xa9");
  appmsg_header_cleanup(&copy);
}
END_TEST

/* --- encoder ----------------------------------------------------------- */

/* Our encoder writes the guide's request byte for byte, given the byte
 * order of the machine the guide's frames were recorded on (little). */
START_TEST(the_encoder_writes_the_guides_request_byte_for_byte) {
  const char *hex =
      "00677b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a2022"
      "746578742f6a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c202263"
      "6f6e74656e742d6c656e677468223a2034317d7b22616374696f6e223a2022736561726368222c20227661"
      "6c7565223a20226d6f727068657573227d";
  unsigned char want[512];
  long wn = tu_unhex(hex, want, sizeof want);
  struct appmsg_header h;
  make_header(&h, "text/json", "utf-8");
  h.byteorder = APPMSG_BYTEORDER_LITTLE;
  const char *body = "{\"action\": \"search\", \"value\": \"morpheus\"}";
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, body, strlen(body)), 0);
  struct tu_str got = drain(&e, 1); /* advanced one byte at a time */
  ck_assert_uint_eq(got.len, (size_t)wn);
  ck_assert_mem_eq(got.p, want, (size_t)wn);
  tu_str_free(&got);
  appmsg_encoder_cleanup(&e);
  appmsg_header_cleanup(&h);
}
END_TEST

/* A prepared header writes the bytes a plain push writes, for any length,
 * with extra keys, and is a snapshot: changing the header afterwards
 * changes nothing it writes. */
START_TEST(prepared_header_writes_the_same_bytes_and_is_a_snapshot) {
  struct appmsg_header h;
  make_header(&h, "text/json", "utf-8");
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "x-trace", "[1, \"\u00e9\"]"), 0);
  struct appmsg_prepared *p;
  ck_assert_int_eq(appmsg_prepared_new(&p, &h), 0);
  static const size_t lens[] = {0, 1, 9, 10, 99, 100, 1000, 65536};
  char *content = calloc(1, 65536);
  for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    struct appmsg_encoder a, b;
    appmsg_encoder_init(&a);
    appmsg_encoder_init(&b);
    ck_assert_int_eq(appmsg_encoder_push(&a, &h, content, lens[k]), 0);
    ck_assert_int_eq(appmsg_encoder_push_prepared(&b, p, content, lens[k]), 0);
    size_t na, nb;
    const void *pa = appmsg_encoder_peek(&a, &na), *pb = appmsg_encoder_peek(&b, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_mem_eq(pa, pb, na);
    appmsg_encoder_cleanup(&a);
    appmsg_encoder_cleanup(&b);
  }
  /* Change the header in every way: the prepared bytes stay the old ones. */
  char before[512];
  long n = appmsg_header_write(&h, 5, before, sizeof before);
  ck_assert_int_gt(n, 0);
  ck_assert_int_eq(appmsg_header_set(&h, "binary/other", "binary"), 0);
  ck_assert_int_eq(appmsg_header_remove_extra(&h, "x-trace"), 0);
  h.byteorder =
      h.byteorder == APPMSG_BYTEORDER_BIG ? APPMSG_BYTEORDER_LITTLE : APPMSG_BYTEORDER_BIG;
  h.content_type[0] = 'X'; /* even in place */
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  ck_assert_int_eq(appmsg_encoder_push_prepared(&e, p, "hello", 5), 0);
  size_t ne;
  const unsigned char *pe = appmsg_encoder_peek(&e, &ne);
  ck_assert_uint_eq(ne, 2 + (size_t)n + 5);
  ck_assert_uint_eq(((size_t)pe[0] << 8) | pe[1], (size_t)n);
  ck_assert_mem_eq(pe + 2, before, (size_t)n);
  appmsg_encoder_cleanup(&e);
  appmsg_prepared_free(p);
  free(content);
  appmsg_header_cleanup(&h);
  /* A header that cannot be sent cannot be prepared. */
  appmsg_header_init(&h);
  ck_assert_int_eq(appmsg_prepared_new(&p, &h), APPMSG_E_FIELD_MISSING);
  appmsg_prepared_free(NULL);
}
END_TEST

START_TEST(the_encoder_queue_survives_partial_writes) {
  struct appmsg_header h;
  make_header(&h, "binary/custom-client-binary-type", "binary");
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  size_t n;
  ck_assert_ptr_nonnull(appmsg_encoder_peek(&e, &n));
  ck_assert_uint_eq(n, 0);
  unsigned char big[5000];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (unsigned char)(i * 7);
  struct tu_str want = {0};
  /* Interleave pushes with partial drains of odd sizes. */
  struct tu_str got = {0};
  for (int k = 0; k < 20; k++) {
    size_t len = (size_t)(k * 250);
    ck_assert_int_eq(appmsg_encoder_push(&e, &h, big, len), 0);
    unsigned char head[512];
    long hl = appmsg_frame_head(&h, len, head, sizeof head);
    ck_assert_int_gt(hl, 2);
    tu_str_add(&want, head, (size_t)hl);
    tu_str_add(&want, big, len);
    size_t step = (size_t)(k * 37 % 300 + 1);
    const void *p = appmsg_encoder_peek(&e, &n);
    size_t k2 = n < step ? n : step;
    tu_str_add(&got, p, k2);
    appmsg_encoder_advance(&e, k2);
  }
  struct tu_str rest = drain(&e, 333);
  tu_str_add(&got, rest.p, rest.len);
  ck_assert_uint_eq(got.len, want.len);
  ck_assert_mem_eq(got.p, want.p, want.len);
  /* Advancing past the end is capped; the empty queue holds no memory. */
  appmsg_encoder_advance(&e, 10);
  ck_assert_uint_eq(appmsg_encoder_pending(&e), 0);
  ck_assert_ptr_null(e._buf);
  tu_str_free(&got);
  tu_str_free(&want);
  tu_str_free(&rest);
  appmsg_encoder_cleanup(&e);
  appmsg_header_cleanup(&h);
}
END_TEST

START_TEST(an_emptied_encoder_starts_its_next_burst_at_the_last_size) {
  struct appmsg_header h;
  make_header(&h, "binary/custom-client-binary-type", "binary");
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  unsigned char big[3000] = {0};
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, big, sizeof big), 0);
  size_t grown = e._cap;
  ck_assert_uint_ge(grown, sizeof big);
  struct tu_str all = drain(&e, 1000);
  ck_assert_ptr_null(e._buf); /* an empty queue holds no memory... */
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, "x", 1), 0);
  ck_assert_uint_eq(e._cap, grown); /* ...and the next burst starts at the size the last reached */
  struct tu_str one = drain(&e, 1000);
  unsigned char head[512];
  long hl = appmsg_frame_head(&h, 1, head, sizeof head);
  ck_assert_uint_eq(one.len, (size_t)hl + 1);
  ck_assert_mem_eq(one.p, head, (size_t)hl);
  /* Never more than 64 KiB up front, however large the last burst was. */
  static unsigned char huge[200000];
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, huge, sizeof huge), 0);
  struct tu_str rest = drain(&e, 65536);
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, "x", 1), 0);
  ck_assert_uint_eq(e._cap, 64 * 1024);
  tu_str_free(&all);
  tu_str_free(&one);
  tu_str_free(&rest);
  appmsg_encoder_cleanup(&e);
  appmsg_header_cleanup(&h);
}
END_TEST

START_TEST(the_encoder_refuses_headers_it_cannot_frame) {
  struct appmsg_header h;
  appmsg_header_init(&h);
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, "x", 1), APPMSG_E_FIELD_MISSING);
  ck_assert_int_eq(appmsg_header_set(&h, "t", "e"), 0);
  h.byteorder = APPMSG_BYTEORDER_UNSET;
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, "x", 1), APPMSG_E_BYTEORDER);
  h.byteorder = APPMSG_BYTEORDER_BIG;
  ck_assert_int_eq(appmsg_header_set(&h, "\xff", NULL), -EINVAL);
  /* A header over 65535 bytes cannot be framed. */
  char *huge = malloc(70000);
  memset(huge, 'a', 69999);
  huge[69999] = '\0';
  ck_assert_int_eq(appmsg_header_set(&h, huge, NULL), 0);
  ck_assert_int_eq(appmsg_encoder_push(&e, &h, "x", 1), APPMSG_E_HEADER_TOO_LARGE);
  ck_assert_uint_eq(appmsg_encoder_pending(&e), 0);
  free(huge);
  appmsg_encoder_cleanup(&e);
  appmsg_header_cleanup(&h);
}
END_TEST

START_TEST(headers_are_written_escaped_like_pythons_json_dumps) {
  struct appmsg_header h;
  make_header(&h, "a\"b\\c\n\t\x01\x7f\xc3\xa9", "utf-8");
  h.byteorder = APPMSG_BYTEORDER_BIG;
  char out[256];
  long n = appmsg_header_write(&h, 12, out, sizeof out);
  ck_assert_int_gt(n, 0);
  out[n] = '\0';
  ck_assert_str_eq(out, "{\"byteorder\": \"big\", \"content-type\": "
                        "\"a\\\"b\\\\c\\n\\t\\u0001\x7f\xc3\xa9\", \"content-encoding\": "
                        "\"utf-8\", \"content-length\": 12}");
  /* Measuring with cap 0 gives the same length; a short cap is not overrun. */
  ck_assert_int_eq(appmsg_header_write(&h, 12, NULL, 0), n);
  char small[10];
  memset(small, 'Z', sizeof small);
  ck_assert_int_eq(appmsg_header_write(&h, 12, small, 5), n);
  ck_assert_int_eq(small[5], 'Z');
  appmsg_header_cleanup(&h);
}
END_TEST

/* Encode then decode, at many sizes, with non-ASCII everywhere. */
START_TEST(frames_round_trip_at_many_sizes_and_chunkings) {
  const char *types[] = {"text/json", "\xf0\x9f\x90\xb6/\xf0\x9f\x90\xbe", "", "x\ny\"z"};
  struct appmsg_encoder e;
  appmsg_encoder_init(&e);
  unsigned char *content = malloc(70000);
  for (size_t i = 0; i < 70000; i++)
    content[i] = (unsigned char)(i * 131 + 7);
  size_t sizes[] = {0, 1, 2, 255, 256, 4096, 65537, 70000};
  struct appmsg_header *hs = calloc(4 * 8, sizeof *hs);
  for (size_t t = 0; t < 4; t++)
    for (size_t s = 0; s < 8; s++) {
      struct appmsg_header *h = &hs[t * 8 + s];
      make_header(h, types[t], s % 2 ? "binary" : "utf-8");
      h->byteorder = s % 2 ? APPMSG_BYTEORDER_BIG : APPMSG_BYTEORDER_LITTLE;
      ck_assert_int_eq(
          appmsg_header_set_extra_string(h, "\xf0\x9f\x8e\x88 key", "v\xf0\x9f\x8f\x90"), 0);
      ck_assert_int_eq(appmsg_header_set_extra_json(h, "n", "[1, {\"a\": \"\\ud83d\\ude00\"}]"), 0);
      ck_assert_int_eq(appmsg_encoder_push(&e, h, content, sizes[s]), 0);
    }
  size_t n;
  const unsigned char *p = appmsg_encoder_peek(&e, &n);
  struct appmsg_decoder d;
  appmsg_decoder_init(&d, NULL);
  size_t k = 0;
  for (size_t off = 0, used; off < n; off += used) {
    size_t chunk = (off * 7 + 13) % 4000 + 1; /* irregular chunks */
    if (chunk > n - off)
      chunk = n - off;
    enum appmsg_status st = appmsg_decoder_feed(&d, p + off, chunk, &used);
    ck_assert_int_ne(st, APPMSG_ERROR);
    if (st != APPMSG_MESSAGE)
      continue;
    const struct appmsg_header *got = appmsg_decoder_header(&d);
    struct appmsg_header *want = &hs[k];
    ck_assert_int_eq(got->byteorder, want->byteorder);
    ck_assert_str_eq(got->content_type, want->content_type);
    ck_assert_str_eq(got->content_encoding, want->content_encoding);
    ck_assert_uint_eq(got->content_length, sizes[k % 8]);
    size_t clen;
    const void *c = appmsg_decoder_content(&d, &clen);
    ck_assert_uint_eq(clen, sizes[k % 8]);
    ck_assert_mem_eq(c, content, clen);
    ck_assert_str_eq(appmsg_header_extra_string(got, "\xf0\x9f\x8e\x88 key"), "v\xf0\x9f\x8f\x90");
    char *j = appmsg_header_extra_json(got, "n");
    ck_assert_str_eq(j, "[1, {\"a\": \"\\ud83d\\ude00\"}]"); /* as given */
    free(j);
    k++;
  }
  ck_assert_uint_eq(k, 32);
  ck_assert_int_eq(appmsg_decoder_finish(&d), 0);
  appmsg_decoder_cleanup(&d);
  for (size_t i = 0; i < 32; i++)
    appmsg_header_cleanup(&hs[i]);
  free(hs);
  free(content);
  appmsg_encoder_cleanup(&e);
}
END_TEST

/* --- header API ---------------------------------------------------------- */

START_TEST(extra_keys_can_be_set_replaced_and_removed) {
  struct appmsg_header h;
  make_header(&h, "t", "e");
  ck_assert_uint_eq(appmsg_header_extra_count(&h), 0);
  ck_assert_int_eq(appmsg_header_set_extra_string(&h, "content-length", "1"), -EINVAL);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "byteorder", "1"), -EINVAL);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "a", "{"), APPMSG_E_CONTENT_JSON);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "a", "NaN"), APPMSG_E_CONTENT_JSON);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "a", "\"\xc0\x80\""), APPMSG_E_CONTENT_UTF8);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "a", "1"), 0);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "a", "2"), 0); /* replaces */
  ck_assert_int_eq(appmsg_header_set_extra_string(&h, "b", "x"), 0);
  ck_assert_uint_eq(appmsg_header_extra_count(&h), 2);
  char out[256];
  long n = appmsg_header_write(&h, 0, out, sizeof out);
  out[n] = '\0';
  ck_assert_str_eq(out,
                   "{\"byteorder\": \"little\", \"content-type\": \"t\", \"content-encoding\": "
                   "\"e\", \"content-length\": 0, \"a\": 2, \"b\": \"x\"}");
  ck_assert_int_eq(appmsg_header_remove_extra(&h, "a"), 0);
  ck_assert_int_eq(appmsg_header_remove_extra(&h, "a"), -ENOENT);
  ck_assert_uint_eq(appmsg_header_extra_count(&h), 1);
  appmsg_header_cleanup(&h);
  appmsg_header_cleanup(&h); /* twice is safe */
  struct appmsg_header z;
  memset(&z, 0, sizeof z);
  appmsg_header_cleanup(&z); /* zeroed is safe */
}
END_TEST

/* --- extras kept as text ------------------------------------------------- */

/* The canonical start of a header written here (little endian, t, e, 0). */
#define CANON_START                                                                                \
  "{\"byteorder\": \"little\", \"content-type\": \"t\", \"content-encoding\": \"e\", "             \
  "\"content-length\": 0"

/* Feeds one frame of header text hdr (content-length 0) to a new decoder,
 * by the general path when fast is 0, and returns its header. */
static const struct appmsg_header *decode_header(struct appmsg_decoder *d, const char *hdr,
                                                 int fast) {
  static unsigned char buf[70000];
  size_t n = frame(buf, hdr, "", 0);
  ck_assert_int_eq(appmsg_decoder_init(d, NULL), 0);
  appmsg__decoder_set_fast_path(d, fast);
  size_t used;
  ck_assert_int_eq(appmsg_decoder_feed(d, buf, n, &used), APPMSG_MESSAGE);
  ck_assert_uint_eq(used, n);
  return appmsg_decoder_header(d);
}

/* Writes h (content-length 0) into a new string: free() it. */
static char *written(const struct appmsg_header *h) {
  long n = appmsg_header_write(h, 0, NULL, 0);
  ck_assert_int_gt(n, 0);
  char *s = malloc((size_t)n + 1);
  ck_assert_int_eq(appmsg_header_write(h, 0, s, (size_t)n), n);
  s[n] = '\0';
  return s;
}

/* The value text of key, through extra_raw (and its measure) and extra_json,
 * which must agree; NULL when the key is absent. */
static char *raw_of(const struct appmsg_header *h, const char *key) {
  long n = appmsg_header_extra_raw(h, key, NULL, 0);
  char *j = appmsg_header_extra_json(h, key);
  if (n < 0) {
    ck_assert_int_eq(n, -ENOENT);
    ck_assert_ptr_null(j);
    return NULL;
  }
  char *r = malloc((size_t)n + 1);
  ck_assert_int_eq(appmsg_header_extra_raw(h, key, r, (size_t)n), n);
  r[n] = '\0';
  ck_assert_ptr_nonnull(j);
  ck_assert_str_eq(j, r);
  free(j);
  return r;
}

static void assert_raw(const struct appmsg_header *h, const char *key, const char *want) {
  char *r = raw_of(h, key);
  ck_assert_msg(r != NULL, "extra \"%s\" is missing", key);
  ck_assert_str_eq(r, want);
  free(r);
}

/* Values no double holds, values a JSON library re-prints differently,
 * nesting with odd spacing, and escaped keys. */
static const struct {
  const char *key;    /* the key as written in the header */
  const char *name;   /* the key as a plain name */
  const char *value;  /* the value as written */
  const char *string; /* extra_string()'s answer, or NULL */
} odd_extras[] = {
    {"n", "n", "12345678901234567", NULL},
    {"big", "big", "1e400", NULL},
    {"z", "z", "-0", NULL},
    {"f", "f", "1.0", NULL},
    {"small", "small", "-1.5E-400", NULL},
    {"s", "s", "\"\\u0041\"", "A"},
    {"e", "e", "\"\\ud83d\\ude00 \\/ \\\"q\\\" \\n\"", "\xf0\x9f\x98\x80 / \"q\" \n"},
    {"o", "o", "{\"a\" :[1 ,2,{ }] ,\"b\":{\"c\":null,\"c\":true}}", NULL},
    {"a", "a", "[ ]", NULL},
    {"\\u0072equest-id", "request-id", "\"r-\\u00e9\"", "r-\xc3\xa9"},
    {"x\\\"y", "x\"y", "false", NULL},
    {"\\u00e9t\\u00e9", "\xc3\xa9t\xc3\xa9", "null", NULL},
    {"\\ud83d\\ude00", "\xf0\x9f\x98\x80", "\"\"", ""},
};
#define N_ODD (sizeof odd_extras / sizeof odd_extras[0])

/* The header text: the first extras before the required fields, with
 * blanks around every token; and the text a write of it gives. */
static void odd_header(struct tu_str *in, struct tu_str *out) {
  tu_str_addf(in, " {\n\"%s\"\t:\r%s ,", odd_extras[0].key, odd_extras[0].value);
  tu_str_addf(in, "\"%s\": %s, ", odd_extras[1].key, odd_extras[1].value);
  tu_str_addf(in, "\"byteorder\":\"little\",\"content-type\" : \"t\", \"content-encoding\": "
                  "\"e\",  \"content-length\":0");
  tu_str_addf(out, "%s", CANON_START);
  for (size_t i = 0; i < N_ODD; i++) {
    if (i >= 2)
      tu_str_addf(in, " , \"%s\" :  %s", odd_extras[i].key, odd_extras[i].value);
    tu_str_addf(out, ", \"%s\": %s", odd_extras[i].key, odd_extras[i].value);
  }
  tu_str_add(in, " }\n", 3);
  tu_str_add(out, "}", 1);
}

/* Every odd extra reads back as written, by its plain name, through every
 * function; the header writes out as want. */
static void assert_odd_extras(const struct appmsg_header *h, const char *want) {
  ck_assert_uint_eq(appmsg_header_extra_count(h), N_ODD);
  for (size_t i = 0; i < N_ODD; i++) {
    assert_raw(h, odd_extras[i].name, odd_extras[i].value);
    ck_assert_str_eq(appmsg_header_extra_key(h, i), odd_extras[i].name);
    const char *s = appmsg_header_extra_string(h, odd_extras[i].name);
    if (odd_extras[i].string) {
      ck_assert_ptr_nonnull(s);
      ck_assert_str_eq(s, odd_extras[i].string);
    } else {
      ck_assert_ptr_null(s);
    }
  }
  ck_assert_ptr_null(appmsg_header_extra_key(h, N_ODD));
  /* Keys as written are not names: the comparison is after unescaping. */
  ck_assert_int_eq(appmsg_header_extra_raw(h, "\\u0072equest-id", NULL, 0), -ENOENT);
  ck_assert_int_eq(appmsg_header_extra_raw(h, "request-i", NULL, 0), -ENOENT);
  ck_assert_int_eq(appmsg_header_extra_raw(h, "request-idx", NULL, 0), -ENOENT);
  ck_assert_int_eq(appmsg_header_extra_raw(h, "content-type", NULL, 0), -ENOENT);
  ck_assert_ptr_null(appmsg_header_extra_string(h, "nope"));
  char *w = written(h);
  ck_assert_str_eq(w, want);
  free(w);
  /* The encoder's paths write the same bytes. */
  struct appmsg_prepared *p;
  ck_assert_int_eq(appmsg_prepared_new(&p, h), 0);
  struct appmsg_encoder a, b;
  appmsg_encoder_init(&a);
  appmsg_encoder_init(&b);
  ck_assert_int_eq(appmsg_encoder_push(&a, h, "", 0), 0);
  ck_assert_int_eq(appmsg_encoder_push_prepared(&b, p, "", 0), 0);
  size_t na, nb, nw = strlen(want);
  const unsigned char *pa = appmsg_encoder_peek(&a, &na), *pb = appmsg_encoder_peek(&b, &nb);
  ck_assert_uint_eq(na, 2 + nw);
  ck_assert_uint_eq(nb, 2 + nw);
  ck_assert_mem_eq(pa + 2, want, nw);
  ck_assert_mem_eq(pb + 2, want, nw);
  appmsg_encoder_cleanup(&a);
  appmsg_encoder_cleanup(&b);
  appmsg_prepared_free(p);
}

/* A received header, a copy of it, a copy of the copy: every extra stays
 * the text received, byte for byte, and so does each key as written. */
START_TEST(copies_keep_received_extras_byte_for_byte) {
  struct tu_str in = {0}, want = {0};
  odd_header(&in, &want);
  for (int fast = 0; fast <= 1; fast++) {
    struct appmsg_decoder d;
    const struct appmsg_header *h = decode_header(&d, in.p, fast);
    assert_odd_extras(h, want.p);
    struct appmsg_header c1, c2;
    ck_assert_int_eq(appmsg_header_copy(&c1, h), 0);
    appmsg_decoder_cleanup(&d); /* the copy outlives the message */
    ck_assert_int_eq(c1.byteorder, APPMSG_BYTEORDER_LITTLE);
    ck_assert_str_eq(c1.content_type, "t");
    ck_assert_str_eq(c1.content_encoding, "e");
    assert_odd_extras(&c1, want.p);
    ck_assert_int_eq(appmsg_header_copy(&c2, &c1), 0);
    appmsg_header_cleanup(&c1);
    assert_odd_extras(&c2, want.p);
    /* What a copy writes decodes to the same extras again. */
    struct appmsg_decoder d2;
    assert_odd_extras(decode_header(&d2, want.p, fast), want.p);
    appmsg_decoder_cleanup(&d2);
    appmsg_header_cleanup(&c2);
  }
  tu_str_free(&in);
  tu_str_free(&want);
}
END_TEST

/* A received header cannot change; a copy can, in place. */
START_TEST(a_copy_can_change_and_a_received_header_cannot) {
  struct appmsg_decoder d;
  const struct appmsg_header *h =
      decode_header(&d, CANON_START ", \"\\u0072equest-id\": 7, \"b\": \"x\", \"c\": 1.0}", 1);
  struct appmsg_header *rh = (struct appmsg_header *)h;
  ck_assert_int_eq(appmsg_header_set_extra_json(rh, "d", "1"), -EINVAL);
  ck_assert_int_eq(appmsg_header_set_extra_string(rh, "b", "y"), -EINVAL);
  ck_assert_int_eq(appmsg_header_remove_extra(rh, "b"), -EINVAL);
  ck_assert_int_eq(appmsg_header_set(rh, "u", NULL), -EINVAL);
  struct appmsg_header c;
  ck_assert_int_eq(appmsg_header_copy(&c, h), 0);
  appmsg_decoder_cleanup(&d);
  /* Replacing keeps the place; the key is then written as given. */
  ck_assert_int_eq(appmsg_header_set_extra_string(&c, "request-id", "n\xc3\xa9w\n"), 0);
  ck_assert_int_eq(appmsg_header_set_extra_json(&c, "c", "2.50"), 0);
  ck_assert_int_eq(appmsg_header_set(&c, "type two", NULL), 0);
  char *w = written(&c);
  ck_assert_str_eq(w, "{\"byteorder\": \"little\", \"content-type\": \"type two\", "
                      "\"content-encoding\": \"e\", \"content-length\": 0, "
                      "\"request-id\": \"n\xc3\xa9w\\n\", \"b\": \"x\", \"c\": 2.50}");
  free(w);
  ck_assert_str_eq(appmsg_header_extra_string(&c, "request-id"), "n\xc3\xa9w\n");
  ck_assert_str_eq(appmsg_header_extra_key(&c, 0), "request-id");
  /* Adding many: the copy's extras move out of its block. */
  for (int i = 0; i < 20; i++) {
    char key[16], val[16];
    snprintf(key, sizeof key, "k%d", i);
    snprintf(val, sizeof val, "%d", i * 10);
    ck_assert_int_eq(appmsg_header_set_extra_json(&c, key, val), 0);
  }
  ck_assert_uint_eq(appmsg_header_extra_count(&c), 23);
  ck_assert_str_eq(appmsg_header_extra_key(&c, 1), "b");
  ck_assert_str_eq(appmsg_header_extra_key(&c, 22), "k19");
  assert_raw(&c, "k7", "70");
  assert_raw(&c, "b", "\"x\"");
  ck_assert_int_eq(appmsg_header_remove_extra(&c, "request-id"), 0);
  ck_assert_int_eq(appmsg_header_remove_extra(&c, "request-id"), -ENOENT);
  ck_assert_int_eq(appmsg_header_remove_extra(&c, "k19"), 0);
  ck_assert_uint_eq(appmsg_header_extra_count(&c), 21);
  ck_assert_str_eq(appmsg_header_extra_key(&c, 0), "b");
  ck_assert_str_eq(appmsg_header_extra_key(&c, 1), "c");
  ck_assert_str_eq(appmsg_header_extra_key(&c, 20), "k18");
  appmsg_header_cleanup(&c);
}
END_TEST

/* A value given to set_extra_json is the value sent, byte for byte. */
START_TEST(set_extra_json_keeps_the_value_as_given) {
  struct appmsg_header h;
  make_header(&h, "t", "e");
  h.byteorder = APPMSG_BYTEORDER_LITTLE;
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "n", "12345678901234567"), 0);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "big", " \t1e400\r\n "), 0); /* trimmed */
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "z", "-0"), 0);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "f", "1.0"), 0);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "s", "\"\\u0041\""), 0);
  ck_assert_int_eq(appmsg_header_set_extra_json(&h, "o", "{\"a\" :[1 ,2] ,\"a\":{ }}"), 0);
  ck_assert_int_eq(appmsg_header_set_extra_string(&h, "q\"k\x01", "v\"\\\x1f\xc3\xa9"), 0);
  const char *want =
      CANON_START ", \"n\": 12345678901234567, \"big\": 1e400, \"z\": -0, "
                  "\"f\": 1.0, \"s\": \"\\u0041\", \"o\": {\"a\" :[1 ,2] ,\"a\":{ }}, "
                  "\"q\\\"k\\u0001\": \"v\\\"\\\\\\u001f\xc3\xa9\"}";
  char *w = written(&h);
  ck_assert_str_eq(w, want);
  free(w);
  assert_raw(&h, "big", "1e400");
  assert_raw(&h, "s", "\"\\u0041\"");
  ck_assert_str_eq(appmsg_header_extra_string(&h, "s"), "A");
  ck_assert_str_eq(appmsg_header_extra_string(&h, "q\"k\x01"), "v\"\\\x1f\xc3\xa9");
  ck_assert_ptr_null(appmsg_header_extra_string(&h, "n"));
  ck_assert_str_eq(appmsg_header_extra_key(&h, 6), "q\"k\x01");
  /* Through a frame and back: the same text. */
  struct appmsg_decoder d;
  const struct appmsg_header *g = decode_header(&d, want, 1);
  assert_raw(g, "n", "12345678901234567");
  assert_raw(g, "big", "1e400");
  assert_raw(g, "o", "{\"a\" :[1 ,2] ,\"a\":{ }}");
  ck_assert_str_eq(appmsg_header_extra_key(g, 6), "q\"k\x01");
  ck_assert_str_eq(appmsg_header_extra_string(g, "q\"k\x01"), "v\"\\\x1f\xc3\xa9");
  appmsg_decoder_cleanup(&d);
  /* A copy of a built header keeps it too. */
  struct appmsg_header c;
  ck_assert_int_eq(appmsg_header_copy(&c, &h), 0);
  appmsg_header_cleanup(&h);
  w = written(&c);
  ck_assert_str_eq(w, want);
  free(w);
  ck_assert_str_eq(appmsg_header_extra_key(&c, 6), "q\"k\x01");
  appmsg_header_cleanup(&c);
}
END_TEST

/* Keys are looked up, recognized as required and checked for duplicates
 * after unescaping, however long. */
START_TEST(escaped_keys_are_compared_unescaped) {
  struct appmsg_decoder d;
  /* An escaped required key is the required field, not an extra. */
  const struct appmsg_header *h =
      decode_header(&d,
                    "{\"\\u0062yteorder\": \"\\u006cittle\", \"content-\\u0074ype\": \"t\", "
                    "\"content-encoding\": \"e\", \"content-length\": 0, \"x\": 1}",
                    1);
  ck_assert_int_eq(h->byteorder, APPMSG_BYTEORDER_LITTLE);
  ck_assert_str_eq(h->content_type, "t");
  ck_assert_uint_eq(appmsg_header_extra_count(h), 1);
  appmsg_decoder_cleanup(&d);
  /* A key of 300 characters, all escaped (1,800 bytes as written). */
  struct tu_str in = {0}, name = {0};
  tu_str_addf(&in, "%s, \"", CANON_START);
  for (int i = 0; i < 300; i++) {
    tu_str_add(&in, "\\u0061", 6);
    tu_str_add(&name, "a", 1);
  }
  tu_str_add(&in, "\": 5, \"b\": 6}", 13);
  h = decode_header(&d, in.p, 1);
  assert_raw(h, name.p, "5");
  ck_assert_str_eq(appmsg_header_extra_key(h, 0), name.p);
  name.p[299] = '\0'; /* one shorter */
  ck_assert_int_eq(appmsg_header_extra_raw(h, name.p, NULL, 0), -ENOENT);
  struct appmsg_header c;
  ck_assert_int_eq(appmsg_header_copy(&c, h), 0);
  appmsg_decoder_cleanup(&d);
  char *w = written(&c);
  ck_assert_str_eq(w, in.p);
  free(w);
  name.p[299] = 'a';
  ck_assert_int_eq(appmsg_header_set_extra_json(&c, name.p, "[5]"), 0); /* replaces */
  ck_assert_uint_eq(appmsg_header_extra_count(&c), 2);
  assert_raw(&c, name.p, "[5]");
  appmsg_header_cleanup(&c);
  tu_str_free(&in);
  tu_str_free(&name);
}
END_TEST

/* Two extras with the same key once unescaped are a duplicate, however
 * many extras there are; keys that only share a prefix are not. */
START_TEST(duplicate_extras_are_found_after_unescaping) {
  static const char *const dup[] = {
      CANON_START ", \"request-id\": 1, \"\\u0072equest-id\": 2}",
      CANON_START ", \"\\u0072equest-id\": 1, \"request-i\\u0064\": 2}",
      CANON_START ", \"a\": 1, \"b\": 2, \"a\": 3}",
      CANON_START ", \"\\u00e9\": 1, \"\xc3\xa9\": 2}",
      CANON_START ", \"\\ud83d\\ude00\": 1, \"\\uD83D\\uDE00\": 2}",
  };
  static const char *const fine[] = {
      CANON_START ", \"a\": 1, \"ab\": 2, \"\\u0061bc\": 3, \"\": 4}",
      CANON_START ", \"\\u00e9\": 1, \"\\u00e8\": 2, \"\xc3\xa9x\": 3}",
  };
  for (size_t i = 0; i < sizeof dup / sizeof dup[0]; i++) {
    unsigned char buf[512];
    size_t n = frame(buf, dup[i], "", 0);
    struct appmsg_decoder d;
    appmsg_decoder_init(&d, NULL);
    size_t used;
    ck_assert_int_eq(appmsg_decoder_feed(&d, buf, n, &used), APPMSG_ERROR);
    ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_DUPLICATE);
    appmsg_decoder_cleanup(&d);
  }
  for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
    struct appmsg_decoder d;
    const struct appmsg_header *h = decode_header(&d, fine[i], 1);
    ck_assert_uint_ge(appmsg_header_extra_count(h), 3);
    appmsg_decoder_cleanup(&d);
  }
  /* Many extras (the sorted check), with and without a duplicate at the end. */
  for (int with_dup = 0; with_dup <= 1; with_dup++) {
    struct tu_str in = {0};
    tu_str_addf(&in, "%s", CANON_START);
    for (int i = 0; i < 40; i++)
      tu_str_addf(&in, i % 3 ? ", \"k%d\": %d" : ", \"\\u006b%d\": %d", i, i);
    tu_str_addf(&in, "%s", with_dup ? ", \"\\u006b17\": 0}" : ", \"k40\": 0}");
    unsigned char *buf = malloc(in.len + 2);
    size_t n = frame(buf, in.p, "", 0);
    struct appmsg_decoder d;
    appmsg_decoder_init(&d, NULL);
    size_t used;
    enum appmsg_status st = appmsg_decoder_feed(&d, buf, n, &used);
    if (with_dup) {
      ck_assert_int_eq(st, APPMSG_ERROR);
      ck_assert_int_eq(appmsg_decoder_error(&d), APPMSG_E_HEADER_DUPLICATE);
    } else {
      ck_assert_int_eq(st, APPMSG_MESSAGE);
      const struct appmsg_header *h = appmsg_decoder_header(&d);
      ck_assert_uint_eq(appmsg_header_extra_count(h), 41);
      assert_raw(h, "k0", "0");
      assert_raw(h, "k39", "39");
      ck_assert_str_eq(appmsg_header_extra_key(h, 39), "k39");
      char *w = written(h);
      ck_assert_str_eq(w, in.p);
      free(w);
    }
    appmsg_decoder_cleanup(&d);
    free(buf);
    tu_str_free(&in);
  }
}
END_TEST

/* A member whose key is k[0..strlen), escaped if it holds a backslash. */
static struct appmsg_json_member key_member(const char *k) {
  struct appmsg_json_member m;
  memset(&m, 0, sizeof m);
  m.key = k;
  m.key_len = strlen(k);
  m.key_escaped = strchr(k, '\\') != NULL;
  return m;
}

static int key_is(const char *written_key, const char *name) {
  struct appmsg_json_member m = key_member(written_key);
  return appmsg__json_key_is(&m, name, strlen(name));
}

START_TEST(the_key_comparator_unescapes_as_it_compares) {
  /* Plain keys. */
  ck_assert(key_is("abc", "abc"));
  ck_assert(key_is("", ""));
  ck_assert(!key_is("abc", "ab"));
  ck_assert(!key_is("abc", "abcd"));
  ck_assert(!key_is("abc", "abd"));
  ck_assert(!key_is("", "a"));
  ck_assert(key_is("\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9"));
  /* Short escapes. */
  ck_assert(key_is("a\\\"b", "a\"b"));
  ck_assert(key_is("\\\\\\/\\b\\f\\n\\r\\t", "\\/\b\f\n\r\t"));
  ck_assert(!key_is("a\\\"b", "a\\\"b")); /* the name is not unescaped */
  /* \u escapes: 1, 2 and 3 bytes of UTF-8, a surrogate pair (4 bytes). */
  ck_assert(key_is("\\u0041", "A"));
  ck_assert(key_is("\\u0072equest-id", "request-id"));
  ck_assert(key_is("\\u00e9", "\xc3\xa9"));
  ck_assert(key_is("\\u00E9t\\u00e9", "\xc3\xa9t\xc3\xa9"));
  ck_assert(key_is("\\u20ac", "\xe2\x82\xac"));
  ck_assert(key_is("\\ud83d\\ude00", "\xf0\x9f\x98\x80"));
  ck_assert(key_is("x\\uD83D\\uDE00y", "x\xf0\x9f\x98\x80y"));
  ck_assert(key_is("\\u0041\xc3\xa9\\u0042", "A\xc3\xa9"
                                             "B"));
  /* Mismatches: another character, shorter, longer, a prefix. */
  ck_assert(!key_is("\\u0041", "B"));
  ck_assert(!key_is("\\u0041", ""));
  ck_assert(!key_is("\\u0041", "AB"));
  ck_assert(!key_is("\\u0041B", "A"));
  ck_assert(!key_is("\\u00e9", "\xc3"));         /* half of the character */
  ck_assert(!key_is("\\u00e9", "\xc3\xa9x"));    /* longer */
  ck_assert(!key_is("\\u20ac", "\xe2\x82"));     /* two of three bytes */
  ck_assert(!key_is("\\u20ac", "\xe2\x82\xad")); /* last byte differs */
  ck_assert(!key_is("\\ud83d\\ude00", "\xf0\x9f\x98"));
  ck_assert(!key_is("\\ud83d\\ude00", "\xf0\x9f\x98\x81"));
  ck_assert(!key_is("\\ud83d\\ude00", "\xf0\x9f\x98\x80\xf0"));
  ck_assert(!key_is("ab\\u0063", "ab"));
  ck_assert(!key_is("ab\\u0063", "abcd"));
  ck_assert(!key_is("request-id", "\\u0072equest-id"));
  /* A long escaped key (300 characters, 1,500 bytes as written), no limit. */
  struct tu_str k = {0}, name = {0};
  for (int i = 0; i < 300; i++) {
    if (i % 3 == 0) {
      tu_str_add(&k, "\\u00e9", 6);
      tu_str_add(&name, "\xc3\xa9", 2);
    } else {
      tu_str_add(&k, i % 3 == 1 ? "\\n" : "z", i % 3 == 1 ? 2 : 1);
      tu_str_add(&name, i % 3 == 1 ? "\n" : "z", 1);
    }
  }
  ck_assert_uint_gt(k.len, 300);
  ck_assert(key_is(k.p, name.p));
  struct appmsg_json_member m = key_member(k.p);
  ck_assert(!appmsg__json_key_is(&m, name.p, name.len - 1)); /* one byte short */
  name.p[name.len] = 'z';                                    /* (over the NUL) */
  ck_assert(!appmsg__json_key_is(&m, name.p, name.len + 1)); /* one byte longer */
  name.p[name.len - 1] = 'y';
  ck_assert(!appmsg__json_key_is(&m, name.p, name.len)); /* the last differs */
  tu_str_free(&k);
  tu_str_free(&name);
}
END_TEST

/* The host's byte order as the compiler knows it, not as the library
 * works it out at run time. */
START_TEST(the_host_byte_order_is_the_compilers) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  ck_assert_int_eq(appmsg_byteorder_host(), APPMSG_BYTEORDER_LITTLE);
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  ck_assert_int_eq(appmsg_byteorder_host(), APPMSG_BYTEORDER_BIG);
#else
#error "the compiler does not say the byte order (__BYTE_ORDER__)"
#endif
  ck_assert_str_eq(appmsg_byteorder_name(APPMSG_BYTEORDER_BIG), "big");
  ck_assert_str_eq(appmsg_byteorder_name(APPMSG_BYTEORDER_LITTLE), "little");
  /* A header made here says so, as the guide's sys.byteorder does. */
  struct appmsg_header h;
  make_header(&h, "t", "e");
  ck_assert_int_eq(h.byteorder, appmsg_byteorder_host());
  appmsg_header_cleanup(&h);
}
END_TEST

/* --- content check ------------------------------------------------------- */

START_TEST(the_json_check_gives_a_code_and_an_offset) {
  struct {
    const char *text;
    int depth;
    int code;
    size_t off;
  } cases[] = {
      {"{\"action\": \"search\", \"value\": \"x\"}", 8, 0, 0},
      {" [1, 2.5e-3, -0, true, false, null, \"\\u00e9\", {}] ", 8, 0, 0},
      {"\"\xf0\x9f\x90\xb6\"", 8, 0, 0},
      {"0", 8, 0, 0},
      {"", 8, APPMSG_E_CONTENT_JSON, 0},
      {"   ", 8, APPMSG_E_CONTENT_JSON, 3},
      {"{}x", 8, APPMSG_E_CONTENT_JSON, 2},
      {"[[[]]]", 2, APPMSG_E_CONTENT_JSON, 2},
      {"[[[]]]", 3, 0, 0},
      {"\"a\xed\xa0\x80\"", 8, APPMSG_E_CONTENT_UTF8, 2},
      {"\"\x01\"", 8, APPMSG_E_CONTENT_JSON, 1},
      {"01", 8, APPMSG_E_CONTENT_JSON, 1},
      {"\"\\ud800x\"", 8, APPMSG_E_CONTENT_JSON, 7},
      {"\"\\u0000\"", 8, APPMSG_E_CONTENT_JSON, 6},
      {"{\"a\" 1}", 8, APPMSG_E_CONTENT_JSON, 5},
      {"[1,]", 8, APPMSG_E_CONTENT_JSON, 3},
      {"tru", 8, APPMSG_E_CONTENT_JSON, 3},
      {"Infinity", 8, APPMSG_E_CONTENT_JSON, 0},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    size_t off = 999;
    const char *reason = NULL;
    int rc = appmsg_json_check(cases[k].text, strlen(cases[k].text), cases[k].depth, &off, &reason);
    ck_assert_msg(rc == cases[k].code, "case %zu: got %s", k, appmsg_errname(rc));
    if (rc) {
      ck_assert_msg(off == cases[k].off, "case %zu: offset %zu", k, off);
      ck_assert_ptr_nonnull(reason);
    }
  }
}
END_TEST

START_TEST(json_quote_escapes_like_json_dumps) {
  char out[64];
  size_t n = appmsg_json_quote("a\"\\\b\f\n\r\t\x1f\xc3\xa9", 11, out, sizeof out);
  out[n] = '\0';
  ck_assert_str_eq(out, "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u001f\xc3\xa9\"");
  ck_assert_uint_eq(appmsg_json_quote("abc", 3, NULL, 0), 5);
}
END_TEST

static void keep_member(void *ud, const struct appmsg_json_member *m) {
  *(struct appmsg_json_member *)ud = *m;
}

/* The string scanner looks at eight bytes at a time: a quote, a backslash or
 * a control character is found at every position, on either side of a word. */
START_TEST(json_strings_special_bytes_are_found_at_every_position) {
  for (size_t at = 0; at < 24; at++) {
    char text[64], doc[96], back[64];
    memset(text, 'a', at);
    /* An escaped quote and backslash at `at`: scanned, then unescaped. */
    memcpy(text + at, "\\\"x\\\\y\xc3\xa9", 8);
    size_t tn = at + 8;
    int dn = snprintf(doc, sizeof doc, "{\"k\": \"%.*s\"}", (int)tn, text);
    struct appmsg_json_member m;
    enum appmsg_json_type top;
    size_t off;
    const char *why;
    ck_assert_int_eq(appmsg_json_scan(doc, (size_t)dn, 8, &top, keep_member, &m, &off, &why), 0);
    ck_assert_uint_eq(m.val_len, tn);
    ck_assert_int_eq(m.val_escaped, 1);
    size_t bn = appmsg_json_unescape(m.val, m.val_len, back);
    ck_assert_uint_eq(bn, at + 6);
    ck_assert_int_eq(memcmp(back + at, "\"x\\y\xc3\xa9", 6), 0);
    /* A raw control character at `at`: refused at its own offset. */
    text[at] = '\x01';
    dn = snprintf(doc, sizeof doc, "{\"k\": \"%.*s\"}", (int)tn, text);
    ck_assert_int_ne(appmsg_json_scan(doc, (size_t)dn, 8, &top, keep_member, &m, &off, &why), 0);
    ck_assert_uint_eq(off, 7 + at);
  }
}
END_TEST

/* The word-at-a-time readers agree with a byte loop at every length and
 * every position, the last few bytes included (read as one more word). */
START_TEST(word_readers_agree_with_a_byte_loop_at_every_length) {
  static const unsigned char specials[] = {'"', '\\', 0x00, 0x1f, 0x80, 0xc3, 0xff};
  unsigned char buf[40];
  for (size_t n = 0; n <= 24; n++) {
    for (size_t at = 0; at <= n; at++) {
      for (size_t s = 0; s < sizeof specials; s++) {
        /* A fresh allocation of exactly n bytes, so that a read past the end is seen by ASan. */
        unsigned char *p = malloc(n ? n : 1);
        memset(buf, 'a', sizeof buf);
        if (at < n)
          buf[at] = specials[s];
        memcpy(p, buf, n);
        size_t want = 0;
        while (want < n && p[want] >= 0x20 && p[want] != '"' && p[want] != '\\')
          want++;
        ck_assert_msg(appmsg__json_plain_run(p, n) == want, "plain run: n %zu at %zu", n, at);
        size_t bad = appmsg_utf8_check(p, n);
        ck_assert_msg(bad == (at < n && specials[s] >= 0x80 ? at : n), "utf-8: n %zu at %zu", n,
                      at);
        char q[64];
        size_t qn = appmsg_json_quote((const char *)p, n, q, sizeof q);
        if (at == n || specials[s] >= 0x80) { /* nothing to escape: the bytes between quotes */
          ck_assert_uint_eq(qn, n + 2);
          ck_assert(q[0] == '"' && q[n + 1] == '"' && memcmp(q + 1, p, n) == 0);
        } else {
          ck_assert_uint_gt(qn, n + 2);
        }
        free(p);
      }
    }
  }
}
END_TEST

struct members {
  struct appmsg_json_member m[16];
  size_t n;
};

static void add_member(void *ud, const struct appmsg_json_member *m) {
  struct members *l = ud;
  if (l->n < 16)
    l->m[l->n] = *m;
  l->n++;
}

/* The flat-object fast path takes only texts the general scanner accepts,
 * reports the same members, and leaves every other text alone. */
START_TEST(json_flat_objects_read_as_the_general_scanner_reads_them) {
  static const struct {
    const char *text;
    int flat; /* taken by the fast path */
  } cases[] = {
      {"{\"action\": \"search\", \"value\": \"morpheus\"}", 1},
      {" \t{\n\"a\"\r:\"\" ,\"\":\"b\"}\n ", 1},
      {"{}", 1},
      {"{ }", 1},
      {"{\"k\": \"caf\xc3\xa9 \xf0\x9f\x90\xb0\"}", 1},
      {"{\"a\": \"1\", \"a\": \"2\"}", 1},
      {"{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\",\"6\":\"\",\"7\":\"\",\"8\":\"\"}",
       1},
      {"{\"1\":\"\",\"2\":\"\",\"3\":\"\",\"4\":\"\",\"5\":\"\",\"6\":\"\",\"7\":\"\",\"8\":\"\","
       "\"9\":\"\"}",
       0},
      {"{\"a\": 1}", 0},
      {"{\"a\": \"x\\\"y\"}", 0},
      {"{\"a\\u0041\": \"x\"}", 0},
      {"{\"a\": \"b\",}", 0},
      {"{\"a\": \"b\"} x", 0},
      {"{\"a\": \"b\"", 0},
      {"{\"a\" \"b\"}", 0},
      {"{\"a\": \"b\x01\"}", 0},
      {"{\"a\": {\"b\": \"c\"}}", 0},
      {"[\"a\"]", 0},
      {"\"a\"", 0},
      {"", 0},
      {"{", 0},
      {"{,}", 0},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    const char *t = cases[k].text;
    size_t n = strlen(t);
    struct members fast = {0}, general = {0};
    enum appmsg_json_type ft = APPMSG_JSON_NULL, gt = APPMSG_JSON_NULL;
    int took = appmsg__json_scan_flat(t, n, &ft, add_member, &fast);
    ck_assert_msg(took == cases[k].flat, "case %zu: fast path %d", k, took);
    struct appmsg__json_error e;
    int rc = appmsg__json_scan(t, n, 8, 0, &gt, add_member, &general, &e);
    if (!took) {
      ck_assert_uint_eq(fast.n, 0);
      continue;
    }
    ck_assert_msg(rc == 0, "case %zu: the general scanner refuses it", k);
    ck_assert_int_eq(ft, gt);
    ck_assert_uint_eq(fast.n, general.n);
    for (size_t i = 0; i < fast.n; i++) {
      const struct appmsg_json_member *a = &fast.m[i], *b = &general.m[i];
      ck_assert_msg(a->key == b->key && a->key_len == b->key_len &&
                        a->key_escaped == b->key_escaped && a->val == b->val &&
                        a->val_len == b->val_len && a->val_escaped == b->val_escaped &&
                        a->val_plain_int == b->val_plain_int && a->type == b->type,
                    "case %zu: member %zu differs", k, i);
    }
  }
}
END_TEST

START_TEST(json_quote_with_any_room_writes_a_prefix_of_the_whole_and_no_more) {
  static const char in[] = "plain \"run\"\x01 then \xf0\x9f\x90\xb0 and\\ more\n";
  char whole[128], part[128];
  size_t n = appmsg_json_quote(in, sizeof in - 1, whole, sizeof whole);
  ck_assert_uint_lt(n, sizeof whole);
  for (size_t cap = 0; cap <= n + 1; cap++) {
    memset(part, '#', sizeof part);
    ck_assert_uint_eq(appmsg_json_quote(in, sizeof in - 1, part, cap), n);
    ck_assert_int_eq(memcmp(part, whole, cap < n ? cap : n), 0);
    for (size_t i = cap < n ? cap : n; i < sizeof part; i++)
      ck_assert_int_eq(part[i], '#'); /* nothing written past the room given */
  }
}
END_TEST

/* --- error table ----------------------------------------------------------- */

START_TEST(every_code_has_one_name_and_one_text) {
#define CHECK_ONE(name, value, text)                                                               \
  ck_assert_str_eq(appmsg_errname(APPMSG_E_##name), #name);                                        \
  ck_assert_str_eq(appmsg_strerror(APPMSG_E_##name), text);                                        \
  ck_assert_int_eq(appmsg_errcode(#name), APPMSG_E_##name);                                        \
  ck_assert_int_eq(appmsg_errcode("APPMSG_E_" #name), APPMSG_E_##name);                            \
  ck_assert_int_lt(APPMSG_E_##name, APPMSG_E_BASE);
  APPMSG_ERROR_TABLE(CHECK_ONE)
#undef CHECK_ONE
  ck_assert_str_eq(appmsg_errname(0), "OK");
  ck_assert_str_eq(appmsg_errname(-ECONNRESET), "ECONNRESET");
  ck_assert_str_eq(appmsg_strerror(-ECONNRESET), "Connection reset by peer"); /* on every system */
  /* An errno value without a name of its own keeps its text. */
  ck_assert_str_eq(appmsg_errname(-ENOTDIR), "ESYSTEM");
  ck_assert_str_eq(appmsg_strerror(-ENOTDIR), strerror(ENOTDIR));
  /* Anything else is unknown, never NULL. */
  ck_assert_str_eq(appmsg_errname(12345), "UNKNOWN");
  ck_assert_str_eq(appmsg_errname(-99999), "UNKNOWN");
  ck_assert_str_eq(appmsg_strerror(12345), "unknown error");
  ck_assert_str_eq(appmsg_strerror(-99999), "unknown error");
  ck_assert_int_eq(appmsg_errcode("NO_SUCH"), 0);
  ck_assert_str_eq(appmsg_version(), APPMSG_VERSION_STRING);
}
END_TEST

int main(void) {
  Suite *s = suite_create("codec");
  TCase *dec = tcase_create("decoder");
  tcase_add_test(dec, several_frames_in_one_buffer_come_out_one_per_call);
  tcase_add_test(dec, errors_are_sticky_until_reset);
  tcase_add_test(dec, limits_are_validated);
  tcase_add_test(dec, the_content_limit_is_checked_before_the_content);
  tcase_add_test(dec, content_that_cannot_be_allocated_is_enomem);
  tcase_add_test(dec, header_lengths_1_and_65535_and_the_limit_are_exact);
  tcase_add_test(dec, content_up_to_the_limit_decodes_and_one_byte_more_is_refused);
  tcase_add_test(dec, finish_reports_truncation_at_every_cut);
  tcase_add_test(dec, take_content_hands_the_content_over);
  tcase_add_test(dec, other_protocols_are_named_in_the_reason);
  tcase_add_test(dec, extra_header_keys_are_kept_in_order);
  suite_add_tcase(s, dec);
  TCase *enc = tcase_create("encoder");
  tcase_add_test(enc, the_encoder_writes_the_guides_request_byte_for_byte);
  tcase_add_test(enc, prepared_header_writes_the_same_bytes_and_is_a_snapshot);
  tcase_add_test(enc, the_encoder_queue_survives_partial_writes);
  tcase_add_test(enc, an_emptied_encoder_starts_its_next_burst_at_the_last_size);
  tcase_add_test(enc, the_encoder_refuses_headers_it_cannot_frame);
  tcase_add_test(enc, headers_are_written_escaped_like_pythons_json_dumps);
  tcase_add_test(enc, frames_round_trip_at_many_sizes_and_chunkings);
  suite_add_tcase(s, enc);
  TCase *hdr = tcase_create("header");
  tcase_add_test(hdr, extra_keys_can_be_set_replaced_and_removed);
  tcase_add_test(hdr, copies_keep_received_extras_byte_for_byte);
  tcase_add_test(hdr, a_copy_can_change_and_a_received_header_cannot);
  tcase_add_test(hdr, set_extra_json_keeps_the_value_as_given);
  tcase_add_test(hdr, escaped_keys_are_compared_unescaped);
  tcase_add_test(hdr, duplicate_extras_are_found_after_unescaping);
  tcase_add_test(hdr, the_key_comparator_unescapes_as_it_compares);
  tcase_add_test(hdr, the_host_byte_order_is_the_compilers);
  tcase_add_test(hdr, the_json_check_gives_a_code_and_an_offset);
  tcase_add_test(hdr, json_quote_escapes_like_json_dumps);
  tcase_add_test(hdr, json_strings_special_bytes_are_found_at_every_position);
  tcase_add_test(hdr, json_flat_objects_read_as_the_general_scanner_reads_them);
  tcase_add_test(hdr, word_readers_agree_with_a_byte_loop_at_every_length);
  tcase_add_test(hdr, json_quote_with_any_room_writes_a_prefix_of_the_whole_and_no_more);
  tcase_add_test(hdr, every_code_has_one_name_and_one_text);
  suite_add_tcase(s, hdr);
  return tu_run_suite(s);
}
