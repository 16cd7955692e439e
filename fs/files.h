/* sessions/N/files/: each session's workspace (sessions/workspace.h) through
 * FUSE, as a plain directory tree the user reads and writes.
 *
 * The workspace is also the sandbox's /work, so everything below it may have
 * been made by hostile code: symbolic links to /etc/passwd, hard links, link
 * loops, names swapped between a check and a use.  The rules (docs/security.md,
 * "The workspace from the host side"):
 *   - no node holds a descriptor of its own (a file's would keep a deleted
 *     file's space, a directory's made a host-side walk exhaust the
 *     daemon's descriptors): every node is found again at each use as its
 *     name in its parent's, its inode number checked, from the nearest
 *     ancestor in a bounded cache of directory descriptors, one component
 *     at a time from the workspace's root with
 *     openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 *     RESOLVE_NO_XDEV); operations by name work on a parent directory's
 *     descriptor and one component (openat2, mkdirat, unlinkat, renameat2:
 *     none of them follows a final link);
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
 * Inode numbers (fs/inode.h): files/ itself is a session node; below it
 * INODE_FILES_BIT | a never-reused serial, one node per host inode while the
 * kernel holds a lookup on it (lookup counts and forget are honoured, so a
 * node and what it holds live exactly as long as the kernel's reference;
 * fs/files_node.c).  The functions take inodes as inode_decode() gave them
 * (kind INODE_FILES).
 *
 * Reads and writes stream through the handle's descriptor (pread/pwrite; no
 * file is held in memory).  The size cap is the kernel's (strict: the tmpfs
 * answers ENOSPC) or checked here before each write (none mode).
 *
 * The files: files_node.c (nodes, lookup counts, resolving an inode or a
 * shown name to a descriptor), files_link.c (the rule for links, readlink,
 * symlink, link), files.c (the other operations).
 *
 * Process context: the daemon's event loop.  Every function that takes a
 * request replies to it exactly once. */
#pragma once

#include <stdint.h>
#include <sys/stat.h>

#include "fs_private.h"
#include "inode.h"

struct files;

/* The table of nodes of every session's files/.  NULL when out of memory. */
struct files *files_new(struct fs *fs);
/* Accepts NULL. */
void files_free(struct files *f);
/* Session sid is closing: forget its nodes (open handles keep working on
 * their own descriptors until released). */
void files_session_closed(struct files *f, uint64_t sid);
/* The kernel dropped nlookup lookups of ino (no reply: forget has none). */
void files_forget(struct files *f, fuse_ino_t ino, uint64_t nlookup);

/* Valid replies: entry, err. */
void files_lookup(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name);
/* Valid replies: attr, err. */
void files_getattr(struct files *f, fuse_req_t req, const struct inode_ref *ref);
/* chmod (permission bits only), truncate, times; never owners.  Valid
 * replies: attr, err. */
void files_setattr(struct files *f, fuse_req_t req, const struct inode_ref *ref, struct stat *attr, int to_set,
                   struct fuse_file_info *fi);
/* A link's text when it is safe to follow (ELOOP otherwise).  Valid
 * replies: readlink, err. */
void files_readlink(struct files *f, fuse_req_t req, const struct inode_ref *ref);
/* A symbolic link made from the host side, its target held to readlink's
 * rule (EPERM otherwise).  Valid replies: entry, err. */
void files_symlink(struct files *f, fuse_req_t req, const char *target, const struct inode_ref *parent,
                   const char *name);
/* A hard link to a non-directory (EPERM); both in the same session's
 * files/ (else EXDEV).  Valid replies: entry, err. */
void files_link(struct files *f, fuse_req_t req, const struct inode_ref *ref, const struct inode_ref *newparent,
                const char *newname);
/* Valid replies: entry, err. */
void files_mkdir(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name, mode_t mode);
/* Valid replies: err. */
void files_unlink(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name);
/* Valid replies: err. */
void files_rmdir(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name);
/* Both parents in the same session's files/ (else EXDEV).  Valid replies:
 * err. */
void files_rename(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name,
                  const struct inode_ref *newparent, const char *newname, unsigned int flags);
/* Regular files only (EPERM).  Valid replies: create, err. */
void files_create(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi);
/* Regular files only: EISDIR, ELOOP for a link (never followed), EACCES
 * for the rest.  Valid replies: open, err. */
void files_open(struct files *f, fuse_req_t req, const struct inode_ref *ref, struct fuse_file_info *fi);
/* Valid replies: data, err. */
void files_read(struct files *f, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi);
/* Valid replies: write, err. */
void files_write(struct files *f, fuse_req_t req, const char *data, size_t size, off_t off,
                 struct fuse_file_info *fi);
/* Valid replies: err. */
void files_release(struct files *f, fuse_req_t req, struct fuse_file_info *fi);
/* Valid replies: open, err. */
void files_opendir(struct files *f, fuse_req_t req, const struct inode_ref *ref, struct fuse_file_info *fi);
/* Offsets are the host directory's own (d_off).  Valid replies: buf, err. */
void files_readdir(struct files *f, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi);
/* Valid replies: err. */
void files_releasedir(struct files *f, fuse_req_t req, struct fuse_file_info *fi);
