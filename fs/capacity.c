/* The start-up capacity check (fs/capacity.h). */
#include "capacity.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* A number from a /proc file (the first one in it), or 0. */
static unsigned long long proc_number(const char *path) {
        unsigned long long v = 0;
        FILE *f = fopen(path, "re");

        if (f) {
                if (fscanf(f, "%llu", &v) != 1)
                        v = 0;
                fclose(f);
        }
        return v;
}

/* MemTotal in bytes, or 0. */
static unsigned long long mem_total(void) {
        char line[256];
        unsigned long long kb = 0;
        FILE *f = fopen("/proc/meminfo", "re");

        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
                        break;
        fclose(f);
        return kb * 1024;
}

/* Processes on the host now (the entries of /proc that are numbers). */
static unsigned long long processes_now(void) {
        unsigned long long n = 0;
        DIR *d = opendir("/proc");
        struct dirent *de;

        if (!d)
                return 0;
        while ((de = readdir(d)))
                n += de->d_name[0] >= '1' && de->d_name[0] <= '9';
        closedir(d);
        return n;
}

int capacity_check(const struct options *o, char *err, size_t errlen) {
        unsigned long long sessions = (unsigned long long)o->max_sessions + o->pool;
        unsigned long long fds = sessions * CAPACITY_FDS_PER_SESSION + CAPACITY_FDS_BASE;
        unsigned long long pid_max = proc_number("/proc/sys/kernel/pid_max");
        unsigned long long threads_max = proc_number("/proc/sys/kernel/threads-max");
        unsigned long long mem = mem_total(), procs;
        struct rlimit rl;

        /* Each session holds descriptors in the daemon: the soft limit
         * (often 1024) would refuse sessions long before the machine is
         * full, so take all the hard limit allows. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && fds > rl.rlim_cur) {
                snprintf(err, errlen,
                         "max_sessions=%u (+ pool=%u) needs about %llu descriptors, but RLIMIT_NOFILE's hard limit "
                         "is %llu: raise it (ulimit -Hn, LimitNOFILE=) or ask for at most %llu sessions",
                         o->max_sessions, o->pool, fds, (unsigned long long)rl.rlim_cur,
                         (unsigned long long)(rl.rlim_cur > CAPACITY_FDS_BASE + o->pool * CAPACITY_FDS_PER_SESSION
                                                      ? (rl.rlim_cur - CAPACITY_FDS_BASE) / CAPACITY_FDS_PER_SESSION -
                                                                o->pool
                                                      : 0));
                return -EMFILE;
        }
        /* Each session is a worker process (a thread of its own, and the
         * jail's helpers come and go): they must fit in the pids the kernel
         * has left. */
        procs = processes_now();
        if ((pid_max && sessions + procs + 256 > pid_max) || (threads_max && sessions + procs + 256 > threads_max)) {
                snprintf(err, errlen,
                         "max_sessions=%u (+ pool=%u) needs a process each, but kernel.pid_max is %llu and "
                         "kernel.threads-max %llu with %llu processes running: raise them (sysctl) or ask for fewer",
                         o->max_sessions, o->pool, pid_max, threads_max, procs);
                return -EAGAIN;
        }
        /* Idle sessions share the zygote's pages; what each costs of its
         * own must fit in the machine's memory. */
        if (mem && sessions * CAPACITY_BYTES_PER_SESSION > mem) {
                snprintf(err, errlen,
                         "max_sessions=%u (+ pool=%u) at %llu MiB per idle session needs %llu MiB, more than this "
                         "machine's %llu MiB: ask for at most %llu sessions",
                         o->max_sessions, o->pool, CAPACITY_BYTES_PER_SESSION >> 20,
                         sessions * CAPACITY_BYTES_PER_SESSION >> 20, mem >> 20, mem / CAPACITY_BYTES_PER_SESSION);
                return -ENOMEM;
        }
        return 0;
}
