/* Sessions: the table of live R sessions and each one's state machine.
 *
 * A session owns at most one worker (a sandboxed embedded-R process) and
 * moves through these states; only the event loop moves it:
 *
 *   STARTING --worker ready--> IDLE --input flushed--> RUNNING --result--> IDLE
 *      ^                         |                        |
 *      |                         +-- ctl restart, crash --+--> STARTING (new worker,
 *      |                                                         state lost)
 *      +-- worker failed to start --> DEAD (until ctl restart)
 *
 * A run may be queued while STARTING (after a restart or crash); it is sent
 * as soon as the worker is ready.  At the run's deadline the worker gets
 * SIGINT (R unwinds, the global environment stays); a worker that does not
 * answer within the grace period gets SIGKILL and is replaced.
 *
 * What readers see, by state: output, error, result.json and value.json show
 * the last finished run (empty before the first); while a run is under way
 * or queued, reads of them wait (the fs layer parks them) and are answered
 * when the run ends.  console shows the run under way as it grows, else the
 * last run's.  status is the state's word.
 *
 * The fs layer (above) gets told through struct session_events; this layer
 * never calls libfuse.
 *
 * Creation is asynchronous and bounded: the workspace is made (by the keeper)
 * while the first worker starts, and the created event comes within
 * SESSION_CREATE_TIMEOUT_MS (session.c) whatever a helper does — the fs layer
 * holds a mkdir, and so the sessions/ directory's lock, until then.  A worker
 * whose start failed because a helper died is replaced (twice at most); one
 * that a stalled helper failed leaves the session DEAD (or fails the mkdir
 * with EAGAIN), and ctl restart tries again.
 *
 * Each session has a workspace from creation to close (sessions/workspace.h):
 * a worker, pooled or fresh, is handed it with a `workspace` frame and
 * counts as ready only once it answers `attached`; a worker that dies
 * before that failed to start.  result.json lists the regular files a run
 * created or changed (a scan before the run is compared with one after). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "options.h"
#include "text.h"

struct loop;
struct loop_timer;
struct sessions;
struct worker;
struct run;
struct tools;
struct tool_scope;
struct workspace;
struct host_id;

enum session_state { SESSION_STARTING, SESSION_IDLE, SESSION_RUNNING, SESSION_DEAD };
enum run_status { RUN_OK, RUN_ERROR, RUN_TIMEOUT, RUN_KILLED, RUN_CRASHED };



/* A finished run, immutable once published; shared by readers' snapshots. */
struct result {
        unsigned refs;
        uint64_t seq;
        enum run_status status;
        /* The files read with cat: control characters shown escaped
         * (common/escape.h); result_json has the exact text. */
        struct text output;      /* formatted value + "\n"; empty after an error */
        struct text error;       /* message + "\n"; empty on success */
        struct text console;
        struct text result_json; /* the result.json file */
        struct text value_json;  /* the value.json file */
};
struct result *result_ref(struct result *r);
void result_unref(struct result *r);

struct session {
        uint64_t id;   /* never reused; the fs layer derives inode numbers from it */
        char name[65];
        enum session_state state;
        struct sessions *owner;
        struct worker *worker;
        double timeout_s;
        struct limits limits;
        uint64_t next_seq;
        struct run *run;       /* under way or queued; NULL when none */
        struct result *last;   /* last finished run; NULL before the first */
        struct text log;       /* this session's audit events, JSON lines */
        char *dead_reason;     /* why the worker could not start, when DEAD */
        bool creating;         /* waiting for its first worker */
        struct loop_timer *create_deadline; /* the creating mkdir's answer is due */
        unsigned start_retries; /* workers replaced in a row after a helper failed */
        bool closing;
        void *input_writer;    /* the fs handle open for writing input, if any */
        void *fs_data;         /* owned by the fs layer */
        struct tool_scope *tools; /* owned by sessions/tools.c; NULL until used */
        struct workspace *workspace; /* its files (sessions/workspace.h); kept across workers */
        /* Its host uid/gid, from the daemon's id range (root, strict mode):
         * its workers' 1000 outside and the owner of its workspace; held
         * until it is closed and its last worker reaped.  NULL: the
         * daemon's own ids (unprivileged, none mode). */
        struct host_id *host_id;
        struct session *prev, *next;
};

struct session_events {
        void *data; /* for the callbacks: session_events_data() */
        /* The first worker of a session is ready (err 0) or could not start
         * (err < 0, why says what failed; the session is closed right after). */
        void (*created)(struct session *s, int err, const char *why);
        /* A run ended: a new result is published (s->last). */
        void (*run_ended)(struct session *s);
        /* The run's console grew. */
        void (*console_grew)(struct session *s);
        /* The session is about to be freed. */
        void (*closing)(struct session *s);
};

/* Create the table; starts the zygote and the pool.  0 or -errno. */
int sessions_new(struct loop *l, const struct options *o, const struct session_events *ev,
                 struct sessions **out);
/* End every worker and the zygote, free everything (no events are sent). */
void sessions_free(struct sessions *t);

/* Open the audit log given by the options: 0 or -errno (-ELOOP: a symlink). */
int sessions_open_audit(struct sessions *t, const char *path);

/* Create a session.  name NULL picks the next free number.  Returns 0 with
 * *out in STARTING (its created event follows) or IDLE (a pooled worker was
 * ready: no created event), -EEXIST, -EINVAL (bad name), -ENOSPC (too
 * many sessions). */
int sessions_create(struct sessions *t, const char *name, struct session **out);
/* Close a session, also while it runs: its worker is killed.  The closing
 * event is sent, then s is freed. */
void session_close(struct session *s);

struct session *sessions_find(struct sessions *t, const char *name);
struct session *sessions_find_id(struct sessions *t, uint64_t id);
/* Sessions in creation order, for readdir: the first with id > after. */
struct session *sessions_next(struct sessions *t, uint64_t after);

/* Is a run under way or queued? */
bool session_busy(const struct session *s);
/* Start a run of code (taken over; freed here).  -EBUSY when one is under
 * way.  Code that is not UTF-8, or a dead session, ends the run at once with
 * an error (run_ended is sent before this returns). */
int session_start_run(struct session *s, char *code, size_t len);
/* ctl commands. */
void session_interrupt(struct session *s);
void session_restart(struct session *s);
int session_set_timeout(struct session *s, double seconds);
int session_set_limits(struct session *s, const struct limits *l);

const char *session_state_word(const struct session *s);
/* Console of the run under way, else of the last run (never NULL). */
const struct text *session_console(const struct session *s);

json_t *sessions_stats(struct sessions *t);
const struct options *sessions_options(const struct sessions *t);
void *session_events_data(const struct session *s);
/* The tool registry (sessions/tools.h), for the fs layer. */
struct tools *sessions_tools(struct sessions *t);

/* For sessions/tools.c.  Send a frame to the session's worker: 0, or
 * -EPIPE when it has none (or it is gone); a failure to send kills it. */
int session_worker_send(struct session *s, json_t *msg);
/* True when the worker is ready and no run is under way or queued to it:
 * definitions may be sent now. */
bool session_accepts_definitions(const struct session *s);
/* Add an audit event (stolen) to the audit log and the session's log. */
void session_audit(struct session *s, json_t *ev);

/* Valid session name: 1-64 of [A-Za-z0-9._-], not starting with '.'. */
bool session_name_valid(const char *name);
