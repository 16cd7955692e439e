/* The keeper: the owner of every session's workspace file system in strict
 * mode (docs/sandbox.md, "The workspace").
 *
 * A workspace is a tmpfs of its own, capped at files_max_bytes, so that the
 * kernel enforces the quota against the sandboxed code and the host side
 * alike (ENOSPC).  An unprivileged daemon cannot mount anything on the host,
 * so the tmpfs are mounted inside the keeper: a small process forked by the
 * daemon into a mount namespace of its own (and, for an unprivileged
 * daemon, a user namespace owned by the daemon's uid, which gives it the
 * right to mount; a root keeper stays in the host's user namespace so that
 * each tmpfs can belong to its session's host id); the host root is
 * detached, so that it holds no copy of the FUSE mount.
 * The keeper hands out two kinds of descriptors:
 *   - the workspace's root directory (O_PATH), which the daemon keeps for the
 *     session's life and resolves every host-side access beneath;
 *   - a detached copy of the mount (open_tree(OPEN_TREE_CLONE)), which the
 *     daemon passes to a worker over its socket and the worker attaches as
 *     /work with move_mount(2) before it drops its capabilities.
 * The tmpfs lives as long as anything refers to it: the keeper's mount (until
 * keeper_remove), the daemon's descriptor and any worker's /work.
 *
 * Process context: the daemon, on its event loop.  Requests are synchronous
 * round trips to the keeper (a few tens of microseconds: a mount or an
 * open_tree); the keeper is trusted code that never runs anything of a
 * session's. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

struct keeper;

/* Fork the keeper and wait until its namespace is built.  0, or -errno with a
 * one-line reason in err (e.g. "keeper: unshare user and mount namespaces:
 * Operation not permitted"). */
int keeper_new(struct keeper **out, char *err, size_t errlen);
/* Kill and reap the keeper.  Workspaces still referred to by descriptors stay
 * usable through them; no new copies can be made.  Accepts NULL. */
void keeper_free(struct keeper *k);
/* The keeper's pid (for the daemon's reaping), 0 once it is gone. */
pid_t keeper_pid(const struct keeper *k);

/* Mount a new tmpfs of at most bytes (and one inode per 4 KiB) for workspace
 * id, its root directory owned by host uid:gid with mode 0755 (the
 * session's host id, the worker's uid 1000; an unprivileged daemon can
 * name only its own uid/gid, and other ids get -EINVAL).  0 with *root_fd
 * (O_PATH|O_DIRECTORY of its root, owned by the caller), or -errno. */
int keeper_create(struct keeper *k, uint64_t id, unsigned long long bytes, uid_t uid, gid_t gid, int *root_fd);
/* A detached copy of workspace id's mount, for a worker's move_mount.  0 with
 * *tree_fd (owned by the caller), or -errno. */
int keeper_clone(struct keeper *k, uint64_t id, int *tree_fd);
/* Unmount workspace id in the keeper (lazily: copies and descriptors keep it
 * alive until they go). */
void keeper_remove(struct keeper *k, uint64_t id);
