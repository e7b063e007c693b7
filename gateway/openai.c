/* openai.c — OpenAI's routes: POST /v1/completions, POST
 * /v1/chat/completions (streaming and not) and GET /v1/models.
 *
 * `model` picks the adapter (or the base model); the reply names it back.
 * Chat prompts are the model's chat template rendered over the messages
 * (chat.h) and tokenized without the tokenizer's own special tokens, since
 * the template writes them. Streams are OpenAI's: `data: {chunk}` events,
 * a last chunk with finish_reason, a usage chunk when
 * stream_options.include_usage asks for one, then `data: [DONE]`.
 *
 * Text comes from the workers: deltas are the token events' text (special
 * tokens such as EOS skipped), the full text is the end event's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "known.h"
#include "routes.h"
#include "server.h"
#include "session.h"
#include "tgi.h"

typedef struct openai_state {
    long long created;
} openai_state;

/* A logprob, or null when it is not a finite number (JSON has no -inf). */
static json_t *lp_json(float lp) { return isfinite(lp) ? json_real(lp) : json_null(); }

static const char *finish_reason(const lq_event *end) {
    const char *f = end->finish_reason ? end->finish_reason : "length";
    return !strcmp(f, "length") ? "length" : "stop";
}

static int is_chat(const lq_session *s) { return s->rq.api == LQ_API_CHAT; }

static json_t *usage_json(const lq_session *s, int generated) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", s->n_prompt, "completion_tokens", generated, "total_tokens",
                     s->n_prompt + generated);
}

/* The envelope every reply and chunk shares. */
static json_t *envelope(const lq_session *s, const char *object, json_t *choices) {
    const openai_state *st = s->api;
    char id[LQ_JOB_ID_MAX + 16];
    snprintf(id, sizeof id, "%s%s", is_chat(s) ? "chatcmpl-" : "cmpl-", s->id);
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:o}", "id", id, "object", object, "created",
                     (json_int_t)st->created, "model", s->rq.model, "system_fingerprint", "lorq-" LQ_GW_VERSION,
                     "choices", choices);
}

/* ---- logprobs ---- */

static json_t *bytes_json(const char *s) {
    json_t *a = json_array();
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); a && *p; p++)
        json_array_append_new(a, json_integer(*p));
    return a;
}

/* Chat: {"token", "logprob", "bytes", "top_logprobs": [...]} */
static json_t *chat_logprob(const lq_event *t) {
    json_t *top = json_array();
    for (int i = 0; top && i < t->n_top; i++)
        json_array_append_new(top, json_pack("{s:o, s:o, s:o}", "token",
                                             lq_json_string_utf8(t->top[i].text, t->top[i].text ? strlen(t->top[i].text) : 0),
                                             "logprob", lp_json(t->top[i].logprob), "bytes", bytes_json(t->top[i].text)));
    return json_pack("{s:o, s:o, s:o, s:o}", "token", lq_json_string_utf8(t->text, t->text_len), "logprob", lp_json(t->logprob),
                     "bytes", bytes_json(t->text), "top_logprobs", top);
}

static json_t *chat_logprobs(const lq_event *tokens, int n) {
    json_t *content = json_array();
    for (int i = 0; content && i < n; i++)
        if (!tokens[i].special) json_array_append_new(content, chat_logprob(&tokens[i]));
    return json_pack("{s:o}", "content", content);
}

/* Completions (the legacy shape): parallel lists of tokens, logprobs, alternatives, offsets. */
static json_t *completion_logprobs(const lq_event *tokens, int n, size_t offset0) {
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = offset0;
    for (int i = 0; i < n; i++) {
        const lq_event *t = &tokens[i];
        if (t->special) continue;
        json_array_append_new(toks, lq_json_string_utf8(t->text, t->text_len));
        json_array_append_new(lps, lp_json(t->logprob));
        json_t *alt = json_object();
        for (int k = 0; alt && k < t->n_top; k++)
            json_object_set_new(alt, t->top[k].text ? t->top[k].text : "", lp_json(t->top[k].logprob));
        json_array_append_new(tops, alt);
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += t->text_len;
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops, "text_offset",
                     offs);
}

/* ---- non-streaming ---- */

static json_t *completion_text(const lq_session *s, const lq_event *end) {
    if (!s->rq.echo) return lq_json_string_utf8(end->text, end->text_len);
    size_t n = s->rq.inputs_len + end->text_len;
    char *all = malloc(n + 1);
    if (!all) return NULL;
    memcpy(all, s->rq.inputs, s->rq.inputs_len);
    if (end->text_len) memcpy(all + s->rq.inputs_len, end->text, end->text_len);
    json_t *v = lq_json_string_utf8(all, n);
    free(all);
    return v;
}

static json_t *full_reply(lq_session *s, const lq_event *end) {
    json_t *logprobs = s->rq.logprobs ? (is_chat(s) ? chat_logprobs(s->tokens, s->n_tokens)
                                                    : completion_logprobs(s->tokens, s->n_tokens,
                                                                          s->rq.echo ? s->rq.inputs_len : 0))
                                      : json_null();
    json_t *choice;
    if (is_chat(s))
        choice = json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", 0, "message", "role", "assistant", "content",
                           lq_json_string_utf8(end->text, end->text_len), "logprobs", logprobs, "finish_reason", finish_reason(end));
    else
        choice = json_pack("{s:i, s:o, s:o, s:s}", "index", 0, "text", completion_text(s, end), "logprobs", logprobs,
                           "finish_reason", finish_reason(end));
    json_t *r = envelope(s, is_chat(s) ? "chat.completion" : "text_completion", json_pack("[o]", choice));
    if (r) json_object_set_new(r, "usage", usage_json(s, end->generated_tokens));
    return r;
}

static void full_end(lq_session *s, const lq_event *end) {
    lq_gw_error e;
    if (lq_tgi_end_failed(end)) {
        lq_session_end_error(end, &e);
        lq_session_reply_error(s, &e);
        return;
    }
    json_t *body = full_reply(s, end);
    if (!body) {
        lq_gw_fail(&e, 500, "internal", "out of memory");
        lq_session_reply_error(s, &e);
        return;
    }
    lq_session_reply_json(s, 200, body);
}

static void on_failed(lq_session *s, const lq_gw_error *e) { lq_session_reply_error(s, e); }

/* ---- streaming ---- */

static void send_chunk(lq_session *s, json_t *choice, json_t *usage) {
    json_t *chunk = envelope(s, is_chat(s) ? "chat.completion.chunk" : "text_completion",
                             choice ? json_pack("[o]", choice) : json_array());
    if (chunk && usage) json_object_set_new(chunk, "usage", usage);
    else json_decref(usage);
    if (chunk && s->req) lq_sse_send_json(s->req, chunk, 1);
    json_decref(chunk);
}

static json_t *delta_choice(lq_session *s, const char *text, size_t len, const lq_event *t, const char *finish) {
    json_t *logprobs = json_null();
    if (t && s->rq.logprobs)
        logprobs = is_chat(s) ? json_pack("{s:[o]}", "content", chat_logprob(t)) : completion_logprobs(t, 1, 0);
    json_t *fin = finish ? json_string(finish) : json_null();
    if (is_chat(s)) {
        json_t *delta = text ? json_pack("{s:s, s:o}", "role", "assistant", "content", lq_json_string_utf8(text, len)) : json_object();
        return json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "delta", delta, "logprobs", logprobs, "finish_reason", fin);
    }
    return json_pack("{s:i, s:o, s:o, s:o}", "index", 0, "text", lq_json_string_utf8(text ? text : "", text ? len : 0), "logprobs",
                     logprobs, "finish_reason", fin);
}

static void stream_started(lq_session *s) {
    lq_session_start_stream(s);
    if (is_chat(s)) send_chunk(s, delta_choice(s, "", 0, NULL, NULL), NULL); /* the role comes first */
    else if (s->rq.echo) send_chunk(s, delta_choice(s, s->rq.inputs, s->rq.inputs_len, NULL, NULL), NULL);
}

static void stream_token(lq_session *s, const lq_event *t) {
    if (t->special) return; /* EOS and friends are not text */
    send_chunk(s, delta_choice(s, t->text, t->text_len, t, NULL), NULL);
}

static void stream_end(lq_session *s, const lq_event *end) {
    if (lq_tgi_end_failed(end)) {
        lq_gw_error e;
        lq_session_end_error(end, &e);
        lq_session_reply_error(s, &e);
        return;
    }
    send_chunk(s, delta_choice(s, NULL, 0, NULL, finish_reason(end)), NULL);
    if (s->rq.include_usage) send_chunk(s, NULL, usage_json(s, end->generated_tokens));
    if (s->req) lq_sse_send_text(s->req, "[DONE]", 1);
    lq_session_end_stream(s, 200);
}

static void free_state(lq_session *s) { free(s->api); }

static const lq_session_ops FULL_OPS = {NULL, NULL, full_end, on_failed, free_state};
static const lq_session_ops STREAM_OPS = {stream_started, stream_token, stream_end, on_failed, free_state};

/* ---- routes ---- */

static lq_session *open_session(lq_gw *gw, struct evhttp_request *req, const char *route, int chat) {
    lq_session *s = lq_session_new(gw, req, route, &FULL_OPS);
    if (!s) return NULL;
    lq_gw_error e;
    const char *body;
    size_t len;
    openai_state *st = calloc(1, sizeof *st);
    if (!st) {
        lq_gw_fail(&e, 500, "internal", "out of memory");
        lq_session_reject(s, &e);
        return NULL;
    }
    s->api = st;
    st->created = (long long)time(NULL);
    int bad = lq_http_body(gw, req, &body, &len, &e) ||
              (chat ? lq_gw_parse_chat(body, len, &gw->limits, &s->rq, &e)
                    : lq_gw_parse_completion(body, len, &gw->limits, &s->rq, &e));
    if (bad) {
        lq_session_reject(s, &e);
        return NULL;
    }
    s->keep_tokens = s->rq.logprobs && !s->rq.stream;
    if (s->rq.stream) s->ops = &STREAM_OPS;
    return s;
}

void lq_route_completions(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    lq_session *s = open_session(gw, req, "completions", 0);
    if (!s) return;
    lq_session_submit(s, s->rq.inputs, s->rq.inputs_len, s->rq.add_special_tokens);
}

void lq_route_chat(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    lq_session *s = open_session(gw, req, "chat_completions", 1);
    if (!s) return;
    lq_gw_error e;
    if (!gw->chat) {
        lq_gw_fail(&e, 422, "template_error", "this model has no usable chat template: %s", gw->chat_error);
        lq_session_reject(s, &e);
        return;
    }
    lq_error err = {{0}};
    size_t len = 0;
    char *prompt = lq_chat_render(gw->chat, s->rq.messages, NULL, true, &len, &err);
    if (!prompt) {
        lq_gw_fail(&e, 422, "template_error", "%s", err.msg);
        lq_session_reject(s, &e);
        return;
    }
    lq_session_submit(s, prompt, len, 0);
    free(prompt);
}

void lq_route_models(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    json_t *data = json_array();
    json_int_t created = (json_int_t)(gw->started_ms / 1000);
    json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", gw->cfg.model_id, "object", "model", "created",
                                          created, "owned_by", "lorq"));
    json_t *ids = lq_known_ids(gw);
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) {
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", json_string_value(id), "object",
                                              "model", "created", created, "owned_by", "lorq", "parent",
                                              gw->cfg.model_id));
    }
    json_decref(ids);
    lq_http_send_json(req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}
