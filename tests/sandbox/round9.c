/* Round 9 probes (test_round9.py). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
