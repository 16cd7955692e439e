/* A cgroup per worker, where the machine lets the daemon have one
 * (docs/security.md, "Resources").
 *
 * Process context: the daemon, on its event loop, for everything but
 * cgroup_join() (the worker's child side).  Every call is a handful of
 * mkdir/write/rmdir on cgroupfs, which the kernel answers at once: nothing
 * here blocks.
 *
 * Layout: on a cgroup v2 host, <cgroup2 mount>/securerfs-<daemon pid>/ with
 * the memory and pids controllers enabled for its children, and one child
 * w<pid> per worker.  The daemon itself stays where it was (cgroup v2 forbids
 * processes in a cgroup that hands controllers to its children).  On a v1 or
 * hybrid host (the controllers bound to v1 hierarchies, as on this project's
 * CI machine) the same two directories are made in the v1 "memory" and
 * "pids" hierarchies instead.
 *
 * Where neither works (typically an unprivileged daemon without a delegated
 * subtree) the tree is disabled: every call succeeds and does nothing, and
 * the rlimits the daemon sets with prlimit() remain the only limits. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct cgroup_tree;

/* Find the cgroup v2 hierarchy (else the v1 memory and pids ones), create
 * our directory and enable memory and pids below it.  Always succeeds unless out of memory (-ENOMEM): a machine
 * without a usable hierarchy gives a disabled tree, and *why (static text)
 * then says what was missing, for the caller to log once; *why is NULL for an
 * enabled tree. */
int cgroup_tree_new(struct cgroup_tree **out, const char **why);

/* Remove every worker cgroup left and our directory.  Accepts NULL. */
void cgroup_tree_free(struct cgroup_tree *t);

/* Make worker id's cgroup, w<id> (or update its limits when it exists):
 * memory.max = memory_max bytes and pids.max = pids_max (-1: "max").  The
 * worker joins it itself, right after the zygote cloned it and before it
 * runs any user code (cgroup_join()): moving a process between cgroups
 * waits for an RCU grace period (milliseconds), which must not stall the
 * daemon's loop.  Returns 0 (also when disabled), -EBUSY when the cgroup
 * holds more than memory_max already (nothing changed: v1 would refuse the
 * limit, v2 would have its OOM killer make room), or -errno. */
int cgroup_worker_prepare(struct cgroup_tree *t, unsigned long long id, long long memory_max, long long pids_max);

/* What worker id's cgroup holds now, in bytes (memory.current on v2,
 * memory.usage_in_bytes on v1): its processes and its tmpfs pages.  0 with
 * *out, or -errno (-ENOENT: disabled). */
int cgroup_worker_memory_held(struct cgroup_tree *t, unsigned long long id, unsigned long long *out);

/* After the worker was reaped: remove its cgroup.  Processes still in it
 * (none, normally: the worker is pid 1 of its pid namespace and its
 * children die with it; a worker whose zygote was killed before it said so
 * is still on its way out) are killed through cgroup.kill on v2, and the
 * cgroup is kept for cgroup_sweep(): -EBUSY.  0 or -errno. */
int cgroup_worker_remove(struct cgroup_tree *t, unsigned long long id);

/* Try again to remove the cgroups cgroup_worker_remove() found busy; how
 * many are still there.  Accepts NULL. */
size_t cgroup_sweep(struct cgroup_tree *t);

/* A descriptor of worker id's OOM kill counter (oom_kill in memory.events
 * on v2, memory.oom_control on v1), for cgroup_oom_kills(): kept open, a
 * read costs 0.4 us, against 1.7 us for an open, a read and a close (this
 * machine), so that every run's start can take its base.  The descriptor,
 * or -errno (-ENOENT: disabled, or the kernel has no such counter). */
int cgroup_worker_oom_open(struct cgroup_tree *t, unsigned long long id);

/* How many processes of the cgroup the kernel's OOM killer has killed, read
 * from fd (cgroup_worker_oom_open()), so that a run that ended through the
 * memory cgroup can say so.  0 with *out, or -errno. */
int cgroup_oom_kills(int fd, unsigned long long *out);

/* Our directories, colon-separated, for the zygote's --cgroup-dirs ("" when
 * disabled). */
const char *cgroup_tree_dirs(const struct cgroup_tree *t);

/* Child side, the first step of the jail (jail_enter(), right after the
 * parent-death signal), before the child changes ids and runs any user
 * code: move the calling process into w<id> below each of dirs (as
 * cgroup_tree_dirs() gave them).  0, or -errno with the step in err. */
int cgroup_join(const char *dirs, unsigned long long id, char *err, size_t errlen);
