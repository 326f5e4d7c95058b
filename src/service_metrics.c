/*
 * The service's metrics in the Prometheus text format 0.0.4 (see
 * appmsg_service_metrics_listen() in include/appmsg/service.h): base units
 * (seconds, bytes), counters named _total, histograms as _bucket{le},
 * _sum and _count, a # HELP and # TYPE line before each family, every
 * value summed over the service's group.  Label values come from bounded
 * sets only: the actions the application registered (an unknown action
 * counts under "_unknown") and the error names the service counts (at
 * most 64, then "OTHER").
 */
#include <stdio.h>
#include <string.h>

#include "service_internal.h"

/* A metric family's # HELP and # TYPE lines. */
static void family(struct appmsg__text *t, const char *name, const char *type, const char *help) {
  appmsg__text_addf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct appmsg__text *t, const char *name, unsigned long long v) {
  appmsg__text_addf(t, "%s %llu\n", name, v);
}

void appmsg__svc_metrics_text(struct appmsg_service *s, struct appmsg__text *t) {
  struct appmsg_service_stats st;
  appmsg_service_stats_total(s, &st);
  family(t, "appmsg_build_info", "gauge", "The appmsg library's version (always 1).");
  appmsg__text_addf(t, "appmsg_build_info{version=\"%s\"} 1\n", appmsg_version());
  family(t, "appmsg_uptime_seconds", "gauge", "Seconds since the service started.");
  appmsg__text_addf(t, "appmsg_uptime_seconds %.3f\n", (double)st.uptime_ms / 1000.0);
  family(t, "appmsg_connections", "gauge", "Connections open now.");
  sample(t, "appmsg_connections", st.connections);
  family(t, "appmsg_connections_accepted_total", "counter", "Connections accepted.");
  sample(t, "appmsg_connections_accepted_total", st.connections_total);
  family(t, "appmsg_replies_total", "counter", "Replies sent, error replies included.");
  sample(t, "appmsg_replies_total", st.replies);
  family(t, "appmsg_pending_requests", "gauge", "Requests owed a reply now.");
  sample(t, "appmsg_pending_requests", st.pending);
  family(t, "appmsg_received_bytes_total", "counter", "Bytes received.");
  sample(t, "appmsg_received_bytes_total", st.bytes_in);
  family(t, "appmsg_sent_bytes_total", "counter", "Bytes sent.");
  sample(t, "appmsg_sent_bytes_total", st.bytes_out);
}
