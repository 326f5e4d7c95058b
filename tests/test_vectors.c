/*
 * Every vector of proto/vectors must decode to the same trace - the same
 * messages (with their content checks where the vector asks), or the same
 * error at the same offset - however its bytes are cut: whole, one byte at
 * a time, split at every point into two, into three, and in chunks of
 * every size.  Vectors over BIG bytes are split in two at a sample of
 * points, and vectors over THREE_WAY_ALL bytes split in three at a sample
 * of pairs (main() prints how many of each), so the suite stays fast.
 * Every extra must also reach the application as its text as received.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "testutil.h"

static struct tu_vec *vecs;
static size_t nvecs;

#define BIG 4096
/* Every pair of split points up to this length (O(n^2) decodes); above
 * it, the pairs of THREE_WAY_SAMPLE points near either end and across. */
#define THREE_WAY_ALL 400
#define THREE_WAY_SAMPLE 40

static void expect_trace(const struct tu_vec *v, const size_t *cuts, size_t ncuts,
                         const char *how) {
  char *got = tu_decode_trace(v, cuts, ncuts);
  if (strcmp(got, v->expect) != 0)
    ck_abort_msg("%s (%s):\nexpected:\n%s\ngot:\n%s", v->path, how, v->expect, got);
  free(got);
}

/* Whether split point i is tested for a vector of this length. */
static int sampled(size_t i, size_t len) {
  return len <= BIG || i < 300 || len - i < 300 || i % 997 == 0;
}

START_TEST(each_vector_decodes_as_expected_fed_whole) {
  expect_trace(&vecs[_i], NULL, 0, "whole");
}
END_TEST

/* The canonical-header fast path off: the general path alone must give
 * the same traces (the fast path is an optimisation, never a behaviour). */
START_TEST(each_vector_decodes_the_same_by_the_general_header_path_alone) {
  tu_fast_path = 0;
  expect_trace(&vecs[_i], NULL, 0, "whole, general path only");
  tu_fast_path = 1;
}
END_TEST

START_TEST(each_vector_decodes_the_same_one_byte_at_a_time) {
  const struct tu_vec *v = &vecs[_i];
  if (v->len < 2)
    return;
  size_t *cuts = malloc((v->len - 1) * sizeof *cuts);
  for (size_t i = 0; i < v->len - 1; i++)
    cuts[i] = i + 1;
  expect_trace(v, cuts, v->len - 1, "one byte at a time");
  free(cuts);
}
END_TEST

START_TEST(each_vector_decodes_the_same_split_in_two_anywhere) {
  const struct tu_vec *v = &vecs[_i];
  for (size_t i = 1; i < v->len; i++) {
    if (!sampled(i, v->len))
      continue;
    char how[64];
    snprintf(how, sizeof how, "split at %zu", i);
    expect_trace(v, &i, 1, how);
  }
}
END_TEST

/* The split points tried for a three-way split of a vector of len bytes:
 * all of them, or THREE_WAY_SAMPLE spread over the vector (a third near
 * each end, where the prefix, header and content boundaries of the first
 * and last frames are, and the rest evenly between).  Returns the count. */
static size_t three_way_points(size_t len, size_t *pts) {
  if (len <= THREE_WAY_ALL) {
    for (size_t i = 1; i < len; i++)
      pts[i - 1] = i;
    return len > 0 ? len - 1 : 0;
  }
  size_t n = 0, edge = THREE_WAY_SAMPLE / 3, mid = THREE_WAY_SAMPLE - 2 * edge;
  for (size_t i = 1; i <= edge; i++)
    pts[n++] = i;
  for (size_t k = 1; k <= mid; k++)
    pts[n++] = edge + k * (len - 2 * edge - 1) / (mid + 1);
  for (size_t i = len - edge; i < len; i++)
    pts[n++] = i;
  return n;
}

START_TEST(each_vector_decodes_the_same_split_in_three) {
  const struct tu_vec *v = &vecs[_i];
  size_t *pts = malloc((v->len > THREE_WAY_ALL ? THREE_WAY_SAMPLE : v->len + 1) * sizeof *pts);
  size_t n = three_way_points(v->len, pts);
  for (size_t a = 0; a < n; a++)
    for (size_t b = a + 1; b < n; b++) {
      size_t cuts[2] = {pts[a], pts[b]};
      char how[64];
      snprintf(how, sizeof how, "split at %zu and %zu", cuts[0], cuts[1]);
      expect_trace(v, cuts, 2, how);
    }
  free(pts);
}
END_TEST

START_TEST(each_vector_decodes_the_same_in_chunks_of_every_size) {
  const struct tu_vec *v = &vecs[_i];
  size_t *cuts = malloc((v->len + 1) * sizeof *cuts);
  for (size_t chunk = 1; chunk <= v->len; chunk++) {
    if (v->len > BIG && chunk > 64 && chunk % 509 != 0)
      continue;
    size_t n = 0;
    for (size_t at = chunk; at < v->len; at += chunk)
      cuts[n++] = at;
    char how[64];
    snprintf(how, sizeof how, "chunks of %zu", chunk);
    expect_trace(v, cuts, n, how);
  }
  free(cuts);
}
END_TEST

/* The extras of one header as its bytes hold them, found by the JSON
 * scanner alone: each top-level member that is not one of the four fields,
 * its key unescaped and its value's text from first byte to last. */
struct raw_extras {
  size_t n;
  char **key;
  const char **val;
  size_t *len;
};

static void collect_raw(void *ud, const struct appmsg_json_member *m) {
  static const char *const fields[] = {"byteorder", "content-type", "content-encoding",
                                       "content-length"};
  struct raw_extras *r = ud;
  char *key = tu_strndup(m->key, m->key_len);
  key[appmsg_json_unescape(key, m->key_len, key)] = '\0';
  for (size_t f = 0; f < 4; f++)
    if (strcmp(key, fields[f]) == 0) {
      free(key);
      return;
    }
  int quoted = m->type == APPMSG_JSON_STRING; /* (a string's span leaves out its quotes) */
  r->key = realloc(r->key, (r->n + 1) * sizeof *r->key);
  r->val = realloc(r->val, (r->n + 1) * sizeof *r->val);
  r->len = realloc(r->len, (r->n + 1) * sizeof *r->len);
  ck_assert(r->key && r->val && r->len);
  r->key[r->n] = key;
  r->val[r->n] = m->val - quoted;
  r->len[r->n] = m->val_len + 2 * (size_t)quoted;
  r->n++;
}

static void raw_extras_free(struct raw_extras *r) {
  for (size_t i = 0; i < r->n; i++)
    free(r->key[i]);
  free(r->key);
  free(r->val);
  free(r->len);
}

/* PROTOCOL.md 2.2: an extra reaches the application as received, byte for
 * byte ("\u0041" stays "\u0041", 1.0 stays 1.0).  The traces compare
 * extras as JSON values; this compares their text with the stream's, by
 * the general header path and by the fast path for canonical headers. */
START_TEST(each_extra_is_delivered_byte_for_byte_as_received) {
  const struct tu_vec *v = &vecs[_i];
  for (int fast = 0; fast <= 1; fast++) {
    struct appmsg_decoder d;
    ck_assert_int_eq(appmsg_decoder_init(&d, &v->lim), 0);
    appmsg__decoder_set_fast_path(&d, fast);
    for (size_t off = 0, frame = 0; off < v->len;) {
      size_t used;
      enum appmsg_status st = appmsg_decoder_feed(&d, v->stream + off, v->len - off, &used);
      off += used;
      if (st == APPMSG_ERROR || (st == APPMSG_NEED_MORE && used == 0))
        break;
      if (st != APPMSG_MESSAGE)
        continue;
      size_t hlen = (size_t)v->stream[frame] << 8 | v->stream[frame + 1];
      struct raw_extras want = {0};
      ck_assert_int_eq(appmsg_json_scan(v->stream + frame + 2, hlen, APPMSG_HEADER_DEPTH_MAX, NULL,
                                        collect_raw, &want, NULL, NULL),
                       0);
      const struct appmsg_header *h = appmsg_decoder_header(&d);
      ck_assert_uint_eq(appmsg_header_extra_count(h), want.n);
      for (size_t i = 0; i < want.n; i++) {
        const char *key = appmsg_header_extra_key(h, i);
        ck_assert_str_eq(key, want.key[i]);
        char *json = appmsg_header_extra_json(h, key);
        ck_assert_msg(strlen(json) == want.len[i] && memcmp(json, want.val[i], want.len[i]) == 0,
                      "%s: frame at %zu, extra %s: delivered %s, received %.*s", v->path, frame,
                      key, json, (int)want.len[i], want.val[i]);
        appmsg_free(json);
      }
      raw_extras_free(&want);
      frame = off;
    }
    appmsg_decoder_cleanup(&d);
  }
}
END_TEST

/* The frames the guide's programs exchange are vectors of their own, in
 * proto/vectors/guide, each one whole frame that ends the stream cleanly:
 * the requests and replies of a search, a search without a match, the
 * binary request and an invalid action. */
START_TEST(the_guides_frames_are_all_among_the_vectors) {
  const char *names[] = {"binary-double42.request", "binary-double42.response",
                         "invalid-action.request",  "invalid-action.response",
                         "search-dog.request",      "search-dog.response",
                         "search-morpheus.request", "search-morpheus.response",
                         "search-nomatch.request",  "search-nomatch.response"};
  for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/proto/vectors/guide/%s.vec", APPMSG_SOURCE_DIR, names[k]);
    const struct tu_vec *v = NULL;
    for (size_t i = 0; i < nvecs && !v; i++)
      if (strcmp(vecs[i].path, path) == 0)
        v = &vecs[i];
    ck_assert_msg(v != NULL, "no vector %s", path);
    ck_assert_msg(v->len > 2, "%s holds no frame", path);
    const char *second = strstr(v->expect + 1, "\nmessage\n");
    ck_assert_msg(strncmp(v->expect, "message\n", 8) == 0 && second == NULL,
                  "%s is not exactly one message", path);
    ck_assert_msg(strstr(v->expect, "\nend\n") != NULL, "%s does not end cleanly", path);
  }
}
END_TEST

int main(void) {
  nvecs = tu_load_vectors(APPMSG_SOURCE_DIR "/proto/vectors", &vecs);
  if (nvecs < 1) {
    fprintf(stderr, "no vectors found\n");
    return 1;
  }
  size_t big2 = 0, big3 = 0;
  for (size_t i = 0; i < nvecs; i++) {
    big2 += vecs[i].len > BIG;
    big3 += vecs[i].len > THREE_WAY_ALL;
  }
  printf("%zu vectors; split in two at every point: %zu, at a sample of points (over %d bytes): "
         "%zu; split in three at every pair of points: %zu, at pairs of %d sampled points (over "
         "%d bytes): %zu\n",
         nvecs, nvecs - big2, BIG, big2, nvecs - big3, THREE_WAY_SAMPLE, THREE_WAY_ALL, big3);
  Suite *s = suite_create("vectors");
  TCase *tc = tcase_create("cuts");
  tcase_set_timeout(tc, 240);
  tcase_add_loop_test(tc, each_vector_decodes_as_expected_fed_whole, 0, (int)nvecs);
  tcase_add_loop_test(tc, each_vector_decodes_the_same_by_the_general_header_path_alone, 0,
                      (int)nvecs);
  tcase_add_loop_test(tc, each_vector_decodes_the_same_one_byte_at_a_time, 0, (int)nvecs);
  tcase_add_loop_test(tc, each_vector_decodes_the_same_split_in_two_anywhere, 0, (int)nvecs);
  tcase_add_loop_test(tc, each_vector_decodes_the_same_split_in_three, 0, (int)nvecs);
  tcase_add_loop_test(tc, each_vector_decodes_the_same_in_chunks_of_every_size, 0, (int)nvecs);
  tcase_add_loop_test(tc, each_extra_is_delivered_byte_for_byte_as_received, 0, (int)nvecs);
  tcase_add_test(tc, the_guides_frames_are_all_among_the_vectors);
  suite_add_tcase(s, tc);
  int rc = tu_run_suite(s);
  tu_free_vectors(vecs, nvecs);
  return rc;
}
