/* relay.c — subscribe, then enqueue or replay; deliver each event once (see relay.h).
 *
 * States: SUBSCRIBING (waiting for Redis to confirm the subscription),
 * STARTING (enqueue or record lookup sent), FOLLOWING, OVER. Every reply
 * callback holds a reference on the relay, so a relay closed by its owner
 * while commands are in flight is freed by the last reply, never under it.
 *
 * A one-second timer drives the slow paths: a start that could not be sent
 * (Redis down) is retried, a job quiet for QUIET_MS has its log read in
 * case a message was lost, a job whose record vanished (expired) fails, and
 * so do the deadline and a Redis outage longer than REDIS_GIVE_UP_MS. */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"

#define TICK_MS 1000
#define QUIET_MS 3000          /* read the log after this long without news */
#define REDIS_GIVE_UP_MS 30000 /* fail a request after Redis has been gone this long */
#define DEADLINE_GRACE_MS 5000 /* the worker reports a passed deadline itself; wait for it a little */

typedef enum { R_SUBSCRIBING, R_STARTING, R_FOLLOWING, R_OVER } relay_state;

struct lq_relay {
    int refs;
    lq_gw *gw;
    const lq_relay_ops *ops; /* NULL once closed */
    void *owner;
    char id[LQ_JOB_ID_MAX + 1];
    char k_job[LQ_KEY_MAX], k_log[LQ_KEY_MAX], k_ch[LQ_KEY_MAX], k_stream[LQ_KEY_MAX];
    int submit; /* a new job to enqueue, rather than an existing one to follow */
    char *adapter, *tenant, *request;
    char *job;
    size_t job_len;
    int64_t deadline_ms, give_up_ms;
    relay_state state;
    int start_sent, enqueues_sent;
    int fetching, refetch, checking;
    int next; /* index of the next token event to deliver */
    int64_t last_news_ms;
    struct event *timer;
};

static void fill_from_log(lq_relay *r);
static void send_cancel(lq_gw *gw, const char *id, const char *k_job, const char *k_stream, const char *k_log,
                        lq_rc_reply_fn fn, void *priv);

/* ---- references ---- */

static lq_relay *ref(lq_relay *r) {
    r->refs++;
    return r;
}

static void unref(lq_relay *r) {
    if (--r->refs > 0) return;
    if (r->timer) event_free(r->timer);
    free(r->adapter);
    free(r->tenant);
    free(r->request);
    free(r->job);
    free(r);
}

const char *lq_relay_id(const lq_relay *r) { return r->id; }
int lq_relay_delivered(const lq_relay *r) { return r->next; }

/* ---- delivering ---- */

static void fail(lq_relay *r, int status, const char *type, const char *msg) {
    if (!r->ops) return;
    lq_gw_error e;
    lq_gw_fail(&e, status, type, "%s", msg);
    r->state = R_OVER;
    ref(r);
    r->ops->failed(r, r->owner, &e);
    unref(r);
}

static void deliver(lq_relay *r, lq_event *ev) {
    r->last_news_ms = lq_time_ms();
    ref(r);
    if (ev->type == LQ_EVENT_TOKEN) {
        r->next++;
        r->ops->token(r, r->owner, ev);
    } else {
        r->state = R_OVER;
        r->ops->end(r, r->owner, ev);
    }
    unref(r);
}

/* One event from the channel or the log: delivered if it is the next one. */
static void take(lq_relay *r, const char *data, size_t len) {
    if (!r->ops || r->state == R_OVER) return;
    lq_event ev;
    lq_error err = {{0}};
    if (lq_event_decode(data, len, &ev, &err)) {
        lq_gw_log("job %s: ignoring an undecodable event: %s", r->id, err.msg);
        return;
    }
    if (!ev.job || strcmp(ev.job, r->id)) {
        lq_event_clear(&ev);
        return;
    }
    int ahead = ev.index > r->next; /* for the end event: tokens it counts are missing */
    int behind = ev.type == LQ_EVENT_TOKEN && ev.index < r->next;
    if (ahead) fill_from_log(r); /* something is missing: the log has it */
    else if (!behind) deliver(r, &ev);
    lq_event_clear(&ev);
}

static void on_message(void *priv, const char *data, size_t len) { take(priv, data, len); }

/* ---- the log ---- */

static void on_log(redisReply *reply, void *priv) {
    lq_relay *r = priv;
    r->fetching = 0;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements && r->ops && r->state != R_OVER; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING) take(r, reply->element[i]->str, reply->element[i]->len);
        if (r->ops && r->state != R_OVER) r->last_news_ms = lq_time_ms();
    }
    if (r->refetch && r->ops && r->state != R_OVER) {
        r->refetch = 0;
        fill_from_log(r);
    }
    unref(r);
}

static void fill_from_log(lq_relay *r) {
    if (r->fetching) {
        r->refetch = 1;
        return;
    }
    char from[24];
    snprintf(from, sizeof from, "%d", r->next);
    const char *argv[4] = {"LRANGE", r->k_log, from, "-1"};
    size_t lens[4] = {6, strlen(r->k_log), strlen(from), 2};
    if (lq_rc_command(r->gw->rc, on_log, ref(r), 4, argv, lens)) {
        unref(r);
        return;
    }
    r->fetching = 1;
}

/* ---- starting ---- */

static void on_enqueued(redisReply *reply, void *priv) {
    lq_relay *r = priv;
    r->start_sent = 0;
    if (!r->ops || r->state != R_STARTING) goto out;
    if (!reply) goto out; /* the connection dropped: sent again after the reconnection */
    const char *word = lq_reply_word(reply);
    char msg[600];
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(msg, sizeof msg, "could not enqueue the job: %.500s", reply->str);
        fail(r, 500, "internal", msg);
    } else if (word && !strcmp(word, "full")) {
        snprintf(msg, sizeof msg, "Model is overloaded: the queue of %s%s%s is full (%lld jobs waiting)",
                 r->adapter[0] ? "adapter '" : "the base model", r->adapter, r->adapter[0] ? "'" : "",
                 lq_reply_int(reply, 1));
        fail(r, 429, "overloaded", msg);
    } else if (word && (!strcmp(word, "ok") || (!strcmp(word, "exists") && r->enqueues_sent > 1))) {
        int resent = !strcmp(word, "exists");
        r->state = R_FOLLOWING;
        r->last_news_ms = lq_time_ms();
        ref(r);
        r->ops->started(r, r->owner, NULL);
        /* A resent enqueue found the first one: events may have been published meanwhile. */
        if (resent && r->ops && r->state == R_FOLLOWING) fill_from_log(r);
        unref(r);
    } else {
        fail(r, 500, "internal", word && !strcmp(word, "exists") ? "job id collision" : "unexpected reply to enqueue");
    }
out:
    unref(r);
}

/* enqueue.lua for a job (relay.h's lq_relay_job); fn gets its reply. */
static int eval_enqueue(lq_gw *gw, const lq_relay_job *job, lq_rc_reply_fn fn, void *priv) {
    char k_job[LQ_KEY_MAX], k_stream[LQ_KEY_MAX], k_queues[LQ_KEY_MAX], k_new[LQ_KEY_MAX], maxlen[24], now[24],
        expire[24];
    int64_t t = lq_time_ms();
    /* The record lives until the deadline (or a day) plus RESULT_TTL. */
    int64_t expire_ms = (job->deadline_ms > t ? job->deadline_ms - t : 24 * 3600 * 1000LL) + gw->cfg.result_ttl_ms;
    snprintf(maxlen, sizeof maxlen, "%d", gw->cfg.max_queue_length);
    snprintf(now, sizeof now, "%lld", (long long)t);
    snprintf(expire, sizeof expire, "%lld", (long long)expire_ms);
    const char *argv[13] = {lq_key_job(gw->names, job->id, k_job), lq_key_queue(gw->names, job->adapter, k_stream),
                            lq_key_queues(gw->names, k_queues), lq_key_queues_new(gw->names, k_new), job->id,
                            job->adapter, job->tenant ? job->tenant : "", job->job, maxlen, now, expire, LQ_GROUP,
                            job->request ? job->request : ""};
    size_t lens[13];
    for (int i = 0; i < 13; i++) lens[i] = i == 7 ? job->job_len : strlen(argv[i]);
    return lq_rc_eval(gw->rc, LQ_SCRIPT_ENQUEUE, fn, priv, 4, 13, argv, lens);
}

int lq_job_enqueue(lq_gw *gw, const lq_relay_job *job, lq_rc_reply_fn fn, void *priv) {
    return eval_enqueue(gw, job, fn, priv);
}

static int send_enqueue(lq_relay *r) {
    lq_relay_job job = {r->id, r->adapter, r->tenant, r->job, r->job_len, r->request, r->deadline_ms};
    if (eval_enqueue(r->gw, &job, on_enqueued, ref(r))) {
        unref(r);
        return -1;
    }
    r->enqueues_sent++;
    return 0;
}

static const char *reply_str(const redisReply *rep, size_t i) {
    if (!rep || rep->type != REDIS_REPLY_ARRAY || i >= rep->elements) return NULL;
    const redisReply *e = rep->element[i];
    return e->type == REDIS_REPLY_STRING ? e->str : NULL;
}

static void on_record(redisReply *reply, void *priv) {
    lq_relay *r = priv;
    r->start_sent = 0;
    if (!r->ops || r->state != R_STARTING || !reply) goto out;
    const char *status = reply_str(reply, 0);
    if (!status) {
        char msg[200];
        snprintf(msg, sizeof msg, "job '%s' not found (unknown, or its result has expired)", r->id);
        fail(r, 404, "not_found", msg);
        goto out;
    }
    lq_relay_info info = {status, reply_str(reply, 1) ? reply_str(reply, 1) : "", reply_str(reply, 2)};
    r->state = R_FOLLOWING;
    r->last_news_ms = lq_time_ms();
    ref(r);
    r->ops->started(r, r->owner, &info);
    if (r->ops && r->state == R_FOLLOWING) fill_from_log(r);
    unref(r);
out:
    unref(r);
}

static int send_record_lookup(lq_relay *r) {
    const char *argv[5] = {"HMGET", r->k_job, "status", "adapter", "request"};
    size_t lens[5];
    for (int i = 0; i < 5; i++) lens[i] = strlen(argv[i]);
    if (lq_rc_command(r->gw->rc, on_record, ref(r), 5, argv, lens)) {
        unref(r);
        return -1;
    }
    return 0;
}

static void start(lq_relay *r) {
    if (r->start_sent) return;
    r->state = R_STARTING;
    if (!(r->submit ? send_enqueue(r) : send_record_lookup(r))) r->start_sent = 1;
}

static void on_subscribed(void *priv) {
    lq_relay *r = priv;
    if (r->state == R_SUBSCRIBING || r->state == R_STARTING) start(r);
    else if (r->state == R_FOLLOWING) fill_from_log(r); /* a reconnection: catch up from the log */
}

static const lq_rc_sub_ops SUB_OPS = {on_subscribed, on_message};

/* ---- the slow paths ---- */

static void on_status(redisReply *reply, void *priv) {
    lq_relay *r = priv;
    r->checking = 0;
    if (r->ops && r->state == R_FOLLOWING && reply && reply->type == REDIS_REPLY_NIL)
        fail(r, 500, "internal", "the job's record expired or was removed while it was followed");
    unref(r);
}

static void check_record(lq_relay *r) {
    if (r->checking) return;
    const char *argv[3] = {"HGET", r->k_job, "status"};
    size_t lens[3] = {4, strlen(r->k_job), 6};
    if (lq_rc_command(r->gw->rc, on_status, ref(r), 3, argv, lens)) unref(r);
    else r->checking = 1;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    lq_relay *r = arg;
    if (!r->ops || r->state == R_OVER) return;
    int64_t now = lq_time_ms();
    if (r->deadline_ms && now > r->deadline_ms + DEADLINE_GRACE_MS) {
        /* Nobody will wait for this job any more. */
        if (r->submit) send_cancel(r->gw, r->id, r->k_job, r->k_stream, r->k_log, NULL, NULL);
        fail(r, 504, "timeout", "the request took longer than REQUEST_TIMEOUT");
        return;
    }
    if (now > r->give_up_ms && lq_rc_down_ms(r->gw->rc) > REDIS_GIVE_UP_MS) {
        fail(r, 503, "unavailable", "lost the connection to Redis");
        return;
    }
    if (r->state == R_STARTING && !r->start_sent && lq_rc_up(r->gw->rc)) start(r);
    if (r->state == R_FOLLOWING && now - r->last_news_ms >= QUIET_MS) {
        r->last_news_ms = now;
        fill_from_log(r);
        check_record(r);
    }
}

/* ---- lifetime ---- */

static lq_relay *relay_new(lq_gw *gw, const char *id, const char *adapter, const lq_relay_ops *ops, void *owner) {
    lq_relay *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->refs = 1;
    r->gw = gw;
    r->ops = ops;
    r->owner = owner;
    snprintf(r->id, sizeof r->id, "%s", id);
    lq_key_job(gw->names, id, r->k_job);
    lq_key_log(gw->names, id, r->k_log);
    lq_key_channel(gw->names, id, r->k_ch);
    lq_key_queue(gw->names, adapter, r->k_stream);
    r->adapter = strdup(adapter);
    r->timer = event_new(gw->base, -1, EV_PERSIST, on_tick, r);
    r->give_up_ms = lq_time_ms() + REDIS_GIVE_UP_MS;
    if (!r->adapter || !r->timer) {
        unref(r);
        return NULL;
    }
    return r;
}

static int begin(lq_relay *r, lq_gw_error *e) {
    if (lq_rc_subscribe(r->gw->rc, r->k_ch, &SUB_OPS, r)) {
        unref(r);
        return lq_gw_fail(e, 503, "unavailable", "Redis is unreachable; try again shortly");
    }
    struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    event_add(r->timer, &tv);
    return 0;
}

lq_relay *lq_relay_submit(lq_gw *gw, const lq_relay_job *job, const lq_relay_ops *ops, void *owner, lq_gw_error *e) {
    lq_relay *r = relay_new(gw, job->id, job->adapter, ops, owner);
    if (!r || !(r->tenant = strdup(job->tenant ? job->tenant : "")) || !(r->job = malloc(job->job_len)) ||
        (job->request && !(r->request = strdup(job->request)))) {
        if (r) unref(r);
        lq_gw_fail(e, 500, "internal", "out of memory");
        return NULL;
    }
    memcpy(r->job, job->job, job->job_len);
    r->job_len = job->job_len;
    r->submit = 1;
    r->deadline_ms = job->deadline_ms;
    return begin(r, e) ? NULL : r;
}

lq_relay *lq_relay_follow(lq_gw *gw, const char *id, int64_t wait_ms, const lq_relay_ops *ops, void *owner,
                          lq_gw_error *e) {
    lq_relay *r = relay_new(gw, id, "", ops, owner);
    if (!r) {
        lq_gw_fail(e, 500, "internal", "out of memory");
        return NULL;
    }
    r->deadline_ms = wait_ms > 0 ? lq_time_ms() + wait_ms : 0;
    return begin(r, e) ? NULL : r;
}

static void send_cancel(lq_gw *gw, const char *id, const char *k_job, const char *k_stream, const char *k_log,
                        lq_rc_reply_fn fn, void *priv) {
    char k_ch[LQ_KEY_MAX], ttl[24], now[24];
    lq_key_channel(gw->names, id, k_ch);
    snprintf(ttl, sizeof ttl, "%lld", (long long)gw->cfg.result_ttl_ms);
    snprintf(now, sizeof now, "%lld", (long long)lq_time_ms());
    const char *argv[8] = {k_job, k_stream, k_log, id, k_ch, LQ_GROUP, ttl, now};
    size_t lens[8];
    for (int i = 0; i < 8; i++) lens[i] = strlen(argv[i]);
    if (lq_rc_eval(gw->rc, LQ_SCRIPT_CANCEL, fn, priv, 3, 8, argv, lens) && fn) fn(NULL, priv);
}

void lq_relay_close(lq_relay *r, int cancel) {
    if (!r || !r->ops) return;
    r->ops = NULL;
    lq_rc_unsubscribe(r->gw->rc, r->k_ch);
    event_del(r->timer);
    /* A job that was sent (or may have been) and is not over is cancelled. */
    if (cancel && r->submit && r->state != R_OVER && (r->state == R_FOLLOWING || r->enqueues_sent))
        send_cancel(r->gw, r->id, r->k_job, r->k_stream, r->k_log, NULL, NULL);
    unref(r);
}

/* ---- cancelling by id ---- */

typedef struct cancel_req {
    lq_gw *gw;
    char id[LQ_JOB_ID_MAX + 1];
    char k_job[LQ_KEY_MAX], k_log[LQ_KEY_MAX];
    lq_cancel_fn fn;
    void *priv;
} cancel_req;

static void on_cancelled(redisReply *reply, void *priv) {
    cancel_req *c = priv;
    const char *word = reply && reply->type == REDIS_REPLY_ARRAY ? lq_reply_word(reply) : NULL;
    c->fn(c->priv, word, word ? lq_reply_str(reply, 1) : NULL);
    free(c);
}

static void on_cancel_record(redisReply *reply, void *priv) {
    cancel_req *c = priv;
    const char *stream = reply_str(reply, 0), *status = reply_str(reply, 1);
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        c->fn(c->priv, NULL, NULL);
    } else if (!status) {
        c->fn(c->priv, "missing", NULL);
    } else if (strcmp(status, "queued") && strcmp(status, "running")) {
        c->fn(c->priv, "over", status);
    } else {
        send_cancel(c->gw, c->id, c->k_job, stream ? stream : "", c->k_log, on_cancelled, c);
        return;
    }
    free(c);
}

int lq_job_cancel(lq_gw *gw, const char *id, lq_cancel_fn fn, void *priv) {
    cancel_req *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->gw = gw;
    c->fn = fn;
    c->priv = priv;
    snprintf(c->id, sizeof c->id, "%s", id);
    lq_key_job(gw->names, id, c->k_job);
    lq_key_log(gw->names, id, c->k_log);
    const char *argv[4] = {"HMGET", c->k_job, "stream", "status"};
    size_t lens[4] = {5, strlen(c->k_job), 6, 6};
    if (lq_rc_command(gw->rc, on_cancel_record, c, 4, argv, lens)) {
        free(c);
        return -1;
    }
    return 0;
}

/* ---- job ids ---- */

void lq_gw_new_job_id(int64_t now_ms, char out[LQ_JOB_ID_MAX + 1]) {
    uint8_t rnd[8];
    /* getrandom never fails for 8 bytes once the pool is ready; fall back to the clock anyway. */
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t x = (uint64_t)now_ms * 6364136223846793005ULL + (uint64_t)getpid();
        memcpy(rnd, &x, sizeof rnd);
    }
    snprintf(out, LQ_JOB_ID_MAX + 1, "%llx-%02x%02x%02x%02x%02x%02x%02x%02x", (unsigned long long)now_ms, rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
}
