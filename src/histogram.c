/* A latency histogram with a bounded relative error (see histogram.h). */
#include "histogram.h"

#include <string.h>

void appmsg__histogram_init(struct appmsg__histogram *h) {
  memset(h, 0, sizeof *h);
}

/* The position of the highest set bit of v (v > 0). */
static unsigned top_bit(uint64_t v) {
  return 63u - (unsigned)__builtin_clzll(v);
}

unsigned appmsg__histogram_index(uint64_t v) {
  if (v < APPMSG__HISTOGRAM_SUB)
    return (unsigned)v;
  /* v is in [2^k, 2^(k+1)), k >= SUB_BITS: that power's buckets are 2^(k - SUB_BITS) wide,
   * and v >> (k - SUB_BITS) is in [SUB, 2 * SUB). */
  unsigned shift = top_bit(v) - APPMSG__HISTOGRAM_SUB_BITS;
  return (shift + 1) * APPMSG__HISTOGRAM_SUB + (unsigned)(v >> shift) - APPMSG__HISTOGRAM_SUB;
}

uint64_t appmsg__histogram_bucket_low(unsigned i) {
  if (i < APPMSG__HISTOGRAM_SUB)
    return i;
  unsigned shift = i / APPMSG__HISTOGRAM_SUB - 1;
  return (uint64_t)(APPMSG__HISTOGRAM_SUB + i % APPMSG__HISTOGRAM_SUB) << shift;
}

uint64_t appmsg__histogram_bucket_high(unsigned i) {
  if (i < APPMSG__HISTOGRAM_SUB)
    return i;
  unsigned shift = i / APPMSG__HISTOGRAM_SUB - 1;
  return appmsg__histogram_bucket_low(i) + (((uint64_t)1 << shift) - 1);
}

void appmsg__histogram_record(struct appmsg__histogram *h, uint64_t v) {
  h->bucket[appmsg__histogram_index(v)]++;
  if (h->count == 0 || v < h->min)
    h->min = v;
  if (v > h->max)
    h->max = v;
  h->count++;
  h->sum += (double)v;
}

void appmsg__histogram_merge(struct appmsg__histogram *dst, const struct appmsg__histogram *src) {
  if (src->count == 0)
    return;
  for (unsigned i = 0; i < APPMSG__HISTOGRAM_BUCKETS; i++)
    dst->bucket[i] += src->bucket[i];
  if (dst->count == 0 || src->min < dst->min)
    dst->min = src->min;
  if (src->max > dst->max)
    dst->max = src->max;
  dst->count += src->count;
  dst->sum += src->sum;
}

uint64_t appmsg__histogram_quantile(const struct appmsg__histogram *h, double q) {
  if (h->count == 0)
    return 0;
  if (!(q > 0)) /* (NaN too) */
    return h->min;
  if (q >= 1)
    return h->max;
  /* The rank of the value wanted, 1-based: ceil(q * count), at least 1. */
  double r = q * (double)h->count;
  uint64_t rank = (uint64_t)r;
  if ((double)rank < r)
    rank++;
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < APPMSG__HISTOGRAM_BUCKETS; i++) {
    seen += h->bucket[i];
    if (seen >= rank) {
      uint64_t lo = appmsg__histogram_bucket_low(i), hi = appmsg__histogram_bucket_high(i);
      uint64_t mid = lo + (hi - lo) / 2;
      return mid < h->min ? h->min : mid > h->max ? h->max : mid;
    }
  }
  return h->max;
}

uint64_t appmsg__histogram_count(const struct appmsg__histogram *h) {
  return h->count;
}

uint64_t appmsg__histogram_max(const struct appmsg__histogram *h) {
  return h->max;
}

uint64_t appmsg__histogram_min(const struct appmsg__histogram *h) {
  return h->min;
}

double appmsg__histogram_mean(const struct appmsg__histogram *h) {
  return h->count ? h->sum / (double)h->count : 0;
}
