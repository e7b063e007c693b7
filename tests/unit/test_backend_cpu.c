/* test_backend_cpu.c — every CPU backend op against a plain double-precision
 * reference on random inputs, odd sizes included; attention over a paged
 * cache with scattered blocks against dense causal attention. The CUDA
 * backend's test will compare against these same CPU ops. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend.h"
#include "random_inputs.h"

static lq_backend *B;

static int setup(void **state) {
    (void)state;
    lq_error err;
    B = lq_backend_cpu_new(2, &err);
    return B ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    B->destroy(B);
    return 0;
}


static void assert_close(const float *got, const double *want, size_t n, double tol, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (fabs(got[i] - want[i]) > tol * (1.0 + fabs(want[i])))
            fail_msg("%s: element %zu is %g, expected %g", what, i, got[i], want[i]);
}

static void check_matmul(lq_dtype dt, int n, int rows, int cols, int with_bias) {
    float *w32 = rand_vec((size_t)rows * cols), *x = rand_vec((size_t)n * cols), *bias = rand_vec((size_t)rows);
    void *w = malloc((size_t)rows * cols * lq_dtype_size(dt));
    lq_convert(w, dt, w32, LQ_DTYPE_F32, (size_t)rows * cols);
    lq_convert(w32, LQ_DTYPE_F32, w, dt, (size_t)rows * cols); /* the reference sees the rounded weights */
    lq_mat m = {w, dt, rows, cols};
    float *y = malloc((size_t)n * rows * sizeof *y);
    double *ref = malloc((size_t)n * rows * sizeof *ref);
    B->matmul(B, y, x, n, &m, with_bias ? bias : NULL);
    for (int i = 0; i < n; i++)
        for (int r = 0; r < rows; r++) {
            double acc = with_bias ? bias[r] : 0.0;
            for (int j = 0; j < cols; j++) acc += (double)x[i * cols + j] * w32[(size_t)r * cols + j];
            ref[i * rows + r] = acc;
        }
    assert_close(y, ref, (size_t)n * rows, 1e-4, lq_dtype_name(dt));
    /* Batch invariance: each row alone gives the same result to rounding (OpenBLAS picks
     * kernels by matrix size, and summation order within a dot product may differ: f32 rounding, not more). */
    float *y1 = malloc((size_t)rows * sizeof *y1);
    double *yd = malloc((size_t)rows * sizeof *yd);
    for (int i = 0; i < n; i++) {
        B->matmul(B, y1, x + (size_t)i * cols, 1, &m, with_bias ? bias : NULL);
        for (int r = 0; r < rows; r++) yd[r] = y[(size_t)i * rows + r];
        assert_close(y1, yd, (size_t)rows, 2e-5, "matmul row alone vs in a batch");
    }
    free(yd);
    free(y1);
    free(w32), free(x), free(bias), free(w), free(y), free(ref);
}

static void test_matmul(void **state) {
    (void)state;
    int shapes[][3] = {{1, 7, 5}, {2, 33, 17}, {5, 300, 64}, {17, 257, 96}, {64, 64, 130}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int dt = 0; dt < LQ_DTYPE_COUNT; dt++)
            check_matmul((lq_dtype)dt, shapes[s][0], shapes[s][1], shapes[s][2], s % 2);
}

static void test_rmsnorm_embed_add_silu(void **state) {
    (void)state;
    int n = 5, dim = 37;
    float *x = rand_vec((size_t)n * dim), *w = rand_vec((size_t)dim), *y = malloc((size_t)n * dim * sizeof *y);
    double *ref = malloc((size_t)n * dim * sizeof *ref);
    lq_mat wm = {w, LQ_DTYPE_F32, 1, dim};
    B->rmsnorm(B, y, x, &wm, n, dim, 1e-5f);
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < dim; j++) ss += (double)x[i * dim + j] * x[i * dim + j];
        double inv = 1.0 / sqrt(ss / dim + 1e-5);
        for (int j = 0; j < dim; j++) ref[i * dim + j] = x[i * dim + j] * inv * w[j];
    }
    assert_close(y, ref, (size_t)n * dim, 1e-5, "rmsnorm");

    int32_t ids[3] = {4, 0, 4};
    float *table = rand_vec(5 * (size_t)dim);
    uint16_t *tb = malloc(5 * (size_t)dim * 2);
    lq_convert(tb, LQ_DTYPE_BF16, table, LQ_DTYPE_F32, 5 * (size_t)dim);
    lq_mat tm = {tb, LQ_DTYPE_BF16, 5, dim};
    B->embed(B, y, &tm, ids, 3);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < dim; j++) assert_true(y[i * dim + j] == lq_bf16_to_f32(tb[ids[i] * dim + j]));

    float *a = rand_vec(100), *b = rand_vec(100), *o = malloc(100 * sizeof *o);
    double r[100];
    B->silu_mul(B, o, a, b, 100);
    for (int i = 0; i < 100; i++) r[i] = a[i] / (1.0 + exp(-a[i])) * b[i];
    assert_close(o, r, 100, 1e-6, "silu_mul");
    memcpy(o, a, 100 * sizeof *o);
    B->add(B, o, b, 100);
    for (int i = 0; i < 100; i++) r[i] = (double)a[i] + b[i];
    assert_close(o, r, 100, 1e-7, "add");
    free(x), free(w), free(y), free(ref), free(table), free(tb), free(a), free(b), free(o);
}

static void test_rope(void **state) {
    (void)state;
    int n = 3, heads = 2, hd = 8;
    float *x = rand_vec((size_t)n * heads * hd), *orig = malloc((size_t)n * heads * hd * sizeof *orig);
    memcpy(orig, x, (size_t)n * heads * hd * sizeof *x);
    int32_t pos[3] = {0, 7, 1000};
    float inv[4];
    for (int j = 0; j < 4; j++) inv[j] = 1.0f / powf(10000.0f, 2.0f * j / hd);
    B->rope(B, x, n, heads, hd, pos, inv);
    double ref[48];
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < hd / 2; j++) {
                const float *v = orig + (i * heads + h) * hd;
                double ang = (double)((float)pos[i] * inv[j]);
                ref[(i * heads + h) * hd + j] = v[j] * cos(ang) - v[j + hd / 2] * sin(ang);
                ref[(i * heads + h) * hd + j + hd / 2] = v[j + hd / 2] * cos(ang) + v[j] * sin(ang);
            }
    assert_close(x, ref, 48, 1e-5, "rope");
    free(x), free(orig);
}

/* Paged attention against dense causal attention: blocks handed out in a
 * scrambled order; with a sliding window (keys p-window+1..p), starting
 * inside a block, too. */
static void check_paged_attention(int window) {
    enum { BS = 4, NB = 16, KVH = 2, H = 6, HD = 8, NSEQ = 3 };
    int ctx[NSEQ] = {1, 9, 13}, qlen[NSEQ] = {1, 9, 2}; /* decode; full prefill; a 2-token chunk */
    float *kpool = calloc((size_t)NB * BS * KVH * HD, sizeof(float)), *vpool = calloc((size_t)NB * BS * KVH * HD, sizeof(float));
    float *kp[1] = {kpool}, *vp[1] = {vpool};
    lq_kv_pool kv = {kp, vp, 1, NB, BS, KVH, HD};
    int32_t tables[NSEQ][4] = {{7, -1, -1, -1}, {3, 11, 0, -1}, {15, 2, 9, 5}};
    float *keys[NSEQ], *vals[NSEQ];
    int total_q = 0;
    for (int s = 0; s < NSEQ; s++) {
        keys[s] = rand_vec((size_t)ctx[s] * KVH * HD);
        vals[s] = rand_vec((size_t)ctx[s] * KVH * HD);
        int32_t slots[16];
        for (int t = 0; t < ctx[s]; t++) slots[t] = tables[s][t / BS] * BS + t % BS;
        B->kv_write(B, &kv, 0, keys[s], vals[s], slots, ctx[s]);
        total_q += qlen[s];
    }
    float *q = rand_vec((size_t)total_q * H * HD), *out = malloc((size_t)total_q * H * HD * sizeof *out);
    lq_attn_seq seqs[NSEQ];
    for (int s = 0, row = 0; s < NSEQ; row += qlen[s], s++) seqs[s] = (lq_attn_seq){row, qlen[s], ctx[s], tables[s], window};
    float scale = 1.0f / sqrtf(HD);
    B->attention(B, out, q, &kv, 0, seqs, NSEQ, H, scale);
    double *ref = calloc((size_t)total_q * H * HD, sizeof *ref);
    for (int s = 0; s < NSEQ; s++)
        for (int i = 0; i < qlen[s]; i++) {
            int row = seqs[s].q_start + i, pos = ctx[s] - qlen[s] + i;
            int first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
            for (int h = 0; h < H; h++) {
                int kh = h / (H / KVH);
                const float *qv = q + ((size_t)row * H + h) * HD;
                double sc[16], mx = -1e30, sum = 0;
                for (int t = first; t <= pos; t++) {
                    double d = 0;
                    for (int j = 0; j < HD; j++) d += (double)qv[j] * keys[s][(t * KVH + kh) * HD + j];
                    sc[t] = d * scale;
                    if (sc[t] > mx) mx = sc[t];
                }
                for (int t = first; t <= pos; t++) sum += (sc[t] = exp(sc[t] - mx));
                for (int j = 0; j < HD; j++) {
                    double acc = 0;
                    for (int t = first; t <= pos; t++) acc += sc[t] / sum * vals[s][(t * KVH + kh) * HD + j];
                    ref[((size_t)row * H + h) * HD + j] = acc;
                }
            }
        }
    assert_close(out, ref, (size_t)total_q * H * HD, 1e-5, "attention");
    for (int s = 0; s < NSEQ; s++) free(keys[s]), free(vals[s]);
    free(kpool), free(vpool), free(q), free(out), free(ref);
}

static void test_paged_attention(void **state) {
    (void)state;
    check_paged_attention(0);
    check_paged_attention(3);
}

/* The LoRA op against a naive y += scale·(x·Aᵀ)·B: two targets sharing x (as q and k
 * do), f32 and bf16 weights, segments of different ranks (one wider than a shrink
 * tile), a multi-row (prefill) segment, one-row (decode) segments, rows left alone,
 * and sizes off the vector width. Then batch invariance: each row of the multi-row
 * segment computed as a one-row segment of its own gives bitwise the same y. */
enum { L_ROWS = 10, L_IN = 37, L_SEGS = 4, L_TARGETS = 2 };

typedef struct lora_case {
    int out[L_TARGETS];
    lq_lora_seg segs[L_TARGETS][L_SEGS];
    float *A32[L_TARGETS][L_SEGS], *B32[L_TARGETS][L_SEGS]; /* the weights as the reference sees them */
    void *A[L_TARGETS][L_SEGS], *Bt[L_TARGETS][L_SEGS];      /* as the op gets them */
} lora_case;

static void *lora_weight(float **ref, size_t n, lq_dtype dt) {
    *ref = rand_vec(n);
    void *w = malloc(n * lq_dtype_size(dt));
    lq_convert(w, dt, *ref, LQ_DTYPE_F32, n);
    lq_convert(*ref, LQ_DTYPE_F32, w, dt, n); /* the reference sees the rounded weights */
    return w;
}

static void test_lora(void **state) {
    (void)state;
    /* rows 0-5: a prefill segment (a 4-row tile and a 2-row one); row 6: no adapter; rows 7, 8, 9: decode rows */
    int row0[L_SEGS] = {0, 7, 8, 9}, nrows[L_SEGS] = {6, 1, 1, 1};
    int ranks[L_TARGETS][L_SEGS] = {{8, 1, 20, 16}, {3, 0, 16, 9}}; /* rank 0: that adapter skips target 1 */
    lq_dtype dts[L_SEGS] = {LQ_DTYPE_BF16, LQ_DTYPE_F32, LQ_DTYPE_BF16, LQ_DTYPE_F32};
    lora_case c = {{70, 90}, {{{0}}}, {{0}}, {{0}}, {{0}}, {{0}}};
    float *x = rand_vec((size_t)L_ROWS * L_IN);
    float *y[L_TARGETS], *y0[L_TARGETS], *t[L_TARGETS];
    double *ref[L_TARGETS];
    lq_lora_target tg[L_TARGETS];
    for (int g = 0; g < L_TARGETS; g++) {
        int out = c.out[g];
        for (int s = 0; s < L_SEGS; s++) {
            int r = ranks[g][s];
            c.A[g][s] = lora_weight(&c.A32[g][s], (size_t)(r ? r : 1) * L_IN, dts[s]);
            c.Bt[g][s] = lora_weight(&c.B32[g][s], (size_t)(r ? r : 1) * out, dts[s]); /* [rank][out] */
            c.segs[g][s] = (lq_lora_seg){row0[s], nrows[s], c.A[g][s], c.Bt[g][s], dts[s], r, 0.5f + (float)s};
        }
        y0[g] = rand_vec((size_t)L_ROWS * out);
        y[g] = malloc((size_t)L_ROWS * out * sizeof(float));
        memcpy(y[g], y0[g], (size_t)L_ROWS * out * sizeof(float));
        t[g] = calloc((size_t)L_ROWS * 20, sizeof(float));
        tg[g] = (lq_lora_target){y[g], out, c.segs[g], L_SEGS, t[g], 20};
        ref[g] = malloc((size_t)L_ROWS * out * sizeof(double));
        for (int i = 0; i < L_ROWS * out; i++) ref[g][i] = y0[g][i];
        for (int s = 0; s < L_SEGS; s++)
            for (int i = row0[s]; i < row0[s] + nrows[s]; i++)
                for (int o = 0; o < out; o++) {
                    double acc = 0;
                    for (int k = 0; k < ranks[g][s]; k++) {
                        double ax = 0;
                        for (int j = 0; j < L_IN; j++) ax += (double)c.A32[g][s][k * L_IN + j] * x[i * L_IN + j];
                        acc += c.B32[g][s][k * out + o] * ax;
                    }
                    ref[g][i * out + o] += c.segs[g][s].scale * acc;
                }
    }
    B->lora(B, x, L_IN, tg, L_TARGETS);
    assert_close(y[0], ref[0], (size_t)L_ROWS * c.out[0], 1e-5, "lora, target 0");
    assert_close(y[1], ref[1], (size_t)L_ROWS * c.out[1], 1e-5, "lora, target 1");
    assert_memory_equal(y[0] + 6 * c.out[0], y0[0] + 6 * c.out[0], (size_t)c.out[0] * sizeof(float)); /* row 6 */

    /* Each prefill row alone, as a decode row of its own: bitwise the same. */
    for (int g = 0; g < L_TARGETS; g++) {
        float *solo = malloc((size_t)L_ROWS * c.out[g] * sizeof(float));
        memcpy(solo, y0[g], (size_t)L_ROWS * c.out[g] * sizeof(float));
        lq_lora_seg one[6];
        for (int i = 0; i < 6; i++) {
            one[i] = c.segs[g][0];
            one[i].row0 = i;
            one[i].n_rows = 1;
        }
        lq_lora_target tg1 = {solo, c.out[g], one, 6, t[g], 20};
        B->lora(B, x, L_IN, &tg1, 1);
        assert_memory_equal(solo, y[g], (size_t)6 * c.out[g] * sizeof(float));
        free(solo);
    }
    for (int g = 0; g < L_TARGETS; g++) {
        for (int s = 0; s < L_SEGS; s++) free(c.A[g][s]), free(c.Bt[g][s]), free(c.A32[g][s]), free(c.B32[g][s]);
        free(y[g]), free(y0[g]), free(t[g]), free(ref[g]);
    }
    free(x);
}

static void test_gather_rows(void **state) {
    (void)state;
    float src[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, dst[9];
    int32_t idx[3] = {3, 0, 3};
    B->gather_rows(B, dst, src, idx, 3, 3);
    float want[9] = {9, 10, 11, 0, 1, 2, 9, 10, 11};
    assert_memory_equal(dst, want, sizeof want);
}

int main(void) {
    random_inputs_seed(42);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rmsnorm_embed_add_silu),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_paged_attention),
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_gather_rows),
    };
    return cmocka_run_group_tests_name("cpu backend", tests, setup, teardown);
}
