#include "jsonrpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macros.h"

/* ---- reading lines ------------------------------------------------------ */

void line_reader_init(struct line_reader *r, size_t max) {
        *r = (struct line_reader){.max = max};
}

void line_reader_free(struct line_reader *r) {
        free(r->buf);
        *r = (struct line_reader){.max = r->max};
}

static int reserve(char **buf, size_t *cap, size_t need) {
        size_t n;
        char *p;

        if (need <= *cap)
                return 0;
        n = *cap ? *cap : 4096;
        while (n < need)
                n *= 2;
        p = realloc(*buf, n);
        if (!p)
                return -ENOMEM;
        *buf = p;
        *cap = n;
        return 0;
}

int line_reader_feed(struct line_reader *r, const char *data, size_t len) {
        if (r->discarding) {
                /* Drop everything up to the newline that ends the long line;
                 * the newline stays, for line_reader_next() to report the
                 * long line when it reaches it. */
                const char *nl = memchr(data, '\n', len);
                if (!nl) {
                        r->discarded += len;
                        return 0;
                }
                r->discarded += (size_t)(nl - data);
                len -= (size_t)(nl - data);
                data = nl;
        }
        /* Lines handed out before this call are given up now. */
        if (r->start > 0) {
                memmove(r->buf, r->buf + r->start, r->len);
                r->start = 0;
        }
        /* One spare byte, for the NUL after an unterminated last line.  The
         * buffer doubles, but not past the limit: beyond it, it grows only
         * to what it must hold (max + one feed), never to a power of two. */
        if (r->len + len + 1 > r->cap) {
                size_t need = r->len + len + 1, n = r->cap ? r->cap * 2 : 4096;
                char *p;
                if (n > r->max + 1)
                        n = r->max + 1;
                if (n < need)
                        n = need;
                p = realloc(r->buf, n);
                if (!p)
                        return -ENOMEM;
                r->buf = p;
                r->cap = n;
        }
        memcpy(r->buf + r->len, data, len);
        r->len += len;
        return 0;
}

static void consume(struct line_reader *r, size_t n) {
        r->start += n;
        r->len -= n;
        r->scanned = 0;
}

enum line_kind line_reader_next(struct line_reader *r, bool final, const char **line, size_t *len) {
        char *base = r->buf + r->start, *nl;
        size_t n;

        if (r->discarding) {
                if (r->len > 0 && base[0] == '\n') {
                        *len = r->discarded;
                        r->discarding = false;
                        r->discarded = 0;
                        consume(r, 1);
                        return LINE_TOO_LONG;
                }
                if (final) { /* the long line ended with the input */
                        *len = r->discarded;
                        r->discarding = false;
                        r->discarded = 0;
                        r->start = r->len = r->scanned = 0;
                        return LINE_TOO_LONG;
                }
                return LINE_NONE;
        }
        nl = r->len > r->scanned ? memchr(base + r->scanned, '\n', r->len - r->scanned) : NULL;
        if (!nl) {
                r->scanned = r->len;
                if (r->len > r->max) {
                        /* Over the limit before its newline came: drop what
                         * is here and the rest of the line as it arrives. */
                        r->discarding = true;
                        r->discarded = r->len;
                        r->start = r->len = r->scanned = 0;
                        return line_reader_next(r, final, line, len);
                }
                if (final && r->len > 0) {
                        base[r->len] = '\0'; /* the spare byte feed() kept */
                        n = r->len;
                        if (n > 0 && base[n - 1] == '\r')
                                base[--n] = '\0';
                        *line = base;
                        *len = n;
                        consume(r, r->len);
                        return LINE_OK;
                }
                return LINE_NONE;
        }
        n = (size_t)(nl - base);
        if (n > r->max) {
                *len = n;
                consume(r, n + 1);
                return LINE_TOO_LONG;
        }
        /* The line is handed out in place, valid until the next feed(). */
        *nl = '\0';
        consume(r, n + 1);
        if (n > 0 && base[n - 1] == '\r')
                base[--n] = '\0';
        *line = base;
        *len = n;
        return LINE_OK;
}

/* ---- writing messages --------------------------------------------------- */

int out_queue_push(struct out_queue *q, json_t *msg) {
        size_t n;

        if (!msg)
                return -ENOMEM;
        n = json_dumpb(msg, NULL, 0, JSON_COMPACT);
        if (n == 0) {
                json_decref(msg);
                return -EINVAL;
        }
        if (q->start > 0 && q->start + q->len + n + 1 > q->cap) {
                memmove(q->buf, q->buf + q->start, q->len);
                q->start = 0;
        }
        if (reserve(&q->buf, &q->cap, q->start + q->len + n + 1) < 0) {
                json_decref(msg);
                return -ENOMEM;
        }
        json_dumpb(msg, q->buf + q->start + q->len, n, JSON_COMPACT);
        q->buf[q->start + q->len + n] = '\n';
        q->len += n + 1;
        json_decref(msg);
        return 0;
}

int out_queue_flush(struct out_queue *q, int fd) {
        while (q->len > 0) {
                ssize_t w = write(fd, q->buf + q->start, q->len);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                q->start += (size_t)w;
                q->len -= (size_t)w;
        }
        q->start = 0;
        /* A burst (an image of some MiB) should not pin its buffer forever. */
        if (q->cap > (1u << 20)) {
                free(q->buf);
                q->buf = NULL;
                q->cap = 0;
        }
        return 0;
}

void out_queue_free(struct out_queue *q) {
        free(q->buf);
        *q = (struct out_queue){0};
}

/* ---- messages ----------------------------------------------------------- */

enum rpc_kind rpc_classify(json_t *msg, struct rpc_message *out, int *code, const char **why) {
        json_t *v, *id, *method, *params;

        *out = (struct rpc_message){.kind = RPC_BAD};
        *code = RPC_INVALID_REQUEST;
        if (!json_is_object(msg)) {
                *why = "a message must be a JSON object";
                return RPC_BAD;
        }
        id = json_object_get(msg, "id");
        /* MCP: "Requests MUST include a string or integer ID ... MUST NOT be
         * null"; an id of another type cannot be echoed safely, so the error
         * goes out with a null id, as JSON-RPC says for an unreadable id. */
        if (id && (json_is_string(id) || json_is_integer(id)))
                out->id = id;
        v = json_object_get(msg, "jsonrpc");
        if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0) {
                *why = "\"jsonrpc\" must be \"2.0\"";
                return RPC_BAD;
        }
        method = json_object_get(msg, "method");
        if (!method) {
                if (id && (json_object_get(msg, "result") || json_object_get(msg, "error"))) {
                        out->kind = RPC_RESPONSE;
                        return RPC_RESPONSE;
                }
                *why = "a request needs a \"method\"";
                return RPC_BAD;
        }
        if (!json_is_string(method)) {
                *why = "\"method\" must be a string";
                return RPC_BAD;
        }
        if (id && !out->id) {
                *why = "\"id\" must be a string or an integer";
                return RPC_BAD;
        }
        params = json_object_get(msg, "params");
        if (params && !json_is_object(params)) {
                /* JSON-RPC allows positional params (an array); every MCP
                 * method takes an object, so that is the method's invalid
                 * params.  A scalar is no params at all: invalid request. */
                *code = json_is_array(params) ? RPC_INVALID_PARAMS : RPC_INVALID_REQUEST;
                *why = "\"params\" must be an object";
                return RPC_BAD;
        }
        out->method = json_string_value(method);
        out->params = params;
        out->kind = id ? RPC_REQUEST : RPC_NOTIFICATION;
        return out->kind;
}

json_t *rpc_result(json_t *id, json_t *result) {
        if (!result)
                return NULL;
        return json_pack("{s:s, s:O?, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
}

json_t *rpc_error(json_t *id, int code, const char *message, json_t *data) {
        json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);

        if (!err) {
                json_decref(data);
                return NULL;
        }
        if (data)
                json_object_set_new(err, "data", data);
        return json_pack("{s:s, s:O?, s:o}", "jsonrpc", "2.0", "id", id, "error", err);
}

json_t *rpc_notification(const char *method, json_t *params) {
        if (!params)
                return NULL;
        return json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params);
}
