/* tok_internal.h — the pieces the tokenizer is built from, shared by the
 * tok_*.c files and nothing else (the public API is tokenizer.h).
 *
 * The tokenizers library runs text through a fixed pipeline, and so do we:
 *
 *   added tokens (raw) -> normalizer -> added tokens (normalized)
 *     -> pre-tokenizer -> BPE model -> post-processor          (encode)
 *   ids -> token strings -> decoder chain -> concatenation       (decode)
 *
 * Each stage is a small tagged struct parsed from its JSON object and applied
 * to a tok_list: the text pieces of one string, stored back to back in one
 * buffer, each either plain text still to be split or an already-decided
 * added token. Stages read one list and write the next, so no stage ever
 * writes into text it is reading. Everything here is immutable after load;
 * per-call scratch lives in a tok_ctx on the caller's stack. */
#ifndef LORQ_TOK_INTERNAL_H
#define LORQ_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

/* Ids must stay below this: id -> token tables are plain arrays. Real
 * vocabularies are under 300k; the cap keeps a hostile file from making us
 * allocate gigabytes. */
#define TOK_MAX_ID (1 << 24)

/* ---- buffers and lists (tok_util.c) ---- */

typedef struct tok_buf {
    char *p;
    size_t len, cap;
} tok_buf;

int tok_buf_reserve(tok_buf *b, size_t extra);
int tok_buf_put(tok_buf *b, const void *data, size_t len);
void tok_buf_free(tok_buf *b);

/* One piece of a tok_list: text[off..off+len); id >= 0 marks an added token
 * already decided (later stages pass it through untouched). `first` is true when
 * the piece starts at offset 0 of the original input, which Metaspace's
 * prepend_scheme "first" asks about. */
typedef struct tok_piece {
    size_t off, len;
    int32_t id;
    int first;
} tok_piece;

typedef struct tok_list {
    tok_buf text;
    tok_piece *v;
    size_t n, cap;
} tok_list;

int tok_list_push(tok_list *l, const char *s, size_t len, int32_t id, int first);
void tok_list_clear(tok_list *l);
void tok_list_free(tok_list *l);
static inline const char *tok_piece_text(const tok_list *l, size_t i) { return l->text.p + l->v[i].off; }

typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;

int tok_ids_push(tok_ids *a, int32_t id);

/* ---- hash maps (tok_util.c) ---- */

/* String -> int32. Keys are not copied: they must outlive the map. */
typedef struct tok_strmap {
    int32_t *slots; /* index into the entry arrays, -1 when empty */
    size_t mask;
    const char **keys;
    uint32_t *lens;
    int32_t *vals;
    size_t n, cap;
} tok_strmap;

int tok_strmap_init(tok_strmap *m, size_t expected);
/* Returns 1 when inserted, 0 when the key was already there (value kept), -1 on OOM. */
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len);
void tok_strmap_free(tok_strmap *m);

/* uint64 -> uint64; the key UINT64_MAX is reserved. */
typedef struct tok_u64map {
    uint64_t *keys, *vals;
    size_t mask, n;
} tok_u64map;

int tok_u64map_init(tok_u64map *m, size_t expected);
int tok_u64map_put(tok_u64map *m, uint64_t key, uint64_t val); /* overwrites */
int tok_u64map_get(const tok_u64map *m, uint64_t key, uint64_t *val);
void tok_u64map_free(tok_u64map *m);

/* ---- JSON field access with errors that name the field (tok_util.c) ---- */

/* Each returns 0, or -1 with "WHERE: field 'KEY' must be ..." in err. A field
 * that is absent or null takes the default (or fails when required). */
int tok_json_bool(json_t *obj, const char *key, int dflt, int *out, const char *where, lq_error *err);
int tok_json_string(json_t *obj, const char *key, int required, const char **s, size_t *len, const char *where,
                    lq_error *err);
int tok_json_uint(json_t *obj, const char *key, int required, int64_t max, int64_t *out, const char *where,
                  lq_error *err);
/* The "type" string of a component object. */
const char *tok_json_type(json_t *obj, const char *where, lq_error *err);
char *tok_strndup(const char *s, size_t len);

/* ---- regular expressions (tok_regex.c) ---- */

typedef struct tok_regex {
    pcre2_code *code;
} tok_regex;

typedef struct tok_span {
    size_t start, end;
} tok_span;

typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
} tok_spans;

/* Per-call scratch: regex match data, match lists, BPE work arrays. */
typedef struct tok_ctx {
    pcre2_match_data *md;
    tok_spans spans;
    void *syms;
    size_t syms_cap;
    void *heap;
    size_t heap_cap;
    tok_buf tmp, tmp2;
} tok_ctx;

int tok_ctx_init(tok_ctx *c, lq_error *err);
void tok_ctx_free(tok_ctx *c);

/* Compiles a pattern written for Oniguruma (what the tokenizers library uses):
 * translated so that \s, \S, \w, \W, \h, \v, \p{L} and \p{N} mean what they
 * mean there. literal: the pattern is a plain string (Split's "String"). */
int tok_regex_compile(tok_regex *re, const char *pattern, size_t len, int literal, lq_error *err);
/* Compiles a pattern already in PCRE2 syntax (our own built-in patterns). */
int tok_regex_compile_pcre(tok_regex *re, const char *pattern, lq_error *err);
void tok_regex_free(tok_regex *re);
/* All non-overlapping matches in s, found the way the library's Oniguruma
 * iterator finds them (an empty match right after the previous match is
 * skipped). Spans go to ctx->spans. */
int tok_regex_find_all(const tok_regex *re, const char *s, size_t len, tok_ctx *ctx, lq_error *err);

/* Unicode predicates with the library's (Rust's) meaning. */
int tok_is_whitespace(uint32_t cp);
/* Body of a bracket class for Alphabetic + marks + decimal digits + connector
 * punctuation, Unicode 16 (Rust's \w is this plus ZWNJ/ZWJ, Oniguruma's \w
 * this plus a few Latin-1 digits). */
extern const char tok_word_class[];
#define TOK_WHITE_SPACE_CLASS \
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* ---- splitting (tok_pretok.c, also used by normalizers/decoders) ---- */

typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS
} tok_split_behavior;

/* GPT-2's byte <-> unicode mapping used by ByteLevel. */
uint32_t tok_byte_to_char(uint8_t b);
int tok_char_to_byte(uint32_t cp); /* -1 when cp is not in the mapping */

/* ---- normalizers (tok_normalize.c) ---- */

typedef enum {
    NORM_SEQUENCE,
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_LOWERCASE,
    NORM_STRIP,
    NORM_PREPEND,
    NORM_REPLACE,
    NORM_BYTELEVEL
} tok_norm_type;

typedef struct tok_norm {
    tok_norm_type type;
    int left, right;       /* Strip */
    char *str;             /* Prepend text, Replace content */
    size_t str_len;
    tok_regex re;          /* Replace pattern */
    struct tok_norm *items; /* Sequence */
    size_t n_items;
} tok_norm;

int tok_norm_parse(json_t *j, tok_norm *n, const char *where, lq_error *err);
/* Rewrites s with every match of re replaced by content; t is scratch (the
 * buffers are swapped). Shared with the Replace decoder. */
int tok_replace_all(const tok_regex *re, const char *content, size_t content_len, tok_buf *s, tok_buf *t,
                    tok_ctx *ctx, lq_error *err);
void tok_norm_free(tok_norm *n);
/* Normalizes s in place. */
int tok_norm_apply(const tok_norm *n, tok_buf *s, tok_ctx *ctx, lq_error *err);

/* ---- pre-tokenizers (tok_pretok.c) ---- */

/* Digits, Whitespace, WhitespaceSplit, Punctuation, CharDelimiterSplit and
 * BertPreTokenizer are all Splits (or Sequences of them) on built-in patterns. */
typedef enum { PRE_SEQUENCE, PRE_BYTELEVEL, PRE_SPLIT, PRE_METASPACE } tok_pre_type;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_pretok {
    tok_pre_type type;
    int add_prefix_space, use_regex; /* ByteLevel */
    tok_regex re;                    /* Split, ByteLevel (GPT-2 pattern), Digits, ... */
    int has_re;
    tok_split_behavior behavior;
    int invert;
    char repl[4]; /* Metaspace replacement, UTF-8 */
    int repl_len;
    tok_prepend_scheme prepend;
    int split;
    struct tok_pretok *items; /* Sequence */
    size_t n_items;
} tok_pretok;

int tok_pretok_parse(json_t *j, tok_pretok *p, const char *where, lq_error *err);
/* A "pattern": {"String": "..."} or {"Regex": "..."} field (Split, Replace). */
int tok_parse_pattern(json_t *j, tok_regex *re, const char *where, lq_error *err);
/* Metaspace's replacement (one character) and prepend_scheme, or the older
 * add_prefix_space flag (true meant "always"). Shared with the decoder. */
int tok_parse_metaspace(json_t *j, char repl[4], int *repl_len, tok_prepend_scheme *scheme, const char *where,
                        lq_error *err);
void tok_pretok_free(tok_pretok *p);
/* Splits the text pieces of in into out (added-token pieces pass through). */
int tok_pretok_apply(const tok_pretok *p, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err);

/* ---- BPE model (tok_bpe.c) ---- */

typedef struct tok_bpe {
    tok_strmap vocab;
    char **tokens; /* by id, NUL-terminated, NULL for gaps */
    uint32_t *token_lens;
    size_t n_ids; /* largest id + 1 */
    size_t n_vocab;
    tok_u64map merges; /* (left id << 32 | right id) -> (rank << 32 | new id) */
    int byte_fallback, fuse_unk, ignore_merges;
    char *unk;
    size_t unk_len;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix */
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256]; /* ids of "<0xXX>", -1 when absent */
} tok_bpe;

int tok_bpe_parse(json_t *j, tok_bpe *m, lq_error *err);
void tok_bpe_free(tok_bpe *m);
int tok_bpe_encode(const tok_bpe *m, const char *word, size_t len, tok_ids *out, tok_ctx *ctx, lq_error *err);

/* ---- decoders (tok_decode.c) ---- */

typedef enum {
    DEC_SEQUENCE,
    DEC_BYTELEVEL,
    DEC_METASPACE,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP
} tok_dec_type;

typedef struct tok_dec {
    tok_dec_type type;
    tok_regex re;      /* Replace */
    char *str;         /* Replace content */
    size_t str_len;
    uint32_t ch;       /* Metaspace replacement, Strip content */
    int drop_first;    /* Metaspace: prepend_scheme != never */
    size_t start, stop; /* Strip */
    struct tok_dec *items;
    size_t n_items;
} tok_dec;

int tok_dec_parse(json_t *j, tok_dec *d, const char *where, lq_error *err);
void tok_dec_free(tok_dec *d);
int tok_dec_apply(const tok_dec *d, tok_list *in, tok_list *out, tok_ctx *ctx, lq_error *err);
int tok_dec_uses(const tok_dec *d, tok_dec_type type);
/* 1 when token is "<0xXX>" in the sense of the ByteFallback decoder. */
int tok_is_byte_token(const char *s, size_t len, uint8_t *byte);

/* ---- the tokenizer (tokenizer.c) ---- */

typedef struct tok_added {
    char *content;
    size_t len;
    char *norm; /* normalized=true: the normalizer's output when it differs (matched and decoded) */
    size_t norm_len;
    int32_t id;
    int special, single_word, lstrip, rstrip, normalized;
} tok_added;

/* Byte trie for leftmost-longest matching of added tokens. */
typedef struct tok_trie {
    tok_u64map edges; /* (node << 8 | byte) -> child node */
    int32_t *term;    /* node -> index into added[], -1 */
    size_t n_nodes, cap;
    uint8_t starts[256]; /* bytes some pattern starts with: skip the rest fast */
} tok_trie;

struct lq_tokenizer {
    tok_bpe bpe;
    int has_norm, has_pre, has_dec;
    tok_norm norm;
    tok_pretok pre;
    tok_dec dec;
    int32_t *post_prefix, *post_suffix; /* ids the post-processor adds */
    size_t n_post_prefix, n_post_suffix;
    tok_added *added;
    size_t n_added;
    tok_trie raw_trie, norm_trie;
    tok_regex word; /* Rust's \w, for single_word */
    /* The unified id table: added tokens over model tokens. */
    size_t n_ids;
    const char **id_str;
    uint32_t *id_len;
    uint8_t *id_special;
};

/* Decodes ids into out (appended), as tok_decode does. */
int tok_decode_into(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, tok_buf *out,
                    tok_ctx *ctx, lq_error *err);

#endif
