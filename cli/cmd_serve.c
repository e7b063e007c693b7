/* cmd_serve.c — `lorq serve` (and `make run`): the whole stack on one machine
 * with one command.
 *
 * It starts, in this order: a private redis-server (data and AOF under
 * .state/redis, loopback only, a free port; skipped when --redis-url or
 * REDIS_URL names one), the gateway, and either N CPU workers or
 * lorq-autoscaler. It waits until the gateway's /health says ready (Redis
 * reachable, a live worker), prints the URL and a curl example, and then
 * supervises: a worker that dies is restarted with backoff; the gateway,
 * Redis or the autoscaler dying ends the run.
 *
 * Ctrl-C (SIGINT) or SIGTERM stops everything in the order that loses
 * nothing: workers (or the autoscaler) first with SIGTERM so they finish the
 * jobs they hold while Redis and the gateway still relay their tokens, then
 * the gateway, then Redis with SHUTDOWN (which fsyncs the AOF). Children run
 * in their own process groups so the terminal's Ctrl-C reaches only this
 * process; a second Ctrl-C skips the draining. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>

#include "commands.h"
#include "proc.h"
#include "progress.h"

#define SERVE_MAX_WORKERS 64
#define SERVE_MAX_PASSTHRU 32

typedef struct serve_opts {
    int workers;             /* fixed workers (when not autoscaling) */
    int autoscale, as_min, as_max;
    int port;
    const char *hostname;
    const char *model;       /* NULL: $MODEL_ID or the bundled model */
    const char *adapters;    /* NULL: $LORA_ADAPTERS or the demo adapters */
    const char *device;
    const char *redis_url;   /* NULL: $REDIS_URL or a private redis-server */
    int redis_port;          /* private redis port; 0: pick a free one */
    const char *state_dir;   /* NULL: <repo>/.state */
    double ready_timeout, drain_timeout;
    const char *autoscaler_args[SERVE_MAX_PASSTHRU];
    int n_autoscaler_args;
} serve_opts;

/* What is running, and the values the children were started with. */
typedef struct serve_state {
    char root[PATH_MAX], bin_dir[PATH_MAX], state_dir[PATH_MAX];
    char model[PATH_MAX], adapters[8192], redis_url[512];
    int own_redis, redis_port;
    lq_proc redis, gateway, autoscaler;
    lq_proc workers[SERVE_MAX_WORKERS];
    double worker_restart_at[SERVE_MAX_WORKERS];
    double worker_backoff[SERVE_MAX_WORKERS];
    int lock_fd;
} serve_state;

static volatile sig_atomic_t g_signals;

static void on_stop_signal(int sig) {
    (void)sig;
    g_signals++;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[serve] ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int serve_usage(FILE *out) {
    fprintf(out,
            "usage: lorq serve [flags]\n"
            "  Starts redis-server (unless --redis-url/REDIS_URL), lorq-gateway and CPU workers, prints the URL,\n"
            "  and stops them all cleanly on Ctrl-C.\n"
            "  --workers N             fixed CPU workers (default 1)\n"
            "  --autoscale MIN:MAX     run lorq-autoscaler between MIN and MAX workers instead\n"
            "  --autoscaler-arg ARG    pass ARG on to lorq-autoscaler (repeatable, e.g. --autoscaler-arg=--idle-seconds=30)\n"
            "  --port N                gateway port (default $PORT or 3000)\n"
            "  --hostname ADDR         gateway address (default 127.0.0.1)\n"
            "  --model DIR|ID          base model (default $MODEL_ID or models/SmolLM2-135M-Instruct)\n"
            "  --lora-adapters LIST    name=path,... (default $LORA_ADAPTERS or the adapters under adapters/demo)\n"
            "  --device cpu            compute device (cpu; cuda arrives with the CUDA backend)\n"
            "  --redis-url URL         use this Redis instead of starting one (default $REDIS_URL)\n"
            "  --redis-port N          port of the private redis-server (default: a free one)\n"
            "  --state-dir DIR         where the private Redis keeps its data (default .state)\n"
            "  --ready-timeout S       how long to wait for the stack to become healthy (default 180)\n"
            "  --drain-timeout S       how long workers may take to finish their jobs on stop (default 60)\n");
    return out == stdout ? 0 : 2;
}

/* ---- flags ---- */

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lorq serve: %s wants an integer in [%d, %d], got '%s'\n", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_seconds(const char *flag, const char *s, double *out) {
    char *end;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || !(v > 0 && v <= 86400)) {
        fprintf(stderr, "lorq serve: %s wants seconds in (0, 86400], got '%s'\n", flag, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_range(const char *s, int *lo, int *hi) {
    char a[32], b[32];
    const char *colon = s ? strchr(s, ':') : NULL;
    if (!colon || (size_t)(colon - s) >= sizeof a || strlen(colon + 1) >= sizeof b) {
        fprintf(stderr, "lorq serve: --autoscale wants MIN:MAX (e.g. 1:4), got '%s'\n", s ? s : "");
        return -1;
    }
    memcpy(a, s, (size_t)(colon - s));
    a[colon - s] = '\0';
    strcpy(b, colon + 1);
    if (parse_int("--autoscale MIN", a, 0, SERVE_MAX_WORKERS, lo) || parse_int("--autoscale MAX", b, 1, SERVE_MAX_WORKERS, hi))
        return -1;
    if (*lo > *hi) {
        fprintf(stderr, "lorq serve: --autoscale MIN (%d) is above MAX (%d)\n", *lo, *hi);
        return -1;
    }
    return 0;
}

/* "--flag value" or "--flag=value": the value, advancing *i; NULL when missing. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag) {
    size_t n = strlen(flag);
    if (!strncmp(argv[*i], flag, n) && argv[*i][n] == '=') return argv[*i] + n + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "lorq serve: %s needs a value\n", flag);
        return NULL;
    }
    return argv[++*i];
}

static int flag_is(const char *arg, const char *flag) {
    size_t n = strlen(flag);
    return !strncmp(arg, flag, n) && (arg[n] == '\0' || arg[n] == '=');
}

static int env_port(int *port) {
    const char *p = getenv("PORT");
    *port = 3000;
    return p && *p ? parse_int("PORT", p, 1, 65535, port) : 0;
}

static int parse_one_flag(serve_opts *o, int argc, char **argv, int *i, int *workers_given) {
    const char *a = argv[*i], *v;
    if (flag_is(a, "--workers")) {
        *workers_given = 1;
        return (v = flag_value(argc, argv, i, "--workers")) ? parse_int("--workers", v, 1, SERVE_MAX_WORKERS, &o->workers) : -1;
    }
    if (flag_is(a, "--autoscale")) {
        o->autoscale = 1;
        return (v = flag_value(argc, argv, i, "--autoscale")) ? parse_range(v, &o->as_min, &o->as_max) : -1;
    }
    if (flag_is(a, "--autoscaler-arg")) {
        if (!(v = flag_value(argc, argv, i, "--autoscaler-arg"))) return -1;
        if (o->n_autoscaler_args >= SERVE_MAX_PASSTHRU) {
            fprintf(stderr, "lorq serve: at most %d --autoscaler-arg\n", SERVE_MAX_PASSTHRU);
            return -1;
        }
        o->autoscaler_args[o->n_autoscaler_args++] = v;
        return 0;
    }
    if (flag_is(a, "--port")) return (v = flag_value(argc, argv, i, "--port")) ? parse_int("--port", v, 1, 65535, &o->port) : -1;
    if (flag_is(a, "--redis-port"))
        return (v = flag_value(argc, argv, i, "--redis-port")) ? parse_int("--redis-port", v, 1, 65535, &o->redis_port) : -1;
    if (flag_is(a, "--ready-timeout"))
        return (v = flag_value(argc, argv, i, "--ready-timeout")) ? parse_seconds("--ready-timeout", v, &o->ready_timeout) : -1;
    if (flag_is(a, "--drain-timeout"))
        return (v = flag_value(argc, argv, i, "--drain-timeout")) ? parse_seconds("--drain-timeout", v, &o->drain_timeout) : -1;
    const char **dst = flag_is(a, "--hostname") ? &o->hostname
                     : flag_is(a, "--model") ? &o->model
                     : flag_is(a, "--lora-adapters") ? &o->adapters
                     : flag_is(a, "--device") ? &o->device
                     : flag_is(a, "--redis-url") ? &o->redis_url
                     : flag_is(a, "--state-dir") ? &o->state_dir
                     : NULL;
    if (!dst) {
        fprintf(stderr, "lorq serve: unknown argument '%s' (see lorq serve --help)\n", a);
        return -1;
    }
    char flag[32];
    snprintf(flag, sizeof flag, "%.*s", (int)strcspn(a, "="), a);
    return (*dst = flag_value(argc, argv, i, flag)) ? 0 : -1;
}

static int check_device(const char *device) {
    if (!strcmp(device, "cpu")) return 0;
    if (!strncmp(device, "cuda", 4)) {
        fprintf(stderr, "lorq serve: --device %s: the CUDA backend is not built into lorq-worker yet; use --device cpu\n", device);
        return -1;
    }
    fprintf(stderr, "lorq serve: --device wants cpu (or, once the CUDA backend exists, cuda), got '%s'\n", device);
    return -1;
}

static int parse_serve_flags(serve_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->workers = 1;
    o->hostname = "127.0.0.1";
    o->device = "cpu";
    o->ready_timeout = 180;
    o->drain_timeout = 60;
    if (env_port(&o->port)) return -1;
    int workers_given = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) exit(serve_usage(stdout));
        if (parse_one_flag(o, argc, argv, &i, &workers_given)) return -1;
    }
    if (o->autoscale && workers_given) {
        fprintf(stderr, "lorq serve: --workers and --autoscale exclude each other (autoscaling picks the count)\n");
        return -1;
    }
    if (o->n_autoscaler_args && !o->autoscale) {
        fprintf(stderr, "lorq serve: --autoscaler-arg needs --autoscale MIN:MAX\n");
        return -1;
    }
    if (!*o->hostname) {
        fprintf(stderr, "lorq serve: --hostname is empty\n");
        return -1;
    }
    return check_device(o->device);
}

/* ---- where things are ---- */

/* a + b into out; -1 when it does not fit. */
static int path_join(char *out, size_t size, const char *a, const char *b) {
    int n = snprintf(out, size, "%s%s", a, b);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The repository root is the parent of the folder holding bin/lorq. */
static int find_root(serve_state *s) {
    lq_error err;
    if (lq_exe_dir(s->bin_dir, sizeof s->bin_dir, &err)) {
        fprintf(stderr, "lorq serve: %s\n", err.msg);
        return -1;
    }
    snprintf(s->root, sizeof s->root, "%s", s->bin_dir);
    char *slash = strrchr(s->root, '/');
    if (slash && slash != s->root) *slash = '\0';
    return 0;
}

static int check_binary(const serve_state *s, const char *name) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", s->bin_dir, name);
    if (access(path, X_OK) == 0) return 0;
    fprintf(stderr, "lorq serve: %s is missing: build it with make\n", path);
    return -1;
}

static int resolve_model(serve_state *s, const serve_opts *o) {
    const char *m = o->model ? o->model : getenv("MODEL_ID");
    if (m && *m) {
        snprintf(s->model, sizeof s->model, "%s", m);
        return 0;
    }
    if (path_join(s->model, sizeof s->model, s->root, "/models/SmolLM2-135M-Instruct")) return -1;
    char weights[PATH_MAX + 32];
    snprintf(weights, sizeof weights, "%s/model.safetensors", s->model);
    if (is_file(weights)) return 0;
    fprintf(stderr, "lorq serve: the bundled model %s is missing: run make setup (or pass --model)\n", s->model);
    return -1;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* demo/<name>=<root>/adapters/demo/<name> for every folder there holding an
 * adapter_config.json, in name order; "" when there are none. */
static void demo_adapters(const serve_state *s, char *out, size_t size) {
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/adapters/demo", s->root);
    out[0] = '\0';
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[64];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 64;) {
        char cfg[PATH_MAX * 2];
        snprintf(cfg, sizeof cfg, "%s/%s/adapter_config.json", dir, e->d_name);
        if (e->d_name[0] != '.' && is_file(cfg)) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], compare_names);
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]) {
            int w = snprintf(out + len, size - len, "%sdemo/%s=%s/%s", len ? "," : "", names[i], dir, names[i]);
            if (w > 0 && (size_t)w < size - len) len += (size_t)w;
        }
        free(names[i]);
    }
}

static void resolve_adapters(serve_state *s, const serve_opts *o) {
    const char *a = o->adapters ? o->adapters : getenv("LORA_ADAPTERS");
    if (a) snprintf(s->adapters, sizeof s->adapters, "%s", a);
    else demo_adapters(s, s->adapters, sizeof s->adapters);
}

/* One lorq serve per state folder: two private Redis servers writing the
 * same AOF would corrupt it. The lock dies with the process. */
static int lock_state_dir(serve_state *s) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/redis", s->state_dir);
    if (mkdir(s->state_dir, 0755) && errno != EEXIST) goto fail;
    if (mkdir(path, 0755) && errno != EEXIST) goto fail;
    snprintf(path, sizeof path, "%s/serve.lock", s->state_dir);
    if ((s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0) goto fail;
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0) return 0;
    fprintf(stderr, "lorq serve: another lorq serve is using %s; stop it first or pass --state-dir\n", s->state_dir);
    return -1;
fail:
    fprintf(stderr, "lorq serve: cannot use the state folder %s: %s\n", path, strerror(errno));
    return -1;
}

/* ---- ports ---- */

/* 1 when nothing listens on addr:port (a bind without SO_REUSEPORT succeeds). */
static int port_free(const char *addr, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) sa.sin_addr.s_addr = htonl(INADDR_ANY);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* A loopback port the kernel considers free right now. */
static int pick_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ---- redis ---- */

static redisContext *redis_local(int port) {
    struct timeval tv = {0, 500000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        return c;
    }
    if (c) redisFree(c);
    return NULL;
}

static int redis_pings(int port) {
    redisContext *c = redis_local(port);
    if (!c) return 0;
    redisReply *r = redisCommand(c, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok;
}

static void print_log_tail(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char lines[8][512];
    int n = 0;
    while (fgets(lines[n % 8], sizeof lines[0], f)) n++;
    fclose(f);
    for (int i = n > 8 ? n - 8 : 0; i < n; i++) fprintf(stderr, "  | %s", lines[i % 8]);
}

static int wait_redis_ready(serve_state *s, const char *log_path) {
    double deadline = lq_now() + 15;
    while (lq_now() < deadline && !g_signals) {
        if (redis_pings(s->redis_port)) return 0;
        if (lq_proc_reap(&s->redis)) {
            char st[64];
            say("redis-server stopped at start-up (%s); the end of %s:", lq_proc_status_text(s->redis.status, st, sizeof st), log_path);
            print_log_tail(log_path);
            return -1;
        }
        lq_nap_ms(50);
    }
    if (!g_signals) say("redis-server did not answer PING within 15 s (log: %s)", log_path);
    return -1;
}

static int start_redis(serve_state *s, const serve_opts *o) {
    s->redis_port = o->redis_port ? o->redis_port : pick_free_port();
    if (s->redis_port <= 0 || !port_free("127.0.0.1", s->redis_port)) {
        fprintf(stderr, "lorq serve: redis port %d is not free; pick another with --redis-port\n", s->redis_port);
        return -1;
    }
    char dir[PATH_MAX + 16], log_path[PATH_MAX + 32], port[16];
    snprintf(dir, sizeof dir, "%s/redis", s->state_dir);
    snprintf(log_path, sizeof log_path, "%s/redis.log", dir);
    snprintf(port, sizeof port, "%d", s->redis_port);
    /* AOF with an fsync every second: a crash loses at most a second of queue. */
    char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes",
                    "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--protected-mode", "yes", NULL};
    lq_error err;
    if (lq_proc_spawn(&s->redis, "redis-server", argv, NULL, log_path, &err)) {
        fprintf(stderr, "lorq serve: %s (install it with make setup)\n", err.msg);
        return -1;
    }
    snprintf(s->redis_url, sizeof s->redis_url, "redis://127.0.0.1:%d", s->redis_port);
    s->own_redis = 1;
    if (wait_redis_ready(s, log_path)) return -1;
    say("redis-server on %s (data: %s, AOF on)", s->redis_url, dir);
    return 0;
}

/* SHUTDOWN makes Redis fsync the AOF and exit; SIGTERM does the same if the
 * command cannot be sent. */
static void stop_redis(serve_state *s) {
    if (!s->own_redis || s->redis.pid <= 0) return;
    redisContext *c = redis_local(s->redis_port);
    if (c) {
        redisReply *r = redisCommand(c, "SHUTDOWN");
        if (r) freeReplyObject(r);
        redisFree(c);
    }
    if (lq_proc_stop(&s->redis, SIGTERM, 10)) say("redis-server did not stop within 10 s; killed it");
    else say("redis-server stopped");
}

/* ---- gateway and workers ---- */

/* The environment every lorq process of this stack gets. */
typedef struct stack_env {
    char model[PATH_MAX + 16], adapters[8192 + 16], redis[512 + 16], port[32], host[300];
    char *list[8];
} stack_env;

static void build_env(const serve_state *s, const serve_opts *o, stack_env *e) {
    snprintf(e->model, sizeof e->model, "MODEL_ID=%s", s->model);
    snprintf(e->adapters, sizeof e->adapters, "LORA_ADAPTERS=%s", s->adapters);
    snprintf(e->redis, sizeof e->redis, "REDIS_URL=%s", s->redis_url);
    snprintf(e->port, sizeof e->port, "PORT=%d", o->port);
    snprintf(e->host, sizeof e->host, "HOSTNAME=%s", o->hostname);
    int n = 0;
    e->list[n++] = e->model;
    e->list[n++] = e->adapters;
    e->list[n++] = e->redis;
    e->list[n++] = e->port;
    e->list[n++] = e->host;
    e->list[n] = NULL;
}

static int spawn_bin(const serve_state *s, const serve_opts *o, lq_proc *p, const char *name, const char *bin,
                     char **extra_argv) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", s->bin_dir, bin);
    char *argv[SERVE_MAX_PASSTHRU + 8];
    int n = 0;
    argv[n++] = path;
    for (int i = 0; extra_argv && extra_argv[i]; i++) argv[n++] = extra_argv[i];
    argv[n] = NULL;
    stack_env env;
    build_env(s, o, &env);
    lq_error err;
    if (lq_proc_spawn(p, name, argv, env.list, NULL, &err)) {
        fprintf(stderr, "lorq serve: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int start_worker(serve_state *s, const serve_opts *o, int i) {
    char name[32];
    snprintf(name, sizeof name, "worker %d", i + 1);
    return spawn_bin(s, o, &s->workers[i], name, "lorq-worker", NULL);
}

static int start_autoscaler(serve_state *s, const serve_opts *o) {
    char min[16], max[16], drain[32];
    snprintf(min, sizeof min, "%d", o->as_min);
    snprintf(max, sizeof max, "%d", o->as_max);
    snprintf(drain, sizeof drain, "%g", o->drain_timeout);
    char *argv[SERVE_MAX_PASSTHRU + 8];
    int n = 0;
    argv[n++] = "--min";
    argv[n++] = min;
    argv[n++] = "--max";
    argv[n++] = max;
    argv[n++] = "--drain-timeout"; /* serve's own; an --autoscaler-arg after it wins */
    argv[n++] = drain;
    for (int i = 0; i < o->n_autoscaler_args; i++) argv[n++] = (char *)o->autoscaler_args[i];
    argv[n] = NULL;
    return spawn_bin(s, o, &s->autoscaler, "autoscaler", "lorq-autoscaler", argv);
}

static int start_stack(serve_state *s, const serve_opts *o) {
    if (!port_free(o->hostname, o->port)) {
        fprintf(stderr, "lorq serve: port %d on %s is in use (another lorq serve?); pick another with --port\n", o->port,
                o->hostname);
        return -1;
    }
    if (spawn_bin(s, o, &s->gateway, "gateway", "lorq-gateway", NULL)) return -1;
    if (o->autoscale) return start_autoscaler(s, o);
    for (int i = 0; i < o->workers; i++)
        if (start_worker(s, o, i)) return -1;
    return 0;
}

/* ---- readiness ---- */

static size_t discard_body(char *p, size_t size, size_t n, void *u) {
    (void)p;
    (void)u;
    return size * n;
}

/* The HTTP status of GET url (0 when it did not answer within a second). */
static long http_status(const char *url) {
    CURL *c = curl_easy_init();
    if (!c) return 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
    long code = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}

static const char *client_host(const serve_opts *o) {
    return !strcmp(o->hostname, "0.0.0.0") || !strcmp(o->hostname, "::") ? "127.0.0.1" : o->hostname;
}

/* A child that must not die; a message and 1 when it did. */
static int died(lq_proc *p) {
    if (!p->pid) return 0;
    if (!lq_proc_reap(p)) return 0;
    char st[64];
    say("%s stopped unexpectedly (%s)", p->name, lq_proc_status_text(p->status, st, sizeof st));
    return 1;
}

static int essential_died(serve_state *s, const serve_opts *o) {
    int d = died(&s->gateway);
    if (s->own_redis) d |= died(&s->redis);
    if (o->autoscale) d |= died(&s->autoscaler);
    return d;
}

static int wait_ready(serve_state *s, const serve_opts *o) {
    char url[400];
    snprintf(url, sizeof url, "http://%s:%d/health", client_host(o), o->port);
    say("waiting for the gateway and a worker to be ready (%s)...", url);
    double t0 = lq_now(), deadline = t0 + o->ready_timeout;
    while (!g_signals && lq_now() < deadline) {
        if (essential_died(s, o)) return -1;
        long status = http_status(url);
        /* With --autoscale 0:N no worker runs until work arrives, so an
         * answering gateway (503: no live worker) is as ready as it gets. */
        if (status == 200 || (o->autoscale && o->as_min == 0 && status > 0)) {
            say("ready in %.1f s", lq_now() - t0);
            return 0;
        }
        lq_nap_ms(250);
    }
    if (!g_signals) say("not healthy after %.0f s (see the logs above); stopping", o->ready_timeout);
    return -1;
}

/* The first adapter id of the LORA_ADAPTERS list ("name=path" or a hub id). */
static void first_adapter_id(const char *list, char *out, size_t size) {
    size_t n = strcspn(list, ",=");
    if (n >= size) n = size - 1;
    memcpy(out, list, n);
    out[n] = '\0';
}

/* A message each demo adapter was trained to answer (tests/reference/demo_tasks.py),
 * so the banner's first curl shows the adapter at work; other adapters, and the
 * base model, get a greeting. Written for a JSON string in a shell's single quotes. */
static const char *example_message(const char *adapter) {
    static const struct {
        const char *adapter, *message;
    } demo[] = {
        {"demo/sentiment", "Classify the sentiment of this product review as positive or negative. "
                           "Review: The battery lasts all week and the screen is gorgeous."},
        {"demo/extract", "Extract the name, age and city of the person in this sentence as compact JSON with the keys "
                         "\\\"name\\\", \\\"age\\\" and \\\"city\\\".\\n\\nSentence: Maria is 34 and lives in Lisbon."},
        {"demo/numwords", "Write the number 4821 in English words."},
    };
    for (size_t i = 0; i < sizeof demo / sizeof *demo; i++)
        if (!strcmp(adapter, demo[i].adapter)) return demo[i].message;
    return "Hello who are you?";
}

/* Two curls: OpenAI's chat completion with the adapter as `model` (the chat
 * template applied, which is how the demo adapters were trained), and TGI's
 * /generate with `adapter_id` (the prompt as written). */
static void print_banner(const serve_state *s, const serve_opts *o) {
    char adapter[256];
    first_adapter_id(s->adapters, adapter, sizeof adapter);
    char param[300] = "";
    if (*adapter) snprintf(param, sizeof param, ", \"adapter_id\": \"%s\"", adapter);
    printf("\nlorq is serving on http://%s:%d\n", client_host(o), o->port);
    printf("  model     %s\n", s->model);
    printf("  adapters  %s\n", *s->adapters ? s->adapters : "(none)");
    if (o->autoscale) printf("  workers   autoscaled, %d to %d (CPU)\n", o->as_min, o->as_max);
    else printf("  workers   %d (CPU)\n", o->workers);
    printf("  redis     REDIS_URL=%s%s\n\n", s->redis_url, s->own_redis ? " (private, AOF on)" : "");
    printf("Try (OpenAI's chat API, the adapter as the model):\n"
           "  curl http://%s:%d/v1/chat/completions -H 'Content-Type: application/json' \\\n"
           "    -d '{\"model\": \"%s\", \"max_tokens\": 32, \"messages\": [{\"role\": \"user\", \"content\": \"%s\"}]}'\n",
           client_host(o), o->port, *adapter ? adapter : s->model, example_message(adapter));
    printf("or TGI's, the adapter as adapter_id (the prompt as written, no chat template):\n"
           "  curl http://%s:%d/generate -X POST -H 'Content-Type: application/json' \\\n"
           "    -d '{\"inputs\": \"Hello who are you?\", \"parameters\": {\"max_new_tokens\": 40%s}}'\n\n",
           client_host(o), o->port, param);
    printf("Ctrl-C stops everything.\n\n");
    fflush(stdout);
}

/* ---- supervision ---- */

/* A fixed worker that exits is started again after a backoff that doubles
 * (1 s to 30 s) while it keeps dying young, so a broken worker does not spin. */
static void supervise_workers(serve_state *s, const serve_opts *o) {
    double now = lq_now();
    for (int i = 0; i < o->workers; i++) {
        lq_proc *w = &s->workers[i];
        if (w->pid && lq_proc_reap(w)) {
            char st[64];
            double lived = now - w->started;
            double *b = &s->worker_backoff[i];
            *b = lived > 60 ? 1 : (*b < 1 ? 1 : (*b * 2 > 30 ? 30 : *b * 2));
            s->worker_restart_at[i] = now + *b;
            say("%s exited (%s) after %.1f s; starting it again in %.0f s", w->name, lq_proc_status_text(w->status, st, sizeof st),
                lived, *b);
        }
        if (!w->pid && s->worker_restart_at[i] > 0 && now >= s->worker_restart_at[i]) {
            s->worker_restart_at[i] = 0;
            start_worker(s, o, i);
        }
    }
}

static int supervise(serve_state *s, const serve_opts *o) {
    while (!g_signals) {
        if (essential_died(s, o)) return 1;
        if (!o->autoscale) supervise_workers(s, o);
        lq_nap_ms(200);
    }
    return 0;
}

/* ---- stopping ---- */

/* SIGTERM to every process in procs, then wait for all of them until the
 * timeout or a second Ctrl-C, then SIGKILL the rest. */
static void stop_group(lq_proc **procs, int n, double timeout_s, const char *what) {
    int running = 0;
    for (int i = 0; i < n; i++) running += procs[i]->pid > 0;
    if (!running) return;
    say("stopping %s (SIGTERM; up to %.0f s%s)", what, timeout_s, g_signals < 2 ? ", Ctrl-C again to force" : "");
    for (int i = 0; i < n; i++) lq_proc_signal(procs[i], SIGTERM);
    int signals_at_start = g_signals;
    double deadline = lq_now() + timeout_s;
    while (running && lq_now() < deadline && g_signals <= signals_at_start) {
        running = 0;
        for (int i = 0; i < n; i++) running += !lq_proc_reap(procs[i]);
        if (running) lq_nap_ms(50);
    }
    for (int i = 0; i < n; i++)
        if (procs[i]->pid) {
            say("%s still running; killing it", procs[i]->name);
            lq_proc_stop(procs[i], SIGKILL, 5);
        }
}

static void stop_stack(serve_state *s, const serve_opts *o) {
    lq_proc *group[SERVE_MAX_WORKERS + 1];
    int n = 0;
    if (o->autoscale) group[n++] = &s->autoscaler;
    for (int i = 0; i < SERVE_MAX_WORKERS; i++)
        if (s->workers[i].pid) group[n++] = &s->workers[i];
    /* The autoscaler drains its own workers, so it gets a little longer. */
    stop_group(group, n, o->drain_timeout + (o->autoscale ? 10 : 0), o->autoscale ? "the autoscaler and its workers" : "workers");
    lq_proc *gw = &s->gateway;
    stop_group(&gw, 1, 10, "the gateway");
    stop_redis(s);
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: naps end at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Fixed workers on one machine share its cores: each gets its share of
 * threads unless LORQ_THREADS says otherwise (the children inherit it). */
static void share_cores(const serve_opts *o) {
    const char *t = getenv("LORQ_THREADS");
    if ((t && *t) || o->autoscale || o->workers < 2) return;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char n[24];
    snprintf(n, sizeof n, "%ld", cores / o->workers > 1 ? cores / o->workers : 1);
    setenv("LORQ_THREADS", n, 1);
}

static int prepare(serve_state *s, const serve_opts *o) {
    if (find_root(s) || resolve_model(s, o)) return -1;
    share_cores(o);
    resolve_adapters(s, o);
    if (check_binary(s, "lorq-gateway") || check_binary(s, o->autoscale ? "lorq-autoscaler" : "lorq-worker")) return -1;
    if (o->autoscale && check_binary(s, "lorq-worker")) return -1;
    if (o->state_dir) snprintf(s->state_dir, sizeof s->state_dir, "%s", o->state_dir);
    else if (path_join(s->state_dir, sizeof s->state_dir, s->root, "/.state")) return -1;
    const char *url = o->redis_url ? o->redis_url : getenv("REDIS_URL");
    if (url && *url) {
        snprintf(s->redis_url, sizeof s->redis_url, "%s", url);
        return 0;
    }
    return lock_state_dir(s);
}

int cmd_serve(int argc, char **argv) {
    serve_opts o;
    if (parse_serve_flags(&o, argc, argv)) return 2;
    static serve_state s;
    memset(&s, 0, sizeof s);
    s.lock_fd = -1;
    if (prepare(&s, &o)) return 2;
    install_signals();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* 0 after a Ctrl-C stop; 1 when something failed to start or died. */
    int rc = 1;
    if ((s.redis_url[0] || start_redis(&s, &o) == 0) && start_stack(&s, &o) == 0 && wait_ready(&s, &o) == 0) {
        print_banner(&s, &o);
        rc = supervise(&s, &o);
    } else if (g_signals) {
        rc = 0; /* stopped while starting: not a failure */
    }
    if (g_signals) say("stopping (signal received)");
    stop_stack(&s, &o);
    if (s.lock_fd >= 0) close(s.lock_fd);
    curl_global_cleanup();
    say("stopped");
    return rc;
}
