/* backend.h — the compute backend interface: every operation the model needs,
 * and nothing about which device runs it.
 *
 * The model (worker/model.c) is written against this table of functions the
 * way llama2.c's forward pass is written against plain loops; the CPU backend
 * (kernels/cpu/) implements it with CBLAS and threads, the CUDA backend
 * (kernels/cuda/) with cuBLAS and its own kernels. Nothing above kernels/
 * knows which one runs.
 *
 * Memory. Tensors the ops read and write (weights, activations, the KV pool)
 * live in backend memory, obtained from alloc() and filled with upload().
 * Small per-step metadata (token ids, positions, KV slots, per-sequence
 * attention ranges) is passed as host memory; a device backend copies what it
 * needs. Activations are always f32; weights may be f32, bf16 or f16 and are
 * widened to f32 inside the op.
 *
 * Shapes. A matrix W is row-major [rows][cols] as Hugging Face stores linear
 * layers ([out_features][in_features]); matmul computes y = x·Wᵀ for n rows of
 * x at once, so prefill chunks and decode tokens of many sequences go through
 * one call. */
#ifndef LORQ_BACKEND_H
#define LORQ_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"

typedef struct lq_mat {
    const void *data; /* backend memory, row-major [rows][cols] */
    lq_dtype dtype;
    int rows, cols;
} lq_mat;

/* The paged KV cache's storage: for each layer, K and V pools of n_blocks
 * blocks, each holding block_size tokens × n_kv_heads × head_dim f32 values
 * in a layout of the backend's choosing (only kv_write and attention touch
 * them). A token's slot is block * block_size + offset; which blocks a
 * sequence owns is the block manager's business (worker/kvcache.c). */
typedef struct lq_kv_pool {
    float **k, **v; /* per layer, backend memory */
    int n_layers, n_blocks, block_size, n_kv_heads, head_dim;
} lq_kv_pool;

/* One sequence's part of an attention call: its queries are rows
 * [q_start, q_start + q_len) of q, at positions ctx_len - q_len .. ctx_len - 1,
 * and its keys/values are the first ctx_len tokens in its blocks (this step's
 * included: kv_write runs first). Causal: query at position p sees keys 0..p,
 * or with a sliding window W (Mistral) only the last W of them, p-W+1..p. */
typedef struct lq_attn_seq {
    int q_start, q_len, ctx_len;
    const int32_t *block_table; /* host memory, ceil(ctx_len / block_size) entries */
    int window;                 /* 0: none */
} lq_attn_seq;

/* One segment of a LoRA op: rows [row0, row0 + n_rows) of the step share an
 * adapter whose module for the projection at hand is A [rank][dim_in] and B
 * [rank][dim_out], in backend memory, applied with the given scale. B is
 * stored transposed from PEFT's lora_B.weight ([dim_out][rank]) so that the
 * expand runs along contiguous output columns: a one-row expand is then rank
 * vector multiply-adds per block of outputs instead of dim_out horizontal
 * sums (the loader, worker/lora.c, transposes it once). A prefill chunk is one
 * segment of many rows (Punica's SGMV); decode tokens of different adapters
 * are segments of one row each (BGMV). */
typedef struct lq_lora_seg {
    int row0, n_rows;
    const void *A, *B;
    lq_dtype dtype; /* of A and B: LQ_DTYPE_F32 or LQ_DTYPE_BF16 (widened to f32 in the op) */
    int rank;
    float scale;
} lq_lora_seg;

/* One projection's share of a lora call: its output y [rows][dim_out], the
 * segments of rows its adapters adapt, and a scratch t [rows][ldt] in backend
 * memory (ldt >= every segment's rank) where the op may keep x·Aᵀ; rows are
 * indexed as in x and y. */
typedef struct lq_lora_target {
    float *y;
    int dim_out;
    const lq_lora_seg *segs;
    int n_segs;
    float *t;
    int ldt;
} lq_lora_target;

typedef struct lq_backend lq_backend;

struct lq_backend {
    const char *name;
    void *impl;
    /* 1 when backend memory is host memory, so mmap'd weights are used in place. */
    int host_memory;
    /* Batch invariance: a matmul over fewer than this many rows gives each row
     * the same bits whatever else is in it (0: no such promise). The scheduler
     * packs its passes below it so a job's tokens do not depend on its company. */
    int invariant_rows;

    void *(*alloc)(lq_backend *b, size_t bytes);
    void (*free)(lq_backend *b, void *p);
    void (*upload)(lq_backend *b, void *dst, const void *src, size_t bytes);
    void (*download)(lq_backend *b, void *dst, const void *src, size_t bytes);

    /* x[i] = table[ids[i]] for n ids (ids in host memory). */
    void (*embed)(lq_backend *b, float *x, const lq_mat *table, const int32_t *ids, int n);
    /* y = x·Wᵀ (+ bias): x [n][W.cols], y [n][W.rows]; bias f32 [W.rows] or NULL. */
    void (*matmul)(lq_backend *b, float *y, const float *x, int n, const lq_mat *w, const float *bias);
    /* y[i] = x[i] / rms(x[i]) * w, rows of length dim; y may equal x. */
    void (*rmsnorm)(lq_backend *b, float *y, const float *x, const lq_mat *w, int n, int dim, float eps);
    /* x += y over count elements. */
    void (*add)(lq_backend *b, float *x, const float *y, size_t count);
    /* Rotary embedding in place on x [n][n_heads][head_dim], rotating pairs
     * (j, j + head_dim/2) by pos[i] * inv_freq[j] (the rotate_half layout HF
     * Llama uses). pos and inv_freq are host memory. */
    void (*rope)(lq_backend *b, float *x, int n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq);
    /* out = silu(gate) * up over count elements; out may equal gate. */
    void (*silu_mul)(lq_backend *b, float *out, const float *gate, const float *up, size_t count);
    /* Stores n tokens' k and v rows [n][n_kv_heads*head_dim] of a layer at the given slots (host memory). */
    void (*kv_write)(lq_backend *b, const lq_kv_pool *kv, int layer, const float *k, const float *v,
                     const int32_t *slots, int n);
    /* out [rows][n_heads*head_dim] = softmax(q·Kᵀ·scale, causal)·V per sequence, with
     * grouped-query attention (n_heads / n_kv_heads query heads share a KV head). */
    void (*attention)(lq_backend *b, float *out, const float *q, const lq_kv_pool *kv, int layer,
                      const lq_attn_seq *seqs, int n_seqs, int n_heads, float scale);
    /* LoRA: y[row] += scale · (x[row]·Aᵀ)·B for every row of every segment of every
     * target (x rows of length dim_in; rows outside a target's segments are untouched).
     * Targets share x — q, k and v of a layer, or gate and up — so one call covers
     * them all; their y must not overlap. Each row's result depends only on the row
     * and its segment's weights, never on the other rows or segments of the call. */
    void (*lora)(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets);
    /* dst[i] = src[idx[i]] for rows of length dim (idx in host memory). */
    void (*gather_rows)(lq_backend *b, float *dst, const float *src, const int32_t *idx, int n, int dim);
    /* Optional (NULL: the model calls add, then rmsnorm): x += r, then y = rmsnorm(x) · w
     * over n rows of dim, in one pass over x (y must not overlap x or r). */
    void (*add_rmsnorm)(lq_backend *b, float *x, const float *r, float *y, const lq_mat *w, int n, int dim, float eps);
    /* Optional (NULL where absent): the same result as lora, computed with one pair of
     * library GEMMs per segment (cuBLAS on CUDA): the baseline the benchmark compares the
     * segmented kernels against. */
    void (*lora_gemm_loop)(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets);
    /* Optional (NULL where absent): dst = src, bytes of backend memory (the benchmark's
     * device-to-device bandwidth). */
    void (*copy)(lq_backend *b, void *dst, const void *src, size_t bytes);
    /* Waits for queued work (no-op on CPU). */
    void (*sync)(lq_backend *b);
    void (*destroy)(lq_backend *b);
};

/* The CPU backend: CBLAS (OpenBLAS) GEMMs, threads across cores for the rest.
 * n_threads <= 0 means one per online core. */
lq_backend *lq_backend_cpu_new(int n_threads, lq_error *err);

/* The CUDA backend (kernels/cuda/) on GPU `device`: cuBLAS GEMMs, our kernels for the
 * rest. NULL with err set when lorq was built without CUDA or no GPU can be used (no
 * driver, no device): never a crash. */
lq_backend *lq_backend_cuda_new(int device, lq_error *err);

/* GPUs the CUDA runtime can use; 0 without CUDA, a driver or a device, with the
 * reason in why (may be NULL). */
int lq_cuda_device_count(char *why, size_t why_size);

/* Device selection (kernels/select.c), shared by lorq and lorq-worker: name is "cpu",
 * "cuda" or "auto" (NULL or "" read LORQ_DEVICE, default auto). auto takes the GPU when
 * one is visible and otherwise says on stderr why it falls back to the CPU; an explicit
 * "cuda" that cannot be had is an error. n_threads is for the CPU backend. */
lq_backend *lq_backend_open(const char *name, int n_threads, lq_error *err);

#endif
