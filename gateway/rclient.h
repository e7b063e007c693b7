/* rclient.h — the gateway's asynchronous Redis client, on the HTTP server's
 * event loop.
 *
 * Two hiredis async connections: one for commands and scripts, one for
 * pub/sub (a subscribed connection cannot run other commands). Both
 * reconnect on their own with exponential backoff (100 ms doubling to 5 s)
 * after Redis goes away; a PING every second on the command connection
 * notices a Redis that stopped answering without closing the socket.
 *
 * Commands: lq_rc_command and lq_rc_eval return -1 at once when the command
 * connection is down (fn is then never called); otherwise fn is called
 * exactly once, with the reply, or with NULL when the connection failed
 * first. Callers that keep state for the reply hold a reference on it until
 * then. Scripts run with EVALSHA; a NOSCRIPT reply (Redis restarted, or
 * SCRIPT FLUSH) is answered by sending the script's source with EVAL, which
 * also caches it again, so callers never see NOSCRIPT.
 *
 * Subscriptions are kept in a table by channel. A subscription outlives
 * connections: after a reconnection every channel is subscribed again and
 * its `subscribed` callback runs again, which is where a follower replays
 * what it may have missed. Messages for a channel that is no longer in the
 * table are dropped, so a subscriber can go away without waiting for Redis
 * to confirm the UNSUBSCRIBE. */
#ifndef LORQ_GW_RCLIENT_H
#define LORQ_GW_RCLIENT_H

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stddef.h>

#include "error.h"
#include "redis.h"

typedef struct lq_rc lq_rc;

typedef void (*lq_rc_reply_fn)(redisReply *reply, void *priv);

typedef struct lq_rc_sub_ops {
    void (*subscribed)(void *priv); /* Redis confirmed the subscription (again, after a reconnection) */
    void (*message)(void *priv, const char *data, size_t len);
} lq_rc_sub_ops;

typedef struct lq_rc_opts {
    const char *url;     /* REDIS_URL */
    const char *lua_dir; /* NULL: lq_lua_dir_find() */
} lq_rc_opts;

/* Reads the scripts and starts connecting (it does not wait). */
lq_rc *lq_rc_new(struct event_base *base, const lq_rc_opts *o, lq_error *err);
/* Closes both connections: pending callbacks run with NULL replies. */
void lq_rc_free(lq_rc *rc);

/* Both connections are up. */
int lq_rc_up(const lq_rc *rc);
/* Milliseconds since the command connection was last up (0 while up). */
long long lq_rc_down_ms(const lq_rc *rc);

int lq_rc_command(lq_rc *rc, lq_rc_reply_fn fn, void *priv, int argc, const char **argv, const size_t *lens);
/* A script: keys then arguments in argv (n_keys of argc). fn may be NULL. */
int lq_rc_eval(lq_rc *rc, lq_script s, lq_rc_reply_fn fn, void *priv, int n_keys, int argc, const char **argv,
               const size_t *lens);

/* -1 when the pub/sub connection is down (nothing is registered) or the
 * channel is taken. */
int lq_rc_subscribe(lq_rc *rc, const char *channel, const lq_rc_sub_ops *ops, void *priv);
void lq_rc_unsubscribe(lq_rc *rc, const char *channel);
size_t lq_rc_subscriptions(const lq_rc *rc);

#endif
