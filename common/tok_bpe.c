/* tok_bpe.c — the BPE model: vocabulary, merge ranks, and the merge loop.
 *
 * A word starts as one symbol per character (or its "<0xXX>" bytes with
 * byte_fallback, or the unknown token), kept as a doubly linked list inside
 * an array. Every adjacent pair that has a merge goes into a binary min-heap
 * keyed by (rank, position), so the lowest-ranked merge is applied first and
 * the leftmost one wins ties. Applying a merge makes the left symbol the
 * merged token, unlinks the right one, and pushes the two new pairs it forms
 * with its neighbours; heap entries made stale by earlier merges are
 * recognised (the pair at that position no longer merges into the same
 * token) and dropped. That is the library's algorithm, and it keeps a
 * 100k-character word — a SentencePiece-style tokenizer with no
 * pre-tokenizer sees the whole input as one — at O(n log n).
 *
 * Loading checks what the library would trip on later: every merge must name
 * two vocabulary tokens whose concatenation is in the vocabulary too. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

typedef struct sym {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* bytes of the word this symbol covers; 0 = merged away */
} sym;

typedef struct merge_item {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} merge_item;

/* ---- encoding ---- */

static int grow_scratch(void **p, size_t *cap, size_t need, size_t elem) {
    if (*cap >= need) return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) cap2 *= 2;
    void *q = realloc(*p, cap2 * elem);
    if (!q) return -1;
    *p = q;
    *cap = cap2;
    return 0;
}

static int merge_lookup(const tok_bpe *m, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id) {
    uint64_t v;
    if (!tok_u64map_get(&m->merges, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b, &v)) return 0;
    *rank = (uint32_t)(v >> 32);
    *new_id = (int32_t)(uint32_t)v;
    return 1;
}

static int item_less(const merge_item *x, const merge_item *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(merge_item *h, size_t *n, merge_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!item_less(&it, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = it;
}

static merge_item heap_pop(merge_item *h, size_t *n) {
    merge_item top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && item_less(&h[c + 1], &h[c])) c++;
        if (!item_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Appends a symbol to the word's list. */
static int add_sym(tok_ctx *ctx, size_t *n, int32_t id, uint32_t len) {
    if (grow_scratch(&ctx->syms, &ctx->syms_cap, *n + 1, sizeof(sym)) != 0) return -1;
    sym *s = ctx->syms;
    s[*n] = (sym){id, *n ? (int32_t)(*n - 1) : -1, -1, len};
    if (*n) s[*n - 1].next = (int32_t)*n;
    (*n)++;
    return 0;
}

/* The symbol for one character, in the library's order of preference: the
 * vocabulary entry, its byte tokens, the (possibly fused) unknown token. */
typedef struct unk_state {
    int pending;
    int32_t id;
    uint32_t len;
} unk_state;

static int char_symbols(const tok_bpe *m, const char *s, size_t slen, uint32_t byte_len, unk_state *unk,
                        tok_ctx *ctx, size_t *n, lq_error *err) {
    int32_t id = tok_strmap_get(&m->vocab, s, slen);
    if (id >= 0) {
        if (unk->pending && add_sym(ctx, n, unk->id, unk->len) != 0) return lq_fail(err, "out of memory");
        unk->pending = 0;
        return add_sym(ctx, n, id, byte_len) ? lq_fail(err, "out of memory") : 0;
    }
    if (m->byte_fallback) {
        size_t k = 0;
        while (k < slen && m->byte_ids[(uint8_t)s[k]] >= 0) k++;
        if (k == slen) { /* (like the library, a pending unknown is not flushed first) */
            for (k = 0; k < slen; k++)
                if (add_sym(ctx, n, m->byte_ids[(uint8_t)s[k]], 1) != 0) return lq_fail(err, "out of memory");
            return 0;
        }
    }
    if (!m->unk) return 0; /* no unknown token: the character is dropped */
    int32_t unk_id = tok_strmap_get(&m->vocab, m->unk, m->unk_len);
    if (unk_id < 0) return lq_fail(err, "unk_token '%s' is not in the vocabulary", m->unk);
    if (unk->pending && m->fuse_unk) {
        unk->len += byte_len;
        return 0;
    }
    if (unk->pending && add_sym(ctx, n, unk->id, unk->len) != 0) return lq_fail(err, "out of memory");
    *unk = (unk_state){1, unk_id, byte_len};
    return 0;
}

/* Splits the word into its initial symbols; returns their count or -1. */
static long initial_symbols(const tok_bpe *m, const char *word, size_t len, tok_ctx *ctx, lq_error *err) {
    size_t n = 0;
    unk_state unk = {0, 0, 0};
    tok_buf *t = &ctx->tmp;
    for (size_t i = 0; i < len;) {
        size_t start = i;
        i += lq_utf8_char_len((unsigned char)word[i]);
        const char *s = word + start;
        size_t slen = i - start;
        if ((start > 0 && m->prefix) || (i == len && m->suffix)) {
            t->len = 0;
            if ((start > 0 && m->prefix && tok_buf_put(t, m->prefix, m->prefix_len) != 0) ||
                tok_buf_put(t, s, slen) != 0 || (i == len && m->suffix && tok_buf_put(t, m->suffix, m->suffix_len) != 0))
                return lq_fail(err, "out of memory");
            s = t->p;
            slen = t->len;
        }
        if (char_symbols(m, s, slen, (uint32_t)(i - start), &unk, ctx, &n, err) != 0) return -1;
    }
    if (unk.pending && add_sym(ctx, &n, unk.id, unk.len) != 0) return lq_fail(err, "out of memory");
    return (long)n;
}

static int push_pair(const tok_bpe *m, tok_ctx *ctx, size_t *hn, const sym *s, int32_t left) {
    uint32_t rank;
    int32_t new_id;
    if (!merge_lookup(m, s[left].id, s[s[left].next].id, &rank, &new_id)) return 0;
    if (grow_scratch(&ctx->heap, &ctx->heap_cap, *hn + 1, sizeof(merge_item)) != 0) return -1;
    heap_push(ctx->heap, hn, (merge_item){rank, (uint32_t)left, new_id});
    return 0;
}

static int merge_all(const tok_bpe *m, size_t n, tok_ctx *ctx, lq_error *err) {
    size_t hn = 0;
    sym *s = ctx->syms;
    for (size_t i = 0; i + 1 < n; i++)
        if (push_pair(m, ctx, &hn, s, (int32_t)i) != 0) return lq_fail(err, "out of memory");
    while (hn > 0) {
        merge_item top = heap_pop(ctx->heap, &hn);
        sym *a = &s[top.pos];
        if (a->len == 0 || a->next < 0) continue;
        sym *b = &s[a->next];
        uint32_t rank;
        int32_t new_id;
        if (!merge_lookup(m, a->id, b->id, &rank, &new_id) || new_id != top.new_id) continue; /* stale */
        a->id = new_id;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        if (a->next >= 0) s[a->next].prev = (int32_t)top.pos;
        if (a->prev >= 0 && push_pair(m, ctx, &hn, s, a->prev) != 0) return lq_fail(err, "out of memory");
        if (a->next >= 0 && push_pair(m, ctx, &hn, s, (int32_t)top.pos) != 0) return lq_fail(err, "out of memory");
    }
    return 0;
}

int tok_bpe_encode(const tok_bpe *m, const char *word, size_t len, tok_ids *out, tok_ctx *ctx, lq_error *err) {
    if (len == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = tok_strmap_get(&m->vocab, word, len);
        if (id >= 0) return tok_ids_push(out, id) ? lq_fail(err, "out of memory") : 0;
    }
    if (len > INT32_MAX / 2) return lq_fail(err, "word of %zu bytes is too long", len);
    long n = initial_symbols(m, word, len, ctx, err);
    if (n < 0 || merge_all(m, (size_t)n, ctx, err) != 0) return -1;
    const sym *s = ctx->syms;
    for (long i = 0; i < n; i++)
        if (s[i].len && tok_ids_push(out, s[i].id) != 0) return lq_fail(err, "out of memory");
    return 0;
}

/* ---- loading ---- */

static int optional_string(json_t *j, const char *key, char **out, size_t *len, lq_error *err) {
    const char *s;
    if (tok_json_string(j, key, 0, &s, len, "model", err) != 0) return -1;
    if (s && !(*out = tok_strndup(s, *len))) return lq_fail(err, "out of memory");
    return 0;
}

static int load_vocab(json_t *vocab, tok_bpe *m, lq_error *err) {
    if (!json_is_object(vocab)) return lq_fail(err, "model: 'vocab' must be an object of token -> id");
    size_t n = json_object_size(vocab);
    int64_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v)) return lq_fail(err, "model.vocab: id of token '%s' must be an integer", key);
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= TOK_MAX_ID)
            return lq_fail(err, "model.vocab: id %lld of token '%s' is out of range [0, %d)", (long long)id, key,
                           TOK_MAX_ID);
        if (id > max_id) max_id = id;
    }
    m->n_ids = (size_t)(max_id + 1);
    m->n_vocab = n;
    m->tokens = calloc(m->n_ids ? m->n_ids : 1, sizeof *m->tokens);
    m->token_lens = calloc(m->n_ids ? m->n_ids : 1, sizeof *m->token_lens);
    if (!m->tokens || !m->token_lens || tok_strmap_init(&m->vocab, n) != 0) return lq_fail(err, "out of memory");
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it)) {
        key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        size_t id = (size_t)json_integer_value(json_object_iter_value(it));
        if (m->tokens[id])
            return lq_fail(err, "model.vocab: tokens '%s' and '%s' both have id %zu", m->tokens[id], key, id);
        if (!(m->tokens[id] = tok_strndup(key, klen))) return lq_fail(err, "out of memory");
        m->token_lens[id] = (uint32_t)klen;
        if (tok_strmap_put(&m->vocab, m->tokens[id], klen, (int32_t)id) < 0) return lq_fail(err, "out of memory");
    }
    return 0;
}

/* One merge as its two token strings: "a b" (legacy) or ["a", "b"]. */
static int merge_parts(json_t *e, size_t i, const char **a, size_t *alen, const char **b, size_t *blen,
                       lq_error *err) {
    if (json_is_string(e)) {
        const char *s = json_string_value(e);
        size_t len = json_string_length(e);
        const char *sp = memchr(s, ' ', len);
        if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s)))
            return lq_fail(err, "model.merges[%zu]: '%s' is not two tokens separated by one space", i, s);
        *a = s;
        *alen = (size_t)(sp - s);
        *b = sp + 1;
        *blen = len - *alen - 1;
        return 0;
    }
    if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
        json_is_string(json_array_get(e, 1))) {
        *a = json_string_value(json_array_get(e, 0));
        *alen = json_string_length(json_array_get(e, 0));
        *b = json_string_value(json_array_get(e, 1));
        *blen = json_string_length(json_array_get(e, 1));
        return 0;
    }
    return lq_fail(err, "model.merges[%zu]: a merge must be a string \"a b\" or a pair [\"a\", \"b\"]", i);
}

static int32_t merge_token(const tok_bpe *m, const char *s, size_t len, size_t i, lq_error *err) {
    int32_t id = tok_strmap_get(&m->vocab, s, len);
    if (id < 0) lq_fail(err, "model.merges[%zu]: token '%.*s' is not in the vocabulary", i, (int)len, s);
    return id;
}

static int load_merges(json_t *merges, tok_bpe *m, lq_error *err) {
    if (!merges || json_is_null(merges)) merges = NULL;
    else if (!json_is_array(merges)) return lq_fail(err, "model: 'merges' must be an array");
    size_t n = merges ? json_array_size(merges) : 0, rank = 0;
    if (tok_u64map_init(&m->merges, n) != 0) return lq_fail(err, "out of memory");
    tok_buf joined = {0};
    int legacy = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(merges, i);
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        if (legacy >= 0 && legacy != json_is_string(e))
            return tok_buf_free(&joined), lq_fail(err, "model.merges[%zu]: strings and pairs are mixed", i);
        legacy = json_is_string(e);
        if (legacy && json_string_length(e) >= 8 && !memcmp(json_string_value(e), "#version", 8)) continue;
        if (merge_parts(e, i, &a, &alen, &b, &blen, err) != 0) return tok_buf_free(&joined), -1;
        int32_t ia = merge_token(m, a, alen, i, err), ib = ia < 0 ? -1 : merge_token(m, b, blen, i, err);
        if (ib < 0) return tok_buf_free(&joined), -1;
        if (m->prefix_len && (blen < m->prefix_len || memcmp(b, m->prefix, m->prefix_len) != 0)) {
            tok_buf_free(&joined);
            return lq_fail(err, "model.merges[%zu]: '%.*s' does not start with continuing_subword_prefix", i,
                           (int)blen, b);
        }
        joined.len = 0;
        if (tok_buf_put(&joined, a, alen) != 0 || tok_buf_put(&joined, b + m->prefix_len, blen - m->prefix_len) != 0)
            return tok_buf_free(&joined), lq_fail(err, "out of memory");
        int32_t id = merge_token(m, joined.p, joined.len, i, err);
        if (id < 0) return tok_buf_free(&joined), -1;
        /* A repeated pair keeps its last rank, as the library's map does. */
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        if (tok_u64map_put(&m->merges, key, ((uint64_t)rank << 32) | (uint32_t)id) != 0)
            return tok_buf_free(&joined), lq_fail(err, "out of memory");
        rank++;
    }
    tok_buf_free(&joined);
    return 0;
}

static int check_dropout(json_t *j, lq_error *err) {
    json_t *d = json_object_get(j, "dropout");
    if (!d || json_is_null(d)) return 0;
    if (json_is_number(d) && json_number_value(d) == 0.0) return 0;
    return lq_fail(err, "model: BPE dropout is not supported (it must be null): encoding would be random");
}

int tok_bpe_parse(json_t *j, tok_bpe *m, lq_error *err) {
    memset(m, 0, sizeof *m);
    for (int b = 0; b < 256; b++) m->byte_ids[b] = -1;
    const char *type = tok_json_type(j, "model", err);
    if (!type) return -1;
    if (strcmp(type, "BPE") != 0) return lq_fail(err, "model: unsupported model type '%s' (lorq implements BPE)", type);
    if (check_dropout(j, err) != 0 || tok_json_bool(j, "fuse_unk", 0, &m->fuse_unk, "model", err) != 0 ||
        tok_json_bool(j, "byte_fallback", 0, &m->byte_fallback, "model", err) != 0 ||
        tok_json_bool(j, "ignore_merges", 0, &m->ignore_merges, "model", err) != 0 ||
        optional_string(j, "unk_token", &m->unk, &m->unk_len, err) != 0 ||
        optional_string(j, "continuing_subword_prefix", &m->prefix, &m->prefix_len, err) != 0 ||
        optional_string(j, "end_of_word_suffix", &m->suffix, &m->suffix_len, err) != 0)
        return -1;
    if (load_vocab(json_object_get(j, "vocab"), m, err) != 0) return -1;
    if (load_merges(json_object_get(j, "merges"), m, err) != 0) return -1;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tok_strmap_get(&m->vocab, name, 6);
    }
    return 0;
}

void tok_bpe_free(tok_bpe *m) {
    for (size_t i = 0; m->tokens && i < m->n_ids; i++) free(m->tokens[i]);
    free(m->tokens);
    free(m->token_lens);
    tok_strmap_free(&m->vocab);
    tok_u64map_free(&m->merges);
    free(m->unk);
    free(m->prefix);
    free(m->suffix);
    memset(m, 0, sizeof *m);
}
