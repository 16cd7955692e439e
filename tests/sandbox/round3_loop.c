/* Test-only native code for tests/sandbox/test_round3_loop.py: the dearest
 * frames a hostile worker can still make once the daemon bounds each frame
 * by its type before parsing it (common/frame.h, sessions/protocol.c).
 * Compiled by that suite into a directory given as -o r_libs=DIR,
 * dyn.load()ed and called with .C() (every argument a pointer).  Bounded:
 * it writes as many frames as it is told and stops at the first error. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "native_common.h"

/* raw_frame(text, written, err): one frame of the given payload text. */
void raw_frame(char **text, int *written, int *err) {
        size_t n = strlen(*text);
        char *f = malloc(n + 4);

        *written = 0;
        if (!f) {
                *err = ENOMEM;
                return;
        }
        put_frame_len(f, n);
        memcpy(f + 4, *text, n);
        *err = write_all(WORKER_FD, f, n + 4);
        *written = *err == 0;
        free(f);
}

/* worst_calls(seq, n, values, kib, written, err): n tool_call frames for run
 * seq, each with args {"a":[0,0,...(values zeros)],"b":"xxx..."} padded
 * with the string to kib KiB in all: as many JSON values and bytes as the
 * daemon admits (when values and kib are its bounds).  Replies drained
 * between frames, never waited for. */
void worst_calls(int *seq, int *n, int *values, int *kib, int *written, int *err) {
        size_t total = (size_t)*kib * 1024, off, idpos;
        char *f = malloc(total + (size_t)*values * 2 + 512);

        *written = 0;
        *err = 0;
        if (!f) {
                *err = ENOMEM;
                return;
        }
        off = tool_call_head(f, *seq, &idpos);
        off += (size_t)sprintf(f + off, ",\"tool\":\"bogus\",\"args\":{\"a\":[");
        for (int k = 0; k < *values; k++) {
                if (k)
                        f[off++] = ',';
                f[off++] = '0';
        }
        off += (size_t)sprintf(f + off, "],\"b\":\"");
        while (off + 4 + 3 < total)
                f[off++] = 'x';
        memcpy(f + off, "\"}}", 3);
        off += 3;
        *err = send_numbered(f, off, idpos, *n, written);
        free(f);
}
