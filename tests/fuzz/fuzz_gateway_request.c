/* fuzz_gateway_request.c — libFuzzer target for the gateway's request
 * parsers and validators. The first byte picks the front door (TGI
 * /generate, /generate_stream, OpenAI completions, chat); the rest is the
 * body. Besides not crashing, an accepted request must satisfy what the
 * rest of the gateway relies on, and a refused one must carry a 4xx (or
 * 500) with a message; a broken invariant aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

static const char TOK_JSON[] =
    "{\"added_tokens\": [{\"id\": 6, \"content\": \"<s>\", \"special\": true}], "
    "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", "
    "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": "
    "\"<s>\", \"ids\": [6], \"tokens\": [\"<s>\"]}}}, "
    "\"model\": {\"type\": \"BPE\", \"vocab\": {\" \": 0, \"a\": 1, \"b\": 2, \"c\": 3, \"d\": 4, \"e\": 5, \"<s>\": 6}, "
    "\"merges\": []}}";

static char *ADAPTERS[] = {"demo/sentiment", "r8-qv"};

static void check(int ok) {
    if (!ok) abort();
}

static void check_error(const lq_gw_error *e) {
    check((e->status >= 400 && e->status < 500) || e->status == 500);
    check(e->msg[0] != 0 && e->type[0] != 0);
}

static void check_request(const lq_gw_request *r, const lq_gw_limits *l) {
    check(lq_job_params_check(&r->params) == NULL); /* what a worker would accept */
    check(r->params.n_stop <= l->max_stop_sequences);
    check(r->params.top_n_tokens >= 0 && r->params.top_n_tokens <= l->max_top_n_tokens);
    check(r->max_new_tokens >= 0);
    check(r->truncate >= 0 && r->truncate <= l->max_input_tokens);
    check(r->adapter[0] == 0 || !strcmp(r->adapter, "demo/sentiment") || !strcmp(r->adapter, "r8-qv"));
    check(r->api != LQ_API_CHAT || json_is_array(r->messages));
    check(r->inputs || r->prompt_ids || r->messages);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static lq_tokenizer *tok;
    if (!tok) tok = tok_load_json(TOK_JSON, strlen(TOK_JSON), NULL);
    if (!tok || size < 1) return 0;
    lq_gw_limits l = {64, 96, 4, 5, "org/base", "base", ADAPTERS, 2};
    lq_gw_request r;
    lq_gw_error e;
    memset(&e, 0, sizeof e);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    int rc;
    switch (data[0] % 4) {
    case 0: rc = lq_gw_parse_generate(body, len, &l, 0, &r, &e); break;
    case 1: rc = lq_gw_parse_generate(body, len, &l, 1, &r, &e); break;
    case 2: rc = lq_gw_parse_completion(body, len, &l, &r, &e); break;
    default: rc = lq_gw_parse_chat(body, len, &l, &r, &e); break;
    }
    if (rc) {
        check_error(&e);
        return 0;
    }
    check_request(&r, &l);
    /* Chat prompts come from the template; any text stands in for it here. */
    const char *text = r.api == LQ_API_CHAT ? "abc" : r.inputs;
    size_t text_len = r.api == LQ_API_CHAT ? 3 : r.inputs_len;
    int32_t *ids = NULL;
    int n = 0;
    if (lq_gw_prepare_prompt(tok, &l, &r, text, text_len, r.add_special_tokens, &ids, &n, &e)) {
        check_error(&e);
    } else {
        check(n >= 1 && n <= l.max_input_tokens);
        check(r.max_new_tokens >= 1 && n + r.max_new_tokens <= l.max_total_tokens);
        for (int i = 0; i < n; i++) check(ids[i] >= 0 && ids[i] < 7);
    }
    free(ids);
    lq_gw_request_clear(&r);
    return 0;
}
