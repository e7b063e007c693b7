/* tok_util.c — the tokenizer's plumbing: growable buffers, piece lists, two
 * open-addressing hash maps, and JSON field readers that fail with a message
 * naming the field.
 *
 * The maps are deliberately minimal (insert and lookup, never delete): a
 * vocabulary is built once at load and then only read, from many threads. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include "json_kind.h"

/* ---- buffers ---- */

int tok_buf_reserve(tok_buf *b, size_t extra) {
    if (b->cap - b->len > extra) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tok_buf_put(tok_buf *b, const void *data, size_t len) {
    if (tok_buf_reserve(b, len) != 0) return -1;
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0'; /* reserve keeps one spare byte, so text is always terminated */
    return 0;
}

void tok_buf_free(tok_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int tok_list_push(tok_list *l, const char *s, size_t len, int32_t id, int first) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        tok_piece *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    size_t off = l->text.len;
    if (tok_buf_put(&l->text, s, len) != 0) return -1;
    l->v[l->n++] = (tok_piece){off, len, id, first};
    return 0;
}

void tok_list_clear(tok_list *l) {
    l->n = 0;
    l->text.len = 0;
}

void tok_list_free(tok_list *l) {
    tok_buf_free(&l->text);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

int tok_ids_push(tok_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

/* ---- string map ---- */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix for the low bits */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t table_size(size_t expected) {
    size_t n = 16;
    while (n < expected * 2 + 1) n *= 2;
    return n;
}

int tok_strmap_init(tok_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t size = table_size(expected);
    m->slots = malloc(size * sizeof *m->slots);
    if (!m->slots) return -1;
    memset(m->slots, 0xff, size * sizeof *m->slots);
    m->mask = size - 1;
    return 0;
}

static int strmap_grow(tok_strmap *m) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        const char **k = realloc(m->keys, cap * sizeof *k);
        if (!k) return -1;
        m->keys = k;
        uint32_t *l = realloc(m->lens, cap * sizeof *l);
        if (!l) return -1;
        m->lens = l;
        int32_t *v = realloc(m->vals, cap * sizeof *v);
        if (!v) return -1;
        m->vals = v;
        m->cap = cap;
    }
    if ((m->n + 1) * 2 <= m->mask + 1) return 0;
    size_t size = (m->mask + 1) * 2;
    int32_t *slots = malloc(size * sizeof *slots);
    if (!slots) return -1;
    memset(slots, 0xff, size * sizeof *slots);
    for (size_t i = 0; i < m->n; i++) {
        size_t h = hash_bytes(m->keys[i], m->lens[i]) & (size - 1);
        while (slots[h] >= 0) h = (h + 1) & (size - 1);
        slots[h] = (int32_t)i;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = size - 1;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val) {
    if (len > UINT32_MAX) return -1;
    if (tok_strmap_get(m, key, len) >= 0) return 0;
    if (strmap_grow(m) != 0) return -1;
    size_t h = hash_bytes(key, len) & m->mask;
    while (m->slots[h] >= 0) h = (h + 1) & m->mask;
    m->slots[h] = (int32_t)m->n;
    m->keys[m->n] = key;
    m->lens[m->n] = (uint32_t)len;
    m->vals[m->n] = val;
    m->n++;
    return 1;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    size_t h = hash_bytes(key, len) & m->mask;
    for (;;) {
        int32_t e = m->slots[h];
        if (e < 0) return -1;
        if (m->lens[e] == len && memcmp(m->keys[e], key, len) == 0) return m->vals[e];
        h = (h + 1) & m->mask;
    }
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- u64 map ---- */

int tok_u64map_init(tok_u64map *m, size_t expected) {
    size_t size = table_size(expected);
    m->keys = malloc(size * sizeof *m->keys);
    m->vals = malloc(size * sizeof *m->vals);
    if (!m->keys || !m->vals) {
        free(m->keys);
        free(m->vals);
        m->keys = m->vals = NULL;
        return -1;
    }
    memset(m->keys, 0xff, size * sizeof *m->keys);
    m->mask = size - 1;
    m->n = 0;
    return 0;
}

static int u64map_grow(tok_u64map *m) {
    size_t old = m->mask + 1, size = old * 2;
    tok_u64map g;
    g.keys = malloc(size * sizeof *g.keys);
    g.vals = malloc(size * sizeof *g.vals);
    if (!g.keys || !g.vals) {
        free(g.keys);
        free(g.vals);
        return -1;
    }
    memset(g.keys, 0xff, size * sizeof *g.keys);
    g.mask = size - 1;
    g.n = m->n;
    for (size_t i = 0; i < old; i++) {
        if (m->keys[i] == UINT64_MAX) continue;
        size_t h = hash_u64(m->keys[i]) & g.mask;
        while (g.keys[h] != UINT64_MAX) h = (h + 1) & g.mask;
        g.keys[h] = m->keys[i];
        g.vals[h] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    *m = g;
    return 0;
}

int tok_u64map_put(tok_u64map *m, uint64_t key, uint64_t val) {
    if ((m->n + 1) * 2 > m->mask + 1 && u64map_grow(m) != 0) return -1;
    size_t h = hash_u64(key) & m->mask;
    while (m->keys[h] != UINT64_MAX && m->keys[h] != key) h = (h + 1) & m->mask;
    if (m->keys[h] == UINT64_MAX) m->n++;
    m->keys[h] = key;
    m->vals[h] = val;
    return 0;
}

int tok_u64map_get(const tok_u64map *m, uint64_t key, uint64_t *val) {
    if (!m->keys) return 0;
    size_t h = hash_u64(key) & m->mask;
    for (;;) {
        if (m->keys[h] == key) {
            *val = m->vals[h];
            return 1;
        }
        if (m->keys[h] == UINT64_MAX) return 0;
        h = (h + 1) & m->mask;
    }
}

void tok_u64map_free(tok_u64map *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- JSON fields ---- */

int tok_json_bool(json_t *obj, const char *key, int dflt, int *out, const char *where, lq_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) return lq_fail(err, "%s: '%s' must be a boolean, not %s", where, key, lq_json_kind(v));
    *out = json_is_true(v);
    return 0;
}

int tok_json_string(json_t *obj, const char *key, int required, const char **s, size_t *len, const char *where,
                    lq_error *err) {
    json_t *v = json_object_get(obj, key);
    *s = NULL;
    if (len) *len = 0;
    if (!v || json_is_null(v)) return required ? lq_fail(err, "%s: missing string field '%s'", where, key) : 0;
    if (!json_is_string(v)) return lq_fail(err, "%s: '%s' must be a string, not %s", where, key, lq_json_kind(v));
    *s = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 0;
}

int tok_json_uint(json_t *obj, const char *key, int required, int64_t max, int64_t *out, const char *where,
                  lq_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return required ? lq_fail(err, "%s: missing integer field '%s'", where, key) : 0;
    if (!json_is_integer(v)) return lq_fail(err, "%s: '%s' must be an integer, not %s", where, key, lq_json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > max)
        return lq_fail(err, "%s: '%s' = %lld is out of range [0, %lld]", where, key, (long long)x, (long long)max);
    *out = x;
    return 0;
}

const char *tok_json_type(json_t *obj, const char *where, lq_error *err) {
    if (!json_is_object(obj)) {
        lq_fail(err, "%s: must be an object or null, not %s", where, lq_json_kind(obj));
        return NULL;
    }
    const char *t;
    if (tok_json_string(obj, "type", 1, &t, NULL, where, err) != 0) return NULL;
    return t;
}

char *tok_strndup(const char *s, size_t len) {
    char *p = malloc(len + 1);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
