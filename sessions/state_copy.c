/* A state between a daemon's file and a worker's pipe (sessions/state_copy.h). */
#include "state_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"
#include "macros.h"

#define COPY_CHUNK (1 << 16)

struct state_copy {
        struct loop *loop;
        int pipe_fd;  /* the daemon's end; the thread's until it ends */
        int file_fd;  /* the caller's */
        off_t off;
        long long limit;
        bool to_file;
        int stop_efd; /* the loop to the thread: stop */
        int done_efd; /* the thread to the loop: it ended */
        pthread_t thread;
        state_copy_check_fn check;
        void *check_arg;
        state_copy_fn fn;
        void *data;
        int err;      /* the thread's result, read once it ended */
        const char *why;
        char check_why[256];
};

static int fail(struct state_copy *c, int err, const char *why) {
        c->err = err;
        c->why = why;
        return err;
}

static bool pwrite_all(int fd, const char *p, size_t len, off_t off) {
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, off);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return false;
                p += n;
                len -= (size_t)n;
                off += n;
        }
        return true;
}

/* Read what the pipe has (at most n bytes, or until EAGAIN) into the file.
 * 1: the writer closed its end; 0: more may come; < 0: failed. */
static int take(struct state_copy *c, char *buf, long long *done, size_t n) {
        ssize_t got = read(c->pipe_fd, buf, MIN(n, (size_t)COPY_CHUNK));

        if (got < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : fail(c, -EIO, "the state's pipe could not be read");
        if (got == 0)
                return 1;
        /* The bound the worker's file-size limit set when it wrote the file
         * itself: a thread of the session that writes without end is
         * stopped here, not at the host's disk or the daemon's memory. */
        if (c->limit >= 0 && *done + got > c->limit)
                return fail(c, -EFBIG, "the worker wrote more than a state can take");
        if (!pwrite_all(c->file_fd, buf, (size_t)got, c->off + *done))
                return fail(c, -EIO, "the state could not be written to the daemon's file");
        *done += got;
        return 0;
}

static void to_file(struct state_copy *c, char *buf) {
        long long done = 0;

        for (;;) {
                struct pollfd p[2] = {{.fd = c->pipe_fd, .events = POLLIN}, {.fd = c->stop_efd, .events = POLLIN}};
                int r;

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        fail(c, -EIO, "poll failed");
                        return;
                }
                if (p[1].revents) {
                        /* The worker answered: what it wrote is in the pipe
                         * now (a pipe's write is done when it returns).
                         * Only that much is taken: a thread of its that
                         * keeps writing does not keep the copy going. */
                        int avail = 0;
                        long long until;

                        if (ioctl(c->pipe_fd, FIONREAD, &avail) < 0)
                                avail = 0;
                        until = done + avail;
                        while (done < until) {
                                long long before = done;

                                if (take(c, buf, &done, (size_t)(until - done)) != 0 || done == before)
                                        break;
                        }
                        if (c->err < 0)
                                return;
                        break;
                }
                if ((r = take(c, buf, &done, COPY_CHUNK)) < 0)
                        return;
                if (r == 1)
                        break;
        }
        /* The worker synced the file itself when it held it; now the daemon
         * does, before the rename makes it the session's. */
        if (fsync(c->file_fd) < 0 && errno != EINVAL)
                fail(c, -EIO, "the state could not be synced to disk");
}

static void from_file(struct state_copy *c, char *buf) {
        long long done = 0;
        size_t len = 0, pos = 0;

        while (done < c->limit || pos < len) {
                struct pollfd p[2] = {{.fd = c->pipe_fd, .events = POLLOUT}, {.fd = c->stop_efd, .events = POLLIN}};
                ssize_t n;

                if (pos == len) {
                        n = pread(c->file_fd, buf, (size_t)MIN((long long)COPY_CHUNK, c->limit - done),
                                  c->off + done);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0) {
                                fail(c, -EIO, "the snapshot could not be read");
                                return;
                        }
                        done += n;
                        pos = 0;
                        len = (size_t)n;
                }
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        fail(c, -EIO, "poll failed");
                        return;
                }
                /* Stopped (the worker answered or is gone), or the worker
                 * closed its end: its answer says how the restore went. */
                if (p[1].revents || (p[0].revents & (POLLERR | POLLHUP)))
                        return;
                n = write(c->pipe_fd, buf + pos, len - pos);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (n < 0)
                        return; /* EPIPE (SIGPIPE is ignored by the daemon) */
                pos += (size_t)n;
        }
}

/* Thread context: a thread of the daemon's, only this copy's descriptors and
 * memory; no lock is needed (the loop reads err once done_efd fired). */
static void *copy_main(void *arg) {
        struct state_copy *c = arg;
        char *buf = malloc(COPY_CHUNK);

        /* By name in /proc/PID/task/TID/comm (and top -H): a copy left
         * running is seen from outside (tests/sandbox/test_round6.py). */
        pthread_setname_np(pthread_self(), STATE_COPY_THREAD_NAME);
        if (!buf)
                fail(c, -ENOMEM, "out of memory");
        else if (c->check && (c->err = c->check(c->check_arg, c->file_fd, c->check_why, sizeof(c->check_why))) < 0)
                c->why = c->check_why;
        else if (c->to_file)
                to_file(c, buf);
        else
                from_file(c, buf);
        free(buf);
        /* Closed here, at once: the worker's later writes get EPIPE, its
         * reads the end of the stream, and nothing of the file is reachable
         * through the pipe. */
        close(c->pipe_fd);
        c->pipe_fd = -1;
        eventfd_write(c->done_efd, 1);
        return NULL;
}

static void on_done(int fd, uint32_t events, void *data) {
        struct state_copy *c = data;

        (void)fd;
        (void)events;
        loop_del_fd(c->loop, c->done_efd);
        /* The thread wrote the eventfd as its last act: the join waits for
         * its return only. */
        pthread_join(c->thread, NULL);
        close(c->done_efd);
        close(c->stop_efd);
        c->fn(c->data, c->err, c->why);
        free(c);
}

int state_copy_start(struct loop *l, int pipe_fd, int file_fd, off_t off, long long limit, bool to_file,
                     state_copy_check_fn check, void *check_arg, state_copy_fn fn, void *data,
                     struct state_copy **out) {
        struct state_copy *c = calloc(1, sizeof(*c));
        int e;

        if (!c) {
                close(pipe_fd);
                return -ENOMEM;
        }
        *c = (struct state_copy){.loop = l, .pipe_fd = pipe_fd, .file_fd = file_fd, .off = off, .limit = limit,
                                 .to_file = to_file, .check = check, .check_arg = check_arg, .fn = fn, .data = data,
                                 .stop_efd = -1, .done_efd = -1};
        /* The daemon's end only (the worker's is a file description of its
         * own): the thread polls it with the stop eventfd. */
        if (fcntl(pipe_fd, F_SETFL, O_NONBLOCK) < 0 || (c->stop_efd = eventfd(0, EFD_CLOEXEC)) < 0 ||
            (c->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
                e = -errno;
                goto fail;
        }
        if ((e = loop_add_fd(l, c->done_efd, EPOLLIN, on_done, c)) < 0)
                goto fail;
        if ((e = -pthread_create(&c->thread, NULL, copy_main, c)) < 0) {
                loop_del_fd(l, c->done_efd);
                goto fail;
        }
        *out = c;
        return 0;
fail:
        close(pipe_fd);
        if (c->stop_efd >= 0)
                close(c->stop_efd);
        if (c->done_efd >= 0)
                close(c->done_efd);
        free(c);
        return e;
}

void state_copy_stop(struct state_copy *c) {
        eventfd_write(c->stop_efd, 1);
}

void state_copy_end_now(struct state_copy *c) {
        state_copy_stop(c);
        /* The thread ends at the stop (its bounded last take, its fsync):
         * on_done's join waits for that. */
        on_done(c->done_efd, EPOLLIN, c);
}
