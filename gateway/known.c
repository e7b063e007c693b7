/* known.c — the adapters the gateway can name in /info and /v1/models:
 * those LORA_ADAPTERS configures, then those resident in live workers.
 *
 * With just-in-time loading (LORQ_ALLOW_ADAPTERS) the workers hold adapters
 * the gateway was never told about; their heartbeats list them (field
 * `adapters` of P worker:<id>). Reading those on every /v1/models would make
 * a listing wait for Redis, so a timer refreshes a copy every two seconds:
 * the most recent heartbeats (as /health), then one HGET per worker, and the copy is swapped in
 * when the last reply is in. A listing may be two seconds old, which is what
 * a heartbeat is anyway. */
#include "known.h"

#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "server.h"

enum { REFRESH_MS = 2000 };

struct lq_known {
    lq_gw *gw;
    struct event *timer;
    char **ids; /* resident somewhere, sorted, without the configured ones */
    int n;
    int refreshing;
};

typedef struct round {
    lq_known *k;
    int pending;
    char **ids;
    int n, cap;
} round;

static void free_ids(char **ids, int n) {
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static int configured(const lq_gw *gw, const char *id) {
    for (int i = 0; i < gw->cfg.n_adapters; i++)
        if (!strcmp(gw->cfg.adapters[i], id)) return 1;
    return 0;
}

static void add_id(round *r, const char *id, size_t len) {
    char buf[LQ_ADAPTER_ID_MAX + 1];
    if (len == 0 || len > LQ_ADAPTER_ID_MAX) return;
    memcpy(buf, id, len);
    buf[len] = 0;
    if (!lq_adapter_id_valid(buf) || configured(r->k->gw, buf)) return;
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->ids[i], buf)) return;
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        char **p = realloc(r->ids, sizeof *p * (size_t)cap);
        if (!p) return;
        r->ids = p;
        r->cap = cap;
    }
    if ((r->ids[r->n] = strdup(buf))) r->n++;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void round_done(round *r) {
    lq_known *k = r->k;
    if (r->n > 1) qsort(r->ids, (size_t)r->n, sizeof *r->ids, cmp_str);
    free_ids(k->ids, k->n);
    k->ids = r->ids;
    k->n = r->n;
    k->refreshing = 0;
    free(r);
}

static void on_adapters(redisReply *reply, void *priv) {
    round *r = priv;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        const char *p = reply->str, *end = reply->str + reply->len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            size_t len = comma ? (size_t)(comma - p) : (size_t)(end - p);
            add_id(r, p, len);
            p += len + 1;
        }
    }
    if (--r->pending == 0) round_done(r);
}

static void on_workers(redisReply *reply, void *priv) {
    lq_known *k = priv;
    int listed = reply && reply->type == REDIS_REPLY_ARRAY;
    round *r = listed && lq_rc_up(k->gw->rc) ? calloc(1, sizeof *r) : NULL;
    if (!r) { /* keep the last copy until Redis answers */
        k->refreshing = 0;
        return;
    }
    r->k = k;
    r->pending = 1; /* held until every HGET is sent; with no worker, the round ends empty at once */
    for (size_t i = 0; i < reply->elements && i < LQ_GW_RECENT_WORKERS; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) continue;
        char key[LQ_KEY_MAX];
        const char *argv[3] = {"HGET", lq_key_worker(k->gw->names, reply->element[i]->str, key), "adapters"};
        size_t lens[3] = {4, strlen(argv[1]), 8};
        r->pending++;
        if (lq_rc_command(k->gw->rc, on_adapters, r, 3, argv, lens)) r->pending--;
    }
    if (--r->pending == 0) round_done(r);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    lq_known *k = arg;
    if (k->refreshing || !lq_rc_up(k->gw->rc)) return;
    k->refreshing = 1;
    if (lq_gw_recent_workers(k->gw, on_workers, k)) k->refreshing = 0;
}

lq_known *lq_known_new(lq_gw *gw) {
    lq_known *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->gw = gw;
    k->timer = event_new(gw->base, -1, EV_PERSIST, on_timer, k);
    struct timeval tv = {REFRESH_MS / 1000, (REFRESH_MS % 1000) * 1000};
    if (!k->timer || event_add(k->timer, &tv)) {
        lq_known_free(k);
        return NULL;
    }
    return k;
}

void lq_known_free(lq_known *k) {
    if (!k) return;
    if (k->timer) event_free(k->timer);
    free_ids(k->ids, k->n);
    free(k);
}

json_t *lq_known_ids(const lq_gw *gw) {
    json_t *a = json_array();
    for (int i = 0; i < gw->cfg.n_adapters; i++) json_array_append_new(a, json_string(gw->cfg.adapters[i]));
    const lq_known *k = gw->known;
    for (int i = 0; k && i < k->n; i++) json_array_append_new(a, json_string(k->ids[i]));
    return a;
}
