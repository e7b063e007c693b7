/* cmd_bench.c — `lorq bench`: CPU engine throughput, as ratios to what the
 * machine allows, measured in the same run.
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

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: lorq bench --model DIR [--threads N]\n");
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "usage: lorq bench --model DIR [--threads N]\n");
        return 2;
    }
    lq_error err;
    lq_backend *be = lq_backend_cpu_new(threads, &err);
    bench b = {0};
    b.m = be ? lq_model_load(model, be, &err) : NULL;
    if (!b.m) {
        fprintf(stderr, "lorq bench: %s\n", err.msg);
        return 1;
    }
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
     * rank-16 adapters on all seven projections, bf16 weights as lq_lora_random makes them
     * (and PEFT saves adapters trained in bf16), timed in turns with the batch-32 base. */
    enum { N_LORA = 32, LORA_RANK = 16 };
    double dec[3] = {-1, -1, -1}, mix[4] = {-1, -1, -1, -1}, *lora_dec = mix + 1;
    int base_only[1] = {0}, mixes[4] = {0, 1, 4, 32}, *n_distinct = mixes + 1;
    fprintf(stderr, "decode at batch 1 and 8...\n");
    if (time_decode(&b, 1, NULL, base_only, 1, &dec[0], &err) == 0) time_decode(&b, 8, NULL, base_only, 1, &dec[1], &err);
    lq_lora *adapters[N_LORA];
    for (int i = 0; i < N_LORA; i++) {
        char name[32];
        snprintf(name, sizeof name, "dummy-%d", i);
        adapters[i] = lq_lora_random(b.m, name, LORA_RANK, (1u << LQ_PROJ_COUNT) - 1, (unsigned long)i + 1, &err);
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
        printf("| decode, batch 32, %d distinct rank-%d bf16 adapters (all 7 projections) | %.1f tok/s (%.1f%% overhead "
               "vs base) |\n", n_distinct[i], LORA_RANK, lora_dec[i], 100.0 * (dec[2] / lora_dec[i] - 1.0));
    printf("| one rank-%d bf16 adapter's memory | %.1f MB (%.2f%% of the base weights) |\n", LORA_RANK,
           adapters[0]->bytes / 1e6, 100.0 * (double)adapters[0]->bytes / wbytes);
    for (int i = 0; i < N_LORA; i++) lq_lora_free(adapters[i]);
    free(b.logits);
    lq_run_state_free(b.m, b.rs);
    lq_kvcache_free(b.kv);
    lq_model_free(b.m);
    be->destroy(be);
    return 0;
}
