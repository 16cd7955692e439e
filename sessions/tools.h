/* Tools: host programs that sandboxed R code calls as functions (DESIGN §3,
 * docs/tools.md).
 *
 * The registry holds scopes: one global (the root tools/ directory) and one
 * per session (sessions/N/tools/).  A scope holds entries, the NAME.json
 * files of its directory; an entry holds the text last accepted and its
 * parsed definition (sessions/tool_def.h; none while a newly created file
 * has not been accepted yet).  A session sees its own definitions and the
 * global ones it does not hide.
 *
 * The registry knows a session only through its scope's struct tool_host,
 * which the session fills in (sessions/session.c): its name, whether its
 * worker is idle, a way to send it a frame, its audit log.  Definitions
 * reach the worker as define_tool/remove_tool frames whenever it is idle: at
 * once when a definition changes, or when a run under way ends, or when a
 * fresh worker becomes ready.
 *
 * Calls: a worker's tool_call frame (checked for its shape by
 * sessions/protocol.h) is checked again here — the daemon is the authority —
 * and answered with a tool_result frame, now (refused) or when the tool
 * process answers.  exec tools are a process per call, server tools one
 * process per (calling session, scope of the definition, command), so that
 * no session's call waits behind or fails with another session's
 * (docs/tools.md departs from DESIGN §3 there); both are forked from the
 * daemon with a clean environment (common/child.h), in their own process
 * group (killed whole on timeout), watched through non-blocking pipes and a
 * child-exit watch on the event loop: nothing here blocks.
 *
 * Process context: the daemon's event loop only.  Tool processes run on the
 * host as the daemon's user, outside any jail: that is their purpose. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

struct loop;
struct options;
struct text;
struct tools;
struct tool_scope;
struct tool_entry;

/* A tool file's full name is NAME.json; a definition is at most this big. */
#define TOOL_FILE_MAX (1u << 20)
/* Requests (the arguments' JSON) and replies are at most this big. */
#define TOOL_IO_MAX (1u << 20)

/* What a session scope's session does for the registry (data is the
 * session's; sessions/session.c fills it in). */
struct tool_host {
        void *data;
        /* Its name, for log lines. */
        const char *(*name)(void *data);
        /* Its worker is attached and idle, no run sent to it: definitions
         * may be sent now (a queued run goes right after them). */
        bool (*is_idle)(void *data);
        /* Send a frame (not stolen) to its worker: 0, or -errno (no worker;
         * a failure to send kills it). */
        int (*send)(void *data, const json_t *frame);
        /* An audit event (stolen) for the audit log and the session's log. */
        void (*audit)(void *data, json_t *ev);
};

/* The registry, with its global scope.  0 or -ENOMEM. */
int tools_new(struct loop *l, const struct options *o, struct tools **out);
/* Kill every tool process (SIGKILL to each group), reap them and free
 * everything, session scopes still open included.  Accepts NULL. */
void tools_free(struct tools *t);

/* ---- the tools/ directories (for the fs layer) ----------------------- */

struct tool_scope *tools_global(struct tools *t);
/* The id of the session a scope belongs to (session_id()), 0 for the
 * global one. */
uint64_t tool_scope_session_id(const struct tool_scope *sc);

/* The entry named filename ("NAME.json") or NULL. */
struct tool_entry *tools_entry_lookup(struct tool_scope *sc, const char *filename);
/* Entries are numbered once, from 1, never reused (inode numbers are made
 * from this).  Lookup by number over every scope, unlinked ones included
 * (an open handle still names them); NULL when gone. */
struct tool_entry *tools_entry_by_id(struct tools *t, uint64_t id);
/* For readdir: the listed entry with the smallest id > after, or NULL. */
struct tool_entry *tools_entry_next(struct tool_scope *sc, uint64_t after);
uint64_t tool_entry_id(const struct tool_entry *e);
/* The scope (tools/ or a session's tools/) the entry belongs to. */
struct tool_scope *tool_entry_scope(const struct tool_entry *e);
/* "NAME.json" */
const char *tool_entry_filename(const struct tool_entry *e);
/* The text of the definition in force ("" before one was accepted). */
const struct text *tool_entry_text(const struct tool_entry *e);
/* Unlinked entries are only reachable through handles still open. */
bool tool_entry_unlinked(const struct tool_entry *e);

/* Create an empty entry (no definition yet): 0 with *out, -EEXIST,
 * -ENOMEM, or -EINVAL for a name that is not NAME.json with NAME a valid
 * tool name (the reason is logged and recorded in the scope's .errors). */
int tools_entry_create(struct tool_scope *sc, const char *filename, struct tool_entry **out);
/* Open handles keep an entry alive; an entry without a definition goes
 * away with its last handle. */
void tool_entry_hold(struct tool_entry *e);
void tool_entry_release(struct tool_entry *e);
/* Check text as a definition and put it in force: 0, or -EINVAL (or
 * -ENOMEM) with the previous definition kept (the reason is logged and
 * recorded).  On an unlinked entry: 0, nothing happens. */
int tool_entry_write(struct tool_entry *e, const char *text, size_t len);
/* unlink: 0 or -ENOENT.  rename within the scope: 0, -ENOENT, -EEXIST
 * (RENAME_NOREPLACE), -EINVAL (bad new name: recorded), -ENOMEM. */
int tools_entry_unlink(struct tool_scope *sc, const char *filename);
int tools_entry_rename(struct tool_scope *sc, const char *from, const char *to, unsigned flags);
/* The .errors file: JSON lines {"time","tool","error"}, the last 100. */
const struct text *tool_scope_errors(const struct tool_scope *sc);

/* ---- a session's scope (for sessions/session.c) ------------------------- */

/* Make the scope of session id, which host stands for (copied).  0 with
 * *out, or -ENOMEM. */
int tools_scope_new(struct tools *t, uint64_t session_id, const struct tool_host *host, struct tool_scope **out);
/* The session is closing: its call in flight is cancelled (no reply), its
 * servers end, its entries go (handles still open on them find nothing).
 * Accepts NULL. */
void tool_scope_free(struct tool_scope *sc);
/* A fresh worker of the session is attached and idle: send it every
 * definition the session sees. */
void tool_scope_worker_ready(struct tool_scope *sc);
/* The session's run ended (its worker may be gone): the call in flight, if
 * any, is cancelled (no tool_result is sent for it), and definitions that
 * changed during the run are sent. */
void tool_scope_run_ended(struct tool_scope *sc);
/* Run seq is ending (before its run_end line): one audit line
 * "tool_calls_refused" with the calls refused in the run, how many of them
 * were not logged one by one (all but the first few), and dropped, the
 * calls the caller did not answer because the run had been stopped on a
 * limit.  Nothing when nothing went unlogged. */
void tool_scope_run_summary(struct tool_scope *sc, uint64_t seq, unsigned dropped);
/* A call from the session's worker during run seq (the frame's id, tool
 * and args, which sessions/protocol.h checked for shape).  Answered with a
 * tool_result (unless the run ends first: then it is cancelled): now when
 * refused (a tool this session does not see, missing, extra or mistyped
 * arguments, arguments over TOOL_IO_MAX, out of memory, a tool that cannot
 * be started), else when the tool answers, fails or times out.  Only when
 * not even the answer's frame can be made is the worker left to its run's
 * deadline.  A call in flight is cancelled first (no reply: the worker gave
 * up on it).  args_text (args_len bytes; NULL: none) is args as the frame
 * wrote it, compact: what the tool is given and the audit shows, so that
 * the loop does not dump again what it has just parsed. */
void tool_scope_call(struct tool_scope *sc, uint64_t seq, json_int_t id, const char *tool, json_t *args,
                     const char *args_text, size_t args_len);
