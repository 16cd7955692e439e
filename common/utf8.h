/* UTF-8 checks and clean-up (common/utf8.c).  A bad byte becomes U+FFFD. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 sequence at p, 0 if p starts an invalid one
 * (or is NUL), -1 if it is a valid start cut short by the end of input. */
int utf8_sequence(const unsigned char *p, size_t avail);

/* Is s[0..len) valid UTF-8 without NUL?  If not, *bad_at (when not NULL)
 * is the offset of the first bad byte. */
bool utf8_valid(const char *s, size_t len, size_t *bad_at);

/* Copy in[0..inlen) to out as valid UTF-8 without NUL, at most outcap
 * bytes, never splitting a character.  Unless final, a valid sequence cut
 * short by the end of the input stays unconsumed.  Returns the bytes
 * written; *used is how much of the input was consumed. */
size_t utf8_clean(const char *in, size_t inlen, char *out, size_t outcap, size_t *used, bool final);

/* A malloc'ed clean copy of s, at most max bytes of it, plus marker when it
 * had to be cut.  NULL only when out of memory. */
char *utf8_clean_dup(const char *s, size_t len, size_t max, const char *marker, size_t *out_len);

/* A malloc'ed clean copy of all of s.  NULL only when out of memory. */
char *utf8_sanitize_dup(const char *s, size_t len, size_t *out_len);
