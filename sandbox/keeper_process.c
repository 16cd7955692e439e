/* The keeper's own process (sandbox/keeper_process.h). */
#include "keeper_process.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "child.h"
#include "fdpass.h"
#include "jail_error.h"
#include "mounts.h"
#include "user_ns.h"

/* The keeper's descriptors. */
#define KEEPER_SOCK_FD 3
#define KEEPER_MNT_NS_FD 4
#define KEEPER_USER_NS_FD 5

/* Send one datagram with up to two descriptors (fds[i] < 0: none). */
static int send_line(int sock, const char *text, const int *fds, size_t nfds) {
        ssize_t n = fdpass_send(sock, text, strlen(text), fds, nfds, MSG_NOSIGNAL);

        return n < 0 ? (int)n : 0;
}

static void reply(int sock, const char *text, int fd) { send_line(sock, text, &fd, 1); }

/* "ok" with fd, which is then closed here (the daemon has its copy). */
static void reply_fd(int sock, int fd) {
        reply(sock, "ok", fd);
        close(fd);
}

static void reply_err(int sock, int err) {
        char line[32];

        snprintf(line, sizeof(line), "err %d", err < 0 ? -err : err);
        reply(sock, line, -1);
}

/* Is path (a directory in our root) a mount point of its own? */
static bool is_mount_point(const char *path) {
        struct stat st, root;

        return stat(path, &st) == 0 && stat("/", &root) == 0 && st.st_dev != root.st_dev;
}

/* "WORD ID" and nothing more; 0 or -EINVAL. */
static int parse_id(const char *line, const char *word, uint64_t *id) {
        size_t w = strlen(word);
        int n = 0;

        if (strncmp(line, word, w) != 0 || line[w] != ' ' || line[w + 1] < '0' || line[w + 1] > '9')
                return -EINVAL;
        if (sscanf(line + w + 1, "%" SCNu64 "%n", id, &n) != 1 || line[w + 1 + n] != '\0')
                return -EINVAL;
        return 0;
}

static int parse_create(const char *line, uint64_t *id, unsigned long long *bytes, unsigned *uid, unsigned *gid) {
        int n = 0;

        if (strncmp(line, "create ", 7) != 0 || line[7] < '0' || line[7] > '9')
                return -EINVAL;
        if (sscanf(line + 7, "%" SCNu64 " %llu %u %u%n", id, bytes, uid, gid, &n) != 4 || line[7 + n] != '\0')
                return -EINVAL;
        return 0;
}

/* Child, inside the keeper's namespaces, holding every capability there.
 * host_uid/host_gid: the daemon's ids; own_user_ns: they are the one id
 * mapped (as 0) in the keeper's user namespace. */
static void serve(int sock, bool own_user_ns, uid_t host_uid, gid_t host_gid) {
        for (;;) {
                char line[128], path[64];
                unsigned long long bytes;
                unsigned uid, gid;
                uint64_t id;
                ssize_t n = recv(sock, line, sizeof(line) - 1, 0);
                int fd;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        _exit(0); /* the daemon is gone */
                line[n] = '\0';
                if (parse_create(line, &id, &bytes, &uid, &gid) == 0) {
                        char opts[160];
                        unsigned long long inodes = tmpfs_inodes(bytes);

                        /* In a user namespace of our own the only host id
                         * that exists is the daemon's, as 0: the tmpfs
                         * options are read in our namespace. */
                        if (own_user_ns) {
                                if (uid != (unsigned)host_uid || gid != (unsigned)host_gid) {
                                        reply_err(sock, EINVAL);
                                        continue;
                                }
                                uid = gid = 0;
                        }
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        snprintf(opts, sizeof(opts), "mode=0755,uid=%u,gid=%u,size=%llu,nr_inodes=%llu", uid, gid,
                                 bytes, inodes);
                        /* IDs are never reused: an /ID that exists is this
                         * same request, sent again after a keeper died
                         * before answering it (mounted, or not yet). */
                        if ((mkdir(path, 0700) < 0 && errno != EEXIST) ||
                            (!is_mount_point(path) &&
                             mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)) {
                                reply_err(sock, errno);
                                rmdir(path);
                                continue;
                        }
                        fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (fd < 0) {
                                int e = errno;
                                /* The daemon will not ask to remove what it
                                 * never got. */
                                umount2(path, MNT_DETACH);
                                rmdir(path);
                                reply_err(sock, e);
                                continue;
                        }
                        reply_fd(sock, fd);
                } else if (parse_id(line, "clone", &id) == 0) {
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        fd = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
                        if (fd < 0) {
                                reply_err(sock, errno);
                                continue;
                        }
                        reply_fd(sock, fd);
                } else if (parse_id(line, "remove", &id) == 0) {
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        /* EINVAL, ENOENT: not mounted, or never made (a
                         * remove sent again to a replacement keeper after
                         * the first one did it; a create that failed). */
                        if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                                reply_err(sock, errno);
                        else if (rmdir(path) < 0 && errno != ENOENT)
                                reply_err(sock, errno);
                        else
                                reply(sock, "ok", -1);
                } else {
                        reply_err(sock, EINVAL);
                }
        }
}

/* Say why the keeper could not start ("fail WHY"), and end. */
static __attribute__((noreturn)) void keeper_fail(int sock, const char *why) {
        char line[320];

        snprintf(line, sizeof(line), "fail %s", why);
        reply(sock, line, -1);
        _exit(1);
}

#define STEP(what, call)                         \
        do {                                     \
                step = what;                     \
                errno = 0;                       \
                if ((call) < 0) {                \
                        e = errno ? errno : EIO; \
                        goto fail;               \
                }                                \
        } while (0)

/* The keeper, after keeper_process_main's set-up: build its namespaces
 * afresh (privilege change: unprivileged, every capability inside the new
 * user namespace and none outside; root keeps its own) and serve.  Never
 * returns. */
static __attribute__((noreturn)) void keeper_main_fresh(bool own_user_ns, uid_t uid, gid_t gid) {
        const int sock = KEEPER_SOCK_FD;
        char why[300];
        const char *step = "";
        int e = 0, ns[2] = {-1, -1};

        STEP(own_user_ns ? "unshare user and mount namespaces" : "unshare the mount namespace",
             unshare((own_user_ns ? CLONE_NEWUSER : 0) | CLONE_NEWNS));
        if (own_user_ns) {
                /* One id: 0 inside is the daemon's uid outside, so the tmpfs
                 * roots (uid=0,gid=0) belong to the daemon's user, which is
                 * also the workers' uid 1000 outside. */
                struct jail_error je = {why, sizeof(why)};

                if (user_ns_write_maps(0, 0, uid, gid, &je) < 0)
                        keeper_fail(sock, why);
        }
        /* The namespaces, for the daemon to keep: while it holds these the
         * mount namespace and its mounts outlive this process, and a
         * replacement can join them.  Opened now, while /proc is still
         * reachable. */
        STEP("open /proc/self/ns/mnt", ns[0] = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC));
        if (own_user_ns)
                STEP("open /proc/self/ns/user", ns[1] = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC));
        /* Nothing mounted here may propagate to the host.  Then a root of our
         * own: the host's mount table (the FUSE mount included: DESIGN §7,
         * a copy of it would make fusermount3 -u hang) is detached. */
        STEP("make / private", mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL));
        STEP("mount tmpfs on /tmp", mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                          "mode=0700,size=1m"));
        STEP("chdir /tmp", chdir("/tmp"));
        STEP("mkdir oldroot", mkdir("oldroot", 0700));
        STEP("pivot_root", syscall(SYS_pivot_root, ".", "oldroot"));
        STEP("chdir /", chdir("/"));
        STEP("unmount the host root", umount2("/oldroot", MNT_DETACH));
        STEP("rmdir /oldroot", rmdir("/oldroot"));
        STEP("send ready", send_line(sock, "ready", ns, 2) < 0 ? -1 : 0);
        close(ns[0]);
        if (ns[1] >= 0)
                close(ns[1]);
        serve(sock, own_user_ns, uid, gid);
        _exit(0);
fail:
        snprintf(why, sizeof(why), "%s: %s", step, strerror(e));
        keeper_fail(sock, why);
}

/* A replacement keeper, after keeper_process_main's set-up: join the
 * namespaces of the first keeper, which the daemon kept (privilege change:
 * unprivileged, setns into a user namespace our uid owns gives every
 * capability in it; that lets us join its mount namespace too), and find
 * every workspace still mounted at /ID.  Never returns. */
static __attribute__((noreturn)) void keeper_main_join(bool own_user_ns, uid_t uid, gid_t gid) {
        const int sock = KEEPER_SOCK_FD;
        char why[300];
        const char *step = "";
        int e = 0;

        if (own_user_ns)
                STEP("setns into the keeper's user namespace", setns(KEEPER_USER_NS_FD, CLONE_NEWUSER));
        /* setns(CLONE_NEWNS) also sets our root and working directory to
         * the namespace's root: the private tmpfs holding /ID. */
        STEP("setns into the keeper's mount namespace", setns(KEEPER_MNT_NS_FD, CLONE_NEWNS));
        STEP("chdir /", chdir("/"));
        close(KEEPER_MNT_NS_FD);
        if (own_user_ns)
                close(KEEPER_USER_NS_FD);
        STEP("send ready", send_line(sock, "ready", NULL, 0) < 0 ? -1 : 0);
        serve(sock, own_user_ns, uid, gid);
        _exit(0);
fail:
        snprintf(why, sizeof(why), "%s: %s", step, strerror(e));
        keeper_fail(sock, why);
}
#undef STEP

void keeper_process_main(int sock, int mnt_ns_fd, int user_ns_fd, bool own_user_ns, uid_t uid, gid_t gid,
                         pid_t daemon_pid) {
        /* The kept namespaces go to 4 and 5 (both, or only the mount one as
         * root, or none for a fresh keeper: user_ns_fd >= 0 only with
         * mnt_ns_fd >= 0). */
        const int fds[3] = {sock, mnt_ns_fd, user_ns_fd};
        const struct child_setup c = {.fds = fds, .n_fds = 1 + (mnt_ns_fd >= 0) + (user_ns_fd >= 0),
                                      .first_fd = KEEPER_SOCK_FD, .null_stdio = true, .new_session = true,
                                      .parent = daemon_pid};

        /* Not in the daemon's session: a Ctrl-C at its terminal must not
         * kill the owner of every workspace.  stderr stays: nothing writes
         * there but a dying glibc. */
        if (child_after_fork(&c) < 0)
                _exit(127);
        prctl(PR_SET_NAME, "srfs-keeper");
        if (mnt_ns_fd >= 0)
                keeper_main_join(own_user_ns, uid, gid);
        keeper_main_fresh(own_user_ns, uid, gid);
}
