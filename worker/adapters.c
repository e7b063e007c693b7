/* adapters.c — admissible ids, the loader thread, pins and the failure memory
 * (see adapters.h).
 *
 * Tiers. Disk: the hub cache (or a local folder); once an id resolved to a
 * folder, the folder is remembered, so a reload after an eviction reads the
 * disk without asking the hub again. With ADAPTER_DISK_BUDGET, the
 * repositories this worker downloaded are kept within that many bytes: after
 * each download the least recently used ones that are neither resident nor
 * in use are deleted from the cache (models--owner--name), and fetched again
 * when next needed. Folders it did not download (LORA_ADAPTERS,
 * LORQ_ADAPTERS_DIR) are never deleted. Host memory (worker/host_tier.h, when
 * ADAPTER_HOST_BUDGET is set, the default on a GPU backend): parsed adapters,
 * ready to upload, in their own LRU; a load looks there first, and a hit skips
 * the disk and the parse. Device memory: the scheduler's registry, with its
 * byte budget (ADAPTER_MEMORY_BUDGET) and count budget (MAX_HOST_ADAPTERS),
 * evicting the least recently used adapter no job pins; the host copy stays.
 * On the CPU backend the registry's weights are host memory already, so the
 * host tier is off there unless configured (it would hold each adapter twice).
 *
 * One loader thread does the slow work (hub transfer, file parse, backend
 * copy), one adapter at a time. Parsing fills host memory only, so it runs on
 * that thread on every backend. The CPU backend's memory is plain host
 * memory, safe to fill from that thread too; the CUDA backend keeps per-op
 * state on its stream, so there (upload_on_main) the main thread makes the
 * one upload, a pause of the batch as long as one adapter's copy. It hands back one result at a time and waits
 * until the main thread installed it: at most one adapter beyond the budgets
 * exists, the one waiting for room. Installing needs room; when every
 * resident adapter is pinned by jobs, the result waits until some end, which
 * they do since they are running or about to run.
 *
 * Pins: a job's adapter is pinned from the moment the queue accepts the job
 * (lq_adapters_want) until the job is over, one registry pin per adapter for
 * all its jobs, so an adapter is never evicted between its load and the
 * admission of the jobs that waited for it. */
#include "adapters.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>

#include "host_tier.h"
#include "hub.h"
#include "job.h"
#include "lora.h"
#include "queue.h"
#include "redis.h"

typedef struct entry {
    char name[LQ_ADAPTER_ID_MAX + 1];
    char *dir;      /* the declared folder, or where the id last resolved to; NULL: not yet */
    int declared;   /* in LORA_ADAPTERS */
    int loading;    /* with the loader, or its result waits to be installed */
    int n_jobs;     /* jobs holding the pin we took for them */
    int64_t used_ms;        /* last wanted or loaded (disk LRU) */
    char *repo_root;        /* downloaded here: <hub cache>/models--owner--name; NULL otherwise */
    long long disk_bytes;   /* of its snapshot, while repo_root is set */
    int64_t failed_until_ms;
    char fail_msg[800];
    const char *fail_type;
} entry;

typedef struct request {
    struct request *next;
    char name[LQ_ADAPTER_ID_MAX + 1];
    char *dir;    /* NULL: resolve the id */
    int declared; /* dir is LORA_ADAPTERS' folder, not where the id resolved to */
} request;

typedef struct result {
    char name[LQ_ADAPTER_ID_MAX + 1];
    char dir[4096];
    lq_lora *lora;      /* NULL: failed, or not uploaded yet (img) */
    lq_lora_host *img;  /* parsed, to upload on the main thread (upload_on_main) */
    int img_in_tier;    /* img is a host tier reference (release it), not the result's own */
    int from_host;      /* a host tier hit: no disk read, no parse */
    int from_hub;       /* dir is a hub cache snapshot this worker resolved */
    char msg[800];
    const char *type;
    double ms;
} result;

struct lq_adapters {
    lq_scheduler *s;
    const lq_model *base;
    char *allow, *dir;
    long long max_file_bytes, disk_budget;
    int failure_ttl_ms;
    int upload_on_main;
    lq_host_tier *host; /* NULL: no host tier */
    long loads_host, loads_disk;
    entry *e;
    int n, cap;
    int n_loading;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t wake_loader, wake_main;
    /* under mu */
    request *head, *tail;
    result *done; /* finished, not yet installed */
    int stop;
    int busy; /* the loader is in load_one */
};

enum { MAX_REMEMBERED = 4096 }; /* ids the table keeps before it reuses forgettable entries */

/* ---- the loader thread ---- */

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Where an undeclared id's files are: LORQ_ADAPTERS_DIR/<id>, else the hub. */
static int resolve(const lq_adapters *a, const char *name, result *r, lq_error *err) {
    if (a->dir) {
        if ((size_t)snprintf(r->dir, sizeof r->dir, "%s/%s", a->dir, name) >= sizeof r->dir)
            return lq_fail(err, "path too long");
        if (is_dir(r->dir)) return 0;
    }
    char repo[256], rev[256];
    if (lq_hub_parse_id(name, repo, sizeof repo, rev, sizeof rev, err) != 0) {
        r->type = "adapter_not_found";
        return lq_fail(err, "no folder '%s' %s and it is not a hub id (owner/name)", name,
                       a->dir ? "in LORQ_ADAPTERS_DIR" : "(LORQ_ADAPTERS_DIR is not set)");
    }
    lq_hub_config hc;
    if (lq_hub_config_from_env(&hc, err)) return -1;
    if (lq_hub_snapshot(&hc, name, LQ_HUB_ADAPTER, r->dir, sizeof r->dir, err) == 0) return r->from_hub = 1, 0;
    if (strstr(err->msg, "HTTP 404") || strstr(err->msg, "not found")) r->type = "adapter_not_found";
    return -1;
}

static int check_size(const lq_adapters *a, const char *dir, lq_error *err) {
    if (a->max_file_bytes <= 0) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > a->max_file_bytes)
        return lq_fail(err, "adapter_model.safetensors is %lld bytes, over ADAPTER_MAX_SIZE (%lld bytes)",
                       (long long)st.st_size, a->max_file_bytes);
    return 0;
}

/* Loader messages name the folder ("adapter <dir>: <dir>/file: ..."); a
 * client should learn the cause, not where this machine keeps its cache.
 * Writes msg into out without the prefix and with "<dir>/" dropped. */
static void without_dir(const char *msg, const char *dir, char *out, size_t size) {
    size_t n = strlen(dir), k = 0;
    if (!strncmp(msg, "adapter ", 8) && !strncmp(msg + 8, dir, n) && !strncmp(msg + 8 + n, ": ", 2)) msg += 10 + n;
    while (*msg && k + 1 < size) {
        if (n && !strncmp(msg, dir, n) && msg[n] == '/') msg += n + 1;
        else out[k++] = *msg++;
    }
    out[k] = 0;
}

/* A result's parsed image is done with: back to the tier, or freed if it was its own. */
static void drop_img(lq_adapters *a, result *r) {
    if (!r->img) return;
    if (r->img_in_tier) lq_host_tier_release(a->host, r->img);
    else lq_lora_host_free(r->img);
    r->img = NULL;
}

/* The backend copy of r->img (then dropped); -1 with err. */
static int upload(lq_adapters *a, result *r, lq_error *err) {
    r->lora = lq_lora_upload(r->img, a->base->backend, err);
    drop_img(a, r);
    return r->lora ? 0 : -1;
}

static result *load_one(lq_adapters *a, const request *q) {
    result *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    double t0 = (double)lq_mono_ms();
    snprintf(r->name, sizeof r->name, "%s", q->name);
    r->type = "adapter";
    lq_error err = {{0}};
    int rc = 0;
    if (a->host && (r->img = lq_host_tier_get(a->host, q->name))) {
        /* The scheduler records a folder per adapter; one deleted by the disk
         * budget is not needed here, so a placeholder stands for it. */
        snprintf(r->dir, sizeof r->dir, "%s", q->dir ? q->dir : "(host memory)");
        r->from_host = r->img_in_tier = 1;
    } else {
        /* A remembered cache copy can vanish: another worker sharing the
         * cache deleted it for its ADAPTER_DISK_BUDGET. Resolve again. */
        if (q->dir && (q->declared || is_dir(q->dir))) snprintf(r->dir, sizeof r->dir, "%s", q->dir);
        else rc = resolve(a, q->name, r, &err);
        if (rc == 0) rc = check_size(a, r->dir, &err);
        if (rc == 0 && !(r->img = lq_lora_parse(r->dir, q->name, a->base, &err))) rc = -1;
        if (rc == 0 && a->host && lq_host_tier_put(a->host, r->img)) r->img_in_tier = 1;
    }
    if (rc == 0 && !a->upload_on_main) rc = upload(a, r, &err);
    if (rc) {
        char cause[sizeof err.msg];
        without_dir(err.msg, r->dir, cause, sizeof cause);
        snprintf(r->msg, sizeof r->msg, "adapter '%s' cannot be loaded: %s", q->name, cause);
    }
    r->ms = (double)lq_mono_ms() - t0;
    return r;
}

static void *loader_main(void *arg) {
    lq_adapters *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        if (a->done || !a->head) {
            pthread_cond_wait(&a->wake_loader, &a->mu);
            continue;
        }
        request *q = a->head;
        a->head = q->next;
        if (!a->head) a->tail = NULL;
        a->busy = 1;
        pthread_mutex_unlock(&a->mu);
        result *r = load_one(a, q);
        free(q->dir);
        free(q);
        pthread_mutex_lock(&a->mu);
        a->busy = 0;
        pthread_cond_broadcast(&a->wake_main);
        if (!r) continue; /* out of memory: the entry stays "loading"; nothing better to do */
        a->done = r;
        pthread_cond_signal(&a->wake_main);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the table ---- */

static entry *find(const lq_adapters *a, const char *name) {
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->e[i].name, name)) return &a->e[i];
    return NULL;
}

/* An entry that only remembers (a failure, a folder to read again): reusable. */
static int forgettable(const lq_adapters *a, const entry *e) {
    return !e->declared && !e->loading && !e->n_jobs && !e->repo_root && !lq_scheduler_is_resident(a->s, e->name);
}

static entry *find_or_add(lq_adapters *a, const char *name) {
    entry *e = find(a, name);
    if (e) return e;
    if (strlen(name) > LQ_ADAPTER_ID_MAX) return NULL;
    if (a->n >= MAX_REMEMBERED) { /* requests for ever new ids must not grow the table without end */
        entry *old = NULL;
        for (int i = 0; i < a->n; i++)
            if (forgettable(a, &a->e[i]) && (!old || a->e[i].used_ms < old->used_ms)) old = &a->e[i];
        if (old) {
            free(old->dir);
            memset(old, 0, sizeof *old);
            snprintf(old->name, sizeof old->name, "%s", name);
            return old;
        }
    }
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        entry *p = realloc(a->e, sizeof *p * (size_t)cap);
        if (!p) return NULL;
        a->e = p;
        a->cap = cap;
    }
    e = &a->e[a->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

lq_adapters *lq_adapters_new(lq_scheduler *s, const lq_model *base, const lq_adapters_config *c, lq_error *err) {
    lq_adapters *a = calloc(1, sizeof *a);
    if (!a) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    a->s = s;
    a->base = base;
    a->allow = c->allow && *c->allow ? strdup(c->allow) : NULL;
    a->dir = c->dir && *c->dir ? strdup(c->dir) : NULL;
    a->max_file_bytes = c->max_file_bytes;
    a->disk_budget = c->disk_budget;
    a->failure_ttl_ms = c->failure_ttl_ms;
    a->upload_on_main = c->upload_on_main;
    if (c->host_budget > 0 && !(a->host = lq_host_tier_new((size_t)c->host_budget, c->host_max_count))) {
        lq_fail(err, "out of memory");
        free(a->allow), free(a->dir), free(a);
        return NULL;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->wake_loader, NULL);
    pthread_cond_init(&a->wake_main, NULL);
    if (lq_thread_start(&a->thread, loader_main, a) != 0) {
        lq_fail(err, "cannot start the adapter loader thread");
        lq_adapters_free(a, 0);
        return NULL;
    }
    a->started = 1;
    return a;
}

/* The CLOCK_REALTIME time ms from now, as pthread_cond_timedwait wants it. */
static struct timespec deadline_in(int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    return ts;
}

/* Until the loader is out of load_one, at most ms. 1: it is. Called with mu held. */
static int wait_idle(lq_adapters *a, int ms) {
    struct timespec ts = deadline_in(ms);
    while (a->busy)
        if (pthread_cond_timedwait(&a->wake_main, &a->mu, &ts) != 0) break;
    return !a->busy;
}

int lq_adapters_free(lq_adapters *a, int wait_ms) {
    if (!a) return 0;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_signal(&a->wake_loader);
        int idle = wait_idle(a, wait_ms);
        pthread_mutex_unlock(&a->mu);
        if (!idle) {
            lq_log("an adapter load is still under way; not waiting for it");
            return -1;
        }
        pthread_join(a->thread, NULL);
    }
    while (a->head) {
        request *q = a->head;
        a->head = q->next;
        free(q->dir);
        free(q);
    }
    if (a->done) lq_lora_free(a->done->lora), drop_img(a, a->done);
    free(a->done);
    lq_host_tier_free(a->host);
    for (int i = 0; i < a->n; i++) free(a->e[i].dir), free(a->e[i].repo_root);
    free(a->e);
    free(a->allow);
    free(a->dir);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->wake_loader);
    pthread_cond_destroy(&a->wake_main);
    free(a);
    return 0;
}

int lq_adapters_declare(lq_adapters *a, const char *name, const char *dir, lq_error *err) {
    entry *e = find_or_add(a, name);
    if (!e) return lq_fail(err, "out of memory");
    free(e->dir);
    if (!(e->dir = strdup(dir))) return lq_fail(err, "out of memory");
    e->declared = 1;
    return 0;
}

int lq_adapters_admissible(const lq_adapters *a, const char *name, char *why, size_t why_len) {
    const entry *e = find(a, name);
    if ((e && e->declared) || lq_adapter_allowed(a->allow, name)) return 1;
    if (a->allow)
        snprintf(why, why_len, "unknown adapter '%s': not in this worker's LORA_ADAPTERS and not matched by "
                 "LORQ_ALLOW_ADAPTERS (%s)", name, a->allow);
    else
        snprintf(why, why_len, "unknown adapter '%s' (not in this worker's LORA_ADAPTERS)", name);
    return 0;
}

static int request_load(lq_adapters *a, entry *e) {
    request *q = calloc(1, sizeof *q);
    if (!q) return -1;
    snprintf(q->name, sizeof q->name, "%s", e->name);
    q->declared = e->declared;
    if (e->dir && !(q->dir = strdup(e->dir))) {
        free(q);
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    if (a->tail) a->tail->next = q;
    else a->head = q;
    a->tail = q;
    pthread_cond_signal(&a->wake_loader);
    pthread_mutex_unlock(&a->mu);
    e->loading = 1;
    a->n_loading++;
    return 0;
}

static int failed_now(const entry *e) { return e->fail_msg[0] && lq_mono_ms() < e->failed_until_ms; }

lq_adapter_state lq_adapters_want(lq_adapters *a, const char *name, char *msg, size_t msg_len, const char **type) {
    entry *e = find_or_add(a, name);
    *type = "internal";
    if (!e) {
        snprintf(msg, msg_len, "out of memory");
        return LQ_ADAPTER_FAILED;
    }
    e->used_ms = lq_mono_ms();
    if (lq_scheduler_is_resident(a->s, name)) {
        if (e->n_jobs == 0 && lq_scheduler_pin_adapter(a->s, name) != 0) {
            snprintf(msg, msg_len, "adapter '%s' vanished while being pinned", name);
            return LQ_ADAPTER_FAILED;
        }
        e->n_jobs++;
        if (a->host) lq_host_tier_touch(a->host, name); /* in use: its host copy is the last to go */
        return LQ_ADAPTER_READY;
    }
    if (e->loading) return LQ_ADAPTER_WAIT;
    if (failed_now(e)) {
        snprintf(msg, msg_len, "%s", e->fail_msg);
        *type = e->fail_type;
        return LQ_ADAPTER_FAILED;
    }
    if (request_load(a, e) != 0) {
        snprintf(msg, msg_len, "out of memory queueing the load of adapter '%s'", name);
        return LQ_ADAPTER_FAILED;
    }
    return LQ_ADAPTER_WAIT;
}

void lq_adapters_release(lq_adapters *a, const char *name) {
    entry *e = find(a, name);
    if (!e || e->n_jobs <= 0) return;
    if (--e->n_jobs == 0) lq_scheduler_unpin_adapter(a->s, name);
}

int lq_adapters_preload(lq_adapters *a, const char *name, char *why, size_t why_len) {
    if (!name[0] || !lq_adapter_id_valid(name)) return snprintf(why, why_len, "'%s' is not a valid adapter id", name), -1;
    if (!lq_adapters_admissible(a, name, why, why_len)) return -1;
    entry *e = find_or_add(a, name);
    if (!e) return snprintf(why, why_len, "out of memory"), -1;
    if (e->loading || lq_scheduler_is_resident(a->s, name)) return 0;
    e->fail_msg[0] = 0; /* an explicit load tries again at once */
    return request_load(a, e);
}

int lq_adapters_unload(lq_adapters *a, const char *name) {
    entry *e = find(a, name);
    if (e && e->n_jobs > 0) return -1;
    /* An operator unloading an adapter wants it gone (say, to read a changed
     * folder again): from host memory too. */
    int host = a->host ? lq_host_tier_drop(a->host, name) : -1;
    int dev = lq_scheduler_unload_adapter(a->s, name);
    return host == 0 || dev == 0 ? 0 : -1;
}

/* ---- the disk tier's budget ---- */

static long long dir_bytes(const char *dir) {
    const char *files[] = {"adapter_config.json", "adapter_model.safetensors", "README.md"};
    long long sum = 0;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (stat(path, &st) == 0) sum += st.st_size; /* through the snapshot's symlinks to the blobs */
    }
    return sum;
}

/* <cache>/models--o--n from <cache>/models--o--n/snapshots/<sha>; NULL if the path is not shaped so. */
static char *repo_root_of(const char *snapshot) {
    char *root = strdup(snapshot);
    char *slash = root ? strrchr(root, '/') : NULL;
    if (slash) *slash = 0, slash = strrchr(root, '/');
    if (!slash || strcmp(slash, "/snapshots")) return free(root), NULL;
    *slash = 0;
    const char *base = strrchr(root, '/');
    if (!base || strncmp(base + 1, "models--", 8)) return free(root), NULL;
    return root;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Deletes downloads, least recently used first, until the budget holds. */
static void trim_disk(lq_adapters *a) {
    if (a->disk_budget <= 0) return;
    long long total = 0;
    for (int i = 0; i < a->n; i++)
        if (a->e[i].repo_root) total += a->e[i].disk_bytes;
    while (total > a->disk_budget) {
        entry *lru = NULL;
        for (int i = 0; i < a->n; i++) {
            entry *e = &a->e[i];
            if (!e->repo_root || e->loading || e->n_jobs || lq_scheduler_is_resident(a->s, e->name)) continue;
            if (!lru || e->used_ms < lru->used_ms) lru = e;
        }
        if (!lru) return; /* all in use: over budget until some are not */
        nftw(lru->repo_root, remove_one, 16, FTW_DEPTH | FTW_PHYS);
        lq_log("adapter '%s': deleted its download (%lld bytes) to keep ADAPTER_DISK_BUDGET", lru->name,
               lru->disk_bytes);
        total -= lru->disk_bytes;
        free(lru->repo_root), lru->repo_root = NULL;
        free(lru->dir), lru->dir = NULL; /* fetched again when next needed */
    }
}

static void note_download(lq_adapters *a, entry *e, const result *r) {
    if (!e || !r->from_hub || e->declared) return;
    free(e->repo_root);
    e->repo_root = repo_root_of(r->dir);
    e->disk_bytes = e->repo_root ? dir_bytes(r->dir) : 0;
    trim_disk(a);
}

/* Makes a finished load resident, or records its failure. 1: no room yet. */
static int install(lq_adapters *a, result *r, entry *e, int *ok) {
    *ok = 0;
    if (r->img) {
        lq_error err;
        double t0 = (double)lq_mono_ms();
        if (upload(a, r, &err) != 0)
            snprintf(r->msg, sizeof r->msg, "adapter '%s' cannot be loaded: %s", r->name, err.msg);
        r->ms += (double)lq_mono_ms() - t0;
    }
    if (r->lora) {
        lq_error err;
        int rc = lq_scheduler_install_adapter(a->s, r->name, r->dir, r->lora, &err);
        if (rc == 1) return 1;
        if (rc == 0) {
            *ok = 1;
            r->lora = NULL; /* the scheduler's now */
            if (r->from_host) {
                a->loads_host++;
                lq_log("adapter '%s' loaded in %.0f ms from the host tier (upload only; host tier hits %ld, disk "
                       "loads %ld)", r->name, r->ms, a->loads_host, a->loads_disk);
            } else {
                a->loads_disk++;
                lq_log("adapter '%s' loaded in %.0f ms from %s", r->name, r->ms, r->dir);
                if (e && (!e->dir || strcmp(e->dir, r->dir))) { /* the disk tier: no hub round trip next time */
                    free(e->dir);
                    e->dir = strdup(r->dir);
                }
            }
            if (e) e->fail_msg[0] = 0, e->used_ms = lq_mono_ms();
            note_download(a, e, r);
            return 0;
        }
        lq_lora_free(r->lora);
        r->lora = NULL;
        snprintf(r->msg, sizeof r->msg, "adapter '%s' cannot be loaded: %s", r->name, err.msg);
        r->type = "adapter";
    }
    lq_log("%s (remembered for %d ms)", r->msg, a->failure_ttl_ms);
    if (e) {
        snprintf(e->fail_msg, sizeof e->fail_msg, "%s", r->msg);
        e->fail_type = r->type;
        e->failed_until_ms = lq_mono_ms() + a->failure_ttl_ms;
        if (!e->declared) {
            free(e->dir); /* resolve again next time: the hub may have it by then */
            e->dir = NULL;
        }
    }
    return 0;
}

int lq_adapters_poll(lq_adapters *a, void (*done)(void *ctx, const char *name, int ok), void *ctx) {
    int ended = 0;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        result *r = a->done;
        pthread_mutex_unlock(&a->mu);
        if (!r) return ended;
        entry *e = find(a, r->name);
        int ok;
        if (install(a, r, e, &ok) == 1) return ended; /* no room yet: try again next turn */
        pthread_mutex_lock(&a->mu);
        a->done = NULL;
        pthread_cond_signal(&a->wake_loader);
        pthread_mutex_unlock(&a->mu);
        if (e && e->loading) {
            e->loading = 0;
            a->n_loading--;
        }
        char name[LQ_ADAPTER_ID_MAX + 1];
        snprintf(name, sizeof name, "%s", r->name);
        free(r);
        ended++;
        if (done) done(ctx, name, ok);
    }
}

int lq_adapters_loading(const lq_adapters *a) { return a->n_loading; }

void lq_adapters_wait(lq_adapters *a, int ms) {
    struct timespec ts = deadline_in(ms);
    pthread_mutex_lock(&a->mu);
    if (!a->done) pthread_cond_timedwait(&a->wake_main, &a->mu, &ts);
    pthread_mutex_unlock(&a->mu);
}

void lq_adapters_stats_get(const lq_adapters *a, lq_adapters_stats *out) {
    memset(out, 0, sizeof *out);
    out->loads_host = a->loads_host;
    out->loads_disk = a->loads_disk;
    if (!a->host) return;
    lq_host_tier_stats st;
    lq_host_tier_stats_get(a->host, &st);
    out->host_on = 1;
    out->host_count = st.count;
    out->host_bytes = st.bytes;
    out->host_evictions = st.evictions;
}

void lq_adapters_host_list(const lq_adapters *a, char *out, size_t size) {
    if (!a->host) {
        if (size) out[0] = 0;
        return;
    }
    lq_host_tier_list(a->host, out, size);
}
