/* test_adapter_ids.c — which adapter ids LORQ_ALLOW_ADAPTERS lets through
 * (common/hub.c: lq_adapter_id_safe, lq_adapter_allowed). The gateway and the
 * workers both decide with these, and a worker turns an allowed id into a
 * path below LORQ_ADAPTERS_DIR, so nothing that climbs out may pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "hub.h"

static void test_safe_ids(void **state) {
    (void)state;
    const char *good[] = {"acme/x", "a", "team-1/my_adapter.v2", "a.b/c..d", "x/y/z"};
    const char *bad[] = {"", "/etc/passwd", "acme/../x", "..", ".", "acme/./x", "acme//x", "acme/x/", "/acme",
                         "acme/x y", "acme\\x", "acme/x@main", "a/..", "../a", "acme/\xc3\xa9"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) assert_true(lq_adapter_id_safe(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) assert_false(lq_adapter_id_safe(bad[i]));
    char long_id[200];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    assert_false(lq_adapter_id_safe(long_id));
}

static void test_patterns(void **state) {
    (void)state;
    assert_false(lq_adapter_allowed(NULL, "acme/x"));
    assert_false(lq_adapter_allowed("", "acme/x"));
    assert_true(lq_adapter_allowed("acme/*", "acme/x"));
    assert_false(lq_adapter_allowed("acme/*", "acme/x/y")); /* '*' does not cross '/' */
    assert_false(lq_adapter_allowed("acme/*", "other/x"));
    assert_false(lq_adapter_allowed("*", "acme/x"));
    assert_true(lq_adapter_allowed("*", "plain"));
    assert_true(lq_adapter_allowed("*/*", "any/thing"));
    assert_true(lq_adapter_allowed(" other/* , acme/* ", "acme/x")); /* a list, spaces trimmed */
    assert_true(lq_adapter_allowed("team-?/x", "team-7/x"));
    assert_false(lq_adapter_allowed("acme/*", "acme/../x")); /* matched, but not safe */
    assert_false(lq_adapter_allowed("*/*", "acme//x"));
    assert_false(lq_adapter_allowed("acme/*,", "acme/"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safe_ids),
        cmocka_unit_test(test_patterns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
