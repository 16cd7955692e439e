/* Text and names that leave the sandbox (common/escape.h has the rules). */
#include "escape.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static const char hex[] = "0123456789abcdef";

/* How s[i..] is shown: the length of the run of bytes that stay as they are
 * (> 0), or 0 when s[i] starts something that is escaped; *n is then the
 * number of bytes escaped together (1, or 2 for a C1 control) and *c1 says
 * which form. */
static size_t text_plain_run(const unsigned char *p, size_t avail, unsigned flags, size_t *n, bool *c1) {
        unsigned char c = p[0];
        int seq;

        *c1 = false;
        *n = 1;
        if (c >= 0x20 && c < 0x7f)
                return 1;
        if (c == '\n' || c == '\t')
                return (flags & ESCAPE_KEEP_LINES) ? 1 : 0;
        if (c < 0x80)
                return 0; /* the other C0 controls, NUL, DEL */
        seq = utf8_sequence(p, avail);
        if (seq <= 0)
                return 0; /* not UTF-8: one byte */
        if (c == 0xC2 && p[1] < 0xA0) {
                *c1 = true; /* U+0080-U+009F */
                *n = 2;
                return 0;
        }
        return (size_t)seq;
}

bool text_needs_escape(const char *s, size_t len, unsigned flags) {
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0, n, run;
        bool c1;

        while (i < len) {
                run = text_plain_run(p + i, len - i, flags, &n, &c1);
                if (run == 0)
                        return true;
                i += run;
        }
        return false;
}

size_t text_escape(const char *s, size_t len, char *out, unsigned flags) {
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0, o = 0, n, run;
        bool c1;

        while (i < len) {
                unsigned char v;

                run = text_plain_run(p + i, len - i, flags, &n, &c1);
                if (run > 0) {
                        memcpy(out + o, p + i, run);
                        o += run;
                        i += run;
                        continue;
                }
                v = c1 ? p[i + 1] : p[i]; /* U+0080-U+009F: its second byte is its value */
                if (c1 || (flags & ESCAPE_JSON)) {
                        memcpy(out + o, "\\u00", 4);
                        o += 4;
                } else {
                        memcpy(out + o, "\\x", 2);
                        o += 2;
                }
                out[o++] = hex[v >> 4];
                out[o++] = hex[v & 15];
                i += n;
        }
        return o;
}

char *text_escape_dup(const char *s, size_t len, unsigned flags, size_t *out_len) {
        char *out = malloc(len * TEXT_ESCAPE_GROWTH + 1);
        size_t n;

        if (!out)
                return NULL;
        n = text_escape(s, len, out, flags);
        out[n] = '\0';
        *out_len = n;
        return out;
}

/* ---- names -------------------------------------------------------------- */

/* The length of the run of name bytes at raw[i..] that are shown as they
 * are, or 0 when raw[i] is escaped (one byte). */
static size_t name_plain_run(const unsigned char *p, size_t i, size_t len) {
        unsigned char c = p[i];
        int seq;

        if (i == 0 && c == '-')
                return 0; /* would be read as an option by the program it is passed to */
        if (c == '\\')
                return 0; /* the escape character itself */
        if (c >= 0x20 && c < 0x7f)
                return 1;
        if (c < 0x80)
                return 0;
        seq = utf8_sequence(p + i, len - i);
        if (seq <= 0 || (c == 0xC2 && p[i + 1] < 0xA0))
                return 0; /* not UTF-8, or a C1 control: its first byte (the second follows) */
        return (size_t)seq;
}

bool name_needs_escape(const char *raw, size_t len) {
        const unsigned char *p = (const unsigned char *)raw;
        size_t i = 0, run;

        while (i < len) {
                run = name_plain_run(p, i, len);
                if (run == 0)
                        return true;
                i += run;
        }
        return false;
}

size_t name_show(const char *raw, size_t len, char *out) {
        const unsigned char *p = (const unsigned char *)raw;
        size_t i = 0, o = 0, run;

        while (i < len) {
                run = name_plain_run(p, i, len);
                if (run > 0) {
                        memcpy(out + o, p + i, run);
                        o += run;
                        i += run;
                        continue;
                }
                out[o++] = '\\';
                out[o++] = 'x';
                out[o++] = hex[p[i] >> 4];
                out[o++] = hex[p[i] & 15];
                i++;
        }
        out[o] = '\0';
        return o;
}

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1; /* uppercase too: one spelling per byte */
}

/* Decode shown[0..len) into out (outcap bytes, NUL-terminated), then accept
 * it only if showing it again gives shown back. */
static int name_take_len(const char *shown, size_t len, char *out, size_t outcap) {
        const unsigned char *raw = (const unsigned char *)out;
        size_t i = 0, o = 0, j;

        if (outcap == 0)
                return -ENAMETOOLONG;
        while (i < len) {
                unsigned char b = (unsigned char)shown[i];

                if (b == '\\') {
                        int hi, lo;
                        if (len - i < 4 || shown[i + 1] != 'x' || (hi = hex_value(shown[i + 2])) < 0 ||
                            (lo = hex_value(shown[i + 3])) < 0)
                                return -EINVAL;
                        b = (unsigned char)(hi << 4 | lo);
                        if (b == '\0')
                                return -EINVAL; /* no name holds a NUL */
                        i += 4;
                } else {
                        i++;
                }
                if (o + 1 >= outcap)
                        return -ENAMETOOLONG;
                out[o++] = (char)b;
        }
        out[o] = '\0';
        /* Canonical: exactly the spelling name_show() gives, compared as it
         * would write it.  This also refuses raw control characters, invalid
         * UTF-8, a raw leading '-' and a decoded '/' (shown raw, never as
         * \x2f). */
        for (i = 0, j = 0; i < o;) {
                size_t run = name_plain_run(raw, i, o);
                if (run > 0) {
                        if (j + run > len || memcmp(shown + j, out + i, run) != 0)
                                return -EINVAL;
                        i += run;
                        j += run;
                        continue;
                }
                if (j + 4 > len || shown[j] != '\\' || shown[j + 2] != hex[raw[i] >> 4] ||
                    shown[j + 3] != hex[raw[i] & 15])
                        return -EINVAL;
                i++;
                j += 4;
        }
        return j == len ? 0 : -EINVAL;
}

int name_take(const char *shown, char *out, size_t outcap) {
        return name_take_len(shown, strlen(shown), out, outcap);
}

int path_show(const char *raw, char *out, size_t outcap) {
        size_t len = strlen(raw), o = 0;
        char *tmp = malloc(len * NAME_SHOW_GROWTH + 1);
        const char *p = raw;

        if (!tmp)
                return -ENOMEM;
        for (;;) {
                size_t n = strcspn(p, "/");
                o += name_show(p, n, tmp + o);
                p += n;
                if (!*p)
                        break;
                tmp[o++] = '/';
                p++;
        }
        if (o + 1 > outcap) {
                free(tmp);
                return -ENAMETOOLONG;
        }
        memcpy(out, tmp, o + 1);
        free(tmp);
        return 0;
}

int path_take(const char *shown, char *out, size_t outcap) {
        const char *p = shown;
        size_t o = 0;

        for (;;) {
                size_t n = strcspn(p, "/");
                int e = name_take_len(p, n, out + o, outcap - o);
                if (e < 0)
                        return e;
                o += strlen(out + o);
                p += n;
                if (!*p)
                        return 0;
                if (o + 2 > outcap)
                        return -ENAMETOOLONG;
                out[o++] = '/';
                out[o] = '\0';
                p++;
        }
}
