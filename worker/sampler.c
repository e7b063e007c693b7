/* sampler.c — logits processors, warpers and the draw (see sampler.h).
 *
 * Per-sequence state is small: a seeded xoshiro256** generator and a count per
 * token id seen (prompt occurrences and generated occurrences kept apart,
 * since the repetition penalty looks at both and frequency/presence only at
 * generated ones). Counts are a dense array over the vocabulary plus a list of
 * touched ids, so applying penalties costs O(distinct tokens), not O(vocab). */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lq_sampler {
    lq_sampling p;
    int vocab;
    uint64_t rng[4];
    uint32_t *prompt_count, *gen_count;
    int32_t *touched; /* ids with a non-zero count, each once */
    int n_touched, cap_touched;
    /* scratch for warpers */
    int32_t *order;
    float *probs;
};

lq_sampling lq_sampling_default(void) {
    return (lq_sampling){.do_sample = 0,
                         .temperature = 1.0f,
                         .top_k = 0,
                         .top_p = 1.0f,
                         .typical_p = 1.0f,
                         .repetition_penalty = 1.0f,
                         .frequency_penalty = 0.0f,
                         .presence_penalty = 0.0f,
                         .seed = 0,
                         .top_n_tokens = 0};
}

const char *lq_sampling_check(const lq_sampling *p) {
    if (!(p->temperature > 0.0f) || !isfinite(p->temperature)) return "temperature must be strictly positive";
    if (p->top_k < 0) return "top_k must be strictly positive";
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return "top_p must be > 0.0 and <= 1.0";
    if (!(p->typical_p > 0.0f && p->typical_p <= 1.0f)) return "typical_p must be > 0.0 and <= 1.0";
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return "repetition_penalty must be strictly positive";
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return "frequency_penalty must be >= -2.0 and <= 2.0";
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return "presence_penalty must be >= -2.0 and <= 2.0";
    if (p->top_n_tokens < 0 || p->top_n_tokens > LQ_MAX_TOP_N) return "top_n_tokens must be >= 0 and <= 32";
    return NULL;
}

/* ---------- random numbers: xoshiro256**, seeded through splitmix64 ---------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double next_unit(uint64_t s[4]) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

/* ---------- bookkeeping ---------- */

static void touch(lq_sampler *s, int32_t id) {
    if (s->prompt_count[id] || s->gen_count[id]) return;
    if (s->n_touched == s->cap_touched) {
        s->cap_touched = s->cap_touched ? 2 * s->cap_touched : 64;
        s->touched = realloc(s->touched, (size_t)s->cap_touched * sizeof *s->touched);
    }
    s->touched[s->n_touched++] = id;
}

lq_sampler *lq_sampler_new(const lq_sampling *p, int vocab_size, const int32_t *prompt, int n_prompt) {
    lq_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->vocab = vocab_size;
    uint64_t seed = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed);
    s->prompt_count = calloc((size_t)vocab_size, sizeof *s->prompt_count);
    s->gen_count = calloc((size_t)vocab_size, sizeof *s->gen_count);
    s->order = malloc((size_t)vocab_size * sizeof *s->order);
    s->probs = malloc((size_t)vocab_size * sizeof *s->probs);
    if (!s->prompt_count || !s->gen_count || !s->order || !s->probs) {
        lq_sampler_free(s);
        return NULL;
    }
    for (int i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= vocab_size) continue;
        touch(s, prompt[i]);
        s->prompt_count[prompt[i]]++;
    }
    return s;
}

void lq_sampler_free(lq_sampler *s) {
    if (!s) return;
    free(s->prompt_count);
    free(s->gen_count);
    free(s->touched);
    free(s->order);
    free(s->probs);
    free(s);
}

static void record_generated(lq_sampler *s, int32_t id) {
    touch(s, id);
    s->gen_count[id]++;
}

/* ---------- processors ---------- */

static void apply_penalties(lq_sampler *s, float *logits) {
    const lq_sampling *p = &s->p;
    for (int i = 0; i < s->n_touched; i++) {
        int32_t id = s->touched[i];
        float l = logits[id];
        if (p->repetition_penalty != 1.0f) l = l < 0.0f ? l * p->repetition_penalty : l / p->repetition_penalty;
        uint32_t g = s->gen_count[id];
        if (g) l -= p->frequency_penalty * (float)g + p->presence_penalty;
        logits[id] = l;
    }
}

static float log_sum_exp(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    if (mx == -INFINITY) return mx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)(x[i] - mx));
    return mx + (float)log(sum);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* The n best ids by logit (ties: lower id first), for reporting. */
static void top_n(const float *logits, int vocab, float lse, int n, lq_token_choice *out) {
    out->n_top = 0;
    if (n <= 0) return;
    for (int i = 0; i < vocab; i++) {
        float v = logits[i];
        int k = out->n_top;
        if (k == n && !(v > logits[out->top_ids[n - 1]])) continue;
        if (k < n) out->n_top++;
        else k = n - 1;
        while (k > 0 && v > logits[out->top_ids[k - 1]]) {
            out->top_ids[k] = out->top_ids[k - 1];
            k--;
        }
        out->top_ids[k] = i;
    }
    for (int i = 0; i < out->n_top; i++) out->top_logprobs[i] = logits[out->top_ids[i]] - lse;
}

static int by_key_asc(const void *a, const void *b, void *keysp) {
    const float *keys = keysp;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (keys[i] != keys[j]) return keys[i] < keys[j] ? -1 : 1;
    return i < j ? -1 : 1;
}

/* Sorts ids 0..n-1 ascending by keys (ties by id, so results never depend on qsort's order). */
static void sort_ids(int32_t *order, int n, const float *keys) {
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_key_asc, (void *)keys);
}

/* Keeps the k largest logits (and any tied with the k-th). */
static void warp_top_k(lq_sampler *s, float *logits) {
    int k = s->p.top_k;
    if (k <= 0 || k >= s->vocab) return;
    memcpy(s->probs, logits, (size_t)s->vocab * sizeof *s->probs);
    sort_ids(s->order, s->vocab, s->probs);
    float kth = s->probs[s->order[s->vocab - k]];
    for (int i = 0; i < s->vocab; i++)
        if (logits[i] < kth) logits[i] = -INFINITY;
}

/* Softmax of logits into s->probs. */
static void softmax_into(lq_sampler *s, const float *logits) {
    float lse = log_sum_exp(logits, s->vocab);
    for (int i = 0; i < s->vocab; i++) s->probs[i] = expf(logits[i] - lse);
}

/* transformers' TopP: drop the low tail whose cumulative probability is <= 1 - top_p, keep >= 1 token. */
static void warp_top_p(lq_sampler *s, float *logits) {
    float top_p = s->p.top_p;
    if (top_p >= 1.0f) return;
    softmax_into(s, logits);
    sort_ids(s->order, s->vocab, logits);
    double cum = 0.0;
    for (int r = 0; r < s->vocab - 1; r++) {
        int32_t id = s->order[r];
        cum += s->probs[id];
        if (cum > 1.0 - top_p) break;
        logits[id] = -INFINITY;
    }
}

/* transformers' Typical: keep tokens whose surprisal is closest to the entropy, up to mass typical_p. */
static void warp_typical(lq_sampler *s, float *logits) {
    float mass = s->p.typical_p;
    if (mass >= 1.0f) return;
    float lse = log_sum_exp(logits, s->vocab);
    double ent = 0.0;
    for (int i = 0; i < s->vocab; i++) {
        float lp = logits[i] - lse;
        if (isfinite(lp)) ent -= (double)lp * exp((double)lp);
    }
    float *shifted = malloc((size_t)s->vocab * sizeof *shifted);
    for (int i = 0; i < s->vocab; i++) {
        float lp = logits[i] - lse;
        shifted[i] = isfinite(lp) ? fabsf(-lp - (float)ent) : INFINITY;
    }
    sort_ids(s->order, s->vocab, shifted);
    double cum = 0.0;
    int last = 0;
    for (int r = 0; r < s->vocab; r++) {
        cum += exp((double)(logits[s->order[r]] - lse));
        if (!(cum < mass)) break;
        last = r + 1;
    }
    if (last > s->vocab - 1) last = s->vocab - 1;
    float cutoff = shifted[s->order[last]];
    for (int i = 0; i < s->vocab; i++)
        if (shifted[i] > cutoff) logits[i] = -INFINITY;
    free(shifted);
}

static int draw(lq_sampler *s, const float *logits) {
    softmax_into(s, logits);
    double u = next_unit(s->rng), cum = 0.0;
    int last_nonzero = 0;
    for (int i = 0; i < s->vocab; i++) {
        if (s->probs[i] <= 0.0f) continue;
        last_nonzero = i;
        cum += s->probs[i];
        if (u < cum) return i;
    }
    return last_nonzero; /* u landed in the rounding slack at the end */
}

void lq_sampler_next(lq_sampler *s, float *logits, lq_token_choice *out) {
    apply_penalties(s, logits);
    if (s->p.temperature != 1.0f)
        for (int i = 0; i < s->vocab; i++) logits[i] /= s->p.temperature;
    float lse = log_sum_exp(logits, s->vocab);
    top_n(logits, s->vocab, lse, s->p.top_n_tokens, out);
    int id;
    if (!s->p.do_sample) {
        id = argmax(logits, s->vocab);
    } else {
        /* Warpers may cut everything but one token; the reported logprob stays the pre-warp one. */
        float *w = malloc((size_t)s->vocab * sizeof *w);
        memcpy(w, logits, (size_t)s->vocab * sizeof *w);
        warp_top_k(s, w);
        warp_top_p(s, w);
        warp_typical(s, w);
        id = draw(s, w);
        free(w);
    }
    out->id = id;
    out->logprob = logits[id] - lse;
    record_generated(s, id);
}

void lq_sampler_force(lq_sampler *s, int32_t id) {
    if (s->p.do_sample) (void)next_u64(s->rng); /* draw() takes exactly one number per token */
    if (id >= 0 && id < s->vocab) record_generated(s, id);
}
