/* jinja_eval.c — renders a compiled template: the entry points of jinja.h,
 * scopes, statements and expressions.
 *
 * Scopes follow jinja2: the context variables are the outermost frame; every
 * iteration of a for loop, every `with` and every macro call runs in a frame
 * of its own, so `set` inside a loop body is gone at the next iteration and
 * after the loop (the reason templates use namespace() to carry state out of
 * a loop), while `if` does not open a scope. A name not found in any frame is
 * a global function (range, namespace, raise_exception, ...) or Undefined.
 *
 * Undefined behaves like jinja2's default Undefined: it renders as nothing, is
 * false, iterates as empty and passes `is defined` / `default`, but using it
 * in arithmetic, as an object (x.y, x[0]) or as a function is an error that
 * names what was missing ("'dict object' has no attribute 'content'").
 *
 * Everything a render allocates comes from one arena released at the end,
 * also when an error unwinds through longjmp. Work is metered: each
 * expression node and loop iteration costs a step (long string operations
 * cost more), and output, memory and macro depth have ceilings, so no input
 * can make a render run away. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

struct lq_template {
    jarena arena;
    jnodes body;
    lq_template_limits limits;
};

typedef enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE } flow;

/* ---- errors and metering ---- */

_Noreturn void jfail(jctx *c, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jthrow_fail(c->thrower, "line %d: %s", c->line, msg);
}

_Noreturn void jfail_raw(jctx *c, const char *msg, size_t n) {
    if (n == 0) jfail(c, "the template raised an error with an empty message");
    jthrow_fail(c->thrower, "%.*s", (int)(n > 500 ? 500 : n), msg);
}

void jcharge(jctx *c, uint64_t work) {
    c->steps += work;
    if (c->steps > c->limits.max_steps)
        jfail(c, "template takes more than %llu steps (a loop that never ends, or input too large)",
              (unsigned long long)c->limits.max_steps);
}

/* Fails with the reason an undefined value carries. */
_Noreturn static void fail_undefined(jctx *c, jv v) {
    if (v.u.s.p) jfail(c, "%.*s", (int)v.u.s.n, v.u.s.p);
    jfail(c, "undefined value");
}

/* jinja2's message for a missing attribute or item of obj. */
static jv undefined_member(jctx *c, jv obj, jv name) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    if (obj.kind == JV_NONE) jsb_put(&b, "'None'", 6);
    else jsb_printf(&b, "'%s object'", jv_type_name(obj));
    if (name.kind == JV_STR) {
        jsb_put(&b, " has no attribute ", 18);
        jv_write_repr(&b, name, 0);
    } else {
        jsb_put(&b, " has no element ", 16);
        jv_write_repr(&b, name, 0);
    }
    jsb_putc(&b, '\0');
    return jv_undefined(b.p);
}

/* ---- scopes ---- */

static jframe *frame_new(jctx *c, jframe *parent) {
    jframe *f = jarena_alloc(c->arena, sizeof *f);
    f->parent = parent;
    return f;
}

static void frame_set(jctx *c, jframe *f, jv name, jv val) {
    for (size_t i = 0; i < f->n; i++)
        if (f->names[i].u.s.n == name.u.s.n && memcmp(f->names[i].u.s.p, name.u.s.p, name.u.s.n) == 0) {
            f->vals[i] = val;
            return;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 4;
        jv *names = jarena_alloc(c->arena, cap * sizeof(jv)), *vals = jarena_alloc(c->arena, cap * sizeof(jv));
        if (f->n) {
            memcpy(names, f->names, f->n * sizeof(jv));
            memcpy(vals, f->vals, f->n * sizeof(jv));
        }
        f->names = names;
        f->vals = vals;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = val;
}

static bool frame_has_own(const jframe *f, jv name) {
    for (size_t i = 0; i < f->n; i++)
        if (jv_equal(f->names[i], name, 0)) return true;
    return false;
}

static const jv *frame_find(const jframe *f, jv name) {
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (f->names[i].u.s.n == name.u.s.n && memcmp(f->names[i].u.s.p, name.u.s.p, name.u.s.n) == 0)
                return &f->vals[i];
    return NULL;
}

static jv func_value(jctx *c, const jbuiltin *b, jv self) {
    jfunc *fn = jarena_alloc(c->arena, sizeof *fn);
    fn->builtin = b;
    fn->self = self;
    return (jv){.kind = JV_FUNC, .u.fn = fn};
}

static jv lookup(jctx *c, jv name) {
    const jv *v = frame_find(c->frame, name);
    if (v) return *v;
    const jbuiltin *g = jbuiltin_global(name.u.s.p, name.u.s.n);
    if (g) return func_value(c, g, jv_none());
    jsb b;
    jsb_init(&b, c->arena, 0);
    jv_write_repr(&b, name, 0);
    jsb_put(&b, " is undefined", 14); /* with its NUL */
    return jv_undefined(b.p);
}

/* ---- member access ---- */

jv jv_getattr(jctx *c, jv v, jv name) {
    if (v.kind == JV_UNDEFINED) fail_undefined(c, v);
    if (v.kind == JV_DICT || v.kind == JV_NAMESPACE) {
        const jbuiltin *m = v.kind == JV_DICT ? jbuiltin_method(v, name.u.s.p, name.u.s.n) : NULL;
        if (m) return func_value(c, m, v);
        const jv *found = jdict_get(v.u.dict, name);
        return found ? *found : undefined_member(c, v, name);
    }
    if (v.kind == JV_LOOP) {
        const jloop *l = v.u.loop;
        size_t n = l->items->n, i = l->index0;
        if (jv_str_eq(name, "index")) return jv_int((int64_t)i + 1);
        if (jv_str_eq(name, "index0")) return jv_int((int64_t)i);
        if (jv_str_eq(name, "revindex")) return jv_int((int64_t)(n - i));
        if (jv_str_eq(name, "revindex0")) return jv_int((int64_t)(n - i - 1));
        if (jv_str_eq(name, "first")) return jv_bool(i == 0);
        if (jv_str_eq(name, "last")) return jv_bool(i + 1 == n);
        if (jv_str_eq(name, "length")) return jv_int((int64_t)n);
        if (jv_str_eq(name, "depth")) return jv_int(l->depth0 + 1);
        if (jv_str_eq(name, "depth0")) return jv_int(l->depth0);
        if (jv_str_eq(name, "previtem"))
            return i > 0 ? l->items->items[i - 1] : jv_undefined("there is no previous item");
        if (jv_str_eq(name, "nextitem")) return i + 1 < n ? l->items->items[i + 1] : jv_undefined("there is no next item");
    }
    const jbuiltin *m = jbuiltin_method(v, name.u.s.p, name.u.s.n);
    if (m) return func_value(c, m, v);
    return undefined_member(c, v, name);
}

static bool as_index(jv key, int64_t *i) {
    if (key.kind == JV_INT) *i = key.u.i;
    else if (key.kind == JV_BOOL) *i = key.u.b;
    else return false;
    return true;
}

jv jv_getitem(jctx *c, jv v, jv key) {
    if (v.kind == JV_UNDEFINED) fail_undefined(c, v);
    if (key.kind == JV_UNDEFINED) fail_undefined(c, key);
    if (v.kind == JV_DICT || v.kind == JV_NAMESPACE) {
        const jv *found = jdict_get(v.u.dict, key);
        if (found) return *found;
    } else if (v.kind == JV_LIST || v.kind == JV_STR) {
        int64_t i;
        if (as_index(key, &i)) {
            if (v.kind == JV_LIST) {
                int64_t n = (int64_t)v.u.list->n;
                if (i < 0) i += n;
                return i >= 0 && i < n ? v.u.list->items[i] : undefined_member(c, v, key);
            }
            jcharge(c, v.u.s.n / 64);
            int64_t n = (int64_t)u8_count(v.u.s.p, v.u.s.n);
            if (i < 0) i += n;
            if (i < 0 || i >= n) return undefined_member(c, v, key);
            size_t at = u8_offset(v.u.s.p, v.u.s.n, (size_t)i), end = at;
            u8_next(v.u.s.p, &end);
            return jv_str(v.u.s.p + at, end - at);
        }
    }
    if (key.kind == JV_STR) return jv_getattr(c, v, key); /* obj['strip'] finds the method, as in jinja2 */
    return undefined_member(c, v, key);
}

/* Python's slice.indices(): resolves start/stop for a sequence of length n. */
static bool slice_bounds(jctx *c, const jv *parts, int64_t n, int64_t *start, int64_t *stop, int64_t *step) {
    int64_t v[3];
    bool given[3];
    for (int k = 0; k < 3; k++) {
        given[k] = parts[k].kind != JV_NONE;
        if (given[k] && !as_index(parts[k], &v[k])) return false;
    }
    *step = given[2] ? v[2] : 1;
    if (*step == 0) jfail(c, "slice step cannot be zero");
    int64_t lo = *step < 0 ? -1 : 0, hi = *step < 0 ? n - 1 : n;
    for (int k = 0; k < 2; k++) {
        int64_t x = given[k] ? v[k] : (k == 0) == (*step > 0) ? lo : hi;
        if (given[k]) {
            if (x < 0) x += n;
            if (x < lo) x = lo;
            if (x > hi) x = hi;
        } else x = k == 0 ? (*step > 0 ? 0 : n - 1) : (*step > 0 ? n : -1);
        *(k == 0 ? start : stop) = x;
    }
    return true;
}

/* v[start:stop:step]: jinja2 slices with Python's own subscript, so unlike
 * v[i] a value that cannot be sliced is an error, not Undefined. */
static jv slice_value(jctx *c, jv v, const jv *parts) {
    if (v.kind == JV_UNDEFINED) fail_undefined(c, v);
    if (v.kind != JV_LIST && v.kind != JV_STR) jfail(c, "'%s' object is not subscriptable", jv_type_name(v));
    bool is_str = v.kind == JV_STR;
    const jlist *chars = is_str ? jv_iterate(c, v) : v.u.list;
    int64_t start, stop, step, n = (int64_t)chars->n;
    if (!slice_bounds(c, parts, n, &start, &stop, &step))
        jfail(c, "slice indices must be integers or None or have an __index__ method");
    jlist *out = jlist_new(c->arena, 0);
    out->tuple = !is_str && v.u.list->tuple;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) jlist_push(c->arena, out, chars->items[i]);
    jcharge(c, out->n / 16);
    if (!is_str) return jv_list(out);
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (size_t i = 0; i < out->n; i++) jsb_put(&b, out->items[i].u.s.p, out->items[i].u.s.n);
    return jsb_value(&b);
}

const jlist *jv_iterate(jctx *c, jv v) {
    switch (v.kind) {
    case JV_LIST: return v.u.list;
    case JV_UNDEFINED: return jlist_new(c->arena, 0);
    case JV_DICT: {
        jlist *keys = jlist_new(c->arena, v.u.dict->n);
        memcpy(keys->items, v.u.dict->keys, v.u.dict->n * sizeof(jv));
        keys->n = v.u.dict->n;
        return keys;
    }
    case JV_STR: {
        jcharge(c, v.u.s.n / 16);
        jlist *chars = jlist_new(c->arena, v.u.s.n);
        for (size_t i = 0; i < v.u.s.n;) {
            size_t start = i;
            u8_next(v.u.s.p, &i);
            chars->items[chars->n++] = jv_str(v.u.s.p + start, i - start);
        }
        return chars;
    }
    default: jfail(c, "'%s' object is not iterable", jv_type_name(v));
    }
}

/* ---- operators ---- */

_Noreturn static void fail_operands(jctx *c, const char *op, jv a, jv b) {
    if (a.kind == JV_UNDEFINED) fail_undefined(c, a);
    if (b.kind == JV_UNDEFINED) fail_undefined(c, b);
    if (a.kind == JV_STR && !strcmp(op, "+")) jfail(c, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
    jfail(c, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a), jv_type_name(b));
}

static int64_t int_of(jv v) { return v.kind == JV_BOOL ? v.u.b : v.u.i; }
static double float_of(jv v) { return v.kind == JV_FLOAT ? v.u.f : (double)int_of(v); }

static jv repeat(jctx *c, jv seq, int64_t times) {
    if (times < 0) times = 0;
    if (seq.kind == JV_STR) {
        if (seq.u.s.n && (uint64_t)times > (uint64_t)c->limits.max_memory / seq.u.s.n)
            jfail(c, "repeated string would exceed the memory limit");
        jcharge(c, (uint64_t)times * seq.u.s.n / 64);
        jsb b;
        jsb_init(&b, c->arena, 0);
        for (int64_t i = 0; i < times; i++) jsb_put(&b, seq.u.s.p, seq.u.s.n);
        return jsb_value(&b);
    }
    const jlist *l = seq.u.list;
    if (l->n && (uint64_t)times > (uint64_t)c->limits.max_memory / (l->n * sizeof(jv)))
        jfail(c, "repeated list would exceed the memory limit");
    jcharge(c, (uint64_t)times * l->n / 16);
    jlist *out = jlist_new(c->arena, l->n * (size_t)times);
    out->tuple = l->tuple;
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < l->n; k++) out->items[out->n++] = l->items[k];
    return jv_list(out);
}

static jv concat(jctx *c, jv a, jv b) {
    if (a.kind == JV_STR) {
        jcharge(c, (a.u.s.n + b.u.s.n) / 64);
        char *p = jarena_alloc(c->arena, a.u.s.n + b.u.s.n + 1);
        memcpy(p, a.u.s.p, a.u.s.n);
        memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
        return jv_str(p, a.u.s.n + b.u.s.n);
    }
    jlist *out = jlist_new(c->arena, a.u.list->n + b.u.list->n);
    out->tuple = a.u.list->tuple;
    memcpy(out->items, a.u.list->items, a.u.list->n * sizeof(jv));
    memcpy(out->items + a.u.list->n, b.u.list->items, b.u.list->n * sizeof(jv));
    out->n = a.u.list->n + b.u.list->n;
    jcharge(c, out->n / 16);
    return jv_list(out);
}

static jv int_pow(jctx *c, int64_t base, int64_t exp) {
    if (exp < 0) return jv_float(pow((double)base, (double)exp));
    int64_t result = 1;
    while (exp > 0) {
        if ((exp & 1) && __builtin_mul_overflow(result, base, &result)) jfail(c, "integer overflow in **");
        exp >>= 1;
        if (exp && __builtin_mul_overflow(base, base, &base)) jfail(c, "integer overflow in **");
    }
    return jv_int(result);
}

/* Python's // and % on integers: the quotient rounds toward minus infinity. */
static jv int_divmod(jctx *c, int64_t x, int64_t y, bool want_mod) {
    if (y == 0) jfail(c, "integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) {
        if (want_mod) return jv_int(0);
        jfail(c, "integer overflow in //");
    }
    int64_t q = x / y, r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) {
        q--;
        r += y;
    }
    return jv_int(want_mod ? r : q);
}

jv jarith(jctx *c, int op, jv a, jv b) {
    static const char *names[] = {"+", "-", "*", "/", "//", "%", "**"};
    const char *name = op == '+' ? names[0] : op == '-' ? names[1] : op == '*' ? names[2] : op == '/' ? names[3]
                     : op == JOP_FLOORDIV ? names[4] : op == '%' ? names[5] : names[6];
    if (!jv_is_number(a) || !jv_is_number(b)) {
        if (op == '+' && a.kind == b.kind && (a.kind == JV_STR || (a.kind == JV_LIST && a.u.list->tuple == b.u.list->tuple)))
            return concat(c, a, b);
        if (op == '*' && (a.kind == JV_STR || a.kind == JV_LIST) && (b.kind == JV_INT || b.kind == JV_BOOL))
            return repeat(c, a, int_of(b));
        if (op == '*' && (b.kind == JV_STR || b.kind == JV_LIST) && (a.kind == JV_INT || a.kind == JV_BOOL))
            return repeat(c, b, int_of(a));
        if (op == '%' && a.kind == JV_STR) jfail(c, "printf-style string formatting with %% is not supported");
        fail_operands(c, name, a, b);
    }
    if (a.kind != JV_FLOAT && b.kind != JV_FLOAT && op != '/') {
        int64_t x = int_of(a), y = int_of(b), r = 0;
        bool overflow = false;
        switch (op) {
        case '+': overflow = __builtin_add_overflow(x, y, &r); break;
        case '-': overflow = __builtin_sub_overflow(x, y, &r); break;
        case '*': overflow = __builtin_mul_overflow(x, y, &r); break;
        case JOP_FLOORDIV: return int_divmod(c, x, y, false);
        case '%': return int_divmod(c, x, y, true);
        default: return int_pow(c, x, y);
        }
        if (overflow) jfail(c, "integer overflow in %s", name);
        return jv_int(r);
    }
    double x = float_of(a), y = float_of(b);
    switch (op) {
    case '+': return jv_float(x + y);
    case '-': return jv_float(x - y);
    case '*': return jv_float(x * y);
    case '/':
        if (y == 0) jfail(c, "division by zero");
        return jv_float(x / y);
    case JOP_FLOORDIV:
    case '%': {
        if (y == 0) jfail(c, "float division by zero");
        double m = fmod(x, y); /* Python's float divmod: the remainder takes the sign of y */
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        if (op == '%') return jv_float(m == 0 ? copysign(0.0, y) : m);
        double q = (x - m) / y, fq = floor(q);
        return jv_float(q - fq > 0.5 ? fq + 1.0 : fq);
    }
    default:
        if (x == 0 && y < 0) jfail(c, "0.0 cannot be raised to a negative power");
        return jv_float(pow(x, y));
    }
}

static jv binop(jctx *c, int op, jv a, jv b) {
    if (op != '~') return jarith(c, op, a, b);
    jsb s; /* ~ joins the str() of both sides; undefined is "" here */
    jsb_init(&s, c->arena, 0);
    jv_write_str(&s, a, 0);
    jv_write_str(&s, b, 0);
    jcharge(c, s.n / 64);
    return jsb_value(&s);
}

static bool contains(jctx *c, jv container, jv item) {
    switch (container.kind) {
    case JV_STR:
        if (item.kind == JV_UNDEFINED) fail_undefined(c, item);
        if (item.kind != JV_STR) jfail(c, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        jcharge(c, container.u.s.n / 64);
        return item.u.s.n == 0 || memmem(container.u.s.p, container.u.s.n, item.u.s.p, item.u.s.n) != NULL;
    case JV_LIST:
        jcharge(c, container.u.list->n / 16);
        for (size_t i = 0; i < container.u.list->n; i++)
            if (jv_equal(container.u.list->items[i], item, 0)) return true;
        return false;
    case JV_DICT:
    case JV_NAMESPACE: jcharge(c, container.u.dict->n / 16); return jdict_get(container.u.dict, item) != NULL;
    case JV_UNDEFINED: return false;
    default: jfail(c, "argument of type '%s' is not iterable", jv_type_name(container));
    }
}

bool jcompare(jctx *c, int op, jv a, jv b) {
    switch (op) {
    case JOP_EQ: return jv_equal(a, b, 0);
    case JOP_NE: return !jv_equal(a, b, 0);
    case JOP_IN: return contains(c, b, a);
    case JOP_NOTIN: return !contains(c, b, a);
    }
    if (a.kind == JV_UNDEFINED) fail_undefined(c, a);
    if (b.kind == JV_UNDEFINED) fail_undefined(c, b);
    bool ok;
    int r = jv_compare(a, b, &ok, 0);
    const char *name = op == '<' ? "<" : op == '>' ? ">" : op == JOP_LE ? "<=" : ">=";
    if (!ok) jfail(c, "'%s' not supported between instances of '%s' and '%s'", name, jv_type_name(a), jv_type_name(b));
    if ((a.kind == JV_FLOAT && isnan(a.u.f)) || (b.kind == JV_FLOAT && isnan(b.u.f))) return false;
    return op == '<' ? r < 0 : op == '>' ? r > 0 : op == JOP_LE ? r <= 0 : r >= 0;
}

/* ---- expressions ---- */

static jv eval(jctx *c, const jnode *n);

static void eval_args(jctx *c, const jnode *n, jargs *a) {
    jv *pos = n->list.n ? jarena_alloc(c->arena, n->list.n * sizeof(jv)) : NULL;
    for (size_t i = 0; i < n->list.n; i++) pos[i] = eval(c, n->list.v[i]);
    jv *names = n->kwargs.n ? jarena_alloc(c->arena, n->kwargs.n * sizeof(jv)) : NULL;
    jv *vals = n->kwargs.n ? jarena_alloc(c->arena, n->kwargs.n * sizeof(jv)) : NULL;
    for (size_t i = 0; i < n->kwargs.n; i++) {
        names[i] = n->kwargs.v[i]->value;
        vals[i] = eval(c, n->kwargs.v[i]->a);
    }
    *a = (jargs){.n = n->list.n, .pos = pos, .nkw = n->kwargs.n, .kwnames = names, .kw = vals};
}

static bool hashable(jv v) {
    if (v.kind == JV_LIST && v.u.list->tuple) {
        for (size_t i = 0; i < v.u.list->n; i++)
            if (!hashable(v.u.list->items[i])) return false;
        return true;
    }
    return v.kind != JV_LIST && v.kind != JV_DICT && v.kind != JV_UNDEFINED;
}

static jv eval_collection(jctx *c, const jnode *n) {
    if (n->kind == JN_DICT) {
        jdict *d = jdict_new(c->arena, n->list.n / 2);
        for (size_t i = 0; i + 1 < n->list.n; i += 2) {
            jv key = eval(c, n->list.v[i]);
            if (!hashable(key)) jfail(c, "unhashable type: '%s'", jv_type_name(key));
            jdict_set(c->arena, d, key, eval(c, n->list.v[i + 1]));
        }
        return jv_dict(d);
    }
    jlist *l = jlist_new(c->arena, n->list.n);
    l->tuple = n->kind == JN_TUPLE;
    for (size_t i = 0; i < n->list.n; i++) l->items[l->n++] = eval(c, n->list.v[i]);
    return jv_list(l);
}

static jv eval_compare(jctx *c, const jnode *n) {
    jv left = eval(c, n->a);
    for (size_t i = 0; i < n->list.n; i++) {
        jv right = eval(c, n->list.v[i]);
        if (!jcompare(c, n->ops[i], left, right)) return jv_bool(false);
        left = right;
    }
    return jv_bool(true);
}

static jv eval_unary(jctx *c, const jnode *n) {
    jv v = eval(c, n->a);
    if (n->kind == JN_NOT) return jv_bool(!jv_truthy(v));
    if (v.kind == JV_UNDEFINED) fail_undefined(c, v);
    if (!jv_is_number(v)) jfail(c, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jv_type_name(v));
    if (n->kind == JN_POS) return v.kind == JV_BOOL ? jv_int(v.u.b) : v;
    if (v.kind == JV_FLOAT) return jv_float(-v.u.f);
    if (int_of(v) == INT64_MIN) jfail(c, "integer overflow in unary -");
    return jv_int(-int_of(v));
}

static jv eval_slice(jctx *c, const jnode *n) {
    jv obj = eval(c, n->a);
    jv parts[3];
    for (int k = 0; k < 3; k++) parts[k] = n->list.v[k] ? eval(c, n->list.v[k]) : jv_none();
    return slice_value(c, obj, parts);
}

/* Deep enough for any real template; a long `a + b + ...` chain builds a tree
 * this deep, and evaluating it recursively must not exhaust the C stack. */
#define EVAL_MAX_DEPTH 2000

static jv eval(jctx *c, const jnode *n) {
    jcharge(c, 1);
    if (++c->eval_depth > EVAL_MAX_DEPTH) jfail(c, "expression nested more than %d levels deep", EVAL_MAX_DEPTH);
    int line = c->line;
    c->line = n->line;
    jv v;
    jargs args;
    switch (n->kind) {
    case JN_CONST: v = n->value; break;
    case JN_NAME: v = lookup(c, n->value); break;
    case JN_LIST:
    case JN_TUPLE:
    case JN_DICT: v = eval_collection(c, n); break;
    case JN_ATTR: v = jv_getattr(c, eval(c, n->a), n->value); break;
    case JN_ITEM: {
        jv obj = eval(c, n->a);
        v = jv_getitem(c, obj, eval(c, n->b));
        break;
    }
    case JN_SLICE: v = eval_slice(c, n); break;
    case JN_CALL: {
        jv fn = eval(c, n->a);
        eval_args(c, n, &args);
        c->line = n->line;
        v = jcall(c, fn, &args);
        break;
    }
    case JN_FILTER:
    case JN_TEST: {
        jv operand = eval(c, n->a);
        eval_args(c, n, &args);
        c->line = n->line;
        v = n->builtin->fn(c, operand, &args);
        break;
    }
    case JN_NOT:
    case JN_NEG:
    case JN_POS: v = eval_unary(c, n); break;
    case JN_BINOP: {
        jv a = eval(c, n->a), b = eval(c, n->b);
        c->line = n->line;
        v = binop(c, n->op, a, b);
        break;
    }
    case JN_AND:
        v = eval(c, n->a);
        if (jv_truthy(v)) v = eval(c, n->b);
        break;
    case JN_OR:
        v = eval(c, n->a);
        if (!jv_truthy(v)) v = eval(c, n->b);
        break;
    case JN_COMPARE: v = eval_compare(c, n); break;
    case JN_COND:
        if (jv_truthy(eval(c, n->a))) v = eval(c, n->b);
        else v = n->c ? eval(c, n->c) : jv_undefined("the condition was false and there is no else");
        break;
    default: jfail(c, "internal error: node %d is not an expression", (int)n->kind);
    }
    c->line = line;
    c->eval_depth--;
    return v;
}

/* ---- statements ---- */

static flow exec_body(jctx *c, const jnodes *body);

static jv capture(jctx *c, const jnodes *body) {
    jsb *saved = c->out, buf;
    jsb_init(&buf, c->arena, c->limits.max_output);
    c->out = &buf;
    exec_body(c, body);
    c->out = saved;
    return jsb_value(&buf);
}

static void assign(jctx *c, const jnode *target, jv v) {
    if (target->kind == JN_NAME) return frame_set(c, c->frame, target->value, v);
    if (target->kind == JN_ATTR) {
        jv ns = lookup(c, target->a->value);
        if (ns.kind != JV_NAMESPACE) jfail(c, "cannot assign attribute on non-namespace object");
        jdict_set(c->arena, ns.u.dict, target->value, v);
        return;
    }
    if (v.kind == JV_UNDEFINED) fail_undefined(c, v);
    const jlist *items = jv_iterate(c, v);
    size_t want = target->list.n;
    if (items->n > want) jfail(c, "too many values to unpack (expected %zu)", want);
    if (items->n < want) jfail(c, "not enough values to unpack (expected %zu, got %zu)", want, items->n);
    for (size_t i = 0; i < want; i++) assign(c, target->list.v[i], items->items[i]);
}

static const jlist *loop_items(jctx *c, const jnode *n) {
    jv iterable = eval(c, n->b);
    const jlist *items = jv_iterate(c, iterable);
    if (!n->c) return items;
    jlist *kept = jlist_new(c->arena, 0);
    jframe *outer = c->frame;
    for (size_t i = 0; i < items->n; i++) {
        jcharge(c, 1);
        c->frame = frame_new(c, outer);
        assign(c, n->a, items->items[i]);
        bool keep = jv_truthy(eval(c, n->c));
        c->frame = outer;
        if (keep) jlist_push(c->arena, kept, items->items[i]);
    }
    return kept;
}

static void exec_for(jctx *c, const jnode *n) {
    const jlist *items = loop_items(c, n);
    jframe *outer = c->frame;
    if (items->n == 0) {
        c->frame = frame_new(c, outer);
        exec_body(c, &n->alt);
        c->frame = outer;
        return;
    }
    jloop *loop = jarena_alloc(c->arena, sizeof *loop);
    loop->items = items;
    loop->depth0 = 0; /* loops are not recursive, so loop.depth is always 1 */
    jv loop_value = {.kind = JV_LOOP, .u.loop = loop};
    jframe *frame = NULL;
    for (size_t i = 0; i < items->n; i++) {
        jcharge(c, 1);
        loop->index0 = i;
        /* each iteration starts with a fresh scope; the last one's storage is
         * reused unless a macro defined in it holds on to it */
        if (!frame || frame->captured) frame = frame_new(c, outer);
        frame->n = 0;
        c->frame = frame;
        frame_set(c, c->frame, jv_cstr("loop"), loop_value);
        assign(c, n->a, items->items[i]);
        flow f = exec_body(c, &n->list);
        c->frame = outer;
        if (f == FLOW_BREAK) break;
    }
}

static void exec_with(jctx *c, const jnode *n) {
    jframe *inner = frame_new(c, c->frame);
    for (size_t i = 0; i < n->kwargs.n; i++) frame_set(c, inner, n->kwargs.v[i]->value, eval(c, n->kwargs.v[i]->a));
    jframe *outer = c->frame;
    c->frame = inner;
    exec_body(c, &n->list);
    c->frame = outer;
}

static void define_macro(jctx *c, const jnode *n) {
    jfunc *fn = jarena_alloc(c->arena, sizeof *fn);
    fn->macro = n;
    fn->closure = c->frame;
    c->frame->captured = true;
    frame_set(c, c->frame, n->value, (jv){.kind = JV_FUNC, .u.fn = fn});
}

static flow exec(jctx *c, const jnode *n) {
    c->line = n->line;
    switch (n->kind) {
    case JN_TEXT: jsb_put(c->out, n->value.u.s.p, n->value.u.s.n); break;
    case JN_OUTPUT: jv_write_str(c->out, eval(c, n->a), 0); break;
    case JN_IF: return exec_body(c, jv_truthy(eval(c, n->a)) ? &n->list : &n->alt);
    case JN_FOR: exec_for(c, n); break;
    case JN_SET: assign(c, n->a, eval(c, n->b)); break;
    case JN_SET_BLOCK: assign(c, n->a, capture(c, &n->list)); break;
    case JN_MACRO: define_macro(c, n); break;
    case JN_WITH: exec_with(c, n); break;
    case JN_BLOCK: return exec_body(c, &n->list);
    case JN_BREAK: return FLOW_BREAK;
    case JN_CONTINUE: return FLOW_CONTINUE;
    default: jfail(c, "internal error: node %d is not a statement", (int)n->kind);
    }
    return FLOW_NEXT;
}

static flow exec_body(jctx *c, const jnodes *body) {
    for (size_t i = 0; i < body->n; i++) {
        jcharge(c, 1);
        flow f = exec(c, body->v[i]);
        if (f != FLOW_NEXT) return f;
    }
    return FLOW_NEXT;
}

/* ---- calls ---- */

static jv call_macro(jctx *c, const jfunc *fn, const jargs *a) {
    const jnode *m = fn->macro;
    size_t nparams = m->kwargs.n;
    if (a->n > nparams) jfail(c, "macro '%.*s' takes not more than %zu argument(s)", (int)m->value.u.s.n, m->value.u.s.p, nparams);
    if (++c->depth > c->limits.max_depth) jfail(c, "macro calls nested more than %d deep", c->limits.max_depth);
    jframe *outer = c->frame, *f = frame_new(c, fn->closure);
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < nparams && !jv_equal(m->kwargs.v[i]->value, a->kwnames[k], 0)) i++;
        if (i == nparams)
            jfail(c, "macro '%.*s' takes no keyword argument '%.*s'", (int)m->value.u.s.n, m->value.u.s.p,
                  (int)a->kwnames[k].u.s.n, a->kwnames[k].u.s.p);
        if (i < a->n) jfail(c, "macro '%.*s' got multiple values for '%.*s'", (int)m->value.u.s.n, m->value.u.s.p,
                            (int)a->kwnames[k].u.s.n, a->kwnames[k].u.s.p);
        frame_set(c, f, m->kwargs.v[i]->value, a->kw[k]);
    }
    c->frame = f;
    for (size_t i = 0; i < nparams; i++) {
        const jnode *param = m->kwargs.v[i];
        if (i < a->n) frame_set(c, f, param->value, a->pos[i]);
        else if (!frame_has_own(f, param->value)) /* jinja2 leaves a missing argument undefined */
            frame_set(c, f, param->value, param->a ? eval(c, param->a) : jv_undefined("missing macro argument"));
    }
    jv out = capture(c, &m->list);
    c->frame = outer;
    c->depth--;
    return out;
}

jv jcall(jctx *c, jv fn, const jargs *a) {
    if (fn.kind == JV_UNDEFINED) fail_undefined(c, fn);
    if (fn.kind != JV_FUNC) jfail(c, "'%s' object is not callable", jv_type_name(fn));
    if (fn.u.fn->macro) return call_macro(c, fn.u.fn, a);
    return fn.u.fn->builtin->fn(c, fn.u.fn->self, a);
}

/* ---- entry points ---- */

static void default_limits(lq_template_limits *l) {
    if (!l->max_steps) l->max_steps = LQ_TEMPLATE_DEFAULT_STEPS;
    if (!l->max_output) l->max_output = LQ_TEMPLATE_DEFAULT_OUTPUT;
    if (!l->max_memory) l->max_memory = LQ_TEMPLATE_DEFAULT_MEMORY;
    if (!l->max_depth) l->max_depth = LQ_TEMPLATE_DEFAULT_DEPTH;
}

/* State that must survive a longjmp lives on the heap, not in locals. */
typedef struct compile_state {
    jthrow thrower;
    jtoks toks;
} compile_state;

/* Lexes and parses into t; false (with the message set) when src is not a valid template. */
static bool compile_into(lq_template *t, compile_state *st, const char *src, size_t len) {
    if (setjmp(st->thrower.jmp)) return false;
    jlex(src, len, &t->arena, &st->toks, &st->thrower);
    jparse(&st->toks, &t->arena, &t->body, &st->thrower);
    return true;
}

lq_template *lq_template_compile_n(const char *src, size_t len, lq_error *err) {
    lq_template *t = calloc(1, sizeof *t);
    compile_state *st = calloc(1, sizeof *st);
    if (!t || !st) {
        free(t);
        free(st);
        lq_fail(err, "out of memory");
        return NULL;
    }
    st->thrower.err = err;
    jarena_init(&t->arena, 256 * len + (1u << 20), &st->thrower); /* tokens and nodes of the densest source fit */
    bool ok = compile_into(t, st, src, len);
    free(st);
    if (!ok) {
        jarena_release(&t->arena);
        free(t);
        return NULL;
    }
    t->arena.thrower = NULL; /* nothing is allocated from it after this */
    default_limits(&t->limits);
    return t;
}

lq_template *lq_template_compile(const char *src, lq_error *err) {
    return lq_template_compile_n(src, strlen(src), err);
}

void lq_template_free(lq_template *t) {
    if (!t) return;
    jarena_release(&t->arena);
    free(t);
}

void lq_template_set_limits(lq_template *t, const lq_template_limits *limits) {
    t->limits = limits ? *limits : (lq_template_limits){0};
    default_limits(&t->limits);
}

typedef struct render_state {
    jthrow thrower;
    jarena arena;
    jctx ctx;
    jsb out;
} render_state;

/* Renders t into st->out; false (with the message set) on any error. */
static bool render_into(render_state *st, const lq_template *t, const json_t *context) {
    if (setjmp(st->thrower.jmp)) return false;
    jctx *c = &st->ctx;
    *c = (jctx){.arena = &st->arena, .thrower = &st->thrower, .limits = t->limits, .line = 1, .out = &st->out};
    c->frame = frame_new(c, NULL);
    if (context) {
        jv vars = jv_from_json(&st->arena, context, 0, &st->thrower);
        for (size_t i = 0; i < vars.u.dict->n; i++) frame_set(c, c->frame, vars.u.dict->keys[i], vars.u.dict->vals[i]);
    }
    c->frame = frame_new(c, c->frame); /* template-level `set` shadows the context without changing it */
    jsb_init(&st->out, &st->arena, t->limits.max_output);
    exec_body(c, &t->body);
    return true;
}

char *lq_template_render(const lq_template *t, const json_t *context, size_t *len, lq_error *err) {
    if (context && !json_is_object(context)) {
        lq_fail(err, "template context must be a JSON object");
        return NULL;
    }
    render_state *st = calloc(1, sizeof *st);
    if (!st) {
        lq_fail(err, "out of memory");
        return NULL;
    }
    st->thrower.err = err;
    jarena_init(&st->arena, t->limits.max_memory, &st->thrower);
    char *text = NULL;
    if (render_into(st, t, context)) {
        text = malloc(st->out.n + 1);
        if (text) {
            if (st->out.n) memcpy(text, st->out.p, st->out.n);
            text[st->out.n] = '\0';
            if (len) *len = st->out.n;
        } else lq_fail(err, "out of memory");
    }
    jarena_release(&st->arena);
    free(st);
    return text;
}
