/* The inode cap of a tmpfs of bytes (nr_inodes=): without one a tmpfs
 * allows half of RAM's pages in inodes, and empty files cost kernel memory
 * that size= does not count.  One inode per 4 KiB page of the cap, at least
 * 1024.  The jail's /tmp and /work and the keeper's workspaces use it, and
 * a snapshot's entries are held to it (sessions/snapshot_file.c). */
#pragma once

static inline unsigned long long tmpfs_inodes(unsigned long long bytes) {
        return bytes / 4096 > 1024 ? bytes / 4096 : 1024;
}
