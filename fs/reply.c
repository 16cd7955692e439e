/* The replies the facilities of fs/ share (fs/reply.h). */
#include "reply.h"

#include <errno.h>

#include "macros.h"
#include "root.h"
#include "session_dir.h"
#include "tools_dir.h"

void fill_attr(struct fs *fs, fuse_ino_t ino, mode_t mode, size_t size, struct stat *st) {
        *st = (struct stat){
                .st_ino = ino,
                .st_mode = mode,
                .st_nlink = S_ISDIR(mode) ? 2 : 1,
                .st_uid = fs->uid,
                .st_gid = fs->gid,
                .st_size = (off_t)size,
                .st_blksize = 4096,
                .st_blocks = (blkcnt_t)((size + 511) / 512),
                .st_atim = fs->mount_time,
                .st_mtim = fs->mount_time,
                .st_ctim = fs->mount_time,
        };
}

int node_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout) {
        switch (ref->kind) {
        case INODE_ROOT_DIR:
        case INODE_SESSIONS_DIR:
        case INODE_SESSION_DIR:
        case INODE_TOOLS_DIR:
        case INODE_FILES: /* files/ itself, as sessions/N/ lists it */
                *attr_timeout = 1.0;
                fill_attr(fs, ref->ino, S_IFDIR | 0755, 0, st);
                return 0;
        case INODE_ROOT_FILE: root_file_attr(fs, ref, st, attr_timeout); return 0;
        case INODE_SESSION_FILE: session_file_attr(fs, ref, st, attr_timeout); return 0;
        case INODE_TOOLS_ERRORS:
        case INODE_TOOL_FILE: tool_file_attr(fs, ref, st, attr_timeout); return 0;
        case INODE_NONE: break;
        }
        return -ENOENT;
}

void reply_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino) {
        struct fuse_entry_param e = {.ino = ino};
        struct inode_ref ref;
        int r = inode_decode(fs, ino, &ref);

        if (r == 0)
                r = node_attr(fs, &ref, &e.attr, &e.attr_timeout);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        e.entry_timeout = ref.kind == INODE_TOOL_FILE ? 0 : 1.0;
        fuse_reply_entry(req, &e);
}

void reply_text(fuse_req_t req, const struct text *t, size_t size, off_t off) {
        if ((size_t)off >= t->len)
                fuse_reply_buf(req, NULL, 0);
        else
                fuse_reply_buf(req, t->data + off, MIN(size, t->len - (size_t)off));
}

bool dirbuf_add(struct dirbuf *b, const char *name, fuse_ino_t ino, mode_t mode, off_t next) {
        struct stat st = {.st_ino = ino, .st_mode = mode};
        size_t n = fuse_add_direntry(b->req, b->p + b->len, b->size - b->len, name, &st, next);

        if (n > b->size - b->len)
                return false;
        b->len += n;
        return true;
}
