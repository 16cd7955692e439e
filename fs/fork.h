/* sessions/N/fork: each open makes a copy of session N (sessions/session.h,
 * sessions_fork) and a read of the handle gives the copy's name, as an
 * open of clone does for a new session.  The open waits until the copy is
 * made: after N's run under way, if any (O_NONBLOCK: EAGAIN then). */
#pragma once

#include "fs_private.h"
#include "inode.h"

/* Valid replies: open (now, or when the copy is made), err. */
void fork_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi);

/* sessions/N/snapshot (rw), one direction an open (O_RDWR: EINVAL).  For
 * reading: the open waits until N's snapshot file is made in a memfd of the
 * handle's (after N's run under way; O_NONBLOCK: EAGAIN then), reads give
 * it.  For writing: the bytes go to the handle's memfd (EFBIG far past
 * files_max_bytes), and the FLUSH of close(2) restores them into N and
 * waits for it: EINVAL (not a valid snapshot, or R could not read its
 * state), ENOSPC (its files are over files_max_bytes), EBUSY (N runs), EIO;
 * a refused write changes nothing in N.  Valid replies: open, err; buf,
 * err; write, err; err. */
struct handle;
struct session;
void snapshot_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi);
void snapshot_file_read(fuse_req_t req, struct handle *h, size_t size, off_t off);
void snapshot_file_write(fuse_req_t req, struct fs *fs, struct handle *h, const char *data, size_t size, off_t off);
void snapshot_file_flush(fuse_req_t req, struct session *s, struct handle *h);
