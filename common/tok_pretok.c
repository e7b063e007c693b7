/* tok_pretok.c — pre-tokenizers: cutting normalized text into the "words"
 * the BPE model sees, as the tokenizers library cuts them.
 *
 * Almost everything is a Split: find the pattern's matches, label the pieces
 * between and at them as match / non-match (flipped by `invert`), then keep,
 * drop or merge them according to the behavior (Removed, Isolated,
 * MergedWithPrevious, MergedWithNext, Contiguous) with exactly the library's
 * folding rules, and drop empty pieces. Digits, Whitespace, WhitespaceSplit,
 * Punctuation, CharDelimiterSplit and BertPreTokenizer are Splits on built-in
 * patterns; ByteLevel (optional prefix space, the GPT-2 split, then the
 * byte -> printable-character mapping) and Metaspace (spaces -> '▁', optional
 * prepended '▁', split before each '▁') have their own code. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define WHITE_SPACE TOK_WHITE_SPACE_CLASS
/* char::is_ascii_punctuation() || general category P */
#define PUNCTUATION "[\\p{P}!-/:-@\\[-`{-~]"

/* ---- GPT-2 byte <-> character mapping ----
 * Printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the
 * other 68 bytes map, in byte order, to U+0100 and up. */

uint32_t tok_byte_to_char(uint8_t b) {
    if (b <= 32) return 256 + b;
    if (b >= 127 && b <= 160) return 256 + 33 + (b - 127);
    if (b == 173) return 256 + 33 + 34;
    return b;
}

int tok_char_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(cp - 289 + 127);
    if (cp == 323) return 173;
    return -1;
}

/* ---- splitting by matches ---- */

typedef struct seg {
    size_t start, end;
    int match;
} seg;

/* The library's find_matches: pieces covering s, each flagged match or not. */
static size_t label_pieces(const tok_spans *m, size_t len, int invert, seg *out) {
    size_t n = 0, prev = 0;
    if (len == 0) {
        out[n++] = (seg){0, 0, invert};
        return n;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].start != prev) out[n++] = (seg){prev, m->v[i].start, invert};
        out[n++] = (seg){m->v[i].start, m->v[i].end, !invert};
        prev = m->v[i].end;
    }
    if (prev != len) out[n++] = (seg){prev, len, invert};
    return n;
}

/* Applies the behavior in place; returns the number of kept pieces. */
static size_t apply_behavior(seg *v, size_t n, tok_split_behavior b) {
    size_t k = 0;
    int prev = 0;
    switch (b) {
    case TOK_SPLIT_ISOLATED:
        return n;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!v[i].match) v[k++] = v[i];
        return k;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            int m = v[i].match;
            if (m == prev && k > 0) v[k - 1].end = v[i].end;
            else v[k++] = v[i];
            prev = m;
        }
        return k;
    case TOK_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < n; i++) {
            int m = v[i].match;
            if (m && !prev && k > 0) v[k - 1].end = v[i].end;
            else v[k++] = v[i];
            prev = m;
        }
        return k;
    case TOK_SPLIT_MERGED_WITH_NEXT: {
        /* Walk backwards, building the result from the end of the array. */
        size_t w = n;
        for (size_t i = n; i-- > 0;) {
            int m = v[i].match;
            if (m && !prev && w < n) v[w].start = v[i].start;
            else v[--w] = v[i];
            prev = m;
        }
        memmove(v, v + w, (n - w) * sizeof *v);
        return n - w;
    }
    }
    return n;
}

/* Splits one piece s[0..len) by the matches in ctx->spans into out. */
static int split_piece(const char *s, size_t len, int first, tok_split_behavior b, int invert, tok_ctx *ctx,
                       tok_list *out, lq_error *err) {
    size_t max = 2 * ctx->spans.n + 2;
    seg *v = malloc(max * sizeof *v);
    if (!v) return lq_fail(err, "out of memory");
    size_t n = apply_behavior(v, label_pieces(&ctx->spans, len, invert, v), b);
    for (size_t i = 0; i < n; i++) {
        if (v[i].end <= v[i].start) continue;
        if (tok_list_push(out, s + v[i].start, v[i].end - v[i].start, -1, first && v[i].start == 0) != 0) {
            free(v);
            return lq_fail(err, "out of memory");
        }
    }
    free(v);
    return 0;
}

static int split_by_regex(const tok_pretok *p, const char *s, size_t len, int first, tok_ctx *ctx, tok_list *out,
                          lq_error *err) {
    if (tok_regex_find_all(&p->re, s, len, ctx, err) != 0) return -1;
    return split_piece(s, len, first, p->behavior, p->invert, ctx, out, err);
}

/* ---- ByteLevel ---- */

static int push_byte_mapped(const char *s, size_t len, int first, tok_list *out, tok_buf *tmp, lq_error *err) {
    tmp->len = 0;
    if (tok_buf_reserve(tmp, 2 * len) != 0) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < len; i++)
        tmp->len += (size_t)lq_utf8_put(tmp->p + tmp->len, tok_byte_to_char((uint8_t)s[i]));
    if (tok_list_push(out, tmp->p, tmp->len, -1, first) != 0) return lq_fail(err, "out of memory");
    return 0;
}

static int bytelevel_piece(const tok_pretok *p, const char *s, size_t len, int first, tok_ctx *ctx, tok_list *out,
                           lq_error *err) {
    tok_buf *t = &ctx->tmp2;
    t->len = 0;
    if (p->add_prefix_space && (len == 0 || s[0] != ' ') && tok_buf_put(t, " ", 1) != 0)
        return lq_fail(err, "out of memory");
    if (tok_buf_put(t, s, len) != 0) return lq_fail(err, "out of memory");
    if (!p->use_regex) return push_byte_mapped(t->p, t->len, first, out, &ctx->tmp, err);
    tok_list words = {0};
    int rc = tok_regex_find_all(&p->re, t->p, t->len, ctx, err);
    if (rc == 0) rc = split_piece(t->p, t->len, first, TOK_SPLIT_ISOLATED, 0, ctx, &words, err);
    for (size_t i = 0; rc == 0 && i < words.n; i++)
        rc = push_byte_mapped(tok_piece_text(&words, i), words.v[i].len, words.v[i].first, out, &ctx->tmp, err);
    tok_list_free(&words);
    return rc;
}

/* ---- Metaspace ---- */

static int metaspace_piece(const tok_pretok *p, const char *s, size_t len, int first, tok_ctx *ctx, tok_list *out,
                           lq_error *err) {
    tok_buf *t = &ctx->tmp2;
    t->len = 0;
    for (size_t i = 0; i < len; i++) {
        int rc = s[i] == ' ' ? tok_buf_put(t, p->repl, (size_t)p->repl_len) : tok_buf_put(t, s + i, 1);
        if (rc != 0) return lq_fail(err, "out of memory");
    }
    int starts = t->len >= (size_t)p->repl_len && memcmp(t->p, p->repl, (size_t)p->repl_len) == 0;
    int prepend = !starts && (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && first));
    if (prepend) {
        if (tok_buf_reserve(t, (size_t)p->repl_len) != 0) return lq_fail(err, "out of memory");
        memmove(t->p + p->repl_len, t->p, t->len + 1);
        memcpy(t->p, p->repl, (size_t)p->repl_len);
        t->len += (size_t)p->repl_len;
    }
    if (!p->split) {
        if (t->len && tok_list_push(out, t->p, t->len, -1, first) != 0) return lq_fail(err, "out of memory");
        return 0;
    }
    /* Every replacement character is a match, merged with what follows it. */
    ctx->spans.n = 0;
    const char *q = t->p, *end = t->p + t->len;
    while ((q = memmem(q, (size_t)(end - q), p->repl, (size_t)p->repl_len)) != NULL) {
        if (ctx->spans.n == ctx->spans.cap) {
            size_t cap = ctx->spans.cap ? ctx->spans.cap * 2 : 64;
            tok_span *v = realloc(ctx->spans.v, cap * sizeof *v);
            if (!v) return lq_fail(err, "out of memory");
            ctx->spans.v = v;
            ctx->spans.cap = cap;
        }
        size_t at = (size_t)(q - t->p);
        ctx->spans.v[ctx->spans.n++] = (tok_span){at, at + (size_t)p->repl_len};
        q += p->repl_len;
    }
    return split_piece(t->p, t->len, first, TOK_SPLIT_MERGED_WITH_NEXT, 0, ctx, out, err);
}

/* ---- apply ---- */

static int apply_one(const tok_pretok *p, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    for (size_t i = 0; i < in->n; i++) {
        const tok_piece *pc = &in->v[i];
        const char *s = tok_piece_text(in, i);
        int rc;
        if (pc->id >= 0) rc = tok_list_push(out, s, pc->len, pc->id, pc->first) ? lq_fail(err, "out of memory") : 0;
        else if (pc->len == 0) rc = 0;
        else if (p->type == PRE_BYTELEVEL) rc = bytelevel_piece(p, s, pc->len, pc->first, ctx, out, err);
        else if (p->type == PRE_METASPACE) rc = metaspace_piece(p, s, pc->len, pc->first, ctx, out, err);
        else rc = split_by_regex(p, s, pc->len, pc->first, ctx, out, err);
        if (rc != 0) return -1;
    }
    return 0;
}

int tok_pretok_apply(const tok_pretok *p, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    if (p->type != PRE_SEQUENCE) return apply_one(p, in, out, ctx, err);
    if (p->n_items == 0) {
        for (size_t i = 0; i < in->n; i++)
            if (tok_list_push(out, tok_piece_text(in, i), in->v[i].len, in->v[i].id, in->v[i].first) != 0)
                return lq_fail(err, "out of memory");
        return 0;
    }
    tok_list a = {0}, b = {0};
    tok_list *src = in;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < p->n_items; k++) {
        tok_list *dst = k + 1 == p->n_items ? out : (src == &a ? &b : &a);
        tok_list_clear(dst);
        rc = tok_pretok_apply(&p->items[k], src, dst, ctx, err);
        src = dst;
    }
    tok_list_free(&a);
    tok_list_free(&b);
    return rc;
}

/* ---- parsing ---- */

static int parse_behavior(json_t *j, const char *key, int required, tok_split_behavior dflt, tok_split_behavior *out,
                          const char *where, lq_error *err) {
    const char *s;
    if (tok_json_string(j, key, required, &s, NULL, where, err) != 0) return -1;
    *out = dflt;
    if (!s) return 0;
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            *out = (tok_split_behavior)i;
            return 0;
        }
    return lq_fail(err, "%s: unknown split behavior '%s'", where, s);
}

int tok_parse_pattern(json_t *j, tok_regex *re, const char *where, lq_error *err) {
    json_t *pat = json_object_get(j, "pattern");
    if (!json_is_object(pat)) return lq_fail(err, "%s: 'pattern' must be an object {\"String\"|\"Regex\": ...}", where);
    json_t *str = json_object_get(pat, "String"), *rx = json_object_get(pat, "Regex");
    json_t *v = str ? str : rx;
    if (!v || json_object_size(pat) != 1 || !json_is_string(v))
        return lq_fail(err, "%s: 'pattern' must hold one string, under \"String\" or \"Regex\"", where);
    if (tok_regex_compile(re, json_string_value(v), json_string_length(v), str != NULL, err) != 0) {
        lq_error_prefix(err, "%s", where);
        return -1;
    }
    return 0;
}

static int builtin_split(tok_pretok *p, const char *pcre, tok_split_behavior b, int invert, const char *where,
                         lq_error *err) {
    p->type = PRE_SPLIT;
    p->behavior = b;
    p->invert = invert;
    if (tok_regex_compile_pcre(&p->re, pcre, err) != 0) {
        lq_error_prefix(err, "%s", where);
        return -1;
    }
    p->has_re = 1;
    return 0;
}

/* Whitespace keeps the runs of Rust's \\w+ and [^\\w\\s]+ and drops the rest. */
static int parse_whitespace(tok_pretok *p, const char *where, lq_error *err) {
    tok_buf pat = {0};
    const char *parts[] = {"[", tok_word_class, "\\x{200C}\\x{200D}]+|[^", tok_word_class,
                           "\\x{200C}\\x{200D}" WHITE_SPACE "]+"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (tok_buf_put(&pat, parts[i], strlen(parts[i])) != 0) return tok_buf_free(&pat), lq_fail(err, "out of memory");
    int rc = builtin_split(p, pat.p, TOK_SPLIT_REMOVED, 1, where, err);
    tok_buf_free(&pat);
    return rc;
}

static int parse_sequence(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    json_t *arr = json_object_get(j, "pretokenizers");
    if (!json_is_array(arr)) return lq_fail(err, "%s: 'pretokenizers' must be an array", where);
    p->type = PRE_SEQUENCE;
    size_t n = json_array_size(arr);
    p->items = calloc(n ? n : 1, sizeof *p->items);
    if (!p->items) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char sub[200];
        snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
        p->n_items = i + 1;
        if (tok_pretok_parse(json_array_get(arr, i), &p->items[i], sub, err) != 0) return -1;
    }
    return 0;
}

static int parse_bytelevel(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    p->type = PRE_BYTELEVEL;
    if (tok_json_bool(j, "add_prefix_space", 1, &p->add_prefix_space, where, err) != 0 ||
        tok_json_bool(j, "use_regex", 1, &p->use_regex, where, err) != 0)
        return -1;
    if (!p->use_regex) return 0;
    if (tok_regex_compile(&p->re, GPT2_PATTERN, strlen(GPT2_PATTERN), 0, err) != 0) return -1;
    p->has_re = 1;
    return 0;
}

static int parse_split(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    p->type = PRE_SPLIT;
    if (parse_behavior(j, "behavior", 1, TOK_SPLIT_ISOLATED, &p->behavior, where, err) != 0 ||
        tok_json_bool(j, "invert", 0, &p->invert, where, err) != 0)
        return -1;
    if (tok_parse_pattern(j, &p->re, where, err) != 0) return -1;
    p->has_re = 1;
    return 0;
}

int tok_parse_metaspace(json_t *j, char repl[4], int *repl_len, tok_prepend_scheme *scheme, const char *where,
                        lq_error *err) {
    const char *r, *ps;
    size_t rlen;
    if (tok_json_string(j, "replacement", 0, &r, &rlen, where, err) != 0) return -1;
    if (!r) r = "\xe2\x96\x81", rlen = 3;
    if (rlen == 0 || rlen > 4 || lq_utf8_char_len((unsigned char)r[0]) != rlen)
        return lq_fail(err, "%s: 'replacement' must be exactly one character", where);
    memcpy(repl, r, rlen);
    *repl_len = (int)rlen;
    if (tok_json_string(j, "prepend_scheme", 0, &ps, NULL, where, err) != 0) return -1;
    if (ps) {
        if (!strcmp(ps, "always")) *scheme = PREPEND_ALWAYS;
        else if (!strcmp(ps, "first")) *scheme = PREPEND_FIRST;
        else if (!strcmp(ps, "never")) *scheme = PREPEND_NEVER;
        else return lq_fail(err, "%s: unknown prepend_scheme '%s' (want always, first or never)", where, ps);
        return 0;
    }
    int add;
    if (tok_json_bool(j, "add_prefix_space", 1, &add, where, err) != 0) return -1;
    *scheme = add ? PREPEND_ALWAYS : PREPEND_NEVER;
    return 0;
}

static int parse_metaspace(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    p->type = PRE_METASPACE;
    if (tok_parse_metaspace(j, p->repl, &p->repl_len, &p->prepend, where, err) != 0) return -1;
    return tok_json_bool(j, "split", 1, &p->split, where, err);
}

static int parse_digits(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    int individual;
    if (tok_json_bool(j, "individual_digits", 0, &individual, where, err) != 0) return -1;
    /* char::is_numeric is general category N; "contiguous" digits form one piece. */
    p->type = PRE_SPLIT;
    p->behavior = TOK_SPLIT_ISOLATED;
    const char *pat = individual ? "\\p{N}" : "\\p{N}+";
    if (tok_regex_compile(&p->re, pat, strlen(pat), 0, err) != 0) return -1;
    p->has_re = 1;
    return 0;
}

static int parse_char_delimiter(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    const char *d;
    size_t n;
    if (tok_json_string(j, "delimiter", 1, &d, &n, where, err) != 0) return -1;
    if (n == 0 || lq_utf8_char_len((unsigned char)d[0]) != n)
        return lq_fail(err, "%s: 'delimiter' must be exactly one character", where);
    p->type = PRE_SPLIT;
    p->behavior = TOK_SPLIT_REMOVED;
    if (tok_regex_compile(&p->re, d, n, 1, err) != 0) return -1;
    p->has_re = 1;
    return 0;
}

static int parse_bert(tok_pretok *p, const char *where, lq_error *err) {
    p->type = PRE_SEQUENCE;
    p->items = calloc(2, sizeof *p->items);
    if (!p->items) return lq_fail(err, "out of memory");
    p->n_items = 2;
    if (builtin_split(&p->items[0], "[" WHITE_SPACE "]", TOK_SPLIT_REMOVED, 0, where, err) != 0) return -1;
    return builtin_split(&p->items[1], PUNCTUATION, TOK_SPLIT_ISOLATED, 0, where, err);
}

int tok_pretok_parse(json_t *j, tok_pretok *p, const char *where, lq_error *err) {
    memset(p, 0, sizeof *p);
    const char *type = tok_json_type(j, where, err);
    if (!type) return -1;
    if (!strcmp(type, "Sequence")) return parse_sequence(j, p, where, err);
    if (!strcmp(type, "ByteLevel")) return parse_bytelevel(j, p, where, err);
    if (!strcmp(type, "Split")) return parse_split(j, p, where, err);
    if (!strcmp(type, "Metaspace")) return parse_metaspace(j, p, where, err);
    if (!strcmp(type, "Digits")) return parse_digits(j, p, where, err);
    if (!strcmp(type, "CharDelimiterSplit")) return parse_char_delimiter(j, p, where, err);
    if (!strcmp(type, "BertPreTokenizer")) return parse_bert(p, where, err);
    if (!strcmp(type, "Whitespace")) return parse_whitespace(p, where, err);
    if (!strcmp(type, "WhitespaceSplit"))
        return builtin_split(p, "[" WHITE_SPACE "]", TOK_SPLIT_REMOVED, 0, where, err);
    if (!strcmp(type, "Punctuation")) {
        tok_split_behavior b;
        if (parse_behavior(j, "behavior", 0, TOK_SPLIT_ISOLATED, &b, where, err) != 0) return -1;
        return builtin_split(p, PUNCTUATION, b, 0, where, err);
    }
    return lq_fail(err, "%s: unsupported pre-tokenizer type '%s'", where, type);
}

void tok_pretok_free(tok_pretok *p) {
    if (p->has_re) tok_regex_free(&p->re);
    for (size_t i = 0; i < p->n_items; i++) tok_pretok_free(&p->items[i]);
    free(p->items);
    memset(p, 0, sizeof *p);
}
