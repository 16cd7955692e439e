/* The low-level FUSE operations: one table, and each handler routing its
 * request through inode_decode() (fs/inode.h) to the facility that owns
 * the node.  Requests on a directory or a name are answered ENOENT when
 * the directory is gone (except below files/, whose nodes files_node.c
 * resolves itself); requests on an open handle reach its facility by the
 * node's kind even then, so that a RELEASE always frees what it holds.
 * Nothing may be created, removed or linked but sessions, tool files and
 * what is in files/: EPERM elsewhere. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>

#include "files.h"
#include "fs_private.h"
#include "handle.h"
#include "inode.h"
#include "macros.h"
#include "reply.h"
#include "root.h"
#include "session_dir.h"
#include "tools_dir.h"

static struct handle *fi_handle(const struct fuse_file_info *fi) { return (struct handle *)(uintptr_t)fi->fh; }

/* Once, when the kernel connects: no request, so no reply. */
static void op_init(void *userdata, struct fuse_conn_info *conn) {
        /* O_TRUNC comes with OPEN instead of a separate SETATTR round trip. */
        if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
                conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
        conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

/* ---- names ------------------------------------------------------------------- */

/* Valid replies: entry, err. */
static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);
        struct inode_ref dir;
        fuse_ino_t ino = 0;
        int r = inode_decode(fs, parent, &dir);

        if (dir.kind == INODE_FILES) {
                files_lookup(fs->files, req, &dir, name);
                return;
        }
        if (r == 0) {
                switch (dir.kind) {
                case INODE_ROOT_DIR: r = root_lookup(name, &ino); break;
                case INODE_SESSIONS_DIR: r = sessions_dir_lookup(fs, name, &ino); break;
                case INODE_SESSION_DIR: r = session_dir_lookup(&dir, name, &ino); break;
                case INODE_TOOLS_DIR: r = tools_dir_lookup(&dir, name, &ino); break;
                default: r = -ENOENT; break;
                }
        }
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        reply_entry(req, fs, ino);
}

/* Only nodes below files/ count lookups (fs/inode.h). */
static void forget_one(struct fs *fs, fuse_ino_t ino, uint64_t nlookup) {
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        if (ref.kind == INODE_FILES)
                files_forget(fs->files, ino, nlookup);
}

/* Valid replies: none. */
static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
        forget_one(req_fs(req), ino, nlookup);
        fuse_reply_none(req);
}

/* Valid replies: none. */
static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
        for (size_t i = 0; i < count; i++)
                forget_one(req_fs(req), forgets[i].ino, forgets[i].nlookup);
        fuse_reply_none(req);
}

/* Valid replies: attr, err. */
static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;
        struct stat st;
        double timeout;
        int r = inode_decode(fs, ino, &ref);

        if (ref.kind == INODE_FILES) {
                files_getattr(fs->files, req, &ref);
                return;
        }
        if (r == 0)
                r = node_attr(fs, &ref, &st, &timeout);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fuse_reply_attr(req, &st, timeout);
}

/* Truncation of the writable files is accepted (their content lives in the
 * open handle), times are ignored so that touch works, modes and owners
 * are refused.  Valid replies: attr, err. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;
        struct stat st;
        double timeout;
        int r = inode_decode(fs, ino, &ref);

        if (ref.kind == INODE_FILES) {
                files_setattr(fs->files, req, &ref, attr, to_set, fi);
                return;
        }
        if (r == 0)
                r = node_attr(fs, &ref, &st, &timeout);
        if (r == 0 && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
                r = -EPERM;
        if (r == 0 && ref.kind == INODE_TOOL_FILE) {
                tool_file_setattr(req, fs, &ref, attr, to_set, fi);
                return;
        }
        if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE) && (!(st.st_mode & 0200) || S_ISDIR(st.st_mode)))
                r = -EACCES;
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fuse_reply_attr(req, &st, timeout);
}

/* Valid replies: readlink, err. */
static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        if (ref.kind == INODE_FILES)
                files_readlink(fs->files, req, &ref);
        else
                fuse_reply_err(req, EINVAL);
}

/* mknod makes nothing anywhere (files/ takes create for regular files).
 * Valid replies: err. */
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
        fuse_reply_err(req, EPERM);
}

/* Valid replies: entry, err. */
static void op_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);
        struct inode_ref dir;

        inode_decode(fs, parent, &dir);
        if (dir.kind == INODE_FILES)
                files_symlink(fs->files, req, target, &dir, name);
        else
                fuse_reply_err(req, EPERM);
}

/* Valid replies: entry, err. */
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
        struct fs *fs = req_fs(req);
        struct inode_ref from, to;
        bool in_from, in_to;

        inode_decode(fs, ino, &from);
        inode_decode(fs, newparent, &to);
        in_from = from.kind == INODE_FILES;
        in_to = to.kind == INODE_FILES;
        if (in_from && in_to)
                files_link(fs->files, req, &from, &to, newname);
        else
                fuse_reply_err(req, in_from || in_to ? EXDEV : EPERM);
}

/* Valid replies: entry, err (now, or when a new session's worker is
 * ready). */
static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
        struct fs *fs = req_fs(req);
        struct inode_ref dir;
        int r = inode_decode(fs, parent, &dir);

        if (dir.kind == INODE_FILES)
                files_mkdir(fs->files, req, &dir, name, mode);
        else if (dir.kind == INODE_SESSIONS_DIR)
                sessions_dir_mkdir(req, fs, name);
        else
                fuse_reply_err(req, r < 0 ? ENOENT : EPERM);
}

/* Valid replies: err. */
static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);
        struct inode_ref dir;
        int r = inode_decode(fs, parent, &dir);

        if (dir.kind == INODE_FILES)
                files_rmdir(fs->files, req, &dir, name);
        else if (dir.kind == INODE_SESSIONS_DIR)
                fuse_reply_err(req, -sessions_dir_rmdir(fs, name));
        else
                fuse_reply_err(req, r < 0 ? ENOENT : EPERM);
}

/* Valid replies: err. */
static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);
        struct inode_ref dir;
        int r = inode_decode(fs, parent, &dir);

        if (dir.kind == INODE_FILES)
                files_unlink(fs->files, req, &dir, name);
        else if (r < 0)
                fuse_reply_err(req, ENOENT);
        else if (dir.kind == INODE_TOOLS_DIR)
                fuse_reply_err(req, -tools_dir_unlink(&dir, name));
        else
                fuse_reply_err(req, EPERM);
}

/* Within one files/ or one tools/ directory only: mv falls back to copy
 * and unlink on EXDEV.  Valid replies: err. */
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags) {
        struct fs *fs = req_fs(req);
        struct inode_ref from, to;
        int r = inode_decode(fs, parent, &from), r_to = inode_decode(fs, newparent, &to);

        if (from.kind == INODE_FILES && to.kind == INODE_FILES) {
                files_rename(fs->files, req, &from, name, &to, newname, flags);
                return;
        }
        if (from.kind == INODE_FILES || to.kind == INODE_FILES)
                r = -EXDEV;
        else if (r < 0 || r_to < 0)
                r = -ENOENT;
        else if (from.kind != INODE_TOOLS_DIR && to.kind != INODE_TOOLS_DIR)
                r = -EPERM;
        else
                r = tools_dir_rename(&from, name, &to, newname, flags);
        fuse_reply_err(req, -r);
}

/* Valid replies: create, err. */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref dir;
        int r = inode_decode(fs, parent, &dir);

        if (dir.kind == INODE_FILES)
                files_create(fs->files, req, &dir, name, mode, fi);
        else if (r < 0)
                fuse_reply_err(req, ENOENT);
        else if (dir.kind == INODE_TOOLS_DIR)
                tools_dir_create(req, fs, &dir, name, mode, fi);
        else
                fuse_reply_err(req, EPERM);
}

/* ---- directories -------------------------------------------------------------- */

/* The directories the tree itself lists (files/ lists the workspace's). */
static bool is_tree_dir(enum inode_kind kind) {
        return kind == INODE_ROOT_DIR || kind == INODE_SESSIONS_DIR || kind == INODE_SESSION_DIR ||
               kind == INODE_TOOLS_DIR;
}

/* Valid replies: open, err. */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;
        int r = inode_decode(fs, ino, &ref);

        if (ref.kind == INODE_FILES) {
                files_opendir(fs->files, req, &ref, fi);
                return;
        }
        if (r == 0 && !is_tree_dir(ref.kind))
                r = -ENOTDIR;
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fi->fh = 0; /* listed from the tree itself: no handle */
        fuse_reply_open(req, fi);
}

/* Offsets: 1 and 2 are . and ..; each directory numbers the rest so that
 * an entry that goes between two calls shifts no other.  Valid replies:
 * buf, err. */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;
        _cleanup_free_ char *mem = NULL;
        struct dirbuf b = {.req = req, .size = size};
        int r = inode_decode(fs, ino, &ref);

        if (ref.kind == INODE_FILES) {
                files_readdir(fs->files, req, size, off, fi);
                return;
        }
        if (r == 0 && !is_tree_dir(ref.kind))
                r = -ENOTDIR;
        if (r == 0 && !(b.p = mem = malloc(size)))
                r = -ENOMEM;
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (off < 1 && !dirbuf_add(&b, ".", ino, S_IFDIR, 1))
                goto done;
        if (off < 2 && !dirbuf_add(&b, "..", ROOT_NODE_DIR, S_IFDIR, 2))
                goto done;
        switch (ref.kind) {
        case INODE_ROOT_DIR: root_list(&b, off); break;
        case INODE_SESSIONS_DIR: sessions_dir_list(fs, &b, off); break;
        case INODE_SESSION_DIR: session_dir_list(&ref, &b, off); break;
        default: tools_dir_list(&ref, &b, off); break;
        }
done:
        fuse_reply_buf(req, b.p, b.len);
}

/* Valid replies: err. */
static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        if (ref.kind == INODE_FILES)
                files_releasedir(fs->files, req, fi);
        else
                fuse_reply_err(req, 0);
}

/* ---- open files ------------------------------------------------------------------ */

/* Valid replies: open, err (now, or for clone when its session is ready). */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;
        int r = inode_decode(fs, ino, &ref);

        if (ref.kind == INODE_FILES) {
                files_open(fs->files, req, &ref, fi);
                return;
        }
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        switch (ref.kind) {
        case INODE_ROOT_FILE: root_file_open(req, fs, &ref, fi); return;
        case INODE_SESSION_FILE: session_file_open(req, fs, &ref, fi); return;
        case INODE_TOOLS_ERRORS:
        case INODE_TOOL_FILE: tool_file_open(req, fs, &ref, fi); return;
        default: fuse_reply_err(req, EISDIR); return;
        }
}

/* Valid replies: buf, data (files/), err (now, or when the run ends). */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        switch (ref.kind) {
        case INODE_FILES: files_read(fs->files, req, size, off, fi); return;
        case INODE_ROOT_FILE: root_file_read(req, fs, &ref, fi_handle(fi), size, off); return;
        case INODE_SESSION_FILE: session_file_read(req, fs, &ref, fi_handle(fi), size, off); return;
        case INODE_TOOLS_ERRORS:
        case INODE_TOOL_FILE: tool_file_read(req, &ref, fi_handle(fi), size, off); return;
        default: fuse_reply_err(req, EBADF); return; /* no handle of ours reads here */
        }
}

/* Valid replies: write, err. */
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
                     struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        switch (ref.kind) {
        case INODE_FILES: files_write(fs->files, req, data, size, off, fi); return;
        case INODE_SESSION_FILE: session_file_write(req, fs, &ref, fi_handle(fi), data, size, off); return;
        case INODE_TOOL_FILE: tool_file_write(req, &ref, fi_handle(fi), data, size, off); return;
        default: fuse_reply_err(req, EBADF); return; /* opened read-only */
        }
}

/* Valid replies: err. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        switch (ref.kind) {
        case INODE_SESSION_FILE: session_file_flush(req, fs, &ref, fi_handle(fi)); return;
        case INODE_TOOL_FILE: tool_file_flush(req, &ref, fi_handle(fi)); return;
        default: fuse_reply_err(req, 0); return; /* files/: writes went straight to the file */
        }
}

/* Valid replies: err. */
static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;

        inode_decode(fs, ino, &ref);
        if (ref.kind == INODE_FILES) {
                files_release(fs->files, req, fi);
                return;
        }
        handle_close(fs, fi_handle(fi));
        fuse_reply_err(req, 0);
}

/* Valid replies: poll. */
static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph) {
        struct fs *fs = req_fs(req);
        struct inode_ref ref;
        unsigned revents;
        int r = inode_decode(fs, ino, &ref);

        if (ref.kind == INODE_SESSION_FILE) {
                session_file_poll(req, fs, &ref, fi_handle(fi), ph);
                return;
        }
        /* The others are always ready: a regular file of files/ both ways,
         * the others as they were opened. */
        if (r < 0)
                revents = POLLERR | POLLHUP;
        else if (ref.kind == INODE_FILES)
                revents = POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM;
        else if ((fi_handle(fi)->flags & O_ACCMODE) == O_WRONLY)
                revents = POLLOUT | POLLWRNORM;
        else
                revents = POLLIN | POLLRDNORM;
        if (ph)
                fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, revents);
}

const struct fuse_lowlevel_ops fs_ops = {
        .init = op_init,
        .lookup = op_lookup,
        .forget = op_forget,
        .forget_multi = op_forget_multi,
        .getattr = op_getattr,
        .setattr = op_setattr,
        .readlink = op_readlink,
        .mknod = op_mknod,
        .mkdir = op_mkdir,
        .unlink = op_unlink,
        .rmdir = op_rmdir,
        .symlink = op_symlink,
        .rename = op_rename,
        .link = op_link,
        .open = op_open,
        .read = op_read,
        .write = op_write,
        .flush = op_flush,
        .release = op_release,
        .opendir = op_opendir,
        .readdir = op_readdir,
        .releasedir = op_releasedir,
        .create = op_create,
        .poll = op_poll,
};
