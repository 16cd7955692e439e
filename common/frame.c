#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macros.h"

void frame_reader_init(struct frame_reader *r, size_t max_payload) {
        *r = (struct frame_reader){.max = max_payload};
}

void frame_reader_free(struct frame_reader *r) {
        text_free(&r->buf);
        *r = (struct frame_reader){.max = r->max};
}

/* Room for extra more bytes.  Taking a frame only moves start (a burst of
 * small frames would otherwise move the rest of the buffer once per frame):
 * the space in front is reclaimed here, when it is needed. */
static int reserve(struct frame_reader *r, size_t extra) {
        if (r->buf.len + extra < r->buf.cap)
                return 0;
        if (r->start > 0) {
                text_consume(&r->buf, r->start);
                r->start = 0;
        }
        return text_reserve(&r->buf, extra);
}

int frame_reader_feed(struct frame_reader *r, const void *data, size_t n) {
        int e = reserve(r, n);

        return e < 0 ? e : text_append(&r->buf, data, n);
}

long frame_reader_fill(struct frame_reader *r, int fd) {
        ssize_t n;
        int e = reserve(r, 65536);

        if (e < 0)
                return e;
        do
                n = read(fd, r->buf.data + r->buf.len, r->buf.cap - r->buf.len - 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        r->buf.len += (size_t)n;
        r->buf.data[r->buf.len] = '\0';
        return n;
}

static uint32_t get_be32(const char *p) {
        const unsigned char *u = (const unsigned char *)p;
        return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

const char *frame_type(const json_t *msg) {
        const char *t = json_string_value(json_object_get(msg, "type"));
        return t ? t : "";
}

int frame_reader_next(struct frame_reader *r, json_t **msg) {
        uint32_t n;
        json_t *j;
        json_error_t err;

        if (r->buf.len - r->start < FRAME_HEADER_BYTES)
                return 0;
        n = get_be32(r->buf.data + r->start);
        /* Refuse before buffering: a hostile peer must not make us allocate
         * more than max. */
        if (n > r->max || n == 0)
                return -EMSGSIZE;
        if (r->buf.len - r->start - FRAME_HEADER_BYTES < n)
                return 0;
        j = json_loadb(r->buf.data + r->start + FRAME_HEADER_BYTES, n, JSON_REJECT_DUPLICATES, &err);
        r->start += FRAME_HEADER_BYTES + n;
        if (r->start == r->buf.len) {
                r->start = 0;
                text_clear(&r->buf);
        }
        if (!j)
                return -EBADMSG;
        if (!json_is_object(j) || !json_is_string(json_object_get(j, "type"))) {
                json_decref(j);
                return -EBADMSG;
        }
        *msg = j;
        return 1;
}

int frame_append(const json_t *msg, struct text *out) {
        _cleanup_free_ char *text = NULL;
        size_t n;
        char header[FRAME_HEADER_BYTES];
        int e;

        if (!json_is_object(msg))
                return -EINVAL;
        /* 15 significant digits: R's own precision for doubles. */
        text = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (!text)
                return -ENOMEM;
        n = strlen(text);
        if (n > FRAME_MAX_BYTES)
                return -EMSGSIZE;
        header[0] = (char)(n >> 24);
        header[1] = (char)(n >> 16);
        header[2] = (char)(n >> 8);
        header[3] = (char)n;
        if ((e = text_reserve(out, FRAME_HEADER_BYTES + n)) < 0)
                return e;
        text_append(out, header, FRAME_HEADER_BYTES); /* room reserved: cannot fail */
        text_append(out, text, n);
        return 0;
}

int frame_encode(const json_t *msg, char **out, size_t *out_len) {
        struct text t = {0};
        int e = frame_append(msg, &t);

        if (e < 0)
                return e;
        *out = text_steal(&t, out_len);
        return 0;
}

int frame_send(int fd, const json_t *msg) {
        _cleanup_free_ char *buf = NULL;
        size_t len, off = 0;
        int e = frame_encode(msg, &buf, &len);

        if (e < 0)
                return e;
        while (off < len) {
                ssize_t n = write(fd, buf + off, len - off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                off += (size_t)n;
        }
        return 0;
}

int frame_recv(int fd, struct frame_reader *r, json_t **msg) {
        for (;;) {
                int e = frame_reader_next(r, msg);
                long n;

                if (e != 0)
                        return e;
                n = frame_reader_fill(r, fd);
                if (n == 0)
                        return 0;
                if (n < 0 && n != -EINTR)
                        return (int)n;
        }
}
