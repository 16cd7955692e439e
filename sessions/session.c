/* The session's state machine (the essay is in session.h): creation, its
 * workers coming and going, restarts and closing, and what fs/ reads of it.
 * Runs are sessions/run.c's, results sessions/result.c's. */
#include "session_private.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/wait.h>

#include "audit.h"
#include "hostid.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "persist.h"
#include "run.h"
#include "snapshot.h"
#include "tools.h"
#include "utf8.h"
#include "worker.h"
#include "workspace.h"

/* A session's own log keeps at most this much (oldest lines dropped). */
#define SESSION_LOG_MAX (1u << 20)
/* A worker that failed to start because a helper died under it, or because
 * it stalled itself (-EAGAIN), is replaced this many times in a row before
 * the session gives up (dead, or a failed mkdir): a dead helper is back
 * within a second.  A helper that missed a deadline (-ETIMEDOUT) has made
 * the caller wait that long already: that is reported, not retried. */
#define SESSION_START_RETRIES 2

/* ---- what fs/ reads ------------------------------------------------------- */

uint64_t session_id(const struct session *s) { return s->id; }
const char *session_name(const struct session *s) { return s->name; }
bool session_create_pending(const struct session *s) { return s->creating && s->state == SESSION_STARTING; }
bool session_busy(const struct session *s) { return s->run != NULL; }
double session_timeout(const struct session *s) { return s->timeout_s; }
const struct limits *session_limits(const struct session *s) { return &s->limits; }
struct result *session_last_result(const struct session *s) { return s->last; }
struct workspace *session_workspace(const struct session *s) { return s->workspace; }
struct tool_scope *session_tool_scope(const struct session *s) { return s->tools; }
void *session_input_writer(const struct session *s) { return s->input_writer; }
void session_set_input_writer(struct session *s, void *handle) { s->input_writer = handle; }
void *session_fs_data(const struct session *s) { return s->fs_data; }
void session_set_fs_data(struct session *s, void *data) { s->fs_data = data; }
void *session_events_data(const struct session *s) { return s->owner->ev.data; }

const char *session_state_word(const struct session *s) {
        static const char *const words[] = {"starting", "idle", "running", "dead"};

        if (s->dormant)
                return "saved"; /* in state_dir, not started yet (sessions/persist.h) */
        return words[s->state];
}

const struct text *session_log(const struct session *s) {
        static const struct text empty = {(char *)"", 0, 0};

        return s->log.data ? &s->log : &empty;
}

/* ---- its log ---------------------------------------------------------------- */

/* An audit line (taken) to the audit log and the session's log. */
static void session_audit_line(struct session *s, char *line, size_t len) {
        audit_write(s->owner->audit, line, len);
        if (s->log.len + len > SESSION_LOG_MAX) {
                /* Drop the older half, at a line boundary. */
                char *cut = memchr(s->log.data + s->log.len / 2, '\n', s->log.len - s->log.len / 2);
                text_consume(&s->log, cut ? (size_t)(cut + 1 - s->log.data) : s->log.len);
        }
        text_append(&s->log, line, len);
        free(line);
}

void session_audit(struct session *s, json_t *ev) {
        size_t len;
        char *line;

        if (!ev)
                return;
        json_object_set_new(ev, "session", json_string(s->name));
        line = audit_format(ev, &len);
        if (line)
                session_audit_line(s, line, len);
}

void session_audit_run_start(struct session *s, uint64_t seq, const char *code, size_t code_len, size_t code_bytes) {
        size_t len;
        char *line = NULL;

        if (utf8_valid(s->name, strlen(s->name), NULL))
                line = audit_format_run_start(s->name, seq, code, code_len, code_bytes, &len);
        if (line)
                session_audit_line(s, line, len);
        else
                session_audit(s, json_pack("{s:s, s:I, s:s%, s:I}", "event", "run_start", "seq", (json_int_t)seq,
                                           "code", code, code_len, "code_bytes", (json_int_t)code_bytes));
}

void session_audit_run_end(struct session *s, uint64_t seq, const char *status, double elapsed_ms) {
        size_t len;
        char *line = NULL;

        if (utf8_valid(s->name, strlen(s->name), NULL))
                line = audit_format_run_end(s->name, seq, status, elapsed_ms, &len);
        if (line)
                session_audit_line(s, line, len);
        else
                session_audit(s, json_pack("{s:s, s:I, s:s, s:f}", "event", "run_end", "seq", (json_int_t)seq,
                                           "status", status, "elapsed_ms", elapsed_ms));
}

/* ---- what the tool registry may do with it (sessions/tools.h) ---------------- */

static const char *host_name(void *data) { return ((struct session *)data)->name; }

/* A run queued while the worker started is sent right after the
 * definitions (session_worker_attached), so it sees them. */
static bool host_is_idle(void *data) {
        const struct session *s = data;
        const struct worker *w = s->worker;

        return s->state == SESSION_IDLE && (!s->run || !s->run->sent) && w && w->fd >= 0 &&
               w->state == WORKER_READY;
}

/* A failure to send kills the worker. */
static int host_send(void *data, const json_t *frame) {
        struct worker *w = ((struct session *)data)->worker;
        int e;

        if (!w || w->fd < 0 || w->state != WORKER_READY)
                return -EPIPE;
        e = worker_send(w, frame);
        if (e < 0) {
                worker_close_fd(w);
                worker_kill(w, "could not send to the worker");
        }
        return e;
}

static void host_audit(void *data, json_t *ev) { session_audit(data, ev); }

/* ---- workers ------------------------------------------------------------------ */

/* Give s a worker: a ready one from the pool if it has the session's host
 * id, else a fresh clone with that id.  A root daemon's pooled workers each
 * have an id of their own, so only a new session (which adopted the first
 * one's id in sessions_create) takes one from the pool; a replacement
 * (restart, crash, kill) comes from the zygote with the session's id.
 * Unprivileged, every id is the daemon's and the pool serves all. */
static void session_acquire_worker(struct session *s) {
        struct sessions *t = s->owner;
        struct worker *w = pool_take(t, s->host_id);

        session_set_state(s, SESSION_STARTING);
        if (w) {
                w->session = s;
                s->worker = w;
                /* The pool refills a little after this worker is attached
                 * (session_worker_attached: pool_fill_soon) or once it is
                 * lost (worker_finish): a refill's clone, jail and cgroup
                 * moves would compete with the keeper and this worker for
                 * the CPUs, on the new session's path to its first result. */
                worker_assign(w);
                return;
        }
        w = worker_spawn(t, s, s->host_id);
        if (!w) {
                session_set_state(s, SESSION_DEAD);
                free(s->dead_reason);
                s->dead_reason = strdup("could not start a worker: out of resources");
                return;
        }
        s->worker = w;
        pool_fill(t);
}

/* The creating mkdir (or open of clone) gets its answer: err 0, or err < 0
 * with why (logged and kept in stats' last_start_error), and the session
 * goes then. */
void session_created(struct session *s, int err, const char *why) {
        struct sessions *t = s->owner;

        s->creating = false;
        loop_timer_arm(s->create_deadline, 0);
        if (err < 0) {
                log_error("session %s: %s", s->name, why);
                snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", why);
        }
        if (t->ev.created)
                t->ev.created(s, err, why);
        if (err < 0)
                session_close(s);
}

void session_worker_attached(struct session *s) {
        struct sessions *t = s->owner;

        session_set_state(s, SESSION_IDLE);
        s->start_retries = 0;
        session_apply_limits(s);
        /* A fork's copy is created once its state came (sessions/snapshot.h),
         * by the fork's completion only: not when a new worker of its
         * attaches after the one the state was going into died (the copy
         * was reported made, empty, and closed when the fork then failed:
         * docs/security.md, "Round 6", finding 3). */
        if (s->creating && !s->fork_src && !s->fork_name[0])
                session_created(s, 0, NULL);
        /* Its tools come before its first run. */
        tool_scope_worker_ready(s->tools);
        /* A queued run is sent, or the forks waiting for it start. */
        snapshot_session_idle(s);
        pool_fill_soon(t);
}

/* Did w fail to start through no fault of the jail's, so that another
 * worker is worth trying?  A helper's fault or a stall (fatal with
 * -EAGAIN), or a SIGKILL the daemon did not send: the OOM killer, an
 * administrator, or a pooled worker killed before its death was seen (no
 * user code has run in a worker before it attached). */
static bool start_failure_transient(const struct worker *w) {
        if (w->fatal)
                return w->start_err == -EAGAIN;
        return w->exited && !w->kill_reason && WIFSIGNALED(w->exit_status) && WTERMSIG(w->exit_status) == SIGKILL;
}

void session_worker_lost(struct session *s, struct worker *w) {
        struct sessions *t = s->owner;
        struct run *r = s->run;
        char how[128], msg[1024];

        s->worker = NULL;
        w->session = NULL;
        if (s->xfer) {
                worker_describe_exit(w, how, sizeof(how));
                snprintf(msg, sizeof(msg), "its R worker died while the state was being moved (%s)", how);
                xfer_session_lost(s, msg);
        }
        if (w->attached) {
                if (r && r->sent) {
                        run_worker_died(s, w);
                } else if (!w->kill_reason) {
                        worker_describe_exit(w, how, sizeof(how));
                        snprintf(msg, sizeof(msg),
                                 "the idle R worker died (%s); replacing it; the session's state was lost", how);
                        session_audit(s, json_pack("{s:s, s:s}", "event", "crash", "reason", msg));
                        session_notice(s, msg);
                        t->stats.crashes++;
                }
                if (!s->closing)
                        session_acquire_worker(s);
                return;
        }
        /* It never attached: its start failed. */
        worker_describe_exit(w, how, sizeof(how));
        snprintf(msg, sizeof(msg), "the sandboxed R worker could not start: %s", w->fatal ? w->fatal : how);
        if (start_failure_transient(w) && s->start_retries < SESSION_START_RETRIES && !s->closing) {
                /* A helper's fault, not the jail's: a fresh worker (a queued
                 * run waits for it; a creating session's deadline still
                 * holds). */
                s->start_retries++;
                log_warn("session %s: %s; trying again", s->name, msg);
                snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", msg);
                session_acquire_worker(s);
                if (s->state != SESSION_DEAD)
                        return;
        }
        if (s->creating) {
                session_created(s, start_failure_transient(w) || (w->fatal && w->start_err == -ETIMEDOUT) ? -EAGAIN
                                                                                                           : -EPERM,
                                msg);
                return;
        }
        log_error("session %s: %s", s->name, msg);
        snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", msg);
        session_set_state(s, SESSION_DEAD);
        free(s->dead_reason);
        s->dead_reason = strdup(msg);
        if (r) {
                if (!r->sent) {
                        r->start_ns = now_ns();
                        r->sent = true;
                }
                run_end(s, RUN_ERROR, ERROR_DEAD, msg, NULL);
        }
}

/* ---- creation ------------------------------------------------------------------ */

static void on_workspace_made(void *data, int err, int fd, const char *why) {
        struct session *s = data;
        char msg[768];

        if (err == 0 || !s->creating)
                return;
        snprintf(msg, sizeof(msg), "could not make a workspace: %s", why ? why : strerror(-err));
        session_created(s, err == -EAGAIN || err == -ETIMEDOUT ? -EAGAIN : err == -ENOMEM ? err : -EPERM, msg);
}

static void on_create_deadline(void *data) {
        struct session *s = data;
        char msg[768];

        if (!s->creating)
                return;
        if (s->fork_orphaned) {
                session_created(s, -ENOENT, "the session it was a fork of closed before it was copied");
                return;
        }
        snprintf(msg, sizeof(msg), "the session did not start within %d ms (%s)", SESSION_CREATE_TIMEOUT_MS,
                 workspace_root_fd(s->workspace) < 0  ? "its workspace was not made"
                 : !s->worker                          ? "no worker"
                 : s->worker->state == WORKER_SPAWNING ? "its worker was not ready"
                                                       : "its worker did not attach the workspace");
        session_created(s, -EAGAIN, msg);
}

/* Undo a session sessions_create() had not linked in yet. */
static int session_new_undo(struct session *s, int err) {
        struct sessions *t = s->owner;

        tool_scope_free(s->tools);
        workspace_free(s->workspace);
        loop_timer_free(s->create_deadline);
        host_id_unref(t->ids, s->host_id);
        free(s);
        return err;
}

/* A session's struct, named and numbered, with its tools/ scope, not yet
 * in the table.  0 or -errno. */
static int session_alloc(struct sessions *t, const char *name, struct session **out) {
        struct tool_host host = {.name = host_name, .is_idle = host_is_idle, .send = host_send, .audit = host_audit};
        struct session *s;
        char auto_name[32];
        int e;

        if (t->n_sessions >= t->opt->max_sessions)
                return -ENOSPC;
        if (!name) {
                do
                        snprintf(auto_name, sizeof(auto_name), "%llu", (unsigned long long)++t->next_auto_name);
                while (sessions_find(t, auto_name));
                name = auto_name;
        }
        if (!session_name_valid(name))
                return -EINVAL;
        if (sessions_find(t, name))
                return -EEXIST;
        if (!t->workspaces) {
                log_error("session %s: no workspace: %s", name, t->workspaces_error);
                return -EPERM;
        }
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->owner = t;
        s->restore_fd = -1;
        snprintf(s->name, sizeof(s->name), "%s", name);
        s->create_deadline = loop_timer_new(t->loop, on_create_deadline, s);
        if (!s->create_deadline)
                return session_new_undo(s, -ENOMEM);
        s->id = ++t->next_id;
        /* Its tools/ directory exists from the start (fs lists it). */
        host.data = s;
        if ((e = tools_scope_new(t->tools, s->id, &host, &s->tools)) < 0)
                return session_new_undo(s, e);
        s->timeout_s = t->opt->timeout_s;
        s->limits = t->opt->limits;
        s->memory_in_force = s->limits.v[LIMIT_MEMORY];
        list_init(&s->fork_link);
        list_init(&s->fork_waiters);
        list_init(&s->state_waiters);
        list_init(&s->state_moving);
        list_init(&s->dirty_link);
        *out = s;
        return 0;
}

/* Its host id, its workspace, a worker on the way.  0 or -errno (nothing
 * of that made). */
static int session_provision(struct session *s) {
        struct sessions *t = s->owner;
        struct worker *pooled = pool_first(t);
        int e;

        /* Its host id: the first pooled worker's, which it will take (a
         * root daemon's pooled workers each have one of their own), else a
         * fresh one; the workspace belongs to it from the start. */
        if (pooled) {
                s->host_id = host_id_ref(pooled->host_id);
        } else if ((e = host_id_take(t->ids, &s->host_id)) < 0) {
                log_error("session %s: no free host id in id_range=%u:%u", s->name, t->opt->id_range.base,
                          t->opt->id_range.count);
                return e == -ENOMEM ? e : -ENOSPC;
        }
        /* Strict: the keeper makes it while the worker starts (both take
         * their time; the keeper answers the worker's copy after the
         * mount).  A failure to make it comes to on_workspace_made(). */
        e = workspace_new(t->workspaces, s->id, host_uid(s->host_id), host_gid(s->host_id), on_workspace_made, s,
                          &s->workspace);
        if (e < 0 && e != -EINPROGRESS) {
                log_error("session %s: could not make its workspace: %s", s->name, strerror(-e));
                snprintf(t->last_start_error, sizeof(t->last_start_error), "could not make a workspace: %s",
                         strerror(-e));
                s->workspace = NULL;
                host_id_unref(t->ids, s->host_id);
                s->host_id = NULL;
                return e == -ENOMEM ? e : -EPERM;
        }
        return 0;
}

/* A new session named name in the table: provisioned (a host id, its
 * workspace on its way), or dormant when saved (sessions/persist.h).  0
 * with *out, or -errno with nothing left of it. */
static int session_enter(struct sessions *t, const char *name, bool saved, struct session **out) {
        struct session *s;
        int e = session_alloc(t, name, &s);

        if (e < 0)
                return e;
        s->dormant = saved;
        if (!saved && (e = session_provision(s)) < 0)
                return session_new_undo(s, e);
        if ((e = sessions_index_add(t, s)) < 0)
                return session_new_undo(s, e);
        list_append(&t->sessions, &s->link);
        t->n_sessions++;
        *out = s;
        return 0;
}

int sessions_create(struct sessions *t, const char *name, struct session **out) {
        struct session *s;
        int e = session_enter(t, name, false, &s);

        if (e < 0)
                return e;
        s->creating = true;
        t->stats.sessions_created++;
        session_audit(s, json_pack("{s:s}", "event", "session_open"));
        loop_timer_arm(s->create_deadline, now_ns() + SESSION_CREATE_TIMEOUT_MS * 1000000ULL);
        session_acquire_worker(s);
        if (s->state == SESSION_DEAD) {
                session_close(s);
                return -ENOMEM;
        }
        persist_mark_dirty(s);
        *out = s;
        return 0;
}

int sessions_create_saved(struct sessions *t, const char *name, struct session **out) {
        return session_enter(t, name, true, out);
}

void session_wake(struct session *s) {
        char msg[256];
        int e;

        if (!s->dormant || s->closing)
                return;
        s->dormant = false;
        e = persist_open_saved(s, &s->restore_fd, &s->restore_size);
        if (e < 0) {
                snapshot_saved_lost(s, "cannot be read", strerror(-e), true);
                snapshot_take_saved_settings(s);
        }
        if ((e = session_provision(s)) < 0) {
                snprintf(msg, sizeof(msg), "could not start the saved session: %s", strerror(-e));
                session_set_state(s, SESSION_DEAD);
                free(s->dead_reason);
                s->dead_reason = strdup(msg);
                return;
        }
        session_audit(s, json_pack("{s:s}", "event", "session_resume"));
        session_acquire_worker(s);
}

bool session_dormant(const struct session *s) { return s->dormant; }

/* ---- restart and close ---------------------------------------------------------- */

void session_close(struct session *s) {
        struct sessions *t = s->owner;

        if (s->closing)
                return;
        s->closing = true;
        snapshot_session_closing(s);
        if (t->ev.closing)
                t->ev.closing(s);
        session_audit(s, json_pack("{s:s}", "event", "session_close"));
        if (s->worker) {
                /* Reaped later, freed then. */
                worker_abandon(s->worker, "session closed");
                s->worker = NULL;
        }
        list_unlink(&s->link);
        sessions_index_remove(t, s);
        session_set_state(s, SESSION_DEAD); /* out of the running count */
        t->n_sessions--;
        tool_scope_free(s->tools);
        run_free(s->run);
        /* Its files go with it (a worker being killed may still hold its
         * copy of the mount for a moment; nothing else can reach it). */
        workspace_free(s->workspace);
        /* Its id goes back once its last worker is reaped too. */
        host_id_unref(t->ids, s->host_id);
        result_unref(s->last);
        json_decref(s->restore_notes);
        if (s->restore_fd >= 0)
                close(s->restore_fd);
        persist_checkpoint_forget(s);
        persist_session_closing(s);
        text_free(&s->log);
        free(s->dead_reason);
        free(s->idle_notice);
        loop_timer_free(s->create_deadline);
        free(s);
}

void session_restart(struct session *s) {
        struct sessions *t = s->owner;
        struct worker *w = s->worker;

        t->stats.restarts++;
        session_audit(s, json_pack("{s:s}", "event", "restart"));
        xfer_session_lost(s, "the session was restarted while its state was being moved");
        if (w) {
                s->worker = NULL;
                worker_abandon(w, "restart");
                /* A run under way ends now, as killed. */
                if (s->run && s->run->sent)
                        run_end(s, RUN_KILLED, ERROR_KILLED,
                                "The session was restarted (ctl restart) during the run; its state was cleared.", NULL);
        }
        free(s->dead_reason);
        s->dead_reason = NULL;
        session_acquire_worker(s);
}

int session_set_timeout(struct session *s, double seconds) {
        if (!isfinite(seconds) || seconds < 0 || seconds > 1e7)
                return -EINVAL;
        s->timeout_s = seconds;
        return 0;
}

void session_notice(struct session *s, const char *what) {
        size_t old = s->idle_notice ? strlen(s->idle_notice) : 0, add = strlen(what);
        char *n;

        if (old > 4096)
                return;
        n = realloc(s->idle_notice, old + add + 3);
        if (!n)
                return;
        if (old)
                memcpy(n + old, "; ", 2), old += 2;
        memcpy(n + old, what, add + 1);
        s->idle_notice = n;
}

/* The memory limit of s's limits was refused (it holds more already): say
 * why in what, for the log and the notice, and put the one in force back in
 * s's limits. */
static void memory_limit_refused(struct session *s, char *what, size_t n) {
        long long want = s->limits.v[LIMIT_MEMORY], old = s->memory_in_force;
        char was[32];

        if (old == LIMIT_UNSET)
                snprintf(was, sizeof(was), "none");
        else
                snprintf(was, sizeof(was), "%lld MiB", old >> 20);
        snprintf(what, n,
                 "the memory limit of %lld MiB was not set: the session holds %llu MiB already (its processes, "
                 "and its files in /tmp and /work); the limit stays %s",
                 want >> 20, worker_memory_held(s->worker) >> 20, was);
        s->limits.v[LIMIT_MEMORY] = old;
}

/* Apply s's limits to its worker.  A memory limit below what the session
 * holds is refused (-EBUSY): then, with revert, every limit goes back to
 * *revert (the writer of limits hears it); without, the memory limit alone
 * stays the one in force and the next result's notice says so. */
static int apply_limits(struct session *s, const struct limits *revert) {
        char what[256];

        s->limits_pending = false;
        if (worker_apply_limits(s->worker, &s->limits, worker_cpu_s(s->worker), false) != -EBUSY) {
                s->memory_in_force = s->limits.v[LIMIT_MEMORY];
                return 0;
        }
        memory_limit_refused(s, what, sizeof(what));
        if (revert)
                s->limits = *revert;
        (void)worker_apply_limits(s->worker, &s->limits, worker_cpu_s(s->worker), false);
        log_info("session %s: limits: %s%s", s->name, what, revert ? "; unchanged" : "");
        if (!revert)
                session_notice(s, what);
        return -EBUSY;
}

int session_apply_limits(struct session *s) { return apply_limits(s, NULL); }

void session_take_limits(struct session *s, const struct limits *l) {
        s->limits = *l;
        if (s->state == SESSION_RUNNING)
                s->limits_pending = true;
        else if (s->state == SESSION_IDLE)
                (void)session_apply_limits(s);
}

int session_set_limits(struct session *s, const struct limits *l) {
        struct limits old = s->limits;

        s->limits = *l;
        /* A run re-arms only its CPU limit; the rest wait for its end (a
         * starting worker gets them all when it attaches). */
        if (s->state == SESSION_RUNNING)
                s->limits_pending = true;
        else if (s->state == SESSION_IDLE)
                return apply_limits(s, &old);
        return 0;
}
