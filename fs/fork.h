/* sessions/N/fork: each open makes a copy of session N (sessions/session.h,
 * sessions_fork) and a read of the handle gives the copy's name, as an
 * open of clone does for a new session.  The open waits until the copy is
 * made: after N's run under way, if any (O_NONBLOCK: EAGAIN then). */
#pragma once

#include "fs_private.h"
#include "inode.h"

/* Valid replies: open (now, or when the copy is made), err. */
void fork_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi);
