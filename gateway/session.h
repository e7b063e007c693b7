/* session.h — one synchronous generation request: an HTTP request waiting
 * on one job.
 *
 * A session counts against MAX_CONCURRENT_REQUESTS from creation to its
 * end, tokenizes and enqueues its job through a relay, records the token
 * events its API needs, and hands each step to the API's formatter (TGI or
 * OpenAI, streaming or not) through lq_session_ops.
 *
 * A client that goes away cancels the job. Two ways to notice it: once a
 * stream has started, evhttp's connection close callback; before that
 * (evhttp reads nothing from a connection whose request is being handled),
 * a read watch on the socket that peeks for end-of-file. Either way the
 * session closes its relay with cancel, so the worker stops generating for
 * nobody within one step. */
#ifndef LORQ_GW_SESSION_H
#define LORQ_GW_SESSION_H

#include <event2/http.h>

#include "gateway.h"
#include "job.h"
#include "relay.h"
#include "validate.h"

typedef struct lq_session lq_session;

typedef struct lq_session_ops {
    void (*started)(lq_session *s); /* the job is queued: a stream sends its headers */
    void (*token)(lq_session *s, const lq_event *ev);
    void (*end)(lq_session *s, const lq_event *ev);      /* must answer (lq_session_reply_json or sse end) */
    void (*failed)(lq_session *s, const lq_gw_error *e); /* must answer */
    void (*free_state)(lq_session *s);                    /* frees s->api */
} lq_session_ops;

struct lq_session {
    lq_gw *gw;
    struct evhttp_request *req; /* NULL once answered or the client is gone */
    const char *route;          /* metrics label */
    const lq_session_ops *ops;
    lq_gw_request rq;
    lq_relay *relay;
    char id[LQ_JOB_ID_MAX + 1];
    int n_prompt;       /* prompt tokens after truncation */
    lq_event *tokens;   /* every token event, when keep_tokens */
    int n_tokens, cap_tokens;
    int keep_tokens;
    int n_generated;
    int streaming; /* SSE headers sent */
    int status;    /* the HTTP status answered (metrics) */
    double t_start, t_first, t_last; /* seconds (monotonic) */
    struct event *eof_watch;
    int tokenizing;    /* a tokenizer thread has the prompt: the session outlives its client until it returns */
    int follower;      /* follows an existing job (GET /v1/jobs/{id}/stream): leaving does not cancel it */
    char *job_request; /* a followed job's `request` field (JSON), or NULL */
    void *api;         /* the formatter's own state */
};

/* A session for req, or NULL after answering 429 (too many requests open). */
lq_session *lq_session_new(lq_gw *gw, struct evhttp_request *req, const char *route, const lq_session_ops *ops);

/* Answers e and ends a session that has not submitted yet (a parse error). */
void lq_session_reject(lq_session *s, const lq_gw_error *e);

/* Tokenizes (text, or rq.prompt_ids when text is NULL), enqueues and
 * follows. On any error the session answers it and ends. */
void lq_session_submit(lq_session *s, const char *text, size_t len, int add_special);

/* Follows the existing job id (replayed from its first event). A job that
 * does not exist is a 404. */
void lq_session_follow(lq_session *s, const char *id);

/* For the formatters. */
void lq_session_start_stream(lq_session *s);
void lq_session_reply_json(lq_session *s, int status, json_t *body); /* steals body; ends the session */
void lq_session_reply_error(lq_session *s, const lq_gw_error *e);   /* ends the session */
void lq_session_end_stream(lq_session *s, int status);              /* ends the session */

/* The HTTP status and error for a failed end event (error_type -> 4xx/5xx). */
void lq_session_end_error(const lq_event *ev, lq_gw_error *e);

/* What GET /v1/jobs/{id} and its stream need to answer the way this request
 * asked (details, return_full_text and the prompt for it, max_new_tokens,
 * whether stop sequences may end it): JSON for the record's `request`. */
char *lq_session_request_meta(const lq_gw_request *rq);

double lq_now_s(void);

#endif
