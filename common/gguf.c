/* gguf.c — the GGUF parser and its lookups (see gguf.h for the format).
 *
 * Reading goes through a cursor that knows how many bytes remain; every read
 * asks the cursor first, so a truncated or lying file fails with the byte
 * offset and the field being read instead of walking off the buffer. Counts
 * that size an allocation (keys, tensors, array elements) are first bounded
 * by the smallest encoding one element could have in the remaining bytes, so
 * memory use stays proportional to the input, whatever the header claims.
 *
 * Keys and tensor names are copied into a small chunked arena and indexed by
 * open-addressing hash tables: duplicate detection and lookups stay linear
 * even for hostile inputs with millions of entries. */
#include "gguf.h"

#include "dtype.h"

#include <stdlib.h>
#include <string.h>

/* ---- arena for NUL-terminated copies of keys and names ---- */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    char data[];
} arena_chunk;

#define ARENA_CHUNK 65536

static char *arena_strndup(void **arena, const char *s, size_t n) {
    arena_chunk *c = *arena;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > ARENA_CHUNK ? n + 1 : ARENA_CHUNK;
        arena_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc) return NULL;
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        *arena = c = nc;
    }
    char *out = c->data + c->used;
    memcpy(out, s, n);
    out[n] = '\0';
    c->used += n + 1;
    return out;
}

static void arena_free(void *arena) {
    for (arena_chunk *c = arena, *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

/* ---- hash index: name -> position, 0 meaning empty slot (positions + 1) ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t index_cap_for(uint64_t n) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

typedef const char *(*name_at_fn)(const gguf_ctx *g, uint32_t i);

static const char *kv_name_at(const gguf_ctx *g, uint32_t i) { return g->kv[i].key; }
static const char *tensor_name_at(const gguf_ctx *g, uint32_t i) { return g->tensors[i].name; }

/* Returns the position of name, or -1; *slot gets the slot where it is or
 * would go. */
static int64_t index_lookup(const gguf_ctx *g, const uint32_t *idx, uint64_t cap, name_at_fn name_at,
                            const char *name, uint64_t *slot) {
    if (!idx) return -1;
    uint64_t s = hash_str(name) & (cap - 1);
    while (idx[s]) {
        if (!strcmp(name_at(g, idx[s] - 1), name)) {
            if (slot) *slot = s;
            return idx[s] - 1;
        }
        s = (s + 1) & (cap - 1);
    }
    if (slot) *slot = s;
    return -1;
}

/* ---- cursor ---- */

typedef struct cursor {
    const unsigned char *p;
    size_t left, pos;
    lq_error *err;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->left)
        return lq_fail(c->err, "truncated GGUF: %s at byte %zu needs %llu bytes, only %zu remain", what, c->pos,
                       (unsigned long long)n, c->left);
    return 0;
}

static const unsigned char *take(cursor *c, uint64_t n, const char *what) {
    if (need(c, n, what)) return NULL;
    const unsigned char *p = c->p;
    c->p += n;
    c->left -= n;
    c->pos += n;
    return p;
}

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int rd_u32(cursor *c, uint32_t *out, const char *what) {
    const unsigned char *p = take(c, 4, what);
    if (!p) return -1;
    *out = (uint32_t)le(p, 4);
    return 0;
}

static int rd_u64(cursor *c, uint64_t *out, const char *what) {
    const unsigned char *p = take(c, 8, what);
    if (!p) return -1;
    *out = le(p, 8);
    return 0;
}

static int rd_str(cursor *c, gguf_str *out, const char *what) {
    uint64_t len;
    size_t at = c->pos;
    if (rd_u64(c, &len, what)) return -1;
    if (len > c->left)
        return lq_fail(c->err, "malformed GGUF: %s at byte %zu claims %llu bytes, only %zu remain", what, at,
                       (unsigned long long)len, c->left);
    out->ptr = (const char *)take(c, len, what);
    out->len = len;
    return 0;
}

/* ---- values ---- */

static const struct {
    const char *name;
    uint32_t size; /* encoded size of a scalar; 0 for string and array */
} value_types[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = {"u8", 1},     [GGUF_TYPE_INT8] = {"i8", 1},      [GGUF_TYPE_UINT16] = {"u16", 2},
    [GGUF_TYPE_INT16] = {"i16", 2},    [GGUF_TYPE_UINT32] = {"u32", 4},   [GGUF_TYPE_INT32] = {"i32", 4},
    [GGUF_TYPE_FLOAT32] = {"f32", 4},  [GGUF_TYPE_BOOL] = {"bool", 1},    [GGUF_TYPE_STRING] = {"string", 0},
    [GGUF_TYPE_ARRAY] = {"array", 0},  [GGUF_TYPE_UINT64] = {"u64", 8},   [GGUF_TYPE_INT64] = {"i64", 8},
    [GGUF_TYPE_FLOAT64] = {"f64", 8},
};

const char *gguf_type_name(uint32_t t) { return t < GGUF_TYPE_COUNT ? value_types[t].name : "unknown"; }

static int is_signed(gguf_type t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

static int is_unsigned(gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}

static int64_t sign_extend(uint64_t v, int bytes) {
    if (bytes == 8) return (int64_t)v;
    uint64_t sign = 1ull << (bytes * 8 - 1);
    return (int64_t)((v ^ sign) - sign);
}

static double f64_from_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static int rd_type(cursor *c, gguf_type *out, const char *what) {
    uint32_t t;
    size_t at = c->pos;
    if (rd_u32(c, &t, what)) return -1;
    if (t >= GGUF_TYPE_COUNT)
        return lq_fail(c->err, "malformed GGUF: unknown value type %u at byte %zu (%s)", t, at, what);
    *out = (gguf_type)t;
    return 0;
}

/* Decodes one scalar of type t from its bytes into v. */
static int decode_scalar(cursor *c, gguf_type t, const unsigned char *p, gguf_value *v) {
    int n = (int)value_types[t].size;
    uint64_t raw = le(p, n);
    v->type = t;
    if (t == GGUF_TYPE_FLOAT32) v->f = lq_bits_f32((uint32_t)raw);
    else if (t == GGUF_TYPE_FLOAT64) v->f = f64_from_bits(raw);
    else if (t == GGUF_TYPE_BOOL) {
        if (raw > 1) return lq_fail(c->err, "malformed GGUF: bool value %llu at byte %zu is not 0 or 1",
                                    (unsigned long long)raw, c->pos - 1);
        v->b = (int)raw;
    } else if (is_signed(t)) v->i = sign_extend(raw, n);
    else v->u = raw;
    return 0;
}

static int rd_array(cursor *c, gguf_array *a, int depth);

static int rd_string_elems(cursor *c, gguf_array *a) {
    /* Each string takes at least its 8-byte length. */
    if (a->n > c->left / 8)
        return lq_fail(c->err, "malformed GGUF: array of %llu strings at byte %zu cannot fit in the %zu remaining bytes",
                       (unsigned long long)a->n, c->pos, c->left);
    if (!a->n) return 0;
    a->strs = malloc(a->n * sizeof *a->strs);
    if (!a->strs) return lq_fail(c->err, "out of memory reading an array of %llu strings", (unsigned long long)a->n);
    for (uint64_t i = 0; i < a->n; i++)
        if (rd_str(c, &a->strs[i], "array string")) return -1;
    return 0;
}

static int rd_nested_elems(cursor *c, gguf_array *a, int depth) {
    /* Each nested array takes at least its 4-byte type and 8-byte count. */
    if (a->n > c->left / 12)
        return lq_fail(c->err, "malformed GGUF: array of %llu arrays at byte %zu cannot fit in the %zu remaining bytes",
                       (unsigned long long)a->n, c->pos, c->left);
    if (!a->n) return 0;
    a->arrs = calloc(a->n, sizeof *a->arrs);
    if (!a->arrs) return lq_fail(c->err, "out of memory reading an array of %llu arrays", (unsigned long long)a->n);
    for (uint64_t i = 0; i < a->n; i++)
        if (rd_array(c, &a->arrs[i], depth + 1)) return -1;
    return 0;
}

static int rd_array(cursor *c, gguf_array *a, int depth) {
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return lq_fail(c->err, "malformed GGUF: arrays nested deeper than %d at byte %zu", GGUF_MAX_ARRAY_DEPTH, c->pos);
    if (rd_type(c, &a->type, "array element type") || rd_u64(c, &a->n, "array length")) return -1;
    if (a->type == GGUF_TYPE_STRING) return rd_string_elems(c, a);
    if (a->type == GGUF_TYPE_ARRAY) return rd_nested_elems(c, a, depth);
    uint32_t size = value_types[a->type].size;
    if (a->n > c->left / size)
        return lq_fail(c->err, "malformed GGUF: array of %llu %s at byte %zu needs more than the %zu remaining bytes",
                       (unsigned long long)a->n, value_types[a->type].name, c->pos, c->left);
    a->raw = take(c, a->n * size, "array data");
    if (a->type == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < a->n; i++)
            if (a->raw[i] > 1)
                return lq_fail(c->err, "malformed GGUF: bool array element %llu is %u, not 0 or 1",
                               (unsigned long long)i, a->raw[i]);
    return 0;
}

static int rd_value(cursor *c, gguf_type t, gguf_value *v) {
    v->type = t;
    if (t == GGUF_TYPE_STRING) return rd_str(c, &v->s, "string value");
    if (t == GGUF_TYPE_ARRAY) return rd_array(c, &v->a, 1);
    const unsigned char *p = take(c, value_types[t].size, "value");
    if (!p) return -1;
    return decode_scalar(c, t, p, v);
}

static void free_array(gguf_array *a) {
    if (a->arrs)
        for (uint64_t i = 0; i < a->n; i++) free_array(&a->arrs[i]);
    free(a->arrs);
    free(a->strs);
    a->arrs = NULL;
    a->strs = NULL;
}

/* ---- header sections ---- */

/* Copies a key or tensor name, refusing empty ones and embedded NULs (which
 * would make two different names compare equal). */
static const char *copy_name(gguf_ctx *g, cursor *c, gguf_str s, const char *what, uint64_t i) {
    if (s.len == 0) {
        lq_fail(c->err, "malformed GGUF: %s #%llu is empty", what, (unsigned long long)i);
        return NULL;
    }
    if (memchr(s.ptr, '\0', s.len)) {
        lq_fail(c->err, "malformed GGUF: %s #%llu contains a NUL byte", what, (unsigned long long)i);
        return NULL;
    }
    for (uint64_t k = 0; k < s.len;) {
        int n = gguf_utf8_len((const unsigned char *)s.ptr + k, s.len - k);
        if (!n) {
            lq_fail(c->err, "malformed GGUF: %s #%llu is not valid UTF-8", what, (unsigned long long)i);
            return NULL;
        }
        k += (uint64_t)n;
    }
    const char *out = arena_strndup(&g->arena, s.ptr, s.len);
    if (!out) lq_fail(c->err, "out of memory copying %s #%llu", what, (unsigned long long)i);
    return out;
}

static int read_kvs(gguf_ctx *g, cursor *c) {
    /* A key/value takes at least 8 (key length) + 1 (key) + 4 (type) + 1 bytes. */
    if (g->n_kv > c->left / 14 || g->n_kv >= UINT32_MAX)
        return lq_fail(c->err, "malformed GGUF: %llu key/values cannot fit in a %zu-byte file",
                       (unsigned long long)g->n_kv, g->size);
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->kv_index_cap = index_cap_for(g->n_kv);
    g->kv_index = calloc(g->kv_index_cap, sizeof *g->kv_index);
    if (!g->kv || !g->kv_index) return lq_fail(c->err, "out of memory for %llu key/values", (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        gguf_str key;
        gguf_type t = GGUF_TYPE_UINT8;
        if (rd_str(c, &key, "key")) return -1;
        if (!(kv->key = copy_name(g, c, key, "key", i))) return -1;
        uint64_t slot = 0;
        if (index_lookup(g, g->kv_index, g->kv_index_cap, kv_name_at, kv->key, &slot) >= 0)
            return lq_fail(c->err, "malformed GGUF: duplicate key '%s'", kv->key);
        if (rd_type(c, &t, kv->key) || rd_value(c, t, &kv->v)) {
            lq_error_prefix(c->err, "key '%s'", kv->key);
            return -1;
        }
        g->kv_index[slot] = (uint32_t)i + 1;
    }
    return 0;
}

static int read_alignment(gguf_ctx *g, lq_error *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!gguf_find(g, "general.alignment")) return 0;
    uint32_t a = 0;
    if (gguf_get_u32(g, "general.alignment", &a, err)) return -1;
    if (a == 0 || (a & (a - 1)) || a > (1u << 30))
        return lq_fail(err, "malformed GGUF: general.alignment %u is not a power of two up to 2^30", a);
    g->alignment = a;
    return 0;
}

/* Reads dims, checks they multiply without overflow and that rows split into
 * whole blocks of the tensor's type, and computes the byte size. */
static int read_shape(cursor *c, gguf_tensor *t) {
    if (rd_u32(c, &t->n_dims, "tensor dimension count")) return -1;
    if (t->n_dims > GGUF_MAX_DIMS)
        return lq_fail(c->err, "malformed GGUF: tensor has %u dimensions, at most %d are allowed", t->n_dims,
                       GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if (rd_u64(c, &ne, "tensor dimension")) return -1;
        if (ne > (uint64_t)INT64_MAX || (ne && n > (uint64_t)INT64_MAX / ne))
            return lq_fail(c->err, "malformed GGUF: tensor element count overflows (dimension %u is %llu)", d,
                           (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        n *= ne;
    }
    t->n_elements = n;
    uint32_t type;
    if (rd_u32(c, &type, "tensor type")) return -1;
    t->type = type;
    if (!ggml_type_known(type)) return lq_fail(c->err, "malformed GGUF: unknown ggml tensor type %u", type);
    uint32_t blck = ggml_blck_size(type);
    if ((uint64_t)t->ne[0] % blck)
        return lq_fail(c->err, "malformed GGUF: row length %lld is not a multiple of the %s block size %u",
                       (long long)t->ne[0], ggml_type_name(type), blck);
    int bad = 0;
    t->nbytes = ggml_nbytes(type, n, &bad);
    if (bad) return lq_fail(c->err, "malformed GGUF: tensor byte size overflows");
    return rd_u64(c, &t->offset, "tensor offset");
}

static int read_tensor_infos(gguf_ctx *g, cursor *c) {
    /* A tensor info takes at least 8 + 1 (name) + 4 (n_dims) + 4 (type) + 8 (offset). */
    if (g->n_tensors > c->left / 25 || g->n_tensors >= UINT32_MAX)
        return lq_fail(c->err, "malformed GGUF: %llu tensors cannot fit in a %zu-byte file",
                       (unsigned long long)g->n_tensors, g->size);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    g->tensor_index_cap = index_cap_for(g->n_tensors);
    g->tensor_index = calloc(g->tensor_index_cap, sizeof *g->tensor_index);
    if (!g->tensors || !g->tensor_index)
        return lq_fail(c->err, "out of memory for %llu tensors", (unsigned long long)g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        gguf_str name;
        if (rd_str(c, &name, "tensor name")) return -1;
        if (!(t->name = copy_name(g, c, name, "tensor name", i))) return -1;
        uint64_t slot = 0;
        if (index_lookup(g, g->tensor_index, g->tensor_index_cap, tensor_name_at, t->name, &slot) >= 0)
            return lq_fail(c->err, "malformed GGUF: duplicate tensor name '%s'", t->name);
        if (read_shape(c, t)) {
            lq_error_prefix(c->err, "tensor '%s'", t->name);
            return -1;
        }
        g->tensor_index[slot] = (uint32_t)i + 1;
    }
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor's bytes must lie aligned inside the data section and no two
 * tensors may share bytes. */
static int place_tensors(gguf_ctx *g, size_t header_end, lq_error *err) {
    uint64_t a = g->alignment;
    uint64_t start = ((uint64_t)header_end + a - 1) / a * a;
    g->data_offset = start;
    g->data_size = start <= g->size ? g->size - start : 0;
    if (g->n_tensors && start > g->size)
        return lq_fail(err, "truncated GGUF: data section would start at byte %llu, past the end of the %zu-byte file",
                       (unsigned long long)start, g->size);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % a)
            return lq_fail(err, "malformed GGUF: tensor '%s' offset %llu is not a multiple of the alignment %u", t->name,
                           (unsigned long long)t->offset, g->alignment);
        if (t->offset > g->data_size || t->nbytes > g->data_size - t->offset)
            return lq_fail(err, "malformed GGUF: tensor '%s' data [%llu, +%llu) lies outside the %llu-byte data section",
                           t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                           (unsigned long long)g->data_size);
        t->data = g->buf + start + t->offset;
    }
    if (g->n_tensors < 2) return 0;
    gguf_tensor **order = malloc(g->n_tensors * sizeof *order);
    if (!order) return lq_fail(err, "out of memory checking tensor overlaps");
    for (uint64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, g->n_tensors, sizeof *order, cmp_by_offset);
    int rc = 0;
    for (uint64_t i = 0; i + 1 < g->n_tensors && !rc; i++)
        if (order[i]->offset + order[i]->nbytes > order[i + 1]->offset)
            rc = lq_fail(err, "malformed GGUF: tensors '%s' and '%s' overlap in the data section", order[i]->name,
                         order[i + 1]->name);
    free(order);
    return rc;
}

static int read_preamble(gguf_ctx *g, cursor *c) {
    const unsigned char *magic = take(c, 4, "magic");
    if (!magic) return lq_fail(c->err, "not a GGUF file: %zu bytes is too short", g->size);
    if (memcmp(magic, "GGUF", 4)) return lq_fail(c->err, "not a GGUF file: bad magic (expected \"GGUF\")");
    if (rd_u32(c, &g->version, "version")) return -1;
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return lq_fail(c->err, "big-endian GGUF files are not supported");
    if (g->version == 1) return lq_fail(c->err, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (g->version != 2 && g->version != 3)
        return lq_fail(c->err, "unsupported GGUF version %u (only versions 2 and 3)", g->version);
    if (rd_u64(c, &g->n_tensors, "tensor count") || rd_u64(c, &g->n_kv, "key/value count")) return -1;
    return 0;
}

int gguf_parse(gguf_ctx *g, const void *data, size_t len, lq_error *err) {
    memset(g, 0, sizeof *g);
    g->buf = data;
    g->size = len;
    cursor c = {.p = data, .left = len, .pos = 0, .err = err};
    if (read_preamble(g, &c) || read_kvs(g, &c) || read_alignment(g, err) || read_tensor_infos(g, &c) ||
        place_tensors(g, c.pos, err)) {
        gguf_close(g);
        return -1;
    }
    return 0;
}

int gguf_open(gguf_ctx *g, const char *path, lq_error *err) {
    lq_mapfile m;
    memset(g, 0, sizeof *g);
    if (lq_mapfile_open(&m, path, err)) return -1;
    if (gguf_parse(g, m.data, m.size, err)) {
        lq_mapfile_close(&m);
        lq_error_prefix(err, "%s", path);
        return -1;
    }
    g->map = m;
    g->owns_map = 1;
    return 0;
}

void gguf_close(gguf_ctx *g) {
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++)
            if (g->kv[i].v.type == GGUF_TYPE_ARRAY) free_array(&g->kv[i].v.a);
    free(g->kv);
    free(g->tensors);
    free(g->kv_index);
    free(g->tensor_index);
    arena_free(g->arena);
    if (g->owns_map) lq_mapfile_close(&g->map);
    memset(g, 0, sizeof *g);
}

/* ---- lookups ---- */

const gguf_kv *gguf_find(const gguf_ctx *g, const char *key) {
    int64_t i = index_lookup(g, g->kv_index, g->kv_index_cap, kv_name_at, key, NULL);
    return i < 0 ? NULL : &g->kv[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_ctx *g, const char *name) {
    int64_t i = index_lookup(g, g->tensor_index, g->tensor_index_cap, tensor_name_at, name, NULL);
    return i < 0 ? NULL : &g->tensors[i];
}

static const gguf_value *find_value(const gguf_ctx *g, const char *key, lq_error *err) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) lq_fail(err, "GGUF key '%s' is missing", key);
    return kv ? &kv->v : NULL;
}

static int wrong_type(const char *key, const gguf_value *v, const char *want, lq_error *err) {
    return lq_fail(err, "GGUF key '%s' has type %s, expected %s", key, gguf_type_name(v->type), want);
}

int gguf_get_str(const gguf_ctx *g, const char *key, gguf_str *out, lq_error *err) {
    const gguf_value *v = find_value(g, key, err);
    if (!v) return -1;
    if (v->type != GGUF_TYPE_STRING) return wrong_type(key, v, "string", err);
    *out = v->s;
    return 0;
}

int gguf_get_i64(const gguf_ctx *g, const char *key, int64_t *out, lq_error *err) {
    const gguf_value *v = find_value(g, key, err);
    if (!v) return -1;
    if (is_signed(v->type)) *out = v->i;
    else if (is_unsigned(v->type) && v->u <= (uint64_t)INT64_MAX) *out = (int64_t)v->u;
    else if (is_unsigned(v->type)) return lq_fail(err, "GGUF key '%s' value %llu is too large", key, (unsigned long long)v->u);
    else return wrong_type(key, v, "an integer", err);
    return 0;
}

int gguf_get_u64(const gguf_ctx *g, const char *key, uint64_t *out, lq_error *err) {
    const gguf_value *v = find_value(g, key, err);
    if (!v) return -1;
    if (is_unsigned(v->type)) *out = v->u;
    else if (is_signed(v->type) && v->i >= 0) *out = (uint64_t)v->i;
    else if (is_signed(v->type)) return lq_fail(err, "GGUF key '%s' value %lld is negative", key, (long long)v->i);
    else return wrong_type(key, v, "an unsigned integer", err);
    return 0;
}

int gguf_get_u32(const gguf_ctx *g, const char *key, uint32_t *out, lq_error *err) {
    uint64_t u;
    if (gguf_get_u64(g, key, &u, err)) return -1;
    if (u > UINT32_MAX) return lq_fail(err, "GGUF key '%s' value %llu does not fit in 32 bits", key, (unsigned long long)u);
    *out = (uint32_t)u;
    return 0;
}

int gguf_get_f64(const gguf_ctx *g, const char *key, double *out, lq_error *err) {
    const gguf_value *v = find_value(g, key, err);
    if (!v) return -1;
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64) *out = v->f;
    else if (is_signed(v->type)) *out = (double)v->i;
    else if (is_unsigned(v->type)) *out = (double)v->u;
    else return wrong_type(key, v, "a number", err);
    return 0;
}

int gguf_get_f32(const gguf_ctx *g, const char *key, float *out, lq_error *err) {
    double d;
    if (gguf_get_f64(g, key, &d, err)) return -1;
    *out = (float)d;
    return 0;
}

int gguf_get_bool(const gguf_ctx *g, const char *key, int *out, lq_error *err) {
    const gguf_value *v = find_value(g, key, err);
    if (!v) return -1;
    if (v->type != GGUF_TYPE_BOOL) return wrong_type(key, v, "bool", err);
    *out = v->b;
    return 0;
}

int gguf_get_arr(const gguf_ctx *g, const char *key, gguf_type elem, const gguf_array **out, lq_error *err) {
    const gguf_value *v = find_value(g, key, err);
    if (!v) return -1;
    if (v->type != GGUF_TYPE_ARRAY) return wrong_type(key, v, "array", err);
    if (elem != GGUF_TYPE_COUNT && v->a.type != elem)
        return lq_fail(err, "GGUF key '%s' is an array of %s, expected an array of %s", key, gguf_type_name(v->a.type),
                       gguf_type_name(elem));
    *out = &v->a;
    return 0;
}

int gguf_get_str_arr(const gguf_ctx *g, const char *key, const gguf_str **strs, uint64_t *n, lq_error *err) {
    const gguf_array *a;
    if (gguf_get_arr(g, key, GGUF_TYPE_STRING, &a, err)) return -1;
    *strs = a->strs;
    *n = a->n;
    return 0;
}

static uint64_t arr_raw(const gguf_array *a, uint64_t i, int *size) {
    *size = (int)value_types[a->type].size;
    return le(a->raw + i * (uint64_t)*size, *size);
}

int64_t gguf_arr_i64(const gguf_array *a, uint64_t i) {
    if (i >= a->n || !a->raw) return 0;
    int size;
    uint64_t raw = arr_raw(a, i, &size);
    if (is_signed(a->type)) return sign_extend(raw, size);
    if (is_unsigned(a->type) || a->type == GGUF_TYPE_BOOL) return raw > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)raw;
    return 0;
}

double gguf_arr_f64(const gguf_array *a, uint64_t i) {
    if (i >= a->n || !a->raw) return 0;
    int size;
    uint64_t raw = arr_raw(a, i, &size);
    if (a->type == GGUF_TYPE_FLOAT32) return lq_bits_f32((uint32_t)raw);
    if (a->type == GGUF_TYPE_FLOAT64) return f64_from_bits(raw);
    if (is_signed(a->type)) return (double)sign_extend(raw, size);
    return (double)raw;
}

int gguf_str_eq(gguf_str s, const char *text) {
    size_t n = strlen(text);
    return s.len == n && (n == 0 || !memcmp(s.ptr, text, n));
}

char *gguf_strdup(gguf_str s) {
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    if (s.len) memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

int gguf_utf8_len(const unsigned char *p, size_t left) {
    unsigned c = p[0];
    int n;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if ((size_t)n > left) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

const char *gguf_str_quote(gguf_str s, char *buf, size_t cap) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s.ptr;
    for (uint64_t k = 0; k < s.len;) {
        int n = gguf_utf8_len(p + k, s.len - k);
        if (o + (n ? (size_t)n : 1) + 4 > cap) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (n == 1 && (p[k] < 0x20 || p[k] == 0x7F)) n = 0;
        if (n) memcpy(buf + o, p + k, (size_t)n);
        else buf[o] = '?';
        o += n ? (size_t)n : 1;
        k += n ? (uint64_t)n : 1;
    }
    buf[o] = '\0';
    return buf;
}
