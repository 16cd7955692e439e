#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

/* Above any target (a few) and below what close_range() then closes. */
#define CHILD_SCRATCH_FD 64

int child_after_fork(const struct child_setup *c) {
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        int moved[16], end = c->first_fd + c->n_fds;
        sigset_t none;

        if (c->n_fds < 0 || c->n_fds > (int)(sizeof(moved) / sizeof(moved[0])) || c->first_fd < 0 ||
            end > CHILD_SCRATCH_FD)
                return -EINVAL;
        for (int sig = 1; sig < NSIG; sig++)
                sigaction(sig, &dfl, NULL); /* EINVAL for SIGKILL/SIGSTOP: fine */
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                return -errno;
        if (c->new_session && setsid() < 0)
                return -errno;
        if (c->new_group && setpgid(0, 0) < 0)
                return -errno;
        if (c->parent > 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != c->parent))
                return -ESRCH;
        /* Out of the way first (a source may sit on another's target), then
         * into place: dup2 gives a copy without FD_CLOEXEC, which dup2 of a
         * descriptor onto itself would not. */
        for (int i = 0; i < c->n_fds; i++) {
                moved[i] = fcntl(c->fds[i], F_DUPFD, CHILD_SCRATCH_FD);
                if (moved[i] < 0)
                        return -errno;
        }
        for (int i = 0; i < c->n_fds; i++)
                if (dup2(moved[i], c->first_fd + i) < 0)
                        return -errno;
        if (c->null_stdio) {
                int devnull = open("/dev/null", O_RDWR); /* closed below unless it is one of 0-2 */

                if (devnull < 0)
                        return -errno;
                for (int fd = 0; fd < 2; fd++)
                        if ((fd < c->first_fd || fd >= end) && dup2(devnull, fd) < 0)
                                return -errno;
        }
        /* Everything above the targets, the scratch copies included. */
        if (close_range((unsigned)(end > 3 ? end : 3), ~0U, 0) < 0)
                for (int fd = end > 3 ? end : 3; fd < 65536; fd++)
                        close(fd);
        return 0;
}
