/*
 * metrics_demo: a service with a few actions and its HTTP endpoint, for the status page's test
 * (test_page.py).  Built for the tests only.
 *
 *   metrics_demo HOST PORT METRICS_PORT
 *
 * Actions: "get" answers at once, "fail" answers with the error NOT_FOUND, "slow" answers after
 * "ms" milliseconds (a timer).  Prints "appmsg HOST:PORT" and "http HOST:PORT" once both listen
 * (ports "0": the system's choice), logs to stderr, and runs until SIGINT or SIGTERM.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "appmsg/appmsg.h"

static void on_get(struct appmsg_request *r, void *ud) {
  (void)ud;
  appmsg_reply_result(r, "got it");
}

static void on_fail(struct appmsg_request *r, void *ud) {
  (void)ud;
  appmsg_reply_error(r, "NOT_FOUND", "nothing here");
}

struct later {
  struct appmsg_timer t;
  struct appmsg_request *r;
};

static void answer_later(struct appmsg_loop *loop, struct appmsg_timer *t, void *ud) {
  (void)loop;
  (void)t;
  struct later *l = ud;
  appmsg_reply_result(l->r, "late");
  free(l);
}

static void on_slow(struct appmsg_request *r, void *ud) {
  (void)ud;
  long long ms = 5;
  appmsg_request_int(r, "ms", &ms);
  struct later *l = malloc(sizeof *l);
  if (l == NULL) {
    appmsg_reply_error(r, "INTERNAL", "out of memory");
    return;
  }
  l->r = r;
  appmsg_timer_init(&l->t, answer_later, l);
  appmsg_timer_start(appmsg_service_loop(appmsg_request_service(r)), &l->t,
                     ms < 0 ? 0 : (uint64_t)ms, 0);
}

static void log_line(void *ud, enum appmsg_log_level level, const char *line) {
  (void)ud;
  (void)level;
  fprintf(stderr, "%s\n", line);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: metrics_demo HOST PORT METRICS_PORT\n");
    return 2;
  }
  struct appmsg_service_opts o;
  appmsg_service_opts_default(&o);
  o.log = log_line;
  o.log_level = APPMSG_LOG_INFO;
  struct appmsg_service *s;
  char err[256];
  int rc = appmsg_service_new(&s, NULL, &o);
  if (rc == 0)
    rc = appmsg_service_handle(s, "get", on_get, NULL);
  if (rc == 0)
    rc = appmsg_service_handle(s, "fail", on_fail, NULL);
  if (rc == 0)
    rc = appmsg_service_handle(s, "slow", on_slow, NULL);
  if (rc) {
    fprintf(stderr, "metrics_demo: %s\n", appmsg_strerror(rc));
    return 1;
  }
  if (appmsg_service_listen(s, argv[1], argv[2], err, sizeof err) != 0 ||
      appmsg_service_metrics_listen(s, argv[1], argv[3], err, sizeof err) != 0) {
    fprintf(stderr, "metrics_demo: %s\n", err);
    appmsg_service_free(s);
    return 1;
  }
  printf("appmsg %s\n", appmsg_service_address(s));
  printf("http %s\n", appmsg_service_metrics_address(s));
  fflush(stdout);
  rc = appmsg_service_run(s, 2000);
  appmsg_service_free(s);
  return rc < 0 ? 1 : 0;
}
