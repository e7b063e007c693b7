/* test_gateway_validate.c — request bodies into generation requests: TGI's
 * /generate parameters with TGI's messages and statuses, OpenAI's
 * completions and chat bodies, adapter names, and prompt preparation
 * (truncate keeps the last tokens, the token limits, the default
 * max_new_tokens), on a one-character-per-token tokenizer so that lengths
 * are easy to reason about. Runs under ASan/UBSan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "validate.h"

/* Every character of " abcde" is one token; "<s>" is a BOS the post-processor adds. */
static const char TOK_JSON[] =
    "{\"added_tokens\": [{\"id\": 6, \"content\": \"<s>\", \"special\": true}], "
    "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", "
    "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": "
    "\"<s>\", \"ids\": [6], \"tokens\": [\"<s>\"]}}}, "
    "\"model\": {\"type\": \"BPE\", \"vocab\": {\" \": 0, \"a\": 1, \"b\": 2, \"c\": 3, \"d\": 4, \"e\": 5, \"<s>\": 6}, "
    "\"merges\": []}}";

static char *ADAPTERS[] = {"demo/sentiment", "r8-qv", "r16"};

static lq_gw_limits limits(void) {
    lq_gw_limits l = {0};
    l.max_input_tokens = 8;
    l.max_total_tokens = 12;
    l.max_stop_sequences = 2;
    l.max_top_n_tokens = 5;
    l.model_id = "org/base-model";
    l.model_name = "base-model";
    l.adapters = ADAPTERS;
    l.n_adapters = 3;
    return l;
}

static int parse_gen(const char *body, lq_gw_request *r, lq_gw_error *e) {
    lq_gw_limits l = limits();
    return lq_gw_parse_generate(body, strlen(body), &l, 0, r, e);
}

/* A body that must fail with status and a message containing want. */
static void expect_gen_error(const char *body, int status, const char *want) {
    lq_gw_request r;
    lq_gw_error e;
    memset(&e, 0, sizeof e);
    int rc = parse_gen(body, &r, &e);
    if (rc == 0 || e.status != status || !strstr(e.msg, want)) {
        print_error("body %s: rc %d, status %d, message '%s' (wanted %d '%s')\n", body, rc, e.status, e.msg, status, want);
        if (rc == 0) lq_gw_request_clear(&r);
        fail();
    }
    assert_string_equal(e.type, "validation");
}

/* ---- TGI /generate ---- */

static void test_generate_defaults(void **state) {
    (void)state;
    lq_gw_request r;
    lq_gw_error e;
    assert_int_equal(parse_gen("{\"inputs\": \"abc\"}", &r, &e), 0);
    assert_string_equal(r.inputs, "abc");
    assert_int_equal(r.inputs_len, 3);
    assert_string_equal(r.adapter, "");
    assert_int_equal(r.max_new_tokens, 0); /* filled once the prompt length is known */
    assert_false(r.params.do_sample);
    assert_true(r.params.temperature == 1.0 && r.params.top_p == 1.0 && r.params.typical_p == 1.0);
    assert_int_equal(r.params.top_k, 0);
    assert_false(r.details);
    assert_false(r.stream);
    assert_false(r.params.has_seed);
    assert_true(r.add_special_tokens);
    lq_gw_request_clear(&r);
}

static void test_generate_all_parameters(void **state) {
    (void)state;
    lq_gw_request r;
    lq_gw_error e;
    const char *body = "{\"inputs\": \"ab\", \"parameters\": {\"adapter_id\": \"r8-qv\", \"details\": true, "
                       "\"decoder_input_details\": true, \"top_n_tokens\": 3, \"seed\": 42, \"stop\": [\"x\", \"yz\"], "
                       "\"return_full_text\": true, \"truncate\": 4, \"do_sample\": false, \"temperature\": 0.5, "
                       "\"top_k\": 10, \"top_p\": 0.9, \"typical_p\": 0.95, \"repetition_penalty\": 1.1, "
                       "\"frequency_penalty\": 0.5, \"max_new_tokens\": 3, \"watermark\": false, \"best_of\": 1, "
                       "\"grammar\": null, \"unknown_field\": [1, 2]}, \"stream\": false}";
    assert_int_equal(parse_gen(body, &r, &e), 0);
    assert_string_equal(r.adapter, "r8-qv");
    assert_true(r.details && r.decoder_input_details && r.params.decoder_input_details && r.return_full_text);
    assert_int_equal(r.params.top_n_tokens, 3);
    assert_true(r.params.has_seed);
    assert_true(r.params.seed == 42);
    assert_int_equal(r.params.n_stop, 2);
    assert_string_equal(r.params.stop[1], "yz");
    assert_int_equal(r.truncate, 4);
    assert_true(r.params.do_sample); /* temperature (a warper) turns sampling on, as in TGI */
    assert_true(r.params.temperature == 0.5 && r.params.top_p == 0.9 && r.params.typical_p == 0.95);
    assert_int_equal(r.params.top_k, 10);
    assert_true(r.params.repetition_penalty == 1.1 && r.params.frequency_penalty == 0.5);
    assert_int_equal(r.max_new_tokens, 3);
    lq_gw_request_clear(&r);
}

/* null means "not given", as huggingface_hub sends it for unset parameters. */
static void test_generate_nulls(void **state) {
    (void)state;
    lq_gw_request r;
    lq_gw_error e;
    const char *body = "{\"inputs\": \"a\", \"parameters\": {\"adapter_id\": null, \"best_of\": null, \"details\": null, "
                       "\"temperature\": null, \"top_k\": null, \"stop\": null, \"seed\": null, \"truncate\": null, "
                       "\"max_new_tokens\": null}, \"stream\": null}";
    assert_int_equal(parse_gen(body, &r, &e), 0);
    assert_false(r.params.do_sample);
    assert_int_equal(r.params.n_stop, 0);
    lq_gw_request_clear(&r);
}

static void test_generate_tgi_messages(void **state) {
    (void)state;
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"temperature\": 0}}", 422,
                     "`temperature` must be strictly positive");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"temperature\": -1.5}}", 422,
                     "`temperature` must be strictly positive");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"repetition_penalty\": 0}}", 422,
                     "`repetition_penalty` must be strictly positive");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"frequency_penalty\": 2.5}}", 422,
                     "`frequency_penalty` must be >= -2.0 and <= 2.0");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"top_p\": 1.0}}", 422, "`top_p` must be > 0.0 and < 1.0");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"top_p\": 0}}", 422, "`top_p` must be > 0.0 and < 1.0");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"typical_p\": 1}}", 422,
                     "`typical_p` must be > 0.0 and < 1.0");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"top_k\": 0}}", 422, "`top_k` must be strictly positive");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"max_new_tokens\": 0}}", 422,
                     "`max_new_tokens` must be strictly positive");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"max_new_tokens\": -3}}", 422,
                     "`max_new_tokens` must be strictly positive");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"stop\": [\"a\", \"b\", \"c\"]}}", 422,
                     "`stop` supports up to 2 stop sequences. Given: 3");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"top_n_tokens\": 6}}", 422,
                     "`top_n_tokens` must be >= 0 and <= 5. Given: 6");
    expect_gen_error("{\"inputs\": \"\"}", 422, "`inputs` cannot be empty");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"truncate\": 0}}", 422,
                     "`truncate` must be strictly positive and less than 8. Given: 0");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"truncate\": 9}}", 422,
                     "`truncate` must be strictly positive and less than 8. Given: 9");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"best_of\": 2}}", 422, "`best_of` != 1");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"grammar\": {\"type\": \"regex\", \"value\": \"a\"}}}", 422,
                     "grammar is not supported");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"watermark\": true}}", 422, "`watermark`");
}

static void test_generate_types_and_json(void **state) {
    (void)state;
    expect_gen_error("", 400, "empty");
    expect_gen_error("{\"inputs\": ", 400, "invalid JSON body");
    expect_gen_error("{\"inputs\": \"a\", \"inputs\": \"b\"}", 400, "duplicate");
    expect_gen_error("{\"inputs\": \"\\u0000\"}", 400, "invalid JSON body");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"temperature\": 1e999}}", 400, "invalid JSON body");
    expect_gen_error("{\"inputs\": \"\xc3\x28\"}", 400, "invalid JSON body");
    expect_gen_error("[\"inputs\"]", 422, "must be a JSON object");
    expect_gen_error("{}", 422, "missing field `inputs`");
    expect_gen_error("{\"inputs\": 7}", 422, "`inputs`: expected a string, got an integer");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": []}", 422, "`parameters`: expected an object");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"temperature\": \"hot\"}}", 422,
                     "`parameters.temperature`: expected a number, got a string");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"max_new_tokens\": 2.5}}", 422,
                     "`parameters.max_new_tokens`: expected an integer, got a number");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"details\": \"yes\"}}", 422,
                     "`parameters.details`: expected a boolean");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"stop\": \"x\"}}", 422,
                     "`parameters.stop`: expected a list of strings");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"stop\": [1]}}", 422, "`parameters.stop`");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"stop\": [\"\"]}}", 422, "must not be empty");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"seed\": -1}}", 422, "`parameters.seed`");
    expect_gen_error("{\"inputs\": \"a\", \"stream\": 1}", 422, "`stream`: expected a boolean");
    char body[600];
    char longstop[300];
    memset(longstop, 'x', 257);
    longstop[257] = 0;
    snprintf(body, sizeof body, "{\"inputs\": \"a\", \"parameters\": {\"stop\": [\"%s\"]}}", longstop);
    expect_gen_error(body, 422, "at most 256 bytes");
}

static void test_generate_adapters(void **state) {
    (void)state;
    lq_gw_request r;
    lq_gw_error e;
    const char *base[] = {"org/base-model", "base-model", "", "tgi"};
    for (size_t i = 0; i < sizeof base / sizeof *base; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"inputs\": \"a\", \"parameters\": {\"adapter_id\": \"%s\"}}", base[i]);
        assert_int_equal(parse_gen(body, &r, &e), 0);
        assert_string_equal(r.adapter, "");
        lq_gw_request_clear(&r);
    }
    assert_int_equal(parse_gen("{\"inputs\": \"a\", \"parameters\": {\"adapter_id\": \"demo/sentiment\"}}", &r, &e), 0);
    assert_string_equal(r.adapter, "demo/sentiment");
    lq_gw_request_clear(&r);
    /* An unknown adapter lists the known ones. */
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"adapter_id\": \"nope\"}}", 422,
                     "adapter_id 'nope' is not served here; known adapters: demo/sentiment, r8-qv, r16");
    expect_gen_error("{\"inputs\": \"a\", \"parameters\": {\"adapter_id\": 3}}", 422, "`parameters.adapter_id`");
}

static void test_generate_stream_routes(void **state) {
    (void)state;
    lq_gw_limits l = limits();
    lq_gw_request r;
    lq_gw_error e;
    const char *body = "{\"inputs\": \"a\", \"parameters\": {\"decoder_input_details\": true}}";
    assert_int_equal(lq_gw_parse_generate(body, strlen(body), &l, 1, &r, &e), -1);
    assert_int_equal(e.status, 422);
    assert_non_null(strstr(e.msg, "`decoder_input_details` == true is not supported when streaming tokens"));
    /* POST / streams when the body says so. */
    const char *compat = "{\"inputs\": \"a\", \"stream\": true}";
    assert_int_equal(lq_gw_parse_generate(compat, strlen(compat), &l, 0, &r, &e), 0);
    assert_true(r.stream);
    lq_gw_request_clear(&r);
    const char *plain = "{\"inputs\": \"a\"}";
    assert_int_equal(lq_gw_parse_generate(plain, strlen(plain), &l, 1, &r, &e), 0);
    assert_true(r.stream);
    lq_gw_request_clear(&r);
}

/* ---- prompts ---- */

static lq_tokenizer *tiny_tokenizer(void) {
    lq_error err = {{0}};
    lq_tokenizer *tok = tok_load_json(TOK_JSON, strlen(TOK_JSON), &err);
    if (!tok) print_error("tokenizer: %s\n", err.msg);
    assert_non_null(tok);
    return tok;
}

static int prepare(const lq_tokenizer *tok, const char *body, int add_special, int32_t **ids, int *n, lq_gw_error *e) {
    lq_gw_request r;
    lq_gw_limits l = limits();
    if (parse_gen(body, &r, e)) return -2;
    int rc = lq_gw_prepare_prompt(tok, &l, &r, r.inputs, r.inputs_len, add_special, ids, n, e);
    int mnt = r.max_new_tokens;
    lq_gw_request_clear(&r);
    return rc ? rc : mnt;
}

static void test_prompt_lengths(void **state) {
    (void)state;
    lq_tokenizer *tok = tiny_tokenizer();
    int32_t *ids;
    int n;
    lq_gw_error e;
    /* Default max_new_tokens: what is left of MAX_TOTAL_TOKENS (12 - 4). */
    assert_int_equal(prepare(tok, "{\"inputs\": \"abcd\"}", 0, &ids, &n, &e), 8);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[3], 4);
    free(ids);
    /* The post-processor's BOS counts. */
    assert_int_equal(prepare(tok, "{\"inputs\": \"ab\"}", 1, &ids, &n, &e), 9);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 6);
    free(ids);
    /* truncate keeps the last tokens, as TGI does. */
    assert_int_equal(prepare(tok, "{\"inputs\": \"abcde\", \"parameters\": {\"truncate\": 2, \"max_new_tokens\": 1}}", 0,
                             &ids, &n, &e),
                     1);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 4);
    assert_int_equal(ids[1], 5);
    free(ids);
    /* Too long: TGI's messages, the total checked first. */
    assert_int_equal(prepare(tok, "{\"inputs\": \"abcdeabcd\", \"parameters\": {\"max_new_tokens\": 2}}", 0, &ids, &n, &e),
                     -1);
    assert_int_equal(e.status, 422);
    assert_string_equal(e.msg, "`inputs` must have less than 8 tokens. Given: 9");
    assert_int_equal(prepare(tok, "{\"inputs\": \"abcde\", \"parameters\": {\"max_new_tokens\": 8}}", 0, &ids, &n, &e), -1);
    assert_string_equal(e.msg, "`inputs` tokens + `max_new_tokens` must be <= 12. Given: 5 `inputs` tokens and 8 "
                               "`max_new_tokens`");
    /* Long input, truncated to fit: accepted. */
    assert_int_equal(prepare(tok, "{\"inputs\": \"abcdeabcdeabcde\", \"parameters\": {\"truncate\": 8, "
                                  "\"max_new_tokens\": 4}}",
                             0, &ids, &n, &e),
                     4);
    assert_int_equal(n, 8);
    free(ids);
    tok_free(tok);
}

static void test_prompt_ids(void **state) {
    (void)state;
    lq_tokenizer *tok = tiny_tokenizer();
    lq_gw_limits l = limits();
    lq_gw_request r;
    lq_gw_error e;
    int32_t *ids;
    int n;
    const char *ok = "{\"model\": \"r16\", \"prompt\": [1, 2, 3], \"max_tokens\": 2}";
    assert_int_equal(lq_gw_parse_completion(ok, strlen(ok), &l, &r, &e), 0);
    assert_int_equal(lq_gw_prepare_prompt(tok, &l, &r, NULL, 0, 1, &ids, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[2], 3);
    free(ids);
    lq_gw_request_clear(&r);
    const char *bad = "{\"prompt\": [1, 99]}";
    assert_int_equal(lq_gw_parse_completion(bad, strlen(bad), &l, &r, &e), 0);
    assert_int_equal(lq_gw_prepare_prompt(tok, &l, &r, NULL, 0, 1, &ids, &n, &e), -1);
    assert_non_null(strstr(e.msg, "token id 99 is not in the vocabulary"));
    lq_gw_request_clear(&r);
    tok_free(tok);
}

/* ---- OpenAI ---- */

static int parse_openai(int chat, const char *body, lq_gw_request *r, lq_gw_error *e) {
    lq_gw_limits l = limits();
    memset(e, 0, sizeof *e);
    return chat ? lq_gw_parse_chat(body, strlen(body), &l, r, e) : lq_gw_parse_completion(body, strlen(body), &l, r, e);
}

static void expect_openai_error(int chat, const char *body, const char *want) {
    lq_gw_request r;
    lq_gw_error e;
    int rc = parse_openai(chat, body, &r, &e);
    if (rc == 0 || e.status != 422 || !strstr(e.msg, want)) {
        print_error("body %s: rc %d status %d '%s' (wanted '%s')\n", body, rc, e.status, e.msg, want);
        if (rc == 0) lq_gw_request_clear(&r);
        fail();
    }
}

static void test_completions(void **state) {
    (void)state;
    lq_gw_request r;
    lq_gw_error e;
    assert_int_equal(parse_openai(0, "{\"model\": \"r8-qv\", \"prompt\": \"abc\"}", &r, &e), 0);
    assert_string_equal(r.adapter, "r8-qv");
    assert_string_equal(r.model, "r8-qv");
    assert_int_equal(r.max_new_tokens, 16); /* OpenAI's default */
    assert_true(r.params.do_sample);       /* OpenAI samples unless temperature is 0 */
    lq_gw_request_clear(&r);
    assert_int_equal(parse_openai(0, "{\"model\": \"org/base-model\", \"prompt\": [\"ab\"], \"temperature\": 0, "
                                     "\"stop\": \"x\", \"max_tokens\": 5, \"logprobs\": 2, \"echo\": true, \"seed\": 7, "
                                     "\"n\": 1, \"stream\": true, \"stream_options\": {\"include_usage\": true}, "
                                     "\"top_p\": 1, \"logit_bias\": {}, \"user\": \"u\"}",
                                  &r, &e),
                     0);
    assert_string_equal(r.adapter, "");
    assert_string_equal(r.model, "org/base-model");
    assert_false(r.params.do_sample);
    assert_int_equal(r.params.n_stop, 1);
    assert_int_equal(r.max_new_tokens, 5);
    assert_true(r.logprobs);
    assert_int_equal(r.params.top_n_tokens, 2);
    assert_true(r.echo && r.stream && r.include_usage && r.params.has_seed);
    assert_string_equal(r.inputs, "ab");
    lq_gw_request_clear(&r);
    expect_openai_error(0, "{\"prompt\": [\"a\", \"b\"]}", "one prompt per request");
    expect_openai_error(0, "{\"prompt\": \"a\", \"n\": 2}", "`n` must be 1");
    expect_openai_error(0, "{\"prompt\": \"a\", \"temperature\": 2.5}", "`temperature` must be >= 0.0 and <= 2.0");
    expect_openai_error(0, "{\"prompt\": \"a\", \"top_p\": 0}", "`top_p` must be > 0.0 and <= 1.0");
    expect_openai_error(0, "{\"prompt\": \"a\", \"logprobs\": 6}", "`logprobs` must be >= 0 and <= 5");
    expect_openai_error(0, "{\"prompt\": \"a\", \"suffix\": \"b\"}", "`suffix` is not supported");
    expect_openai_error(0, "{\"prompt\": \"a\", \"logit_bias\": {\"1\": 5}}", "`logit_bias` is not supported");
    expect_openai_error(0, "{\"prompt\": \"a\", \"max_tokens\": 0}", "`max_tokens` must be strictly positive");
    expect_openai_error(0, "{\"prompt\": \"a\", \"stop\": [\"a\", \"b\", \"c\"]}", "`stop` supports up to 2");
    expect_openai_error(0, "{\"prompt\": \"\"}", "`prompt` cannot be empty");
    expect_openai_error(0, "{\"model\": \"gpt-4\", \"prompt\": \"a\"}", "model 'gpt-4' is not served here");
    expect_openai_error(0, "{\"model\": \"r16\"}", "missing field `prompt`");
}

static void test_chat(void **state) {
    (void)state;
    lq_gw_request r;
    lq_gw_error e;
    const char *body = "{\"model\": \"r16\", \"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, "
                       "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hel\"}, {\"type\": \"text\", "
                       "\"text\": \"lo\"}], \"name\": \"ann\"}], \"max_completion_tokens\": 4, \"logprobs\": true, "
                       "\"top_logprobs\": 2, \"temperature\": 0, \"response_format\": {\"type\": \"text\"}}";
    assert_int_equal(parse_openai(1, body, &r, &e), 0);
    assert_string_equal(r.adapter, "r16");
    assert_false(r.add_special_tokens); /* the template writes the special tokens */
    assert_int_equal(r.max_new_tokens, 4);
    assert_true(r.logprobs);
    assert_int_equal(r.params.top_n_tokens, 2);
    assert_int_equal(json_array_size(r.messages), 2);
    json_t *user = json_array_get(r.messages, 1);
    assert_string_equal(json_string_value(json_object_get(user, "content")), "hello");
    assert_string_equal(json_string_value(json_object_get(user, "name")), "ann");
    lq_gw_request_clear(&r);
    expect_openai_error(1, "{\"model\": \"r16\"}", "missing field `messages`");
    expect_openai_error(1, "{\"messages\": []}", "`messages` must be a non-empty list");
    expect_openai_error(1, "{\"messages\": [\"hi\"]}", "`messages[0]` must be an object");
    expect_openai_error(1, "{\"messages\": [{\"content\": \"hi\"}]}", "`messages[0].role` must be a string");
    expect_openai_error(1, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "`messages[0].content`");
    expect_openai_error(1,
                        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": "
                        "{\"url\": \"x\"}}]}]}",
                        "only text parts");
    expect_openai_error(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"tools\": []}",
                        "`tools` is not supported");
    expect_openai_error(1, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"top_logprobs\": 2}",
                        "`top_logprobs` needs `logprobs`");
    expect_openai_error(1,
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"response_format\": {\"type\": "
                        "\"json_object\"}}",
                        "`response_format`");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_defaults),  cmocka_unit_test(test_generate_all_parameters),
        cmocka_unit_test(test_generate_nulls),     cmocka_unit_test(test_generate_tgi_messages),
        cmocka_unit_test(test_generate_types_and_json), cmocka_unit_test(test_generate_adapters),
        cmocka_unit_test(test_generate_stream_routes),  cmocka_unit_test(test_prompt_lengths),
        cmocka_unit_test(test_prompt_ids),         cmocka_unit_test(test_completions),
        cmocka_unit_test(test_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
