/* test_gateway_config.c — the gateway's settings: environment and flags
 * (the flag wins), TGI's aliases, strict numbers, LORA_ADAPTERS names, the
 * token-limit defaults from the model, and the small string map the
 * gateway's lookups run on. Runs under ASan/UBSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "strmap.h"

static const char *const ENV[] = {"PORT", "HOSTNAME", "MODEL_ID", "LORA_ADAPTERS", "MAX_INPUT_TOKENS",
                                  "MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS", "MAX_STOP_SEQUENCES", "MAX_TOP_N_TOKENS",
                                  "MAX_CONCURRENT_REQUESTS", "MAX_QUEUE_LENGTH", "PAYLOAD_LIMIT", "REDIS_URL",
                                  "LORQ_PREFIX", "RESULT_TTL", "REQUEST_TIMEOUT"};

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof ENV / sizeof *ENV; i++) unsetenv(ENV[i]);
    return 0;
}

static int parse(lq_gw_config *c, lq_error *err, int argc, char **argv) { return lq_gw_config_parse(c, argc, argv, err); }

static void test_defaults(void **state) {
    (void)state;
    lq_gw_config c;
    lq_error err = {{0}};
    char *argv[] = {"lorq-gateway"};
    assert_int_equal(parse(&c, &err, 1, argv), 0);
    assert_int_equal(c.port, 3000);
    assert_string_equal(c.hostname, "0.0.0.0");
    assert_int_equal(c.max_stop_sequences, 4);
    assert_int_equal(c.max_top_n_tokens, 5);
    assert_int_equal(c.max_concurrent_requests, 128);
    assert_true(c.payload_limit == 2000000);
    assert_string_equal(c.prefix, "lorq:");
    assert_true(c.result_ttl_ms == 3600 * 1000LL);
    assert_int_equal(c.n_adapters, 0);
    /* Token limits wait for the model: min(max_position_embeddings, 4096), input one less. */
    assert_int_equal(lq_gw_config_finish(&c, 8192, &err), 0);
    assert_int_equal(c.max_total_tokens, 4096);
    assert_int_equal(c.max_input_tokens, 4095);
    lq_gw_config_free(&c);
}

static void test_env_and_flags(void **state) {
    (void)state;
    lq_gw_config c;
    lq_error err = {{0}};
    setenv("PORT", "8080", 1);
    setenv("MAX_INPUT_LENGTH", "100", 1); /* TGI's older name */
    setenv("MAX_TOTAL_TOKENS", "300", 1);
    setenv("LORA_ADAPTERS", "a=/x/a, org/b@v2 ,c=d=e,", 1);
    setenv("RESULT_TTL", "60", 1);
    setenv("LORQ_PREFIX", "t{s0}:", 1);
    char *argv[] = {"lorq-gateway", "--port", "9000", "--max-stop-sequences=8", "--hostname", "127.0.0.1",
                    "--redis-url", "redis://:pw@localhost:7000/2"};
    assert_int_equal(parse(&c, &err, 8, argv), 0);
    assert_int_equal(c.port, 9000); /* the flag wins */
    assert_int_equal(c.max_input_tokens, 100);
    assert_int_equal(c.max_stop_sequences, 8);
    assert_string_equal(c.hostname, "127.0.0.1");
    assert_true(c.result_ttl_ms == 60000);
    assert_string_equal(c.prefix, "t{s0}:");
    assert_int_equal(c.n_adapters, 3);
    assert_string_equal(c.adapters[0], "a");
    assert_string_equal(c.adapters[1], "org/b");
    assert_string_equal(c.adapters[2], "c");
    assert_int_equal(lq_gw_config_finish(&c, 2048, &err), 0);
    assert_int_equal(c.max_total_tokens, 300);
    lq_gw_config_free(&c);
}

static void expect_error(const char *env, const char *value, const char *flag, const char *want) {
    lq_gw_config c;
    lq_error err = {{0}};
    if (env) setenv(env, value, 1);
    char *argv[] = {"lorq-gateway", (char *)flag, (char *)value};
    int rc = parse(&c, &err, env ? 1 : 3, argv);
    if (env) unsetenv(env);
    if (rc == 0 || !strstr(err.msg, want)) {
        print_error("%s=%s: rc %d, '%s' (wanted '%s')\n", env ? env : flag, value, rc, err.msg, want);
        if (rc == 0) lq_gw_config_free(&c);
        fail();
    }
}

static void test_bad_values(void **state) {
    (void)state;
    expect_error("PORT", "80x", NULL, "PORT: '80x' is not an integer between 0 and 65535");
    expect_error("PORT", "70000", NULL, "between 0 and 65535");
    expect_error(NULL, "-1", "--max-total-tokens", "--max-total-tokens: '-1' is not an integer");
    expect_error(NULL, "1e3", "--max-concurrent-requests", "not an integer");
    expect_error(NULL, "17", "--max-stop-sequences", "between 0 and 16");
    expect_error(NULL, "3", "--no-such-flag", "unknown flag '--no-such-flag'");
    expect_error("LORA_ADAPTERS", "a=x,a=y", NULL, "adapter 'a' is listed twice");
    expect_error("LORA_ADAPTERS", "../evil=x", NULL, "'../evil' is not a valid adapter id");
    expect_error("LORA_ADAPTERS", "a=", NULL, "has no path after '='");
    expect_error("REDIS_URL", "http://nope", NULL, "REDIS_URL");
    expect_error("LORQ_PREFIX", "has space", NULL, "LORQ_PREFIX");
    lq_gw_config c;
    lq_error err = {{0}};
    char *argv[] = {"lorq-gateway", "--port"};
    assert_int_equal(parse(&c, &err, 2, argv), -1);
    assert_non_null(strstr(err.msg, "needs a value"));
    char *argv2[] = {"lorq-gateway", "stray"};
    assert_int_equal(parse(&c, &err, 2, argv2), -1);
    assert_non_null(strstr(err.msg, "unexpected argument 'stray'"));
}

static void test_limits_checked_against_model(void **state) {
    (void)state;
    lq_gw_config c;
    lq_error err = {{0}};
    char *argv[] = {"lorq-gateway", "--max-input-tokens", "500", "--max-total-tokens", "500"};
    assert_int_equal(parse(&c, &err, 5, argv), 0);
    assert_int_equal(lq_gw_config_finish(&c, 8192, &err), -1);
    assert_non_null(strstr(err.msg, "MAX_INPUT_TOKENS (500) must be < MAX_TOTAL_TOKENS (500)"));
    lq_gw_config_free(&c);
    char *argv2[] = {"lorq-gateway", "--max-total-tokens", "9000"};
    assert_int_equal(parse(&c, &err, 3, argv2), 0);
    assert_int_equal(lq_gw_config_finish(&c, 8192, &err), -1);
    assert_non_null(strstr(err.msg, "max_position_embeddings (8192)"));
    lq_gw_config_free(&c);
    /* Only an input limit: the total follows it. */
    char *argv3[] = {"lorq-gateway", "--max-input-tokens", "6000"};
    assert_int_equal(parse(&c, &err, 3, argv3), 0);
    assert_int_equal(lq_gw_config_finish(&c, 8192, &err), 0);
    assert_int_equal(c.max_total_tokens, 6001);
    lq_gw_config_free(&c);
    /* No max_position_embeddings: 4096. */
    char *argv4[] = {"lorq-gateway"};
    assert_int_equal(parse(&c, &err, 1, argv4), 0);
    assert_int_equal(lq_gw_config_finish(&c, 0, &err), 0);
    assert_int_equal(c.max_total_tokens, 4096);
    lq_gw_config_free(&c);
}

static void test_strmap(void **state) {
    (void)state;
    lq_strmap *m = lq_strmap_new();
    assert_non_null(m);
    static int vals[5000];
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(lq_strmap_put(m, key, &vals[i]), 0);
    }
    assert_int_equal(lq_strmap_count(m), 5000);
    for (int i = 0; i < 5000; i += 7) {
        snprintf(key, sizeof key, "k%d", i);
        assert_ptr_equal(lq_strmap_get(m, key), &vals[i]);
    }
    assert_ptr_equal(lq_strmap_del(m, "k42"), &vals[42]);
    assert_null(lq_strmap_get(m, "k42"));
    assert_null(lq_strmap_del(m, "k42"));
    assert_int_equal(lq_strmap_count(m), 4999);
    assert_int_equal(lq_strmap_put(m, "k1", &vals[2]), 0); /* replace */
    assert_ptr_equal(lq_strmap_get(m, "k1"), &vals[2]);
    assert_int_equal(lq_strmap_count(m), 4999);
    lq_strmap_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_env_and_flags, clear_env),
        cmocka_unit_test_setup(test_bad_values, clear_env),
        cmocka_unit_test_setup(test_limits_checked_against_model, clear_env),
        cmocka_unit_test(test_strmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
