/* A session's resource limits on its worker (sandbox/rlimits.h). */
#include "rlimits.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/resource.h>

#include "macros.h"

static const int resource[LIMIT_COUNT] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE,
                                          RLIMIT_STACK};

/* The worker's hard limits are the daemon's (inherited through the zygote,
 * never changed: the daemon changes only soft limits, its own included), so
 * each is read once, not at every run's start. */
static rlim_t hard_limit(int i) {
        static rlim_t hard[LIMIT_COUNT];
        static bool known[LIMIT_COUNT];

        if (!known[i]) {
                struct rlimit rl;

                hard[i] = getrlimit(resource[i], &rl) < 0 ? RLIM_INFINITY : rl.rlim_max;
                known[i] = true;
        }
        return hard[i];
}

int rlimits_apply(pid_t pid, const struct limits *l, double cpu_base_s, long long reserved_as, bool cpu_only) {
        int first_error = 0;

        for (int i = 0; i < (cpu_only ? 1 : LIMIT_COUNT); i++) {
                long long v = l->v[i];
                struct rlimit rl;

                rl.rlim_max = hard_limit(i);
                rl.rlim_cur = RLIM_INFINITY;
                if (v != LIMIT_UNSET)
                        rl.rlim_cur = i == LIMIT_CPU      ? (rlim_t)ceil(cpu_base_s) + (rlim_t)v
                                      : i == LIMIT_MEMORY ? (rlim_t)v + (rlim_t)reserved_as
                                                          : (rlim_t)v;
                rl.rlim_cur = MIN(rl.rlim_cur, rl.rlim_max);
                if (prlimit(pid, resource[i], &rl, NULL) < 0 && !first_error)
                        first_error = -errno;
        }
        return first_error;
}

long long rlimits_unbacked_as(pid_t pid) {
        char path[64];
        unsigned long long size, resident;
        long page = sysconf(_SC_PAGESIZE);
        FILE *f;
        int n;

        snprintf(path, sizeof(path), "/proc/%ld/statm", (long)pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        n = fscanf(f, "%llu %llu", &size, &resident);
        fclose(f);
        if (n != 2 || page <= 0)
                return -EIO;
        return size > resident ? (long long)((size - resident) * (unsigned long long)page) : 0;
}
