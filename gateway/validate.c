/* validate.c — TGI's /generate body, the typed field readers every parser
 * shares, adapter names and prompt preparation.
 *
 * The checks follow TGI's router (validation.rs) in order and wording, so a
 * client written against TGI sees the same 422 messages: sampling
 * parameters first, then stop sequences, top_n_tokens, empty inputs and
 * truncate, and the token counts last (they need the tokenizer). What TGI
 * leaves to serde (types, signs) gets a message naming the field's path. */
#include "validate.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "json_kind.h"

/* TGI's ceiling for a default max_new_tokens (DEFAULT_GENERATION_LENGTH). */
#define DEFAULT_GENERATION_LENGTH 1024

int lq_gw_fail(lq_gw_error *e, int status, const char *type, const char *fmt, ...) {
    if (!e) return -1;
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int invalid(lq_gw_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int invalid(lq_gw_error *e, const char *fmt, ...) {
    if (!e) return -1;
    e->status = 422;
    snprintf(e->type, sizeof e->type, "validation");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void lq_gw_request_clear(lq_gw_request *r) {
    free(r->inputs);
    free(r->prompt_ids);
    json_decref(r->messages);
    for (int i = 0; i < r->params.n_stop; i++) free(r->params.stop[i]);
    memset(r, 0, sizeof *r);
}

static void request_init(lq_gw_request *r, lq_gw_api api) {
    memset(r, 0, sizeof *r);
    r->api = api;
    r->params = lq_job_params_default();
    r->add_special_tokens = 1;
}

/* ---- typed fields ---- */

static int wrong_type(lq_gw_field *f, const char *key, const char *expected, const json_t *v) {
    return invalid(f->e, "invalid type for `%s%s`: expected %s, got %s", f->prefix, key, expected, lq_json_kind(v));
}

/* The value of key, NULL when absent or null. */
static json_t *field(lq_gw_field *f, const char *key) {
    json_t *v = f->obj ? json_object_get(f->obj, key) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

int lq_gw_get_bool(lq_gw_field *f, const char *key, int *out) {
    json_t *v = field(f, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return wrong_type(f, key, "a boolean", v);
    *out = json_is_true(v);
    return 1;
}

int lq_gw_get_int(lq_gw_field *f, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = field(f, key);
    if (!v) return 0;
    if (!json_is_integer(v)) return wrong_type(f, key, "an integer", v);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return invalid(f->e, "`%s%s` must be between %lld and %lld. Given: %lld", f->prefix, key, lo, hi, x);
    *out = x;
    return 1;
}

int lq_gw_get_uint64(lq_gw_field *f, const char *key, uint64_t *out) {
    json_t *v = field(f, key);
    if (!v) return 0;
    if (!json_is_integer(v)) return wrong_type(f, key, "a non-negative integer", v);
    long long x = json_integer_value(v);
    if (x < 0) return invalid(f->e, "`%s%s` must be a non-negative integer. Given: %lld", f->prefix, key, x);
    *out = (uint64_t)x;
    return 1;
}

int lq_gw_get_num(lq_gw_field *f, const char *key, double *out) {
    json_t *v = field(f, key);
    if (!v) return 0;
    if (!json_is_number(v)) return wrong_type(f, key, "a number", v);
    double x = json_number_value(v);
    /* TGI reads these as f32: a value that does not fit one is not a value at all. */
    if (!isfinite(x) || fabs(x) > 3.4e38) return invalid(f->e, "`%s%s` is out of range: %g", f->prefix, key, x);
    *out = x;
    return 1;
}

int lq_gw_get_str(lq_gw_field *f, const char *key, const char **out, size_t *len) {
    json_t *v = field(f, key);
    if (!v) return 0;
    if (!json_is_string(v)) return wrong_type(f, key, "a string", v);
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 1;
}

static int add_stop(lq_gw_field *f, const char *key, json_t *s, lq_job_params *p) {
    if (!json_is_string(s)) return wrong_type(f, key, "a list of strings", s);
    size_t n = json_string_length(s);
    if (n == 0) return invalid(f->e, "`%s%s`: a stop sequence must not be empty", f->prefix, key);
    if (n > LQ_JOB_MAX_STOP_LEN)
        return invalid(f->e, "`%s%s`: a stop sequence must be at most %d bytes. Given: %zu", f->prefix, key,
                       LQ_JOB_MAX_STOP_LEN, n);
    if (!(p->stop[p->n_stop] = strdup(json_string_value(s)))) return lq_gw_fail(f->e, 500, "internal", "out of memory");
    p->n_stop++;
    return 0;
}

int lq_gw_get_stop(lq_gw_field *f, const char *key, int allow_string, const lq_gw_limits *lim, lq_job_params *p) {
    json_t *v = field(f, key);
    if (!v) return 0;
    if (allow_string && json_is_string(v)) {
        if (lim->max_stop_sequences < 1)
            return invalid(f->e, "`stop` supports up to %d stop sequences. Given: 1", lim->max_stop_sequences);
        return add_stop(f, key, v, p) ? -1 : 1;
    }
    if (!json_is_array(v)) return wrong_type(f, key, allow_string ? "a string or a list of strings" : "a list of strings", v);
    size_t n = json_array_size(v);
    if (n > (size_t)lim->max_stop_sequences)
        return invalid(f->e, "`stop` supports up to %d stop sequences. Given: %zu", lim->max_stop_sequences, n);
    for (size_t i = 0; i < n; i++)
        if (add_stop(f, key, json_array_get(v, i), p)) return -1;
    return 1;
}

json_t *lq_gw_load_object(const char *body, size_t len, lq_gw_error *e) {
    json_error_t jerr;
    if (e) e->status = 0;
    if (!body || !len) {
        lq_gw_fail(e, 400, "validation", "the request body is empty: a JSON object is expected");
        return NULL;
    }
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        lq_gw_fail(e, 400, "validation", "invalid JSON body: %s at line %d column %d", jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        lq_gw_fail(e, 422, "validation", "the request body must be a JSON object, not %s", lq_json_kind(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ---- adapters ---- */

static int is_base_name(const lq_gw_limits *lim, const char *name) {
    return !name[0] || !strcmp(name, "tgi") || (lim->model_id && !strcmp(name, lim->model_id)) ||
           (lim->model_name && !strcmp(name, lim->model_name));
}

/* "a, b, c" (at most 20 names, then "and N more") into buf. */
static void list_adapters(const lq_gw_limits *lim, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = 0;
    if (!lim->n_adapters) {
        snprintf(buf, size, "none (only the base model is served)");
        return;
    }
    for (int i = 0; i < lim->n_adapters && i < 20 && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? ", " : "", lim->adapters[i]);
    if (lim->n_adapters > 20 && n < size) snprintf(buf + n, size - n, " and %d more", lim->n_adapters - 20);
}

int lq_gw_resolve_adapter(const lq_gw_limits *lim, const char *name, const char *what, char *out, lq_gw_error *e) {
    out[0] = 0;
    if (!name || is_base_name(lim, name)) return 0;
    for (int i = 0; i < lim->n_adapters; i++) {
        if (!strcmp(lim->adapters[i], name)) {
            snprintf(out, LQ_ADAPTER_ID_MAX + 1, "%s", name);
            return 0;
        }
    }
    if (lq_adapter_allowed(lim->allow, name)) { /* the workers load it on first use */
        snprintf(out, LQ_ADAPTER_ID_MAX + 1, "%s", name);
        return 0;
    }
    char known[400];
    list_adapters(lim, known, sizeof known);
    if (lim->allow && lim->allow[0])
        return invalid(e, "%s '%.*s' is not served here: not a known adapter (%s) and not an id matching "
                       "LORQ_ALLOW_ADAPTERS (%.200s) made of owner/name segments", what, 200, name, known, lim->allow);
    return invalid(e, "%s '%.*s' is not served here; known adapters: %s", what, 200, name, known);
}

/* ---- TGI parameters ---- */

/* temperature, repetition_penalty, frequency_penalty, presence_penalty, top_p, typical_p, top_k */
static int read_sampling(lq_gw_field *f, lq_job_params *p, int *warpers) {
    double x;
    long long k;
    int got;
    if ((got = lq_gw_get_num(f, "temperature", &x)) < 0) return -1;
    if (got && x <= 0) return invalid(f->e, "`temperature` must be strictly positive");
    if (got) p->temperature = x, *warpers = 1;
    if ((got = lq_gw_get_num(f, "repetition_penalty", &x)) < 0) return -1;
    if (got && x <= 0) return invalid(f->e, "`repetition_penalty` must be strictly positive");
    if (got) p->repetition_penalty = x;
    if ((got = lq_gw_get_num(f, "frequency_penalty", &x)) < 0) return -1;
    if (got && (x < -2 || x > 2)) return invalid(f->e, "`frequency_penalty` must be >= -2.0 and <= 2.0");
    if (got) p->frequency_penalty = x;
    if ((got = lq_gw_get_num(f, "presence_penalty", &x)) < 0) return -1;
    if (got && (x < -2 || x > 2)) return invalid(f->e, "`presence_penalty` must be >= -2.0 and <= 2.0");
    if (got) p->presence_penalty = x;
    if ((got = lq_gw_get_num(f, "top_p", &x)) < 0) return -1;
    if (got && (x <= 0 || x >= 1)) return invalid(f->e, "`top_p` must be > 0.0 and < 1.0");
    if (got) p->top_p = x, *warpers = 1;
    if ((got = lq_gw_get_num(f, "typical_p", &x)) < 0) return -1;
    if (got && (x <= 0 || x >= 1)) return invalid(f->e, "`typical_p` must be > 0.0 and < 1.0");
    if (got) p->typical_p = x, *warpers = 1;
    if ((got = lq_gw_get_int(f, "top_k", -(1LL << 31), (1LL << 31) - 1, &k)) < 0) return -1;
    if (got && k <= 0) return invalid(f->e, "`top_k` must be strictly positive");
    if (got) p->top_k = (int)k, *warpers = 1;
    return 0;
}

/* best_of, max_new_tokens, stop, seed, top_n_tokens, truncate and the flags. */
static int read_stopping(lq_gw_field *f, const lq_gw_limits *lim, lq_gw_request *r) {
    long long v;
    int got;
    if ((got = lq_gw_get_int(f, "best_of", 0, 1LL << 31, &v)) < 0) return -1;
    if (got && v != 1) return invalid(f->e, "`best_of` != 1 is not allowed for this endpoint");
    if ((got = lq_gw_get_int(f, "max_new_tokens", -(1LL << 32), (1LL << 32) - 1, &v)) < 0) return -1;
    if (got && v <= 0) return invalid(f->e, "`max_new_tokens` must be strictly positive");
    if (got && v > lim->max_total_tokens)
        return invalid(f->e, "`max_new_tokens` must be <= %d. Given: %lld", lim->max_total_tokens, v);
    if (got) r->max_new_tokens = (int)v;
    if (lq_gw_get_stop(f, "stop", 0, lim, &r->params) < 0) return -1;
    uint64_t seed;
    if ((got = lq_gw_get_uint64(f, "seed", &seed)) < 0) return -1;
    if (got) r->params.has_seed = 1, r->params.seed = seed;
    if ((got = lq_gw_get_int(f, "top_n_tokens", 0, (1LL << 32) - 1, &v)) < 0) return -1;
    if (got && v > lim->max_top_n_tokens)
        return invalid(f->e, "`top_n_tokens` must be >= 0 and <= %d. Given: %lld", lim->max_top_n_tokens, v);
    if (got) r->params.top_n_tokens = (int)v;
    return 0;
}

static int read_flags(lq_gw_field *f, lq_gw_request *r) {
    int b, got;
    if (lq_gw_get_bool(f, "details", &r->details) < 0) return -1;
    if (lq_gw_get_bool(f, "decoder_input_details", &r->decoder_input_details) < 0) return -1;
    if (lq_gw_get_bool(f, "return_full_text", &r->return_full_text) < 0) return -1;
    if ((got = lq_gw_get_bool(f, "watermark", &b)) < 0) return -1;
    if (got && b) return invalid(f->e, "`watermark` is not supported by this server");
    if (json_object_get(f->obj, "grammar") && !json_is_null(json_object_get(f->obj, "grammar")))
        return invalid(f->e, "grammar is not supported");
    return 0;
}

static int read_truncate(lq_gw_field *f, const lq_gw_limits *lim, lq_gw_request *r) {
    long long v;
    int got = lq_gw_get_int(f, "truncate", -(1LL << 40), 1LL << 40, &v);
    if (got < 0) return -1;
    if (got && (v <= 0 || v > lim->max_input_tokens))
        return invalid(f->e, "`truncate` must be strictly positive and less than %d. Given: %lld", lim->max_input_tokens,
                       v);
    if (got) r->truncate = (int)v;
    return 0;
}

static int read_parameters(json_t *params, const lq_gw_limits *lim, lq_gw_request *r, lq_gw_error *e) {
    lq_gw_field f = {params, "parameters.", e};
    const char *adapter = NULL;
    int warpers = 0;
    if (lq_gw_get_bool(&f, "do_sample", &r->params.do_sample) < 0) return -1;
    if (read_sampling(&f, &r->params, &warpers) || read_stopping(&f, lim, r) || read_flags(&f, r)) return -1;
    /* As TGI's model server does: any warper turns sampling on. */
    if (warpers) r->params.do_sample = 1;
    if (lq_gw_get_str(&f, "adapter_id", &adapter, NULL) < 0) return -1;
    return lq_gw_resolve_adapter(lim, adapter, "adapter_id", r->adapter, e);
}

static int read_inputs(json_t *root, lq_gw_request *r, lq_gw_error *e) {
    json_t *in = json_object_get(root, "inputs");
    if (!in) return invalid(e, "missing field `inputs`");
    if (!json_is_string(in)) return invalid(e, "invalid type for `inputs`: expected a string, got %s", lq_json_kind(in));
    r->inputs_len = json_string_length(in);
    if (!(r->inputs = malloc(r->inputs_len + 1))) return lq_gw_fail(e, 500, "internal", "out of memory");
    memcpy(r->inputs, json_string_value(in), r->inputs_len + 1);
    return 0;
}

int lq_gw_parse_generate(const char *body, size_t len, const lq_gw_limits *lim, int stream_route, lq_gw_request *r,
                         lq_gw_error *e) {
    request_init(r, LQ_API_GENERATE);
    json_t *root = lq_gw_load_object(body, len, e);
    if (!root) return -1;
    lq_gw_field top = {root, "", e};
    json_t *params = json_object_get(root, "parameters");
    int rc = -1;
    if (params && !json_is_null(params) && !json_is_object(params)) {
        invalid(e, "invalid type for `parameters`: expected an object, got %s", lq_json_kind(params));
        goto out;
    }
    if (lq_gw_get_bool(&top, "stream", &r->stream) < 0) goto out;
    if (stream_route) r->stream = 1;
    if (read_parameters(json_is_object(params) ? params : NULL, lim, r, e)) goto out;
    if (read_inputs(root, r, e)) goto out;
    if (!r->inputs_len) {
        invalid(e, "`inputs` cannot be empty");
        goto out;
    }
    if (read_truncate(&(lq_gw_field){json_is_object(params) ? params : NULL, "parameters.", e}, lim, r)) goto out;
    if (r->stream && r->decoder_input_details) {
        invalid(e, "`decoder_input_details` == true is not supported when streaming tokens");
        goto out;
    }
    r->params.decoder_input_details = r->decoder_input_details;
    rc = 0;
out:
    json_decref(root);
    if (rc) lq_gw_request_clear(r);
    return rc;
}

/* ---- prompt ---- */

static int take_prompt_ids(const lq_tokenizer *tok, lq_gw_request *r, int32_t **ids, size_t *n, lq_gw_error *e) {
    size_t vocab = tok_vocab_size(tok);
    for (int i = 0; i < r->n_prompt_ids; i++)
        if (r->prompt_ids[i] < 0 || (size_t)r->prompt_ids[i] >= vocab)
            return invalid(e, "`prompt` token id %d is not in the vocabulary (0 to %zu)", r->prompt_ids[i], vocab - 1);
    *ids = r->prompt_ids;
    *n = (size_t)r->n_prompt_ids;
    r->prompt_ids = NULL;
    r->n_prompt_ids = 0;
    return 0;
}

/* Keeps the last `truncate` ids, as TGI's left truncation does. */
static void truncate_left(int32_t *ids, size_t *n, int truncate) {
    if (truncate <= 0 || *n <= (size_t)truncate) return;
    memmove(ids, ids + (*n - (size_t)truncate), (size_t)truncate * sizeof *ids);
    *n = (size_t)truncate;
}

static int check_lengths(const lq_gw_limits *lim, lq_gw_request *r, size_t n, lq_gw_error *e) {
    if (n == 0) return invalid(e, "`inputs` cannot be empty");
    long long left = (long long)lim->max_total_tokens - (long long)n;
    if (!r->max_new_tokens) {
        long long dflt = left < DEFAULT_GENERATION_LENGTH ? left : DEFAULT_GENERATION_LENGTH;
        r->max_new_tokens = dflt > 0 ? (int)dflt : 1; /* a too-long prompt fails just below */
    }
    if ((long long)n + r->max_new_tokens > lim->max_total_tokens)
        return invalid(e,
                       "`inputs` tokens + `max_new_tokens` must be <= %d. Given: %zu `inputs` tokens and %d "
                       "`max_new_tokens`",
                       lim->max_total_tokens, n, r->max_new_tokens);
    if (n > (size_t)lim->max_input_tokens)
        return invalid(e, "`inputs` must have less than %d tokens. Given: %zu", lim->max_input_tokens, n);
    return 0;
}

int lq_gw_finish_prompt(const lq_gw_limits *lim, lq_gw_request *r, int32_t *ids, size_t n, int32_t **out, int *n_out,
                        lq_gw_error *e) {
    truncate_left(ids, &n, r->truncate);
    if (check_lengths(lim, r, n, e)) {
        free(ids);
        return -1;
    }
    *out = ids;
    *n_out = (int)n;
    return 0;
}

int lq_gw_prepare_prompt(const lq_tokenizer *tok, const lq_gw_limits *lim, lq_gw_request *r, const char *text,
                         size_t len, int add_special, int32_t **ids, int *n_ids, lq_gw_error *e) {
    int32_t *v = NULL;
    size_t n = 0;
    *ids = NULL;
    *n_ids = 0;
    if (!text && r->prompt_ids) {
        if (take_prompt_ids(tok, r, &v, &n, e)) return -1;
    } else {
        lq_error err = {{0}};
        if (tok_encode(tok, text ? text : "", text ? len : 0, add_special, &v, &n, &err))
            return lq_gw_fail(e, 422, "validation", "tokenizer error %s", err.msg);
    }
    return lq_gw_finish_prompt(lim, r, v, n, ids, n_ids, e);
}
