/* main.c — lorq-worker: loads the model and its adapters, then serves jobs
 * from the Redis streams until SIGTERM (worker/queue.c does the serving).
 *
 * Configuration mirrors TGI's launcher: every setting is an environment
 * variable and a flag of the same name (MAX_BATCH_TOTAL_TOKENS and
 * --max-batch-total-tokens); the flag wins. A bad value is an error naming the
 * setting, and the process exits with status 2 before touching the model.
 *
 * Signals: the first SIGTERM or SIGINT drains (no new jobs; running ones
 * finish and are delivered; exit 0); a second one quits at once, leaving the
 * running jobs' entries for other workers to claim. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "adapters.h"
#include "backend.h"
#include "hub.h"
#include "job.h"
#include "model.h"
#include "queue.h"
#include "redis.h"
#include "scheduler.h"
#include "tokenizer.h"

enum { MAX_ADAPTERS = 256 };

typedef struct adapter_entry {
    char name[LQ_ADAPTER_ID_MAX + 1];
    char *source; /* a folder or a hub id (points into the config's copy of LORA_ADAPTERS) */
} adapter_entry;

typedef struct worker_config {
    const char *redis_url, *prefix, *model_id, *lora_adapters, *worker_id;
    lq_sched_config sched;
    lq_adapters_config jit;
    int claim_min_idle_ms, max_attempts, threads, discover_ms;
    const char *device, *load_format; /* backend (kernels/select.c); "dummy": random weights */
    long long result_ttl_s;
    adapter_entry adapters[MAX_ADAPTERS];
    int n_adapters;
    char *adapters_copy;
    char worker_id_buf[LQ_JOB_ID_MAX + 1];
} worker_config;

/* ---- settings ---- */

typedef enum { OPT_STR, OPT_INT, OPT_LLONG, OPT_BYTES } opt_kind;

typedef struct option {
    const char *env, *flag;
    opt_kind kind;
    long long min, max;
    const char *help;
} option;

enum {
    O_REDIS_URL,
    O_PREFIX,
    O_MODEL_ID,
    O_LORA_ADAPTERS,
    O_MAX_BATCH_PREFILL_TOKENS,
    O_MAX_BATCH_TOTAL_TOKENS,
    O_MAX_RUNNING,
    O_CLAIM_MIN_IDLE_MS,
    O_MAX_ATTEMPTS,
    O_RESULT_TTL,
    O_WORKER_ID,
    O_ADAPTER_MEMORY_BUDGET,
    O_THREADS,
    O_DEVICE,
    O_LOAD_FORMAT,
    O_ALLOW_ADAPTERS,
    O_ADAPTERS_DIR,
    O_MAX_HOST_ADAPTERS,
    O_ADAPTER_MAX_SIZE,
    O_ADAPTER_FAILURE_TTL,
    O_ADAPTER_DISK_BUDGET,
    O_ADAPTER_HOST_BUDGET,
    O_ADAPTER_HOST_COUNT,
    O_DISCOVER_MS,
    O_COUNT
};

static const option options[O_COUNT] = {
    [O_REDIS_URL] = {"REDIS_URL", "--redis-url", OPT_STR, 0, 0, "redis://[:password@]host[:port][/db] or unix:///path (default " LQ_REDIS_DEFAULT_URL ")"},
    [O_PREFIX] = {"LORQ_PREFIX", "--prefix", OPT_STR, 0, 0, "key prefix (default " LQ_DEFAULT_PREFIX ")"},
    [O_MODEL_ID] = {"MODEL_ID", "--model-id", OPT_STR, 0, 0, "model folder or hub id (required)"},
    [O_LORA_ADAPTERS] = {"LORA_ADAPTERS", "--lora-adapters", OPT_STR, 0, 0, "comma list of name=folder-or-hub-id, or hub ids"},
    [O_MAX_BATCH_PREFILL_TOKENS] = {"MAX_BATCH_PREFILL_TOKENS", "--max-batch-prefill-tokens", OPT_INT, 1, 1 << 20, "prompt tokens per step (default 512)"},
    [O_MAX_BATCH_TOTAL_TOKENS] = {"MAX_BATCH_TOTAL_TOKENS", "--max-batch-total-tokens", OPT_INT, 1, 1 << 26, "KV cache size in tokens (default 16384)"},
    [O_MAX_RUNNING] = {"MAX_RUNNING", "--max-running", OPT_INT, 1, 4096, "most jobs running at once (default 32)"},
    [O_CLAIM_MIN_IDLE_MS] = {"CLAIM_MIN_IDLE_MS", "--claim-min-idle-ms", OPT_INT, 10, 86400000, "claim entries idle this long from dead workers (default 30000)"},
    [O_MAX_ATTEMPTS] = {"MAX_ATTEMPTS", "--max-attempts", OPT_INT, 1, 1000, "starts of a job before it is dead-lettered (default 3)"},
    [O_RESULT_TTL] = {"RESULT_TTL", "--result-ttl", OPT_LLONG, 1, 365LL * 86400, "seconds results and logs are kept (default 3600)"},
    [O_WORKER_ID] = {"WORKER_ID", "--worker-id", OPT_STR, 0, 0, "consumer name (default <host>-<pid>-<4 hex>)"},
    [O_ADAPTER_MEMORY_BUDGET] = {"ADAPTER_MEMORY_BUDGET", "--adapter-memory-budget", OPT_BYTES, 0, LLONG_MAX, "bytes of resident adapters, suffixes K/M/G/KiB/MiB/GiB (default 2GiB, 0: unlimited)"},
    [O_THREADS] = {"LORQ_THREADS", "--threads", OPT_INT, 0, 1024, "CPU threads (default 0: all cores)"},
    [O_DEVICE] = {"LORQ_DEVICE", "--device", OPT_STR, 0, 0, "cpu, cuda or auto (default auto: the GPU when one is visible)"},
    [O_LOAD_FORMAT] = {"LOAD_FORMAT", "--load-format", OPT_STR, 0, 0, "auto, or dummy: random weights for MODEL_ID's config.json"},
    [O_ALLOW_ADAPTERS] = {"LORQ_ALLOW_ADAPTERS", "--allow-adapters", OPT_STR, 0, 0, "globs of adapter ids loaded on demand beyond LORA_ADAPTERS, e.g. 'acme/*' (default: none)"},
    [O_ADAPTERS_DIR] = {"LORQ_ADAPTERS_DIR", "--adapters-dir", OPT_STR, 0, 0, "folder of adapters by id (<dir>/<id>), tried before the hub"},
    [O_MAX_HOST_ADAPTERS] = {"MAX_HOST_ADAPTERS", "--max-host-adapters", OPT_INT, 0, 1 << 20, "most adapters resident where the kernels read them, device memory on a GPU (default 0: only ADAPTER_MEMORY_BUDGET bounds)"},
    [O_ADAPTER_MAX_SIZE] = {"ADAPTER_MAX_SIZE", "--adapter-max-size", OPT_BYTES, 0, LLONG_MAX, "largest adapter_model.safetensors accepted (default 0: no limit)"},
    [O_ADAPTER_FAILURE_TTL] = {"LORQ_ADAPTER_FAILURE_TTL", "--adapter-failure-ttl", OPT_INT, 0, 86400, "seconds a failed adapter load is remembered (default 30)"},
    [O_ADAPTER_DISK_BUDGET] = {"ADAPTER_DISK_BUDGET", "--adapter-disk-budget", OPT_BYTES, 0, LLONG_MAX, "bytes of adapters this worker downloaded kept in the hub cache (default 0: no limit)"},
    [O_ADAPTER_HOST_BUDGET] = {"ADAPTER_HOST_BUDGET", "--adapter-host-budget", OPT_BYTES, 0, LLONG_MAX, "bytes of parsed adapters kept in host memory, ready to upload (default 4GiB on a GPU, 0 on the CPU; 0: no host tier)"},
    [O_ADAPTER_HOST_COUNT] = {"ADAPTER_HOST_COUNT", "--adapter-host-count", OPT_INT, 0, 1 << 20, "most adapters in the host tier (default 0: only ADAPTER_HOST_BUDGET bounds)"},
    [O_DISCOVER_MS] = {"DISCOVER_MS", "--discover-ms", OPT_INT, 10, 3600000, "how often the queues set is read again; a new queue's first job also wakes a worker at once (default 250)"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: lorq-worker [--flag VALUE ...]\n\nEach setting is an environment variable or a flag (the flag wins):\n");
    for (int i = 0; i < O_COUNT; i++)
        fprintf(out, "  %-28s %-24s %s\n", options[i].flag, options[i].env, options[i].help);
    fprintf(out, "  LORQ_LUA_DIR: where the Redis scripts are (default: ../lua next to the program)\n");
}

/* "12", "64M", "2GiB", ... */
static int parse_bytes(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno || v < 0) return -1;
    static const struct { const char *suffix; long long mul; } units[] = {
        {"", 1}, {"B", 1}, {"K", 1000}, {"KB", 1000}, {"M", 1000000}, {"MB", 1000000}, {"G", 1000000000LL},
        {"GB", 1000000000LL}, {"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].suffix)) {
            if (v > LLONG_MAX / units[i].mul) return -1;
            *out = v * units[i].mul;
            return 0;
        }
    return -1;
}

static int parse_number(const option *o, const char *s, long long *out) {
    if (o->kind == OPT_BYTES) return parse_bytes(s, out);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno) return -1;
    *out = v;
    return 0;
}

/* The value of each setting: flag, else environment, else NULL. */
static int collect(int argc, char **argv, const char *values[O_COUNT]) {
    for (int i = 0; i < O_COUNT; i++) {
        const char *e = getenv(options[i].env);
        values[i] = e && *e ? e : NULL;
    }
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "-h") || !strcmp(argv[a], "--help")) {
            usage(stdout);
            exit(0);
        }
        int found = 0;
        for (int i = 0; i < O_COUNT && !found; i++) {
            size_t n = strlen(options[i].flag);
            if (strncmp(argv[a], options[i].flag, n)) continue;
            if (argv[a][n] == '=') values[i] = argv[a] + n + 1, found = 1;
            else if (!argv[a][n]) {
                if (a + 1 >= argc) {
                    fprintf(stderr, "lorq-worker: %s needs a value\n", options[i].flag);
                    return -1;
                }
                values[i] = argv[++a];
                found = 1;
            }
        }
        if (!found) {
            fprintf(stderr, "lorq-worker: unknown argument '%s' (see --help)\n", argv[a]);
            return -1;
        }
    }
    return 0;
}

static int number(const char *values[O_COUNT], int i, long long *out) {
    const option *o = &options[i];
    if (!values[i]) return 0;
    if (parse_number(o, values[i], out) || *out < o->min || *out > o->max) {
        fprintf(stderr, "lorq-worker: %s (%s) is '%s'; it must be %s from %lld to %lld\n", o->env, o->flag, values[i],
                o->kind == OPT_BYTES ? "a byte count" : "an integer", o->min, o->max);
        return -1;
    }
    return 0;
}

/* name=source, or a bare hub id (named after itself, without @revision). */
static int parse_adapter_entry(char *item, adapter_entry *a) {
    char *eq = strchr(item, '=');
    const char *name = item;
    if (eq) {
        *eq = 0;
        a->source = eq + 1;
    } else {
        if (!lq_hub_looks_like_id(item)) {
            fprintf(stderr,
                    "lorq-worker: LORA_ADAPTERS entry '%s' is neither name=path nor a hub id (owner/name); "
                    "write name=%s for a local folder\n",
                    item, item);
            return -1;
        }
        a->source = item;
    }
    size_t n = strcspn(name, eq ? "=" : "@");
    if (n == 0 || n > LQ_ADAPTER_ID_MAX) {
        fprintf(stderr, "lorq-worker: LORA_ADAPTERS entry '%s' has an empty or too long name\n", item);
        return -1;
    }
    memcpy(a->name, name, n);
    a->name[n] = 0;
    if (!lq_adapter_id_valid(a->name)) {
        fprintf(stderr,
                "lorq-worker: LORA_ADAPTERS: adapter name '%s' must be [A-Za-z0-9._/-], not starting with '.' or '/'\n",
                a->name);
        return -1;
    }
    if (!*a->source) {
        fprintf(stderr, "lorq-worker: LORA_ADAPTERS entry '%s' has no path\n", a->name);
        return -1;
    }
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
    return s;
}

static int parse_adapters(worker_config *c) {
    if (!c->lora_adapters) return 0;
    if (!(c->adapters_copy = strdup(c->lora_adapters))) return -1;
    char *save = NULL;
    for (char *item = strtok_r(c->adapters_copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        if (!*item) continue;
        if (c->n_adapters == MAX_ADAPTERS) {
            fprintf(stderr, "lorq-worker: LORA_ADAPTERS lists more than %d adapters\n", MAX_ADAPTERS);
            return -1;
        }
        adapter_entry *a = &c->adapters[c->n_adapters];
        if (parse_adapter_entry(item, a)) return -1;
        for (int i = 0; i < c->n_adapters; i++)
            if (!strcmp(c->adapters[i].name, a->name)) {
                fprintf(stderr, "lorq-worker: LORA_ADAPTERS names adapter '%s' twice\n", a->name);
                return -1;
            }
        c->n_adapters++;
    }
    return 0;
}

/* <host>-<pid>-<4 hex>, with characters a worker id may not hold replaced by '-'. */
static void default_worker_id(char *out, size_t size) {
    char host[64] = "worker";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_'))
            *p = '-';
    unsigned short r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (unsigned short)(getpid() * 2654435761u >> 16);
    snprintf(out, size, "%.40s-%d-%04x", host, (int)getpid(), r);
}

static int worker_id_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static int parse_config(int argc, char **argv, worker_config *c) {
    const char *v[O_COUNT];
    memset(c, 0, sizeof *c);
    if (collect(argc, argv, v)) return -1;
    c->sched = lq_sched_config_default();
    c->claim_min_idle_ms = 30000;
    c->max_attempts = 3;
    c->result_ttl_s = 3600;
    long long n;
    c->redis_url = v[O_REDIS_URL] ? v[O_REDIS_URL] : LQ_REDIS_DEFAULT_URL;
    c->prefix = v[O_PREFIX] ? v[O_PREFIX] : LQ_DEFAULT_PREFIX;
    c->model_id = v[O_MODEL_ID];
    c->lora_adapters = v[O_LORA_ADAPTERS];
    c->jit.allow = v[O_ALLOW_ADAPTERS];
    c->jit.dir = v[O_ADAPTERS_DIR];
    c->jit.failure_ttl_ms = 30000;
    c->jit.host_budget = -1; /* by backend, once it is open (new_adapters) */
    int ttl_s = -1;
#define NUM(opt, dst)                                                                                                  \
    do {                                                                                                               \
        n = -1;                                                                                                        \
        if (number(v, opt, &n)) return -1;                                                                             \
        if (n >= 0 && v[opt]) dst = n;                                                                                 \
    } while (0)
    NUM(O_MAX_BATCH_PREFILL_TOKENS, c->sched.max_batch_prefill_tokens);
    NUM(O_MAX_BATCH_TOTAL_TOKENS, c->sched.max_batch_total_tokens);
    NUM(O_MAX_RUNNING, c->sched.max_running);
    NUM(O_CLAIM_MIN_IDLE_MS, c->claim_min_idle_ms);
    NUM(O_DISCOVER_MS, c->discover_ms);
    NUM(O_MAX_ATTEMPTS, c->max_attempts);
    NUM(O_RESULT_TTL, c->result_ttl_s);
    NUM(O_ADAPTER_MEMORY_BUDGET, c->sched.adapter_budget_bytes);
    NUM(O_THREADS, c->threads);
    c->device = v[O_DEVICE];
    c->load_format = v[O_LOAD_FORMAT];
    if (c->load_format && strcmp(c->load_format, "auto") && strcmp(c->load_format, "safetensors") &&
        strcmp(c->load_format, "dummy")) {
        fprintf(stderr, "lorq-worker: LOAD_FORMAT (--load-format) is '%s'; it must be auto, safetensors or dummy\n",
                c->load_format);
        return -1;
    }
    NUM(O_MAX_HOST_ADAPTERS, c->sched.max_resident_adapters);
    NUM(O_ADAPTER_MAX_SIZE, c->jit.max_file_bytes);
    NUM(O_ADAPTER_FAILURE_TTL, ttl_s);
    NUM(O_ADAPTER_DISK_BUDGET, c->jit.disk_budget);
    NUM(O_ADAPTER_HOST_BUDGET, c->jit.host_budget);
    NUM(O_ADAPTER_HOST_COUNT, c->jit.host_max_count);
#undef NUM
    if (ttl_s >= 0) c->jit.failure_ttl_ms = ttl_s * 1000;
    if (!c->model_id) {
        fprintf(stderr, "lorq-worker: MODEL_ID (--model-id) is not set: give a model folder or hub id\n");
        return -1;
    }
    lq_redis_url u;
    lq_error err;
    if (lq_redis_url_parse(c->redis_url, &u, &err)) {
        fprintf(stderr, "lorq-worker: %s\n", err.msg);
        return -1;
    }
    if (!lq_prefix_valid(c->prefix)) {
        fprintf(stderr, "lorq-worker: LORQ_PREFIX '%s' must be 1 to %d printable characters without spaces\n",
                c->prefix, LQ_PREFIX_MAX);
        return -1;
    }
    if (v[O_WORKER_ID] && !worker_id_valid(v[O_WORKER_ID])) {
        fprintf(stderr, "lorq-worker: WORKER_ID '%s' must be 1 to 64 characters of [A-Za-z0-9._-]\n", v[O_WORKER_ID]);
        return -1;
    }
    if (v[O_WORKER_ID]) snprintf(c->worker_id_buf, sizeof c->worker_id_buf, "%s", v[O_WORKER_ID]);
    else default_worker_id(c->worker_id_buf, sizeof c->worker_id_buf);
    c->worker_id = c->worker_id_buf;
    if (c->sched.max_batch_total_tokens < c->sched.block_size) {
        fprintf(stderr, "lorq-worker: MAX_BATCH_TOTAL_TOKENS must be at least the KV block size (%d)\n",
                c->sched.block_size);
        return -1;
    }
    return parse_adapters(c);
}

/* ---- the engine ---- */

typedef struct engine {
    lq_tokenizer *tok;
    lq_backend *backend;
    lq_model *model;
    lq_scheduler *sched;
    lq_adapters *adapters;
    char model_dir[4096];
} engine;

static void engine_free(engine *e) {
    /* A download that outlives 2 s still uses the model: leave it all to the exit. */
    if (lq_adapters_free(e->adapters, 2000) != 0) return;
    lq_scheduler_free(e->sched);
    lq_model_free(e->model);
    if (e->backend) e->backend->destroy(e->backend);
    tok_free(e->tok);
}

enum { GPU_HOST_TIER_DEFAULT = 4 }; /* GiB of parsed adapters a GPU worker keeps in host memory unless told */

/* The just-in-time loader; only the CPU backend's memory may be filled from its thread.
 * The host tier: on the CPU backend the resident adapters are host memory
 * already, and a second copy of each would double it, so there it is only on
 * when ADAPTER_HOST_BUDGET asks for it. */
static lq_adapters *new_adapters(engine *e, const worker_config *c, lq_error *err) {
    lq_adapters_config jc = c->jit;
    int cpu = strncmp(e->backend->name, "cpu", 3) == 0;
    jc.upload_on_main = !cpu;
    if (jc.host_budget < 0) jc.host_budget = cpu ? 0 : (long long)GPU_HOST_TIER_DEFAULT << 30;
    if (jc.host_budget > 0)
        lq_log("adapter host tier: %lld bytes, %d adapters at most (0: no count limit)", jc.host_budget,
               jc.host_max_count);
    return lq_adapters_new(e->sched, e->model, &jc, err);
}

static int engine_load(engine *e, const worker_config *c, lq_error *err) {
    double t0 = lq_time_ms();
    if (lq_resolve_source(c->model_id, LQ_HUB_MODEL, e->model_dir, sizeof e->model_dir, err)) {
        lq_error_prefix(err, "MODEL_ID");
        return -1;
    }
    int dummy = c->load_format && !strcmp(c->load_format, "dummy");
    if (!(e->tok = tok_load(e->model_dir, err)) || !(e->backend = lq_backend_open(c->device, c->threads, err)) ||
        !(e->model = dummy ? lq_model_load_dummy(e->model_dir, e->backend, LQ_DTYPE_BF16, 1, err)
                           : lq_model_load(e->model_dir, e->backend, err)) ||
        !(e->sched = lq_scheduler_new(e->model, e->tok, &c->sched, err)) ||
        !(e->adapters = new_adapters(e, c, err)))
        return -1;
    lq_log("model %s loaded in %.2f s: %s, %d layers, vocab %d", c->model_id, (lq_time_ms() - t0) / 1000.0,
           e->model->cfg.arch_name, e->model->cfg.n_layers, e->model->cfg.vocab_size);
    for (int i = 0; i < c->n_adapters; i++) {
        char dir[4096];
        if (lq_resolve_source(c->adapters[i].source, LQ_HUB_ADAPTER, dir, sizeof dir, err) ||
            lq_scheduler_add_adapter(e->sched, c->adapters[i].name, dir, 0, err) ||
            lq_adapters_declare(e->adapters, c->adapters[i].name, dir, err)) {
            lq_error_prefix(err, "LORA_ADAPTERS entry '%s'", c->adapters[i].name);
            return -1;
        }
        lq_log("adapter '%s' from %s", c->adapters[i].name, dir);
    }
    return 0;
}

/* The most tokens one job may need here: the model's context and the KV pool. */
static int max_job_tokens(const worker_config *c, const lq_model *m) {
    int kv = c->sched.max_batch_total_tokens;
    return m->cfg.max_position > 0 && m->cfg.max_position < kv ? m->cfg.max_position : kv;
}

/* ---- signals ---- */

static volatile sig_atomic_t drain_requested, quit_requested;

static void on_signal(int sig) {
    (void)sig;
    if (drain_requested) quit_requested = 1;
    drain_requested = 1;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: a sleep or a read returns early */
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a dropped Redis connection is an error return, not a death */
}

int main(int argc, char **argv) {
    worker_config c;
    if (parse_config(argc, argv, &c)) {
        free(c.adapters_copy);
        return 2;
    }
    install_signals();
    lq_error err;
    engine e;
    memset(&e, 0, sizeof e);
    lq_redis_opts ro = {.url = c.redis_url, .prefix = c.prefix};
    lq_redis *r = lq_redis_new(&ro, &err);
    if (!r) {
        fprintf(stderr, "lorq-worker: %s\n", err.msg);
        free(c.adapters_copy);
        return 2;
    }
    lq_log("worker %s starting: redis %s, prefix %s, max_running %d, max_batch_total_tokens %d, "
           "max_batch_prefill_tokens %d, claim_min_idle %d ms, max_attempts %d",
           c.worker_id, lq_redis_url_text(r), c.prefix, c.sched.max_running, c.sched.max_batch_total_tokens,
           c.sched.max_batch_prefill_tokens, c.claim_min_idle_ms, c.max_attempts);
    int rc = 1;
    lq_queue *q = NULL;
    if (engine_load(&e, &c, &err)) {
        fprintf(stderr, "lorq-worker: %s\n", err.msg);
        goto out;
    }
    lq_queue_config qc = {
        .worker_id = c.worker_id,
        .claim_min_idle_ms = c.claim_min_idle_ms,
        .discover_ms = c.discover_ms,
        .max_attempts = c.max_attempts,
        .result_ttl_ms = c.result_ttl_s * 1000,
        .max_job_tokens = max_job_tokens(&c, e.model),
        .capacity = c.sched.max_running,
        .model = c.model_id,
        .device = e.backend->name,
        .adapters = e.adapters,
    };
    if (!(q = lq_queue_new(r, e.sched, &qc, &err))) {
        fprintf(stderr, "lorq-worker: %s\n", err.msg);
        goto out;
    }
    rc = lq_queue_run(q, &drain_requested, &quit_requested, &err) == 0 ? 0 : 1;
out:
    lq_queue_free(q);
    engine_free(&e);
    lq_redis_free(r);
    free(c.adapters_copy);
    return rc;
}
