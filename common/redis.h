/* redis.h — what every synchronous Redis client of lorq needs: the worker,
 * `lorq submit`, and the gateway's synchronous parts.
 *
 *   - REDIS_URL parsing: redis://[[user]:password@]host[:port][/db] and
 *     unix:///path[?db=N];
 *   - a connection with timeouts, AUTH and SELECT, that can be dropped and
 *     made again with exponential backoff (100 ms doubling to 5 s) when Redis
 *     goes away;
 *   - key names under the shared prefix (LORQ_PREFIX, default "lorq:"), in
 *     one place so that docs/protocol.md's table and the code agree;
 *   - the script registry: the lua/ scripts read once at start-up, SCRIPT LOADed on
 *     every (re)connection, called with EVALSHA; a NOSCRIPT reply (Redis
 *     restarted, SCRIPT FLUSH) loads them again and retries, so callers never
 *     see it.
 *
 * Errors: a function that fails fills lq_error and returns -1 or NULL. A
 * connection-level failure (EOF, timeout, refused) also marks the connection
 * down (lq_redis_up() is 0) so that the caller knows to reconnect rather than
 * give up on the job at hand. */
#ifndef LORQ_REDIS_H
#define LORQ_REDIS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "error.h"

#define LQ_REDIS_DEFAULT_URL "redis://127.0.0.1:6379"
#define LQ_DEFAULT_PREFIX "lorq:"
#define LQ_GROUP "workers"
#define LQ_PREFIX_MAX 128

typedef struct lq_redis_url {
    char host[256];
    int port;
    char path[256]; /* unix socket path; "" for TCP */
    char user[128], password[256];
    int db;
} lq_redis_url;

/* Parses a REDIS_URL. Percent-escapes are decoded in the user and password. */
int lq_redis_url_parse(const char *url, lq_redis_url *u, lq_error *err);

/* Checks a key prefix: 1–128 printable bytes without spaces. */
int lq_prefix_valid(const char *prefix);

/* The scripts of lua/, in the order of lq_script_names(). */
typedef enum lq_script {
    LQ_SCRIPT_ENQUEUE,
    LQ_SCRIPT_START,
    LQ_SCRIPT_EMIT,
    LQ_SCRIPT_COMPLETE,
    LQ_SCRIPT_FAIL,
    LQ_SCRIPT_CANCEL,
    LQ_SCRIPT_COUNT
} lq_script;

const char *lq_script_name(lq_script s); /* "enqueue", ... (the file is lua/<name>.lua) */

/* Where lua/ is: $LORQ_LUA_DIR, else <dir of the executable>/../lua, else ./lua.
 * Writes into buf; -1 with err when none holds enqueue.lua. */
int lq_lua_dir_find(char *buf, size_t size, lq_error *err);

typedef struct lq_redis lq_redis;

typedef struct lq_redis_opts {
    const char *url;    /* NULL: LQ_REDIS_DEFAULT_URL */
    const char *prefix; /* NULL: LQ_DEFAULT_PREFIX */
    const char *lua_dir; /* NULL: lq_lua_dir_find() */
    int connect_timeout_ms; /* 0: 2000 */
    int command_timeout_ms; /* 0: 10000; must exceed any BLOCK the caller uses */
} lq_redis_opts;

/* Parses the URL and reads the scripts; does not connect. */
lq_redis *lq_redis_new(const lq_redis_opts *o, lq_error *err);
/* A second, unconnected lq_redis to the same server (for another thread:
 * a connection is used by one thread at a time). */
lq_redis *lq_redis_clone(const lq_redis *r, lq_error *err);
void lq_redis_free(lq_redis *r);

/* Connects (AUTH, SELECT, SCRIPT LOAD). One attempt. */
int lq_redis_connect(lq_redis *r, lq_error *err);
/* Connects, retrying with backoff until it works or *stop becomes nonzero
 * (stop may be NULL). Logs each failure once per attempt through log_fn when
 * given. Returns 0 when connected, -1 when stopped. */
int lq_redis_connect_retry(lq_redis *r, volatile sig_atomic_t *stop, void (*log_fn)(const char *msg), lq_error *err);
void lq_redis_disconnect(lq_redis *r);
int lq_redis_up(const lq_redis *r);
/* The raw hiredis context (NULL when down), for pipelines and pub/sub. */
redisContext *lq_redis_ctx(lq_redis *r);
/* Marks the connection down after a failure the caller saw on the raw context. */
void lq_redis_mark_down(lq_redis *r);
const char *lq_redis_prefix(const lq_redis *r);
const char *lq_redis_url_text(const lq_redis *r); /* the URL without its password, for logs */

/* Exponential backoff: 100 ms doubling to 5 s. */
typedef struct lq_backoff {
    int next_ms;
} lq_backoff;
void lq_backoff_reset(lq_backoff *b);
int lq_backoff_next(lq_backoff *b); /* the delay to wait now; doubles the next one */
void lq_sleep_ms(int ms);
int64_t lq_time_ms(void); /* Unix time, milliseconds */
int64_t lq_mono_ms(void); /* monotonic clock, milliseconds: for intervals and timers */

/* One command from argv. NULL with err on a connection failure (and the
 * connection is marked down) or on an error reply (connection stays up). */
redisReply *lq_redis_argv(lq_redis *r, int argc, const char **argv, const size_t *lens, lq_error *err);
/* printf-style, hiredis's format (%s, %b, %d, ...). */
redisReply *lq_redis_cmd(lq_redis *r, lq_error *err, const char *fmt, ...);

/* A script call: keys then arguments, as in docs/protocol.md's table. */
typedef struct lq_script_call {
    lq_script script;
    int n_keys, n_args;
    const char *argv[24]; /* keys then args */
    size_t lens[24];
} lq_script_call;

void lq_script_call_init(lq_script_call *c, lq_script s);
void lq_script_call_key(lq_script_call *c, const char *key);
void lq_script_call_arg(lq_script_call *c, const char *arg, size_t len);
void lq_script_call_str(lq_script_call *c, const char *arg);

/* Runs one script call (EVALSHA, NOSCRIPT handled). NULL with err as for
 * lq_redis_argv; an error reply from the script itself also gives NULL. */
redisReply *lq_redis_eval(lq_redis *r, const lq_script_call *c, lq_error *err);

/* Runs n script calls in one round trip. replies[i] is each call's reply or
 * NULL. Returns the number of replies received (n when the connection held);
 * a NOSCRIPT reply reloads the scripts and re-sends that call (so the calls
 * must be idempotent). Calls after a connection failure get NULL replies and
 * the connection is marked down. */
int lq_redis_eval_pipeline(lq_redis *r, const lq_script_call *calls, int n, redisReply **replies, lq_error *err);

/* The first element of a script's reply ("ok", "run", ...) when it has one. */
const char *lq_reply_word(const redisReply *rep);
/* Element i of an array reply as a string (NULL when absent or not a string). */
const char *lq_reply_str(const redisReply *rep, size_t i);
/* Element i of an array reply as an integer (strings are parsed); -1 when absent. */
long long lq_reply_int(const redisReply *rep, size_t i);

/* Key names (docs/protocol.md "Keys"). Each writes prefix + suffix into buf
 * and returns buf; they never fail for ids that pass lq_job_id_valid /
 * lq_adapter_id_valid with buffers of LQ_KEY_MAX bytes. */
#define LQ_KEY_MAX 320
char *lq_key_queue(const lq_redis *r, const char *adapter, char *buf); /* P q:<adapter>, "" -> P q:@base */
char *lq_key_queues(const lq_redis *r, char *buf);                     /* P queues */
char *lq_key_queues_new(const lq_redis *r, char *buf);                 /* P queues:new */
char *lq_key_control(const lq_redis *r, char *buf);                    /* P control */
char *lq_key_job(const lq_redis *r, const char *id, char *buf);        /* P job:<id> */
char *lq_key_log(const lq_redis *r, const char *id, char *buf);        /* P log:<id> */
char *lq_key_channel(const lq_redis *r, const char *id, char *buf);    /* P ch:<id> */
char *lq_key_dead(const lq_redis *r, char *buf);                       /* P dead */
char *lq_key_worker(const lq_redis *r, const char *wid, char *buf);    /* P worker:<wid> */
char *lq_key_workers(const lq_redis *r, char *buf);                    /* P workers */
/* The adapter id of a queue key (P q:<adapter>) into buf (LQ_KEY_MAX bytes), NULL if it is not one. */
const char *lq_key_queue_adapter(const lq_redis *r, const char *key, char *buf);

#endif
