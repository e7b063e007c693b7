/* kvcache.c — block allocation for the paged KV cache (see kvcache.h). */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

size_t lq_kvcache_block_bytes(int n_layers, int n_kv_heads, int head_dim, int block_size) {
    return 2u * (size_t)n_layers * (size_t)block_size * (size_t)n_kv_heads * (size_t)head_dim * sizeof(float);
}

lq_kvcache *lq_kvcache_new(lq_backend *b, int n_layers, int n_kv_heads, int head_dim, int n_blocks, int block_size,
                           lq_error *err) {
    if (n_blocks <= 0 || block_size <= 0) {
        lq_fail(err, "KV cache: need at least one block of at least one token");
        return NULL;
    }
    lq_kvcache *c = calloc(1, sizeof *c);
    if (!c) goto oom;
    c->backend = b;
    c->pool = (lq_kv_pool){NULL, NULL, n_layers, n_blocks, block_size, n_kv_heads, head_dim};
    c->pool.k = calloc((size_t)n_layers, sizeof(float *));
    c->pool.v = calloc((size_t)n_layers, sizeof(float *));
    c->free_blocks = malloc((size_t)n_blocks * sizeof *c->free_blocks);
    if (!c->pool.k || !c->pool.v || !c->free_blocks) goto oom;
    size_t layer_bytes = (size_t)n_blocks * (size_t)block_size * (size_t)n_kv_heads * (size_t)head_dim * sizeof(float);
    for (int l = 0; l < n_layers; l++) {
        c->pool.k[l] = b->alloc(b, layer_bytes);
        c->pool.v[l] = b->alloc(b, layer_bytes);
        if (!c->pool.k[l] || !c->pool.v[l]) goto oom;
    }
    /* Pop order 0, 1, 2, ...: a fresh sequence gets contiguous blocks. */
    for (int i = 0; i < n_blocks; i++) c->free_blocks[i] = n_blocks - 1 - i;
    c->n_free = n_blocks;
    return c;
oom:
    lq_kvcache_free(c);
    lq_fail(err, "KV cache: out of memory for %d blocks of %d tokens", n_blocks, block_size);
    return NULL;
}

void lq_kvcache_free(lq_kvcache *c) {
    if (!c) return;
    for (int l = 0; l < c->pool.n_layers; l++) {
        if (c->pool.k && c->pool.k[l]) c->backend->free(c->backend, c->pool.k[l]);
        if (c->pool.v && c->pool.v[l]) c->backend->free(c->backend, c->pool.v[l]);
    }
    free(c->pool.k);
    free(c->pool.v);
    free(c->free_blocks);
    free(c);
}

int lq_kv_blocks_needed(const lq_kvcache *c, const lq_kv_seq *seq, int n_tokens) {
    int want = (n_tokens + c->pool.block_size - 1) / c->pool.block_size;
    return want > seq->n_blocks ? want - seq->n_blocks : 0;
}

int lq_kv_reserve(lq_kvcache *c, lq_kv_seq *seq, int n_tokens) {
    int need = lq_kv_blocks_needed(c, seq, n_tokens);
    if (need == 0) return 0;
    if (need > c->n_free) return LQ_KV_FULL;
    if (seq->n_blocks + need > seq->cap) {
        int cap = seq->cap ? seq->cap : 8;
        while (cap < seq->n_blocks + need) cap *= 2;
        int32_t *t = realloc(seq->table, (size_t)cap * sizeof *t);
        if (!t) return -1;
        seq->table = t;
        seq->cap = cap;
    }
    for (int i = 0; i < need; i++) seq->table[seq->n_blocks++] = c->free_blocks[--c->n_free];
    return 0;
}

void lq_kv_release(lq_kvcache *c, lq_kv_seq *seq) {
    for (int i = seq->n_blocks - 1; i >= 0; i--) c->free_blocks[c->n_free++] = seq->table[i];
    free(seq->table);
    memset(seq, 0, sizeof *seq);
}
