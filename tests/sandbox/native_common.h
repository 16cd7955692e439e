/* Test-only helpers shared by the hostile native code of tests/sandbox
 * (hostile.c, round3.c, round3_loop.c): writing frames of the worker
 * protocol on the worker's own socket (fd 3) without the worker's
 * discipline, and draining the daemon's replies without waiting for them.
 * Each .c that includes this is compiled alone into its own .so
 * (harness.build_r_lib), so everything here is static inline. */
#ifndef SECURERFS_TESTS_NATIVE_COMMON_H
#define SECURERFS_TESTS_NATIVE_COMMON_H

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The worker's socket to the daemon, as the worker inherits it. */
#define WORKER_FD 3

/* Write all of buf to fd.  Returns 0, or the errno that stopped it (EPIPE
 * for a write of 0 bytes).  Hostile: interrupts do not stop it. */
static inline int write_all(int fd, const char *buf, size_t len) {
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

/* Store len as the 4-byte big-endian length that heads every frame. */
static inline void put_frame_len(char *head, size_t len) {
        head[0] = (char)(len >> 24);
        head[1] = (char)(len >> 16);
        head[2] = (char)(len >> 8);
        head[3] = (char)len;
}

/* Write one frame (length, then the JSON text) on the worker's socket.
 * Returns 0 or the errno that stopped it. */
static inline int send_frame(const char *json) {
        char head[4];
        size_t len = strlen(json);
        int e;

        put_frame_len(head, len);
        e = write_all(WORKER_FD, head, 4);
        return e ? e : write_all(WORKER_FD, json, len);
}

/* Read and throw away whatever the daemon has sent that is readable now;
 * never waits. */
static inline void drain(void) {
        char sink[65536];
        struct pollfd p = {.fd = WORKER_FD, .events = POLLIN};

        while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN))
                if (read(WORKER_FD, sink, sizeof(sink)) <= 0)
                        break;
}

/* Begin a tool_call frame for run seq at f + 4 (f[0..3] are left for the
 * length): `{"type":"tool_call","seq":SEQ,"id":` and ten bytes kept for the
 * id.  *idpos: where the id goes (see send_numbered).  Returns the offset
 * just past the id; the caller writes the rest of the frame from there. */
static inline size_t tool_call_head(char *f, int seq, size_t *idpos) {
        size_t off = 4 + (size_t)sprintf(f + 4, "{\"type\":\"tool_call\",\"seq\":%d,\"id\":", seq);

        *idpos = off;
        return off + 10; /* the id, right-aligned in spaces (JSON allows no leading zeros) */
}

/* Write the frame f (len bytes with its length head) n times on the
 * worker's socket, with the ids 1, 2, ... written at idpos, draining the
 * replies between frames and never waiting for one.  *written: frames
 * written whole.  Returns 0 or the errno that stopped it. */
static inline int send_numbered(char *f, size_t len, size_t idpos, int n, int *written) {
        put_frame_len(f, len - 4);
        for (int i = 0; i < n; i++) {
                char id[16];
                int e;

                snprintf(id, sizeof(id), "%10d", i + 1);
                memcpy(f + idpos, id, 10);
                if ((e = write_all(WORKER_FD, f, len)) != 0)
                        return e;
                (*written)++;
                drain();
        }
        return 0;
}

#endif
