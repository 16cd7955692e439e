/* sessions/N/files/: the operations (fs/files.h has the rules against links
 * that every one of them follows; fs/files_node.c the nodes, fs/files_link.c
 * the links). */
#include "files_node.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "escape.h"
#include "macros.h"
#include "sessions/session.h"
#include "sessions/workspace.h"

/* An open regular file. */
struct fhandle {
        uint64_t sid;
        int fd;
        bool append;
};

/* An open directory. */
struct dhandle {
        uint64_t sid;
        dev_t dev;
        DIR *dir;
        off_t off;
        struct dirent *pending; /* read but not yet sent (the buffer was full) */
};

/* ---- names and attributes ------------------------------------------------- */

void files_lookup(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name) {
        struct session *s;
        struct fnode *pn;
        char raw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1;
        int r;

        if ((r = resolve(f, parent, &s, &pfd, &pn)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* A name that is not how files/ shows any name names nothing. */
        if ((r = name_from_shown(name, raw)) < 0) {
                fuse_reply_err(req, r == -ENAMETOOLONG ? ENAMETOOLONG : ENOENT);
                return;
        }
        reply_entry_at(f, req, s, pfd, parent->ino, raw);
}

void files_getattr(struct files *f, fuse_req_t req, const struct inode_ref *ref) {
        struct session *s;
        struct fnode *n;
        struct stat host, st;
        _cleanup_close_ int fd = -1;
        int r;

        if ((r = resolve(f, ref, &s, &fd, &n)) < 0 || (r = stat_fd(fd, &host)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        attr_of(f, ref->ino, &host, &st);
        fuse_reply_attr(req, &st, 0);
}

/* Truncation to size through the descriptor the user's write handle has,
 * else one opened on the node's own inode (path), the workspace charged
 * first: 0 or -errno. */
static int truncate_node(struct session *s, struct fuse_file_info *fi, const char *path, const struct stat *host,
                         off_t size) {
        struct fhandle *h = fi ? (struct fhandle *)(uintptr_t)fi->fh : NULL;
        _cleanup_close_ int wfd = -1;
        int r;

        if (!S_ISREG(host->st_mode))
                return S_ISDIR(host->st_mode) ? -EISDIR : -EINVAL;
        if (size < 0)
                return -EINVAL;
        if ((r = workspace_charge(session_workspace(s), size - host->st_size)) < 0)
                return r;
        if (!h || (fi->flags & O_ACCMODE) == O_RDONLY) {
                wfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                r = wfd < 0 ? -errno : 0;
        }
        if (r == 0 && ftruncate(wfd >= 0 ? wfd : h->fd, size) < 0)
                r = -errno;
        if (r < 0)
                workspace_charge(session_workspace(s), host->st_size - size); /* undo */
        return r;
}

/* The times to set, on the descriptor's own inode, a link included: no
 * path.  0 or -errno. */
static int set_times(int fd, const struct stat *attr, int to_set) {
        struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

        if (to_set & FUSE_SET_ATTR_ATIME_NOW)
                times[0].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_ATIME)
                times[0] = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
                times[1].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_MTIME)
                times[1] = attr->st_mtim;
        return utimensat(fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

void files_setattr(struct files *f, fuse_req_t req, const struct inode_ref *ref, struct stat *attr, int to_set,
                   struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *n;
        struct stat host, st;
        char path[64];
        _cleanup_close_ int fd = -1;
        int r;

        if ((r = resolve(f, ref, &s, &fd, &n)) < 0 || (r = stat_fd(fd, &host)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        proc_path(fd, path, sizeof(path));
        if (to_set & FUSE_SET_ATTR_MODE) {
                /* rwx for user, group, other; no set-id or sticky bits. */
                if (S_ISLNK(host.st_mode))
                        r = -EOPNOTSUPP;
                else if (fchmodat(AT_FDCWD, path, attr->st_mode & 0777, 0) < 0)
                        r = -errno;
        }
        if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE))
                r = truncate_node(s, fi, path, &host, attr->st_size);
        if (r == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                                 FUSE_SET_ATTR_MTIME_NOW)))
                r = set_times(fd, attr, to_set);
        if (r == 0)
                r = stat_fd(fd, &host);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        workspace_touch(session_workspace(s));
        attr_of(f, ref->ino, &host, &st);
        fuse_reply_attr(req, &st, 0);
}

/* ---- directories' entries ----------------------------------------------------- */

void files_mkdir(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name, mode_t mode) {
        struct session *s;
        char raw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1;
        int fd, r;

        if ((r = resolve_name(f, parent, name, &s, &pfd, raw)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* rwx bits only: no set-gid or sticky directory from this side. */
        if (mkdirat(pfd, raw, mode & 0777) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        workspace_touch(session_workspace(s));
        /* If the code swapped something else in meanwhile, this fails
         * rather than follows it. */
        fd = workspace_openat(pfd, raw, O_PATH | O_DIRECTORY, 0);
        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        /* The daemon made it: it belongs to the session's id, as if the
         * worker had, or the code could not write into it. */
        if ((r = workspace_own(session_workspace(s), fd)) < 0) {
                close(fd);
                fuse_reply_err(req, -r);
                return;
        }
        reply_new_entry(f, req, s, fd, parent->ino, raw);
}

/* Valid replies: err. */
static void remove_entry(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name,
                         int flags) {
        struct session *s;
        struct stat st;
        char raw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1;
        int r;

        if ((r = resolve_name(f, parent, name, &s, &pfd, raw)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* unlinkat never follows the final component: a link goes, not its
         * target. */
        if (fstatat(pfd, raw, &st, AT_SYMLINK_NOFOLLOW) < 0)
                st.st_nlink = 0;
        if (unlinkat(pfd, raw, flags) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        if (S_ISREG(st.st_mode) && st.st_nlink == 1)
                workspace_charge(session_workspace(s), -(long long)st.st_blocks * 512);
        workspace_touch(session_workspace(s));
        fuse_reply_err(req, 0);
}

void files_unlink(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name) {
        remove_entry(f, req, parent, name, 0);
}

void files_rmdir(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name) {
        remove_entry(f, req, parent, name, AT_REMOVEDIR);
}

void files_rename(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name,
                  const struct inode_ref *newparent, const char *newname, unsigned int flags) {
        struct session *s, *ns;
        char raw[NAME_MAX + 1], newraw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1, npfd = -1;
        struct stat st;
        int r;

        if ((r = resolve_name(f, parent, name, &s, &pfd, raw)) < 0 ||
            (r = resolve_name(f, newparent, newname, &ns, &npfd, newraw)) < 0 || (r = s != ns ? -EXDEV : 0) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (renameat2(pfd, raw, npfd, newraw, flags) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        /* Nodes are found again by parent and name (fs/files_node.h): an
         * open directory's fstat must not turn stale because the user
         * renamed it. */
        if (fstatat(npfd, newraw, &st, AT_SYMLINK_NOFOLLOW) == 0)
                node_moved(f, session_id(s), st.st_dev, st.st_ino, newparent->ino, newraw);
        if ((flags & RENAME_EXCHANGE) && fstatat(pfd, raw, &st, AT_SYMLINK_NOFOLLOW) == 0)
                node_moved(f, session_id(s), st.st_dev, st.st_ino, parent->ino, raw);
        workspace_touch(session_workspace(s));
        fuse_reply_err(req, 0);
}

/* ---- open files ----------------------------------------------------------------- */

/* The flags a host-side open passes on: O_NONBLOCK always, so that a FIFO
 * the code planted can never block the daemon's loop (and is refused right
 * after, as is anything but a regular file). */
static int open_flags(int flags) {
        return (flags & (O_ACCMODE | O_TRUNC | O_APPEND)) | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
}

/* Hand out fd (an open regular file of s's workspace) as fi's handle:
 * 0 (fd is the handle's) or -ENOMEM (fd is still the caller's). */
static int fhandle_new(struct session *s, int fd, struct fuse_file_info *fi) {
        struct fhandle *h = calloc(1, sizeof(*h));

        if (!h)
                return -ENOMEM;
        *h = (struct fhandle){.sid = session_id(s), .fd = fd, .append = (fi->flags & O_APPEND) != 0};
        fi->fh = (uint64_t)(uintptr_t)h;
        /* The code may change the file at any time: no page cache. */
        fi->direct_io = 1;
        fi->keep_cache = 0;
        fi->noflush = 1;
        return 0;
}

static void fhandle_free(struct fuse_file_info *fi) {
        struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;

        if (h) {
                close(h->fd);
                free(h);
        }
}

void files_create(struct files *f, fuse_req_t req, const struct inode_ref *parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *n;
        struct stat st;
        struct fuse_entry_param ep = {0};
        char path[64], raw[NAME_MAX + 1];
        _cleanup_close_ int fd = -1, pathfd = -1, pfd = -1;
        int r;

        if ((r = resolve_name(f, parent, name, &s, &pfd, raw)) < 0 || (r = S_ISREG(mode) ? 0 : -EPERM) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* rwx bits only (no set-id from this side either). */
        fd = workspace_openat(pfd, raw, open_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL), mode & 0777);
        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        workspace_touch(session_workspace(s));
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                fuse_reply_err(req, EACCES);
                return;
        }
        /* The session's, as if the worker had made it (a file copied into
         * files/ must be writable by the code). */
        if ((r = workspace_own(session_workspace(s), fd)) < 0 || (r = fstat(fd, &st) < 0 ? -errno : 0) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* The node's descriptor is this very inode, whatever the name
         * points to by now. */
        proc_path(fd, path, sizeof(path));
        pathfd = open(path, O_PATH | O_CLOEXEC);
        if (pathfd < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        if ((r = fhandle_new(s, fd, fi)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fd = -1; /* the handle has it */
        n = node_get(f, session_id(s), TAKE_FD(pathfd), &st, parent->ino, raw);
        if (!n) {
                fhandle_free(fi);
                fuse_reply_err(req, ENOMEM);
                return;
        }
        ep.ino = n->ino;
        attr_of(f, n->ino, &st, &ep.attr);
        if (fuse_reply_create(req, &ep, fi) != 0) {
                /* The opener is gone: no RELEASE, no FORGET will come. */
                fhandle_free(fi);
                node_put(f, n);
        }
}

void files_open(struct files *f, fuse_req_t req, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *n;
        struct stat st;
        char path[64];
        _cleanup_close_ int pathfd = -1, fd = -1;
        int r;

        if ((r = resolve(f, ref, &s, &pathfd, &n)) < 0 || (r = stat_fd(pathfd, &st)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (!n || S_ISDIR(st.st_mode))
                r = -EISDIR;
        else if (S_ISLNK(st.st_mode))
                r = -ELOOP; /* never followed */
        else if (!S_ISREG(st.st_mode))
                r = -EACCES; /* FIFOs, sockets */
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        proc_path(pathfd, path, sizeof(path));
        fd = open(path, open_flags(fi->flags));
        if (fd < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        /* Refunded only once the truncating open succeeded. */
        if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
                workspace_charge(session_workspace(s), -(long long)st.st_blocks * 512);
                workspace_touch(session_workspace(s));
        }
        if ((r = fhandle_new(s, fd, fi)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fd = -1; /* the handle has it */
        if (fuse_reply_open(req, fi) != 0)
                fhandle_free(fi); /* the opener is gone: no RELEASE will come */
}

/* Straight from the file: libfuse reads (or splices) size bytes at off. */
void files_read(struct files *f, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi) {
        struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;
        struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

        buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        buf.buf[0].fd = h->fd;
        buf.buf[0].pos = off;
        fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void files_write(struct files *f, fuse_req_t req, const char *data, size_t size, off_t off,
                 struct fuse_file_info *fi) {
        struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;
        struct session *s = files_session(f, h->sid);
        struct stat st;
        long long end, growth;
        ssize_t n;
        int r;

        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        /* none mode counts the growth here; strict: the tmpfs refuses. */
        if (fstat(h->fd, &st) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        end = h->append ? st.st_size + (long long)size : off + (long long)size;
        growth = MAX(0, end - st.st_size);
        if ((r = workspace_charge(session_workspace(s), growth)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* The host descriptor has O_APPEND when the user's has: pwrite then
         * appends, whatever the kernel's idea of the size. */
        n = pwrite(h->fd, data, size, off);
        r = n < 0 ? -errno : 0; /* before the refund's calls can change errno */
        /* Refund what was charged for bytes that were not written. */
        if (n < (ssize_t)size)
                workspace_charge(session_workspace(s),
                                 -(growth - MAX(0, end - (long long)size + MAX(n, 0) - st.st_size)));
        workspace_touch(session_workspace(s));
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fuse_reply_write(req, (size_t)n);
}

void files_release(struct files *f, fuse_req_t req, struct fuse_file_info *fi) {
        fhandle_free(fi);
        fuse_reply_err(req, 0);
}

/* ---- open directories ----------------------------------------------------------- */

void files_opendir(struct files *f, fuse_req_t req, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *n;
        struct dhandle *h;
        struct stat st;
        _cleanup_close_ int fd = -1, dfd = -1;
        int r;

        if ((r = resolve(f, ref, &s, &fd, &n)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* "." of a directory descriptor: the directory itself, no lookup. */
        dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0 || fstat(dfd, &st) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        h = calloc(1, sizeof(*h));
        if (!h) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        if (!(h->dir = fdopendir(dfd))) {
                r = -errno;
                free(h);
                fuse_reply_err(req, -r);
                return;
        }
        dfd = -1; /* the DIR has it */
        h->sid = session_id(s);
        h->dev = st.st_dev;
        fi->fh = (uint64_t)(uintptr_t)h;
        if (fuse_reply_open(req, fi) != 0) {
                closedir(h->dir);
                free(h);
        }
}

void files_readdir(struct files *f, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi) {
        struct dhandle *h = (struct dhandle *)(uintptr_t)fi->fh;
        _cleanup_free_ char *buf = calloc(1, size);
        size_t len = 0;
        int r;

        if (!buf) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        if (off != h->off) {
                seekdir(h->dir, off);
                h->pending = NULL;
                h->off = off;
        }
        for (;;) {
                struct dirent *de = h->pending;
                struct stat st = {0};
                struct fnode *n;
                char shown[NAME_MAX * NAME_SHOW_GROWTH + 1];
                size_t need;

                if (!de) {
                        errno = 0;
                        de = readdir(h->dir);
                        if (!de) {
                                r = -errno;
                                if (r < 0 && len == 0) {
                                        fuse_reply_err(req, -r);
                                        return;
                                }
                                break;
                        }
                }
                n = node_by_host(f, h->sid, h->dev, de->d_ino);
                st.st_ino = n ? n->ino
                              : (INODE_FILES_UNKNOWN_BIT | INODE_FILES_BIT |
                                 (de->d_ino & (INODE_FILES_UNKNOWN_BIT - 1)));
                st.st_mode = de->d_type == DT_DIR || de->d_type == DT_LNK ? DTTOIF(de->d_type) : S_IFREG;
                /* The name as files/ shows it: control characters, invalid
                 * UTF-8, backslashes and a leading '-' escaped, at most
                 * 4 x NAME_MAX = 1020 bytes (the kernel takes up to
                 * FUSE_NAME_MAX, 1024); lookup takes it back. */
                name_show(de->d_name, strlen(de->d_name), shown);
                need = fuse_add_direntry(req, buf + len, size - len, shown, &st, de->d_off);
                if (need > size - len) {
                        h->pending = de;
                        break;
                }
                len += need;
                h->pending = NULL;
                h->off = de->d_off;
        }
        fuse_reply_buf(req, buf, len);
}

void files_releasedir(struct files *f, fuse_req_t req, struct fuse_file_info *fi) {
        struct dhandle *h = (struct dhandle *)(uintptr_t)fi->fh;

        if (h) {
                closedir(h->dir);
                free(h);
        }
        fuse_reply_err(req, 0);
}
