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
#include <asm/ldt.h>
#include <linux/aio_abi.h>
#include <linux/mempolicy.h>
#include <mqueue.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>

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

/* ---- identity and kernel surfaces (tests/sandbox/test_identity.py,
 * test_proc_dev.py, test_syscalls.py) ---- */

/* probe_nr(nr, c(a0, ..., a5)): the raw system call number nr with integer
 * arguments (pointers NULL), for calls whose refusal errno cannot be
 * confused with the kernel's own answer to such arguments.  A descriptor
 * it returns is closed. */
void probe_nr(double *nr, double *a, int *ret, int *err) {
        errno = 0;
        long r = syscall((long)*nr, (long)a[0], (long)a[1], (long)a[2], (long)a[3], (long)a[4], (long)a[5]);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
}

/* The same with a path as argument 0 (chmod, creat, mkdir, mknod, open)
 * or argument 1 (fchmodat, openat, mkdirat, mknodat: dirfd AT_FDCWD). */
void probe_nr_path(double *nr, char **path, int *path_arg, double *a, int *ret, int *err) {
        long v[6];

        for (int i = 0; i < 6; i++)
                v[i] = (long)a[i];
        v[*path_arg] = (long)*path;
        errno = 0;
        long r = syscall((long)*nr, v[0], v[1], v[2], v[3], v[4], v[5]);
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
        if (r > 2 && (*nr == SYS_open || *nr == SYS_openat || *nr == SYS_creat))
                close((int)r);
}

/* Well-formed calls of the families the filter refuses (each harmless
 * inside the jail if it went through: a descriptor closed, a context
 * destroyed, a policy that is the default).  *which picks one. */
void probe_family(char **which, int *ret, int *err) {
        const char *w = *which;
        long r = -1;

        errno = 0;
        if (!strcmp(w, "modify_ldt")) {
                char buf[LDT_ENTRY_SIZE * 4];
                r = syscall(SYS_modify_ldt, 0, buf, sizeof(buf)); /* read */
        } else if (!strcmp(w, "memfd_create")) {
                r = syscall(SYS_memfd_create, "probe", 1U /* MFD_CLOEXEC */);
        } else if (!strcmp(w, "memfd_secret")) {
                r = syscall(447 /* SYS_memfd_secret */, 0);
        } else if (!strcmp(w, "io_setup")) {
                aio_context_t ctx = 0;
                r = syscall(SYS_io_setup, 1, &ctx);
                if (r == 0)
                        syscall(SYS_io_destroy, ctx);
        } else if (!strcmp(w, "mbind")) {
                r = syscall(SYS_mbind, NULL, 0, MPOL_DEFAULT, NULL, 0, 0);
        } else if (!strcmp(w, "set_mempolicy")) {
                r = syscall(SYS_set_mempolicy, MPOL_DEFAULT, NULL, 0);
        } else if (!strcmp(w, "get_mempolicy")) {
                int mode;
                r = syscall(SYS_get_mempolicy, &mode, NULL, 0, NULL, 0);
        } else if (!strcmp(w, "migrate_pages")) {
                unsigned long mask = 1;
                r = syscall(SYS_migrate_pages, 0, 8 * sizeof(mask), &mask, &mask);
        } else if (!strcmp(w, "move_pages")) {
                r = syscall(SYS_move_pages, 0, 0, NULL, NULL, NULL, 0);
        } else if (!strcmp(w, "inotify_init1")) {
                r = syscall(SYS_inotify_init1, IN_CLOEXEC);
        } else if (!strcmp(w, "inotify_init")) {
                r = syscall(SYS_inotify_init);
        } else if (!strcmp(w, "epoll_create1")) {
                r = syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
        } else if (!strcmp(w, "mq_open")) {
                struct mq_attr at = {.mq_maxmsg = 1, .mq_msgsize = 16};
                r = syscall(SYS_mq_open, "probe", O_RDWR | O_CREAT | O_CLOEXEC, 0600, &at);
                if (r >= 0)
                        syscall(SYS_mq_unlink, "probe");
        } else if (!strcmp(w, "shmget")) {
                r = syscall(SYS_shmget, IPC_PRIVATE, 4096, IPC_CREAT | 0600);
                if (r >= 0)
                        syscall(SYS_shmctl, (int)r, IPC_RMID, NULL);
        } else if (!strcmp(w, "fanotify_init")) {
                r = syscall(SYS_fanotify_init, 0, O_RDONLY);
        } else if (!strcmp(w, "openat2")) {
                struct {
                        uint64_t flags, mode, resolve;
                } how = {O_RDONLY | O_CLOEXEC, 0, 0};
                r = syscall(437 /* SYS_openat2 */, AT_FDCWD, "/", &how, sizeof(how));
        } else if (!strcmp(w, "pipe_grow")) {
                int p[2];
                if (pipe2(p, O_CLOEXEC) < 0) {
                        r = -1;
                } else {
                        r = fcntl(p[0], 1031 /* F_SETPIPE_SZ */, 1 << 20);
                        int e = errno;
                        close(p[0]);
                        close(p[1]);
                        errno = e;
                }
        } else if (!strcmp(w, "pipe_size")) {
                int p[2];
                if (pipe2(p, O_CLOEXEC) < 0) {
                        r = -1;
                } else {
                        r = fcntl(p[0], 1032 /* F_GETPIPE_SZ */);
                        close(p[0]);
                        close(p[1]);
                }
        } else {
                *ret = -1;
                *err = -1; /* unknown name: a bug in the test */
                return;
        }
        *ret = (int)r;
        *err = r < 0 ? errno : 0;
        if (r > 2 && (!strcmp(w, "memfd_create") || !strcmp(w, "memfd_secret") || !strncmp(w, "inotify", 7) ||
                      !strcmp(w, "epoll_create1") || !strcmp(w, "mq_open") || !strcmp(w, "fanotify_init") ||
                      !strcmp(w, "openat2")))
                close((int)r);
}

/* n inotify instances, all kept open until the end: how many the kernel
 * gave (ret) and the errno of the first refusal (err, 0 if none). */
void probe_inotify_many(int *n, int *ret, int *err) {
        int fds[1024], got = 0;

        *err = 0;
        for (int i = 0; i < *n && i < 1024; i++) {
                int fd = (int)syscall(SYS_inotify_init1, IN_CLOEXEC);
                if (fd < 0) {
                        if (!*err)
                                *err = errno;
                        continue;
                }
                fds[got++] = fd;
        }
        *ret = got;
        for (int i = 0; i < got; i++)
                close(fds[i]);
}

/* utimensat(AT_FDCWD, path, NULL, 0): "touch to now", which needs only
 * write access to the file, not its ownership. */
void probe_touch_now(char **path, int *ret, int *err) {
        *ret = utimensat(AT_FDCWD, *path, NULL, 0);
        *err = *ret < 0 ? errno : 0;
}

/* chown(path, -1, -1): changes nothing but the ctime if allowed. */
void probe_chown_same(char **path, int *ret, int *err) {
        *ret = chown(*path, (uid_t)-1, (gid_t)-1);
        *err = *ret < 0 ? errno : 0;
}

/* The stack canary (x86-64: the TCB's stack_guard at %fs:0x28) and the
 * first 8 bytes at AT_RANDOM, each as two 32-bit halves: what native code
 * in a session can read of the exploit-mitigation secrets. */
void probe_secrets(double *canary, double *at_random) {
#if defined(__x86_64__)
        uint64_t v;
        __asm__ volatile("movq %%fs:0x28, %0" : "=r"(v));
        canary[0] = (double)(v >> 32);
        canary[1] = (double)(v & 0xffffffffu);
#else
        canary[0] = canary[1] = -1;
#endif
        const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
        uint64_t a = 0;
        if (r)
                memcpy(&a, r, sizeof(a));
        at_random[0] = (double)(a >> 32);
        at_random[1] = (double)(a & 0xffffffffu);
}
