/* model.h — a Llama-family decoder (Llama, Mistral, Qwen2): config, weights
 * and the batched forward step, in the three plain structs llama2.c taught us.
 *
 * lq_model_config is what config.json says, checked; lq_model_weights are
 * lq_mats in backend memory (on the CPU, the mmap'd safetensors in place);
 * lq_run_state holds the activation buffers for up to max_tokens tokens per
 * step. lq_model_step runs prefill chunks of some sequences and single decode
 * tokens of others in one pass: every token of every sequence is a row of the
 * same matrices, and only attention looks at which sequence a row belongs to.
 * Sequences may each name a LoRA adapter (or none): consecutive sequences
 * sharing one form a segment of rows, and each adapted projection adds its
 * segments' low-rank terms with the backend's shrink/expand ops. Grouping
 * sequences by adapter before the step makes fewer, larger segments. */
#ifndef LORQ_MODEL_H
#define LORQ_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "error.h"
#include "safetensors.h"

typedef enum lq_arch { LQ_ARCH_LLAMA, LQ_ARCH_MISTRAL, LQ_ARCH_QWEN2 } lq_arch;
typedef enum lq_rope_kind { LQ_ROPE_DEFAULT, LQ_ROPE_LINEAR, LQ_ROPE_LLAMA3 } lq_rope_kind;

typedef struct lq_model_config {
    lq_arch arch;
    char arch_name[64];
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size;
    int max_position;   /* max_position_embeddings (Qwen2 with use_sliding_window: capped at the window) */
    int sliding_window; /* Mistral: attention sees the last this many positions; 0: all */
    float rms_eps, rope_theta;
    lq_rope_kind rope_kind;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position;
    int tie_embeddings;
    int attention_bias; /* q/k/v biases (Qwen2 always) */
    int o_bias, mlp_bias;
    int bos_token_id;
    int eos_token_ids[8], n_eos;
} lq_model_config;

typedef struct lq_layer_weights {
    lq_mat attn_norm, ffn_norm;
    lq_mat wq, wk, wv, wo;
    lq_mat w_gate, w_up, w_down;
    const float *bq, *bk, *bv, *bo; /* f32 backend memory or NULL */
    const float *b_gate, *b_up, *b_down;
} lq_layer_weights;

typedef struct lq_model_weights {
    lq_mat embed, final_norm, lm_head;
    lq_layer_weights *layers;
} lq_model_weights;

typedef struct lq_model {
    lq_model_config cfg;
    lq_model_weights w;
    lq_backend *backend;
    st_set tensors;     /* keeps the mmap alive */
    void **owned;       /* backend allocations made at load */
    int n_owned;
    float *inv_freq;    /* host, head_dim/2 */
    char *dir;
    int dummy;          /* --load-format dummy: random weights, no files */
    lq_dtype dummy_dtype;
    unsigned long long dummy_seed;
} lq_model;

/* Parses config.json text (and generation_config.json text, may be NULL, for EOS ids). */
int lq_config_parse(lq_model_config *c, const char *config_json, const char *generation_json, lq_error *err);

/* Loads DIR/config.json, DIR/generation_config.json and the safetensors weights. */
lq_model *lq_model_load(const char *dir, lq_backend *backend, lq_error *err);
void lq_model_free(lq_model *m);

/* --load-format dummy (vLLM's name): the model config.json describes (path is a folder
 * holding it or the file itself) with random weights of dtype in backend memory, for
 * measuring speed at any shape without downloading weights. */
lq_model *lq_model_load_dummy(const char *path, lq_backend *backend, lq_dtype dtype, unsigned long seed,
                              lq_error *err);

/* Bytes of weights read per decoded token (every matrix once, embedding row aside). */
size_t lq_model_weight_bytes(const lq_model *m);

struct lq_lora;

/* A run of consecutive rows of a step that share an adapter. */
typedef struct lq_lora_run {
    int row0, n_rows;
    const struct lq_lora *adapter;
} lq_lora_run;

/* Activation buffers for steps of up to max_tokens tokens and max_seqs sequences. */
typedef struct lq_run_state {
    int max_tokens, max_seqs;
    float *x, *xb, *xb2, *q, *k, *v, *att, *hb, *hb2, *logits; /* backend memory */
    int32_t *ids, *pos, *slots, *logit_rows;                   /* host */
    lq_attn_seq *attn;                                         /* host */
    lq_lora_run *runs;                                         /* host, max_seqs */
    int n_runs;
    lq_lora_seg *segs;                                         /* host, max_seqs */
    float *lora_t;                                             /* backend: shrink output */
    size_t lora_t_len;
} lq_run_state;

lq_run_state *lq_run_state_new(const lq_model *m, int max_tokens, int max_seqs, lq_error *err);
void lq_run_state_free(const lq_model *m, lq_run_state *s);

/* One sequence's share of a step. */
typedef struct lq_step_seq {
    const int32_t *tokens;      /* host: n_tokens tokens to run (a prefill chunk, or 1 to decode) */
    int n_tokens;
    int pos;                    /* position of tokens[0] = tokens already in the KV cache */
    const int32_t *block_table; /* host: KV blocks covering pos + n_tokens tokens */
    int all_logits;             /* 1: logits for every token (perplexity); 0: only the last */
    const struct lq_lora *adapter; /* NULL: the base model */
} lq_step_seq;

/* Runs one forward step and writes logits (host memory, f32) row after row:
 * for each sequence in order, its last token's row, or n_tokens rows if
 * all_logits. Returns the number of logit rows, or -1 with err set. */
int lq_model_step(lq_model *m, lq_run_state *s, const lq_kv_pool *kv, const lq_step_seq *seqs, int n_seqs,
                  float *logits, lq_error *err);

#endif
