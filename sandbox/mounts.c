/* The worker's file system view (sandbox/mounts.h; docs/sandbox.md walks
 * through it step by step). */
#include "mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macros.h"
#include "smallfile.h"
#include "user_ns.h"

#define DEFAULT_BYTES (64ULL << 20)

/* While the root is being built: the scratch tmpfs we first pivot into, the
 * old (host) root below it, and the new root that becomes "/". */
#define BASE_DIR "/tmp"
#define OLD_ROOT "/oldroot"
#define NEW_ROOT "/newroot"

/* ---- helpers ------------------------------------------------------------ */

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

/* ---- the steps ---------------------------------------------------------- */

int mounts_scratch_root(struct jail_error *e) {
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

int mounts_writable(unsigned long long tmp_bytes, unsigned long long work_bytes, int workspace_later,
                    struct jail_error *e) {
        const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
        int r;

        if (!tmp_bytes)
                tmp_bytes = DEFAULT_BYTES;
        if (!work_bytes)
                work_bytes = DEFAULT_BYTES;
        if ((r = mount_tmpfs(e, "/tmp", NEW_ROOT "/tmp", flags, "mode=1777,size=%llu,nr_inodes=%llu", tmp_bytes,
                             tmpfs_inodes(tmp_bytes))) < 0)
                return r;
        /* The session's workspace is attached here later
         * (mounts_attach_workspace): for now an empty mount point on the
         * read-only root. */
        if (workspace_later) {
                if (mkdir(NEW_ROOT "/work", 0755) < 0)
                        return jail_fail(e, -errno, "mkdir /work");
                return 0;
        }
        return mount_tmpfs(e, "/work", NEW_ROOT "/work", flags, "mode=0755,uid=%d,gid=%d,size=%llu,nr_inodes=%llu",
                           JAIL_UID, JAIL_GID, work_bytes, tmpfs_inodes(work_bytes));
}

int mounts_host_tree(const char *const *r_libs, size_t n_r_libs, struct jail_error *e) {
        static const char *const top_links[] = {"/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"};
        /* DESIGN §7: ldpaths and Renviron in /etc/R, BLAS and LAPACK through
         * /etc/alternatives.  /var/cache/fontconfig: without the system's
         * font cache every worker would rebuild it (slowly) at its first
         * plot. */
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
        for (size_t i = 0; i < n_r_libs; i++)
                if ((r = replicate_ro(e, r_libs[i], 1, 0)) < 0)
                        return r;
        return 0;
}

int mounts_etc(struct jail_error *e) {
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
                if ((r = small_file_write(AT_FDCWD, files[i].path, files[i].content, O_CREAT | O_EXCL, 0644)) < 0)
                        return jail_fail(e, r, "write %s", files[i].path + strlen(NEW_ROOT));
        return 0;
}

int mounts_proc(struct jail_error *e) {
        if (mkdir(NEW_ROOT "/proc", 0555) < 0)
                return jail_fail(e, -errno, "mkdir /proc");
        if (mount("proc", NEW_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                return jail_fail(e, -errno, "mount proc on /proc");
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
        /* Round 3: the host's kernel configuration, its devices and
         * consoles, its cgroup controllers, memory zones and fragmentation
         * (side channels of other workloads), hardware and crypto drivers,
         * and per-program CPU accounting of the whole host (program_cpu,
         * root's only, masked as well). */
        "config.gz", "devices", "consoles", "cgroups", "buddyinfo", "zoneinfo", "dma", "mtrr", "misc", "crypto",
        "program_cpu",
};
static const char *const proc_masked_dirs[] = {
        /* Docker's MaskedPaths */
        "asound", "acpi", "scsi",
        /* Docker's ReadonlyPaths that hold nothing for R, and host leaks */
        "bus", "irq", "fs", "driver", "tty", "pressure",
};

/* Each masked entry is covered with an empty, read-only file or directory:
 * reading gives nothing (or an empty listing), opening for writing EROFS.
 * The sources live in the scratch root, which goes away with the host root
 * in step 7; the mounts keep them alive. */
int mounts_proc_seal(struct jail_error *e) {
        static const char masks[] = "/masks", mask_file[] = "/masks/file", mask_dir[] = "/masks/dir";
        const unsigned long mask_flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
        char path[128];
        struct stat st;
        int r;

        /* The sources live on a tmpfs of their own, made read-only before
         * the binds: a bind takes its source mount's flags, so each mask is
         * read-only from the start and needs no remount of its own (two
         * mount calls fewer per entry, about 40 entries per worker). */
        if ((r = mount_tmpfs(e, masks, masks, MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555,size=4k")) < 0)
                return r;
        r = open(mask_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (r < 0)
                return jail_fail(e, -errno, "create %s", mask_file);
        close(r);
        if (mkdir(mask_dir, 0555) < 0)
                return jail_fail(e, -errno, "mkdir %s", mask_dir);
        if (mount(NULL, masks, NULL, MS_REMOUNT | MS_BIND | mask_flags, NULL) < 0)
                return jail_fail(e, -errno, "remount %s read-only", masks);
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
                }
        }
        return remount_bind(e, NEW_ROOT "/proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

/* mknod is not allowed in a user namespace: the nodes are bind mounts of
 * the host's.  A device node stays readable and writable on a read-only
 * mount (the data goes to the driver, not the file system), but its
 * metadata — mode, owner, times, even the touch-to-now that only needs
 * write permission — cannot change (EROFS). */
int mounts_dev(struct jail_error *e) {
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

int mounts_switch_root(struct jail_error *e) {
        if (umount2(OLD_ROOT, MNT_DETACH) < 0)
                return jail_fail(e, -errno, "unmount the host root (umount2 %s)", OLD_ROOT);
        if (rmdir(OLD_ROOT) < 0)
                return jail_fail(e, -errno, "rmdir %s", OLD_ROOT);
        if (chdir(NEW_ROOT) < 0)
                return jail_fail(e, -errno, "chdir %s", NEW_ROOT);
        /* The new root is moved over the scratch root and becomes ours with
         * chroot, instead of a second pivot_root: the kernel's pivot_root
         * walks every thread on the host (chroot_fs_refs) under a lock, so
         * its cost grows with the number of sessions (docs/performance.md).
         * What the move covers is the scratch tmpfs only (the mask sources
         * and empty directories; the host root is already detached above).
         * It is not reachable from the new root: ".." stops at the process
         * root, mountinfo skips mounts outside it, no descriptor of the
         * scratch root is open, and chroot, pivot_root, mount and setns are
         * refused by the filter once the capabilities that would allow
         * them are gone. */
        if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
                return jail_fail(e, -errno, "move the new root over the scratch root");
        if (chroot(".") < 0)
                return jail_fail(e, -errno, "chroot into the new root");
        if (chdir("/") < 0)
                return jail_fail(e, -errno, "chdir /");
        return remount_bind(e, "/", MS_RDONLY | MS_NOSUID | MS_NODEV);
}

int mounts_attach_workspace(int fd, struct jail_error *e) {
        if (move_mount(fd, "", AT_FDCWD, "/work", MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return jail_fail(e, -errno, "attach the workspace at /work (move_mount)");
        if (chdir("/work") < 0)
                return jail_fail(e, -errno, "chdir /work");
        return 0;
}
