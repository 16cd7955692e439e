/* Test-only native code for the escape suite: R cannot make most system
 * calls by itself, and .C() drops a function's return value, so calling libc
 * directly shows nothing.  The suite compiles this file into a directory it
 * passes as -o r_libs=DIR (bound read-only, exec allowed, into the jail), and
 * R code dyn.load()s it and calls these through .C(), which hands every
 * argument over as a pointer.  This stands for the worst case the seccomp
 * filter exists for: hostile native code running in the worker.
 *
 * Every probe writes the call's return value to *ret and errno to *err. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct {
        const char *name;
        long nr;
} calls[] = {
#define C(x) {#x, SYS_##x}
        C(ptrace), C(process_vm_readv), C(process_vm_writev), C(mount), C(umount2), C(pivot_root), C(chroot),
        C(unshare), C(setns), C(bpf), C(perf_event_open), C(keyctl), C(add_key), C(request_key), C(kexec_load),
        C(kexec_file_load), C(init_module), C(finit_module), C(delete_module), C(reboot), C(swapon), C(swapoff),
        C(acct), C(quotactl), C(userfaultfd), C(io_uring_setup), C(io_uring_enter), C(io_uring_register),
        C(open_by_handle_at), C(name_to_handle_at), C(personality), C(socket), C(socketpair), C(execve),
        C(execveat), C(getpid), C(kill), C(fsopen), C(open_tree), C(kcmp), C(getuid),
#undef C
};

/* probe_syscall("name", c(a0, ..., a5)): the raw system call with integer
 * arguments (pointers are NULL, 0). */
void probe_syscall(char **name, double *a, int *ret, int *err) {
        for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
                if (strcmp(*name, calls[i].name) != 0)
                        continue;
                errno = 0;
                long r = syscall(calls[i].nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4],
                                 (long)a[5]);
                *ret = (int)r;
                *err = r < 0 ? errno : 0;
                if (r >= 0 && (!strcmp(*name, "socket") || !strcmp(*name, "userfaultfd") ||
                               !strcmp(*name, "io_uring_setup")))
                        close((int)r);
                return;
        }
        *ret = -1;
        *err = -1; /* unknown name: a bug in the test */
}

/* clone(flags | SIGCHLD) like fork(); a child exits at once. */
void probe_clone(double *flags, int *ret, int *err) {
        long r = syscall(SYS_clone, (unsigned long)*flags | SIGCHLD, 0L, 0L, 0L, 0L);

        if (r == 0)
                _exit(0);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
        if (r > 0)
                waitpid((pid_t)r, NULL, 0);
}

/* clone3 with the given flags (a real, well-formed struct clone_args). */
void probe_clone3(double *flags, int *ret, int *err) {
        struct clone_args args;

        memset(&args, 0, sizeof(args));
        args.flags = (uint64_t)*flags;
        args.exit_signal = SIGCHLD;
        long r = syscall(SYS_clone3, &args, sizeof(args));
        if (r == 0)
                _exit(0);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
        if (r > 0)
                waitpid((pid_t)r, NULL, 0);
}

/* prlimit64(0, RLIMIT_NOFILE, new, old): *set != 0 asks for a new soft
 * limit equal to the hard one (lifting nothing, but still a change
 * request); *set == 0 only reads, and *value gets the soft limit. */
void probe_prlimit(int *set, double *value, int *ret, int *err) {
        struct rlimit cur, want;

        getrlimit(RLIMIT_NOFILE, &cur);
        want.rlim_cur = want.rlim_max = cur.rlim_max;
        long r = syscall(SYS_prlimit64, 0L, (long)RLIMIT_NOFILE, *set ? &want : NULL, &cur);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
        *value = (double)cur.rlim_cur;
}

/* The old setrlimit system call (glibc itself uses prlimit64). */
void probe_setrlimit(int *ret, int *err) {
        struct rlimit cur;

        getrlimit(RLIMIT_NOFILE, &cur);
        long r = syscall(SYS_setrlimit, (long)RLIMIT_NOFILE, &cur);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
}

/* connect() to the abstract unix socket "\0<name>". */
void probe_abstract(char **name, int *ret, int *err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t n = strlen(*name);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0) {
                *ret = -1;
                *err = errno;
                return;
        }
        if (n > sizeof(sa.sun_path) - 1)
                n = sizeof(sa.sun_path) - 1;
        memcpy(sa.sun_path + 1, *name, n);
        int r = connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n));
        *ret = r;
        *err = r < 0 ? errno : 0;
        close(fd);
}

/* sendto() a UDP datagram to 127.0.0.1:*port (socket() is what fails). */
void probe_udp(int *port, int *ret, int *err) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        *ret = fd;
        *err = fd < 0 ? errno : 0;
        if (fd >= 0) {
                struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)*port),
                                         .sin_addr.s_addr = htonl(0x7f000001)};
                *ret = (int)sendto(fd, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa));
                *err = *ret < 0 ? errno : 0;
                close(fd);
        }
}

void probe_sethostname(char **name, int *ret, int *err) {
        *ret = sethostname(*name, strlen(*name));
        *err = *ret < 0 ? errno : 0;
}

/* ioctl(fd, TIOCSTI, "x"): push a byte into a terminal's input. */
void probe_tiocsti(int *fd, int *ret, int *err) {
        char c = 'x';

        *ret = ioctl(*fd, TIOCSTI, &c);
        *err = *ret < 0 ? errno : 0;
}

/* name_to_handle_at(AT_FDCWD, "/", handle, &mount_id, 0). */
void probe_name_to_handle(int *ret, int *err) {
        char buf[sizeof(struct file_handle) + 128];
        struct file_handle *h = (struct file_handle *)buf;
        int mount_id;

        h->handle_bytes = 128;
        *ret = (int)syscall(SYS_name_to_handle_at, AT_FDCWD, "/", h, &mount_id, 0);
        *err = *ret < 0 ? errno : 0;
}

/* execve("/usr/bin/true"): replaces the worker if it succeeds. */
void probe_execve(int *ret, int *err) {
        char *argv[] = {"true", NULL}, *envp[] = {NULL};

        *ret = (int)syscall(SYS_execve, "/usr/bin/true", argv, envp);
        *err = *ret < 0 ? errno : 0;
}

/* getpid through the x32 ABI (x86-64 only): the filter kills the process. */
void probe_x32(int *ret, int *err) {
#if defined(__x86_64__)
        *ret = (int)syscall(0x40000000L | 39L);
        *err = *ret < 0 ? errno : 0;
#else
        *ret = -1;
        *err = ENOSYS;
#endif
}

/* getpid through the i386 ABI (int 0x80, x86-64 only): killed likewise. */
void probe_int80(int *ret, int *err) {
#if defined(__x86_64__)
        long r = 20; /* __NR_getpid on i386 */

        __asm__ volatile("int $0x80" : "+a"(r) : : "memory");
        *ret = (int)r;
        *err = r < 0 ? (int)-r : 0;
#else
        *ret = -1;
        *err = ENOSYS;
#endif
}
