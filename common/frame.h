/* The frame codec shared by the daemon and the worker.
 *
 * A frame is a 4-byte big-endian length followed by that many bytes of JSON
 * text holding one object with a string member "type".  The daemon treats the
 * worker as hostile: frame_reader_next() refuses a length over the reader's
 * maximum before buffering it, text that is not valid UTF-8 JSON (jansson
 * checks), NUL bytes inside strings, duplicate keys, and anything but an
 * object with a string "type".  What each type must contain is checked by the
 * receiver. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "text.h"

#define FRAME_HEADER_BYTES 4u
/* Largest frame either side accepts: a result carries at most a few MiB of
 * formatted value and value JSON (the worker cuts both well below this). */
#define FRAME_MAX_BYTES (16u << 20)

struct frame_reader {
        struct text buf; /* bytes read; buf.data[start, buf.len) are not taken yet */
        size_t start;    /* bytes at the front already taken as frames */
        size_t max;      /* largest payload accepted */
};

void frame_reader_init(struct frame_reader *r, size_t max_payload);
void frame_reader_free(struct frame_reader *r);

/* Append bytes (used by tests and by frame_reader_fill). 0 or -ENOMEM. */
int frame_reader_feed(struct frame_reader *r, const void *data, size_t n);

/* Read what is available from fd into the buffer (one read(2)).  Returns the
 * number of bytes read (> 0), 0 at end of file, or -errno (-EAGAIN when a
 * non-blocking fd has nothing). */
long frame_reader_fill(struct frame_reader *r, int fd);

/* Take the next complete frame out of the buffer.  Returns 1 and sets *msg
 * (owned by the caller), 0 when more bytes are needed, -EMSGSIZE for a length
 * over the maximum, -EBADMSG for a payload that is not a JSON object with a
 * string "type".  After an error the stream is unusable. */
int frame_reader_next(struct frame_reader *r, json_t **msg);

/* Encode msg as one frame into a new buffer.  0 or -ENOMEM/-EMSGSIZE/-EINVAL. */
int frame_encode(const json_t *msg, char **out, size_t *out_len);
/* Encode msg as one frame at the end of out (a send queue).  0 or
 * -ENOMEM/-EMSGSIZE/-EINVAL, out unchanged then. */
int frame_append(const json_t *msg, struct text *out);

/* Blocking helpers for the worker: send one whole frame (retrying on EINTR),
 * and receive the next frame (1 with *msg, 0 at end of file, -errno). */
int frame_send(int fd, const json_t *msg);
int frame_recv(int fd, struct frame_reader *r, json_t **msg);

/* The message's "type", or "" when absent. */
const char *frame_type(const json_t *msg);
