/* host_tier.h — the host-memory tier: parsed adapters kept in host memory,
 * within their own budget, so that an adapter evicted from device memory
 * comes back with an upload instead of a disk read and a parse.
 *
 * It sits between the disk tier (the hub cache, worker/adapters.c) and the
 * device tier (the scheduler's registry, worker/registry.h), and is inclusive:
 * an adapter keeps its host copy while it is also resident on the device, so
 * evicting it from the device costs nothing and needs no copy back. The
 * budget is bytes (ADAPTER_HOST_BUDGET) and optionally a count
 * (ADAPTER_HOST_COUNT); when over, the least recently used copies nobody is
 * reading are dropped.
 *
 * The worker's loader thread looks up and fills the tier while the main
 * thread uploads from it and marks use, so every call takes the tier's lock.
 * A copy handed out by get or put is referenced until release: it is never
 * freed under a reader, even when evicted or replaced meanwhile (it is then
 * detached, and freed by the last release). */
#ifndef LORQ_HOST_TIER_H
#define LORQ_HOST_TIER_H

#include <stddef.h>

#include "lora.h"

typedef struct lq_host_tier lq_host_tier;

/* budget_bytes > 0; max_count 0: no limit besides the bytes. */
lq_host_tier *lq_host_tier_new(size_t budget_bytes, int max_count);
/* Frees every copy; none may be referenced any more. */
void lq_host_tier_free(lq_host_tier *t);

/* The copy of `name`, referenced for the caller and made most recent; NULL: not here. */
lq_lora_host *lq_host_tier_get(lq_host_tier *t, const char *name);
/* Takes h (named h->lora.name), referenced once for the caller, most recent;
 * replaces an older copy of that name. Older unreferenced copies are dropped
 * while over the budget; a copy larger than the whole budget is never kept
 * (it only lives until its release). Returns h. */
lq_lora_host *lq_host_tier_put(lq_host_tier *t, lq_lora_host *h);
/* Ends a reference from get or put. */
void lq_host_tier_release(lq_host_tier *t, lq_lora_host *h);

/* Marks `name` used now (its device copy served a job), if here. */
void lq_host_tier_touch(lq_host_tier *t, const char *name);
/* Drops the copy of `name` (freed once unreferenced): 0, or -1 if not here. */
int lq_host_tier_drop(lq_host_tier *t, const char *name);

typedef struct lq_host_tier_stats {
    int count;       /* copies kept */
    size_t bytes;    /* their bytes */
    long evictions;  /* copies dropped to keep the budget */
} lq_host_tier_stats;
void lq_host_tier_stats_get(lq_host_tier *t, lq_host_tier_stats *out);
/* Comma-separated names kept, most recent first, cut short to fit size. */
void lq_host_tier_list(lq_host_tier *t, char *out, size_t size);

#endif
