/* A session's resource limits on its worker (sandbox/rlimits.h). */
#include "rlimits.h"

#include <errno.h>
#include <math.h>
#include <sys/resource.h>

#include "macros.h"

int rlimits_apply(pid_t pid, const struct limits *l, double cpu_base_s, long long reserved_as, bool cpu_only) {
        static const int resource[LIMIT_COUNT] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE,
                                                  RLIMIT_STACK};
        int first_error = 0;

        for (int i = 0; i < (cpu_only ? 1 : LIMIT_COUNT); i++) {
                long long v = l->v[i];
                struct rlimit hard, rl;

                /* The worker's hard limits are the daemon's (inherited
                 * through the zygote, never changed). */
                if (getrlimit(resource[i], &hard) < 0)
                        hard.rlim_max = RLIM_INFINITY;
                rl.rlim_max = hard.rlim_max;
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
