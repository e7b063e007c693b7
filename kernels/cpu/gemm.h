/* gemm.h — the CPU matmul kernel: y = x·Wᵀ for f32 activations and f32, bf16
 * or f16 weights, threaded over blocks of W's rows. */
#ifndef LORQ_CPU_GEMM_H
#define LORQ_CPU_GEMM_H

#include "backend.h"
#include "threads.h"

/* y [n][w->rows] (row stride ldy) = x [n][w->cols] · Wᵀ. */
void lq_cpu_gemm(lq_pool *pool, float *y, int ldy, const float *x, int n, const lq_mat *w);

/* Vector dot product and y += alpha·x, for attention. */
float lq_cpu_dot(const float *a, const float *b, int n);
void lq_cpu_axpy(float *y, float alpha, const float *x, int n);

/* Which vector kernel this CPU runs ("avx512", "avx2", "generic"). */
const char *lq_cpu_gemm_isa(void);

#endif
