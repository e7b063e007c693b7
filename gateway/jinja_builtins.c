/* jinja_builtins.c — the filters, tests, global functions and methods that
 * chat templates call, each written to match what jinja2 (and Python's str
 * and dict methods under jinja2's ImmutableSandboxedEnvironment) return.
 *
 * A builtin gets the render context, its receiver (the filtered or tested
 * value, the object of a method, nothing for a global) and the call's
 * arguments; bind() maps positional and keyword arguments onto the parameter
 * names Python would use, so `x|tojson(indent=2)` and `s.split(',', 1)` both
 * work. Filters that jinja2 applies to str(value) (trim, upper, replace, ...)
 * do the same here, so they accept numbers and render Undefined as "".
 *
 * tojson is transformers' version: json.dumps(x, ensure_ascii=False,
 * indent=None, separators=None, sort_keys=False), not jinja2's HTML-safe one.
 * raise_exception(msg) ends the render with msg as the whole error message.
 * range() is capped at 100000 items like jinja2's sandbox. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_internal.h"

/* ---- arguments ---- */

static const char NOT_GIVEN[] = "argument not given";
static bool given(jv v) { return !(v.kind == JV_UNDEFINED && v.u.s.p == NOT_GIVEN); }

/* Binds positional and keyword arguments to params[0..np) like a Python call:
 * out[i] is the argument for params[i], or NOT_GIVEN. */
static void bind(jctx *c, const jargs *a, const char *what, const char *const *params, size_t np, jv *out) {
    if (a->n > np) jfail(c, "%s() takes at most %zu argument(s) (%zu given)", what, np, a->n);
    for (size_t i = 0; i < np; i++) out[i] = i < a->n ? a->pos[i] : jv_undefined(NOT_GIVEN);
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i = 0;
        while (i < np && !jv_str_eq(a->kwnames[k], params[i])) i++;
        if (i == np)
            jfail(c, "%s() got an unexpected keyword argument '%.*s'", what, (int)a->kwnames[k].u.s.n, a->kwnames[k].u.s.p);
        if (i < a->n) jfail(c, "%s() got multiple values for argument '%s'", what, params[i]);
        out[i] = a->kw[k];
    }
}

#define PARAMS(...) (const char *const[]){__VA_ARGS__}, sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define BIND(c, a, what, out, ...) bind(c, a, what, PARAMS(__VA_ARGS__), out)

static void no_args(jctx *c, const jargs *a, const char *what) {
    if (a->n || a->nkw) jfail(c, "%s() takes no arguments", what);
}

static jv or_default(jv v, jv dflt) { return given(v) ? v : dflt; }

_Noreturn static void fail_undefined_value(jctx *c, jv v) {
    if (v.u.s.p && v.u.s.p != NOT_GIVEN) jfail(c, "%.*s", (int)v.u.s.n, v.u.s.p);
    jfail(c, "undefined value");
}

static jv need_str(jctx *c, jv v, const char *what) {
    if (v.kind == JV_STR) return v;
    if (v.kind == JV_UNDEFINED) fail_undefined_value(c, v);
    jfail(c, "%s: expected a string, got %s", what, jv_type_name(v));
}

static int64_t need_int(jctx *c, jv v, const char *what) {
    if (v.kind == JV_INT) return v.u.i;
    if (v.kind == JV_BOOL) return v.u.b;
    if (v.kind == JV_UNDEFINED) fail_undefined_value(c, v);
    jfail(c, "%s: expected an integer, got %s", what, jv_type_name(v));
}

static jv soft_str(jctx *c, jv v) { return jv_to_str(c->arena, v); }

static jv new_str(jsb *b) { return jsb_value(b); }

static jv repeat_spaces(jctx *c, int64_t n) {
    if (n > 1024) jfail(c, "indent width %lld is too large", (long long)n);
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (int64_t i = 0; i < n; i++) jsb_putc(&b, ' ');
    return new_str(&b);
}

/* ---- strings ---- */

static bool cp_in(uint32_t cp, jv chars) {
    for (size_t i = 0; i < chars.u.s.n;)
        if (u8_next(chars.u.s.p, &i) == cp) return true;
    return false;
}

/* str.strip / lstrip / rstrip, with chars None meaning whitespace. */
static jv strip(jctx *c, jv s, jv chars, bool left, bool right) {
    bool ws = !given(chars) || chars.kind == JV_NONE;
    if (!ws) need_str(c, chars, "strip");
    jcharge(c, s.u.s.n / 64);
    size_t start = 0, end = s.u.s.n;
    while (left && start < end) {
        size_t next = start;
        uint32_t cp = u8_next(s.u.s.p, &next);
        if (ws ? !py_isspace(cp) : !cp_in(cp, chars)) break;
        start = next;
    }
    while (right && end > start) {
        size_t prev = end;
        uint32_t cp = u8_prev(s.u.s.p, &prev);
        if (ws ? !py_isspace(cp) : !cp_in(cp, chars)) break;
        end = prev;
    }
    return jv_str(s.u.s.p + start, end - start);
}

/* Case conversion of one character. Python uses Unicode's full mappings, in
 * which a few characters become two or three (ß -> SS, ﬁ -> FI); those are
 * here, the one-to-one rest comes from utf8proc. */
typedef enum { CASE_UPPER, CASE_LOWER, CASE_TITLE } case_mode;

static void put_cased(jsb *b, uint32_t cp, case_mode mode) {
    static const struct { uint32_t cp; const char *upper, *title; } special[] = {
        {0x00DF, "SS", "Ss"}, {0x0149, "\xCA\xBCN", "\xCA\xBCN"}, {0x01F0, "J\xCC\x8C", "J\xCC\x8C"},
        {0xFB00, "FF", "Ff"}, {0xFB01, "FI", "Fi"}, {0xFB02, "FL", "Fl"}, {0xFB03, "FFI", "Ffi"},
        {0xFB04, "FFL", "Ffl"}, {0xFB05, "ST", "St"}, {0xFB06, "ST", "St"},
    };
    if (mode == CASE_LOWER) {
        if (cp == 0x0130) return jsb_put(b, "i\xCC\x87", 3); /* İ -> i + combining dot above */
        return jsb_put_cp(b, py_lower(cp));
    }
    if (cp >= 0xDF)
        for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
            if (special[i].cp == cp) {
                const char *s = mode == CASE_UPPER ? special[i].upper : special[i].title;
                return jsb_put(b, s, strlen(s));
            }
    jsb_put_cp(b, mode == CASE_UPPER ? py_upper(cp) : py_title(cp));
}

static jv map_case(jctx *c, jv s, case_mode mode) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    jcharge(c, s.u.s.n / 64);
    for (size_t i = 0; i < s.u.s.n;) put_cased(&b, u8_next(s.u.s.p, &i), mode);
    return new_str(&b);
}

/* str.title(): a cased character after another cased one is lowered, others are title-cased. */
static jv py_title_str(jctx *c, jv s) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    bool prev_cased = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp = u8_next(s.u.s.p, &i);
        put_cased(&b, cp, prev_cased ? CASE_LOWER : CASE_TITLE);
        prev_cased = py_iscased(cp);
    }
    return new_str(&b);
}

/* str.capitalize(): the first character title-cased, the rest lowered. */
static jv py_capitalize(jctx *c, jv s) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (size_t i = 0; i < s.u.s.n;) {
        bool first = i == 0;
        uint32_t cp = u8_next(s.u.s.p, &i);
        put_cased(&b, cp, first ? CASE_TITLE : CASE_LOWER);
    }
    return new_str(&b);
}

/* jinja2's title filter: upper-case after start, whitespace, '-', '(', '{', '[' or '<'; lower elsewhere. */
static jv jinja_title(jctx *c, jv s) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    bool word_start = true;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp = u8_next(s.u.s.p, &i);
        bool sep = py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
        if (sep) jsb_put_cp(&b, cp);
        else put_cased(&b, cp, word_start ? CASE_UPPER : CASE_LOWER);
        word_start = sep;
    }
    return new_str(&b);
}

static const char *find_bytes(jv s, size_t from, jv sub) {
    if (from > s.u.s.n) return NULL;
    return memmem(s.u.s.p + from, s.u.s.n - from, sub.u.s.p, sub.u.s.n);
}

/* str.replace(old, new, count): an empty old inserts new around every character. */
static jv replace(jctx *c, jv s, jv old, jv rep, int64_t count) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    jcharge(c, s.u.s.n / 64);
    if (old.u.s.n == 0) {
        size_t i = 0;
        for (; i < s.u.s.n && count != 0; count--) {
            jsb_put(&b, rep.u.s.p, rep.u.s.n);
            size_t start = i;
            u8_next(s.u.s.p, &i);
            jsb_put(&b, s.u.s.p + start, i - start);
        }
        if (count != 0) jsb_put(&b, rep.u.s.p, rep.u.s.n);
        jsb_put(&b, s.u.s.p + i, s.u.s.n - i);
        return new_str(&b);
    }
    size_t i = 0;
    for (const char *hit; count != 0 && (hit = find_bytes(s, i, old)); count--) {
        size_t at = (size_t)(hit - s.u.s.p);
        jsb_put(&b, s.u.s.p + i, at - i);
        jsb_put(&b, rep.u.s.p, rep.u.s.n);
        i = at + old.u.s.n;
        jcharge(c, 1);
    }
    jsb_put(&b, s.u.s.p + i, s.u.s.n - i);
    return new_str(&b);
}

static bool is_space_at(jv s, size_t i, size_t *next) {
    *next = i;
    return py_isspace(u8_next(s.u.s.p, next));
}

/* str.split(sep=None, maxsplit=-1). */
static jv split(jctx *c, jv s, jv sep, int64_t maxsplit) {
    jlist *out = jlist_new(c->arena, 0);
    jcharge(c, s.u.s.n / 16);
    size_t i = 0, n = s.u.s.n, next;
    if (!given(sep) || sep.kind == JV_NONE) {
        for (;;) {
            while (i < n && is_space_at(s, i, &next)) i = next;
            if (i == n) break;
            if (maxsplit == 0) {
                jlist_push(c->arena, out, jv_str(s.u.s.p + i, n - i));
                break;
            }
            size_t j = i;
            while (j < n && !is_space_at(s, j, &next)) j = next;
            jlist_push(c->arena, out, jv_str(s.u.s.p + i, j - i));
            i = j;
            if (maxsplit > 0) maxsplit--;
        }
        return jv_list(out);
    }
    need_str(c, sep, "split");
    if (sep.u.s.n == 0) jfail(c, "empty separator");
    for (const char *hit; maxsplit != 0 && (hit = find_bytes(s, i, sep)); maxsplit--) {
        size_t at = (size_t)(hit - s.u.s.p);
        jlist_push(c->arena, out, jv_str(s.u.s.p + i, at - i));
        i = at + sep.u.s.n;
    }
    jlist_push(c->arena, out, jv_str(s.u.s.p + i, n - i));
    return jv_list(out);
}

/* str.rsplit(sep=None, maxsplit=-1): split() working from the right. */
static jv rsplit(jctx *c, jv s, jv sep, int64_t maxsplit) {
    jlist *rev = jlist_new(c->arena, 0);
    jcharge(c, s.u.s.n / 16);
    size_t end = s.u.s.n;
    bool ws = !given(sep) || sep.kind == JV_NONE;
    if (!ws) {
        need_str(c, sep, "rsplit");
        if (sep.u.s.n == 0) jfail(c, "empty separator");
    }
    for (;;) {
        if (ws) {
            while (end > 0) {
                size_t prev = end;
                if (!py_isspace(u8_prev(s.u.s.p, &prev))) break;
                end = prev;
            }
            if (end == 0) break;
        }
        if (maxsplit == 0) {
            jlist_push(c->arena, rev, jv_str(s.u.s.p, end));
            break;
        }
        size_t start = end;
        if (ws) {
            while (start > 0) {
                size_t prev = start;
                if (py_isspace(u8_prev(s.u.s.p, &prev))) break;
                start = prev;
            }
            jlist_push(c->arena, rev, jv_str(s.u.s.p + start, end - start));
            end = start;
        } else {
            const char *hit = NULL;
            for (size_t k = end; k >= sep.u.s.n && !hit; k--)
                if (memcmp(s.u.s.p + k - sep.u.s.n, sep.u.s.p, sep.u.s.n) == 0) hit = s.u.s.p + k - sep.u.s.n;
            if (!hit) {
                jlist_push(c->arena, rev, jv_str(s.u.s.p, end));
                break;
            }
            size_t at = (size_t)(hit - s.u.s.p);
            jlist_push(c->arena, rev, jv_str(s.u.s.p + at + sep.u.s.n, end - at - sep.u.s.n));
            end = at;
        }
        if (maxsplit > 0) maxsplit--;
    }
    jlist *out = jlist_new(c->arena, rev->n);
    for (size_t k = rev->n; k-- > 0;) out->items[out->n++] = rev->items[k];
    return jv_list(out);
}

static bool is_line_break(uint32_t cp) {
    return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D || cp == 0x1E ||
           cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

/* str.splitlines(keepends). */
static jlist *splitlines(jctx *c, jv s, bool keepends) {
    jlist *out = jlist_new(c->arena, 0);
    size_t start = 0, i = 0;
    while (i < s.u.s.n) {
        size_t at = i;
        uint32_t cp = u8_next(s.u.s.p, &i);
        if (!is_line_break(cp)) continue;
        if (cp == '\r' && i < s.u.s.n && s.u.s.p[i] == '\n') i++;
        jlist_push(c->arena, out, jv_str(s.u.s.p + start, (keepends ? i : at) - start));
        start = i;
    }
    if (start < s.u.s.n) jlist_push(c->arena, out, jv_str(s.u.s.p + start, s.u.s.n - start));
    return out;
}

/* startswith / endswith with a string or a tuple of strings. */
static bool affix_match(jctx *c, jv s, jv affix, bool at_end) {
    if (affix.kind == JV_LIST) {
        for (size_t i = 0; i < affix.u.list->n; i++)
            if (affix_match(c, s, affix.u.list->items[i], at_end)) return true;
        return false;
    }
    need_str(c, affix, at_end ? "endswith" : "startswith");
    if (affix.u.s.n > s.u.s.n) return false;
    return memcmp(s.u.s.p + (at_end ? s.u.s.n - affix.u.s.n : 0), affix.u.s.p, affix.u.s.n) == 0;
}

static int64_t count_sub(jv s, jv sub) {
    if (sub.u.s.n == 0) return (int64_t)u8_count(s.u.s.p, s.u.s.n) + 1;
    int64_t n = 0;
    for (size_t i = 0; find_bytes(s, i, sub);) {
        i = (size_t)(find_bytes(s, i, sub) - s.u.s.p) + sub.u.s.n;
        n++;
    }
    return n;
}

typedef bool (*cp_pred)(uint32_t);

static bool all_chars(jv s, cp_pred pred) {
    if (s.u.s.n == 0) return false;
    for (size_t i = 0; i < s.u.s.n;)
        if (!pred(u8_next(s.u.s.p, &i))) return false;
    return true;
}

/* str.islower() / isupper(): some cased character and none of the other case. */
static bool case_is(jv s, bool lower) {
    bool cased = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp = u8_next(s.u.s.p, &i);
        if (!py_iscased(cp)) continue;
        if (lower ? py_upper(cp) == cp && py_lower(cp) != cp : py_lower(cp) == cp && py_upper(cp) != cp) return false;
        cased = true;
    }
    return cased;
}

/* ---- str methods ---- */

static jv m_strip(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "strip", arg, "chars");
    return strip(c, self, arg[0], true, true);
}
static jv m_lstrip(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "lstrip", arg, "chars");
    return strip(c, self, arg[0], true, false);
}
static jv m_rstrip(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "rstrip", arg, "chars");
    return strip(c, self, arg[0], false, true);
}
static jv m_split(jctx *c, jv self, const jargs *a) {
    jv arg[2];
    BIND(c, a, "split", arg, "sep", "maxsplit");
    return split(c, self, arg[0], given(arg[1]) ? need_int(c, arg[1], "split") : -1);
}
static jv m_rsplit(jctx *c, jv self, const jargs *a) {
    jv arg[2];
    BIND(c, a, "rsplit", arg, "sep", "maxsplit");
    return rsplit(c, self, arg[0], given(arg[1]) ? need_int(c, arg[1], "rsplit") : -1);
}
static jv m_splitlines(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "splitlines", arg, "keepends");
    return jv_list(splitlines(c, self, given(arg[0]) && jv_truthy(arg[0])));
}
static jv m_startswith(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "startswith", arg, "prefix");
    if (!given(arg[0])) jfail(c, "startswith() takes at least 1 argument (0 given)");
    return jv_bool(affix_match(c, self, arg[0], false));
}
static jv m_endswith(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "endswith", arg, "suffix");
    if (!given(arg[0])) jfail(c, "endswith() takes at least 1 argument (0 given)");
    return jv_bool(affix_match(c, self, arg[0], true));
}
static jv m_upper(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "upper");
    return map_case(c, self, CASE_UPPER);
}
static jv m_lower(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "lower");
    return map_case(c, self, CASE_LOWER);
}
static jv m_title(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "title");
    return py_title_str(c, self);
}
static jv m_capitalize(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "capitalize");
    return py_capitalize(c, self);
}
static jv m_replace(jctx *c, jv self, const jargs *a) {
    jv arg[3];
    BIND(c, a, "replace", arg, "old", "new", "count");
    if (!given(arg[0]) || !given(arg[1])) jfail(c, "replace() takes at least 2 arguments");
    return replace(c, self, need_str(c, arg[0], "replace"), need_str(c, arg[1], "replace"),
                   given(arg[2]) ? need_int(c, arg[2], "replace") : -1);
}
static jv find_impl(jctx *c, jv self, const jargs *a, const char *what, bool from_right, bool must) {
    jv arg[1];
    bind(c, a, what, PARAMS("sub"), arg);
    jv sub = need_str(c, arg[0], what);
    const char *hit = NULL;
    if (!from_right) hit = find_bytes(self, 0, sub);
    else
        for (size_t k = self.u.s.n + 1; k-- > sub.u.s.n && !hit;)
            if (memcmp(self.u.s.p + k - sub.u.s.n, sub.u.s.p, sub.u.s.n) == 0) hit = self.u.s.p + k - sub.u.s.n;
    if (!hit && must) jfail(c, "substring not found");
    return jv_int(hit ? (int64_t)u8_count(self.u.s.p, (size_t)(hit - self.u.s.p)) : -1);
}
static jv m_find(jctx *c, jv self, const jargs *a) { return find_impl(c, self, a, "find", false, false); }
static jv m_rfind(jctx *c, jv self, const jargs *a) { return find_impl(c, self, a, "rfind", true, false); }
static jv m_index(jctx *c, jv self, const jargs *a) { return find_impl(c, self, a, "index", false, true); }
static jv m_count(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "count", arg, "sub");
    return jv_int(count_sub(self, need_str(c, arg[0], "count")));
}
static jv m_join(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "join", arg, "iterable");
    const jlist *items = jv_iterate(c, arg[0]);
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (size_t i = 0; i < items->n; i++) {
        if (items->items[i].kind != JV_STR)
            jfail(c, "sequence item %zu: expected str instance, %s found", i, jv_type_name(items->items[i]));
        if (i) jsb_put(&b, self.u.s.p, self.u.s.n);
        jsb_put(&b, items->items[i].u.s.p, items->items[i].u.s.n);
    }
    return new_str(&b);
}
static bool is_space_pred(uint32_t cp) { return py_isspace(cp); }
static jv m_isdigit(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "isdigit");
    return jv_bool(all_chars(self, py_isdigit));
}
static jv m_isalpha(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "isalpha");
    return jv_bool(all_chars(self, py_isalpha));
}
static jv m_isalnum(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "isalnum");
    return jv_bool(all_chars(self, py_isalnum));
}
static jv m_isspace(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "isspace");
    return jv_bool(all_chars(self, is_space_pred));
}
static jv m_islower(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "islower");
    return jv_bool(case_is(self, true));
}
static jv m_isupper(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "isupper");
    return jv_bool(case_is(self, false));
}

/* ---- list methods (the ones that do not modify the list) ---- */

static jv l_count(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "count", arg, "value");
    int64_t n = 0;
    for (size_t i = 0; i < self.u.list->n; i++) n += jv_equal(self.u.list->items[i], arg[0], 0);
    return jv_int(n);
}

static jv l_index(jctx *c, jv self, const jargs *a) {
    jv arg[1];
    BIND(c, a, "index", arg, "value");
    for (size_t i = 0; i < self.u.list->n; i++)
        if (jv_equal(self.u.list->items[i], arg[0], 0)) return jv_int((int64_t)i);
    jfail(c, "value is not in list");
}

/* ---- dict and loop methods ---- */

static jv pairs_of(jctx *c, const jdict *d) {
    jlist *out = jlist_new(c->arena, d->n);
    for (size_t i = 0; i < d->n; i++) {
        jlist *pair = jlist_new(c->arena, 2);
        pair->tuple = true;
        pair->items[0] = d->keys[i];
        pair->items[1] = d->vals[i];
        pair->n = 2;
        out->items[out->n++] = jv_list(pair);
    }
    return jv_list(out);
}

static jv m_items(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "items");
    return pairs_of(c, self.u.dict);
}
static jv m_keys(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "keys");
    jlist *out = jlist_new(c->arena, self.u.dict->n);
    memcpy(out->items, self.u.dict->keys, self.u.dict->n * sizeof(jv));
    out->n = self.u.dict->n;
    return jv_list(out);
}
static jv m_values(jctx *c, jv self, const jargs *a) {
    no_args(c, a, "values");
    jlist *out = jlist_new(c->arena, self.u.dict->n);
    memcpy(out->items, self.u.dict->vals, self.u.dict->n * sizeof(jv));
    out->n = self.u.dict->n;
    return jv_list(out);
}
static jv m_get(jctx *c, jv self, const jargs *a) {
    jv arg[2];
    BIND(c, a, "get", arg, "key", "default");
    if (!given(arg[0])) jfail(c, "get() takes at least 1 argument (0 given)");
    const jv *v = jdict_get(self.u.dict, arg[0]);
    return v ? *v : or_default(arg[1], jv_none());
}
static jv m_cycle(jctx *c, jv self, const jargs *a) {
    if (a->n == 0) jfail(c, "no items for cycling given");
    return a->pos[self.u.loop->index0 % a->n];
}

/* ---- tests ---- */

static jv t_defined(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "defined");
    return jv_bool(v.kind != JV_UNDEFINED);
}
static jv t_undefined(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "undefined");
    return jv_bool(v.kind == JV_UNDEFINED);
}
static jv t_none(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "none");
    return jv_bool(v.kind == JV_NONE);
}
static jv t_boolean(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "boolean");
    return jv_bool(v.kind == JV_BOOL);
}
static jv t_true(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "true");
    return jv_bool(v.kind == JV_BOOL && v.u.b);
}
static jv t_false(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "false");
    return jv_bool(v.kind == JV_BOOL && !v.u.b);
}
static jv t_integer(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "integer");
    return jv_bool(v.kind == JV_INT);
}
static jv t_float(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "float");
    return jv_bool(v.kind == JV_FLOAT);
}
static jv t_number(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "number");
    return jv_bool(jv_is_number(v));
}
static jv t_string(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "string");
    return jv_bool(v.kind == JV_STR);
}
static jv t_mapping(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "mapping");
    return jv_bool(v.kind == JV_DICT);
}
static jv t_iterable(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "iterable");
    return jv_bool(v.kind == JV_STR || v.kind == JV_LIST || v.kind == JV_DICT || v.kind == JV_UNDEFINED ||
                   v.kind == JV_LOOP);
}
static jv t_sequence(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "sequence");
    return jv_bool(v.kind == JV_STR || v.kind == JV_LIST || v.kind == JV_DICT || v.kind == JV_UNDEFINED);
}
static jv t_callable(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "callable");
    return jv_bool(v.kind == JV_FUNC || v.kind == JV_UNDEFINED);
}
static jv t_sameas(jctx *c, jv v, const jargs *a) {
    jv arg[1];
    BIND(c, a, "sameas", arg, "other");
    jv o = arg[0];
    if (v.kind != o.kind) return jv_bool(false);
    switch (v.kind) {
    case JV_NONE:
    case JV_UNDEFINED: return jv_bool(true);
    case JV_BOOL: return jv_bool(v.u.b == o.u.b);
    case JV_INT: return jv_bool(v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256); /* CPython's cached small ints */
    case JV_STR: return jv_bool(v.u.s.p == o.u.s.p && v.u.s.n == o.u.s.n);
    default: return jv_bool(v.u.list == o.u.list); /* the same list, dict, loop or function */
    }
}

static int compare_op_of(const char *name) {
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==")) return JOP_EQ;
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return JOP_NE;
    if (!strcmp(name, "lt") || !strcmp(name, "lessthan") || !strcmp(name, "<")) return '<';
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return JOP_LE;
    if (!strcmp(name, "gt") || !strcmp(name, "greaterthan") || !strcmp(name, ">")) return '>';
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return JOP_GE;
    return JOP_IN;
}

#define COMPARE_TEST(fn, name)                                      \
    static jv fn(jctx *c, jv v, const jargs *a) {                   \
        jv arg[1];                                                  \
        BIND(c, a, name, arg, "other");                             \
        return jv_bool(jcompare(c, compare_op_of(name), v, arg[0])); \
    }
COMPARE_TEST(t_eq, "eq")
COMPARE_TEST(t_ne, "ne")
COMPARE_TEST(t_lt, "lt")
COMPARE_TEST(t_le, "le")
COMPARE_TEST(t_gt, "gt")
COMPARE_TEST(t_ge, "ge")

static jv t_in(jctx *c, jv v, const jargs *a) {
    jv arg[1];
    BIND(c, a, "in", arg, "seq");
    return jv_bool(jcompare(c, JOP_IN, v, arg[0]));
}
static jv t_odd(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "odd");
    return jv_bool(need_int(c, v, "odd") % 2 != 0);
}
static jv t_even(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "even");
    return jv_bool(need_int(c, v, "even") % 2 == 0);
}
static jv t_divisibleby(jctx *c, jv v, const jargs *a) {
    jv arg[1];
    BIND(c, a, "divisibleby", arg, "num");
    int64_t d = need_int(c, arg[0], "divisibleby");
    if (d == 0) jfail(c, "integer division or modulo by zero");
    return jv_bool(d == -1 || need_int(c, v, "divisibleby") % d == 0);
}
static jv t_lower(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "lower");
    return jv_bool(case_is(soft_str(c, v), true));
}
static jv t_upper(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "upper");
    return jv_bool(case_is(soft_str(c, v), false));
}
static jv t_escaped(jctx *c, jv v, const jargs *a) {
    (void)v;
    no_args(c, a, "escaped");
    return jv_bool(false);
}
static jv t_filter(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "filter");
    return jv_bool(v.kind == JV_STR && jbuiltin_filter(v.u.s.p, v.u.s.n));
}
static jv t_test(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "test");
    return jv_bool(v.kind == JV_STR && jbuiltin_test(v.u.s.p, v.u.s.n));
}

/* ---- helpers shared by the filters ---- */

/* jinja2's attribute paths: "a.b.0" looks up a, then b, then item 0. */
static jv get_path(jctx *c, jv item, jv path) {
    need_str(c, path, "attribute");
    size_t start = 0;
    for (size_t i = 0; i <= path.u.s.n; i++) {
        if (i < path.u.s.n && path.u.s.p[i] != '.') continue;
        jv part = jv_str(path.u.s.p + start, i - start);
        bool digits = part.u.s.n > 0;
        for (size_t k = 0; k < part.u.s.n; k++) digits &= part.u.s.p[k] >= '0' && part.u.s.p[k] <= '9';
        if (digits && part.u.s.n < 18) part = jv_int(strtoll(jarena_strdup(c->arena, part.u.s.p, part.u.s.n), NULL, 10));
        if (item.kind == JV_UNDEFINED) return item;
        item = jv_getitem(c, item, part);
        start = i + 1;
    }
    return item;
}

/* The rest of a call's arguments after the first `skip` positional ones. */
static jargs rest_args(const jargs *a, size_t skip) {
    jargs r = *a;
    r.n = a->n > skip ? a->n - skip : 0;
    r.pos = a->n > skip ? a->pos + skip : NULL;
    return r;
}

static const jbuiltin *test_named(jctx *c, jv name) {
    need_str(c, name, "test name");
    const jbuiltin *t = jbuiltin_test(name.u.s.p, name.u.s.n);
    if (!t) jfail(c, "no test named '%.*s'", (int)name.u.s.n, name.u.s.p);
    return t;
}

/* select / reject / selectattr / rejectattr. */
static jv select_impl(jctx *c, jv seq, const jargs *a, bool by_attr, bool keep_when) {
    size_t skip = by_attr ? 1 : 0;
    if (by_attr && a->n < 1) jfail(c, "missing attribute name");
    const jbuiltin *test = a->n > skip ? test_named(c, a->pos[skip]) : NULL;
    jargs test_args = rest_args(a, skip + 1);
    if (a->nkw) jfail(c, "select filters take no keyword arguments");
    const jlist *items = jv_iterate(c, seq);
    jlist *out = jlist_new(c->arena, 0);
    for (size_t i = 0; i < items->n; i++) {
        jcharge(c, 1);
        jv value = by_attr ? get_path(c, items->items[i], a->pos[0]) : items->items[i];
        bool ok = test ? jv_truthy(test->fn(c, value, &test_args)) : jv_truthy(value);
        if (ok == keep_when) jlist_push(c->arena, out, items->items[i]);
    }
    return jv_list(out);
}

static bool key_less(jctx *c, jv x, jv y, bool case_sensitive) {
    if (!case_sensitive && x.kind == JV_STR && y.kind == JV_STR) {
        x = map_case(c, x, CASE_LOWER);
        y = map_case(c, y, CASE_LOWER);
    }
    return jcompare(c, '<', x, y);
}

/* Stable merge sort of items by keys (Python's sorted is stable). */
static void sort_by_keys(jctx *c, jv *items, jv *keys, size_t n, bool case_sensitive, bool reverse) {
    if (n < 2) return;
    size_t half = n / 2;
    sort_by_keys(c, items, keys, half, case_sensitive, reverse);
    sort_by_keys(c, items + half, keys + half, n - half, case_sensitive, reverse);
    jv *ti = jarena_alloc(c->arena, n * sizeof(jv)), *tk = jarena_alloc(c->arena, n * sizeof(jv));
    size_t i = 0, j = half, k = 0;
    while (i < half && j < n) {
        jcharge(c, 1);
        bool take_right = reverse ? key_less(c, keys[i], keys[j], case_sensitive) : key_less(c, keys[j], keys[i], case_sensitive);
        size_t from = take_right ? j++ : i++;
        ti[k] = items[from];
        tk[k++] = keys[from];
    }
    for (; i < half; i++, k++) ti[k] = items[i], tk[k] = keys[i];
    for (; j < n; j++, k++) ti[k] = items[j], tk[k] = keys[j];
    memcpy(items, ti, n * sizeof(jv));
    memcpy(keys, tk, n * sizeof(jv));
}

static jlist *copy_list(jctx *c, const jlist *l) {
    jlist *out = jlist_new(c->arena, l->n);
    if (l->n) memcpy(out->items, l->items, l->n * sizeof(jv));
    out->n = l->n;
    return out;
}

static jv *keys_of(jctx *c, const jlist *items, jv attribute) {
    jv *keys = jarena_alloc(c->arena, (items->n ? items->n : 1) * sizeof(jv));
    for (size_t i = 0; i < items->n; i++)
        keys[i] = given(attribute) && attribute.kind != JV_NONE ? get_path(c, items->items[i], attribute) : items->items[i];
    return keys;
}

static jv html_escape(jctx *c, jv s) {
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (size_t i = 0; i < s.u.s.n; i++) {
        switch (s.u.s.p[i]) {
        case '&': jsb_put(&b, "&amp;", 5); break;
        case '<': jsb_put(&b, "&lt;", 4); break;
        case '>': jsb_put(&b, "&gt;", 4); break;
        case '"': jsb_put(&b, "&#34;", 5); break;
        case '\'': jsb_put(&b, "&#39;", 5); break;
        default: jsb_putc(&b, s.u.s.p[i]);
        }
    }
    return new_str(&b);
}

/* Python's int(str): optional sign and surrounding whitespace, underscores between digits. */
static bool parse_int_str(jctx *c, jv s, int64_t base, int64_t *out) {
    jv t = strip(c, s, jv_undefined(NOT_GIVEN), true, true);
    char *p = jarena_strdup(c->arena, t.u.s.p, t.u.s.n), *q = p;
    size_t n = 0;
    for (size_t i = 0; i < t.u.s.n; i++) {
        if (p[i] == '_' && i > 0 && i + 1 < t.u.s.n && p[i - 1] != '_' && p[i + 1] != '_') continue;
        q[n++] = p[i];
    }
    q[n] = '\0';
    if (n == 0 || base < 2 || base > 36) return false;
    char *end;
    errno = 0;
    long long v = strtoll(q, &end, (int)base);
    if (*end || errno || q[0] == ' ' || (q[0] == '0' && base == 16 && n > 1 && (q[1] | 32) == 'x')) return false;
    *out = v;
    return true;
}

static bool parse_float_str(jctx *c, jv s, double *out) {
    jv t = strip(c, s, jv_undefined(NOT_GIVEN), true, true);
    char *p = jarena_strdup(c->arena, t.u.s.p, t.u.s.n), *end;
    if (!*p || strchr(p, 'x') || strchr(p, 'X')) return false;
    *out = strtod(p, &end);
    return *end == '\0';
}

/* ---- filters ---- */

static jv f_trim(jctx *c, jv v, const jargs *a) {
    jv arg[1];
    BIND(c, a, "trim", arg, "chars");
    return strip(c, soft_str(c, v), arg[0], true, true);
}
static jv f_upper(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "upper");
    return map_case(c, soft_str(c, v), CASE_UPPER);
}
static jv f_lower(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "lower");
    return map_case(c, soft_str(c, v), CASE_LOWER);
}
static jv f_title(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "title");
    return jinja_title(c, soft_str(c, v));
}
static jv f_capitalize(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "capitalize");
    return py_capitalize(c, soft_str(c, v));
}
static jv f_replace(jctx *c, jv v, const jargs *a) {
    jv arg[3];
    BIND(c, a, "replace", arg, "old", "new", "count");
    if (!given(arg[0]) || !given(arg[1])) jfail(c, "replace() takes at least 2 arguments");
    int64_t count = given(arg[2]) && arg[2].kind != JV_NONE ? need_int(c, arg[2], "replace") : -1;
    return replace(c, soft_str(c, v), soft_str(c, arg[0]), soft_str(c, arg[1]), count);
}
static jv f_string(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "string");
    return soft_str(c, v);
}
static jv f_safe(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "safe");
    return soft_str(c, v); /* Markup(value) is a str */
}
static jv f_escape(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "escape");
    return html_escape(c, soft_str(c, v));
}

static jv f_length(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "length");
    switch (v.kind) {
    case JV_STR: return jv_int((int64_t)u8_count(v.u.s.p, v.u.s.n));
    case JV_LIST: return jv_int((int64_t)v.u.list->n);
    case JV_DICT: return jv_int((int64_t)v.u.dict->n);
    case JV_UNDEFINED: return jv_int(0);
    case JV_LOOP: return jv_int((int64_t)v.u.loop->items->n);
    default: jfail(c, "object of type '%s' has no len()", jv_type_name(v));
    }
}

static jv f_default(jctx *c, jv v, const jargs *a) {
    jv arg[2];
    BIND(c, a, "default", arg, "default_value", "boolean");
    bool use = v.kind == JV_UNDEFINED || (given(arg[1]) && jv_truthy(arg[1]) && !jv_truthy(v));
    return use ? or_default(arg[0], jv_str("", 0)) : v;
}

static jv f_tojson(jctx *c, jv v, const jargs *a) {
    jv arg[4];
    BIND(c, a, "tojson", arg, "ensure_ascii", "indent", "separators", "sort_keys");
    jjson_opts o = {.ensure_ascii = given(arg[0]) && jv_truthy(arg[0]), .sort_keys = given(arg[3]) && jv_truthy(arg[3])};
    jv indent = or_default(arg[1], jv_none());
    if (indent.kind == JV_STR) {
        o.indent = indent.u.s.p;
        o.indent_n = indent.u.s.n;
    } else if (indent.kind == JV_INT || indent.kind == JV_BOOL) {
        int64_t n = need_int(c, indent, "tojson");
        if (n > 64) jfail(c, "tojson: indent %lld is too large", (long long)n);
        o.indent = "                                                                ";
        o.indent_n = n > 0 ? (size_t)n : 0;
    } else if (indent.kind != JV_NONE) jfail(c, "tojson: indent must be an integer or a string");
    o.item_sep = o.indent ? "," : ", ";
    o.key_sep = ": ";
    jv seps = or_default(arg[2], jv_none());
    if (seps.kind == JV_LIST && seps.u.list->n == 2) {
        jv item = need_str(c, seps.u.list->items[0], "tojson separators");
        jv key = need_str(c, seps.u.list->items[1], "tojson separators");
        o.item_sep = item.u.s.p;
        o.key_sep = key.u.s.p;
        o.item_sep_n = item.u.s.n;
        o.key_sep_n = key.u.s.n;
    } else if (seps.kind != JV_NONE) jfail(c, "tojson: separators must be a pair of strings");
    else {
        o.item_sep_n = strlen(o.item_sep);
        o.key_sep_n = strlen(o.key_sep);
    }
    jsb b;
    jsb_init(&b, c->arena, 0);
    jv bad;
    if (!jv_write_json(&b, v, &o, 0, 0, &bad)) {
        if (bad.kind == JV_UNDEFINED) fail_undefined_value(c, bad);
        jfail(c, "Object of type %s is not JSON serializable", jv_type_name(bad));
    }
    jcharge(c, b.n / 64);
    return new_str(&b);
}

static jv f_join(jctx *c, jv v, const jargs *a) {
    jv arg[2];
    BIND(c, a, "join", arg, "d", "attribute");
    jv sep = given(arg[0]) ? soft_str(c, arg[0]) : jv_str("", 0);
    const jlist *items = jv_iterate(c, v);
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (size_t i = 0; i < items->n; i++) {
        if (i) jsb_put(&b, sep.u.s.p, sep.u.s.n);
        jv item = given(arg[1]) && arg[1].kind != JV_NONE ? get_path(c, items->items[i], arg[1]) : items->items[i];
        jv_write_str(&b, item, 0);
    }
    jcharge(c, b.n / 64);
    return new_str(&b);
}

static jv f_first(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "first");
    const jlist *items = jv_iterate(c, v);
    return items->n ? items->items[0] : jv_undefined("No first item, sequence was empty.");
}

static jv f_last(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "last");
    if (v.kind != JV_LIST && v.kind != JV_STR && v.kind != JV_DICT) jfail(c, "'%s' object is not reversible", jv_type_name(v));
    const jlist *items = jv_iterate(c, v);
    return items->n ? items->items[items->n - 1] : jv_undefined("No last item, sequence was empty.");
}

static jv f_list(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "list");
    return jv_list(copy_list(c, jv_iterate(c, v)));
}

static jv f_items(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "items");
    if (v.kind == JV_UNDEFINED) return jv_list(jlist_new(c->arena, 0));
    if (v.kind != JV_DICT) jfail(c, "Can only get item pairs from a mapping.");
    return pairs_of(c, v.u.dict);
}

static jv f_int(jctx *c, jv v, const jargs *a) {
    jv arg[2];
    BIND(c, a, "int", arg, "default", "base");
    jv dflt = or_default(arg[0], jv_int(0));
    int64_t base = given(arg[1]) ? need_int(c, arg[1], "int") : 10, i;
    double f;
    if (v.kind == JV_UNDEFINED) fail_undefined_value(c, v); /* int(Undefined) raises in jinja2 */
    if (v.kind == JV_INT) return v;
    if (v.kind == JV_BOOL) return jv_int(v.u.b);
    if (v.kind == JV_STR && parse_int_str(c, v, base, &i)) return jv_int(i);
    if (v.kind == JV_FLOAT) f = v.u.f;
    else if (!(v.kind == JV_STR && parse_float_str(c, v, &f))) return dflt;
    if (isnan(f) || isinf(f)) jfail(c, "cannot convert float %s to integer", isnan(f) ? "NaN" : "infinity");
    if (f >= 9.2e18 || f <= -9.2e18) jfail(c, "integer overflow");
    return jv_int((int64_t)f);
}

static jv f_float(jctx *c, jv v, const jargs *a) {
    jv arg[1];
    BIND(c, a, "float", arg, "default");
    double f;
    if (v.kind == JV_UNDEFINED) fail_undefined_value(c, v);
    if (v.kind == JV_FLOAT) return v;
    if (v.kind == JV_INT || v.kind == JV_BOOL) return jv_float((double)(v.kind == JV_INT ? v.u.i : v.u.b));
    if (v.kind == JV_STR && parse_float_str(c, v, &f)) return jv_float(f);
    return or_default(arg[0], jv_float(0.0));
}

static jv f_abs(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "abs");
    if (v.kind == JV_FLOAT) return jv_float(fabs(v.u.f));
    int64_t i = need_int(c, v, "abs");
    if (i == INT64_MIN) jfail(c, "integer overflow in abs");
    return jv_int(i < 0 ? -i : i);
}

static jv f_round(jctx *c, jv v, const jargs *a) {
    jv arg[2];
    BIND(c, a, "round", arg, "precision", "method");
    int64_t prec = given(arg[0]) ? need_int(c, arg[0], "round") : 0;
    jv method = given(arg[1]) ? need_str(c, arg[1], "round") : jv_cstr("common");
    if (v.kind == JV_UNDEFINED) fail_undefined_value(c, v);
    if (!jv_is_number(v)) jfail(c, "round: expected a number, got %s", jv_type_name(v));
    bool common = jv_str_eq(method, "common");
    if (common && v.kind != JV_FLOAT && prec >= 0) return jv_int(v.kind == JV_INT ? v.u.i : v.u.b); /* round(int) is an int */
    double x = v.kind == JV_FLOAT ? v.u.f : (double)(v.kind == JV_INT ? v.u.i : v.u.b);
    if (prec > 15 || prec < -15) return jv_float(x);
    double scale = pow(10.0, (double)prec), y = x * scale;
    if (common) y = nearbyint(y); /* Python's round(): ties go to even */
    else if (jv_str_eq(method, "ceil")) y = ceil(y);
    else if (jv_str_eq(method, "floor")) y = floor(y);
    else jfail(c, "method must be 'common', 'ceil' or 'floor'");
    return jv_float(y / scale);
}

static jv f_reverse(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "reverse");
    const jlist *items = jv_iterate(c, v);
    jlist *out = jlist_new(c->arena, items->n);
    for (size_t i = items->n; i-- > 0;) out->items[out->n++] = items->items[i];
    if (v.kind != JV_STR) return jv_list(out);
    jsb b;
    jsb_init(&b, c->arena, 0);
    for (size_t i = 0; i < out->n; i++) jsb_put(&b, out->items[i].u.s.p, out->items[i].u.s.n);
    return new_str(&b);
}

static jv f_sort(jctx *c, jv v, const jargs *a) {
    jv arg[3];
    BIND(c, a, "sort", arg, "reverse", "case_sensitive", "attribute");
    jlist *items = copy_list(c, jv_iterate(c, v));
    jv *keys = keys_of(c, items, arg[2]);
    sort_by_keys(c, items->items, keys, items->n, given(arg[1]) && jv_truthy(arg[1]), given(arg[0]) && jv_truthy(arg[0]));
    return jv_list(items);
}

static jv f_unique(jctx *c, jv v, const jargs *a) {
    jv arg[2];
    BIND(c, a, "unique", arg, "case_sensitive", "attribute");
    const jlist *items = jv_iterate(c, v);
    jv *keys = keys_of(c, items, arg[1]);
    bool cs = given(arg[0]) && jv_truthy(arg[0]);
    jlist *out = jlist_new(c->arena, 0), *seen = jlist_new(c->arena, 0);
    for (size_t i = 0; i < items->n; i++) {
        jv key = !cs && keys[i].kind == JV_STR ? map_case(c, keys[i], CASE_LOWER) : keys[i];
        bool dup = false;
        for (size_t k = 0; k < seen->n && !dup; k++) dup = jv_equal(seen->items[k], key, 0);
        jcharge(c, seen->n / 16 + 1);
        if (dup) continue;
        jlist_push(c->arena, seen, key);
        jlist_push(c->arena, out, items->items[i]);
    }
    return jv_list(out);
}

static jv min_max(jctx *c, jv v, const jargs *a, bool want_max) {
    jv arg[2];
    BIND(c, a, want_max ? "max" : "min", arg, "case_sensitive", "attribute");
    const jlist *items = jv_iterate(c, v);
    if (items->n == 0) return jv_undefined("No aggregated item, sequence was empty.");
    jv *keys = keys_of(c, items, arg[1]);
    bool cs = given(arg[0]) && jv_truthy(arg[0]);
    size_t best = 0;
    for (size_t i = 1; i < items->n; i++) {
        bool better = want_max ? key_less(c, keys[best], keys[i], cs) : key_less(c, keys[i], keys[best], cs);
        if (better) best = i;
    }
    return items->items[best];
}
static jv f_min(jctx *c, jv v, const jargs *a) { return min_max(c, v, a, false); }
static jv f_max(jctx *c, jv v, const jargs *a) { return min_max(c, v, a, true); }

static jv f_sum(jctx *c, jv v, const jargs *a) {
    jv arg[2];
    BIND(c, a, "sum", arg, "attribute", "start");
    const jlist *items = jv_iterate(c, v);
    jv *keys = keys_of(c, items, arg[0]);
    jv total = or_default(arg[1], jv_int(0));
    for (size_t i = 0; i < items->n; i++) total = jarith(c, '+', total, keys[i]);
    return total;
}

static jv f_map(jctx *c, jv v, const jargs *a) {
    const jlist *items = jv_iterate(c, v);
    jlist *out = jlist_new(c->arena, items->n);
    const jv *attribute = NULL, *dflt = NULL;
    for (size_t k = 0; k < a->nkw; k++) {
        if (jv_str_eq(a->kwnames[k], "attribute")) attribute = &a->kw[k];
        else if (jv_str_eq(a->kwnames[k], "default")) dflt = &a->kw[k];
    }
    if (attribute) {
        if (a->n) jfail(c, "map: positional arguments with attribute=");
        for (size_t i = 0; i < items->n; i++) {
            jv x = get_path(c, items->items[i], *attribute);
            out->items[out->n++] = x.kind == JV_UNDEFINED && dflt ? *dflt : x;
        }
        return jv_list(out);
    }
    if (a->n == 0) jfail(c, "map requires a filter name or attribute=");
    jv name = need_str(c, a->pos[0], "map");
    const jbuiltin *f = jbuiltin_filter(name.u.s.p, name.u.s.n);
    if (!f) jfail(c, "no filter named '%.*s'", (int)name.u.s.n, name.u.s.p);
    jargs rest = rest_args(a, 1);
    for (size_t i = 0; i < items->n; i++) {
        jcharge(c, 1);
        out->items[out->n++] = f->fn(c, items->items[i], &rest);
    }
    return jv_list(out);
}

static jv f_select(jctx *c, jv v, const jargs *a) { return select_impl(c, v, a, false, true); }
static jv f_reject(jctx *c, jv v, const jargs *a) { return select_impl(c, v, a, false, false); }
static jv f_selectattr(jctx *c, jv v, const jargs *a) { return select_impl(c, v, a, true, true); }
static jv f_rejectattr(jctx *c, jv v, const jargs *a) { return select_impl(c, v, a, true, false); }

static jv f_attr(jctx *c, jv v, const jargs *a) {
    jv arg[1];
    BIND(c, a, "attr", arg, "name");
    return jv_getattr(c, v, need_str(c, arg[0], "attr"));
}

static jv f_dictsort(jctx *c, jv v, const jargs *a) {
    jv arg[3];
    BIND(c, a, "dictsort", arg, "case_sensitive", "by", "reverse");
    if (v.kind != JV_DICT) jfail(c, "dictsort: expected a mapping, got %s", jv_type_name(v));
    jv by = given(arg[1]) ? need_str(c, arg[1], "dictsort") : jv_cstr("key");
    int pos = jv_str_eq(by, "key") ? 0 : jv_str_eq(by, "value") ? 1 : -1;
    if (pos < 0) jfail(c, "You can only sort by either \"key\" or \"value\"");
    jlist *items = copy_list(c, pairs_of(c, v.u.dict).u.list);
    jv *keys = jarena_alloc(c->arena, (items->n ? items->n : 1) * sizeof(jv));
    for (size_t i = 0; i < items->n; i++) keys[i] = items->items[i].u.list->items[pos];
    sort_by_keys(c, items->items, keys, items->n, given(arg[0]) && jv_truthy(arg[0]), given(arg[2]) && jv_truthy(arg[2]));
    return jv_list(items);
}

static jv f_wordcount(jctx *c, jv v, const jargs *a) {
    no_args(c, a, "wordcount");
    jv s = soft_str(c, v);
    int64_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp = u8_next(s.u.s.p, &i);
        bool w = py_isalnum(cp) || cp == '_';
        words += w && !in_word;
        in_word = w;
    }
    return jv_int(words);
}

/* jinja2's indent: every line but the first (unless first=True) gets the
 * prefix; blank lines only with blank=True. */
static jv f_indent(jctx *c, jv v, const jargs *a) {
    jv arg[3];
    BIND(c, a, "indent", arg, "width", "first", "blank");
    jv prefix;
    if (given(arg[0]) && arg[0].kind == JV_STR) prefix = arg[0];
    else {
        int64_t width = given(arg[0]) ? need_int(c, arg[0], "indent") : 4;
        prefix = repeat_spaces(c, width);
    }
    bool first = given(arg[1]) && jv_truthy(arg[1]), blank = given(arg[2]) && jv_truthy(arg[2]);
    jv s = soft_str(c, v);
    jsb with_nl;
    jsb_init(&with_nl, c->arena, 0);
    jsb_put(&with_nl, s.u.s.p, s.u.s.n);
    jsb_putc(&with_nl, '\n');
    jlist *lines = splitlines(c, jsb_value(&with_nl), false);
    jsb b;
    jsb_init(&b, c->arena, 0);
    if (first) jsb_put(&b, prefix.u.s.p, prefix.u.s.n);
    for (size_t i = 0; i < lines->n; i++) {
        jv line = lines->items[i];
        if (i) {
            jsb_putc(&b, '\n');
            if (blank || line.u.s.n) jsb_put(&b, prefix.u.s.p, prefix.u.s.n);
        }
        jsb_put(&b, line.u.s.p, line.u.s.n);
    }
    return new_str(&b);
}

/* ---- global functions ---- */

static jv g_range(jctx *c, jv self, const jargs *a) {
    (void)self;
    if (a->nkw || a->n < 1 || a->n > 3) jfail(c, "range expected 1 to 3 integer arguments");
    int64_t start = 0, stop, step = 1;
    if (a->n == 1) stop = need_int(c, a->pos[0], "range");
    else {
        start = need_int(c, a->pos[0], "range");
        stop = need_int(c, a->pos[1], "range");
        if (a->n == 3) step = need_int(c, a->pos[2], "range");
    }
    if (step == 0) jfail(c, "range() arg 3 must not be zero");
    double count = step > 0 ? ceil(((double)stop - (double)start) / (double)step) : ceil(((double)start - (double)stop) / (double)-step);
    if (count < 0) count = 0;
    if (count > 100000) jfail(c, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    jlist *out = jlist_new(c->arena, (size_t)count);
    for (int64_t i = 0; i < (int64_t)count; i++) out->items[out->n++] = jv_int(start + i * step);
    jcharge(c, out->n / 16);
    return jv_list(out);
}

static jv dict_from_args(jctx *c, const jargs *a, const char *what) {
    if (a->n > 1) jfail(c, "%s() takes at most 1 positional argument", what);
    jdict *d = jdict_new(c->arena, 0);
    if (a->n == 1) {
        jv src = a->pos[0];
        if (src.kind != JV_DICT && src.kind != JV_NAMESPACE) jfail(c, "%s() argument must be a mapping", what);
        for (size_t i = 0; i < src.u.dict->n; i++) jdict_set(c->arena, d, src.u.dict->keys[i], src.u.dict->vals[i]);
    }
    for (size_t k = 0; k < a->nkw; k++) jdict_set(c->arena, d, a->kwnames[k], a->kw[k]);
    return jv_dict(d);
}

static jv g_namespace(jctx *c, jv self, const jargs *a) {
    (void)self;
    jv ns = dict_from_args(c, a, "namespace");
    ns.kind = JV_NAMESPACE;
    return ns;
}

static jv g_dict(jctx *c, jv self, const jargs *a) {
    (void)self;
    return dict_from_args(c, a, "dict");
}

static jv g_raise_exception(jctx *c, jv self, const jargs *a) {
    (void)self;
    jv arg[1];
    BIND(c, a, "raise_exception", arg, "message");
    jv msg = given(arg[0]) ? soft_str(c, arg[0]) : jv_cstr("raise_exception() called");
    jfail_raw(c, msg.u.s.p, msg.u.s.n);
}

static jv g_strftime_now(jctx *c, jv self, const jargs *a) {
    (void)self;
    jv arg[1];
    BIND(c, a, "strftime_now", arg, "format");
    jv fmt = need_str(c, arg[0], "strftime_now");
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char *f = jarena_strdup(c->arena, fmt.u.s.p, fmt.u.s.n), buf[512];
    size_t n = strftime(buf, sizeof buf, f, &tm);
    return jv_str(jarena_strdup(c->arena, buf, n), n);
}

/* ---- tables ---- */

static const jbuiltin FILTERS[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"dictsort", f_dictsort},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"forceescape", f_escape},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"round", f_round},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

static const jbuiltin TESTS[] = {
    {"!=", t_ne},          {"<", t_lt},           {"<=", t_le},       {"==", t_eq},         {">", t_gt},
    {">=", t_ge},          {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined},
    {"divisibleby", t_divisibleby}, {"eq", t_eq}, {"equalto", t_eq}, {"escaped", t_escaped}, {"even", t_even},
    {"false", t_false},    {"filter", t_filter},  {"float", t_float}, {"ge", t_ge},         {"greaterthan", t_gt},
    {"gt", t_gt},          {"in", t_in},          {"integer", t_integer}, {"iterable", t_iterable}, {"le", t_le},
    {"lessthan", t_lt},    {"lower", t_lower},    {"lt", t_lt},       {"mapping", t_mapping}, {"ne", t_ne},
    {"none", t_none},      {"number", t_number},  {"odd", t_odd},     {"sameas", t_sameas}, {"sequence", t_sequence},
    {"string", t_string},  {"test", t_test},      {"true", t_true},   {"undefined", t_undefined}, {"upper", t_upper},
};

static const jbuiltin GLOBALS[] = {
    {"dict", g_dict},
    {"namespace", g_namespace},
    {"raise_exception", g_raise_exception},
    {"range", g_range},
    {"strftime_now", g_strftime_now},
};

static const jbuiltin STR_METHODS[] = {
    {"capitalize", m_capitalize}, {"count", m_count},     {"endswith", m_endswith}, {"find", m_find},
    {"index", m_index},           {"isalnum", m_isalnum}, {"isalpha", m_isalpha},   {"isdigit", m_isdigit},
    {"islower", m_islower},       {"isspace", m_isspace}, {"isupper", m_isupper},   {"join", m_join},
    {"lower", m_lower},           {"lstrip", m_lstrip},   {"replace", m_replace},   {"rfind", m_rfind},
    {"rsplit", m_rsplit},         {"rstrip", m_rstrip},   {"split", m_split},       {"splitlines", m_splitlines},
    {"startswith", m_startswith}, {"strip", m_strip},     {"title", m_title},       {"upper", m_upper},
};

static const jbuiltin DICT_METHODS[] = {{"get", m_get}, {"items", m_items}, {"keys", m_keys}, {"values", m_values}};
static const jbuiltin LIST_METHODS[] = {{"count", l_count}, {"index", l_index}};
static const jbuiltin LOOP_METHODS[] = {{"cycle", m_cycle}};

static const jbuiltin *find_in(const jbuiltin *table, size_t count, const char *name, size_t n) {
    for (size_t i = 0; i < count; i++)
        if (strlen(table[i].name) == n && memcmp(table[i].name, name, n) == 0) return &table[i];
    return NULL;
}

#define FIND(table, name, n) find_in(table, sizeof table / sizeof table[0], name, n)

const jbuiltin *jbuiltin_filter(const char *name, size_t n) { return FIND(FILTERS, name, n); }
const jbuiltin *jbuiltin_test(const char *name, size_t n) { return FIND(TESTS, name, n); }
const jbuiltin *jbuiltin_global(const char *name, size_t n) { return FIND(GLOBALS, name, n); }

const jbuiltin *jbuiltin_method(jv v, const char *name, size_t n) {
    switch (v.kind) {
    case JV_STR: return FIND(STR_METHODS, name, n);
    case JV_DICT: return FIND(DICT_METHODS, name, n);
    case JV_LIST: return FIND(LIST_METHODS, name, n);
    case JV_LOOP: return FIND(LOOP_METHODS, name, n);
    default: return NULL;
    }
}
