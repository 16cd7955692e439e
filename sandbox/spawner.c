#include "spawner.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backoff.h"
#include "child.h"
#include "config.h"
#include "fdpass.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "macros.h"

#define MS(x) ((uint64_t)(x) * 1000000ULL)

struct request {
        uint64_t token;
        int fd;       /* worker end, until sent */
        uid_t uid;
        gid_t gid;
        bool sent;
        uint64_t deadline_ns; /* queued: since it was made; sent: since it was sent */
        spawn_done_fn fn;
        void *data;
        struct list link; /* in spawner.requests */
};

struct spawner {
        struct loop *loop;
        struct spawner_config cfg;
        pid_t zygote_pid;
        int ctl_fd;
        bool ready;
        bool became_ready;  /* this zygote said "ready" */
        bool missed_deadline; /* we killed it for missing one */
        uint64_t next_token;
        struct list requests; /* queued and in flight, in order */
        struct loop_timer *restart_timer;
        struct loop_timer *deadline_timer;
        uint64_t last_start_ns;
        uint64_t ready_ns;
        struct backoff backoff;
        unsigned long long restarts;
        char kill_reason[256]; /* why we killed it, for the line at its reaping */
        char fatal[512];       /* what this zygote said in "fatal" */
        char last_error[512];
};

static int zygote_start(struct spawner *s);
static void arm_deadline(struct spawner *s);

/* Take r out, then answer it: the callback may make or cancel requests. */
static void request_finish(struct request *r, pid_t pid, int err, const char *why) {
        list_unlink(&r->link);
        if (r->fd >= 0)
                close(r->fd);
        if (r->fn)
                r->fn(r->data, pid, err, why);
        free(r);
}

/* Fail the requests sent (only_sent) or all of them.  The failing ones are
 * taken off the list before any callback runs. */
static void fail_all(struct spawner *s, bool only_sent, int err, const char *why) {
        struct list failing = LIST_INIT(failing);
        struct request *r;

        list_for_each(r, next, &s->requests, struct request, link) {
                if (only_sent && !r->sent)
                        continue;
                list_unlink(&r->link);
                list_append(&failing, &r->link);
        }
        while ((r = list_first(&failing, struct request, link)))
                request_finish(r, 0, err, why);
}

/* Send what is queued.  SEQPACKET keeps each request one datagram. */
static void send_queued(struct spawner *s) {
        uint64_t now = now_ns();
        struct request *r;

        list_for_each(r, next, &s->requests, struct request, link) {
                char line[64];
                ssize_t n;

                if (!s->ready)
                        break;
                if (r->sent)
                        continue;
                snprintf(line, sizeof(line), "spawn %llu %u %u", (unsigned long long)r->token, (unsigned)r->uid,
                         (unsigned)r->gid);
                n = fdpass_send(s->ctl_fd, line, strlen(line), &r->fd, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (n == -EAGAIN)
                                break; /* the zygote is behind; retried on its next reply */
                        log_warn("zygote: sending a spawn request: %s", strerror((int)-n));
                        break;
                }
                close(r->fd);
                r->fd = -1;
                r->sent = true;
                r->deadline_ns = now + MS(SPAWNER_REQUEST_TIMEOUT_MS);
        }
        arm_deadline(s);
}

static struct request *find_request(struct spawner *s, uint64_t token) {
        struct request *r;

        list_for_each(r, next, &s->requests, struct request, link)
                if (r->token == token)
                        return r;
        return NULL;
}

/* Killed before its socket is closed: closing with its answers unread
 * would first show the zygote a reset connection, which it would report. */
static void zygote_stop(struct spawner *s) {
        if (s->zygote_pid > 0)
                kill(s->zygote_pid, SIGKILL); /* reaped by the SIGCHLD handling */
        if (s->ctl_fd >= 0) {
                loop_del_fd(s->loop, s->ctl_fd);
                close(s->ctl_fd);
                s->ctl_fd = -1;
        }
        s->ready = false;
}

/* Kill the zygote on purpose; its reaping logs why and restarts it. */
static void zygote_kill(struct spawner *s, const char *why) {
        if (!s->kill_reason[0])
                snprintf(s->kill_reason, sizeof(s->kill_reason), "%s", why);
        log_warn("zygote (pid %d): %s; killing it", (int)s->zygote_pid, why);
        zygote_stop(s);
}

/* The earliest deadline: the zygote's start, a sent request's answer (only
 * while its zygote is there to miss it: a killed one's requests wait for its
 * reaping), a queued request's wait. */
static void arm_deadline(struct spawner *s) {
        uint64_t due = 0;
        struct request *r;

        if (s->zygote_pid > 0 && s->ctl_fd >= 0 && !s->ready)
                due = s->last_start_ns + MS(SPAWNER_START_TIMEOUT_MS);
        list_for_each(r, next, &s->requests, struct request, link)
                if ((!r->sent || s->ctl_fd >= 0) && (!due || r->deadline_ns < due))
                        due = r->deadline_ns;
        loop_timer_arm(s->deadline_timer, due);
}

static void on_deadline(void *data) {
        struct spawner *s = data;
        uint64_t now = now_ns();
        struct request *r, *due;
        char why[300];

        if (s->zygote_pid > 0 && s->ctl_fd >= 0 && !s->ready &&
            now >= s->last_start_ns + MS(SPAWNER_START_TIMEOUT_MS)) {
                snprintf(why, sizeof(why), "it did not become ready within %d ms", SPAWNER_START_TIMEOUT_MS);
                zygote_kill(s, why);
                s->missed_deadline = true;
        }
        list_for_each(r, next, &s->requests, struct request, link)
                if (s->ctl_fd >= 0 && r->sent && now >= r->deadline_ns) {
                        snprintf(why, sizeof(why), "it did not answer spawn request %llu within %d ms",
                                 (unsigned long long)r->token, SPAWNER_REQUEST_TIMEOUT_MS);
                        zygote_kill(s, why);
                        s->missed_deadline = true;
                        break;
                }
        /* Queued requests whose wait is over fail alone (one at a time:
         * each callback may change the list). */
        for (;;) {
                due = NULL;
                list_for_each(r, next, &s->requests, struct request, link)
                        if (!r->sent && now >= r->deadline_ns) {
                                due = r;
                                break;
                        }
                if (!due)
                        break;
                snprintf(why, sizeof(why), "the zygote was not ready within %d ms (%s)", SPAWNER_QUEUE_TIMEOUT_MS,
                         s->last_error[0] ? s->last_error : "it is being started");
                request_finish(due, 0, -ETIMEDOUT, why);
        }
        arm_deadline(s);
}

/* One datagram from the zygote: "ready", "fatal MSG", "spawned TOKEN PID",
 * "failed TOKEN MSG".  The zygote runs no user code, but its lines are still
 * parsed strictly. */
static void on_zygote_line(struct spawner *s, char *line) {
        unsigned long long token;
        long pid;
        int n = 0;
        struct request *r;
        char why[160];

        if (strcmp(line, "ready") == 0 && !s->ready) {
                s->ready = true;
                s->became_ready = true;
                s->ready_ns = now_ns();
                if (s->restarts)
                        log_info("zygote (pid %d) ready", (int)s->zygote_pid);
                send_queued(s);
                return;
        }
        if (strncmp(line, "fatal ", 6) == 0) {
                snprintf(s->fatal, sizeof(s->fatal), "R could not start: %s", line + 6);
                log_error("zygote: %s", s->fatal);
                return;
        }
        if (sscanf(line, "spawned %llu %ld%n", &token, &pid, &n) == 2 && line[n] == '\0' && pid > 0) {
                r = find_request(s, token);
                if (r && r->sent && r->fn) {
                        request_finish(r, (pid_t)pid, 0, NULL);
                } else {
                        /* Cancelled meanwhile: nobody wants this worker.  Its
                         * exit is reaped like any unknown child's. */
                        kill((pid_t)pid, SIGKILL);
                        if (r)
                                request_finish(r, 0, 0, NULL);
                }
                send_queued(s);
                return;
        }
        if (sscanf(line, "failed %llu %n", &token, &n) == 1 && n > 0) {
                r = find_request(s, token);
                if (r && r->sent)
                        request_finish(r, 0, -EPERM, line + n);
                send_queued(s);
                return;
        }
        snprintf(why, sizeof(why), "unexpected message \"%.80s\"", line);
        zygote_kill(s, why);
}

static void on_zygote_readable(int fd, uint32_t events, void *data) {
        struct spawner *s = data;
        char line[1024];
        ssize_t n = recv(fd, line, sizeof(line) - 1, MSG_DONTWAIT);

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                /* The zygote closed its end (or died with requests unread):
                 * it is dying (make sure of it); its reaping says how and
                 * restarts it. */
                zygote_stop(s);
                return;
        }
        if (n < 0) {
                zygote_kill(s, "its control socket failed");
                return;
        }
        line[n] = '\0';
        if (memchr(line, '\0', (size_t)n)) {
                zygote_kill(s, "NUL byte in a message");
                return;
        }
        on_zygote_line(s, line);
}

static void on_restart_timer(void *data) {
        struct spawner *s = data;
        int e;

        s->restarts++;
        e = zygote_start(s);
        if (e < 0) {
                snprintf(s->last_error, sizeof(s->last_error), "starting %s: %s", s->cfg.worker_path,
                         strerror(-e));
                log_error("zygote: %s", s->last_error);
                fail_all(s, false, -EAGAIN, s->last_error);
                loop_timer_arm(s->restart_timer, now_ns() + backoff_next(&s->backoff, false, 0));
        }
}

/* The zygote's child-exit watch (loop_watch_child, from zygote_start): log
 * why it ended, fail what it was sent and start the next one. */
static void on_zygote_exit(pid_t pid, int status, const struct rusage *ru, void *data) {
        struct spawner *s = data;
        char why[900];
        bool early;
        uint64_t delay;

        s->zygote_pid = 0;
        early = !s->became_ready;
        zygote_stop(s);
        if (WIFSIGNALED(status))
                snprintf(why, sizeof(why), "the zygote (pid %d) was killed by signal %d (%s)", (int)pid,
                         WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
                snprintf(why, sizeof(why), "the zygote (pid %d) exited with status %d", (int)pid,
                         WEXITSTATUS(status));
        if (s->kill_reason[0])
                snprintf(why + strlen(why), sizeof(why) - strlen(why), ": %s", s->kill_reason);
        else if (s->fatal[0])
                snprintf(why + strlen(why), sizeof(why) - strlen(why), ": %s", s->fatal);
        delay = backoff_next(&s->backoff, !early, now_ns() - s->ready_ns);
        log_warn("%s; restarting it%s", why, delay ? " after a pause" : "");
        snprintf(s->last_error, sizeof(s->last_error), "%s", why);
        /* Requests it was sent fail; queued ones wait for the next zygote
         * (up to their own deadline).  One that died while starting fails
         * the queued ones too: the next start may fail the same way. */
        fail_all(s, !early, s->missed_deadline ? -ETIMEDOUT : -EAGAIN, why);
        loop_timer_arm(s->restart_timer, now_ns() + delay);
        arm_deadline(s);
}

/* Child of fork(), before exec: still the daemon's image and privileges,
 * host namespaces.  Only async-signal-safe calls here.  Out of the daemon's
 * session (a Ctrl-C at its terminal must not interrupt every run), dying
 * with it, its control socket on fd 3, stdin and stdout on /dev/null,
 * stderr kept (the zygote and workers log R start-up failures there),
 * nothing else of the daemon's. */
static void zygote_exec(struct spawner *s, int sock, pid_t daemon_pid, char **argv, char **envp) {
        const struct child_setup c = {.fds = &sock, .n_fds = 1, .first_fd = 3, .null_stdio = true,
                                      .new_session = true, .parent = daemon_pid};

        if (child_after_fork(&c) < 0)
                _exit(127);
        execve(s->cfg.worker_path, argv, envp);
        _exit(127);
}

static int zygote_start(struct spawner *s) {
        int sv[2];
        pid_t pid, self = getpid();
        char tmp_arg[64], libs_arg[4200], rlibs_env[4200], cgroup_arg[8300];
        char *argv[10], *envp[16];
        int argc = 0, envc = 0, e;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        snprintf(tmp_arg, sizeof(tmp_arg), "--tmp-size=%lld", s->cfg.tmp_bytes);
        argv[argc++] = "securerfs-worker";
        argv[argc++] = "--zygote";
        argv[argc++] = s->cfg.sandbox_none ? "--sandbox=none" : "--sandbox=strict";
        argv[argc++] = tmp_arg;
        if (s->cfg.allow_exec)
                argv[argc++] = "--allow-exec";
        if (s->cfg.r_libs) {
                snprintf(libs_arg, sizeof(libs_arg), "--r-libs=%s", s->cfg.r_libs);
                argv[argc++] = libs_arg;
        }
        if (s->cfg.cgroup_dirs && *s->cfg.cgroup_dirs) {
                snprintf(cgroup_arg, sizeof(cgroup_arg), "--cgroup-dirs=%s", s->cfg.cgroup_dirs);
                argv[argc++] = cgroup_arg;
        }
        argv[argc] = NULL;
        /* The allowlist of docs/protocol.md: nothing of our own environment. */
        envp[envc++] = "PATH=/usr/bin:/bin";
        envp[envc++] = "LANG=C.UTF-8";
        envp[envc++] = "LC_ALL=C.UTF-8";
        envp[envc++] = "TZ=UTC";
        envp[envc++] = s->cfg.sandbox_none ? "HOME=/tmp" : "HOME=/work";
        envp[envc++] = "TMPDIR=/tmp";
        envp[envc++] = "USER=securerfs";
        envp[envc++] = "LOGNAME=securerfs";
        envp[envc++] = "R_HOME=" SECURERFS_R_HOME;
        if (s->cfg.r_libs) {
                snprintf(rlibs_env, sizeof(rlibs_env), "R_LIBS=%s", s->cfg.r_libs);
                envp[envc++] = rlibs_env;
        }
        envp[envc] = NULL;

        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                e = -errno;
                close(sv[0]);
                close(sv[1]);
                return e;
        }
        if (pid == 0)
                zygote_exec(s, sv[1], self, argv, envp); /* child: never returns */
        /* Daemon. */
        close(sv[1]);
        if (loop_watch_child(s->loop, pid, on_zygote_exit, s) < 0) {
                /* Its exit would reach nobody: stop it now (the loop reaps
                 * it as an unclaimed child); the caller retries later. */
                kill(pid, SIGKILL);
                close(sv[0]);
                return -ENOMEM;
        }
        s->zygote_pid = pid;
        s->ctl_fd = sv[0];
        s->ready = false;
        s->became_ready = false;
        s->kill_reason[0] = '\0';
        s->fatal[0] = '\0';
        s->missed_deadline = false;
        s->last_start_ns = now_ns();
        e = loop_add_fd(s->loop, s->ctl_fd, EPOLLIN, on_zygote_readable, s);
        if (e < 0) {
                zygote_kill(s, "its control socket could not be watched");
                return 0; /* its reaping restarts it */
        }
        arm_deadline(s);
        return 0;
}

int spawner_new(struct loop *l, const struct spawner_config *c, struct spawner **out) {
        struct spawner *s = calloc(1, sizeof(*s));
        int e;

        if (!s)
                return -ENOMEM;
        s->loop = l;
        s->cfg = *c;
        s->ctl_fd = -1;
        list_init(&s->requests);
        s->next_token = 1;
        s->restart_timer = loop_timer_new(l, on_restart_timer, s);
        s->deadline_timer = loop_timer_new(l, on_deadline, s);
        if (!s->restart_timer || !s->deadline_timer) {
                loop_timer_free(s->restart_timer);
                loop_timer_free(s->deadline_timer);
                free(s);
                return -ENOMEM;
        }
        e = zygote_start(s);
        if (e < 0) {
                loop_timer_free(s->restart_timer);
                loop_timer_free(s->deadline_timer);
                free(s);
                return e;
        }
        *out = s;
        return 0;
}

void spawner_free(struct spawner *s) {
        struct request *r;

        if (!s)
                return;
        list_for_each(r, next, &s->requests, struct request, link)
                r->fn = NULL;
        fail_all(s, false, -ECANCELED, "shutting down");
        zygote_stop(s);
        if (s->zygote_pid > 0) {
                /* Reaped here, at shutdown, not by the loop. */
                loop_unwatch_child(s->loop, s->zygote_pid);
                waitpid(s->zygote_pid, NULL, 0);
        }
        loop_timer_free(s->restart_timer);
        loop_timer_free(s->deadline_timer);
        free(s);
}

uint64_t spawner_request(struct spawner *s, int worker_fd, uid_t uid, gid_t gid, spawn_done_fn fn, void *data) {
        struct request *r = calloc(1, sizeof(*r));

        if (!r) {
                close(worker_fd);
                return 0;
        }
        *r = (struct request){.token = s->next_token++, .fd = worker_fd, .uid = uid, .gid = gid, .fn = fn,
                              .data = data, .deadline_ns = now_ns() + MS(SPAWNER_QUEUE_TIMEOUT_MS)};
        list_append(&s->requests, &r->link);
        send_queued(s);
        arm_deadline(s);
        return r->token;
}

void spawner_cancel(struct spawner *s, uint64_t token) {
        struct request *r = find_request(s, token);

        if (!r)
                return;
        r->fn = NULL;
        if (!r->sent) {
                request_finish(r, 0, 0, NULL);
                arm_deadline(s);
        }
        /* A sent one stays until the zygote answers: its pid is then killed. */
}

uint64_t spawner_next_token(const struct spawner *s) { return s->next_token; }

unsigned long long spawner_restarts(const struct spawner *s) { return s->restarts; }
