/* job.h — the msgpack documents of the wire protocol (docs/protocol.md):
 * the job a gateway enqueues, and the token and end events a worker
 * publishes. Both sides use these codecs, so the schema lives in one place.
 *
 * Decoding is strict about what it needs and lenient about the rest: a
 * missing or wrongly typed field is an error that names the field (a worker
 * fails that job with it), unknown keys are ignored (writers may add some).
 * Decoded strings are copies owned by the struct; the *_clear functions free
 * them. Encoders append to an lq_buf. */
#ifndef LORQ_JOB_H
#define LORQ_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define LQ_PROTOCOL_VERSION 1
#define LQ_JOB_ID_MAX 64
#define LQ_ADAPTER_ID_MAX 128
#define LQ_JOB_MAX_STOP 16
#define LQ_JOB_MAX_STOP_LEN 256
#define LQ_JOB_MAX_TOP_N 32

/* A growable byte buffer. */
typedef struct lq_buf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed while encoding */
} lq_buf;

void lq_buf_free(lq_buf *b);

/* Sampling parameters of a job; lq_job_params_default gives TGI's defaults. */
typedef struct lq_job_params {
    int do_sample;
    double temperature, top_p, typical_p, repetition_penalty, frequency_penalty, presence_penalty;
    int top_k;
    int has_seed;
    uint64_t seed;
    char *stop[LQ_JOB_MAX_STOP];
    int n_stop;
    int top_n_tokens;
    int decoder_input_details;
    int ignore_eos;
} lq_job_params;

typedef struct lq_job {
    char *id, *tenant, *adapter; /* adapter "" is the base model */
    int32_t *prompt;
    int n_prompt;
    int max_new_tokens;
    lq_job_params params;
    int64_t deadline_ms, created_ms; /* deadline 0: none */
    int attempt;
} lq_job;

lq_job_params lq_job_params_default(void);
/* Checks ranges (the rules of docs/protocol.md); NULL or a message naming the field. */
const char *lq_job_params_check(const lq_job_params *p);

int lq_job_encode(const lq_job *j, lq_buf *out, lq_error *err);
/* Fills *j (zeroed first). On error *j is cleared and err names the bad field. */
int lq_job_decode(const void *data, size_t len, lq_job *j, lq_error *err);
void lq_job_clear(lq_job *j);

/* Adapter ids: 1–128 bytes of [A-Za-z0-9._/-], not starting with '.' or '/'; "" is the base. */
int lq_adapter_id_valid(const char *s);
/* Job ids: 1–64 bytes of [A-Za-z0-9_-]. */
int lq_job_id_valid(const char *s);

typedef enum lq_event_type { LQ_EVENT_TOKEN = 1, LQ_EVENT_END } lq_event_type;

typedef struct lq_top_token {
    int32_t id;
    float logprob;
    char *text;
} lq_top_token;

typedef struct lq_prefill_token {
    int32_t id;
    int has_logprob; /* the first prompt token has none */
    float logprob;
    char *text;
} lq_prefill_token;

typedef struct lq_event {
    lq_event_type type;
    char *job;
    int index; /* token: its position among generated tokens; end: the count */
    /* token */
    int32_t token;
    char *text; /* token: its piece; end: the whole generated text */
    size_t text_len;
    float logprob;
    int special;
    int last; /* token: 1 the job's end event comes next, 0 more tokens may; -1 not said (field absent) */
    lq_top_token *top;
    int n_top;
    /* end */
    char *finish_reason; /* length, eos_token, stop_sequence, cancelled, error */
    int generated_tokens, prompt_tokens;
    int has_seed;
    uint64_t seed;
    lq_prefill_token *prefill;
    int n_prefill;
    char *error, *error_type; /* NULL unless finish_reason is error */
    char *worker;             /* may be NULL */
    int64_t queue_ms, run_ms; /* -1: absent */
} lq_event;

int lq_event_encode(const lq_event *e, lq_buf *out, lq_error *err);
int lq_event_decode(const void *data, size_t len, lq_event *e, lq_error *err);
void lq_event_clear(lq_event *e);

#endif
