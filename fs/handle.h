/* Open files of the daemon's own nodes: root files, session files, tool
 * files and .errors (sessions/N/files/ has its own, fs/files.h).
 *
 * A handle records only the inode it is open on: every request on it is
 * routed by inode_decode() of that number, like any other, and a handle
 * outlives what it names (a closed session, a removed tool file) until its
 * RELEASE.  Every handle is on fs->open_handles until then, so that those
 * whose RELEASE never comes (an unmount overtook it) are freed with fs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fs_private.h"
#include "text.h"

struct result;

struct handle {
        fuse_ino_t ino;         /* what it is open on */
        int flags;              /* the open's flags */
        struct result *snap;    /* result files: the result reads at offsets > 0 continue */
        struct text text;       /* generated files: the content read at offset 0 */
        struct text buf;        /* writable files: what was written */
        bool dirty;             /* input, tool files: written since the last flush */
        bool failed;            /* input: over max_code_bytes */
        bool applied;           /* limits: the buffer took effect */
        bool eval_reading;      /* eval: no program written since the last read (fs/eval.h) */
        bool eval_pending;      /* eval: the run this handle started is under way */
        bool eval_refused;      /* eval: the program's write got EBUSY; so will its read */
        off_t eval_base;        /* eval: where the program's first write, or its result's first read, was */
        uint64_t clone_sid;     /* clone: the session this open made, until the open is answered */
        int state_fd;           /* snapshot: the file's memfd (fs/fork.h); -1 otherwise */
        struct fuse_pollhandle *ph; /* a poll waiting for the run to end (fs/parked.h) */
        struct list poll_link;  /* on its session's pollers while ph waits */
        struct list open_link;  /* on fs->open_handles */
};

/* 0 when an open with flags may have a node of mode (its owner's bits), or
 * -EACCES. */
int handle_check_access(int flags, mode_t mode);
/* A new handle on ino, a node of mode, for the open fi describes, which it
 * fills in (fh; direct_io: the content changes under the kernel's feet, so
 * no page cache; noflush for a read-only open, which needs no FLUSH round
 * trip on close): 0 with *out, -EACCES (see handle_check_access()) or
 * -ENOMEM. */
int handle_open(struct fs *fs, fuse_ino_t ino, mode_t mode, struct fuse_file_info *fi, struct handle **out);
/* Free h and what it holds, without what closing it undoes (for a handle
 * no open was answered with).  Accepts NULL. */
void handle_free(struct handle *h);
/* What a RELEASE does to h, without the reply: the facility that owns its
 * node lets go of what h holds there (the input writer, a tool entry), then
 * h is freed.  Also for an open whose reply the kernel refused, for which
 * no RELEASE will ever come. */
void handle_close(struct fs *fs, struct handle *h);
/* Reply to an open with h; if the kernel refuses the reply (the opener was
 * interrupted meanwhile), close h now, and the session a clone open made
 * with it too (nobody knows its name).  Valid replies: open, or create when
 * ep is given. */
void reply_open(fuse_req_t req, struct fs *fs, struct handle *h, struct fuse_file_info *fi,
                const struct fuse_entry_param *ep);

/* Place data at off in h's write buffer, refusing growth past max:
 * 0, -EFBIG or -ENOMEM.  A hole before off reads as zeros, as in a file. */
int handle_write_at(struct handle *h, const char *data, size_t size, off_t off, size_t max);
