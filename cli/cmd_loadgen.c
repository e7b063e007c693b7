/* cmd_loadgen.c — `lorq loadgen`: open-loop, multi-tenant traffic against a
 * lorq (or TGI) gateway, and a report of what it did.
 *
 * Traffic model. Each adapter has its own arrival process, independent of
 * how fast the server answers (open loop: a slow server sees the queue grow,
 * as it would with real users):
 *   steady  Poisson arrivals at `rate` per second;
 *   bursty  Poisson at `rate` during `on` seconds, silent for `off` seconds,
 *           repeating, shifted by `phase`;
 *   rare    Poisson at a low rate (default 0.02/s);
 * which is the usage pattern of many adapters on one deployment (a few busy
 * all day, some in bursts, a long tail rarely). Each arrival picks its kind
 * from the mix — blocking /generate, streaming /generate_stream, or async
 * POST /v1/jobs then polling GET /v1/jobs/{id} — and draws a prompt length
 * (words) and max_new_tokens from their distributions.
 *
 * Engine. One thread, libcurl's multi interface: every request is an easy
 * handle in one multi handle, so hundreds of concurrent streams cost one
 * poll loop. The loop launches due arrivals, schedules due async polls,
 * samples the queue and the workers from Redis, and redraws a progress line
 * on a terminal. A request that would exceed --max-in-flight is not delayed
 * (that would close the loop): it is counted as an error of its own kind.
 *
 * Streaming requests are checked as they arrive: the number of token events
 * must equal the final event's details.generated_tokens, so a lost or
 * duplicated token shows up as an error, not as a slightly different
 * average. Results go to ops/loadgen_report.c. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cluster.h"
#include "commands.h"
#include "job.h"
#include "loadgen.h"
#include "proc.h"
#include "progress.h"
#include "redis.h"

#define LG_MAX_BODY (8u << 20)
#define LG_MAX_LINE (1u << 20)

/* ---- random numbers (splitmix64: small, seedable, good enough for arrivals) ---- */

static uint64_t g_rng;

static uint64_t rng_next(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_uniform(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; } /* [0, 1) */

static double rng_exp(double rate) { return -log(1.0 - rng_uniform()) / rate; }

static double rng_normal(void) {
    double u1 = 1.0 - rng_uniform(), u2 = rng_uniform();
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* ---- distributions of lengths ---- */

typedef enum { D_FIXED, D_UNIFORM, D_LOGNORMAL } dist_type;

typedef struct lg_dist {
    dist_type type;
    double a, b;  /* fixed: a; uniform: [a, b]; lognormal: median a, sigma b */
    int lo, hi;   /* clamp */
    char text[64];
} lg_dist;

static int dist_draw(const lg_dist *d) {
    double v = d->type == D_FIXED ? d->a
             : d->type == D_UNIFORM ? d->a + floor(rng_uniform() * (d->b - d->a + 1))
             : round(d->a * exp(d->b * rng_normal()));
    return v < d->lo ? d->lo : v > d->hi ? d->hi : (int)v;
}

/* Numbers separated by ':' after the name; returns how many were read. */
static int dist_numbers(const char *s, double *out, int max) {
    int n = 0;
    while (*s == ':' && n < max) {
        char *end;
        out[n] = strtod(s + 1, &end);
        if (end == s + 1 || !isfinite(out[n])) return -1;
        n++;
        s = end;
    }
    return *s ? -1 : n;
}

/* "N", "fixed:N", "uniform:MIN:MAX", "lognormal:MEDIAN:SIGMA[:MIN:MAX]". */
static int parse_dist(const char *what, const char *s, int limit, lg_dist *d, lq_error *err) {
    double v[4];
    int n = -1;
    memset(d, 0, sizeof *d);
    d->lo = 1;
    d->hi = limit;
    snprintf(d->text, sizeof d->text, "%s", s);
    char *end;
    double x = strtod(s, &end);
    if (*s && !*end) {
        d->type = D_FIXED;
        d->a = x;
        n = 1;
    } else if (!strncmp(s, "fixed", 5) && (n = dist_numbers(s + 5, v, 4)) == 1) {
        d->type = D_FIXED;
        d->a = v[0];
    } else if (!strncmp(s, "uniform", 7) && (n = dist_numbers(s + 7, v, 4)) == 2) {
        d->type = D_UNIFORM;
        d->a = v[0];
        d->b = v[1];
    } else if (!strncmp(s, "lognormal", 9) && ((n = dist_numbers(s + 9, v, 4)) == 2 || n == 4)) {
        d->type = D_LOGNORMAL;
        d->a = v[0];
        d->b = v[1];
        if (n == 4) d->lo = (int)v[2], d->hi = (int)v[3];
    } else {
        n = -1;
    }
    int bad = n < 0 || d->a < 1 || d->a > limit || d->lo < 1 || d->hi > limit || d->lo > d->hi ||
              (d->type == D_UNIFORM && (d->b < d->a || d->b > limit)) || (d->type == D_LOGNORMAL && (d->b < 0 || d->b > 5)) ||
              (d->type != D_LOGNORMAL && (d->a != floor(d->a) || d->b != floor(d->b)));
    if (bad)
        return lq_fail(err,
                       "%s: '%s' is not a distribution: use N, fixed:N, uniform:MIN:MAX or lognormal:MEDIAN:SIGMA[:MIN:MAX] "
                       "with whole numbers in [1, %d] and SIGMA in [0, 5]",
                       what, s, limit);
    return 0;
}

/* ---- adapters and their arrival processes ---- */

typedef enum { P_STEADY, P_BURSTY, P_RARE } pattern;

typedef struct lg_adapter {
    char id[LQ_ADAPTER_ID_MAX + 1]; /* "" is the base model */
    char name[LQ_ADAPTER_ID_MAX + 1];
    pattern pat;
    double rate, on_s, off_s, phase_s;
    double next_at; /* the next arrival, seconds since the start */
} lg_adapter;

static const char *pattern_name(pattern p) { return p == P_STEADY ? "steady" : p == P_BURSTY ? "bursty" : "rare"; }

/* The arrival after t for an on/off process: a Poisson gap measured in
 * on-time only (memorylessness makes skipping the off windows exact). */
static double next_bursty(const lg_adapter *a, double t) {
    double gap = rng_exp(a->rate), cycle = a->on_s + a->off_s;
    for (int guard = 0; guard < 1000000; guard++) {
        double pos = fmod(t - a->phase_s, cycle);
        if (pos < 0) pos += cycle;
        if (pos < a->on_s) {
            double left = a->on_s - pos;
            if (gap <= left) return t + gap;
            gap -= left;
            t += left;
        } else {
            t += cycle - pos;
        }
    }
    return INFINITY;
}

static void schedule_next(lg_adapter *a, double t) {
    a->next_at = a->pat == P_BURSTY ? next_bursty(a, t) : t + rng_exp(a->rate);
}

static int set_adapter_id(lg_adapter *a, const char *id, lq_error *err) {
    if (!strcmp(id, "@base") || !*id) {
        a->id[0] = '\0';
        snprintf(a->name, sizeof a->name, "@base");
        return 0;
    }
    if (!lq_adapter_id_valid(id))
        return lq_fail(err, "adapter id '%s' is not valid: 1-128 of [A-Za-z0-9._/-], not starting with . or / (@base: no adapter)",
                       id);
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->name, sizeof a->name, "%s", id);
    return 0;
}

static int check_adapter(const lg_adapter *a, lq_error *err) {
    if (!(a->rate > 0 && a->rate <= 100000)) return lq_fail(err, "adapter %s: rate must be in (0, 100000] per second", a->name);
    if (a->pat == P_BURSTY && !(a->on_s > 0 && a->off_s >= 0 && a->on_s <= 86400 && a->off_s <= 86400 && a->phase_s >= 0))
        return lq_fail(err, "adapter %s: bursty wants on > 0, off >= 0 and phase >= 0 seconds", a->name);
    return 0;
}

static int parse_pattern(const char *s, pattern *p) {
    if (!strcmp(s, "steady")) *p = P_STEADY;
    else if (!strcmp(s, "bursty")) *p = P_BURSTY;
    else if (!strcmp(s, "rare")) *p = P_RARE;
    else return -1;
    return 0;
}

/* "ID=steady:RATE", "ID=bursty:RATE:ON:OFF[:PHASE]", "ID=rare[:RATE]". */
static int parse_adapter_spec(const char *spec, lg_adapter *a, lq_error *err) {
    memset(a, 0, sizeof *a);
    const char *eq = strrchr(spec, '=');
    char id[LQ_ADAPTER_ID_MAX + 2], pat[16];
    if (!eq || (size_t)(eq - spec) > LQ_ADAPTER_ID_MAX) goto bad;
    snprintf(id, sizeof id, "%.*s", (int)(eq - spec), spec);
    size_t plen = strcspn(eq + 1, ":");
    if (plen >= sizeof pat) goto bad;
    snprintf(pat, sizeof pat, "%.*s", (int)plen, eq + 1);
    double v[4] = {0};
    int n = dist_numbers(eq + 1 + plen, v, 4);
    if (parse_pattern(pat, &a->pat) || n < 0) goto bad;
    if ((a->pat == P_STEADY && n != 1) || (a->pat == P_RARE && n > 1) || (a->pat == P_BURSTY && n != 3 && n != 4)) goto bad;
    a->rate = a->pat == P_RARE && n == 0 ? 0.02 : v[0];
    a->on_s = v[1];
    a->off_s = v[2];
    a->phase_s = v[3];
    if (set_adapter_id(a, id, err)) return -1;
    return check_adapter(a, err);
bad:
    return lq_fail(err, "--adapter '%s': use ID=steady:RATE, ID=bursty:RATE:ON_S:OFF_S[:PHASE_S] or ID=rare[:RATE] (ID @base: no adapter)",
                   spec);
}

/* ---- configuration ---- */

typedef struct lg_config {
    char url[512];
    double duration_s; /* 0: none */
    long requests;     /* 0: none */
    uint64_t seed;
    double mix[LG_KIND_COUNT];
    lg_dist prompt_words, max_new_tokens;
    lg_adapter adapters[LG_MAX_ADAPTERS];
    int n_adapters;
    int max_in_flight;
    double timeout_s, poll_s, sample_s, drain_s;
    double tail_s;          /* keep sampling this long after the last answer */
    int tail_until_workers; /* ... or until this few workers are left (0: the whole tail) */
    char redis_url[512], prefix[LQ_PREFIX_MAX + 1], out_dir[2048];
    int plots, quiet;
} lg_config;

static void config_defaults(lg_config *c) {
    memset(c, 0, sizeof *c);
    const char *port = getenv("PORT");
    snprintf(c->url, sizeof c->url, "http://127.0.0.1:%s", port && *port ? port : "3000");
    c->seed = 1;
    c->mix[LG_GENERATE] = c->mix[LG_STREAM] = c->mix[LG_ASYNC] = 1;
    lq_error ignored;
    parse_dist("prompt words", "uniform:8:64", 100000, &c->prompt_words, &ignored);
    parse_dist("max new tokens", "uniform:8:32", 100000, &c->max_new_tokens, &ignored);
    c->max_in_flight = 512;
    c->timeout_s = 300;
    c->poll_s = 0.2;
    c->sample_s = 0.5;
    c->drain_s = 300;
    const char *r = getenv("REDIS_URL"), *p = getenv("LORQ_PREFIX");
    if (r) snprintf(c->redis_url, sizeof c->redis_url, "%s", r);
    snprintf(c->prefix, sizeof c->prefix, "%s", p && *p ? p : LQ_DEFAULT_PREFIX);
    snprintf(c->out_dir, sizeof c->out_dir, "loadgen-out");
    c->plots = 1;
}

/* "generate=2,stream=1,async=1": relative weights. */
static int parse_mix(const char *s, double mix[LG_KIND_COUNT], lq_error *err) {
    double m[LG_KIND_COUNT] = {0};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '='), *end;
        int k = -1;
        if (eq) {
            *eq = '\0';
            for (int i = 0; i < LG_KIND_COUNT; i++)
                if (!strcmp(tok, lg_kind_name((lg_kind)i))) k = i;
        }
        double w = eq ? strtod(eq + 1, &end) : -1;
        if (k < 0 || !eq || *end || !(w >= 0 && w <= 1e6)) goto bad;
        m[k] = w;
    }
    if (m[0] + m[1] + m[2] <= 0) goto bad;
    memcpy(mix, m, sizeof m);
    return 0;
bad:
    return lq_fail(err, "mix '%s': use generate=W,stream=W,async=W with weights >= 0, not all 0", s);
}

static int set_url(lg_config *c, const char *url, lq_error *err) {
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return lq_fail(err, "url '%s' must start with http:// or https://", url);
    if (strlen(url) >= sizeof c->url - 1) return lq_fail(err, "url is too long");
    snprintf(c->url, sizeof c->url, "%s", url);
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/') c->url[--n] = '\0'; /* paths are appended with their own '/' */
    return 0;
}

static int parse_positive(const char *what, const char *s, double lo, double hi, double *out, lq_error *err) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v) || v < lo || v > hi) return lq_fail(err, "%s wants a number in [%g, %g], got '%s'", what, lo, hi, s);
    *out = v;
    return 0;
}

/* One setting by name, from a flag or a config key (same names, '-' or '_'). */
static int apply_setting(lg_config *c, const char *key, const char *v, lq_error *err) {
    double x;
    if (!strcmp(key, "url")) return set_url(c, v, err);
    if (!strcmp(key, "duration")) return parse_positive("duration", v, 0.001, 86400 * 7, &c->duration_s, err);
    if (!strcmp(key, "requests")) {
        if (parse_positive("requests", v, 1, 1e9, &x, err) || x != floor(x)) return lq_fail(err, "requests wants a whole number >= 1, got '%s'", v);
        c->requests = (long)x;
        return 0;
    }
    if (!strcmp(key, "seed")) {
        if (parse_positive("seed", v, 0, 1e18, &x, err)) return -1;
        c->seed = (uint64_t)x;
        return 0;
    }
    if (!strcmp(key, "mix")) return parse_mix(v, c->mix, err);
    if (!strcmp(key, "prompt_words")) return parse_dist("prompt_words", v, 100000, &c->prompt_words, err);
    if (!strcmp(key, "max_new_tokens")) return parse_dist("max_new_tokens", v, 100000, &c->max_new_tokens, err);
    if (!strcmp(key, "max_in_flight")) {
        if (parse_positive("max_in_flight", v, 1, 100000, &x, err)) return -1;
        c->max_in_flight = (int)x;
        return 0;
    }
    if (!strcmp(key, "sample_tail")) return parse_positive("sample_tail", v, 0, 86400, &c->tail_s, err);
    if (!strcmp(key, "tail_until_workers")) {
        if (parse_positive("tail_until_workers", v, 0, 100000, &x, err)) return -1;
        c->tail_until_workers = (int)x;
        return 0;
    }
    if (!strcmp(key, "timeout")) return parse_positive("timeout", v, 0.1, 86400, &c->timeout_s, err);
    if (!strcmp(key, "drain_timeout")) return parse_positive("drain_timeout", v, 0, 86400, &c->drain_s, err);
    if (!strcmp(key, "poll_ms") || !strcmp(key, "sample_ms")) {
        if (parse_positive(key, v, 10, 600000, &x, err)) return -1;
        *(key[0] == 'p' ? &c->poll_s : &c->sample_s) = x / 1000;
        return 0;
    }
    if (!strcmp(key, "redis_url")) return snprintf(c->redis_url, sizeof c->redis_url, "%s", v) < 0 ? -1 : 0;
    if (!strcmp(key, "prefix")) {
        if (!lq_prefix_valid(v)) return lq_fail(err, "prefix '%s' is not valid", v);
        snprintf(c->prefix, sizeof c->prefix, "%s", v);
        return 0;
    }
    if (!strcmp(key, "out")) {
        if (!*v || strlen(v) >= sizeof c->out_dir - 64) return lq_fail(err, "out: give a folder name (shorter than 1900 bytes)");
        snprintf(c->out_dir, sizeof c->out_dir, "%s", v);
        return 0;
    }
    if (!strcmp(key, "adapter")) {
        if (c->n_adapters >= LG_MAX_ADAPTERS) return lq_fail(err, "at most %d adapters", LG_MAX_ADAPTERS);
        return parse_adapter_spec(v, &c->adapters[c->n_adapters++], err);
    }
    return lq_fail(err, "unknown setting '%s'", key);
}

/* A config file adapter: {"id", "pattern", "rate", "on_s", "off_s", "phase_s"}. */
static int config_adapter(lg_config *c, json_t *o, lq_error *err) {
    if (!json_is_object(o)) return lq_fail(err, "adapters[]: each entry is an object with id, pattern, rate, ...");
    if (c->n_adapters >= LG_MAX_ADAPTERS) return lq_fail(err, "at most %d adapters", LG_MAX_ADAPTERS);
    lg_adapter *a = &c->adapters[c->n_adapters];
    memset(a, 0, sizeof *a);
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        double *num = !strcmp(k, "rate") ? &a->rate : !strcmp(k, "on_s") ? &a->on_s : !strcmp(k, "off_s") ? &a->off_s
                    : !strcmp(k, "phase_s") ? &a->phase_s : NULL;
        if (num && json_is_number(v)) *num = json_number_value(v);
        else if (!strcmp(k, "id") && json_is_string(v)) {
            if (set_adapter_id(a, json_string_value(v), err)) return -1;
        } else if (!strcmp(k, "pattern") && json_is_string(v)) {
            if (parse_pattern(json_string_value(v), &a->pat)) return lq_fail(err, "adapters[]: pattern is steady, bursty or rare");
        } else
            return lq_fail(err, "adapters[]: unknown key or wrong type: '%s'", k);
    }
    if (!json_object_get(o, "id")) return lq_fail(err, "adapters[]: every entry needs an id (\"@base\": no adapter)");
    if (a->pat == P_RARE && !json_object_get(o, "rate")) a->rate = 0.02;
    c->n_adapters++;
    return check_adapter(a, err);
}

/* A JSON scalar as the text a flag would carry. */
static int scalar_text(json_t *v, char *buf, size_t size) {
    if (json_is_string(v)) snprintf(buf, size, "%s", json_string_value(v));
    else if (json_is_integer(v)) snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, size, "%.17g", json_real_value(v));
    else return -1;
    return 0;
}

static int config_mix(lg_config *c, json_t *v, lq_error *err) {
    if (!json_is_object(v)) return lq_fail(err, "mix: an object like {\"generate\": 1, \"stream\": 1, \"async\": 1}");
    char text[256] = "";
    const char *k;
    json_t *w;
    json_object_foreach(v, k, w) {
        if (!json_is_number(w)) return lq_fail(err, "mix.%s: a number", k);
        size_t n = strlen(text);
        snprintf(text + n, sizeof text - n, "%s%s=%.17g", n ? "," : "", k, json_number_value(w));
    }
    return parse_mix(text, c->mix, err);
}

static int load_config_file(lg_config *c, const char *path, lq_error *err) {
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) return lq_fail(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    int rc = 0;
    if (!json_is_object(doc)) rc = lq_fail(err, "the top level must be an object");
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v) {
        if (rc) break;
        char text[2048];
        if (!strcmp(k, "adapters")) {
            if (!json_is_array(v)) rc = lq_fail(err, "adapters: an array");
            size_t i;
            json_t *a;
            json_array_foreach(v, i, a) if (!rc) rc = config_adapter(c, a, err);
        } else if (!strcmp(k, "mix")) {
            rc = config_mix(c, v, err);
        } else if (!strcmp(k, "plots") && json_is_boolean(v)) {
            c->plots = json_is_true(v);
        } else if (!strcmp(k, "adapter") || scalar_text(v, text, sizeof text)) {
            rc = lq_fail(err, "'%s': unknown key or wrong type", k);
        } else {
            char key[64];
            snprintf(key, sizeof key, "%s", k);
            size_t n = strlen(key);
            if (n > 2 && !strcmp(key + n - 2, "_s") && strcmp(key, "on_s")) key[n - 2] = '\0'; /* duration_s -> duration */
            rc = apply_setting(c, key, text, err);
        }
    }
    if (rc) lq_error_prefix(err, "%s", path);
    json_decref(doc);
    return rc;
}

static int loadgen_usage(FILE *out) {
    fprintf(out,
            "usage: lorq loadgen [--config FILE.json] [flags]\n"
            "  Open-loop multi-tenant traffic against a gateway; writes OUT/report.json, OUT/requests.jsonl and plots.\n"
            "  --url URL                 gateway (default http://127.0.0.1:$PORT, else :3000)\n"
            "  --adapter SPEC            repeatable: ID=steady:RATE | ID=bursty:RATE:ON_S:OFF_S[:PHASE_S] | ID=rare[:RATE]\n"
            "                            (rates per second; ID @base sends no adapter_id)\n"
            "  --duration S              stop sending after S seconds\n"
            "  --requests N              stop after N requests (with --duration: whichever comes first)\n"
            "  --mix generate=W,stream=W,async=W   request kinds by weight (default 1,1,1)\n"
            "  --prompt-words DIST       prompt length in words (default uniform:8:64)\n"
            "  --max-new-tokens DIST     max_new_tokens (default uniform:8:32)\n"
            "                            DIST: N | fixed:N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA[:MIN:MAX]\n"
            "  --max-in-flight N         open requests at most; arrivals beyond are errors (default 512)\n"
            "  --timeout S               per request (default 300)\n"
            "  --poll-ms MS              async job polling interval (default 200)\n"
            "  --sample-ms MS            queue/worker sampling interval (default 500)\n"
            "  --drain-timeout S         wait for open requests after the last arrival (default 300)\n"
            "  --sample-tail S           keep sampling S seconds after the last answer (see the pool shrink)\n"
            "  --tail-until-workers N    end that tail early once at most N workers are live\n"
            "  --redis-url URL           sample queue depth and workers from this Redis (default $REDIS_URL)\n"
            "  --prefix P                key prefix (default $LORQ_PREFIX, else lorq:)\n"
            "  --seed N                  arrivals, kinds and lengths are reproducible per seed (default 1)\n"
            "  --out DIR                 output folder (default loadgen-out)\n"
            "  --no-plots, --quiet\n"
            "  The config file takes the same settings as keys (url, duration_s, requests, seed, mix {...},\n"
            "  prompt_words, max_new_tokens, max_in_flight, timeout_s, poll_ms, sample_ms, drain_timeout_s,\n"
            "  sample_tail_s, tail_until_workers,\n"
            "  redis_url, prefix, out, plots) and adapters: [{id, pattern, rate, on_s, off_s, phase_s}].\n");
    return out == stdout ? 0 : 2;
}

/* Flag name -> setting key: "--max-new-tokens" -> "max_new_tokens". */
static void flag_key(const char *flag, char *key, size_t size) {
    snprintf(key, size, "%s", flag + 2);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
}

static int parse_flags(lg_config *c, int argc, char **argv, lq_error *err) {
    for (int i = 1; i < argc; i++) /* the config file first, so flags override it */
        if (!strncmp(argv[i], "--config", 8) && (argv[i][8] == '=' || (!argv[i][8] && i + 1 < argc)))
            if (load_config_file(c, argv[i][8] == '=' ? argv[i] + 9 : argv[i + 1], err)) return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) exit(loadgen_usage(stdout));
        if (!strcmp(a, "--no-plots")) c->plots = 0;
        else if (!strcmp(a, "--quiet")) c->quiet = 1;
        else if (strncmp(a, "--", 2)) return lq_fail(err, "unexpected argument '%s' (see --help)", a);
        else {
            char key[64];
            const char *eq = strchr(a, '='), *v;
            snprintf(key, sizeof key, "%.*s", (int)(eq ? eq - a : (long)strlen(a)), a);
            if (eq) v = eq + 1;
            else if (i + 1 < argc) v = argv[++i];
            else return lq_fail(err, "%s needs a value", key);
            if (!strcmp(key, "--config")) continue;
            char name[64];
            flag_key(key, name, sizeof name);
            if (apply_setting(c, name, v, err)) return -1;
        }
    }
    if (!c->n_adapters) return lq_fail(err, "no traffic: give at least one --adapter (or adapters in --config)");
    if (!c->duration_s && !c->requests) return lq_fail(err, "give --duration S or --requests N (or both)");
    return 0;
}

static json_t *config_json(const lg_config *c) {
    json_t *adapters = json_array();
    for (int i = 0; i < c->n_adapters; i++) {
        const lg_adapter *a = &c->adapters[i];
        json_t *o = json_pack("{s:s, s:s, s:f}", "id", a->name, "pattern", pattern_name(a->pat), "rate", a->rate);
        if (a->pat == P_BURSTY) {
            json_object_set_new(o, "on_s", json_real(a->on_s));
            json_object_set_new(o, "off_s", json_real(a->off_s));
            json_object_set_new(o, "phase_s", json_real(a->phase_s));
        }
        json_array_append_new(adapters, o);
    }
    return json_pack("{s:s, s:f, s:I, s:I, s:{s:f, s:f, s:f}, s:s, s:s, s:i, s:f, s:f, s:f, s:o}", "url", c->url, "duration_s",
                     c->duration_s, "requests", (json_int_t)c->requests, "seed", (json_int_t)c->seed, "mix", "generate",
                     c->mix[LG_GENERATE], "stream", c->mix[LG_STREAM], "async", c->mix[LG_ASYNC], "prompt_words",
                     c->prompt_words.text, "max_new_tokens", c->max_new_tokens.text, "max_in_flight", c->max_in_flight,
                     "timeout_s", c->timeout_s, "poll_ms", c->poll_s * 1000, "sample_ms", c->sample_s * 1000, "adapters",
                     adapters);
}

/* ---- requests ---- */

struct loadgen;

typedef struct lg_req {
    struct loadgen *g;
    CURL *easy;
    struct curl_slist *headers;
    size_t rec;          /* index of its lg_record (the array may move) */
    char *body;
    char *resp;          /* response body (capped), for JSON replies and error bodies */
    size_t resp_len, resp_cap;
    char *line;          /* SSE: the line being received */
    size_t line_len, line_cap;
    double last_token;   /* SSE: when the previous token arrived */
    long final_tokens;   /* SSE: details.generated_tokens of the final event; -1 none yet */
    int got_final;
    char stream_error[LG_ERROR_MAX];
    int polling;         /* async: 0 submitting, 1 poll in flight, 2 waiting for the next poll */
    double next_poll, deadline;
    char job_url[1024];
} lg_req;

typedef struct loadgen {
    lg_config c;
    lg_run run;
    CURLM *multi;
    lg_req **active;
    int n_active;
    double t0;           /* lq_now() at the start */
    long launched, finished, failed, tokens;
    int arrivals_over;
    double arrivals_end; /* when arrivals stopped (seconds since start) */
    lq_redis *redis;
    double next_sample, next_progress;
    lg_sample last;
    int have_sample, progress_drawn;
} loadgen;

static volatile sig_atomic_t g_interrupts;

static void on_interrupt(int sig) {
    (void)sig;
    g_interrupts++;
}

static double since_start(const loadgen *g) { return lq_now() - g->t0; }

static int buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t limit) {
    if (*len + n + 1 > limit) return -1;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1) c *= 2;
        char *b = realloc(*buf, c);
        if (!b) return -1;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static void set_error(lg_record *rec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(lg_record *rec, const char *fmt, ...) {
    if (rec->error[0]) return; /* the first error is the cause */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rec->error, sizeof rec->error, fmt, ap);
    va_end(ap);
}

/* One SSE data payload: a token event, the final event, or an error. */
static void on_sse_event(lg_req *q, const char *data, double now) {
    loadgen *g = q->g;
    lg_record *rec = &g->run.rec[q->rec];
    json_t *ev = json_loads(data, 0, NULL);
    if (!ev) {
        if (strcmp(data, "[DONE]")) snprintf(q->stream_error, sizeof q->stream_error, "stream_bad_event");
        return;
    }
    json_t *error = json_object_get(ev, "error");
    if (error && !json_is_null(error)) {
        const char *type = json_string_value(json_object_get(ev, "error_type"));
        snprintf(q->stream_error, sizeof q->stream_error, "stream_%.32s", type ? type : "error");
    } else if (json_is_object(json_object_get(ev, "token"))) {
        if (rec->t_first < 0) rec->t_first = now;
        else lg_floats_push(&g->run.itl[rec->adapter], (float)(now - q->last_token));
        q->last_token = now;
        rec->tokens++;
        g->tokens++;
    }
    if (json_is_string(json_object_get(ev, "generated_text"))) {
        q->got_final = 1;
        json_t *n = json_object_get(json_object_get(ev, "details"), "generated_tokens");
        if (json_is_integer(n)) q->final_tokens = (long)json_integer_value(n);
    }
    json_decref(ev);
}

static void on_sse_line(lg_req *q, char *line, double now) {
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r') line[n - 1] = '\0';
    if (strncmp(line, "data:", 5)) return; /* event:, id:, comments, blank separators */
    const char *data = line + 5;
    while (*data == ' ') data++;
    on_sse_event(q, data, now);
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *userdata) {
    lg_req *q = userdata;
    size_t n = size * nmemb;
    int stream = q->g->run.rec[q->rec].kind == LG_STREAM && q->polling == 0;
    /* Stream error bodies are JSON too, so streams keep their first 64 KiB as well. */
    if (buf_append(&q->resp, &q->resp_len, &q->resp_cap, p, n, stream ? 65536 : LG_MAX_BODY) && !stream)
        return 0; /* too large: abort the transfer */
    if (!stream) return n;
    double now = since_start(q->g);
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (buf_append(&q->line, &q->line_len, &q->line_cap, p + i, 1, LG_MAX_LINE)) return 0;
            continue;
        }
        if (q->line_len) on_sse_line(q, q->line, now);
        q->line_len = 0;
    }
    return n;
}

/* ---- launching ---- */

static const char *const WORDS[] = {
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "a", "small", "model", "serves", "many", "adapters",
    "each", "request", "names", "one", "queue", "worker", "token", "stream", "batch", "kernel", "memory", "review",
    "product", "great", "terrible", "price", "arrived", "broken", "works", "well", "city", "name", "age", "number",
    "seven", "thousand", "hello", "who", "are", "you", "please", "answer", "briefly", "today", "weather", "coffee",
    "morning", "train", "station", "music", "garden", "river", "mountain", "window", "letter", "friend", "story", "light",
};

static char *make_prompt(int words) {
    size_t cap = (size_t)words * 12 + 16, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < words; i++) {
        const char *w = WORDS[rng_next() % (sizeof WORDS / sizeof WORDS[0])];
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? " " : "", w);
    }
    return s;
}

static char *request_body(const lg_adapter *a, const char *prompt, int max_new) {
    json_t *params = json_pack("{s:i, s:b}", "max_new_tokens", max_new, "details", 1);
    if (a->id[0]) json_object_set_new(params, "adapter_id", json_string(a->id));
    json_t *body = json_pack("{s:s, s:o}", "inputs", prompt, "parameters", params);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s;
}

static lg_kind pick_kind(const lg_config *c) {
    double total = c->mix[0] + c->mix[1] + c->mix[2], u = rng_uniform() * total;
    return u < c->mix[0] ? LG_GENERATE : u < c->mix[0] + c->mix[1] ? LG_STREAM : LG_ASYNC;
}

/* Sets up q's easy handle for one HTTP exchange (POST body when not NULL)
 * and adds it to the multi handle. */
static int start_transfer(lg_req *q, const char *url, const char *body, double now) {
    if (!q->easy && !(q->easy = curl_easy_init())) return -1;
    curl_easy_reset(q->easy);
    curl_slist_free_all(q->headers);
    q->headers = curl_slist_append(NULL, "Expect:"); /* no 100-continue round trip */
    if (body) q->headers = curl_slist_append(q->headers, "Content-Type: application/json");
    if (body && q->g->run.rec[q->rec].kind == LG_STREAM) q->headers = curl_slist_append(q->headers, "Accept: text/event-stream");
    curl_easy_setopt(q->easy, CURLOPT_URL, url);
    curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, q->headers);
    if (body) curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, body);
    else curl_easy_setopt(q->easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(q->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(q->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    long left_ms = (long)((q->deadline - now) * 1000);
    curl_easy_setopt(q->easy, CURLOPT_TIMEOUT_MS, left_ms > 1 ? left_ms : 1L);
    curl_easy_setopt(q->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(q->easy, CURLOPT_WRITEDATA, q);
    curl_easy_setopt(q->easy, CURLOPT_PRIVATE, q);
    q->resp_len = q->line_len = 0;
    return curl_multi_add_handle(q->g->multi, q->easy) == CURLM_OK ? 0 : -1;
}

static void release(lg_req *q) {
    if (q->easy) curl_easy_cleanup(q->easy);
    curl_slist_free_all(q->headers);
    free(q->body);
    free(q->resp);
    free(q->line);
    free(q);
}

static void remove_active(loadgen *g, lg_req *q) {
    for (int i = 0; i < g->n_active; i++)
        if (g->active[i] == q) {
            g->active[i] = g->active[--g->n_active];
            return;
        }
}

/* Ends a request: its record gets its end time; it leaves the active set. */
static void finish(lg_req *q, double now) {
    loadgen *g = q->g;
    lg_record *rec = &g->run.rec[q->rec];
    rec->t_end = now;
    g->finished++;
    if (rec->error[0]) g->failed++;
    if (q->easy) curl_multi_remove_handle(g->multi, q->easy);
    remove_active(g, q);
    release(q);
}

/* A record that never got a request (setup failure or the in-flight cap). */
static void fail_unsent(loadgen *g, lg_record *rec, const char *why, double now) {
    set_error(rec, "%s", why);
    rec->t_end = now;
    g->finished++;
    g->failed++;
}

static void launch(loadgen *g, lg_adapter *a, double t_sched) {
    lg_record *rec = lg_run_add(&g->run);
    if (!rec) return;
    rec->adapter = (int)(a - g->c.adapters);
    rec->kind = pick_kind(&g->c);
    rec->prompt_words = dist_draw(&g->c.prompt_words);
    rec->max_new_tokens = dist_draw(&g->c.max_new_tokens);
    rec->t_sched = t_sched;
    g->launched++;
    double now = since_start(g);
    if (g->n_active >= g->c.max_in_flight) return fail_unsent(g, rec, "client_max_in_flight", now);
    lg_req *q = calloc(1, sizeof *q);
    char *prompt = make_prompt(rec->prompt_words);
    if (q) {
        *q = (lg_req){.g = g, .rec = g->run.n_rec - 1, .final_tokens = -1, .deadline = t_sched + g->c.timeout_s};
        q->body = prompt ? request_body(a, prompt, rec->max_new_tokens) : NULL;
    }
    free(prompt);
    if (!q || !q->body) {
        if (q) release(q);
        return fail_unsent(g, rec, "client_setup", now);
    }
    char url[1024];
    snprintf(url, sizeof url, "%s%s", g->c.url,
             rec->kind == LG_GENERATE ? "/generate" : rec->kind == LG_STREAM ? "/generate_stream" : "/v1/jobs");
    rec->t_send = now;
    g->active[g->n_active++] = q;
    if (start_transfer(q, url, q->body, now)) {
        set_error(rec, "client_setup");
        finish(q, now);
    }
}

/* Launches every arrival that is due, and decides when arrivals are over
 * (duration reached, request count reached, or Ctrl-C). */
static void launch_due_arrivals(loadgen *g) {
    double t = since_start(g);
    const lg_config *c = &g->c;
    for (int i = 0; i < c->n_adapters && !g->arrivals_over; i++) {
        lg_adapter *a = &g->c.adapters[i];
        while (a->next_at <= t && !g->arrivals_over && (!c->duration_s || a->next_at < c->duration_s)) {
            launch(g, a, a->next_at);
            schedule_next(a, a->next_at);
            if (c->requests && g->launched >= c->requests) g->arrivals_over = 1;
        }
    }
    if ((c->duration_s && t >= c->duration_s) || g_interrupts) g->arrivals_over = 1;
    if (g->arrivals_over && g->arrivals_end <= 0) g->arrivals_end = t > 0 ? t : 1e-9;
}

static double next_arrival(const loadgen *g) {
    double next = INFINITY;
    for (int i = 0; i < g->c.n_adapters; i++) next = fmin(next, g->c.adapters[i].next_at);
    return next;
}

/* ---- completions ---- */

static void error_from_curl(lg_record *rec, CURLcode code) {
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT: set_error(rec, "timeout"); break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST: set_error(rec, "connect"); break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE: set_error(rec, "disconnected"); break;
    case CURLE_WRITE_ERROR: set_error(rec, "response_too_large"); break;
    default: set_error(rec, "transport_%d", (int)code);
    }
}

/* "http_422_validation" from a TGI-style error body, else "http_502". */
static void error_from_status(lg_record *rec, long status, const char *body) {
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(doc, "error_type"));
    if (type) set_error(rec, "http_%ld_%.32s", status, type);
    else set_error(rec, "http_%ld", status);
    json_decref(doc);
}

/* details.generated_tokens of a /generate reply (an object, or a one-element
 * array); -1 when absent. */
static long generated_tokens(json_t *reply) {
    if (json_is_array(reply)) reply = json_array_get(reply, 0);
    json_t *n = json_object_get(json_object_get(reply, "details"), "generated_tokens");
    return json_is_integer(n) ? (long)json_integer_value(n) : -1;
}

static void count_tokens(lg_req *q, json_t *reply) {
    lg_record *rec = &q->g->run.rec[q->rec];
    json_t *first = json_is_array(reply) ? json_array_get(reply, 0) : reply;
    if (!json_is_string(json_object_get(first, "generated_text"))) {
        set_error(rec, "bad_reply");
        return;
    }
    long n = generated_tokens(reply);
    rec->tokens = n > 0 ? (int)n : 0;
    q->g->tokens += rec->tokens;
}

static void done_generate(lg_req *q, double now) {
    json_t *doc = q->resp ? json_loads(q->resp, 0, NULL) : NULL;
    count_tokens(q, doc);
    json_decref(doc);
    finish(q, now);
}

static void done_stream(lg_req *q, double now) {
    lg_record *rec = &q->g->run.rec[q->rec];
    if (q->line_len) on_sse_line(q, q->line, now); /* a last event without its newline */
    if (q->stream_error[0]) set_error(rec, "%s", q->stream_error);
    else if (!q->got_final) set_error(rec, "stream_incomplete");
    else if (q->final_tokens >= 0 && q->final_tokens != rec->tokens) set_error(rec, "stream_token_count_mismatch");
    finish(q, now);
}

static void poll_later(lg_req *q, double now) {
    curl_multi_remove_handle(q->g->multi, q->easy);
    q->polling = 2;
    q->next_poll = now + q->g->c.poll_s;
}

/* POST /v1/jobs answered: remember the job, poll it later. */
static void done_async_submit(lg_req *q, double now) {
    lg_record *rec = &q->g->run.rec[q->rec];
    json_t *doc = q->resp ? json_loads(q->resp, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(doc, "id"));
    if (!id) id = json_string_value(json_object_get(doc, "job_id"));
    if (id && lq_job_id_valid(id)) {
        snprintf(rec->job_id, sizeof rec->job_id, "%s", id);
        snprintf(q->job_url, sizeof q->job_url, "%s/v1/jobs/%s", q->g->c.url, id);
        poll_later(q, now);
    } else {
        set_error(rec, "bad_reply");
        finish(q, now);
    }
    json_decref(doc);
}

/* GET /v1/jobs/{id} answered: done, failed, or poll again. */
static void done_async_poll(lg_req *q, double now) {
    lg_record *rec = &q->g->run.rec[q->rec];
    json_t *doc = q->resp ? json_loads(q->resp, 0, NULL) : NULL;
    const char *status = json_string_value(json_object_get(doc, "status"));
    if (status && (!strcmp(status, "queued") || !strcmp(status, "running"))) {
        json_decref(doc);
        poll_later(q, now);
        return;
    }
    if (!status) {
        set_error(rec, "bad_reply");
    } else if (!strcmp(status, "done")) {
        json_t *result = json_object_get(doc, "result");
        count_tokens(q, result ? result : doc);
    } else {
        json_t *e = json_object_get(json_object_get(doc, "error"), "error_type"); /* {"error": {"error", "error_type"}} */
        if (!e) e = json_object_get(doc, "error_type");
        set_error(rec, "job_%.16s%s%.24s", status, json_is_string(e) ? "_" : "", json_is_string(e) ? json_string_value(e) : "");
    }
    json_decref(doc);
    finish(q, now);
}

static void on_transfer_done(loadgen *g, CURL *easy, CURLcode code) {
    lg_req *q = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&q);
    double now = since_start(g);
    lg_record *rec = &g->run.rec[q->rec];
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    rec->http_status = status;
    if (code != CURLE_OK) error_from_curl(rec, code);
    else if (status >= 400 || status < 200) error_from_status(rec, status, q->resp);
    if (rec->error[0]) finish(q, now);
    else if (rec->kind == LG_GENERATE) done_generate(q, now);
    else if (rec->kind == LG_STREAM) done_stream(q, now);
    else if (q->polling == 0) done_async_submit(q, now);
    else done_async_poll(q, now);
}

static void read_completions(loadgen *g) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(g->multi, &left)))
        if (m->msg == CURLMSG_DONE) on_transfer_done(g, m->easy_handle, m->data.result);
}

/* Async jobs whose next poll is due get a GET; ones past their deadline time out. */
static void start_due_polls(loadgen *g) {
    double now = since_start(g);
    for (int i = g->n_active - 1; i >= 0; i--) {
        lg_req *q = g->active[i];
        if (q->polling != 2 || q->next_poll > now) continue;
        lg_record *rec = &g->run.rec[q->rec];
        if (now >= q->deadline) set_error(rec, "timeout");
        else if (start_transfer(q, q->job_url, NULL, now)) set_error(rec, "client_setup");
        if (rec->error[0]) finish(q, now);
        else q->polling = 1;
    }
}

static double next_poll(const loadgen *g) {
    double next = INFINITY;
    for (int i = 0; i < g->n_active; i++)
        if (g->active[i]->polling == 2) next = fmin(next, g->active[i]->next_poll);
    return next;
}

/* Ends every open request (a second Ctrl-C, or the drain timeout). */
static void abandon_all(loadgen *g, const char *why) {
    double now = since_start(g);
    while (g->n_active > 0) {
        lg_req *q = g->active[g->n_active - 1];
        set_error(&g->run.rec[q->rec], "%s", why);
        finish(q, now);
    }
}

/* ---- sampling the pool ---- */

static void open_sampler(loadgen *g) {
    if (!g->c.redis_url[0]) return;
    lq_error err;
    lq_redis_opts o = {.url = g->c.redis_url, .prefix = g->c.prefix, .connect_timeout_ms = 500, .command_timeout_ms = 1000};
    if (!(g->redis = lq_redis_new(&o, &err)) || lq_redis_connect(g->redis, &err)) {
        fprintf(stderr, "lorq loadgen: not sampling the queue: %s\n", err.msg);
        lq_redis_free(g->redis);
        g->redis = NULL;
        return;
    }
    static char source[600];
    snprintf(source, sizeof source, "%s", lq_redis_url_text(g->redis));
    g->run.sample_source = source;
}

static void take_sample(loadgen *g) {
    double t = since_start(g);
    if (!g->redis || t < g->next_sample) return;
    g->next_sample = t + g->c.sample_s;
    lq_error err;
    lq_cluster c;
    if (!lq_redis_up(g->redis) && lq_redis_connect(g->redis, &err)) return;
    if (lq_cluster_read(g->redis, &c, &err)) return;
    lg_sample s = {.t = t, .queued = c.lag, .running = c.pending, .workers = c.serving, .workers_draining = c.draining};
    lg_run_add_sample(&g->run, &s);
    g->last = s;
    g->have_sample = 1;
    lq_cluster_free(&c);
}

/* ---- progress ---- */

static void draw_progress(loadgen *g, int final) {
    double t = since_start(g);
    if (g->c.quiet || !isatty(STDERR_FILENO) || (!final && t < g->next_progress)) return;
    g->next_progress = t + 0.25;
    char pool[96] = "";
    if (g->have_sample) snprintf(pool, sizeof pool, "  queue %lld running %lld workers %d", g->last.queued, g->last.running, g->last.workers);
    fprintf(stderr, "\r\033[K%6.1fs  sent %ld  done %ld  errors %ld  open %d  %.1f req/s  %.0f tok/s%s%s", t, g->launched,
            g->finished, g->failed, g->n_active, t > 0 ? g->launched / t : 0, t > 0 ? g->tokens / t : 0, pool,
            g->n_active == 0 && g->arrivals_over ? "  (sampling the tail)" : g->arrivals_over && !final ? "  (draining)" : "");
    if (final) fputc('\n', stderr);
    g->progress_drawn = 1;
}

/* ---- the loop ---- */

static int wait_ms(const loadgen *g) {
    double t = since_start(g), next = fmin(next_arrival(g), next_poll(g));
    if (g->redis) next = fmin(next, g->next_sample);
    double ms = (next - t) * 1000;
    return ms < 0 ? 0 : ms > 100 ? 100 : (int)ms;
}

static void run_loop(loadgen *g) {
    int interrupts_seen = 0;
    while (1) {
        if (!g->arrivals_over) launch_due_arrivals(g);
        start_due_polls(g);
        int running;
        curl_multi_perform(g->multi, &running);
        read_completions(g);
        take_sample(g);
        draw_progress(g, 0);
        if (g->arrivals_over && g->n_active == 0) break;
        if (g_interrupts > 1 || (g->arrivals_over && since_start(g) - g->arrivals_end > g->c.drain_s)) {
            abandon_all(g, g_interrupts > 1 ? "aborted" : "drain_timeout");
            break;
        }
        if (g_interrupts != interrupts_seen) {
            interrupts_seen = g_interrupts;
            fprintf(stderr, "\nlorq loadgen: no more arrivals; waiting for %d open requests (Ctrl-C again to abandon them)\n", g->n_active);
        }
        curl_multi_poll(g->multi, NULL, 0, wait_ms(g), NULL);
    }
}

/* After the traffic: sample on so the plots show the pool settling (workers
 * drained by the autoscaler), until the tail ends or few enough are left. */
static void sample_tail(loadgen *g) {
    if (!g->redis || g->c.tail_s <= 0) return;
    double end = since_start(g) + g->c.tail_s;
    while (since_start(g) < end && !g_interrupts) {
        take_sample(g);
        if (g->c.tail_until_workers && g->have_sample && g->last.workers + g->last.workers_draining <= g->c.tail_until_workers &&
            g->last.queued == 0 && g->last.running == 0)
            break;
        draw_progress(g, 0);
        lq_nap_ms(50);
    }
}

/* ---- output ---- */

static int make_dirs(const char *path) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static void finish_run_times(loadgen *g) {
    double first = INFINITY, last = 0;
    for (size_t i = 0; i < g->run.n_rec; i++) {
        first = fmin(first, g->run.rec[i].t_sched);
        last = fmax(last, g->run.rec[i].t_end);
    }
    g->run.wall_s = g->run.n_rec ? last - first : 0;
    /* About 50 to 100 bins over the arrivals, of a round width. */
    static const double widths[] = {0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300, 600, 3600};
    double span = g->arrivals_end > 0 ? g->arrivals_end : 1;
    g->run.bin_s = widths[sizeof widths / sizeof widths[0] - 1];
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        if (widths[i] >= span / 100) {
            g->run.bin_s = widths[i];
            break;
        }
}

static int write_outputs(loadgen *g) {
    lq_error err;
    json_t *cfg = config_json(&g->c);
    g->run.config = cfg;
    int rc = 0;
    if (make_dirs(g->c.out_dir)) {
        fprintf(stderr, "lorq loadgen: cannot create %s: %s\n", g->c.out_dir, strerror(errno));
        rc = 1;
    } else if (lg_write_report(&g->run, g->c.out_dir, g->c.plots, &err)) {
        fprintf(stderr, "lorq loadgen: %s\n", err.msg);
        rc = 1;
    } else if (g->c.plots && lg_write_plots(&g->run, g->c.out_dir, &err)) {
        fprintf(stderr, "lorq loadgen: %s\n", err.msg);
        rc = 1;
    }
    json_decref(cfg);
    g->run.config = NULL;
    return rc;
}

static int setup_run(loadgen *g) {
    g_rng = g->c.seed * 0x2545f4914f6cdd1dULL + 1;
    g->run.n_adapters = g->c.n_adapters;
    for (int i = 0; i < g->c.n_adapters; i++) {
        g->run.adapter_names[i] = g->c.adapters[i].name;
        schedule_next(&g->c.adapters[i], 0);
    }
    g->active = calloc((size_t)g->c.max_in_flight, sizeof *g->active);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) || !g->active || !(g->multi = curl_multi_init())) {
        fprintf(stderr, "lorq loadgen: cannot initialise libcurl\n");
        return -1;
    }
    /* Reuse connections: one per open request at most. */
    curl_multi_setopt(g->multi, CURLMOPT_MAXCONNECTS, (long)g->c.max_in_flight);
    open_sampler(g);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int cmd_loadgen(int argc, char **argv) {
    static loadgen g;
    memset(&g, 0, sizeof g);
    config_defaults(&g.c);
    lq_error err;
    if (parse_flags(&g.c, argc, argv, &err)) {
        fprintf(stderr, "lorq loadgen: %s\n", err.msg);
        return 2;
    }
    if (setup_run(&g)) return 1;
    if (!g.c.quiet) {
        char until[96];
        if (g.c.duration_s && g.c.requests) snprintf(until, sizeof until, "%g s or %ld requests", g.c.duration_s, g.c.requests);
        else if (g.c.duration_s) snprintf(until, sizeof until, "%g s", g.c.duration_s);
        else snprintf(until, sizeof until, "%ld requests", g.c.requests);
        fprintf(stderr, "lorq loadgen: %s, %d adapter(s), for %s; output in %s\n", g.c.url, g.c.n_adapters, until, g.c.out_dir);
    }
    g.t0 = lq_now();
    run_loop(&g);
    sample_tail(&g);
    draw_progress(&g, 1);
    finish_run_times(&g);
    int rc = write_outputs(&g);
    if (!g.c.quiet) lg_print_summary(&g.run, stdout);
    printf("report: %s/report.json%s\n", g.c.out_dir, g.c.plots && !rc ? " (plots: rate.png, queue.png)" : "");
    curl_multi_cleanup(g.multi);
    lq_redis_free(g.redis);
    lg_run_free(&g.run);
    free(g.active);
    curl_global_cleanup();
    return rc;
}
