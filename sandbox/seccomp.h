/* The worker's system call filter (docs/security.md, "seccomp", lists every
 * rule with its reason).
 *
 * Process context: syscall_filter_build() runs once in the zygote, on the
 * host, before any worker exists; it compiles the policy with libseccomp and
 * keeps the resulting two BPF programs in memory.  syscall_filter_install()
 * runs in each worker as the last step of its jail (sandbox/jail.c), right
 * after every capability was dropped and no_new_privs set: for a worker
 * (jail_options.workspace_later) that is when jail_attach_workspace() has
 * attached /work, before the worker answers "attached" -- a pooled worker
 * waits for its session without the filter, running nothing but its wait for
 * the workspace frame.  No user code ever runs without the filter.  A forked
 * worker inherits the programs through copy-on-write memory; nothing is
 * compiled per worker.
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

/* Child side, the jail's last step (jail.c, after capabilities_drop_all()):
 * load the programs built above into this single-threaded process with
 * seccomp(SECCOMP_SET_MODE_FILTER), in order.  Needs no_new_privs, which
 * capabilities_drop_all() set.  Fails (-ENOENT) when nothing was built: the
 * caller must not run user code then.  Returns 0, or -errno with a one-line
 * reason in err. */
int syscall_filter_install(char *err, size_t errlen);

/* For tests (tests/unit/test_seccomp.c): the programs syscall_filter_build()
 * made, in the order they are installed; their count (0 before a build). */
size_t syscall_filter_programs(const struct sock_fprog **progs);
