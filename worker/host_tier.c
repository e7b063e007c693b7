/* host_tier.c — parsed adapters in host memory, LRU within a budget (see host_tier.h).
 *
 * An array in recency order (most recent first), as the registry keeps the
 * device tier: a worker holds tens of adapters, and each call is one scan.
 * Detached copies (replaced, dropped, or too large to keep) stay in the array
 * only until their last reference goes; they count against nothing and no
 * lookup finds them. */
#include "host_tier.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    lq_lora_host *h;
    int refs;
    int detached;
} slot;

struct lq_host_tier {
    pthread_mutex_t mu;
    size_t budget, used; /* used: bytes of attached copies */
    int max_count, count;
    long evictions;
    slot *s;
    int n, cap;
};

lq_host_tier *lq_host_tier_new(size_t budget_bytes, int max_count) {
    lq_host_tier *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->budget = budget_bytes;
    t->max_count = max_count > 0 ? max_count : 0;
    return t;
}

void lq_host_tier_free(lq_host_tier *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) lq_lora_host_free(t->s[i].h);
    free(t->s);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static const char *name_of(const slot *s) { return s->h->lora.name; }

static int find(const lq_host_tier *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!t->s[i].detached && !strcmp(name_of(&t->s[i]), name)) return i;
    return -1;
}

static void to_front(lq_host_tier *t, int i) {
    slot x = t->s[i];
    memmove(&t->s[1], &t->s[0], (size_t)i * sizeof x);
    t->s[0] = x;
}

static void remove_at(lq_host_tier *t, int i) {
    lq_lora_host_free(t->s[i].h);
    memmove(&t->s[i], &t->s[i + 1], (size_t)(t->n - i - 1) * sizeof *t->s);
    t->n--;
}

static void detach(lq_host_tier *t, int i) {
    if (t->s[i].detached) return;
    t->s[i].detached = 1;
    t->used -= t->s[i].h->lora.bytes;
    t->count--;
}

static int over(const lq_host_tier *t) { return t->used > t->budget || (t->max_count && t->count > t->max_count); }

/* Drops unreferenced copies, least recent first, while over the budget; frees
 * detached copies nobody reads. */
static void trim(lq_host_tier *t) {
    for (int i = t->n - 1; i >= 0; i--) {
        if (t->s[i].refs) continue;
        if (!t->s[i].detached && over(t)) {
            detach(t, i);
            t->evictions++;
        }
        if (t->s[i].detached) remove_at(t, i);
    }
}

lq_lora_host *lq_host_tier_get(lq_host_tier *t, const char *name) {
    pthread_mutex_lock(&t->mu);
    lq_lora_host *h = NULL;
    int i = find(t, name);
    if (i >= 0) {
        t->s[i].refs++;
        to_front(t, i);
        h = t->s[0].h;
    }
    pthread_mutex_unlock(&t->mu);
    return h;
}

lq_lora_host *lq_host_tier_put(lq_host_tier *t, lq_lora_host *h) {
    pthread_mutex_lock(&t->mu);
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 8;
        slot *p = realloc(t->s, (size_t)cap * sizeof *p);
        if (!p) { /* cannot keep it: the caller's reference is then its only one */
            pthread_mutex_unlock(&t->mu);
            return NULL;
        }
        t->s = p;
        t->cap = cap;
    }
    int old = find(t, h->lora.name);
    if (old >= 0) detach(t, old);
    memmove(&t->s[1], &t->s[0], (size_t)t->n * sizeof *t->s);
    t->n++;
    /* Too large for the whole budget: keeping it would only flush the others. */
    int keep = h->lora.bytes <= t->budget;
    t->s[0] = (slot){h, 1, !keep};
    if (keep) t->used += h->lora.bytes, t->count++;
    trim(t);
    pthread_mutex_unlock(&t->mu);
    return h;
}

void lq_host_tier_release(lq_host_tier *t, lq_lora_host *h) {
    if (!h) return;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n; i++)
        if (t->s[i].h == h && t->s[i].refs > 0) {
            t->s[i].refs--;
            break;
        }
    trim(t);
    pthread_mutex_unlock(&t->mu);
}

void lq_host_tier_touch(lq_host_tier *t, const char *name) {
    pthread_mutex_lock(&t->mu);
    int i = find(t, name);
    if (i >= 0) to_front(t, i);
    pthread_mutex_unlock(&t->mu);
}

int lq_host_tier_drop(lq_host_tier *t, const char *name) {
    pthread_mutex_lock(&t->mu);
    int i = find(t, name);
    if (i >= 0) {
        detach(t, i);
        trim(t);
    }
    pthread_mutex_unlock(&t->mu);
    return i >= 0 ? 0 : -1;
}

void lq_host_tier_stats_get(lq_host_tier *t, lq_host_tier_stats *out) {
    pthread_mutex_lock(&t->mu);
    out->count = t->count;
    out->bytes = t->used;
    out->evictions = t->evictions;
    pthread_mutex_unlock(&t->mu);
}

void lq_host_tier_list(lq_host_tier *t, char *out, size_t size) {
    size_t k = 0;
    if (size) out[0] = 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n && size; i++) {
        if (t->s[i].detached) continue;
        const char *name = name_of(&t->s[i]);
        size_t len = strlen(name) + (k ? 1 : 0);
        if (k + len + 1 > size) break; /* whole names only */
        if (k) out[k++] = ',';
        memcpy(out + k, name, strlen(name) + 1);
        k += strlen(name);
    }
    pthread_mutex_unlock(&t->mu);
}
