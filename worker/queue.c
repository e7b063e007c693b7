/* queue.c — the worker's queue consumer: Redis streams in, scheduler events
 * out (docs/protocol.md, "What a worker does").
 *
 * One loop, one Redis connection, and a helper thread with its own
 * connection for liveness (below). Each turn of the loop:
 *
 *   1. deliver: every event the scheduler produced that Redis has not yet
 *      confirmed goes out in one pipeline — `emit` per token, then
 *      `complete` or `fail` per finished job — and the replies are read in
 *      order. A job remembers the encoded token events of this attempt and
 *      how many of them the log holds (`confirmed`), so whatever was not
 *      confirmed (Redis went away mid-pipeline) is simply sent again on the
 *      next turn: `emit` is idempotent by index and fenced by worker and
 *      attempt, `complete` and `fail` answer "over" the second time.
 *      `cancelled`, `lost` and `over` replies drop the job from the scheduler.
 *      While anything is undelivered the worker does not step, so a Redis
 *      outage pauses generation instead of piling up events.
 *   2. housekeeping on timers: stream discovery (SMEMBERS P queues, every
 *      DISCOVER_MS, default 250 ms, and at once when told of a new stream)
 *      and recovery of entries other workers left idle (XAUTOCLAIM, every
 *      CLAIM_MIN_IDLE_MS/4). The heartbeat (1 s) and the keep-alive of the
 *      entries it holds (XCLAIM JUSTID, every CLAIM_MIN_IDLE_MS/3) run on a
 *      thread of their own, so that a long step never makes a live worker
 *      look dead (see "the keeper").
 *   3. read: one XREADGROUP over the streams (and P queues:new, where
 *      enqueue.lua announces a stream the first time it is used, so an idle
 *      worker wakes for a new adapter's first job), COUNT = free slots divided
 *      among them; when slots are fewer than streams, only that many streams
 *      are read, resident adapters first, rotating the starting point, and
 *      the next ones are tried if those were empty. It blocks only when the
 *      worker is idle.
 *   4. step the scheduler once and file its events under their jobs.
 *
 * Just-in-time adapters (worker/adapters.c): a started job whose adapter is
 * not resident is parked here (not in the scheduler) while the loader thread
 * loads it; each turn installs finished loads, and the jobs parked on an
 * adapter go to the scheduler when it is resident, or fail with the load's
 * error. Parked jobs count against the free slots, and when nothing but
 * parked jobs is left the loop waits on the loader instead of spinning.
 * Admin commands (preload, unload) arrive on the stream P control, read
 * without a group by every worker (docs/protocol.md).
 *
 * Entries are checked before they are started: an entry that is not a job
 * (bad msgpack, missing or mistyped fields, an id that disagrees with the
 * entry's, another stream's adapter, an adapter this worker does not have,
 * more tokens than it can hold, a deadline already passed) is failed with
 * the unfenced `fail` (it never ran), which records the error and writes a
 * dead letter. Good entries go to `start` in one pipeline; a job resumed from
 * an earlier attempt gets the tokens its log holds, which the scheduler
 * replays before generating the rest. */
#include "queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum {
    DISCOVER_MS = 250, /* the default; new streams are also announced on P queues:new */
    CONTROL_MS = 500,
    HEARTBEAT_MS = 1000,
    HEARTBEAT_TTL_MS = 5000,
    RATE_SECONDS = 10,
    ENTRY_ID_MAX = 64,
};

/* ---- logging ---- */

void lq_log(const char *fmt, ...) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ lorq-worker[%d]: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                     (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line: workers sharing a terminal do not interleave */
}

static void log_line(const char *msg) { lq_log("%s", msg); }

int lq_thread_start(pthread_t *t, void *(*fn)(void *), void *arg) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---- state ---- */

/* One job this worker holds, from `start` until Redis confirmed its end. */
typedef struct qjob {
    struct qjob *next;
    char id[LQ_JOB_ID_MAX + 1], adapter[LQ_ADAPTER_ID_MAX + 1];
    char stream[LQ_KEY_MAX], entry[ENTRY_ID_MAX + 1], attempts[24];
    char k_job[LQ_KEY_MAX], k_log[LQ_KEY_MAX], k_ch[LQ_KEY_MAX];
    char *raw; /* the job's msgpack, for the dead letter if it fails */
    size_t raw_len;
    int64_t created_ms, started_ms;
    int n_prompt;
    int n_resume;  /* tokens logged by earlier attempts */
    int confirmed; /* tokens the log holds (index of the next to confirm) */
    lq_buf *ev;    /* encoded token events of this attempt: ev[i] has index n_resume + i */
    int n_ev, cap_ev;
    int ended;     /* the scheduler sent the end event (and forgot the job) */
    lq_buf end;    /* the end event, when it was not an error */
    char *error, *error_type;
    char finish[24];
    int parked;      /* waiting for its adapter's load, not yet in the scheduler */
    int pinned;      /* holds a pin on its adapter (lq_adapters_release when forgotten) */
    int32_t *resume; /* a parked job's logged tokens */
} qjob;

typedef struct qstream {
    char key[LQ_KEY_MAX];
    char adapter[LQ_KEY_MAX];
    char cursor[ENTRY_ID_MAX + 1]; /* XAUTOCLAIM position */
    int usable;                    /* the group exists on it (0: not a stream) */
} qstream;

typedef struct held_entry {
    char stream[LQ_KEY_MAX];
    char entry[ENTRY_ID_MAX + 1];
} held_entry;

/* The heartbeat thread's view of the worker (see "the keeper" below). */
typedef struct keeper {
    lq_redis *r; /* its own connection */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    /* under mu */
    int stop;
    held_entry *held; /* the entries of the jobs we hold */
    int n_held, cap_held;
    int running, draining;
    double rate;
    uint64_t total;
    char adapters[4096];
    char host_adapters[4096]; /* the host tier's, when there is one */
    long loads_host, loads_disk; /* adapter loads served from the host tier / from the disk */
    int64_t turn_ms; /* monotonic time of the main loop's last turn */
} keeper;

struct lq_queue {
    lq_redis *r;
    lq_scheduler *s;
    lq_queue_config c;
    char host[256], ttl[24], max_attempts[16], k_dead[LQ_KEY_MAX], k_queues[LQ_KEY_MAX], k_new[LQ_KEY_MAX];
    int new_ready; /* the group on P queues:new exists, so reads include it */
    qjob *jobs;
    int n_jobs;
    qstream *streams;
    int n_streams;
    unsigned rotate;
    int64_t t_discover, t_autoclaim; /* monotonic ms of the last run */
    keeper k;
    int n_parked;
    char control_id[ENTRY_ID_MAX + 1]; /* last P control entry seen; "" until the first look */
    int64_t t_control;
    int held_dirty; /* jobs came or went since the keeper's snapshot */
    int draining, connected_once;
    int64_t started_ms;
    uint64_t tokens_total, finished, failed;
    uint64_t rate_tokens[RATE_SECONDS];
    int64_t rate_second[RATE_SECONDS];
};

/* An entry read or claimed from a stream, still in the reply's memory. */
typedef struct qentry {
    const qstream *stream;
    const char *entry;
    const char *id, *body; /* fields 'id' and 'job'; NULL if absent */
    size_t id_len, body_len;
} qentry;

/* ---- jobs ---- */

static void job_free(qjob *j) {
    for (int i = 0; i < j->n_ev; i++) lq_buf_free(&j->ev[i]);
    free(j->ev);
    lq_buf_free(&j->end);
    free(j->error);
    free(j->error_type);
    free(j->raw);
    free(j->resume);
    free(j);
}

/* Forgets a job: Redis has its end, or it is no longer ours. */
static void job_forget(lq_queue *q, qjob *j) {
    for (qjob **p = &q->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    q->n_jobs--;
    q->held_dirty = 1;
    if (j->parked) q->n_parked--;
    else if (!j->ended) lq_scheduler_drop(q->s, j);
    if (j->pinned) lq_adapters_release(q->c.adapters, j->adapter);
    job_free(j);
}

static qjob *job_by_entry(lq_queue *q, const char *stream, const char *entry) {
    for (qjob *j = q->jobs; j; j = j->next)
        if (!strcmp(j->entry, entry) && !strcmp(j->stream, stream)) return j;
    return NULL;
}

static int job_pending_calls(const qjob *j) { return j->n_resume + j->n_ev - j->confirmed + (j->ended ? 1 : 0); }

static void count_tokens(lq_queue *q, int n) {
    int64_t sec = lq_mono_ms() / 1000;
    int slot = (int)(sec % RATE_SECONDS);
    if (q->rate_second[slot] != sec) {
        q->rate_second[slot] = sec;
        q->rate_tokens[slot] = 0;
    }
    q->rate_tokens[slot] += (uint64_t)n;
    q->tokens_total += (uint64_t)n;
}

static double tokens_per_s(const lq_queue *q) {
    int64_t sec = lq_mono_ms() / 1000;
    uint64_t sum = 0;
    for (int i = 0; i < RATE_SECONDS; i++)
        if (q->rate_second[i] > sec - RATE_SECONDS && q->rate_second[i] <= sec) sum += q->rate_tokens[i];
    return (double)sum / RATE_SECONDS;
}

/* ---- delivery ---- */

typedef struct call_ref {
    qjob *job;
    int index; /* token index, or -1 for the end */
} call_ref;

static void add_emit(lq_queue *q, lq_script_call *c, qjob *j, int index, char *idx_buf) {
    const lq_buf *ev = &j->ev[index - j->n_resume];
    snprintf(idx_buf, 24, "%d", index);
    lq_script_call_init(c, LQ_SCRIPT_EMIT);
    lq_script_call_key(c, j->k_job);
    lq_script_call_key(c, j->k_log);
    lq_script_call_str(c, q->c.worker_id);
    lq_script_call_str(c, j->attempts);
    lq_script_call_str(c, idx_buf);
    lq_script_call_arg(c, ev->data, ev->len);
    lq_script_call_str(c, j->k_ch);
    lq_script_call_str(c, q->ttl);
}

static void add_complete(lq_queue *q, lq_script_call *c, qjob *j, char *now_buf) {
    lq_script_call_init(c, LQ_SCRIPT_COMPLETE);
    lq_script_call_key(c, j->k_job);
    lq_script_call_key(c, j->stream);
    lq_script_call_key(c, j->k_log);
    lq_script_call_str(c, q->c.worker_id);
    lq_script_call_str(c, j->attempts);
    lq_script_call_str(c, j->entry);
    lq_script_call_str(c, LQ_GROUP);
    lq_script_call_arg(c, j->end.data, j->end.len);
    lq_script_call_str(c, j->k_ch);
    lq_script_call_str(c, q->ttl);
    lq_script_call_str(c, now_buf);
}

/* `fail` for a job that ran (fenced by this worker and attempt). */
static void add_fail(lq_queue *q, lq_script_call *c, qjob *j, char *now_buf) {
    lq_script_call_init(c, LQ_SCRIPT_FAIL);
    lq_script_call_key(c, j->k_job);
    lq_script_call_key(c, j->stream);
    lq_script_call_key(c, j->k_log);
    lq_script_call_key(c, q->k_dead);
    lq_script_call_str(c, j->entry);
    lq_script_call_str(c, LQ_GROUP);
    lq_script_call_str(c, q->c.worker_id);
    lq_script_call_str(c, j->attempts);
    lq_script_call_str(c, j->error);
    lq_script_call_str(c, j->error_type);
    lq_script_call_str(c, j->id);
    lq_script_call_str(c, j->k_ch);
    lq_script_call_str(c, q->ttl);
    lq_script_call_str(c, now_buf);
    lq_script_call_arg(c, j->raw ? j->raw : "", j->raw_len);
}

static void log_job_end(lq_queue *q, const qjob *j, const char *outcome) {
    int64_t now = lq_time_ms();
    int n = j->n_resume + j->n_ev;
    double run_s = (double)(now - j->started_ms) / 1000.0;
    if (j->error) {
        q->failed++;
        lq_log("job %s %s: adapter '%s', %d tokens, error (%s): %s; run %.2f s", j->id, outcome,
               j->adapter[0] ? j->adapter : "(base)", n,
               j->error_type, j->error, run_s);
    } else {
        q->finished++;
        lq_log("job %s %s: adapter '%s', %d prompt + %d tokens (%d resumed), %s; queued %.2f s, run %.2f s (%.1f tok/s)",
               j->id, outcome, j->adapter[0] ? j->adapter : "(base)", j->n_prompt, n, j->n_resume, j->finish,
               (double)(j->started_ms - j->created_ms) / 1000.0, run_s, run_s > 0 ? j->n_ev / run_s : 0.0);
    }
}

/* The reply to one emit. Returns 1 if the job is gone (dropped). */
static int on_emit_reply(qjob *j, int index, const redisReply *rep) {
    const char *w = lq_reply_word(rep);
    if (!w) {
        lq_log("job %s: emit of token %d failed (%s); giving the job up", j->id, index,
               rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        return 1;
    }
    if (!strcmp(w, "ok") || !strcmp(w, "dup")) {
        if (index == j->confirmed) j->confirmed++;
        return 0;
    }
    if (!strcmp(w, "gap")) {
        long long logged = lq_reply_int(rep, 1);
        lq_log("job %s: the log holds %lld tokens, not %d; re-sending from there", j->id, logged, index);
        if (logged < j->n_resume || logged > index) return 1; /* lost tokens we never had: nothing to re-send */
        j->confirmed = (int)logged;
        return 0;
    }
    if (!strcmp(w, "cancelled")) lq_log("job %s cancelled after %d tokens", j->id, index);
    else if (!strcmp(w, "lost")) lq_log("job %s was claimed by another worker; dropping it", j->id);
    else lq_log("job %s is over (%s); dropping it", j->id, lq_reply_str(rep, 1) ? lq_reply_str(rep, 1) : w);
    return 1;
}

/* The reply to complete/fail: the job is always gone after it. */
static void on_end_reply(lq_queue *q, qjob *j, const redisReply *rep) {
    const char *w = lq_reply_word(rep);
    if (w && !strcmp(w, "ok")) log_job_end(q, j, j->error ? "failed" : "finished");
    else if (w && !strcmp(w, "over")) lq_log("job %s was already over (%s)", j->id, lq_reply_str(rep, 1));
    else if (w && !strcmp(w, "lost")) lq_log("job %s finished here but was claimed by another worker", j->id);
    else lq_log("job %s: ending it failed: %s", j->id, rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "bad reply");
}

static int undelivered(const lq_queue *q) {
    for (const qjob *j = q->jobs; j; j = j->next)
        if (job_pending_calls(j)) return 1;
    return 0;
}

/* Sends every unconfirmed event in one pipeline. Returns -1 if Redis went away. */
static int deliver(lq_queue *q) {
    int n = 0;
    for (qjob *j = q->jobs; j; j = j->next) n += job_pending_calls(j);
    if (n == 0) return 0;
    lq_script_call *calls = malloc(sizeof *calls * (size_t)n);
    call_ref *refs = malloc(sizeof *refs * (size_t)n);
    char (*idx)[24] = malloc(24 * (size_t)n);
    redisReply **replies = calloc((size_t)n, sizeof *replies);
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_time_ms());
    if (!calls || !refs || !idx || !replies) {
        lq_log("out of memory delivering %d events", n);
        free(calls), free(refs), free(idx), free(replies);
        return 0;
    }
    int k = 0;
    for (qjob *j = q->jobs; j; j = j->next) {
        for (int i = j->confirmed; i < j->n_resume + j->n_ev; i++, k++) {
            add_emit(q, &calls[k], j, i, idx[k]);
            refs[k] = (call_ref){j, i};
        }
        if (j->ended) {
            if (j->error) add_fail(q, &calls[k], j, now);
            else add_complete(q, &calls[k], j, now);
            refs[k++] = (call_ref){j, -1};
        }
    }
    lq_error err;
    int got = lq_redis_eval_pipeline(q->r, calls, n, replies, &err);
    /* Replies in order; a job that is gone skips its later calls. */
    for (int i = 0; i < got; i++) {
        qjob *j = refs[i].job;
        if (!j) continue;
        int gone = refs[i].index < 0 ? (on_end_reply(q, j, replies[i]), 1) : on_emit_reply(j, refs[i].index, replies[i]);
        if (gone) {
            for (int m = i + 1; m < n; m++)
                if (refs[m].job == j) refs[m].job = NULL;
            job_forget(q, j);
        }
    }
    for (int i = 0; i < n; i++)
        if (replies[i]) freeReplyObject(replies[i]);
    free(calls), free(refs), free(idx), free(replies);
    if (got < n) {
        lq_log("redis: %s; %d of %d events undelivered, will re-send", err.msg, n - got, n);
        return -1;
    }
    return 0;
}

/* ---- scheduler events ---- */

static int push_token(qjob *j, const lq_event *e, lq_error *err) {
    if (j->n_ev == j->cap_ev) {
        int cap = j->cap_ev ? j->cap_ev * 2 : 16;
        lq_buf *p = realloc(j->ev, sizeof *p * (size_t)cap);
        if (!p) return lq_fail(err, "out of memory");
        j->ev = p;
        j->cap_ev = cap;
    }
    lq_buf *b = &j->ev[j->n_ev];
    memset(b, 0, sizeof *b);
    if (lq_event_encode(e, b, err)) {
        lq_buf_free(b);
        return -1;
    }
    j->n_ev++;
    return 0;
}

static char *dup_or(const char *s, const char *fallback) { return strdup(s && *s ? s : fallback); }

static void set_error(qjob *j, const char *msg, const char *type) {
    free(j->error);
    free(j->error_type);
    j->error = dup_or(msg, "unknown error");
    j->error_type = dup_or(type, "internal");
    snprintf(j->finish, sizeof j->finish, "error");
}

static void on_end_event(lq_queue *q, qjob *j, const lq_event *e) {
    j->ended = 1;
    snprintf(j->finish, sizeof j->finish, "%s", e->finish_reason ? e->finish_reason : "?");
    if (e->finish_reason && !strcmp(e->finish_reason, "error")) {
        set_error(j, e->error, e->error_type);
        return;
    }
    lq_event end = *e; /* shallow: the strings stay the scheduler's */
    end.worker = (char *)q->c.worker_id;
    /* The scheduler times from admission; fill in from this attempt's start where it could not. */
    if (end.queue_ms < 0 && j->created_ms > 0) end.queue_ms = j->started_ms > j->created_ms ? j->started_ms - j->created_ms : 0;
    if (end.run_ms < 0) end.run_ms = lq_time_ms() - j->started_ms;
    lq_error err;
    if (lq_event_encode(&end, &j->end, &err)) set_error(j, err.msg, "internal");
}

static void on_event(lq_queue *q, const lq_sched_event *se, int last) {
    qjob *j = se->user;
    lq_event ev = se->ev; /* shallow: the strings stay the scheduler's */
    ev.last = last;
    const lq_event *e = &ev;
    if (j->ended) return; /* the scheduler promised nothing after the end; be safe */
    if (e->type == LQ_EVENT_END) {
        on_end_event(q, j, e);
        return;
    }
    lq_error err;
    int want = j->n_resume + j->n_ev;
    if (e->index != want) {
        lq_log("job %s: the scheduler produced token %d where %d was due; ending the job", j->id, e->index, want);
        lq_scheduler_drop(q->s, j);
        j->ended = 1;
        set_error(j, "internal error: token events out of order", "internal");
        return;
    }
    if (push_token(j, e, &err)) {
        lq_scheduler_drop(q->s, j);
        j->ended = 1;
        set_error(j, err.msg, "internal");
        return;
    }
    count_tokens(q, 1);
}

/* A token is its job's last when the same step ended the job (its end event
 * follows in this step's events): the token event says so (`last`). */
static int token_is_last(const lq_sched_event *events, int n, int i) {
    if (events[i].ev.type != LQ_EVENT_TOKEN) return 0;
    for (int k = i + 1; k < n; k++)
        if (events[k].user == events[i].user) return events[k].ev.type == LQ_EVENT_END;
    return 0;
}

static int step(lq_queue *q, lq_error *err) {
    const lq_sched_event *events = NULL;
    int n = lq_scheduler_step(q->s, &events, err);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) on_event(q, &events[i], token_is_last(events, n, i));
    return n;
}

/* ---- starting entries ---- */

/* What a bad entry is failed as. */
typedef struct verdict {
    char id[LQ_JOB_ID_MAX + 1]; /* the record to fail (entry's id, the job's, or one made from the entry id) */
    char error[700];
    const char *type;
} verdict;

static int job_fits(const lq_queue *q, const lq_job *job) {
    return q->c.max_job_tokens <= 0 || (int64_t)job->n_prompt + job->max_new_tokens <= q->c.max_job_tokens;
}

/* Writes what is wrong with a decoded job into v (type "validation" unless
 * said otherwise) and returns -1, or returns 0. */
static int job_problem(lq_queue *q, const qentry *e, const char *entry_id, const lq_job *job, verdict *v) {
    char *msg = v->error;
    size_t size = sizeof v->error;
    if (e->id && !entry_id[0]) return snprintf(msg, size, "stream entry's 'id' field is not a valid job id"), -1;
    if (entry_id[0] && strcmp(entry_id, job->id))
        return snprintf(msg, size, "stream entry's id '%s' differs from the job's id '%s'", entry_id, job->id), -1;
    if (strcmp(job->adapter, e->stream->adapter))
        return snprintf(msg, size, "job for adapter '%s' found on the queue of adapter '%s'", job->adapter,
                        e->stream->adapter),
               -1;
    if (job->adapter[0] && !lq_adapters_admissible(q->c.adapters, job->adapter, msg, size)) {
        v->type = "adapter";
        return -1;
    }
    if (!job_fits(q, job))
        return snprintf(msg, size,
                        "prompt of %d tokens plus max_new_tokens %d exceeds this worker's limit of %d tokens per job",
                        job->n_prompt, job->max_new_tokens, q->c.max_job_tokens),
               -1;
    if (job->deadline_ms > 0 && lq_time_ms() > job->deadline_ms) {
        v->type = "deadline";
        return snprintf(msg, size, "deadline passed %lld ms before the job could start",
                        (long long)(lq_time_ms() - job->deadline_ms)),
               -1;
    }
    return 0;
}

/* The entry's 'id' field when it is a valid job id, else "". */
static void entry_job_id(const qentry *e, char out[LQ_JOB_ID_MAX + 1]) {
    out[0] = 0;
    if (!e->id || e->id_len > LQ_JOB_ID_MAX || memchr(e->id, 0, e->id_len)) return;
    memcpy(out, e->id, e->id_len);
    out[e->id_len] = 0;
    if (!lq_job_id_valid(out)) out[0] = 0;
}

/* Checks one entry; 0 and a decoded job, or -1 and a verdict. The verdict's
 * record is the entry's id, else the job's, else one made from the entry id,
 * so that whoever asks about the job finds the failure. */
static int check_entry(lq_queue *q, const qentry *e, lq_job *job, verdict *v) {
    lq_error err;
    char entry_id[LQ_JOB_ID_MAX + 1];
    entry_job_id(e, entry_id);
    snprintf(v->id, sizeof v->id, "%s", entry_id);
    v->type = "validation";
    if (!e->body) {
        snprintf(v->error, sizeof v->error, "stream entry has no 'job' field");
    } else if (lq_job_decode(e->body, e->body_len, job, &err)) {
        snprintf(v->error, sizeof v->error, "invalid job: %s", err.msg);
    } else {
        if (job_problem(q, e, entry_id, job, v) == 0) return 0;
        if (!v->id[0]) snprintf(v->id, sizeof v->id, "%s", job->id);
        lq_job_clear(job);
    }
    if (!v->id[0]) snprintf(v->id, sizeof v->id, "entry-%.*s", LQ_JOB_ID_MAX - 6, e->entry);
    return -1;
}

/* Unfenced `fail` of an entry that never ran. */
static void add_fail_entry(lq_queue *q, lq_script_call *c, const qentry *e, const verdict *v, char keys[3][LQ_KEY_MAX],
                           const char *now) {
    lq_script_call_init(c, LQ_SCRIPT_FAIL);
    lq_script_call_key(c, lq_key_job(q->r, v->id, keys[0]));
    lq_script_call_key(c, e->stream->key);
    lq_script_call_key(c, lq_key_log(q->r, v->id, keys[1]));
    lq_script_call_key(c, q->k_dead);
    lq_script_call_str(c, e->entry);
    lq_script_call_str(c, LQ_GROUP);
    lq_script_call_str(c, "");
    lq_script_call_str(c, "0");
    lq_script_call_str(c, v->error);
    lq_script_call_str(c, v->type);
    lq_script_call_str(c, v->id);
    lq_script_call_str(c, lq_key_channel(q->r, v->id, keys[2]));
    lq_script_call_str(c, q->ttl);
    lq_script_call_str(c, now);
    lq_script_call_arg(c, e->body ? e->body : "", e->body ? e->body_len : 0);
}

static void add_start(lq_queue *q, lq_script_call *c, const qentry *e, const lq_job *job, char keys[3][LQ_KEY_MAX],
                      const char *now) {
    lq_script_call_init(c, LQ_SCRIPT_START);
    lq_script_call_key(c, lq_key_job(q->r, job->id, keys[0]));
    lq_script_call_key(c, e->stream->key);
    lq_script_call_key(c, lq_key_log(q->r, job->id, keys[1]));
    lq_script_call_key(c, q->k_dead);
    lq_script_call_str(c, e->entry);
    lq_script_call_str(c, q->c.worker_id);
    lq_script_call_str(c, q->max_attempts);
    lq_script_call_str(c, now);
    lq_script_call_str(c, LQ_GROUP);
    lq_script_call_str(c, lq_key_channel(q->r, job->id, keys[2]));
    lq_script_call_str(c, q->ttl);
}

/* The tokens an earlier attempt delivered, from the job's log. */
static int read_resume(lq_queue *q, qjob *j, int logged, int32_t **out, lq_error *err) {
    redisReply *rep = lq_redis_cmd(q->r, err, "LRANGE %s 0 %d", j->k_log, logged - 1);
    if (!rep) return -1;
    int32_t *ids = malloc(sizeof *ids * (size_t)(logged > 0 ? logged : 1));
    int rc = ids ? 0 : lq_fail(err, "out of memory");
    if (rc == 0 && (rep->type != REDIS_REPLY_ARRAY || (int)rep->elements != logged))
        rc = lq_fail(err, "the log holds %zu events, start said %d", rep->type == REDIS_REPLY_ARRAY ? rep->elements : 0,
                     logged);
    for (int i = 0; rc == 0 && i < logged; i++) {
        lq_event ev;
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_STRING || lq_event_decode(e->str, e->len, &ev, err)) {
            rc = lq_fail(err, "log event %d is unreadable", i);
            break;
        }
        if (ev.type != LQ_EVENT_TOKEN || ev.index != i) rc = lq_fail(err, "log event %d is not token %d", i, i);
        ids[i] = ev.token;
        lq_event_clear(&ev);
    }
    freeReplyObject(rep);
    if (rc) free(ids);
    else *out = ids;
    return rc;
}

static qjob *job_new(lq_queue *q, const qentry *e, const lq_job *job, long long attempts) {
    qjob *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    snprintf(j->id, sizeof j->id, "%s", job->id);
    snprintf(j->adapter, sizeof j->adapter, "%s", job->adapter);
    snprintf(j->stream, sizeof j->stream, "%s", e->stream->key);
    snprintf(j->entry, sizeof j->entry, "%s", e->entry);
    snprintf(j->attempts, sizeof j->attempts, "%lld", attempts);
    lq_key_job(q->r, job->id, j->k_job);
    lq_key_log(q->r, job->id, j->k_log);
    lq_key_channel(q->r, job->id, j->k_ch);
    j->raw = malloc(e->body_len ? e->body_len : 1);
    if (!j->raw) {
        free(j);
        return NULL;
    }
    memcpy(j->raw, e->body, e->body_len);
    j->raw_len = e->body_len;
    j->created_ms = job->created_ms;
    j->started_ms = lq_time_ms();
    j->n_prompt = job->n_prompt;
    return j;
}

/* Hands a job to the scheduler, with its logged tokens. */
static void submit_job(lq_queue *q, qjob *j, const lq_job *job) {
    lq_error err;
    if (lq_scheduler_submit(q->s, job, j->resume, j->n_resume, j, &err)) {
        j->ended = 1;
        set_error(j, err.msg, "internal");
    } else {
        lq_log("job %s started: adapter '%s', %d prompt tokens, max_new_tokens %d, attempt %s, %d tokens logged before",
               job->id, job->adapter[0] ? job->adapter : "(base)", job->n_prompt, job->max_new_tokens, j->attempts,
               j->n_resume);
    }
    free(j->resume);
    j->resume = NULL;
}

/* Asks for the job's adapter: READY (pinned), WAIT (the job is parked) or FAILED (the job has ended). */
static lq_adapter_state need_adapter(lq_queue *q, qjob *j) {
    char msg[700];
    const char *type;
    lq_adapter_state st = lq_adapters_want(q->c.adapters, j->adapter, msg, sizeof msg, &type);
    if (st == LQ_ADAPTER_READY) {
        j->pinned = 1;
    } else if (st == LQ_ADAPTER_WAIT) {
        if (!j->parked) {
            j->parked = 1;
            q->n_parked++;
            lq_log("job %s waits for adapter '%s' to load", j->id, j->adapter);
        }
    } else {
        j->ended = 1;
        set_error(j, msg, type);
    }
    return st;
}

/* The loader finished `name`: its parked jobs run, or end with its error. */
static void on_adapter_done(void *ctx, const char *name, int ok) {
    lq_queue *q = ctx;
    (void)ok;
    for (qjob *j = q->jobs; j; j = j->next) {
        if (!j->parked || strcmp(j->adapter, name)) continue;
        j->parked = 0;
        q->n_parked--;
        if (need_adapter(q, j) != LQ_ADAPTER_READY) continue; /* failed (ended), or parked again */
        lq_job job;
        lq_error err;
        if (lq_job_decode(j->raw, j->raw_len, &job, &err)) {
            j->ended = 1;
            set_error(j, err.msg, "internal");
            continue;
        }
        submit_job(q, j, &job);
        lq_job_clear(&job);
    }
}

/* `start` said run: hand the job to the scheduler, with its logged tokens. */
static void run_job(lq_queue *q, const qentry *e, const lq_job *job, const redisReply *rep) {
    long long attempts = lq_reply_int(rep, 1), logged = lq_reply_int(rep, 2);
    qjob *j = job_new(q, e, job, attempts);
    int32_t *resume = NULL;
    if (!j) {
        lq_log("job %s: out of memory starting it", job->id);
        return; /* the entry stays pending here; another worker claims it */
    }
    j->next = q->jobs;
    q->jobs = j;
    q->n_jobs++;
    q->held_dirty = 1;
    lq_error err;
    if (logged > 0 && read_resume(q, j, (int)logged, &resume, &err)) {
        if (!lq_redis_up(q->r)) { /* Redis went away: the entry stays ours; the keep-alive or a claim brings it back */
            q->jobs = j->next, q->n_jobs--, job_free(j);
            return;
        }
        j->ended = 1;
        set_error(j, err.msg, "internal");
        return;
    }
    j->n_resume = j->confirmed = (int)(logged > 0 ? logged : 0);
    j->resume = resume;
    if (job->adapter[0] && need_adapter(q, j) != LQ_ADAPTER_READY) return; /* parked, or failed */
    submit_job(q, j, job);
}

static void on_start_reply(lq_queue *q, const qentry *e, const lq_job *job, const redisReply *rep, verdict *missing) {
    const char *w = lq_reply_word(rep);
    if (w && !strcmp(w, "run")) {
        run_job(q, e, job, rep);
    } else if (w && !strcmp(w, "over")) {
        lq_log("job %s (entry %s) was already over (%s); acknowledged", job->id, e->entry, lq_reply_str(rep, 1));
    } else if (w && !strcmp(w, "dead")) {
        lq_log("job %s: dead-lettered after %d attempts", job->id, q->c.max_attempts);
    } else if (w && !strcmp(w, "missing")) {
        snprintf(missing->id, sizeof missing->id, "%s", job->id);
        snprintf(missing->error, sizeof missing->error,
                 "job %s has no status record (it expired, or the entry was added without the enqueue script)",
                 job->id);
        missing->type = "validation";
    } else {
        lq_log("job %s: start failed: %s", job->id, rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "bad reply");
    }
}

static void log_bad_entry(const qentry *e, const verdict *v, const redisReply *rep) {
    const char *w = lq_reply_word(rep);
    if (w && !strcmp(w, "ok"))
        lq_log("entry %s of %s failed as job %s (%s): %s", e->entry, e->stream->key, v->id, v->type, v->error);
    else
        lq_log("entry %s of %s: failing it as job %s gave %s", e->entry, e->stream->key, v->id,
               w ? w : rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "no reply");
}

/* Fails the entries in bad[] with their verdicts, in one pipeline. */
static void fail_entries(lq_queue *q, const qentry *const *bad, const verdict *v, int n) {
    if (n == 0) return;
    lq_script_call *calls = malloc(sizeof *calls * (size_t)n);
    char (*keys)[3][LQ_KEY_MAX] = malloc(sizeof *keys * (size_t)n);
    redisReply **replies = calloc((size_t)n, sizeof *replies);
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_time_ms());
    if (calls && keys && replies) {
        for (int i = 0; i < n; i++) add_fail_entry(q, &calls[i], bad[i], &v[i], keys[i], now);
        lq_error err;
        int got = lq_redis_eval_pipeline(q->r, calls, n, replies, &err);
        for (int i = 0; i < got; i++) log_bad_entry(bad[i], &v[i], replies[i]);
        if (got < n) lq_log("redis: %s; %d bad entries left pending", err.msg, n - got);
        for (int i = 0; i < n; i++)
            if (replies[i]) freeReplyObject(replies[i]);
    }
    free(calls), free(keys), free(replies);
}

/* Checks the entries, fails the bad ones, starts the good ones (one pipeline each). */
static void handle_entries(lq_queue *q, const qentry *es, int n) {
    if (n == 0) return;
    lq_job *jobs = calloc((size_t)n, sizeof *jobs);
    verdict *v = calloc((size_t)n, sizeof *v);
    const qentry **bad = calloc((size_t)n, sizeof *bad);
    const qentry **good = calloc((size_t)n, sizeof *good);
    lq_script_call *calls = calloc((size_t)n, sizeof *calls);
    char (*keys)[3][LQ_KEY_MAX] = calloc((size_t)n, sizeof *keys);
    redisReply **replies = calloc((size_t)n, sizeof *replies);
    int n_bad = 0, n_good = 0;
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)lq_time_ms());
    if (!jobs || !v || !bad || !good || !calls || !keys || !replies) {
        lq_log("out of memory reading %d entries; they stay pending", n);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (job_by_entry(q, es[i].stream->key, es[i].entry)) continue; /* ours already (claimed back) */
        if (check_entry(q, &es[i], &jobs[n_good], &v[n_bad]) == 0) {
            add_start(q, &calls[n_good], &es[i], &jobs[n_good], keys[n_good], now);
            good[n_good++] = &es[i];
        } else {
            bad[n_bad++] = &es[i];
        }
    }
    fail_entries(q, bad, v, n_bad);
    lq_error err;
    int got = n_good ? lq_redis_eval_pipeline(q->r, calls, n_good, replies, &err) : 0;
    if (got < n_good) lq_log("redis: %s; %d entries left pending", err.msg, n_good - got);
    n_bad = 0;
    for (int i = 0; i < got; i++) {
        v[n_bad].id[0] = 0;
        on_start_reply(q, good[i], &jobs[i], replies[i], &v[n_bad]);
        if (v[n_bad].id[0]) bad[n_bad++] = good[i];
    }
    fail_entries(q, bad, v, n_bad);
    for (int i = 0; i < n_good; i++) lq_job_clear(&jobs[i]);
out:
    for (int i = 0; replies && i < n; i++)
        if (replies[i]) freeReplyObject(replies[i]);
    free(jobs), free(v), free(bad), free(good), free(calls), free(keys), free(replies);
}

/* ---- reading ---- */

/* The scheduler's free slots less the parked jobs, which will need them. */
static int slots_free(const lq_queue *q) {
    int n = lq_scheduler_free_slots(q->s) - q->n_parked;
    return n > 0 ? n : 0;
}

static int entry_fields(const redisReply *e, const qstream *s, qentry *out) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[0]->len > ENTRY_ID_MAX)
        return -1; /* a deleted entry (nil) or something unexpected */
    memset(out, 0, sizeof *out);
    out->stream = s;
    out->entry = e->element[0]->str;
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return 0; /* no fields: check_entry reports it */
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *val = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING) continue;
        if (!strcmp(k->str, "id") && !out->id) out->id = val->str, out->id_len = val->len;
        else if (!strcmp(k->str, "job") && !out->body) out->body = val->str, out->body_len = val->len;
    }
    return 0;
}

static const qstream *stream_by_key(const lq_queue *q, const char *key) {
    for (int i = 0; i < q->n_streams; i++)
        if (!strcmp(q->streams[i].key, key)) return &q->streams[i];
    return NULL;
}

/* Entries of P queues:new name a stream that just got its first job: look at
 * the queues set on this turn instead of at the next tick. They are only a
 * wake-up call, acknowledged at once. */
static void on_new_queues(lq_queue *q, const redisReply *list) {
    if (list->type != REDIS_REPLY_ARRAY || list->elements == 0) return;
    q->t_discover = 0;
    const char **argv = malloc(sizeof *argv * (list->elements + 3));
    if (!argv) return;
    int argc = 0;
    argv[argc++] = "XACK", argv[argc++] = q->k_new, argv[argc++] = LQ_GROUP;
    for (size_t k = 0; k < list->elements; k++) {
        const redisReply *e = list->element[k];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && e->element[0]->type == REDIS_REPLY_STRING)
            argv[argc++] = e->element[0]->str;
    }
    lq_error err;
    redisReply *rep = argc > 3 ? lq_redis_argv(q->r, argc, argv, NULL, &err) : NULL;
    if (rep) freeReplyObject(rep);
    free(argv);
}

/* Collects the entries of an XREADGROUP reply ([[stream, [entry...]]...]). */
static int collect_read(lq_queue *q, const redisReply *rep, qentry **out) {
    int n = 0, cap = 0;
    *out = NULL;
    if (rep->type != REDIS_REPLY_ARRAY) return 0;
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *sr = rep->element[i];
        if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2 || sr->element[0]->type != REDIS_REPLY_STRING) continue;
        if (!strcmp(sr->element[0]->str, q->k_new)) {
            on_new_queues(q, sr->element[1]);
            continue;
        }
        const qstream *s = stream_by_key(q, sr->element[0]->str);
        const redisReply *list = sr->element[1];
        if (!s || list->type != REDIS_REPLY_ARRAY) continue;
        for (size_t k = 0; k < list->elements; k++) {
            if (n == cap) {
                qentry *p = realloc(*out, sizeof *p * (size_t)(cap = cap ? cap * 2 : 16));
                if (!p) return n;
                *out = p;
            }
            if (entry_fields(list->element[k], s, &(*out)[n]) == 0) n++;
        }
    }
    return n;
}

static int is_resident(lq_queue *q, const qstream *s) {
    return !s->adapter[0] || lq_scheduler_is_resident(q->s, s->adapter);
}

/* Usable streams, resident adapters first, each group rotated by q->rotate. */
static int read_order(lq_queue *q, int *order) {
    int n = 0;
    for (int pass = 1; pass >= 0; pass--) {
        int first = n;
        for (int i = 0; i < q->n_streams; i++)
            if (q->streams[i].usable && is_resident(q, &q->streams[i]) == pass) order[n++] = i;
        int m = n - first;
        if (m > 1) { /* rotate this group */
            int shift = (int)(q->rotate % (unsigned)m), tmp[m];
            for (int k = 0; k < m; k++) tmp[k] = order[first + (k + shift) % m];
            memcpy(order + first, tmp, sizeof tmp);
        }
    }
    q->rotate++;
    return n;
}

/* One XREADGROUP over the streams order[0..n) and P queues:new; returns the
 * job entries handled, -1 on error. */
static int read_streams(lq_queue *q, const int *order, int n, int count, int block_ms) {
    int argc = 0;
    const char **argv = malloc(sizeof *argv * (size_t)(12 + 2 * n));
    if (!argv) return -1;
    char count_s[16], block_s[16];
    snprintf(count_s, sizeof count_s, "%d", count);
    snprintf(block_s, sizeof block_s, "%d", block_ms);
    argv[argc++] = "XREADGROUP", argv[argc++] = "GROUP", argv[argc++] = LQ_GROUP, argv[argc++] = q->c.worker_id;
    argv[argc++] = "COUNT", argv[argc++] = count_s;
    if (block_ms > 0) argv[argc++] = "BLOCK", argv[argc++] = block_s;
    argv[argc++] = "STREAMS";
    for (int i = 0; i < n; i++) argv[argc++] = q->streams[order[i]].key;
    if (q->new_ready) argv[argc++] = q->k_new;
    for (int i = 0; i < n + q->new_ready; i++) argv[argc++] = ">";
    if (n + q->new_ready == 0) {
        free(argv);
        return 0;
    }
    lq_error err;
    redisReply *rep = lq_redis_argv(q->r, argc, argv, NULL, &err);
    free(argv);
    if (!rep) {
        if (lq_redis_up(q->r) && strstr(err.msg, "NOGROUP")) {
            lq_log("%s; looking at the streams again", err.msg);
            q->n_streams = 0; /* discovery re-creates the groups */
            q->new_ready = 0;
            q->t_discover = 0;
        } else if (lq_redis_up(q->r)) {
            lq_log("XREADGROUP: %s", err.msg);
        }
        return -1;
    }
    qentry *es = NULL;
    int got = collect_read(q, rep, &es);
    handle_entries(q, es, got);
    free(es);
    freeReplyObject(rep);
    return got;
}

/* Reads as many entries as there are free slots, fairly (see the top of the file). */
static void read_new(lq_queue *q, int may_block) {
    int free_slots = slots_free(q);
    int usable = 0;
    for (int i = 0; i < q->n_streams; i++) usable += q->streams[i].usable;
    if (free_slots <= 0 || usable == 0) {
        if (may_block && free_slots > 0 && q->new_ready) read_streams(q, NULL, 0, 1, q->c.block_ms);
        else if (may_block) lq_sleep_ms(q->c.block_ms);
        return;
    }
    int *order = malloc(sizeof *order * (size_t)usable);
    if (!order) return;
    int n = read_order(q, order);
    if (free_slots >= n) {
        read_streams(q, order, n, free_slots / n, may_block ? q->c.block_ms : 0);
    } else {
        int got_any = 0;
        for (int first = 0; first < n && free_slots > 0 && lq_redis_up(q->r); first += free_slots) {
            int m = n - first < free_slots ? n - first : free_slots;
            int got = read_streams(q, order + first, m, 1, 0);
            if (got < 0) break;
            free_slots -= got;
            got_any += got;
        }
        if (!got_any && may_block && lq_redis_up(q->r)) read_streams(q, order, n, 1, q->c.block_ms);
    }
    free(order);
}

/* ---- housekeeping ---- */

static int stream_add(lq_queue *q, qstream *list, int n, const char *key, const qstream *old) {
    qstream *s = &list[n];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    if (old) {
        *s = *old;
        return 0;
    }
    if (!lq_key_queue_adapter(q->r, key, s->adapter)) {
        lq_log("'%s' in %s is not a queue key of this prefix; ignoring it", key, q->k_queues);
        return 0;
    }
    snprintf(s->cursor, sizeof s->cursor, "0-0");
    /* The group may not exist yet (a stream made by hand); create it at 0 so it sees every entry. */
    lq_error err;
    redisReply *rep = lq_redis_cmd(q->r, &err, "XGROUP CREATE %s %s 0 MKSTREAM", key, LQ_GROUP);
    if (rep || strstr(err.msg, "BUSYGROUP")) {
        s->usable = 1;
        lq_log("reading queue %s (adapter %s)", key, s->adapter[0] ? s->adapter : "(base)");
    } else if (lq_redis_up(q->r)) {
        lq_log("cannot read %s: %s", key, err.msg);
    }
    if (rep) freeReplyObject(rep);
    return lq_redis_up(q->r) ? 0 : -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The group on P queues:new, at "$": streams announced before this worker
 * looked are in the queues set it is about to read. */
static void join_new_queues(lq_queue *q) {
    lq_error err;
    redisReply *rep = lq_redis_cmd(q->r, &err, "XGROUP CREATE %s %s $ MKSTREAM", q->k_new, LQ_GROUP);
    if (rep || strstr(err.msg, "BUSYGROUP")) q->new_ready = 1;
    else if (lq_redis_up(q->r)) lq_log("cannot follow %s: %s", q->k_new, err.msg);
    if (rep) freeReplyObject(rep);
}

/* SMEMBERS P queues: new streams join (with their group), vanished ones leave. */
static void discover(lq_queue *q) {
    if (!q->new_ready) join_new_queues(q);
    lq_error err;
    redisReply *rep = lq_redis_cmd(q->r, &err, "SMEMBERS %s", q->k_queues);
    if (!rep) return;
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return;
    }
    size_t n = 0;
    const char **keys = calloc(rep->elements ? rep->elements : 1, sizeof *keys);
    for (size_t i = 0; keys && i < rep->elements; i++)
        if (rep->element[i]->type == REDIS_REPLY_STRING && rep->element[i]->len < LQ_KEY_MAX)
            keys[n++] = rep->element[i]->str;
    qsort(keys, n, sizeof *keys, cmp_str);
    qstream *list = keys ? calloc(n ? n : 1, sizeof *list) : NULL;
    int m = 0;
    for (size_t i = 0; list && i < n; i++)
        if (stream_add(q, list, m, keys[i], stream_by_key(q, keys[i])) == 0) m++;
        else break;
    free(keys);
    freeReplyObject(rep);
    if (!list || !lq_redis_up(q->r)) {
        free(list);
        return;
    }
    free(q->streams);
    q->streams = list;
    q->n_streams = m;
}

/* XAUTOCLAIM entries idle past CLAIM_MIN_IDLE_MS (their worker died) and start them. */
static void auto_claim(lq_queue *q) {
    char idle[24];
    snprintf(idle, sizeof idle, "%d", q->c.claim_min_idle_ms);
    for (int i = 0; i < q->n_streams && lq_redis_up(q->r); i++) {
        qstream *s = &q->streams[i];
        int free_slots = slots_free(q);
        if (free_slots <= 0) return;
        if (!s->usable) continue;
        char count[16];
        snprintf(count, sizeof count, "%d", free_slots);
        const char *argv[] = {"XAUTOCLAIM", s->key, LQ_GROUP, q->c.worker_id, idle, s->cursor, "COUNT", count};
        lq_error err;
        redisReply *rep = lq_redis_argv(q->r, 8, argv, NULL, &err);
        if (!rep) {
            if (lq_redis_up(q->r)) lq_log("XAUTOCLAIM on %s: %s", s->key, err.msg);
            continue;
        }
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 && rep->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[0]->len <= ENTRY_ID_MAX) {
            snprintf(s->cursor, sizeof s->cursor, "%s", rep->element[0]->str);
            const redisReply *list = rep->element[1];
            int n = 0;
            qentry *es = list->type == REDIS_REPLY_ARRAY && list->elements ? calloc(list->elements, sizeof *es) : NULL;
            for (size_t k = 0; es && k < list->elements; k++)
                if (entry_fields(list->element[k], s, &es[n]) == 0 && !job_by_entry(q, s->key, es[n].entry)) n++;
            if (n) lq_log("claimed %d idle entr%s of %s", n, n == 1 ? "y" : "ies", s->key);
            handle_entries(q, es, n);
            free(es);
        }
        freeReplyObject(rep);
    }
}

static int due(int64_t *last, int64_t now, int every_ms) {
    if (*last && now - *last < every_ms) return 0;
    *last = now;
    return 1;
}

/* ---- admin commands: the stream P control ----
 *
 * Every worker reads every entry (XREAD, no group), from the last entry that
 * existed when it first looked: commands are for the workers alive when they
 * are sent. Fields: op (load | unload), adapter. */

static void control_apply(lq_queue *q, const char *op, const char *adapter) {
    char why[700];
    if (!strcmp(op, "load")) {
        if (lq_adapters_preload(q->c.adapters, adapter, why, sizeof why) == 0) lq_log("admin: loading adapter '%s'", adapter);
        else lq_log("admin: not loading adapter '%s': %s", adapter, why);
    } else if (!strcmp(op, "unload")) {
        if (lq_adapters_unload(q->c.adapters, adapter) == 0) lq_log("admin: adapter '%s' unloaded", adapter);
        else lq_log("admin: adapter '%s' is not resident or is in use; not unloaded", adapter);
    } else {
        lq_log("admin: unknown op '%s' on the control stream; ignored", op);
    }
}

static void control_entry(lq_queue *q, const redisReply *e) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[0]->len > ENTRY_ID_MAX)
        return;
    snprintf(q->control_id, sizeof q->control_id, "%s", e->element[0]->str);
    const redisReply *f = e->element[1];
    const char *op = NULL, *adapter = NULL;
    for (size_t i = 0; f->type == REDIS_REPLY_ARRAY && i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && f->element[i + 1]->type == REDIS_REPLY_STRING) {
            if (!strcmp(f->element[i]->str, "op")) op = f->element[i + 1]->str;
            else if (!strcmp(f->element[i]->str, "adapter")) adapter = f->element[i + 1]->str;
        }
    if (op && adapter) control_apply(q, op, adapter);
}

static void read_control(lq_queue *q) {
    char key[LQ_KEY_MAX];
    lq_key_control(q->r, key);
    lq_error err;
    redisReply *rep;
    if (!q->control_id[0]) { /* first look: start after the newest entry */
        if (!(rep = lq_redis_cmd(q->r, &err, "XREVRANGE %s + - COUNT 1", key))) return;
        snprintf(q->control_id, sizeof q->control_id, "0-1");
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
            rep->element[0]->elements == 2 && rep->element[0]->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[0]->element[0]->len <= ENTRY_ID_MAX)
            snprintf(q->control_id, sizeof q->control_id, "%s", rep->element[0]->element[0]->str);
        freeReplyObject(rep);
        return;
    }
    if (!(rep = lq_redis_cmd(q->r, &err, "XREAD COUNT 100 STREAMS %s %s", key, q->control_id))) return;
    if (rep->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < rep->elements; i++) {
            const redisReply *sr = rep->element[i];
            if (sr->type != REDIS_REPLY_ARRAY || sr->elements != 2 || sr->element[1]->type != REDIS_REPLY_ARRAY) continue;
            for (size_t k = 0; k < sr->element[1]->elements; k++) control_entry(q, sr->element[1]->element[k]);
        }
    freeReplyObject(rep);
}

static void housekeeping(lq_queue *q) {
    int64_t now = lq_mono_ms();
    int idle = q->c.claim_min_idle_ms;
    if (lq_redis_up(q->r) && due(&q->t_discover, now, q->c.discover_ms)) discover(q);
    if (lq_redis_up(q->r) && due(&q->t_control, now, CONTROL_MS)) read_control(q);
    if (lq_redis_up(q->r) && !q->draining && due(&q->t_autoclaim, now, idle / 4 > 50 ? idle / 4 : 50)) auto_claim(q);
}

/* ---- the keeper: heartbeat and keep-alive on a thread of their own ----
 *
 * A step can take long (a big prefill on a CPU), even longer than the claim
 * threshold; if heartbeats and keep-alives waited for it between steps, other
 * workers would take this worker's jobs away while it is still working on
 * them. So a second thread with its own connection sends them, from a
 * snapshot the main loop refreshes every turn. It vouches for the main loop
 * only while the loop keeps turning: after STALL_MS (or 3 x
 * CLAIM_MIN_IDLE_MS, if longer) without a turn, it goes quiet, the heartbeat
 * expires and the entries become claimable, as a dead worker's would. */

enum { STALL_MS = 60000 };

static void keeper_snapshot_held(lq_queue *q) {
    keeper *k = &q->k;
    if (k->cap_held < q->n_jobs) {
        held_entry *p = realloc(k->held, sizeof *p * (size_t)q->n_jobs);
        if (!p) return; /* keep the old list: better than none */
        k->held = p;
        k->cap_held = q->n_jobs;
    }
    k->n_held = 0;
    for (qjob *j = q->jobs; j; j = j->next, k->n_held++) {
        snprintf(k->held[k->n_held].stream, sizeof k->held[k->n_held].stream, "%s", j->stream);
        snprintf(k->held[k->n_held].entry, sizeof k->held[k->n_held].entry, "%s", j->entry);
    }
    q->held_dirty = 0;
}

/* Main thread, every turn: "still alive", and what the heartbeat should say. */
static void keeper_update(lq_queue *q) {
    keeper *k = &q->k;
    const char *adapters = lq_scheduler_resident_list(q->s);
    lq_adapters_stats st;
    lq_adapters_stats_get(q->c.adapters, &st);
    pthread_mutex_lock(&k->mu);
    lq_adapters_host_list(q->c.adapters, k->host_adapters, sizeof k->host_adapters);
    k->loads_host = st.loads_host;
    k->loads_disk = st.loads_disk;
    k->turn_ms = lq_mono_ms();
    k->running = lq_scheduler_running(q->s);
    k->draining = q->draining;
    k->rate = tokens_per_s(q);
    k->total = q->tokens_total;
    snprintf(k->adapters, sizeof k->adapters, "%s", adapters ? adapters : "");
    if (q->held_dirty) keeper_snapshot_held(q);
    pthread_mutex_unlock(&k->mu);
}

typedef struct heartbeat_view {
    int running, draining;
    double rate;
    uint64_t total;
    char adapters[sizeof ((keeper *)0)->adapters];
    char host_adapters[sizeof ((keeper *)0)->host_adapters];
    long loads_host, loads_disk;
} heartbeat_view;

static void send_heartbeat(lq_queue *q, lq_redis *r, const heartbeat_view *v) {
    char key[LQ_KEY_MAX], workers[LQ_KEY_MAX], seen[24], started[24], pid[16], running[16], capacity[16], rate[32],
        total[24], loads_host[24], loads_disk[24];
    snprintf(seen, sizeof seen, "%lld", (long long)lq_time_ms());
    snprintf(started, sizeof started, "%lld", (long long)q->started_ms);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(running, sizeof running, "%d", v->running);
    snprintf(capacity, sizeof capacity, "%d", q->c.capacity);
    snprintf(rate, sizeof rate, "%.1f", v->rate);
    snprintf(total, sizeof total, "%llu", (unsigned long long)v->total);
    snprintf(loads_host, sizeof loads_host, "%ld", v->loads_host);
    snprintf(loads_disk, sizeof loads_disk, "%ld", v->loads_disk);
    const char *argv[] = {"HSET", lq_key_worker(r, q->c.worker_id, key), "id", q->c.worker_id, "host", q->host,
                          "pid", pid, "device", q->c.device ? q->c.device : "cpu", "model", q->c.model ? q->c.model : "",
                          "adapters", v->adapters, "host_adapters", v->host_adapters, "adapter_loads_host", loads_host,
                          "adapter_loads_disk", loads_disk, "running", running, "capacity", capacity, "tokens_per_s", rate,
                          "tokens_total", total, "started_ms", started, "seen_ms", seen, "state",
                          v->draining ? "draining" : "serving"};
    lq_error err;
    redisReply *rep = lq_redis_argv(r, (int)(sizeof argv / sizeof argv[0]), argv, NULL, &err);
    if (rep) freeReplyObject(rep);
    if (rep && (rep = lq_redis_cmd(r, &err, "PEXPIRE %s %d", key, HEARTBEAT_TTL_MS))) freeReplyObject(rep);
    if (rep && (rep = lq_redis_cmd(r, &err, "ZADD %s %s %s", lq_key_workers(r, workers), seen, q->c.worker_id)))
        freeReplyObject(rep);
}

/* XCLAIM <stream> workers <wid> 0 <entries> JUSTID, per stream: our entries stop looking idle. */
static void send_keep_alive(lq_queue *q, lq_redis *r, const held_entry *held, int n) {
    const char **argv = malloc(sizeof *argv * (size_t)(n + 6));
    if (!argv) return;
    for (int i = 0; i < n && lq_redis_up(r); i++) {
        int seen_before = 0;
        for (int k = 0; k < i && !seen_before; k++) seen_before = !strcmp(held[k].stream, held[i].stream);
        if (seen_before) continue; /* this stream's entries went with its first one */
        int argc = 0;
        argv[argc++] = "XCLAIM", argv[argc++] = held[i].stream, argv[argc++] = LQ_GROUP, argv[argc++] = q->c.worker_id;
        argv[argc++] = "0";
        for (int k = i; k < n; k++)
            if (!strcmp(held[k].stream, held[i].stream)) argv[argc++] = held[k].entry;
        argv[argc++] = "JUSTID";
        lq_error err;
        redisReply *rep = lq_redis_argv(r, argc, argv, NULL, &err);
        if (rep) freeReplyObject(rep);
        else if (lq_redis_up(r)) lq_log("keep-alive of %s: %s", held[i].stream, err.msg);
    }
    free(argv);
}

static void wait_ms(keeper *k, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&k->wake, &k->mu, &ts);
}

/* One tick of the keeper, called with k->mu held; drops it around Redis calls. */
static void keeper_tick(lq_queue *q, int64_t *next_beat, int64_t *next_keep, int *stalled) {
    keeper *k = &q->k;
    int64_t now = lq_mono_ms();
    int idle = q->c.claim_min_idle_ms;
    int stall_ms = 3 * idle > STALL_MS ? 3 * idle : STALL_MS;
    if (now - k->turn_ms > stall_ms) {
        if (!*stalled) lq_log("the main loop has not turned for %lld ms; no more heartbeats until it does",
                              (long long)(now - k->turn_ms));
        *stalled = 1;
        return;
    }
    *stalled = 0;
    int down = !lq_redis_up(k->r); /* only this thread touches k->r */
    int beat = now >= *next_beat, keep = (now >= *next_keep || down) && k->n_held > 0;
    if (!beat && !keep) return;
    heartbeat_view v = {k->running, k->draining, k->rate, k->total, "", "", k->loads_host, k->loads_disk};
    memcpy(v.adapters, k->adapters, sizeof v.adapters);
    memcpy(v.host_adapters, k->host_adapters, sizeof v.host_adapters);
    int n = keep ? k->n_held : 0;
    held_entry *held = n ? malloc(sizeof *held * (size_t)n) : NULL;
    if (held) memcpy(held, k->held, sizeof *held * (size_t)n);
    pthread_mutex_unlock(&k->mu);
    lq_error err;
    if (down) lq_redis_connect(k->r, &err); /* one attempt per tick; then our entries first, they have been idle */
    if (lq_redis_up(k->r)) {
        if (keep && held) send_keep_alive(q, k->r, held, n);
        if (beat) send_heartbeat(q, k->r, &v);
    }
    free(held);
    pthread_mutex_lock(&k->mu);
    if (!lq_redis_up(k->r)) {
        *next_beat = *next_keep = lq_mono_ms() + 250; /* retry soon, without spinning */
        return;
    }
    if (beat) *next_beat = now + HEARTBEAT_MS;
    if (keep) *next_keep = now + (idle / 3 > 1 ? idle / 3 : 1);
}

static void *keeper_main(void *arg) {
    lq_queue *q = arg;
    keeper *k = &q->k;
    int64_t next_beat = 0, next_keep = 0;
    int stalled = 0;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        keeper_tick(q, &next_beat, &next_keep, &stalled);
        if (k->stop) break;
        int64_t now = lq_mono_ms(), next = next_beat < next_keep ? next_beat : next_keep;
        int wait = next > now ? (int)(next - now) : 0;
        wait_ms(k, wait < 10 ? 10 : wait > HEARTBEAT_MS ? HEARTBEAT_MS : wait);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

static int keeper_start(lq_queue *q, lq_error *err) {
    keeper *k = &q->k;
    if (!(k->r = lq_redis_clone(q->r, err))) return -1;
    if (lq_thread_start(&k->thread, keeper_main, q) != 0) {
        lq_redis_free(k->r);
        k->r = NULL;
        return lq_fail(err, "cannot start the heartbeat thread");
    }
    k->started = 1;
    return 0;
}

static void keeper_stop(lq_queue *q) {
    keeper *k = &q->k;
    if (!k->started) return;
    pthread_mutex_lock(&k->mu);
    k->stop = 1;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    k->started = 0;
    lq_redis_free(k->r);
    k->r = NULL;
}

/* ---- the loop ---- */

/* Connects again, with backoff. Gives up only on quit, or on drain when
 * nothing is running (then there is nothing left to deliver). */
static int reconnect(lq_queue *q, volatile sig_atomic_t *drain, volatile sig_atomic_t *quit) {
    lq_error err;
    const char *again = q->connected_once ? "re" : "";
    int idle = !q->jobs && lq_scheduler_running(q->s) == 0;
    if (q->connected_once) lq_log("redis %s is unreachable; reconnecting", lq_redis_url_text(q->r));
    if (lq_redis_connect_retry(q->r, idle ? drain : quit, log_line, &err)) return -1;
    lq_log("%sconnected to redis %s", again, lq_redis_url_text(q->r));
    q->connected_once = 1;
    q->t_discover = 0; /* catch up at once */
    return 0;
}

static void remove_heartbeat(lq_queue *q) {
    char key[LQ_KEY_MAX];
    lq_error err;
    redisReply *rep = lq_redis_cmd(q->r, &err, "DEL %s", lq_key_worker(q->r, q->c.worker_id, key));
    if (rep) freeReplyObject(rep);
    if (rep && (rep = lq_redis_cmd(q->r, &err, "ZREM %s %s", lq_key_workers(q->r, key), q->c.worker_id)))
        freeReplyObject(rep);
}

/* One turn of the loop (see the top of the file). 1: stop; -1: engine failure. */
static int turn(lq_queue *q, volatile sig_atomic_t *drain, volatile sig_atomic_t *quit, lq_error *err) {
    keeper_update(q);
    if (!lq_redis_up(q->r) && reconnect(q, drain, quit)) return 1;
    if (deliver(q)) return 0;
    if (*drain && !q->draining) {
        q->draining = 1;
        lq_log("draining: no new jobs; finishing %d running", q->n_jobs);
    }
    housekeeping(q);
    if (!lq_redis_up(q->r)) return 0;
    int busy = lq_scheduler_running(q->s) > 0 || q->jobs;
    if (q->draining && !busy) return 1;
    lq_adapters_poll(q->c.adapters, on_adapter_done, q);
    if (!q->draining) read_new(q, !busy);
    if (!lq_redis_up(q->r)) return 0;
    if (step(q, err) < 0) {
        lq_log("engine failure: %s", err->msg);
        return -1;
    }
    if (q->n_parked > 0 && lq_scheduler_running(q->s) == 0 && !undelivered(q))
        lq_adapters_wait(q->c.adapters, 20); /* only loads to wait for: not a spin */
    return 0;
}

int lq_queue_run(lq_queue *q, volatile sig_atomic_t *drain, volatile sig_atomic_t *quit, lq_error *err) {
    keeper_update(q);
    if (keeper_start(q, err)) return -1;
    int rc = 0;
    while (!*quit && (rc = turn(q, drain, quit, err)) == 0) {
    }
    keeper_stop(q);
    if (rc < 0) return -1;
    if (lq_redis_up(q->r)) remove_heartbeat(q);
    lq_log("stopped: %llu jobs finished, %llu failed, %llu tokens generated%s", (unsigned long long)q->finished,
           (unsigned long long)q->failed, (unsigned long long)q->tokens_total,
           q->jobs ? "; unfinished jobs are left to other workers" : "");
    return 0;
}

lq_queue *lq_queue_new(lq_redis *r, lq_scheduler *s, const lq_queue_config *c, lq_error *err) {
    lq_queue *q = calloc(1, sizeof *q);
    if (!q) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    q->r = r;
    q->s = s;
    q->c = *c;
    if (q->c.block_ms <= 0) q->c.block_ms = 250; /* also how soon an idle worker reads P control */
    if (q->c.discover_ms <= 0) q->c.discover_ms = DISCOVER_MS;
    if (q->c.claim_min_idle_ms <= 0) q->c.claim_min_idle_ms = 30000;
    if (q->c.max_attempts <= 0) q->c.max_attempts = 3;
    if (q->c.result_ttl_ms <= 0) q->c.result_ttl_ms = 3600 * 1000LL;
    if (gethostname(q->host, sizeof q->host - 1)) snprintf(q->host, sizeof q->host, "unknown");
    snprintf(q->ttl, sizeof q->ttl, "%lld", (long long)q->c.result_ttl_ms);
    snprintf(q->max_attempts, sizeof q->max_attempts, "%d", q->c.max_attempts);
    lq_key_dead(r, q->k_dead);
    lq_key_queues(r, q->k_queues);
    lq_key_queues_new(r, q->k_new);
    q->started_ms = lq_time_ms();
    pthread_mutex_init(&q->k.mu, NULL);
    pthread_cond_init(&q->k.wake, NULL);
    return q;
}

void lq_queue_free(lq_queue *q) {
    if (!q) return;
    keeper_stop(q);
    while (q->jobs) job_forget(q, q->jobs);
    free(q->streams);
    free(q->k.held);
    pthread_mutex_destroy(&q->k.mu);
    pthread_cond_destroy(&q->k.wake);
    free(q);
}
