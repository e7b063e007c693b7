/* config.c — environment variables and flags into an lq_gw_config.
 *
 * One table lists every setting: its environment name, its kind and its
 * range. The flag is derived from the name (MAX_TOTAL_TOKENS ->
 * --max-total-tokens), so env and flags cannot drift apart. Values are parsed
 * strictly: "12abc", "", "1e3" and numbers out of range are errors naming
 * the setting, because a typo in a limit should stop the gateway at start-up
 * rather than surprise someone at request time. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

typedef enum { OPT_INT, OPT_STR, OPT_ADAPTERS } opt_kind;

typedef struct opt {
    const char *env; /* the variable; the flag is its kebab-case form unless named below */
    opt_kind kind;
    long long lo, hi; /* OPT_INT range */
    size_t off;       /* int field, or char array field for OPT_STR */
    size_t size;      /* OPT_STR buffer size */
    const char *help;
} opt;

#define INT_OPT(name, field, lo, hi, help) {name, OPT_INT, lo, hi, offsetof(lq_gw_config, field), 0, help}
#define STR_OPT(name, field, help) \
    {name, OPT_STR, 0, 0, offsetof(lq_gw_config, field), sizeof(((lq_gw_config *)0)->field), help}

static const opt OPTS[] = {
    INT_OPT("PORT", port, 0, 65535, "TCP port to listen on (default 3000; 0: any free port)"),
    STR_OPT("HOSTNAME", hostname, "address to listen on (default 0.0.0.0)"),
    STR_OPT("MODEL_ID", model_id, "the base model: a Hugging Face folder or hub id"),
    {"LORA_ADAPTERS", OPT_ADAPTERS, 0, 0, 0, 0, "comma list of name=path or hub ids; the names are the adapter ids"},
    INT_OPT("MAX_INPUT_TOKENS", max_input_tokens, 1, 1 << 24, "most prompt tokens (default: MAX_TOTAL_TOKENS - 1)"),
    INT_OPT("MAX_INPUT_LENGTH", max_input_tokens, 1, 1 << 24, "alias of MAX_INPUT_TOKENS"),
    INT_OPT("MAX_TOTAL_TOKENS", max_total_tokens, 2, 1 << 24,
            "most prompt + new tokens (default: max_position_embeddings, at most 4096)"),
    INT_OPT("MAX_STOP_SEQUENCES", max_stop_sequences, 0, LQ_JOB_MAX_STOP, "most stop sequences per request (default 4)"),
    INT_OPT("MAX_TOP_N_TOKENS", max_top_n_tokens, 0, LQ_JOB_MAX_TOP_N, "most top_n_tokens per request (default 5)"),
    INT_OPT("MAX_CONCURRENT_REQUESTS", max_concurrent_requests, 1, 1000000,
            "generation requests open at once before 429 (default 128)"),
    INT_OPT("MAX_QUEUE_LENGTH", max_queue_length, 0, 1 << 30, "entries per adapter queue before 429 (default 0: none)"),
    {"PAYLOAD_LIMIT", OPT_INT, 1024, 1LL << 30, 0, 0, "largest request body in bytes (default 2000000)"},
    STR_OPT("REDIS_URL", redis_url, "redis://[[user]:password@]host[:port][/db] or unix:///path"),
    STR_OPT("LORQ_PREFIX", prefix, "key prefix shared with the workers (default lorq:)"),
    STR_OPT("LORQ_ALLOW_ADAPTERS", allow_adapters,
            "comma list of globs of adapter ids served beyond LORA_ADAPTERS, loaded by the workers on first use "
            "(e.g. 'acme/*'; '*' does not cross '/'; default: none)"),
    STR_OPT("LORQ_ADMIN_TOKEN", admin_token, "bearer token for /admin/adapters (default: unset, /admin disabled)"),
    {"RESULT_TTL", OPT_INT, 1, 30LL * 86400, 0, 0, "seconds a finished job's result is kept (default 3600)"},
    INT_OPT("REQUEST_TIMEOUT", request_timeout_s, 0, 7 * 86400,
            "seconds a request may take before it fails (default 600; 0: none)"),
};
#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

static void set_defaults(lq_gw_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->hostname, sizeof c->hostname, "0.0.0.0");
    c->port = 3000;
    snprintf(c->model_id, sizeof c->model_id, "models/SmolLM2-135M-Instruct");
    c->max_stop_sequences = 4;
    c->max_top_n_tokens = 5;
    c->max_concurrent_requests = 128;
    c->payload_limit = 2000000;
    snprintf(c->redis_url, sizeof c->redis_url, "%s", LQ_REDIS_DEFAULT_URL);
    snprintf(c->prefix, sizeof c->prefix, "%s", LQ_DEFAULT_PREFIX);
    c->result_ttl_ms = 3600 * 1000LL;
    c->request_timeout_s = 600;
}

/* MAX_TOTAL_TOKENS -> max-total-tokens */
static void flag_name(const char *env, char *out, size_t size) {
    size_t i = 0;
    for (; env[i] && i + 1 < size; i++) out[i] = env[i] == '_' ? '-' : (char)tolower((unsigned char)env[i]);
    out[i] = 0;
}

static int parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!*s) return -1;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

void lq_gw_config_free(lq_gw_config *c) {
    for (int i = 0; i < c->n_adapters; i++) free(c->adapters[i]);
    free(c->adapters);
    c->adapters = NULL;
    c->n_adapters = 0;
}

static int has_adapter(char **list, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], name)) return 1;
    return 0;
}

/* One entry of LORA_ADAPTERS (s[0..n)): its id, checked and appended. */
static int add_adapter(const char *s, size_t n, char ***list, int *count, lq_error *err) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n) return 0; /* "a,,b" and a trailing comma are harmless */
    const char *eq = memchr(s, '=', n);
    size_t len = eq ? (size_t)(eq - s) : n;
    if (eq && eq + 1 == s + n) return lq_fail(err, "LORA_ADAPTERS: entry '%.*s' has no path after '='", (int)n, s);
    if (*count >= LQ_GW_MAX_ADAPTERS) return lq_fail(err, "LORA_ADAPTERS: more than %d adapters", LQ_GW_MAX_ADAPTERS);
    char *name = strndup(s, len);
    if (!name) return lq_fail(err, "out of memory");
    /* A hub id may carry a revision ("org/name@rev"); the adapter id is the repository. */
    char *at = eq ? NULL : strchr(name, '@');
    if (at) *at = 0;
    if (!name[0] || !lq_adapter_id_valid(name)) {
        lq_fail(err, "LORA_ADAPTERS: '%s' is not a valid adapter id (1-%d characters of A-Z a-z 0-9 . _ / -, not starting "
                     "with '.' or '/')", name, LQ_ADAPTER_ID_MAX);
        free(name);
        return -1;
    }
    if (has_adapter(*list, *count, name)) {
        lq_fail(err, "LORA_ADAPTERS: adapter '%s' is listed twice", name);
        free(name);
        return -1;
    }
    char **grown = realloc(*list, (size_t)(*count + 1) * sizeof *grown);
    if (!grown) {
        free(name);
        return lq_fail(err, "out of memory");
    }
    grown[(*count)++] = name;
    *list = grown;
    return 0;
}

int lq_gw_parse_adapters(const char *list, char ***out, int *n, lq_error *err) {
    char **names = NULL;
    int count = 0;
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (add_adapter(p, len, &names, &count, err)) {
            for (int i = 0; i < count; i++) free(names[i]);
            free(names);
            return -1;
        }
        p = comma ? comma + 1 : p + len;
    }
    *out = names;
    *n = count;
    return 0;
}

static int apply(lq_gw_config *c, const opt *o, const char *value, const char *origin, lq_error *err) {
    if (o->kind == OPT_ADAPTERS) {
        lq_gw_config_free(c);
        return lq_gw_parse_adapters(value, &c->adapters, &c->n_adapters, err);
    }
    if (o->kind == OPT_STR) {
        char *dst = (char *)c + o->off;
        if (strlen(value) >= o->size) return lq_fail(err, "%s: value too long (at most %zu bytes)", origin, o->size - 1);
        if (!value[0] && strcmp(o->env, "LORQ_PREFIX") && strcmp(o->env, "REDIS_URL") && strcmp(o->env, "HOSTNAME"))
            return lq_fail(err, "%s: must not be empty", origin);
        memcpy(dst, value, strlen(value) + 1);
        return 0;
    }
    long long v;
    if (parse_int(value, o->lo, o->hi, &v))
        return lq_fail(err, "%s: '%s' is not an integer between %lld and %lld", origin, value, o->lo, o->hi);
    /* These two are wider than an int, so the table gives them no offset. */
    if (!strcmp(o->env, "RESULT_TTL")) c->result_ttl_ms = v * 1000;
    else if (!strcmp(o->env, "PAYLOAD_LIMIT")) c->payload_limit = v;
    else *(int *)((char *)c + o->off) = (int)v;
    return 0;
}

static int read_env(lq_gw_config *c, lq_error *err) {
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(OPTS[i].env);
        /* An empty variable means "not set" (docker-compose and systemd write those). */
        if (v && *v && apply(c, &OPTS[i], v, OPTS[i].env, err)) return -1;
    }
    return 0;
}

/* The worker calls LORQ_PREFIX --prefix; both spellings work here. */
static void flag_of(const opt *o, char *out, size_t size) {
    if (!strcmp(o->env, "LORQ_PREFIX")) snprintf(out, size, "prefix");
    else flag_name(o->env, out, size);
}

static const opt *find_flag(const char *name, size_t len) {
    if (len == 11 && !memcmp(name, "lorq-prefix", 11)) name = "prefix", len = 6;
    for (size_t i = 0; i < N_OPTS; i++) {
        char f[64];
        flag_of(&OPTS[i], f, sizeof f);
        if (strlen(f) == len && !memcmp(f, name, len)) return &OPTS[i];
    }
    return NULL;
}

static int read_flags(lq_gw_config *c, int argc, char **argv, lq_error *err) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            c->help = 1;
            continue;
        }
        if (strncmp(a, "--", 2)) return lq_fail(err, "unexpected argument '%s' (see --help)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_flag(name, len);
        if (!o) return lq_fail(err, "unknown flag '%.*s' (see --help)", (int)len + 2, a);
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) return lq_fail(err, "%s needs a value", a);
        char origin[80];
        snprintf(origin, sizeof origin, "--%.*s", (int)len, name);
        if (apply(c, o, value, origin, err)) return -1;
    }
    return 0;
}

int lq_gw_config_parse(lq_gw_config *c, int argc, char **argv, lq_error *err) {
    set_defaults(c);
    if (read_env(c, err) || read_flags(c, argc, argv, err)) {
        lq_gw_config_free(c);
        return -1;
    }
    if (!lq_prefix_valid(c->prefix)) {
        lq_gw_config_free(c);
        return lq_fail(err, "LORQ_PREFIX: '%s' must be 1 to %d printable characters without spaces", c->prefix,
                       LQ_PREFIX_MAX);
    }
    if (!c->hostname[0]) snprintf(c->hostname, sizeof c->hostname, "0.0.0.0");
    if (!c->redis_url[0]) snprintf(c->redis_url, sizeof c->redis_url, "%s", LQ_REDIS_DEFAULT_URL);
    lq_redis_url u;
    if (lq_redis_url_parse(c->redis_url, &u, err)) {
        lq_error_prefix(err, "REDIS_URL");
        lq_gw_config_free(c);
        return -1;
    }
    return 0;
}

int lq_gw_config_finish(lq_gw_config *c, int max_position_embeddings, lq_error *err) {
    int model_max = max_position_embeddings > 1 ? max_position_embeddings : 0;
    if (!c->max_total_tokens) {
        int dflt = model_max ? (model_max < 4096 ? model_max : 4096) : 4096;
        /* A larger input limit asked for explicitly raises the default total with it. */
        c->max_total_tokens = c->max_input_tokens >= dflt ? c->max_input_tokens + 1 : dflt;
    }
    if (!c->max_input_tokens) c->max_input_tokens = c->max_total_tokens - 1;
    if (c->max_input_tokens >= c->max_total_tokens)
        return lq_fail(err, "MAX_INPUT_TOKENS (%d) must be < MAX_TOTAL_TOKENS (%d)", c->max_input_tokens,
                       c->max_total_tokens);
    if (model_max && c->max_total_tokens > model_max)
        return lq_fail(err, "MAX_TOTAL_TOKENS (%d) is more than the model's max_position_embeddings (%d)",
                       c->max_total_tokens, model_max);
    return 0;
}

const char *lq_gw_usage(void) {
    static char text[4096];
    if (text[0]) return text;
    size_t n = (size_t)snprintf(text, sizeof text,
                                "usage: lorq-gateway [--flag VALUE]...\n"
                                "Every flag can also be given as the environment variable in brackets.\n");
    for (size_t i = 0; i < N_OPTS && n < sizeof text; i++) {
        char f[64];
        flag_of(&OPTS[i], f, sizeof f);
        n += (size_t)snprintf(text + n, sizeof text - n, "  --%-26s [%s] %s\n", f, OPTS[i].env, OPTS[i].help);
    }
    return text;
}
