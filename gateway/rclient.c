/* rclient.c — two self-healing hiredis async connections (see rclient.h).
 *
 * Each connection is a small state machine: down (a retry timer is armed),
 * connecting, ready. hiredis frees its context after the disconnect
 * callback, so a connection only ever holds the context it is using and
 * ignores callbacks from one it has already dropped.
 *
 * Every command goes through a `pending` record that carries the caller's
 * callback and, for scripts, a copy of the arguments: that copy is what lets
 * a NOSCRIPT reply be retried as EVAL with the source, inside the reply
 * callback, without the caller knowing. */
#include "rclient.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "strmap.h"

#define PING_EVERY_MS 1000
#define STALL_MS 5000 /* no PONG (or no connection) for this long: drop and reconnect */

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_READY } conn_state;

typedef struct conn {
    lq_rc *rc;
    const char *name; /* "commands", "pub/sub" for logs */
    int is_sub;
    redisAsyncContext *ac;
    conn_state state;
    lq_backoff backoff;
    struct event *retry;
    long long since_ms; /* when the current state began */
    int logged_down;    /* one log line per outage */
} conn;

typedef struct sub {
    const lq_rc_sub_ops *ops;
    void *priv;
} sub;

struct lq_rc {
    struct event_base *base;
    lq_redis_url url;
    char url_text[300];
    char *source[LQ_SCRIPT_COUNT];
    size_t source_len[LQ_SCRIPT_COUNT];
    char sha[LQ_SCRIPT_COUNT][41];
    conn cmd, pubsub;
    lq_strmap *subs;
    struct event *tick;
    int ping_out;
    long long ping_sent_ms;
    long long down_since_ms;
};

/* A command in flight. For scripts, argv[0..1] are rewritten from
 * EVALSHA sha to EVAL source on NOSCRIPT. */
typedef struct pending {
    lq_rc *rc;
    lq_rc_reply_fn fn;
    void *priv;
    int script; /* -1: not a script */
    int argc;
    const char **argv;
    size_t *lens;
    char *blob; /* the copied arguments */
} pending;

static void conn_start(conn *c);

static void pending_free(pending *p) {
    free(p->blob);
    free(p->argv);
    free(p->lens);
    free(p);
}

/* ---- scripts ---- */

static char *read_file(const char *path, size_t *len, lq_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lq_fail(err, "%s: cannot open", path);
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 > cap) {
            char *g = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (!g) break;
            buf = g;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (!got) break;
    }
    int bad = ferror(f) || !buf;
    fclose(f);
    if (bad) {
        free(buf);
        lq_fail(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int read_scripts(lq_rc *rc, const char *dir_opt, lq_error *err) {
    char dir[PATH_MAX], path[PATH_MAX + 64];
    if (dir_opt) snprintf(dir, sizeof dir, "%s", dir_opt);
    else if (lq_lua_dir_find(dir, sizeof dir, err)) return -1;
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++) {
        snprintf(path, sizeof path, "%s/%s.lua", dir, lq_script_name((lq_script)i));
        if (!(rc->source[i] = read_file(path, &rc->source_len[i], err))) return -1;
    }
    return 0;
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *privdata) {
    (void)ac;
    redisReply *reply = r;
    char *slot = privdata;
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len == 40) memcpy(slot, reply->str, 41);
}

static void load_scripts(lq_rc *rc) {
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", rc->source[i]};
        size_t lens[3] = {6, 4, rc->source_len[i]};
        redisAsyncCommandArgv(rc->cmd.ac, on_script_loaded, rc->sha[i], 3, argv, lens);
    }
}

/* ---- pending commands ---- */

static pending *pending_new(lq_rc *rc, lq_rc_reply_fn fn, void *priv, int script, int argc, const char **argv,
                            const size_t *lens) {
    pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->rc = rc;
    p->fn = fn;
    p->priv = priv;
    p->script = script;
    if (!argv) return p;
    /* Scripts keep a copy of their arguments for the NOSCRIPT retry. */
    size_t total = 0;
    for (int i = 0; i < argc; i++) total += lens[i] + 1;
    p->argv = malloc((size_t)argc * sizeof *p->argv);
    p->lens = malloc((size_t)argc * sizeof *p->lens);
    p->blob = malloc(total ? total : 1);
    if (!p->argv || !p->lens || !p->blob) {
        pending_free(p);
        return NULL;
    }
    char *at = p->blob;
    for (int i = 0; i < argc; i++) {
        memcpy(at, argv[i], lens[i]);
        at[lens[i]] = 0;
        p->argv[i] = at;
        p->lens[i] = lens[i];
        at += lens[i] + 1;
    }
    p->argc = argc;
    return p;
}

static int is_noscript(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR && r->str && !strncmp(r->str, "NOSCRIPT", 8);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* EVAL with the script's source, from inside the NOSCRIPT reply's callback. */
static int resend_as_eval(redisAsyncContext *ac, pending *p) {
    lq_rc *rc = p->rc;
    rc->sha[p->script][0] = 0; /* stale: use EVAL until SCRIPT LOAD answers again */
    p->argv[0] = "EVAL";
    p->lens[0] = 4;
    p->argv[1] = rc->source[p->script];
    p->lens[1] = rc->source_len[p->script];
    p->script = -1; /* one retry only */
    return redisAsyncCommandArgv(ac, on_reply, p, p->argc, p->argv, p->lens);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata) {
    pending *p = privdata;
    redisReply *reply = r;
    if (p->script >= 0 && is_noscript(reply) && resend_as_eval(ac, p) == REDIS_OK) return;
    if (p->fn) p->fn(reply, p->priv);
    pending_free(p);
}

int lq_rc_command(lq_rc *rc, lq_rc_reply_fn fn, void *priv, int argc, const char **argv, const size_t *lens) {
    if (rc->cmd.state != CONN_READY) return -1;
    pending *p = pending_new(rc, fn, priv, -1, argc, NULL, NULL);
    if (!p) return -1;
    if (redisAsyncCommandArgv(rc->cmd.ac, on_reply, p, argc, argv, lens) != REDIS_OK) {
        pending_free(p);
        return -1;
    }
    return 0;
}

int lq_rc_eval(lq_rc *rc, lq_script s, lq_rc_reply_fn fn, void *priv, int n_keys, int argc, const char **argv,
               const size_t *lens) {
    if (rc->cmd.state != CONN_READY || argc > 30) return -1;
    const char *full[33];
    size_t full_lens[33];
    char nk[16];
    int use_sha = rc->sha[s][0] != 0;
    snprintf(nk, sizeof nk, "%d", n_keys);
    full[0] = use_sha ? "EVALSHA" : "EVAL";
    full_lens[0] = strlen(full[0]);
    full[1] = use_sha ? rc->sha[s] : rc->source[s];
    full_lens[1] = use_sha ? 40 : rc->source_len[s];
    full[2] = nk;
    full_lens[2] = strlen(nk);
    for (int i = 0; i < argc; i++) full[3 + i] = argv[i], full_lens[3 + i] = lens[i];
    /* Already EVAL: a NOSCRIPT cannot happen, so no retry either. */
    pending *p = pending_new(rc, fn, priv, use_sha ? (int)s : -1, argc + 3, full, full_lens);
    if (!p) return -1;
    /* Send the copy: full[1] may point at a sha that a SCRIPT LOAD reply rewrites. */
    if (redisAsyncCommandArgv(rc->cmd.ac, on_reply, p, p->argc, p->argv, p->lens) != REDIS_OK) {
        pending_free(p);
        return -1;
    }
    return 0;
}

/* ---- subscriptions ---- */

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata) {
    (void)privdata;
    redisReply *reply = r;
    lq_rc *rc = ac->data;
    if (!rc || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
    redisReply *kind = reply->element[0], *chan = reply->element[1], *data = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING) return;
    sub *s = lq_strmap_get(rc->subs, chan->str);
    if (!s) return; /* unsubscribed meanwhile */
    if (!strcmp(kind->str, "subscribe")) {
        if (s->ops->subscribed) s->ops->subscribed(s->priv);
    } else if (!strcmp(kind->str, "message") && data->type == REDIS_REPLY_STRING) {
        s->ops->message(s->priv, data->str, data->len);
    }
}

static int send_subscribe(lq_rc *rc, const char *channel) {
    const char *argv[2] = {"SUBSCRIBE", channel};
    size_t lens[2] = {9, strlen(channel)};
    return redisAsyncCommandArgv(rc->pubsub.ac, on_sub_reply, NULL, 2, argv, lens) == REDIS_OK ? 0 : -1;
}

int lq_rc_subscribe(lq_rc *rc, const char *channel, const lq_rc_sub_ops *ops, void *priv) {
    if (rc->pubsub.state != CONN_READY || lq_strmap_get(rc->subs, channel)) return -1;
    sub *s = malloc(sizeof *s);
    if (!s) return -1;
    s->ops = ops;
    s->priv = priv;
    if (lq_strmap_put(rc->subs, channel, s)) {
        free(s);
        return -1;
    }
    if (send_subscribe(rc, channel)) {
        free(lq_strmap_del(rc->subs, channel));
        return -1;
    }
    return 0;
}

void lq_rc_unsubscribe(lq_rc *rc, const char *channel) {
    sub *s = lq_strmap_del(rc->subs, channel);
    if (!s) return;
    free(s);
    if (rc->pubsub.state != CONN_READY) return; /* the next connection will not subscribe it */
    const char *argv[2] = {"UNSUBSCRIBE", channel};
    size_t lens[2] = {11, strlen(channel)};
    redisAsyncCommandArgv(rc->pubsub.ac, NULL, NULL, 2, argv, lens);
}

size_t lq_rc_subscriptions(const lq_rc *rc) { return lq_strmap_count(rc->subs); }

static void resubscribe_one(const char *channel, void *val, void *arg) {
    (void)val;
    send_subscribe(arg, channel);
}

/* ---- connections ---- */

static void set_state(conn *c, conn_state s) {
    c->state = s;
    c->since_ms = lq_time_ms();
}

static void schedule_retry(conn *c) {
    set_state(c, CONN_DOWN);
    int ms = lq_backoff_next(&c->backoff);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(c->retry, &tv);
}

static void log_down(conn *c, const char *why) {
    if (c->logged_down) return;
    c->logged_down = 1;
    lq_gw_log("Redis %s connection to %s lost: %s; reconnecting", c->name, c->rc->url_text, why);
}

/* Drops the context (its pending callbacks get NULL) and reconnects later. */
static void conn_drop(conn *c, const char *why) {
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    log_down(c, why);
    if (c == &c->rc->cmd && !c->rc->down_since_ms) c->rc->down_since_ms = lq_time_ms();
    if (c == &c->rc->cmd) c->rc->ping_out = 0;
    schedule_retry(c);
    if (ac) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

static void send_auth_select(conn *c) {
    lq_redis_url *u = &c->rc->url;
    if (u->password[0]) {
        if (u->user[0]) redisAsyncCommand(c->ac, NULL, NULL, "AUTH %s %s", u->user, u->password);
        else redisAsyncCommand(c->ac, NULL, NULL, "AUTH %s", u->password);
    }
    if (u->db && !c->is_sub) redisAsyncCommand(c->ac, NULL, NULL, "SELECT %d", u->db);
}

static conn *conn_of(const redisAsyncContext *ac) {
    lq_rc *rc = ac->data;
    if (!rc) return NULL;
    if (rc->cmd.ac == ac) return &rc->cmd;
    if (rc->pubsub.ac == ac) return &rc->pubsub;
    return NULL;
}

static void on_connect(const redisAsyncContext *ac, int status) {
    conn *c = conn_of(ac);
    if (!c) return;
    if (status != REDIS_OK) {
        c->ac = NULL; /* hiredis frees it after this callback */
        log_down(c, ac->errstr[0] ? ac->errstr : "connection failed");
        if (c == &c->rc->cmd && !c->rc->down_since_ms) c->rc->down_since_ms = lq_time_ms();
        schedule_retry(c);
        return;
    }
    if (c->logged_down) lq_gw_log("Redis %s connection to %s is back", c->name, c->rc->url_text);
    c->logged_down = 0;
    lq_backoff_reset(&c->backoff);
    send_auth_select(c);
    set_state(c, CONN_READY);
    if (c->is_sub) {
        lq_strmap_each(c->rc->subs, resubscribe_one, c->rc);
    } else {
        c->rc->down_since_ms = 0;
        load_scripts(c->rc);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    (void)status;
    conn *c = conn_of(ac);
    if (!c) return;
    c->ac = NULL; /* hiredis frees it after this callback */
    if (c == &c->rc->cmd) {
        c->rc->ping_out = 0;
        if (!c->rc->down_since_ms) c->rc->down_since_ms = lq_time_ms();
    }
    log_down(c, ac->errstr[0] ? ac->errstr : "closed by the server");
    schedule_retry(c);
}

static void conn_start(conn *c) {
    lq_rc *rc = c->rc;
    redisAsyncContext *ac =
        rc->url.path[0] ? redisAsyncConnectUnix(rc->url.path) : redisAsyncConnect(rc->url.host, rc->url.port);
    if (!ac || ac->err) {
        log_down(c, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = rc;
    c->ac = ac;
    set_state(c, CONN_CONNECTING);
    redisLibeventAttach(ac, rc->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    conn_start(arg);
}

/* ---- liveness ---- */

static void on_pong(redisReply *reply, void *priv) {
    lq_rc *rc = priv;
    (void)reply;
    rc->ping_out = 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    lq_rc *rc = arg;
    long long now = lq_time_ms();
    conn *both[2] = {&rc->cmd, &rc->pubsub};
    for (int i = 0; i < 2; i++)
        if (both[i]->state == CONN_CONNECTING && now - both[i]->since_ms > STALL_MS)
            conn_drop(both[i], "connection attempt timed out");
    if (rc->cmd.state != CONN_READY) return;
    if (rc->ping_out && now - rc->ping_sent_ms > STALL_MS) {
        /* A Redis that stopped answering: both connections go through it. */
        conn_drop(&rc->cmd, "no reply to PING for 5 s");
        if (rc->pubsub.state != CONN_DOWN) conn_drop(&rc->pubsub, "no reply to PING for 5 s");
        return;
    }
    if (!rc->ping_out) {
        const char *argv[1] = {"PING"};
        size_t lens[1] = {4};
        if (!lq_rc_command(rc, on_pong, rc, 1, argv, lens)) rc->ping_out = 1, rc->ping_sent_ms = now;
    }
}

/* ---- lifetime ---- */

static int conn_init(lq_rc *rc, conn *c, const char *name, int is_sub) {
    c->rc = rc;
    c->name = name;
    c->is_sub = is_sub;
    lq_backoff_reset(&c->backoff);
    c->retry = evtimer_new(rc->base, on_retry, c);
    return c->retry ? 0 : -1;
}

static void describe(lq_rc *rc) {
    if (rc->url.path[0]) snprintf(rc->url_text, sizeof rc->url_text, "unix://%s", rc->url.path);
    else snprintf(rc->url_text, sizeof rc->url_text, "%s:%d", rc->url.host, rc->url.port);
}

lq_rc *lq_rc_new(struct event_base *base, const lq_rc_opts *o, lq_error *err) {
    lq_rc *rc = calloc(1, sizeof *rc);
    if (!rc) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    rc->base = base;
    if (lq_redis_url_parse(o->url ? o->url : LQ_REDIS_DEFAULT_URL, &rc->url, err) || read_scripts(rc, o->lua_dir, err))
        goto fail;
    describe(rc);
    rc->subs = lq_strmap_new();
    rc->tick = event_new(base, -1, EV_PERSIST, on_tick, rc);
    if (!rc->subs || !rc->tick || conn_init(rc, &rc->cmd, "commands", 0) || conn_init(rc, &rc->pubsub, "pub/sub", 1)) {
        lq_fail(err, "out of memory");
        goto fail;
    }
    struct timeval tv = {PING_EVERY_MS / 1000, (PING_EVERY_MS % 1000) * 1000};
    event_add(rc->tick, &tv);
    rc->down_since_ms = lq_time_ms();
    conn_start(&rc->cmd);
    conn_start(&rc->pubsub);
    return rc;
fail:
    lq_rc_free(rc);
    return NULL;
}

static void free_sub(const char *key, void *val, void *arg) {
    (void)key;
    (void)arg;
    free(val);
}

void lq_rc_free(lq_rc *rc) {
    if (!rc) return;
    conn *both[2] = {&rc->cmd, &rc->pubsub};
    for (int i = 0; i < 2; i++) both[i]->state = CONN_DOWN; /* callbacks run below may try to send */
    for (int i = 0; i < 2; i++) {
        if (both[i]->retry) event_free(both[i]->retry);
        both[i]->retry = NULL;
        if (both[i]->ac) {
            redisAsyncContext *ac = both[i]->ac;
            both[i]->ac = NULL;
            ac->data = NULL;
            redisAsyncFree(ac);
        }
    }
    if (rc->tick) event_free(rc->tick);
    if (rc->subs) {
        lq_strmap_each(rc->subs, free_sub, NULL);
        lq_strmap_free(rc->subs);
    }
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++) free(rc->source[i]);
    free(rc);
}

int lq_rc_up(const lq_rc *rc) { return rc->cmd.state == CONN_READY && rc->pubsub.state == CONN_READY; }

long long lq_rc_down_ms(const lq_rc *rc) {
    if (rc->cmd.state == CONN_READY) return 0;
    return rc->down_since_ms ? lq_time_ms() - rc->down_since_ms : 0;
}
