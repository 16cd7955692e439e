/* The first steps of every child the daemon forks to exec or to serve on its
 * own — a tool process, the zygote, the keeper — so that each starts from the
 * same clean state: no blocked or caught signal of the daemon's, the
 * descriptors it is given where it expects them and no other descriptor of
 * the daemon's (the FUSE channel, worker sockets, other tools' pipes), and
 * death with the daemon.
 *
 * Process context: the child, right after fork(), still the daemon's image
 * and privileges.  Only async-signal-safe calls. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct child_setup {
        /* fds[i] becomes descriptor first_fd + i (without FD_CLOEXEC), for
         * i < n_fds; any of them may already sit on any of the targets. */
        const int *fds;
        int n_fds;
        int first_fd;
        /* Descriptors 0 and 1 (when not among the targets) go to /dev/null;
         * 2 stays the daemon's stderr (start-up failures are logged there). */
        bool null_stdio;
        /* setsid(): out of the daemon's session and process group, so that a
         * Ctrl-C at its terminal reaches only the daemon, which ends the
         * child itself. */
        bool new_session;
        /* setpgid(0, 0): a process group of its own, killed as a whole. */
        bool new_group;
        /* > 0: PR_SET_PDEATHSIG(SIGKILL), then fail if the parent is no
         * longer this pid (it died before the prctl). */
        pid_t parent;
};

/* Apply c: every signal to its default action and unblocked, the
 * descriptors moved, everything else (from first_fd + n_fds on) closed.
 * 0, or -errno; the caller then _exit()s. */
int child_after_fork(const struct child_setup *c);
