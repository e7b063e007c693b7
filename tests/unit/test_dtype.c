/* test_dtype.c — scalar conversions: exact widening, round-to-nearest-even narrowing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "dtype.h"

/* Every f16 value survives f16 -> f32 -> f16 (NaNs stay NaN). */
static void test_f16_roundtrip_all(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lq_f16_to_f32((uint16_t)h);
        uint16_t back = lq_f32_to_f16(f);
        if (isnan(f)) assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
        else assert_int_equal(back, h);
    }
}

static void test_f16_known_values(void **state) {
    (void)state;
    assert_true(lq_f16_to_f32(0x3c00) == 1.0f);
    assert_true(lq_f16_to_f32(0xc000) == -2.0f);
    assert_true(lq_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(lq_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_int_equal(lq_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(lq_f32_to_f16(65520.0f), 0x7c00); /* ties to even -> overflow */
    assert_int_equal(lq_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* half of min subnormal: ties to even (0) */
    assert_int_equal(lq_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(lq_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 ulp -> even 2 */
    /* 1 + 2^-11 is halfway between 1 and the next f16: ties to even (1.0). */
    assert_int_equal(lq_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    assert_int_equal(lq_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
    assert_int_equal(lq_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(lq_f32_to_f16(INFINITY), 0x7c00);
}

static void test_bf16(void **state) {
    (void)state;
    assert_true(lq_bf16_to_f32(0x3f80) == 1.0f);
    assert_int_equal(lq_f32_to_bf16(1.0f), 0x3f80);
    /* Halfway cases round to even. */
    assert_int_equal(lq_f32_to_bf16(lq_bits_f32(0x3f808000)), 0x3f80);
    assert_int_equal(lq_f32_to_bf16(lq_bits_f32(0x3f818000)), 0x3f82);
    assert_int_equal(lq_f32_to_bf16(lq_bits_f32(0x3f808001)), 0x3f81);
    assert_true(isnan(lq_bf16_to_f32(lq_f32_to_bf16(NAN))));
    for (uint32_t b = 0; b < 65536; b++) {
        float f = lq_bf16_to_f32((uint16_t)b);
        if (!isnan(f)) assert_int_equal(lq_f32_to_bf16(f), b);
        assert_int_equal(lq_f32_bits(f) & 0xffff, 0);
    }
}

static void test_convert_array(void **state) {
    (void)state;
    float src[4] = {1.0f, -2.5f, 0.0f, 1024.0f}, back[4];
    uint16_t h[4];
    lq_convert(h, LQ_DTYPE_F16, src, LQ_DTYPE_F32, 4);
    lq_convert(back, LQ_DTYPE_F32, h, LQ_DTYPE_F16, 4);
    assert_memory_equal(src, back, sizeof src);
    lq_convert(h, LQ_DTYPE_BF16, src, LQ_DTYPE_F32, 4);
    lq_convert(back, LQ_DTYPE_F32, h, LQ_DTYPE_BF16, 4);
    assert_memory_equal(src, back, sizeof src);
    lq_dtype t;
    assert_int_equal(lq_dtype_parse("BF16", &t), 0);
    assert_int_equal(t, LQ_DTYPE_BF16);
    assert_int_equal(lq_dtype_parse("I64", &t), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_roundtrip_all),
        cmocka_unit_test(test_f16_known_values),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_convert_array),
    };
    return cmocka_run_group_tests_name("dtype", tests, NULL, NULL);
}
