/* tok_regex.c — Oniguruma-compatible regular expressions on top of PCRE2.
 *
 * tokenizer.json patterns (the GPT-2 and Llama-3 split patterns, Replace
 * normalizers) are written for the Oniguruma engine the tokenizers library
 * uses. PCRE2 with PCRE2_UTF | PCRE2_UCP agrees on the syntax we meet, but not
 * on every class, so patterns are rewritten before compiling:
 *
 *  - \s: PCRE2 also matches U+180E (MONGOLIAN VOWEL SEPARATOR, a space before
 *    Unicode 6.3); Oniguruma matches exactly the White_Space property. We
 *    spell the 25 White_Space code points out, and \S as their complement.
 *  - \p{L}, \p{N}: this PCRE2 (10.42) has Unicode 15 tables, Oniguruma in the
 *    library has Unicode 16; the letters and numbers added since are listed
 *    below (derived by comparing the two engines over every code point; the
 *    parity test re-checks it).
 *  - \d is \p{Nd} with the same additions;
 *  - \w is Alphabetic + marks + decimal digits + connector punctuation there
 *    (outside brackets also a few Latin-1 digits like '²'); \h is a hex digit
 *    and \v a vertical tab, not PCRE2's horizontal/vertical space classes.
 *  - ^ and $ are line anchors (Ruby syntax), so we compile with
 *    PCRE2_MULTILINE, and only \n is a newline.
 *
 * find_all() iterates matches the way the library's Oniguruma iterator does:
 * an empty match right where the previous match ended is skipped. */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static const char WS[] = TOK_WHITE_SPACE_CLASS;
static const char NOT_WS[] =
    "\\x{0}-\\x{8}\\x{E}-\\x{1F}\\x{21}-\\x{84}\\x{86}-\\x{9F}\\x{A1}-\\x{167F}\\x{1681}-\\x{1FFF}"
    "\\x{200B}-\\x{2027}\\x{202A}-\\x{202E}\\x{2030}-\\x{205E}\\x{2060}-\\x{2FFF}\\x{3001}-\\x{10FFFF}";

/* Assigned as letters (L) / numbers (N) in Unicode 16 but not in PCRE2's tables. */
static const char L_EXTRA[] =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}"
    "\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}"
    "\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}"
    "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}"
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
static const char N_EXTRA[] =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";
/* The decimal digits (Nd) among them: \d. */
static const char D_EXTRA[] =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";
/* Oniguruma's \w beyond [\p{Alphabetic}\p{M}\p{Nd}\p{Pc}]: Latin-1 superscripts
 * and fractions (outside brackets only), then Unicode 16 additions. */
static const char W_LATIN1[] = "\\x{B2}-\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
const char tok_word_class[] =
    "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{897}\\x{CF3}\\x{ECE}\\x{1C89}-\\x{1C8A}"
    "\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D40}-\\x{10D65}"
    "\\x{10D69}-\\x{10D6D}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{10EFC}-\\x{10EFF}"
    "\\x{1123F}-\\x{11241}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}"
    "\\x{113B7}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}\\x{113CC}-\\x{113D3}"
    "\\x{113E1}-\\x{113E2}\\x{116D0}-\\x{116E3}\\x{11BC0}-\\x{11BE0}\\x{11BF0}-\\x{11BF9}"
    "\\x{11F00}-\\x{11F10}\\x{11F12}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{11F50}-\\x{11F5A}"
    "\\x{1342F}\\x{13440}-\\x{13455}\\x{13460}-\\x{143FA}\\x{16100}-\\x{16139}"
    "\\x{16D40}-\\x{16D6C}\\x{16D70}-\\x{16D79}\\x{18CFF}\\x{1B132}\\x{1B155}"
    "\\x{1CCF0}-\\x{1CCF9}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E08F}"
    "\\x{1E4D0}-\\x{1E4F9}\\x{1E5D0}-\\x{1E5FA}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}"
    "\\x{31350}-\\x{323AF}";
static const char HEX[] = "0-9a-fA-F";
static const char NOT_HEX[] = "\\x{0}-\\x{2F}\\x{3A}-\\x{40}\\x{47}-\\x{60}\\x{67}-\\x{10FFFF}";

int tok_is_whitespace(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* ---- pattern translation ---- */

static int put_str(tok_buf *o, const char *s) { return tok_buf_put(o, s, strlen(s)); }

/* Emits a class body: bare inside brackets, wrapped in [..] or [^..] outside. */
static int put_class(tok_buf *o, int in_class, int negate, const char *a, const char *b, const char *c) {
    if (!in_class && put_str(o, negate ? "[^" : "[") != 0) return -1;
    if (put_str(o, a) != 0 || (b && put_str(o, b) != 0) || (c && put_str(o, c) != 0)) return -1;
    return in_class ? 0 : put_str(o, "]");
}

/* Reads the property name after \p or \P at pat[*i] (the letter or {...}). */
static int read_property(const char *pat, size_t len, size_t *i, const char **name, size_t *name_len) {
    if (*i >= len) return -1;
    if (pat[*i] != '{') {
        *name = pat + *i;
        *name_len = 1;
        *i += 1;
        return 0;
    }
    const char *end = memchr(pat + *i, '}', len - *i);
    if (!end) return -1;
    *name = pat + *i + 1;
    *name_len = (size_t)(end - (pat + *i + 1));
    *i = (size_t)(end - pat) + 1;
    return 0;
}

static int translate_property(tok_buf *o, int in_class, int negate, const char *name, size_t n) {
    if (n > 0 && name[0] == '^') { /* Oniguruma's \p{^L} is \P{L} */
        negate = !negate;
        name++;
        n--;
    }
    const char *extra = NULL, *base = NULL;
    if (n == 1 && name[0] == 'L') base = "\\p{L}", extra = L_EXTRA;
    if (n == 1 && name[0] == 'N') base = "\\p{N}", extra = N_EXTRA;
    if (base && !(in_class && negate)) return put_class(o, in_class, negate, base, extra, NULL);
    /* Anything else goes to PCRE2 as written (a negated \P{L} inside brackets
     * cannot take the additions; it is approximate for Unicode 16 letters). */
    if (put_str(o, negate ? "\\P{" : "\\p{") != 0 || tok_buf_put(o, name, n) != 0) return -1;
    return put_str(o, "}");
}

/* Handles the escape starting at pat[*i] == '\\'. */
static int translate_escape(tok_buf *o, const char *pat, size_t len, size_t *i, int in_class) {
    if (*i + 1 >= len) {
        *i += 1;
        return put_str(o, "\\");
    }
    char d = pat[*i + 1];
    *i += 2;
    switch (d) {
    case 's': return put_class(o, in_class, 0, WS, NULL, NULL);
    case 'S': return in_class ? put_str(o, NOT_WS) : put_class(o, 0, 1, WS, NULL, NULL);
    case 'w': return put_class(o, in_class, 0, tok_word_class, in_class ? NULL : W_LATIN1, NULL);
    case 'W': return in_class ? put_str(o, "\\W") : put_class(o, 0, 1, tok_word_class, W_LATIN1, NULL);
    case 'd': return put_class(o, in_class, 0, "\\p{Nd}", D_EXTRA, NULL);
    case 'D': return in_class ? put_str(o, "\\D") : put_class(o, 0, 1, "\\p{Nd}", D_EXTRA, NULL);
    case 'h': return put_class(o, in_class, 0, HEX, NULL, NULL);
    case 'H': return in_class ? put_str(o, NOT_HEX) : put_class(o, 0, 1, HEX, NULL, NULL);
    case 'v': return put_str(o, "\\x{B}");
    case 'p':
    case 'P': {
        const char *name;
        size_t n;
        if (read_property(pat, len, i, &name, &n) != 0) return put_str(o, d == 'p' ? "\\p" : "\\P");
        return translate_property(o, in_class, d == 'P', name, n);
    }
    case 'Q': { /* \Q...\E is literal text: copy it untouched */
        size_t j = *i;
        while (j + 1 < len && !(pat[j] == '\\' && pat[j + 1] == 'E')) j++;
        size_t end = j + 1 < len ? j + 2 : len;
        int rc = put_str(o, "\\Q") == 0 && tok_buf_put(o, pat + *i, end - *i) == 0 ? 0 : -1;
        *i = end;
        return rc;
    }
    default: {
        char esc[2] = {'\\', d};
        return tok_buf_put(o, esc, 2);
    }
    }
}

/* Rewrites an Oniguruma pattern into PCRE2 syntax (see the file comment). */
static int translate(const char *pat, size_t len, tok_buf *o) {
    int in_class = 0;
    size_t i = 0;
    while (i < len) {
        char c = pat[i];
        if (c == '\\') {
            if (translate_escape(o, pat, len, &i, in_class) != 0) return -1;
        } else if (c == '[' && !in_class) {
            in_class = 1;
            if (put_str(o, "[") != 0) return -1;
            i++;
            if (i < len && pat[i] == '^') {
                if (put_str(o, "^") != 0) return -1;
                i++;
            }
            if (i < len && pat[i] == ']') { /* a ']' first in brackets is literal */
                if (put_str(o, "\\]") != 0) return -1;
                i++;
            }
        } else if (c == '[' && in_class && i + 1 < len && pat[i + 1] == ':') {
            const char *end = memchr(pat + i, ']', len - i); /* POSIX [:name:] */
            size_t n = end ? (size_t)(end - (pat + i)) + 1 : len - i;
            if (tok_buf_put(o, pat + i, n) != 0) return -1;
            i += n;
        } else {
            if (c == ']' && in_class) in_class = 0;
            if (tok_buf_put(o, &c, 1) != 0) return -1;
            i++;
        }
    }
    return tok_buf_put(o, "", 0);
}

/* ---- compile and match ---- */

static int compile(tok_regex *re, const char *pattern, size_t len, uint32_t extra_opts, lq_error *err) {
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) return lq_fail(err, "out of memory");
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | extra_opts | (extra_opts & PCRE2_LITERAL ? 0 : PCRE2_UCP);
    re->code = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &code, &at, cc);
    pcre2_compile_context_free(cc);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return lq_fail(err, "bad regex at offset %zu: %s", (size_t)at, (char *)msg);
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* best effort: the interpreter also works */
    return 0;
}

int tok_regex_compile(tok_regex *re, const char *pattern, size_t len, int literal, lq_error *err) {
    re->code = NULL;
    if (literal) return compile(re, pattern, len, PCRE2_LITERAL, err);
    tok_buf o = {0};
    if (translate(pattern, len, &o) != 0) {
        tok_buf_free(&o);
        return lq_fail(err, "out of memory");
    }
    int rc = compile(re, o.p, o.len, PCRE2_MULTILINE, err);
    if (rc != 0) {
        /* Report the error against the pattern the user wrote. */
        char shown[120];
        size_t n = len < sizeof shown - 1 ? len : sizeof shown - 1;
        memcpy(shown, pattern, n);
        shown[n] = '\0';
        lq_error_prefix(err, "regex '%s'%s", shown, n < len ? "..." : "");
    }
    tok_buf_free(&o);
    return rc;
}

int tok_regex_compile_pcre(tok_regex *re, const char *pattern, lq_error *err) {
    return compile(re, pattern, strlen(pattern), 0, err);
}

void tok_regex_free(tok_regex *re) {
    pcre2_code_free(re->code);
    re->code = NULL;
}

static int push_span(tok_spans *s, size_t start, size_t end) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        tok_span *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (tok_span){start, end};
    return 0;
}

static int match_at(const tok_regex *re, const char *s, size_t len, size_t from, tok_ctx *ctx, lq_error *err) {
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, ctx->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter keeps its stack on the heap */
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, ctx->md, NULL);
    if (rc >= 0) return 1; /* 0 means the ovector was too small for the groups: still a match */
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return lq_fail(err, "regex match failed: %s", (char *)msg);
}

int tok_regex_find_all(const tok_regex *re, const char *s, size_t len, tok_ctx *ctx, lq_error *err) {
    ctx->spans.n = 0;
    size_t from = 0;
    int have_last = 0;
    size_t last_end = 0;
    while (from <= len) {
        int m = match_at(re, s, len, from, ctx, err);
        if (m < 0) return -1;
        if (m == 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ctx->md);
        size_t b = ov[0], e = ov[1];
        if (e < b) e = b; /* \K can make a match end before it starts */
        if (b == e && have_last && last_end == e) {
            from += from < len ? lq_utf8_char_len((unsigned char)s[from]) : 1;
            continue;
        }
        if (push_span(&ctx->spans, b, e) != 0) return lq_fail(err, "out of memory");
        have_last = 1;
        last_end = e;
        from = e; /* after an empty match the same search repeats, is skipped, and moves on */
    }
    return 0;
}

int tok_ctx_init(tok_ctx *c, lq_error *err) {
    memset(c, 0, sizeof *c);
    c->md = pcre2_match_data_create(1, NULL);
    if (!c->md) return lq_fail(err, "out of memory");
    return 0;
}

void tok_ctx_free(tok_ctx *c) {
    pcre2_match_data_free(c->md);
    free(c->spans.v);
    free(c->syms);
    free(c->heap);
    tok_buf_free(&c->tmp);
    tok_buf_free(&c->tmp2);
    memset(c, 0, sizeof *c);
}
