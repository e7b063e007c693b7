/* tgi.c — TGI's routes: POST /generate, /generate_stream and /, and the
 * response shapes they share with the jobs API (see tgi.h).
 *
 * POST / is TGI's "compat" route: the body's own `stream` picks between the
 * two, and a non-streaming answer is wrapped in a one-element list, as TGI
 * (and the Inference API before it) does. */
#include "tgi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"
#include "server.h"
#include "session.h"

#define HOLD_MS 25

/* ---- JSON pieces ---- */

static json_t *logprob_json(int has, float lp) { return has && isfinite(lp) ? json_real(lp) : json_null(); }

json_t *lq_tgi_token_json(const lq_tokenizer *tok, const lq_event *t) {
    (void)tok;
    return json_pack("{s:i, s:o, s:o, s:b}", "id", (int)t->token, "text", lq_json_string_utf8(t->text, t->text_len), "logprob",
                     logprob_json(1, t->logprob), "special", t->special);
}

static json_t *top_tokens_json(const lq_tokenizer *tok, const lq_event *t) {
    json_t *a = json_array();
    for (int i = 0; a && i < t->n_top; i++) {
        const lq_top_token *x = &t->top[i];
        json_array_append_new(a, json_pack("{s:i, s:o, s:o, s:b}", "id", (int)x->id, "text",
                                           lq_json_string_utf8(x->text, x->text ? strlen(x->text) : 0), "logprob",
                                           logprob_json(1, x->logprob), "special", tok && tok_is_special(tok, x->id)));
    }
    return a;
}

static json_t *prefill_json(const lq_event *end) {
    json_t *a = json_array();
    for (int i = 0; a && i < end->n_prefill; i++) {
        const lq_prefill_token *p = &end->prefill[i];
        json_array_append_new(a, json_pack("{s:i, s:o, s:o}", "id", (int)p->id, "text",
                                           lq_json_string_utf8(p->text, p->text ? strlen(p->text) : 0), "logprob",
                                           logprob_json(p->has_logprob, p->logprob)));
    }
    return a;
}

static json_t *seed_json(const lq_event *end) {
    return end->has_seed ? json_integer((json_int_t)end->seed) : json_null();
}

static json_t *generated_text(const lq_tgi_opts *o, const lq_event *end) {
    size_t n = end->text ? end->text_len : 0;
    if (!o->return_full_text || !o->inputs) return lq_json_string_utf8(end->text, n);
    char *all = malloc(o->inputs_len + n + 1);
    if (!all) return NULL;
    memcpy(all, o->inputs, o->inputs_len);
    if (n) memcpy(all + o->inputs_len, end->text, n);
    json_t *v = lq_json_string_utf8(all, o->inputs_len + n);
    free(all);
    return v;
}

static json_t *details_json(const lq_tokenizer *tok, const lq_tgi_opts *o, const lq_event *tokens, int n,
                            const lq_event *end) {
    json_t *toks = json_array(), *tops = json_array();
    int any_top = 0;
    for (int i = 0; toks && tops && i < n; i++) {
        json_array_append_new(toks, lq_tgi_token_json(tok, &tokens[i]));
        json_array_append_new(tops, top_tokens_json(tok, &tokens[i]));
        any_top |= tokens[i].n_top > 0;
    }
    json_t *d = json_pack("{s:s, s:i, s:o, s:o, s:o}", "finish_reason", end->finish_reason ? end->finish_reason : "length",
                          "generated_tokens", end->generated_tokens, "seed", seed_json(end), "prefill",
                          o->decoder_input_details ? prefill_json(end) : json_array(), "tokens", toks);
    /* TGI leaves top_tokens out when none were asked for. */
    if (d && any_top) json_object_set_new(d, "top_tokens", tops);
    else json_decref(tops);
    return d;
}

json_t *lq_tgi_response(const lq_tokenizer *tok, const lq_tgi_opts *o, const lq_event *tokens, int n_tokens,
                        const lq_event *end) {
    json_t *r = json_pack("{s:o}", "generated_text", generated_text(o, end));
    if (r && o->details) json_object_set_new(r, "details", details_json(tok, o, tokens, n_tokens, end));
    return r;
}

int lq_tgi_end_failed(const lq_event *end) {
    const char *f = end->finish_reason ? end->finish_reason : "";
    return !strcmp(f, "error") || !strcmp(f, "cancelled");
}

/* ---- streams ---- */

static json_t *stream_event(lq_tgi_stream *st, const lq_event *t, const lq_event *end) {
    json_t *ev = json_pack("{s:i, s:o, s:o, s:n, s:n}", "index", t->index + 1, "token", lq_tgi_token_json(st->tok, t),
                           "top_tokens", top_tokens_json(st->tok, t), "generated_text", "details");
    if (ev && end) {
        json_object_set_new(ev, "generated_text", generated_text(&st->opts, end));
        if (st->opts.details)
            json_object_set_new(ev, "details",
                                json_pack("{s:s, s:i, s:o, s:i}", "finish_reason",
                                          end->finish_reason ? end->finish_reason : "length", "generated_tokens",
                                          end->generated_tokens, "seed", seed_json(end), "input_length",
                                          st->opts.n_input ? st->opts.n_input : end->prompt_tokens));
    }
    return ev;
}

static void send_held(lq_tgi_stream *st, const lq_event *end) {
    json_t *ev = stream_event(st, &st->held, end);
    if (ev) st->send(st->arg, ev);
    json_decref(ev);
    st->last_id = st->held.token;
    lq_event_clear(&st->held);
    st->has_held = 0;
    if (st->timer) event_del(st->timer);
}

static void on_hold_timeout(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    lq_tgi_stream *st = arg;
    if (st->has_held) send_held(st, NULL);
}

int lq_tgi_stream_init(lq_tgi_stream *st, struct event_base *base, const lq_tokenizer *tok, const lq_tgi_opts *o,
                       void (*send)(void *arg, const json_t *ev), void *arg) {
    memset(st, 0, sizeof *st);
    st->tok = tok;
    st->opts = *o;
    st->send = send;
    st->arg = arg;
    st->timer = evtimer_new(base, on_hold_timeout, st);
    return st->timer ? 0 : -1;
}

void lq_tgi_stream_token(lq_tgi_stream *st, lq_event *ev) {
    if (st->has_held) send_held(st, NULL);
    int said = ev->last >= 0; /* the worker says whether it is the last */
    int must_be_last = said ? ev->last : ev->special || (st->opts.max_new_tokens && ev->index + 1 >= st->opts.max_new_tokens);
    st->held = *ev;
    memset(ev, 0, sizeof *ev);
    st->has_held = 1;
    if (must_be_last) return; /* the end event follows: wait for it */
    if (said || !st->opts.may_stop) {
        send_held(st, NULL); /* cannot be the last: no reason to wait */
        return;
    }
    struct timeval tv = {0, HOLD_MS * 1000};
    evtimer_add(st->timer, &tv);
}

void lq_tgi_stream_end(lq_tgi_stream *st, const lq_event *end) {
    if (st->has_held) {
        send_held(st, end);
        return;
    }
    /* The end came late (or there was no token): close with an empty special token. */
    lq_event empty = {0};
    empty.type = LQ_EVENT_TOKEN;
    empty.index = end->index > 0 ? end->index - 1 : 0;
    empty.token = st->last_id;
    empty.special = 1;
    empty.text = "";
    json_t *ev = stream_event(st, &empty, end);
    if (ev) st->send(st->arg, ev);
    json_decref(ev);
}

void lq_tgi_stream_flush(lq_tgi_stream *st) {
    if (st->has_held) send_held(st, NULL);
}

void lq_tgi_stream_clear(lq_tgi_stream *st) {
    if (st->timer) event_free(st->timer);
    st->timer = NULL;
    if (st->has_held) lq_event_clear(&st->held);
    st->has_held = 0;
}

/* ---- the routes ---- */

typedef struct tgi_state {
    lq_tgi_stream stream;
    int compat_list; /* POST / without stream: answer [response] */
} tgi_state;

static lq_tgi_opts opts_of(const lq_session *s) {
    lq_tgi_opts o = {s->rq.details,   s->rq.decoder_input_details, s->rq.return_full_text, s->rq.inputs,
                     s->rq.inputs_len, s->n_prompt, s->rq.max_new_tokens, s->rq.params.n_stop > 0};
    return o;
}

static void add_timing_headers(lq_session *s, const lq_event *end) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(s->req);
    char v[32];
    snprintf(v, sizeof v, "%d", s->n_prompt);
    evhttp_add_header(h, "x-prompt-tokens", v);
    snprintf(v, sizeof v, "%d", end->generated_tokens);
    evhttp_add_header(h, "x-generated-tokens", v);
    snprintf(v, sizeof v, "%.0f", (lq_now_s() - s->t_start) * 1000);
    evhttp_add_header(h, "x-total-time", v);
    if (end->queue_ms >= 0) {
        snprintf(v, sizeof v, "%lld", (long long)end->queue_ms);
        evhttp_add_header(h, "x-queue-time", v);
    }
    if (end->run_ms >= 0) {
        snprintf(v, sizeof v, "%lld", (long long)end->run_ms);
        evhttp_add_header(h, "x-inference-time", v);
    }
}

static void generate_end(lq_session *s, const lq_event *end) {
    tgi_state *st = s->api;
    if (lq_tgi_end_failed(end)) {
        lq_gw_error e;
        lq_session_end_error(end, &e);
        lq_session_reply_error(s, &e);
        return;
    }
    lq_tgi_opts o = opts_of(s);
    json_t *body = lq_tgi_response(s->gw->tok, &o, s->tokens, s->n_tokens, end);
    if (body && st->compat_list) body = json_pack("[o]", body);
    if (!body) {
        lq_gw_error e;
        lq_gw_fail(&e, 500, "internal", "out of memory");
        lq_session_reply_error(s, &e);
        return;
    }
    if (s->req) add_timing_headers(s, end);
    lq_session_reply_json(s, 200, body);
}

static void generate_failed(lq_session *s, const lq_gw_error *e) {
    tgi_state *st = s->api;
    if (s->streaming) lq_tgi_stream_flush(&st->stream);
    lq_session_reply_error(s, e);
}

static void send_sse(void *arg, const json_t *ev) {
    lq_session *s = arg;
    if (s->req) lq_sse_send_json(s->req, ev, 0);
}

static void stream_started(lq_session *s) {
    tgi_state *st = s->api;
    /* Known only now that the prompt is tokenized (the default max_new_tokens depends on it). */
    st->stream.opts.n_input = s->n_prompt;
    st->stream.opts.max_new_tokens = s->rq.max_new_tokens;
    lq_session_start_stream(s);
}

static void stream_token(lq_session *s, const lq_event *ev) {
    tgi_state *st = s->api;
    /* The session keeps no tokens for streams, so this event is the relay's to give away. */
    lq_tgi_stream_token(&st->stream, (lq_event *)ev);
}

static void stream_end(lq_session *s, const lq_event *end) {
    tgi_state *st = s->api;
    if (lq_tgi_end_failed(end)) {
        lq_gw_error e;
        lq_session_end_error(end, &e);
        generate_failed(s, &e);
        return;
    }
    lq_tgi_stream_end(&st->stream, end);
    lq_session_end_stream(s, 200);
}

static void free_state(lq_session *s) {
    tgi_state *st = s->api;
    if (!st) return;
    lq_tgi_stream_clear(&st->stream);
    free(st);
}

static const lq_session_ops GENERATE_OPS = {NULL, NULL, generate_end, generate_failed, free_state};
static const lq_session_ops STREAM_OPS = {stream_started, stream_token, stream_end, generate_failed, free_state};

/* stream_route: 1 for /generate_stream, 0 for /generate, -1 for / (the body decides). */
static void handle(lq_gw *gw, struct evhttp_request *req, int stream_route, const char *route) {
    lq_session *s = lq_session_new(gw, req, route, &GENERATE_OPS);
    if (!s) return;
    lq_gw_error e;
    const char *body;
    size_t len;
    tgi_state *st = calloc(1, sizeof *st);
    if (!st) {
        lq_gw_fail(&e, 500, "internal", "out of memory");
        lq_session_reject(s, &e);
        return;
    }
    s->api = st;
    if (lq_http_body(gw, req, &body, &len, &e) ||
        lq_gw_parse_generate(body, len, &gw->limits, stream_route == 1, &s->rq, &e)) {
        lq_session_reject(s, &e);
        return;
    }
    if (s->rq.stream) {
        s->ops = &STREAM_OPS;
        lq_tgi_opts o = opts_of(s);
        if (lq_tgi_stream_init(&st->stream, gw->base, gw->tok, &o, send_sse, s)) {
            lq_gw_fail(&e, 500, "internal", "out of memory");
            lq_session_reject(s, &e);
            return;
        }
    } else {
        s->keep_tokens = s->rq.details;
        st->compat_list = stream_route < 0;
    }
    lq_session_submit(s, s->rq.inputs, s->rq.inputs_len, s->rq.add_special_tokens);
}

void lq_route_generate(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    handle(gw, req, 0, "generate");
}

void lq_route_generate_stream(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    handle(gw, req, 1, "generate_stream");
}

void lq_route_compat(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    handle(gw, req, -1, "compat");
}
