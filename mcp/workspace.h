/* The session's workspace (sessions/N/files/) as the MCP tools reach it.
 *
 * Paths come from the model, and the files from the sandboxed code: both are
 * untrusted.  A path is relative to the workspace, with no ".." component;
 * it is walked one component at a time from a descriptor of files/, each
 * step with O_NOFOLLOW, so no symbolic link is ever followed (the code may
 * have made any), and the mount itself refuses links that lead out
 * (ELOOP).  Files are opened O_NONBLOCK and checked to be regular before a
 * byte is read, so a FIFO the code made cannot stall the server. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define WORKSPACE_PATH_MAX 4095

/* Is path acceptable: 1..WORKSPACE_PATH_MAX bytes, not absolute, no ".."
 * component, and (unless allow_root) naming something below the
 * workspace rather than the workspace itself?  Empty and "." components
 * are ignored ("./a//b" is "a/b").  Returns 0, or -EINVAL with *why set. */
int workspace_check_path(const char *path, bool allow_root, const char **why);

/* Read at most max bytes of the regular file at path.  *data is malloc'ed
 * (NUL-terminated, for convenience), *len its length, *size the file's
 * size (more than *len when the file was cut).  Returns 0 or -errno:
 * ELOOP for a symbolic link, EISDIR for a directory, EINVAL for a path
 * workspace_check_path() refuses, EPERM for anything that is not a
 * regular file. */
int workspace_read(int files_fd, const char *path, size_t max, char **data, size_t *len, size_t *size);

/* Replace the file at path by data, creating the directories it needs.
 * The bytes go to a temporary file first, renamed over path only when all
 * of them were written: a failure (ENOSPC when the workspace is full)
 * leaves the old file as it was.  Returns 0 or -errno. */
int workspace_write(int files_fd, const char *path, const void *data, size_t len);

/* pread(2), again after EINTR: the bytes read (0 at end of file) or -errno. */
ssize_t pread_retry(int fd, void *buf, size_t n, off_t off);

/* Write all len bytes of data to fd (a blocking descriptor; short writes
 * and EINTR are retried), then close fd: close() is the FUSE flush, so its
 * error is the write's.  0 or the first -errno. */
int write_all_close(int fd, const void *data, size_t len);

/* The entries below path ("" or "." for the workspace), recursively when
 * recursive (never through a link), as an array of {"path","type","size"}
 * (type: "file", "directory", "symlink" or "other"; links also have
 * "target" when the mount lets it be read), sorted by path, at most max
 * (then *truncated).  Returns 0 or -errno. */
int workspace_list(int files_fd, const char *path, bool recursive, size_t max, json_t **entries, bool *truncated);
