/* sampler.h — choosing the next token from logits, per sequence.
 *
 * The logits pass through processors in the order transformers/TGI apply
 * them: repetition penalty (over prompt and generated tokens), frequency and
 * presence penalties (over generated tokens, OpenAI's definition), then
 * temperature. The log-probabilities reported for the chosen token and the
 * top-n alternatives are the log-softmax at that point. Sampling then narrows
 * the distribution with top-k, top-p and typical-p (transformers' warpers,
 * same tie and boundary rules) and draws from it with the sequence's own
 * generator, seeded so the same seed and inputs give the same tokens. Greedy
 * decoding takes the first maximum instead. */
#ifndef LORQ_SAMPLER_H
#define LORQ_SAMPLER_H

#include <stdint.h>

#define LQ_MAX_TOP_N 32

typedef struct lq_sampling {
    int do_sample;            /* 0: greedy */
    float temperature;        /* > 0; 1 leaves logits alone */
    int top_k;                /* 0: off */
    float top_p;              /* (0, 1]; 1: off */
    float typical_p;          /* (0, 1]; 1: off */
    float repetition_penalty; /* > 0; 1: off */
    float frequency_penalty;  /* 0: off */
    float presence_penalty;   /* 0: off */
    uint64_t seed;
    int top_n_tokens;         /* alternatives to report, <= LQ_MAX_TOP_N */
} lq_sampling;

/* Defaults: greedy, no penalties, no warpers. */
lq_sampling lq_sampling_default(void);
/* Checks ranges; returns NULL or a message naming the bad parameter. */
const char *lq_sampling_check(const lq_sampling *p);

typedef struct lq_token_choice {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[LQ_MAX_TOP_N];
    float top_logprobs[LQ_MAX_TOP_N];
} lq_token_choice;

typedef struct lq_sampler lq_sampler;

/* A sampler for one sequence; prompt tokens count for the repetition penalty. */
lq_sampler *lq_sampler_new(const lq_sampling *p, int vocab_size, const int32_t *prompt, int n_prompt);
void lq_sampler_free(lq_sampler *s);
/* Chooses a token from logits (modified in place) and records it as generated. */
void lq_sampler_next(lq_sampler *s, float *logits, lq_token_choice *out);
/* Records id as generated without choosing it (resuming a generation from
 * tokens an earlier attempt delivered): the penalties' history counts it, and
 * when sampling the generator advances by exactly the one draw lq_sampler_next
 * would have made, so the tokens after it are the ones an uninterrupted run
 * gives. */
void lq_sampler_force(lq_sampler *s, int32_t id);

#endif
