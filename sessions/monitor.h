/* What a session's processes do while it runs (docs/security.md, "The
 * processes of a run" and "Session-wide limits"): the monitor that sums the
 * CPU and memory of the worker and everything it started during runs that
 * last, and the daemon's kills of what a run started or left behind
 * (sessions/procs.h walks procfs for both).
 *
 * Process context: the daemon's event loop; procfs answers at once. */
#pragma once

struct session;

/* Arm the run's monitor (the run was just sent): it first looks
 * MONITOR_AFTER_NS later, so short runs never meet it, and only when the
 * session has a cpu or memory limit. */
void monitor_arm(struct session *s);
/* The monitor's timer (struct run's monitor; data is the session): past
 * either limit the run is stopped (run_stop_on_limit), else it looks again
 * later. */
void monitor_on_run_timer(void *data);

/* At a run's deadline, ctl interrupt or a limit: every process of the
 * session but its worker is killed, before R is asked to unwind.  If they
 * fork faster than they die, the worker is killed too (in strict mode the
 * kernel then ends its whole pid namespace). */
void monitor_kill_run_processes(struct session *s);
/* After a run: look for processes it left behind, off the run's path
 * (a timer, at most every LEFTOVER_CHECK_GAP_NS per worker), and then watch
 * the idle worker with back-off (a thread or processes of it that run
 * between runs are killed, the worker replaced: monitor.c, idle_watch). */
void monitor_check_leftovers(struct session *s);
/* A transfer of s's state (fork, snapshot, restore, checkpoint) began: the
 * daemon looks at its worker within IDLE_FIRST_GAP_NS and then as often
 * while it lasts, and replaces it when processes ran while it wrote a state
 * or when the transfer used more CPU than the session's CPU limit
 * (monitor.c). */
void monitor_watch_transfer(struct session *s);
struct worker;
/* w just attached, before any user code ran: remember its threads (the
 * idle watch's baseline). */
void monitor_worker_attached(struct worker *w);
/* The leftover check's timer (struct worker's leftover_check; data is the
 * worker). */
void monitor_on_leftover_timer(void *data);
