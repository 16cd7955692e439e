/* Test-only: run the real securerfs-worker (REAL_WORKER, set at compile
 * time) under a seccomp filter that refuses user namespaces, the way a
 * container runtime's default profile does.  The escape suite passes it as
 * -o worker=PATH to see the jail fail closed.  (This machine's root lacks
 * CAP_SYS_RESOURCE, so user.max_user_namespaces=0 cannot be set to simulate
 * the same; both end in clone(CLONE_NEWUSER) failing.) */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);

        (void)argc;
        if (!ctx || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)) < 0 ||
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)) < 0 ||
            seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) < 0 || seccomp_load(ctx) < 0) {
                perror("nouserns: seccomp");
                return 126;
        }
        execv(REAL_WORKER, argv);
        perror("nouserns: execv " REAL_WORKER);
        return 127;
}
