/* A session's state as a stream of records (docs/protocol.md, "The state
 * stream"): the worker writes its own on a snapshot frame and reads one on
 * a restore frame, each through a descriptor the daemon passed with the
 * frame (a pipe to another worker for a fork, a file for a snapshot).  The
 * daemon never reads the R part: R data made by untrusted code is
 * unserialized only here, inside the jail of the session it is restored
 * into.
 *
 * The stream (all integers big-endian), one record after another:
 *   kind (1 byte: 'R' the R state, 'D' a directory, 'F' a regular file,
 *   'L' a symbolic link, 'E' the end), 0, path length (u16), mode (u32,
 *   permission bits only), data length (u64), the path (relative to /work,
 *   components joined by '/'), the data (the R blob; a file's bytes; a
 *   link's target).  First one 'R', last one 'E'.
 *
 * Restoring follows the workspace's rules even here, inside the jail: each
 * path component is checked (no "", ".", "..", no NUL) and opened with
 * O_NOFOLLOW from /work's descriptor, files are created O_EXCL, modes lose
 * their set-id and sticky bits, nothing but the three kinds is made.
 *
 * Process context: a worker, jailed, between runs. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json_cleanup.h"
#include "macros.h"
#include "state_format.h"

static struct {
        SEXP snapshot_call, restore_call, alloc_call, check_call;
        json_t *notes; /* what could not be carried or restored: an array of strings */
} S;

/* ---- writing ------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t len) {
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int write_record(int fd, char kind, const char *path, mode_t mode, const void *data, uint64_t len) {
        unsigned char h[STATE_RECORD_HEADER];
        size_t plen = path ? strlen(path) : 0;
        int e;

        state_record_encode(h, kind, (unsigned)plen, (uint32_t)(mode & 0777), len);
        if ((e = write_all(fd, h, sizeof(h))) < 0 || (plen && (e = write_all(fd, path, plen)) < 0))
                return e;
        return data && len ? write_all(fd, data, len) : 0;
}

/* "files: PATH not carried (WHY)" */
static void note(const char *path, const char *why) {
        char buf[1024];

        snprintf(buf, sizeof(buf), "files: %s not carried (%s)", path, why);
        if (json_array_size(S.notes) < STATE_NOTES_MAX)
                json_array_append_new(S.notes, json_string(buf));
}

/* A regular file's bytes, copied from its descriptor. */
static int write_file(int out, int dirfd, const char *name, const char *path, const struct stat *st) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        unsigned char h[STATE_RECORD_HEADER];
        char buf[65536];
        uint64_t left = (uint64_t)st->st_size;
        int e;

        if (fd < 0) {
                note(path, strerror(errno));
                return 0;
        }
        state_record_encode(h, 'F', (unsigned)strlen(path), (uint32_t)(st->st_mode & 0777), left);
        if ((e = write_all(out, h, sizeof(h))) < 0 || (e = write_all(out, path, strlen(path))) < 0)
                return e;
        /* Exactly the size announced: a file that shrinks meanwhile is
         * padded with zeros, one that grows is cut (the code that changes
         * it is not running: only between runs). */
        while (left > 0) {
                ssize_t n = read(fd, buf, MIN(sizeof(buf), left));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        memset(buf, 0, sizeof(buf));
                        n = (ssize_t)MIN(sizeof(buf), left);
                }
                if ((e = write_all(out, buf, (size_t)n)) < 0)
                        return e;
                left -= (uint64_t)n;
        }
        return 0;
}

/* Every entry below dirfd (prefix its path), depth first, parents before
 * their children. */
static int write_tree(int out, int dirfd, const char *prefix, unsigned depth) {
        _cleanup_close_ int dup_fd = -1;
        DIR *d;
        struct dirent *de;
        int e = 0;

        if (depth > STATE_DEPTH_MAX) {
                note(prefix, "nested too deep");
                return 0;
        }
        dup_fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dup_fd < 0 || !(d = fdopendir(dup_fd)))
                return 0;
        dup_fd = -1; /* the DIR owns it */
        while (e == 0 && (de = readdir(d))) {
                char path[STATE_PATH_MAX + 1];
                struct stat st;

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if ((size_t)snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "/" : "", de->d_name) >=
                    sizeof(path)) {
                        note(prefix, "path too long");
                        continue;
                }
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode)) {
                        e = write_file(out, dirfd, de->d_name, path, &st);
                } else if (S_ISDIR(st.st_mode)) {
                        _cleanup_close_ int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                                                    O_CLOEXEC);
                        if (sub < 0)
                                continue;
                        if ((e = write_record(out, 'D', path, st.st_mode, NULL, 0)) == 0)
                                e = write_tree(out, sub, path, depth + 1);
                } else if (S_ISLNK(st.st_mode)) {
                        char target[STATE_PATH_MAX + 1];
                        ssize_t n = readlinkat(dirfd, de->d_name, target, sizeof(target));

                        if (n < 0 || (size_t)n >= sizeof(target))
                                note(path, "unreadable link");
                        else
                                e = write_record(out, 'L', path, 0777, target, (uint64_t)n);
                } else {
                        note(path, "not a file, directory or link");
                }
        }
        closedir(d);
        return e;
}

/* ---- reading --------------------------------------------------------------- */

static int read_all(int fd, void *buf, size_t len) {
        char *p = buf;

        while (len > 0) {
                ssize_t n = read(fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EPIPE; /* -EPIPE: cut short */
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Open the directory that holds path's last component, from root, one
 * component at a time without following links; *last points into path at
 * that component.  The descriptor, or -errno. */
static int open_parent(int root, char *path, const char **last) {
        int fd = dup(root);
        char *comp = path, *slash;

        if (fd < 0)
                return -errno;
        while ((slash = strchr(comp, '/'))) {
                int sub;

                *slash = '\0';
                sub = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                *slash = '/';
                close(fd);
                if (sub < 0)
                        return -errno;
                fd = sub;
                comp = slash + 1;
        }
        *last = comp;
        return fd;
}

/* Remove everything below dirfd, never following a link. */
static void clear_tree(int dirfd, unsigned depth) {
        _cleanup_close_ int dup_fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d;
        struct dirent *de;

        if (dup_fd < 0 || depth > STATE_DEPTH_MAX + 1 || !(d = fdopendir(dup_fd)))
                return;
        dup_fd = -1;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (unlinkat(dirfd, de->d_name, 0) < 0 && (errno == EISDIR || errno == EPERM)) {
                        _cleanup_close_ int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                                                    O_CLOEXEC);
                        if (sub >= 0) {
                                fchmod(sub, 0700);
                                clear_tree(sub, depth + 1);
                        }
                        unlinkat(dirfd, de->d_name, AT_REMOVEDIR);
                }
        }
        closedir(d);
}

struct dir_mode {
        char *path;
        mode_t mode;
};

/* One workspace entry of the stream; its data follows in fd. */
static int restore_entry(int in, int root, const struct state_record *rec, char *path, struct dir_mode **dirs,
                         size_t *n_dirs) {
        const char *last;
        _cleanup_close_ int parent = -1;
        char buf[65536];
        int e;

        if ((e = state_path_check(path, rec->path_len)) < 0)
                return e;
        parent = open_parent(root, path, &last);
        if (parent < 0)
                return parent;
        if (rec->kind == 'D') {
                struct dir_mode *grown;

                if (mkdirat(parent, last, 0700) < 0)
                        return -errno;
                /* Its own mode once its entries are in (a 0555 directory
                 * would refuse them). */
                grown = realloc(*dirs, (*n_dirs + 1) * sizeof(**dirs));
                if (!grown)
                        return -ENOMEM;
                *dirs = grown;
                grown[*n_dirs].path = strdup(path);
                grown[*n_dirs].mode = rec->mode & 0777;
                if (!grown[*n_dirs].path)
                        return -ENOMEM;
                (*n_dirs)++;
                return 0;
        }
        if (rec->kind == 'L') {
                char target[STATE_PATH_MAX + 1];

                if (rec->data_len > STATE_PATH_MAX)
                        return -EINVAL;
                if ((e = read_all(in, target, (size_t)rec->data_len)) < 0)
                        return e;
                target[rec->data_len] = '\0';
                if (memchr(target, '\0', (size_t)rec->data_len))
                        return -EINVAL;
                return symlinkat(target, parent, last) < 0 ? -errno : 0;
        }
        {
                _cleanup_close_ int fd = openat(parent, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                                0600);
                uint64_t left = rec->data_len;

                if (fd < 0)
                        return -errno;
                while (left > 0) {
                        size_t n = (size_t)MIN(sizeof(buf), left);

                        if ((e = read_all(in, buf, n)) < 0 || (e = write_all(fd, buf, n)) < 0)
                                return e;
                        left -= n;
                }
                return fchmod(fd, rec->mode & 0777) < 0 ? -errno : 0;
        }
}

/* The files that follow the R record, into /work (emptied first). */
static int restore_files(int in, char *err, size_t errlen) {
        _cleanup_close_ int root = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct dir_mode *dirs = NULL;
        size_t n_dirs = 0;
        uint64_t entries = 0;
        int e = 0;

        if (root < 0) {
                snprintf(err, errlen, "the workspace cannot be opened: %s", strerror(errno));
                return -errno;
        }
        clear_tree(root, 0);
        for (;;) {
                unsigned char h[STATE_RECORD_HEADER];
                struct state_record rec;
                char path[STATE_PATH_MAX + 1];

                if ((e = read_all(in, h, sizeof(h))) < 0 || (e = state_record_decode(h, &rec)) < 0) {
                        snprintf(err, errlen, "the state is cut short or malformed in its files");
                        break;
                }
                if (rec.kind == 'E')
                        break;
                if (rec.kind == 'R' || ++entries > STATE_ENTRIES_MAX || rec.path_len == 0) {
                        e = -EINVAL;
                        snprintf(err, errlen, "a malformed workspace entry");
                        break;
                }
                if ((e = read_all(in, path, rec.path_len)) < 0) {
                        snprintf(err, errlen, "the state is cut short in its files");
                        break;
                }
                path[rec.path_len] = '\0';
                if ((e = restore_entry(in, root, &rec, path, &dirs, &n_dirs)) < 0) {
                        snprintf(err, errlen, "files: %.300s could not be restored: %s", path, strerror(-e));
                        break;
                }
        }
        /* Deepest first, so that a directory's mode does not stop its
         * parent's being set. */
        while (n_dirs > 0) {
                struct dir_mode *d = &dirs[--n_dirs];
                const char *last;
                _cleanup_close_ int parent = open_parent(root, d->path, &last);

                if (parent >= 0)
                        fchmodat(parent, last, d->mode, 0);
                free(d->path);
        }
        free(dirs);
        return e;
}

/* ---- the frames ------------------------------------------------------------- */

/* Names the R side reported (a character vector) into S.notes. */
static void take_notes(SEXP v) {
        if (TYPEOF(v) != STRSXP)
                return;
        for (R_xlen_t i = 0; i < XLENGTH(v) && json_array_size(S.notes) < STATE_NOTES_MAX; i++) {
                size_t len;
                char *t = charsxp_text(STRING_ELT(v, i), STATE_NOTE_MAX, "...", &len);

                if (t)
                        json_array_append_new(S.notes, json_stringn(t, len));
                free(t);
        }
}

static json_t *strings_json(SEXP v, size_t max_n, size_t max_len) {
        json_t *a = json_array();

        if (TYPEOF(v) != STRSXP)
                return a;
        for (R_xlen_t i = 0; i < XLENGTH(v) && json_array_size(a) < max_n; i++) {
                size_t len;
                char *t = charsxp_text(STRING_ELT(v, i), max_len, "", &len);

                if (t)
                        json_array_append_new(a, json_stringn(t, len));
                free(t);
        }
        return a;
}

/* The global environment's bindings whose value is code yet to run: an
 * active binding (reading it calls its function) and a promise not forced
 * yet (delayedAssign: reading it evaluates its expression).  R's mget()
 * would run that code here, in the worker between runs, outside every
 * limit of a run (docs/security.md, "Round 4"): they are left out, by name.
 * Neither test runs anything: R_BindingIsActive looks at the binding, and
 * findVarInFrame3 returns a promise unforced (it is called only on a
 * binding that is not active, where it would call the function). */
static SEXP code_bindings(void) {
        SEXP names = PROTECT(R_lsInternal3(R_GlobalEnv, TRUE, FALSE)), out;
        R_xlen_t n = XLENGTH(names), k = 0;
        bool *skip = calloc((size_t)n + 1, sizeof(*skip));

        for (R_xlen_t i = 0; skip && i < n; i++) {
                SEXP sym = Rf_installChar(STRING_ELT(names, i)), v;

                if (R_BindingIsActive(sym, R_GlobalEnv))
                        skip[i] = true;
                else if (TYPEOF(v = Rf_findVarInFrame3(R_GlobalEnv, sym, TRUE)) == PROMSXP &&
                         PRVALUE(v) == R_UnboundValue)
                        skip[i] = true;
                k += skip[i];
        }
        out = PROTECT(Rf_allocVector(STRSXP, k));
        for (R_xlen_t i = 0, j = 0; skip && i < n; i++)
                if (skip[i])
                        SET_STRING_ELT(out, j++, STRING_ELT(names, i));
        free(skip);
        UNPROTECT(2);
        return out;
}

/* Take the descriptor that came with the frame (the daemon always sends
 * one). */
void state_snapshot(int fd) {
        SEXP res, blob;
        json_t *packages = NULL, *m;
        const char *error = NULL;
        char err[512] = "";
        int e;

        S.notes = json_array();
        res = r_call_on_value(S.snapshot_call, PROTECT(code_bindings()));
        UNPROTECT(1);
        if (!res || TYPEOF(res) != VECSXP || XLENGTH(res) != 3 || TYPEOF(VECTOR_ELT(res, 0)) != RAWSXP) {
                error = "R could not serialize the global environment";
        } else {
                PROTECT(res);
                blob = VECTOR_ELT(res, 0);
                take_notes(VECTOR_ELT(res, 1));
                packages = strings_json(VECTOR_ELT(res, 2), STATE_PACKAGES_MAX, STATE_PACKAGE_NAME_MAX);
                e = write_record(fd, 'R', NULL, 0, RAW(blob), (uint64_t)XLENGTH(blob));
                UNPROTECT(1);
                r_hold(R_SLOT_VALUE, R_NilValue);
                if (e == 0) {
                        _cleanup_close_ int root = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

                        e = root < 0 ? -errno : write_tree(fd, root, "", 0);
                }
                if (e == 0)
                        e = write_record(fd, 'E', NULL, 0, NULL, 0);
                /* A file on disk (state_dir) is the daemon's to rename:
                 * it must be complete when we say so. */
                if (e == 0 && fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
                        e = -errno;
                if (e < 0) {
                        snprintf(err, sizeof(err), "the state could not be written: %s", strerror(-e));
                        error = err;
                }
        }
        close(fd);
        m = json_pack("{s:s, s:o, s:o}", "type", "snapshot_done", "notes", S.notes, "packages",
                      packages ? packages : json_array());
        if (m && error)
                json_object_set_new(m, "error", json_string(error));
        S.notes = NULL;
        channel_send(m);
}

/* Unserialize blob in a child process (same jail, same limits): 0 when R
 * read it and it has a state's shape; else -EINVAL with why.  Bytes made to
 * crash R's unserialize take only the child. */
static int check_in_child(SEXP blob, char *why, size_t n) {
        int status;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        if (pid < 0) {
                snprintf(why, n, "the state could not be checked (fork: %s); nothing restored", strerror(errno));
                return -EAGAIN;
        }
        if (pid == 0) {
                /* Process context: a child of the worker, in its jail; it
                 * writes nothing anywhere and ends with _exit. */
                SEXP ok = r_call_on_value(S.check_call, blob);

                _exit(ok && TYPEOF(ok) == LGLSXP && XLENGTH(ok) == 1 && LOGICAL(ok)[0] == TRUE ? 0 : 1);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        snprintf(why, n, "the state could not be checked (waitpid: %s)", strerror(errno));
                        return -EIO;
                }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        if (WIFSIGNALED(status))
                snprintf(why, n, "the R state makes R's unserialize crash (signal %d); nothing restored",
                         WTERMSIG(status));
        else
                snprintf(why, n, "the R state is not one R can read (unserialize failed); nothing restored");
        return -EINVAL;
}

void state_restore(int fd, bool check) {
        unsigned char h[STATE_RECORD_HEADER];
        struct state_record rec;
        SEXP blob = R_NilValue, res;
        char err[512] = "";
        json_t *m;
        int e;

        S.notes = json_array();
        if ((e = read_all(fd, h, sizeof(h))) < 0 || state_record_decode(h, &rec) < 0 || rec.kind != 'R' ||
            rec.path_len != 0 || rec.data_len > (uint64_t)R_XLEN_T_MAX) {
                snprintf(err, sizeof(err), "not a session's state (no R record first)");
                goto done;
        }
        /* R's allocation under R_tryEval: past the memory limit it is an R
         * error, not a jump out of this frame. */
        blob = r_call_on_value(S.alloc_call, Rf_ScalarReal((double)rec.data_len));
        if (!blob || TYPEOF(blob) != RAWSXP || (uint64_t)XLENGTH(blob) != rec.data_len) {
                snprintf(err, sizeof(err), "no memory for the R state (%llu bytes)", (unsigned long long)rec.data_len);
                goto done;
        }
        r_hold(R_SLOT_VALUE, blob);
        if ((e = read_all(fd, RAW(blob), (size_t)rec.data_len)) < 0) {
                snprintf(err, sizeof(err), "the state is cut short in its R part");
                goto done;
        }
        if (check && check_in_child(blob, err, sizeof(err)) < 0)
                goto done;
        /* unserialize() of bytes untrusted code made, here in the jail: an
         * R error leaves the global environment as it was; a crash takes
         * only this worker. */
        res = r_call_on_value(S.restore_call, blob);
        r_hold(R_SLOT_VALUE, R_NilValue);
        if (!res || TYPEOF(res) != STRSXP) {
                snprintf(err, sizeof(err), "R could not read the state (unserialize failed)");
                goto done;
        }
        PROTECT(res);
        take_notes(res);
        UNPROTECT(1);
        restore_files(fd, err, sizeof(err));
done:
        r_hold(R_SLOT_VALUE, R_NilValue);
        close(fd);
        m = json_pack("{s:s, s:o}", "type", "restored", "notes", S.notes);
        if (m && *err)
                json_object_set_new(m, "error", json_string(err));
        S.notes = NULL;
        channel_send(m);
}

int state_init(char *err, size_t errlen) {
        int r;

        if ((r = r_call("snapshot_state", Rf_install(".value"), &S.snapshot_call, err, errlen)) < 0 ||
            (r = r_call("restore_state", Rf_install(".value"), &S.restore_call, err, errlen)) < 0 ||
            (r = r_call("raw_alloc", Rf_install(".value"), &S.alloc_call, err, errlen)) < 0 ||
            (r = r_call("check_state", Rf_install(".value"), &S.check_call, err, errlen)) < 0)
                return r;
        return 0;
}
