#include "procs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "array.h"
#include "macros.h"
#include "smallfile.h"

struct proc {
        pid_t pid;
        size_t parent;     /* index in the walk (0 for the worker itself) */
        int dir_fd;        /* /proc/PID, O_DIRECTORY: pins the identity */
        char state;        /* from stat: R, S, D, Z, ... */
        unsigned long long start; /* start time (clock ticks after boot): with pid, a unique name */
        double cpu_s;      /* utime + stime + cutime + cstime */
        double reaped_s;   /* cutime + cstime */
        unsigned long long rss_bytes;
};

struct walk {
        struct proc *p;
        size_t n, cap;
};

static void walk_free(struct walk *w) {
        for (size_t i = 0; i < w->n; i++)
                if (w->p[i].dir_fd >= 0)
                        close(w->p[i].dir_fd);
        free(w->p);
        *w = (struct walk){0};
}

/* Parse /proc/PID/stat: the command name is in parentheses and may itself
 * hold ") " (the process names itself), so fields are counted from the
 * last ')'. */
static int parse_stat(const char *text, struct proc *p, pid_t *ppid) {
        static long ticks, page;
        const char *rp = strrchr(text, ')');
        unsigned long long ut, st, rss;
        long long cut, cst;
        int pp;

        if (!ticks) {
                ticks = sysconf(_SC_CLK_TCK);
                page = sysconf(_SC_PAGESIZE);
        }
        /* Fields 3.. after ") ": state ppid pgrp session tty tpgid flags
         * minflt cminflt majflt cmajflt utime stime cutime cstime priority
         * nice threads itrealvalue starttime vsize rss */
        if (!rp || sscanf(rp + 2, "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld %*d %*d %*d %*d %llu %*u %llu",
                          &p->state, &pp, &ut, &st, &cut, &cst, &p->start, &rss) != 8)
                return -EIO;
        p->reaped_s = (double)((unsigned long long)MAX(cut, 0) + (unsigned long long)MAX(cst, 0)) / (double)ticks;
        p->cpu_s = (double)(ut + st) / (double)ticks + p->reaped_s;
        p->rss_bytes = rss * (unsigned long long)page;
        *ppid = pp;
        return 0;
}

static int proc_read_stat(struct proc *p, pid_t *ppid) {
        char buf[1024];
        ssize_t n = small_file_read(p->dir_fd, "stat", buf, sizeof(buf));

        return n < 0 ? (int)n : parse_stat(buf, p, ppid);
}

/* Is the process behind dir_fd still there (alive or a zombie not yet
 * reaped, whose pid therefore cannot have been reused)? */
static bool proc_present(int dir_fd) {
        char buf[1024];

        return small_file_read(dir_fd, "stat", buf, sizeof(buf)) > 0;
}

static int walk_push(struct walk *w, pid_t pid, int dir_fd, size_t parent) {
        if (w->n == w->cap) {
                struct proc *p = array_grow(w->p, &w->cap, sizeof(*p), 16);
                if (!p)
                        return -ENOMEM;
                w->p = p;
        }
        w->p[w->n++] = (struct proc){.pid = pid, .dir_fd = dir_fd, .parent = parent};
        return 0;
}

/* Add the children of w->p[i] (every thread's) to the walk, each checked:
 * opened by its /proc directory, its parent (read through that directory)
 * the process it was listed under, and that process still present. */
static void walk_children(struct walk *w, size_t i) {
        _cleanup_close_ int task_fd = openat(w->p[i].dir_fd, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d;
        struct dirent *de;

        if (task_fd < 0)
                return;
        d = fdopendir(task_fd);
        if (!d)
                return;
        task_fd = -1; /* owned by d */
        while ((de = readdir(d)) && w->n < PROCS_MAX) {
                char name[64], buf[8192], *tok, *save = NULL;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(name, sizeof(name), "%s/children", de->d_name);
                if (small_file_read(dirfd(d), name, buf, sizeof(buf)) <= 0)
                        continue;
                for (tok = strtok_r(buf, " \n", &save); tok && w->n < PROCS_MAX; tok = strtok_r(NULL, " \n", &save)) {
                        char path[32];
                        pid_t pid = (pid_t)atoi(tok), ppid = 0;
                        int fd;

                        if (pid <= 0)
                                continue;
                        snprintf(path, sizeof(path), "/proc/%d", (int)pid);
                        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (fd < 0)
                                continue; /* gone already */
                        if (walk_push(w, pid, fd, i) < 0) {
                                close(fd);
                                break;
                        }
                        if (proc_read_stat(&w->p[w->n - 1], &ppid) < 0 || ppid != w->p[i].pid ||
                            !proc_present(w->p[i].dir_fd)) {
                                /* Gone, or the pid now names another process. */
                                close(fd);
                                w->n--;
                        }
                }
        }
        closedir(d);
}

/* The worker and every descendant, breadth first: p[0] is the worker. */
static int walk_tree(pid_t worker, struct walk *w) {
        char path[32];
        pid_t ppid;
        int fd, e;

        snprintf(path, sizeof(path), "/proc/%d", (int)worker);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if ((e = walk_push(w, worker, fd, 0)) < 0) {
                close(fd);
                return e;
        }
        if ((e = proc_read_stat(&w->p[0], &ppid)) < 0) {
                walk_free(w);
                return e;
        }
        for (size_t i = 0; i < w->n; i++)
                if (w->p[i].state != 'Z')
                        walk_children(w, i);
        return 0;
}

/* What one AF_UNIX socket may hold in kernel memory with its buffer left
 * at the default (the jail's seccomp filter refuses SO_SNDBUF and the
 * rest): its sends are charged to its sk_sndbuf, net.core.wmem_default,
 * and one send may pass it by up to half of it (unix_stream_sendmsg cuts
 * sends at sk_sndbuf / 2); twice the default is an upper bound. */
static unsigned long long socket_charge(void) {
        static unsigned long long charge;
        char buf[64];

        if (!charge) {
                long n = small_file_read(AT_FDCWD, "/proc/sys/net/core/wmem_default", buf, sizeof(buf));
                unsigned long long v = n > 0 ? strtoull(buf, NULL, 10) : 0;
                charge = 2 * (v ? v : 212992);
        }
        return charge;
}

/* A pipe's buffer at its default size (F_SETPIPE_SZ is refused): 16 pages. */
#define PIPE_CHARGE (16ull * 4096)

/* Kernel memory behind p's descriptors that no resident set shows: sockets
 * and pipes (FIFOs too) at their bounds.  A descriptor shared by several
 * processes or both ends of one pipe count more than once: an upper bound. */
static unsigned long long proc_kernel_bytes(const struct proc *p) {
        _cleanup_close_ int fd_dir = openat(p->dir_fd, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        unsigned long long total = 0;
        struct dirent *de;
        DIR *d;

        if (fd_dir < 0)
                return 0;
        d = fdopendir(fd_dir);
        if (!d)
                return 0;
        fd_dir = -1; /* the DIR owns it */
        while ((de = readdir(d)) != NULL) {
                char link[64];
                ssize_t n;

                if (de->d_name[0] == '.')
                        continue;
                n = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
                if (n <= 0)
                        continue;
                link[n] = '\0';
                if (strncmp(link, "socket:", 7) == 0)
                        total += socket_charge();
                else if (strncmp(link, "pipe:", 5) == 0)
                        total += PIPE_CHARGE;
        }
        closedir(d);
        return total;
}

int procs_usage(pid_t worker, struct procs_usage *out) {
        struct walk w = {0};
        struct procs_usage u = {0};
        int e = walk_tree(worker, &w);

        if (e < 0)
                return e;
        for (size_t i = 0; i < w.n; i++) {
                if (w.p[i].state != 'Z')
                        u.kernel_bytes += proc_kernel_bytes(&w.p[i]);
                unsigned long long parent_rss = i ? w.p[w.p[i].parent].rss_bytes : 0;
                u.cpu_s += w.p[i].cpu_s;
                u.rss_bytes += w.p[i].rss_bytes;
                if (w.p[i].rss_bytes > parent_rss)
                        u.estimate_bytes += w.p[i].rss_bytes - parent_rss;
        }
        u.worker_reaped_s = w.p[0].reaped_s;
        u.worker_cpu_s = w.p[0].cpu_s - w.p[0].reaped_s;
        u.n = (unsigned)w.n;
        u.rss_bytes += u.kernel_bytes;
        u.estimate_bytes += u.kernel_bytes;
        walk_free(&w);
        *out = u;
        return 0;
}

int procs_pss(pid_t worker, unsigned long long *out) {
        struct walk w = {0};
        unsigned long long total = 0;
        int e = walk_tree(worker, &w);

        if (e < 0)
                return e;
        for (size_t i = 0; i < w.n && e == 0; i++) {
                char buf[4096], *line;
                ssize_t n;

                if (w.p[i].state == 'Z')
                        continue;
                n = small_file_read(w.p[i].dir_fd, "smaps_rollup", buf, sizeof(buf));
                if (n < 0) {
                        /* A process that exited meanwhile holds nothing. */
                        if (n != -ESRCH && n != -ENOENT)
                                e = (int)n;
                        continue;
                }
                line = strstr(buf, "\nPss:");
                if (line)
                        total += strtoull(line + 5, NULL, 10) * 1024;
        }
        walk_free(&w);
        if (e == 0)
                *out = total;
        return e;
}

struct signalled {
        pid_t pid;
        unsigned long long start;
};

int procs_kill_descendants(pid_t worker, unsigned max_passes, unsigned long long before_tick) {
        struct signalled *done = NULL;
        size_t n_done = 0, cap = 0;
        int result = -EAGAIN;

        for (unsigned pass = 0; pass < max_passes; pass++) {
                struct walk w = {0};
                size_t fresh = 0;
                int e = walk_tree(worker, &w);

                if (e < 0) {
                        result = e;
                        break;
                }
                for (size_t i = 1; i < w.n; i++) {
                        bool seen = false;

                        if (w.p[i].state == 'Z' || w.p[i].start >= before_tick)
                                continue;
                        for (size_t k = 0; k < n_done && !seen; k++)
                                seen = done[k].pid == w.p[i].pid && done[k].start == w.p[i].start;
                        if (seen)
                                continue; /* dying: SIGKILL is not refused, only slow to land */
                        /* A /proc/PID directory descriptor is a pidfd for
                         * pidfd_send_signal(2): it cannot hit a reused pid. */
                        if (syscall(SYS_pidfd_send_signal, w.p[i].dir_fd, SIGKILL, NULL, 0) < 0)
                                continue;
                        if (n_done == cap) {
                                struct signalled *p = array_grow(done, &cap, sizeof(*p), 16);
                                if (!p)
                                        continue;
                                done = p;
                        }
                        done[n_done++] = (struct signalled){w.p[i].pid, w.p[i].start};
                        fresh++;
                }
                walk_free(&w);
                if (fresh == 0) {
                        result = (int)n_done;
                        break;
                }
        }
        free(done);
        return result;
}

int procs_worker_self(pid_t worker, double *cpu_s, int *threads) {
        static long ticks;
        char path[64], buf[1024];
        unsigned long long ut, st;
        long long cut, cst;
        const char *rp;
        ssize_t n;
        int th;

        if (!ticks)
                ticks = sysconf(_SC_CLK_TCK);
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)worker);
        n = small_file_read(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                return (int)n;
        /* Fields from the last ')' (see parse_stat): utime stime are 14 and
         * 15, cutime cstime 16 and 17, num_threads 20. */
        rp = strrchr(buf, ')');
        if (!rp || sscanf(rp + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld %*d %*d %d", &ut,
                          &st, &cut, &cst, &th) != 5 || cut < 0 || cst < 0)
                return -EIO;
        *cpu_s = (double)(ut + st + (unsigned long long)cut + (unsigned long long)cst) / (double)ticks;
        *threads = th;
        return 0;
}
