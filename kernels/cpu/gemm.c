/* gemm.c — the CPU matmul kernel (see gemm.h).
 *
 * Why not sgemm for everything: a batch-1 decode step is bound by streaming
 * the weights, and BLAS libraries pay per-call costs (thread wake-ups,
 * packing) that matter when a step is 200 small GEMMs; and they choose
 * kernels by matrix size, so a row's result would depend on how many other
 * rows share its step. This kernel computes every (x row, W row) dot product
 * the same way whatever n is and wherever the pair falls in a block, so a
 * sequence's logits are bitwise the same alone or in any batch.
 *
 * Shape: tasks own blocks of W rows (W is read from memory once per step);
 * inside, a register tile of vector accumulators — 4 W rows × up to 4 x rows
 * — walks along the shared dimension. Tiles of every shape do the same
 * arithmetic per pair (lanes along j, a fixed fold, a scalar tail), and a
 * ragged W edge repeats its last row and drops the result, so where a pair
 * falls never changes its value. bf16/f16
 * weights are widened into a per-thread f32 scratch, 16 rows at a time, then
 * go through the same f32 tile. The vector width follows the CPU (AVX-512,
 * AVX2+FMA, or generic), chosen once at first use. The LoRA shrink and expand
 * row kernels live here too, built on the same vector types and fold. */
#include "gemm.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

enum { TILE_W = 4, MAX_TILE_X = 4, TASK_ROWS = 32, WIDEN_ROWS = 16 };

/* Unaligned vector types: weights and activations are not 32/64-byte aligned in general. */
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef float v4 __attribute__((vector_size(16)));

/* Horizontal sums in a fixed order: halves added pairwise (8+8, 4+4, 2+2, 1+1), the
 * same arithmetic whichever function folds, so every kernel agrees bit for bit. */
#define DEFINE_FOLD8(NAME, ATTR)                                                                                      \
    ATTR static inline float NAME(v8 a) {                                                                            \
        v4 h = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);                 \
        return (h[0] + h[2]) + (h[1] + h[3]);                                                                        \
    }
#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
DEFINE_FOLD8(fold8_avx512, AVX512)
DEFINE_FOLD8(fold8_avx2, AVX2)
DEFINE_FOLD8(fold8_generic, )

AVX512 static inline float fold16_avx512(v16 a) {
    v8 h = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
    return fold8_avx512(h);
}

/* One tile: out[a][b] = x row a · W row b, for TX x rows and TILE_W W rows (duplicates allowed).
 * Lanes accumulate along j, then fold in a fixed order, then the scalar tail: the same
 * arithmetic for every pair whatever the tile's shape. */
#define DEFINE_TILE(NAME, VEC, WIDTH, FOLD, TX, ATTR)                                                                       \
    ATTR static void NAME(const float *const *xr, const float *const *wr, int cols,                                 \
                          float out[MAX_TILE_X][TILE_W]) {                                                           \
        VEC acc[TX][TILE_W];                                                                                         \
        _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                         \
            _Pragma("GCC unroll 4") for (int b = 0; b < TILE_W; b++) acc[a][b] = (VEC){0};                           \
        int j = 0;                                                                                                   \
        for (; j + WIDTH <= cols; j += WIDTH) {                                                                      \
            VEC wv[TILE_W], xv[TX];                                                                                  \
            _Pragma("GCC unroll 4") for (int b = 0; b < TILE_W; b++) wv[b] = *(const VEC *)(wr[b] + j);              \
            _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++) xv[a] = *(const VEC *)(xr[a] + j);                  \
            _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                     \
                _Pragma("GCC unroll 4") for (int b = 0; b < TILE_W; b++) acc[a][b] += xv[a] * wv[b];                 \
        }                                                                                                            \
        _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                         \
            _Pragma("GCC unroll 4") for (int b = 0; b < TILE_W; b++) {                                               \
                float s = FOLD(acc[a][b]);                                                                           \
                for (int t = j; t < cols; t++) s += xr[a][t] * wr[b][t];                                             \
                out[a][b] = s;                                                                                       \
            }                                                                                                        \
    }

DEFINE_TILE(tile_avx512_x4, v16, 16, fold16_avx512, 4, AVX512)
DEFINE_TILE(tile_avx512_x2, v16, 16, fold16_avx512, 2, AVX512)
DEFINE_TILE(tile_avx512_x1, v16, 16, fold16_avx512, 1, AVX512)
DEFINE_TILE(tile_avx2_x2, v8, 8, fold8_avx2, 2, AVX2)
DEFINE_TILE(tile_avx2_x1, v8, 8, fold8_avx2, 1, AVX2)
DEFINE_TILE(tile_generic_x2, v8, 8, fold8_generic, 2, )
DEFINE_TILE(tile_generic_x1, v8, 8, fold8_generic, 1, )

/* Attention over one KV block: scores[o] = Σ_j q[j]·Kt[j][o] for the block's bs keys
 * (K stored transposed), and acc += Σ_o p[o]·V[o] for its first n values. Both run
 * along contiguous memory with no horizontal sums. */
#define DEFINE_ATTN_OPS(SUFFIX, VEC, WIDTH, ATTR)                                                                      \
    ATTR static void scores_##SUFFIX(float *out, const float *q, const float *kt, int hd, int bs) {                  \
        int o = 0;                                                                                                   \
        for (; o + WIDTH <= bs; o += WIDTH) {                                                                        \
            VEC acc = {0};                                                                                           \
            for (int j = 0; j < hd; j++) acc += q[j] * *(const VEC *)(kt + (size_t)j * bs + o);                      \
            *(VEC *)(out + o) = acc;                                                                                 \
        }                                                                                                            \
        for (; o < bs; o++) {                                                                                        \
            float acc = 0.0f;                                                                                        \
            for (int j = 0; j < hd; j++) acc += q[j] * kt[(size_t)j * bs + o];                                      \
            out[o] = acc;                                                                                            \
        }                                                                                                            \
    }                                                                                                                \
    ATTR static void weighted_rows_##SUFFIX(float *acc, const float *p, const float *v, int n, int hd) {             \
        int j = 0;                                                                                                   \
        /* Four vectors of the output stay in registers while the rows stream past. */                              \
        for (; j + 4 * WIDTH <= hd; j += 4 * WIDTH) {                                                                \
            VEC a0 = *(VEC *)(acc + j), a1 = *(VEC *)(acc + j + WIDTH);                                              \
            VEC a2 = *(VEC *)(acc + j + 2 * WIDTH), a3 = *(VEC *)(acc + j + 3 * WIDTH);                              \
            for (int o = 0; o < n; o++) {                                                                            \
                const float *row = v + (size_t)o * hd + j;                                                           \
                a0 += p[o] * *(const VEC *)row;                                                                      \
                a1 += p[o] * *(const VEC *)(row + WIDTH);                                                            \
                a2 += p[o] * *(const VEC *)(row + 2 * WIDTH);                                                        \
                a3 += p[o] * *(const VEC *)(row + 3 * WIDTH);                                                        \
            }                                                                                                        \
            *(VEC *)(acc + j) = a0, *(VEC *)(acc + j + WIDTH) = a1;                                                  \
            *(VEC *)(acc + j + 2 * WIDTH) = a2, *(VEC *)(acc + j + 3 * WIDTH) = a3;                                  \
        }                                                                                                            \
        for (; j + WIDTH <= hd; j += WIDTH) {                                                                        \
            VEC a = *(VEC *)(acc + j);                                                                               \
            for (int o = 0; o < n; o++) a += p[o] * *(const VEC *)(v + (size_t)o * hd + j);                          \
            *(VEC *)(acc + j) = a;                                                                                   \
        }                                                                                                            \
        for (; j < hd; j++)                                                                                          \
            for (int o = 0; o < n; o++) acc[j] += p[o] * v[(size_t)o * hd + j];                                      \
    }

/* Sum of n floats with four independent accumulators: a memory-bandwidth probe for the benchmark. */
#define DEFINE_STREAM_SUM(SUFFIX, VEC, WIDTH, FOLD, ATTR)                                                              \
    ATTR static double stream_sum_##SUFFIX(const float *p, size_t n) {                                               \
        VEC a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                                                  \
        size_t i = 0;                                                                                                \
        for (; i + 4 * WIDTH <= n; i += 4 * WIDTH) {                                                                 \
            a0 += *(const VEC *)(p + i);                                                                             \
            a1 += *(const VEC *)(p + i + WIDTH);                                                                     \
            a2 += *(const VEC *)(p + i + 2 * WIDTH);                                                                 \
            a3 += *(const VEC *)(p + i + 3 * WIDTH);                                                                 \
        }                                                                                                            \
        double s = FOLD((a0 + a1) + (a2 + a3));                                                                      \
        for (; i < n; i++) s += p[i];                                                                                \
        return s;                                                                                                    \
    }

DEFINE_STREAM_SUM(avx512, v16, 16, fold16_avx512, AVX512)
DEFINE_STREAM_SUM(avx2, v8, 8, fold8_avx2, AVX2)
DEFINE_STREAM_SUM(generic, v8, 8, fold8_generic, )

DEFINE_ATTN_OPS(avx512, v16, 16, AVX512)
DEFINE_ATTN_OPS(avx2, v8, 8, AVX2)
DEFINE_ATTN_OPS(generic, v8, 8, )

/* ---------- LoRA row kernels ----------
 *
 * Adapter weights are f32 or bf16; bf16 is widened in registers (a bf16 is the
 * top half of an f32, so widening is a zero-extend and a shift: exact), which
 * halves the bytes a decode row streams when every row has its own adapter.
 * As in the tiles above, every (row, output) pair gets the same arithmetic
 * whatever tile it falls in: shrink sums lanes along the input, folds in the
 * fixed order, adds the scalar tail; expand sums rank terms in order 0..r-1
 * per output column, then adds scale times that to y. */

/* Widening loads: WIDTH weights at p as f32 lanes (macros, so that they take the
 * target of the kernel they expand in). bf16 zero-extends each 16-bit value into a
 * 32-bit lane and shifts it up: one vpmovzxwd and one vpslld. */
typedef uint16_t v8h __attribute__((vector_size(16), aligned(2)));
typedef uint32_t v8u __attribute__((vector_size(32)));
#define ld_f32_avx512(p) (*(const v16 *)(p))
#define ld_f32_avx2(p) (*(const v8 *)(p))
#define ld_f32_generic(p) (*(const v8 *)(p))
#define ld_bf16_avx512(p) ((v16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define ld_bf16_avx2(p) ((v8)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define ld_bf16_generic(p) ((v8)(__builtin_convertvector(*(const v8h *)(p), v8u) << 16))

#define LD(SUFFIX, DT, p, j) ld_##DT##_##SUFFIX((p) + (j))
#define EL_f32(p, j) ((p)[j])
#define EL_bf16(p, j) lq_bf16_to_f32((p)[j])

enum { LORA_KT = 8 }; /* most A rows a shrink tile holds: 8 independent sums hide FMA latency at one x row */

/* Software prefetch. With many adapters in a step each decode row reads its own
 * adapter's weights from memory, in runs of one to three KB (a row of A or of B),
 * too short for the hardware prefetcher to get ahead of the loads; so the shrink
 * asks for A LORA_PF_A bytes ahead of where it reads and, a few lines per step,
 * for the B the expand will read next, and the expand asks for B LORA_PF_B bytes
 * ahead. Measured on one core of the 2-core machine, batch 32 with 32 adapters:
 * the LoRA part of a decode step read 7.4 GB/s without, 10.5 GB/s with. */
enum { LORA_PF_A = 512, LORA_PF_B = 256, LORA_PF_LINES = 4 };

/* Shrink for TX x rows: t[a][k] = x[a] · A[k] for k < rank, KT rows of A at a time (a ragged
 * edge repeats the last row and drops the result). */
#define DEFINE_LORA_SHRINK(NAME, SUFFIX, VEC, WIDTH, FOLD, TX, KT, WT, DT, ATTR)                                     \
    ATTR static void NAME(float *t, int ldt, const float *x, int ldx, const void *A, int rank, int cols,             \
                          lq_cpu_prefetch_range *next) {                                                             \
        for (int k0 = 0; k0 < rank; k0 += KT) {                                                                      \
            const WT *ar[KT];                                                                                        \
            _Pragma("GCC unroll 8") for (int b = 0; b < KT; b++)                                                     \
                ar[b] = (const WT *)A + (size_t)(k0 + b < rank ? k0 + b : rank - 1) * (size_t)cols;                  \
            VEC acc[TX][KT];                                                                                         \
            _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                     \
                _Pragma("GCC unroll 8") for (int b = 0; b < KT; b++) acc[a][b] = (VEC){0};                           \
            int j = 0;                                                                                               \
            for (; j + WIDTH <= cols; j += WIDTH) {                                                                  \
                VEC av[KT], xv[TX];                                                                                  \
                _Pragma("GCC unroll 8") for (int b = 0; b < KT; b++) {                                              \
                    av[b] = LD(SUFFIX, DT, ar[b], j);                                                                \
                    __builtin_prefetch((const char *)(ar[b] + j) + LORA_PF_A);                                       \
                }                                                                                                    \
                for (int q = 0; q < LORA_PF_LINES && next->p < next->end; q++, next->p += 64)                       \
                    __builtin_prefetch(next->p);                                                                     \
                _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++) xv[a] = *(const VEC *)(x + (size_t)a * ldx + j); \
                _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                 \
                    _Pragma("GCC unroll 8") for (int b = 0; b < KT; b++) acc[a][b] += xv[a] * av[b];                 \
            }                                                                                                        \
            for (int a = 0; a < TX; a++)                                                                             \
                for (int b = 0; b < KT && k0 + b < rank; b++) {                                                      \
                    float s = FOLD(acc[a][b]);                                                                       \
                    for (int c = j; c < cols; c++) s += x[(size_t)a * ldx + c] * EL_##DT(ar[b], c);                  \
                    t[(size_t)a * ldt + k0 + b] = s;                                                                 \
                }                                                                                                    \
        }                                                                                                            \
    }

/* Expand for TX rows: y[a][o] += scale · Σ_k t[a][k] · B[k][o], B [rank][cols]. Four vectors
 * of outputs per row at a time, so the rank-long sums run as independent chains. */
#define DEFINE_LORA_EXPAND(NAME, SUFFIX, VEC, WIDTH, TX, WT, DT, ATTR)                                               \
    ATTR static void NAME(float *y, int ldy, const float *t, int ldt, const void *Bv, int rank, int cols,            \
                          float scale) {                                                                             \
        const WT *B = Bv;                                                                                            \
        int o = 0;                                                                                                   \
        for (; o + 4 * WIDTH <= cols; o += 4 * WIDTH) {                                                              \
            VEC acc[TX][4];                                                                                          \
            _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                     \
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) acc[a][c] = (VEC){0};                            \
            for (int k = 0; k < rank; k++) {                                                                         \
                const WT *br = B + (size_t)k * cols + o;                                                             \
                VEC bv[4];                                                                                           \
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) bv[c] = LD(SUFFIX, DT, br, c * WIDTH);         \
                for (size_t off = 0; off < 4 * WIDTH * sizeof(WT); off += 64)                                        \
                    __builtin_prefetch((const char *)br + LORA_PF_B + off);                                          \
                _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++) {                                               \
                    float tk = t[(size_t)a * ldt + k];                                                               \
                    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) acc[a][c] += tk * bv[c];                     \
                }                                                                                                    \
            }                                                                                                        \
            _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++)                                                     \
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {                                                \
                    VEC *yp = (VEC *)(y + (size_t)a * ldy + o + c * WIDTH);                                          \
                    *yp += scale * acc[a][c];                                                                        \
                }                                                                                                    \
        }                                                                                                            \
        for (; o + WIDTH <= cols; o += WIDTH)                                                                        \
            _Pragma("GCC unroll 4") for (int a = 0; a < TX; a++) {                                                   \
                VEC acc = {0};                                                                                       \
                for (int k = 0; k < rank; k++)                                                                       \
                    acc += t[(size_t)a * ldt + k] * LD(SUFFIX, DT, B + (size_t)k * cols + o, 0);                   \
                VEC *yp = (VEC *)(y + (size_t)a * ldy + o);                                                          \
                *yp += scale * acc;                                                                                  \
            }                                                                                                        \
        for (; o < cols; o++)                                                                                        \
            for (int a = 0; a < TX; a++) {                                                                           \
                float acc = 0.0f;                                                                                    \
                for (int k = 0; k < rank; k++) acc += t[(size_t)a * ldt + k] * EL_##DT(B + (size_t)k * cols, o);     \
                y[(size_t)a * ldy + o] += scale * acc;                                                               \
            }                                                                                                        \
    }

#define DEFINE_LORA_DT(SUFFIX, VEC, WIDTH, FOLD, ATTR, WT, DT)                                                         \
    DEFINE_LORA_SHRINK(shrink_##SUFFIX##_##DT##_x2, SUFFIX, VEC, WIDTH, FOLD, 2, 4, WT, DT, ATTR)                     \
    DEFINE_LORA_SHRINK(shrink_##SUFFIX##_##DT##_x1, SUFFIX, VEC, WIDTH, FOLD, 1, LORA_KT, WT, DT, ATTR)               \
    DEFINE_LORA_EXPAND(expand_##SUFFIX##_##DT##_x2, SUFFIX, VEC, WIDTH, 2, WT, DT, ATTR)                              \
    DEFINE_LORA_EXPAND(expand_##SUFFIX##_##DT##_x1, SUFFIX, VEC, WIDTH, 1, WT, DT, ATTR)

#define DEFINE_LORA(SUFFIX, VEC, WIDTH, FOLD, ATTR)                                                                    \
    DEFINE_LORA_DT(SUFFIX, VEC, WIDTH, FOLD, ATTR, float, f32)                                                       \
    DEFINE_LORA_DT(SUFFIX, VEC, WIDTH, FOLD, ATTR, uint16_t, bf16)

DEFINE_LORA(avx512, v16, 16, fold16_avx512, AVX512)
/* Four-row tiles only where 32 vector registers hold their sums (as for the matmul). */
DEFINE_LORA_SHRINK(shrink_avx512_f32_x4, avx512, v16, 16, fold16_avx512, 4, 4, float, f32, AVX512)
DEFINE_LORA_SHRINK(shrink_avx512_bf16_x4, avx512, v16, 16, fold16_avx512, 4, 4, uint16_t, bf16, AVX512)
DEFINE_LORA_EXPAND(expand_avx512_f32_x4, avx512, v16, 16, 4, float, f32, AVX512)
DEFINE_LORA_EXPAND(expand_avx512_bf16_x4, avx512, v16, 16, 4, uint16_t, bf16, AVX512)
DEFINE_LORA(avx2, v8, 8, fold8_avx2, AVX2)
DEFINE_LORA(generic, v8, 8, fold8_generic, )

typedef void (*lora_shrink_fn)(float *, int, const float *, int, const void *, int, int, lq_cpu_prefetch_range *);
typedef void (*lora_expand_fn)(float *, int, const float *, int, const void *, int, int, float);

typedef void (*tile_fn)(const float *const *, const float *const *, int, float[MAX_TILE_X][TILE_W]);

/* tiles[k] handles k x rows at once (NULL: use a smaller one); widest first pays off in
 * prefill, where each W row loaded from cache meets up to four x rows. */
typedef struct tile_set {
    const char *isa;
    tile_fn tiles[MAX_TILE_X + 1];
    void (*scores)(float *, const float *, const float *, int, int);
    void (*weighted_rows)(float *, const float *, const float *, int, int);
    double (*stream_sum)(const float *, size_t);
    /* [0]: f32 weights, [1]: bf16; indexed by x rows per tile like tiles */
    lora_shrink_fn lora_shrink[2][MAX_TILE_X + 1];
    lora_expand_fn lora_expand[2][MAX_TILE_X + 1];
} tile_set;

static const tile_set *pick_tiles(void) {
    static const tile_set avx512 = {
        "avx512", {NULL, tile_avx512_x1, tile_avx512_x2, NULL, tile_avx512_x4}, scores_avx512, weighted_rows_avx512,
        stream_sum_avx512,
        {{NULL, shrink_avx512_f32_x1, shrink_avx512_f32_x2, NULL, shrink_avx512_f32_x4},
         {NULL, shrink_avx512_bf16_x1, shrink_avx512_bf16_x2, NULL, shrink_avx512_bf16_x4}},
        {{NULL, expand_avx512_f32_x1, expand_avx512_f32_x2, NULL, expand_avx512_f32_x4},
         {NULL, expand_avx512_bf16_x1, expand_avx512_bf16_x2, NULL, expand_avx512_bf16_x4}}};
    /* 16 vector registers: tiles of at most two x rows, as for the matmul. */
    static const tile_set avx2 = {
        "avx2", {NULL, tile_avx2_x1, tile_avx2_x2, NULL, NULL}, scores_avx2, weighted_rows_avx2, stream_sum_avx2,
        {{NULL, shrink_avx2_f32_x1, shrink_avx2_f32_x2, NULL, NULL}, {NULL, shrink_avx2_bf16_x1, shrink_avx2_bf16_x2, NULL, NULL}},
        {{NULL, expand_avx2_f32_x1, expand_avx2_f32_x2, NULL, NULL}, {NULL, expand_avx2_bf16_x1, expand_avx2_bf16_x2, NULL, NULL}}};
    static const tile_set generic = {
        "generic", {NULL, tile_generic_x1, tile_generic_x2, NULL, NULL}, scores_generic, weighted_rows_generic,
        stream_sum_generic,
        {{NULL, shrink_generic_f32_x1, shrink_generic_f32_x2, NULL, NULL},
         {NULL, shrink_generic_bf16_x1, shrink_generic_bf16_x2, NULL, NULL}},
        {{NULL, expand_generic_f32_x1, expand_generic_f32_x2, NULL, NULL},
         {NULL, expand_generic_bf16_x1, expand_generic_bf16_x2, NULL, NULL}}};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return &avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2;
    return &generic;
}

static const tile_set *tiles;

const char *lq_cpu_gemm_isa(void) {
    if (!tiles) tiles = pick_tiles();
    return tiles->isa;
}

void lq_cpu_scores(float *out, const float *q, const float *kt, int hd, int bs) {
    if (!tiles) tiles = pick_tiles();
    tiles->scores(out, q, kt, hd, bs);
}

double lq_cpu_stream_sum(const float *p, size_t n) {
    if (!tiles) tiles = pick_tiles();
    return tiles->stream_sum(p, n);
}

void lq_cpu_weighted_rows(float *acc, const float *p, const float *v, int n, int hd) {
    if (!tiles) tiles = pick_tiles();
    tiles->weighted_rows(acc, p, v, n, hd);
}

void lq_cpu_lora_shrink(float *t, int ldt, const float *x, int ldx, int n, const void *A, lq_dtype dtype, int rank,
                        int cols, lq_cpu_prefetch_range *next) {
    if (!tiles) tiles = pick_tiles();
    lq_cpu_prefetch_range none = {NULL, NULL};
    if (!next) next = &none;
    int d = dtype == LQ_DTYPE_BF16;
    for (int i0 = 0; i0 < n;) {
        int tx = n - i0 < MAX_TILE_X ? n - i0 : MAX_TILE_X;
        while (!tiles->lora_shrink[d][tx]) tx--;
        tiles->lora_shrink[d][tx](t + (size_t)i0 * ldt, ldt, x + (size_t)i0 * ldx, ldx, A, rank, cols, next);
        i0 += tx;
    }
}

void lq_cpu_lora_expand(float *y, int ldy, const float *t, int ldt, int n, const void *B, lq_dtype dtype, int rank,
                        int cols, float scale) {
    if (!tiles) tiles = pick_tiles();
    int d = dtype == LQ_DTYPE_BF16;
    for (int i0 = 0; i0 < n;) {
        int tx = n - i0 < MAX_TILE_X ? n - i0 : MAX_TILE_X;
        while (!tiles->lora_expand[d][tx]) tx--;
        tiles->lora_expand[d][tx](y + (size_t)i0 * ldy, ldy, t + (size_t)i0 * ldt, ldt, B, rank, cols, scale);
        i0 += tx;
    }
}

/* y[i][r0 .. r0+nr) for all n rows of x, from nr contiguous f32 rows of W at w. A tile of
 * W rows stays in L1 while every x row streams past it. */
void lq_cpu_gemm_rows(float *y, int ldy, const float *x, int ldx, int n, const float *w, int r0, int nr, int cols) {
    if (!tiles) tiles = pick_tiles();
    for (int b0 = 0; b0 < nr; b0 += TILE_W) {
        const float *wr[TILE_W];
        for (int b = 0; b < TILE_W; b++) wr[b] = w + (size_t)(b0 + b < nr ? b0 + b : nr - 1) * cols;
        for (int i0 = 0; i0 < n;) {
            int tx = n - i0 < MAX_TILE_X ? n - i0 : MAX_TILE_X;
            while (!tiles->tiles[tx]) tx--;
            const float *xr[MAX_TILE_X];
            for (int a = 0; a < tx; a++) xr[a] = x + (size_t)(i0 + a) * ldx;
            float out[MAX_TILE_X][TILE_W];
            tiles->tiles[tx](xr, wr, cols, out);
            for (int a = 0; a < tx; a++)
                for (int b = 0; b < TILE_W && b0 + b < nr; b++) y[(size_t)(i0 + a) * ldy + r0 + b0 + b] = out[a][b];
            i0 += tx;
        }
    }
}

typedef struct gemm_ctx {
    float *y;
    int ldy;
    const float *x;
    int n;
    const lq_mat *w;
    float **scratch; /* per thread, WIDEN_ROWS × cols, for bf16/f16 */
} gemm_ctx;

static void widen_rows(float *dst, const lq_mat *w, int r0, int nr) {
    size_t count = (size_t)nr * (size_t)w->cols, off = (size_t)r0 * (size_t)w->cols;
    const uint16_t *src = (const uint16_t *)w->data + off;
    if (w->dtype == LQ_DTYPE_BF16)
        for (size_t k = 0; k < count; k++) dst[k] = lq_bf16_to_f32(src[k]);
    else
        for (size_t k = 0; k < count; k++) dst[k] = lq_f16_to_f32(src[k]);
}

static void gemm_task(void *ctxp, int task, int thread) {
    gemm_ctx *c = ctxp;
    const lq_mat *w = c->w;
    int r0 = task * TASK_ROWS, r1 = r0 + TASK_ROWS < w->rows ? r0 + TASK_ROWS : w->rows;
    if (w->dtype == LQ_DTYPE_F32) {
        lq_cpu_gemm_rows(c->y, c->ldy, c->x, w->cols, c->n, (const float *)w->data + (size_t)r0 * w->cols, r0, r1 - r0,
                         w->cols);
        return;
    }
    for (int s = r0; s < r1; s += WIDEN_ROWS) {
        int nr = s + WIDEN_ROWS < r1 ? WIDEN_ROWS : r1 - s;
        widen_rows(c->scratch[thread], w, s, nr);
        lq_cpu_gemm_rows(c->y, c->ldy, c->x, w->cols, c->n, c->scratch[thread], s, nr, w->cols);
    }
}

void lq_cpu_gemm(lq_pool *pool, float *y, int ldy, const float *x, int n, const lq_mat *w) {
    if (n <= 0 || w->rows <= 0) return;
    if (!tiles) tiles = pick_tiles();
    int threads = lq_pool_size(pool);
    float *scratch[threads];
    memset(scratch, 0, sizeof scratch);
    if (w->dtype != LQ_DTYPE_F32)
        for (int t = 0; t < threads; t++) scratch[t] = malloc((size_t)WIDEN_ROWS * (size_t)w->cols * sizeof(float));
    gemm_ctx c = {y, ldy, x, n, w, scratch};
    lq_pool_run(pool, (w->rows + TASK_ROWS - 1) / TASK_ROWS, gemm_task, &c);
    for (int t = 0; t < threads; t++) free(scratch[t]);
}
