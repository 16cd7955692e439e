/* UTF-8 checks and clean-up, shared by the daemon (code from the mount, names
 * and messages it sends on) and the worker (R strings and console output,
 * which can hold any bytes).  Valid means RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF, and here also no NUL (R strings and
 * jansson's strings cannot hold one). */
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macros.h"

/* Length of the valid UTF-8 sequence at p, 0 if p starts an invalid one
 * (or is NUL), -1 if it is a valid start cut short by the end of input. */
int utf8_sequence(const unsigned char *p, size_t avail) {
        unsigned char c = p[0], lo = 0x80, hi = 0xBF;
        int n;

        if (c < 0x80)
                return c ? 1 : 0;
        if (c >= 0xC2 && c <= 0xDF) {
                n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
                n = 3;
                if (c == 0xE0)
                        lo = 0xA0; /* overlong */
                else if (c == 0xED)
                        hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
                n = 4;
                if (c == 0xF0)
                        lo = 0x90; /* overlong */
                else if (c == 0xF4)
                        hi = 0x8F; /* above U+10FFFF */
        } else {
                return 0;
        }
        for (int i = 1; i < n; i++) {
                unsigned char d;

                if ((size_t)i >= avail)
                        return -1;
                d = p[i];
                if (i == 1 ? d < lo || d > hi : d < 0x80 || d > 0xBF)
                        return 0;
        }
        return n;
}

bool utf8_valid(const char *s, size_t len, size_t *bad_at) {
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;

        while (i < len) {
                int n;

                if (p[i] && p[i] < 0x80) {
                        i++;
                        continue;
                }
                n = utf8_sequence(p + i, len - i);
                if (n <= 0) {
                        if (bad_at)
                                *bad_at = i;
                        return false;
                }
                i += (size_t)n;
        }
        return true;
}

/* Copy in[0..inlen) to out as valid UTF-8 without NUL, at most outcap
 * bytes, never splitting a character.  Unless final, a valid sequence cut
 * short by the end of the input stays unconsumed (the rest may come in the
 * next console write).  Returns the bytes written; *used is how much of the
 * input was consumed. */
size_t utf8_clean(const char *in, size_t inlen, char *out, size_t outcap, size_t *used, bool final) {
        const unsigned char *p = (const unsigned char *)in;
        size_t i = 0, o = 0;

        while (i < inlen) {
                int n = p[i] && p[i] < 0x80 ? 1 : utf8_sequence(p + i, inlen - i);

                if (n < 0 && !final)
                        break;
                if (n > 0) {
                        if (o + (size_t)n > outcap)
                                break;
                        memcpy(out + o, p + i, (size_t)n);
                        o += (size_t)n;
                        i += (size_t)n;
                } else {
                        if (o + 3 > outcap)
                                break;
                        memcpy(out + o, "\xEF\xBF\xBD", 3);
                        o += 3;
                        i++;
                }
        }
        *used = i;
        return o;
}

/* A malloc'ed clean copy of s, at most max bytes of it, plus marker when it
 * had to be cut.  NULL only when out of memory. */
char *utf8_clean_dup(const char *s, size_t len, size_t max, const char *marker, size_t *out_len) {
        size_t mlen = marker ? strlen(marker) : 0, cap, used, n;
        char *out;

        if (len <= max && utf8_valid(s, len, NULL)) {
                out = malloc(len + 1);
                if (!out)
                        return NULL;
                memcpy(out, s, len);
                out[len] = '\0';
                *out_len = len;
                return out;
        }
        cap = MIN(len, max) * 3 + mlen + 1;
        out = malloc(cap);
        if (!out)
                return NULL;
        n = utf8_clean(s, len, out, MIN(cap - mlen - 1, max), &used, true);
        if (used < len && marker) {
                memcpy(out + n, marker, mlen);
                n += mlen;
        }
        out[n] = '\0';
        *out_len = n;
        return out;
}

char *utf8_sanitize_dup(const char *s, size_t len, size_t *out_len) {
        return utf8_clean_dup(s, len, SIZE_MAX / 4, NULL, out_len);
}
