/* The inode classifier (fs/inode.h has the numbering). */
#include "inode.h"

#include <errno.h>

#include "fs_private.h"
#include "parked.h"
#include "sessions/session.h"
#include "sessions/tools.h"

/* The fixed numbers that name something in the root.  tools/ and its
 * .errors decode as the global scope's. */
static enum inode_kind root_kind(fuse_ino_t ino) {
        switch ((enum root_node)ino) {
        case ROOT_NODE_DIR: return INODE_ROOT_DIR;
        case ROOT_NODE_README:
        case ROOT_NODE_CLONE:
        case ROOT_NODE_CONFIG:
        case ROOT_NODE_STATS: return INODE_ROOT_FILE;
        case ROOT_NODE_SESSIONS: return INODE_SESSIONS_DIR;
        case ROOT_NODE_TOOLS: return INODE_TOOLS_DIR;
        case ROOT_NODE_TOOLS_ERRORS: return INODE_TOOLS_ERRORS;
        }
        return INODE_NONE;
}

static enum inode_kind session_kind(enum session_node n) {
        switch (n) {
        case SESSION_NODE_DIR: return INODE_SESSION_DIR;
        case SESSION_NODE_TOOLS: return INODE_TOOLS_DIR;
        case SESSION_NODE_TOOLS_ERRORS: return INODE_TOOLS_ERRORS;
        case SESSION_NODE_FILES: return INODE_FILES;
        case SESSION_NODE_COUNT: return INODE_NONE;
        default: return INODE_SESSION_FILE;
        }
}

int inode_decode(struct fs *fs, fuse_ino_t ino, struct inode_ref *ref) {
        *ref = (struct inode_ref){.kind = INODE_NONE, .ino = ino};
        if (ino >> 63)
                return -ENOENT;
        if (ino & INODE_TOOL_BIT) {
                ref->kind = INODE_TOOL_FILE;
                ref->tool = tools_entry_by_id(sessions_tools(fs->sessions), ino & ~INODE_TOOL_BIT);
                if (!ref->tool)
                        return -ENOENT;
                ref->scope = tool_entry_scope(ref->tool);
                return 0;
        }
        if (ino & INODE_FILES_BIT) {
                ref->kind = INODE_FILES;
                return 0;
        }
        if (ino <= ROOT_NODE_LAST) {
                ref->kind = root_kind(ino);
                if (ref->kind == INODE_ROOT_FILE)
                        ref->root = (enum root_node)ino;
                if (ref->kind == INODE_TOOLS_DIR || ref->kind == INODE_TOOLS_ERRORS)
                        ref->scope = tools_global(sessions_tools(fs->sessions));
                return ref->kind == INODE_NONE ? -ENOENT : 0;
        }
        if (ino < SESSION_STRIDE)
                return -ENOENT;
        ref->file = (enum session_node)(ino % SESSION_STRIDE);
        ref->kind = session_kind(ref->file);
        if (ref->kind == INODE_NONE)
                return -ENOENT;
        ref->state = fs_session_find(fs, ino / SESSION_STRIDE);
        if (!ref->state)
                return -ENOENT;
        ref->session = ref->state->session;
        if (ref->kind == INODE_TOOLS_DIR || ref->kind == INODE_TOOLS_ERRORS) {
                ref->scope = session_tool_scope(ref->session);
                if (!ref->scope)
                        return -ENOENT;
        }
        return 0;
}

fuse_ino_t inode_of_tools_errors(const struct tool_scope *sc) {
        uint64_t sid = tool_scope_session_id(sc);

        return sid ? inode_of_session(sid, SESSION_NODE_TOOLS_ERRORS) : ROOT_NODE_TOOLS_ERRORS;
}
