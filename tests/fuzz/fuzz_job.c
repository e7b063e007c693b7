/* fuzz_job.c — libFuzzer target for what a worker or gateway reads off Redis:
 * the first input byte picks the decoder, the rest is its input.
 *
 *   0: a job (stream field `job`)      1: an event (channel, log, result)
 *   2: a REDIS_URL
 *
 * Besides not crashing or leaking, whatever decodes must encode again, and
 * the re-encoded document must decode to the same values (the codecs agree
 * with themselves on every document the fuzzer can reach). A broken invariant
 * aborts, so libFuzzer reports it like a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "redis.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) abort();                                                                                          \
    } while (0)

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static void check_same_job(const lq_job *a, const lq_job *b) {
    CHECK(same_str(a->id, b->id) && same_str(a->tenant, b->tenant) && same_str(a->adapter, b->adapter));
    CHECK(a->n_prompt == b->n_prompt && !memcmp(a->prompt, b->prompt, sizeof *a->prompt * (size_t)a->n_prompt));
    CHECK(a->max_new_tokens == b->max_new_tokens && a->deadline_ms == b->deadline_ms);
    CHECK(a->created_ms == b->created_ms && a->attempt == b->attempt);
    const lq_job_params *p = &a->params, *q = &b->params;
    CHECK(p->do_sample == q->do_sample && p->temperature == q->temperature && p->top_p == q->top_p);
    CHECK(p->typical_p == q->typical_p && p->repetition_penalty == q->repetition_penalty);
    CHECK(p->frequency_penalty == q->frequency_penalty && p->presence_penalty == q->presence_penalty);
    CHECK(p->top_k == q->top_k && p->has_seed == q->has_seed && (!p->has_seed || p->seed == q->seed));
    CHECK(p->n_stop == q->n_stop && p->top_n_tokens == q->top_n_tokens);
    for (int i = 0; i < p->n_stop; i++) CHECK(!strcmp(p->stop[i], q->stop[i]));
    CHECK(p->decoder_input_details == q->decoder_input_details && p->ignore_eos == q->ignore_eos);
}

static void fuzz_job(const uint8_t *data, size_t size) {
    lq_job j, back;
    lq_error err;
    if (lq_job_decode(data, size, &j, &err) != 0) return;
    lq_buf buf = {0};
    CHECK(lq_job_encode(&j, &buf, &err) == 0);
    CHECK(lq_job_decode(buf.data, buf.len, &back, &err) == 0);
    check_same_job(&j, &back);
    lq_job_clear(&back);
    lq_job_clear(&j);
    lq_buf_free(&buf);
}

static void check_same_event(const lq_event *a, const lq_event *b) {
    CHECK(a->type == b->type && same_str(a->job, b->job) && a->index == b->index);
    CHECK(a->text_len == b->text_len && !memcmp(a->text, b->text, a->text_len));
    if (a->type == LQ_EVENT_TOKEN) {
        CHECK(a->token == b->token && a->special == b->special && a->last == b->last && a->n_top == b->n_top);
        for (int i = 0; i < a->n_top; i++) CHECK(a->top[i].id == b->top[i].id && same_str(a->top[i].text, b->top[i].text));
    } else {
        CHECK(same_str(a->finish_reason, b->finish_reason) && same_str(a->worker, b->worker));
        CHECK(a->generated_tokens == b->generated_tokens && a->prompt_tokens == b->prompt_tokens);
        CHECK(a->n_prefill == b->n_prefill && a->queue_ms == b->queue_ms && a->run_ms == b->run_ms);
        if (a->error) CHECK(same_str(a->error, b->error));
    }
}

static void fuzz_event(const uint8_t *data, size_t size) {
    lq_event e, back;
    lq_error err;
    if (lq_event_decode(data, size, &e, &err) != 0) return;
    lq_buf buf = {0};
    CHECK(lq_event_encode(&e, &buf, &err) == 0);
    CHECK(lq_event_decode(buf.data, buf.len, &back, &err) == 0);
    check_same_event(&e, &back);
    lq_event_clear(&back);
    lq_event_clear(&e);
    lq_buf_free(&buf);
}

static void fuzz_url(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return;
    memcpy(s, data, size);
    s[size] = 0;
    lq_redis_url u;
    lq_error err;
    if (lq_redis_url_parse(s, &u, &err) == 0) {
        CHECK(u.path[0] || (u.host[0] && u.port > 0 && u.port < 65536));
        CHECK(u.db >= 0);
    } else {
        CHECK(err.msg[0] != 0);
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    switch (data[0] % 3) {
    case 0: fuzz_job(data + 1, size - 1); break;
    case 1: fuzz_event(data + 1, size - 1); break;
    default: fuzz_url(data + 1, size - 1); break;
    }
    return 0;
}
