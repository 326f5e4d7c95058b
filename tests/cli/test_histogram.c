/* The latency histogram (src/histogram.c): buckets, bounded relative error, quantiles, merge. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "histogram.h"

static struct appmsg__histogram *hist_new(void) {
  struct appmsg__histogram *h = malloc(sizeof *h);
  ck_assert_ptr_nonnull(h);
  appmsg__histogram_init(h);
  return h;
}

/* Every value falls in a bucket whose bounds hold it, buckets follow each other without a gap,
 * and a bucket is at most 1/128 of its values wide. */
START_TEST(buckets_cover_everything) {
  ck_assert_uint_eq(appmsg__histogram_index(0), 0);
  ck_assert_uint_eq(appmsg__histogram_index(127), 127);
  ck_assert_uint_eq(appmsg__histogram_index(UINT64_MAX), APPMSG__HISTOGRAM_BUCKETS - 1);
  ck_assert_uint_eq(appmsg__histogram_bucket_high(APPMSG__HISTOGRAM_BUCKETS - 1), UINT64_MAX);
  for (unsigned i = 1; i < APPMSG__HISTOGRAM_BUCKETS; i++) {
    uint64_t lo = appmsg__histogram_bucket_low(i), hi = appmsg__histogram_bucket_high(i);
    ck_assert_uint_eq(lo, appmsg__histogram_bucket_high(i - 1) + 1);
    ck_assert_uint_eq(appmsg__histogram_index(lo), i);
    ck_assert_uint_eq(appmsg__histogram_index(hi), i);
    ck_assert((double)(hi - lo) <= (double)lo / 128.0);
  }
}
END_TEST

START_TEST(empty_and_one_value) {
  struct appmsg__histogram *h = hist_new();
  ck_assert_uint_eq(appmsg__histogram_count(h), 0);
  ck_assert_uint_eq(appmsg__histogram_quantile(h, 0.5), 0);
  ck_assert(appmsg__histogram_mean(h) == 0);
  appmsg__histogram_record(h, 123456789);
  for (double q = 0; q <= 1.0; q += 0.125)
    ck_assert_uint_eq(appmsg__histogram_quantile(h, q), 123456789); /* within [min, max] */
  ck_assert_uint_eq(appmsg__histogram_max(h), 123456789);
  ck_assert_uint_eq(appmsg__histogram_min(h), 123456789);
  free(h);
}
END_TEST

/* 1..100000 recorded: every quantile within 1% of the exact one, monotonic. */
START_TEST(quantiles_within_one_percent) {
  struct appmsg__histogram *h = hist_new();
  const uint64_t n = 100000;
  for (uint64_t v = 1; v <= n; v++)
    appmsg__histogram_record(h, v * 1000);
  uint64_t last = 0;
  for (int i = 1; i <= 1000; i++) {
    double q = i / 1000.0, exact = q * (double)n * 1000;
    uint64_t got = appmsg__histogram_quantile(h, q);
    ck_assert_msg(got >= last, "quantile %g went down", q);
    ck_assert_msg((double)got >= exact * 0.99 - 1000 && (double)got <= exact * 1.01 + 1000,
                  "q %g: %llu, exactly %g", q, (unsigned long long)got, exact);
    last = got;
  }
  ck_assert_uint_eq(appmsg__histogram_quantile(h, 1), n * 1000);
  ck_assert_uint_eq(appmsg__histogram_count(h), n);
  ck_assert(appmsg__histogram_mean(h) == (double)(n + 1) / 2 * 1000);
  free(h);
}
END_TEST

START_TEST(merge_adds) {
  struct appmsg__histogram *a = hist_new(), *b = hist_new(), *all = hist_new();
  for (uint64_t v = 0; v < 5000; v++) {
    appmsg__histogram_record(v % 2 ? a : b, v * 7919);
    appmsg__histogram_record(all, v * 7919);
  }
  appmsg__histogram_merge(a, b);
  ck_assert_uint_eq(appmsg__histogram_count(a), 5000);
  ck_assert_uint_eq(appmsg__histogram_min(a), 0);
  ck_assert_uint_eq(appmsg__histogram_max(a), 4999 * 7919);
  for (double q = 0; q <= 1.0; q += 0.01)
    ck_assert_uint_eq(appmsg__histogram_quantile(a, q), appmsg__histogram_quantile(all, q));
  appmsg__histogram_init(b);
  appmsg__histogram_merge(a, b); /* an empty one changes nothing */
  ck_assert_uint_eq(appmsg__histogram_min(a), 0);
  free(a);
  free(b);
  free(all);
}
END_TEST

int main(void) {
  Suite *s = suite_create("histogram");
  TCase *tc = tcase_create("histogram");
  tcase_add_test(tc, buckets_cover_everything);
  tcase_add_test(tc, empty_and_one_value);
  tcase_add_test(tc, quantiles_within_one_percent);
  tcase_add_test(tc, merge_adds);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
