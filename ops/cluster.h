/* cluster.h — a snapshot of the worker pool as Redis sees it: the backlog of
 * every adapter stream (consumer-group lag and pending entries) and the live
 * workers' heartbeats (docs/protocol.md). The autoscaler decides on it; the
 * load generator samples it over time for its plots. */
#ifndef LORQ_OPS_CLUSTER_H
#define LORQ_OPS_CLUSTER_H

#include <stdint.h>

#include "error.h"
#include "redis.h"

typedef struct lq_stream_stat {
    char adapter[LQ_KEY_MAX]; /* "" for the base model's queue */
    long long lag;            /* entries not yet delivered to any worker */
    long long pending;        /* delivered, not yet acknowledged: running (or held by a dead worker) */
    long long length;         /* XLEN: finished entries are deleted, so lag + pending */
    int lag_estimated;        /* XINFO gave no lag (deletions): length - pending instead */
} lq_stream_stat;

typedef struct lq_worker_stat {
    char id[128], host[256], state[16];
    long pid;
    int running, capacity;
    double tokens_per_s;
    int64_t seen_ms;
} lq_worker_stat;

typedef struct lq_cluster {
    lq_stream_stat *streams;
    int n_streams;
    lq_worker_stat *workers; /* live ones: heartbeat hash present */
    int n_workers;
    long long lag, pending;           /* summed over the streams */
    int serving, draining;            /* workers by state */
    int running, capacity;            /* summed over serving workers */
} lq_cluster;

/* Reads the snapshot with two pipelined round trips (streams, then
 * heartbeats). Stale members of `P workers` (heartbeat expired for more than
 * a few seconds) are removed, as the protocol asks readers to. On a
 * connection failure the connection is marked down and -1 returned. */
int lq_cluster_read(lq_redis *r, lq_cluster *c, lq_error *err);
void lq_cluster_free(lq_cluster *c);

/* "demo/a=3+1 @base=0+2": lag+pending of each stream with a backlog, for logs. */
void lq_cluster_streams_text(const lq_cluster *c, char *buf, size_t size);

#endif
