/* lora.cu — multi-LoRA on the GPU: segmented shrink and expand (Punica's SGMV for
 * segments of many rows, BGMV for one row per adapter), and a baseline of one
 * cuBLAS GEMM pair per segment for the benchmark to beat.
 *
 * One lora() call covers every target (q, k, v of a layer share x) and every
 * segment with two launches: all shrinks, then all expands (the expand needs the
 * whole of x·Aᵀ, and a second launch is the cheapest grid-wide barrier). The host
 * flattens the call into tasks, each carrying everything its block needs (weights,
 * rank, scale, rows, output), so segments of different ranks and dtypes share a
 * launch and no block looks anything up.
 *
 *   shrink task  (segment, up to ROWS rows, RANKS_PER_TASK ranks from k0): warp w
 *                computes t[row][k0 + w] = x[row]·A[k0 + w] for the task's rows,
 *                lanes striding along dim_in (8 bf16 at a time when rows allow),
 *                then a shuffle reduction. A's row is read once per task, for all
 *                its rows: a decode row (BGMV) reads its adapter once, a prefill
 *                chunk (SGMV) once per ROWS rows, from L2 after the first.
 *   expand task  (segment, up to ROWS rows, COLS columns from c0): thread j owns
 *                output column c0 + j and adds scale·Σ_k t[row][k]·B[k][col], B
 *                being stored [rank][dim_out] so consecutive threads read
 *                consecutive bytes of B; t is read by all threads of a warp at once
 *                (a broadcast).
 *
 * Rows of a task never belong to two segments and (task, column) pairs never
 * overlap, so no atomics; a row's sums run in the same order whichever task
 * position or segment length it has, so its LoRA term does not depend on the rest
 * of the batch. Ranks need not be multiples of anything: warps past the rank idle,
 * tails of dim_in and dim_out are bounds-checked. */
#include <stdio.h>
#include <string.h>

#include "cuda_impl.h"

enum { ROWS = 4, RANKS_PER_TASK = 8, COLS = 256 };

typedef struct lora_task {
    const void *A, *B;
    float *y, *t;
    int row0, n_rows, rank, dtype, ldt, dim_out, first; /* first: k0 (shrink) or c0 (expand) */
    float scale;
} lora_task;

/* ---------- kernels ---------- */

/* Eight bf16 values of A (16 bytes) times eight f32 of each row of x. */
__device__ __forceinline__ void shrink_bf16x8(float acc[ROWS], const uint16_t *a, const float *x, size_t ldx, int j,
                                              int n_rows) {
    uint4 raw = *(const uint4 *)(a + j);
    float w[8];
    const uint32_t r[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        w[2 * i] = __uint_as_float(r[i] << 16);
        w[2 * i + 1] = __uint_as_float(r[i] & 0xffff0000u);
    }
#pragma unroll
    for (int rr = 0; rr < ROWS; rr++) {
        if (rr >= n_rows) break;
        const float4 *xv = (const float4 *)(x + (size_t)rr * ldx + j);
        float4 x0 = xv[0], x1 = xv[1];
        acc[rr] += w[0] * x0.x + w[1] * x0.y + w[2] * x0.z + w[3] * x0.w + w[4] * x1.x + w[5] * x1.y + w[6] * x1.z +
                   w[7] * x1.w;
    }
}

__global__ void k_lora_shrink(const float *x, int dim_in, const lora_task *tasks) {
    const lora_task tk = tasks[blockIdx.x];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, k = tk.first + warp;
    if (k >= tk.rank) return; /* no barriers below: idle warps may leave */
    const float *xr = x + (size_t)tk.row0 * dim_in;
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;
    /* Vector loads when every row of A and x starts 16-byte aligned: bf16 rows of a multiple
     * of 8 in a 16-byte aligned matrix (the loader aligns each to 64), and x likewise. */
    if (tk.dtype == LQ_DTYPE_BF16 && dim_in % 8 == 0 && (uintptr_t)tk.A % 16 == 0 && (uintptr_t)x % 16 == 0) {
        const uint16_t *a = (const uint16_t *)tk.A + (size_t)k * dim_in;
        for (int j = lane * 8; j < dim_in; j += 32 * 8) shrink_bf16x8(acc, a, xr, (size_t)dim_in, j, tk.n_rows);
    } else {
        for (int j = lane; j < dim_in; j += 32) {
            float a = lqc_load(tk.A, tk.dtype, (size_t)k * dim_in + j);
#pragma unroll
            for (int r = 0; r < ROWS; r++)
                if (r < tk.n_rows) acc[r] += a * xr[(size_t)r * dim_in + j];
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r] = lqc_warp_sum(acc[r]);
    if (lane == 0)
        for (int r = 0; r < tk.n_rows; r++) tk.t[(size_t)(tk.row0 + r) * tk.ldt + k] = acc[r];
}

__global__ void k_lora_expand(const lora_task *tasks) {
    const lora_task tk = tasks[blockIdx.x];
    int col = tk.first + threadIdx.x;
    if (col >= tk.dim_out) return;
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;
    const float *t = tk.t + (size_t)tk.row0 * tk.ldt;
    for (int k = 0; k < tk.rank; k++) {
        float bv = lqc_load(tk.B, tk.dtype, (size_t)k * tk.dim_out + col);
#pragma unroll
        for (int r = 0; r < ROWS; r++)
            if (r < tk.n_rows) acc[r] += t[(size_t)r * tk.ldt + k] * bv;
    }
    for (int r = 0; r < tk.n_rows; r++) tk.y[(size_t)(tk.row0 + r) * tk.dim_out + col] += tk.scale * acc[r];
}

/* ---------- the segmented op ---------- */

static size_t count_tasks(const lq_lora_target *targets, int n_targets, size_t *n_expand) {
    size_t ns = 0, ne = 0;
    for (int i = 0; i < n_targets; i++)
        for (int s = 0; s < targets[i].n_segs; s++) {
            const lq_lora_seg *g = &targets[i].segs[s];
            if (g->rank <= 0 || g->n_rows <= 0) continue;
            size_t row_tiles = (size_t)((g->n_rows + ROWS - 1) / ROWS);
            ns += row_tiles * (size_t)((g->rank + RANKS_PER_TASK - 1) / RANKS_PER_TASK);
            ne += row_tiles * (size_t)((targets[i].dim_out + COLS - 1) / COLS);
        }
    *n_expand = ne;
    return ns;
}

/* Shrink tasks, then expand tasks, in one host array. */
static void fill_tasks(lora_task *tasks, size_t n_shrink, const lq_lora_target *targets, int n_targets) {
    size_t is = 0, ie = n_shrink;
    for (int i = 0; i < n_targets; i++) {
        const lq_lora_target *tg = &targets[i];
        for (int s = 0; s < tg->n_segs; s++) {
            const lq_lora_seg *g = &tg->segs[s];
            if (g->rank <= 0 || g->n_rows <= 0) continue;
            for (int r0 = 0; r0 < g->n_rows; r0 += ROWS) {
                lora_task base = {g->A, g->B, tg->y, tg->t, g->row0 + r0, g->n_rows - r0 < ROWS ? g->n_rows - r0 : ROWS,
                                  g->rank, (int)g->dtype, tg->ldt, tg->dim_out, 0, g->scale};
                for (int k0 = 0; k0 < g->rank; k0 += RANKS_PER_TASK) {
                    tasks[is] = base;
                    tasks[is++].first = k0;
                }
                for (int c0 = 0; c0 < tg->dim_out; c0 += COLS) {
                    tasks[ie] = base;
                    tasks[ie++].first = c0;
                }
            }
        }
    }
}

void lqc_lora(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets) {
    cuda_impl *im = lqc_op(b);
    size_t n_expand, n_shrink = count_tasks(targets, n_targets, &n_expand);
    if (n_shrink == 0) return;
    size_t bytes = (n_shrink + n_expand) * sizeof(lora_task);
    lora_task *host = (lora_task *)lqc_host_scratch(im, bytes);
    fill_tasks(host, n_shrink, targets, n_targets);
    const lora_task *dev = (const lora_task *)lqc_stage(im, host, bytes);
    k_lora_shrink<<<(unsigned)n_shrink, RANKS_PER_TASK * 32, 0, im->stream>>>(x, dim_in, dev);
    LQC_LAUNCHED();
    k_lora_expand<<<(unsigned)n_expand, COLS, 0, im->stream>>>(dev + n_shrink);
    LQC_LAUNCHED();
}

/* ---------- the baseline: one cuBLAS GEMM pair per segment ----------
 *
 * What a server without segmented kernels does: for each adapter's rows,
 * t = x·Aᵀ, then y += scale·t·B, each a library GEMM (bf16 operands narrowed first,
 * as the base GEMMs do). Column-major views as in cu_matmul: t (rank × n, ld ldt) =
 * op_T(A as dim_in × rank) · x (dim_in × n); y (dim_out × n, ld dim_out) +=
 * B (as dim_out × rank, ld dim_out) · t (rank × n). */
void lqc_lora_gemm_loop(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets) {
    cuda_impl *im = lqc_op(b);
    const float one = 1.0f, zero = 0.0f;
    int rows = 0, ldt = 0;
    for (int i = 0; i < n_targets; i++) {
        ldt = targets[i].ldt > ldt ? targets[i].ldt : ldt;
        for (int s = 0; s < targets[i].n_segs; s++) {
            int end = targets[i].segs[s].row0 + targets[i].segs[s].n_rows;
            rows = end > rows ? end : rows;
        }
    }
    if (rows == 0) return;
    void *xn = lqc_scratch(im, &im->narrow, &im->narrow_cap, (size_t)rows * dim_in * 2);
    void *tn = lqc_scratch(im, &im->narrow2, &im->narrow2_cap, (size_t)rows * ldt * 2);
    lq_dtype narrowed = LQ_DTYPE_F32;
    for (int i = 0; i < n_targets; i++) {
        const lq_lora_target *tg = &targets[i];
        for (int s = 0; s < tg->n_segs; s++) {
            const lq_lora_seg *g = &tg->segs[s];
            if (g->rank <= 0 || g->n_rows <= 0) continue;
            cudaDataType_t ty = g->dtype == LQ_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
            const void *xs = x + (size_t)g->row0 * dim_in;
            float *t = tg->t + (size_t)g->row0 * tg->ldt;
            const void *ts = t;
            if (g->dtype == LQ_DTYPE_BF16 && narrowed != LQ_DTYPE_BF16) {
                lqc_narrow(im, xn, LQ_DTYPE_BF16, x, (size_t)rows * dim_in);
                narrowed = LQ_DTYPE_BF16;
            }
            if (g->dtype == LQ_DTYPE_BF16) xs = (const uint16_t *)xn + (size_t)g->row0 * dim_in;
            LQC_BLAS(cublasGemmEx(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, g->rank, g->n_rows, dim_in, &one, g->A, ty, dim_in,
                                  xs, ty, dim_in, &zero, t, CUDA_R_32F, tg->ldt, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
            if (g->dtype == LQ_DTYPE_BF16) {
                lqc_narrow(im, (uint16_t *)tn + (size_t)g->row0 * tg->ldt, LQ_DTYPE_BF16, t,
                           (size_t)g->n_rows * tg->ldt);
                ts = (const uint16_t *)tn + (size_t)g->row0 * tg->ldt;
            }
            LQC_BLAS(cublasGemmEx(im->blas, CUBLAS_OP_N, CUBLAS_OP_N, tg->dim_out, g->n_rows, g->rank, &g->scale, g->B,
                                  ty, tg->dim_out, ts, ty, tg->ldt, &one, tg->y + (size_t)g->row0 * tg->dim_out,
                                  CUDA_R_32F, tg->dim_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
}
