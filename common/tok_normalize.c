/* tok_normalize.c — normalizers: rewrite a piece of text before it is split.
 *
 * Each normalizer maps one UTF-8 string to another, in place through the
 * per-call scratch buffer. Unicode normalization forms come from utf8proc;
 * Lowercase follows Rust's char::to_lowercase (full mapping, so 'İ' becomes
 * "i̇"); Strip trims White_Space; Prepend does nothing to an empty string,
 * as in the library; Replace substitutes every match of a String or Regex
 * pattern. We only track where the text came from as far as Metaspace's
 * prepend_scheme "first" needs, which the piece list does. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "utf8.h"

/* Replaces s's contents with t's (swapping buffers, no copy). */
static void take(tok_buf *s, tok_buf *t) {
    tok_buf x = *s;
    *s = *t;
    *t = x;
}

/* Characters the library's normalization data leaves alone (assigned after
 * its Unicode version) but utf8proc's decomposes: compatibility forms from
 * Unicode 13-15, and Dives Akuru's AA / O vowel signs (11935 + 11930 would
 * compose to 11938). They are starters, so normalizing around them piecewise
 * is exact. */
static const uint32_t frozen[][2] = {
    {0x32FF, 0x32FF},   {0xA7F2, 0xA7F4},   {0xAB69, 0xAB69},   {0x10781, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x11930, 0x11930}, {0x11938, 0x11938}, {0x1E030, 0x1E06D}, {0x1F16C, 0x1F16C},
    {0x1FBF0, 0x1FBF9},
};

static int is_frozen(uint32_t c) {
    if (c < 0x32FF) return 0;
    for (size_t i = 0; i < sizeof frozen / sizeof frozen[0]; i++)
        if (c >= frozen[i][0] && c <= frozen[i][1]) return 1;
    return 0;
}

static int map_span(utf8proc_option_t opts, const char *s, size_t len, tok_buf *out, lq_error *err) {
    if (len == 0) return 0;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, opts);
    if (n < 0) return lq_fail(err, "unicode normalization failed: %s", utf8proc_errmsg(n));
    int rc = tok_buf_put(out, dst, (size_t)n);
    free(dst);
    return rc ? lq_fail(err, "out of memory") : 0;
}

static int unicode_form(utf8proc_option_t opts, tok_buf *s, tok_buf *t, lq_error *err) {
    t->len = 0;
    size_t start = 0;
    for (size_t i = 0; i < s->len;) {
        size_t at = i;
        if (!is_frozen(lq_utf8_next(s->p, &i))) continue;
        if (map_span(opts, s->p + start, at - start, t, err) != 0) return -1;
        if (tok_buf_put(t, s->p + at, i - at) != 0) return lq_fail(err, "out of memory");
        start = i;
    }
    if (map_span(opts, s->p + start, s->len - start, t, err) != 0 || tok_buf_put(t, "", 0) != 0) return -1;
    take(s, t);
    return 0;
}

/* Lowercase mappings the library has (Unicode 16/17) and utf8proc (15) lacks:
 * single code points, then ranges mapped by a fixed offset. */
static const uint32_t new_lower[][3] = {
    {0x1C89, 0x1C89, 0x1C8A},   {0xA7CB, 0xA7CB, 0x0264},   {0xA7CC, 0xA7CC, 0xA7CD}, {0xA7CE, 0xA7CE, 0xA7CF},
    {0xA7D2, 0xA7D2, 0xA7D3},   {0xA7D4, 0xA7D4, 0xA7D5},   {0xA7DA, 0xA7DA, 0xA7DB}, {0xA7DC, 0xA7DC, 0x019B},
    {0x10D50, 0x10D65, 0x10D70}, {0x16EA0, 0x16EB8, 0x16EBB},
};

static uint32_t to_lower(uint32_t c) {
    for (size_t i = 0; i < sizeof new_lower / sizeof new_lower[0]; i++)
        if (c >= new_lower[i][0] && c <= new_lower[i][1]) return new_lower[i][2] + (c - new_lower[i][0]);
    return (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
}

static int lowercase(tok_buf *s, tok_buf *t, lq_error *err) {
    t->len = 0;
    if (tok_buf_reserve(t, s->len + 8) != 0) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < s->len;) {
        uint32_t c = lq_utf8_next(s->p, &i);
        char out[8];
        int n;
        if (c == 0x130) { /* the one unconditional multi-character lowercase mapping */
            n = lq_utf8_put(out, 'i');
            n += lq_utf8_put(out + n, 0x307);
        } else {
            n = lq_utf8_put(out, to_lower(c));
        }
        if (tok_buf_put(t, out, (size_t)n) != 0) return lq_fail(err, "out of memory");
    }
    take(s, t);
    return 0;
}

static void strip(tok_buf *s, int left, int right) {
    size_t start = 0, end = s->len;
    if (left) {
        while (start < end) {
            size_t j = start;
            if (!tok_is_whitespace(lq_utf8_next(s->p, &j))) break;
            start = j;
        }
    }
    if (right) {
        while (end > start) {
            size_t j = end - 1;
            while (j > start && ((unsigned char)s->p[j] & 0xC0) == 0x80) j--;
            size_t k = j;
            if (!tok_is_whitespace(lq_utf8_next(s->p, &k))) break;
            end = j;
        }
    }
    memmove(s->p, s->p + start, end - start);
    s->len = end - start;
    s->p[s->len] = '\0';
}

static int prepend(tok_buf *s, const char *str, size_t n, lq_error *err) {
    if (s->len == 0) return 0;
    if (tok_buf_reserve(s, n) != 0) return lq_fail(err, "out of memory");
    memmove(s->p + n, s->p, s->len + 1);
    memcpy(s->p, str, n);
    s->len += n;
    return 0;
}

int tok_replace_all(const tok_regex *re, const char *content, size_t content_len, tok_buf *s, tok_buf *t,
                    tok_ctx *ctx, lq_error *err) {
    if (tok_regex_find_all(re, s->p, s->len, ctx, err) != 0) return -1;
    if (ctx->spans.n == 0) return 0;
    t->len = 0;
    size_t prev = 0;
    for (size_t i = 0; i < ctx->spans.n; i++) {
        const tok_span *m = &ctx->spans.v[i];
        if (tok_buf_put(t, s->p + prev, m->start - prev) != 0 || tok_buf_put(t, content, content_len) != 0)
            return lq_fail(err, "out of memory");
        prev = m->end;
    }
    if (tok_buf_put(t, s->p + prev, s->len - prev) != 0) return lq_fail(err, "out of memory");
    take(s, t);
    return 0;
}

static int bytelevel(tok_buf *s, tok_buf *t, lq_error *err) {
    t->len = 0;
    if (tok_buf_reserve(t, 2 * s->len) != 0) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < s->len; i++) t->len += (size_t)lq_utf8_put(t->p + t->len, tok_byte_to_char((uint8_t)s->p[i]));
    t->p[t->len] = '\0';
    take(s, t);
    return 0;
}

int tok_norm_apply(const tok_norm *n, tok_buf *s, tok_ctx *ctx, lq_error *err) {
    switch (n->type) {
    case NORM_SEQUENCE:
        for (size_t i = 0; i < n->n_items; i++)
            if (tok_norm_apply(&n->items[i], s, ctx, err) != 0) return -1;
        return 0;
    case NORM_NFC: return unicode_form(UTF8PROC_STABLE | UTF8PROC_COMPOSE, s, &ctx->tmp, err);
    case NORM_NFD: return unicode_form(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, s, &ctx->tmp, err);
    case NORM_NFKC: return unicode_form(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, s, &ctx->tmp, err);
    case NORM_NFKD: return unicode_form(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, s, &ctx->tmp, err);
    case NORM_LOWERCASE: return lowercase(s, &ctx->tmp, err);
    case NORM_STRIP: strip(s, n->left, n->right); return 0;
    case NORM_PREPEND: return prepend(s, n->str, n->str_len, err);
    case NORM_REPLACE: return tok_replace_all(&n->re, n->str, n->str_len, s, &ctx->tmp, ctx, err);
    case NORM_BYTELEVEL: return bytelevel(s, &ctx->tmp, err);
    }
    return 0;
}

/* ---- parsing ---- */

static int parse_sequence(json_t *j, tok_norm *n, const char *where, lq_error *err) {
    json_t *arr = json_object_get(j, "normalizers");
    if (!json_is_array(arr)) return lq_fail(err, "%s: 'normalizers' must be an array", where);
    n->type = NORM_SEQUENCE;
    size_t count = json_array_size(arr);
    n->items = calloc(count ? count : 1, sizeof *n->items);
    if (!n->items) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < count; i++) {
        char sub[200];
        snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
        n->n_items = i + 1;
        if (tok_norm_parse(json_array_get(arr, i), &n->items[i], sub, err) != 0) return -1;
    }
    return 0;
}

static int copy_field(json_t *j, const char *key, tok_norm *n, const char *where, lq_error *err) {
    const char *s;
    size_t len;
    if (tok_json_string(j, key, 1, &s, &len, where, err) != 0) return -1;
    if (!(n->str = tok_strndup(s, len))) return lq_fail(err, "out of memory");
    n->str_len = len;
    return 0;
}

int tok_norm_parse(json_t *j, tok_norm *n, const char *where, lq_error *err) {
    memset(n, 0, sizeof *n);
    const char *type = tok_json_type(j, where, err);
    if (!type) return -1;
    static const struct {
        const char *name;
        tok_norm_type type;
    } simple[] = {{"NFC", NORM_NFC},       {"NFD", NORM_NFD},             {"NFKC", NORM_NFKC},
                  {"NFKD", NORM_NFKD},     {"Lowercase", NORM_LOWERCASE}, {"ByteLevel", NORM_BYTELEVEL}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (!strcmp(type, simple[i].name)) {
            n->type = simple[i].type;
            return 0;
        }
    if (!strcmp(type, "Sequence")) return parse_sequence(j, n, where, err);
    if (!strcmp(type, "Strip")) {
        n->type = NORM_STRIP;
        if (tok_json_bool(j, "strip_left", 1, &n->left, where, err) != 0) return -1;
        return tok_json_bool(j, "strip_right", 1, &n->right, where, err);
    }
    if (!strcmp(type, "Prepend")) {
        n->type = NORM_PREPEND;
        return copy_field(j, "prepend", n, where, err);
    }
    if (!strcmp(type, "Replace")) {
        n->type = NORM_REPLACE;
        if (copy_field(j, "content", n, where, err) != 0) return -1;
        return tok_parse_pattern(j, &n->re, where, err);
    }
    return lq_fail(err, "%s: unsupported normalizer type '%s'", where, type);
}

void tok_norm_free(tok_norm *n) {
    free(n->str);
    tok_regex_free(&n->re);
    for (size_t i = 0; i < n->n_items; i++) tok_norm_free(&n->items[i]);
    free(n->items);
    memset(n, 0, sizeof *n);
}
