/* The worker's file system view: a fresh root assembled from nothing,
 * read-only binds of what R needs, private writable places, a fresh /proc
 * with its masks, a minimal /dev, and then the host's mount table dropped
 * (docs/sandbox.md, steps 2 to 7; docs/security.md, "/proc and /dev").
 *
 * Child side only: the jailed child, pid 1 of its new mount namespace,
 * holding every capability there (it is what lets it mount), uid 1000 by
 * now (user_ns_become_jail_user), so that every file and directory made here
 * belongs to the session's id on the host.  jail.c calls the steps in
 * order; each needs the ones before it:
 *
 *   mounts_scratch_root   the scratch tmpfs, the host root at /oldroot
 *   mounts_writable       /tmp (and /work unless it comes later)
 *   mounts_host_tree      the read-only binds
 *   mounts_etc            the generated /etc
 *   mounts_proc           a fresh procfs (writable, for user_ns_limit)
 *   mounts_proc_seal      its masks, then read-only
 *   mounts_dev            /dev
 *   mounts_switch_root    "/" becomes the new root, read-only; the host is gone
 *   mounts_attach_workspace  later, /work from the keeper's detached mount
 *
 * Each returns 0 or -errno with "<step>: <strerror>" in e. */
#pragma once

#include <stddef.h>

#include "jail_error.h"
#include "tmpfs.h"

/* The jail's host name: its UTS namespace's (jail.c sets it) and
 * /etc/hostname's. */
#define JAIL_HOSTNAME "securerfs"

/* Where the new root's procfs sits until mounts_switch_root(), for
 * user_ns_limit(). */
#define MOUNTS_NEW_PROC "/newroot/proc"

/* Step 2: make every mount private (nothing propagates back to the host,
 * and pivot_root refuses shared mounts), mount a tmpfs on /tmp (in our
 * namespace only) and pivot into it with the host root at /oldroot; the new
 * root is a tmpfs of its own at /newroot.  From here on every host path is
 * reachable as /oldroot/<path> whatever /tmp covered. */
int mounts_scratch_root(struct jail_error *e);

/* Step 3: the only writable places, private tmpfs with a size cap (0: 64
 * MiB), nr_inodes (above) and nosuid,nodev,noexec: /tmp (mode 1777) and,
 * unless workspace_later, /work (0755, owned by the jail's user).  With
 * workspace_later /work stays an empty mount point on the read-only root,
 * for mounts_attach_workspace(). */
int mounts_writable(unsigned long long tmp_bytes, unsigned long long work_bytes, int workspace_later,
                    struct jail_error *e);

/* Step 4: the read-only view of the host, each a non-recursive bind
 * remounted ro,nosuid,nodev: /usr; the merged-/usr links /bin, /sbin, /lib,
 * /lib64, /lib32, /libx32 (recreated as links, or bound on a split host;
 * skipped if absent); /etc/R, /etc/alternatives, /etc/ld.so.cache,
 * /etc/fonts, /etc/localtime, /var/cache/fontconfig when present; $R_HOME if
 * it is not below /usr; each of r_libs (absolute, normalised, not "/").
 * Non-recursive: whatever is mounted below them on the host (the FUSE mount)
 * does not come along; where the kernel refuses that (EINVAL: locked mounts
 * below) the error says so, and there is deliberately no fallback. */
int mounts_host_tree(const char *const *r_libs, size_t n_r_libs, struct jail_error *e);

/* Step 5: the generated /etc: passwd, group, hostname (JAIL_HOSTNAME),
 * hosts (localhost only), nsswitch.conf (files only).  Nothing of the host's
 * users, hosts or resolver leaks in. */
int mounts_etc(struct jail_error *e);

/* Step 6, first half: a fresh procfs of the new pid namespace
 * (nosuid,nodev,noexec) at MOUNTS_NEW_PROC, while the host's /proc is still
 * in our namespace: the kernel allows procfs in a user namespace only if an
 * unobstructed procfs is already visible there (mnt_already_visible()).  It
 * stays writable until mounts_proc_seal(). */
int mounts_proc(struct jail_error *e);

/* Step 6, second half: cover each host-facing entry (Docker's default
 * masked paths and a few more: docs/security.md) with an empty read-only
 * file or directory, then remount the whole procfs read-only: no file of
 * /proc opens for writing (/proc/self/mem, /proc/sys: EROFS), whoever owns
 * it. */
int mounts_proc_seal(struct jail_error *e);

/* Step 6, /dev: a 64 KiB tmpfs (then read-only) with bind mounts of null,
 * zero, full, random, urandom, each remounted read-only (a device node stays
 * usable on a read-only mount, but its metadata cannot change: the host's
 * /dev/null is the same inode), and the links fd, stdin, stdout, stderr. */
int mounts_dev(struct jail_error *e);

/* Step 7 (privilege change: the host's file system becomes unreachable):
 * detach the host root (MNT_DETACH takes its whole tree, the FUSE mount's
 * copy included: DESIGN §7), move the new root over the scratch root and
 * chroot into it (no second pivot_root: its cost grows with the host's
 * threads), then remount "/" read-only; /tmp, /work, /proc and the device nodes keep their own flags.
 * The working directory is "/". */
int mounts_switch_root(struct jail_error *e);

/* Later, when the worker is assigned: attach fd, a detached copy of the
 * session's workspace (open_tree(OPEN_TREE_CLONE), sandbox/keeper.h), at
 * /work with move_mount(2), and chdir there.  It keeps the keeper's
 * nosuid,nodev,noexec.  fd is not closed. */
int mounts_attach_workspace(int fd, struct jail_error *e);
