/* session.c — an HTTP request bound to one job (see session.h).
 *
 * Order of an ordinary session: new (counted in flight) -> submit
 * (tokenize, encode, relay) -> started -> token... -> end (the formatter
 * answers) -> finish (metrics, freed). Every path out of a session goes
 * through finish exactly once: an answer, an error before or after the job
 * was queued, or the client going away. */
#include "session.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "server.h"

double lq_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the end of a session ---- */

static void stop_eof_watch(lq_session *s) {
    if (s->eof_watch) {
        event_free(s->eof_watch);
        s->eof_watch = NULL;
    }
}

static void finish(lq_session *s) {
    lq_gw *gw = s->gw;
    stop_eof_watch(s);
    lq_relay_close(s->relay, 0);
    gw->in_flight--;
    const char *adapter = s->rq.adapter;
    lq_metrics_request(gw->metrics, s->route, adapter, s->status, lq_now_s() - s->t_start);
    if (!s->follower && (s->n_prompt || s->n_generated)) lq_metrics_tokens(gw->metrics, adapter, s->n_prompt, s->n_generated);
    if (s->ops && s->ops->free_state) s->ops->free_state(s);
    for (int i = 0; i < s->n_tokens; i++) lq_event_clear(&s->tokens[i]);
    free(s->tokens);
    free(s->job_request);
    lq_gw_request_clear(&s->rq);
    free(s);
}

/* Detaches the HTTP request before an answer, so that no close callback can reach a freed session. */
static struct evhttp_request *take_req(lq_session *s) {
    struct evhttp_request *req = s->req;
    s->req = NULL;
    stop_eof_watch(s);
    struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;
    if (evcon) evhttp_connection_set_closecb(evcon, NULL, NULL);
    return req;
}

void lq_session_reply_json(lq_session *s, int status, json_t *body) {
    struct evhttp_request *req = take_req(s);
    s->status = status;
    if (req) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Job-Id", s->id[0] ? s->id : "");
        lq_http_send_json(req, status, body);
    } else {
        json_decref(body);
    }
    finish(s);
}

void lq_session_reply_error(lq_session *s, const lq_gw_error *e) {
    if (s->streaming) {
        /* Headers are gone: the error travels as the stream's last event, as TGI does. */
        json_t *ev = json_pack("{s:s, s:s}", "error", e->msg, "error_type", e->type);
        if (s->req && ev) lq_sse_send_json(s->req, ev, s->rq.api != LQ_API_GENERATE);
        json_decref(ev);
        lq_session_end_stream(s, e->status);
        return;
    }
    lq_session_reply_json(s, e->status, json_pack("{s:s, s:s}", "error", e->msg, "error_type", e->type));
}

void lq_session_reject(lq_session *s, const lq_gw_error *e) { lq_session_reply_error(s, e); }

void lq_session_end_stream(lq_session *s, int status) {
    struct evhttp_request *req = take_req(s);
    s->status = status;
    if (req) lq_sse_end(req);
    finish(s);
}

/* ---- the client going away ---- */

static void client_gone(lq_session *s) {
    struct evhttp_request *req = s->req;
    if (!req) return;
    s->req = NULL;
    stop_eof_watch(s);
    if (s->streaming) {
        /* evhttp detached the request from its dead connection: ending it frees it. */
        evhttp_send_reply_end(req);
    } else {
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        if (evcon) {
            evhttp_connection_set_closecb(evcon, NULL, NULL);
            evhttp_connection_free(evcon); /* frees req with it */
        }
    }
    s->status = 499; /* nginx's "client closed request", for the metrics */
    lq_relay_close(s->relay, !s->follower);
    s->relay = NULL;
    if (!s->tokenizing) finish(s); /* else the tokenizer's callback will */
}

static void on_close(struct evhttp_connection *evcon, void *arg) {
    (void)evcon;
    client_gone(arg);
}

/* Readable while evhttp is not reading: end-of-file means the client left. */
static void on_readable(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    lq_session *s = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        stop_eof_watch(s); /* a pipelined request: evhttp will read it later; stop peeking */
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    client_gone(s);
}

static void watch_eof(lq_session *s) {
    struct evhttp_connection *evcon = evhttp_request_get_connection(s->req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0) return;
    s->eof_watch = event_new(s->gw->base, fd, EV_READ | EV_PERSIST, on_readable, s);
    if (s->eof_watch) event_add(s->eof_watch, NULL);
}

void lq_session_start_stream(lq_session *s) {
    if (!s->req || s->streaming) return;
    stop_eof_watch(s); /* evhttp watches a streaming connection itself */
    evhttp_add_header(evhttp_request_get_output_headers(s->req), "X-Job-Id", s->id);
    lq_sse_start(s->req);
    s->streaming = 1;
    struct evhttp_connection *evcon = evhttp_request_get_connection(s->req);
    if (evcon) evhttp_connection_set_closecb(evcon, on_close, s);
}

/* ---- relay events ---- */

static void on_started(lq_relay *r, void *owner, const lq_relay_info *info) {
    (void)r;
    lq_session *s = owner;
    if (info) {
        /* A followed job: answer the way its request asked, label it with its adapter. */
        if (info->request) s->job_request = strdup(info->request);
        snprintf(s->rq.adapter, sizeof s->rq.adapter, "%s", info->adapter);
    }
    if (s->ops->started) s->ops->started(s);
}

static int keep_token(lq_session *s, lq_event *ev) {
    if (s->n_tokens == s->cap_tokens) {
        int cap = s->cap_tokens ? s->cap_tokens * 2 : 16;
        lq_event *t = realloc(s->tokens, (size_t)cap * sizeof *t);
        if (!t) return -1;
        s->tokens = t;
        s->cap_tokens = cap;
    }
    /* Taken over from the relay: it clears an emptied event harmlessly. */
    s->tokens[s->n_tokens++] = *ev;
    memset(ev, 0, sizeof *ev);
    return 0;
}

static void on_token(lq_relay *r, void *owner, lq_event *ev) {
    (void)r;
    lq_session *s = owner;
    double now = lq_now_s();
    /* A follower's replayed tokens say nothing about latency. */
    if (!s->follower && !s->n_generated) {
        s->t_first = now;
        lq_metrics_first_token(s->gw->metrics, s->rq.adapter, now - s->t_start);
    } else if (!s->follower) {
        lq_metrics_inter_token(s->gw->metrics, s->rq.adapter, now - s->t_last);
    }
    s->t_last = now;
    s->n_generated++;
    const lq_event *tok = ev;
    if (s->keep_tokens) {
        if (keep_token(s, ev)) {
            lq_gw_error e;
            lq_gw_fail(&e, 500, "internal", "out of memory");
            lq_session_reply_error(s, &e);
            return;
        }
        tok = &s->tokens[s->n_tokens - 1];
    }
    if (s->ops->token) s->ops->token(s, tok);
}

static void on_end(lq_relay *r, void *owner, lq_event *ev) {
    (void)r;
    lq_session *s = owner;
    s->ops->end(s, ev);
}

static void on_failed(lq_relay *r, void *owner, const lq_gw_error *e) {
    (void)r;
    lq_session *s = owner;
    s->ops->failed(s, e);
}

static const lq_relay_ops RELAY_OPS = {on_started, on_token, on_end, on_failed};

void lq_session_end_error(const lq_event *ev, lq_gw_error *e) {
    const char *type = ev->error_type ? ev->error_type : "internal";
    const char *msg = ev->error ? ev->error : "the job failed";
    if (ev->finish_reason && !strcmp(ev->finish_reason, "cancelled"))
        lq_gw_fail(e, 424, "generation", "the job was cancelled");
    else if (!strcmp(type, "adapter_not_found"))
        lq_gw_fail(e, 404, "not_found", "%s", msg);
    else if (!strcmp(type, "validation") || !strcmp(type, "adapter"))
        lq_gw_fail(e, 422, "validation", "%s", msg);
    else if (!strcmp(type, "overloaded"))
        lq_gw_fail(e, 429, "overloaded", "%s", msg);
    else if (!strcmp(type, "deadline"))
        lq_gw_fail(e, 504, "timeout", "%s", msg);
    else
        lq_gw_fail(e, 424, "generation", "%s", msg);
}

/* ---- start ---- */

lq_session *lq_session_new(lq_gw *gw, struct evhttp_request *req, const char *route, const lq_session_ops *ops) {
    if (gw->in_flight >= gw->cfg.max_concurrent_requests) {
        lq_http_error(req, 429, "overloaded", "Model is overloaded");
        lq_metrics_request(gw->metrics, route, "", 429, 0);
        return NULL;
    }
    lq_session *s = calloc(1, sizeof *s);
    if (!s) {
        lq_http_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    gw->in_flight++;
    s->gw = gw;
    s->req = req;
    s->route = route;
    s->ops = ops;
    s->t_start = lq_now_s();
    s->status = 200;
    watch_eof(s);
    return s;
}

char *lq_session_request_meta(const lq_gw_request *rq) {
    json_t *m = json_pack("{s:b, s:b, s:b, s:i, s:b}", "details", rq->details, "decoder_input_details",
                          rq->decoder_input_details, "return_full_text", rq->return_full_text, "max_new_tokens",
                          rq->max_new_tokens, "stop", rq->params.n_stop > 0);
    if (m && rq->return_full_text && rq->inputs) json_object_set_new(m, "inputs", json_stringn(rq->inputs, rq->inputs_len));
    char *text = m ? lq_json_text(m) : NULL;
    json_decref(m);
    return text;
}

/* The tenant a request names in X-Tenant (free text for metrics and limits, kept short). */
static const char *tenant_of(struct evhttp_request *req) {
    const char *t = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Tenant");
    if (!t || strlen(t) > 64) return "";
    for (const char *p = t; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) return "";
    return t;
}

static int enqueue(lq_session *s, const int32_t *ids, int n, lq_gw_error *e) {
    lq_gw *gw = s->gw;
    int64_t now = lq_time_ms();
    lq_gw_new_job_id(now, s->id);
    lq_job job = {0};
    job.id = s->id;
    job.tenant = (char *)tenant_of(s->req);
    job.adapter = s->rq.adapter;
    job.prompt = (int32_t *)ids;
    job.n_prompt = n;
    job.max_new_tokens = s->rq.max_new_tokens;
    job.params = s->rq.params;
    job.created_ms = now;
    job.deadline_ms = gw->cfg.request_timeout_s ? now + gw->cfg.request_timeout_s * 1000LL : 0;
    lq_buf buf = {0};
    lq_error err = {{0}};
    if (lq_job_encode(&job, &buf, &err)) {
        lq_buf_free(&buf);
        return lq_gw_fail(e, 500, "internal", "cannot encode the job: %s", err.msg);
    }
    char *meta = lq_session_request_meta(&s->rq);
    lq_relay_job rj = {s->id, s->rq.adapter, job.tenant, buf.data, buf.len, meta, job.deadline_ms};
    s->relay = lq_relay_submit(gw, &rj, &RELAY_OPS, s, e);
    free(meta);
    lq_buf_free(&buf);
    return s->relay ? 0 : -1;
}

/* The prompt's ids are known and checked: queue the job. */
static void submit_ids(lq_session *s, int32_t *ids, int n) {
    lq_gw_error e;
    s->n_prompt = n;
    int rc = enqueue(s, ids, n, &e);
    free(ids);
    if (rc) lq_session_reject(s, &e);
}

/* A long prompt comes back from the tokenizer threads. */
static void on_tokenized(void *arg, int32_t *raw, size_t n_raw, const char *error) {
    lq_session *s = arg;
    s->tokenizing = 0;
    if (!s->req) { /* the client left meanwhile */
        free(raw);
        finish(s);
        return;
    }
    lq_gw_error e;
    int32_t *ids;
    int n;
    if (error) {
        lq_gw_fail(&e, 422, "validation", "tokenizer error %s", error);
        lq_session_reject(s, &e);
    } else if (lq_gw_finish_prompt(&s->gw->limits, &s->rq, raw, n_raw, &ids, &n, &e)) {
        lq_session_reject(s, &e);
    } else {
        submit_ids(s, ids, n);
    }
}

void lq_session_submit(lq_session *s, const char *text, size_t len, int add_special) {
    lq_gw_error e;
    int32_t *ids = NULL;
    int n = 0;
    if (text && len >= LQ_TOKPOOL_MIN_BYTES && s->gw->tokpool) {
        if (lq_tokpool_encode(s->gw->tokpool, text, len, add_special, on_tokenized, s) == 0) {
            s->tokenizing = 1;
            return;
        }
    }
    if (lq_gw_prepare_prompt(s->gw->tok, &s->gw->limits, &s->rq, text, len, add_special, &ids, &n, &e)) {
        lq_session_reject(s, &e);
        return;
    }
    submit_ids(s, ids, n);
}

void lq_session_follow(lq_session *s, const char *id) {
    lq_gw_error e;
    s->follower = 1;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->relay = lq_relay_follow(s->gw, id, 0, &RELAY_OPS, s, &e);
    if (!s->relay) lq_session_reject(s, &e);
}
