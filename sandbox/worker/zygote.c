/* securerfs-worker --zygote: initialise R once, then clone a worker per
 * request (docs/protocol.md, "Zygote control channel").
 *
 * The zygote is started by the daemon with a clean environment and fd 3 one
 * end of a SOCK_SEQPACKET socketpair.  It runs no user code: it pays R's
 * ~120 ms start-up once, and every worker is a copy-on-write clone of it,
 * which costs about a millisecond.  Workers are cloned with CLONE_PARENT, so
 * they are the daemon's children; the zygote never waits for them. */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdpass.h"
#include "log.h"
#include "macros.h"
#include "sandbox/seccomp.h"
#include "worker.h"

#define CONTROL_FD 3
#define MAX_R_LIBS 32

struct zygote_options {
        struct jail_options jail;
        const char *r_libs[MAX_R_LIBS];
        char *r_libs_buf;
        bool allow_exec; /* --allow-exec: the filter leaves execve allowed */
};

static int parse_bytes(const char *s, unsigned long long *out) {
        char *end;
        unsigned long long v;

        if (!*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end)
                return -EINVAL;
        *out = v;
        return 0;
}

static int parse_options(int argc, char **argv, struct zygote_options *z) {
        int zygote = 0, have_sandbox = 0;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];

                if (!strcmp(a, "--zygote")) {
                        zygote = 1;
                } else if (!strcmp(a, "--sandbox=strict")) {
                        z->jail.mode = JAIL_STRICT;
                        have_sandbox = 1;
                } else if (!strcmp(a, "--sandbox=none")) {
                        z->jail.mode = JAIL_NONE;
                        have_sandbox = 1;
                } else if (!strncmp(a, "--r-libs=", 9)) {
                        char *save = NULL;

                        free(z->r_libs_buf);
                        z->r_libs_buf = strdup(a + 9);
                        if (!z->r_libs_buf)
                                return -ENOMEM;
                        z->jail.n_r_libs = 0;
                        for (char *d = strtok_r(z->r_libs_buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                                if (z->jail.n_r_libs == MAX_R_LIBS || d[0] != '/')
                                        return -EINVAL;
                                z->r_libs[z->jail.n_r_libs++] = d;
                        }
                        z->jail.r_libs = z->r_libs;
                } else if (!strncmp(a, "--cgroup-dirs=", 14)) {
                        /* Where each worker joins w<token>. */
                        z->jail.cgroup_dirs = a + 14;
                } else if (!strcmp(a, "--allow-exec")) {
                        z->allow_exec = true;
                } else if (!strncmp(a, "--tmp-size=", 11)) {
                        if (parse_bytes(a + 11, &z->jail.tmp_bytes) < 0)
                                return -EINVAL;
                } else {
                        return -EINVAL;
                }
        }
        /* Strict is the default everywhere else; here the daemon must say
         * which it wants, so that a mistake cannot silently drop the jail. */
        if (!zygote || !have_sandbox)
                return -EINVAL;
        return 0;
}

static void control_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void control_send(const char *fmt, ...) {
        char line[512];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n >= sizeof(line))
                n = sizeof(line) - 1;
        /* MSG_NOSIGNAL: a daemon that went away gives EPIPE, not SIGPIPE;
         * the next recvmsg() then sees end of file and the zygote exits. */
        if (send(CONTROL_FD, line, (size_t)n, MSG_NOSIGNAL) < 0)
                log_warn("control socket: %s", strerror(errno));
}

/* Receive one datagram and at most one fd.  Returns the datagram's length
 * (0 at end of file) or -errno (-EBADMSG: a truncated datagram or more fds
 * than fit, not a request we sent); *fd is the fd passed with it, or -1. */
static long control_recv(char *buf, size_t size, int *fd) {
        size_t n_fds;
        ssize_t n = fdpass_recv(CONTROL_FD, buf, size - 1, fd, 1, &n_fds, 0);

        if (n < 0 || n_fds == 0)
                *fd = -1;
        if (n >= 0)
                buf[n] = '\0';
        return n;
}

/* One decimal field of at most max_digits digits, ending at a space or the
 * end: 0 with *out and *next, or -EBADMSG. */
static int parse_decimal(const char *p, size_t max_digits, unsigned long long *out, const char **next) {
        size_t n = 0;

        while (p[n] >= '0' && p[n] <= '9')
                n++;
        if (n == 0 || n > max_digits || (p[n] != ' ' && p[n] != '\0'))
                return -EBADMSG;
        *out = strtoull(p, NULL, 10);
        *next = p + n;
        return 0;
}

/* "spawn TOKEN UID GID", all decimal: the host uid and gid the worker's
 * 1000 maps to.  0, or -EBADMSG. */
static int parse_spawn(const char *line, unsigned long long *token, uid_t *uid, gid_t *gid) {
        unsigned long long u, g;
        const char *p = line + 6;

        if (strncmp(line, "spawn ", 6) || parse_decimal(p, 19, token, &p) < 0 || *p++ != ' ' ||
            parse_decimal(p, 10, &u, &p) < 0 || *p++ != ' ' || parse_decimal(p, 10, &g, &p) < 0 || *p != '\0')
                return -EBADMSG;
        /* (uid_t)-1 means "unchanged" to the kernel. */
        if (u >= UINT32_MAX || g >= UINT32_MAX)
                return -EBADMSG;
        *uid = (uid_t)u;
        *gid = (gid_t)g;
        return 0;
}

static void serve_spawn_requests(const struct zygote_options *z) {
        /* Each worker's own copy: its cgroup is w<token>. */
        struct jail_options jail = z->jail;

        for (;;) {
                char line[128], why[512];
                unsigned long long token;
                uid_t uid;
                gid_t gid;
                _cleanup_close_ int sock = -1;
                long n = control_recv(line, sizeof(line), &sock);
                pid_t pid;

                /* ECONNRESET: it closed its end with our answers unread. */
                if (n == 0 || n == -ECONNRESET)
                        return; /* the daemon closed its end */
                if (n < 0) {
                        if (n == -EBADMSG) {
                                log_error("control socket: malformed request ignored");
                                continue;
                        }
                        log_error("control socket: %s", strerror((int)-n));
                        return;
                }
                if (parse_spawn(line, &token, &uid, &gid) < 0) {
                        log_error("control socket: unknown request ignored");
                        continue;
                }
                if (sock < 0) {
                        control_send("failed %llu spawn request without a socket", token);
                        continue;
                }
                /* A second lock behind the daemon's: a jailed worker is
                 * never host root (docs/security.md). */
                if (z->jail.mode == JAIL_STRICT && (uid == 0 || gid == 0)) {
                        control_send("failed %llu refusing to map a worker to host uid/gid 0", token);
                        continue;
                }
                /* Unwritten stdio buffers would be written twice, once by
                 * each process. */
                fflush(NULL);
                jail.cgroup_id = token; /* made by the daemon for this token */
                pid = jail_clone(&jail, uid, gid, why, sizeof(why));
                if (pid == 0) {
                        /* Child of the clone: a new process, the daemon's
                         * child through CLONE_PARENT; in strict mode pid 1
                         * of new namespaces, its ids mapped, holding every
                         * capability there and none outside, running no user
                         * code until its jail is built (worker_main). */
                        prctl(PR_SET_NAME, "securerfs-worke"); /* not the zygote's name */
                        worker_main(TAKE_FD(sock), &jail);
                }
                /* Zygote. */
                if (pid < 0)
                        control_send("failed %llu %s", token, why);
                else
                        control_send("spawned %llu %ld", token, (long)pid);
        }
}

int main(int argc, char **argv) {
        /* Every worker gets its session's workspace as /work after it is
         * assigned (docs/protocol.md, "workspace"). */
        struct zygote_options z = {.jail.workspace_later = 1};
        sigset_t none;
        char err[512];
        int r;

        log_set_prefix("securerfs-worker");
        if (parse_options(argc, argv, &z) < 0) {
                log_error("usage: securerfs-worker --zygote --sandbox=strict|none "
                          "[--r-libs=DIR:DIR] [--tmp-size=BYTES] [--allow-exec], fd 3 a SOCK_SEQPACKET socket");
                free(z.r_libs_buf);
                return 2;
        }
        /* A daemon that blocks signals for its signalfd would pass the mask
         * on through execve(); workers must receive SIGINT. */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* Our writes go to sockets (MSG_NOSIGNAL) and stderr: a reader gone
         * away is EPIPE, not death. */
        signal(SIGPIPE, SIG_IGN);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                log_warn("prctl PR_SET_PDEATHSIG: %s", strerror(errno));
        /* Workers inherit our supplementary groups, and in their namespace
         * setgroups is denied: as root, hold none (root's groups would
         * otherwise pass group checks on the host for every worker). */
        if (geteuid() == 0 && setgroups(0, NULL) < 0) {
                log_error("setgroups: %s", strerror(errno));
                free(z.r_libs_buf);
                return 1;
        }
        /* ps and the tests tell the zygote from its workers by this. */
        prctl(PR_SET_NAME, "srfs-zygote");

        /* Strict: compile the seccomp policy once, here; every worker
         * installs it as the last step of its jail (sandbox/jail.c,
         * sandbox/seccomp.h).  A policy that cannot be built fails the
         * zygote: no worker runs without it. */
        z.jail.syscall_filter = z.jail.mode == JAIL_STRICT;
        r = z.jail.syscall_filter ? syscall_filter_build(z.allow_exec, err, sizeof(err)) : 0;
        if (r >= 0)
                r = worker_r_init(CONTROL_FD, err, sizeof(err));
        if (r < 0) {
                control_send("fatal %s", err);
                log_error("%s", err);
                free(z.r_libs_buf);
                return 1;
        }
        control_send("ready");
        serve_spawn_requests(&z);
        r_tempdir_remove();
        free(z.r_libs_buf);
        return 0;
}
