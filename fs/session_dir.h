/* sessions/N/: one session's directory and its files (DESIGN §1): input
 * (the run starts on its FLUSH), eval (a run in two requests: fs/eval.h),
 * the result files output, error,
 * result.json and value.json (reads wait while a run is under way: parked,
 * fs/parked.h), console (growing while it runs), status, ctl, timeout,
 * limits, log.  tools/ is fs/tools_dir.h's, files/ fs/files.h's.
 *
 * Every function here is given a decoded reference (fs/inode.h) to one of
 * these nodes; ref->session is NULL when the session is gone. */
#pragma once

#include "fs_private.h"
#include "inode.h"
#include "reply.h"

struct handle;

/* A name in sessions/N/: 0 with *out, or -ENOENT. */
int session_dir_lookup(const struct inode_ref *dir, const char *name, fuse_ino_t *out);
/* The entries of sessions/N/ from offset off (1 and 2 are . and ..). */
void session_dir_list(const struct inode_ref *dir, struct dirbuf *b, off_t off);
/* One of its files: see node_attr().  The size is what a read at offset 0
 * would give now (0 for a result file while a run is under way). */
void session_file_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout);

/* Opens as the file's mode allows; input for writing only while no run is
 * under way and nobody else has it open for writing (else EBUSY).  Valid
 * replies: open, err. */
void session_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi);
/* A result file read while a run is under way is parked (EAGAIN with
 * O_NONBLOCK) unless it continues at an offset > 0 the result the handle
 * already read; console reads the run as it grows; the others are
 * generated afresh at offset 0.  Valid replies: buf, err (now, or when the
 * run ends). */
void session_file_read(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, size_t size,
                       off_t off);
/* input: the code, kept in the handle (EFBIG past max_code_bytes); ctl: one
 * command a write; timeout and limits: applied as soon as what the handle
 * wrote parses (EINVAL changes nothing).  Valid replies: write, err. */
void session_file_write(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h,
                        const char *data, size_t size, off_t off);
/* The run starts here, when the writer closes input: close(2) waits for
 * FLUSH (but not for RELEASE), so a read right after close() already sees
 * the run under way.  input over max_code_bytes: EFBIG (nothing runs);
 * limits left incomplete: EINVAL.  Valid replies: err. */
void session_file_flush(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h);
/* Result files are readable, and input writable, when no run is under way
 * (a poll handle is kept and notified when it ends); the others always.
 * Valid replies: poll. */
void session_file_poll(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h,
                       struct fuse_pollhandle *ph);
/* h is closing: it stops being the input writer. */
void session_file_closed(const struct inode_ref *ref, struct handle *h);
