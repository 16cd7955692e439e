/* Host ids for sessions: the range of unprivileged host uids/gids a root
 * daemon gives its workers (docs/security.md, "Who the worker is on the
 * host"), its checks against the host's own ids, and the allocator that
 * hands ids out.
 *
 * A root daemon maps each session's worker (uid/gid 1000 inside) to one id
 * of its range outside, the same number as uid and as gid, so that the
 * kernel's ownership and permission checks, not only the missing
 * capabilities, stand between the code and the host: no host file belongs
 * to such an id, and no two live sessions share one.  An unprivileged
 * daemon has one id only, its own, and uses no range.
 *
 * Pure logic (no global state, no I/O but id_range_check_host()):
 * unit-tested in tests/unit/test_hostids.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The default: 0x70000000, 65536 ids.  Far above the 16-bit ids of users and
 * groups (and 65534, nobody), above systemd's range for nspawn containers
 * (524288-1879048191) and below its "foreign" range (from 2147352576) and
 * 2^31 (ids that tools treat as negative). */
#define ID_RANGE_DEFAULT_BASE 1879048192u
#define ID_RANGE_DEFAULT_COUNT 65536u
/* At most this many ids in a range (the allocator keeps a bit per id). */
#define ID_RANGE_MAX_COUNT (1u << 24)

struct id_range {
        uint32_t base;  /* first id */
        uint32_t count; /* ids base .. base + count - 1 */
};

/* Parse "BASE:COUNT" (decimal).  BASE >= 1, 1 <= COUNT <= ID_RANGE_MAX_COUNT,
 * and the last id below 4294967295 ((uid_t)-1, which means "no change" to
 * the kernel).  0 with *out set, or -EINVAL with a reason in err. */
int id_range_parse(const char *text, struct id_range *out, char *err, size_t errlen);

/* Where a host file names ids. */
enum id_source {
        ID_SOURCE_PASSWD, /* name:pw:UID:GID:...: both fields */
        ID_SOURCE_GROUP,  /* name:pw:GID:members */
        ID_SOURCE_SUBID,  /* /etc/subuid, /etc/subgid: name:START:COUNT, a range */
};

/* Does range r overlap any id the text of a host file (of kind src, named
 * file for the message) names?  Comment lines (#), empty lines and lines
 * without a number where one belongs (NIS "+" entries) are skipped.
 * 0 when nothing overlaps; -EEXIST with the line named in err otherwise
 * ("/etc/passwd line 3 (nobody): uid 65534 is in id_range=..."). */
int id_range_check_text(const struct id_range *r, enum id_source src, const char *file, const char *text,
                        size_t len, char *err, size_t errlen);

/* Is every id of r mapped in a user namespace whose uid_map (or gid_map) has
 * this text ("INSIDE OUTSIDE COUNT" lines)?  A root daemon in a container
 * may only give out ids its own namespace maps.  0, or -ERANGE with the
 * first unmapped id named in err ("id 1879048192 of id_range=... is not
 * mapped in /proc/self/uid_map"). */
int id_range_check_mapped(const struct id_range *r, const char *file, const char *text, size_t len, char *err,
                          size_t errlen);

/* The whole check a root daemon makes at start: id 0 is never in the range,
 * and nothing in /etc/passwd, /etc/group, /etc/subuid or /etc/subgid
 * overlaps it (a missing subuid/subgid file is fine; an unreadable passwd
 * or group is an error), and our own /proc/self/uid_map and gid_map map all
 * of it.  0, -EEXIST, -ERANGE or -errno, with a reason in err. */
int id_range_check_host(const struct id_range *r, char *err, size_t errlen);

/* The allocator: ids of a range handed out one at a time, each back to the
 * free set when put.  Ids never handed out come first, then freed ones in
 * the order they were freed (least recently freed first), so that an id is
 * reused as late as possible: a process of a closed session that the
 * daemon has not reaped yet never meets a new session under its id. */
struct id_pool;

/* 0 or -ENOMEM. */
int id_pool_new(const struct id_range *r, struct id_pool **out);
/* Accepts NULL. */
void id_pool_free(struct id_pool *p);
/* An id: 0 with *id set, -ENOSPC when every id is in use, -ENOMEM. */
int id_pool_take(struct id_pool *p, uint32_t *id);
/* Give id back.  An id outside the range or not taken is ignored (false). */
bool id_pool_put(struct id_pool *p, uint32_t id);
/* Ids handed out and not yet put back. */
uint32_t id_pool_in_use(const struct id_pool *p);
