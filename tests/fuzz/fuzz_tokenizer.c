/* fuzz_tokenizer.c — libFuzzer target for the tokenizer, in two modes chosen
 * by the first input byte:
 *
 *   even: the rest is a tokenizer.json. Loading must fail cleanly or give a
 *         tokenizer that encodes and decodes some fixed awkward strings.
 *   odd:  the rest is text (any bytes) for fixed tokenizers of the three
 *         families. Besides not crashing, encoding must give ids that exist,
 *         and streaming decode must add up to exactly the full decode; the
 *         input is also read as a list of ids and decoded the same way.
 *
 * A broken invariant aborts, so libFuzzer reports it like a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

/* Byte-level BPE after the Llama-3 split, with added tokens of every kind. */
static const char BYTELEVEL_JSON[] =
    "{\"added_tokens\": [{\"id\": 9, \"content\": \"<|eot|>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 10, \"content\": \"<m>\", \"special\": true, \"lstrip\": true, \"rstrip\": true},"
    " {\"id\": 11, \"content\": \"ab\", \"single_word\": true, \"special\": false, \"normalized\": true}],"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true},"
    " {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
    "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": "
    "\"Isolated\"}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<|eot|>\"}},"
    " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<|eot|>\": {\"ids\": [9]}}},"
    " \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {\"a\": 0, \"b\": 1, \"\\u0120\": 2,"
    " \"\\u00c3\": 3, \"\\u00a9\": 4, \"\\u0120a\": 5, \"\\u00c3\\u00a9\": 6, \"1\": 7, \"\\u010a\": 8},"
    " \"merges\": [\"\\u0120 a\", \"\\u00c3 \\u00a9\"]}}";

/* SentencePiece style with byte fallback and the Llama-2 decoder chain. */
static const char SPM_JSON[] =
    "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},"
    " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"},"
    " \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \","
    " \"start\": 1, \"stop\": 0}]},"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": \"<s>\","
    " \"special\": true}, {\"id\": 10, \"content\": \"<t>\", \"special\": false, \"normalized\": true}],"
    " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    " \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"<0xC3>\": 2, \"<0xA9>\": 3, \"<0x0A>\": 4, \"\\u2581\": 5, \"h\": 6,"
    " \"i\": 7, \"\\u2581h\": 8, \"\\u2581hi\": 9}, \"merges\": [\"\\u2581 h\", \"\\u2581h i\"]}}";

/* Normalizers and Metaspace with prepend_scheme "first". */
static const char META_JSON[] =
    "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKC\"}, {\"type\": \"Lowercase\"},"
    " {\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": true}]},"
    " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\","
    " \"split\": true},"
    " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": \"first\"},"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"[UNK]\", \"special\": true}],"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": \"[UNK]\", \"vocab\": {\"[UNK]\": 0, \"\\u2581\": 1, \"a\": 2,"
    " \"b\": 3, \"\\u2581a\": 4}, \"merges\": [\"\\u2581 a\"]}}";

static const char *const PROBES[] = {
    "", " ", "Hello world", "a  b\n\n c\t", "<s>x</s>", "\xff\xfe\xc3", "\xe4\xb8\xad\xe6\x96\x87 12345",
    "<|eot|> <m> ab", "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9", "'s 'LL \xc5\xbf",
};

static lq_tokenizer *fixed[3];

static void check_stream(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip) {
    lq_error err;
    size_t full_len;
    char *full = tok_decode(tok, ids, n, skip, &full_len, &err);
    if (!full) abort();
    if (lq_utf8_valid_prefix(full, full_len) != full_len) abort();
    lq_tok_stream *s = tok_stream_new(tok, skip);
    if (!s) abort();
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *text;
        size_t len;
        int rc = i < n ? tok_stream_push(s, ids[i], &text, &len, &err) : tok_stream_flush(s, &text, &len, &err);
        if (rc != 0) abort();
        if (lq_utf8_valid_prefix(text, len) != len) abort(); /* never half a character */
        if (at + len > full_len || memcmp(full + at, text, len) != 0) abort(); /* pieces add up to the decode */
        at += len;
    }
    if (at != full_len) abort();
    tok_stream_free(s);
    free(full);
}

static void exercise(const lq_tokenizer *tok, const char *text, size_t len) {
    lq_error err;
    for (int add = 0; add < 2; add++) {
        int32_t *ids;
        size_t n;
        if (tok_encode(tok, text, len, add, &ids, &n, &err) != 0) continue; /* e.g. a missing unk token */
        for (size_t i = 0; i < n; i++)
            if (!tok_id_to_token(tok, ids[i])) abort();
        if (n <= 4096) {
            check_stream(tok, ids, n, 0);
            check_stream(tok, ids, n, 1);
        }
        free(ids);
    }
}

/* Reads the text as little-endian 16-bit ids, some past the vocabulary. */
static void decode_as_ids(const lq_tokenizer *tok, const uint8_t *data, size_t size) {
    size_t n = size / 2 > 256 ? 256 : size / 2;
    int32_t ids[256];
    size_t vocab = tok_vocab_size(tok) + 2;
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((data[2 * i] | data[2 * i + 1] << 8) % vocab);
    check_stream(tok, ids, n, 0);
    check_stream(tok, ids, n, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *rest = (const char *)data + 1;
    size_t len = size - 1;
    lq_error err;
    if ((data[0] & 1) == 0) {
        lq_tokenizer *tok = tok_load_json(rest, len, &err);
        if (!tok) return 0;
        for (size_t i = 0; i < sizeof PROBES / sizeof PROBES[0]; i++) exercise(tok, PROBES[i], strlen(PROBES[i]));
        const int32_t ids[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1000, 3, 2};
        check_stream(tok, ids, sizeof ids / sizeof ids[0], 0);
        tok_free(tok);
        return 0;
    }
    if (!fixed[0]) {
        const char *specs[3] = {BYTELEVEL_JSON, SPM_JSON, META_JSON};
        for (int i = 0; i < 3; i++)
            if (!(fixed[i] = tok_load_json(specs[i], strlen(specs[i]), &err))) abort();
    }
    const lq_tokenizer *tok = fixed[(data[0] >> 1) % 3];
    if (len > 4096) len = 4096;
    exercise(tok, rest, len);
    decode_as_ids(tok, (const uint8_t *)rest, len);
    return 0;
}
