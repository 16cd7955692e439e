#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "escape.h"

enum log_level log_max_level = LOG_INFO;
static char log_prefix[64] = "securerfs";

void log_set_prefix(const char *prefix) {
        snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

void log_msg(enum log_level level, const char *fmt, ...) {
        static const char *const names[] = {"error", "warning", "info", "debug"};
        char msg[2048], line[64 + 16 + sizeof(msg) * TEXT_ESCAPE_GROWTH + 2];
        va_list ap;
        int n;
        size_t len;

        if (level > log_max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        /* The message may carry what a session chose (a tool file name, a
         * ctl command, R's own words): every control character is escaped,
         * so that it can neither start a line of its own (a forged log
         * entry) nor reach the terminal the log is read on
         * (common/escape.h). */
        n = snprintf(line, sizeof(line), "%s: %s: ", log_prefix, names[level]);
        len = (size_t)n + text_escape(msg, strlen(msg), line + n, 0);
        /* One write per line so that lines of several processes sharing the
         * daemon's stderr do not interleave. */
        line[len++] = '\n';
        line[len] = '\0';
        fputs(line, stderr);
        fflush(stderr);
}
