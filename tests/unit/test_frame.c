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

/* Admits frames of type "small" only, with the bounds data points to. */
static int admit_small(void *data, const char *type, size_t type_len, struct frame_bounds *b) {
        if (type_len != 5 || memcmp(type, "small", 5) != 0)
                return -EBADMSG;
        *b = *(const struct frame_bounds *)data;
        return 0;
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
        /* Bounds before the parse (frame_reader_admit). */
        {
                const char *t;
                size_t tl;
                static const char m1[] = "{\"type\":\"x\",\"args\":{\"a\":[1,\"}\"]},\"z\":1}";
                static const char m2[] = "{\"type\":\"x\",\"args\":7}";
                static const char m3[] = "{\"type\":\"x\",\"b\":{\"args\":1}}";
                static const char m4[] = "{\"type\":\"x\", \"args\":1}";
                static const char m5[] = "{\"type\":\"x\",\"args\": 1}";
                static const char m6[] = "{\"type\":\"x\",\"args\":{\"a\": 1}}";
                static const char m7[] = "{\"type\":\"x\",\"id\":      5,\"args\":[1,{}]\n}";
                static const char v3[] = "{\"a\":\"[,{\\\"\"}";

                CHECK(frame_json_values("{}", 2) == 2);
                CHECK(frame_json_values("[0,0,0]", 7) == 4);
                CHECK(frame_json_values(v3, sizeof(v3) - 1) == 2);
                CHECK(frame_member_text(m1, sizeof(m1) - 1, "args", &t, &tl) == 0);
                CHECK(tl == 13 && memcmp(t, "{\"a\":[1,\"}\"]}", tl) == 0);
                CHECK(frame_member_text(m2, sizeof(m2) - 1, "args", &t, &tl) == 0 && tl == 1 && *t == '7');
                CHECK(frame_member_text(m3, sizeof(m3) - 1, "args", &t, &tl) == -ENOENT);
                CHECK(frame_member_text(m4, sizeof(m4) - 1, "args", &t, &tl) == 0 && tl == 1 && *t == '1');
                CHECK(frame_member_text(m5, sizeof(m5) - 1, "args", &t, &tl) == -EINVAL);
                CHECK(frame_member_text(m6, sizeof(m6) - 1, "args", &t, &tl) == -EINVAL);
                CHECK(frame_member_text(m7, sizeof(m7) - 1, "args", &t, &tl) == -EINVAL);
        }
        {
                struct frame_bounds want = {.max_bytes = 64, .max_values = 5};
                unsigned char h[4] = {0, 0, 4, 0};

                frame_reader_init(&r, FRAME_MAX_BYTES);
                frame_reader_admit(&r, admit_small, &want);
                feed_raw(&r, "{\"type\":\"small\",\"a\":[1,2]}");
                CHECK(frame_reader_next(&r, &m) == 1);
                json_decref(m);
                feed_raw(&r, "{\"type\":\"small\",\"a\":[1,2,3,4]}");
                CHECK(frame_reader_next(&r, &m) == -E2BIG);
                frame_reader_free(&r);

                /* Refused from its first bytes: the rest never needs to come. */
                frame_reader_init(&r, FRAME_MAX_BYTES);
                frame_reader_admit(&r, admit_small, &want);
                frame_reader_feed(&r, h, 4);
                frame_reader_feed(&r, "{\"type\":\"small\"", 15);
                CHECK(frame_reader_next(&r, &m) == -EMSGSIZE);
                frame_reader_free(&r);

                frame_reader_init(&r, FRAME_MAX_BYTES);
                frame_reader_admit(&r, admit_small, &want);
                feed_raw(&r, "{\"type\":\"other\"}");
                CHECK(frame_reader_next(&r, &m) == -EBADMSG);
                frame_reader_free(&r);

                frame_reader_init(&r, FRAME_MAX_BYTES);
                frame_reader_admit(&r, admit_small, &want);
                feed_raw(&r, "{\"a\":1,\"type\":\"small\"}");
                CHECK(frame_reader_next(&r, &m) == -EPROTO);
                frame_reader_free(&r);

                /* A payload shorter than the head, and the next frame behind it. */
                frame_reader_init(&r, FRAME_MAX_BYTES);
                frame_reader_admit(&r, admit_small, &want);
                feed_raw(&r, "{\"t\"");
                feed_raw(&r, "{\"type\":\"small\"}");
                CHECK(frame_reader_next(&r, &m) == -EPROTO);
                frame_reader_free(&r);
        }
        json_decref(in);
        return check_summary("frame");
}
