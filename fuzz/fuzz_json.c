/*
 * libFuzzer target for the strict JSON check and the header's extra keys.
 * Checks: appmsg_json_check never reads out of bounds; whatever it accepts
 * cJSON parses too (it is the stricter of the two); an accepted value can
 * be stored as an extra header key, written in a frame and read back; the
 * flat-object fast path accepts nothing the general scanner refuses and
 * reports the same members.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "json_internal.h"
#include "util.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                            \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct members {
  struct appmsg_json_member m[APPMSG__JSON_FLAT_MAX];
  size_t n;
};

static void add_member(void *ud, const struct appmsg_json_member *m) {
  struct members *l = ud;
  if (l->n < APPMSG__JSON_FLAT_MAX)
    l->m[l->n] = *m;
  l->n++;
}

/* The flat-object fast path accepts only what the general scanner accepts,
 * with the same members. */
static void check_flat_path(const char *p, size_t n) {
  if (appmsg_utf8_check(p, n) != n)
    return;
  struct members fast = {0}, general = {0};
  enum appmsg_json_type ft, gt;
  if (!appmsg__json_scan_flat(p, n, &ft, add_member, &fast)) {
    CHECK(fast.n == 0);
    return;
  }
  struct appmsg__json_error e;
  CHECK(appmsg__json_scan(p, n, 31, 0, &gt, add_member, &general, &e) == 0);
  CHECK(ft == gt && fast.n == general.n && fast.n <= APPMSG__JSON_FLAT_MAX);
  for (size_t i = 0; i < fast.n; i++) {
    const struct appmsg_json_member *a = &fast.m[i], *b = &general.m[i];
    CHECK(a->key == b->key && a->key_len == b->key_len && a->key_escaped == b->key_escaped);
    CHECK(a->val == b->val && a->val_len == b->val_len && a->val_escaped == b->val_escaped);
    CHECK(a->val_plain_int == b->val_plain_int && a->type == b->type);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_flat_path((const char *)data, size);
  size_t off = 0;
  const char *reason = NULL;
  int rc = appmsg_json_check(data, size, 31, &off, &reason);
  if (rc) {
    CHECK(rc == APPMSG_E_CONTENT_UTF8 || rc == APPMSG_E_CONTENT_JSON);
    CHECK(off <= size && reason != NULL);
    return 0;
  }
  cJSON *v = cJSON_ParseWithLength((const char *)data, size);
  CHECK(v != NULL);
  cJSON_Delete(v);
  /* Store it as an extra key and carry it through a frame. */
  char *text = malloc(size + 1);
  memcpy(text, data, size);
  text[size] = '\0';
  struct appmsg_header h;
  appmsg_header_init(&h);
  CHECK(appmsg_header_set(&h, "t", "e") == 0);
  if (memchr(data, '\0', size) == NULL && appmsg_header_set_extra_json(&h, "x", text) == 0) {
    struct appmsg_encoder e;
    appmsg_encoder_init(&e);
    if (appmsg_encoder_push(&e, &h, "", 0) == 0) {
      size_t n;
      const void *p = appmsg_encoder_peek(&e, &n);
      struct appmsg_decoder d;
      appmsg_decoder_init(&d, NULL);
      size_t used;
      CHECK(appmsg_decoder_feed(&d, p, n, &used) == APPMSG_MESSAGE);
      CHECK(appmsg_header_extra_count(appmsg_decoder_header(&d)) == 1);
      char *a = appmsg_header_extra_json(appmsg_decoder_header(&d), "x");
      char *b = appmsg_header_extra_json(&h, "x");
      CHECK(a && b && strcmp(a, b) == 0);
      free(a);
      free(b);
      appmsg_decoder_cleanup(&d);
    }
    appmsg_encoder_cleanup(&e);
  }
  appmsg_header_cleanup(&h);
  free(text);
  return 0;
}
