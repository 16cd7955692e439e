/* Descriptors passed over unix sockets (SCM_RIGHTS, unix(7)): the one codec
 * for the zygote's, the keeper's and the worker's channels, which each carry
 * a few descriptors with a short message.
 *
 * Process context: anywhere; received descriptors are close-on-exec. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* The most descriptors one message carries; more are refused (-EBADMSG). */
#define FDPASS_MAX 8

/* Send len bytes of buf as one message, with the descriptors fds[0..n_fds)
 * that are >= 0 attached to it (at most FDPASS_MAX).  flags: sendmsg's
 * (MSG_NOSIGNAL, MSG_DONTWAIT).  Retries on EINTR.  Returns the bytes sent
 * (a stream socket may take fewer; the descriptors go with the first byte),
 * or -errno. */
ssize_t fdpass_send(int sock, const void *buf, size_t len, const int *fds, size_t n_fds, int flags);

/* Receive one message of at most size bytes into buf, and the descriptors
 * that came with it (MSG_CMSG_CLOEXEC): the first max_fds into fds, *n_fds of
 * them, any others closed.  flags: recvmsg's (MSG_DONTWAIT).  Retries on
 * EINTR.  Returns the bytes (0: end of file), or -errno: -EBADMSG when the
 * message or its descriptors were cut (MSG_TRUNC, MSG_CTRUNC: a datagram
 * longer than size, more than FDPASS_MAX descriptors), with every
 * descriptor of it closed and *n_fds 0.  buf is not NUL-terminated. */
ssize_t fdpass_recv(int sock, void *buf, size_t size, int *fds, size_t max_fds, size_t *n_fds, int flags);
