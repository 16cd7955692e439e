/* Test-only native code for tests/sandbox/test_round3_kernel.py: the
 * system calls the jail refuses since round 3 (sandbox/seccomp.c), each
 * tried once with its errno reported.  Compiled into a directory given as
 * -o r_libs=DIR, dyn.load()ed and called with .C().  Nothing is left
 * behind: every descriptor is closed before the call returns. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

/* try_sockopt(opt, ret, err, size): a socketpair, setsockopt(SOL_SOCKET,
 * opt) to 4 MiB on one end, then SO_SNDBUF as getsockopt reads it. */
void try_sockopt(int *opt, int *ret, int *err, int *size) {
        int sv[2], v = 4 << 20;
        socklen_t len = sizeof(*size);

        *ret = -1;
        *err = 0;
        *size = -1;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                *err = errno;
                return;
        }
        *ret = setsockopt(sv[0], SOL_SOCKET, *opt, &v, sizeof(v));
        *err = *ret < 0 ? errno : 0;
        getsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, size, &len);
        close(sv[0]);
        close(sv[1]);
}

/* try_fcntl(path, cmd, arg, ret, err): open path read-only (a directory
 * too), fcntl(cmd, arg) once, close. */
void try_fcntl(char **path, int *cmd, int *arg, int *ret, int *err) {
        int fd = open(*path, O_RDONLY | O_CLOEXEC);

        *ret = -1;
        *err = 0;
        if (fd < 0) {
                *err = errno;
                return;
        }
        *ret = fcntl(fd, *cmd, *arg);
        *err = *ret < 0 ? errno : 0;
        if (*ret >= 0 && *cmd == F_SETLEASE)
                fcntl(fd, F_SETLEASE, F_UNLCK);
        close(fd);
}
