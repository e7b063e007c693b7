/* validate.h — request bodies into checked generation requests.
 *
 * Three front doors lead to one lq_gw_request: TGI's /generate body
 * ({"inputs", "parameters", "stream"}), OpenAI's /v1/completions and
 * /v1/chat/completions. Parsing is strict in the way TGI is: a wrongly typed
 * field is a 422 naming it, a value out of range is a 422 with TGI's own
 * message ("`temperature` must be strictly positive"), bad JSON or UTF-8 is a
 * 400; unknown fields are ignored, null means "not given". Nothing here
 * touches the network, so the unit tests and the fuzzer call it directly.
 *
 * lq_gw_prepare_prompt then tokenizes the prompt, applies `truncate` (keeping
 * the last tokens, as TGI does) and checks the token limits. */
#ifndef LORQ_GW_VALIDATE_H
#define LORQ_GW_VALIDATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "tokenizer.h"

/* An HTTP error for the client: status, TGI's error_type and a message. */
typedef struct lq_gw_error {
    int status;
    char type[32];
    char msg[768];
} lq_gw_error;

/* Fills e and returns -1. */
int lq_gw_fail(lq_gw_error *e, int status, const char *type, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

typedef struct lq_gw_limits {
    int max_input_tokens, max_total_tokens, max_stop_sequences, max_top_n_tokens;
    const char *model_id;   /* names that mean the base model (besides none): MODEL_ID */
    const char *model_name; /* ... and the model folder's name; may be NULL */
    char *const *adapters;  /* the adapter ids served */
    int n_adapters;
    const char *allow;      /* LORQ_ALLOW_ADAPTERS globs (lq_adapter_allowed); NULL or "": none */
} lq_gw_limits;

typedef enum lq_gw_api { LQ_API_GENERATE, LQ_API_COMPLETIONS, LQ_API_CHAT } lq_gw_api;

typedef struct lq_gw_request {
    lq_gw_api api;
    char *inputs; /* the prompt text (TGI inputs, OpenAI prompt); NULL for chat or token-id prompts */
    size_t inputs_len;
    int32_t *prompt_ids; /* completions: a prompt given as token ids */
    int n_prompt_ids;
    json_t *messages; /* chat: the messages, content flattened to strings (owned reference) */
    char adapter[LQ_ADAPTER_ID_MAX + 1]; /* "" is the base model */
    char model[LQ_ADAPTER_ID_MAX + 1];   /* OpenAI: the `model` as the reply names it */
    lq_job_params params;
    int max_new_tokens; /* 0: not given (lq_gw_prepare_prompt fills the default) */
    int truncate;       /* 0: not given */
    int details, decoder_input_details, return_full_text, stream;
    int include_usage; /* OpenAI stream_options.include_usage */
    int logprobs;      /* OpenAI: report token logprobs */
    int echo;          /* completions: the prompt precedes the completion */
    int add_special_tokens;
} lq_gw_request;

void lq_gw_request_clear(lq_gw_request *r);

/* TGI's POST /generate, /generate_stream and / bodies. stream_route: the
 * route streams (/generate_stream), which refuses decoder_input_details;
 * for POST / the body's own "stream" decides, read into r->stream. */
int lq_gw_parse_generate(const char *body, size_t len, const lq_gw_limits *lim, int stream_route, lq_gw_request *r,
                         lq_gw_error *e);

/* OpenAI's POST /v1/completions and /v1/chat/completions bodies. */
int lq_gw_parse_completion(const char *body, size_t len, const lq_gw_limits *lim, lq_gw_request *r, lq_gw_error *e);
int lq_gw_parse_chat(const char *body, size_t len, const lq_gw_limits *lim, lq_gw_request *r, lq_gw_error *e);

/* The adapter a request names: NULL, "", MODEL_ID or the model folder's
 * name mean the base model (out = ""); anything else must be served, or the
 * 422 lists the adapters that are. what names the field ("adapter_id",
 * "model") in the message. */
int lq_gw_resolve_adapter(const lq_gw_limits *lim, const char *name, const char *what, char *out, lq_gw_error *e);

/* Token ids of the prompt: text[0..len) tokenized (add_special: the
 * tokenizer's post-processor, e.g. BOS), or r->prompt_ids when text is NULL;
 * truncated to the last r->truncate tokens; checked against the limits;
 * r->max_new_tokens defaulted to what is left of MAX_TOTAL_TOKENS (at most
 * 1024, as TGI). *ids is malloc'd. */
int lq_gw_prepare_prompt(const lq_tokenizer *tok, const lq_gw_limits *lim, lq_gw_request *r, const char *text,
                         size_t len, int add_special, int32_t **ids, int *n_ids, lq_gw_error *e);

/* The second half of lq_gw_prepare_prompt, for ids tokenized elsewhere (a
 * tokenizer thread): truncate, check, default max_new_tokens. Takes ids
 * (freed on error). */
int lq_gw_finish_prompt(const lq_gw_limits *lim, lq_gw_request *r, int32_t *ids, size_t n, int32_t **out, int *n_out,
                        lq_gw_error *e);

/* Internal to validate*.c: typed field readers that fill e with a message
 * naming the field's path ("parameters.top_k"). Each returns 1 when the
 * field is present (not null), 0 when absent, -1 on a type error. */
typedef struct lq_gw_field {
    json_t *obj;
    const char *prefix; /* "parameters." or "" */
    lq_gw_error *e;
} lq_gw_field;
int lq_gw_get_bool(lq_gw_field *f, const char *key, int *out);
int lq_gw_get_int(lq_gw_field *f, const char *key, long long lo, long long hi, long long *out);
int lq_gw_get_uint64(lq_gw_field *f, const char *key, uint64_t *out);
int lq_gw_get_num(lq_gw_field *f, const char *key, double *out);
int lq_gw_get_str(lq_gw_field *f, const char *key, const char **out, size_t *len);
/* A stop list: an array of strings, or (allow_string) one string. */
int lq_gw_get_stop(lq_gw_field *f, const char *key, int allow_string, const lq_gw_limits *lim, lq_job_params *p);
/* Parses a JSON object body: 400 for bad JSON or UTF-8, 422 for a non-object. */
json_t *lq_gw_load_object(const char *body, size_t len, lq_gw_error *e);

#endif
