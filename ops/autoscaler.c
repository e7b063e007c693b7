/* autoscaler.c — lorq-autoscaler: starts and drains lorq-worker processes on
 * this machine following the queue's backlog.
 *
 * Every poll it reads the pool's snapshot (ops/cluster.c): per adapter
 * stream the consumer group's lag (queued, not yet taken) and pending
 * entries (taken, running), and the live workers' heartbeats. The demand is
 * lag + pending; a worker is worth `capacity` jobs (its heartbeat's, or
 * --jobs-per-worker). The wanted count of our workers is
 *
 *     ceil(demand / jobs_per_worker) - other live workers, within [--min, --max]
 *
 * Up: when we have fewer than wanted and something is queued (lag > 0), we
 * start the difference (at most --max-step at once), then wait
 * --up-cooldown before the next start, which gives new workers time to load
 * and show up in the numbers. Workers still starting count as ours, so a
 * spike does not start a new batch every poll.
 *
 * Down: only a worker that has run nothing for --idle-seconds is drained,
 * one at a time, --down-cooldown apart, never while anything is queued and
 * never within --idle-seconds of the last start: a short lull inside a burst
 * does not throw away workers that the next second needs. Draining is
 * SIGTERM: the worker stops taking jobs, finishes its running ones and exits
 * 0, so nothing is lost; one that takes longer than --drain-timeout is killed
 * (its jobs are then claimed by other workers, docs/protocol.md).
 *
 * Each decision is one log line carrying the numbers it was made on. Workers
 * that die are reaped and replaced (with a backoff when they die young).
 * SIGTERM/SIGINT: drain every worker, wait, exit 0; a second signal kills
 * them at once. Redis being away only pauses decisions. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "proc.h"
#include "progress.h"
#include "redis.h"

#define AS_MAX_WORKERS 256
#define AS_MAX_WORKER_ARGS 64
#define AS_DEFAULT_JOBS_PER_WORKER 8

typedef struct as_opts {
    int min, max, max_step, jobs_per_worker; /* jobs_per_worker 0: from heartbeats */
    double poll_s, up_cooldown_s, down_cooldown_s, idle_s, drain_timeout_s, start_timeout_s, status_every_s;
    const char *redis_url, *prefix;
    char worker_bin[PATH_MAX];
    char *worker_argv[AS_MAX_WORKER_ARGS + 2];
    int check_only;
} as_opts;

typedef enum { W_STARTING, W_SERVING, W_DRAINING } worker_state;

typedef struct as_worker {
    lq_proc proc;
    worker_state state;
    double last_busy;  /* when it last ran a job (or started) */
    int running, capacity;
    int warned_slow;
    char id[128];
} as_worker;

typedef struct autoscaler {
    as_opts o;
    lq_redis *r;
    as_worker w[AS_MAX_WORKERS];
    int n;
    char host[256];
    double last_up, last_down, last_status, crash_backoff, next_spawn_ok;
    int redis_down_logged;
    char last_status_text[1024];
} autoscaler;

static volatile sig_atomic_t g_stop;

static void on_stop(int sig) {
    (void)sig;
    g_stop++;
}

/* One log line on stderr: "<UTC time> lorq-autoscaler[<pid>]: <message>". */
static void as_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void as_log(const char *fmt, ...) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ lorq-autoscaler[%d]: %s\n", when, (long)tv.tv_usec / 1000, (int)getpid(), msg);
}

/* ---- flags ---- */

static int usage(FILE *out) {
    fprintf(out,
            "usage: lorq-autoscaler --min N --max N [flags] [-- WORKER_ARGS...]\n"
            "  Starts lorq-worker processes (same environment: MODEL_ID, LORA_ADAPTERS, REDIS_URL, ...) on queue\n"
            "  backlog and drains idle ones, between --min and --max.\n"
            "  --min N               workers always running (default 1)\n"
            "  --max N               most workers (default 4)\n"
            "  --jobs-per-worker N   jobs one worker is worth (default: its heartbeat's capacity, else %d)\n"
            "  --max-step N          most workers started at once (default: no limit)\n"
            "  --poll-ms MS          how often to look at the queue (default 500)\n"
            "  --up-cooldown S       least time between two scale-ups (default 5)\n"
            "  --idle-seconds S      a worker idle this long may be drained (default 60)\n"
            "  --down-cooldown S     least time between two drains (default 10)\n"
            "  --drain-timeout S     a draining worker is killed after this (default 300)\n"
            "  --start-timeout S     warn when a started worker has not sent a heartbeat by then (default 120)\n"
            "  --status-every S      a status line this often while there is work (default 10; 0: never)\n"
            "  --worker-bin PATH     the worker binary (default: lorq-worker next to this program)\n"
            "  --redis-url URL       default $REDIS_URL, else %s\n"
            "  --prefix P            key prefix (default $LORQ_PREFIX, else %s)\n"
            "  --check               validate the flags and the worker binary, then exit (for unit files and tests)\n",
            AS_DEFAULT_JOBS_PER_WORKER, LQ_REDIS_DEFAULT_URL, LQ_DEFAULT_PREFIX);
    return out == stdout ? 0 : 2;
}

static int parse_int_flag(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lorq-autoscaler: %s wants an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_seconds_flag(const char *flag, const char *s, double lo, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo || v > 86400) {
        fprintf(stderr, "lorq-autoscaler: %s wants seconds in [%g, 86400], got '%s'\n", flag, lo, s);
        return -1;
    }
    *out = v;
    return 0;
}

static const char *flag_value(int argc, char **argv, int *i, const char *flag) {
    size_t n = strlen(flag);
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "lorq-autoscaler: %s needs a value\n", flag);
        return NULL;
    }
    return argv[++*i];
}

/* Which flag argv[i] is ("--min" or "--min=3" both give "--min"), from the known list. */
static const char *match_flag(const char *arg) {
    static const char *flags[] = {"--min", "--max", "--max-step", "--jobs-per-worker", "--poll-ms", "--up-cooldown",
                                  "--down-cooldown", "--idle-seconds", "--drain-timeout", "--start-timeout",
                                  "--status-every", "--worker-bin", "--redis-url", "--prefix"};
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++) {
        size_t n = strlen(flags[k]);
        if (!strncmp(arg, flags[k], n) && (arg[n] == '\0' || arg[n] == '=')) return flags[k];
    }
    return NULL;
}

static int apply_flag(as_opts *o, const char *f, const char *v) {
    int ms;
    if (!strcmp(f, "--min")) return parse_int_flag(f, v, 0, AS_MAX_WORKERS, &o->min);
    if (!strcmp(f, "--max")) return parse_int_flag(f, v, 1, AS_MAX_WORKERS, &o->max);
    if (!strcmp(f, "--max-step")) return parse_int_flag(f, v, 1, AS_MAX_WORKERS, &o->max_step);
    if (!strcmp(f, "--jobs-per-worker")) return parse_int_flag(f, v, 1, 1000000, &o->jobs_per_worker);
    if (!strcmp(f, "--poll-ms")) {
        if (parse_int_flag(f, v, 50, 60000, &ms)) return -1;
        o->poll_s = ms / 1000.0;
        return 0;
    }
    if (!strcmp(f, "--up-cooldown")) return parse_seconds_flag(f, v, 0, &o->up_cooldown_s);
    if (!strcmp(f, "--down-cooldown")) return parse_seconds_flag(f, v, 0, &o->down_cooldown_s);
    if (!strcmp(f, "--idle-seconds")) return parse_seconds_flag(f, v, 0, &o->idle_s);
    if (!strcmp(f, "--drain-timeout")) return parse_seconds_flag(f, v, 1, &o->drain_timeout_s);
    if (!strcmp(f, "--start-timeout")) return parse_seconds_flag(f, v, 1, &o->start_timeout_s);
    if (!strcmp(f, "--status-every")) return parse_seconds_flag(f, v, 0, &o->status_every_s);
    if (!strcmp(f, "--worker-bin")) {
        snprintf(o->worker_bin, sizeof o->worker_bin, "%s", v);
        return 0;
    }
    if (!strcmp(f, "--redis-url")) o->redis_url = v;
    else o->prefix = v;
    return 0;
}

static void default_opts(as_opts *o) {
    memset(o, 0, sizeof *o);
    o->min = 1;
    o->max = 4;
    o->poll_s = 0.5;
    o->up_cooldown_s = 5;
    o->down_cooldown_s = 10;
    o->idle_s = 60;
    o->drain_timeout_s = 300;
    o->start_timeout_s = 120;
    o->status_every_s = 10;
    const char *url = getenv("REDIS_URL"), *prefix = getenv("LORQ_PREFIX");
    o->redis_url = url && *url ? url : NULL;
    o->prefix = prefix && *prefix ? prefix : NULL;
}

static int default_worker_bin(as_opts *o) {
    if (o->worker_bin[0]) return 0;
    lq_error err;
    char dir[PATH_MAX];
    if (lq_exe_dir(dir, sizeof dir, &err)) {
        fprintf(stderr, "lorq-autoscaler: %s; pass --worker-bin\n", err.msg);
        return -1;
    }
    int n = snprintf(o->worker_bin, sizeof o->worker_bin, "%s/lorq-worker", dir);
    return n > 0 && (size_t)n < sizeof o->worker_bin ? 0 : -1;
}

static int check_opts(as_opts *o) {
    if (o->min > o->max) {
        fprintf(stderr, "lorq-autoscaler: --min (%d) is above --max (%d)\n", o->min, o->max);
        return -1;
    }
    if (default_worker_bin(o)) return -1;
    if (access(o->worker_bin, X_OK)) {
        fprintf(stderr, "lorq-autoscaler: worker binary %s: %s (build it with make, or pass --worker-bin)\n", o->worker_bin,
                strerror(errno));
        return -1;
    }
    return 0;
}

static int parse_opts(as_opts *o, int argc, char **argv) {
    default_opts(o);
    int i = 1, n_args = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) exit(usage(stdout));
        if (!strcmp(argv[i], "--check")) {
            o->check_only = 1;
            continue;
        }
        const char *f = match_flag(argv[i]), *v;
        if (!f) {
            fprintf(stderr, "lorq-autoscaler: unknown argument '%s' (see --help)\n", argv[i]);
            return -1;
        }
        if (!(v = flag_value(argc, argv, &i, f)) || apply_flag(o, f, v)) return -1;
    }
    o->worker_argv[n_args++] = o->worker_bin;
    for (; i < argc; i++) {
        if (n_args > AS_MAX_WORKER_ARGS) {
            fprintf(stderr, "lorq-autoscaler: at most %d worker arguments\n", AS_MAX_WORKER_ARGS);
            return -1;
        }
        o->worker_argv[n_args++] = argv[i];
    }
    o->worker_argv[n_args] = NULL;
    return check_opts(o);
}

/* ---- our workers ---- */

static int count_state(const autoscaler *a, worker_state st) {
    int n = 0;
    for (int i = 0; i < a->n; i++) n += a->w[i].state == st;
    return n;
}

static int active_workers(const autoscaler *a) { return a->n - count_state(a, W_DRAINING); }

static int spawn_worker(autoscaler *a) {
    if (a->n >= AS_MAX_WORKERS) return -1;
    as_worker *w = &a->w[a->n];
    memset(w, 0, sizeof *w);
    lq_error err;
    if (lq_proc_spawn(&w->proc, "worker", a->o.worker_argv, NULL, NULL, &err)) {
        as_log("cannot start a worker: %s", err.msg);
        return -1;
    }
    w->state = W_STARTING;
    w->last_busy = lq_now();
    a->n++;
    return 0;
}

static int spawn_workers(autoscaler *a, int k) {
    int started = 0;
    while (started < k && spawn_worker(a) == 0) started++;
    return started;
}

static void remove_worker(autoscaler *a, int i) {
    a->w[i] = a->w[--a->n];
}

/* A worker that dies within a minute of starting doubles the wait before
 * the next start (up to a minute), so a worker that cannot start does not
 * spin; one that lived longer resets it. */
static void note_unexpected_exit(autoscaler *a, const as_worker *w, double lived) {
    a->crash_backoff = lived > 60 ? 0 : (a->crash_backoff < 1 ? 1 : fmin(a->crash_backoff * 2, 60));
    a->next_spawn_ok = lq_now() + a->crash_backoff;
    char st[64];
    as_log("worker pid %d (%s) died unexpectedly (%s) after %.1f s; %d of ours left%s", (int)w->proc.pid,
           w->id[0] ? w->id : "no heartbeat yet", lq_proc_status_text(w->proc.status, st, sizeof st), lived,
           active_workers(a), a->crash_backoff > 0 ? "; backing off before replacing it" : "");
}

static void reap_workers(autoscaler *a) {
    for (int i = a->n - 1; i >= 0; i--) {
        pid_t pid = a->w[i].proc.pid;
        if (!lq_proc_reap(&a->w[i].proc)) continue;
        as_worker gone = a->w[i];
        gone.proc.pid = pid; /* for the log line */
        remove_worker(a, i);
        double now = lq_now();
        char st[64];
        if (gone.state == W_DRAINING)
            as_log("worker pid %d (%s) drained and exited (%s) after %.1f s of draining; %d of ours left", (int)pid,
                   gone.id[0] ? gone.id : "-", lq_proc_status_text(gone.proc.status, st, sizeof st),
                   now - gone.proc.term_sent, active_workers(a));
        else
            note_unexpected_exit(a, &gone, now - gone.proc.started);
    }
}

static void kill_slow_drains(autoscaler *a) {
    double now = lq_now();
    for (int i = 0; i < a->n; i++) {
        as_worker *w = &a->w[i];
        if (w->state != W_DRAINING || now - w->proc.term_sent < a->o.drain_timeout_s) continue;
        as_log("worker pid %d (%s) still draining after %.0f s (--drain-timeout); killing it, its jobs go to other workers",
               (int)w->proc.pid, w->id, now - w->proc.term_sent);
        lq_proc_signal(&w->proc, SIGKILL);
        w->proc.term_sent = now; /* do not repeat every poll */
    }
}

/* ---- heartbeats ---- */

static as_worker *ours(autoscaler *a, const lq_worker_stat *s) {
    if (strcmp(s->host, a->host)) return NULL;
    for (int i = 0; i < a->n; i++)
        if (a->w[i].proc.pid == s->pid) return &a->w[i];
    return NULL;
}

/* Matches heartbeats to our children (same host and pid); returns the
 * number of other serving workers (other hosts, other launchers). */
static int match_heartbeats(autoscaler *a, const lq_cluster *c) {
    int others = 0;
    double now = lq_now();
    for (int i = 0; i < c->n_workers; i++) {
        const lq_worker_stat *s = &c->workers[i];
        as_worker *w = ours(a, s);
        if (!w) {
            others += strcmp(s->state, "draining") != 0;
            continue;
        }
        if (w->state == W_STARTING) {
            as_log("worker pid %d is up as %s (capacity %d) after %.1f s", (int)w->proc.pid, s->id, s->capacity,
                   now - w->proc.started);
            w->state = W_SERVING;
        }
        snprintf(w->id, sizeof w->id, "%s", s->id);
        w->running = s->running;
        w->capacity = s->capacity;
        if (s->running > 0) w->last_busy = now;
    }
    return others;
}

static void warn_slow_starts(autoscaler *a) {
    double now = lq_now();
    for (int i = 0; i < a->n; i++) {
        as_worker *w = &a->w[i];
        if (w->state != W_STARTING || w->warned_slow || now - w->proc.started < a->o.start_timeout_s) continue;
        w->warned_slow = 1;
        as_log("worker pid %d has sent no heartbeat %.0f s after it started (is Redis reachable from it?)", (int)w->proc.pid,
               now - w->proc.started);
    }
}

/* ---- decisions ---- */

typedef struct decision_inputs {
    long long lag, pending, demand;
    int jobs_per_worker, jpw_assumed, others, active, want, running, capacity;
    int starting, serving, draining; /* ours, by state, before the decision */
    char streams[512];
} decision_inputs;

/* Jobs one worker is worth: the flag, else the largest capacity a heartbeat
 * reported (serving workers all run the same configuration), else a default. */
static int jobs_per_worker(const autoscaler *a, const lq_cluster *c, int *assumed) {
    *assumed = 0;
    if (a->o.jobs_per_worker) return a->o.jobs_per_worker;
    int best = 0;
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].capacity > best) best = c->workers[i].capacity;
    if (best > 0) return best;
    *assumed = 1;
    return AS_DEFAULT_JOBS_PER_WORKER;
}

static void gather_inputs(const autoscaler *a, const lq_cluster *c, int others, decision_inputs *in) {
    memset(in, 0, sizeof *in);
    in->lag = c->lag;
    in->pending = c->pending;
    in->demand = c->lag + c->pending;
    in->jobs_per_worker = jobs_per_worker(a, c, &in->jpw_assumed);
    in->others = others;
    in->active = active_workers(a);
    in->starting = count_state(a, W_STARTING);
    in->serving = count_state(a, W_SERVING);
    in->draining = count_state(a, W_DRAINING);
    in->running = c->running;
    in->capacity = c->capacity;
    long long need = (in->demand + in->jobs_per_worker - 1) / in->jobs_per_worker - others;
    in->want = (int)(need < a->o.min ? a->o.min : need > a->o.max ? a->o.max : need);
    lq_cluster_streams_text(c, in->streams, sizeof in->streams);
}

/* The numbers behind a decision, appended to its log line. */
static const char *numbers(const autoscaler *a, const decision_inputs *in, char *buf, size_t size) {
    snprintf(buf, size,
             "lag %lld pending %lld demand %lld | %d jobs/worker%s -> want %d in [%d, %d] | ours %d (starting %d, serving %d, "
             "draining %d), others %d, running %d/%d | streams %s",
             in->lag, in->pending, in->demand, in->jobs_per_worker, in->jpw_assumed ? " (assumed)" : "", in->want, a->o.min,
             a->o.max, in->active, in->starting, in->serving, in->draining, in->others, in->running, in->capacity, in->streams);
    return buf;
}

static void maybe_scale_up(autoscaler *a, const decision_inputs *in, double now) {
    if (in->want <= in->active || now < a->next_spawn_ok) return;
    int below_min = in->active < a->o.min;
    if (!below_min && (in->lag <= 0 || now - a->last_up < a->o.up_cooldown_s)) return;
    int k = in->want - in->active;
    if (!below_min && a->o.max_step && k > a->o.max_step) k = a->o.max_step;
    char nums[1024];
    int started = spawn_workers(a, k);
    as_log("scale up %d -> %d (+%d%s): %s", in->active, in->active + started, started,
           below_min && in->want == a->o.min ? ", below --min" : "",
           numbers(a, in, nums, sizeof nums));
    if (started) a->last_up = now;
}

/* The idle worker to drain: serving, running nothing for --idle-seconds;
 * the most recently started one, so long-lived workers keep their warm
 * adapters. -1 when none qualifies. */
static int pick_idle_worker(const autoscaler *a, double now) {
    int best = -1;
    for (int i = 0; i < a->n; i++) {
        const as_worker *w = &a->w[i];
        if (w->state != W_SERVING || w->running > 0 || now - w->last_busy < a->o.idle_s) continue;
        if (best < 0 || w->proc.started > a->w[best].proc.started) best = i;
    }
    return best;
}

static void maybe_scale_down(autoscaler *a, const decision_inputs *in, double now) {
    if (in->want >= in->active || in->lag > 0) return;
    if (now - a->last_up < a->o.idle_s || now - a->last_down < a->o.down_cooldown_s) return;
    int i = pick_idle_worker(a, now);
    if (i < 0) return;
    as_worker *w = &a->w[i];
    char nums[1024];
    as_log("scale down %d -> %d: draining worker pid %d (%s), idle %.1f s >= %.0f s: %s", in->active, in->active - 1,
           (int)w->proc.pid, w->id, now - w->last_busy, a->o.idle_s, numbers(a, in, nums, sizeof nums));
    lq_proc_signal(&w->proc, SIGTERM);
    w->state = W_DRAINING;
    a->last_down = now;
}

/* A status line every --status-every seconds while anything is queued,
 * running or changing, and once more when it settles. */
static void maybe_status(autoscaler *a, const decision_inputs *in, double now) {
    if (a->o.status_every_s <= 0 || now - a->last_status < a->o.status_every_s) return;
    char nums[1024];
    numbers(a, in, nums, sizeof nums);
    if (!strcmp(nums, a->last_status_text)) return;
    snprintf(a->last_status_text, sizeof a->last_status_text, "%s", nums);
    as_log("status: %s", nums);
    a->last_status = now;
}

static void decide(autoscaler *a, const lq_cluster *c) {
    int others = match_heartbeats(a, c);
    decision_inputs in;
    gather_inputs(a, c, others, &in);
    double now = lq_now();
    maybe_scale_up(a, &in, now);
    maybe_scale_down(a, &in, now);
    maybe_status(a, &in, now);
}

/* Without Redis there are no numbers to decide on; keep at least --min
 * workers running (they reconnect on their own) and try again next poll. */
static void keep_minimum(autoscaler *a) {
    int active = active_workers(a);
    if (active >= a->o.min || lq_now() < a->next_spawn_ok) return;
    int started = spawn_workers(a, a->o.min - active);
    as_log("scale up %d -> %d: below --min %d (no queue numbers: Redis unreachable)", active, active + started, a->o.min);
}

static void poll_once(autoscaler *a) {
    lq_error err;
    if (!lq_redis_up(a->r) && lq_redis_connect(a->r, &err)) {
        if (!a->redis_down_logged) as_log("redis unreachable (%s); holding the pool as it is until it is back", err.msg);
        a->redis_down_logged = 1;
        keep_minimum(a);
        return;
    }
    if (a->redis_down_logged) as_log("redis %s reachable again", lq_redis_url_text(a->r));
    a->redis_down_logged = 0;
    lq_cluster c;
    if (lq_cluster_read(a->r, &c, &err)) {
        as_log("reading the queue failed: %s", err.msg);
        keep_minimum(a);
        return;
    }
    decide(a, &c);
    lq_cluster_free(&c);
}

/* ---- stopping ---- */

static void drain_all(autoscaler *a) {
    int n_term = 0;
    for (int i = 0; i < a->n; i++)
        if (a->w[i].state != W_DRAINING) {
            lq_proc_signal(&a->w[i].proc, SIGTERM);
            a->w[i].state = W_DRAINING;
            n_term++;
        }
    as_log("stopping: draining %d worker(s) (SIGTERM, up to %.0f s; a second signal kills them)", a->n, a->o.drain_timeout_s);
    (void)n_term;
    double deadline = lq_now() + a->o.drain_timeout_s;
    int stops_seen = g_stop;
    while (a->n > 0 && lq_now() < deadline && g_stop == stops_seen) {
        reap_workers(a);
        if (a->n) lq_nap_ms(50);
    }
    for (int i = 0; i < a->n; i++) {
        as_log("worker pid %d did not exit in time; killing it", (int)a->w[i].proc.pid);
        lq_proc_stop(&a->w[i].proc, SIGKILL, 5);
    }
    a->n = 0;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int setup(autoscaler *a) {
    if (gethostname(a->host, sizeof a->host - 1)) snprintf(a->host, sizeof a->host, "unknown");
    lq_error err;
    lq_redis_opts ro = {.url = a->o.redis_url, .prefix = a->o.prefix, .connect_timeout_ms = 1000, .command_timeout_ms = 3000};
    if (!(a->r = lq_redis_new(&ro, &err))) {
        fprintf(stderr, "lorq-autoscaler: %s\n", err.msg);
        return -1;
    }
    a->last_up = a->last_down = -1e9;
    return 0;
}

int main(int argc, char **argv) {
    static autoscaler a;
    if (parse_opts(&a.o, argc, argv)) return 2;
    if (a.o.check_only) {
        printf("lorq-autoscaler: flags ok (workers %d..%d, worker %s)\n", a.o.min, a.o.max, a.o.worker_bin);
        return 0;
    }
    if (setup(&a)) return 2;
    install_signals();
    as_log("watching %s (prefix %s): workers %d..%d, poll %.2f s, up cooldown %.1f s, idle %.1f s, down cooldown %.1f s, "
           "worker %s",
           lq_redis_url_text(a.r), lq_redis_prefix(a.r), a.o.min, a.o.max, a.o.poll_s, a.o.up_cooldown_s, a.o.idle_s,
           a.o.down_cooldown_s, a.o.worker_bin);
    while (!g_stop) {
        reap_workers(&a);
        kill_slow_drains(&a);
        warn_slow_starts(&a);
        poll_once(&a);
        lq_nap_ms((int)(a.o.poll_s * 1000));
    }
    drain_all(&a);
    lq_redis_free(a.r);
    as_log("stopped");
    return 0;
}
