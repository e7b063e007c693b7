/* jinja_lex.c — template source to tokens, the way jinja2's lexer cuts it.
 *
 * The source is first normalized like jinja2 does: every \r\n and lone \r
 * becomes \n, and one trailing newline is dropped (keep_trailing_newline is
 * off). Then the text is scanned for the next tag opener, `{{`, `{%` or `{#`;
 * the text before it becomes a JT_TEXT token after whitespace control:
 *
 *   `{%-` `{{-` `{#-`   strip all whitespace at the end of the text before;
 *   lstrip_blocks        a `{%` or `{#` alone on its line (only spaces and tabs
 *                        before it) takes that indentation away, unless it is
 *                        written `{%+`;
 *   `-%}` `-}}` `-#}`    strip all whitespace after the tag;
 *   trim_blocks          one newline right after `%}` or `#}` is dropped,
 *                        unless the tag ends `+%}`.
 *
 * Inside `{{ }}` and `{% %}` come expression tokens: names, numbers, strings
 * (Python escapes decoded here), operators. An end delimiter only counts when
 * brackets are balanced, so `{{ {'a': 1}}}` ends at the last `}}`. Comments
 * vanish, and `{% raw %}...{% endraw %}` is one text token. Whitespace means
 * Python's str.isspace(), as in jinja2's regular expressions. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"
#include "utf8.h"

typedef struct lexer {
    const char *src; /* normalized source, NUL-terminated, in the arena */
    size_t len, pos;
    jarena *arena;
    jtoks *out;
    jthrow *thrower;
    /* line bookkeeping: the number of newlines before `counted` */
    size_t counted;
    int line;
    size_t line_start;
    bool line_starting; /* the previous tag ended with a newline (or nothing came yet) */
    char brackets[256]; /* open brackets inside the current tag */
    int depth;
} lexer;

/* ---- positions and errors ---- */

static void locate(lexer *lx, size_t pos, int *line, int *col) {
    if (pos < lx->counted) { /* positions are mostly increasing; restart when not */
        lx->counted = 0;
        lx->line = 1;
        lx->line_start = 0;
    }
    for (; lx->counted < pos && lx->counted < lx->len; lx->counted++)
        if (lx->src[lx->counted] == '\n') {
            lx->line++;
            lx->line_start = lx->counted + 1;
        }
    *line = lx->line;
    *col = (int)u8_count(lx->src + lx->line_start, pos - lx->line_start) + 1;
}

_Noreturn static void lex_fail(lexer *lx, size_t pos, const char *what) {
    int line, col;
    locate(lx, pos, &line, &col);
    jthrow_fail(lx->thrower, "line %d, column %d: %s", line, col, what);
}

static jtok *push(lexer *lx, jtok_kind kind, size_t pos) {
    jtoks *t = lx->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        jtok *v = jarena_alloc(lx->arena, cap * sizeof *v);
        if (t->n) memcpy(v, t->v, t->n * sizeof *v);
        t->v = v;
        t->cap = cap;
    }
    jtok *tok = &t->v[t->n++];
    memset(tok, 0, sizeof *tok);
    tok->kind = kind;
    locate(lx, pos, &tok->line, &tok->col);
    return tok;
}

/* ---- whitespace, as Python's \s ---- */

static size_t skip_space(const lexer *lx, size_t pos) {
    while (pos < lx->len) {
        size_t next = pos;
        if (!py_isspace(u8_next(lx->src, &next))) break;
        pos = next;
    }
    return pos;
}

/* Start of the whitespace run that ends text [start, end). */
static size_t rstrip_from(const lexer *lx, size_t start, size_t end) {
    while (end > start) {
        size_t prev = end;
        if (!py_isspace(u8_prev(lx->src, &prev))) break;
        end = prev;
    }
    return end;
}

/* ---- normalization ---- */

static char *normalize(const char *src, size_t len, jarena *a, size_t *out_len) {
    char *s = jarena_alloc(a, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            if (i + 1 < len && src[i + 1] == '\n') i++;
            s[n++] = '\n';
        } else s[n++] = src[i];
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = '\0';
    *out_len = n;
    return s;
}

/* ---- text and its whitespace control ---- */

/* Emits the text [start, end) before a tag whose opener has strip sign `sign`
 * ('-', '+' or 0); lstrip applies to block and comment tags only. */
static void emit_text(lexer *lx, size_t start, size_t end, char sign, bool lstrip) {
    if (sign == '-') end = rstrip_from(lx, start, end);
    else if (sign != '+' && lstrip) {
        size_t line_pos = end;
        while (line_pos > start && lx->src[line_pos - 1] != '\n') line_pos--;
        if ((line_pos > start || lx->line_starting) && line_pos < end && rstrip_from(lx, line_pos, end) == line_pos)
            end = line_pos;
    }
    if (end > start) {
        jtok *t = push(lx, JT_TEXT, start);
        t->p = lx->src + start;
        t->n = end - start;
    }
}

/* Length of the tag closer `close` (e.g. "%}") at pos with its trailing
 * whitespace control, or 0 when there is none. trim: drop one newline after a
 * plain closer (trim_blocks). */
static size_t match_closer(lexer *lx, size_t pos, const char *close, bool trim) {
    const char *s = lx->src + pos;
    size_t rest = lx->len - pos;
    if (rest >= 3 && s[0] == '-' && memcmp(s + 1, close, 2) == 0) return skip_space(lx, pos + 3) - pos;
    if (rest >= 3 && s[0] == '+' && trim && memcmp(s + 1, close, 2) == 0) return 3;
    if (rest >= 2 && memcmp(s, close, 2) == 0) return trim && rest > 2 && s[2] == '\n' ? 3 : 2;
    return 0;
}

static void set_line_starting(lexer *lx, size_t end) { lx->line_starting = end > 0 && lx->src[end - 1] == '\n'; }

/* ---- comments and raw blocks ---- */

/* First occurrence of the two-character s at or after pos (the source may hold NULs). */
static const char *find(const lexer *lx, size_t pos, const char *s) {
    return pos < lx->len ? memmem(lx->src + pos, lx->len - pos, s, 2) : NULL;
}

static size_t lex_comment(lexer *lx, size_t open, size_t pos) {
    for (const char *e = find(lx, pos, "#}"); e; e = find(lx, (size_t)(e - lx->src) + 1, "#}")) {
        size_t at = (size_t)(e - lx->src);
        if (at > pos && (lx->src[at - 1] == '-' || lx->src[at - 1] == '+')) at--;
        size_t n = match_closer(lx, at, "#}", true);
        if (n) return at + n;
    }
    lex_fail(lx, open, "missing end of comment tag");
}

/* `{%` [sign] \s* word \s* then a block closer: returns the position after it, or 0. */
static size_t match_word_tag(lexer *lx, size_t pos, const char *word, char *sign, bool trim) {
    if (lx->len - pos < 2 || memcmp(lx->src + pos, "{%", 2) != 0) return 0;
    size_t p = pos + 2;
    *sign = p < lx->len && (lx->src[p] == '-' || lx->src[p] == '+') ? lx->src[p] : 0;
    if (*sign) p++;
    p = skip_space(lx, p);
    size_t wn = strlen(word);
    if (lx->len - p < wn || memcmp(lx->src + p, word, wn) != 0) return 0;
    p = skip_space(lx, p + wn);
    if (!trim && lx->len - p >= 3 && lx->src[p] == '+') return 0; /* the raw opener has no `+%}` form */
    size_t n = match_closer(lx, p, "%}", trim);
    return n ? p + n : 0;
}

static size_t lex_raw(lexer *lx, size_t open, size_t body) {
    for (const char *e = find(lx, body, "{%"); e; e = find(lx, (size_t)(e - lx->src) + 1, "{%")) {
        size_t at = (size_t)(e - lx->src);
        char sign;
        size_t end = match_word_tag(lx, at, "endraw", &sign, true);
        if (!end) continue;
        emit_text(lx, body, at, sign, true);
        return end;
    }
    lex_fail(lx, open, "missing end of raw directive");
}

/* ---- expression tokens ---- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

/* Digits with single underscores between them ("1_000"): returns the end. */
static size_t scan_digits(const lexer *lx, size_t p) {
    if (p >= lx->len || !is_digit(lx->src[p])) return p;
    while (p < lx->len) {
        if (is_digit(lx->src[p])) p++;
        else if (lx->src[p] == '_' && p + 1 < lx->len && is_digit(lx->src[p + 1])) p++;
        else break;
    }
    return p;
}

static char *without_underscores(lexer *lx, size_t start, size_t end) {
    char *s = jarena_alloc(lx->arena, end - start + 1);
    size_t n = 0;
    for (size_t i = start; i < end; i++)
        if (lx->src[i] != '_') s[n++] = lx->src[i];
    return s;
}

/* A float needs a fraction or an exponent: 1.5, 1e3, 1.5e-3 (not "1." nor ".5"). */
static size_t scan_float(const lexer *lx, size_t p) {
    if (p > 0 && lx->src[p - 1] == '.') return 0;
    size_t q = scan_digits(lx, p);
    if (q == p) return 0;
    bool frac = false;
    if (q < lx->len && lx->src[q] == '.' && scan_digits(lx, q + 1) > q + 1) {
        q = scan_digits(lx, q + 1);
        frac = true;
    }
    if (q < lx->len && (lx->src[q] == 'e' || lx->src[q] == 'E')) {
        size_t e = q + 1;
        if (e < lx->len && (lx->src[e] == '+' || lx->src[e] == '-')) e++;
        size_t end = scan_digits(lx, e);
        if (end > e) return end;
    }
    return frac ? q : 0;
}

static size_t lex_number(lexer *lx, size_t p) {
    size_t end = scan_float(lx, p);
    if (end) {
        jtok *t = push(lx, JT_FLOAT, p);
        t->f = strtod(without_underscores(lx, p, end), NULL);
        return end;
    }
    int base = 10;
    size_t digits = p;
    char c1 = p + 1 < lx->len ? lx->src[p + 1] : 0;
    if (lx->src[p] == '0' && (c1 == 'x' || c1 == 'X')) base = 16;
    else if (lx->src[p] == '0' && (c1 == 'o' || c1 == 'O')) base = 8;
    else if (lx->src[p] == '0' && (c1 == 'b' || c1 == 'B')) base = 2;
    if (base != 10) digits = p + 2;
    end = base == 10 ? scan_digits(lx, p) : digits;
    while (base != 10 && end < lx->len) {
        char c = lx->src[end];
        int d = is_digit(c) ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : c == '_' ? 0 : 99;
        if (d >= base) break;
        end++;
    }
    if (end == digits) lex_fail(lx, p, "invalid number literal");
    if (base == 10 && lx->src[p] == '0' && end > p + 1) {
        for (size_t i = p; i < end; i++)
            if (lx->src[i] != '0' && lx->src[i] != '_') lex_fail(lx, p, "leading zeros in a decimal integer literal");
    }
    jtok *t = push(lx, JT_INT, p);
    errno = 0;
    long long v = strtoll(without_underscores(lx, digits, end), NULL, base);
    if (errno == ERANGE) lex_fail(lx, p, "integer literal too large");
    t->i = v;
    return end;
}

static int hex_value(char c) {
    if (is_digit(c)) return c - '0';
    c |= 32;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One escape after a backslash at p (Python's unicode-escape codec): appends
 * the character to b and returns the position after the escape. */
static size_t lex_escape(lexer *lx, size_t p, jsb *b) {
    char c = lx->src[p];
    static const char simple_in[] = "\\'\"abfnrtv", simple_out[] = "\\'\"\a\b\f\n\r\t\v";
    const char *s = strchr(simple_in, c);
    if (c && s) {
        jsb_putc(b, simple_out[s - simple_in]);
        return p + 1;
    }
    if (c == '\n') return p + 1; /* a backslash-newline continues the line */
    if (c >= '0' && c <= '7') {
        uint32_t v = 0;
        size_t q = p;
        while (q < p + 3 && lx->src[q] >= '0' && lx->src[q] <= '7') v = v * 8 + (uint32_t)(lx->src[q++] - '0');
        jsb_put_cp(b, v);
        return q;
    }
    int width = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (width) {
        uint32_t v = 0;
        for (int k = 1; k <= width; k++) {
            int h = hex_value(lx->src[p + k]);
            if (h < 0) lex_fail(lx, p - 1, "truncated \\x, \\u or \\U escape in a string");
            v = v * 16 + (uint32_t)h;
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) lex_fail(lx, p - 1, "escape is not a valid Unicode character");
        jsb_put_cp(b, v);
        return p + 1 + (size_t)width;
    }
    if (c == 'N') lex_fail(lx, p - 1, "\\N{...} escapes are not supported");
    jsb_putc(b, '\\'); /* unknown escapes stay as written */
    return p;
}

static size_t lex_string(lexer *lx, size_t p) {
    char quote = lx->src[p];
    jsb b;
    jsb_init(&b, lx->arena, 0);
    size_t q = p + 1;
    for (;;) {
        if (q >= lx->len) lex_fail(lx, p, "unterminated string");
        char c = lx->src[q];
        if (c == quote) break;
        if (c == '\\' && q + 1 < lx->len) {
            q = lex_escape(lx, q + 1, &b);
            continue;
        }
        jsb_putc(&b, c);
        q++;
    }
    jtok *t = push(lx, JT_STRING, p);
    t->p = b.p ? b.p : "";
    t->n = b.n;
    return q + 1;
}

static size_t lex_operator(lexer *lx, size_t p) {
    static const struct { const char *text; int op; } two[] = {
        {"//", JOP_FLOORDIV}, {"**", JOP_POW}, {"==", JOP_EQ}, {"!=", JOP_NE}, {">=", JOP_GE}, {"<=", JOP_LE},
    };
    for (size_t i = 0; i < sizeof two / sizeof two[0]; i++)
        if (lx->len - p >= 2 && memcmp(lx->src + p, two[i].text, 2) == 0) {
            push(lx, JT_OP, p)->op = two[i].op;
            return p + 2;
        }
    char c = lx->src[p];
    if (!c || !strchr("+-/*%~[](){}><=.:|,;", c)) {
        size_t q = p;
        uint32_t cp = u8_next(lx->src, &q);
        char what[64];
        if (cp >= 0x20 && cp < 0x7f) snprintf(what, sizeof what, "unexpected character '%c'", (char)cp);
        else snprintf(what, sizeof what, "unexpected character U+%04X", cp);
        lex_fail(lx, p, what);
    }
    if (c == '(' || c == '[' || c == '{') {
        if (lx->depth == (int)sizeof lx->brackets) lex_fail(lx, p, "brackets nested more than 256 deep");
        lx->brackets[lx->depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
    } else if (c == ')' || c == ']' || c == '}') {
        char what[48];
        if (lx->depth == 0) {
            snprintf(what, sizeof what, "unexpected '%c'", c);
            lex_fail(lx, p, what);
        }
        char want = lx->brackets[--lx->depth];
        if (want != c) {
            snprintf(what, sizeof what, "unexpected '%c', expected '%c'", c, want);
            lex_fail(lx, p, what);
        }
    }
    push(lx, JT_OP, p)->op = (unsigned char)c;
    return p + 1;
}

/* Tokens of one `{{ }}` or `{% %}` tag from pos; returns the position after its closer. */
static size_t lex_tag(lexer *lx, size_t open, size_t pos, bool block) {
    const char *close = block ? "%}" : "}}";
    lx->depth = 0;
    for (;;) {
        if (lx->depth == 0) {
            size_t n = match_closer(lx, pos, close, block);
            if (n) {
                push(lx, block ? JT_BLOCK_END : JT_VAR_END, pos);
                return pos + n;
            }
        }
        pos = skip_space(lx, pos);
        if (pos >= lx->len) lex_fail(lx, open, block ? "'{%' is never closed by '%}'" : "'{{' is never closed by '}}'");
        char c = lx->src[pos];
        if (lx->depth == 0 && match_closer(lx, pos, close, block)) continue;
        if (is_digit(c)) pos = lex_number(lx, pos);
        else if (is_name_start(c)) {
            size_t end = pos;
            while (end < lx->len && is_name_char(lx->src[end])) end++;
            jtok *t = push(lx, JT_NAME, pos);
            t->p = lx->src + pos;
            t->n = end - pos;
            pos = end;
        } else if (c == '\'' || c == '"') pos = lex_string(lx, pos);
        else pos = lex_operator(lx, pos);
    }
}

/* ---- the scan ---- */

/* Position of the next `{{`, `{%` or `{#` at or after pos, or len. */
static size_t next_opener(const lexer *lx, size_t pos) {
    for (const char *s = lx->src + pos; (s = memchr(s, '{', lx->len - (size_t)(s - lx->src))); s++) {
        if (s + 1 < lx->src + lx->len && (s[1] == '{' || s[1] == '%' || s[1] == '#')) return (size_t)(s - lx->src);
    }
    return lx->len;
}

void jlex(const char *src, size_t len, jarena *a, jtoks *out, jthrow *t) {
    lexer lx = {.arena = a, .out = out, .thrower = t, .line = 1, .line_starting = true};
    lx.src = normalize(src, len, a, &lx.len);
    if (lq_utf8_valid_prefix(lx.src, lx.len) != lx.len)
        lex_fail(&lx, lq_utf8_valid_prefix(lx.src, lx.len), "template is not valid UTF-8");
    size_t pos = 0;
    while (pos < lx.len) {
        size_t open = next_opener(&lx, pos);
        if (open == lx.len) {
            emit_text(&lx, pos, open, 0, false);
            break;
        }
        char kind = lx.src[open + 1];
        char sign = open + 2 < lx.len && (lx.src[open + 2] == '-' || lx.src[open + 2] == '+') ? lx.src[open + 2] : 0;
        size_t body = open + 2 + (sign != 0);
        char raw_sign;
        size_t raw_body = kind == '%' ? match_word_tag(&lx, open, "raw", &raw_sign, false) : 0;
        emit_text(&lx, pos, open, sign, kind != '{');
        if (raw_body) pos = lex_raw(&lx, open, raw_body);
        else if (kind == '#') pos = lex_comment(&lx, open, body);
        else {
            push(&lx, kind == '%' ? JT_BLOCK_BEGIN : JT_VAR_BEGIN, open);
            pos = lex_tag(&lx, open, body, kind == '%');
        }
        set_line_starting(&lx, pos);
    }
    push(&lx, JT_EOF, lx.len);
}
