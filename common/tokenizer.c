/* tokenizer.c — loading tokenizer.json, added tokens, and the encode
 * pipeline; the public API of tokenizer.h.
 *
 * Encoding follows the library step by step (see tok_internal.h for the
 * stages). Added tokens are found before anything else, leftmost-longest
 * with a byte trie, in two passes: tokens with normalized=false against the
 * raw text, then tokens with normalized=true against each remaining piece
 * after the normalizer ran, where the trie holds their normalized form. The
 * single_word, lstrip and rstrip options are applied exactly as the library
 * applies them, including its quirks (a rejected single_word match still
 * consumes its text; lstrip does not reach back past the previous token).
 *
 * Added-token ids: the library ignores the "id" written in added_tokens and
 * assigns one (the vocabulary's id, else the next id after the vocabulary).
 * A file whose written ids disagree would be tokenized with ids the model
 * does not expect, so we refuse it instead. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mapfile.h"
#include "tok_internal.h"
#include "utf8.h"

/* ---- added-token trie ---- */

static int trie_init(tok_trie *t) {
    memset(t, 0, sizeof *t);
    if (tok_u64map_init(&t->edges, 64) != 0) return -1;
    t->term = malloc(16 * sizeof *t->term);
    if (!t->term) return -1;
    t->cap = 16;
    t->n_nodes = 1;
    t->term[0] = -1;
    return 0;
}

static void trie_free(tok_trie *t) {
    tok_u64map_free(&t->edges);
    free(t->term);
    memset(t, 0, sizeof *t);
}

/* Adds a pattern; the first pattern added for a string keeps it (as the
 * library's automaton reports the lowest pattern index). */
static int trie_add(tok_trie *t, const char *s, size_t len, int32_t idx) {
    uint64_t node = 0;
    if (len) t->starts[(uint8_t)s[0]] = 1;
    for (size_t i = 0; i < len; i++) {
        uint64_t key = (node << 8) | (uint8_t)s[i], child;
        if (!tok_u64map_get(&t->edges, key, &child)) {
            if (t->n_nodes == t->cap) {
                int32_t *term = realloc(t->term, 2 * t->cap * sizeof *term);
                if (!term) return -1;
                t->term = term;
                t->cap *= 2;
            }
            child = t->n_nodes++;
            t->term[child] = -1;
            if (tok_u64map_put(&t->edges, key, child) != 0) return -1;
        }
        node = child;
    }
    if (t->term[node] < 0) t->term[node] = idx;
    return 0;
}

/* The longest pattern starting at s[at]; returns its index (end in *end) or -1. */
static int32_t trie_longest(const tok_trie *t, const char *s, size_t len, size_t at, size_t *end) {
    uint64_t node = 0, child;
    int32_t best = -1;
    if (!t->starts[(uint8_t)s[at]]) return -1;
    for (size_t i = at; i < len; i++) {
        if (!tok_u64map_get(&t->edges, (node << 8) | (uint8_t)s[i], &child)) break;
        node = child;
        if (t->term[node] >= 0) {
            best = t->term[node];
            *end = i + 1;
        }
    }
    return best;
}

/* ---- splitting text on added tokens ---- */

/* Rust regex \w: Alphabetic, marks, decimal digits, connector punctuation, joiners. */
static int is_word_char_at(const char *s, size_t len, size_t at, tok_ctx *ctx, const tok_regex *word) {
    int rc = pcre2_match(word->code, (PCRE2_SPTR)s, len, at, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, ctx->md, NULL);
    return rc >= 0;
}

static size_t prev_char(const char *s, size_t at) {
    size_t j = at - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    return j;
}

static int is_space_at(const char *s, size_t at) {
    size_t j = at;
    return tok_is_whitespace(lq_utf8_next(s, &j));
}

typedef struct added_ctx {
    const lq_tokenizer *tok;
    const tok_regex *word;
    tok_ctx *ctx;
} added_ctx;

/* Where a match [start, stop) really begins and ends, or 0 to reject it. */
static int adjust_match(const added_ctx *a, const tok_added *t, const char *s, size_t len, size_t *start,
                        size_t *stop, size_t start_offset) {
    if (t->single_word) {
        int left_ok = *start == 0 || !is_word_char_at(s, len, prev_char(s, *start), a->ctx, a->word);
        int right_ok = *stop == len || !is_word_char_at(s, len, *stop, a->ctx, a->word);
        if (!left_ok || !right_ok) return 0;
    }
    if (t->lstrip) {
        size_t b = *start;
        while (b > 0 && is_space_at(s, prev_char(s, b))) b = prev_char(s, b);
        *start = b > start_offset ? b : start_offset;
    }
    if (t->rstrip)
        while (*stop < len && is_space_at(s, *stop)) *stop += lq_utf8_char_len((unsigned char)s[*stop]);
    return 1;
}

static int split_on_added(const added_ctx *a, const tok_trie *trie, const char *s, size_t len, int first,
                          tok_list *out, lq_error *err) {
    size_t start_offset = 0;
    for (size_t i = 0; trie->n_nodes > 1 && i < len;) {
        size_t end = 0;
        int32_t idx = trie_longest(trie, s, len, i, &end);
        if (idx < 0) {
            i += lq_utf8_char_len((unsigned char)s[i]);
            continue;
        }
        const tok_added *t = &a->tok->added[idx];
        size_t start = i, stop = end;
        i = end; /* the search resumes after the match, whatever happens to it */
        if (!adjust_match(a, t, s, len, &start, &stop, start_offset)) continue;
        if (start_offset < start && tok_list_push(out, s + start_offset, start - start_offset, -1,
                                                  first && start_offset == 0) != 0)
            return lq_fail(err, "out of memory");
        if (tok_list_push(out, s + start, stop - start, t->id, 0) != 0) return lq_fail(err, "out of memory");
        start_offset = stop;
    }
    if (start_offset < len &&
        tok_list_push(out, s + start_offset, len - start_offset, -1, first && start_offset == 0) != 0)
        return lq_fail(err, "out of memory");
    return 0;
}

/* ---- encode ---- */

typedef struct encode_state {
    tok_ctx ctx;
    tok_list raw, normalized, words;
    tok_buf piece;
    tok_ids ids;
} encode_state;

static int normalize_pieces(const lq_tokenizer *tok, encode_state *st, const added_ctx *a, lq_error *err) {
    for (size_t i = 0; i < st->raw.n; i++) {
        const tok_piece *p = &st->raw.v[i];
        const char *s = tok_piece_text(&st->raw, i);
        if (p->id >= 0) {
            if (tok_list_push(&st->normalized, s, p->len, p->id, 0) != 0) return lq_fail(err, "out of memory");
            continue;
        }
        st->piece.len = 0;
        if (tok_buf_put(&st->piece, s, p->len) != 0) return lq_fail(err, "out of memory");
        if (tok->has_norm && tok_norm_apply(&tok->norm, &st->piece, &st->ctx, err) != 0) return -1;
        if (split_on_added(a, &tok->norm_trie, st->piece.p, st->piece.len, p->first, &st->normalized, err) != 0)
            return -1;
    }
    return 0;
}

static int model_pieces(const lq_tokenizer *tok, encode_state *st, const tok_list *words, lq_error *err) {
    for (size_t i = 0; i < words->n; i++) {
        const tok_piece *p = &words->v[i];
        if (p->id >= 0) {
            if (tok_ids_push(&st->ids, p->id) != 0) return lq_fail(err, "out of memory");
        } else if (tok_bpe_encode(&tok->bpe, tok_piece_text(words, i), p->len, &st->ids, &st->ctx, err) != 0) {
            return -1;
        }
    }
    return 0;
}

static int post_process(const lq_tokenizer *tok, const tok_ids *body, int add_special, int32_t **ids, size_t *n,
                        lq_error *err) {
    size_t pre = add_special ? tok->n_post_prefix : 0, suf = add_special ? tok->n_post_suffix : 0;
    size_t total = pre + body->n + suf;
    int32_t *v = malloc((total ? total : 1) * sizeof *v);
    if (!v) return lq_fail(err, "out of memory");
    if (pre) memcpy(v, tok->post_prefix, pre * sizeof *v);
    if (body->n) memcpy(v + pre, body->v, body->n * sizeof *v);
    if (suf) memcpy(v + pre + body->n, tok->post_suffix, suf * sizeof *v);
    *ids = v;
    *n = total;
    return 0;
}

static void encode_state_free(encode_state *st) {
    tok_ctx_free(&st->ctx);
    tok_list_free(&st->raw);
    tok_list_free(&st->normalized);
    tok_list_free(&st->words);
    tok_buf_free(&st->piece);
    free(st->ids.v);
}

int tok_encode(const lq_tokenizer *tok, const char *text, size_t len, int add_special_tokens, int32_t **ids,
               size_t *n_ids, lq_error *err) {
    *ids = NULL;
    *n_ids = 0;
    size_t clean_len;
    char *clean = lq_utf8_repair_dup(text ? text : "", text ? len : 0, &clean_len);
    if (!clean) return lq_fail(err, "out of memory");
    encode_state st;
    memset(&st, 0, sizeof st);
    int rc = tok_ctx_init(&st.ctx, err);
    added_ctx a = {tok, &tok->word, &st.ctx};
    if (rc == 0) rc = split_on_added(&a, &tok->raw_trie, clean, clean_len, 1, &st.raw, err);
    free(clean); /* each stage's list holds its own copy of the text: drop earlier stages early */
    if (rc == 0) rc = normalize_pieces(tok, &st, &a, err);
    tok_list_free(&st.raw);
    if (rc == 0 && tok->has_pre) rc = tok_pretok_apply(&tok->pre, &st.normalized, &st.words, &st.ctx, err);
    if (tok->has_pre) tok_list_free(&st.normalized);
    if (rc == 0) rc = model_pieces(tok, &st, tok->has_pre ? &st.words : &st.normalized, err);
    if (rc == 0) rc = post_process(tok, &st.ids, add_special_tokens, ids, n_ids, err);
    encode_state_free(&st);
    return rc;
}

/* ---- decode and lookups ---- */

char *tok_decode(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, size_t *out_len,
                 lq_error *err) {
    tok_ctx ctx;
    tok_buf out = {0};
    if (tok_ctx_init(&ctx, err) != 0) return NULL;
    int rc = tok_decode_into(tok, ids, n, skip_special, &out, &ctx, err);
    tok_ctx_free(&ctx);
    if (rc != 0) {
        tok_buf_free(&out);
        return NULL;
    }
    if (out_len) *out_len = out.len;
    return out.p;
}

size_t tok_vocab_size(const lq_tokenizer *tok) { return tok->n_ids; }

int32_t tok_token_to_id(const lq_tokenizer *tok, const char *token) {
    size_t len = strlen(token);
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].len == len && !memcmp(tok->added[i].content, token, len)) return tok->added[i].id;
    return tok_strmap_get(&tok->bpe.vocab, token, len);
}

const char *tok_id_to_token(const lq_tokenizer *tok, int32_t id) {
    return id >= 0 && (size_t)id < tok->n_ids ? tok->id_str[id] : NULL;
}

int tok_is_special(const lq_tokenizer *tok, int32_t id) {
    return id >= 0 && (size_t)id < tok->n_ids && tok->id_special[id];
}

/* ---- loading: added tokens ---- */

/* The id the library gives an added token: its vocabulary id (or that of an
 * earlier added token with the same content), else the next id after the
 * vocabulary, counting up in file order. */
static int32_t library_id(const lq_tokenizer *tok, const char *content, size_t len, int64_t *next) {
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].len == len && !memcmp(tok->added[i].content, content, len)) return tok->added[i].id;
    int32_t id = tok_strmap_get(&tok->bpe.vocab, content, len);
    if (id >= 0) return id;
    return *next >= TOK_MAX_ID ? TOK_MAX_ID : (int32_t)(*next)++;
}

static int parse_added(json_t *e, size_t i, lq_tokenizer *tok, int64_t *next_id, lq_error *err) {
    char where[64];
    snprintf(where, sizeof where, "added_tokens[%zu]", i);
    if (!json_is_object(e)) return lq_fail(err, "%s: must be an object", where);
    tok_added *t = &tok->added[tok->n_added];
    const char *content;
    size_t len;
    int64_t id;
    if (tok_json_string(e, "content", 1, &content, &len, where, err) != 0 ||
        tok_json_uint(e, "id", 1, TOK_MAX_ID - 1, &id, where, err) != 0 ||
        tok_json_bool(e, "special", 0, &t->special, where, err) != 0 ||
        tok_json_bool(e, "single_word", 0, &t->single_word, where, err) != 0 ||
        tok_json_bool(e, "lstrip", 0, &t->lstrip, where, err) != 0 ||
        tok_json_bool(e, "rstrip", 0, &t->rstrip, where, err) != 0 ||
        tok_json_bool(e, "normalized", !t->special, &t->normalized, where, err) != 0)
        return -1;
    if (len == 0) return 0; /* the library ignores empty added tokens */
    for (size_t k = 0; k < tok->n_added; k++)
        if (tok->added[k].len == len && !memcmp(tok->added[k].content, content, len))
            return lq_fail(err, "%s: '%s' is listed twice", where, content);
    int32_t want = library_id(tok, content, len, next_id);
    if (want >= TOK_MAX_ID) return lq_fail(err, "%s: id %d is out of range", where, want);
    if (want != id)
        return lq_fail(err,
                       "%s: '%s' has id %lld, but tokenizers gives it id %d (its vocabulary id, or the next id "
                       "after the vocabulary)",
                       where, content, (long long)id, want);
    if (!(t->content = tok_strndup(content, len))) return lq_fail(err, "out of memory");
    t->len = len;
    t->id = want;
    tok->n_added++;
    return 0;
}

static int load_added(json_t *arr, lq_tokenizer *tok, lq_error *err) {
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return lq_fail(err, "added_tokens: must be an array");
    size_t n = json_array_size(arr);
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added) return lq_fail(err, "out of memory");
    int64_t next_id = (int64_t)tok->bpe.n_vocab;
    for (size_t i = 0; i < n; i++)
        if (parse_added(json_array_get(arr, i), i, tok, &next_id, err) != 0) return -1;
    return 0;
}

/* Tokens with normalized=true are matched, and decoded, in their normalized
 * form (the library caches it the same way). */
static int normalize_added(lq_tokenizer *tok, lq_error *err) {
    if (!tok->has_norm) return 0;
    tok_ctx ctx;
    tok_buf b = {0};
    if (tok_ctx_init(&ctx, err) != 0) return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < tok->n_added; i++) {
        tok_added *t = &tok->added[i];
        if (!t->normalized) continue;
        b.len = 0;
        if (tok_buf_put(&b, t->content, t->len) != 0) rc = lq_fail(err, "out of memory");
        if (rc == 0) rc = tok_norm_apply(&tok->norm, &b, &ctx, err);
        if (rc != 0 || (b.len == t->len && !memcmp(b.p, t->content, b.len))) continue;
        if (!(t->norm = tok_strndup(b.p, b.len))) rc = lq_fail(err, "out of memory");
        t->norm_len = b.len;
    }
    tok_buf_free(&b);
    tok_ctx_free(&ctx);
    return rc;
}

/* The tries hold special tokens first, then the others, in file order. */
static int build_tries(lq_tokenizer *tok, lq_error *err) {
    if (trie_init(&tok->raw_trie) != 0 || trie_init(&tok->norm_trie) != 0) return lq_fail(err, "out of memory");
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < tok->n_added; i++) {
            const tok_added *t = &tok->added[i];
            if (t->special != (pass == 0)) continue;
            tok_trie *trie = t->normalized ? &tok->norm_trie : &tok->raw_trie;
            const char *p = t->norm ? t->norm : t->content;
            size_t n = t->norm ? t->norm_len : t->len;
            if (n && trie_add(trie, p, n, (int32_t)i) != 0) return lq_fail(err, "out of memory");
        }
    return 0;
}

/* id -> the string decode uses, and whether skip_special drops it: the
 * library asks whether that string is the content of a special token. */
static int build_id_table(lq_tokenizer *tok, lq_error *err) {
    size_t n = tok->bpe.n_ids;
    for (size_t i = 0; i < tok->n_added; i++)
        if ((size_t)tok->added[i].id + 1 > n) n = (size_t)tok->added[i].id + 1;
    tok->n_ids = n;
    tok->id_str = calloc(n ? n : 1, sizeof *tok->id_str);
    tok->id_len = calloc(n ? n : 1, sizeof *tok->id_len);
    tok->id_special = calloc(n ? n : 1, 1);
    if (!tok->id_str || !tok->id_len || !tok->id_special) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < tok->bpe.n_ids; i++) {
        tok->id_str[i] = tok->bpe.tokens[i];
        tok->id_len[i] = tok->bpe.token_lens[i];
    }
    tok_strmap specials;
    if (tok_strmap_init(&specials, tok->n_added) != 0) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < tok->n_added; i++) {
        const tok_added *t = &tok->added[i];
        tok->id_str[t->id] = t->norm ? t->norm : t->content;
        tok->id_len[t->id] = (uint32_t)(t->norm ? t->norm_len : t->len);
        if (t->special && tok_strmap_put(&specials, t->content, t->len, 1) < 0) {
            tok_strmap_free(&specials);
            return lq_fail(err, "out of memory");
        }
    }
    for (size_t id = 0; id < n; id++)
        tok->id_special[id] = tok->id_str[id] && tok_strmap_get(&specials, tok->id_str[id], tok->id_len[id]) >= 0;
    tok_strmap_free(&specials);
    return 0;
}

/* ---- loading: post-processor ---- */

typedef struct post_ids {
    tok_ids prefix, suffix;
} post_ids;

static int push_id_list(json_t *arr, tok_ids *to, const char *where, lq_error *err) {
    if (!json_is_array(arr)) return lq_fail(err, "%s: 'ids' must be an array of integers", where);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= TOK_MAX_ID)
            return lq_fail(err, "%s: ids[%zu] must be an integer in [0, %d)", where, i, TOK_MAX_ID);
        if (tok_ids_push(to, (int32_t)json_integer_value(v)) != 0) return lq_fail(err, "out of memory");
    }
    return 0;
}

static int parse_template(json_t *j, post_ids *out, const char *where, lq_error *err) {
    json_t *single = json_object_get(j, "single"), *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single)) return lq_fail(err, "%s: 'single' must be an array", where);
    if (specials && !json_is_null(specials) && !json_is_object(specials))
        return lq_fail(err, "%s: 'special_tokens' must be an object", where);
    post_ids mine = {{0}, {0}};
    int seen_a = 0, rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(single); i++) {
        json_t *item = json_array_get(single, i);
        json_t *sp = json_object_get(item, "SpecialToken"), *seq = json_object_get(item, "Sequence");
        const char *id;
        if (seq) {
            rc = tok_json_string(seq, "id", 1, &id, NULL, where, err);
            if (rc == 0 && strcmp(id, "A") != 0) rc = lq_fail(err, "%s: the single template uses $%s", where, id);
            seen_a = 1;
        } else if (sp) {
            rc = tok_json_string(sp, "id", 1, &id, NULL, where, err);
            json_t *def = rc == 0 ? json_object_get(specials, id) : NULL;
            if (rc == 0 && !json_is_object(def))
                rc = lq_fail(err, "%s: special token '%s' is not in special_tokens", where, id);
            if (rc == 0) rc = push_id_list(json_object_get(def, "ids"), seen_a ? &mine.suffix : &mine.prefix, where, err);
        } else {
            rc = lq_fail(err, "%s: single[%zu] must be {\"SpecialToken\": ...} or {\"Sequence\": ...}", where, i);
        }
    }
    if (rc == 0 && !seen_a) rc = lq_fail(err, "%s: the single template has no $A", where);
    /* This processor wraps what the previous ones produced. */
    for (size_t i = 0; rc == 0 && i < out->prefix.n; i++)
        if (tok_ids_push(&mine.prefix, out->prefix.v[i]) != 0) rc = lq_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < mine.suffix.n; i++)
        if (tok_ids_push(&out->suffix, mine.suffix.v[i]) != 0) rc = lq_fail(err, "out of memory");
    free(out->prefix.v);
    out->prefix = mine.prefix;
    free(mine.suffix.v);
    return rc;
}

/* RobertaProcessing / BertProcessing: "cls": [token, id], "sep": [token, id]. */
static int parse_cls_sep(json_t *j, post_ids *out, const char *where, lq_error *err) {
    int32_t ids[2];
    const char *keys[2] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(j, keys[k]);
        json_t *id = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_ID)
            return lq_fail(err, "%s: '%s' must be [token, id]", where, keys[k]);
        ids[k] = (int32_t)json_integer_value(id);
    }
    tok_ids pre = {0};
    if (tok_ids_push(&pre, ids[0]) != 0) return lq_fail(err, "out of memory");
    for (size_t i = 0; i < out->prefix.n; i++)
        if (tok_ids_push(&pre, out->prefix.v[i]) != 0) return free(pre.v), lq_fail(err, "out of memory");
    free(out->prefix.v);
    out->prefix = pre;
    return tok_ids_push(&out->suffix, ids[1]) ? lq_fail(err, "out of memory") : 0;
}

static int parse_post(json_t *j, post_ids *out, const char *where, lq_error *err) {
    const char *type = tok_json_type(j, where, err);
    if (!type) return -1;
    if (!strcmp(type, "ByteLevel")) return 0; /* it only trims offsets */
    if (!strcmp(type, "TemplateProcessing")) return parse_template(j, out, where, err);
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) return parse_cls_sep(j, out, where, err);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(j, "processors");
        if (!json_is_array(arr)) return lq_fail(err, "%s: 'processors' must be an array", where);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            char sub[200];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            if (parse_post(json_array_get(arr, i), out, sub, err) != 0) return -1;
        }
        return 0;
    }
    return lq_fail(err, "%s: unsupported post-processor type '%s'", where, type);
}

static int load_post(json_t *j, lq_tokenizer *tok, lq_error *err) {
    if (!j || json_is_null(j)) return 0;
    post_ids p = {{0}, {0}};
    int rc = parse_post(j, &p, "post_processor", err);
    tok->post_prefix = p.prefix.v;
    tok->n_post_prefix = p.prefix.n;
    tok->post_suffix = p.suffix.v;
    tok->n_post_suffix = p.suffix.n;
    return rc;
}

/* Rust regex's \\w (Unicode 16): what single_word calls a word character. */
static int compile_word_regex(tok_regex *re, lq_error *err) {
    size_t n = strlen(tok_word_class);
    char *pat = malloc(n + 32);
    if (!pat) return lq_fail(err, "out of memory");
    snprintf(pat, n + 32, "[%s\\x{200C}\\x{200D}]", tok_word_class);
    int rc = tok_regex_compile_pcre(re, pat, err);
    free(pat);
    return rc;
}

/* ---- loading: the whole file ---- */

static int present(json_t *root, const char *key) {
    json_t *v = json_object_get(root, key);
    return v && !json_is_null(v);
}

static int load_root(json_t *root, lq_tokenizer *tok, lq_error *err) {
    if (!json_is_object(root)) return lq_fail(err, "the top level must be an object");
    json_t *model = json_object_get(root, "model");
    if (!model) return lq_fail(err, "missing 'model'");
    if (tok_bpe_parse(model, &tok->bpe, err) != 0) return -1;
    if ((tok->has_norm = present(root, "normalizer")) &&
        tok_norm_parse(json_object_get(root, "normalizer"), &tok->norm, "normalizer", err) != 0)
        return -1;
    if ((tok->has_pre = present(root, "pre_tokenizer")) &&
        tok_pretok_parse(json_object_get(root, "pre_tokenizer"), &tok->pre, "pre_tokenizer", err) != 0)
        return -1;
    if ((tok->has_dec = present(root, "decoder")) &&
        tok_dec_parse(json_object_get(root, "decoder"), &tok->dec, "decoder", err) != 0)
        return -1;
    if (load_added(json_object_get(root, "added_tokens"), tok, err) != 0) return -1;
    if (load_post(json_object_get(root, "post_processor"), tok, err) != 0) return -1;
    if (normalize_added(tok, err) != 0 || build_tries(tok, err) != 0) return -1;
    if (compile_word_regex(&tok->word, err) != 0) return -1;
    return build_id_table(tok, err);
}

lq_tokenizer *tok_load_json(const char *json, size_t len, lq_error *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        lq_fail(err, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    lq_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        json_decref(root);
        lq_fail(err, "out of memory");
        return NULL;
    }
    int rc = load_root(root, tok, err);
    json_decref(root);
    if (rc != 0) {
        tok_free(tok);
        return NULL;
    }
    return tok;
}

lq_tokenizer *tok_load(const char *path, lq_error *err) {
    char file[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(file, sizeof file, "%s/tokenizer.json", path);
    else snprintf(file, sizeof file, "%s", path);
    size_t len;
    char *json = lq_read_file(file, &len, err);
    if (!json) return NULL;
    lq_tokenizer *tok = tok_load_json(json, len, err);
    free(json);
    if (!tok) lq_error_prefix(err, "%s", file);
    return tok;
}

void tok_free(lq_tokenizer *tok) {
    if (!tok) return;
    tok_bpe_free(&tok->bpe);
    if (tok->has_norm) tok_norm_free(&tok->norm);
    if (tok->has_pre) tok_pretok_free(&tok->pre);
    if (tok->has_dec) tok_dec_free(&tok->dec);
    free(tok->post_prefix);
    free(tok->post_suffix);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].norm);
    }
    free(tok->added);
    trie_free(&tok->raw_trie);
    trie_free(&tok->norm_trie);
    tok_regex_free(&tok->word);
    free(tok->id_str);
    free(tok->id_len);
    free(tok->id_special);
    free(tok);
}
