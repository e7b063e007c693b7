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

#include "engine_driver.h"

#define GOLDEN "tests/reference/golden/base_smollm2.json"

static int setup(void **state) { return fixture_open(state, GOLDEN); }

static void test_matches_transformers(void **state) {
    fixture *f = *state;
    json_t *cases = json_object_get(f->golden, "cases");
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *gc = json_array_get(cases, c);
        double worst = check_golden_case(f, gc, NULL, 1, "transformers", c);
        printf("  case %zu (%zu prompt tokens): top-100 logits max |diff| %.2e\n", c,
               json_array_size(json_object_get(gc, "ids")), worst);
        if (worst > 2e-3) fail_msg("case %zu: top-100 logits differ by %g (> 2e-3)", c, worst);
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
    lq_step_seq s = {ids, n, 0, seq.table, 1, NULL};
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
    return cmocka_run_group_tests_name("model parity", tests, setup, fixture_close);
}
