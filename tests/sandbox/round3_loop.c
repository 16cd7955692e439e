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

static int write_all(int fd, const char *buf, size_t len) {
        size_t off = 0;

        while (off < len) {
                ssize_t w = write(fd, buf + off, len - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return w < 0 ? errno : EPIPE;
                off += (size_t)w;
        }
        return 0;
}

static void drain(void) {
        char sink[65536];
        struct pollfd p = {.fd = 3, .events = POLLIN};

        while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN))
                if (read(3, sink, sizeof(sink)) <= 0)
                        break;
}

/* raw_frame(text, written, err): one frame of the given payload text. */
void raw_frame(char **text, int *written, int *err) {
        size_t n = strlen(*text);
        char *f = malloc(n + 4);

        *written = 0;
        if (!f) {
                *err = ENOMEM;
                return;
        }
        f[0] = (char)(n >> 24);
        f[1] = (char)(n >> 16);
        f[2] = (char)(n >> 8);
        f[3] = (char)n;
        memcpy(f + 4, *text, n);
        *err = write_all(3, f, n + 4);
        *written = *err == 0;
        free(f);
}

/* worst_calls(seq, n, values, kib, written, err): n tool_call frames for run
 * seq, each with args {"a":[0,0,...(values zeros)],"b":"xxx..."} padded
 * with the string to kib KiB in all: as many JSON values and bytes as the
 * daemon admits (when values and kib are its bounds).  Replies drained
 * between frames, never waited for. */
void worst_calls(int *seq, int *n, int *values, int *kib, int *written, int *err) {
        size_t total = (size_t)*kib * 1024, off = 4, idpos;
        char *f = malloc(total + (size_t)*values * 2 + 512);
        int hl;

        *written = 0;
        *err = 0;
        if (!f) {
                *err = ENOMEM;
                return;
        }
        hl = sprintf(f + off, "{\"type\":\"tool_call\",\"seq\":%d,\"id\":", *seq);
        off += (size_t)hl;
        idpos = off;
        off += 10;
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
        {
                size_t len = off - 4;
                f[0] = (char)(len >> 24);
                f[1] = (char)(len >> 16);
                f[2] = (char)(len >> 8);
                f[3] = (char)len;
        }
        for (int i = 0; i < *n; i++) {
                char id[16];
                snprintf(id, sizeof(id), "%10d", i + 1);
                memcpy(f + idpos, id, 10);
                if ((*err = write_all(3, f, off)) != 0)
                        break;
                (*written)++;
                drain();
        }
        free(f);
}
