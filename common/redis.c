/* redis.c — synchronous Redis plumbing shared by the worker and the CLI
 * (see redis.h).
 *
 * One lq_redis is one hiredis connection plus what is needed to make it
 * again: the parsed URL, the prefix and the script sources. Nothing here
 * retries a command on its own except after NOSCRIPT, which is always safe
 * (the script did not run). Whether a failed command may be repeated is the
 * caller's business: the worker's script calls are idempotent or fenced, so it
 * re-sends after reconnecting; see worker/queue.c.
 *
 * A failure of the connection itself (EOF, reset, timeout) makes the hiredis
 * context unusable, so it is freed at once and lq_redis_up() turns 0. Redis's
 * own transient refusals (LOADING while it replays its AOF after a restart,
 * BUSY while a script runs long) are treated the same way: the caller backs
 * off and reconnects, which is exactly what waiting them out needs. */
#include "redis.h"

#include "job.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *const script_names[LQ_SCRIPT_COUNT] = {"enqueue", "start", "emit", "complete", "fail", "cancel"};

struct lq_redis {
    lq_redis_url url;
    char url_text[600];
    char prefix[LQ_PREFIX_MAX + 1];
    int connect_timeout_ms, command_timeout_ms;
    redisContext *c;
    char *source[LQ_SCRIPT_COUNT];
    char sha[LQ_SCRIPT_COUNT][41];
};

const char *lq_script_name(lq_script s) { return s >= 0 && s < LQ_SCRIPT_COUNT ? script_names[s] : "?"; }

/* ---- time ---- */

void lq_sleep_ms(int ms) {
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal (SIGTERM) cuts it short, so the caller sees it sooner */
}

int64_t lq_time_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t lq_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lq_backoff_reset(lq_backoff *b) { b->next_ms = 100; }

int lq_backoff_next(lq_backoff *b) {
    if (b->next_ms < 100) b->next_ms = 100;
    int d = b->next_ms;
    b->next_ms = d >= 2500 ? 5000 : d * 2;
    return d;
}

/* ---- URL ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Copies s[0..n) into out, decoding %XX escapes. */
static int copy_unescaped(const char *s, size_t n, char *out, size_t size, const char *what, lq_error *err) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return lq_fail(err, "REDIS_URL: bad %%-escape in the %s", what);
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (o + 1 >= size) return lq_fail(err, "REDIS_URL: the %s is too long", what);
        out[o++] = c;
    }
    out[o] = 0;
    return 0;
}

static int parse_uint(const char *s, size_t n, long max, long *out) {
    if (n == 0 || n > 10) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

/* user:password@ (both optional) before `end`. */
static int parse_userinfo(const char *s, size_t n, lq_redis_url *u, lq_error *err) {
    const char *colon = memchr(s, ':', n);
    if (!colon) return copy_unescaped(s, n, u->password, sizeof u->password, "password", err);
    if (copy_unescaped(s, (size_t)(colon - s), u->user, sizeof u->user, "user name", err)) return -1;
    return copy_unescaped(colon + 1, n - (size_t)(colon + 1 - s), u->password, sizeof u->password, "password", err);
}

/* host[:port] or [v6]:port */
static int parse_hostport(const char *s, size_t n, lq_redis_url *u, lq_error *err) {
    const char *host = s, *port = NULL;
    size_t host_len = n, port_len = 0;
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close) return lq_fail(err, "REDIS_URL: unterminated [IPv6] host");
        host = s + 1;
        host_len = (size_t)(close - host);
        if (close + 1 < s + n) {
            if (close[1] != ':') return lq_fail(err, "REDIS_URL: junk after the [IPv6] host");
            port = close + 2;
            port_len = n - (size_t)(port - s);
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon) {
            host_len = (size_t)(colon - s);
            port = colon + 1;
            port_len = n - host_len - 1;
        }
    }
    if (host_len == 0) return lq_fail(err, "REDIS_URL: no host name");
    if (host_len >= sizeof u->host) return lq_fail(err, "REDIS_URL: host name too long");
    memcpy(u->host, host, host_len);
    u->host[host_len] = 0;
    if (port) {
        long p;
        if (parse_uint(port, port_len, 65535, &p) || p == 0)
            return lq_fail(err, "REDIS_URL: port '%.*s' is not a number from 1 to 65535", (int)port_len, port);
        u->port = (int)p;
    }
    return 0;
}

static int parse_db(const char *s, size_t n, lq_redis_url *u, lq_error *err) {
    long db;
    if (n == 0) return 0;
    if (parse_uint(s, n, INT_MAX, &db)) return lq_fail(err, "REDIS_URL: database '%.*s' is not a number", (int)n, s);
    u->db = (int)db;
    return 0;
}

static int parse_tcp_url(const char *rest, lq_redis_url *u, lq_error *err) {
    size_t n = strlen(rest);
    const char *slash = memchr(rest, '/', n);
    size_t auth_len = slash ? (size_t)(slash - rest) : n;
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (rest[i] == '@') at = rest + i; /* the last '@': passwords may hold one */
    const char *hp = rest;
    if (at) {
        if (parse_userinfo(rest, (size_t)(at - rest), u, err)) return -1;
        hp = at + 1;
    }
    if (parse_hostport(hp, (size_t)(rest + auth_len - hp), u, err)) return -1;
    if (slash && parse_db(slash + 1, strlen(slash + 1), u, err)) return -1;
    return 0;
}

/* unix://[user:password@]/path[?db=N] */
static int parse_unix_url(const char *rest, lq_redis_url *u, lq_error *err) {
    const char *path = strchr(rest, '/');
    if (!path) return lq_fail(err, "REDIS_URL: unix:// needs an absolute socket path");
    if (path > rest) {
        if (path[-1] != '@') return lq_fail(err, "REDIS_URL: unix:// takes a path, not a host");
        if (parse_userinfo(rest, (size_t)(path - 1 - rest), u, err)) return -1;
    }
    const char *q = strchr(path, '?');
    size_t n = q ? (size_t)(q - path) : strlen(path);
    if (n >= sizeof u->path) return lq_fail(err, "REDIS_URL: socket path too long");
    memcpy(u->path, path, n);
    u->path[n] = 0;
    if (q) {
        if (strncmp(q, "?db=", 4) != 0) return lq_fail(err, "REDIS_URL: unix:// knows only the query ?db=N");
        return parse_db(q + 4, strlen(q + 4), u, err);
    }
    return 0;
}

int lq_redis_url_parse(const char *url, lq_redis_url *u, lq_error *err) {
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (!url || !*url) return lq_fail(err, "REDIS_URL is empty");
    if (!strncmp(url, "redis://", 8)) return parse_tcp_url(url + 8, u, err);
    if (!strncmp(url, "unix://", 7)) return parse_unix_url(url + 7, u, err);
    if (!strncmp(url, "unix:", 5) && url[5] == '/') return parse_unix_url(url + 5, u, err);
    if (!strncmp(url, "rediss://", 9)) return lq_fail(err, "REDIS_URL: TLS (rediss://) is not supported");
    return lq_fail(err, "REDIS_URL '%s' must start with redis:// or unix://", url);
}

int lq_prefix_valid(const char *p) {
    size_t n = strlen(p);
    if (n == 0 || n > LQ_PREFIX_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 127) return 0;
    return 1;
}

static void describe_url(lq_redis *r) {
    const lq_redis_url *u = &r->url;
    const char *auth = u->password[0] ? "***@" : "";
    if (u->path[0]) snprintf(r->url_text, sizeof r->url_text, "unix://%s%s?db=%d", auth, u->path, u->db);
    else if (strchr(u->host, ':')) /* IPv6 */
        snprintf(r->url_text, sizeof r->url_text, "redis://%s[%s]:%d/%d", auth, u->host, u->port, u->db);
    else snprintf(r->url_text, sizeof r->url_text, "redis://%s%s:%d/%d", auth, u->host, u->port, u->db);
}

/* ---- scripts ---- */

static int dir_has_scripts(const char *dir) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/enqueue.lua", dir) >= (int)sizeof path) return 0;
    return access(path, R_OK) == 0;
}

int lq_lua_dir_find(char *buf, size_t size, lq_error *err) {
    const char *env = getenv("LORQ_LUA_DIR");
    if (env && *env) {
        if (!dir_has_scripts(env)) return lq_fail(err, "LORQ_LUA_DIR=%s holds no enqueue.lua", env);
        snprintf(buf, size, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            if (snprintf(buf, size, "%s/../lua", exe) < (int)size && dir_has_scripts(buf)) return 0;
        }
    }
    if (dir_has_scripts("lua")) {
        snprintf(buf, size, "lua");
        return 0;
    }
    return lq_fail(err, "cannot find the Lua scripts (lua/enqueue.lua next to the program's folder); set LORQ_LUA_DIR");
}

static char *read_text_file(const char *path, lq_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lq_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    size_t got;
    while (s && (got = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *p = realloc(s, cap *= 2);
            if (!p) {
                free(s);
                s = NULL;
            } else {
                s = p;
            }
        }
    }
    fclose(f);
    if (!s) {
        lq_fail(err, "%s: out of memory", path);
        return NULL;
    }
    s[len] = 0;
    return s;
}

static int read_scripts(lq_redis *r, const char *dir, lq_error *err) {
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s.lua", dir, script_names[i]) >= (int)sizeof path)
            return lq_fail(err, "Lua script folder path too long");
        if (!(r->source[i] = read_text_file(path, err))) return -1;
    }
    return 0;
}

/* ---- connection ---- */

lq_redis *lq_redis_new(const lq_redis_opts *o, lq_error *err) {
    lq_redis *r = calloc(1, sizeof *r);
    if (!r) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    const char *prefix = o->prefix ? o->prefix : LQ_DEFAULT_PREFIX;
    char lua_dir[PATH_MAX];
    if (lq_redis_url_parse(o->url ? o->url : LQ_REDIS_DEFAULT_URL, &r->url, err)) goto fail;
    if (!lq_prefix_valid(prefix)) {
        lq_fail(err, "LORQ_PREFIX '%s' must be 1 to %d printable characters without spaces", prefix, LQ_PREFIX_MAX);
        goto fail;
    }
    snprintf(r->prefix, sizeof r->prefix, "%s", prefix);
    if (o->lua_dir) snprintf(lua_dir, sizeof lua_dir, "%s", o->lua_dir);
    else if (lq_lua_dir_find(lua_dir, sizeof lua_dir, err)) goto fail;
    if (read_scripts(r, lua_dir, err)) goto fail;
    r->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
    r->command_timeout_ms = o->command_timeout_ms > 0 ? o->command_timeout_ms : 10000;
    describe_url(r);
    return r;
fail:
    lq_redis_free(r);
    return NULL;
}

lq_redis *lq_redis_clone(const lq_redis *r, lq_error *err) {
    lq_redis *c = calloc(1, sizeof *c);
    if (!c) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    *c = *r;
    c->c = NULL;
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++)
        if (!(c->source[i] = strdup(r->source[i]))) {
            for (int k = 0; k < i; k++) free(c->source[k]);
            free(c);
            lq_fail(err, "out of memory");
            return NULL;
        }
    return c;
}

void lq_redis_free(lq_redis *r) {
    if (!r) return;
    lq_redis_disconnect(r);
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++) free(r->source[i]);
    free(r);
}

void lq_redis_disconnect(lq_redis *r) {
    if (r->c) redisFree(r->c);
    r->c = NULL;
}

void lq_redis_mark_down(lq_redis *r) { lq_redis_disconnect(r); }
int lq_redis_up(const lq_redis *r) { return r->c != NULL; }
redisContext *lq_redis_ctx(lq_redis *r) { return r->c; }
const char *lq_redis_prefix(const lq_redis *r) { return r->prefix; }
const char *lq_redis_url_text(const lq_redis *r) { return r->url_text; }

static struct timeval tv_ms(int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* Error replies that mean "not now" rather than "no". */
static int transient_error(const redisReply *rep) {
    return rep->type == REDIS_REPLY_ERROR &&
           (!strncmp(rep->str, "LOADING", 7) || !strncmp(rep->str, "BUSY ", 5) || !strncmp(rep->str, "MASTERDOWN", 10) ||
            !strncmp(rep->str, "TRYAGAIN", 8));
}

/* Turns a hiredis outcome into lorq's: a connection failure or a transient
 * refusal drops the connection; an error reply is reported. */
static redisReply *check_reply(lq_redis *r, redisReply *rep, lq_error *err) {
    if (!rep) {
        lq_fail(err, "redis %s: %s", r->url_text, r->c && r->c->errstr[0] ? r->c->errstr : "connection lost");
        lq_redis_disconnect(r);
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        lq_fail(err, "redis: %s", rep->str);
        if (transient_error(rep)) lq_redis_disconnect(r);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

redisReply *lq_redis_argv(lq_redis *r, int argc, const char **argv, const size_t *lens, lq_error *err) {
    if (!r->c) {
        lq_fail(err, "redis %s: not connected", r->url_text);
        return NULL;
    }
    return check_reply(r, redisCommandArgv(r->c, argc, argv, lens), err);
}

redisReply *lq_redis_cmd(lq_redis *r, lq_error *err, const char *fmt, ...) {
    if (!r->c) {
        lq_fail(err, "redis %s: not connected", r->url_text);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(r->c, fmt, ap);
    va_end(ap);
    return check_reply(r, rep, err);
}

static int load_scripts(lq_redis *r, lq_error *err) {
    for (int i = 0; i < LQ_SCRIPT_COUNT; i++) {
        redisReply *rep = lq_redis_cmd(r, err, "SCRIPT LOAD %s", r->source[i]);
        if (!rep) {
            lq_error_prefix(err, "loading lua/%s.lua", script_names[i]);
            return -1;
        }
        if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
            freeReplyObject(rep);
            return lq_fail(err, "SCRIPT LOAD of %s.lua gave an unexpected reply", script_names[i]);
        }
        memcpy(r->sha[i], rep->str, 40);
        r->sha[i][40] = 0;
        freeReplyObject(rep);
    }
    return 0;
}

static int authenticate(lq_redis *r, lq_error *err) {
    redisReply *rep = NULL;
    if (r->url.user[0]) rep = lq_redis_cmd(r, err, "AUTH %s %s", r->url.user, r->url.password);
    else if (r->url.password[0]) rep = lq_redis_cmd(r, err, "AUTH %s", r->url.password);
    else return 0;
    if (!rep) return -1;
    freeReplyObject(rep);
    return 0;
}

static int select_db(lq_redis *r, lq_error *err) {
    if (r->url.db == 0) return 0;
    redisReply *rep = lq_redis_cmd(r, err, "SELECT %d", r->url.db);
    if (!rep) return -1;
    freeReplyObject(rep);
    return 0;
}

static int open_socket(lq_redis *r, lq_error *err) {
    struct timeval tv = tv_ms(r->connect_timeout_ms);
    redisContext *c = r->url.path[0] ? redisConnectUnixWithTimeout(r->url.path, tv)
                                     : redisConnectWithTimeout(r->url.host, r->url.port, tv);
    if (!c) return lq_fail(err, "redis %s: out of memory", r->url_text);
    if (c->err) {
        lq_fail(err, "redis %s: %s", r->url_text, c->errstr);
        redisFree(c);
        return -1;
    }
    if (redisSetTimeout(c, tv_ms(r->command_timeout_ms)) != REDIS_OK) {
        lq_fail(err, "redis %s: cannot set the socket timeout", r->url_text);
        redisFree(c);
        return -1;
    }
    if (!r->url.path[0]) redisEnableKeepAlive(c);
    r->c = c;
    return 0;
}

int lq_redis_connect(lq_redis *r, lq_error *err) {
    lq_redis_disconnect(r);
    if (open_socket(r, err)) return -1;
    if (authenticate(r, err) || select_db(r, err) || load_scripts(r, err)) {
        lq_redis_disconnect(r);
        return -1;
    }
    return 0;
}

int lq_redis_connect_retry(lq_redis *r, volatile sig_atomic_t *stop, void (*log_fn)(const char *msg), lq_error *err) {
    lq_backoff b;
    lq_backoff_reset(&b);
    while (!(stop && *stop)) {
        if (lq_redis_connect(r, err) == 0) return 0;
        int d = lq_backoff_next(&b);
        if (log_fn) {
            char line[700];
            snprintf(line, sizeof line, "%s; retrying in %d ms", err->msg, d);
            log_fn(line);
        }
        lq_sleep_ms(d);
    }
    lq_fail(err, "stopped while connecting to redis %s", r->url_text);
    return -1;
}

/* ---- script calls ---- */

void lq_script_call_init(lq_script_call *c, lq_script s) {
    c->script = s;
    c->n_keys = c->n_args = 0;
}

static void call_push(lq_script_call *c, const char *s, size_t len) {
    int i = c->n_keys + c->n_args;
    if (i >= (int)(sizeof c->argv / sizeof c->argv[0])) return; /* the scripts take far fewer */
    c->argv[i] = s;
    c->lens[i] = len;
}

void lq_script_call_key(lq_script_call *c, const char *key) {
    call_push(c, key, strlen(key));
    c->n_keys++;
}

void lq_script_call_arg(lq_script_call *c, const char *arg, size_t len) {
    call_push(c, arg, len);
    c->n_args++;
}

void lq_script_call_str(lq_script_call *c, const char *arg) { lq_script_call_arg(c, arg, strlen(arg)); }

/* EVALSHA sha nkeys keys... args... */
static int append_evalsha(lq_redis *r, const lq_script_call *c) {
    const char *argv[3 + 24];
    size_t lens[3 + 24];
    char nkeys[16];
    int n = c->n_keys + c->n_args;
    snprintf(nkeys, sizeof nkeys, "%d", c->n_keys);
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = r->sha[c->script];
    lens[1] = 40;
    argv[2] = nkeys;
    lens[2] = strlen(nkeys);
    for (int i = 0; i < n; i++) {
        argv[3 + i] = c->argv[i];
        lens[3 + i] = c->lens[i];
    }
    return redisAppendCommandArgv(r->c, 3 + n, argv, lens) == REDIS_OK ? 0 : -1;
}

static int is_noscript(const redisReply *rep) {
    return rep && rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8);
}

int lq_redis_eval_pipeline(lq_redis *r, const lq_script_call *calls, int n, redisReply **replies, lq_error *err) {
    for (int i = 0; i < n; i++) replies[i] = NULL;
    if (!r->c) return lq_fail(err, "redis %s: not connected", r->url_text), 0;
    for (int i = 0; i < n; i++)
        if (append_evalsha(r, &calls[i])) {
            lq_fail(err, "redis: out of memory building a pipeline");
            lq_redis_disconnect(r);
            return 0;
        }
    int got = 0, noscript = 0;
    for (; got < n; got++) {
        void *rep = NULL;
        if (redisGetReply(r->c, &rep) != REDIS_OK || !rep) {
            check_reply(r, NULL, err); /* marks the connection down */
            return got;
        }
        replies[got] = rep;
        if (is_noscript(rep)) noscript = 1;
    }
    if (!noscript) return got;
    /* Redis lost its script cache: load the scripts and re-send those calls. */
    if (load_scripts(r, err)) return 0;
    for (int i = 0; i < n; i++) {
        if (!is_noscript(replies[i])) continue;
        freeReplyObject(replies[i]);
        replies[i] = NULL;
        if (append_evalsha(r, &calls[i]) || redisGetReply(r->c, (void **)&replies[i]) != REDIS_OK) {
            check_reply(r, NULL, err);
            return i;
        }
    }
    return n;
}

redisReply *lq_redis_eval(lq_redis *r, const lq_script_call *c, lq_error *err) {
    redisReply *rep = NULL;
    if (lq_redis_eval_pipeline(r, c, 1, &rep, err) != 1) return NULL;
    if (rep->type == REDIS_REPLY_ERROR) {
        lq_fail(err, "redis: %s.lua: %s", script_names[c->script], rep->str);
        if (transient_error(rep)) lq_redis_disconnect(r);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

/* ---- replies ---- */

const char *lq_reply_str(const redisReply *rep, size_t i) {
    if (!rep || rep->type != REDIS_REPLY_ARRAY || i >= rep->elements) return NULL;
    const redisReply *e = rep->element[i];
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS ? e->str : NULL;
}

const char *lq_reply_word(const redisReply *rep) { return lq_reply_str(rep, 0); }

long long lq_reply_int(const redisReply *rep, size_t i) {
    if (!rep || rep->type != REDIS_REPLY_ARRAY || i >= rep->elements) return -1;
    const redisReply *e = rep->element[i];
    if (e->type == REDIS_REPLY_INTEGER) return e->integer;
    if (e->type == REDIS_REPLY_STRING) {
        char *end;
        long long v = strtoll(e->str, &end, 10);
        return *e->str && !*end ? v : -1;
    }
    return -1;
}

/* ---- keys ---- */

static char *key2(const lq_redis *r, const char *kind, const char *name, char *buf) {
    snprintf(buf, LQ_KEY_MAX, "%s%s%s", r->prefix, kind, name ? name : "");
    return buf;
}

char *lq_key_queue(const lq_redis *r, const char *adapter, char *buf) {
    return key2(r, "q:", adapter && *adapter ? adapter : "@base", buf);
}
char *lq_key_queues(const lq_redis *r, char *buf) { return key2(r, "queues", NULL, buf); }
char *lq_key_queues_new(const lq_redis *r, char *buf) { return key2(r, "queues:new", NULL, buf); }
char *lq_key_control(const lq_redis *r, char *buf) { return key2(r, "control", NULL, buf); }
char *lq_key_job(const lq_redis *r, const char *id, char *buf) { return key2(r, "job:", id, buf); }
char *lq_key_log(const lq_redis *r, const char *id, char *buf) { return key2(r, "log:", id, buf); }
char *lq_key_channel(const lq_redis *r, const char *id, char *buf) { return key2(r, "ch:", id, buf); }
char *lq_key_dead(const lq_redis *r, char *buf) { return key2(r, "dead", NULL, buf); }
char *lq_key_worker(const lq_redis *r, const char *wid, char *buf) { return key2(r, "worker:", wid, buf); }
char *lq_key_workers(const lq_redis *r, char *buf) { return key2(r, "workers", NULL, buf); }

const char *lq_key_queue_adapter(const lq_redis *r, const char *key, char *buf) {
    size_t np = strlen(r->prefix);
    if (strncmp(key, r->prefix, np) != 0 || strncmp(key + np, "q:", 2) != 0) return NULL;
    const char *a = key + np + 2;
    if (!strcmp(a, "@base")) a = "";
    if (strlen(a) > LQ_ADAPTER_ID_MAX) return NULL;
    strcpy(buf, a);
    return buf;
}
