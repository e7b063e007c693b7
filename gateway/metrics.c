/* metrics.c — counters and histograms, and GET /metrics (see metrics.h).
 *
 * A family is a metric name with its help text, kind and buckets; its
 * series live in a map keyed by the rendered label set
 * (`route="generate",adapter="x",status="200"`), which is also exactly
 * what the exposition format prints, so rendering is a walk over maps.
 *
 * The scrape asks Redis for the queue-side figures in one burst of
 * pipelined commands (SMEMBERS of the queues set, then XLEN and XPENDING of
 * each stream and the workers' heartbeats) and answers when the last reply
 * is in; with Redis down it answers at once with lorq_redis_up 0. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"
#include "routes.h"
#include "server.h"
#include "strmap.h"

#define MAX_BUCKETS 16

typedef enum { COUNTER, HISTOGRAM } family_kind;

typedef struct series {
    double value; /* counter */
    double sum;
    unsigned long long count, buckets[MAX_BUCKETS];
} series;

typedef struct family {
    const char *name, *help;
    family_kind kind;
    const double *bounds;
    int n_bounds;
    lq_strmap *series;
} family;

static const double LATENCY_BOUNDS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
static const double TOKEN_BOUNDS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NB(a) ((int)(sizeof a / sizeof a[0]))

enum { F_REQUESTS, F_DURATION, F_TTFT, F_ITL, F_INPUT, F_OUTPUT, N_FAMILIES };

struct lq_metrics {
    family f[N_FAMILIES];
};

lq_metrics *lq_metrics_new(void) {
    lq_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    family defs[N_FAMILIES] = {
        {"lorq_requests_total", "Requests answered, by route, adapter and HTTP status", COUNTER, NULL, 0, NULL},
        {"lorq_request_duration_seconds", "Time from a request's arrival to its answer", HISTOGRAM, LATENCY_BOUNDS,
         NB(LATENCY_BOUNDS), NULL},
        {"lorq_time_to_first_token_seconds", "Time from a request's arrival to its first token", HISTOGRAM,
         LATENCY_BOUNDS, NB(LATENCY_BOUNDS), NULL},
        {"lorq_inter_token_latency_seconds", "Time between consecutive tokens of a request", HISTOGRAM, TOKEN_BOUNDS,
         NB(TOKEN_BOUNDS), NULL},
        {"lorq_input_tokens_total", "Prompt tokens of answered requests", COUNTER, NULL, 0, NULL},
        {"lorq_output_tokens_total", "Generated tokens of answered requests", COUNTER, NULL, 0, NULL},
    };
    for (int i = 0; i < N_FAMILIES; i++) {
        m->f[i] = defs[i];
        if (!(m->f[i].series = lq_strmap_new())) {
            lq_metrics_free(m);
            return NULL;
        }
    }
    return m;
}

static void free_series(const char *key, void *val, void *arg) {
    (void)key;
    (void)arg;
    free(val);
}

void lq_metrics_free(lq_metrics *m) {
    if (!m) return;
    for (int i = 0; i < N_FAMILIES; i++) {
        if (!m->f[i].series) continue;
        lq_strmap_each(m->f[i].series, free_series, NULL);
        lq_strmap_free(m->f[i].series);
    }
    free(m);
}

/* ---- recording ---- */

/* Appends name="value" (escaped as the exposition format wants) to buf. */
static void add_label(char *buf, size_t size, const char *name, const char *value) {
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%s=\"", n ? "," : "", name);
    for (const char *p = value; *p && n + 3 < size; p++) {
        if (*p == '\\' || *p == '"') buf[n++] = '\\', buf[n++] = *p;
        else if (*p == '\n') buf[n++] = '\\', buf[n++] = 'n';
        else buf[n++] = *p;
    }
    if (n + 1 < size) buf[n++] = '"';
    buf[n < size ? n : size - 1] = 0;
}

static series *get_series(family *f, const char *labels) {
    series *s = lq_strmap_get(f->series, labels);
    if (s) return s;
    if (!(s = calloc(1, sizeof *s))) return NULL;
    if (lq_strmap_put(f->series, labels, s)) {
        free(s);
        return NULL;
    }
    return s;
}

static void observe(family *f, const char *labels, double v) {
    series *s = get_series(f, labels);
    if (!s) return;
    s->count++;
    s->sum += v;
    for (int i = 0; i < f->n_bounds; i++)
        if (v <= f->bounds[i]) s->buckets[i]++;
}

static void add(family *f, const char *labels, double v) {
    series *s = get_series(f, labels);
    if (s) s->value += v;
}

static const char *adapter_label(const char *adapter) { return adapter && adapter[0] ? adapter : "@base"; }

void lq_metrics_request(lq_metrics *m, const char *route, const char *adapter, int status, double seconds) {
    if (!m) return;
    char labels[512] = "", code[16];
    snprintf(code, sizeof code, "%d", status);
    add_label(labels, sizeof labels, "route", route);
    add_label(labels, sizeof labels, "adapter", adapter_label(adapter));
    char with_status[560];
    snprintf(with_status, sizeof with_status, "%s", labels);
    add_label(with_status, sizeof with_status, "status", code);
    add(&m->f[F_REQUESTS], with_status, 1);
    if (status < 400) observe(&m->f[F_DURATION], labels, seconds);
}

void lq_metrics_tokens(lq_metrics *m, const char *adapter, int input, int output) {
    if (!m) return;
    char labels[256] = "";
    add_label(labels, sizeof labels, "adapter", adapter_label(adapter));
    add(&m->f[F_INPUT], labels, input);
    add(&m->f[F_OUTPUT], labels, output);
}

void lq_metrics_first_token(lq_metrics *m, const char *adapter, double seconds) {
    if (!m) return;
    char labels[256] = "";
    add_label(labels, sizeof labels, "adapter", adapter_label(adapter));
    observe(&m->f[F_TTFT], labels, seconds);
}

void lq_metrics_inter_token(lq_metrics *m, const char *adapter, double seconds) {
    if (!m) return;
    char labels[256] = "";
    add_label(labels, sizeof labels, "adapter", adapter_label(adapter));
    observe(&m->f[F_ITL], labels, seconds);
}

/* ---- rendering ---- */

typedef struct render_ctx {
    const family *f;
    struct evbuffer *out;
} render_ctx;

static void render_series(const char *labels, void *val, void *arg) {
    render_ctx *c = arg;
    const series *s = val;
    const char *name = c->f->name;
    if (c->f->kind == COUNTER) {
        evbuffer_add_printf(c->out, "%s{%s} %.17g\n", name, labels, s->value);
        return;
    }
    for (int i = 0; i < c->f->n_bounds; i++)
        evbuffer_add_printf(c->out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, c->f->bounds[i], s->buckets[i]);
    evbuffer_add_printf(c->out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, s->count);
    evbuffer_add_printf(c->out, "%s_sum{%s} %.17g\n%s_count{%s} %llu\n", name, labels, s->sum, name, labels, s->count);
}

void lq_metrics_render(const lq_metrics *m, const lq_gw *gw, struct evbuffer *out) {
    (void)gw;
    for (int i = 0; i < N_FAMILIES; i++) {
        const family *f = &m->f[i];
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                            f->kind == COUNTER ? "counter" : "histogram");
        render_ctx c = {f, out};
        lq_strmap_each(f->series, render_series, &c);
    }
}

/* ---- GET /metrics ---- */

typedef struct scrape {
    lq_gw *gw;
    struct evhttp_request *req;
    int pending;
    int redis_ok;
    int n_streams;
    char **adapters; /* per stream: its adapter id */
    long long *xlen, *xpending;
    long long workers_live;
} scrape;

static void gauge(struct evbuffer *out, const char *name, const char *help, double v) {
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void render_queues(const scrape *sc, struct evbuffer *out) {
    const char *names[2] = {"lorq_queue_depth", "lorq_queue_pending"};
    const char *help[2] = {"Entries in an adapter's stream (XLEN): waiting or being worked on",
                           "Entries delivered to a worker and not yet acknowledged (XPENDING)"};
    for (int k = 0; k < 2; k++) {
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", names[k], help[k], names[k]);
        for (int i = 0; i < sc->n_streams; i++) {
            char labels[300] = "";
            add_label(labels, sizeof labels, "adapter", adapter_label(sc->adapters[i]));
            long long v = k ? sc->xpending[i] : sc->xlen[i];
            if (v >= 0) evbuffer_add_printf(out, "%s{%s} %lld\n", names[k], labels, v);
        }
    }
}

static void scrape_free(scrape *sc) {
    for (int i = 0; i < sc->n_streams; i++) free(sc->adapters[i]);
    free(sc->adapters);
    free(sc->xlen);
    free(sc->xpending);
    free(sc);
}

static void scrape_answer(scrape *sc) {
    lq_gw *gw = sc->gw;
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        evhttp_send_error(sc->req, 500, "out of memory");
        scrape_free(sc);
        return;
    }
    lq_metrics_render(gw->metrics, gw, out);
    gauge(out, "lorq_requests_in_flight", "Generation requests being answered now", gw->in_flight);
    gauge(out, "lorq_subscriptions", "Job channels this gateway listens to", (double)lq_rc_subscriptions(gw->rc));
    gauge(out, "lorq_redis_up", "1 when both Redis connections are up", sc->redis_ok && lq_rc_up(gw->rc));
    if (sc->redis_ok) {
        render_queues(sc, out);
        gauge(out, "lorq_workers_live", "Workers with a live heartbeat", (double)sc->workers_live);
    }
    evhttp_add_header(evhttp_request_get_output_headers(sc->req), "Content-Type", "text/plain; version=0.0.4");
    evhttp_send_reply(sc->req, 200, "OK", out);
    evbuffer_free(out);
    scrape_free(sc);
}

static void scrape_done_one(scrape *sc) {
    if (--sc->pending == 0) scrape_answer(sc);
}

/* Replies that update one slot of the scrape carry (scrape, index). */
typedef struct slot {
    scrape *sc;
    int i;
} slot;

static void on_xlen(redisReply *reply, void *priv) {
    slot *s = priv;
    if (reply && reply->type == REDIS_REPLY_INTEGER) s->sc->xlen[s->i] = reply->integer;
    scrape_done_one(s->sc);
    free(s);
}

static void on_xpending(redisReply *reply, void *priv) {
    slot *s = priv;
    /* XPENDING key group (summary form): [count, min id, max id, consumers]. */
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER)
        s->sc->xpending[s->i] = reply->element[0]->integer;
    scrape_done_one(s->sc);
    free(s);
}

static void send_slot(scrape *sc, int i, lq_rc_reply_fn fn, int argc, const char **argv) {
    slot *s = malloc(sizeof *s);
    size_t lens[4];
    for (int k = 0; k < argc; k++) lens[k] = strlen(argv[k]);
    if (!s) return;
    s->sc = sc;
    s->i = i;
    sc->pending++;
    if (lq_rc_command(sc->gw->rc, fn, s, argc, argv, lens)) {
        sc->pending--;
        free(s);
    }
}

static void on_workers_exist(redisReply *reply, void *priv) {
    scrape *sc = priv;
    if (reply && reply->type == REDIS_REPLY_INTEGER) sc->workers_live = reply->integer;
    scrape_done_one(sc);
}

/* Heartbeat keys expire after 5 s: the workers whose key still exists are alive. */
static void on_workers(redisReply *reply, void *priv) {
    scrape *sc = priv;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements) {
        size_t n = reply->elements;
        const char **argv = malloc((n + 1) * sizeof *argv);
        size_t *lens = malloc((n + 1) * sizeof *lens);
        char (*keys)[LQ_KEY_MAX] = malloc(n * sizeof *keys);
        if (argv && lens && keys) {
            argv[0] = "EXISTS";
            lens[0] = 6;
            for (size_t i = 0; i < n; i++) {
                const char *wid = reply->element[i]->type == REDIS_REPLY_STRING ? reply->element[i]->str : "";
                argv[i + 1] = lq_key_worker(sc->gw->names, wid, keys[i]);
                lens[i + 1] = strlen(argv[i + 1]);
            }
            sc->pending++;
            if (lq_rc_command(sc->gw->rc, on_workers_exist, sc, (int)n + 1, argv, lens)) sc->pending--;
        }
        free(argv);
        free(lens);
        free(keys);
    }
    scrape_done_one(sc);
}

static void on_queues(redisReply *reply, void *priv) {
    scrape *sc = priv;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        sc->redis_ok = 0;
        scrape_done_one(sc);
        return;
    }
    size_t n = reply->elements;
    sc->adapters = calloc(n ? n : 1, sizeof *sc->adapters);
    sc->xlen = malloc((n ? n : 1) * sizeof *sc->xlen);
    sc->xpending = malloc((n ? n : 1) * sizeof *sc->xpending);
    if (!sc->adapters || !sc->xlen || !sc->xpending) n = 0;
    for (size_t i = 0; i < n; i++) {
        char buf[LQ_KEY_MAX];
        const char *key = reply->element[i]->type == REDIS_REPLY_STRING ? reply->element[i]->str : "";
        const char *adapter = lq_key_queue_adapter(sc->gw->names, key, buf);
        if (!adapter || !(sc->adapters[sc->n_streams] = strdup(adapter))) continue;
        int k = sc->n_streams++;
        sc->xlen[k] = sc->xpending[k] = -1;
        const char *xlen[2] = {"XLEN", key}, *xpending[3] = {"XPENDING", key, LQ_GROUP};
        send_slot(sc, k, on_xlen, 2, xlen);
        send_slot(sc, k, on_xpending, 3, xpending);
    }
    scrape_done_one(sc);
}

void lq_route_metrics(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    scrape *sc = calloc(1, sizeof *sc);
    if (!sc) {
        lq_http_error(req, 500, "internal", "out of memory");
        return;
    }
    sc->gw = gw;
    sc->req = req;
    sc->redis_ok = 1;
    char k_queues[LQ_KEY_MAX], k_workers[LQ_KEY_MAX];
    const char *q[2] = {"SMEMBERS", lq_key_queues(gw->names, k_queues)};
    const char *w[4] = {"ZRANGE", lq_key_workers(gw->names, k_workers), "0", "-1"};
    size_t qlens[2] = {8, strlen(q[1])}, wlens[4] = {6, strlen(w[1]), 1, 2};
    sc->pending = 2;
    if (lq_rc_command(gw->rc, on_queues, sc, 2, q, qlens)) {
        sc->redis_ok = 0;
        sc->pending--;
    }
    if (lq_rc_command(gw->rc, on_workers, sc, 4, w, wlens)) sc->pending--;
    if (sc->pending == 0) {
        sc->redis_ok = 0;
        scrape_answer(sc);
    }
}
