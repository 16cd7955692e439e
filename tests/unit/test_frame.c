/* Unit tests of the frame codec (common/frame.c), the parser of what the
 * untrusted worker sends. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "frame.h"

static void feed_raw(struct frame_reader *r, const char *json) {
        size_t n = strlen(json);
        unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                              (unsigned char)n};
        frame_reader_feed(r, h, 4);
        frame_reader_feed(r, json, n);
}

static int next_of(const char *json, json_t **m) {
        struct frame_reader r;
        int e;

        frame_reader_init(&r, 1024);
        feed_raw(&r, json);
        e = frame_reader_next(&r, m);
        frame_reader_free(&r);
        return e;
}

int main(void) {
        struct frame_reader r;
        json_t *m = NULL, *in;
        char *buf;
        size_t len;
        int sv[2];

        /* Round trip, byte by byte: a frame split anywhere is reassembled. */
        in = json_pack("{s:s, s:i, s:s}", "type", "exec", "seq", 7, "code", "1+1 # é");
        CHECK(frame_encode(in, &buf, &len) == 0);
        frame_reader_init(&r, FRAME_MAX_BYTES);
        for (size_t i = 0; i < len; i++) {
                CHECK(frame_reader_next(&r, &m) == 0);
                frame_reader_feed(&r, buf + i, 1);
        }
        CHECK(frame_reader_next(&r, &m) == 1);
        CHECK(m && json_equal(m, in));
        CHECK(strcmp(frame_type(m), "exec") == 0);
        json_decref(m);
        /* Two frames in one buffer. */
        frame_reader_feed(&r, buf, len);
        frame_reader_feed(&r, buf, len);
        CHECK(frame_reader_next(&r, &m) == 1);
        json_decref(m);
        CHECK(frame_reader_next(&r, &m) == 1);
        json_decref(m);
        CHECK(frame_reader_next(&r, &m) == 0);
        frame_reader_free(&r);
        free(buf);

        /* Hostile input. */
        CHECK(next_of("[1,2]", &m) == -EBADMSG);                     /* not an object */
        CHECK(next_of("{\"seq\":1}", &m) == -EBADMSG);               /* no type */
        CHECK(next_of("{\"type\":5}", &m) == -EBADMSG);              /* type not a string */
        CHECK(next_of("{\"type\":\"a\",\"type\":\"b\"}", &m) == -EBADMSG); /* duplicate key */
        CHECK(next_of("{\"type\":\"a\\u0000b\"}", &m) == -EBADMSG);  /* NUL in a string */
        CHECK(next_of("{\"type\":\"\xff\"}", &m) == -EBADMSG);       /* not UTF-8 */
        CHECK(next_of("{\"type\":\"x\"", &m) == -EBADMSG);           /* truncated JSON */
        CHECK(next_of("{\"type\":\"x\"} {}", &m) == -EBADMSG);       /* trailing data */
        frame_reader_init(&r, 1024);
        frame_reader_feed(&r, "\x7f\xff\xff\xff", 4); /* length over the maximum: refused before buffering */
        CHECK(frame_reader_next(&r, &m) == -EMSGSIZE);
        frame_reader_free(&r);
        frame_reader_init(&r, 1024);
        frame_reader_feed(&r, "\0\0\0\0", 4); /* empty frame */
        CHECK(frame_reader_next(&r, &m) == -EMSGSIZE);
        frame_reader_free(&r);
        m = json_integer(1);
        CHECK(frame_encode(m, &buf, &len) == -EINVAL); /* only objects are frames */
        json_decref(m);

        /* Over a socket with the blocking helpers. */
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        CHECK(frame_send(sv[0], in) == 0);
        close(sv[0]);
        frame_reader_init(&r, FRAME_MAX_BYTES);
        CHECK(frame_recv(sv[1], &r, &m) == 1);
        CHECK(m && json_equal(m, in));
        json_decref(m);
        CHECK(frame_recv(sv[1], &r, &m) == 0); /* end of file */
        frame_reader_free(&r);
        close(sv[1]);
        json_decref(in);
        return check_summary("frame");
}
