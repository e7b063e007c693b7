/* gguf.h — reading GGUF files (llama.cpp's model format), versions 2 and 3.
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count, the
 * key/values (string key, u32 value type, value), the tensor infos (string
 * name, u32 n_dims, n_dims × u64 ne, u32 ggml type, u64 offset), padding to
 * general.alignment (default 32), then the data section; tensor offsets are
 * relative to its start. Everything is little-endian; strings are u64 length
 * + bytes, not NUL-terminated. ne[0] is the innermost (contiguous) dimension,
 * so a PyTorch tensor of shape [rows, cols] appears as ne = {cols, rows}.
 *
 * The parser validates the whole file before returning: every length and
 * count is checked against the bytes that remain before it is used or
 * allocated for (a 2^60 array count is an error, not a malloc), value and
 * tensor types are known, nested arrays are depth-limited, keys and tensor
 * names are unique, valid UTF-8 and NUL-free, shape products and byte sizes do not
 * overflow, and each tensor's data lies aligned inside the data section
 * without overlapping another. After gguf_parse succeeds every pointer it
 * hands out is readable for the stated length.
 *
 * Nothing is copied except keys and tensor names (NUL-terminated for
 * convenience): string values and array elements point into the parsed
 * buffer, which must outlive the context (gguf_open keeps its own map). */
#ifndef LORQ_GGUF_H
#define LORQ_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "ggml_quant.h"
#include "mapfile.h"

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32
/* Arrays of arrays deeper than this are refused (real files use depth 1). */
#define GGUF_MAX_ARRAY_DEPTH 8

typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* A string inside the file: len bytes at ptr, no terminator, any bytes. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_array {
    gguf_type type; /* element type */
    uint64_t n;
    /* Fixed-size element types: n packed little-endian elements (unaligned). */
    const unsigned char *raw;
    /* GGUF_TYPE_STRING: n strings. */
    gguf_str *strs;
    /* GGUF_TYPE_ARRAY: n nested arrays. */
    struct gguf_array *arrs;
} gguf_array;

typedef struct gguf_value {
    gguf_type type;
    union {
        uint64_t u;   /* UINT8, UINT16, UINT32, UINT64 */
        int64_t i;    /* INT8, INT16, INT32, INT64 */
        double f;     /* FLOAT32 (exactly widened), FLOAT64 */
        int b;        /* BOOL: 0 or 1 */
        gguf_str s;   /* STRING */
        gguf_array a; /* ARRAY */
    };
} gguf_value;

typedef struct gguf_kv {
    const char *key; /* NUL-terminated copy */
    gguf_value v;
} gguf_kv;

typedef struct gguf_tensor {
    const char *name; /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* dimensions past n_dims are 1 */
    uint32_t type;             /* ggml_type */
    uint64_t offset;           /* relative to the data section */
    uint64_t n_elements;
    uint64_t nbytes;
    const void *data; /* n_bytes readable bytes */
} gguf_tensor;

typedef struct gguf_ctx {
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t data_offset; /* start of the data section within the file */
    uint64_t data_size;   /* bytes from there to the end of the file */
    /* Private: the buffer, the optional map, name copies, lookup tables. */
    const unsigned char *buf;
    size_t size;
    lq_mapfile map;
    int owns_map;
    void *arena;
    uint32_t *kv_index, *tensor_index;
    uint64_t kv_index_cap, tensor_index_cap;
} gguf_ctx;

/* Maps and parses a GGUF file; messages start with the path. */
int gguf_open(gguf_ctx *g, const char *path, lq_error *err);
/* Parses an in-memory image (not copied; it must outlive g). */
int gguf_parse(gguf_ctx *g, const void *data, size_t len, lq_error *err);
/* Frees everything; safe on a zeroed or failed context. */
void gguf_close(gguf_ctx *g);

/* "u8", "i32", "f32", "bool", "string", "array", ... */
const char *gguf_type_name(uint32_t t);

/* NULL when absent. */
const gguf_kv *gguf_find(const gguf_ctx *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_ctx *g, const char *name);

/* Typed getters: 0 on success; -1 with a message naming the key when it is
 * missing or its value has the wrong type or does not fit. For optional keys
 * test gguf_find first. Integer getters accept any integer type whose value
 * fits; float getters accept f32, f64 and integers. */
int gguf_get_str(const gguf_ctx *g, const char *key, gguf_str *out, lq_error *err);
int gguf_get_u32(const gguf_ctx *g, const char *key, uint32_t *out, lq_error *err);
int gguf_get_u64(const gguf_ctx *g, const char *key, uint64_t *out, lq_error *err);
int gguf_get_i64(const gguf_ctx *g, const char *key, int64_t *out, lq_error *err);
int gguf_get_f32(const gguf_ctx *g, const char *key, float *out, lq_error *err);
int gguf_get_f64(const gguf_ctx *g, const char *key, double *out, lq_error *err);
int gguf_get_bool(const gguf_ctx *g, const char *key, int *out, lq_error *err);
/* An array whose elements have type elem (GGUF_TYPE_COUNT: any). */
int gguf_get_arr(const gguf_ctx *g, const char *key, gguf_type elem, const gguf_array **out, lq_error *err);
/* An array of strings. */
int gguf_get_str_arr(const gguf_ctx *g, const char *key, const gguf_str **strs, uint64_t *n, lq_error *err);

/* Element i (< a->n) of an array of integers, read as int64 (u64 values
 * above INT64_MAX saturate), or of any numeric array read as double; 0 for
 * non-numeric arrays. */
int64_t gguf_arr_i64(const gguf_array *a, uint64_t i);
double gguf_arr_f64(const gguf_array *a, uint64_t i);

/* 1 if s equals the NUL-terminated text exactly. */
int gguf_str_eq(gguf_str s, const char *text);
/* Copies s into buf (cap >= 4) for quoting in a message: at most cap - 1
 * bytes, invalid UTF-8 and control characters replaced by '?', "..." when cut. */
const char *gguf_str_quote(gguf_str s, char *buf, size_t cap);
/* Length of the valid UTF-8 sequence starting at p (1..4), or 0 if invalid. */
int gguf_utf8_len(const unsigned char *p, size_t left);

/* A malloc'd NUL-terminated copy (embedded NULs kept), NULL on OOM. */
char *gguf_strdup(gguf_str s);

#endif
