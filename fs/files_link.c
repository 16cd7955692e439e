/* Links in files/: the rule for what a link may say, readlink, symlink and
 * link (fs/files.h, and docs/security.md on why no cycle remains). */
#include "files_node.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "escape.h"
#include "macros.h"
#include "sessions/session.h"
#include "sessions/workspace.h"

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
 * own. */
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
 * the link names; the daemon itself never follows a link. */
void files_readlink(struct files *f, fuse_req_t req, const struct inode_ref *ref) {
        struct session *s;
        struct fnode *n = NULL;
        char buf[PATH_MAX];
        /* The kernel reads a link into one page (fuse_readlink_page). */
        char shown[4096];
        ssize_t len;
        _cleanup_close_ int fd = -1;
        int r;

        if ((r = resolve(f, ref, &s, &fd, &n)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (!n) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        len = readlinkat(fd, "", buf, sizeof(buf) - 1);
        if (len < 0) {
                r = errno == ENOENT ? -EINVAL : -errno; /* ENOENT: not a link */
                fuse_reply_err(req, -r);
                return;
        }
        buf[len] = '\0';
        if (!link_target_safe(buf)) {
                fuse_reply_err(req, ELOOP);
                return;
        }
        if ((r = path_show(buf, shown, sizeof(shown))) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        fuse_reply_readlink(req, shown);
}

/* Name and target as files/ shows them, the target held to the rule
 * readlink applies (relative, no "..", not only "."), so that the link is
 * one readlink will give. */
void files_symlink(struct files *f, fuse_req_t req, const char *target, const struct inode_ref *parent,
                   const char *name) {
        struct session *s;
        char raw[NAME_MAX + 1], raw_target[PATH_MAX];
        _cleanup_close_ int pfd = -1;
        int r;

        if ((r = resolve_name(f, parent, name, &s, &pfd, raw)) < 0 ||
            (r = path_take(target, raw_target, sizeof(raw_target))) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (!link_target_safe(raw_target)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        if (symlinkat(raw_target, pfd, raw) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        workspace_touch(session_workspace(s));
        reply_entry_at(f, req, s, pfd, parent->ino, raw);
}

/* A new name for a file (not a directory) of the same session's
 * workspace.  The link is made to the node's own inode, found again and
 * checked as for open (/proc/self/fd/N with AT_SYMLINK_FOLLOW lands on that
 * inode and follows nothing further; linkat's AT_EMPTY_PATH would need
 * CAP_DAC_READ_SEARCH). */
void files_link(struct files *f, fuse_req_t req, const struct inode_ref *ref, const struct inode_ref *newparent,
                const char *newname) {
        struct session *s, *ns;
        struct fnode *n;
        struct stat st;
        char raw[NAME_MAX + 1], path[64];
        _cleanup_close_ int fd = -1, npfd = -1;
        int r;

        if ((r = resolve(f, ref, &s, &fd, &n)) < 0 || (r = resolve_name(f, newparent, newname, &ns, &npfd, raw)) < 0 ||
            (r = s != ns ? -EXDEV : 0) < 0 || (r = stat_fd(fd, &st)) < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (!n || S_ISDIR(st.st_mode)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        proc_path(fd, path, sizeof(path));
        if (linkat(AT_FDCWD, path, npfd, raw, AT_SYMLINK_FOLLOW) < 0) {
                r = -errno;
                fuse_reply_err(req, -r);
                return;
        }
        workspace_touch(session_workspace(s));
        reply_entry_at(f, req, s, npfd, newparent->ino, raw);
}
