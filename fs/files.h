/* sessions/N/files/: each session's workspace (sessions/workspace.h) through
 * FUSE, as a plain directory tree the user reads and writes.
 *
 * The workspace is also the sandbox's /work, so everything below it may have
 * been made by hostile code: symbolic links to /etc/passwd, hard links, link
 * loops, names swapped between a check and a use.  The rules (docs/security.md,
 * "The workspace from the host side"):
 *   - every node the kernel knows holds an O_PATH|O_NOFOLLOW descriptor of
 *     its host inode, reached one component at a time from the workspace's
 *     root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 *     RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV); operations by name work on a
 *     parent directory's descriptor and one component (openat2, mkdirat,
 *     unlinkat, renameat2: none of them follows a final link);
 *   - symbolic links are shown as links and the daemon never follows one
 *     (opening one by inode fails with ELOOP); readlink gives a link's text
 *     only when it is relative with no ".." component and not only "."
 *     components, because the reader's own kernel follows what readlink
 *     returns: a link that could lead out of the mount (/etc/passwd,
 *     ../../x) or back to its own directory (".", a cycle) reads as ELOOP,
 *     so no path through it reaches any file of the host and no walk that
 *     follows links loops;
 *   - opening, chmod and truncation of a node go through its own descriptor
 *     (/proc/self/fd/N, which lands on that very inode), only for regular
 *     files and directories.
 *
 * What the host sees is data, never a lever: modes are reported without
 * set-id and sticky bits, and chmod, mkdir and create set rwx bits only.
 * Names cross as common/escape.h shows them: a name with a control
 * character, invalid UTF-8, a backslash or a leading '-' is listed escaped
 * (\xHH), every operation that takes a name takes the shown spelling back
 * exactly, and a host-side name that is the shown form of no name (a raw
 * control character, "\x41" for "A") is refused with EINVAL (ENOENT for a
 * lookup).  Link texts are shown component by component the same way.
 *
 * Inode numbers: FILES_INO_BIT | a never-reused serial, one per host inode
 * while the kernel holds a lookup on it (lookup counts and forget are
 * honoured, so a node and its descriptor live exactly as long as the
 * kernel's reference); the files/ directory itself is a session inode.
 *
 * Reads and writes stream through the handle's descriptor (pread/pwrite; no
 * file is held in memory).  The size cap is the kernel's (strict: the tmpfs
 * answers ENOSPC) or checked here before each write (none mode).
 *
 * Process context: the daemon's event loop.  Every function replies to req
 * exactly once. */
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>

struct files;
struct sessions;
struct session;

#define FILES_INO_BIT (1ULL << 61)

/* The table of nodes.  A session's files/ directory has inode number
 * id * stride + root_kind.  NULL when out of memory. */
struct files *files_new(struct sessions *t, uid_t uid, gid_t gid, uint64_t stride, uint64_t root_kind);
void files_free(struct files *f);

/* Is ino files/ or a node below it (so that the files_ functions handle it)? */
bool files_owns(struct files *f, fuse_ino_t ino);
/* The session is closing: forget its nodes (open handles keep working on
 * their own descriptors until released). */
void files_session_closed(struct files *f, uint64_t sid);

void files_lookup(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name);
void files_forget(struct files *f, fuse_ino_t ino, uint64_t nlookup);
void files_getattr(struct files *f, fuse_req_t req, fuse_ino_t ino);
void files_setattr(struct files *f, fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                   struct fuse_file_info *fi);
void files_readlink(struct files *f, fuse_req_t req, fuse_ino_t ino);
/* A symbolic link made from the host side, its target held to readlink's
 * rule (EPERM otherwise). */
void files_symlink(struct files *f, fuse_req_t req, const char *target, fuse_ino_t parent, const char *name);
/* A hard link to a non-directory; both in the same session's files/ (else
 * EXDEV). */
void files_link(struct files *f, fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void files_mkdir(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void files_unlink(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name);
void files_rmdir(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name);
/* Both parents in the same session's files/ (else EXDEV). */
void files_rename(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags);
void files_create(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi);
void files_open(struct files *f, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void files_read(struct files *f, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi);
void files_write(struct files *f, fuse_req_t req, const char *data, size_t size, off_t off,
                 struct fuse_file_info *fi);
void files_release(struct files *f, fuse_req_t req, struct fuse_file_info *fi);
void files_opendir(struct files *f, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void files_readdir(struct files *f, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info *fi);
void files_releasedir(struct files *f, fuse_req_t req, struct fuse_file_info *fi);
