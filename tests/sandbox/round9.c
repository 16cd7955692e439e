/* Round 9 probes (test_round9.py). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* tmpfs_fill(path, bytes, after_us, ret, err): after_us microseconds on,
 * create path and have the kernel allocate bytes of it at once (fallocate: on a tmpfs, pages charged to the
 * caller's memory cgroup, none to its address space).  *ret: fallocate's
 * return, *err: its errno. */
void tmpfs_fill(char **path, double *bytes, int *after_us, int *ret, int *err) {
        struct timespec after = {*after_us / 1000000, (long)(*after_us % 1000000) * 1000L};
        int fd;

        nanosleep(&after, NULL);
        fd = open(*path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0) {
                *ret = -1;
                *err = errno;
                return;
        }
        *ret = fallocate(fd, 0, 0, (off_t)*bytes);
        *err = *ret < 0 ? errno : 0;
        close(fd);
}

/* close_sockets(hold_ms, closed): close every socket of this process (the
 * worker's connection to the daemon among them), then go on for hold_ms.
 * *closed: how many were closed. */
void close_sockets(int *hold_ms, int *closed) {
        struct timespec hold = {*hold_ms / 1000, (long)(*hold_ms % 1000) * 1000000L};
        char path[64], target[64];

        *closed = 0;
        for (int fd = 3; fd < 1024; fd++) {
                ssize_t n;

                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                n = readlink(path, target, sizeof(target) - 1);
                if (n > 7 && !memcmp(target, "socket:", 7) && close(fd) == 0)
                        (*closed)++;
        }
        nanosleep(&hold, NULL);
}
