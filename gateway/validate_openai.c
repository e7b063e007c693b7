/* validate_openai.c — OpenAI's /v1/completions and /v1/chat/completions
 * bodies into an lq_gw_request.
 *
 * OpenAI's semantics where they differ from TGI's: temperature 0 means
 * greedy and is allowed (anything above samples, and so does an absent
 * temperature, as OpenAI and TGI's own OpenAI routes do), top_p may be 1,
 * `stop` may be a single string, `model` names the adapter. Features lorq
 * does not have (n > 1, tools, logit_bias, suffix, images) are a 422 that
 * says so rather than being silently ignored. */
#include <stdlib.h>
#include <string.h>

#include "validate.h"

#define OPENAI_MAX_TEMPERATURE 2.0
#define COMPLETIONS_DEFAULT_MAX_TOKENS 16

static int invalid(lq_gw_error *e, const char *msg) { return lq_gw_fail(e, 422, "validation", "%s", msg); }

static int present(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v);
}

/* model: an adapter id, the base model's names, or absent (the base). */
static int read_model(lq_gw_field *f, const lq_gw_limits *lim, lq_gw_request *r) {
    const char *model = NULL;
    if (lq_gw_get_str(f, "model", &model, NULL) < 0) return -1;
    if (lq_gw_resolve_adapter(lim, model, "model", r->adapter, f->e)) return -1;
    snprintf(r->model, sizeof r->model, "%s", r->adapter[0] ? r->adapter : lim->model_id ? lim->model_id : "");
    return 0;
}

/* temperature, top_p, penalties, seed, n, stop, stream: the fields both routes share. */
static int read_common(lq_gw_field *f, const lq_gw_limits *lim, lq_gw_request *r) {
    double x;
    long long v;
    int got;
    r->params.do_sample = 1; /* OpenAI samples unless temperature is 0 */
    if ((got = lq_gw_get_num(f, "temperature", &x)) < 0) return -1;
    if (got && (x < 0 || x > OPENAI_MAX_TEMPERATURE)) return invalid(f->e, "`temperature` must be >= 0.0 and <= 2.0");
    if (got && x == 0) r->params.do_sample = 0;
    else if (got) r->params.temperature = x;
    if ((got = lq_gw_get_num(f, "top_p", &x)) < 0) return -1;
    if (got && (x <= 0 || x > 1)) return invalid(f->e, "`top_p` must be > 0.0 and <= 1.0");
    if (got) r->params.top_p = x;
    if ((got = lq_gw_get_num(f, "frequency_penalty", &x)) < 0) return -1;
    if (got && (x < -2 || x > 2)) return invalid(f->e, "`frequency_penalty` must be >= -2.0 and <= 2.0");
    if (got) r->params.frequency_penalty = x;
    if ((got = lq_gw_get_num(f, "presence_penalty", &x)) < 0) return -1;
    if (got && (x < -2 || x > 2)) return invalid(f->e, "`presence_penalty` must be >= -2.0 and <= 2.0");
    if (got) r->params.presence_penalty = x;
    uint64_t seed;
    if ((got = lq_gw_get_uint64(f, "seed", &seed)) < 0) return -1;
    if (got) r->params.has_seed = 1, r->params.seed = seed;
    if ((got = lq_gw_get_int(f, "n", -(1LL << 31), 1LL << 31, &v)) < 0) return -1;
    if (got && v != 1) return invalid(f->e, "`n` must be 1: one choice per request is supported");
    if ((got = lq_gw_get_int(f, "best_of", -(1LL << 31), 1LL << 31, &v)) < 0) return -1;
    if (got && v != 1) return invalid(f->e, "`best_of` != 1 is not allowed for this endpoint");
    if (lq_gw_get_stop(f, "stop", 1, lim, &r->params) < 0) return -1;
    if (lq_gw_get_bool(f, "stream", &r->stream) < 0) return -1;
    json_t *so = json_object_get(f->obj, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return invalid(f->e, "invalid type for `stream_options`: expected an object");
        lq_gw_field sf = {so, "stream_options.", f->e};
        if (lq_gw_get_bool(&sf, "include_usage", &r->include_usage) < 0) return -1;
    }
    json_t *bias = json_object_get(f->obj, "logit_bias");
    if (bias && !json_is_null(bias) && !(json_is_object(bias) && json_object_size(bias) == 0))
        return invalid(f->e, "`logit_bias` is not supported by this server");
    return 0;
}

static int read_max_tokens(lq_gw_field *f, const char *key, lq_gw_request *r) {
    long long v;
    int got = lq_gw_get_int(f, key, -(1LL << 32), 1LL << 32, &v);
    if (got < 0) return -1;
    if (got && v <= 0) return lq_gw_fail(f->e, 422, "validation", "`%s` must be strictly positive", key);
    if (got) r->max_new_tokens = v > (1 << 30) ? (1 << 30) : (int)v;
    return got;
}

/* ---- completions ---- */

static int take_text_prompt(json_t *s, lq_gw_request *r, lq_gw_error *e) {
    r->inputs_len = json_string_length(s);
    if (!(r->inputs = malloc(r->inputs_len + 1))) return lq_gw_fail(e, 500, "internal", "out of memory");
    memcpy(r->inputs, json_string_value(s), r->inputs_len + 1);
    if (!r->inputs_len) return invalid(e, "`prompt` cannot be empty");
    return 0;
}

static int take_id_prompt(json_t *a, lq_gw_request *r, lq_gw_error *e) {
    size_t n = json_array_size(a);
    if (!n) return invalid(e, "`prompt` cannot be empty");
    if (n > (1u << 24)) return invalid(e, "`prompt` has too many token ids");
    if (!(r->prompt_ids = malloc(n * sizeof *r->prompt_ids))) return lq_gw_fail(e, 500, "internal", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *id = json_array_get(a, i);
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX)
            return invalid(e, "`prompt` must be a string, a list of one string, or a list of token ids");
        r->prompt_ids[i] = (int32_t)json_integer_value(id);
    }
    r->n_prompt_ids = (int)n;
    return 0;
}

/* prompt: "text", ["text"], [ids...] or [[ids...]]; several prompts are refused. */
static int read_prompt(json_t *root, lq_gw_request *r, lq_gw_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (!p || json_is_null(p)) return invalid(e, "missing field `prompt`");
    if (json_is_string(p)) return take_text_prompt(p, r, e);
    if (!json_is_array(p)) return invalid(e, "`prompt` must be a string, a list of one string, or a list of token ids");
    json_t *first = json_array_get(p, 0);
    if (first && (json_is_string(first) || json_is_array(first))) {
        if (json_array_size(p) != 1) return invalid(e, "`prompt`: one prompt per request is supported");
        return json_is_string(first) ? take_text_prompt(first, r, e) : take_id_prompt(first, r, e);
    }
    return take_id_prompt(p, r, e);
}

static int read_completion_extras(lq_gw_field *f, const lq_gw_limits *lim, lq_gw_request *r) {
    long long v;
    int got;
    if (present(f->obj, "suffix")) return invalid(f->e, "`suffix` is not supported by this server");
    if ((got = lq_gw_get_int(f, "logprobs", 0, 1LL << 31, &v)) < 0) return -1;
    if (got && v > lim->max_top_n_tokens)
        return lq_gw_fail(f->e, 422, "validation", "`logprobs` must be >= 0 and <= %d. Given: %lld",
                          lim->max_top_n_tokens, v);
    if (got) r->logprobs = 1, r->params.top_n_tokens = (int)v;
    if (lq_gw_get_bool(f, "echo", &r->echo) < 0) return -1;
    if (read_max_tokens(f, "max_tokens", r) < 0) return -1;
    if (!r->max_new_tokens) r->max_new_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS;
    return 0;
}

int lq_gw_parse_completion(const char *body, size_t len, const lq_gw_limits *lim, lq_gw_request *r, lq_gw_error *e) {
    memset(r, 0, sizeof *r);
    r->api = LQ_API_COMPLETIONS;
    r->params = lq_job_params_default();
    r->add_special_tokens = 1;
    json_t *root = lq_gw_load_object(body, len, e);
    if (!root) return -1;
    lq_gw_field f = {root, "", e};
    int rc = -1;
    if (read_model(&f, lim, r) || read_common(&f, lim, r) || read_completion_extras(&f, lim, r)) goto out;
    if (read_prompt(root, r, e)) goto out;
    if (r->echo && !r->inputs) {
        invalid(e, "`echo` needs a text prompt");
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc) lq_gw_request_clear(r);
    return rc;
}

/* ---- chat ---- */

/* A message's content as one string: a string, or a list of text parts joined. */
static json_t *flatten_content(json_t *content, size_t i, lq_gw_error *e) {
    if (!content || json_is_null(content)) return json_string("");
    if (json_is_string(content)) return json_incref(content);
    if (!json_is_array(content)) {
        lq_gw_fail(e, 422, "validation", "`messages[%zu].content` must be a string or a list of parts", i);
        return NULL;
    }
    size_t total = 0, n = json_array_size(content);
    for (size_t k = 0; k < n; k++) {
        json_t *part = json_array_get(content, k), *text = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !type || strcmp(type, "text") || !json_is_string(text)) {
            lq_gw_fail(e, 422, "validation",
                       "`messages[%zu].content[%zu]`: only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                       i, k);
            return NULL;
        }
        total += json_string_length(text);
    }
    char *buf = malloc(total + 1);
    if (!buf) return NULL;
    size_t off = 0;
    for (size_t k = 0; k < n; k++) {
        json_t *text = json_object_get(json_array_get(content, k), "text");
        memcpy(buf + off, json_string_value(text), json_string_length(text));
        off += json_string_length(text);
    }
    json_t *s = json_stringn_nocheck(buf, off);
    free(buf);
    return s;
}

/* A copy of one message with its content flattened; other keys (name, tool_calls) kept. */
static json_t *normalize_message(json_t *m, size_t i, lq_gw_error *e) {
    if (!json_is_object(m)) {
        lq_gw_fail(e, 422, "validation", "`messages[%zu]` must be an object with `role` and `content`", i);
        return NULL;
    }
    if (!json_is_string(json_object_get(m, "role"))) {
        lq_gw_fail(e, 422, "validation", "`messages[%zu].role` must be a string", i);
        return NULL;
    }
    json_t *content = flatten_content(json_object_get(m, "content"), i, e);
    if (!content) return NULL;
    json_t *copy = json_copy(m);
    if (!copy) {
        json_decref(content);
        return NULL;
    }
    json_object_set_new(copy, "content", content);
    return copy;
}

static int read_messages(json_t *root, lq_gw_request *r, lq_gw_error *e) {
    json_t *msgs = json_object_get(root, "messages");
    if (!msgs || json_is_null(msgs)) return invalid(e, "missing field `messages`");
    if (!json_is_array(msgs) || !json_array_size(msgs)) return invalid(e, "`messages` must be a non-empty list");
    if (!(r->messages = json_array())) return lq_gw_fail(e, 500, "internal", "out of memory");
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = normalize_message(json_array_get(msgs, i), i, e);
        if (!m) return e->status ? -1 : lq_gw_fail(e, 500, "internal", "out of memory");
        json_array_append_new(r->messages, m);
    }
    return 0;
}

static int read_chat_extras(lq_gw_field *f, const lq_gw_limits *lim, lq_gw_request *r) {
    long long v;
    int got;
    static const char *const unsupported[] = {"tools", "tool_choice", "functions", "function_call"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++)
        if (present(f->obj, unsupported[i]))
            return lq_gw_fail(f->e, 422, "validation", "`%s` is not supported by this server", unsupported[i]);
    json_t *rf = json_object_get(f->obj, "response_format");
    if (rf && !json_is_null(rf) &&
        !(json_is_object(rf) && json_string_value(json_object_get(rf, "type")) &&
          !strcmp(json_string_value(json_object_get(rf, "type")), "text")))
        return invalid(f->e, "`response_format` other than {\"type\": \"text\"} is not supported by this server");
    if (lq_gw_get_bool(f, "logprobs", &r->logprobs) < 0) return -1;
    if ((got = lq_gw_get_int(f, "top_logprobs", 0, 1LL << 31, &v)) < 0) return -1;
    if (got && v > lim->max_top_n_tokens)
        return lq_gw_fail(f->e, 422, "validation", "`top_logprobs` must be >= 0 and <= %d. Given: %lld",
                          lim->max_top_n_tokens, v);
    if (got && v > 0 && !r->logprobs) return invalid(f->e, "`top_logprobs` needs `logprobs` set to true");
    if (got) r->params.top_n_tokens = (int)v;
    if ((got = read_max_tokens(f, "max_completion_tokens", r)) < 0) return -1;
    if (!got && read_max_tokens(f, "max_tokens", r) < 0) return -1;
    return 0;
}

int lq_gw_parse_chat(const char *body, size_t len, const lq_gw_limits *lim, lq_gw_request *r, lq_gw_error *e) {
    memset(r, 0, sizeof *r);
    r->api = LQ_API_CHAT;
    r->params = lq_job_params_default();
    /* The rendered template carries its own special tokens (BOS and all). */
    r->add_special_tokens = 0;
    json_t *root = lq_gw_load_object(body, len, e);
    if (!root) return -1;
    lq_gw_field f = {root, "", e};
    int rc = -1;
    if (read_model(&f, lim, r) || read_common(&f, lim, r) || read_chat_extras(&f, lim, r)) goto out;
    if (read_messages(root, r, e)) goto out;
    rc = 0;
out:
    json_decref(root);
    if (rc) lq_gw_request_clear(r);
    return rc;
}
