/* Inside the tool registry only (tool_registry.c, tool_call.c, tool_exec.c,
 * tool_server.c, tool_proc.c): its state and the functions its files share.
 * Nothing here knows a session but through its scope's struct tool_host. */
#pragma once


#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "hash.h"
#include "list.h"
#include "text.h"
#include "tool_def.h"
#include "tools.h"

struct tool_entry {
        uint64_t id;
        struct tool_scope *scope;
        char *name;     /* NAME */
        char *filename; /* NAME.json */
        struct text text;
        struct tool_def *def; /* NULL until a definition is accepted */
        unsigned holds;
        bool unlinked;
        struct list link; /* in its scope's entries, ascending id */
        struct hash_node by_id; /* in the registry's entries by id */
};

/* A definition the worker has: its name and generation. */
struct installed {
        char *name;
        uint64_t gen;
};

struct tool_scope {
        struct tools *owner;
        uint64_t session_id;     /* 0: the global scope */
        struct tool_host host;   /* session scopes: the session */
        struct list entries;     /* struct tool_entry, ascending id */
        struct list servers;     /* struct tool_server */
        struct text errors;      /* the .errors file */
        unsigned n_errors;
        /* Session scopes: what the worker has, and the run's calls. */
        struct installed *installed;
        size_t n_installed;
        bool dirty;              /* definitions changed while the worker was busy */
        struct tool_call *pending; /* the call the worker waits for */
        uint64_t call_seq;       /* the run the counts below are of */
        unsigned refused, refused_unlogged;
        struct list link;        /* in the registry's session scopes */
};

/* A child process of ours (a tool or a server), watched on the loop;
 * exited is NULL once nobody waits for it (it is still reaped). */
struct tool_proc {
        struct tools *owner;
        pid_t pid;
        void (*exited)(void *data, int status);
        void *data;
        struct list link; /* in the registry's procs */
};

/* A server process.  It lives in the scope of the session whose calls it
 * serves, also for a global tool: one session's slow, hung or crashing call
 * must never fail or delay another session's (docs/tools.md, "server"). */
struct tool_server {
        struct tool_scope *scope;
        bool global; /* started for a global definition */
        char *command_key;
        struct tool_proc *proc;
        pid_t pid;
        int in_fd, out_fd, err_fd;
        struct text inbuf;
        size_t in_off;
        struct text line; /* stdout not yet ended by a newline */
        struct text err;
        uint64_t next_id;
        struct list calls; /* struct tool_call in flight */
        struct list link;  /* in its scope's servers */
};

struct tool_call {
        struct tools *owner;
        struct tool_scope *waiter; /* the session scope whose worker waits */
        struct tool_def *def;      /* NULL: an unknown tool */
        char *name;                /* the tool asked for, for the audit line */
        json_int_t id;
        char *args_text;           /* the arguments' JSON and a newline */
        size_t args_len;
        uint64_t start_ns;
        struct loop_timer *timer;
        /* exec */
        struct tool_proc *proc;
        pid_t pid;
        int in_fd, out_fd, err_fd;
        size_t in_off;
        struct text out, err;
        bool exited;
        int status;
        /* server */
        struct tool_server *server;
        uint64_t server_id;
        struct list server_link; /* in its server's calls */
        bool quiet; /* a refusal past AUDIT_REFUSED_FULL: counted, not logged */
};

struct tools {
        struct loop *loop;
        const struct options *opt;
        struct tool_scope global;
        struct list scopes; /* session scopes */
        struct list procs;  /* struct tool_proc, until reaped */
        struct hash entries; /* every entry of every scope, by id: tools_entry_by_id() */
        uint64_t next_entry_id;
        uint64_t next_gen;
        char *home;
};

/* ---- tool_registry.c ------------------------------------------------------- */

/* The entry with a definition a session scope sees for name: its own, else
 * the global one; NULL: none. */
struct tool_entry *tool_visible_entry(struct tool_scope *sc, const char *name);
/* Bring the worker of session scope sc up to date with what the session
 * should see (define_tool/remove_tool frames), or, when it is not idle,
 * mark sc to be done when it next is (tool_scope_run_ended). */
void tool_scope_worker_sync(struct tool_scope *sc);
/* A JSON string of s, cleaned to valid UTF-8 first (messages cut with
 * %.64s-style formats, names from FUSE). */
json_t *tool_json_string_clean(const char *s);

/* ---- tool_call.c ------------------------------------------------------------- */

/* The call ended: answer the worker (unless send is false: the run it
 * belonged to is over), log it, free it.  value is stolen. */
void tool_call_finish(struct tool_call *c, json_t *value, const char *error, bool send);
/* Arm the call's timeout (its definition's) with fn.  0 or -ENOMEM. */
int tool_call_arm_timeout(struct tool_call *c, void (*fn)(void *));

/* ---- tool_exec.c: exec mode -------------------------------------------------- */

/* Start c's process, give it the arguments, watch it.  0 or -errno. */
int tool_exec_start(struct tool_call *c);

/* ---- tool_server.c: server mode ---------------------------------------------- */

/* Send c to the calling session's server for its definition's scope
 * (def_scope) and command, started on first use.  0 (answered later), 1
 * (finished already: the server died), or -errno. */
int tool_server_call(struct tool_call *c, struct tool_scope *def_scope);
/* The server is ended (or died): every call in flight fails with why (plus
 * the end of its stderr), and the next call starts a new one. */
void tool_server_fail(struct tool_server *srv, const char *why);
/* Servers in session scope sc started for definitions of defs (sc itself,
 * or the global scope) end when no server-mode definition of defs names
 * their command any more. */
void tool_scope_prune_servers(struct tool_scope *sc, struct tool_scope *defs);

/* ---- tool_proc.c: processes and pipes ------------------------------------------ */

/* Start d's command with three pipes: fds[0] its stdin (ours to write),
 * fds[1] its stdout, fds[2] its stderr (ours to read), all non-blocking on
 * our side, and watch its exit: exited(data, status) comes from the loop.
 * 0 with *proc, or -errno (nothing left running). */
int tool_proc_start(struct tools *t, const struct tool_def *d, void (*exited)(void *, int), void *data, int fds[3],
                    struct tool_proc **proc);
/* Kill a process's group and stop caring about its exit (it is still
 * reaped); *pp becomes NULL.  Accepts *pp NULL. */
void tool_proc_abandon(struct tool_proc **pp);
/* Kill and reap every process (shutdown). */
void tool_procs_free(struct tools *t);
/* Stop watching *fd and close it (-1 after; -1 before is fine). */
void tool_close_watched(struct tools *t, int *fd);
/* Write what is pending from buf to fd; 1 when all is written, 0 when the
 * pipe is full (EPOLLOUT is then watched), -errno. */
int tool_pipe_flush(struct tools *t, int fd, const char *buf, size_t len, size_t *off);
/* Read what a pipe has into into: at most cap bytes (*over set past it), or
 * (tail) keeping only its end.  1 at end of file, 0 for now, -errno. */
int tool_pipe_drain(int fd, struct text *into, size_t cap, bool tail, bool *over);
/* The end of a stderr buffer as a one-paragraph message ("" if empty;
 * NULL only when out of memory). */
char *tool_tail_message(const struct text *err);
