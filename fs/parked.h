/* What fs/ keeps per session, and the requests that wait on a session.
 *
 * Each session fs/ has handed out an inode of has a struct fs_session, found
 * by session id in constant time (inode_decode() goes through it; nothing
 * in fs/ scans the session table).  It is made when fs/ first learns of the
 * session (mkdir, an open of clone, a lookup in sessions/) and freed in the
 * session's closing event; it holds:
 *   - reads of result files parked while a run is under way, answered from
 *     the new result when it ends (or EINTR when the kernel interrupts one,
 *     ENOENT when the session closes);
 *   - handles polled while a run is under way, notified when it ends;
 *   - the mkdir or clone open that made the session, parked until its first
 *     worker is ready (sessions/session.h, "Creation");
 *   - the handle open for writing input, if any (one writer at a time).
 * The sessions layer keeps nothing of fs/: these are answered from its
 * events (session_events, which this file fills in).
 *
 * Process context: the daemon's event loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fs_private.h"
#include "sessions/session.h"

struct handle;

struct fs_session {
        uint64_t id;
        struct session *session;
        struct list parked;  /* struct parked: reads waiting for the run to end */
        struct list pollers; /* struct handle (poll_link): polls waiting for it */
        fuse_req_t create_req; /* the mkdir or clone open waiting for the first worker */
        struct fuse_file_info create_fi; /* the clone open's (its fh is the handle) */
        bool create_is_open;
        struct handle *input_writer; /* the handle open for writing input, or NULL */
        struct handle *eval_runner;  /* the eval handle whose run is under way, or NULL */
        struct fs_session *bucket_next;
};

/* The table, sized for opt->max_sessions.  0 or -ENOMEM. */
int fs_sessions_init(struct fs *fs);
/* Free the table; every session's closing event has come by now
 * (sessions_free() sends them), so it is empty.  Accepts a table never
 * made. */
void fs_sessions_free(struct fs *fs);
/* The events through which the sessions layer tells fs/ what happened
 * (sessions_new()). */
struct session_events fs_session_events(struct fs *fs);

/* fs/'s state of s, made on first use: 0 with *out, or -ENOMEM. */
int fs_session_attach(struct fs *fs, struct session *s, struct fs_session **out);
/* fs/'s state of session id, NULL when there is no such session (closed,
 * or never known to fs/).  Constant time. */
struct fs_session *fs_session_find(struct fs *fs, uint64_t id);

/* Park a read of result file which (through h) until the run of st ends;
 * the read then gets the new result (h keeps it: later reads at offsets
 * > 0 read the same one).  Valid replies: buf (when the run ends), err
 * (now for ENOMEM or an interrupt during registration; later EINTR, ENOENT). */
void parked_read(struct fs_session *st, fuse_req_t req, struct handle *h, enum result_file which, size_t size,
                 off_t off);
/* Park the mkdir (fi NULL) or clone open (fi, whose fh is its handle) that
 * made st's session, until the created event.  Valid replies (later): entry
 * for a mkdir, open for a clone open, err. */
void parked_create(struct fs_session *st, fuse_req_t req, const struct fuse_file_info *fi);
/* An open that made session s (r: what sessions_create() or sessions_fork()
 * returned) reads s's name: it becomes h's text, and the open is answered
 * once s's first worker is ready (always then with wait, else at once when
 * s is ready already).  On a failure h is freed, s closed and the open
 * answered with the error.  Valid replies: open, err (now, or from the
 * created event). */
void parked_open_new_session(fuse_req_t req, struct fs *fs, struct fuse_file_info *fi, struct handle *h,
                             struct session *s, int r, bool wait);
/* Notify ph when the run of st ends (h keeps it, replacing one it had);
 * pollers_remove() forgets it (h is closing). */
void pollers_add(struct fs_session *st, struct handle *h, struct fuse_pollhandle *ph);
void pollers_remove(struct handle *h);
