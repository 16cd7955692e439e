/* Inside fs/files*.c only: the nodes of files/ and how an inode or a name
 * becomes a descriptor (fs/files.h has the rules every function follows). */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "files.h"

struct session;

/* A host inode below a workspace that the kernel holds lookups on.
 *
 * A directory keeps an O_PATH descriptor of itself.  Anything else keeps
 * only where it was last looked up (its parent's inode and its name) and is
 * found again from there, its inode number checked, at each use: a
 * descriptor would pin the inode, so a file deleted by either side would go
 * on taking space from the quota for as long as the kernel remembers the
 * node.  The kernel revalidates every path (entry timeout 0), so the name
 * is fresh whenever a path led to the node. */
struct fnode {
        uint64_t ino;   /* INODE_FILES_BIT | serial */
        uint64_t sid;
        dev_t dev;
        ino_t host_ino;
        int fd;          /* directories: O_PATH|O_NOFOLLOW on the host inode; else -1 */
        uint64_t parent; /* others: the parent's inode number (ours; files/ itself is a session node) */
        char *name;      /* others: the name in it */
        uint64_t nlookup;
        struct fnode *ino_next, *host_next;
};

#define FILES_BUCKET_BITS 12

struct files {
        struct fs *fs;
        uint64_t next_serial;
        struct fnode *by_ino[1u << FILES_BUCKET_BITS];
        struct fnode *by_host[1u << FILES_BUCKET_BITS];
};

/* The live session of number sid, or NULL. */
struct session *files_session(struct files *f, uint64_t sid);

/* The node of host inode (dev, host_ino) of session sid, or NULL. */
struct fnode *node_by_host(struct files *f, uint64_t sid, dev_t dev, ino_t host_ino);
/* The node of the inode fd refers to, found as name in directory parent
 * (fd is taken: kept in a new directory node or closed), its lookup count
 * raised by one.  NULL when out of memory. */
struct fnode *node_get(struct files *f, uint64_t sid, int fd, const struct stat *st, fuse_ino_t parent,
                       const char *name);
/* Drop one lookup (the entry reply that gave it was refused). */
void node_put(struct files *f, struct fnode *n);

/* The session and an O_PATH descriptor of ref's host inode: 0 with *s and
 * *fd (the caller's to close) and *node (NULL for files/ itself); or
 * -errno (-ESTALE when the name a node was found by now holds something
 * else: the kernel looks the path up again). */
int resolve(struct files *f, const struct inode_ref *ref, struct session **s, int *fd, struct fnode **node);
/* The workspace's name for a name as files/ shows it (common/escape.h):
 * 0 with raw (NAME_MAX + 1 bytes), -EINVAL when shown is not how any name
 * is shown (a host-side name with a control character, or one that would be
 * ambiguous, such as "\x41" for "A") or is no valid component, or
 * -ENAMETOOLONG. */
int name_from_shown(const char *shown, char *raw);
/* resolve() of a directory, then name_from_shown() of a name in it: 0 with
 * *s, *fd and raw, or -errno. */
int resolve_name(struct files *f, const struct inode_ref *parent, const char *shown, struct session **s, int *fd,
                 char *raw);

/* The path that reopens fd's own inode.  Only for inodes known not to be
 * symbolic links: the magic link then lands on the inode itself and nothing
 * further is followed. */
void proc_path(int fd, char *buf, size_t size);
/* fstat of fd's own inode, a link included: 0 or -errno. */
int stat_fd(int fd, struct stat *st);
/* The attributes the kernel sees for host inode host as ino. */
void attr_of(struct files *f, fuse_ino_t ino, const struct stat *host, struct stat *st);
/* Take fd (an O_PATH descriptor of name in parent, beneath s's workspace)
 * into a node and reply with its entry.  Valid replies: entry, err. */
void reply_new_entry(struct files *f, fuse_req_t req, struct session *s, int fd, fuse_ino_t parent,
                     const char *name);
/* The same for name in the directory pfd (parent's descriptor), opened
 * O_PATH|O_NOFOLLOW: a symbolic link as itself.  Valid replies: entry,
 * err. */
void reply_entry_at(struct files *f, fuse_req_t req, struct session *s, int pfd, fuse_ino_t parent,
                    const char *name);
