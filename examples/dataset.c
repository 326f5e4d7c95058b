/* The app-server's dataset (see dataset.h). */
#include "dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"
#include "common.h"

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a final mix */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 32;
  return h ? h : 1;
}

static int dataset_init(struct dataset *d, size_t n) {
  size_t cap = 16;
  while (cap < n * 2)
    cap *= 2;
  d->slots = calloc(cap, sizeof *d->slots);
  d->mask = cap - 1;
  d->count = 0;
  d->arena = NULL;
  return d->slots ? 0 : -ENOMEM;
}

static void dataset_put(struct dataset *d, const char *key, const char *value) {
  uint64_t h = hash_str(key);
  for (size_t i = h & d->mask;; i = (i + 1) & d->mask) {
    struct entry *e = &d->slots[i];
    if (e->hash == 0) {
      *e = (struct entry){h, key, value};
      d->count++;
      return;
    }
    if (e->hash == h && strcmp(e->key, key) == 0) {
      e->value = value; /* a later duplicate wins, as in a JSON object read by Python */
      return;
    }
  }
}

const char *dataset_get(const struct dataset *d, const char *key) {
  uint64_t h = hash_str(key);
  for (size_t i = h & d->mask;; i = (i + 1) & d->mask) {
    const struct entry *e = &d->slots[i];
    if (e->hash == 0)
      return NULL;
    if (e->hash == h && strcmp(e->key, key) == 0)
      return e->value;
  }
}

int dataset_builtin(struct dataset *d) {
  if (dataset_init(d, 3))
    return -ENOMEM;
  dataset_put(d, "morpheus", "Follow the white rabbit. \xf0\x9f\x90\xb0");
  dataset_put(d, "ring", "In the caves beneath the Misty Mountains. \xf0\x9f\x92\x8d");
  dataset_put(d, "\xf0\x9f\x90\xb6", "\xf0\x9f\x90\xbe Playing ball! \xf0\x9f\x8f\x90");
  return 0;
}

/* What the two passes over a dataset file need. */
struct loading {
  struct dataset *d;
  size_t members;   /* pass 1: how many */
  char bad_key[64]; /* pass 1: the first key whose value is not a string */
  char *arena;      /* pass 2: where the unescaped strings go */
  size_t used;      /* bytes of arena used */
};

static void count_entry(void *ud, const struct appmsg_json_member *m) {
  struct loading *l = ud;
  l->members++;
  if (m->type != APPMSG_JSON_STRING && !l->bad_key[0]) {
    size_t k = m->key_len < sizeof l->bad_key - 1 ? m->key_len : sizeof l->bad_key - 1;
    memcpy(l->bad_key, m->key, k); /* (still escaped: it is only for the message) */
    l->bad_key[k] = '\0';
  }
}

static void add_entry(void *ud, const struct appmsg_json_member *m) {
  struct loading *l = ud;
  char *key = l->arena + l->used;
  l->used += appmsg_json_unescape(m->key, m->key_len, key);
  l->arena[l->used++] = '\0';
  char *value = l->arena + l->used;
  l->used += appmsg_json_unescape(m->val, m->val_len, value);
  l->arena[l->used++] = '\0';
  dataset_put(l->d, key, value);
}

/* Loads a JSON object of string -> string with the library's strict
 * scanner: one pass to check and count, one to unescape every string into
 * a single arena; no tree, so a million keys cost little more than their
 * text and the table.  Prints why not and returns -1. */
int dataset_load(struct dataset *d, const char *path) {
  size_t len = 0, cap = 1 << 16;
  char *buf = malloc(cap);
  FILE *f = fopen(path, "rb");
  if (!f || !buf) {
    logf_("cannot read dataset '%s': %s", path, strerror(errno));
    free(buf);
    if (f)
      fclose(f);
    return -1;
  }
  size_t k;
  while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
    len += k;
    if (len == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        logf_("dataset '%s': out of memory", path);
        free(buf);
        fclose(f);
        return -1;
      }
      buf = nb;
    }
  }
  fclose(f);
  struct loading l = {.d = d};
  enum appmsg_json_type top;
  size_t off;
  const char *why;
  int rc = appmsg_json_scan(buf, len, 64, &top, count_entry, &l, &off, &why);
  if (rc || top != APPMSG_JSON_OBJECT || l.bad_key[0]) {
    if (rc)
      logf_("dataset '%s' is not valid JSON: %s at byte %zu", path, why, off);
    else if (top != APPMSG_JSON_OBJECT)
      logf_("dataset '%s' must be a JSON object of string keys to string values", path);
    else
      logf_("dataset '%s': the value of '%s' is not a string", path, l.bad_key);
    free(buf);
    return -1;
  }
  /* Unescaped strings are never longer than their JSON text, plus a NUL each. */
  l.arena = malloc(len + 2 * l.members + 1);
  if (dataset_init(d, l.members) || !l.arena) {
    logf_("dataset '%s': out of memory", path);
    free(buf);
    free(l.arena);
    return -1;
  }
  appmsg_json_scan(buf, len, 64, NULL, add_entry, &l, NULL, NULL);
  free(buf);
  d->arena = l.arena; /* (its unused tail is never touched, so it costs no memory) */
  return 0;
}

void dataset_free(struct dataset *d) {
  free(d->slots);
  free(d->arena);
}

void reply_no_match(struct appmsg_request *req, const char *key) {
  char stack[512], *text = stack; /* the guide's wording, however long the key */
  size_t need = strlen(key) + 32;
  if (need > sizeof stack && (text = malloc(need)) == NULL) {
    appmsg_reply_error(req, "INTERNAL", "out of memory");
    return;
  }
  snprintf(text, need, "No match for '%s'.", key);
  appmsg_reply_result(req, text);
  if (text != stack)
    free(text);
}
