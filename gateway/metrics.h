/* metrics.h — what the gateway counts, for GET /metrics (Prometheus text).
 *
 * In-process series, labelled by route, adapter ("" is shown as the base
 * model's id) and status: requests, their latency, time to first token,
 * inter-token latency, input and output tokens. At scrape time the route
 * adds what Redis knows: queue depth and pending entries per adapter
 * stream, and live workers. Adapter labels come from validated requests
 * only, so their number is bounded by LORA_ADAPTERS. */
#ifndef LORQ_GW_METRICS_H
#define LORQ_GW_METRICS_H

#include <event2/buffer.h>

#include "gateway.h"

lq_metrics *lq_metrics_new(void);
void lq_metrics_free(lq_metrics *m);

void lq_metrics_request(lq_metrics *m, const char *route, const char *adapter, int status, double seconds);
void lq_metrics_tokens(lq_metrics *m, const char *adapter, int input, int output);
void lq_metrics_first_token(lq_metrics *m, const char *adapter, double seconds);
void lq_metrics_inter_token(lq_metrics *m, const char *adapter, double seconds);

/* The in-process series as Prometheus text. */
void lq_metrics_render(const lq_metrics *m, const lq_gw *gw, struct evbuffer *out);

#endif
