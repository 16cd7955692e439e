#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macros.h"

/* The buffer kept between frames; a larger one is freed once empty. */
#define FRAME_KEEP_BYTES (256u << 10)

void frame_reader_init(struct frame_reader *r, size_t max_payload) {
        *r = (struct frame_reader){.max = max_payload};
}

void frame_reader_free(struct frame_reader *r) {
        text_free(&r->buf);
        *r = (struct frame_reader){.max = r->max, .admit = r->admit, .admit_data = r->admit_data};
}

void frame_reader_admit(struct frame_reader *r, frame_admit_fn fn, void *data) {
        r->admit = fn;
        r->admit_data = data;
}

size_t frame_json_values(const char *text, size_t n) {
        size_t count = 1;
        bool in_string = false;

        for (size_t i = 0; i < n; i++) {
                char c = text[i];

                if (in_string) {
                        if (c == '\\')
                                i++; /* the escaped character, whatever it is */
                        else if (c == '"')
                                in_string = false;
                } else if (c == '"') {
                        in_string = true;
                } else if (c == ',' || c == '[' || c == '{') {
                        count++;
                }
        }
        return count;
}

int frame_member_text(const char *text, size_t n, const char *key, const char **out, size_t *out_len) {
        size_t klen = strlen(key), depth = 0, i, key_start = 0, value_start = 0;
        bool in_string = false, want_key = false, want_value = false, in_value = false;

        for (i = 0; i < n; i++) {
                char c = text[i];

                if (in_string) {
                        if (c == '\\') {
                                i++;
                        } else if (c == '"') {
                                in_string = false;
                                /* The end of a key of the outer object. */
                                if (depth == 1 && want_key) {
                                        want_key = false;
                                        want_value = i - key_start == klen && memcmp(text + key_start, key, klen) == 0;
                                }
                        }
                        continue;
                }
                switch (c) {
                case ' ': case '\t': case '\n': case '\r':
                        /* Between other tokens: skipped (a worker's id
                         * padded with spaces); in the member's value, the
                         * text is not the compact one. */
                        if (in_value)
                                return -EINVAL;
                        break;
                case '"':
                        in_string = true;
                        if (depth == 1 && want_key)
                                key_start = i + 1;
                        break;
                case ':':
                        if (depth == 1 && want_value) {
                                in_value = true;
                                want_value = false;
                                value_start = i + 1;
                        }
                        break;
                case '{': case '[':
                        if (depth++ == 0)
                                want_key = true;
                        break;
                case '}': case ']': case ',':
                        if (c != ',' && depth-- == 0)
                                return -EINVAL;
                        if ((c == ',' && depth == 1) || (c != ',' && depth == 0)) {
                                if (in_value) {
                                        *out = text + value_start;
                                        *out_len = i - value_start;
                                        return 0;
                                }
                                want_key = c == ',';
                        }
                        break;
                default: break;
                }
        }
        return -ENOENT;
}

/* The frame at r->start, whose payload of n bytes has begun to arrive:
 * its type read from the text itself, without parsing, then its bounds.
 * 0 once admitted, 1 while too little of it is in, -errno. */
static int admit(struct frame_reader *r, uint32_t n) {
        static const char head[] = "{\"type\":\"";
        const char *p = r->buf.data + r->start + FRAME_HEADER_BYTES;
        size_t avail = MIN(r->buf.len - r->start - FRAME_HEADER_BYTES, (size_t)n), k;
        int e;

        for (k = 0; k < sizeof(head) - 1; k++) {
                /* A payload shorter than the head is not one. */
                if (k >= avail)
                        return k >= n ? -EPROTO : 1;
                if (p[k] != head[k])
                        return -EPROTO;
        }
        for (;; k++) {
                if (k >= avail)
                        return k >= n ? -EBADMSG : 1;
                if (p[k] == '"')
                        break;
                if (k - (sizeof(head) - 1) >= FRAME_TYPE_MAX ||
                    !((p[k] >= 'a' && p[k] <= 'z') || (p[k] >= '0' && p[k] <= '9') || p[k] == '_'))
                        return -EBADMSG;
        }
        e = r->admit(r->admit_data, p + sizeof(head) - 1, k - (sizeof(head) - 1), &r->bounds);
        if (e < 0)
                return e;
        if (n > r->bounds.max_bytes)
                return -EMSGSIZE;
        r->admitted = true;
        return 0;
}

/* What the last frame taken left: once every byte was taken, the buffer
 * starts again (and a large one is given back: a peer's one large frame
 * must not keep its size in our heap for ever).  Done at the next use of
 * the reader, so that the last frame's text stays valid until then. */
static void settle(struct frame_reader *r) {
        r->last_text = NULL;
        if (r->start == 0 || r->start != r->buf.len)
                return;
        r->start = 0;
        if (r->buf.cap > FRAME_KEEP_BYTES)
                text_free(&r->buf);
        else
                text_clear(&r->buf);
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
        int e;

        settle(r);
        e = reserve(r, n);

        return e < 0 ? e : text_append(&r->buf, data, n);
}

long frame_reader_fill(struct frame_reader *r, int fd) {
        ssize_t n;
        int e;

        settle(r);
        e = reserve(r, 65536);

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

        settle(r);
        if (r->buf.len - r->start < FRAME_HEADER_BYTES)
                return 0;
        n = get_be32(r->buf.data + r->start);
        /* Refuse before buffering: a hostile peer must not make us allocate
         * more than max. */
        if (n > r->max || n == 0)
                return -EMSGSIZE;
        if (r->admit && !r->admitted) {
                int e = admit(r, n);
                if (e != 0)
                        return e < 0 ? e : 0;
        }
        if (r->buf.len - r->start - FRAME_HEADER_BYTES < n)
                return 0;
        /* A count before the parse: what the parse would cost is known
         * from one cheap pass over the text. */
        if (r->admit && frame_json_values(r->buf.data + r->start + FRAME_HEADER_BYTES, n) > r->bounds.max_values)
                return -E2BIG;
        r->admitted = false;
        r->last_payload = n;
        j = json_loadb(r->buf.data + r->start + FRAME_HEADER_BYTES, n, JSON_REJECT_DUPLICATES, &err);
        r->last_text = r->buf.data + r->start + FRAME_HEADER_BYTES;
        r->start += FRAME_HEADER_BYTES + n;
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
