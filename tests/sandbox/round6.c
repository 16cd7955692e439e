/* Native code for tests/sandbox/test_round6.py (compiled into a directory
 * the daemon gets as -o r_libs=DIR): what hostile native code does in a
 * worker with the pipe of a state transfer (sessions/state_copy.h). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What each descriptor number was when a thread began (its /proc link:
 * "pipe:[INODE]" names one pipe): a number that the run had open then and
 * the transfer's descriptor took later is still a new one. */
struct seen {
        char link[1024][64];
};

static void fd_link(int fd, char *out, size_t n) {
        char path[64];
        ssize_t len;

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        len = readlink(path, out, n - 1);
        out[len > 0 ? len : 0] = '\0';
}

static void mark_seen(struct seen *seen) {
        for (int fd = 0; fd < 1024; fd++)
                fd_link(fd, seen->link[fd], sizeof(seen->link[fd]));
}

/* The first pipe end of the given access mode (O_WRONLY: a snapshot's,
 * O_RDONLY: a restore's) that was not open when seen was filled: the end
 * the daemon passes with the transfer's frame.  -1 after ~1 min. */
static int find_new_pipe(const struct seen *seen, int mode) {
        for (int i = 0; i < 60000; i++) {
                DIR *d = opendir("/proc/self/fd");
                struct dirent *de;
                int n = -1;

                while (d && (de = readdir(d))) {
                        char link[64];
                        int fd = atoi(de->d_name);

                        if (fd >= 1024)
                                continue;
                        fd_link(fd, link, sizeof(link));
                        if (!strncmp(link, "pipe:", 5) && strcmp(link, seen->link[fd]) != 0 &&
                            (fcntl(fd, F_GETFL) & O_ACCMODE) == mode) {
                                n = fd;
                                break;
                        }
                }
                if (d)
                        closedir(d);
                if (n >= 0)
                        return n;
                usleep(1000);
        }
        return -1;
}

static void nap_ms(int ms) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
}

/* ---- a slow transfer --------------------------------------------------- */

static int slow_reading, slow_kib, slow_tick_ms;
enum { SLOW_NONE, SLOW_WAITING, SLOW_UNDER_WAY, SLOW_OVER };
static volatile int slow_state = SLOW_NONE;

/* At the next transfer, put a pipe of our own between the worker and the
 * daemon's end and move the stream through it slow_kib KiB every
 * slow_tick_ms: the worker's own writes (or reads) wait on ours, so the
 * daemon's copy of it lasts as long as we like, with no CPU spent. */
static void *slow_thread(void *arg) {
        static struct seen seen;
        char *buf = malloc((size_t)slow_kib << 10);
        int n, real, q[2];

        signal(SIGPIPE, SIG_IGN);
        mark_seen(&seen);
        n = find_new_pipe(&seen, slow_reading ? O_RDONLY : O_WRONLY);
        if (!buf || n < 0 || (real = dup(n)) < 0 || pipe(q) < 0)
                return arg;
        if (slow_reading) {
                dup2(q[0], n);
                close(q[0]);
        } else {
                dup2(q[1], n);
                close(q[1]);
        }
        slow_state = SLOW_UNDER_WAY;
        /* Seen from the host in files/: the transfer has begun (for a
         * fork: both workers are at it).  Not while a restore stages the
         * workspace. */
        if (!slow_reading)
                close(open("/work/.slow_started", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        for (;;) {
                int from = slow_reading ? real : q[0], to = slow_reading ? q[1] : real;
                ssize_t got = read(from, buf, (size_t)slow_kib << 10), off = 0;

                if (got <= 0)
                        break;
                while (off < got) {
                        ssize_t w = write(to, buf + off, (size_t)(got - off));

                        if (w <= 0)
                                goto out;
                        off += w;
                }
                nap_ms(slow_tick_ms);
        }
out:
        close(real);
        close(slow_reading ? q[1] : q[0]);
        free(buf);
        slow_state = SLOW_OVER;
        return arg;
}

/* slow_transfer(reading, kib, tick_ms, ret): a thread left behind that
 * slows the next transfer (reading: a restore) to kib KiB a tick. */
void slow_transfer(int *reading, int *kib, int *tick_ms, int *ret) {
        pthread_t t;

        slow_reading = *reading;
        slow_kib = *kib;
        slow_tick_ms = *tick_ms;
        slow_state = SLOW_WAITING;
        *ret = pthread_create(&t, NULL, slow_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
        else
                slow_state = SLOW_NONE;
}

/* slow_waiting(waiting): whether a thread of slow_transfer() still waits
 * for its transfer in this worker.  One that found its pipe too late (the
 * transfer was through, or the worker already reading it: two readers of
 * one pipe, and the transfer fails its checks, as it should) is used up. */
void slow_waiting(int *waiting) {
        *waiting = slow_state == SLOW_WAITING;
}

/* ---- a process that keeps the pipe ------------------------------------- */

/* At the next snapshot: a grandchild of the worker's (double fork, setsid)
 * takes a copy of the pipe's write end and writes into it for ever, after
 * the worker answered and into whatever the end reaches then. */
static void *child_thread(void *arg) {
        static struct seen seen;
        int n;

        mark_seen(&seen);
        n = find_new_pipe(&seen, O_WRONLY);
        if (n < 0)
                return arg;
        /* Process context: a child of the worker, then its child, in the
         * session's pid namespace. */
        if (fork() == 0) {
                setsid();
                if (fork() == 0) {
                        char junk[4096];

                        memset(junk, 'Z', sizeof(junk));
                        signal(SIGPIPE, SIG_IGN);
                        for (;;) {
                                if (write(n, junk, sizeof(junk)) < 0 && errno == EPIPE)
                                        nap_ms(5);
                                else
                                        nap_ms(1);
                        }
                }
                _exit(0);
        }
        return arg;
}

/* keep_pipe_in_child(ret): a thread left behind for the next snapshot
 * (above). */
void keep_pipe_in_child(int *ret) {
        pthread_t t;

        *ret = pthread_create(&t, NULL, child_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

/* ---- the pipe to another session --------------------------------------- */

static char pass_name[100];
static volatile int pass_abstract_err = -1, pass_path_err = -1;

static int send_fd_to(const struct sockaddr_un *a, socklen_t len, int fd) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), e = 0;
        char c = 'x', ctl[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {&c, 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

        if (s < 0)
                return errno;
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        if (connect(s, (const struct sockaddr *)a, len) < 0 || sendmsg(s, &m, MSG_NOSIGNAL) != 1)
                e = errno;
        close(s);
        return e;
}

/* At the next snapshot: send the pipe's write end to another session's
 * listener, by abstract name and by path (/tmp/NAME). */
static void *pass_thread(void *arg) {
        static struct seen seen;
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        int n;

        mark_seen(&seen);
        n = find_new_pipe(&seen, O_WRONLY);
        if (n < 0)
                return arg;
        a.sun_path[0] = '\0';
        snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "%s", pass_name);
        pass_abstract_err = send_fd_to(&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(pass_name)), n);
        snprintf(a.sun_path, sizeof(a.sun_path), "/tmp/%s", pass_name);
        pass_path_err = send_fd_to(&a, sizeof(a), n);
        return arg;
}

/* pass_pipe(name, ret): a thread left behind for the next snapshot. */
void pass_pipe(char **name, int *ret) {
        pthread_t t;

        snprintf(pass_name, sizeof(pass_name), "%s", *name);
        *ret = pthread_create(&t, NULL, pass_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

/* pass_result(ret): the errnos of the two sends (-1: not tried yet). */
void pass_result(int *abstract_err, int *path_err) {
        *abstract_err = pass_abstract_err;
        *path_err = pass_path_err;
}

static int listen_fds[2] = {-1, -1};
static volatile int received = 0;

static void *listen_thread(void *arg) {
        for (;;) {
                for (int i = 0; i < 2; i++) {
                        int c = accept4(listen_fds[i], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                        char b, ctl[CMSG_SPACE(sizeof(int))];
                        struct iovec iov = {&b, 1};
                        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                                           .msg_controllen = sizeof(ctl)};

                        if (c < 0)
                                continue;
                        nap_ms(20);
                        if (recvmsg(c, &m, 0) >= 0 && CMSG_FIRSTHDR(&m))
                                received++;
                        close(c);
                }
                nap_ms(5);
        }
        return arg;
}

/* listen_for_pipe(name, ret): listen on the abstract name and /tmp/NAME,
 * count the descriptors that arrive (listen_count). */
void listen_for_pipe(char **name, int *ret) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        pthread_t t;

        listen_fds[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        listen_fds[1] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "%s", *name);
        if (bind(listen_fds[0], (struct sockaddr *)&a,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(*name))) < 0 ||
            listen(listen_fds[0], 8) < 0) {
                *ret = errno;
                return;
        }
        memset(a.sun_path, 0, sizeof(a.sun_path));
        snprintf(a.sun_path, sizeof(a.sun_path), "/tmp/%s", *name);
        if (bind(listen_fds[1], (struct sockaddr *)&a, sizeof(a)) < 0 || listen(listen_fds[1], 8) < 0) {
                *ret = errno;
                return;
        }
        *ret = pthread_create(&t, NULL, listen_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

void listen_count(int *ret) { *ret = received; }
