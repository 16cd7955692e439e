/* The keeper (sandbox/keeper.h): a process in a user and mount namespace of
 * its own that mounts one size-capped tmpfs per workspace and hands out
 * descriptors to them.
 *
 * Control channel: a SOCK_SEQPACKET socketpair, one short ASCII datagram per
 * request and one per reply:
 *   create ID BYTES UID GID -> "ok" + SCM_RIGHTS(O_PATH root) | "err ERRNO"
 *   clone ID         -> "ok" + SCM_RIGHTS(detached mount) | "err ERRNO"
 *   remove ID        -> "ok" | "err ERRNO"
 * Workspace ID is mounted at /ID in the keeper's private root. */
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macros.h"

#define KEEPER_REPLY_TIMEOUT_MS 5000

struct keeper {
        pid_t pid;
        int fd; /* our end of the control socket */
};

/* ---- keeper side (child) -------------------------------------------------- */

static int keeper_write_file(const char *path, const char *text) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        size_t len = strlen(text);

        if (fd < 0)
                return -errno;
        if (write(fd, text, len) != (ssize_t)len)
                return -errno;
        return 0;
}

static void reply(int sock, const char *text, int fd) {
        union {
                struct cmsghdr align;
                char space[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

        if (fd >= 0) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                mh.msg_control = control.space;
                mh.msg_controllen = sizeof(control.space);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR)
                ;
}

static void reply_err(int sock, int err) {
        char line[32];

        snprintf(line, sizeof(line), "err %d", err < 0 ? -err : err);
        reply(sock, line, -1);
}

/* The ids a tmpfs root is owned by, as the keeper names them: a root keeper
 * is in the host's user namespace and names host ids; an unprivileged one
 * maps only the daemon's uid/gid, as its 0 (keeper_main).  0, or -EINVAL
 * for an id the keeper cannot name. */
struct keeper_ids {
        bool own_userns;
        uid_t outer_uid;
        gid_t outer_gid;
};

static int keeper_inner_ids(const struct keeper_ids *k, unsigned long long uid, unsigned long long gid,
                            unsigned *inner_uid, unsigned *inner_gid) {
        if (!k->own_userns) {
                if (uid >= UINT32_MAX || gid >= UINT32_MAX)
                        return -EINVAL;
                *inner_uid = (unsigned)uid;
                *inner_gid = (unsigned)gid;
                return 0;
        }
        if (uid != k->outer_uid || gid != k->outer_gid)
                return -EINVAL;
        *inner_uid = *inner_gid = 0;
        return 0;
}

/* Child, inside the keeper's namespaces, holding every capability there. */
static void serve(int sock, const struct keeper_ids *ids) {
        for (;;) {
                char line[128], path[64];
                unsigned long long bytes, uid, gid;
                unsigned inner_uid, inner_gid;
                int end = 0;
                uint64_t id;
                ssize_t n = recv(sock, line, sizeof(line) - 1, 0);
                int fd;

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        _exit(0); /* the daemon is gone */
                line[n] = '\0';
                if (sscanf(line, "create %" SCNu64 " %llu %llu %llu%n", &id, &bytes, &uid, &gid, &end) == 4 &&
                    line[end] == '\0') {
                        char opts[160];
                        unsigned long long inodes = bytes / 4096 > 1024 ? bytes / 4096 : 1024;

                        /* The root of the tmpfs belongs to the session's
                         * host id, the worker's uid 1000. */
                        if (keeper_inner_ids(ids, uid, gid, &inner_uid, &inner_gid) < 0) {
                                reply_err(sock, EINVAL);
                                continue;
                        }
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        snprintf(opts, sizeof(opts), "mode=0755,uid=%u,gid=%u,size=%llu,nr_inodes=%llu", inner_uid,
                                 inner_gid, bytes, inodes);
                        if (mkdir(path, 0700) < 0 ||
                            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0) {
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
                        reply(sock, "ok", fd);
                        close(fd);
                } else if (sscanf(line, "clone %" SCNu64, &id) == 1) {
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
                        if (fd < 0) {
                                reply_err(sock, errno);
                                continue;
                        }
                        reply(sock, "ok", fd);
                        close(fd);
                } else if (sscanf(line, "remove %" SCNu64, &id) == 1) {
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL)
                                reply_err(sock, errno);
                        else if (rmdir(path) < 0)
                                reply_err(sock, errno);
                        else
                                reply(sock, "ok", -1);
                } else {
                        reply_err(sock, EINVAL);
                }
        }
}

/* Child, right after fork: still the daemon's image, host namespaces.
 * Builds the keeper's namespaces (privilege change: every capability inside
 * the new user namespace, none outside) and never returns. */
static __attribute__((noreturn)) void keeper_main(int sock, pid_t daemon_pid, uid_t uid, gid_t gid) {
        const struct keeper_ids ids = {.own_userns = geteuid() != 0, .outer_uid = uid, .outer_gid = gid};
        sigset_t none;
        char map[64];
        int devnull, e = 0;
        const char *step = "";

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
                signal(sig, SIG_DFL);
        /* Not in the daemon's session: a Ctrl-C at its terminal must not kill
         * the owner of every workspace. */
        setsid();
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != daemon_pid)
                _exit(127);
        if (dup2(sock, 3) < 0)
                _exit(127);
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
                dup2(devnull, 0);
                dup2(devnull, 1);
        }
        close_range(4, ~0U, 0);
        sock = 3;

#define STEP(what, call)                          \
        do {                                      \
                step = what;                      \
                if ((call) < 0) {                 \
                        e = errno ? errno : EIO;  \
                        goto fail;                \
                }                                 \
        } while (0)
        errno = 0;
        if (ids.own_userns) {
                /* Unprivileged: a user namespace of our own gives the
                 * capabilities to mount.  One id: 0 inside is the daemon's
                 * uid outside, which is also the workers' uid 1000 outside,
                 * so the tmpfs roots (uid=0,gid=0) belong to it. */
                STEP("unshare user and mount namespaces", unshare(CLONE_NEWUSER | CLONE_NEWNS));
                STEP("write /proc/self/setgroups",
                     (errno = -keeper_write_file("/proc/self/setgroups", "deny")) ? -1 : 0);
                snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
                STEP("write /proc/self/uid_map", (errno = -keeper_write_file("/proc/self/uid_map", map)) ? -1 : 0);
                snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
                STEP("write /proc/self/gid_map", (errno = -keeper_write_file("/proc/self/gid_map", map)) ? -1 : 0);
        } else {
                /* Root: only a mount namespace.  The keeper stays in the
                 * host's user namespace so that it can own each tmpfs root
                 * by the session's host id (uid=ID: a user namespace of ours
                 * could name only the ids it maps). */
                STEP("unshare a mount namespace", unshare(CLONE_NEWNS));
        }
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
#undef STEP
        reply(sock, "ready", -1);
        serve(sock, &ids);
        _exit(0);
fail:;
        char line[256];
        snprintf(line, sizeof(line), "fail %s: %s", step, strerror(e));
        reply(sock, line, -1);
        _exit(1);
}

/* ---- daemon side ---------------------------------------------------------- */

/* Wait for one reply datagram and at most one descriptor.  Returns its
 * length or -errno; *fd is -1 when none came. */
static ssize_t keeper_recv(struct keeper *k, char *buf, size_t size, int *fd) {
        union {
                struct cmsghdr align;
                char space[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                            .msg_controllen = sizeof(control.space)};
        struct pollfd p = {.fd = k->fd, .events = POLLIN};
        ssize_t n;
        int r;

        *fd = -1;
        do
                r = poll(&p, 1, KEEPER_REPLY_TIMEOUT_MS);
        while (r < 0 && errno == EINTR);
        if (r < 0)
                return -errno;
        if (r == 0)
                return -ETIMEDOUT;
        do
                n = recvmsg(k->fd, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if (n == 0)
                return -EPIPE;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                    c->cmsg_len == CMSG_LEN(sizeof(int)) && *fd < 0)
                        memcpy(fd, CMSG_DATA(c), sizeof(int));
        buf[n] = '\0';
        return n;
}

/* One request, one reply: 0 with *fd (if want_fd), or -errno. */
static int keeper_call(struct keeper *k, const char *request, int *fd) {
        char line[256];
        int got = -1, err;
        ssize_t n;

        if (!k || k->fd < 0)
                return -EPIPE;
        if (send(k->fd, request, strlen(request), MSG_NOSIGNAL) < 0)
                return -errno;
        n = keeper_recv(k, line, sizeof(line), &got);
        if (n < 0) {
                /* A keeper that does not answer is broken: stop using it. */
                close(k->fd);
                k->fd = -1;
                return (int)n;
        }
        if (strcmp(line, "ok") == 0) {
                if (fd)
                        *fd = got;
                else if (got >= 0)
                        close(got);
                return fd && got < 0 ? -EPROTO : 0;
        }
        if (got >= 0)
                close(got);
        if (sscanf(line, "err %d", &err) == 1 && err > 0)
                return -err;
        return -EPROTO;
}

int keeper_new(struct keeper **out, char *err, size_t errlen) {
        _cleanup_free_ struct keeper *k = calloc(1, sizeof(*k));
        char line[256];
        int sv[2], fd;
        pid_t pid, self = getpid();
        uid_t uid = getuid();
        gid_t gid = getgid();
        ssize_t n;

        if (!k) {
                snprintf(err, errlen, "keeper: out of memory");
                return -ENOMEM;
        }
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                int e = errno;
                snprintf(err, errlen, "keeper: socketpair: %s", strerror(e));
                return -e;
        }
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                int e = errno;
                close(sv[0]);
                close(sv[1]);
                snprintf(err, errlen, "keeper: fork: %s", strerror(e));
                return -e;
        }
        if (pid == 0)
                keeper_main(sv[1], self, uid, gid); /* child: never returns */
        close(sv[1]);
        k->pid = pid;
        k->fd = sv[0];
        n = keeper_recv(k, line, sizeof(line), &fd);
        if (fd >= 0)
                close(fd);
        if (n < 0 || strcmp(line, "ready") != 0) {
                int e = n < 0 ? (int)-n : EPERM;
                if (n > 5 && strncmp(line, "fail ", 5) == 0)
                        snprintf(err, errlen, "keeper: %s", line + 5);
                else
                        snprintf(err, errlen, "keeper: %s", n < 0 ? strerror(e) : "unexpected reply");
                keeper_free(TAKE_PTR(k));
                return -e;
        }
        *out = TAKE_PTR(k);
        return 0;
}

void keeper_free(struct keeper *k) {
        if (!k)
                return;
        if (k->fd >= 0)
                close(k->fd);
        if (k->pid > 0) {
                kill(k->pid, SIGKILL);
                waitpid(k->pid, NULL, 0); /* ECHILD if the daemon reaped it already */
        }
        free(k);
}

pid_t keeper_pid(const struct keeper *k) { return k ? k->pid : 0; }

int keeper_create(struct keeper *k, uint64_t id, unsigned long long bytes, uid_t uid, gid_t gid, int *root_fd) {
        char req[128];

        snprintf(req, sizeof(req), "create %" PRIu64 " %llu %u %u", id, bytes, (unsigned)uid, (unsigned)gid);
        return keeper_call(k, req, root_fd);
}

int keeper_clone(struct keeper *k, uint64_t id, int *tree_fd) {
        char req[64];

        snprintf(req, sizeof(req), "clone %" PRIu64, id);
        return keeper_call(k, req, tree_fd);
}

void keeper_remove(struct keeper *k, uint64_t id) {
        char req[64];

        snprintf(req, sizeof(req), "remove %" PRIu64, id);
        keeper_call(k, req, NULL);
}
