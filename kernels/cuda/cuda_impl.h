/* cuda_impl.h — what the CUDA backend's files share: the backend's private state,
 * the staging of per-step host metadata, error checks and element loads.
 *
 * The backend is split by subsystem: cuda_backend.cu (memory, staging, GEMMs,
 * elementwise ops, the op table), attention.cu (the paged KV cache and attention),
 * lora.cu (the segmented LoRA kernels and their cuBLAS baseline). Everything runs
 * on one stream, in the order the model calls the ops; only download() and sync()
 * wait for it. */
#ifndef LORQ_CUDA_IMPL_H
#define LORQ_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
}

/* Unrecoverable device errors (a failed launch, an illegal address) leave the CUDA
 * context unusable, and the ops have no error return: say where and stop, rather
 * than serve wrong tokens. */
void lqc_fatal(const char *what, const char *detail, const char *file, int line);
#define LQC_CHECK(call)                                                                                                \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) lqc_fatal(#call, cudaGetErrorString(e_), __FILE__, __LINE__);                           \
    } while (0)
#define LQC_BLAS(call)                                                                                                 \
    do {                                                                                                               \
        cublasStatus_t s_ = (call);                                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) lqc_fatal(#call, cublasGetStatusString(s_), __FILE__, __LINE__);              \
    } while (0)
#define LQC_LAUNCHED() LQC_CHECK(cudaGetLastError())

/* A staged copy of host bytes remembered so that the same bytes staged again
 * (positions, slots and attention tables are identical for every layer of a step)
 * reuse the device copy instead of another transfer. */
typedef struct lqc_stage_memo {
    const void *host;
    size_t bytes, offset;
    unsigned generation;
} lqc_stage_memo;

enum { LQC_MEMO = 8 };

typedef struct cuda_impl {
    int device;
    int pooled; /* alloc/free are stream-ordered (cudaMallocAsync) */
    cudaStream_t stream;
    cublasHandle_t blas;
    cudaDeviceProp prop;
    /* Staging: per-op host metadata is packed into pinned memory at `used` and copied
     * asynchronously to the same offset of a device arena. Offsets only grow until the
     * stream is known idle (download, sync), so no copy still in flight is overwritten. */
    char *stage_host, *stage_dev;
    size_t stage_cap, stage_used;
    unsigned stage_generation;
    lqc_stage_memo memo[LQC_MEMO];
    int memo_next;
    /* Device scratch, grown on demand (each op waits for nothing: growth frees the old
     * buffer only after a stream sync). */
    void *narrow;   /* activations narrowed to bf16/f16 for tensor-core GEMMs */
    size_t narrow_cap;
    /* What narrow holds, while nothing can have changed it: q, k and v (and gate and
     * up) read the same input, narrowed once. NULL: nothing reusable. */
    const float *narrowed_src;
    size_t narrowed_count;
    int narrowed_dtype;
    void *narrow2;  /* the LoRA baseline's second narrowed operand */
    size_t narrow2_cap;
    float *gather;  /* gather_rows when dst overlaps src */
    size_t gather_cap;
    /* Host scratch for building per-op metadata (attention tasks, LoRA tasks). */
    char *host_buf;
    size_t host_buf_cap;
} cuda_impl;

static inline cuda_impl *lqc_impl(lq_backend *b) { return (cuda_impl *)b->impl; }

/* The state at the start of any op that may write device memory (every op but matmul,
 * which tracks its own output): the narrowed copy of an input may no longer match it. */
static inline cuda_impl *lqc_op(lq_backend *b) {
    cuda_impl *im = lqc_impl(b);
    im->narrowed_src = NULL;
    return im;
}

/* Copies bytes of host metadata to the device (asynchronously, in stream order) and
 * returns the device address of the copy. An op stages one blob: a second call may
 * restart the arena (after a stream sync) and reuse the first one's offset. */
void *lqc_stage(cuda_impl *im, const void *src, size_t bytes);
/* Marks the stream idle: staged offsets may be reused. */
void lqc_stage_reset(cuda_impl *im);
/* Device scratch of at least bytes in *buf (capacity *cap). */
void *lqc_scratch(cuda_impl *im, void **buf, size_t *cap, size_t bytes);
/* Host scratch of at least bytes (reused across calls). */
void *lqc_host_scratch(cuda_impl *im, size_t bytes);
/* Narrows n f32 values to dtype (bf16 or f16, round to nearest even) into dst. */
void lqc_narrow(cuda_impl *im, void *dst, lq_dtype dt, const float *src, size_t n);

/* attention.cu */
void lqc_kv_write(lq_backend *b, const lq_kv_pool *kv, int layer, const float *k, const float *v, const int32_t *slots,
                  int n);
void lqc_attention(lq_backend *b, float *out, const float *q, const lq_kv_pool *kv, int layer, const lq_attn_seq *seqs,
                   int n_seqs, int n_heads, float scale);
int lqc_attention_init(cuda_impl *im, char *why, size_t why_size);

/* lora.cu */
void lqc_lora(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets);
void lqc_lora_gemm_loop(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets);

/* bf16 and f16 widen exactly to f32; bf16 is the top half of an f32. */
__device__ __forceinline__ float lqc_load(const void *p, int dtype, size_t i) {
    if (dtype == LQ_DTYPE_BF16) return __uint_as_float((uint32_t)((const uint16_t *)p)[i] << 16);
    if (dtype == LQ_DTYPE_F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

__device__ __forceinline__ float lqc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float lqc_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static inline unsigned lqc_blocks(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

#endif
