/* The keeper: the owner of every session's workspace file system in strict
 * mode (docs/sandbox.md, "The workspace" and "The keeper's restarts").
 *
 * A workspace is a tmpfs of its own, capped at files_max_bytes, so that the
 * kernel enforces the quota against the sandboxed code and the host side
 * alike (ENOSPC).  An unprivileged daemon cannot mount anything on the host,
 * so the tmpfs are mounted inside the keeper: a small process forked by the
 * daemon into a mount namespace of its own (unprivileged: also a user
 * namespace owned by the daemon's uid; root: none, so that it can give each
 * workspace any host owner), whose host root is detached so that it holds no
 * copy of the FUSE mount.  The keeper hands out two kinds of descriptors:
 *   - the workspace's root directory (O_PATH), which the daemon keeps for the
 *     session's life and resolves every host-side access beneath;
 *   - a detached copy of the mount (open_tree(OPEN_TREE_CLONE)), which the
 *     daemon passes to a worker over its socket and the worker attaches as
 *     /work with move_mount(2) before it drops its capabilities.
 *
 * Supervision.  The keeper is a helper like the zygote: it can die or stall,
 * and the daemon's loop never waits for it.  Every request is asynchronous:
 * its callback runs on the loop when the answer comes, or when it fails.  A
 * keeper that misses a request's deadline is killed and its requests fail
 * (-ETIMEDOUT); a dead keeper is logged with its cause and replaced, with
 * back-off; a request a keeper that died (rather than stalled) did not
 * answer goes to the replacement, and fails (-EAGAIN) only when a second
 * keeper dies too (every request is idempotent).  The
 * daemon holds nsfs descriptors of the first keeper's namespaces (sent with
 * its "ready"), so its mount namespace, and every /ID mount in it, outlives
 * the process: a replacement setns()es into those namespaces instead of
 * making new ones, and clones of existing workspaces work again.
 *
 * The keeper's exit comes to its own child-exit watch on the loop
 * (loop_watch_child, registered right after each fork): its death is
 * logged, requests in flight go to the next keeper or fail, a replacement
 * is scheduled.  The keeper's own process is sandbox/keeper_process.[ch].
 *
 * Process context: the daemon, on its event loop; nothing here blocks (but
 * keeper_free, at shutdown, which reaps the keeper it killed). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct loop;
struct keeper;

/* Deadlines.  A request sent to a running keeper must be answered within
 * KEEPER_REQUEST_TIMEOUT_MS (a mount or an open_tree takes tens of
 * microseconds); one queued while no keeper runs waits at most
 * KEEPER_QUEUE_TIMEOUT_MS; a keeper must say "ready" within
 * KEEPER_START_TIMEOUT_MS of its fork. */
#define KEEPER_REQUEST_TIMEOUT_MS 3000
#define KEEPER_QUEUE_TIMEOUT_MS 5000
#define KEEPER_START_TIMEOUT_MS 5000

/* The answer to one request, called once on the loop (never from inside the
 * call that made the request) unless cancelled.  err 0: fd is the descriptor
 * asked for (create, clone; the callee owns it).  err < 0: fd is -1 and why
 * says what failed: -ETIMEDOUT when the keeper missed the request's
 * deadline (it is then replaced) or none came up in time, -EAGAIN when two
 * keepers in a row died with it, -EPERM when none can be built at all, else
 * the errno of the keeper's own call. */
typedef void (*keeper_done_fn)(void *data, int err, int fd, const char *why);

/* Start the keeper (asynchronously: requests queue until it is ready).  Its
 * comm is "srfs-keeper".  0 or -errno (out of memory, no timer). */
int keeper_new(struct loop *l, struct keeper **out);
/* Kill and reap the keeper; pending callbacks are dropped, not called.
 * Workspaces still referred to by descriptors stay usable through them.
 * Accepts NULL. */
void keeper_free(struct keeper *k);
/* Keepers started to replace one that died or was killed. */
unsigned long long keeper_restarts(const struct keeper *k);

/* Mount a new tmpfs of at most bytes (and one inode per 4 KiB) for workspace
 * id, its root owned by uid:gid with mode 0755 (unprivileged: uid and gid
 * must be the daemon's own, the one id its namespace maps).  fn gets the
 * O_PATH|O_DIRECTORY descriptor of its root.  Returns the request's token,
 * or 0 (out of memory) with fn never called. */
uint64_t keeper_create(struct keeper *k, uint64_t id, unsigned long long bytes, uid_t uid, gid_t gid,
                       keeper_done_fn fn, void *data);
/* A detached copy of workspace id's mount, for a worker's move_mount.  As
 * keeper_create. */
uint64_t keeper_clone(struct keeper *k, uint64_t id, keeper_done_fn fn, void *data);
/* Unmount workspace id in the keeper (lazily: copies and descriptors keep it
 * alive until they go).  No answer; a keeper that dies before it is done
 * gets the request again from its replacement. */
void keeper_remove(struct keeper *k, uint64_t id);
/* The callback of token will not be called (an answer still on its way is
 * discarded, its descriptor closed). */
void keeper_cancel(struct keeper *k, uint64_t token);
