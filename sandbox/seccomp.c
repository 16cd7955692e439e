/* The worker's seccomp policy (docs/security.md, "seccomp", gives every rule
 * its reason; keep the two in step).
 *
 * Three programs, installed one after the other:
 *
 *   1. Argument checks on calls the allowlist lets through: namespace flags
 *      of clone, set-id and sticky bits in modes, socket families, the
 *      personality, new resource limits, terminal injection, pipe growth.
 *      Its default is "allow": it only takes away.
 *   2. The allowlist.  Only the system calls named in `allowed` below pass;
 *      a call the filter does not know answers ENOSYS, as on a kernel that
 *      lacks it, so that glibc and libraries fall back to the older calls
 *      they know (clone3 -> clone, openat2 -> openat, fchmodat2 ->
 *      fchmodat), and a system call added to Linux tomorrow is refused until
 *      someone decides otherwise.  Calls refused on purpose answer EPERM
 *      (`refused`), so that the errno says "not allowed", not "missing".
 *      The list is Docker's default profile for a container without
 *      capabilities minus what R has no use for and what is attacked
 *      (tests/unit/docker_default_seccomp.txt is that profile as data, and
 *      tests/unit/test_seccomp.c checks that this filter never allows a
 *      call Docker refuses).  Until the worker is attached to a session it
 *      lets two calls more through (until_attach: move_mount and
 *      seccomp), which the worker's attach uses.
 *   3. The lock, installed at the attach: those two calls answered as the
 *      allowlist answers them otherwise (move_mount EPERM, seccomp ENOSYS),
 *      so that nothing can be added after it.  The first two programs are
 *      loaded when the jail is built, before the worker may wait in the
 *      pool, which takes their loading (the kernel checks and compiles
 *      each, about 0.2 ms) off a new session's path; the lock is a few
 *      instructions.
 *
 * Why two: libseccomp can test each argument only once per rule, and a rule
 * without conditions overrides every conditional rule of the same call, so
 * "allow ioctl except TIOCSTI and TIOCLINUX" cannot be one filter's rules.
 * The kernel runs every installed program and keeps the strictest answer
 * (for two errnos, the later program's: the allowlist's), which gives
 * exactly "allowed by the list and not refused by the checks".  A call that
 * both programs answer whatever its arguments is in the kernel's cache of
 * constant answers (Linux 5.11), so most calls run no BPF at all.
 *
 * Refusals answer an errno, never kill: R reports an error and the session
 * lives.  Only a call through another ABI (i386, x32) kills the process.
 *
 * libseccomp 2.5 (Debian 12) can only export a program to a file
 * descriptor, so the zygote exports into a memfd and reads it back. */
#include "seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "macros.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#endif

/* The compiled programs, built in the zygote and inherited by every worker,
 * in the order they are installed: FILTER_BASE of them when the jail is
 * built, the last (the lock) when the workspace is attached. */
#define FILTER_BASE 2
static struct sock_fprog filter_progs[FILTER_BASE + 1];
static size_t filter_count;

/* What the worker still does after its jail is built and before it is
 * attached to a session (jail_attach_workspace): move the workspace's mount
 * onto /work and install the lock.  The allowlist lets these through, and
 * the lock, installed right after, answers them as the allowlist otherwise
 * would (move_mount EPERM, with the mount API; seccomp ENOSYS). */
static const char *const until_attach[] = {"move_mount", "seccomp"};

static bool is_until_attach(const char *name) {
        for (size_t i = 0; i < ARRAY_SIZE(until_attach); i++)
                if (!strcmp(name, until_attach[i]))
                        return true;
        return false;
}

static int filter_fail(char *err, size_t errlen, int r, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int filter_fail(char *err, size_t errlen, int r, const char *fmt, ...) {
        va_list ap;
        int n;

        if (r >= 0)
                r = -EIO;
        if (!err || errlen == 0)
                return r;
        n = snprintf(err, errlen, "seccomp: ");
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < errlen)
                n += vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < errlen)
                snprintf(err + n, errlen - (size_t)n, ": %s", strerror(-r));
        return r;
}

/* ---- program 2: the allowlist ---------------------------------------------- */

/* Allowed, whatever the arguments (some are then checked by program 1).
 * Docker's default list for x86-64 without capabilities, minus:
 *   - the refusals below (EPERM) and everything that needs a capability;
 *   - landlock_*, seccomp, process_mrelease, epoll_ctl_old, epoll_wait_old:
 *     nothing R uses, so ENOSYS;
 *   - epoll_create, epoll_create1, inotify_*: per-user kernel counters,
 *     ENOSYS (libraries fall back to poll, as without these features).
 * Names of other architectures (chown32, _llseek, ...) are left out. */
static const char *const allowed[] = {
        /* files and directories */
        "access", "chdir", "chmod", "chown", "close", "close_range", "copy_file_range", "creat", "dup", "dup2",
        "dup3", "faccessat", "faccessat2", "fadvise64", "fallocate", "fchdir", "fchmod", "fchmodat", "fchown",
        "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fremovexattr", "fsetxattr", "fstat",
        "fstatfs", "fsync", "ftruncate", "futimesat", "getcwd", "getdents", "getdents64", "getxattr", "lchown",
        "lgetxattr", "link", "linkat", "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat",
        "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat", "open", "openat", "pread64", "preadv", "preadv2",
        "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "removexattr",
        "rename", "renameat", "renameat2", "rmdir", "sendfile", "setxattr", "splice", "stat", "statfs", "statx",
        "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate", "umask", "unlink",
        "unlinkat", "utime", "utimensat", "utimes", "vmsplice", "write", "writev",
        /* memory */
        "brk", "madvise", "membarrier", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mremap",
        "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages",
        /* processes, threads, signals */
        "arch_prctl", "capget", "capset", "clone", "execve", "execveat", "exit", "exit_group", "fork", "futex",
        "futex_waitv", "get_robust_list", "get_thread_area", "getcpu", "getegid", "geteuid", "getgid", "getgroups",
        "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getresgid", "getresuid", "getrlimit",
        "getrusage", "getsid", "gettid", "getuid", "ioprio_get", "ioprio_set", "kill", "personality",
        "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "restart_syscall", "rseq", "rt_sigaction",
        "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
        "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "set_robust_list",
        "set_thread_area", "set_tid_address", "setfsgid", "setfsuid", "setgid", "setgroups", "setpgid",
        "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setsid", "setuid", "sigaltstack",
        "tgkill", "tkill", "vfork", "wait4", "waitid",
        /* time */
        "alarm", "clock_getres", "clock_gettime", "clock_nanosleep", "getitimer", "gettimeofday", "nanosleep",
        "setitimer", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
        "timerfd_create", "timerfd_gettime", "timerfd_settime", "times",
        /* waiting and events on descriptors the process already has */
        "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "pause", "pipe", "pipe2",
        "poll", "ppoll", "pselect6", "select", "signalfd", "signalfd4",
        /* sockets (families checked by program 1) */
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recvfrom",
        "recvmmsg", "recvmsg", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socket", "socketpair",
        /* the machine, read only */
        "getrandom", "sysinfo", "uname",
        /* ioctl (requests checked by program 1) */
        "ioctl",
};

/* Refused on purpose with EPERM, whatever the arguments.  Grouped as in
 * docs/security.md. */
static const char *const refused[] = {
        /* Reaching into other processes. */
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd",
        /* Changing the file system view: old and new mount API, root, namespaces. */
        "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
        "fsconfig", "fsmount", "fspick", "mount_setattr",
        /* Large kernel attack surface with no use for R. */
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "keyctl", "add_key", "request_key", "fanotify_init", "fanotify_mark", "modify_ldt",
        /* Native AIO: a second I/O path beside read/write, with its own
         * kernel memory (aio-max-nr is host-wide). */
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        /* NUMA placement: needs CAP_SYS_NICE in Docker's profile; lets a
         * process pin or move memory across nodes. */
        "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages", "set_mempolicy_home_node",
        /* Anonymous executable memory files: with these, native code can be
         * written and dyn.load()ed despite noexec /tmp and /work; secret
         * memory is unmapped from the kernel and pins pages. */
        "memfd_create", "memfd_secret",
        /* POSIX message queues and System V IPC: objects that outlive the
         * process and hold kernel memory that no rlimit of the worker counts
         * (RLIMIT_MSGQUEUE is charged to the namespace owner's uid). */
        "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr", "shmget",
        "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
        "semctl",
        /* Handles bypass path-based checks (the "shocker" container escape). */
        "open_by_handle_at", "name_to_handle_at",
        /* The machine itself. */
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
        "swapoff", "acct", "quotactl", "quotactl_fd", "sethostname", "setdomainname", "syslog", "settimeofday",
        "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
        /* Limits are set from outside by the daemon; the code may not lift them. */
        "setrlimit",
};

/* Answered ENOSYS by the default (libseccomp refuses a rule that repeats
 * the default action), named here for the reader: clone3 and openat2 take
 * their flags and modes in memory, out of a filter's reach, and glibc falls
 * back to clone and openat when they are missing; inotify_init,
 * inotify_init1, inotify_add_watch and epoll_create, epoll_create1 make
 * instances counted per user, and libraries fall back to polling without
 * them; fchmodat2 (glibc falls back to fchmodat).  tests/unit/test_seccomp.c
 * checks each. */

/* The native number of a name, or -1 when this architecture (or this
 * libseccomp) has no such call. */
static int native_nr(const char *name) {
        int nr = seccomp_syscall_resolve_name_arch(SCMP_ARCH_NATIVE, name);

        return nr < 0 ? -1 : nr;
}

static int add_allowlist(scmp_filter_ctx ctx, bool allow_exec, char *err, size_t errlen) {
        int nr, r;

        for (size_t i = 0; i < ARRAY_SIZE(allowed); i++) {
                if ((nr = native_nr(allowed[i])) < 0)
                        continue;
                if (!allow_exec && (!strcmp(allowed[i], "execve") || !strcmp(allowed[i], "execveat")))
                        continue;
                if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0)
                        return filter_fail(err, errlen, r, "rule for %s", allowed[i]);
        }
        for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
                if ((nr = native_nr(refused[i])) < 0 || is_until_attach(refused[i]))
                        continue;
                if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0)) < 0)
                        return filter_fail(err, errlen, r, "rule for %s", refused[i]);
        }
        for (size_t i = 0; i < ARRAY_SIZE(until_attach); i++) {
                if ((nr = native_nr(until_attach[i])) < 0)
                        continue;
                if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0)
                        return filter_fail(err, errlen, r, "rule for %s", until_attach[i]);
        }
        /* No new programs once the worker runs (DESIGN §4). */
        if (!allow_exec && ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execve), 0)) < 0 ||
                            (r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execveat), 0)) < 0))
                return filter_fail(err, errlen, r, "rule for execve");
        return 0;
}

/* ---- program 1: argument checks ------------------------------------------- */

/* clone flags that create namespaces: each is refused on its own (a
 * masked-equality test per bit, since libseccomp cannot test "any of"). */
static const unsigned long clone_ns_flags[] = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,  CLONE_NEWIPC,
                                               CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET, CLONE_NEWTIME};

/* Calls that take a file mode, and which argument holds it.  The kernel
 * reads a umode_t (the low 16 bits), so testing low bits is exact. */
static const struct {
        const char *name;
        unsigned arg;
} mode_calls[] = {
        {"chmod", 1}, {"fchmod", 1}, {"fchmodat", 2}, {"fchmodat2", 2}, {"open", 2},  {"openat", 3},
        {"creat", 1}, {"mkdir", 1},  {"mkdirat", 2},  {"mknod", 1},     {"mknodat", 2},
};

static int add_argument_checks(scmp_filter_ctx ctx, bool allow_exec, char *err, size_t errlen) {
        const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
        int r;

        (void)allow_exec;
        /* clone: glibc's fork() and pthread_create() use it without
         * namespace flags; any CLONE_NEW* is refused (clone3, whose flags
         * are in memory, is ENOSYS in program 2). */
        for (size_t i = 0; i < ARRAY_SIZE(clone_ns_flags); i++)
                if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]))) < 0)
                        return filter_fail(err, errlen, r, "rule for clone");

        /* No set-id or sticky bit on anything the code makes or changes
         * (issue 16): such a file leaving the workspace for the host, copied
         * by a root user's tool, would run with its owner's rights there.
         * One masked test per bit.  (fchmodat2 is not in the allowlist at
         * all: ENOSYS, whose errno wins over this EPERM, and glibc falls
         * back to fchmodat.) */
        for (size_t i = 0; i < ARRAY_SIZE(mode_calls); i++) {
                int nr = native_nr(mode_calls[i].name);

                if (nr < 0)
                        continue;
                for (unsigned bit = 01000; bit <= 04000; bit <<= 1)
                        if ((r = seccomp_rule_add(ctx, eperm, nr, 1,
                                                  SCMP_CMP(mode_calls[i].arg, SCMP_CMP_MASKED_EQ, bit, bit))) < 0)
                                return filter_fail(err, errlen, r, "rule for %s", mode_calls[i].name);
        }

        /* personality: only the query (0xffffffff) and PER_LINUX (0) pass;
         * READ_IMPLIES_EXEC or ADDR_NO_RANDOMIZE would weaken the process.
         * The kernel reads the low 32 bits.  libseccomp allows one test per
         * argument and rule, and cannot express "neither 0 nor ~0"; but a
         * 32-bit value is neither exactly when some bit i differs from bit 0:
         * two masked tests per bit. */
        for (unsigned i = 1; i < 32; i++) {
                const uint64_t mask = 1ULL | (1ULL << i);

                if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, mask, 1ULL))) < 0 ||
                    (r = seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, mask, 1ULL << i))) < 0)
                        return filter_fail(err, errlen, r, "rule for personality");
        }
        /* The kernel ignores the high 32 bits, but Docker's profile (64-bit
         * comparisons) refuses them, and it is the floor. */
        for (unsigned i = 32; i < 64; i++)
                if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, 1ULL << i, 1ULL << i))) < 0)
                        return filter_fail(err, errlen, r, "rule for personality");

        /* prlimit64 with a new limit (arg 2 non-NULL) is refused; glibc's
         * getrlimit() is prlimit64(0, res, NULL, old) and R calls it. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_NE, 0))) < 0)
                return filter_fail(err, errlen, r, "rule for prlimit64");

        /* prctl(PR_SET_SECCOMP) installs a program as seccomp(2) does: the
         * lock answers seccomp(2) ENOSYS, and a program added here came after
         * it all the same (docs/security.md, "Round 7", finding 1).  A later
         * program cannot loosen the policy, but one answering
         * SECCOMP_RET_LOG turns every system call of the process into a line
         * of the host's kernel log (audit type 1326), and each program is
         * kernel memory.  The worker loads its own programs with seccomp(2);
         * the query (PR_GET_SECCOMP) stays.  The kernel reads the option's
         * low 32 bits. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(prctl), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffUL, PR_SET_SECCOMP))) < 0)
                return filter_fail(err, errlen, r, "rule for prctl");

        /* prctl(PR_SET_DUMPABLE, 0) makes the process's /proc/PID files
         * root's: an unprivileged daemon (no CAP_SYS_PTRACE) could then
         * read neither its fd directory nor smaps_rollup, so that its
         * monitor counted none of the socket and pipe buffers of the worker
         * and of the children that inherit the flag (docs/security.md,
         * "Round 7", finding 2).  Core dumps are stopped by RLIMIT_CORE
         * (jail.c) instead. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(prctl), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffUL, PR_SET_DUMPABLE))) < 0)
                return filter_fail(err, errlen, r, "rule for prctl");

        /* Only AF_UNIX sockets (R's own and the worker's socketpair): no
         * AF_INET/AF_INET6 (the net namespace has no route anyway),
         * AF_NETLINK, AF_PACKET, AF_VSOCK, AF_ALG and the rest.  A 64-bit
         * comparison: stray high bits are refused too. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX))) < 0 ||
            (r = seccomp_rule_add(ctx, eperm, SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX))) < 0)
                return filter_fail(err, errlen, r, "rule for socket");

        /* Faking terminal input (TIOCSTI) or console tricks (TIOCLINUX):
         * the worker has no terminal, but a leaked one must not be driven.
         * The kernel reads the request's low 32 bits. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, TIOCSTI))) < 0 ||
            (r = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, TIOCLINUX))) < 0)
                return filter_fail(err, errlen, r, "rule for ioctl");

        /* Pipes keep their default size: each grown pipe counts against the
         * per-user pipe-user-pages-soft, past which every pipe of that user
         * (the daemon's, when it is not root) shrinks to one page. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(fcntl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, F_SETPIPE_SZ))) < 0)
                return filter_fail(err, errlen, r, "rule for fcntl");
        /* Leases and directory notifications on files of the host: the
         * kernel grants F_SETLEASE to the file's owner whatever the mount's
         * read-only flag, and an unprivileged daemon's worker is the owner of
         * the daemon's files (an r_libs directory in the user's home): a
         * lease makes every other opener, on the host too, wait
         * fs.lease-break-time (45 s).  F_NOTIFY (dnotify) would watch host
         * directories and signal the worker.  F_SETOWN, F_SETOWN_EX and
         * F_SETSIG pick who gets SIGIO/SIGURG and which signal: nothing the
         * worker needs, and a pid outside its namespace is the one thing
         * it must never signal. */
        {
                static const int fcntl_refused[] = {F_SETLEASE, F_NOTIFY, F_SETOWN, F_SETOWN_EX, F_SETSIG};
                for (size_t i = 0; i < ARRAY_SIZE(fcntl_refused); i++)
                        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(fcntl), 1,
                                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL,
                                                          (uint64_t)fcntl_refused[i]))) < 0)
                                return filter_fail(err, errlen, r, "rule for fcntl");
        }
        /* Socket buffers are kernel memory that no resident set shows:
         * without a memory cgroup (an unprivileged daemon) the monitor's
         * only bound is what it counts, so the sizes stay the defaults it
         * charges (sessions/monitor.c).  SO_SNDBUF/SO_RCVBUF could raise
         * them to 2 x net.core.[wr]mem_max (8 MiB here), the *FORCE ones
         * past it with CAP_NET_ADMIN. */
        {
                static const int sockopt_refused[] = {SO_SNDBUF, SO_RCVBUF, SO_SNDBUFFORCE, SO_RCVBUFFORCE};
                for (size_t i = 0; i < ARRAY_SIZE(sockopt_refused); i++)
                        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(setsockopt), 2,
                                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, (uint64_t)SOL_SOCKET),
                                                  SCMP_A2(SCMP_CMP_MASKED_EQ, 0xffffffffUL,
                                                          (uint64_t)sockopt_refused[i]))) < 0)
                                return filter_fail(err, errlen, r, "rule for setsockopt");
        }
        return 0;
}

/* ---- compile and install --------------------------------------------------- */

/* Compile ctx into prog (exported into a memfd, read back).  0 or -errno. */
static int export_program(scmp_filter_ctx ctx, struct sock_fprog *prog, char *err, size_t errlen) {
        _cleanup_close_ int fd = -1;
        struct sock_filter *insns;
        off_t size;
        int r;

        fd = memfd_create("securerfs-seccomp", MFD_CLOEXEC);
        if (fd < 0)
                return filter_fail(err, errlen, -errno, "memfd_create");
        if ((r = seccomp_export_bpf(ctx, fd)) < 0)
                return filter_fail(err, errlen, r, "seccomp_export_bpf");
        size = lseek(fd, 0, SEEK_END);
        if (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
            size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS)
                return filter_fail(err, errlen, -EINVAL, "exported program has %lld bytes", (long long)size);
        insns = malloc((size_t)size);
        if (!insns)
                return filter_fail(err, errlen, -ENOMEM, "malloc");
        if (pread(fd, insns, (size_t)size, 0) != size) {
                free(insns);
                return filter_fail(err, errlen, -EIO, "read back the exported program");
        }
        *prog = (struct sock_fprog){.len = (unsigned short)(size / (off_t)sizeof(struct sock_filter)),
                                    .filter = insns};
        return 0;
}

/* One program: default action def, rules from add. */
/* ---- program 3: the lock ---------------------------------------------------- */

/* The calls of until_attach answered as the allowlist would without them:
 * EPERM for those it refuses, ENOSYS (its default) for the others.  Its own
 * default is "allow": it only takes away, and for an errno the kernel
 * answers the most recently installed program's. */
static int add_lock(scmp_filter_ctx ctx, bool allow_exec, char *err, size_t errlen) {
        int nr, r;

        (void)allow_exec;
        for (size_t i = 0; i < ARRAY_SIZE(until_attach); i++) {
                int answer = ENOSYS;

                if ((nr = native_nr(until_attach[i])) < 0)
                        continue;
                for (size_t j = 0; j < ARRAY_SIZE(refused); j++)
                        if (!strcmp(refused[j], until_attach[i]))
                                answer = EPERM;
                if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(answer), nr, 0)) < 0)
                        return filter_fail(err, errlen, r, "lock rule for %s", until_attach[i]);
        }
        return 0;
}

static int build_one(uint32_t def, int (*add)(scmp_filter_ctx, bool, char *, size_t), bool allow_exec,
                     struct sock_fprog *prog, char *err, size_t errlen) {
        scmp_filter_ctx ctx = seccomp_init(def);
        int r;

        if (!ctx)
                return filter_fail(err, errlen, -ENOMEM, "seccomp_init");
        /* Only the native ABI is in the filter, and a call through any
         * other (i386 through int 0x80, x32 on x86-64, whose numbers carry
         * __X32_SYSCALL_BIT) kills the process: those tables would each
         * need their own rules, and R never uses them. */
        if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0)
                r = filter_fail(err, errlen, r, "set the action for other architectures");
        /* The worker sets no_new_privs itself (capabilities_drop_all), before
         * loading. */
        else if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0)
                r = filter_fail(err, errlen, r, "seccomp_attr_set(CTL_NNP)");
        /* A binary tree over the system call numbers rather than a chain
         * of some 300 comparisons. */
        else if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)) < 0)
                r = filter_fail(err, errlen, r, "seccomp_attr_set(CTL_OPTIMIZE)");
        else if ((r = add(ctx, allow_exec, err, errlen)) >= 0)
                r = export_program(ctx, prog, err, errlen);
        seccomp_release(ctx);
        return r;
}

int syscall_filter_build(bool allow_exec, char *err, size_t errlen) {
        struct sock_fprog progs[FILTER_BASE + 1] = {{0}};
        int r;

        r = build_one(SCMP_ACT_ALLOW, add_argument_checks, allow_exec, &progs[0], err, errlen);
        if (r >= 0)
                r = build_one(SCMP_ACT_ERRNO(ENOSYS), add_allowlist, allow_exec, &progs[1], err, errlen);
        if (r >= 0)
                r = build_one(SCMP_ACT_ALLOW, add_lock, allow_exec, &progs[2], err, errlen);
        if (r < 0) {
                for (size_t i = 0; i < ARRAY_SIZE(progs); i++)
                        free(progs[i].filter);
                return r;
        }
        for (size_t i = 0; i < filter_count; i++)
                free(filter_progs[i].filter);
        memcpy(filter_progs, progs, sizeof(progs));
        filter_count = ARRAY_SIZE(progs);
        return 0;
}

/* Programs first to last-1 of filter_progs. */
static int install(size_t first, size_t last, char *err, size_t errlen) {
        if (filter_count == 0)
                return filter_fail(err, errlen, -ENOENT, "no filter was built");
        /* No TSYNC: the worker is single-threaded here (a fresh clone of the
         * zygote's one thread). */
        for (size_t i = first; i < last; i++)
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter_progs[i]) < 0)
                        return filter_fail(err, errlen, -errno, "install filter %zu (seccomp SECCOMP_SET_MODE_FILTER)",
                                           i + 1);
        return 0;
}

int syscall_filter_install(char *err, size_t errlen) {
        return install(0, FILTER_BASE, err, errlen);
}

int syscall_filter_lock(char *err, size_t errlen) {
        /* The lock last: it refuses seccomp(2), so nothing can be added after
         * it, and for two errnos the kernel answers with the later
         * program's. */
        return install(FILTER_BASE, FILTER_BASE + 1, err, errlen);
}

size_t syscall_filter_programs(const struct sock_fprog **progs) {
        *progs = filter_progs;
        return filter_count;
}
