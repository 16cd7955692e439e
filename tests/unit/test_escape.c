/* Unit tests of common/escape.c: text shown to people without terminal
 * controls, names shown and taken back through a bijection. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "escape.h"

static bool escapes_to(const char *in, size_t len, unsigned flags, const char *want) {
        size_t n;
        char *s = text_escape_dup(in, len, flags, &n);
        bool ok = s && n == strlen(want) && memcmp(s, want, n) == 0;

        if (!ok)
                fprintf(stderr, "escaped: \"%s\", wanted \"%s\"\n", s ? s : "(null)", want);
        free(s);
        return ok;
}

static bool shows_as(const char *raw, const char *want) {
        char out[4 * 300 + 1], back[300];
        size_t n = name_show(raw, strlen(raw), out);
        bool ok = n == strlen(want) && strcmp(out, want) == 0;

        /* and back: the shown name stands for exactly raw */
        ok = ok && name_take(out, back, sizeof(back)) == 0 && strcmp(back, raw) == 0;
        ok = ok && name_needs_escape(raw, strlen(raw)) == (strcmp(raw, want) != 0);
        if (!ok)
                fprintf(stderr, "shown: \"%s\", wanted \"%s\"\n", out, want);
        return ok;
}

static int take(const char *shown) {
        char out[300];
        return name_take(shown, out, sizeof(out));
}

int main(void) {
        char out[64], big[4 * 256 + 1], raw[256];
        unsigned seed = 12345;

        /* Text: the terminal attack, shown as visible escapes. */
        CHECK(escapes_to("\033]0;PWNED\007\033[2J", 14, ESCAPE_KEEP_LINES, "\\x1b]0;PWNED\\x07\\x1b[2J"));
        CHECK(escapes_to("a\nb\tc\r\b\x7f", 8, ESCAPE_KEEP_LINES, "a\nb\tc\\x0d\\x08\\x7f"));
        CHECK(escapes_to("a\nb", 3, 0, "a\\x0ab"));
        CHECK(escapes_to("x\0y", 3, 0, "x\\x00y"));
        /* C1 controls (CSI is U+009B, C2 9B), whole; other non-ASCII kept. */
        CHECK(escapes_to("\xc2\x9b" "2J \xc2\x80\xc2\x9f \xc2\xa0 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 24,
                         ESCAPE_KEEP_LINES, "\\u009b2J \\u0080\\u009f \xc2\xa0 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
        /* Invalid UTF-8, one byte at a time; a cut-short character too. */
        CHECK(escapes_to("\xff\xfe" "a\xe2\x82", 5, 0, "\\xff\\xfea\\xe2\\x82"));
        /* JSON text: DEL and C1 as JSON escapes. */
        CHECK(escapes_to("{\"a\":\"\x7f\xc2\x9b\"}", 11, ESCAPE_JSON, "{\"a\":\"\\u007f\\u009b\"}"));
        CHECK(!text_needs_escape("plain text\n\twith \xc3\xa9", 19, ESCAPE_KEEP_LINES));
        CHECK(text_needs_escape("plain text\n", 11, 0));
        CHECK(text_needs_escape("\xc2\x85", 2, ESCAPE_KEEP_LINES)); /* NEL */
        /* Growth bound: every byte DEL in JSON. */
        memset(raw, 0x7f, 10);
        CHECK(text_escape(raw, 10, big, ESCAPE_JSON) == 10 * TEXT_ESCAPE_GROWTH);

        /* Names. */
        CHECK(shows_as("report.csv", "report.csv"));
        CHECK(shows_as("caf\xc3\xa9 \xe2\x82\xac.txt", "caf\xc3\xa9 \xe2\x82\xac.txt"));
        CHECK(shows_as("a\033b", "a\\x1bb"));
        CHECK(shows_as("line\nbreak\r", "line\\x0abreak\\x0d"));
        CHECK(shows_as("-rf", "\\x2drf"));
        CHECK(shows_as("a-b", "a-b"));
        CHECK(shows_as("back\\slash", "back\\x5cslash"));
        CHECK(shows_as("\xff\xfe", "\\xff\\xfe"));
        CHECK(shows_as("\xc2\x9b" "x", "\\xc2\\x9bx"));
        CHECK(shows_as("tab\there", "tab\\x09here"));
        CHECK(shows_as("del\x7f", "del\\x7f"));
        CHECK(shows_as(".hidden", ".hidden"));
        /* Not the shown form of any name. */
        CHECK(take("\\x41") == -EINVAL);     /* 'A' is never escaped */
        CHECK(take("\\x1B") == -EINVAL);     /* uppercase hex */
        CHECK(take("a\\") == -EINVAL);       /* lone backslash */
        CHECK(take("a\\x1") == -EINVAL);     /* cut short */
        CHECK(take("a\\y1b") == -EINVAL);
        CHECK(take("a\033b") == -EINVAL);    /* a raw control character */
        CHECK(take("-rf") == -EINVAL);       /* a raw leading '-' */
        CHECK(take("\xff") == -EINVAL);      /* raw invalid UTF-8 */
        CHECK(take("\xc2\x9b") == -EINVAL);  /* raw C1 */
        CHECK(take("a\\x00b") == -EINVAL);   /* NUL */
        CHECK(take("a\\x2fb") == -EINVAL);   /* '/' is never escaped (and never in a name) */
        CHECK(take("\\x2d\\x2d") == -EINVAL); /* only the leading '-' is escaped */
        CHECK(take("\\x2d-") == 0);
        CHECK(take("") == 0);
        CHECK(name_take("abcdef", out, 4) == -ENAMETOOLONG);
        CHECK(name_take("abc", out, 0) == -ENAMETOOLONG);
        /* 255 bytes that all need escaping: 1020, within FUSE_NAME_MAX. */
        memset(raw, 0x1b, 255);
        raw[255] = '\0';
        CHECK(name_show(raw, 255, big) == 1020);
        CHECK(name_take(big, raw, sizeof(raw)) == 0 && strlen(raw) == 255);

        /* Paths (link targets, result.json's files): component by component. */
        CHECK(path_show("sub/\033x/./-y", big, sizeof(big)) == 0 && strcmp(big, "sub/\\x1bx/./\\x2dy") == 0);
        CHECK(path_take("sub/\\x1bx/./\\x2dy", raw, sizeof(raw)) == 0 && strcmp(raw, "sub/\033x/./-y") == 0);
        CHECK(path_take("a//b/", raw, sizeof(raw)) == 0 && strcmp(raw, "a//b/") == 0);
        CHECK(path_take("a/-b", raw, sizeof(raw)) == -EINVAL);
        CHECK(path_show("\033\033\033", out, 12) == -ENAMETOOLONG);
        CHECK(path_take("abc/def", out, 5) == -ENAMETOOLONG);

        /* Random bytes: show, take back, same bytes; the shown form has no
         * control character and is valid UTF-8 of plain characters. */
        for (int round = 0; round < 20000; round++) {
                size_t len = 1 + (seed = seed * 1103515245 + 12345) % 40, n;
                bool ok;
                for (size_t i = 0; i < len; i++) {
                        seed = seed * 1103515245 + 12345;
                        raw[i] = (char)((seed >> 16) % 255 + 1);
                        if (raw[i] == '/')
                                raw[i] = 'x';
                }
                raw[len] = '\0';
                n = name_show(raw, len, big);
                ok = !text_needs_escape(big, n, 0);
                ok = ok && name_take(big, out, sizeof(out)) == 0 && strcmp(out, raw) == 0;
                CHECK(ok);
                if (!ok)
                        break;
        }
        return check_summary("escape");
}
