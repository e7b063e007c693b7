/* scheduler.c — continuous batching (see scheduler.h).
 *
 * Jobs live in three states. WAITING: submitted, validated, in the FIFO of
 * its adapter. RUNNING: admitted, holding its KV blocks (prompt plus
 * max_new_tokens, reserved all at once so it never needs preempting) and a pin
 * on its adapter. OVER: its end event is out and its resources are back; the
 * struct is freed at the end of the step. A job that fails validation at
 * submission waits in ENDING until the next step hands out its end event.
 *
 * A step: end jobs whose deadline passed; give every running job its work
 * (one decode token, or its next prefill chunk, oldest job first, out of the
 * step's prefill budget); admit waiting jobs round-robin over the adapters
 * that have some (one job per adapter per turn, so a flood for one adapter
 * cannot starve a quiet one) while the budget, max_running and the KV pool
 * allow; then run the work through the model in one or more passes, sample,
 * and turn what happened into protocol events.
 *
 * Batch invariance. The CPU backend's matmuls over fewer than 128 rows use
 * our tile kernel, which gives each row the same bits whatever shares the
 * step; 128+ rows go to OpenBLAS, whose rounding depends on the shape. `lorq
 * generate` prefills a prompt in chunks of 512 (a chunk of 128+ tokens
 * therefore through BLAS) and decodes one token per step. So that a job's
 * tokens equal that solo run bit for bit whatever else is running, on the CPU
 * backend:
 *   - a prompt chunk of 128+ tokens (min(prompt left, max_batch_prefill_tokens))
 *     runs alone in its own pass, exactly the chunk `lorq generate` runs when
 *     max_batch_prefill_tokens is 512 (the default); one such pass per step;
 *   - everything else (decode tokens, short chunks, resumed tokens) is packed,
 *     grouped by adapter, into passes of at most 127 rows, splitting a chunk
 *     across passes when needed (row-wise kernels and per-query attention
 *     make any split give the same bits).
 * The threshold is the backend's invariant_rows (128 on the CPU); other
 * backends promise no invariance (0), so everything goes in one pass.
 * (decoder_input_details asks for the logits of every prompt row, so a
 * 128+-token chunk's lm_head runs through BLAS too: its last row may then
 * differ from a run without details by f32 rounding.)
 *
 * Resume: the tokens an earlier attempt delivered are forced into the job's
 * generation at submission (sampler history, random draws, text, stop
 * checks), prefilled together with the prompt, and produce no token events.
 *
 * Events: every string of every event is allocated here and freed when the
 * next step starts (or with the scheduler), so callers copy what they keep. */
#include "scheduler.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "generate.h"
#include "kvcache.h"
#include "lora.h"
#include "registry.h"

/* How many recent jobs free_slots averages over to size "a typical job". */
enum { RECENT_JOBS = 32 };

typedef enum job_state { JOB_WAITING, JOB_RUNNING, JOB_ENDING, JOB_OVER } job_state;

typedef struct sjob {
    lq_job job; /* our copy */
    void *user;
    unsigned long seq; /* submission order */
    int adapter;       /* index into s->adapters */
    job_state state;
    lq_generation *gen; /* NULL when validation failed */
    lq_lora *lora;      /* pinned while running; NULL for the base model */
    int decoding;       /* the prefill is done: one token per step from now on */
    int64_t admit_ms;   /* wall clock, 0 until admitted */
    float *prompt_lp;   /* decoder_input_details: log-probability of prompt token i, i >= 1 */
    char *error, *error_type; /* why it ends, when it ends in error */
    struct sjob *next_waiting;
} sjob;

typedef struct adapter_entry {
    char *name;   /* "" is the base model */
    char *dir;    /* NULL for the base model */
    size_t bytes; /* memory it took when last loaded; 0 until then */
    sjob *wait_head, *wait_tail;
    int n_running;       /* admitted jobs pinning it */
    unsigned skip_stamp; /* = s->step_no: it cannot admit more in this step */
} adapter_entry;

/* Tokens [pos, pos + n) of a job's generation to run in a pass. */
typedef struct work {
    sjob *job;
    int pos, n;
} work;

/* What one step runs: at most one solo chunk, and the shared items. */
typedef struct plan {
    int budget; /* prefill tokens left in this step */
    work solo;  /* solo.job == NULL: none */
    work *items;
    int n_items;
} plan;

struct lq_scheduler {
    lq_model *model;
    const lq_tokenizer *tok;
    lq_sched_config cfg;
    int invariant_rows; /* matmuls of fewer rows are batch-invariant; 0: no such promise */
    int pass_rows;      /* most rows of a shared pass */
    lq_kvcache *kv;
    lq_registry *registry;
    lq_run_state *rs;
    float *logits; /* host, rs->max_tokens rows */

    adapter_entry *adapters; /* [0] is the base model */
    int n_adapters, cap_adapters;
    int rr; /* round-robin cursor: the adapter whose turn is next */

    sjob **jobs; /* every job not yet freed, submission order */
    int n_jobs, cap_jobs;
    sjob **running; /* admitted jobs, admission order */
    int n_running, cap_running;
    int n_waiting;
    unsigned long n_submitted;
    unsigned step_no;

    int recent_blocks[RECENT_JOBS]; /* KV blocks of recent jobs, for free_slots */
    int n_recent, recent_at;

    work *items; /* scratch for plans and passes, max_running + 1 entries each */
    work *pass;
    lq_step_seq *pass_seqs;

    lq_sched_event *events;
    int n_events, cap_events;
    char *resident; /* lq_scheduler_resident_list's answer */
};

/* ---------- small helpers ---------- */

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_str(const char *s) { return strdup(s ? s : ""); }

static char *dup_mem(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *format_str(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format_str(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static int grow(void **arr, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p = realloc(*arr, (size_t)c * elem);
    if (!p) return -1;
    *arr = p;
    *cap = c;
    return 0;
}

static int blocks_for(const lq_scheduler *s, int tokens) {
    return (tokens + s->cfg.block_size - 1) / s->cfg.block_size;
}

static int job_tokens(const sjob *j) { return j->job.n_prompt + j->job.max_new_tokens; }

/* A 64-bit seed from the kernel's random source (the clock if that fails). */
static uint64_t random_seed(void) {
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) == (ssize_t)sizeof seed) return seed;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
}

/* The seed of a sampling job that brings none. It is drawn from the job id
 * (FNV-1a, then a splitmix64 finalizer), whose random part the gateway drew:
 * as unpredictable across jobs as a fresh random number, and the same on every
 * attempt, so a worker resuming a crashed attempt draws the numbers the first
 * worker would have drawn (the seed it reported died with it). Without an id,
 * the kernel's random source. */
static uint64_t default_seed(const char *job_id) {
    if (!job_id || !job_id[0]) return random_seed();
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)job_id; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* ---------- configuration and lifetime ---------- */

lq_sched_config lq_sched_config_default(void) {
    return (lq_sched_config){
        .max_batch_prefill_tokens = 512,  /* = lorq generate's prefill chunk: same tokens as a solo run */
        .max_batch_total_tokens = 16384,  /* 16k tokens of KV: 755 MB in f32 on the bundled model */
        .max_running = 32,
        .block_size = 16,
        .adapter_budget_bytes = (size_t)2 << 30, /* ~100 rank-16 all-projection adapters of the bundled model */
    };
}

static int check_config(const lq_sched_config *c, lq_error *err) {
    if (c->max_batch_prefill_tokens < 1) return lq_fail(err, "max_batch_prefill_tokens must be at least 1");
    if (c->max_running < 1) return lq_fail(err, "max_running must be at least 1");
    if (c->block_size < 1 || c->block_size > 1024) return lq_fail(err, "block_size must be between 1 and 1024");
    if (c->max_batch_total_tokens < c->block_size)
        return lq_fail(err, "max_batch_total_tokens (%d) must hold at least one KV block of %d tokens",
                       c->max_batch_total_tokens, c->block_size);
    return 0;
}

/* Rows of a shared pass, and the largest step the run state must hold. */
static void size_passes(lq_scheduler *s, int *max_tokens) {
    const lq_backend *b = s->model->backend;
    s->invariant_rows = b ? b->invariant_rows : 0;
    int P = s->cfg.max_batch_prefill_tokens;
    if (s->invariant_rows) {
        s->pass_rows = s->invariant_rows - 1;
        *max_tokens = P > s->pass_rows ? P : s->pass_rows;
    } else {
        s->pass_rows = INT_MAX;
        *max_tokens = P + s->cfg.max_running;
    }
}

static int add_base_entry(lq_scheduler *s) {
    if (grow((void **)&s->adapters, &s->cap_adapters, 1, sizeof *s->adapters) != 0) return -1;
    memset(&s->adapters[0], 0, sizeof s->adapters[0]);
    s->adapters[0].name = dup_str("");
    s->n_adapters = 1;
    return s->adapters[0].name ? 0 : -1;
}

lq_scheduler *lq_scheduler_new(lq_model *m, const lq_tokenizer *tok, const lq_sched_config *c, lq_error *err) {
    if (check_config(c, err) != 0) return NULL;
    lq_scheduler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->model = m;
    s->tok = tok;
    s->cfg = *c;
    int max_tokens;
    size_passes(s, &max_tokens);
    const lq_model_config *mc = &m->cfg;
    s->kv = lq_kvcache_new(m->backend, mc->n_layers, mc->n_kv_heads, mc->head_dim,
                           c->max_batch_total_tokens / c->block_size, c->block_size, err);
    if (!s->kv) goto fail;
    s->rs = lq_run_state_new(m, max_tokens, c->max_running, err);
    if (!s->rs) goto fail;
    s->registry = lq_registry_new(m, c->adapter_budget_bytes ? c->adapter_budget_bytes : SIZE_MAX);
    if (s->registry) lq_registry_set_max_count(s->registry, c->max_resident_adapters);
    s->logits = malloc((size_t)max_tokens * (size_t)mc->vocab_size * sizeof *s->logits);
    size_t n_work = 2 * ((size_t)c->max_running + 1); /* a plan's items, then a pass's parts */
    s->items = malloc(n_work * sizeof *s->items);
    s->pass = malloc(n_work * sizeof *s->pass);
    s->pass_seqs = malloc(n_work * sizeof *s->pass_seqs);
    if (!s->registry || !s->logits || !s->items || !s->pass || !s->pass_seqs || add_base_entry(s) != 0)
        goto oom;
    return s;
oom:
    lq_fail(err, "scheduler: out of memory");
fail:
    lq_scheduler_free(s);
    return NULL;
}

static void clear_events(lq_scheduler *s) {
    for (int i = 0; i < s->n_events; i++) lq_event_clear(&s->events[i].ev);
    s->n_events = 0;
}

static void release_job(lq_scheduler *s, sjob *j);
static void free_job(sjob *j);

void lq_scheduler_free(lq_scheduler *s) {
    if (!s) return;
    clear_events(s);
    free(s->events);
    for (int i = 0; i < s->n_jobs; i++) {
        release_job(s, s->jobs[i]);
        free_job(s->jobs[i]);
    }
    free(s->jobs);
    free(s->running);
    for (int i = 0; i < s->n_adapters; i++) free(s->adapters[i].name), free(s->adapters[i].dir);
    free(s->adapters);
    lq_registry_free(s->registry);
    if (s->rs) lq_run_state_free(s->model, s->rs);
    lq_kvcache_free(s->kv);
    free(s->logits);
    free(s->items);
    free(s->pass);
    free(s->pass_seqs);
    free(s->resident);
    free(s);
}

/* ---------- adapters ---------- */

static int find_adapter(const lq_scheduler *s, const char *name) {
    for (int i = 0; i < s->n_adapters; i++)
        if (!strcmp(s->adapters[i].name, name ? name : "")) return i;
    return -1;
}

int lq_scheduler_add_adapter(lq_scheduler *s, const char *name, const char *dir, int preload, lq_error *err) {
    if (!name || !name[0] || !lq_adapter_id_valid(name))
        return lq_fail(err, "adapter id '%s' is not valid (1-128 bytes of [A-Za-z0-9._/-], not starting with '.' or '/')",
                       name ? name : "");
    if (!dir || !dir[0]) return lq_fail(err, "adapter %s: no folder given", name);
    int i = find_adapter(s, name);
    if (i >= 0) {
        if (strcmp(s->adapters[i].dir, dir) != 0)
            return lq_fail(err, "adapter %s is already declared with folder %s", name, s->adapters[i].dir);
    } else {
        if (grow((void **)&s->adapters, &s->cap_adapters, s->n_adapters + 1, sizeof *s->adapters) != 0)
            return lq_fail(err, "out of memory");
        adapter_entry *a = &s->adapters[s->n_adapters];
        memset(a, 0, sizeof *a);
        a->name = dup_str(name);
        a->dir = dup_str(dir);
        if (!a->name || !a->dir) {
            free(a->name), free(a->dir);
            return lq_fail(err, "out of memory");
        }
        i = s->n_adapters++;
    }
    if (!preload) return 0;
    lq_lora *l = lq_registry_acquire(s->registry, name, dir, err);
    if (!l) return -1;
    s->adapters[i].bytes = l->bytes;
    lq_registry_release(s->registry, l);
    return 0;
}

int lq_scheduler_has_adapter(const lq_scheduler *s, const char *name) { return find_adapter(s, name) >= 0; }

int lq_scheduler_install_adapter(lq_scheduler *s, const char *name, const char *dir, lq_lora *lora, lq_error *err) {
    int i = find_adapter(s, name);
    if (i > 0 && strcmp(s->adapters[i].dir, dir) != 0) { /* a hub id resolved to a newer snapshot */
        char *d = dup_str(dir);
        if (!d) return lq_fail(err, "out of memory");
        free(s->adapters[i].dir);
        s->adapters[i].dir = d;
    }
    if (lq_scheduler_add_adapter(s, name, dir, 0, err) != 0) return -1;
    int rc = lq_registry_insert(s->registry, lora, err);
    if (rc == 0) s->adapters[find_adapter(s, name)].bytes = lora->bytes;
    return rc;
}

int lq_scheduler_pin_adapter(lq_scheduler *s, const char *name) { return lq_registry_pin(s->registry, name); }
void lq_scheduler_unpin_adapter(lq_scheduler *s, const char *name) { lq_registry_unpin(s->registry, name); }
int lq_scheduler_unload_adapter(lq_scheduler *s, const char *name) { return lq_registry_evict(s->registry, name); }

int lq_scheduler_is_resident(const lq_scheduler *s, const char *name) {
    if (!name || !name[0]) return 1; /* the base model is always there */
    for (int i = 0; i < lq_registry_count(s->registry); i++)
        if (!strcmp(lq_registry_at(s->registry, i)->name, name)) return 1;
    return 0;
}

const char *lq_scheduler_resident_list(lq_scheduler *s) {
    size_t len = 1;
    int n = lq_registry_count(s->registry);
    for (int i = 0; i < n; i++) len += strlen(lq_registry_at(s->registry, i)->name) + 1;
    char *out = malloc(len);
    if (!out) return s->resident ? s->resident : "";
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i) strcat(out, ",");
        strcat(out, lq_registry_at(s->registry, i)->name);
    }
    free(s->resident);
    s->resident = out;
    return out;
}

/* "a, b, c" of the declared adapters, for an unknown-adapter message. */
static char *known_adapters(const lq_scheduler *s) {
    size_t len = 1;
    for (int i = 1; i < s->n_adapters; i++) len += strlen(s->adapters[i].name) + 2;
    char *out = malloc(len);
    if (!out) return NULL;
    out[0] = '\0';
    for (int i = 1; i < s->n_adapters; i++) {
        if (i > 1) strcat(out, ", ");
        strcat(out, s->adapters[i].name);
    }
    return out;
}

/* Bytes of the adapters running jobs pin now (those whose size is known). */
static size_t pinned_bytes(const lq_scheduler *s) {
    size_t sum = 0;
    for (int i = 1; i < s->n_adapters; i++)
        if (s->adapters[i].n_running > 0) sum += s->adapters[i].bytes;
    return sum;
}

/* ---------- events ---------- */

static lq_event *new_event(lq_scheduler *s, void *user, lq_event_type type, const sjob *j) {
    if (grow((void **)&s->events, &s->cap_events, s->n_events + 1, sizeof *s->events) != 0) return NULL;
    lq_sched_event *se = &s->events[s->n_events++];
    memset(se, 0, sizeof *se);
    se->user = user;
    se->ev.type = type;
    se->ev.queue_ms = se->ev.run_ms = -1;
    se->ev.job = dup_str(j->job.id);
    return &se->ev;
}

/* Text of one token on its own (top-n alternatives, prompt tokens), as TGI reports it. */
static char *token_text(const lq_scheduler *s, int32_t id) {
    char *t = tok_decode(s->tok, &id, 1, 0, NULL, NULL);
    return t ? t : dup_str("");
}

/* The text a token event carries: the streamed piece, and for a special token its content. */
static void set_token_text(lq_scheduler *s, lq_event *e, int32_t id, const char *piece, size_t len) {
    e->special = tok_is_special(s->tok, id);
    const char *content = e->special ? tok_id_to_token(s->tok, id) : NULL;
    if (content) {
        e->text = format_str("%.*s%s", (int)len, piece, content);
        e->text_len = e->text ? strlen(e->text) : 0;
    } else {
        e->text = dup_mem(piece, len);
        e->text_len = e->text ? len : 0;
    }
}

static void emit_token(lq_scheduler *s, sjob *j, const lq_token_choice *c, const char *piece, size_t len) {
    lq_event *e = new_event(s, j->user, LQ_EVENT_TOKEN, j);
    if (!e) return;
    const lq_generation *g = j->gen;
    e->index = g->n_tokens - g->n_prompt - 1;
    e->token = c->id;
    e->logprob = c->logprob;
    set_token_text(s, e, c->id, piece, len);
    if (c->n_top > 0 && (e->top = calloc((size_t)c->n_top, sizeof *e->top))) {
        e->n_top = c->n_top;
        for (int i = 0; i < c->n_top; i++)
            e->top[i] = (lq_top_token){c->top_ids[i], c->top_logprobs[i], token_text(s, c->top_ids[i])};
    }
}

static void add_prefill_details(lq_scheduler *s, const sjob *j, lq_event *e) {
    int n = j->job.n_prompt;
    if (!(e->prefill = calloc((size_t)n, sizeof *e->prefill))) return;
    e->n_prefill = n;
    for (int i = 0; i < n; i++) {
        int32_t id = j->job.prompt[i];
        e->prefill[i] = (lq_prefill_token){id, i > 0, i > 0 ? j->prompt_lp[i] : 0.0f, token_text(s, id)};
    }
}

static void set_timings(const sjob *j, lq_event *e, int64_t now) {
    int64_t created = j->job.created_ms;
    if (j->admit_ms > 0) {
        if (created > 0) e->queue_ms = j->admit_ms > created ? j->admit_ms - created : 0;
        e->run_ms = now > j->admit_ms ? now - j->admit_ms : 0;
    } else if (created > 0) {
        e->queue_ms = now > created ? now - created : 0;
    }
}

/* The job's end event, from its generation (if any) and its error (if any). */
static void emit_end(lq_scheduler *s, sjob *j) {
    lq_event *e = new_event(s, j->user, LQ_EVENT_END, j);
    if (!e) return;
    const lq_generation *g = j->gen;
    int generated = g ? g->n_tokens - g->n_prompt : 0;
    e->index = e->generated_tokens = generated;
    e->prompt_tokens = j->job.n_prompt;
    e->text = g && g->text ? dup_mem(g->text, g->text_len) : dup_str("");
    e->text_len = e->text && g ? g->text_len : 0;
    if (j->error) {
        e->finish_reason = dup_str("error");
        e->error = dup_str(j->error);
        e->error_type = dup_str(j->error_type);
    } else {
        e->finish_reason = dup_str(lq_finish_name(g ? g->finish : LQ_FINISH_NONE));
    }
    if (g && j->job.params.do_sample) {
        e->has_seed = 1;
        e->seed = g->params.sampling.seed;
    }
    if (!j->error && j->prompt_lp && g && g->n_in_cache >= g->n_prompt) add_prefill_details(s, j, e);
    set_timings(j, e, wall_ms());
}

/* ---------- job lifetime ---------- */

static void free_job(sjob *j) {
    if (!j) return;
    lq_job_clear(&j->job);
    free(j->prompt_lp);
    free(j->error);
    free(j->error_type);
    free(j);
}

static void unlink_waiting(lq_scheduler *s, sjob *j) {
    adapter_entry *a = &s->adapters[j->adapter];
    sjob **p = &a->wait_head, *prev = NULL;
    while (*p && *p != j) prev = *p, p = &(*p)->next_waiting;
    if (!*p) return;
    *p = j->next_waiting;
    if (a->wait_tail == j) a->wait_tail = prev;
    j->next_waiting = NULL;
    s->n_waiting--;
}

/* Gives back everything the job holds: its place in a queue, KV blocks, its adapter pin. */
static void release_job(lq_scheduler *s, sjob *j) {
    if (j->state == JOB_WAITING) unlink_waiting(s, j);
    if (j->lora) {
        lq_registry_release(s->registry, j->lora);
        j->lora = NULL;
    }
    if (j->state == JOB_RUNNING) s->adapters[j->adapter].n_running--;
    lq_generation_free(j->gen, s->kv);
    j->gen = NULL;
}

/* Ends a job now: its end event goes out and its resources come back. The
 * struct stays in the lists (state OVER) until reap() at the end of the step. */
static void finish_job(lq_scheduler *s, sjob *j) {
    emit_end(s, j);
    release_job(s, j);
    j->state = JOB_OVER;
}

static void fail_job(lq_scheduler *s, sjob *j, const char *type, char *message /* taken */) {
    free(j->error), free(j->error_type);
    j->error = message ? message : dup_str("out of memory");
    j->error_type = dup_str(type);
    finish_job(s, j);
}

/* Frees the jobs that are over and closes the gaps they leave. */
static void reap(lq_scheduler *s) {
    int k = 0;
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->state == JOB_RUNNING) s->running[k++] = s->running[i];
    s->n_running = k;
    k = 0;
    for (int i = 0; i < s->n_jobs; i++) {
        if (s->jobs[i]->state == JOB_OVER) free_job(s->jobs[i]);
        else s->jobs[k++] = s->jobs[i];
    }
    s->n_jobs = k;
}

/* ---------- submission ---------- */

static int copy_job(lq_job *d, const lq_job *j) {
    memset(d, 0, sizeof *d);
    *d = *j;
    d->id = dup_str(j->id);
    d->tenant = dup_str(j->tenant);
    d->adapter = dup_str(j->adapter);
    d->n_prompt = j->prompt && j->n_prompt > 0 ? j->n_prompt : 0;
    d->prompt = malloc((size_t)(d->n_prompt ? d->n_prompt : 1) * sizeof *d->prompt);
    d->params.n_stop = 0;
    if (!d->id || !d->tenant || !d->adapter || !d->prompt) return -1;
    if (d->n_prompt) memcpy(d->prompt, j->prompt, (size_t)d->n_prompt * sizeof *d->prompt);
    for (int i = 0; i < j->params.n_stop && i < LQ_JOB_MAX_STOP; i++) {
        if (!(d->params.stop[i] = dup_str(j->params.stop[i]))) return -1;
        d->params.n_stop = i + 1;
    }
    return 0;
}

static lq_sampling sampling_of(const lq_job *j) {
    const lq_job_params *p = &j->params;
    lq_sampling sp = lq_sampling_default();
    sp.do_sample = p->do_sample;
    sp.temperature = (float)p->temperature;
    sp.top_k = p->top_k;
    sp.top_p = (float)p->top_p;
    sp.typical_p = (float)p->typical_p;
    sp.repetition_penalty = (float)p->repetition_penalty;
    sp.frequency_penalty = (float)p->frequency_penalty;
    sp.presence_penalty = (float)p->presence_penalty;
    sp.top_n_tokens = p->top_n_tokens;
    sp.seed = p->has_seed ? p->seed : p->do_sample ? default_seed(j->id) : 0;
    return sp;
}

static char *unknown_adapter_message(const lq_scheduler *s, const char *name) {
    char *known = known_adapters(s);
    char *msg = known && known[0]
                    ? format_str("unknown adapter '%s'; this worker serves: %s (and \"\", the base model)", name, known)
                    : format_str("unknown adapter '%s'; this worker serves only the base model (\"\")", name);
    free(known);
    return msg;
}

/* Why a job cannot run here (a message, and *type), or NULL when it can. */
static char *validate(const lq_scheduler *s, const lq_job *j, const lq_sampling *sp, const int32_t *resume,
                      int n_resume, const char **type) {
    const lq_model_config *mc = &s->model->cfg;
    *type = "validation";
    const char *bad = lq_job_params_check(&j->params);
    if (!bad) bad = lq_sampling_check(sp);
    if (bad) return format_str("%s", bad);
    if (j->n_prompt < 1 || !j->prompt) return format_str("the prompt is empty");
    if (j->max_new_tokens < 1) return format_str("max_new_tokens must be at least 1, got %d", j->max_new_tokens);
    if (find_adapter(s, j->adapter) < 0) {
        *type = "adapter";
        return unknown_adapter_message(s, j->adapter ? j->adapter : "");
    }
    for (int i = 0; i < j->n_prompt; i++)
        if (j->prompt[i] < 0 || j->prompt[i] >= mc->vocab_size)
            return format_str("prompt token %d has id %d, outside the model's vocabulary of %d", i, j->prompt[i],
                              mc->vocab_size);
    long total = (long)j->n_prompt + j->max_new_tokens;
    if (total > mc->max_position)
        return format_str("prompt (%d tokens) + max_new_tokens (%d) = %ld tokens exceeds the model's %d positions",
                          j->n_prompt, j->max_new_tokens, total, mc->max_position);
    long pool = (long)s->kv->pool.n_blocks * s->cfg.block_size;
    if (blocks_for(s, (int)total) > s->kv->pool.n_blocks)
        return format_str("prompt (%d tokens) + max_new_tokens (%d) = %ld tokens exceeds this worker's KV cache of "
                          "%ld tokens (max_batch_total_tokens)",
                          j->n_prompt, j->max_new_tokens, total, pool);
    if (n_resume < 0 || (n_resume > 0 && !resume)) return format_str("no tokens to resume from (%d)", n_resume);
    if (n_resume > j->max_new_tokens)
        return format_str("%d tokens to resume from, more than max_new_tokens (%d)", n_resume, j->max_new_tokens);
    for (int i = 0; i < n_resume; i++)
        if (resume[i] < 0 || resume[i] >= mc->vocab_size)
            return format_str("resumed token %d has id %d, outside the model's vocabulary", i, resume[i]);
    return NULL;
}

/* Builds the job's generation and replays the resumed tokens into it. */
static int start_generation(lq_scheduler *s, sjob *j, const lq_sampling *sp, const int32_t *resume, int n_resume,
                            lq_error *err) {
    lq_gen_params gp = {0};
    gp.sampling = *sp;
    gp.max_new_tokens = j->job.max_new_tokens;
    for (int i = 0; i < j->job.params.n_stop && i < LQ_MAX_STOP; i++) gp.stop[gp.n_stop++] = j->job.params.stop[i];
    gp.ignore_eos = j->job.params.ignore_eos;
    j->gen = lq_generation_new(s->model, s->tok, j->job.prompt, j->job.n_prompt, &gp, err);
    if (!j->gen) return -1;
    if (j->job.params.decoder_input_details && !(j->prompt_lp = calloc((size_t)j->job.n_prompt, sizeof(float))))
        return lq_fail(err, "out of memory");
    for (int i = 0; i < n_resume && j->gen->finish == LQ_FINISH_NONE; i++) {
        const char *piece;
        size_t len;
        if (lq_generation_force(j->gen, resume[i], &piece, &len, err) != 0) return -1;
    }
    return 0;
}

static void note_recent(lq_scheduler *s, int blocks) {
    s->recent_blocks[s->recent_at] = blocks;
    s->recent_at = (s->recent_at + 1) % RECENT_JOBS;
    if (s->n_recent < RECENT_JOBS) s->n_recent++;
}

static void enqueue_waiting(lq_scheduler *s, sjob *j) {
    adapter_entry *a = &s->adapters[j->adapter];
    j->state = JOB_WAITING;
    if (a->wait_tail) a->wait_tail->next_waiting = j;
    else a->wait_head = j;
    a->wait_tail = j;
    s->n_waiting++;
}

int lq_scheduler_submit(lq_scheduler *s, const lq_job *job, const int32_t *resume, int n_resume, void *user,
                        lq_error *err) {
    if (grow((void **)&s->jobs, &s->cap_jobs, s->n_jobs + 1, sizeof *s->jobs) != 0)
        return lq_fail(err, "out of memory");
    sjob *j = calloc(1, sizeof *j);
    if (!j || copy_job(&j->job, job) != 0) {
        if (j) free_job(j);
        return lq_fail(err, "out of memory");
    }
    j->user = user;
    j->seq = s->n_submitted++;
    j->state = JOB_ENDING;
    const char *type;
    lq_sampling sp = sampling_of(job);
    char *why = validate(s, job, &sp, resume, n_resume, &type); /* the original: the copy trims what is too long */
    lq_error gerr;
    if (!why && start_generation(s, j, &sp, resume, n_resume, &gerr) != 0) {
        why = format_str("%s", gerr.msg);
        type = "internal";
    }
    s->jobs[s->n_jobs++] = j;
    if (why) {
        j->error = why;
        j->error_type = dup_str(type);
        j->adapter = 0;
        return 0;
    }
    j->adapter = find_adapter(s, j->job.adapter);
    note_recent(s, blocks_for(s, job_tokens(j)));
    if (j->gen->finish == LQ_FINISH_NONE) enqueue_waiting(s, j); /* else: the replay ended it, ENDING */
    return 0;
}

void lq_scheduler_drop(lq_scheduler *s, void *user) {
    for (int i = 0; i < s->n_jobs; i++) {
        sjob *j = s->jobs[i];
        if (j->user != user || j->state == JOB_OVER) continue;
        release_job(s, j);
        j->state = JOB_OVER;
    }
    reap(s);
}

int lq_scheduler_running(const lq_scheduler *s) {
    int n = 0;
    for (int i = 0; i < s->n_jobs; i++) n += s->jobs[i]->state != JOB_OVER;
    return n;
}

/* Free places under max_running, bounded by the typical jobs (the mean of the
 * recent ones: it tracks the traffic, where a worst case would leave the pool
 * idle) that fit in the KV blocks the waiting jobs leave free. */
int lq_scheduler_free_slots(const lq_scheduler *s) {
    int slots = s->cfg.max_running - s->n_running - s->n_waiting;
    long free_blocks = s->kv->n_free;
    for (int a = 0; a < s->n_adapters; a++)
        for (const sjob *j = s->adapters[a].wait_head; j; j = j->next_waiting) free_blocks -= blocks_for(s, job_tokens(j));
    long typical = blocks_for(s, s->cfg.max_batch_prefill_tokens + 256);
    if (s->n_recent > 0) {
        long sum = 0;
        for (int i = 0; i < s->n_recent; i++) sum += s->recent_blocks[i];
        typical = (sum + s->n_recent - 1) / s->n_recent;
    }
    long fit = free_blocks > 0 ? free_blocks / (typical > 0 ? typical : 1) : 0;
    if (fit < slots) slots = (int)fit;
    if (slots < 0) slots = 0;
    if (slots == 0 && lq_scheduler_running(s) == 0) slots = 1;
    return slots;
}

/* ---------- planning a step ---------- */

/* Tokens of j's generation to run this step, 0 if none fit; *solo when they
 * must run alone (a 128+-token prompt chunk on a batch-invariant backend). */
static int next_chunk(const lq_scheduler *s, const plan *p, const sjob *j, int *solo) {
    const lq_generation *g = j->gen;
    int pending = lq_generation_pending(g);
    *solo = 0;
    if (j->decoding) return pending; /* one decode token, outside the prefill budget */
    int prompt_left = g->n_prompt - g->n_in_cache;
    if (s->invariant_rows && prompt_left > 0) {
        int c = prompt_left < s->cfg.max_batch_prefill_tokens ? prompt_left : s->cfg.max_batch_prefill_tokens;
        if (c >= s->invariant_rows) {
            *solo = 1;
            return !p->solo.job && p->budget >= c ? c : 0;
        }
    }
    return pending < p->budget ? pending : p->budget;
}

static void add_work(plan *p, sjob *j, int n, int solo) {
    work w = {j, j->gen->n_in_cache, n};
    if (!j->decoding) p->budget -= n;
    if (solo) p->solo = w;
    else p->items[p->n_items++] = w;
}

/* Work for the jobs already running, oldest first (so a long prompt keeps its turn). */
static void plan_running(lq_scheduler *s, plan *p) {
    for (int i = 0; i < s->n_running; i++) {
        sjob *j = s->running[i];
        if (j->state != JOB_RUNNING) continue;
        int solo, n = next_chunk(s, p, j, &solo);
        if (n > 0) add_work(p, j, n, solo);
    }
}

typedef enum admit_result { ADMIT_DONE, ADMIT_SKIP, ADMIT_STOP } admit_result;

typedef enum pin_result { PIN_OK, PIN_WAIT, PIN_FAILED } pin_result;

/* Pins j's adapter (nothing to pin for the base model). PIN_WAIT: its known
 * size does not fit the budget beside the adapters running jobs pin, so it
 * waits for some to finish; PIN_FAILED: it cannot be loaded, and j has ended. */
static pin_result pin_adapter(lq_scheduler *s, sjob *j) {
    adapter_entry *a = &s->adapters[j->adapter];
    if (j->adapter == 0) return PIN_OK;
    size_t budget = s->cfg.adapter_budget_bytes;
    if (budget && a->bytes && a->bytes <= budget && a->n_running == 0 && !lq_scheduler_is_resident(s, a->name) &&
        pinned_bytes(s) + a->bytes > budget)
        return PIN_WAIT;
    lq_error err;
    j->lora = lq_registry_acquire(s->registry, a->name, a->dir, &err);
    if (!j->lora) {
        unlink_waiting(s, j);
        j->state = JOB_ENDING;
        fail_job(s, j, "adapter", format_str("adapter '%s' cannot be used: %s", a->name, err.msg));
        return PIN_FAILED;
    }
    a->bytes = j->lora->bytes;
    return PIN_OK;
}

/* Tries to start the job at the head of an adapter's queue. */
static admit_result try_admit(lq_scheduler *s, plan *p, sjob *j) {
    if (s->n_running >= s->cfg.max_running || p->budget <= 0) return ADMIT_STOP;
    int solo, n = next_chunk(s, p, j, &solo);
    if (n <= 0) return solo ? ADMIT_SKIP : ADMIT_STOP;
    if (lq_kv_blocks_needed(s->kv, &j->gen->kv, job_tokens(j)) > s->kv->n_free) return ADMIT_STOP;
    pin_result pin = pin_adapter(s, j);
    if (pin != PIN_OK) return pin == PIN_WAIT ? ADMIT_SKIP : ADMIT_DONE;
    if (grow((void **)&s->running, &s->cap_running, s->n_running + 1, sizeof *s->running) != 0 ||
        lq_kv_reserve(s->kv, &j->gen->kv, job_tokens(j)) != 0) {
        unlink_waiting(s, j);
        j->state = JOB_ENDING;
        fail_job(s, j, "internal", format_str("out of memory admitting the job"));
        return ADMIT_DONE;
    }
    unlink_waiting(s, j);
    j->state = JOB_RUNNING;
    j->admit_ms = wall_ms();
    j->gen->params.adapter = j->lora;
    s->adapters[j->adapter].n_running++;
    s->running[s->n_running++] = j;
    add_work(p, j, n, solo);
    return ADMIT_DONE;
}

/* Admits waiting jobs one adapter at a time, round-robin from the cursor. */
static void admit_waiting(lq_scheduler *s, plan *p) {
    for (int progress = 1; progress;) {
        progress = 0;
        for (int k = 0; k < s->n_adapters; k++) {
            int a = (s->rr + k) % s->n_adapters;
            adapter_entry *e = &s->adapters[a];
            if (!e->wait_head || e->skip_stamp == s->step_no) continue;
            admit_result r = try_admit(s, p, e->wait_head);
            if (r == ADMIT_STOP) return;
            if (r == ADMIT_SKIP) {
                e->skip_stamp = s->step_no;
                continue;
            }
            s->rr = (a + 1) % s->n_adapters; /* the next adapter's turn */
            progress = 1;
            break;
        }
    }
}

/* ---------- running a step ---------- */

/* log-softmax of row at `id`. */
static float logprob_of(const float *row, int vocab, int32_t id) {
    float mx = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (row[i] > mx) mx = row[i];
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) sum += exp((double)(row[i] - mx));
    return row[id] - (mx + (float)log(sum));
}

/* decoder_input_details: the logits at position p give prompt token p + 1 its logprob. */
static void record_prompt_logprobs(const lq_scheduler *s, sjob *j, int pos, int n, const float *rows) {
    int vocab = s->model->cfg.vocab_size;
    for (int r = 0; r < n; r++) {
        int next = pos + r + 1;
        if (next < j->job.n_prompt) j->prompt_lp[next] = logprob_of(rows + (size_t)r * vocab, vocab, j->job.prompt[next]);
    }
}

static void sample_next(lq_scheduler *s, sjob *j, float *logits) {
    lq_token_choice c;
    const char *piece;
    size_t len;
    lq_error err;
    if (lq_generation_next(j->gen, logits, &c, &piece, &len, &err) != 0) {
        fail_job(s, j, "internal", format_str("%s", err.msg));
        return;
    }
    j->decoding = 1;
    emit_token(s, j, &c, piece, len);
    if (j->gen->finish != LQ_FINISH_NONE) finish_job(s, j);
}

static int wants_all_logits(const sjob *j, const work *w) {
    return j->prompt_lp && w->pos < j->job.n_prompt - 1;
}

/* One lq_model_step over the given work, then what its logits mean for each job. */
static int run_pass(lq_scheduler *s, const work *items, int n, lq_error *err) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        const work *w = &items[i];
        if (w->job->state != JOB_RUNNING) continue; /* ended in an earlier pass of this step */
        const lq_generation *g = w->job->gen;
        s->pass[k] = *w;
        s->pass_seqs[k++] = (lq_step_seq){g->tokens + w->pos, w->n, w->pos, g->kv.table, wants_all_logits(w->job, w),
                                          w->job->lora};
    }
    if (k == 0) return 0;
    if (lq_model_step(s->model, s->rs, &s->kv->pool, s->pass_seqs, k, s->logits, err) < 0) return -1;
    size_t vocab = (size_t)s->model->cfg.vocab_size, row = 0;
    for (int i = 0; i < k; i++) {
        sjob *j = s->pass[i].job;
        const lq_step_seq *q = &s->pass_seqs[i];
        int rows = q->all_logits ? q->n_tokens : 1;
        j->gen->n_in_cache += q->n_tokens;
        if (q->all_logits) record_prompt_logprobs(s, j, q->pos, rows, s->logits + row * vocab);
        if (lq_generation_pending(j->gen) == 0) sample_next(s, j, s->logits + (row + (size_t)rows - 1) * vocab);
        row += (size_t)rows;
    }
    return 0;
}

static int by_adapter(const void *a, const void *b) {
    const work *x = a, *y = b;
    if (x->job->adapter != y->job->adapter) return x->job->adapter < y->job->adapter ? -1 : 1;
    return x->job->seq < y->job->seq ? -1 : x->job->seq > y->job->seq;
}

/* Runs the shared items, grouped by adapter, in passes of at most pass_rows
 * rows; an item that straddles a pass boundary is split (its first part
 * writes the K/V the second part attends to, one pass earlier). */
static int run_shared(lq_scheduler *s, plan *p, lq_error *err) {
    qsort(p->items, (size_t)p->n_items, sizeof *p->items, by_adapter);
    work *pass = s->items + p->n_items; /* the scratch's tail: parts of this pass (at most one per job) */
    int n = 0, rows = 0, rc = 0;
    for (int i = 0; i < p->n_items && rc == 0; i++) {
        work w = p->items[i];
        while (w.n > 0 && rc == 0) {
            int take = w.n < s->pass_rows - rows ? w.n : s->pass_rows - rows;
            pass[n++] = (work){w.job, w.pos, take};
            rows += take;
            w.pos += take;
            w.n -= take;
            if (rows == s->pass_rows) {
                rc = run_pass(s, pass, n, err);
                n = rows = 0;
            }
        }
    }
    if (rc == 0) rc = run_pass(s, pass, n, err);
    return rc;
}

static void end_overdue(lq_scheduler *s, int64_t now) {
    for (int i = 0; i < s->n_jobs; i++) {
        sjob *j = s->jobs[i];
        if (j->state == JOB_ENDING) {
            finish_job(s, j);
            continue;
        }
        if (j->state == JOB_OVER || j->job.deadline_ms <= 0 || now <= j->job.deadline_ms) continue;
        int generated = j->gen ? j->gen->n_tokens - j->gen->n_prompt : 0;
        fail_job(s, j, "deadline",
                 format_str("deadline passed: the job had to finish by %lld ms (Unix time) and it is now %lld ms, %lld "
                            "ms later; %s after %d generated tokens",
                            (long long)j->job.deadline_ms, (long long)now, (long long)(now - j->job.deadline_ms),
                            j->state == JOB_WAITING ? "still waiting to start" : "stopped", generated));
    }
}

int lq_scheduler_step(lq_scheduler *s, const lq_sched_event **events, lq_error *err) {
    clear_events(s);
    *events = NULL;
    s->step_no++;
    end_overdue(s, wall_ms());
    plan p = {.budget = s->cfg.max_batch_prefill_tokens, .items = s->items};
    plan_running(s, &p);
    admit_waiting(s, &p);
    int rc = 0;
    if (p.solo.job) rc = run_pass(s, &p.solo, 1, err);
    if (rc == 0 && p.n_items > 0) rc = run_shared(s, &p, err);
    reap(s);
    *events = s->n_events ? s->events : NULL;
    return rc < 0 ? -1 : s->n_events;
}
