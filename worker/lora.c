/* lora.c — loading and validating PEFT LoRA adapters (see lora.h).
 *
 * Tensor names follow PEFT: base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight
 * (and .lora_B.weight). The rank of each module is read from its A matrix and
 * checked against rank_pattern / r; alpha comes from alpha_pattern or
 * lora_alpha. Pattern keys match a module's name the way PEFT matches them: the
 * key is a regex that must match the end of the dotted name at a dot
 * boundary, e.g. "down_proj" or "layers.3.mlp.down_proj". */
#include "lora.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "mapfile.h"
#include "safetensors.h"

static const char *proj_names[LQ_PROJ_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};
static const char *proj_parents[LQ_PROJ_COUNT] = {"self_attn", "self_attn", "self_attn", "self_attn",
                                                  "mlp", "mlp", "mlp"};

const char *lq_proj_name(lq_proj p) { return (unsigned)p < LQ_PROJ_COUNT ? proj_names[p] : "?"; }

int lq_proj_mask_parse(const char *list, unsigned *mask, lq_error *err) {
    *mask = 0;
    if (!strcmp(list, "all")) {
        *mask = (1u << LQ_PROJ_COUNT) - 1;
        return 0;
    }
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        int found = 0;
        for (int i = 0; i < LQ_PROJ_COUNT && !found; i++) {
            size_t short_len = strlen(proj_names[i]) - 5; /* "q" of "q_proj" */
            if ((n == strlen(proj_names[i]) || n == short_len) && !strncmp(p, proj_names[i], n)) {
                *mask |= 1u << i;
                found = 1;
            }
        }
        if (!found)
            return lq_fail(err, "LoRA target '%.*s' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                                "down_proj (or q, k, v, o, gate, up, down, or all)", (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    return *mask ? 0 : lq_fail(err, "no LoRA targets given");
}

void lq_proj_dims(const lq_model_config *c, lq_proj p, int *in, int *out) {
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    switch (p) {
    case LQ_PROJ_Q: *in = c->dim, *out = qd; break;
    case LQ_PROJ_K:
    case LQ_PROJ_V: *in = c->dim, *out = kvd; break;
    case LQ_PROJ_O: *in = qd, *out = c->dim; break;
    case LQ_PROJ_GATE:
    case LQ_PROJ_UP: *in = c->dim, *out = c->hidden_dim; break;
    default: *in = c->hidden_dim, *out = c->dim; break;
    }
}

static lq_lora *lora_new(const lq_model *base, const char *name) {
    lq_lora *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->name = strdup(name ? name : "");
    a->n_layers = base->cfg.n_layers;
    a->backend = base->backend;
    a->mods = calloc((size_t)a->n_layers * LQ_PROJ_COUNT, sizeof *a->mods);
    if (!a->name || !a->mods) {
        lq_lora_free(a);
        return NULL;
    }
    return a;
}

void lq_lora_free(lq_lora *a) {
    if (!a) return;
    if (a->weights && a->backend) a->backend->free(a->backend, a->weights);
    else free(a->weights); /* a parsed image's host memory */
    free(a->mods);
    free(a->name);
    free(a);
}

void lq_lora_host_free(lq_lora_host *h) { lq_lora_free(h ? &h->lora : NULL); }

/* Places every adapted module's A and B (rank, dtype set) in one allocation (backend memory;
 * host memory for a parsed image, a->backend NULL, which lq_lora_upload copies as is), in
 * layer and projection order: a decode row then reads its adapter from one region (large
 * enough for the CPU backend to back with huge pages), and the adapter is one buffer to
 * free. Sets a->bytes to what is held. */
static int alloc_weights(lq_lora *a, const lq_model_config *cfg) {
    enum { ALIGN = 64 };
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0;
        for (int i = 0; i < a->n_layers * LQ_PROJ_COUNT; i++) {
            lq_lora_module *m = &a->mods[i];
            if (!m->rank) continue;
            int in, out;
            lq_proj_dims(cfg, (lq_proj)(i % LQ_PROJ_COUNT), &in, &out);
            size_t es = lq_dtype_size(m->dtype), na = (size_t)m->rank * in * es, nb = (size_t)m->rank * out * es;
            if (pass) m->A = (char *)a->weights + off;
            off += (na + ALIGN - 1) / ALIGN * ALIGN;
            if (pass) m->B = (char *)a->weights + off;
            off += (nb + ALIGN - 1) / ALIGN * ALIGN;
        }
        if (!pass) {
            total = off;
            /* off is a multiple of ALIGN, as aligned_alloc wants */
            a->weights = a->backend ? a->backend->alloc(a->backend, total ? total : ALIGN)
                                    : aligned_alloc(ALIGN, total ? total : ALIGN);
            if (!a->weights) return -1;
        }
    }
    a->bytes = total;
    return 0;
}

/* Converts a rows × cols matrix from the file into host memory at dst as dtype dt,
 * transposed to cols × rows when `transpose` (for B). */
static int convert_weight(void *dst, const st_tensor *t, lq_dtype dt, int transpose) {
    size_t es = lq_dtype_size(dt), rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    if (!transpose) {
        lq_convert(dst, dt, t->data, t->dtype, t->numel);
        return 0;
    }
    unsigned char *conv = malloc(t->numel * es), *out = dst;
    if (!conv) return -1;
    lq_convert(conv, dt, t->data, t->dtype, t->numel);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) memcpy(out + (c * rows + r) * es, conv + (r * cols + c) * es, es);
    free(conv);
    return 0;
}

/* ---------- adapter_config.json ---------- */

typedef struct lora_config {
    int r;
    double alpha;
    int rslora;
    json_t *rank_pattern, *alpha_pattern; /* borrowed from root */
    json_t *root;
} lora_config;

static int parse_config(lora_config *c, const char *dir, lq_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    json_error_t jerr;
    c->root = json_load_file(path, 0, &jerr);
    if (!c->root) {
        if (access(path, F_OK) != 0) return lq_fail(err, "no adapter_config.json in this folder");
        return lq_fail(err, "adapter_config.json: %s (line %d)", jerr.text, jerr.line);
    }
    json_t *root = c->root, *v;
    if (!json_is_object(root)) return lq_fail(err, "adapter_config.json is not a JSON object");
    v = json_object_get(root, "peft_type");
    if (json_is_string(v) && strcmp(json_string_value(v), "LORA") != 0)
        return lq_fail(err, "peft_type %s is not supported (LORA is)", json_string_value(v));
    if (json_is_true(json_object_get(root, "use_dora")))
        return lq_fail(err, "DoRA adapters (use_dora: true) are not supported");
    v = json_object_get(root, "modules_to_save");
    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        return lq_fail(err, "modules_to_save is not supported: the adapter replaces whole base modules");
    v = json_object_get(root, "r");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 4096)
        return lq_fail(err, "adapter_config.json: 'r' must be a positive integer");
    c->r = (int)json_integer_value(v);
    v = json_object_get(root, "lora_alpha");
    c->alpha = json_is_number(v) ? json_number_value(v) : c->r;
    c->rslora = json_is_true(json_object_get(root, "use_rslora"));
    c->rank_pattern = json_object_get(root, "rank_pattern");
    c->alpha_pattern = json_object_get(root, "alpha_pattern");
    return 0;
}

/* PEFT's pattern lookup: the first key (a regex) matching the end of name at a dot boundary. */
static json_t *pattern_lookup(json_t *patterns, const char *name) {
    if (!json_is_object(patterns)) return NULL;
    const char *key;
    json_t *val;
    json_object_foreach(patterns, key, val) {
        char re[1024];
        snprintf(re, sizeof re, "^(.*\\.)?(%s)$", key);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
        if (!code) continue;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
        int rc = pcre2_match(code, (PCRE2_SPTR)name, strlen(name), 0, 0, md, NULL);
        pcre2_match_data_free(md);
        pcre2_code_free(code);
        if (rc >= 0) return val;
    }
    return NULL;
}

/* ---------- tensors ---------- */

/* Splits "base_model.model.model.layers.L.<parent>.<proj>.lora_X.weight" into layer, proj, X. */
static int parse_tensor_name(const char *name, int *layer, lq_proj *proj, char *which, lq_error *err) {
    const char *p = name;
    if (!strncmp(p, "base_model.model.", 17)) p += 17;
    int L, n = 0;
    char parent[32], mod[32], ab[8];
    if (sscanf(p, "model.layers.%d.%31[^.].%31[^.].lora_%7[^.].weight%n", &L, parent, mod, ab, &n) != 4 ||
        p[n] != '\0')
        return lq_fail(err, "tensor '%s' is not a LoRA weight of a decoder layer (embedding, lm_head and "
                            "DoRA tensors are not supported)", name);
    for (int i = 0; i < LQ_PROJ_COUNT; i++)
        if (!strcmp(mod, proj_names[i]) && !strcmp(parent, proj_parents[i]) && (!strcmp(ab, "A") || !strcmp(ab, "B"))) {
            *layer = L;
            *proj = (lq_proj)i;
            *which = ab[0];
            return 0;
        }
    return lq_fail(err, "tensor '%s': module %s.%s is not one lorq adapts (q, k, v, o, gate, up, down projections)",
                   name, parent, mod);
}

static int bind_module(lq_lora *a, const lq_model *base, const lora_config *c, const st_set *st, int layer, lq_proj p,
                       const st_tensor *A, const st_tensor *B, lq_error *err) {
    int in, out;
    lq_proj_dims(&base->cfg, p, &in, &out);
    char mname[128];
    snprintf(mname, sizeof mname, "model.layers.%d.%s.%s", layer, proj_parents[p], proj_names[p]);
    if (!A || !B) return lq_fail(err, "%s has lora_%s but no lora_%s", mname, A ? "A" : "B", A ? "B" : "A");
    if (A->ndim != 2 || A->shape[1] != in || A->shape[0] <= 0 || A->shape[0] > 4096)
        return lq_fail(err, "%s.lora_A has shape [%lld, %lld]; the base model's %s takes %d inputs (an adapter for "
                            "another base model?)", mname, (long long)A->shape[0], (long long)(A->ndim > 1 ? A->shape[1] : 0),
                       proj_names[p], in);
    int r = (int)A->shape[0];
    if (B->ndim != 2 || B->shape[0] != out || B->shape[1] != r)
        return lq_fail(err, "%s.lora_B has shape [%lld, %lld], expected [%d, %d]", mname, (long long)B->shape[0],
                       (long long)(B->ndim > 1 ? B->shape[1] : 0), out, r);
    json_t *rp = pattern_lookup(c->rank_pattern, mname);
    int want_r = json_is_integer(rp) ? (int)json_integer_value(rp) : c->r;
    if (want_r != r) return lq_fail(err, "%s has rank %d but adapter_config.json says %d", mname, r, want_r);
    json_t *ap = pattern_lookup(c->alpha_pattern, mname);
    double alpha = json_is_number(ap) ? json_number_value(ap) : c->alpha;
    lq_lora_module *m = &a->mods[(size_t)layer * LQ_PROJ_COUNT + p];
    m->rank = r;
    m->scale = (float)(c->rslora ? alpha / sqrt((double)r) : alpha / r);
    /* bf16 stays bf16 (the kernels widen it exactly); anything else is held in f32. */
    m->dtype = A->dtype == LQ_DTYPE_BF16 && B->dtype == LQ_DTYPE_BF16 ? LQ_DTYPE_BF16 : LQ_DTYPE_F32;
    if (r > a->max_rank) a->max_rank = r;
    (void)st;
    return 0;
}

static int bind_tensors(lq_lora *a, const lq_model *base, const lora_config *c, const st_set *st, lq_error *err) {
    int n = base->cfg.n_layers;
    const st_tensor **As = calloc((size_t)n * LQ_PROJ_COUNT, sizeof *As), **Bs = calloc((size_t)n * LQ_PROJ_COUNT, sizeof *Bs);
    int rc = -1, any = 0;
    if (!As || !Bs) {
        lq_fail(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < st->n_tensors; i++) {
        int layer = 0;
        lq_proj p = LQ_PROJ_Q;
        char which = 0;
        if (parse_tensor_name(st->tensors[i].name, &layer, &p, &which, err) != 0) goto out;
        if (layer < 0 || layer >= n) {
            lq_fail(err, "tensor '%s' adapts layer %d but the base model has %d layers (an adapter for another base "
                         "model?)", st->tensors[i].name, layer, n);
            goto out;
        }
        (which == 'A' ? As : Bs)[(size_t)layer * LQ_PROJ_COUNT + p] = &st->tensors[i];
    }
    for (int l = 0; l < n; l++)
        for (int p = 0; p < LQ_PROJ_COUNT; p++) {
            const st_tensor *A = As[(size_t)l * LQ_PROJ_COUNT + p], *B = Bs[(size_t)l * LQ_PROJ_COUNT + p];
            if (!A && !B) continue;
            if (bind_module(a, base, c, st, l, (lq_proj)p, A, B, err) != 0) goto out;
            any = 1;
        }
    if (!any) {
        lq_fail(err, "adapter_model.safetensors holds no LoRA weights");
        goto out;
    }
    /* Every module checked: now the weights. */
    if (alloc_weights(a, &base->cfg) != 0) {
        lq_fail(err, "out of memory for the adapter's weights");
        goto out;
    }
    for (int i = 0; i < n * LQ_PROJ_COUNT; i++) {
        lq_lora_module *m = &a->mods[i];
        if (m->rank && (convert_weight(m->A, As[i], m->dtype, 0) || convert_weight(m->B, Bs[i], m->dtype, 1))) {
            lq_fail(err, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    free(As);
    free(Bs);
    return rc;
}

lq_lora_host *lq_lora_parse(const char *dir, const char *name, const lq_model *base, lq_error *err) {
    lora_config c = {0};
    st_set st = {0};
    int have_st = 0;
    lq_lora *a = lora_new(base, name ? name : dir);
    if (!a) {
        lq_fail(err, "out of memory");
        goto fail;
    }
    a->backend = NULL; /* the weights go to host memory (alloc_weights) */
    if (parse_config(&c, dir, err) != 0) goto fail;
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (access(path, F_OK) != 0) {
        snprintf(path, sizeof path, "%s/adapter_model.bin", dir);
        if (access(path, F_OK) == 0)
            lq_fail(err, "adapter_model.bin is a pickled PyTorch file, which lorq does not load: save the adapter "
                         "with safe_serialization=True");
        else
            lq_fail(err, "no adapter_model.safetensors in this folder");
        goto fail;
    }
    if (st_open(&st, path, err) != 0) goto fail;
    have_st = 1;
    if (bind_tensors(a, base, &c, &st, err) != 0) goto fail;
    st_close(&st);
    json_decref(c.root);
    return (lq_lora_host *)a; /* lq_lora_host's only member is this lq_lora */
fail:
    lq_error_prefix(err, "adapter %s", dir);
    if (have_st) st_close(&st);
    json_decref(c.root);
    lq_lora_free(a);
    return NULL;
}

lq_lora *lq_lora_upload(const lq_lora_host *h, lq_backend *b, lq_error *err) {
    const lq_lora *src = &h->lora;
    lq_lora *a = calloc(1, sizeof *a);
    size_t n_mods = (size_t)src->n_layers * LQ_PROJ_COUNT;
    if (!a || !(a->name = strdup(src->name)) || !(a->mods = malloc(n_mods * sizeof *a->mods))) {
        lq_lora_free(a);
        lq_fail(err, "out of memory");
        return NULL;
    }
    a->n_layers = src->n_layers;
    a->max_rank = src->max_rank;
    a->backend = b;
    a->bytes = src->bytes;
    if (!(a->weights = b->alloc(b, a->bytes ? a->bytes : 64))) {
        lq_lora_free(a);
        lq_fail(err, "adapter %s: out of backend memory for its %zu bytes of weights", src->name, src->bytes);
        return NULL;
    }
    b->upload(b, a->weights, src->weights, a->bytes);
    /* Same layout on both sides: each module keeps its offset in the one buffer. */
    for (size_t i = 0; i < n_mods; i++) {
        a->mods[i] = src->mods[i];
        if (!a->mods[i].rank) continue;
        a->mods[i].A = (char *)a->weights + ((const char *)src->mods[i].A - (const char *)src->weights);
        a->mods[i].B = (char *)a->weights + ((const char *)src->mods[i].B - (const char *)src->weights);
    }
    return a;
}

lq_lora *lq_lora_load(const char *dir, const char *name, const lq_model *base, lq_error *err) {
    lq_lora_host *h = lq_lora_parse(dir, name, base, err);
    if (!h) return NULL;
    lq_lora *a = lq_lora_upload(h, base->backend, err);
    lq_lora_host_free(h);
    return a;
}

lq_lora *lq_lora_random(const lq_model *base, const char *name, int rank, unsigned proj_mask, unsigned long seed,
                        lq_error *err) {
    lq_lora *a = lora_new(base, name);
    if (!a || rank <= 0) {
        lq_lora_free(a);
        lq_fail(err, rank <= 0 ? "rank must be positive" : "out of memory");
        return NULL;
    }
    for (int i = 0; i < a->n_layers * LQ_PROJ_COUNT; i++)
        if (proj_mask & (1u << (i % LQ_PROJ_COUNT))) {
            a->mods[i].rank = rank;
            a->mods[i].scale = 2.0f;
            a->mods[i].dtype = LQ_DTYPE_BF16;
        }
    int widest = 0; /* the largest input or output of a projection: the most a matrix holds per rank */
    for (int p = 0; p < LQ_PROJ_COUNT; p++) {
        int in, out;
        lq_proj_dims(&base->cfg, (lq_proj)p, &in, &out);
        if (in > widest) widest = in;
        if (out > widest) widest = out;
    }
    uint16_t *host = malloc((size_t)rank * (size_t)widest * sizeof *host);
    if (!host || alloc_weights(a, &base->cfg) != 0) {
        free(host);
        lq_lora_free(a);
        lq_fail(err, "out of memory");
        return NULL;
    }
    unsigned long state = seed * 2654435761ul + 1;
    for (int i = 0; i < a->n_layers * LQ_PROJ_COUNT; i++) {
        lq_lora_module *m = &a->mods[i];
        if (!m->rank) continue;
        int in, out;
        lq_proj_dims(&base->cfg, (lq_proj)(i % LQ_PROJ_COUNT), &in, &out);
        /* B is drawn in the kernel's [rank][out] order directly: the values are random anyway. */
        for (int k = 0; k < 2; k++) {
            size_t count = (size_t)rank * (size_t)(k ? out : in);
            for (size_t j = 0; j < count; j++) {
                state = state * 6364136223846793005ul + 1442695040888963407ul;
                host[j] = lq_f32_to_bf16(((float)((state >> 40) & 0xffff) / 65536.0f - 0.5f) * 0.02f);
            }
            a->backend->upload(a->backend, k ? m->B : m->A, host, count * sizeof *host);
        }
    }
    free(host);
    a->max_rank = rank;
    return a;
}
