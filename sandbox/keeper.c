/* The keeper (sandbox/keeper.h): a process in a mount namespace of its own
 * (unprivileged: and a user namespace) that mounts one size-capped tmpfs per
 * workspace and hands out descriptors to them.
 *
 * Control channel: a SOCK_SEQPACKET socketpair, one short ASCII datagram per
 * request and one per reply, answered strictly in order (so the daemon
 * matches each reply to the oldest request in flight):
 *   create ID BYTES UID GID -> "ok" + SCM_RIGHTS(O_PATH root) | "err ERRNO"
 *   clone ID                -> "ok" + SCM_RIGHTS(detached mount) | "err ERRNO"
 *   remove ID               -> "ok" | "err ERRNO"
 * and once at start "ready" (a fresh keeper: with SCM_RIGHTS of its nsfs
 * descriptors, mount namespace first, then user namespace if it has one) or
 * "fail STEP: REASON".  Workspace ID is mounted at /ID in the keeper's
 * private root. */
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/nsfs.h>

#include "backoff.h"
#include "log.h"
#include "loop.h"
#include "macros.h"

#define MS(x) ((uint64_t)(x) * 1000000ULL)
/* A request its keeper did not answer because it died goes to the
 * replacement, up to this many keepers in all: a keeper killed by accident
 * (or by the out-of-memory killer) costs the caller a restart's delay, not a
 * failure.  Every request is idempotent (create of an ID that is mounted
 * already answers that mount).  A keeper killed for missing a deadline is
 * different: the caller has waited the deadline already, and the request
 * may be what stalls a keeper; its requests fail (-ETIMEDOUT).  A remove
 * that still fails leaves its mount until the daemon exits. */
#define REQUEST_TRIES 2
#define REMOVE_TRIES 3

/* fds of a keeper process. */
#define KEEPER_SOCK_FD 3
#define KEEPER_MNT_NS_FD 4
#define KEEPER_USER_NS_FD 5

enum keeper_state { KEEPER_DOWN, KEEPER_STARTING, KEEPER_READY };

struct keeper_request {
        uint64_t token;
        char line[128];
        bool sent;
        bool is_remove;       /* no answer wanted */
        unsigned tries;
        uint64_t deadline_ns; /* queued: since it was made; sent: since it was sent */
        keeper_done_fn fn;    /* NULL once cancelled */
        void *data;
        struct keeper_request *next;
};

struct keeper {
        struct loop *loop;
        bool own_user_ns; /* unprivileged: a user namespace mapping 0 to our uid */
        uid_t uid;        /* the daemon's */
        gid_t gid;
        enum keeper_state state;
        pid_t pid;        /* 0 when none runs (or it was reaped) */
        int fd;           /* our end of its control socket, -1 when none */
        int mnt_ns_fd;    /* the namespaces of the first keeper, -1 until it is ready */
        int user_ns_fd;
        struct keeper_request *requests; /* in order: the sent ones first */
        uint64_t next_token;
        struct loop_timer *deadline_timer; /* the earliest deadline, start or request */
        struct loop_timer *restart_timer;
        uint64_t start_ns;
        uint64_t ready_ns;
        struct backoff backoff;
        unsigned long long restarts;
        bool became_ready;  /* this process said "ready" */
        bool missed_deadline; /* we killed it for missing one */
        bool broken;        /* the last start said "fail": until one is ready, requests fail at once */
        bool start_failed;  /* this process said "fail" */
        char kill_reason[256]; /* why we killed it: for the log line at its reaping */
        char last_error[512];
};

/* ---- keeper side (the child) ---------------------------------------------- */

static int write_file(const char *path, const char *text) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        size_t len = strlen(text);

        if (fd < 0)
                return -errno;
        if (write(fd, text, len) != (ssize_t)len)
                return -errno;
        return 0;
}

/* Send one datagram with up to two descriptors (fds[i] < 0: none). */
static int send_line(int sock, const char *text, const int *fds, size_t nfds) {
        union {
                struct cmsghdr align;
                char space[CMSG_SPACE(2 * sizeof(int))];
        } control;
        struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        int n = 0, list[2];

        for (size_t i = 0; i < nfds && i < 2; i++)
                if (fds[i] >= 0)
                        list[n++] = fds[i];
        if (n > 0) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                mh.msg_control = control.space;
                mh.msg_controllen = CMSG_SPACE((size_t)n * sizeof(int));
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
                memcpy(CMSG_DATA(c), list, (size_t)n * sizeof(int));
        }
        while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static void reply(int sock, const char *text, int fd) { send_line(sock, text, &fd, 1); }

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
                        unsigned long long inodes = bytes / 4096 > 1024 ? bytes / 4096 : 1024;

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
                        reply(sock, "ok", fd);
                        close(fd);
                } else if (parse_id(line, "clone", &id) == 0) {
                        snprintf(path, sizeof(path), "/%" PRIu64, id);
                        fd = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
                        if (fd < 0) {
                                reply_err(sock, errno);
                                continue;
                        }
                        reply(sock, "ok", fd);
                        close(fd);
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

/* Child, right after fork: still the daemon's image (single-threaded, so
 * any call is safe), host namespaces, the daemon's privileges.  Makes the
 * process the keeper's and leaves it with its socket on fd 3 and, for a
 * replacement, the namespaces to join on fds 4 and 5. */
static void keeper_child_setup(int sock, int mnt_ns_fd, int user_ns_fd, pid_t daemon_pid) {
        sigset_t none;
        int devnull, s, m = -1, u = -1;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
                signal(sig, SIG_DFL);
        /* Not in the daemon's session: a Ctrl-C at its terminal must not kill
         * the owner of every workspace. */
        setsid();
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != daemon_pid)
                _exit(127);
        prctl(PR_SET_NAME, "srfs-keeper");
        /* Out of the way of 3..5 first: any of them may be where they go. */
        s = fcntl(sock, F_DUPFD_CLOEXEC, 16);
        if (mnt_ns_fd >= 0)
                m = fcntl(mnt_ns_fd, F_DUPFD_CLOEXEC, 16);
        if (user_ns_fd >= 0)
                u = fcntl(user_ns_fd, F_DUPFD_CLOEXEC, 16);
        if (s < 0 || (mnt_ns_fd >= 0 && m < 0) || (user_ns_fd >= 0 && u < 0) || dup2(s, KEEPER_SOCK_FD) < 0 ||
            (m >= 0 && dup2(m, KEEPER_MNT_NS_FD) < 0) || (u >= 0 && dup2(u, KEEPER_USER_NS_FD) < 0))
                _exit(127);
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
                dup2(devnull, 0);
                dup2(devnull, 1);
        }
        /* stderr stays: nothing writes there but a dying glibc. */
        close_range(u >= 0 ? KEEPER_USER_NS_FD + 1 : m >= 0 ? KEEPER_MNT_NS_FD + 1 : KEEPER_SOCK_FD + 1, ~0U, 0);
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

/* Child (after keeper_child_setup): build the keeper's namespaces afresh
 * (privilege change: unprivileged, every capability inside the new user
 * namespace and none outside; root keeps its own) and serve.  Never
 * returns. */
static __attribute__((noreturn)) void keeper_main_fresh(bool own_user_ns, uid_t uid, gid_t gid) {
        const int sock = KEEPER_SOCK_FD;
        char map[64], line[300];
        const char *step = "";
        int e = 0, ns[2] = {-1, -1};

        STEP(own_user_ns ? "unshare user and mount namespaces" : "unshare the mount namespace",
             unshare((own_user_ns ? CLONE_NEWUSER : 0) | CLONE_NEWNS));
        if (own_user_ns) {
                /* One id: 0 inside is the daemon's uid outside, so the tmpfs
                 * roots (uid=0,gid=0) belong to the daemon's user, which is
                 * also the workers' uid 1000 outside. */
                STEP("write /proc/self/setgroups", (errno = -write_file("/proc/self/setgroups", "deny")) ? -1 : 0);
                snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
                STEP("write /proc/self/uid_map", (errno = -write_file("/proc/self/uid_map", map)) ? -1 : 0);
                snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
                STEP("write /proc/self/gid_map", (errno = -write_file("/proc/self/gid_map", map)) ? -1 : 0);
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
        snprintf(line, sizeof(line), "fail %s: %s", step, strerror(e));
        reply(sock, line, -1);
        _exit(1);
}

/* Child (after keeper_child_setup): a replacement.  Joins the namespaces of
 * the first keeper, which the daemon kept (privilege change: unprivileged,
 * setns into a user namespace our uid owns gives every capability in it;
 * that lets us join its mount namespace too), and finds every workspace
 * still mounted at /ID.  Never returns. */
static __attribute__((noreturn)) void keeper_main_join(bool own_user_ns, uid_t uid, gid_t gid) {
        const int sock = KEEPER_SOCK_FD;
        char line[300];
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
        snprintf(line, sizeof(line), "fail %s: %s", step, strerror(e));
        reply(sock, line, -1);
        _exit(1);
}
#undef STEP

/* ---- daemon side ---------------------------------------------------------- */

static void keeper_start(struct keeper *k);
static void arm_deadline(struct keeper *k);

static void request_unlink(struct keeper *k, struct keeper_request *r) {
        for (struct keeper_request **pp = &k->requests; *pp; pp = &(*pp)->next)
                if (*pp == r) {
                        *pp = r->next;
                        r->next = NULL;
                        return;
                }
}

/* Take r out and answer it.  fd is consumed either way.  The callback may
 * make or cancel requests: r is no longer on the list when it runs. */
static void request_finish(struct keeper *k, struct keeper_request *r, int err, int fd, const char *why) {
        request_unlink(k, r);
        if (r->fn)
                r->fn(r->data, err, fd, why);
        else if (fd >= 0)
                close(fd);
        free(r);
}

/* Fail every request matching (sent or queued) with err and why; with
 * retry, those that have tries left are queued again for the next keeper
 * instead (removes always; others only when the keeper was not killed for
 * missing a deadline).  Callbacks can add requests meanwhile: the failing
 * ones are taken off the list first.  The list keeps its order: the sent
 * requests stay a prefix of it, which the in-order answers rely on. */
static void fail_requests(struct keeper *k, bool sent, bool retry, int err, const char *why) {
        struct keeper_request *failing = NULL, **tail = &failing, **pp = &k->requests;
        uint64_t now = now_ns();

        while (*pp) {
                struct keeper_request *r = *pp;

                if (r->sent != sent) {
                        pp = &r->next;
                        continue;
                }
                /* Removes go again whatever killed the keeper: no caller
                 * waits for them. */
                if (retry && (r->is_remove || !k->missed_deadline) &&
                    ++r->tries < (r->is_remove ? REMOVE_TRIES : REQUEST_TRIES)) {
                        r->sent = false;
                        r->deadline_ns = now + MS(KEEPER_QUEUE_TIMEOUT_MS);
                        pp = &r->next;
                        continue;
                }
                *pp = r->next;
                r->next = NULL;
                *tail = r;
                tail = &r->next;
        }
        while (failing) {
                struct keeper_request *r = failing;

                failing = r->next;
                if (r->fn)
                        r->fn(r->data, err, -1, why);
                free(r);
        }
}

static void close_channel(struct keeper *k) {
        if (k->fd < 0)
                return;
        loop_del_fd(k->loop, k->fd);
        close(k->fd);
        k->fd = -1;
}

/* Kill the keeper on purpose; its reaping logs why and replaces it. */
static void keeper_kill(struct keeper *k, const char *why) {
        if (!k->kill_reason[0])
                snprintf(k->kill_reason, sizeof(k->kill_reason), "%s", why);
        log_warn("keeper (pid %d): %s; killing it", (int)k->pid, why);
        close_channel(k);
        if (k->pid > 0)
                kill(k->pid, SIGKILL);
        k->state = KEEPER_DOWN;
}

/* Send what is queued, in order, while the socket takes it. */
static void flush_requests(struct keeper *k) {
        uint64_t now = now_ns();

        if (k->state != KEEPER_READY || k->fd < 0)
                return;
        for (struct keeper_request *r = k->requests; r; r = r->next) {
                if (r->sent)
                        continue;
                if (send(k->fd, r->line, strlen(r->line), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                        if (errno == EAGAIN) {
                                /* A keeper that far behind is about to miss
                                 * the oldest deadline; wait for room. */
                                loop_mod_fd(k->loop, k->fd, EPOLLIN | EPOLLOUT);
                                break;
                        }
                        if (errno == EPIPE || errno == ECONNRESET) {
                                /* It died: its reaping says how.  This
                                 * request was not sent. */
                                close_channel(k);
                                if (k->pid > 0)
                                        kill(k->pid, SIGKILL);
                                k->state = KEEPER_DOWN;
                                return;
                        }
                        keeper_kill(k, "its control socket failed");
                        return;
                }
                r->sent = true;
                r->deadline_ns = now + MS(KEEPER_REQUEST_TIMEOUT_MS);
        }
        arm_deadline(k);
}

/* Receive one datagram and up to two descriptors.  Returns its length, 0
 * at end of file, or -errno (-EAGAIN: nothing yet). */
static ssize_t recv_line(int fd, char *buf, size_t size, int *fds, size_t *nfds) {
        union {
                struct cmsghdr align;
                char space[CMSG_SPACE(4 * sizeof(int))];
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                            .msg_controllen = sizeof(control.space)};
        ssize_t n;

        *nfds = 0;
        do
                n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int one;

                        memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (*nfds < 2)
                                fds[(*nfds)++] = one;
                        else
                                close(one);
                }
        }
        buf[n] = '\0';
        if (n > 0 && ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || memchr(buf, '\0', (size_t)n))) {
                for (size_t i = 0; i < *nfds; i++)
                        close(fds[i]);
                *nfds = 0;
                return -EBADMSG;
        }
        return n;
}

static bool is_ns(int fd, int type) { return fd >= 0 && ioctl(fd, NS_GET_NSTYPE) == type; }

/* The keeper said "ready" (with fds: a fresh one's namespaces). */
static void on_ready(struct keeper *k, int *fds, size_t nfds) {
        if (k->mnt_ns_fd < 0) {
                /* The first keeper: keep its namespaces, checked to be what
                 * they claim (nsfs descriptors of the right types). */
                if (nfds != (k->own_user_ns ? 2u : 1u) || !is_ns(fds[0], CLONE_NEWNS) ||
                    (k->own_user_ns && !is_ns(fds[1], CLONE_NEWUSER))) {
                        for (size_t i = 0; i < nfds; i++)
                                close(fds[i]);
                        keeper_kill(k, "its ready message did not carry its namespaces");
                        return;
                }
                k->mnt_ns_fd = fds[0];
                k->user_ns_fd = k->own_user_ns ? fds[1] : -1;
        } else {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
        }
        k->state = KEEPER_READY;
        k->became_ready = true;
        k->broken = false;
        k->ready_ns = now_ns();
        if (k->restarts)
                log_info("keeper (pid %d) ready%s", (int)k->pid,
                         k->restarts ? ": the workspaces are reachable again" : "");
        flush_requests(k);
}

static void on_answer(struct keeper *k, const char *line, int *fds, size_t nfds) {
        struct keeper_request *r = k->requests;
        char why[160];
        int err, n = 0;

        if (!r || !r->sent) {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
                keeper_kill(k, "it answered a request it was not sent");
                return;
        }
        if (strcmp(line, "ok") == 0 && nfds <= 1) {
                int fd = nfds ? fds[0] : -1;
                bool wants_fd = !r->is_remove;

                if (wants_fd && fd < 0) {
                        keeper_kill(k, "it answered ok without a descriptor");
                        return;
                }
                if (!wants_fd && fd >= 0) {
                        close(fd);
                        fd = -1;
                }
                request_finish(k, r, 0, fd, NULL);
        } else if (sscanf(line, "err %d%n", &err, &n) == 1 && line[n] == '\0' && err > 0 && err < 4096 &&
                   nfds == 0) {
                snprintf(why, sizeof(why), "%s", strerror(err));
                if (r->is_remove)
                        log_warn("keeper: %s: %s", r->line, why);
                request_finish(k, r, -err, -1, why);
        } else {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
                snprintf(why, sizeof(why), "unexpected answer \"%.40s\"", line);
                keeper_kill(k, why);
                return;
        }
        arm_deadline(k);
}

static void on_keeper_io(int fd, uint32_t events, void *data) {
        struct keeper *k = data;

        if (events & EPOLLOUT) {
                loop_mod_fd(k->loop, k->fd, EPOLLIN);
                flush_requests(k);
                if (k->fd < 0)
                        return;
        }
        /* A few datagrams per wake-up, then back to the loop. */
        for (int i = 0; i < 64 && k->fd >= 0; i++) {
                char line[320];
                int fds[2];
                size_t nfds;
                ssize_t n = recv_line(k->fd, line, sizeof(line), fds, &nfds);

                if (n == -EAGAIN)
                        return;
                if (n == 0 || n == -ECONNRESET) {
                        /* End of file (a reset: it died with our requests
                         * unread): it is dying, killed from outside most
                         * likely.  Its reaping says how; make sure it does
                         * die. */
                        close_channel(k);
                        if (k->pid > 0)
                                kill(k->pid, SIGKILL);
                        k->state = KEEPER_DOWN;
                        return;
                }
                if (n < 0) {
                        keeper_kill(k, n == -EBADMSG ? "it sent a malformed message" : "its control socket failed");
                        return;
                }
                if (k->state == KEEPER_STARTING) {
                        if (strcmp(line, "ready") == 0) {
                                on_ready(k, fds, nfds);
                        } else if (strncmp(line, "fail ", 5) == 0) {
                                for (size_t j = 0; j < nfds; j++)
                                        close(fds[j]);
                                /* Logged once per distinct reason: a kernel
                                 * that refuses the namespaces refuses them
                                 * at every retry. */
                                if (strcmp(k->last_error + (strncmp(k->last_error, "keeper: ", 8) ? 0 : 8),
                                           line + 5) != 0)
                                        log_error("keeper: %s", line + 5);
                                snprintf(k->last_error, sizeof(k->last_error), "keeper: %s", line + 5);
                                k->start_failed = true;
                                k->broken = true;
                                /* What waits for it cannot be done by any
                                 * keeper until this is fixed. */
                                fail_requests(k, false, false, -EPERM, k->last_error);
                                close_channel(k);
                                k->state = KEEPER_DOWN;
                                return; /* it exits; its reaping schedules the next try */
                        } else {
                                for (size_t j = 0; j < nfds; j++)
                                        close(fds[j]);
                                keeper_kill(k, "unexpected message while starting");
                        }
                        continue;
                }
                on_answer(k, line, fds, nfds);
        }
}

/* The earliest deadline: the keeper's start, the oldest request sent, or a
 * queued one's. */
static void arm_deadline(struct keeper *k) {
        uint64_t due = 0;

        if (k->state == KEEPER_STARTING)
                due = k->start_ns + MS(KEEPER_START_TIMEOUT_MS);
        /* Sent requests count only while their keeper is there to miss
         * them: once it is killed they wait for its reaping, which fails
         * them (a past deadline re-armed would fire forever). */
        for (struct keeper_request *r = k->requests; r; r = r->next)
                if (!r->is_remove && (!r->sent || k->state == KEEPER_READY) && (!due || r->deadline_ns < due))
                        due = r->deadline_ns;
        loop_timer_arm(k->deadline_timer, due);
}

static void on_deadline(void *data) {
        struct keeper *k = data;
        uint64_t now = now_ns();
        char why[300];

        if (k->state == KEEPER_STARTING && now >= k->start_ns + MS(KEEPER_START_TIMEOUT_MS)) {
                snprintf(why, sizeof(why), "it did not become ready within %d ms", KEEPER_START_TIMEOUT_MS);
                keeper_kill(k, why);
                k->missed_deadline = true;
        }
        for (struct keeper_request *r = k->requests; r; r = r->next)
                if (r->sent && !r->is_remove && now >= r->deadline_ns && k->state == KEEPER_READY) {
                        snprintf(why, sizeof(why), "it did not answer \"%s\" within %d ms", r->line,
                                 KEEPER_REQUEST_TIMEOUT_MS);
                        keeper_kill(k, why);
                        k->missed_deadline = true;
                        break;
                }
        /* Queued ones whose time is up fail alone: no keeper was there to
         * miss them. */
        for (;;) {
                struct keeper_request *r = k->requests;

                while (r && (r->sent || r->is_remove || now < r->deadline_ns))
                        r = r->next;
                if (!r)
                        break;
                if (k->broken) {
                        /* The namespaces cannot be built: say so now, not
                         * after a deadline, as for a jail that cannot be. */
                        request_finish(k, r, -EPERM, -1, k->last_error);
                        continue;
                }
                snprintf(why, sizeof(why), "no keeper came up within %d ms (%s)", KEEPER_QUEUE_TIMEOUT_MS,
                         k->last_error[0] ? k->last_error : "it is being started");
                request_finish(k, r, -ETIMEDOUT, -1, why);
        }
        arm_deadline(k);
}

static void on_restart_timer(void *data) {
        struct keeper *k = data;

        k->restarts++;
        keeper_start(k);
}

/* The loop reaped the keeper (common/loop.h: a child-exit watch). */
static void on_keeper_exit(pid_t pid, int status, const struct rusage *ru, void *data) {
        keeper_child_exited(data, pid, status);
}

/* Fork a keeper: a fresh one the first time, later one that joins the
 * namespaces we kept.  Failures to fork are retried with back-off. */
static void keeper_start(struct keeper *k) {
        int sv[2];
        pid_t pid, self = getpid();

        k->kill_reason[0] = '\0';
        k->became_ready = k->start_failed = k->missed_deadline = false;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                snprintf(k->last_error, sizeof(k->last_error), "keeper: socketpair: %s", strerror(errno));
                log_warn("%s", k->last_error);
                loop_timer_arm(k->restart_timer, now_ns() + backoff_next(&k->backoff, false, 0));
                return;
        }
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                snprintf(k->last_error, sizeof(k->last_error), "keeper: fork: %s", strerror(errno));
                log_warn("%s", k->last_error);
                close(sv[0]);
                close(sv[1]);
                loop_timer_arm(k->restart_timer, now_ns() + backoff_next(&k->backoff, false, 0));
                return;
        }
        if (pid == 0) {
                /* Child: still the daemon's image and privileges. */
                keeper_child_setup(sv[1], k->mnt_ns_fd, k->user_ns_fd, self);
                if (k->mnt_ns_fd >= 0)
                        keeper_main_join(k->own_user_ns, k->uid, k->gid);
                keeper_main_fresh(k->own_user_ns, k->uid, k->gid);
        }
        close(sv[1]);
        k->pid = pid;
        if (loop_watch_child(k->loop, pid, on_keeper_exit, k) < 0)
                log_error("keeper: out of memory watching its exit");
        k->fd = sv[0];
        k->state = KEEPER_STARTING;
        k->start_ns = now_ns();
        if (loop_add_fd(k->loop, k->fd, EPOLLIN, on_keeper_io, k) < 0)
                keeper_kill(k, "its control socket could not be watched");
        arm_deadline(k);
}

bool keeper_child_exited(struct keeper *k, pid_t pid, int status) {
        char how[128], why[512];
        bool was_ready;
        uint64_t now = now_ns(), delay;

        if (!k || pid != k->pid || pid <= 0)
                return false;
        was_ready = k->became_ready;
        close_channel(k);
        k->pid = 0;
        k->state = KEEPER_DOWN;
        if (WIFSIGNALED(status))
                snprintf(how, sizeof(how), "was killed by signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
        else
                snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
        snprintf(why, sizeof(why), "the keeper (pid %d) %s%s%s", (int)pid, how, k->kill_reason[0] ? ": " : "",
                 k->kill_reason);
        delay = backoff_next(&k->backoff, was_ready, now - k->ready_ns);
        /* A keeper that could not build its namespaces said why already. */
        if (!k->start_failed) {
                log_warn("%s; restarting it%s", why, delay ? " after a pause" : "");
                snprintf(k->last_error, sizeof(k->last_error), "%s", why);
        }
        /* What it had not answered goes to the next keeper (or fails now
         * when it went to enough keepers already), unless it was killed for
         * missing a deadline. */
        snprintf(why + strlen(why), sizeof(why) - strlen(why), "; it is being restarted");
        fail_requests(k, true, true, k->missed_deadline ? -ETIMEDOUT : -EAGAIN, why);
        loop_timer_arm(k->restart_timer, now + delay);
        arm_deadline(k);
        return true;
}

int keeper_new(struct loop *l, struct keeper **out) {
        struct keeper *k = calloc(1, sizeof(*k));

        if (!k)
                return -ENOMEM;
        k->loop = l;
        k->uid = getuid();
        k->gid = getgid();
        /* Root mounts in a mount namespace of its own, with no user
         * namespace, so that each workspace may belong to any host id; any
         * other user needs a user namespace to mount at all. */
        k->own_user_ns = geteuid() != 0;
        k->fd = k->mnt_ns_fd = k->user_ns_fd = -1;
        k->next_token = 1;
        k->deadline_timer = loop_timer_new(l, on_deadline, k);
        k->restart_timer = loop_timer_new(l, on_restart_timer, k);
        if (!k->deadline_timer || !k->restart_timer) {
                keeper_free(k);
                return -ENOMEM;
        }
        keeper_start(k);
        *out = k;
        return 0;
}

void keeper_free(struct keeper *k) {
        if (!k)
                return;
        close_channel(k);
        if (k->pid > 0) {
                kill(k->pid, SIGKILL);
                waitpid(k->pid, NULL, 0); /* ECHILD if the daemon reaped it already */
        }
        while (k->requests) {
                struct keeper_request *r = k->requests;
                k->requests = r->next;
                free(r);
        }
        loop_timer_free(k->deadline_timer);
        loop_timer_free(k->restart_timer);
        if (k->mnt_ns_fd >= 0)
                close(k->mnt_ns_fd);
        if (k->user_ns_fd >= 0)
                close(k->user_ns_fd);
        free(k);
}

pid_t keeper_pid(const struct keeper *k) { return k ? k->pid : 0; }

unsigned long long keeper_restarts(const struct keeper *k) { return k ? k->restarts : 0; }

const char *keeper_last_error(const struct keeper *k) { return k && k->last_error[0] ? k->last_error : NULL; }

static uint64_t request_add(struct keeper *k, const char *line, bool is_remove, keeper_done_fn fn, void *data) {
        struct keeper_request *r = calloc(1, sizeof(*r)), **pp;

        if (!r)
                return 0;
        snprintf(r->line, sizeof(r->line), "%s", line);
        r->token = k->next_token++;
        r->is_remove = is_remove;
        r->fn = fn;
        r->data = data;
        /* While no keeper can be built, a request fails at the next turn
         * of the loop (never from inside this call). */
        r->deadline_ns = now_ns() + (k->broken && !is_remove ? 0 : MS(KEEPER_QUEUE_TIMEOUT_MS));
        for (pp = &k->requests; *pp; pp = &(*pp)->next)
                ;
        *pp = r;
        flush_requests(k);
        arm_deadline(k);
        return r->token;
}

uint64_t keeper_create(struct keeper *k, uint64_t id, unsigned long long bytes, uid_t uid, gid_t gid,
                       keeper_done_fn fn, void *data) {
        char line[128];

        snprintf(line, sizeof(line), "create %" PRIu64 " %llu %u %u", id, bytes, (unsigned)uid, (unsigned)gid);
        return request_add(k, line, false, fn, data);
}

uint64_t keeper_clone(struct keeper *k, uint64_t id, keeper_done_fn fn, void *data) {
        char line[64];

        snprintf(line, sizeof(line), "clone %" PRIu64, id);
        return request_add(k, line, false, fn, data);
}

void keeper_remove(struct keeper *k, uint64_t id) {
        char line[64];

        snprintf(line, sizeof(line), "remove %" PRIu64, id);
        request_add(k, line, true, NULL, NULL);
}

void keeper_cancel(struct keeper *k, uint64_t token) {
        for (struct keeper_request *r = k->requests; r; r = r->next)
                if (r->token == token) {
                        r->fn = NULL;
                        /* One not yet sent goes now; a sent one stays until
                         * its answer, which keeps the order of answers. */
                        if (!r->sent) {
                                request_unlink(k, r);
                                free(r);
                                arm_deadline(k);
                        }
                        return;
                }
}
