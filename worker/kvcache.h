/* kvcache.h — the paged KV cache: a pool of fixed-size blocks and a block
 * table per sequence.
 *
 * Storage lives in the backend (lq_kv_pool); this module only decides which
 * blocks a sequence owns. A sequence grows by asking for room for its new
 * total length: the blocks are all granted or none are (LQ_KV_FULL), so the
 * scheduler can preempt or wait and nothing is ever silently overwritten.
 * Finished sequences return their blocks to a free stack. */
#ifndef LORQ_KVCACHE_H
#define LORQ_KVCACHE_H

#include <stdint.h>

#include "backend.h"
#include "error.h"

#define LQ_KV_FULL (-2)

typedef struct lq_kvcache {
    lq_kv_pool pool;
    lq_backend *backend;
    int32_t *free_blocks; /* stack of free block ids */
    int n_free;
} lq_kvcache;

typedef struct lq_kv_seq {
    int32_t *table; /* block ids, in order */
    int n_blocks, cap;
} lq_kv_seq;

lq_kvcache *lq_kvcache_new(lq_backend *b, int n_layers, int n_kv_heads, int head_dim, int n_blocks, int block_size,
                           lq_error *err);
void lq_kvcache_free(lq_kvcache *c);

/* Bytes one block takes across all layers (K and V). */
size_t lq_kvcache_block_bytes(int n_layers, int n_kv_heads, int head_dim, int block_size);

/* Makes seq's table cover n_tokens tokens. 0 on success, LQ_KV_FULL if the pool
 * lacks the blocks (nothing is taken then), -1 on allocation failure. */
int lq_kv_reserve(lq_kvcache *c, lq_kv_seq *seq, int n_tokens);
/* Blocks still needed for seq to cover n_tokens. */
int lq_kv_blocks_needed(const lq_kvcache *c, const lq_kv_seq *seq, int n_tokens);
/* Returns all of seq's blocks to the pool. */
void lq_kv_release(lq_kvcache *c, lq_kv_seq *seq);

#endif
