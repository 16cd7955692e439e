/* The daemon's side of the keeper (sandbox/keeper.h): starting it,
 * queueing requests with their deadlines, matching answers, supervising it.
 * The keeper's own process, and the protocol both speak, are
 * sandbox/keeper_process.[ch]. */
#include "keeper.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/nsfs.h>

#include "backoff.h"
#include "fdpass.h"
#include "keeper_process.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "macros.h"

#define MS(x) ((uint64_t)(x) * 1000000ULL)
/* A request its keeper did not answer because it died goes to the
 * replacement, up to this many keepers in all: a keeper killed by accident
 * (or by the out-of-memory killer) costs the caller a restart's delay, not a
 * failure.  Every request is idempotent (create of an ID that is mounted
 * already answers that mount).  A keeper killed for missing a deadline is
 * different: the caller has waited the deadline already, and the request
 * may be what stalls a keeper; its requests fail (-ETIMEDOUT).  A remove
 * that still fails leaves its mount until the daemon exits. */
#define REQUEST_TRIES 2
#define REMOVE_TRIES 3

enum keeper_state { KEEPER_DOWN, KEEPER_STARTING, KEEPER_READY };

struct keeper_request {
        uint64_t token;
        char line[128];
        bool sent;
        bool is_remove;       /* no answer wanted */
        unsigned tries;
        uint64_t deadline_ns; /* queued: since it was made; sent: since it was sent */
        keeper_done_fn fn;    /* NULL once cancelled */
        void *data;
        struct list link;     /* in keeper.requests */
};

struct keeper {
        struct loop *loop;
        bool own_user_ns; /* unprivileged: a user namespace mapping 0 to our uid */
        uid_t uid;        /* the daemon's */
        gid_t gid;
        enum keeper_state state;
        pid_t pid;        /* 0 when none runs (or it was reaped) */
        int fd;           /* our end of its control socket, -1 when none */
        int mnt_ns_fd;    /* the namespaces of the first keeper, -1 until it is ready */
        int user_ns_fd;
        struct list requests; /* in order: the sent ones first */
        uint64_t next_token;
        struct loop_timer *deadline_timer; /* the earliest deadline, start or request */
        struct loop_timer *restart_timer;
        uint64_t start_ns;
        uint64_t ready_ns;
        struct backoff backoff;
        unsigned long long restarts;
        bool became_ready;  /* this process said "ready" */
        bool missed_deadline; /* we killed it for missing one */
        bool broken;        /* the last start said "fail": until one is ready, requests fail at once */
        bool start_failed;  /* this process said "fail" */
        char kill_reason[256]; /* why we killed it: for the log line at its reaping */
        char last_error[512];
};


/* ---- daemon side ---------------------------------------------------------- */

static void keeper_start(struct keeper *k);
static void arm_deadline(struct keeper *k);
static void on_keeper_exit(pid_t pid, int status, const struct rusage *ru, void *data);

/* Take r out and answer it.  fd is consumed either way.  The callback may
 * make or cancel requests: r is no longer on the list when it runs. */
static void request_finish(struct keeper_request *r, int err, int fd, const char *why) {
        list_unlink(&r->link);
        if (r->fn)
                r->fn(r->data, err, fd, why);
        else if (fd >= 0)
                close(fd);
        free(r);
}

/* Fail every request matching (sent or queued) with err and why; with
 * retry, those that have tries left are queued again for the next keeper
 * instead (removes always; others only when the keeper was not killed for
 * missing a deadline).  Callbacks can add requests meanwhile: the failing
 * ones are taken off the list first.  The list keeps its order: the sent
 * requests stay a prefix of it, which the in-order answers rely on. */
static void fail_requests(struct keeper *k, bool sent, bool retry, int err, const char *why) {
        struct list failing = LIST_INIT(failing);
        struct keeper_request *r;
        uint64_t now = now_ns();

        list_for_each(r, next, &k->requests, struct keeper_request, link) {
                if (r->sent != sent)
                        continue;
                /* Removes go again whatever killed the keeper: no caller
                 * waits for them. */
                if (retry && (r->is_remove || !k->missed_deadline) &&
                    ++r->tries < (r->is_remove ? REMOVE_TRIES : REQUEST_TRIES)) {
                        r->sent = false;
                        r->deadline_ns = now + MS(KEEPER_QUEUE_TIMEOUT_MS);
                        continue;
                }
                list_unlink(&r->link);
                list_append(&failing, &r->link);
        }
        while ((r = list_first(&failing, struct keeper_request, link)))
                request_finish(r, err, -1, why);
}

static void close_channel(struct keeper *k) {
        if (k->fd < 0)
                return;
        loop_del_fd(k->loop, k->fd);
        close(k->fd);
        k->fd = -1;
}

/* Kill the keeper on purpose; its reaping logs why and replaces it. */
static void keeper_kill(struct keeper *k, const char *why) {
        if (!k->kill_reason[0])
                snprintf(k->kill_reason, sizeof(k->kill_reason), "%s", why);
        log_warn("keeper (pid %d): %s; killing it", (int)k->pid, why);
        if (k->pid > 0)
                kill(k->pid, SIGKILL); /* before the close, as the zygote's (spawner.c) */
        close_channel(k);
        k->state = KEEPER_DOWN;
}

/* Send what is queued, in order, while the socket takes it. */
static void flush_requests(struct keeper *k) {
        uint64_t now = now_ns();
        struct keeper_request *r;

        if (k->state != KEEPER_READY || k->fd < 0)
                return;
        list_for_each(r, next, &k->requests, struct keeper_request, link) {
                if (r->sent)
                        continue;
                if (send(k->fd, r->line, strlen(r->line), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
                        if (errno == EAGAIN) {
                                /* A keeper that far behind is about to miss
                                 * the oldest deadline; wait for room. */
                                loop_mod_fd(k->loop, k->fd, EPOLLIN | EPOLLOUT);
                                break;
                        }
                        if (errno == EPIPE || errno == ECONNRESET) {
                                /* It died: its reaping says how.  This
                                 * request was not sent. */
                                close_channel(k);
                                if (k->pid > 0)
                                        kill(k->pid, SIGKILL);
                                k->state = KEEPER_DOWN;
                                return;
                        }
                        keeper_kill(k, "its control socket failed");
                        return;
                }
                r->sent = true;
                r->deadline_ns = now + MS(KEEPER_REQUEST_TIMEOUT_MS);
        }
        arm_deadline(k);
}

/* Receive one datagram and up to two descriptors.  Returns its length, 0
 * at end of file, or -errno (-EAGAIN: nothing yet; -EBADMSG: cut short, or
 * a NUL in it). */
static ssize_t recv_line(int fd, char *buf, size_t size, int *fds, size_t *nfds) {
        ssize_t n = fdpass_recv(fd, buf, size - 1, fds, 2, nfds, MSG_DONTWAIT);

        if (n < 0)
                return n;
        buf[n] = '\0';
        if (memchr(buf, '\0', (size_t)n)) {
                for (size_t i = 0; i < *nfds; i++)
                        close(fds[i]);
                *nfds = 0;
                return -EBADMSG;
        }
        return n;
}

static bool is_ns(int fd, int type) { return fd >= 0 && ioctl(fd, NS_GET_NSTYPE) == type; }

/* The keeper said "ready" (with fds: a fresh one's namespaces). */
static void on_ready(struct keeper *k, int *fds, size_t nfds) {
        if (k->mnt_ns_fd < 0) {
                /* The first keeper: keep its namespaces, checked to be what
                 * they claim (nsfs descriptors of the right types). */
                if (nfds != (k->own_user_ns ? 2u : 1u) || !is_ns(fds[0], CLONE_NEWNS) ||
                    (k->own_user_ns && !is_ns(fds[1], CLONE_NEWUSER))) {
                        for (size_t i = 0; i < nfds; i++)
                                close(fds[i]);
                        keeper_kill(k, "its ready message did not carry its namespaces");
                        return;
                }
                k->mnt_ns_fd = fds[0];
                k->user_ns_fd = k->own_user_ns ? fds[1] : -1;
        } else {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
        }
        k->state = KEEPER_READY;
        k->became_ready = true;
        k->broken = false;
        k->ready_ns = now_ns();
        if (k->restarts)
                log_info("keeper (pid %d) ready%s", (int)k->pid,
                         k->restarts ? ": the workspaces are reachable again" : "");
        flush_requests(k);
}

static void on_answer(struct keeper *k, const char *line, int *fds, size_t nfds) {
        struct keeper_request *r = list_first(&k->requests, struct keeper_request, link);
        char why[160];
        int err, n = 0;

        if (!r || !r->sent) {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
                keeper_kill(k, "it answered a request it was not sent");
                return;
        }
        if (strcmp(line, "ok") == 0 && nfds <= 1) {
                int fd = nfds ? fds[0] : -1;
                bool wants_fd = !r->is_remove;

                if (wants_fd && fd < 0) {
                        keeper_kill(k, "it answered ok without a descriptor");
                        return;
                }
                if (!wants_fd && fd >= 0) {
                        close(fd);
                        fd = -1;
                }
                request_finish(r, 0, fd, NULL);
        } else if (sscanf(line, "err %d%n", &err, &n) == 1 && line[n] == '\0' && err > 0 && err < 4096 &&
                   nfds == 0) {
                snprintf(why, sizeof(why), "%s", strerror(err));
                if (r->is_remove)
                        log_warn("keeper: %s: %s", r->line, why);
                request_finish(r, -err, -1, why);
        } else {
                for (size_t i = 0; i < nfds; i++)
                        close(fds[i]);
                snprintf(why, sizeof(why), "unexpected answer \"%.40s\"", line);
                keeper_kill(k, why);
                return;
        }
        arm_deadline(k);
}

static void on_keeper_io(int fd, uint32_t events, void *data) {
        struct keeper *k = data;

        if (events & EPOLLOUT) {
                loop_mod_fd(k->loop, k->fd, EPOLLIN);
                flush_requests(k);
                if (k->fd < 0)
                        return;
        }
        /* A few datagrams per wake-up, then back to the loop. */
        for (int i = 0; i < 64 && k->fd >= 0; i++) {
                char line[320];
                int fds[2];
                size_t nfds;
                ssize_t n = recv_line(k->fd, line, sizeof(line), fds, &nfds);

                if (n == -EAGAIN)
                        return;
                if (n == 0 || n == -ECONNRESET) {
                        /* End of file (a reset: it died with our requests
                         * unread): it is dying, killed from outside most
                         * likely.  Its reaping says how; make sure it does
                         * die. */
                        close_channel(k);
                        if (k->pid > 0)
                                kill(k->pid, SIGKILL);
                        k->state = KEEPER_DOWN;
                        return;
                }
                if (n < 0) {
                        keeper_kill(k, n == -EBADMSG ? "it sent a malformed message" : "its control socket failed");
                        return;
                }
                if (k->state == KEEPER_STARTING) {
                        if (strcmp(line, "ready") == 0) {
                                on_ready(k, fds, nfds);
                        } else if (strncmp(line, "fail ", 5) == 0) {
                                for (size_t j = 0; j < nfds; j++)
                                        close(fds[j]);
                                /* Logged once per distinct reason: a kernel
                                 * that refuses the namespaces refuses them
                                 * at every retry. */
                                if (strcmp(k->last_error + (strncmp(k->last_error, "keeper: ", 8) ? 0 : 8),
                                           line + 5) != 0)
                                        log_error("keeper: %s", line + 5);
                                snprintf(k->last_error, sizeof(k->last_error), "keeper: %s", line + 5);
                                k->start_failed = true;
                                k->broken = true;
                                /* What waits for it cannot be done by any
                                 * keeper until this is fixed. */
                                fail_requests(k, false, false, -EPERM, k->last_error);
                                close_channel(k);
                                k->state = KEEPER_DOWN;
                                return; /* it exits; its reaping schedules the next try */
                        } else {
                                for (size_t j = 0; j < nfds; j++)
                                        close(fds[j]);
                                keeper_kill(k, "unexpected message while starting");
                        }
                        continue;
                }
                on_answer(k, line, fds, nfds);
        }
}

/* The earliest deadline: the keeper's start, the oldest request sent, or a
 * queued one's. */
static void arm_deadline(struct keeper *k) {
        struct keeper_request *r;
        uint64_t due = 0;

        if (k->state == KEEPER_STARTING)
                due = k->start_ns + MS(KEEPER_START_TIMEOUT_MS);
        /* Sent requests count only while their keeper is there to miss
         * them: once it is killed they wait for its reaping, which fails
         * them (a past deadline re-armed would fire forever). */
        list_for_each(r, next, &k->requests, struct keeper_request, link)
                if (!r->is_remove && (!r->sent || k->state == KEEPER_READY) && (!due || r->deadline_ns < due))
                        due = r->deadline_ns;
        loop_timer_arm(k->deadline_timer, due);
}

static void on_deadline(void *data) {
        struct keeper *k = data;
        struct keeper_request *r, *due;
        uint64_t now = now_ns();
        char why[300];

        if (k->state == KEEPER_STARTING && now >= k->start_ns + MS(KEEPER_START_TIMEOUT_MS)) {
                snprintf(why, sizeof(why), "it did not become ready within %d ms", KEEPER_START_TIMEOUT_MS);
                keeper_kill(k, why);
                k->missed_deadline = true;
        }
        list_for_each(r, next, &k->requests, struct keeper_request, link)
                if (r->sent && !r->is_remove && now >= r->deadline_ns && k->state == KEEPER_READY) {
                        snprintf(why, sizeof(why), "it did not answer \"%s\" within %d ms", r->line,
                                 KEEPER_REQUEST_TIMEOUT_MS);
                        keeper_kill(k, why);
                        k->missed_deadline = true;
                        break;
                }
        /* Queued ones whose time is up fail alone: no keeper was there to
         * miss them.  One at a time: each callback may change the list. */
        for (;;) {
                due = NULL;
                list_for_each(r, next, &k->requests, struct keeper_request, link)
                        if (!r->sent && !r->is_remove && now >= r->deadline_ns) {
                                due = r;
                                break;
                        }
                if (!due)
                        break;
                if (k->broken) {
                        /* The namespaces cannot be built: say so now, not
                         * after a deadline, as for a jail that cannot be. */
                        request_finish(due, -EPERM, -1, k->last_error);
                        continue;
                }
                snprintf(why, sizeof(why), "no keeper came up within %d ms (%s)", KEEPER_QUEUE_TIMEOUT_MS,
                         k->last_error[0] ? k->last_error : "it is being started");
                request_finish(due, -ETIMEDOUT, -1, why);
        }
        arm_deadline(k);
}

static void on_restart_timer(void *data) {
        struct keeper *k = data;

        k->restarts++;
        keeper_start(k);
}

/* Fork a keeper: a fresh one the first time, later one that joins the
 * namespaces we kept.  Failures to fork are retried with back-off. */
static void keeper_start(struct keeper *k) {
        int sv[2];
        pid_t pid, self = getpid();

        k->kill_reason[0] = '\0';
        k->became_ready = k->start_failed = k->missed_deadline = false;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                snprintf(k->last_error, sizeof(k->last_error), "keeper: socketpair: %s", strerror(errno));
                log_warn("%s", k->last_error);
                loop_timer_arm(k->restart_timer, now_ns() + backoff_next(&k->backoff, false, 0));
                return;
        }
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                snprintf(k->last_error, sizeof(k->last_error), "keeper: fork: %s", strerror(errno));
                log_warn("%s", k->last_error);
                close(sv[0]);
                close(sv[1]);
                loop_timer_arm(k->restart_timer, now_ns() + backoff_next(&k->backoff, false, 0));
                return;
        }
        if (pid == 0)
                /* Child of fork(): still the daemon's image and privileges,
                 * host namespaces; becomes the keeper.  Never returns. */
                keeper_process_main(sv[1], k->mnt_ns_fd, k->user_ns_fd, k->own_user_ns, k->uid, k->gid, self);
        /* Daemon. */
        close(sv[1]);
        if (loop_watch_child(k->loop, pid, on_keeper_exit, k) < 0) {
                /* Its exit would reach nobody: stop it now (the loop reaps
                 * it as an unclaimed child) and try again later. */
                kill(pid, SIGKILL);
                close(sv[0]);
                snprintf(k->last_error, sizeof(k->last_error), "keeper: watching its exit: %s", strerror(ENOMEM));
                log_warn("%s", k->last_error);
                loop_timer_arm(k->restart_timer, now_ns() + backoff_next(&k->backoff, false, 0));
                return;
        }
        k->pid = pid;
        k->fd = sv[0];
        k->state = KEEPER_STARTING;
        k->start_ns = now_ns();
        if (loop_add_fd(k->loop, k->fd, EPOLLIN, on_keeper_io, k) < 0)
                keeper_kill(k, "its control socket could not be watched");
        arm_deadline(k);
}

/* The keeper's child-exit watch (loop_watch_child, from keeper_start): log
 * why it ended, hand what it had not answered to the next one (or fail it)
 * and schedule that one. */
static void on_keeper_exit(pid_t pid, int status, const struct rusage *ru, void *data) {
        struct keeper *k = data;
        char how[128], why[512];
        bool was_ready;
        uint64_t now = now_ns(), delay;

        was_ready = k->became_ready;
        close_channel(k);
        k->pid = 0;
        k->state = KEEPER_DOWN;
        if (WIFSIGNALED(status))
                snprintf(how, sizeof(how), "was killed by signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
        else
                snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
        snprintf(why, sizeof(why), "the keeper (pid %d) %s%s%s", (int)pid, how, k->kill_reason[0] ? ": " : "",
                 k->kill_reason);
        delay = backoff_next(&k->backoff, was_ready, now - k->ready_ns);
        /* A keeper that could not build its namespaces said why already. */
        if (!k->start_failed) {
                log_warn("%s; restarting it%s", why, delay ? " after a pause" : "");
                snprintf(k->last_error, sizeof(k->last_error), "%s", why);
        }
        /* What it had not answered goes to the next keeper (or fails now
         * when it went to enough keepers already), unless it was killed for
         * missing a deadline. */
        snprintf(why + strlen(why), sizeof(why) - strlen(why), "; it is being restarted");
        fail_requests(k, true, true, k->missed_deadline ? -ETIMEDOUT : -EAGAIN, why);
        loop_timer_arm(k->restart_timer, now + delay);
        arm_deadline(k);
}

int keeper_new(struct loop *l, struct keeper **out) {
        struct keeper *k = calloc(1, sizeof(*k));

        if (!k)
                return -ENOMEM;
        k->loop = l;
        k->uid = getuid();
        k->gid = getgid();
        /* Root mounts in a mount namespace of its own, with no user
         * namespace, so that each workspace may belong to any host id; any
         * other user needs a user namespace to mount at all. */
        k->own_user_ns = geteuid() != 0;
        k->fd = k->mnt_ns_fd = k->user_ns_fd = -1;
        k->next_token = 1;
        list_init(&k->requests);
        k->deadline_timer = loop_timer_new(l, on_deadline, k);
        k->restart_timer = loop_timer_new(l, on_restart_timer, k);
        if (!k->deadline_timer || !k->restart_timer) {
                keeper_free(k);
                return -ENOMEM;
        }
        keeper_start(k);
        *out = k;
        return 0;
}

void keeper_free(struct keeper *k) {
        struct keeper_request *r;

        if (!k)
                return;
        close_channel(k);
        if (k->pid > 0) {
                /* Reaped here, at shutdown, not by the loop. */
                loop_unwatch_child(k->loop, k->pid);
                kill(k->pid, SIGKILL);
                waitpid(k->pid, NULL, 0);
        }
        while ((r = list_first(&k->requests, struct keeper_request, link))) {
                list_unlink(&r->link);
                free(r);
        }
        loop_timer_free(k->deadline_timer);
        loop_timer_free(k->restart_timer);
        if (k->mnt_ns_fd >= 0)
                close(k->mnt_ns_fd);
        if (k->user_ns_fd >= 0)
                close(k->user_ns_fd);
        free(k);
}

unsigned long long keeper_restarts(const struct keeper *k) { return k ? k->restarts : 0; }

static uint64_t request_add(struct keeper *k, const char *line, bool is_remove, keeper_done_fn fn, void *data) {
        struct keeper_request *r = calloc(1, sizeof(*r));

        if (!r)
                return 0;
        snprintf(r->line, sizeof(r->line), "%s", line);
        r->token = k->next_token++;
        r->is_remove = is_remove;
        r->fn = fn;
        r->data = data;
        /* While no keeper can be built, a request fails at the next turn
         * of the loop (never from inside this call). */
        r->deadline_ns = now_ns() + (k->broken && !is_remove ? 0 : MS(KEEPER_QUEUE_TIMEOUT_MS));
        list_append(&k->requests, &r->link);
        flush_requests(k);
        arm_deadline(k);
        return r->token;
}

uint64_t keeper_create(struct keeper *k, uint64_t id, unsigned long long bytes, uid_t uid, gid_t gid,
                       keeper_done_fn fn, void *data) {
        char line[128];

        snprintf(line, sizeof(line), "create %" PRIu64 " %llu %u %u", id, bytes, (unsigned)uid, (unsigned)gid);
        return request_add(k, line, false, fn, data);
}

uint64_t keeper_clone(struct keeper *k, uint64_t id, keeper_done_fn fn, void *data) {
        char line[64];

        snprintf(line, sizeof(line), "clone %" PRIu64, id);
        return request_add(k, line, false, fn, data);
}

void keeper_remove(struct keeper *k, uint64_t id) {
        char line[64];

        snprintf(line, sizeof(line), "remove %" PRIu64, id);
        request_add(k, line, true, NULL, NULL);
}

void keeper_cancel(struct keeper *k, uint64_t token) {
        struct keeper_request *r;

        list_for_each(r, next, &k->requests, struct keeper_request, link)
                if (r->token == token) {
                        r->fn = NULL;
                        /* One not yet sent goes now; a sent one stays until
                         * its answer, which keeps the order of answers. */
                        if (!r->sent) {
                                list_unlink(&r->link);
                                free(r);
                                arm_deadline(k);
                        }
                        return;
                }
}
