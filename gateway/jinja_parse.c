/* jinja_parse.c — tokens to a syntax tree, by recursive descent.
 *
 * The grammar and its precedence are jinja2's (lowest first):
 *
 *   tuple      expr (',' expr)*            only where jinja2 allows a tuple
 *   expr       or ('if' or ('else' expr)?)*
 *   or / and   left-associative
 *   not        'not' not | compare
 *   compare    math1 (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not in') math1)*
 *   math1      concat (('+'|'-') concat)*
 *   concat     math2 ('~' math2)*
 *   math2      pow (('*'|'/'|'//'|'%') pow)*
 *   pow        unary ('**' unary)*         left-associative, as in jinja2
 *   unary      ('-'|'+') unary | primary postfix*, then filters and tests:
 *              x | f(args), x is [not] t(args), so `a | trim + b` is (a|trim) + b
 *
 * Filters and tests are looked up while parsing, so a misspelt one is a load
 * error, as in jinja2. Statements: if/elif/else, for (with tuple targets, an
 * `if` filter and `else`), set (plain, tuple, namespace attribute and block
 * form), macro, with, break/continue (loopcontrols), generation (the
 * transformers extension, rendered as its body), raw (handled by the lexer)
 * and print. Nesting is bounded so hostile input cannot exhaust the stack. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "jinja_internal.h"

#define PARSE_MAX_DEPTH 200

typedef struct parser {
    const jtoks *toks;
    size_t i;
    jarena *arena;
    jthrow *thrower;
    int depth; /* recursion, for the stack bound */
    int loops; /* enclosing for loops, for break/continue */
} parser;

/* ---- tokens ---- */

static const jtok *cur(const parser *p) { return &p->toks->v[p->i]; }
static const jtok *look(const parser *p) { return &p->toks->v[p->i + (p->i + 1 < p->toks->n)]; }
static const jtok *take(parser *p) {
    const jtok *t = cur(p);
    if (t->kind != JT_EOF) p->i++;
    return t;
}

static bool is_name(const jtok *t, const char *name) {
    return t->kind == JT_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}
static bool is_op(const jtok *t, int op) { return t->kind == JT_OP && t->op == op; }

static void describe(const jtok *t, char *buf, size_t size) {
    switch (t->kind) {
    case JT_EOF: snprintf(buf, size, "end of template"); break;
    case JT_TEXT: snprintf(buf, size, "template text"); break;
    case JT_VAR_BEGIN: snprintf(buf, size, "'{{'"); break;
    case JT_VAR_END: snprintf(buf, size, "end of print statement"); break;
    case JT_BLOCK_BEGIN: snprintf(buf, size, "'{%%'"); break;
    case JT_BLOCK_END: snprintf(buf, size, "end of statement block"); break;
    case JT_NAME: snprintf(buf, size, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p); break;
    case JT_STRING: snprintf(buf, size, "string"); break;
    case JT_INT:
    case JT_FLOAT: snprintf(buf, size, "number"); break;
    case JT_OP: {
        static const char *two[] = {"//", "**", "==", "!=", ">=", "<="};
        if (t->op >= JOP_FLOORDIV && t->op <= JOP_LE) snprintf(buf, size, "'%s'", two[t->op - JOP_FLOORDIV]);
        else snprintf(buf, size, "'%c'", (char)t->op);
        break;
    }
    }
}

__attribute__((format(printf, 3, 4))) _Noreturn static void fail_at(parser *p, const jtok *t, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jthrow_fail(p->thrower, "line %d, column %d: %s", t->line, t->col, msg);
}

_Noreturn static void fail_unexpected(parser *p, const char *expected) {
    char what[64];
    describe(cur(p), what, sizeof what);
    if (expected) fail_at(p, cur(p), "expected %s, got %s", expected, what);
    fail_at(p, cur(p), "unexpected %s", what);
}

static void expect_op(parser *p, int op, const char *text) {
    if (!is_op(cur(p), op)) fail_unexpected(p, text);
    take(p);
}

static const jtok *expect_name(parser *p) {
    if (cur(p)->kind != JT_NAME) fail_unexpected(p, "a name");
    return take(p);
}

static void expect_block_end(parser *p) {
    if (cur(p)->kind != JT_BLOCK_END) fail_unexpected(p, "end of statement block");
    take(p);
}

static void enter(parser *p) {
    if (++p->depth > PARSE_MAX_DEPTH) fail_at(p, cur(p), "template nested more than %d levels deep", PARSE_MAX_DEPTH);
}
static void leave(parser *p) { p->depth--; }

/* ---- nodes ---- */

static jnode *node(parser *p, jnode_kind kind, const jtok *at) {
    jnode *n = jarena_alloc(p->arena, sizeof *n);
    n->kind = kind;
    n->line = at->line;
    return n;
}

static void nodes_push(parser *p, jnodes *list, jnode *n) {
    if (list->n == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 4;
        jnode **v = jarena_alloc(p->arena, cap * sizeof *v);
        if (list->n) memcpy(v, list->v, list->n * sizeof *v);
        list->v = v;
        list->cap = cap;
    }
    list->v[list->n++] = n;
}

static jv tok_str(const jtok *t) { return jv_str(t->p, t->n); }

/* ---- expressions ---- */

static jnode *parse_expression(parser *p);
static jnode *parse_or(parser *p);
static jnode *parse_unary(parser *p, bool with_filter);
static jnode *parse_primary(parser *p);
static jnode *parse_postfix(parser *p, jnode *n);

static bool is_tuple_end(const parser *p) {
    const jtok *t = cur(p);
    return t->kind == JT_VAR_END || t->kind == JT_BLOCK_END || is_op(t, ')') || is_name(t, "recursive");
}

/* Comma-separated expressions: one alone is itself, more (or a trailing comma)
 * make a tuple. with_condexpr false leaves a following `if` to the caller (the
 * filter of a for loop). */
static jnode *parse_tuple(parser *p, bool with_condexpr, bool explicit_parens) {
    const jtok *start = cur(p);
    jnode *tuple = node(p, JN_TUPLE, start);
    bool is_tuple = false;
    for (;;) {
        if (tuple->list.n) expect_op(p, ',', "','");
        if (is_tuple_end(p)) break;
        nodes_push(p, &tuple->list, with_condexpr ? parse_expression(p) : parse_or(p));
        if (!is_op(cur(p), ',')) break;
        is_tuple = true;
    }
    if (is_tuple) return tuple;
    if (tuple->list.n) return tuple->list.v[0];
    if (!explicit_parens) fail_unexpected(p, "an expression");
    return tuple;
}

static void parse_call_args(parser *p, jnode *call) {
    expect_op(p, '(', "'('");
    while (!is_op(cur(p), ')')) {
        if (call->list.n || call->kwargs.n) {
            expect_op(p, ',', "',' or ')'");
            if (is_op(cur(p), ')')) break;
        }
        if (is_op(cur(p), '*') || is_op(cur(p), JOP_POW)) fail_at(p, cur(p), "*args and **kwargs in calls are not supported");
        if (cur(p)->kind == JT_NAME && is_op(look(p), '=')) {
            const jtok *key = take(p);
            take(p);
            jnode *kw = node(p, JN_KWARG, key);
            kw->value = tok_str(key);
            kw->a = parse_expression(p);
            nodes_push(p, &call->kwargs, kw);
        } else {
            if (call->kwargs.n) fail_at(p, cur(p), "positional argument after a keyword argument");
            nodes_push(p, &call->list, parse_expression(p));
        }
    }
    expect_op(p, ')', "')'");
}

/* A dotted name after `|` or `is`. */
static jv parse_dotted_name(parser *p) {
    const jtok *t = expect_name(p);
    jv name = tok_str(t);
    while (is_op(cur(p), '.')) {
        take(p);
        const jtok *part = expect_name(p);
        jsb b;
        jsb_init(&b, p->arena, 0);
        jsb_put(&b, name.u.s.p, name.u.s.n);
        jsb_putc(&b, '.');
        jsb_put(&b, part->p, part->n);
        name = jsb_value(&b);
    }
    return name;
}

static jnode *parse_filter(parser *p, jnode *operand) {
    const jtok *at = cur(p);
    jnode *f = node(p, JN_FILTER, at);
    f->a = operand;
    f->value = parse_dotted_name(p);
    f->builtin = jbuiltin_filter(f->value.u.s.p, f->value.u.s.n);
    if (!f->builtin) fail_at(p, at, "no filter named '%.*s'", (int)f->value.u.s.n, f->value.u.s.p);
    if (is_op(cur(p), '(')) parse_call_args(p, f);
    return f;
}

static bool starts_test_arg(const jtok *t) {
    if (t->kind == JT_NAME) return !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and");
    return t->kind == JT_STRING || t->kind == JT_INT || t->kind == JT_FLOAT || is_op(t, '(') || is_op(t, '[') ||
           is_op(t, '{');
}

/* `is [not] name`, with arguments in parentheses or one bare argument (`is divisibleby 3`). */
static jnode *parse_test(parser *p, jnode *operand) {
    const jtok *is = take(p);
    bool negated = is_name(cur(p), "not");
    if (negated) take(p);
    const jtok *at = cur(p);
    jnode *t = node(p, JN_TEST, at);
    t->a = operand;
    t->value = parse_dotted_name(p);
    t->builtin = jbuiltin_test(t->value.u.s.p, t->value.u.s.n);
    if (!t->builtin) fail_at(p, at, "no test named '%.*s'", (int)t->value.u.s.n, t->value.u.s.p);
    if (is_op(cur(p), '(')) parse_call_args(p, t);
    else if (starts_test_arg(cur(p))) {
        if (is_name(cur(p), "is")) fail_at(p, cur(p), "tests cannot be chained with 'is'");
        nodes_push(p, &t->list, parse_postfix(p, parse_primary(p)));
    }
    if (!negated) return t;
    jnode *not = node(p, JN_NOT, is);
    not->a = t;
    return not;
}

/* The inside of [...]: an index or a slice start:stop:step. */
static jnode *parse_subscribed(parser *p) {
    const jtok *at = cur(p);
    jnode *parts[3] = {NULL, NULL, NULL};
    if (is_op(cur(p), ':')) take(p);
    else {
        jnode *index = parse_expression(p);
        if (!is_op(cur(p), ':')) return index;
        take(p);
        parts[0] = index;
    }
    if (!is_op(cur(p), ']') && !is_op(cur(p), ',') && !is_op(cur(p), ':')) parts[1] = parse_expression(p);
    if (is_op(cur(p), ':')) {
        take(p);
        if (!is_op(cur(p), ']') && !is_op(cur(p), ',')) parts[2] = parse_expression(p);
    }
    jnode *slice = node(p, JN_SLICE, at);
    for (int k = 0; k < 3; k++) nodes_push(p, &slice->list, parts[k]);
    return slice;
}

static jnode *parse_subscript(parser *p, jnode *object) {
    const jtok *at = take(p);
    if (at->op == '.') {
        const jtok *attr = take(p);
        if (attr->kind == JT_NAME) {
            jnode *n = node(p, JN_ATTR, attr);
            n->a = object;
            n->value = tok_str(attr);
            return n;
        }
        if (attr->kind != JT_INT) fail_at(p, attr, "expected a name or number after '.'");
        jnode *n = node(p, JN_ITEM, attr), *index = node(p, JN_CONST, attr);
        index->value = jv_int(attr->i);
        n->a = object;
        n->b = index;
        return n;
    }
    jnode *tuple = node(p, JN_TUPLE, at);
    while (!is_op(cur(p), ']')) {
        if (tuple->list.n) expect_op(p, ',', "',' or ']'");
        nodes_push(p, &tuple->list, parse_subscribed(p));
    }
    expect_op(p, ']', "']'");
    for (size_t i = 0; tuple->list.n > 1 && i < tuple->list.n; i++)
        if (tuple->list.v[i]->kind == JN_SLICE) fail_at(p, at, "a slice inside a tuple subscript is not supported");
    jnode *index = tuple->list.n == 1 ? tuple->list.v[0] : tuple;
    if (index->kind == JN_SLICE) {
        index->a = object;
        return index;
    }
    jnode *n = node(p, JN_ITEM, at);
    n->a = object;
    n->b = index;
    return n;
}

static jnode *parse_postfix(parser *p, jnode *n) {
    for (;;) {
        if (is_op(cur(p), '.') || is_op(cur(p), '[')) n = parse_subscript(p, n);
        else if (is_op(cur(p), '(')) {
            jnode *call = node(p, JN_CALL, cur(p));
            call->a = n;
            parse_call_args(p, call);
            n = call;
        } else return n;
    }
}

static jnode *parse_filter_expr(parser *p, jnode *n) {
    for (;;) {
        if (is_op(cur(p), '|')) {
            take(p);
            n = parse_filter(p, n);
        } else if (is_name(cur(p), "is")) n = parse_test(p, n);
        else if (is_op(cur(p), '(')) {
            jnode *call = node(p, JN_CALL, cur(p));
            call->a = n;
            parse_call_args(p, call);
            n = call;
        } else return n;
    }
}

static jnode *parse_list_literal(parser *p) {
    jnode *n = node(p, JN_LIST, take(p));
    while (!is_op(cur(p), ']')) {
        if (n->list.n) {
            expect_op(p, ',', "',' or ']'");
            if (is_op(cur(p), ']')) break;
        }
        nodes_push(p, &n->list, parse_expression(p));
    }
    expect_op(p, ']', "']'");
    return n;
}

static jnode *parse_dict_literal(parser *p) {
    jnode *n = node(p, JN_DICT, take(p));
    while (!is_op(cur(p), '}')) {
        if (n->list.n) {
            expect_op(p, ',', "',' or '}'");
            if (is_op(cur(p), '}')) break;
        }
        nodes_push(p, &n->list, parse_expression(p));
        expect_op(p, ':', "':'");
        nodes_push(p, &n->list, parse_expression(p));
    }
    expect_op(p, '}', "'}'");
    return n;
}

static jnode *parse_primary(parser *p) {
    enter(p);
    const jtok *t = cur(p);
    jnode *n;
    if (t->kind == JT_NAME) {
        take(p);
        n = node(p, JN_CONST, t);
        if (is_name(t, "true") || is_name(t, "True")) n->value = jv_bool(true);
        else if (is_name(t, "false") || is_name(t, "False")) n->value = jv_bool(false);
        else if (is_name(t, "none") || is_name(t, "None")) n->value = jv_none();
        else {
            n->kind = JN_NAME;
            n->value = tok_str(t);
        }
    } else if (t->kind == JT_STRING) {
        jsb b; /* adjacent strings join, as in Python */
        jsb_init(&b, p->arena, 0);
        while (cur(p)->kind == JT_STRING) {
            jsb_put(&b, cur(p)->p, cur(p)->n);
            take(p);
        }
        n = node(p, JN_CONST, t);
        n->value = jsb_value(&b);
    } else if (t->kind == JT_INT || t->kind == JT_FLOAT) {
        take(p);
        n = node(p, JN_CONST, t);
        n->value = t->kind == JT_INT ? jv_int(t->i) : jv_float(t->f);
    } else if (is_op(t, '(')) {
        take(p);
        n = parse_tuple(p, true, true);
        expect_op(p, ')', "')'");
    } else if (is_op(t, '[')) n = parse_list_literal(p);
    else if (is_op(t, '{')) n = parse_dict_literal(p);
    else fail_unexpected(p, "an expression");
    leave(p);
    return n;
}

static jnode *parse_unary(parser *p, bool with_filter) {
    enter(p);
    const jtok *t = cur(p);
    jnode *n;
    if (is_op(t, '-') || is_op(t, '+')) {
        take(p);
        n = node(p, t->op == '-' ? JN_NEG : JN_POS, t);
        n->a = parse_unary(p, false);
    } else n = parse_primary(p);
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    leave(p);
    return n;
}

static jnode *binop(parser *p, const jtok *at, int op, jnode *a, jnode *b) {
    jnode *n = node(p, JN_BINOP, at);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(parser *p) {
    jnode *n = parse_unary(p, true);
    while (is_op(cur(p), JOP_POW)) {
        const jtok *at = take(p);
        n = binop(p, at, JOP_POW, n, parse_unary(p, true));
    }
    return n;
}

static jnode *parse_math2(parser *p) {
    jnode *n = parse_pow(p);
    while (is_op(cur(p), '*') || is_op(cur(p), '/') || is_op(cur(p), JOP_FLOORDIV) || is_op(cur(p), '%')) {
        const jtok *at = take(p);
        n = binop(p, at, at->op, n, parse_pow(p));
    }
    return n;
}

static jnode *parse_concat(parser *p) {
    jnode *n = parse_math2(p);
    while (is_op(cur(p), '~')) {
        const jtok *at = take(p);
        n = binop(p, at, '~', n, parse_math2(p));
    }
    return n;
}

static jnode *parse_math1(parser *p) {
    jnode *n = parse_concat(p);
    while (is_op(cur(p), '+') || is_op(cur(p), '-')) {
        const jtok *at = take(p);
        n = binop(p, at, at->op, n, parse_concat(p));
    }
    return n;
}

static int compare_op(const parser *p) {
    const jtok *t = cur(p);
    if (t->kind == JT_OP && (t->op == JOP_EQ || t->op == JOP_NE || t->op == JOP_GE || t->op == JOP_LE || t->op == '<' ||
                             t->op == '>'))
        return t->op;
    if (is_name(t, "in")) return JOP_IN;
    if (is_name(t, "not") && is_name(look(p), "in")) return JOP_NOTIN;
    return 0;
}

static jnode *parse_compare(parser *p) {
    jnode *first = parse_math1(p);
    int op = compare_op(p);
    if (!op) return first;
    jnode *n = node(p, JN_COMPARE, cur(p));
    n->a = first;
    size_t cap = 0;
    for (; op; op = compare_op(p)) {
        take(p);
        if (op == JOP_NOTIN) take(p);
        if (n->list.n == cap) {
            cap = cap ? 2 * cap : 2;
            int *ops = jarena_alloc(p->arena, cap * sizeof *ops);
            if (n->list.n) memcpy(ops, n->ops, n->list.n * sizeof *ops);
            n->ops = ops;
        }
        n->ops[n->list.n] = op;
        nodes_push(p, &n->list, parse_math1(p));
    }
    return n;
}

static jnode *parse_not(parser *p) {
    if (!is_name(cur(p), "not")) return parse_compare(p);
    enter(p);
    jnode *n = node(p, JN_NOT, take(p));
    n->a = parse_not(p);
    leave(p);
    return n;
}

static jnode *parse_and(parser *p) {
    jnode *n = parse_not(p);
    while (is_name(cur(p), "and")) {
        jnode *and = node(p, JN_AND, take(p));
        and->a = n;
        and->b = parse_not(p);
        n = and;
    }
    return n;
}

static jnode *parse_or(parser *p) {
    jnode *n = parse_and(p);
    while (is_name(cur(p), "or")) {
        jnode *or = node(p, JN_OR, take(p));
        or->a = n;
        or->b = parse_and(p);
        n = or;
    }
    return n;
}

static jnode *parse_expression(parser *p) {
    enter(p);
    jnode *n = parse_or(p);
    while (is_name(cur(p), "if")) {
        jnode *cond = node(p, JN_COND, take(p));
        cond->b = n;
        cond->a = parse_or(p);
        if (is_name(cur(p), "else")) {
            take(p);
            cond->c = parse_expression(p);
        }
        n = cond;
    }
    leave(p);
    return n;
}

/* ---- assignment targets ---- */

/* A name, or names separated by commas (optionally in parentheses) when tuples
 * are allowed: `for key, value in ...`, `set a, b = ...`. */
static jnode *parse_target(parser *p, bool allow_tuple) {
    const jtok *at = cur(p);
    bool parens = allow_tuple && is_op(at, '(');
    if (parens) take(p);
    jnode *tuple = node(p, JN_TUPLE, at);
    bool trailing_comma = false;
    for (;;) {
        const jtok *name = expect_name(p);
        jnode *n = node(p, JN_NAME, name);
        n->value = tok_str(name);
        nodes_push(p, &tuple->list, n);
        if (!allow_tuple || !is_op(cur(p), ',')) break;
        take(p);
        trailing_comma = true;
        if (cur(p)->kind != JT_NAME || is_name(cur(p), "in")) break;
        trailing_comma = false;
    }
    if (parens) expect_op(p, ')', "')'");
    return tuple->list.n == 1 && !trailing_comma ? tuple->list.v[0] : tuple;
}

/* ---- statements ---- */

static void parse_body(parser *p, jnodes *body, const char *const *end_names);
static jnode *parse_statement(parser *p);

/* Reads `{% name %}` that closes a block (the `{%` is already consumed). */
static void expect_end_tag(parser *p, const char *name) {
    if (!is_name(cur(p), name)) fail_unexpected(p, name);
    take(p);
    expect_block_end(p);
}

static jnode *parse_if(parser *p, const jtok *at) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    jnode *n = node(p, JN_IF, at);
    n->a = parse_tuple(p, false, false);
    expect_block_end(p);
    parse_body(p, &n->list, ends);
    if (is_name(cur(p), "elif")) {
        nodes_push(p, &n->alt, parse_if(p, take(p)));
        return n; /* the nested if consumed the endif */
    }
    if (is_name(cur(p), "else")) {
        static const char *const endif[] = {"endif", NULL};
        take(p);
        expect_block_end(p);
        parse_body(p, &n->alt, endif);
    }
    expect_end_tag(p, "endif");
    return n;
}

static jnode *parse_for(parser *p, const jtok *at) {
    static const char *const ends[] = {"endfor", "else", NULL}, *const endfor[] = {"endfor", NULL};
    jnode *n = node(p, JN_FOR, at);
    n->a = parse_target(p, true);
    if (!is_name(cur(p), "in")) fail_unexpected(p, "'in'");
    take(p);
    n->b = parse_tuple(p, false, false);
    if (is_name(cur(p), "if")) {
        take(p);
        n->c = parse_expression(p);
    }
    if (is_name(cur(p), "recursive")) fail_at(p, cur(p), "recursive loops are not supported");
    expect_block_end(p);
    p->loops++;
    parse_body(p, &n->list, ends);
    p->loops--;
    if (is_name(cur(p), "else")) {
        take(p);
        expect_block_end(p);
        parse_body(p, &n->alt, endfor);
    }
    expect_end_tag(p, "endfor");
    return n;
}

static jnode *parse_set(parser *p, const jtok *at) {
    jnode *n = node(p, JN_SET, at);
    if (cur(p)->kind == JT_NAME && is_op(look(p), '.')) { /* ns.attr = ... */
        const jtok *name = take(p);
        take(p);
        const jtok *attr = expect_name(p);
        jnode *ns = node(p, JN_NAME, name), *target = node(p, JN_ATTR, attr);
        ns->value = tok_str(name);
        target->a = ns;
        target->value = tok_str(attr);
        n->a = target;
    } else n->a = parse_target(p, true);
    if (is_op(cur(p), '=')) {
        take(p);
        n->b = parse_tuple(p, true, false);
        expect_block_end(p);
        return n;
    }
    if (n->a->kind != JN_NAME) fail_at(p, at, "a block set needs a single name");
    if (is_op(cur(p), '|')) fail_at(p, cur(p), "filters on a block set are not supported");
    static const char *const ends[] = {"endset", NULL};
    expect_block_end(p);
    n->kind = JN_SET_BLOCK;
    parse_body(p, &n->list, ends);
    expect_end_tag(p, "endset");
    return n;
}

static jnode *parse_macro(parser *p, const jtok *at) {
    static const char *const ends[] = {"endmacro", NULL};
    jnode *n = node(p, JN_MACRO, at);
    n->value = tok_str(expect_name(p));
    expect_op(p, '(', "'('");
    while (!is_op(cur(p), ')')) {
        if (n->kwargs.n) expect_op(p, ',', "',' or ')'");
        const jtok *name = expect_name(p);
        jnode *param = node(p, JN_KWARG, name);
        param->value = tok_str(name);
        if (is_op(cur(p), '=')) {
            take(p);
            param->a = parse_expression(p);
        } else if (n->kwargs.n && n->kwargs.v[n->kwargs.n - 1]->a)
            fail_at(p, name, "parameter without a default after one with a default");
        nodes_push(p, &n->kwargs, param);
    }
    take(p);
    expect_block_end(p);
    int loops = p->loops;
    p->loops = 0;
    parse_body(p, &n->list, ends);
    p->loops = loops;
    expect_end_tag(p, "endmacro");
    return n;
}

static jnode *parse_with(parser *p, const jtok *at) {
    static const char *const ends[] = {"endwith", NULL};
    jnode *n = node(p, JN_WITH, at);
    while (cur(p)->kind != JT_BLOCK_END) {
        if (n->kwargs.n) expect_op(p, ',', "','");
        const jtok *name = expect_name(p);
        jnode *assign = node(p, JN_KWARG, name);
        assign->value = tok_str(name);
        expect_op(p, '=', "'='");
        assign->a = parse_expression(p);
        nodes_push(p, &n->kwargs, assign);
    }
    take(p);
    parse_body(p, &n->list, ends);
    expect_end_tag(p, "endwith");
    return n;
}

static jnode *parse_simple_block(parser *p, const jtok *at, const char *end) {
    const char *ends[] = {end, NULL};
    jnode *n = node(p, JN_BLOCK, at);
    expect_block_end(p);
    parse_body(p, &n->list, ends);
    expect_end_tag(p, end);
    return n;
}

/* One `{% ... %}` statement; the `{%` is consumed and the tag name is current. */
static jnode *parse_statement(parser *p) {
    const jtok *at = cur(p);
    if (at->kind != JT_NAME) fail_unexpected(p, "a tag name");
    take(p);
    if (is_name(at, "if")) return parse_if(p, at);
    if (is_name(at, "for")) return parse_for(p, at);
    if (is_name(at, "set")) return parse_set(p, at);
    if (is_name(at, "macro")) return parse_macro(p, at);
    if (is_name(at, "with")) return parse_with(p, at);
    if (is_name(at, "generation")) return parse_simple_block(p, at, "endgeneration");
    if (is_name(at, "break") || is_name(at, "continue")) {
        if (!p->loops) fail_at(p, at, "'%.*s' outside of a loop", (int)at->n, at->p);
        expect_block_end(p);
        return node(p, is_name(at, "break") ? JN_BREAK : JN_CONTINUE, at);
    }
    if (is_name(at, "print")) {
        jnode *n = node(p, JN_OUTPUT, at);
        n->a = parse_tuple(p, true, false);
        expect_block_end(p);
        return n;
    }
    static const char *const unsupported[] = {"block", "extends", "include", "import", "from", "call",
                                              "filter", "autoescape", "do", NULL};
    for (const char *const *u = unsupported; *u; u++)
        if (is_name(at, *u)) fail_at(p, at, "the '%s' tag is not supported", *u);
    fail_at(p, at, "unknown tag '%.*s'", (int)at->n, at->p);
}

static bool is_end_name(const jtok *t, const char *const *end_names) {
    for (; end_names && *end_names; end_names++)
        if (is_name(t, *end_names)) return true;
    return false;
}

/* The end tag among the names a body may stop at ("endif" of elif/else/endif). */
static const char *closing_name(const char *const *end_names) {
    for (const char *const *n = end_names; *n; n++)
        if (strncmp(*n, "end", 3) == 0) return *n;
    return end_names[0];
}

static bool closes_a_block(const jtok *t) {
    return t->kind == JT_NAME && ((t->n > 3 && memcmp(t->p, "end", 3) == 0) || is_name(t, "else") || is_name(t, "elif"));
}

/* Statements until EOF (end_names NULL) or until `{%` followed by one of
 * end_names, which is left as the current token. */
static void parse_body(parser *p, jnodes *body, const char *const *end_names) {
    enter(p);
    for (;;) {
        const jtok *t = cur(p);
        if (t->kind == JT_EOF) {
            if (end_names) fail_at(p, t, "unexpected end of template, expected '%s'", closing_name(end_names));
            break;
        }
        if (t->kind == JT_TEXT) {
            jnode *n = node(p, JN_TEXT, take(p));
            n->value = tok_str(t);
            nodes_push(p, body, n);
        } else if (t->kind == JT_VAR_BEGIN) {
            take(p);
            jnode *n = node(p, JN_OUTPUT, t);
            n->a = parse_tuple(p, true, false);
            if (cur(p)->kind != JT_VAR_END) fail_unexpected(p, "end of print statement");
            take(p);
            nodes_push(p, body, n);
        } else if (t->kind == JT_BLOCK_BEGIN) {
            take(p);
            if (is_end_name(cur(p), end_names)) break;
            if (closes_a_block(cur(p))) {
                if (end_names)
                    fail_at(p, cur(p), "unexpected '%.*s', expected '%s'", (int)cur(p)->n, cur(p)->p, closing_name(end_names));
                fail_at(p, cur(p), "unexpected '%.*s' with no block open", (int)cur(p)->n, cur(p)->p);
            }
            nodes_push(p, body, parse_statement(p));
        } else fail_unexpected(p, NULL);
    }
    leave(p);
}

void jparse(const jtoks *toks, jarena *a, jnodes *body, jthrow *t) {
    parser p = {.toks = toks, .arena = a, .thrower = t};
    parse_body(&p, body, NULL);
}
