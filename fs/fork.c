/* sessions/N/fork (fs/fork.h). */
#include "fork.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "handle.h"
#include "parked.h"
#include "reply.h"
#include "sessions/session.h"

void fork_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct session *src = ref->session, *copy;
        struct fs_session *st;
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
        if (r == 0 && (r = fs_session_attach(fs, copy, &st)) < 0)
                session_close(copy);
        if (r < 0) {
                handle_free(h);
                fuse_reply_err(req, -r);
                return;
        }
        text_set(&h->text, session_name(copy), strlen(session_name(copy)));
        text_append(&h->text, "\n", 1);
        /* Answered by the copy's created event (fs/parked.c), as a clone
         * open is; an open the kernel then refuses closes the copy. */
        h->clone_sid = session_id(copy);
        parked_create(st, req, fi);
}
