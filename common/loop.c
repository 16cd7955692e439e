#include "loop.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "array.h"
#include "hash.h"
#include "list.h"
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
        uint64_t seq; /* arming order: of two due at once, the first armed fires first */
        size_t slot;  /* its place in the loop's heap, while armed */
        struct list idle; /* in the loop's idle list while armed with loop_timer_arm_idle() */
};

/* A watched child, or an exit nobody watched yet (fn NULL). */
struct child {
        pid_t pid;
        loop_child_fn fn;
        void *data;
        bool exited;
        int status;
        struct rusage ru;
        struct hash_node node; /* in the loop's children, by pid */
};

#define UNCLAIMED_MAX 64

struct loop {
        int epfd;
        struct hash children; /* struct child by pid */
        pid_t unclaimed[UNCLAIMED_MAX]; /* oldest first */
        unsigned n_unclaimed;
        pid_t claimed[UNCLAIMED_MAX]; /* exited before their watch came: to deliver */
        unsigned n_claimed;
        struct loop_timer *deliver; /* exits claimed after they happened */
        struct watch *watches; /* indexed by fd */
        int n_watches;
        /* The armed timers, a binary min-heap by (due, seq): arming,
         * disarming and finding the next due cost log(armed timers), not a
         * scan of them (every session has timers: a daemon with thousands
         * armed must not walk them on each iteration). */
        struct loop_timer **heap;
        size_t n_heap, heap_cap; /* heap_cap >= n_timers: arming never allocates */
        size_t n_timers;
        uint64_t next_seq;
        struct list idle; /* armed timers that fire early when the loop has nothing to do */
        uint64_t turn;
        uint64_t spin_ns;   /* loop_set_spin() */
        uint64_t events_ns; /* when descriptors were last ready */
        bool stop;
};

int loop_new(struct loop **out) {
        struct loop *l = calloc(1, sizeof(*l));

        if (!l)
                return -ENOMEM;
        list_init(&l->idle);
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
        loop_timer_free(l->deliver);
        for (size_t i = 0; i < l->children.n_buckets; i++)
                while (l->children.buckets[i]) {
                        struct child *c = hash_entry(l->children.buckets[i], struct child, node);
                        l->children.buckets[i] = c->node.next;
                        free(c);
                }
        hash_free(&l->children);
        while (l->n_heap)
                loop_timer_arm(l->heap[0], 0);
        free(l->heap);
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
        struct loop_timer *t;

        /* Room in the heap for every timer there is, made now: arming,
         * which has no way to fail, never needs memory. */
        if (l->n_timers == l->heap_cap) {
                struct loop_timer **h = array_grow(l->heap, &l->heap_cap, sizeof(*h), 64);

                if (!h)
                        return NULL;
                l->heap = h;
        }
        t = calloc(1, sizeof(*t));
        if (t) {
                l->n_timers++;
                t->loop = l;
                t->fn = fn;
                t->data = data;
                list_init(&t->idle);
        }
        return t;
}

static bool timer_before(const struct loop_timer *a, const struct loop_timer *b) {
        return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(struct loop *l, size_t i, struct loop_timer *t) {
        l->heap[i] = t;
        t->slot = i;
}

/* Move the timer at i up, then down, to where the heap order puts it. */
static void heap_fix(struct loop *l, size_t i) {
        struct loop_timer *t = l->heap[i];

        while (i > 0 && timer_before(t, l->heap[(i - 1) / 2])) {
                heap_set(l, i, l->heap[(i - 1) / 2]);
                i = (i - 1) / 2;
        }
        for (;;) {
                size_t c = 2 * i + 1;

                if (c >= l->n_heap)
                        break;
                if (c + 1 < l->n_heap && timer_before(l->heap[c + 1], l->heap[c]))
                        c++;
                if (!timer_before(l->heap[c], t))
                        break;
                heap_set(l, i, l->heap[c]);
                i = c;
        }
        heap_set(l, i, t);
}

static void heap_remove(struct loop *l, struct loop_timer *t) {
        size_t i = t->slot;

        l->n_heap--;
        if (i < l->n_heap) {
                heap_set(l, i, l->heap[l->n_heap]);
                heap_fix(l, i);
        }
}

void loop_timer_arm(struct loop_timer *t, uint64_t due_ns) {
        struct loop *l = t->loop;

        if (t->due)
                heap_remove(l, t);
        t->due = 0;
        if (list_linked(&t->idle)) {
                list_unlink(&t->idle);
                list_init(&t->idle);
        }
        if (!due_ns)
                return;
        t->due = due_ns;
        t->seq = l->next_seq++;
        heap_set(l, l->n_heap++, t);
        heap_fix(l, t->slot);
}

uint64_t loop_timer_due(const struct loop_timer *t) { return t->due; }

void loop_timer_arm_idle(struct loop_timer *t, uint64_t due_ns) {
        loop_timer_arm(t, due_ns);
        if (due_ns)
                list_append(&t->loop->idle, &t->idle);
}

void loop_timer_free(struct loop_timer *t) {
        if (!t)
                return;
        loop_timer_arm(t, 0);
        t->loop->n_timers--;
        free(t);
}

void loop_stop(struct loop *l) { l->stop = true; }

uint64_t loop_turn(const struct loop *l) { return l->turn; }

void loop_set_spin(struct loop *l, uint64_t ns) { l->spin_ns = ns; }

/* epoll_wait() for timeout ms, after up to spin_ns of looks that do not
 * sleep since descriptors were last ready. */
static int wait_events(struct loop *l, struct epoll_event *events, int max, int timeout) {
        int n = 0;

        if (l->spin_ns && timeout != 0)
                while (now_ns() - l->events_ns < l->spin_ns && (n = epoll_wait(l->epfd, events, max, 0)) == 0)
                        sched_yield(); /* what else would run on this CPU goes first */
        if (n == 0)
                n = epoll_wait(l->epfd, events, max, timeout);
        if (n > 0)
                l->events_ns = now_ns();
        return n;
}

/* ---- children ------------------------------------------------------------ */

static struct child *child_find(struct loop *l, pid_t pid) {
        struct child *c;

        HASH_FOR_EACH(c, &l->children, hash_u64((uint64_t)pid), struct child, node) {
                if (c->pid == pid)
                        return c;
        }
        return NULL;
}

static struct child *child_take(struct loop *l, pid_t pid) {
        struct child *c = child_find(l, pid);

        if (c)
                hash_remove(&l->children, &c->node);
        return c;
}

static void unclaimed_forget(struct loop *l, pid_t pid) {
        for (unsigned i = 0; i < l->n_unclaimed; i++)
                if (l->unclaimed[i] == pid) {
                        memmove(l->unclaimed + i, l->unclaimed + i + 1, (l->n_unclaimed - i - 1) * sizeof(pid_t));
                        l->n_unclaimed--;
                        return;
                }
}

static int child_insert(struct loop *l, struct child *c) {
        return hash_insert(&l->children, &c->node, hash_u64((uint64_t)c->pid));
}

/* Exits whose watch came after them (at most UNCLAIMED_MAX: each was an
 * unclaimed one). */
static void deliver_claimed(void *data) {
        struct loop *l = data;

        while (l->n_claimed > 0) {
                pid_t pid = l->claimed[--l->n_claimed];
                struct child *c = child_find(l, pid);

                if (!c || !c->exited || !c->fn)
                        continue;
                child_take(l, pid);
                c->fn(c->pid, c->status, &c->ru, c->data); /* may watch or claim more */
                free(c);
        }
}

int loop_watch_child(struct loop *l, pid_t pid, loop_child_fn fn, void *data) {
        struct child *c = child_find(l, pid);

        if (c) {
                c->fn = fn;
                c->data = data;
                if (c->exited) {
                        unclaimed_forget(l, pid);
                        if (l->n_claimed < UNCLAIMED_MAX)
                                l->claimed[l->n_claimed++] = pid;
                        if (!l->deliver && !(l->deliver = loop_timer_new(l, deliver_claimed, l)))
                                return -ENOMEM;
                        loop_timer_arm(l->deliver, now_ns());
                }
                return 0;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (struct child){.pid = pid, .fn = fn, .data = data};
        if (child_insert(l, c) < 0) {
                free(c);
                return -ENOMEM;
        }
        return 0;
}

/* Keep an exit nobody watches, dropping the oldest kept one when full. */
static void unclaimed_add(struct loop *l, pid_t pid) {
        if (l->n_unclaimed == UNCLAIMED_MAX) {
                free(child_take(l, l->unclaimed[0]));
                memmove(l->unclaimed, l->unclaimed + 1, (UNCLAIMED_MAX - 1) * sizeof(pid_t));
                l->n_unclaimed--;
        }
        l->unclaimed[l->n_unclaimed++] = pid;
}

void loop_unwatch_child(struct loop *l, pid_t pid) {
        struct child *c = child_find(l, pid);

        if (!c || !c->fn)
                return;
        if (!c->exited) {
                free(child_take(l, pid));
                return;
        }
        /* Exited and claimed, its delivery still to come: deliver_claimed()
         * skips it now, and it is an unclaimed exit again. */
        c->fn = NULL;
        c->data = NULL;
        unclaimed_add(l, pid);
}

bool loop_take_exit(struct loop *l, pid_t pid, int *status, struct rusage *ru) {
        struct child *c = child_find(l, pid);

        if (!c || !c->exited || c->fn)
                return false;
        unclaimed_forget(l, pid);
        child_take(l, pid);
        *status = c->status;
        *ru = c->ru;
        free(c);
        return true;
}

void loop_reap_children(struct loop *l) {
        for (;;) {
                struct rusage ru;
                int status;
                pid_t pid = wait4(-1, &status, WNOHANG, &ru);
                struct child *c;

                if (pid <= 0)
                        return;
                c = child_take(l, pid);
                if (c && c->fn) {
                        c->fn(pid, status, &ru, c->data);
                        free(c);
                        continue;
                }
                /* Nobody watches it yet: keep it for a watch to come. */
                if (!c && !(c = calloc(1, sizeof(*c))))
                        continue;
                *c = (struct child){.pid = pid, .exited = true, .status = status, .ru = ru};
                if (child_insert(l, c) < 0) {
                        free(c);
                        continue;
                }
                unclaimed_add(l, pid);
        }
}

/* Fire every timer that was due when this pass began; returns the epoll
 * timeout in ms until the next one (-1: none; 0: one is due already).  A
 * timer that a callback arms for now is due only after this pass began, so
 * it fires at the next iteration, after the file descriptors' events: a
 * callback that has done its share of work can yield that way. */
static int run_timers(struct loop *l) {
        uint64_t pass = now_ns(), now, next;

        while (l->n_heap && l->heap[0]->due <= pass) {
                struct loop_timer *due = l->heap[0];

                loop_timer_arm(due, 0);
                due->fn(due->data); /* may re-arm or free timers */
        }
        if (!l->n_heap)
                return -1;
        next = l->heap[0]->due;
        now = now_ns();
        if (next <= now)
                return 0;
        /* Round up so that we never wake before the deadline. */
        return (int)MIN((next - now + 999999) / 1000000, (uint64_t)INT32_MAX);
}

/* The loop has nothing ready: every timer armed with loop_timer_arm_idle()
 * fires now, in arming order.  Only those armed before this moment: the
 * list is moved aside first, so that a callback that arms its timer idle
 * again waits for the next idle moment instead of spinning here (and a
 * callback may arm or free any timer: each is taken from the head). */
static void fire_idle_timers(struct loop *l) {
        struct list now;
        struct loop_timer *t;

        list_init(&now);
        if (list_empty(&l->idle))
                return;
        now.next = l->idle.next;
        now.prev = l->idle.prev;
        now.next->prev = &now;
        now.prev->next = &now;
        list_init(&l->idle);
        while ((t = list_first(&now, struct loop_timer, idle))) {
                loop_timer_arm(t, 0); /* unlinks it from now */
                t->fn(t->data);
        }
}

int loop_run(struct loop *l) {
        struct epoll_event events[64];

        l->stop = false;
        while (!l->stop) {
                int timeout, n;

                l->turn++;
                timeout = run_timers(l);

                if (l->stop)
                        break;
                /* Before sleeping with idle timers armed: a look without
                 * waiting, and if nothing is ready, those fire now. */
                if (timeout != 0 && !list_empty(&l->idle)) {
                        n = epoll_wait(l->epfd, events, (int)ARRAY_SIZE(events), 0);
                        if (n == 0) {
                                fire_idle_timers(l);
                                continue;
                        }
                } else {
                        n = wait_events(l, events, (int)ARRAY_SIZE(events), timeout);
                }
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
