/* A run: one piece of code from input's flush to its published result —
 * queued while the session starts, sent to the worker, its deadline (the
 * timeout, then the grace period), interrupts, the daemon's own limits
 * (max_tool_calls, and the monitor's session-wide cpu and memory:
 * sessions/monitor.h), the console it streams, its tool calls, and how it
 * ends (sessions/result.h).
 *
 * Process context: the daemon's event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "result.h"
#include "text.h"

struct session;
struct worker;
struct worker_frame;

enum interrupt_reason { INTERRUPT_NONE, INTERRUPT_TIMEOUT, INTERRUPT_CTL, INTERRUPT_LIMIT };

struct run {
        uint64_t seq;
        char *code;                  /* until sent */
        size_t code_len;
        bool sent;
        uint64_t start_ns;
        enum interrupt_reason interrupt;
        double cpu_base_s;           /* the worker's CPU time when it was sent */
        size_t console_received;
        bool console_truncated;
        struct text console;         /* exactly what the run printed (result.json) */
        /* What the console file shows once the run printed a control
         * character (common/escape.h): console's bytes with those escaped,
         * grown frame by frame (a frame holds whole UTF-8 characters).
         * Until then the file shows console itself. */
        struct text console_shown;
        bool console_escaped;
        struct loop_timer *deadline; /* the timeout, then the grace period */
        bool in_grace;
        unsigned tool_calls;         /* tool_call frames answered or refused in this run */
        json_int_t last_call_id;     /* the highest tool_call id so far: ids only grow */
        struct workspace_snapshot *before; /* the workspace when the run was sent */
        /* The workspace scan under way for this run (sessions/workspace.h):
         * the before-scan (the run is sent when it ends) or the after-scan
         * (ending is set: the result waits for it).  NULL: none. */
        struct workspace_scan *scan;
        struct result *ending;       /* built, published once its after-scan ends */
        /* Set when the daemon stopped the run on a limit of its own
         * (INTERRUPT_LIMIT): "tool_calls", "cpu" or "memory", and why. */
        const char *stop_limit;
        char stop_reason[256];
        unsigned calls_dropped;      /* tool_call frames after the stop: not answered */
        struct loop_timer *monitor;  /* session-wide CPU and memory (sessions/monitor.h) */
        bool monitored;              /* the monitor has looked once */
        uint64_t next_pss_ns;        /* the exact memory count, not before */
        double reaped_base_s;        /* the worker's cutime+cstime at that first look */
};

/* Send s's queued run to its worker, which is attached and idle: the CPU
 * limit re-armed, the workspace snapshot taken, the deadline and the
 * monitor armed; the session is RUNNING.  A failure to send kills the
 * worker (the run then ends killed). */
void run_send(struct session *s);
/* Free a run (accepts NULL); a scan of it under way is cancelled. */
void run_free(struct run *r);

/* End s's run under way with a result the daemon made (not the worker's):
 * status, kind, the message and the limit that ended it (or NULL). */
void run_end(struct session *s, enum run_status status, enum error_kind kind, const char *error, const char *limit);
/* The worker w of s died or was killed during the run s sent it: the run
 * ends killed (a deadline's, a limit's or a ctl interrupt's kill, or any
 * other reason the daemon killed it for) or crashed, with a message saying
 * which and that the state was lost; logged as crash or killed. */
void run_worker_died(struct session *s, const struct worker *w);

/* Stop s's run under way on a limit of the daemon's own (max_tool_calls,
 * the session's CPU or memory as a whole) the way a timeout stops it; the
 * result is an error naming limit, with reason, whatever the worker
 * answers.  Nothing when the run is being stopped already. */
void run_stop_on_limit(struct session *s, const char *limit, const char *reason);

/* Frames of the run under way, checked by sessions/protocol.h.  Console
 * text: 0, or -EMSGSIZE when the run sent over 64 MiB of it (a flood: the
 * caller kills the worker). */
int run_on_console(struct session *s, const char *text, size_t n);
void run_on_tool_call(struct session *s, const struct worker_frame *f);
void run_on_result(struct session *s, const struct worker_frame *f);
