/* Unit tests of common/utf8.c: what the daemon refuses as code and what both
 * programs clean before it goes into a JSON string. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "utf8.h"

int main(void) {
        size_t bad = 99, len, used;
        char out[16], *s;

        CHECK(utf8_valid("x <- 'é€😀'", strlen("x <- 'é€😀'"), &bad) && bad == 99);
        CHECK(!utf8_valid("ab\xff", 3, &bad) && bad == 2);
        CHECK(!utf8_valid("a\0b", 3, &bad) && bad == 1);              /* NUL */
        CHECK(!utf8_valid("\xc0\xaf", 2, &bad) && bad == 0);          /* overlong '/' */
        CHECK(!utf8_valid("\xed\xa0\x80", 3, &bad) && bad == 0);      /* surrogate */
        CHECK(!utf8_valid("\xf4\x90\x80\x80", 4, &bad) && bad == 0);  /* above U+10FFFF */
        CHECK(!utf8_valid("\xe2\x82", 2, NULL));                      /* cut short */
        CHECK(utf8_sequence((const unsigned char *)"\xe2\x82", 2) == -1);

        s = utf8_sanitize_dup("a\xff" "b", 3, &len);
        CHECK(s && len == 5 && memcmp(s, "a\xef\xbf\xbd" "b", 5) == 0);
        free(s);
        s = utf8_sanitize_dup("\xff\xff\xff", 3, &len); /* grows threefold, nothing cut */
        CHECK(s && len == 9);
        free(s);
        s = utf8_clean_dup("abcdef", 6, 3, "...", &len);
        CHECK(s && strcmp(s, "abc...") == 0);
        free(s);
        /* A character cut by the end of a console write waits for the rest. */
        len = utf8_clean("a\xe2\x82", 3, out, sizeof(out), &used, false);
        CHECK(len == 1 && used == 1);
        len = utf8_clean("a\xe2\x82", 3, out, sizeof(out), &used, true);
        CHECK(len == 7 && used == 3);
        return check_summary("utf8");
}
