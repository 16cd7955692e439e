/* Results: what a finished run publishes (output, error, console,
 * result.json, value.json), made once and immutable, shared by the readers'
 * snapshots (result_ref/result_unref/result_text in session.h).
 *
 * Process context: the daemon's event loop. */
#pragma once

#include <jansson.h>

struct session;
struct result;

/* result.json's status. */
enum run_status { RUN_OK, RUN_ERROR, RUN_TIMEOUT, RUN_KILLED, RUN_CRASHED };

/* result.json's error_kind: why a run did not end ok (README, docs/protocol.md).
 * The worker says which of syntax, runtime and tool an R error was; the
 * daemon knows the rest. */
enum error_kind {
        ERROR_NONE,        /* status ok */
        ERROR_SYNTAX,      /* the code did not parse (or was not UTF-8): nothing ran */
        ERROR_RUNTIME,     /* an R error */
        ERROR_TOOL,        /* an error of a tool call, raised in R: refused, failed, or bad arguments */
        ERROR_INTERRUPTED, /* ctl interrupt */
        ERROR_TIMEOUT,     /* the run's deadline */
        ERROR_LIMIT,       /* a limit ended it (result.json's limit says which) */
        ERROR_KILLED,      /* the worker was killed (ctl restart, a protocol breach, ...): state lost */
        ERROR_CRASHED,     /* the worker died on its own: state lost */
        ERROR_DEAD,        /* no worker could be started for the session */
        ERROR_KIND_COUNT
};

/* How the run under way ended: what result_build() is given. */
struct run_end {
        enum run_status status;
        enum error_kind kind;
        const char *output;     /* status ok: the formatted value */
        json_t *value;          /* status ok: the value's JSON (NULL: null) */
        const char *value_note; /* or NULL */
        const char *error;      /* status not ok: the message */
        json_t *warnings;       /* or NULL: none */
        const char *limit;      /* the limit that ended it, or NULL */
};

/* Build the published result of s's run under way from how it ended (the
 * run's console moves into it; result.json waits for its files, which
 * result_publish() adds).  NULL when out of memory. */
struct result *result_build(struct session *s, const struct run_end *end);
/* Make res (taken over) s's last result and end the run: result.json's
 * files from a scan of the workspace after the run (at once for a small
 * workspace; for a big one on the scanner thread, and then all that
 * follows comes when the scan is back, the run marked ending meanwhile:
 * run_end() does nothing, the worker is idle), counted in stats, logged
 * (run_end), the session idle again, tools told, parked readers answered
 * (the run_ended event). */
void result_publish(struct session *s, struct result *res);
