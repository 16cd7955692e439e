/* The processes of a session: its worker and everything the worker started
 * (docs/security.md, "The processes of a run" and "Session-wide limits").
 *
 * In strict mode the worker is pid 1 of its own pid namespace, so every
 * process of the session is one of its descendants: an orphan is adopted by
 * the worker, never by a process outside.  The daemon finds them through
 * procfs, /proc/PID/task/TID/children of every thread of every process of
 * the tree (a child belongs to the thread that forked it), and opens each
 * one's /proc/PID directory before it looks at it: reads through that
 * descriptor and pidfd_send_signal() on it concern that very process even if
 * it dies meanwhile and its pid is reused (pid_max is 32768 here), and a
 * process counts as the session's only if its parent, read through its own
 * descriptor, is the process it was listed under, which is still there.
 *
 * Process context: the daemon's event loop.  procfs answers at once;
 * nothing here waits.  A walk visits at most PROCS_MAX processes. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define PROCS_MAX 4096

struct procs_usage {
        /* utime + stime + cutime + cstime of the worker and of every
         * descendant (zombies included): a child's CPU moves into its
         * parent's cutime when it is reaped, so the sum only grows. */
        double cpu_s;
        double worker_cpu_s;    /* the worker's own utime + stime (all its threads) */
        double worker_reaped_s; /* the worker's cutime + cstime: children it reaped */
        /* The sum of their resident sets: an upper bound of the memory they
         * hold together (pages shared copy-on-write are counted once per
         * process that maps them). */
        unsigned long long rss_bytes;
        /* A cheap estimate of what they hold together: the worker's
         * resident set plus, for every other process, what its resident set
         * has beyond its parent's.  A forked child starts out mapping its
         * parent's pages (its resident set is then its parent's), so what
         * it adds is about what it allocated itself.  It misses pages a
         * child made private by writing to them (copy-on-write copies) and
         * counts twice pages a grandchild shares with its parent only:
         * procs_pss() is the exact count. */
        unsigned long long estimate_bytes;
        /* Kernel memory behind their descriptors, included in both figures
         * above: each socket at twice net.core.wmem_default, each pipe at
         * 64 KiB (their bounds with the sizes the jail keeps: seccomp
         * refuses SO_SNDBUF, SO_RCVBUF, their *FORCE forms and
         * F_SETPIPE_SZ).  Without a memory cgroup nothing else counts it. */
        unsigned long long kernel_bytes;
        unsigned n; /* processes seen, the worker included */
};

/* Sum what the worker and its descendants use.  0, or -errno when the
 * worker itself cannot be read (it is gone). */
int procs_usage(pid_t worker, struct procs_usage *out);

/* The proportional set size (Pss) summed over the worker and its
 * descendants: each page shared by n processes counts 1/n in each, so
 * copy-on-write sharing is counted once.  Costs a page-table walk per
 * process (about 1.5 ms for a 50 MB R process on this machine): call it only
 * when procs_usage()'s upper bound is over a limit.  0 or -errno (-EACCES:
 * smaps_rollup could not be read). */
int procs_pss(pid_t worker, unsigned long long *out);

/* SIGKILL every live descendant of the worker (not the worker) whose start
 * time (clock ticks since boot, as /proc/PID/stat gives it) is below
 * before_tick (ULLONG_MAX: all of them), pass after pass, until a pass finds
 * none it has not signalled yet, or max_passes were made.  A process that
 * was signalled is not waited for: SIGKILL cannot be refused, and a process
 * with it pending can fork no more.  Returns the number of processes
 * signalled (0: there were none), -EAGAIN when the last pass still found new
 * ones (they fork faster than we kill), or -errno when the worker cannot be
 * read. */
int procs_kill_descendants(pid_t worker, unsigned max_passes, unsigned long long before_tick);

/* The worker's CPU — utime + stime of all its threads, and cutime + cstime:
 * what the children it reaped used (a thread that has a child spin between
 * two of the idle watch's looks and reaps it leaves nothing else to see) —
 * and its number of threads, from /proc/PID/stat.  0 or -errno (it is
 * gone). */
int procs_worker_self(pid_t worker, double *cpu_s, int *threads);
