/* Small files written or read in one system call: kernel interfaces
 * (cgroupfs, /proc/PID/uid_map, /proc/sys) where one write(2) is one
 * request — uid_map is parsed per write, a cgroup limit is applied per write
 * — so a short or split write is an error, not something to retry.
 *
 * Process context: anywhere, including a forked child before execve (only
 * async-signal-safe calls). */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Write text (without its NUL) to path, relative to dirfd (AT_FDCWD for the
 * current directory), opened O_WRONLY | O_CLOEXEC | O_NOFOLLOW | flags with
 * mode (for O_CREAT), in one write(2).  0 or -errno (-EIO for a short
 * write). */
int small_file_write(int dirfd, const char *path, const char *text, int flags, mode_t mode);

/* Read at most size-1 bytes of path (relative to dirfd) in one read(2) into
 * buf, NUL-terminated.  Returns the length read, or -errno. */
long small_file_read(int dirfd, const char *path, char *buf, size_t size);
