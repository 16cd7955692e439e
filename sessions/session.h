/* Sessions: the table of live R sessions and each one's state machine —
 * the interface the fs layer (above) uses.  The state itself is private to
 * sessions/ (session_private.h).
 *
 * A session owns at most one worker (a sandboxed embedded-R process,
 * sessions/worker.h) and moves through four states, the words of its
 * status file.  Only the event loop moves it: a FUSE request through this
 * header, a frame of its worker, a child's exit, a timer, a helper's answer.
 *
 *   sessions_create --> STARTING --worker attached--> IDLE --input flushed--> RUNNING
 *                          ^  |                        |  ^                       |
 *                          |  +--start failed--> DEAD  |  +--------result---------+
 *                          |                      |    |                          |
 *                          +--- ctl restart (any state); the idle worker died; ---+
 *                               the run's worker killed or crashed (state lost)
 *
 *   STARTING  a worker is being made ready for it: a pooled one, or a fresh
 *             clone from the zygote, which must say "ready", get the
 *             session's workspace and answer "attached" (each with a
 *             deadline).  A new session's created event comes when that
 *             happens, or with the reason it failed (then the session is
 *             closed: the mkdir or clone open fails), within
 *             SESSION_CREATE_TIMEOUT_MS whatever a helper does: the fs layer
 *             holds the mkdir, and so the sessions/ directory's lock, until
 *             then.  A worker whose start failed because a helper died or
 *             stalled is replaced (twice at most).  A run written now is
 *             queued and sent once the worker is attached.
 *   IDLE      its worker is attached and waits for code; tool definitions
 *             reach it now (sessions/tools.h).
 *   RUNNING   a run was sent; it ends with the worker's result, or at its
 *             deadline (SIGINT: R unwinds, the global environment stays),
 *             or on a limit, or when the worker does not stop within the
 *             grace period (SIGKILL) or dies: then a fresh worker replaces
 *             it (STARTING) and the state is lost.
 *   DEAD      no worker could be started (the jail cannot be built, a
 *             helper missed its deadline); a run written now ends at once
 *             with an error; ctl restart tries again.
 *
 * What readers see, in every state: output, error, result.json and
 * value.json show the last finished run (empty before the first); while a
 * run is under way or queued, reads of them wait (the fs layer parks them)
 * and are answered when the run ends (the run_ended event).  console shows
 * the run under way as it grows (once it is sent), else the last run's.
 * status is the state's word; log, timeout and limits are the session's.
 *
 * Each session has a workspace from creation to close (sessions/workspace.h),
 * kept across its workers; result.json lists the regular files a run
 * created or changed (a scan before the run — the last run's after-scan
 * while no files/ operation changed the workspace — is compared with one
 * after; a big workspace is scanned off the loop, the session alone
 * waiting: docs/sandbox.md, "What a run changed").
 *
 * This layer never calls libfuse: the fs layer is told through struct
 * session_events. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "options.h"
#include "text.h"

struct loop;
struct result;
struct session;
struct sessions;
struct tool_scope;
struct tools;
struct workspace;

/* The answer to a snapshot, a restore or a checkpoint, called once on the
 * loop (never from inside the call that asked): err 0, or err < 0 with
 * why. */
typedef void (*session_state_fn)(void *data, int err, const char *why);

enum session_state { SESSION_STARTING, SESSION_IDLE, SESSION_RUNNING, SESSION_DEAD };

/* A new session's mkdir (or open of clone) is answered within this, come
 * what may. */
#define SESSION_CREATE_TIMEOUT_MS 10000

struct session_events {
        void *data; /* for the callbacks: session_events_data() */
        /* A new session's first worker is attached (err 0), or the session
         * could not start (err < 0: -EAGAIN when a helper failed it, worth
         * another try; -EPERM, -ENOMEM; why says what failed): it is
         * closed right after the event. */
        void (*created)(struct session *s, int err, const char *why);
        /* A run ended: a new result is published (session_last_result). */
        void (*run_ended)(struct session *s);
        /* The session is about to be freed. */
        void (*closing)(struct session *s);
};

/* Create the table; starts the zygote, the keeper and the pool (all
 * asynchronously).  0 or -errno. */
int sessions_new(struct loop *l, const struct options *o, const struct session_events *ev,
                 struct sessions **out);
/* Close every session (the closing events go out; no other event), end
 * every worker, tool process and the zygote, reap them, free everything. */
void sessions_free(struct sessions *t);

/* Open the audit log given by the options: 0 or -errno (-ELOOP: a symlink). */
int sessions_open_audit(struct sessions *t, const char *path);

/* Create a session.  name NULL picks the next free number.  Returns 0 with
 * *out in STARTING: its created event follows, within
 * SESSION_CREATE_TIMEOUT_MS, also when a pooled worker was ready (that one
 * must still attach the session's workspace).  -EEXIST, -EINVAL (bad name),
 * -ENOSPC (too many sessions, or no free host id), -ENOMEM, -EPERM (no
 * workspace could be made). */
int sessions_create(struct sessions *t, const char *name, struct session **out);
/* -o state_dir (sessions/persist.h): open DIR (created 0700; refused if a
 * symbolic link or another user's) and list its saved sessions, which
 * appear at once (status "saved") and start, restored, on first use
 * (session_wake).  0 or -errno with err. */
int sessions_open_state(struct sessions *t, const char *dir, char *err, size_t n);
/* A saved session that has not started: start it now (its worker, its
 * workspace, then its saved state restored before any run).  Nothing for
 * any other session.  fs/ calls this when a name inside the session's
 * directory is looked up (a stat of sessions/NAME starts nothing). */
void session_wake(struct session *s);
bool session_dormant(const struct session *s);
/* ctl checkpoint: write s's state to state_dir now; fn says when it is on
 * disk.  0, -ENOTSUP (no state_dir), -EIO (dead), -ENOMEM. */
int session_checkpoint(struct session *s, session_state_fn fn, void *data);
/* rmdir: its saved state goes too (then session_close). */
void session_forget_saved(struct session *s);
/* A clean stop: write every started session's state to state_dir, then
 * call fn (at once when there is nothing to write: returns 0).  Returns
 * the number of checkpoints started. */
unsigned sessions_checkpoint_all(struct sessions *t, void (*fn)(void *data), void *data);

/* sessions/N/fork: a new session (the next free name) that becomes a copy
 * of src (sessions/snapshot.h) — its timeout, limits and session tools now,
 * its R global environment, attached packages and workspace files once its
 * worker is ready and src is idle (after the run under way).  Its created
 * event says when, as for sessions_create (the open that asked waits for
 * it, like clone's).  0 with *out, or as sessions_create(). */
int sessions_fork(struct sessions *t, struct session *src, struct session **out);
/* Is a transfer of s's state under way (a fork, a snapshot or a restore of
 * it, a restore until its settings are taken)? */
bool session_moving(const struct session *s);


/* sessions/N/snapshot read: write s's snapshot file (sessions/snapshot_file.h)
 * into fd from offset 0 — the header and metadata now, the state by s's
 * worker once s is idle (after the run under way; a queue).  fd stays the
 * caller's, and must stay open until fn.  0 (fn comes later), -EIO (a dead
 * session), -ENOMEM. */
int session_snapshot_to(struct session *s, int fd, session_state_fn fn, void *data);
/* sessions/N/snapshot write: replace s's state (R, workspace, timeout,
 * limits, session tools) with the snapshot file fd of size bytes.  Checked
 * now, as an attacker's input: -EINVAL (not a valid snapshot; why says
 * what), -ENOSPC (its files are over files_max_bytes), -EBUSY (s runs, or
 * its state is being moved), -EIO (a dead session); nothing changed then.
 * Else 0, and fn says how the worker's restore went (-EINVAL: R could not
 * read the state, or it made R's unserialize crash — in a child process:
 * s is unchanged; -EIO: the worker died). */
int session_restore_from(struct session *s, int fd, off_t size, session_state_fn fn, void *data, char *why,
                         size_t n);
/* Close a session, also while it runs: its worker is killed.  The closing
 * event is sent, then s is freed. */
void session_close(struct session *s);

/* Lookups by directory name and by id (NULL: none). */
struct session *sessions_find(struct sessions *t, const char *name);
struct session *sessions_find_id(struct sessions *t, uint64_t id);
/* Sessions in creation order, for readdir: the first with id > after. */
struct session *sessions_next(struct sessions *t, uint64_t after);

/* Is a run under way or queued? */
bool session_busy(const struct session *s);
/* Start a run of code (taken over; freed here).  0, -EBUSY when one is
 * under way or queued, -ENOMEM.  Code that is not UTF-8, or a dead session,
 * ends the run at once with an error (run_ended is sent before this
 * returns); in STARTING it is queued. */
int session_start_run(struct session *s, char *code, size_t len);
/* ctl interrupt: the run under way is interrupted (R unwinds, the state is
 * kept; SIGKILL after the grace period); nothing when none is, or it is
 * being stopped already. */
void session_interrupt(struct session *s);
/* ctl restart: a fresh worker (STARTING), the state cleared; a run under
 * way ends killed, a queued one waits for the new worker. */
void session_restart(struct session *s);
/* The timeout file: 0, or -EINVAL (not finite, negative, over 1e7 s). */
int session_set_timeout(struct session *s, double seconds);
/* The limits file: in force from now for the session-wide monitor and the
 * next run; set on the worker at once when it is idle, after the run under
 * way, or when a starting worker attaches.  0, or -EBUSY (idle) when its
 * memory limit is below what the worker's cgroup holds already: nothing
 * changed.  Written during a run, such a limit is refused at the run's end
 * and the next result's notice says so (session_apply_limits()). */
int session_set_limits(struct session *s, const struct limits *l);

/* ---- what the fs layer reads of a session ------------------------------ */

/* Never reused; the fs layer derives inode numbers from it. */
uint64_t session_id(const struct session *s);
/* Its directory name under sessions/. */
const char *session_name(const struct session *s);
/* The status file's word: "starting", "idle", "running" or "dead". */
const char *session_state_word(const struct session *s);
/* True while its created event is still to come (the mkdir or clone open
 * that made it waits for it). */
bool session_create_pending(const struct session *s);
/* Seconds for each run (0: none) and the limits, as the timeout and limits
 * files show them. */
double session_timeout(const struct session *s);
const struct limits *session_limits(const struct session *s);
/* Console of the run under way, else of the last run (never NULL). */
const struct text *session_console(const struct session *s);
/* The last finished run (borrowed: result_ref() to keep it), NULL before
 * the first. */
struct result *session_last_result(const struct session *s);
/* Its audit lines, the log file (never NULL). */
const struct text *session_log(const struct session *s);
/* Its workspace (sessions/workspace.h), from creation to close. */
struct workspace *session_workspace(const struct session *s);
/* Its tools/ directory's scope (sessions/tools.h), from creation to close. */
struct tool_scope *session_tool_scope(const struct session *s);
/* Two pointers the fs layer keeps here and owns: the handle open for
 * writing input (NULL: none), and its per-session state.  The sessions
 * layer only stores them. */
void *session_input_writer(const struct session *s);
void session_set_input_writer(struct session *s, void *handle);
void *session_fs_data(const struct session *s);
void session_set_fs_data(struct session *s, void *data);
/* The events' data pointer (struct session_events). */
void *session_events_data(const struct session *s);

/* The stats file's JSON (new reference; NULL when out of memory). */
json_t *sessions_stats(struct sessions *t);
/* The tool registry (sessions/tools.h), for the tools/ directories. */
struct tools *sessions_tools(struct sessions *t);

/* A finished run, immutable once published; shared by readers' snapshots
 * (result_ref to keep one, result_unref to let go; both accept NULL). */
struct result *result_ref(struct result *r);
void result_unref(struct result *r);

/* The files of a result (never NULL; empty for a NULL result): output,
 * error and console for cat (control characters shown escaped,
 * common/escape.h), result.json and value.json exact. */
enum result_file { RESULT_OUTPUT, RESULT_ERROR, RESULT_CONSOLE, RESULT_JSON, RESULT_VALUE_JSON };
const struct text *result_text(const struct result *r, enum result_file which);
