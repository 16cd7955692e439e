#include "base64.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const unsigned char *in, size_t len, size_t *out_len) {
        size_t n = (len + 2) / 3 * 4, i, o = 0;
        char *out;

        if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
                return NULL;
        out = malloc(n + 1);
        if (!out)
                return NULL;
        for (i = 0; i + 2 < len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
                out[o++] = alphabet[v >> 18];
                out[o++] = alphabet[(v >> 12) & 63];
                out[o++] = alphabet[(v >> 6) & 63];
                out[o++] = alphabet[v & 63];
        }
        if (i < len) {
                uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
                out[o++] = alphabet[v >> 18];
                out[o++] = alphabet[(v >> 12) & 63];
                out[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
                out[o++] = '=';
        }
        out[o] = '\0';
        if (out_len)
                *out_len = o;
        return out;
}

static int value_of(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int base64_decode(const char *s, size_t len, unsigned char **out, size_t *out_len) {
        size_t pad = 0, n, i, o = 0;
        unsigned char *buf;

        if (len % 4 != 0)
                return -EINVAL;
        if (len >= 4 && s[len - 1] == '=')
                pad = s[len - 2] == '=' ? 2 : 1;
        n = len / 4 * 3 - pad;
        buf = malloc(n ? n : 1);
        if (!buf)
                return -ENOMEM;
        for (i = 0; i < len; i += 4) {
                int a = value_of(s[i]), b = value_of(s[i + 1]);
                bool last = i + 4 == len;
                int c = last && pad == 2 ? 0 : value_of(s[i + 2]);
                int d = last && pad >= 1 ? 0 : value_of(s[i + 3]);
                uint32_t v;

                if (a < 0 || b < 0 || c < 0 || d < 0)
                        goto bad;
                /* Canonical only: the bits a padded quantum drops are zero. */
                if (last && pad == 2 && (b & 15))
                        goto bad;
                if (last && pad == 1 && (c & 3))
                        goto bad;
                v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
                buf[o++] = (unsigned char)(v >> 16);
                if (!(last && pad == 2))
                        buf[o++] = (unsigned char)(v >> 8);
                if (!(last && pad >= 1))
                        buf[o++] = (unsigned char)v;
        }
        *out = buf;
        *out_len = o;
        return 0;
bad:
        free(buf);
        return -EINVAL;
}
