/* hub.h — models and adapters from a Hugging Face-compatible hub.
 *
 * A repository id (`owner/name`, optionally `@revision`) resolves to a local
 * snapshot folder in huggingface_hub's cache layout, so the Python tools and
 * lorq share one cache:
 *
 *   $HF_HUB_CACHE (default $HF_HOME/hub, $HF_HOME default ~/.cache/huggingface)
 *     models--owner--name/
 *       refs/<revision>              the commit a branch or tag pointed to
 *       blobs/<etag>                 file contents, named by their ETag (sha256 for LFS files)
 *       snapshots/<commit>/<file>    symlinks to ../../blobs/<etag>
 *
 * Files already in the snapshot are not fetched again. A download goes to
 * blobs/<etag>.incomplete and resumes from its length (HTTP Range) after a
 * broken transfer; LFS files are checked against their sha256 before they are
 * renamed into place. Transient failures (connection errors, timeouts,
 * truncated bodies, 429 and 5xx) are retried with exponential backoff; a
 * lock file per blob makes concurrent requests for the same file, from
 * threads or processes, share one transfer. When the hub cannot be reached,
 * a revision already in the cache is used as it is. */
#ifndef LORQ_HUB_H
#define LORQ_HUB_H

#include <stddef.h>

#include "error.h"

typedef struct lq_hub_config {
    char endpoint[512];  /* HF_ENDPOINT, default https://huggingface.co */
    char token[512];     /* HF_TOKEN, sent as a bearer token when set */
    char cache_dir[1024]; /* HF_HUB_CACHE */
    long connect_timeout_s; /* LORQ_HUB_CONNECT_TIMEOUT, default 10 */
    long stall_timeout_s;   /* a transfer slower than 1 byte/s for this long fails (LORQ_HUB_STALL_TIMEOUT, 30) */
    int max_retries;        /* LORQ_HUB_RETRIES, default 4 */
    long retry_base_ms;     /* first backoff, doubled each retry (250) */
    long long max_bytes;    /* a repository larger than this is refused (0: no limit) */
    int offline;            /* HF_HUB_OFFLINE: use the cache only */
} lq_hub_config;

/* Reads the environment; fails on malformed values (named). */
int lq_hub_config_from_env(lq_hub_config *c, lq_error *err);

/* What to fetch from a repository. */
typedef enum lq_hub_kind {
    LQ_HUB_ADAPTER, /* adapter_config.json, adapter_model.safetensors */
    LQ_HUB_MODEL    /* config.json, *.safetensors (+ index), tokenizer files, generation_config.json */
} lq_hub_kind;

/* Splits "owner/name@rev" into repo and revision (default "main"); checks the characters. */
int lq_hub_parse_id(const char *id, char *repo, size_t repo_len, char *revision, size_t rev_len, lq_error *err);

/* A string that looks like a hub id rather than a local path. */
int lq_hub_looks_like_id(const char *s);

/* Adapter ids a request may name beyond the configured ones
 * (LORQ_ALLOW_ADAPTERS): `patterns` is a comma list of shell globs matched
 * against the whole id, a star not crossing a slash (acme/STAR, STAR/STAR, team-?/x).
 * The id must also be safe as a path below a folder: segments of
 * [A-Za-z0-9._-] separated by single '/', none empty, "." or "..".
 * Returns 1 when allowed. NULL or "" patterns allow nothing. */
int lq_adapter_id_safe(const char *id);
int lq_adapter_allowed(const char *patterns, const char *id);

/* Resolves id to a snapshot folder, downloading what is missing. Writes the
 * folder's path into dir. Errors name the cause: not found, needs a token,
 * not an adapter/model repository, corrupt download, too large, unreachable. */
int lq_hub_snapshot(const lq_hub_config *c, const char *id, lq_hub_kind kind, char *dir, size_t dir_len,
                    lq_error *err);

/* A local folder as it is, or a hub id fetched with the environment's hub
 * settings: how MODEL_ID and LORA_ADAPTERS entries are resolved. */
int lq_resolve_source(const char *src, lq_hub_kind kind, char *dir, size_t dir_len, lq_error *err);

#endif
