/* The worker's compiled seccomp policy (sandbox/seccomp.c), checked without
 * running a single system call: the BPF programs syscall_filter_build()
 * makes are run here by a small interpreter of the classic BPF that seccomp
 * accepts, on made-up seccomp_data, and combined as the kernel combines
 * installed filters (kernel/seccomp.c, seccomp_run_filters(): the last
 * installed runs first, and a strictly lower action replaces the answer).
 *
 *   1. The floor: for every x86-64 system call number, and for a spread of
 *      argument values, our answer may be "allow" only where Docker's
 *      default profile for a container without capabilities allows too
 *      (tests/unit/docker_default_seccomp.txt, given as argv[1]).
 *   2. The decisions of issues 9 and 16, call by call: modify_ldt,
 *      memfd_secret, native AIO, NUMA policy, memfd_create, inotify,
 *      epoll instances, message queues; set-id and sticky modes in every
 *      call that takes a mode; pipe growth; the older rules.
 *
 * The same filter is tried from inside the real sandbox by
 * tests/sandbox/test_syscalls.py. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "check.h"
#include "macros.h"
#include "sandbox/seccomp.h"

#ifndef F_SETPIPE_SZ
#define F_SETPIPE_SZ 1031
#define F_GETPIPE_SZ 1032
#endif

/* ---- a classic BPF interpreter, seccomp's subset -------------------------- */

/* Run prog on d; returns its SECCOMP_RET_* value, or 0xdeadbeef for a
 * program the kernel would refuse (an unknown instruction, a read outside
 * seccomp_data, a jump out of the program). */
static uint32_t bpf_run(const struct sock_fprog *prog, const struct seccomp_data *d) {
        uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0};
        const uint8_t *data = (const uint8_t *)d;

        for (unsigned pc = 0; pc < prog->len; pc++) {
                const struct sock_filter *f = &prog->filter[pc];
                uint32_t src = BPF_SRC(f->code) == BPF_X ? x : f->k;

                switch (BPF_CLASS(f->code)) {
                case BPF_LD:
                case BPF_LDX: {
                        uint32_t v;

                        switch (BPF_MODE(f->code)) {
                        case BPF_ABS:
                                if (BPF_SIZE(f->code) != BPF_W || f->k % 4 || f->k + 4 > sizeof(*d))
                                        return 0xdeadbeef;
                                memcpy(&v, data + f->k, 4);
                                break;
                        case BPF_LEN:
                                v = sizeof(*d);
                                break;
                        case BPF_IMM:
                                v = f->k;
                                break;
                        case BPF_MEM:
                                if (f->k >= BPF_MEMWORDS)
                                        return 0xdeadbeef;
                                v = mem[f->k];
                                break;
                        default:
                                return 0xdeadbeef;
                        }
                        if (BPF_CLASS(f->code) == BPF_LD)
                                a = v;
                        else
                                x = v;
                        break;
                }
                case BPF_ST:
                case BPF_STX:
                        if (f->k >= BPF_MEMWORDS)
                                return 0xdeadbeef;
                        mem[f->k] = BPF_CLASS(f->code) == BPF_ST ? a : x;
                        break;
                case BPF_ALU:
                        switch (BPF_OP(f->code)) {
                        case BPF_ADD: a += src; break;
                        case BPF_SUB: a -= src; break;
                        case BPF_MUL: a *= src; break;
                        case BPF_DIV:
                                if (src == 0)
                                        return 0;
                                a /= src;
                                break;
                        case BPF_OR: a |= src; break;
                        case BPF_AND: a &= src; break;
                        case BPF_LSH: a = src >= 32 ? 0 : a << src; break;
                        case BPF_RSH: a = src >= 32 ? 0 : a >> src; break;
                        case BPF_NEG: a = -a; break;
                        case BPF_XOR: a ^= src; break;
                        default: return 0xdeadbeef;
                        }
                        break;
                case BPF_JMP: {
                        bool taken;

                        if (BPF_OP(f->code) == BPF_JA) {
                                pc += f->k;
                                if (pc >= prog->len)
                                        return 0xdeadbeef;
                                continue;
                        }
                        switch (BPF_OP(f->code)) {
                        case BPF_JEQ: taken = a == src; break;
                        case BPF_JGT: taken = a > src; break;
                        case BPF_JGE: taken = a >= src; break;
                        case BPF_JSET: taken = (a & src) != 0; break;
                        default: return 0xdeadbeef;
                        }
                        pc += taken ? f->jt : f->jf;
                        if (pc + 1 > prog->len)
                                return 0xdeadbeef;
                        break;
                }
                case BPF_RET:
                        return BPF_RVAL(f->code) == BPF_A ? a : f->k;
                case BPF_MISC:
                        if (BPF_MISCOP(f->code) == BPF_TAX)
                                x = a;
                        else
                                a = x;
                        break;
                default:
                        return 0xdeadbeef;
                }
        }
        return 0xdeadbeef; /* fell off the end: the kernel refuses such a program */
}

/* How many of the programs are installed: all (an attached worker), or all
 * but the lock (a worker waiting for its session). */
static size_t installed = (size_t)-1;

/* The kernel's answer for a process with these programs installed. */
static uint32_t kernel_answer(uint32_t arch, int nr, const uint64_t args[6]) {
        const struct sock_fprog *progs;
        size_t n = syscall_filter_programs(&progs);
        struct seccomp_data d = {.nr = nr, .arch = arch};
        uint32_t ret = SECCOMP_RET_ALLOW;

        if (installed < n)
                n = installed;
        memcpy(d.args, args, sizeof(d.args));
        /* seccomp_run_filters(): from the most recently installed on, a
         * strictly lower (signed) action replaces the answer. */
        for (size_t i = n; i-- > 0;) {
                uint32_t cur = bpf_run(&progs[i], &d);

                if (cur == 0xdeadbeef)
                        return cur;
                if (i == n - 1 || (int32_t)(cur & SECCOMP_RET_ACTION_FULL) < (int32_t)(ret & SECCOMP_RET_ACTION_FULL))
                        ret = cur;
        }
        return ret;
}

#define ALLOW SECCOMP_RET_ALLOW
#define EPERM_ (SECCOMP_RET_ERRNO | EPERM)
#define ENOSYS_ (SECCOMP_RET_ERRNO | ENOSYS)

static uint32_t answer(const char *name, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) {
        const uint64_t args[6] = {a0, a1, a2, a3, 0, 0};
        int nr = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, name);

        if (nr < 0) {
                fprintf(stderr, "libseccomp does not know %s\n", name);
                return 0xdeadbeef;
        }
        return kernel_answer(AUDIT_ARCH_X86_64, nr, args);
}

static int expect(const char *name, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint32_t want) {
        uint32_t got = answer(name, a0, a1, a2, a3);

        if (got != want)
                fprintf(stderr, "%s(%#llx, %#llx, %#llx, %#llx): got %#x, want %#x\n", name, (unsigned long long)a0,
                        (unsigned long long)a1, (unsigned long long)a2, (unsigned long long)a3, got, want);
        return got == want;
}

/* ---- Docker's list ------------------------------------------------------- */

struct docker_rule {
        char name[64];
        enum { ANY, ONE_OF, NOT, MASKED } kind;
        unsigned arg;
        uint64_t values[8], mask;
        size_t n_values;
};

static struct docker_rule docker[512];
static size_t n_docker;

static int load_docker(const char *path) {
        FILE *f = fopen(path, "re");
        char line[256];

        if (!f) {
                perror(path);
                return -1;
        }
        while (fgets(line, sizeof(line), f)) {
                struct docker_rule *r = &docker[n_docker];
                char cond[128] = "";

                if (line[0] == '#' || line[0] == '\n')
                        continue;
                if (n_docker == sizeof(docker) / sizeof(docker[0]) || sscanf(line, "%63s %127s", r->name, cond) < 1)
                        break;
                r->kind = ANY;
                if (cond[0]) {
                        char *p;
                        if (cond[0] != 'a' || (r->arg = (unsigned)strtoul(cond + 1, &p, 10)) > 5)
                                goto bad;
                        if (p[0] == '=' && p[1] == '=') {
                                r->kind = ONE_OF;
                                for (p += 2; *p && r->n_values < 8; p += *p == '|')
                                        r->values[r->n_values++] = strtoull(p, &p, 10);
                        } else if (p[0] == '!' && p[1] == '=') {
                                r->kind = NOT;
                                r->values[0] = strtoull(p + 2, NULL, 10);
                        } else if (p[0] == '&') {
                                r->kind = MASKED;
                                r->mask = strtoull(p + 1, &p, 16);
                                if (p[0] != '=' || p[1] != '=')
                                        goto bad;
                                r->values[0] = strtoull(p + 2, NULL, 10);
                        } else {
                                goto bad;
                        }
                }
                n_docker++;
        }
        fclose(f);
        return 0;
bad:
        fprintf(stderr, "%s: cannot read \"%s\"\n", path, line);
        fclose(f);
        return -1;
}

/* Would Docker's default profile allow name with these arguments? */
static bool docker_allows(const char *name, const uint64_t args[6]) {
        for (size_t i = 0; i < n_docker; i++) {
                const struct docker_rule *r = &docker[i];
                uint64_t v = args[r->arg];

                if (strcmp(r->name, name) != 0)
                        continue;
                switch (r->kind) {
                case ANY:
                        return true;
                case NOT:
                        if (v != r->values[0])
                                return true;
                        break;
                case MASKED:
                        if ((v & r->mask) == r->values[0])
                                return true;
                        break;
                case ONE_OF:
                        for (size_t k = 0; k < r->n_values; k++)
                                if (v == r->values[k])
                                        return true;
                        break;
                }
        }
        return false;
}

/* ---- the floor -------------------------------------------------------------- */

static uint64_t lcg(uint64_t *s) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        return *s;
}

/* Every native call number, with zero, all-ones, random arguments, and the
 * values Docker's conditions are about: allowed by us => allowed by Docker. */
static void check_floor(void) {
        uint64_t seed = 42, args[6];
        unsigned calls = 0, allowed = 0, vectors = 0;
        int bad = 0;

        for (int nr = 0; nr < 1024; nr++) {
                char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_X86_64, nr);

                if (!name)
                        continue;
                calls++;
                bool any_allowed = false;
                for (int v = 0; v < 64 + 64 + 48; v++) {
                        if (v == 0)
                                memset(args, 0, sizeof(args));
                        else if (v == 1)
                                memset(args, 0xff, sizeof(args));
                        else if (v < 64)
                                for (int k = 0; k < 6; k++)
                                        args[k] = lcg(&seed) >> (v % 3 ? 33 : 0);
                        else if (v < 128) {
                                /* One bit of argument 0 (clone's flags,
                                 * personality values), SIGCHLD as fork has. */
                                memset(args, 0, sizeof(args));
                                args[0] = (1ULL << (v - 64)) | 17;
                        } else {
                                /* Small values of argument 0: socket
                                 * families, personalities. */
                                memset(args, 0, sizeof(args));
                                args[0] = (uint64_t)(v - 128);
                        }
                        vectors++;
                        uint32_t got = kernel_answer(AUDIT_ARCH_X86_64, nr, args);
                        if (got == 0xdeadbeef) {
                                fprintf(stderr, "%s: the program is not valid classic BPF\n", name);
                                bad++;
                                break;
                        }
                        if (got != SECCOMP_RET_ALLOW)
                                continue;
                        any_allowed = true;
                        if (!docker_allows(name, args)) {
                                fprintf(stderr, "%s (%d) is allowed with a0=%#llx, which Docker's default refuses\n",
                                        name, nr, (unsigned long long)args[0]);
                                bad++;
                                break;
                        }
                }
                allowed += any_allowed;
                free(name);
        }
        printf("# floor: %u system calls, %u vectors each; %u allowed in some form\n", calls, vectors / (calls ? calls : 1),
               allowed);
        CHECK(calls > 300);
        CHECK(allowed > 150 && allowed < calls);
        CHECK(bad == 0);
}

/* ---- the decisions ------------------------------------------------------------ */

static void check_decisions(bool allow_exec) {
        static const char *const eperm[] = {
                "modify_ldt", "memfd_secret", "memfd_create", "io_setup", "io_submit", "io_getevents", "io_pgetevents",
                "io_cancel", "io_destroy", "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages",
                "set_mempolicy_home_node", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
                "mq_getsetattr", "shmget", "shmat", "msgget", "semget", "fanotify_init", "fanotify_mark", "ptrace",
                "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd", "mount",
                "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen", "bpf",
                "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl",
                "add_key", "request_key", "open_by_handle_at", "name_to_handle_at", "reboot", "kexec_load",
                "init_module", "finit_module", "swapon", "syslog", "sethostname", "setrlimit", "iopl", "ioperm",
                "adjtimex", "clock_adjtime", "clock_settime",
        };
        static const char *const enosys[] = {"clone3", "openat2", "inotify_init", "inotify_init1",
                                             "inotify_add_watch", "inotify_rm_watch", "epoll_create",
                                             "epoll_create1", "fchmodat2", "seccomp", "landlock_create_ruleset",
                                             "process_mrelease", "uselib", "ustat", "vhangup", "lookup_dcookie"};
        int ok = 1;

        for (size_t i = 0; i < sizeof(eperm) / sizeof(eperm[0]); i++)
                ok &= expect(eperm[i], 0, 0, 0, 0, EPERM_);
        for (size_t i = 0; i < sizeof(enosys) / sizeof(enosys[0]); i++)
                ok &= expect(enosys[i], 0, 0, 0, 0, ENOSYS_);
        CHECK(ok);

        /* Modes: every call that takes one, every one of 07000. */
        static const struct {
                const char *name;
                unsigned arg;
        } modes[] = {{"chmod", 1}, {"fchmod", 1}, {"fchmodat", 2}, {"open", 2},    {"openat", 3},
                     {"creat", 1}, {"mkdir", 1},  {"mkdirat", 2},  {"mknod", 1},   {"mknodat", 2}};
        static const uint64_t bad_modes[] = {04000, 02000, 01000, 06777, 04755, 02755, 01777, 0104644,
                                             (0xffffffffULL << 32) | 04000};
        static const uint64_t good_modes[] = {0, 0644, 0755, 0777, 0100644, 0xffff0000000001ffULL};
        ok = 1;
        for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
                uint64_t a[4] = {3, O_CREAT | O_WRONLY, 0, 0};

                for (size_t m = 0; m < sizeof(bad_modes) / sizeof(bad_modes[0]); m++) {
                        a[modes[i].arg] = bad_modes[m];
                        ok &= expect(modes[i].name, a[0], a[1], a[2], a[3], EPERM_);
                }
                for (size_t m = 0; m < sizeof(good_modes) / sizeof(good_modes[0]); m++) {
                        a[modes[i].arg] = good_modes[m];
                        ok &= expect(modes[i].name, a[0], a[1], a[2], a[3], ALLOW);
                }
        }
        /* fchmodat2 is refused with any mode (ENOSYS: glibc falls back). */
        ok &= expect("fchmodat2", 3, 0, 06777, 0, ENOSYS_);
        CHECK(ok);

        /* Pipes keep their size; other fcntl commands pass. */
        CHECK(expect("fcntl", 3, F_SETPIPE_SZ, 1 << 20, 0, EPERM_));
        CHECK(expect("fcntl", 3, 0xffffffff00000000ULL | F_SETPIPE_SZ, 1 << 20, 0, EPERM_));
        CHECK(expect("fcntl", 3, F_GETPIPE_SZ, 0, 0, ALLOW));
        CHECK(expect("fcntl", 3, F_SETFL, 0, 0, ALLOW));
        /* Round 3: leases, dnotify and SIGIO's target and signal. */
        CHECK(expect("fcntl", 3, F_SETLEASE, F_WRLCK, 0, EPERM_));
        CHECK(expect("fcntl", 3, 0xffffffff00000000ULL | F_SETLEASE, F_RDLCK, 0, EPERM_));
        CHECK(expect("fcntl", 3, F_NOTIFY, 0, 0, EPERM_));
        CHECK(expect("fcntl", 3, F_SETOWN, 1, 0, EPERM_));
        CHECK(expect("fcntl", 3, F_SETOWN_EX, 0, 0, EPERM_));
        CHECK(expect("fcntl", 3, F_SETSIG, 0, 0, EPERM_));
        CHECK(expect("fcntl", 3, F_GETLEASE, 0, 0, ALLOW));
        CHECK(expect("fcntl", 3, F_GETOWN, 0, 0, ALLOW));
        /* Round 7: no program through prctl either (the lock answers
         * seccomp(2)); the query and other options pass. */
        CHECK(expect("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, 0, 0, EPERM_));
        CHECK(expect("prctl", PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, EPERM_));
        CHECK(expect("prctl", 0xffffffff00000000ULL | PR_SET_SECCOMP, SECCOMP_MODE_FILTER, 0, 0, EPERM_));
        CHECK(expect("prctl", PR_GET_SECCOMP, 0, 0, 0, ALLOW));
        /* Nor an undumpable process, whose /proc files an unprivileged
         * daemon cannot read. */
        CHECK(expect("prctl", PR_SET_DUMPABLE, 0, 0, 0, EPERM_));
        CHECK(expect("prctl", PR_SET_DUMPABLE, 1, 0, 0, EPERM_));
        CHECK(expect("prctl", PR_GET_DUMPABLE, 0, 0, 0, ALLOW));
        CHECK(expect("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, ALLOW));
        CHECK(expect("prctl", PR_SET_NAME, 0, 0, 0, ALLOW));
        /* Socket buffers keep their default sizes; other options pass. */
        CHECK(expect("setsockopt", 3, SOL_SOCKET, SO_SNDBUF, 0, EPERM_));
        CHECK(expect("setsockopt", 3, SOL_SOCKET, SO_RCVBUF, 0, EPERM_));
        CHECK(expect("setsockopt", 3, SOL_SOCKET, SO_SNDBUFFORCE, 0, EPERM_));
        CHECK(expect("setsockopt", 3, SOL_SOCKET, SO_RCVBUFFORCE, 0, EPERM_));
        CHECK(expect("setsockopt", 3, 0xffffffff00000000ULL | SOL_SOCKET, SO_SNDBUF, 0, EPERM_));
        CHECK(expect("setsockopt", 3, SOL_SOCKET, SO_REUSEADDR, 0, ALLOW));
        CHECK(expect("setsockopt", 3, SOL_SOCKET + 5, SO_SNDBUF, 0, ALLOW));

        /* The older argument rules, now in the first program. */
        CHECK(expect("ioctl", 0, TIOCSTI, 0, 0, EPERM_));
        CHECK(expect("ioctl", 0, 0xffffffff00000000ULL | TIOCSTI, 0, 0, EPERM_));
        CHECK(expect("ioctl", 0, TIOCLINUX, 0, 0, EPERM_));
        CHECK(expect("ioctl", 0, TIOCGWINSZ, 0, 0, ALLOW));
        CHECK(expect("socket", AF_UNIX, SOCK_STREAM, 0, 0, ALLOW));
        CHECK(expect("socket", AF_INET, SOCK_STREAM, 0, 0, EPERM_));
        CHECK(expect("socket", 0x100000000ULL | AF_UNIX, SOCK_STREAM, 0, 0, EPERM_));
        CHECK(expect("socketpair", AF_INET6, SOCK_STREAM, 0, 0, EPERM_));
        CHECK(expect("clone", 17, 0, 0, 0, ALLOW));
        CHECK(expect("clone", CLONE_NEWUSER | 17, 0, 0, 0, EPERM_));
        CHECK(expect("clone", 0x80 | 17, 0, 0, 0, EPERM_)); /* CLONE_NEWTIME */
        CHECK(expect("personality", 0xffffffff, 0, 0, 0, ALLOW));
        CHECK(expect("personality", 0, 0, 0, 0, ALLOW));
        CHECK(expect("personality", 0x0040000, 0, 0, 0, EPERM_)); /* ADDR_NO_RANDOMIZE */
        CHECK(expect("personality", 8, 0, 0, 0, EPERM_));         /* PER_LINUX32, which Docker allows */
        CHECK(expect("prlimit64", 0, 7, 0, 0x1000, ALLOW));
        CHECK(expect("prlimit64", 0, 7, 0x1000, 0, EPERM_));
        CHECK(expect("read", 0, 0, 0, 0, ALLOW));
        CHECK(expect("getpid", 0, 0, 0, 0, ALLOW));
        CHECK(expect("execve", 0, 0, 0, 0, allow_exec ? ALLOW : EPERM_));
        CHECK(expect("execveat", 0, 0, 0, 0, allow_exec ? ALLOW : EPERM_));

        /* Other ABIs kill: x32 numbers on x86-64, and the i386 table. */
        const uint64_t none[6] = {0};
        CHECK(kernel_answer(AUDIT_ARCH_X86_64, 0x40000000 | 39, none) == SECCOMP_RET_KILL_PROCESS);
        CHECK(kernel_answer(AUDIT_ARCH_I386, 20, none) == SECCOMP_RET_KILL_PROCESS);
}

/* A worker waiting for its session has all but the lock: exactly move_mount
 * and seccomp answer otherwise then (allowed, for its attach), every other
 * call and argument vector as the whole policy answers it. */
static void check_until_attach(void) {
        static const uint64_t vectors[][6] = {{0}, {1, 2, 3, 4, 5, 6}, {~0ULL, ~0ULL, ~0ULL, ~0ULL, 0, 0}};
        int differ = 0, nr_move = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, "move_mount"),
            nr_seccomp = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, "seccomp");

        CHECK(answer("move_mount", 0, 0, 0, 0) == EPERM_ && answer("seccomp", 0, 0, 0, 0) == ENOSYS_);
        for (int nr = 0; nr < 512; nr++) {
                for (size_t v = 0; v < ARRAY_SIZE(vectors); v++) {
                        uint32_t all, before;

                        installed = (size_t)-1;
                        all = kernel_answer(AUDIT_ARCH_X86_64, nr, vectors[v]);
                        installed = 2;
                        before = kernel_answer(AUDIT_ARCH_X86_64, nr, vectors[v]);
                        installed = (size_t)-1;
                        if (all == before)
                                continue;
                        differ++;
                        CHECK((nr == nr_move || nr == nr_seccomp) && before == ALLOW);
                }
        }
        CHECK(differ == 2 * (int)ARRAY_SIZE(vectors));
}

int main(int argc, char **argv) {
        char err[512];
        const struct sock_fprog *progs;

        if (argc != 2) {
                fprintf(stderr, "usage: %s docker_default_seccomp.txt\n", argv[0]);
                return 2;
        }
        CHECK(load_docker(argv[1]) == 0 && n_docker > 300);
        CHECK(docker_allows("read", (const uint64_t[6]){0}) && !docker_allows("clone3", (const uint64_t[6]){0}) &&
              !docker_allows("io_uring_setup", (const uint64_t[6]){0}));
        CHECK(syscall_filter_programs(&progs) == 0);

        CHECK(syscall_filter_build(false, err, sizeof(err)) == 0);
        CHECK(syscall_filter_programs(&progs) == 3);
        printf("# programs: %u, %u and %u instructions\n", progs[0].len, progs[1].len, progs[2].len);
        check_floor();
        check_decisions(false);
        check_until_attach();

        /* -o allow_exec changes execve only, and stays above the floor. */
        CHECK(syscall_filter_build(true, err, sizeof(err)) == 0);
        check_floor();
        check_decisions(true);
        return check_summary("seccomp");
}
