#include "state_format.h"

#include <errno.h>
#include <string.h>

static uint64_t get_be(const unsigned char *p, unsigned n) {
        uint64_t v = 0;

        for (unsigned i = 0; i < n; i++)
                v = v << 8 | p[i];
        return v;
}

static void put_be(unsigned char *p, unsigned n, uint64_t v) {
        for (unsigned i = n; i-- > 0; v >>= 8)
                p[i] = (unsigned char)v;
}

void state_record_encode(unsigned char h[STATE_RECORD_HEADER], char kind, unsigned path_len, uint32_t mode,
                         uint64_t data_len) {
        h[0] = (unsigned char)kind;
        h[1] = 0;
        put_be(h + 2, 2, path_len);
        put_be(h + 4, 4, mode);
        put_be(h + 8, 8, data_len);
}

int state_record_decode(const unsigned char h[STATE_RECORD_HEADER], struct state_record *out) {
        struct state_record r = {.kind = (char)h[0],
                                 .path_len = (unsigned)get_be(h + 2, 2),
                                 .mode = (uint32_t)get_be(h + 4, 4),
                                 .data_len = get_be(h + 8, 8)};

        if (h[1] != 0 || r.mode & ~0777u || r.path_len > STATE_PATH_MAX)
                return -EINVAL;
        switch (r.kind) {
        case 'R':
        case 'E':
                if (r.path_len != 0 || (r.kind == 'E' && r.data_len != 0))
                        return -EINVAL;
                break;
        case 'D':
                if (r.data_len != 0)
                        return -EINVAL;
                /* fall through */
        case 'F':
        case 'L':
                if (r.path_len == 0)
                        return -EINVAL;
                break;
        default: return -EINVAL;
        }
        *out = r;
        return 0;
}

int state_path_check(const char *path, size_t len) {
        size_t start = 0;
        unsigned depth = 0;

        if (len == 0 || len > STATE_PATH_MAX || memchr(path, '\0', len))
                return -EINVAL;
        for (size_t i = 0; i <= len; i++) {
                if (i < len && path[i] != '/')
                        continue;
                /* The component [start, i). */
                if (i == start || i - start > 255 || (i - start == 1 && path[start] == '.') ||
                    (i - start == 2 && path[start] == '.' && path[start + 1] == '.'))
                        return -EINVAL;
                if (++depth > STATE_DEPTH_MAX + 1)
                        return -EINVAL;
                start = i + 1;
        }
        return 0;
}

int state_link_check(const char *path, const char *target, size_t len) {
        /* The link's own directory is as deep as path has slashes. */
        long depth = 0, start = 0;

        for (const char *p = path; *p; p++)
                depth += *p == '/';
        if (len == 0 || len > STATE_PATH_MAX || target[0] == '/' || memchr(target, '\0', len))
                return -EINVAL;
        for (size_t i = 0; i <= len; i++) {
                size_t n;

                if (i < len && target[i] != '/')
                        continue;
                n = i - (size_t)start;
                if (n == 2 && target[start] == '.' && target[start + 1] == '.') {
                        if (--depth < 0)
                                return -EINVAL;
                } else if (n > 0 && !(n == 1 && target[start] == '.')) {
                        depth++;
                }
                start = (long)i + 1;
        }
        return 0;
}
