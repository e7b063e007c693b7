/* test_tokenizer.c — the tokenizer on small hand-written tokenizer.json files:
 * merge order, byte fallback and unknown tokens, added-token options,
 * decoders, streaming decode over split characters, the UTF-8 repair policy,
 * concurrent encoding, and a catalogue of malformed files that must each fail
 * with a message naming the problem (run under ASan/UBSan). Expected ids were
 * taken from the tokenizers library on the same files; the Python parity test
 * does the same at scale. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tokenizer.h"
#include "utf8.h"

/* ---- fixtures ---- */

/* Merge ranks: "b c" first, then "a b"; leftmost wins among equal ranks. */
static const char TOK_MERGES[] =
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5, "
    "\"aa\": 6}, \"merges\": [\"b c\", \"a b\", \"a bc\", \"a a\"]}}";

/* A repeated merge keeps its last rank. */
static const char TOK_DUP_MERGE[] =
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4}, "
    "\"merges\": [\"a b\", \"b c\", \"a b\"]}}";

/* SentencePiece style: Prepend/Replace normalizer, byte fallback, fused <unk>, BOS template. */
static const char TOK_SPM[] =
    "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, "
    "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, "
    "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": "
    "\"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "
    "\"content\": \" \", \"start\": 1, \"stop\": 0}]}, "
    "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", "
    "\"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": "
    "{\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}}, "
    "\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": \"<s>\", "
    "\"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}], "
    "\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
    "\"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0xC3>\": 3, \"<0xA9>\": 4, \"\\u2581\": 5, \"h\": 6, "
    "\"i\": 7, \"\\u2581h\": 8, \"\\u2581hi\": 9}, \"merges\": [[\"\\u2581\", \"h\"], [\"\\u2581h\", \"i\"]]}}";

/* Added tokens: "<m>" strips spaces on both sides, "xy" must be a whole word. */
static const char TOK_ADDED[] =
    "{\"added_tokens\": [{\"id\": 9, \"content\": \"<m>\", \"lstrip\": true, \"rstrip\": true, \"special\": true, "
    "\"normalized\": false}, {\"id\": 10, \"content\": \"xy\", \"single_word\": true, \"special\": false, "
    "\"normalized\": false}], \"model\": {\"type\": \"BPE\", \"vocab\": {\" \": 0, \"a\": 1, \"b\": 2, \"x\": 3, "
    "\"y\": 4, \"<\": 5, \"m\": 6, \">\": 7, \"z\": 8}, \"merges\": []}}";

/* Byte level: "Ã" and "©" are the bytes C3 and A9 of "é". */
static const char TOK_BYTELEVEL[] =
    "{\"decoder\": {\"type\": \"ByteLevel\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": "
    "false}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u00c3\": 0, \"\\u00a9\": 1, \"a\": 2, \"\\u0120\": 3, "
    "\"\\u0120a\": 4}, \"merges\": [\"\\u0120 a\"]}}";

static lq_tokenizer *load(const char *json) {
    lq_error err;
    lq_tokenizer *tok = tok_load_json(json, strlen(json), &err);
    if (!tok) fail_msg("load failed: %s", err.msg);
    return tok;
}

static void expect_ids(const lq_tokenizer *tok, const char *text, size_t len, int add_special, const int32_t *want,
                       size_t n_want) {
    int32_t *ids;
    size_t n;
    lq_error err;
    if (tok_encode(tok, text, len, add_special, &ids, &n, &err) != 0) fail_msg("encode '%s': %s", text, err.msg);
    if (n != n_want) fail_msg("encode '%s': %zu ids, expected %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("encode '%s': id %zu is %d, expected %d", text, i, ids[i], want[i]);
    free(ids);
}

#define EXPECT(tok, text, add, ...)                                                        \
    do {                                                                                   \
        const int32_t want_[] = {__VA_ARGS__};                                             \
        expect_ids(tok, text, strlen(text), add, want_, sizeof want_ / sizeof want_[0]);   \
    } while (0)

static void expect_decode(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip, const char *want) {
    lq_error err;
    size_t len;
    char *s = tok_decode(tok, ids, n, skip, &len, &err);
    assert_non_null(s);
    assert_int_equal(len, strlen(want));
    assert_string_equal(s, want);
    free(s);
}

/* ---- encode ---- */

static void test_merge_order(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_MERGES);
    EXPECT(tok, "abc", 1, 5); /* b+c (rank 0) before a+b (rank 1), then a+bc */
    EXPECT(tok, "aaa", 1, 6, 0); /* leftmost pair first */
    EXPECT(tok, "abab", 1, 3, 3);
    EXPECT(tok, "cab", 1, 2, 3);
    expect_ids(tok, "", 0, 1, NULL, 0);
    tok_free(tok);
    tok = load(TOK_DUP_MERGE);
    EXPECT(tok, "abc", 1, 0, 4);
    tok_free(tok);
}

static void test_long_word_is_fast(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_MERGES);
    size_t n = 3 * 70000;
    char *text = malloc(n);
    for (size_t i = 0; i < n; i++) text[i] = "abc"[i % 3];
    int32_t *ids;
    size_t n_ids;
    lq_error err;
    assert_int_equal(tok_encode(tok, text, n, 0, &ids, &n_ids, &err), 0);
    assert_int_equal(n_ids, n / 3);
    for (size_t i = 0; i < n_ids; i++) assert_int_equal(ids[i], 5);
    free(ids);
    free(text);
    tok_free(tok);
}

static void test_byte_fallback_and_unk(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_SPM);
    EXPECT(tok, "hi", 1, 1, 9);
    EXPECT(tok, "hi", 0, 9);
    EXPECT(tok, "h\xc3\xa9", 0, 8, 3, 4); /* é has no token: its bytes */
    EXPECT(tok, "hz", 0, 8, 0);           /* z has no byte token either: <unk> */
    EXPECT(tok, "hzz", 0, 8, 0);          /* fused */
    EXPECT(tok, "a\xc3\xa9", 0, 5, 3, 4, 0);
    EXPECT(tok, "<s>hi", 0, 1, 9); /* the normalizer runs on each piece between added tokens */
    tok_free(tok);
}

static void test_added_token_options(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_ADDED);
    EXPECT(tok, "a <m> b", 1, 1, 9, 2); /* lstrip and rstrip take the spaces */
    EXPECT(tok, "a  <m>b", 1, 1, 9, 2);
    EXPECT(tok, "axy b", 1, 1, 3, 4, 0, 2); /* not a whole word */
    EXPECT(tok, "a xy b", 1, 1, 0, 10, 0, 2);
    EXPECT(tok, "xy", 1, 10);
    EXPECT(tok, "xyz", 1, 3, 4, 8);
    assert_int_equal(tok_token_to_id(tok, "<m>"), 9);
    assert_int_equal(tok_token_to_id(tok, "z"), 8);
    assert_int_equal(tok_token_to_id(tok, "nope"), -1);
    assert_string_equal(tok_id_to_token(tok, 10), "xy");
    assert_null(tok_id_to_token(tok, 11));
    assert_null(tok_id_to_token(tok, -1));
    assert_true(tok_is_special(tok, 9));
    assert_false(tok_is_special(tok, 10));
    assert_int_equal(tok_vocab_size(tok), 11);
    tok_free(tok);
}

static void test_invalid_utf8_input(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_BYTELEVEL);
    /* C3 alone is one U+FFFD (EF BF BD); with no tokens for those bytes nothing is emitted,
     * while the valid "é" maps to its two byte tokens. */
    EXPECT(tok, "\xc3\xa9", 0, 0, 1);
    EXPECT(tok, " a", 0, 4);
    expect_ids(tok, "\xc3", 1, 0, NULL, 0);
    tok_free(tok);
}

/* ---- decode ---- */

static void test_decoders(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_SPM);
    const int32_t a[] = {9, 3, 4}, b[] = {9, 3}, c[] = {1, 9}, d[] = {0, 1}, e[] = {1, 9, 5, 8, 99, -4};
    expect_decode(tok, a, 3, 0, "hi\xc3\xa9");
    expect_decode(tok, b, 2, 0, "hi\xef\xbf\xbd");
    expect_decode(tok, c, 2, 0, "<s> hi");
    expect_decode(tok, c, 2, 1, "hi");
    expect_decode(tok, d, 2, 0, "<unk><s>");
    expect_decode(tok, d, 2, 1, "");
    expect_decode(tok, e, 6, 0, "<s> hi  h"); /* ids without a token are skipped */
    tok_free(tok);
    tok = load(TOK_ADDED); /* no decoder: tokens joined by spaces */
    const int32_t f[] = {9, 3, 4};
    expect_decode(tok, f, 3, 0, "<m> x y");
    expect_decode(tok, f, 3, 1, "x y");
    tok_free(tok);
}

/* Pushes ids one at a time; checks the pieces never end mid-character or in
 * U+FFFD and add up to the full decode. */
static void check_stream(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip, const char *const *want_pieces) {
    lq_error err;
    lq_tok_stream *s = tok_stream_new(tok, skip);
    assert_non_null(s);
    char all[256] = "";
    for (size_t i = 0; i <= n; i++) {
        const char *text;
        size_t len;
        if (i < n) assert_int_equal(tok_stream_push(s, ids[i], &text, &len, &err), 0);
        else assert_int_equal(tok_stream_flush(s, &text, &len, &err), 0);
        assert_int_equal(lq_utf8_valid_prefix(text, len), len);
        if (i < n && len >= 3) assert_false(memcmp(text + len - 3, "\xef\xbf\xbd", 3) == 0);
        if (want_pieces) assert_string_equal(text, want_pieces[i]);
        strncat(all, text, sizeof all - strlen(all) - 1);
    }
    size_t len;
    char *full = tok_decode(tok, ids, n, skip, &len, &err);
    assert_string_equal(all, full);
    free(full);
    tok_stream_free(s);
}

static void test_stream_split_utf8(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_BYTELEVEL);
    const int32_t e_acute[] = {0, 1, 2, 0, 1};
    const char *const pieces[] = {"", "\xc3\xa9", "a", "", "\xc3\xa9", ""};
    check_stream(tok, e_acute, 5, 0, pieces);
    const int32_t dangling[] = {2, 0};
    const char *const pieces2[] = {"a", "", "\xef\xbf\xbd"}; /* the flush gives the lone byte's U+FFFD */
    check_stream(tok, dangling, 2, 0, pieces2);
    const int32_t bad[] = {1, 1, 2}; /* two stray continuation bytes */
    check_stream(tok, bad, 3, 0, NULL);
    tok_free(tok);
}

static void test_stream_byte_fallback_and_specials(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_SPM);
    /* <0xC3> <0xA9> is "é"; a run broken by a non-byte token becomes one U+FFFD per byte. */
    const int32_t a[] = {1, 9, 3, 4, 8, 3, 5, 8};
    check_stream(tok, a, 8, 0, NULL);
    check_stream(tok, a, 8, 1, NULL);
    const int32_t b[] = {5, 5, 9, 1, 5, 0, 8};
    check_stream(tok, b, 7, 0, NULL);
    check_stream(tok, b, 7, 1, NULL);
    /* Every short sequence over the whole vocabulary (and a missing id). */
    for (int32_t x = 0; x < 11; x++)
        for (int32_t y = 0; y < 11; y++)
            for (int32_t z = 0; z < 11; z++) {
                const int32_t s[] = {x, y, z, y};
                check_stream(tok, s, 4, 0, NULL);
                check_stream(tok, s, 4, 1, NULL);
            }
    tok_free(tok);
}

/* ---- UTF-8 repair ---- */

static void expect_repair_n(const char *in, size_t n, const char *want, size_t want_len) {
    size_t len;
    char *out = lq_utf8_repair_dup(in, n, &len);
    assert_non_null(out);
    assert_int_equal(len, want_len);
    assert_memory_equal(out, want, len);
    free(out);
}

static void expect_repair(const char *in, size_t n, const char *want) { expect_repair_n(in, n, want, strlen(want)); }

static void test_utf8_repair(void **state) {
    (void)state;
#define R "\xef\xbf\xbd"
    expect_repair("abc", 3, "abc");
    expect_repair("\x80", 1, R);
    expect_repair("\xc0\x80", 2, R R);         /* overlong: each byte */
    expect_repair("\xe4\xb8", 2, R);           /* truncated: one */
    expect_repair("\xe4\xb8" "a", 3, R "a");
    expect_repair("\xed\xa0\x80", 3, R R R);   /* surrogate */
    expect_repair("\xf4\x90\x80\x80", 4, R R R R); /* past U+10FFFF */
    expect_repair("\xf0\x9f\x98", 3, R);
    expect_repair("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80");
    expect_repair("\xff\xfe", 2, R R);
    expect_repair_n("a\0b", 3, "a\0b", 3);
#undef R
}

/* ---- concurrency ---- */

typedef struct job {
    const lq_tokenizer *tok;
    int ok;
} job;

static void *encode_many(void *arg) {
    job *j = arg;
    j->ok = 1;
    for (int i = 0; i < 2000; i++) {
        int32_t *ids;
        size_t n;
        lq_error err;
        if (tok_encode(j->tok, "a <m> b xy axy", 14, 1, &ids, &n, &err) != 0 || n != 9 || ids[1] != 9) j->ok = 0;
        free(ids);
    }
    return NULL;
}

static void test_concurrent_encode(void **state) {
    (void)state;
    lq_tokenizer *tok = load(TOK_ADDED);
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){tok, 0};
        pthread_create(&th[i], NULL, encode_many, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(jobs[i].ok);
    }
    tok_free(tok);
}

/* ---- malformed files ---- */

typedef struct bad_case {
    const char *json;
    const char *message; /* a fragment the error must contain */
} bad_case;

static const bad_case BAD[] = {
    {"", "invalid JSON"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0", "invalid JSON"},
    {"[]", "top level must be an object"},
    {"{}", "missing 'model'"},
    {"{\"model\": {\"type\": \"BPE\"}, \"model\": {}}", "duplicate"},
    {"{\"model\": 7}", "model: must be an object"},
    {"{\"model\": {\"vocab\": {}}}", "missing string field 'type'"},
    {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "unsupported model type 'Unigram'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": []}}", "'vocab' must be an object"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}}}", "id of token 'a' must be an integer"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}}", "both have id 0"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}", "out of range"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}}}", "out of range"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 123456789012345678901234567890}}}", "invalid JSON"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e400}}}", "invalid JSON"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a q\"]}}", "token 'q' is not in the vocabulary"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "token 'ab' is not in"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"aa\"]}}", "separated by one space"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a a\"]}}", "separated by one space"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"aa\": 1}, \"merges\": [\"a a\", [\"a\", \"a\"]]}}", "mixed"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [5]}}", "a merge must be"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", "a merge must be"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": {}}}", "'merges' must be an array"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"dropout\": 0.1}}", "dropout"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"byte_fallback\": \"yes\"}}", "'byte_fallback' must be a boolean"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"unk_token\": 3}}", "'unk_token' must be a string"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"normalizer\": {\"type\": \"Precompiled\"}}",
     "unsupported normalizer type 'Precompiled'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": 1}}",
     "'normalizers' must be an array"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": "
     "\"(\"}, \"content\": \"x\"}}", "bad regex"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Glob\": "
     "\"x\"}, \"content\": \"x\"}}", "'pattern' must hold one string"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"UnicodeScripts\"}}",
     "unsupported pre-tokenizer type 'UnicodeScripts'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": "
     "\"x\"}, \"behavior\": \"Sideways\"}}", "unknown split behavior 'Sideways'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
     "[{\"type\": \"Metaspace\", \"replacement\": \"ab\"}]}}", "pretokenizers[0]: 'replacement' must be exactly one"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"prepend_scheme\": "
     "\"sometimes\"}}", "unknown prepend_scheme 'sometimes'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"pre_tokenizer\": [1]}", "pre_tokenizer: must be an object"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"decoder\": {\"type\": \"CTC\"}}", "unsupported decoder type 'CTC'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"decoder\": {\"type\": \"Strip\", \"content\": \" \", \"start\": "
     "-1, \"stop\": 0}}", "'start' = -1 is out of range"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}, \"decoder\": {\"type\": \"Strip\", \"content\": \" \"}}",
     "missing integer field 'start'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": {}}", "added_tokens: must be an array"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 5, \"content\": \"<x>\"}]}",
     "'<x>' has id 5, but tokenizers gives it id 1"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": -1, \"content\": \"<x>\"}]}",
     "'id' = -1 is out of range"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": \"<x>\"}, "
     "{\"id\": 1, \"content\": \"<x>\"}]}", "listed twice"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1}]}",
     "missing string field 'content'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"Magic\"}}",
     "unsupported post-processor type 'Magic'"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
     "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}}",
     "special token '<s>' is not in special_tokens"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
     "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}}], \"special_tokens\": {\"<s>\": {\"ids\": [0]}}}}",
     "has no $A"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
     "\"single\": [{\"Sequence\": {\"id\": \"A\"}}, {\"SpecialToken\": {\"id\": \"<s>\"}}], \"special_tokens\": "
     "{\"<s>\": {\"ids\": [99999999999]}}}}",
     "ids[0] must be an integer in"},
};

static void test_malformed(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        lq_error err;
        err.msg[0] = '\0';
        lq_tokenizer *tok = tok_load_json(BAD[i].json, strlen(BAD[i].json), &err);
        if (tok) fail_msg("case %zu loaded, expected an error about \"%s\"", i, BAD[i].message);
        if (!strstr(err.msg, BAD[i].message))
            fail_msg("case %zu: error \"%s\" does not mention \"%s\"", i, err.msg, BAD[i].message);
    }
}

/* Every prefix of a valid file fails cleanly (truncation anywhere). */
static void test_truncated(void **state) {
    (void)state;
    size_t n = strlen(TOK_SPM);
    for (size_t cut = 0; cut < n; cut++) {
        lq_error err;
        lq_tokenizer *tok = tok_load_json(TOK_SPM, cut, &err);
        if (tok) fail_msg("prefix of %zu bytes loaded", cut);
        assert_non_null(strstr(err.msg, "invalid JSON"));
    }
}

static void test_load_path(void **state) {
    (void)state;
    lq_error err;
    assert_null(tok_load("/nonexistent/dir", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/dir"));
    char dir[] = "/tmp/lorq-tok-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    fputs(TOK_MERGES, f);
    fclose(f);
    lq_tokenizer *tok = tok_load(dir, &err);
    assert_non_null(tok);
    EXPECT(tok, "abc", 0, 5);
    tok_free(tok);
    remove(path);
    remove(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_long_word_is_fast),
        cmocka_unit_test(test_byte_fallback_and_unk),
        cmocka_unit_test(test_added_token_options),
        cmocka_unit_test(test_invalid_utf8_input),
        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_stream_split_utf8),
        cmocka_unit_test(test_stream_byte_fallback_and_specials),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_concurrent_encode),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_load_path),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
