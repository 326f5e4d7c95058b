/*
 * libFuzzer target for the strict JSON check and the header's extra keys.
 * Checks: appmsg_json_check never reads out of bounds; whatever it accepts
 * cJSON parses too (it is the stricter of the two); an accepted value can
 * be stored as an extra header key, written in a frame and read back.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__);                            \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
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
