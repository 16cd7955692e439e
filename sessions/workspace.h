/* Workspaces: each session's private directory, the sandbox's /work and the
 * fs layer's sessions/N/files/ (docs/sandbox.md, "The workspace").
 *
 * Two back ends, chosen by the sandbox mode:
 *   - strict: a tmpfs per session capped at files_max_bytes, mounted inside
 *     the keeper (sandbox/keeper.h).  The kernel enforces the cap against the
 *     worker and the daemon alike (ENOSPC).  A worker gets a detached copy of
 *     the mount and attaches it as /work.
 *   - none: a directory per session under the daemon's runtime directory
 *     ($XDG_RUNTIME_DIR/securerfs-run-<pid>, /run/securerfs-run-<pid> as root,
 *     else /tmp/securerfs-run-<pid>.XXXXXX; mode 0700; removed at exit, and
 *     those of dead daemons at start).  The worker gets the directory and
 *     chdir()s into it; the cap is enforced only for host-side writes (the
 *     code runs unsandboxed anyway).
 * Either way the workspace outlives its workers (restart, crash) and goes
 * with its session.
 *
 * Everything the sandboxed code may have touched is reached from the
 * workspace's root descriptor, one component at a time, with openat2(2)
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV: a link planted inside never leads the daemon outside. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

struct loop;
struct workspaces;
struct workspace;
struct workspace_snapshot;

/* The answer to an asynchronous workspace request, called once on the loop
 * (never from inside the call that made it) unless cancelled: err 0 with fd
 * (the callee's; -1 when none is asked for), or err < 0 with why (-EAGAIN:
 * the keeper died, missed its deadline or is restarting; -EPERM: it cannot
 * be built; else the errno of the keeper's call). */
typedef void (*workspace_done_fn)(void *data, int err, int fd, const char *why);

/* The daemon's workspaces.  strict: start the keeper (asynchronously, on
 * loop l); else make the runtime directory (and sweep stale ones).  0, or
 * -errno with a reason in err. */
int workspaces_new(struct loop *l, bool strict, long long max_bytes, struct workspaces **out, char *err,
                   size_t errlen);
/* Remove every workspace left, the runtime directory, end the keeper. */
void workspaces_free(struct workspaces *t);
/* Keepers started to replace one that died (0 in none mode). */
unsigned long long workspaces_keeper_restarts(const struct workspaces *t);

/* A new empty workspace for session id, its root owned by uid:gid (strict;
 * an unprivileged daemon must pass its own ids).  0: *out is ready now
 * (none mode).  -EINPROGRESS: *out is made and fn(data, err, -1, why) comes
 * later, when it is ready (err 0) or could not be made (err < 0; free it
 * then).  Other -errno: nothing was made. */
int workspace_new(struct workspaces *t, uint64_t id, uid_t uid, gid_t gid, workspace_done_fn fn, void *data,
                  struct workspace **out);
/* Remove it (its files go) and free it, also while it is being made (its
 * answer is then dropped).  Accepts NULL. */
void workspace_free(struct workspace *w);

/* The O_PATH directory descriptor of its root, owned by w; -1 until it is
 * ready. */
int workspace_root_fd(const struct workspace *w);
/* Give fd (a file or directory the host side just created in w, any kind
 * of descriptor) to the session's host id, so that the worker (uid 1000
 * inside) owns what appears in files/ as if it had made it.  Strict mode
 * only; a no-op when it is the session's already.  0 or -errno. */
int workspace_own(const struct workspace *w, int fd);
/* A descriptor to hand to a new worker (strict: a detached copy of the mount
 * for move_mount; none: the directory, for fchdir).  0 with *fd at once
 * (none mode; owned by the caller).  -EINPROGRESS: fn(data, err, fd, why)
 * comes later, *token names the request for workspaces_cancel().  Other
 * -errno: failed now.  A workspace still being made may be asked: the
 * keeper answers in order, so the copy is made after the mount. */
int workspace_worker_fd(struct workspace *w, workspace_done_fn fn, void *data, int *fd, uint64_t *token);
/* The callback of token (of workspace_worker_fd() on any workspace of t)
 * will not be called (a descriptor still on its way is closed).  Asked of
 * the set, not of the workspace: the workspace may already be freed when its
 * worker's request is given up. */
void workspaces_cancel(struct workspaces *t, uint64_t token);

/* Bytes in use now. */
long long workspace_usage(struct workspace *w);
/* Before a host-side write grows the files by growth bytes (negative:
 * shrinks): -ENOSPC when that would pass files_max_bytes.  In strict mode
 * the kernel enforces the cap and this always succeeds. */
int workspace_charge(struct workspace *w, long long growth);

/* Count w's usage again into workspaces_usage() (strict: one fstatfs). */
void workspace_recount(struct workspace *w);
/* The host side changed w (a files/ write, create, unlink, rename, ...):
 * its generation moves on and its usage is counted again. */
void workspace_touch(struct workspace *w);
/* Bumped by workspace_touch(): equal generations, no host-side change in
 * between. */
uint64_t workspace_generation(const struct workspace *w);
/* The bytes of every workspace as last counted (at each host-side change
 * and at the end of each run): the stats file's workspace_bytes, a counter
 * rather than a walk over the sessions. */
long long workspaces_usage(const struct workspaces *t);

/* Regular files with their size and modification time, for telling what a
 * run changed.  NULL when out of memory (the run then lists nothing). */
struct workspace_snapshot *workspace_snapshot(struct workspace *w);
void workspace_snapshot_free(struct workspace_snapshot *s);
/* The same as workspace_changes() with now already scanned (not taken
 * over). */
json_t *workspace_compare(struct workspace *w, const struct workspace_snapshot *before,
                          const struct workspace_snapshot *now, size_t limit, bool *truncated);

/* Scans off the loop.  A workspace whose tmpfs holds a few inodes is
 * scanned at once: 0 with *now (the caller's).  A bigger one (or any in
 * none mode) is scanned by the scanner thread: -EINPROGRESS, *out names
 * the job, and fn(data, snapshot) comes later on the loop (the snapshot is
 * fn's to keep or free; NULL when out of memory), unless
 * workspace_scan_cancel(*out) was called first.  -errno: no scan.  The
 * scan is bounded in entries, depth and time (the snapshot is then marked,
 * and workspace_compare() says truncated). */
struct workspace_scan;
typedef void (*workspace_scan_fn)(void *data, struct workspace_snapshot *now);
int workspace_scan(struct workspace *w, workspace_scan_fn fn, void *data, struct workspace_snapshot **now,
                   struct workspace_scan **out);
/* fn will not be called (accepts NULL). */
void workspace_scan_cancel(struct workspace_scan *job);

/* The snapshot kept between runs: the after-scan of one run is the
 * before-scan of the next, as long as the host side changed nothing in
 * between (the generation, workspace_touch()).  keep takes s over (the
 * one kept before is freed); take hands it back when still current, else
 * NULL (and frees it). */
void workspace_keep_snapshot(struct workspace *w, struct workspace_snapshot *s);
struct workspace_snapshot *workspace_take_snapshot(struct workspace *w);

/* The relative paths of regular files that are new or changed since before
 * (at most limit, sorted; *truncated when there were more), as a JSON array,
 * each spelled as files/ shows it (names escaped as common/escape.h says, so
 * a name that is not UTF-8 is listed too).  Also recounts the usage in none
 * mode. */
json_t *workspace_changes(struct workspace *w, const struct workspace_snapshot *before, size_t limit,
                          bool *truncated);

/* openat2() beneath dirfd with every link refused: name must be one path
 * component (no '/', not ".."), or "." for dirfd itself.  Returns the fd or
 * -errno. */
int workspace_openat(int dirfd, const char *name, int flags, mode_t mode);
/* Valid name for one component of a workspace path. */
bool workspace_name_valid(const char *name);

/* Remove name below dirfd and everything in it, one component at a time
 * through workspace_openat(): never following a link. */
void workspace_remove_tree(int dirfd, const char *name);
