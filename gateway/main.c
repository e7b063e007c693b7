/* main.c — lorq-gateway: configuration, start-up, the event loop, shutdown.
 *
 * Start-up does everything that can fail because of configuration before
 * opening the port: the settings (exit 2 naming the bad one), the model
 * folder (a hub id is downloaded), its tokenizer and chat template (a
 * template this interpreter cannot render stops the gateway here, not on
 * the first chat request), the Lua scripts. Redis need not be up: the
 * client keeps reconnecting, and requests meanwhile get a 503.
 *
 * SIGTERM or SIGINT stops accepting connections and lets the requests in
 * flight finish (at most DRAIN_S seconds); a second signal stops at once. */
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "gateway.h"
#include "hub.h"
#include "known.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

#define DRAIN_S 30

static int fail_start(const char *what, const char *msg, int code) {
    fprintf(stderr, "lorq-gateway: %s%s%s\n", what, *what ? ": " : "", msg);
    return code;
}

/* max_position_embeddings from config.json (0 when absent). */
static int model_max_positions(const char *dir) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *cfg = json_load_file(path, 0, NULL);
    json_t *v = json_object_get(cfg, "max_position_embeddings");
    int n = json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < (1 << 30)
                ? (int)json_integer_value(v)
                : 0;
    json_decref(cfg);
    return n;
}

static void set_model_name(lq_gw *gw) {
    const char *dir = gw->cfg.model_dir;
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t start = n;
    while (start && dir[start - 1] != '/') start--;
    snprintf(gw->model_name, sizeof gw->model_name, "%.*s", (int)(n - start), dir + start);
}

static int load_model(lq_gw *gw) {
    lq_error err = {{0}};
    if (lq_resolve_source(gw->cfg.model_id, LQ_HUB_MODEL, gw->cfg.model_dir, sizeof gw->cfg.model_dir, &err))
        return fail_start("MODEL_ID", err.msg, 2);
    if (lq_gw_config_finish(&gw->cfg, model_max_positions(gw->cfg.model_dir), &err)) return fail_start("", err.msg, 2);
    if (!(gw->tok = tok_load(gw->cfg.model_dir, &err))) return fail_start("tokenizer", err.msg, 2);
    if (!(gw->chat = lq_chat_load(gw->cfg.model_dir, &err))) return fail_start("chat template", err.msg, 2);
    if (!lq_chat_available(gw->chat))
        snprintf(gw->chat_error, sizeof gw->chat_error, "%.400s has no chat_template", gw->cfg.model_dir);
    set_model_name(gw);
    return 0;
}

static void fill_limits(lq_gw *gw) {
    lq_gw_limits *l = &gw->limits;
    l->max_input_tokens = gw->cfg.max_input_tokens;
    l->max_total_tokens = gw->cfg.max_total_tokens;
    l->max_stop_sequences = gw->cfg.max_stop_sequences;
    l->max_top_n_tokens = gw->cfg.max_top_n_tokens;
    l->model_id = gw->cfg.model_id;
    l->model_name = gw->model_name;
    l->adapters = gw->cfg.adapters;
    l->n_adapters = gw->cfg.n_adapters;
    l->allow = gw->cfg.allow_adapters;
}

static int connect_redis(lq_gw *gw) {
    lq_error err = {{0}};
    lq_redis_opts ro = {0};
    ro.url = gw->cfg.redis_url;
    ro.prefix = gw->cfg.prefix;
    if (!(gw->names = lq_redis_new(&ro, &err))) return fail_start("REDIS_URL", err.msg, 2);
    lq_rc_opts o = {gw->cfg.redis_url, NULL};
    if (!(gw->rc = lq_rc_new(gw->base, &o, &err))) return fail_start("Redis", err.msg, 2);
    return 0;
}

/* ---- shutdown ---- */

static int stopping;
static struct event *drain_timer;
static int64_t drain_deadline_ms;

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    lq_gw *gw = arg;
    if (gw->in_flight == 0 || lq_time_ms() > drain_deadline_ms) event_base_loopexit(gw->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    lq_gw *gw = arg;
    if (stopping++) {
        event_base_loopbreak(gw->base);
        return;
    }
    lq_gw_log("signal %d: no new connections; finishing %d request(s) in flight (at most %d s)", (int)sig,
              gw->in_flight, DRAIN_S);
    /* Only the listener: evhttp_free would free requests that sessions still answer. */
    if (gw->listener) evhttp_del_accept_socket(gw->http, gw->listener);
    gw->listener = NULL;
    drain_deadline_ms = lq_time_ms() + DRAIN_S * 1000;
    drain_timer = event_new(gw->base, -1, EV_PERSIST, on_drain_tick, gw);
    struct timeval tv = {0, 100 * 1000};
    if (drain_timer) event_add(drain_timer, &tv);
}

/* Threads for long prompts: the cores the loop leaves, 1 to 4. */
static int tokenizer_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN) - 1;
    return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

static void cleanup(lq_gw *gw, struct event **sigs, int n_sigs) {
    for (int i = 0; i < n_sigs; i++)
        if (sigs[i]) event_free(sigs[i]);
    if (drain_timer) event_free(drain_timer);
    /* Redis first: pending replies (NULL now) answer their HTTP requests before evhttp frees them. */
    lq_rc_free(gw->rc);
    gw->rc = NULL;
    lq_known_free(gw->known);
    if (gw->http) evhttp_free(gw->http);
    lq_redis_free(gw->names);
    lq_tokpool_free(gw->tokpool);
    lq_metrics_free(gw->metrics);
    lq_chat_free(gw->chat);
    tok_free(gw->tok);
    if (gw->base) event_base_free(gw->base);
    lq_gw_config_free(&gw->cfg);
}

int main(int argc, char **argv) {
    static lq_gw gw;
    lq_error err = {{0}};
    if (lq_gw_config_parse(&gw.cfg, argc, argv, &err)) return fail_start("", err.msg, 2);
    if (gw.cfg.help) {
        fputs(lq_gw_usage(), stdout);
        lq_gw_config_free(&gw.cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = load_model(&gw);
    fill_limits(&gw);
    gw.started_ms = lq_time_ms();
    struct event *sigs[2] = {NULL, NULL};
    if (!rc && !(gw.base = event_base_new())) rc = fail_start("", "cannot create the event loop", 1);
    if (!rc && !(gw.metrics = lq_metrics_new())) rc = fail_start("", "out of memory", 1);
    if (!rc && !(gw.tokpool = lq_tokpool_new(gw.base, gw.tok, tokenizer_threads(), &err)))
        rc = fail_start("", err.msg, 1);
    if (!rc) rc = connect_redis(&gw);
    if (!rc && !(gw.known = lq_known_new(&gw))) rc = fail_start("", "out of memory", 1);
    if (!rc && lq_server_start(&gw, &err)) rc = fail_start("", err.msg, 1);
    if (!rc) {
        sigs[0] = evsignal_new(gw.base, SIGTERM, on_signal, &gw);
        sigs[1] = evsignal_new(gw.base, SIGINT, on_signal, &gw);
        for (int i = 0; i < 2; i++)
            if (sigs[i]) event_add(sigs[i], NULL);
        lq_gw_log("listening on %s:%d; model %s (max input %d, max total %d tokens), %d adapter(s), Redis %s",
                  gw.cfg.hostname, gw.port, gw.cfg.model_id, gw.cfg.max_input_tokens, gw.cfg.max_total_tokens,
                  gw.cfg.n_adapters, lq_redis_url_text(gw.names));
        event_base_dispatch(gw.base);
        lq_gw_log("stopped");
    }
    cleanup(&gw, sigs, 2);
    return rc;
}
