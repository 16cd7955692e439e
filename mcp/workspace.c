#include "workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array.h"
#include "json_cleanup.h"
#include "macros.h"
#include "utf8.h"

/* How deep a recursive listing goes. */
#define LIST_DEPTH_MAX 16

int workspace_check_path(const char *path, bool allow_root, const char **why) {
        size_t len = strlen(path);
        const char *p = path;
        bool any = false;

        if (len == 0 && !allow_root) {
                *why = "the path is empty";
                return -EINVAL;
        }
        if (len > WORKSPACE_PATH_MAX) {
                *why = "the path is longer than 4095 bytes";
                return -EINVAL;
        }
        if (path[0] == '/') {
                *why = "the path must be relative to the workspace, not absolute";
                return -EINVAL;
        }
        while (*p) {
                const char *end = strchrnul(p, '/');
                size_t n = (size_t)(end - p);

                if (n == 2 && p[0] == '.' && p[1] == '.') {
                        *why = "the path must not contain \"..\"";
                        return -EINVAL;
                }
                if (n > NAME_MAX) {
                        *why = "a component of the path is longer than 255 bytes";
                        return -EINVAL;
                }
                if (n > 0 && !(n == 1 && p[0] == '.'))
                        any = true;
                p = *end ? end + 1 : end;
        }
        if (!any && !allow_root) {
                *why = "the path names the workspace itself, not a file in it";
                return -EINVAL;
        }
        return 0;
}

/* The next real component of *p (skipping empty and "." ones) into name;
 * false at the end. */
static bool next_component(const char **p, char name[NAME_MAX + 1]) {
        for (;;) {
                const char *s = *p, *end;
                size_t n;

                if (!*s)
                        return false;
                end = strchrnul(s, '/');
                n = (size_t)(end - s);
                *p = *end ? end + 1 : end;
                if (n == 0 || (n == 1 && s[0] == '.'))
                        continue;
                memcpy(name, s, n);
                name[n] = '\0';
                return true;
        }
}

/* Walk path's directories from files_fd: *dirfd is the directory that holds
 * the last component, whose name goes to base ("" when path names the
 * workspace itself).  Each step is O_NOFOLLOW: a link is ENOTDIR (O_PATH
 * with O_NOFOLLOW opens the link itself, which is no directory).  With
 * create, missing directories are made (0755). */
static int walk_parent(int files_fd, const char *path, bool create, int *dirfd, char base[NAME_MAX + 1]) {
        _cleanup_close_ int cur = openat(files_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        char name[NAME_MAX + 1], next[NAME_MAX + 1];
        const char *p = path;
        bool have;

        if (cur < 0)
                return -errno;
        base[0] = '\0';
        have = next_component(&p, name);
        while (have) {
                int fd;

                if (!next_component(&p, next)) {
                        memcpy(base, name, strlen(name) + 1);
                        break;
                }
                fd = openat(cur, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 && errno == ENOENT && create) {
                        if (mkdirat(cur, name, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        fd = openat(cur, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                }
                if (fd < 0)
                        return errno == ENOTDIR ? -ENOTDIR : -errno;
                close(cur);
                cur = fd;
                memcpy(name, next, strlen(next) + 1);
        }
        *dirfd = TAKE_FD(cur);
        return 0;
}

int workspace_read(int files_fd, const char *path, size_t max, char **data, size_t *len, size_t *size) {
        _cleanup_close_ int dir = -1, fd = -1;
        _cleanup_free_ char *buf = NULL;
        char base[NAME_MAX + 1];
        const char *why;
        struct stat st;
        size_t want, got = 0;
        int r;

        if (workspace_check_path(path, false, &why) < 0)
                return -EINVAL;
        r = walk_parent(files_fd, path, false, &dir, base);
        if (r < 0)
                return r;
        /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
         * writer that never comes. */
        fd = openat(dir, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EPERM;
        want = MIN((size_t)st.st_size, max);
        buf = malloc(want + 1);
        if (!buf)
                return -ENOMEM;
        /* The file may shrink or grow while we read: stop at end of file or
         * at want, whichever comes first. */
        while (got < want) {
                ssize_t n = pread_retry(fd, buf + got, want - got, (off_t)got);
                if (n < 0)
                        return (int)n;
                if (n == 0)
                        break;
                got += (size_t)n;
        }
        buf[got] = '\0';
        *data = TAKE_PTR(buf);
        *len = got;
        *size = MAX((size_t)st.st_size, got);
        return 0;
}

ssize_t pread_retry(int fd, void *buf, size_t n, off_t off) {
        ssize_t r;

        do
                r = pread(fd, buf, n, off);
        while (r < 0 && errno == EINTR);
        return r < 0 ? -errno : r;
}

int write_all_close(int fd, const void *data, size_t len) {
        const char *p = data;
        size_t done = 0;
        int r = 0;

        while (done < len) {
                ssize_t n = write(fd, p + done, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                done += (size_t)n;
        }
        if (close(fd) < 0 && r == 0)
                r = -errno;
        return r;
}

int workspace_write(int files_fd, const char *path, const void *data, size_t len) {
        static unsigned counter;
        _cleanup_close_ int dir = -1;
        char base[NAME_MAX + 1], tmp[64];
        const char *why;
        struct stat st;
        int fd, r;

        if (workspace_check_path(path, false, &why) < 0)
                return -EINVAL;
        r = walk_parent(files_fd, path, true, &dir, base);
        if (r < 0)
                return r;
        if (fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                return -EISDIR;
        snprintf(tmp, sizeof(tmp), ".securerfs-mcp-%ld-%u.tmp", (long)getpid(), ++counter);
        fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        r = write_all_close(fd, data, len);
        if (r == 0 && renameat(dir, tmp, dir, base) < 0)
                r = -errno;
        if (r < 0)
                unlinkat(dir, tmp, 0);
        return r;
}

/* ---- listing -------------------------------------------------------------- */

struct entry {
        char *path;
        const char *type;
        long long size;
        char *target;
};

struct listing {
        struct entry *v;
        size_t n, cap, max;
        bool truncated;
};

static void listing_free(struct listing *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].path);
                free(l->v[i].target);
        }
        free(l->v);
}

static int listing_add(struct listing *l, const char *prefix, const char *name, const struct stat *st, int dir) {
        struct entry *e;

        if (l->n >= l->max) {
                l->truncated = true;
                return 0;
        }
        if (l->n == l->cap) {
                struct entry *v = array_grow(l->v, &l->cap, sizeof(*v), 64);
                if (!v)
                        return -ENOMEM;
                l->v = v;
        }
        e = &l->v[l->n];
        *e = (struct entry){0};
        {
                /* Names are the sandboxed code's: they need not be UTF-8. */
                _cleanup_free_ char *raw = NULL;
                if (asprintf(&raw, "%s%s%s", prefix, *prefix ? "/" : "", name) < 0) {
                        raw = NULL;
                        return -ENOMEM;
                }
                size_t clean_len;
                e->path = utf8_sanitize_dup(raw, strlen(raw), &clean_len);
                if (!e->path)
                        return -ENOMEM;
        }
        if (S_ISREG(st->st_mode)) {
                e->type = "file";
                e->size = (long long)st->st_size;
        } else if (S_ISDIR(st->st_mode)) {
                e->type = "directory";
        } else if (S_ISLNK(st->st_mode)) {
                char target[PATH_MAX];
                ssize_t n = readlinkat(dir, name, target, sizeof(target) - 1);
                e->type = "symlink";
                if (n >= 0) {
                        size_t clean_len;
                        e->target = utf8_sanitize_dup(target, (size_t)n, &clean_len);
                }
        } else {
                e->type = "other";
        }
        l->n++;
        return 0;
}

static int list_dir(struct listing *l, int dirfd, const char *prefix, bool recursive, int depth) {
        DIR *d;
        struct dirent *de;
        int r = 0;

        d = fdopendir(dirfd);
        if (!d) {
                r = -errno;
                close(dirfd);
                return r;
        }
        while (!l->truncated && (errno = 0, de = readdir(d))) {
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue; /* removed meanwhile, or a link the mount refuses */
                r = listing_add(l, prefix, de->d_name, &st, dirfd);
                if (r < 0)
                        break;
                if (recursive && S_ISDIR(st.st_mode) && depth < LIST_DEPTH_MAX && !l->truncated) {
                        int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        _cleanup_free_ char *path = strdup(l->v[l->n - 1].path);
                        if (!path) {
                                if (sub >= 0)
                                        close(sub);
                                r = -ENOMEM;
                                break;
                        }
                        if (sub >= 0) {
                                r = list_dir(l, sub, path, recursive, depth + 1);
                                if (r < 0)
                                        break;
                        }
                }
        }
        closedir(d);
        return r;
}

static int by_path(const void *a, const void *b) {
        return strcmp(((const struct entry *)a)->path, ((const struct entry *)b)->path);
}

int workspace_list(int files_fd, const char *path, bool recursive, size_t max, json_t **entries, bool *truncated) {
        _cleanup_close_ int dir = -1;
        struct listing l = {.max = max};
        char base[NAME_MAX + 1], prefix[WORKSPACE_PATH_MAX + 1] = "";
        const char *why, *p = path;
        char name[NAME_MAX + 1];
        json_t *arr;
        int fd, r;

        if (workspace_check_path(path, true, &why) < 0)
                return -EINVAL;
        r = walk_parent(files_fd, path, false, &dir, base);
        if (r < 0)
                return r;
        fd = openat(dir, base[0] ? base : ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ELOOP ? -ENOTDIR : -errno;
        /* Entries are named from the workspace's root: the normalised path
         * is their prefix. */
        while (next_component(&p, name)) {
                size_t n = strlen(prefix);
                snprintf(prefix + n, sizeof(prefix) - n, "%s%s", n ? "/" : "", name);
        }
        r = list_dir(&l, fd, prefix, recursive, 0);
        if (r < 0) {
                listing_free(&l);
                return r;
        }
        qsort(l.v, l.n, sizeof(*l.v), by_path);
        arr = json_array();
        for (size_t i = 0; arr && i < l.n; i++) {
                json_t *e = json_pack("{s:s, s:s}", "path", l.v[i].path, "type", l.v[i].type);
                if (e && strcmp(l.v[i].type, "file") == 0)
                        json_object_set_new(e, "size", json_integer(l.v[i].size));
                if (e && l.v[i].target)
                        json_object_set_new(e, "target", json_string(l.v[i].target));
                if (!e || json_array_append_new(arr, e) < 0) {
                        json_decref(arr);
                        arr = NULL;
                }
        }
        listing_free(&l);
        if (!arr)
                return -ENOMEM;
        *entries = arr;
        *truncated = l.truncated;
        return 0;
}
