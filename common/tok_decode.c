/* tok_decode.c — decoders (token strings -> text) and streaming decode.
 *
 * A decoder maps the list of token strings to another list; Sequence chains
 * them and the final text is the concatenation (with no decoder, tokens are
 * joined with spaces). Only two steps look beyond one token: ByteLevel turns
 * all tokens into one byte string and repairs invalid UTF-8 once over the
 * whole of it, and ByteFallback decodes a run of "<0xXX>" tokens together —
 * as one string when the run is valid UTF-8, else as one U+FFFD per byte.
 * Metaspace (drops every '▁' of the first token) and Strip after Fuse (trims
 * the start of the text) treat the start specially.
 *
 * Streaming keeps a window of recent ids and re-decodes it on every push;
 * the new text is what the window's decode gained beyond what was already
 * sent. Text that a later id could still change is held back: a trailing
 * U+FFFD (an unfinished UTF-8 sequence) and, with ByteFallback, everything
 * while the last token is a byte token (one more invalid byte would turn the
 * whole run into U+FFFDs). Once the window's text is all sent, the window is
 * cut down to its last two visible tokens: they absorb the start-of-text
 * treatment, so what later ids add decodes exactly as in the full text. */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static const char REPLACEMENT[] = "\xef\xbf\xbd";

/* ---- the decoders ---- */

int tok_is_byte_token(const char *s, size_t len, uint8_t *byte) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    /* u8::from_str_radix(s[3..5], 16), which also accepts "+X" */
    const char *d = s + 3;
    int n = 2;
    if (d[0] == '+') d++, n = 1;
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        char c = d[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (x < 0) return 0;
        v = v * 16 + (unsigned)x;
    }
    if (byte) *byte = (uint8_t)v;
    return 1;
}

static int push(tok_list *out, const char *s, size_t len, lq_error *err) {
    return tok_list_push(out, s, len, -1, 0) ? lq_fail(err, "out of memory") : 0;
}

/* All tokens' bytes (chars of the byte map -> bytes, else the token as is), repaired once. */
static int dec_bytelevel(tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    tok_buf *bytes = &ctx->tmp;
    bytes->len = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_piece_text(in, i);
        size_t len = in->v[i].len, start = bytes->len;
        if (tok_buf_reserve(bytes, len) != 0) return lq_fail(err, "out of memory");
        int mapped = 1;
        for (size_t j = 0; j < len && mapped;) {
            int b = tok_char_to_byte(lq_utf8_next(s, &j));
            if (b < 0) mapped = 0;
            else bytes->p[bytes->len++] = (char)b;
        }
        if (!mapped) {
            bytes->len = start;
            if (tok_buf_put(bytes, s, len) != 0) return lq_fail(err, "out of memory");
        }
    }
    tok_buf *text = &ctx->tmp2;
    text->len = 0;
    if (tok_buf_reserve(text, 3 * bytes->len) != 0) return lq_fail(err, "out of memory");
    text->len = lq_utf8_repair(bytes->p, bytes->len, text->p);
    return push(out, text->p, text->len, err);
}

static int dec_metaspace(const tok_dec *d, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    tok_buf *t = &ctx->tmp;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_piece_text(in, i);
        size_t len = in->v[i].len;
        t->len = 0;
        for (size_t j = 0; j < len;) {
            size_t at = j;
            uint32_t c = lq_utf8_next(s, &j);
            int rc = 0;
            if (c != d->ch) rc = tok_buf_put(t, s + at, j - at);
            else if (!(i == 0 && d->drop_first)) rc = tok_buf_put(t, " ", 1);
            if (rc) return lq_fail(err, "out of memory");
        }
        if (push(out, t->p ? t->p : "", t->len, err) != 0) return -1;
    }
    return 0;
}

static int dec_replace(const tok_dec *d, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    tok_buf s = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < in->n; i++) {
        s.len = 0;
        if (tok_buf_put(&s, tok_piece_text(in, i), in->v[i].len) != 0) rc = lq_fail(err, "out of memory");
        if (rc == 0) rc = tok_replace_all(&d->re, d->str, d->str_len, &s, &ctx->tmp, ctx, err);
        if (rc == 0) rc = push(out, s.p, s.len, err);
    }
    tok_buf_free(&s);
    return rc;
}

static int flush_bytes(tok_buf *run, tok_list *out, lq_error *err) {
    if (run->len == 0) return 0;
    int rc = 0;
    if (lq_utf8_valid_prefix(run->p, run->len) == run->len) rc = push(out, run->p, run->len, err);
    else
        for (size_t i = 0; rc == 0 && i < run->len; i++) rc = push(out, REPLACEMENT, 3, err);
    run->len = 0;
    return rc;
}

static int dec_bytefallback(tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    tok_buf *run = &ctx->tmp;
    run->len = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_piece_text(in, i);
        uint8_t b;
        if (tok_is_byte_token(s, in->v[i].len, &b)) {
            if (tok_buf_put(run, &b, 1) != 0) return lq_fail(err, "out of memory");
            continue;
        }
        if (flush_bytes(run, out, err) != 0 || push(out, s, in->v[i].len, err) != 0) return -1;
    }
    return flush_bytes(run, out, err);
}

static int dec_fuse(tok_list *in, tok_list *out, lq_error *err) {
    tok_buf *all = &in->text; /* pieces are stored back to back, but may have gaps: rebuild */
    tok_buf joined = {0};
    for (size_t i = 0; i < in->n; i++)
        if (tok_buf_put(&joined, all->p + in->v[i].off, in->v[i].len) != 0) {
            tok_buf_free(&joined);
            return lq_fail(err, "out of memory");
        }
    int rc = push(out, joined.p ? joined.p : "", joined.len, err);
    tok_buf_free(&joined);
    return rc;
}

/* Removes up to `start` leading and `stop` trailing copies of the character
 * (the library would panic when both ends overlap; we stop at the middle). */
static int dec_strip(const tok_dec *d, tok_list *in, tok_list *out, lq_error *err) {
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_piece_text(in, i);
        size_t len = in->v[i].len, b = 0, e = len;
        for (size_t k = 0; k < d->start && b < e; k++) {
            size_t j = b;
            if (lq_utf8_next(s, &j) != d->ch) break;
            b = j;
        }
        for (size_t k = 0; k < d->stop && e > b; k++) {
            size_t j = e - 1;
            while (j > b && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
            size_t q = j;
            if (lq_utf8_next(s, &q) != d->ch) break;
            e = j;
        }
        if (push(out, s + b, e - b, err) != 0) return -1;
    }
    return 0;
}

int tok_dec_apply(const tok_dec *d, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err) {
    switch (d->type) {
    case DEC_BYTELEVEL: return dec_bytelevel(in, out, ctx, err);
    case DEC_METASPACE: return dec_metaspace(d, in, out, ctx, err);
    case DEC_REPLACE: return dec_replace(d, in, out, ctx, err);
    case DEC_BYTEFALLBACK: return dec_bytefallback(in, out, ctx, err);
    case DEC_FUSE: return dec_fuse(in, out, err);
    case DEC_STRIP: return dec_strip(d, in, out, err);
    case DEC_SEQUENCE: break;
    }
    tok_list a = {0}, b = {0};
    tok_list *src = in;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < d->n_items; k++) {
        tok_list *dst = k + 1 == d->n_items ? out : (src == &a ? &b : &a);
        tok_list_clear(dst);
        rc = tok_dec_apply(&d->items[k], src, dst, ctx, err);
        src = dst;
    }
    if (rc == 0 && d->n_items == 0)
        for (size_t i = 0; rc == 0 && i < in->n; i++) rc = push(out, tok_piece_text(in, i), in->v[i].len, err);
    tok_list_free(&a);
    tok_list_free(&b);
    return rc;
}

int tok_dec_uses(const tok_dec *d, tok_dec_type type) {
    if (d->type == type) return 1;
    for (size_t i = 0; i < d->n_items; i++)
        if (tok_dec_uses(&d->items[i], type)) return 1;
    return 0;
}

/* ---- whole decode ---- */

static int visible(const lq_tokenizer *tok, int32_t id, int skip_special) {
    return id >= 0 && (size_t)id < tok->n_ids && tok->id_str[id] && !(skip_special && tok->id_special[id]);
}

int tok_decode_into(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, tok_buf *out,
                    tok_ctx *ctx, lq_error *err) {
    tok_list tokens = {0}, result = {0};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (visible(tok, ids[i], skip_special))
            rc = push(&tokens, tok->id_str[ids[i]], tok->id_len[ids[i]], err);
    tok_list *final = &tokens;
    if (rc == 0 && tok->has_dec) {
        rc = tok_dec_apply(&tok->dec, &tokens, &result, ctx, err);
        final = &result;
    }
    for (size_t i = 0; rc == 0 && i < final->n; i++) {
        if (!tok->has_dec && i > 0 && tok_buf_put(out, " ", 1) != 0) rc = lq_fail(err, "out of memory");
        else if (tok_buf_put(out, tok_piece_text(final, i), final->v[i].len) != 0) rc = lq_fail(err, "out of memory");
    }
    if (rc == 0 && tok_buf_put(out, "", 0) != 0) rc = lq_fail(err, "out of memory");
    tok_list_free(&tokens);
    tok_list_free(&result);
    return rc;
}

/* ---- streaming ---- */

struct lq_tok_stream {
    const lq_tokenizer *tok;
    int skip_special;
    int hold_byte_runs; /* the decoder has ByteFallback */
    tok_ids window;
    size_t sent;        /* bytes of the window's decode already returned */
    tok_buf text, out, tail;
    tok_ctx ctx;
};

lq_tok_stream *tok_stream_new(const lq_tokenizer *tok, int skip_special) {
    lq_tok_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->tok = tok;
    s->skip_special = skip_special;
    s->hold_byte_runs = tok->has_dec && tok_dec_uses(&tok->dec, DEC_BYTEFALLBACK);
    if (tok_ctx_init(&s->ctx, NULL) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void tok_stream_free(lq_tok_stream *s) {
    if (!s) return;
    free(s->window.v);
    tok_buf_free(&s->text);
    tok_buf_free(&s->out);
    tok_buf_free(&s->tail);
    tok_ctx_free(&s->ctx);
    free(s);
}

static int decode_window(lq_tok_stream *s, size_t from, tok_buf *into, lq_error *err) {
    into->len = 0;
    const int32_t *ids = s->window.n ? s->window.v + from : NULL;
    return tok_decode_into(s->tok, ids, s->window.n - from, s->skip_special, into, &s->ctx, err);
}

/* How much of the window's text no later id can change. */
static size_t stable_length(const lq_tok_stream *s) {
    const tok_buf *t = &s->text;
    if (s->hold_byte_runs) {
        for (size_t i = s->window.n; i-- > 0;) {
            int32_t id = s->window.v[i];
            if (!visible(s->tok, id, s->skip_special)) continue;
            if (tok_is_byte_token(s->tok->id_str[id], s->tok->id_len[id], NULL)) return s->sent;
            break;
        }
    }
    size_t n = t->len;
    while (n >= 3 && n > s->sent && memcmp(t->p + n - 3, REPLACEMENT, 3) == 0) n -= 3;
    return n < s->sent ? s->sent : n;
}

/* Once all text is sent, keep only the last two visible tokens (and what follows them). */
static int shrink_window(lq_tok_stream *s, lq_error *err) {
    size_t seen = 0, from = s->window.n;
    while (from > 0 && seen < 2)
        if (visible(s->tok, s->window.v[--from], s->skip_special)) seen++;
    if (seen < 2 || from == 0) return 0;
    if (decode_window(s, from, &s->tail, err) != 0) return -1;
    /* Only cut if the shorter window's text is a suffix of the longer one's. */
    const tok_buf *t = &s->text, *u = &s->tail;
    if (u->len > t->len || memcmp(t->p + t->len - u->len, u->p, u->len) != 0) return 0;
    memmove(s->window.v, s->window.v + from, (s->window.n - from) * sizeof *s->window.v);
    s->window.n -= from;
    s->sent = u->len;
    return 0;
}

static int emit(lq_tok_stream *s, size_t upto, const char **text, size_t *len, lq_error *err) {
    s->out.len = 0;
    size_t from = s->sent < s->text.len ? s->sent : s->text.len;
    if (upto > from && tok_buf_put(&s->out, s->text.p + from, upto - from) != 0) return lq_fail(err, "out of memory");
    if (tok_buf_put(&s->out, "", 0) != 0) return lq_fail(err, "out of memory");
    if (upto > s->sent) s->sent = upto;
    *text = s->out.p;
    *len = s->out.len;
    return 0;
}

int tok_stream_push(lq_tok_stream *s, int32_t id, const char **text, size_t *len, lq_error *err) {
    if (tok_ids_push(&s->window, id) != 0) return lq_fail(err, "out of memory");
    if (decode_window(s, 0, &s->text, err) != 0) return -1;
    size_t stable = stable_length(s);
    if (emit(s, stable, text, len, err) != 0) return -1;
    if (stable == s->text.len && shrink_window(s, err) != 0) return -1;
    return 0;
}

int tok_stream_flush(lq_tok_stream *s, const char **text, size_t *len, lq_error *err) {
    if (decode_window(s, 0, &s->text, err) != 0) return -1;
    if (emit(s, s->text.len, text, len, err) != 0) return -1;
    s->window.n = 0;
    s->sent = 0;
    return 0;
}

/* ---- parsing ---- */

static int parse_sequence(json_t *j, tok_dec *d, const char *where, lq_error *err) {
    json_t *arr = json_object_get(j, "decoders");
    if (!json_is_array(arr)) return lq_fail(err, "%s: 'decoders' must be an array", where);
    d->type = DEC_SEQUENCE;
    size_t n = json_array_size(arr);
    d->items = calloc(n ? n : 1, sizeof *d->items);
    if (!d->items) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char sub[200];
        snprintf(sub, sizeof sub, "%s.decoders[%zu]", where, i);
        d->n_items = i + 1;
        if (tok_dec_parse(json_array_get(arr, i), &d->items[i], sub, err) != 0) return -1;
    }
    return 0;
}

static int parse_strip(json_t *j, tok_dec *d, const char *where, lq_error *err) {
    const char *c;
    size_t n;
    int64_t start = 0, stop = 0;
    d->type = DEC_STRIP;
    if (tok_json_string(j, "content", 1, &c, &n, where, err) != 0) return -1;
    if (n == 0 || lq_utf8_char_len((unsigned char)c[0]) != n)
        return lq_fail(err, "%s: 'content' must be exactly one character", where);
    size_t k = 0;
    d->ch = lq_utf8_next(c, &k);
    if (tok_json_uint(j, "start", 1, 1 << 20, &start, where, err) != 0 ||
        tok_json_uint(j, "stop", 1, 1 << 20, &stop, where, err) != 0)
        return -1;
    d->start = (size_t)start;
    d->stop = (size_t)stop;
    return 0;
}

static int parse_metaspace(json_t *j, tok_dec *d, const char *where, lq_error *err) {
    char repl[4];
    int n;
    tok_prepend_scheme scheme;
    d->type = DEC_METASPACE;
    if (tok_parse_metaspace(j, repl, &n, &scheme, where, err) != 0) return -1;
    size_t k = 0;
    d->ch = lq_utf8_next(repl, &k);
    d->drop_first = scheme != PREPEND_NEVER;
    return 0;
}

static int parse_replace(json_t *j, tok_dec *d, const char *where, lq_error *err) {
    const char *s;
    size_t n;
    d->type = DEC_REPLACE;
    if (tok_json_string(j, "content", 1, &s, &n, where, err) != 0) return -1;
    if (!(d->str = tok_strndup(s, n))) return lq_fail(err, "out of memory");
    d->str_len = n;
    return tok_parse_pattern(j, &d->re, where, err);
}

int tok_dec_parse(json_t *j, tok_dec *d, const char *where, lq_error *err) {
    memset(d, 0, sizeof *d);
    const char *type = tok_json_type(j, where, err);
    if (!type) return -1;
    if (!strcmp(type, "Sequence")) return parse_sequence(j, d, where, err);
    if (!strcmp(type, "ByteLevel")) return d->type = DEC_BYTELEVEL, 0;
    if (!strcmp(type, "ByteFallback")) return d->type = DEC_BYTEFALLBACK, 0;
    if (!strcmp(type, "Fuse")) return d->type = DEC_FUSE, 0;
    if (!strcmp(type, "Strip")) return parse_strip(j, d, where, err);
    if (!strcmp(type, "Metaspace")) return parse_metaspace(j, d, where, err);
    if (!strcmp(type, "Replace")) return parse_replace(j, d, where, err);
    return lq_fail(err, "%s: unsupported decoder type '%s'", where, type);
}

void tok_dec_free(tok_dec *d) {
    free(d->str);
    tok_regex_free(&d->re);
    for (size_t i = 0; i < d->n_items; i++) tok_dec_free(&d->items[i]);
    free(d->items);
    memset(d, 0, sizeof *d);
}
