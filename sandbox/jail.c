/* The worker's jail: the order of its set-up, written out once as a flat
 * sequence (docs/sandbox.md walks through it step by step).  The steps
 * themselves belong to the facilities: user_ns.c (the one mapped id),
 * mounts.c (the file system view), capabilities.c, cgroup.c (joining the
 * worker's cgroup), seccomp.c (the filter).
 *
 * Two processes are involved:
 *   - the zygote (host namespaces, the daemon's uid) calls jail_clone();
 *   - the child calls jail_enter() and, once assigned to a session,
 *     jail_attach_workspace().  In strict mode it is pid 1 of a new pid
 *     namespace and holds every capability, but only inside its own new
 *     user namespace; it spends them on building the root and then drops
 *     them all before any user code runs.
 *
 * Everything here returns 0 or -errno; the first failure writes
 * "<what was attempted>: <strerror>" into the caller's buffer. */
#include "jail.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "capabilities.h"
#include "cgroup.h"
#include "jail_error.h"
#include "mounts.h"
#include "seccomp.h"
#include "user_ns.h"

/* Written by jail_clone() in the zygote before the clone, read by the child:
 * getppid() is 0 inside a fresh pid namespace. */
static pid_t jail_expected_parent;

static char jail_tmp[PATH_MAX];
static char jail_private[PATH_MAX]; /* none mode's directory */
/* Between jail_enter() and jail_attach_workspace(): the last capability to
 * drop. */
static int jail_last_cap;

/* ---- Zygote side ------------------------------------------------------- */

pid_t jail_clone(const struct jail_options *o, uid_t host_uid, gid_t host_gid, char *err, size_t errlen) {
        struct jail_error e = {err, errlen};
        unsigned long flags = CLONE_PARENT | SIGCHLD;
        int go[2] = {-1, -1};
        long pid;
        int r;

        if (o->mode == JAIL_STRICT) {
                /* Only the user and pid namespaces here: the others are
                 * made by the child (jail_unshare), on its own CPU time
                 * rather than in the zygote's clone, which every new worker
                 * waits for in turn (a network namespace alone costs about
                 * 1 ms: docs/performance.md). */
                flags |= CLONE_NEWUSER | CLONE_NEWPID;
                /* The child waits on this until its ids are mapped: it is
                 * nobody (the overflow id) in its namespace until then. */
                if (pipe2(go, O_CLOEXEC) < 0)
                        return jail_fail(&e, -errno, "pipe2");
        }
        jail_expected_parent = getppid();

        /* A raw clone with no new stack behaves like fork(): the child
         * continues on a copy-on-write copy of this stack.  glibc's fork()
         * cannot take flags, and clone() wants a separate stack; the caller
         * is single-threaded so skipping glibc's atfork handling is safe.
         * CLONE_PARENT: the child's parent is the zygote's parent, the
         * daemon, which reaps it and sees how it died. */
#if defined(__s390__) || defined(__CRIS__)
        pid = syscall(SYS_clone, NULL, flags, NULL, NULL, 0);
#else
        pid = syscall(SYS_clone, flags, NULL, NULL, NULL, 0);
#endif
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
                if (go[0] < 0)
                        return 0;
                close(go[1]);
                r = user_ns_wait_mapped(go[0]);
                close(go[0]);
                if (r < 0)
                        _exit(127);
                return 0;
        }
        /* Zygote. */
        if (go[0] < 0)
                return (pid_t)pid;
        close(go[0]);
        r = user_ns_map_child((pid_t)pid, go[1], host_uid, host_gid, &e);
        if (r < 0)
                /* It runs nothing before the go-ahead; the daemon reaps it. */
                kill((pid_t)pid, SIGKILL);
        close(go[1]);
        return r < 0 ? r : (pid_t)pid;
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

/* ---- Child side -------------------------------------------------------- */

/* The last steps, once /work is the worker's: after them no privilege is
 * left and no user code has run yet. */
static int jail_lock(const struct jail_options *o, int last_cap, struct jail_error *e) {
        int r;

        /* Privilege change: every capability and the means to regain any
         * are gone; from here on the process is an ordinary uid 1000. */
        if ((r = capabilities_drop_all(last_cap, e)) < 0)
                return r;
        /* The filter's first two programs came when the jail was built
         * (jail_enter_strict) for a worker that waits for its workspace,
         * else now (no_new_privs was set just above); then the lock, which
         * refuses seccomp(2) itself (and program 1 prctl(PR_SET_SECCOMP)),
         * so nothing can be added after it. */
        if (o->syscall_filter && !o->workspace_later && (r = syscall_filter_install(e->buf, e->len)) < 0)
                return r;
        if (o->syscall_filter && (r = syscall_filter_lock(e->buf, e->len)) < 0)
                return r;
        return 0;
}

/* Child, pid 1 of new user and pid namespaces, every capability in the user
 * namespace: the rest of its namespaces, owned by that user namespace (as
 * if the clone had made them).  After cgroup_join, so that the cgroup
 * namespace's root is the worker's own cgroup. */
static int jail_unshare(struct jail_error *e) {
        unsigned long flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP;

        if (unshare((int)flags) == 0)
                return 0;
        /* Cgroup namespaces (Linux 4.6) only hide the cgroup path; a kernel
         * without them still gets the rest of the jail. */
        if (errno == EINVAL && unshare((int)(flags & ~(unsigned long)CLONE_NEWCGROUP)) == 0)
                return 0;
        return jail_fail(e, -errno, "unshare the mount, network, ipc, uts and cgroup namespaces");
}

/* Child, pid 1 of new user and pid namespaces, holding every capability
 * inside its user namespace and none outside. */
static int jail_enter_strict(const struct jail_options *o, struct jail_error *e) {
        int last_cap = 0, r;

        /* Read while the host's /proc is still visible. */
        if ((r = capabilities_last(&last_cap, e)) < 0)
                return r;
        if ((r = jail_unshare(e)) < 0)
                return r;

        /* Step 1, privilege change: from here on we are uid/gid 1000, known
         * to the host as the session's id (still every capability in our
         * namespace). */
        if ((r = user_ns_become_jail_user(e)) < 0)
                return r;

        /* Steps 2 to 6: the new root, assembled at /newroot.  /tmp and /work
         * before the host's directories, so that an R library that happens
         * to live below /tmp is bound on top of the private /tmp rather than
         * hidden by it. */
        if ((r = mounts_scratch_root(e)) < 0 ||
            (r = mounts_writable(o->tmp_bytes, o->work_bytes, o->workspace_later, e)) < 0 ||
            (r = mounts_host_tree(o->r_libs, o->n_r_libs, e)) < 0 || (r = mounts_etc(e)) < 0)
                return r;
        /* The fresh procfs: the user namespace's own limits are written
         * through it while it is writable (they need CAP_SYS_RESOURCE in
         * our namespace), then it is masked and made read-only. */
        if ((r = mounts_proc(e)) < 0 || (r = user_ns_limit(MOUNTS_NEW_PROC, e)) < 0 ||
            (r = mounts_proc_seal(e)) < 0 || (r = mounts_dev(e)) < 0)
                return r;

        /* Step 7, privilege change: the host's file system becomes
         * unreachable. */
        if ((r = mounts_switch_root(e)) < 0)
                return r;

        /* Step 8: the rest of the jail's identity, still with capabilities
         * (a new UTS namespace). */
        if (sethostname(JAIL_HOSTNAME, strlen(JAIL_HOSTNAME)) < 0)
                return jail_fail(e, -errno, "sethostname %s", JAIL_HOSTNAME);
        snprintf(jail_tmp, sizeof(jail_tmp), "/tmp/R");
        if (mkdir(jail_tmp, 0700) < 0 && errno != EEXIST)
                return jail_fail(e, -errno, "mkdir %s", jail_tmp);
        if (o->workspace_later) {
                /* Capabilities are kept (inside our namespace) until the
                 * workspace is attached (jail_attach_workspace); no user
                 * code runs before that.  The filter but for its lock now,
                 * so that loading it is not on a new session's path
                 * (sandbox/seccomp.h). */
                jail_last_cap = last_cap;
                if (o->syscall_filter) {
                        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                                return jail_fail(e, -errno, "prctl PR_SET_NO_NEW_PRIVS");
                        if ((r = syscall_filter_install(e->buf, e->len)) < 0)
                                return r;
                }
                return 0;
        }
        if (chdir("/work") < 0)
                return jail_fail(e, -errno, "chdir /work");
        /* Step 9. */
        return jail_lock(o, last_cap, e);
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
        int r;

        /* Step 0, first, so that a daemon killed with SIGKILL leaves no
         * worker behind.  There is a small race: if the daemon dies between
         * the clone and this call, the signal never comes.  None mode checks
         * getppid() afterwards; in strict mode getppid() is 0 (the parent is
         * outside the new pid namespace), and the worker instead sees EOF on
         * its socket to the daemon and exits. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
                return jail_fail(&e, -errno, "prctl PR_SET_PDEATHSIG");
        /* No core dumps, whatever the host's core_pattern: RLIMIT_CORE of
         * exactly 1 byte.  The kernel ignores RLIMIT_CORE 0 for a pipe
         * handler ("|/usr/lib/...": it would run on the host, as root, for
         * every crash of hostile code) but aborts the dump at 1; a dump to a
         * file needs at least a page.  Soft and hard: the code cannot raise
         * it (seccomp refuses setrlimit and prlimit64 with a new limit; the
         * daemon's prlimit sets only the session's limits).  PR_SET_DUMPABLE
         * 0 would stop dumps too, but makes /proc/PID root's, which an
         * unprivileged daemon's monitor must read. */
        {
                const struct rlimit core = {1, 1};
                if (setrlimit(RLIMIT_CORE, &core) < 0)
                        return jail_fail(&e, -errno, "setrlimit RLIMIT_CORE");
        }
        /* Into the cgroup the daemon made for this child, before anything
         * else runs: the move waits for an RCU grace period, which is why
         * the child does it and not the daemon's loop.  Still the zygote's
         * credentials, which may write the cgroup's cgroup.procs. */
        if (o->cgroup_dirs && *o->cgroup_dirs && (r = cgroup_join(o->cgroup_dirs, o->cgroup_id, err, errlen)) < 0)
                return r;
        if (o->mode == JAIL_NONE)
                return jail_enter_none(&e);
        return jail_enter_strict(o, &e);
}

int jail_attach_workspace(const struct jail_options *o, int fd, char *err, size_t errlen) {
        struct jail_error e = {err, errlen};
        int r;

        if (o->mode == JAIL_NONE) {
                if (fchdir(fd) < 0)
                        return jail_fail(&e, -errno, "fchdir into the workspace");
                return 0;
        }
        /* Child, inside its namespaces, still privileged there: the
         * session's workspace becomes /work and the working directory. */
        if ((r = mounts_attach_workspace(fd, &e)) < 0)
                return r;
        /* Step 9. */
        return jail_lock(o, jail_last_cap, &e);
}

const char *jail_tmpdir(void) {
        return jail_tmp;
}

const char *jail_private_dir(void) {
        return jail_private;
}
