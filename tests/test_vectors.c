/*
 * Every vector of proto/vectors must decode to the same trace - the same
 * messages, or the same error at the same offset - however its bytes are
 * cut: whole, one byte at a time, split at every point into two, into
 * three, and in chunks of every size.  Large vectors (over 4 KiB) are cut
 * at a sample of points so the suite stays fast.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static struct tu_vec *vecs;
static size_t nvecs;

#define BIG 4096

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

START_TEST(whole) {
  expect_trace(&vecs[_i], NULL, 0, "whole");
}
END_TEST

/* The canonical-header fast path off: the general path alone must give
 * the same traces (the fast path is an optimisation, never a behaviour). */
START_TEST(whole_general_path_only) {
  tu_fast_path = 0;
  expect_trace(&vecs[_i], NULL, 0, "whole, general path only");
  tu_fast_path = 1;
}
END_TEST

START_TEST(byte_by_byte) {
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

START_TEST(every_split) {
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

START_TEST(three_way_splits) {
  const struct tu_vec *v = &vecs[_i];
  if (v->len > 400) /* O(n^2) runs: keep it to the small vectors */
    return;
  for (size_t i = 1; i < v->len; i++)
    for (size_t j = i + 1; j < v->len; j++) {
      size_t cuts[2] = {i, j};
      char how[64];
      snprintf(how, sizeof how, "split at %zu and %zu", i, j);
      expect_trace(v, cuts, 2, how);
    }
}
END_TEST

START_TEST(chunk_sizes) {
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

/* The guide's frames are all among the vectors, and all the files of
 * shared/guide-frames are there byte for byte. */
START_TEST(guide_frames_covered) {
  const char *names[] = {"binary-double42.request", "binary-double42.response",
                         "invalid-action.request",  "invalid-action.response",
                         "search-dog.request",      "search-dog.response",
                         "search-morpheus.request", "search-morpheus.response",
                         "search-nomatch.request",  "search-nomatch.response"};
  for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/../shared/guide-frames/%s.hex", APPMSG_SOURCE_DIR, names[k]);
    size_t hlen;
    unsigned char *hex = tu_read_file(path, &hlen);
    if (hex == NULL) /* shared/ is beside the checkout in CI; the vectors still hold the bytes */
      continue;
    unsigned char *bytes = malloc(hlen);
    long n = tu_unhex((char *)hex, bytes, hlen);
    ck_assert_int_gt(n, 0);
    int found = 0;
    for (size_t i = 0; i < nvecs && !found; i++)
      found = vecs[i].len == (size_t)n && memcmp(vecs[i].stream, bytes, (size_t)n) == 0;
    ck_assert_msg(found, "no vector holds the bytes of %s", path);
    free(bytes);
    free(hex);
  }
}
END_TEST

int main(void) {
  nvecs = tu_load_vectors(APPMSG_SOURCE_DIR "/proto/vectors", &vecs);
  if (nvecs < 1) {
    fprintf(stderr, "no vectors found\n");
    return 1;
  }
  Suite *s = suite_create("vectors");
  TCase *tc = tcase_create("cuts");
  tcase_set_timeout(tc, 240);
  tcase_add_loop_test(tc, whole, 0, (int)nvecs);
  tcase_add_loop_test(tc, whole_general_path_only, 0, (int)nvecs);
  tcase_add_loop_test(tc, byte_by_byte, 0, (int)nvecs);
  tcase_add_loop_test(tc, every_split, 0, (int)nvecs);
  tcase_add_loop_test(tc, three_way_splits, 0, (int)nvecs);
  tcase_add_loop_test(tc, chunk_sizes, 0, (int)nvecs);
  tcase_add_test(tc, guide_frames_covered);
  suite_add_tcase(s, tc);
  int rc = tu_run_suite(s);
  tu_free_vectors(vecs, nvecs);
  return rc;
}
