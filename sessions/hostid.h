/* A session's host id (docs/security.md, "Who the worker is on the host"):
 * the uid and gid outside the jail of one session's workers, from the
 * daemon's range (root, strict mode; common/hostids.h).  Held by the session
 * and by each of its workers, a pooled one included, until the session is
 * closed and its last worker reaped; then back to the free set.  NULL where a
 * struct host_id * is expected means the daemon's own uid/gid (unprivileged
 * or none mode), which nobody holds.
 *
 * Process context: the daemon's event loop. */
#pragma once

#include <sys/types.h>

struct host_id;
struct id_pool;

/* A fresh id of ids (NULL: the daemon has no range, *out is NULL): 0 with
 * *out holding one reference, -ENOSPC when every id of the range is held,
 * or -ENOMEM. */
int host_id_take(struct id_pool *ids, struct host_id **out);
/* Another reference (NULL stays NULL). */
struct host_id *host_id_ref(struct host_id *h);
/* Drop a reference; the last one puts the id back into ids.  Accepts NULL. */
void host_id_unref(struct id_pool *ids, struct host_id *h);
/* What the id is on the host: the daemon's own uid/gid for NULL. */
uid_t host_uid(const struct host_id *h);
gid_t host_gid(const struct host_id *h);
