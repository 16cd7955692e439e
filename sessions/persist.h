/* -o state_dir=DIR: sessions that outlive the daemon (docs/architecture.md,
 * "Persistence").
 *
 * DIR holds one snapshot file (sessions/snapshot_file.h) per session,
 * NAME.snap, mode 0600.  A file is written as .NAME.snap.tmp by the
 * session's own worker (which fsyncs it before it answers), then renamed
 * over NAME.snap: a file is never half-written, and a daemon killed at any
 * moment leaves each session as of its last complete checkpoint.
 *
 * When: after a run, at most every checkpoint_interval seconds a session
 * (a timer looks once a second, and starts at most two at a time: each is a
 * worker's work, off the loop); on ctl checkpoint; for every started
 * session at a clean stop.  On start, every NAME.snap in DIR becomes a
 * dormant session under that name ("saved"), started and restored on its
 * first use (a name looked up inside sessions/NAME/).  rmdir removes its
 * file.
 *
 * Process context: the daemon's event loop.  The loop's own file work is a
 * few metadata calls (open, rename, unlink) in DIR and the snapshot's
 * header; the bytes are written and synced by workers. */
#pragma once

#include <jansson.h>

#include <stdbool.h>
#include <sys/types.h>

struct session;
struct sessions;

/* Free the table's persistence (at shutdown).  Accepts a table without. */
void persist_free(struct sessions *t);
/* s changed (a run ended, it was made or restored): checkpoint it within
 * checkpoint_interval. */
void persist_mark_dirty(struct session *s);
/* s is being freed: forget it (its file stays). */
void persist_session_closing(struct session *s);
/* s's checkpoint under way (if any) will not rename its file: s is gone. */
void persist_checkpoint_forget(struct session *s);
/* The saved file of s, opened read-only: 0 with *fd and *size, -ENOENT
 * (none: it starts empty), -errno. */
int persist_open_saved(struct session *s, int *fd, off_t *size);
/* s's saved state did not come back: its NAME.snap is renamed
 * NAME.snap.unrestored (name in kept), so that the next checkpoint does
 * not write over the only copy.  0, or -errno (-ENOENT: there is none). */
int persist_keep_unrestored(struct session *s, char *kept, size_t n);
/* The saved session's settings (timeout, limits, tools) from the daemon's
 * own NAME.settings: a JSON object (a reference), or NULL (missing or bad:
 * logged) — never the snapshot's metadata, which its worker could write. */
json_t *persist_load_settings(struct session *s);
