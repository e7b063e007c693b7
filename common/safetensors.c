/* safetensors.c — validated mmap reader and streaming writer (see safetensors.h).
 *
 * Reading trusts nothing in the file: the header is parsed with jansson
 * (duplicate keys rejected), each entry is checked for type and range, and the
 * spans are sorted and checked for overlap before any tensor pointer is handed
 * out. Tensors of a set are kept sorted by name so lookups are a binary search.
 *
 * Writing computes all offsets up front from the declared tensors, writes the
 * JSON header padded with spaces to an 8-byte boundary (so data is aligned for
 * every dtype when the file is mapped), then streams data into PATH.tmp and
 * renames it into place once every tensor has arrived. */
#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapfile.h"

/* ---------- reading ---------- */

static int parse_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_shape(json_t *shape, st_tensor *t, lq_error *err) {
    if (!json_is_array(shape)) return lq_fail(err, "tensor '%s': shape is not an array", t->name);
    size_t ndim = json_array_size(shape);
    if (ndim > ST_MAX_DIMS) return lq_fail(err, "tensor '%s': %zu dimensions (at most %d)", t->name, ndim, ST_MAX_DIMS);
    t->ndim = (int)ndim;
    size_t numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t d;
        if (parse_u64(json_array_get(shape, i), &d) != 0)
            return lq_fail(err, "tensor '%s': shape[%zu] is not a non-negative integer", t->name, i);
        if (d != 0 && numel > SIZE_MAX / d) return lq_fail(err, "tensor '%s': shape overflows", t->name);
        numel *= (size_t)d;
        t->shape[i] = (int64_t)d;
    }
    t->numel = numel;
    return 0;
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int parse_tensor_entry(const char *name, json_t *v, st_tensor *t, span *sp, uint64_t data_len, lq_error *err) {
    t->name = strdup(name);
    if (!t->name) return lq_fail(err, "out of memory");
    if (!json_is_object(v)) return lq_fail(err, "tensor '%s': entry is not an object", name);
    json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt)) return lq_fail(err, "tensor '%s': missing string 'dtype'", name);
    if (lq_dtype_parse(json_string_value(dt), &t->dtype) != 0)
        return lq_fail(err, "tensor '%s': dtype %s is not supported (lorq loads F32, F16 and BF16)", name,
                       json_string_value(dt));
    if (parse_shape(json_object_get(v, "shape"), t, err) != 0) return -1;
    json_t *off = json_object_get(v, "data_offsets");
    uint64_t begin, end;
    if (!json_is_array(off) || json_array_size(off) != 2 || parse_u64(json_array_get(off, 0), &begin) != 0 ||
        parse_u64(json_array_get(off, 1), &end) != 0)
        return lq_fail(err, "tensor '%s': data_offsets must be two non-negative integers", name);
    if (begin > end) return lq_fail(err, "tensor '%s': data_offsets [%llu, %llu) are reversed", name,
                                    (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return lq_fail(err, "tensor '%s': data_offsets [%llu, %llu) exceed the %llu-byte data section", name,
                       (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len);
    size_t esz = lq_dtype_size(t->dtype);
    if (t->numel > SIZE_MAX / esz || (uint64_t)(t->numel * esz) != end - begin)
        return lq_fail(err, "tensor '%s': shape holds %zu %s elements but data_offsets span %llu bytes", name,
                       t->numel, lq_dtype_name(t->dtype), (unsigned long long)(end - begin));
    t->nbytes = (size_t)(end - begin);
    sp->begin = begin;
    sp->end = end;
    sp->name = t->name;
    return 0;
}

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int check_no_overlap(span *spans, size_t n, lq_error *err) {
    qsort(spans, n, sizeof *spans, span_cmp);
    for (size_t i = 1; i < n; i++)
        if (spans[i].begin < spans[i - 1].end)
            return lq_fail(err, "tensors '%s' and '%s' overlap in the data section", spans[i - 1].name, spans[i].name);
    return 0;
}

static int parse_metadata(st_set *s, json_t *meta, lq_error *err) {
    if (!json_is_object(meta)) return lq_fail(err, "__metadata__ is not an object");
    size_t n = json_object_size(meta);
    s->meta_keys = calloc(n ? n : 1, sizeof *s->meta_keys);
    s->meta_values = calloc(n ? n : 1, sizeof *s->meta_values);
    if (!s->meta_keys || !s->meta_values) return lq_fail(err, "out of memory");
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v)) return lq_fail(err, "__metadata__['%s'] is not a string", k);
        s->meta_keys[s->n_meta] = strdup(k);
        s->meta_values[s->n_meta] = strdup(json_string_value(v));
        s->n_meta++;
        if (!s->meta_keys[s->n_meta - 1] || !s->meta_values[s->n_meta - 1]) return lq_fail(err, "out of memory");
    }
    return 0;
}

static int tensor_name_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int sort_and_check_unique(st_set *s, lq_error *err) {
    qsort(s->tensors, s->n_tensors, sizeof *s->tensors, tensor_name_cmp);
    for (size_t i = 1; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i].name, s->tensors[i - 1].name))
            return lq_fail(err, "tensor '%s' appears twice", s->tensors[i].name);
    return 0;
}

static uint64_t read_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Parses one file image and appends its tensors to s (which may hold earlier shards). */
static int parse_into(st_set *s, const unsigned char *data, size_t len, lq_error *err) {
    if (len < 8) return lq_fail(err, "file is %zu bytes, too small for a safetensors header", len);
    uint64_t hlen = read_le64(data);
    if (hlen > ST_MAX_HEADER_BYTES)
        return lq_fail(err, "header length %llu exceeds the %u-byte limit", (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
    if (hlen > len - 8)
        return lq_fail(err, "header length %llu runs past the end of the %zu-byte file (truncated?)",
                       (unsigned long long)hlen, len);
    uint64_t data_len = len - 8 - hlen;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return lq_fail(err, "header is not valid JSON: %s at byte %d", jerr.text, jerr.position);
    int rc = -1;
    span *spans = NULL;
    if (!json_is_object(root)) {
        lq_fail(err, "header is not a JSON object");
        goto out;
    }
    size_t n = json_object_size(root);
    st_tensor *grown = realloc(s->tensors, (s->n_tensors + n + 1) * sizeof *grown);
    spans = calloc(n + 1, sizeof *spans);
    if (!grown || !spans) {
        if (grown) s->tensors = grown;
        lq_fail(err, "out of memory");
        goto out;
    }
    s->tensors = grown;
    size_t n_spans = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (s->n_maps <= 1 && !s->meta_keys && parse_metadata(s, v, err) != 0) goto out;
            continue;
        }
        st_tensor *t = &s->tensors[s->n_tensors];
        memset(t, 0, sizeof *t);
        s->n_tensors++; /* counted now so st_close frees its name even on error */
        if (parse_tensor_entry(key, v, t, &spans[n_spans], data_len, err) != 0) goto out;
        t->data = data + 8 + hlen + spans[n_spans].begin;
        n_spans++;
    }
    rc = check_no_overlap(spans, n_spans, err);
out:
    free(spans);
    json_decref(root);
    return rc;
}

int st_parse(st_set *s, const void *data, size_t len, lq_error *err) {
    memset(s, 0, sizeof *s);
    if (parse_into(s, data, len, err) != 0 || sort_and_check_unique(s, err) != 0) {
        st_close(s);
        return -1;
    }
    return 0;
}

static int map_and_parse(st_set *s, const char *path, lq_error *err) {
    lq_mapfile *maps = realloc(s->maps, (s->n_maps + 1) * sizeof *maps);
    if (!maps) return lq_fail(err, "out of memory");
    s->maps = maps;
    if (lq_mapfile_open(&maps[s->n_maps], path, err) != 0) return -1;
    s->n_maps++;
    const lq_mapfile *m = &maps[s->n_maps - 1];
    if (parse_into(s, m->data, m->size, err) != 0) {
        lq_error_prefix(err, "%s", path);
        return -1;
    }
    return 0;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

/* Shard names come from a file we do not trust: plain names inside the folder only. */
static int shard_name_ok(const char *name) {
    return name[0] && name[0] != '.' && !strchr(name, '/') && strlen(name) < 256;
}

static int open_sharded(st_set *s, const char *dir, const char *index_path, lq_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return lq_fail(err, "%s: %s (line %d)", index_path, jerr.text, jerr.line);
    int rc = -1;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        lq_fail(err, "%s: missing object 'weight_map'", index_path);
        goto out;
    }
    /* Open each distinct shard once, in first-mention order. */
    json_t *opened = json_object();
    const char *name;
    json_t *file;
    json_object_foreach(wm, name, file) {
        if (!json_is_string(file) || !shard_name_ok(json_string_value(file))) {
            lq_fail(err, "%s: weight_map['%s'] is not a plain file name in the folder", index_path, name);
            json_decref(opened);
            goto out;
        }
        const char *shard = json_string_value(file);
        if (json_object_get(opened, shard)) continue;
        json_object_set_new(opened, shard, json_true());
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, shard);
        if (map_and_parse(s, path, err) != 0) {
            json_decref(opened);
            goto out;
        }
    }
    json_decref(opened);
    if (sort_and_check_unique(s, err) != 0) goto out;
    json_object_foreach(wm, name, file) {
        if (!st_find(s, name)) {
            lq_fail(err, "%s: tensor '%s' is listed for %s but not found there", index_path, name,
                    json_string_value(file));
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int st_open(st_set *s, const char *path, lq_error *err) {
    memset(s, 0, sizeof *s);
    int rc;
    if (is_dir(path)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
        if (file_exists(p)) {
            rc = open_sharded(s, path, p, err);
        } else {
            snprintf(p, sizeof p, "%s/model.safetensors", path);
            if (!file_exists(p)) {
                rc = lq_fail(err, "%s: no model.safetensors or model.safetensors.index.json in this folder", path);
            } else {
                rc = map_and_parse(s, p, err);
                if (rc == 0) rc = sort_and_check_unique(s, err);
            }
        }
    } else {
        rc = map_and_parse(s, path, err);
        if (rc == 0) rc = sort_and_check_unique(s, err);
        if (rc != 0 && err && !strstr(err->msg, path)) lq_error_prefix(err, "%s", path);
    }
    if (rc != 0) st_close(s);
    return rc;
}

const st_tensor *st_find(const st_set *s, const char *name) {
    size_t lo = 0, hi = s->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->tensors[mid].name);
        if (c == 0) return &s->tensors[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *st_meta(const st_set *s, const char *key) {
    for (size_t i = 0; i < s->n_meta; i++)
        if (!strcmp(s->meta_keys[i], key)) return s->meta_values[i];
    return NULL;
}

void st_close(st_set *s) {
    for (size_t i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    free(s->tensors);
    lq_mapfile *maps = s->maps;
    for (size_t i = 0; i < s->n_maps; i++) lq_mapfile_close(&maps[i]);
    free(maps);
    for (size_t i = 0; i < s->n_meta; i++) {
        free(s->meta_keys[i]);
        free(s->meta_values[i]);
    }
    free(s->meta_keys);
    free(s->meta_values);
    memset(s, 0, sizeof *s);
}

/* ---------- writing ---------- */

typedef struct wtensor {
    char *name;
    size_t nbytes;
} wtensor;

struct st_writer {
    char *path, *tmp_path;
    FILE *f;
    json_t *header, *meta;
    wtensor *tensors;
    size_t n, cap, next; /* next: index of the tensor to be written */
    uint64_t offset;     /* data bytes declared so far */
    int header_written;
};

st_writer *st_writer_new(const char *path) {
    st_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->path = strdup(path);
    w->header = json_object();
    size_t n = strlen(path) + 5;
    w->tmp_path = malloc(n);
    if (!w->path || !w->header || !w->tmp_path) {
        st_writer_abort(w);
        return NULL;
    }
    snprintf(w->tmp_path, n, "%s.tmp", path);
    return w;
}

int st_writer_meta(st_writer *w, const char *key, const char *value, lq_error *err) {
    if (w->header_written) return lq_fail(err, "safetensors writer: metadata after data");
    if (!w->meta) w->meta = json_object();
    if (!w->meta || json_object_set_new(w->meta, key, json_string(value)) != 0)
        return lq_fail(err, "safetensors writer: bad metadata '%s'", key);
    return 0;
}

int st_writer_declare(st_writer *w, const char *name, lq_dtype dtype, int ndim, const int64_t *shape, lq_error *err) {
    if (w->header_written) return lq_fail(err, "safetensors writer: tensor '%s' declared after data", name);
    if (ndim < 0 || ndim > ST_MAX_DIMS) return lq_fail(err, "safetensors writer: tensor '%s' has %d dims", name, ndim);
    if (!strcmp(name, "__metadata__") || json_object_get(w->header, name))
        return lq_fail(err, "safetensors writer: tensor name '%s' used twice or reserved", name);
    size_t numel = 1;
    json_t *js = json_array();
    for (int i = 0; i < ndim; i++) {
        numel *= (size_t)shape[i];
        json_array_append_new(js, json_integer(shape[i]));
    }
    size_t nbytes = numel * lq_dtype_size(dtype);
    json_t *e = json_object();
    json_object_set_new(e, "dtype", json_string(lq_dtype_name(dtype)));
    json_object_set_new(e, "shape", js);
    json_t *off = json_array();
    json_array_append_new(off, json_integer((json_int_t)w->offset));
    json_array_append_new(off, json_integer((json_int_t)(w->offset + nbytes)));
    json_object_set_new(e, "data_offsets", off);
    json_object_set_new(w->header, name, e);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        wtensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return lq_fail(err, "out of memory");
        w->tensors = t;
        w->cap = cap;
    }
    w->tensors[w->n].name = strdup(name);
    w->tensors[w->n].nbytes = nbytes;
    w->n++;
    w->offset += nbytes;
    return 0;
}

static int write_header(st_writer *w, lq_error *err) {
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) return lq_fail(err, "%s: %s", w->tmp_path, strerror(errno));
    setvbuf(w->f, NULL, _IOFBF, 1 << 20);
    json_t *root = json_object();
    if (w->meta) json_object_set(root, "__metadata__", w->meta);
    json_object_update(root, w->header);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) return lq_fail(err, "safetensors writer: cannot serialize header");
    size_t len = strlen(text);
    size_t padded = (len + 7) & ~(size_t)7;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, w->f) == 8 && fwrite(text, 1, len, w->f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', w->f) != EOF;
    free(text);
    w->header_written = 1;
    return ok ? 0 : lq_fail(err, "%s: write failed: %s", w->tmp_path, strerror(errno));
}

int st_writer_write(st_writer *w, const char *name, const void *data, size_t nbytes, lq_error *err) {
    if (!w->header_written && write_header(w, err) != 0) return -1;
    if (w->next >= w->n) return lq_fail(err, "safetensors writer: tensor '%s' was not declared", name);
    const wtensor *t = &w->tensors[w->next];
    if (strcmp(t->name, name) != 0)
        return lq_fail(err, "safetensors writer: expected tensor '%s' next, got '%s'", t->name, name);
    if (nbytes != t->nbytes)
        return lq_fail(err, "safetensors writer: tensor '%s' is %zu bytes, declared %zu", name, nbytes, t->nbytes);
    if (nbytes && fwrite(data, 1, nbytes, w->f) != nbytes)
        return lq_fail(err, "%s: write failed: %s", w->tmp_path, strerror(errno));
    w->next++;
    return 0;
}

int st_writer_finish(st_writer *w, lq_error *err) {
    int rc = 0;
    if (!w->header_written) rc = write_header(w, err);
    if (rc == 0 && w->next != w->n)
        rc = lq_fail(err, "safetensors writer: %zu of %zu tensors were written", w->next, w->n);
    if (rc == 0 && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
        rc = lq_fail(err, "%s: %s", w->tmp_path, strerror(errno));
    if (rc == 0) {
        int closed = fclose(w->f);
        w->f = NULL;
        if (closed != 0 || rename(w->tmp_path, w->path) != 0)
            rc = lq_fail(err, "%s: %s", w->path, strerror(errno));
    }
    if (rc != 0) {
        st_writer_abort(w);
        return -1;
    }
    w->tmp_path[0] = '\0'; /* nothing to unlink */
    st_writer_abort(w);
    return 0;
}

void st_writer_abort(st_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp_path && w->tmp_path[0] && w->header_written) unlink(w->tmp_path);
    for (size_t i = 0; i < w->n; i++) free(w->tensors[i].name);
    free(w->tensors);
    json_decref(w->header);
    json_decref(w->meta);
    free(w->path);
    free(w->tmp_path);
    free(w);
}
