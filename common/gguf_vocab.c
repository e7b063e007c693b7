/* gguf_vocab.c — rebuilding a `tokenizers` tokenizer.json (and the matching
 * tokenizer_config.json) from a GGUF's tokenizer.ggml.* metadata.
 *
 * GGUF keeps the raw ingredients: the token strings in id order, per-token
 * types (normal, control, user-defined, byte, ...), merges for byte-level BPE
 * or scores for SentencePiece, the special token ids and a pre-tokenizer
 * name. What the GGUF does not keep is the pipeline around the model
 * (normalizer, pre-tokenizer, post-processor, decoder), so we emit the one the
 * original Hugging Face tokenizer of that family ships, chosen by
 * tokenizer.ggml.model and tokenizer.ggml.pre. Unknown families are refused
 * rather than guessed: a subtly wrong tokenizer is worse than none.
 *
 * SentencePiece ("llama") vocabularies have scores instead of merges; the
 * merges are derived the way transformers does when it loads such a GGUF:
 * every split of every token into two vocabulary pieces is a merge, ranked by
 * the score of the token it forms. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_convert.h"

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4 };

typedef struct vocab {
    const gguf_str *tokens;
    uint64_t n;
    const gguf_array *types;  /* NULL when absent */
    const gguf_array *scores; /* NULL when absent */
    const gguf_str *merges;
    uint64_t n_merges;
    int64_t bos, eos, unk, pad; /* -1 when absent */
    int add_bos, add_eos, add_space_prefix;
    int is_spm; /* tokenizer.ggml.model == "llama" */
    gguf_str pre;
} vocab;

/* Byte-level split patterns of the families we know, as their tokenizer.json
 * ships them (regex escapes, not C escapes). */
static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ---- reading the metadata ---- */

static int optional_id(const gguf_ctx *g, const char *key, uint64_t n, int64_t *out, lq_error *err) {
    *out = -1;
    if (!gguf_find(g, key)) return 0;
    uint64_t id;
    if (gguf_get_u64(g, key, &id, err)) return -1;
    if (id >= n) return lq_fail(err, "%s is %llu, but the vocabulary has %llu tokens", key, (unsigned long long)id,
                                (unsigned long long)n);
    *out = (int64_t)id;
    return 0;
}

static int optional_bool(const gguf_ctx *g, const char *key, int dflt, int *out, lq_error *err) {
    *out = dflt;
    return gguf_find(g, key) ? gguf_get_bool(g, key, out, err) : 0;
}

static int per_token_array(const gguf_ctx *g, const char *key, uint64_t n, int want_float, const gguf_array **out,
                           lq_error *err) {
    *out = NULL;
    if (!gguf_find(g, key)) return 0;
    const gguf_array *a;
    if (gguf_get_arr(g, key, GGUF_TYPE_COUNT, &a, err)) return -1;
    int ok = want_float ? (a->type == GGUF_TYPE_FLOAT32 || a->type == GGUF_TYPE_FLOAT64)
                        : (a->raw && a->type != GGUF_TYPE_FLOAT32 && a->type != GGUF_TYPE_FLOAT64 &&
                           a->type != GGUF_TYPE_BOOL);
    if (!ok) return lq_fail(err, "%s is an array of %s, expected %s", key, gguf_type_name(a->type),
                            want_float ? "floats" : "integers");
    if (a->n != n) return lq_fail(err, "%s has %llu entries for %llu tokens", key, (unsigned long long)a->n,
                                  (unsigned long long)n);
    *out = a;
    return 0;
}

static int token_type(const vocab *v, uint64_t id) {
    return v->types ? (int)gguf_arr_i64(v->types, id) : TOKEN_NORMAL;
}

static int load_vocab(const gguf_ctx *g, vocab *v, lq_error *err) {
    memset(v, 0, sizeof *v);
    gguf_str model;
    char q[72];
    if (gguf_get_str(g, "tokenizer.ggml.model", &model, err)) return -1;
    if (gguf_str_eq(model, "llama")) v->is_spm = 1;
    else if (!gguf_str_eq(model, "gpt2"))
        return lq_fail(err, "tokenizer.ggml.model '%s' is not supported (only 'gpt2' byte-level BPE and 'llama' "
                            "SentencePiece)", gguf_str_quote(model, q, sizeof q));
    if (gguf_get_str_arr(g, "tokenizer.ggml.tokens", &v->tokens, &v->n, err)) return -1;
    if (v->n == 0) return lq_fail(err, "tokenizer.ggml.tokens is empty");
    if (per_token_array(g, "tokenizer.ggml.token_type", v->n, 0, &v->types, err) ||
        per_token_array(g, "tokenizer.ggml.scores", v->n, 1, &v->scores, err))
        return -1;
    if (v->is_spm && !v->scores) return lq_fail(err, "a SentencePiece GGUF tokenizer needs tokenizer.ggml.scores");
    if (!v->is_spm && gguf_get_str_arr(g, "tokenizer.ggml.merges", &v->merges, &v->n_merges, err)) return -1;
    v->pre.ptr = "default";
    v->pre.len = 7;
    if (gguf_find(g, "tokenizer.ggml.pre") && gguf_get_str(g, "tokenizer.ggml.pre", &v->pre, err)) return -1;
    if (optional_id(g, "tokenizer.ggml.bos_token_id", v->n, &v->bos, err) ||
        optional_id(g, "tokenizer.ggml.eos_token_id", v->n, &v->eos, err) ||
        optional_id(g, "tokenizer.ggml.unknown_token_id", v->n, &v->unk, err) ||
        optional_id(g, "tokenizer.ggml.padding_token_id", v->n, &v->pad, err))
        return -1;
    if (optional_bool(g, "tokenizer.ggml.add_bos_token", v->is_spm, &v->add_bos, err) ||
        optional_bool(g, "tokenizer.ggml.add_eos_token", 0, &v->add_eos, err) ||
        optional_bool(g, "tokenizer.ggml.add_space_prefix", v->is_spm, &v->add_space_prefix, err))
        return -1;
    /* SentencePiece puts <unk> at id 0; older files do not always say so. */
    if (v->is_spm && v->unk < 0 && token_type(v, 0) == TOKEN_UNKNOWN) v->unk = 0;
    return 0;
}

static json_t *token_json(const vocab *v, uint64_t id, lq_error *err) {
    json_t *s = json_stringn(v->tokens[id].ptr, v->tokens[id].len);
    if (!s) lq_fail(err, "token %llu is not valid UTF-8", (unsigned long long)id);
    return s;
}

/* ---- small JSON builders (jansson's json_pack keeps them short) ---- */

static json_t *bytelevel(const char *type, int add_prefix_space, int trim_offsets, int use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", type, "add_prefix_space", add_prefix_space, "trim_offsets",
                     trim_offsets, "use_regex", use_regex);
}

static json_t *split_regex(const char *pattern) {
    return json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", pattern, "behavior",
                     "Isolated", "invert", 0);
}

static json_t *replace(const char *from, const char *to) {
    return json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", from, "content", to);
}

/* ---- the pipeline around the model, per family ---- */

typedef struct pipeline {
    json_t *normalizer, *pre_tokenizer, *decoder, *post_bytelevel;
    int ignore_merges;
} pipeline;

static int byte_level_pipeline(const vocab *v, pipeline *p, lq_error *err) {
    gguf_str pre = v->pre;
    p->normalizer = json_null();
    p->decoder = bytelevel("ByteLevel", 1, 1, 1);
    p->post_bytelevel = bytelevel("ByteLevel", 1, 0, 1);
    if (gguf_str_eq(pre, "default") || gguf_str_eq(pre, "gpt2") || gguf_str_eq(pre, "gpt-2")) {
        p->pre_tokenizer = bytelevel("ByteLevel", 0, 1, 1);
    } else if (gguf_str_eq(pre, "smollm") || gguf_str_eq(pre, "starcoder") || gguf_str_eq(pre, "refact")) {
        /* The StarCoder family: every digit alone, then GPT-2's split. */
        p->pre_tokenizer = json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                                     "Digits", "individual_digits", 1, bytelevel("ByteLevel", 0, 1, 1));
    } else if (gguf_str_eq(pre, "llama-bpe") || gguf_str_eq(pre, "llama3")) {
        p->pre_tokenizer = json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers",
                                     split_regex(LLAMA3_PATTERN), bytelevel("ByteLevel", 0, 1, 0));
        p->ignore_merges = 1;
    } else if (gguf_str_eq(pre, "qwen2")) {
        json_decref(p->decoder);
        json_decref(p->post_bytelevel);
        json_decref(p->normalizer);
        p->normalizer = json_pack("{s:s}", "type", "NFC");
        p->pre_tokenizer = json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers",
                                     split_regex(QWEN2_PATTERN), bytelevel("ByteLevel", 0, 0, 0));
        p->decoder = bytelevel("ByteLevel", 0, 0, 0);
        p->post_bytelevel = bytelevel("ByteLevel", 0, 0, 0);
    } else {
        char q[72];
        return lq_fail(err, "tokenizer.ggml.pre '%s' is not supported (known: default, gpt2, smollm, starcoder, "
                            "refact, llama-bpe, qwen2)", gguf_str_quote(pre, q, sizeof q));
    }
    return 0;
}

/* Llama-2 / Mistral: spaces become "▁" (and one is prepended) in the
 * normalizer; no pre-tokenizer; the decoder undoes it and reassembles
 * <0xXX> byte tokens. */
static void spm_pipeline(const vocab *v, pipeline *p) {
    if (v->add_space_prefix)
        p->normalizer = json_pack("{s:s, s:[{s:s, s:s}, o]}", "type", "Sequence", "normalizers", "type", "Prepend",
                                  "prepend", "\xe2\x96\x81", replace(" ", "\xe2\x96\x81"));
    else
        p->normalizer = json_pack("{s:s, s:[o]}", "type", "Sequence", "normalizers", replace(" ", "\xe2\x96\x81"));
    p->pre_tokenizer = json_null();
    json_t *decoders = json_pack("[o, {s:s}, {s:s}]", replace("\xe2\x96\x81", " "), "type", "ByteFallback", "type",
                                 "Fuse");
    if (v->add_space_prefix)
        json_array_append_new(decoders, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ", "start",
                                                  1, "stop", 0));
    p->decoder = json_pack("{s:s, s:o}", "type", "Sequence", "decoders", decoders);
    p->post_bytelevel = NULL;
}

/* One sequence of a TemplateProcessing template: [bos] $seq [eos]. */
static void template_seq(json_t *arr, const char *bos, const char *eos, const char *seq, int type_id) {
    if (bos) json_array_append_new(arr, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", bos, "type_id", type_id));
    json_array_append_new(arr, json_pack("{s:{s:s, s:i}}", "Sequence", "id", seq, "type_id", type_id));
    if (eos) json_array_append_new(arr, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", eos, "type_id", type_id));
}

/* bos/eos around every sequence, as the original tokenizers add them; NULL
 * (and no error) when neither is added. */
static json_t *template_processing(const vocab *v, json_t *tok_bos, json_t *tok_eos) {
    const char *bos = v->add_bos && tok_bos ? json_string_value(tok_bos) : NULL;
    const char *eos = v->add_eos && tok_eos ? json_string_value(tok_eos) : NULL;
    if (!bos && !eos) return NULL;
    json_t *single = json_array(), *pair = json_array(), *specials = json_object();
    template_seq(single, bos, eos, "A", 0);
    template_seq(pair, bos, eos, "A", 0);
    template_seq(pair, bos, eos, "B", 1);
    if (bos) json_object_set_new(specials, bos, json_pack("{s:s, s:[I], s:[s]}", "id", bos, "ids", (json_int_t)v->bos,
                                                          "tokens", bos));
    if (eos) json_object_set_new(specials, eos, json_pack("{s:s, s:[I], s:[s]}", "id", eos, "ids", (json_int_t)v->eos,
                                                          "tokens", eos));
    return json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing", "single", single, "pair", pair,
                     "special_tokens", specials);
}

/* ---- vocabulary, merges, added tokens ---- */

/* token -> id. A token string that repeats keeps its first id (later copies
 * are unreachable by encoding anyway). */
static json_t *build_vocab_map(const vocab *v, lq_error *err) {
    json_t *map = json_object();
    for (uint64_t i = 0; i < v->n; i++) {
        const gguf_str *t = &v->tokens[i];
        if (json_object_getn(map, t->ptr, t->len)) continue;
        if (json_object_setn_new(map, t->ptr, t->len, json_integer((json_int_t)i))) {
            json_decref(map);
            lq_fail(err, "token %llu is not valid UTF-8", (unsigned long long)i);
            return NULL;
        }
    }
    return map;
}

static int64_t vocab_id(json_t *map, const char *s, size_t len) {
    json_t *id = json_object_getn(map, s, len);
    return id ? (int64_t)json_integer_value(id) : -1;
}

static json_t *merges_from_gguf(const vocab *v, lq_error *err) {
    json_t *out = json_array();
    for (uint64_t i = 0; i < v->n_merges; i++) {
        json_t *m = json_stringn(v->merges[i].ptr, v->merges[i].len);
        if (!m || !memchr(v->merges[i].ptr, ' ', v->merges[i].len)) {
            json_decref(m);
            json_decref(out);
            lq_fail(err, "tokenizer.ggml.merges entry %llu is not a valid \"left right\" pair", (unsigned long long)i);
            return NULL;
        }
        json_array_append_new(out, m);
    }
    return out;
}

typedef struct spm_merge {
    uint32_t tok, left, right, split;
    float score, score_left, score_right;
} spm_merge;

/* Higher-scored tokens first; within a token, higher-scored left then right
 * pieces; remaining ties in token order then split position (the order a
 * stable sort would leave them in). */
static int cmp_spm_merge(const void *pa, const void *pb) {
    const spm_merge *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->tok != b->tok) return a->tok < b->tok ? -1 : 1;
    if (a->score_left != b->score_left) return a->score_left > b->score_left ? -1 : 1;
    if (a->score_right != b->score_right) return a->score_right > b->score_right ? -1 : 1;
    return a->split < b->split ? -1 : a->split > b->split;
}

static int push_merge(spm_merge **arr, size_t *n, size_t *cap, spm_merge m) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        spm_merge *na = realloc(*arr, nc * sizeof *na);
        if (!na) return -1;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = m;
    return 0;
}

/* Every way to cut a token at a UTF-8 character boundary into two pieces that
 * are both in the vocabulary is a merge producing that token. Pieces holding
 * a space cannot be written as "left right" and are skipped (SentencePiece
 * pieces spell spaces as U+2581). Tokens longer than SPM_MAX_PIECE bytes get
 * no merges: real pieces are a few characters, and the cost of trying every
 * cut grows with the square of the length. */
#define SPM_MAX_PIECE 1024
static json_t *merges_from_scores(const vocab *v, json_t *map, lq_error *err) {
    spm_merge *all = NULL;
    size_t n = 0, cap = 0;
    for (uint64_t i = 0; i < v->n; i++) {
        const gguf_str *t = &v->tokens[i];
        if (t->len > SPM_MAX_PIECE || vocab_id(map, t->ptr, t->len) != (int64_t)i) continue; /* long or repeated */
        for (uint64_t k = 1; k < t->len; k++) {
            if (((unsigned char)t->ptr[k] & 0xC0) == 0x80) continue;
            int64_t l = vocab_id(map, t->ptr, k), r = vocab_id(map, t->ptr + k, t->len - k);
            if (l < 0 || r < 0 || memchr(t->ptr, ' ', t->len)) continue;
            spm_merge m = {(uint32_t)i, (uint32_t)l, (uint32_t)r, (uint32_t)k, (float)gguf_arr_f64(v->scores, i),
                           (float)gguf_arr_f64(v->scores, (uint64_t)l), (float)gguf_arr_f64(v->scores, (uint64_t)r)};
            if (push_merge(&all, &n, &cap, m)) {
                free(all);
                lq_fail(err, "out of memory deriving merges");
                return NULL;
            }
        }
    }
    if (n) qsort(all, n, sizeof *all, cmp_spm_merge);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        const gguf_str *t = &v->tokens[all[i].tok];
        json_array_append_new(out, json_sprintf("%.*s %.*s", (int)all[i].split, t->ptr,
                                                (int)(t->len - all[i].split), t->ptr + all[i].split));
    }
    free(all);
    return out;
}

static int is_added(const vocab *v, uint64_t id, int *special) {
    int type = token_type(v, id);
    if (!v->types) {
        *special = 1;
        return (int64_t)id == v->bos || (int64_t)id == v->eos || (int64_t)id == v->unk;
    }
    *special = type != TOKEN_USER_DEFINED;
    return type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED || (v->is_spm && type == TOKEN_UNKNOWN);
}

/* tokenizer.json's added_tokens and tokenizer_config.json's
 * added_tokens_decoder, built together so they always agree. */
static int build_added_tokens(const vocab *v, json_t *map, json_t *list, json_t *decoder, lq_error *err) {
    for (uint64_t i = 0; i < v->n; i++) {
        int special;
        if (!is_added(v, i, &special)) continue;
        if (vocab_id(map, v->tokens[i].ptr, v->tokens[i].len) != (int64_t)i) continue;
        json_t *content = token_json(v, i, err);
        if (!content) return -1;
        json_array_append_new(list, json_pack("{s:I, s:O, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content",
                                              content, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                              "special", special));
        char key[32];
        snprintf(key, sizeof key, "%llu", (unsigned long long)i);
        json_object_set_new(decoder, key, json_pack("{s:o, s:b, s:b, s:b, s:b, s:b}", "content", content, "lstrip", 0,
                                                    "normalized", 0, "rstrip", 0, "single_word", 0, "special", special));
    }
    return 0;
}

/* ---- the two documents ---- */

typedef struct specials {
    json_t *bos, *eos, *unk, *pad; /* token strings, or NULL */
} specials;

static int load_specials(const vocab *v, specials *s, lq_error *err) {
    int64_t ids[4] = {v->bos, v->eos, v->unk, v->pad};
    json_t **outs[4] = {&s->bos, &s->eos, &s->unk, &s->pad};
    for (int i = 0; i < 4; i++) {
        *outs[i] = NULL;
        if (ids[i] >= 0 && !(*outs[i] = token_json(v, (uint64_t)ids[i], err))) return -1;
    }
    return 0;
}

static void free_specials(specials *s) {
    json_decref(s->bos);
    json_decref(s->eos);
    json_decref(s->unk);
    json_decref(s->pad);
}

static json_t *or_null(json_t *j) { return j ? json_incref(j) : json_null(); }

static json_t *post_processor(const vocab *v, const pipeline *p, const specials *s) {
    json_t *tp = template_processing(v, s->bos, s->eos);
    if (v->is_spm) return tp ? tp : json_null();
    if (!tp) return json_incref(p->post_bytelevel);
    return json_pack("{s:s, s:[O, o]}", "type", "Sequence", "processors", p->post_bytelevel, tp);
}

static json_t *bpe_model(const vocab *v, const pipeline *p, const specials *s, json_t *map, json_t *merges) {
    return json_pack("{s:s, s:n, s:o, s:n, s:n, s:b, s:b, s:b, s:O, s:O}", "type", "BPE", "dropout", "unk_token",
                     v->is_spm ? or_null(s->unk) : json_null(), "continuing_subword_prefix", "end_of_word_suffix",
                     "fuse_unk", v->is_spm, "byte_fallback", v->is_spm, "ignore_merges", p->ignore_merges, "vocab",
                     map, "merges", merges);
}

static int chat_template(const gguf_ctx *g, json_t **out, lq_error *err) {
    *out = NULL;
    if (!gguf_find(g, "tokenizer.chat_template")) return 0;
    gguf_str t;
    if (gguf_get_str(g, "tokenizer.chat_template", &t, err)) return -1;
    if (!(*out = json_stringn(t.ptr, t.len))) return lq_fail(err, "tokenizer.chat_template is not valid UTF-8");
    return 0;
}

static json_t *tokenizer_config(const vocab *v, const specials *s, json_t *decoder, json_t *tmpl,
                                uint64_t context_length) {
    json_t *cfg = json_pack("{s:b, s:b, s:O}", "add_bos_token", v->add_bos, "add_eos_token", v->add_eos,
                            "added_tokens_decoder", decoder);
    if (s->bos) json_object_set(cfg, "bos_token", s->bos);
    if (tmpl) json_object_set(cfg, "chat_template", tmpl);
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    if (s->eos) json_object_set(cfg, "eos_token", s->eos);
    if (context_length) json_object_set_new(cfg, "model_max_length", json_integer((json_int_t)context_length));
    if (s->pad) json_object_set(cfg, "pad_token", s->pad);
    json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    if (s->unk) json_object_set(cfg, "unk_token", s->unk);
    return cfg;
}

int gguf_build_tokenizer(const gguf_ctx *g, uint64_t context_length, json_t **tokenizer_json,
                         json_t **tokenizer_cfg, lq_error *err) {
    vocab v;
    pipeline p = {0};
    specials s = {0};
    json_t *map = NULL, *merges = NULL, *tmpl = NULL;
    json_t *added = json_array(), *decoder = json_object();
    int rc = -1;
    *tokenizer_json = *tokenizer_cfg = NULL;
    if (load_vocab(g, &v, err) || load_specials(&v, &s, err) || chat_template(g, &tmpl, err)) goto done;
    if (v.is_spm) spm_pipeline(&v, &p);
    else if (byte_level_pipeline(&v, &p, err)) goto done;
    if (!(map = build_vocab_map(&v, err))) goto done;
    if (!(merges = v.is_spm ? merges_from_scores(&v, map, err) : merges_from_gguf(&v, err))) goto done;
    if (build_added_tokens(&v, map, added, decoder, err)) goto done;
    *tokenizer_json = json_pack("{s:s, s:n, s:n, s:O, s:O, s:O, s:o, s:O, s:o}", "version", "1.0", "truncation",
                                "padding", "added_tokens", added, "normalizer", p.normalizer, "pre_tokenizer",
                                p.pre_tokenizer, "post_processor", post_processor(&v, &p, &s), "decoder", p.decoder,
                                "model", bpe_model(&v, &p, &s, map, merges));
    *tokenizer_cfg = tokenizer_config(&v, &s, decoder, tmpl, context_length);
    if (!*tokenizer_json || !*tokenizer_cfg) {
        lq_fail(err, "out of memory building tokenizer.json");
        json_decref(*tokenizer_json);
        json_decref(*tokenizer_cfg);
        *tokenizer_json = *tokenizer_cfg = NULL;
        goto done;
    }
    rc = 0;
done:
    free_specials(&s);
    json_decref(p.normalizer);
    json_decref(p.pre_tokenizer);
    json_decref(p.decoder);
    json_decref(p.post_bytelevel);
    json_decref(map);
    json_decref(merges);
    json_decref(tmpl);
    json_decref(added);
    json_decref(decoder);
    return rc;
}
