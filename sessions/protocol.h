/* The daemon <-> worker protocol (docs/protocol.md, "Worker channel") as one
 * table: every message in each direction with its fields, their types and
 * bounds, the phases of the worker in which it may come, and the reason why
 * accepting it is safe.
 *
 * Every frame from a worker passes protocol_check_worker_frame() before
 * anything acts on it: the worker is untrusted once it has run user code,
 * and a frame it was not allowed to send means it is broken or hostile (the
 * caller kills it).  The daemon's own frames are made by the protocol_*()
 * builders below, from the same table's names; protocol_check_daemon_frame()
 * checks one against the table (for unit tests: the worker checks what it
 * receives itself).
 *
 * One policy for unknown fields, in both directions: a frame with a field
 * its message does not name is refused.  What a frame has is then exactly
 * what the table says, so nothing can be smuggled past a check that looks
 * at fewer fields than the handler uses.
 *
 * Pure: no I/O, no global state; the builders allocate their json_t. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "frame.h"
#include "options.h"

/* The worker as the daemon sees it: what it may send now. */
enum worker_phase {
        PHASE_STARTING,  /* cloned (or being cloned); its "ready" has not come */
        PHASE_WAITING,   /* said "ready": pooled, or its session's workspace is on its way */
        PHASE_ATTACHING, /* the workspace frame was sent; "attached" is awaited */
        PHASE_IDLE,      /* its session's; no run sent */
        PHASE_RUNNING,   /* an exec was sent; its "result" is awaited */
        PHASE_SNAPSHOT,  /* a snapshot was sent; its "snapshot_done" is awaited */
        PHASE_RESTORE,   /* a restore was sent; its "restored" is awaited */
        PHASE_COUNT
};

/* What the daemon knows of the worker when a frame of it is read. */
struct protocol_context {
        enum worker_phase phase;
        uint64_t seq;             /* PHASE_RUNNING: the run's */
        json_int_t last_call_id;  /* PHASE_RUNNING: the run's highest tool_call id so far (0: none) */
};

/* Worker -> daemon. */
enum worker_message {
        MSG_READY,
        MSG_ATTACHED,
        MSG_FATAL,
        MSG_CONSOLE,
        MSG_TOOL_CALL,
        MSG_RESULT,
        MSG_SNAPSHOT_DONE,
        MSG_RESTORED,
        MSG_WORKER_COUNT
};

/* A result's status, as the worker says it. */
enum worker_status { WORKER_OK, WORKER_ERROR, WORKER_INTERRUPTED };

/* What kind of error the worker says ended a run (result.error_kind). */
enum worker_error_kind {
        WORKER_KIND_NONE,        /* status ok */
        WORKER_KIND_SYNTAX,      /* the code did not parse: nothing ran */
        WORKER_KIND_RUNTIME,     /* an R error */
        WORKER_KIND_TOOL,        /* an error of a tool call, raised in R */
        WORKER_KIND_INTERRUPTED, /* status interrupted */
};

/* A frame that passed: the fields the message has, pointing into the
 * json_t it came from (valid while that is). */
struct worker_frame {
        enum worker_message type;
        union {
                struct {
                        const char *r_version;
                        long long reserved_bytes; /* 0 when absent */
                } ready;
                struct {
                        const char *error;
                        size_t len;
                } fatal;
                struct {
                        const char *text;
                        size_t len;
                } console;
                struct {
                        json_int_t id;
                        const char *tool;
                        json_t *args; /* an object */
                        /* args as the frame wrote it (NULL: not known);
                         * set by the reader of the frame, not here */
                        const char *args_text;
                        size_t args_len;
                } tool_call;
                struct {
                        enum worker_status status;
                        enum worker_error_kind kind;
                        const char *output;
                        size_t output_len;
                        json_t *value;
                        const char *value_note; /* NULL: none */
                        const char *error;      /* may be "" */
                        json_t *warnings;       /* an array of strings */
                        int limit;              /* enum limit_kind (common/options.h); -1: none */
                } result;
                struct {
                        json_t *notes;     /* an array of strings */
                        json_t *packages;  /* snapshot_done: an array of strings; restored: NULL */
                        const char *error; /* NULL: it worked */
                } state;
        } u;
};

/* Bounds the table names (docs/protocol.md). */
#define PROTOCOL_CONSOLE_TEXT_MAX (64u << 10)
#define PROTOCOL_TOOL_NAME_MAX 256u
/* The most address space a worker may say its build reserves (the whole
 * x86-64 user half; a sanitizer's shadow is about 20 TiB). */
#define PROTOCOL_RESERVED_MAX (1LL << 47)

/* The most JSON values of a result frame: its value's JSON is at most
 * 4 MiB (sandbox/worker/value_json.c), one value per two bytes at most,
 * and up to 1000 warnings. */
#define PROTOCOL_RESULT_VALUES_MAX ((2u << 20) + 2048u)

/* Before a frame from a worker is buffered whole or parsed (common/frame.h,
 * frame_reader_admit): its type (type_len bytes, from the frame's first
 * member) is a worker's message allowed in phase, and *b its bounds from
 * the table (bytes, JSON values).  0, or -EBADMSG with *why. */
int protocol_admit_worker_frame(const char *type, size_t type_len, enum worker_phase phase, struct frame_bounds *b,
                                const char **why);

/* Check frame m (an object with a string "type": common/frame.h) from a
 * worker in the state ctx says: its type is a worker's message allowed in
 * ctx->phase; it has every required field of that message and no other;
 * each field has its type and is within its bounds; a seq is the run's and
 * a tool_call id is above ctx->last_call_id; a result's status and
 * error_kind agree.  0 with *out, or -EBADMSG with *why (a static string
 * naming what was wrong); *out is written only on success. */
int protocol_check_worker_frame(const json_t *m, const struct protocol_context *ctx, struct worker_frame *out,
                                const char **why);

/* Check a frame the daemon made against the table's daemon -> worker
 * messages (shape, types, bounds; phase when phase < PHASE_COUNT).  0 or
 * -EBADMSG with *why. */
int protocol_check_daemon_frame(const json_t *m, enum worker_phase phase, const char **why);

/* Daemon -> worker: the frames, NULL when out of memory.  Values passed
 * in are copied (json_t ones referenced), never stolen. */
json_t *protocol_workspace(void);
json_t *protocol_warm(void);
json_t *protocol_exec(uint64_t seq, const char *code, size_t len, const struct limits *l);
json_t *protocol_interrupt(uint64_t seq);
json_t *protocol_define_tool(const char *name, json_t *args, const char *description);
json_t *protocol_remove_tool(const char *name);
/* snapshot, restore: sent with the descriptor the state goes to or comes
 * from (worker_send_fd). */
json_t *protocol_snapshot(void);
json_t *protocol_restore(bool check);
/* error NULL: the value (NULL: null); else the error message (cleaned to
 * valid UTF-8 here: tool messages come from host programs). */
json_t *protocol_tool_result(json_int_t id, json_t *value, const char *error);
