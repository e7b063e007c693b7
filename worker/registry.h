/* registry.h — the adapters a worker holds, within a memory budget.
 *
 * Adapters are loaded on first use and counted against a byte budget; when a
 * new one does not fit, the least recently used adapters that no running
 * sequence holds are evicted until it does. A sequence pins its adapter with
 * acquire and unpins it with release; "no adapter" is the base model and
 * needs no entry. A load failure (a bad folder) is returned as an error for
 * that adapter only: the registry and every other adapter are untouched. */
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

/* Resident adapters and bytes held; the i-th resident adapter (most recently used first). */
int lq_registry_count(const lq_registry *r);
size_t lq_registry_bytes(const lq_registry *r);
const lq_lora *lq_registry_at(const lq_registry *r, int i);

#endif
