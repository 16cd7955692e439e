/* The worker's capabilities and no_new_privs (docs/sandbox.md, step 9).
 *
 * A worker holds every capability, but only inside its own user namespace:
 * they are what lets it build its jail (mounts, pivot_root, the namespace's
 * limits), and they would let it undo the jail.  So it drops them all
 * before any user code runs.
 *
 * Child side only (there is nothing for the parent to do): the jailed child,
 * inside its namespaces, single-threaded. */
#pragma once

#include "jail_error.h"

/* The highest capability number of this kernel, from
 * /proc/sys/kernel/cap_last_cap, read at the start of the jail while the
 * host's /proc is still visible.  0 with *out, or -errno with the step in
 * e. */
int capabilities_last(int *out, struct jail_error *e);

/* Privilege change: give up every capability and the means to regain any.
 * The bounding set first (PR_CAPBSET_DROP needs CAP_SETPCAP, which goes last
 * with capset), then the ambient set, then effective, permitted and
 * inheritable through the raw capset(2) with _LINUX_CAPABILITY_VERSION_3 (no
 * libcap); finally PR_SET_NO_NEW_PRIVS, so that no execve (should one ever
 * be allowed) gains privilege through setuid bits or file capabilities, and
 * so that the seccomp filter may be loaded.  From here on the process is an
 * ordinary uid 1000.  0, or -errno with the step in e. */
int capabilities_drop_all(int last_cap, struct jail_error *e);
