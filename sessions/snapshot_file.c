#include "snapshot_file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "macros.h"
#include "state_format.h"
#include "tmpfs.h"

#define PAGE 4096u

static int fail(char *why, size_t n, int err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The entries seen so far: a restoring worker that meets a name twice, or
 * an entry whose directory the stream did not make before it (or made as a
 * file or a link), fails half-way.  So the container is refused here,
 * before the worker is sent anything (docs/security.md, "Round 4").
 *
 * An index of names, not of paths: an entry is its directory's entry and
 * its last component (at most 255 bytes), so that what the index holds
 * grows with the names, not with the paths' lengths (64,000 paths of 4 KiB
 * held 976 MB: "Round 9", finding 1), and each path is looked up a
 * component at a time from the root (its length in hashing, once). */
struct seen {
        struct hash_node node;
        struct seen *next_all; /* every one, to free them */
        const struct seen *dir; /* NULL: the workspace's root */
        char kind;
        unsigned char len;
        char name[];
};

struct seen_set {
        struct hash table;
        struct seen *all;
        /* The directory the last entry was in, by its path: a stream lists a
         * directory's entries together, and a memcmp is cheaper than a walk. */
        const struct seen *last_dir;
        size_t last_dir_len;
        char last_dir_path[STATE_PATH_MAX];
};

static uint64_t hash_name(const struct seen *dir, const char *p, size_t len) {
        uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(uintptr_t)dir;

        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
        return hash_u64(h);
}

static struct seen *seen_find(const struct seen_set *set, const struct seen *dir, const char *name, size_t len) {
        struct seen *e;

        HASH_FOR_EACH(e, &set->table, hash_name(dir, name, len), struct seen, node) {
                if (e->dir == dir && e->len == len && !memcmp(e->name, name, len))
                        return e;
        }
        return NULL;
}

static int seen_add(struct seen_set *set, const struct seen *dir, const char *name, size_t len, char kind) {
        struct seen *e = malloc(sizeof(*e) + len);

        if (!e)
                return -ENOMEM;
        memcpy(e->name, name, len);
        e->dir = dir;
        e->len = (unsigned char)len;
        e->kind = kind;
        if (hash_insert(&set->table, &e->node, hash_name(dir, name, len)) < 0) {
                free(e);
                return -ENOMEM;
        }
        e->next_all = set->all;
        set->all = e;
        return 0;
}

static void seen_free(struct seen_set *set) {
        while (set->all) {
                struct seen *e = set->all;

                set->all = e->next_all;
                free(e);
        }
        hash_free(&set->table);
}

/* path (len bytes, checked by state_path_check(): components of 1 to 255
 * bytes) may come next: not seen before, and each of its directories seen
 * as a directory.  0, -EINVAL with why, or -ENOMEM. */
static int entry_place_ok(struct seen_set *set, const char *path, size_t len, char kind, char *why, size_t n) {
        const struct seen *dir = NULL;
        const char *p = path, *end = path + len, *slash, *last = memrchr(path, '/', len);
        size_t dir_len = last ? (size_t)(last - path) : 0;

        if (last && set->last_dir && dir_len == set->last_dir_len && !memcmp(path, set->last_dir_path, dir_len)) {
                dir = set->last_dir;
                p = last + 1;
        }
        while ((slash = memchr(p, '/', (size_t)(end - p)))) {
                const struct seen *d = seen_find(set, dir, p, (size_t)(slash - p));

                if (!d || d->kind != 'D')
                        return fail(why, n, -EINVAL,
                                    "the workspace entry \"%.200s\" is not under a directory the snapshot made "
                                    "before it",
                                    path);
                dir = d;
                p = slash + 1;
        }
        if (last && dir != set->last_dir) {
                set->last_dir = dir;
                set->last_dir_len = dir_len;
                memcpy(set->last_dir_path, path, dir_len);
        }
        if (seen_find(set, dir, p, (size_t)(end - p)))
                return fail(why, n, -EINVAL, "the workspace entry \"%.200s\" comes twice", path);
        return seen_add(set, dir, p, (size_t)(end - p), kind);
}

static int fail(char *why, size_t n, int err, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
        return err;
}

/* Exactly len bytes at off, or -EIO; -EINVAL when the file ends first. */
static int read_at(int fd, void *buf, size_t len, off_t off, off_t size) {
        char *p = buf;

        if (off < 0 || (uint64_t)off > (uint64_t)size || len > (uint64_t)(size - off))
                return -EINVAL;
        while (len > 0) {
                ssize_t r = pread(fd, p, len, off);

                if (r < 0 && errno == EINTR)
                        continue;
                if (r <= 0)
                        return r < 0 ? -EIO : -EINVAL;
                p += r;
                off += r;
                len -= (size_t)r;
        }
        return 0;
}

static uint32_t be32(const unsigned char *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The metadata's fields: each of its type; unknown fields refused. */
static int check_meta(const json_t *m, char *why, size_t n) {
        const char *key;
        json_t *v;

        if (!json_is_object(m))
                return fail(why, n, -EINVAL, "its metadata is not a JSON object");
        json_object_foreach((json_t *)m, key, v) {
                bool ok;

                if (!strcmp(key, "format"))
                        ok = json_is_string(v) && !strcmp(json_string_value(v), "securerfs-snapshot");
                else if (!strcmp(key, "version"))
                        ok = json_is_integer(v) && json_integer_value(v) == SNAPSHOT_VERSION;
                else if (!strcmp(key, "session"))
                        ok = json_is_string(v) && json_string_length(v) <= 64;
                else if (!strcmp(key, "created"))
                        ok = json_is_integer(v);
                else if (!strcmp(key, "timeout"))
                        ok = json_is_number(v);
                else if (!strcmp(key, "limits"))
                        ok = json_is_object(v);
                else if (!strcmp(key, "tools")) {
                        const char *k;
                        json_t *d;

                        ok = json_is_object(v) && json_object_size(v) <= 1000;
                        json_object_foreach(v, k, d) if (!json_is_string(d) || strlen(k) > 256) ok = false;
                } else
                        return fail(why, n, -EINVAL, "its metadata has an unknown field \"%.64s\"", key);
                if (!ok)
                        return fail(why, n, -EINVAL, "its metadata's \"%s\" is of the wrong type or value", key);
        }
        if (!json_object_get(m, "format") || !json_object_get(m, "version"))
                return fail(why, n, -EINVAL, "its metadata has no format or version");
        return 0;
}

int snapshot_file_head(int fd, off_t size, struct snapshot_info *out, char *why, size_t n) {
        unsigned char h[SNAPSHOT_HEADER];
        struct snapshot_info info = {0};
        json_error_t jerr;
        uint32_t version, meta_len;
        char *meta;
        int e;

        if (read_at(fd, h, sizeof(h), 0, size) < 0 || memcmp(h, SNAPSHOT_MAGIC, 8) != 0)
                return fail(why, n, -EINVAL, "not a securerfs snapshot (no SRFSNAP header)");
        version = be32(h + 8);
        meta_len = be32(h + 12);
        if (version != SNAPSHOT_VERSION)
                return fail(why, n, -EINVAL, "snapshot version %u; this securerfs reads version %u", version,
                            SNAPSHOT_VERSION);
        if (meta_len > SNAPSHOT_META_MAX)
                return fail(why, n, -EINVAL, "its metadata is over %u bytes", SNAPSHOT_META_MAX);
        meta = malloc(meta_len + 1);
        if (!meta)
                return -ENOMEM;
        if ((e = read_at(fd, meta, meta_len, SNAPSHOT_HEADER, size)) < 0) {
                free(meta);
                return e == -EIO ? e : fail(why, n, -EINVAL, "it is cut short in its metadata");
        }
        info.meta = json_loadb(meta, meta_len, JSON_REJECT_DUPLICATES, &jerr);
        free(meta);
        if (!info.meta)
                return fail(why, n, -EINVAL, "its metadata is not JSON (%.100s)", jerr.text);
        if ((e = check_meta(info.meta, why, n)) < 0) {
                json_decref(info.meta);
                return e;
        }
        info.stream_off = SNAPSHOT_HEADER + (off_t)meta_len;
        *out = info;
        return 0;
}

int snapshot_file_stream(int fd, off_t size, long long quota, struct snapshot_info *info, char *why, size_t n) {
        /* Each entry is an inode of the workspace's tmpfs: a file of more
         * entries than it has could not be restored, and each costs the
         * check's index memory (empty files take no pages). */
        uint64_t inodes = quota > 0 ? tmpfs_inodes((unsigned long long)quota) : STATE_ENTRIES_MAX;
        struct seen_set seen = {0};
        off_t off = info->stream_off;
        int e;

        info->r_bytes = info->entries = info->files_bytes = 0;
        for (bool first = true;; first = false) {
                unsigned char rh[STATE_RECORD_HEADER];
                struct state_record r;
                char path[STATE_PATH_MAX + 1], target[STATE_PATH_MAX + 1];

                if ((e = read_at(fd, rh, sizeof(rh), off, size)) < 0) {
                        if (e == -EINVAL)
                                fail(why, n, e, "it is cut short (no end record)");
                        goto out;
                }
                off += STATE_RECORD_HEADER;
                if (state_record_decode(rh, &r) < 0) {
                        e = fail(why, n, -EINVAL, "a malformed record at offset %lld", (long long)off - 16);
                        goto out;
                }
                if (first != (r.kind == 'R')) {
                        e = fail(why, n, -EINVAL, first ? "its state does not start with the R record"
                                                         : "a second R record");
                        goto out;
                }
                if (r.kind == 'E')
                        break;
                if (r.data_len > (uint64_t)size) {
                        e = fail(why, n, -EINVAL, "a record larger than the file");
                        goto out;
                }
                if (r.kind == 'R') {
                        info->r_bytes = r.data_len;
                        off += (off_t)r.data_len;
                        continue;
                }
                if ((e = read_at(fd, path, r.path_len, off, size)) < 0) {
                        if (e == -EINVAL)
                                fail(why, n, e, "it is cut short in a path");
                        goto out;
                }
                path[r.path_len] = '\0';
                off += r.path_len;
                if (state_path_check(path, r.path_len) < 0) {
                        e = fail(why, n, -EINVAL, "a workspace path that is absolute, has '.' or '..', or is too deep");
                        goto out;
                }
                if (++info->entries > MIN((uint64_t)STATE_ENTRIES_MAX, inodes)) {
                        e = info->entries > STATE_ENTRIES_MAX
                                    ? fail(why, n, -EINVAL, "over %u workspace entries", STATE_ENTRIES_MAX)
                                    : fail(why, n, -ENOSPC, "over the %llu entries (inodes) of the workspace",
                                           (unsigned long long)inodes);
                        goto out;
                }
                if ((e = entry_place_ok(&seen, path, r.path_len, r.kind, why, n)) < 0)
                        goto out;
                if (r.kind == 'L') {
                        if (r.data_len > STATE_PATH_MAX ||
                            (e = read_at(fd, target, (size_t)r.data_len, off, size)) < 0 ||
                            state_link_check(path, target, (size_t)r.data_len) < 0) {
                                e = fail(why, n, -EINVAL, "a link whose target is absolute or leads out of the workspace");
                                goto out;
                        }
                        info->files_bytes += PAGE;
                } else if (r.kind == 'D') {
                        info->files_bytes += PAGE;
                } else {
                        info->files_bytes += (r.data_len + PAGE - 1) / PAGE * PAGE;
                }
                off += (off_t)r.data_len;
                if (quota > 0 && info->files_bytes > (uint64_t)quota) {
                        e = fail(why, n, -ENOSPC, "its files take more than the workspace's %lld bytes", quota);
                        goto out;
                }
        }
        e = off == size ? 0 : fail(why, n, -EINVAL, "bytes after its end record");
out:
        seen_free(&seen);
        return e;
}

int snapshot_file_check(int fd, off_t size, long long quota, struct snapshot_info *out, char *why, size_t n) {
        int e = snapshot_file_head(fd, size, out, why, n);

        if (e == 0 && (e = snapshot_file_stream(fd, size, quota, out, why, n)) < 0) {
                json_decref(out->meta);
                out->meta = NULL;
        }
        return e;
}

int snapshot_file_header(json_t *meta, char **out, size_t *len) {
        char *text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
        size_t tl = text ? strlen(text) : 0;
        char *buf;

        json_decref(meta);
        if (!text || tl > SNAPSHOT_META_MAX || !(buf = malloc(SNAPSHOT_HEADER + tl))) {
                free(text);
                return -ENOMEM;
        }
        memcpy(buf, SNAPSHOT_MAGIC, 8);
        for (int i = 0; i < 4; i++) {
                buf[8 + i] = (char)(SNAPSHOT_VERSION >> (24 - 8 * i));
                buf[12 + i] = (char)(tl >> (24 - 8 * i));
        }
        memcpy(buf + SNAPSHOT_HEADER, text, tl);
        free(text);
        *out = buf;
        *len = SNAPSHOT_HEADER + tl;
        return 0;
}
