/* sessions/N/ and its files (fs/session_dir.h). */
#include "session_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "fork.h"
#include "handle.h"
#include "log.h"
#include "macros.h"
#include "options.h"
#include "parked.h"
#include "sessions/session.h"

/* Its entries, in listing order (tools/.errors is tools/'s). */
static const struct {
        const char *name;
        mode_t mode;
} nodes[SESSION_NODE_COUNT] = {
        [SESSION_NODE_INPUT] = {"input", S_IFREG | 0200},     [SESSION_NODE_EVAL] = {"eval", S_IFREG | 0600},
        [SESSION_NODE_OUTPUT] = {"output", S_IFREG | 0444},
        [SESSION_NODE_ERROR] = {"error", S_IFREG | 0444},     [SESSION_NODE_CONSOLE] = {"console", S_IFREG | 0444},
        [SESSION_NODE_STATUS] = {"status", S_IFREG | 0444},   [SESSION_NODE_RESULT] = {"result.json", S_IFREG | 0444},
        [SESSION_NODE_VALUE] = {"value.json", S_IFREG | 0444}, [SESSION_NODE_CTL] = {"ctl", S_IFREG | 0200},
        [SESSION_NODE_TIMEOUT] = {"timeout", S_IFREG | 0644}, [SESSION_NODE_LIMITS] = {"limits", S_IFREG | 0644},
        [SESSION_NODE_LOG] = {"log", S_IFREG | 0444},         [SESSION_NODE_TOOLS] = {"tools", S_IFDIR | 0755},
        [SESSION_NODE_FILES] = {"files", S_IFDIR | 0755},     [SESSION_NODE_FORK] = {"fork", S_IFREG | 0444},
        [SESSION_NODE_SNAPSHOT] = {"snapshot", S_IFREG | 0644},
};
#define LISTED_LAST SESSION_NODE_SNAPSHOT

/* The part of a result a result file shows; false for the other files. */
static bool result_file(enum session_node n, enum result_file *which) {
        switch (n) {
        case SESSION_NODE_OUTPUT: *which = RESULT_OUTPUT; return true;
        case SESSION_NODE_ERROR: *which = RESULT_ERROR; return true;
        case SESSION_NODE_RESULT: *which = RESULT_JSON; return true;
        case SESSION_NODE_VALUE: *which = RESULT_VALUE_JSON; return true;
        default: return false;
        }
}

/* ---- the directory -------------------------------------------------------- */

int session_dir_lookup(const struct inode_ref *dir, const char *name, fuse_ino_t *out) {
        for (int n = SESSION_NODE_INPUT; n <= LISTED_LAST; n++)
                if (strcmp(name, nodes[n].name) == 0) {
                        /* A saved session starts at its first use: a name
                         * looked up inside it (sessions/persist.h), not a
                         * listing or a stat of sessions/ (ls -l). */
                        if (dir->state && dir->state->session)
                                session_wake(dir->state->session);
                        *out = inode_of_session(dir->state->id, (enum session_node)n);
                        return 0;
                }
        return -ENOENT;
}

/* Offsets: an entry's is its node number + 2 (after . and ..). */
void session_dir_list(const struct inode_ref *dir, struct dirbuf *b, off_t off) {
        for (int n = (int)MAX(off - 2, 0) + 1; n <= LISTED_LAST; n++)
                if (!dirbuf_add(b, nodes[n].name, inode_of_session(dir->state->id, (enum session_node)n),
                                nodes[n].mode, (off_t)n + 2))
                        return;
}

/* ---- generated content ---------------------------------------------------------- */

/* In the same plain decimal a write takes (no exponent), so that what is
 * read can be written back. */
static void format_timeout(const struct session *s, struct text *t) {
        char b[64];
        int n = snprintf(b, sizeof(b), "%.9f", session_timeout(s));

        while (n > 0 && b[n - 1] == '0')
                n--;
        if (n > 0 && b[n - 1] == '.')
                n--;
        b[n++] = '\n';
        text_set(t, b, (size_t)n);
}

static void format_limits(const struct session *s, struct text *t) {
        json_t *j = limits_to_json(session_limits(s));
        char *str = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);

        t->len = 0;
        if (str) {
                text_append(t, str, strlen(str));
                text_append(t, "\n", 1);
                free(str);
        }
        json_decref(j);
}

/* The content of status, timeout, limits or log now. */
static void session_file_text(const struct session *s, enum session_node n, struct text *t) {
        switch (n) {
        case SESSION_NODE_STATUS: {
                const char *w = session_state_word(s);
                text_set(t, w, strlen(w));
                text_append(t, "\n", 1);
                break;
        }
        case SESSION_NODE_TIMEOUT: format_timeout(s, t); break;
        case SESSION_NODE_LIMITS: format_limits(s, t); break;
        case SESSION_NODE_LOG: text_set(t, session_log(s)->data, session_log(s)->len); break;
        default: t->len = 0; break;
        }
}

void session_file_attr(struct fs *fs, const struct inode_ref *ref, struct stat *st, double *attr_timeout) {
        const struct session *s = ref->session;
        enum result_file which;
        struct text t = {0};
        size_t size;

        if (result_file(ref->file, &which)) {
                size = session_busy(s) ? 0 : result_text(session_last_result(s), which)->len;
        } else if (ref->file == SESSION_NODE_CONSOLE) {
                size = session_console(s)->len;
        } else if (ref->file == SESSION_NODE_LOG) {
                size = session_log(s)->len;
        } else {
                session_file_text(s, ref->file, &t);
                size = t.len;
                text_free(&t);
        }
        /* Sizes change with every run: attributes are not cached (direct_io
         * keeps the data out of the page cache too). */
        *attr_timeout = 0;
        fill_attr(fs, ref->ino, nodes[ref->file].mode, size, st);
}

/* ---- open, read ----------------------------------------------------------------- */

void session_file_open(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct fuse_file_info *fi) {
        mode_t mode = nodes[ref->file].mode;
        struct handle *h;
        int r = handle_check_access(fi->flags, mode);

        if (r == 0 && ref->file == SESSION_NODE_FORK) {
                fork_file_open(req, fs, ref, fi);
                return;
        }
        if (r == 0 && ref->file == SESSION_NODE_SNAPSHOT) {
                snapshot_file_open(req, fs, ref, fi);
                return;
        }
        /* One run at a time, one writer at a time. */
        if (r == 0 && ref->file == SESSION_NODE_INPUT && (session_busy(ref->session) || ref->state->input_writer))
                r = -EBUSY;
        if (r == 0)
                r = handle_open(fs, ref->ino, mode, fi, &h);
        if (r < 0) {
                fuse_reply_err(req, -r);
                return;
        }
        /* Only a write makes a run: shells dup the descriptor and close the
         * original before writing, which flushes an empty handle. */
        if (ref->file == SESSION_NODE_INPUT)
                ref->state->input_writer = h;
        /* Nothing written yet: a read gets nothing, a write is a program. */
        if (ref->file == SESSION_NODE_EVAL) {
                h->eval_reading = true;
                /* A close ends nothing here: no FLUSH round trip. */
                fi->noflush = 1;
        }
        reply_open(req, fs, h, fi, NULL);
}

void session_file_read(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, size_t size,
                       off_t off) {
        struct session *s = ref->session;
        enum result_file which;

        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (ref->file == SESSION_NODE_EVAL) {
                eval_read(req, fs, ref, h, size, off);
                return;
        }
        if (result_file(ref->file, &which)) {
                if (off == 0 || !h->snap) {
                        if (session_busy(s)) {
                                if (h->flags & O_NONBLOCK)
                                        fuse_reply_err(req, EAGAIN);
                                else
                                        parked_read(ref->state, req, h, which, size, off);
                                return;
                        }
                        result_unref(h->snap);
                        h->snap = result_ref(session_last_result(s));
                }
                reply_text(req, result_text(h->snap, which), size, off);
                return;
        }
        if (ref->file == SESSION_NODE_CONSOLE) {
                reply_text(req, session_console(s), size, off);
                return;
        }
        if (ref->file == SESSION_NODE_FORK) {
                reply_text(req, &h->text, size, off); /* the copy's name, set at open */
                return;
        }
        if (ref->file == SESSION_NODE_SNAPSHOT) {
                snapshot_file_read(req, h, size, off);
                return;
        }
        if (off == 0)
                session_file_text(s, ref->file, &h->text);
        reply_text(req, &h->text, size, off);
}

/* ---- writes ----------------------------------------------------------------------- */

/* Valid replies: write, err. */
static void write_input(fuse_req_t req, struct fs *fs, struct session *s, struct handle *h, const char *data,
                        size_t size, off_t off) {
        int r;

        if (h->failed) {
                fuse_reply_err(req, EFBIG);
                return;
        }
        r = handle_write_at(h, data, size, off, (size_t)fs->opt->max_code_bytes);
        if (r < 0) {
                if (r == -EFBIG) {
                        /* Nothing of this code will run. */
                        h->failed = true;
                        log_info("session %s: input over max_code_bytes (%lld); refused", session_name(s),
                                 fs->opt->max_code_bytes);
                }
                fuse_reply_err(req, -r);
                return;
        }
        h->dirty = true;
        fuse_reply_write(req, size);
}

struct ctl_wait {
        fuse_req_t req;
        size_t size;
};

/* Valid replies: write, err. */
static void on_checkpointed(void *data, int err, const char *why) {
        struct ctl_wait *w = data;

        if (err < 0)
                fuse_reply_err(w->req, err == -ENOENT ? ENOENT : EIO);
        else
                fuse_reply_write(w->req, w->size);
        free(w);
}

/* ctl checkpoint: the write returns once the session's state is on disk in
 * state_dir.  Valid replies: write (later), err (ENOTSUP without
 * state_dir, EBUSY while one is being written, EIO). */
static void ctl_checkpoint(fuse_req_t req, struct session *s, size_t size) {
        struct ctl_wait *w = calloc(1, sizeof(*w));
        int r;

        if (!w) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        *w = (struct ctl_wait){.req = req, .size = size};
        r = session_checkpoint(s, on_checkpointed, w);
        if (r < 0) {
                free(w);
                fuse_reply_err(req, r == -EALREADY ? 0 : -r);
        }
}

/* One command a write, exactly: "interrupt" or "restart", with at most one
 * trailing newline.  Anything else is refused as a whole, so
 * "restart\nrestart" or a command with junk after it does nothing at all;
 * the log line escapes what was written (common/log.c).  Valid replies:
 * write, err. */
static void write_ctl(fuse_req_t req, struct session *s, const char *data, size_t size) {
        size_t n = size > 0 && data[size - 1] == '\n' ? size - 1 : size;

        if (n == 9 && memcmp(data, "interrupt", 9) == 0) {
                session_interrupt(s);
        } else if (n == 7 && memcmp(data, "restart", 7) == 0) {
                session_restart(s);
        } else if (n == 10 && memcmp(data, "checkpoint", 10) == 0) {
                ctl_checkpoint(req, s, size);
                return;
        } else {
                log_info("session %s: ctl: unknown command \"%.*s\"%s (known: interrupt, restart, checkpoint)", session_name(s),
                         (int)MIN(size, 64), data, size > 64 ? "..." : "");
                fuse_reply_err(req, EINVAL);
                return;
        }
        fuse_reply_write(req, size);
}

/* The whole of what this handle wrote: a plain decimal of seconds with an
 * optional fraction and at most one trailing newline (parse_seconds_text).
 * Valid replies: write, err. */
static void write_timeout(fuse_req_t req, struct session *s, struct handle *h, const char *data, size_t size,
                          off_t off) {
        double v;
        int r = handle_write_at(h, data, size, off, 64);

        if (r == 0)
                r = parse_seconds_text(h->buf.data, h->buf.len, &v);
        if (r == 0)
                r = session_set_timeout(s, v);
        if (r < 0) {
                log_info("session %s: timeout: expected a number of seconds such as 30 or 2.5 (0: none); unchanged",
                         session_name(s));
                h->buf.len = 0;
                fuse_reply_err(req, EINVAL);
                return;
        }
        fuse_reply_write(req, size);
}

/* Applied as soon as the JSON written so far is complete (some keys are
 * enough); incomplete JSON waits for more writes, or fails the flush.
 * Valid replies: write, err. */
static void write_limits(fuse_req_t req, struct session *s, struct handle *h, const char *data, size_t size,
                         off_t off) {
        struct limits l;
        char err[256];
        int r = handle_write_at(h, data, size, off, 4096);

        if (r == 0)
                r = limits_parse_json(h->buf.data, h->buf.len, session_limits(s), &l, err, sizeof(err));
        if (r == -EAGAIN) { /* more of the JSON is coming */
                h->applied = false;
                fuse_reply_write(req, size);
                return;
        }
        if (r < 0) {
                log_info("session %s: %s; unchanged", session_name(s), r == -EFBIG ? "limits: over 4096 bytes" : err);
                h->buf.len = 0;
                fuse_reply_err(req, EINVAL);
                return;
        }
        if (session_set_limits(s, &l) == -EBUSY) { /* below what the session holds: logged */
                h->buf.len = 0;
                fuse_reply_err(req, EBUSY);
                return;
        }
        h->applied = true;
        fuse_reply_write(req, size);
}

void session_file_write(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h,
                        const char *data, size_t size, off_t off) {
        struct session *s = ref->session;

        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        switch (ref->file) {
        case SESSION_NODE_INPUT: write_input(req, fs, s, h, data, size, off); return;
        case SESSION_NODE_EVAL: eval_write(req, fs, ref, h, data, size, off); return;
        case SESSION_NODE_CTL: write_ctl(req, s, data, size); return;
        case SESSION_NODE_TIMEOUT: write_timeout(req, s, h, data, size, off); return;
        case SESSION_NODE_LIMITS: write_limits(req, s, h, data, size, off); return;
        case SESSION_NODE_SNAPSHOT: snapshot_file_write(req, fs, h, data, size, off); return;
        default: fuse_reply_err(req, EBADF); return;
        }
}

void session_file_flush(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h) {
        struct session *s = ref->session;
        char *code;
        size_t len;
        int r;

        if (!s) {
                fuse_reply_err(req, ENOENT);
                return;
        }
        if (ref->file == SESSION_NODE_SNAPSHOT) {
                snapshot_file_flush(req, s, h);
                return;
        }
        if (ref->file == SESSION_NODE_LIMITS && h->buf.len > 0 && !h->applied) {
                log_info("session %s: limits: incomplete JSON; unchanged", session_name(s));
                h->buf.len = 0;
                fuse_reply_err(req, EINVAL);
                return;
        }
        if (ref->file != SESSION_NODE_INPUT || !h->dirty) {
                fuse_reply_err(req, h->failed ? EFBIG : 0);
                return;
        }
        h->dirty = false;
        if (h->failed) {
                fuse_reply_err(req, EFBIG);
                return;
        }
        /* The buffer (kept NUL-terminated by text_append) becomes the code;
         * an empty one is a run of "". */
        code = text_steal(&h->buf, &len);
        if (!code && !(code = strdup(""))) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        r = session_start_run(s, code, len);
        fuse_reply_err(req, -r);
}

/* ---- poll, close ------------------------------------------------------------------ */

void session_file_poll(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h,
                       struct fuse_pollhandle *ph) {
        struct session *s = ref->session;
        enum result_file which;
        unsigned revents;

        if (s && ref->file == SESSION_NODE_EVAL) {
                eval_poll(req, ref, h, ph);
                return;
        }
        if (!s)
                revents = POLLERR | POLLHUP;
        else if (result_file(ref->file, &which))
                revents = session_busy(s) ? 0 : POLLIN | POLLRDNORM;
        else if (ref->file == SESSION_NODE_INPUT)
                revents = session_busy(s) ? 0 : POLLOUT | POLLWRNORM;
        else
                revents = (h->flags & O_ACCMODE) == O_WRONLY ? POLLOUT | POLLWRNORM : POLLIN | POLLRDNORM;
        if (ph && !revents)
                pollers_add(ref->state, h, ph);
        else if (ph)
                fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, revents);
}

void session_file_closed(const struct inode_ref *ref, struct handle *h) {
        if (ref->state && ref->state->input_writer == h)
                ref->state->input_writer = NULL;
        if (ref->state && ref->state->eval_runner == h)
                ref->state->eval_runner = NULL;
}
