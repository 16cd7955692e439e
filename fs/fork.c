/* sessions/N/fork (fs/fork.h). */
#include "fork.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handle.h"
#include "log.h"
#include "macros.h"
#include "options.h"
#include "parked.h"
#include "reply.h"
#include "sessions/session.h"

void fork_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct session *src = ref->session, *copy;
        struct handle *h;
        int r;

        if (!src) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        /* Like a read of output: O_NONBLOCK does not wait for the run. */
        if ((fi->flags & O_NONBLOCK) && (session_busy(src) || session_moving(src))) {
                fuse_reply_err(req, EAGAIN);
                return;
        }
        r = handle_open(fs, ref->ino, S_IFREG | 0444, fi, &h);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        r = sessions_fork(fs->sessions, src, &copy);
        /* Answered by the copy's created event, once its state came. */
        parked_open_new_session(req, fs, fi, h, copy, r, true);
}

/* ---- sessions/N/snapshot ------------------------------------------------------- */

/* A snapshot file, written while the open or the flush waits: far larger
 * than the workspace's quota plus what R holds is not a snapshot of ours. */
#define SNAPSHOT_WRITE_EXTRA (8LL << 30)

struct snap_wait {
        fuse_req_t req;
        struct fuse_file_info fi;
        struct handle *h;
        struct fs *fs;
};

/* The open of a snapshot for reading: answered once the file is made.
 * Valid replies: open, err. */
static void on_snapshot_ready(void *data, int err, const char *why) {
        struct snap_wait *w = data;

        (void)why; /* logged where it happened (sessions/snapshot.c) */
        if (err < 0) {
                handle_free(w->h);
                fuse_reply_err(w->req, err == -ENOENT ? ENOENT : err == -ENOMEM ? ENOMEM : EIO);
        } else {
                reply_open(w->req, w->fs, w->h, &w->fi, NULL);
        }
        free(w);
}

void snapshot_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct session *s = ref->session;
        struct snap_wait *w;
        struct handle *h;
        int acc = fi->flags & O_ACCMODE, r;

        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (acc == O_RDWR) {
                fuse_reply_err(req, EINVAL); /* one direction an open */
                return;
        }
        if (acc == O_RDONLY && (fi->flags & O_NONBLOCK) && (session_busy(s) || session_moving(s))) {
                fuse_reply_err(req, EAGAIN);
                return;
        }
        r = handle_open(fs, ref->ino, S_IFREG | 0644, fi, &h);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* The file lives in memory of the daemon's (not its heap): a
         * thread of the daemon's fills it from the worker's pipe (the
         * worker never gets it: sessions/state_copy.h), reads are
         * pread()s; never parsed here but for its container, on a write. */
        /* Sealable: once it is filled, the daemon seals it and checks its
         * header (sessions/snapshot.c, snapshot_finish). */
        h->state_fd = memfd_create("securerfs-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (h->state_fd < 0) {
                r = -errno;
                handle_free(h);
                fuse_reply_err(req, -r);
                return;
        }
        if (acc == O_WRONLY) {
                reply_open(req, fs, h, fi, NULL);
                return;
        }
        w = calloc(1, sizeof(*w));
        if (!w) {
                handle_free(h);
                fuse_reply_err(req, ENOMEM);
                return;
        }
        *w = (struct snap_wait){.req = req, .fi = *fi, .h = h, .fs = fs};
        r = session_snapshot_to(s, h->state_fd, on_snapshot_ready, w);
        if (r < 0) {
                free(w);
                handle_free(h);
                fuse_reply_err(req, -r);
        }
}

void snapshot_file_read(fuse_req_t req, struct handle *h, size_t size, off_t off) {
        char *buf;
        ssize_t n;

        if (h->state_fd < 0 || (h->flags & O_ACCMODE) != O_RDONLY) {
                fuse_reply_err(req, EBADF);
                return;
        }
        size = MIN(size, (size_t)1 << 20);
        buf = malloc(size ? size : 1);
        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        /* A memfd: a copy from memory, never a wait. */
        n = pread(h->state_fd, buf, size, off);
        if (n < 0)
                fuse_reply_err(req, errno);
        else
                fuse_reply_buf(req, buf, (size_t)n);
        free(buf);
}

void snapshot_file_write(fuse_req_t req, struct fs *fs, struct handle *h, const char *data, size_t size, off_t off) {
        ssize_t n;

        if (h->state_fd < 0 || (h->flags & O_ACCMODE) != O_WRONLY) {
                fuse_reply_err(req, EBADF);
                return;
        }
        if (off < 0 || (long long)off + (long long)size > fs->opt->files_max_bytes + SNAPSHOT_WRITE_EXTRA) {
                fuse_reply_err(req, EFBIG);
                return;
        }
        n = pwrite(h->state_fd, data, size, off);
        if (n < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        h->dirty = true;
        fuse_reply_write(req, (size_t)n);
}

/* Valid replies: err.  A failure is logged where it happened
 * (sessions/snapshot.c). */
static void on_restored(void *data, int err, const char *why) {
        struct snap_wait *w = data;

        (void)why;
        fuse_reply_err(w->req, -err);
        free(w);
}

void snapshot_file_flush(fuse_req_t req, struct session *s, struct handle *h) {
        struct snap_wait *w;
        struct stat st;
        char why[512] = "";
        int r;

        if (!h->dirty) {
                fuse_reply_err(req, 0);
                return;
        }
        h->dirty = false;
        if (fstat(h->state_fd, &st) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        w = calloc(1, sizeof(*w));
        if (!w) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        w->req = req;
        /* close(2) waits for this: its errno says whether the session took
         * the snapshot (EINVAL, ENOSPC, EBUSY: nothing changed). */
        r = session_restore_from(s, h->state_fd, st.st_size, on_restored, w, why, sizeof(why));
        if (r < 0) {
                log_info("session %s: snapshot refused: %s", session_name(s), why);
                free(w);
                fuse_reply_err(req, -r);
        }
}
