/* The snapshot file (sessions/N/snapshot, -o state_dir): its container, the
 * one part of a snapshot the host ever parses — as an attacker's input,
 * since the file comes from anywhere (docs/security.md, "Snapshots").
 *
 *   0   "SRFSNAP\n"                     magic
 *   8   version, u32 big-endian          SNAPSHOT_VERSION
 *   12  metadata length, u32 big-endian  at most SNAPSHOT_META_MAX
 *   16  metadata: a JSON object          {"format": "securerfs-snapshot",
 *                                         "version": 1, "session", "created",
 *                                         "timeout", "limits", "tools"}
 *   ..  the state stream (common/state_format.h): one R record, the
 *       workspace's entries, the end record, then end of file.
 *
 * The R record's bytes are never read here: only a jailed worker reads
 * them.  Every other byte is checked: the header, the metadata's fields
 * and types, every record's header, every path (relative, no "." or ".."
 * component, no NUL, at most 64 deep; none twice, each under a directory
 * made before it), every link's target (relative, never
 * above the workspace's root), the sum of what the entries take on a tmpfs
 * (each file rounded up to a page, a page for each directory and link)
 * against the workspace's quota, their number against its inodes, and that
 * the stream ends exactly at the file's end.
 *
 * Pure but for pread(2) on the descriptor it is given (the fuzz target
 * feeds it a memfd). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#define SNAPSHOT_MAGIC "SRFSNAP\n"
#define SNAPSHOT_VERSION 1u
#define SNAPSHOT_HEADER 16
#define SNAPSHOT_META_MAX (1u << 20)

struct snapshot_info {
        json_t *meta;          /* the metadata object (a reference: json_decref) */
        off_t stream_off;      /* where the state stream starts */
        uint64_t r_bytes;      /* the R record's data */
        uint64_t entries;      /* workspace entries */
        uint64_t files_bytes;  /* what they take on a tmpfs (pages) */
};

/* Check the snapshot file fd of size bytes, for a workspace of at most
 * quota bytes: 0 with *out, -EINVAL (not a valid snapshot: the reason in
 * why), -ENOSPC (its files would not fit in quota, or its entries in the
 * inodes of a tmpfs of that size), -EIO (a read failed), -ENOMEM.  The
 * two steps of it below, for a caller that checks the stream elsewhere. */
int snapshot_file_check(int fd, off_t size, long long quota, struct snapshot_info *out, char *why, size_t n);
/* The header and the metadata only (at most SNAPSHOT_META_MAX bytes): *out
 * with meta and stream_off, or an error as above. */
int snapshot_file_head(int fd, off_t size, struct snapshot_info *out, char *why, size_t n);
/* The state stream from info->stream_off to the end, whose time and memory
 * grow with its entries, at most one per inode of the workspace (65,536 by
 * default: 0.22 s and 10 MB with paths of 4 KiB, here): on a thread of its
 * own, not the daemon's loop (sessions/snapshot.c).  Fills info's counts; 0
 * or an error as above.  Reentrant. */
int snapshot_file_stream(int fd, off_t size, long long quota, struct snapshot_info *info, char *why, size_t n);
/* The metadata block for a session: a JSON object (stolen) as the file's
 * header and metadata, malloc'ed in *out (*len bytes).  0 or -ENOMEM. */
int snapshot_file_header(json_t *meta, char **out, size_t *len);
