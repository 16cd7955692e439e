/* The jail a worker runs in (docs/sandbox.md), built by the worker itself
 * right after the zygote cloned it.  jail.c is the one place that knows the
 * order of the set-up: it calls the facilities (user_ns, mounts,
 * capabilities, cgroup, seccomp) as one flat sequence, with a comment at
 * every privilege change.
 *
 * Process context: jail_clone() runs in the zygote (host namespaces, the
 * daemon's uid, no capabilities beyond the daemon's own).  jail_enter() and
 * jail_attach_workspace() run in the child, which in strict mode is pid 1 of
 * new user, pid, mount, net, ipc, uts (and cgroup) namespaces and holds
 * every capability *inside* its new user namespace only, until the step
 * that drops them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum jail_mode { JAIL_STRICT = 0, JAIL_NONE = 1 };

struct jail_options {
        enum jail_mode mode;
        const char *const *r_libs; /* extra read-only R library directories */
        size_t n_r_libs;
        unsigned long long tmp_bytes;  /* size cap of the private /tmp (0: 64 MiB) */
        unsigned long long work_bytes; /* size cap of /work (0: 64 MiB) */
        /* /work comes later, from jail_attach_workspace(): jail_enter() then
         * leaves /work an empty mount point and keeps the capabilities (in
         * the worker's own user namespace only) for that step. */
        int workspace_later;
        /* Strict mode: load the seccomp programs syscall_filter_build() made
         * (sandbox/seccomp.h) right after the capabilities are dropped. */
        bool syscall_filter;
        /* The cgroup the child joins first (cgroup_join(): w<cgroup_id>
         * below each of these colon-separated directories); NULL or "":
         * none.  cgroup_id is per child: the zygote sets it for each spawn. */
        const char *cgroup_dirs;
        unsigned long long cgroup_id;
};

/* Zygote side: clone a child whose parent is the zygote's parent (the daemon,
 * through CLONE_PARENT) so that the daemon reaps it and sees its exit status.
 * In strict mode the child is in new user/pid/mount/net/ipc/uts/cgroup
 * namespaces (without the cgroup one on a kernel that lacks it), and before
 * it goes on (it waits on a pipe) the zygote maps its uid/gid 1000 to
 * host_uid/host_gid, only those (user_ns_map_child(): a root zygote maps the
 * session's own unprivileged id; an unprivileged one its own uid/gid, the
 * only ids it may map).  None mode ignores the ids.  Returns the child's pid
 * (as seen by the zygote and the daemon) in the zygote, 0 in the child (once
 * mapped), or -errno with a one-line reason in err; a child whose ids could
 * not be mapped is killed before it runs anything (its parent, the daemon,
 * reaps it).  The caller is single-threaded and flushed its stdio. */
pid_t jail_clone(const struct jail_options *o, uid_t host_uid, gid_t host_gid, char *err, size_t errlen);

/* A one-line reason for a jail_clone() failure (err: its return value or
 * errno), naming the likely missing kernel feature for the errnos clone(2)
 * gives when user namespaces are unavailable (EPERM, ENOSPC, EUSERS,
 * EINVAL), e.g. "clone: user namespaces are not available
 * (kernel.unprivileged_userns_clone=0 or user.max_user_namespaces=0?):
 * Operation not permitted".  Points to a static buffer overwritten by the
 * next call. */
const char *jail_clone_error(int err);

/* Child side, right after jail_clone() returned 0: set PR_SET_PDEATHSIG,
 * join the cgroup (cgroup_dirs), then in strict mode become uid/gid 1000
 * (mapped by jail_clone), build the fresh read-only root (pivot_root, the
 * old root detached) with a private /tmp, a fresh read-only /proc and
 * /dev, and a fixed hostname.  Without workspace_later it then mounts a
 * private tmpfs on /work, chdirs there, drops every capability, sets
 * no_new_privs and loads the filter (syscall_filter); with it, /work and
 * those last steps wait for jail_attach_workspace() and the capabilities
 * stay.  In none mode: make a private temporary directory on the host and
 * chdir there.  On failure writes a one-line reason naming the step and the
 * kernel feature into err (e.g. "mount proc on /proc: Operation not
 * permitted") and returns -errno; the caller reports it and _exit()s. */
int jail_enter(const struct jail_options *o, char *err, size_t errlen);

/* Child side, after jail_enter() with workspace_later, before any user code:
 * make fd the worker's /work and working directory, then (strict) drop every
 * capability, set no_new_privs and load the filter (syscall_filter).
 * Strict: fd is a detached mount (from open_tree(OPEN_TREE_CLONE),
 * sandbox/keeper.h) attached at /work with move_mount(2); none: a
 * directory, fchdir()ed into.  fd is not closed.  0, or -errno with a reason
 * in err. */
int jail_attach_workspace(const struct jail_options *o, int fd, char *err, size_t errlen);

/* The directory the worker should use as R's per-session temporary
 * directory after jail_enter() succeeded ("/tmp/R" in strict mode, a private
 * host directory in none mode).  Valid until exit. */
const char *jail_tmpdir(void);

/* None mode: the private host directory jail_enter() made
 * ($TMPDIR/securerfs-w<pid>-XXXXXX), for the worker to remove at exit (the
 * daemon sweeps those of workers that were killed); "" in strict mode. */
const char *jail_private_dir(void);
