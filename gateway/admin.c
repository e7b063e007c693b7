/* admin.c — the admin API: preload and unload adapters on every worker.
 *
 *   POST   /admin/adapters/{id}/load    load it now (before any request names it)
 *   POST   /admin/adapters/{id}/unload  evict it where no job uses it
 *   DELETE /admin/adapters/{id}         the same as unload
 *
 * Disabled (403) unless LORQ_ADMIN_TOKEN is set; then every call needs
 * `Authorization: Bearer <token>` (401 without one, 403 with another). The id
 * must be one a request could name (LORA_ADAPTERS or LORQ_ALLOW_ADAPTERS).
 *
 * The gateway does not know which workers exist or wait for them: it appends
 * {op, adapter} to the stream P control (capped at about 1000 entries), every
 * worker reads it within half a second, and the answer is 202. The effect
 * shows in the workers' heartbeats, hence in /v1/models (docs/protocol.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "hub.h"
#include "job.h"
#include "server.h"

/* Constant-time comparison: the time taken says nothing about the token. */
static int same_token(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = (unsigned char)(na != nb);
    for (size_t i = 0; i < na; i++) diff |= (unsigned char)(a[i] ^ b[i % (nb ? nb : 1)]);
    return diff == 0;
}

static int authorized(const lq_gw *gw, struct evhttp_request *req) {
    if (!gw->cfg.admin_token[0]) {
        lq_http_error(req, 403, "forbidden", "the admin API is disabled: set LORQ_ADMIN_TOKEN on the gateway");
        return 0;
    }
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        lq_http_error(req, 401, "unauthorized", "the admin API needs 'Authorization: Bearer <LORQ_ADMIN_TOKEN>'");
        return 0;
    }
    if (!same_token(h + 7, gw->cfg.admin_token)) {
        lq_http_error(req, 403, "forbidden", "wrong admin token");
        return 0;
    }
    return 1;
}

static int servable(const lq_gw *gw, const char *id) {
    if (!id[0] || !lq_adapter_id_valid(id)) return 0;
    for (int i = 0; i < gw->cfg.n_adapters; i++)
        if (!strcmp(gw->cfg.adapters[i], id)) return 1;
    return lq_adapter_allowed(gw->cfg.allow_adapters, id);
}

typedef struct admin_req {
    struct evhttp_request *req;
    char op[8];
    char adapter[LQ_ADAPTER_ID_MAX + 1];
} admin_req;

static void on_added(redisReply *reply, void *priv) {
    admin_req *a = priv;
    if (!reply || reply->type != REDIS_REPLY_STRING)
        lq_http_error(a->req, 503, "unavailable", "Redis did not take the command");
    else
        lq_http_send_json(a->req, 202, json_pack("{s:s, s:s, s:s, s:s}", "status", "accepted", "op", a->op, "adapter",
                                                  a->adapter, "entry", reply->str));
    free(a);
}

static void send_command(lq_gw *gw, struct evhttp_request *req, const char *op, const char *id) {
    admin_req *a = calloc(1, sizeof *a);
    if (!a) {
        lq_http_error(req, 500, "internal", "out of memory");
        return;
    }
    a->req = req;
    snprintf(a->op, sizeof a->op, "%s", op);
    snprintf(a->adapter, sizeof a->adapter, "%s", id);
    char key[LQ_KEY_MAX];
    const char *argv[] = {"XADD", lq_key_control(gw->names, key), "MAXLEN", "~", "1000", "*", "op", op, "adapter", id};
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = strlen(argv[i]);
    if (!lq_rc_up(gw->rc) || lq_rc_command(gw->rc, on_added, a, 10, argv, lens)) {
        free(a);
        lq_http_error(req, 503, "unavailable", "Redis is unreachable");
    }
}

int lq_route_admin(lq_gw *gw, struct evhttp_request *req, const char *path) {
    static const char prefix[] = "/admin/adapters/";
    if (strncmp(path, "/admin/", 7)) return 0;
    if (!authorized(gw, req)) return 1;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *rest = path + sizeof prefix - 1, *op = NULL;
    size_t n = 0;
    if (!strncmp(path, prefix, sizeof prefix - 1)) {
        n = strlen(rest);
        if (m == EVHTTP_REQ_POST && n > 5 && !strcmp(rest + n - 5, "/load")) op = "load", n -= 5;
        else if (m == EVHTTP_REQ_POST && n > 7 && !strcmp(rest + n - 7, "/unload")) op = "unload", n -= 7;
        else if (m == EVHTTP_REQ_DELETE) op = "unload";
    }
    if (!op) {
        lq_http_error(req, 404, "not_found",
                      "admin routes: POST /admin/adapters/{id}/load, POST /admin/adapters/{id}/unload, "
                      "DELETE /admin/adapters/{id}");
        return 1;
    }
    char id[LQ_ADAPTER_ID_MAX + 1];
    if (n > LQ_ADAPTER_ID_MAX || (memcpy(id, rest, n), id[n] = 0, !servable(gw, id))) {
        char msg[400];
        snprintf(msg, sizeof msg, "adapter '%.*s' is not one this gateway serves (LORA_ADAPTERS or LORQ_ALLOW_ADAPTERS)",
                 (int)(n < 200 ? n : 200), rest);
        lq_http_error(req, 422, "validation", msg);
        return 1;
    }
    send_command(gw, req, op, id);
    return 1;
}
