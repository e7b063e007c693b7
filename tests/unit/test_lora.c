/* test_lora.c — LoRA adapters in the engine against PEFT, on the bundled model.
 *
 * Goldens from tests/reference/lora_golden.py (PEFT on transformers loading the
 * original GGUF): each adapter alone matches PEFT's top-100 logits within 2e-3
 * and its 32-token greedy continuation; all adapters' sequences plus base-only
 * sequences in one run of mixed steps give each sequence its solo tokens and
 * logits within 1e-4; an adapter whose B is zero gives exactly the base output;
 * bad adapter folders are clear errors that leave everything else serving. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine_driver.h"
#include "registry.h"

#define GOLDEN "tests/reference/golden/lora_smollm2.json"
#define GREEDY_CASES 3

static int setup(void **state) {
    return fixture_open(state, getenv("LORQ_LORA_GOLDEN") ? getenv("LORQ_LORA_GOLDEN") : GOLDEN);
}

static lq_lora *load(fixture *f, const char *name) {
    json_t *a = json_object_get(json_object_get(f->golden, "adapters"), name);
    lq_error err;
    lq_lora *l = lq_lora_load(json_string_value(json_object_get(a, "path")), name, f->model, &err);
    if (!l) fail_msg("%s", err.msg);
    return l;
}

static void test_each_adapter_matches_peft(void **state) {
    fixture *f = *state;
    const char *name;
    json_t *a;
    json_object_foreach(json_object_get(f->golden, "adapters"), name, a) {
        lq_lora *l = load(f, name);
        double worst = 0.0;
        json_t *cases = json_object_get(a, "cases");
        /* Greedy continuations on the first prompts (the decode path); the prompt-end
         * logits on all of them. */
        for (size_t c = 0; c < json_array_size(cases); c++) {
            double d = check_golden_case(f, json_array_get(cases, c), l, c < GREEDY_CASES, name, c);
            if (d > worst) worst = d;
        }
        printf("  %s: max rank %d, %.1f MB (%.2f%% of the base), top-100 logits max |diff| %.2e, greedy identical\n",
               name, l->max_rank, l->bytes / 1e6, 100.0 * (double)l->bytes / (double)lq_model_weight_bytes(f->model),
               worst);
        if (worst > 2e-3) fail_msg("%s: logits differ from PEFT by %g", name, worst);
        lq_lora_free(l);
    }
}

static void test_mixed_adapters_equal_solo(void **state) {
    fixture *f = *state;
    int vocab = f->model->cfg.vocab_size;
    enum { MAX = 32 };
    run_seq solo[MAX], mixed[MAX];
    lq_lora *loras[16];
    int n = 0, n_loras = 0;
    const char *name;
    json_t *a;
    json_object_foreach(json_object_get(f->golden, "adapters"), name, a) {
        loras[n_loras] = load(f, name);
        json_t *cases = json_object_get(a, "cases");
        /* Two prompts per adapter, and the same prompt on the base model beside it. */
        for (size_t c = 1; c < 3 && c < json_array_size(cases) && n + 2 <= MAX; c++) {
            int np;
            int32_t *prompt = ids_of(json_object_get(json_array_get(cases, c), "ids"), &np);
            for (int base = 0; base < 2; base++) {
                run_seq_init(&solo[n], prompt, np, vocab);
                run_seq_init(&mixed[n], prompt, np, vocab);
                solo[n].adapter = mixed[n].adapter = base ? NULL : loras[n_loras];
                drive(f, &solo[n], 1, 512, NULL);
                n++;
            }
            free(prompt);
        }
        n_loras++;
    }
    int start[MAX];
    for (int i = 0; i < n; i++) start[i] = (i * 7) % 5;
    drive(f, mixed, n, 7, start);
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        assert_memory_equal(solo[i].tokens, mixed[i].tokens, (size_t)solo[i].n_tokens * sizeof(int32_t));
        for (int v = 0; v < vocab; v++) {
            double d = fabs(solo[i].first_logits[v] - mixed[i].first_logits[v]);
            if (d > worst) worst = d;
        }
    }
    printf("  %d sequences over %d adapters and the base in mixed steps: tokens identical, logits max |diff| %.2e\n",
           n, n_loras, worst);
    for (int i = 0; i < n; i++) run_seq_free(&solo[i]), run_seq_free(&mixed[i]);
    for (int i = 0; i < n_loras; i++) lq_lora_free(loras[i]);
    assert_true(worst <= 1e-4);
}

static void test_zero_b_is_exactly_base(void **state) {
    fixture *f = *state;
    int vocab = f->model->cfg.vocab_size;
    const char *name;
    json_t *a;
    int done = 0;
    json_object_foreach(json_object_get(f->golden, "adapters"), name, a) {
        if (done++ == 2) break; /* two adapters are enough: the arithmetic is the same for all */
        lq_lora *l = load(f, name);
        for (int i = 0; i < l->n_layers * LQ_PROJ_COUNT; i++)
            if (l->mods[i].rank) {
                int in, out;
                lq_proj_dims(&f->model->cfg, (lq_proj)(i % LQ_PROJ_COUNT), &in, &out);
                memset(l->mods[i].B, 0, (size_t)out * l->mods[i].rank * lq_dtype_size(l->mods[i].dtype)); /* CPU: host memory */
            }
        int np;
        int32_t *prompt = ids_of(json_object_get(json_array_get(json_object_get(a, "cases"), 0), "ids"), &np);
        run_seq with, without;
        run_seq_init(&with, prompt, np, vocab);
        run_seq_init(&without, prompt, np, vocab);
        with.adapter = l;
        drive(f, &with, 1, 512, NULL);
        drive(f, &without, 1, 512, NULL);
        assert_memory_equal(with.first_logits, without.first_logits, (size_t)vocab * sizeof(float));
        assert_memory_equal(with.tokens, without.tokens, (size_t)with.n_tokens * sizeof(int32_t));
        run_seq_free(&with), run_seq_free(&without);
        free(prompt);
        lq_lora_free(l);
    }
}

/* ---------- bad adapters ---------- */

static char tmp[256];

static void write_text(const char *dir, const char *file, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    FILE *fp = fopen(p, "w");
    fputs(text, fp);
    fclose(fp);
}

/* A one-module adapter: layer `layer`, projection `module` under `parent`, A [r][in], B [out][r]. */
static void make_adapter(const char *dir, const char *config, int layer, const char *parent, const char *module, int r,
                         int in, int out) {
    mkdir(dir, 0700);
    write_text(dir, "adapter_config.json", config);
    char p[512], na[256], nb[256];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    snprintf(na, sizeof na, "base_model.model.model.layers.%d.%s.%s.lora_A.weight", layer, parent, module);
    snprintf(nb, sizeof nb, "base_model.model.model.layers.%d.%s.%s.lora_B.weight", layer, parent, module);
    float *A = calloc((size_t)r * in, sizeof *A), *B = calloc((size_t)out * r, sizeof *B);
    int64_t sa[2] = {r, in}, sb[2] = {out, r};
    lq_error err;
    st_writer *w = st_writer_new(p);
    assert_int_equal(st_writer_declare(w, na, LQ_DTYPE_F32, 2, sa, &err), 0);
    assert_int_equal(st_writer_declare(w, nb, LQ_DTYPE_F32, 2, sb, &err), 0);
    assert_int_equal(st_writer_write(w, na, A, (size_t)r * in * 4, &err), 0);
    assert_int_equal(st_writer_write(w, nb, B, (size_t)out * r * 4, &err), 0);
    assert_int_equal(st_writer_finish(w, &err), 0);
    free(A), free(B);
}

static void expect_bad(fixture *f, const char *dir, const char *needle) {
    lq_error err = {{0}};
    lq_lora *l = lq_lora_load(dir, "bad", f->model, &err);
    if (l || !strstr(err.msg, needle)) fail_msg("%s: expected an error with '%s', got '%s'", dir, needle, err.msg);
}

static void test_bad_adapters_are_clear_errors(void **state) {
    fixture *f = *state;
    snprintf(tmp, sizeof tmp, "/tmp/lorq-lora-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    const char *ok = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}";
    char d[400];
#define DIR(name) (snprintf(d, sizeof d, "%s/%s", tmp, name), d)
    make_adapter(DIR("good"), ok, 0, "self_attn", "q_proj", 4, 576, 576);
    mkdir(DIR("empty"), 0700);
    expect_bad(f, DIR("empty"), "no adapter_config.json");
    make_adapter(DIR("dora"), "{\"r\": 4, \"use_dora\": true}", 0, "self_attn", "q_proj", 4, 576, 576);
    expect_bad(f, DIR("dora"), "DoRA");
    make_adapter(DIR("mts"), "{\"r\": 4, \"modules_to_save\": [\"lm_head\"]}", 0, "self_attn", "q_proj", 4, 576, 576);
    expect_bad(f, DIR("mts"), "modules_to_save");
    mkdir(DIR("pickle"), 0700);
    write_text(d, "adapter_config.json", ok);
    write_text(d, "adapter_model.bin", "PK\x03\x04 pickled");
    expect_bad(f, DIR("pickle"), "pickled");
    make_adapter(DIR("shape"), ok, 0, "self_attn", "q_proj", 4, 512, 576);
    expect_bad(f, DIR("shape"), "takes 576 inputs");
    make_adapter(DIR("bshape"), ok, 0, "self_attn", "k_proj", 4, 576, 576);
    expect_bad(f, DIR("bshape"), "expected [192, 4]");
    make_adapter(DIR("module"), ok, 0, "self_attn", "qkv_proj", 4, 576, 576);
    expect_bad(f, DIR("module"), "not one lorq adapts");
    make_adapter(DIR("layer"), ok, 40, "self_attn", "q_proj", 4, 576, 576);
    expect_bad(f, DIR("layer"), "base model has 30 layers");
    make_adapter(DIR("rank"), ok, 0, "self_attn", "q_proj", 8, 576, 576);
    expect_bad(f, DIR("rank"), "has rank 8 but adapter_config.json says 4");
    make_adapter(DIR("peft"), "{\"peft_type\": \"IA3\", \"r\": 4}", 0, "self_attn", "q_proj", 4, 576, 576);
    expect_bad(f, DIR("peft"), "IA3");
    make_adapter(DIR("json"), "{\"r\": ", 0, "self_attn", "q_proj", 4, 576, 576);
    expect_bad(f, DIR("json"), "adapter_config.json");
    make_adapter(DIR("trunc"), ok, 0, "self_attn", "q_proj", 4, 576, 576);
    snprintf(d + strlen(d), sizeof d - strlen(d), "/adapter_model.safetensors");
    assert_int_equal(truncate(d, 100), 0);
    expect_bad(f, DIR("trunc"), "adapter_model.safetensors");

    /* A registry keeps serving its good adapters when a bad one fails to load, and
     * evicts only adapters nobody holds. */
    lq_registry *reg = lq_registry_new(f->model, 3 * 4 * (576 + 576) * sizeof(float));
    lq_error err;
    lq_lora *g1 = lq_registry_acquire(reg, "good1", DIR("good"), &err);
    assert_non_null(g1);
    assert_null(lq_registry_acquire(reg, "bad", DIR("shape"), &err));
    lq_lora *g2 = lq_registry_acquire(reg, "good2", DIR("good"), &err);
    lq_lora *g3 = lq_registry_acquire(reg, "good3", DIR("good"), &err);
    assert_non_null(g2);
    assert_non_null(g3);
    assert_int_equal(lq_registry_count(reg), 3);
    assert_null(lq_registry_acquire(reg, "good4", DIR("good"), &err)); /* all pinned: no room */
    assert_non_null(strstr(err.msg, "budget"));
    lq_registry_release(reg, g1);
    lq_registry_release(reg, g3);
    assert_non_null(lq_registry_acquire(reg, "good4", DIR("good"), &err)); /* evicts good1, the least recent */
    assert_int_equal(lq_registry_count(reg), 3);
    for (int i = 0; i < lq_registry_count(reg); i++) assert_string_not_equal(lq_registry_at(reg, i)->name, "good1");
    assert_string_equal(lq_registry_at(reg, 0)->name, "good4"); /* most recent first */
    assert_true(lq_registry_acquire(reg, "good2", DIR("good"), &err) == g2); /* resident: same object */
    lq_registry_free(reg);
#undef DIR
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_adapter_matches_peft),
        cmocka_unit_test(test_mixed_adapters_equal_solo),
        cmocka_unit_test(test_zero_b_is_exactly_base),
        cmocka_unit_test(test_bad_adapters_are_clear_errors),
    };
    return cmocka_run_group_tests_name("lora", tests, setup, fixture_close);
}
