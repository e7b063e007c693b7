/* cmd_submit.c — `lorq submit`: put one job on the queue and follow it, the
 * way the gateway does (docs/protocol.md), from the command line.
 *
 * Order matters: it subscribes to the job's channel first, then enqueues
 * through lua/enqueue.lua, so no event can be published before it listens.
 * Events are kept only when they carry the next index it expects; a gap (an
 * index ahead of it), a quiet second, or a reconnection after Redis went away
 * is filled by reading the job's log from that index. The log holds every
 * event in order, so whatever the channel lost, the client prints every
 * token exactly once.
 *
 * Exit status: 0 when the job finishes normally (length, eos_token,
 * stop_sequence), 1 when it fails, is cancelled or times out (the job is then
 * cancelled), 2 for bad arguments. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "commands.h"
#include "hub.h"
#include "job.h"
#include "redis.h"
#include "tokenizer.h"

typedef struct submit_opts {
    const char *adapter, *prompt, *prompt_ids, *model, *redis_url, *prefix, *id, *tenant;
    lq_job_params params;
    int max_new_tokens;
    int stream, json;
    double timeout_s;
    long long ttl_s;
} submit_opts;

/* What the client has seen of its job. */
typedef struct follow {
    lq_redis *cmd, *sub; /* commands; the subscription */
    char k_log[LQ_KEY_MAX], k_ch[LQ_KEY_MAX];
    const submit_opts *o;
    int next; /* the index of the next token event to print */
    int done;
    lq_event end;
    json_t *ids;
} follow;

static void usage(void) {
    fprintf(stderr,
            "usage: lorq submit (--prompt TEXT | --prompt-ids ID,ID,...) [options]\n"
            "  --adapter ID              adapter id (default: the base model)\n"
            "  --model DIR               model folder for the tokenizer (default: $MODEL_ID)\n"
            "  --max-new-tokens N        (default 64)\n"
            "  --do-sample --temperature T --top-k K --top-p P --typical-p P --seed S\n"
            "  --repetition-penalty R --frequency-penalty F --presence-penalty P\n"
            "  --stop TEXT (repeatable)  --ignore-eos  --top-n-tokens N\n"
            "  --stream                  print tokens as they arrive\n"
            "  --json                    print the result as one JSON object (with --stream: one line per token too)\n"
            "  --redis URL               (default: $REDIS_URL or " LQ_REDIS_DEFAULT_URL ")\n"
            "  --prefix P                key prefix (default: $LORQ_PREFIX or " LQ_DEFAULT_PREFIX ")\n"
            "  --timeout S               give up (and cancel the job) after S seconds; also the job's deadline\n"
            "  --id ID  --tenant NAME    job id (default: generated) and tenant (default: cli)\n");
}

/* ---- arguments ---- */

static int parse_double(const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    *out = strtod(v, &end);
    if (end == v || *end || errno) {
        fprintf(stderr, "lorq submit: %s wants a number, not '%s'\n", flag, v);
        return -1;
    }
    return 0;
}

static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(v, &end, 10);
    if (end == v || *end || errno || *out < lo || *out > hi) {
        fprintf(stderr, "lorq submit: %s wants an integer from %lld to %lld, not '%s'\n", flag, lo, hi, v);
        return -1;
    }
    return 0;
}

/* Options that take a number and set a sampling parameter. */
static int parse_param(submit_opts *o, const char *a, const char *v, int *warpers) {
    long long n;
    lq_job_params *p = &o->params;
    if (!strcmp(a, "--temperature")) return *warpers = 1, parse_double(a, v, &p->temperature);
    if (!strcmp(a, "--top-p")) return *warpers = 1, parse_double(a, v, &p->top_p);
    if (!strcmp(a, "--typical-p")) return *warpers = 1, parse_double(a, v, &p->typical_p);
    if (!strcmp(a, "--repetition-penalty")) return parse_double(a, v, &p->repetition_penalty);
    if (!strcmp(a, "--frequency-penalty")) return parse_double(a, v, &p->frequency_penalty);
    if (!strcmp(a, "--presence-penalty")) return parse_double(a, v, &p->presence_penalty);
    if (!strcmp(a, "--top-k")) {
        *warpers = 1;
        if (parse_int(a, v, 0, INT32_MAX, &n)) return -1;
        p->top_k = (int)n;
        return 0;
    }
    if (!strcmp(a, "--top-n-tokens")) {
        if (parse_int(a, v, 0, LQ_JOB_MAX_TOP_N, &n)) return -1;
        p->top_n_tokens = (int)n;
        return 0;
    }
    if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        p->seed = strtoull(v, &end, 10);
        if (end == v || *end || errno || *v == '-')
            return fprintf(stderr, "lorq submit: --seed wants an unsigned 64-bit integer, not '%s'\n", v), -1;
        p->has_seed = 1;
        return 0;
    }
    if (!strcmp(a, "--max-new-tokens")) {
        if (parse_int(a, v, 1, INT32_MAX, &n)) return -1;
        o->max_new_tokens = (int)n;
        return 0;
    }
    if (!strcmp(a, "--timeout")) {
        if (parse_double(a, v, &o->timeout_s)) return -1;
        if (!(o->timeout_s > 0)) return fprintf(stderr, "lorq submit: --timeout must be positive\n"), -1;
        return 0;
    }
    if (!strcmp(a, "--stop")) {
        if (p->n_stop == LQ_JOB_MAX_STOP) return fprintf(stderr, "lorq submit: at most %d --stop\n", LQ_JOB_MAX_STOP), -1;
        p->stop[p->n_stop++] = (char *)v;
        return 0;
    }
    return 1; /* not a parameter */
}

static int parse_string_opt(submit_opts *o, const char *a, const char *v) {
    const char **dst = !strcmp(a, "--adapter")      ? &o->adapter
                       : !strcmp(a, "--prompt")     ? &o->prompt
                       : !strcmp(a, "--prompt-ids") ? &o->prompt_ids
                       : !strcmp(a, "--model")      ? &o->model
                       : !strcmp(a, "--redis")      ? &o->redis_url
                       : !strcmp(a, "--prefix")     ? &o->prefix
                       : !strcmp(a, "--id")         ? &o->id
                       : !strcmp(a, "--tenant")     ? &o->tenant
                                                    : NULL;
    if (!dst) return 1;
    *dst = v;
    return 0;
}

static int parse_opts(int argc, char **argv, submit_opts *o) {
    memset(o, 0, sizeof *o);
    o->params = lq_job_params_default();
    o->max_new_tokens = 64;
    o->adapter = "";
    o->tenant = "cli";
    o->model = getenv("MODEL_ID");
    o->redis_url = getenv("REDIS_URL") && *getenv("REDIS_URL") ? getenv("REDIS_URL") : LQ_REDIS_DEFAULT_URL;
    o->prefix = getenv("LORQ_PREFIX") && *getenv("LORQ_PREFIX") ? getenv("LORQ_PREFIX") : LQ_DEFAULT_PREFIX;
    o->ttl_s = 3600;
    int warpers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--stream")) o->stream = 1;
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--do-sample")) o->params.do_sample = 1;
        else if (!strcmp(a, "--ignore-eos")) o->params.ignore_eos = 1;
        else if (!strncmp(a, "--", 2)) {
            if (i + 1 >= argc) return fprintf(stderr, "lorq submit: %s needs a value\n", a), -1;
            const char *v = argv[++i];
            int r = parse_string_opt(o, a, v);
            if (r == 1) r = parse_param(o, a, v, &warpers);
            if (r == 1) return fprintf(stderr, "lorq submit: unknown option '%s'\n", a), -1;
            if (r) return -1;
        } else {
            return fprintf(stderr, "lorq submit: unexpected argument '%s'\n", a), -1;
        }
    }
    if (warpers) o->params.do_sample = 1;
    const char *ttl = getenv("RESULT_TTL");
    if (ttl && *ttl && parse_int("RESULT_TTL", ttl, 1, 365LL * 86400, &o->ttl_s)) return -1;
    if (!o->prompt == !o->prompt_ids) return fprintf(stderr, "lorq submit: give exactly one of --prompt / --prompt-ids\n"), -1;
    if (o->prompt && !o->model)
        return fprintf(stderr, "lorq submit: --prompt needs the tokenizer: give --model DIR (or set MODEL_ID)\n"), -1;
    if (!lq_adapter_id_valid(o->adapter))
        return fprintf(stderr, "lorq submit: '%s' is not a valid adapter id ([A-Za-z0-9._/-], 1-128 bytes)\n", o->adapter), -1;
    if (o->id && !lq_job_id_valid(o->id))
        return fprintf(stderr, "lorq submit: '%s' is not a valid job id ([A-Za-z0-9_-], 1-64 bytes)\n", o->id), -1;
    const char *bad = lq_job_params_check(&o->params);
    if (bad) return fprintf(stderr, "lorq submit: %s\n", bad), -1;
    return 0;
}

static int parse_ids(const char *s, int32_t **ids, int *n) {
    size_t len = strlen(s);
    *ids = malloc(sizeof **ids * (len / 2 + 1));
    *n = 0;
    if (!*ids) return -1;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) return -1;
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return *n ? 0 : -1;
}

static int tokenize(const submit_opts *o, int32_t **ids, int *n, lq_error *err) {
    if (o->prompt_ids) {
        if (parse_ids(o->prompt_ids, ids, n) == 0) return 0;
        return lq_fail(err, "--prompt-ids: expected comma-separated token ids");
    }
    char dir[4096];
    if (lq_resolve_source(o->model, LQ_HUB_MODEL, dir, sizeof dir, err)) return -1;
    lq_tokenizer *tok = tok_load(dir, err);
    if (!tok) return -1;
    size_t count = 0;
    int rc = tok_encode(tok, o->prompt, strlen(o->prompt), 1, ids, &count, err);
    tok_free(tok);
    *n = (int)count;
    if (rc == 0 && count == 0) rc = lq_fail(err, "the prompt encodes to no tokens");
    return rc;
}

/* ---- output ---- */

static void print_token(follow *f, const lq_event *e) {
    json_array_append_new(f->ids, json_integer(e->token));
    if (!f->o->stream) return;
    if (f->o->json) {
        json_t *line = json_pack("{s:i, s:i, s:s%, s:f, s:b}", "index", e->index, "token", e->token, "text", e->text,
                                 e->text_len, "logprob", (double)e->logprob, "special", e->special);
        json_dumpf(line, stdout, JSON_COMPACT);
        json_decref(line);
        fputc('\n', stdout);
    } else if (!e->special) {
        fwrite(e->text, 1, e->text_len, stdout);
    }
    fflush(stdout);
}

static int print_result(follow *f, const char *id) {
    const lq_event *e = &f->end;
    int ok = strcmp(e->finish_reason, "error") && strcmp(e->finish_reason, "cancelled");
    if (f->o->json) {
        json_t *out = json_pack("{s:s, s:s%, s:O, s:s, s:i, s:i}", "id", id, "text", e->text, e->text_len, "ids",
                                f->ids, "finish_reason", e->finish_reason, "generated_tokens", e->generated_tokens,
                                "prompt_tokens", e->prompt_tokens);
        if (e->error) json_object_set_new(out, "error", json_string(e->error));
        if (e->error_type) json_object_set_new(out, "error_type", json_string(e->error_type));
        if (e->worker) json_object_set_new(out, "worker", json_string(e->worker));
        if (e->has_seed) json_object_set_new(out, "seed", json_integer((json_int_t)e->seed));
        if (e->queue_ms >= 0) json_object_set_new(out, "queue_ms", json_integer(e->queue_ms));
        if (e->run_ms >= 0) json_object_set_new(out, "run_ms", json_integer(e->run_ms));
        json_dumpf(out, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(out);
        fputc('\n', stdout);
    } else if (f->o->stream) {
        fputc('\n', stdout);
    } else if (ok) {
        fwrite(e->text, 1, e->text_len, stdout);
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (!strcmp(e->finish_reason, "error"))
        fprintf(stderr, "lorq submit: job %s failed (%s): %s\n", id, e->error_type ? e->error_type : "?",
                e->error ? e->error : "no message");
    else if (!ok)
        fprintf(stderr, "lorq submit: job %s was cancelled\n", id);
    else
        fprintf(stderr, "[job %s: %d prompt tokens, %d generated, finish: %s, worker %s, queued %lld ms, ran %lld ms]\n",
                id, e->prompt_tokens, e->generated_tokens, e->finish_reason, e->worker ? e->worker : "?",
                (long long)e->queue_ms, (long long)e->run_ms);
    return ok ? 0 : 1;
}

/* ---- following the job ---- */

static void replay_log(follow *f);

/* One event, from the channel or the log: keep it only if it is the next. */
static void on_event(follow *f, const char *data, size_t len, int from_log) {
    lq_event e;
    lq_error err;
    if (f->done) return;
    if (lq_event_decode(data, len, &e, &err)) {
        fprintf(stderr, "lorq submit: ignoring an unreadable event: %s\n", err.msg);
        return;
    }
    if (e.type == LQ_EVENT_TOKEN && e.index == f->next) {
        print_token(f, &e);
        f->next++;
    } else if (e.type == LQ_EVENT_END && e.index <= f->next) {
        f->end = e;
        f->done = 1;
        return;
    } else if (!from_log && e.index > f->next) {
        replay_log(f); /* we missed some: the log has them, and this one */
    }
    lq_event_clear(&e);
}

/* Reads the log from the next expected index. */
static void replay_log(follow *f) {
    lq_error err;
    redisReply *rep = lq_redis_cmd(f->cmd, &err, "LRANGE %s %d -1", f->k_log, f->next);
    if (!rep) return; /* the caller notices the connection is down */
    if (rep->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < rep->elements && !f->done; i++)
            if (rep->element[i]->type == REDIS_REPLY_STRING) on_event(f, rep->element[i]->str, rep->element[i]->len, 1);
    freeReplyObject(rep);
}

/* Waits up to ms for one pub/sub message and handles it. 0: message or quiet; -1: connection lost. */
static int read_message(follow *f, int ms) {
    redisContext *c = lq_redis_ctx(f->sub);
    void *reply = NULL;
    if (redisGetReplyFromReader(c, &reply) != REDIS_OK) return -1;
    if (!reply) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r = poll(&p, 1, ms);
        if (r < 0) return errno == EINTR ? 0 : -1;
        if (r == 0) return 0;
        if (redisBufferRead(c) != REDIS_OK || redisGetReplyFromReader(c, &reply) != REDIS_OK) return -1;
        if (!reply) return 0;
    }
    redisReply *m = reply;
    if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 && m->element[0]->type == REDIS_REPLY_STRING &&
        !strcmp(m->element[0]->str, "message") && m->element[2]->type == REDIS_REPLY_STRING)
        on_event(f, m->element[2]->str, m->element[2]->len, 0);
    freeReplyObject(m);
    return 0;
}

static int subscribe(follow *f, lq_error *err) {
    redisReply *rep = lq_redis_cmd(f->sub, err, "SUBSCRIBE %s", f->k_ch);
    if (!rep) return -1;
    freeReplyObject(rep);
    return 0;
}

/* Both connections up and subscribed; after a reconnection, catch up from the log. */
static int connect_both(follow *f, int first, lq_error *err) {
    lq_backoff b;
    lq_backoff_reset(&b);
    for (;;) {
        if ((lq_redis_up(f->sub) || (lq_redis_connect(f->sub, err) == 0 && subscribe(f, err) == 0)) &&
            (lq_redis_up(f->cmd) || lq_redis_connect(f->cmd, err) == 0))
            break;
        if (first) return -1;
        int d = lq_backoff_next(&b);
        fprintf(stderr, "lorq submit: %s; reconnecting in %d ms\n", err->msg, d);
        lq_sleep_ms(d);
    }
    return 0;
}

static int follow_job(follow *f, double timeout_s, lq_error *err) {
    double start = lq_time_ms() / 1000.0;
    replay_log(f);
    while (!f->done) {
        if (timeout_s > 0 && lq_time_ms() / 1000.0 - start > timeout_s)
            return lq_fail(err, "timed out after %.1f s", timeout_s);
        if (!lq_redis_up(f->sub) || !lq_redis_up(f->cmd)) {
            lq_redis_disconnect(f->sub);
            if (connect_both(f, 0, err)) return -1;
            replay_log(f);
            continue;
        }
        int before = f->next;
        if (read_message(f, 1000) < 0) {
            lq_redis_mark_down(f->sub);
            continue;
        }
        if (f->next == before && !f->done) replay_log(f); /* a quiet second: make sure nothing was missed */
    }
    return 0;
}

/* ---- enqueueing ---- */

static void make_id(char *out, size_t size) {
    unsigned char r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        for (size_t i = 0; i < sizeof r; i++) r[i] = (unsigned char)rand();
    int n = snprintf(out, size, "%llx-", (unsigned long long)lq_time_ms());
    for (size_t i = 0; i < sizeof r && (size_t)n + 2 < size; i++) n += snprintf(out + n, size - (size_t)n, "%02x", r[i]);
}

static int enqueue(follow *f, const lq_job *job, lq_error *err) {
    lq_buf body = {0};
    if (lq_job_encode(job, &body, err)) return -1;
    char k_job[LQ_KEY_MAX], k_stream[LQ_KEY_MAX], k_queues[LQ_KEY_MAX], k_new[LQ_KEY_MAX], now[24], expire[24];
    long long life = job->deadline_ms ? job->deadline_ms - job->created_ms : 24LL * 3600 * 1000;
    snprintf(now, sizeof now, "%lld", (long long)job->created_ms);
    snprintf(expire, sizeof expire, "%lld", life + f->o->ttl_s * 1000);
    lq_script_call c;
    lq_script_call_init(&c, LQ_SCRIPT_ENQUEUE);
    lq_script_call_key(&c, lq_key_job(f->cmd, job->id, k_job));
    lq_script_call_key(&c, lq_key_queue(f->cmd, job->adapter, k_stream));
    lq_script_call_key(&c, lq_key_queues(f->cmd, k_queues));
    lq_script_call_key(&c, lq_key_queues_new(f->cmd, k_new));
    lq_script_call_str(&c, job->id);
    lq_script_call_str(&c, job->adapter);
    lq_script_call_str(&c, job->tenant);
    lq_script_call_arg(&c, body.data, body.len);
    lq_script_call_str(&c, "0");
    lq_script_call_str(&c, now);
    lq_script_call_str(&c, expire);
    lq_script_call_str(&c, LQ_GROUP);
    redisReply *rep = lq_redis_eval(f->cmd, &c, err);
    lq_buf_free(&body);
    if (!rep) return -1;
    const char *w = lq_reply_word(rep);
    int rc = 0;
    if (!w || strcmp(w, "ok")) {
        if (w && !strcmp(w, "exists")) rc = lq_fail(err, "a job with id '%s' already exists", job->id);
        else if (w && !strcmp(w, "full")) rc = lq_fail(err, "the queue %s is full (%lld entries)", k_stream, lq_reply_int(rep, 1));
        else rc = lq_fail(err, "enqueue.lua gave an unexpected reply");
    } else {
        fprintf(stderr, "[job %s enqueued on %s as entry %s]\n", job->id, k_stream, lq_reply_str(rep, 1));
    }
    freeReplyObject(rep);
    return rc;
}

/* Cancels the job we gave up on, so that no worker spends time on it. */
static void cancel_job(follow *f, const char *id) {
    char k_job[LQ_KEY_MAX], k_stream[LQ_KEY_MAX], now[24], ttl[24];
    lq_error err;
    if (!lq_redis_up(f->cmd) && lq_redis_connect(f->cmd, &err)) return;
    lq_key_queue(f->cmd, f->o->adapter, k_stream);
    snprintf(now, sizeof now, "%lld", (long long)lq_time_ms());
    snprintf(ttl, sizeof ttl, "%lld", f->o->ttl_s * 1000);
    lq_script_call c;
    lq_script_call_init(&c, LQ_SCRIPT_CANCEL);
    lq_script_call_key(&c, lq_key_job(f->cmd, id, k_job));
    lq_script_call_key(&c, k_stream);
    lq_script_call_key(&c, f->k_log);
    lq_script_call_str(&c, id);
    lq_script_call_str(&c, f->k_ch);
    lq_script_call_str(&c, LQ_GROUP);
    lq_script_call_str(&c, ttl);
    lq_script_call_str(&c, now);
    redisReply *rep = lq_redis_eval(f->cmd, &c, &err);
    if (rep) freeReplyObject(rep);
}

static int run(const submit_opts *o, lq_job *job, lq_error *err) {
    follow f;
    memset(&f, 0, sizeof f);
    f.o = o;
    f.end.queue_ms = f.end.run_ms = -1;
    lq_redis_opts ro = {.url = o->redis_url, .prefix = o->prefix};
    int rc = -1;
    if (!(f.cmd = lq_redis_new(&ro, err)) || !(f.sub = lq_redis_new(&ro, err))) goto out;
    f.ids = json_array();
    lq_key_log(f.cmd, job->id, f.k_log);
    lq_key_channel(f.cmd, job->id, f.k_ch);
    if (connect_both(&f, 1, err) || enqueue(&f, job, err)) goto out;
    if (follow_job(&f, o->timeout_s > 0 ? o->timeout_s + 1 : 0, err)) {
        cancel_job(&f, job->id);
        lq_error_prefix(err, "job %s", job->id);
        goto out;
    }
    rc = print_result(&f, job->id) ? 1 : 0;
out:
    if (f.done) lq_event_clear(&f.end);
    json_decref(f.ids);
    lq_redis_free(f.cmd);
    lq_redis_free(f.sub);
    return rc;
}

int cmd_submit(int argc, char **argv) {
    submit_opts o;
    if (parse_opts(argc, argv, &o)) {
        usage();
        return 2;
    }
    lq_error err;
    lq_job job;
    memset(&job, 0, sizeof job);
    char id[LQ_JOB_ID_MAX + 1];
    if (o.id) snprintf(id, sizeof id, "%s", o.id);
    else make_id(id, sizeof id);
    job.id = id;
    job.tenant = (char *)o.tenant;
    job.adapter = (char *)o.adapter;
    job.max_new_tokens = o.max_new_tokens;
    job.params = o.params;
    job.created_ms = lq_time_ms();
    job.deadline_ms = o.timeout_s > 0 ? job.created_ms + (int64_t)(o.timeout_s * 1000) : 0;
    if (tokenize(&o, &job.prompt, &job.n_prompt, &err)) {
        fprintf(stderr, "lorq submit: %s\n", err.msg);
        free(job.prompt);
        return o.prompt_ids ? 2 : 1;
    }
    int rc = run(&o, &job, &err);
    if (rc < 0) fprintf(stderr, "lorq submit: %s\n", err.msg);
    free(job.prompt);
    return rc < 0 ? 1 : rc;
}
