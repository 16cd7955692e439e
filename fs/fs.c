#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include "fs.h"
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "log.h"
#include "loop.h"
#include "macros.h"
#include "options.h"
#include "sessions/session.h"
#include "sessions/tools.h"

/* Inode numbers.  The fixed nodes are 1..N_LAST (below SF_STRIDE); a
 * session's nodes are id * SF_STRIDE + kind, where id is the session's
 * never-reused number, so a stale inode number can never name another
 * session's file; a tool file (tools/NAME.json, sessions/N/tools/NAME.json)
 * is TOOL_INO_BIT | its entry's never-reused number (sessions/tools.h),
 * stable while the file exists (a rename keeps it, as on a disk).  There is
 * no per-inode state for these: lookup counts need no bookkeeping.  Below
 * sessions/N/files/ (fs/files.h) inodes are FILES_INO_BIT | a serial, one
 * per host inode with lookup counts kept and forget honoured. */
enum node {
        N_ROOT = 1,
        N_README,
        N_CLONE,
        N_CONFIG,
        N_STATS,
        N_SESSIONS,
        N_TOOLS,
        N_TOOLS_ERRORS, /* tools/.errors */
        N_LAST = N_TOOLS_ERRORS
};
#define TOOL_INO_BIT (1ULL << 62)
/* The kind of an open handle on a tool file (beyond enum node and sfile). */
#define K_TOOL 1000

enum sfile {
        SF_DIR = 0,
        SF_INPUT,
        SF_OUTPUT,
        SF_ERROR,
        SF_CONSOLE,
        SF_STATUS,
        SF_RESULT,
        SF_VALUE,
        SF_CTL,
        SF_TIMEOUT,
        SF_LIMITS,
        SF_LOG,
        SF_TOOLS,        /* sessions/N/tools/ */
        SF_FILES,        /* sessions/N/files/: the workspace (fs/files.h) */
        SF_TOOLS_ERRORS, /* sessions/N/tools/.errors (not in sessions/N/) */
        SF_COUNT
};
#define SF_STRIDE 16

static const struct {
        const char *name;
        mode_t mode;
} sfiles[SF_COUNT] = {
        [SF_DIR] = {"", S_IFDIR | 0755},         [SF_INPUT] = {"input", S_IFREG | 0200},
        [SF_OUTPUT] = {"output", S_IFREG | 0444}, [SF_ERROR] = {"error", S_IFREG | 0444},
        [SF_CONSOLE] = {"console", S_IFREG | 0444}, [SF_STATUS] = {"status", S_IFREG | 0444},
        [SF_RESULT] = {"result.json", S_IFREG | 0444}, [SF_VALUE] = {"value.json", S_IFREG | 0444},
        [SF_CTL] = {"ctl", S_IFREG | 0200},       [SF_TIMEOUT] = {"timeout", S_IFREG | 0644},
        [SF_LIMITS] = {"limits", S_IFREG | 0644}, [SF_LOG] = {"log", S_IFREG | 0444},
        [SF_TOOLS] = {"tools", S_IFDIR | 0755},   [SF_TOOLS_ERRORS] = {".errors", S_IFREG | 0444},
        [SF_FILES] = {"files", S_IFDIR | 0755},
};

static const struct {
        const char *name;
        enum node ino;
        mode_t mode;
} root_entries[] = {
        {"README", N_README, S_IFREG | 0444}, {"clone", N_CLONE, S_IFREG | 0444},
        {"config", N_CONFIG, S_IFREG | 0444}, {"stats", N_STATS, S_IFREG | 0444},
        {"sessions", N_SESSIONS, S_IFDIR | 0755}, {"tools", N_TOOLS, S_IFDIR | 0755},
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
        "Also per session: status, result.json, value.json, timeout, limits, log.\n"
        "Daemon-wide: config (defaults), stats (counters).\n"
        "Tools: tools/NAME.json (every session) or sessions/$s/tools/NAME.json define\n"
        "an R function NAME that runs a host program; refusals are in tools/.errors.\n";

struct fs;

/* A read of a result file waiting for the run to end. */
struct parked {
        fuse_req_t req;
        struct handle *h;
        size_t size;
        off_t off;
        bool registering; /* inside fuse_req_interrupt_func() */
        bool interrupted;
        struct session_fs *owner;
        struct parked *prev, *next;
};

/* What the fs layer keeps per session (session->fs_data). */
struct session_fs {
        struct parked *parked;
        struct handle *pollers; /* handles with a poll handle to notify */
        fuse_req_t create_req;  /* mkdir or clone open waiting for the first worker */
        struct fuse_file_info create_fi;
        bool create_is_open;
};

/* An open file. */
struct handle {
        uint64_t ino;
        uint64_t sid;           /* session id, 0 for root nodes */
        int kind;               /* enum sfile, or enum node for root nodes */
        int flags;
        struct result *snap;    /* result files: what offsets > 0 read */
        struct text text;       /* text files: snapshot taken at offset 0 */
        struct text buf;        /* writable files: what was written */
        bool dirty;             /* input: a run starts at flush */
        bool failed;            /* input: over max_code_bytes */
        bool applied;           /* limits: the buffer took effect */
        uint64_t tool_id;       /* K_TOOL: the entry (sessions/tools.h) */
        uint64_t clone_sid;     /* clone: the session this open made, until the open is answered */
        struct fuse_pollhandle *ph;
        struct handle *poll_next;
        struct fs *fs;          /* on its list of open handles */
        struct handle *open_prev, *open_next;
};

struct fs {
        struct loop *loop;
        const struct options *opt;
        struct sessions *sessions;
        struct files *files; /* sessions/N/files/ */
        struct fuse_session *se;
        struct fuse_buf buf;
        uid_t uid;
        gid_t gid;
        struct timespec mount_time;
        bool mounted;
        /* Every handle not yet released: the kernel may unmount with
         * RELEASEs still to come (they are asynchronous to close()), and
         * what those handles hold is freed at the end instead. */
        struct handle *open_handles;
};

static struct fs *req_fs(fuse_req_t req) { return fuse_req_userdata(req); }

static uint64_t session_ino(const struct session *s, int kind) { return s->id * SF_STRIDE + (uint64_t)kind; }

static bool is_result_file(int kind) {
        return kind == SF_OUTPUT || kind == SF_ERROR || kind == SF_RESULT || kind == SF_VALUE;
}

/* Resolve a session inode: 0 with *s and *kind, or -ENOENT. */
static int decode_ino(struct fs *fs, fuse_ino_t ino, struct session **s, int *kind) {
        if (ino <= N_LAST || (ino & TOOL_INO_BIT))
                return -ENOENT;
        *kind = (int)(ino % SF_STRIDE);
        if (*kind >= SF_COUNT)
                return -ENOENT;
        *s = sessions_find_id(fs->sessions, ino / SF_STRIDE);
        return *s ? 0 : -ENOENT;
}

static struct session_fs *sfs(struct session *s) { return s->fs_data; }

static struct fs *session_events_fs(struct session *s) { return session_events_data(s); }

static struct tools *fs_tools(struct fs *fs) { return sessions_tools(fs->sessions); }

/* The scope a tools/ directory stands for, or NULL when ino is not one. */
static struct tool_scope *dir_scope(struct fs *fs, fuse_ino_t ino) {
        struct session *s;
        int kind;

        if (ino == N_TOOLS)
                return tools_global(fs_tools(fs));
        if (decode_ino(fs, ino, &s, &kind) == 0 && kind == SF_TOOLS)
                return tools_session_scope(fs_tools(fs), s);
        return NULL;
}

struct handle;
struct dirbuf;
static void tools_dir_lookup(fuse_req_t req, struct fs *fs, struct tool_scope *sc, const char *name);
static void reply_open(fuse_req_t req, struct fs *fs, struct handle *h, struct fuse_file_info *fi,
                       const struct fuse_entry_param *ep);
static struct tool_entry *handle_entry(struct fs *fs, struct handle *h);
static void tools_dir_readdir(fuse_req_t req, struct fs *fs, struct tool_scope *sc, fuse_ino_t ino, struct dirbuf *b,
                              off_t off);
static void tool_open(fuse_req_t req, struct fs *fs, struct tool_entry *e, struct fuse_file_info *fi, bool created);
static void tool_setattr(fuse_req_t req, struct fs *fs, struct tool_entry *e, struct stat *attr, int to_set,
                         struct fuse_file_info *fi);
static void tool_read(fuse_req_t req, struct fs *fs, struct handle *h, size_t size, off_t off);
static void tool_write(fuse_req_t req, struct fs *fs, struct handle *h, const char *data, size_t size, off_t off);
static void tool_flush(fuse_req_t req, struct fs *fs, struct handle *h);

static fuse_ino_t errors_ino(const struct tool_scope *sc) {
        struct session *s = tool_scope_session(sc);
        return s ? session_ino(s, SF_TOOLS_ERRORS) : N_TOOLS_ERRORS;
}

/* The tool file an inode names (also one unlinked but still open). */
static struct tool_entry *tool_of_ino(struct fs *fs, fuse_ino_t ino) {
        return (ino & TOOL_INO_BIT) ? tools_entry_by_id(fs_tools(fs), ino & ~TOOL_INO_BIT) : NULL;
}

/* ---- content ------------------------------------------------------------ */


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

/* In the same plain decimal a write takes (no exponent), so that what is
 * read can be written back. */
static void format_timeout(const struct session *s, struct text *t) {
        char b[64];
        int n = snprintf(b, sizeof(b), "%.9f", s->timeout_s);

        while (n > 0 && b[n - 1] == '0')
                n--;
        if (n > 0 && b[n - 1] == '.')
                n--;
        b[n++] = '\n';
        text_set(t, b, (size_t)n);
}

static void format_limits(const struct session *s, struct text *t) {
        json_t *j = limits_to_json(&s->limits);
        char *str = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);

        t->len = 0;
        if (str) {
                text_append(t, str, strlen(str));
                text_append(t, "\n", 1);
                free(str);
        }
        json_decref(j);
}

/* Fill a text snapshot of a file that is generated (not a run result). */
static void generate_text(struct fs *fs, int kind, struct session *s, struct text *t) {
        if (!s) {
                switch (kind) {
                case N_README: text_set(t, readme_text, sizeof(readme_text) - 1); break;
                case N_CONFIG: text_set_json(t, options_to_json(fs->opt)); break;
                case N_STATS: text_set_json(t, sessions_stats(fs->sessions)); break;
                case N_TOOLS_ERRORS: {
                        const struct text *e = tool_scope_errors(tools_global(fs_tools(fs)));
                        text_set(t, e->data, e->len);
                        break;
                }
                default: break; /* clone: set at open */
                }
                return;
        }
        switch (kind) {
        case SF_STATUS: {
                const char *w = session_state_word(s);
                text_set(t, w, strlen(w));
                text_append(t, "\n", 1);
                break;
        }
        case SF_TIMEOUT: format_timeout(s, t); break;
        case SF_LIMITS: format_limits(s, t); break;
        case SF_LOG: text_set(t, s->log.data ? s->log.data : "", s->log.len); break;
        case SF_TOOLS_ERRORS: {
                struct tool_scope *sc = tools_session_scope(fs_tools(fs), s);
                const struct text *e = sc ? tool_scope_errors(sc) : NULL;
                text_set(t, e ? e->data : "", e ? e->len : 0);
                break;
        }
        default: t->len = 0; break;
        }
}

static const struct text *result_part(const struct result *r, int kind) {
        static const struct text empty = {(char *)"", 0, 0};

        if (!r)
                return &empty;
        switch (kind) {
        case SF_OUTPUT: return &r->output;
        case SF_ERROR: return &r->error;
        case SF_RESULT: return &r->result_json;
        case SF_VALUE: return &r->value_json;
        default: return &empty;
        }
}

/* The size stat(2) reports: the content a read at offset 0 would give now
 * (0 for a result file while a run is under way). */
static size_t current_size(struct fs *fs, struct session *s, int kind) {
        struct text t = {0};
        size_t n;

        if (is_result_file(kind))
                return session_busy(s) ? 0 : result_part(s->last, kind)->len;
        if (kind == SF_CONSOLE)
                return session_console(s)->len;
        if (kind == SF_LOG)
                return s->log.len;
        if (kind == SF_INPUT || kind == SF_CTL)
                return 0;
        generate_text(fs, kind, s, &t);
        n = t.len;
        text_free(&t);
        return n;
}

/* ---- attributes --------------------------------------------------------- */

static void fill_attr(struct fs *fs, fuse_ino_t ino, mode_t mode, size_t size, struct stat *st) {
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

/* 0 with *st and the attribute timeout, or -ENOENT. */
static int node_attr(struct fs *fs, fuse_ino_t ino, struct stat *st, double *attr_timeout) {
        struct session *s;
        int kind;

        *attr_timeout = 1.0;
        if (ino & TOOL_INO_BIT) {
                struct tool_entry *e = tool_of_ino(fs, ino);
                if (!e)
                        return -ENOENT;
                /* Rewritten through other handles: never cached. */
                *attr_timeout = 0;
                fill_attr(fs, ino, S_IFREG | 0644, tool_entry_text(e)->len, st);
                return 0;
        }
        if (ino == N_ROOT || ino == N_SESSIONS || ino == N_TOOLS) {
                fill_attr(fs, ino, S_IFDIR | 0755, 0, st);
                return 0;
        }
        if (ino == N_TOOLS_ERRORS) {
                *attr_timeout = 0;
                fill_attr(fs, ino, S_IFREG | 0444, tool_scope_errors(tools_global(fs_tools(fs)))->len, st);
                return 0;
        }
        for (size_t i = 0; i < ARRAY_SIZE(root_entries); i++)
                if (root_entries[i].ino == ino) {
                        size_t size = 0;
                        struct text t = {0};
                        if (ino != N_CLONE) {
                                generate_text(fs, (int)ino, NULL, &t);
                                size = t.len;
                                text_free(&t);
                        }
                        /* stats changes all the time: never cache its size. */
                        if (ino == N_STATS)
                                *attr_timeout = 0;
                        fill_attr(fs, ino, root_entries[i].mode, size, st);
                        return 0;
                }
        if (decode_ino(fs, ino, &s, &kind) < 0)
                return -ENOENT;
        if (kind == SF_DIR || kind == SF_TOOLS || kind == SF_FILES) {
                fill_attr(fs, ino, S_IFDIR | 0755, 0, st);
                return 0;
        }
        /* Sizes change with every run: attributes are not cached (direct_io
         * keeps the data out of the page cache too). */
        *attr_timeout = 0;
        fill_attr(fs, ino, sfiles[kind].mode, current_size(fs, s, kind), st);
        return 0;
}

static void reply_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino) {
        struct fuse_entry_param e = {.ino = ino, .entry_timeout = 1.0};

        if (node_attr(fs, ino, &e.attr, &e.attr_timeout) < 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        fuse_reply_entry(req, &e);
}

/* Valid replies: entry, err. */
static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);
        struct tool_scope *sc = dir_scope(fs, parent);
        struct session *s;
        int kind;

        if (sc) {
                tools_dir_lookup(req, fs, sc, name);
                return;
        }
        if (files_owns(fs->files, parent)) {
                files_lookup(fs->files, req, parent, name);
                return;
        }
        if (parent == N_ROOT) {
                for (size_t i = 0; i < ARRAY_SIZE(root_entries); i++)
                        if (strcmp(name, root_entries[i].name) == 0) {
                                reply_entry(req, fs, root_entries[i].ino);
                                return;
                        }
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (parent == N_SESSIONS) {
                s = sessions_find(fs->sessions, name);
                if (!s) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
                reply_entry(req, fs, session_ino(s, SF_DIR));
                return;
        }
        if (decode_ino(fs, parent, &s, &kind) < 0 || kind != SF_DIR) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        for (int k = 1; k < SF_COUNT; k++)
                if (k != SF_TOOLS_ERRORS && strcmp(name, sfiles[k].name) == 0) {
                        reply_entry(req, fs, session_ino(s, k));
                        return;
                }
        fuse_reply_err(req, ENOENT);
}

/* Only nodes below files/ have per-inode state (see the inode numbering
 * above).  Valid reply: none. */
static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
        if (ino & FILES_INO_BIT)
                files_forget(req_fs(req)->files, ino, nlookup);
        fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
        for (size_t i = 0; i < count; i++)
                if (forgets[i].ino & FILES_INO_BIT)
                        files_forget(req_fs(req)->files, forgets[i].ino, forgets[i].nlookup);
        fuse_reply_none(req);
}

/* Valid replies: readlink, err. */
static void fs_readlink(fuse_req_t req, fuse_ino_t ino) {
        struct fs *fs = req_fs(req);

        if (files_owns(fs->files, ino))
                files_readlink(fs->files, req, ino);
        else
                fuse_reply_err(req, EINVAL);
}

/* Valid replies: attr, err. */
static void fs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct stat st;
        double timeout;

        if (files_owns(req_fs(req)->files, ino)) {
                files_getattr(req_fs(req)->files, req, ino);
                return;
        }
        if (node_attr(req_fs(req), ino, &st, &timeout) < 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        fuse_reply_attr(req, &st, timeout);
}

/* Truncation of the writable files is accepted (their content lives in the
 * open handle), times are ignored so that touch works, anything else is
 * refused.  Valid replies: attr, err. */
static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct stat st;
        double timeout;

        if (files_owns(fs->files, ino)) {
                files_setattr(fs->files, req, ino, attr, to_set, fi);
                return;
        }
        if (node_attr(fs, ino, &st, &timeout) < 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if ((ino & TOOL_INO_BIT) && !(to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
                tool_setattr(req, fs, tool_of_ino(fs, ino), attr, to_set, fi);
                return;
        }
        if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
                fuse_reply_err(req, EPERM);
                return;
        }
        if ((to_set & FUSE_SET_ATTR_SIZE) && (!(st.st_mode & 0200) || S_ISDIR(st.st_mode))) {
                fuse_reply_err(req, EACCES);
                return;
        }
        fuse_reply_attr(req, &st, timeout);
}

/* ---- directories -------------------------------------------------------- */

struct dirbuf {
        char *p;
        size_t size, len;
};

/* Add one entry; false when the buffer is full. */
static bool dirbuf_add(fuse_req_t req, struct dirbuf *b, const char *name, fuse_ino_t ino, mode_t mode, off_t next) {
        struct stat st = {.st_ino = ino, .st_mode = mode};
        size_t n = fuse_add_direntry(req, b->p + b->len, b->size - b->len, name, &st, next);

        if (n > b->size - b->len)
                return false;
        b->len += n;
        return true;
}

/* Offsets: fixed entries count 1, 2, ...; in sessions/ an entry's offset is
 * its session id + 2 (after . and ..), so that a session closed between two
 * readdir calls does not shift the others.  Valid replies: buf, err. */
static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        _cleanup_free_ char *mem = malloc(size);
        struct dirbuf b = {mem, size, 0};
        struct session *s;
        int kind;

        if (!mem) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        if (fi->fh) { /* only files/ directories have a handle */
                files_readdir(fs->files, req, ino, size, off, fi);
                return;
        }
        if (off < 1 && !dirbuf_add(req, &b, ".", ino, S_IFDIR, 1))
                goto done;
        if (off < 2 && !dirbuf_add(req, &b, "..", N_ROOT, S_IFDIR, 2))
                goto done;
        if (dir_scope(fs, ino)) {
                tools_dir_readdir(req, fs, dir_scope(fs, ino), ino, &b, off);
        } else if (ino == N_ROOT) {
                for (size_t i = (size_t)MAX(off - 2, 0); i < ARRAY_SIZE(root_entries); i++)
                        if (!dirbuf_add(req, &b, root_entries[i].name, root_entries[i].ino, root_entries[i].mode,
                                        (off_t)i + 3))
                                break;
        } else if (ino == N_SESSIONS) {
                for (s = sessions_next(fs->sessions, (uint64_t)MAX(off - 2, 0)); s;
                     s = sessions_next(fs->sessions, s->id))
                        if (!dirbuf_add(req, &b, s->name, session_ino(s, SF_DIR), S_IFDIR, (off_t)s->id + 2))
                                break;
        } else if (decode_ino(fs, ino, &s, &kind) == 0 && kind == SF_DIR) {
                for (int k = (int)MAX(off - 2, 0) + 1; k < SF_COUNT; k++)
                        if (k != SF_TOOLS_ERRORS &&
                            !dirbuf_add(req, &b, sfiles[k].name, session_ino(s, k), sfiles[k].mode, (off_t)k + 2))
                                break;
        } else {
                fuse_reply_err(req, ENOTDIR);
                return;
        }
done:
        fuse_reply_buf(req, b.p, b.len);
}

/* Valid replies: open, err. */
static void fs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct session *s;
        int kind;

        if (files_owns(fs->files, ino)) {
                files_opendir(fs->files, req, ino, fi);
                return;
        }
        fi->fh = 0;
        if (ino == N_ROOT || ino == N_SESSIONS || dir_scope(fs, ino) ||
            (decode_ino(fs, ino, &s, &kind) == 0 && kind == SF_DIR))
                fuse_reply_open(req, fi);
        else
                fuse_reply_err(req, ENOTDIR);
}

/* Valid replies: err. */
static void fs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        if (fi->fh)
                files_releasedir(req_fs(req)->files, req, fi);
        else
                fuse_reply_err(req, 0);
}

static void session_fs_attach(struct session *s) {
        if (!s->fs_data)
                s->fs_data = calloc(1, sizeof(struct session_fs));
}

/* Valid replies: entry, err (now, or from the created event). */
static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
        struct fs *fs = req_fs(req);
        struct session *s;
        int e;

        if (files_owns(fs->files, parent)) {
                files_mkdir(fs->files, req, parent, name, mode);
                return;
        }
        if (parent != N_SESSIONS) {
                fuse_reply_err(req, EPERM);
                return;
        }
        e = sessions_create(fs->sessions, name, &s);
        if (e < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        session_fs_attach(s);
        if (!s->fs_data) {
                session_close(s);
                fuse_reply_err(req, ENOMEM);
                return;
        }
        if (s->state == SESSION_STARTING && s->creating) {
                sfs(s)->create_req = req; /* answered when its worker is ready */
                sfs(s)->create_is_open = false;
                return;
        }
        reply_entry(req, fs, session_ino(s, SF_DIR));
}

/* Valid replies: err. */
static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);
        struct session *s;

        if (files_owns(fs->files, parent)) {
                files_rmdir(fs->files, req, parent, name);
                return;
        }
        if (parent != N_SESSIONS) {
                fuse_reply_err(req, EPERM);
                return;
        }
        s = sessions_find(fs->sessions, name);
        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        session_close(s);
        fuse_reply_err(req, 0);
}

/* Nothing may be created or removed but sessions and tool files.  Valid
 * replies: err. */
static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
        fuse_reply_err(req, EPERM);
}

/* Links only in files/ (fs/files.h has their rules); elsewhere the tree is
 * the daemon's.  Valid replies: entry, err. */
static void fs_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name) {
        struct fs *fs = req_fs(req);

        if (files_owns(fs->files, parent))
                files_symlink(fs->files, req, target, parent, name);
        else
                fuse_reply_err(req, EPERM);
}

/* Valid replies: entry, err. */
static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
        struct fs *fs = req_fs(req);
        bool from = files_owns(fs->files, ino), to = files_owns(fs->files, newparent);

        if (from && to)
                files_link(fs->files, req, ino, newparent, newname);
        else
                fuse_reply_err(req, from || to ? EXDEV : EPERM);
}

/* Only regular files in a tools/ directory.  Valid replies: create, err. */
static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct tool_scope *sc = dir_scope(fs, parent);
        struct tool_entry *e = NULL;
        int r;

        if (files_owns(fs->files, parent)) {
                files_create(fs->files, req, parent, name, mode, fi);
                return;
        }
        if (!sc || !S_ISREG(mode) || strcmp(name, ".errors") == 0) {
                fuse_reply_err(req, sc && S_ISREG(mode) ? EEXIST : EPERM);
                return;
        }
        r = tools_entry_create(sc, name, &e);
        if (r == -EEXIST) {
                if (fi->flags & O_EXCL) {
                        fuse_reply_err(req, EEXIST);
                        return;
                }
                e = tools_entry_lookup(sc, name);
                r = 0;
        }
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        tool_open(req, fs, e, fi, true);
}

/* Valid replies: err. */
static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
        struct tool_scope *sc = dir_scope(req_fs(req), parent);

        if (files_owns(req_fs(req)->files, parent)) {
                files_unlink(req_fs(req)->files, req, parent, name);
                return;
        }
        if (!sc || strcmp(name, ".errors") == 0) {
                fuse_reply_err(req, EPERM);
                return;
        }
        fuse_reply_err(req, -tools_entry_unlink(sc, name));
}

/* Within one tools/ directory only (mv falls back to copy and unlink on
 * EXDEV).  Valid replies: err. */
static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
                      unsigned int flags) {
        struct fs *fs = req_fs(req);
        struct tool_scope *from = dir_scope(fs, parent), *to = dir_scope(fs, newparent);
        bool files_from = files_owns(fs->files, parent), files_to = files_owns(fs->files, newparent);

        if (files_from || files_to) {
                if (files_from && files_to)
                        files_rename(fs->files, req, parent, name, newparent, newname, flags);
                else
                        fuse_reply_err(req, EXDEV);
                return;
        }
        if (!from && !to) {
                fuse_reply_err(req, EPERM);
                return;
        }
        if (from != to) {
                fuse_reply_err(req, EXDEV);
                return;
        }
        if ((flags & RENAME_EXCHANGE) || strcmp(name, ".errors") == 0 || strcmp(newname, ".errors") == 0) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        fuse_reply_err(req, -tools_entry_rename(from, name, newname, flags));
}

/* ---- files -------------------------------------------------------------- */

/* A new handle, on fs's list of open ones; NULL when out of memory. */
static struct handle *handle_new(struct fs *fs) {
        struct handle *h = calloc(1, sizeof(*h));

        if (!h)
                return NULL;
        h->fs = fs;
        h->open_next = fs->open_handles;
        if (fs->open_handles)
                fs->open_handles->open_prev = h;
        fs->open_handles = h;
        return h;
}

static void handle_free(struct handle *h) {
        if (!h)
                return;
        if (h->open_prev)
                h->open_prev->open_next = h->open_next;
        else
                h->fs->open_handles = h->open_next;
        if (h->open_next)
                h->open_next->open_prev = h->open_prev;
        result_unref(h->snap);
        text_free(&h->text);
        text_free(&h->buf);
        if (h->ph)
                fuse_pollhandle_destroy(h->ph);
        free(h);
}

static void pollers_remove(struct session_fs *f, struct handle *h) {
        for (struct handle **pp = &f->pollers; *pp; pp = &(*pp)->poll_next)
                if (*pp == h) {
                        *pp = h->poll_next;
                        h->poll_next = NULL;
                        return;
                }
}

/* Valid replies: open, err. */
static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        int acc = fi->flags & O_ACCMODE, kind = 0, e;
        bool wants_write = acc != O_RDONLY, wants_read = acc != O_WRONLY;
        struct session *s = NULL;
        struct handle *h;
        mode_t mode;

        if (files_owns(fs->files, ino)) {
                files_open(fs->files, req, ino, fi);
                return;
        }
        if (ino & TOOL_INO_BIT) {
                struct tool_entry *te = tool_of_ino(fs, ino);
                if (!te || tool_entry_unlinked(te)) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
                tool_open(req, fs, te, fi, false);
                return;
        }
        if (ino == N_ROOT || ino == N_SESSIONS || ino == N_TOOLS) {
                fuse_reply_err(req, EISDIR);
                return;
        }
        if (ino <= N_LAST) {
                kind = (int)ino;
                mode = 0444;
        } else {
                if (decode_ino(fs, ino, &s, &kind) < 0) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
                if (kind == SF_DIR || kind == SF_TOOLS) {
                        fuse_reply_err(req, EISDIR);
                        return;
                }
                mode = sfiles[kind].mode;
        }
        if ((wants_write && !(mode & 0200)) || (wants_read && !(mode & 0400))) {
                fuse_reply_err(req, EACCES);
                return;
        }
        if (kind == SF_INPUT && s && (session_busy(s) || s->input_writer)) {
                /* One run at a time, one writer at a time. */
                fuse_reply_err(req, EBUSY);
                return;
        }
        h = handle_new(fs);
        if (!h) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        h->ino = ino;
        h->sid = s ? s->id : 0;
        h->kind = kind;
        h->flags = fi->flags;
        fi->fh = (uint64_t)(uintptr_t)h;
        /* The content changes under the kernel's feet: no page cache. */
        fi->direct_io = 1;
        fi->keep_cache = 0;
        /* Read-only opens need no FLUSH round trip on close. */
        fi->noflush = !wants_write;
        if (kind == SF_INPUT) {
                /* Only a write makes a run: shells dup the descriptor and
                 * close the original before writing, which flushes an
                 * empty handle. */
                s->input_writer = h;
        }
        if (kind == N_CLONE && !s) {
                /* Plan 9's clone file: opening it makes a session. */
                e = sessions_create(fs->sessions, NULL, &s);
                if (e == 0) {
                        session_fs_attach(s);
                        if (!s->fs_data) {
                                session_close(s);
                                e = -ENOMEM;
                        }
                }
                if (e < 0) {
                        handle_free(h);
                        fuse_reply_err(req, -e);
                        return;
                }
                text_set(&h->text, s->name, strlen(s->name));
                text_append(&h->text, "\n", 1);
                if (s->state == SESSION_STARTING && s->creating) {
                        sfs(s)->create_req = req;
                        sfs(s)->create_fi = *fi;
                        sfs(s)->create_is_open = true;
                        return;
                }
                h->clone_sid = s->id;
        }
        reply_open(req, fs, h, fi, NULL);
}

static void reply_from(fuse_req_t req, const struct text *t, size_t size, off_t off) {
        if ((size_t)off >= t->len)
                fuse_reply_buf(req, NULL, 0);
        else
                fuse_reply_buf(req, t->data + off, MIN(size, t->len - (size_t)off));
}

static void parked_unlink(struct parked *p) {
        if (p->prev)
                p->prev->next = p->next;
        else if (p->owner)
                p->owner->parked = p->next;
        if (p->next)
                p->next->prev = p->prev;
        p->prev = p->next = NULL;
}

static void on_parked_interrupt(fuse_req_t req, void *data) {
        struct parked *p = data;

        if (p->registering) {
                /* Called from inside fuse_req_interrupt_func(): replying here
                 * would free the request under libfuse's lock; the caller
                 * replies instead. */
                p->interrupted = true;
                return;
        }
        parked_unlink(p);
        fuse_reply_err(p->req, EINTR);
        free(p);
}

/* Valid replies: buf, err (now, or when the run ends). */
static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        struct session *s = NULL;
        struct parked *p;

        if (ino & FILES_INO_BIT) {
                files_read(fs->files, req, size, off, fi);
                return;
        }
        if (h->kind == K_TOOL) {
                tool_read(req, fs, h, size, off);
                return;
        }
        if (h->sid) {
                s = sessions_find_id(fs->sessions, h->sid);
                if (!s) {
                        fuse_reply_err(req, ENOENT);
                        return;
                }
        }
        if (s && is_result_file(h->kind)) {
                if (off == 0 || !h->snap) {
                        if (session_busy(s)) {
                                if (h->flags & O_NONBLOCK) {
                                        fuse_reply_err(req, EAGAIN);
                                        return;
                                }
                                p = calloc(1, sizeof(*p));
                                if (!p) {
                                        fuse_reply_err(req, ENOMEM);
                                        return;
                                }
                                *p = (struct parked){.req = req, .h = h, .size = size, .off = off,
                                                     .owner = sfs(s), .registering = true};
                                p->next = sfs(s)->parked;
                                if (p->next)
                                        p->next->prev = p;
                                sfs(s)->parked = p;
                                fuse_req_interrupt_func(req, on_parked_interrupt, p);
                                p->registering = false;
                                if (p->interrupted) {
                                        parked_unlink(p);
                                        fuse_reply_err(req, EINTR);
                                        free(p);
                                }
                                return;
                        }
                        result_unref(h->snap);
                        h->snap = result_ref(s->last);
                }
                reply_from(req, result_part(h->snap, h->kind), size, off);
                return;
        }
        if (s && h->kind == SF_CONSOLE) {
                reply_from(req, session_console(s), size, off);
                return;
        }
        if (off == 0 && h->kind != N_CLONE)
                generate_text(fs, h->kind, s, &h->text);
        reply_from(req, &h->text, size, off);
}

/* Place data at off in a write buffer, refusing growth past max. */
static int buffer_write(struct text *t, const char *data, size_t size, off_t off, size_t max) {
        static const char zeros[4096];
        size_t overlap;

        if (off < 0 || (size_t)off + size > max)
                return -EFBIG;
        /* A hole before off reads as zeros, as in a file. */
        while (t->len < (size_t)off)
                if (text_append(t, zeros, MIN((size_t)off - t->len, sizeof(zeros))) < 0)
                        return -ENOMEM;
        overlap = MIN(size, t->len - (size_t)off);
        if (overlap)
                memcpy(t->data + off, data, overlap);
        return text_append(t, data + overlap, size - overlap);
}

/* Valid replies: write, err. */
static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
                     struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        struct session *s;
        char err[256];
        int e;

        if (ino & FILES_INO_BIT) {
                files_write(fs->files, req, data, size, off, fi);
                return;
        }
        if (h->kind == K_TOOL) {
                tool_write(req, fs, h, data, size, off);
                return;
        }
        s = sessions_find_id(fs->sessions, h->sid);
        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        switch (h->kind) {
        case SF_INPUT:
                if (h->failed) {
                        fuse_reply_err(req, EFBIG);
                        return;
                }
                e = buffer_write(&h->buf, data, size, off, (size_t)fs->opt->max_code_bytes);
                if (e < 0) {
                        if (e == -EFBIG) {
                                /* Nothing of this code will run. */
                                h->failed = true;
                                log_info("session %s: input over max_code_bytes (%lld); refused", s->name,
                                         fs->opt->max_code_bytes);
                        }
                        fuse_reply_err(req, -e);
                        return;
                }
                h->dirty = true;
                fuse_reply_write(req, size);
                return;
        case SF_CTL: {
                /* One command a write, exactly: "interrupt" or "restart",
                 * with at most one trailing newline.  Anything else is
                 * refused as a whole, so "restart\nrestart" or a command
                 * with junk after it does nothing at all; the log line
                 * escapes what was written (common/log.c). */
                size_t n = size > 0 && data[size - 1] == '\n' ? size - 1 : size;
                if (n == 9 && memcmp(data, "interrupt", 9) == 0) {
                        session_interrupt(s);
                } else if (n == 7 && memcmp(data, "restart", 7) == 0) {
                        session_restart(s);
                } else {
                        log_info("session %s: ctl: unknown command \"%.*s\"%s (known: interrupt, restart)", s->name,
                                 (int)MIN(size, 64), data, size > 64 ? "..." : "");
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                fuse_reply_write(req, size);
                return;
        }
        case SF_TIMEOUT: {
                double v;
                /* The whole of what this handle wrote: a plain decimal of
                 * seconds with an optional fraction and at most one
                 * trailing newline (parse_seconds_text). */
                e = buffer_write(&h->buf, data, size, off, 64);
                if (e == 0)
                        e = parse_seconds_text(h->buf.data, h->buf.len, &v);
                if (e == 0)
                        e = session_set_timeout(s, v);
                if (e < 0) {
                        log_info("session %s: timeout: expected a number of seconds such as 30 or 2.5 (0: none); "
                                 "unchanged", s->name);
                        h->buf.len = 0;
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                fuse_reply_write(req, size);
                return;
        }
        case SF_LIMITS: {
                struct limits l;
                e = buffer_write(&h->buf, data, size, off, 4096);
                if (e == 0)
                        e = limits_parse_json(h->buf.data, h->buf.len, &s->limits, &l, err, sizeof(err));
                if (e == -EAGAIN) { /* more of the JSON is coming */
                        h->applied = false;
                        fuse_reply_write(req, size);
                        return;
                }
                if (e < 0) {
                        log_info("session %s: %s; unchanged", s->name, e == -EFBIG ? "limits: over 4096 bytes" : err);
                        h->buf.len = 0;
                        fuse_reply_err(req, EINVAL);
                        return;
                }
                session_set_limits(s, &l);
                h->applied = true;
                fuse_reply_write(req, size);
                return;
        }
        default:
                fuse_reply_err(req, EBADF);
        }
}

/* The run starts here, when the writer closes input: close(2) waits for
 * FLUSH (but not for RELEASE), so a read right after close() already sees
 * the run under way.  Valid replies: err. */
static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        struct session *s;
        char *code;
        size_t len;
        int e;

        if (ino & FILES_INO_BIT) {
                fuse_reply_err(req, 0); /* writes went straight to the file */
                return;
        }
        s = h->sid ? sessions_find_id(fs->sessions, h->sid) : NULL;
        if (h->kind == K_TOOL) {
                tool_flush(req, fs, h);
                return;
        }
        if (!s) {
                fuse_reply_err(req, h->sid ? ENOENT : 0);
                return;
        }
        if (h->kind == SF_LIMITS && h->buf.len > 0 && !h->applied) {
                log_info("session %s: limits: incomplete JSON; unchanged", s->name);
                h->buf.len = 0;
                fuse_reply_err(req, EINVAL);
                return;
        }
        if (h->kind != SF_INPUT || !h->dirty) {
                fuse_reply_err(req, h->failed ? EFBIG : 0);
                return;
        }
        h->dirty = false;
        if (h->failed) {
                fuse_reply_err(req, EFBIG);
                return;
        }
        /* The buffer (kept NUL-terminated by text_append) becomes the code. */
        len = h->buf.len;
        code = h->buf.data ? TAKE_PTR(h->buf.data) : strdup("");
        h->buf = (struct text){0};
        if (!code) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        e = session_start_run(s, code, len);
        fuse_reply_err(req, e < 0 ? -e : 0);
}

/* Valid replies: err. */
/* What a RELEASE does to one of our handles (not one of files/), without
 * the reply: also for an open whose reply the kernel refused (the opener
 * was interrupted), for which no RELEASE will ever come. */
static void handle_close(struct fs *fs, struct handle *h) {
        struct session *s = h->sid ? sessions_find_id(fs->sessions, h->sid) : NULL;

        if (h->kind == K_TOOL) {
                struct tool_entry *e = handle_entry(fs, h);
                if (e)
                        tool_entry_release(e);
        } else if (s) {
                if (s->input_writer == h)
                        s->input_writer = NULL;
                if (h->ph || h->poll_next)
                        pollers_remove(sfs(s), h);
        }
        handle_free(h);
}

/* Reply to an open with h; if the kernel refuses the reply (the opener was
 * interrupted meanwhile), no RELEASE comes for it: close h now.  A clone
 * open's session then has nobody who knows its name: it is closed too.
 * Valid replies: open (create when ep is given). */
static void reply_open(fuse_req_t req, struct fs *fs, struct handle *h, struct fuse_file_info *fi,
                       const struct fuse_entry_param *ep) {
        int r = ep ? fuse_reply_create(req, ep, fi) : fuse_reply_open(req, fi);
        struct session *s;

        if (r == 0)
                return;
        s = h->clone_sid ? sessions_find_id(fs->sessions, h->clone_sid) : NULL;
        handle_close(fs, h);
        if (s)
                session_close(s);
}

/* Valid replies: err. */
static void fs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
        struct fs *fs = req_fs(req);
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;

        if (ino & FILES_INO_BIT) {
                files_release(fs->files, req, fi);
                return;
        }
        handle_close(fs, h);
        fuse_reply_err(req, 0);
}

/* Result files are readable when no run is under way; the others always.
 * Valid replies: poll, err. */
static void fs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph) {
        struct fs *fs = req_fs(req);
        struct handle *h = (struct handle *)(uintptr_t)fi->fh;
        struct session *s;
        unsigned revents;

        if (ino & FILES_INO_BIT) { /* a regular file: always ready */
                if (ph)
                        fuse_pollhandle_destroy(ph);
                fuse_reply_poll(req, POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM);
                return;
        }
        s = h->sid ? sessions_find_id(fs->sessions, h->sid) : NULL;
        if (h->sid && !s) {
                if (ph)
                        fuse_pollhandle_destroy(ph);
                fuse_reply_poll(req, POLLERR | POLLHUP);
                return;
        }
        if (s && is_result_file(h->kind)) {
                revents = session_busy(s) ? 0 : POLLIN | POLLRDNORM;
        } else if (s && h->kind == SF_INPUT) {
                revents = session_busy(s) ? 0 : POLLOUT | POLLWRNORM;
        } else {
                revents = (h->flags & O_ACCMODE) == O_WRONLY ? POLLOUT | POLLWRNORM : POLLIN | POLLRDNORM;
        }
        if (ph) {
                if (revents || !s) {
                        fuse_pollhandle_destroy(ph);
                } else {
                        if (h->ph)
                                fuse_pollhandle_destroy(h->ph);
                        else {
                                h->poll_next = sfs(s)->pollers;
                                sfs(s)->pollers = h;
                        }
                        h->ph = ph;
                }
        }
        fuse_reply_poll(req, revents);
}

/* ---- tools/ directories -------------------------------------------------
 * tools/ and sessions/N/tools/ hold NAME.json files (sessions/tools.h) and
 * the read-only .errors.  A definition written through a handle is checked
 * and put in force on FLUSH (close(2) returns its EINVAL); reads show the
 * definition in force.  An O_TRUNC open or a truncation alone changes
 * nothing: shells open, dup and close the descriptor before writing, which
 * flushes an empty handle, and a rejected write must change nothing. */

static void tools_dir_lookup(fuse_req_t req, struct fs *fs, struct tool_scope *sc, const char *name) {
        struct fuse_entry_param ep = {0};
        struct tool_entry *e;

        if (strcmp(name, ".errors") == 0) {
                reply_entry(req, fs, errors_ino(sc));
                return;
        }
        e = tools_entry_lookup(sc, name);
        if (!e) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        /* Names come and go through this process only, but a file created
         * and never accepted vanishes on its last close: no entry caching. */
        ep.ino = TOOL_INO_BIT | tool_entry_id(e);
        if (node_attr(fs, ep.ino, &ep.attr, &ep.attr_timeout) < 0) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        fuse_reply_entry(req, &ep);
}

/* Offsets: 3 is .errors, an entry's is its id + 3 (ids only grow, so an
 * entry removed between two calls shifts nothing). */
static void tools_dir_readdir(fuse_req_t req, struct fs *fs, struct tool_scope *sc, fuse_ino_t ino, struct dirbuf *b,
                              off_t off) {
        if (off < 3 && !dirbuf_add(req, b, ".errors", errors_ino(sc), S_IFREG | 0444, 3))
                return;
        for (struct tool_entry *e = tools_entry_next(sc, (uint64_t)MAX(off - 3, 0)); e;
             e = tools_entry_next(sc, tool_entry_id(e)))
                if (!dirbuf_add(req, b, tool_entry_filename(e), TOOL_INO_BIT | tool_entry_id(e), S_IFREG | 0644,
                                (off_t)tool_entry_id(e) + 3))
                        break;
}

/* Valid replies: open (or create when created), err. */
static void tool_open(fuse_req_t req, struct fs *fs, struct tool_entry *e, struct fuse_file_info *fi, bool created) {
        struct handle *h = handle_new(fs);
        const struct text *t = tool_entry_text(e);

        if (!h) {
                if (created)
                        tool_entry_release(e); /* frees it if it has no definition */
                fuse_reply_err(req, ENOMEM);
                return;
        }
        tool_entry_hold(e);
        h->ino = TOOL_INO_BIT | tool_entry_id(e);
        h->kind = K_TOOL;
        h->tool_id = tool_entry_id(e);
        h->flags = fi->flags;
        /* Writes go to the handle; without O_TRUNC they start from the
         * definition in force, as on a disk. */
        if ((fi->flags & O_ACCMODE) != O_RDONLY && !(fi->flags & O_TRUNC))
                text_set(&h->buf, t->data, t->len);
        fi->fh = (uint64_t)(uintptr_t)h;
        fi->direct_io = 1;
        fi->keep_cache = 0;
        fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
        if (created) {
                struct fuse_entry_param ep = {.ino = h->ino};
                node_attr(fs, ep.ino, &ep.attr, &ep.attr_timeout);
                reply_open(req, fs, h, fi, &ep);
        } else {
                reply_open(req, fs, h, fi, NULL);
        }
}

/* Size changes through a writer's handle change its buffer (applied on
 * flush, like a write); without a handle only a no-op is accepted.  Times
 * are ignored.  Valid replies: attr, err. */
static void tool_setattr(fuse_req_t req, struct fs *fs, struct tool_entry *e, struct stat *attr, int to_set,
                         struct fuse_file_info *fi) {
        struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
        fuse_ino_t ino = TOOL_INO_BIT | tool_entry_id(e);
        struct stat st;
        double timeout;

        if (to_set & FUSE_SET_ATTR_SIZE) {
                size_t size = (size_t)attr->st_size;
                if (h && h->kind == K_TOOL && (h->flags & O_ACCMODE) != O_RDONLY) {
                        if (attr->st_size < 0 || size > TOOL_FILE_MAX) {
                                fuse_reply_err(req, EFBIG);
                                return;
                        }
                        if (size > h->buf.len && buffer_write(&h->buf, "", 0, (off_t)size, TOOL_FILE_MAX) < 0) {
                                fuse_reply_err(req, ENOMEM);
                                return;
                        }
                        h->buf.len = size;
                        if (size > 0)
                                h->dirty = true;
                } else if (size != tool_entry_text(e)->len && size != 0) {
                        fuse_reply_err(req, EINVAL);
                        return;
                }
        }
        node_attr(fs, ino, &st, &timeout);
        fuse_reply_attr(req, &st, timeout);
}

static struct tool_entry *handle_entry(struct fs *fs, struct handle *h) {
        return tools_entry_by_id(fs_tools(fs), h->tool_id);
}

/* Valid replies: buf, err. */
static void tool_read(fuse_req_t req, struct fs *fs, struct handle *h, size_t size, off_t off) {
        struct tool_entry *e = handle_entry(fs, h);

        if (!e) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (off == 0) {
                const struct text *t = tool_entry_text(e);
                text_set(&h->text, t->data, t->len);
        }
        reply_from(req, &h->text, size, off);
}

/* Valid replies: write, err. */
static void tool_write(fuse_req_t req, struct fs *fs, struct handle *h, const char *data, size_t size, off_t off) {
        int e;

        if (!handle_entry(fs, h)) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        e = buffer_write(&h->buf, data, size, off, TOOL_FILE_MAX);
        if (e < 0) {
                fuse_reply_err(req, -e);
                return;
        }
        h->dirty = true;
        fuse_reply_write(req, size);
}

/* The definition is checked and applied here: close(2) gets EINVAL for a
 * bad one, which changes nothing (the reason is in .errors and the log).
 * Valid replies: err. */
static void tool_flush(fuse_req_t req, struct fs *fs, struct handle *h) {
        struct tool_entry *e = handle_entry(fs, h);
        int r = 0;

        if (e && h->dirty) {
                h->dirty = false;
                r = tool_entry_write(e, h->buf.data ? h->buf.data : "", h->buf.len);
        }
        fuse_reply_err(req, -r);
}

/* Valid replies: err. */
/* ---- events from the sessions layer ------------------------------------ */

static void wake_pollers(struct session_fs *f) {
        struct handle *h, *next;

        for (h = f->pollers; h; h = next) {
                next = h->poll_next;
                h->poll_next = NULL;
                if (h->ph) {
                        fuse_lowlevel_notify_poll(h->ph);
                        fuse_pollhandle_destroy(h->ph);
                        h->ph = NULL;
                }
        }
        f->pollers = NULL;
}

static void on_run_ended(struct session *s) {
        struct session_fs *f = sfs(s);
        struct parked *p, *next;

        if (!f)
                return;
        /* Answer every parked reader from the new result. */
        p = f->parked;
        f->parked = NULL;
        for (; p; p = next) {
                next = p->next;
                result_unref(p->h->snap);
                p->h->snap = result_ref(s->last);
                reply_from(p->req, result_part(p->h->snap, p->h->kind), p->size, p->off);
                free(p);
        }
        wake_pollers(f);
}

static void on_created(struct session *s, int err, const char *why) {
        struct fs *fs = session_events_data(s);
        struct session_fs *f = sfs(s);
        fuse_req_t req;

        if (!f || !f->create_req)
                return;
        req = f->create_req;
        f->create_req = NULL;
        if (err < 0) {
                if (f->create_is_open) {
                        /* The handle was made before the open parked. */
                        handle_free((struct handle *)(uintptr_t)f->create_fi.fh);
                }
                fuse_reply_err(req, -err);
                return;
        }
        /* The session stays if the opener went away meanwhile (closing it
         * here, inside its own created event, would free it under the
         * caller): it is listed in sessions/ and rmdir removes it. */
        if (f->create_is_open)
                reply_open(req, fs, (struct handle *)(uintptr_t)f->create_fi.fh, &f->create_fi, NULL);
        else
                reply_entry(req, fs, session_ino(s, SF_DIR));
}

static void on_closing(struct session *s) {
        struct session_fs *f = sfs(s);
        struct parked *p, *next;

        if (!f)
                return;
        files_session_closed(session_events_fs(s)->files, s->id);
        if (f->create_req) {
                if (f->create_is_open)
                        handle_free((struct handle *)(uintptr_t)f->create_fi.fh);
                fuse_reply_err(f->create_req, ENOENT);
        }
        for (p = f->parked; p; p = next) {
                next = p->next;
                fuse_reply_err(p->req, ENOENT);
                free(p);
        }
        /* Handles still open keep their own memory; they find no session
         * from now on.  Pollers are woken to see POLLHUP. */
        wake_pollers(f);
        free(f);
        s->fs_data = NULL;
}

/* ---- set-up ------------------------------------------------------------- */

static void fs_init(void *userdata, struct fuse_conn_info *conn) {
        /* O_TRUNC comes with OPEN instead of a separate SETATTR round trip. */
        if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
                conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
        conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops fs_ops = {
        .init = fs_init,
        .lookup = fs_lookup,
        .forget = fs_forget,
        .forget_multi = fs_forget_multi,
        .getattr = fs_getattr,
        .setattr = fs_setattr,
        .mknod = fs_mknod,
        .symlink = fs_symlink,
        .link = fs_link,
        .mkdir = fs_mkdir,
        .unlink = fs_unlink,
        .rmdir = fs_rmdir,
        .rename = fs_rename,
        .open = fs_open,
        .read = fs_read,
        .write = fs_write,
        .flush = fs_flush,
        .release = fs_release,
        .opendir = fs_opendir,
        .releasedir = fs_releasedir,
        .readlink = fs_readlink,
        .readdir = fs_readdir,
        .create = fs_create,
        .poll = fs_poll,
};

static void on_fuse_readable(int fd, uint32_t events, void *data) {
        struct fs *fs = data;

        /* A few requests per wake-up, then back to the loop so that workers
         * and timers are served too. */
        for (int i = 0; i < 32; i++) {
                int r = fuse_session_receive_buf(fs->se, &fs->buf);
                if (r == -EAGAIN || r == -EINTR)
                        return;
                if (r <= 0) {
                        if (r < 0)
                                log_error("reading the FUSE channel: %s", strerror(-r));
                        loop_stop(fs->loop);
                        return;
                }
                fuse_session_process_buf(fs->se, &fs->buf);
                if (fuse_session_exited(fs->se)) {
                        loop_stop(fs->loop);
                        return;
                }
        }
}

int fs_new(struct loop *l, const struct options *o, struct fuse_args *args, const char *mountpoint,
           struct fs **out) {
        struct fs *fs = calloc(1, sizeof(*fs));

        if (!fs)
                return -ENOMEM;
        fs->loop = l;
        fs->opt = o;
        fs->uid = getuid();
        fs->gid = getgid();
        clock_gettime(CLOCK_REALTIME, &fs->mount_time);
        fs->se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), fs);
        if (!fs->se) {
                free(fs);
                return -EINVAL; /* libfuse said why */
        }
        if (fuse_session_mount(fs->se, mountpoint) != 0) {
                fuse_session_destroy(fs->se);
                free(fs);
                return -EIO;
        }
        fs->mounted = true;
        *out = fs;
        return 0;
}

int fs_start(struct fs *fs) {
        struct session_events ev = {.data = fs, .created = on_created, .run_ended = on_run_ended,
                                    .closing = on_closing};
        int fd = fuse_session_fd(fs->se), e;

        e = sessions_new(fs->loop, fs->opt, &ev, &fs->sessions);
        if (e < 0)
                return e;
        fs->files = files_new(fs->sessions, fs->uid, fs->gid, SF_STRIDE, SF_FILES);
        if (!fs->files)
                return -ENOMEM;
        if (fs->opt->audit_log) {
                e = sessions_open_audit(fs->sessions, fs->opt->audit_log);
                if (e < 0)
                        return e;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                return -errno;
        return loop_add_fd(fs->loop, fd, EPOLLIN, on_fuse_readable, fs);
}

void fs_unmount(struct fs *fs) {
        if (fs && fs->mounted) {
                loop_del_fd(fs->loop, fuse_session_fd(fs->se));
                fuse_session_unmount(fs->se);
                fs->mounted = false;
        }
}

void fs_free(struct fs *fs) {
        if (!fs)
                return;
        fs_unmount(fs);
        sessions_free(fs->sessions);
        /* Handles whose RELEASE never came (the unmount overtook it). */
        while (fs->open_handles)
                handle_free(fs->open_handles);
        files_free(fs->files);
        fuse_session_destroy(fs->se);
        free(fs->buf.mem);
        free(fs);
}
