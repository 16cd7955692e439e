/* The jail, proved from both sides: a jailed child checks what it can and
 * cannot do and reports each result over a pipe ("ok ..." / "FAIL ..."); the
 * test process then checks that nothing the child did shows on the host.
 *
 * Process layout (as in the daemon): test (plays the daemon) forks a
 * "zygote", which calls jail_clone(); through CLONE_PARENT the jailed child
 * is the test's child, not the zygote's, and the test reaps it.
 *
 * Must pass as root and as an unprivileged user, e.g.
 *   setpriv --reuid=65534 --regid=65534 --clear-groups ./test_jail
 * A host without user namespaces is a failure, not a skip. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/jail.h"

static int passed, failed;
/* What the jailed child's 1000 maps to: as root an unprivileged id of the
 * daemon's default range (as the daemon does), else our own. */
static uid_t test_uid;
static gid_t test_gid;

/* ---- Reporting --------------------------------------------------------- */

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
        va_list ap;

        printf("%s - ", ok ? "ok  " : "FAIL");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        if (ok)
                passed++;
        else
                failed++;
}

/* Child side: one line per result, one write each (atomic on a pipe). */
static void report(int fd, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(int fd, int ok, const char *fmt, ...) {
        char line[1024];
        va_list ap;
        int n = snprintf(line, sizeof(line), "%s ", ok ? "ok" : "FAIL");

        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (n > (int)sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        if (write(fd, line, (size_t)n) < 0)
                _exit(3);
}

/* Test side: count the child's lines; return the pid from a "pid N" line. */
static pid_t collect(int fd, const char *prefix) {
        char buf[65536];
        size_t len = 0;
        ssize_t n;
        pid_t pid = -1;

        while ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
                len += (size_t)n;
        buf[len] = '\0';
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
                if (strncmp(line, "pid ", 4) == 0)
                        pid = atoi(line + 4);
                else if (strncmp(line, "ok ", 3) == 0)
                        check(1, "%s: %s", prefix, line + 3);
                else if (strncmp(line, "FAIL ", 5) == 0)
                        check(0, "%s: %s", prefix, line + 5);
                else
                        check(0, "%s: unexpected line from child: %s", prefix, line);
        }
        return pid;
}

static int wait_exit_code(pid_t pid) {
        int status;

        if (waitpid(pid, &status, 0) != pid)
                return -errno;
        if (!WIFEXITED(status))
                return 1000 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        return WEXITSTATUS(status);
}

/* Append " word" to a fixed buffer, truncating quietly. */
static void append_word(char *buf, size_t size, const char *word) {
        size_t len = strlen(buf), n = strlen(word);

        if (len + 1 + n + 1 > size)
                return;
        buf[len] = ' ';
        memcpy(buf + len + 1, word, n + 1);
}

static double now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int read_text(const char *path, char *buf, size_t size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        close(fd);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return 0;
}

/* ---- What the jailed child checks -------------------------------------- */

struct context {
        uid_t outer_uid;
        gid_t outer_gid;
        char marker[64];      /* file name the child creates in /tmp and /work */
        char r_lib[256];       /* a host directory passed as r_libs */
        char host_marker[256]; /* a file on a host mount standing in for FUSE, or "" */
};

static void check_identity(int fd, const struct context *c) {
        char buf[256];
        unsigned inside, outside, count;

        report(fd, getuid() == 1000 && geteuid() == 1000 && getgid() == 1000 && getegid() == 1000,
               "uid/gid are 1000 inside (uid %d gid %d)", (int)getuid(), (int)getgid());
        if (read_text("/proc/self/uid_map", buf, sizeof(buf)) == 0 &&
            sscanf(buf, "%u %u %u", &inside, &outside, &count) == 3)
                report(fd, inside == 1000 && outside == c->outer_uid && count == 1 && !strchr(strchr(buf, '\n') + 1, ' '),
                       "uid_map maps 1000 to the outer uid %u only (%u %u %u)", (unsigned)c->outer_uid, inside, outside,
                       count);
        else
                report(fd, 0, "read /proc/self/uid_map");
        if (read_text("/proc/self/gid_map", buf, sizeof(buf)) == 0 &&
            sscanf(buf, "%u %u %u", &inside, &outside, &count) == 3)
                report(fd, inside == 1000 && outside == c->outer_gid && count == 1,
                       "gid_map maps 1000 to the outer gid %u (%u %u %u)", (unsigned)c->outer_gid, inside, outside,
                       count);
        else
                report(fd, 0, "read /proc/self/gid_map");
        report(fd, getpid() == 1, "pid is 1 in its own pid namespace (%d)", (int)getpid());
        if (gethostname(buf, sizeof(buf)) == 0)
                report(fd, strcmp(buf, "securerfs") == 0, "hostname is securerfs (%s)", buf);
        else
                report(fd, 0, "gethostname: %s", strerror(errno));
        report(fd, prctl(PR_GET_PDEATHSIG, (unsigned long)&count) == 0 && count == SIGKILL,
               "parent-death signal is SIGKILL");
}

static void check_privileges(int fd) {
        static const char *const fields[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"};
        char buf[4096];

        if (read_text("/proc/self/status", buf, sizeof(buf)) < 0) {
                report(fd, 0, "read /proc/self/status");
                return;
        }
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
                const char *p = strstr(buf, fields[i]);
                unsigned long long v = ~0ULL;
                if (p)
                        v = strtoull(p + strlen(fields[i]), NULL, 16);
                report(fd, p && v == 0, "%s all zero (%llx)", fields[i], v);
        }
        const char *p = strstr(buf, "NoNewPrivs:");
        report(fd, p && atoi(p + strlen("NoNewPrivs:")) == 1, "NoNewPrivs is 1");

        int rc = mount("tmpfs", "/tmp", "tmpfs", 0, NULL), err = errno;
        report(fd, rc < 0 && err == EPERM, "mount tmpfs refused (%s)", rc < 0 ? strerror(err) : "mounted");
        rc = umount2("/usr", MNT_DETACH), err = errno;
        report(fd, rc < 0 && err == EPERM, "umount /usr refused (%s)", rc < 0 ? strerror(err) : "unmounted");
        rc = unshare(CLONE_NEWUSER), err = errno;
        report(fd, rc < 0, "no nested user namespace (%s)", rc < 0 ? strerror(err) : "created");
        rc = mknod("/tmp/node", S_IFCHR | 0666, makedev(1, 3)), err = errno;
        report(fd, rc < 0, "mknod refused (%s)", rc < 0 ? strerror(err) : "made");
        rc = setuid(0), err = errno;
        report(fd, rc < 0, "setuid(0) refused (%s)", rc < 0 ? strerror(err) : "succeeded");
}

static void check_not_writable(int fd, const char *path) {
        int f;

        errno = 0;
        f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        report(fd, f < 0 && (errno == EROFS || errno == EACCES), "create %s refused (%s)", path,
               f < 0 ? strerror(errno) : "it succeeded");
        if (f >= 0)
                close(f);
}

static void check_writable(int fd, const char *path) {
        int f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

        report(fd, f >= 0 && write(f, "x", 1) == 1, "create and write %s (%s)", path, f < 0 ? strerror(errno) : "ok");
        if (f >= 0)
                close(f);
}

/* /proc is read-only with the host-facing entries masked; the device
 * nodes work but cannot be changed. */
static void check_proc_dev(int fd) {
        struct stat before, after;
        char buf[256];
        int rc, err, f;

        f = open("/proc/self/mem", O_RDWR | O_CLOEXEC), err = errno;
        report(fd, f < 0 && err == EROFS, "/proc/self/mem does not open for writing (%s)", f < 0 ? strerror(err) : "opened");
        if (f >= 0)
                close(f);
        f = open("/proc/sys/kernel/printk_ratelimit_burst", O_WRONLY | O_CLOEXEC), err = errno;
        /* EACCES: the kernel's owner check comes first (the file is host
         * root's, never ours now); EROFS behind it. */
        report(fd, f < 0 && (err == EROFS || err == EACCES), "/proc/sys does not open for writing (%s)",
               f < 0 ? strerror(err) : "opened");
        if (f >= 0)
                close(f);
        f = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC), err = errno;
        report(fd, f < 0 && err == EROFS, "/proc/self/oom_score_adj is read-only (%s)", f < 0 ? strerror(err) : "opened");
        if (f >= 0)
                close(f);
        for (const char *const *p = (const char *const[]){"/proc/keys", "/proc/timer_list", "/proc/interrupts",
                                                           "/proc/key-users", NULL};
             *p; p++) {
                rc = read_text(*p, buf, sizeof(buf));
                report(fd, rc == 0 && buf[0] == '\0', "%s reads empty (%s)", *p, rc < 0 ? strerror(-rc) : buf);
        }
        f = open("/proc/keys", O_WRONLY | O_CLOEXEC), err = errno;
        report(fd, f < 0 && (err == EROFS || err == EACCES), "the mask over /proc/keys does not open for writing (%s)",
               f < 0 ? strerror(err) : "opened");
        if (f >= 0)
                close(f);
        rc = mkdir("/proc/bus/x", 0755), err = errno;
        report(fd, rc < 0, "/proc/bus is an empty read-only directory (%s)", rc < 0 ? strerror(err) : "made");

        /* The second lock behind the filter (not loaded in this test):
         * the user namespace allows no inotify instance. */
        f = inotify_init1(IN_CLOEXEC), err = errno;
        report(fd, f < 0 && err == EMFILE, "inotify_init1 refused by the namespace limit (%s)",
               f < 0 ? strerror(err) : "created");
        if (f >= 0)
                close(f);

        stat("/dev/null", &before);
        rc = chmod("/dev/null", before.st_mode & 07777), err = errno;
        report(fd, rc < 0 && err == EROFS, "chmod /dev/null to its own mode refused (%s)", rc < 0 ? strerror(err) : "done");
        rc = utimensat(AT_FDCWD, "/dev/zero", NULL, 0), err = errno;
        report(fd, rc < 0 && err == EROFS, "touch /dev/zero to now refused (%s)", rc < 0 ? strerror(err) : "done");
        rc = chown("/dev/null", (uid_t)-1, (gid_t)-1), err = errno;
        report(fd, rc < 0 && err == EROFS, "chown /dev/null refused (%s)", rc < 0 ? strerror(err) : "done");
        stat("/dev/null", &after);
        report(fd, before.st_mode == after.st_mode && before.st_ctim.tv_sec == after.st_ctim.tv_sec &&
                           before.st_ctim.tv_nsec == after.st_ctim.tv_nsec,
               "/dev/null unchanged");
        f = open("/dev/null", O_WRONLY | O_CLOEXEC);
        report(fd, f >= 0 && write(f, "x", 1) == 1, "/dev/null still takes writes");
        if (f >= 0)
                close(f);
}

static void check_files(int fd, const struct context *c) {
        static const char *const absent[] = {"/home", "/root", "/var/lib", "/var/log", "/var/tmp", "/var/cache/apt", "/run", "/mnt", "/srv", "/opt", "/sys",
                                             "/boot", "/media", "/etc/shadow", "/etc/ssh", "/oldroot", "/newroot",
                                             "/dev/shm", "/dev/pts", "/dev/tty", "/dev/vda", "/dev/sda", "/dev/mem",
                                             "/proc/kcore" /* present in any procfs; just not readable */};
        char path[PATH_MAX + 64], buf[512];
        struct stat st;

        check_not_writable(fd, "/securerfs-jail-test");
        check_not_writable(fd, "/usr/securerfs-jail-test");
        check_not_writable(fd, "/usr/lib/securerfs-jail-test");
        check_not_writable(fd, "/etc/securerfs-jail-test");
        check_not_writable(fd, "/etc/R/securerfs-jail-test");
        check_not_writable(fd, "/dev/securerfs-jail-test");
        snprintf(path, sizeof(path), "%s/securerfs-jail-test", c->r_lib);
        check_not_writable(fd, path);

        snprintf(path, sizeof(path), "/tmp/%s", c->marker);
        check_writable(fd, path);
        snprintf(path, sizeof(path), "/work/%s", c->marker);
        check_writable(fd, path);
        report(fd, getcwd(buf, sizeof(buf)) && strcmp(buf, "/work") == 0, "cwd is /work (%s)", buf);
        report(fd, stat("/work", &st) == 0 && st.st_uid == 1000 && (st.st_mode & 07777) == 0755,
               "/work is owned by 1000, mode 0755");
        report(fd, stat("/tmp", &st) == 0 && (st.st_mode & 07777) == 01777, "/tmp is mode 1777");
        report(fd, strcmp(jail_tmpdir(), "/tmp/R") == 0 && stat(jail_tmpdir(), &st) == 0 && S_ISDIR(st.st_mode) &&
                           (st.st_mode & 07777) == 0700 && st.st_uid == 1000,
               "jail_tmpdir() is /tmp/R, 0700, owned by 1000 (%s)", jail_tmpdir());

        for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
                if (strcmp(absent[i], "/proc/kcore") == 0) {
                        int f = open(absent[i], O_RDONLY | O_CLOEXEC);
                        report(fd, f < 0, "%s not readable (%s)", absent[i], f < 0 ? strerror(errno) : "opened");
                        if (f >= 0)
                                close(f);
                        continue;
                }
                int rc = lstat(absent[i], &st), err = errno;
                report(fd, rc < 0 && err == ENOENT, "%s absent (%s)", absent[i], rc < 0 ? strerror(err) : "present");
        }
        if (c->host_marker[0]) {
                int rc = lstat(c->host_marker, &st), err = errno;
                report(fd, rc < 0 && err == ENOENT, "a host mount (FUSE stand-in) is not visible (%s: %s)",
                       c->host_marker, rc < 0 ? strerror(err) : "visible");
        }

        /* What R needs is there. */
        report(fd, lstat("/lib", &st) == 0 && S_ISLNK(st.st_mode), "/lib is a symlink (merged /usr)");
        report(fd, access("/lib64/ld-linux-x86-64.so.2", R_OK) == 0 || access("/lib/ld-linux-aarch64.so.1", R_OK) == 0,
               "the ELF interpreter resolves");
        report(fd, access("/usr/lib/R/bin/exec/R", X_OK) == 0 || access("/usr/lib/R", R_OK) == 0, "R_HOME is present");
        report(fd, access("/etc/R/Renviron", R_OK) == 0, "/etc/R/Renviron is readable");
        report(fd, access("/etc/ld.so.cache", R_OK) == 0, "/etc/ld.so.cache is readable");
        snprintf(path, sizeof(path), "%s/DESCRIPTION", c->r_lib);
        report(fd, read_text(path, buf, sizeof(buf)) == 0 && strncmp(buf, "Package: jailtest", 17) == 0,
               "the r_libs directory %s is readable", c->r_lib);
        report(fd, read_text("/etc/passwd", buf, sizeof(buf)) == 0 && strcmp(buf, "securerfs:x:1000:1000::/work:/usr/sbin/nologin\n") == 0,
               "/etc/passwd has only securerfs");

        int f = open("/dev/null", O_WRONLY | O_CLOEXEC);
        report(fd, f >= 0 && write(f, "x", 1) == 1, "/dev/null is writable");
        if (f >= 0)
                close(f);
        f = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        report(fd, f >= 0 && read(f, buf, 16) == 16, "/dev/urandom is readable");
        if (f >= 0)
                close(f);
}

static void check_processes(int fd) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        char others[256] = "";

        if (!d) {
                report(fd, 0, "opendir /proc: %s", strerror(errno));
                return;
        }
        while ((de = readdir(d)))
                if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && strcmp(de->d_name, "1") != 0)
                        append_word(others, sizeof(others), de->d_name);
        closedir(d);
        report(fd, others[0] == '\0', "/proc shows only pid 1 (others:%s)", others);
}

static void check_network(int fd) {
        char buf[4096], names[256] = "";
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(9)};
        struct ifreq ifr;
        int s;

        if (read_text("/proc/self/net/dev", buf, sizeof(buf)) == 0) {
                char *line = strchr(buf, '\n');
                line = line ? strchr(line + 1, '\n') : NULL; /* two header lines */
                while (line && line[1]) {
                        char name[32];
                        if (sscanf(line + 1, " %31[^:]", name) == 1)
                                append_word(names, sizeof(names), name);
                        line = strchr(line + 1, '\n');
                }
                report(fd, strcmp(names, " lo") == 0, "the only interface is lo (%s)", names);
        } else {
                report(fd, 0, "read /proc/self/net/dev");
        }

        s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        report(fd, s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP), "lo is down");
        if (s >= 0)
                close(s);

        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = connect(s, (struct sockaddr *)&addr, sizeof(addr)), err = errno;
        report(fd, s >= 0 && rc < 0 && err == ENETUNREACH, "connect to 127.0.0.1:9 fails with ENETUNREACH (%s)",
               rc < 0 ? strerror(err) : "connected");
        if (s >= 0)
                close(s);
        inet_pton(AF_INET, "1.1.1.1", &addr.sin_addr);
        s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        rc = connect(s, (struct sockaddr *)&addr, sizeof(addr)), err = errno;
        report(fd, s >= 0 && rc < 0 && err == ENETUNREACH, "connect to 1.1.1.1:9 fails with ENETUNREACH (%s)",
               rc < 0 ? strerror(err) : "connected");
        if (s >= 0)
                close(s);
}

/* Every mount point must be one the jail made: no host path, no FUSE mount. */
static void check_mounts(int fd, const struct context *c) {
        static const char *const allowed[] = {"/",         "/usr",        "/etc/R",      "/etc/alternatives",
                                              "/etc/ld.so.cache", "/etc/fonts", "/proc",  "/dev",
                                              "/dev/null", "/dev/zero",   "/dev/full",   "/dev/random",
                                              "/dev/urandom", "/tmp",     "/work",
                                              "/var/cache/fontconfig" /* read-only, the font cache */};
        char buf[16384], unexpected[1024] = "";
        int n = 0;

        if (read_text("/proc/self/mountinfo", buf, sizeof(buf)) < 0) {
                report(fd, 0, "read /proc/self/mountinfo");
                return;
        }
        for (char *save, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char point[PATH_MAX];
                int ok = 0;
                if (sscanf(line, "%*d %*d %*s %*s %4095s", point) != 1)
                        continue;
                n++;
                for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
                        ok |= strcmp(point, allowed[i]) == 0;
                /* The masks over /proc entries: read-only. */
                ok |= strncmp(point, "/proc/", 6) == 0 && strstr(line, " ro,") != NULL;
                ok |= strcmp(point, c->r_lib) == 0;
                if (!ok)
                        append_word(unexpected, sizeof(unexpected), point);
        }
        report(fd, unexpected[0] == '\0' && n > 0, "mountinfo lists only the jail's %d mounts (unexpected:%s)", n,
               unexpected);
}

/* ---- Scenarios ---------------------------------------------------------- */

/* Fork a zygote that jail_clone()s; the jailed child runs fn after
 * jail_enter().  Returns the child's exit code (through CLONE_PARENT we are
 * its parent). */
static int run_jailed(const char *name, const struct jail_options *o, const struct context *c,
                      void (*fn)(int fd, const struct context *c, int enter_r, const char *err)) {
        int pfd[2];
        pid_t zygote, child;
        int zr, cr;

        if (pipe2(pfd, O_CLOEXEC) < 0) {
                check(0, "%s: pipe: %s", name, strerror(errno));
                return -1;
        }
        fflush(stdout);
        zygote = fork();
        if (zygote == 0) {
                /* Zygote: host namespaces.  As root it holds no
                 * supplementary groups, as the real one (sandbox/worker/zygote.c). */
                char why[512];
                close(pfd[0]);
                if (geteuid() == 0 && setgroups(0, NULL) < 0) {
                        report(pfd[1], 0, "setgroups: %s", strerror(errno));
                        _exit(1);
                }
                pid_t pid = jail_clone(o, test_uid, test_gid, why, sizeof(why));
                if (pid < 0) {
                        report(pfd[1], 0, "%s", why);
                        _exit(1);
                }
                if (pid == 0) {
                        /* Jailed child (before jail_enter: new namespaces,
                         * all capabilities inside them). */
                        char err[512] = "";
                        int r = jail_enter(o, err, sizeof(err));
                        fn(pfd[1], c, r, err);
                        _exit(0);
                }
                char line[32];
                int n = snprintf(line, sizeof(line), "pid %d\n", (int)pid);
                if (write(pfd[1], line, (size_t)n) < 0)
                        _exit(2);
                _exit(0);
        }
        close(pfd[1]);
        child = collect(pfd[0], name);
        close(pfd[0]);
        zr = wait_exit_code(zygote);
        check(zr == 0, "%s: zygote exited 0 (%d)", name, zr);
        if (child <= 0) {
                check(0, "%s: zygote reported the child's pid", name);
                return -1;
        }
        /* waitpid() on the child works only if CLONE_PARENT made us its parent. */
        cr = wait_exit_code(child);
        check(cr >= 0, "%s: the jailed child is the zygote's parent's child (waitpid: %s)", name,
              cr < 0 ? strerror(-cr) : "ok");
        return cr;
}

static void strict_checks(int fd, const struct context *c, int r, const char *err) {
        if (r < 0) {
                report(fd, 0, "jail_enter: %d: %s", r, err);
                return;
        }
        report(fd, 1, "jail_enter succeeded");
        check_identity(fd, c);
        check_privileges(fd);
        check_proc_dev(fd);
        check_files(fd, c);
        check_processes(fd);
        check_network(fd);
        check_mounts(fd, c);
}

static void expect_enoent(int fd, const struct context *c, int r, const char *err) {
        report(fd, r == -ENOENT && strncmp(err, "bind mount /nonexistent-securerfs-lib", 37) == 0 &&
                           strstr(err, "No such file or directory"),
               "a missing r_libs directory fails with -ENOENT, naming it (%d: \"%s\")", r, err);
}

static void expect_einval(int fd, const struct context *c, int r, const char *err) {
        report(fd, r == -EINVAL && strstr(err, "not an absolute path"),
               "a relative r_libs directory fails with -EINVAL (%d: \"%s\")", r, err);
}

static void expect_locked(int fd, const struct context *c, int r, const char *err) {
        report(fd, r == -EINVAL && strstr(err, "mounted below"),
               "an r_libs directory with a mount below it fails with -EINVAL, saying why (%d: \"%s\")", r, err);
}

static void none_checks(int fd, const struct context *c, int r, const char *err) {
        char cwd[PATH_MAX], expect[PATH_MAX + 2];
        struct stat st;
        unsigned long sig = 0;

        if (r < 0) {
                report(fd, 0, "jail_enter (none): %d: %s", r, err);
                return;
        }
        report(fd, getuid() == geteuid() && getuid() == (geteuid() == 0 ? 0 : c->outer_uid), "none: uid unchanged");
        report(fd, getcwd(cwd, sizeof(cwd)) && strstr(cwd, "/securerfs-"), "none: cwd is a private directory (%s)",
               cwd);
        snprintf(expect, sizeof(expect), "%s/R", cwd);
        report(fd, strcmp(jail_tmpdir(), expect) == 0 && stat(expect, &st) == 0 && (st.st_mode & 07777) == 0700,
               "none: jail_tmpdir() is a 0700 subdirectory of it (%s)", jail_tmpdir());
        report(fd, prctl(PR_GET_PDEATHSIG, (unsigned long)&sig) == 0 && sig == SIGKILL,
               "none: parent-death signal is SIGKILL");
        /* Clean up after ourselves (the worker would leave this to R). */
        if (rmdir(expect) < 0 || chdir("/") < 0 || rmdir(cwd) < 0)
                report(fd, 0, "none: clean up %s: %s", cwd, strerror(errno));
}

/* ---- Timing ------------------------------------------------------------- */

static int compare_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

#define ROUNDS 25

/* Median microseconds from before fork()/jail_clone() in the zygote to the
 * child being ready (after jail_enter() for jail modes), and for the jail
 * the part spent in jail_enter(). */
static void time_start(const char *name, const struct jail_options *o) {
        int pfd[2], done[2];
        double total[ROUNDS], enter[ROUNDS];
        pid_t zygote;
        int n = 0;

        if (pipe2(pfd, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0)
                return;
        fflush(stdout);
        zygote = fork();
        if (zygote == 0) {
                close(pfd[0]);
                for (int i = 0; i < ROUNDS; i++) {
                        double t[3];
                        pid_t pid;
                        t[0] = now_us();
                        char why[256];
                        pid = o ? jail_clone(o, test_uid, test_gid, why, sizeof(why)) : fork();
                        if (pid < 0)
                                _exit(1);
                        if (pid == 0) {
                                char err[256];
                                t[1] = now_us();
                                t[2] = now_us();
                                if (o && jail_enter(o, err, sizeof(err)) < 0)
                                        t[0] = t[1] = t[2] = -1;
                                else
                                        t[2] = now_us();
                                if (o && o->mode == JAIL_NONE) {
                                        char cwd[PATH_MAX];
                                        if (rmdir(jail_tmpdir()) < 0 || !getcwd(cwd, sizeof(cwd)) || chdir("/") < 0 ||
                                            rmdir(cwd) < 0)
                                                t[2] = -1;
                                }
                                if (write(done[1], t, sizeof(t)) < 0)
                                        _exit(1);
                                _exit(0);
                        }
                        if (read(done[0], t, sizeof(t)) != sizeof(t))
                                _exit(1);
                        if (write(pfd[1], t, sizeof(t)) < 0)
                                _exit(1);
                        if (!o)
                                waitpid(pid, NULL, 0);
                }
                _exit(0);
        }
        close(pfd[1]);
        close(done[0]);
        close(done[1]);
        for (double t[3]; n < ROUNDS && read(pfd[0], t, sizeof(t)) == sizeof(t) && t[2] >= 0; n++) {
                total[n] = t[2] - t[0];
                enter[n] = t[2] - t[1];
        }
        close(pfd[0]);
        wait_exit_code(zygote);
        while (o && waitpid(-1, NULL, WNOHANG) > 0)
                ;
        /* The jailed children are ours (CLONE_PARENT); reap the rest. */
        while (o && waitpid(-1, NULL, 0) > 0)
                ;
        if (n < ROUNDS) {
                check(0, "timing %s: only %d of %d rounds", name, n, ROUNDS);
                return;
        }
        qsort(total, ROUNDS, sizeof(double), compare_double);
        qsort(enter, ROUNDS, sizeof(double), compare_double);
        printf("time - %s: median %.0f us to a ready child (min %.0f, max %.0f)", name, total[ROUNDS / 2], total[0],
               total[ROUNDS - 1]);
        if (o)
                printf(", of which %.0f us in jail_enter", enter[ROUNDS / 2]);
        printf("\n");
}

/* ---- Main --------------------------------------------------------------- */

int main(void) {
        test_uid = geteuid() == 0 ? 1879048192u + 4242 : getuid();
        test_gid = geteuid() == 0 ? 1879048192u + 4242 : getgid();
        struct context c = {.outer_uid = test_uid, .outer_gid = test_gid};
        struct jail_options strict = {.mode = JAIL_STRICT};
        struct jail_options none = {.mode = JAIL_NONE};
        const char *r_libs[1];
        char path[PATH_MAX + 64], host_name[256] = "";
        struct stat st;
        int fd;

        setvbuf(stdout, NULL, _IOLBF, 0);
        snprintf(c.marker, sizeof(c.marker), "securerfs-jail-test-%d", (int)getpid());
        gethostname(host_name, sizeof(host_name));

        /* A host directory to pass as r_libs. */
        snprintf(c.r_lib, sizeof(c.r_lib), "/tmp/securerfs-jail-lib-XXXXXX");
        if (!mkdtemp(c.r_lib) || chmod(c.r_lib, 0755) < 0) {
                printf("mkdtemp: %s\n", strerror(errno));
                return 1;
        }
        snprintf(path, sizeof(path), "%s/DESCRIPTION", c.r_lib);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, "Package: jailtest\n", 18) != 18) {
                printf("write %s: %s\n", path, strerror(errno));
                return 1;
        }
        close(fd);
        r_libs[0] = c.r_lib;
        strict.r_libs = r_libs;
        strict.n_r_libs = 1;

        /* As root, stand in for the FUSE mount: in a private mount namespace
         * of the test, mount a tmpfs on a host directory with a marker file
         * in it; nothing of it may show in the jail.  And a second one below
         * a directory the jail is asked to bind, which must fail clearly
         * rather than bring the mount along. */
        char fuse_dir[] = "/tmp/securerfs-jail-fuse-XXXXXX", locked_lib[] = "/tmp/securerfs-jail-locked-XXXXXX";
        int as_root = geteuid() == 0;
        if (as_root) {
                if (mkdtemp(fuse_dir) && mkdtemp(locked_lib) && unshare(CLONE_NEWNS) == 0 &&
                    mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
                    mount("tmpfs", fuse_dir, "tmpfs", 0, "size=64k") == 0 &&
                    mount("tmpfs", locked_lib, "tmpfs", 0, "size=64k") == 0 &&
                    mkdir(strcat(strcpy(path, locked_lib), "/sub"), 0755) == 0 &&
                    mount("tmpfs", path, "tmpfs", 0, "size=64k") == 0) {
                        snprintf(c.host_marker, sizeof(c.host_marker), "%s/fuse-stand-in", fuse_dir);
                        fd = open(c.host_marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                        check(fd >= 0, "root: stand-in mount %s with a marker", fuse_dir);
                        if (fd >= 0)
                                close(fd);
                } else {
                        check(0, "root: stand-in mounts: %s", strerror(errno));
                }
        }

        printf("# strict mode as uid %d\n", (int)getuid());
        int r = run_jailed("strict", &strict, &c, strict_checks);
        check(r == 0, "strict: jailed child exited 0 (%d)", r);

        /* The outside view: nothing the child wrote or changed is visible. */
        snprintf(path, sizeof(path), "/tmp/%s", c.marker);
        check(lstat(path, &st) < 0 && errno == ENOENT, "host: %s does not exist", path);
        snprintf(path, sizeof(path), "/work/%s", c.marker);
        check(lstat(path, &st) < 0 && errno == ENOENT, "host: %s does not exist", path);
        snprintf(path, sizeof(path), "%s/securerfs-jail-test", c.r_lib);
        check(lstat(path, &st) < 0 && errno == ENOENT, "host: nothing was created in the r_libs directory");
        char now_name[256] = "";
        gethostname(now_name, sizeof(now_name));
        check(strcmp(now_name, host_name) == 0, "host: hostname unchanged (%s)", now_name);
        /* The jail's scratch root was mounted on /tmp in its own namespace. */
        check(access("/tmp/newroot", F_OK) < 0 && access("/tmp/oldroot", F_OK) < 0,
              "host: the scratch root never showed on the host /tmp");

        /* Failures name the step and the path. */
        const char *missing[] = {"/nonexistent-securerfs-lib"};
        struct jail_options bad = {.mode = JAIL_STRICT, .r_libs = missing, .n_r_libs = 1};
        run_jailed("strict, missing r_libs", &bad, &c, expect_enoent);
        const char *relative[] = {"relative/lib"};
        bad.r_libs = relative;
        run_jailed("strict, relative r_libs", &bad, &c, expect_einval);
        if (as_root) {
                const char *locked[] = {locked_lib};
                bad.r_libs = locked;
                run_jailed("strict, r_libs with a mount below", &bad, &c, expect_locked);
        }
        const char *msg = jail_clone_error(-EPERM);
        check(strstr(msg, "user namespaces are not available") && strstr(msg, "Operation not permitted"),
              "jail_clone_error(-EPERM) names user namespaces (%s)", msg);

        printf("# none mode\n");
        r = run_jailed("none", &none, &c, none_checks);
        check(r == 0, "none: child exited 0 (%d)", r);

        printf("# timing (%d rounds each)\n", ROUNDS);
        time_start("fork", NULL);
        time_start("jail_clone+jail_enter none", &none);
        time_start("jail_clone+jail_enter strict", &strict);

        snprintf(path, sizeof(path), "%s/DESCRIPTION", c.r_lib);
        unlink(path);
        rmdir(c.r_lib);
        if (as_root) {
                /* The mounts vanish with our private namespace; the
                 * directories are on the host. */
                snprintf(path, sizeof(path), "%s/sub", locked_lib);
                umount2(path, MNT_DETACH);
                umount2(locked_lib, MNT_DETACH);
                umount2(fuse_dir, MNT_DETACH);
                rmdir(locked_lib);
                rmdir(fuse_dir);
        }

        printf("jail: %d passed, %d failed\n", passed, failed);
        return failed ? 1 : 0;
}
