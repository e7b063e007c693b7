/* cmd_bench.c — `lorq bench`: engine throughput, as ratios to what the
 * machine allows, measured in the same run.
 *
 * On the CPU (the default; make bench-cpu):
 *
 *   memory bandwidth   a multi-threaded streaming read of a buffer far larger
 *                      than the caches, with the same vector loads as the
 *                      matmul kernel (best of several passes)
 *   decode bound       bandwidth / weight bytes read per token: the tokens/s a
 *                      batch-1 decode could reach if it did nothing but
 *                      stream the weights once per token
 *   prefill            tokens/s of one 512-token prompt
 *   decode             aggregate tokens/s at batch 1, 8 and 32 (each
 *                      sequence holding a 128-token context)
 *   LoRA decode        batch 32 with 1, 4 and 32 distinct adapters, taking
 *                      turns step by step with the batch-32 base so their
 *                      ratios hold
 *
 * On a GPU (--device cuda; make bench-gpu, usually with --load-format dummy on
 * a Mistral-7B-shaped config.json):
 *
 *   HBM bandwidth      device-to-device copy, bytes read + written per second
 *   decode             aggregate tokens/s at batch 1, 8, 32, 64 and 128, base
 *                      only and with 1, 8 and 32 distinct adapters (rank 16,
 *                      all seven projections by default), each with its
 *                      fraction of the roofline: the bytes a step must read
 *                      (weights, the adapters in use, the KV cache) over the
 *                      bandwidth, and the LoRA overhead against base
 *   SGMV / BGMV        one segmented lora call against a loop of one cuBLAS
 *                      GEMM pair per adapter, for decode (BGMV) and prefill
 *                      (SGMV) shapes
 *
 * Each timing is the median of several repetitions (decode: of 80 steps):
 * this machine is shared and noisy, so single runs mean little. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "cpu/gemm.h"
#include "kvcache.h"
#include "lora.h"
#include "model.h"
#include "progress.h"

enum { KV_BLOCK = 16, CONTEXT = 128, DECODE_STEPS = 16, REPS = 5, BW_PASSES = 10 };

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---------- streaming read bandwidth ---------- */

typedef struct bw_part {
    const float *p;
    size_t n;
    double sum;
} bw_part;

static void *bw_read(void *arg) {
    bw_part *part = arg;
    part->sum = lq_cpu_stream_sum(part->p, part->n);
    return NULL;
}

static double measure_bandwidth(int threads) {
    size_t bytes = (size_t)1 << 30, n = bytes / sizeof(float);
    float *buf = malloc(bytes);
    if (!buf) return 0.0;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    pthread_t tid[64];
    bw_part parts[64];
    if (threads > 64) threads = 64;
    double best = 0.0;
    for (int rep = 0; rep < BW_PASSES; rep++) {
        double t0 = lq_now();
        for (int t = 0; t < threads; t++) {
            parts[t] = (bw_part){buf + n / threads * t, n / threads, 0.0};
            pthread_create(&tid[t], NULL, bw_read, &parts[t]);
        }
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        double gbs = (double)bytes / (lq_now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* ---------- device bandwidth ---------- */

/* Device-to-device copy of a 1 GiB buffer, best of BW_PASSES: bytes read plus bytes
 * written per second, what a kernel streaming weights can at best achieve. */
static double measure_device_bandwidth(lq_backend *be) {
    size_t bytes = (size_t)1 << 30;
    void *src = be->alloc(be, bytes), *dst = be->alloc(be, bytes);
    double best = 0.0;
    if (src && dst && be->copy) {
        be->copy(be, dst, src, bytes); /* warm up */
        be->sync(be);
        for (int rep = 0; rep < BW_PASSES; rep++) {
            double t0 = lq_now();
            be->copy(be, dst, src, bytes);
            be->sync(be);
            double gbs = 2.0 * (double)bytes / (lq_now() - t0) / 1e9;
            if (gbs > best) best = gbs;
        }
    }
    if (src) be->free(be, src);
    if (dst) be->free(be, dst);
    return best;
}

/* ---------- engine timings ---------- */

typedef struct bench {
    lq_model *m;
    lq_kvcache *kv;
    lq_run_state *rs;
    float *logits;
} bench;

static int32_t *random_ids(int n, int vocab, unsigned *seed) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(rand_r(seed) % (unsigned)vocab);
    return ids;
}

static double time_prefill(bench *b, int n_tokens, lq_error *err) {
    unsigned seed = 1;
    int32_t *ids = random_ids(n_tokens, b->m->cfg.vocab_size, &seed);
    double t[REPS];
    int ok = 1;
    for (int r = 0; r < REPS && ok; r++) {
        lq_kv_seq seq = {0};
        ok = lq_kv_reserve(b->kv, &seq, n_tokens) == 0;
        lq_step_seq s = {ids, n_tokens, 0, seq.table, 0, NULL};
        double t0 = lq_now();
        ok = ok && lq_model_step(b->m, b->rs, &b->kv->pool, &s, 1, b->logits, err) == 1;
        t[r] = lq_now() - t0;
        lq_kv_release(b->kv, &seq);
    }
    free(ids);
    return ok ? n_tokens / median(t, REPS) : -1.0;
}

/* Aggregate decode tokens/s of `batch` sequences, each with CONTEXT tokens already cached,
 * for each of n_mix adapter mixes: in mix c, sequence i uses adapters[i * n_distinct[c] /
 * batch], so sequences sharing an adapter are neighbours as the scheduler arranges them
 * (n_distinct[c] == 0: the base model). The mixes take turns step by step, and each is
 * rated by its median step, so that load from other processes on a shared machine falls
 * on all of them alike and their ratios hold. Steps decode positions CONTEXT ..
 * CONTEXT + DECODE_STEPS - 1 over and over, so all do the same work. */
static int time_decode(bench *b, int batch, lq_lora **adapters, const int *n_distinct, int n_mix, double *tok_s,
                       lq_error *err) {
    enum { STEPS = DECODE_STEPS * REPS };
    unsigned seed = 2;
    lq_kv_seq *seqs = calloc((size_t)batch, sizeof *seqs);
    lq_step_seq *step = calloc((size_t)batch, sizeof *step);
    int32_t *ctx = random_ids(CONTEXT, b->m->cfg.vocab_size, &seed);
    int32_t *next = random_ids(batch, b->m->cfg.vocab_size, &seed);
    double *t = calloc((size_t)n_mix * STEPS, sizeof *t);
    int ok = 1;
    /* Prefill every sequence's context, one sequence per step. */
    for (int i = 0; i < batch && ok; i++) {
        ok = lq_kv_reserve(b->kv, &seqs[i], CONTEXT + DECODE_STEPS) == 0;
        lq_step_seq s = {ctx, CONTEXT, 0, seqs[i].table, 0, NULL};
        ok = ok && lq_model_step(b->m, b->rs, &b->kv->pool, &s, 1, b->logits, err) == 1;
    }
    for (int k = 0; k < STEPS && ok; k++)
        for (int c = 0; c < n_mix && ok; c++) {
            for (int i = 0; i < batch; i++)
                step[i] = (lq_step_seq){&next[i], 1, CONTEXT + k % DECODE_STEPS, seqs[i].table, 0,
                                        n_distinct[c] ? adapters[i * n_distinct[c] / batch] : NULL};
            double t0 = lq_now();
            ok = lq_model_step(b->m, b->rs, &b->kv->pool, step, batch, b->logits, err) == batch;
            t[(size_t)c * STEPS + k] = lq_now() - t0;
        }
    for (int c = 0; c < n_mix; c++) tok_s[c] = ok ? (double)batch / median(t + (size_t)c * STEPS, STEPS) : -1.0;
    for (int i = 0; i < batch; i++) lq_kv_release(b->kv, &seqs[i]);
    free(seqs), free(step), free(ctx), free(next), free(t);
    return ok ? 0 : -1;
}

/* "all 7 projections", or the adapted projections' names. */
static void targets_label(unsigned mask, char *out, size_t size) {
    if (mask == (1u << LQ_PROJ_COUNT) - 1) {
        snprintf(out, size, "all 7 projections");
        return;
    }
    out[0] = 0;
    for (int p = 0; p < LQ_PROJ_COUNT; p++)
        if (mask & (1u << p)) {
            size_t len = strlen(out);
            snprintf(out + len, size - len, "%s%s", len ? ", " : "", lq_proj_name((lq_proj)p));
        }
}

typedef struct bench_opts {
    const char *model, *device;
    int threads, dummy;
    int ranks[8], n_ranks;  /* the dummy adapters' ranks, cycled over the adapters */
    char rank_label[64];    /* "16", or "8/16/64" */
    unsigned lora_targets;
} bench_opts;

static int cpu_report(const bench_opts *o, lq_backend *be, lq_model *m) {
    int threads = o->threads;
    lq_error err;
    char targets[160];
    targets_label(o->lora_targets, targets, sizeof targets);
    bench b = {0};
    b.m = m;
    const lq_model_config *c = &b.m->cfg;
    int n_threads = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int blocks = 32 * ((CONTEXT + DECODE_STEPS) / KV_BLOCK + 1) + 512 / KV_BLOCK + 1;
    b.kv = lq_kvcache_new(be, c->n_layers, c->n_kv_heads, c->head_dim, blocks, KV_BLOCK, &err);
    b.rs = b.kv ? lq_run_state_new(b.m, 512, 32, &err) : NULL;
    b.logits = malloc((size_t)32 * c->vocab_size * sizeof(float));
    if (!b.rs || !b.logits) {
        fprintf(stderr, "lorq bench: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "measuring memory bandwidth...\n");
    double bw = measure_bandwidth(n_threads);
    double wbytes = (double)lq_model_weight_bytes(b.m);
    double bound = bw * 1e9 / wbytes;
    fprintf(stderr, "prefill...\n");
    double prefill = time_prefill(&b, 512, &err);
    /* dec: batch 1, 8, 32 on the base model; lora_dec: batch 32 with 1, 4 and 32 distinct
     * rank-16 (--lora-rank) adapters on all seven projections, bf16 weights as lq_lora_random makes them
     * (and PEFT saves adapters trained in bf16), timed in turns with the batch-32 base. */
    enum { N_LORA = 32 };
    double dec[3] = {-1, -1, -1}, mix[4] = {-1, -1, -1, -1}, *lora_dec = mix + 1;
    int base_only[1] = {0}, mixes[4] = {0, 1, 4, 32}, *n_distinct = mixes + 1;
    fprintf(stderr, "decode at batch 1 and 8...\n");
    if (time_decode(&b, 1, NULL, base_only, 1, &dec[0], &err) == 0) time_decode(&b, 8, NULL, base_only, 1, &dec[1], &err);
    lq_lora *adapters[N_LORA];
    for (int i = 0; i < N_LORA; i++) {
        char name[32];
        snprintf(name, sizeof name, "dummy-%d", i);
        adapters[i] = lq_lora_random(b.m, name, o->ranks[i % o->n_ranks], o->lora_targets, (unsigned long)i + 1, &err);
        if (!adapters[i]) {
            fprintf(stderr, "lorq bench: %s\n", err.msg);
            return 1;
        }
    }
    fprintf(stderr, "decode at batch 32, base and 1, 4, 32 adapters in turns...\n");
    time_decode(&b, 32, adapters, mixes, 4, mix, &err);
    dec[2] = mix[0];
    if (prefill < 0 || dec[0] < 0 || dec[1] < 0 || dec[2] < 0 || lora_dec[0] < 0 || lora_dec[1] < 0 ||
        lora_dec[2] < 0) {
        fprintf(stderr, "lorq bench: %s\n", err.msg);
        return 1;
    }
    printf("| measure | value |\n| --- | --- |\n");
    printf("| model | %s, %s weights, %.0f MB read per token |\n", c->arch_name,
           lq_dtype_name(b.m->w.embed.dtype), wbytes / 1e6);
    printf("| threads | %d |\n", n_threads);
    printf("| streaming read bandwidth | %.1f GB/s |\n", bw);
    printf("| batch-1 decode bound (bandwidth / bytes per token) | %.1f tok/s |\n", bound);
    printf("| prefill, 512-token prompt | %.0f tok/s |\n", prefill);
    printf("| decode, batch 1 | %.1f tok/s (%.0f%% of the bound) |\n", dec[0], 100.0 * dec[0] / bound);
    printf("| decode, batch 8 | %.1f tok/s (%.1fx batch 1) |\n", dec[1], dec[1] / dec[0]);
    printf("| decode, batch 32 | %.1f tok/s (%.1fx batch 1) |\n", dec[2], dec[2] / dec[0]);
    for (int i = 0; i < 3; i++)
        printf("| decode, batch 32, %d distinct rank-%s bf16 adapters (%s) | %.1f tok/s (%.1f%% overhead "
               "vs base) |\n", n_distinct[i], o->rank_label, targets, lora_dec[i], 100.0 * (dec[2] / lora_dec[i] - 1.0));
    printf("| one rank-%d bf16 adapter's memory | %.1f MB (%.2f%% of the base weights) |\n", o->ranks[0],
           adapters[0]->bytes / 1e6, 100.0 * (double)adapters[0]->bytes / wbytes);
    for (int i = 0; i < N_LORA; i++) lq_lora_free(adapters[i]);
    free(b.logits);
    lq_run_state_free(b.m, b.rs);
    lq_kvcache_free(b.kv);
    (void)be;
    return 0;
}

/* ---------- GPU report ---------- */

enum { GPU_MAX_BATCH = 128, GPU_ADAPTERS = 32 };

/* Bytes one decode step must read: every weight once, the adapters in use once, and
 * each sequence's K and V for every layer (f32). */
static double step_bytes(const lq_model *m, int batch, int ctx, int n_adapters, size_t adapter_bytes) {
    const lq_model_config *c = &m->cfg;
    double kv = 2.0 * c->n_layers * (double)c->n_kv_heads * c->head_dim * sizeof(float) * ctx * batch;
    return (double)lq_model_weight_bytes(m) + kv + (double)n_adapters * (double)adapter_bytes;
}

/* One lora call of the decode or prefill shape on layer 0's q, k and v, segmented
 * kernels against the GEMM-pair loop: microseconds per call, median of REPS x 20. */
static void time_lora_call(lq_backend *be, const lq_model *m, lq_lora **ad, int rows, int n_adapters, double us[2]) {
    const lq_model_config *c = &m->cfg;
    int dims[3], in = 0, rank = 0;
    lq_proj projs[3] = {LQ_PROJ_Q, LQ_PROJ_K, LQ_PROJ_V};
    lq_lora_seg *segs = calloc((size_t)3 * n_adapters, sizeof *segs);
    lq_lora_target tg[3];
    float *x = be->alloc(be, (size_t)rows * c->dim * sizeof(float)), *y[3] = {0}, *t[3] = {0};
    int nt = 0;
    for (int p = 0; p < 3; p++) {
        lq_proj_dims(c, projs[p], &in, &dims[p]);
        int n = 0;
        for (int a = 0; a < n_adapters; a++) {
            const lq_lora_module *mod = lq_lora_module_at(ad[a], 0, projs[p]);
            if (!mod->rank) continue;
            int r0 = rows * a / n_adapters, r1 = rows * (a + 1) / n_adapters;
            segs[p * n_adapters + n++] = (lq_lora_seg){r0, r1 - r0, mod->A, mod->B, mod->dtype, mod->rank, mod->scale};
            rank = mod->rank > rank ? mod->rank : rank;
        }
        if (!n) continue;
        y[p] = be->alloc(be, (size_t)rows * dims[p] * sizeof(float));
        t[p] = be->alloc(be, (size_t)rows * (rank ? rank : 1) * sizeof(float));
        tg[nt++] = (lq_lora_target){y[p], dims[p], &segs[p * n_adapters], n, t[p], rank};
    }
    for (int k = 0; k < 2; k++) {
        double ts[REPS];
        for (int r = 0; r < REPS; r++) {
            be->sync(be);
            double t0 = lq_now();
            for (int i = 0; i < 20; i++) (k ? be->lora_gemm_loop : be->lora)(be, x, c->dim, tg, nt);
            be->sync(be);
            ts[r] = (lq_now() - t0) / 20 * 1e6;
        }
        us[k] = nt ? median(ts, REPS) : -1.0;
    }
    for (int p = 0; p < 3; p++) {
        if (y[p]) be->free(be, y[p]);
        if (t[p]) be->free(be, t[p]);
    }
    be->free(be, x);
    free(segs);
}

static int gpu_report(const bench_opts *o, lq_backend *be, lq_model *m) {
    static const int batches[] = {1, 8, 32, 64, 128};
    static const int mixes[] = {0, 1, 8, 32};
    enum { N_BATCH = 5, N_MIX = 4 };
    lq_error err;
    const lq_model_config *c = &m->cfg;
    bench b = {0};
    b.m = m;
    int blocks = GPU_MAX_BATCH * ((CONTEXT + DECODE_STEPS) / KV_BLOCK + 1) + 512 / KV_BLOCK + 1;
    b.kv = lq_kvcache_new(be, c->n_layers, c->n_kv_heads, c->head_dim, blocks, KV_BLOCK, &err);
    b.rs = b.kv ? lq_run_state_new(m, 512, GPU_MAX_BATCH, &err) : NULL;
    b.logits = malloc((size_t)GPU_MAX_BATCH * c->vocab_size * sizeof(float));
    lq_lora *ad[GPU_ADAPTERS] = {0};
    for (int i = 0; i < GPU_ADAPTERS && b.rs; i++) {
        char name[32];
        snprintf(name, sizeof name, "dummy-%d", i);
        if (!(ad[i] = lq_lora_random(m, name, o->ranks[i % o->n_ranks], o->lora_targets, (unsigned long)i + 1, &err)))
            break;
    }
    if (!b.rs || !b.logits || !ad[GPU_ADAPTERS - 1]) {
        fprintf(stderr, "lorq bench: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "measuring device-to-device bandwidth...\n");
    double bw = measure_device_bandwidth(be);
    fprintf(stderr, "prefill...\n");
    double prefill = time_prefill(&b, 512, &err);
    printf("| measure | value |\n| --- | --- |\n");
    printf("| model | %s, %s weights, %.2f GB, %d layers |\n", c->arch_name, lq_dtype_name(m->w.layers[0].wq.dtype),
           (double)lq_model_weight_bytes(m) / 1e9, c->n_layers);
    printf("| device-to-device copy bandwidth (read + write) | %.0f GB/s |\n", bw);
    printf("| prefill, 512-token prompt | %.0f tok/s |\n", prefill);
    char targets[160];
    targets_label(o->lora_targets, targets, sizeof targets);
    printf("| adapters | rank %s on %s, cycled over %d adapters; one rank-%d adapter is %.1f MB |\n\n",
           o->rank_label, targets, GPU_ADAPTERS, o->ranks[0], ad[0]->bytes / 1e6);
    printf("Decode, %d-token contexts: tok/s (fraction of the roofline; LoRA overhead vs base)\n\n", CONTEXT);
    printf("| batch | base | 1 adapter | 8 adapters | 32 adapters |\n| --- | --- | --- | --- | --- |\n");
    for (int bi = 0; bi < N_BATCH; bi++) {
        int batch = batches[bi], n_mix = 0, use[N_MIX];
        for (int k = 0; k < N_MIX; k++)
            if (mixes[k] <= batch) use[n_mix++] = mixes[k];
        double tok[N_MIX];
        fprintf(stderr, "decode at batch %d...\n", batch);
        if (time_decode(&b, batch, ad, use, n_mix, tok, &err) != 0) {
            fprintf(stderr, "lorq bench: %s\n", err.msg);
            return 1;
        }
        printf("| %d |", batch);
        for (int k = 0; k < N_MIX; k++) {
            if (k >= n_mix) {
                printf(" — |");
                continue;
            }
            double bound = batch * bw / step_bytes(m, batch, CONTEXT + DECODE_STEPS / 2, use[k], ad[0]->bytes);
            printf(" %.0f (%.0f%%", tok[k], 100.0 * tok[k] / bound);
            if (k) printf("; %+.1f%%", 100.0 * (tok[0] / tok[k] - 1.0));
            printf(") |");
        }
        printf("\n");
        fflush(stdout);
    }
    printf("\nLoRA on layer 0's q, k, v: one segmented call against one cuBLAS GEMM pair per adapter\n\n");
    printf("| shape | segmented | GEMM loop | speedup |\n| --- | --- | --- | --- |\n");
    struct { const char *name; int rows, n_ad; } shapes[] = {
        {"decode batch 64, 32 adapters (BGMV)", 64, 32}, {"decode batch 32, 32 adapters (BGMV)", 32, 32},
        {"prefill 512 rows, 4 adapters (SGMV)", 512, 4}, {"prefill 512 rows, 1 adapter (SGMV)", 512, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        double us[2];
        time_lora_call(be, m, ad, shapes[i].rows, shapes[i].n_ad, us);
        printf("| %s | %.1f µs | %.1f µs | %.2fx |\n", shapes[i].name, us[0], us[1], us[1] / us[0]);
    }
    for (int i = 0; i < GPU_ADAPTERS; i++) lq_lora_free(ad[i]);
    free(b.logits);
    lq_run_state_free(m, b.rs);
    lq_kvcache_free(b.kv);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: lorq bench --model DIR [--threads N] [--device cpu|cuda|auto] [--load-format auto|dummy]\n"
                    "                  [--lora-rank R[,R...]] [--lora-targets LIST]\n"
                    "  --load-format dummy: random bf16 weights for DIR's config.json (DIR may be the file)\n"
                    "  --lora-rank R[,R...] (default 16, cycled over the adapters), --lora-targets LIST (default all:\n"
                    "  q,k,v,o,gate,up,down): the dummy adapters\n");
}

/* "16" or "8,16,64": ranks cycled over the dummy adapters. */
static int parse_ranks(const char *v, bench_opts *o) {
    o->n_ranks = 0;
    o->rank_label[0] = 0;
    while (*v) {
        char *end;
        long r = strtol(v, &end, 10);
        if (end == v || r < 1 || r > 4096 || o->n_ranks == 8 || (*end && *end != ',')) return -1;
        o->ranks[o->n_ranks++] = (int)r;
        size_t len = strlen(o->rank_label);
        snprintf(o->rank_label + len, sizeof o->rank_label - len, "%s%ld", len ? "/" : "", r);
        v = *end ? end + 1 : end;
    }
    return o->n_ranks ? 0 : -1;
}

static int parse_bench(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->ranks[0] = 16;
    o->n_ranks = 1;
    snprintf(o->rank_label, sizeof o->rank_label, "16");
    o->lora_targets = (1u << LQ_PROJ_COUNT) - 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return -1;
        i++;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--threads")) o->threads = atoi(v);
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--lora-rank")) {
            if (parse_ranks(v, o) != 0) {
                fprintf(stderr, "lorq bench: --lora-rank is a rank from 1 to 4096 or a comma list of up to 8\n");
                return -1;
            }
        }
        else if (!strcmp(a, "--load-format") && (!strcmp(v, "dummy") || !strcmp(v, "auto") || !strcmp(v, "safetensors")))
            o->dummy = !strcmp(v, "dummy");
        else if (!strcmp(a, "--lora-targets")) {
            lq_error err;
            if (lq_proj_mask_parse(v, &o->lora_targets, &err) != 0) {
                fprintf(stderr, "lorq bench: %s\n", err.msg);
                return -1;
            }
        } else
            return -1;
    }
    return o->model ? 0 : -1;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o;
    if (parse_bench(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    lq_error err;
    lq_backend *be = lq_backend_open(o.device, o.threads, &err);
    lq_model *m = !be ? NULL : o.dummy ? lq_model_load_dummy(o.model, be, LQ_DTYPE_BF16, 1, &err)
                                       : lq_model_load(o.model, be, &err);
    if (!m) {
        fprintf(stderr, "lorq bench: %s\n", err.msg);
        if (be) be->destroy(be);
        return 1;
    }
    int rc = strcmp(be->name, "cpu") ? gpu_report(&o, be, m) : cpu_report(&o, be, m);
    lq_model_free(m);
    be->destroy(be);
    return rc;
}
