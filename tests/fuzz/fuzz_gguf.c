/* fuzz_gguf.c — libFuzzer target: any byte string fed to gguf_parse must fail
 * cleanly or yield a context whose every value, array element and tensor
 * byte is readable; the typed getters, the dequantizers and the tokenizer
 * rebuild (what convert-gguf runs on untrusted files) must cope with it. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_convert.h"

/* Dequantize at most this many elements per tensor, to keep runs fast. */
#define MAX_DEQUANT (1u << 16)

static volatile double sink;

static void touch_array(const gguf_array *a) {
    for (uint64_t i = 0; i < a->n && i < 4096; i++) {
        if (a->type == GGUF_TYPE_STRING) sink += a->strs[i].len ? (unsigned char)a->strs[i].ptr[a->strs[i].len - 1] : 0;
        else if (a->type == GGUF_TYPE_ARRAY) touch_array(&a->arrs[i]);
        else sink += gguf_arr_f64(a, i) + (double)gguf_arr_i64(a, i);
    }
}

static void touch_kv(const gguf_ctx *g, const gguf_kv *kv) {
    lq_error err;
    gguf_str s;
    uint32_t u;
    uint64_t u6;
    int64_t i6;
    float f;
    double d;
    int b;
    const gguf_array *a;
    const gguf_str *strs;
    uint64_t n;
    char q[32];
    if (!gguf_get_str(g, kv->key, &s, &err)) sink += (double)strlen(gguf_str_quote(s, q, sizeof q));
    if (!gguf_get_u32(g, kv->key, &u, &err)) sink += u;
    if (!gguf_get_u64(g, kv->key, &u6, &err)) sink += (double)u6;
    if (!gguf_get_i64(g, kv->key, &i6, &err)) sink += (double)i6;
    if (!gguf_get_f32(g, kv->key, &f, &err)) sink += f;
    if (!gguf_get_f64(g, kv->key, &d, &err)) sink += d;
    if (!gguf_get_bool(g, kv->key, &b, &err)) sink += b;
    if (!gguf_get_str_arr(g, kv->key, &strs, &n, &err)) sink += (double)n;
    if (!gguf_get_arr(g, kv->key, GGUF_TYPE_COUNT, &a, &err)) touch_array(a);
    if (gguf_find(g, kv->key) != kv) abort();
}

static void touch_tensor(const gguf_ctx *g, const gguf_tensor *t) {
    const unsigned char *p = t->data;
    unsigned sum = 0;
    for (uint64_t j = 0; j < t->nbytes; j++) sum += p[j];
    sink += sum;
    if (gguf_find_tensor(g, t->name) != t) abort();
    uint64_t blck = ggml_blck_size(t->type);
    uint64_t n = t->n_elements < MAX_DEQUANT ? t->n_elements : MAX_DEQUANT / blck * blck;
    float *out = malloc((n ? n : 1) * sizeof *out);
    lq_error err;
    if (out && ggml_can_dequantize(t->type) && !ggml_dequantize(t->type, t->data, out, n, &err))
        for (uint64_t j = 0; j < n; j++) sink += out[j];
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_ctx g;
    lq_error err;
    if (gguf_parse(&g, data, size, &err) != 0) return 0;
    for (uint64_t i = 0; i < g.n_kv; i++) touch_kv(&g, &g.kv[i]);
    for (uint64_t i = 0; i < g.n_tensors; i++) touch_tensor(&g, &g.tensors[i]);
    json_t *tok = NULL, *cfg = NULL;
    if (gguf_build_tokenizer(&g, 0, &tok, &cfg, &err) == 0) {
        char *text = json_dumps(tok, JSON_COMPACT);
        free(text);
    }
    json_decref(tok);
    json_decref(cfg);
    gguf_close(&g);
    return 0;
}
