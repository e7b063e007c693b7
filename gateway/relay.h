/* relay.h — following one job's events from Redis, exactly once each.
 *
 * A relay subscribes to the job's channel first; only when Redis confirms
 * the subscription does it enqueue a new job (lq_relay_submit) or read an
 * existing job's record (lq_relay_follow), so no event can be published
 * before it listens. From then on it delivers token events strictly in
 * index order and the end event last:
 *
 *   - an event whose index it has already delivered is dropped;
 *   - an event ahead of the next expected index (a message lost while Redis
 *     restarted, or the replay of an existing job) makes it read the job's
 *     log from the next index, which holds every event in order;
 *   - after a reconnection (the subscription confirmed again) and whenever
 *     the job has been quiet for a while, it reads the log the same way.
 *
 * A job enqueue that may not have reached Redis (the connection dropped
 * before the reply) is sent again after the reconnection; enqueue refuses a
 * duplicate id, which tells the relay the first one did arrive.
 *
 * Callbacks run on the event loop; the owner may close the relay from any
 * of them. After lq_relay_close no callback runs again. */
#ifndef LORQ_GW_RELAY_H
#define LORQ_GW_RELAY_H

#include <stdint.h>

#include "gateway.h"
#include "job.h"
#include "validate.h"

typedef struct lq_relay lq_relay;

/* What the job's record says when a relay starts following it. */
typedef struct lq_relay_info {
    const char *status;  /* queued, running, done, failed, cancelled */
    const char *adapter; /* "" for the base model */
    const char *request; /* the gateway's `request` field (JSON), or NULL */
} lq_relay_info;

typedef struct lq_relay_ops {
    /* The job is in the queue (submit) or was found (follow; info filled). */
    void (*started)(lq_relay *r, void *owner, const lq_relay_info *info);
    /* A token event, in index order. ev is the relay's: valid during the call. */
    void (*token)(lq_relay *r, void *owner, lq_event *ev);
    /* The end event; nothing follows. */
    void (*end)(lq_relay *r, void *owner, lq_event *ev);
    /* The job could not be enqueued or followed: full queue (429), unknown
     * job (404), Redis gone too long (503), deadline passed (504). */
    void (*failed)(lq_relay *r, void *owner, const lq_gw_error *e);
} lq_relay_ops;

typedef struct lq_relay_job {
    const char *id;
    const char *adapter;
    const char *tenant;
    const void *job; /* the msgpack job (copied) */
    size_t job_len;
    const char *request; /* stored in the record's `request` field (JSON), may be NULL */
    int64_t deadline_ms; /* 0: none */
} lq_relay_job;

/* Subscribes and, once confirmed, enqueues. NULL with e (503) when Redis is down. */
lq_relay *lq_relay_submit(lq_gw *gw, const lq_relay_job *job, const lq_relay_ops *ops, void *owner, lq_gw_error *e);

/* Subscribes and, once confirmed, reads the record and replays the log from
 * index 0. wait_ms bounds how long to follow (0: until the job ends). */
lq_relay *lq_relay_follow(lq_gw *gw, const char *id, int64_t wait_ms, const lq_relay_ops *ops, void *owner,
                          lq_gw_error *e);

/* Stops following. cancel: also cancel the job (cancel.lua) unless it is over. */
void lq_relay_close(lq_relay *r, int cancel);

const char *lq_relay_id(const lq_relay *r);
/* Tokens delivered so far. */
int lq_relay_delivered(const lq_relay *r);

/* Enqueues a job without following it (POST /v1/jobs): fn gets enqueue.lua's
 * reply (NULL when the connection failed); -1 when Redis is down. */
int lq_job_enqueue(lq_gw *gw, const lq_relay_job *job, lq_rc_reply_fn fn, void *priv);

/* Cancels a job by id: reads its stream from the record, then runs
 * cancel.lua. fn gets cancel.lua's reply word ("ok", "over", "missing") and
 * the status for "over", or NULL when Redis failed. */
typedef void (*lq_cancel_fn)(void *priv, const char *word, const char *status);
int lq_job_cancel(lq_gw *gw, const char *id, lq_cancel_fn fn, void *priv);

#endif
