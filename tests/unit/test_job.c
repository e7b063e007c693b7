/* test_job.c — the wire protocol's documents and names (docs/protocol.md):
 * msgpack jobs and events round-trip; every required field, when missing or
 * of the wrong type, gives an error naming it; documents written the way
 * Python's msgpack and Redis's Lua cmsgpack write them (the narrowest
 * integer, float32, fixstr) decode; REDIS_URL forms parse; key names follow
 * the prefix. */
#include <math.h>
#include <msgpack.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "job.h"
#include "redis.h"

/* ---- helpers: hand-written msgpack ---- */

typedef struct mp {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} mp;

static void mp_init(mp *m) {
    msgpack_sbuffer_init(&m->buf);
    msgpack_packer_init(&m->pk, &m->buf, msgpack_sbuffer_write);
}

static void mp_free(mp *m) { msgpack_sbuffer_destroy(&m->buf); }

static void mp_str(mp *m, const char *s) {
    msgpack_pack_str(&m->pk, strlen(s));
    msgpack_pack_str_body(&m->pk, s, strlen(s));
}

/* The fields of a minimal valid job, each one skippable or replaceable. */
enum { F_V, F_ID, F_ADAPTER, F_PROMPT, F_MAX_NEW, F_COUNT };
static const char *const field_names[F_COUNT] = {"v", "id", "adapter", "prompt", "max_new_tokens"};

/* Packs a job map; `skip` leaves one field out, `wrong` gives it a value of the wrong type (a bool). */
static void pack_job(mp *m, int skip, int wrong) {
    int n = F_COUNT - (skip >= 0 ? 1 : 0);
    msgpack_pack_map(&m->pk, (size_t)n);
    for (int f = 0; f < F_COUNT; f++) {
        if (f == skip) continue;
        mp_str(m, field_names[f]);
        if (f == wrong) {
            msgpack_pack_true(&m->pk);
            continue;
        }
        switch (f) {
        case F_V: msgpack_pack_fix_uint8(&m->pk, 1); break;
        case F_ID: mp_str(m, "job-1"); break;
        case F_ADAPTER: mp_str(m, "demo/sentiment"); break;
        case F_PROMPT:
            msgpack_pack_array(&m->pk, 3);
            msgpack_pack_fix_uint8(&m->pk, 1);
            msgpack_pack_fix_uint16(&m->pk, 300);
            msgpack_pack_fix_uint32(&m->pk, 49151);
            break;
        case F_MAX_NEW: msgpack_pack_fix_uint8(&m->pk, 16); break;
        }
    }
}

static int decode_job(const mp *m, lq_job *j, lq_error *err) { return lq_job_decode(m->buf.data, m->buf.size, j, err); }

/* ---- jobs ---- */

static lq_job sample_job(void) {
    static int32_t prompt[] = {1, 2, 3, 49151};
    static char *stops[] = {"\n\n", "END"};
    lq_job j;
    memset(&j, 0, sizeof j);
    j.id = "18c2f1a0b7e-0123456789abcdef";
    j.tenant = "team-a";
    j.adapter = "demo/sentiment";
    j.prompt = prompt;
    j.n_prompt = 4;
    j.max_new_tokens = 77;
    j.params = lq_job_params_default();
    j.params.do_sample = 1;
    j.params.temperature = 0.7;
    j.params.top_k = 40;
    j.params.top_p = 0.9;
    j.params.typical_p = 0.95;
    j.params.repetition_penalty = 1.1;
    j.params.frequency_penalty = -0.5;
    j.params.presence_penalty = 0.25;
    j.params.has_seed = 1;
    j.params.seed = UINT64_MAX;
    j.params.stop[0] = stops[0];
    j.params.stop[1] = stops[1];
    j.params.n_stop = 2;
    j.params.top_n_tokens = 5;
    j.params.decoder_input_details = 1;
    j.params.ignore_eos = 1;
    j.deadline_ms = 1790000000123;
    j.created_ms = 1790000000000;
    j.attempt = 2;
    return j;
}

static void test_job_round_trip(void **state) {
    (void)state;
    lq_job in = sample_job(), out;
    lq_buf buf = {0};
    lq_error err;
    assert_int_equal(lq_job_encode(&in, &buf, &err), 0);
    assert_int_equal(lq_job_decode(buf.data, buf.len, &out, &err), 0);
    assert_string_equal(out.id, in.id);
    assert_string_equal(out.tenant, in.tenant);
    assert_string_equal(out.adapter, in.adapter);
    assert_int_equal(out.n_prompt, 4);
    assert_memory_equal(out.prompt, in.prompt, sizeof(int32_t) * 4);
    assert_int_equal(out.max_new_tokens, 77);
    assert_true(out.params.do_sample);
    assert_true(out.params.temperature == 0.7 && out.params.top_p == 0.9 && out.params.typical_p == 0.95);
    assert_true(out.params.repetition_penalty == 1.1 && out.params.frequency_penalty == -0.5);
    assert_true(out.params.presence_penalty == 0.25);
    assert_int_equal(out.params.top_k, 40);
    assert_true(out.params.has_seed && out.params.seed == UINT64_MAX);
    assert_int_equal(out.params.n_stop, 2);
    assert_string_equal(out.params.stop[0], "\n\n");
    assert_string_equal(out.params.stop[1], "END");
    assert_int_equal(out.params.top_n_tokens, 5);
    assert_true(out.params.decoder_input_details && out.params.ignore_eos);
    assert_true(out.deadline_ms == in.deadline_ms && out.created_ms == in.created_ms);
    assert_int_equal(out.attempt, 2);
    lq_job_clear(&out);
    lq_buf_free(&buf);
}

static void test_job_base_model_and_defaults(void **state) {
    (void)state;
    int32_t prompt[] = {5};
    lq_job in;
    memset(&in, 0, sizeof in);
    in.id = "a";
    in.adapter = "";
    in.prompt = prompt;
    in.n_prompt = 1;
    in.max_new_tokens = 1;
    in.params = lq_job_params_default();
    lq_buf buf = {0};
    lq_error err;
    lq_job out;
    assert_int_equal(lq_job_encode(&in, &buf, &err), 0);
    assert_int_equal(lq_job_decode(buf.data, buf.len, &out, &err), 0);
    assert_string_equal(out.adapter, "");
    assert_string_equal(out.tenant, ""); /* absent tenant reads as "" */
    assert_false(out.params.do_sample);
    assert_false(out.params.has_seed);
    assert_true(out.params.temperature == 1.0 && out.params.top_p == 1.0);
    assert_int_equal(out.deadline_ms, 0);
    lq_job_clear(&out);
    lq_buf_free(&buf);
}

static void test_job_encode_refuses_bad_jobs(void **state) {
    (void)state;
    lq_job j = sample_job();
    lq_buf buf = {0};
    lq_error err;
    j.id = "has space";
    assert_int_equal(lq_job_encode(&j, &buf, &err), -1);
    assert_non_null(strstr(err.msg, "job id"));
    j = sample_job();
    j.adapter = "/abs";
    assert_int_equal(lq_job_encode(&j, &buf, &err), -1);
    assert_non_null(strstr(err.msg, "adapter"));
    j = sample_job();
    j.params.temperature = 0;
    assert_int_equal(lq_job_encode(&j, &buf, &err), -1);
    assert_non_null(strstr(err.msg, "temperature"));
    lq_buf_free(&buf);
}

/* Every required field, left out: the error names it. */
static void test_job_missing_fields(void **state) {
    (void)state;
    for (int f = 0; f < F_COUNT; f++) {
        mp m;
        mp_init(&m);
        pack_job(&m, f, -1);
        lq_job j;
        lq_error err;
        assert_int_equal(decode_job(&m, &j, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "'%s'", field_names[f]);
        if (!strstr(err.msg, want)) fail_msg("missing %s: got '%s'", field_names[f], err.msg);
        assert_null(j.id); /* cleared on error */
        mp_free(&m);
    }
}

/* Every required field with a value of the wrong type: the error names it. */
static void test_job_wrong_types(void **state) {
    (void)state;
    for (int f = 0; f < F_COUNT; f++) {
        mp m;
        mp_init(&m);
        pack_job(&m, -1, f);
        lq_job j;
        lq_error err;
        assert_int_equal(decode_job(&m, &j, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "'%s'", field_names[f]);
        if (!strstr(err.msg, want)) fail_msg("wrong type %s: got '%s'", field_names[f], err.msg);
        mp_free(&m);
    }
}

/* A job with one extra field (key, then a value packed by fn). */
static int decode_with(void (*fn)(mp *), const char *key, lq_job *j, lq_error *err) {
    mp m;
    mp_init(&m);
    /* a valid job with one more key: rebuild the map header by hand */
    msgpack_pack_map(&m.pk, F_COUNT + 1);
    mp_str(&m, "v"), msgpack_pack_fix_uint8(&m.pk, 1);
    mp_str(&m, "id"), mp_str(&m, "job-2");
    mp_str(&m, "adapter"), mp_str(&m, "");
    mp_str(&m, "prompt"), msgpack_pack_array(&m.pk, 1), msgpack_pack_fix_uint8(&m.pk, 7);
    mp_str(&m, "max_new_tokens"), msgpack_pack_fix_uint8(&m.pk, 3);
    mp_str(&m, key);
    fn(&m);
    int rc = decode_job(&m, j, err);
    mp_free(&m);
    return rc;
}

static void pack_params_float32(mp *m) {
    msgpack_pack_map(&m->pk, 4);
    mp_str(m, "temperature"), msgpack_pack_float(&m->pk, 0.5f);
    mp_str(m, "top_k"), msgpack_pack_fix_uint8(&m->pk, 7);
    mp_str(m, "repetition_penalty"), msgpack_pack_fix_uint8(&m->pk, 2); /* an integer where a float goes */
    mp_str(m, "seed"), msgpack_pack_fix_uint8(&m->pk, 42);
}
static void pack_params_string_temperature(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "temperature"), mp_str(m, "hot");
}
static void pack_params_negative_top_k(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "top_k"), msgpack_pack_int8(&m->pk, -1);
}
static void pack_params_too_many_stops(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "stop");
    msgpack_pack_array(&m->pk, 17);
    for (int i = 0; i < 17; i++) mp_str(m, "x");
}
static void pack_params_stop_not_strings(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "stop"), msgpack_pack_array(&m->pk, 1), msgpack_pack_fix_uint8(&m->pk, 1);
}
static void pack_params_top_p_out_of_range(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "top_p"), msgpack_pack_double(&m->pk, 1.5);
}
static void pack_params_nan(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "temperature"), msgpack_pack_double(&m->pk, NAN);
}
static void pack_params_not_map(mp *m) { msgpack_pack_array(&m->pk, 0); }
static void pack_params_unknown_keys(mp *m) {
    msgpack_pack_map(&m->pk, 2);
    mp_str(m, "watermark"), msgpack_pack_true(&m->pk);
    mp_str(m, "do_sample"), msgpack_pack_false(&m->pk);
}
static void pack_seed_negative(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "seed"), msgpack_pack_int8(&m->pk, -3);
}
static void pack_bool_as_int(mp *m) {
    msgpack_pack_map(&m->pk, 1);
    mp_str(m, "do_sample"), msgpack_pack_fix_uint8(&m->pk, 1);
}
static void pack_big_deadline(mp *m) { msgpack_pack_uint64(&m->pk, 1790000000000ull); }
static void pack_negative_deadline(mp *m) { msgpack_pack_int64(&m->pk, -5); }
static void pack_huge_deadline(mp *m) { msgpack_pack_uint64(&m->pk, UINT64_MAX); }
static void pack_attempt_string(mp *m) { mp_str(m, "1"); }

/* Python's msgpack packs floats as float64 and ints in the narrowest form; Lua's cmsgpack may use float32. */
static void test_job_narrow_encodings(void **state) {
    (void)state;
    lq_job j;
    lq_error err;
    assert_int_equal(decode_with(pack_params_float32, "params", &j, &err), 0);
    assert_true(j.params.temperature == 0.5);
    assert_int_equal(j.params.top_k, 7);
    assert_true(j.params.repetition_penalty == 2.0);
    assert_true(j.params.has_seed && j.params.seed == 42);
    assert_int_equal(j.prompt[0], 7);
    lq_job_clear(&j);
    assert_int_equal(decode_with(pack_big_deadline, "deadline_ms", &j, &err), 0);
    assert_true(j.deadline_ms == 1790000000000ll);
    lq_job_clear(&j);
    assert_int_equal(decode_with(pack_params_unknown_keys, "params", &j, &err), 0);
    lq_job_clear(&j);
}

static void expect_param_error(void (*fn)(mp *), const char *key, const char *needle) {
    lq_job j;
    lq_error err;
    assert_int_equal(decode_with(fn, key, &j, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("expected '%s' in '%s'", needle, err.msg);
}

static void test_job_bad_params(void **state) {
    (void)state;
    expect_param_error(pack_params_string_temperature, "params", "params.temperature");
    expect_param_error(pack_params_negative_top_k, "params", "params.top_k");
    expect_param_error(pack_params_too_many_stops, "params", "params.stop");
    expect_param_error(pack_params_stop_not_strings, "params", "params.stop");
    expect_param_error(pack_params_top_p_out_of_range, "params", "top_p");
    expect_param_error(pack_params_nan, "params", "temperature");
    expect_param_error(pack_params_not_map, "params", "'params'");
    expect_param_error(pack_seed_negative, "params", "params.seed");
    expect_param_error(pack_bool_as_int, "params", "params.do_sample");
    expect_param_error(pack_negative_deadline, "deadline_ms", "deadline_ms");
    expect_param_error(pack_huge_deadline, "deadline_ms", "deadline_ms");
    expect_param_error(pack_attempt_string, "attempt", "attempt");
}

static void test_job_bad_documents(void **state) {
    (void)state;
    lq_job j;
    lq_error err;
    static const unsigned char garbage[] = {0xc1, 0x00, 0x01};
    assert_int_equal(lq_job_decode(garbage, sizeof garbage, &j, &err), -1);
    assert_non_null(strstr(err.msg, "msgpack"));
    assert_int_equal(lq_job_decode("", 0, &j, &err), -1);
    static const unsigned char array[] = {0x91, 0x01};
    assert_int_equal(lq_job_decode(array, sizeof array, &j, &err), -1);
    assert_non_null(strstr(err.msg, "map"));
    static const unsigned char truncated[] = {0x85, 0xa1, 'v'};
    assert_int_equal(lq_job_decode(truncated, sizeof truncated, &j, &err), -1);

    /* a few bytes declaring 2^32-1 map entries (msgpack-c would allocate for them all) */
    static const unsigned char huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v', 0x01};
    assert_int_equal(lq_job_decode(huge_map, sizeof huge_map, &j, &err), -1);
    assert_non_null(strstr(err.msg, "not valid msgpack"));
    static const unsigned char huge_str[] = {0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'v'};
    assert_int_equal(lq_job_decode(huge_str, sizeof huge_str, &j, &err), -1);

    mp m;
    mp_init(&m);
    pack_job(&m, -1, -1);
    assert_int_equal(decode_job(&m, &j, &err), 0);
    lq_job_clear(&j);
    msgpack_pack_nil(&m.pk); /* trailing bytes */
    assert_int_equal(decode_job(&m, &j, &err), -1);
    assert_non_null(strstr(err.msg, "trailing"));
    mp_free(&m);
}

static void test_job_bad_values(void **state) {
    (void)state;
    lq_job out;
    lq_error err;
    /* version 2 */
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 5);
    mp_str(&m, "v"), msgpack_pack_fix_uint8(&m.pk, 2);
    mp_str(&m, "id"), mp_str(&m, "x");
    mp_str(&m, "adapter"), mp_str(&m, "");
    mp_str(&m, "prompt"), msgpack_pack_array(&m.pk, 1), msgpack_pack_fix_uint8(&m.pk, 1);
    mp_str(&m, "max_new_tokens"), msgpack_pack_fix_uint8(&m.pk, 1);
    assert_int_equal(decode_job(&m, &out, &err), -1);
    assert_non_null(strstr(err.msg, "version 2"));
    mp_free(&m);

    /* empty prompt, zero max_new_tokens, negative token id, bad ids */
    static const struct {
        const char *id, *adapter;
        int n_prompt, max_new, neg_token;
        const char *needle;
    } cases[] = {
        {"x", "", 0, 1, 0, "'prompt' is empty"},
        {"x", "", 1, 0, 0, "max_new_tokens"},
        {"x", "", 1, 1, 1, "prompt"},
        {"bad id!", "", 1, 1, 0, "'id'"},
        {"x", "../etc", 1, 1, 0, "'adapter'"},
        {"x", "a b", 1, 1, 0, "'adapter'"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mp_init(&m);
        msgpack_pack_map(&m.pk, 5);
        mp_str(&m, "v"), msgpack_pack_fix_uint8(&m.pk, 1);
        mp_str(&m, "id"), mp_str(&m, cases[c].id);
        mp_str(&m, "adapter"), mp_str(&m, cases[c].adapter);
        mp_str(&m, "prompt"), msgpack_pack_array(&m.pk, (size_t)cases[c].n_prompt);
        for (int i = 0; i < cases[c].n_prompt; i++) {
            if (cases[c].neg_token) msgpack_pack_int8(&m.pk, -1);
            else msgpack_pack_fix_uint8(&m.pk, 1);
        }
        mp_str(&m, "max_new_tokens"), msgpack_pack_fix_uint8(&m.pk, (uint8_t)cases[c].max_new);
        assert_int_equal(decode_job(&m, &out, &err), -1);
        if (!strstr(err.msg, cases[c].needle)) fail_msg("case %zu: expected '%s' in '%s'", c, cases[c].needle, err.msg);
        mp_free(&m);
    }
}

static void test_id_rules(void **state) {
    (void)state;
    assert_true(lq_adapter_id_valid(""));
    assert_true(lq_adapter_id_valid("demo/sentiment"));
    assert_true(lq_adapter_id_valid("a.b_c-d"));
    assert_false(lq_adapter_id_valid(".hidden"));
    assert_false(lq_adapter_id_valid("/abs"));
    assert_false(lq_adapter_id_valid("a@b"));
    char long_id[200];
    memset(long_id, 'a', sizeof long_id);
    long_id[129] = 0;
    assert_false(lq_adapter_id_valid(long_id));
    long_id[128] = 0;
    assert_true(lq_adapter_id_valid(long_id));
    assert_true(lq_job_id_valid("18c2f1a0b7e-0123456789abcdef"));
    assert_false(lq_job_id_valid(""));
    assert_false(lq_job_id_valid("a.b"));
    long_id[65] = 0;
    assert_false(lq_job_id_valid(long_id));
    long_id[64] = 0;
    assert_true(lq_job_id_valid(long_id));
}

/* ---- events ---- */

static void test_token_event_round_trip(void **state) {
    (void)state;
    lq_top_token top[2] = {{17, -0.25f, "a"}, {18, -1.5f, "\xe2\x82"}};
    lq_event in;
    memset(&in, 0, sizeof in);
    in.type = LQ_EVENT_TOKEN;
    in.job = "j1";
    in.index = 12;
    in.token = 49151;
    in.text = "x\0y"; /* a byte-fallback token may decode to NUL */
    in.text_len = 3;
    in.logprob = -0.125f;
    in.special = 1;
    in.last = 1;
    in.top = top;
    in.n_top = 2;
    in.queue_ms = in.run_ms = -1;
    lq_buf buf = {0};
    lq_error err;
    lq_event out;
    assert_int_equal(lq_event_encode(&in, &buf, &err), 0);
    assert_int_equal(lq_event_decode(buf.data, buf.len, &out, &err), 0);
    assert_int_equal(out.type, LQ_EVENT_TOKEN);
    assert_string_equal(out.job, "j1");
    assert_int_equal(out.index, 12);
    assert_int_equal(out.token, 49151);
    assert_int_equal(out.text_len, 3);
    assert_memory_equal(out.text, "x\0y", 3);
    assert_true(out.logprob == -0.125f);
    assert_true(out.special);
    assert_int_equal(out.last, 1);
    assert_int_equal(out.n_top, 2);
    assert_int_equal(out.top[1].id, 18);
    assert_true(out.top[1].logprob == -1.5f);
    assert_string_equal(out.top[1].text, "\xe2\x82");
    lq_event_clear(&out);
    lq_buf_free(&buf);
    /* `last` false travels too; a writer that does not say (-1) leaves the field out, read back as -1. */
    for (int last = -1; last <= 0; last++) {
        in.last = last;
        memset(&buf, 0, sizeof buf);
        assert_int_equal(lq_event_encode(&in, &buf, &err), 0);
        assert_int_equal(lq_event_decode(buf.data, buf.len, &out, &err), 0);
        assert_int_equal(out.last, last);
        lq_event_clear(&out);
        lq_buf_free(&buf);
    }
}

static void test_end_event_round_trip(void **state) {
    (void)state;
    lq_prefill_token pre[2] = {{1, 0, 0, "<s>"}, {2, 1, -3.5f, "Hi"}};
    lq_event in;
    memset(&in, 0, sizeof in);
    in.type = LQ_EVENT_END;
    in.job = "j2";
    in.index = in.generated_tokens = 5;
    in.prompt_tokens = 2;
    in.text = "hello";
    in.text_len = 5;
    in.finish_reason = "error";
    in.error = "deadline passed";
    in.error_type = "deadline";
    in.has_seed = 1;
    in.seed = 1ull << 63;
    in.prefill = pre;
    in.n_prefill = 2;
    in.worker = "host-1-abcd";
    in.queue_ms = 0;
    in.run_ms = 1234567;
    lq_buf buf = {0};
    lq_error err;
    lq_event out;
    assert_int_equal(lq_event_encode(&in, &buf, &err), 0);
    assert_int_equal(lq_event_decode(buf.data, buf.len, &out, &err), 0);
    assert_int_equal(out.type, LQ_EVENT_END);
    assert_int_equal(out.index, 5);
    assert_int_equal(out.generated_tokens, 5);
    assert_int_equal(out.prompt_tokens, 2);
    assert_string_equal(out.text, "hello");
    assert_string_equal(out.finish_reason, "error");
    assert_string_equal(out.error, "deadline passed");
    assert_string_equal(out.error_type, "deadline");
    assert_true(out.has_seed && out.seed == 1ull << 63);
    assert_int_equal(out.n_prefill, 2);
    assert_false(out.prefill[0].has_logprob);
    assert_true(out.prefill[1].has_logprob && out.prefill[1].logprob == -3.5f);
    assert_string_equal(out.prefill[1].text, "Hi");
    assert_string_equal(out.worker, "host-1-abcd");
    assert_int_equal(out.queue_ms, 0);
    assert_int_equal(out.run_ms, 1234567);
    lq_event_clear(&out);

    /* without the optional fields */
    memset(&in, 0, sizeof in);
    in.type = LQ_EVENT_END;
    in.job = "j3";
    in.finish_reason = "length";
    in.queue_ms = in.run_ms = -1;
    assert_int_equal(lq_event_encode(&in, &buf, &err), 0);
    assert_int_equal(lq_event_decode(buf.data, buf.len, &out, &err), 0);
    assert_null(out.error);
    assert_null(out.worker);
    assert_false(out.has_seed);
    assert_int_equal(out.queue_ms, -1);
    assert_string_equal(out.text, "");
    lq_event_clear(&out);
    lq_buf_free(&buf);
}

/* The end event Redis's Lua builds with cmsgpack (fail.lua, cancel.lua): map keys in any order, fixint counts. */
static void test_event_as_lua_writes_it(void **state) {
    (void)state;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 10);
    mp_str(&m, "error_type"), mp_str(&m, "validation");
    mp_str(&m, "index"), msgpack_pack_fix_uint8(&m.pk, 0);
    mp_str(&m, "text"), mp_str(&m, "");
    mp_str(&m, "v"), msgpack_pack_fix_uint8(&m.pk, 1);
    mp_str(&m, "job"), mp_str(&m, "abc");
    mp_str(&m, "prompt_tokens"), msgpack_pack_fix_uint8(&m.pk, 0);
    mp_str(&m, "type"), mp_str(&m, "end");
    mp_str(&m, "generated_tokens"), msgpack_pack_fix_uint8(&m.pk, 0);
    mp_str(&m, "finish_reason"), mp_str(&m, "error");
    mp_str(&m, "error"), mp_str(&m, "invalid job: job is not valid msgpack");
    lq_event e;
    lq_error err;
    assert_int_equal(lq_event_decode(m.buf.data, m.buf.size, &e, &err), 0);
    assert_int_equal(e.type, LQ_EVENT_END);
    assert_string_equal(e.error_type, "validation");
    lq_event_clear(&e);
    mp_free(&m);
}

static void expect_event_error(const char *needle, int n, ...) {
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, (size_t)n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        mp_str(&m, va_arg(ap, const char *));
        const char *kind = va_arg(ap, const char *);
        if (!strcmp(kind, "s")) mp_str(&m, va_arg(ap, const char *));
        else if (!strcmp(kind, "i")) msgpack_pack_int64(&m.pk, va_arg(ap, int));
        else if (!strcmp(kind, "b")) msgpack_pack_true(&m.pk);
        else if (!strcmp(kind, "a")) msgpack_pack_array(&m.pk, 1), msgpack_pack_fix_uint8(&m.pk, 1);
    }
    va_end(ap);
    lq_event e;
    lq_error err;
    assert_int_equal(lq_event_decode(m.buf.data, m.buf.size, &e, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("expected '%s' in '%s'", needle, err.msg);
    mp_free(&m);
}

static void test_event_errors(void **state) {
    (void)state;
    expect_event_error("'type'", 2, "v", "i", 1, "job", "s", "x");
    expect_event_error("'job'", 2, "v", "i", 1, "type", "s", "token");
    expect_event_error("finish_reason", 2, "type", "s", "end", "job", "s", "x");
    expect_event_error("'type'", 2, "type", "s", "tok", "job", "s", "x");
    expect_event_error("'job'", 2, "type", "s", "token", "job", "i", 3);
    expect_event_error("index", 3, "type", "s", "token", "job", "s", "x", "index", "i", -1);
    expect_event_error("'special'", 3, "type", "s", "token", "job", "s", "x", "special", "i", 1);
    expect_event_error("'top'", 3, "type", "s", "token", "job", "s", "x", "top", "a");
    expect_event_error("'logprob'", 3, "type", "s", "token", "job", "s", "x", "logprob", "s", "high");
    expect_event_error("version", 3, "type", "s", "token", "job", "s", "x", "v", "i", 9);
    expect_event_error("'text'", 3, "type", "s", "token", "job", "s", "x", "text", "b");
    /* a finite double too large for the float a logprob is kept in */
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 3);
    mp_str(&m, "type"), mp_str(&m, "token");
    mp_str(&m, "job"), mp_str(&m, "x");
    mp_str(&m, "logprob"), msgpack_pack_double(&m.pk, -1e300);
    lq_event e;
    lq_error err;
    assert_int_equal(lq_event_decode(m.buf.data, m.buf.size, &e, &err), -1);
    assert_non_null(strstr(err.msg, "logprob"));
    mp_free(&m);
}

/* A map may repeat a key (msgpack allows it); the last value wins, as it does
 * in Python's msgpack, and the earlier one's memory is released, not counted
 * on top of the new one (the fuzzer found both). */
static void pack_stops(mp *m, const char *s, int n) {
    mp_str(m, "stop");
    msgpack_pack_array(&m->pk, (size_t)n);
    for (int i = 0; i < n; i++) mp_str(m, s);
}

static void pack_triples(mp *m, const char *key, int n) {
    mp_str(m, key);
    msgpack_pack_array(&m->pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_array(&m->pk, 3);
        msgpack_pack_int(&m->pk, i);
        msgpack_pack_nil(&m->pk);
        mp_str(m, "t");
    }
}

static void test_repeated_keys(void **state) {
    (void)state;
    mp m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 6);
    mp_str(&m, "v"), msgpack_pack_fix_uint8(&m.pk, 1);
    mp_str(&m, "id"), mp_str(&m, "first");
    mp_str(&m, "id"), mp_str(&m, "job-2");
    mp_str(&m, "prompt"), msgpack_pack_array(&m.pk, 1), msgpack_pack_fix_uint8(&m.pk, 7);
    mp_str(&m, "max_new_tokens"), msgpack_pack_fix_uint8(&m.pk, 3);
    mp_str(&m, "params"), msgpack_pack_map(&m.pk, 2);
    pack_stops(&m, "a", LQ_JOB_MAX_STOP);
    pack_stops(&m, "b", 2);
    lq_job j;
    lq_error err;
    /* without an adapter the job is refused, and the error path frees the replaced stops too (ASan) */
    assert_int_equal(lq_job_decode(m.buf.data, m.buf.size, &j, &err), -1);
    assert_non_null(strstr(err.msg, "adapter"));
    mp_free(&m);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 7);
    mp_str(&m, "v"), msgpack_pack_fix_uint8(&m.pk, 1);
    mp_str(&m, "id"), mp_str(&m, "first");
    mp_str(&m, "id"), mp_str(&m, "job-2");
    mp_str(&m, "adapter"), mp_str(&m, "");
    mp_str(&m, "prompt"), msgpack_pack_array(&m.pk, 1), msgpack_pack_fix_uint8(&m.pk, 7);
    mp_str(&m, "max_new_tokens"), msgpack_pack_fix_uint8(&m.pk, 3);
    mp_str(&m, "params"), msgpack_pack_map(&m.pk, 2);
    pack_stops(&m, "a", LQ_JOB_MAX_STOP);
    pack_stops(&m, "b", 2);
    assert_int_equal(lq_job_decode(m.buf.data, m.buf.size, &j, &err), 0);
    assert_string_equal(j.id, "job-2");
    assert_int_equal(j.params.n_stop, 2);
    assert_string_equal(j.params.stop[1], "b");
    lq_job_clear(&j);
    mp_free(&m);

    mp_init(&m);
    msgpack_pack_map(&m.pk, 6);
    mp_str(&m, "type"), mp_str(&m, "token");
    mp_str(&m, "job"), mp_str(&m, "x");
    pack_triples(&m, "top", 3);
    pack_triples(&m, "top", 1);
    pack_triples(&m, "prefill", 4);
    pack_triples(&m, "prefill", 0);
    lq_event e;
    assert_int_equal(lq_event_decode(m.buf.data, m.buf.size, &e, &err), 0);
    assert_int_equal(e.n_top, 1);
    assert_int_equal(e.n_prefill, 0);
    lq_event_clear(&e);
    mp_free(&m);
}

/* ---- names and URLs ---- */

static void test_redis_url(void **state) {
    (void)state;
    lq_redis_url u;
    lq_error err;
    assert_int_equal(lq_redis_url_parse("redis://127.0.0.1:6379", &u, &err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_int_equal(lq_redis_url_parse("redis://:s%40cret@redis.local/3", &u, &err), 0);
    assert_string_equal(u.host, "redis.local");
    assert_int_equal(u.port, 6379);
    assert_string_equal(u.password, "s@cret");
    assert_int_equal(u.db, 3);
    assert_int_equal(lq_redis_url_parse("redis://alice:pw@h:7000/", &u, &err), 0);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.port, 7000);
    assert_int_equal(lq_redis_url_parse("redis://[::1]:6380/2", &u, &err), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_int_equal(lq_redis_url_parse("unix:///tmp/redis.sock", &u, &err), 0);
    assert_string_equal(u.path, "/tmp/redis.sock");
    assert_int_equal(lq_redis_url_parse("unix://:pw@/run/r.sock?db=4", &u, &err), 0);
    assert_string_equal(u.path, "/run/r.sock");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.db, 4);
    static const char *const bad[] = {"", "http://x", "redis://", "redis://h:0", "redis://h:70000", "redis://h:12x",
                                      "redis://h/abc", "redis://:%zz@h", "rediss://h", "unix://", "unix://host/x",
                                      "redis://[::1", "unix:///s?x=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        if (lq_redis_url_parse(bad[i], &u, &err) == 0) fail_msg("'%s' parsed", bad[i]);
        assert_true(err.msg[0] != 0);
    }
}

static void test_keys(void **state) {
    (void)state;
    lq_error err;
    lq_redis_opts o = {.url = "redis://127.0.0.1:1", .prefix = "lorq:{s3}:", .lua_dir = "lua"};
    lq_redis *r = lq_redis_new(&o, &err);
    if (!r) fail_msg("%s", err.msg);
    char k[LQ_KEY_MAX], a[LQ_KEY_MAX];
    assert_string_equal(lq_key_queue(r, "demo/sentiment", k), "lorq:{s3}:q:demo/sentiment");
    assert_string_equal(lq_key_queue(r, "", k), "lorq:{s3}:q:@base");
    assert_string_equal(lq_key_queues(r, k), "lorq:{s3}:queues");
    assert_string_equal(lq_key_queues_new(r, k), "lorq:{s3}:queues:new");
    assert_string_equal(lq_key_control(r, k), "lorq:{s3}:control");
    assert_string_equal(lq_key_job(r, "j1", k), "lorq:{s3}:job:j1");
    assert_string_equal(lq_key_log(r, "j1", k), "lorq:{s3}:log:j1");
    assert_string_equal(lq_key_channel(r, "j1", k), "lorq:{s3}:ch:j1");
    assert_string_equal(lq_key_dead(r, k), "lorq:{s3}:dead");
    assert_string_equal(lq_key_worker(r, "w-1", k), "lorq:{s3}:worker:w-1");
    assert_string_equal(lq_key_workers(r, k), "lorq:{s3}:workers");
    assert_string_equal(lq_key_queue_adapter(r, "lorq:{s3}:q:demo/x", a), "demo/x");
    assert_string_equal(lq_key_queue_adapter(r, "lorq:{s3}:q:@base", a), "");
    assert_null(lq_key_queue_adapter(r, "other:q:x", a));
    assert_null(lq_key_queue_adapter(r, "lorq:{s3}:job:x", a));
    lq_redis_free(r);

    o.prefix = "has space";
    assert_null(lq_redis_new(&o, &err));
    assert_non_null(strstr(err.msg, "LORQ_PREFIX"));
    o.prefix = NULL;
    o.lua_dir = "no/such/dir";
    assert_null(lq_redis_new(&o, &err));
    assert_non_null(strstr(err.msg, "enqueue.lua"));
}

static void test_backoff(void **state) {
    (void)state;
    lq_backoff b;
    lq_backoff_reset(&b);
    int want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) assert_int_equal(lq_backoff_next(&b), want[i]);
    lq_backoff_reset(&b);
    assert_int_equal(lq_backoff_next(&b), 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_round_trip),
        cmocka_unit_test(test_job_base_model_and_defaults),
        cmocka_unit_test(test_job_encode_refuses_bad_jobs),
        cmocka_unit_test(test_job_missing_fields),
        cmocka_unit_test(test_job_wrong_types),
        cmocka_unit_test(test_job_narrow_encodings),
        cmocka_unit_test(test_job_bad_params),
        cmocka_unit_test(test_job_bad_documents),
        cmocka_unit_test(test_job_bad_values),
        cmocka_unit_test(test_id_rules),
        cmocka_unit_test(test_token_event_round_trip),
        cmocka_unit_test(test_end_event_round_trip),
        cmocka_unit_test(test_event_as_lua_writes_it),
        cmocka_unit_test(test_event_errors),
        cmocka_unit_test(test_repeated_keys),
        cmocka_unit_test(test_redis_url),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
