/* Unit tests of the host id range (common/hostids.c): parsing, the overlap
 * checks against host files, and the allocator's reuse order. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "hostids.h"

static int check_text(uint32_t base, uint32_t count, enum id_source src, const char *text, char *err, size_t n) {
        struct id_range r = {base, count};

        err[0] = '\0';
        return id_range_check_text(&r, src, "/etc/x", text, strlen(text), err, n);
}

int main(void) {
        struct id_range r;
        struct id_pool *p;
        char err[256];
        uint32_t id, a, b, c;

        /* Parsing. */
        CHECK(id_range_parse("1879048192:65536", &r, err, sizeof(err)) == 0 && r.base == 1879048192u &&
              r.count == 65536);
        CHECK(id_range_parse("100000:1", &r, err, sizeof(err)) == 0 && r.base == 100000 && r.count == 1);
        CHECK(id_range_parse("0:10", &r, err, sizeof(err)) == -EINVAL && strstr(err, "id 0"));
        CHECK(id_range_parse("10:0", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("10", &r, err, sizeof(err)) == -EINVAL && strstr(err, "BASE:COUNT"));
        CHECK(id_range_parse("", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse(":5", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("5:", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("-5:10", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("+5:10", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("5: 10", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("5:10:3", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("0x10:10", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("99999999999:1", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("10:16777217", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("10:16777216", &r, err, sizeof(err)) == 0);
        /* The range must end below 4294967294 ((uid_t)-2): never (uid_t)-1. */
        CHECK(id_range_parse("4294967293:1", &r, err, sizeof(err)) == 0);
        CHECK(id_range_parse("4294967294:1", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("4294967290:5", &r, err, sizeof(err)) == -EINVAL);
        CHECK(id_range_parse("4294967295:1", &r, err, sizeof(err)) == -EINVAL);

        /* passwd: both the uid and the gid field count; the message names the
         * file, the line and the entry. */
        const char *passwd = "root:x:0:0:root:/root:/bin/bash\n"
                             "# a comment 150:150\n"
                             "\n"
                             "+@netgroup::::::\n"
                             "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                             "odd:x:200:150:odd:/:/bin/false";
        CHECK(check_text(100, 50, ID_SOURCE_PASSWD, passwd, err, sizeof(err)) == 0);
        CHECK(check_text(100, 51, ID_SOURCE_PASSWD, passwd, err, sizeof(err)) == -EEXIST &&
              strstr(err, "/etc/x line 7 (odd): gid 150") && strstr(err, "id_range=100:51"));
        CHECK(check_text(200, 1, ID_SOURCE_PASSWD, passwd, err, sizeof(err)) == -EEXIST && strstr(err, "uid 200"));
        CHECK(check_text(65534, 1, ID_SOURCE_PASSWD, passwd, err, sizeof(err)) == -EEXIST &&
              strstr(err, "line 6 (nobody)"));
        CHECK(check_text(65535, 100000, ID_SOURCE_PASSWD, passwd, err, sizeof(err)) == 0);
        CHECK(check_text(0, 1, ID_SOURCE_PASSWD, passwd, err, sizeof(err)) == -EEXIST && strstr(err, "line 1 (root)"));

        /* group: the third field. */
        const char *group = "root:x:0:\nusers:x:100:alice,bob\nbad:x:notanumber:\nshort\n";
        CHECK(check_text(101, 1000, ID_SOURCE_GROUP, group, err, sizeof(err)) == 0);
        CHECK(check_text(50, 51, ID_SOURCE_GROUP, group, err, sizeof(err)) == -EEXIST && strstr(err, "(users): gid 100"));

        /* subuid/subgid: ranges, with touching edges not overlapping. */
        const char *subid = "alice:100000:65536\n1001:165536:65536\n";
        CHECK(check_text(231072, 10, ID_SOURCE_SUBID, subid, err, sizeof(err)) == 0);   /* right after */
        CHECK(check_text(90000, 10000, ID_SOURCE_SUBID, subid, err, sizeof(err)) == 0); /* right before */
        CHECK(check_text(90000, 10001, ID_SOURCE_SUBID, subid, err, sizeof(err)) == -EEXIST &&
              strstr(err, "(alice): ids 100000-165535"));
        CHECK(check_text(231071, 10, ID_SOURCE_SUBID, subid, err, sizeof(err)) == -EEXIST && strstr(err, "(1001)"));
        CHECK(check_text(1, 4000000000u, ID_SOURCE_SUBID, subid, err, sizeof(err)) == -EEXIST);
        CHECK(check_text(120000, 1, ID_SOURCE_SUBID, "x:100000:0\n", err, sizeof(err)) == 0); /* empty range */

        /* The user namespace must map the whole range. */
        const char *init_map = "         0          0 4294967295\n";
        const char *container = "0 100000 65536\n65536 2000000000 10\n65546 3000000000 100\n";
        r = (struct id_range){ID_RANGE_DEFAULT_BASE, ID_RANGE_DEFAULT_COUNT};
        CHECK(id_range_check_mapped(&r, "/m", init_map, strlen(init_map), err, sizeof(err)) == 0);
        CHECK(id_range_check_mapped(&r, "/m", container, strlen(container), err, sizeof(err)) == -ERANGE &&
              strstr(err, "id 1879048192") && strstr(err, "/m"));
        r = (struct id_range){65530, 100};
        CHECK(id_range_check_mapped(&r, "/m", container, strlen(container), err, sizeof(err)) == 0);
        r = (struct id_range){65530, 116}; /* to 65645, across all three lines */
        CHECK(id_range_check_mapped(&r, "/m", container, strlen(container), err, sizeof(err)) == 0);
        r = (struct id_range){65530, 117};
        CHECK(id_range_check_mapped(&r, "/m", container, strlen(container), err, sizeof(err)) == -ERANGE &&
              strstr(err, "id 65646"));
        CHECK(id_range_check_mapped(&r, "/m", "", 0, err, sizeof(err)) == -ERANGE);

        /* The host's own files: the default range is free on any sane host,
         * and a range holding root or nobody is refused. */
        r = (struct id_range){ID_RANGE_DEFAULT_BASE, ID_RANGE_DEFAULT_COUNT};
        CHECK(id_range_check_host(&r, err, sizeof(err)) == 0);
        r = (struct id_range){65000, 1000};
        CHECK(id_range_check_host(&r, err, sizeof(err)) == -EEXIST && strstr(err, "/etc/passwd"));

        /* The allocator: fresh ids in order, then freed ones oldest first. */
        r = (struct id_range){1000, 3};
        CHECK(id_pool_new(&r, &p) == 0);
        CHECK(id_pool_take(p, &a) == 0 && a == 1000);
        CHECK(id_pool_take(p, &b) == 0 && b == 1001);
        CHECK(id_pool_put(p, a));
        CHECK(!id_pool_put(p, a));    /* twice */
        CHECK(!id_pool_put(p, 999));  /* outside */
        CHECK(!id_pool_put(p, 1002)); /* never taken */
        CHECK(id_pool_take(p, &c) == 0 && c == 1002); /* a fresh one before a freed one */
        CHECK(id_pool_take(p, &id) == 0 && id == 1000);
        CHECK(id_pool_take(p, &id) == -ENOSPC);
        CHECK(id_pool_in_use(p) == 3);
        CHECK(id_pool_put(p, c) && id_pool_put(p, b) && id_pool_put(p, 1000));
        CHECK(id_pool_in_use(p) == 0);
        CHECK(id_pool_take(p, &id) == 0 && id == c);
        CHECK(id_pool_take(p, &id) == 0 && id == b);
        CHECK(id_pool_take(p, &id) == 0 && id == 1000);
        id_pool_free(p);

        /* Many ids through the ring, which grows while keeping its order. */
        r = (struct id_range){5000, 1000};
        CHECK(id_pool_new(&r, &p) == 0);
        int ok = 1;
        for (uint32_t i = 0; i < 1000; i++)
                ok &= id_pool_take(p, &id) == 0 && id == 5000 + i;
        for (uint32_t i = 0; i < 1000; i++)
                ok &= id_pool_put(p, 5000 + (i * 7) % 1000);
        for (uint32_t i = 0; i < 1000; i++)
                ok &= id_pool_take(p, &id) == 0 && id == 5000 + (i * 7) % 1000;
        CHECK(ok);
        CHECK(id_pool_take(p, &id) == -ENOSPC);
        id_pool_free(p);
        id_pool_free(NULL);

        return check_summary("hostids");
}
