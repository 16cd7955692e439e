/* Unit tests of sessions/audit.c: the two lines of every run, formatted
 * without a JSON tree (audit_format_run_start/_end), are byte for byte the
 * lines audit_format() makes of the same events through jansson, for code
 * with every kind of character the JSON escapes (quotes, backslashes, C0
 * controls, DEL and C1, multibyte UTF-8, NUL) and for the reals a run's
 * milliseconds can be.  The "time" member is compared apart: a millisecond
 * may tick between the two calls. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "check.h"
#include "sessions/audit.h"

/* line without its time value (the 24 characters of "....-..-..T..:..:..._..Z"
 * after "time":"), so that two lines made a millisecond apart compare. */
static char *without_time(const char *line, size_t len) {
        const char *t = strstr(line, "\"time\":\"");
        char *out = malloc(len + 1);

        if (!t || !out || (size_t)(t - line) + 8 + 24 > len) {
                free(out);
                return NULL;
        }
        t += 8;
        memcpy(out, line, (size_t)(t - line));
        strcpy(out + (t - line), t + 24);
        return out;
}

static bool same_line(char *fast, size_t fast_len, json_t *ev) {
        size_t slow_len;
        char *slow = audit_format(ev, &slow_len);
        char *a = fast ? without_time(fast, fast_len) : NULL, *b = slow ? without_time(slow, slow_len) : NULL;
        bool ok = a && b && strcmp(a, b) == 0 && fast_len == slow_len && fast[fast_len - 1] == '\n' &&
                  strlen(fast) == fast_len;

        if (!ok)
                fprintf(stderr, "fast: %s\njansson: %s\n", fast ? fast : "(null)", slow ? slow : "(null)");
        free(a);
        free(b);
        free(fast);
        free(slow);
        return ok;
}

static bool run_start_same(const char *session, uint64_t seq, const char *code, size_t code_len, size_t bytes) {
        size_t len = 0;
        char *fast = audit_format_run_start(session, seq, code, code_len, bytes, &len);
        json_t *ev = json_pack("{s:s, s:I, s:s%, s:I, s:s}", "event", "run_start", "seq", (json_int_t)seq, "code", code,
                               code_len, "code_bytes", (json_int_t)bytes, "session", session);

        return same_line(fast, len, ev);
}

static bool run_end_same(const char *session, uint64_t seq, const char *status, double ms) {
        size_t len = 0;
        char *fast = audit_format_run_end(session, seq, status, ms, &len);
        json_t *ev = json_pack("{s:s, s:I, s:s, s:f, s:s}", "event", "run_end", "seq", (json_int_t)seq, "status", status,
                               "elapsed_ms", ms, "session", session);

        return same_line(fast, len, ev);
}

int main(void) {
        static const char *const codes[] = {
                "1+1",
                "",
                "x <- \"quoted\"; y <- 'single'",
                "a\\b \\\\ \\n literally",
                "line 1\nline 2\r\n\ttabbed\b\f",
                "\x01\x02\x1b[31mred\x1b[0m\x1f",
                "z <- \"\x7f\xc2\x9b\"; 3", /* DEL and CSI (U+009B), raw */
                "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xe2\x80\xa8", /* é € 😀 U+2028 */
                "/slashes/ </script>",
        };
        static const double reals[] = {0, 0.001, 0.067, 0.491, 1, 12.5, 999.999, 1234567.891, 60000};
        char big[12000];

        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                CHECK(run_start_same("1", 1 + i, codes[i], strlen(codes[i]), strlen(codes[i]) + 7));
        CHECK(run_start_same("my-session_2.x", 9007199254740993ull, "\0nul\0", 5, 5));
        for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (char)(i % 3 ? 'a' + i % 26 : (i % 7 ? '"' : '\n'));
        CHECK(run_start_same("s", 42, big, sizeof(big), sizeof(big)));
        for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++)
                CHECK(run_end_same("7", 100 + i, i % 2 ? "ok" : "error", reals[i]));
        CHECK(run_end_same("7", 1, "timeout", round(1234.5678 * 1e3) / 1e3));
        /* Values jansson writes with an exponent are left to it. */
        {
                size_t len = 0;
                CHECK(audit_format_run_end("7", 1, "ok", 1e-7, &len) == NULL);
                CHECK(audit_format_run_end("7", 1, "ok", 1e300, &len) == NULL);
                CHECK(audit_format_run_end("7", 1, "ok", INFINITY, &len) == NULL);
        }
        return check_summary("audit");
}
