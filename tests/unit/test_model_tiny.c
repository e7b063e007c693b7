/* test_model_tiny.c — tiny random Llama (llama3 rope scaling, bf16 weights),
 * Mistral (linear rope scaling, f32; and a sliding window of 8 over a
 * 40-token prompt) and Qwen2 (q/k/v biases, tied embeddings, f16) models
 * against transformers: logits at every position
 * within 1e-4 and 8-token greedy continuations identical. The models and
 * their golden outputs come from tests/reference/tiny_golden.py. */
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

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void check_model(const char *name) {
    char dir[256], golden[300];
    snprintf(dir, sizeof dir, "tests/reference/tiny/%s", name);
    snprintf(golden, sizeof golden, "%s/golden.json", dir);
    lq_error err;
    lq_backend *b = lq_backend_cpu_new(2, &err);
    lq_model *m = lq_model_load(dir, b, &err);
    if (!m) fail_msg("%s", err.msg);
    json_error_t jerr;
    json_t *g = json_load_file(golden, 0, &jerr);
    assert_non_null(g);
    int vocab = m->cfg.vocab_size;
    lq_kvcache *kv = lq_kvcache_new(b, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, 32, 4, &err);
    lq_run_state *rs = lq_run_state_new(m, 64, 1, &err);
    float *logits = malloc((size_t)64 * vocab * sizeof *logits);
    json_t *cases = json_object_get(g, "cases");
    double worst = 0.0;
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *gc = json_array_get(cases, c), *ids = json_object_get(gc, "ids"), *gl = json_object_get(gc, "logits");
        int n = (int)json_array_size(ids);
        int32_t seq[64];
        for (int i = 0; i < n; i++) seq[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
        lq_kv_seq ks = {0};
        assert_int_equal(lq_kv_reserve(kv, &ks, n + 8), 0);
        lq_step_seq s = {seq, n, 0, ks.table, 1, NULL};
        assert_int_equal(lq_model_step(m, rs, &kv->pool, &s, 1, logits, &err), n);
        for (int i = 0; i < n; i++)
            for (int v = 0; v < vocab; v++) {
                double want = json_number_value(json_array_get(json_array_get(gl, (size_t)i), (size_t)v));
                double d = fabs(logits[(size_t)i * vocab + v] - want);
                if (d > worst) worst = d;
            }
        /* Greedy continuation, one decode step at a time. */
        json_t *greedy = json_object_get(gc, "greedy");
        int next = argmax(logits + (size_t)(n - 1) * vocab, vocab);
        for (int t = 0; t < 8; t++) {
            assert_int_equal(next, (int)json_integer_value(json_array_get(greedy, (size_t)t)));
            seq[n + t] = next;
            lq_step_seq d = {&seq[n + t], 1, n + t, ks.table, 0, NULL};
            assert_int_equal(lq_model_step(m, rs, &kv->pool, &d, 1, logits, &err), 1);
            next = argmax(logits, vocab);
        }
        lq_kv_release(kv, &ks);
    }
    printf("  %s: logits max |diff| %.2e, greedy identical\n", name, worst);
    assert_true(worst < 1e-4);
    free(logits);
    lq_run_state_free(m, rs);
    lq_kvcache_free(kv);
    json_decref(g);
    lq_model_free(m);
    b->destroy(b);
}

static void test_llama3_bf16(void **state) {
    (void)state;
    check_model("llama3-bf16");
}

static void test_mistral_linear_f32(void **state) {
    (void)state;
    check_model("mistral-linear-f32");
}

/* A window of 8 positions, served as a window (not by capping the context). */
static void test_mistral_window_f32(void **state) {
    (void)state;
    lq_error err;
    lq_backend *b = lq_backend_cpu_new(1, &err);
    lq_model *m = lq_model_load("tests/reference/tiny/mistral-window-f32", b, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_int_equal(m->cfg.sliding_window, 8);
    assert_int_equal(m->cfg.max_position, 256);
    lq_model_free(m);
    b->destroy(b);
    check_model("mistral-window-f32");
}

static void test_qwen2_f16(void **state) {
    (void)state;
    check_model("qwen2-f16");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama3_bf16),
        cmocka_unit_test(test_mistral_linear_f32),
        cmocka_unit_test(test_mistral_window_f32),
        cmocka_unit_test(test_qwen2_f16),
    };
    return cmocka_run_group_tests_name("tiny models", tests, NULL, NULL);
}
