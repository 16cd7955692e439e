/* tools/ directories, their NAME.json files and .errors (fs/tools_dir.h). */
#include "tools_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "handle.h"
#include "macros.h"
#include "sessions/tools.h"

static bool is_errors(const char *name) { return strcmp(name, ".errors") == 0; }

/* ---- the directory -------------------------------------------------------- */

int tools_dir_lookup(const struct inode_ref *dir, const char *name, fuse_ino_t *out) {
        struct tool_entry *e;

        if (is_errors(name)) {
                *out = inode_of_tools_errors(dir->scope);
                return 0;
        }
        e = tools_entry_lookup(dir->scope, name);
        if (!e)
                return -ENOENT;
        *out = inode_of_tool(tool_entry_id(e));
        return 0;
}

void tools_dir_list(const struct inode_ref *dir, struct dirbuf *b, off_t off) {
        struct tool_scope *sc = dir->scope;

        if (off < 3 && !dirbuf_add(b, ".errors", inode_of_tools_errors(sc), S_IFREG | 0444, 3))
                return;
        for (struct tool_entry *e = tools_entry_next(sc, (uint64_t)MAX(off - 3, 0)); e;
             e = tools_entry_next(sc, tool_entry_id(e)))
                if (!dirbuf_add(b, tool_entry_filename(e), inode_of_tool(tool_entry_id(e)), S_IFREG | 0644,
                                (off_t)tool_entry_id(e) + 3))
                        return;
}

void tool_file_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout) {
        *attr_timeout = 0;
        if (ref->kind == INODE_TOOLS_ERRORS)
                fill_attr(fs, ref->ino, S_IFREG | 0444, tool_scope_errors(ref->scope)->len, st);
        else
                fill_attr(fs, ref->ino, S_IFREG | 0644, tool_entry_text(ref->tool)->len, st);
}

/* ---- names ----------------------------------------------------------------- */

/* Open e through a new handle.  Valid replies: open (create when created),
 * err. */
static void open_entry(fuse_req_t req, struct fs *fs, struct tool_entry *e, struct fuse_file_info *fi,
                       bool created) {
        struct fuse_entry_param ep = {.ino = inode_of_tool(tool_entry_id(e))};
        const struct text *t = tool_entry_text(e);
        struct handle *h;
        int r = handle_open(fs, ep.ino, S_IFREG | 0644, fi, &h);

        if (r < 0) {
                if (created)
                        tool_entry_release(e); /* frees it if it has no definition */
                fuse_reply_err(req, -r);
                return;
        }
        tool_entry_hold(e);
        /* Writes go to the handle; without O_TRUNC they start from the
         * definition in force, as on a disk. */
        if ((fi->flags & O_ACCMODE) != O_RDONLY && !(fi->flags & O_TRUNC))
                text_set(&h->buf, t->data, t->len);
        if (!created) {
                reply_open(req, fs, h, fi, NULL);
                return;
        }
        ep.attr_timeout = 0;
        fill_attr(fs, ep.ino, S_IFREG | 0644, t->len, &ep.attr);
        reply_open(req, fs, h, fi, &ep);
}

void tools_dir_create(fuse_req_t req, struct fs *fs, const struct inode_ref *dir, const char *name, mode_t mode,
                      struct fuse_file_info *fi) {
        struct tool_entry *e = NULL;
        int r;

        if (!S_ISREG(mode) || is_errors(name)) {
                fuse_reply_err(req, S_ISREG(mode) ? EEXIST : EPERM);
                return;
        }
        r = tools_entry_create(dir->scope, name, &e);
        if (r == -EEXIST) {
                if (fi->flags & O_EXCL) {
                        fuse_reply_err(req, EEXIST);
                        return;
                }
                e = tools_entry_lookup(dir->scope, name);
                r = 0;
        }
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        open_entry(req, fs, e, fi, true);
}

int tools_dir_unlink(const struct inode_ref *dir, const char *name) {
        return is_errors(name) ? -EPERM : tools_entry_unlink(dir->scope, name);
}

/* The scope a directory stands for, NULL when it is no tools/. */
static struct tool_scope *dir_scope(const struct inode_ref *dir) {
        return dir->kind == INODE_TOOLS_DIR ? dir->scope : NULL;
}

int tools_dir_rename(const struct inode_ref *from, const char *name, const struct inode_ref *to,
                     const char *newname, unsigned flags) {
        if (dir_scope(from) != dir_scope(to))
                return -EXDEV;
        if ((flags & RENAME_EXCHANGE) || is_errors(name) || is_errors(newname))
                return -EINVAL;
        return tools_entry_rename(from->scope, name, newname, flags);
}

/* ---- files ------------------------------------------------------------------- */

void tool_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct handle *h;
        int r;

        if (ref->kind == INODE_TOOL_FILE) {
                if (tool_entry_unlinked(ref->tool)) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
                open_entry(req, fs, ref->tool, fi, false);
                return;
        }
        if ((r = handle_open(fs, ref->ino, S_IFREG | 0444, fi, &h)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        reply_open(req, fs, h, fi, NULL);
}

void tool_file_read(fuse_req_t req, const struct inode_ref *ref, struct handle *h, size_t size, off_t off) {
        const struct text *t;

        if (!ref->scope) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (off == 0) {
                t = ref->kind == INODE_TOOL_FILE ? tool_entry_text(ref->tool) : tool_scope_errors(ref->scope);
                text_set(&h->text, t->data, t->len);
        }
        reply_text(req, &h->text, size, off);
}

void tool_file_write(fuse_req_t req, const struct inode_ref *ref, struct handle *h, const char *data, size_t size,
                     off_t off) {
        int r;

        if (!ref->tool) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        r = handle_write_at(h, data, size, off, TOOL_FILE_MAX);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        h->dirty = true;
        fuse_reply_write(req, size);
}

void tool_file_flush(fuse_req_t req, const struct inode_ref *ref, struct handle *h) {
        int r = 0;

        if (ref->tool && h->dirty) {
                h->dirty = false;
                r = tool_entry_write(ref->tool, h->buf.data ? h->buf.data : "", h->buf.len);
        }
        fuse_reply_err(req, -r);
}

void tool_file_setattr(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct stat *attr, int to_set,
                       struct fuse_file_info *fi) {
        struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
        struct stat st;
        double timeout;

        if (to_set & FUSE_SET_ATTR_SIZE) {
                size_t size = (size_t)attr->st_size;
                if (h && h->ino == ref->ino && (h->flags & O_ACCMODE) != O_RDONLY) {
                        if (attr->st_size < 0 || size > TOOL_FILE_MAX) {
                                fuse_reply_err(req, EFBIG);
                                return;
                        }
                        if (size > h->buf.len && handle_write_at(h, "", 0, (off_t)size, TOOL_FILE_MAX) < 0) {
                                fuse_reply_err(req, ENOMEM);
                                return;
                        }
                        h->buf.len = size;
                        if (size > 0)
                                h->dirty = true;
                } else if (size != tool_entry_text(ref->tool)->len && size != 0) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
        }
        tool_file_attr(fs, ref, &st, &timeout);
        fuse_reply_attr(req, &st, timeout);
}

void tool_file_closed(const struct inode_ref *ref, struct handle *h) {
        if (ref->tool)
                tool_entry_release(ref->tool);
}
