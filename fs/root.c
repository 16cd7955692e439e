/* The root of the tree, its files and sessions/ (fs/root.h). */
#include "root.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "handle.h"
#include "macros.h"
#include "options.h"
#include "parked.h"
#include "sessions/session.h"

static const struct {
        const char *name;
        enum root_node node;
        mode_t mode;
} root_entries[] = {
        {"README", ROOT_NODE_README, S_IFREG | 0444},     {"clone", ROOT_NODE_CLONE, S_IFREG | 0444},
        {"config", ROOT_NODE_CONFIG, S_IFREG | 0444},     {"stats", ROOT_NODE_STATS, S_IFREG | 0444},
        {"sessions", ROOT_NODE_SESSIONS, S_IFDIR | 0755}, {"tools", ROOT_NODE_TOOLS, S_IFDIR | 0755},
};

static const char readme_text[] =
        "securerfs: run R code in sandboxed, persistent sessions through files.\n"
        "\n"
        "  s=$(cat clone)                       # new session (or: mkdir sessions/NAME)\n"
        "  echo 'mean(1:100)' > sessions/$s/input   # runs when the file is closed\n"
        "  cat sessions/$s/output               # 50.5 (waits for the run to end)\n"
        "  cat sessions/$s/error                # the error, if the run failed\n"
        "  cat sessions/$s/console              # what the code printed\n"
        "  echo interrupt > sessions/$s/ctl     # or: restart\n"
        "  rmdir sessions/$s                    # close it\n"
        "\n"
        "Programs: write code to sessions/$s/eval and read the same descriptor:\n"
        "the run's result.json (keep it open: one round trip a run).\n"
        "Also per session: status, result.json, value.json, timeout, limits, log.\n"
        "Daemon-wide: config (defaults), stats (counters).\n"
        "Tools: tools/NAME.json (every session) or sessions/$s/tools/NAME.json define\n"
        "an R function NAME that runs a host program; refusals are in tools/.errors.\n";

/* ---- / ------------------------------------------------------------------- */

int root_lookup(const char *name, fuse_ino_t *out) {
        for (size_t i = 0; i < ARRAY_SIZE(root_entries); i++)
                if (strcmp(name, root_entries[i].name) == 0) {
                        *out = root_entries[i].node;
                        return 0;
                }
        return -ENOENT;
}

/* Offsets: an entry's is its place + 3 (after . and ..). */
void root_list(struct dirbuf *b, off_t off) {
        for (size_t i = (size_t)MAX(off - 2, 0); i < ARRAY_SIZE(root_entries); i++)
                if (!dirbuf_add(b, root_entries[i].name, root_entries[i].node, root_entries[i].mode, (off_t)i + 3))
                        return;
}

/* ---- README, clone, config, stats ------------------------------------------- */

/* config and stats, read with cat: stats quotes reasons a worker gave
 * (last_start_error), so DEL and C1 controls, which jansson writes raw,
 * become \u00HH as in the log (common/escape.h). */
static void text_set_json(struct text *t, json_t *j) {
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
        size_t n = s ? strlen(s) : 0;

        t->len = 0;
        if (s && text_needs_escape(s, n, ESCAPE_JSON | ESCAPE_KEEP_LINES)) {
                char *escaped = text_escape_dup(s, n, ESCAPE_JSON | ESCAPE_KEEP_LINES, &n);
                free(s);
                s = escaped;
        }
        if (s) {
                text_append(t, s, n);
                text_append(t, "\n", 1);
                free(s);
        }
        json_decref(j);
}

/* The content of README, config or stats now (clone's is its handle's). */
static void root_file_text(struct fs *fs, enum root_node node, struct text *t) {
        switch (node) {
        case ROOT_NODE_README: text_set(t, readme_text, sizeof(readme_text) - 1); break;
        case ROOT_NODE_CONFIG: text_set_json(t, options_to_json(fs->opt)); break;
        case ROOT_NODE_STATS: text_set_json(t, sessions_stats(fs->sessions)); break;
        default: t->len = 0; break;
        }
}

void root_file_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout) {
        struct text t = {0};

        root_file_text(fs, ref->root, &t);
        /* stats changes all the time: never cache its size. */
        *attr_timeout = ref->root == ROOT_NODE_STATS ? 0 : 1.0;
        fill_attr(fs, ref->ino, S_IFREG | 0444, t.len, st);
        text_free(&t);
}

void root_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi) {
        struct session *s;
        struct handle *h;
        int r = handle_open(fs, ref->ino, S_IFREG | 0444, fi, &h);

        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (ref->root == ROOT_NODE_CLONE) {
                /* Plan 9's clone file: opening it makes a session. */
                r = sessions_create(fs->sessions, NULL, &s);
                parked_open_new_session(req, fs, fi, h, s, r, false);
                return;
        }
        reply_open(req, fs, h, fi, NULL);
}

void root_file_read(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, size_t size,
                    off_t off) {
        if (off == 0 && ref->root != ROOT_NODE_CLONE)
                root_file_text(fs, ref->root, &h->text);
        reply_text(req, &h->text, size, off);
}

/* ---- sessions/ -------------------------------------------------------------- */

int sessions_dir_lookup(struct fs *fs, const char *name, fuse_ino_t *out) {
        struct session *s = sessions_find(fs->sessions, name);
        struct fs_session *st;
        int r;

        if (!s)
                return -ENOENT;
        /* The kernel learns the session's numbers from here on. */
        if ((r = fs_session_attach(fs, s, &st)) < 0)
                return r;
        *out = inode_of_session(st->id, SESSION_NODE_DIR);
        return 0;
}

void sessions_dir_list(struct fs *fs, struct dirbuf *b, off_t off) {
        for (struct session *s = sessions_next(fs->sessions, (uint64_t)MAX(off - 2, 0)); s;
             s = sessions_next(fs->sessions, session_id(s)))
                if (!dirbuf_add(b, session_name(s), inode_of_session(session_id(s), SESSION_NODE_DIR), S_IFDIR,
                                (off_t)session_id(s) + 2))
                        return;
}

void sessions_dir_mkdir(fuse_req_t req, struct fs *fs, const char *name) {
        struct fs_session *st;
        struct session *s;
        int r = sessions_create(fs->sessions, name, &s);

        if (r == 0 && (r = fs_session_attach(fs, s, &st)) < 0)
                session_close(s);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        if (session_create_pending(s)) {
                parked_create(st, req, NULL); /* answered when its worker is ready */
                return;
        }
        reply_entry(req, fs, inode_of_session(st->id, SESSION_NODE_DIR));
}

int sessions_dir_rmdir(struct fs *fs, const char *name) {
        struct session *s = sessions_find(fs->sessions, name);

        if (!s)
                return -ENOENT;
        session_forget_saved(s);
        session_close(s);
        return 0;
}
