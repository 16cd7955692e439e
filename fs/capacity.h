/* What the machine can hold, checked once at start (before any helper is
 * started, so that the keeper and the zygote inherit the raised limit):
 * max_sessions is bounded by the machine, not by a fixed number.
 *
 * Process context: the daemon's main(), before the mount. */
#pragma once

#include <stddef.h>

#include "options.h"

/* Descriptors the daemon holds per session (its worker's socket, its
 * workspace's root and, with a cgroup, its worker's OOM kill counter) and for everything else (FUSE, epoll, helpers, the
 * pool's workers, files/ handles open at once, tools). */
#define CAPACITY_FDS_PER_SESSION 3
#define CAPACITY_FDS_BASE 1024
/* What an idle session costs the machine, measured (docs/performance.md):
 * about 1.4 MB of RAM across the worker and the daemon; 2 MiB is the
 * budget the start-up check counts with. */
#define CAPACITY_BYTES_PER_SESSION (2ULL << 20)

/* Raise RLIMIT_NOFILE's soft limit to its hard limit, then check that
 * o->max_sessions (+ o->pool) sessions fit in the descriptors, the pids
 * (kernel.pid_max, kernel.threads-max, the processes already there) and
 * the memory (MemTotal) of this machine.  0, or -EMFILE, -EAGAIN (pids),
 * -ENOMEM with a message in err that says what to change. */
int capacity_check(const struct options *o, char *err, size_t errlen);
