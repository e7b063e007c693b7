/* test_kvcache_sampler.c — KV block accounting (all-or-nothing growth, "full"
 * signal, reuse after release) and the sampler's processors and warpers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kvcache.h"
#include "sampler.h"

static void test_kv_blocks(void **state) {
    (void)state;
    lq_error err;
    lq_backend *b = lq_backend_cpu_new(1, &err);
    lq_kvcache *c = lq_kvcache_new(b, 2, 1, 4, 5, 4, &err); /* 5 blocks of 4 tokens */
    assert_non_null(c);
    lq_kv_seq a = {0}, s2 = {0};
    assert_int_equal(lq_kv_reserve(c, &a, 1), 0);
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(lq_kv_reserve(c, &a, 4), 0); /* still one block */
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(lq_kv_reserve(c, &a, 9), 0); /* three blocks */
    assert_int_equal(a.n_blocks, 3);
    assert_int_equal(c->n_free, 2);
    assert_int_equal(lq_kv_blocks_needed(c, &s2, 12), 3);
    assert_int_equal(lq_kv_reserve(c, &s2, 12), LQ_KV_FULL); /* needs 3, 2 free: nothing taken */
    assert_int_equal(s2.n_blocks, 0);
    assert_int_equal(c->n_free, 2);
    assert_int_equal(lq_kv_reserve(c, &s2, 8), 0);
    assert_int_equal(c->n_free, 0);
    /* No two sequences share a block. */
    for (int i = 0; i < a.n_blocks; i++)
        for (int j = 0; j < s2.n_blocks; j++) assert_int_not_equal(a.table[i], s2.table[j]);
    lq_kv_release(c, &a);
    assert_int_equal(c->n_free, 3);
    assert_int_equal(lq_kv_reserve(c, &s2, 20), 0);
    assert_int_equal(s2.n_blocks, 5);
    lq_kv_release(c, &s2);
    assert_int_equal(c->n_free, 5);
    assert_null(lq_kvcache_new(b, 2, 1, 4, 0, 4, &err));
    lq_kvcache_free(c);
    b->destroy(b);
}

static lq_token_choice pick(lq_sampling p, const float *logits, int n, const int32_t *prompt, int n_prompt) {
    lq_sampler *s = lq_sampler_new(&p, n, prompt, n_prompt);
    float *l = malloc((size_t)n * sizeof *l);
    memcpy(l, logits, (size_t)n * sizeof *l);
    lq_token_choice c;
    lq_sampler_next(s, l, &c);
    free(l);
    lq_sampler_free(s);
    return c;
}

static void test_greedy_and_logprobs(void **state) {
    (void)state;
    float logits[5] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f};
    lq_sampling p = lq_sampling_default();
    p.top_n_tokens = 3;
    lq_token_choice c = pick(p, logits, 5, NULL, 0);
    assert_int_equal(c.id, 1); /* first of the tied maxima */
    double lse = log(exp(1.0) + 2 * exp(3.0) + exp(-2.0) + exp(0.5));
    assert_true(fabs(c.logprob - (3.0 - lse)) < 1e-5);
    assert_int_equal(c.n_top, 3);
    assert_int_equal(c.top_ids[0], 1);
    assert_int_equal(c.top_ids[1], 2);
    assert_int_equal(c.top_ids[2], 0);
    assert_true(fabs(c.top_logprobs[2] - (1.0 - lse)) < 1e-5);
}

static void test_penalties(void **state) {
    (void)state;
    float logits[4] = {2.0f, -1.0f, 1.9f, 0.0f};
    lq_sampling p = lq_sampling_default();
    int32_t prompt[2] = {0, 1};
    p.repetition_penalty = 2.0f; /* token 0: 2 -> 1; token 1: -1 -> -2 */
    assert_int_equal(pick(p, logits, 4, prompt, 2).id, 2);
    p = lq_sampling_default();
    /* Frequency/presence look at generated tokens only: a prompt token is not penalized. */
    p.presence_penalty = 1.0f;
    assert_int_equal(pick(p, logits, 4, prompt, 2).id, 0);
    lq_sampler *s = lq_sampler_new(&p, 4, NULL, 0);
    float l[4];
    lq_token_choice c;
    memcpy(l, logits, sizeof l);
    lq_sampler_next(s, l, &c);
    assert_int_equal(c.id, 0);
    memcpy(l, logits, sizeof l);
    lq_sampler_next(s, l, &c); /* 0 now pays the presence penalty: 2 - 1 < 1.9 */
    assert_int_equal(c.id, 2);
    lq_sampler_free(s);
    p = lq_sampling_default();
    p.frequency_penalty = 0.06f;
    s = lq_sampler_new(&p, 4, NULL, 0);
    int ids[4];
    for (int i = 0; i < 4; i++) {
        memcpy(l, logits, sizeof l);
        lq_sampler_next(s, l, &c);
        ids[i] = c.id;
    }
    /* 2.0 - 0.06k vs 1.9 - 0.06j: counts decide. */
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 0);
    assert_int_equal(ids[2], 2);
    assert_int_equal(ids[3], 0);
    lq_sampler_free(s);
}

static void test_warpers_restrict(void **state) {
    (void)state;
    float logits[6] = {0.1f, 2.0f, 1.0f, 1.5f, -3.0f, 0.0f};
    lq_sampling p = lq_sampling_default();
    p.do_sample = 1;
    for (uint64_t seed = 0; seed < 50; seed++) {
        p.seed = seed;
        p.top_k = 1;
        assert_int_equal(pick(p, logits, 6, NULL, 0).id, 1);
        p.top_k = 2;
        int id = pick(p, logits, 6, NULL, 0).id;
        assert_true(id == 1 || id == 3);
        p.top_k = 0;
        p.top_p = 0.05f; /* smallest set with mass > 0.05: the top token */
        assert_int_equal(pick(p, logits, 6, NULL, 0).id, 1);
        p.top_p = 1.0f;
        p.typical_p = 0.01f;
        int t = pick(p, logits, 6, NULL, 0).id;
        /* The single most "typical" token: surprisal closest to the entropy. */
        assert_int_equal(t, 3);
        p.typical_p = 1.0f;
    }
}

static void test_seed_and_distribution(void **state) {
    (void)state;
    enum { V = 4, N = 20000 };
    float logits[V] = {0.0f, (float)log(2.0), (float)log(3.0), (float)log(4.0)}; /* probs 0.1 .. 0.4 */
    lq_sampling p = lq_sampling_default();
    p.do_sample = 1;
    p.seed = 1234;
    lq_sampler *a = lq_sampler_new(&p, V, NULL, 0), *b = lq_sampler_new(&p, V, NULL, 0);
    int counts[V] = {0}, same = 1;
    for (int i = 0; i < N; i++) {
        float la[V], lb[V];
        memcpy(la, logits, sizeof la);
        memcpy(lb, logits, sizeof lb);
        lq_token_choice ca, cb;
        lq_sampler_next(a, la, &ca);
        lq_sampler_next(b, lb, &cb);
        same &= ca.id == cb.id;
        counts[ca.id]++;
    }
    assert_true(same);
    for (int v = 0; v < V; v++) {
        double want = (v + 1) / 10.0 * N, sd = sqrt(N * (v + 1) / 10.0 * (1 - (v + 1) / 10.0));
        if (fabs(counts[v] - want) > 5 * sd) fail_msg("token %d drawn %d times, expected about %.0f", v, counts[v], want);
    }
    lq_sampler_free(a);
    lq_sampler_free(b);
    /* Temperature: a low temperature makes the top token near-certain. */
    p.temperature = 0.05f;
    int top = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        p.seed = seed;
        top += pick(p, logits, V, NULL, 0).id == 3;
    }
    assert_true(top >= 198);
}

static void test_parameter_checks(void **state) {
    (void)state;
    lq_sampling p = lq_sampling_default();
    assert_null(lq_sampling_check(&p));
    p.temperature = 0.0f;
    assert_non_null(strstr(lq_sampling_check(&p), "temperature"));
    p = lq_sampling_default();
    p.top_p = 1.5f;
    assert_non_null(strstr(lq_sampling_check(&p), "top_p"));
    p = lq_sampling_default();
    p.repetition_penalty = -1.0f;
    assert_non_null(strstr(lq_sampling_check(&p), "repetition_penalty"));
    p = lq_sampling_default();
    p.top_n_tokens = 99;
    assert_non_null(strstr(lq_sampling_check(&p), "top_n_tokens"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_blocks),
        cmocka_unit_test(test_greedy_and_logprobs),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_warpers_restrict),
        cmocka_unit_test(test_seed_and_distribution),
        cmocka_unit_test(test_parameter_checks),
    };
    return cmocka_run_group_tests_name("kvcache and sampler", tests, NULL, NULL);
}
