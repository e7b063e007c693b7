/* queue.h — the worker's side of the Redis queue (docs/protocol.md, "What a
 * worker does"): it reads jobs from the adapter streams, starts them in the
 * scheduler, delivers the scheduler's events, and keeps the worker's entries
 * and heartbeat alive, across Redis restarts and other workers' deaths.
 *
 * lq_queue_run is the worker's main loop; it owns neither the connection nor
 * the scheduler, which main.c builds and frees. */
#ifndef LORQ_QUEUE_H
#define LORQ_QUEUE_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "error.h"
#include "adapters.h"
#include "redis.h"
#include "scheduler.h"

typedef struct lq_queue_config {
    const char *worker_id;  /* consumer name and heartbeat key */
    int claim_min_idle_ms;  /* entries idle this long are another worker's to claim (CLAIM_MIN_IDLE_MS) */
    int max_attempts;       /* starts of one job before it is dead-lettered (MAX_ATTEMPTS) */
    int64_t result_ttl_ms;  /* how long records and logs outlive the job (RESULT_TTL) */
    int block_ms;           /* longest wait in XREADGROUP when idle */
    int discover_ms;        /* how often P queues is read again (DISCOVER_MS, default 250) */
    int max_job_tokens;     /* prompt + max_new_tokens a job may need; 0: not checked here */
    int capacity;           /* most jobs at once (for the heartbeat) */
    const char *model;      /* for the heartbeat */
    const char *device;     /* for the heartbeat: "cpu", "cuda:0 <name>" */
    lq_adapters *adapters;  /* admissible ids, just-in-time loads, pins (worker/adapters.h) */
} lq_queue_config;

typedef struct lq_queue lq_queue;

lq_queue *lq_queue_new(lq_redis *r, lq_scheduler *s, const lq_queue_config *c, lq_error *err);
void lq_queue_free(lq_queue *q);

/* Serves jobs until *drain becomes nonzero and every running job is over and
 * delivered (returns 0), or *quit becomes nonzero (returns 0 at once: the
 * running jobs are left for other workers to claim), or the engine fails
 * (returns -1 with err). Redis going away is not an error: the loop
 * reconnects with backoff and carries on. */
int lq_queue_run(lq_queue *q, volatile sig_atomic_t *drain, volatile sig_atomic_t *quit, lq_error *err);

/* One log line on stderr: "<UTC time> lorq-worker[<pid>]: <message>". */
void lq_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* pthread_create for the worker's helper threads (heartbeat keeper, adapter
 * loader): they start with SIGTERM and SIGINT blocked, so those signals reach
 * the main thread and cut its waits short. 0, or pthread_create's error. */
int lq_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

#endif
