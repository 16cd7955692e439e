#include "session.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "escape.h"
#include "frame.h"
#include "hostids.h"
#include "log.h"
#include "loop.h"
#include "json_cleanup.h"
#include "macros.h"
#include "procs.h"
#include "sandbox/cgroup.h"
#include "sandbox/rlimits.h"
#include "sandbox/spawner.h"
#include "tools.h"
#include "utf8.h"
#include "workspace.h"

/* Console bytes a worker may send in one run before it is taken to be
 * flooding us on purpose (what is kept is capped far lower, by
 * console_max_bytes). */
#define CONSOLE_FLOOD_BYTES (64u << 20)
/* A session's own log keeps at most this much (oldest lines dropped). */
#define SESSION_LOG_MAX (1u << 20)
/* result.json names at most this many files a run created or changed. */
#define RUN_FILES_MAX 100
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
/* Deadlines of a worker's start (docs/protocol.md, "Deadlines"): from the
 * spawn request to its "ready" (the zygote's own deadlines come first), and
 * from its assignment to a session to its "attached" (the keeper's copy of
 * the workspace, and the worker's move_mount); a worker that misses one is
 * killed. */
#define WORKER_START_TIMEOUT_MS 15000
#define WORKER_ATTACH_TIMEOUT_MS 5000
/* A new session's mkdir (or open of clone) is answered within this, come
 * what may: it holds the sessions/ directory's lock meanwhile. */
#define SESSION_CREATE_TIMEOUT_MS 10000
/* A worker that failed to start because a helper died under it, or because
 * it stalled itself (-EAGAIN), is replaced this many times in a row before
 * the session gives up (dead, or a failed mkdir): a dead helper is back
 * within a second.  A helper that missed a deadline (-ETIMEDOUT) has made
 * the caller wait that long already: that is reported, not retried. */
#define SESSION_START_RETRIES 2
/* The most address space a worker may say its build reserves (the whole
 * x86-64 user half; a sanitizer's shadow is about 20 TiB). */
#define RESERVED_AS_MAX (1LL << 47)
#define MS(x) ((uint64_t)(x) * 1000000ULL)

enum worker_state { WORKER_SPAWNING, WORKER_READY };
enum interrupt_reason { INTERRUPT_NONE, INTERRUPT_TIMEOUT, INTERRUPT_CTL, INTERRUPT_LIMIT };

/* A host id (docs/security.md, "Who the worker is on the host"): the uid and
 * gid outside the jail of one session's workers, from the daemon's range
 * (root, strict mode).  Held by the session and by each of its workers, a
 * pooled one included, until the session is closed and its last worker
 * reaped; then back to the free set.  NULL where a struct host_id * is
 * expected means the daemon's own uid/gid (unprivileged or none mode). */
struct host_id {
        uint32_t id;
        unsigned refs;
};

struct worker {
        struct sessions *owner;
        struct session *session; /* NULL while pooled or abandoned */
        struct host_id *host_id; /* what its 1000 is on the host (NULL: the daemon's own) */
        enum worker_state state;
        pid_t pid;               /* 0 until the zygote says */
        int fd;                  /* our end of its socket; -1 once closed */
        uint64_t token;          /* spawn request in flight, 0 when none */
        uint64_t cgroup_id;      /* its cgroup: w<spawn token> */
        struct frame_reader rd;
        struct loop_timer *resume; /* reading goes on here when the budget ran out */
        struct loop_timer *leftover_check; /* looks for processes a run left */
        uint64_t last_leftover_check_ns;
        unsigned long long oom_kills_seen; /* its cgroup's OOM kill count, last read */
        struct text out;         /* frames not yet written */
        size_t out_off;
        char *fatal;             /* reason from a "fatal" frame, or why it failed to start */
        int start_err;           /* with fatal: -EAGAIN (a helper or the worker died, or the worker
                                  * stalled: worth another worker), -ETIMEDOUT (a helper missed a
                                  * deadline: report it), -EPERM (the jail: the default) */
        char *kill_reason;       /* set when we killed it on purpose */
        struct loop_timer *start_timer; /* its start or attach deadline */
        struct workspace *ws_pending;   /* the keeper's copy of it is on its way ... */
        uint64_t ws_token;              /* ... under this token */
        long long reserved_as;   /* address space its build reserves (its "ready" frame) */
        bool got_ready;          /* its "ready" frame came */
        bool attached;           /* its "attached" frame came: /work is its session's */
        bool abandoned;          /* its session closed or restarted; just reap it */
        bool exited;
        bool watching_out;       /* EPOLLOUT is on: the socket was full */
        bool resume_armed;
        bool leftover_check_armed;
        int exit_status;
        double cpu_s;            /* CPU used, from wait4's rusage */
        struct worker *prev, *next; /* all workers */
        struct worker *pool_next;   /* idle pool, when pooled */
};

struct run {
        uint64_t seq;
        char *code;
        size_t code_len;
        bool sent;
        uint64_t start_ns;
        enum interrupt_reason interrupt;
        double cpu_base_s;
        size_t console_received;
        bool console_truncated;
        struct text console;         /* exactly what the run printed (result.json) */
        /* What the console file shows once the run printed a control
         * character (common/escape.h): console's bytes with those escaped,
         * grown frame by frame (a frame holds whole UTF-8 characters).
         * Until then the file shows console itself. */
        struct text console_shown;
        bool console_escaped;
        struct loop_timer *deadline; /* the timeout, then the grace period */
        bool in_grace;
        unsigned tool_calls;         /* tool_call frames in this run */
        struct workspace_snapshot *before; /* the workspace when the run was sent */
        /* Set when the daemon stopped the run on a limit of its own
         * (INTERRUPT_LIMIT): "tool_calls", "cpu" or "memory", and why. */
        const char *stop_limit;
        char stop_reason[256];
        unsigned calls_dropped;      /* tool_call frames after the stop: not answered */
        struct loop_timer *monitor;  /* session-wide CPU and memory */
        bool monitored;              /* the monitor has looked once */
        uint64_t next_pss_ns;        /* the exact memory count, not before */
        double reaped_base_s;        /* the worker's cutime+cstime at that first look */
};

struct sessions {
        struct loop *loop;
        const struct options *opt;
        struct session_events ev;
        struct spawner *spawner;
        struct tools *tools;
        struct cgroup_tree *cgroups; /* a cgroup per worker, where possible */
        struct workspaces *workspaces; /* NULL when they could not be set up */
        struct id_pool *ids;     /* root, strict: the id range (-o id_range); else NULL */
        char workspaces_error[512];
        struct audit *audit;
        struct session *first, *last;
        unsigned n_sessions;
        uint64_t next_id;
        uint64_t next_auto_name;
        struct worker *workers;
        struct worker *pool; /* ready, unassigned */
        unsigned pool_ready, pool_starting;
        struct loop_timer *pool_timer;
        uint64_t pool_backoff_until;
        uint64_t start_ns;
        char last_start_error[512]; /* why the last worker could not start */
        struct {
                uint64_t sessions_created, executions, errors, timeouts, crashes, killed, interrupts,
                        restarts, tool_calls, protocol_violations;
        } stats;
};

static const char *const status_words[] = {"ok", "error", "timeout", "killed", "crashed"};

/* ---- results ----------------------------------------------------------- */

struct result *result_ref(struct result *r) {
        if (r)
                r->refs++;
        return r;
}

void result_unref(struct result *r) {
        if (!r || --r->refs > 0)
                return;
        text_free(&r->output);
        text_free(&r->error);
        text_free(&r->console);
        text_free(&r->result_json);
        text_free(&r->value_json);
        free(r);
}

/* ---- audit ------------------------------------------------------------- */

static void session_log_event(struct sessions *t, struct session *s, json_t *ev) {
        size_t len;
        char *line;

        if (s)
                json_object_set_new(ev, "session", json_string(s->name));
        line = audit_format(ev, &len);
        if (!line)
                return;
        audit_write(t->audit, line, len);
        if (s) {
                if (s->log.len + len > SESSION_LOG_MAX) {
                        /* Drop the older half, at a line boundary. */
                        char *cut = memchr(s->log.data + s->log.len / 2, '\n', s->log.len - s->log.len / 2);
                        size_t keep = cut ? s->log.len - (size_t)(cut + 1 - s->log.data) : 0;
                        memmove(s->log.data, s->log.data + s->log.len - keep, keep);
                        s->log.len = keep;
                }
                text_append(&s->log, line, len);
        }
        free(line);
}

int sessions_open_audit(struct sessions *t, const char *path) {
        return audit_open(path, &t->audit);
}

/* ---- workers ----------------------------------------------------------- */

static void worker_on_io(int fd, uint32_t events, void *data);
static void worker_on_resume(void *data);
static void worker_on_leftover_check(void *data);
static void pool_fill(struct sessions *t);
static void session_worker_ready(struct session *s);
static void session_worker_lost(struct session *s, struct worker *w);
static void session_acquire_worker(struct session *s);

/* ---- host ids -------------------------------------------------------------- */

/* A fresh id for a new pooled worker or session: 0 with *out (NULL when the
 * daemon has no range: its own ids are the only ones), or -ENOSPC when
 * every id of the range is held, or -ENOMEM. */
static int host_id_take(struct sessions *t, struct host_id **out) {
        struct host_id *h;
        uint32_t id;
        int e;

        *out = NULL;
        if (!t->ids)
                return 0;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        e = id_pool_take(t->ids, &id);
        if (e < 0) {
                free(h);
                return e;
        }
        *h = (struct host_id){.id = id, .refs = 1};
        *out = h;
        return 0;
}

static struct host_id *host_id_ref(struct host_id *h) {
        if (h)
                h->refs++;
        return h;
}

static void host_id_unref(struct sessions *t, struct host_id *h) {
        if (!h || --h->refs > 0)
                return;
        id_pool_put(t->ids, h->id);
        free(h);
}

static uid_t host_uid(const struct host_id *h) { return h ? (uid_t)h->id : getuid(); }
static gid_t host_gid(const struct host_id *h) { return h ? (gid_t)h->id : getgid(); }

static void worker_close_fd(struct worker *w) {
        if (w->fd < 0)
                return;
        loop_del_fd(w->owner->loop, w->fd);
        close(w->fd);
        w->fd = -1;
}

static void worker_kill(struct worker *w, const char *reason) {
        if (reason && !w->kill_reason)
                w->kill_reason = strdup(reason);
        if (w->pid > 0 && !w->exited)
                kill(w->pid, SIGKILL);
        if (w->token) {
                spawner_cancel(w->owner->spawner, w->token);
                w->token = 0;
        }
        if (w->ws_token) {
                workspace_cancel(w->ws_pending, w->ws_token);
                w->ws_token = 0;
                w->ws_pending = NULL;
        }
        loop_timer_arm(w->start_timer, 0);
}

/* Record why w failed to start (the first reason wins). */
static void worker_set_fatal(struct worker *w, int err, const char *why) {
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

static void worker_free(struct worker *w) {
        struct sessions *t = w->owner;

        /* Freed before it was reaped (the daemon is shutting down): its
         * exit, if it still comes, is nobody's. */
        if (w->pid > 0 && !w->exited)
                loop_unwatch_child(t->loop, w->pid);
        worker_close_fd(w);
        if (w->ws_token)
                workspace_cancel(w->ws_pending, w->ws_token);
        loop_timer_free(w->start_timer);
        if (t->opt->sandbox_none && w->pid > 0 && w->exited)
                sweep_private_dir(w->pid);
        if (w->cgroup_id)
                cgroup_worker_remove(t->cgroups, w->cgroup_id);
        if (w->prev)
                w->prev->next = w->next;
        else
                t->workers = w->next;
        if (w->next)
                w->next->prev = w->prev;
        frame_reader_free(&w->rd);
        loop_timer_free(w->resume);
        loop_timer_free(w->leftover_check);
        text_free(&w->out);
        free(w->fatal);
        free(w->kill_reason);
        /* Reaped (or never started): its id may go back once its session
         * lets go of it too. */
        host_id_unref(t, w->host_id);
        free(w);
}

static void pool_remove(struct sessions *t, struct worker *w) {
        for (struct worker **pp = &t->pool; *pp; pp = &(*pp)->pool_next)
                if (*pp == w) {
                        *pp = w->pool_next;
                        w->pool_next = NULL;
                        t->pool_ready--;
                        return;
                }
}

/* The worker is gone for good (reaped, or never started): tell whoever had
 * it, then free it. */
static void worker_finish(struct worker *w) {
        struct sessions *t = w->owner;
        struct session *s = w->session;

        if (s) {
                session_worker_lost(s, w);
        } else if (w->abandoned) {
                /* nothing waits for it */
        } else if (w->state == WORKER_READY) {
                pool_remove(t, w);
        } else {
                /* A pool worker that never became ready: back off so that a
                 * jail that cannot be built does not spin. */
                t->pool_starting--;
                t->pool_backoff_until = now_ns() + 2000000000ULL;
                snprintf(t->last_start_error, sizeof(t->last_start_error), "%s",
                         w->fatal ? w->fatal : "the worker exited while starting");
                log_error("pool worker could not start: %s", t->last_start_error);
        }
        worker_free(w);
        pool_fill(t);
}

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
                                        memmove(w->out.data, w->out.data + w->out_off, w->out.len - w->out_off);
                                        w->out.len -= w->out_off;
                                        w->out_off = 0;
                                }
                                if (w->watching_out)
                                        return 0;
                                w->watching_out = true;
                                return loop_mod_fd(w->owner->loop, w->fd, EPOLLIN | EPOLLOUT);
                        }
                        return -errno;
                }
                w->out_off += (size_t)n;
        }
        w->out.len = w->out_off = 0;
        /* An epoll_ctl() only when the watch changes: a reply per tool call
         * must not cost two system calls. */
        if (!w->watching_out)
                return 0;
        w->watching_out = false;
        return loop_mod_fd(w->owner->loop, w->fd, EPOLLIN);
}

static void worker_protocol_violation(struct worker *w, const char *what);

static int worker_send(struct worker *w, json_t *msg) {
        _cleanup_free_ char *buf = NULL;
        size_t len;
        int e;

        if (w->fd < 0)
                return -EPIPE;
        e = frame_encode(msg, &buf, &len);
        if (e < 0)
                return e;
        e = text_append(&w->out, buf, len);
        if (e < 0)
                return e;
        e = worker_flush_out(w);
        /* During a run we only send what the worker asked for: one that
         * lets this pile up has stopped reading its replies (docs/protocol.md). */
        if (e == 0 && w->out.len - w->out_off > OUT_QUEUE_MAX && w->session && w->session->run &&
            w->session->run->sent) {
                worker_protocol_violation(w, "it stopped reading its replies: over 8 MiB queued");
                return -ENOBUFS;
        }
        return e;
}

static void worker_protocol_violation(struct worker *w, const char *what) {
        struct sessions *t = w->owner;
        char reason[256];

        t->stats.protocol_violations++;
        snprintf(reason, sizeof(reason), "the worker broke the protocol (%s)", what);
        log_warn("session %s: %s; killing it", w->session ? w->session->name : "(pool)", reason);
        worker_close_fd(w);
        worker_kill(w, reason);
}

static void spawn_done(void *data, pid_t pid, int err, const char *why);

/* Free a worker that worker_spawn() had not linked in yet. */
static void worker_spawn_undo(struct worker *w, int sv[2]) {
        if (sv) {
                close(sv[0]);
                close(sv[1]);
        }
        loop_timer_free(w->resume);
        loop_timer_free(w->leftover_check);
        loop_timer_free(w->start_timer);
        host_id_unref(w->owner, w->host_id);
        free(w);
}

/* The worker missed its start or attach deadline: it is killed, and fails to
 * start as if it had died (worker_finish). */
static void on_worker_start_timeout(void *data) {
        struct worker *w = data;
        char why[160];

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

/* A new worker for session s (NULL: for the pool), mapped to host id h
 * (which it holds a reference to; NULL: the daemon's own ids). */
static struct worker *worker_spawn(struct sessions *t, struct session *s, struct host_id *h) {
        struct worker *w = calloc(1, sizeof(*w));
        int sv[2];

        if (!w)
                return NULL;
        w->resume = loop_timer_new(t->loop, worker_on_resume, w);
        w->leftover_check = loop_timer_new(t->loop, worker_on_leftover_check, w);
        w->start_timer = loop_timer_new(t->loop, on_worker_start_timeout, w);
        if (!w->resume || !w->leftover_check || !w->start_timer) {
                worker_spawn_undo(w, NULL);
                return NULL;
        }
        /* Only our end is non-blocking: the worker reads with blocking calls. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                worker_spawn_undo(w, NULL);
                return NULL;
        }
        if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
                worker_spawn_undo(w, sv);
                return NULL;
        }
        w->owner = t;
        w->session = s;
        w->host_id = host_id_ref(h);
        w->fd = sv[0];
        frame_reader_init(&w->rd, FRAME_MAX_BYTES);
        if (loop_add_fd(t->loop, w->fd, EPOLLIN, worker_on_io, w) < 0) {
                worker_spawn_undo(w, sv);
                return NULL;
        }
        w->next = t->workers;
        if (t->workers)
                t->workers->prev = w;
        t->workers = w;
        /* Its cgroup exists before the clone that joins it. */
        w->cgroup_id = spawner_next_token(t->spawner);
        if (cgroup_worker_prepare(t->cgroups, w->cgroup_id, (s ? &s->limits : &t->opt->limits)->v[LIMIT_MEMORY],
                                  (s ? &s->limits : &t->opt->limits)->v[LIMIT_NPROC]) < 0)
                log_warn("worker cgroup: %s", strerror(errno));
        /* The worker's end goes to the zygote, which hands it to the clone. */
        w->token = spawner_request(t->spawner, sv[1], host_uid(w->host_id), host_gid(w->host_id), spawn_done, w);
        if (!w->token) {
                worker_free(w);
                return NULL;
        }
        loop_timer_arm(w->start_timer, now_ns() + MS(WORKER_START_TIMEOUT_MS));
        return w;
}

static void worker_reaped(struct worker *w);

/* Send a frame with one descriptor attached (SCM_RIGHTS on its bytes).  Only
 * when nothing is queued to the worker, which holds for the workspace frame:
 * it is the first thing a worker is sent.  0 or -errno. */
static int worker_send_fd(struct worker *w, json_t *msg, int fd) {
        _cleanup_free_ char *buf = NULL;
        union {
                struct cmsghdr align;
                char space[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                            .msg_controllen = sizeof(control.space)};
        struct cmsghdr *c;
        size_t len;
        ssize_t n;
        int e;

        if (w->fd < 0 || w->out.len > 0)
                return -EPIPE;
        e = frame_encode(msg, &buf, &len);
        if (e < 0)
                return e;
        memset(&control, 0, sizeof(control));
        iov = (struct iovec){.iov_base = buf, .iov_len = len};
        c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        do
                n = sendmsg(w->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if ((size_t)n < len) {
                e = text_append(&w->out, buf + n, len - (size_t)n);
                return e < 0 ? e : worker_flush_out(w);
        }
        return 0;
}

/* The workspace descriptor for w came (or could not be had): send it as the
 * worker's first frame.  fd is consumed. */
static void worker_hand_workspace(struct worker *w, int err, int fd, const char *why) {
        _cleanup_close_ int owned = fd;
        char msg[512];

        if (err == 0) {
                _cleanup_json_ json_t *m = json_pack("{s:s}", "type", "workspace");
                err = m ? worker_send_fd(w, m, fd) : -ENOMEM;
                why = NULL;
        }
        if (err < 0) {
                snprintf(msg, sizeof(msg), "could not hand the workspace to the worker: %s",
                         why ? why : strerror(-err));
                worker_set_fatal(w, err == -EAGAIN || err == -ETIMEDOUT ? err : -EPERM, msg);
                worker_close_fd(w);
                worker_kill(w, NULL);
        }
}

static void on_worker_fd(void *data, int err, int fd, const char *why) {
        struct worker *w = data;

        w->ws_token = 0;
        w->ws_pending = NULL;
        worker_hand_workspace(w, err, fd, why);
}

/* w (ready, jailed but for /work) now belongs to a session: hand it the
 * session's workspace (a copy of its mount from the keeper, asynchronously).
 * It counts as the session's worker once it answers "attached", within
 * WORKER_ATTACH_TIMEOUT_MS; if it cannot be given the workspace it is
 * killed, which session_worker_lost() reports as a failed start. */
static void worker_assign(struct worker *w) {
        struct session *s = w->session;
        int fd = -1, e;

        loop_timer_arm(w->start_timer, now_ns() + MS(WORKER_ATTACH_TIMEOUT_MS));
        e = workspace_worker_fd(s->workspace, on_worker_fd, w, &fd, &w->ws_token);
        if (e == -EINPROGRESS) {
                w->ws_pending = s->workspace;
                return;
        }
        worker_hand_workspace(w, e, fd, NULL);
}

/* A worker is ready once both its "ready" frame and the zygote's word of its
 * pid have come (they travel on different sockets, in either order): only
 * then may it be signalled or limited. */
static void worker_check_ready(struct worker *w) {
        struct sessions *t = w->owner;

        if (!w->got_ready || w->pid <= 0 || w->exited || w->state != WORKER_SPAWNING)
                return;
        w->state = WORKER_READY;
        loop_timer_arm(w->start_timer, 0);
        if (w->session) {
                worker_assign(w);
        } else if (!w->abandoned) {
                t->pool_starting--;
                w->pool_next = t->pool;
                t->pool = w;
                t->pool_ready++;
        }
}

static double rusage_cpu_s(const struct rusage *ru) {
        return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
               ru->ru_stime.tv_usec / 1e6;
}

/* A worker's child-exit watch (loop_watch_child, from spawn_done). */
static void worker_exited(pid_t pid, int status, const struct rusage *ru, void *data) {
        struct worker *w = data;

        w->exited = true;
        w->exit_status = status;
        w->cpu_s = rusage_cpu_s(ru);
        worker_reaped(w);
}

static void spawn_done(void *data, pid_t pid, int err, const char *why) {
        struct worker *w = data;
        struct loop *l = w->owner->loop;
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
        if (loop_take_exit(l, pid, &status, &ru)) {
                worker_exited(pid, status, &ru, w);
                return;
        }
        if (loop_watch_child(l, pid, worker_exited, w) < 0) {
                /* Its exit would reach nobody (out of memory): stop it now;
                 * the loop reaps it as an unclaimed child. */
                kill(pid, SIGKILL);
                worker_set_fatal(w, -EAGAIN, "out of memory watching the worker's exit");
                worker_close_fd(w);
                w->exited = true;
                worker_finish(w);
                return;
        }
        worker_check_ready(w);
}

/* ---- frames from the worker ------------------------------------------- */

static bool json_is_string_array(const json_t *a, size_t max) {
        size_t i;
        json_t *v;

        if (!json_is_array(a) || json_array_size(a) > max)
                return false;
        json_array_foreach(a, i, v) if (!json_is_string(v)) return false;
        return true;
}

static void run_free(struct run *r) {
        if (!r)
                return;
        loop_timer_free(r->deadline);
        loop_timer_free(r->monitor);
        workspace_snapshot_free(r->before);
        free(r->code);
        text_free(&r->console);
        text_free(&r->console_shown);
        free(r);
}

static void publish_result(struct session *s, struct result *res);
static void run_stop_on_limit(struct session *s, const char *limit, const char *reason);
static void run_kill_processes(struct session *s);
static void on_run_monitor(void *data);
static void schedule_leftover_check(struct session *s);

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

static void console_add(struct session *s, const char *text, size_t n) {
        struct sessions *t = s->owner;
        struct run *r = s->run;
        size_t room;

        if (r->console_truncated)
                return;
        room = (size_t)t->opt->console_max_bytes > r->console.len ? (size_t)t->opt->console_max_bytes - r->console.len : 0;
        if (n > room) {
                char marker[128];
                /* Cut at a character boundary so the file stays UTF-8. */
                while (room > 0 && ((unsigned char)text[room] & 0xC0) == 0x80)
                        room--;
                console_show(r, text, room);
                text_append(&r->console, text, room);
                snprintf(marker, sizeof(marker), "\n[console output truncated at %lld bytes]\n",
                         (long long)t->opt->console_max_bytes);
                console_show(r, marker, strlen(marker));
                text_append(&r->console, marker, strlen(marker));
                r->console_truncated = true;
        } else {
                console_show(r, text, n);
                text_append(&r->console, text, n);
        }
        if (t->ev.console_grew)
                t->ev.console_grew(s);
}

/* Append text to a file people read with cat (output, error): control
 * characters shown escaped, newlines and tabs kept (common/escape.h). */
static void text_append_shown(struct text *t, const char *text, size_t n) {
        char *escaped;
        size_t len;

        if (!text_needs_escape(text, n, ESCAPE_KEEP_LINES)) {
                text_append(t, text, n);
                return;
        }
        escaped = text_escape_dup(text, n, ESCAPE_KEEP_LINES, &len);
        if (escaped)
                text_append(t, escaped, len);
        free(escaped);
}

/* Build the published result of the run under way. */
static struct result *result_build(struct session *s, enum run_status status, const char *output,
                                   const char *error, json_t *value, const char *value_note, json_t *warnings,
                                   const char *limit) {
        struct run *r = s->run;
        struct result *res = calloc(1, sizeof(*res));
        _cleanup_free_ char *rj = NULL, *vj = NULL;
        double elapsed_ms = (double)(now_ns() - r->start_ns) / 1e6;
        char full_note[4096] = "";
        json_t *j;

        if (!res)
                return NULL;
        /* A write that failed because the workspace is full reads "No space
         * left on device" in R; say which limit that was. */
        if (status != RUN_OK && error && strstr(error, "No space left on device") && s->workspace &&
            workspace_usage(s->workspace) + (64 << 10) >= s->owner->opt->files_max_bytes) {
                snprintf(full_note, sizeof(full_note), "%.3800s (the workspace /work is full: files_max_bytes is %lld bytes)",
                         error, s->owner->opt->files_max_bytes);
                error = full_note;
        }
        res->refs = 1;
        res->seq = r->seq;
        res->status = status;
        res->console = r->console;
        r->console = (struct text){0};
        if (status == RUN_OK) {
                text_append_shown(&res->output, output, strlen(output));
                text_append(&res->output, "\n", 1);
                vj = json_dumps(value ? value : json_null(), JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
                if (vj) {
                        text_append(&res->value_json, vj, strlen(vj));
                        text_append(&res->value_json, "\n", 1);
                }
        } else {
                text_append_shown(&res->error, error, strlen(error));
                text_append(&res->error, "\n", 1);
        }
        j = json_pack("{s:I, s:s, s:O?, s:s?, s:s, s:s%, s:o, s:f, s:I}", "seq", (json_int_t)r->seq, "status",
                      status_words[status], "value", status == RUN_OK ? (value ? value : json_null()) : NULL,
                      "output", status == RUN_OK ? output : NULL, "error", status == RUN_OK ? "" : error, "console",
                      res->console.data ? res->console.data : "", res->console.len, "warnings",
                      warnings ? json_incref(warnings) : json_array(), "elapsed_ms", round(elapsed_ms * 1000) / 1000,
                      "tool_calls", (json_int_t)r->tool_calls);
        if (j && value_note)
                json_object_set_new(j, "value_note", json_string(value_note));
        if (j && !limit && full_note[0])
                json_object_set_new(j, "limit", json_string("files"));
        if (j && limit)
                json_object_set_new(j, "limit", json_string(limit));
        if (j) {
                bool truncated = false;
                json_t *files = r->before ? workspace_changes(s->workspace, r->before, RUN_FILES_MAX, &truncated)
                                          : json_array();
                json_object_set_new(j, "files", files ? files : json_array());
                if (truncated)
                        json_object_set_new(j, "files_truncated", json_true());
        }
        if (j) {
                rj = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
                json_decref(j);
        }
        if (rj) {
                text_append(&res->result_json, rj, strlen(rj));
                text_append(&res->result_json, "\n", 1);
        }
        /* result.json has the exact text; from now on the console file
         * shows the escaped one. */
        if (r->console_escaped) {
                text_free(&res->console);
                res->console = r->console_shown;
                r->console_shown = (struct text){0};
        }
        return res;
}

/* End the run under way with a result made here (not by the worker);
 * limit names the limit that ended it, or NULL. */
static void end_run_limit(struct session *s, enum run_status status, const char *error, const char *limit) {
        struct result *res = result_build(s, status, NULL, error, NULL, NULL, NULL, limit);

        if (res)
                publish_result(s, res);
}

static void end_run(struct session *s, enum run_status status, const char *error) {
        end_run_limit(s, status, error, NULL);
}

static bool limit_name_valid(const char *name) {
        if (name)
                for (int i = 0; i < LIMIT_COUNT; i++)
                        if (strcmp(name, limit_names[i]) == 0)
                                return true;
        return false;
}

static void handle_result(struct worker *w, json_t *m) {
        struct session *s = w->session;
        struct run *r = s ? s->run : NULL;
        json_t *seq = json_object_get(m, "seq"), *value = json_object_get(m, "value");
        const char *status = json_string_value(json_object_get(m, "status"));
        const char *output = json_string_value(json_object_get(m, "output"));
        const char *error = json_string_value(json_object_get(m, "error"));
        json_t *note = json_object_get(m, "value_note"), *limit = json_object_get(m, "limit");
        json_t *warnings = json_object_get(m, "warnings");
        enum run_status st;
        char msg[512];
        struct result *res;

        if (!r || !r->sent || !json_is_integer(seq) || (uint64_t)json_integer_value(seq) != r->seq || !status ||
            !output || !error || !json_is_string_array(warnings, 1000) ||
            (note && !json_is_string(note)) || (limit && !limit_name_valid(json_string_value(limit)))) {
                worker_protocol_violation(w, "malformed result");
                return;
        }
        if (strcmp(status, "ok") == 0) {
                st = RUN_OK;
        } else if (strcmp(status, "error") == 0) {
                st = RUN_ERROR;
        } else if (strcmp(status, "interrupted") == 0) {
                if (r->interrupt == INTERRUPT_TIMEOUT) {
                        st = RUN_TIMEOUT;
                        snprintf(msg, sizeof(msg),
                                 "Timed out after %g s: the run was interrupted; the session's state is kept.",
                                 s->timeout_s);
                } else {
                        st = RUN_ERROR;
                        snprintf(msg, sizeof(msg), "Interrupted%s; the session's state is kept.",
                                 r->interrupt == INTERRUPT_CTL ? " (ctl interrupt)" : "");
                }
                error = msg;
        } else {
                worker_protocol_violation(w, "unknown result status");
                return;
        }
        if (st != RUN_OK && !*error)
                error = "Error (no message)";
        if (r->interrupt == INTERRUPT_LIMIT) {
                /* Whatever R made of the interrupt (it may even have caught
                 * it and returned a value), the run went past a limit. */
                snprintf(msg, sizeof(msg), "%s: the run was stopped; the session's state is kept.", r->stop_reason);
                st = RUN_ERROR;
                error = msg;
                limit = NULL;
        }
        res = result_build(s, st, output, error, value, json_string_value(note), warnings,
                           r->interrupt == INTERRUPT_LIMIT ? r->stop_limit : json_string_value(limit));
        if (res)
                publish_result(s, res);
}

static void handle_frame(struct worker *w, json_t *m) {
        const char *type = frame_type(m);

        if (strcmp(type, "ready") == 0 && w->state == WORKER_SPAWNING && !w->got_ready) {
                /* Sent before any user code ran in the worker: what its build
                 * reserves is believed, within bounds (docs/protocol.md). */
                json_t *reserved = json_object_get(m, "reserved_bytes");
                if (reserved && (!json_is_integer(reserved) || json_integer_value(reserved) < 0 ||
                                 json_integer_value(reserved) > RESERVED_AS_MAX)) {
                        worker_protocol_violation(w, "malformed ready frame");
                        return;
                }
                w->reserved_as = reserved ? (long long)json_integer_value(reserved) : 0;
                w->got_ready = true;
                worker_check_ready(w);
                return;
        }
        if (strcmp(type, "attached") == 0 && w->state == WORKER_READY && w->session && !w->attached &&
            !w->ws_token) {
                w->attached = true;
                loop_timer_arm(w->start_timer, 0);
                session_worker_ready(w->session);
                return;
        }
        if (strcmp(type, "fatal") == 0 && (w->state == WORKER_SPAWNING || !w->attached)) {
                const char *e = json_string_value(json_object_get(m, "error"));
                free(w->fatal);
                w->fatal = strndup(e ? e : "unknown", 1000);
                return; /* it exits; worker_reaped() reports it */
        }
        if (strcmp(type, "console") == 0 && w->state == WORKER_READY && w->session && w->session->run &&
            w->session->run->sent) {
                struct run *r = w->session->run;
                json_t *seq = json_object_get(m, "seq");
                json_t *text = json_object_get(m, "text");
                if (!json_is_integer(seq) || (uint64_t)json_integer_value(seq) != r->seq || !json_is_string(text) ||
                    json_string_length(text) > 65536) {
                        worker_protocol_violation(w, "malformed console frame");
                        return;
                }
                r->console_received += json_string_length(text);
                if (r->console_received > CONSOLE_FLOOD_BYTES) {
                        worker_protocol_violation(w, "console flood");
                        return;
                }
                console_add(w->session, json_string_value(text), json_string_length(text));
                return;
        }
        if (strcmp(type, "result") == 0 && w->state == WORKER_READY) {
                handle_result(w, m);
                return;
        }
        if (strcmp(type, "tool_call") == 0 && w->state == WORKER_READY && w->session && w->session->run &&
            w->session->run->sent) {
                struct run *r = w->session->run;
                const char *why = "malformed tool_call";

                /* Calls after the run was stopped on a limit are dropped:
                 * not answered, not logged one by one (counted for the
                 * run's summary line). */
                if (r->stop_limit) {
                        r->calls_dropped++;
                        return;
                }
                /* Past max_tool_calls the run ends, whatever the call:
                 * even refused ones (an unknown tool) cost us a reply and
                 * an audit line each. */
                if (r->tool_calls >= w->owner->opt->max_tool_calls) {
                        char reason[128];
                        snprintf(reason, sizeof(reason), "The run made more than %u tool calls (max_tool_calls)",
                                 w->owner->opt->max_tool_calls);
                        r->calls_dropped++;
                        run_stop_on_limit(w->session, "tool_calls", reason);
                        return;
                }

                /* The frame's shape is checked there; a refused call (an
                 * unknown tool, bad arguments) is answered, not fatal. */
                if (tools_handle_call(w->owner->tools, w->session, m, r->seq, r->tool_calls, &why) < 0) {
                        worker_protocol_violation(w, why);
                        return;
                }
                r->tool_calls++;
                w->owner->stats.tool_calls++;
                return;
        }
        worker_protocol_violation(w, "unexpected frame");
}

/* Read and handle the frames available, within the per-wake-up budget
 * (READ_BUDGET_*) unless all is true: a worker that writes as fast as we
 * read must not keep the loop from its timers and other file descriptors.
 * all is for a worker that is gone, whose last frames are in the socket
 * (bounded by its buffer, as nobody writes any more). */
static void worker_read(struct worker *w, bool all) {
        unsigned frames = 0;
        size_t bytes = 0;

        for (;;) {
                json_t *m = NULL;
                long n;
                int e = 0;

                while ((all || frames < READ_BUDGET_FRAMES) && (e = frame_reader_next(&w->rd, &m)) == 1) {
                        frames++;
                        handle_frame(w, m);
                        json_decref(m);
                        if (w->fd < 0)
                                return;
                }
                if (e < 0) {
                        worker_protocol_violation(w, e == -EMSGSIZE ? "frame too large" : "malformed frame");
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
                        /* End of file: the worker is exiting.  Its exit status
                         * (reaped soon) says how. */
                        worker_close_fd(w);
                        if (w->pid > 0 && !w->exited)
                                kill(w->pid, SIGKILL);
                        return;
                }
                bytes += (size_t)n;
        }
}

static void worker_on_resume(void *data) {
        struct worker *w = data;

        w->resume_armed = false;
        if (w->fd >= 0)
                worker_read(w, false);
}

static void worker_on_io(int fd, uint32_t events, void *data) {
        struct worker *w = data;

        if (events & EPOLLOUT) {
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

static void worker_reaped(struct worker *w) {
        /* Frames it sent before dying (a fatal reason, a last result) are
         * still in the socket: take them first. */
        if (w->fd >= 0)
                worker_read(w, true);
        worker_close_fd(w);
        worker_finish(w);
}

/* ---- the pool ---------------------------------------------------------- */

static void on_pool_timer(void *data) { pool_fill(data); }

static void pool_fill(struct sessions *t) {
        uint64_t now = now_ns();

        if (now < t->pool_backoff_until) {
                loop_timer_arm(t->pool_timer, t->pool_backoff_until);
                return;
        }
        while (t->pool_ready + t->pool_starting < t->opt->pool) {
                /* Each pooled worker has an id of its own, which the session
                 * it goes to adopts (sessions_create). */
                struct host_id *h;
                struct worker *w;

                if (host_id_take(t, &h) < 0)
                        return;
                w = worker_spawn(t, NULL, h);
                host_id_unref(t, h);
                if (!w)
                        return;
                t->pool_starting++;
        }
}

/* ---- limits ------------------------------------------------------------ */

static double process_cpu_s(pid_t pid) {
        clockid_t cid;
        struct timespec ts;

        if (clock_getcpuclockid(pid, &cid) != 0 || clock_gettime(cid, &ts) != 0)
                return 0;
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The session's limits on its worker: the rlimits from outside
 * (sandbox/rlimits.h, which says why only soft limits change), and unless
 * cpu_only the same memory and process counts as a cgroup (where the host
 * allows one), which also counts the worker's tmpfs pages and its children
 * that RLIMIT_AS and the per-uid RLIMIT_NPROC do not.  0 or the first
 * -errno. */
static int apply_limits(struct session *s, double cpu_base_s, bool cpu_only) {
        struct worker *w = s->worker;
        int first_error, e;

        if (!w || w->pid <= 0 || w->exited)
                return 0;
        first_error = rlimits_apply(w->pid, &s->limits, cpu_base_s, w->reserved_as, cpu_only);
        if (cpu_only)
                return first_error;
        e = cgroup_worker_prepare(s->owner->cgroups, w->cgroup_id, s->limits.v[LIMIT_MEMORY], s->limits.v[LIMIT_NPROC]);
        if (e < 0 && !first_error)
                first_error = e;
        return first_error;
}

/* ---- sessions ---------------------------------------------------------- */

bool session_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n == 0 || n > 64 || name[0] == '.')
                return false;
        return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

struct session *sessions_find(struct sessions *t, const char *name) {
        for (struct session *s = t->first; s; s = s->next)
                if (strcmp(s->name, name) == 0)
                        return s;
        return NULL;
}

struct session *sessions_find_id(struct sessions *t, uint64_t id) {
        for (struct session *s = t->first; s; s = s->next)
                if (s->id == id)
                        return s;
        return NULL;
}

struct session *sessions_next(struct sessions *t, uint64_t after) {
        for (struct session *s = t->first; s; s = s->next)
                if (s->id > after)
                        return s;
        return NULL;
}

const char *session_state_word(const struct session *s) {
        static const char *const words[] = {"starting", "idle", "running", "dead"};
        return words[s->state];
}

const struct text *session_console(const struct session *s) {
        static const struct text empty = {(char *)"", 0, 0};

        if (s->run && s->run->sent)
                return s->run->console_escaped ? &s->run->console_shown : &s->run->console;
        if (s->last)
                return &s->last->console;
        return &empty;
}

bool session_busy(const struct session *s) { return s->run != NULL; }

const struct options *sessions_options(const struct sessions *t) { return t->opt; }

void *session_events_data(const struct session *s) { return s->owner->ev.data; }

static void send_run(struct session *s) {
        struct run *r = s->run;
        struct worker *w = s->worker;
        _cleanup_json_ json_t *m = NULL;

        r->cpu_base_s = process_cpu_s(w->pid);
        /* Only the CPU limit changes from run to run (the others are set
         * when the worker is assigned and when limits is written): keep
         * this path to two cheap syscalls. */
        apply_limits(s, r->cpu_base_s, true);
        /* What the workspace held, to tell what the run changes (an empty
         * workspace costs one statfs). */
        r->before = workspace_snapshot(s->workspace);
        m = json_pack("{s:s, s:I, s:s%, s:o}", "type", "exec", "seq", (json_int_t)r->seq, "code", r->code,
                      r->code_len, "limits", limits_to_json(&s->limits));
        free(r->code);
        r->code = NULL;
        r->sent = true;
        r->start_ns = now_ns();
        s->state = SESSION_RUNNING;
        if (!m || worker_send(w, m) < 0) {
                worker_close_fd(w);
                worker_kill(w, "could not send the run to the worker");
                return;
        }
        if (s->timeout_s > 0)
                loop_timer_arm(r->deadline, r->start_ns + (uint64_t)(s->timeout_s * 1e9));
        /* Runs shorter than this never meet the monitor. */
        if (s->limits.v[LIMIT_CPU] != LIMIT_UNSET || s->limits.v[LIMIT_MEMORY] != LIMIT_UNSET)
                loop_timer_arm(r->monitor, r->start_ns + MONITOR_AFTER_NS);
}

static void publish_result(struct session *s, struct result *res) {
        struct sessions *t = s->owner;
        struct run *r = s->run;

        t->stats.executions++;
        if (r->sent)
                tools_run_summary(t->tools, s, r->seq, r->calls_dropped);
        if (res->status == RUN_ERROR)
                t->stats.errors++;
        else if (res->status == RUN_TIMEOUT)
                t->stats.timeouts++;
        else if (res->status == RUN_KILLED)
                t->stats.killed++;
        else if (res->status == RUN_CRASHED)
                t->stats.crashes++;
        session_log_event(t, s,
                          json_pack("{s:s, s:I, s:s, s:f}", "event", "run_end", "seq", (json_int_t)res->seq, "status",
                                    status_words[res->status], "elapsed_ms",
                                    round((double)(now_ns() - r->start_ns) / 1e3) / 1e3));
        result_unref(s->last);
        s->last = res;
        run_free(r);
        s->run = NULL;
        if (s->state == SESSION_RUNNING)
                s->state = SESSION_IDLE;
        /* The call the run waited for is cancelled; definitions that changed
         * during the run reach the worker before its next one. */
        tools_run_ended(t->tools, s);
        if (t->ev.run_ended)
                t->ev.run_ended(s);
        /* The readers have their answer; look for what the run may have
         * left behind (off this path: rate-limited, on a timer). */
        schedule_leftover_check(s);
}

/* Interrupt run seq: an interrupt frame first, then SIGINT.  The signal
 * makes R unwind; the frame lets the worker tell an interrupt that came
 * before it started the run (its SIGINT looks like a stale one) from a late
 * one meant for the run before (docs/protocol.md). */
static void worker_interrupt(struct worker *w, uint64_t seq) {
        json_t *m = json_pack("{s:s, s:I}", "type", "interrupt", "seq", (json_int_t)seq);

        if (m)
                worker_send(w, m);
        json_decref(m);
        if (w->pid > 0 && !w->exited)
                kill(w->pid, SIGINT);
}

static void on_run_deadline(void *data) {
        struct session *s = data;
        struct sessions *t = s->owner;
        struct run *r = s->run;

        if (!r || !s->worker)
                return;
        if (!r->in_grace) {
                /* The deadline: ask R to unwind (it keeps its state). */
                r->interrupt = INTERRUPT_TIMEOUT;
                r->in_grace = true;
                session_log_event(t, s, json_pack("{s:s, s:I, s:f}", "event", "timeout", "seq", (json_int_t)r->seq,
                                                  "timeout_s", s->timeout_s));
                run_kill_processes(s);
                if (s->worker)
                        worker_interrupt(s->worker, r->seq);
                loop_timer_arm(r->deadline, now_ns() + (uint64_t)(t->opt->grace_s * 1e9));
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
        r->interrupt = INTERRUPT_CTL;
        r->in_grace = true;
        session_log_event(s->owner, s, json_pack("{s:s, s:I}", "event", "interrupt", "seq", (json_int_t)r->seq));
        run_kill_processes(s);
        if (s->worker)
                worker_interrupt(s->worker, r->seq);
        loop_timer_arm(r->deadline, now_ns() + (uint64_t)(s->owner->opt->grace_s * 1e9));
}

/* The daemon ends the run under way on a limit of its own (max_tool_calls,
 * the session's CPU or memory as a whole) the way a timeout ends it: the
 * run's processes are killed, R is interrupted and keeps its state, and a
 * worker that does not stop within the grace period is killed.  The result
 * is an error naming the limit, whatever the worker answers. */
static void run_stop_on_limit(struct session *s, const char *limit, const char *reason) {
        struct sessions *t = s->owner;
        struct run *r = s->run;

        if (!r || !r->sent || !s->worker || r->in_grace)
                return; /* a timeout or ctl interrupt is ending it already */
        r->stop_limit = limit;
        snprintf(r->stop_reason, sizeof(r->stop_reason), "%s", reason);
        r->interrupt = INTERRUPT_LIMIT;
        r->in_grace = true;
        session_log_event(t, s, json_pack("{s:s, s:I, s:s, s:s}", "event", "limit", "seq", (json_int_t)r->seq,
                                          "limit", limit, "reason", reason));
        run_kill_processes(s);
        if (s->worker)
                worker_interrupt(s->worker, r->seq);
        loop_timer_arm(r->deadline, now_ns() + (uint64_t)(t->opt->grace_s * 1e9));
}

/* ---- the session's processes (docs/security.md) ------------------------ */

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
 * before_tick (ULLONG_MAX: all).  If they keep appearing (a fork bomb
 * outrunning us) the worker is killed too: in strict mode it is pid 1 of
 * the session's pid namespace, and the kernel then kills every process in
 * it. */
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
                session_log_event(s->owner, s, json_pack("{s:s, s:i, s:s}", "event", "processes_killed", "count", n,
                                                          "when", when));
        }
}

/* At a run's deadline, ctl interrupt or a limit: what the run started ends
 * with it, before R is asked to unwind. */
static void run_kill_processes(struct session *s) {
        kill_session_processes(s, ULLONG_MAX, "as the run was stopped");
}

/* The worker kills what a run started before it sends its result; this is
 * the daemon's own look, for a worker whose native code is hostile.  It runs
 * off the run's path and at most every LEFTOVER_CHECK_GAP_NS, so that
 * back-to-back runs pay nothing; when it comes while a later run is under
 * way it kills only processes older than that run. */
static void worker_on_leftover_check(void *data) {
        struct worker *w = data;
        struct session *s = w->session;
        struct run *r = s ? s->run : NULL;

        w->leftover_check_armed = false;
        w->last_leftover_check_ns = now_ns();
        if (!s || s->worker != w || !w->attached)
                return;
        kill_session_processes(s, r && r->sent ? boot_tick_of(r->start_ns) : ULLONG_MAX,
                               "that a run left behind");
}

static void schedule_leftover_check(struct session *s) {
        struct worker *w = s->worker;

        if (!w || w->pid <= 0 || w->exited || !w->attached || w->leftover_check_armed)
                return;
        w->leftover_check_armed = true;
        loop_timer_arm(w->leftover_check, MAX(now_ns(), w->last_leftover_check_ns + LEFTOVER_CHECK_GAP_NS));
}

/* The session-wide limits, during runs that last (docs/security.md): the
 * CPU of the worker and every process it started, and their memory, summed;
 * the rlimits bind each process alone. */
static void on_run_monitor(void *data) {
        struct session *s = data;
        struct sessions *t = s->owner;
        struct run *r = s->run;
        struct worker *w = s->worker;
        long long cpu = s->limits.v[LIMIT_CPU], mem = s->limits.v[LIMIT_MEMORY];
        uint64_t start = now_ns(), took;
        struct procs_usage u;
        char reason[256];

        if (!r || !r->sent || !w || w->pid <= 0 || w->exited || r->in_grace)
                return;
        if (procs_usage(w->pid, &u) < 0)
                return; /* it is gone: its reaping ends the run */
        if (!r->monitored) {
                unsigned long long oom;
                r->monitored = true;
                r->reaped_base_s = u.worker_reaped_s;
                if (cgroup_worker_oom_kills(t->cgroups, w->cgroup_id, &oom) == 0)
                        w->oom_kills_seen = oom;
        }
        if (cpu != LIMIT_UNSET) {
                /* The worker's own CPU since the run began (its base is
                 * exact), all of its descendants' (none was left from an
                 * earlier run), and what it reaped since the first look. */
                double run_cpu = (u.worker_cpu_s - r->cpu_base_s) + (u.cpu_s - u.worker_cpu_s - u.worker_reaped_s) +
                                 (u.worker_reaped_s - r->reaped_base_s);
                if (run_cpu >= (double)cpu) {
                        snprintf(reason, sizeof(reason),
                                 "CPU time limit of %lld s reached by the session's %u processes together (%.1f s)", cpu,
                                 u.n, run_cpu);
                        run_stop_on_limit(s, "cpu", reason);
                        return;
                }
        }
        took = now_ns() - start;
        if (mem != LIMIT_UNSET) {
                unsigned long long oom, held = u.estimate_bytes, pss;
                if (cgroup_worker_oom_kills(t->cgroups, w->cgroup_id, &oom) == 0 && oom > w->oom_kills_seen) {
                        w->oom_kills_seen = oom;
                        snprintf(reason, sizeof(reason),
                                 "Memory limit of %lld MiB reached by the session's processes together (the kernel "
                                 "killed one of them)", mem >> 20);
                        run_stop_on_limit(s, "memory", reason);
                        return;
                }
                /* The estimate is cheap; the resident sets' sum is never
                 * below what they hold, so only past the limit is the exact
                 * count (which the estimate can miss: copy-on-write copies)
                 * worth its page walks. */
                if (held <= (unsigned long long)mem && u.rss_bytes > (unsigned long long)mem &&
                    now_ns() >= r->next_pss_ns) {
                        uint64_t pss_start = now_ns();
                        if (procs_pss(w->pid, &pss) == 0)
                                held = pss;
                        r->next_pss_ns = now_ns() + 20 * (now_ns() - pss_start);
                }
                if (held > (unsigned long long)mem) {
                        snprintf(reason, sizeof(reason),
                                 "Memory limit of %lld MiB reached by the session's %u processes together (%llu MiB)",
                                 mem >> 20, u.n, held >> 20);
                        run_stop_on_limit(s, "memory", reason);
                        return;
                }
        }
        loop_timer_arm(r->monitor,
                       now_ns() + MAX(u.n > 1 ? MONITOR_PERIOD_FORKED_NS : MONITOR_PERIOD_NS, 20 * took));
}

/* Give s a worker: a ready one from the pool if it has the session's host
 * id, else a fresh clone with that id.  A root daemon's pooled workers each
 * have an id of their own, so only a new session (which adopted the first
 * one's id in sessions_create) takes one from the pool; a replacement
 * (restart, crash, kill) comes from the zygote with the session's id.
 * Unprivileged, every id is the daemon's and the pool serves all. */
static void session_acquire_worker(struct session *s) {
        struct sessions *t = s->owner;
        struct worker *w = t->pool;

        s->state = SESSION_STARTING;
        if (w && w->host_id == s->host_id) {
                t->pool = w->pool_next;
                w->pool_next = NULL;
                t->pool_ready--;
                w->session = s;
                s->worker = w;
                /* The pool refills once this worker is attached
                 * (session_worker_ready) or lost (worker_finish): a
                 * refill's clone, jail and cgroup moves would compete with
                 * the keeper and this worker for the CPUs, on the new
                 * session's path. */
                worker_assign(w);
                return;
        }
        w = worker_spawn(t, s, s->host_id);
        if (!w) {
                s->state = SESSION_DEAD;
                free(s->dead_reason);
                s->dead_reason = strdup("could not start a worker: out of resources");
                return;
        }
        s->worker = w;
        pool_fill(t);
}

static void session_worker_ready(struct session *s) {
        struct sessions *t = s->owner;

        s->state = SESSION_IDLE;
        s->start_retries = 0;
        apply_limits(s, process_cpu_s(s->worker->pid), false);
        if (s->creating) {
                s->creating = false;
                loop_timer_arm(s->create_deadline, 0);
                if (t->ev.created)
                        t->ev.created(s, 0, NULL);
        }
        /* Its tools come before its first run. */
        tools_session_ready(t->tools, s);
        if (s->run && !s->run->sent)
                send_run(s);
        pool_fill(t);
}

static void describe_exit(const struct worker *w, char *buf, size_t n) {
        int st = w->exit_status;

        if (!w->exited)
                snprintf(buf, n, "it could not be started");
        else if (WIFSIGNALED(st))
                snprintf(buf, n, "it was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
                snprintf(buf, n, "it exited with status %d", WEXITSTATUS(st));
}

/* The session's worker is gone (w is about to be freed). */
static void session_worker_lost(struct session *s, struct worker *w) {
        struct sessions *t = s->owner;
        struct run *r = s->run;
        char how[128], msg[1024];

        s->worker = NULL;
        w->session = NULL;
        describe_exit(w, how, sizeof(how));
        if (w->state == WORKER_SPAWNING || !w->attached) {
                snprintf(msg, sizeof(msg), "the sandboxed R worker could not start: %s",
                         w->fatal ? w->fatal : how);
                if (w->fatal && w->start_err == -EAGAIN && s->start_retries < SESSION_START_RETRIES && !s->closing) {
                        /* A helper's fault, not the jail's: a fresh worker
                         * (a queued run waits for it; a creating session's
                         * deadline still holds). */
                        s->start_retries++;
                        log_warn("session %s: %s; trying again", s->name, msg);
                        snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", msg);
                        session_acquire_worker(s);
                        if (s->state != SESSION_DEAD)
                                return;
                }
                log_error("session %s: %s", s->name, msg);
                snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", msg);
                if (s->creating) {
                        s->creating = false;
                        loop_timer_arm(s->create_deadline, 0);
                        if (t->ev.created)
                                t->ev.created(s, w->fatal && (w->start_err == -EAGAIN || w->start_err == -ETIMEDOUT)
                                                         ? -EAGAIN
                                                         : -EPERM,
                                              msg);
                        session_close(s);
                        return;
                }
                s->state = SESSION_DEAD;
                free(s->dead_reason);
                s->dead_reason = strdup(msg);
                if (r) {
                        if (!r->sent) {
                                r->start_ns = now_ns();
                                r->sent = true;
                        }
                        end_run(s, RUN_ERROR, msg);
                }
                return;
        }
        if (r && r->sent) {
                enum run_status st = RUN_CRASHED;
                double used = w->cpu_s - r->cpu_base_s;
                long long cpu = s->limits.v[LIMIT_CPU];
                const char *limit = NULL;
                unsigned long long oom = 0;

                if (w->kill_reason && strcmp(w->kill_reason, "timeout") == 0) {
                        st = RUN_KILLED;
                        /* Still a timeout, for stats, even if it ended in a kill. */
                        t->stats.timeouts++;
                        snprintf(msg, sizeof(msg),
                                 "Timed out after %g s and R did not stop within %g s of the interrupt: the worker "
                                 "was killed and a fresh one replaced it; the session's state was lost.",
                                 s->timeout_s, t->opt->grace_s);
                } else if (w->kill_reason && strcmp(w->kill_reason, "limit") == 0) {
                        st = RUN_KILLED;
                        limit = r->stop_limit;
                        snprintf(msg, sizeof(msg),
                                 "%s, and R did not stop within %g s: the worker was killed and a fresh one "
                                 "replaced it; the session's state was lost.", r->stop_reason, t->opt->grace_s);
                } else if (!w->kill_reason && WIFSIGNALED(w->exit_status) && WTERMSIG(w->exit_status) == SIGKILL &&
                           s->limits.v[LIMIT_MEMORY] != LIMIT_UNSET &&
                           cgroup_worker_oom_kills(t->cgroups, w->cgroup_id, &oom) == 0 && oom > w->oom_kills_seen) {
                        /* The memory cgroup's OOM killer chose the worker. */
                        st = RUN_KILLED;
                        limit = "memory";
                        snprintf(msg, sizeof(msg),
                                 "Memory limit of %lld MiB reached by the session's processes together: the kernel "
                                 "killed the R worker; a fresh one replaced it and the session's state was lost.",
                                 s->limits.v[LIMIT_MEMORY] >> 20);
                } else if (w->kill_reason && strcmp(w->kill_reason, "interrupt") == 0) {
                        st = RUN_KILLED;
                        snprintf(msg, sizeof(msg),
                                 "Interrupted, and R did not stop within %g s: the worker was killed and a fresh "
                                 "one replaced it; the session's state was lost.",
                                 t->opt->grace_s);
                } else if (w->kill_reason) {
                        st = RUN_KILLED;
                        snprintf(msg, sizeof(msg), "The worker was killed: %s; a fresh one replaced it and the "
                                 "session's state was lost.", w->kill_reason);
                } else if (cpu != LIMIT_UNSET && used >= (double)cpu - 0.05 && WIFSIGNALED(w->exit_status) &&
                           (WTERMSIG(w->exit_status) == SIGKILL || WTERMSIG(w->exit_status) == SIGXCPU)) {
                        st = RUN_KILLED;
                        snprintf(msg, sizeof(msg),
                                 "CPU time limit of %lld s reached and R did not stop: the worker was killed and a "
                                 "fresh one replaced it; the session's state was lost.", cpu);
                } else {
                        snprintf(msg, sizeof(msg),
                                 "The R worker crashed (%s); a fresh worker replaced it and the session's state "
                                 "was lost.", how);
                }
                session_log_event(t, s, json_pack("{s:s, s:I, s:s}", "event", st == RUN_CRASHED ? "crash" : "killed",
                                                  "seq", (json_int_t)r->seq, "reason", msg));
                end_run_limit(s, st, msg, limit);
        } else if (!w->kill_reason) {
                snprintf(msg, sizeof(msg), "the idle R worker died (%s); replacing it; the session's state was lost",
                         how);
                session_log_event(t, s, json_pack("{s:s, s:s}", "event", "crash", "reason", msg));
                t->stats.crashes++;
        }
        if (!s->closing)
                session_acquire_worker(s);
}

/* A new session failed before its first worker was ready: the mkdir (or
 * open of clone) waiting for it gets err, the reason goes to the log and to
 * stats' last_start_error, and the session goes. */
static void session_create_failed(struct session *s, int err, const char *msg) {
        struct sessions *t = s->owner;

        log_error("session %s: %s", s->name, msg);
        snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", msg);
        s->creating = false;
        loop_timer_arm(s->create_deadline, 0);
        if (t->ev.created)
                t->ev.created(s, err, msg);
        session_close(s);
}

static void on_workspace_made(void *data, int err, int fd, const char *why) {
        struct session *s = data;
        char msg[768];

        if (err == 0 || !s->creating)
                return;
        snprintf(msg, sizeof(msg), "could not make a workspace: %s", why ? why : strerror(-err));
        session_create_failed(s, err == -EAGAIN || err == -ETIMEDOUT ? -EAGAIN : err == -ENOMEM ? err : -EPERM, msg);
}

static void on_create_deadline(void *data) {
        struct session *s = data;
        char msg[768];

        if (!s->creating)
                return;
        snprintf(msg, sizeof(msg), "the session did not start within %d ms (%s)", SESSION_CREATE_TIMEOUT_MS,
                 workspace_root_fd(s->workspace) < 0 ? "its workspace was not made"
                 : !s->worker                        ? "no worker"
                 : s->worker->state == WORKER_SPAWNING ? "its worker was not ready"
                                                       : "its worker did not attach the workspace");
        session_create_failed(s, -EAGAIN, msg);
}

int sessions_create(struct sessions *t, const char *name, struct session **out) {
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
        s->create_deadline = loop_timer_new(t->loop, on_create_deadline, s);
        if (!s->create_deadline) {
                free(s);
                return -ENOMEM;
        }
        /* Its host id: the first pooled worker's, which it will take (a
         * root daemon's pooled workers each have one of their own), else a
         * fresh one; the workspace belongs to it from the start. */
        if (t->pool) {
                s->host_id = host_id_ref(t->pool->host_id);
        } else if ((e = host_id_take(t, &s->host_id)) < 0) {
                log_error("session %s: no free host id in id_range=%u:%u", name, t->opt->id_range.base,
                          t->opt->id_range.count);
                loop_timer_free(s->create_deadline);
                free(s);
                return e == -ENOMEM ? e : -ENOSPC;
        }
        s->id = ++t->next_id;
        /* Strict: the keeper makes it while the worker starts (both take
         * their time; the keeper answers the worker's copy after the
         * mount).  A failure to make it comes to on_workspace_made(). */
        e = workspace_new(t->workspaces, s->id, host_uid(s->host_id), host_gid(s->host_id), on_workspace_made, s, &s->workspace);
        if (e < 0 && e != -EINPROGRESS) {
                log_error("session %s: could not make its workspace: %s", name, strerror(-e));
                snprintf(t->last_start_error, sizeof(t->last_start_error), "could not make a workspace: %s",
                         strerror(-e));
                loop_timer_free(s->create_deadline);
                host_id_unref(t, s->host_id);
                free(s);
                return e == -ENOMEM ? e : -EPERM;
        }
        snprintf(s->name, sizeof(s->name), "%s", name);
        s->owner = t;
        s->timeout_s = t->opt->timeout_s;
        s->limits = t->opt->limits;
        s->creating = true;
        s->prev = t->last;
        if (t->last)
                t->last->next = s;
        else
                t->first = s;
        t->last = s;
        t->n_sessions++;
        t->stats.sessions_created++;
        session_log_event(t, s, json_pack("{s:s}", "event", "session_open"));
        loop_timer_arm(s->create_deadline, now_ns() + MS(SESSION_CREATE_TIMEOUT_MS));
        session_acquire_worker(s);
        if (s->state == SESSION_IDLE)
                s->creating = false; /* the pool had one: ready now */
        if (s->state == SESSION_DEAD) {
                session_close(s);
                return -ENOMEM;
        }
        *out = s;
        return 0;
}

void session_close(struct session *s) {
        struct sessions *t = s->owner;

        if (s->closing)
                return;
        s->closing = true;
        if (t->ev.closing)
                t->ev.closing(s);
        session_log_event(t, s, json_pack("{s:s}", "event", "session_close"));
        if (s->worker) {
                struct worker *w = s->worker;
                /* Abandon it: reaped later, freed then. */
                w->session = NULL;
                worker_close_fd(w);
                worker_kill(w, "session closed");
                w->abandoned = true;
                s->worker = NULL;
                if (!w->pid && !w->token) /* never handed to the zygote */
                        worker_free(w);
        }
        if (s->prev)
                s->prev->next = s->next;
        else
                t->first = s->next;
        if (s->next)
                s->next->prev = s->prev;
        else
                t->last = s->prev;
        t->n_sessions--;
        tools_session_closed(t->tools, s);
        run_free(s->run);
        /* Its files go with it (a worker being killed may still hold its
         * copy of the mount for a moment; nothing else can reach it). */
        workspace_free(s->workspace);
        /* Its id goes back once its last worker is reaped too. */
        host_id_unref(t, s->host_id);
        result_unref(s->last);
        text_free(&s->log);
        free(s->dead_reason);
        loop_timer_free(s->create_deadline);
        free(s);
}

int session_start_run(struct session *s, char *code, size_t len) {
        struct sessions *t = s->owner;
        struct run *r;
        size_t bad;
        char msg[1024];
        json_t *ev;

        if (s->run) {
                free(code);
                return -EBUSY;
        }
        r = calloc(1, sizeof(*r));
        if (!r || !(r->deadline = loop_timer_new(t->loop, on_run_deadline, s)) ||
            !(r->monitor = loop_timer_new(t->loop, on_run_monitor, s))) {
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
        /* The audit log keeps the code, cut at 10 KB. */
        ev = json_pack("{s:s, s:I, s:s%, s:I}", "event", "run_start", "seq", (json_int_t)r->seq, "code", "", (size_t)0,
                       "code_bytes", (json_int_t)len);
        if (utf8_valid(code, len, &bad)) {
                size_t cut = MIN(len, 10240);
                while (cut < len && cut > 0 && ((unsigned char)code[cut] & 0xC0) == 0x80)
                        cut--;
                json_object_set_new(ev, "code", json_stringn(code, cut));
                session_log_event(t, s, ev);
        } else {
                session_log_event(t, s, ev);
                r->sent = true;
                snprintf(msg, sizeof(msg),
                         "The code is not valid UTF-8 (bad byte at offset %zu); nothing was run.", bad);
                end_run(s, RUN_ERROR, msg);
                return 0;
        }
        if (s->state == SESSION_DEAD) {
                r->sent = true;
                snprintf(msg, sizeof(msg), "The session is dead (%s); write restart to ctl to try again.",
                         s->dead_reason ? s->dead_reason : "no worker");
                end_run(s, RUN_ERROR, msg);
                return 0;
        }
        if (s->state == SESSION_IDLE)
                send_run(s);
        return 0;
}

void session_restart(struct session *s) {
        struct sessions *t = s->owner;

        t->stats.restarts++;
        session_log_event(t, s, json_pack("{s:s}", "event", "restart"));
        if (s->worker) {
                struct worker *w = s->worker;
                if (s->run && s->run->sent) {
                        /* The run ends now, as killed. */
                        s->worker = NULL;
                        w->session = NULL;
                        worker_close_fd(w);
                        worker_kill(w, "restart");
                        w->abandoned = true;
                        end_run(s, RUN_KILLED,
                                "The session was restarted (ctl restart) during the run; its state was cleared.");
                } else {
                        s->worker = NULL;
                        w->session = NULL;
                        worker_close_fd(w);
                        worker_kill(w, "restart");
                        w->abandoned = true;
                }
                if (!w->pid && !w->token)
                        worker_free(w);
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

int session_set_limits(struct session *s, const struct limits *l) {
        s->limits = *l;
        if (s->state == SESSION_IDLE)
                apply_limits(s, process_cpu_s(s->worker->pid), false);
        return 0;
}

static json_t *stats_with_error(struct sessions *t, json_t *j);

json_t *sessions_stats(struct sessions *t) {
        unsigned running = 0;
        long long workspace_bytes = 0;
        json_t *j;

        for (struct session *s = t->first; s; s = s->next) {
                running += s->state == SESSION_RUNNING;
                workspace_bytes += workspace_usage(s->workspace);
        }
        j = stats_with_error(t, json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:f}", "sessions",
                         (int)t->n_sessions, "running", (int)running, "sessions_created",
                         (json_int_t)t->stats.sessions_created, "executions", (json_int_t)t->stats.executions,
                         "errors", (json_int_t)t->stats.errors, "timeouts", (json_int_t)t->stats.timeouts,
                         "crashes", (json_int_t)t->stats.crashes, "killed", (json_int_t)t->stats.killed,
                         "interrupts", (json_int_t)t->stats.interrupts, "restarts", (json_int_t)t->stats.restarts,
                         "tool_calls", (json_int_t)t->stats.tool_calls, "pool_idle", (int)t->pool_ready, "uptime",
                         round((double)(now_ns() - t->start_ns) / 1e6) / 1e3));
        if (j) {
                json_object_set_new(j, "workspace_bytes", json_integer(workspace_bytes));
                json_object_set_new(j, "keeper_restarts",
                                    json_integer((json_int_t)workspaces_keeper_restarts(t->workspaces)));
                json_object_set_new(j, "zygote_restarts", json_integer((json_int_t)spawner_restarts(t->spawner)));
        }
        return j;
}

/* Appended to stats when a worker failed to start, so that a user whose
 * mkdir got EPERM can read why. */
static json_t *stats_with_error(struct sessions *t, json_t *j) {
        if (j && t->last_start_error[0])
                json_object_set_new(j, "last_start_error", json_string(t->last_start_error));
        return j;
}

int sessions_new(struct loop *l, const struct options *o, const struct session_events *ev,
                 struct sessions **out) {
        struct sessions *t = calloc(1, sizeof(*t));
        struct spawner_config sc = {.sandbox_none = o->sandbox_none, .r_libs = o->r_libs, .tmp_bytes = o->tmp_bytes,
                                .allow_exec = o->allow_exec};
        const char *why;
        static char worker_path[4096];
        int e;

        if (!t)
                return -ENOMEM;
        t->loop = l;
        t->opt = o;
        t->ev = *ev;
        t->start_ns = now_ns();
        /* Workers and their workspaces belong to the daemon's own ids. */
        /* The worker program: -o worker=PATH, else next to this program (a
         * build tree), else the installed libexec one. */
        if (o->worker_path) {
                snprintf(worker_path, sizeof(worker_path), "%s", o->worker_path);
        } else {
                ssize_t n = readlink("/proc/self/exe", worker_path, sizeof(worker_path) - 32);
                char *slash;
                if (n > 0) {
                        worker_path[n] = '\0';
                        slash = strrchr(worker_path, '/');
                        strcpy(slash + 1, "securerfs-worker");
                }
                if (n <= 0 || access(worker_path, X_OK) != 0)
                        snprintf(worker_path, sizeof(worker_path), "%s/securerfs-worker", SECURERFS_LIBEXECDIR);
        }
        sc.worker_path = worker_path;
        /* A root daemon's jailed workers each get a host id of the range
         * (main() checked it against the host's ids); unprivileged, there
         * is only the daemon's own. */
        if (geteuid() == 0 && !o->sandbox_none && id_pool_new(&o->id_range, &t->ids) < 0) {
                free(t);
                return -ENOMEM;
        }
        if (cgroup_tree_new(&t->cgroups, &why) < 0) {
                id_pool_free(t->ids);
                free(t);
                return -ENOMEM;
        }
        if (why)
                log_info("no per-worker cgroup (rlimits only): %s", why);
        /* Without workspaces no session can start; the daemon still runs and
         * says why (the log, stats' last_start_error), as for a jail that
         * cannot be built. */
        if (workspaces_new(l, !o->sandbox_none, o->files_max_bytes, &t->workspaces, t->workspaces_error,
                           sizeof(t->workspaces_error)) < 0) {
                log_error("no workspaces, so no sessions: %s", t->workspaces_error);
                snprintf(t->last_start_error, sizeof(t->last_start_error), "%s", t->workspaces_error);
                t->workspaces = NULL;
        }
        t->pool_timer = loop_timer_new(l, on_pool_timer, t);
        if (!t->pool_timer) {
                cgroup_tree_free(t->cgroups);
                workspaces_free(t->workspaces);
                id_pool_free(t->ids);
                free(t);
                return -ENOMEM;
        }
        sc.cgroup_dirs = cgroup_tree_dirs(t->cgroups);
        e = tools_new(l, o, &t->tools);
        if (e == 0)
                e = spawner_new(l, &sc, &t->spawner);
        if (e < 0) {
                tools_free(t->tools);
                loop_timer_free(t->pool_timer);
                cgroup_tree_free(t->cgroups);
                workspaces_free(t->workspaces);
                id_pool_free(t->ids);
                free(t);
                return e;
        }
        pool_fill(t);
        *out = t;
        return 0;
}

void sessions_free(struct sessions *t) {
        if (!t)
                return;
        /* Only the closing event still goes out: it lets the fs layer answer
         * parked requests and free what it keeps per session. */
        t->ev.created = NULL;
        t->ev.run_ended = NULL;
        t->ev.console_grew = NULL;
        while (t->first)
                session_close(t->first);
        /* Global tool servers end with the daemon. */
        tools_free(t->tools);
        t->tools = NULL;
        for (struct worker *w = t->workers; w; w = w->next) {
                w->session = NULL;
                worker_kill(w, "shutdown");
        }
        spawner_free(t->spawner);
        /* Reap what we killed, so that no worker outlives the daemon (here,
         * not through its child-exit watch). */
        for (struct worker *w = t->workers; w; w = w->next)
                if (w->pid > 0 && !w->exited) {
                        loop_unwatch_child(t->loop, w->pid);
                        if (waitpid(w->pid, NULL, 0) == w->pid)
                                w->exited = true;
                }
        while (t->workers)
                worker_free(t->workers);
        cgroup_tree_free(t->cgroups);
        workspaces_free(t->workspaces);
        loop_timer_free(t->pool_timer);
        audit_close(t->audit);
        id_pool_free(t->ids);
        free(t);
}

/* ---- for sessions/tools.c ---------------------------------------------- */

struct tools *sessions_tools(struct sessions *t) { return t->tools; }

int session_worker_send(struct session *s, json_t *msg) {
        struct worker *w = s->worker;
        int e;

        if (!w || w->fd < 0 || w->state != WORKER_READY)
                return -EPIPE;
        e = worker_send(w, msg);
        if (e < 0) {
                worker_close_fd(w);
                worker_kill(w, "could not send to the worker");
        }
        return e;
}

bool session_accepts_definitions(const struct session *s) {
        /* A run queued while the worker started is sent right after the
         * definitions (session_worker_ready), so it sees them. */
        return s->state == SESSION_IDLE && (!s->run || !s->run->sent) && s->worker && s->worker->fd >= 0 &&
               s->worker->state == WORKER_READY;
}

void session_audit(struct session *s, json_t *ev) { session_log_event(s->owner, s, ev); }
