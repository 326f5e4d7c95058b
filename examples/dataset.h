/*
 * The app-server's dataset: a read-only table of string keys to string
 * values - the guide's three entries built in, or a JSON object loaded
 * from a file.  Once loaded it is never written, so any number of threads
 * may read it at once.
 */
#ifndef APPMSG_EXAMPLES_DATASET_H
#define APPMSG_EXAMPLES_DATASET_H

#include <stddef.h>
#include <stdint.h>

struct entry {
  uint64_t hash;     /* 0 marks an empty slot */
  const char *key;   /* NUL-terminated UTF-8 */
  const char *value; /* NUL-terminated UTF-8 */
};

struct dataset {
  struct entry *slots; /* open addressing */
  size_t mask;         /* slot count - 1, a power of two minus one */
  size_t count;        /* keys */
  char *arena;         /* owns the strings of a loaded file */
};

/* The guide's three entries.  0 or -ENOMEM. */
int dataset_builtin(struct dataset *d);

/* Loads a JSON object of string keys to string values from path with the
 * library's strict scanner (no tree: a million keys cost little more than
 * their text).  Logs why not and returns -1. */
int dataset_load(struct dataset *d, const char *path);

/* The value for key, or NULL: one hash probe. */
const char *dataset_get(const struct dataset *d, const char *key);

void dataset_free(struct dataset *d);

struct appmsg_request;

/* Answers req with the guide's {"result": "No match for 'KEY'."}. */
void reply_no_match(struct appmsg_request *req, const char *key);

#endif
