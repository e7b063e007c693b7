/* test_select.c — backend selection (kernels/select.c) in a build without CUDA, as the
 * sanitized unit tests are: cpu and auto give the CPU backend, an explicit cuda is a
 * clear error and never a crash, LORQ_DEVICE is read when no name is given, and an
 * unknown name is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend.h"

static void expect_cpu(const char *name) {
    lq_error err;
    lq_backend *b = lq_backend_open(name, 1, &err);
    assert_non_null(b);
    assert_string_equal(b->name, "cpu");
    b->destroy(b);
}

static void expect_error(const char *name, const char *message) {
    lq_error err = {""};
    assert_null(lq_backend_open(name, 1, &err));
    if (!strstr(err.msg, message)) fail_msg("'%s' gave '%s', expected it to say '%s'", name, err.msg, message);
}

static void test_names(void **state) {
    (void)state;
    unsetenv("LORQ_DEVICE");
    expect_cpu("cpu");
    expect_cpu("auto");
    expect_cpu(NULL);
    expect_cpu("");
    expect_error("cuda", "--device cuda:");
    expect_error("gpu", "device 'gpu' is not one lorq knows (cpu, cuda, auto)");
}

static void test_environment(void **state) {
    (void)state;
    setenv("LORQ_DEVICE", "cuda", 1);
    expect_error(NULL, "--device cuda:");
    expect_cpu("cpu"); /* a name given wins over the environment */
    setenv("LORQ_DEVICE", "cpu", 1);
    expect_cpu(NULL);
    unsetenv("LORQ_DEVICE");
}

static void test_device_count(void **state) {
    (void)state;
    char why[128] = "";
    assert_int_equal(lq_cuda_device_count(why, sizeof why), 0);
    assert_true(strlen(why) > 0);
    assert_int_equal(lq_cuda_device_count(NULL, 0), 0);
    lq_error err = {""};
    assert_null(lq_backend_cuda_new(0, &err));
    assert_non_null(strstr(err.msg, "without CUDA"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_device_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
