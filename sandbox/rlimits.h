/* A session's resource limits on its worker, set from outside with
 * prlimit(2): the worker is not trusted to set its own (docs/architecture.md,
 * "Limits"; docs/security.md, "The layers").
 *
 * Process context: the daemon, on its event loop (prlimit on another
 * process answers at once).  Parent side only: the worker never sets a
 * limit, and its seccomp filter refuses prlimit64 with a new limit and
 * setrlimit, so it cannot raise one either. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "options.h"

/* Set l's limits on process pid as soft limits: memory is RLIMIT_AS, fsize
 * RLIMIT_FSIZE, nproc RLIMIT_NPROC, nofile RLIMIT_NOFILE, stack RLIMIT_STACK,
 * and cpu RLIMIT_CPU at cpu_base_s (the CPU time pid has used so far,
 * rounded up) + the limit: per run, re-armed at every run's start (SIGXCPU,
 * which the worker turns into an interrupt; the kernel raises the soft
 * limit by a second at every SIGXCPU).  reserved_as, the address space
 * pid's build reserves before any user code (0, but for a sanitizer's
 * shadow memory: the worker's "ready" frame), is added to memory: it is not
 * the session's.  LIMIT_UNSET is RLIM_INFINITY.
 *
 * Only soft limits change: each hard limit stays what pid inherited (the
 * daemon's own, read once with getrlimit), because only CAP_SYS_RESOURCE may
 * raise a hard limit (root lacks it on this project's machines), so a hard
 * limit lowered once could never be raised again for a later run or a
 * rewritten limits file.  The soft limit binds all the same; a soft limit
 * above the hard one is cut to it.  The hard stop for CPU is the daemon's
 * (its monitor, then the grace period).
 *
 * cpu_only: RLIMIT_CPU alone (a run's start: two system calls).  Every limit
 * is attempted; returns 0 or the first -errno (-ESRCH: pid is gone). */
int rlimits_apply(pid_t pid, const struct limits *l, double cpu_base_s, long long reserved_as, bool cpu_only);

/* The address space of process pid that no memory backs, in bytes: mapped
 * but not resident (/proc/PID/statm: size - resident).  For a worker as it
 * becomes ready, before any user code: the parts of its shared libraries
 * it never touched (ICU's data alone is 30 MiB here) and what a sanitizer
 * reserves.  RLIMIT_AS counts them; a memory limit is about memory, so the
 * daemon adds them to it (reserved_as above).  -errno when unreadable. */
long long rlimits_unbacked_as(pid_t pid);
