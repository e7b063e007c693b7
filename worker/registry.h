/* registry.h — the adapters a worker holds, within a memory budget.
 *
 * Adapters are loaded on first use and counted against a byte budget; when a
 * new one does not fit, the least recently used adapters that no running
 * sequence holds are evicted until it does. A sequence pins its adapter with
 * acquire and unpins it with release; "no adapter" is the base model and
 * needs no entry. A load failure (a bad folder) is returned as an error for
 * that adapter only: the registry and every other adapter are untouched.
 *
 * Two budgets bound what is resident: bytes (ADAPTER_MEMORY_BUDGET) and a
 * count (MAX_HOST_ADAPTERS). An adapter loaded elsewhere (the worker's loader
 * thread, worker/adapters.c) comes in with lq_registry_insert, which evicts
 * the same way but never loads.
 *
 * This is the device tier: the adapters the kernels read, in backend memory
 * (device memory on a GPU). Evicting one frees only that; the worker's
 * host-memory tier (worker/host_tier.h) keeps its parsed copy under budgets
 * of its own, for the next upload. */
#ifndef LORQ_REGISTRY_H
#define LORQ_REGISTRY_H

#include <stddef.h>

#include "lora.h"

typedef struct lq_registry lq_registry;

lq_registry *lq_registry_new(const lq_model *base, size_t budget_bytes);
void lq_registry_free(lq_registry *r);

/* Returns the adapter named `name`, loading it from `dir` if it is not resident,
 * and pins it. NULL with err set when it cannot be loaded or cannot fit even
 * after evicting every unpinned adapter. */
lq_lora *lq_registry_acquire(lq_registry *r, const char *name, const char *dir, lq_error *err);
void lq_registry_release(lq_registry *r, lq_lora *a);

/* At most n adapters resident (0: no limit besides the bytes). */
void lq_registry_set_max_count(lq_registry *r, int n);

/* Takes an adapter loaded elsewhere (not pinned). 0: it is in (the registry owns
 * it); 1: no room now, every candidate for eviction is pinned (the caller keeps
 * it and tries again later); -1 with err: it can never fit the budget. */
int lq_registry_insert(lq_registry *r, lq_lora *a, lq_error *err);

/* Pins / unpins a resident adapter by name (pin: 0, or -1 if not resident). */
int lq_registry_pin(lq_registry *r, const char *name);
void lq_registry_unpin(lq_registry *r, const char *name);

/* Frees a resident adapter nobody pins: 0, or -1 if absent or pinned. */
int lq_registry_evict(lq_registry *r, const char *name);

/* Resident adapters and bytes held; the i-th resident adapter (most recently used first). */
int lq_registry_count(const lq_registry *r);
size_t lq_registry_bytes(const lq_registry *r);
const lq_lora *lq_registry_at(const lq_registry *r, int i);

#endif
