/* fs/'s per-session state and the requests parked on a session
 * (fs/parked.h). */
#include "parked.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "files.h"
#include "handle.h"
#include "inode.h"
#include "options.h"
#include "reply.h"

/* A read of a result file waiting for the run to end. */
struct parked {
        fuse_req_t req;
        struct handle *h;
        enum result_file which;
        size_t size;
        off_t off;
        bool registering; /* inside fuse_req_interrupt_func() */
        bool interrupted;
        struct list link; /* on its session's parked reads */
};

/* ---- the table ------------------------------------------------------------ */

int fs_sessions_init(struct fs *fs) {
        unsigned bits = 4;

        /* A bucket or so per session at the most (max_sessions was
         * checked against the machine at start, fs/capacity.h): chains of
         * about one, however many sessions there are. */
        while ((1u << bits) < fs->opt->max_sessions)
                bits++;
        fs->session_buckets = calloc(1u << bits, sizeof(*fs->session_buckets));
        if (!fs->session_buckets)
                return -ENOMEM;
        fs->session_bits = bits;
        return 0;
}

void fs_sessions_free(struct fs *fs) {
        free(fs->session_buckets);
        fs->session_buckets = NULL;
}

struct fs_session *fs_session_find(struct fs *fs, uint64_t id) {
        for (struct fs_session *st = fs->session_buckets[fs_hash(id, fs->session_bits)]; st; st = st->bucket_next)
                if (st->id == id)
                        return st;
        return NULL;
}

int fs_session_attach(struct fs *fs, struct session *s, struct fs_session **out) {
        struct fs_session *st = fs_session_find(fs, session_id(s));
        unsigned b;

        if (!st) {
                st = calloc(1, sizeof(*st));
                if (!st)
                        return -ENOMEM;
                st->id = session_id(s);
                st->session = s;
                list_init(&st->parked);
                list_init(&st->pollers);
                b = fs_hash(st->id, fs->session_bits);
                st->bucket_next = fs->session_buckets[b];
                fs->session_buckets[b] = st;
        }
        *out = st;
        return 0;
}

static void fs_session_free(struct fs *fs, struct fs_session *st) {
        for (struct fs_session **pp = &fs->session_buckets[fs_hash(st->id, fs->session_bits)]; *pp;
             pp = &(*pp)->bucket_next)
                if (*pp == st) {
                        *pp = st->bucket_next;
                        break;
                }
        free(st);
}

/* ---- parked reads ------------------------------------------------------------ */

/* Valid replies: err (EINTR), unless registering. */
static void on_parked_interrupt(fuse_req_t req, void *data) {
        struct parked *p = data;

        if (p->registering) {
                /* Called from inside fuse_req_interrupt_func(): replying here
                 * would free the request under libfuse's lock; the caller
                 * replies instead. */
                p->interrupted = true;
                return;
        }
        list_unlink(&p->link);
        fuse_reply_err(p->req, EINTR);
        free(p);
}

void parked_read(struct fs_session *st, fuse_req_t req, struct handle *h, enum result_file which, size_t size,
                 off_t off) {
        struct parked *p = calloc(1, sizeof(*p));

        if (!p) {
                fuse_reply_err(req, ENOMEM);
                return;
        }
        *p = (struct parked){.req = req, .h = h, .which = which, .size = size, .off = off, .registering = true};
        list_append(&st->parked, &p->link);
        /* A Ctrl-C on the blocked reader comes as a FUSE INTERRUPT, which
         * libfuse hands to on_parked_interrupt (at once when it came
         * before this registration). */
        fuse_req_interrupt_func(req, on_parked_interrupt, p);
        p->registering = false;
        if (p->interrupted) {
                list_unlink(&p->link);
                fuse_reply_err(req, EINTR);
                free(p);
        }
}

/* ---- pollers --------------------------------------------------------------- */

void pollers_add(struct fs_session *st, struct handle *h, struct fuse_pollhandle *ph) {
        if (h->ph)
                fuse_pollhandle_destroy(h->ph);
        else
                list_append(&st->pollers, &h->poll_link);
        h->ph = ph;
}

void pollers_remove(struct handle *h) { list_unlink(&h->poll_link); }

static void wake_pollers(struct fs_session *st) {
        struct handle *h;

        list_for_each(h, tmp, &st->pollers, struct handle, poll_link) {
                list_unlink(&h->poll_link);
                fuse_lowlevel_notify_poll(h->ph);
                fuse_pollhandle_destroy(h->ph);
                h->ph = NULL;
        }
}

/* ---- parked creates --------------------------------------------------------- */

void parked_open_new_session(fuse_req_t req, struct fs *fs, struct fuse_file_info *fi, struct handle *h,
                             struct session *s, int r, bool wait) {
        struct fs_session *st;

        if (r == 0 && (r = fs_session_attach(fs, s, &st)) < 0)
                session_close(s);
        if (r < 0) {
                handle_free(h);
                fuse_reply_err(req, -r);
                return;
        }
        text_set(&h->text, session_name(s), strlen(session_name(s)));
        text_append(&h->text, "\n", 1);
        if (wait || session_create_pending(s)) {
                /* Answered by s's created event, which must not close s
                 * (on_created): no clone_sid. */
                parked_create(st, req, fi);
                return;
        }
        /* An open the kernel refuses now closes the session it made. */
        h->clone_sid = session_id(s);
        reply_open(req, fs, h, fi, NULL);
}

void parked_create(struct fs_session *st, fuse_req_t req, const struct fuse_file_info *fi) {
        st->create_req = req;
        st->create_is_open = fi != NULL;
        if (fi)
                st->create_fi = *fi;
}

/* Answer the parked create with err.  A clone open's handle was made before
 * the open parked: no open was answered with it, so no RELEASE will come.
 * Valid replies: err. */
static void drop_create(struct fs_session *st, int err) {
        if (st->create_is_open)
                handle_free((struct handle *)(uintptr_t)st->create_fi.fh);
        fuse_reply_err(st->create_req, err);
        st->create_req = NULL;
}

/* ---- events from the sessions layer ---------------------------------------- */

static struct fs_session *event_state(struct session *s) {
        return fs_session_find(session_events_data(s), session_id(s));
}

/* The parked mkdir or clone open.  Valid replies: entry (mkdir), open
 * (clone), err. */
static void on_created(struct session *s, int err, const char *why) {
        struct fs *fs = session_events_data(s);
        struct fs_session *st = event_state(s);
        fuse_req_t req;

        if (!st || !st->create_req)
                return;
        if (err < 0) {
                drop_create(st, -err);
                return;
        }
        req = st->create_req;
        st->create_req = NULL;
        /* The session stays if the opener went away meanwhile (closing it
         * here, inside its own created event, would free it under the
         * caller): it is listed in sessions/ and rmdir removes it. */
        if (st->create_is_open)
                reply_open(req, fs, (struct handle *)(uintptr_t)st->create_fi.fh, &st->create_fi, NULL);
        else
                reply_entry(req, fs, inode_of_session(st->id, SESSION_NODE_DIR));
}

/* Answer every parked reader from the new result.  Valid replies: buf. */
static void on_run_ended(struct session *s) {
        struct fs_session *st = event_state(s);
        struct parked *p;

        if (!st)
                return;
        if (st->eval_runner) {
                eval_run_ended(st->eval_runner, session_last_result(s));
                st->eval_runner = NULL;
        }
        list_for_each(p, tmp, &st->parked, struct parked, link) {
                list_unlink(&p->link);
                result_unref(p->h->snap);
                p->h->snap = result_ref(session_last_result(s));
                reply_text(p->req, result_text(p->h->snap, p->which), p->size, p->off);
                free(p);
        }
        wake_pollers(st);
}

/* What is parked gets ENOENT.  Valid replies: err. */
static void on_closing(struct session *s) {
        struct fs *fs = session_events_data(s);
        struct fs_session *st = event_state(s);
        struct parked *p;

        if (!st)
                return;
        files_session_closed(fs->files, st->id);
        if (st->create_req)
                drop_create(st, ENOENT);
        list_for_each(p, tmp, &st->parked, struct parked, link) {
                list_unlink(&p->link);
                fuse_reply_err(p->req, ENOENT);
                free(p);
        }
        /* Handles still open keep their own memory; they find no session
         * from now on.  Pollers are woken to see POLLHUP. */
        wake_pollers(st);
        fs_session_free(fs, st);
}

struct session_events fs_session_events(struct fs *fs) {
        return (struct session_events){.data = fs, .created = on_created, .run_ended = on_run_ended,
                                       .closing = on_closing};
}
