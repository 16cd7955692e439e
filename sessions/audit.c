#include "audit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "text.h"
#include "log.h"

struct audit {
        int fd;
        char *path;
};

#define AUDIT_STAMP_MAX 40

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

/* The "time" member's value, UTC with milliseconds.  The date and time of
 * day are formatted once a second: a run writes two lines. */
static void audit_stamp(char stamp[AUDIT_STAMP_MAX]) {
        static time_t cached_sec = (time_t)-1;
        static char cached[32];
        static size_t cached_len;
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        if (ts.tv_sec != cached_sec) {
                struct tm tm;

                gmtime_r(&ts.tv_sec, &tm);
                cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
                cached_sec = ts.tv_sec;
        }
        memcpy(stamp, cached, cached_len);
        snprintf(stamp + cached_len, AUDIT_STAMP_MAX - cached_len, ".%03ldZ", ts.tv_nsec / 1000000);
}

char *audit_format(json_t *ev, size_t *len) {
        char stamp[AUDIT_STAMP_MAX], *text, *line;
        size_t n;

        audit_stamp(stamp);
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

/* ---- the two lines of every run, without a JSON tree ------------------------ */

#define append_literal(t, lit) text_append((t), (lit), sizeof(lit) - 1)

/* s[0..n) (valid UTF-8) as a JSON string, byte for byte as jansson's
 * encoder writes it here (no JSON_ENSURE_ASCII, no JSON_ESCAPE_SLASH): the
 * quote, the backslash and the C0 controls escaped (\b \f \n \r \t, the
 * others \u00XX in upper case), everything else as it is.  DEL and C1 are
 * the line's escape pass's (finish_line). */
static int append_json_string(struct text *t, const char *s, size_t n) {
        size_t run = 0;
        int e = append_literal(t, "\"");

        for (size_t i = 0; i < n && e >= 0; i++) {
                unsigned char c = (unsigned char)s[i];
                char esc[8];
                const char *rep = NULL;

                if (c >= 0x20 && c != '"' && c != '\\')
                        continue;
                switch (c) {
                case '"': rep = "\\\""; break;
                case '\\': rep = "\\\\"; break;
                case '\b': rep = "\\b"; break;
                case '\f': rep = "\\f"; break;
                case '\n': rep = "\\n"; break;
                case '\r': rep = "\\r"; break;
                case '\t': rep = "\\t"; break;
                default:
                        snprintf(esc, sizeof(esc), "\\u%04X", c);
                        rep = esc;
                }
                if ((e = text_append(t, s + run, i - run)) >= 0)
                        e = text_append(t, rep, strlen(rep));
                run = i + 1;
        }
        if (e >= 0)
                e = text_append(t, s + run, n - run);
        if (e >= 0)
                e = append_literal(t, "\"");
        return e;
}

/* End the line: session and time members, the closing brace, DEL and C1
 * escaped as audit_format() does, "\n".  Takes t's bytes. */
static char *finish_line(struct text *t, const char *session, size_t *len) {
        char stamp[AUDIT_STAMP_MAX], *line, *escaped;
        size_t n;
        int e;

        audit_stamp(stamp);
        e = append_literal(t, ",\"session\":");
        if (e >= 0)
                e = append_json_string(t, session, strlen(session));
        if (e >= 0)
                e = append_literal(t, ",\"time\":\"");
        if (e >= 0)
                e = text_append(t, stamp, strlen(stamp));
        if (e >= 0)
                e = append_literal(t, "\"}\n");
        if (e < 0) {
                text_free(t);
                return NULL;
        }
        if (!text_needs_escape(t->data, t->len - 1, ESCAPE_JSON)) {
                line = text_steal(t, len);
                return line;
        }
        escaped = text_escape_dup(t->data, t->len - 1, ESCAPE_JSON, &n);
        text_free(t);
        line = escaped ? realloc(escaped, n + 2) : NULL;
        if (!line) {
                free(escaped);
                return NULL;
        }
        line[n] = '\n';
        line[n + 1] = '\0';
        *len = n + 1;
        return line;
}

char *audit_format_run_start(const char *session, uint64_t seq, const char *code, size_t code_len, size_t code_bytes,
                             size_t *len) {
        struct text t = {0};
        char num[64];
        int e;

        snprintf(num, sizeof(num), "%" PRIu64, seq);
        e = text_reserve(&t, code_len + 160);
        if (e >= 0)
                e = append_literal(&t, "{\"event\":\"run_start\",\"seq\":");
        if (e >= 0)
                e = text_append(&t, num, strlen(num));
        if (e >= 0)
                e = append_literal(&t, ",\"code\":");
        if (e >= 0)
                e = append_json_string(&t, code, code_len);
        if (e >= 0) {
                snprintf(num, sizeof(num), ",\"code_bytes\":%zu", code_bytes);
                e = text_append(&t, num, strlen(num));
        }
        if (e < 0) {
                text_free(&t);
                return NULL;
        }
        return finish_line(&t, session, len);
}

char *audit_format_run_end(const char *session, uint64_t seq, const char *status, double elapsed_ms, size_t *len) {
        struct text t = {0};
        char num[96];
        int n, e;

        /* A real as jansson writes it: %.17g, and ".0" when that reads as an
         * integer.  An exponent (never for a run's milliseconds, which are
         * whole microseconds) is jansson's own to write. */
        n = snprintf(num, sizeof(num), "%.17g", elapsed_ms);
        if (n <= 0 || (size_t)n >= sizeof(num) - 3 || strchr(num, 'e') || !isfinite(elapsed_ms))
                return NULL;
        if (!strchr(num, '.'))
                strcat(num, ".0");
        e = text_reserve(&t, 200);
        if (e >= 0)
                e = append_literal(&t, "{\"event\":\"run_end\",\"seq\":");
        if (e >= 0) {
                char seqs[32];
                snprintf(seqs, sizeof(seqs), "%" PRIu64, seq);
                e = text_append(&t, seqs, strlen(seqs));
        }
        if (e >= 0)
                e = append_literal(&t, ",\"status\":");
        if (e >= 0)
                e = append_json_string(&t, status, strlen(status));
        if (e >= 0)
                e = append_literal(&t, ",\"elapsed_ms\":");
        if (e >= 0)
                e = text_append(&t, num, strlen(num));
        if (e < 0) {
                text_free(&t);
                return NULL;
        }
        return finish_line(&t, session, len);
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
