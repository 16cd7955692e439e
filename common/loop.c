#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "macros.h"

struct watch {
        loop_fd_fn fn;
        void *data;
        uint32_t gen; /* bumped on every add/del: stale events are ignored */
        bool active;
};

struct loop_timer {
        struct loop *loop;
        loop_timer_fn fn;
        void *data;
        uint64_t due; /* 0: disarmed */
        struct loop_timer *prev, *next;
};

struct loop {
        int epfd;
        struct watch *watches; /* indexed by fd */
        int n_watches;
        struct loop_timer *timers; /* armed ones, unsorted */
        bool stop;
};

uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int loop_new(struct loop **out) {
        struct loop *l = calloc(1, sizeof(*l));

        if (!l)
                return -ENOMEM;
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epfd < 0) {
                int e = -errno;
                free(l);
                return e;
        }
        *out = l;
        return 0;
}

void loop_free(struct loop *l) {
        if (!l)
                return;
        while (l->timers)
                loop_timer_arm(l->timers, 0);
        if (l->epfd >= 0)
                close(l->epfd);
        free(l->watches);
        free(l);
}

int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *data) {
        struct epoll_event ev = {.events = events};

        if (fd >= l->n_watches) {
                int n = MAX(fd + 1, l->n_watches * 2);
                struct watch *w = realloc(l->watches, sizeof(*w) * (size_t)n);
                if (!w)
                        return -ENOMEM;
                memset(w + l->n_watches, 0, sizeof(*w) * (size_t)(n - l->n_watches));
                l->watches = w;
                l->n_watches = n;
        }
        l->watches[fd].gen++;
        ev.data.u64 = (uint64_t)l->watches[fd].gen << 32 | (uint32_t)fd;
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                return -errno;
        l->watches[fd].fn = fn;
        l->watches[fd].data = data;
        l->watches[fd].active = true;
        return 0;
}

int loop_mod_fd(struct loop *l, int fd, uint32_t events) {
        struct epoll_event ev = {.events = events};

        if (fd >= l->n_watches || !l->watches[fd].active)
                return -ENOENT;
        ev.data.u64 = (uint64_t)l->watches[fd].gen << 32 | (uint32_t)fd;
        return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void loop_del_fd(struct loop *l, int fd) {
        if (fd < 0 || fd >= l->n_watches || !l->watches[fd].active)
                return;
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
        l->watches[fd].active = false;
        l->watches[fd].gen++;
}

struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *data) {
        struct loop_timer *t = calloc(1, sizeof(*t));

        if (t) {
                t->loop = l;
                t->fn = fn;
                t->data = data;
        }
        return t;
}

void loop_timer_arm(struct loop_timer *t, uint64_t due_ns) {
        struct loop *l = t->loop;

        if (t->due) { /* unlink */
                if (t->prev)
                        t->prev->next = t->next;
                else
                        l->timers = t->next;
                if (t->next)
                        t->next->prev = t->prev;
                t->prev = t->next = NULL;
        }
        t->due = due_ns;
        if (due_ns) {
                t->next = l->timers;
                if (l->timers)
                        l->timers->prev = t;
                l->timers = t;
        }
}

void loop_timer_free(struct loop_timer *t) {
        if (!t)
                return;
        loop_timer_arm(t, 0);
        free(t);
}

void loop_stop(struct loop *l) { l->stop = true; }

/* Fire every timer that was due when this pass began; returns the epoll
 * timeout in ms until the next one (-1: none; 0: one is due already).  A
 * timer that a callback arms for now is due only after this pass began, so
 * it fires at the next iteration, after the file descriptors' events: a
 * callback that has done its share of work can yield that way. */
static int run_timers(struct loop *l) {
        uint64_t pass = now_ns();

        for (;;) {
                uint64_t now, next = 0;
                struct loop_timer *due = NULL;

                for (struct loop_timer *t = l->timers; t; t = t->next) {
                        if (t->due <= pass) {
                                due = t;
                                break;
                        }
                        if (!next || t->due < next)
                                next = t->due;
                }
                if (due) {
                        loop_timer_arm(due, 0);
                        due->fn(due->data); /* may re-arm or free timers */
                        continue;
                }
                if (!next)
                        return -1;
                now = now_ns();
                if (next <= now)
                        return 0;
                /* Round up so that we never wake before the deadline. */
                return (int)MIN((next - now + 999999) / 1000000, (uint64_t)INT32_MAX);
        }
}

int loop_run(struct loop *l) {
        struct epoll_event events[64];

        l->stop = false;
        while (!l->stop) {
                int timeout = run_timers(l), n;

                if (l->stop)
                        break;
                n = epoll_wait(l->epfd, events, (int)ARRAY_SIZE(events), timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (int i = 0; i < n && !l->stop; i++) {
                        int fd = (int)(uint32_t)events[i].data.u64;
                        uint32_t gen = (uint32_t)(events[i].data.u64 >> 32);
                        struct watch *w;

                        if (fd >= l->n_watches)
                                continue;
                        w = &l->watches[fd];
                        if (!w->active || w->gen != gen)
                                continue;
                        w->fn(fd, events[i].events, w->data);
                }
        }
        return 0;
}
