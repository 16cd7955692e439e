/* The worker proper: embedded R serving exec frames (docs/protocol.md,
 * "Worker channel"; DESIGN sections 2 and 7).
 *
 * R is initialised once, in the zygote (worker_r_init); each worker is a
 * copy-on-write clone of that process.  Everything R-specific lives here:
 * the console hooks, the signal handlers, the run itself, and the two
 * presentations of its value (text per DESIGN section 2, JSON per jsonlite).
 *
 * The common case is kept in C: parse, eval, as.character of a length-one
 * unclassed atomic and its JSON take a few microseconds and call no R
 * closure.  Everything else goes through the functions of sandbox/worker.R,
 * evaluated into a private environment at start-up.
 *
 * Every entry into R from C is under R_ToplevelExec() or R_tryEval(): an R
 * error (or an allocation failure under the memory limit) outside such a
 * context would long-jump into setup_Rmainloop()'s long-gone frame.
 *
 * R's console callbacks carry no context argument, so the worker's state is
 * one static struct. */
#define R_NO_REMAP
#define R_INTERFACE_PTRS 1
#define CSTACK_DEFNS 1
#define HAVE_UINTPTR_T 1

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <Rinternals.h>
#include <Rembedded.h>
#include <Rinterface.h>
#include <Rversion.h>
#include <R_ext/Parse.h>
#include <R_ext/RStartup.h>
#include <R_ext/eventloop.h>

#include "config.h"
#include "frame.h"
#include "log.h"
#include "json_cleanup.h"
#include "macros.h"
#include "options.h"
#include "utf8.h"
#include "seccomp.h"
#include "worker_internal.h"
#include "worker_r.h"

/* Not in the public headers outside R_ext/GraphicsDevice.h, which needs the
 * whole graphics engine; it is a plain exported int in libR. */
extern int R_interrupts_pending;
/* R_ext/GraphicsDevice.h, same reason: the number of open devices + 1 (the
 * null device). */
extern int Rf_NumDevices(void);

#define WORKER_FD 3

#define CONSOLE_FRAME_MAX (64u << 10)      /* text of one console frame */
#define CONSOLE_FLUSH_BYTES (8u << 10)     /* send once this much is pending */
#define CONSOLE_FLUSH_NS (10 * 1000000ull) /* or once this long has passed */
#define CONSOLE_RUN_MAX (16u << 20)        /* a print loop cannot flood the daemon */
#define OUTPUT_MAX (1u << 20)
#define VALUE_JSON_MAX (4u << 20)
#define ERROR_MAX (64u << 10)
#define WARNING_TEXT_MAX (8u << 10)
#define POLL_WAIT_USEC 20000 /* Sys.sleep wakes this often to flush the console */

static const char console_truncated_marker[] = "\n... (console output truncated)\n";
static const char output_truncated_marker[] = "\n... (output truncated)";

enum slot { SLOT_EXPRS, SLOT_VALUE, N_SLOTS };

struct console {
        char *buf; /* raw bytes as R wrote them, not yet sent */
        size_t len, cap;
        uint64_t last_send_ns;
        size_t run_bytes; /* accepted during this run */
        bool truncated;
};

static struct worker {
        int sock;       /* the daemon's stream socket: fd 3 in a worker, -1 in the zygote */
        int zygote_ctl; /* the zygote's control socket while R starts, else -1 */
        bool in_run;
        long long seq;
        struct console console;
        /* R objects, all kept alive with R_PreserveObject. */
        SEXP env;   /* worker.R's private environment */
        SEXP slots; /* VECSXP protecting the run's parse and value */
        SEXP format_call, json_call, parse_error_call, summary_call, reset_warnings_call;
        SEXP add_handlers_call;
        SEXP graphics_off_call; /* grDevices::graphics.off() */
        SEXP sym_value, sym_code, sym_warnings_count, sym_interrupted;
        SEXP define_tool_fn, remove_tool_fn;
        /* Tools: the daemon's frames are read through this reader both
         * between runs and while a tool call waits for its reply. */
        struct frame_reader reader;
        json_int_t tool_id;   /* last tool_call id of this run */
        json_t *tool_reply;   /* the last tool_result, until the next call */
} W = {.sock = -1, .zygote_ctl = -1};

static volatile sig_atomic_t got_sigint, got_sigxcpu, got_sigxfsz;

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- UTF-8 ---------------------------------------------------------------
 * Everything sent to the daemon must be valid UTF-8 without NUL (the frame
 * reader refuses anything else).  R strings and console output can hold any
 * bytes (rawToChar, latin1 files), so each bad byte becomes U+FFFD. */

/* ---- Talking to the daemon ----------------------------------------------- */

/* The daemon went away or the socket broke: nothing left to serve. */
__attribute__((noreturn)) static void worker_exit(int status);

static void send_frame(json_t *msg) {
        int r;

        if (!msg)
                worker_exit(1); /* out of memory building it */
        r = frame_send(W.sock, msg);
        json_decref(msg);
        if (r < 0)
                worker_exit(1);
}

/* ---- Console --------------------------------------------------------------
 * R writes through WriteConsoleEx; the bytes are buffered and sent as
 * console frames when 8 KiB are pending, when 10 ms have passed since the
 * last frame (checked here and in R_PolledEvents, which Sys.sleep calls every
 * 20 ms), and always before the result. */

static void console_send(bool final) {
        static char text[CONSOLE_FRAME_MAX];
        struct console *c = &W.console;

        while (c->len > 0) {
                size_t used, n = utf8_clean(c->buf, c->len, text, sizeof(text), &used, final);

                if (used == 0)
                        break; /* only the start of a character: wait for the rest */
                memmove(c->buf, c->buf + used, c->len - used);
                c->len -= used;
                send_frame(json_pack("{s:s, s:I, s:s%}", "type", "console", "seq", (json_int_t)W.seq,
                                     "text", text, n));
        }
        c->last_send_ns = now_ns();
}

static void console_append(const char *buf, size_t len) {
        struct console *c = &W.console;

        if (c->len + len > c->cap) {
                size_t cap = c->cap ? c->cap : 16384;
                char *p;

                while (cap < c->len + len)
                        cap *= 2;
                p = realloc(c->buf, cap);
                if (!p)
                        return; /* drop output rather than fail the run */
                c->buf = p;
                c->cap = cap;
        }
        memcpy(c->buf + c->len, buf, len);
        c->len += len;
}

static void console_write(const char *buf, int len, int otype) {
        struct console *c = &W.console;
        size_t n = len > 0 ? (size_t)len : 0;

        /* Outside a run (start-up, formatting between runs) nobody reads it. */
        if (!W.in_run || c->truncated || n == 0)
                return;
        if (c->run_bytes + n > CONSOLE_RUN_MAX) {
                n = CONSOLE_RUN_MAX - c->run_bytes;
                c->truncated = true;
        }
        console_append(buf, n);
        c->run_bytes += n;
        if (c->truncated)
                console_append(console_truncated_marker, sizeof(console_truncated_marker) - 1);
        /* cat("tick", i, "\n") is three writes: on time alone, send only at
         * the end of a line; polled_events() sends a partial line later. */
        if (c->len >= CONSOLE_FLUSH_BYTES ||
            (c->len > 0 && c->buf[c->len - 1] == '\n' && now_ns() - c->last_send_ns >= CONSOLE_FLUSH_NS))
                console_send(false);
}

static void polled_events(void) {
        if (W.in_run && W.console.len > 0 && now_ns() - W.console.last_send_ns >= CONSOLE_FLUSH_NS)
                console_send(false);
}

/* readline() and scan(stdin()) see end of file: there is no terminal. */
static int console_read(const char *prompt, unsigned char *buf, int len, int add_history) {
        return 0;
}

static void show_message(const char *msg) {
        console_write(msg, (int)strlen(msg), 1);
        console_write("\n", 1, 1);
}

static void console_noop(void) {}

/* R's fatal error: R is unusable.  During start-up the zygote reports it on
 * its control socket; a worker just dies and the daemon reports a crash. */
static void r_suicide(const char *msg) {
        if (W.zygote_ctl >= 0) {
                char line[512];
                int n = snprintf(line, sizeof(line), "fatal R: %s", msg);

                /* One line of printable ASCII, as the daemon expects. */
                n = MIN(n, (int)sizeof(line) - 1);
                while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
                        n--;
                for (int i = 0; i < n; i++)
                        if (line[i] < 0x20 || line[i] > 0x7e)
                                line[i] = ' ';
                if (n > 0)
                        (void)!send(W.zygote_ctl, line, (size_t)n, MSG_NOSIGNAL);
                _exit(1);
        }
        _exit(2);
}

/* q() and quit() land here.  A session ends only through the daemon (rmdir,
 * ctl restart), so during a run they are an ordinary R error. */
static void r_clean_up(SA_TYPE saveact, int status, int run_last) {
        if (W.in_run && saveact != SA_SUICIDE)
                Rf_error("quit() does not end a securerfs session; "
                         "write \"restart\" to its ctl file for a fresh one");
        _exit(status);
}

/* ---- Signals --------------------------------------------------------------
 * SIGINT (the daemon's interrupt) and SIGXCPU (the kernel, at the per-run
 * CPU soft limit) ask R to unwind at its next check; R_SelectEx (Sys.sleep)
 * installs its own SIGINT handler for the wait and wakes at once.  SIGXFSZ
 * only marks the run, so that the write fails with EFBIG and R reports it
 * instead of the process dying.  No SA_RESTART: a blocking call in user
 * code returns EINTR and R gets to check. */

static void on_sigint(int sig) {
        got_sigint = 1;
        R_interrupts_pending = 1;
}

static void on_sigxcpu(int sig) {
        got_sigxcpu = 1;
        R_interrupts_pending = 1;
}

static void on_sigxfsz(int sig) {
        got_sigxfsz = 1;
}

static void set_handler(int sig, void (*fn)(int)) {
        struct sigaction sa = {.sa_handler = fn};

        sigemptyset(&sa.sa_mask);
        sigaction(sig, &sa, NULL);
}

/* ---- Temporary directories --------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void)(type == FTW_DP ? rmdir(path) : unlink(path));
        return 0;
}

/* FTW_PHYS: a symlink the code planted is removed, never followed. */
static void remove_tree(const char *path) {
        if (path && *path)
                nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static void worker_exit(int status) {
        remove_tree(R_TempDir);
        if (*jail_private_dir())
                rmdir(jail_private_dir()); /* none mode; empty by now unless R left files */
        _exit(status);
}

void worker_r_shutdown(void) {
        remove_tree(R_TempDir);
}

/* ---- Start-up (zygote) ------------------------------------------------- */

/* R_HOME and the directories /usr/bin/R would export.  Debian splits the R
 * home: share, include and doc live under /usr/share/R, and R.home("share")
 * is wrong without R_SHARE_DIR. */
static void set_r_environment(void) {
        static const struct {
                const char *name, *sub;
        } dirs[] = {
                {"R_SHARE_DIR", "share"},
                {"R_INCLUDE_DIR", "include"},
                {"R_DOC_DIR", "doc"},
        };
        const char *home;

        setenv("R_HOME", SECURERFS_R_HOME, 0);
        home = getenv("R_HOME");
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
                char in_home[4096], debian[4096];
                struct stat st;

                if (getenv(dirs[i].name))
                        continue;
                snprintf(in_home, sizeof(in_home), "%s/%s", home, dirs[i].sub);
                snprintf(debian, sizeof(debian), "/usr/share/R/%s", dirs[i].sub);
                if (stat(in_home, &st) < 0 && stat(debian, &st) == 0)
                        setenv(dirs[i].name, debian, 1);
                else
                        setenv(dirs[i].name, in_home, 1);
        }
}

struct parse_job {
        const char *text;
        size_t len;
        SEXP out; /* stored in W.slots[SLOT_EXPRS] */
        ParseStatus status;
};

static void parse_cb(void *data) {
        struct parse_job *p = data;
        SEXP text = PROTECT(Rf_allocVector(STRSXP, 1));

        SET_STRING_ELT(text, 0, Rf_mkCharLenCE(p->text, (int)p->len, CE_UTF8));
        p->out = R_ParseVector(text, -1, &p->status, R_NilValue);
        SET_VECTOR_ELT(W.slots, SLOT_EXPRS, p->out);
        UNPROTECT(1);
}

static void set_error(char *err, size_t errlen, const char *what) {
        const char *msg = R_curErrorBuf();
        size_t n = strlen(msg);

        while (n > 0 && msg[n - 1] == '\n')
                n--;
        snprintf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

/* Evaluate R source text in env, expression by expression. */
static int eval_text(const char *src, SEXP env, const char *what, char *err, size_t errlen) {
        struct parse_job p = {.text = src, .len = strlen(src)};
        SEXP exprs;

        if (!R_ToplevelExec(parse_cb, &p) || p.status != PARSE_OK) {
                snprintf(err, errlen, "%s: does not parse", what);
                return -EINVAL;
        }
        exprs = PROTECT(p.out);
        SET_VECTOR_ELT(W.slots, SLOT_EXPRS, R_NilValue);
        for (R_xlen_t i = 0; i < XLENGTH(exprs); i++) {
                int failed = 0;

                R_tryEval(VECTOR_ELT(exprs, i), env, &failed);
                if (failed) {
                        set_error(err, errlen, what);
                        UNPROTECT(1);
                        return -EINVAL;
                }
        }
        UNPROTECT(1);
        return 0;
}

static SEXP preserve(SEXP x) {
        R_PreserveObject(x);
        return x;
}

/* A call fn(args...) of a worker.R function, to be evaluated in W.env. */
static int worker_call(const char *name, SEXP arg, SEXP *out, char *err, size_t errlen) {
        SEXP fn = Rf_findVarInFrame3(W.env, Rf_install(name), TRUE);

        if (TYPEOF(fn) != CLOSXP) {
                snprintf(err, errlen, "worker.R defines no function %s", name);
                return -EINVAL;
        }
        *out = preserve(arg ? Rf_lang2(fn, arg) : Rf_lang1(fn));
        return 0;
}

static int worker_tools_init(char *err, size_t errlen);

int worker_r_init(int ctl_fd, char *err, size_t errlen) {
        static char arg0[] = "R", arg1[] = "--vanilla", arg2[] = "--silent", arg3[] = "--no-echo",
                    arg4[] = "--no-readline";
        char *argv[] = {arg0, arg1, arg2, arg3, arg4, NULL};
        /* Set here, not in worker.R, so that tests sourcing worker.R keep
         * R's defaults.  The error text goes into the result, not the
         * console; "Calls:" lines would only repeat the traceback. */
        static const char session_setup[] =
                "options(show.error.messages = FALSE, showErrorCalls = FALSE, keep.source = FALSE)\n"
                "loadNamespace('jsonlite')\n"
                /* Plots go to the workspace as PNG (cairo: there is no X
                 * server): plot() without a device writes Rplot001.png, ...
                 * in /work.  Every device is closed at the end of the run
                 * (close_devices), which writes the files. */
                "options(bitmapType = 'cairo', device = function(...) grDevices::png('Rplot%03d.png', ...))\n";
        SEXP handlers;
        int r;

        W.zygote_ctl = ctl_fd;
        set_r_environment();

        /* No R signal handlers: the worker installs its own after the clone
         * (R's would turn SIGINT into a prompt-level interrupt and SIGSEGV
         * into a "*** caught segfault" dialogue on a console nobody reads). */
        R_SignalHandlers = 0;
        if (Rf_initialize_R((int)ARRAY_SIZE(argv) - 1, argv) != 0) {
                snprintf(err, errlen, "R: Rf_initialize_R failed");
                return -EINVAL;
        }
        R_Interactive = FALSE;
        /* The jail's stack and R's guess of its base disagree; R_CStackLimit
         * -1 turns the check off (deep recursion still stops at
         * expressions=5000). */
        R_CStackLimit = (uintptr_t)-1;
        R_Outputfile = NULL;
        R_Consolefile = NULL;
        ptr_R_WriteConsole = NULL;
        ptr_R_WriteConsoleEx = console_write;
        ptr_R_ReadConsole = console_read;
        ptr_R_ShowMessage = show_message;
        ptr_R_ResetConsole = console_noop;
        ptr_R_FlushConsole = console_noop;
        ptr_R_ClearerrConsole = console_noop;
        ptr_R_Suicide = r_suicide;
        ptr_R_CleanUp = r_clean_up;
        setup_Rmainloop();

        W.slots = preserve(Rf_allocVector(VECSXP, N_SLOTS));
        W.sym_value = Rf_install(".value");
        W.sym_code = Rf_install(".code");
        W.sym_warnings_count = Rf_install("warnings_count");
        W.sym_interrupted = Rf_install("interrupted");

        /* worker.R's own environment: its parent is the base namespace, so
         * base comes before anything user code defines globally. */
        W.env = preserve(R_NewEnv(R_BaseNamespace, TRUE, 64));
        r = eval_text(session_setup, W.env, "R session set-up", err, errlen);
        if (r < 0)
                return r;
        r = eval_text(worker_r_source, W.env, "worker.R", err, errlen);
        if (r < 0)
                return r;

        if ((r = worker_call("format_value", W.sym_value, &W.format_call, err, errlen)) < 0 ||
            (r = worker_call("value_json", W.sym_value, &W.json_call, err, errlen)) < 0 ||
            (r = worker_call("parse_error", W.sym_code, &W.parse_error_call, err, errlen)) < 0 ||
            (r = worker_call("warning_summary", NULL, &W.summary_call, err, errlen)) < 0 ||
            (r = worker_call("reset_warnings", NULL, &W.reset_warnings_call, err, errlen)) < 0)
                return r;
        handlers = Rf_findVarInFrame3(W.env, Rf_install("add_handlers_call"), TRUE);
        if (TYPEOF(handlers) != LANGSXP) {
                snprintf(err, errlen, "worker.R defines no add_handlers_call");
                return -EINVAL;
        }
        W.add_handlers_call = preserve(handlers);
        W.graphics_off_call = preserve(
                Rf_lang1(Rf_lang3(Rf_install("::"), Rf_install("grDevices"), Rf_install("graphics.off"))));
        r = worker_tools_init(err, errlen);
        if (r < 0)
                return r;
        W.zygote_ctl = -1;
        return 0;
}

/* ---- Formatting (DESIGN section 2) -------------------------------------- */

static bool is_atomic_type(int type) {
        switch (type) {
        case LGLSXP:
        case INTSXP:
        case REALSXP:
        case CPLXSXP:
        case STRSXP:
        case RAWSXP:
                return true;
        default:
                return false;
        }
}

/* Text of a CHARSXP as clean UTF-8, at most max bytes (plus marker). */
static char *charsxp_text(SEXP ch, size_t max, const char *marker, size_t *len) {
        const void *vmax = vmaxget();
        const char *s;
        char *out;

        /* The session's locale is C.UTF-8, so native strings are UTF-8 (or
         * invalid: rawToChar); translateCharUTF8 would write bad bytes as
         * "<ff>" where the console shows U+FFFD.  Only latin1 needs it. */
        s = Rf_getCharCE(ch) == CE_LATIN1 ? Rf_translateCharUTF8(ch) : CHAR(ch);
        out = utf8_clean_dup(s, strlen(s), max, marker, len);
        vmaxset(vmax);
        return out;
}

/* Calls a worker.R function on the value bound to .value in W.env.  NULL
 * if it failed (an interrupt, a memory error). */
static SEXP call_on_value(SEXP call, SEXP value) {
        int failed = 0;
        SEXP res;

        Rf_defineVar(W.sym_value, value, W.env);
        res = R_tryEval(call, W.env, &failed);
        Rf_defineVar(W.sym_value, R_NilValue, W.env);
        return failed ? NULL : res;
}

static char *format_value(SEXP v, size_t *len) {
        SEXP res;

        if (v == R_NilValue)
                return utf8_clean_dup("NULL", 4, OUTPUT_MAX, NULL, len);
        /* as.character() of a length-one atomic without a class is
         * coerceVector(): the same 15 significant digits. */
        if (!OBJECT(v) && is_atomic_type(TYPEOF(v)) && XLENGTH(v) == 1) {
                SEXP s = PROTECT(TYPEOF(v) == STRSXP ? v : Rf_coerceVector(v, STRSXP));
                SEXP ch = STRING_ELT(s, 0);
                char *out = ch == NA_STRING ? utf8_clean_dup("NA", 2, OUTPUT_MAX, NULL, len)
                                            : charsxp_text(ch, OUTPUT_MAX, output_truncated_marker, len);

                UNPROTECT(1);
                return out;
        }
        res = call_on_value(W.format_call, v);
        if (!res || TYPEOF(res) != STRSXP || XLENGTH(res) != 1 || STRING_ELT(res, 0) == NA_STRING) {
                static const char failed[] = "<value could not be printed: formatting was interrupted or failed>";

                return utf8_clean_dup(failed, sizeof(failed) - 1, OUTPUT_MAX, NULL, len);
        }
        PROTECT(res);
        char *out = charsxp_text(STRING_ELT(res, 0), OUTPUT_MAX, output_truncated_marker, len);
        UNPROTECT(1);
        return out;
}

/* ---- Value JSON (jsonlite's conventions) -------------------------------- */

/* JSON of one element, adding an over-estimate of its encoded size to *size.
 * Matches toJSON(auto_unbox = TRUE, na = "null", digits = NA): NA and the
 * non-finite doubles are null, whole doubles print without a fraction
 * (jsonlite writes 2, not 2.0; below 1e15 "%.15g" has no exponent). */
static json_t *element_json(SEXP v, R_xlen_t i, size_t *size) {
        switch (TYPEOF(v)) {
        case LGLSXP: {
                int x = LOGICAL(v)[i];

                *size += 6;
                return x == NA_LOGICAL ? json_null() : json_boolean(x);
        }
        case INTSXP: {
                int x = INTEGER(v)[i];

                *size += 12;
                return x == NA_INTEGER ? json_null() : json_integer(x);
        }
        case REALSXP: {
                double x = REAL(v)[i];

                *size += 24;
                if (!isfinite(x))
                        return json_null();
                if (x == floor(x) && fabs(x) < 1e15)
                        return json_integer((json_int_t)x);
                return json_real(x);
        }
        case STRSXP: {
                SEXP ch = STRING_ELT(v, i);
                const char *s;
                size_t n;

                if (ch == NA_STRING) {
                        *size += 5;
                        return json_null();
                }
                s = CHAR(ch);
                n = (size_t)LENGTH(ch);
                *size += n + 3;
                for (size_t k = 0; k < n; k++)
                        if ((unsigned char)s[k] < 0x20 || s[k] == '"' || s[k] == '\\')
                                *size += 5;
                if (*size > VALUE_JSON_MAX)
                        return json_null(); /* the caller gives up anyway */
                if (Rf_getCharCE(ch) != CE_LATIN1 && Rf_getCharCE(ch) != CE_BYTES && utf8_valid(s, n, NULL))
                        return json_stringn_nocheck(s, n);
                {
                        size_t len;
                        _cleanup_free_ char *clean = charsxp_text(ch, VALUE_JSON_MAX, NULL, &len);

                        return clean ? json_stringn_nocheck(clean, len) : NULL;
                }
        }
        default:
                return NULL;
        }
}

/* An unclassed logical, integer, double or character vector whose only
 * attribute is names (jsonlite drops those): no R call needed. */
static bool json_fast_path(SEXP v) {
        SEXP a = ATTRIB(v);

        if (OBJECT(v))
                return false;
        switch (TYPEOF(v)) {
        case LGLSXP:
        case INTSXP:
        case REALSXP:
        case STRSXP:
                break;
        default:
                return false;
        }
        return a == R_NilValue || (TAG(a) == R_NamesSymbol && CDR(a) == R_NilValue);
}

static json_t *value_json(SEXP v, char **note) {
        static const char too_big[] = "value JSON over 4 MiB";
        SEXP res;
        size_t size = 2;

        *note = NULL;
        if (v == R_NilValue)
                return json_null();
        if (json_fast_path(v)) {
                R_xlen_t n = XLENGTH(v);
                json_t *arr;

                if (n == 1) {
                        json_t *e = element_json(v, 0, &size);
                        if (e && size > VALUE_JSON_MAX) {
                                json_decref(e);
                                *note = strdup(too_big);
                                return json_null();
                        }
                        return e ? e : json_null();
                }
                arr = json_array();
                for (R_xlen_t i = 0; arr && i < n; i++) {
                        json_t *e = element_json(v, i, &size);

                        if (!e || size > VALUE_JSON_MAX || json_array_append_new(arr, e) < 0) {
                                json_decref(arr);
                                arr = NULL;
                        }
                }
                if (!arr && size > VALUE_JSON_MAX)
                        *note = strdup(too_big);
                return arr ? arr : json_null();
        }

        res = call_on_value(W.json_call, v);
        if (!res || TYPEOF(res) != STRSXP || XLENGTH(res) != 2) {
                *note = strdup("value JSON failed: interrupted or out of memory");
                return json_null();
        }
        PROTECT(res);
        if (STRING_ELT(res, 0) == NA_STRING) {
                size_t len;

                *note = STRING_ELT(res, 1) == NA_STRING
                                ? strdup("no JSON form")
                                : charsxp_text(STRING_ELT(res, 1), WARNING_TEXT_MAX, NULL, &len);
                UNPROTECT(1);
                return json_null();
        }
        {
                size_t len;
                _cleanup_free_ char *text = charsxp_text(STRING_ELT(res, 0), VALUE_JSON_MAX, NULL, &len);
                json_error_t jerr;
                json_t *j = NULL;

                UNPROTECT(1);
                if (!text || len >= VALUE_JSON_MAX) {
                        *note = strdup(too_big);
                        return json_null();
                }
                j = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
                if (!j) {
                        *note = strdup("value JSON from jsonlite did not parse");
                        return json_null();
                }
                return j;
        }
}

/* ---- A run ----------------------------------------------------------------- */

struct run {
        long long seq;
        const char *code;
        size_t code_len;
        json_int_t limit[LIMIT_COUNT]; /* from the exec frame, for messages; -1: none */
        uint64_t start_ns;

        ParseStatus parse_status;
        bool eval_ok;
        char *output;
        size_t output_len;
        json_t *value;
        char *value_note;
};

static void eval_cb(void *data) {
        SEXP exprs = VECTOR_ELT(W.slots, SLOT_EXPRS);

        /* withCallingHandlers(warning = , interrupt = ) without its frame:
         * the handlers are dropped when R_ToplevelExec returns. */
        Rf_eval(W.add_handlers_call, R_GlobalEnv);
        SET_VECTOR_ELT(W.slots, SLOT_VALUE, R_NilValue);
        for (R_xlen_t i = 0; i < XLENGTH(exprs); i++)
                SET_VECTOR_ELT(W.slots, SLOT_VALUE, Rf_eval(VECTOR_ELT(exprs, i), R_GlobalEnv));
}

static void present_cb(void *data) {
        struct run *r = data;
        SEXP v = VECTOR_ELT(W.slots, SLOT_VALUE);

        r->output = format_value(v, &r->output_len);
        r->value = value_json(v, &r->value_note);
}

static int r_int_var(SEXP sym) {
        SEXP x = Rf_findVarInFrame3(W.env, sym, TRUE);

        if (TYPEOF(x) == INTSXP && XLENGTH(x) == 1)
                return INTEGER(x)[0];
        if (TYPEOF(x) == LGLSXP && XLENGTH(x) == 1)
                return LOGICAL(x)[0] == TRUE;
        return 0;
}

/* The run's warnings: the console block R would print at the end of the
 * top-level call, and each message for the result.  Empty if none. */
static json_t *collect_warnings(void) {
        json_t *arr = json_array();
        SEXP res;
        int failed = 0;

        if (r_int_var(W.sym_warnings_count) == 0)
                return arr;
        res = R_tryEval(W.summary_call, W.env, &failed);
        if (!failed && TYPEOF(res) == STRSXP) {
                PROTECT(res);
                for (R_xlen_t i = 0; i < XLENGTH(res); i++) {
                        size_t len;
                        _cleanup_free_ char *s = NULL;

                        if (STRING_ELT(res, i) == NA_STRING)
                                continue;
                        s = charsxp_text(STRING_ELT(res, i), WARNING_TEXT_MAX, "...", &len);
                        if (!s)
                                continue;
                        if (i == 0)
                                console_write(s, (int)len, 1);
                        else
                                json_array_append_new(arr, json_stringn_nocheck(s, len));
                }
                UNPROTECT(1);
        }
        R_tryEval(W.reset_warnings_call, W.env, &failed);
        return arr;
}

static void send_result(struct run *r, const char *status, const char *error, const char *limit, json_t *warnings) {
        json_t *msg;
        int e;

        msg = json_pack("{s:s, s:I, s:s, s:s%, s:O, s:s, s:O}", "type", "result", "seq", (json_int_t)r->seq,
                        "status", status, "output", r->output ? r->output : "", r->output ? r->output_len : 0,
                        "value", r->value ? r->value : json_null(), "error", error, "warnings", warnings);
        if (!msg)
                worker_exit(1);
        if (r->value_note)
                json_object_set_new(msg, "value_note", json_string(r->value_note));
        if (limit)
                json_object_set_new(msg, "limit", json_string(limit));
#ifdef WORKER_TIMING
        /* Benchmark aid, off in normal builds (the daemon refuses unknown
         * fields): the worker's time from the exec frame to here. */
        json_object_set_new(msg, "worker_ns", json_integer((json_int_t)(now_ns() - r->start_ns)));
#endif
        e = frame_send(W.sock, msg);
        if (e == -EMSGSIZE) {
                /* Escaping can grow the output and value past the frame
                 * limit; say so rather than lose the run. */
                json_object_set_new(msg, "value", json_null());
                json_object_set_new(msg, "value_note", json_string("value JSON too large to send"));
                json_object_set_new(msg, "output", json_string("<output too large to send>"));
                e = frame_send(W.sock, msg);
        }
        json_decref(msg);
        if (e < 0)
                worker_exit(1);
}

static char *error_text(const struct run *r, const char **limit) {
        const char *msg = R_curErrorBuf();
        size_t n = strlen(msg), len;
        char *text, *out;

        while (n > 0 && msg[n - 1] == '\n')
                n--;
        text = utf8_clean_dup(msg, n, ERROR_MAX, "...", &len);
        if (!text)
                return NULL;
        *limit = NULL;
        if (strstr(text, "cannot allocate") || strstr(text, "memory exhausted")) {
                *limit = "memory";
                if (r->limit[LIMIT_MEMORY] > 0 && asprintf(&out, "%s (memory limit: %lld MiB)", text,
                                                    (long long)(r->limit[LIMIT_MEMORY] >> 20)) >= 0) {
                        free(text);
                        text = out;
                }
        } else if (got_sigxfsz) {
                *limit = "fsize";
                if (r->limit[LIMIT_FSIZE] >= 0 &&
                    asprintf(&out, "%s (file size limit: %lld bytes)", text, (long long)r->limit[LIMIT_FSIZE]) >= 0) {
                        free(text);
                        text = out;
                }
        } else if (strstr(text, "Too many open files")) {
                *limit = "nofile";
        } else if (strstr(text, "cannot popen") || strstr(text, "error in running command")) {
                /* glibc's popen() does not set errno when posix_spawn()
                 * fails, so R's "probable reason" is noise: say why. */
                if (asprintf(&out, "%s (the sandbox refuses to run programs unless the daemon has -o allow_exec)",
                             text) >= 0) {
                        free(text);
                        text = out;
                }
        } else if (strstr(text, "unable to fork") || strstr(text, "cannot fork")) {
                /* fork() failed with EAGAIN: RLIMIT_NPROC or pids.max. */
                *limit = "nproc";
                if (asprintf(&out, "%s (process limit reached: nproc)", text) >= 0) {
                        free(text);
                        text = out;
                }
        }
        return text;
}

/* Did the daemon interrupt run seq before it started?  Its SIGINT was
 * cleared at the start of the run (it may be a late one meant for the run
 * before), but the daemon writes an interrupt frame before every SIGINT, so
 * the frame is in the socket by now.  Frames read here: interrupt (this run's
 * or a stale one) and stale tool_results; nothing else comes between runs. */
static bool interrupt_queued(long long seq) {
        bool found = false;

        for (;;) {
                json_t *m = NULL;
                struct pollfd p = {.fd = W.sock, .events = POLLIN};
                int e = frame_reader_next(&W.reader, &m);
                long n;

                if (e < 0)
                        worker_exit(2);
                if (e == 1) {
                        json_t *jseq = json_object_get(m, "seq");
                        if (!strcmp(frame_type(m), "interrupt")) {
                                if (json_is_integer(jseq) && json_integer_value(jseq) == seq)
                                        found = true;
                        } else if (strcmp(frame_type(m), "tool_result")) {
                                worker_exit(2);
                        }
                        json_decref(m);
                        continue;
                }
                if (poll(&p, 1, 0) <= 0)
                        return found;
                n = frame_reader_fill(&W.reader, W.sock);
                if (n == 0)
                        worker_exit(0);
                if (n < 0 && n != -EINTR && n != -EAGAIN)
                        worker_exit(1);
        }
}

/* Close every graphics device the run left open, so that its plot files are
 * complete when the run ends (a PNG or PDF is written when its device
 * closes): devices do not outlive the run that opened them.  Errors (a full
 * workspace) are dropped; the run's result is already decided. */
static void close_devices(void) {
        int failed = 0;

        if (Rf_NumDevices() <= 1)
                return; /* only the null device: the common case costs nothing */
        R_interrupts_pending = 0;
        R_tryEval(W.graphics_off_call, R_GlobalEnv, &failed);
        R_interrupts_pending = 0;
}

static void run_exec(struct run *r) {
        struct parse_job p = {.text = r->code, .len = r->code_len};
        _cleanup_json_ json_t *warnings = NULL;
        _cleanup_free_ char *error = NULL;
        const char *status = "ok", *limit = NULL;
        SEXP exprs;

        got_sigint = got_sigxcpu = got_sigxfsz = 0;
        R_interrupts_pending = 0;
        W.seq = r->seq;
        W.console.len = 0;
        W.console.run_bytes = 0;
        W.console.truncated = false;
        W.console.last_send_ns = r->start_ns = now_ns();
        W.tool_id = 0;
        W.in_run = true;
        if (r_int_var(W.sym_interrupted))
                Rf_defineVar(W.sym_interrupted, Rf_ScalarLogical(FALSE), W.env);
        if (interrupt_queued(r->seq)) {
                status = "interrupted";
                error = strdup("interrupted");
                goto done;
        }

        if (memchr(r->code, '\0', r->code_len)) {
                status = "error";
                error = strdup("Syntax error: the code contains a NUL byte");
                goto done;
        }
        if (!R_ToplevelExec(parse_cb, &p)) {
                status = "error";
                error = strdup("Syntax error: the parser failed (out of memory?)");
                goto done;
        }
        exprs = VECTOR_ELT(W.slots, SLOT_EXPRS);
        if (p.status != PARSE_OK || TYPEOF(exprs) != EXPRSXP) {
                SEXP msg;

                status = "error";
                Rf_defineVar(W.sym_code, Rf_ScalarString(Rf_mkCharLenCE(r->code, (int)r->code_len, CE_UTF8)),
                             W.env);
                msg = call_on_value(W.parse_error_call, R_NilValue);
                Rf_defineVar(W.sym_code, R_NilValue, W.env);
                if (msg && TYPEOF(msg) == STRSXP && XLENGTH(msg) == 1) {
                        size_t len;

                        error = charsxp_text(STRING_ELT(msg, 0), ERROR_MAX, "...", &len);
                }
                if (!error)
                        error = strdup("Syntax error");
                goto done;
        }

        r->eval_ok = R_ToplevelExec(eval_cb, r);
        SET_VECTOR_ELT(W.slots, SLOT_EXPRS, R_NilValue);
        if (r->eval_ok) {
                if (!R_ToplevelExec(present_cb, r) && !r->output)
                        r->output = strdup("<value could not be printed: formatting failed>");
                if (!r->value)
                        r->value = json_null();
        } else if (got_sigxcpu) {
                status = "error";
                limit = "cpu";
                if (r->limit[LIMIT_CPU] >= 0) {
                        if (asprintf(&error, "CPU time limit of %lld s reached (run interrupted)",
                                     (long long)r->limit[LIMIT_CPU]) < 0)
                                error = NULL;
                } else {
                        error = strdup("CPU time limit reached (run interrupted)");
                }
        } else if (got_sigint || r_int_var(W.sym_interrupted)) {
                status = "interrupted";
                error = strdup("interrupted");
        } else {
                status = "error";
                error = error_text(r, &limit);
        }
        SET_VECTOR_ELT(W.slots, SLOT_VALUE, R_NilValue);

done:
        /* R_SelectEx (Sys.sleep) puts back the SIGINT handler with signal(),
         * which adds SA_RESTART, or leaves its own if it unwound early. */
        set_handler(SIGINT, on_sigint);
        close_devices();
        warnings = collect_warnings();
        /* file() turns EMFILE into a warning plus "cannot open the
         * connection". */
        if (!strcmp(status, "error") && !limit) {
                size_t i;
                json_t *w;

                json_array_foreach(warnings, i, w) if (strstr(json_string_value(w), "Too many open files"))
                        limit = "nofile";
        }
        console_send(true);
        W.in_run = false;
        /* The last tool reply (up to a frame's size) is not kept between runs. */
        json_decref(W.tool_reply);
        W.tool_reply = NULL;
        if (strcmp(status, "ok")) {
                free(r->output);
                r->output = NULL;
                json_decref(r->value);
                r->value = NULL;
        }
        send_result(r, status, !strcmp(status, "ok") ? "" : error ? error : "error", limit, warnings);
        free(r->output);
        json_decref(r->value);
        free(r->value_note);
        R_interrupts_pending = 0;
}

/* exec: {"type":"exec","seq":N,"code":"...","limits":{...}}.  The daemon is
 * trusted, but anything else means the two programs disagree: stop. */
static int parse_exec(json_t *msg, struct run *r) {
        json_t *seq = json_object_get(msg, "seq"), *code = json_object_get(msg, "code");
        json_t *limits = json_object_get(msg, "limits"), *v;
        const char *key;

        if (strcmp(frame_type(msg), "exec") || !json_is_integer(seq) || !json_is_string(code))
                return -EBADMSG;
        json_object_foreach(msg, key, v) if (strcmp(key, "type") && strcmp(key, "seq") && strcmp(key, "code") &&
                                             strcmp(key, "limits")) return -EBADMSG;
        *r = (struct run){
                .seq = json_integer_value(seq),
                .code = json_string_value(code),
                .code_len = json_string_length(code),
        };
        for (int i = 0; i < LIMIT_COUNT; i++)
                r->limit[i] = LIMIT_UNSET;
        if (!limits || json_is_null(limits))
                return 0;
        if (!json_is_object(limits))
                return -EBADMSG;
        json_object_foreach(limits, key, v) {
                size_t i;

                for (i = 0; i < LIMIT_COUNT; i++)
                        if (!strcmp(key, limit_names[i]))
                                break;
                if (i == LIMIT_COUNT || !(json_is_integer(v) || json_is_null(v)))
                        return -EBADMSG;
                if (!json_is_integer(v))
                        continue;
                r->limit[i] = json_integer_value(v);
        }
        return 0;
}

/* ---- Tools ----------------------------------------------------------------
 * docs/tools.md.  The daemon defines tools between runs (define_tool,
 * remove_tool: worker.R builds the R functions); during a run a tool's R
 * function calls tool_call_native, which sends a tool_call frame and blocks
 * on the socket for its tool_result.  A SIGINT (the run's deadline, ctl
 * interrupt) ends the wait as an R interrupt; the reply, if it still comes,
 * is dropped (its id is not the one waited for, or it arrives between
 * runs).  Nothing here is trusted by the daemon, which checks every call
 * again. */

#define TOOL_ARGS_MAX (1u << 20)

/* define_tool {name, args: {name: type}, description} and remove_tool
 * {name}: the daemon is trusted, so a bad frame means the programs
 * disagree (-EBADMSG: the worker stops).  An R failure (out of memory) only
 * loses the definition. */
static int tool_definition(json_t *msg) {
        const char *name = json_string_value(json_object_get(msg, "name"));
        bool define = !strcmp(frame_type(msg), "define_tool");
        json_t *args = json_object_get(msg, "args"), *v;
        const char *desc = json_string_value(json_object_get(msg, "description")), *key;
        SEXP call, argnames, argtypes, rname, rdesc;
        int failed = 0;
        R_xlen_t i = 0;

        if (!name || (define && (!json_is_object(args) || !desc)))
                return -EBADMSG;
        if (!define) {
                call = PROTECT(Rf_lang2(W.remove_tool_fn, Rf_mkString(name)));
                R_tryEval(call, W.env, &failed);
                UNPROTECT(1);
                return 0;
        }
        argnames = PROTECT(Rf_allocVector(STRSXP, (R_xlen_t)json_object_size(args)));
        argtypes = PROTECT(Rf_allocVector(STRSXP, (R_xlen_t)json_object_size(args)));
        json_object_foreach(args, key, v) {
                if (!json_is_string(v)) {
                        UNPROTECT(2);
                        return -EBADMSG;
                }
                SET_STRING_ELT(argnames, i, Rf_mkCharCE(key, CE_UTF8));
                SET_STRING_ELT(argtypes, i, Rf_mkCharCE(json_string_value(v), CE_UTF8));
                i++;
        }
        /* Each allocation protected before the next: the order in which C
         * evaluates a call's arguments is unspecified. */
        rname = PROTECT(Rf_mkString(name));
        rdesc = PROTECT(Rf_ScalarString(Rf_mkCharCE(desc, CE_UTF8)));
        call = PROTECT(Rf_lang5(W.define_tool_fn, rname, argnames, argtypes, rdesc));
        R_tryEval(call, W.env, &failed);
        UNPROTECT(5);
        return 0;
}

/* Wait for the tool_result of id.  Returns it (owned by W.tool_reply).
 * Interrupts (SIGINT, SIGXCPU) are taken at once: R_CheckUserInterrupt()
 * unwinds R to the run's top level and never returns here. */
static json_t *tool_wait(json_int_t id) {
        sigset_t block, old;
        bool checked = false;

        sigemptyset(&block);
        sigaddset(&block, SIGINT);
        sigaddset(&block, SIGXCPU);
        for (;;) {
                json_t *m = NULL;
                struct pollfd p = {.fd = W.sock, .events = POLLIN};
                int e = frame_reader_next(&W.reader, &m), r;
                long n;

                if (e < 0)
                        worker_exit(2);
                if (e == 1) {
                        json_t *jid = json_object_get(m, "id");
                        if (!strcmp(frame_type(m), "interrupt")) {
                                json_t *jseq = json_object_get(m, "seq");
                                /* Its SIGINT follows (or came): make sure R
                                 * unwinds even if the signal was missed. */
                                if (json_is_integer(jseq) && json_integer_value(jseq) == W.seq) {
                                        got_sigint = 1;
                                        R_interrupts_pending = 1;
                                        checked = false;
                                }
                                json_decref(m);
                                continue;
                        }
                        if (strcmp(frame_type(m), "tool_result"))
                                worker_exit(2); /* nothing else comes during a call */
                        if (json_is_integer(jid) && json_integer_value(jid) == id) {
                                W.tool_reply = m;
                                return m;
                        }
                        json_decref(m); /* a stale reply */
                        continue;
                }
                /* Check for an interrupt and sleep atomically: a SIGINT that
                 * came before ppoll() is seen here, one during it ends it. */
                sigprocmask(SIG_BLOCK, &block, &old);
                if (R_interrupts_pending && !checked) {
                        sigprocmask(SIG_SETMASK, &old, NULL);
                        checked = true;
                        R_CheckUserInterrupt();
                        continue;
                }
                r = ppoll(&p, 1, NULL, &old);
                sigprocmask(SIG_SETMASK, &old, NULL);
                if (r < 0) {
                        if (errno == EINTR) {
                                checked = false;
                                continue;
                        }
                        worker_exit(1);
                }
                n = frame_reader_fill(&W.reader, W.sock);
                if (n == 0)
                        worker_exit(0);
                if (n < 0 && n != -EINTR && n != -EAGAIN)
                        worker_exit(1);
        }
}

/* The arguments as one JSON object, in C when each is NULL or a plain
 * atomic vector (jsonlite's form: a length-one vector unboxed, NA null);
 * NULL when one needs jsonlite. */
static json_t *tool_args_fast(SEXP args) {
        SEXP names = Rf_getAttrib(args, R_NamesSymbol);
        json_t *obj = json_object();
        size_t size = 2;

        if (obj && XLENGTH(args) == 0)
                return obj;
        if (TYPEOF(names) != STRSXP || !obj)
                goto slow;
        for (R_xlen_t i = 0; i < XLENGTH(args); i++) {
                SEXP v = VECTOR_ELT(args, i), ch = STRING_ELT(names, i);
                json_t *j;

                if (ch == NA_STRING || !*CHAR(ch) || !utf8_valid(CHAR(ch), (size_t)LENGTH(ch), NULL))
                        goto slow;
                if (v == R_NilValue) {
                        j = json_null();
                } else if (!json_fast_path(v)) {
                        goto slow;
                } else if (XLENGTH(v) == 1) {
                        j = element_json(v, 0, &size);
                } else {
                        j = json_array();
                        for (R_xlen_t k = 0; j && k < XLENGTH(v); k++) {
                                json_t *x = element_json(v, k, &size);
                                if (!x || size > TOOL_ARGS_MAX || json_array_append_new(j, x) < 0) {
                                        json_decref(j);
                                        j = NULL;
                                }
                        }
                }
                if (!j || size > TOOL_ARGS_MAX || json_object_set_new(obj, CHAR(ch), j) < 0)
                        goto slow;
        }
        return obj;
slow:
        json_decref(obj);
        return NULL;
}

/* A JSON scalar as an R value the way fromJSON() gives it, or NULL when
 * the value is not a scalar. */
static SEXP tool_value_fast(json_t *v) {
        switch (json_typeof(v)) {
        case JSON_NULL: return R_NilValue;
        case JSON_TRUE: return Rf_ScalarLogical(TRUE);
        case JSON_FALSE: return Rf_ScalarLogical(FALSE);
        case JSON_INTEGER: {
                json_int_t x = json_integer_value(v);
                return x > INT32_MIN && x <= INT32_MAX ? Rf_ScalarInteger((int)x) : Rf_ScalarReal((double)x);
        }
        case JSON_REAL: return Rf_ScalarReal(json_real_value(v));
        case JSON_STRING:
                return Rf_ScalarString(Rf_mkCharLenCE(json_string_value(v), (int)json_string_length(v), CE_UTF8));
        default: return NULL;
        }
}

/* .Call(tool_call_native, name, args) from worker.R's tool functions (and
 * from any user code: the daemon checks every call).  args is a named list
 * or one JSON object as text.  Returns NULL when the list needs jsonlite
 * (the R side encodes it and calls again); else list(kind, payload): kind
 * 0, the value; 1, JSON text for fromJSON(); 2, the tool's error message. */
static SEXP tool_call_native(SEXP name, SEXP args) {
        _cleanup_json_ json_t *msg = NULL;
        _cleanup_free_ char *buf = NULL;
        json_t *jargs, *reply, *v;
        json_int_t id;
        size_t len, off = 0;
        SEXP out, payload;
        int kind, e;

        if (!W.in_run || W.sock < 0)
                Rf_error("tools can only be called while the session runs code");
        if (TYPEOF(name) != STRSXP || XLENGTH(name) != 1 || STRING_ELT(name, 0) == NA_STRING ||
            !utf8_valid(CHAR(STRING_ELT(name, 0)), (size_t)LENGTH(STRING_ELT(name, 0)), NULL))
                Rf_error("the tool name must be one string");
        if (TYPEOF(args) == VECSXP) {
                jargs = tool_args_fast(args);
                if (!jargs)
                        return R_NilValue;
        } else if (TYPEOF(args) == STRSXP && XLENGTH(args) == 1 && STRING_ELT(args, 0) != NA_STRING) {
                SEXP ch = STRING_ELT(args, 0);
                if ((size_t)LENGTH(ch) > TOOL_ARGS_MAX)
                        Rf_error("the tool call's arguments are over 1 MiB");
                jargs = json_loadb(CHAR(ch), (size_t)LENGTH(ch), JSON_REJECT_DUPLICATES, NULL);
                if (!json_is_object(jargs)) {
                        json_decref(jargs);
                        Rf_error("the tool call's arguments must be one JSON object");
                }
        } else {
                Rf_error("the tool call's arguments must be a named list or JSON text");
        }
        id = ++W.tool_id;
        msg = json_pack("{s:s, s:I, s:I, s:s, s:o}", "type", "tool_call", "seq", (json_int_t)W.seq, "id", id, "tool",
                        CHAR(STRING_ELT(name, 0)), "args", jargs);
        if (!msg)
                Rf_error("out of memory");
        e = frame_encode(msg, &buf, &len);
        if (e < 0 || len > TOOL_ARGS_MAX + 4096) {
                json_decref(msg);
                msg = NULL;
                free(TAKE_PTR(buf)); /* Rf_error() jumps past the clean-up */
                Rf_error(e == -ENOMEM ? "out of memory" : "the tool call's arguments are over 1 MiB");
        }
        json_decref(msg);
        msg = NULL;
        /* What the code printed before the call comes first. */
        if (W.console.len > 0)
                console_send(false);
        json_decref(W.tool_reply);
        W.tool_reply = NULL;
        while (off < len) {
                ssize_t n = write(W.sock, buf + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        worker_exit(1);
                off += (size_t)n;
        }
        free(TAKE_PTR(buf));

        reply = tool_wait(id);
        v = json_object_get(reply, "error");
        if (json_is_string(v)) {
                kind = 2;
                payload = PROTECT(Rf_ScalarString(
                        Rf_mkCharLenCE(json_string_value(v), (int)json_string_length(v), CE_UTF8)));
        } else {
                v = json_object_get(reply, "value");
                payload = tool_value_fast(v ? v : json_null());
                if (payload) {
                        kind = 0;
                        PROTECT(payload);
                } else {
                        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
                        if (!text)
                                Rf_error("out of memory");
                        kind = 1;
                        payload = Rf_mkCharLenCE(text, (int)strlen(text), CE_UTF8);
                        free(text);
                        payload = PROTECT(Rf_ScalarString(payload));
                }
        }
        out = PROTECT(Rf_allocVector(VECSXP, 2));
        SET_VECTOR_ELT(out, 0, Rf_ScalarInteger(kind));
        SET_VECTOR_ELT(out, 1, payload);
        UNPROTECT(2);
        return out;
}

/* In the zygote: worker.R's tool functions and the native entry point. */
static int worker_tools_init(char *err, size_t errlen) {
        SEXP ptr;

        W.define_tool_fn = Rf_findVarInFrame3(W.env, Rf_install("define_tool"), TRUE);
        W.remove_tool_fn = Rf_findVarInFrame3(W.env, Rf_install("remove_tool"), TRUE);
        if (TYPEOF(W.define_tool_fn) != CLOSXP || TYPEOF(W.remove_tool_fn) != CLOSXP) {
                snprintf(err, errlen, "worker.R defines no define_tool or remove_tool");
                return -EINVAL;
        }
        preserve(W.define_tool_fn);
        preserve(W.remove_tool_fn);
        /* .Call() takes an external pointer tagged "native symbol" as the
         * routine itself: no DLL registration needed. */
        ptr = PROTECT(R_MakeExternalPtrFn((DL_FUNC)(void (*)(void))tool_call_native, Rf_install("native symbol"), R_NilValue));
        Rf_defineVar(Rf_install("tool_call_native"), ptr, W.env);
        UNPROTECT(1);
        return 0;
}

/* ---- The worker process ------------------------------------------------ */

static void send_fatal(const char *error) {
        json_t *msg = json_pack("{s:s, s:s}", "type", "fatal", "error", error);

        if (msg)
                frame_send(W.sock, msg);
        json_decref(msg);
}

static int setup_tmpdir(char *err, size_t errlen) {
        const char *dir = jail_tmpdir();

        if (!dir || !*dir) {
                snprintf(err, errlen, "no temporary directory from the jail");
                return -ENOENT;
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
                int e = errno;

                snprintf(err, errlen, "mkdir %s: %s", dir, strerror(e));
                return -e;
        }
        /* R_TempDir still names the zygote's directory, shared by every
         * worker (and absent inside the jail). */
        R_TempDir = strdup(dir);
        if (!R_TempDir) {
                snprintf(err, errlen, "out of memory");
                return -ENOMEM;
        }
        setenv("TMPDIR", dir, 1);
        setenv("R_SESSION_TMPDIR", dir, 1);
        /* fontconfig writes a missing cache under $XDG_CACHE_HOME, else
         * $HOME/.cache: not in the user's workspace. */
        setenv("XDG_CACHE_HOME", dir, 1);
        return 0;
}

static int redirect_stdio(char *err, size_t errlen) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

        if (fd < 0) {
                int e = errno;

                snprintf(err, errlen, "open /dev/null: %s", strerror(e));
                return -e;
        }
        for (int i = 0; i < 3; i++)
                if (fd != i && dup2(fd, i) < 0) {
                        int e = errno;

                        snprintf(err, errlen, "dup2 /dev/null: %s", strerror(e));
                        return -e;
                }
        if (fd > 2)
                close(fd);
        return 0;
}

/* Wait for the daemon's workspace frame, which carries the workspace's
 * descriptor (SCM_RIGHTS on its bytes: recvmsg, not read, or the kernel
 * would drop it).  Bytes of later frames stay in W.reader.  Returns the
 * descriptor, or -1 (anything else first, or no descriptor). */
static int receive_workspace(void) {
        int fd = -1;

        for (;;) {
                union {
                        struct cmsghdr align;
                        char space[CMSG_SPACE(sizeof(int))];
                } control;
                char buf[4096];
                struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
                struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                                    .msg_controllen = sizeof(control.space)};
                json_t *m = NULL;
                int e = frame_reader_next(&W.reader, &m);
                ssize_t n;

                if (e < 0)
                        break;
                if (e == 1) {
                        bool ok = !strcmp(frame_type(m), "workspace");
                        json_decref(m);
                        if (!ok)
                                break;
                        return fd;
                }
                n = recvmsg(W.sock, &mh, MSG_CMSG_CLOEXEC);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n == 0)
                        _exit(0); /* a pooled worker the daemon no longer wants */
                if (n < 0)
                        break;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                            c->cmsg_len == CMSG_LEN(sizeof(int))) {
                                int got;
                                memcpy(&got, CMSG_DATA(c), sizeof(int));
                                if (fd < 0)
                                        fd = got;
                                else
                                        close(got);
                        }
                if (frame_reader_feed(&W.reader, buf, (size_t)n) < 0)
                        break;
        }
        if (fd >= 0)
                close(fd);
        return -1;
}

void worker_main(int sock, const struct jail_options *o) {
        char err[1024] = "";
        sigset_t none;

        /* Child of jail_clone(): the zygote's control socket is fd 3, the
         * daemon's socket for this worker is sock.  After this, fd 3 is the
         * worker's socket and nothing else of the zygote's stays open. */
        if (dup2(sock, WORKER_FD) < 0)
                _exit(1);
        if (close_range(WORKER_FD + 1, ~0u, 0) < 0)
                for (int fd = WORKER_FD + 1; fd < 65536; fd++)
                        close(fd);
        W.sock = WORKER_FD;
        W.zygote_ctl = -1;
        set_handler(SIGPIPE, SIG_IGN);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);

        /* The jail without /work: a pooled worker exists before its
         * session, and keeps its capabilities (inside its own namespaces)
         * until the workspace comes. */
        if (jail_enter(o, err, sizeof(err)) < 0 || redirect_stdio(err, sizeof(err)) < 0 ||
            setup_tmpdir(err, sizeof(err)) < 0) {
                send_fatal(err);
                _exit(1);
        }
        snprintf(err, sizeof(err), "worker %ld", (long)getpid());
        log_set_prefix(err);

        set_handler(SIGINT, on_sigint);
        set_handler(SIGXCPU, on_sigxcpu);
        set_handler(SIGXFSZ, on_sigxfsz);
        R_PolledEvents = polled_events;
        R_wait_usec = POLL_WAIT_USEC;

        send_frame(json_pack("{s:s, s:s, s:I}", "type", "ready", "r_version", R_MAJOR "." R_MINOR, "reserved_bytes",
                             (json_int_t)worker_reserved_address_space()));

        frame_reader_init(&W.reader, FRAME_MAX_BYTES);
        /* Assigned to a session: its workspace becomes /work, then the last
         * privileges go and the filter is installed, before any user code. */
        {
                int ws = receive_workspace();

                if (ws < 0 || jail_attach_workspace(o, ws, err, sizeof(err)) < 0 ||
                    (o->mode == JAIL_STRICT && syscall_filter_install(err, sizeof(err)) < 0)) {
                        send_fatal(ws < 0 ? "no workspace descriptor from the daemon" : err);
                        _exit(1);
                }
                close(ws);
        }
        /* From here on: inside the jail, no capabilities. */
        send_frame(json_pack("{s:s}", "type", "attached"));

        for (;;) {
                _cleanup_json_ json_t *msg = NULL;
                struct run r;
                const char *type;
                int e = frame_recv(W.sock, &W.reader, &msg);

                if (e == 0)
                        worker_exit(0); /* the daemon closed the session */
                if (e < 0)
                        worker_exit(2);
                type = frame_type(msg);
                if (!strcmp(type, "define_tool") || !strcmp(type, "remove_tool")) {
                        if (tool_definition(msg) < 0)
                                worker_exit(2);
                        continue;
                }
                if (!strcmp(type, "tool_result") || !strcmp(type, "interrupt"))
                        continue; /* for a run that has ended */
                if (parse_exec(msg, &r) < 0)
                        worker_exit(2);
                run_exec(&r);
        }
}
