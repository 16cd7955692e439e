/* Workspaces (sessions/workspace.h). */
#include "workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "array.h"
#include "escape.h"
#include "list.h"
#include "loop.h"
#include "log.h"
#include "macros.h"
#include "sandbox/keeper.h"

/* A scan stops after this many entries, this deep, or after this long: a
 * run that made a million files (or a tree thousands of levels deep) gets
 * a truncated list (files_truncated), not a stalled daemon.  It runs on
 * the scanner thread, so these bound the session's own wait and memory,
 * not anyone else's; a tmpfs of at most SCAN_INLINE_INODES inodes is
 * scanned on the loop (a few syscalls). */
#define SCAN_MAX_ENTRIES 200000
#define SCAN_MAX_DEPTH 64
#define SCAN_MAX_MS 3000
#define SCAN_INLINE_INODES 64
#define RUNTIME_PREFIX "securerfs-run-"

struct workspaces {
        bool strict;
        long long max_bytes;
        struct keeper *keeper;   /* strict */
        int runtime_fd;          /* none: the runtime directory, else -1 */
        long long total_bytes;   /* the sum of every workspace's counted */
        struct loop *loop;
        /* The scanner thread (started at the first big scan): jobs queued
         * for it and done by it, under lock; it posts to scan_efd. */
        pthread_t scanner;
        bool scanner_running, scanner_stop;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        struct list queued, done;
        int scan_efd;
        char runtime_path[PATH_MAX];
};

struct workspace {
        struct workspaces *owner;
        uint64_t id;
        int root_fd;     /* O_PATH|O_DIRECTORY; -1 while the keeper makes it */
        uid_t uid;       /* the session's host id: owner of what the host side creates */
        gid_t gid;
        long long used;  /* none: bytes, from the last scan plus host-side writes since */
        long long counted; /* its share of the owner's total_bytes: its usage when last counted */
        uint64_t generation; /* bumped by every change the host side makes (workspace_touch) */
        struct workspace_snapshot *kept; /* the last run's after-scan, the next one's before */
        uint64_t create_token; /* strict: the keeper's create in flight, 0 when none */
        workspace_done_fn created;
        void *created_data;
};

struct scan_entry {
        char *path;
        ino_t ino;
        off_t size;
        struct timespec mtime;
};

struct workspace_snapshot {
        struct scan_entry *e;
        size_t n, cap;
        long long bytes; /* st_blocks of everything seen */
        size_t seen;
        bool cut;        /* stopped at a bound: the list is truncated */
        size_t max_entries; /* 0: SCAN_MAX_ENTRIES */
        uint64_t deadline_ns;
        uint64_t generation; /* the workspace's when the scan began */
        bool has_usage;      /* strict, taken on the loop: usage is known */
        long long usage;     /* the tmpfs's bytes in use then, from the statfs that gave
                              * its inode count */
};

/* ---- safe lookups --------------------------------------------------------- */

bool workspace_name_valid(const char *name) {
        size_t n = strlen(name);

        return n > 0 && n <= NAME_MAX && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int workspace_openat(int dirfd, const char *name, int flags, mode_t mode) {
        struct open_how how = {
                .flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW),
                .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
                /* Beneath the directory, through no symbolic link of any
                 * kind, onto no other mount: a link the sandboxed code
                 * planted fails with ELOOP/EXDEV instead of being followed. */
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        long fd;
        int tries = 0;

        if (!workspace_name_valid(name) && strcmp(name, ".") != 0)
                return -EINVAL;
        /* EAGAIN: the kernel saw a rename race it could not rule out; a
         * few retries, then the caller gets the error. */
        do
                fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
        while (fd < 0 && errno == EAGAIN && ++tries < 16);
        return fd < 0 ? -errno : (int)fd;
}

/* Remove name below dirfd and everything in it, never following a link
 * (none mode: the sandboxed code ran as the daemon's user, unjailed, and may
 * have left anything there). */
static void remove_tree(int dirfd, const char *name, int depth) {
        int fd = workspace_openat(dirfd, name, O_RDONLY | O_DIRECTORY, 0);
        DIR *d;
        struct dirent *de;

        if (fd < 0) {
                unlinkat(dirfd, name, 0);
                return;
        }
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return;
        }
        while ((de = readdir(d))) {
                struct stat st;

                if (!workspace_name_valid(de->d_name))
                        continue;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) && depth < 256)
                        remove_tree(fd, de->d_name, depth + 1);
                else
                        unlinkat(fd, de->d_name, 0);
        }
        closedir(d);
        unlinkat(dirfd, name, AT_REMOVEDIR);
}

void workspace_remove_tree(int dirfd, const char *name) {
        remove_tree(dirfd, name, 0);
}

static void scanner_stop(struct workspaces *t);

/* ---- the runtime directory (none mode) ------------------------------------ */

/* Remove securerfs-run-<pid>[.XXXXXX] directories of ours whose daemon is
 * gone (a daemon killed with SIGKILL leaves its own). */
static void sweep_stale(int base_fd) {
        DIR *d;
        struct dirent *de;
        int fd = openat(base_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || !(d = fdopendir(fd))) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        while ((de = readdir(d))) {
                char *end;
                long pid;
                struct stat st;

                if (strncmp(de->d_name, RUNTIME_PREFIX, strlen(RUNTIME_PREFIX)) != 0)
                        continue;
                pid = strtol(de->d_name + strlen(RUNTIME_PREFIX), &end, 10);
                if ((*end && *end != '.') || pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
                        continue;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
                    st.st_uid != getuid())
                        continue;
                remove_tree(fd, de->d_name, 0);
        }
        closedir(d);
}

static int runtime_dir_open(struct workspaces *t, char *err, size_t errlen) {
        const char *xdg = getenv("XDG_RUNTIME_DIR"), *tmp = getenv("TMPDIR");
        char base[PATH_MAX];
        struct stat st;
        int base_fd;

        if (xdg && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid())
                snprintf(base, sizeof(base), "%s", xdg);
        else if (getuid() == 0 && stat("/run", &st) == 0 && S_ISDIR(st.st_mode))
                snprintf(base, sizeof(base), "/run");
        else
                snprintf(base, sizeof(base), "%s", tmp && tmp[0] == '/' ? tmp : "/tmp");
        base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (base_fd < 0) {
                int e = errno;
                snprintf(err, errlen, "runtime directory: open %s: %s", base, strerror(e));
                return -e;
        }
        sweep_stale(base_fd);
        close(base_fd);
        /* A fixed name where only we can create (XDG_RUNTIME_DIR, /run as
         * root); a random one in a shared /tmp. */
        if (strcmp(base, "/run") == 0 || (xdg && strcmp(base, xdg) == 0)) {
                snprintf(t->runtime_path, sizeof(t->runtime_path), "%s/" RUNTIME_PREFIX "%ld", base, (long)getpid());
                if (mkdir(t->runtime_path, 0700) < 0) {
                        int e = errno;
                        snprintf(err, errlen, "runtime directory: mkdir %s: %s", t->runtime_path, strerror(e));
                        return -e;
                }
        } else {
                snprintf(t->runtime_path, sizeof(t->runtime_path), "%s/" RUNTIME_PREFIX "%ld.XXXXXX", base,
                         (long)getpid());
                if (!mkdtemp(t->runtime_path)) {
                        int e = errno;
                        snprintf(err, errlen, "runtime directory: mkdtemp %s: %s", t->runtime_path, strerror(e));
                        return -e;
                }
        }
        t->runtime_fd = open(t->runtime_path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t->runtime_fd < 0) {
                int e = errno;
                snprintf(err, errlen, "runtime directory: open %s: %s", t->runtime_path, strerror(e));
                rmdir(t->runtime_path);
                return -e;
        }
        return 0;
}

/* ---- the set --------------------------------------------------------------- */

int workspaces_new(struct loop *l, bool strict, long long max_bytes, struct workspaces **out, char *err,
                   size_t errlen) {
        struct workspaces *t = calloc(1, sizeof(*t));
        int e;

        if (!t) {
                snprintf(err, errlen, "workspaces: out of memory");
                return -ENOMEM;
        }
        t->strict = strict;
        t->max_bytes = max_bytes;
        t->runtime_fd = -1;
        t->loop = l;
        t->scan_efd = -1;
        pthread_mutex_init(&t->lock, NULL);
        pthread_cond_init(&t->wake, NULL);
        list_init(&t->queued);
        list_init(&t->done);
        if (strict) {
                e = keeper_new(l, &t->keeper);
                if (e < 0)
                        snprintf(err, errlen, "keeper: %s", strerror(-e));
        } else {
                e = runtime_dir_open(t, err, errlen);
        }
        if (e < 0) {
                free(t);
                return e;
        }
        *out = t;
        return 0;
}

void workspaces_free(struct workspaces *t) {
        if (!t)
                return;
        scanner_stop(t);
        keeper_free(t->keeper);
        if (t->runtime_fd >= 0) {
                char *slash = strrchr(t->runtime_path, '/');
                int parent;

                close(t->runtime_fd);
                *slash = '\0';
                parent = open(slash == t->runtime_path ? "/" : t->runtime_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (parent >= 0) {
                        remove_tree(parent, slash + 1, 0);
                        close(parent);
                }
        }
        free(t);
}

unsigned long long workspaces_keeper_restarts(const struct workspaces *t) {
        return t ? keeper_restarts(t->keeper) : 0;
}

/* ---- one workspace ---------------------------------------------------------- */

static void on_keeper_created(void *data, int err, int fd, const char *why) {
        struct workspace *w = data;

        w->create_token = 0;
        if (err == 0) {
                w->root_fd = fd;
                workspace_recount(w);
        }
        w->created(w->created_data, err, -1, why);
}

int workspace_new(struct workspaces *t, uint64_t id, uid_t uid, gid_t gid, workspace_done_fn fn, void *data,
                  struct workspace **out) {
        struct workspace *w = calloc(1, sizeof(*w));
        char name[32];
        int e;

        if (!w)
                return -ENOMEM;
        w->owner = t;
        w->id = id;
        w->root_fd = -1;
        w->uid = uid;
        w->gid = gid;
        if (t->strict) {
                w->created = fn;
                w->created_data = data;
                w->create_token = keeper_create(t->keeper, id, (unsigned long long)t->max_bytes, uid, gid,
                                                on_keeper_created, w);
                if (!w->create_token) {
                        free(w);
                        return -ENOMEM;
                }
                *out = w;
                return -EINPROGRESS;
        } else {
                snprintf(name, sizeof(name), "s%" PRIu64, id);
                e = mkdirat(t->runtime_fd, name, 0700) < 0 ? -errno : 0;
                if (e == 0) {
                        w->root_fd = workspace_openat(t->runtime_fd, name, O_PATH | O_DIRECTORY, 0);
                        e = w->root_fd < 0 ? w->root_fd : 0;
                }
        }
        if (e < 0) {
                free(w);
                return e;
        }
        *out = w;
        return 0;
}

void workspace_free(struct workspace *w) {
        char name[32];

        if (!w)
                return;
        w->owner->total_bytes -= w->counted;
        workspace_snapshot_free(w->kept);
        if (w->root_fd >= 0)
                close(w->root_fd);
        if (w->owner->strict) {
                /* A create still in flight is answered before the remove
                 * (the keeper answers in order): its mount goes too. */
                if (w->create_token)
                        keeper_cancel(w->owner->keeper, w->create_token);
                keeper_remove(w->owner->keeper, w->id);
        } else {
                snprintf(name, sizeof(name), "s%" PRIu64, w->id);
                remove_tree(w->owner->runtime_fd, name, 0);
        }
        free(w);
}

int workspace_root_fd(const struct workspace *w) { return w->root_fd; }

int workspace_own(const struct workspace *w, int fd) {
        struct stat st;

        /* Only in strict mode, where the session has an id of its own; a
         * file that already is the session's needs nothing (an unprivileged
         * daemon's files always are: its id is the session's). */
        if (!w->owner->strict)
                return 0;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_uid == w->uid && st.st_gid == w->gid)
                return 0;
        /* On the very inode (an O_PATH descriptor works with AT_EMPTY_PATH):
         * a name the code swapped meanwhile cannot redirect it. */
        if (fchownat(fd, "", w->uid, w->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        return 0;
}

int workspace_worker_fd(struct workspace *w, workspace_done_fn fn, void *data, int *fd, uint64_t *token) {
        int r;

        if (w->owner->strict) {
                uint64_t t = keeper_clone(w->owner->keeper, w->id, fn, data);

                if (!t)
                        return -ENOMEM;
                *token = t;
                return -EINPROGRESS;
        }
        r = fcntl(w->root_fd, F_DUPFD_CLOEXEC, 3);
        if (r < 0)
                return -errno;
        *fd = r;
        return 0;
}

void workspaces_cancel(struct workspaces *t, uint64_t token) {
        if (t && t->strict && token)
                keeper_cancel(t->keeper, token);
}

/* Strict: w's tmpfs's bytes and inodes in use, from one statfs.  0, or
 * -errno (no tmpfs yet: -EBADF). */
static int tmpfs_used(const struct workspace *w, long long *bytes, long long *inodes) {
        struct statfs sf;

        if (w->root_fd < 0)
                return -EBADF;
        if (fstatfs(w->root_fd, &sf) < 0)
                return -errno;
        *bytes = (long long)(sf.f_blocks - sf.f_bfree) * (long long)sf.f_bsize;
        *inodes = (long long)(sf.f_files - sf.f_ffree);
        return 0;
}

long long workspace_usage(struct workspace *w) {
        long long bytes, inodes;

        if (!w->owner->strict)
                return w->used;
        return tmpfs_used(w, &bytes, &inodes) < 0 ? 0 : bytes;
}

int workspace_charge(struct workspace *w, long long growth) {
        if (w->owner->strict)
                return 0;
        if (growth > 0 && w->used + growth > w->owner->max_bytes)
                return -ENOSPC;
        w->used = MAX(0, w->used + growth);
        workspace_recount(w);
        return 0;
}

/* w's share of the owner's total is now bytes. */
static void recount_to(struct workspace *w, long long now) {
        w->owner->total_bytes += now - w->counted;
        w->counted = now;
}

void workspace_recount(struct workspace *w) { recount_to(w, workspace_usage(w)); }

void workspace_touch(struct workspace *w) {
        w->generation++;
        workspace_recount(w);
}

uint64_t workspace_generation(const struct workspace *w) { return w->generation; }

long long workspaces_usage(const struct workspaces *t) { return t ? t->total_bytes : 0; }

/* ---- scans ------------------------------------------------------------------ */

/* Scans run on the scanner thread (a big workspace) or on the loop (one
 * whose tmpfs holds at most SCAN_INLINE_INODES inodes, known from one
 * statfs).  The thread touches nothing but its job: a descriptor of its own
 * of the workspace's root (O_PATH, reached beneath it through
 * workspace_openat() only, reading), the limits, and the snapshot it fills;
 * the loop learns of a finished job through an eventfd. */

static int snapshot_add(struct workspace_snapshot *s, const char *path, const struct stat *st) {
        if (s->n == s->cap) {
                struct scan_entry *e = array_grow(s->e, &s->cap, sizeof(*e), 64);
                if (!e)
                        return -ENOMEM;
                s->e = e;
        }
        s->e[s->n].path = strdup(path);
        if (!s->e[s->n].path)
                return -ENOMEM;
        s->e[s->n].ino = st->st_ino;
        s->e[s->n].size = st->st_size;
        s->e[s->n].mtime = st->st_mtim;
        s->n++;
        return 0;
}

/* Stop the scan, the list marked truncated. */
static bool scan_cut(struct workspace_snapshot *s) {
        if (s->cut)
                return true;
        if (s->seen >= (s->max_entries ? s->max_entries : SCAN_MAX_ENTRIES))
                s->cut = true;
        /* The clock every 256 entries: a slow tmpfs (or a huge one)
         * bounds the scan in time too. */
        else if ((s->seen & 255) == 0 && now_ns() > s->deadline_ns)
                s->cut = true;
        return s->cut;
}

static void scan_dir(int parent_fd, const char *name, const char *prefix, int depth,
                     struct workspace_snapshot *s) {
        int fd = workspace_openat(parent_fd, name, O_RDONLY | O_DIRECTORY, 0);
        DIR *d;
        struct dirent *de;

        if (fd < 0)
                return;
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return;
        }
        while (!scan_cut(s) && (de = readdir(d))) {
                char path[PATH_MAX];
                struct stat st;

                if (!workspace_name_valid(de->d_name))
                        continue;
                s->seen++;
                if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                s->bytes += (long long)st.st_blocks * 512;
                /* A path longer than PATH_MAX cannot be shown: cut. */
                if (snprintf(path, sizeof(path), "%s%s", prefix, de->d_name) >= (int)sizeof(path)) {
                        s->cut = true;
                        continue;
                }
                if (S_ISREG(st.st_mode)) {
                        /* Out of memory: stop here; the list is then marked
                         * truncated, like one over SCAN_MAX_ENTRIES. */
                        if (snapshot_add(s, path, &st) < 0)
                                s->cut = true;
                } else if (S_ISDIR(st.st_mode)) {
                        char sub[PATH_MAX];
                        /* Thousands of levels: what is below the limit is
                         * not looked at, and the list says so. */
                        if (depth >= SCAN_MAX_DEPTH || snprintf(sub, sizeof(sub), "%s/", path) >= (int)sizeof(sub))
                                s->cut = true;
                        else
                                scan_dir(fd, de->d_name, sub, depth + 1, s);
                }
        }
        closedir(d);
}

static int entry_cmp(const void *a, const void *b) {
        return strcmp(((const struct scan_entry *)a)->path, ((const struct scan_entry *)b)->path);
}

/* Scan from root_fd into s (any thread). */
static void scan_into(int root_fd, struct workspace_snapshot *s) {
        s->deadline_ns = now_ns() + SCAN_MAX_MS * 1000000ULL;
        scan_dir(root_fd, ".", "", 0, s);
        if (s->n > 1)
                qsort(s->e, s->n, sizeof(s->e[0]), entry_cmp);
}

/* Strict: w's tmpfs's inodes (*inodes) and bytes (*bytes) in use, from one
 * statfs; -1 each when unknown (none mode, no tmpfs yet, statfs failed). */
static void tmpfs_counts(const struct workspace *w, long long *inodes, long long *bytes) {
        *inodes = *bytes = -1;
        if (w->owner->strict && tmpfs_used(w, bytes, inodes) < 0)
                *inodes = *bytes = -1;
}

/* A snapshot of w on the loop, given its counts (tmpfs_counts). */
static struct workspace_snapshot *snapshot_with_counts(struct workspace *w, long long inodes, long long bytes) {
        struct workspace_snapshot *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->generation = w->generation;
        s->has_usage = bytes >= 0;
        s->usage = bytes;
        /* A tmpfs holding only its root has nothing to list: every run of a
         * session that keeps no files pays one statfs, which also gives the
         * usage counted after the run (workspace_compare). */
        if (inodes == 1 || w->root_fd < 0)
                return s;
        scan_into(w->root_fd, s);
        return s;
}

struct workspace_snapshot *workspace_snapshot(struct workspace *w) {
        long long inodes, bytes;

        tmpfs_counts(w, &inodes, &bytes);
        return snapshot_with_counts(w, inodes, bytes);
}

void workspace_snapshot_free(struct workspace_snapshot *s) {
        if (!s)
                return;
        for (size_t i = 0; i < s->n; i++)
                free(s->e[i].path);
        free(s->e);
        free(s);
}

json_t *workspace_compare(struct workspace *w, const struct workspace_snapshot *before,
                          const struct workspace_snapshot *now, size_t limit, bool *truncated) {
        json_t *list = json_array();
        char shown[PATH_MAX * NAME_SHOW_GROWTH];

        *truncated = false;
        if (!now || !list)
                return list;
        if (!w->owner->strict)
                w->used = now->bytes;
        /* A snapshot taken on the loop has the usage from the statfs that
         * began it, in this same callback (the run's after-scan, a small
         * workspace): no second statfs.  One from the scanner thread is
         * older: ask again. */
        if (w->owner->strict && now->has_usage && now->generation == w->generation)
                recount_to(w, now->usage);
        else
                workspace_recount(w);
        for (size_t i = 0; i < now->n; i++) {
                const struct scan_entry *e = &now->e[i], *old = NULL;

                if (before && before->n)
                        old = bsearch(e, before->e, before->n, sizeof(before->e[0]), entry_cmp);
                if (old && old->ino == e->ino && old->size == e->size && old->mtime.tv_sec == e->mtime.tv_sec &&
                    old->mtime.tv_nsec == e->mtime.tv_nsec)
                        continue;
                if (json_array_size(list) >= limit) {
                        *truncated = true;
                        break;
                }
                /* The path as files/ shows it: a name that is not valid
                 * UTF-8 or holds a control character is escaped (and so can
                 * always be a JSON string), and it is the very path that
                 * leads to the file through the mount (common/escape.h). */
                if (path_show(e->path, shown, sizeof(shown)) == 0)
                        json_array_append_new(list, json_string(shown));
        }
        if (now->cut)
                *truncated = true;
        return list;
}

json_t *workspace_changes(struct workspace *w, const struct workspace_snapshot *before, size_t limit,
                          bool *truncated) {
        struct workspace_snapshot *now = workspace_snapshot(w);
        json_t *list = workspace_compare(w, before, now, limit, truncated);

        workspace_snapshot_free(now);
        return list;
}

/* ---- the snapshot kept between runs ---------------------------------------- */

struct workspace_snapshot *workspace_take_snapshot(struct workspace *w) {
        struct workspace_snapshot *s = w->kept;

        w->kept = NULL;
        if (s && s->generation == w->generation)
                return s;
        workspace_snapshot_free(s);
        return NULL;
}

void workspace_keep_snapshot(struct workspace *w, struct workspace_snapshot *s) {
        workspace_snapshot_free(w->kept);
        w->kept = s;
}

/* ---- the scanner thread ----------------------------------------------------- */

struct workspace_scan {
        struct workspaces *owner;
        int root_fd;                   /* the job's own descriptor of the root */
        struct workspace_snapshot *snap;
        workspace_scan_fn fn;
        void *data;
        bool cancelled;                /* under the lock */
        bool queued;                   /* on queued, not taken yet: under the lock */
        struct list link;              /* on queued or done, under the lock */
};

static void *scanner_main(void *arg) {
        struct workspaces *t = arg;

        /* Thread context: the scanner; it shares nothing with the loop but
         * what the lock guards. */
        pthread_mutex_lock(&t->lock);
        for (;;) {
                struct workspace_scan *j;
                uint64_t one = 1;

                while (!t->scanner_stop && list_empty(&t->queued))
                        pthread_cond_wait(&t->wake, &t->lock);
                if (t->scanner_stop)
                        break;
                j = list_first(&t->queued, struct workspace_scan, link);
                list_unlink(&j->link);
                j->queued = false;
                pthread_mutex_unlock(&t->lock);
                scan_into(j->root_fd, j->snap);
                pthread_mutex_lock(&t->lock);
                list_append(&t->done, &j->link);
                if (write(t->scan_efd, &one, sizeof(one)) < 0) {
                        /* The counter is far from full: never. */
                }
        }
        pthread_mutex_unlock(&t->lock);
        return NULL;
}

static void scan_job_free(struct workspace_scan *j) {
        if (j->root_fd >= 0)
                close(j->root_fd);
        workspace_snapshot_free(j->snap);
        free(j);
}

/* The loop's side: deliver the finished jobs. */
static void on_scans_done(int fd, uint32_t events, void *data) {
        struct workspaces *t = data;
        struct list done = LIST_INIT(done);
        struct workspace_scan *j;
        uint64_t n;

        if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
                return;
        pthread_mutex_lock(&t->lock);
        while ((j = list_first(&t->done, struct workspace_scan, link))) {
                list_unlink(&j->link);
                list_append(&done, &j->link);
        }
        pthread_mutex_unlock(&t->lock);
        while ((j = list_first(&done, struct workspace_scan, link))) {
                struct workspace_snapshot *snap = j->snap;

                list_unlink(&j->link);
                j->snap = NULL;
                /* Cancelled ones were marked on the loop: no lock needed
                 * to read the mark here. */
                if (!j->cancelled)
                        j->fn(j->data, snap);
                else
                        workspace_snapshot_free(snap);
                scan_job_free(j);
        }
}

/* Start the thread and its eventfd at the first big scan. */
static int scanner_start(struct workspaces *t) {
        int e;

        if (t->scanner_running)
                return 0;
        t->scan_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (t->scan_efd < 0)
                return -errno;
        if ((e = loop_add_fd(t->loop, t->scan_efd, EPOLLIN, on_scans_done, t)) < 0) {
                close(t->scan_efd);
                t->scan_efd = -1;
                return e;
        }
        if ((e = pthread_create(&t->scanner, NULL, scanner_main, t)) != 0) {
                loop_del_fd(t->loop, t->scan_efd);
                close(t->scan_efd);
                t->scan_efd = -1;
                return -e;
        }
        t->scanner_running = true;
        return 0;
}

static void scanner_stop(struct workspaces *t) {
        struct workspace_scan *j;

        if (!t->scanner_running)
                return;
        pthread_mutex_lock(&t->lock);
        t->scanner_stop = true;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
        /* A scan under way ends within SCAN_MAX_MS. */
        pthread_join(t->scanner, NULL);
        while ((j = list_first(&t->queued, struct workspace_scan, link))) {
                list_unlink(&j->link);
                scan_job_free(j);
        }
        while ((j = list_first(&t->done, struct workspace_scan, link))) {
                list_unlink(&j->link);
                scan_job_free(j);
        }
        loop_del_fd(t->loop, t->scan_efd);
        close(t->scan_efd);
        t->scan_efd = -1;
        t->scanner_running = false;
}

int workspace_scan(struct workspace *w, workspace_scan_fn fn, void *data, struct workspace_snapshot **now,
                   struct workspace_scan **out) {
        struct workspaces *t = w->owner;
        struct workspace_scan *j;
        long long inodes, bytes;
        int e;

        *now = NULL;
        *out = NULL;
        tmpfs_counts(w, &inodes, &bytes);
        /* Small (or not made yet): on the loop, at once; it costs no more
         * than a few syscalls. */
        if (w->root_fd < 0 || (inodes >= 0 && inodes <= SCAN_INLINE_INODES)) {
                *now = snapshot_with_counts(w, inodes, bytes);
                return *now ? 0 : -ENOMEM;
        }
        /* none mode has no inode count: try on the loop with the same small
         * bound, and go to the thread only when it was not enough. */
        if (inodes < 0) {
                struct workspace_snapshot *s = calloc(1, sizeof(*s));

                if (!s)
                        return -ENOMEM;
                s->generation = w->generation;
                s->max_entries = SCAN_INLINE_INODES;
                scan_into(w->root_fd, s);
                if (!s->cut) {
                        s->max_entries = 0;
                        *now = s;
                        return 0;
                }
                workspace_snapshot_free(s);
        }
        if ((e = scanner_start(t)) < 0)
                return e;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->owner = t;
        j->fn = fn;
        j->data = data;
        j->snap = calloc(1, sizeof(*j->snap));
        j->root_fd = fcntl(w->root_fd, F_DUPFD_CLOEXEC, 3);
        if (!j->snap || j->root_fd < 0) {
                e = j->root_fd < 0 ? -errno : -ENOMEM;
                scan_job_free(j);
                return e;
        }
        /* What the scan sees is the workspace as of now: a host-side change
         * made while it runs moves the generation past it. */
        j->snap->generation = w->generation;
        list_init(&j->link);
        pthread_mutex_lock(&t->lock);
        list_append(&t->queued, &j->link);
        j->queued = true;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
        *out = j;
        return -EINPROGRESS;
}

void workspace_scan_cancel(struct workspace_scan *j) {
        struct workspaces *t;

        if (!j)
                return;
        t = j->owner;
        pthread_mutex_lock(&t->lock);
        j->cancelled = true;
        /* Still queued: gone now.  Under way or done: the loop frees it
         * when it comes back, without calling back. */
        if (j->queued) {
                list_unlink(&j->link);
                pthread_mutex_unlock(&t->lock);
                scan_job_free(j);
                return;
        }
        pthread_mutex_unlock(&t->lock);
}
