/* utf8.h — the few UTF-8 operations the tokenizer (and anything that handles
 * user text) needs, with one policy for bad bytes.
 *
 * Invalid input is never rejected and never passed on: it is repaired the way
 * Rust's String::from_utf8_lossy and Python's bytes.decode('utf-8', 'replace')
 * do it, one U+FFFD per "maximal subpart" of an ill-formed sequence (Unicode
 * chapter 3, "U+FFFD Substitution of Maximal Subparts"). Matching that policy
 * exactly is what makes our encode of raw bytes equal the reference library's
 * encode of the repaired string, and our decode equal its decode. */
#ifndef LORQ_UTF8_H
#define LORQ_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define LQ_UTF8_REPLACEMENT 0xFFFDu

/* Length in bytes of the longest prefix of s[0..len) that forms a valid,
 * complete UTF-8 sequence (so len when the whole buffer is valid). */
size_t lq_utf8_valid_prefix(const char *s, size_t len);

/* Writes the repaired copy of s[0..len) to out, which must hold 3 * len bytes
 * (a U+FFFD is 3 bytes and stands for at least one input byte). Returns the
 * number of bytes written. */
size_t lq_utf8_repair(const char *s, size_t len, char *out);

/* Malloc'd, NUL-terminated repaired copy (also when s is already valid), or NULL
 * when out of memory. *out_len gets its length. */
char *lq_utf8_repair_dup(const char *s, size_t len, size_t *out_len);

/* Decodes the code point at s[*i] of a string KNOWN to be valid UTF-8 and
 * advances *i past it. */
uint32_t lq_utf8_next(const char *s, size_t *i);

/* Byte length of the character starting with lead byte c in valid UTF-8. */
static inline size_t lq_utf8_char_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Encodes cp (at most 0x10FFFF, not a surrogate) into out; returns 1..4. */
int lq_utf8_put(char *out, uint32_t cp);

#endif
