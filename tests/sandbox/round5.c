/* Round 5 probes (test_round5.py): a listening abstract unix socket kept
 * open by the session, and a look for any descriptor the worker holds that
 * reaches the scratch root below its chroot. */
#include "probe.c" /* probe_nr, probe_abstract ... in the same library */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Bind and listen on the abstract name *name; the descriptor stays open
 * (the session keeps listening). */
void r5_listen_abstract(char **name, int *ret, int *err) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t n = strlen(*name);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0) {
                *ret = -1;
                *err = errno;
                return;
        }
        if (n > sizeof(sa.sun_path) - 1)
                n = sizeof(sa.sun_path) - 1;
        memcpy(sa.sun_path + 1, *name, n);
        if (bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0 ||
            listen(fd, 4) < 0) {
                *ret = -1;
                *err = errno;
                close(fd);
                return;
        }
        *ret = fd;
        *err = 0;
}

/* How many of the worker's open directory descriptors lead, by ".." walks
 * (64 steps at most), to a directory that is not the process root: a
 * descriptor of the scratch root (or below it) would. */
void r5_fd_escape(int *ret, int *err) {
        struct stat root, st, up;
        int found = 0;

        *err = 0;
        if (stat("/", &root) < 0) {
                *ret = -1;
                *err = errno;
                return;
        }
        for (int fd = 0; fd < 1024; fd++) {
                int cur;

                if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode))
                        continue;
                cur = fcntl(fd, F_DUPFD_CLOEXEC, 0);
                for (int i = 0; i < 64 && cur >= 0; i++) {
                        int next = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

                        if (next < 0 || fstat(next, &up) < 0) {
                                if (next >= 0)
                                        close(next);
                                break;
                        }
                        close(cur);
                        cur = next;
                        if (fstat(cur, &st) == 0 && st.st_dev == root.st_dev && st.st_ino == root.st_ino)
                                break;
                }
                if (cur >= 0) {
                        if (fstat(cur, &st) == 0 && !(st.st_dev == root.st_dev && st.st_ino == root.st_ino))
                                found++;
                        close(cur);
                }
        }
        *ret = found;
}
