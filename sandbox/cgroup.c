/* Per-worker cgroup v2 limits (see cgroup.h).  Everything is relative to a
 * directory fd of our own cgroup, with O_NOFOLLOW: cgroupfs is the kernel's,
 * but the path to it is found by parsing mountinfo. */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macros.h"
#include "smallfile.h"

/* One cgroup hierarchy we use: on a cgroup v2 host the unified one, for
 * both limits; on a v1 (or hybrid) host the v1 "memory" and "pids" ones. */
struct hierarchy {
        int dir_fd;             /* our securerfs-<pid> directory in it */
        char path[PATH_MAX];
        const char *memory_file; /* NULL: this hierarchy does not limit memory */
        const char *swap_file;
        const char *pids_file;
        const char *unlimited;  /* how "no limit" is written to memory_file */
        const char *oom_file;   /* where the kernel counts its OOM kills ("oom_kill N") */
        const char *usage_file; /* the bytes it holds */
};

struct cgroup_tree {
        struct hierarchy h[2];
        unsigned n;
        char dirs[2 * PATH_MAX + 2]; /* for cgroup_tree_dirs() */
        unsigned long long *busy;    /* worker cgroups whose rmdir found them busy, for cgroup_sweep() */
        size_t n_busy, busy_cap;
};

/* cgroupfs applies each write(2) as one request: a limit or a move is one
 * write, through common/smallfile.h. */
static int write_at(int dir_fd, const char *name, const char *text) {
        return small_file_write(dir_fd, name, text, 0, 0);
}

static bool has_controllers(int dir_fd, const char *file) {
        char buf[512], *tok, *save = NULL;
        bool memory = false, pids = false;

        if (small_file_read(dir_fd, file, buf, sizeof(buf)) < 0)
                return false;
        for (tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
                memory |= strcmp(tok, "memory") == 0;
                pids |= strcmp(tok, "pids") == 0;
        }
        return memory && pids;
}

/* The mount point of a cgroup hierarchy (fstype "cgroup2", or "cgroup" with
 * the v1 controller `option` among its super options) that shows the
 * hierarchy's root ("/"), from /proc/self/mountinfo: on a unified host
 * /sys/fs/cgroup, on a hybrid one /sys/fs/cgroup/unified and
 * /sys/fs/cgroup/<controller>. */
static int find_mount(const char *type, const char *option, char *out, size_t size) {
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096];
        int r = -ENOENT;

        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f)) {
                char root[PATH_MAX], point[PATH_MAX], fstype[64], opts[1024];
                char *sep = strstr(line, " - "), *tok, *save = NULL;
                bool found = !option;

                if (!sep || sscanf(sep + 3, "%63s %*s %1023s", fstype, opts) != 2 || strcmp(fstype, type) != 0)
                        continue;
                if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2 || strcmp(root, "/") != 0)
                        continue;
                for (tok = strtok_r(opts, ",", &save); tok && !found; tok = strtok_r(NULL, ",", &save))
                        found = strcmp(tok, option) == 0;
                /* Mount points with spaces come escaped (\040): not ours. */
                if (!found || strchr(point, '\\') || strlen(point) >= size)
                        continue;
                snprintf(out, size, "%s", point);
                r = 0;
                break;
        }
        fclose(f);
        return r;
}

static void hierarchy_close(struct hierarchy *h) {
        if (h->dir_fd < 0)
                return;
        /* Worker cgroups left (their processes are gone by now). */
        _cleanup_close_ int dup_fd = dup(h->dir_fd);
        DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
        struct dirent *de;

        if (d) {
                dup_fd = -1; /* owned by d now */
                while ((de = readdir(d)))
                        if (de->d_name[0] == 'w' && de->d_type == DT_DIR)
                                (void)unlinkat(h->dir_fd, de->d_name, AT_REMOVEDIR);
                closedir(d);
        }
        close(h->dir_fd);
        h->dir_fd = -1;
        rmdir(h->path);
}

/* Remove the empty directories a daemon killed with SIGKILL left behind
 * (securerfs-<pid> whose pid is gone, and its w<pid> children).  A
 * directory still holding processes refuses rmdir and stays. */
static void sweep_stale(const char *mnt) {
        DIR *d = opendir(mnt);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                char *end;
                long pid;

                if (strncmp(de->d_name, "securerfs-", 10) != 0 || de->d_type != DT_DIR)
                        continue;
                pid = strtol(de->d_name + 10, &end, 10);
                if (*end || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
                        continue;
                struct hierarchy stale = {.dir_fd = openat(dirfd(d), de->d_name,
                                                           O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)};
                snprintf(stale.path, sizeof(stale.path), "%s/%s", mnt, de->d_name);
                hierarchy_close(&stale);
        }
        closedir(d);
}

/* mkdir <mnt>/securerfs-<pid> and open it into h; 0 or -errno. */
static int hierarchy_open(struct hierarchy *h, const char *mnt) {
        sweep_stale(mnt);
        snprintf(h->path, sizeof(h->path), "%s/securerfs-%ld", mnt, (long)getpid());
        if (mkdir(h->path, 0755) < 0 && errno != EEXIST)
                return -errno;
        h->dir_fd = open(h->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (h->dir_fd < 0) {
                int e = -errno;
                rmdir(h->path);
                return e;
        }
        return 0;
}

/* cgroup v2: the unified hierarchy with memory and pids available. */
static int open_v2(struct cgroup_tree *t, char *reason, size_t size) {
        struct hierarchy *h = &t->h[0];
        char mnt[PATH_MAX];
        _cleanup_close_ int root_fd = -1;
        int r;

        if (find_mount("cgroup2", NULL, mnt, sizeof(mnt)) < 0) {
                snprintf(reason, size, "no cgroup v2 hierarchy is mounted");
                return -ENOENT;
        }
        root_fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0) {
                snprintf(reason, size, "open %s: %s", mnt, strerror(errno));
                return -ENOENT;
        }
        if (!has_controllers(root_fd, "cgroup.controllers")) {
                snprintf(reason, size, "the cgroup v2 hierarchy at %s lacks the memory and pids controllers", mnt);
                return -ENOENT;
        }
        /* The hierarchy's root may hold processes and still hand out
         * controllers; a delegated subtree (systemd's user@.service) is not
         * handled: its own cgroup holds our process. */
        if (!has_controllers(root_fd, "cgroup.subtree_control") &&
            (r = write_at(root_fd, "cgroup.subtree_control", "+memory +pids")) < 0) {
                snprintf(reason, size, "enable memory and pids in %s/cgroup.subtree_control: %s", mnt, strerror(-r));
                return r;
        }
        *h = (struct hierarchy){.dir_fd = -1, .memory_file = "memory.max", .swap_file = "memory.swap.max",
                                .pids_file = "pids.max", .unlimited = "max", .oom_file = "memory.events",
                                .usage_file = "memory.current"};
        if ((r = hierarchy_open(h, mnt)) < 0) {
                snprintf(reason, size, "mkdir %s: %s", h->path, strerror(-r));
                return r;
        }
        t->n = 1;
        if ((r = write_at(h->dir_fd, "cgroup.subtree_control", "+memory +pids")) < 0) {
                snprintf(reason, size, "enable memory and pids in %s: %s", h->path, strerror(-r));
                return r;
        }
        return 0;
}

/* cgroup v1 (a hybrid host, as Debian with systemd.unified_cgroup_hierarchy=0
 * or a container runtime gives): the "memory" and "pids" hierarchies. */
static int open_v1(struct cgroup_tree *t, char *reason, size_t size) {
        static const struct {
                const char *controller;
                struct hierarchy proto;
        } want[] = {
                {"memory", {.dir_fd = -1, .memory_file = "memory.limit_in_bytes",
                            .swap_file = "memory.memsw.limit_in_bytes", .unlimited = "-1",
                            .oom_file = "memory.oom_control", .usage_file = "memory.usage_in_bytes"}},
                {"pids", {.dir_fd = -1, .pids_file = "pids.max"}},
        };
        char mnt[PATH_MAX];
        int r;

        for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
                struct hierarchy *h = &t->h[t->n];

                if (find_mount("cgroup", want[i].controller, mnt, sizeof(mnt)) < 0) {
                        snprintf(reason, size, "no cgroup v1 %s hierarchy either", want[i].controller);
                        return -ENOENT;
                }
                *h = want[i].proto;
                if ((r = hierarchy_open(h, mnt)) < 0) {
                        snprintf(reason, size, "mkdir %s: %s", h->path, strerror(-r));
                        return r;
                }
                t->n++;
        }
        return 0;
}

int cgroup_tree_new(struct cgroup_tree **out, const char **why) {
        static char reason[2 * PATH_MAX + 64];
        char v2_reason[PATH_MAX + 128];
        struct cgroup_tree *t = calloc(1, sizeof(*t));

        if (!t)
                return -ENOMEM;
        t->h[0].dir_fd = t->h[1].dir_fd = -1;
        *out = t;
        *why = NULL;
        if (open_v2(t, v2_reason, sizeof(v2_reason)) == 0)
                goto enabled;
        for (unsigned i = 0; i < t->n; i++)
                hierarchy_close(&t->h[i]);
        t->n = 0;
        if (open_v1(t, reason, sizeof(reason)) == 0)
                goto enabled;
        for (unsigned i = 0; i < t->n; i++)
                hierarchy_close(&t->h[i]);
        t->n = 0;
        snprintf(reason + strlen(reason), sizeof(reason) - strlen(reason), "; %s", v2_reason);
        *why = reason;
        return 0;
enabled:
        for (unsigned i = 0; i < t->n; i++)
                snprintf(t->dirs + strlen(t->dirs), sizeof(t->dirs) - strlen(t->dirs), "%s%s", i ? ":" : "",
                         t->h[i].path);
        return 0;
}

static void limit_text(char *buf, size_t size, long long v, const char *unlimited) {
        if (v < 0)
                snprintf(buf, size, "%s", unlimited);
        else
                snprintf(buf, size, "%lld", v);
}

static int memory_held(int dir_fd, const struct hierarchy *h, unsigned long long *out) {
        char buf[64], *end;

        if (small_file_read(dir_fd, h->usage_file, buf, sizeof(buf)) < 0)
                return -EIO;
        errno = 0;
        *out = strtoull(buf, &end, 10);
        return errno || end == buf ? -EIO : 0;
}

int cgroup_worker_memory_held(struct cgroup_tree *t, unsigned long long id, unsigned long long *out) {
        char name[32];

        if (!t)
                return -ENOENT;
        snprintf(name, sizeof(name), "w%llu", id);
        for (unsigned i = 0; i < t->n; i++) {
                struct hierarchy *h = &t->h[i];
                _cleanup_close_ int fd = -1;

                if (!h->memory_file)
                        continue;
                fd = openat(h->dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        return -errno;
                return memory_held(fd, h, out);
        }
        return -ENOENT;
}

int cgroup_worker_prepare(struct cgroup_tree *t, unsigned long long id, long long memory_max, long long pids_max) {
        char name[32], value[32];
        int r;

        if (!t)
                return 0;
        snprintf(name, sizeof(name), "w%llu", id);
        for (unsigned i = 0; i < t->n; i++) {
                struct hierarchy *h = &t->h[i];
                _cleanup_close_ int fd = -1;

                if (mkdirat(h->dir_fd, name, 0755) < 0 && errno != EEXIST)
                        return -errno;
                fd = openat(h->dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        return -errno;
                if (h->memory_file) {
                        unsigned long long held;
                        /* Below what it holds, v1 refuses the limit (EBUSY)
                         * and v2 kills in the cgroup: both refused here. */
                        if (memory_max >= 0 && memory_held(fd, h, &held) == 0 && held > (unsigned long long)memory_max)
                                return -EBUSY;
                        limit_text(value, sizeof(value), memory_max, h->unlimited);
                        /* v1 refuses a memory limit above memsw (EINVAL) and
                         * memsw below the memory limit: raise memsw first
                         * when the limit grows, last when it shrinks. */
                        (void)write_at(fd, h->swap_file, memory_max < 0 ? h->unlimited : value);
                        if ((r = write_at(fd, h->memory_file, value)) < 0)
                                return r;
                        /* v2: memory.swap.max 0, so that memory.max does not
                         * just move the excess to swap; v1: memsw = limit. */
                        (void)write_at(fd, h->swap_file, !strcmp(h->swap_file, "memory.swap.max") ? "0" : value);
                }
                if (h->pids_file) {
                        limit_text(value, sizeof(value), pids_max, "max");
                        if ((r = write_at(fd, h->pids_file, value)) < 0)
                                return r;
                }
        }
        return 0;
}

/* rmdir w<id> in every hierarchy: 0, -EBUSY when a process is still in it
 * (killed through cgroup.kill on v2, Linux 5.14), or -errno. */
static int remove_dirs(struct cgroup_tree *t, unsigned long long id) {
        char name[32];
        int r = 0;

        snprintf(name, sizeof(name), "w%llu", id);
        for (unsigned i = 0; i < t->n; i++) {
                struct hierarchy *h = &t->h[i];
                char kill_file[64];

                if (unlinkat(h->dir_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
                        continue;
                if (errno != EBUSY) {
                        r = r ? r : -errno;
                        continue;
                }
                snprintf(kill_file, sizeof(kill_file), "%s/cgroup.kill", name);
                (void)write_at(h->dir_fd, kill_file, "1");
                r = -EBUSY;
        }
        return r;
}

int cgroup_worker_remove(struct cgroup_tree *t, unsigned long long id) {
        int r;

        if (!t)
                return 0;
        r = remove_dirs(t, id);
        if (r != -EBUSY)
                return r;
        /* Kept for cgroup_sweep(); without room, cgroup_tree_free() is the
         * directory's last chance. */
        if (t->n_busy == t->busy_cap) {
                size_t cap = t->busy_cap ? 2 * t->busy_cap : 8;
                unsigned long long *b = realloc(t->busy, cap * sizeof(*b));

                if (!b)
                        return r;
                t->busy = b;
                t->busy_cap = cap;
        }
        t->busy[t->n_busy++] = id;
        return r;
}

size_t cgroup_sweep(struct cgroup_tree *t) {
        size_t kept = 0;

        if (!t)
                return 0;
        for (size_t i = 0; i < t->n_busy; i++)
                if (remove_dirs(t, t->busy[i]) == -EBUSY)
                        t->busy[kept++] = t->busy[i];
        t->n_busy = kept;
        return kept;
}

int cgroup_worker_oom_open(struct cgroup_tree *t, unsigned long long id) {
        char name[64];

        if (!t)
                return -ENOENT;
        for (unsigned i = 0; i < t->n; i++) {
                struct hierarchy *h = &t->h[i];
                int fd;

                if (!h->oom_file)
                        continue;
                snprintf(name, sizeof(name), "w%llu/%s", id, h->oom_file);
                fd = openat(h->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                return fd < 0 ? -errno : fd;
        }
        return -ENOENT;
}

int cgroup_oom_kills(int fd, unsigned long long *out) {
        char buf[1024], *line;
        ssize_t n;

        /* A read at offset 0 of a cgroup file formats it anew. */
        do
                n = pread(fd, buf, sizeof(buf) - 1, 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        /* Both files are "key value" lines; the key is at a line's start. */
        for (line = buf; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
                if (strncmp(line, "oom_kill ", 9) == 0) {
                        *out = strtoull(line + 9, NULL, 10);
                        return 0;
                }
        return -ENOENT;
}

void cgroup_tree_free(struct cgroup_tree *t) {
        if (!t)
                return;
        for (unsigned i = 0; i < t->n; i++)
                hierarchy_close(&t->h[i]);
        free(t->busy);
        free(t);
}

const char *cgroup_tree_dirs(const struct cgroup_tree *t) {
        return t ? t->dirs : "";
}

int cgroup_join(const char *dirs, unsigned long long id, char *err, size_t errlen) {
        char path[PATH_MAX + 64];
        const char *p = dirs;

        while (p && *p) {
                const char *colon = strchr(p, ':');
                size_t n = colon ? (size_t)(colon - p) : strlen(p);
                int r;

                if (n >= PATH_MAX) {
                        snprintf(err, errlen, "join cgroup: path too long");
                        return -ENAMETOOLONG;
                }
                snprintf(path, sizeof(path), "%.*s/w%llu/cgroup.procs", (int)n, p, id);
                /* "0" is the writer itself, in cgroup v1 and v2 alike. */
                if ((r = write_at(AT_FDCWD, path, "0")) < 0) {
                        snprintf(err, errlen, "join cgroup %s: %s", path, strerror(-r));
                        return r;
                }
                p = colon ? colon + 1 : NULL;
        }
        return 0;
}
