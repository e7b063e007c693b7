/* cluster.c — the worker pool's snapshot from Redis (see cluster.h).
 *
 * Backlog comes from XINFO GROUPS (Redis 7): `lag` is what the group has not
 * been given yet, `pending` what it was given and has not acknowledged.
 * Redis reports a nil lag when entries were deleted in a way it cannot count
 * around; since workers delete every entry they finish (XACK + XDEL), the
 * stream length minus pending is the same number, so that is the fallback.
 *
 * Heartbeats: `P workers` lists worker ids by last beat; a member whose hash
 * has expired is a dead worker and is skipped (and pruned once it is clearly
 * stale, so the set does not grow with every worker that ever ran). */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STALE_PRUNE_MS 15000

void lq_cluster_free(lq_cluster *c) {
    free(c->streams);
    free(c->workers);
    memset(c, 0, sizeof *c);
}

/* Value of field `name` in a flat [field, value, ...] array reply. */
static const redisReply *field(const redisReply *flat, const char *name) {
    if (!flat || flat->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < flat->elements; i += 2) {
        const redisReply *k = flat->element[i];
        if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) && !strcmp(k->str, name))
            return flat->element[i + 1];
    }
    return NULL;
}

/* An integer reply or a string holding one; dflt otherwise. */
static long long as_int(const redisReply *v, long long dflt) {
    if (!v) return dflt;
    if (v->type == REDIS_REPLY_INTEGER) return v->integer;
    if (v->type == REDIS_REPLY_STRING) return strtoll(v->str, NULL, 10);
    return dflt;
}

static double as_double(const redisReply *v) {
    return v && v->type == REDIS_REPLY_STRING ? strtod(v->str, NULL) : 0;
}

static void as_text(const redisReply *v, char *buf, size_t size) {
    snprintf(buf, size, "%s", v && v->type == REDIS_REPLY_STRING ? v->str : "");
}

/* Fills lag and pending of one stream from its XINFO GROUPS and XLEN replies. */
static void stream_from_replies(lq_stream_stat *s, const redisReply *groups, const redisReply *xlen) {
    s->length = as_int(xlen, 0);
    const redisReply *ours = NULL;
    if (groups && groups->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < groups->elements && !ours; i++) {
            const redisReply *name = field(groups->element[i], "name");
            if (name && name->type == REDIS_REPLY_STRING && !strcmp(name->str, LQ_GROUP)) ours = groups->element[i];
        }
    if (!ours) { /* no group yet: nothing delivered */
        s->lag = s->length;
        s->pending = 0;
        return;
    }
    s->pending = as_int(field(ours, "pending"), 0);
    const redisReply *lag = field(ours, "lag");
    if (lag && lag->type == REDIS_REPLY_INTEGER) {
        s->lag = lag->integer;
    } else {
        s->lag = s->length > s->pending ? s->length - s->pending : 0;
        s->lag_estimated = 1;
    }
}

/* Reads n replies of a pipeline into reps; -1 (connection marked down) on failure. */
static int read_replies(lq_redis *r, redisReply **reps, int n, lq_error *err) {
    redisContext *ctx = lq_redis_ctx(r);
    for (int i = 0; i < n; i++) {
        void *rep = NULL;
        if (redisGetReply(ctx, &rep) != REDIS_OK) {
            lq_fail(err, "redis: %s", ctx->errstr[0] ? ctx->errstr : "connection lost");
            lq_redis_mark_down(r);
            return -1;
        }
        reps[i] = rep;
    }
    return 0;
}

static void free_replies(redisReply **reps, int n) {
    for (int i = 0; i < n; i++)
        if (reps[i]) freeReplyObject(reps[i]);
}

static int read_streams(lq_redis *r, lq_cluster *c, lq_error *err) {
    char key[LQ_KEY_MAX];
    redisReply *members = lq_redis_cmd(r, err, "SMEMBERS %s", lq_key_queues(r, key));
    if (!members) return -1;
    int rc = 0, n = members->type == REDIS_REPLY_ARRAY ? (int)members->elements : 0;
    redisReply **reps = calloc((size_t)n * 2 + 1, sizeof *reps);
    c->streams = calloc((size_t)n + 1, sizeof *c->streams);
    if (!reps || !c->streams) {
        rc = lq_fail(err, "out of memory");
        goto done;
    }
    redisContext *ctx = lq_redis_ctx(r);
    for (int i = 0; i < n; i++) {
        const char *k = members->element[i]->str;
        redisAppendCommand(ctx, "XINFO GROUPS %s", k);
        redisAppendCommand(ctx, "XLEN %s", k);
    }
    if ((rc = read_replies(r, reps, n * 2, err))) goto done;
    for (int i = 0; i < n; i++) {
        lq_stream_stat *s = &c->streams[c->n_streams];
        if (!lq_key_queue_adapter(r, members->element[i]->str, s->adapter)) continue;
        stream_from_replies(s, reps[2 * i], reps[2 * i + 1]);
        c->lag += s->lag;
        c->pending += s->pending;
        c->n_streams++;
    }
done:
    if (reps) free_replies(reps, n * 2);
    free(reps);
    freeReplyObject(members);
    return rc;
}

static void worker_from_hash(lq_worker_stat *w, const redisReply *h) {
    as_text(field(h, "id"), w->id, sizeof w->id);
    as_text(field(h, "host"), w->host, sizeof w->host);
    as_text(field(h, "state"), w->state, sizeof w->state);
    w->pid = (long)as_int(field(h, "pid"), 0);
    w->running = (int)as_int(field(h, "running"), 0);
    w->capacity = (int)as_int(field(h, "capacity"), 0);
    w->tokens_per_s = as_double(field(h, "tokens_per_s"));
    w->seen_ms = as_int(field(h, "seen_ms"), 0);
}

/* Removes members whose heartbeat expired long ago; a failure here is harmless. */
static void prune_stale(lq_redis *r, const char *set_key) {
    lq_error ignored;
    long long cutoff = (long long)lq_time_ms() - STALE_PRUNE_MS;
    redisReply *rep = lq_redis_cmd(r, &ignored, "ZREMRANGEBYSCORE %s -inf %lld", set_key, cutoff);
    if (rep) freeReplyObject(rep);
}

static void count_worker(lq_cluster *c, const lq_worker_stat *w) {
    if (!strcmp(w->state, "draining")) {
        c->draining++;
        return;
    }
    c->serving++;
    c->running += w->running;
    c->capacity += w->capacity;
}

static int read_workers(lq_redis *r, lq_cluster *c, lq_error *err) {
    char set_key[LQ_KEY_MAX], key[LQ_KEY_MAX];
    redisReply *ids = lq_redis_cmd(r, err, "ZRANGE %s 0 -1", lq_key_workers(r, set_key));
    if (!ids) return -1;
    int rc = 0, n = ids->type == REDIS_REPLY_ARRAY ? (int)ids->elements : 0, stale = 0;
    redisReply **reps = calloc((size_t)n + 1, sizeof *reps);
    c->workers = calloc((size_t)n + 1, sizeof *c->workers);
    if (!reps || !c->workers) {
        rc = lq_fail(err, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) redisAppendCommand(lq_redis_ctx(r), "HGETALL %s", lq_key_worker(r, ids->element[i]->str, key));
    if ((rc = read_replies(r, reps, n, err))) goto done;
    for (int i = 0; i < n; i++) {
        if (reps[i]->type != REDIS_REPLY_ARRAY || reps[i]->elements == 0) {
            stale++;
            continue;
        }
        lq_worker_stat *w = &c->workers[c->n_workers++];
        worker_from_hash(w, reps[i]);
        count_worker(c, w);
    }
    if (stale) prune_stale(r, set_key);
done:
    if (reps) free_replies(reps, n);
    free(reps);
    freeReplyObject(ids);
    return rc;
}

int lq_cluster_read(lq_redis *r, lq_cluster *c, lq_error *err) {
    memset(c, 0, sizeof *c);
    if (!lq_redis_up(r)) return lq_fail(err, "redis %s: not connected", lq_redis_url_text(r));
    if (read_streams(r, c, err) || read_workers(r, c, err)) {
        lq_cluster_free(c);
        return -1;
    }
    return 0;
}

void lq_cluster_streams_text(const lq_cluster *c, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < c->n_streams && len + 1 < size; i++) {
        const lq_stream_stat *s = &c->streams[i];
        if (!s->lag && !s->pending) continue;
        int w = snprintf(buf + len, size - len, "%s%s=%lld+%lld", len ? " " : "", s->adapter[0] ? s->adapter : "@base",
                         s->lag, s->pending);
        if (w < 0 || (size_t)w >= size - len) break;
        len += (size_t)w;
    }
    if (!len) snprintf(buf, size, "(no backlog)");
}
