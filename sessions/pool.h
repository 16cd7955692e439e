/* The warm pool (-o pool=N): N workers kept ready — cloned, jailed but for
 * /work, said "ready" — and unassigned, so that a new session gets one at
 * once instead of waiting for a clone.  It refills in the background (a
 * little after a worker left it, pool_fill_soon), warms a worker that has
 * waited 10 ms (worker_warm), and backs off for 2 s after a pool worker failed to start (a jail that cannot
 * be built must not spin).  A root daemon's pooled workers each have a host
 * id of their own, which the session they go to adopts.
 *
 * Process context: the daemon's event loop. */
#pragma once

struct sessions;
struct worker;
struct host_id;

/* Its refill timer.  0 or -ENOMEM. */
int pool_init(struct sessions *t);
void pool_free(struct sessions *t);

/* Start workers until N are ready or starting (unless backing off). */
void pool_fill(struct sessions *t);
/* The same in 25 ms (or sooner if a refill is due sooner): after a worker
 * left the pool for a new session, so that the refill's clone and jail
 * (about 10 ms of CPU, a machine's two cores for 5 ms) do not compete with
 * that session's first run.  No session waits for this: one that finds the
 * pool empty clones a worker of its own at once. */
void pool_fill_soon(struct sessions *t);
/* The worker a new session would get (its host id is the one to adopt),
 * or NULL when the pool is empty. */
struct worker *pool_first(struct sessions *t);
/* Take the first ready worker if it is mapped to h; NULL otherwise. */
struct worker *pool_take(struct sessions *t, const struct host_id *h);
/* A pool worker (no session) is ready: it joins the pool. */
void pool_add(struct sessions *t, struct worker *w);
/* A pool worker is gone (about to be freed): out of the pool if it was
 * ready, else its start failed (logged, stats' last_start_error, back-off). */
void pool_worker_gone(struct sessions *t, struct worker *w);
