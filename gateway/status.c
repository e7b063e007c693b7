/* status.c — GET /health and GET /info.
 *
 * Healthy means able to serve: both Redis connections up and at least one
 * worker whose heartbeat key (which expires 5 s after its last beat) still
 * exists. Checking the key rather than comparing the heartbeat's timestamp
 * with this machine's clock keeps clock skew between hosts out of it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "known.h"
#include "routes.h"
#include "server.h"

static void on_live(redisReply *reply, void *priv) {
    struct evhttp_request *req = priv;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        lq_http_error(req, 503, "unhealthy", "Redis did not answer the health check");
    } else if (reply->integer < 1) {
        lq_http_error(req, 503, "unhealthy", "no live worker: no heartbeat in the last 5 seconds");
    } else {
        lq_http_send_json(req, 200, json_pack("{s:s, s:I}", "status", "ok", "workers", (json_int_t)reply->integer));
    }
}

typedef struct health_req {
    lq_gw *gw;
    struct evhttp_request *req;
} health_req;

static void on_recent(redisReply *reply, void *priv) {
    health_req *h = priv;
    struct evhttp_request *req = h->req;
    lq_gw *gw = h->gw;
    free(h);
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        lq_http_error(req, 503, "unhealthy", "Redis did not answer the health check");
        return;
    }
    if (!reply->elements) {
        lq_http_error(req, 503, "unhealthy", "no live worker: none has registered a heartbeat");
        return;
    }
    size_t n = reply->elements < LQ_GW_RECENT_WORKERS ? reply->elements : LQ_GW_RECENT_WORKERS;
    const char *argv[LQ_GW_RECENT_WORKERS + 1];
    size_t lens[LQ_GW_RECENT_WORKERS + 1];
    char keys[LQ_GW_RECENT_WORKERS][LQ_KEY_MAX];
    argv[0] = "EXISTS";
    lens[0] = 6;
    for (size_t i = 0; i < n; i++) {
        const char *wid = reply->element[i]->type == REDIS_REPLY_STRING ? reply->element[i]->str : "";
        argv[i + 1] = lq_key_worker(gw->names, wid, keys[i]);
        lens[i + 1] = strlen(argv[i + 1]);
    }
    if (lq_rc_command(gw->rc, on_live, req, (int)n + 1, argv, lens))
        lq_http_error(req, 503, "unhealthy", "Redis is unreachable");
}

void lq_route_health(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    if (!lq_rc_up(gw->rc)) {
        lq_http_error(req, 503, "unhealthy", "Redis is unreachable");
        return;
    }
    health_req *h = malloc(sizeof *h);
    if (!h) {
        lq_http_error(req, 500, "internal", "out of memory");
        return;
    }
    h->gw = gw;
    h->req = req;
    if (lq_gw_recent_workers(gw, on_recent, h)) {
        free(h);
        lq_http_error(req, 503, "unhealthy", "Redis is unreachable");
    }
}

void lq_route_info(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    const lq_gw_config *c = &gw->cfg;
    json_t *adapters = lq_known_ids(gw);
    json_t *info = json_pack(
        "{s:s, s:n, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:n, s:n, s:o, s:{s:s, s:I, s:i}}",
        "model_id", c->model_id, "model_sha", "model_pipeline_tag", "text-generation", "model_device_type", "worker pool",
        "max_concurrent_requests", c->max_concurrent_requests, "max_best_of", 1, "max_stop_sequences",
        c->max_stop_sequences, "max_input_tokens", c->max_input_tokens, "max_input_length", c->max_input_tokens,
        "max_total_tokens", c->max_total_tokens, "max_top_n_tokens", c->max_top_n_tokens, "validation_workers", 1,
        "max_client_batch_size", 1, "router", "lorq-gateway", "version", LQ_GW_VERSION, "sha", "docker_label",
        "adapters", adapters, "lorq", "prefix", c->prefix, "result_ttl_s", (json_int_t)(c->result_ttl_ms / 1000),
        "request_timeout_s", c->request_timeout_s);
    lq_http_send_json(req, 200, info);
}
