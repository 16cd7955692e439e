/* Test-only native code for tests/sandbox/test_round3.py: the third attack
 * round (after issues 9 and 16), what hostile native code in the worker
 * could still do.  Compiled by that suite like probe.c into a directory given
 * as -o r_libs=DIR, dyn.load()ed and called with .C() (every argument a
 * pointer).  Each function is bounded so that the test stays harmless when
 * the fix is missing: it queues, holds or spins no more than it is told to,
 * and everything it starts dies with the worker when the session closes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "native_common.h"

/* big_calls(seq, n, kib, written, err): n tool_call frames for run seq whose
 * args hold kib KiB of "[0,0,0,...]": cheap to write, dear to parse (one JSON
 * value per two bytes).  The worker's own tool_call_native refuses args over
 * 1 MiB; the daemon takes frames up to 16 MiB and parses each whole before it
 * looks at its type or size.  Replies are drained between frames. */
void big_calls(int *seq, int *n, int *kib, int *written, int *err) {
        static const char mid[] = ",\"tool\":\"bogus\",\"args\":{\"a\":[";
        size_t body = (size_t)*kib * 1024, off, idpos;
        char *f = malloc(body + 512);

        *written = 0;
        *err = 0;
        if (!f) {
                *err = ENOMEM;
                return;
        }
        off = tool_call_head(f, *seq, &idpos);
        memcpy(f + off, mid, sizeof(mid) - 1);
        off += sizeof(mid) - 1;
        for (size_t k = 0; k < body / 2; k++) {
                if (k)
                        f[off++] = ',';
                f[off++] = '0';
        }
        memcpy(f + off, "]}}", 3);
        off += 3;
        *err = send_numbered(f, off, idpos, *n, written);
        free(f);
}

/* Fill AF_UNIX stream socketpairs (both directions, SO_SNDBUF asked as
 * sndbuf) until quota bytes are queued or max_fds descriptors are used. */
static double fill_sockets(double quota, int sndbuf, int max_fds, int *fds, int *nfds) {
        static char buf[65536];
        double total = 0;

        memset(buf, 'x', sizeof(buf));
        *nfds = 0;
        while (total < quota && *nfds + 2 <= max_fds) {
                int sv[2];

                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                        break;
                for (int k = 0; k < 2; k++)
                        setsockopt(sv[k], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
                for (int k = 0; k < 2 && total < quota; k++)
                        for (;;) {
                                ssize_t w = write(sv[k], buf, sizeof(buf));
                                if (w <= 0)
                                        break;
                                total += (double)w;
                                if (total >= quota)
                                        break;
                        }
                fds[(*nfds)++] = sv[0];
                fds[(*nfds)++] = sv[1];
        }
        return total;
}

/* socket_hog(want, procs, hold_ms, queued): queue about want bytes in
 * AF_UNIX socket buffers, spread over procs processes (this one and
 * procs - 1 children, each with a share), hold them for hold_ms, then free
 * everything.  *queued: the bytes actually queued by all of them.  Socket
 * buffers are kernel memory: no process's resident set shows them. */
void socket_hog(double *want, int *procs, int *hold_ms, double *queued) {
        struct timespec hold = {*hold_ms / 1000, (long)(*hold_ms % 1000) * 1000000L};
        double share = *want / (*procs > 0 ? *procs : 1), total = 0;
        int fds[240], nfds, report[2];
        pid_t kids[64];
        int nkids = 0;

        if (pipe2(report, O_CLOEXEC) < 0) {
                *queued = -1;
                return;
        }
        for (int i = 1; i < *procs && nkids < 64; i++) {
                pid_t p = fork();
                if (p == 0) {
                        double got = fill_sockets(share, 1 << 30, 240, fds, &nfds);
                        (void)!write(report[1], &got, sizeof(got));
                        nanosleep(&hold, NULL);
                        _exit(0);
                }
                if (p > 0)
                        kids[nkids++] = p;
        }
        total = fill_sockets(share, 1 << 30, 240, fds, &nfds);
        for (int i = 0; i < nkids; i++) {
                double got = 0;
                if (read(report[0], &got, sizeof(got)) == (ssize_t)sizeof(got))
                        total += got;
        }
        nanosleep(&hold, NULL);
        for (int i = 0; i < nfds; i++)
                close(fds[i]);
        for (int i = 0; i < nkids; i++) {
                kill(kids[i], SIGKILL);
                waitpid(kids[i], NULL, 0);
        }
        close(report[0]);
        close(report[1]);
        *queued = total;
}

static void *spin(void *arg) {
        sigset_t all;
        volatile unsigned long x = 0;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (;;)
                x++;
        return arg;
}

/* spin_thread(ret): a thread of the worker that spins for ever with every
 * signal blocked, started and left behind when the run ends.  It is not a
 * process the run started: kill(-1) from the worker (pid 1) never reaches
 * its own threads.  *ret: 0 once started. */
void spin_thread(int *ret) {
        pthread_t t;
        pthread_attr_t a;

        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        *ret = pthread_create(&t, &a, spin, NULL);
        pthread_attr_destroy(&a);
}

static int later_n, later_mib, later_delay;

static void *fork_later_thread(void *arg) {
        sigset_t all;

        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        sleep((unsigned)later_delay);
        for (int i = 0; i < later_n; i++)
                if (fork() == 0) {
                        size_t len = (size_t)later_mib << 20;
                        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                        if (p != MAP_FAILED)
                                memset(p, 1, len);
                        for (;;)
                                pause();
                }
        return arg;
}

/* fork_later(n, mib, delay_s, ret): a thread that, delay_s seconds after
 * this call (the run has ended by then), forks n children holding mib MiB
 * each, which wait for ever: processes started between runs. */
void fork_later(int *n, int *mib, int *delay_s, int *ret) {
        pthread_t t;

        later_n = *n;
        later_mib = *mib;
        later_delay = *delay_s;
        *ret = pthread_create(&t, NULL, fork_later_thread, NULL);
        if (*ret == 0)
                pthread_detach(t);
}

static void *pool_thread(void *arg) {
        for (;;)
                pause();
        return arg;
}

/* sleeping_pool(n, ret): n threads that sleep for ever, as the idle threads
 * of an OpenMP or BLAS pool do between parallel regions: more threads than
 * the worker started with, doing nothing.  *ret: 0 once started. */
void sleeping_pool(int *n, int *ret) {
        *ret = 0;
        for (int i = 0; i < *n && *ret == 0; i++) {
                pthread_t t;

                *ret = pthread_create(&t, NULL, pool_thread, NULL);
                if (*ret == 0)
                        pthread_detach(t);
        }
}

static int lease_fd = -1;

/* take_lease(path, ret, err): open path read-only (it stays open, so the
 * lease outlives the run) and ask for a write lease, then a read lease: a
 * lease makes every other opener of the file, on the host too, wait up to
 * fs.lease-break-time (45 s).  The kernel grants one to the file's owner,
 * whatever the mount's read-only flag.  *ret: fcntl's answer; *err: errno. */
void take_lease(char **path, int *ret, int *err) {
        if (lease_fd < 0)
                lease_fd = open(*path, O_RDONLY | O_CLOEXEC);
        if (lease_fd < 0) {
                *ret = -1;
                *err = errno;
                return;
        }
        *ret = fcntl(lease_fd, F_SETLEASE, F_WRLCK);
        if (*ret < 0)
                *ret = fcntl(lease_fd, F_SETLEASE, F_RDLCK);
        *err = *ret < 0 ? errno : 0;
}
