/* server.h — the HTTP listener, the route table and reply helpers.
 *
 * The listening socket is made here rather than by evhttp_bind_socket so
 * that it can carry SO_REUSEPORT (several gateway processes on one port,
 * the kernel spreading connections among them) and a deep backlog (bursts
 * of hundreds of streaming clients). Every reply body is JSON, errors
 * included: {"error": ..., "error_type": ...} as TGI sends them. */
#ifndef LORQ_GW_SERVER_H
#define LORQ_GW_SERVER_H

#include <event2/http.h>
#include <jansson.h>

#include "gateway.h"
#include "validate.h"

/* Listens on HOSTNAME:PORT and installs the routes. */
int lq_server_start(lq_gw *gw, lq_error *err);
/* The port actually bound (PORT=0 picks a free one). */
int lq_server_port(const lq_gw *gw);

/* Sends body (stolen) with status; adds Content-Type: application/json. */
void lq_http_send_json(struct evhttp_request *req, int status, json_t *body);
void lq_http_send_error(struct evhttp_request *req, const lq_gw_error *e);
/* Shorthand for lq_http_send_error. */
void lq_http_error(struct evhttp_request *req, int status, const char *type, const char *msg);

/* The request body, NUL-terminated (may contain other NULs), or -1 with e
 * when it is larger than PAYLOAD_LIMIT (413). */
int lq_http_body(lq_gw *gw, struct evhttp_request *req, const char **body, size_t *len, lq_gw_error *e);

/* Server-sent events: headers, one `data:` event per call, the end. With
 * space, the line is "data: {...}" (OpenAI's style) else "data:{...}" (TGI's). */
void lq_sse_start(struct evhttp_request *req);
void lq_sse_send_json(struct evhttp_request *req, const json_t *data, int space);
void lq_sse_send_text(struct evhttp_request *req, const char *text, int space);
void lq_sse_end(struct evhttp_request *req);

/* JSON text of v, compact, or NULL when out of memory. */
char *lq_json_text(const json_t *v);

/* A JSON string of n bytes that should be UTF-8 (invalid sequences repaired, as the
 * tokenizer's pieces may split a character); NULL s gives "". */
json_t *lq_json_string_utf8(const char *s, size_t n);

/* The workers that beat most recently: ZREVRANGE P workers 0 LQ_GW_RECENT_WORKERS-1,
 * for /health and the adapter listing; fn gets the reply. -1 if not sent. */
enum { LQ_GW_RECENT_WORKERS = 64 };
int lq_gw_recent_workers(lq_gw *gw, lq_rc_reply_fn fn, void *priv);

#endif
