/* The keeper's own process (the daemon's side is sandbox/keeper.[ch]): a
 * process in a mount namespace of its own (unprivileged: and a user
 * namespace) that mounts one size-capped tmpfs per workspace and hands out
 * descriptors to them (docs/sandbox.md, "The workspace").
 *
 * Control channel: a SOCK_SEQPACKET socketpair, one short ASCII datagram per
 * request and one per reply, answered strictly in order (so the daemon
 * matches each reply to the oldest request in flight):
 *   create ID BYTES UID GID -> "ok" + SCM_RIGHTS(O_PATH root) | "err ERRNO"
 *   clone ID                -> "ok" + SCM_RIGHTS(detached mount) | "err ERRNO"
 *   remove ID               -> "ok" | "err ERRNO"
 * and once at start "ready" (a fresh keeper: with SCM_RIGHTS of its nsfs
 * descriptors, mount namespace first, then user namespace if it has one) or
 * "fail STEP: REASON".  Workspace ID is mounted at /ID in the keeper's
 * private root. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Child of fork() in keeper_start(), right after it: still the daemon's
 * image (single-threaded) and privileges, host namespaces.  Becomes the
 * keeper: the daemon's start-up state reset (common/child.h: signals, out of
 * its session, dying with daemon_pid, nothing of its descriptors but sock as
 * fd 3 and, for a replacement, the namespaces kept from the first keeper,
 * mnt_ns_fd and user_ns_fd, as fds 4 and 5; -1 for a fresh keeper), comm
 * "srfs-keeper"; then builds its namespaces afresh or joins the kept ones
 * (own_user_ns: a user namespace mapping 0 to uid/gid, the daemon's ids) and
 * serves requests until the daemon closes its end.  Never returns. */
__attribute__((noreturn)) void keeper_process_main(int sock, int mnt_ns_fd, int user_ns_fd, bool own_user_ns,
                                                   uid_t uid, gid_t gid, pid_t daemon_pid);
