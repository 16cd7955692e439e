/* Base64 (RFC 4648, with padding), for image content and for write_file's
 * "base64" encoding. */
#pragma once

#include <stddef.h>

/* The encoding of in[0..len), NUL-terminated, malloc'ed; NULL when out of
 * memory.  *out_len (when not NULL) is its length. */
char *base64_encode(const unsigned char *in, size_t len, size_t *out_len);

/* Decode s[0..len) (padding required, no whitespace, no other alphabet)
 * into a malloc'ed buffer.  Returns 0, -EINVAL for anything that is not
 * canonical base64, -ENOMEM. */
int base64_decode(const char *s, size_t len, unsigned char **out, size_t *out_len);
