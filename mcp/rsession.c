#include "rsession.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "macros.h"
#include "workspace.h"

/* result.json is at most the worker's largest frame (16 MiB) plus the
 * console (console_max_bytes, 1 MiB by default) and a little: this bound
 * only stops a broken mount from making us read forever. */
#define RESULT_MAX (64u << 20)
/* A tool definition is a small JSON file. */
#define TOOL_FILE_MAX (256u << 10)

bool rsession_name_ok(const char *name) {
        size_t n = strlen(name);

        if (n < 1 || n > 64 || name[0] == '.')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-'))
                        return false;
        }
        return true;
}

/* Write all of data to dirfd/name (O_TRUNC), checking close(): the FUSE
 * flush is where the mount refuses a value. */
static int write_file_at(int dirfd, const char *name, const char *data, size_t len) {
        int fd = openat(dirfd, name, O_WRONLY | O_TRUNC | O_CLOEXEC);

        return fd < 0 ? -errno : write_all_close(fd, data, len);
}

/* Read all of fd from offset 0 (at most max bytes; -EFBIG beyond) into a
 * malloc'ed, NUL-terminated buffer.  With short_is_eof, a read that returns
 * less than asked is the end: true of the mount's own files, which are
 * direct_io and answered whole up to their end (fs/fs.c reply_from), and it
 * saves a FUSE request per run. */
static int read_all(int fd, size_t max, bool short_is_eof, char **out, size_t *out_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0;

        for (;;) {
                ssize_t n;
                if (len + 1 >= cap) {
                        size_t ncap = cap ? cap * 2 : 4096;
                        char *p;
                        if (cap > max)
                                return -EFBIG;
                        p = realloc(buf, ncap);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        cap = ncap;
                }
                n = pread_retry(fd, buf + len, cap - len - 1, (off_t)len);
                if (n < 0)
                        return (int)n;
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len > max)
                        return -EFBIG;
                if (short_is_eof && len + 1 < cap)
                        break;
        }
        buf[len] = '\0';
        *out = TAKE_PTR(buf);
        *out_len = len;
        return 0;
}

static int read_small_at(int dirfd, const char *name, char *buf, size_t cap) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, cap - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return 0;
}

static void rsession_free(struct rsession *s) {
        if (!s)
                return;
        closep(&s->result_fd);
        closep(&s->console_fd);
        closep(&s->status_fd);
        closep(&s->files_fd);
        closep(&s->dir_fd);
        closep(&s->sessions_fd);
        free(s);
}

int rsession_open(const char *mount, const char *name, double timeout_s, struct rsession **out, char *err,
                  size_t errlen) {
        struct rsession *s = calloc(1, sizeof(*s));
        char path[PATH_MAX], buf[64];
        int r;

        if (!s)
                return -ENOMEM;
        s->sessions_fd = s->dir_fd = s->files_fd = s->result_fd = s->console_fd = s->status_fd = -1;
        snprintf(path, sizeof(path), "%s/sessions", mount);
        s->sessions_fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (s->sessions_fd < 0) {
                r = -errno;
                snprintf(err, errlen, "%s: %s (is a securerfs mounted at %s?)", path, strerror(-r), mount);
                goto fail;
        }
        if (!name) {
                /* Plan 9's clone file: each open+read makes a session. */
                _cleanup_close_ int fd = -1;
                ssize_t n;

                snprintf(path, sizeof(path), "%s/clone", mount);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || (n = read(fd, buf, sizeof(buf) - 1)) < 0) {
                        r = -errno;
                        snprintf(err, errlen, "a new session (%s): %s", path, strerror(-r));
                        goto fail;
                }
                buf[n] = '\0';
                buf[strcspn(buf, "\n")] = '\0';
                if (!rsession_name_ok(buf)) {
                        r = -EPROTO;
                        snprintf(err, errlen, "%s gave no session name", path);
                        goto fail;
                }
                snprintf(s->name, sizeof(s->name), "%s", buf);
                s->owned = true;
        } else {
                if (!rsession_name_ok(name)) {
                        r = -EINVAL;
                        snprintf(err, errlen, "bad session name \"%s\": 1-64 of A-Z a-z 0-9 . _ -, not starting with .",
                                 name);
                        goto fail;
                }
                snprintf(s->name, sizeof(s->name), "%s", name);
                if (mkdirat(s->sessions_fd, name, 0755) < 0 && errno != EEXIST) {
                        r = -errno;
                        snprintf(err, errlen, "mkdir %s/sessions/%s: %s", mount, name, strerror(-r));
                        goto fail;
                }
        }
        s->dir_fd = openat(s->sessions_fd, s->name, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (s->dir_fd >= 0)
                s->files_fd = openat(s->dir_fd, "files", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (s->files_fd >= 0)
                s->result_fd = openat(s->dir_fd, "eval", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (s->result_fd >= 0)
                s->console_fd = openat(s->dir_fd, "console", O_RDONLY | O_CLOEXEC);
        if (s->console_fd >= 0)
                s->status_fd = openat(s->dir_fd, "status", O_RDONLY | O_CLOEXEC);
        if (s->status_fd < 0) {
                r = -errno;
                snprintf(err, errlen, "session %s: %s", s->name, strerror(-r));
                goto fail;
        }
        if (timeout_s >= 0) {
                int n = snprintf(buf, sizeof(buf), "%.17g\n", timeout_s);
                r = write_file_at(s->dir_fd, "timeout", buf, (size_t)n);
                if (r < 0) {
                        snprintf(err, errlen, "session %s: setting its timeout to %g s: %s", s->name, timeout_s,
                                 strerror(-r));
                        goto fail;
                }
        }
        r = read_small_at(s->dir_fd, "timeout", buf, sizeof(buf));
        if (r < 0) {
                snprintf(err, errlen, "session %s: reading its timeout: %s", s->name, strerror(-r));
                goto fail;
        }
        s->timeout_s = strtod(buf, NULL);
        if (!isfinite(s->timeout_s) || s->timeout_s < 0)
                s->timeout_s = 0;
        *out = s;
        return 0;
fail:
        if (s->owned && s->sessions_fd >= 0)
                unlinkat(s->sessions_fd, s->name, AT_REMOVEDIR);
        rsession_free(s);
        return r;
}

void rsession_close(struct rsession *s) {
        if (!s)
                return;
        /* Descriptors first: the mount closes a session also while files of
         * it are open, but there is no reason to keep them. */
        closep(&s->result_fd);
        s->result_fd = -1;
        if (s->owned)
                unlinkat(s->sessions_fd, s->name, AT_REMOVEDIR);
        rsession_free(s);
}

int rsession_run_begin(struct rsession *s, const char *code, size_t len) {
        if (len == 0)
                return -EINVAL; /* a write of nothing is no program (README) */
        /* The program, at offset 0 of eval: one WRITE (the mount takes a
         * program up to max_code_bytes in one, which is within the
         * kernel's max_write only when small, so loop). */
        for (size_t done = 0; done < len;) {
                ssize_t n = pwrite(s->result_fd, code + done, len - done, (off_t)done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                done += (size_t)n;
        }
        /* The first read after the writes starts the run; O_NONBLOCK: it
         * answers EAGAIN until the run ends (or the result at once, when the
         * run ended inside it: code that is not UTF-8), and POLLIN comes
         * then.  rsession_run_finish() reads the result from offset 0. */
        for (;;) {
                char b;
                ssize_t n = pread(s->result_fd, &b, 1, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN)
                        return -errno;
                break;
        }
        s->running = true;
        s->seen_running = false;
        s->console_off = 0;
        return 0;
}

int rsession_run_finish(struct rsession *s, json_t **result) {
        _cleanup_free_ char *text = NULL;
        json_t *j, *status;
        size_t len;
        int r;

        r = read_all(s->result_fd, RESULT_MAX, true, &text, &len);
        if (r < 0)
                return r; /* -EAGAIN while the run goes on (O_NONBLOCK) */
        s->running = false;
        j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        status = json_object_get(j, "status");
        if (!json_is_object(j) || !json_is_string(status)) {
                json_decref(j);
                return -EPROTO;
        }
        *result = j;
        return 0;
}

int rsession_console(struct rsession *s, char *buf, size_t cap, size_t *n) {
        ssize_t got;

        *n = 0;
        if (!s->seen_running) {
                /* Until the run reaches its worker, console is the previous
                 * run's (a session still starting queues the run). */
                char st[32];
                ssize_t k = pread(s->status_fd, st, sizeof(st) - 1, 0);
                if (k < 0)
                        return -errno;
                st[k] = '\0';
                if (strncmp(st, "running", 7) != 0)
                        return 0;
                s->seen_running = true;
        }
        got = pread(s->console_fd, buf, cap, (off_t)s->console_off);
        if (got < 0)
                return -errno;
        s->console_off += (size_t)got;
        *n = (size_t)got;
        return 0;
}

int rsession_interrupt(struct rsession *s) {
        return write_file_at(s->dir_fd, "ctl", "interrupt\n", 10);
}

int rsession_restart(struct rsession *s) {
        return write_file_at(s->dir_fd, "ctl", "restart\n", 8);
}

/* ---- host tools ------------------------------------------------------------ */

/* Add the definitions of dir's NAME.json files to tools (an object: name ->
 * definition), replacing those already there. */
static void add_tools_from(json_t *tools, int dirfd, size_t max) {
        DIR *d = fdopendir(dirfd);
        struct dirent *de;

        if (!d) {
                close(dirfd);
                return;
        }
        while ((de = readdir(d)) && json_object_size(tools) < max) {
                size_t n = strlen(de->d_name);
                _cleanup_free_ char *text = NULL;
                _cleanup_json_ json_t *def = NULL;
                _cleanup_close_ int fd = -1;
                char name[NAME_MAX + 1];
                json_t *desc, *args, *entry, *a, *v;
                const char *k;
                size_t len;

                if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0 || de->d_name[0] == '.')
                        continue;
                memcpy(name, de->d_name, n - 5);
                name[n - 5] = '\0';
                fd = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || read_all(fd, TOOL_FILE_MAX, false, &text, &len) < 0)
                        continue;
                def = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
                desc = json_object_get(def, "description");
                args = json_object_get(def, "args");
                if (!json_is_string(desc) || !json_is_object(args))
                        continue;
                a = json_object();
                json_object_foreach(args, k, v) {
                        if (json_is_string(v))
                                json_object_set(a, k, v);
                }
                entry = json_pack("{s:s, s:O, s:o}", "name", name, "description", desc, "args", a);
                if (entry)
                        json_object_set_new(tools, name, entry);
        }
        closedir(d);
}

static int by_name(const void *a, const void *b) {
        return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
                      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

json_t *rsession_host_tools(const struct rsession *s, const char *mount, size_t max) {
        _cleanup_json_ json_t *tools = json_object();
        char path[PATH_MAX];
        json_t **v, *arr, *t;
        const char *k;
        size_t n = 0;
        int fd;

        if (!tools)
                return NULL;
        snprintf(path, sizeof(path), "%s/tools", mount);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0)
                add_tools_from(tools, fd, max);
        if (s) {
                fd = openat(s->dir_fd, "tools", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd >= 0)
                        add_tools_from(tools, fd, max); /* a session's own hides a global one */
        }
        v = calloc(json_object_size(tools) + 1, sizeof(*v));
        if (!v)
                return NULL;
        json_object_foreach(tools, k, t) v[n++] = t;
        qsort(v, n, sizeof(*v), by_name);
        arr = json_array();
        for (size_t i = 0; arr && i < n && i < max; i++)
                json_array_append(arr, v[i]);
        free(v);
        return arr;
}
