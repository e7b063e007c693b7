/* cpu_backend.c — the backend interface on the CPU.
 *
 * Matmuls of a few rows (decode) go to our own vector kernel (gemm.c), which
 * streams each weight once per step and makes every row's result independent
 * of the batch it is in; matmuls of many rows (prefill) go to OpenBLAS sgemm. Everything else is plain
 * C loops split across the thread pool, rows or (sequence, head, query chunk)
 * being the unit of work. Backend memory is host memory. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "gemm.h"
#include "threads.h"

typedef struct cpu_impl {
    lq_pool *pool;
    float *scratch; /* widened chunk of a bf16/f16 weight for sgemm */
    size_t scratch_len;
    struct lora_task *lora_tasks; /* the LoRA op's task list, reused across calls */
    int lora_tasks_cap;
} cpu_impl;

static cpu_impl *impl_of(lq_backend *b) { return b->impl; }

/* ---------- memory ---------- */

/* Buffers of 2 MB and more (an adapter's weights, the KV pool) are aligned to 2 MB and
 * offered to the kernel as huge pages: they are streamed through every step, and with
 * 4 KB pages each 4 KB read would also cost a TLB miss. Only a request (madvise); the
 * memory is good either way. */
enum { HUGE_PAGE = 2 << 20 };

static void *cpu_alloc(lq_backend *b, size_t bytes) {
    (void)b;
    void *p = NULL;
    size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 64;
    if (posix_memalign(&p, align, bytes ? bytes : 64) != 0) return NULL;
    if (align == HUGE_PAGE) madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
    return p;
}

static void cpu_free(lq_backend *b, void *p) {
    (void)b;
    free(p);
}

static void cpu_copy(lq_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    memcpy(dst, src, bytes);
}

static void cpu_sync(lq_backend *b) { (void)b; }

/* ---------- element access ---------- */

static inline float load_elem(const void *base, lq_dtype t, size_t i) {
    switch (t) {
    case LQ_DTYPE_BF16: return lq_bf16_to_f32(((const uint16_t *)base)[i]);
    case LQ_DTYPE_F16: return lq_f16_to_f32(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
    }
}

/* Widens one row of a table into dst. */
static void widen_row(float *dst, const lq_mat *w, int row) {
    size_t off = (size_t)row * (size_t)w->cols;
    if (w->dtype == LQ_DTYPE_F32) {
        memcpy(dst, (const float *)w->data + off, (size_t)w->cols * sizeof(float));
        return;
    }
    const uint16_t *src = (const uint16_t *)w->data + off;
    if (w->dtype == LQ_DTYPE_BF16)
        for (int j = 0; j < w->cols; j++) dst[j] = lq_bf16_to_f32(src[j]);
    else
        for (int j = 0; j < w->cols; j++) dst[j] = lq_f16_to_f32(src[j]);
}

/* ---------- embedding, norms, elementwise ---------- */

static void cpu_embed(lq_backend *b, float *x, const lq_mat *table, const int32_t *ids, int n) {
    (void)b;
    for (int i = 0; i < n; i++) widen_row(x + (size_t)i * (size_t)table->cols, table, ids[i]);
}

typedef struct rms_ctx {
    float *y;
    const float *x;
    const lq_mat *w;
    int dim;
    float eps;
} rms_ctx;

static void rms_task(void *ctxp, int i, int thread) {
    (void)thread;
    rms_ctx *c = ctxp;
    const float *x = c->x + (size_t)i * (size_t)c->dim;
    float *y = c->y + (size_t)i * (size_t)c->dim;
    double ss = 0.0;
    for (int j = 0; j < c->dim; j++) ss += (double)x[j] * x[j];
    float inv = 1.0f / sqrtf((float)(ss / c->dim) + c->eps);
    for (int j = 0; j < c->dim; j++) y[j] = x[j] * inv * load_elem(c->w->data, c->w->dtype, (size_t)j);
}

static void cpu_rmsnorm(lq_backend *b, float *y, const float *x, const lq_mat *w, int n, int dim, float eps) {
    rms_ctx c = {y, x, w, dim, eps};
    lq_pool_run(impl_of(b)->pool, n, rms_task, &c);
}

static void cpu_add(lq_backend *b, float *x, const float *y, size_t count) {
    (void)b;
    for (size_t i = 0; i < count; i++) x[i] += y[i];
}

static void cpu_silu_mul(lq_backend *b, float *out, const float *gate, const float *up, size_t count) {
    (void)b;
    for (size_t i = 0; i < count; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void cpu_rope(lq_backend *b, float *x, int n, int n_heads, int head_dim, const int32_t *pos,
                     const float *inv_freq) {
    (void)b;
    int half = head_dim / 2;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < half; j++) {
            float angle = (float)pos[i] * inv_freq[j];
            float c = cosf(angle), s = sinf(angle);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)i * (size_t)n_heads + (size_t)h) * (size_t)head_dim;
                float a = v[j], bb = v[j + half];
                v[j] = a * c - bb * s;
                v[j + half] = bb * c + a * s;
            }
        }
    }
}

static void cpu_gather_rows(lq_backend *b, float *dst, const float *src, const int32_t *idx, int n, int dim) {
    (void)b;
    for (int i = 0; i < n; i++)
        memmove(dst + (size_t)i * (size_t)dim, src + (size_t)idx[i] * (size_t)dim, (size_t)dim * sizeof(float));
}

/* ---------- matmul ---------- */

static void add_bias(float *y, int n, int rows, const float *bias) {
    if (!bias) return;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < rows; r++) y[(size_t)i * (size_t)rows + (size_t)r] += bias[r];
}

/* Steps of at least this many rows go to OpenBLAS's sgemm, which packs and
 * blocks for the caches and wins on long prefill chunks. Everything smaller —
 * decode steps, and mixed steps of decodes and short chunks — runs our kernel,
 * whose results are bitwise independent of the batch; across the threshold a
 * row's result changes only by f32 rounding. */
enum { BLAS_MIN_ROWS = 128, BLAS_CHUNK_ROWS = 256 };

typedef struct widen_ctx {
    float *dst;
    const lq_mat *w;
    int r0;
} widen_ctx;

static void widen_task(void *ctxp, int t, int thread) {
    (void)thread;
    widen_ctx *c = ctxp;
    widen_row(c->dst + (size_t)t * (size_t)c->w->cols, c->w, c->r0 + t);
}

static void matmul_blas(lq_backend *b, float *y, const float *x, int n, const lq_mat *w) {
    if (w->dtype == LQ_DTYPE_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w->rows, w->cols, 1.0f, x, w->cols, w->data, w->cols,
                    0.0f, y, w->rows);
        return;
    }
    /* bf16/f16: widen a cache-sized chunk of rows, multiply it, next chunk. */
    cpu_impl *im = impl_of(b);
    size_t need = (size_t)BLAS_CHUNK_ROWS * (size_t)w->cols;
    if (im->scratch_len < need) {
        free(im->scratch);
        im->scratch = malloc(need * sizeof(float));
        im->scratch_len = need;
    }
    for (int r0 = 0; r0 < w->rows; r0 += BLAS_CHUNK_ROWS) {
        int rows = w->rows - r0 < BLAS_CHUNK_ROWS ? w->rows - r0 : BLAS_CHUNK_ROWS;
        widen_ctx wc = {im->scratch, w, r0};
        lq_pool_run(im->pool, rows, widen_task, &wc);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, w->cols, 1.0f, x, w->cols, im->scratch, w->cols,
                    0.0f, y + r0, w->rows);
    }
}

static void cpu_matmul(lq_backend *b, float *y, const float *x, int n, const lq_mat *w, const float *bias) {
    if (n <= 0) return;
    if (n >= BLAS_MIN_ROWS) matmul_blas(b, y, x, n, w);
    else lq_cpu_gemm(impl_of(b)->pool, y, w->rows, x, n, w);
    add_bias(y, n, w->rows, bias);
}

/* ---------- LoRA: segmented gather matmuls ----------
 *
 * One pool run per call covers every target and segment: the tasks are
 * (target, segment, block of up to LORA_TASK_ROWS rows), each doing the shrink
 * and then the expand of its rows, so x·Aᵀ stays in cache between the two and
 * q, k and v (or gate and up) cost one dispatch between them, not six. At
 * batch 32 with 32 distinct adapters that is 96 one-row tasks for q/k/v, which
 * the two threads take in turn while each streams its own adapter's weights;
 * with one shared adapter the 32-row segment still splits into tasks. Tasks
 * own disjoint rows of y and t, so no locking; a row's arithmetic is the row
 * kernels' (gemm.c), independent of how rows were grouped. */

enum { LORA_TASK_ROWS = 4 };

typedef struct lora_task {
    int target, seg, r0, nr; /* rows [r0, r0 + nr) of the segment */
} lora_task;

typedef struct lora_ctx {
    const float *x;
    int dim_in;
    const lq_lora_target *targets;
    const lora_task *tasks;
} lora_ctx;

static void lora_task_run(void *ctxp, int ti, int thread) {
    (void)thread;
    lora_ctx *c = ctxp;
    const lora_task *k = &c->tasks[ti];
    const lq_lora_target *tg = &c->targets[k->target];
    const lq_lora_seg *g = &tg->segs[k->seg];
    size_t row = (size_t)g->row0 + (size_t)k->r0;
    float *t = tg->t + row * (size_t)tg->ldt;
    size_t b_bytes = (size_t)g->rank * (size_t)tg->dim_out * lq_dtype_size(g->dtype);
    lq_cpu_prefetch_range next = {g->B, (const char *)g->B + b_bytes};
    lq_cpu_lora_shrink(t, tg->ldt, c->x + row * (size_t)c->dim_in, c->dim_in, k->nr, g->A, g->dtype, g->rank,
                       c->dim_in, &next);
    lq_cpu_lora_expand(tg->y + row * (size_t)tg->dim_out, tg->dim_out, t, tg->ldt, k->nr, g->B, g->dtype, g->rank,
                       tg->dim_out, g->scale);
}

static void cpu_lora(lq_backend *b, const float *x, int dim_in, const lq_lora_target *targets, int n_targets) {
    cpu_impl *im = impl_of(b);
    int n_tasks = 0;
    for (int i = 0; i < n_targets; i++)
        for (int s = 0; s < targets[i].n_segs; s++)
            if (targets[i].segs[s].rank > 0)
                n_tasks += (targets[i].segs[s].n_rows + LORA_TASK_ROWS - 1) / LORA_TASK_ROWS;
    if (n_tasks == 0) return;
    lora_task one;
    lora_ctx c = {x, dim_in, targets, &one};
    if (im->lora_tasks_cap < n_tasks) { /* grows to the largest step seen, then stays */
        lora_task *p = realloc(im->lora_tasks, (size_t)n_tasks * sizeof *p);
        if (p) {
            im->lora_tasks = p;
            im->lora_tasks_cap = n_tasks;
        }
    }
    /* Without room for the list (the op has no error path), run the same tasks one by one here. */
    int serial = im->lora_tasks_cap < n_tasks;
    lora_task *tasks = im->lora_tasks;
    int t = 0;
    for (int i = 0; i < n_targets; i++)
        for (int s = 0; s < targets[i].n_segs; s++) {
            const lq_lora_seg *g = &targets[i].segs[s];
            if (g->rank <= 0) continue;
            for (int r0 = 0; r0 < g->n_rows; r0 += LORA_TASK_ROWS) {
                lora_task k = {i, s, r0, g->n_rows - r0 < LORA_TASK_ROWS ? g->n_rows - r0 : LORA_TASK_ROWS};
                if (serial) {
                    one = k;
                    lora_task_run(&c, 0, 0);
                } else {
                    tasks[t++] = k;
                }
            }
        }
    if (serial) return;
    c.tasks = tasks;
    lq_pool_run(im->pool, n_tasks, lora_task_run, &c);
}

/* ---------- paged KV cache ----------
 *
 * Layout inside a block, per KV head: K is stored transposed, [head_dim][block_size],
 * so one query's scores against a whole block are a vector of block_size lanes built
 * with head_dim multiply-adds and no horizontal sums; V is [block_size][head_dim], so
 * the weighted sum runs along head_dim. Block b, KV head h starts at
 * (b * n_kv_heads + h) * head_dim * block_size in both pools. */

static size_t kv_block_head(const lq_kv_pool *kv, int block, int h) {
    return ((size_t)block * (size_t)kv->n_kv_heads + (size_t)h) * (size_t)kv->head_dim * (size_t)kv->block_size;
}

static void cpu_kv_write(lq_backend *b, const lq_kv_pool *kv, int layer, const float *k, const float *v,
                         const int32_t *slots, int n) {
    (void)b;
    int hd = kv->head_dim, bs = kv->block_size;
    for (int i = 0; i < n; i++) {
        int block = slots[i] / bs, o = slots[i] % bs;
        for (int h = 0; h < kv->n_kv_heads; h++) {
            const float *ki = k + ((size_t)i * kv->n_kv_heads + h) * hd, *vi = v + ((size_t)i * kv->n_kv_heads + h) * hd;
            float *kt = kv->k[layer] + kv_block_head(kv, block, h);
            for (int j = 0; j < hd; j++) kt[(size_t)j * bs + o] = ki[j];
            memcpy(kv->v[layer] + kv_block_head(kv, block, h) + (size_t)o * hd, vi, (size_t)hd * sizeof(float));
        }
    }
}

/* Attention work is split into (sequence, head, chunk of queries) tasks. */
enum { ATTN_Q_CHUNK = 16 };

typedef struct attn_task_ref {
    int seq, head, q0, q1;
} attn_task_ref;

typedef struct attn_ctx {
    float *out;
    const float *q;
    const lq_kv_pool *kv;
    int layer, n_heads;
    float scale;
    const lq_attn_seq *seqs;
    const attn_task_ref *tasks;
} attn_ctx;

static void attn_task(void *ctxp, int ti, int thread) {
    (void)thread;
    attn_ctx *c = ctxp;
    const attn_task_ref *t = &c->tasks[ti];
    const lq_attn_seq *s = &c->seqs[t->seq];
    const lq_kv_pool *kv = c->kv;
    int hd = kv->head_dim, bs = kv->block_size, kvh = t->head / (c->n_heads / kv->n_kv_heads);
    size_t qstride = (size_t)c->n_heads * (size_t)hd;
    float *scores = malloc(((size_t)s->ctx_len + (size_t)bs) * sizeof(float));
    float acc[hd];
    for (int qi = t->q0; qi < t->q1; qi++) {
        int pos = s->ctx_len - s->q_len + qi; /* this query's position: it sees keys first..pos */
        int first = s->window > 0 && pos - s->window + 1 > 0 ? pos - s->window + 1 : 0;
        const float *q = c->q + (size_t)(s->q_start + qi) * qstride + (size_t)t->head * (size_t)hd;
        int b0 = first / bs, n_blocks = pos / bs + 1;
        /* scores = q·Kᵀ·scale, a block of keys at a time (indexed by key position) */
        for (int bi = b0; bi < n_blocks; bi++)
            lq_cpu_scores(scores + (size_t)bi * bs, q,
                          c->kv->k[c->layer] + kv_block_head(kv, s->block_table[bi], kvh), hd, bs);
        float mx = -INFINITY;
        for (int k = first; k <= pos; k++) {
            scores[k] *= c->scale;
            if (scores[k] > mx) mx = scores[k];
        }
        float sum = 0.0f;
        for (int k = first; k <= pos; k++) {
            scores[k] = expf(scores[k] - mx);
            sum += scores[k];
        }
        float inv_sum = 1.0f / sum;
        for (int k = first; k <= pos; k++) scores[k] *= inv_sum;
        for (int k = b0 * bs; k < first; k++) scores[k] = 0.0f; /* before the window, in its first block */
        /* out = softmax · V, a block of values at a time */
        for (int j = 0; j < hd; j++) acc[j] = 0.0f;
        for (int bi = b0; bi < n_blocks; bi++) {
            int n = pos + 1 - bi * bs < bs ? pos + 1 - bi * bs : bs;
            lq_cpu_weighted_rows(acc, scores + (size_t)bi * bs,
                                 c->kv->v[c->layer] + kv_block_head(kv, s->block_table[bi], kvh), n, hd);
        }
        memcpy(c->out + (size_t)(s->q_start + qi) * qstride + (size_t)t->head * (size_t)hd, acc, sizeof acc);
    }
    free(scores);
}

static void cpu_attention(lq_backend *b, float *out, const float *q, const lq_kv_pool *kv, int layer,
                          const lq_attn_seq *seqs, int n_seqs, int n_heads, float scale) {
    int n_tasks = 0;
    for (int s = 0; s < n_seqs; s++) n_tasks += n_heads * ((seqs[s].q_len + ATTN_Q_CHUNK - 1) / ATTN_Q_CHUNK);
    attn_task_ref *tasks = malloc((size_t)(n_tasks ? n_tasks : 1) * sizeof *tasks);
    int t = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int h = 0; h < n_heads; h++)
            for (int q0 = 0; q0 < seqs[s].q_len; q0 += ATTN_Q_CHUNK) {
                int q1 = q0 + ATTN_Q_CHUNK < seqs[s].q_len ? q0 + ATTN_Q_CHUNK : seqs[s].q_len;
                tasks[t++] = (attn_task_ref){s, h, q0, q1};
            }
    attn_ctx c = {out, q, kv, layer, n_heads, scale, seqs, tasks};
    lq_pool_run(impl_of(b)->pool, n_tasks, attn_task, &c);
    free(tasks);
}

/* ---------- lifecycle ---------- */

static void cpu_destroy(lq_backend *b) {
    cpu_impl *im = impl_of(b);
    lq_pool_free(im->pool);
    free(im->scratch);
    free(im->lora_tasks);
    free(im);
    free(b);
}

lq_backend *lq_backend_cpu_new(int n_threads, lq_error *err) {
    lq_backend *b = calloc(1, sizeof *b);
    cpu_impl *im = calloc(1, sizeof *im);
    if (!b || !im || !(im->pool = lq_pool_new(n_threads))) {
        free(b);
        free(im);
        lq_fail(err, "cpu backend: out of memory");
        return NULL;
    }
    openblas_set_num_threads(lq_pool_size(im->pool));
    *b = (lq_backend){
        .name = "cpu",
        .impl = im,
        .host_memory = 1,
        .invariant_rows = BLAS_MIN_ROWS,
        .alloc = cpu_alloc,
        .free = cpu_free,
        .upload = cpu_copy,
        .download = cpu_copy,
        .embed = cpu_embed,
        .matmul = cpu_matmul,
        .rmsnorm = cpu_rmsnorm,
        .add = cpu_add,
        .rope = cpu_rope,
        .silu_mul = cpu_silu_mul,
        .kv_write = cpu_kv_write,
        .attention = cpu_attention,
        .lora = cpu_lora,
        .gather_rows = cpu_gather_rows,
        .sync = cpu_sync,
        .destroy = cpu_destroy,
    };
    return b;
}
