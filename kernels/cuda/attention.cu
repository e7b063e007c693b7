/* attention.cu — the paged KV cache and attention over it, prefill and decode alike.
 *
 * Layout. Each layer's K and V pools are [n_blocks][n_kv_heads][block_size][head_dim]
 * f32: a token's key for one KV head is head_dim contiguous floats, so a block of
 * keys is one contiguous, coalesced read (the CPU backend stores K transposed for its
 * vector lanes; the layout is each backend's own business, only kv_write and
 * attention touch it).
 *
 * Work. A thread block serves one sequence, one KV head and up to WARPS (query,
 * head) pairs of that KV head's group: the query heads sharing a KV head (GQA) read
 * the same keys, so they share each tile. A decode token of Mistral (4 query heads
 * per KV head) is one block; a prefill chunk of q_len tokens is q_len·group / WARPS
 * blocks per KV head. One warp owns one pair.
 *
 * Flash-style online softmax. Keys are visited in tiles of KT = 32 that all warps
 * load together into shared memory (K padded to head_dim + 1 floats per key so the
 * 32 lanes, one key each, hit 32 different banks when they read down a column).
 * Lane k scores key k of the tile; the warp keeps a running maximum m, a running sum
 * l of exp(score - m) and the output accumulator (head_dim / 32 values per lane),
 * rescaling both by exp(m_old - m_new) when the maximum grows. No score matrix is
 * ever materialized: memory is O(tile) whatever the prompt length. Causality: a
 * query at position p sees keys 0..p; tiles run to the block's last query, and keys
 * past a warp's own position weigh zero.
 *
 * Limits: head_dim up to 256 (every Llama-family model; shared memory for the tile
 * grows with it). Long-context decode at small batch would gain from splitting the
 * keys across blocks (flash-decoding); not done. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda_impl.h"

enum { WARPS = 8, KT = 32, MAX_HEAD_DIM = 256, ACC = MAX_HEAD_DIM / 32 };

static size_t tile_smem(int head_dim) {
    return ((size_t)KT * (size_t)(head_dim + 1) + (size_t)KT * (size_t)head_dim + (size_t)WARPS * (size_t)head_dim) *
           sizeof(float);
}

/* ---------- kv_write ---------- */

__global__ void k_kv_write(float *kp, float *vp, const float *k, const float *v, const int32_t *slots, int n_kv_heads,
                           int head_dim, int block_size) {
    int i = blockIdx.x, width = n_kv_heads * head_dim;
    int block = slots[i] / block_size, o = slots[i] % block_size;
    for (int e = threadIdx.x; e < width; e += blockDim.x) {
        int h = e / head_dim, d = e % head_dim;
        size_t dst = (((size_t)block * n_kv_heads + h) * block_size + o) * head_dim + d;
        kp[dst] = k[(size_t)i * width + e];
        vp[dst] = v[(size_t)i * width + e];
    }
}

void lqc_kv_write(lq_backend *b, const lq_kv_pool *kv, int layer, const float *k, const float *v, const int32_t *slots,
                  int n) {
    if (n <= 0) return;
    cuda_impl *im = lqc_op(b);
    const int32_t *d_slots = (const int32_t *)lqc_stage(im, slots, (size_t)n * sizeof *slots);
    k_kv_write<<<n, 256, 0, im->stream>>>(kv->k[layer], kv->v[layer], k, v, d_slots, kv->n_kv_heads, kv->head_dim,
                                          kv->block_size);
    LQC_LAUNCHED();
}

/* ---------- attention ---------- */

/* Device metadata, one int array: per sequence {q_start, q_len, ctx_len, offset of
 * its block table, sliding window (0: none)}, the block tables, then per task
 * {sequence, KV head, first pair}. */
enum { SEQ_INTS = 5, TASK_INTS = 3 };

typedef struct attn_args {
    float *out;
    const float *q, *kp, *vp;
    const int *meta;
    int tasks_off, n_heads, n_kv_heads, head_dim, block_size;
    float scale;
} attn_args;

/* Loads keys k0 .. k0+KT-1 (those <= last) of one KV head into the shared tiles;
 * the rest of the tile is zero (weighed by zero anyway). */
__device__ void load_tile(float *sk, float *sv, const attn_args &a, const int *table, int g, int k0, int last) {
    int hd = a.head_dim;
    for (int e = threadIdx.x; e < KT * hd; e += blockDim.x) {
        int kk = e / hd, d = e % hd, key = k0 + kk;
        float kv = 0.0f, vv = 0.0f;
        if (key <= last) {
            size_t off = (((size_t)table[key / a.block_size] * a.n_kv_heads + g) * a.block_size + key % a.block_size) *
                             hd + d;
            kv = a.kp[off];
            vv = a.vp[off];
        }
        sk[kk * (hd + 1) + d] = kv;
        sv[kk * hd + d] = vv;
    }
}

__global__ void k_attention(attn_args a) {
    extern __shared__ float smem[];
    int hd = a.head_dim;
    float *sk = smem, *sv = sk + KT * (hd + 1), *sq = sv + KT * hd;
    const int *task = a.meta + a.tasks_off + (size_t)blockIdx.x * TASK_INTS;
    const int *seq = a.meta + (size_t)task[0] * SEQ_INTS;
    int g = task[1], pair0 = task[2];
    int q_start = seq[0], q_len = seq[1], ctx = seq[2], window = seq[4];
    const int *table = a.meta + seq[3];
    int group = a.n_heads / a.n_kv_heads, n_pairs = q_len * group;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int pair = pair0 + warp, active = pair < n_pairs; /* uniform within a warp */
    int qi = active ? pair / group : 0, head = g * group + (active ? pair % group : 0);
    int pos = ctx - q_len + qi;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0; /* this warp's first key */
    int last_pair = (pair0 + WARPS < n_pairs ? pair0 + WARPS : n_pairs) - 1;
    int last = ctx - q_len + last_pair / group; /* the furthest key any warp here needs */
    int first_pos = ctx - q_len + pair0 / group; /* the nearest query here, so the earliest key any warp needs */
    int first = window > 0 && first_pos - window + 1 > 0 ? first_pos - window + 1 : 0;
    size_t row = (size_t)(q_start + qi) * (size_t)a.n_heads * hd + (size_t)head * hd;
    float *myq = sq + warp * hd;
    if (active)
        for (int d = lane; d < hd; d += 32) myq[d] = a.q[row + d];
    float acc[ACC];
#pragma unroll
    for (int i = 0; i < ACC; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = first - first % KT; k0 <= last; k0 += KT) {
        __syncthreads(); /* every warp is done with the previous tile (and sq is written) */
        load_tile(sk, sv, a, table, g, k0, last);
        __syncthreads();
        if (!active) continue;
        int key = k0 + lane;
        float score = -INFINITY;
        int seen = key >= lo && key <= pos;
        if (seen) {
            float dot = 0.0f;
            const float *kr = sk + lane * (hd + 1);
            for (int d = 0; d < hd; d++) dot += myq[d] * kr[d];
            score = dot * a.scale;
        }
        float m_new = fmaxf(m, lqc_warp_max(score));
        if (m_new == -INFINITY) continue; /* no visible key in this tile yet (a window starting further on) */
        float p = seen ? expf(score - m_new) : 0.0f;
        float corr = expf(m - m_new); /* 0 on the first tile, where m is -inf */
        l = l * corr + lqc_warp_sum(p);
#pragma unroll
        for (int i = 0; i < ACC; i++) acc[i] *= corr;
        m = m_new;
        int visible = pos - k0 + 1 < KT ? pos - k0 + 1 : KT;
        for (int kk = 0; kk < visible; kk++) {
            float pk = __shfl_sync(0xffffffffu, p, kk);
            const float *vr = sv + kk * hd;
#pragma unroll
            for (int i = 0; i < ACC; i++) {
                int d = lane + 32 * i;
                if (d < hd) acc[i] += pk * vr[d];
            }
        }
    }
    if (!active) return;
    float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < ACC; i++) {
        int d = lane + 32 * i;
        if (d < hd) a.out[row + d] = acc[i] * inv;
    }
}

int lqc_attention_init(cuda_impl *im, char *why, size_t why_size) {
    size_t need = tile_smem(MAX_HEAD_DIM);
    if ((size_t)im->prop.sharedMemPerBlockOptin < need) {
        snprintf(why, why_size, "%s has %zu bytes of shared memory per block; attention needs %zu", im->prop.name,
                 (size_t)im->prop.sharedMemPerBlockOptin, need);
        return -1;
    }
    cudaError_t e = cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, why_size, "attention kernel: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

/* Packs sequences, block tables and tasks into one int array in host scratch; returns
 * its length and sets *tasks_off and *n_tasks. */
static size_t pack_attention(cuda_impl *im, int **out, const lq_attn_seq *seqs, int n_seqs, int group, int n_kv_heads,
                             int block_size, int *tasks_off, int *n_tasks) {
    size_t n_table = 0, nt = 0;
    for (int s = 0; s < n_seqs; s++) {
        n_table += (size_t)((seqs[s].ctx_len + block_size - 1) / block_size);
        nt += (size_t)n_kv_heads * (size_t)((seqs[s].q_len * group + WARPS - 1) / WARPS);
    }
    size_t total = (size_t)n_seqs * SEQ_INTS + n_table + nt * TASK_INTS;
    int *meta = (int *)lqc_host_scratch(im, total * sizeof(int));
    size_t t = (size_t)n_seqs * SEQ_INTS, k = t + n_table;
    *tasks_off = (int)k;
    for (int s = 0; s < n_seqs; s++) {
        int nb = (seqs[s].ctx_len + block_size - 1) / block_size;
        int *sm = meta + (size_t)s * SEQ_INTS;
        sm[0] = seqs[s].q_start, sm[1] = seqs[s].q_len, sm[2] = seqs[s].ctx_len, sm[3] = (int)t;
        sm[4] = seqs[s].window;
        memcpy(meta + t, seqs[s].block_table, (size_t)nb * sizeof(int));
        t += (size_t)nb;
        for (int g = 0; g < n_kv_heads; g++)
            for (int p = 0; p < seqs[s].q_len * group; p += WARPS) {
                meta[k++] = s;
                meta[k++] = g;
                meta[k++] = p;
            }
    }
    *out = meta;
    *n_tasks = (int)nt;
    return total;
}

void lqc_attention(lq_backend *b, float *out, const float *q, const lq_kv_pool *kv, int layer, const lq_attn_seq *seqs,
                   int n_seqs, int n_heads, float scale) {
    if (n_seqs <= 0) return;
    cuda_impl *im = lqc_op(b);
    if (kv->head_dim > MAX_HEAD_DIM || kv->head_dim <= 0) {
        char d[96];
        snprintf(d, sizeof d, "head_dim %d is not supported (1 to %d are)", kv->head_dim, MAX_HEAD_DIM);
        lqc_fatal("attention", d, __FILE__, __LINE__);
    }
    int *meta, tasks_off, n_tasks;
    size_t ints = pack_attention(im, &meta, seqs, n_seqs, n_heads / kv->n_kv_heads, kv->n_kv_heads, kv->block_size,
                                 &tasks_off, &n_tasks);
    if (n_tasks == 0) return;
    attn_args a;
    a.out = out;
    a.q = q;
    a.kp = kv->k[layer];
    a.vp = kv->v[layer];
    a.meta = (const int *)lqc_stage(im, meta, ints * sizeof(int));
    a.tasks_off = tasks_off;
    a.n_heads = n_heads;
    a.n_kv_heads = kv->n_kv_heads;
    a.head_dim = kv->head_dim;
    a.block_size = kv->block_size;
    a.scale = scale;
    k_attention<<<n_tasks, WARPS * 32, tile_smem(kv->head_dim), im->stream>>>(a);
    LQC_LAUNCHED();
}
