/* test_host_tier.c — the host-memory tier of parsed adapters (worker/host_tier.c).
 *
 * The tier's bookkeeping, without a model: copies are fake parsed adapters of
 * a chosen size. LRU eviction by bytes and by count, use refreshing recency,
 * referenced copies never freed under their reader (replaced, dropped or
 * evicted meanwhile: ASan would report the use after free), a copy larger
 * than the whole budget not flushing the others, and nothing leaked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "host_tier.h"

static lq_lora_host *fake(const char *name, size_t bytes) {
    lq_lora_host *h = calloc(1, sizeof *h);
    assert_non_null(h);
    h->lora.name = strdup(name);
    h->lora.bytes = bytes;
    h->lora.weights = malloc(bytes ? bytes : 1); /* freed by the tier: a leak or double free shows */
    assert_non_null(h->lora.name);
    assert_non_null(h->lora.weights);
    return h;
}

/* Puts a copy and ends the caller's reference at once, as a load that uploaded it does. */
static void put_released(lq_host_tier *t, const char *name, size_t bytes) {
    lq_lora_host *h = lq_host_tier_put(t, fake(name, bytes));
    assert_non_null(h);
    lq_host_tier_release(t, h);
}

static int here(lq_host_tier *t, const char *name) {
    lq_lora_host *h = lq_host_tier_get(t, name);
    if (h) lq_host_tier_release(t, h);
    return h != NULL;
}

static void expect_list(lq_host_tier *t, const char *want) {
    char got[256];
    lq_host_tier_list(t, got, sizeof got);
    assert_string_equal(got, want);
}

static void test_count_budget_evicts_least_recently_used(void **state) {
    (void)state;
    lq_host_tier *t = lq_host_tier_new(1000, 3);
    put_released(t, "a", 10);
    put_released(t, "b", 10);
    put_released(t, "c", 10);
    expect_list(t, "c,b,a");
    assert_true(here(t, "a")); /* a hit makes a the most recent: b is now the oldest */
    lq_host_tier_touch(t, "b"); /* ... and so does use of its device copy: c is */
    put_released(t, "d", 10);
    expect_list(t, "d,b,a");
    assert_false(here(t, "c"));
    lq_host_tier_stats st;
    lq_host_tier_stats_get(t, &st);
    assert_int_equal(st.count, 3);
    assert_int_equal(st.bytes, 30);
    assert_int_equal(st.evictions, 1);
    lq_host_tier_free(t);
}

static void test_byte_budget(void **state) {
    (void)state;
    lq_host_tier *t = lq_host_tier_new(100, 0);
    put_released(t, "x", 60);
    put_released(t, "y", 30);
    put_released(t, "z", 30); /* 120 > 100: x, the oldest, goes */
    expect_list(t, "z,y");
    lq_host_tier_stats st;
    lq_host_tier_stats_get(t, &st);
    assert_int_equal(st.bytes, 60);
    lq_host_tier_free(t);
}

static void test_referenced_copies_stay_until_released(void **state) {
    (void)state;
    lq_host_tier *t = lq_host_tier_new(100, 0);
    lq_lora_host *x = lq_host_tier_put(t, fake("x", 60));
    lq_lora_host *y = lq_host_tier_put(t, fake("y", 60)); /* over budget, but x is being uploaded */
    expect_list(t, "y,x");
    assert_string_equal(x->lora.name, "x");
    lq_host_tier_release(t, x); /* now x can go, and does: the budget holds again */
    expect_list(t, "y");
    lq_host_tier_release(t, y);
    expect_list(t, "y");
    lq_host_tier_free(t);
}

static void test_replaced_and_dropped_copies_outlive_their_readers(void **state) {
    (void)state;
    lq_host_tier *t = lq_host_tier_new(1000, 0);
    put_released(t, "a", 10);
    lq_lora_host *old = lq_host_tier_get(t, "a");
    put_released(t, "a", 20); /* a newer parse of the same id */
    lq_lora_host *now = lq_host_tier_get(t, "a");
    assert_ptr_not_equal(old, now);
    assert_int_equal(now->lora.bytes, 20);
    assert_string_equal(old->lora.name, "a"); /* still readable */
    lq_host_tier_stats st;
    lq_host_tier_stats_get(t, &st);
    assert_int_equal(st.count, 1);
    assert_int_equal(st.bytes, 20);
    lq_host_tier_release(t, old);
    assert_int_equal(lq_host_tier_drop(t, "a"), 0);
    assert_int_equal(lq_host_tier_drop(t, "a"), -1);
    assert_false(here(t, "a"));
    assert_int_equal(now->lora.bytes, 20); /* dropped, still referenced */
    lq_host_tier_release(t, now);
    expect_list(t, "");
    lq_host_tier_free(t);
}

static void test_too_large_for_the_budget_is_not_kept(void **state) {
    (void)state;
    lq_host_tier *t = lq_host_tier_new(100, 0);
    put_released(t, "a", 40);
    put_released(t, "b", 40);
    lq_lora_host *big = lq_host_tier_put(t, fake("big", 200));
    assert_non_null(big); /* the caller uploads from it all the same */
    expect_list(t, "b,a"); /* nothing flushed for it */
    lq_host_tier_release(t, big);
    assert_false(here(t, "big"));
    lq_host_tier_stats st;
    lq_host_tier_stats_get(t, &st);
    assert_int_equal(st.count, 2);
    assert_int_equal(st.evictions, 0);
    lq_host_tier_free(t);
}

static void test_list_cut_to_whole_names(void **state) {
    (void)state;
    lq_host_tier *t = lq_host_tier_new(1000, 0);
    put_released(t, "acme/one", 1);
    put_released(t, "acme/two", 1);
    char out[12];
    lq_host_tier_list(t, out, sizeof out);
    assert_string_equal(out, "acme/two");
    lq_host_tier_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_budget_evicts_least_recently_used),
        cmocka_unit_test(test_byte_budget),
        cmocka_unit_test(test_referenced_copies_stay_until_released),
        cmocka_unit_test(test_replaced_and_dropped_copies_outlive_their_readers),
        cmocka_unit_test(test_too_large_for_the_budget_is_not_kept),
        cmocka_unit_test(test_list_cut_to_whole_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
