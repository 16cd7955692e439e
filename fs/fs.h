/* The FUSE layer: the tree of DESIGN §1 over the low-level libfuse API,
 * driven by the daemon's single event loop (docs/architecture.md maps the
 * files of fs/).
 *
 * Every request ends in exactly one fuse_reply_* — now, or later for a
 * parked request (a read of a result file while a run is under way, a mkdir
 * or clone open waiting for its first worker: fs/parked.h).  Parked
 * requests are answered from the sessions layer's events, or with EINTR
 * when the kernel interrupts them (Ctrl-C on a blocked cat). */
#pragma once

struct loop;
struct options;
struct fs;

struct fuse_args;

/* Create the filesystem and mount it on mountpoint.  args are the libfuse
 * arguments left after option parsing.  0 or -errno (libfuse has printed
 * why). */
int fs_new(struct loop *l, const struct options *o, struct fuse_args *args, const char *mountpoint,
           struct fs **out);
/* After the daemon went to the background: create the sessions table (which
 * starts the zygote and the pool), open the audit log, and serve the FUSE
 * channel from the loop.  0 or -errno. */
int fs_start(struct fs *fs);
/* Unmount (idempotent); the sessions stay until fs_free(). */
void fs_unmount(struct fs *fs);
/* -o state_dir's clean stop (after fs_unmount): start writing every
 * started session; fn(data) when all are written.  Returns how many were
 * started (0: nothing to wait for). */
unsigned fs_checkpoint_all(struct fs *fs, void (*fn)(void *data), void *data);
/* Unmount, end every worker and free everything.  Accepts NULL and an fs
 * whose fs_start() failed. */
void fs_free(struct fs *fs);
