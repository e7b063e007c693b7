/* test_cuda.c — the CUDA backend against the CPU backend (make test-gpu).
 *
 * Op by op on random inputs whose sizes are deliberately not multiples of any tile
 * (rows, columns, head_dim, block size, LoRA ranks 1 to 128), then the whole engine:
 * the bundled model on the GPU against the CPU (8 prompts, 32 greedy tokens
 * identical, logits within bf16 tolerance), a bf16 dummy model (the tensor-core GEMM
 * path) likewise for its logits, and a decode batch of 32 sequences with 32 distinct
 * adapters against each sequence run alone on the GPU.
 *
 * Without a visible GPU it prints one SKIPPED line and exits 77 (skipped: tests/gpu/run.sh
 * counts it apart from passes and failures). LORQ_MODEL_DIR overrides the bundled model's folder. */
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

#include "backend.h"
/* The driver's golden-file helpers are not all used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "engine_driver.h"
#include "random_inputs.h"
#pragma GCC diagnostic pop

#define GOLDEN "tests/reference/golden/base_smollm2.json"

static lq_backend *CPU, *GPU;


/* A GPU copy of host bytes. */
static void *to_gpu(const void *src, size_t bytes) {
    void *d = GPU->alloc(GPU, bytes);
    assert_non_null(d);
    GPU->upload(GPU, d, src, bytes);
    return d;
}

static float *from_gpu(const void *src, size_t n) {
    float *h = malloc(n * sizeof *h);
    GPU->download(GPU, h, src, n * sizeof *h);
    return h;
}

/* |gpu - cpu| <= tol · (1 + |cpu|) everywhere; returns the largest difference. */
static double compare(const float *gpu, const float *cpu, size_t n, double tol, const char *what) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)gpu[i] - cpu[i]);
        if (!(d <= tol * (1.0 + fabs(cpu[i]))))
            fail_msg("%s: element %zu is %g on the GPU, %g on the CPU", what, i, gpu[i], cpu[i]);
        if (d > worst) worst = d;
    }
    return worst;
}

/* ---------- matmul ---------- */

static void check_matmul(lq_dtype dt, int n, int rows, int cols, int with_bias) {
    size_t wn = (size_t)rows * cols, es = lq_dtype_size(dt);
    float *w32 = rand_vec(wn), *x = rand_vec((size_t)n * cols), *bias = rand_vec((size_t)rows);
    void *w = malloc(wn * es);
    lq_convert(w, dt, w32, LQ_DTYPE_F32, wn);
    lq_mat mc = {w, dt, rows, cols}, mg = {to_gpu(w, wn * es), dt, rows, cols};
    float *yc = malloc((size_t)n * rows * sizeof *yc);
    float *xg = to_gpu(x, (size_t)n * cols * sizeof *x), *bg = to_gpu(bias, (size_t)rows * sizeof *bias);
    float *yg = GPU->alloc(GPU, (size_t)n * rows * sizeof *yg);
    CPU->matmul(CPU, yc, x, n, &mc, with_bias ? bias : NULL);
    GPU->matmul(GPU, yg, xg, n, &mg, with_bias ? bg : NULL);
    float *got = from_gpu(yg, (size_t)n * rows);
    /* f32 weights: f32 GEMM, rounding only. bf16/f16: x is narrowed on the GPU, a relative
     * error of 2^-9 (bf16) per product, about sqrt(cols) of them adding up. */
    double tol = dt == LQ_DTYPE_F32 ? 1e-4 : dt == LQ_DTYPE_BF16 ? 4e-3 * sqrt(cols) : 5e-4 * sqrt(cols);
    char what[64];
    snprintf(what, sizeof what, "matmul %s %dx%dx%d", lq_dtype_name(dt), n, rows, cols);
    compare(got, yc, (size_t)n * rows, tol, what);
    GPU->free(GPU, (void *)mg.data), GPU->free(GPU, xg), GPU->free(GPU, bg), GPU->free(GPU, yg);
    free(w32), free(x), free(bias), free(w), free(yc), free(got);
}

static void test_matmul(void **state) {
    (void)state;
    int shapes[][3] = {{1, 7, 5}, {2, 33, 17}, {5, 300, 64}, {17, 257, 96}, {64, 64, 130}, {130, 513, 200}, {1, 4099, 1027}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int dt = 0; dt < LQ_DTYPE_COUNT; dt++)
            check_matmul((lq_dtype)dt, shapes[s][0], shapes[s][1], shapes[s][2], s % 2);
}

/* q, k and v read one input, narrowed to bf16 once: the copy must follow every change
 * of the input (another op writing it, a matmul writing over it, an upload). */
static void test_matmul_narrowed_input_reuse(void **state) {
    (void)state;
    int n = 3, dim = 96;
    size_t wn = (size_t)dim * dim, xn = (size_t)n * dim;
    float *w32[2] = {rand_vec(wn), rand_vec(wn)}, *x = rand_vec(xn), *d = rand_vec(xn);
    uint16_t *w[2];
    lq_mat mc[2], mg[2];
    for (int i = 0; i < 2; i++) {
        w[i] = malloc(wn * 2);
        lq_convert(w[i], LQ_DTYPE_BF16, w32[i], LQ_DTYPE_F32, wn);
        mc[i] = (lq_mat){w[i], LQ_DTYPE_BF16, dim, dim};
        mg[i] = (lq_mat){to_gpu(w[i], wn * 2), LQ_DTYPE_BF16, dim, dim};
    }
    float *xg = to_gpu(x, xn * 4), *dg = to_gpu(d, xn * 4), *yg = GPU->alloc(GPU, xn * 4);
    float *yc = malloc(xn * 4), *got;
    double tol = 4e-3 * sqrt(dim);
    for (int step = 0; step < 4; step++) {
        if (step == 1) { /* another op changes the input */
            CPU->add(CPU, x, d, xn);
            GPU->add(GPU, xg, dg, xn);
        } else if (step == 2) { /* a matmul writes over its own input */
            CPU->matmul(CPU, yc, x, n, &mc[0], NULL);
            memcpy(x, yc, xn * 4);
            GPU->matmul(GPU, xg, xg, n, &mg[0], NULL);
            GPU->download(GPU, x, xg, xn * 4); /* continue from the GPU's values: no drift */
        } else if (step == 3) { /* an upload replaces it */
            for (size_t i = 0; i < xn; i++) x[i] = frand();
            GPU->upload(GPU, xg, x, xn * 4);
        }
        for (int i = 0; i < 2; i++) {
            CPU->matmul(CPU, yc, x, n, &mc[i], NULL);
            GPU->matmul(GPU, yg, xg, n, &mg[i], NULL);
            got = from_gpu(yg, xn);
            compare(got, yc, xn, tol, "matmul after the input changed");
            free(got);
        }
    }
    for (int i = 0; i < 2; i++) GPU->free(GPU, (void *)mg[i].data), free(w[i]), free(w32[i]);
    GPU->free(GPU, xg), GPU->free(GPU, dg), GPU->free(GPU, yg);
    free(x), free(d), free(yc);
}

/* ---------- elementwise ops ---------- */

static void test_norms(void **state) {
    (void)state;
    int n = 7, dim = 1001;
    size_t count = (size_t)n * dim;
    float *x = rand_vec(count), *r = rand_vec(count), *w = rand_vec((size_t)dim), *yc = malloc(count * sizeof *yc);
    lq_mat wc = {w, LQ_DTYPE_F32, 1, dim}, wg = {to_gpu(w, (size_t)dim * 4), LQ_DTYPE_F32, 1, dim};
    float *xg = to_gpu(x, count * 4), *rg = to_gpu(r, count * 4), *yg = GPU->alloc(GPU, count * 4);
    CPU->rmsnorm(CPU, yc, x, &wc, n, dim, 1e-5f);
    GPU->rmsnorm(GPU, yg, xg, &wg, n, dim, 1e-5f);
    float *got = from_gpu(yg, count);
    compare(got, yc, count, 1e-5, "rmsnorm");
    free(got);
    GPU->rmsnorm(GPU, xg, xg, &wg, n, dim, 1e-5f); /* in place */
    got = from_gpu(xg, count);
    compare(got, yc, count, 1e-5, "rmsnorm in place");
    free(got);
    /* add_rmsnorm against the CPU's add then rmsnorm */
    GPU->upload(GPU, xg, x, count * 4);
    CPU->add(CPU, x, r, count);
    CPU->rmsnorm(CPU, yc, x, &wc, n, dim, 1e-5f);
    assert_non_null(GPU->add_rmsnorm);
    GPU->add_rmsnorm(GPU, xg, rg, yg, &wg, n, dim, 1e-5f);
    got = from_gpu(xg, count);
    compare(got, x, count, 1e-6, "add_rmsnorm: the sum");
    free(got);
    got = from_gpu(yg, count);
    compare(got, yc, count, 1e-5, "add_rmsnorm: the norm");
    free(got);
    GPU->free(GPU, (void *)wg.data), GPU->free(GPU, xg), GPU->free(GPU, rg), GPU->free(GPU, yg);
    free(x), free(r), free(w), free(yc);
}

static void test_elementwise(void **state) {
    (void)state;
    size_t count = 100003;
    float *a = rand_vec(count), *b = rand_vec(count), *oc = malloc(count * 4);
    float *ag = to_gpu(a, count * 4), *bg = to_gpu(b, count * 4), *og = GPU->alloc(GPU, count * 4);
    CPU->silu_mul(CPU, oc, a, b, count);
    GPU->silu_mul(GPU, og, ag, bg, count);
    float *got = from_gpu(og, count);
    compare(got, oc, count, 1e-6, "silu_mul");
    free(got);
    GPU->silu_mul(GPU, ag, ag, bg, count); /* out == gate, as the model calls it */
    got = from_gpu(ag, count);
    compare(got, oc, count, 1e-6, "silu_mul in place");
    free(got);
    GPU->upload(GPU, ag, a, count * 4);
    CPU->add(CPU, a, b, count);
    GPU->add(GPU, ag, bg, count);
    got = from_gpu(ag, count);
    compare(got, a, count, 0.0, "add");
    free(got);
    GPU->free(GPU, ag), GPU->free(GPU, bg), GPU->free(GPU, og);
    free(a), free(b), free(oc);
}

static void test_embed_gather(void **state) {
    (void)state;
    int vocab = 37, dim = 333, n = 6;
    int32_t ids[6] = {36, 0, 5, 5, 17, 1};
    float *t32 = rand_vec((size_t)vocab * dim);
    for (int dt = 0; dt < LQ_DTYPE_COUNT; dt++) {
        size_t bytes = (size_t)vocab * dim * lq_dtype_size((lq_dtype)dt);
        void *t = malloc(bytes);
        lq_convert(t, (lq_dtype)dt, t32, LQ_DTYPE_F32, (size_t)vocab * dim);
        lq_mat tc = {t, (lq_dtype)dt, vocab, dim}, tg = {to_gpu(t, bytes), (lq_dtype)dt, vocab, dim};
        float *xc = malloc((size_t)n * dim * 4), *xg = GPU->alloc(GPU, (size_t)n * dim * 4);
        CPU->embed(CPU, xc, &tc, ids, n);
        GPU->embed(GPU, xg, &tg, ids, n);
        float *got = from_gpu(xg, (size_t)n * dim);
        compare(got, xc, (size_t)n * dim, 0.0, "embed");
        /* gather_rows, into another buffer and within the same one */
        int32_t idx[4] = {5, 2, 2, 0};
        float *gc = malloc((size_t)4 * dim * 4), *gg = GPU->alloc(GPU, (size_t)4 * dim * 4);
        CPU->gather_rows(CPU, gc, xc, idx, 4, dim);
        GPU->gather_rows(GPU, gg, xg, idx, 4, dim);
        free(got);
        got = from_gpu(gg, (size_t)4 * dim);
        compare(got, gc, (size_t)4 * dim, 0.0, "gather_rows");
        GPU->gather_rows(GPU, xg, xg, idx, 4, dim);
        free(got);
        got = from_gpu(xg, (size_t)4 * dim);
        compare(got, gc, (size_t)4 * dim, 0.0, "gather_rows in place");
        free(got), free(gc), free(xc), free(t);
        GPU->free(GPU, gg), GPU->free(GPU, xg), GPU->free(GPU, (void *)tg.data);
    }
    free(t32);
}

static void test_rope(void **state) {
    (void)state;
    int n = 5, heads = 3, hd = 10; /* half = 5: odd */
    size_t count = (size_t)n * heads * hd;
    float *x = rand_vec(count);
    int32_t pos[5] = {0, 1, 7, 1000, 4095};
    float inv[5];
    for (int j = 0; j < hd / 2; j++) inv[j] = 1.0f / powf(10000.0f, 2.0f * j / hd);
    float *xg = to_gpu(x, count * 4);
    CPU->rope(CPU, x, n, heads, hd, pos, inv);
    GPU->rope(GPU, xg, n, heads, hd, pos, inv);
    float *got = from_gpu(xg, count);
    compare(got, x, count, 2e-5, "rope");
    free(got), free(x);
    GPU->free(GPU, xg);
}

/* ---------- paged attention ---------- */

/* Writes the same K/V to both backends' pools through kv_write, with blocks handed out
 * in a scrambled order, then compares attention for sequences of all shapes. */
static void check_attention(int n_heads, int n_kv_heads, int hd, int bs, int window) {
    enum { NSEQ = 5 };
    int ctx[NSEQ] = {1, 37, 100, 300, 64}, qlen[NSEQ] = {1, 37, 3, 1, 17};
    int n_blocks = 0;
    for (int s = 0; s < NSEQ; s++) n_blocks += (ctx[s] + bs - 1) / bs;
    int kvd = n_kv_heads * hd, qd = n_heads * hd;
    size_t pool_bytes = (size_t)n_blocks * bs * kvd * sizeof(float);
    float *kc = calloc(1, pool_bytes), *vc = calloc(1, pool_bytes);
    float *kg = GPU->alloc(GPU, pool_bytes), *vg = GPU->alloc(GPU, pool_bytes);
    lq_kv_pool pc = {&kc, &vc, 1, n_blocks, bs, n_kv_heads, hd}, pg = {&kg, &vg, 1, n_blocks, bs, n_kv_heads, hd};
    int32_t *perm = malloc((size_t)n_blocks * sizeof *perm);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) { /* Fisher-Yates: scattered blocks */
        int j = (int)((frand() + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    lq_attn_seq seqs[NSEQ];
    int rows = 0, used = 0;
    for (int s = 0; s < NSEQ; s++) {
        int nb = (ctx[s] + bs - 1) / bs;
        seqs[s] = (lq_attn_seq){rows, qlen[s], ctx[s], perm + used, window};
        /* all ctx[s] tokens of the sequence go in: earlier ones as "cached", then the step's */
        float *k = rand_vec((size_t)ctx[s] * kvd), *v = rand_vec((size_t)ctx[s] * kvd);
        int32_t *slots = malloc((size_t)ctx[s] * sizeof *slots);
        for (int t = 0; t < ctx[s]; t++) slots[t] = perm[used + t / bs] * bs + t % bs;
        float *k_g = to_gpu(k, (size_t)ctx[s] * kvd * 4), *v_g = to_gpu(v, (size_t)ctx[s] * kvd * 4);
        CPU->kv_write(CPU, &pc, 0, k, v, slots, ctx[s]);
        GPU->kv_write(GPU, &pg, 0, k_g, v_g, slots, ctx[s]);
        GPU->free(GPU, k_g), GPU->free(GPU, v_g);
        free(k), free(v), free(slots);
        used += nb;
        rows += qlen[s];
    }
    float *q = rand_vec((size_t)rows * qd), *oc = malloc((size_t)rows * qd * 4);
    float *qg = to_gpu(q, (size_t)rows * qd * 4), *og = GPU->alloc(GPU, (size_t)rows * qd * 4);
    float scale = 1.0f / sqrtf((float)hd);
    CPU->attention(CPU, oc, q, &pc, 0, seqs, NSEQ, n_heads, scale);
    GPU->attention(GPU, og, qg, &pg, 0, seqs, NSEQ, n_heads, scale);
    float *got = from_gpu(og, (size_t)rows * qd);
    char what[96];
    snprintf(what, sizeof what, "attention heads %d/%d head_dim %d block %d window %d", n_heads, n_kv_heads, hd, bs,
             window);
    compare(got, oc, (size_t)rows * qd, 1e-4, what);
    free(got), free(q), free(oc), free(kc), free(vc), free(perm);
    GPU->free(GPU, qg), GPU->free(GPU, og), GPU->free(GPU, kg), GPU->free(GPU, vg);
}

static void test_attention(void **state) {
    (void)state;
    check_attention(6, 2, 24, 5, 0);   /* head_dim not a multiple of 32, odd block size */
    check_attention(4, 4, 64, 16, 0);  /* no GQA */
    check_attention(32, 8, 128, 16, 0); /* Mistral's heads */
    check_attention(32, 8, 128, 16, 40); /* and a sliding window, starting inside blocks and tiles */
    check_attention(6, 2, 24, 5, 7);
    check_attention(8, 1, 256, 16, 0); /* the largest head_dim, MQA */
    check_attention(3, 3, 2, 1, 0);    /* degenerate: head_dim 2, one-token blocks */
}

/* ---------- LoRA ---------- */

typedef struct lora_case {
    int n_segs;
    int row0[8], n_rows[8], rank[8];
} lora_case;

/* Two targets sharing x, segments of different ranks and lengths, against the CPU;
 * then the cuBLAS GEMM-pair baseline against the segmented kernels. */
static void check_lora(lq_dtype dt, int dim_in, const int dim_out[2], const lora_case *lc) {
    int rows = 0, max_rank = 0;
    for (int s = 0; s < lc->n_segs; s++) {
        if (lc->row0[s] + lc->n_rows[s] > rows) rows = lc->row0[s] + lc->n_rows[s];
        if (lc->rank[s] > max_rank) max_rank = lc->rank[s];
    }
    size_t es = lq_dtype_size(dt);
    float *x = rand_vec((size_t)rows * dim_in);
    float *xg = to_gpu(x, (size_t)rows * dim_in * 4);
    lq_lora_seg sc[2][8], sg[2][8];
    void *host_w[2][8][2];
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < lc->n_segs; s++) {
            int r = lc->rank[s];
            size_t na = (size_t)r * dim_in, nb = (size_t)r * dim_out[t];
            float *a32 = rand_vec(na), *b32 = rand_vec(nb);
            void *a = malloc(na * es), *b = malloc(nb * es);
            lq_convert(a, dt, a32, LQ_DTYPE_F32, na);
            lq_convert(b, dt, b32, LQ_DTYPE_F32, nb);
            float scale = 0.5f + 0.25f * s;
            sc[t][s] = (lq_lora_seg){lc->row0[s], lc->n_rows[s], a, b, dt, r, scale};
            sg[t][s] = (lq_lora_seg){lc->row0[s], lc->n_rows[s], to_gpu(a, na * es), to_gpu(b, nb * es), dt, r, scale};
            host_w[t][s][0] = a, host_w[t][s][1] = b;
            free(a32), free(b32);
        }
    float *yc[2], *yg[2], *tc[2], *tg[2], *y0[2];
    lq_lora_target tgc[2], tgg[2];
    for (int t = 0; t < 2; t++) {
        size_t ny = (size_t)rows * dim_out[t];
        y0[t] = rand_vec(ny);
        yc[t] = malloc(ny * 4);
        memcpy(yc[t], y0[t], ny * 4);
        yg[t] = to_gpu(y0[t], ny * 4);
        tc[t] = calloc((size_t)rows * max_rank, 4);
        tg[t] = GPU->alloc(GPU, (size_t)rows * max_rank * 4);
        tgc[t] = (lq_lora_target){yc[t], dim_out[t], sc[t], lc->n_segs, tc[t], max_rank};
        tgg[t] = (lq_lora_target){yg[t], dim_out[t], sg[t], lc->n_segs, tg[t], max_rank};
    }
    CPU->lora(CPU, x, dim_in, tgc, 2);
    GPU->lora(GPU, xg, dim_in, tgg, 2);
    for (int t = 0; t < 2; t++) {
        float *got = from_gpu(yg[t], (size_t)rows * dim_out[t]);
        char what[96];
        snprintf(what, sizeof what, "lora %s target %d (dim_in %d, dim_out %d)", lq_dtype_name(dt), t, dim_in,
                 dim_out[t]);
        compare(got, yc[t], (size_t)rows * dim_out[t], 1e-4 * sqrt(dim_in), what);
        free(got);
        /* the baseline, from the same starting y */
        GPU->upload(GPU, yg[t], y0[t], (size_t)rows * dim_out[t] * 4);
    }
    assert_non_null(GPU->lora_gemm_loop);
    GPU->lora_gemm_loop(GPU, xg, dim_in, tgg, 2);
    for (int t = 0; t < 2; t++) {
        float *got = from_gpu(yg[t], (size_t)rows * dim_out[t]);
        compare(got, yc[t], (size_t)rows * dim_out[t], dt == LQ_DTYPE_F32 ? 1e-4 * sqrt(dim_in) : 4e-3 * sqrt(dim_in),
                "lora_gemm_loop");
        free(got);
        for (int s = 0; s < lc->n_segs; s++) {
            GPU->free(GPU, (void *)sg[t][s].A), GPU->free(GPU, (void *)sg[t][s].B);
            free(host_w[t][s][0]), free(host_w[t][s][1]);
        }
        GPU->free(GPU, yg[t]), GPU->free(GPU, tg[t]);
        free(yc[t]), free(tc[t]), free(y0[t]);
    }
    GPU->free(GPU, xg);
    free(x);
}

static void test_lora(void **state) {
    (void)state;
    /* BGMV-like: one row per adapter, ranks 1 to 128, rows out of order, a gap */
    lora_case decode = {7, {0, 1, 2, 3, 5, 6, 7}, {1, 1, 1, 1, 1, 1, 1}, {16, 1, 7, 33, 128, 64, 16}};
    /* SGMV-like: long segments of rows that are not multiples of the row tile */
    lora_case prefill = {3, {0, 9, 10}, {9, 1, 37}, {8, 128, 13}};
    int outs_a[2] = {333, 64}, outs_b[2] = {4096, 1};
    for (int dt = 0; dt < 2; dt++) {
        lq_dtype t = dt ? LQ_DTYPE_BF16 : LQ_DTYPE_F32;
        check_lora(t, 200, outs_a, &decode);  /* dim_in a multiple of 8 (vector path) */
        check_lora(t, 203, outs_a, &prefill); /* odd dim_in (scalar path) */
        check_lora(t, 4096, outs_b, &decode);
        check_lora(t, 1027, outs_b, &prefill);
    }
}

/* ---------- the whole model ---------- */

static fixture cpu_fx, gpu_fx;

static int model_setup(void **state) {
    (void)state;
    const char *dir = getenv("LORQ_MODEL_DIR");
    if (!dir) dir = "models/SmolLM2-135M-Instruct";
    lq_error err;
    cpu_fx.backend = CPU;
    gpu_fx.backend = GPU;
    cpu_fx.model = lq_model_load(dir, CPU, &err);
    gpu_fx.model = cpu_fx.model ? lq_model_load(dir, GPU, &err) : NULL;
    if (!gpu_fx.model) {
        fprintf(stderr, "cannot load %s (run make setup): %s\n", dir, err.msg);
        return -1;
    }
    json_error_t jerr;
    cpu_fx.golden = gpu_fx.golden = json_load_file(GOLDEN, 0, &jerr);
    return cpu_fx.golden ? 0 : -1;
}

static int model_teardown(void **state) {
    (void)state;
    json_decref(cpu_fx.golden);
    lq_model_free(cpu_fx.model);
    lq_model_free(gpu_fx.model);
    return 0;
}

/* The golden file's prompts (transformers' tokenization), at least 8. */
static int load_prompts(int32_t **ids, int *lens, int max) {
    json_t *cases = json_object_get(cpu_fx.golden, "cases");
    int n = 0;
    for (size_t c = 0; c < json_array_size(cases) && n < max; c++, n++)
        ids[n] = ids_of(json_object_get(json_array_get(cases, c), "ids"), &lens[n]);
    return n;
}

/* logits within bf16 tolerance: 2^-8 of the largest |logit| (plus a floor). */
static double logits_diff(const float *a, const float *b, int n, double *scale) {
    double worst = 0.0, big = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > worst) worst = d;
        if (fabs(b[i]) > big) big = fabs(b[i]);
    }
    *scale = big;
    return worst;
}

static void test_model_gpu_vs_cpu(void **state) {
    (void)state;
    enum { N = 8 };
    int32_t *ids[N];
    int lens[N];
    int n = load_prompts(ids, lens, N);
    assert_int_equal(n, N);
    run_seq rc[N], rg[N];
    int vocab = cpu_fx.model->cfg.vocab_size;
    for (int i = 0; i < N; i++) {
        run_seq_init(&rc[i], ids[i], lens[i], vocab);
        run_seq_init(&rg[i], ids[i], lens[i], vocab);
    }
    drive(&cpu_fx, rc, N, 512, NULL);
    drive(&gpu_fx, rg, N, 512, NULL);
    for (int i = 0; i < N; i++) {
        double big, d = logits_diff(rg[i].first_logits, rc[i].first_logits, vocab, &big);
        printf("  prompt %d (%d tokens): logits max |gpu - cpu| %.2e (max |logit| %.1f)\n", i, lens[i], d, big);
        if (d > big / 256.0 + 1e-3) fail_msg("prompt %d: logits differ by %g, more than bf16 tolerance", i, d);
        for (int t = 0; t < N_NEW; t++)
            if (rg[i].tokens[lens[i] + t] != rc[i].tokens[lens[i] + t])
                fail_msg("prompt %d: greedy token %d is %d on the GPU, %d on the CPU", i, t, rg[i].tokens[lens[i] + t],
                         rc[i].tokens[lens[i] + t]);
        run_seq_free(&rc[i]), run_seq_free(&rg[i]);
        free(ids[i]);
    }
}

/* 32 sequences, each with its own adapter (ranks 4 to 128), decoding together, against
 * each alone: same greedy tokens, logits equal to GEMM rounding (cuBLAS picks kernels by
 * batch size, so not bitwise). */
static void test_mixed_adapters(void **state) {
    (void)state;
    enum { N = 32 };
    static const int ranks[] = {4, 8, 16, 16, 32, 64, 128, 7};
    lq_error err;
    lq_lora *ad[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "a%d", i);
        ad[i] = lq_lora_random(gpu_fx.model, name, ranks[i % 8], (1u << LQ_PROJ_COUNT) - 1, (unsigned long)i + 1, &err);
        assert_non_null(ad[i]);
    }
    int32_t *ids[9];
    int lens[9];
    int np = load_prompts(ids, lens, 9);
    int vocab = gpu_fx.model->cfg.vocab_size;
    run_seq batch[N], solo;
    for (int i = 0; i < N; i++) {
        run_seq_init(&batch[i], ids[i % np], lens[i % np], vocab);
        batch[i].adapter = ad[i];
        batch[i].n_new = 16;
    }
    drive(&gpu_fx, batch, N, 512, NULL);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        run_seq_init(&solo, ids[i % np], lens[i % np], vocab);
        solo.adapter = ad[i];
        solo.n_new = 16;
        drive(&gpu_fx, &solo, 1, 512, NULL);
        double big, d = logits_diff(batch[i].first_logits, solo.first_logits, vocab, &big);
        if (d > worst) worst = d;
        if (d > 1e-3 * (1.0 + big)) fail_msg("sequence %d: batched logits differ from solo by %g", i, d);
        for (int t = 0; t < 16; t++)
            if (batch[i].tokens[lens[i % np] + t] != solo.tokens[lens[i % np] + t])
                fail_msg("sequence %d (adapter rank %d): token %d differs batched vs solo", i, ranks[i % 8], t);
        run_seq_free(&solo);
        run_seq_free(&batch[i]);
    }
    printf("  32 adapters batched vs solo: logits max |diff| %.2e\n", worst);
    for (int i = 0; i < N; i++) lq_lora_free(ad[i]);
    for (int i = 0; i < np; i++) free(ids[i]);
}

/* A small Mistral-shaped model with bf16 dummy weights: the tensor-core GEMM path end to
 * end against the CPU's f32-activation arithmetic. */
static void test_dummy_bf16_model(void **state) {
    (void)state;
    const char *cfg = "tests/data/configs/mistral-tiny";
    lq_error err;
    lq_model *mc = lq_model_load_dummy(cfg, CPU, LQ_DTYPE_BF16, 3, &err);
    lq_model *mg = mc ? lq_model_load_dummy(cfg, GPU, LQ_DTYPE_BF16, 3, &err) : NULL;
    if (!mg) fail_msg("%s", err.msg);
    fixture fc = {CPU, mc, NULL}, fg = {GPU, mg, NULL};
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = (int32_t)((i * 977 + 13) % mc->cfg.vocab_size);
    run_seq a, b;
    run_seq_init(&a, prompt, 40, mc->cfg.vocab_size);
    run_seq_init(&b, prompt, 40, mc->cfg.vocab_size);
    a.n_new = b.n_new = 0;
    drive(&fc, &a, 1, 512, NULL);
    drive(&fg, &b, 1, 512, NULL);
    double big, d = logits_diff(b.first_logits, a.first_logits, mc->cfg.vocab_size, &big);
    printf("  bf16 dummy model: logits max |gpu - cpu| %.2e (max |logit| %.2e)\n", d, big);
    if (d > big / 64.0 + 1e-5) fail_msg("bf16 dummy model: logits differ by %g (max %g)", d, big);
    run_seq_free(&a), run_seq_free(&b);
    lq_model_free(mc), lq_model_free(mg);
}

int main(void) {
    random_inputs_seed(7);
    char why[256] = "";
    if (lq_cuda_device_count(why, sizeof why) <= 0) {
        printf("test-gpu: SKIPPED: no GPU visible (%s)\n", why);
        return 77; /* "skipped", as automake's test drivers read it */
    }
    lq_error err;
    CPU = lq_backend_cpu_new(0, &err);
    GPU = CPU ? lq_backend_cuda_new(0, &err) : NULL;
    if (!GPU) {
        fprintf(stderr, "test-gpu: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest ops[] = {
        cmocka_unit_test(test_matmul),   cmocka_unit_test(test_matmul_narrowed_input_reuse),
        cmocka_unit_test(test_norms),    cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_embed_gather), cmocka_unit_test(test_rope), cmocka_unit_test(test_attention),
        cmocka_unit_test(test_lora),
    };
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_model_gpu_vs_cpu),
        cmocka_unit_test(test_mixed_adapters),
        cmocka_unit_test(test_dummy_bf16_model),
    };
    int failed = cmocka_run_group_tests_name("cuda ops vs cpu", ops, NULL, NULL);
    failed += cmocka_run_group_tests_name("cuda engine vs cpu", model, model_setup, model_teardown);
    GPU->destroy(GPU);
    CPU->destroy(CPU);
    return failed ? 1 : 0;
}
