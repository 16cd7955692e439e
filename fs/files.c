/* sessions/N/files/ (fs/files.h): the rules against links are written there;
 * every function here follows them. */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "escape.h"
#include "macros.h"
#include "sessions/session.h"
#include "sessions/workspace.h"

#define BUCKETS 4096u
/* readdir of an entry the kernel has no node for: a number that is not any
 * node's (only ls -i shows it). */
#define UNKNOWN_INO_BIT (1ULL << 60)

/* A host inode below a workspace that the kernel holds lookups on.
 *
 * A directory keeps an O_PATH descriptor of itself.  Anything else keeps
 * only where it was last looked up (its parent's inode and its name) and is
 * found again from there, its inode number checked, at each use: a
 * descriptor would pin the inode, so a file deleted by either side would go
 * on taking space from the quota for as long as the kernel remembers the
 * node.  The kernel revalidates every path (entry timeout 0), so the name
 * is fresh whenever a path led to the node. */
struct fnode {
        uint64_t ino;   /* FILES_INO_BIT | serial */
        uint64_t sid;
        dev_t dev;
        ino_t host_ino;
        int fd;         /* directories: O_PATH|O_NOFOLLOW on the host inode; else -1 */
        uint64_t parent; /* others: the parent's inode number (ours) */
        char *name;      /* others: the name in it */
        uint64_t nlookup;
        struct fnode *ino_next, *host_next;
};

struct files {
        struct sessions *sessions;
        uid_t uid;
        gid_t gid;
        uint64_t stride, root_kind;
        uint64_t next_serial;
        struct fnode *by_ino[BUCKETS];
        struct fnode *by_host[BUCKETS];
};

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

/* ---- the node table -------------------------------------------------------- */

static unsigned hash64(uint64_t x) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        return (unsigned)(x % BUCKETS);
}

static unsigned host_hash(uint64_t sid, dev_t dev, ino_t ino) {
        return hash64(sid * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev * 31 ^ (uint64_t)ino);
}

static struct fnode *node_by_ino(struct files *f, fuse_ino_t ino) {
        for (struct fnode *n = f->by_ino[hash64(ino)]; n; n = n->ino_next)
                if (n->ino == ino)
                        return n;
        return NULL;
}

static struct fnode *node_by_host(struct files *f, uint64_t sid, dev_t dev, ino_t host_ino) {
        for (struct fnode *n = f->by_host[host_hash(sid, dev, host_ino)]; n; n = n->host_next)
                if (n->sid == sid && n->dev == dev && n->host_ino == host_ino)
                        return n;
        return NULL;
}

static void node_free(struct files *f, struct fnode *n) {
        struct fnode **pp;

        for (pp = &f->by_ino[hash64(n->ino)]; *pp; pp = &(*pp)->ino_next)
                if (*pp == n) {
                        *pp = n->ino_next;
                        break;
                }
        for (pp = &f->by_host[host_hash(n->sid, n->dev, n->host_ino)]; *pp; pp = &(*pp)->host_next)
                if (*pp == n) {
                        *pp = n->host_next;
                        break;
                }
        if (n->fd >= 0)
                close(n->fd);
        free(n->name);
        free(n);
}

/* The node of the inode fd refers to, found as name in directory parent
 * (fd is taken: kept in a new directory node or closed), its lookup count
 * raised by one.  NULL when out of memory. */
static struct fnode *node_get(struct files *f, uint64_t sid, int fd, const struct stat *st, fuse_ino_t parent,
                              const char *name) {
        struct fnode *n = node_by_host(f, sid, st->st_dev, st->st_ino);
        char *copy = S_ISDIR(st->st_mode) ? NULL : strdup(name);
        unsigned h;

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
        *n = (struct fnode){.ino = FILES_INO_BIT | ++f->next_serial, .sid = sid, .dev = st->st_dev,
                            .host_ino = st->st_ino, .fd = fd, .parent = parent, .name = copy, .nlookup = 1};
        h = hash64(n->ino);
        n->ino_next = f->by_ino[h];
        f->by_ino[h] = n;
        h = host_hash(sid, st->st_dev, st->st_ino);
        n->host_next = f->by_host[h];
        f->by_host[h] = n;
        return n;
}

struct files *files_new(struct sessions *t, uid_t uid, gid_t gid, uint64_t stride, uint64_t root_kind) {
        struct files *f = calloc(1, sizeof(*f));

        if (!f)
                return NULL;
        *f = (struct files){.sessions = t, .uid = uid, .gid = gid, .stride = stride, .root_kind = root_kind};
        return f;
}

void files_free(struct files *f) {
        if (!f)
                return;
        for (unsigned i = 0; i < BUCKETS; i++)
                while (f->by_ino[i])
                        node_free(f, f->by_ino[i]);
        free(f);
}

void files_session_closed(struct files *f, uint64_t sid) {
        for (unsigned i = 0; i < BUCKETS; i++)
                for (struct fnode *n = f->by_ino[i], *next; n; n = next) {
                        next = n->ino_next;
                        if (n->sid == sid)
                                node_free(f, n);
                }
}

/* ---- resolving inodes ------------------------------------------------------- */

static struct session *root_session(struct files *f, fuse_ino_t ino) {
        if ((ino >> 60) || ino < f->stride || ino % f->stride != f->root_kind)
                return NULL;
        return sessions_find_id(f->sessions, ino / f->stride);
}

bool files_owns(struct files *f, fuse_ino_t ino) {
        if (ino & FILES_INO_BIT)
                return !(ino >> 62);
        return root_session(f, ino) != NULL;
}

static int resolve_depth(struct files *f, fuse_ino_t ino, struct session **s, int *fd, struct fnode **node,
                         int depth);

/* An O_PATH descriptor of a non-directory node, found again as its name in
 * its parent and checked to be the same inode.  -ESTALE when the name now
 * holds something else (the kernel then looks the path up again). */
static int node_reopen(struct files *f, struct fnode *n, int depth) {
        _cleanup_close_ int pfd = -1;
        struct session *ps;
        struct fnode *pn;
        struct stat st;
        int fd, e;

        if (depth > 64)
                return -ELOOP;
        if ((e = resolve_depth(f, n->parent, &ps, &pfd, &pn, depth + 1)) < 0)
                return e == -ENOENT ? -ESTALE : e;
        fd = workspace_openat(pfd, n->name, O_PATH, 0);
        if (fd < 0)
                return fd == -ENOENT ? -ESTALE : fd;
        if (fstat(fd, &st) < 0 || st.st_ino != n->host_ino || st.st_dev != n->dev) {
                close(fd);
                return -ESTALE;
        }
        return fd;
}

static int resolve_depth(struct files *f, fuse_ino_t ino, struct session **s, int *fd, struct fnode **node,
                         int depth) {
        struct fnode *n = NULL;
        int r;

        if (ino & FILES_INO_BIT) {
                n = node_by_ino(f, ino);
                if (!n || !(*s = sessions_find_id(f->sessions, n->sid)))
                        return -ENOENT;
                r = n->fd >= 0 ? fcntl(n->fd, F_DUPFD_CLOEXEC, 3) : node_reopen(f, n, depth);
        } else {
                if (!(*s = root_session(f, ino)))
                        return -ENOENT;
                r = fcntl(workspace_root_fd(session_workspace(*s)), F_DUPFD_CLOEXEC, 3);
        }
        if (r < 0)
                return r == -1 ? -errno : r;
        *fd = r;
        *node = n;
        return 0;
}

/* The session and an O_PATH descriptor of ino's host inode: 0 with *s and
 * *fd (the caller's to close), *node NULL for files/ itself; or -errno. */
static int resolve(struct files *f, fuse_ino_t ino, struct session **s, int *fd, struct fnode **node) {
        return resolve_depth(f, ino, s, fd, node, 0);
}

/* The path that reopens fd's own inode.  Only used for inodes known not to
 * be symbolic links: the magic link then lands on the inode itself and
 * nothing further is followed. */
static void proc_path(int fd, char *buf, size_t size) { snprintf(buf, size, "/proc/self/fd/%d", fd); }

static int stat_fd(int fd, struct stat *st) {
        return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

/* The workspace's name for a name as files/ shows it (common/escape.h):
 * 0 with raw (NAME_MAX + 1 bytes), -EINVAL when shown is not how any name is
 * shown (a host-side name with a control character, or one that would be
 * ambiguous, such as "\x41" for "A") or is no valid component, or
 * -ENAMETOOLONG. */
static int name_from_shown(const char *shown, char *raw) {
        int e = name_take(shown, raw, NAME_MAX + 1);

        if (e < 0)
                return e;
        return workspace_name_valid(raw) ? 0 : -EINVAL;
}

/* The attributes the kernel sees: the host's, with our inode number and the
 * daemon's uid/gid (the workspace's files belong to it anyway). */
static void attr_of(struct files *f, fuse_ino_t ino, const struct stat *host, struct stat *st) {
        *st = *host;
        st->st_ino = ino;
        st->st_uid = f->uid;
        st->st_gid = f->gid;
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

/* Reply with n's entry; the lookup count was raised by node_get(). */
static void reply_node(struct files *f, fuse_req_t req, struct fnode *n, const struct stat *host) {
        struct fuse_entry_param e = {.ino = n->ino};

        /* The sandboxed code changes the tree behind the kernel's back:
         * nothing is cached, every path walk asks again. */
        attr_of(f, n->ino, host, &e.attr);
        e.attr_timeout = 0;
        e.entry_timeout = 0;
        if (fuse_reply_entry(req, &e) != 0 && --n->nlookup == 0)
                node_free(f, n);
}

/* Take fd (an O_PATH descriptor beneath a workspace) into a node and reply
 * with its entry.  Valid replies: entry, err. */
static void reply_new_entry(struct files *f, fuse_req_t req, struct session *s, int fd, fuse_ino_t parent,
                            const char *name) {
        struct stat st;
        struct fnode *n;
        int e = stat_fd(fd, &st);

        if (e < 0) {
                close(fd);
                fuse_reply_err(req, -e);
                return;
        }
        n = node_get(f, session_id(s), fd, &st, parent, name);
        if (!n) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        reply_node(f, req, n, &st);
}

/* ---- operations --------------------------------------------------------------- */

/* Valid replies: entry, err. */
void files_lookup(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct session *s;
        struct fnode *pn;
        char raw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1;
        int fd, e;

        if ((e = resolve(f, parent, &s, &pfd, &pn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* A name that is not how files/ shows any name names nothing. */
        if ((e = name_from_shown(name, raw)) < 0) {
                fuse_reply_err(req, e == -ENAMETOOLONG ? ENAMETOOLONG : ENOENT);
                return;
        }
        /* O_PATH|O_NOFOLLOW: a symbolic link is looked up as itself. */
        fd = workspace_openat(pfd, raw, O_PATH, 0);
        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        reply_new_entry(f, req, s, fd, parent, raw);
}

void files_forget(struct files *f, fuse_ino_t ino, uint64_t nlookup) {
        struct fnode *n = node_by_ino(f, ino);

        if (!n)
                return; /* its session closed: already gone */
        n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
        if (n->nlookup == 0)
                node_free(f, n);
}

/* Valid replies: attr, err. */
void files_getattr(struct files *f, fuse_req_t req, fuse_ino_t ino) {
        struct session *s;
        struct fnode *n;
        struct stat host, st;
        _cleanup_close_ int fd = -1;
        int e;

        if ((e = resolve(f, ino, &s, &fd, &n)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        e = stat_fd(fd, &host);
        if (e < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        attr_of(f, ino, &host, &st);
        fuse_reply_attr(req, &st, 0);
}

/* chmod (permission bits only), truncate, times; never owners.  Valid
 * replies: attr, err. */
void files_setattr(struct files *f, fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                   struct fuse_file_info *fi) {
        struct fhandle *h = fi ? (struct fhandle *)(uintptr_t)fi->fh : NULL;
        struct session *s;
        struct fnode *n;
        struct stat host, st;
        char path[64];
        _cleanup_close_ int fd = -1;
        int e;

        if ((e = resolve(f, ino, &s, &fd, &n)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if ((e = stat_fd(fd, &host)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        proc_path(fd, path, sizeof(path));
        if (to_set & FUSE_SET_ATTR_MODE) {
                if (S_ISLNK(host.st_mode)) {
                        fuse_reply_err(req, EOPNOTSUPP);
                        return;
                }
                /* rwx for user, group, other; no set-id or sticky bits. */
                if (fchmodat(AT_FDCWD, path, attr->st_mode & 0777, 0) < 0) {
                        fuse_reply_err(req, errno);
                        return;
                }
        }
        if (to_set & FUSE_SET_ATTR_SIZE) {
                _cleanup_close_ int wfd = -1;
                int tfd;

                if (!S_ISREG(host.st_mode)) {
                        fuse_reply_err(req, S_ISDIR(host.st_mode) ? EISDIR : EINVAL);
                        return;
                }
                if (attr->st_size < 0) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                if ((e = workspace_charge(session_workspace(s), attr->st_size - host.st_size)) < 0) {
                        fuse_reply_err(req, -e);
                        return;
                }
                if (h && fi && (fi->flags & O_ACCMODE) != O_RDONLY) {
                        tfd = h->fd;
                } else {
                        wfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                        if (wfd < 0) {
                                fuse_reply_err(req, errno);
                                return;
                        }
                        tfd = wfd;
                }
                if (ftruncate(tfd, attr->st_size) < 0) {
                        e = errno;
                        workspace_charge(session_workspace(s), host.st_size - attr->st_size); /* undo */
                        fuse_reply_err(req, e);
                        return;
                }
        }
        if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
                struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

                if (to_set & FUSE_SET_ATTR_ATIME_NOW)
                        times[0].tv_nsec = UTIME_NOW;
                else if (to_set & FUSE_SET_ATTR_ATIME)
                        times[0] = attr->st_atim;
                if (to_set & FUSE_SET_ATTR_MTIME_NOW)
                        times[1].tv_nsec = UTIME_NOW;
                else if (to_set & FUSE_SET_ATTR_MTIME)
                        times[1] = attr->st_mtim;
                /* On the descriptor's own inode, a link included: no path. */
                if (utimensat(fd, "", times, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
                        fuse_reply_err(req, errno);
                        return;
                }
        }
        if ((e = stat_fd(fd, &host)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        attr_of(f, ino, &host, &st);
        fuse_reply_attr(req, &st, 0);
}

/* Whether a link's text, followed by the *user's* kernel from where the link
 * is, stays inside the mount and leads strictly below the link's own
 * directory: relative, no ".." component, and at least one component that
 * is not ".".  Any other link would be resolved by the kernel on the host
 * side for whoever reads it: an absolute /etc/passwd or
 * ../../../home/user/.ssh/id_rsa leads out of the mount, and ".", "./" or
 * "./." lead back to the directory holding the link, a cycle that find -L,
 * du -L, grep -R and cp -rL (and R's list.files(recursive = TRUE)) walk
 * forever: three such links in one directory make 3^40 paths before
 * ELOOP.  So the daemon gives no text for them: readlink, and so every path
 * through them, fails with ELOOP.  Each link along a path is checked on its
 * own; docs/security.md shows why no cycle remains. */
static bool link_target_safe(const char *target) {
        const char *p = target;
        bool descends = false;

        if (!*target || *target == '/')
                return false;
        while (*p) {
                size_t n = strcspn(p, "/");
                if (n == 2 && p[0] == '.' && p[1] == '.')
                        return false;
                if (n > 0 && !(n == 1 && p[0] == '.'))
                        descends = true;
                p += n;
                p += strspn(p, "/");
        }
        return descends;
}

/* The link's own text when it is safe to follow (above), spelled with each
 * component as files/ shows names, so that the reader's kernel finds what
 * the link names; the daemon itself never follows a link.  Valid replies:
 * readlink, err. */
void files_readlink(struct files *f, fuse_req_t req, fuse_ino_t ino) {
        struct session *s;
        struct fnode *n = NULL;
        char buf[PATH_MAX];
        /* The kernel reads a link into one page (fuse_readlink_page). */
        char shown[4096];
        ssize_t len;
        _cleanup_close_ int fd = -1;
        int e;

        if ((e = resolve(f, ino, &s, &fd, &n)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (!n) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        len = readlinkat(fd, "", buf, sizeof(buf) - 1);
        if (len < 0) {
                fuse_reply_err(req, errno == ENOENT ? EINVAL : errno);
                return;
        }
        buf[len] = '\0';
        if (!link_target_safe(buf)) {
                fuse_reply_err(req, ELOOP);
                return;
        }
        if ((e = path_show(buf, shown, sizeof(shown))) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        fuse_reply_readlink(req, shown);
}

/* A new symbolic link made from the host side: name and target as files/
 * shows them, the target held to the rule readlink applies (relative, no
 * "..", not only "."), so that the link is one readlink will give: EPERM
 * otherwise.  Valid replies: entry, err. */
void files_symlink(struct files *f, fuse_req_t req, const char *target, fuse_ino_t parent, const char *name) {
        struct session *s;
        struct fnode *pn;
        char raw[NAME_MAX + 1], raw_target[PATH_MAX];
        _cleanup_close_ int pfd = -1;
        int fd, e;

        if ((e = resolve(f, parent, &s, &pfd, &pn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if ((e = name_from_shown(name, raw)) < 0 || (e = path_take(target, raw_target, sizeof(raw_target))) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (!link_target_safe(raw_target)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        if (symlinkat(raw_target, pfd, raw) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        fd = workspace_openat(pfd, raw, O_PATH, 0);
        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        reply_new_entry(f, req, s, fd, parent, raw);
}

/* A new name for a file (not a directory) of the same session's
 * workspace.  The link is made to the node's own inode, found again and
 * checked as for open (/proc/self/fd/N with AT_SYMLINK_FOLLOW lands on that
 * inode and follows nothing further; linkat's AT_EMPTY_PATH would need
 * CAP_DAC_READ_SEARCH).  Valid replies: entry, err. */
void files_link(struct files *f, fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
        struct session *s, *ns;
        struct fnode *n, *npn;
        struct stat st;
        char raw[NAME_MAX + 1], path[64];
        _cleanup_close_ int fd = -1, npfd = -1;
        int nfd, e;

        if ((e = resolve(f, ino, &s, &fd, &n)) < 0 || (e = resolve(f, newparent, &ns, &npfd, &npn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (s != ns) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        if ((e = name_from_shown(newname, raw)) < 0 || (e = stat_fd(fd, &st)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (!n || S_ISDIR(st.st_mode)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        proc_path(fd, path, sizeof(path));
        if (linkat(AT_FDCWD, path, npfd, raw, AT_SYMLINK_FOLLOW) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        nfd = workspace_openat(npfd, raw, O_PATH, 0);
        if (nfd < 0) {
                fuse_reply_err(req, -nfd);
                return;
        }
        reply_new_entry(f, req, s, nfd, newparent, raw);
}

/* Valid replies: entry, err. */
void files_mkdir(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
        struct session *s;
        struct fnode *pn;
        char raw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1;
        int fd, e;

        if ((e = resolve(f, parent, &s, &pfd, &pn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if ((e = name_from_shown(name, raw)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* rwx bits only: no set-gid or sticky directory from this side. */
        if (mkdirat(pfd, raw, mode & 0777) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        /* If the code swapped something else in meanwhile, this fails
         * rather than follows it. */
        fd = workspace_openat(pfd, raw, O_PATH | O_DIRECTORY, 0);
        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        /* The daemon made it: it belongs to the session's id, as if the
         * worker had, or the code could not write into it. */
        if ((e = workspace_own(session_workspace(s), fd)) < 0) {
                close(fd);
                fuse_reply_err(req, -e);
                return;
        }
        reply_new_entry(f, req, s, fd, parent, raw);
}

static void remove_entry(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, int flags) {
        struct session *s;
        struct fnode *pn;
        struct stat st;
        char raw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1;
        int e;

        if ((e = resolve(f, parent, &s, &pfd, &pn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if ((e = name_from_shown(name, raw)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* unlinkat never follows the final component: a link goes, not its
         * target. */
        if (fstatat(pfd, raw, &st, AT_SYMLINK_NOFOLLOW) < 0)
                st.st_nlink = 0;
        if (unlinkat(pfd, raw, flags) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        if (S_ISREG(st.st_mode) && st.st_nlink == 1)
                workspace_charge(session_workspace(s), -(long long)st.st_blocks * 512);
        fuse_reply_err(req, 0);
}

/* Valid replies: err. */
void files_unlink(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name) {
        remove_entry(f, req, parent, name, 0);
}

/* Valid replies: err. */
void files_rmdir(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name) {
        remove_entry(f, req, parent, name, AT_REMOVEDIR);
}

/* Valid replies: err. */
void files_rename(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags) {
        struct session *s, *ns;
        struct fnode *pn, *npn;
        char raw[NAME_MAX + 1], newraw[NAME_MAX + 1];
        _cleanup_close_ int pfd = -1, npfd = -1;
        int e;

        if ((e = resolve(f, parent, &s, &pfd, &pn)) < 0 || (e = resolve(f, newparent, &ns, &npfd, &npn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (s != ns) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        if ((e = name_from_shown(name, raw)) < 0 || (e = name_from_shown(newname, newraw)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (renameat2(pfd, raw, npfd, newraw, flags) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        fuse_reply_err(req, 0);
}

/* The flags a host-side open passes on: O_NONBLOCK always, so that a FIFO
 * the code planted can never block the daemon's loop (and is refused right
 * after, as is anything but a regular file). */
static int open_flags(int flags) {
        return (flags & (O_ACCMODE | O_TRUNC | O_APPEND)) | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
}

/* Hand out an open regular file as a handle. */
static int handle_new(struct session *s, int fd, struct fuse_file_info *fi) {
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

/* Valid replies: create, err. */
void files_create(struct files *f, fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *pn, *n;
        struct stat st;
        struct fuse_entry_param ep = {0};
        char path[64], raw[NAME_MAX + 1];
        _cleanup_close_ int fd = -1, pathfd = -1, pfd = -1;
        int e;

        if ((e = resolve(f, parent, &s, &pfd, &pn)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (!S_ISREG(mode)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        if ((e = name_from_shown(name, raw)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* rwx bits only (no set-id from this side either). */
        fd = workspace_openat(pfd, raw, open_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL), mode & 0777);
        if (fd < 0) {
                fuse_reply_err(req, -fd);
                return;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                fuse_reply_err(req, EACCES);
                return;
        }
        /* The session's, as if the worker had made it (a file copied into
         * files/ must be writable by the code). */
        if ((e = workspace_own(session_workspace(s), fd)) < 0 || (e = fstat(fd, &st) < 0 ? -errno : 0) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* The node's descriptor is this very inode, whatever the name
         * points to by now. */
        proc_path(fd, path, sizeof(path));
        pathfd = open(path, O_PATH | O_CLOEXEC);
        if (pathfd < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        if ((e = handle_new(s, fd, fi)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        fd = -1; /* the handle has it */
        n = node_get(f, session_id(s), TAKE_FD(pathfd), &st, parent, raw);
        if (!n) {
                struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;
                close(h->fd);
                free(h);
                fuse_reply_err(req, ENOMEM);
                return;
        }
        ep.ino = n->ino;
        attr_of(f, n->ino, &st, &ep.attr);
        if (fuse_reply_create(req, &ep, fi) != 0) {
                struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;
                close(h->fd);
                free(h);
                if (--n->nlookup == 0)
                        node_free(f, n);
        }
}

/* Valid replies: open, err. */
void files_open(struct files *f, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *n;
        struct stat st;
        char path[64];
        _cleanup_close_ int pathfd = -1;
        int fd, e;

        if ((e = resolve(f, ino, &s, &pathfd, &n)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        fd = pathfd;
        if ((e = stat_fd(fd, &st)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        if (!n || S_ISDIR(st.st_mode)) {
                fuse_reply_err(req, EISDIR);
                return;
        }
        if (S_ISLNK(st.st_mode)) {
                fuse_reply_err(req, ELOOP); /* never followed */
                return;
        }
        if (!S_ISREG(st.st_mode)) {
                fuse_reply_err(req, EACCES); /* FIFOs, sockets */
                return;
        }
        proc_path(fd, path, sizeof(path));
        fd = open(path, open_flags(fi->flags));
        if (fd < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        /* Refunded only once the truncating open succeeded. */
        if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY)
                workspace_charge(session_workspace(s), -(long long)st.st_blocks * 512);
        if ((e = handle_new(s, fd, fi)) < 0) {
                close(fd);
                fuse_reply_err(req, -e);
                return;
        }
        if (fuse_reply_open(req, fi) != 0) {
                free((struct fhandle *)(uintptr_t)fi->fh);
                close(fd);
        }
}

/* Straight from the file: libfuse reads (or splices) size bytes at off.
 * Valid replies: data, err. */
void files_read(struct files *f, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi) {
        struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;
        struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

        buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        buf.buf[0].fd = h->fd;
        buf.buf[0].pos = off;
        fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/* Valid replies: write, err. */
void files_write(struct files *f, fuse_req_t req, const char *data, size_t size, off_t off,
                 struct fuse_file_info *fi) {
        struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;
        struct session *s = sessions_find_id(f->sessions, h->sid);
        struct stat st;
        long long end, growth;
        ssize_t n;
        int e;

        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        /* none mode counts the growth here; strict: the tmpfs refuses. */
        if (fstat(h->fd, &st) < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        end = h->append ? st.st_size + (long long)size : off + (long long)size;
        growth = MAX(0, end - st.st_size);
        if ((e = workspace_charge(session_workspace(s), growth)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* The host descriptor has O_APPEND when the user's has: pwrite then
         * appends, whatever the kernel's idea of the size. */
        n = pwrite(h->fd, data, size, off);
        /* Refund what was charged for bytes that were not written. */
        if (n < (ssize_t)size)
                workspace_charge(session_workspace(s),
                                 -(growth - MAX(0, end - (long long)size + MAX(n, 0) - st.st_size)));
        if (n < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        fuse_reply_write(req, (size_t)n);
}

/* Valid replies: err. */
void files_release(struct files *f, fuse_req_t req, struct fuse_file_info *fi) {
        struct fhandle *h = (struct fhandle *)(uintptr_t)fi->fh;

        if (h) {
                close(h->fd);
                free(h);
        }
        fuse_reply_err(req, 0);
}

/* Valid replies: open, err. */
void files_opendir(struct files *f, fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct session *s;
        struct fnode *n;
        struct dhandle *h;
        struct stat st;
        _cleanup_close_ int fd = -1;
        int dfd, e;

        if ((e = resolve(f, ino, &s, &fd, &n)) < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        /* "." of a directory descriptor: the directory itself, no lookup. */
        dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0) {
                fuse_reply_err(req, errno);
                return;
        }
        h = calloc(1, sizeof(*h));
        if (!h || fstat(dfd, &st) < 0 || !(h->dir = fdopendir(dfd))) {
                int err = h ? errno : ENOMEM;
                free(h);
                close(dfd);
                fuse_reply_err(req, err ? err : EIO);
                return;
        }
        h->sid = session_id(s);
        h->dev = st.st_dev;
        fi->fh = (uint64_t)(uintptr_t)h;
        if (fuse_reply_open(req, fi) != 0) {
                closedir(h->dir);
                free(h);
        }
}

/* Offsets are the host directory's own (d_off).  Valid replies: buf, err. */
void files_readdir(struct files *f, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info *fi) {
        struct dhandle *h = (struct dhandle *)(uintptr_t)fi->fh;
        _cleanup_free_ char *buf = calloc(1, size);
        size_t len = 0;

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
                                if (errno && len == 0) {
                                        fuse_reply_err(req, errno);
                                        return;
                                }
                                break;
                        }
                }
                n = node_by_host(f, h->sid, h->dev, de->d_ino);
                st.st_ino = n ? n->ino : (UNKNOWN_INO_BIT | FILES_INO_BIT | (de->d_ino & (UNKNOWN_INO_BIT - 1)));
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

/* Valid replies: err. */
void files_releasedir(struct files *f, fuse_req_t req, struct fuse_file_info *fi) {
        struct dhandle *h = (struct dhandle *)(uintptr_t)fi->fh;

        if (h) {
                closedir(h->dir);
                free(h);
        }
        fuse_reply_err(req, 0);
}
