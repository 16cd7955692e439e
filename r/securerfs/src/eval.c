/* A session's eval file (and the mount's clone file) from R without R's
 * connections.
 *
 * SecureSession$execute() is one program written to sessions/N/eval at
 * offset 0 and its result.json read back from the same descriptor (the
 * mount's docs: "eval"): two system calls, two FUSE requests.  Through an R
 * file() connection the same two requests cost the client about 200 us more
 * per run on the project's VM (seek.connection's argument matching twice,
 * stdio's buffering and the switches between reading and writing,
 * readLines' character loop): more than the whole run takes in the mount.
 * Here they are a pwrite() and a pread().
 *
 * The handle is an external pointer to the descriptor, closed by
 * securerfs_eval_close() or, at the latest, by its finalizer (also when R
 * exits). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <R.h>
#include <Rinternals.h>
#include <R_ext/Parse.h>
#include <R_ext/Rdynload.h>

/* result.json is one line; most are far below this, one read takes them. */
#define FIRST_READ (64 * 1024)

static void handle_close(SEXP handle) {
        int *fd = R_ExternalPtrAddr(handle);

        if (fd) {
                close(*fd);
                free(fd);
                R_ClearExternalPtr(handle);
        }
}

/* The descriptor of a handle made here, or -1 (closed, or not ours). */
static int handle_fd(SEXP handle) {
        int *fd;

        if (TYPEOF(handle) != EXTPTRSXP || R_ExternalPtrTag(handle) != install("securerfs_eval"))
                return -1;
        fd = R_ExternalPtrAddr(handle);
        return fd ? *fd : -1;
}

/* eval_open(path): a handle, or NULL when the file cannot be opened. */
SEXP securerfs_eval_open(SEXP path) {
        int *fd;
        SEXP handle;

        if (TYPEOF(path) != STRSXP || XLENGTH(path) != 1 || STRING_ELT(path, 0) == NA_STRING)
                error("eval_open: path must be a string");
        fd = malloc(sizeof(*fd));
        if (!fd)
                return R_NilValue;
        *fd = open(translateChar(STRING_ELT(path, 0)), O_RDWR | O_CLOEXEC);
        if (*fd < 0) {
                free(fd);
                return R_NilValue;
        }
        handle = PROTECT(R_MakeExternalPtr(fd, install("securerfs_eval"), R_NilValue));
        R_RegisterCFinalizerEx(handle, handle_close, TRUE);
        UNPROTECT(1);
        return handle;
}

SEXP securerfs_eval_close(SEXP handle) {
        if (handle_fd(handle) >= 0)
                handle_close(handle);
        return R_NilValue;
}

/* The result's text as a length-one character vector (under
 * R_ExecWithCleanup when its buffer is this run's own). */
struct result_text {
        const char *p;
        size_t len;
};

static SEXP result_string(void *data) {
        struct result_text *t = data;

        return ScalarString(mkCharLenCE(t->p, (int)t->len, CE_UTF8));
}

/* eval_run(handle, code): write code (raw) at offset 0, then read the run's
 * result.json from offset 0; the line without its newline, or NULL when
 * either fails (the session went away, a run of another writer, an
 * interrupt: the caller finds out which).  An interrupt (Ctrl-C: the mount
 * interrupts the run and the read answers EINTR) is taken by R as soon as
 * this returns. */
SEXP securerfs_eval_run(SEXP handle, SEXP code) {
        /* Kept between runs: the one read most results take.  A larger
         * result is read into a buffer of this run's own, freed once its
         * string is made, so that one big result does not leave the R
         * process holding its size. */
        static char first[FIRST_READ];
        char *buf = first, *big = NULL;
        size_t cap = FIRST_READ;
        int fd = handle_fd(handle);
        size_t len, off = 0, got = 0;
        ssize_t n;
        struct result_text t;

        if (TYPEOF(code) != RAWSXP)
                error("eval_run: code must be a raw vector");
        if (fd < 0)
                return R_NilValue;
        len = (size_t)XLENGTH(code);
        /* One program: written at offset 0, continued at the offsets after
         * it (the mount takes a program in several writes). */
        while (off < len) {
                n = pwrite(fd, RAW(code) + off, len - off, (off_t)off);
                if (n <= 0)
                        return R_NilValue;
                off += (size_t)n;
        }
        /* The first read starts the run and answers when it ends.  A read
         * shorter than asked is the end of the result (FUSE direct I/O):
         * no second request to find the end. */
        for (;;) {
                size_t want = cap - got;
                char *more;

                n = pread(fd, buf + got, want, (off_t)got);
                if (n < 0)
                        goto fail;
                got += (size_t)n;
                if ((size_t)n < want)
                        break;
                if (cap > (size_t)INT_MAX / 2)
                        goto fail;
                more = realloc(big, cap * 2);
                if (!more)
                        goto fail;
                if (!big)
                        memcpy(more, first, got);
                buf = big = more;
                cap *= 2;
        }
        while (got > 0 && buf[got - 1] == '\n')
                got--;
        if (got == 0 || memchr(buf, '\0', got))
                goto fail;
        t = (struct result_text){buf, got};
        if (!big)
                return result_string(&t);
        return R_ExecWithCleanup(result_string, &t, free, big);
fail:
        free(big);
        return R_NilValue;
}

/* read_clone(path): the name a read of the mount's clone file gives (a new
 * session), without its newline: one open, one read, one close (an R
 * connection's set-up cost more than the request).  An R error naming the
 * file and errno when it fails. */
SEXP securerfs_read_clone(SEXP path) {
        char name[4096];
        const char *p;
        ssize_t n;
        int fd, e;

        if (TYPEOF(path) != STRSXP || XLENGTH(path) != 1 || STRING_ELT(path, 0) == NA_STRING)
                error("read_clone: path must be a string");
        p = translateChar(STRING_ELT(path, 0));
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                error("cannot open %s: %s", p, strerror(errno));
        do
                n = read(fd, name, sizeof(name));
        while (n < 0 && errno == EINTR);
        e = errno;
        close(fd);
        if (n < 0)
                error("cannot read %s: %s", p, strerror(e));
        while (n > 0 && name[n - 1] == '\n')
                n--;
        if (n == 0 || memchr(name, '\0', (size_t)n))
                error("the clone file gave no name");
        return ScalarString(mkCharLenCE(name, (int)n, CE_UTF8));
}

/* Whether R's parser (R 4.2's gram.y) may raise an R error on code instead
 * of answering PARSE_ERROR: a lexer error (an escape, a multibyte or NUL
 * byte, a token over its 8 KiB buffer, a malformed raw string r"..."), a
 * nesting past its 50-deep context stack (each ( [ { and if pushes), a
 * repeated formal argument, an empty name (``), the pipe's checks (|>,
 * =>, a placeholder _ outside a pipe), a #line directive.
 * R_ParseVector() must not be called on such code outside a condition
 * handler, and R_tryCatchError() costs more than parse() itself (16 us
 * against 8: it calls tryCatch() through do.call()).  So such code, which
 * a cheap look cannot clear, is left to parse(). */
static int parse_may_raise(const char *p, int n) {
        int pushes = 0;

        if (n > 4096)
                return 1;
        for (int i = 0; i < n; i++) {
                unsigned char c = (unsigned char)p[i], next = i + 1 < n ? (unsigned char)p[i + 1] : 0;

                if (c > 0x7f || c == '\\' || c == 0)
                        return 1;
                if (c == '(' || c == '[' || c == '{' || (c == 'i' && next == 'f'))
                        pushes++;
                else if ((c == '|' || c == '=') && next == '>')
                        return 1;
                else if ((c == 'r' || c == 'R') && (next == '"' || next == '\''))
                        return 1;
                else if (c == '`' && next == '`')
                        return 1;
                else if (c == '_' && (i == 0 || !(isalnum((unsigned char)p[i - 1]) || p[i - 1] == '.' || p[i - 1] == '_')))
                        return 1;
        }
        /* p is a CHARSXP's text: NUL-terminated. */
        return pushes > 40 || strstr(p, "function") || strstr(p, "#line");
}

/* parses(code): whether execute()'s validate may skip parse(): TRUE when
 * code (one string) is a program R's parser takes whole, FALSE when it is
 * not; NA when parse() must decide (above; also for code that is not ASCII,
 * whose parse depends on the locale).  For FALSE and NA, parse() runs and
 * says why. */
SEXP securerfs_parses(SEXP code) {
        ParseStatus status = PARSE_ERROR;
        SEXP s;

        if (TYPEOF(code) != STRSXP || XLENGTH(code) != 1 || STRING_ELT(code, 0) == NA_STRING)
                return ScalarLogical(FALSE);
        s = STRING_ELT(code, 0);
        if (parse_may_raise(CHAR(s), LENGTH(s)))
                return ScalarLogical(NA_LOGICAL);
        R_ParseVector(code, -1, &status, R_NilValue);
        return ScalarLogical(status == PARSE_OK);
}

static const R_CallMethodDef call_methods[] = {
        {"securerfs_eval_open", (DL_FUNC)&securerfs_eval_open, 1},
        {"securerfs_eval_close", (DL_FUNC)&securerfs_eval_close, 1},
        {"securerfs_eval_run", (DL_FUNC)&securerfs_eval_run, 2},
        {"securerfs_read_clone", (DL_FUNC)&securerfs_read_clone, 1},
        {"securerfs_parses", (DL_FUNC)&securerfs_parses, 1},
        {NULL, NULL, 0},
};

void R_init_securerfs(DllInfo *dll) {
        R_registerRoutines(dll, NULL, call_methods, NULL, NULL);
        R_useDynamicSymbols(dll, FALSE);
        R_forceSymbols(dll, TRUE);
}
