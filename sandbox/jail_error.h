/* The one-line reason of a failed jail step, "<what was attempted>:
 * <strerror>" (e.g. "mount proc on /proc: Operation not permitted"), which
 * the worker sends up as "fatal" and the session shows (docs/sandbox.md).
 * Every facility of the jail (user_ns, mounts, capabilities) and the
 * orchestrator (jail.c) write their first failure through this.
 *
 * Process context: the child being jailed (and the zygote for the id maps);
 * no allocation. */
#pragma once

#include <stddef.h>

struct jail_error {
        char *buf; /* the caller's buffer; NULL: say nothing */
        size_t len;
};

/* Write "<fmt...>: <strerror(-r)>" into e and return r (-EIO when r is not
 * negative), so that a failing step reads `return jail_fail(e, -errno,
 * "mount proc on %s", path);`. */
int jail_fail(struct jail_error *e, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
