/* test_model_parity.c — the CPU engine against Hugging Face transformers, and
 * batched steps against solo runs, on the bundled model.
 *
 * Golden numbers come from tests/reference/base_golden.py (transformers
 * loading the original GGUF itself). Checks: top-100 logits at the last
 * prompt position within 2e-3, 32-token greedy continuations identical,
 * perplexity of a paragraph within 0.5%; and the same prompts run together in
 * mixed steps (some sequences prefilling in chunks while others decode) give
 * the same tokens and logits within 1e-4 as when each runs alone.
 *
 * LORQ_MODEL_DIR overrides the model folder (default models/SmolLM2-135M-Instruct). */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvcache.h"
#include "model.h"

#define GOLDEN "tests/reference/golden/base_smollm2.json"
#define N_NEW 32
#define BLOCK 16

typedef struct fixture {
    lq_backend *backend;
    lq_model *model;
    json_t *golden;
} fixture;

static int setup(void **state) {
    static fixture f;
    const char *dir = getenv("LORQ_MODEL_DIR");
    if (!dir) dir = "models/SmolLM2-135M-Instruct";
    lq_error err;
    f.backend = lq_backend_cpu_new(0, &err);
    if (!f.backend) return -1;
    f.model = lq_model_load(dir, f.backend, &err);
    if (!f.model) {
        fprintf(stderr, "cannot load the bundled model (run make setup): %s\n", err.msg);
        return -1;
    }
    json_error_t jerr;
    f.golden = json_load_file(GOLDEN, 0, &jerr);
    if (!f.golden) {
        fprintf(stderr, "%s: %s\n", GOLDEN, jerr.text);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state) {
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
} run_seq;

static void run_seq_init(run_seq *r, const int32_t *prompt, int n_prompt, int vocab) {
    memset(r, 0, sizeof *r);
    r->tokens = malloc((size_t)(n_prompt + N_NEW) * sizeof *r->tokens);
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    r->n_prompt = r->n_tokens = n_prompt;
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
            step[k] = (lq_step_seq){r->tokens + r->n_in_cache, todo, r->n_in_cache, r->kv.table, 0};
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
            if (r->n_tokens - r->n_prompt == N_NEW) {
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

static void test_matches_transformers(void **state) {
    fixture *f = *state;
    json_t *cases = json_object_get(f->golden, "cases");
    int vocab = f->model->cfg.vocab_size;
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *gc = json_array_get(cases, c);
        int n_prompt, n_top, n_greedy;
        int32_t *prompt = ids_of(json_object_get(gc, "ids"), &n_prompt);
        int32_t *top_ids = ids_of(json_object_get(gc, "top_ids"), &n_top);
        int32_t *greedy = ids_of(json_object_get(gc, "greedy"), &n_greedy);
        run_seq r;
        run_seq_init(&r, prompt, n_prompt, vocab);
        drive(f, &r, 1, 512, NULL);
        json_t *tl = json_object_get(gc, "top_logits");
        double worst = 0.0;
        for (int i = 0; i < n_top; i++) {
            double d = fabs(r.first_logits[top_ids[i]] - json_number_value(json_array_get(tl, (size_t)i)));
            if (d > worst) worst = d;
        }
        printf("  case %zu (%d prompt tokens): top-100 logits max |diff| %.2e\n", c, n_prompt, worst);
        if (worst > 2e-3) fail_msg("case %zu: top-100 logits differ by %g (> 2e-3)", c, worst);
        for (int i = 0; i < n_greedy; i++)
            if (r.tokens[n_prompt + i] != greedy[i])
                fail_msg("case %zu: greedy token %d is %d, transformers gives %d", c, i, r.tokens[n_prompt + i],
                         greedy[i]);
        run_seq_free(&r);
        free(prompt);
        free(top_ids);
        free(greedy);
    }
}

static void test_perplexity(void **state) {
    fixture *f = *state;
    lq_model *m = f->model;
    json_t *pp = json_object_get(f->golden, "perplexity");
    int n;
    int32_t *ids = ids_of(json_object_get(pp, "ids"), &n);
    lq_error err;
    lq_kvcache *kv = lq_kvcache_new(f->backend, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, 64, BLOCK, &err);
    lq_run_state *rs = lq_run_state_new(m, n, 1, &err);
    lq_kv_seq seq = {0};
    assert_int_equal(lq_kv_reserve(kv, &seq, n), 0);
    int vocab = m->cfg.vocab_size;
    float *logits = malloc((size_t)n * (size_t)vocab * sizeof(float));
    lq_step_seq s = {ids, n, 0, seq.table, 1};
    assert_int_equal(lq_model_step(m, rs, &kv->pool, &s, 1, logits, &err), n);
    double nll = 0.0;
    for (int i = 0; i + 1 < n; i++) {
        const float *lg = logits + (size_t)i * vocab;
        float mx = lg[argmax(lg, vocab)];
        double sum = 0.0;
        for (int v = 0; v < vocab; v++) sum += exp((double)(lg[v] - mx));
        nll += mx + log(sum) - lg[ids[i + 1]];
    }
    double ppl = exp(nll / (n - 1)), want = json_number_value(json_object_get(pp, "ppl"));
    printf("  perplexity %.5f, transformers %.5f (%.4f%%)\n", ppl, want, 100.0 * fabs(ppl - want) / want);
    assert_true(fabs(ppl - want) / want < 0.005);
    lq_kv_release(kv, &seq);
    free(logits);
    free(ids);
    lq_run_state_free(m, rs);
    lq_kvcache_free(kv);
}

static void test_mixed_batch_equals_solo(void **state) {
    fixture *f = *state;
    json_t *cases = json_object_get(f->golden, "cases");
    int vocab = f->model->cfg.vocab_size;
    enum { N = 8 };
    run_seq solo[N], mixed[N];
    /* Staggered starts and a small prefill chunk: long prompts prefill over several steps
     * while earlier sequences are already decoding. */
    int start[N] = {0, 0, 1, 3, 2, 5, 8, 4};
    for (int i = 0; i < N; i++) {
        int n;
        int32_t *prompt = ids_of(json_object_get(json_array_get(cases, (size_t)i), "ids"), &n);
        run_seq_init(&solo[i], prompt, n, vocab);
        run_seq_init(&mixed[i], prompt, n, vocab);
        free(prompt);
        drive(f, &solo[i], 1, 512, NULL);
    }
    drive(f, mixed, N, 7, start);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        assert_memory_equal(solo[i].tokens, mixed[i].tokens, (size_t)solo[i].n_tokens * sizeof(int32_t));
        for (int v = 0; v < vocab; v++) {
            double d = fabs(solo[i].first_logits[v] - mixed[i].first_logits[v]);
            if (d > worst) worst = d;
        }
    }
    printf("  mixed batch of %d vs solo: tokens identical, logits max |diff| %.2e\n", N, worst);
    for (int i = 0; i < N; i++) {
        run_seq_free(&solo[i]);
        run_seq_free(&mixed[i]);
    }
    assert_true(worst <= 1e-4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_transformers),
        cmocka_unit_test(test_perplexity),
        cmocka_unit_test(test_mixed_batch_equals_solo),
    };
    return cmocka_run_group_tests_name("model parity", tests, setup, teardown);
}
