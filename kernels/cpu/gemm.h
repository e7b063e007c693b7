/* gemm.h — the CPU matmul kernel: y = x·Wᵀ for f32 activations and f32, bf16
 * or f16 weights, threaded over blocks of W's rows. */
#ifndef LORQ_CPU_GEMM_H
#define LORQ_CPU_GEMM_H

#include <stddef.h>

#include "backend.h"
#include "threads.h"

/* y [n][w->rows] (row stride ldy) = x [n][w->cols] · Wᵀ. */
void lq_cpu_gemm(lq_pool *pool, float *y, int ldy, const float *x, int n, const lq_mat *w);

/* One task's share, single-threaded: y[i][r0 + k] = x[i] · w[k] for k < nr, with x rows
 * of stride ldx and w pointing at nr contiguous f32 rows of length cols. Same arithmetic
 * as lq_cpu_gemm. */
void lq_cpu_gemm_rows(float *y, int ldy, const float *x, int ldx, int n, const float *w, int r0, int nr, int cols);

/* Bytes [p, end) to prefetch while a kernel runs; the kernel advances p. */
typedef struct lq_cpu_prefetch_range {
    const char *p, *end;
} lq_cpu_prefetch_range;

/* LoRA, single-threaded, for n rows that share an adapter module (dtype f32 or bf16):
 * shrink t[i][k] = x[i] · A[k] for k < rank (A [rank][cols]); expand y[i][o] += scale ·
 * Σ_k t[i][k] · B[k][o] for o < cols (B [rank][cols], the transpose of PEFT's lora_B).
 * A row's results are bitwise the same whatever n is. The shrink prefetches `next`
 * (may be NULL) as it goes: the B the expand reads after it. */
void lq_cpu_lora_shrink(float *t, int ldt, const float *x, int ldx, int n, const void *A, lq_dtype dtype, int rank,
                        int cols, lq_cpu_prefetch_range *next);
void lq_cpu_lora_expand(float *y, int ldy, const float *t, int ldt, int n, const void *B, lq_dtype dtype, int rank,
                        int cols, float scale);

/* Attention over one KV block: out[o] = q · Kt[:, o] for the block's bs keys (K stored
 * transposed, [hd][bs]); and acc += Σ_{o<n} p[o] · V[o] with V as [bs][hd]. */
void lq_cpu_scores(float *out, const float *q, const float *kt, int hd, int bs);
void lq_cpu_weighted_rows(float *acc, const float *p, const float *v, int n, int hd);

/* Sum of n floats read once with this CPU's widest loads: the benchmark's bandwidth probe. */
double lq_cpu_stream_sum(const float *p, size_t n);

/* Which vector kernel this CPU runs ("avx512", "avx2", "generic"). */
const char *lq_cpu_gemm_isa(void);

#endif
