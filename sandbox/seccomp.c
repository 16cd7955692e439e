/* The worker's seccomp policy.  The filter is a denylist over a default of
 * "allow": R and its packages use a large and changing set of system calls,
 * and the jail (namespaces, no capabilities, read-only root) is the first
 * line; this filter takes away the kernel interfaces that hostile native
 * code (reached through an R or package bug) would use to attack the kernel
 * or to undo the jail.  Refusals answer EPERM (ENOSYS for clone3), never
 * kill: R reports an error and the session lives.  docs/security.md gives
 * each rule its reason; keep the two in step.
 *
 * libseccomp 2.5 (Debian 12) can only export a program to a file
 * descriptor, so the zygote exports into a memfd and reads it back. */
#include "seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
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

/* The compiled program, built in the zygote and inherited by every worker. */
static struct sock_filter *filter_insns;
static unsigned short filter_len;

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

/* Refused outright with EPERM, whatever the arguments.  Grouped as in
 * docs/security.md. */
static const struct {
        int nr;
        const char *name;
} refused[] = {
#define R(x) {SCMP_SYS(x), #x}
        /* Reaching into other processes. */
        R(ptrace), R(process_vm_readv), R(process_vm_writev), R(kcmp), R(pidfd_getfd),
        /* Changing the file system view: old and new mount API, root, namespaces. */
        R(mount), R(umount2), R(pivot_root), R(chroot), R(unshare), R(setns), R(open_tree), R(move_mount),
        R(fsopen), R(fsconfig), R(fsmount), R(fspick), R(mount_setattr),
        /* Large kernel attack surface with no use for R. */
        R(bpf), R(perf_event_open), R(userfaultfd), R(io_uring_setup), R(io_uring_enter),
        R(io_uring_register), R(keyctl), R(add_key), R(request_key), R(fanotify_init),
        /* Handles bypass path-based checks (the "shocker" container escape). */
        R(open_by_handle_at), R(name_to_handle_at),
        /* The machine itself. */
        R(kexec_load), R(kexec_file_load), R(init_module), R(finit_module), R(delete_module), R(reboot),
        R(swapon), R(swapoff), R(acct), R(quotactl), R(quotactl_fd), R(sethostname), R(setdomainname),
        R(syslog), R(settimeofday), R(clock_settime), R(clock_adjtime), R(adjtimex), R(iopl), R(ioperm),
        /* Limits are set from outside by the daemon; the code may not lift them. */
        R(setrlimit),
#undef R
};

/* clone flags that create namespaces: each is refused on its own (a
 * masked-equality test per bit, since libseccomp cannot test "any of"). */
static const unsigned long clone_ns_flags[] = {CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS,  CLONE_NEWIPC,
                                               CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET, CLONE_NEWTIME};

static int add_rules(scmp_filter_ctx ctx, bool allow_exec, char *err, size_t errlen) {
        const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
        int r;

        for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
                /* A name the headers know but this architecture lacks
                 * (iopl on arm64) resolves to a negative pseudo number:
                 * nothing to refuse. */
                if (refused[i].nr < 0)
                        continue;
                if ((r = seccomp_rule_add(ctx, eperm, refused[i].nr, 0)) < 0)
                        return filter_fail(err, errlen, r, "rule for %s", refused[i].name);
        }

        /* clone: glibc's fork() and pthread_create() use it without
         * namespace flags; any CLONE_NEW* is refused.  clone3 passes its
         * flags in memory, out of the filter's reach, so it answers ENOSYS
         * and glibc falls back to clone (DESIGN §7; Docker does the same). */
        for (size_t i = 0; i < ARRAY_SIZE(clone_ns_flags); i++)
                if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
                                          SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]))) < 0)
                        return filter_fail(err, errlen, r, "rule for clone");
        if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
                return filter_fail(err, errlen, r, "rule for clone3");

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

        /* prlimit64 with a new limit (arg 2 non-NULL) is refused; glibc's
         * getrlimit() is prlimit64(0, res, NULL, old) and R calls it. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_NE, 0))) < 0)
                return filter_fail(err, errlen, r, "rule for prlimit64");

        /* Only AF_UNIX sockets (R's own and the worker's socketpair): no
         * AF_INET/AF_INET6 (the net namespace has no route anyway),
         * AF_NETLINK, AF_PACKET, AF_VSOCK, AF_ALG and the rest. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX))) < 0 ||
            (r = seccomp_rule_add(ctx, eperm, SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX))) < 0)
                return filter_fail(err, errlen, r, "rule for socket");

        /* Faking terminal input (TIOCSTI) or console tricks (TIOCLINUX):
         * the worker has no terminal, but a leaked one must not be driven. */
        if ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, TIOCSTI))) < 0 ||
            (r = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, TIOCLINUX))) < 0)
                return filter_fail(err, errlen, r, "rule for ioctl");

        /* No new programs once the worker runs (DESIGN §4). */
        if (!allow_exec && ((r = seccomp_rule_add(ctx, eperm, SCMP_SYS(execve), 0)) < 0 ||
                            (r = seccomp_rule_add(ctx, eperm, SCMP_SYS(execveat), 0)) < 0))
                return filter_fail(err, errlen, r, "rule for execve");
        return 0;
}

int syscall_filter_build(bool allow_exec, char *err, size_t errlen) {
        scmp_filter_ctx ctx;
        struct sock_filter *insns = NULL;
        off_t size;
        int fd = -1, r;

        /* Default: allow.  Only the native ABI is in the filter, and a call
         * through any other (i386 through int 0x80, x32 on x86-64, whose
         * numbers carry __X32_SYSCALL_BIT) kills the process: those tables
         * would each need their own rules, and R never uses them. */
        ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return filter_fail(err, errlen, -ENOMEM, "seccomp_init");
        if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)) < 0) {
                r = filter_fail(err, errlen, r, "set the action for other architectures");
                goto out;
        }
        /* The worker sets no_new_privs itself (jail_enter), before loading. */
        if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)) < 0) {
                r = filter_fail(err, errlen, r, "seccomp_attr_set(CTL_NNP)");
                goto out;
        }
        if ((r = add_rules(ctx, allow_exec, err, errlen)) < 0)
                goto out;

        fd = memfd_create("securerfs-seccomp", MFD_CLOEXEC);
        if (fd < 0) {
                r = filter_fail(err, errlen, -errno, "memfd_create");
                goto out;
        }
        if ((r = seccomp_export_bpf(ctx, fd)) < 0) {
                r = filter_fail(err, errlen, r, "seccomp_export_bpf");
                goto out;
        }
        size = lseek(fd, 0, SEEK_END);
        if (size <= 0 || size % (off_t)sizeof(struct sock_filter) ||
            size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
                r = filter_fail(err, errlen, -EINVAL, "exported program has %lld bytes", (long long)size);
                goto out;
        }
        insns = malloc((size_t)size);
        if (!insns) {
                r = filter_fail(err, errlen, -ENOMEM, "malloc");
                goto out;
        }
        if (pread(fd, insns, (size_t)size, 0) != size) {
                r = filter_fail(err, errlen, -EIO, "read back the exported program");
                goto out;
        }
        free(filter_insns);
        filter_insns = insns;
        insns = NULL;
        filter_len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
        r = 0;
out:
        free(insns);
        if (fd >= 0)
                close(fd);
        seccomp_release(ctx);
        return r;
}

int syscall_filter_install(char *err, size_t errlen) {
        struct sock_fprog prog = {.len = filter_len, .filter = filter_insns};

        if (!filter_insns)
                return filter_fail(err, errlen, -ENOENT, "no filter was built");
        /* No TSYNC: the worker is single-threaded here (a fresh clone of the
         * zygote's one thread). */
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
                return filter_fail(err, errlen, -errno, "install the filter (seccomp SECCOMP_SET_MODE_FILTER)");
        return 0;
}
