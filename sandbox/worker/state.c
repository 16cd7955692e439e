/* A session's state as a stream of records (docs/protocol.md, "The state
 * stream"): the worker writes its own on a snapshot frame and reads one on
 * a restore frame, each through a descriptor the daemon passed with the
 * frame (a pipe to another worker for a fork, a file for a snapshot).  The
 * daemon never reads the R part: R data made by untrusted code is
 * unserialized only here, inside the jail of the session it is restored
 * into.
 *
 * The stream (all integers big-endian), one record after another:
 *   kind (1 byte: 'R' the R state, 'D' a directory, 'F' a regular file,
 *   'L' a symbolic link, 'E' the end), 0, path length (u16), mode (u32,
 *   permission bits only), data length (u64), the path (relative to /work,
 *   components joined by '/'), the data (the R blob; a file's bytes; a
 *   link's target).  First one 'R', last one 'E'.
 *
 * Restoring follows the workspace's rules even here, inside the jail: each
 * path component is checked (no "", ".", "..", no NUL) and opened with
 * O_NOFOLLOW from /work's descriptor, files are created O_EXCL, modes lose
 * their set-id and sticky bits, nothing but the three kinds is made.  And a
 * restore that fails changes nothing: R reads the whole state first, the
 * files are staged in a directory of /work of their own, and only then are
 * the old files moved aside, the staged ones swapped in and the global
 * environment replaced ("staging, then the swap", below).
 *
 * Process context: a worker, jailed, between runs. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "macros.h"
#include "state_format.h"

static struct {
        SEXP snapshot_call, read_call, commit_call, alloc_call, check_call;
        json_t *notes; /* what could not be carried or restored: an array of strings */
} S;

/* ---- writing ------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t len) {
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int write_record(int fd, char kind, const char *path, mode_t mode, const void *data, uint64_t len) {
        unsigned char h[STATE_RECORD_HEADER];
        size_t plen = path ? strlen(path) : 0;
        int e;

        state_record_encode(h, kind, (unsigned)plen, (uint32_t)(mode & 0777), len);
        if ((e = write_all(fd, h, sizeof(h))) < 0 || (plen && (e = write_all(fd, path, plen)) < 0))
                return e;
        return data && len ? write_all(fd, data, len) : 0;
}

/* "files: PATH not carried (WHY)" */
static void note(const char *path, const char *why) {
        char buf[1024];

        snprintf(buf, sizeof(buf), "files: %s not carried (%s)", path, why);
        if (json_array_size(S.notes) < STATE_NOTES_MAX)
                json_array_append_new(S.notes, json_string(buf));
}

/* A regular file's bytes, copied from its descriptor. */
static int write_file(int out, int dirfd, const char *name, const char *path, const struct stat *st) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        unsigned char h[STATE_RECORD_HEADER];
        char buf[65536];
        uint64_t left = (uint64_t)st->st_size;
        int e;

        if (fd < 0) {
                note(path, strerror(errno));
                return 0;
        }
        state_record_encode(h, 'F', (unsigned)strlen(path), (uint32_t)(st->st_mode & 0777), left);
        if ((e = write_all(out, h, sizeof(h))) < 0 || (e = write_all(out, path, strlen(path))) < 0)
                return e;
        /* Exactly the size announced: a file that shrinks meanwhile is
         * padded with zeros, one that grows is cut (the code that changes
         * it is not running: only between runs). */
        while (left > 0) {
                ssize_t n = read(fd, buf, MIN(sizeof(buf), left));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        memset(buf, 0, sizeof(buf));
                        n = (ssize_t)MIN(sizeof(buf), left);
                }
                if ((e = write_all(out, buf, (size_t)n)) < 0)
                        return e;
                left -= (uint64_t)n;
        }
        return 0;
}

/* Every entry below dirfd (prefix its path), depth first, parents before
 * their children. */
static int write_tree(int out, int dirfd, const char *prefix, unsigned depth) {
        _cleanup_close_ int dup_fd = -1;
        DIR *d;
        struct dirent *de;
        int e = 0;

        if (depth > STATE_DEPTH_MAX) {
                note(prefix, "nested too deep");
                return 0;
        }
        dup_fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dup_fd < 0 || !(d = fdopendir(dup_fd)))
                return 0;
        dup_fd = -1; /* the DIR owns it */
        while (e == 0 && (de = readdir(d))) {
                char path[STATE_PATH_MAX + 1];
                struct stat st;

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if ((size_t)snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "/" : "", de->d_name) >=
                    sizeof(path)) {
                        note(prefix, "path too long");
                        continue;
                }
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode)) {
                        e = write_file(out, dirfd, de->d_name, path, &st);
                } else if (S_ISDIR(st.st_mode)) {
                        _cleanup_close_ int sub =
                                openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0)
                                continue;
                        if ((e = write_record(out, 'D', path, st.st_mode, NULL, 0)) == 0)
                                e = write_tree(out, sub, path, depth + 1);
                } else if (S_ISLNK(st.st_mode)) {
                        char target[STATE_PATH_MAX + 1];
                        ssize_t n = readlinkat(dirfd, de->d_name, target, sizeof(target));

                        if (n < 0 || (size_t)n >= sizeof(target))
                                note(path, "unreadable link");
                        else
                                e = write_record(out, 'L', path, 0777, target, (uint64_t)n);
                } else {
                        note(path, "not a file, directory or link");
                }
        }
        closedir(d);
        return e;
}

/* ---- reading --------------------------------------------------------------- */

static int read_all(int fd, void *buf, size_t len) {
        char *p = buf;

        while (len > 0) {
                ssize_t n = read(fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EPIPE; /* -EPIPE: cut short */
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Open the directory that holds path's last component, from root, one
 * component at a time without following links; *last points into path at
 * that component.  The descriptor, or -errno. */
static int open_parent(int root, char *path, const char **last) {
        int fd = dup(root);
        char *comp = path, *slash;

        if (fd < 0)
                return -errno;
        while ((slash = strchr(comp, '/'))) {
                int sub;

                *slash = '\0';
                sub = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                *slash = '/';
                close(fd);
                if (sub < 0)
                        return -errno;
                fd = sub;
                comp = slash + 1;
        }
        *last = comp;
        return fd;
}

/* chmod the directory name in dirfd without following a link and without
 * needing to read it: an O_PATH descriptor (no permission needed), then its
 * /proc/self/fd entry, which is that very directory (a directory the
 * session made 0000 could not be opened to fchmod it). */
static int chmod_dir_at(int dirfd, const char *name, mode_t mode) {
        _cleanup_close_ int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        char proc[64];

        if (fd < 0)
                return -errno;
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        return chmod(proc, mode) < 0 ? -errno : 0;
}

/* Empty the directory top (it stays), never following a link, at any
 * depth: iterative, one descriptor open at a time (a tree the session made
 * may be deeper than any stack or descriptor limit).  Each directory is
 * entered with O_NOFOLLOW and made 0700 (its entries could not go
 * otherwise); going back up is "..", checked against the inode we came
 * from, so that a directory moved meanwhile (a thread of the session) stops
 * the walk instead of taking it elsewhere.  0, or -errno of the first entry
 * that would not go (what was removed stays removed). */
static int clear_tree(int top) {
        _cleanup_free_ ino_t *up = NULL; /* the inode of each directory above cur */
        size_t depth = 0, cap = 0;
        int cur = dup(top), e = 0;

        if (cur < 0)
                return -errno;
        for (;;) {
                int dfd = dup(cur), sub = -1;
                DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
                struct dirent *de;

                if (!d) {
                        e = -errno;
                        if (dfd >= 0)
                                close(dfd);
                        break;
                }
                rewinddir(d); /* a dup shares the offset */
                while ((de = readdir(d))) {
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        if (unlinkat(cur, de->d_name, 0) == 0)
                                continue;
                        if (errno != EISDIR && errno != EPERM) {
                                e = -errno;
                                break;
                        }
                        if (unlinkat(cur, de->d_name, AT_REMOVEDIR) == 0)
                                continue;
                        /* Only a directory that is not empty is gone into:
                         * each visit then removes something or fails, so
                         * that the walk ends (an empty one that would not
                         * go would be gone into again and again). */
                        if (errno != ENOTEMPTY && errno != EEXIST) {
                                e = -errno;
                                break;
                        }
                        sub = openat(cur, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                        if (sub < 0 && errno == EACCES && (e = chmod_dir_at(cur, de->d_name, 0700)) == 0)
                                sub = openat(cur, de->d_name,
                                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                        if (sub < 0 && e == 0)
                                e = -errno;
                        break;
                }
                closedir(d);
                if (e < 0)
                        break;
                if (sub >= 0) {
                        struct stat st;

                        if (fstat(cur, &st) < 0 || fchmod(sub, 0700) < 0) {
                                e = -errno;
                                close(sub);
                                break;
                        }
                        if (depth == cap) {
                                ino_t *grown = realloc(up, (cap = cap ? 2 * cap : 64) * sizeof(*up));

                                if (!grown) {
                                        e = -ENOMEM;
                                        close(sub);
                                        break;
                                }
                                up = grown;
                        }
                        up[depth++] = st.st_ino;
                        close(cur);
                        cur = sub;
                        continue;
                }
                /* cur is empty: back to its parent, which removes it at
                 * its next pass. */
                if (depth == 0)
                        break;
                {
                        struct stat st;
                        int parent = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                        if (parent < 0 || fstat(parent, &st) < 0 || st.st_ino != up[depth - 1]) {
                                e = parent < 0 ? -errno : -ESTALE;
                                if (parent >= 0)
                                        close(parent);
                                break;
                        }
                        close(cur);
                        cur = parent;
                        depth--;
                }
        }
        close(cur);
        return e;
}

struct dir_mode {
        char *path;
        mode_t mode;
};

/* One workspace entry of the stream; its data follows in fd. */
static int restore_entry(int in, int root, const struct state_record *rec, char *path, struct dir_mode **dirs,
                         size_t *n_dirs) {
        const char *last;
        _cleanup_close_ int parent = -1;
        char buf[65536];
        int e;

        if ((e = state_path_check(path, rec->path_len)) < 0)
                return e;
        parent = open_parent(root, path, &last);
        if (parent < 0)
                return parent;
        if (rec->kind == 'D') {
                struct dir_mode *grown;

                if (mkdirat(parent, last, 0700) < 0)
                        return -errno;
                /* Its own mode once its entries are in (a 0555 directory
                 * would refuse them). */
                grown = realloc(*dirs, (*n_dirs + 1) * sizeof(**dirs));
                if (!grown)
                        return -ENOMEM;
                *dirs = grown;
                grown[*n_dirs].path = strdup(path);
                grown[*n_dirs].mode = rec->mode & 0777;
                if (!grown[*n_dirs].path)
                        return -ENOMEM;
                (*n_dirs)++;
                return 0;
        }
        if (rec->kind == 'L') {
                char target[STATE_PATH_MAX + 1];

                if (rec->data_len > STATE_PATH_MAX)
                        return -EINVAL;
                if ((e = read_all(in, target, (size_t)rec->data_len)) < 0)
                        return e;
                target[rec->data_len] = '\0';
                if (memchr(target, '\0', (size_t)rec->data_len))
                        return -EINVAL;
                return symlinkat(target, parent, last) < 0 ? -errno : 0;
        }
        {
                _cleanup_close_ int fd =
                        openat(parent, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                uint64_t left = rec->data_len;

                if (fd < 0)
                        return -errno;
                while (left > 0) {
                        size_t n = (size_t)MIN(sizeof(buf), left);

                        if ((e = read_all(in, buf, n)) < 0 || (e = write_all(fd, buf, n)) < 0)
                                return e;
                        left -= n;
                }
                return fchmod(fd, rec->mode & 0777) < 0 ? -errno : 0;
        }
}

/* ---- staging, then the swap ---------------------------------------------------
 *
 * A restore that fails must change nothing (docs/security.md, "Round 4",
 * finding 9): the files go into a staging directory of /work first (the
 * same tmpfs, so that they can be renamed in; /work's quota then holds
 * both, and a state that does not fit beside the old files fails there,
 * before anything changed).  Only when all of them are in, the old
 * top-level entries are renamed into a directory of their own, the staged
 * ones into /work (any failure until here is undone), the global
 * environment is replaced, and the old tree is removed. */

struct restore_plan {
        int root, stage, trash; /* /work and the two directories in it, or -1 */
        char stage_name[64], trash_name[64];
        struct dir_mode *dirs; /* the staged directories, their modes to set */
        size_t n_dirs;
        char **old;       /* /work's entries before, moved into trash */
        mode_t *old_mode; /* a directory's mode, when it was made writable to move */
        bool *old_chmod;
        size_t n_old, moved_old;
        char **new; /* the staged top-level entries, moved into /work */
        size_t n_new, moved_new;
        bool swapped; /* the trash holds the old files, to be removed */
};

/* A directory of our own in /work, 0700, under a name no entry has. */
static int make_own_dir(int root, const char *what, char *name, size_t n) {
        for (int tries = 0; tries < 16; tries++) {
                unsigned long long r;
                int fd;

                if (getrandom(&r, sizeof(r), 0) != sizeof(r))
                        r = (unsigned long long)getpid() * 1000003ULL + (unsigned long long)tries;
                snprintf(name, n, ".securerfs-%s-%016llx", what, r);
                if (mkdirat(root, name, 0700) < 0) {
                        if (errno == EEXIST)
                                continue;
                        return -errno;
                }
                fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0) {
                        int e = -errno;

                        unlinkat(root, name, AT_REMOVEDIR);
                        return e;
                }
                return fd;
        }
        return -EEXIST;
}

/* The names in dirfd but skip1 and skip2 (NULL for none). */
static int list_names(int dirfd, const char *skip1, const char *skip2, char ***out, size_t *n_out) {
        int dfd = dup(dirfd);
        DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
        struct dirent *de;
        char **names = NULL;
        size_t n = 0;
        int e = 0;

        if (!d) {
                e = -errno;
                if (dfd >= 0)
                        close(dfd);
                return e;
        }
        rewinddir(d); /* a dup shares the offset */
        while ((de = readdir(d))) {
                char **grown;

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || (skip1 && !strcmp(de->d_name, skip1)) ||
                    (skip2 && !strcmp(de->d_name, skip2)))
                        continue;
                if (!(grown = realloc(names, (n + 1) * sizeof(*names))) || !(grown[n] = strdup(de->d_name))) {
                        if (grown)
                                names = grown;
                        e = -ENOMEM;
                        break;
                }
                names = grown;
                n++;
        }
        closedir(d);
        *out = names;
        *n_out = n;
        return e;
}

static void free_names(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

/* The staged files, read from in after the R record, into plan->stage. */
static int stage_files(int in, struct restore_plan *plan, char *err, size_t errlen) {
        uint64_t entries = 0;
        int e;

        for (;;) {
                unsigned char h[STATE_RECORD_HEADER];
                struct state_record rec;
                char path[STATE_PATH_MAX + 1];

                if ((e = read_all(in, h, sizeof(h))) < 0 || (e = state_record_decode(h, &rec)) < 0) {
                        snprintf(err, errlen, "the state is cut short or malformed in its files");
                        return e;
                }
                if (rec.kind == 'E')
                        return 0;
                if (rec.kind == 'R' || ++entries > STATE_ENTRIES_MAX || rec.path_len == 0) {
                        snprintf(err, errlen, "a malformed workspace entry");
                        return -EINVAL;
                }
                if ((e = read_all(in, path, rec.path_len)) < 0) {
                        snprintf(err, errlen, "the state is cut short in its files");
                        return e;
                }
                path[rec.path_len] = '\0';
                if ((e = restore_entry(in, plan->stage, &rec, path, &plan->dirs, &plan->n_dirs)) < 0) {
                        if (e == -ENOSPC || e == -EDQUOT)
                                snprintf(err, errlen,
                                         "files: %.300s could not be staged: %s (the workspace must hold the "
                                         "state's files beside its own until the swap); nothing restored",
                                         path, strerror(-e));
                        else
                                snprintf(err, errlen, "files: %.300s could not be restored: %s; nothing restored", path,
                                         strerror(-e));
                        return e;
                }
        }
}

/* Move name from one directory to the other, never over an entry. */
static int move_entry(int from, int to, const char *name) {
        return renameat2(from, name, to, name, RENAME_NOREPLACE) < 0 ? -errno : 0;
}

/* A directory moved to another parent must be writable to its mover (the
 * kernel rewrites its ".."): a directory the session made 0555 is made
 * writable first, its mode kept to give back if the swap is undone. */
static int make_movable(int root, const char *name, mode_t *mode, bool *changed) {
        struct stat st;
        int e;

        *changed = false;
        if (fstatat(root, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode) || (st.st_mode & 0200))
                return 0;
        if ((e = chmod_dir_at(root, name, (st.st_mode & 0777) | 0200)) < 0)
                return e;
        *mode = st.st_mode & 0777;
        *changed = true;
        return 0;
}

static void give_mode_back(int root, const char *name, mode_t mode) {
        chmod_dir_at(root, name, mode);
}

/* Undo what swap_files did: the new entries back into the stage, the old
 * ones back into /work with their modes. */
static void unswap(struct restore_plan *plan) {
        while (plan->moved_new > 0) {
                plan->moved_new--;
                move_entry(plan->root, plan->stage, plan->new[plan->moved_new]);
        }
        while (plan->moved_old > 0) {
                size_t i = --plan->moved_old;

                if (move_entry(plan->trash, plan->root, plan->old[i]) == 0 && plan->old_chmod[i])
                        give_mode_back(plan->root, plan->old[i], plan->old_mode[i]);
        }
        for (size_t i = plan->moved_old; i < plan->n_old; i++)
                if (plan->old_chmod[i]) {
                        give_mode_back(plan->root, plan->old[i], plan->old_mode[i]);
                        plan->old_chmod[i] = false;
                }
}

/* /work's entries into the trash, the staged ones into /work.  On a
 * failure all is undone. */
static int swap_files(struct restore_plan *plan, char *err, size_t errlen) {
        int e;

        plan->trash = make_own_dir(plan->root, "old", plan->trash_name, sizeof(plan->trash_name));
        if (plan->trash < 0) {
                e = plan->trash;
                snprintf(err, errlen, "the directory to move the old files into cannot be made: %s; nothing restored",
                         strerror(-e));
                return e;
        }
        if ((e = list_names(plan->root, plan->stage_name, plan->trash_name, &plan->old, &plan->n_old)) < 0 ||
            (e = list_names(plan->stage, NULL, NULL, &plan->new, &plan->n_new)) < 0) {
                snprintf(err, errlen, "the workspace could not be read: %s; nothing restored", strerror(-e));
                return e;
        }
        plan->old_mode = calloc(plan->n_old + 1, sizeof(*plan->old_mode));
        plan->old_chmod = calloc(plan->n_old + 1, sizeof(*plan->old_chmod));
        if (!plan->old_mode || !plan->old_chmod) {
                snprintf(err, errlen, "out of memory; nothing restored");
                return -ENOMEM;
        }
        for (size_t i = 0; i < plan->n_old; i++) {
                if ((e = make_movable(plan->root, plan->old[i], &plan->old_mode[i], &plan->old_chmod[i])) < 0 ||
                    (e = move_entry(plan->root, plan->trash, plan->old[i])) < 0) {
                        snprintf(err, errlen, "files: %.300s could not be moved aside: %s; nothing restored",
                                 plan->old[i], strerror(-e));
                        if (plan->old_chmod[i])
                                give_mode_back(plan->root, plan->old[i], plan->old_mode[i]);
                        plan->old_chmod[i] = false;
                        unswap(plan);
                        return e;
                }
                plan->moved_old++;
        }
        for (size_t i = 0; i < plan->n_new; i++) {
                /* The staged directories are 0700 until the end: movable. */
                if ((e = move_entry(plan->stage, plan->root, plan->new[i])) < 0) {
                        snprintf(err, errlen, "files: %.300s could not be swapped in: %s; nothing restored",
                                 plan->new[i], strerror(-e));
                        unswap(plan);
                        return e;
                }
                plan->moved_new++;
        }
        plan->swapped = true;
        return 0;
}

/* The staged directories' own modes, deepest first (a 0555 directory
 * would refuse its parent's being set), now that they are in /work. */
static void set_dir_modes(struct restore_plan *plan) {
        while (plan->n_dirs > 0) {
                struct dir_mode *d = &plan->dirs[--plan->n_dirs];
                const char *last;
                _cleanup_close_ int parent = open_parent(plan->root, d->path, &last);

                if (parent >= 0)
                        give_mode_back(parent, last, d->mode);
                free(d->path);
        }
}

/* Remove one of our directories of /work, with all it holds when clear (else
 * only when empty: a trash that an undone swap could not empty holds the
 * session's own files); what would not go is a note. */
static void remove_own_dir(int root, int *fd, const char *name, bool clear) {
        int e = 0;

        if (*fd < 0)
                return;
        if (clear)
                e = clear_tree(*fd);
        close(*fd);
        *fd = -1;
        if (e == 0 && unlinkat(root, name, AT_REMOVEDIR) < 0)
                e = -errno;
        if (e < 0 && json_array_size(S.notes) < STATE_NOTES_MAX) {
                char buf[256];

                snprintf(buf, sizeof(buf), "files: %s could not be removed (%s)", name, strerror(-e));
                json_array_append_new(S.notes, json_string(buf));
        }
}

static void plan_free(struct restore_plan *plan) {
        while (plan->n_dirs > 0)
                free(plan->dirs[--plan->n_dirs].path);
        free(plan->dirs);
        free_names(plan->old, plan->n_old);
        free_names(plan->new, plan->n_new);
        free(plan->old_mode);
        free(plan->old_chmod);
        if (plan->root >= 0)
                close(plan->root);
}

/* ---- the frames ------------------------------------------------------------- */

/* Names the R side reported (a character vector) into S.notes. */
static void take_notes(SEXP v) {
        if (TYPEOF(v) != STRSXP)
                return;
        for (R_xlen_t i = 0; i < XLENGTH(v) && json_array_size(S.notes) < STATE_NOTES_MAX; i++) {
                size_t len;
                char *t = charsxp_text(STRING_ELT(v, i), STATE_NOTE_MAX, "...", &len);

                if (t)
                        json_array_append_new(S.notes, json_stringn(t, len));
                free(t);
        }
}

static json_t *strings_json(SEXP v, size_t max_n, size_t max_len) {
        json_t *a = json_array();

        if (TYPEOF(v) != STRSXP)
                return a;
        for (R_xlen_t i = 0; i < XLENGTH(v) && json_array_size(a) < max_n; i++) {
                size_t len;
                char *t = charsxp_text(STRING_ELT(v, i), max_len, "", &len);

                if (t)
                        json_array_append_new(a, json_stringn(t, len));
                free(t);
        }
        return a;
}

/* The global environment's bindings whose value is code yet to run: an
 * active binding (reading it calls its function) and a promise not forced
 * yet (delayedAssign: reading it evaluates its expression).  R's mget()
 * would run that code here, in the worker between runs, outside every
 * limit of a run (docs/security.md, "Round 4"): they are left out, by name.
 * Neither test runs anything: R_BindingIsActive looks at the binding, and
 * findVarInFrame3 returns a promise unforced (it is called only on a
 * binding that is not active, where it would call the function). */
static SEXP code_bindings(void) {
        SEXP names = PROTECT(R_lsInternal3(R_GlobalEnv, TRUE, FALSE)), out;
        R_xlen_t n = XLENGTH(names), k = 0;
        bool *skip = calloc((size_t)n + 1, sizeof(*skip));

        for (R_xlen_t i = 0; skip && i < n; i++) {
                SEXP sym = Rf_installChar(STRING_ELT(names, i)), v;

                if (R_BindingIsActive(sym, R_GlobalEnv))
                        skip[i] = true;
                else if (TYPEOF(v = Rf_findVarInFrame3(R_GlobalEnv, sym, TRUE)) == PROMSXP &&
                         PRVALUE(v) == R_UnboundValue)
                        skip[i] = true;
                k += skip[i];
        }
        out = PROTECT(Rf_allocVector(STRSXP, k));
        for (R_xlen_t i = 0, j = 0; skip && i < n; i++)
                if (skip[i])
                        SET_STRING_ELT(out, j++, STRING_ELT(names, i));
        free(skip);
        UNPROTECT(2);
        return out;
}

/* Take the descriptor that came with the frame (the daemon always sends
 * one). */
void state_snapshot(int fd) {
        SEXP res, blob;
        json_t *packages = NULL, *m;
        const char *error = NULL;
        char err[512] = "";
        int e;

        S.notes = json_array();
        res = r_call_on_value(S.snapshot_call, PROTECT(code_bindings()));
        UNPROTECT(1);
        if (!res || TYPEOF(res) != VECSXP || XLENGTH(res) != 3 || TYPEOF(VECTOR_ELT(res, 0)) != RAWSXP) {
                error = "R could not serialize the global environment";
        } else {
                PROTECT(res);
                blob = VECTOR_ELT(res, 0);
                take_notes(VECTOR_ELT(res, 1));
                packages = strings_json(VECTOR_ELT(res, 2), STATE_PACKAGES_MAX, STATE_PACKAGE_NAME_MAX);
                e = write_record(fd, 'R', NULL, 0, RAW(blob), (uint64_t)XLENGTH(blob));
                UNPROTECT(1);
                r_hold(R_SLOT_VALUE, R_NilValue);
                if (e == 0) {
                        _cleanup_close_ int root = worker_workspace();

                        e = root < 0 ? root : write_tree(fd, root, "", 0);
                }
                if (e == 0)
                        e = write_record(fd, 'E', NULL, 0, NULL, 0);
                /* A file on disk (state_dir) is the daemon's to rename:
                 * it must be complete when we say so. */
                if (e == 0 && fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
                        e = -errno;
                if (e < 0) {
                        snprintf(err, sizeof(err), "the state could not be written: %s", strerror(-e));
                        error = err;
                }
        }
        close(fd);
        m = json_pack("{s:s, s:o, s:o}", "type", "snapshot_done", "notes", S.notes, "packages",
                      packages ? packages : json_array());
        if (m && error)
                json_object_set_new(m, "error", json_string(error));
        S.notes = NULL;
        channel_send(m);
}

/* Unserialize blob in a child process (same jail, same limits): 0 when R
 * read it and it has a state's shape; else -EINVAL with why.  Bytes made to
 * crash R's unserialize take only the child. */
static int check_in_child(SEXP blob, char *why, size_t n) {
        int status;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        if (pid < 0) {
                snprintf(why, n, "the state could not be checked (fork: %s); nothing restored", strerror(errno));
                return -EAGAIN;
        }
        if (pid == 0) {
                /* Process context: a child of the worker, in its jail; it
                 * writes nothing anywhere and ends with _exit. */
                SEXP ok = r_call_on_value(S.check_call, blob);

                _exit(ok && TYPEOF(ok) == LGLSXP && XLENGTH(ok) == 1 && LOGICAL(ok)[0] == TRUE ? 0 : 1);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        snprintf(why, n, "the state could not be checked (waitpid: %s)", strerror(errno));
                        return -EIO;
                }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        if (WIFSIGNALED(status))
                snprintf(why, n, "the R state makes R's unserialize crash (signal %d); nothing restored",
                         WTERMSIG(status));
        else
                snprintf(why, n, "the R state is not one R can read (unserialize failed); nothing restored");
        return -EINVAL;
}

void state_restore(int fd, bool check) {
        unsigned char h[STATE_RECORD_HEADER];
        struct state_record rec;
        struct restore_plan plan = {.root = -1, .stage = -1, .trash = -1};
        SEXP blob = R_NilValue, res, state;
        char err[512] = "";
        json_t *m;
        int e;

        S.notes = json_array();
        if ((e = read_all(fd, h, sizeof(h))) < 0 || state_record_decode(h, &rec) < 0 || rec.kind != 'R' ||
            rec.path_len != 0 || rec.data_len > (uint64_t)R_XLEN_T_MAX) {
                snprintf(err, sizeof(err), "not a session's state (no R record first)");
                goto done;
        }
        /* R's allocation under R_tryEval: past the memory limit it is an R
         * error, not a jump out of this frame. */
        blob = r_call_on_value(S.alloc_call, Rf_ScalarReal((double)rec.data_len));
        if (!blob || TYPEOF(blob) != RAWSXP || (uint64_t)XLENGTH(blob) != rec.data_len) {
                snprintf(err, sizeof(err), "no memory for the R state (%llu bytes)", (unsigned long long)rec.data_len);
                goto done;
        }
        r_hold(R_SLOT_VALUE, blob);
        if ((e = read_all(fd, RAW(blob), (size_t)rec.data_len)) < 0) {
                snprintf(err, sizeof(err), "the state is cut short in its R part");
                goto done;
        }
        if (check && check_in_child(blob, err, sizeof(err)) < 0)
                goto done;
        /* unserialize() of bytes untrusted code made, here in the jail: an
         * R error changes nothing; a crash takes only this worker. */
        state = r_call_on_value(S.read_call, blob);
        if (!state) {
                snprintf(err, sizeof(err),
                         "R could not read the state (unserialize failed, or the global "
                         "environment is locked); nothing restored");
                goto done;
        }
        r_hold(R_SLOT_VALUE, state); /* the blob goes */
        if ((plan.root = worker_workspace()) < 0) {
                snprintf(err, sizeof(err), "the workspace cannot be opened: %s; nothing restored",
                         strerror(-plan.root));
                plan.root = -1;
                goto done;
        }
        plan.stage = make_own_dir(plan.root, "new", plan.stage_name, sizeof(plan.stage_name));
        if (plan.stage < 0) {
                snprintf(err, sizeof(err), "the staging directory cannot be made in /work: %s; nothing restored",
                         strerror(-plan.stage));
                goto done;
        }
        if (stage_files(fd, &plan, err, sizeof(err)) < 0 || swap_files(&plan, err, sizeof(err)) < 0)
                goto done;
        set_dir_modes(&plan);
        /* The swap is made: from here on the session is the state's. */
        res = r_call_on_value(S.commit_call, state);
        if (!res || TYPEOF(res) != STRSXP) {
                snprintf(err, sizeof(err),
                         "R could not take the state in (its files are restored, its global "
                         "environment may be part the old, part the new)");
        } else {
                PROTECT(res);
                take_notes(res);
                UNPROTECT(1);
        }
done:
        r_hold(R_SLOT_VALUE, R_NilValue);
        close(fd);
        /* Before the swap: the staged files go, nothing else changed; after
         * it: the old files go (notes say what would not). */
        if (plan.root >= 0) {
                remove_own_dir(plan.root, &plan.trash, plan.trash_name, plan.swapped);
                remove_own_dir(plan.root, &plan.stage, plan.stage_name, !plan.swapped);
        }
        plan_free(&plan);
        m = json_pack("{s:s, s:o}", "type", "restored", "notes", S.notes);
        if (m && *err)
                json_object_set_new(m, "error", json_string(err));
        S.notes = NULL;
        channel_send(m);
}

int state_init(char *err, size_t errlen) {
        int r;

        if ((r = r_call("snapshot_state", Rf_install(".value"), &S.snapshot_call, err, errlen)) < 0 ||
            (r = r_call("read_state", Rf_install(".value"), &S.read_call, err, errlen)) < 0 ||
            (r = r_call("commit_state", Rf_install(".value"), &S.commit_call, err, errlen)) < 0 ||
            (r = r_call("raw_alloc", Rf_install(".value"), &S.alloc_call, err, errlen)) < 0 ||
            (r = r_call("check_state", Rf_install(".value"), &S.check_call, err, errlen)) < 0)
                return r;
        return 0;
}
