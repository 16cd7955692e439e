/* The daemon side of one worker (docs/architecture.md, "Workers: the zygote
 * and the pool"; docs/protocol.md): its start (a spawn request to the
 * zygote, its "ready", its assignment to a session and the workspace it is
 * handed, its "attached"), each with a deadline; its limits, set from
 * outside; its death (a child-exit watch on the loop: workers are cloned
 * with CLONE_PARENT, so the daemon reaps them); and its socket
 * (sessions/worker_io.c: frames out through a queue, frames in within a
 * budget, each checked by sessions/protocol.h).
 *
 * A worker belongs to a session, to the pool (sessions/pool.h), or to
 * nobody once abandoned (its session closed or restarted: it is killed and
 * freed when reaped).
 *
 * Process context: the daemon's event loop; nothing here blocks. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "frame.h"
#include "list.h"
#include "text.h"

struct host_id;
struct limits;
struct session;
struct sessions;

enum worker_state { WORKER_SPAWNING, WORKER_READY };

struct worker {
        struct sessions *owner;
        struct session *session; /* NULL while pooled or abandoned */
        struct host_id *host_id; /* what its 1000 is on the host (NULL: the daemon's own) */
        enum worker_state state; /* READY: its "ready" and its pid both came */
        pid_t pid;               /* 0 until the zygote says */
        int fd;                  /* our end of its socket; -1 once closed */
        uint64_t token;          /* spawn request in flight, 0 when none */
        uint64_t cgroup_id;      /* its cgroup: w<spawn token> */
        struct frame_reader rd;
        struct loop_timer *resume; /* reading goes on here when the budget ran out */
        struct loop_timer *leftover_check; /* looks for processes a run left (sessions/monitor.h) */
        uint64_t last_leftover_check_ns;
        uint64_t leftover_check_due_ns; /* when the armed look comes */
        double xfer_cpu_base_s;  /* its CPU when its transfer began (sessions/monitor.c) */
        int oom_fd;              /* its cgroup's OOM kill counter (cgroup_worker_oom_open()), or -1 */
        unsigned long long oom_kills_seen; /* the counter when its run began, or at its monitor's last look */
        struct text out;         /* frames not yet written */
        size_t out_off;
        char *fatal;             /* reason from a "fatal" frame, or why it failed to start */
        int start_err;           /* with fatal: -EAGAIN (a helper or the worker died, or the worker
                                  * stalled: worth another worker), -ETIMEDOUT (a helper missed a
                                  * deadline: report it), -EPERM (the jail: the default) */
        char *kill_reason;       /* set when we killed it on purpose */
        bool killed;             /* SIGKILLed by the daemon: its death is coming */
        struct loop_timer *start_timer; /* its start or attach deadline */
        uint64_t ws_token;              /* the keeper's copy of its workspace is on its way */
        long long reserved_as;   /* address space its build reserves (its "ready" frame) */
        bool got_ready;          /* its "ready" frame came */
        bool warmed;             /* pooled, and sent "warm" (sessions/pool.c) */
        uint64_t pooled_ns;      /* when it joined the pool */
        bool attached;           /* its "attached" frame came: /work is its session's */
        bool closed_socket;      /* attached, its socket ended: its exit is due (worker_connection_closed()) */
        bool abandoned;          /* its session closed or restarted; just reap it */
        bool watched;            /* its pid has a child-exit watch on the loop */
        bool exited;
        bool watching_out;       /* EPOLLOUT is on: the socket was full */
        bool resume_armed;
        int threads_base;        /* its threads when it attached (sessions/monitor.c) */
        unsigned idle_checks;    /* looks of the idle watch since the last run ended */
        uint64_t idle_gap_ns;    /* the watch's current gap */
        double idle_cpu_base_s;  /* its CPU at the watch's first look */
        bool read_paused;        /* its slice of loop time is spent (sessions/worker_io.c) */
        uint64_t slice_start_ns, slice_used_ns;
        uint64_t slice_max_batch_ns; /* the dearest read of its frames in this slice */
        uint64_t dear_until_ns;      /* dear until then: WORKER_DEAR_HOLD_NS after its last
                                      * dear read (sessions/worker_io.c) */
        uint64_t dear_read_ns;       /* what its last dear read took */
        uint64_t busy_until_ns;      /* busy until then (sessions/worker_io.c) */
        const char *refused_why; /* why the protocol refused a frame's type (static) */
        bool leftover_check_armed;
        int exit_status;
        double cpu_s;            /* CPU used, from wait4's rusage */
        struct list link;        /* in sessions' workers */
        struct list pool_link;   /* in the pool's ready list, when pooled */
};

/* A new worker for session s (NULL: for the pool), mapped to host id h
 * (which it holds a reference to; NULL: the daemon's own ids): its socket,
 * its cgroup, a spawn request to the zygote and its start deadline.  NULL
 * when out of resources. */
struct worker *worker_spawn(struct sessions *t, struct session *s, struct host_id *h);
/* w (ready, jailed but for /work) now belongs to w->session: hand it the
 * session's workspace (a copy of its mount from the keeper,
 * asynchronously).  It counts as the session's worker once it answers
 * "attached", within WORKER_ATTACH_TIMEOUT_MS; if it cannot be given the
 * workspace it is killed, and its start failed (session_worker_lost). */
void worker_assign(struct worker *w);
/* Its "ready" frame (with what its build reserves) came. */
void worker_on_ready(struct worker *w, long long reserved_bytes);

/* SIGKILL (once it has a pid), and the spawn or workspace request in flight
 * cancelled.  reason (kept if it is the first) says why, for the run's
 * message (NULL: none). */
void worker_kill(struct worker *w, const char *reason);
/* Record why w failed to start (the first reason wins); err as start_err. */
void worker_set_fatal(struct worker *w, int err, const char *why);
/* Detach w from its session for good (the session closes or restarts):
 * socket closed, killed with reason, reaped and freed later (at once if the
 * zygote never had it). */
void worker_abandon(struct worker *w, const char *reason);
/* Free w: socket, timers, requests, cgroup, watch, host id.  Only for a
 * worker that is reaped, never started, or at shutdown. */
void worker_free(struct worker *w);
/* How it ended, for messages: "it was killed by signal 9 (Killed)", ... */
void worker_describe_exit(const struct worker *w, char *buf, size_t n);

/* Set limits l on w from outside (sandbox/rlimits.h: soft limits only, the
 * worker is not trusted to set its own) and its cgroup's memory and process
 * counts; cpu is per run: the soft limit is cpu_base_s (the CPU it used so
 * far) plus the limit.
 * cpu_only: the CPU limit alone (the start of a run).  0, -EBUSY when its
 * cgroup holds more than l's memory limit already (nothing was set), or
 * the first -errno (the others are still set); 0 when w has no live pid. */
int worker_apply_limits(struct worker *w, const struct limits *l, double cpu_base_s, bool cpu_only);
/* The trim timer of the table (struct sessions): malloc_trim(). */
void worker_on_trim(void *data);

/* The cgroup sweep timer of the table: the worker cgroups that were still
 * busy when their worker was freed, tried again every CGROUP_SWEEP_MS while
 * any is left. */
void worker_on_cgroup_sweep(void *data);
/* w's socket ended (read end of file, or a read failed): closed; w is
 * killed at once before its attach, else with a reason if it has not
 * exited a second later. */
void worker_connection_closed(struct worker *w);
/* What w's cgroup holds now (its processes, its tmpfs pages), in bytes; 0
 * without a cgroup. */
unsigned long long worker_memory_held(const struct worker *w);
/* The CPU time w has used (seconds; 0 when it cannot be read). */
double worker_cpu_s(const struct worker *w);

/* A worker waiting in the pool runs 1+1 once for itself (docs/protocol.md,
 * "warm"): a fresh clone's first run writes about a hundred pages that are
 * still the zygote's, and each such write copies one, about half a
 * millisecond in all that would otherwise be on the path of the first
 * result of the session that takes it.  Sent by the pool (sessions/pool.c)
 * to workers it has held a while; a send that fails kills the worker. */
void worker_warm(struct worker *w);

/* ---- its socket (sessions/worker_io.c) ---------------------------------- */

/* Queue a frame (not stolen) and write what the socket takes now.  0, or
 * -errno: -EPIPE when its socket is closed, -ENOBUFS when a worker that
 * runs has stopped reading (over 8 MiB queued: it was killed as a
 * protocol violation). */
int worker_send(struct worker *w, const json_t *msg);
/* Send a frame with one descriptor attached (SCM_RIGHTS on its bytes): only
 * as the first frame (nothing may be queued).  0 or -errno. */
int worker_send_fd(struct worker *w, const json_t *msg, int fd);
/* An interrupt frame for run seq, then SIGINT (docs/protocol.md: the frame
 * tells a late SIGINT from an early one). */
void worker_interrupt(struct worker *w, uint64_t seq);
/* Watch its socket on the loop (after worker_spawn made it).  0 or -errno. */
int worker_io_start(struct worker *w);
/* Stop watching and close its socket (idempotent). */
void worker_close_fd(struct worker *w);
/* The worker broke the protocol (what says how): counted, logged, killed. */
void worker_protocol_violation(struct worker *w, const char *what);
/* Read the frames still in its socket, all of them (it is gone: nobody
 * writes any more, so they are bounded by the socket's buffer). */
void worker_read_rest(struct worker *w);
/* The resume timer's callback (data: the worker). */
void worker_on_resume(void *data);
