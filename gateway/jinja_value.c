/* jinja_value.c — values of the Jinja interpreter and the Python semantics
 * they must follow to render what jinja2 renders.
 *
 * Every value is a small struct (jv) passed by value; strings, lists and dicts
 * point into the render arena and are never freed one by one. Chat templates
 * print values with Python's str() (lists and dicts through repr()), and the
 * tojson filter is json.dumps, so those three text forms are reproduced here
 * exactly, floats included (shortest round-trip digits, Python's switch to
 * exponent notation). Strings are UTF-8; lengths, indexes and slices count
 * code points as Python does, and whitespace, case and "printable" follow
 * Python's Unicode definitions (utf8proc supplies the character database). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <utf8proc.h>

#include "jinja_internal.h"
#include "utf8.h"

/* ---- failure ---- */

_Noreturn void jthrow_fail(jthrow *t, const char *fmt, ...) {
    if (t->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->err->msg, sizeof t->err->msg, fmt, ap);
        va_end(ap);
    }
    longjmp(t->jmp, 1);
}

/* ---- arena ---- */

struct jchunk {
    jchunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

#define JCHUNK_MIN (64u << 10)

void jarena_init(jarena *a, size_t cap, jthrow *thrower) {
    a->chunks = NULL;
    a->used = 0;
    a->cap = cap;
    a->thrower = thrower;
}

void jarena_release(jarena *a) {
    for (jchunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->chunks = NULL;
    a->used = 0;
}

void *jarena_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (n > a->cap || a->used > a->cap - n) jthrow_fail(a->thrower, "template needs more than %zu bytes of memory", a->cap);
    jchunk *c = a->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = n > JCHUNK_MIN ? n : JCHUNK_MIN;
        c = malloc(sizeof *c + size);
        if (!c) jthrow_fail(a->thrower, "out of memory");
        c->size = size;
        c->used = 0;
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *jarena_strdup(jarena *a, const char *p, size_t n) {
    char *s = jarena_alloc(a, n + 1);
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* ---- lists and dicts ---- */

jlist *jlist_new(jarena *a, size_t cap) {
    jlist *l = jarena_alloc(a, sizeof *l);
    l->cap = cap;
    l->items = cap ? jarena_alloc(a, cap * sizeof(jv)) : NULL;
    return l;
}

void jlist_push(jarena *a, jlist *l, jv v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4;
        jv *items = jarena_alloc(a, cap * sizeof(jv));
        if (l->n) memcpy(items, l->items, l->n * sizeof(jv));
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = v;
}

jv jv_list(jlist *l) { return (jv){.kind = JV_LIST, .u.list = l}; }

jdict *jdict_new(jarena *a, size_t cap) {
    jdict *d = jarena_alloc(a, sizeof *d);
    d->cap = cap;
    if (cap) {
        d->keys = jarena_alloc(a, cap * sizeof(jv));
        d->vals = jarena_alloc(a, cap * sizeof(jv));
    }
    return d;
}

static jv *jdict_slot(const jdict *d, jv key) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->keys[i], key, 0)) return &d->vals[i];
    return NULL;
}

void jdict_set(jarena *a, jdict *d, jv key, jv val) {
    jv *slot = jdict_slot(d, key);
    if (slot) {
        *slot = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 4;
        jv *keys = jarena_alloc(a, cap * sizeof(jv)), *vals = jarena_alloc(a, cap * sizeof(jv));
        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof(jv));
            memcpy(vals, d->vals, d->n * sizeof(jv));
        }
        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
}

const jv *jdict_get(const jdict *d, jv key) { return jdict_slot(d, key); }

const jv *jdict_get_str(const jdict *d, const char *key, size_t n) {
    for (size_t i = 0; i < d->n; i++) {
        jv k = d->keys[i];
        if (k.kind == JV_STR && k.u.s.n == n && memcmp(k.u.s.p, key, n) == 0) return &d->vals[i];
    }
    return NULL;
}

jv jv_dict(jdict *d) { return (jv){.kind = JV_DICT, .u.dict = d}; }

/* ---- truth, types, equality, ordering ---- */

bool jv_truthy(jv v) {
    switch (v.kind) {
    case JV_UNDEFINED:
    case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.list->n != 0;
    case JV_DICT: return v.u.dict->n != 0;
    default: return true;
    }
}

const char *jv_type_name(jv v) {
    switch (v.kind) {
    case JV_UNDEFINED: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.u.list->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NAMESPACE: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_FUNC: return "function";
    }
    return "object";
}

/* Numbers compare by value across bool, int and float, as in Python. */
static int compare_numbers(jv a, jv b) {
    if (a.kind != JV_FLOAT && b.kind != JV_FLOAT) {
        int64_t x = a.kind == JV_BOOL ? a.u.b : a.u.i, y = b.kind == JV_BOOL ? b.u.b : b.u.i;
        return (x > y) - (x < y);
    }
    double x = a.kind == JV_FLOAT ? a.u.f : a.kind == JV_BOOL ? a.u.b : (double)a.u.i;
    double y = b.kind == JV_FLOAT ? b.u.f : b.kind == JV_BOOL ? b.u.b : (double)b.u.i;
    if (isnan(x) || isnan(y)) return 2; /* unordered */
    return (x > y) - (x < y);
}

static int compare_bytes(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn); /* UTF-8 byte order is code point order */
    if (c) return c < 0 ? -1 : 1;
    return (an > bn) - (an < bn);
}

#define JV_MAX_NESTING 512

bool jv_equal(jv a, jv b, int depth) {
    if (depth > JV_MAX_NESTING) return false;
    if (jv_is_number(a) && jv_is_number(b)) return compare_numbers(a, b) == 0;
    if (a.kind != b.kind) return false;
    switch (a.kind) {
    case JV_UNDEFINED:
    case JV_NONE: return true;
    case JV_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JV_LIST:
        if (a.u.list->n != b.u.list->n || a.u.list->tuple != b.u.list->tuple) return false;
        for (size_t i = 0; i < a.u.list->n; i++)
            if (!jv_equal(a.u.list->items[i], b.u.list->items[i], depth + 1)) return false;
        return true;
    case JV_DICT:
        if (a.u.dict->n != b.u.dict->n) return false;
        for (size_t i = 0; i < a.u.dict->n; i++) {
            const jv *other = jdict_get(b.u.dict, a.u.dict->keys[i]);
            if (!other || !jv_equal(a.u.dict->vals[i], *other, depth + 1)) return false;
        }
        return true;
    case JV_NAMESPACE: return a.u.dict == b.u.dict;
    case JV_LOOP: return a.u.loop == b.u.loop;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return false;
    }
}

int jv_compare(jv a, jv b, bool *ok, int depth) {
    *ok = true;
    if (depth > JV_MAX_NESTING) {
        *ok = false;
        return 0;
    }
    if (jv_is_number(a) && jv_is_number(b)) {
        int c = compare_numbers(a, b);
        return c == 2 ? 0 : c; /* NaN: every ordering is false; callers see "equal" */
    }
    if (a.kind == JV_STR && b.kind == JV_STR) return compare_bytes(a.u.s.p, a.u.s.n, b.u.s.p, b.u.s.n);
    if (a.kind == JV_LIST && b.kind == JV_LIST && a.u.list->tuple == b.u.list->tuple) {
        const jlist *x = a.u.list, *y = b.u.list;
        for (size_t i = 0; i < x->n && i < y->n; i++) {
            if (jv_equal(x->items[i], y->items[i], depth + 1)) continue;
            return jv_compare(x->items[i], y->items[i], ok, depth + 1);
        }
        return (x->n > y->n) - (x->n < y->n);
    }
    *ok = false;
    return 0;
}

/* ---- JSON in ---- */

jv jv_from_json(jarena *a, const json_t *j, int depth, jthrow *t) {
    if (depth > JV_MAX_NESTING) jthrow_fail(t, "context JSON is nested more than %d deep", JV_MAX_NESTING);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jdict *d = jdict_new(a, json_object_size(j));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) {
            /* keys are unique in a jansson object, so append without the lookup */
            size_t i = d->n++;
            d->keys[i] = jv_str(key, strlen(key));
            d->vals[i] = jv_from_json(a, val, depth + 1, t);
        }
        return jv_dict(d);
    }
    case JSON_ARRAY: {
        jlist *l = jlist_new(a, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) l->items[l->n++] = jv_from_json(a, json_array_get(j, i), depth + 1, t);
        return jv_list(l);
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        return jv_str(jarena_strdup(a, json_string_value(j), n), n);
    }
    case JSON_INTEGER: return jv_int(json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(true);
    case JSON_FALSE: return jv_bool(false);
    default: return jv_none();
    }
}

/* ---- text building ---- */

void jsb_init(jsb *b, jarena *a, size_t limit) {
    b->arena = a;
    b->p = NULL;
    b->n = b->cap = 0;
    b->limit = limit;
}

static void jsb_reserve(jsb *b, size_t extra) {
    if (b->limit && (extra > b->limit || b->n > b->limit - extra))
        jthrow_fail(b->arena->thrower, "rendered text exceeds %zu bytes", b->limit);
    if (b->n + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra) cap *= 2;
    char *p = jarena_alloc(b->arena, cap);
    if (b->n) memcpy(p, b->p, b->n);
    b->p = p;
    b->cap = cap;
}

void jsb_put(jsb *b, const char *p, size_t n) {
    if (!n) return;
    jsb_reserve(b, n);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void jsb_putc(jsb *b, char c) { jsb_put(b, &c, 1); }

void jsb_printf(jsb *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) jsb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

void jsb_put_cp(jsb *b, uint32_t cp) {
    char tmp[4];
    jsb_put(b, tmp, (size_t)lq_utf8_put(tmp, cp));
}

jv jsb_value(jsb *b) { return jv_str(b->p ? b->p : "", b->n); }

/* ---- Python's text forms ---- */

/* repr(float): the shortest digits that read back as the same double, fixed
 * notation for exponents in [-4, 16), d.ddde+XX otherwise. */
void jv_write_float(jsb *b, double f) {
    if (isnan(f)) return jsb_put(b, "nan", 3);
    if (isinf(f)) return f > 0 ? jsb_put(b, "inf", 3) : jsb_put(b, "-inf", 4);
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf is [-]d[.ddd]e[+-]XX: split into sign, digits and exponent */
    const char *p = buf;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    size_t nd = 0;
    for (; *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp10 = atoi(p + 1);
    if (neg) jsb_putc(b, '-');
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 >= 0) {
            for (int i = 0; i <= exp10; i++) jsb_putc(b, (size_t)i < nd ? digits[i] : '0');
            jsb_putc(b, '.');
            if ((size_t)exp10 + 1 < nd) jsb_put(b, digits + exp10 + 1, nd - (size_t)exp10 - 1);
            else jsb_putc(b, '0');
        } else {
            jsb_put(b, "0.", 2);
            for (int i = 0; i < -exp10 - 1; i++) jsb_putc(b, '0');
            jsb_put(b, digits, nd);
        }
        return;
    }
    jsb_putc(b, digits[0]);
    if (nd > 1) {
        jsb_putc(b, '.');
        jsb_put(b, digits + 1, nd - 1);
    }
    jsb_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
}

static void write_str_repr(jsb *b, const char *p, size_t n) {
    bool has_single = memchr(p, '\'', n) != NULL, has_double = memchr(p, '"', n) != NULL;
    char quote = has_single && !has_double ? '"' : '\'';
    jsb_putc(b, quote);
    for (size_t i = 0; i < n;) {
        size_t start = i;
        uint32_t cp = u8_next(p, &i);
        if (cp == (uint32_t)quote || cp == '\\') {
            jsb_putc(b, '\\');
            jsb_putc(b, (char)cp);
        } else if (cp == '\n') jsb_put(b, "\\n", 2);
        else if (cp == '\r') jsb_put(b, "\\r", 2);
        else if (cp == '\t') jsb_put(b, "\\t", 2);
        else if (py_isprintable(cp)) jsb_put(b, p + start, i - start);
        else if (cp < 0x100) jsb_printf(b, "\\x%02x", cp);
        else if (cp < 0x10000) jsb_printf(b, "\\u%04x", cp);
        else jsb_printf(b, "\\U%08x", cp);
    }
    jsb_putc(b, quote);
}

static void write_nested_guard(jsb *b, int depth) {
    if (depth > JV_MAX_NESTING) jthrow_fail(b->arena->thrower, "value nested more than %d deep", JV_MAX_NESTING);
}

void jv_write_repr(jsb *b, jv v, int depth) {
    write_nested_guard(b, depth);
    switch (v.kind) {
    case JV_STR: return write_str_repr(b, v.u.s.p, v.u.s.n);
    case JV_UNDEFINED: return jsb_put(b, "Undefined", 9);
    case JV_LIST: {
        const jlist *l = v.u.list;
        jsb_putc(b, l->tuple ? '(' : '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) jsb_put(b, ", ", 2);
            jv_write_repr(b, l->items[i], depth + 1);
        }
        if (l->tuple && l->n == 1) jsb_putc(b, ',');
        return jsb_putc(b, l->tuple ? ')' : ']');
    }
    case JV_DICT:
    case JV_NAMESPACE: {
        const jdict *d = v.u.dict;
        if (v.kind == JV_NAMESPACE) jsb_put(b, "<Namespace ", 11);
        jsb_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) jsb_put(b, ", ", 2);
            jv_write_repr(b, d->keys[i], depth + 1);
            jsb_put(b, ": ", 2);
            jv_write_repr(b, d->vals[i], depth + 1);
        }
        jsb_putc(b, '}');
        if (v.kind == JV_NAMESPACE) jsb_putc(b, '>');
        return;
    }
    default: return jv_write_str(b, v, depth);
    }
}

void jv_write_str(jsb *b, jv v, int depth) {
    switch (v.kind) {
    case JV_UNDEFINED: return;
    case JV_NONE: return jsb_put(b, "None", 4);
    case JV_BOOL: return v.u.b ? jsb_put(b, "True", 4) : jsb_put(b, "False", 5);
    case JV_INT: return jsb_printf(b, "%lld", (long long)v.u.i);
    case JV_FLOAT: return jv_write_float(b, v.u.f);
    case JV_STR: return jsb_put(b, v.u.s.p, v.u.s.n);
    case JV_LOOP:
        return jsb_printf(b, "<LoopContext %zu/%zu>", v.u.loop->index0 + 1, v.u.loop->items->n);
    case JV_FUNC:
        return jsb_printf(b, "<function %s>", v.u.fn->builtin ? v.u.fn->builtin->name : "macro");
    default: return jv_write_repr(b, v, depth);
    }
}

jv jv_to_str(jarena *a, jv v) {
    if (v.kind == JV_STR) return v;
    jsb b;
    jsb_init(&b, a, 0);
    jv_write_str(&b, v, 0);
    return jsb_value(&b);
}

/* ---- json.dumps ---- */

static void write_json_string(jsb *b, const char *p, size_t n, bool ensure_ascii) {
    jsb_putc(b, '"');
    for (size_t i = 0; i < n;) {
        size_t start = i;
        uint32_t cp = u8_next(p, &i);
        switch (cp) {
        case '"': jsb_put(b, "\\\"", 2); continue;
        case '\\': jsb_put(b, "\\\\", 2); continue;
        case '\n': jsb_put(b, "\\n", 2); continue;
        case '\r': jsb_put(b, "\\r", 2); continue;
        case '\t': jsb_put(b, "\\t", 2); continue;
        case '\b': jsb_put(b, "\\b", 2); continue;
        case '\f': jsb_put(b, "\\f", 2); continue;
        }
        if (cp < 0x20 || (ensure_ascii && cp > 0x7e)) {
            if (cp >= 0x10000) {
                uint32_t v = cp - 0x10000;
                jsb_printf(b, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else jsb_printf(b, "\\u%04x", cp);
        } else jsb_put(b, p + start, i - start);
    }
    jsb_putc(b, '"');
}

static void write_json_newline(jsb *b, const jjson_opts *o, int level) {
    jsb_putc(b, '\n');
    for (int i = 0; i < level; i++) jsb_put(b, o->indent, o->indent_n);
}

/* json.dumps turns int, float, bool and None keys into strings; others fail. */
static bool write_json_key(jsb *b, jv k, const jjson_opts *o) {
    switch (k.kind) {
    case JV_STR: write_json_string(b, k.u.s.p, k.u.s.n, o->ensure_ascii); return true;
    case JV_NONE: jsb_put(b, "\"null\"", 6); return true;
    case JV_BOOL: k.u.b ? jsb_put(b, "\"true\"", 6) : jsb_put(b, "\"false\"", 7); return true;
    case JV_INT: jsb_printf(b, "\"%lld\"", (long long)k.u.i); return true;
    case JV_FLOAT:
        jsb_putc(b, '"');
        if (isnan(k.u.f)) jsb_put(b, "NaN", 3);
        else if (isinf(k.u.f)) k.u.f > 0 ? jsb_put(b, "Infinity", 8) : jsb_put(b, "-Infinity", 9);
        else jv_write_float(b, k.u.f);
        jsb_putc(b, '"');
        return true;
    default: return false;
    }
}

static int compare_keys(const void *x, const void *y) {
    const jv *a = x, *b = y;
    bool ok;
    return jv_compare(*a, *b, &ok, 0);
}

static bool write_json_dict(jsb *b, const jdict *d, const jjson_opts *o, int level, int depth, jv *bad) {
    if (d->n == 0) {
        jsb_put(b, "{}", 2);
        return true;
    }
    size_t *order = jarena_alloc(b->arena, d->n * sizeof *order);
    for (size_t i = 0; i < d->n; i++) order[i] = i;
    if (o->sort_keys) {
        /* sort (key, index) pairs by key; keys of one dict are all strings in practice */
        jv *pairs = jarena_alloc(b->arena, d->n * 2 * sizeof(jv));
        for (size_t i = 0; i < d->n; i++) {
            bool ok;
            if (i && (jv_compare(d->keys[i], d->keys[0], &ok, 0), !ok)) {
                *bad = d->keys[i];
                return false;
            }
            pairs[2 * i] = d->keys[i];
            pairs[2 * i + 1] = jv_int((int64_t)i);
        }
        qsort(pairs, d->n, 2 * sizeof(jv), compare_keys);
        for (size_t i = 0; i < d->n; i++) order[i] = (size_t)pairs[2 * i + 1].u.i;
    }
    jsb_putc(b, '{');
    for (size_t k = 0; k < d->n; k++) {
        size_t i = order[k];
        if (k) jsb_put(b, o->item_sep, o->item_sep_n);
        if (o->indent) write_json_newline(b, o, level + 1);
        if (!write_json_key(b, d->keys[i], o)) {
            *bad = d->keys[i];
            return false;
        }
        jsb_put(b, o->key_sep, o->key_sep_n);
        if (!jv_write_json(b, d->vals[i], o, level + 1, depth + 1, bad)) return false;
    }
    if (o->indent) write_json_newline(b, o, level);
    jsb_putc(b, '}');
    return true;
}

bool jv_write_json(jsb *b, jv v, const jjson_opts *o, int level, int depth, jv *bad) {
    write_nested_guard(b, depth);
    switch (v.kind) {
    case JV_NONE: jsb_put(b, "null", 4); return true;
    case JV_BOOL: v.u.b ? jsb_put(b, "true", 4) : jsb_put(b, "false", 5); return true;
    case JV_INT: jsb_printf(b, "%lld", (long long)v.u.i); return true;
    case JV_FLOAT:
        if (isnan(v.u.f)) jsb_put(b, "NaN", 3);
        else if (isinf(v.u.f)) v.u.f > 0 ? jsb_put(b, "Infinity", 8) : jsb_put(b, "-Infinity", 9);
        else jv_write_float(b, v.u.f);
        return true;
    case JV_STR: write_json_string(b, v.u.s.p, v.u.s.n, o->ensure_ascii); return true;
    case JV_LIST: {
        const jlist *l = v.u.list;
        if (l->n == 0) {
            jsb_put(b, "[]", 2);
            return true;
        }
        jsb_putc(b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) jsb_put(b, o->item_sep, o->item_sep_n);
            if (o->indent) write_json_newline(b, o, level + 1);
            if (!jv_write_json(b, l->items[i], o, level + 1, depth + 1, bad)) return false;
        }
        if (o->indent) write_json_newline(b, o, level);
        jsb_putc(b, ']');
        return true;
    }
    case JV_DICT: return write_json_dict(b, v.u.dict, o, level, depth, bad);
    default: *bad = v; return false;
    }
}

/* ---- Unicode as Python's str sees it ---- */

uint32_t u8_next(const char *p, size_t *i) { return lq_utf8_next(p, i); }

uint32_t u8_prev(const char *p, size_t *i) {
    size_t j = *i;
    do j--;
    while (j > 0 && ((unsigned char)p[j] & 0xC0) == 0x80);
    *i = j;
    size_t k = j;
    return lq_utf8_next(p, &k);
}

size_t u8_count(const char *p, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) count += ((unsigned char)p[i] & 0xC0) != 0x80;
    return count;
}

size_t u8_offset(const char *p, size_t n, size_t index) {
    size_t i = 0;
    while (i < n && index > 0) {
        i += lq_utf8_char_len((unsigned char)p[i]);
        index--;
    }
    return i < n ? i : n;
}

/* str.isspace(): the characters with Unicode's White_Space-like bidi classes. */
bool py_isspace(uint32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
    }
}

/* str.isprintable(): everything but control, format, surrogate, private use,
 * unassigned and separator characters, except the ASCII space. */
bool py_isprintable(uint32_t cp) {
    if (cp < 0x80) return cp >= 0x20 && cp < 0x7F;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: return false;
    default: return true;
    }
}

uint32_t py_upper(uint32_t cp) {
    if (cp < 0x80) return cp >= 'a' && cp <= 'z' ? cp - 32 : cp;
    return (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp);
}

uint32_t py_lower(uint32_t cp) {
    if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    return (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
}

uint32_t py_title(uint32_t cp) {
    if (cp < 0x80) return py_upper(cp);
    return (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp);
}

bool py_iscased(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

bool py_isalpha(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

bool py_isdigit(uint32_t cp) { return utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_ND; }

bool py_isalnum(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return py_isalpha(cp) || (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}
