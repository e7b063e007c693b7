/* engine_driver.h — drives sequences through lq_model_step for the engine tests:
 * staggered starts, chunked prefill, greedy decoding, optional adapters.
 * Included by test files after <cmocka.h> (static functions, one copy per test binary). */
#ifndef LORQ_TEST_ENGINE_DRIVER_H
#define LORQ_TEST_ENGINE_DRIVER_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "lora.h"
#include "model.h"

#ifndef N_NEW
#define N_NEW 32
#endif
#define BLOCK 16

typedef struct fixture {
    lq_backend *backend;
    lq_model *model;
    json_t *golden;
} fixture;

/* Loads the bundled model (LORQ_MODEL_DIR overrides its folder) and a golden file
 * into *state for a cmocka group. */
static int fixture_open(void **state, const char *golden) {
    static fixture f;
    const char *dir = getenv("LORQ_MODEL_DIR");
    if (!dir) dir = "models/SmolLM2-135M-Instruct";
    lq_error err;
    f.backend = lq_backend_cpu_new(0, &err);
    f.model = f.backend ? lq_model_load(dir, f.backend, &err) : NULL;
    if (!f.model) {
        fprintf(stderr, "cannot load the bundled model (run make setup): %s\n", err.msg);
        return -1;
    }
    json_error_t jerr;
    f.golden = json_load_file(golden, 0, &jerr);
    if (!f.golden) {
        fprintf(stderr, "%s: %s\n", golden, jerr.text);
        return -1;
    }
    *state = &f;
    return 0;
}

static int fixture_close(void **state) {
    fixture *f = *state;
    json_decref(f->golden);
    lq_model_free(f->model);
    f->backend->destroy(f->backend);
    return 0;
}

static int32_t *ids_of(json_t *arr, int *n) {
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* One sequence being driven through steps: its tokens so far and its blocks. */
typedef struct run_seq {
    int32_t *tokens;
    int n_prompt, n_tokens, n_in_cache;
    lq_kv_seq kv;
    float *first_logits; /* logits at the last prompt position */
    int done;
    int n_new; /* tokens to generate (N_NEW unless a test only wants the prompt's logits) */
    const lq_lora *adapter;
} run_seq;

static void run_seq_init(run_seq *r, const int32_t *prompt, int n_prompt, int vocab) {
    memset(r, 0, sizeof *r);
    r->tokens = malloc((size_t)(n_prompt + N_NEW) * sizeof *r->tokens);
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    r->n_prompt = r->n_tokens = n_prompt;
    r->n_new = N_NEW;
    r->first_logits = malloc((size_t)vocab * sizeof(float));
}

static void run_seq_free(run_seq *r) {
    free(r->tokens);
    free(r->first_logits);
}

/* Drives sequences to N_NEW greedy tokens each. Every step gives each unfinished
 * sequence either its next prefill chunk (at most `chunk` tokens) or one decode
 * token, so sequences at different stages share steps. `start` delays sequence i
 * until step start[i] (NULL: all start at once). */
static void drive(fixture *f, run_seq *seqs, int n, int chunk, const int *start) {
    lq_model *m = f->model;
    int vocab = m->cfg.vocab_size;
    lq_error err;
    lq_kvcache *kv = lq_kvcache_new(f->backend, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, 512, BLOCK, &err);
    assert_non_null(kv);
    lq_run_state *rs = lq_run_state_new(m, 1024, n, &err);
    assert_non_null(rs);
    float *logits = malloc((size_t)n * (size_t)vocab * sizeof(float));
    lq_step_seq *step = malloc((size_t)n * sizeof *step);
    int *which = malloc((size_t)n * sizeof *which);
    for (int t = 0;; t++) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            run_seq *r = &seqs[i];
            if (r->done || (start && start[i] > t)) continue;
            int todo = r->n_tokens - r->n_in_cache;
            if (todo > chunk) todo = chunk;
            assert_int_equal(lq_kv_reserve(kv, &r->kv, r->n_in_cache + todo), 0);
            step[k] = (lq_step_seq){r->tokens + r->n_in_cache, todo, r->n_in_cache, r->kv.table, 0, r->adapter};
            which[k++] = i;
        }
        if (k == 0) break;
        int rows = lq_model_step(m, rs, &kv->pool, step, k, logits, &err);
        if (rows < 0) fail_msg("step failed: %s", err.msg);
        assert_int_equal(rows, k);
        for (int j = 0; j < k; j++) {
            run_seq *r = &seqs[which[j]];
            r->n_in_cache += step[j].n_tokens;
            if (r->n_in_cache < r->n_tokens) continue; /* mid-prefill: logits of a chunk end are not used */
            const float *lg = logits + (size_t)j * vocab;
            if (r->n_tokens == r->n_prompt) memcpy(r->first_logits, lg, (size_t)vocab * sizeof(float));
            if (r->n_tokens - r->n_prompt == r->n_new) {
                r->done = 1;
                continue;
            }
            r->tokens[r->n_tokens++] = argmax(lg, vocab);
        }
    }
    free(which);
    free(step);
    free(logits);
    for (int i = 0; i < n; i++) lq_kv_release(kv, &seqs[i].kv);
    lq_run_state_free(m, rs);
    lq_kvcache_free(kv);
}

/* Runs a golden case ({ids, top_ids, top_logits, greedy}) alone, with `adapter` or the
 * base model, and returns the largest |difference| at the golden's top logits; fails the
 * test when a greedy token differs (checked only when check_greedy). `who` names the
 * reference in messages. */
static double check_golden_case(fixture *f, json_t *gc, const lq_lora *adapter, int check_greedy, const char *who,
                                size_t index) {
    int n_prompt, n_top, n_greedy;
    int32_t *prompt = ids_of(json_object_get(gc, "ids"), &n_prompt);
    int32_t *top_ids = ids_of(json_object_get(gc, "top_ids"), &n_top);
    int32_t *greedy = ids_of(json_object_get(gc, "greedy"), &n_greedy);
    run_seq r;
    run_seq_init(&r, prompt, n_prompt, f->model->cfg.vocab_size);
    r.adapter = adapter;
    if (!check_greedy) r.n_new = n_greedy = 0;
    drive(f, &r, 1, 512, NULL);
    json_t *tl = json_object_get(gc, "top_logits");
    double worst = 0.0;
    for (int i = 0; i < n_top; i++) {
        double d = fabs(r.first_logits[top_ids[i]] - json_number_value(json_array_get(tl, (size_t)i)));
        if (d > worst) worst = d;
    }
    for (int i = 0; i < n_greedy; i++)
        if (r.tokens[n_prompt + i] != greedy[i])
            fail_msg("case %zu: greedy token %d is %d, %s gives %d", index, i, r.tokens[n_prompt + i], who, greedy[i]);
    run_seq_free(&r);
    free(prompt), free(top_ids), free(greedy);
    return worst;
}

#endif
