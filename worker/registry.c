/* registry.c — resident adapters, pins and LRU eviction (see registry.h).
 *
 * A small array kept in recency order (most recent first) is enough: a worker
 * holds tens of adapters, and every operation is a scan of them. */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    lq_lora *lora;
    int pins;
} entry;

struct lq_registry {
    const lq_model *base;
    size_t budget, used;
    int max_count; /* 0: no limit */
    entry *entries;
    int n, cap;
};

lq_registry *lq_registry_new(const lq_model *base, size_t budget_bytes) {
    lq_registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->base = base;
    r->budget = budget_bytes;
    return r;
}

void lq_registry_free(lq_registry *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) lq_lora_free(r->entries[i].lora);
    free(r->entries);
    free(r);
}

static void move_to_front(lq_registry *r, int i) {
    entry e = r->entries[i];
    memmove(&r->entries[1], &r->entries[0], (size_t)i * sizeof e);
    r->entries[0] = e;
}

static int full(const lq_registry *r, size_t need) {
    return r->used + need > r->budget || (r->max_count > 0 && r->n + 1 > r->max_count);
}

static void drop_at(lq_registry *r, int i) {
    r->used -= r->entries[i].lora->bytes;
    lq_lora_free(r->entries[i].lora);
    memmove(&r->entries[i], &r->entries[i + 1], (size_t)(r->n - i - 1) * sizeof *r->entries);
    r->n--;
}

static int find(const lq_registry *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->entries[i].lora->name, name)) return i;
    return -1;
}

/* Evicts unpinned adapters, least recent first, until one more of `need` bytes fits. */
static int make_room(lq_registry *r, size_t need) {
    for (int i = r->n - 1; i >= 0 && full(r, need); i--)
        if (r->entries[i].pins == 0) drop_at(r, i);
    return full(r, need) ? -1 : 0;
}

/* Puts a loaded adapter at the front with `pins` pins (room already made). */
static int push_front(lq_registry *r, lq_lora *a, int pins) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 8;
        entry *e = realloc(r->entries, (size_t)cap * sizeof *e);
        if (!e) return -1;
        r->entries = e;
        r->cap = cap;
    }
    memmove(&r->entries[1], &r->entries[0], (size_t)r->n * sizeof *r->entries);
    r->entries[0] = (entry){a, pins};
    r->n++;
    r->used += a->bytes;
    return 0;
}

lq_lora *lq_registry_acquire(lq_registry *r, const char *name, const char *dir, lq_error *err) {
    int i = find(r, name);
    if (i >= 0) {
        r->entries[i].pins++;
        move_to_front(r, i);
        return r->entries[0].lora;
    }
    lq_lora *a = lq_lora_load(dir, name, r->base, err);
    if (!a) return NULL;
    if (make_room(r, a->bytes) != 0) {
        lq_fail(err, "adapter %s needs %.1f MB but only %.1f MB of the %.1f MB adapter budget can be freed", name,
                a->bytes / 1e6, (double)(r->budget - r->used) / 1e6, r->budget / 1e6);
        lq_lora_free(a);
        return NULL;
    }
    if (push_front(r, a, 1) != 0) {
        lq_lora_free(a);
        lq_fail(err, "out of memory");
        return NULL;
    }
    return a;
}

void lq_registry_set_max_count(lq_registry *r, int n) { r->max_count = n > 0 ? n : 0; }

int lq_registry_insert(lq_registry *r, lq_lora *a, lq_error *err) {
    if (a->bytes > r->budget)
        return lq_fail(err, "adapter %s needs %.1f MB, more than the whole adapter memory budget of %.1f MB", a->name,
                       a->bytes / 1e6, r->budget / 1e6);
    if (find(r, a->name) >= 0) return lq_fail(err, "adapter %s is already resident", a->name);
    if (make_room(r, a->bytes) != 0) return 1;
    if (push_front(r, a, 0) != 0) return lq_fail(err, "out of memory");
    return 0;
}

int lq_registry_pin(lq_registry *r, const char *name) {
    int i = find(r, name);
    if (i < 0) return -1;
    r->entries[i].pins++;
    move_to_front(r, i);
    return 0;
}

void lq_registry_unpin(lq_registry *r, const char *name) {
    int i = find(r, name);
    if (i >= 0 && r->entries[i].pins > 0) r->entries[i].pins--;
}

int lq_registry_evict(lq_registry *r, const char *name) {
    int i = find(r, name);
    if (i < 0 || r->entries[i].pins > 0) return -1;
    drop_at(r, i);
    return 0;
}

void lq_registry_release(lq_registry *r, lq_lora *a) {
    for (int i = 0; i < r->n; i++)
        if (r->entries[i].lora == a && r->entries[i].pins > 0) {
            r->entries[i].pins--;
            return;
        }
}

int lq_registry_count(const lq_registry *r) { return r->n; }
size_t lq_registry_bytes(const lq_registry *r) { return r->used; }
const lq_lora *lq_registry_at(const lq_registry *r, int i) { return i >= 0 && i < r->n ? r->entries[i].lora : NULL; }
