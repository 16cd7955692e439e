#include "monitor.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "macros.h"
#include "procs.h"
#include "run.h"
#include "sandbox/cgroup.h"
#include "session_private.h"
#include "snapshot.h"
#include "worker.h"

/* The session-wide limits monitor (docs/security.md, "Session-wide
 * limits"): it first looks at a run this long after it started (shorter
 * runs cost nothing), then every MONITOR_PERIOD_NS while the worker is
 * alone, every MONITOR_PERIOD_FORKED_NS while it has other processes (they
 * are what can multiply the limits), or twenty times as long as its last
 * look took, whichever is longer (so it never takes more than 5% of a CPU).
 * The exact memory count (a page-table walk per process) is rate-limited
 * the same way, on its own. */
#define MONITOR_AFTER_NS 50000000ull
#define MONITOR_PERIOD_NS 100000000ull
#define MONITOR_PERIOD_FORKED_NS 20000000ull
/* The daemon's look for processes a run left behind (the worker kills its
 * own at the end of every run; this is for a worker whose native code is
 * hostile) happens at most this often per worker, off the run's path. */
#define LEFTOVER_CHECK_GAP_NS 20000000ull
/* Passes of procs_kill_descendants() before a session whose processes keep
 * forking loses its worker (and with it, in strict mode, its whole pid
 * namespace). */
#define KILL_PASSES 16u

/* Processes started after this CLOCK_MONOTONIC time, as the kernel's start
 * time of processes counts: clock ticks since boot (CLOCK_BOOTTIME), cut
 * down.  A process whose start tick is below this one started before. */
static unsigned long long boot_tick_of(uint64_t mono_ns) {
        static long hz;
        struct timespec ts;
        uint64_t boot_now, mono_now = now_ns();

        if (!hz)
                hz = sysconf(_SC_CLK_TCK);
        clock_gettime(CLOCK_BOOTTIME, &ts);
        boot_now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        return (boot_now - (mono_now - MIN(mono_ns, mono_now))) / (1000000000ull / (uint64_t)hz);
}

/* Kill every process of the session but its worker, started before
 * before_tick (ULLONG_MAX: all). */
static void kill_session_processes(struct session *s, unsigned long long before_tick, const char *when) {
        struct worker *w = s->worker;
        int n;

        if (!w || w->pid <= 0 || w->exited)
                return;
        n = procs_kill_descendants(w->pid, KILL_PASSES, before_tick);
        if (n == -EAGAIN) {
                log_warn("session %s: its processes kept forking %s; killing its worker", s->name, when);
                worker_kill(w, "the session's processes kept forking faster than they could be killed");
        } else if (n > 0) {
                log_debug("session %s: killed %d processes %s", s->name, n, when);
                session_audit(s, json_pack("{s:s, s:i, s:s}", "event", "processes_killed", "count", n, "when", when));
        }
}

void monitor_kill_run_processes(struct session *s) {
        kill_session_processes(s, ULLONG_MAX, "as the run was stopped");
}

/* Between runs nothing of the session should run: the worker waits for
 * its next frame, and the run's processes were killed when it ended.  What
 * still runs is hostile native code: a thread of the worker (kill(-1) from
 * pid 1 never reaches its own threads; with every signal blocked it spins
 * for as long as the session idles, outside any run's CPU limit), or
 * processes that such a thread forks after the run's end.  So after each
 * run the daemon looks again, at IDLE_FIRST_NS and then backing off to
 * IDLE_GAP_MAX_NS, for as long as the session idles: a timer per worker,
 * nothing on a common path.  Each look kills every process of the session
 * but the worker, and replaces the worker (its state is lost: a hostile
 * worker's state is not worth keeping) when it gained more than
 * IDLE_CPU_TOLERANCE_S of CPU since the first look, or when processes ran
 * between runs: the worker killed every process of its run before its
 * result, and R starts none between runs, so only a thread of the session's
 * code can have started them.  More threads alone are no offence: an OpenMP
 * or BLAS pool (data.table, a threaded BLAS) sleeps in the worker between
 * runs, harmless, and its session keeps its state; while the worker has more
 * threads than when it attached (before any user code ran), the looks back
 * off only to IDLE_GAP_THREADS_MAX_NS, so that what such a thread forks
 * lives at most that long.  The reason goes to the session's log and to the
 * next result ("notice"). */
#define IDLE_FIRST_GAP_NS 250000000ull
#define IDLE_GAP_MAX_NS 30000000000ull
#define IDLE_GAP_THREADS_MAX_NS 1000000000ull
/* What an idle worker may use: taking tool definitions between runs, a late
 * interrupt frame.  A spinning thread passes it within a second. */
#define IDLE_CPU_TOLERANCE_S 0.25

/* The daemon's next look at w (monitor_on_leftover_timer) at due. */
static void arm_look(struct worker *w, uint64_t due) {
        w->leftover_check_armed = true;
        w->leftover_check_due_ns = due;
        loop_timer_arm(w->leftover_check, due);
}

/* Without a memory cgroup (an unprivileged daemon) nothing but the run's
 * monitor counts what the session's processes hold together, and it looks
 * during runs only: native code that mapped memory the run's stop did not
 * free (a library's pages made writable, an unmapped region mapped again
 * within RLIMIT_AS's allowance for untouched pages) kept it between runs,
 * 137-145 MiB against a 128 MiB limit (docs/security.md, "Round 10",
 * finding 6).  Each look at the idle worker counts it as the monitor does:
 * over the limit, the worker is replaced.  (Until 2026-12-03 only the first
 * look after a run did, and a thread that filled it a second later kept it:
 * finding 8.)  1 with why written. */
static int idle_memory_over(struct session *s, struct worker *w, char *why, size_t n) {
        long long mem = s->limits.v[LIMIT_MEMORY];
        unsigned long long held, pss;
        struct procs_usage u;

        if (mem == LIMIT_UNSET || w->oom_fd >= 0 || procs_usage(w->pid, &u) < 0)
                return 0;
        /* The exact count once the cheap bounds are past the limit: pages
         * the worker still shares with the zygote count their share only,
         * so a session that filled its limit is not taken for one past it. */
        held = u.estimate_bytes;
        if (u.rss_bytes > (unsigned long long)mem && procs_pss(w->pid, &pss) == 0)
                held = pss + u.kernel_bytes;
        if (held <= (unsigned long long)mem)
                return 0;
        snprintf(why, n, "the idle worker's %u processes held %llu MiB, over the session's memory limit of %lld MiB",
                 u.n, held >> 20, mem >> 20);
        return 1;
}

static void idle_watch(struct session *s, struct worker *w) {
        uint64_t gap;
        double cpu;
        int threads, n;
        bool threaded;
        char why[512], mem[192];

        if (procs_worker_self(w->pid, &cpu, &threads) < 0)
                return; /* gone: its reaping says how */
        if (w->idle_checks == 0)
                w->idle_cpu_base_s = cpu;
        why[0] = '\0';
        threaded = threads > w->threads_base;
        if (cpu - w->idle_cpu_base_s > IDLE_CPU_TOLERANCE_S)
                snprintf(why, sizeof(why), "the idle worker used %.1f s of CPU between runs%s",
                         cpu - w->idle_cpu_base_s, threaded ? " with threads that the session's code started" : "");
        n = procs_kill_descendants(w->pid, KILL_PASSES, ULLONG_MAX);
        if (n > 0 || n == -EAGAIN) {
                char what[128];
                if (n > 0)
                        snprintf(what, sizeof(what), "killed %d processes of the session that ran between runs", n);
                else
                        snprintf(what, sizeof(what), "killed processes of the session that kept forking between runs");
                log_warn("session %s: %s", s->name, what);
                session_audit(s, json_pack("{s:s, s:i, s:s}", "event", "processes_killed", "count", MAX(n, 0), "when",
                                           "between runs"));
                session_notice(s, what);
                if (n == -EAGAIN && !why[0])
                        snprintf(why, sizeof(why), "the session's processes kept forking between runs");
                else if (!why[0])
                        snprintf(why, sizeof(why),
                                 "processes ran between runs, which only a thread that the session's code left in "
                                 "the worker can start (it had %d threads then, %d when it started)",
                                 threads, w->threads_base);
        }
        /* Each reason is told, not the first alone: a thread that fills
         * memory uses CPU doing it (where a page's first touch is dear, as
         * on the project's VM, more than the CPU check allows), and what it
         * held is what the session's user must hear. */
        if (idle_memory_over(s, w, mem, sizeof(mem)))
                snprintf(why + strlen(why), sizeof(why) - strlen(why), "%s%s", why[0] ? "; and " : "", mem);
        if (why[0]) {
                char what[640];
                snprintf(what, sizeof(what), "%s; the worker was replaced and the session's state was lost", why);
                log_warn("session %s: %s", s->name, what);
                session_audit(s, json_pack("{s:s, s:s}", "event", "worker_replaced", "reason", why));
                session_notice(s, what);
                worker_kill(w, why); /* its reaping brings a new one (session_worker_lost) */
                return;
        }
        gap = w->idle_checks == 0 ? IDLE_FIRST_GAP_NS
                                  : MIN(w->idle_gap_ns * 2, threaded ? IDLE_GAP_THREADS_MAX_NS : IDLE_GAP_MAX_NS);
        w->idle_gap_ns = gap;
        w->idle_checks++;
        arm_look(w, now_ns() + gap);
}

/* Replace w, whose session's state is being moved, for why. */
static void replace_moving(struct session *s, struct worker *w, const char *why) {
        char what[384];

        snprintf(what, sizeof(what), "%s; the worker was replaced and the session's state was lost", why);
        log_warn("session %s: %s", s->name, what);
        session_audit(s, json_pack("{s:s, s:s}", "event", "worker_replaced", "reason", why));
        session_notice(s, what);
        worker_kill(w, why); /* its loss fails the transfer (EIO) */
}

/* A look at a worker while its session's state moves: true when it was
 * replaced.  Writing a state starts no process, and reading one starts one
 * (the child that checks a state from a file: sandbox/worker/state.c);
 * code of the session that runs meanwhile starts others (a finalizer that
 * R's collector runs during the serialization, a thread), which would live
 * until the transfer's deadline (120 s), outside every limit of a run.  And
 * the transfer is the worker's work, held to the session's CPU limit as a
 * run is — its processes' CPU included: else a thread that makes the
 * worker's reads or writes wait spins, or has children spin, until the
 * deadline.  At the limit the worker's rlimit sends it SIGXCPU, which
 * interrupts R; still at work a grace period later, it is killed
 * (docs/security.md, "Round 4"). */
static bool transfer_offence(struct session *s, struct worker *w) {
        long long limit = s->limits.v[LIMIT_CPU];
        enum worker_phase phase = xfer_phase(s);
        struct procs_usage u;
        char why[256];

        if (procs_usage(w->pid, &u) < 0)
                return false; /* gone: its reaping says how */
        if (phase == PHASE_SNAPSHOT ? u.n > 1 : u.n > 2) {
                int n = procs_kill_descendants(w->pid, KILL_PASSES, ULLONG_MAX);

                snprintf(why, sizeof(why),
                         "%d processes ran while the session's state was being %s, which only the session's own code "
                         "(a finalizer, a thread) can start",
                         MAX(n, (int)u.n - 1), phase == PHASE_SNAPSHOT ? "written" : "read");
                replace_moving(s, w, why);
                return true;
        }
        if (limit > 0 && u.cpu_s - w->xfer_cpu_base_s > (double)limit + s->owner->opt->grace_s) {
                snprintf(why, sizeof(why), "moving the session's state used more than its CPU limit (%lld s)", limit);
                replace_moving(s, w, why);
                return true;
        }
        return false;
}

/* The worker kills what a run started before it sends its result; this is
 * the daemon's own look, for a worker whose native code is hostile.  When it
 * comes while a later run is under way it kills only processes older than
 * that run.  Between runs it is also the watch of the idle worker: see
 * idle_watch(). */
void monitor_on_leftover_timer(void *data) {
        struct worker *w = data;
        struct session *s = w->session;
        struct run *r = s ? s->run : NULL;

        w->leftover_check_armed = false;
        w->last_leftover_check_ns = now_ns();
        if (!s || s->worker != w || !w->attached)
                return;
        if (r && r->sent) {
                kill_session_processes(s, boot_tick_of(r->start_ns), "that a run left behind");
                return;
        }
        /* A fork, snapshot, restore or checkpoint is the worker's work
         * between runs (its CPU, and the child that checks a state it
         * restores: sandbox/worker/state.c): held to its own rules
         * (transfer_offence), looked at again later, and the idle
         * worker's CPU counted from after it. */
        if (s->xfer) {
                if (transfer_offence(s, w))
                        return;
                w->idle_checks = 0;
                arm_look(w, now_ns() + IDLE_FIRST_GAP_NS);
                return;
        }
        idle_watch(s, w);
}

void monitor_check_leftovers(struct session *s) {
        struct worker *w = s->worker;
        uint64_t due;

        if (!w || w->pid <= 0 || w->exited || !w->attached)
                return;
        /* A run ended: the idle watch starts again, soon.  A look armed
         * for later (an idle watch that had backed off to 30 s before the
         * run) comes sooner: else what the run left — processes, a thread
         * spinning before the first look takes the idle CPU's base — went
         * unseen until then (docs/security.md, "Round 4"). */
        w->idle_checks = 0;
        due = MAX(now_ns(), w->last_leftover_check_ns + LEFTOVER_CHECK_GAP_NS);
        if (w->leftover_check_armed && w->leftover_check_due_ns <= due)
                return;
        arm_look(w, due);
}

void monitor_worker_attached(struct worker *w) {
        double cpu;

        if (procs_worker_self(w->pid, &cpu, &w->threads_base) < 0 || w->threads_base < 1)
                w->threads_base = 1;
}

void monitor_arm(struct session *s) {
        if (s->limits.v[LIMIT_CPU] != LIMIT_UNSET || s->limits.v[LIMIT_MEMORY] != LIMIT_UNSET)
                loop_timer_arm(s->run->monitor, s->run->start_ns + MONITOR_AFTER_NS);
}

/* The run's CPU: the worker's own since the run began (its base is exact),
 * all of its descendants' (none was left from an earlier run), and what it
 * reaped since the first look. */
static double run_cpu_s(const struct run *r, const struct procs_usage *u) {
        return (u->worker_cpu_s - r->cpu_base_s) + (u->cpu_s - u->worker_cpu_s - u->worker_reaped_s) +
               (u->worker_reaped_s - r->reaped_base_s);
}

/* Past the session's memory limit?  Then 1 with reason written. */
static int memory_over(struct session *s, const struct procs_usage *u, char *reason, size_t n) {
        struct run *r = s->run;
        struct worker *w = s->worker;
        long long mem = s->limits.v[LIMIT_MEMORY];
        unsigned long long oom, held = u->estimate_bytes, pss;

        if (w->oom_fd >= 0 && cgroup_oom_kills(w->oom_fd, &oom) == 0 && oom > w->oom_kills_seen) {
                w->oom_kills_seen = oom;
                snprintf(reason, n,
                         "Memory limit of %lld MiB reached by the session's processes together (the kernel killed "
                         "one of them)",
                         mem >> 20);
                return 1;
        }
        /* The estimate is cheap; the resident sets' sum is never below what
         * they hold, so only past the limit is the exact count (which the
         * estimate can miss: copy-on-write copies) worth its page walks. */
        if (held <= (unsigned long long)mem && u->rss_bytes > (unsigned long long)mem && now_ns() >= r->next_pss_ns) {
                uint64_t pss_start = now_ns();
                if (procs_pss(w->pid, &pss) == 0)
                        held = pss + u->kernel_bytes;
                r->next_pss_ns = now_ns() + 20 * (now_ns() - pss_start);
        }
        if (held > (unsigned long long)mem) {
                snprintf(reason, n,
                         "Memory limit of %lld MiB reached by the session's %u processes together (%llu MiB, of "
                         "which %llu MiB socket and pipe buffers)",
                         mem >> 20, u->n, held >> 20, u->kernel_bytes >> 20);
                return 1;
        }
        return 0;
}

void monitor_on_run_timer(void *data) {
        struct session *s = data;
        struct run *r = s->run;
        struct worker *w = s->worker;
        long long cpu = s->limits.v[LIMIT_CPU];
        uint64_t start = now_ns(), took;
        struct procs_usage u;
        char reason[256];

        if (!r || !r->sent || !w || w->pid <= 0 || w->exited || r->in_grace)
                return;
        if (procs_usage(w->pid, &u) < 0)
                return; /* it is gone: its reaping ends the run */
        if (!r->monitored) {
                r->monitored = true;
                r->reaped_base_s = u.worker_reaped_s;
        }
        if (cpu != LIMIT_UNSET && run_cpu_s(r, &u) >= (double)cpu) {
                snprintf(reason, sizeof(reason),
                         "CPU time limit of %lld s reached by the session's %u processes together (%.1f s)", cpu, u.n,
                         run_cpu_s(r, &u));
                run_stop_on_limit(s, "cpu", reason);
                return;
        }
        took = now_ns() - start;
        if (s->limits.v[LIMIT_MEMORY] != LIMIT_UNSET && memory_over(s, &u, reason, sizeof(reason))) {
                run_stop_on_limit(s, "memory", reason);
                return;
        }
        loop_timer_arm(r->monitor, now_ns() + MAX(u.n > 1 ? MONITOR_PERIOD_FORKED_NS : MONITOR_PERIOD_NS, 20 * took));
}

void monitor_watch_transfer(struct session *s) {
        struct worker *w = s->worker;
        uint64_t due = now_ns() + IDLE_FIRST_GAP_NS;
        struct procs_usage u;

        if (!w || w->pid <= 0 || w->exited || !w->attached)
                return;
        w->xfer_cpu_base_s = procs_usage(w->pid, &u) == 0 ? u.cpu_s : 0;
        if (w->leftover_check_armed && w->leftover_check_due_ns <= due)
                return;
        arm_look(w, due);
}
