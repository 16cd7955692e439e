#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum log_level log_max_level = LOG_INFO;
static char log_prefix[64] = "securerfs";

void log_set_prefix(const char *prefix) {
        snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

void log_msg(enum log_level level, const char *fmt, ...) {
        static const char *const names[] = {"error", "warning", "info", "debug"};
        char line[2048];
        va_list ap;
        int n;

        if (level > log_max_level)
                return;
        n = snprintf(line, sizeof(line), "%s: %s: ", log_prefix, names[level]);
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        /* One write per line so that lines of several processes sharing the
         * daemon's stderr do not interleave. */
        n = (int)strlen(line);
        if (n < (int)sizeof(line) - 1) {
                line[n++] = '\n';
                line[n] = '\0';
        }
        fputs(line, stderr);
        fflush(stderr);
}
