/* Inside fs/ only: the filesystem's state, shared by the facilities that
 * serve the tree (docs/architecture.md has the map of fs/). */
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "list.h"

struct loop;
struct options;
struct sessions;
struct files;
struct fs_session;

struct fs {
        struct loop *loop;
        const struct options *opt;
        struct sessions *sessions;
        struct files *files; /* sessions/N/files/ (fs/files.h) */
        struct fuse_session *se;
        struct fuse_buf buf;
        uid_t uid;
        gid_t gid;
        struct timespec mount_time;
        bool mounted;
        /* Every handle not yet released (fs/handle.h): the kernel may
         * unmount with RELEASEs still to come (they are asynchronous to
         * close()), and what those handles hold is freed at the end. */
        struct list open_handles;
        /* fs/'s state of each session, by session id (fs/parked.h). */
        struct fs_session **session_buckets;
        unsigned session_bits;
};

/* The designated-initializer table of fs/ops.c. */
extern const struct fuse_lowlevel_ops fs_ops;

static inline struct fs *req_fs(fuse_req_t req) { return fuse_req_userdata(req); }

/* A bucket for x in a table of 2^bits buckets (Fibonacci hashing: numbers
 * handed out in sequence spread over every bucket). */
static inline unsigned fs_hash(uint64_t x, unsigned bits) {
        return (unsigned)((x * 0x9e3779b97f4a7c15ULL) >> (64 - bits));
}
