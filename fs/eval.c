/* sessions/N/eval (fs/eval.h). */
#include "eval.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "handle.h"
#include "log.h"
#include "options.h"
#include "parked.h"
#include "reply.h"
#include "sessions/session.h"

void eval_write(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, const char *data,
                size_t size, off_t off) {
        struct session *s = ref->session;
        int r;

        if (h->eval_reading || off == 0) {
                /* The next program.  While a run is under way (this
                 * handle's, or anyone's) nothing new may start. */
                if (session_busy(s)) {
                        /* The read that follows must not pass the last
                         * result off as this program's: it gets EBUSY too
                         * (a client that cannot see a write's error, such
                         * as R's buffered connections, learns it there). */
                        h->buf.len = 0;
                        h->dirty = false;
                        h->eval_reading = false;
                        h->eval_refused = true;
                        fuse_reply_err(req, EBUSY);
                        return;
                }
                h->eval_refused = false;
                h->buf.len = 0;
                h->failed = false;
                h->dirty = false;
                h->eval_reading = false;
                h->eval_base = off;
        }
        if (h->failed) {
                fuse_reply_err(req, EFBIG);
                return;
        }
        if (off < h->eval_base) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        r = handle_write_at(h, data, size, off - h->eval_base, (size_t)fs->opt->max_code_bytes);
        if (r < 0) {
                if (r == -EFBIG) {
                        h->failed = true;
                        log_info("session %s: eval: code over max_code_bytes (%lld); refused", session_name(s),
                                 fs->opt->max_code_bytes);
                }
                fuse_reply_err(req, -r);
                return;
        }
        h->dirty = true;
        fuse_reply_write(req, size);
}

/* Start the program h holds; 0 or -errno (h unchanged on EBUSY, so that
 * the read can be retried). */
static int start(struct fs_session *st, struct session *s, struct handle *h, off_t off) {
        char *code;
        size_t len;
        int r;

        if (h->eval_refused) {
                h->eval_refused = false;
                h->eval_reading = true;
                h->eval_base = off;
                return -EBUSY;
        }
        if (h->failed) {
                h->failed = false;
                h->buf.len = 0;
                h->eval_reading = true;
                h->eval_base = off;
                result_unref(h->snap);
                h->snap = NULL;
                return -EFBIG;
        }
        if (session_busy(s))
                return -EBUSY;
        /* The buffer (kept NUL-terminated by text_append) becomes the
         * code; an empty one is a run of "". */
        code = text_steal(&h->buf, &len);
        if (!code && !(code = strdup("")))
                return -ENOMEM;
        h->dirty = false;
        h->eval_reading = true;
        h->eval_base = off;
        h->eval_pending = true;
        st->eval_runner = h;
        /* Code that is not UTF-8 ends its run in here: the run-ended event
         * has cleared eval_pending by the time this returns. */
        r = session_start_run(s, code, len);
        if (r < 0) {
                h->eval_pending = false;
                st->eval_runner = NULL;
        }
        return r;
}

void eval_read(fuse_req_t req, struct fs *fs, const struct inode_ref *ref, struct handle *h, size_t size,
               off_t off) {
        static const struct text empty;
        struct session *s = ref->session;
        int r;

        (void)fs;
        if (!h->eval_reading) {
                r = start(ref->state, s, h, off);
                if (r < 0) {
                        fuse_reply_err(req, -r);
                        return;
                }
        }
        if (off < h->eval_base) {
                fuse_reply_err(req, EINVAL);
                return;
        }
        if (h->eval_pending) {
                if (h->flags & O_NONBLOCK)
                        fuse_reply_err(req, EAGAIN);
                else
                        parked_read(ref->state, req, h, RESULT_JSON, size, off - h->eval_base);
                return;
        }
        reply_text(req, h->snap ? result_text(h->snap, RESULT_JSON) : &empty, size, off - h->eval_base);
}

void eval_poll(fuse_req_t req, const struct inode_ref *ref, struct handle *h, struct fuse_pollhandle *ph) {
        unsigned revents = 0;

        if (!h->eval_pending)
                revents |= POLLIN | POLLRDNORM;
        if (!session_busy(ref->session))
                revents |= POLLOUT | POLLWRNORM;
        if (ph && session_busy(ref->session))
                pollers_add(ref->state, h, ph);
        else if (ph)
                fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, revents);
}

void eval_run_ended(struct handle *h, struct result *res) {
        h->eval_pending = false;
        result_unref(h->snap);
        h->snap = result_ref(res);
}
