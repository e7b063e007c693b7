/* gateway.h — the state one gateway process shares across its modules.
 *
 * There is one event loop and one thread: HTTP connections, both Redis
 * connections and every timer run on gw->base, so nothing here is locked.
 * main.c builds this struct at start-up; the route modules (tgi.c,
 * openai.c, jobs.c, status.c) read it for each request. */
#ifndef LORQ_GW_GATEWAY_H
#define LORQ_GW_GATEWAY_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdint.h>

#include "chat.h"
#include "config.h"
#include "rclient.h"
#include "redis.h"
#include "tokenizer.h"
#include "tokpool.h"
#include "validate.h"

typedef struct lq_metrics lq_metrics;
typedef struct lq_known lq_known;

typedef struct lq_gw {
    lq_gw_config cfg;
    lq_gw_limits limits;
    char model_name[256]; /* the model folder's last path component */
    lq_tokenizer *tok;
    lq_tokpool *tokpool; /* long prompts are tokenized there, off the loop */
    lq_chat_template *chat; /* NULL: the model has no usable chat template */
    char chat_error[512];   /* why chat is NULL */
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    int port; /* the port bound (PORT=0 picks one) */
    lq_rc *rc;
    lq_redis *names; /* key names under the prefix (never connected) */
    lq_metrics *metrics;
    lq_known *known; /* adapters resident in workers (known.c) */
    int in_flight; /* generation requests being answered now (MAX_CONCURRENT_REQUESTS) */
    int64_t started_ms;
} lq_gw;

/* A fresh job id: <created_ms in hex>-<16 random hex> (docs/protocol.md). */
void lq_gw_new_job_id(int64_t now_ms, char out[LQ_JOB_ID_MAX + 1]);

#endif
