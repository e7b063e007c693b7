/* strmap.h — a small hash map from strings to pointers.
 *
 * The gateway looks things up by name on hot paths: the open subscriptions
 * by channel (one per streaming request), metric series by their labels.
 * Keys are copied; values are the caller's. Chained buckets that double when
 * the map is as full as it has buckets. */
#ifndef LORQ_GW_STRMAP_H
#define LORQ_GW_STRMAP_H

#include <stddef.h>

typedef struct lq_strmap lq_strmap;

lq_strmap *lq_strmap_new(void);
void lq_strmap_free(lq_strmap *m); /* values are not freed */

/* Sets key to val (replacing an old value). -1 when out of memory. */
int lq_strmap_put(lq_strmap *m, const char *key, void *val);
void *lq_strmap_get(const lq_strmap *m, const char *key);
/* Removes key; returns its value or NULL. */
void *lq_strmap_del(lq_strmap *m, const char *key);
size_t lq_strmap_count(const lq_strmap *m);

/* Calls fn for every entry, in no particular order. fn must not change the map. */
void lq_strmap_each(const lq_strmap *m, void (*fn)(const char *key, void *val, void *arg), void *arg);

#endif
