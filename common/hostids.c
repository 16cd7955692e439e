/* Host ids for sessions (common/hostids.h). */
#include "hostids.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macros.h"

/* Host files are read whole; none is anywhere near this. */
#define HOST_FILE_MAX (64u << 20)

/* A decimal number of at most 10 digits in [s, end): 0 with *out, else
 * -EINVAL.  No sign, no spaces, no leading "+". */
static int parse_u32(const char *s, const char *end, uint64_t *out) {
        uint64_t v = 0;

        if (s == end || end - s > 10)
                return -EINVAL;
        for (const char *p = s; p < end; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        if (v > UINT32_MAX)
                return -EINVAL;
        *out = v;
        return 0;
}

int id_range_parse(const char *text, struct id_range *out, char *err, size_t errlen) {
        const char *colon = text ? strchr(text, ':') : NULL;
        uint64_t base, count;

        if (!colon || parse_u32(text, colon, &base) < 0 || parse_u32(colon + 1, colon + strlen(colon), &count) < 0) {
                snprintf(err, errlen, "id_range=%s: expected BASE:COUNT, two decimal numbers", text ? text : "");
                return -EINVAL;
        }
        if (base == 0) {
                snprintf(err, errlen, "id_range=%s: the range must not contain id 0 (root)", text);
                return -EINVAL;
        }
        if (count == 0 || count > ID_RANGE_MAX_COUNT) {
                snprintf(err, errlen, "id_range=%s: COUNT must be from 1 to %u", text, ID_RANGE_MAX_COUNT);
                return -EINVAL;
        }
        /* (uid_t)-1 is "leave unchanged" to setresuid() and chown(), and
         * 4294967294 the overflow id of 32-bit interfaces: neither is an id
         * to give away. */
        if (base + count - 1 >= UINT32_MAX - 1) {
                snprintf(err, errlen, "id_range=%s: the range must end below 4294967294", text);
                return -EINVAL;
        }
        *out = (struct id_range){(uint32_t)base, (uint32_t)count};
        return 0;
}

static bool overlaps(const struct id_range *r, uint64_t start, uint64_t count) {
        uint64_t r_end = (uint64_t)r->base + r->count; /* exclusive */

        return count > 0 && start < r_end && start + count > r->base;
}

/* The n-th (0-based) ':'-separated field of [line, end). */
static bool field(const char *line, const char *end, int n, const char **fs, const char **fe) {
        const char *p = line;

        for (int i = 0; i < n; i++) {
                p = memchr(p, ':', (size_t)(end - p));
                if (!p)
                        return false;
                p++;
        }
        *fs = p;
        *fe = memchr(p, ':', (size_t)(end - p));
        if (!*fe)
                *fe = end;
        return true;
}

int id_range_check_text(const struct id_range *r, enum id_source src, const char *file, const char *text,
                        size_t len, char *err, size_t errlen) {
        const char *p = text, *end = text + len;
        unsigned lineno = 0;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *le = nl ? nl : end;
                const char *fs, *fe, *name_end;
                uint64_t a, b;

                lineno++;
                name_end = memchr(p, ':', (size_t)(le - p));
                if (p == le || *p == '#' || !name_end)
                        goto next;
                switch (src) {
                case ID_SOURCE_PASSWD:
                        for (int f = 2; f <= 3; f++)
                                if (field(p, le, f, &fs, &fe) && parse_u32(fs, fe, &a) == 0 && overlaps(r, a, 1)) {
                                        snprintf(err, errlen, "%s line %u (%.*s): %s %llu is in id_range=%u:%u", file,
                                                 lineno, (int)MIN(name_end - p, 64), p, f == 2 ? "uid" : "gid",
                                                 (unsigned long long)a, r->base, r->count);
                                        return -EEXIST;
                                }
                        break;
                case ID_SOURCE_GROUP:
                        if (field(p, le, 2, &fs, &fe) && parse_u32(fs, fe, &a) == 0 && overlaps(r, a, 1)) {
                                snprintf(err, errlen, "%s line %u (%.*s): gid %llu is in id_range=%u:%u", file, lineno,
                                         (int)MIN(name_end - p, 64), p, (unsigned long long)a, r->base, r->count);
                                return -EEXIST;
                        }
                        break;
                case ID_SOURCE_SUBID:
                        if (field(p, le, 1, &fs, &fe) && parse_u32(fs, fe, &a) == 0 && field(p, le, 2, &fs, &fe) &&
                            parse_u32(fs, fe, &b) == 0 && overlaps(r, a, b)) {
                                snprintf(err, errlen, "%s line %u (%.*s): ids %llu-%llu overlap id_range=%u:%u", file,
                                         lineno, (int)MIN(name_end - p, 64), p, (unsigned long long)a,
                                         (unsigned long long)(a + b - 1), r->base, r->count);
                                return -EEXIST;
                        }
                        break;
                }
        next:
                p = nl ? nl + 1 : end;
        }
        return 0;
}

int id_range_check_mapped(const struct id_range *r, const char *file, const char *text, size_t len, char *err,
                          size_t errlen) {
        /* The ranges are few (the kernel allows 340 lines): walk the range
         * from its start, jumping over each mapped stretch that covers the
         * next id, until it is all covered or no line covers the next id. */
        uint64_t next = r->base, end = (uint64_t)r->base + r->count;

        while (next < end) {
                const char *p = text, *stop = text + len;
                bool covered = false;

                while (p < stop) {
                        const char *nl = memchr(p, '\n', (size_t)(stop - p));
                        const char *le = nl ? nl : stop;
                        unsigned long long inside, outside, count;
                        char line[128];
                        size_t n = (size_t)(le - p) < sizeof(line) - 1 ? (size_t)(le - p) : sizeof(line) - 1;

                        memcpy(line, p, n);
                        line[n] = '\0';
                        if (sscanf(line, "%llu %llu %llu", &inside, &outside, &count) == 3 && next >= inside &&
                            next < inside + count) {
                                next = inside + count;
                                covered = true;
                                break;
                        }
                        p = nl ? nl + 1 : stop;
                }
                if (!covered) {
                        snprintf(err, errlen, "id %llu of id_range=%u:%u is not mapped in %s (the daemon's user namespace)",
                                 (unsigned long long)next, r->base, r->count, file);
                        return -ERANGE;
                }
        }
        return 0;
}

/* Read a whole file: 0 with *out (NUL-terminated, caller frees) and *len,
 * or -errno. */
static int read_whole(const char *path, char **out, size_t *len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, cap = 0;

        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t got;

                if (n + 4096 + 1 > cap) {
                        char *p;

                        cap = cap ? cap * 2 : 16384;
                        if (cap > HOST_FILE_MAX)
                                return -EFBIG;
                        p = realloc(buf, cap);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                }
                got = read(fd, buf + n, cap - n - 1);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return -errno;
                if (got == 0)
                        break;
                n += (size_t)got;
        }
        if (!buf && !(buf = malloc(1)))
                return -ENOMEM;
        buf[n] = '\0';
        *out = TAKE_PTR(buf);
        *len = n;
        return 0;
}

int id_range_check_host(const struct id_range *r, char *err, size_t errlen) {
        static const struct {
                const char *path;
                enum id_source src;
                bool optional;
        } files[] = {
                {"/etc/passwd", ID_SOURCE_PASSWD, false},
                {"/etc/group", ID_SOURCE_GROUP, false},
                {"/etc/subuid", ID_SOURCE_SUBID, true},
                {"/etc/subgid", ID_SOURCE_SUBID, true},
        };

        if (overlaps(r, 0, 1)) {
                snprintf(err, errlen, "id_range=%u:%u contains id 0 (root)", r->base, r->count);
                return -EEXIST;
        }
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
                _cleanup_free_ char *text = NULL;
                size_t len = 0;
                int e = read_whole(files[i].path, &text, &len);

                if (e == -ENOENT && files[i].optional)
                        continue;
                if (e < 0) {
                        snprintf(err, errlen, "id_range: cannot read %s to check it: %s", files[i].path, strerror(-e));
                        return e;
                }
                e = id_range_check_text(r, files[i].src, files[i].path, text, len, err, errlen);
                if (e < 0)
                        return e;
        }
        for (int g = 0; g < 2; g++) {
                const char *path = g ? "/proc/self/gid_map" : "/proc/self/uid_map";
                _cleanup_free_ char *text = NULL;
                size_t len = 0;
                int e = read_whole(path, &text, &len);

                if (e < 0) {
                        snprintf(err, errlen, "id_range: cannot read %s to check it: %s", path, strerror(-e));
                        return e;
                }
                if ((e = id_range_check_mapped(r, path, text, len, err, errlen)) < 0)
                        return e;
        }
        return 0;
}

/* ---- the allocator --------------------------------------------------------- */

struct id_pool {
        struct id_range range;
        uint32_t next_fresh;  /* offsets below this were handed out at least once */
        uint32_t *freed;      /* ring of freed offsets, oldest first */
        uint32_t freed_head, freed_len, freed_cap;
        uint64_t *taken;      /* a bit per offset */
        uint32_t in_use;
};

int id_pool_new(const struct id_range *r, struct id_pool **out) {
        struct id_pool *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->range = *r;
        p->taken = calloc(((size_t)r->count + 63) / 64, sizeof(uint64_t));
        if (!p->taken) {
                free(p);
                return -ENOMEM;
        }
        *out = p;
        return 0;
}

void id_pool_free(struct id_pool *p) {
        if (!p)
                return;
        free(p->freed);
        free(p->taken);
        free(p);
}

static bool is_taken(const struct id_pool *p, uint32_t off) { return p->taken[off / 64] >> (off % 64) & 1; }

static void set_taken(struct id_pool *p, uint32_t off, bool on) {
        if (on)
                p->taken[off / 64] |= 1ULL << (off % 64);
        else
                p->taken[off / 64] &= ~(1ULL << (off % 64));
}

int id_pool_take(struct id_pool *p, uint32_t *id) {
        uint32_t off;

        if (p->next_fresh < p->range.count) {
                off = p->next_fresh++;
        } else if (p->freed_len > 0) {
                off = p->freed[p->freed_head];
                p->freed_head = (p->freed_head + 1) % p->freed_cap;
                p->freed_len--;
        } else {
                return -ENOSPC;
        }
        set_taken(p, off, true);
        p->in_use++;
        *id = p->range.base + off;
        return 0;
}

/* Make room for one more freed offset, keeping the ring's order. */
static int freed_grow(struct id_pool *p) {
        uint32_t cap = p->freed_cap ? p->freed_cap * 2 : 64;
        uint32_t *ring;

        if (cap > p->range.count)
                cap = p->range.count;
        ring = malloc((size_t)cap * sizeof(*ring));
        if (!ring)
                return -ENOMEM;
        for (uint32_t i = 0; i < p->freed_len; i++)
                ring[i] = p->freed[(p->freed_head + i) % p->freed_cap];
        free(p->freed);
        p->freed = ring;
        p->freed_head = 0;
        p->freed_cap = cap;
        return 0;
}

bool id_pool_put(struct id_pool *p, uint32_t id) {
        uint32_t off = id - p->range.base;

        if (id < p->range.base || off >= p->range.count || !is_taken(p, off))
                return false;
        /* Can the ring not grow (out of memory), the id is still freed but
         * never reused: safe, only one id fewer. */
        set_taken(p, off, false);
        p->in_use--;
        if (p->freed_len == p->freed_cap && freed_grow(p) < 0)
                return true;
        p->freed[(p->freed_head + p->freed_len) % p->freed_cap] = off;
        p->freed_len++;
        return true;
}

uint32_t id_pool_in_use(const struct id_pool *p) { return p->in_use; }
