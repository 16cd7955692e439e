/* Test-only native code for tests/sandbox/test_flood.py and
 * test_run_processes.py: what hostile native code in the worker can do to
 * the daemon through the worker's own socket (fd 3) and its own process
 * tree, without the worker's discipline (one tool call, then wait for its
 * reply; kill what the run started before the result).  Compiled by those
 * suites like probe.c into a directory given as -o r_libs=DIR, dyn.load()ed
 * and called with .C() (every argument a pointer).
 *
 * This is the worst case the daemon must bound by itself: the daemon, not
 * the worker, is the authority. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "native_common.h"

/* flood_calls(seq, count, first_id, read_replies, delay_ms, tool, written,
 * err): write count tool_call frames for run seq (ids first_id, first_id +
 * 1, ...) calling tool with no arguments, as fast as the socket takes them
 * (or delay_ms apart).  read_replies 0: never read what the daemon answers
 * (a worker that stops reading its replies); 1: drain whatever is readable
 * between writes (so that only the daemon's reading limits the rate).
 * *written: frames written whole; *err: the errno that stopped it, or 0. */
void flood_calls(int *seq, double *count, double *first_id, int *read_replies, int *delay_ms, char **tool,
                 double *written, int *err) {
        char frame[512];
        struct timespec delay = {*delay_ms / 1000, (long)(*delay_ms % 1000) * 1000000L};
        double n = 0;

        *err = 0;
        for (double i = 0; i < *count; i++) {
                snprintf(frame, sizeof(frame),
                         "{\"type\":\"tool_call\",\"seq\":%d,\"id\":%.0f,\"tool\":\"%.200s\",\"args\":{}}", *seq,
                         *first_id + i, *tool);
                if ((*err = send_frame(frame)) != 0)
                        break;
                n++;
                if (*read_replies)
                        drain();
                if (*delay_ms > 0)
                        while (nanosleep(&delay, &delay) < 0 && errno == EINTR)
                                ;
        }
        *written = n;
}

/* dear_calls(seq, first_id, count, bytes, worst): once the daemon has been
 * quiet for 100 ms (the replies to a flood before, thrown away), count
 * tool_call frames calling tool "bogus" with one string argument of bytes
 * bytes, each written when the reply to the one before came (first_id,
 * first_id + 1, ...).  *worst: the longest wait for a reply, in seconds. */
void dear_calls(int *seq, double *first_id, int *count, int *bytes, double *worst) {
        struct pollfd p = {.fd = WORKER_FD, .events = POLLIN};
        size_t cap = (size_t)*bytes + 256;
        char *frame = malloc(cap);

        *worst = -1;
        if (!frame)
                return;
        while (poll(&p, 1, 100) > 0)
                drain();
        for (int i = 0; i < *count; i++) {
                struct timespec t0, t1;
                double waited;
                int n = snprintf(frame, cap, "{\"type\":\"tool_call\",\"seq\":%d,\"id\":%.0f,\"tool\":\"bogus\",\"args\":{\"a\":\"",
                                 *seq, *first_id + i);

                memset(frame + n, 'x', (size_t)*bytes);
                strcpy(frame + n + *bytes, "\"}}");
                clock_gettime(CLOCK_MONOTONIC, &t0);
                if (send_frame(frame) != 0)
                        break;
                while (poll(&p, 1, -1) < 0 && errno == EINTR)
                        ;
                clock_gettime(CLOCK_MONOTONIC, &t1);
                drain();
                waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
                if (waited > *worst)
                        *worst = waited;
        }
        free(frame);
}

/* A child that spins until it is killed (it ignores SIGINT and SIGTERM). */
static pid_t fork_spinner(void) {
        pid_t pid = fork();

        if (pid == 0) {
                signal(SIGINT, SIG_IGN);
                signal(SIGTERM, SIG_IGN);
                for (;;)
                        ;
        }
        return pid;
}

/* fork_and_fake_result(seq, pid): fork a spinning child, then end run seq
 * from the daemon's point of view by writing a result frame for it
 * directly 300 ms later, so that the worker's own clean-up at the end of
 * the run never runs, and return (the R code then blocks).  *pid: the child's pid as the
 * sandbox sees it. */
void fork_and_fake_result(int *seq, int *pid) {
        char frame[512];
        struct timespec t = {0, 300000000L}; /* the child is seen from outside first */

        *pid = (int)fork_spinner();
        while (nanosleep(&t, &t) < 0 && errno == EINTR)
                ;
        snprintf(frame, sizeof(frame),
                 "{\"type\":\"result\",\"seq\":%d,\"status\":\"ok\",\"output\":\"faked\",\"value\":\"faked\","
                 "\"error\":\"\",\"warnings\":[]}",
                 *seq);
        send_frame(frame);
}

/* fork_and_hang(pid): fork a spinning child, then sleep for ever, deaf to
 * interrupts: a worker that will not stop at its deadline. */
void fork_and_hang(int *pid) {
        struct timespec t = {3600, 0};

        *pid = (int)fork_spinner();
        for (;;)
                nanosleep(&t, NULL);
}

/* block_forever(): what R does after fork_and_fake_result, so that its real
 * result never comes (it would be a protocol violation, and the worker would
 * be killed with its namespace: that is not what is tested). */
void block_forever(void) {
        struct timespec t = {3600, 0};

        for (;;)
                nanosleep(&t, NULL);
}
