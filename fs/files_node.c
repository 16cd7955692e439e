/* The nodes of files/: lookup counts, and resolving an inode or a shown
 * name to a descriptor (fs/files_node.h). */
#include "files_node.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "escape.h"
#include "macros.h"
#include "parked.h"
#include "sessions/session.h"
#include "sessions/workspace.h"

static unsigned ino_bucket(uint64_t ino) { return fs_hash(ino, FILES_BUCKET_BITS); }

static unsigned host_bucket(uint64_t sid, dev_t dev, ino_t ino) {
        return fs_hash(sid * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev * 31 ^ (uint64_t)ino, FILES_BUCKET_BITS);
}

struct session *files_session(struct files *f, uint64_t sid) {
        struct fs_session *st = fs_session_find(f->fs, sid);

        return st ? st->session : NULL;
}

/* ---- the node table ------------------------------------------------------- */

static struct fnode *node_by_ino(struct files *f, fuse_ino_t ino) {
        for (struct fnode *n = f->by_ino[ino_bucket(ino)]; n; n = n->ino_next)
                if (n->ino == ino)
                        return n;
        return NULL;
}

struct fnode *node_by_host(struct files *f, uint64_t sid, dev_t dev, ino_t host_ino) {
        for (struct fnode *n = f->by_host[host_bucket(sid, dev, host_ino)]; n; n = n->host_next)
                if (n->sid == sid && n->dev == dev && n->host_ino == host_ino)
                        return n;
        return NULL;
}

static void node_free(struct files *f, struct fnode *n) {
        struct fnode **pp;

        for (pp = &f->by_ino[ino_bucket(n->ino)]; *pp; pp = &(*pp)->ino_next)
                if (*pp == n) {
                        *pp = n->ino_next;
                        break;
                }
        for (pp = &f->by_host[host_bucket(n->sid, n->dev, n->host_ino)]; *pp; pp = &(*pp)->host_next)
                if (*pp == n) {
                        *pp = n->host_next;
                        break;
                }
        if (n->fd >= 0)
                close(n->fd);
        free(n->name);
        free(n);
}

struct fnode *node_get(struct files *f, uint64_t sid, int fd, const struct stat *st, fuse_ino_t parent,
                       const char *name) {
        struct fnode *n = node_by_host(f, sid, st->st_dev, st->st_ino);
        char *copy = S_ISDIR(st->st_mode) ? NULL : strdup(name);
        unsigned b;

        if (!S_ISDIR(st->st_mode)) {
                close(fd);
                fd = -1;
                if (!copy)
                        return NULL;
        }
        if (n) {
                if (fd >= 0)
                        close(fd);
                if (copy) { /* where it was seen last */
                        free(n->name);
                        n->name = copy;
                        n->parent = parent;
                }
                n->nlookup++;
                return n;
        }
        n = calloc(1, sizeof(*n));
        if (!n) {
                if (fd >= 0)
                        close(fd);
                free(copy);
                return NULL;
        }
        *n = (struct fnode){.ino = INODE_FILES_BIT | ++f->next_serial, .sid = sid, .dev = st->st_dev,
                            .host_ino = st->st_ino, .fd = fd, .parent = parent, .name = copy, .nlookup = 1};
        b = ino_bucket(n->ino);
        n->ino_next = f->by_ino[b];
        f->by_ino[b] = n;
        b = host_bucket(sid, st->st_dev, st->st_ino);
        n->host_next = f->by_host[b];
        f->by_host[b] = n;
        return n;
}

void node_put(struct files *f, struct fnode *n) {
        if (--n->nlookup == 0)
                node_free(f, n);
}

struct files *files_new(struct fs *fs) {
        struct files *f = calloc(1, sizeof(*f));

        if (f)
                f->fs = fs;
        return f;
}

void files_free(struct files *f) {
        if (!f)
                return;
        for (unsigned i = 0; i < ARRAY_SIZE(f->by_ino); i++)
                while (f->by_ino[i])
                        node_free(f, f->by_ino[i]);
        free(f);
}

void files_session_closed(struct files *f, uint64_t sid) {
        for (unsigned i = 0; i < ARRAY_SIZE(f->by_ino); i++)
                for (struct fnode *n = f->by_ino[i], *next; n; n = next) {
                        next = n->ino_next;
                        if (n->sid == sid)
                                node_free(f, n);
                }
}

void files_forget(struct files *f, fuse_ino_t ino, uint64_t nlookup) {
        struct fnode *n = node_by_ino(f, ino);

        if (!n)
                return; /* files/ itself, or its session closed: already gone */
        n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
        if (n->nlookup == 0)
                node_free(f, n);
}

/* ---- resolving inodes --------------------------------------------------------- */

static int resolve_at(struct files *f, fuse_ino_t ino, struct session *root, struct session **s, int *fd,
                      struct fnode **node, int depth);

/* An O_PATH descriptor of a non-directory node, found again as its name in
 * its parent and checked to be the same inode.  -ESTALE when the name now
 * holds something else. */
static int node_reopen(struct files *f, struct fnode *n, int depth) {
        _cleanup_close_ int pfd = -1;
        struct session *ps;
        struct fnode *pn;
        struct stat st;
        int fd, r;

        if (depth > 64)
                return -ELOOP;
        r = resolve_at(f, n->parent, files_session(f, n->sid), &ps, &pfd, &pn, depth + 1);
        if (r < 0)
                return r == -ENOENT ? -ESTALE : r;
        fd = workspace_openat(pfd, n->name, O_PATH, 0);
        if (fd < 0)
                return fd == -ENOENT ? -ESTALE : fd;
        if (fstat(fd, &st) < 0 || st.st_ino != n->host_ino || st.st_dev != n->dev) {
                close(fd);
                return -ESTALE;
        }
        return fd;
}

/* ino is a node, or files/ itself of session root (NULL: it is gone). */
static int resolve_at(struct files *f, fuse_ino_t ino, struct session *root, struct session **s, int *fd,
                      struct fnode **node, int depth) {
        struct fnode *n = NULL;
        int r;

        if (ino & INODE_FILES_BIT) {
                n = node_by_ino(f, ino);
                if (!n || !(*s = files_session(f, n->sid)))
                        return -ENOENT;
                if (n->fd < 0)
                        r = node_reopen(f, n, depth);
                else if ((r = fcntl(n->fd, F_DUPFD_CLOEXEC, 3)) < 0)
                        r = -errno;
        } else {
                if (!(*s = root))
                        return -ENOENT;
                if ((r = fcntl(workspace_root_fd(session_workspace(root)), F_DUPFD_CLOEXEC, 3)) < 0)
                        r = -errno;
        }
        if (r < 0)
                return r;
        *fd = r;
        *node = n;
        return 0;
}

int resolve(struct files *f, const struct inode_ref *ref, struct session **s, int *fd, struct fnode **node) {
        return resolve_at(f, ref->ino, ref->session, s, fd, node, 0);
}

int name_from_shown(const char *shown, char *raw) {
        int r = name_take(shown, raw, NAME_MAX + 1);

        if (r < 0)
                return r;
        return workspace_name_valid(raw) ? 0 : -EINVAL;
}

int resolve_name(struct files *f, const struct inode_ref *parent, const char *shown, struct session **s, int *fd,
                 char *raw) {
        struct fnode *pn;
        int r = resolve(f, parent, s, fd, &pn);

        if (r < 0)
                return r;
        if ((r = name_from_shown(shown, raw)) < 0) {
                close(*fd);
                *fd = -1;
                return r;
        }
        return 0;
}

/* ---- attributes and entries ------------------------------------------------------ */

void proc_path(int fd, char *buf, size_t size) { snprintf(buf, size, "/proc/self/fd/%d", fd); }

int stat_fd(int fd, struct stat *st) {
        return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* The host's attributes, with our inode number and the daemon's uid/gid
 * (the workspace's files belong to it anyway). */
void attr_of(struct files *f, fuse_ino_t ino, const struct stat *host, struct stat *st) {
        *st = *host;
        st->st_ino = ino;
        st->st_uid = f->fs->uid;
        st->st_gid = f->fs->gid;
        /* No set-id or sticky bit leaves the sandbox: the mount is nosuid,
         * but cp -a, rsync -a, tar and a copy that keeps modes would carry
         * a set-uid bit of the code's making onto a file of the host user
         * (root's, for a root client), outside any nosuid mount. */
        st->st_mode &= ~(mode_t)(S_ISUID | S_ISGID | S_ISVTX);
        /* A FIFO or socket the code made would be opened by the reader's
         * own kernel, and a FIFO blocks its open until a writer comes: the
         * user's tools would hang on files/x.csv.  They are shown as empty
         * regular files that no one may open (files_open says EACCES). */
        if (!S_ISREG(host->st_mode) && !S_ISDIR(host->st_mode) && !S_ISLNK(host->st_mode)) {
                st->st_mode = S_IFREG;
                st->st_size = 0;
                st->st_blocks = 0;
        }
}

void reply_new_entry(struct files *f, fuse_req_t req, struct session *s, int fd, fuse_ino_t parent,
                     const char *name) {
        struct fuse_entry_param e = {0};
        struct stat st;
        struct fnode *n;
        int r = stat_fd(fd, &st);

        if (r < 0) {
                close(fd);
                fuse_reply_err(req, -r);
                return;
        }
        n = node_get(f, session_id(s), fd, &st, parent, name);
        if (!n) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        /* The sandboxed code changes the tree behind the kernel's back:
         * nothing is cached, every path walk asks again. */
        e.ino = n->ino;
        attr_of(f, n->ino, &st, &e.attr);
        if (fuse_reply_entry(req, &e) != 0)
                node_put(f, n);
}

void reply_entry_at(struct files *f, fuse_req_t req, struct session *s, int pfd, fuse_ino_t parent,
                    const char *name) {
        int fd = workspace_openat(pfd, name, O_PATH, 0);

        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        reply_new_entry(f, req, s, fd, parent, name);
}
