/* A session's state between one of the daemon's files and a worker, through
 * a pipe (docs/security.md, "Round 4", finding 7).  The worker is handed one
 * end of a pipe, never a descriptor of the daemon's file (a state_dir
 * checkpoint's NAME.snap, a sessions/N/snapshot memfd): a thread of the
 * session's code that keeps a copy of what it was handed can then neither
 * change the file later nor pin it (or its memory) once the copy is over —
 * the daemon closes its end, and later writes get EPIPE.
 *
 * The bytes are moved by a thread of the daemon's, one per copy, never by
 * the event loop: the file may be on a slow disk and the worker may stall.
 * The thread touches only its own descriptors; the loop learns of its end
 * through an eventfd.
 *
 * Process context: the daemon's event loop (the thread is internal). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct loop;
struct state_copy;

/* The name of a copy's thread (its comm). */
#define STATE_COPY_THREAD_NAME "securerfs-copy"

/* Called once, on the loop, when the copy is over and its thread gone:
 * err 0, or err < 0 with why (-EFBIG: the worker wrote more than the
 * bound; -EIO: the file could not be read or written). */
typedef void (*state_copy_fn)(void *data, int err, const char *why);

/* Run by a copy out of a file on its thread, before the first byte goes
 * into the pipe (a check of the file whose time grows with it: the loop
 * must not wait on it).  0 to copy; else -errno with why (at most n bytes):
 * the pipe is closed with nothing in it and fn gets err and why. */
typedef int (*state_copy_check_fn)(void *arg, int file_fd, char *why, size_t n);

/* Start a copy.  to_file: from pipe_fd (a pipe's read end) into file_fd at
 * off, at most limit bytes (limit < 0: no bound), until the writer closes
 * its end or state_copy_stop; then fsync(file_fd).  Else: limit bytes of
 * file_fd from off into pipe_fd (a write end), which is then closed (the
 * reader sees the end of the stream).  pipe_fd is taken in every case
 * (closed when the copy ends, or at once on failure); file_fd stays the
 * caller's and must stay open until fn.  check: NULL, or (a copy out of
 * the file) what the thread runs first, with check_arg, which must stay
 * until fn.  0 (fn comes later), or -errno. */
int state_copy_start(struct loop *l, int pipe_fd, int file_fd, off_t off, long long limit, bool to_file,
                     state_copy_check_fn check, void *check_arg, state_copy_fn fn, void *data,
                     struct state_copy **out);

/* The worker answered, or is gone: a copy into the file takes what is in
 * the pipe now (an honest worker wrote everything before it answered) and
 * ends; a copy out of the file ends now.  fn still comes, from the loop. */
void state_copy_stop(struct state_copy *c);

/* The daemon stops: as state_copy_stop, then wait for the thread here and
 * call fn now (c is freed).  Off the loop's turn: the loop does not run
 * again. */
void state_copy_end_now(struct state_copy *c);
