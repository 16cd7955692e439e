/* Daemon side of the zygote: starts `securerfs-worker --zygote`, which
 * initialises R once, and asks it for workers (see docs/protocol.md).
 *
 * Process context: the daemon, on its event loop; nothing here blocks.  The
 * zygote is forked and exec'd with a clean environment, in its own session
 * (a Ctrl-C at the daemon's terminal must not interrupt every run) and with
 * PR_SET_PDEATHSIG so that it dies with the daemon.
 *
 * Its exit comes to the spawner's own child-exit watch on the loop
 * (loop_watch_child, registered right after the fork): whoever reaps the
 * daemon's children (loop_reap_children on SIGCHLD) needs to know nothing of
 * it.
 *
 * Supervision: the zygote can die or stall like any helper.  It must say
 * "ready" within SPAWNER_START_TIMEOUT_MS of its start and answer each spawn
 * request within SPAWNER_REQUEST_TIMEOUT_MS of its sending; one that misses
 * either is killed.  A zygote that dies is logged with its cause and
 * restarted with back-off (common/backoff.h); the requests it had been sent
 * fail with the reason (-ETIMEDOUT when it was killed for missing a
 * deadline, -EAGAIN when it died), and those still queued wait for the next
 * one, at most SPAWNER_QUEUE_TIMEOUT_MS from when they were made
 * (-ETIMEDOUT). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct loop;
struct spawner;

#define SPAWNER_START_TIMEOUT_MS 10000
#define SPAWNER_REQUEST_TIMEOUT_MS 5000
#define SPAWNER_QUEUE_TIMEOUT_MS 10000

struct spawner_config {
        const char *worker_path; /* the securerfs-worker program */
        bool sandbox_none;
        const char *r_libs;      /* colon-separated, or NULL */
        long long tmp_bytes;
        const char *cgroup_dirs; /* where workers join their cgroup ("" or NULL: none) */
        bool allow_exec;         /* --allow-exec to the zygote */
};

/* Called once per request, on the loop and never from inside
 * spawner_request(): pid > 0 on success; otherwise err is -errno and why says
 * what failed (-EAGAIN: the zygote died; -ETIMEDOUT: it missed the
 * deadline, or none was ready in time; -EPERM: it could not clone the
 * worker). */
typedef void (*spawn_done_fn)(void *data, pid_t pid, int err, const char *why);

int spawner_new(struct loop *l, const struct spawner_config *c, struct spawner **out);
/* Ends the zygote (SIGKILL) and fails nothing: pending callbacks are dropped. */
void spawner_free(struct spawner *s);

/* Ask for a worker whose fd 3 will be worker_fd (always consumed: closed
 * here once sent or on failure), to run as host uid:gid (the zygote's
 * datagram "spawn TOKEN UID GID").  Requests wait while the zygote starts.
 * Returns a token for spawner_cancel(), or 0 with fn not to be called when
 * the request could not even be queued (out of memory). */
uint64_t spawner_request(struct spawner *s, int worker_fd, uid_t uid, gid_t gid, spawn_done_fn fn, void *data);
/* The token the next spawner_request() will return. */
uint64_t spawner_next_token(const struct spawner *s);

/* The callback of token will not be called. */
void spawner_cancel(struct spawner *s, uint64_t token);

/* Zygotes started to replace one that died or was killed. */
unsigned long long spawner_restarts(const struct spawner *s);
