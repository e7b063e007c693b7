/* test_gguf.c — the GGUF reader on hand-built byte images, and the ggml block
 * dequantizers on hand-made blocks.
 *
 * Each malformed image is a valid one with a single defect, so every test
 * proves exactly one check; the truncation test tries every prefix of a
 * valid image. Runs under ASan/UBSan, so "fails cleanly" also means "never
 * reads outside the buffer". */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dtype.h"
#include "ggml_quant.h"
#include "gguf.h"

/* ---- a tiny GGUF writer ---- */

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_le(buf *b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        put(b, &c, 1);
    }
}

static void u32(buf *b, uint32_t v) { put_le(b, v, 4); }
static void u64(buf *b, uint64_t v) { put_le(b, v, 8); }
static void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(buf *b, size_t align) {
    while (b->n % align) put_le(b, 0, 1);
}

static void header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    u32(b, version);
    u64(b, n_tensors);
    u64(b, n_kv);
}

static void kv_u32(buf *b, const char *key, uint32_t v) {
    str(b, key);
    u32(b, GGUF_TYPE_UINT32);
    u32(b, v);
}

static void kv_str(buf *b, const char *key, const char *v) {
    str(b, key);
    u32(b, GGUF_TYPE_STRING);
    str(b, v);
}

static void tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    str(b, name);
    u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) u64(b, ne[d]);
    u32(b, type);
    u64(b, off);
}

/* One key of every type (arrays of u8, strings and nested arrays too) and
 * two tensors: "a" F32 [3, 2] at 0 and "b" Q8_0 [32] at the next aligned offset. */
static void every_type_image(buf *b, uint32_t version, uint32_t alignment) {
    header(b, version, 2, 17 + (alignment != 0));
    str(b, "k.u8"), u32(b, GGUF_TYPE_UINT8), put_le(b, 200, 1);
    str(b, "k.i8"), u32(b, GGUF_TYPE_INT8), put_le(b, 0x80, 1);
    str(b, "k.u16"), u32(b, GGUF_TYPE_UINT16), put_le(b, 65535, 2);
    str(b, "k.i16"), u32(b, GGUF_TYPE_INT16), put_le(b, 0xfffe, 2);
    kv_u32(b, "k.u32", 4000000000u);
    str(b, "k.i32"), u32(b, GGUF_TYPE_INT32), put_le(b, (uint32_t)-7, 4);
    float f = 0.5f;
    uint32_t fb;
    memcpy(&fb, &f, 4);
    str(b, "k.f32"), u32(b, GGUF_TYPE_FLOAT32), u32(b, fb);
    str(b, "k.bool"), u32(b, GGUF_TYPE_BOOL), put_le(b, 1, 1);
    kv_str(b, "k.str", "héllo");
    str(b, "k.u64"), u32(b, GGUF_TYPE_UINT64), u64(b, UINT64_MAX);
    str(b, "k.i64"), u32(b, GGUF_TYPE_INT64), u64(b, (uint64_t)INT64_MIN);
    double d = -2.25;
    uint64_t db;
    memcpy(&db, &d, 8);
    str(b, "k.f64"), u32(b, GGUF_TYPE_FLOAT64), u64(b, db);
    str(b, "k.arr_u8"), u32(b, GGUF_TYPE_ARRAY), u32(b, GGUF_TYPE_UINT8), u64(b, 3), put(b, "\x01\x02\xff", 3);
    str(b, "k.arr_i32"), u32(b, GGUF_TYPE_ARRAY), u32(b, GGUF_TYPE_INT32), u64(b, 2), u32(b, (uint32_t)-1), u32(b, 5);
    str(b, "k.arr_str"), u32(b, GGUF_TYPE_ARRAY), u32(b, GGUF_TYPE_STRING), u64(b, 2), str(b, "a"), str(b, "");
    str(b, "k.arr_arr"), u32(b, GGUF_TYPE_ARRAY), u32(b, GGUF_TYPE_ARRAY), u64(b, 2);
    u32(b, GGUF_TYPE_FLOAT32), u64(b, 1), u32(b, fb);
    u32(b, GGUF_TYPE_STRING), u64(b, 1), str(b, "x");
    str(b, "k.empty"), u32(b, GGUF_TYPE_ARRAY), u32(b, GGUF_TYPE_UINT64), u64(b, 0);
    uint32_t align = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
    if (alignment) kv_u32(b, "general.alignment", alignment);
    uint64_t ne_a[2] = {3, 2}, ne_b[1] = {32};
    tensor_info(b, "a", 2, ne_a, GGML_TYPE_F32, 0);
    tensor_info(b, "b", 1, ne_b, GGML_TYPE_Q8_0, align);
    pad_to(b, align);
    for (int i = 0; i < 6; i++) {
        float v = (float)i;
        uint32_t vb;
        memcpy(&vb, &v, 4);
        u32(b, vb);
    }
    pad_to(b, align);
    put_le(b, lq_f32_to_f16(0.5f), 2);
    for (int i = 0; i < 32; i++) put_le(b, (uint64_t)(i - 16) & 0xff, 1);
}

static void check_every_type(const gguf_ctx *g, uint32_t version, uint32_t align) {
    lq_error err;
    uint32_t u;
    uint64_t u6;
    int64_t i6;
    double d;
    float f;
    int bo;
    gguf_str s;
    assert_int_equal(g->version, version);
    assert_int_equal(g->alignment, align);
    assert_int_equal(g->n_kv, 17 + (align != 32));
    assert_int_equal(gguf_get_u32(g, "k.u8", &u, &err), 0), assert_int_equal(u, 200);
    assert_int_equal(gguf_get_i64(g, "k.i8", &i6, &err), 0), assert_int_equal(i6, -128);
    assert_int_equal(gguf_get_u32(g, "k.u16", &u, &err), 0), assert_int_equal(u, 65535);
    assert_int_equal(gguf_get_i64(g, "k.i16", &i6, &err), 0), assert_int_equal(i6, -2);
    assert_int_equal(gguf_get_u32(g, "k.u32", &u, &err), 0), assert_int_equal(u, 4000000000u);
    assert_int_equal(gguf_get_i64(g, "k.i32", &i6, &err), 0), assert_int_equal(i6, -7);
    assert_int_equal(gguf_get_f32(g, "k.f32", &f, &err), 0), assert_true(f == 0.5f);
    assert_int_equal(gguf_get_bool(g, "k.bool", &bo, &err), 0), assert_int_equal(bo, 1);
    assert_int_equal(gguf_get_str(g, "k.str", &s, &err), 0), assert_true(gguf_str_eq(s, "héllo"));
    assert_int_equal(gguf_get_u64(g, "k.u64", &u6, &err), 0), assert_true(u6 == UINT64_MAX);
    assert_int_equal(gguf_get_i64(g, "k.i64", &i6, &err), 0), assert_true(i6 == INT64_MIN);
    assert_int_equal(gguf_get_f64(g, "k.f64", &d, &err), 0), assert_true(d == -2.25);
    const gguf_array *a;
    assert_int_equal(gguf_get_arr(g, "k.arr_u8", GGUF_TYPE_UINT8, &a, &err), 0);
    assert_int_equal(a->n, 3), assert_int_equal(gguf_arr_i64(a, 2), 255);
    assert_int_equal(gguf_get_arr(g, "k.arr_i32", GGUF_TYPE_INT32, &a, &err), 0);
    assert_int_equal(gguf_arr_i64(a, 0), -1), assert_true(gguf_arr_f64(a, 1) == 5.0);
    const gguf_str *strs;
    uint64_t n;
    assert_int_equal(gguf_get_str_arr(g, "k.arr_str", &strs, &n, &err), 0);
    assert_int_equal(n, 2), assert_true(gguf_str_eq(strs[0], "a")), assert_int_equal(strs[1].len, 0);
    assert_int_equal(gguf_get_arr(g, "k.arr_arr", GGUF_TYPE_ARRAY, &a, &err), 0);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->arrs[0].type, GGUF_TYPE_FLOAT32), assert_true(gguf_arr_f64(&a->arrs[0], 0) == 0.5);
    assert_int_equal(a->arrs[1].type, GGUF_TYPE_STRING), assert_true(gguf_str_eq(a->arrs[1].strs[0], "x"));
    assert_int_equal(gguf_get_arr(g, "k.empty", GGUF_TYPE_UINT64, &a, &err), 0), assert_int_equal(a->n, 0);

    assert_int_equal(g->n_tensors, 2);
    assert_int_equal(g->data_offset % align, 0);
    const gguf_tensor *t = gguf_find_tensor(g, "a");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2), assert_int_equal(t->ne[0], 3), assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1), assert_int_equal(t->n_elements, 6), assert_int_equal(t->nbytes, 24);
    float got[32];
    assert_int_equal(ggml_dequantize(t->type, t->data, got, 6, &err), 0);
    assert_true(got[5] == 5.0f);
    t = gguf_find_tensor(g, "b");
    assert_non_null(t);
    assert_int_equal(t->offset, align), assert_int_equal(t->nbytes, 34);
    assert_int_equal(ggml_dequantize(t->type, t->data, got, 32, &err), 0);
    assert_true(got[0] == -8.0f && got[31] == 7.5f);
    assert_null(gguf_find_tensor(g, "c"));
    assert_null(gguf_find(g, "nope"));
}

static void test_valid_v3_every_type(void **state) {
    (void)state;
    buf b = {0};
    every_type_image(&b, 3, 0);
    gguf_ctx g;
    lq_error err;
    assert_int_equal(gguf_parse(&g, b.p, b.n, &err), 0);
    check_every_type(&g, 3, 32);
    gguf_close(&g);
    free(b.p);
}

static void test_valid_v2_and_alignment(void **state) {
    (void)state;
    buf b = {0};
    every_type_image(&b, 2, 64);
    gguf_ctx g;
    lq_error err;
    if (gguf_parse(&g, b.p, b.n, &err)) fail_msg("%s", err.msg);
    check_every_type(&g, 2, 64);
    gguf_close(&g);
    free(b.p);
}

static void test_getter_type_errors(void **state) {
    (void)state;
    buf b = {0};
    every_type_image(&b, 3, 0);
    gguf_ctx g;
    lq_error err;
    assert_int_equal(gguf_parse(&g, b.p, b.n, &err), 0);
    uint32_t u;
    gguf_str s;
    int bo;
    const gguf_array *a;
    assert_int_equal(gguf_get_u32(&g, "missing.key", &u, &err), -1);
    assert_non_null(strstr(err.msg, "'missing.key' is missing"));
    assert_int_equal(gguf_get_str(&g, "k.u32", &s, &err), -1);
    assert_non_null(strstr(err.msg, "has type u32, expected string"));
    assert_int_equal(gguf_get_u32(&g, "k.u64", &u, &err), -1);
    assert_non_null(strstr(err.msg, "does not fit in 32 bits"));
    assert_int_equal(gguf_get_u32(&g, "k.i32", &u, &err), -1);
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(gguf_get_u32(&g, "k.str", &u, &err), -1);
    assert_non_null(strstr(err.msg, "expected an unsigned integer"));
    assert_int_equal(gguf_get_bool(&g, "k.u8", &bo, &err), -1);
    assert_int_equal(gguf_get_arr(&g, "k.arr_u8", GGUF_TYPE_STRING, &a, &err), -1);
    assert_non_null(strstr(err.msg, "array of u8, expected an array of string"));
    gguf_close(&g);
    free(b.p);
}

/* Every proper prefix of a valid image is an error, never a crash. */
static void test_truncated_everywhere(void **state) {
    (void)state;
    buf b = {0};
    every_type_image(&b, 3, 0);
    for (size_t n = 0; n < b.n; n++) {
        unsigned char *copy = malloc(n ? n : 1); /* exact size, so ASan sees any overread */
        memcpy(copy, b.p, n);
        gguf_ctx g;
        lq_error err = {{0}};
        if (gguf_parse(&g, copy, n, &err) == 0) fail_msg("prefix of %zu bytes parsed", n);
        assert_true(err.msg[0] != '\0');
        free(copy);
    }
    free(b.p);
}

/* Parses img and expects failure with `want` in the message. */
static void expect_error(buf *b, const char *want) {
    gguf_ctx g;
    lq_error err = {{0}};
    unsigned char *copy = malloc(b->n ? b->n : 1);
    memcpy(copy, b->p, b->n);
    int rc = gguf_parse(&g, copy, b->n, &err);
    if (rc == 0) fail_msg("parsed, expected error containing '%s'", want);
    if (!strstr(err.msg, want)) fail_msg("error '%s' does not contain '%s'", err.msg, want);
    free(copy);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* The same after 64 zero bytes, which keep the header's count plausibility
 * checks (n entries need n × their minimal size) from firing first. */
static void expect_error_padded(buf *b, const char *want) {
    static const unsigned char zeros[64];
    put(b, zeros, sizeof zeros);
    expect_error(b, want);
}

static void test_bad_preamble(void **state) {
    (void)state;
    buf b = {0};
    put(&b, "GGML", 4), u32(&b, 3), u64(&b, 0), u64(&b, 0);
    expect_error(&b, "bad magic");
    header(&b, 1, 0, 0);
    expect_error(&b, "version 1 is not supported");
    header(&b, 4, 0, 0);
    expect_error(&b, "unsupported GGUF version 4");
    header(&b, 0x03000000u, 0, 0);
    expect_error(&b, "big-endian");
    put(&b, "GG", 2);
    expect_error(&b, "too short");
}

static void test_huge_lengths_and_counts(void **state) {
    (void)state;
    buf b = {0};
    header(&b, 3, 0, 1), u64(&b, UINT64_MAX), put(&b, "k", 1);
    expect_error_padded(&b, "claims");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_STRING), u64(&b, 1ull << 62);
    expect_error_padded(&b, "claims");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_ARRAY), u32(&b, GGUF_TYPE_STRING), u64(&b, 1ull << 61);
    expect_error_padded(&b, "array of 2305843009213693952 strings");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_ARRAY), u32(&b, GGUF_TYPE_UINT64), u64(&b, UINT64_MAX / 4);
    expect_error_padded(&b, "needs more than");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_ARRAY), u32(&b, GGUF_TYPE_ARRAY), u64(&b, 1ull << 40);
    expect_error_padded(&b, "arrays at byte");
    header(&b, 3, 0, UINT64_MAX);
    expect_error_padded(&b, "key/values cannot fit");
    header(&b, 3, UINT64_MAX, 0);
    expect_error_padded(&b, "tensors cannot fit");
}

static void test_bad_values(void **state) {
    (void)state;
    buf b = {0};
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, 13), u32(&b, 0);
    expect_error_padded(&b, "unknown value type 13");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_ARRAY), u32(&b, 99), u64(&b, 0);
    expect_error_padded(&b, "unknown value type 99");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_BOOL), put_le(&b, 2, 1);
    expect_error_padded(&b, "not 0 or 1");
    header(&b, 3, 0, 1), str(&b, "k"), u32(&b, GGUF_TYPE_ARRAY);
    for (int i = 0; i < GGUF_MAX_ARRAY_DEPTH + 1; i++) u32(&b, GGUF_TYPE_ARRAY), u64(&b, 1);
    u32(&b, GGUF_TYPE_UINT8), u64(&b, 0);
    expect_error_padded(&b, "nested deeper");
    header(&b, 3, 0, 2), kv_u32(&b, "dup", 1), kv_u32(&b, "dup", 2);
    expect_error_padded(&b, "duplicate key 'dup'");
    header(&b, 3, 0, 1), str(&b, ""), u32(&b, GGUF_TYPE_UINT8), put_le(&b, 0, 1);
    expect_error_padded(&b, "key #0 is empty");
    header(&b, 3, 0, 1), u64(&b, 3), put(&b, "a\0b", 3), u32(&b, GGUF_TYPE_UINT8), put_le(&b, 0, 1);
    expect_error_padded(&b, "NUL byte");
    header(&b, 3, 0, 1), u64(&b, 2), put(&b, "\xff\xfe", 2), u32(&b, GGUF_TYPE_UINT8), put_le(&b, 0, 1);
    expect_error_padded(&b, "not valid UTF-8");
    header(&b, 3, 0, 1), kv_u32(&b, "general.alignment", 48);
    expect_error_padded(&b, "power of two");
    header(&b, 3, 0, 1), kv_str(&b, "general.alignment", "32");
    expect_error_padded(&b, "expected an unsigned integer");
}

static void test_bad_tensors(void **state) {
    (void)state;
    static const unsigned char zero[512];
    buf b = {0};
    uint64_t ne[5] = {32, 1, 1, 1, 1};
    header(&b, 3, 1, 0), tensor_info(&b, "t", 5, ne, GGML_TYPE_F32, 0), pad_to(&b, 32), put(&b, zero, 128);
    expect_error(&b, "5 dimensions");
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, ne, 4, 0), pad_to(&b, 32), put(&b, zero, 128);
    expect_error(&b, "unknown ggml tensor type 4");
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, ne, 200, 0);
    expect_error(&b, "unknown ggml tensor type 200");
    uint64_t big[2] = {1ull << 40, 1ull << 40};
    header(&b, 3, 1, 0), tensor_info(&b, "t", 2, big, GGML_TYPE_F32, 0);
    expect_error(&b, "element count overflows");
    uint64_t odd[1] = {33};
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, odd, GGML_TYPE_Q4_0, 0);
    expect_error(&b, "not a multiple of the Q4_0 block size 32");
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, 0), pad_to(&b, 32), put(&b, zero, 100);
    expect_error(&b, "outside the 100-byte data section");
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, 16), pad_to(&b, 32);
    put(&b, zero, 320);
    expect_error(&b, "not a multiple of the alignment 32");
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, UINT64_MAX - 31);
    pad_to(&b, 32), put(&b, zero, 8);
    expect_error(&b, "outside");
    header(&b, 3, 2, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, 128);
    expect_error(&b, "duplicate tensor name 't'");
    header(&b, 3, 2, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, 0), tensor_info(&b, "u", 1, ne, GGML_TYPE_F32, 96);
    pad_to(&b, 32);
    put(&b, zero, 256);
    expect_error(&b, "overlap");
    header(&b, 3, 1, 0), tensor_info(&b, "t", 1, ne, GGML_TYPE_F32, 0);
    expect_error(&b, "data section would start"); /* the 57-byte header's padding runs past the end */
}

static void test_empty_and_zero_dim(void **state) {
    (void)state;
    buf b = {0};
    header(&b, 3, 0, 0);
    gguf_ctx g;
    lq_error err;
    assert_int_equal(gguf_parse(&g, b.p, b.n, &err), 0);
    assert_int_equal(g.n_tensors, 0);
    gguf_close(&g);
    free(b.p);
    memset(&b, 0, sizeof b);
    header(&b, 3, 1, 0), tensor_info(&b, "scalar", 0, NULL, GGML_TYPE_F32, 0), pad_to(&b, 32), u32(&b, 0);
    assert_int_equal(gguf_parse(&g, b.p, b.n, &err), 0);
    assert_int_equal(g.tensors[0].n_elements, 1);
    gguf_close(&g);
    free(b.p);
}

static void test_quote(void **state) {
    (void)state;
    char q[12];
    gguf_str s = {"ab\xff\ncd\xc3\xa9xyzwvut", 15};
    assert_string_equal(gguf_str_quote(s, q, sizeof q), "ab??cd\xc3\xa9...");
}

/* ---- dequantization of hand-made blocks ---- */

static void test_dequant_q4_0_q4_1(void **state) {
    (void)state;
    unsigned char blk[20];
    float y[32];
    lq_error err;
    uint16_t d = lq_f32_to_f16(2.0f), m = lq_f32_to_f16(-1.0f);
    memcpy(blk, &d, 2);
    for (int i = 0; i < 16; i++) blk[2 + i] = (unsigned char)(i | ((15 - i) << 4));
    assert_int_equal(ggml_dequantize(GGML_TYPE_Q4_0, blk, y, 32, &err), 0);
    for (int i = 0; i < 16; i++) {
        assert_true(y[i] == 2.0f * (float)(i - 8));
        assert_true(y[16 + i] == 2.0f * (float)(7 - i));
    }
    memcpy(blk, &d, 2), memcpy(blk + 2, &m, 2);
    for (int i = 0; i < 16; i++) blk[4 + i] = (unsigned char)(i | ((15 - i) << 4));
    assert_int_equal(ggml_dequantize(GGML_TYPE_Q4_1, blk, y, 32, &err), 0);
    for (int i = 0; i < 16; i++) {
        assert_true(y[i] == 2.0f * (float)i - 1.0f);
        assert_true(y[16 + i] == 2.0f * (float)(15 - i) - 1.0f);
    }
}

static void test_dequant_q8_0_and_f16(void **state) {
    (void)state;
    unsigned char blk[34];
    float y[32];
    lq_error err;
    uint16_t d = lq_f32_to_f16(0.25f);
    memcpy(blk, &d, 2);
    for (int i = 0; i < 32; i++) blk[2 + i] = (unsigned char)(int8_t)(i * 8 - 128);
    assert_int_equal(ggml_dequantize(GGML_TYPE_Q8_0, blk, y, 32, &err), 0);
    for (int i = 0; i < 32; i++) assert_true(y[i] == 0.25f * (float)(i * 8 - 128));
    uint16_t h[2] = {lq_f32_to_f16(-3.5f), 0x7c00};
    assert_int_equal(ggml_dequantize(GGML_TYPE_F16, h, y, 2, &err), 0);
    assert_true(y[0] == -3.5f && isinf(y[1]));
}

/* Q6_K: element e = (d * scale[e/16]) * (q - 32), q built from a low nibble
 * and two high bits spread over ql/qh. Set every q to 33 (low 1, high 2) and
 * scales to 1..16 so each group's value is its scale times d. */
static void test_dequant_q6_k(void **state) {
    (void)state;
    unsigned char blk[210];
    float y[256];
    lq_error err;
    memset(blk, 0, sizeof blk);
    memset(blk, 0x11, 128);      /* both nibbles 1 */
    memset(blk + 128, 0xAA, 64); /* every 2-bit field 2 -> +32 */
    for (int i = 0; i < 16; i++) blk[192 + i] = (unsigned char)(int8_t)(i % 2 ? -(i + 1) : i + 1);
    uint16_t d = lq_f32_to_f16(0.5f);
    memcpy(blk + 208, &d, 2);
    assert_int_equal(ggml_dequantize(GGML_TYPE_Q6_K, blk, y, 256, &err), 0);
    for (int e = 0; e < 256; e++) {
        int g = e / 16;
        float sc = (float)(g % 2 ? -(g + 1) : g + 1);
        assert_true(y[e] == 0.5f * sc * 1.0f);
    }
}

static void test_dequant_errors(void **state) {
    (void)state;
    unsigned char blk[256] = {0};
    float y[256];
    lq_error err;
    assert_int_equal(ggml_dequantize(GGML_TYPE_IQ2_XXS, blk, y, 256, &err), -1);
    assert_non_null(strstr(err.msg, "IQ2_XXS"));
    assert_int_equal(ggml_dequantize(77, blk, y, 1, &err), -1);
    assert_non_null(strstr(err.msg, "unknown ggml tensor type 77"));
    assert_int_equal(ggml_dequantize(GGML_TYPE_Q4_0, blk, y, 31, &err), -1);
    assert_true(ggml_can_dequantize(GGML_TYPE_Q5_K) && !ggml_can_dequantize(GGML_TYPE_IQ4_XS));
    assert_int_equal(ggml_type_size(GGML_TYPE_Q4_K), 144);
    assert_int_equal(ggml_blck_size(GGML_TYPE_Q3_K), 256);
    assert_string_equal(ggml_type_name(GGML_TYPE_BF16), "BF16");
    int bad = 0;
    assert_int_equal(ggml_nbytes(GGML_TYPE_Q8_0, 64, &bad), 68);
    assert_int_equal(bad, 0);
    ggml_nbytes(GGML_TYPE_F32, UINT64_MAX / 2, &bad);
    assert_int_equal(bad, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v3_every_type),
        cmocka_unit_test(test_valid_v2_and_alignment),
        cmocka_unit_test(test_getter_type_errors),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_preamble),
        cmocka_unit_test(test_huge_lengths_and_counts),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_empty_and_zero_dim),
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_dequant_q4_0_q4_1),
        cmocka_unit_test(test_dequant_q8_0_and_f16),
        cmocka_unit_test(test_dequant_q6_k),
        cmocka_unit_test(test_dequant_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
