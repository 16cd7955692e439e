/* The root of the tree and what stands in it directly (DESIGN §1): README,
 * clone (Plan 9's clone file: each open makes a session), config (the
 * effective defaults), stats (the counters), and sessions/, whose entries
 * are the sessions (mkdir makes one, rmdir closes one).  tools/ is
 * fs/tools_dir.h's. */
#pragma once

#include "fs_private.h"
#include "inode.h"
#include "reply.h"

struct handle;

/* A name in / : 0 with *out, or -ENOENT. */
int root_lookup(const char *name, fuse_ino_t *out);
/* The entries of / from offset off (1 and 2 are . and ..). */
void root_list(struct dirbuf *b, off_t off);
/* README, clone, config or stats: see node_attr(). */
void root_file_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout);
/* Read-only opens; one of clone makes a session first, and is answered
 * when its first worker is ready.  Valid replies: open, err (now, or from
 * the created event). */
void root_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi);
/* README, config and stats are generated afresh at offset 0; clone reads
 * the name of the session its open made.  Valid replies: buf. */
void root_file_read(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, size_t size,
                    off_t off);

/* A session's directory by name: 0 with *out, -ENOENT, -ENOMEM. */
int sessions_dir_lookup(struct fs *fs, const char *name, fuse_ino_t *out);
/* The sessions from offset off: an entry's offset is its session id + 2
 * (after . and ..), so that a session closed between two readdir calls
 * does not shift the others. */
void sessions_dir_list(struct fs *fs, struct dirbuf *b, off_t off);
/* mkdir sessions/NAME: a new session, answered when its first worker is
 * ready.  Valid replies: entry, err (now, or from the created event). */
void sessions_dir_mkdir(fuse_req_t req, struct fs *fs, const char *name);
/* rmdir sessions/NAME: the session closes, also while it runs.  0 or
 * -ENOENT. */
int sessions_dir_rmdir(struct fs *fs, const char *name);
