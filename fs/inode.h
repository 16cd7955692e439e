/* Inode numbers: the one place that makes them and reads them back.
 *
 *   1 .. ROOT_NODE_LAST    the fixed nodes (enum root_node; FUSE_ROOT_ID is 1)
 *   id * SESSION_STRIDE + n
 *                          the nodes of the session whose never-reused number
 *                          is id (>= 1, so these are >= SESSION_STRIDE): n is
 *                          an enum session_node, so a stale number can never
 *                          name another session's file
 *   INODE_TOOL_BIT | e     a tool file (tools/NAME.json, sessions/N/tools/
 *                          NAME.json), e its entry's never-reused number
 *                          (sessions/tools.h): stable while the file exists,
 *                          a rename keeps it, as on a disk
 *   INODE_FILES_BIT | s    a node below sessions/N/files/, s a never-reused
 *                          serial, one per host inode while the kernel holds
 *                          a lookup on it (fs/files.h); readdir there numbers
 *                          an entry that has no node with INODE_FILES_UNKNOWN_BIT
 *                          as well, a number that is never looked up
 *
 * Only the nodes below files/ have state of their own (lookup counts kept,
 * forget honoured: fs/files_node.c); every other number is computed from
 * what it names, so lookup counts need no bookkeeping there.
 *
 * inode_decode() is the classifier every request goes through: the kind
 * comes from the number's shape alone, then one lookup finds what it names:
 * the session by id in fs/'s own hash table (fs/parked.h), its tool scope
 * or the global one, or a tool file's entry by number (tools_entry_by_id(),
 * sessions/tools.h, whose cost is the registry's).  A number
 * whose referent is gone keeps its kind, so that a request on a handle
 * still open on it (read, release of a closed session's output) reaches the
 * facility that owns the handle, which answers ENOENT or frees it. */
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <stdint.h>

struct fs;
struct fs_session;
struct session;
struct tool_scope;
struct tool_entry;

enum root_node {
        ROOT_NODE_DIR = FUSE_ROOT_ID,
        ROOT_NODE_README,
        ROOT_NODE_CLONE,
        ROOT_NODE_CONFIG,
        ROOT_NODE_STATS,
        ROOT_NODE_SESSIONS,
        ROOT_NODE_TOOLS,
        ROOT_NODE_TOOLS_ERRORS, /* tools/.errors */
        ROOT_NODE_LAST = ROOT_NODE_TOOLS_ERRORS
};

/* The nodes of one session (the values are part of the numbers). */
enum session_node {
        SESSION_NODE_DIR = 0,
        SESSION_NODE_INPUT,
        SESSION_NODE_EVAL,
        SESSION_NODE_OUTPUT,
        SESSION_NODE_ERROR,
        SESSION_NODE_CONSOLE,
        SESSION_NODE_STATUS,
        SESSION_NODE_RESULT,
        SESSION_NODE_VALUE,
        SESSION_NODE_CTL,
        SESSION_NODE_TIMEOUT,
        SESSION_NODE_LIMITS,
        SESSION_NODE_LOG,
        SESSION_NODE_TOOLS,        /* sessions/N/tools/ */
        SESSION_NODE_FILES,        /* sessions/N/files/ */
        SESSION_NODE_FORK,         /* sessions/N/fork (fs/fork.c) */
        SESSION_NODE_SNAPSHOT,     /* sessions/N/snapshot (fs/fork.c) */
        SESSION_NODE_TOOLS_ERRORS, /* sessions/N/tools/.errors (not in sessions/N/) */
        SESSION_NODE_COUNT
};
#define SESSION_STRIDE 32
_Static_assert(SESSION_NODE_COUNT <= SESSION_STRIDE, "a session's nodes fit its stride");

#define INODE_TOOL_BIT (1ULL << 62)
#define INODE_FILES_BIT (1ULL << 61)
#define INODE_FILES_UNKNOWN_BIT (1ULL << 60)

/* What a number names, by the facility that serves it. */
enum inode_kind {
        INODE_NONE,         /* a number this daemon never hands out */
        INODE_ROOT_DIR,     /* / (fs/root.c) */
        INODE_ROOT_FILE,    /* README, clone, config, stats: .root (fs/root.c) */
        INODE_SESSIONS_DIR, /* sessions/ (fs/root.c) */
        INODE_SESSION_DIR,  /* sessions/N/ (fs/session_dir.c) */
        INODE_SESSION_FILE, /* sessions/N/input, output, ...: .file (fs/session_dir.c) */
        INODE_TOOLS_DIR,    /* tools/ or sessions/N/tools/: .scope (fs/tools_dir.c) */
        INODE_TOOLS_ERRORS, /* the .errors of one: .scope (fs/tools_dir.c) */
        INODE_TOOL_FILE,    /* a NAME.json in one: .tool, .scope (fs/tools_dir.c) */
        INODE_FILES,        /* sessions/N/files/ itself (.state set) or a node below it (fs/files.h) */
};

/* A decoded inode number.  Pointers are NULL when what they would point at
 * is gone or does not apply. */
struct inode_ref {
        enum inode_kind kind;
        fuse_ino_t ino;
        enum root_node root;       /* INODE_ROOT_FILE */
        enum session_node file;    /* INODE_SESSION_FILE */
        struct fs_session *state;  /* the session's kinds: fs/'s state of that session */
        struct session *session;   /* ... and the session itself */
        struct tool_scope *scope;  /* INODE_TOOLS_DIR, INODE_TOOLS_ERRORS, INODE_TOOL_FILE */
        struct tool_entry *tool;   /* INODE_TOOL_FILE: the entry, also one unlinked but still open */
};

/* Decode ino into *ref (always filled; the kind is INODE_NONE for a
 * number never handed out).  0 when what it names exists, -ENOENT when it
 * is gone or never was.  For a node below files/ the answer is 0: whether
 * its node still exists is fs/files_node.c's to say.  Constant time, but
 * for a tool file's entry (see above). */
int inode_decode(struct fs *fs, fuse_ino_t ino, struct inode_ref *ref);

/* The number of node n of the session with number id. */
static inline fuse_ino_t inode_of_session(uint64_t id, enum session_node n) {
        return id * SESSION_STRIDE + (fuse_ino_t)n;
}
/* The number of the tool file with entry number id. */
static inline fuse_ino_t inode_of_tool(uint64_t id) { return INODE_TOOL_BIT | id; }
/* The number of a tools/ directory's .errors. */
fuse_ino_t inode_of_tools_errors(const struct tool_scope *sc);
