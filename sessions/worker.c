#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hostid.h"
#include "json_cleanup.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "monitor.h"
#include "pool.h"
#include "protocol.h"
#include "sandbox/cgroup.h"
#include "sandbox/rlimits.h"
#include "sandbox/spawner.h"
#include "session_private.h"
#include "workspace.h"

/* Deadlines of a worker's start (docs/protocol.md, "Deadlines"): from the
 * spawn request to its "ready" (the zygote's own deadlines come first), and
 * from its assignment to a session to its "attached" (the keeper's copy of
 * the workspace, and the worker's move_mount); a worker that misses one is
 * killed. */
#define WORKER_START_TIMEOUT_MS 15000
#define WORKER_ATTACH_TIMEOUT_MS 5000
/* The heap's free pages go back this long after the last worker was freed. */
#define TRIM_AFTER_MS 200
/* A busy worker cgroup's processes are on their way out (sessions/worker.h). */
#define CGROUP_SWEEP_MS 100
/* An attached worker's exit, after its socket's end of file. */
#define WORKER_CLOSED_GRACE_MS 1000
#define MS(x) ((uint64_t)(x) * 1000000ULL)

/* Its workspace's copy, if still on its way, is not wanted. */
static void worker_cancel_workspace(struct worker *w) {
        workspaces_cancel(w->owner->workspaces, w->ws_token);
        w->ws_token = 0;
}

void worker_kill(struct worker *w, const char *reason) {
        if (reason && !w->kill_reason)
                w->kill_reason = strdup(reason);
        w->killed = true;
        if (w->pid > 0 && !w->exited)
                kill(w->pid, SIGKILL);
        if (w->token) {
                spawner_cancel(w->owner->spawner, w->token);
                w->token = 0;
        }
        worker_cancel_workspace(w);
        loop_timer_arm(w->start_timer, 0);
}

void worker_set_fatal(struct worker *w, int err, const char *why) {
        if (w->fatal)
                return;
        w->fatal = strdup(why);
        w->start_err = err;
}

/* None mode: a worker removes its private directory in /tmp when it exits,
 * but one that was killed cannot.  Its name carries the pid
 * (jail_private_dir()); remove it without following links. */
static void sweep_private_dir(pid_t pid) {
        char prefix[64];
        DIR *d = opendir("/tmp");
        struct dirent *de;

        if (!d)
                return;
        snprintf(prefix, sizeof(prefix), "securerfs-w%ld-", (long)pid);
        while ((de = readdir(d)))
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
                        workspace_remove_tree(dirfd(d), de->d_name);
        closedir(d);
}

void worker_on_trim(void *data) {
        (void)data;
        malloc_trim(0);
}

void worker_on_cgroup_sweep(void *data) {
        struct sessions *t = data;

        if (cgroup_sweep(t->cgroups))
                loop_timer_arm(t->cgroup_sweep, now_ns() + MS(CGROUP_SWEEP_MS));
}

void worker_free(struct worker *w) {
        struct sessions *t = w->owner;

        /* What a session held (its worker's buffers, its tables) is small
         * pieces all over the heap, which free() keeps: 16 MB after 2,000
         * sessions came and went.  Given back to the kernel once the
         * workers stop going (one trim, a few ms, per burst). */
        loop_timer_arm(t->trim, now_ns() + MS(TRIM_AFTER_MS));
        worker_close_fd(w);
        worker_cancel_workspace(w);
        if (w->watched)
                loop_unwatch_child(t->loop, w->pid);
        if (t->opt->sandbox_none && w->pid > 0 && w->exited)
                sweep_private_dir(w->pid);
        if (w->oom_fd >= 0)
                close(w->oom_fd);
        if (w->cgroup_id && cgroup_worker_remove(t->cgroups, w->cgroup_id) == -EBUSY &&
            !loop_timer_due(t->cgroup_sweep))
                loop_timer_arm(t->cgroup_sweep, now_ns() + MS(CGROUP_SWEEP_MS));
        list_unlink(&w->link);
        list_unlink(&w->pool_link);
        frame_reader_free(&w->rd);
        loop_timer_free(w->start_timer);
        loop_timer_free(w->resume);
        loop_timer_free(w->leftover_check);
        text_free(&w->out);
        free(w->fatal);
        free(w->kill_reason);
        /* Reaped (or never started): its id may go back once its session
         * lets go of it too. */
        host_id_unref(t->ids, w->host_id);
        free(w);
}

void worker_abandon(struct worker *w, const char *reason) {
        w->session = NULL;
        worker_close_fd(w);
        worker_kill(w, reason);
        w->abandoned = true;
        if (!w->pid && !w->token) /* never handed to the zygote */
                worker_free(w);
}

/* The worker is gone for good (reaped, or never started): tell whoever had
 * it, then free it. */
static void worker_finish(struct worker *w) {
        struct sessions *t = w->owner;

        if (w->session)
                session_worker_lost(w->session, w);
        else if (!w->abandoned) /* an abandoned one: nothing waits for it */
                pool_worker_gone(t, w);
        worker_free(w);
        pool_fill(t);
}

void worker_warm(struct worker *w) {
        _cleanup_json_ json_t *m = protocol_warm();

        w->warmed = true;
        if (m && worker_send(w, m) < 0) {
                worker_close_fd(w);
                worker_kill(w, "could not send to the worker");
        }
}

void worker_describe_exit(const struct worker *w, char *buf, size_t n) {
        int st = w->exit_status;

        if (!w->exited)
                snprintf(buf, n, "it could not be started");
        else if (WIFSIGNALED(st))
                snprintf(buf, n, "it was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
                snprintf(buf, n, "it exited with status %d", WEXITSTATUS(st));
}

/* The loop reaped it (workers are the daemon's children: CLONE_PARENT). */
static void worker_on_exit(pid_t pid, int status, const struct rusage *ru, void *data) {
        struct worker *w = data;

        w->watched = false;
        w->exited = true;
        w->exit_status = status;
        w->cpu_s = (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
                   ru->ru_stime.tv_usec / 1e6;
        /* Frames it sent before dying (a fatal reason, a last result) are
         * still in the socket: take them first. */
        if (w->fd >= 0)
                worker_read_rest(w);
        worker_close_fd(w);
        worker_finish(w);
}

/* The worker missed its start or attach deadline: it is killed, and fails to
 * start as if it had died (worker_finish).  Or, attached, it closed its
 * socket and did not exit (worker_connection_closed()). */
static void on_worker_start_timeout(void *data) {
        struct worker *w = data;
        char why[160];

        if (w->closed_socket) {
                worker_kill(w, "it closed its connection to the daemon and did not exit");
                return;
        }
        snprintf(why, sizeof(why), "the worker did not %s within %d ms",
                 w->state == WORKER_READY ? "attach its workspace" : w->pid > 0 ? "become ready" : "get cloned",
                 w->state == WORKER_READY ? WORKER_ATTACH_TIMEOUT_MS : WORKER_START_TIMEOUT_MS);
        log_warn("%s (pid %d); killing it", why, (int)w->pid);
        worker_set_fatal(w, -EAGAIN, why);
        worker_close_fd(w);
        worker_kill(w, NULL);
        if (w->pid <= 0 && !w->exited) {
                /* Never cloned: nothing to reap.  The zygote's answer, if
                 * it still comes, kills what it made. */
                w->exited = true;
                worker_finish(w);
        }
}

void worker_connection_closed(struct worker *w) {
        worker_close_fd(w);
        if (w->pid <= 0 || w->exited)
                return;
        if (!w->attached) {
                kill(w->pid, SIGKILL); /* it fails to start: its reaping says how */
                return;
        }
        /* A worker that is exiting (a crash) closes its socket before its
         * exit is reaped, and its exit status says how: a kill now would
         * be reported in its place.  One whose code closed the socket is
         * killed with that reason if it is still there a moment later.
         * Until 2026-12-03 both were killed at once, and the second
         * reported as a crash by SIGKILL. */
        w->closed_socket = true;
        loop_timer_arm(w->start_timer, now_ns() + MS(WORKER_CLOSED_GRACE_MS));
}

/* A worker is ready once both its "ready" frame and the zygote's word of its
 * pid have come (they travel on different sockets, in either order): only
 * then may it be signalled or limited. */
static void worker_check_ready(struct worker *w) {
        if (!w->got_ready || w->pid <= 0 || w->exited || w->state != WORKER_SPAWNING)
                return;
        w->state = WORKER_READY;
        loop_timer_arm(w->start_timer, 0);
        if (w->session)
                worker_assign(w);
        else if (!w->abandoned)
                pool_add(w->owner, w);
}

void worker_on_ready(struct worker *w, long long reserved_bytes) {
        /* Sent before any user code ran in the worker: what its build
         * reserves is believed, within the protocol's bound.  The daemon's
         * own reading of its address space that no memory backs covers it
         * and the libraries' untouched pages (about 60 of its 107 MiB
         * here): a memory limit below the worker's address space at start
         * left R crashing on a readLines() (docs/security.md, "Round 10"). */
        long long unbacked = rlimits_unbacked_as(w->pid);

        w->reserved_as = MAX(reserved_bytes, unbacked);
        w->got_ready = true;
        worker_check_ready(w);
}

static void spawn_done(void *data, pid_t pid, int err, const char *why) {
        struct worker *w = data;
        struct rusage ru;
        int status;

        w->token = 0;
        if (pid <= 0) {
                worker_set_fatal(w, err == -EAGAIN || err == -ETIMEDOUT ? err : -EPERM,
                                 why ? why : "the zygote could not clone a worker");
                worker_close_fd(w);
                w->exited = true;
                worker_finish(w);
                return;
        }
        w->pid = pid;
        /* It may have died before the zygote's word of its pid came: then
         * its exit is the loop's, unclaimed, and is handled now, before
         * anything signals or limits a pid that is no longer ours. */
        if (loop_take_exit(w->owner->loop, pid, &status, &ru)) {
                worker_on_exit(pid, status, &ru, w);
                return;
        }
        if (loop_watch_child(w->owner->loop, pid, worker_on_exit, w) < 0) {
                /* We could not learn of its death: it must not live. */
                kill(pid, SIGKILL);
                worker_set_fatal(w, -EAGAIN, "out of memory watching the worker");
                worker_close_fd(w);
                w->exited = true;
                worker_finish(w);
                return;
        }
        w->watched = true;
        worker_check_ready(w);
}

/* Free a worker that worker_spawn() had not linked in yet. */
static void worker_spawn_undo(struct worker *w, int sv[2]) {
        if (sv) {
                close(sv[0]);
                close(sv[1]);
        }
        loop_timer_free(w->resume);
        loop_timer_free(w->leftover_check);
        loop_timer_free(w->start_timer);
        host_id_unref(w->owner->ids, w->host_id);
        free(w);
}

struct worker *worker_spawn(struct sessions *t, struct session *s, struct host_id *h) {
        struct worker *w = calloc(1, sizeof(*w));
        const struct limits *l = s ? &s->limits : &t->opt->limits;
        int sv[2], e;

        if (!w)
                return NULL;
        w->owner = t;
        w->session = s;
        w->host_id = host_id_ref(h);
        w->fd = -1;
        w->oom_fd = -1;
        list_init(&w->link);
        list_init(&w->pool_link);
        w->resume = loop_timer_new(t->loop, worker_on_resume, w);
        w->leftover_check = loop_timer_new(t->loop, monitor_on_leftover_timer, w);
        w->start_timer = loop_timer_new(t->loop, on_worker_start_timeout, w);
        /* Only our end is non-blocking: the worker reads with blocking calls. */
        if (!w->resume || !w->leftover_check || !w->start_timer ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                worker_spawn_undo(w, NULL);
                return NULL;
        }
        w->fd = sv[0];
        frame_reader_init(&w->rd, FRAME_MAX_BYTES);
        if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0 || worker_io_start(w) < 0) {
                worker_spawn_undo(w, sv);
                return NULL;
        }
        list_prepend(&t->workers, &w->link);
        /* Its cgroup exists before the clone that joins it. */
        w->cgroup_id = spawner_next_token(t->spawner);
        e = cgroup_worker_prepare(t->cgroups, w->cgroup_id, l->v[LIMIT_MEMORY], l->v[LIMIT_NPROC]);
        if (e < 0)
                log_warn("worker cgroup: %s", strerror(-e));
        else if ((e = cgroup_worker_oom_open(t->cgroups, w->cgroup_id)) >= 0)
                w->oom_fd = e;
        /* The worker's end goes to the zygote, which hands it to the clone. */
        w->token = spawner_request(t->spawner, sv[1], host_uid(w->host_id), host_gid(w->host_id), spawn_done, w);
        if (!w->token) {
                worker_free(w);
                return NULL;
        }
        loop_timer_arm(w->start_timer, now_ns() + MS(WORKER_START_TIMEOUT_MS));
        return w;
}

/* ---- its session's workspace ------------------------------------------------ */

/* The workspace descriptor for w came (or could not be had): send it as the
 * worker's first frame.  fd is consumed. */
static void worker_hand_workspace(struct worker *w, int err, int fd, const char *why) {
        _cleanup_close_ int owned = fd;
        char msg[512];

        if (err == 0) {
                _cleanup_json_ json_t *m = protocol_workspace();
                err = m ? worker_send_fd(w, m, fd) : -ENOMEM;
                why = NULL;
        }
        if (err < 0) {
                snprintf(msg, sizeof(msg), "could not hand the workspace to the worker: %s",
                         why ? why : strerror(-err));
                /* EPIPE, ECONNRESET: the worker is gone (killed meanwhile),
                 * which another worker may not be. */
                worker_set_fatal(w, err == -EAGAIN || err == -ETIMEDOUT ? err
                                    : err == -EPIPE || err == -ECONNRESET ? -EAGAIN
                                                                         : -EPERM,
                                 msg);
                worker_close_fd(w);
                worker_kill(w, NULL);
        }
}

static void on_worker_fd(void *data, int err, int fd, const char *why) {
        struct worker *w = data;

        w->ws_token = 0;
        worker_hand_workspace(w, err, fd, why);
}

void worker_assign(struct worker *w) {
        struct session *s = w->session;
        int fd = -1, e;

        loop_timer_arm(w->start_timer, now_ns() + MS(WORKER_ATTACH_TIMEOUT_MS));
        e = workspace_worker_fd(s->workspace, on_worker_fd, w, &fd, &w->ws_token);
        if (e == -EINPROGRESS)
                return;
        worker_hand_workspace(w, e, fd, NULL);
}

/* ---- limits ----------------------------------------------------------------- */

/* The kernel's clock id of a process's CPU time (MAKE_PROCESS_CPUCLOCK of
 * include/linux/posix-timers.h, a stable ABI: CPUCLOCK_SCHED is 2).  glibc's
 * clock_getcpuclockid() computes the same and first asks clock_getres()
 * whether the process exists: one system call more per run, and
 * clock_gettime() gives the same EINVAL for a process that is gone.  The
 * pid cannot be a recycled one while the worker is not reaped: the daemon is
 * its parent (CLONE_PARENT). */
static clockid_t process_cpu_clock(pid_t pid) { return (clockid_t)((~(unsigned)pid << 3) | 2u); }

double worker_cpu_s(const struct worker *w) {
        struct timespec ts;

        if (!w || w->pid <= 0 || w->exited || clock_gettime(process_cpu_clock(w->pid), &ts) != 0)
                return 0;
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int worker_apply_limits(struct worker *w, const struct limits *l, double cpu_base_s, bool cpu_only) {
        int first_error, e;

        if (!w || w->pid <= 0 || w->exited)
                return 0;
        if (cpu_only)
                return rlimits_apply(w->pid, l, cpu_base_s, w->reserved_as, true);
        /* The same memory and process counts as a cgroup (where the host
         * allows one): it also counts the worker's tmpfs pages and its
         * children, which RLIMIT_AS and the per-uid RLIMIT_NPROC do not.
         * Refused below what the cgroup holds: then nothing changes. */
        e = cgroup_worker_prepare(w->owner->cgroups, w->cgroup_id, l->v[LIMIT_MEMORY], l->v[LIMIT_NPROC]);
        if (e == -EBUSY)
                return e;
        first_error = rlimits_apply(w->pid, l, cpu_base_s, w->reserved_as, false);
        return first_error ? first_error : e;
}

unsigned long long worker_memory_held(const struct worker *w) {
        unsigned long long held = 0;

        if (w && w->cgroup_id)
                (void)cgroup_worker_memory_held(w->owner->cgroups, w->cgroup_id, &held);
        return held;
}
