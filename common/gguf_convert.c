/* gguf_convert.c — GGUF model → Hugging Face folder (see gguf_convert.h).
 *
 * The conversion is planned completely before a byte is written: read the
 * hyper-parameters, map every GGUF tensor to its Hugging Face name and check
 * its shape against them, check that every layer is complete. Only a plan
 * that passes is executed, so errors about the model arrive in a second and
 * never leave a half-written folder.
 *
 * Tensors: ggml stores ne[0] (the innermost, contiguous dimension) first, so
 * the Hugging Face shape is ne reversed; dequantized rows are already in the
 * right memory order. llama.cpp's converter permutes the rows of q_proj and
 * k_proj for llama models — within each head it interleaves the two rotary
 * halves (row order (i, j) for i < head_dim/2, j < 2 instead of (j, i)) so its
 * RoPE can rotate adjacent pairs — and we put them back. qwen2 GGUFs are not
 * permuted.
 *
 * Dropped on purpose: rope_freqs.weight, the per-frequency Llama-3 RoPE
 * scaling factors, which transformers recomputes from config.json's
 * rope_scaling; we only drop it after checking it equals the Llama-3 formula
 * for the rope_scaling we write, and refuse the model otherwise. */
#include "gguf_convert.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

/* Output folder paths, and room for a file name after them. */
#define DIR_CAP 4096
#define FILE_CAP (DIR_CAP + 64)

typedef struct arch_info {
    const char *name;    /* general.architecture */
    const char *hf_arch; /* config.json architectures[0] */
    int permute_qk;
    int qkv_bias; /* 1: q/k/v biases required and the only biases allowed */
} arch_info;

static const arch_info arches[] = {
    {"llama", "LlamaForCausalLM", 1, 0},
    {"qwen2", "Qwen2ForCausalLM", 0, 1},
};

/* The parts of a transformer block, in GGUF and Hugging Face naming. */
enum { P_ATTN_NORM, P_Q, P_K, P_V, P_O, P_GATE, P_UP, P_DOWN, P_FFN_NORM, N_PARTS };
static const struct {
    const char *gguf, *hf;
    int has_bias; /* may carry a .bias */
} parts[N_PARTS] = {
    [P_ATTN_NORM] = {"attn_norm", "input_layernorm", 0},
    [P_Q] = {"attn_q", "self_attn.q_proj", 1},
    [P_K] = {"attn_k", "self_attn.k_proj", 1},
    [P_V] = {"attn_v", "self_attn.v_proj", 1},
    [P_O] = {"attn_output", "self_attn.o_proj", 1},
    [P_GATE] = {"ffn_gate", "mlp.gate_proj", 1},
    [P_UP] = {"ffn_up", "mlp.up_proj", 1},
    [P_DOWN] = {"ffn_down", "mlp.down_proj", 1},
    [P_FFN_NORM] = {"ffn_norm", "post_attention_layernorm", 0},
};

typedef struct hparams {
    const arch_info *arch;
    uint32_t n_layers, hidden, ffn, n_head, n_head_kv, head_dim;
    uint64_t context_length, vocab_rows;
    float rms_eps, rope_theta;
    json_t *rope_scaling; /* NULL: none */
    int tied, attention_bias, mlp_bias;
    int64_t bos, eos, pad;
} hparams;

typedef struct plan_entry {
    const gguf_tensor *src;
    char name[96];
    int ndim;
    int64_t shape[GGUF_MAX_DIMS];
    uint32_t permute_heads; /* 0: copy rows as they are */
} plan_entry;

typedef struct plan {
    plan_entry *e;
    size_t n;
    uint8_t *present; /* [layer][part][weight, bias] */
    const gguf_tensor *rope_freqs;
} plan;

/* ---- hyper-parameters ---- */

static int arch_u32(const gguf_ctx *g, const hparams *h, const char *suffix, uint32_t *out, lq_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", h->arch->name, suffix);
    return gguf_get_u32(g, key, out, err);
}

static int arch_has(const gguf_ctx *g, const hparams *h, const char *suffix) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", h->arch->name, suffix);
    return gguf_find(g, key) != NULL;
}

static int arch_f32(const gguf_ctx *g, const hparams *h, const char *suffix, float *out, lq_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", h->arch->name, suffix);
    return gguf_get_f32(g, key, out, err);
}

static int arch_str(const gguf_ctx *g, const hparams *h, const char *suffix, gguf_str *out, lq_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", h->arch->name, suffix);
    return gguf_get_str(g, key, out, err);
}

static int find_arch(const gguf_ctx *g, hparams *h, lq_error *err) {
    gguf_str name;
    if (gguf_get_str(g, "general.architecture", &name, err)) return -1;
    for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++)
        if (gguf_str_eq(name, arches[i].name)) {
            h->arch = &arches[i];
            return 0;
        }
    char q[72];
    return lq_fail(err, "architecture '%s' is not supported (supported: llama, qwen2)", gguf_str_quote(name, q, sizeof q));
}

static int optional_token_id(const gguf_ctx *g, const char *key, int64_t *out, lq_error *err) {
    uint32_t id;
    *out = -1;
    if (!gguf_find(g, key)) return 0;
    if (gguf_get_u32(g, key, &id, err)) return -1;
    *out = id;
    return 0;
}

static int read_hparams(const gguf_ctx *g, hparams *h, lq_error *err) {
    uint32_t ctx;
    if (find_arch(g, h, err) || arch_u32(g, h, "block_count", &h->n_layers, err) ||
        arch_u32(g, h, "embedding_length", &h->hidden, err) ||
        arch_u32(g, h, "feed_forward_length", &h->ffn, err) ||
        arch_u32(g, h, "attention.head_count", &h->n_head, err) || arch_u32(g, h, "context_length", &ctx, err) ||
        arch_f32(g, h, "attention.layer_norm_rms_epsilon", &h->rms_eps, err))
        return -1;
    h->context_length = ctx;
    h->n_head_kv = h->n_head;
    if (arch_has(g, h, "attention.head_count_kv") && arch_u32(g, h, "attention.head_count_kv", &h->n_head_kv, err))
        return -1;
    h->rope_theta = 10000.0f;
    if (arch_has(g, h, "rope.freq_base") && arch_f32(g, h, "rope.freq_base", &h->rope_theta, err)) return -1;
    if (!h->n_layers || !h->hidden || !h->ffn || !h->n_head || !h->n_head_kv || h->n_head % h->n_head_kv)
        return lq_fail(err, "implausible hyper-parameters: %u layers, hidden %u, ffn %u, %u heads, %u kv heads",
                       h->n_layers, h->hidden, h->ffn, h->n_head, h->n_head_kv);
    if (h->n_layers > 100000) return lq_fail(err, "implausible block_count %u", h->n_layers);
    h->head_dim = h->hidden / h->n_head;
    if (arch_has(g, h, "attention.key_length") && arch_u32(g, h, "attention.key_length", &h->head_dim, err)) return -1;
    uint32_t rope_dim = h->head_dim, v_len = h->head_dim;
    if (arch_has(g, h, "rope.dimension_count") && arch_u32(g, h, "rope.dimension_count", &rope_dim, err)) return -1;
    if (arch_has(g, h, "attention.value_length") && arch_u32(g, h, "attention.value_length", &v_len, err)) return -1;
    if (!h->head_dim || h->head_dim % 2 || rope_dim != h->head_dim || v_len != h->head_dim)
        return lq_fail(err, "head dimension %u with rope dimension %u and value length %u is not supported "
                            "(partial rotary or unequal key/value heads)", h->head_dim, rope_dim, v_len);
    return optional_token_id(g, "tokenizer.ggml.bos_token_id", &h->bos, err) ||
           optional_token_id(g, "tokenizer.ggml.eos_token_id", &h->eos, err) ||
           optional_token_id(g, "tokenizer.ggml.padding_token_id", &h->pad, err);
}

/* ---- RoPE scaling ---- */

/* The factor by which Llama-3 style scaling divides the frequency of one
 * rotary pair (what rope_freqs.weight stores). */
static double llama3_factor(double freq, double factor, double low, double high, double orig) {
    double wavelen = 2.0 * M_PI / freq;
    if (wavelen < orig / high) return 1.0;
    if (wavelen > orig / low) return factor;
    double smooth = (orig / wavelen - low) / (high - low);
    return 1.0 / ((1.0 - smooth) / factor + smooth);
}

static int matches_llama3(const float *stored, uint32_t n, const hparams *h, double factor, double orig) {
    for (uint32_t i = 0; i < n; i++) {
        double freq = 1.0 / pow((double)h->rope_theta, (double)(2 * i) / (double)h->head_dim);
        double want = llama3_factor(freq, factor, 1.0, 4.0, orig);
        if (fabs(stored[i] - want) > 1e-3 * want) return 0;
    }
    return 1;
}

/* Recovers rope_scaling from rope_freqs.weight by trying the factors Llama
 * 3.x models use (or the one the metadata names). */
static int rope_scaling_from_freqs(const gguf_ctx *g, hparams *h, const gguf_tensor *t, lq_error *err) {
    uint32_t n = h->head_dim / 2;
    if (t->n_elements != n) return lq_fail(err, "rope_freqs.weight has %llu values, expected %u",
                                           (unsigned long long)t->n_elements, n);
    float *f = malloc(n * sizeof *f);
    if (!f) return lq_fail(err, "out of memory");
    if (ggml_dequantize(t->type, t->data, f, n, err)) {
        free(f);
        return -1;
    }
    float meta_factor = 0;
    uint32_t orig = 8192;
    if (arch_has(g, h, "rope.scaling.factor") && arch_f32(g, h, "rope.scaling.factor", &meta_factor, err)) goto fail;
    if (arch_has(g, h, "rope.scaling.original_context_length") &&
        arch_u32(g, h, "rope.scaling.original_context_length", &orig, err))
        goto fail;
    const double candidates[] = {meta_factor, 8.0, 32.0, 16.0, 4.0, 2.0};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        if (candidates[i] <= 0 || !matches_llama3(f, n, h, candidates[i], orig)) continue;
        h->rope_scaling = json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor", candidates[i],
                                    "low_freq_factor", 1.0, "high_freq_factor", 4.0,
                                    "original_max_position_embeddings", (int)orig);
        free(f);
        return 0;
    }
    lq_fail(err, "rope_freqs.weight does not match Llama-3 RoPE scaling; this model's RoPE cannot be expressed in "
                 "config.json");
fail:
    free(f);
    return -1;
}

static int rope_scaling_from_meta(const gguf_ctx *g, hparams *h, lq_error *err) {
    gguf_str type = {"none", 4};
    float factor = 0;
    uint32_t orig = 0;
    if (arch_has(g, h, "rope.scaling.type") && arch_str(g, h, "rope.scaling.type", &type, err)) return -1;
    if (arch_has(g, h, "rope.scale_linear")) {
        if (arch_f32(g, h, "rope.scale_linear", &factor, err)) return -1;
        if (factor != 1.0f) type = (gguf_str){"linear", 6};
    }
    if (gguf_str_eq(type, "none")) return 0;
    if (arch_has(g, h, "rope.scaling.factor") && arch_f32(g, h, "rope.scaling.factor", &factor, err)) return -1;
    if (!(factor > 0)) return lq_fail(err, "RoPE scaling without a positive factor");
    if (gguf_str_eq(type, "linear")) {
        h->rope_scaling = json_pack("{s:s, s:f}", "rope_type", "linear", "factor", (double)factor);
        return 0;
    }
    if (gguf_str_eq(type, "yarn")) {
        if (arch_u32(g, h, "rope.scaling.original_context_length", &orig, err)) return -1;
        h->rope_scaling = json_pack("{s:s, s:f, s:i}", "rope_type", "yarn", "factor", (double)factor,
                                    "original_max_position_embeddings", (int)orig);
        return 0;
    }
    char q[40];
    return lq_fail(err, "RoPE scaling type '%s' is not supported", gguf_str_quote(type, q, sizeof q));
}

/* ---- the tensor plan ---- */

static void set_shape(plan_entry *e, int ndim, int64_t a, int64_t b) {
    e->ndim = ndim;
    e->shape[0] = a;
    e->shape[1] = b;
}

/* Hugging Face shape of a block part (rows, cols) or its bias (rows). */
static void part_shape(const hparams *h, int part, int bias, plan_entry *e) {
    int64_t q = (int64_t)h->n_head * h->head_dim, kv = (int64_t)h->n_head_kv * h->head_dim;
    int64_t rows = h->hidden, cols = h->hidden;
    switch (part) {
    case P_Q: rows = q; break;
    case P_K: case P_V: rows = kv; break;
    case P_O: cols = q; break;
    case P_GATE: case P_UP: rows = h->ffn; break;
    case P_DOWN: cols = h->ffn; break;
    default: break;
    }
    if (bias || part == P_ATTN_NORM || part == P_FFN_NORM) set_shape(e, 1, rows, 0);
    else set_shape(e, 2, rows, cols);
}

/* Parses "blk.N.PART.weight|bias". */
static int parse_block_name(const char *name, uint32_t *layer, int *part, int *bias) {
    if (strncmp(name, "blk.", 4)) return -1;
    char *end;
    errno = 0;
    unsigned long n = strtoul(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || errno || n > UINT32_MAX || (name[4] == '0' && end != name + 5)) return -1;
    const char *rest = end + 1;
    for (int p = 0; p < N_PARTS; p++) {
        size_t len = strlen(parts[p].gguf);
        if (strncmp(rest, parts[p].gguf, len)) continue;
        if (!strcmp(rest + len, ".weight")) *bias = 0;
        else if (!strcmp(rest + len, ".bias") && parts[p].has_bias) *bias = 1;
        else continue;
        *layer = (uint32_t)n;
        *part = p;
        return 0;
    }
    return -1;
}

static int map_block_tensor(const hparams *h, plan *pl, const gguf_tensor *t, plan_entry *e, lq_error *err) {
    uint32_t layer;
    int part, bias;
    if (parse_block_name(t->name, &layer, &part, &bias))
        return lq_fail(err, "tensor '%s' is not part of a %s model that lorq knows how to convert", t->name,
                       h->arch->name);
    if (layer >= h->n_layers)
        return lq_fail(err, "tensor '%s' belongs to layer %u but the model has %u layers", t->name, layer, h->n_layers);
    snprintf(e->name, sizeof e->name, "model.layers.%u.%s.%s", layer, parts[part].hf, bias ? "bias" : "weight");
    part_shape(h, part, bias, e);
    if (h->arch->permute_qk && (part == P_Q || part == P_K)) e->permute_heads = part == P_Q ? h->n_head : h->n_head_kv;
    pl->present[((size_t)layer * N_PARTS + part) * 2 + bias] = 1;
    return 0;
}

static int check_shape(const gguf_tensor *t, const plan_entry *e, lq_error *err) {
    int ok = (int)t->n_dims == e->ndim;
    for (int d = 0; ok && d < e->ndim; d++) ok = t->ne[e->ndim - 1 - d] == e->shape[d];
    if (ok) return 0;
    char got[96] = "", want[96] = "";
    for (uint32_t d = 0; d < t->n_dims; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->ne[t->n_dims - 1 - d]);
    for (int d = 0; d < e->ndim; d++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "", (long long)e->shape[d]);
    return lq_fail(err, "tensor '%s' has shape [%s] but the metadata implies [%s]", t->name, got, want);
}

static int map_tensor(hparams *h, plan *pl, const gguf_tensor *t, lq_error *err) {
    plan_entry *e = &pl->e[pl->n];
    memset(e, 0, sizeof *e);
    e->src = t;
    if (!strcmp(t->name, "rope_freqs.weight")) {
        pl->rope_freqs = t;
        return 0;
    } else if (!strcmp(t->name, "token_embd.weight") || !strcmp(t->name, "output.weight")) {
        int out = t->name[0] == 'o';
        snprintf(e->name, sizeof e->name, "%s", out ? "lm_head.weight" : "model.embed_tokens.weight");
        set_shape(e, 2, t->n_dims == 2 ? t->ne[1] : -1, h->hidden);
        if (!out) h->vocab_rows = (uint64_t)t->ne[1];
        if (out) h->tied = 0;
    } else if (!strcmp(t->name, "output_norm.weight")) {
        snprintf(e->name, sizeof e->name, "model.norm.weight");
        set_shape(e, 1, h->hidden, 0);
    } else if (map_block_tensor(h, pl, t, e, err)) {
        return -1;
    }
    if (check_shape(t, e, err)) return -1;
    if (!ggml_can_dequantize(t->type))
        return lq_fail(err, "tensor '%s' has type %s, which lorq cannot dequantize (supported: F32, F16, BF16, Q4_0, "
                            "Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", t->name, ggml_type_name(t->type));
    if (e->permute_heads && (e->shape[0] % e->permute_heads || (e->shape[0] / e->permute_heads) % 2))
        return lq_fail(err, "tensor '%s': %lld rows do not split into %u heads of even size", t->name,
                       (long long)e->shape[0], e->permute_heads);
    pl->n++;
    return 0;
}

/* Bias sets must be whole: a part has a bias in every layer or in none, and
 * the architecture's config must be able to say so. */
static int check_layers(hparams *h, const plan *pl, lq_error *err) {
    for (uint32_t l = 0; l < h->n_layers; l++)
        for (int p = 0; p < N_PARTS; p++) {
            const uint8_t *pr = &pl->present[((size_t)l * N_PARTS + p) * 2];
            const uint8_t *first = &pl->present[(size_t)p * 2];
            if (!pr[0]) return lq_fail(err, "tensor 'blk.%u.%s.weight' is missing", l, parts[p].gguf);
            if (pr[1] != first[1]) return lq_fail(err, "'%s.bias' is present in some layers and not others",
                                                  parts[p].gguf);
        }
    const uint8_t *l0 = pl->present;
    int q = l0[P_Q * 2 + 1], k = l0[P_K * 2 + 1], v = l0[P_V * 2 + 1], o = l0[P_O * 2 + 1];
    int gate = l0[P_GATE * 2 + 1], up = l0[P_UP * 2 + 1], down = l0[P_DOWN * 2 + 1];
    if (h->arch->qkv_bias) {
        if (!q || !k || !v || o || gate || up || down)
            return lq_fail(err, "%s models have biases on q/k/v_proj only; this file's biases differ", h->arch->name);
        return 0;
    }
    if (q != k || q != v || q != o || gate != up || gate != down)
        return lq_fail(err, "biases on only some attention or MLP projections cannot be expressed in LlamaConfig");
    h->attention_bias = q;
    h->mlp_bias = gate;
    return 0;
}

static int make_plan(const gguf_ctx *g, hparams *h, plan *pl, lq_error *err) {
    pl->e = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *pl->e);
    pl->present = calloc((size_t)h->n_layers * N_PARTS * 2, 1);
    if (!pl->e || !pl->present) return lq_fail(err, "out of memory");
    h->tied = 1;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (map_tensor(h, pl, &g->tensors[i], err)) return -1;
    if (!gguf_find_tensor(g, "token_embd.weight")) return lq_fail(err, "tensor 'token_embd.weight' is missing");
    if (!gguf_find_tensor(g, "output_norm.weight")) return lq_fail(err, "tensor 'output_norm.weight' is missing");
    const gguf_tensor *out = gguf_find_tensor(g, "output.weight");
    if (out && (uint64_t)out->ne[1] != h->vocab_rows)
        return lq_fail(err, "output.weight has %lld rows but token_embd.weight has %llu", (long long)out->ne[1],
                       (unsigned long long)h->vocab_rows);
    if (check_layers(h, pl, err)) return -1;
    if (pl->rope_freqs && h->arch->permute_qk) return rope_scaling_from_freqs(g, h, pl->rope_freqs, err);
    if (pl->rope_freqs) return lq_fail(err, "tensor 'rope_freqs.weight' is not expected in a %s model", h->arch->name);
    return rope_scaling_from_meta(g, h, err);
}

static void free_plan(plan *pl) {
    free(pl->e);
    free(pl->present);
}

/* Every token id must have an embedding row (rows beyond the vocabulary are
 * padding, which is fine). */
static int check_vocab_size(const gguf_ctx *g, const hparams *h, lq_error *err) {
    const gguf_str *tokens;
    uint64_t n;
    if (gguf_get_str_arr(g, "tokenizer.ggml.tokens", &tokens, &n, err)) return -1;
    if (n > h->vocab_rows)
        return lq_fail(err, "the tokenizer has %llu tokens but token_embd.weight only %llu rows", (unsigned long long)n,
                       (unsigned long long)h->vocab_rows);
    return 0;
}

/* ---- JSON documents ---- */

/* The shortest decimal that reads back as the same f32, so 1e-05f is written
 * "1e-05", not 9.9999997473787516e-06. */
static json_t *json_f32(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static void set_id(json_t *o, const char *key, int64_t id) {
    if (id >= 0) json_object_set_new(o, key, json_integer(id));
}

static json_t *model_config(const hparams *h, lq_dtype dtype) {
    int llama = h->arch->permute_qk;
    json_t *c = json_pack("{s:[s]}", "architectures", h->arch->hf_arch);
    if (llama) json_object_set_new(c, "attention_bias", json_boolean(h->attention_bias));
    json_object_set_new(c, "attention_dropout", json_real(0.0));
    set_id(c, "bos_token_id", h->bos);
    set_id(c, "eos_token_id", h->eos);
    json_object_set_new(c, "head_dim", json_integer(h->head_dim));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    json_object_set_new(c, "hidden_size", json_integer(h->hidden));
    json_object_set_new(c, "initializer_range", json_real(0.02));
    json_object_set_new(c, "intermediate_size", json_integer(h->ffn));
    json_object_set_new(c, "max_position_embeddings", json_integer((json_int_t)h->context_length));
    if (!llama) json_object_set_new(c, "max_window_layers", json_integer(h->n_layers));
    if (llama) json_object_set_new(c, "mlp_bias", json_boolean(h->mlp_bias));
    json_object_set_new(c, "model_type", json_string(h->arch->name));
    json_object_set_new(c, "num_attention_heads", json_integer(h->n_head));
    json_object_set_new(c, "num_hidden_layers", json_integer(h->n_layers));
    json_object_set_new(c, "num_key_value_heads", json_integer(h->n_head_kv));
    set_id(c, "pad_token_id", h->pad);
    json_object_set_new(c, "rms_norm_eps", json_f32(h->rms_eps));
    json_object_set(c, "rope_scaling", h->rope_scaling ? h->rope_scaling : json_null());
    json_object_set_new(c, "rope_theta", json_f32(h->rope_theta));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(h->tied));
    json_object_set_new(c, "torch_dtype", json_string(dtype == LQ_DTYPE_BF16 ? "bfloat16" : "float32"));
    json_object_set_new(c, "use_cache", json_true());
    if (!llama) json_object_set_new(c, "use_sliding_window", json_false());
    json_object_set_new(c, "vocab_size", json_integer((json_int_t)h->vocab_rows));
    return c;
}

static json_t *generation_config(const hparams *h) {
    json_t *c = json_object();
    set_id(c, "bos_token_id", h->bos);
    set_id(c, "eos_token_id", h->eos);
    set_id(c, "pad_token_id", h->pad);
    return c;
}

static int write_json(const char *dir, const char *name, json_t *doc, lq_error *err) {
    char path[FILE_CAP];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!doc) return lq_fail(err, "%s: out of memory building it", name);
    int rc = json_dump_file(doc, path, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(doc);
    return rc ? lq_fail(err, "%s: cannot write: %s", path, strerror(errno)) : 0;
}

/* ---- tensor data ---- */

/* GGUF rows of head h come in order (i, j), i < head_dim/2, j < 2; Hugging
 * Face wants (j, i). */
static void unpermute_rows(const float *src, float *dst, int64_t rows, int64_t cols, uint32_t heads) {
    int64_t hd = rows / heads, half = hd / 2;
    size_t row_bytes = (size_t)cols * sizeof(float);
    for (int64_t h = 0; h < heads; h++)
        for (int64_t j = 0; j < 2; j++)
            for (int64_t i = 0; i < half; i++)
                memcpy(dst + (h * hd + j * half + i) * cols, src + (h * hd + 2 * i + j) * cols, row_bytes);
}

/* Dequantizes one tensor into f32 (unpermuted), then to the output dtype. */
static void *tensor_bytes(const plan_entry *e, lq_dtype dtype, size_t *nbytes, lq_error *err) {
    size_t n = (size_t)e->src->n_elements;
    float *f = malloc(n * sizeof *f + 1), *tmp = NULL;
    if (!f) goto oom;
    if (ggml_dequantize(e->src->type, e->src->data, f, n, err)) goto fail;
    if (e->permute_heads) {
        if (!(tmp = malloc(n * sizeof *tmp + 1))) goto oom;
        int64_t cols = e->ndim == 2 ? e->shape[1] : 1;
        unpermute_rows(f, tmp, e->shape[0], cols, e->permute_heads);
        free(f);
        f = tmp;
    }
    *nbytes = n * lq_dtype_size(dtype);
    if (dtype == LQ_DTYPE_F32) return f;
    void *out = malloc(*nbytes + 1);
    if (!out) goto oom;
    lq_convert(out, dtype, f, LQ_DTYPE_F32, n);
    free(f);
    return out;
oom:
    lq_fail(err, "out of memory converting tensor '%s'", e->src->name);
fail:
    free(f);
    return NULL;
}

static int write_weights(const char *dir, const plan *pl, lq_dtype dtype, lq_progress *progress,
                         gguf_convert_stats *stats, lq_error *err) {
    char path[FILE_CAP];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_writer *w = st_writer_new(path);
    if (!w) return lq_fail(err, "%s: out of memory", path);
    if (st_writer_meta(w, "format", "pt", err)) goto fail;
    uint64_t total = 0;
    for (size_t i = 0; i < pl->n; i++) {
        if (st_writer_declare(w, pl->e[i].name, dtype, pl->e[i].ndim, pl->e[i].shape, err)) goto fail;
        total += pl->e[i].src->n_elements * lq_dtype_size(dtype);
    }
    if (progress) lq_progress_start(progress, "convert-gguf", total);
    for (size_t i = 0; i < pl->n; i++) {
        size_t nbytes;
        void *data = tensor_bytes(&pl->e[i], dtype, &nbytes, err);
        if (!data) goto fail;
        int rc = st_writer_write(w, pl->e[i].name, data, nbytes, err);
        free(data);
        if (rc) goto fail;
        if (progress) lq_progress_add(progress, nbytes);
        stats->n_tensors++;
        stats->n_params += pl->e[i].src->n_elements;
    }
    if (st_writer_finish(w, err)) return -1;
    if (progress) lq_progress_finish(progress);
    struct stat st;
    if (stat(path, &st) == 0) stats->out_bytes = (uint64_t)st.st_size;
    return 0;
fail:
    st_writer_abort(w);
    return -1;
}

/* ---- the output folder ---- */

static const char *const out_files[] = {"config.json", "generation_config.json", "tokenizer.json",
                                        "tokenizer_config.json", "model.safetensors", "model.safetensors.tmp"};

static void remove_tmp_dir(const char *tmp) {
    char path[FILE_CAP];
    for (size_t i = 0; i < sizeof out_files / sizeof out_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, out_files[i]);
        unlink(path);
    }
    rmdir(tmp);
}

static int mkdir_parents(const char *dir, lq_error *err) {
    char path[DIR_CAP];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0777) && errno != EEXIST) return lq_fail(err, "%s: %s", path, strerror(errno));
        *p = '/';
    }
    return 0;
}

/* The destination may be absent or an empty folder (rename replaces an
 * empty folder); anything else is somebody's data and we refuse to touch it. */
static int check_destination(const char *out_dir, lq_error *err) {
    struct stat st;
    if (stat(out_dir, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return lq_fail(err, "%s exists and is not a folder", out_dir);
    DIR *d = opendir(out_dir);
    if (!d) return lq_fail(err, "%s: %s", out_dir, strerror(errno));
    struct dirent *ent;
    int empty = 1;
    while (empty && (ent = readdir(d)))
        if (strcmp(ent->d_name, ".") && strcmp(ent->d_name, "..")) empty = 0;
    closedir(d);
    if (!empty) return lq_fail(err, "%s already exists and is not empty; remove it or choose another folder", out_dir);
    return 0;
}

static int make_tmp_dir(const char *out_dir, char *tmp, size_t cap, lq_error *err) {
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/') len--;
    if (len + 32 >= cap || len == 0) return lq_fail(err, "output path '%s' is too long or empty", out_dir);
    snprintf(tmp, cap, "%.*s.tmp-%ld", (int)len, out_dir, (long)getpid());
    if (mkdir_parents(tmp, err)) return -1;
    remove_tmp_dir(tmp); /* a leftover from a crashed run with our pid */
    if (mkdir(tmp, 0777) != 0) return lq_fail(err, "%s: %s", tmp, strerror(errno));
    return 0;
}

static int write_folder(const hparams *h, const plan *pl, json_t *tok, json_t *tok_cfg, const char *tmp,
                        lq_dtype dtype, lq_progress *progress, gguf_convert_stats *stats, lq_error *err) {
    if (write_json(tmp, "tokenizer.json", json_incref(tok), err) ||
        write_json(tmp, "tokenizer_config.json", json_incref(tok_cfg), err) ||
        write_json(tmp, "config.json", model_config(h, dtype), err) ||
        write_json(tmp, "generation_config.json", generation_config(h), err))
        return -1;
    return write_weights(tmp, pl, dtype, progress, stats, err);
}

static void describe_dropped(const plan *pl, const hparams *h, gguf_convert_stats *stats) {
    if (pl->rope_freqs && h->rope_scaling)
        snprintf(stats->dropped, sizeof stats->dropped,
                 "rope_freqs.weight (Llama-3 RoPE factors; config.json rope_scaling reproduces them)");
}

int gguf_convert(const char *in_path, const char *out_dir, lq_dtype dtype, lq_progress *progress,
                 gguf_convert_stats *stats, lq_error *err) {
    gguf_ctx g;
    hparams h;
    plan pl;
    char tmp[DIR_CAP];
    json_t *tok = NULL, *tok_cfg = NULL;
    int rc = -1;
    memset(stats, 0, sizeof *stats);
    memset(&h, 0, sizeof h);
    memset(&pl, 0, sizeof pl);
    if (dtype != LQ_DTYPE_F32 && dtype != LQ_DTYPE_BF16) return lq_fail(err, "output dtype must be f32 or bf16");
    if (gguf_open(&g, in_path, err)) return -1;
    if (read_hparams(&g, &h, err) || make_plan(&g, &h, &pl, err) ||
        gguf_build_tokenizer(&g, h.context_length, &tok, &tok_cfg, err) || check_vocab_size(&g, &h, err)) {
        lq_error_prefix(err, "%s", in_path);
        goto done;
    }
    if (check_destination(out_dir, err) || make_tmp_dir(out_dir, tmp, sizeof tmp, err)) goto done;
    if (write_folder(&h, &pl, tok, tok_cfg, tmp, dtype, progress, stats, err)) {
        remove_tmp_dir(tmp);
        goto done;
    }
    if (rename(tmp, out_dir) != 0) {
        lq_fail(err, "renaming %s to %s: %s", tmp, out_dir, strerror(errno));
        remove_tmp_dir(tmp);
        goto done;
    }
    describe_dropped(&pl, &h, stats);
    rc = 0;
done:
    json_decref(tok);
    json_decref(tok_cfg);
    json_decref(h.rope_scaling);
    free_plan(&pl);
    gguf_close(&g);
    return rc;
}
