#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "log.h"

struct audit {
        int fd;
        char *path;
};

int audit_open(const char *path, struct audit **out) {
        struct audit *a;
        struct stat st;
        int fd;

        /* O_NOFOLLOW: a symlink planted at the path must not redirect the
         * log; O_APPEND: lines from one write(2) each never interleave. */
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return -EINVAL;
        }
        if ((st.st_mode & 0777) != 0600 && fchmod(fd, 0600) < 0) {
                int e = -errno;
                close(fd);
                return e;
        }
        a = calloc(1, sizeof(*a));
        if (!a || !(a->path = strdup(path))) {
                free(a);
                close(fd);
                return -ENOMEM;
        }
        a->fd = fd;
        *out = a;
        return 0;
}

void audit_close(struct audit *a) {
        if (!a)
                return;
        close(a->fd);
        free(a->path);
        free(a);
}

char *audit_format(json_t *ev, size_t *len) {
        struct timespec ts;
        struct tm tm;
        char stamp[40], *text, *line;
        size_t n;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000);
        json_object_set_new(ev, "time", json_string(stamp));
        text = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(ev);
        if (!text)
                return NULL;
        n = strlen(text);
        /* jansson escapes the C0 controls but writes DEL and the C1
         * controls (U+0080-U+009F) raw, and these lines are read with cat
         * (the log file, the session's log): those become \u00HH, the same
         * JSON value (common/escape.h). */
        if (text_needs_escape(text, n, ESCAPE_JSON)) {
                char *escaped = text_escape_dup(text, n, ESCAPE_JSON, &n);
                free(text);
                if (!escaped)
                        return NULL;
                text = escaped;
        }
        line = realloc(text, n + 2);
        if (!line) {
                free(text);
                return NULL;
        }
        line[n] = '\n';
        line[n + 1] = '\0';
        *len = n + 1;
        return line;
}

void audit_write(struct audit *a, const char *line, size_t len) {
        ssize_t n;

        if (!a)
                return;
        n = write(a->fd, line, len);
        if (n != (ssize_t)len) {
                static int warned;
                if (!warned++)
                        log_warn("audit log %s: write failed: %s", a->path, n < 0 ? strerror(errno) : "short write");
        }
}
