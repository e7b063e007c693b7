/* tokenizer.h — text <-> token ids, read from a Hugging Face tokenizer.json.
 *
 * The contract is parity: for every tokenizer.json this loads, tok_encode and
 * tok_decode return exactly what the `tokenizers` library (0.23) returns for
 * Tokenizer.encode(text, add_special_tokens).ids and Tokenizer.decode(ids,
 * skip_special_tokens). A file using something we do not implement is refused
 * at load time with a message naming it, never tokenized differently.
 *
 * Supported (the families Llama-2/Mistral/Llama-3/SmolLM/GPT-2 ship):
 *   model           BPE: vocab, merges ("a b" strings or [a, b] pairs),
 *                   byte_fallback, unk_token, fuse_unk, ignore_merges,
 *                   continuing_subword_prefix, end_of_word_suffix; dropout
 *                   must be null (or 0)
 *   normalizer      NFC NFD NFKC NFKD Lowercase Strip Prepend Replace
 *                   ByteLevel Sequence null
 *   pre_tokenizer   ByteLevel Split Digits Metaspace Whitespace
 *                   WhitespaceSplit Punctuation CharDelimiterSplit
 *                   BertPreTokenizer Sequence null
 *   post_processor  TemplateProcessing (single), ByteLevel, RobertaProcessing,
 *                   BertProcessing, Sequence null
 *   decoder         ByteLevel Metaspace Replace ByteFallback Fuse Strip
 *                   Sequence null
 *   added_tokens    content special single_word lstrip rstrip normalized
 * `truncation` and `padding` are ignored: lorq enforces lengths itself.
 * Stricter than the library: an added token whose "id" differs from the id
 * the library would assign it is refused (the library warns and renumbers).
 *
 * Text given to tok_encode may be any bytes: invalid UTF-8 is first repaired
 * (one U+FFFD per maximal ill-formed subpart, see utf8.h), so encoding raw
 * bytes equals the library encoding bytes.decode('utf-8', 'replace').
 *
 * A loaded tokenizer is immutable: every function taking a const
 * lq_tokenizer * is safe to call from many threads at once. */
#ifndef LORQ_TOKENIZER_H
#define LORQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct lq_tokenizer lq_tokenizer;

/* Loads PATH, or PATH/tokenizer.json when PATH is a directory. */
lq_tokenizer *tok_load(const char *path, lq_error *err);

/* Loads a tokenizer.json held in memory (need not be NUL-terminated). */
lq_tokenizer *tok_load_json(const char *json, size_t len, lq_error *err);

void tok_free(lq_tokenizer *tok);

/* Encodes text[0..len) into a malloc'd array *ids of *n_ids ids (the caller
 * frees it; it is non-NULL even when empty). add_special_tokens applies the
 * post-processor (e.g. Llama's BOS). Returns 0, or -1 with err set. */
int tok_encode(const lq_tokenizer *tok, const char *text, size_t len, int add_special_tokens, int32_t **ids,
               size_t *n_ids, lq_error *err);

/* Decodes ids into a malloc'd NUL-terminated UTF-8 string (length in *out_len
 * when out_len is not NULL). Ids with no token are skipped, as the library
 * does; skip_special drops tokens whose added_tokens entry says special.
 * Returns NULL with err set only when out of memory. */
char *tok_decode(const lq_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, size_t *out_len,
                 lq_error *err);

/* One more than the largest id that has a token (the rows an embedding needs). */
size_t tok_vocab_size(const lq_tokenizer *tok);

/* Id of a token string (added tokens first, then the model vocabulary), or -1. */
int32_t tok_token_to_id(const lq_tokenizer *tok, const char *token);

/* Token string of an id (NUL-terminated, owned by tok), or NULL. */
const char *tok_id_to_token(const lq_tokenizer *tok, int32_t id);

/* 1 when id is an added token flagged special (skipped by skip_special). */
int tok_is_special(const lq_tokenizer *tok, int32_t id);

/* Streaming decode: push generated ids one at a time and get back only the
 * text they complete. Never returns half a UTF-8 character, nor a trailing
 * U+FFFD (or an open byte-fallback run) that a later id could still change;
 * the pieces of all pushes plus the final flush concatenate to exactly
 * tok_decode of all the ids with the same skip_special. (With a ByteFallback
 * decoder, text of a run of "<0xXX>" tokens waits for the run to end: one
 * more invalid byte would turn the whole run into U+FFFDs.) One stream per
 * generation; a stream is not shared between threads. */
typedef struct lq_tok_stream lq_tok_stream;

lq_tok_stream *tok_stream_new(const lq_tokenizer *tok, int skip_special);

/* Pushes id; *text (owned by the stream, valid until the next call) gets the
 * newly completed text, *len its length (often 0). Returns 0, or -1 with err
 * set when out of memory. */
int tok_stream_push(lq_tok_stream *s, int32_t id, const char **text, size_t *len, lq_error *err);

/* Returns whatever text is still held back (the end of the generation). The
 * stream may be reused afterwards as if new. */
int tok_stream_flush(lq_tok_stream *s, const char **text, size_t *len, lq_error *err);

void tok_stream_free(lq_tok_stream *s);

#endif
