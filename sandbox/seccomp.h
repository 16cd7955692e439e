/* The worker's system call filter (docs/security.md, "seccomp", lists every
 * rule with its reason).
 *
 * Process context: syscall_filter_build() runs once in the zygote, on the
 * host, before any worker exists; it compiles the policy with libseccomp and
 * keeps the resulting three BPF programs in memory.  Each worker loads the
 * first two (syscall_filter_install) as the last step of building its jail
 * (sandbox/jail.c), before it says "ready" and so before it may be pooled,
 * and the third, the lock (syscall_filter_lock), when it is attached to its
 * session (jail_attach_workspace): after /work was moved into place and
 * every capability dropped, before the worker answers "attached".  Loading
 * a program is the kernel checking and compiling it, about 0.2 ms for each
 * of the first two: they come off a new session's path this way.  Between
 * the two steps the first two programs let exactly two more calls through
 * than the whole policy (until_attach in seccomp.c: move_mount, which the
 * attach needs, and seccomp, which loads the lock); a pooled worker runs
 * nothing but its wait for the workspace frame and the daemon's "warm"
 * (1+1, the worker's own code) meanwhile.  No user code ever runs without
 * all three.  A forked worker inherits the programs through copy-on-write
 * memory; nothing is compiled per worker.
 *
 * Named syscall_filter_* because libseccomp owns the seccomp_* prefix. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct sock_fprog;

/* Zygote side: compile the policy for the native architecture (any other
 * syscall ABI kills the process): an allowlist (unknown calls ENOSYS,
 * refused ones EPERM) and a program of argument checks.  allow_exec leaves
 * execve/execveat allowed (-o allow_exec).  Returns 0, or -errno with a
 * one-line reason in err ("seccomp: rule for ptrace: Invalid argument"). */
int syscall_filter_build(bool allow_exec, char *err, size_t errlen);

/* Child side, the jail's last step of building (jail.c): load the argument
 * checks and the allowlist into this single-threaded process with
 * seccomp(SECCOMP_SET_MODE_FILTER), in order.  Needs no_new_privs or
 * CAP_SYS_ADMIN in the process's user namespace.  Fails (-ENOENT) when
 * nothing was built: the caller must not run user code then.  Returns 0,
 * or -errno with a one-line reason in err. */
int syscall_filter_install(char *err, size_t errlen);
/* Child side, at the attach (jail.c, after capabilities_drop_all()): load
 * the lock, which takes move_mount and seccomp away again.  Only after
 * syscall_filter_install().  0 or -errno with a reason in err. */
int syscall_filter_lock(char *err, size_t errlen);

/* For tests (tests/unit/test_seccomp.c): the programs syscall_filter_build()
 * made, in the order they are installed; their count (0 before a build). */
size_t syscall_filter_programs(const struct sock_fprog **progs);
