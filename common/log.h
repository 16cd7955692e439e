/* One small logging module with levels, to stderr.  Only the top level of a
 * call chain logs; lower functions return -errno and let the caller say what
 * it was doing. */
#pragma once

enum log_level { LOG_ERR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern enum log_level log_max_level;

/* Set the prefix printed before every line ("securerfs", "worker 123"). */
void log_set_prefix(const char *prefix);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                  \
        do {                                                            \
                if (log_max_level >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); \
        } while (0)
