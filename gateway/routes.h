/* routes.h — the HTTP handlers server.c dispatches to, one module per API.
 * arg is the path's variable part (a job id) where the route has one. */
#ifndef LORQ_GW_ROUTES_H
#define LORQ_GW_ROUTES_H

#include <event2/http.h>

#include "gateway.h"

/* tgi.c: POST /generate, /generate_stream and / */
void lq_route_generate(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_generate_stream(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_compat(lq_gw *gw, struct evhttp_request *req, const char *arg);

/* openai.c */
void lq_route_completions(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_chat(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_models(lq_gw *gw, struct evhttp_request *req, const char *arg);

/* jobs.c */
void lq_route_job_create(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_job_get(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_job_stream(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_job_delete(lq_gw *gw, struct evhttp_request *req, const char *arg);

/* status.c: GET /health and /info */
void lq_route_health(lq_gw *gw, struct evhttp_request *req, const char *arg);
void lq_route_info(lq_gw *gw, struct evhttp_request *req, const char *arg);

/* metrics.c: GET /metrics */
void lq_route_metrics(lq_gw *gw, struct evhttp_request *req, const char *arg);

#endif
