/* The replies the facilities of fs/ share: attributes of any node (each
 * facility gives its own), entries, a slice of a text, directory
 * listings. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "fs_private.h"
#include "inode.h"
#include "text.h"

/* Attributes of one of the daemon's own nodes: the daemon's uid and gid,
 * the mount's time, size bytes. */
void fill_attr(struct fs *fs, fuse_ino_t ino, mode_t mode, size_t size, struct stat *st);
/* The attributes of what ref names and how long the kernel may keep them:
 * 0, or -ENOENT.  ref is one inode_decode() found, and not a node below
 * files/ (fs/files.h answers for those). */
int node_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout);
/* Reply with ino's entry: names in the tree change through this process
 * only, so an entry is kept 1 s, except a tool file's (one created and
 * never accepted vanishes on its last close).  Valid replies: entry, err. */
void reply_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino);
/* Reply with what t holds from off, at most size bytes.  Valid replies:
 * buf. */
void reply_text(fuse_req_t req, const struct text *t, size_t size, off_t off);

/* A readdir reply being filled. */
struct dirbuf {
        fuse_req_t req;
        char *p;
        size_t size, len;
};
/* Add one entry whose next offset is next; false when the buffer is full. */
bool dirbuf_add(struct dirbuf *b, const char *name, fuse_ino_t ino, mode_t mode, off_t next);
