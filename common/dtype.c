/* dtype.c — element sizes, names and scalar conversions (see dtype.h).
 *
 * The f16 conversion is written out bit by bit rather than relying on _Float16
 * so the same code builds with every compiler CI might use, and so rounding is
 * explicitly round-to-nearest-even, subnormals included. */
#include "dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[LQ_DTYPE_COUNT] = {
    [LQ_DTYPE_F32] = {"F32", 4},
    [LQ_DTYPE_F16] = {"F16", 2},
    [LQ_DTYPE_BF16] = {"BF16", 2},
};

size_t lq_dtype_size(lq_dtype t) { return (unsigned)t < LQ_DTYPE_COUNT ? dtype_info[t].size : 0; }

const char *lq_dtype_name(lq_dtype t) { return (unsigned)t < LQ_DTYPE_COUNT ? dtype_info[t].name : "?"; }

int lq_dtype_parse(const char *name, lq_dtype *out) {
    for (int t = 0; t < LQ_DTYPE_COUNT; t++)
        if (!strcmp(name, dtype_info[t].name)) {
            *out = (lq_dtype)t;
            return 0;
        }
    return -1;
}

float lq_bf16_to_f32(uint16_t b) { return lq_bits_f32((uint32_t)b << 16); }

uint16_t lq_f32_to_bf16(float f) {
    uint32_t u = lq_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float lq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return lq_bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
    if (exp != 0) return lq_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
    if (man == 0) return lq_bits_f32(sign);
    /* Subnormal: value = man * 2^-24, exact in f32. */
    float v = (float)man * (1.0f / 16777216.0f);
    return sign ? -v : v;
}

uint16_t lq_f32_to_f16(float f) {
    uint32_t u = lq_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;   /* NaN */
    if (abs >= 0x477ff000u) return sign | 0x7c00u;  /* rounds to >= 65520: inf */
    if (abs >= 0x38800000u) {                        /* normal f16 range */
        uint32_t r = abs - 0x38000000u;              /* rebias exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);
        return sign | (uint16_t)(r >> 13);
    }
    if (abs < 0x33000000u) return sign; /* below half the smallest subnormal */
    /* Subnormal f16: shift the full mantissa right, rounding to nearest even. */
    uint32_t exp = abs >> 23;
    uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - exp; /* 14..24 */
    uint32_t half = 1u << (shift - 1);
    uint32_t rest = man & ((1u << shift) - 1u);
    uint32_t q = man >> shift;
    if (rest > half || (rest == half && (q & 1u))) q++;
    return sign | (uint16_t)q;
}

static float load_f32(const void *src, lq_dtype t, size_t i) {
    const unsigned char *p = src;
    uint16_t h;
    float f;
    switch (t) {
    case LQ_DTYPE_F32: memcpy(&f, p + 4 * i, 4); return f;
    case LQ_DTYPE_F16: memcpy(&h, p + 2 * i, 2); return lq_f16_to_f32(h);
    case LQ_DTYPE_BF16: memcpy(&h, p + 2 * i, 2); return lq_bf16_to_f32(h);
    default: return 0.0f;
    }
}

static void store_f32(void *dst, lq_dtype t, size_t i, float f) {
    unsigned char *p = dst;
    uint16_t h;
    switch (t) {
    case LQ_DTYPE_F32: memcpy(p + 4 * i, &f, 4); break;
    case LQ_DTYPE_F16: h = lq_f32_to_f16(f); memcpy(p + 2 * i, &h, 2); break;
    case LQ_DTYPE_BF16: h = lq_f32_to_bf16(f); memcpy(p + 2 * i, &h, 2); break;
    default: break;
    }
}

void lq_convert(void *dst, lq_dtype dst_t, const void *src, lq_dtype src_t, size_t n) {
    if (dst_t == src_t) {
        memcpy(dst, src, n * lq_dtype_size(src_t));
        return;
    }
    for (size_t i = 0; i < n; i++) store_f32(dst, dst_t, i, load_f32(src, src_t, i));
}
