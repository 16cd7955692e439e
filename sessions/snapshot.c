/* Transfers of a session's state and forks (sessions/snapshot.h). */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "run.h"
#include "session_private.h"
#include "tools.h"
#include "worker.h"

struct xfer_end {
        struct session *s; /* NULL: a descriptor, or a session that went away */
        bool session_end;  /* it was a session when the transfer started */
        bool done;
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
};

bool xfer_busy(const struct session *s) { return s->xfer != NULL; }
bool session_moving(const struct session *s) { return s->xfer != NULL; }

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

static void end_release(struct xfer *x, struct xfer_end *e) {
        struct session *s = e->s;

        e->s = NULL;
        if (s && s->xfer == x) {
                s->xfer = NULL;
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
        if (why)
                err = -EIO;
        end_release(x, &x->src);
        end_release(x, &x->dst);
        x->done(x->data, err, why, x->dst.notes ? x->dst.notes : x->src.notes, x->src.packages);
        for (int i = 0; i < 2; i++) {
                free(ends[i]->error);
                json_decref(ends[i]->notes);
                json_decref(ends[i]->packages);
        }
        loop_timer_free(x->timer);
        free(x);
}

static bool session_ready_for_xfer(const struct session *s) {
        const struct worker *w = s->worker;

        return s->state == SESSION_IDLE && !s->xfer && (!s->run || !s->run->sent) && w && w->fd >= 0 &&
               w->attached && !w->exited;
}

static int send_end(struct session *s, json_t *frame, int fd) {
        int e;

        if (!frame)
                return -ENOMEM;
        e = worker_send_fd(s->worker, frame, fd);
        json_decref(frame);
        return e;
}

int xfer_start(struct sessions *t, struct session *src, int src_fd, struct session *dst, int dst_fd,
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
        if (dst && (e = send_end(dst, protocol_restore(), src_fd)) < 0)
                goto fail;
        if (dst)
                dst->xfer = x;
        if (src && (e = send_end(src, protocol_snapshot(), dst_fd)) < 0) {
                /* The restoring worker got its descriptor: closing ours
                 * ends its stream; it answers with an error. */
                x->src.s = NULL;
                end_fail(&x->src, "the snapshot could not be sent to the worker");
        } else if (src) {
                src->xfer = x;
        }
        if (pipefd[0] >= 0) {
                close(pipefd[0]);
                close(pipefd[1]);
        }
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
        if (err < 0) {
                snprintf(msg, sizeof(msg), "the fork of %s failed: %s", copy->fork_name, why);
                session_created(copy, err, msg);
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
                e = xfer_start(src->owner, src, -1, copy, -1, on_fork_done, copy);
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
        session_set_limits(copy, &src->limits);
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
        if (s->state == SESSION_IDLE && s->run && !s->run->sent) {
                run_send(s);
                return;
        }
        if (!list_empty(&s->fork_waiters))
                start_forks(s);
}

void snapshot_session_closing(struct session *s) {
        struct session *copy;

        xfer_session_lost(s, "the session closed");
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
