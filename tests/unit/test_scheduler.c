/* test_scheduler.c — continuous batching (worker/scheduler.c) on the bundled model.
 *
 * The central property: whatever else shares its steps, a job's tokens are
 * the ones it gets alone — checked against a scheduler that runs one job at a
 * time, and against a plain lq_generation driven the way `lorq generate`
 * drives it. Around it: fair admission across adapters, waiting for KV space,
 * the errors a job can end with (validation, adapter, deadline), drop,
 * resuming from delivered tokens (greedy and seeded sampling), prompt
 * log-probabilities and top-n alternatives. Every event goes through the
 * msgpack codec on its way into the test, so what is checked is what the
 * queue layer will publish. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "generate.h"
#include "job.h"
#include "kvcache.h"
#include "lora.h"
#include "model.h"
#include "scheduler.h"
#include "tokenizer.h"

#define ADAPTER_DIR "tests/reference/adapters/"
static const char *const ADAPTERS[] = {"r8-qv", "r16-attn-rslora", "r64-qv-layers", "r8-all-pattern"};
#define N_ADAPTERS 4
#define MAX_TOK 64

typedef struct fixture {
    lq_backend *backend;
    lq_model *model;
    lq_tokenizer *tok;
} fixture;

static fixture F;

static int setup(void **state) {
    const char *dir = getenv("LORQ_MODEL_DIR");
    if (!dir) dir = "models/SmolLM2-135M-Instruct";
    lq_error err;
    F.backend = lq_backend_cpu_new(0, &err);
    F.model = F.backend ? lq_model_load(dir, F.backend, &err) : NULL;
    F.tok = F.model ? tok_load(dir, &err) : NULL;
    if (!F.tok) {
        fprintf(stderr, "cannot load the bundled model (run make setup): %s\n", err.msg);
        return -1;
    }
    *state = &F;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tok_free(F.tok);
    lq_model_free(F.model);
    F.backend->destroy(F.backend);
    return 0;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- prompts ---------- */

typedef struct prompt {
    int32_t *ids;
    int n;
} prompt;

static prompt encode(const char *text) {
    prompt p;
    size_t n;
    lq_error err;
    assert_int_equal(tok_encode(F.tok, text, strlen(text), 1, &p.ids, &n, &err), 0);
    p.n = (int)n;
    return p;
}

/* A prompt of at least n tokens: a paragraph repeated, cut to n. */
static prompt long_prompt(int n) {
    const char *para = "The river runs past the old mill, where the miller keeps his accounts in a green ledger. "
                       "Every spring the water rises and the children count the boats that drift downstream. ";
    size_t len = strlen(para);
    char *text = malloc(len * 20 + 1);
    text[0] = '\0';
    for (int i = 0; i < 20; i++) strcat(text, para);
    prompt p = encode(text);
    free(text);
    assert_true(p.n >= n);
    p.n = n;
    return p;
}

static const char *const TEXTS[] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea, there lived",
    "List three colors:",
    "Q: What is 2 + 2?\nA:",
    "In 1969, the first humans",
    "Translate to French: good morning",
    "The best way to learn a language is",
};
#define N_TEXTS 8

/* ---------- jobs and what comes back ---------- */

/* What a test asks of one job. */
typedef struct spec {
    const char *id;      /* NULL: job-<index> */
    const char *adapter; /* "" for the base model */
    prompt p;
    int max_new;
    lq_job_params params;
    int64_t deadline_ms;
    const int32_t *resume;
    int n_resume;
    int submit_step; /* submitted just before this step */
} spec;

static spec make_spec(const char *adapter, prompt p, int max_new) {
    spec s = {NULL, adapter, p, max_new, lq_job_params_default(), 0, NULL, 0, 0};
    return s;
}

/* What one job's events said. Events are deep copies made through the codec. */
typedef struct outcome {
    int32_t tokens[MAX_TOK];
    float logprobs[MAX_TOK];
    int index[MAX_TOK];
    int n;
    char stream[2048]; /* texts of the non-special token events, concatenated */
    lq_event first;    /* the first token event */
    lq_event end;
    int ended, first_step, end_step;
} outcome;

static void outcome_init(outcome *o, int n) {
    memset(o, 0, (size_t)n * sizeof *o);
    for (int i = 0; i < n; i++) o[i].first_step = o[i].end_step = -1;
}

static void outcome_free(outcome *o, int n) {
    for (int i = 0; i < n; i++) lq_event_clear(&o[i].first), lq_event_clear(&o[i].end);
}

/* Encodes and decodes an event (the bytes the queue layer publishes). */
static void round_trip(const lq_event *e, lq_event *copy) {
    lq_buf b = {0};
    lq_error err;
    if (lq_event_encode(e, &b, &err) != 0) fail_msg("event does not encode: %s", err.msg);
    if (lq_event_decode(b.data, b.len, copy, &err) != 0) fail_msg("event does not decode: %s", err.msg);
    lq_buf_free(&b);
}

static void record(outcome *o, const lq_event *e, int step) {
    assert_false(o->ended); /* nothing after the end event */
    if (e->type == LQ_EVENT_END) {
        round_trip(e, &o->end);
        assert_null(e->worker); /* the queue layer sets it */
        o->ended = 1;
        o->end_step = step;
        return;
    }
    assert_true(o->n < MAX_TOK);
    if (o->n == 0) {
        round_trip(e, &o->first);
        o->first_step = step;
    } else {
        assert_int_equal(e->index, o->index[o->n - 1] + 1);
    }
    o->tokens[o->n] = e->token;
    o->logprobs[o->n] = e->logprob;
    o->index[o->n++] = e->index;
    if (!e->special) strncat(o->stream, e->text, sizeof o->stream - strlen(o->stream) - 1);
}

static lq_scheduler *new_scheduler(lq_sched_config c) {
    lq_error err;
    lq_scheduler *s = lq_scheduler_new(F.model, F.tok, &c, &err);
    if (!s) fail_msg("scheduler: %s", err.msg);
    for (int i = 0; i < N_ADAPTERS; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, ADAPTER_DIR "%s", ADAPTERS[i]);
        if (lq_scheduler_add_adapter(s, ADAPTERS[i], dir, 0, &err) != 0) fail_msg("%s", err.msg);
    }
    return s;
}

static lq_sched_config small_config(int prefill, int total, int max_running) {
    lq_sched_config c = lq_sched_config_default();
    c.max_batch_prefill_tokens = prefill;
    c.max_batch_total_tokens = total;
    c.max_running = max_running;
    return c;
}

static void submit(lq_scheduler *s, const spec *sp, int i, outcome *o) {
    char id[32];
    snprintf(id, sizeof id, "%s", sp->id ? sp->id : "job-");
    if (!sp->id) snprintf(id, sizeof id, "job-%d", i);
    lq_job j = {.id = id,
                .tenant = "t",
                .adapter = (char *)sp->adapter,
                .prompt = sp->p.ids,
                .n_prompt = sp->p.n,
                .max_new_tokens = sp->max_new,
                .params = sp->params,
                .deadline_ms = sp->deadline_ms,
                .created_ms = now_ms()};
    lq_error err;
    if (lq_scheduler_submit(s, &j, sp->resume, sp->n_resume, o, &err) != 0) fail_msg("submit: %s", err.msg);
}

/* One step; its events go to the outcomes their user pointers name. */
static int step_once(lq_scheduler *s, int step) {
    const lq_sched_event *ev;
    lq_error err;
    int n = lq_scheduler_step(s, &ev, &err);
    if (n < 0) fail_msg("step failed: %s", err.msg);
    for (int k = 0; k < n; k++) record(ev[k].user, &ev[k].ev, step);
    return n;
}

/* Submits each job before its step and steps until every job has ended. Returns the steps taken. */
static int run_all(lq_scheduler *s, const spec *sp, outcome *o, int n) {
    int step = 0, submitted = 0;
    for (;; step++) {
        for (int i = 0; i < n; i++)
            if (sp[i].submit_step == step) submit(s, &sp[i], i, &o[i]), submitted++;
        step_once(s, step);
        if (submitted == n && lq_scheduler_running(s) == 0) break;
        assert_true(step < 5000);
    }
    for (int i = 0; i < n; i++) assert_true(o[i].ended);
    return step + 1;
}

/* Each job alone, one after the other, through a scheduler of the same configuration. */
static void run_solo(lq_sched_config c, const spec *sp, outcome *o, int n) {
    lq_scheduler *s = new_scheduler(c);
    for (int i = 0; i < n; i++) {
        spec one = sp[i];
        one.submit_step = 0;
        run_all(s, &one, &o[i], 1);
    }
    lq_scheduler_free(s);
}

static void assert_same_tokens(const outcome *a, const outcome *b, const char *what, int i) {
    if (a->n != b->n || memcmp(a->tokens, b->tokens, (size_t)a->n * sizeof a->tokens[0]) != 0)
        fail_msg("%s: job %d gives %d tokens, its reference %d (or different ones)", what, i, a->n, b->n);
    assert_memory_equal(a->logprobs, b->logprobs, (size_t)a->n * sizeof a->logprobs[0]);
    assert_string_equal(a->end.finish_reason, b->end.finish_reason);
    assert_string_equal(a->end.text, b->end.text);
}

/* The job's generation driven as `lorq generate` drives it: prefill chunks of
 * `chunk` tokens, then one token per step. Returns the number of tokens. */
static int plain_generate(const spec *sp, int chunk, int32_t *out) {
    lq_model *m = F.model;
    lq_error err;
    lq_lora *lora = NULL;
    if (sp->adapter[0]) {
        char dir[256];
        snprintf(dir, sizeof dir, ADAPTER_DIR "%s", sp->adapter);
        assert_non_null(lora = lq_lora_load(dir, sp->adapter, m, &err));
    }
    lq_gen_params gp = {.sampling = lq_sampling_default(), .max_new_tokens = sp->max_new, .adapter = lora};
    lq_generation *g = lq_generation_new(m, F.tok, sp->p.ids, sp->p.n, &gp, &err);
    assert_non_null(g);
    int bs = 16, n_blocks = (sp->p.n + sp->max_new + bs - 1) / bs;
    lq_kvcache *kv = lq_kvcache_new(m->backend, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, n_blocks, bs, &err);
    lq_run_state *rs = lq_run_state_new(m, chunk, 1, &err);
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    while (g->finish == LQ_FINISH_NONE) {
        int n = lq_generation_pending(g) < chunk ? lq_generation_pending(g) : chunk;
        assert_int_equal(lq_kv_reserve(kv, &g->kv, g->n_in_cache + n), 0);
        lq_step_seq q = {g->tokens + g->n_in_cache, n, g->n_in_cache, g->kv.table, 0, lora};
        assert_int_equal(lq_model_step(m, rs, &kv->pool, &q, 1, logits, &err), 1);
        g->n_in_cache += n;
        if (lq_generation_pending(g) > 0) continue;
        lq_token_choice c;
        const char *piece;
        size_t len;
        assert_int_equal(lq_generation_next(g, logits, &c, &piece, &len, &err), 0);
    }
    int n = g->n_tokens - g->n_prompt;
    memcpy(out, g->tokens + g->n_prompt, (size_t)n * sizeof *out);
    free(logits);
    lq_run_state_free(m, rs);
    lq_generation_free(g, kv);
    lq_kvcache_free(kv);
    lq_lora_free(lora);
    return n;
}

static void free_prompts(spec *sp, int n) {
    for (int i = 0; i < n; i++) free(sp[i].p.ids);
}

/* ---------- mixed jobs equal their solo runs ---------- */

/* Up to ten jobs over every adapter and the base model, prompts of 1 to 300
 * tokens, submitted at staggered steps; the last two have long prompts. */
static int mixed_specs(spec *sp, int n_short) {
    int n = 0;
    for (int i = 0; i < n_short; i++) {
        const char *adapter = i % 5 == 4 ? "" : ADAPTERS[i % N_ADAPTERS];
        sp[n] = make_spec(adapter, encode(TEXTS[i]), 1 + (i * 3) % 4);
        sp[n].submit_step = (i * 3) % 5;
        n++;
    }
    sp[n] = make_spec("r16-attn-rslora", long_prompt(300), 3);
    sp[n++].submit_step = 1;
    sp[n] = make_spec("", long_prompt(98), 2);
    sp[n++].submit_step = 2;
    return n;
}

static void check_mixed(lq_sched_config c, int n_short, int plain_chunk) {
    spec sp[16];
    int n = mixed_specs(sp, n_short);
    outcome mixed[16], solo[16];
    outcome_init(mixed, n), outcome_init(solo, n);
    lq_scheduler *s = new_scheduler(c);
    int steps = run_all(s, sp, mixed, n);
    lq_scheduler_free(s);
    run_solo(c, sp, solo, n);
    for (int i = 0; i < n; i++) {
        assert_same_tokens(&mixed[i], &solo[i], "mixed vs solo", i);
        assert_true(mixed[i].n >= 1 && mixed[i].n <= sp[i].max_new);
        assert_int_equal(mixed[i].end.generated_tokens, mixed[i].n);
        assert_int_equal(mixed[i].end.index, mixed[i].n);
        assert_int_equal(mixed[i].end.prompt_tokens, sp[i].p.n);
        if (!strcmp(mixed[i].end.finish_reason, "length")) assert_string_equal(mixed[i].stream, mixed[i].end.text);
        assert_false(mixed[i].end.has_seed); /* greedy */
        assert_true(mixed[i].end.queue_ms >= 0 && mixed[i].end.run_ms >= 0);
    }
    /* Against plain generations: the long prompts (one with an adapter) and an adapter's short one. */
    int pick[] = {n - 2, n - 1, 0};
    for (size_t k = 0; k < sizeof pick / sizeof pick[0]; k++) {
        int32_t toks[MAX_TOK];
        int nt = plain_generate(&sp[pick[k]], plain_chunk, toks);
        assert_int_equal(nt, mixed[pick[k]].n);
        assert_memory_equal(toks, mixed[pick[k]].tokens, (size_t)nt * sizeof *toks);
    }
    printf("  prefill budget %d: %d jobs (adapters and base, prompts 1-300 tokens) in %d steps: tokens and "
           "logprobs identical to solo runs and plain generations\n",
           c.max_batch_prefill_tokens, n, steps);
    outcome_free(mixed, n), outcome_free(solo, n);
    free_prompts(sp, n);
}

/* The default budget: a 300-token prompt is one 300-row chunk through BLAS, as `lorq generate` runs it. */
static void test_mixed_equals_solo_default(void **state) {
    (void)state;
    lq_sched_config c = lq_sched_config_default();
    c.max_batch_total_tokens = 4096;
    check_mixed(c, N_TEXTS, 512);
}

/* A budget of 160: the 300-token prompt takes two solo chunks, the 98-token one is split across passes. */
static void test_mixed_equals_solo_chunked(void **state) {
    (void)state;
    check_mixed(small_config(160, 4096, 16), 3, 160);
}

/* A budget of 24 (below the BLAS threshold): every prompt is prefilled in small chunks mixed with decodes. */
static void test_mixed_equals_solo_small_budget(void **state) {
    (void)state;
    lq_sched_config c = small_config(24, 4096, 6);
    spec sp[5];
    int n = 0;
    for (int i = 0; i < 4; i++) {
        sp[n] = make_spec(i == 2 ? "" : ADAPTERS[i % N_ADAPTERS], encode(TEXTS[i + 2]), 2);
        sp[n++].submit_step = i;
    }
    sp[n++] = make_spec("r8-qv", long_prompt(98), 2);
    outcome mixed[5], solo[5];
    outcome_init(mixed, n), outcome_init(solo, n);
    lq_scheduler *s = new_scheduler(c);
    run_all(s, sp, mixed, n);
    lq_scheduler_free(s);
    run_solo(c, sp, solo, n);
    for (int i = 0; i < n; i++) assert_same_tokens(&mixed[i], &solo[i], "small budget", i);
    int32_t toks[MAX_TOK];
    int nt = plain_generate(&sp[n - 1], 512, toks); /* any chunking below the threshold gives the same bits */
    assert_int_equal(nt, mixed[n - 1].n);
    assert_memory_equal(toks, mixed[n - 1].tokens, (size_t)nt * sizeof *toks);
    outcome_free(mixed, n), outcome_free(solo, n);
    free_prompts(sp, n);
}

/* ---------- admission ---------- */

/* Eight jobs for one adapter, then one for another: the quiet adapter's job is
 * admitted in the first round, and one submitted later jumps the flood's queue. */
static void test_fair_across_adapters(void **state) {
    (void)state;
    lq_scheduler *s = new_scheduler(small_config(512, 2048, 2));
    enum { FLOOD = 8 };
    spec sp[FLOOD + 2];
    outcome o[FLOOD + 2];
    outcome_init(o, FLOOD + 2);
    for (int i = 0; i < FLOOD; i++) sp[i] = make_spec("r8-qv", encode(TEXTS[i]), 2);
    sp[FLOOD] = make_spec("r16-attn-rslora", encode(TEXTS[0]), 2);
    sp[FLOOD + 1] = make_spec("r16-attn-rslora", encode(TEXTS[1]), 2);
    sp[FLOOD + 1].submit_step = 3;
    run_all(s, sp, o, FLOOD + 2);
    assert_int_equal(o[FLOOD].first_step, 0); /* admitted beside the flood's first job */
    int jumped = 0;
    for (int i = 0; i < FLOOD; i++)
        if (o[i].first_step >= 3 && o[i].first_step < o[FLOOD + 1].first_step) jumped++;
    if (jumped > 1) fail_msg("%d flood jobs started before the later quiet job", jumped);
    printf("  quiet adapter's jobs started at steps %d and %d (submitted at 0 and 3) beside a flood of %d\n",
           o[FLOOD].first_step, o[FLOOD + 1].first_step, FLOOD);
    lq_scheduler_free(s);
    outcome_free(o, FLOOD + 2);
    free_prompts(sp, FLOOD + 2);
}

/* A KV pool of 4 blocks and jobs of 2 blocks each: two run at once, the others
 * wait, nothing is lost, and every job's tokens are its solo tokens. */
static void test_kv_exhaustion_waits(void **state) {
    (void)state;
    lq_sched_config c = small_config(512, 64, 16);
    lq_scheduler *s = new_scheduler(c);
    assert_int_equal(lq_scheduler_free_slots(s), 1); /* idle: 4 blocks, a "typical" job of 768 tokens: still one */
    enum { N = 5 };
    spec sp[N];
    outcome o[N], solo[N];
    outcome_init(o, N), outcome_init(solo, N);
    for (int i = 0; i < N; i++) sp[i] = make_spec(i % 2 ? "r8-qv" : "", long_prompt(14 + 2 * i), 3); /* 17-25 tokens */
    for (int i = 0; i < N; i++) submit(s, &sp[i], i, &o[i]);
    assert_int_equal(lq_scheduler_free_slots(s), 0);
    assert_int_equal(lq_scheduler_running(s), N);
    for (int step = 0; lq_scheduler_running(s) > 0; step++) {
        step_once(s, step);
        int live = 0;
        for (int i = 0; i < N; i++) live += o[i].first_step >= 0 && !o[i].ended;
        assert_true(live <= 2);
        assert_true(step < 200);
    }
    run_solo(c, sp, solo, N);
    for (int i = 0; i < N; i++) assert_same_tokens(&o[i], &solo[i], "KV exhaustion", i);
    assert_true(lq_scheduler_free_slots(s) >= 1);
    lq_scheduler_free(s);
    outcome_free(o, N), outcome_free(solo, N);
    free_prompts(sp, N);
}

/* An adapter budget that holds one of two adapters: the second adapter's job
 * waits for the first one's to finish (and its adapter to be evicted) instead
 * of failing. */
static void test_adapter_budget_waits(void **state) {
    (void)state;
    lq_error err;
    size_t bytes[2];
    const char *names[2] = {"r8-qv", "r16-attn-rslora"};
    for (int i = 0; i < 2; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, ADAPTER_DIR "%s", names[i]);
        lq_lora *l = lq_lora_load(dir, names[i], F.model, &err);
        assert_non_null(l);
        bytes[i] = l->bytes;
        lq_lora_free(l);
    }
    lq_sched_config c = small_config(512, 1024, 8);
    c.adapter_budget_bytes = (bytes[0] > bytes[1] ? bytes[0] : bytes[1]) + bytes[0] / 2;
    lq_scheduler *s = lq_scheduler_new(F.model, F.tok, &c, &err);
    assert_non_null(s);
    for (int i = 0; i < 2; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, ADAPTER_DIR "%s", names[i]);
        assert_int_equal(lq_scheduler_add_adapter(s, names[i], dir, 1, &err), 0); /* sizes known from here on */
    }
    assert_true(lq_scheduler_is_resident(s, names[1]) && !lq_scheduler_is_resident(s, names[0]));
    spec sp[2] = {make_spec(names[0], encode(TEXTS[0]), 3), make_spec(names[1], encode(TEXTS[1]), 3)};
    outcome o[2];
    outcome_init(o, 2);
    run_all(s, sp, o, 2);
    for (int i = 0; i < 2; i++) assert_string_not_equal(o[i].end.finish_reason, "error");
    assert_true(o[1].first_step > o[0].end_step); /* it waited for the room */
    assert_string_equal(lq_scheduler_resident_list(s), names[1]);
    lq_scheduler_free(s);
    outcome_free(o, 2);
    free_prompts(sp, 2);
}

/* ---------- errors ---------- */

static void expect_error(const outcome *o, const char *type, const char *needle) {
    assert_true(o->ended);
    assert_string_equal(o->end.finish_reason, "error");
    assert_string_equal(o->end.error_type, type);
    if (!strstr(o->end.error, needle)) fail_msg("error '%s' does not mention '%s'", o->end.error, needle);
}

static void test_invalid_jobs(void **state) {
    (void)state;
    lq_scheduler *s = new_scheduler(small_config(512, 64, 4));
    enum { N = 7 };
    spec sp[N];
    outcome o[N];
    outcome_init(o, N);
    sp[0] = make_spec("", encode(TEXTS[0]), 60); /* 6 + 60 tokens: more than the 64-token pool */
    sp[1] = make_spec("", encode(TEXTS[0]), 9000); /* beyond the model's 8192 positions */
    sp[2] = make_spec("no-such-adapter", encode(TEXTS[0]), 4);
    sp[3] = make_spec("", encode(TEXTS[0]), 4);
    sp[3].p.ids[1] = 1 << 20;
    sp[4] = make_spec("", encode(TEXTS[0]), 4);
    sp[4].params.temperature = 0.0;
    sp[5] = make_spec("", encode(TEXTS[0]), 0);
    sp[6] = make_spec("", encode(TEXTS[0]), 4); /* a good one beside them */
    run_all(s, sp, o, N);
    char total[32];
    snprintf(total, sizeof total, "%d", sp[0].p.n + 60);
    expect_error(&o[0], "validation", total);
    expect_error(&o[0], "validation", "64 tokens");
    expect_error(&o[1], "validation", "8192");
    expect_error(&o[2], "adapter", "no-such-adapter");
    for (int i = 0; i < N_ADAPTERS; i++) expect_error(&o[2], "adapter", ADAPTERS[i]);
    expect_error(&o[3], "validation", "vocabulary");
    expect_error(&o[4], "validation", "temperature");
    expect_error(&o[5], "validation", "max_new_tokens");
    for (int i = 0; i < 6; i++) {
        assert_int_equal(o[i].n, 0);
        assert_int_equal(o[i].end_step, 0); /* at the first step */
    }
    assert_string_equal(o[6].end.finish_reason, "length");
    printf("  e.g. \"%s\"\n", o[0].end.error);
    lq_scheduler_free(s);
    outcome_free(o, N);
    free_prompts(sp, N);
}

static void write_file(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A declared adapter whose folder is bad: its job fails, the others finish. */
static void test_bad_adapter_folder(void **state) {
    (void)state;
    char dir[] = "/tmp/lorq-sched-XXXXXX";
    assert_non_null(mkdtemp(dir));
    write_file(dir, "adapter_config.json", "{\"r\": ");
    lq_scheduler *s = new_scheduler(small_config(512, 1024, 8));
    lq_error err;
    assert_int_equal(lq_scheduler_add_adapter(s, "broken", dir, 0, &err), 0); /* loaded on first use */
    assert_int_equal(lq_scheduler_add_adapter(s, "broken2", dir, 1, &err), -1); /* preload reports it now */
    assert_int_equal(lq_scheduler_add_adapter(s, "../bad id", dir, 0, &err), -1);
    spec sp[3] = {make_spec("r8-qv", encode(TEXTS[1]), 5), make_spec("broken", encode(TEXTS[2]), 5),
                  make_spec("", encode(TEXTS[3]), 5)};
    outcome o[3];
    outcome_init(o, 3);
    run_all(s, sp, o, 3);
    expect_error(&o[1], "adapter", "broken");
    assert_string_equal(o[0].end.finish_reason, "length");
    assert_string_equal(o[2].end.finish_reason, "length");
    assert_true(lq_scheduler_is_resident(s, "r8-qv"));
    assert_false(lq_scheduler_is_resident(s, "broken"));
    assert_string_equal(lq_scheduler_resident_list(s), "r8-qv");
    assert_true(lq_scheduler_has_adapter(s, "broken") && !lq_scheduler_has_adapter(s, "other"));
    lq_scheduler_free(s);
    outcome_free(o, 3);
    free_prompts(sp, 3);
    write_file(dir, "adapter_config.json", "");
    char p[300];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    unlink(p);
    rmdir(dir);
}

/* A deadline already past fails a waiting job at once; a near one stops a running job. */
static void test_deadline(void **state) {
    (void)state;
    lq_scheduler *s = new_scheduler(small_config(512, 1024, 8));
    spec sp[3] = {make_spec("", encode(TEXTS[0]), 4), make_spec("r8-qv", encode(TEXTS[1]), 60),
                  make_spec("", encode(TEXTS[2]), 4)};
    sp[0].deadline_ms = now_ms() - 1;
    sp[1].deadline_ms = now_ms() + 800;
    sp[1].params.ignore_eos = 1;
    outcome o[3];
    outcome_init(o, 3);
    run_all(s, sp, o, 3);
    expect_error(&o[0], "deadline", "deadline");
    assert_int_equal(o[0].end_step, 0);
    assert_int_equal(o[0].n, 0);
    expect_error(&o[1], "deadline", "deadline passed");
    assert_true(o[1].n > 0 && o[1].n < 60);
    assert_int_equal(o[1].end.generated_tokens, o[1].n);
    assert_string_equal(o[2].end.finish_reason, "length");
    printf("  \"%s\"\n", o[1].end.error);
    lq_scheduler_free(s);
    outcome_free(o, 3);
    free_prompts(sp, 3);
}

/* Dropping a running and a waiting job: no more events for them, their room comes back. */
static void test_drop(void **state) {
    (void)state;
    lq_scheduler *s = new_scheduler(small_config(512, 1024, 2));
    assert_int_equal(lq_scheduler_free_slots(s), 1); /* before any job: a "typical" job is 768 tokens, 1024 fit */
    spec sp[3] = {make_spec("r8-qv", encode(TEXTS[0]), 20), make_spec("", encode(TEXTS[1]), 6),
                  make_spec("r16-attn-rslora", encode(TEXTS[2]), 6)};
    outcome o[3];
    outcome_init(o, 3);
    for (int i = 0; i < 3; i++) submit(s, &sp[i], i, &o[i]);
    step_once(s, 0);
    step_once(s, 1);
    assert_int_equal(o[0].n, 2);
    assert_int_equal(o[2].n, 0); /* waiting: max_running is 2 */
    lq_scheduler_drop(s, &o[0]);
    lq_scheduler_drop(s, &o[2]);
    assert_int_equal(lq_scheduler_running(s), 1);
    for (int step = 2; lq_scheduler_running(s) > 0; step++) step_once(s, step);
    assert_int_equal(o[0].n, 2);
    assert_false(o[0].ended);
    assert_false(o[2].ended);
    assert_string_equal(o[1].end.finish_reason, "length");
    assert_int_equal(lq_scheduler_free_slots(s), 2); /* now jobs of ~2 blocks are typical */
    const lq_sched_event *ev;
    lq_error err;
    assert_int_equal(lq_scheduler_step(s, &ev, &err), 0); /* idle */
    lq_scheduler_free(s);
    outcome_free(o, 3);
    free_prompts(sp, 3);
}

/* ---------- resume ---------- */

/* Resuming after k delivered tokens gives the uninterrupted run's tokens from
 * index k on, no events for the first k, and the same end. All resume points
 * run together, so they also share steps. */
static void check_resume(lq_scheduler *s, spec base, const int *points, int n_points, const char *what,
                         const char *finish) {
    enum { MAX_POINTS = 8 };
    outcome full, o[MAX_POINTS];
    spec r[MAX_POINTS];
    outcome_init(&full, 1);
    run_all(s, &base, &full, 1);
    if (finish) assert_string_equal(full.end.finish_reason, finish);
    int k[MAX_POINTS];
    for (int p = 0; p < n_points; p++) {
        k[p] = points[p] < 0 || points[p] > full.n ? full.n : points[p]; /* -1: every token */
        r[p] = base;
        r[p].resume = full.tokens;
        r[p].n_resume = k[p];
        if (base.params.do_sample && p % 2 == 0) { /* the seed the first run drew and reported reproduces it */
            assert_true(full.end.has_seed);
            r[p].params.has_seed = 1;
            r[p].params.seed = full.end.seed;
        } else {
            r[p].id = "job-0"; /* the same job again: without a seed, the same one is drawn */
        }
    }
    outcome_init(o, n_points);
    run_all(s, r, o, n_points);
    for (int p = 0; p < n_points; p++) {
        assert_int_equal(o[p].n, full.n - k[p]);
        if (o[p].n > 0) assert_int_equal(o[p].index[0], k[p]);
        assert_memory_equal(o[p].tokens, full.tokens + k[p], (size_t)o[p].n * sizeof o[p].tokens[0]);
        assert_memory_equal(o[p].logprobs, full.logprobs + k[p], (size_t)o[p].n * sizeof o[p].logprobs[0]);
        assert_string_equal(o[p].end.text, full.end.text);
        assert_string_equal(o[p].end.finish_reason, full.end.finish_reason);
        assert_int_equal(o[p].end.generated_tokens, full.n);
        assert_int_equal(o[p].end.index, full.n);
        if (base.params.do_sample) assert_true(o[p].end.has_seed && o[p].end.seed == full.end.seed);
        if (k[p] == full.n) assert_int_equal(o[p].end_step, 0); /* the replay alone ends it */
    }
    printf("  %s: %d tokens (%s); resumed after", what, full.n, full.end.finish_reason);
    for (int p = 0; p < n_points; p++) printf(" %d", k[p]);
    printf(": identical\n");
    outcome_free(o, n_points);
    outcome_free(&full, 1);
}

static void test_resume(void **state) {
    (void)state;
    lq_scheduler *s = new_scheduler(small_config(512, 2048, 8));
    int points[] = {0, 1, 3, -1};
    spec greedy = make_spec("r8-all-pattern", encode(TEXTS[2]), 6);
    greedy.params.repetition_penalty = 1.3;
    check_resume(s, greedy, points, 4, "greedy", NULL);

    spec sampled = make_spec("", encode(TEXTS[7]), 6);
    sampled.params.do_sample = 1;
    sampled.params.temperature = 0.9;
    sampled.params.top_k = 40;
    sampled.params.frequency_penalty = 0.5;
    check_resume(s, sampled, points, 4, "seeded sampling", NULL);

    /* A stop sequence the replayed tokens already complete ends the job at once. */
    outcome full;
    outcome_init(&full, 1);
    spec plain = make_spec("", encode(TEXTS[0]), 8);
    run_all(s, &plain, &full, 1);
    spec stop = plain;
    char *third = tok_decode(F.tok, &full.tokens[2], 1, 1, NULL, NULL);
    assert_true(third && third[0]);
    stop.params.stop[0] = third;
    stop.params.n_stop = 1;
    int at_stop[] = {-1, 1};
    check_resume(s, stop, at_stop, 2, "stop sequence", "stop_sequence");
    free(third);
    outcome_free(&full, 1);
    free(plain.p.ids);
    free(greedy.p.ids);
    free(sampled.p.ids);
    lq_scheduler_free(s);
}

/* ---------- details ---------- */

static float log_softmax_at(const float *row, int vocab, int id) {
    double mx = -INFINITY, sum = 0.0;
    for (int i = 0; i < vocab; i++) mx = row[i] > mx ? row[i] : mx;
    for (int i = 0; i < vocab; i++) sum += exp(row[i] - mx);
    return (float)(row[id] - mx - log(sum));
}

/* decoder_input_details over chunks of 16: each prompt token's logprob is the
 * log-softmax of the previous position's logits in a one-step reference run. */
static void test_prompt_logprobs_and_top_n(void **state) {
    (void)state;
    lq_model *m = F.model;
    int vocab = m->cfg.vocab_size;
    spec sp[2] = {make_spec("r16-attn-rslora", long_prompt(41), 3), make_spec("", encode(TEXTS[1]), 4)};
    sp[0].params.decoder_input_details = 1;
    sp[1].params.top_n_tokens = 5;
    sp[1].submit_step = 1;
    outcome o[2];
    outcome_init(o, 2);
    lq_scheduler *s = new_scheduler(small_config(16, 1024, 4));
    run_all(s, sp, o, 2);
    lq_scheduler_free(s);

    /* the reference: the whole prompt in one step, logits for every position */
    lq_error err;
    lq_lora *lora = lq_lora_load(ADAPTER_DIR "r16-attn-rslora", "r16", m, &err);
    assert_non_null(lora);
    int n = sp[0].p.n;
    lq_kvcache *kv = lq_kvcache_new(m->backend, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, 8, 16, &err);
    lq_run_state *rs = lq_run_state_new(m, n, 1, &err);
    lq_kv_seq seq = {0};
    assert_int_equal(lq_kv_reserve(kv, &seq, n), 0);
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    lq_step_seq q = {sp[0].p.ids, n, 0, seq.table, 1, lora};
    assert_int_equal(lq_model_step(m, rs, &kv->pool, &q, 1, logits, &err), n);
    const lq_event *end = &o[0].end;
    assert_int_equal(end->n_prefill, n);
    assert_false(end->prefill[0].has_logprob);
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(end->prefill[i].id, sp[0].p.ids[i]);
        assert_non_null(end->prefill[i].text);
        if (i == 0) continue;
        assert_true(end->prefill[i].has_logprob);
        double d = fabs(end->prefill[i].logprob - log_softmax_at(logits + (size_t)(i - 1) * vocab, vocab, sp[0].p.ids[i]));
        worst = d > worst ? d : worst;
    }
    assert_true(worst < 1e-5);
    /* The first generated token's logprob comes from the last prompt position too. */
    assert_true(fabsf(o[0].logprobs[0] - log_softmax_at(logits + (size_t)(n - 1) * vocab, vocab, o[0].tokens[0])) < 1e-5);
    printf("  %d prompt logprobs over chunks of 16: max |diff| %.1e against one-step logits\n", n, worst);
    free(logits);
    lq_kv_release(kv, &seq);
    lq_run_state_free(m, rs);
    lq_kvcache_free(kv);
    lq_lora_free(lora);

    /* top_n_tokens: five alternatives, best first, the greedy choice among them with its logprob */
    const lq_event *t = &o[1].first;
    assert_int_equal(t->n_top, 5);
    assert_int_equal(t->top[0].id, t->token);
    assert_true(t->top[0].logprob == t->logprob);
    for (int i = 1; i < 5; i++) {
        assert_true(t->top[i].logprob <= t->top[i - 1].logprob);
        assert_non_null(t->top[i].text);
    }
    assert_int_equal(o[1].end.n_prefill, 0);
    outcome_free(o, 2);
    free_prompts(sp, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_equals_solo_default),
        cmocka_unit_test(test_mixed_equals_solo_chunked),
        cmocka_unit_test(test_mixed_equals_solo_small_budget),
        cmocka_unit_test(test_fair_across_adapters),
        cmocka_unit_test(test_kv_exhaustion_waits),
        cmocka_unit_test(test_adapter_budget_waits),
        cmocka_unit_test(test_invalid_jobs),
        cmocka_unit_test(test_bad_adapter_folder),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_prompt_logprobs_and_top_n),
    };
    return cmocka_run_group_tests_name("scheduler", tests, setup, teardown);
}
