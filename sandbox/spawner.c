#include "spawner.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backoff.h"
#include "config.h"
#include "log.h"
#include "macros.h"
#include "loop.h"

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
        struct request *next;
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
        struct request *requests; /* queued and in flight, in order */
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

static void request_unlink(struct spawner *s, struct request *r) {
        for (struct request **pp = &s->requests; *pp; pp = &(*pp)->next)
                if (*pp == r) {
                        *pp = r->next;
                        r->next = NULL;
                        return;
                }
}

/* Take r out, then answer it: the callback may make or cancel requests. */
static void request_finish(struct spawner *s, struct request *r, pid_t pid, int err, const char *why) {
        request_unlink(s, r);
        if (r->fd >= 0)
                close(r->fd);
        if (r->fn)
                r->fn(r->data, pid, err, why);
        free(r);
}

/* Fail the requests sent (only_sent) or all of them.  The failing ones are
 * taken off the list before any callback runs. */
static void fail_all(struct spawner *s, bool only_sent, int err, const char *why) {
        struct request *failing = NULL, **tail = &failing, **pp = &s->requests;

        while (*pp) {
                struct request *r = *pp;

                if (only_sent && !r->sent) {
                        pp = &r->next;
                        continue;
                }
                *pp = r->next;
                r->next = NULL;
                *tail = r;
                tail = &r->next;
        }
        while (failing) {
                struct request *r = failing;

                failing = r->next;
                if (r->fd >= 0)
                        close(r->fd);
                if (r->fn)
                        r->fn(r->data, 0, err, why);
                free(r);
        }
}

/* Send what is queued.  SEQPACKET keeps each request one datagram. */
static void send_queued(struct spawner *s) {
        uint64_t now = now_ns();

        for (struct request *r = s->requests; r && s->ready; r = r->next) {
                char line[64];
                char cbuf[CMSG_SPACE(sizeof(int))] = {0};
                struct iovec iov;
                struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                                    .msg_controllen = sizeof(cbuf)};
                struct cmsghdr *cm;

                if (r->sent)
                        continue;
                snprintf(line, sizeof(line), "spawn %llu %u %u", (unsigned long long)r->token, (unsigned)r->uid,
                         (unsigned)r->gid);
                iov = (struct iovec){line, strlen(line)};
                cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &r->fd, sizeof(int));
                if (sendmsg(s->ctl_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                        if (errno == EAGAIN)
                                break; /* the zygote is behind; retried on its next reply */
                        log_warn("zygote: sending a spawn request: %s", strerror(errno));
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
        for (struct request *r = s->requests; r; r = r->next)
                if (r->token == token)
                        return r;
        return NULL;
}

static void zygote_stop(struct spawner *s) {
        if (s->ctl_fd >= 0) {
                loop_del_fd(s->loop, s->ctl_fd);
                close(s->ctl_fd);
                s->ctl_fd = -1;
        }
        if (s->zygote_pid > 0)
                kill(s->zygote_pid, SIGKILL); /* reaped by the SIGCHLD handling */
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

        if (s->zygote_pid > 0 && s->ctl_fd >= 0 && !s->ready)
                due = s->last_start_ns + MS(SPAWNER_START_TIMEOUT_MS);
        for (struct request *r = s->requests; r; r = r->next)
                if ((!r->sent || s->ctl_fd >= 0) && (!due || r->deadline_ns < due))
                        due = r->deadline_ns;
        loop_timer_arm(s->deadline_timer, due);
}

static void on_deadline(void *data) {
        struct spawner *s = data;
        uint64_t now = now_ns();
        char why[300];

        if (s->zygote_pid > 0 && s->ctl_fd >= 0 && !s->ready &&
            now >= s->last_start_ns + MS(SPAWNER_START_TIMEOUT_MS)) {
                snprintf(why, sizeof(why), "it did not become ready within %d ms", SPAWNER_START_TIMEOUT_MS);
                zygote_kill(s, why);
                s->missed_deadline = true;
        }
        for (struct request *r = s->requests; r && s->ctl_fd >= 0; r = r->next)
                if (r->sent && now >= r->deadline_ns) {
                        snprintf(why, sizeof(why), "it did not answer spawn request %llu within %d ms",
                                 (unsigned long long)r->token, SPAWNER_REQUEST_TIMEOUT_MS);
                        zygote_kill(s, why);
                        s->missed_deadline = true;
                        break;
                }
        /* Queued requests whose wait is over fail alone. */
        for (;;) {
                struct request *r = s->requests;

                while (r && (r->sent || now < r->deadline_ns))
                        r = r->next;
                if (!r)
                        break;
                snprintf(why, sizeof(why), "the zygote was not ready within %d ms (%s)", SPAWNER_QUEUE_TIMEOUT_MS,
                         s->last_error[0] ? s->last_error : "it is being started");
                request_finish(s, r, 0, -ETIMEDOUT, why);
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
                        request_finish(s, r, (pid_t)pid, 0, NULL);
                } else {
                        /* Cancelled meanwhile: nobody wants this worker.  Its
                         * exit is reaped like any unknown child's. */
                        kill((pid_t)pid, SIGKILL);
                        if (r)
                                request_finish(s, r, 0, 0, NULL);
                }
                send_queued(s);
                return;
        }
        if (sscanf(line, "failed %llu %n", &token, &n) == 1 && n > 0) {
                r = find_request(s, token);
                if (r && r->sent)
                        request_finish(s, r, 0, -EPERM, line + n);
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

bool spawner_child_exited(struct spawner *s, pid_t pid, int status) {
        char why[900];
        bool early;
        uint64_t delay;

        if (pid != s->zygote_pid || pid <= 0)
                return false;
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
        return true;
}

/* The loop reaped the zygote (common/loop.h: a child-exit watch). */
static void on_zygote_exit(pid_t pid, int status, const struct rusage *ru, void *data) {
        spawner_child_exited(data, pid, status);
}

/* Child, after fork, before exec: still the daemon's image.  Only
 * async-signal-safe calls here. */
static void zygote_exec(struct spawner *s, int sock, pid_t daemon_pid, char **argv, char **envp) {
        sigset_t none;
        int devnull;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid();
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != daemon_pid)
                _exit(127);
        /* dup2 onto itself would keep FD_CLOEXEC and lose the socket. */
        if (sock == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(sock, 3) < 0)
                _exit(127);
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
                dup2(devnull, 0);
                dup2(devnull, 1);
        }
        /* stderr stays: the zygote and workers log R start-up failures there. */
        close_range(4, ~0U, 0);
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
        close(sv[1]);
        s->zygote_pid = pid;
        if (loop_watch_child(s->loop, pid, on_zygote_exit, s) < 0)
                log_error("zygote: out of memory watching its exit");
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
        if (!s)
                return;
        for (struct request *r = s->requests; r; r = r->next)
                r->fn = NULL;
        fail_all(s, false, -ECANCELED, "shutting down");
        zygote_stop(s);
        if (s->zygote_pid > 0)
                waitpid(s->zygote_pid, NULL, 0);
        loop_timer_free(s->restart_timer);
        loop_timer_free(s->deadline_timer);
        free(s);
}

uint64_t spawner_request(struct spawner *s, int worker_fd, uid_t uid, gid_t gid, spawn_done_fn fn, void *data) {
        struct request *r = calloc(1, sizeof(*r)), **pp;

        if (!r) {
                close(worker_fd);
                return 0;
        }
        *r = (struct request){.token = s->next_token++, .fd = worker_fd, .uid = uid, .gid = gid, .fn = fn,
                              .data = data, .deadline_ns = now_ns() + MS(SPAWNER_QUEUE_TIMEOUT_MS)};
        for (pp = &s->requests; *pp; pp = &(*pp)->next)
                ;
        *pp = r;
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
                request_finish(s, r, 0, 0, NULL);
                arm_deadline(s);
        }
        /* A sent one stays until the zygote answers: its pid is then killed. */
}

uint64_t spawner_next_token(const struct spawner *s) { return s->next_token; }

const char *spawner_last_error(const struct spawner *s) {
        return s->last_error[0] ? s->last_error : NULL;
}

unsigned long long spawner_restarts(const struct spawner *s) { return s->restarts; }

pid_t spawner_zygote_pid(const struct spawner *s) { return s->zygote_pid; }
