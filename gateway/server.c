/* server.c — listening socket, request dispatch, JSON and SSE replies.
 *
 * Dispatch is a table of (method, path) -> handler, plus the /v1/jobs/{id}
 * family whose id is checked here so that handlers get a valid one. A path
 * that exists with another method is a 405 naming the allowed one; any
 * other path a 404: the body is JSON either way, so a client never has to
 * guess the format of an error.
 *
 * Bodies: evhttp itself refuses bodies above a hard cap (twice
 * PAYLOAD_LIMIT, at least 1 MiB more) with its own 413; bodies between
 * PAYLOAD_LIMIT and that cap get a JSON 413 from lq_http_body. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "routes.h"
#include "utf8.h"

#define LISTEN_BACKLOG 4096
#define HEADERS_MAX (64 * 1024)
#define READ_TIMEOUT_S 60 /* reading a request's headers and body */

typedef void (*route_fn)(lq_gw *gw, struct evhttp_request *req, const char *arg);

typedef struct route {
    enum evhttp_cmd_type method;
    const char *path;
    route_fn fn;
} route;

static const route ROUTES[] = {
    {EVHTTP_REQ_POST, "/generate", lq_route_generate},
    {EVHTTP_REQ_POST, "/generate_stream", lq_route_generate_stream},
    {EVHTTP_REQ_POST, "/", lq_route_compat},
    {EVHTTP_REQ_GET, "/health", lq_route_health},
    {EVHTTP_REQ_GET, "/info", lq_route_info},
    {EVHTTP_REQ_GET, "/metrics", lq_route_metrics},
    {EVHTTP_REQ_POST, "/v1/completions", lq_route_completions},
    {EVHTTP_REQ_POST, "/v1/chat/completions", lq_route_chat},
    {EVHTTP_REQ_GET, "/v1/models", lq_route_models},
    {EVHTTP_REQ_POST, "/v1/jobs", lq_route_job_create},
};
#define N_ROUTES (sizeof ROUTES / sizeof ROUTES[0])

/* ---- replies ---- */

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 424: return "Failed Dependency";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

int lq_gw_recent_workers(lq_gw *gw, lq_rc_reply_fn fn, void *priv) {
    char key[LQ_KEY_MAX], stop[16];
    snprintf(stop, sizeof stop, "%d", LQ_GW_RECENT_WORKERS - 1);
    const char *argv[4] = {"ZREVRANGE", lq_key_workers(gw->names, key), "0", stop};
    size_t lens[4] = {9, strlen(argv[1]), 1, strlen(stop)};
    return lq_rc_command(gw->rc, fn, priv, 4, argv, lens);
}

char *lq_json_text(const json_t *v) { return json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(9)); }

json_t *lq_json_string_utf8(const char *s, size_t n) {
    if (!s) return json_string("");
    json_t *v = json_stringn(s, n);
    if (v) return v;
    size_t len;
    char *fixed = lq_utf8_repair_dup(s, n, &len);
    v = fixed ? json_stringn(fixed, len) : json_string("");
    free(fixed);
    return v;
}

void lq_http_send_json(struct evhttp_request *req, int status, json_t *body) {
    struct evbuffer *buf = evbuffer_new();
    char *text = body ? lq_json_text(body) : NULL;
    json_decref(body);
    if (!buf || !text) {
        free(text);
        if (buf) evbuffer_free(buf);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(buf, text, strlen(text));
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, reason(status), buf);
    evbuffer_free(buf);
}

void lq_http_send_error(struct evhttp_request *req, const lq_gw_error *e) {
    int status = e->status >= 400 && e->status < 600 ? e->status : 500;
    lq_http_send_json(req, status, json_pack("{s:s, s:s}", "error", e->msg, "error_type", e->type[0] ? e->type : "internal"));
}

void lq_http_error(struct evhttp_request *req, int status, const char *type, const char *msg) {
    lq_gw_error e;
    lq_gw_fail(&e, status, type, "%s", msg);
    lq_http_send_error(req, &e);
}

int lq_http_body(lq_gw *gw, struct evhttp_request *req, const char **body, size_t *len, lq_gw_error *e) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if ((long long)n > gw->cfg.payload_limit)
        return lq_gw_fail(e, 413, "validation", "the request body is %zu bytes, more than the %lld allowed (PAYLOAD_LIMIT)",
                          n, gw->cfg.payload_limit);
    /* One more byte, NUL, so that the body is also a C string for whoever wants one. */
    evbuffer_add(in, "", 1);
    *body = (const char *)evbuffer_pullup(in, -1);
    *len = n;
    if (!*body) return lq_gw_fail(e, 500, "internal", "out of memory");
    return 0;
}

/* ---- server-sent events ---- */

void lq_sse_start(struct evhttp_request *req) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(req, 200, "OK");
}

void lq_sse_send_text(struct evhttp_request *req, const char *text, int space) {
    struct evbuffer *buf = evbuffer_new();
    if (!buf) return;
    evbuffer_add_printf(buf, "data:%s%s\n\n", space ? " " : "", text);
    evhttp_send_reply_chunk(req, buf);
    evbuffer_free(buf);
}

void lq_sse_send_json(struct evhttp_request *req, const json_t *data, int space) {
    char *text = lq_json_text(data);
    if (!text) return;
    lq_sse_send_text(req, text, space);
    free(text);
}

void lq_sse_end(struct evhttp_request *req) { evhttp_send_reply_end(req); }

/* ---- dispatch ---- */

static const char *method_name(enum evhttp_cmd_type m) {
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "?";
    }
}

static void method_not_allowed(struct evhttp_request *req, const char *path, const char *allowed) {
    char msg[300];
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allowed);
    snprintf(msg, sizeof msg, "%s is not allowed on %.200s (allowed: %s)",
             method_name(evhttp_request_get_command(req)), path, allowed);
    lq_http_error(req, 405, "method_not_allowed", msg);
}

/* /v1/jobs/{id}, /v1/jobs/{id}/stream. */
static int dispatch_job(lq_gw *gw, struct evhttp_request *req, const char *path) {
    static const char prefix[] = "/v1/jobs/";
    if (strncmp(path, prefix, sizeof prefix - 1)) return 0;
    char id[LQ_JOB_ID_MAX + 8];
    const char *rest = path + sizeof prefix - 1, *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    int stream = slash && !strcmp(slash, "/stream");
    if ((slash && !stream) || n >= sizeof id) return 0;
    memcpy(id, rest, n);
    id[n] = 0;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (!lq_job_id_valid(id)) {
        char msg[200];
        snprintf(msg, sizeof msg, "job '%.80s' not found (a job id is 1-64 characters of A-Z a-z 0-9 _ -)", id);
        lq_http_error(req, 404, "not_found", msg);
    } else if (stream) {
        if (m == EVHTTP_REQ_GET) lq_route_job_stream(gw, req, id);
        else method_not_allowed(req, path, "GET");
    } else if (m == EVHTTP_REQ_GET) {
        lq_route_job_get(gw, req, id);
    } else if (m == EVHTTP_REQ_DELETE) {
        lq_route_job_delete(gw, req, id);
    } else {
        method_not_allowed(req, path, "GET, DELETE");
    }
    return 1;
}

static void dispatch(struct evhttp_request *req, void *arg) {
    lq_gw *gw = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path) path = "/";
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const route *other = NULL;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (strcmp(ROUTES[i].path, path)) continue;
        if (ROUTES[i].method == m) {
            ROUTES[i].fn(gw, req, NULL);
            return;
        }
        other = &ROUTES[i];
    }
    if (other) {
        method_not_allowed(req, path, method_name(other->method));
        return;
    }
    if (dispatch_job(gw, req, path) || lq_route_admin(gw, req, path)) return;
    char msg[300];
    snprintf(msg, sizeof msg, "no route for %s %.200s", method_name(m), path);
    lq_http_error(req, 404, "not_found", msg);
}

/* ---- listening ---- */

static int listen_socket(const char *host, int port, lq_error *err) {
    struct addrinfo hints = {0}, *res = NULL;
    char service[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) return lq_fail(err, "HOSTNAME '%s': %s", host, gai_strerror(rc));
    int fd = -1, saved = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* Several gateways on one port: the kernel balances connections among them. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, LISTEN_BACKLOG)) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return lq_fail(err, "cannot listen on %s:%d: %s", host, port, strerror(saved ? saved : EINVAL));
    return fd;
}

static int port_of(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len)) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

int lq_server_start(lq_gw *gw, lq_error *err) {
    int fd = listen_socket(gw->cfg.hostname, gw->cfg.port, err);
    if (fd < 0) return -1;
    if (!(gw->http = evhttp_new(gw->base))) {
        close(fd);
        return lq_fail(err, "out of memory");
    }
    if (!(gw->listener = evhttp_accept_socket_with_handle(gw->http, fd))) {
        close(fd);
        return lq_fail(err, "cannot accept on %s:%d", gw->cfg.hostname, gw->cfg.port);
    }
    long long cap = gw->cfg.payload_limit * 2;
    if (cap < gw->cfg.payload_limit + (1 << 20)) cap = gw->cfg.payload_limit + (1 << 20);
    evhttp_set_max_body_size(gw->http, (ev_ssize_t)cap);
    evhttp_set_max_headers_size(gw->http, HEADERS_MAX);
    /* Read (and drop) the rest of a body over the cap before answering 413, so the client sees the answer. */
    evhttp_set_flags(gw->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_timeout(gw->http, READ_TIMEOUT_S);
    evhttp_set_allowed_methods(gw->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(gw->http, dispatch, gw);
    gw->port = port_of(fd);
    return 0;
}

int lq_server_port(const lq_gw *gw) { return gw->port; }
