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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "text.h"

#define FRAME_HEADER_BYTES 4u
/* Largest frame either side accepts: a result carries at most a few MiB of
 * formatted value and value JSON (the worker cuts both well below this). */
#define FRAME_MAX_BYTES (16u << 20)

/* The tool_call frame's bounds, which both sides apply: the worker refuses
 * a call over them with an R error, the daemon kills a worker that sends
 * one.  Parsing costs the daemon's loop about 150 ns a JSON value (jansson
 * builds a node for each), so the count of values bounds the loop time of
 * a frame; the bytes bound what is buffered. */
#define FRAME_TOOL_CALL_BYTES_MAX ((1u << 20) + 4096u)
#define FRAME_TOOL_CALL_VALUES_MAX 32768u

/* The bounds a frame of a given type must keep, looked up from its type
 * before the frame is buffered whole or parsed (frame_reader_admit). */
struct frame_bounds {
        size_t max_bytes;  /* payload */
        size_t max_values; /* JSON values, as frame_json_values() counts them */
};

/* Called by frame_reader_next() once a frame's length and the start of its
 * payload are in: type (type_len bytes, not NUL-terminated) is the frame's
 * "type", which must be its first member.  0 with *b, or -errno (-EBADMSG:
 * a type not accepted now), which frame_reader_next() returns. */
typedef int (*frame_admit_fn)(void *data, const char *type, size_t type_len, struct frame_bounds *b);

struct frame_reader {
        struct text buf; /* bytes read; buf.data[start, buf.len) are not taken yet */
        size_t start;    /* bytes at the front already taken as frames */
        size_t max;      /* largest payload accepted */
        frame_admit_fn admit; /* NULL: any type, max bytes, any number of values */
        void *admit_data;
        struct frame_bounds bounds; /* the frame at start's, once admitted */
        bool admitted;
        size_t last_payload; /* the payload bytes of the last frame taken */
        /* Its text (last_payload bytes), valid until the reader's next use. */
        const char *last_text;
};

void frame_reader_init(struct frame_reader *r, size_t max_payload);
/* From now on every frame must begin with {"type":"WORD" (WORD: at most
 * FRAME_TYPE_MAX letters, digits or '_'; the compact encoding with "type"
 * first, as frame_append() writes a frame built with "type" first) and is
 * admitted by fn before it is buffered whole: its length against
 * b->max_bytes, then its values against b->max_values before it is parsed.
 * A peer that is not trusted then costs at most that per frame. */
void frame_reader_admit(struct frame_reader *r, frame_admit_fn fn, void *data);
#define FRAME_TYPE_MAX 32u

/* An upper bound of the number of JSON values in text (n bytes): one plus
 * the commas and opening brackets outside strings.  One pass, no
 * allocation: it is what the reader pays before a parse. */
size_t frame_json_values(const char *text, size_t n);
void frame_reader_free(struct frame_reader *r);

/* Append bytes (used by tests and by frame_reader_fill). 0 or -ENOMEM. */
int frame_reader_feed(struct frame_reader *r, const void *data, size_t n);

/* The text of member key of the JSON object text (n bytes, valid JSON, no
 * duplicate keys: a frame the reader took), in the compact form: *out
 * points into text.  The key must be written without escapes.  -ENOENT
 * when there is no such member, -EINVAL when its value has whitespace
 * outside strings, or before or after it (it is not compact: the caller
 * dumps the member instead); whitespace elsewhere in text is skipped.
 * Until 2026-12-03 any whitespace gave -EINVAL, so that a frame whose id
 * was padded with spaces cost its parse and a dump of its arguments. */
int frame_member_text(const char *text, size_t n, const char *key, const char **out, size_t *out_len);

/* Read what is available from fd into the buffer (one read(2)).  Returns the
 * number of bytes read (> 0), 0 at end of file, or -errno (-EAGAIN when a
 * non-blocking fd has nothing). */
long frame_reader_fill(struct frame_reader *r, int fd);

/* Take the next complete frame out of the buffer.  Returns 1 and sets *msg
 * (owned by the caller), 0 when more bytes are needed, -EMSGSIZE for a length
 * over the maximum (or its type's, once admitted), -E2BIG for more values
 * than its type's, -EBADMSG for a payload that is not a JSON object with a
 * string "type" (or, with an admit function, its error), -EPROTO (with an
 * admit function) for one that does not begin with {"type":"WORD".  After an error the stream is unusable. */
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
