/* adapters.h — the worker's adapters beyond the scheduler: which ids a job
 * may name, just-in-time loading on a thread of its own, pins for jobs not
 * yet running, and a short memory of failures.
 *
 * An id is admissible when LORA_ADAPTERS declares it or LORQ_ALLOW_ADAPTERS
 * matches it (lq_adapter_allowed). A job whose adapter is resident is pinned
 * and runs at once; otherwise the queue parks it and the loader thread
 * resolves the id (the declared folder; else LORQ_ADAPTERS_DIR/<id>; else a
 * hub repository, downloaded into the hub cache), checks its size and parses
 * it into host memory while the main thread keeps stepping the batch, keeping
 * the parsed copy in the host tier (ADAPTER_HOST_BUDGET, worker/host_tier.h),
 * where a later load finds it without reading the disk. The copy to backend
 * memory is made on that thread for the CPU backend, on the main one for a
 * GPU (upload_on_main). The
 * main thread installs the result (lq_adapters_poll), which may evict the
 * least recently used unpinned adapter, and the parked jobs go on. A failure
 * ends the parked jobs with an error naming the cause, and is remembered for
 * LORQ_ADAPTER_FAILURE_TTL seconds: jobs for that id fail at once meanwhile.
 *
 * Everything but the loader's own work runs on the main thread. */
#ifndef LORQ_ADAPTERS_H
#define LORQ_ADAPTERS_H

#include <stddef.h>

#include "error.h"
#include "model.h"
#include "scheduler.h"

typedef struct lq_adapters_config {
    const char *allow;        /* LORQ_ALLOW_ADAPTERS globs; NULL: only declared ids */
    const char *dir;          /* LORQ_ADAPTERS_DIR: local folders by id; NULL: none */
    long long max_file_bytes; /* ADAPTER_MAX_SIZE: largest adapter_model.safetensors; 0: no limit */
    long long disk_budget;    /* ADAPTER_DISK_BUDGET: bytes of hub downloads kept in the cache; 0: no limit */
    int failure_ttl_ms;       /* how long a failed load is remembered */
    int upload_on_main;       /* the backend may not be used from a second thread (CUDA): the loader
                                 thread fetches, checks and parses; the upload runs on the main one */
    long long host_budget;    /* ADAPTER_HOST_BUDGET: bytes of parsed adapters kept in host memory; 0: no host tier */
    int host_max_count;       /* ADAPTER_HOST_COUNT: most adapters in the host tier; 0: only the bytes bound */
} lq_adapters_config;

typedef struct lq_adapters lq_adapters;

lq_adapters *lq_adapters_new(lq_scheduler *s, const lq_model *base, const lq_adapters_config *c, lq_error *err);
/* Stops the loader and frees everything: 0. A load under way (a slow hub) is
 * given wait_ms to end; if it has not, returns -1 and frees nothing, since the
 * thread still uses the model: the caller must not free the model either, and
 * exits (a worker quitting does not wait for a download). */
int lq_adapters_free(lq_adapters *a, int wait_ms);

/* A LORA_ADAPTERS entry: the id and its (already resolved) folder. */
int lq_adapters_declare(lq_adapters *a, const char *name, const char *dir, lq_error *err);

/* 1 when jobs may name this id (declared or allowed); else 0 and why. */
int lq_adapters_admissible(const lq_adapters *a, const char *name, char *why, size_t why_len);

typedef enum lq_adapter_state { LQ_ADAPTER_READY, LQ_ADAPTER_WAIT, LQ_ADAPTER_FAILED } lq_adapter_state;

/* A job needs `name` (admissible). READY: resident and pinned for the job
 * (lq_adapters_release when it is over); WAIT: a load is under way, ask again
 * when lq_adapters_poll reports the id; FAILED: msg and *type say why
 * (type "adapter_not_found" or "adapter"). */
lq_adapter_state lq_adapters_want(lq_adapters *a, const char *name, char *msg, size_t msg_len, const char **type);
void lq_adapters_release(lq_adapters *a, const char *name);

/* Admin: load now without a job (0, or -1 if not admissible), or evict
 * (0, or -1 when not resident or in use: it goes when its jobs are over). */
int lq_adapters_preload(lq_adapters *a, const char *name, char *why, size_t why_len);
int lq_adapters_unload(lq_adapters *a, const char *name);

/* Main thread, every turn: installs what the loader finished and calls
 * done(ctx, name, ok) for each id whose load ended (ok 0: lq_adapters_want
 * now says FAILED). Returns how many ended. */
int lq_adapters_poll(lq_adapters *a, void (*done)(void *ctx, const char *name, int ok), void *ctx);

/* Loads under way or waiting to be installed. */
int lq_adapters_loading(const lq_adapters *a);

/* Waits up to ms for the loader to finish something (used when only parked jobs are left). */
void lq_adapters_wait(lq_adapters *a, int ms);

/* Where loads were served from since start: the host tier (an upload only)
 * or the disk (a read and a parse, fetched from the hub first if need be);
 * and the host tier's contents (host_on 0: there is none). Main thread. */
typedef struct lq_adapters_stats {
    long loads_host, loads_disk;
    int host_on, host_count;
    size_t host_bytes;
    long host_evictions;
} lq_adapters_stats;
void lq_adapters_stats_get(const lq_adapters *a, lq_adapters_stats *out);
/* The host tier's adapters, comma-separated, most recent first ("" without one). */
void lq_adapters_host_list(const lq_adapters *a, char *out, size_t size);

#endif
