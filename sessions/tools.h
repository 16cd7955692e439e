/* Tools: host programs that sandboxed R code calls as functions (DESIGN §3,
 * docs/tools.md).
 *
 * The registry holds scopes: one global (the root tools/ directory) and one
 * per session that has a tools/ of its own.  A scope holds entries, the
 * NAME.json files of its directory; an entry holds the text last accepted
 * and its parsed definition (none while a newly created file has not been
 * accepted yet).  A session sees its own definitions and the global ones it
 * does not hide.
 *
 * Definitions reach a session's worker as define_tool/remove_tool frames
 * whenever the worker is idle: at once when a definition changes, or when a
 * run under way ends, or when a fresh worker becomes ready.
 *
 * Calls: a worker's tool_call frame is checked here (the daemon is the
 * authority) and answered with a tool_result frame, now (refused) or when
 * the tool process answers.  exec tools are a process per call, server tools
 * one process per (calling session, scope of the definition, command), so
 * that no session's call waits behind or fails with another session's
 * (docs/tools.md departs from DESIGN §3 there); both are forked from the daemon with a
 * clean environment, in their own process group (killed whole on timeout),
 * and watched through non-blocking pipes on the event loop: nothing here
 * blocks.
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
struct session;
struct text;
struct tools;
struct tool_scope;
struct tool_entry;

/* A tool file's full name is NAME.json; a definition is at most this big. */
#define TOOL_FILE_MAX (1u << 20)
/* Requests (the arguments' JSON) and replies are at most this big. */
#define TOOL_IO_MAX (1u << 20)

int tools_new(struct loop *l, const struct options *o, struct tools **out);
/* Kill every tool process (SIGKILL to each group) and free everything.
 * Session scopes must be gone already (tools_session_closed). */
void tools_free(struct tools *t);

/* ---- the tools/ directories (for the fs layer) ----------------------- */

struct tool_scope *tools_global(struct tools *t);
/* The scope of session s, created on first use; NULL when out of memory. */
struct tool_scope *tools_session_scope(struct tools *t, struct session *s);
/* The session a scope belongs to, NULL for the global one. */
struct session *tool_scope_session(const struct tool_scope *sc);

/* The entry named filename ("NAME.json") or NULL. */
struct tool_entry *tools_entry_lookup(struct tool_scope *sc, const char *filename);
/* Entries are numbered once, from 1, never reused (inode numbers are made
 * from this).  Lookup by number over every scope, unlinked ones included
 * (an open handle still names them); NULL when gone. */
struct tool_entry *tools_entry_by_id(struct tools *t, uint64_t id);
/* For readdir: the listed entry with the smallest id > after, or NULL. */
struct tool_entry *tools_entry_next(struct tool_scope *sc, uint64_t after);
uint64_t tool_entry_id(const struct tool_entry *e);
struct tool_scope *tool_entry_scope(const struct tool_entry *e);
/* "NAME.json" */
const char *tool_entry_filename(const struct tool_entry *e);
/* The text of the definition in force ("" before one was accepted). */
const struct text *tool_entry_text(const struct tool_entry *e);
/* Unlinked entries are only reachable through handles still open. */
bool tool_entry_unlinked(const struct tool_entry *e);

/* Create an empty entry (no definition yet): 0 with *out, -EEXIST, or
 * -EINVAL for a name that is not NAME.json with NAME a valid tool name (the
 * reason is logged and recorded in the scope's .errors). */
int tools_entry_create(struct tool_scope *sc, const char *filename, struct tool_entry **out);
/* Open handles keep an entry alive; an entry without a definition goes
 * away with its last handle. */
void tool_entry_hold(struct tool_entry *e);
void tool_entry_release(struct tool_entry *e);
/* Check text as a definition and put it in force: 0, or -EINVAL with the
 * previous definition kept (the reason is logged and recorded).  On an
 * unlinked entry: 0, nothing happens. */
int tool_entry_write(struct tool_entry *e, const char *text, size_t len);
/* unlink: 0 or -ENOENT.  rename within the scope: 0, -ENOENT, -EEXIST
 * (RENAME_NOREPLACE), -EINVAL (bad new name: recorded). */
int tools_entry_unlink(struct tool_scope *sc, const char *filename);
int tools_entry_rename(struct tool_scope *sc, const char *from, const char *to, unsigned flags);
/* The .errors file: JSON lines {"time","tool","error"}, the last 100. */
const struct text *tool_scope_errors(const struct tool_scope *sc);

/* ---- the sessions layer's hooks --------------------------------------- */

/* A fresh worker of s is ready and idle: send it every definition s sees. */
void tools_session_ready(struct tools *t, struct session *s);
/* The run of s ended (its worker may be gone): the call in flight, if any,
 * is cancelled (no tool_result is sent for it), and definitions that
 * changed during the run are sent. */
void tools_run_ended(struct tools *t, struct session *s);
/* Run seq of s is ending (before its run_end line): one audit line
 * "tool_calls_refused" with the calls refused in the run, how many of them
 * were not logged one by one (all but the first few), and dropped, the
 * calls the caller did not answer because the run had been stopped on a
 * limit.  Nothing when nothing went unlogged. */
void tools_run_summary(struct tools *t, struct session *s, uint64_t seq, unsigned dropped);
/* s is closing: its scope, its servers and its call in flight end. */
void tools_session_closed(struct tools *t, struct session *s);

/* A tool_call frame from the worker of s during run seq, of which
 * calls_before calls came earlier.  Returns 0 when the frame was well formed
 * (a tool_result follows, now for a refused call, later otherwise), or
 * -EBADMSG with *why set when the worker broke the protocol (the caller
 * kills it). */
int tools_handle_call(struct tools *t, struct session *s, json_t *frame, uint64_t seq, unsigned calls_before,
                      const char **why);

/* Syntactic R name, not reserved, not a name of R's base package, not
 * starting with ".securerfs": the rule for tool names.  Exposed for unit
 * tests. */
bool tool_name_valid(const char *name, const char **why);
