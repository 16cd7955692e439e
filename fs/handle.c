/* Open files of the daemon's own nodes (fs/handle.h). */
#include "handle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inode.h"
#include "macros.h"
#include "parked.h"
#include "session_dir.h"
#include "sessions/session.h"
#include "tools_dir.h"

int handle_check_access(int flags, mode_t mode) {
        int acc = flags & O_ACCMODE;

        if ((acc != O_RDONLY && !(mode & 0200)) || (acc != O_WRONLY && !(mode & 0400)))
                return -EACCES;
        return 0;
}

int handle_open(struct fs *fs, fuse_ino_t ino, mode_t mode, struct fuse_file_info *fi, struct handle **out) {
        struct handle *h;
        int r = handle_check_access(fi->flags, mode);

        if (r < 0)
                return r;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->ino = ino;
        h->flags = fi->flags;
        h->state_fd = -1;
        list_init(&h->poll_link);
        list_append(&fs->open_handles, &h->open_link);
        fi->fh = (uint64_t)(uintptr_t)h;
        fi->direct_io = 1;
        fi->keep_cache = 0;
        fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
        *out = h;
        return 0;
}

void handle_free(struct handle *h) {
        if (!h)
                return;
        list_unlink(&h->open_link);
        pollers_remove(h);
        result_unref(h->snap);
        text_free(&h->text);
        text_free(&h->buf);
        if (h->state_fd >= 0)
                close(h->state_fd);
        if (h->ph)
                fuse_pollhandle_destroy(h->ph);
        free(h);
}

void handle_close(struct fs *fs, struct handle *h) {
        struct inode_ref ref;

        inode_decode(fs, h->ino, &ref);
        if (ref.kind == INODE_TOOL_FILE)
                tool_file_closed(&ref, h);
        else if (ref.kind == INODE_SESSION_FILE)
                session_file_closed(&ref, h);
        handle_free(h);
}

void reply_open(fuse_req_t req, struct fs *fs, struct handle *h, struct fuse_file_info *fi,
                const struct fuse_entry_param *ep) {
        int r = ep ? fuse_reply_create(req, ep, fi) : fuse_reply_open(req, fi);
        struct fs_session *st;

        if (r == 0)
                return;
        st = h->clone_sid ? fs_session_find(fs, h->clone_sid) : NULL;
        handle_close(fs, h);
        if (st)
                session_close(st->session);
}

int handle_write_at(struct handle *h, const char *data, size_t size, off_t off, size_t max) {
        static const char zeros[4096];
        struct text *t = &h->buf;
        size_t overlap;

        if (off < 0 || (size_t)off + size > max)
                return -EFBIG;
        while (t->len < (size_t)off)
                if (text_append(t, zeros, MIN((size_t)off - t->len, sizeof(zeros))) < 0)
                        return -ENOMEM;
        overlap = MIN(size, t->len - (size_t)off);
        if (overlap)
                memcpy(t->data + off, data, overlap);
        return text_append(t, data + overlap, size - overlap);
}
