/* utf8.c — validation and lossy repair of UTF-8 (see utf8.h for the policy).
 *
 * One small state machine does both jobs: seq_len() looks at a lead byte and
 * the bytes after it and reports either a complete valid sequence or the
 * length of the maximal ill-formed subpart that one U+FFFD replaces. The
 * second-byte ranges that differ from 80..BF (E0, ED, F0, F4) are what rule
 * out overlong forms, surrogates and code points past U+10FFFF. */
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

/* Valid range of the byte right after lead byte b (the later ones are 80..BF). */
static void second_byte_range(unsigned char b, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b == 0xE0) *lo = 0xA0;
    else if (b == 0xED) *hi = 0x9F;
    else if (b == 0xF0) *lo = 0x90;
    else if (b == 0xF4) *hi = 0x8F;
}

/* Examines the sequence starting at s[0] (n > 0 bytes available). Returns its
 * length; *valid says whether it is a complete well-formed character or a
 * maximal ill-formed subpart to replace by one U+FFFD. */
static size_t seq_len(const unsigned char *s, size_t n, int *valid) {
    unsigned char b = s[0];
    size_t need;
    if (b < 0x80) {
        *valid = 1;
        return 1;
    }
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) need = 3;
    else if (b >= 0xF0 && b <= 0xF4) need = 4;
    else {
        *valid = 0; /* 80..C1, F5..FF never start a character */
        return 1;
    }
    unsigned char lo, hi;
    second_byte_range(b, &lo, &hi);
    size_t i = 1;
    for (; i < need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *valid = 0;
            return i;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    *valid = 1;
    return need;
}

size_t lq_utf8_valid_prefix(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int valid;
        size_t n = seq_len(p + i, len - i, &valid);
        if (!valid) break;
        i += n;
    }
    return i;
}

size_t lq_utf8_repair(const char *s, size_t len, char *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        int valid;
        size_t n = seq_len(p + i, len - i, &valid);
        if (valid) {
            memcpy(out + o, p + i, n);
            o += n;
        } else {
            o += (size_t)lq_utf8_put(out + o, LQ_UTF8_REPLACEMENT);
        }
        i += n;
    }
    return o;
}

char *lq_utf8_repair_dup(const char *s, size_t len, size_t *out_len) {
    size_t valid = lq_utf8_valid_prefix(s, len);
    size_t cap = valid == len ? len + 1 : 3 * len + 1;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t n = valid == len ? (memcpy(out, s, len), len) : lq_utf8_repair(s, len, out);
    out[n] = '\0';
    if (out_len) *out_len = n;
    return out;
}

uint32_t lq_utf8_next(const char *s, size_t *i) {
    const unsigned char *p = (const unsigned char *)s + *i;
    uint32_t c = p[0];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c < 0xE0) {
        *i += 2;
        return ((c & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (c < 0xF0) {
        *i += 3;
        return ((c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    *i += 4;
    return ((c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) | ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

int lq_utf8_put(char *out, uint32_t cp) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
