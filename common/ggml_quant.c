/* ggml_quant.c — ggml type table and block dequantizers (see ggml_quant.h).
 *
 * Each dequantizer walks one block at a time and writes the block's elements
 * in ggml's order. Multi-byte fields are assembled from bytes (blocks are
 * only 1- or 2-byte aligned in the file) and every f16 scale goes through
 * lq_f16_to_f32, which is exact.
 *
 * Exactness: the reference computes, in f32, e.g. "d * q + m" as a rounded
 * product followed by a rounded sum. A fused multiply-add would round once and
 * give different bits, so floating-point contraction is switched off for this
 * file. */
#include "ggml_quant.h"

#include <string.h>

#include "dtype.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

typedef void (*dequant_fn)(const unsigned char *blk, float *y);

typedef struct type_info {
    const char *name;
    uint32_t blck;
    uint32_t size;
    dequant_fn dequant;
} type_info;

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static float rdf16(const unsigned char *p) { return lq_f16_to_f32(rd16(p)); }

static void dq_f32(const unsigned char *b, float *y) { memcpy(y, b, 4); }
static void dq_f16(const unsigned char *b, float *y) { y[0] = rdf16(b); }
static void dq_bf16(const unsigned char *b, float *y) { y[0] = lq_bf16_to_f32(rd16(b)); }

/* Q4_0: f16 d, 16 bytes of nibbles; low nibbles are elements 0..15, high
 * nibbles 16..31; value = d * (q - 8). */
static void dq_q4_0(const unsigned char *b, float *y) {
    float d = rdf16(b);
    const unsigned char *qs = b + 2;
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)((qs[i] & 0x0F) - 8);
        y[i + 16] = d * (float)((qs[i] >> 4) - 8);
    }
}

/* Q4_1: f16 d, f16 m, nibbles as Q4_0; value = d * q + m. */
static void dq_q4_1(const unsigned char *b, float *y) {
    float d = rdf16(b), m = rdf16(b + 2);
    const unsigned char *qs = b + 4;
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)(qs[i] & 0x0F) + m;
        y[i + 16] = d * (float)(qs[i] >> 4) + m;
    }
}

/* Q5_0: f16 d, 32 high bits (one per element, little-endian u32), nibbles as
 * Q4_0; value = d * (q - 16). */
static void dq_q5_0(const unsigned char *b, float *y) {
    float d = rdf16(b);
    uint32_t qh = rd32(b + 2);
    const unsigned char *qs = b + 6;
    for (int i = 0; i < 16; i++) {
        int lo = (qs[i] & 0x0F) | (int)(((qh >> i) & 1u) << 4);
        int hi = (qs[i] >> 4) | (int)(((qh >> (i + 16)) & 1u) << 4);
        y[i] = d * (float)(lo - 16);
        y[i + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1: f16 d, f16 m, high bits and nibbles as Q5_0; value = d * q + m. */
static void dq_q5_1(const unsigned char *b, float *y) {
    float d = rdf16(b), m = rdf16(b + 2);
    uint32_t qh = rd32(b + 4);
    const unsigned char *qs = b + 8;
    for (int i = 0; i < 16; i++) {
        int lo = (qs[i] & 0x0F) | (int)(((qh >> i) & 1u) << 4);
        int hi = (qs[i] >> 4) | (int)(((qh >> (i + 16)) & 1u) << 4);
        y[i] = d * (float)lo + m;
        y[i + 16] = d * (float)hi + m;
    }
}

/* Q8_0: f16 d, 32 signed bytes; value = q * d. */
static void dq_q8_0(const unsigned char *b, float *y) {
    float d = rdf16(b);
    for (int i = 0; i < 32; i++) y[i] = (float)(int8_t)b[2 + i] * d;
}

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min, one pair per 16
 * elements), 64 bytes of 2-bit quants, f16 d, f16 dmin. Each half of the
 * block (128 elements) uses 32 quant bytes four times, at shifts 0,2,4,6. */
static void dq_q2_k(const unsigned char *b, float *y) {
    const unsigned char *sc = b, *qs = b + 16;
    float d = rdf16(b + 80), dmin = rdf16(b + 82);
    for (int e = 0; e < GGML_QK_K; e++) {
        int half = e / 128, shift = (e % 128) / 32, l = e % 32;
        int s = sc[e / 16];
        float dl = d * (float)(s & 0x0F), ml = dmin * (float)(s >> 4);
        int q = (qs[half * 32 + l] >> (2 * shift)) & 3;
        y[e] = dl * (float)q - ml;
    }
}

/* Q3_K scales: sixteen 6-bit signed values (offset 32) packed in 12 bytes:
 * low nibbles in bytes 0..7 (elements 0..7 low, 8..15 high nibble), top two
 * bits in bytes 8..11 at shifts 0,2,4,6 for groups of four. */
static int q3_k_scale(const unsigned char *sc, int i) {
    int lo = (i < 8 ? sc[i] : sc[i - 8] >> 4) & 0x0F;
    int hi = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* Q3_K: 32 bytes of high-bit mask, 64 bytes of 2-bit quants, 12 scale bytes,
 * f16 d. Element e takes bit (e / 32) of hmask[e % 32]; a clear bit means the
 * quant is offset by -4. */
static void dq_q3_k(const unsigned char *b, float *y) {
    const unsigned char *hm = b, *qs = b + 32, *sc = b + 96;
    float d = rdf16(b + 108);
    for (int e = 0; e < GGML_QK_K; e++) {
        int half = e / 128, shift = (e % 128) / 32, l = e % 32;
        int q = (qs[half * 32 + l] >> (2 * shift)) & 3;
        if (!((hm[l] >> (e / 32)) & 1)) q -= 4;
        float dl = d * (float)q3_k_scale(sc, e / 16);
        y[e] = dl * (float)q;
    }
}

/* Q4_K / Q5_K scales: eight 6-bit scales and eight 6-bit mins in 12 bytes.
 * Sub-blocks 0..3 keep theirs in the low 6 bits of bytes 0..3 (scales) and
 * 4..7 (mins); sub-blocks 4..7 use a nibble of bytes 8..11 plus the top two
 * bits of bytes 0..7. */
static void k_scale_min(const unsigned char *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 0x3F;
        *mn = s[j + 4] & 0x3F;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
    }
}

/* Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles. Sub-block j
 * (32 elements) reads the low (even j) or high (odd j) nibbles of quant bytes
 * 32*(j/2) .. +31; value = (d*sc) * q - dmin*m. */
static void dq_q4_k(const unsigned char *b, float *y) {
    float d = rdf16(b), dmin = rdf16(b + 2);
    const unsigned char *scales = b + 4, *qs = b + 16;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(scales, j, &sc, &mn);
        float dl = d * (float)sc, ml = dmin * (float)mn;
        const unsigned char *q = qs + 32 * (j / 2);
        int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) y[j * 32 + l] = dl * (float)((q[l] >> shift) & 0x0F) - ml;
    }
}

/* Q5_K: as Q4_K plus 32 bytes of high bits between scales and nibbles;
 * sub-block j takes bit j of qh[l]. */
static void dq_q5_k(const unsigned char *b, float *y) {
    float d = rdf16(b), dmin = rdf16(b + 2);
    const unsigned char *scales = b + 4, *qh = b + 16, *qs = b + 48;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k_scale_min(scales, j, &sc, &mn);
        float dl = d * (float)sc, ml = dmin * (float)mn;
        const unsigned char *q = qs + 32 * (j / 2);
        int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> j) & 1) << 4);
            y[j * 32 + l] = dl * (float)v - ml;
        }
    }
}

/* Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales,
 * f16 d. Element e lives in half h = e/128: low nibble k = (e%128)/64 of
 * ql[64h + e%64], high bits at shift 2*((e%128)/32) of qh[32h + e%32];
 * value = (d * scale[e/16]) * (q - 32). */
static void dq_q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = rdf16(b + 208);
    for (int e = 0; e < GGML_QK_K; e++) {
        int h = e / 128, r = e % 128;
        int lo = (ql[64 * h + e % 64] >> (4 * (r / 64))) & 0x0F;
        int hi = (qh[32 * h + e % 32] >> (2 * (r / 32))) & 3;
        float dl = d * (float)sc[e / 16];
        y[e] = dl * (float)((lo | (hi << 4)) - 32);
    }
}

#define QK GGML_QK_K
static const type_info types[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = {"F32", 1, 4, dq_f32},
    [GGML_TYPE_F16] = {"F16", 1, 2, dq_f16},
    [GGML_TYPE_Q4_0] = {"Q4_0", 32, 2 + 16, dq_q4_0},
    [GGML_TYPE_Q4_1] = {"Q4_1", 32, 2 + 2 + 16, dq_q4_1},
    [GGML_TYPE_Q5_0] = {"Q5_0", 32, 2 + 4 + 16, dq_q5_0},
    [GGML_TYPE_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16, dq_q5_1},
    [GGML_TYPE_Q8_0] = {"Q8_0", 32, 2 + 32, dq_q8_0},
    [GGML_TYPE_Q8_1] = {"Q8_1", 32, 4 + 4 + 32, NULL},
    [GGML_TYPE_Q2_K] = {"Q2_K", QK, 2 + 2 + QK / 16 + QK / 4, dq_q2_k},
    [GGML_TYPE_Q3_K] = {"Q3_K", QK, 2 + QK / 4 + QK / 8 + 12, dq_q3_k},
    [GGML_TYPE_Q4_K] = {"Q4_K", QK, 2 + 2 + QK / 2 + 12, dq_q4_k},
    [GGML_TYPE_Q5_K] = {"Q5_K", QK, 2 + 2 + QK / 2 + QK / 8 + 12, dq_q5_k},
    [GGML_TYPE_Q6_K] = {"Q6_K", QK, 2 + QK / 2 + QK / 4 + QK / 16, dq_q6_k},
    [GGML_TYPE_Q8_K] = {"Q8_K", QK, 4 + QK + QK / 8, NULL},
    [GGML_TYPE_IQ2_XXS] = {"IQ2_XXS", QK, 2 + QK / 4, NULL},
    [GGML_TYPE_IQ2_XS] = {"IQ2_XS", QK, 2 + QK / 4 + QK / 32, NULL},
    [GGML_TYPE_IQ3_XXS] = {"IQ3_XXS", QK, 2 + QK / 4 + QK / 8, NULL},
    [GGML_TYPE_IQ1_S] = {"IQ1_S", QK, 2 + QK / 8 + QK / 16, NULL},
    [GGML_TYPE_IQ4_NL] = {"IQ4_NL", 32, 2 + 16, NULL},
    [GGML_TYPE_IQ3_S] = {"IQ3_S", QK, 2 + QK / 4 + QK / 8 + QK / 32 + 4, NULL},
    [GGML_TYPE_IQ2_S] = {"IQ2_S", QK, 2 + QK / 4 + QK / 16, NULL},
    [GGML_TYPE_IQ4_XS] = {"IQ4_XS", QK, 2 + 2 + QK / 2 + QK / 64, NULL},
    [GGML_TYPE_I8] = {"I8", 1, 1, NULL},
    [GGML_TYPE_I16] = {"I16", 1, 2, NULL},
    [GGML_TYPE_I32] = {"I32", 1, 4, NULL},
    [GGML_TYPE_I64] = {"I64", 1, 8, NULL},
    [GGML_TYPE_F64] = {"F64", 1, 8, NULL},
    [GGML_TYPE_IQ1_M] = {"IQ1_M", QK, QK / 8 + QK / 16 + QK / 32, NULL},
    [GGML_TYPE_BF16] = {"BF16", 1, 2, dq_bf16},
    [GGML_TYPE_TQ1_0] = {"TQ1_0", QK, 2 + 4 * 13, NULL},
    [GGML_TYPE_TQ2_0] = {"TQ2_0", QK, 2 + 64, NULL},
    [GGML_TYPE_MXFP4] = {"MXFP4", 32, 1 + 16, NULL},
};
#undef QK

static const type_info *info(uint32_t t) {
    if (t >= GGML_TYPE_COUNT || !types[t].name) return NULL;
    return &types[t];
}

int ggml_type_known(uint32_t t) { return info(t) != NULL; }
const char *ggml_type_name(uint32_t t) { return info(t) ? info(t)->name : "unknown"; }
uint32_t ggml_blck_size(uint32_t t) { return info(t) ? info(t)->blck : 0; }
uint32_t ggml_type_size(uint32_t t) { return info(t) ? info(t)->size : 0; }
int ggml_can_dequantize(uint32_t t) { return info(t) && info(t)->dequant; }

uint64_t ggml_nbytes(uint32_t t, uint64_t n, int *bad) {
    const type_info *ti = info(t);
    uint64_t blocks = ti ? n / ti->blck : 0;
    if (!ti || n % ti->blck || blocks > UINT64_MAX / ti->size) {
        if (bad) *bad = 1;
        return 0;
    }
    return blocks * ti->size;
}

int ggml_dequantize(uint32_t t, const void *src, float *dst, size_t n, lq_error *err) {
    const type_info *ti = info(t);
    if (!ti) return lq_fail(err, "unknown ggml tensor type %u", t);
    if (!ti->dequant) return lq_fail(err, "tensor type %s is not supported (cannot dequantize it)", ti->name);
    if (n % ti->blck) return lq_fail(err, "%zu elements is not a whole number of %s blocks of %u", n, ti->name, ti->blck);
    if (t == GGML_TYPE_F32) {
        memcpy(dst, src, n * sizeof(float));
        return 0;
    }
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i += ti->blck, p += ti->size) ti->dequant(p, dst + i);
    return 0;
}
