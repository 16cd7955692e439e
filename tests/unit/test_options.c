/* Unit tests of option and limits parsing (common/options.c). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "macros.h"
#include "options.h"

/* Every text of texts[n] is refused with -EINVAL by parse_seconds (seconds)
 * or parse_size; a text that is not is named on stderr. */
static void check_refused(bool seconds, const char *const *texts, size_t n) {
        for (size_t i = 0; i < n; i++) {
                long long v;
                double d;
                int e = seconds ? parse_seconds(texts[i], &d) : parse_size(texts[i], &v);

                if (e != -EINVAL)
                        fprintf(stderr, "%s(\"%s\") gave %d, not -EINVAL\n", seconds ? "parse_seconds" : "parse_size",
                                texts[i], e);
                CHECK(e == -EINVAL);
        }
}

int main(void) {
        struct options o;
        struct limits l;
        char err[256];
        long long n;
        double d;

        options_init(&o);
        CHECK(o.timeout_s == 30 && o.limits.v[LIMIT_CPU] == 60 && o.limits.v[LIMIT_MEMORY] == 512LL << 20);
        CHECK(o.limits.v[LIMIT_FSIZE] == 50LL << 20 && o.limits.v[LIMIT_NPROC] == 50 && o.limits.v[LIMIT_NOFILE] == 256);

        CHECK(parse_size("10", &n) == 0 && n == 10);
        CHECK(parse_size("4K", &n) == 0 && n == 4096);
        CHECK(parse_size("2m", &n) == 0 && n == 2 << 20);
        CHECK(parse_size("1G", &n) == 0 && n == 1 << 30);
        {
                static const char *const bad[] = {"-1", "", "12x", "99999999999999999999", "9000000000T"};
                check_refused(false, bad, ARRAY_SIZE(bad));
        }
        CHECK(parse_seconds("0.5", &d) == 0 && d == 0.5);
        CHECK(parse_seconds("0", &d) == 0 && d == 0);
        {
                /* As strict as limits: a plain decimal, one trailing newline
                 * in a file, nothing else. */
                static const char *const bad[] = {"nan", "inf", "-3", "3s", "0x10", "1e-9", " 5",
                                                  "5 ",  ".5",  "5.", "+5", "",     "5\n",  "10000001"};
                check_refused(true, bad, ARRAY_SIZE(bad));
        }
        CHECK(parse_seconds("007.250", &d) == 0 && d == 7.25);
        CHECK(parse_seconds_text("15\n", 3, &d) == 0 && d == 15);
        CHECK(parse_seconds_text("15\n\n", 4, &d) == -EINVAL);
        CHECK(parse_seconds_text("15\0", 3, &d) == -EINVAL);
        CHECK(parse_seconds_text("1\0" "5", 3, &d) == -EINVAL);
        CHECK(parse_seconds_text("15\r\n", 4, &d) == -EINVAL);
        CHECK(parse_seconds_text("\n", 1, &d) == -EINVAL);

        CHECK(options_set(&o, "timeout", "5", err, sizeof(err)) == 0 && o.timeout_s == 5);
        CHECK(options_set(&o, "timeout", "abc", err, sizeof(err)) == -EINVAL && o.timeout_s == 5);
        CHECK(options_set(&o, "pool", "4", err, sizeof(err)) == 0 && o.pool == 4);
        CHECK(options_set(&o, "sandbox", "none", err, sizeof(err)) == 0 && o.sandbox_none);
        CHECK(options_set(&o, "sandbox", "loose", err, sizeof(err)) == -EINVAL && o.sandbox_none);
        CHECK(options_set(&o, "memory", "1G", err, sizeof(err)) == 0 && o.limits.v[LIMIT_MEMORY] == 1 << 30);
        CHECK(options_set(&o, "cpu", "none", err, sizeof(err)) == 0 && o.limits.v[LIMIT_CPU] == LIMIT_UNSET);
        CHECK(options_set(&o, "nproc", "0", err, sizeof(err)) == -EINVAL);
        CHECK(options_set(&o, "r_libs", "/a:/b", err, sizeof(err)) == 0 && strcmp(o.r_libs, "/a:/b") == 0);
        CHECK(options_set(&o, "r_libs", "/a:rel", err, sizeof(err)) == -EINVAL && strcmp(o.r_libs, "/a:/b") == 0);
        CHECK(options_set(&o, "max_code_bytes", "0", err, sizeof(err)) == -EINVAL);
        CHECK(options_set(&o, "no_such_option", "1", err, sizeof(err)) == -ENOENT);

        options_free(&o);
        options_init(&o);
        CHECK(limits_parse_json("{\"cpu\": 5}", 10, &o.limits, &l, err, sizeof(err)) == 0);
        CHECK(l.v[LIMIT_CPU] == 5 && l.v[LIMIT_MEMORY] == o.limits.v[LIMIT_MEMORY]);
        CHECK(limits_parse_json("{\"memory\": null}", 16, &o.limits, &l, err, sizeof(err)) == 0 &&
              l.v[LIMIT_MEMORY] == LIMIT_UNSET);
        CHECK(limits_parse_json("{\"cpu\": 5", 9, &o.limits, &l, err, sizeof(err)) == -EAGAIN);
        CHECK(limits_parse_json("{\"cpu\": -1}", 11, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{\"cpu\": \"5\"}", 12, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{\"cpu\": 1.5}", 12, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{\"gpu\": 1}", 10, &o.limits, &l, err, sizeof(err)) == -EINVAL &&
              strstr(err, "gpu"));
        CHECK(limits_parse_json("[1]", 3, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{]", 2, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{\"nofile\": 3}", 13, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{\"memory\": 1000}", 16, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        CHECK(limits_parse_json("{\"cpu\":1,\"cpu\":2}", 17, &o.limits, &l, err, sizeof(err)) == -EINVAL);
        options_free(&o);
        /* id_range: the default, a good value, and a bad one that changes nothing. */
        options_init(&o);
        CHECK(o.id_range.base == ID_RANGE_DEFAULT_BASE && o.id_range.count == ID_RANGE_DEFAULT_COUNT);
        CHECK(options_set(&o, "id_range", "3000000000:1000", err, sizeof(err)) == 0 && o.id_range.base == 3000000000u &&
              o.id_range.count == 1000);
        CHECK(options_set(&o, "id_range", "0:1000", err, sizeof(err)) == -EINVAL && o.id_range.base == 3000000000u);
        options_free(&o);
        return check_summary("options");
}
