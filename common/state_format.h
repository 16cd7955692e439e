/* The state stream's records (docs/protocol.md, "The state stream"): the
 * one codec of the worker, which writes and reads a session's state, and of
 * the daemon, which checks a snapshot file's records before any worker
 * reads them (sessions/snapshot_file.h).
 *
 * A record: kind (1 byte), 0 (1 byte), path length (u16), mode (u32),
 * data length (u64), all big-endian; then the path, then the data.
 *
 * Pure: no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_RECORD_HEADER 16
#define STATE_PATH_MAX 4095u        /* a workspace path, or a link's target */
#define STATE_DEPTH_MAX 64u         /* directories within directories */
#define STATE_ENTRIES_MAX 1000000u  /* workspace entries in one state */
#define STATE_NOTES_MAX 1000u       /* notes reported (what could not be carried) */
#define STATE_NOTE_MAX 1000u        /* bytes of one note */
#define STATE_PACKAGES_MAX 1000u
#define STATE_PACKAGE_NAME_MAX 256u

struct state_record {
        char kind;          /* 'R', 'D', 'F', 'L', 'E' */
        unsigned path_len;  /* 0 for 'R' and 'E' */
        uint32_t mode;      /* permission bits, 0777 at most */
        uint64_t data_len;  /* 0 for 'D' and 'E' */
};

/* Write a record's header into h. */
void state_record_encode(unsigned char h[STATE_RECORD_HEADER], char kind, unsigned path_len, uint32_t mode,
                         uint64_t data_len);
/* Read one: 0 with *out, or -EINVAL (an unknown kind, a non-zero pad, a
 * mode with bits beyond 0777, a path longer than STATE_PATH_MAX, a path on
 * 'R' or 'E', none on the others, data on 'D' or 'E'). */
int state_record_decode(const unsigned char h[STATE_RECORD_HEADER], struct state_record *out);
/* A workspace path of len bytes: relative, components of 1-255 bytes
 * separated by single '/', none "." or "..", no NUL, at most
 * STATE_DEPTH_MAX deep.  0 or -EINVAL. */
int state_path_check(const char *path, size_t len);
/* A link's target of len bytes that stays inside the workspace from a link
 * at path: relative, no NUL, and ".." never climbs above the workspace's
 * root.  0 or -EINVAL. */
int state_link_check(const char *path, const char *target, size_t len);
