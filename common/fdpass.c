/* Descriptors passed over unix sockets (common/fdpass.h). */
#include "fdpass.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

union fdpass_control {
        struct cmsghdr align;
        char space[CMSG_SPACE(FDPASS_MAX * sizeof(int))];
};

ssize_t fdpass_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds, int flags) {
        union fdpass_control control;
        struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        int list[FDPASS_MAX];
        size_t n = 0;
        ssize_t sent;

        for (size_t i = 0; i < n_fds; i++)
                if (fds[i] >= 0) {
                        if (n == FDPASS_MAX)
                                return -EINVAL;
                        list[n++] = fds[i];
                }
        if (n > 0) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                mh.msg_control = control.space;
                mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(n * sizeof(int));
                memcpy(CMSG_DATA(c), list, n * sizeof(int));
        }
        do
                sent = sendmsg(sock, &mh, flags);
        while (sent < 0 && errno == EINTR);
        return sent < 0 ? -errno : sent;
}

ssize_t fdpass_recv(int sock, void *buf, size_t size, int *fds, size_t max_fds, size_t *n_fds, int flags) {
        union fdpass_control control;
        struct iovec iov = {.iov_base = buf, .iov_len = size};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                            .msg_controllen = sizeof(control.space)};
        ssize_t n;

        *n_fds = 0;
        do
                n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                        int one;

                        memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        if (*n_fds < max_fds)
                                fds[(*n_fds)++] = one;
                        else
                                close(one);
                }
        }
        if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
                for (size_t i = 0; i < *n_fds; i++)
                        close(fds[i]);
                *n_fds = 0;
                return -EBADMSG;
        }
        return n;
}
