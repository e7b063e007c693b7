/* jobs.c — asynchronous jobs: POST /v1/jobs, GET /v1/jobs/{id},
 * GET /v1/jobs/{id}/stream, DELETE /v1/jobs/{id}.
 *
 * A job is submitted with a /generate body and answered at once (202, its
 * id, a Location). Its record and event log in Redis are the whole state:
 * any gateway can answer for any job, a restart loses nothing, and results
 * stay for RESULT_TTL after the job ends. The record's `request` field
 * remembers how the submitter wanted the answer shaped (details,
 * return_full_text), so GET gives exactly the body /generate would have.
 *
 * GET .../stream replays the log and then follows the job live, in TGI's
 * SSE shape; leaving a job stream does not cancel the job (that is what
 * DELETE is for). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"
#include "routes.h"
#include "server.h"
#include "session.h"
#include "tgi.h"

/* ---- the answer options a job's record remembers ---- */

typedef struct job_opts {
    lq_tgi_opts tgi;
    json_t *json; /* owns tgi.inputs */
} job_opts;

static void opts_read(job_opts *o, const char *request) {
    memset(o, 0, sizeof *o);
    o->tgi.may_stop = 1; /* a job from elsewhere (lorq submit) may end anyhow */
    o->json = request ? json_loads(request, 0, NULL) : NULL;
    if (!json_is_object(o->json)) return;
    o->tgi.details = json_is_true(json_object_get(o->json, "details"));
    o->tgi.decoder_input_details = json_is_true(json_object_get(o->json, "decoder_input_details"));
    o->tgi.return_full_text = json_is_true(json_object_get(o->json, "return_full_text"));
    json_t *mnt = json_object_get(o->json, "max_new_tokens"), *stop = json_object_get(o->json, "stop");
    o->tgi.max_new_tokens = json_is_integer(mnt) ? (int)json_integer_value(mnt) : 0;
    o->tgi.may_stop = json_is_boolean(stop) ? json_is_true(stop) : 1;
    json_t *in = json_object_get(o->json, "inputs");
    if (json_is_string(in)) o->tgi.inputs = json_string_value(in), o->tgi.inputs_len = json_string_length(in);
}

static void opts_clear(job_opts *o) { json_decref(o->json); }

static void send_location(struct evhttp_request *req, const char *id) {
    char loc[LQ_JOB_ID_MAX + 16];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", id);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Location", loc);
}

/* ---- POST /v1/jobs ---- */

/* One submission from the body to the 202: the request is parsed, its prompt
 * tokenized (on a tokenizer thread when long), the job encoded and enqueued. */
typedef struct create_req {
    lq_gw *gw;
    struct evhttp_request *req;
    lq_gw_request rq;
    char id[LQ_JOB_ID_MAX + 1];
} create_req;

static void create_free(create_req *c) {
    lq_gw_request_clear(&c->rq);
    free(c);
}

static void create_fail(create_req *c, const lq_gw_error *e) {
    lq_http_send_error(c->req, e);
    create_free(c);
}

static void on_created(redisReply *reply, void *priv) {
    create_req *c = priv;
    const char *word = reply && reply->type == REDIS_REPLY_ARRAY ? lq_reply_word(reply) : NULL;
    if (!reply) {
        lq_http_error(c->req, 503, "unavailable", "lost the connection to Redis; the job may not have been queued");
    } else if (word && !strcmp(word, "ok")) {
        send_location(c->req, c->id);
        lq_http_send_json(c->req, 202,
                          json_pack("{s:s, s:s, s:s}", "id", c->id, "status", "queued", "adapter_id", c->rq.adapter));
    } else if (word && !strcmp(word, "full")) {
        char msg[200];
        snprintf(msg, sizeof msg, "Model is overloaded: the queue is full (%lld jobs waiting)", lq_reply_int(reply, 1));
        lq_http_error(c->req, 429, "overloaded", msg);
    } else {
        lq_http_error(c->req, 500, "internal", reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected enqueue reply");
    }
    create_free(c);
}

/* Encodes and enqueues; the answer comes in on_created. Takes ids. */
static void enqueue_job(create_req *c, int32_t *ids, int n) {
    lq_gw *gw = c->gw;
    lq_gw_request *rq = &c->rq;
    int64_t now = lq_time_ms();
    lq_job job = {0};
    lq_buf buf = {0};
    lq_error err = {{0}};
    lq_gw_error e;
    char *meta = lq_session_request_meta(rq);
    lq_gw_new_job_id(now, c->id);
    job.id = c->id;
    job.tenant = "";
    job.adapter = rq->adapter;
    job.prompt = ids;
    job.n_prompt = n;
    job.max_new_tokens = rq->max_new_tokens;
    job.params = rq->params;
    job.created_ms = now;
    job.deadline_ms = gw->cfg.request_timeout_s ? now + gw->cfg.request_timeout_s * 1000LL : 0;
    if (!meta) {
        lq_gw_fail(&e, 500, "internal", "out of memory");
        create_fail(c, &e);
    } else if (lq_job_encode(&job, &buf, &err)) {
        lq_gw_fail(&e, 500, "internal", "cannot encode the job: %s", err.msg);
        create_fail(c, &e);
    } else {
        lq_relay_job rj = {c->id, rq->adapter, "", buf.data, buf.len, meta, job.deadline_ms};
        if (lq_job_enqueue(gw, &rj, on_created, c)) {
            lq_gw_fail(&e, 503, "unavailable", "Redis is unreachable; try again shortly");
            create_fail(c, &e);
        }
    }
    free(ids);
    free(meta);
    lq_buf_free(&buf);
}

static void on_job_tokenized(void *arg, int32_t *raw, size_t n_raw, const char *error) {
    create_req *c = arg;
    lq_gw_error e;
    int32_t *ids;
    int n;
    if (error) {
        lq_gw_fail(&e, 422, "validation", "tokenizer error %s", error);
        create_fail(c, &e);
    } else if (lq_gw_finish_prompt(&c->gw->limits, &c->rq, raw, n_raw, &ids, &n, &e)) {
        create_fail(c, &e);
    } else {
        enqueue_job(c, ids, n);
    }
}

void lq_route_job_create(lq_gw *gw, struct evhttp_request *req, const char *arg) {
    (void)arg;
    lq_gw_error e;
    const char *body;
    size_t len;
    create_req *c = calloc(1, sizeof *c);
    if (!c) {
        lq_http_error(req, 500, "internal", "out of memory");
        return;
    }
    c->gw = gw;
    c->req = req; /* a non-streaming request: evhttp keeps it until it is answered */
    if (lq_http_body(gw, req, &body, &len, &e) || lq_gw_parse_generate(body, len, &gw->limits, 0, &c->rq, &e)) {
        create_fail(c, &e);
        return;
    }
    lq_gw_request *rq = &c->rq;
    if (rq->inputs_len >= LQ_TOKPOOL_MIN_BYTES && gw->tokpool &&
        lq_tokpool_encode(gw->tokpool, rq->inputs, rq->inputs_len, rq->add_special_tokens, on_job_tokenized, c) == 0)
        return;
    int32_t *ids;
    int n;
    if (lq_gw_prepare_prompt(gw->tok, &gw->limits, rq, rq->inputs, rq->inputs_len, rq->add_special_tokens, &ids, &n, &e))
        create_fail(c, &e);
    else
        enqueue_job(c, ids, n);
}

/* ---- GET /v1/jobs/{id} ---- */

typedef struct get_req {
    lq_gw *gw;
    struct evhttp_request *req;
    char id[LQ_JOB_ID_MAX + 1];
    char k_log[LQ_KEY_MAX];
    json_t *out; /* the reply being built */
    char *request;
    int over;
} get_req;

static void get_free(get_req *g) {
    json_decref(g->out);
    free(g->request);
    free(g);
}

/* The job's events: tokens into a list, the end event (last) apart. */
static int read_log(const redisReply *reply, lq_event **tokens, int *n, lq_event *end) {
    *tokens = calloc(reply->elements ? reply->elements : 1, sizeof **tokens);
    *n = 0;
    if (!*tokens) return -1;
    int have_end = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *el = reply->element[i];
        lq_event ev;
        if (el->type != REDIS_REPLY_STRING || lq_event_decode(el->str, el->len, &ev, NULL)) continue;
        if (ev.type == LQ_EVENT_TOKEN && !have_end) (*tokens)[(*n)++] = ev;
        else if (ev.type == LQ_EVENT_END && !have_end) *end = ev, have_end = 1;
        else lq_event_clear(&ev);
    }
    return have_end ? 0 : -1;
}

static void add_outcome(get_req *g, const lq_event *tokens, int n, const lq_event *end) {
    if (!lq_tgi_end_failed(end)) {
        job_opts o;
        opts_read(&o, g->request);
        json_object_set_new(g->out, "result", lq_tgi_response(g->gw->tok, &o.tgi, tokens, n, end));
        opts_clear(&o);
        return;
    }
    int cancelled = end->finish_reason && !strcmp(end->finish_reason, "cancelled");
    json_object_set_new(g->out, "error",
                        json_pack("{s:s, s:s}", "error", cancelled ? "the job was cancelled" : end->error ? end->error : "",
                                  "error_type", cancelled ? "cancelled" : end->error_type ? end->error_type : "internal"));
    json_object_set_new(g->out, "generated_text", json_stringn(end->text ? end->text : "", end->text ? end->text_len : 0));
}

static void on_log(redisReply *reply, void *priv) {
    get_req *g = priv;
    if (!reply) {
        lq_http_error(g->req, 503, "unavailable", "lost the connection to Redis");
    } else if (reply->type == REDIS_REPLY_INTEGER) { /* LLEN: a job in progress */
        json_object_set_new(g->out, "generated_tokens", json_integer(reply->integer));
        lq_http_send_json(g->req, 200, json_incref(g->out));
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        lq_event *tokens = NULL, end = {0};
        int n = 0;
        if (read_log(reply, &tokens, &n, &end) == 0) {
            json_object_set_new(g->out, "generated_tokens", json_integer(end.generated_tokens));
            add_outcome(g, tokens, n, &end);
        }
        for (int i = 0; i < n; i++) lq_event_clear(&tokens[i]);
        free(tokens);
        lq_event_clear(&end);
        lq_http_send_json(g->req, 200, json_incref(g->out));
    } else {
        lq_http_error(g->req, 500, "internal", "unexpected reply reading the job's log");
    }
    get_free(g);
}

static json_t *ms_json(const char *s) { return s ? json_integer(strtoll(s, NULL, 10)) : json_null(); }

static void on_record(redisReply *reply, void *priv) {
    get_req *g = priv;
    const char *f[8] = {0};
    for (size_t i = 0; reply && reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < 8; i++)
        if (reply->element[i]->type == REDIS_REPLY_STRING) f[i] = reply->element[i]->str;
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        lq_http_error(g->req, 503, "unavailable", "lost the connection to Redis");
        get_free(g);
        return;
    }
    if (!f[0]) {
        char msg[200];
        snprintf(msg, sizeof msg, "job '%s' not found (unknown, or its result has expired)", g->id);
        lq_http_error(g->req, 404, "not_found", msg);
        get_free(g);
        return;
    }
    g->over = strcmp(f[0], "queued") && strcmp(f[0], "running");
    g->request = f[2] ? strdup(f[2]) : NULL;
    g->out = json_pack("{s:s, s:s, s:s?, s:o, s:o, s:o, s:I}", "id", g->id, "status", f[0], "adapter_id", f[1],
                       "created_ms", ms_json(f[3]), "started_ms", ms_json(f[4]), "finished_ms", ms_json(f[5]),
                       "attempts", (json_int_t)(f[6] ? strtoll(f[6], NULL, 10) : 0));
    if (g->out && f[7]) json_object_set_new(g->out, "worker", json_string(f[7]));
    const char *argv[4] = {g->over ? "LRANGE" : "LLEN", g->k_log, "0", "-1"};
    size_t lens[4] = {strlen(argv[0]), strlen(g->k_log), 1, 2};
    if (!g->out || lq_rc_command(g->gw->rc, on_log, g, g->over ? 4 : 2, argv, lens)) {
        lq_http_error(g->req, 503, "unavailable", "lost the connection to Redis");
        get_free(g);
    }
}

void lq_route_job_get(lq_gw *gw, struct evhttp_request *req, const char *id) {
    get_req *g = calloc(1, sizeof *g);
    if (!g) {
        lq_http_error(req, 500, "internal", "out of memory");
        return;
    }
    g->gw = gw;
    g->req = req;
    snprintf(g->id, sizeof g->id, "%s", id);
    lq_key_log(gw->names, id, g->k_log);
    char k_job[LQ_KEY_MAX];
    lq_key_job(gw->names, id, k_job);
    const char *argv[10] = {"HMGET", k_job, "status", "adapter", "request", "created_ms",
                            "started_ms", "finished_ms", "attempts", "worker"};
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = strlen(argv[i]);
    if (lq_rc_command(gw->rc, on_record, g, 10, argv, lens)) {
        lq_http_error(req, 503, "unavailable", "Redis is unreachable; try again shortly");
        free(g);
    }
}

/* ---- GET /v1/jobs/{id}/stream ---- */

typedef struct stream_state {
    lq_tgi_stream stream;
    job_opts opts;
    int ready;
} stream_state;

static void send_sse(void *arg, const json_t *ev) {
    lq_session *s = arg;
    if (s->req) lq_sse_send_json(s->req, ev, 0);
}

static void follow_started(lq_session *s) {
    stream_state *st = s->api;
    opts_read(&st->opts, s->job_request);
    if (lq_tgi_stream_init(&st->stream, s->gw->base, s->gw->tok, &st->opts.tgi, send_sse, s)) {
        lq_gw_error e;
        lq_gw_fail(&e, 500, "internal", "out of memory");
        lq_session_reply_error(s, &e);
        return;
    }
    st->ready = 1;
    lq_session_start_stream(s);
}

static void follow_token(lq_session *s, const lq_event *ev) {
    stream_state *st = s->api;
    lq_tgi_stream_token(&st->stream, (lq_event *)ev);
}

static void follow_end(lq_session *s, const lq_event *end) {
    stream_state *st = s->api;
    if (lq_tgi_end_failed(end)) {
        lq_gw_error e;
        lq_session_end_error(end, &e);
        lq_tgi_stream_flush(&st->stream);
        lq_session_reply_error(s, &e);
        return;
    }
    lq_tgi_stream_end(&st->stream, end);
    lq_session_end_stream(s, 200);
}

static void follow_failed(lq_session *s, const lq_gw_error *e) {
    stream_state *st = s->api;
    if (st->ready) lq_tgi_stream_flush(&st->stream);
    lq_session_reply_error(s, e);
}

static void follow_free(lq_session *s) {
    stream_state *st = s->api;
    if (!st) return;
    if (st->ready) lq_tgi_stream_clear(&st->stream);
    opts_clear(&st->opts);
    free(st);
}

static const lq_session_ops FOLLOW_OPS = {follow_started, follow_token, follow_end, follow_failed, follow_free};

void lq_route_job_stream(lq_gw *gw, struct evhttp_request *req, const char *id) {
    lq_session *s = lq_session_new(gw, req, "job_stream", &FOLLOW_OPS);
    if (!s) return;
    if (!(s->api = calloc(1, sizeof(stream_state)))) {
        lq_gw_error e;
        lq_gw_fail(&e, 500, "internal", "out of memory");
        lq_session_reject(s, &e);
        return;
    }
    lq_session_follow(s, id);
}

/* ---- DELETE /v1/jobs/{id} ---- */

typedef struct delete_req {
    struct evhttp_request *req;
    char id[LQ_JOB_ID_MAX + 1];
} delete_req;

static void on_cancel(void *priv, const char *word, const char *status) {
    delete_req *d = priv;
    char msg[200];
    if (!word) {
        lq_http_error(d->req, 503, "unavailable", "lost the connection to Redis");
    } else if (!strcmp(word, "ok")) {
        lq_http_send_json(d->req, 200, json_pack("{s:s, s:s}", "id", d->id, "status", "cancelled"));
    } else if (!strcmp(word, "over")) {
        snprintf(msg, sizeof msg, "job '%s' is already over (%s)", d->id, status ? status : "?");
        lq_http_error(d->req, 409, "conflict", msg);
    } else {
        snprintf(msg, sizeof msg, "job '%s' not found (unknown, or its result has expired)", d->id);
        lq_http_error(d->req, 404, "not_found", msg);
    }
    free(d);
}

void lq_route_job_delete(lq_gw *gw, struct evhttp_request *req, const char *id) {
    delete_req *d = calloc(1, sizeof *d);
    if (!d) {
        lq_http_error(req, 500, "internal", "out of memory");
        return;
    }
    d->req = req;
    snprintf(d->id, sizeof d->id, "%s", id);
    if (lq_job_cancel(gw, id, on_cancel, d)) {
        lq_http_error(req, 503, "unavailable", "Redis is unreachable; try again shortly");
        free(d);
    }
}
