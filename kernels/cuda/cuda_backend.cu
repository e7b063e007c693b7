/* cuda_backend.cu — the backend interface on an NVIDIA GPU: memory, the staging of
 * per-step metadata, cuBLAS GEMMs, the elementwise kernels and the op table.
 *
 * Weights. They stay in the dtype of the file: bf16 and f16 checkpoints (every
 * current Llama/Mistral/Qwen release, and --load-format dummy) run on tensor cores
 * through cublasGemmEx with f32 accumulation, the activations being narrowed to the
 * weights' dtype (round to nearest even) just before each GEMM and the output kept
 * in f32; f32 checkpoints (the bundled SmolLM2 conversion) run as f32 GEMMs without
 * TF32, so the GPU reproduces the CPU backend's numbers to f32 rounding and the
 * parity tests can demand identical greedy tokens. Activations, the KV cache and
 * every elementwise op are f32, as on the CPU.
 *
 * Memory. alloc() is stream-ordered (cudaMallocAsync from the device's default pool,
 * which keeps what is freed): each adapter is one allocation (worker/lora.c), and
 * the registry's LRU eviction frees it in stream order, after the kernels queued
 * before it, without stalling the device. Not yet a paged pool shared with the KV
 * cache (S-LoRA's unified paging): an adapter is one contiguous allocation.
 *
 * Metadata. Token ids, positions, KV slots, block tables and LoRA segment lists
 * arrive as host memory with each op. They are packed into a pinned staging buffer
 * and copied asynchronously to a device arena at the same offset, so the host keeps
 * queueing work while the GPU runs; offsets are reused only once the stream is known
 * idle (after a download, which ends every step). Identical bytes staged again
 * within a step (positions for q and k, slots and tables for every layer) reuse the
 * earlier copy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"

static const size_t STAGE_INITIAL = (size_t)8 << 20;
enum { THREADS = 256 };

void lqc_fatal(const char *what, const char *detail, const char *file, int line) {
    fprintf(stderr, "lorq cuda: %s failed: %s (%s:%d)\n", what, detail, file, line);
    abort();
}

/* ---------- memory ---------- */

/* Stream-ordered allocation where the device has memory pools: an adapter evicted while
 * queued kernels still read it is released after them, without the device-wide sync
 * cudaFree implies, and freed memory stays in the pool for the next adapter or KV cache. */
static void *cu_alloc(lq_backend *b, size_t bytes) {
    cuda_impl *im = lqc_impl(b);
    void *p = NULL;
    size_t n = bytes ? bytes : 256;
    cudaError_t e = im->pooled ? cudaMallocAsync(&p, n, im->stream) : cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is an answer (NULL), not a sticky error */
        return NULL;
    }
    return p;
}

static void cu_free(lq_backend *b, void *p) {
    cuda_impl *im = lqc_op(b); /* the address may come back from alloc with other contents */
    if (!p) return;
    if (im->pooled) LQC_CHECK(cudaFreeAsync(p, im->stream));
    else LQC_CHECK(cudaFree(p));
}

/* Keeps freed memory in the device's default pool instead of returning it to the
 * driver at every sync: a server reallocates the same sizes all day. */
static void use_memory_pool(cuda_impl *im, int device) {
    int supported = 0;
    cudaMemPool_t pool;
    uint64_t keep = UINT64_MAX;
    if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess || !supported ||
        cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess ||
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    im->pooled = 1;
}

/* Weights and other uploads: the caller may free src at once, so wait for the copy. */
static void cu_upload(lq_backend *b, void *dst, const void *src, size_t bytes) {
    cuda_impl *im = lqc_op(b);
    LQC_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, im->stream));
    LQC_CHECK(cudaStreamSynchronize(im->stream));
}

/* The end of a step: its results to the host, and the stream idle again. */
static void cu_download(lq_backend *b, void *dst, const void *src, size_t bytes) {
    cuda_impl *im = lqc_impl(b);
    LQC_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, im->stream));
    LQC_CHECK(cudaStreamSynchronize(im->stream));
    lqc_stage_reset(im);
}

static void cu_copy(lq_backend *b, void *dst, const void *src, size_t bytes) {
    LQC_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, lqc_op(b)->stream));
}

static void cu_sync(lq_backend *b) {
    cuda_impl *im = lqc_impl(b);
    LQC_CHECK(cudaStreamSynchronize(im->stream));
    lqc_stage_reset(im);
}

void lqc_stage_reset(cuda_impl *im) {
    im->stage_used = 0;
    im->stage_generation++;
}

/* Room for bytes in the staging buffers: wait for the stream and start over when the
 * arena is full, grow it when one op needs more than it holds. */
static void stage_make_room(cuda_impl *im, size_t bytes) {
    if (im->stage_used + bytes <= im->stage_cap) return;
    LQC_CHECK(cudaStreamSynchronize(im->stream));
    lqc_stage_reset(im);
    if (bytes <= im->stage_cap) return;
    size_t cap = im->stage_cap ? im->stage_cap : STAGE_INITIAL;
    while (cap < bytes) cap *= 2;
    if (im->stage_host) LQC_CHECK(cudaFreeHost(im->stage_host));
    if (im->stage_dev) LQC_CHECK(cudaFree(im->stage_dev));
    LQC_CHECK(cudaMallocHost((void **)&im->stage_host, cap));
    LQC_CHECK(cudaMalloc((void **)&im->stage_dev, cap));
    im->stage_cap = cap;
}

static void *stage_lookup(cuda_impl *im, const void *src, size_t bytes) {
    for (int i = 0; i < LQC_MEMO; i++) {
        const lqc_stage_memo *m = &im->memo[i];
        if (m->host == src && m->bytes == bytes && m->generation == im->stage_generation &&
            memcmp(im->stage_host + m->offset, src, bytes) == 0)
            return im->stage_dev + m->offset;
    }
    return NULL;
}

void *lqc_stage(cuda_impl *im, const void *src, size_t bytes) {
    if (bytes == 0) return im->stage_dev;
    void *hit = stage_lookup(im, src, bytes);
    if (hit) return hit;
    size_t aligned = (bytes + 255) & ~(size_t)255; /* device structs and vectors stay aligned */
    stage_make_room(im, aligned);
    size_t off = im->stage_used;
    memcpy(im->stage_host + off, src, bytes);
    LQC_CHECK(cudaMemcpyAsync(im->stage_dev + off, im->stage_host + off, bytes, cudaMemcpyHostToDevice, im->stream));
    im->stage_used += aligned;
    im->memo[im->memo_next] = (lqc_stage_memo){src, bytes, off, im->stage_generation};
    im->memo_next = (im->memo_next + 1) % LQC_MEMO;
    return im->stage_dev + off;
}

void *lqc_scratch(cuda_impl *im, void **buf, size_t *cap, size_t bytes) {
    if (*cap >= bytes) return *buf;
    LQC_CHECK(cudaStreamSynchronize(im->stream)); /* queued kernels may still use the old buffer */
    if (*buf) LQC_CHECK(cudaFree(*buf));
    size_t want = bytes + bytes / 2;
    LQC_CHECK(cudaMalloc(buf, want));
    *cap = want;
    return *buf;
}

void *lqc_host_scratch(cuda_impl *im, size_t bytes) {
    if (im->host_buf_cap < bytes) {
        free(im->host_buf);
        im->host_buf_cap = bytes + bytes / 2 + 1024;
        im->host_buf = (char *)malloc(im->host_buf_cap);
        if (!im->host_buf) lqc_fatal("malloc", "out of host memory for op metadata", __FILE__, __LINE__);
    }
    return im->host_buf;
}

/* ---------- elementwise kernels ---------- */

__global__ void k_narrow_bf16(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void k_narrow_f16(__half *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

/* Grid-stride kernels take at most this many blocks: enough to fill any GPU. */
static unsigned grid_for(size_t n) {
    size_t g = (n + THREADS - 1) / THREADS;
    return (unsigned)(g < 4096 ? (g ? g : 1) : 4096);
}

void lqc_narrow(cuda_impl *im, void *dst, lq_dtype dt, const float *src, size_t n) {
    if (dt == LQ_DTYPE_BF16) k_narrow_bf16<<<grid_for(n), THREADS, 0, im->stream>>>((__nv_bfloat16 *)dst, src, n);
    else k_narrow_f16<<<grid_for(n), THREADS, 0, im->stream>>>((__half *)dst, src, n);
    LQC_LAUNCHED();
}

__global__ void k_embed(float *x, const void *table, int dtype, int cols, const int32_t *ids) {
    size_t row = (size_t)ids[blockIdx.x] * (size_t)cols;
    float *out = x + (size_t)blockIdx.x * (size_t)cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) out[j] = lqc_load(table, dtype, row + (size_t)j);
}

static void cu_embed(lq_backend *b, float *x, const lq_mat *table, const int32_t *ids, int n) {
    if (n <= 0) return;
    cuda_impl *im = lqc_op(b);
    const int32_t *d_ids = (const int32_t *)lqc_stage(im, ids, (size_t)n * sizeof *ids);
    k_embed<<<n, THREADS, 0, im->stream>>>(x, table->data, table->dtype, table->cols, d_ids);
    LQC_LAUNCHED();
}

/* The sum of v over the block (blockDim.x a multiple of 32, at most 1024), in every thread. */
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = lqc_warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < n_warps ? partial[lane] : 0.0f;
        s = lqc_warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

/* One block per row. Each thread writes only the elements it read, so y may be x. */
__global__ void k_rmsnorm(float *y, const float *x, const void *w, int wdtype, int dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * (size_t)dim;
    float *yr = y + (size_t)blockIdx.x * (size_t)dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
    float inv = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) yr[j] = xr[j] * inv * lqc_load(w, wdtype, (size_t)j);
}

/* x += r, then y = rmsnorm(x): the residual stream is read once for both. */
__global__ void k_add_rmsnorm(float *x, const float *r, float *y, const void *w, int wdtype, int dim, float eps) {
    float *xr = x + (size_t)blockIdx.x * (size_t)dim;
    const float *rr = r + (size_t)blockIdx.x * (size_t)dim;
    float *yr = y + (size_t)blockIdx.x * (size_t)dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        float v = xr[j] + rr[j];
        xr[j] = v;
        ss += v * v;
    }
    float inv = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) yr[j] = xr[j] * inv * lqc_load(w, wdtype, (size_t)j);
}

static void cu_rmsnorm(lq_backend *b, float *y, const float *x, const lq_mat *w, int n, int dim, float eps) {
    if (n <= 0) return;
    cuda_impl *im = lqc_op(b);
    k_rmsnorm<<<n, THREADS, 0, im->stream>>>(y, x, w->data, w->dtype, dim, eps);
    LQC_LAUNCHED();
}

static void cu_add_rmsnorm(lq_backend *b, float *x, const float *r, float *y, const lq_mat *w, int n, int dim,
                           float eps) {
    if (n <= 0) return;
    cuda_impl *im = lqc_op(b);
    k_add_rmsnorm<<<n, THREADS, 0, im->stream>>>(x, r, y, w->data, w->dtype, dim, eps);
    LQC_LAUNCHED();
}

__global__ void k_add(float *x, const float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

static void cu_add(lq_backend *b, float *x, const float *y, size_t count) {
    if (!count) return;
    cuda_impl *im = lqc_op(b);
    k_add<<<grid_for(count), THREADS, 0, im->stream>>>(x, y, count);
    LQC_LAUNCHED();
}

__global__ void k_silu_mul(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void cu_silu_mul(lq_backend *b, float *out, const float *gate, const float *up, size_t count) {
    if (!count) return;
    cuda_impl *im = lqc_op(b);
    k_silu_mul<<<grid_for(count), THREADS, 0, im->stream>>>(out, gate, up, count);
    LQC_LAUNCHED();
}

/* One block per (token, head); thread j rotates the pair (j, j + half). */
__global__ void k_rope(float *x, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq) {
    int token = blockIdx.x / n_heads, half = head_dim / 2;
    float *v = x + (size_t)blockIdx.x * (size_t)head_dim;
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float s, c;
        sincosf((float)pos[token] * inv_freq[j], &s, &c);
        float a = v[j], bb = v[j + half];
        v[j] = a * c - bb * s;
        v[j + half] = bb * c + a * s;
    }
}

static void cu_rope(lq_backend *b, float *x, int n, int n_heads, int head_dim, const int32_t *pos,
                    const float *inv_freq) {
    if (n <= 0 || n_heads <= 0) return;
    cuda_impl *im = lqc_op(b);
    /* One staged blob per op: a second staging call could restart the arena under the first. */
    size_t pos_bytes = (size_t)n * sizeof *pos, freq_bytes = (size_t)(head_dim / 2) * sizeof *inv_freq;
    char *blob = (char *)lqc_host_scratch(im, pos_bytes + freq_bytes);
    memcpy(blob, pos, pos_bytes);
    memcpy(blob + pos_bytes, inv_freq, freq_bytes);
    const char *d_blob = (const char *)lqc_stage(im, blob, pos_bytes + freq_bytes);
    const int32_t *d_pos = (const int32_t *)d_blob;
    const float *d_freq = (const float *)(d_blob + pos_bytes);
    int threads = head_dim / 2 < THREADS ? ((head_dim / 2 + 31) / 32) * 32 : THREADS;
    k_rope<<<(unsigned)n * (unsigned)n_heads, threads, 0, im->stream>>>(x, n_heads, head_dim, d_pos, d_freq);
    LQC_LAUNCHED();
}

__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx, int dim) {
    const float *s = src + (size_t)idx[blockIdx.x] * (size_t)dim;
    float *d = dst + (size_t)blockIdx.x * (size_t)dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) d[j] = s[j];
}

/* Rows are copied in parallel, so a gather within one buffer (the CPU backend allows
 * it) goes through scratch: no row is overwritten before it is read. */
static void cu_gather_rows(lq_backend *b, float *dst, const float *src, const int32_t *idx, int n, int dim) {
    if (n <= 0) return;
    cuda_impl *im = lqc_op(b);
    const int32_t *d_idx = (const int32_t *)lqc_stage(im, idx, (size_t)n * sizeof *idx);
    size_t bytes = (size_t)n * (size_t)dim * sizeof(float);
    int32_t hi = 0;
    for (int i = 0; i < n; i++) hi = idx[i] > hi ? idx[i] : hi;
    const float *src_end = src + (size_t)(hi + 1) * (size_t)dim;
    int overlap = (const float *)dst < src_end && src < (const float *)dst + (size_t)n * (size_t)dim;
    float *out = overlap ? (float *)lqc_scratch(im, (void **)&im->gather, &im->gather_cap, bytes) : dst;
    k_gather_rows<<<n, THREADS, 0, im->stream>>>(out, src, d_idx, dim);
    LQC_LAUNCHED();
    if (overlap) LQC_CHECK(cudaMemcpyAsync(dst, out, bytes, cudaMemcpyDeviceToDevice, im->stream));
}

/* ---------- matmul ---------- */

__global__ void k_add_bias(float *y, const float *bias, int rows, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += bias[i % (size_t)rows];
}

static cudaDataType_t cuda_type(lq_dtype t) {
    return t == LQ_DTYPE_BF16 ? CUDA_R_16BF : t == LQ_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* y [n][rows] = x [n][cols] · Wᵀ. cuBLAS is column-major: there y is a rows × n matrix
 * (ld rows), W row-major is Wᵀ (cols × rows, ld cols), hence op(A) = T on W, and x
 * row-major is xᵀ (cols × n, ld cols) taken as is. */
static void cu_matmul(lq_backend *b, float *y, const float *x, int n, const lq_mat *w, const float *bias) {
    if (n <= 0) return;
    cuda_impl *im = lqc_impl(b);
    const float one = 1.0f, zero = 0.0f;
    const void *xin = x;
    size_t count = (size_t)n * (size_t)w->cols;
    if (w->dtype != LQ_DTYPE_F32) {
        if (im->narrowed_src != x || im->narrowed_count != count || im->narrowed_dtype != (int)w->dtype) {
            lqc_narrow(im, lqc_scratch(im, &im->narrow, &im->narrow_cap, count * 2), w->dtype, x, count);
            im->narrowed_src = x;
            im->narrowed_count = count;
            im->narrowed_dtype = (int)w->dtype;
        }
        xin = im->narrow;
    }
    cudaDataType_t t = cuda_type(w->dtype);
    LQC_BLAS(cublasGemmEx(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, n, w->cols, &one, w->data, t, w->cols, xin, t,
                          w->cols, &zero, y, CUDA_R_32F, w->rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias) {
        size_t count = (size_t)n * (size_t)w->rows;
        k_add_bias<<<grid_for(count), THREADS, 0, im->stream>>>(y, bias, w->rows, count);
        LQC_LAUNCHED();
    }
    /* An output written over the narrowed input makes the narrowed copy stale. */
    size_t out = (size_t)n * (size_t)w->rows;
    if (im->narrowed_src && y < im->narrowed_src + im->narrowed_count && im->narrowed_src < y + out)
        im->narrowed_src = NULL;
}

/* ---------- lifecycle ---------- */

extern "C" int lq_cuda_device_count(char *why, size_t why_size) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && why_size) snprintf(why, why_size, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0 && why && why_size) snprintf(why, why_size, "the CUDA runtime sees no device");
    return n;
}

static void cu_destroy(lq_backend *b) {
    cuda_impl *im = lqc_impl(b);
    cudaStreamSynchronize(im->stream);
    if (im->blas) cublasDestroy(im->blas);
    cudaFreeHost(im->stage_host);
    cudaFree(im->stage_dev);
    cudaFree(im->narrow);
    cudaFree(im->narrow2);
    cudaFree(im->gather);
    cudaStreamDestroy(im->stream);
    free(im->host_buf);
    free(im);
    free(b);
}

/* Everything that can fail for want of a device, checked with error returns (the ops
 * themselves treat failures as fatal). */
static int open_device(cuda_impl *im, int device, lq_error *err) {
    char why[256] = "";
    int n = lq_cuda_device_count(why, sizeof why);
    if (n <= 0) return lq_fail(err, "--device cuda: no usable GPU (%s)", why);
    if (device < 0 || device >= n) return lq_fail(err, "--device cuda: GPU %d does not exist (%d visible)", device, n);
    cudaError_t e;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&im->prop, device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        (void)cudaGetLastError();
        return lq_fail(err, "--device cuda: GPU %d: %s", device, cudaGetErrorString(e));
    }
    if (im->prop.major < 8)
        return lq_fail(err, "--device cuda: %s is compute capability %d.%d; lorq's CUDA build targets 8.0 and newer",
                       im->prop.name, im->prop.major, im->prop.minor);
    cublasStatus_t s;
    if ((s = cublasCreate(&im->blas)) != CUBLAS_STATUS_SUCCESS || (s = cublasSetStream(im->blas, im->stream)) ||
        (s = cublasSetMathMode(im->blas, CUBLAS_DEFAULT_MATH)))
        return lq_fail(err, "--device cuda: cuBLAS: %s", cublasGetStatusString(s));
    if (cudaMallocHost((void **)&im->stage_host, STAGE_INITIAL) != cudaSuccess ||
        cudaMalloc((void **)&im->stage_dev, STAGE_INITIAL) != cudaSuccess) {
        (void)cudaGetLastError();
        return lq_fail(err, "--device cuda: out of memory for the staging buffers");
    }
    im->stage_cap = STAGE_INITIAL;
    if (lqc_attention_init(im, why, sizeof why) != 0) return lq_fail(err, "--device cuda: %s", why);
    use_memory_pool(im, device);
    im->device = device;
    return 0;
}

extern "C" lq_backend *lq_backend_cuda_new(int device, lq_error *err) {
    lq_backend *b = (lq_backend *)calloc(1, sizeof *b);
    cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        lq_fail(err, "cuda backend: out of memory");
        return NULL;
    }
    b->impl = im;
    if (open_device(im, device, err) != 0) {
        if (im->stream) cu_destroy(b);
        else free(im), free(b);
        return NULL;
    }
    b->name = "cuda";
    b->host_memory = 0;
    b->invariant_rows = 0; /* cuBLAS picks kernels by shape */
    b->alloc = cu_alloc;
    b->free = cu_free;
    b->upload = cu_upload;
    b->download = cu_download;
    b->embed = cu_embed;
    b->matmul = cu_matmul;
    b->rmsnorm = cu_rmsnorm;
    b->add = cu_add;
    b->rope = cu_rope;
    b->silu_mul = cu_silu_mul;
    b->kv_write = lqc_kv_write;
    b->attention = lqc_attention;
    b->lora = lqc_lora;
    b->gather_rows = cu_gather_rows;
    b->add_rmsnorm = cu_add_rmsnorm;
    b->lora_gemm_loop = lqc_lora_gemm_loop;
    b->copy = cu_copy;
    b->sync = cu_sync;
    b->destroy = cu_destroy;
    return b;
}
