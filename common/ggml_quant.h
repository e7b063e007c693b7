/* ggml_quant.h — ggml tensor types as they appear in GGUF files: names, block
 * geometry, and dequantization to f32.
 *
 * Every ggml type stores a row as a run of fixed-size blocks: blck elements
 * packed into type_size bytes (plain F32 is a "block" of 1 element in 4 bytes;
 * Q4_K is 256 elements in 144 bytes). The GGUF reader only needs the geometry
 * to validate tensor extents, so every type ggml defines is "known" here; only
 * a subset can be dequantized (ggml_can_dequantize). Asking to dequantize any
 * other type is an error naming it, never a guess.
 *
 * Dequantization reproduces the reference arithmetic exactly (the same f32
 * products and sums in the same order as ggml and the gguf Python package), so
 * a converted checkpoint is bit-identical to what those tools produce. */
#ifndef LORQ_GGML_QUANT_H
#define LORQ_GGML_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Values are ggml's on-disk type ids. Gaps are ids ggml has retired. */
typedef enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_COUNT = 40
} ggml_type;

/* Super-block size of the K-quants. */
#define GGML_QK_K 256

/* 1 if t is a type id ggml defines (so its geometry is known), else 0. */
int ggml_type_known(uint32_t t);
/* "Q4_K", "F32", ...; "type 42" style text is the caller's job for unknown ids. */
const char *ggml_type_name(uint32_t t);
/* Elements per block and bytes per block; 0 for unknown types. */
uint32_t ggml_blck_size(uint32_t t);
uint32_t ggml_type_size(uint32_t t);
/* 1 if ggml_dequantize handles t. */
int ggml_can_dequantize(uint32_t t);

/* Bytes taken by n elements of type t. Returns 0 and sets *bad (if given) to
 * 1 when t is unknown, n is not a multiple of the block size, or the byte
 * count would overflow 64 bits. */
uint64_t ggml_nbytes(uint32_t t, uint64_t n, int *bad);

/* Dequantizes n elements (a multiple of the block size) from src, which must
 * hold ggml_nbytes(t, n) bytes, into dst. Unsupported types fail with a
 * message naming the type. */
int ggml_dequantize(uint32_t t, const void *src, float *dst, size_t n, lq_error *err);

#endif
