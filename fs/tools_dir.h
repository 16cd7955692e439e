/* tools/ and sessions/N/tools/: the NAME.json files of a tool scope
 * (sessions/tools.h) and its read-only .errors.
 *
 * A definition written through a handle is checked and put in force on
 * FLUSH (close(2) returns its EINVAL, and the reason is in .errors and the
 * log); reads show the definition in force.  An O_TRUNC open or a
 * truncation alone changes nothing: shells open, dup and close the
 * descriptor before writing, which flushes an empty handle, and a rejected
 * write must change nothing.  Names change only within one directory
 * (EXDEV otherwise: mv copies). */
#pragma once

#include "fs_private.h"
#include "inode.h"
#include "reply.h"

struct handle;

/* A name in a tools/ directory: 0 with *out, or -ENOENT. */
int tools_dir_lookup(const struct inode_ref *dir, const char *name, fuse_ino_t *out);
/* Its entries from offset off: 3 is .errors, an entry's is its number + 3
 * (numbers only grow, so an entry removed between two calls shifts
 * nothing). */
void tools_dir_list(const struct inode_ref *dir, struct dirbuf *b, off_t off);
/* A tool file or .errors: see node_attr().  Never cached: rewritten
 * through other handles. */
void tool_file_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout);

/* A new NAME.json (an existing one is opened, unless O_EXCL): the name is
 * checked now (EINVAL), the definition on flush.  Regular files only
 * (EPERM); .errors exists.  Valid replies: create, err. */
void tools_dir_create(fuse_req_t req, struct fs *fs, const struct inode_ref *dir, const char *name, mode_t mode,
                      struct fuse_file_info *fi);
/* unlink: 0, -ENOENT, -EPERM (.errors). */
int tools_dir_unlink(const struct inode_ref *dir, const char *name);
/* rename within one directory (from or to is one, and neither is gone):
 * 0, -EXDEV (into or out of another directory), -EINVAL (.errors,
 * RENAME_EXCHANGE, a bad new name), -ENOENT, -EEXIST (RENAME_NOREPLACE). */
int tools_dir_rename(const struct inode_ref *from, const char *name, const struct inode_ref *to,
                     const char *newname, unsigned flags);

/* A tool file (not one unlinked: ENOENT) or .errors (read only).  Writes
 * without O_TRUNC start from the definition in force, as on a disk.  Valid
 * replies: open, err. */
void tool_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi);
/* A tool file's text in force, or .errors, taken at offset 0 (ENOENT when
 * its session is gone).  Valid replies: buf, err. */
void tool_file_read(fuse_req_t req, const struct inode_ref *ref, struct handle *h, size_t size, off_t off);
/* Into the handle's buffer, at most TOOL_FILE_MAX (EFBIG).  Valid replies:
 * write, err. */
void tool_file_write(fuse_req_t req, const struct inode_ref *ref, struct handle *h, const char *data, size_t size,
                     off_t off);
/* The definition written is checked and applied here (EINVAL: refused, the
 * previous one stays).  Valid replies: err. */
void tool_file_flush(fuse_req_t req, const struct inode_ref *ref, struct handle *h);
/* Size changes through a writer's handle change its buffer (applied on
 * flush, like a write); without one only a no-op is accepted.  Times are
 * ignored; modes and owners are refused by the caller.  Valid replies:
 * attr, err. */
void tool_file_setattr(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct stat *attr, int to_set,
                       struct fuse_file_info *fi);
/* h is closing: it lets go of its entry. */
void tool_file_closed(const struct inode_ref *ref, struct handle *h);
