/* Round 7 probes (test_round7.py): the seccomp policy as the session's own
 * native code sees it after the attach, the lock above all.  Each attempt
 * to add a program runs in a forked child, which reports through a pipe and
 * exits: whatever it manages to install stays in the child and goes with
 * it, the worker's own filters are never touched.
 *
 * Every probe writes its answer to *ret and errno to *err. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

/* The number of seccomp programs of this process (Seccomp_filters in
 * /proc/self/status, Linux 5.9), -1 if the line is missing. */
static int filters_of(const char *status) {
        char line[256];
        int n = -1;
        FILE *f = fopen(status, "re");

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Seccomp_filters: %d", &n) == 1)
                        break;
        fclose(f);
        return n;
}

void r7_filters(int *ret, int *err) {
        *ret = filters_of("/proc/self/status");
        *err = 0;
}

/* Seccomp: in /proc/self/status (0 off, 1 strict, 2 filter). */
void r7_mode(int *ret, int *err) {
        char line[256];
        FILE *f = fopen("/proc/self/status", "re");

        *ret = -1;
        *err = 0;
        if (!f) {
                *err = errno;
                return;
        }
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "Seccomp: %d", ret) == 1)
                        break;
        fclose(f);
}

/* A program that allows everything (what an attacker adds to get past an
 * earlier refusal, if the kernel ever let a later program loosen one), or
 * one that answers SECCOMP_RET_LOG for everything (each system call of the
 * process then goes to the host's kernel log). */
static struct sock_filter allow_all[] = {
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};
static struct sock_filter log_all[] = {
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_LOG),
};

/* How an attempt is made (*how):
 *   0  seccomp(SECCOMP_SET_MODE_FILTER, 0, allow-all)
 *   1  seccomp(SECCOMP_SET_MODE_FILTER, TSYNC, allow-all)
 *   2  seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER, allow-all)
 *   3  seccomp(SECCOMP_SET_MODE_STRICT, 0, NULL)
 *   4  seccomp(SECCOMP_GET_ACTION_AVAIL, 0, &SECCOMP_RET_LOG)
 *   5  seccomp(SECCOMP_GET_NOTIF_SIZES, 0, &sizes)
 *   6  prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, allow-all)
 *   7  prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, log-all)
 *   8  prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
 *   9  prctl(PR_GET_SECCOMP) (the query: must keep working)
 * In a child: *ret is the call's return value, *err its errno, *filters the
 * child's Seccomp_filters after it (its mode when strict: 1). */
void r7_seccomp(int *how, int *ret, int *err, int *filters) {
        struct sock_fprog allow = {.len = 1, .filter = allow_all}, logp = {.len = 1, .filter = log_all};
        int p[2], status;
        pid_t pid;

        *ret = -1;
        *err = 0;
        *filters = -1;
        if (pipe(p) < 0) {
                *err = errno;
                return;
        }
        pid = fork();
        if (pid < 0) {
                *err = errno;
                close(p[0]);
                close(p[1]);
                return;
        }
        if (pid == 0) {
                int out[3] = {-1, 0, -1};
                unsigned action = SECCOMP_RET_LOG;
                struct seccomp_notif_sizes sizes;
                long r = -1;

                close(p[0]);
                errno = 0;
                switch (*how) {
                case 0: r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &allow); break;
                case 1: r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &allow); break;
                case 2:
                        r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &allow);
                        break;
                case 3: r = syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL); break;
                case 4: r = syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action); break;
                case 5: r = syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes); break;
                case 6: r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &allow, 0, 0); break;
                case 7: r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &logp, 0, 0); break;
                case 8: r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0); break;
                case 9: r = prctl(PR_GET_SECCOMP, 0, 0, 0, 0); break;
                default: errno = EINVAL; break;
                }
                out[0] = (int)r;
                out[1] = r < 0 ? errno : 0;
                if (r >= 0 && (*how == 3 || *how == 8)) {
                        /* Strict mode: read, write, exit and sigreturn only;
                         * the mode itself says it took. */
                        out[2] = 1;
                        syscall(SYS_write, p[1], out, sizeof(out));
                        syscall(SYS_exit, 0);
                }
                out[2] = filters_of("/proc/self/status");
                if (write(p[1], out, sizeof(out)) != sizeof(out))
                        _exit(2);
                _exit(0);
        }
        close(p[1]);
        {
                int in[3];
                ssize_t n = read(p[0], in, sizeof(in));

                if (n == (ssize_t)sizeof(in)) {
                        *ret = in[0];
                        *err = in[1];
                        *filters = in[2];
                } else {
                        *err = EPIPE;
                }
        }
        close(p[0]);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
}

/* move_mount(AT_FDCWD, "/tmp", AT_FDCWD, "/work", 0) and open_tree of /tmp
 * with OPEN_TREE_CLONE: the two calls of the mount API the attach uses. */
void r7_mount_api(int *which, int *ret, int *err) {
        long r;

        errno = 0;
        if (*which == 0)
                r = syscall(SYS_move_mount, -100, "/tmp", -100, "/work", 0);
        else
                r = syscall(SYS_open_tree, -100, "/tmp", 1 /* OPEN_TREE_CLONE */);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
        if (r >= 0 && *which == 1)
                close((int)r);
}

/* prctl(PR_SET_DUMPABLE, *value): a process that is not dumpable has its
 * /proc/PID files owned by root and closed to a daemon of the same uid
 * without CAP_SYS_PTRACE (its fd directory, smaps_rollup). */
void r7_set_dumpable(int *value, int *ret, int *err) {
        errno = 0;
        *ret = prctl(PR_SET_DUMPABLE, (unsigned long)*value, 0, 0, 0);
        *err = *ret < 0 ? errno : 0;
}
