/* The worker's jail.  docs/sandbox.md walks through it step by step; this
 * file is the only place that knows the order, so the order is written out
 * once, in jail_enter_strict(), as a flat sequence with a comment wherever
 * privilege changes.
 *
 * Two processes are involved:
 *   - the zygote (host namespaces, the daemon's uid) calls jail_clone();
 *   - the child calls jail_enter().  In strict mode it is pid 1 of a new pid
 *     namespace and holds every capability, but only inside its own new user
 *     namespace; jail_enter() spends them on building the root and then drops
 *     them all before it returns.
 *
 * Everything here returns 0 or -errno; the first failure writes
 * "<what was attempted>: <strerror>" into the caller's buffer. */
#include "jail.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

#include "macros.h"


/* The identity inside the jail (DESIGN §4, docs/protocol.md: HOME=/work,
 * USER=securerfs); mapped to the daemon's own uid/gid outside. */
#define JAIL_UID 1000
#define JAIL_GID 1000
#define JAIL_HOSTNAME "securerfs"
#define JAIL_DEFAULT_BYTES (64ULL << 20)

/* While the root is being built: the scratch tmpfs we first pivot into, the
 * old (host) root below it, and the new root that becomes "/". */
#define BASE_DIR "/tmp"
#define OLD_ROOT "/oldroot"
#define NEW_ROOT "/newroot"

/* Written by jail_clone() in the zygote before the clone, read by the child:
 * getppid() is 0 inside a fresh pid namespace. */
static pid_t jail_expected_parent;

static char jail_tmp[PATH_MAX];
static char jail_private[PATH_MAX]; /* none mode's directory */
/* Between jail_enter() and jail_attach_workspace(): the last capability to
 * drop. */
static int jail_last_cap;

struct jail_error {
        char *buf;
        size_t len;
};

/* Record "<step>: <strerror(-r)>" and hand r back, so a failing step reads
 * `return jail_fail(e, -errno, "mount proc on %s", path);`. */
static int jail_fail(struct jail_error *e, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int jail_fail(struct jail_error *e, int r, const char *fmt, ...) {
        va_list ap;
        int n;

        if (r >= 0)
                r = -EIO;
        if (!e->buf || e->len == 0)
                return r;
        va_start(ap, fmt);
        n = vsnprintf(e->buf, e->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < e->len)
                snprintf(e->buf + n, e->len - (size_t)n, ": %s", strerror(-r));
        return r;
}

/* ---- Zygote side ------------------------------------------------------- */

/* Write one line to /proc/<pid>/<name> (one write: the kernel parses
 * uid_map and gid_map per write(2) call). */
static int write_proc_of(pid_t pid, const char *name, const char *line) {
        char path[64];
        _cleanup_close_ int fd = -1;
        size_t len = strlen(line);
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid, name);
        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        n = write(fd, line, len);
        if (n < 0)
                return -errno;
        return (size_t)n == len ? 0 : -EIO;
}

/* Zygote side, right after the clone, while the child waits: map uid/gid
 * 1000 of the child's new user namespace to host_uid/host_gid and nothing
 * else.  Only a process with privilege over the child's namespace in its
 * parent namespace may map anything but its own id (user_namespaces(7);
 * DESIGN §7): the zygote, as root, for a session's own unprivileged id; an
 * unprivileged zygote only ever asks for its own uid/gid, which it may map
 * as the namespace's owner.  setgroups is denied first (required for an
 * unprivileged gid_map, and it keeps the worker from dropping a
 * supplementary group that guards a deny-ACL). */
static int map_child_ids(pid_t pid, uid_t host_uid, gid_t host_gid, char *err, size_t errlen) {
        char line[64];
        int r;

        r = write_proc_of(pid, "setgroups", "deny");
        if (r < 0 && r != -ENOENT) { /* ENOENT: kernel < 3.19, no such file */
                snprintf(err, errlen, "write /proc/%ld/setgroups: %s", (long)pid, strerror(-r));
                return r;
        }
        snprintf(line, sizeof(line), "%d %u 1", JAIL_UID, (unsigned)host_uid);
        if ((r = write_proc_of(pid, "uid_map", line)) < 0) {
                snprintf(err, errlen, "write /proc/%ld/uid_map (\"%s\"): %s", (long)pid, line, strerror(-r));
                return r;
        }
        snprintf(line, sizeof(line), "%d %u 1", JAIL_GID, (unsigned)host_gid);
        if ((r = write_proc_of(pid, "gid_map", line)) < 0) {
                snprintf(err, errlen, "write /proc/%ld/gid_map (\"%s\"): %s", (long)pid, line, strerror(-r));
                return r;
        }
        return 0;
}

pid_t jail_clone(const struct jail_options *o, uid_t host_uid, gid_t host_gid, char *err, size_t errlen) {
        unsigned long flags = CLONE_PARENT | SIGCHLD;
        int go[2] = {-1, -1};
        long pid;
        int r;

        if (o->mode == JAIL_STRICT) {
                flags |= CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                         CLONE_NEWCGROUP;
                /* The child waits on this until its ids are mapped: it is
                 * nobody (the overflow id) in its namespace until then. */
                if (pipe2(go, O_CLOEXEC) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "pipe2: %s", strerror(-r));
                        return r;
                }
        }
        jail_expected_parent = getppid();

        /* A raw clone with no new stack behaves like fork(): the child
         * continues on a copy-on-write copy of this stack.  glibc's fork()
         * cannot take flags, and clone() wants a separate stack; the caller
         * is single-threaded so skipping glibc's atfork handling is safe.
         * CLONE_PARENT: the child's parent is the zygote's parent, the
         * daemon, which reaps it and sees how it died. */
        for (;;) {
#if defined(__s390__) || defined(__CRIS__)
                pid = syscall(SYS_clone, NULL, flags, NULL, NULL, 0);
#else
                pid = syscall(SYS_clone, flags, NULL, NULL, NULL, 0);
#endif
                /* Cgroup namespaces (Linux 4.6) only hide the cgroup path;
                 * a kernel without them still gets the rest of the jail. */
                if (pid < 0 && errno == EINVAL && (flags & CLONE_NEWCGROUP)) {
                        flags &= ~(unsigned long)CLONE_NEWCGROUP;
                        continue;
                }
                break;
        }
        if (pid < 0) {
                r = -errno;
                snprintf(err, errlen, "%s", jail_clone_error(r));
                if (go[0] >= 0) {
                        close(go[0]);
                        close(go[1]);
                }
                return r;
        }
        if (pid == 0) {
                /* Child, in its new namespaces, every capability there,
                 * still the zygote's credentials (host root when the daemon
                 * is root): nothing but wait until the zygote has mapped
                 * our ids.  A zygote that died first gives end of file. */
                char c = 0;
                ssize_t n = 0;

                if (go[0] < 0)
                        return 0;
                close(go[1]);
                do
                        n = read(go[0], &c, 1);
                while (n < 0 && errno == EINTR);
                close(go[0]);
                if (n != 1 || c != 'm')
                        _exit(127);
                return 0;
        }
        /* Zygote. */
        if (go[0] < 0)
                return (pid_t)pid;
        close(go[0]);
        r = map_child_ids((pid_t)pid, host_uid, host_gid, err, errlen);
        if (r < 0) {
                /* It runs nothing before the go-ahead; the daemon reaps it. */
                kill((pid_t)pid, SIGKILL);
                close(go[1]);
                return r;
        }
        if (write(go[1], "m", 1) != 1) {
                r = -errno;
                snprintf(err, errlen, "release the child: %s", strerror(-r));
                kill((pid_t)pid, SIGKILL);
                close(go[1]);
                return r;
        }
        close(go[1]);
        return (pid_t)pid;
}

const char *jail_clone_error(int err) {
        static char msg[256];

        if (err < 0)
                err = -err;
        switch (err) {
        case EPERM:
        case ENOSPC:
        case EUSERS:
        case EINVAL:
                /* clone(2): EPERM if unprivileged user namespaces are
                 * disabled (Debian's kernel.unprivileged_userns_clone=0) or
                 * a seccomp filter refuses them, ENOSPC/EUSERS if
                 * user.max_user_namespaces (or the nesting limit) is
                 * reached, EINVAL if the kernel lacks a namespace type. */
                snprintf(msg, sizeof(msg),
                         "clone: user namespaces are not available "
                         "(kernel.unprivileged_userns_clone=0 or user.max_user_namespaces=0?): %s",
                         strerror(err));
                break;
        default:
                snprintf(msg, sizeof(msg), "clone: %s", strerror(err));
                break;
        }
        return msg;
}

/* ---- Small file-system helpers (child side) ---------------------------- */

static int write_file(const char *path, const char *content, int flags, mode_t mode) {
        _cleanup_close_ int fd = -1;
        size_t len = strlen(content);
        ssize_t n;

        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | flags, mode);
        if (fd < 0)
                return -errno;
        /* One write: the kernel parses uid_map/gid_map per write(2) call. */
        n = write(fd, content, len);
        if (n < 0)
                return -errno;
        if ((size_t)n != len)
                return -EIO;
        return 0;
}

static int read_small_file(const char *path, char *buf, size_t size) {
        _cleanup_close_ int fd = -1;
        ssize_t n;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return 0;
}

static int mkdir_p(const char *path, mode_t mode) {
        char buf[PATH_MAX];
        char *p;

        if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
                return -ENAMETOOLONG;
        for (p = buf + 1;; p++) {
                if (*p != '/' && *p != '\0')
                        continue;
                char saved = *p;
                *p = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = saved;
                if (saved == '\0')
                        return 0;
        }
}

static int path_join(char *buf, size_t size, const char *a, const char *b) {
        if (snprintf(buf, size, "%s%s", a, b) >= (int)size)
                return -ENAMETOOLONG;
        return 0;
}

/* The per-mount flags statvfs reports, as MS_* flags.  Inside a user
 * namespace the flags of mounts inherited from the host are locked
 * (MNT_LOCK_*): a remount that would clear nodev, nosuid, noexec, readonly
 * or change the atime mode is refused with EPERM, so every remount carries
 * them over. */
static unsigned long locked_mount_flags(const char *path, int *r) {
        struct statvfs st;
        unsigned long flags = 0;

        if (statvfs(path, &st) < 0) {
                *r = -errno;
                return 0;
        }
        *r = 0;
        if (st.f_flag & ST_NODEV)
                flags |= MS_NODEV;
        if (st.f_flag & ST_NOSUID)
                flags |= MS_NOSUID;
        if (st.f_flag & ST_NOEXEC)
                flags |= MS_NOEXEC;
        if (st.f_flag & ST_RDONLY)
                flags |= MS_RDONLY;
        if (st.f_flag & ST_NOATIME)
                flags |= MS_NOATIME;
        if (st.f_flag & ST_NODIRATIME)
                flags |= MS_NODIRATIME;
        if (st.f_flag & ST_RELATIME)
                flags |= MS_RELATIME;
        if (!(st.f_flag & (ST_NOATIME | ST_RELATIME)))
                flags |= MS_STRICTATIME;
        return flags;
}

/* Change the flags of the mount at path only (MS_BIND|MS_REMOUNT is a
 * per-mount, not per-superblock, change). */
static int remount_bind(struct jail_error *e, const char *path, unsigned long flags) {
        int r;
        unsigned long locked = locked_mount_flags(path, &r);

        if (r < 0)
                return jail_fail(e, r, "statvfs %s", path);
        if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | locked | flags, NULL) < 0)
                return jail_fail(e, -errno, "remount %s read-only", path);
        return 0;
}

/* Make host path `path` (seen as OLD_ROOT + path) appear at the same path in
 * the new root, read-only.  A symbolic link is recreated as one (so that the
 * merged-/usr links lib -> usr/lib stay links, as the ELF interpreter path
 * needs), unless follow is set.  The bind is deliberately NOT recursive:
 * whatever is mounted below path on the host (the FUSE mount, other
 * sessions' state, anything) does not come along.  optional: a missing path
 * is skipped rather than an error. */
static int replicate_ro(struct jail_error *e, const char *path, int follow, int optional) {
        char src[PATH_MAX], dst[PATH_MAX], target[PATH_MAX];
        struct stat st;
        int r;

        /* The paths come from the daemon's options, but a typo must not
         * bind the whole host root. */
        if (path[0] != '/')
                return jail_fail(e, -EINVAL, "bind mount %s: not an absolute path", path);
        if (strcmp(path, "/") == 0 || strstr(path, "/../") || strstr(path, "/./") ||
            (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0))
                return jail_fail(e, -EINVAL, "bind mount %s: not a normalised path below /", path);
        if ((r = path_join(src, sizeof(src), OLD_ROOT, path)) < 0 ||
            (r = path_join(dst, sizeof(dst), NEW_ROOT, path)) < 0)
                return jail_fail(e, r, "bind mount %s", path);

        if ((follow ? stat(src, &st) : lstat(src, &st)) < 0) {
                if (errno == ENOENT && optional)
                        return 0;
                return jail_fail(e, -errno, "bind mount %s: stat", path);
        }

        /* Create the mount point (or the link) with its parents. */
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", dst);
        *strrchr(parent, '/') = '\0';
        if ((r = mkdir_p(parent, 0755)) < 0)
                return jail_fail(e, r, "mkdir %s", parent);

        if (S_ISLNK(st.st_mode)) {
                ssize_t n = readlink(src, target, sizeof(target) - 1);
                if (n < 0)
                        return jail_fail(e, -errno, "readlink %s", path);
                target[n] = '\0';
                if (symlink(target, dst) < 0 && errno != EEXIST)
                        return jail_fail(e, -errno, "symlink %s -> %s", path, target);
                return 0;
        }
        if (S_ISDIR(st.st_mode)) {
                if (mkdir(dst, 0755) < 0 && errno != EEXIST)
                        return jail_fail(e, -errno, "mkdir %s", dst);
        } else {
                /* A file (ld.so.cache) or device node: bind it onto an
                 * empty regular file.  mknod is not allowed in a user
                 * namespace, and would be useless (SB_I_NODEV). */
                r = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (r < 0 && errno != EEXIST)
                        return jail_fail(e, -errno, "create mount point %s", dst);
                if (r >= 0)
                        close(r);
        }
        if (mount(src, dst, NULL, MS_BIND, NULL) < 0) {
                /* The kernel refuses a non-recursive bind of a directory with
                 * mounts below it in a user namespace (they are locked:
                 * leaving them out would reveal what they cover), and a
                 * recursive one would bring them, the FUSE mount perhaps,
                 * into the jail. */
                if (errno == EINVAL)
                        return jail_fail(e, -errno,
                                         "bind mount %s (is something mounted below it? a user namespace "
                                         "cannot leave such a mount out)",
                                         path);
                return jail_fail(e, -errno, "bind mount %s", path);
        }
        return remount_bind(e, dst, MS_RDONLY | MS_NOSUID | MS_NODEV);
}

static int mount_tmpfs(struct jail_error *e, const char *what, const char *path, unsigned long flags,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int mount_tmpfs(struct jail_error *e, const char *what, const char *path, unsigned long flags,
                       const char *fmt, ...) {
        char data[128];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(data, sizeof(data), fmt, ap);
        va_end(ap);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return jail_fail(e, -errno, "mkdir %s", path);
        if (mount("tmpfs", path, "tmpfs", flags, data) < 0)
                return jail_fail(e, -errno, "mount tmpfs on %s (%s)", what, data);
        return 0;
}

/* ---- Strict mode, step by step ----------------------------------------- */

/* Step 1: who we are.  The zygote has mapped uid/gid 1000 inside to the
 * session's host id outside (jail_clone), and nothing else: no other id,
 * root included, exists inside.  Our credentials are still the zygote's
 * (host root when the daemon is root, which shows here as the overflow id);
 * become 1000 so that the host's kernel sees the session's id in every
 * check from now on, and every file we make (the scratch root, /tmp) is the
 * session's.  Capabilities in our namespace stay: their loss on setuid
 * applies only when leaving uid 0 of the namespace, which is not mapped.
 * The supplementary groups were cleared by the zygote (setgroups is denied
 * here).  Changing ids made us non-dumpable, which would hand the files of
 * /proc/1 to host root, and cleared the parent-death signal: both are set
 * again. */
static int become_jail_user(struct jail_error *e) {
        if (setresgid(JAIL_GID, JAIL_GID, JAIL_GID) < 0)
                return jail_fail(e, -errno, "setresgid %d (is gid_map written?)", JAIL_GID);
        if (setresuid(JAIL_UID, JAIL_UID, JAIL_UID) < 0)
                return jail_fail(e, -errno, "setresuid %d (is uid_map written?)", JAIL_UID);
        if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
                return jail_fail(e, -errno, "prctl PR_SET_DUMPABLE");
        /* A change of credentials also cleared the parent-death signal. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                return jail_fail(e, -errno, "prctl PR_SET_PDEATHSIG");
        return 0;
}

/* Step 2: a scratch root.  Mount a tmpfs on BASE_DIR (in our mount namespace
 * only: the host never sees it) and pivot into it, the host root landing on
 * OLD_ROOT.  From here on every host path is reachable as OLD_ROOT + path
 * whatever BASE_DIR covered, and the new root is assembled at NEW_ROOT. */
static int enter_scratch_root(struct jail_error *e) {
        /* Nothing we mount may propagate back to the host's namespace, and
         * pivot_root refuses shared mounts. */
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return jail_fail(e, -errno, "make / private (mount --make-rprivate /)");
        if (mount("tmpfs", BASE_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
                return jail_fail(e, -errno, "mount tmpfs on %s", BASE_DIR);
        if (chdir(BASE_DIR) < 0)
                return jail_fail(e, -errno, "chdir %s", BASE_DIR);
        if (mkdir("." NEW_ROOT, 0755) < 0 || mkdir("." OLD_ROOT, 0755) < 0)
                return jail_fail(e, -errno, "mkdir in %s", BASE_DIR);
        /* The new root is a tmpfs of its own so that it can be remounted
         * read-only at the end without touching anything else. */
        if (mount("tmpfs", "." NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
                return jail_fail(e, -errno, "mount tmpfs for the new root");
        if (syscall(SYS_pivot_root, ".", "." OLD_ROOT) < 0)
                return jail_fail(e, -errno, "pivot_root into the scratch root");
        if (chdir("/") < 0)
                return jail_fail(e, -errno, "chdir /");
        return 0;
}

/* Step 4: the read-only view of the host: /usr, the merged-/usr links, the
 * bits of /etc R needs (DESIGN §7: ldpaths and Renviron in /etc/R, BLAS and
 * LAPACK through /etc/alternatives), R_HOME if it lives elsewhere, and the
 * configured R libraries. */
static int bind_host_tree(const struct jail_options *o, struct jail_error *e) {
        static const char *const top_links[] = {"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"};
        /* /var/cache/fontconfig: without the system's font cache every
         * worker would rebuild it (slowly) at its first plot. */
        static const char *const etc_paths[] = {"/etc/R",      "/etc/alternatives", "/etc/ld.so.cache",
                                                "/etc/fonts",  "/etc/localtime",    "/var/cache/fontconfig"};
        const char *r_home = getenv("R_HOME");
        int r;

        if ((r = replicate_ro(e, "/usr", 0, 0)) < 0)
                return r;
        /* On a merged-/usr host these are symlinks and are recreated as
         * such; on a split host they are directories and are bound. */
        for (size_t i = 0; i < ARRAY_SIZE(top_links); i++)
                if ((r = replicate_ro(e, top_links[i], 0, 1)) < 0)
                        return r;
        for (size_t i = 0; i < ARRAY_SIZE(etc_paths); i++)
                if ((r = replicate_ro(e, etc_paths[i], 0, 1)) < 0)
                        return r;
        if (r_home && r_home[0] == '/' && strncmp(r_home, "/usr/", 5) != 0)
                if ((r = replicate_ro(e, r_home, 1, 0)) < 0)
                        return r;
        for (size_t i = 0; i < o->n_r_libs; i++)
                if ((r = replicate_ro(e, o->r_libs[i], 1, 0)) < 0)
                        return r;
        return 0;
}

/* Step 5: the generated /etc: one user, one group, a fixed hostname, only
 * localhost.  Nothing about the host's users or network leaks in. */
static int write_etc(struct jail_error *e) {
        static const struct {
                const char *path, *content;
        } files[] = {
                {NEW_ROOT "/etc/passwd", "securerfs:x:1000:1000::/work:/usr/sbin/nologin\n"},
                {NEW_ROOT "/etc/group", "securerfs:x:1000:\n"},
                {NEW_ROOT "/etc/hostname", JAIL_HOSTNAME "\n"},
                {NEW_ROOT "/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"},
                {NEW_ROOT "/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"},
        };
        int r;

        if ((r = mkdir_p(NEW_ROOT "/etc", 0755)) < 0)
                return jail_fail(e, r, "mkdir /etc");
        for (size_t i = 0; i < ARRAY_SIZE(files); i++)
                if ((r = write_file(files[i].path, files[i].content, O_CREAT | O_EXCL, 0644)) < 0)
                        return jail_fail(e, r, "write %s", files[i].path + strlen(NEW_ROOT));
        return 0;
}

/* Step 6a: limits of the worker's own user namespace, written through its
 * fresh procfs while that is still writable (it becomes read-only below).
 * The user.* sysctls are per user namespace and inherited by any below it;
 * writing them needs CAP_SYS_RESOURCE in ours, which we still have.
 *   - max_user_namespaces = 0: no nested user namespace, in which an
 *     unprivileged process would hold every capability again (the usual
 *     door to namespace-reachable kernel bugs).  Required.
 *   - inotify and fanotify counts = 0: these kernel counters are charged up
 *     the chain of user namespaces to their owners, the daemon's uid (or
 *     root), which every session and the daemon's own user share; a second
 *     lock behind the filter, which refuses the calls (docs/security.md,
 *     "Per-user kernel counters").  Skipped on kernels without them. */
static int limit_user_namespace(struct jail_error *e) {
        static const struct {
                const char *name;
                bool required;
        } limits[] = {
                {"max_user_namespaces", true},   {"max_inotify_instances", false}, {"max_inotify_watches", false},
                {"max_fanotify_groups", false},  {"max_fanotify_marks", false},
        };
        char path[128];
        int r;

        for (size_t i = 0; i < ARRAY_SIZE(limits); i++) {
                snprintf(path, sizeof(path), NEW_ROOT "/proc/sys/user/%s", limits[i].name);
                r = write_file(path, "0", 0, 0);
                if (r < 0 && (limits[i].required || r != -ENOENT))
                        return jail_fail(e, r, "write /proc/sys/user/%s", limits[i].name);
        }
        return 0;
}

/* What of the jail's procfs is covered, and why (docs/security.md, "/proc
 * and /dev").  Docker's default MaskedPaths are the floor (kcore, keys,
 * latency_stats, timer_list, timer_stats, sched_debug, interrupts, and the
 * directories asound, acpi, scsi); its ReadonlyPaths (bus, fs, irq, sys,
 * sysrq-trigger) are read-only here with the rest of /proc, and the first
 * three are hidden too.  The others leak the host (its disks, file locks,
 * kernel command line, key quotas of every host user) or give timing
 * signals of other workloads (interrupt counts, pressure).  A name this
 * kernel lacks is skipped. */
static const char *const proc_masked_files[] = {
        /* Docker's MaskedPaths */
        "kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "interrupts",
        /* host leaks and side channels */
        "key-users", "kallsyms", "kmsg", "softirqs", "iomem", "ioports", "partitions", "diskstats", "swaps", "locks",
        "cmdline", "sysrq-trigger", "vmallocinfo", "slabinfo", "pagetypeinfo", "kpagecount", "kpageflags",
        "kpagecgroup",
};
static const char *const proc_masked_dirs[] = {
        /* Docker's MaskedPaths */
        "asound", "acpi", "scsi",
        /* Docker's ReadonlyPaths that hold nothing for R, and host leaks */
        "bus", "irq", "fs", "driver", "tty", "pressure",
};

/* Cover each masked entry with an empty, read-only file or directory:
 * reading gives nothing (or an empty listing), opening for writing EROFS.
 * The sources live in the scratch root, which goes away with the host root
 * in step 7; the mounts keep them alive. */
static int mask_proc(struct jail_error *e) {
        static const char mask_file[] = "/mask-file", mask_dir[] = "/mask-dir";
        char path[128];
        struct stat st;
        int r;

        r = open(mask_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (r < 0)
                return jail_fail(e, -errno, "create %s", mask_file);
        close(r);
        if (mkdir(mask_dir, 0555) < 0)
                return jail_fail(e, -errno, "mkdir %s", mask_dir);
        for (int dirs = 0; dirs < 2; dirs++) {
                const char *const *names = dirs ? proc_masked_dirs : proc_masked_files;
                size_t n = dirs ? ARRAY_SIZE(proc_masked_dirs) : ARRAY_SIZE(proc_masked_files);

                for (size_t i = 0; i < n; i++) {
                        snprintf(path, sizeof(path), NEW_ROOT "/proc/%s", names[i]);
                        if (lstat(path, &st) < 0) {
                                if (errno == ENOENT)
                                        continue;
                                return jail_fail(e, -errno, "stat /proc/%s", names[i]);
                        }
                        /* The kernel decides the kind, not our list. */
                        if (mount(S_ISDIR(st.st_mode) ? mask_dir : mask_file, path, NULL, MS_BIND, NULL) < 0)
                                return jail_fail(e, -errno, "mask /proc/%s", names[i]);
                        if ((r = remount_bind(e, path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)) < 0)
                                return r;
                }
        }
        return 0;
}

/* Step 6: the kernel's file systems.  A fresh procfs shows only this pid
 * namespace (the worker is pid 1).  It must be mounted while the host's
 * /proc is still in our namespace: the kernel allows procfs in a user
 * namespace only if an unobstructed procfs is already visible there
 * (mnt_already_visible()).  Once our namespace limits are written through
 * it, the host-facing entries are masked and the whole mount becomes
 * read-only: no file of /proc opens for writing (/proc/self/mem, /proc/sys,
 * /proc/self/attr: EROFS), whoever owns it.
 *
 * /dev is a small tmpfs holding bind mounts of the few harmless character
 * devices (mknod is not allowed in a user namespace), each remounted
 * read-only: a device node stays readable and writable on a read-only
 * mount (writes go to the driver, not the file system), but its metadata —
 * mode, owner, times, even the touch-to-now that only needs write
 * permission — cannot change (EROFS): the host's /dev/null is the same
 * inode. */
static int mount_proc_and_dev(struct jail_error *e) {
        static const char *const devices[] = {"null", "zero", "full", "random", "urandom"};
        static const struct {
                const char *target, *path;
        } links[] = {
                {"/proc/self/fd", NEW_ROOT "/dev/fd"},
                {"/proc/self/fd/0", NEW_ROOT "/dev/stdin"},
                {"/proc/self/fd/1", NEW_ROOT "/dev/stdout"},
                {"/proc/self/fd/2", NEW_ROOT "/dev/stderr"},
        };
        char src[64], dst[64];
        int r;

        if (mkdir(NEW_ROOT "/proc", 0555) < 0)
                return jail_fail(e, -errno, "mkdir /proc");
        if (mount("proc", NEW_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                return jail_fail(e, -errno, "mount proc on /proc");
        if ((r = limit_user_namespace(e)) < 0 || (r = mask_proc(e)) < 0 ||
            (r = remount_bind(e, NEW_ROOT "/proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)) < 0)
                return r;

        if ((r = mount_tmpfs(e, "/dev", NEW_ROOT "/dev", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")) < 0)
                return r;
        for (size_t i = 0; i < ARRAY_SIZE(devices); i++) {
                snprintf(src, sizeof(src), OLD_ROOT "/dev/%s", devices[i]);
                snprintf(dst, sizeof(dst), NEW_ROOT "/dev/%s", devices[i]);
                r = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
                if (r < 0)
                        return jail_fail(e, -errno, "create /dev/%s", devices[i]);
                close(r);
                if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
                        return jail_fail(e, -errno, "bind mount /dev/%s", devices[i]);
                if ((r = remount_bind(e, dst, MS_RDONLY | MS_NOSUID | MS_NOEXEC)) < 0)
                        return r;
        }
        for (size_t i = 0; i < ARRAY_SIZE(links); i++)
                if (symlink(links[i].target, links[i].path) < 0)
                        return jail_fail(e, -errno, "symlink %s", links[i].path + strlen(NEW_ROOT));
        return remount_bind(e, NEW_ROOT "/dev", MS_RDONLY | MS_NOSUID | MS_NOEXEC);
}

static unsigned long long jail_inodes(unsigned long long bytes) {
        return bytes / 4096 > 1024 ? bytes / 4096 : 1024;
}

/* Step 3: the only writable places, both private tmpfs with a size cap and
 * no exec/suid/devices: /tmp (R's temporary directory) and /work (HOME and
 * the working directory), owned by the jail's user. */
static int mount_scratch_dirs(const struct jail_options *o, struct jail_error *e) {
        unsigned long long tmp_bytes = o->tmp_bytes ? o->tmp_bytes : JAIL_DEFAULT_BYTES;
        unsigned long long work_bytes = o->work_bytes ? o->work_bytes : JAIL_DEFAULT_BYTES;
        const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
        int r;

        /* nr_inodes: without it a tmpfs allows half of RAM's pages in
         * inodes, and empty files cost kernel memory that size= does not
         * count.  One inode per 4 KiB page of the cap, at least 1024. */
        if ((r = mount_tmpfs(e, "/tmp", NEW_ROOT "/tmp", flags, "mode=1777,size=%llu,nr_inodes=%llu", tmp_bytes,
                             jail_inodes(tmp_bytes))) < 0)
                return r;
        /* The session's workspace is attached here later
         * (jail_attach_workspace): for now an empty mount point on the
         * read-only root. */
        if (o->workspace_later) {
                if (mkdir(NEW_ROOT "/work", 0755) < 0)
                        return jail_fail(e, -errno, "mkdir /work");
                return 0;
        }
        return mount_tmpfs(e, "/work", NEW_ROOT "/work", flags, "mode=0755,uid=%d,gid=%d,size=%llu,nr_inodes=%llu",
                           JAIL_UID, JAIL_GID, work_bytes, jail_inodes(work_bytes));
}

/* Step 7: make the new root "/" and drop the host's mount table entirely.
 * DESIGN §7: a namespace that still holds a copy of the FUSE mount makes
 * `fusermount3 -u` hang, so the old root is detached (MNT_DETACH takes the
 * whole tree with it), and then the scratch root too, through the
 * pivot_root(".", ".") idiom: the old root ends up stacked on the new one and
 * is unmounted from under us. */
static int switch_root(struct jail_error *e) {
        if (umount2(OLD_ROOT, MNT_DETACH) < 0)
                return jail_fail(e, -errno, "unmount the host root (umount2 %s)", OLD_ROOT);
        if (rmdir(OLD_ROOT) < 0)
                return jail_fail(e, -errno, "rmdir %s", OLD_ROOT);
        if (chdir(NEW_ROOT) < 0)
                return jail_fail(e, -errno, "chdir %s", NEW_ROOT);
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return jail_fail(e, -errno, "pivot_root into the new root");
        if (umount2(".", MNT_DETACH) < 0)
                return jail_fail(e, -errno, "unmount the scratch root");
        if (chdir("/") < 0)
                return jail_fail(e, -errno, "chdir /");
        /* The root itself becomes read-only; /tmp, /work, /proc and the
         * device nodes are separate mounts and keep their own flags. */
        return remount_bind(e, "/", MS_RDONLY | MS_NOSUID | MS_NODEV);
}

static int read_cap_last_cap(struct jail_error *e, int *last_cap) {
        char buf[32];
        int r = read_small_file("/proc/sys/kernel/cap_last_cap", buf, sizeof(buf));

        if (r < 0)
                return jail_fail(e, r, "read /proc/sys/kernel/cap_last_cap");
        *last_cap = atoi(buf);
        if (*last_cap <= 0 || *last_cap > 255)
                return jail_fail(e, -EINVAL, "read /proc/sys/kernel/cap_last_cap (\"%s\")", buf);
        return 0;
}

/* Step 9: give up every capability (they were only ever valid inside our
 * own user namespace, but they are what allowed the mounts above, and would
 * allow undoing them).  The bounding set first (PR_CAPBSET_DROP needs
 * CAP_SETPCAP, which goes last with capset), then the ambient set, then
 * effective/permitted/inheritable through the raw capset(2) with
 * _LINUX_CAPABILITY_VERSION_3 (no libcap).  Finally no_new_privs: no execve
 * (should one ever be allowed) can gain privileges through setuid bits or
 * file capabilities. */
static int drop_privileges(struct jail_error *e, int last_cap) {
        struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
        struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

        for (int cap = 0; cap <= last_cap; cap++)
                if (prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0 && errno != EINVAL)
                        return jail_fail(e, -errno, "prctl PR_CAPBSET_DROP %d", cap);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return jail_fail(e, -errno, "prctl PR_CAP_AMBIENT_CLEAR_ALL");
        memset(data, 0, sizeof(data));
        if (syscall(SYS_capset, &header, data) < 0)
                return jail_fail(e, -errno, "capset (drop all capabilities)");
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                return jail_fail(e, -errno, "prctl PR_SET_NO_NEW_PRIVS");
        return 0;
}

/* Child, pid 1 of new user/pid/mount/net/ipc/uts namespaces, holding every
 * capability inside its user namespace and none outside. */
static int jail_enter_strict(const struct jail_options *o, struct jail_error *e) {
        int last_cap = 0, r;

        if ((r = read_cap_last_cap(e, &last_cap)) < 0)
                return r;

        /* Privilege change: from here on we are uid/gid 1000, known to the
         * host as the session's id (still all capabilities in the ns). */
        if ((r = become_jail_user(e)) < 0)
                return r;

        /* /tmp and /work before the host's directories, so that an R
         * library that happens to live below /tmp is bound on top of the
         * private /tmp rather than hidden by it. */
        if ((r = enter_scratch_root(e)) < 0 || (r = mount_scratch_dirs(o, e)) < 0 || (r = bind_host_tree(o, e)) < 0 ||
            (r = write_etc(e)) < 0 || (r = mount_proc_and_dev(e)) < 0)
                return r;

        /* Privilege change: the host's file system becomes unreachable. */
        if ((r = switch_root(e)) < 0)
                return r;

        /* Step 8: the rest of the jail's identity, still with capabilities. */
        if (sethostname(JAIL_HOSTNAME, strlen(JAIL_HOSTNAME)) < 0)
                return jail_fail(e, -errno, "sethostname %s", JAIL_HOSTNAME);
        /* (user.max_user_namespaces = 0 was written in step 6.) */
        snprintf(jail_tmp, sizeof(jail_tmp), "/tmp/R");
        if (mkdir(jail_tmp, 0700) < 0 && errno != EEXIST)
                return jail_fail(e, -errno, "mkdir %s", jail_tmp);
        if (o->workspace_later) {
                /* Capabilities are kept (inside our namespace) until the
                 * workspace is attached; no user code runs before that. */
                jail_last_cap = last_cap;
                return 0;
        }
        if (chdir("/work") < 0)
                return jail_fail(e, -errno, "chdir /work");

        /* Privilege change: every capability and the means to regain any
         * are gone; from here on the process is an ordinary uid 1000. */
        return drop_privileges(e, last_cap);
}

/* Child, host namespaces, the daemon's uid: only a private directory. */
static int jail_enter_none(struct jail_error *e) {
        const char *base = getenv("TMPDIR");
        char dir[PATH_MAX];

        /* The one check the pid namespace denies strict mode: if the daemon
         * died between clone and PR_SET_PDEATHSIG we were reparented. */
        if (getppid() != jail_expected_parent)
                return jail_fail(e, -ESRCH, "parent exited before prctl PR_SET_PDEATHSIG");
        if (!base || base[0] != '/')
                base = "/tmp";
        /* The pid in the name lets the daemon find the directory of a
         * worker that was killed before it could remove it. */
        if (snprintf(dir, sizeof(dir), "%s/securerfs-w%ld-XXXXXX", base, (long)getpid()) >= (int)sizeof(dir))
                return jail_fail(e, -ENAMETOOLONG, "mkdtemp in %s", base);
        if (!mkdtemp(dir))
                return jail_fail(e, -errno, "mkdtemp %s", dir);
        snprintf(jail_private, sizeof(jail_private), "%s", dir);
        if (chdir(dir) < 0)
                return jail_fail(e, -errno, "chdir %s", dir);
        if (snprintf(jail_tmp, sizeof(jail_tmp), "%s/R", dir) >= (int)sizeof(jail_tmp))
                return jail_fail(e, -ENAMETOOLONG, "mkdir %s/R", dir);
        if (mkdir(jail_tmp, 0700) < 0)
                return jail_fail(e, -errno, "mkdir %s", jail_tmp);
        return 0;
}

int jail_enter(const struct jail_options *o, char *err, size_t errlen) {
        struct jail_error e = {err, errlen};

        /* First, so that a daemon killed with SIGKILL leaves no worker
         * behind.  There is a small race: if the daemon dies between the
         * clone and this call, the signal never comes.  None mode checks
         * getppid() afterwards; in strict mode getppid() is 0 (the parent
         * is outside the new pid namespace), and the worker instead sees
         * EOF on its socket to the daemon and exits. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                return jail_fail(&e, -errno, "prctl PR_SET_PDEATHSIG");
        if (o->mode == JAIL_NONE)
                return jail_enter_none(&e);
        return jail_enter_strict(o, &e);
}

int jail_attach_workspace(const struct jail_options *o, int fd, char *err, size_t errlen) {
        struct jail_error e = {err, errlen};

        if (o->mode == JAIL_NONE) {
                if (fchdir(fd) < 0)
                        return jail_fail(&e, -errno, "fchdir into the workspace");
                return 0;
        }
        /* Child, inside its namespaces, still privileged there: attach the
         * detached copy of the workspace's tmpfs as /work.  It keeps the
         * keeper's nosuid,nodev,noexec. */
        if (move_mount(fd, "", AT_FDCWD, "/work", MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return jail_fail(&e, -errno, "attach the workspace at /work (move_mount)");
        if (chdir("/work") < 0)
                return jail_fail(&e, -errno, "chdir /work");
        /* Privilege change: every capability and the means to regain any
         * are gone; from here on the process is an ordinary uid 1000. */
        return drop_privileges(&e, jail_last_cap);
}

const char *jail_tmpdir(void) {
        return jail_tmp;
}

const char *jail_private_dir(void) {
        return jail_private;
}
