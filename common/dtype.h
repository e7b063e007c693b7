/* dtype.h — element types of tensors in files and in memory, and the scalar
 * conversions between them.
 *
 * bf16 and f16 are stored as raw uint16_t bit patterns; conversion to f32 is
 * exact, conversion from f32 rounds to nearest even (as PyTorch does), so a
 * converted checkpoint matches what transformers would save. */
#ifndef LORQ_DTYPE_H
#define LORQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum lq_dtype {
    LQ_DTYPE_F32 = 0,
    LQ_DTYPE_F16,
    LQ_DTYPE_BF16,
    LQ_DTYPE_COUNT
} lq_dtype;

size_t lq_dtype_size(lq_dtype t);
/* The safetensors name: "F32", "F16", "BF16". */
const char *lq_dtype_name(lq_dtype t);
/* Parses a safetensors dtype name; -1 if it is not one lorq loads. */
int lq_dtype_parse(const char *name, lq_dtype *out);

/* A float's bit pattern and back (memcpy: the defined way to type-pun in C). */
static inline uint32_t lq_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float lq_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float lq_f16_to_f32(uint16_t h);
uint16_t lq_f32_to_f16(float f);
float lq_bf16_to_f32(uint16_t b);
uint16_t lq_f32_to_bf16(float f);

/* Converts n elements between any two dtypes (src and dst must not overlap). */
void lq_convert(void *dst, lq_dtype dst_t, const void *src, lq_dtype src_t, size_t n);

#endif
