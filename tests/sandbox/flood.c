/* Test-only native code for the flood tests (tests/sandbox/test_flood.py):
 * what hostile native code in the worker can do to the daemon through the
 * worker's own socket (fd 3), without going through tool_call_native's
 * one-call-then-wait discipline.  Compiled by the suite like probe.c into
 * the directory given as -o r_libs=DIR and called from R with .C().
 *
 * flood_calls(seq, count, first_id, read_replies, written, err): writes
 * count tool_call frames for run seq (ids first_id, first_id + 1, ...) for
 * an unknown tool, as fast as the socket takes them.  With read_replies 0 it
 * never reads what the daemon answers (a worker that stops reading its
 * replies); with 1 it drains whatever is readable between writes (a worker
 * that keeps its receive buffer empty, so that only the daemon's reading
 * limits the rate).  *written is the number of frames written whole, *err
 * the errno that stopped it (0 when all were written). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void flood_calls(int *seq, double *count, double *first_id, int *read_replies, double *written, int *err) {
        char frame[256], sink[65536];
        double n = 0;

        *err = 0;
        for (double i = 0; i < *count; i++) {
                int len = snprintf(frame + 4, sizeof(frame) - 4,
                                   "{\"type\":\"tool_call\",\"seq\":%d,\"id\":%.0f,\"tool\":\"bogus\",\"args\":{}}",
                                   *seq, *first_id + i);
                size_t off = 0, total = (size_t)len + 4;

                frame[0] = (char)(len >> 24);
                frame[1] = (char)(len >> 16);
                frame[2] = (char)(len >> 8);
                frame[3] = (char)len;
                while (off < total) {
                        ssize_t w = write(3, frame + off, total - off);
                        if (w < 0 && errno == EINTR)
                                continue; /* hostile: interrupts do not stop it */
                        if (w <= 0) {
                                *err = w < 0 ? errno : EPIPE;
                                *written = n;
                                return;
                        }
                        off += (size_t)w;
                }
                n++;
                if (*read_replies) {
                        struct pollfd p = {.fd = 3, .events = POLLIN};
                        while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN))
                                if (read(3, sink, sizeof(sink)) <= 0)
                                        break;
                }
        }
        *written = n;
}
