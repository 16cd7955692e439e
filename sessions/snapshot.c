/* Transfers of a session's state and forks (sessions/snapshot.h). */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "monitor.h"
#include "run.h"
#include "persist.h"
#include "session_private.h"
#include "snapshot_file.h"
#include "state_copy.h"
#include "tool_def.h"
#include "tools.h"
#include "worker.h"
#include "workspace.h"

struct xfer_end {
        struct session *s; /* NULL: a descriptor, or a session that went away */
        bool session_end;  /* it was a session when the transfer started */
        bool done;
        bool reported;     /* its worker answered (else it died, or missed the deadline) */
        char *error;       /* its failure, NULL when none */
        json_t *notes;     /* restored's, snapshot_done's */
        json_t *packages;  /* snapshot_done's */
};

struct xfer {
        struct sessions *t;
        struct xfer_end src, dst;
        xfer_done_fn done;
        void *data;
        struct loop_timer *timer; /* the deadline; then, at once, the completion */
        bool completing;
        struct list all;          /* in t->xfers */
};

static void start_state_waiter(struct session *s);
static void on_saved_restored(void *data, int err, const char *why);
static void restore_saved(struct session *s);
static void fail_state_waiters(struct session *s);
static void forget_moving(struct session *s);
static void on_fork_done(void *data, int err, const char *why, json_t *notes, json_t *packages);

bool xfer_busy(const struct session *s) { return s->xfer != NULL; }
static bool restore_finishing(const struct session *s);

enum worker_phase xfer_phase(const struct session *s) {
        const struct xfer *x = s->xfer;

        if (!x)
                return PHASE_COUNT;
        if (x->src.s == s && !x->src.done)
                return PHASE_SNAPSHOT;
        if (x->dst.s == s && !x->dst.done)
                return PHASE_RESTORE;
        return PHASE_COUNT;
}

static void end_fail(struct xfer_end *e, const char *why) {
        e->done = true;
        if (!e->error)
                e->error = strdup(why);
}

/* Both ends answered (or failed): complete on the loop's next turn, so
 * that the callback never runs inside a worker's frame handler or loss. */
static void maybe_complete(struct xfer *x) {
        if (x->src.done && x->dst.done && !x->completing) {
                x->completing = true;
                loop_timer_arm(x->timer, now_ns() + 1);
        }
}

/* The snapshot and the restored files are the daemon's, not the code's:
 * the session's file-size limit does not apply to them (the restore writes
 * the workspace's files; a snapshot goes into a pipe, the daemon's copy of
 * it into its file is held to xfer_state_bound).  What does is what
 * a state can take: its R part is R data of a worker held to the memory
 * limit, its files fit the workspace's quota, their records' headers and
 * paths take at most as much again (an entry per page of the quota at
 * most, each header and path within a page), then the metadata.  A thread
 * of the session's code that writes into the snapshot's pipe at will is
 * stopped there (the daemon's copy fails with EFBIG), not at the host's
 * memory or disk (docs/security.md, "Round 4").  Without a memory limit
 * there is no such bound.  Put back when the end is done. */
long long xfer_state_bound(struct session *s) {
        long long mem = s->limits.v[LIMIT_MEMORY], files = s->owner->opt->files_max_bytes;

        return mem > 0 && files >= 0 ? mem + 2 * files + SNAPSHOT_HEADER + SNAPSHOT_META_MAX + (1LL << 20) : -1;
}

static void lift_fsize(struct session *s) {
        struct limits l = s->limits;
        long long bound = xfer_state_bound(s);

        l.v[LIMIT_FSIZE] = bound >= 0 ? bound : LIMIT_UNSET;
        if (s->worker)
                worker_apply_limits(s->worker, &l, worker_cpu_s(s->worker), false);
}

static void end_release(struct xfer *x, struct xfer_end *e) {
        struct session *s = e->s;

        e->s = NULL;
        if (s && s->xfer == x) {
                s->xfer = NULL;
                /* What the transfer took of the worker's CPU is not the
                 * idle worker's: the idle watch counts from now on
                 * (sessions/monitor.c). */
                monitor_check_leftovers(s);
                if (s->worker)
                        session_apply_limits(s);
                snapshot_session_idle(s);
        }
}

static void on_xfer_timer(void *data) {
        struct xfer *x = data;
        struct xfer_end *ends[2] = {&x->src, &x->dst};
        const char *why = NULL;
        int err = 0;

        if (!x->completing) {
                /* The deadline: a worker that did not answer is killed (its
                 * loss comes later, to a transfer that forgot it). */
                for (int i = 0; i < 2; i++) {
                        struct xfer_end *e = ends[i];

                        if (e->done)
                                continue;
                        if (e->s && e->s->worker)
                                worker_kill(e->s->worker, "its state was not moved in time");
                        if (e->s)
                                e->s->xfer = NULL;
                        e->s = NULL;
                        end_fail(e, "the state was not moved within the deadline");
                }
                maybe_complete(x);
                return;
        }
        /* The destination's failure first: it says what went wrong with
         * the state (the source's end then only saw a broken pipe). */
        if (x->dst.error)
                why = x->dst.error;
        else if (x->src.error)
                why = x->src.error;
        /* -EINVAL: the restoring worker said the state is bad; -EIO: a
         * worker died, missed the deadline, or could not write. */
        if (why)
                err = x->dst.error && x->dst.reported ? -EINVAL : -EIO;
        end_release(x, &x->src);
        end_release(x, &x->dst);
        x->done(x->data, err, why, x->dst.notes ? x->dst.notes : x->src.notes, x->src.packages);
        for (int i = 0; i < 2; i++) {
                free(ends[i]->error);
                json_decref(ends[i]->notes);
                json_decref(ends[i]->packages);
        }
        list_unlink(&x->all);
        loop_timer_free(x->timer);
        free(x);
}

static bool session_ready_for_xfer(const struct session *s) {
        const struct worker *w = s->worker;

        return s->state == SESSION_IDLE && !s->xfer && (!s->run || !s->run->sent) && w && w->fd >= 0 &&
               w->attached && !w->exited && !w->killed;
}

static int send_end(struct session *s, json_t *frame, int fd) {
        int e;

        if (!frame)
                return -ENOMEM;
        e = worker_send_fd(s->worker, frame, fd);
        json_decref(frame);
        return e;
}

int xfer_start(struct sessions *t, struct session *src, int src_fd, struct session *dst, int dst_fd, bool check,
               xfer_done_fn done, void *data) {
        struct xfer *x;
        int pipefd[2] = {-1, -1}, e;

        if ((src && !session_ready_for_xfer(src)) || (dst && !session_ready_for_xfer(dst)))
                return -EBUSY;
        x = calloc(1, sizeof(*x));
        if (!x || !(x->timer = loop_timer_new(t->loop, on_xfer_timer, x))) {
                free(x);
                return -ENOMEM;
        }
        x->t = t;
        list_init(&x->all);
        x->done = done;
        x->data = data;
        x->src = (struct xfer_end){.s = src, .session_end = src != NULL, .done = !src};
        x->dst = (struct xfer_end){.s = dst, .session_end = dst != NULL, .done = !dst};
        if (src && dst) {
                /* A fork: one worker writes, the other reads, at the pace
                 * of the slower; the daemon holds neither end. */
                if (pipe2(pipefd, O_CLOEXEC) < 0) {
                        e = -errno;
                        loop_timer_free(x->timer);
                        free(x);
                        return e;
                }
                dst_fd = pipefd[1];
                src_fd = pipefd[0];
        }
        /* The restoring end first: a failure to send it leaves the source
         * untouched. */
        if (dst)
                lift_fsize(dst);
        if (src)
                lift_fsize(src);
        if (dst && (e = send_end(dst, protocol_restore(check), src_fd)) < 0) {
                if (src)
                        session_apply_limits(src);
                session_apply_limits(dst);
                goto fail;
        }
        if (dst) {
                dst->xfer = x;
                monitor_watch_transfer(dst);
        }
        if (src && (e = send_end(src, protocol_snapshot(), dst_fd)) < 0) {
                /* The restoring worker got its descriptor: closing ours
                 * ends its stream; it answers with an error. */
                x->src.s = NULL;
                session_apply_limits(src);
                end_fail(&x->src, "the snapshot could not be sent to the worker");
        } else if (src) {
                src->xfer = x;
                monitor_watch_transfer(src);
        }
        if (pipefd[0] >= 0) {
                close(pipefd[0]);
                close(pipefd[1]);
        }
        list_append(&t->xfers, &x->all);
        loop_timer_arm(x->timer, now_ns() + XFER_TIMEOUT_MS * 1000000ULL);
        maybe_complete(x);
        return 0;
fail:
        if (pipefd[0] >= 0) {
                close(pipefd[0]);
                close(pipefd[1]);
        }
        loop_timer_free(x->timer);
        free(x);
        return e;
}

void xfer_on_frame(struct session *s, const struct worker_frame *f) {
        struct xfer *x = s->xfer;
        struct xfer_end *e = x->src.s == s ? &x->src : &x->dst;

        e->done = true;
        e->reported = true;
        /* The worker wrote its workspace outside any run: the next run's
         * before-scan must be a fresh one (sessions/workspace.h). */
        if (e == &x->dst && s->workspace)
                workspace_touch(s->workspace);
        e->notes = json_incref(f->u.state.notes);
        e->packages = json_incref(f->u.state.packages);
        if (f->u.state.error)
                end_fail(e, f->u.state.error);
        /* This end is free now: its queued run goes (the other end may
         * still be at work). */
        end_release(x, e);
        maybe_complete(x);
}

void xfer_session_lost(struct session *s, const char *why) {
        struct xfer *x = s->xfer;
        struct xfer_end *e;

        if (!x)
                return;
        e = x->src.s == s ? &x->src : &x->dst;
        s->xfer = NULL;
        e->s = NULL;
        /* A fork's completion is its copy's: the copy closed (rmdir of it
         * while the source still writes) is freed when this returns, and
         * the source's answer must not complete it (docs/security.md,
         * "Round 6", finding 1).  A copy that only lost its worker is
         * still there: the completion fails it. */
        if (s->closing && x->done == on_fork_done && x->data == s)
                x->data = NULL;
        if (!e->done)
                end_fail(e, why);
        maybe_complete(x);
}

/* ---- fork ---------------------------------------------------------------- */

static void copy_tools(struct session *from, struct session *to) {
        struct tool_entry *e;
        uint64_t after = 0;

        while ((e = tools_entry_next(from->tools, after))) {
                const struct text *def = tool_entry_text(e);
                struct tool_entry *copy;

                after = tool_entry_id(e);
                if (!def->len || tools_entry_create(to->tools, tool_entry_filename(e), &copy) < 0)
                        continue;
                tool_entry_write(copy, def->data, def->len);
        }
}

static void audit_notes(struct session *s, const char *event, json_t *notes) {
        size_t i;
        json_t *n;

        session_audit(s, json_pack("{s:s, s:O}", "event", event, "notes", notes ? notes : json_array()));
        json_array_foreach(notes, i, n) log_info("session %s: %s", s->name, json_string_value(n));
}

static void on_fork_done(void *data, int err, const char *why, json_t *notes, json_t *packages) {
        struct session *copy = data;
        char msg[1024];

        (void)packages;
        if (!copy)
                return; /* it closed during the fork (xfer_session_lost) */
        if (err < 0) {
                snprintf(msg, sizeof(msg), "the fork of %s failed: %s", copy->fork_name, why);
                session_created(copy, -EIO, msg);
                return;
        }
        json_decref(copy->restore_notes);
        copy->restore_notes = json_incref(notes);
        audit_notes(copy, "fork_restored", notes);
        session_created(copy, 0, NULL);
}

/* Start the fork waiting first for src, if both are ready. */
static void start_forks(struct session *src) {
        struct session *copy;

        list_for_each(copy, tmp, &src->fork_waiters, struct session, fork_link) {
                int e;

                if (!session_ready_for_xfer(src))
                        return;
                if (!session_ready_for_xfer(copy))
                        continue;
                list_unlink(&copy->fork_link);
                copy->fork_src = NULL;
                e = xfer_start(src->owner, src, -1, copy, -1, false, on_fork_done, copy);
                if (e < 0) {
                        char msg[256];

                        snprintf(msg, sizeof(msg), "the fork of %s could not start: %s", src->name, strerror(-e));
                        session_created(copy, e == -ENOMEM ? e : -EIO, msg);
                }
                return; /* one at a time: src is busy now */
        }
}

int sessions_fork(struct sessions *t, struct session *src, struct session **out) {
        struct session *copy;
        int e = sessions_create(t, NULL, &copy);

        if (e < 0)
                return e;
        copy->timeout_s = src->timeout_s;
        session_take_limits(copy, &src->limits);
        copy_tools(src, copy);
        copy->fork_src = src;
        snprintf(copy->fork_name, sizeof(copy->fork_name), "%s", src->name);
        list_append(&src->fork_waiters, &copy->fork_link);
        session_audit(copy, json_pack("{s:s, s:s}", "event", "fork", "from", src->name));
        *out = copy;
        return 0;
}

void snapshot_session_idle(struct session *s) {
        if (s->closing || s->xfer)
                return;
        if (s->fork_src) {
                /* A copy whose worker is ready: it waits for its original
                 * without the creation deadline (the original may be in a
                 * long run; the fork's open waits like a read of output). */
                loop_timer_arm(s->create_deadline, 0);
                start_forks(s->fork_src);
                return;
        }
        /* A saved session's state comes before anything else it does. */
        if (s->restore_fd >= 0 && session_ready_for_xfer(s)) {
                restore_saved(s);
                if (s->xfer)
                        return;
        }
        /* And a restore's settings before its first run: until 2026-12-03
         * a run queued during it was sent as the worker answered, under the
         * limits of before (a saved session's first run after a restart,
         * under the daemon's defaults: docs/security.md, "Round 10"). */
        if (restore_finishing(s))
                return;
        if (s->state == SESSION_IDLE && s->run && !s->run->sent) {
                run_send(s);
                return;
        }
        if (!list_empty(&s->state_waiters)) {
                start_state_waiter(s);
                return;
        }
        if (!list_empty(&s->fork_waiters))
                start_forks(s);
}

void snapshot_session_closing(struct session *s) {
        struct session *copy;

        xfer_session_lost(s, "the session closed");
        fail_state_waiters(s);
        forget_moving(s);
        if (s->fork_src) {
                list_unlink(&s->fork_link);
                s->fork_src = NULL;
        }
        list_for_each(copy, tmp, &s->fork_waiters, struct session, fork_link) {
                list_unlink(&copy->fork_link);
                copy->fork_src = NULL;
                /* Not now: closing copy here could free the session a
                 * caller walking the table (sessions_free) goes to next.
                 * Its creation deadline, due at once, fails it. */
                copy->fork_orphaned = true;
                loop_timer_arm(copy->create_deadline, now_ns() + 1);
        }
}

/* ---- snapshot files --------------------------------------------------------- */

struct state_wait {
        struct session *s;        /* NULL once it closed */
        int fd;
        session_state_fn fn;
        void *data;
        struct list link; /* in s->state_waiters until it starts, then in s->state_moving */
        struct list all;  /* in the table's state_all until it is answered */
        json_t *meta;     /* restore: the file's metadata */
        int ro_fd;        /* restore: the file opened afresh, read-only, for the copy */
        /* Restore: the file's size and the workspace's quota, for the check
         * of its stream on the copy's thread, which fills info. */
        off_t size;
        long long quota;
        struct snapshot_info info;
        struct loop_timer *later; /* an answer that must not come from inside the caller */
        char *head;               /* snapshot: the header and metadata the daemon wrote */
        size_t head_len;
        int err;
        char why[256];
        /* Under way: the transfer (the worker's answer) and the daemon's
         * copy between the pipe and the file end in either order; w is
         * answered once both did. */
        struct state_copy *copy;
        bool copying, answered;
        int copy_err, xfer_err;
        char copy_why[256];
        json_t *notes;
        void (*finish)(struct state_wait *w, int err, const char *why);
};

static void restore_finish(struct state_wait *w, int err, const char *why);

/* A restore whose worker is done, but not the daemon (its copy's end, its
 * settings): a run or a snapshot waits for it. */
static bool restore_finishing(const struct session *s) {
        const struct state_wait *w;

        list_for_each(w, tmp, &s->state_moving, struct state_wait, link)
                if (w->finish == restore_finish)
                        return true;
        return false;
}

bool session_moving(const struct session *s) { return s->xfer != NULL || restore_finishing(s); }

static void state_wait_free(struct state_wait *w) {
        list_unlink(&w->link);
        list_unlink(&w->all);
        if (w->ro_fd >= 0)
                close(w->ro_fd);
        json_decref(w->meta);
        json_decref(w->notes);
        loop_timer_free(w->later);
        free(w->head);
        free(w);
}

static void on_state_later(void *data) {
        struct state_wait *w = data;

        w->fn(w->data, w->err, w->why);
        state_wait_free(w);
}

/* Answer w from the loop's next turn. */
static void answer_later(struct state_wait *w, int err, const char *why) {
        w->err = err;
        snprintf(w->why, sizeof(w->why), "%s", why ? why : "");
        list_unlink(&w->link);
        loop_timer_arm(w->later, now_ns() + 1);
}

static json_t *tools_json(struct session *s) {
        json_t *o = json_object();
        struct tool_entry *e;
        uint64_t after = 0;

        while (o && (e = tools_entry_next(s->tools, after))) {
                const struct text *def = tool_entry_text(e);

                after = tool_entry_id(e);
                if (def->len)
                        json_object_set_new(o, tool_entry_filename(e), json_stringn(def->data, def->len));
        }
        return o;
}

json_t *session_settings_json(struct session *s) {
        return json_pack("{s:f, s:o, s:o}", "timeout", s->timeout_s, "limits", limits_to_json(&s->limits), "tools",
                         tools_json(s));
}

/* ---- the worker's answer and the daemon's copy ---------------------------- */

/* Both the transfer (the worker's answer, or its failure) and the daemon's
 * copy between the pipe and the file are over: w is answered.  The copy's
 * failure says why first: an EFBIG or an unreadable file is the cause, the
 * worker then only saw a broken pipe or a cut stream. */
static void maybe_finish(struct state_wait *w) {
        int err = w->xfer_err;
        const char *why = w->why;

        if (w->copying || !w->answered)
                return;
        if (w->copy_err < 0) {
                /* The check of the file's stream (check_stream()) says what
                 * is wrong with it; the copy's own failures are I/O. */
                err = w->copy_err == -EINVAL || w->copy_err == -ENOSPC ? w->copy_err : -EIO;
                why = w->copy_why;
        }
        w->finish(w, err, why);
}

static void on_copy_done(void *data, int err, const char *why) {
        struct state_wait *w = data;

        w->copying = false;
        w->copy = NULL;
        w->copy_err = err;
        snprintf(w->copy_why, sizeof(w->copy_why), "%s", why ? why : "");
        maybe_finish(w);
}

static void on_xfer_answer(void *data, int err, const char *why, json_t *notes, json_t *packages) {
        struct state_wait *w = data;

        (void)packages;
        w->answered = true;
        w->xfer_err = err;
        snprintf(w->why, sizeof(w->why), "%s", why ? why : "");
        w->notes = json_incref(notes);
        /* The worker is done with its end (or gone): the copy takes what is
         * in the pipe and ends, and the daemon's end is closed with it. */
        if (w->copying)
                state_copy_stop(w->copy);
        maybe_finish(w);
}

/* Hand s's worker one end of a new pipe for w's transfer, and copy between
 * the other end and file_fd (from off: limit bytes out of it, or at most
 * limit into it) on a thread.  The worker never holds a descriptor of the
 * daemon's file (docs/security.md, "Round 4", finding 7).  0, or -errno
 * (nothing started). */
static int state_move_start(struct state_wait *w, bool to_file, int file_fd, off_t off, long long limit, bool check,
                            state_copy_check_fn check_file) {
        struct session *s = w->s;
        int p[2], worker_end, e;

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        worker_end = to_file ? p[1] : p[0];
        e = to_file ? xfer_start(s->owner, s, -1, NULL, worker_end, false, on_xfer_answer, w)
                    : xfer_start(s->owner, NULL, worker_end, s, -1, check, on_xfer_answer, w);
        /* Sent (the descriptor went with the frame), or not: either way
         * the daemon keeps only its own end. */
        close(worker_end);
        if (e < 0) {
                close(to_file ? p[0] : p[1]);
                return e;
        }
        list_unlink(&w->link);
        list_append(&s->state_moving, &w->link);
        w->copying = true;
        e = state_copy_start(s->owner->loop, to_file ? p[0] : p[1], file_fd, off, limit, to_file, check_file, w,
                             on_copy_done, w, &w->copy);
        if (e < 0) {
                /* Its end is closed: the worker sees a broken pipe or a cut
                 * stream and answers; w is answered then. */
                w->copying = false;
                w->copy_err = e;
                snprintf(w->copy_why, sizeof(w->copy_why), "the daemon's copy could not start: %s", strerror(-e));
        }
        return 0;
}

/* The file's header and metadata are the daemon's (they name the session's
 * tools: host commands) and only the daemon ever wrote the file: a memfd is
 * sealed now — no write, no size change, through any descriptor, for the
 * reads of sessions/N/snapshot — and the header is checked still, though
 * no worker held a descriptor of the file (a saved session's settings come
 * from the daemon's own file anyway: sessions/persist.c).  0, or -EIO with
 * why. */
static int snapshot_head_intact(struct state_wait *w, const char **why) {
        char *now = malloc(w->head_len ? w->head_len : 1);
        int e = 0;

        if (fcntl(w->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0 &&
            errno != EINVAL) {
                /* EBUSY: a writable shared mapping of it is still there. */
                *why = "the snapshot could not be sealed (a writable mapping of it is left)";
                e = -EIO;
        } else if (!now || pread(w->fd, now, w->head_len, 0) != (ssize_t)w->head_len ||
                   memcmp(now, w->head, w->head_len) != 0) {
                *why = "the snapshot's header or metadata is not the one the daemon wrote";
                e = -EIO;
        }
        free(now);
        return e;
}

static void snapshot_finish(struct state_wait *w, int err, const char *why) {
        if (err == 0 && (err = snapshot_head_intact(w, &why)) < 0 && w->s)
                log_warn("session %s: %s; snapshot refused", w->s->name, why);
        else if (err < 0 && w->s)
                log_info("session %s: snapshot failed: %s", w->s->name, why);
        if (err == 0 && w->s)
                audit_notes(w->s, "snapshot", w->notes);
        w->fn(w->data, err, why);
        state_wait_free(w);
}

/* A snapshot that could not start: logged as snapshot_finish() logs. */
static void snapshot_fail_later(struct state_wait *w, int err, const char *why) {
        log_info("session %s: snapshot failed: %s", w->s->name, why);
        answer_later(w, err, why);
}

static void start_snapshot(struct state_wait *w) {
        struct session *s = w->s;
        char *head;
        size_t len;
        json_t *meta;
        int e;

        list_unlink(&w->link);
        meta = json_pack("{s:s, s:i, s:s, s:I, s:f, s:o, s:o}", "format", "securerfs-snapshot", "version",
                         SNAPSHOT_VERSION, "session", s->name, "created", (json_int_t)time(NULL), "timeout",
                         s->timeout_s, "limits", limits_to_json(&s->limits), "tools", tools_json(s));
        if (!meta || snapshot_file_header(meta, &head, &len) < 0) {
                snapshot_fail_later(w, -ENOMEM, "out of memory");
                return;
        }
        /* The daemon's copy writes the state right after the header. */
        if (ftruncate(w->fd, 0) < 0 || pwrite(w->fd, head, len, 0) != (ssize_t)len) {
                free(head);
                snapshot_fail_later(w, -EIO, strerror(errno));
                return;
        }
        /* Kept, to check the file against when the worker is done. */
        free(w->head);
        w->head = head;
        w->head_len = len;
        w->finish = snapshot_finish;
        e = state_move_start(w, true, w->fd, (off_t)len, xfer_state_bound(s), false, NULL);
        if (e < 0)
                snapshot_fail_later(w, e, strerror(-e));
}

static int check_settings(const json_t *meta, const struct limits *base, struct limits *l, char *why, size_t n) {
        json_t *v = json_object_get(meta, "timeout"), *tools = json_object_get(meta, "tools");
        const char *key;
        json_t *d;

        /* json_number_value() is 0 for what is not a number: until
         * 2026-12-03 a "timeout" of "x" read as no deadline. */
        if (v && (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e7 ||
                  !isfinite(json_number_value(v)))) {
                snprintf(why, n, "its timeout is not a number of seconds from 0 to 10000000");
                return -EINVAL;
        }
        if (tools && !json_is_object(tools)) {
                snprintf(why, n, "its tools are not an object of tool files");
                return -EINVAL;
        }
        *l = *base;
        if ((v = json_object_get(meta, "limits"))) {
                char *text = json_dumps(v, JSON_COMPACT);
                char err[256];
                int e = text ? limits_parse_json(text, strlen(text), base, l, err, sizeof(err)) : -ENOMEM;

                free(text);
                if (e < 0) {
                        snprintf(why, n, "its limits: %s", e == -ENOMEM ? "out of memory" : err);
                        return e == -ENOMEM ? e : -EINVAL;
                }
        }
        json_object_foreach((json_t *)tools, key, d) {
                const char *bad;
                char *name = json_is_string(d) ? tool_filename_to_name(key, &bad) : NULL;
                struct tool_def *def = NULL;
                char err[256];
                int e;

                if (!json_is_string(d)) {
                        snprintf(why, n, "its tool %.100s is not a string", key);
                        return -EINVAL;
                }
                e = name ? tool_def_parse(name, json_string_value(d), json_string_length(d), "/", 0, &def, err,
                                              sizeof(err))
                             : -EINVAL;

                tool_def_unref(def);
                free(name);
                if (e < 0) {
                        snprintf(why, n, "its tool %.100s: %s", key, name ? err : bad);
                        return e == -ENOMEM ? e : -EINVAL;
                }
        }
        return 0;
}

/* The restored session takes the file's timeout, limits and tools. */
static void apply_settings(struct session *s, const json_t *meta) {
        json_t *v = json_object_get(meta, "timeout"), *tools = json_object_get(meta, "tools"), *d;
        struct limits l;
        struct tool_entry *e;
        const char *key;
        char why[64];

        if (json_is_number(v))
                (void)session_set_timeout(s, json_number_value(v)); /* checked: it refuses what is out of bounds */
        if (check_settings(meta, &s->limits, &l, why, sizeof(why)) == 0)
                session_take_limits(s, &l);
        while ((e = tools_entry_next(s->tools, 0))) {
                char name[300];

                snprintf(name, sizeof(name), "%s", tool_entry_filename(e));
                if (tools_entry_unlink(s->tools, name) < 0)
                        break;
        }
        json_object_foreach((json_t *)tools, key, d) {
                if (tools_entry_create(s->tools, key, &e) == 0)
                        tool_entry_write(e, json_string_value(d), json_string_length(d));
        }
}

/* check_settings()'s why without its "its ", to say "its saved ...". */
static const char *after_its(const char *why) { return strncmp(why, "its ", 4) == 0 ? why + 4 : why; }

/* A saved session's NAME.settings, each of its members checked alone: one
 * that does not check out (the file is the daemon's, but a person or a
 * disk can spoil it) is dropped, so that the session takes the daemon's
 * default for it and keeps the others and its state, and the log and the
 * session's next result say which.  Until 2026-12-03 one bad member threw
 * the whole saved state away, and the next checkpoint wrote over its file
 * (docs/security.md, "Round 10", finding 9).  NULL: no file, or not an
 * object (persist_load_settings logs it). */
static json_t *load_saved_settings(struct session *s) {
        json_t *settings = persist_load_settings(s), *tools, *d;
        static const char *const members[] = {"timeout", "limits", "tools"};
        struct limits l;
        const char *key;
        void *tmp;

        if (!settings)
                return NULL;
        for (size_t i = 0; i < ARRAY_SIZE(members); i++) {
                json_t *one = json_object(), *v = json_object_get(settings, members[i]);
                char why[512], what[700];

                if (!one || !v || json_object_set(one, members[i], v) < 0 ||
                    check_settings(one, &s->limits, &l, why, sizeof(why)) != -EINVAL) {
                        json_decref(one);
                        continue;
                }
                json_decref(one);
                /* A bad tool costs that tool only. */
                tools = json_object_get(settings, "tools");
                if (i == 2 && json_is_object(tools)) {
                        json_object_foreach_safe(tools, tmp, key, d) {
                                json_t *alone = json_pack("{s:{s:O}}", "tools", key, d);

                                if (alone && check_settings(alone, &s->limits, &l, why, sizeof(why)) == -EINVAL) {
                                        snprintf(what, sizeof(what), "its saved %s; that tool was not restored",
                                                 after_its(why));
                                        log_warn("session %s: %s", s->name, what);
                                        session_notice(s, what);
                                        json_object_del(tools, key);
                                }
                                json_decref(alone);
                        }
                        continue;
                }
                snprintf(what, sizeof(what), "its saved %s; the daemon's default applies", after_its(why));
                log_warn("session %s: %s", s->name, what);
                session_notice(s, what);
                json_object_del(settings, members[i]);
        }
        return settings;
}

void snapshot_take_saved_settings(struct session *s) {
        json_t *settings = load_saved_settings(s);

        if (settings)
                apply_settings(s, settings);
        json_decref(settings);
}

static void restore_finish(struct state_wait *w, int err, const char *why) {
        struct session *s = w->s;
        json_t *notes = w->notes;

        /* A saved session's settings are the daemon's own file's: they hold
         * whatever became of its state.  Until 2026-12-03 a restore that
         * failed left the defaults, and the session's code could make its
         * own fail (a serialize() of its making in the checkpoint): its
         * limits, timeout and tools were gone after a restart, and the next
         * checkpoint wrote the defaults over them (docs/security.md, "Round
         * 10"). */
        if (s && (err == 0 || w->fn == on_saved_restored))
                apply_settings(s, w->meta);
        if (err == 0 && s) {
                json_decref(s->restore_notes);
                s->restore_notes = json_incref(notes);
                audit_notes(s, "restored", notes);
                if (w->fn != on_saved_restored)
                        persist_mark_dirty(s);
        } else if (s) {
                session_audit(s, json_pack("{s:s, s:s}", "event", "restore_failed", "reason", why ? why : ""));
                log_info("session %s: snapshot not restored: %s", s->name, why ? why : "");
        }
        /* The worker's own word on the state (R could not read it, it
         * crashed the checking child): not a valid snapshot.  Its death:
         * EIO.  A saved session's own restore has nobody to tell once it
         * closed (its data is the session). */
        if (s || w->fn != on_saved_restored)
                w->fn(w->data, err, why);
        state_wait_free(w);
        /* What waited for the restore goes now (snapshot_session_idle). */
        if (s && !s->closing && s->worker && s->state == SESSION_IDLE)
                snapshot_session_idle(s);
}

static struct state_wait *state_wait_new(struct session *s, int fd, session_state_fn fn, void *data) {
        struct state_wait *w = calloc(1, sizeof(*w));

        if (!w || !(w->later = loop_timer_new(s->owner->loop, on_state_later, w))) {
                free(w);
                return NULL;
        }
        w->s = s;
        w->fd = fd;
        w->fn = fn;
        w->data = data;
        w->ro_fd = -1;
        list_init(&w->link);
        list_append(&s->owner->state_all, &w->all);
        return w;
}

int session_snapshot_to(struct session *s, int fd, session_state_fn fn, void *data) {
        struct state_wait *w;

        if (s->state == SESSION_DEAD)
                return -EIO;
        w = state_wait_new(s, fd, fn, data);
        if (!w)
                return -ENOMEM;
        list_append(&s->state_waiters, &w->link);
        snapshot_session_idle(s);
        return 0;
}

static int restore_start(struct session *s, int fd, off_t size, json_t *settings, session_state_fn fn, void *data,
                         char *why, size_t n);

int session_restore_from(struct session *s, int fd, off_t size, session_state_fn fn, void *data, char *why,
                         size_t n) {
        if (s->state == SESSION_DEAD) {
                snprintf(why, n, "the session is dead");
                return -EIO;
        }
        if (s->run || s->xfer || s->fork_src || !list_empty(&s->state_waiters) || s->state != SESSION_IDLE ||
            s->restore_fd >= 0) {
                snprintf(why, n, "the session is running or its state is being moved");
                return -EBUSY;
        }
        return restore_start(s, fd, size, NULL, fn, data, why, n);
}

void snapshot_saved_lost(struct session *s, const char *how, const char *why, bool audit) {
        char kept[96], what[900];
        int e = persist_keep_unrestored(s, kept, sizeof(kept));

        if (e < 0 && e != -ENOENT)
                log_error("session %s: its unrestored saved state could not be kept as %s: %s", s->name, kept,
                          strerror(-e));
        log_error("session %s: its saved state %s (%s); it starts empty%s%s", s->name, how, why,
                  e == 0 ? "; the file is kept in state_dir as " : "", e == 0 ? kept : "");
        if (audit)
                session_audit(s, json_pack("{s:s, s:s}", "event", "restore_failed", "reason", why));
        snprintf(what, sizeof(what), "its saved state %s (%.600s): it started empty%s%s", how, why,
                 e == 0 ? "; the file is kept in state_dir as " : "", e == 0 ? kept : "");
        session_notice(s, what);
}

/* A saved session's file, restored into its first worker
 * (sessions/persist.h): a failure leaves it empty, and says why
 * (restore_finish() wrote the log event). */
static void on_saved_restored(void *data, int err, const char *why) {
        struct session *s = data;

        if (err < 0)
                snapshot_saved_lost(s, "could not be restored", why ? why : strerror(-err), false);
}

static void restore_saved(struct session *s) {
        char why[512];
        int fd = s->restore_fd, e;
        /* The settings are the daemon's own file's, never the snapshot's:
         * the worker that wrote the snapshot held its descriptor, and its
         * metadata names host commands (docs/security.md, "Round 4"). */
        json_t *settings = load_saved_settings(s);

        if (!settings)
                settings = json_object(); /* none: the daemon's defaults, no tools */
        s->restore_fd = -1;
        e = settings ? restore_start(s, fd, s->restore_size, settings, on_saved_restored, s, why, sizeof(why))
                     : -ENOMEM;
        if (!settings)
                snprintf(why, sizeof(why), "out of memory");
        close(fd);
        if (e < 0 && settings)
                apply_settings(s, settings);
        if (e < 0)
                snapshot_saved_lost(s, "is not restored", why, true);
        json_decref(settings);
}

/* On the copy's thread (sessions/state_copy.h): the snapshot's state
 * stream checked (sessions/snapshot_file.h) before the worker is sent a
 * byte of it.  Until 2026-12-03 this ran on the loop, which 64,000 entries
 * held for 1.2 s and a forged 240,000 for 5.1 s (docs/security.md, "Round
 * 9", finding 1).  It reads w's size, quota and info, which the loop does
 * not touch until the copy's end, and writes info's counts. */
static int check_stream(void *arg, int fd, char *why, size_t n) {
        struct state_wait *w = arg;

        return snapshot_file_stream(fd, w->size, w->quota, &w->info, why, n);
}

/* settings: NULL, or the timeout, limits and tools to take instead of the
 * file's (a saved session's, from the daemon's own file). */
static int restore_start(struct session *s, int fd, off_t size, json_t *settings, session_state_fn fn, void *data,
                         char *why, size_t n) {
        struct snapshot_info info;
        struct state_wait *w;
        struct limits l;
        int e;

        /* The header and metadata here (at most 1 MiB); the stream, whose
         * check grows with its entries, on the copy's thread before the
         * worker gets a byte of it (check_stream()). */
        e = snapshot_file_head(fd, size, &info, why, n);
        if (e < 0)
                return e;
        if (settings) {
                json_object_del(info.meta, "timeout");
                json_object_del(info.meta, "limits");
                json_object_del(info.meta, "tools");
                if (json_object_update(info.meta, settings) < 0) {
                        json_decref(info.meta);
                        snprintf(why, n, "out of memory");
                        return -ENOMEM;
                }
        }
        if ((e = check_settings(info.meta, &s->limits, &l, why, n)) < 0) {
                json_decref(info.meta);
                return e;
        }
        w = state_wait_new(s, fd, fn, data);
        if (!w) {
                json_decref(info.meta);
                return -ENOMEM;
        }
        w->meta = info.meta;
        w->size = size;
        w->quota = s->owner->opt->files_max_bytes;
        w->info = info;
        w->info.meta = NULL; /* w->meta holds it */
        /* The daemon's copy reads a read-only open file of its own, not
         * the caller's descriptor (which may close before the copy ends);
         * the worker gets a pipe (docs/security.md, "Round 4", finding 7). */
        {
                char path[64];

                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                w->ro_fd = open(path, O_RDONLY | O_CLOEXEC);
                if (w->ro_fd < 0) {
                        e = -errno;
                        snprintf(why, n, "the snapshot cannot be reopened: %s", strerror(-e));
                        state_wait_free(w);
                        return e;
                }
        }
        w->finish = restore_finish;
        e = state_move_start(w, false, w->ro_fd, info.stream_off, (long long)(size - info.stream_off), true,
                             check_stream);
        if (e < 0) {
                snprintf(why, n, "%s", strerror(-e));
                state_wait_free(w);
        }
        return e;
}

static void start_state_waiter(struct session *s) {
        struct state_wait *w = list_first(&s->state_waiters, struct state_wait, link);

        if (w && session_ready_for_xfer(s))
                start_snapshot(w);
}

static void fail_state_waiters(struct session *s) {
        struct state_wait *w;

        list_for_each(w, tmp, &s->state_waiters, struct state_wait, link) {
                w->s = NULL;
                answer_later(w, -ENOENT, "the session closed");
        }
}

/* s closes: its snapshots and restores under way end later (their copy's
 * thread, their answer), without s. */
static void forget_moving(struct session *s) {
        struct state_wait *w;

        list_for_each(w, tmp, &s->state_moving, struct state_wait, link) {
                list_unlink(&w->link);
                w->s = NULL;
        }
}

void snapshot_sessions_stop(struct sessions *t) {
        struct xfer *x;
        struct state_wait *w;

        /* Each session end failed when its session closed; a descriptor end
         * is done from the start.  Completed now, not on the loop's next
         * turn: the loop does not turn again. */
        list_for_each(x, tmp, &t->xfers, struct xfer, all) {
                if (!x->src.done)
                        end_fail(&x->src, "the daemon stopped");
                if (!x->dst.done)
                        end_fail(&x->dst, "the daemon stopped");
                x->completing = true;
                on_xfer_timer(x);
        }
        /* Every one is answered now (on_xfer_answer stopped its copy); the
         * copies end (their threads joined), and w with them; what is left
         * waited for an answer on the next turn (answer_later). */
        list_for_each(w, tmp, &t->state_all, struct state_wait, all) {
                if (w->copying)
                        state_copy_end_now(w->copy);
                else if (!w->err)
                        answer_later(w, -ENOENT, "the daemon stopped");
        }
        list_for_each(w, tmp, &t->state_all, struct state_wait, all)
                on_state_later(w);
}
