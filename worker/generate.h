/* generate.h — one generation: a prompt growing token by token until it stops.
 *
 * The model step produces logits; everything that happens between two steps
 * for one sequence lives here: sampling the next token, streaming its text
 * (never half a UTF-8 character), and deciding whether to stop — EOS from
 * generation_config.json, a stop sequence matched on the decoded text (which
 * may span token boundaries), or max_new_tokens. The CLI drives one of these;
 * the worker's scheduler drives many, one per job. */
#ifndef LORQ_GENERATE_H
#define LORQ_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#define LQ_MAX_STOP 16

typedef struct lq_gen_params {
    lq_sampling sampling;
    int max_new_tokens;
    const char *stop[LQ_MAX_STOP]; /* borrowed; must outlive the generation */
    int n_stop;
    int ignore_eos;
    const struct lq_lora *adapter; /* NULL: the base model; borrowed */
} lq_gen_params;

typedef enum lq_finish {
    LQ_FINISH_NONE = 0,
    LQ_FINISH_LENGTH,        /* max_new_tokens reached */
    LQ_FINISH_EOS,           /* the model produced an end-of-sequence token */
    LQ_FINISH_STOP_SEQUENCE, /* the text now contains a stop sequence */
} lq_finish;

const char *lq_finish_name(lq_finish f); /* "length", "eos_token", "stop_sequence" (TGI's names) */

typedef struct lq_generation {
    const lq_model *model;
    lq_gen_params params;
    int32_t *tokens; /* prompt then generated */
    int n_prompt, n_tokens, cap;
    int n_in_cache;  /* tokens whose K/V are in the cache */
    lq_kv_seq kv;
    lq_sampler *sampler;
    lq_tok_stream *stream;
    char *text; /* generated text so far (special tokens skipped) */
    size_t text_len, text_cap;
    lq_finish finish;
} lq_generation;

lq_generation *lq_generation_new(const lq_model *m, const lq_tokenizer *tok, const int32_t *prompt, int n_prompt,
                                 const lq_gen_params *p, lq_error *err);
void lq_generation_free(lq_generation *g, lq_kvcache *kv);

/* Tokens still to prefill (0 once the whole prompt is in the cache). */
int lq_generation_pending(const lq_generation *g);

/* Consumes the logits of the sequence's last token (modified in place):
 * samples a token into *choice, appends it, sets *piece / *piece_len to the
 * newly completed text (owned by g, valid until the next call), and sets
 * g->finish when the generation is over. On finish, the held-back tail of the
 * text is included in *piece. Returns 0, or -1 with err set. */
int lq_generation_next(lq_generation *g, float *logits, lq_token_choice *choice, const char **piece,
                       size_t *piece_len, lq_error *err);

/* Appends id as if it had been sampled (resuming from tokens an earlier
 * attempt delivered): it enters the sampler's history (lq_sampler_force), the
 * text stream and the stop checks exactly as a sampled token would, and may
 * finish the generation. The K/V of forced tokens are not in the cache yet:
 * they are prefilled with the prompt (lq_generation_pending counts them).
 * *piece / *piece_len as for lq_generation_next. Returns 0, or -1 with err set
 * (out of memory, or the generation is already over). */
int lq_generation_force(lq_generation *g, int32_t id, const char **piece, size_t *piece_len, lq_error *err);

#endif
