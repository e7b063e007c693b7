/* strmap.c — chained hash map from strings to pointers (see strmap.h). */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    void *val;
    char key[];
} entry;

struct lq_strmap {
    entry **buckets;
    size_t n_buckets, count;
};

/* FNV-1a: short keys, no adversary who could pick them (job ids are random). */
static uint64_t hash_key(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

lq_strmap *lq_strmap_new(void) {
    lq_strmap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->n_buckets = 64;
    if (!(m->buckets = calloc(m->n_buckets, sizeof *m->buckets))) {
        free(m);
        return NULL;
    }
    return m;
}

void lq_strmap_free(lq_strmap *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    free(m);
}

static entry **find_slot(const lq_strmap *m, const char *key, uint64_t h) {
    entry **p = &m->buckets[h & (m->n_buckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key))) p = &(*p)->next;
    return p;
}

static void grow(lq_strmap *m) {
    size_t n = m->n_buckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) return; /* stays correct, only slower */
    for (size_t i = 0; i < m->n_buckets; i++) {
        for (entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
}

int lq_strmap_put(lq_strmap *m, const char *key, void *val) {
    uint64_t h = hash_key(key);
    entry **slot = find_slot(m, key, h);
    if (*slot) {
        (*slot)->val = val;
        return 0;
    }
    size_t len = strlen(key);
    entry *e = malloc(sizeof *e + len + 1);
    if (!e) return -1;
    e->next = NULL;
    e->hash = h;
    e->val = val;
    memcpy(e->key, key, len + 1);
    *slot = e;
    if (++m->count > m->n_buckets) grow(m);
    return 0;
}

void *lq_strmap_get(const lq_strmap *m, const char *key) {
    entry *e = *find_slot(m, key, hash_key(key));
    return e ? e->val : NULL;
}

void *lq_strmap_del(lq_strmap *m, const char *key) {
    entry **slot = find_slot(m, key, hash_key(key));
    entry *e = *slot;
    if (!e) return NULL;
    void *val = e->val;
    *slot = e->next;
    free(e);
    m->count--;
    return val;
}

size_t lq_strmap_count(const lq_strmap *m) { return m->count; }

void lq_strmap_each(const lq_strmap *m, void (*fn)(const char *key, void *val, void *arg), void *arg) {
    for (size_t i = 0; i < m->n_buckets; i++)
        for (entry *e = m->buckets[i]; e; e = e->next) fn(e->key, e->val, arg);
}
