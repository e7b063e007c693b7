/* model.c — config parsing, weight binding and the forward step (see model.h).
 *
 * The forward pass, per layer, for all T tokens of the step at once:
 *
 *   h   = x + Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
 *   x'  = h + Wdown · (silu(Wgate·norm(h)) ⊙ Wup·norm(h))
 *
 * and logits = lm_head · norm(x) for the rows that need them. Each line of
 * lq_model_step below is one of those terms. */
#include "model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora.h"
#include "mapfile.h"

/* ---------- config ---------- */

static int get_int(json_t *o, const char *key, int def, int *out, lq_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return lq_fail(err, "config.json: missing integer '%s'", key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return lq_fail(err, "config.json: '%s' must be a non-negative integer", key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *o, const char *key, double def, float *out, lq_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v)) return lq_fail(err, "config.json: '%s' must be a number", key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *o, const char *key, int def) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int parse_arch(lq_model_config *c, json_t *root, lq_error *err) {
    json_t *archs = json_object_get(root, "architectures");
    json_t *a = json_is_array(archs) ? json_array_get(archs, 0) : NULL;
    const char *name = json_is_string(a) ? json_string_value(a) : NULL;
    if (!name) return lq_fail(err, "config.json: missing 'architectures'");
    snprintf(c->arch_name, sizeof c->arch_name, "%s", name);
    if (!strcmp(name, "LlamaForCausalLM")) c->arch = LQ_ARCH_LLAMA;
    else if (!strcmp(name, "MistralForCausalLM")) c->arch = LQ_ARCH_MISTRAL;
    else if (!strcmp(name, "Qwen2ForCausalLM")) c->arch = LQ_ARCH_QWEN2;
    else
        return lq_fail(err, "config.json: architecture %s is not supported (LlamaForCausalLM, MistralForCausalLM, "
                            "Qwen2ForCausalLM are)", name);
    return 0;
}

/* rope_scaling (transformers 4) or rope_parameters (transformers 5). */
static int parse_rope(lq_model_config *c, json_t *root, lq_error *err) {
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *rs = json_object_get(root, "rope_scaling");
    json_t *src = json_is_object(rs) ? rs : json_is_object(rp) ? rp : NULL;
    if (get_float(root, "rope_theta", 10000.0, &c->rope_theta, err) != 0) return -1;
    if (json_is_object(rp) && json_object_get(rp, "rope_theta") &&
        get_float(rp, "rope_theta", 10000.0, &c->rope_theta, err) != 0)
        return -1;
    c->rope_kind = LQ_ROPE_DEFAULT;
    if (!src) return 0;
    json_t *t = json_object_get(src, "rope_type");
    if (!t) t = json_object_get(src, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (!strcmp(type, "default")) return 0;
    if (get_float(src, "factor", 1.0, &c->rope_factor, err) != 0) return -1;
    if (!(c->rope_factor > 0.0f)) return lq_fail(err, "config.json: rope scaling factor must be positive");
    if (!strcmp(type, "linear")) {
        c->rope_kind = LQ_ROPE_LINEAR;
        return 0;
    }
    if (!strcmp(type, "llama3")) {
        c->rope_kind = LQ_ROPE_LLAMA3;
        if (get_float(src, "low_freq_factor", 1.0, &c->rope_low_freq_factor, err) != 0 ||
            get_float(src, "high_freq_factor", 4.0, &c->rope_high_freq_factor, err) != 0 ||
            get_int(src, "original_max_position_embeddings", 8192, &c->rope_original_max_position, err) != 0)
            return -1;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return lq_fail(err, "config.json: llama3 rope needs high_freq_factor > low_freq_factor");
        return 0;
    }
    return lq_fail(err, "config.json: rope scaling type '%s' is not supported (default, linear, llama3 are)", type);
}

static void parse_eos(lq_model_config *c, json_t *v) {
    if (json_is_integer(v)) {
        c->n_eos = 1;
        c->eos_token_ids[0] = (int)json_integer_value(v);
    } else if (json_is_array(v)) {
        c->n_eos = 0;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (json_is_integer(e) && c->n_eos < 8) c->eos_token_ids[c->n_eos++] =
            (int)json_integer_value(e);
    }
}

static int check_config(lq_model_config *c, json_t *root, lq_error *err) {
    json_t *act = json_object_get(root, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu") != 0)
        return lq_fail(err, "config.json: hidden_act '%s' is not supported (silu is)", json_string_value(act));
    if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->vocab_size <= 0 || c->hidden_dim <= 0)
        return lq_fail(err, "config.json: sizes must be positive");
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads != 0)
        return lq_fail(err, "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim <= 0 || c->head_dim % 2 != 0 || c->head_dim > 512)
        return lq_fail(err, "config.json: head_dim %d must be even and at most 512", c->head_dim);
    if (!(c->rms_eps > 0.0f)) return lq_fail(err, "config.json: rms_norm_eps must be positive");
    if (!(c->rope_theta > 0.0f)) return lq_fail(err, "config.json: rope_theta must be positive");
    return 0;
}

int lq_config_parse(lq_model_config *c, const char *config_json, const char *generation_json, lq_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loads(config_json, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return lq_fail(err, "config.json: not a JSON object (%s, line %d)", jerr.text, jerr.line);
    }
    int rc = -1;
    if (parse_arch(c, root, err) != 0) goto out;
    if (get_int(root, "hidden_size", -1, &c->dim, err) || get_int(root, "intermediate_size", -1, &c->hidden_dim, err) ||
        get_int(root, "num_hidden_layers", -1, &c->n_layers, err) ||
        get_int(root, "num_attention_heads", -1, &c->n_heads, err) ||
        get_int(root, "num_key_value_heads", c->n_heads, &c->n_kv_heads, err) ||
        get_int(root, "vocab_size", -1, &c->vocab_size, err) ||
        get_int(root, "max_position_embeddings", 2048, &c->max_position, err) ||
        get_int(root, "head_dim", c->n_heads ? c->dim / c->n_heads : 0, &c->head_dim, err) ||
        get_float(root, "rms_norm_eps", 1e-6, &c->rms_eps, err) || parse_rope(c, root, err))
        goto out;
    /* A sliding window shorter than the context changes attention. Mistral's
     * applies to every layer, and attention takes it; Qwen2's applies only to
     * the layers from max_window_layers on, so there we serve up to the window
     * (within it, windowed attention is plain causal attention) and not beyond. */
    int window = 0;
    json_t *sw = json_object_get(root, "sliding_window");
    int uses_window = c->arch == LQ_ARCH_MISTRAL || get_bool(root, "use_sliding_window", 0);
    if (uses_window && json_is_integer(sw) && (window = (int)json_integer_value(sw)) > 0 && window < c->max_position) {
        if (c->arch == LQ_ARCH_MISTRAL) c->sliding_window = window;
        else c->max_position = window;
    }
    c->tie_embeddings = get_bool(root, "tie_word_embeddings", 0);
    c->attention_bias = c->arch == LQ_ARCH_QWEN2 ? 1 : get_bool(root, "attention_bias", 0);
    c->o_bias = c->arch == LQ_ARCH_QWEN2 ? 0 : c->attention_bias;
    c->mlp_bias = get_bool(root, "mlp_bias", 0);
    c->bos_token_id = json_is_integer(json_object_get(root, "bos_token_id"))
                          ? (int)json_integer_value(json_object_get(root, "bos_token_id"))
                          : -1;
    parse_eos(c, json_object_get(root, "eos_token_id"));
    if (generation_json) {
        json_t *g = json_loads(generation_json, 0, &jerr);
        if (!g || !json_is_object(g)) {
            json_decref(g);
            lq_fail(err, "generation_config.json: not a JSON object (%s, line %d)", jerr.text, jerr.line);
            goto out;
        }
        parse_eos(c, json_object_get(g, "eos_token_id"));
        json_decref(g);
    }
    rc = check_config(c, root, err);
out:
    json_decref(root);
    return rc;
}

/* ---------- rotary frequencies ---------- */

static float *rope_inv_freq(const lq_model_config *c) {
    int half = c->head_dim / 2;
    float *f = malloc((size_t)half * sizeof *f);
    for (int j = 0; j < half; j++) {
        float freq = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)c->head_dim);
        if (c->rope_kind == LQ_ROPE_LINEAR) freq /= c->rope_factor;
        if (c->rope_kind == LQ_ROPE_LLAMA3) {
            float old = (float)c->rope_original_max_position;
            float low_wavelen = old / c->rope_low_freq_factor, high_wavelen = old / c->rope_high_freq_factor;
            float wavelen = 2.0f * (float)M_PI / freq;
            if (wavelen > low_wavelen) freq /= c->rope_factor;
            else if (wavelen >= high_wavelen) {
                float smooth = (old / wavelen - c->rope_low_freq_factor) /
                               (c->rope_high_freq_factor - c->rope_low_freq_factor);
                freq = (1.0f - smooth) * freq / c->rope_factor + smooth * freq;
            }
        }
        f[j] = freq;
    }
    return f;
}

/* ---------- weights ---------- */

static void *own(lq_model *m, size_t bytes) {
    void *p = m->backend->alloc(m->backend, bytes);
    if (!p) return NULL;
    void **o = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *o);
    if (!o) {
        m->backend->free(m->backend, p);
        return NULL;
    }
    m->owned = o;
    m->owned[m->n_owned++] = p;
    return p;
}

/* Backend memory holding the tensor: the mapped bytes themselves on a host
 * backend when suitably aligned, else a copy. */
static const void *place(lq_model *m, const st_tensor *t, lq_error *err) {
    if (m->backend->host_memory && (uintptr_t)t->data % lq_dtype_size(t->dtype) == 0) return t->data;
    void *p = own(m, t->nbytes);
    if (!p) {
        lq_fail(err, "out of memory for tensor '%s' (%zu bytes)", t->name, t->nbytes);
        return NULL;
    }
    m->backend->upload(m->backend, p, t->data, t->nbytes);
    return p;
}

static const st_tensor *find_shaped(lq_model *m, const char *name, int rows, int cols, lq_error *err) {
    const st_tensor *t = st_find(&m->tensors, name);
    if (!t) {
        lq_fail(err, "weights: tensor '%s' is missing", name);
        return NULL;
    }
    int ok = rows > 0 ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols)
                      : (t->ndim == 1 && t->shape[0] == cols);
    if (!ok) {
        char shape[96] = "";
        for (int d = 0; d < t->ndim && d < 4; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? ", " : "",
                     (long long)t->shape[d]);
        if (rows > 0) lq_fail(err, "weights: tensor '%s' has shape [%s], expected [%d, %d]", name, shape, rows, cols);
        else lq_fail(err, "weights: tensor '%s' has shape [%s], expected [%d]", name, shape, cols);
        return NULL;
    }
    return t;
}

/* --load-format dummy: a tensor of random values (norm weights: ones) in backend memory,
 * in the model's dummy dtype. Values are uniform in ±0.02 (about a trained model's
 * initializer range), enough to keep activations finite through any depth; only speed
 * means anything with them. */
static int bind_dummy(lq_model *m, lq_mat *out, const char *name, int rows, int cols, lq_error *err) {
    size_t n = (size_t)(rows > 0 ? rows : 1) * (size_t)cols, es = lq_dtype_size(m->dummy_dtype);
    void *dev = own(m, n * es);
    float *chunk = malloc(((size_t)1 << 20) * sizeof *chunk);
    void *conv = malloc(((size_t)1 << 20) * es);
    if (!dev || !chunk || !conv) {
        free(chunk), free(conv);
        return lq_fail(err, "out of memory for dummy tensor '%s' (%zu bytes)", name, n * es);
    }
    for (size_t done = 0; done < n; done += (size_t)1 << 20) {
        size_t len = n - done < ((size_t)1 << 20) ? n - done : ((size_t)1 << 20);
        for (size_t i = 0; i < len; i++) {
            m->dummy_seed = m->dummy_seed * 6364136223846793005ull + 1442695040888963407ull;
            chunk[i] = rows > 0 ? ((float)((m->dummy_seed >> 40) & 0xffffff) / 16777216.0f - 0.5f) * 0.04f : 1.0f;
        }
        lq_convert(conv, m->dummy_dtype, chunk, LQ_DTYPE_F32, len);
        m->backend->upload(m->backend, (char *)dev + done * es, conv, len * es);
    }
    free(chunk), free(conv);
    *out = (lq_mat){dev, m->dummy_dtype, rows > 0 ? rows : 1, cols};
    return 0;
}

/* Binds a matrix [rows][cols] (rows == 0: a vector of cols, e.g. a norm weight). */
static int bind_mat(lq_model *m, lq_mat *out, const char *name, int rows, int cols, lq_error *err) {
    if (m->dummy) return bind_dummy(m, out, name, rows, cols, err);
    const st_tensor *t = find_shaped(m, name, rows, cols, err);
    if (!t) return -1;
    out->data = place(m, t, err);
    out->dtype = t->dtype;
    out->rows = rows > 0 ? rows : 1;
    out->cols = cols;
    return out->data ? 0 : -1;
}

/* Binds an optional bias vector, widened to f32 in backend memory. */
static int bind_bias(lq_model *m, const float **out, const char *name, int n, int required, lq_error *err) {
    *out = NULL;
    if (m->dummy) { /* dummy biases are zero: what matters is that the adds run */
        if (!required) return 0;
        float *dev = own(m, (size_t)n * sizeof *dev), *zeros = calloc((size_t)n, sizeof *zeros);
        if (!dev || !zeros) {
            free(zeros);
            return lq_fail(err, "out of memory");
        }
        m->backend->upload(m->backend, dev, zeros, (size_t)n * sizeof *dev);
        free(zeros);
        *out = dev;
        return 0;
    }
    if (!st_find(&m->tensors, name)) return required ? lq_fail(err, "weights: bias '%s' is missing", name) : 0;
    const st_tensor *t = find_shaped(m, name, 0, n, err);
    if (!t) return -1;
    float *host = malloc((size_t)n * sizeof *host);
    float *dev = own(m, (size_t)n * sizeof *dev);
    if (!host || !dev) {
        free(host);
        return lq_fail(err, "out of memory");
    }
    lq_convert(host, LQ_DTYPE_F32, t->data, t->dtype, (size_t)n);
    m->backend->upload(m->backend, dev, host, (size_t)n * sizeof *dev);
    free(host);
    *out = dev;
    return 0;
}

static int bind_layer(lq_model *m, int l, lq_error *err) {
    const lq_model_config *c = &m->cfg;
    lq_layer_weights *L = &m->w.layers[l];
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    char n[160];
#define NAME(suffix) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), n)
    if (bind_mat(m, &L->attn_norm, NAME("input_layernorm.weight"), 0, c->dim, err) ||
        bind_mat(m, &L->ffn_norm, NAME("post_attention_layernorm.weight"), 0, c->dim, err) ||
        bind_mat(m, &L->wq, NAME("self_attn.q_proj.weight"), qd, c->dim, err) ||
        bind_mat(m, &L->wk, NAME("self_attn.k_proj.weight"), kvd, c->dim, err) ||
        bind_mat(m, &L->wv, NAME("self_attn.v_proj.weight"), kvd, c->dim, err) ||
        bind_mat(m, &L->wo, NAME("self_attn.o_proj.weight"), c->dim, qd, err) ||
        bind_mat(m, &L->w_gate, NAME("mlp.gate_proj.weight"), c->hidden_dim, c->dim, err) ||
        bind_mat(m, &L->w_up, NAME("mlp.up_proj.weight"), c->hidden_dim, c->dim, err) ||
        bind_mat(m, &L->w_down, NAME("mlp.down_proj.weight"), c->dim, c->hidden_dim, err) ||
        bind_bias(m, &L->bq, NAME("self_attn.q_proj.bias"), qd, c->attention_bias, err) ||
        bind_bias(m, &L->bk, NAME("self_attn.k_proj.bias"), kvd, c->attention_bias, err) ||
        bind_bias(m, &L->bv, NAME("self_attn.v_proj.bias"), kvd, c->attention_bias, err) ||
        bind_bias(m, &L->bo, NAME("self_attn.o_proj.bias"), c->dim, c->o_bias, err) ||
        bind_bias(m, &L->b_gate, NAME("mlp.gate_proj.bias"), c->hidden_dim, c->mlp_bias, err) ||
        bind_bias(m, &L->b_up, NAME("mlp.up_proj.bias"), c->hidden_dim, c->mlp_bias, err) ||
        bind_bias(m, &L->b_down, NAME("mlp.down_proj.bias"), c->dim, c->mlp_bias, err))
        return -1;
#undef NAME
    return 0;
}

static int bind_weights(lq_model *m, lq_error *err) {
    const lq_model_config *c = &m->cfg;
    m->w.layers = calloc((size_t)c->n_layers, sizeof *m->w.layers);
    if (!m->w.layers) return lq_fail(err, "out of memory");
    if (bind_mat(m, &m->w.embed, "model.embed_tokens.weight", c->vocab_size, c->dim, err) ||
        bind_mat(m, &m->w.final_norm, "model.norm.weight", 0, c->dim, err))
        return -1;
    if (c->tie_embeddings || (!m->dummy && !st_find(&m->tensors, "lm_head.weight"))) {
        if (!c->tie_embeddings) return lq_fail(err, "weights: lm_head.weight is missing and embeddings are not tied");
        m->w.lm_head = m->w.embed;
    } else if (bind_mat(m, &m->w.lm_head, "lm_head.weight", c->vocab_size, c->dim, err)) {
        return -1;
    }
    for (int l = 0; l < c->n_layers; l++)
        if (bind_layer(m, l, err) != 0) return -1;
    return 0;
}

/* An empty model on backend, named by its folder (or config file). */
static lq_model *model_new(const char *dir, lq_backend *backend, lq_error *err) {
    lq_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        lq_fail(err, "out of memory");
        return NULL;
    }
    m->backend = backend;
    return m;
}

lq_model *lq_model_load(const char *dir, lq_backend *backend, lq_error *err) {
    lq_model *m = model_new(dir, backend, err);
    if (!m) return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *config = lq_read_file(path, NULL, err);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    char *gen = lq_read_file(path, NULL, NULL); /* optional */
    int rc = config ? lq_config_parse(&m->cfg, config, gen, err) : -1;
    free(config);
    free(gen);
    if (rc == 0) rc = st_open(&m->tensors, dir, err);
    if (rc == 0) rc = bind_weights(m, err);
    if (rc != 0) {
        lq_error_prefix(err, "%s", dir);
        lq_model_free(m);
        return NULL;
    }
    m->inv_freq = rope_inv_freq(&m->cfg);
    return m;
}

/* config.json of a folder, or the file itself. */
static char *read_config(const char *path, lq_error *err) {
    char file[4096];
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json")) snprintf(file, sizeof file, "%s", path);
    else snprintf(file, sizeof file, "%s/config.json", path);
    return lq_read_file(file, NULL, err);
}

lq_model *lq_model_load_dummy(const char *path, lq_backend *backend, lq_dtype dtype, unsigned long seed,
                              lq_error *err) {
    lq_model *m = model_new(path, backend, err);
    if (!m) return NULL;
    m->dummy = 1;
    m->dummy_dtype = dtype;
    m->dummy_seed = seed * 2654435761ul + 1;
    char *config = read_config(path, err);
    int rc = config ? lq_config_parse(&m->cfg, config, NULL, err) : -1;
    free(config);
    if (rc == 0) rc = bind_weights(m, err);
    if (rc != 0) {
        lq_error_prefix(err, "%s (--load-format dummy)", path);
        lq_model_free(m);
        return NULL;
    }
    m->inv_freq = rope_inv_freq(&m->cfg);
    return m;
}

void lq_model_free(lq_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) m->backend->free(m->backend, m->owned[i]);
    free(m->owned);
    free(m->w.layers);
    st_close(&m->tensors);
    free(m->inv_freq);
    free(m->dir);
    free(m);
}

static size_t mat_bytes(const lq_mat *w) { return (size_t)w->rows * (size_t)w->cols * lq_dtype_size(w->dtype); }

size_t lq_model_weight_bytes(const lq_model *m) {
    size_t total = mat_bytes(&m->w.lm_head) + mat_bytes(&m->w.final_norm);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const lq_layer_weights *L = &m->w.layers[l];
        const lq_mat *mats[] = {&L->attn_norm, &L->ffn_norm, &L->wq, &L->wk, &L->wv, &L->wo,
                                &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) total += mat_bytes(mats[i]);
    }
    return total;
}

/* ---------- run state ---------- */

/* Most projections that read the same input and so share one LoRA call (q, k, v). */
enum { LORA_MAX_TARGETS = 3 };

lq_run_state *lq_run_state_new(const lq_model *m, int max_tokens, int max_seqs, lq_error *err) {
    const lq_model_config *c = &m->cfg;
    lq_backend *b = m->backend;
    lq_run_state *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->max_tokens = max_tokens;
    s->max_seqs = max_seqs;
    size_t T = (size_t)max_tokens, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t wide = (size_t)c->dim > qd ? (size_t)c->dim : qd;
    s->x = b->alloc(b, T * c->dim * sizeof(float));
    s->xb = b->alloc(b, T * wide * sizeof(float));
    s->xb2 = b->alloc(b, T * c->dim * sizeof(float));
    s->q = b->alloc(b, T * qd * sizeof(float));
    s->k = b->alloc(b, T * kvd * sizeof(float));
    s->v = b->alloc(b, T * kvd * sizeof(float));
    s->att = b->alloc(b, T * qd * sizeof(float));
    s->hb = b->alloc(b, T * c->hidden_dim * sizeof(float));
    s->hb2 = b->alloc(b, T * c->hidden_dim * sizeof(float));
    s->logits = b->alloc(b, T * c->vocab_size * sizeof(float));
    s->ids = malloc(T * sizeof *s->ids);
    s->pos = malloc(T * sizeof *s->pos);
    s->slots = malloc(T * sizeof *s->slots);
    s->logit_rows = malloc(T * sizeof *s->logit_rows);
    s->attn = malloc((size_t)max_seqs * sizeof *s->attn);
    s->runs = malloc((size_t)max_seqs * sizeof *s->runs);
    s->segs = malloc((size_t)LORA_MAX_TARGETS * (size_t)max_seqs * sizeof *s->segs); /* per projection of a LoRA call */
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->k || !s->v || !s->att || !s->hb || !s->hb2 || !s->logits ||
        !s->ids || !s->pos || !s->slots || !s->logit_rows || !s->attn || !s->runs || !s->segs) {
        lq_run_state_free(m, s);
        lq_fail(err, "out of memory for a %d-token run state", max_tokens);
        return NULL;
    }
    return s;
}

void lq_run_state_free(const lq_model *m, lq_run_state *s) {
    if (!s) return;
    lq_backend *b = m->backend;
    float *bufs[] = {s->x, s->xb, s->xb2, s->q, s->k, s->v, s->att, s->hb, s->hb2, s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) b->free(b, bufs[i]);
    free(s->ids);
    free(s->pos);
    free(s->slots);
    free(s->logit_rows);
    free(s->attn);
    free(s->runs);
    free(s->segs);
    if (s->lora_t) b->free(b, s->lora_t);
    free(s);
}

/* ---------- the forward step ---------- */

/* Lays the step out as rows: positions, KV slots, attention ranges, which rows get logits.
 * Returns the number of rows (tokens), or -1. */
static int plan_step(const lq_model *m, lq_run_state *s, const lq_kv_pool *kv, const lq_step_seq *seqs, int n_seqs,
                     int32_t *ids, int *n_logit_rows, lq_error *err) {
    if (n_seqs > s->max_seqs) return lq_fail(err, "step has %d sequences, run state holds %d", n_seqs, s->max_seqs);
    int T = 0, R = 0;
    s->n_runs = 0;
    for (int i = 0; i < n_seqs; i++) {
        const lq_step_seq *q = &seqs[i];
        if (q->n_tokens <= 0 || q->pos < 0) return lq_fail(err, "sequence %d: empty step or negative position", i);
        if (T + q->n_tokens > s->max_tokens)
            return lq_fail(err, "step has more than %d tokens", s->max_tokens);
        if (q->pos + q->n_tokens > m->cfg.max_position)
            return lq_fail(err, "sequence %d: position %d is beyond the model's %d", i, q->pos + q->n_tokens,
                           m->cfg.max_position);
        s->attn[i] = (lq_attn_seq){T, q->n_tokens, q->pos + q->n_tokens, q->block_table, m->cfg.sliding_window};
        if (q->adapter && s->n_runs > 0 && s->runs[s->n_runs - 1].adapter == q->adapter &&
            s->runs[s->n_runs - 1].row0 + s->runs[s->n_runs - 1].n_rows == T)
            s->runs[s->n_runs - 1].n_rows += q->n_tokens;
        else if (q->adapter)
            s->runs[s->n_runs++] = (lq_lora_run){T, q->n_tokens, q->adapter};
        for (int t = 0; t < q->n_tokens; t++) {
            int p = q->pos + t, tok = q->tokens[t];
            int32_t block = q->block_table[p / kv->block_size];
            if (tok < 0 || tok >= m->cfg.vocab_size) return lq_fail(err, "sequence %d: token id %d out of range", i, tok);
            if (block < 0 || block >= kv->n_blocks) return lq_fail(err, "sequence %d: KV block %d out of range", i, block);
            ids[T] = tok;
            s->pos[T] = p;
            s->slots[T] = block * kv->block_size + p % kv->block_size;
            if (q->all_logits || t == q->n_tokens - 1) s->logit_rows[R++] = T;
            T++;
        }
    }
    *n_logit_rows = R;
    return T;
}

/* ys[i] += scale · B·(A·x) for each projection projs[i] (all reading x) and each run of
 * rows whose adapter adapts it: one backend call for all of them. */
static int add_lora(lq_model *m, lq_run_state *s, int layer, const float *x, int n_proj, const lq_proj *projs,
                    float *const *ys, lq_error *err) {
    lq_backend *b = m->backend;
    if (s->n_runs == 0) return 0;
    /* Runs are in row order; the scratch rows are indexed like x's. */
    size_t rows = (size_t)s->runs[s->n_runs - 1].row0 + (size_t)s->runs[s->n_runs - 1].n_rows, need = 0;
    lq_lora_target tg[LORA_MAX_TARGETS];
    int nt = 0, n = 0, in = 0, out;
    for (int i = 0; i < n_proj; i++) {
        int first = n, rmax = 0;
        for (int r = 0; r < s->n_runs; r++) {
            const lq_lora_module *mod = lq_lora_module_at(s->runs[r].adapter, layer, projs[i]);
            if (!mod->rank) continue;
            s->segs[n++] = (lq_lora_seg){s->runs[r].row0, s->runs[r].n_rows, mod->A,    mod->B,
                                         mod->dtype,      mod->rank,          mod->scale};
            if (mod->rank > rmax) rmax = mod->rank;
        }
        if (n == first) continue;
        lq_proj_dims(&m->cfg, projs[i], &in, &out);
        tg[nt++] = (lq_lora_target){ys[i], out, &s->segs[first], n - first, NULL, rmax};
        need += rows * (size_t)rmax;
    }
    if (nt == 0) return 0;
    if (s->lora_t_len < need) {
        if (s->lora_t) b->free(b, s->lora_t);
        s->lora_t = b->alloc(b, need * sizeof(float));
        s->lora_t_len = s->lora_t ? need : 0;
        if (!s->lora_t) return lq_fail(err, "out of memory for LoRA activations");
    }
    for (int i = 0, off = 0; i < nt; off += (int)rows * tg[i].ldt, i++) tg[i].t = s->lora_t + off;
    b->lora(b, x, in, tg, nt);
    return 0;
}

/* x += xb2 (a block's output joins the residual stream), then xb = norm(x)·w for the
 * next block (w NULL: the add alone): one pass over x on backends that fuse the two. */
static void add_then_norm(lq_backend *b, lq_run_state *s, const lq_mat *w, int T, const lq_model_config *c) {
    if (w && b->add_rmsnorm) {
        b->add_rmsnorm(b, s->x, s->xb2, s->xb, w, T, c->dim, c->rms_eps);
        return;
    }
    b->add(b, s->x, s->xb2, (size_t)T * c->dim);
    if (w) b->rmsnorm(b, s->xb, s->x, w, T, c->dim, c->rms_eps);
}

int lq_model_step(lq_model *m, lq_run_state *s, const lq_kv_pool *kv, const lq_step_seq *seqs, int n_seqs,
                  float *logits, lq_error *err) {
    const lq_model_config *c = &m->cfg;
    lq_backend *b = m->backend;
    int R = 0;
    int T = plan_step(m, s, kv, seqs, n_seqs, s->ids, &R, err);
    if (T < 0) return -1;
    float scale = 1.0f / sqrtf((float)c->head_dim);

    b->embed(b, s->x, &m->w.embed, s->ids, T);
    b->rmsnorm(b, s->xb, s->x, &m->w.layers[0].attn_norm, T, c->dim, c->rms_eps);
    for (int l = 0; l < c->n_layers; l++) {
        const lq_layer_weights *L = &m->w.layers[l];
        /* attention block: x += Wo · attn(rope(q), rope(k), v), with xb = norm(x) on entry */
        b->matmul(b, s->q, s->xb, T, &L->wq, L->bq);
        b->matmul(b, s->k, s->xb, T, &L->wk, L->bk);
        b->matmul(b, s->v, s->xb, T, &L->wv, L->bv);
        if (add_lora(m, s, l, s->xb, 3, (lq_proj[]){LQ_PROJ_Q, LQ_PROJ_K, LQ_PROJ_V},
                     (float *[]){s->q, s->k, s->v}, err))
            return -1;
        b->rope(b, s->q, T, c->n_heads, c->head_dim, s->pos, m->inv_freq);
        b->rope(b, s->k, T, c->n_kv_heads, c->head_dim, s->pos, m->inv_freq);
        b->kv_write(b, kv, l, s->k, s->v, s->slots, T);
        b->attention(b, s->att, s->q, kv, l, s->attn, n_seqs, c->n_heads, scale);
        b->matmul(b, s->xb2, s->att, T, &L->wo, L->bo);
        if (add_lora(m, s, l, s->att, 1, (lq_proj[]){LQ_PROJ_O}, (float *[]){s->xb2}, err)) return -1;
        add_then_norm(b, s, &L->ffn_norm, T, c);
        /* feed-forward block: x += Wdown · (silu(Wgate · norm(x)) ⊙ Wup · norm(x)) */
        b->matmul(b, s->hb, s->xb, T, &L->w_gate, L->b_gate);
        b->matmul(b, s->hb2, s->xb, T, &L->w_up, L->b_up);
        if (add_lora(m, s, l, s->xb, 2, (lq_proj[]){LQ_PROJ_GATE, LQ_PROJ_UP}, (float *[]){s->hb, s->hb2}, err))
            return -1;
        b->silu_mul(b, s->hb, s->hb, s->hb2, (size_t)T * c->hidden_dim);
        b->matmul(b, s->xb2, s->hb, T, &L->w_down, L->b_down);
        if (add_lora(m, s, l, s->hb, 1, (lq_proj[]){LQ_PROJ_DOWN}, (float *[]){s->xb2}, err)) return -1;
        add_then_norm(b, s, l + 1 < c->n_layers ? &m->w.layers[l + 1].attn_norm : NULL, T, c);
    }
    /* logits = lm_head · norm(x), only for the rows that asked */
    b->gather_rows(b, s->xb, s->x, s->logit_rows, R, c->dim);
    b->rmsnorm(b, s->xb, s->xb, &m->w.final_norm, R, c->dim, c->rms_eps);
    b->matmul(b, s->logits, s->xb, R, &m->w.lm_head, NULL);
    b->download(b, logits, s->logits, (size_t)R * c->vocab_size * sizeof(float));
    return R;
}
