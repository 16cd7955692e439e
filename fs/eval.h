/* sessions/N/eval: a run in two requests (DESIGN §1).
 *
 * A transaction file: a program opens it read-write, writes code (one
 * write or several), then reads the same descriptor; the first read after
 * writes starts the run and is answered, when the run ends, with that
 * run's result.json.  A write at offset 0, or any write after a read,
 * starts the next program on the same descriptor, so a client that keeps
 * it open pays two FUSE requests per run (WRITE, READ) instead of input's
 * six (OPEN, WRITE, FLUSH, RELEASE of input; OPEN, READ of output).
 *
 * Offsets are relative: a program's bytes are placed from the offset of its
 * first write, and its result is read from the offset of the first read
 * after it, so that both pwrite/pread at 0 and plain write/read on the file
 * position work without an lseek.
 *
 * The rules are input's: one run at a time (a program whose write comes
 * while a run is under way gets EBUSY, and so does the read after it; a
 * program whose read comes while another's run is under way gets EBUSY and
 * stays written: the read can be retried),
 * EFBIG past max_code_bytes (the read after it gets EFBIG, nothing runs),
 * code that is not UTF-8 gets an error result and runs nothing, O_NONBLOCK
 * reads get EAGAIN while the run is under way, and a FUSE INTERRUPT of a
 * waiting read gets EINTR (the run goes on; a retried read waits for it
 * again).  The run is an ordinary run: output, error, result.json and
 * value.json show it, and its seq follows the session's.
 *
 * Process context: the daemon's event loop. */
#pragma once

#include "fs_private.h"
#include "inode.h"

struct handle;
struct result;

/* Valid replies: write, err. */
void eval_write(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, const char *data,
                size_t size, off_t off);
/* Valid replies: buf (now, or when the run ends), err (now, or EINTR or
 * ENOENT later). */
void eval_read(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, size_t size, off_t off);
/* Readable when this handle's run is not under way, writable when no run
 * is; a poll handle is kept while either waits.  Valid replies: poll. */
void eval_poll(fuse_req_t req, const struct inode_ref *ref, struct handle *h, struct fuse_pollhandle *ph);
/* The run h started has ended with res (from the run-ended event, before
 * the parked reads are answered): h keeps res for its reads. */
void eval_run_ended(struct handle *h, struct result *res);
