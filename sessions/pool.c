#include "pool.h"

#include <errno.h>
#include <stdio.h>

#include "hostid.h"
#include "log.h"
#include "loop.h"
#include "session_private.h"
#include "worker.h"

/* After a pool worker failed to start. */
#define POOL_BACKOFF_NS 2000000000ULL
/* How long a refill waits after a worker left the pool (pool_fill_soon). */
#define POOL_REFILL_DELAY_NS 25000000ULL
/* How long a worker waits in the pool before it is warmed.  A burst of new
 * sessions takes the pool's workers within milliseconds of their coming:
 * they are not warmed, which would cost each of them about half a
 * millisecond of CPU on the burst's path and, kept idle, 0.4 MiB.  A worker
 * that waits longer than this is likely to wait for a session that comes
 * alone, whose first result the warm-up shortens. */
#define POOL_WARM_DELAY_NS 10000000ULL

/* Warm each worker that has waited POOL_WARM_DELAY_NS; again for the next. */
static void on_warm_timer(void *data) {
        struct sessions *t = data;
        uint64_t now = now_ns(), next = 0;
        struct worker *w;

        list_for_each(w, tmp, &t->pool, struct worker, pool_link) {
                uint64_t due = w->pooled_ns + POOL_WARM_DELAY_NS;

                if (w->warmed)
                        continue;
                if (due <= now)
                        worker_warm(w);
                else if (!next || due < next)
                        next = due;
        }
        loop_timer_arm(t->warm_timer, next);
}

static void on_pool_timer(void *data) {
        pool_fill(data);
}

int pool_init(struct sessions *t) {
        list_init(&t->pool);
        t->pool_timer = loop_timer_new(t->loop, on_pool_timer, t);
        t->warm_timer = loop_timer_new(t->loop, on_warm_timer, t);
        return t->pool_timer && t->warm_timer ? 0 : -ENOMEM;
}

void pool_free(struct sessions *t) {
        loop_timer_free(t->pool_timer);
        loop_timer_free(t->warm_timer);
}

void pool_fill(struct sessions *t) {
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

                if (host_id_take(t->ids, &h) < 0)
                        return;
                w = worker_spawn(t, NULL, h);
                host_id_unref(t->ids, h);
                if (!w)
                        return;
                t->pool_starting++;
        }
}

void pool_fill_soon(struct sessions *t) {
        uint64_t due = now_ns() + POOL_REFILL_DELAY_NS, armed = loop_timer_due(t->pool_timer);

        if (t->pool_ready + t->pool_starting >= t->opt->pool)
                return;
        if (armed && armed <= due)
                return; /* a refill (or the back-off's end) comes sooner */
        loop_timer_arm(t->pool_timer, due > t->pool_backoff_until ? due : t->pool_backoff_until);
}

struct worker *pool_first(struct sessions *t) { return list_first(&t->pool, struct worker, pool_link); }

struct worker *pool_take(struct sessions *t, const struct host_id *h) {
        struct worker *w = pool_first(t);

        if (!w || w->host_id != h)
                return NULL;
        list_unlink(&w->pool_link);
        t->pool_ready--;
        return w;
}

void pool_add(struct sessions *t, struct worker *w) {
        uint64_t due, armed = loop_timer_due(t->warm_timer);

        t->pool_starting--;
        list_prepend(&t->pool, &w->pool_link);
        t->pool_ready++;
        w->pooled_ns = now_ns();
        due = w->pooled_ns + POOL_WARM_DELAY_NS;
        if (!armed || due < armed)
                loop_timer_arm(t->warm_timer, due);
}

void pool_worker_gone(struct sessions *t, struct worker *w) {
        if (w->state == WORKER_READY) {
                if (list_linked(&w->pool_link)) {
                        list_unlink(&w->pool_link);
                        t->pool_ready--;
                }
                return;
        }
        /* A pool worker that never became ready: back off so that a jail
         * that cannot be built does not spin. */
        t->pool_starting--;
        t->pool_backoff_until = now_ns() + POOL_BACKOFF_NS;
        snprintf(t->last_start_error, sizeof(t->last_start_error), "%s",
                 w->fatal ? w->fatal : "the worker exited while starting");
        log_error("pool worker could not start: %s", t->last_start_error);
}
