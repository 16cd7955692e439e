#include "run.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "escape.h"
#include "json_cleanup.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "monitor.h"
#include "protocol.h"
#include "sandbox/cgroup.h"
#include "session_private.h"
#include "tools.h"
#include "utf8.h"
#include "worker.h"
#include "workspace.h"

/* Console bytes a worker may send in one run before it is taken to be
 * flooding us on purpose (what is kept is capped far lower, by
 * console_max_bytes). */
#define CONSOLE_FLOOD_BYTES (64u << 20)
/* The audit log keeps this much of a run's code. */
#define AUDIT_CODE_MAX 10240u

static void on_run_deadline(void *data);

void run_free(struct run *r) {
        if (!r)
                return;
        loop_timer_free(r->deadline);
        loop_timer_free(r->monitor);
        workspace_scan_cancel(r->scan);
        result_unref(r->ending);
        workspace_snapshot_free(r->before);
        free(r->code);
        text_free(&r->console);
        text_free(&r->console_shown);
        free(r);
}

void run_end(struct session *s, enum run_status status, enum error_kind kind, const char *error, const char *limit) {
        struct run_end end = {.status = status, .kind = kind, .error = error, .limit = limit};
        struct result *res;

        /* Its result is built already and waits for its after-scan: a
         * kill or a restart meanwhile changes nothing of it. */
        if (s->run && s->run->ending)
                return;
        res = result_build(s, &end);
        if (res)
                result_publish(s, res);
}

int session_start_run(struct session *s, char *code, size_t len) {
        struct sessions *t = s->owner;
        struct run *r;
        size_t bad;
        char msg[1024];

        if (s->run) {
                free(code);
                return -EBUSY;
        }
        r = calloc(1, sizeof(*r));
        if (!r || !(r->deadline = loop_timer_new(t->loop, on_run_deadline, s)) ||
            !(r->monitor = loop_timer_new(t->loop, monitor_on_run_timer, s))) {
                if (r)
                        loop_timer_free(r->deadline);
                free(r);
                free(code);
                return -ENOMEM;
        }
        r->seq = ++s->next_seq;
        r->code = code;
        r->code_len = len;
        r->start_ns = now_ns();
        s->run = r;
        /* The audit log keeps the code, cut at 10 KB (none when it is not
         * UTF-8). */
        if (!utf8_valid(code, len, &bad)) {
                session_audit_run_start(s, r->seq, "", 0, len);
                r->sent = true;
                snprintf(msg, sizeof(msg), "The code is not valid UTF-8 (bad byte at offset %zu); nothing was run.",
                         bad);
                run_end(s, RUN_ERROR, ERROR_SYNTAX, msg, NULL);
                return 0;
        }
        {
                size_t cut = MIN(len, AUDIT_CODE_MAX);
                while (cut < len && cut > 0 && ((unsigned char)code[cut] & 0xC0) == 0x80)
                        cut--;
                session_audit_run_start(s, r->seq, code, cut, len);
        }
        if (s->state == SESSION_DEAD) {
                r->sent = true;
                snprintf(msg, sizeof(msg), "The session is dead (%s); write restart to ctl to try again.",
                         s->dead_reason ? s->dead_reason : "no worker");
                run_end(s, RUN_ERROR, ERROR_DEAD, msg, NULL);
                return 0;
        }
        /* A transfer of its state under way, or a fork's copy still
         * waiting for its state: the run waits (snapshot_session_idle). */
        if (s->state == SESSION_IDLE && !session_moving(s) && !s->fork_src)
                run_send(s);
        return 0;
}

static void run_send_now(struct session *s);

/* A worker the daemon killed (the idle watch, a limit) takes no run until
 * its death is seen: the run waits for the next one.  Sent to it, it was
 * reported killed for the reason of before (test_round4's run after the
 * spinning idle worker, under CI's load). */
static bool takes_runs(const struct worker *w) {
        return w && !w->killed;
}

/* The before-scan ended (on the loop): the run goes to the worker, if the
 * session is still ready for it (else it stays queued, its before-scan
 * done, and goes when a worker attaches). */
static void on_before_scanned(void *data, struct workspace_snapshot *now) {
        struct session *s = data;
        struct run *r = s->run;

        r->scan = NULL;
        r->before = now;
        if (s->state == SESSION_IDLE && takes_runs(s->worker) && !r->sent)
                run_send_now(s);
}

void run_send(struct session *s) {
        struct run *r = s->run;
        struct workspace_snapshot *now;

        if (!takes_runs(s->worker))
                return;
        if (r->scan)
                return; /* the before-scan's end sends it */
        /* What the workspace held, to tell what the run changes: the last
         * run's after-scan when the host side changed nothing since (no
         * scan at all), else a scan, off the loop when the workspace is
         * big; the run waits for it, no other session does. */
        if (!r->before && !(r->before = workspace_take_snapshot(s->workspace)) &&
            workspace_scan(s->workspace, on_before_scanned, s, &now, &r->scan) != -EINPROGRESS)
                r->before = now; /* NULL when out of memory: the run lists no files */
        if (r->scan)
                return;
        run_send_now(s);
}

static void run_send_now(struct session *s) {
        struct run *r = s->run;
        struct worker *w = s->worker;
        _cleanup_json_ json_t *m = NULL;

        r->cpu_base_s = worker_cpu_s(w);
        /* Only the CPU limit changes from run to run (the others are set
         * when the worker is assigned and when limits is written): keep
         * this path to two cheap syscalls. */
        worker_apply_limits(w, &s->limits, r->cpu_base_s, true);
        /* The OOM kills from here on are the run's.  Until 2026-12-03 the
         * monitor's first look, 50 ms in, took this base, and a kill before
         * it (the worker's own, at memory speed) read as a crash
         * (docs/security.md, "Session-wide limits"). */
        if (s->limits.v[LIMIT_MEMORY] != LIMIT_UNSET && w->oom_fd >= 0)
                (void)cgroup_oom_kills(w->oom_fd, &w->oom_kills_seen);
        m = protocol_exec(r->seq, r->code, r->code_len, &s->limits);
        free(r->code);
        r->code = NULL;
        r->sent = true;
        r->start_ns = now_ns();
        session_set_state(s, SESSION_RUNNING);
        if (!m || worker_send(w, m) < 0) {
                worker_close_fd(w);
                worker_kill(w, "could not send the run to the worker");
                return;
        }
        if (s->timeout_s > 0)
                loop_timer_arm(r->deadline, r->start_ns + (uint64_t)(s->timeout_s * 1e9));
        monitor_arm(s);
}

/* Ask R to unwind the run (it keeps its state) for reason: what the run
 * started is killed first, then the worker gets an interrupt frame and
 * SIGINT, and the grace period begins. */
static void run_interrupt(struct session *s, enum interrupt_reason reason) {
        struct run *r = s->run;

        r->interrupt = reason;
        r->in_grace = true;
        monitor_kill_run_processes(s);
        if (s->worker)
                worker_interrupt(s->worker, r->seq);
        loop_timer_arm(r->deadline, now_ns() + (uint64_t)(s->owner->opt->grace_s * 1e9));
}

static void on_run_deadline(void *data) {
        struct session *s = data;
        struct run *r = s->run;

        if (!r || !s->worker)
                return;
        if (!r->in_grace) {
                session_audit(s, json_pack("{s:s, s:I, s:f}", "event", "timeout", "seq", (json_int_t)r->seq,
                                           "timeout_s", s->timeout_s));
                run_interrupt(s, INTERRUPT_TIMEOUT);
                return;
        }
        /* R did not unwind within the grace period (compiled code that never
         * checks for interrupts): kill and replace the worker. */
        worker_kill(s->worker, r->interrupt == INTERRUPT_TIMEOUT ? "timeout"
                               : r->interrupt == INTERRUPT_LIMIT ? "limit"
                                                                 : "interrupt");
}

void session_interrupt(struct session *s) {
        struct run *r = s->run;

        if (!r || !r->sent || !s->worker || r->in_grace)
                return;
        s->owner->stats.interrupts++;
        session_audit(s, json_pack("{s:s, s:I}", "event", "interrupt", "seq", (json_int_t)r->seq));
        run_interrupt(s, INTERRUPT_CTL);
}

void run_stop_on_limit(struct session *s, const char *limit, const char *reason) {
        struct run *r = s->run;

        if (!r || !r->sent || !s->worker || r->in_grace)
                return; /* a timeout or ctl interrupt is ending it already */
        r->stop_limit = limit;
        snprintf(r->stop_reason, sizeof(r->stop_reason), "%s", reason);
        session_audit(s, json_pack("{s:s, s:I, s:s, s:s}", "event", "limit", "seq", (json_int_t)r->seq, "limit", limit,
                                   "reason", reason));
        run_interrupt(s, INTERRUPT_LIMIT);
}

/* ---- the console -------------------------------------------------------- */

/* Append text to what the console file shows: as it is, or escaped once
 * anything in the run needed it (the file then shows console_shown, which
 * starts as a copy of console so that offsets already read stay valid). */
static void console_show(struct run *r, const char *text, size_t n) {
        char *escaped;
        size_t len;

        if (!r->console_escaped) {
                if (!text_needs_escape(text, n, ESCAPE_KEEP_LINES))
                        return;
                r->console_escaped = true;
                text_append(&r->console_shown, r->console.data ? r->console.data : "", r->console.len);
        }
        escaped = text_escape_dup(text, n, ESCAPE_KEEP_LINES, &len);
        if (escaped)
                text_append(&r->console_shown, escaped, len);
        free(escaped);
}

static void console_keep(struct run *r, const char *text, size_t n) {
        console_show(r, text, n);
        text_append(&r->console, text, n);
}

int run_on_console(struct session *s, const char *text, size_t n) {
        struct sessions *t = s->owner;
        struct run *r = s->run;
        size_t max = (size_t)t->opt->console_max_bytes, room;

        r->console_received += n;
        if (r->console_received > CONSOLE_FLOOD_BYTES)
                return -EMSGSIZE;
        if (r->console_truncated)
                return 0;
        room = max > r->console.len ? max - r->console.len : 0;
        if (n > room) {
                char marker[128];
                /* Cut at a character boundary so the file stays UTF-8. */
                while (room > 0 && ((unsigned char)text[room] & 0xC0) == 0x80)
                        room--;
                console_keep(r, text, room);
                snprintf(marker, sizeof(marker), "\n[console output truncated at %lld bytes]\n",
                         (long long)t->opt->console_max_bytes);
                console_keep(r, marker, strlen(marker));
                r->console_truncated = true;
        } else {
                console_keep(r, text, n);
        }
        return 0;
}

const struct text *session_console(const struct session *s) {
        static const struct text empty = {(char *)"", 0, 0};

        if (s->run && s->run->ending)
                return result_text(s->run->ending, RESULT_CONSOLE);
        if (s->run && s->run->sent)
                return s->run->console_escaped ? &s->run->console_shown : &s->run->console;
        if (s->last)
                return result_text(s->last, RESULT_CONSOLE);
        return &empty;
}

/* ---- tool calls and the result ---------------------------------------------- */

void run_on_tool_call(struct session *s, const struct worker_frame *f) {
        struct sessions *t = s->owner;
        struct run *r = s->run;

        r->last_call_id = f->u.tool_call.id;
        /* Calls after the run was stopped on a limit are dropped: not
         * answered, not logged one by one (counted for the run's summary
         * line). */
        if (r->stop_limit) {
                r->calls_dropped++;
                return;
        }
        /* Past max_tool_calls the run ends, whatever the call: even refused
         * ones (an unknown tool) cost us a reply and an audit line each. */
        if (r->tool_calls >= t->opt->max_tool_calls) {
                char reason[128];
                snprintf(reason, sizeof(reason), "The run made more than %u tool calls (max_tool_calls)",
                         t->opt->max_tool_calls);
                r->calls_dropped++;
                run_stop_on_limit(s, "tool_calls", reason);
                return;
        }
        r->tool_calls++;
        t->stats.tool_calls++;
        /* Answered now (refused) or when the tool answers. */
        tool_scope_call(s->tools, r->seq, f->u.tool_call.id, f->u.tool_call.tool, f->u.tool_call.args,
                        f->u.tool_call.args_text, f->u.tool_call.args_len);
}

/* What the worker's word for an R error becomes. */
static enum error_kind worker_kind(enum worker_error_kind k) {
        switch (k) {
        case WORKER_KIND_SYNTAX: return ERROR_SYNTAX;
        case WORKER_KIND_TOOL: return ERROR_TOOL;
        case WORKER_KIND_INTERRUPTED: return ERROR_INTERRUPTED;
        default: return ERROR_RUNTIME;
        }
}

void run_on_result(struct session *s, const struct worker_frame *f) {
        struct run *r = s->run;
        struct run_end end = {
                .output = f->u.result.output,
                .value = f->u.result.value,
                .value_note = f->u.result.value_note,
                .error = f->u.result.error,
                .warnings = f->u.result.warnings,
                .limit = f->u.result.limit >= 0 ? limit_names[f->u.result.limit] : NULL,
        };
        struct result *res;
        char msg[512];

        switch (f->u.result.status) {
        case WORKER_OK: end.status = RUN_OK; break;
        case WORKER_ERROR:
                end.status = RUN_ERROR;
                /* A limit the worker names (its memory, fsize, stack, ...)
                 * is what ended the run. */
                end.kind = end.limit ? ERROR_LIMIT : worker_kind(f->u.result.kind);
                break;
        case WORKER_INTERRUPTED:
                if (r->interrupt == INTERRUPT_TIMEOUT) {
                        end.status = RUN_TIMEOUT;
                        end.kind = ERROR_TIMEOUT;
                        snprintf(msg, sizeof(msg),
                                 "Timed out after %g s: the run was interrupted; the session's state is kept.",
                                 s->timeout_s);
                } else {
                        end.status = RUN_ERROR;
                        end.kind = ERROR_INTERRUPTED;
                        snprintf(msg, sizeof(msg), "Interrupted%s; the session's state is kept.",
                                 r->interrupt == INTERRUPT_CTL ? " (ctl interrupt)" : "");
                }
                end.error = msg;
                break;
        }
        if (end.status != RUN_OK && !*end.error)
                end.error = "Error (no message)";
        if (r->interrupt == INTERRUPT_LIMIT) {
                /* Whatever R made of the interrupt (it may even have caught
                 * it and returned a value), the run went past a limit. */
                snprintf(msg, sizeof(msg), "%s: the run was stopped; the session's state is kept.", r->stop_reason);
                end.status = RUN_ERROR;
                end.kind = ERROR_LIMIT;
                end.error = msg;
                end.limit = r->stop_limit;
        }
        res = result_build(s, &end);
        if (res)
                result_publish(s, res);
}

/* ---- a worker that died during the run -------------------------------------- */

void run_worker_died(struct session *s, const struct worker *w) {
        struct sessions *t = s->owner;
        struct run *r = s->run;
        enum run_status st = RUN_KILLED;
        enum error_kind kind = ERROR_KILLED;
        double used = w->cpu_s - r->cpu_base_s;
        long long cpu = s->limits.v[LIMIT_CPU];
        const char *limit = NULL;
        unsigned long long oom = 0;
        char how[128], msg[1024];

        worker_describe_exit(w, how, sizeof(how));
        if (w->kill_reason && strcmp(w->kill_reason, "timeout") == 0) {
                kind = ERROR_TIMEOUT;
                /* Still a timeout, for stats, even if it ended in a kill. */
                t->stats.timeouts++;
                snprintf(msg, sizeof(msg),
                         "Timed out after %g s and R did not stop within %g s of the interrupt: the worker was "
                         "killed and a fresh one replaced it; the session's state was lost.",
                         s->timeout_s, t->opt->grace_s);
        } else if (w->kill_reason && strcmp(w->kill_reason, "limit") == 0) {
                kind = ERROR_LIMIT;
                limit = r->stop_limit;
                snprintf(msg, sizeof(msg),
                         "%s, and R did not stop within %g s: the worker was killed and a fresh one replaced it; "
                         "the session's state was lost.",
                         r->stop_reason, t->opt->grace_s);
        } else if (!w->kill_reason && WIFSIGNALED(w->exit_status) && WTERMSIG(w->exit_status) == SIGKILL &&
                   s->limits.v[LIMIT_MEMORY] != LIMIT_UNSET &&
                   ((w->oom_fd >= 0 && cgroup_oom_kills(w->oom_fd, &oom) == 0 && oom > w->oom_kills_seen) ||
                    (r->stop_limit && strcmp(r->stop_limit, "memory") == 0))) {
                /* The memory cgroup's OOM killer chose the worker.  The
                 * monitor may have read that kill's count first (it saw the
                 * kill before the worker was reaped, and is stopping the run
                 * on the memory limit): the same kill, not a crash. */
                kind = ERROR_LIMIT;
                limit = "memory";
                snprintf(msg, sizeof(msg),
                         "Memory limit of %lld MiB reached by the session's processes together: the kernel killed "
                         "the R worker; a fresh one replaced it and the session's state was lost.",
                         s->limits.v[LIMIT_MEMORY] >> 20);
        } else if (w->kill_reason && strcmp(w->kill_reason, "interrupt") == 0) {
                kind = ERROR_INTERRUPTED;
                snprintf(msg, sizeof(msg),
                         "Interrupted, and R did not stop within %g s: the worker was killed and a fresh one "
                         "replaced it; the session's state was lost.",
                         t->opt->grace_s);
        } else if (w->kill_reason) {
                snprintf(msg, sizeof(msg),
                         "The worker was killed: %s; a fresh one replaced it and the session's state was lost.",
                         w->kill_reason);
        } else if (cpu != LIMIT_UNSET && used >= (double)cpu - 0.05 && WIFSIGNALED(w->exit_status) &&
                   (WTERMSIG(w->exit_status) == SIGKILL || WTERMSIG(w->exit_status) == SIGXCPU)) {
                kind = ERROR_LIMIT;
                snprintf(msg, sizeof(msg),
                         "CPU time limit of %lld s reached and R did not stop: the worker was killed and a fresh "
                         "one replaced it; the session's state was lost.",
                         cpu);
        } else {
                st = RUN_CRASHED;
                kind = ERROR_CRASHED;
                snprintf(msg, sizeof(msg),
                         "The R worker crashed (%s); a fresh worker replaced it and the session's state was lost.",
                         how);
        }
        session_audit(s, json_pack("{s:s, s:I, s:s}", "event", st == RUN_CRASHED ? "crash" : "killed", "seq",
                                   (json_int_t)r->seq, "reason", msg));
        run_end(s, st, kind, msg, limit);
}
