/* The worker's user namespace and its one mapped id (docs/sandbox.md, "The
 * ids come from the parent"; docs/security.md, "Who the worker is on the
 * host").
 *
 * Exactly one id exists inside: JAIL_UID/JAIL_GID (1000), which is the
 * session's own unprivileged host id when the daemon is root, the daemon's
 * uid otherwise.  Only a process with privilege over the child's namespace
 * in its parent namespace may map anything but its own id
 * (user_namespaces(7); DESIGN §7), so the map is written by the parent:
 *
 *   parent (the zygote, host namespaces):  user_ns_map_child()
 *   child (new namespaces, every capability there, the zygote's
 *          credentials still):             user_ns_wait_mapped(), then
 *                                          user_ns_become_jail_user(), later
 *                                          user_ns_limit() through its procfs
 *
 * The keeper (sandbox/keeper_process.c) maps its own id with
 * user_ns_write_maps(). */
#pragma once

#include <sys/types.h>

#include "jail_error.h"

/* The identity inside the jail (DESIGN §4, docs/protocol.md: HOME=/work,
 * USER=securerfs). */
#define JAIL_UID 1000
#define JAIL_GID 1000

/* Write /proc/PID/setgroups "deny" (pid 0: /proc/self; a kernel without the
 * file, before 3.19, is fine), then uid_map "INSIDE HOST_UID 1" and gid_map
 * "INSIDE HOST_GID 1", each in one write(2) (the kernel parses a map per
 * write and takes only the first).  setgroups goes first: an unprivileged
 * gid_map requires it, and it keeps the process from dropping a
 * supplementary group that guards a deny-ACL.  0, or -errno with e.g.
 * `write /proc/42/uid_map ("1000 1879048192 1"): Operation not permitted`. */
int user_ns_write_maps(pid_t pid, unsigned inside, uid_t host_uid, gid_t host_gid, struct jail_error *e);

/* Parent side, right after the clone, while the child waits in
 * user_ns_wait_mapped(): map the child's JAIL_UID/JAIL_GID to
 * host_uid/host_gid and nothing else, then release it through go_fd (the
 * write end of the pipe the child reads).  go_fd is not closed.  0, or
 * -errno with the reason in e; the caller then kills the child, which has
 * run nothing yet. */
int user_ns_map_child(pid_t pid, int go_fd, uid_t host_uid, gid_t host_gid, struct jail_error *e);

/* Child side, first thing after the clone: wait on go_fd (the read end)
 * until the parent has mapped our ids; until then we are the overflow id in
 * our own namespace.  0, or -1 when the parent went away or failed (end of
 * file): the caller _exit()s. */
int user_ns_wait_mapped(int go_fd);

/* Child side (privilege change): become JAIL_UID/JAIL_GID, so that the
 * host's kernel sees the session's id in every check from now on and every
 * file we make is the session's.  Capabilities in our namespace stay: their
 * loss on setuid applies only when leaving uid 0 of the namespace, which is
 * not mapped.  Changing ids made the process non-dumpable (its /proc/1 files
 * would belong to host root) and cleared its parent-death signal: both are
 * set again.  0, or -errno with the step in e. */
int user_ns_become_jail_user(struct jail_error *e);

/* Child side, through the jail's fresh procfs at proc_dir while it is still
 * writable (needs CAP_SYS_RESOURCE in our namespace): max_user_namespaces = 0
 * (no nested user namespace, in which an unprivileged process would hold
 * every capability again), and the inotify and fanotify counts 0 (per-user
 * kernel counters; skipped where the kernel lacks them).  The user.*
 * sysctls are per namespace and inherited below it.  0, or -errno. */
int user_ns_limit(const char *proc_dir, struct jail_error *e);
