#include "mount.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "macros.h"

static bool executable(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

char *private_mount_find_daemon(void) {
        const char *env = getenv("SECURERFS_BIN"), *path;
        char self[PATH_MAX], buf[PATH_MAX];
        ssize_t n;

        if (env && *env)
                return executable(env) ? strdup(env) : (errno = ENOENT, NULL);
        /* A build tree (and an install's bin/) has both programs side by side. */
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                char *slash;
                self[n] = '\0';
                slash = strrchr(self, '/');
                if (slash) {
                        *slash = '\0';
                        snprintf(buf, sizeof(buf), "%s/securerfs", self);
                        if (executable(buf))
                                return strdup(buf);
                }
        }
        path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/bin:/usr/bin:/bin";
        while (*path) {
                const char *end = strchrnul(path, ':');
                size_t len = (size_t)(end - path);
                if (len > 0 && len < sizeof(buf) - 11) {
                        snprintf(buf, sizeof(buf), "%.*s/securerfs", (int)len, path);
                        if (executable(buf))
                                return strdup(buf);
                }
                path = *end ? end + 1 : end;
        }
        errno = ENOENT;
        return NULL;
}

static void free_mount(struct private_mount *m) {
        if (!m)
                return;
        closep(&m->log_fd);
        free(m->mnt);
        free(m->dir);
        free(m);
}

int private_mount_start(const char *daemon, const char *extra, struct private_mount **out, char *err, size_t errlen) {
        struct private_mount *m = calloc(1, sizeof(*m));
        const char *tmp = getenv("TMPDIR");
        char opts[1024];
        int pipefd[2] = {-1, -1}, devnull = -1, r;
        pid_t pid;

        if (!m)
                return -ENOMEM;
        m->log_fd = -1;
        if (!tmp || !*tmp)
                tmp = "/tmp";
        if (asprintf(&m->dir, "%s/securerfs-mcp-XXXXXX", tmp) < 0) {
                m->dir = NULL;
                free_mount(m);
                return -ENOMEM;
        }
        /* mkdtemp makes the directory 0700: nobody else can reach the
         * mount point, whatever the mount's own permissions. */
        if (!mkdtemp(m->dir)) {
                r = -errno;
                snprintf(err, errlen, "cannot make a private directory in %s: %s", tmp, strerror(-r));
                free(m->dir);
                m->dir = NULL;
                free_mount(m);
                return r;
        }
        if (asprintf(&m->mnt, "%s/mnt", m->dir) < 0) {
                m->mnt = NULL;
                r = -ENOMEM;
                goto fail;
        }
        if (mkdir(m->mnt, 0700) < 0) {
                r = -errno;
                snprintf(err, errlen, "mkdir %s: %s", m->mnt, strerror(-r));
                goto fail;
        }
        snprintf(opts, sizeof(opts), "pool=1%s%s", extra && *extra ? "," : "", extra ? extra : "");
        if (pipe2(pipefd, O_CLOEXEC) < 0 || (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
                r = -errno;
                snprintf(err, errlen, "pipe: %s", strerror(-r));
                goto fail;
        }
        pid = fork();
        if (pid < 0) {
                r = -errno;
                snprintf(err, errlen, "fork: %s", strerror(-r));
                goto fail;
        }
        if (pid == 0) {
                /* Child of securerfs-mcp, same user and privileges, about to
                 * become the daemon.  Only async-signal-safe calls: the
                 * parent may have threads. */
                sigset_t none;
                char *argv[] = {(char *)daemon, (char *)"-f", (char *)"-o", opts, m->mnt, NULL};

                /* Its own process group: a terminal's Ctrl-C reaches us, and we
                 * end the daemon in order (sessions first).  If we die without
                 * that (SIGKILL), the kernel sends it SIGTERM, on which it
                 * unmounts cleanly. */
                setpgid(0, 0);
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() == 1)
                        _exit(1);
                /* The parent blocks the signals it reads through signalfd and
                 * ignores SIGPIPE: both would survive execve. */
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                if (dup2(devnull, 0) < 0 || dup2(pipefd[1], 1) < 0 || dup2(pipefd[1], 2) < 0)
                        _exit(127);
                execv(daemon, argv);
                {
                        static const char msg[] = "securerfs-mcp: cannot run the securerfs daemon\n";
                        ssize_t ignored = write(2, msg, sizeof(msg) - 1);
                        (void)ignored;
                }
                _exit(127);
        }
        close(pipefd[1]);
        close(devnull);
        m->pid = pid;
        m->log_fd = pipefd[0];
        fcntl(m->log_fd, F_SETFL, O_NONBLOCK);
        *out = m;
        return 0;
fail:
        if (pipefd[0] >= 0) {
                close(pipefd[0]);
                close(pipefd[1]);
        }
        if (devnull >= 0)
                close(devnull);
        if (m->mnt)
                rmdir(m->mnt);
        rmdir(m->dir);
        free_mount(m);
        return r;
}

/* Is something mounted on m->mnt?  The mount point's device differs from
 * its parent's once the daemon has mounted; a mount whose daemon died
 * fails stat() with ENOTCONN, which counts as mounted too (it needs an
 * unmount). */
static bool is_mounted(const struct private_mount *m) {
        struct stat a, b;

        if (stat(m->dir, &a) < 0)
                return false;
        if (stat(m->mnt, &b) < 0)
                return errno != ENOENT;
        return a.st_dev != b.st_dev;
}

int private_mount_ready(struct private_mount *m) {
        if (m->mounted)
                return 1;
        if (!m->pid)
                return -ECHILD;
        {
                struct stat a, b;
                if (stat(m->dir, &a) < 0 || stat(m->mnt, &b) < 0 || a.st_dev == b.st_dev)
                        return 0;
        }
        m->mounted = true;
        return 1;
}

void private_mount_read_log(struct private_mount *m) {
        char buf[4096];

        while (m->log_fd >= 0) {
                ssize_t n = read(m->log_fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        close(m->log_fd);
                        m->log_fd = -1;
                        return;
                }
                /* The daemon's lines carry their own "securerfs:" prefix. */
                {
                        ssize_t ignored = write(2, buf, (size_t)n);
                        (void)ignored;
                }
                if ((size_t)n >= sizeof(m->tail)) {
                        memcpy(m->tail, buf + n - sizeof(m->tail), sizeof(m->tail));
                        m->tail_len = sizeof(m->tail);
                } else {
                        size_t keep = MIN(m->tail_len, sizeof(m->tail) - (size_t)n);
                        memmove(m->tail, m->tail + m->tail_len - keep, keep);
                        memcpy(m->tail + keep, buf, (size_t)n);
                        m->tail_len = keep + (size_t)n;
                }
        }
}

void private_mount_exited(struct private_mount *m, int status) {
        m->pid = 0;
        m->status = status;
        m->mounted = false;
}

static void sleep_ms(int ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

/* Wait up to ms for the daemon to exit; true when it did. */
static bool wait_daemon(struct private_mount *m, int ms) {
        for (int waited = 0; m->pid; waited += 5) {
                int status = 0;
                pid_t r = waitpid(m->pid, &status, WNOHANG);
                if (r == m->pid || (r < 0 && errno == ECHILD)) {
                        private_mount_exited(m, status);
                        break;
                }
                if (waited >= ms)
                        return false;
                private_mount_read_log(m); /* so that it never blocks on a full pipe */
                sleep_ms(5);
        }
        private_mount_read_log(m);
        return true;
}

/* A lazy unmount of a mount whose daemon is gone: as root directly, else
 * through the setuid fusermount3, as libfuse itself does. */
static void lazy_unmount(const char *mnt) {
        pid_t pid;

        if (umount2(mnt, MNT_DETACH) == 0)
                return;
        pid = fork();
        if (pid == 0) {
                /* Child: becomes fusermount3, same user. */
                sigset_t none;
                int devnull = open("/dev/null", O_RDWR);
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                if (devnull >= 0) {
                        dup2(devnull, 0);
                        dup2(devnull, 1);
                }
                execlp("fusermount3", "fusermount3", "-u", "-z", mnt, (char *)NULL);
                _exit(127);
        }
        if (pid > 0) {
                for (int waited = 0; waited < 3000; waited += 5) {
                        if (waitpid(pid, NULL, WNOHANG) != 0)
                                return;
                        sleep_ms(5);
                }
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
}

void private_mount_stop(struct private_mount *m, int term_ms) {
        if (!m)
                return;
        if (m->pid) {
                kill(m->pid, SIGTERM);
                if (!wait_daemon(m, term_ms)) {
                        log_warn("the private securerfs (pid %ld) did not end within %d ms of SIGTERM; killing it",
                                 (long)m->pid, term_ms);
                        kill(m->pid, SIGKILL);
                        wait_daemon(m, 5000);
                }
        }
        if (is_mounted(m))
                lazy_unmount(m->mnt);
        if (rmdir(m->mnt) < 0 && errno != ENOENT)
                log_warn("cannot remove %s: %s", m->mnt, strerror(errno));
        if (rmdir(m->dir) < 0 && errno != ENOENT)
                log_warn("cannot remove %s: %s", m->dir, strerror(errno));
        free_mount(m);
}
