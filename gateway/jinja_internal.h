/* jinja_internal.h — what the parts of the Jinja interpreter share: the
 * failure jump, the scratch arena, values, the token list and the syntax tree.
 * Only gateway/jinja*.c include it.
 *
 *   jinja_lex.c       source text -> tokens (text runs, tag delimiters,
 *                     expression tokens), whitespace control applied here
 *   jinja_parse.c     tokens -> syntax tree (jnode), names of filters and
 *                     tests resolved to their functions
 *   jinja_value.c     arena, values, Python's str()/repr()/json.dumps text,
 *                     equality and ordering, UTF-8 and Unicode helpers
 *   jinja_eval.c      the renderer: scopes, statements, expressions
 *   jinja_builtins.c  filters, tests, global functions and methods
 *
 * Errors never return through every caller: the failing function fills the
 * lq_error and longjmps to the entry point (lq_template_compile or
 * lq_template_render). That is safe because everything allocated while
 * parsing or rendering lives in an arena that the entry point frees. */
#ifndef LORQ_JINJA_INTERNAL_H
#define LORQ_JINJA_INTERNAL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "jinja.h"

/* ---- failure ---- */

typedef struct jthrow {
    jmp_buf jmp;
    lq_error *err;
} jthrow;

/* Fills t->err with the message and jumps back to the entry point. */
_Noreturn void jthrow_fail(jthrow *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- arena: bump allocation, released all at once ---- */

typedef struct jchunk jchunk;
typedef struct jarena {
    jchunk *chunks;
    size_t used, cap; /* bytes handed out so far, and the ceiling */
    jthrow *thrower;  /* where to go when the ceiling is reached */
} jarena;

void jarena_init(jarena *a, size_t cap, jthrow *thrower);
void jarena_release(jarena *a);
void *jarena_alloc(jarena *a, size_t n); /* zeroed, 16-byte aligned; fails (jumps) instead of returning NULL */
char *jarena_strdup(jarena *a, const char *p, size_t n); /* NUL-terminated copy */

/* ---- values ---- */

typedef enum {
    JV_UNDEFINED, /* jinja2's default Undefined: falsy, renders as "", fails when used */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,       /* UTF-8, immutable, not NUL-terminated */
    JV_LIST,      /* list or tuple */
    JV_DICT,      /* insertion-ordered */
    JV_NAMESPACE, /* namespace(): a dict whose attributes `set` may assign */
    JV_LOOP,      /* the `loop` variable of a for loop */
    JV_FUNC,      /* a global, a bound method or a macro */
} jv_kind;

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jloop jloop;
typedef struct jfunc jfunc;

typedef struct jv {
    jv_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s; /* JV_STR; for JV_UNDEFINED the reason it is undefined (p may be NULL) */
        jlist *list;
        jdict *dict; /* JV_DICT and JV_NAMESPACE */
        jloop *loop;
        jfunc *fn;
    } u;
} jv;

struct jlist {
    size_t n, cap;
    jv *items;
    bool tuple;
};

struct jdict {
    size_t n, cap;
    jv *keys, *vals;
};

struct jloop {
    const jlist *items; /* what the loop runs over, after its `if` filter */
    size_t index0;
    int depth0;
};

struct jctx;
typedef struct jargs {
    size_t n; /* positional arguments */
    const jv *pos;
    size_t nkw; /* keyword arguments: names (strings) and values */
    const jv *kwnames;
    const jv *kw;
} jargs;

typedef jv (*jbuiltin_fn)(struct jctx *c, jv self, const jargs *a);
typedef struct jbuiltin {
    const char *name;
    jbuiltin_fn fn;
} jbuiltin;

struct jnode;
struct jframe;
struct jfunc {
    const jbuiltin *builtin;     /* global or method; NULL for a macro */
    jv self;                     /* the receiver of a bound method */
    const struct jnode *macro;   /* the macro definition */
    struct jframe *closure;      /* the scope the macro was defined in */
};

static inline jv jv_undefined(const char *why) {
    jv v = {.kind = JV_UNDEFINED};
    v.u.s.p = why;
    v.u.s.n = why ? __builtin_strlen(why) : 0;
    return v;
}
static inline jv jv_none(void) { return (jv){.kind = JV_NONE}; }
static inline jv jv_bool(bool b) { return (jv){.kind = JV_BOOL, .u.b = b}; }
static inline jv jv_int(int64_t i) { return (jv){.kind = JV_INT, .u.i = i}; }
static inline jv jv_float(double f) { return (jv){.kind = JV_FLOAT, .u.f = f}; }
static inline jv jv_str(const char *p, size_t n) {
    jv v = {.kind = JV_STR};
    v.u.s.p = p;
    v.u.s.n = n;
    return v;
}
static inline jv jv_cstr(const char *p) { return jv_str(p, __builtin_strlen(p)); }
static inline bool jv_is_str(jv v) { return v.kind == JV_STR; }
static inline bool jv_is_number(jv v) { return v.kind == JV_INT || v.kind == JV_FLOAT || v.kind == JV_BOOL; }
static inline bool jv_str_eq(jv v, const char *s) {
    return v.kind == JV_STR && v.u.s.n == __builtin_strlen(s) && __builtin_memcmp(v.u.s.p, s, v.u.s.n) == 0;
}

jlist *jlist_new(jarena *a, size_t cap);
void jlist_push(jarena *a, jlist *l, jv v);
jv jv_list(jlist *l);
jdict *jdict_new(jarena *a, size_t cap);
void jdict_set(jarena *a, jdict *d, jv key, jv val); /* replaces an equal key in place */
const jv *jdict_get(const jdict *d, jv key);        /* NULL when absent */
const jv *jdict_get_str(const jdict *d, const char *key, size_t n);
jv jv_dict(jdict *d);

bool jv_truthy(jv v);
const char *jv_type_name(jv v); /* Python's name: str, int, list, dict, NoneType, ... */
bool jv_equal(jv a, jv b, int depth);
/* Python's ordering: -1, 0 or 1; *ok false when the two cannot be ordered. */
int jv_compare(jv a, jv b, bool *ok, int depth);

/* Copies a JSON value into the arena. */
jv jv_from_json(jarena *a, const struct json_t *j, int depth, jthrow *t);

/* ---- text building ---- */

typedef struct jsb {
    jarena *arena;
    char *p;
    size_t n, cap;
    size_t limit; /* 0: only the arena bounds it */
} jsb;

void jsb_init(jsb *b, jarena *a, size_t limit);
void jsb_put(jsb *b, const char *p, size_t n);
void jsb_putc(jsb *b, char c);
void jsb_printf(jsb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jsb_put_cp(jsb *b, uint32_t cp);
jv jsb_value(jsb *b); /* the text so far as a string value */

/* Python's str(v) and repr(v) appended to b. */
void jv_write_str(jsb *b, jv v, int depth);
void jv_write_repr(jsb *b, jv v, int depth);
void jv_write_float(jsb *b, double f); /* repr(float) */
jv jv_to_str(jarena *a, jv v);         /* str(v) as a value (v itself for strings) */

/* json.dumps(v, ensure_ascii=..., indent=..., separators=..., sort_keys=...).
 * indent NULL: one line. Returns false with *bad set to the value that has no
 * JSON form. */
typedef struct jjson_opts {
    bool ensure_ascii, sort_keys;
    const char *indent; /* NULL: no newlines */
    size_t indent_n;
    const char *item_sep, *key_sep;
    size_t item_sep_n, key_sep_n;
} jjson_opts;
bool jv_write_json(jsb *b, jv v, const jjson_opts *o, int level, int depth, jv *bad);

/* ---- Unicode, as Python's str sees it ---- */

bool py_isspace(uint32_t cp);
bool py_isprintable(uint32_t cp);
uint32_t py_upper(uint32_t cp);
uint32_t py_lower(uint32_t cp);
uint32_t py_title(uint32_t cp);
bool py_iscased(uint32_t cp);
bool py_isalpha(uint32_t cp);
bool py_isdigit(uint32_t cp);
bool py_isalnum(uint32_t cp);
size_t u8_count(const char *p, size_t n);               /* code points */
size_t u8_offset(const char *p, size_t n, size_t index); /* byte offset of code point index (n when past the end) */
uint32_t u8_next(const char *p, size_t *i);              /* decodes valid UTF-8 at p[*i] */
uint32_t u8_prev(const char *p, size_t *i);              /* decodes the code point ending at p[*i] */

/* ---- tokens ---- */

typedef enum {
    JT_EOF,
    JT_TEXT,        /* literal template text, whitespace control already applied */
    JT_VAR_BEGIN,   /* {{ */
    JT_VAR_END,     /* }} */
    JT_BLOCK_BEGIN, /* {% */
    JT_BLOCK_END,   /* %} */
    JT_NAME,
    JT_STRING, /* value decoded (escapes resolved) */
    JT_INT,
    JT_FLOAT,
    JT_OP, /* op holds the operator */
} jtok_kind;

/* Operators: single characters are themselves; these are the two-character ones. */
enum {
    JOP_FLOORDIV = 256, /* // */
    JOP_POW,            /* ** */
    JOP_EQ,             /* == */
    JOP_NE,             /* != */
    JOP_GE,             /* >= */
    JOP_LE,             /* <= */
    /* not tokens, but operators of the tree */
    JOP_IN,
    JOP_NOTIN,
};

typedef struct jtok {
    jtok_kind kind;
    int op;
    int line, col;
    const char *p; /* JT_NAME / JT_STRING / JT_TEXT text (in the template's arena) */
    size_t n;
    int64_t i;
    double f;
} jtok;

typedef struct jtoks {
    jtok *v;
    size_t n, cap;
} jtoks;

/* Splits the template into tokens (allocated from a; text copied into a). */
void jlex(const char *src, size_t len, jarena *a, jtoks *out, jthrow *t);

/* ---- syntax tree ---- */

typedef enum {
    /* expressions */
    JN_CONST,   /* value */
    JN_NAME,    /* value: the name */
    JN_LIST,    /* list: items */
    JN_TUPLE,   /* list: items */
    JN_DICT,    /* list: key, value, key, value, ... */
    JN_ATTR,    /* a.value */
    JN_ITEM,    /* a[b] */
    JN_SLICE,   /* a[list[0] : list[1] : list[2]], missing parts NULL */
    JN_CALL,    /* a(list..., kwargs...) */
    JN_FILTER,  /* a | value(list..., kwargs...), builtin resolved */
    JN_TEST,    /* a is value(list..., kwargs...), builtin resolved */
    JN_NOT,     /* not a */
    JN_NEG,     /* -a */
    JN_POS,     /* +a */
    JN_BINOP,   /* a op b: + - * / // % ** ~ */
    JN_AND,     /* a and b */
    JN_OR,      /* a or b */
    JN_COMPARE, /* a ops[0] list[0] ops[1] list[1] ... (chained like Python) */
    JN_COND,    /* b if a else c (c NULL: undefined) */
    JN_KWARG,   /* value = a (keyword argument, macro parameter, with-assignment) */
    /* statements */
    JN_TEXT,      /* value: literal text */
    JN_OUTPUT,    /* {{ a }} */
    JN_IF,        /* if a: list, else alt (an elif is a JN_IF alone in alt) */
    JN_FOR,       /* for a (name or tuple of names) in b if c: list, else alt */
    JN_SET,       /* set a = b (a: name, tuple of names, or name.attr) */
    JN_SET_BLOCK, /* set a: list rendered to a string */
    JN_MACRO,     /* macro value(kwargs: parameters, default in a or NULL): list */
    JN_WITH,      /* with kwargs...: list */
    JN_BLOCK,     /* list (e.g. generation ... endgeneration) */
    JN_BREAK,
    JN_CONTINUE,
} jnode_kind;

typedef struct jnode jnode;
typedef struct jnodes {
    jnode **v;
    size_t n, cap;
} jnodes;

struct jnode {
    jnode_kind kind;
    int line;
    int op;
    jv value;
    jnode *a, *b, *c;
    jnodes list, kwargs, alt;
    int *ops;                /* JN_COMPARE: one operator per entry of list */
    const jbuiltin *builtin; /* JN_FILTER, JN_TEST */
};

/* Parses the tokens into the body of a template (allocated from a). */
void jparse(const jtoks *toks, jarena *a, jnodes *body, jthrow *t);

/* ---- rendering ---- */

typedef struct jframe {
    struct jframe *parent;
    size_t n, cap;
    jv *names, *vals;
    bool captured; /* a macro defined here keeps it as its closure */
} jframe;

typedef struct jctx {
    jarena *arena;
    jthrow *thrower;
    lq_template_limits limits;
    uint64_t steps;
    int depth;      /* nested macro calls */
    int eval_depth; /* nested expression evaluation */
    int line;       /* line of the node being evaluated */
    jframe *frame;
    jsb *out;
} jctx;

/* A render error at the current line: "line N: ..." (raise_exception uses jfail_raw). */
_Noreturn void jfail(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void jfail_raw(jctx *c, const char *msg, size_t n);
/* Counts work against the step ceiling. */
void jcharge(jctx *c, uint64_t work);

jv jcall(jctx *c, jv fn, const jargs *a);
/* Python's a op b for + - * / // % ** (jarith) and == != < <= > >= in, not in (jcompare). */
jv jarith(jctx *c, int op, jv a, jv b);
bool jcompare(jctx *c, int op, jv a, jv b);

/* The iteration view of v (list items, dict keys, string characters). */
const jlist *jv_iterate(jctx *c, jv v);
/* v.name / v[key], jinja2's getattr and getitem rules. */
jv jv_getattr(jctx *c, jv v, jv name);
jv jv_getitem(jctx *c, jv v, jv key);

/* ---- builtins (jinja_builtins.c) ---- */

const jbuiltin *jbuiltin_filter(const char *name, size_t n);
const jbuiltin *jbuiltin_test(const char *name, size_t n);
const jbuiltin *jbuiltin_global(const char *name, size_t n);
/* Method `name` of v (str, dict, list or loop), or NULL. */
const jbuiltin *jbuiltin_method(jv v, const char *name, size_t n);

#endif
