/*
 * A latency histogram with a bounded relative error, in fixed memory.
 *
 * Values are unsigned 64-bit counts of nanoseconds (any unit works: nothing
 * here knows it is time).  The buckets are log-linear, as HdrHistogram's:
 * values below 128 each have a bucket of their own (exact); above, every
 * power of two [2^k, 2^(k+1)) is cut into 128 buckets of equal width
 * 2^(k-7).  A bucket is therefore at most 1/128 of its values wide: a
 * quantile read back is within 0.8% of a value that was recorded (its
 * bucket's middle, kept within the smallest and largest values recorded).
 * The whole range of uint64_t is covered - nothing is clamped - in
 * APPMSG__HISTOGRAM_BUCKETS counters (58 KiB): recording is a few
 * instructions and never allocates; merging adds counters.
 *
 *   struct appmsg__histogram h;
 *   appmsg__histogram_init(&h);
 *   appmsg__histogram_record(&h, 125000);        // 125 us
 *   uint64_t p99 = appmsg__histogram_quantile(&h, 0.99);
 *
 * Internal to the library (not installed, symbols hidden): the appmsg tool
 * lists this file among its own sources.  Not thread-safe: one histogram
 * per thread, merged at the end.
 */
#ifndef APPMSG_HISTOGRAM_H
#define APPMSG_HISTOGRAM_H

#include <stdint.h>

#define APPMSG__HISTOGRAM_SUB_BITS 7 /* 2^7 = 128 buckets per power of two */
#define APPMSG__HISTOGRAM_SUB (1u << APPMSG__HISTOGRAM_SUB_BITS)
/* 128 exact buckets for 0..127, then 128 for each power of two from 2^7 to 2^63. */
#define APPMSG__HISTOGRAM_BUCKETS ((64 - APPMSG__HISTOGRAM_SUB_BITS + 1) * APPMSG__HISTOGRAM_SUB)

struct appmsg__histogram {
  uint64_t count;                             /* values recorded */
  uint64_t min, max;                          /* the smallest and largest (0 when empty) */
  double sum;                                 /* their sum, for the mean */
  uint64_t bucket[APPMSG__HISTOGRAM_BUCKETS]; /* values recorded per bucket */
};

/* Empties h (a zeroed histogram is empty too). */
void appmsg__histogram_init(struct appmsg__histogram *h);

/* Records one value. */
void appmsg__histogram_record(struct appmsg__histogram *h, uint64_t v);

/* Adds every value of src into dst (src is unchanged). */
void appmsg__histogram_merge(struct appmsg__histogram *dst, const struct appmsg__histogram *src);

/* The value at quantile q (0 to 1; 0.5 the median, 1 the maximum): the
 * middle of the bucket holding the ceil(q * count)-th smallest value,
 * within [min, max]; monotonic in q.  0 when empty. */
uint64_t appmsg__histogram_quantile(const struct appmsg__histogram *h, double q);

/* The count, the largest and smallest values (0 when empty), the mean (0 when empty). */
uint64_t appmsg__histogram_count(const struct appmsg__histogram *h);
uint64_t appmsg__histogram_max(const struct appmsg__histogram *h);
uint64_t appmsg__histogram_min(const struct appmsg__histogram *h);
double appmsg__histogram_mean(const struct appmsg__histogram *h);

/* The bucket a value falls in, and the lowest and highest values of bucket i
 * (for tests, and for exporting the buckets). */
unsigned appmsg__histogram_index(uint64_t v);
uint64_t appmsg__histogram_bucket_low(unsigned i);
uint64_t appmsg__histogram_bucket_high(unsigned i);

#endif
