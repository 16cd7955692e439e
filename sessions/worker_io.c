/* A worker's socket (sessions/worker.h): frames out through a queue that the
 * loop drains, frames in within a budget per wake-up, each checked against
 * the protocol's table (sessions/protocol.h) and then handed to its owner. */
#include "worker.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "monitor.h"
#include "protocol.h"
#include "run.h"
#include "session_private.h"
#include "snapshot.h"
#include "utf8.h"

/* What the daemon takes from one worker per wake-up of its socket: after
 * this many frames, or once this many bytes were read, it goes back to its
 * loop (timers such as the run's deadline, FUSE requests, other sessions)
 * and carries on at the next iteration.  epoll is level-triggered here, so
 * bytes still in the socket wake it again; complete frames already in our
 * buffer are picked up by the worker's resume timer. */
#define READ_BUDGET_FRAMES 16u
#define READ_BUDGET_BYTES (256u << 10)
/* Bytes queued to a worker and not yet taken by it.  During a run the
 * daemon only sends what the worker asked for (a tool's reply, at most
 * TOOL_IO_MAX plus a little) and interrupts, so a worker past this has
 * stopped reading its replies: it is killed. */
#define OUT_QUEUE_MAX (8u << 20)
/* What is kept of a fatal frame's reason. */
#define FATAL_KEPT 1000u
/* A worker's share of the loop: at most WORKER_SLICE_BUDGET_NS of loop time
 * (reading, parsing and handling its frames) in each WORKER_SLICE_NS; past
 * it the daemon stops reading its socket until the slice ends.  A worker
 * that sends the dearest frames it may (common/frame.h's bounds) then slows
 * itself (its socket fills, its writes block), not the loop: the other
 * sessions, FUSE and the timers keep four fifths of it. */
#define WORKER_SLICE_NS (50ull * 1000 * 1000)
#define WORKER_SLICE_BUDGET_NS (10ull * 1000 * 1000)
#define WORKER_PAUSE_MAX_NS (500ull * 1000 * 1000)
/* A worker whose every read in its slice took at most this long is paused
 * only while the rest of the loop wants it: it is read on again as soon as
 * the loop has nothing else to do (loop_timer_arm_idle).  One session's
 * runs back to back spend the share too (a result, its result.json, the
 * reply: 40-80 µs a run of 150-200 on one CPU), and a pause that waits out
 * the slice with nothing else to serve idled the CPU: 5-15 ms every 50 ms.
 * Whoever comes meanwhile waits at most one such read (1 ms), as before
 * at most one read of the worker's budget; a worker with a dearer read
 * waits out its pause whatever the loop does. */
#define WORKER_CHEAP_READ_NS (1000ull * 1000)
/* The workers with dear reads, all together, get at most this much of each
 * WORKER_SLICE_NS; past it, each of them is paused until that slice ends,
 * whatever the loop does.  A worker is dear from a read over
 * WORKER_CHEAP_READ_NS until a slice after the pause that read earns it
 * (worker_share_pause()).  Each one's share alone let six dear floods take
 * more than the whole loop, and a witness's round trip, which waits for the
 * loop three times, took 100-190 ms.  A worker alone is never held back by
 * it (its own share is half of it, and a read that spends it alone earns a
 * pause longer than the slice); one whose reads are cheap (a run's result,
 * its output) never waits for it. */
#define WORKERS_DEAR_BUDGET_NS (20ull * 1000 * 1000)
/* How long a worker stays dear after a dear read, and what a dear read may
 * cost of the dear budget.  Until 2026-12-03 a worker was dear for a slice
 * after its pause only (about 160 ms after an 18 ms read), and a dear read
 * was admitted while the budget was not yet spent, whatever it would cost:
 * twelve sessions sending the dearest tool calls the protocol admits (1 MiB
 * of 32,760 values, 18 ms each to parse and handle) came back each after
 * its dear status had expired, were never held to the budget, and took the
 * whole loop (a witness's 1+1: 365 ms p50; docs/security.md, "Round 10").
 * Now a dear worker stays dear for a second after each dear read, and is
 * read only when what its last dear read took still fits in the slice's
 * budget (or nothing of it was used yet: one read per slice always goes). */
#define WORKER_DEAR_HOLD_NS (1000ull * 1000 * 1000)
/* A worker is busy once its reads took WORKER_CHEAP_READ_NS of its slice,
 * and for a slice after that (a flood stays busy across its pauses);
 * the busy ones together read for at most about that much in each turn of
 * the loop (one more read may start below it), the others wait for a later
 * turn, or for the loop to have nothing else to do.  Their cheap reads
 * (16 small frames each, under a millisecond) were bounded each by its
 * share only: twelve sessions sending 2 KiB tool calls as fast as they
 * could made every turn of the loop read each of them (12 ms), and a
 * witness's 1+1, which waits for three turns, took 41 ms p50
 * (docs/security.md, "Round 10"). */
#define WORKERS_TURN_BUSY_NS WORKER_CHEAP_READ_NS
/* After a frame this large, the heap is trimmed: jansson's nodes for it
 * were freed, but glibc keeps freed memory (and after a large mmap'ed block
 * is freed, raises its mmap threshold, so the next ones come from the heap). */
#define TRIM_AFTER_BYTES (1u << 20)

static void worker_on_io(int fd, uint32_t events, void *data);

/* What the worker's socket is watched for.  While its slice is spent: not
 * EPOLLIN, and EPOLLONESHOT, because epoll reports EPOLLHUP whatever was
 * asked, and a worker that exits while paused would wake the loop for
 * nothing at every iteration. */
static uint32_t worker_events(const struct worker *w) {
        return (w->read_paused ? EPOLLONESHOT : EPOLLIN) | (w->watching_out ? EPOLLOUT : 0);
}

/* The frame reader's look at a frame before it is parsed: its type allowed
 * in the worker's phase, its bounds from the protocol's table. */
static int worker_admit(void *data, const char *type, size_t type_len, struct frame_bounds *b);

int worker_io_start(struct worker *w) {
        frame_reader_admit(&w->rd, worker_admit, w);
        return loop_add_fd(w->owner->loop, w->fd, EPOLLIN, worker_on_io, w);
}

void worker_close_fd(struct worker *w) {
        if (w->fd < 0)
                return;
        loop_del_fd(w->owner->loop, w->fd);
        close(w->fd);
        w->fd = -1;
}

void worker_protocol_violation(struct worker *w, const char *what) {
        struct sessions *t = w->owner;
        char reason[256];

        t->stats.protocol_violations++;
        snprintf(reason, sizeof(reason), "the worker broke the protocol (%s)", what);
        log_warn("session %s: %s; killing it", w->session ? w->session->name : "(pool)", reason);
        /* Between runs nobody else says it (a run's result does, and a
         * killer of the monitor's says its own): the session's next
         * result and its log.  Until 2026-12-03 its state went without a
         * word (docs/security.md, "Round 10", finding 10). */
        if (w->session && w->attached && !(w->session->run && w->session->run->sent)) {
                char told[384];

                snprintf(told, sizeof(told), "%s between runs; the worker was replaced and the session's state was lost",
                         reason);
                session_audit(w->session, json_pack("{s:s, s:s}", "event", "worker_replaced", "reason", reason));
                session_notice(w->session, told);
        }
        worker_close_fd(w);
        worker_kill(w, reason);
}

/* ---- out ------------------------------------------------------------------ */

static int worker_flush_out(struct worker *w) {
        while (w->out_off < w->out.len) {
                ssize_t n = send(w->fd, w->out.data + w->out_off, w->out.len - w->out_off,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                /* Drop what was sent, so that a worker that
                                 * reads slowly while we keep adding does not
                                 * make the buffer grow past what is queued. */
                                if (w->out_off > (64u << 10) && w->out_off > w->out.len / 2) {
                                        text_consume(&w->out, w->out_off);
                                        w->out_off = 0;
                                }
                                if (w->watching_out)
                                        return 0;
                                w->watching_out = true;
                                return loop_mod_fd(w->owner->loop, w->fd, worker_events(w));
                        }
                        return -errno;
                }
                w->out_off += (size_t)n;
        }
        text_clear(&w->out);
        w->out_off = 0;
        /* An epoll_ctl() only when the watch changes: a reply per tool call
         * must not cost two system calls. */
        if (!w->watching_out)
                return 0;
        w->watching_out = false;
        return loop_mod_fd(w->owner->loop, w->fd, worker_events(w));
}

int worker_send(struct worker *w, const json_t *msg) {
        struct session *s = w->session;
        int e;

        if (w->fd < 0)
                return -EPIPE;
        e = frame_append(msg, &w->out);
        if (e < 0)
                return e;
        e = worker_flush_out(w);
        /* During a run we only send what the worker asked for: one that
         * lets this pile up has stopped reading its replies (docs/protocol.md). */
        if (e == 0 && w->out.len - w->out_off > OUT_QUEUE_MAX && s && s->run && s->run->sent) {
                worker_protocol_violation(w, "it stopped reading its replies: over 8 MiB queued");
                return -ENOBUFS;
        }
        return e;
}

int worker_send_fd(struct worker *w, const json_t *msg, int fd) {
        struct text frame = {0};
        union {
                struct cmsghdr align;
                char space[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                            .msg_controllen = sizeof(control.space)};
        struct cmsghdr *c;
        ssize_t n;
        int e;

        if (w->fd < 0 || w->out.len > 0)
                return -EPIPE;
        e = frame_append(msg, &frame);
        if (e < 0)
                return e;
        memset(&control, 0, sizeof(control));
        iov = (struct iovec){.iov_base = frame.data, .iov_len = frame.len};
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        do
                n = sendmsg(w->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                e = -errno;
        else if ((size_t)n < frame.len) /* the descriptor went with the first byte */
                e = text_append(&w->out, frame.data + n, frame.len - (size_t)n) < 0 ? -ENOMEM : worker_flush_out(w);
        text_free(&frame);
        return e;
}

void worker_interrupt(struct worker *w, uint64_t seq) {
        _cleanup_json_ json_t *m = protocol_interrupt(seq);

        if (m)
                worker_send(w, m);
        if (w->pid > 0 && !w->exited)
                kill(w->pid, SIGINT);
}

/* ---- in ------------------------------------------------------------------- */

/* Where the worker is, for the protocol's table. */
static enum worker_phase worker_phase(const struct worker *w) {
        const struct session *s = w->session;

        if (!w->got_ready)
                return PHASE_STARTING;
        if (w->state != WORKER_READY || !s || w->ws_token)
                return PHASE_WAITING;
        if (!w->attached)
                return PHASE_ATTACHING;
        if (xfer_phase(s) != PHASE_COUNT)
                return xfer_phase(s);
        /* A run whose result waits for its after-scan is over for the
         * worker: it is idle, and a frame of a run is a violation. */
        return s->run && s->run->sent && !s->run->ending ? PHASE_RUNNING : PHASE_IDLE;
}

static int worker_admit(void *data, const char *type, size_t type_len, struct frame_bounds *b) {
        struct worker *w = data;
        const char *why;
        int e = protocol_admit_worker_frame(type, type_len, worker_phase(w), b, &why);

        if (e < 0)
                w->refused_why = why;
        return e;
}

/* One frame: checked against the table, then handed to what it concerns.
 * The check is the whole of what each case relies on (the reason each is
 * safe to accept is in the table). */
static void worker_handle_frame(struct worker *w, const json_t *m) {
        struct session *s = w->session;
        struct protocol_context ctx = {.phase = worker_phase(w)};
        struct worker_frame f;
        const char *why;

        if (ctx.phase == PHASE_RUNNING) {
                ctx.seq = s->run->seq;
                ctx.last_call_id = s->run->last_call_id;
        }
        if (protocol_check_worker_frame(m, &ctx, &f, &why) < 0) {
                worker_protocol_violation(w, why);
                return;
        }
        switch (f.type) {
        case MSG_READY: worker_on_ready(w, f.u.ready.reserved_bytes); break;
        case MSG_ATTACHED:
                w->attached = true;
                monitor_worker_attached(w);
                loop_timer_arm(w->start_timer, 0);
                session_worker_attached(s);
                break;
        case MSG_FATAL: {
                size_t len;
                /* It exits; its reaping reports the reason. */
                free(w->fatal);
                w->fatal = utf8_clean_dup(f.u.fatal.error, f.u.fatal.len, FATAL_KEPT, NULL, &len);
                break;
        }
        case MSG_CONSOLE:
                if (run_on_console(s, f.u.console.text, f.u.console.len) < 0)
                        worker_protocol_violation(w, "console flood");
                break;
        case MSG_TOOL_CALL:
                /* The arguments' own text, when the frame is compact (the
                 * worker's are): not dumped again. */
                if (!w->rd.last_text || frame_member_text(w->rd.last_text, w->rd.last_payload, "args",
                                                          &f.u.tool_call.args_text, &f.u.tool_call.args_len) < 0)
                        f.u.tool_call.args_text = NULL;
                run_on_tool_call(s, &f);
                break;
        case MSG_RESULT: run_on_result(s, &f); break;
        case MSG_SNAPSHOT_DONE:
        case MSG_RESTORED: xfer_on_frame(s, &f); break;
        case MSG_WORKER_COUNT: break;
        }
}

/* Read and handle the frames available, within the per-wake-up budget
 * (READ_BUDGET_*) unless all is true: a worker that writes as fast as we
 * read must not keep the loop from its timers and other file descriptors.
 * all is for a worker that is gone, whose last frames are in the socket
 * (bounded by its buffer, as nobody writes any more). */
static void worker_read_frames(struct worker *w, bool all);

/* Stop reading w until due, or (idle) until the loop has nothing else to
 * do (the resume timer reads on). */
static void worker_pause(struct worker *w, uint64_t due, bool idle) {
        w->read_paused = true;
        loop_mod_fd(w->owner->loop, w->fd, worker_events(w));
        w->resume_armed = true;
        if (idle)
                loop_timer_arm_idle(w->resume, due);
        else
                loop_timer_arm(w->resume, due);
}

/* How long a worker that used this much of its slice is not read: what it
 * used is its budget's part of the slice, up to WORKER_PAUSE_MAX_NS. */
static uint64_t worker_share_pause(uint64_t used) {
        return MIN(used * (WORKER_SLICE_NS / WORKER_SLICE_BUDGET_NS), WORKER_PAUSE_MAX_NS);
}

/* worker_read_frames within the worker's share of the loop, and the dear
 * workers' (unless all). */
static void worker_read(struct worker *w, bool all) {
        struct sessions *t = w->owner;
        uint64_t start = now_ns(), pause, used;
        bool cheap, busy;

        if (all) {
                worker_read_frames(w, true);
                return;
        }
        if (start >= t->dear_slice_start_ns + WORKER_SLICE_NS) {
                t->dear_slice_start_ns = start;
                t->dear_used_ns = 0;
        }
        if (loop_turn(t->loop) != t->busy_turn) {
                t->busy_turn = loop_turn(t->loop);
                t->busy_turn_ns = 0;
        }
        busy = start < w->busy_until_ns;
        if (busy && t->busy_turn_ns >= WORKERS_TURN_BUSY_NS) {
                worker_pause(w, start + WORKER_CHEAP_READ_NS, true);
                return;
        }
        if (start < w->dear_until_ns && t->dear_used_ns > 0 &&
            t->dear_used_ns + w->dear_read_ns > WORKERS_DEAR_BUDGET_NS) {
                worker_pause(w, t->dear_slice_start_ns + WORKER_SLICE_NS, false);
                return;
        }
        /* A new slice when the last one is over, or when this read comes
         * before its pause's end: the loop resumed the worker early because
         * it had nothing else to do, and the rest of that pause is forgiven.
         * Carried on instead, every early resume pushed the slice's start
         * further into the future, and the next pause of a dear read waited
         * for all of it (3.6 s after 100,000 cheap calls). */
        if (start < w->slice_start_ns || start >= w->slice_start_ns + WORKER_SLICE_NS) {
                w->slice_start_ns = start;
                w->slice_used_ns = 0;
                w->slice_max_batch_ns = 0;
        }
        worker_read_frames(w, false);
        if (w->fd < 0)
                return;
        used = now_ns() - start;
        if (busy)
                t->busy_turn_ns += used;
        w->slice_used_ns += used;
        w->slice_max_batch_ns = MAX(w->slice_max_batch_ns, used);
        if (w->slice_used_ns >= WORKER_CHEAP_READ_NS)
                w->busy_until_ns = now_ns() + WORKER_SLICE_NS;
        if (used > WORKER_CHEAP_READ_NS) {
                w->dear_until_ns = start + used + WORKER_DEAR_HOLD_NS;
                w->dear_read_ns = MIN(used, WORKERS_DEAR_BUDGET_NS);
        }
        if (start < w->dear_until_ns)
                t->dear_used_ns += used;
        if (w->slice_used_ns < WORKER_SLICE_BUDGET_NS)
                return;
        cheap = w->slice_max_batch_ns <= WORKER_CHEAP_READ_NS;
        /* Its share is spent: paused until what it used is WORKER_SLICE_BUDGET_NS
         * in WORKER_SLICE_NS, so that one frame dearer than a slice's
         * budget is paid for too (up to WORKER_PAUSE_MAX_NS, for a large
         * result: the next run must not wait long). */
        pause = worker_share_pause(w->slice_used_ns);
        w->slice_start_ns = MAX(w->slice_start_ns + pause, now_ns());
        w->slice_used_ns = 0;
        w->slice_max_batch_ns = 0;
        worker_pause(w, w->slice_start_ns, cheap);
}

static void worker_read_frames(struct worker *w, bool all) {
        unsigned frames = 0;
        size_t bytes = 0;

        for (;;) {
                json_t *m = NULL;
                long n;
                int e = 0;

                while ((all || frames < READ_BUDGET_FRAMES) && (e = frame_reader_next(&w->rd, &m)) == 1) {
                        frames++;
                        worker_handle_frame(w, m);
                        json_decref(m);
                        if (w->rd.last_payload > TRIM_AFTER_BYTES)
                                malloc_trim(0);
                        if (w->fd < 0)
                                return;
                }
                if (e < 0) {
                        worker_protocol_violation(w, e == -EMSGSIZE ? "frame over its type's bytes"
                                                     : e == -E2BIG  ? "frame over its type's JSON values"
                                                     : e == -EPROTO ? "a frame that does not begin with its type"
                                                     : w->refused_why ? w->refused_why
                                                                      : "malformed frame");
                        return;
                }
                if (e == 1 || (!all && frames >= READ_BUDGET_FRAMES)) {
                        /* Complete frames may wait in our buffer, which
                         * epoll does not see: come back next iteration. */
                        w->resume_armed = true;
                        loop_timer_arm(w->resume, now_ns() + 1);
                        return;
                }
                /* Bytes still in the socket wake us again (level-triggered). */
                if (!all && bytes >= READ_BUDGET_BYTES)
                        return;
                n = frame_reader_fill(&w->rd, w->fd);
                if (n == -EAGAIN)
                        return;
                if (n <= 0) {
                        worker_connection_closed(w);
                        return;
                }
                bytes += (size_t)n;
        }
}

void worker_read_rest(struct worker *w) { worker_read(w, true); }

void worker_on_resume(void *data) {
        struct worker *w = data;

        w->resume_armed = false;
        if (w->fd < 0)
                return;
        if (w->read_paused) {
                w->read_paused = false;
                if (loop_mod_fd(w->owner->loop, w->fd, worker_events(w)) < 0) {
                        worker_close_fd(w);
                        worker_kill(w, NULL);
                        return;
                }
        }
        worker_read(w, false);
}

static void worker_on_io(int fd, uint32_t events, void *data) {
        struct worker *w = data;

        if (events & EPOLLOUT) {
                /* A one-shot watch (paused) is off once it fired. */
                if (w->read_paused)
                        w->watching_out = false;
                if (worker_flush_out(w) < 0) {
                        worker_close_fd(w);
                        worker_kill(w, NULL);
                        return;
                }
        }
        /* One budget per loop iteration: with the resume timer armed, the
         * timer reads next. */
        if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !w->resume_armed)
                worker_read(w, false);
}
