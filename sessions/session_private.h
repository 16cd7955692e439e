/* Inside sessions/ only: the state of the session table and of each
 * session, shared by the files that move it — session.c (the state
 * machine), run.c, result.c, worker.c, worker_io.c, pool.c, monitor.c,
 * stats.c, table.c.  fs/ sees a session only through session.h's
 * functions; the tool registry (tools.h) through its struct tool_host. */
#pragma once

#include "hash.h"
#include "list.h"
#include "session.h"

struct audit;
struct cgroup_tree;
struct host_id;
struct id_pool;
struct spawner;
struct workspaces;

struct session {
        uint64_t id;   /* never reused; the fs layer derives inode numbers from it */
        char name[65];
        enum session_state state;
        struct sessions *owner;
        struct worker *worker;
        double timeout_s;
        struct limits limits;
        bool limits_pending;   /* written during a run: set on the worker when it ends */
        long long memory_in_force; /* the memory limit its worker's cgroup last took */
        uint64_t next_seq;
        struct run *run;       /* under way or queued; NULL when none */
        struct result *last;   /* last finished run; NULL before the first */
        struct text log;       /* this session's audit events, JSON lines */
        char *dead_reason;     /* why the worker could not start, when DEAD */
        char *idle_notice;     /* what the daemon did between runs (session_notice()), for the next result */
        bool creating;         /* waiting for its first worker */
        struct loop_timer *create_deadline; /* the creating mkdir's answer is due */
        unsigned start_retries; /* workers replaced in a row after a helper failed */
        bool closing;
        void *input_writer;    /* the fs handle open for writing input, if any */
        void *fs_data;         /* owned by the fs layer */
        struct tool_scope *tools; /* its tools/ (sessions/tools.h), made with it */
        struct workspace *workspace; /* its files (sessions/workspace.h); kept across workers */
        /* Its host uid/gid, from the daemon's id range (root, strict mode):
         * its workers' 1000 outside and the owner of its workspace; held
         * until it is closed and its last worker reaped.  NULL: the
         * daemon's own ids (unprivileged, none mode). */
        struct host_id *host_id;
        struct list link;      /* in the table's sessions, creation order */
        struct hash_node by_id, by_name; /* in the table's indexes (sessions/table.c) */
        /* Fork and snapshot (sessions/snapshot.h). */
        struct xfer *xfer;            /* a transfer this session is an end of */
        struct session *fork_src;     /* a fork's copy, until its state comes: the original */
        char fork_name[65];           /* the original's name, for messages */
        bool fork_orphaned;           /* the original closed before the copy was made */
        struct list fork_link;        /* in fork_src's fork_waiters */
        struct list fork_waiters;     /* copies of this session waiting for it to be idle */
        struct list state_waiters;    /* snapshots of it waiting for it to be idle */
        struct list state_moving;     /* its snapshots and restores under way (sessions/snapshot.c) */
        json_t *restore_notes;        /* what a restore could not carry: the next result.json's */
        /* Persistence (sessions/persist.h). */
        bool dormant;                 /* saved in state_dir, not started: no worker, no workspace yet */
        int restore_fd;               /* its saved file, to restore once its worker is ready; -1 */
        off_t restore_size;
        bool dirty;                   /* changed since its last checkpoint */
        bool checkpointing;           /* a checkpoint of it is under way */
        bool checkpoint_failing;      /* its last checkpoint failed (persist.c: told once) */
        uint64_t last_checkpoint_ns;
        void *checkpoint;             /* the checkpoint under way (sessions/persist.c), or NULL */
        struct list dirty_link;       /* in the table's persist dirty list */
};

/* The counters of stats (sessions/stats.c). */
struct session_stats {
        uint64_t sessions_created, executions, errors, timeouts, crashes, killed, interrupts, restarts, tool_calls,
                protocol_violations;
};

struct sessions {
        struct loop *loop;
        const struct options *opt;
        struct session_events ev;
        struct spawner *spawner;
        struct tools *tools;
        struct cgroup_tree *cgroups;   /* a cgroup per worker, where possible */
        struct workspaces *workspaces; /* NULL when they could not be set up */
        struct id_pool *ids;           /* root, strict: the id range (-o id_range); else NULL */
        char workspaces_error[512];
        struct audit *audit;
        struct list sessions;          /* in creation order: ids ascending */
        unsigned n_sessions;
        unsigned n_running;            /* sessions in SESSION_RUNNING (session_set_state) */
        /* Constant-time lookups by id and by name, and sessions/ readdir's
         * order: every session by id ascending (ids only grow, so a new
         * one is appended), a closed one's slot NULL until the holes are
         * as many as the sessions and the array is packed. */
        struct hash by_id, by_name;
        struct session_slot {
                uint64_t id;
                struct session *s; /* NULL: closed */
        } *order;
        size_t n_order, order_cap, order_holes;
        uint64_t next_id;
        uint64_t next_auto_name;
        struct list workers;           /* every worker not yet freed */
        struct list pool;              /* ready, unassigned workers (sessions/pool.h) */
        unsigned pool_ready, pool_starting;
        struct loop_timer *pool_timer; /* the refill, or the back-off's end */
        struct loop_timer *trim; /* gives freed memory back, after workers went (sessions/worker.c) */
        struct loop_timer *cgroup_sweep; /* removes the worker cgroups that were busy (ditto) */
        struct loop_timer *warm_timer; /* warms the workers that waited (pool.c) */
        uint64_t pool_backoff_until;
        uint64_t start_ns;
        char last_start_error[512];    /* why the last worker could not start */
        struct session_stats stats;
        struct persist *persist;       /* -o state_dir (sessions/persist.h); NULL without */
        struct list xfers;             /* transfers under way (sessions/snapshot.c) */
        struct list state_all;         /* snapshots and restores of files not yet answered (ditto) */
        /* The loop time of the workers with dear reads, all together, in
         * the slice that began at dear_slice_start_ns (sessions/worker_io.c). */
        uint64_t dear_slice_start_ns, dear_used_ns;
        /* The loop time of the busy workers' reads in the loop's turn
         * busy_turn (sessions/worker_io.c). */
        uint64_t busy_turn, busy_turn_ns;
};

/* Index s (its id and name set) for sessions_find*() and sessions_next():
 * 0 or -ENOMEM (then it is in no index). */
int sessions_index_add(struct sessions *t, struct session *s);
/* Take s out of the indexes (indexed before). */
void sessions_index_remove(struct sessions *t, struct session *s);
/* Every change of a session's state goes through here: the stats file's
 * running count is a counter, not a walk over the sessions. */
static inline void session_set_state(struct session *s, enum session_state st) {
        s->owner->n_running += (st == SESSION_RUNNING) - (s->state == SESSION_RUNNING);
        s->state = st;
}

/* A saved session (sessions/persist.h): in the table, dormant, nothing
 * started.  0 with *out, or as sessions_create(). */
int sessions_create_saved(struct sessions *t, const char *name, struct session **out);
/* Valid session name: 1-64 of [A-Za-z0-9._-], not starting with '.'. */
bool session_name_valid(const char *name);
/* Set s's limits on its worker, now idle (sessions/worker.h).  A memory
 * limit below what the worker's cgroup holds already (its processes, its
 * files in /tmp and /work) is refused: the memory limit goes back to the one
 * in force, the next result's notice says why, and -EBUSY.  Else 0. */
int session_apply_limits(struct session *s);
/* Limits that no writer waits on (a restored snapshot's or saved session's,
 * a fork's copy's): as session_set_limits(), but a memory limit below what
 * the session holds is refused alone (the one in force stays, the next
 * result's notice says why) and every other limit is taken. */
void session_take_limits(struct session *s, const struct limits *l);
/* Remember what the daemon did to s between runs, for its next result's
 * "notice". */
void session_notice(struct session *s, const char *what);
/* Add an audit event (stolen; NULL is ignored) to the audit log and to the
 * session's own log (its last SESSION_LOG_MAX bytes). */
void session_audit(struct session *s, json_t *ev);
/* The same for the two events of every run, {"event":"run_start","seq",
 * "code" (code[0..code_len), valid UTF-8), "code_bytes"} and
 * {"event":"run_end","seq","status","elapsed_ms"}, formatted without a
 * JSON tree (sessions/audit.h); the lines are the same. */
void session_audit_run_start(struct session *s, uint64_t seq, const char *code, size_t code_len, size_t code_bytes);
void session_audit_run_end(struct session *s, uint64_t seq, const char *status, double elapsed_ms);
/* s's worker answered "attached": s is IDLE (its created event goes out),
 * its limits and tools are set, and a queued run is sent. */
void session_worker_attached(struct session *s);
/* The creating mkdir (or open of clone, or fork) gets its answer: err 0,
 * or err < 0 with why, and the session is closed then. */
void session_created(struct session *s, int err, const char *why);
/* s's worker w is gone (w is about to be freed): a worker that never
 * attached failed to start (replaced a few times when a helper was to
 * blame, else the session is DEAD or its creation fails); one that did
 * takes the run under way with it (sessions/run.h) and is replaced. */
void session_worker_lost(struct session *s, struct worker *w);
