/* The one-line reason of a failed jail step (sandbox/jail_error.h). */
#include "jail_error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int jail_fail(struct jail_error *e, int r, const char *fmt, ...) {
        va_list ap;
        int n;

        if (r >= 0)
                r = -EIO;
        if (!e->buf || e->len == 0)
                return r;
        va_start(ap, fmt);
        n = vsnprintf(e->buf, e->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < e->len)
                snprintf(e->buf + n, e->len - (size_t)n, ": %s", strerror(-r));
        return r;
}
