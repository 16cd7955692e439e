/* A session's state moved as a whole (docs/architecture.md, "Fork and
 * snapshot"): out of a session's worker into a descriptor, into a worker
 * from one, or from one worker straight into another (a fork: a pipe
 * between the two, nothing in between).  The worker writes and reads its
 * own state (sandbox/worker/state.c) through a pipe; the daemon hands
 * out the ends, waits for the answers with a deadline, and — for a
 * snapshot file — copies between the pipe and its own file on a thread
 * (sessions/state_copy.h), never parsing the stream.
 *
 * A transfer has two ends, each a session or a descriptor.  While a
 * session is an end, it is busy: a run written meanwhile is queued and sent
 * when the transfer ends, and a second transfer waits.
 *
 * Process context: the daemon's event loop; nothing here blocks. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "protocol.h"

struct session;
struct sessions;
struct xfer;

/* The longest a transfer may take, from its start to both answers: the
 * workers that have not answered by then are killed and it fails. */
#define XFER_TIMEOUT_MS 120000

/* Called once, on the loop (never from inside the call that started the
 * transfer), when both ends are done: err 0, or err < 0 with why.  notes
 * (borrowed, may be NULL) is what the worker that restored said could not
 * be carried; packages (borrowed, may be NULL) what the snapshotting worker
 * had attached. */
typedef void (*xfer_done_fn)(void *data, int err, const char *why, json_t *notes, json_t *packages);

/* The most bytes a state of s's may take (its memory limit, twice its
 * workspace's quota, the header and metadata, a MiB), or -1 when s has no
 * memory limit: the file-size limit of a worker at a transfer, and the
 * bound of the daemon's copy of a snapshot into its file. */
long long xfer_state_bound(struct session *s);

/* Move src's state to dst (check: the restoring worker tries the R part in
 * a child process first: for a state that comes from a file).  src is an idle session (its worker attached, no
 * run sent, no other transfer) or NULL with src_fd a descriptor to read the
 * state from; dst likewise, or NULL with dst_fd a descriptor to write it
 * into.  The descriptors are the caller's (passed on, not closed here).
 * 0 (done comes later), or -EBUSY (an end is not idle), -ENOMEM, -EMFILE. */
int xfer_start(struct sessions *t, struct session *src, int src_fd, struct session *dst, int dst_fd, bool check,
               xfer_done_fn done, void *data);
/* Is s an end of a transfer under way? */
bool xfer_busy(const struct session *s);
/* The phase of s's worker while its end is under way (PHASE_SNAPSHOT,
 * PHASE_RESTORE), else PHASE_COUNT. */
enum worker_phase xfer_phase(const struct session *s);
/* s's worker answered its end (a checked snapshot_done or restored). */
void xfer_on_frame(struct session *s, const struct worker_frame *f);
/* s's worker is gone, or s closes: its end fails (the other end's worker
 * then sees a broken pipe and answers).  s is forgotten by the transfer. */
void xfer_session_lost(struct session *s, const char *why);

/* s became idle (a run ended, its worker attached, a transfer ended): send
 * its queued run, or start the forks waiting for it. */
void snapshot_session_idle(struct session *s);
/* A saved session whose state is not restored (its file unreadable, not a
 * snapshot, or its restore failed or was cut off): it still takes its
 * timeout, limits and tools from the daemon's own NAME.settings
 * (sessions/persist.h), never the defaults. */
void snapshot_take_saved_settings(struct session *s);
/* s's saved state did not come back (how: "cannot be read", "is not
 * restored", ...; why: the reason): logged, told to the session in its next
 * result's notice and, with audit, in its log; its file is kept beside
 * (persist_keep_unrestored), so that its next checkpoint does not write over
 * the only copy. */
void snapshot_saved_lost(struct session *s, const char *how, const char *why, bool audit);
/* s closes: the forks that wait for it fail, and if it is a fork waiting
 * for its original it leaves that queue. */
void snapshot_session_closing(struct session *s);

/* The daemon stops (sessions_free): every session is closed and every
 * worker reaped.  The transfers and the daemon's copies still under way end
 * now — each copy's thread stopped and joined, before the files it writes
 * (a snapshot read's memfd, a checkpoint's file) are closed — and their
 * callers are answered with an error (a checkpoint's file is not kept).
 * Without this they were leaked and their threads outlived the files. */
void snapshot_sessions_stop(struct sessions *t);

/* s's timeout, limits and tools as a snapshot's metadata has them (a new
 * object, NULL when out of memory): what state_dir keeps in the daemon's
 * own file beside a saved session's snapshot (sessions/persist.c). */
json_t *session_settings_json(struct session *s);
