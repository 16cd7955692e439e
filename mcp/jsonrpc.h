/* JSON-RPC 2.0 over newline-delimited stdio, as MCP's stdio transport uses
 * it: a bounded line reader for stdin, a non-blocking output queue for
 * stdout, and the check of one message's envelope.
 *
 * Everything here is about bytes and shapes; what the methods mean is
 * mcp/server.c's business.  The peer is untrusted in the sense that matters
 * here: a line of any length or content must cost bounded memory and end in
 * an error reply, never in a crash or a stall. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* JSON-RPC 2.0's error codes (jsonrpc.org/specification, section 5.1). */
enum {
        RPC_PARSE_ERROR = -32700,
        RPC_INVALID_REQUEST = -32600,
        RPC_METHOD_NOT_FOUND = -32601,
        RPC_INVALID_PARAMS = -32602,
        RPC_INTERNAL_ERROR = -32603,
};

/* ---- reading lines ------------------------------------------------------ */

struct line_reader {
        char *buf;
        size_t start, len, cap; /* unread bytes are buf[start..start+len) */
        size_t max;             /* longest line kept, newline excluded */
        size_t scanned;         /* buf[0..scanned) holds no newline */
        bool discarding;        /* the current line went over max: dropped up to its newline */
        size_t discarded;       /* bytes of it dropped so far */
};

/* What line_reader_next() found. */
enum line_kind { LINE_NONE, LINE_OK, LINE_TOO_LONG };

/* A reader that keeps lines of at most max bytes. */
void line_reader_init(struct line_reader *r, size_t max);
void line_reader_free(struct line_reader *r);

/* Append up to len bytes read from the peer.  Bytes of a line that is
 * already over the limit are counted and dropped, so memory stays under
 * max + len.  Returns 0 or -ENOMEM. */
int line_reader_feed(struct line_reader *r, const char *data, size_t len);

/* The next complete line, without its newline (and without a CR before
 * it): LINE_OK with *line and *len pointing into the reader's buffer (valid
 * until the next line_reader_feed()), LINE_TOO_LONG for a line that went over the limit
 * (its size in *len), LINE_NONE when no complete line is buffered.  At
 * end of input, final makes an unterminated last line count as complete. */
enum line_kind line_reader_next(struct line_reader *r, bool final, const char **line, size_t *len);

/* ---- writing messages --------------------------------------------------- */

struct out_queue {
        char *buf;
        size_t start, len, cap; /* pending bytes are buf[start..start+len) */
};

/* Queue msg as one line (compact JSON + "\n").  Steals the reference.
 * Returns 0, -ENOMEM, or -EINVAL if msg cannot be encoded. */
int out_queue_push(struct out_queue *q, json_t *msg);

/* Write what the descriptor takes now (it is non-blocking).  Returns 0
 * (maybe with bytes left: wait for POLLOUT), or -errno (EPIPE: the peer
 * is gone). */
int out_queue_flush(struct out_queue *q, int fd);

static inline size_t out_queue_pending(const struct out_queue *q) {
        return q->len;
}
void out_queue_free(struct out_queue *q);

/* ---- messages ----------------------------------------------------------- */

enum rpc_kind { RPC_REQUEST, RPC_NOTIFICATION, RPC_RESPONSE, RPC_BAD };

/* One message whose envelope passed rpc_classify().  Borrowed references
 * into the message. */
struct rpc_message {
        enum rpc_kind kind;
        json_t *id;         /* requests and responses: a string or an integer */
        const char *method; /* requests and notifications */
        json_t *params;     /* an object, or NULL when absent */
};

/* Check msg's envelope: "jsonrpc": "2.0"; a string method; an id that is a
 * string or an integer (MCP: never null); params absent or an object.
 * Returns the kind; for RPC_BAD, *code/why say what to answer, and out->id
 * is the id to answer with when one could be read (else NULL: answer with
 * a null id). */
enum rpc_kind rpc_classify(json_t *msg, struct rpc_message *out, int *code, const char **why);

/* A response {"jsonrpc","id","result"}.  Steals result; id is borrowed
 * (NULL: null).  NULL when out of memory. */
json_t *rpc_result(json_t *id, json_t *result);

/* An error response; data (stolen, may be NULL) is the error's "data". */
json_t *rpc_error(json_t *id, int code, const char *message, json_t *data);

/* A notification {"jsonrpc","method","params"}.  Steals params. */
json_t *rpc_notification(const char *method, json_t *params);
