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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
#include "loop.h" /* now_ns() */
#include "json_cleanup.h"
#include "macros.h"
#include "options.h"
#include "utf8.h"
#include "seccomp.h"
#include "secrets.h"
#include "worker_internal.h"
#include "worker_r.h"

/* Not in the public headers outside R_ext/GraphicsDevice.h, which needs the
 * whole graphics engine; it is a plain exported int in libR. */
extern int R_interrupts_pending;
/* R_ext/GraphicsDevice.h, same reason: the number of open devices + 1 (the
 * null device). */
extern int Rf_NumDevices(void);
/* Defn.h, not Rinterface.h: 1 when the C stack grows down.  An exported
 * int in libR, like R_CStackStart beside it. */
extern int R_CStackDir;

#define WORKER_FD 3

#define CONSOLE_FRAME_MAX (64u << 10)      /* text of one console frame */
#define CONSOLE_FLUSH_BYTES (8u << 10)     /* send once this much is pending */
#define CONSOLE_FLUSH_NS (10 * 1000000ull) /* or once this long has passed */
#define CONSOLE_RUN_MAX (16u << 20)        /* a print loop cannot flood the daemon */
#define OUTPUT_MAX (1u << 20)
#define OUTPUT_LINES_MAX 50  /* DESIGN section 2; worker.R's max_output_lines */
#define CAPTURE_BLANK_MAX 4096 /* empty lines past the budget before giving up on them */
#define VALUE_JSON_MAX (4u << 20)
/* value.json nests at most this deep: the R client's fromJSON(simplifyVector
 * = TRUE) needs about 30 KiB of C stack a level, and jsonlite on the host
 * cannot even write 200 levels with R's default 8 MiB stack. */
#define VALUE_JSON_DEPTH_MAX 200
#define VALUE_JSON_SECONDS 2 /* jsonlite's conversion, before it is given up */
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

/* print()'s output while the value is formatted (worker.R, print_lines):
 * what R writes to stdout lands here instead of the console, and once the
 * line or byte budget is spent the printing is stopped (capture_full). */
struct capture {
        bool active;
        bool full;       /* the budget is spent; the restart was invoked */
        char *buf;       /* the kept lines, as R wrote them */
        size_t len, cap;
        int line;        /* index of the line being written */
        int max_lines;
        int blank_after; /* empty lines written past max_lines */
};

static struct worker {
        int sock;       /* the daemon's stream socket: fd 3 in a worker, -1 in the zygote */
        int zygote_ctl; /* the zygote's control socket while R starts, else -1 */
        bool in_run;
        long long seq;
        struct console console;
        struct capture capture;
        uint64_t json_deadline_ns; /* jsonlite's conversion gives up after it; 0: none */
        /* R objects, all kept alive with R_PreserveObject. */
        SEXP env;   /* worker.R's private environment */
        SEXP slots; /* VECSXP protecting the run's parse and value */
        SEXP format_call, json_call, parse_error_call, summary_call, reset_warnings_call;
        SEXP add_handlers_call;
        SEXP graphics_off_call; /* grDevices::graphics.off() */
        SEXP output_full_call;  /* invokeRestart("securerfs_output_full") */
        SEXP sym_value, sym_code, sym_warnings_count, sym_interrupted, sym_tool_error;
        SEXP define_tool_fn, remove_tool_fn;
        /* Tools: the daemon's frames are read through this reader both
         * between runs and while a tool call waits for its reply. */
        struct frame_reader reader;
        json_int_t tool_id;   /* last tool_call id of this run */
        json_t *tool_reply;   /* the last tool_result, until the next call */
} W = {.sock = -1, .zygote_ctl = -1};

static volatile sig_atomic_t got_sigint, got_sigxcpu, got_sigxfsz;

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

/* ---- Capture of print() ------------------------------------------------
 * The value's text is print()'s output, of which only the first 50 lines
 * (and 1 MiB) are kept: printing the rest of a million-element list would
 * take seconds and be thrown away.  So R's stdout comes here while
 * worker.R's print_lines() prints the value, and the first character of a
 * line past the budget stops the printing: it invokes the restart that
 * print_lines() establishes around print(), which long-jumps out of
 * whatever is printing (R's own print code, a print method, show(), cat()),
 * running the on.exit() code of the frames it leaves.  R long-jumps out of
 * the same places when it takes an interrupt (Rvprintf checks for one
 * every 100 writes), so its printing code is safe to leave there. */

static void capture_full(void) {
        struct capture *c = &W.capture;

        if (c->full)
                return; /* on.exit() code printing while the jump unwinds */
        c->full = true;
        /* Does not return: the restart jumps, and without it (user code
         * calling the capture routines itself) the R error jumps. */
        Rf_eval(W.output_full_call, R_BaseNamespace);
}

/* Append n bytes to the captured text, within OUTPUT_MAX (cut at a
 * character boundary).  NUL bytes are dropped: R strings cannot hold them.
 * Returns false when the bytes did not all fit. */
static bool capture_append(const char *buf, size_t n) {
        struct capture *c = &W.capture;
        bool fits = c->len + n <= OUTPUT_MAX;

        if (!fits) {
                n = OUTPUT_MAX - c->len;
                while (n > 0 && ((unsigned char)buf[n] & 0xc0) == 0x80)
                        n--;
        }
        if (c->len + n > c->cap) {
                size_t cap = c->cap ? c->cap : 4096;
                char *p;

                while (cap < c->len + n)
                        cap *= 2;
                p = realloc(c->buf, cap);
                if (!p)
                        return false;
                c->buf = p;
                c->cap = cap;
        }
        for (size_t i = 0; i < n; i++)
                if (buf[i])
                        c->buf[c->len++] = buf[i];
        return fits;
}

static void capture_write(const char *buf, size_t n) {
        struct capture *c = &W.capture;

        if (c->full)
                return;
        while (n > 0) {
                const char *nl = memchr(buf, '\n', n);
                size_t text = nl ? (size_t)(nl - buf) : n, step = text + (nl ? 1 : 0);

                if (c->line >= c->max_lines) {
                        /* Past the budget: an empty line is only counted (it
                         * is dropped if nothing follows); text means the
                         * output is cut. */
                        if (text > 0 || ++c->blank_after > CAPTURE_BLANK_MAX) {
                                capture_full();
                                return;
                        }
                } else {
                        if (!capture_append(buf, step)) {
                                capture_full();
                                return;
                        }
                        if (nl)
                                c->line++;
                }
                buf += step;
                n -= step;
        }
}

/* .Call(capture_start_native, max_lines) from print_lines(): divert stdout
 * until capture_stop_native. */
static SEXP capture_start(SEXP max_lines) {
        struct capture *c = &W.capture;
        int max = Rf_asInteger(max_lines);

        if (max == NA_INTEGER || max < 0 || max > OUTPUT_LINES_MAX)
                Rf_error("max_lines must be 0 to %d", OUTPUT_LINES_MAX);
        c->active = true;
        c->full = false;
        c->len = 0;
        c->line = 0;
        c->blank_after = 0;
        c->max_lines = max;
        return R_NilValue;
}

static void capture_reset(void) {
        W.capture.active = false;
        W.capture.full = false;
        W.capture.len = 0;
}

/* .Call(capture_stop_native): end the diversion; list(lines, truncated) as
 * print_lines() returns it, or NULL when no capture was under way. */
static SEXP capture_stop(void) {
        struct capture *c = &W.capture;
        SEXP out, lines;
        int n = 0;

        if (!c->active)
                return R_NilValue;
        c->active = false;
        /* Lines end at "\n"; a last line without one counts too. */
        for (size_t i = 0; i < c->len; i++)
                if (c->buf[i] == '\n')
                        n++;
        if (c->len > 0 && c->buf[c->len - 1] != '\n')
                n++;
        out = PROTECT(Rf_allocVector(VECSXP, 2));
        lines = Rf_allocVector(STRSXP, n);
        SET_VECTOR_ELT(out, 0, lines);
        for (size_t i = 0, start = 0, k = 0; i <= c->len && k < (size_t)n; i++)
                if (i == c->len || c->buf[i] == '\n') {
                        SET_STRING_ELT(lines, (R_xlen_t)k++,
                                       Rf_mkCharLenCE(c->buf + start, (int)(i - start), CE_NATIVE));
                        start = i + 1;
                }
        SET_VECTOR_ELT(out, 1, Rf_ScalarLogical(c->full));
        c->full = false;
        c->len = 0;
        UNPROTECT(1);
        return out;
}

static void console_write(const char *buf, int len, int otype) {
        struct console *c = &W.console;
        size_t n = len > 0 ? (size_t)len : 0;

        if (W.capture.active && otype == 0) {
                capture_write(buf, n);
                return;
        }
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
        /* R calls this from R_CheckUserInterrupt(), so an error here is
         * raised where an interrupt would be: how setTimeLimit() works,
         * without touching the limits the user's code may have set. */
        if (W.json_deadline_ns && now_ns() > W.json_deadline_ns) {
                W.json_deadline_ns = 0;
                Rf_error("the conversion took over %d s", VALUE_JSON_SECONDS);
        }
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

/* ---- C stack --------------------------------------------------------------
 * R checks its C stack in eval() and other recursive places
 * (R_CheckStack: usage = R_CStackDir * (R_CStackStart - sp) against
 * R_CStackLimit) and turns deep recursion into a catchable "C stack usage
 * is too close to the limit" error.  Without it deep recursion runs into
 * the end of the stack and the worker dies of SIGSEGV with the session's
 * state.  R's own set-up does not fit the worker: it reads RLIMIT_STACK once,
 * in the zygote, while the daemon sets each session's limit on the worker
 * with prlimit(2), and may change it between runs.
 *
 * The kernel lets the main thread's stack grow (on a fault below it) while
 * the whole stack mapping, measured from its top, stays within the soft
 * RLIMIT_STACK read at the time of the fault, and stays a guard gap
 * (stack_guard_gap, 256 pages) above the mapping below it; the growth also
 * counts against RLIMIT_AS.  A worker is a copy-on-write clone of the zygote
 * (jail_clone passes no new stack), so its stack mapping is the zygote's:
 * worker_r_init() notes its top and the room below it once, and each run
 * sets R_CStackLimit from the limits in force (cstack_update; between runs,
 * for the worker's own tool definitions, the last run's stays).  The limit
 * keeps a margin inside what the kernel grants, for three reasons: R
 * raises the limit by a further 1/0.95 while it handles the overflow error
 * (R_SignalCStackOverflow), C code between two checks uses stack R never
 * sees (deparse, regex, a print method's C), and RLIMIT_AS may refuse the
 * growth first. */

#define STACK_GUARD_GAP (1u << 20)      /* the kernel's default stack_guard_gap */
#define STACK_SLACK_MIN (128u << 10)    /* kept free below R's limit, at least */
#define STACK_ROOM_UNKNOWN (256u << 20) /* growth room when the mapping below is unknown */

static struct {
        uintptr_t top;  /* end of the main stack's mapping */
        size_t room;    /* bytes it can grow to before the guard gap of the mapping below */
        rlim_t stack, as; /* the limits R_CStackLimit was last computed from */
        bool known;
} cstack;

/* In the zygote, from /proc/self/maps: the [stack] mapping and the end of
 * the one below it.  Without /proc (it is the host's here, so only if it
 * is not mounted), R's own start of stack (glibc's __libc_stack_end) and a
 * fixed room stand in. */
static void cstack_init(void) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        uintptr_t prev_end = 0;
        bool at_start = true; /* a long path is read in pieces */

        cstack.top = R_CStackStart;
        cstack.room = STACK_ROOM_UNKNOWN;
        while (f && fgets(line, sizeof(line), f)) {
                unsigned long start, end;
                bool was_start = at_start;

                at_start = strchr(line, '\n') != NULL;
                if (!was_start || sscanf(line, "%lx-%lx", &start, &end) != 2)
                        continue;
                if (strstr(line, "[stack]") && (uintptr_t)start <= (uintptr_t)&line &&
                    (uintptr_t)&line < (uintptr_t)end) {
                        cstack.top = (uintptr_t)end;
                        if (prev_end && (uintptr_t)end - prev_end > STACK_GUARD_GAP)
                                cstack.room = (size_t)((uintptr_t)end - prev_end - STACK_GUARD_GAP);
                        break;
                }
                prev_end = (uintptr_t)end;
        }
        if (f)
                fclose(f);
        cstack.stack = cstack.as = 0;
        cstack.known = false;
}

/* At the start of a run: R's limit from the soft RLIMIT_STACK and
 * RLIMIT_AS the daemon set.  Two getrlimit() calls when nothing changed. */
static void cstack_update(void) {
        struct rlimit st, as;
        size_t usable, slack;

        if (getrlimit(RLIMIT_STACK, &st) < 0 || getrlimit(RLIMIT_AS, &as) < 0)
                return;
        if (cstack.known && st.rlim_cur == cstack.stack && as.rlim_cur == cstack.as)
                return;
        usable = cstack.room;
        if (st.rlim_cur != RLIM_INFINITY && st.rlim_cur < usable)
                usable = (size_t)st.rlim_cur;
        /* The heap needs the address space too. */
        if (as.rlim_cur != RLIM_INFINITY && as.rlim_cur / 4 < usable)
                usable = (size_t)(as.rlim_cur / 4);
        slack = STACK_SLACK_MIN + usable / 16;
        R_CStackStart = cstack.top;
        R_CStackDir = 1; /* down, on every architecture Linux runs this on but PA-RISC */
        R_CStackLimit = usable > slack ? (uintptr_t)((double)(usable - slack) * 0.95) : 0;
        cstack.stack = st.rlim_cur;
        cstack.as = as.rlim_cur;
        cstack.known = true;
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

/* A C routine bound to name in W.env, for .Call(name, ...) in worker.R.
 * .Call() takes an external pointer tagged "native symbol" as the routine
 * itself: no DLL registration needed. */
static void define_native(const char *name, DL_FUNC fn) {
        SEXP ptr = PROTECT(R_MakeExternalPtrFn(fn, Rf_install("native symbol"), R_NilValue));

        Rf_defineVar(Rf_install(name), ptr, W.env);
        UNPROTECT(1);
}

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
        /* No stack check while R starts: the zygote's RLIMIT_STACK is not a
         * session's.  Each run sets R's limit from the worker's own
         * (cstack_update); -1 here also keeps setup_Rmainloop() from
         * scaling it. */
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
        cstack_init();

        W.slots = preserve(Rf_allocVector(VECSXP, N_SLOTS));
        W.sym_value = Rf_install(".value");
        W.sym_code = Rf_install(".code");
        W.sym_warnings_count = Rf_install("warnings_count");
        W.sym_interrupted = Rf_install("interrupted");
        W.sym_tool_error = Rf_install("tool_error");

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
        W.output_full_call = preserve(Rf_lang2(Rf_install("invokeRestart"), R_NilValue));
        SETCADR(W.output_full_call, Rf_mkString("securerfs_output_full"));
        define_native("capture_start_native", (DL_FUNC)(void (*)(void))capture_start);
        define_native("capture_stop_native", (DL_FUNC)(void (*)(void))capture_stop);
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

/* The text for output, or NULL when formatting failed or was interrupted
 * (the caller tells which). */
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
        capture_reset(); /* if an interrupt left print_lines() early */
        if (!res || TYPEOF(res) != STRSXP || XLENGTH(res) != 1 || STRING_ELT(res, 0) == NA_STRING)
                return NULL;
        PROTECT(res);
        char *out = charsxp_text(STRING_ELT(res, 0), OUTPUT_MAX, output_truncated_marker, len);
        UNPROTECT(1);
        return out;
}

/* ---- Value JSON (jsonlite's conventions) --------------------------------
 * value.json is at most 4 MiB and VALUE_JSON_DEPTH_MAX levels deep, and no
 * time goes into JSON that would not be kept.  So, for every value:
 *
 *   1. json_scan() walks it once, in C, for a lower bound of its JSON's
 *      size (what jsonlite writes at the least for each element), its
 *      nesting depth, and whether the C encoder below covers all of it.  It
 *      stops as soon as the bound passes 4 MiB: a value over the cap costs
 *      only the walk to the cap, and is not converted at all.
 *   2. What the C encoder covers (NULL; unclassed logical, integer, double
 *      and character vectors and factors; unclassed lists, named or not;
 *      plain data frames of those) is encoded in C, counting its size as
 *      it goes and stopping at the cap.
 *   3. The rest goes to jsonlite (worker.R's value_json), given
 *      VALUE_JSON_SECONDS (polled_events() raises an error after that).
 *
 * A value that is skipped or cut gets a value_note saying why. */

/* Text sizes of one element as jansson writes it (JSON_REAL_PRECISION(15),
 * as common/frame.c sends it).  exact: the size, or an over-estimate of it;
 * otherwise a lower bound, cheap to compute. */
static size_t integer_chars(long long x) {
        unsigned long long u = x < 0 ? -(unsigned long long)x : (unsigned long long)x;
        size_t n = x < 0 ? 2 : 1;

        while (u >= 10) {
                u /= 10;
                n++;
        }
        return n;
}

static size_t string_chars(SEXP ch, bool exact) {
        const char *s;
        size_t n, escaped = 0;

        if (ch == NA_STRING)
                return 4;
        s = CHAR(ch);
        n = (size_t)LENGTH(ch);
        if (!exact && n > VALUE_JSON_MAX)
                return n + 2; /* over the cap as it is: no need to look */
        for (size_t k = 0; k < n; k++)
                if ((unsigned char)s[k] < 0x20 || s[k] == '"' || s[k] == '\\')
                        escaped++;
        /* An escape is 2 to 6 bytes; a bad byte becomes U+FFFD (3). */
        return n + 2 + escaped * (exact ? 5 : 1) + (exact && Rf_getCharCE(ch) == CE_LATIN1 ? n : 0);
}

static size_t real_chars(double x, bool exact) {
        char buf[32];
        int n;

        if (!isfinite(x))
                return 4;
        if (x == floor(x) && fabs(x) < 1e15)
                return integer_chars((long long)x);
        if (!exact)
                return 3; /* "0.5" */
        n = snprintf(buf, sizeof(buf), "%.15g", x);
        return n > 0 ? (size_t)n : 24;
}

/* The kinds of atomic vector the C encoder writes. */
enum atomic_kind { ATOMIC_OTHER, ATOMIC_PLAIN, ATOMIC_FACTOR };

static SEXP attribute(SEXP v, SEXP name) {
        for (SEXP a = ATTRIB(v); a != R_NilValue; a = CDR(a))
                if (TAG(a) == name)
                        return CAR(a);
        return NULL;
}

static bool class_is(SEXP v, const char *a, const char *b) {
        SEXP cls = attribute(v, R_ClassSymbol);

        if (!cls || TYPEOF(cls) != STRSXP || XLENGTH(cls) != (b ? 2 : 1))
                return false;
        return !strcmp(CHAR(STRING_ELT(cls, 0)), a) && (!b || !strcmp(CHAR(STRING_ELT(cls, 1)), b));
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

static enum atomic_kind atomic_kind(SEXP v) {
        SEXP levels;

        if (json_fast_path(v))
                return ATOMIC_PLAIN;
        /* factor or ordered, with levels, class and perhaps names: jsonlite
         * writes each element as its level. */
        if (TYPEOF(v) != INTSXP || !(class_is(v, "factor", NULL) || class_is(v, "ordered", "factor")))
                return ATOMIC_OTHER;
        levels = attribute(v, R_LevelsSymbol);
        if (!levels || TYPEOF(levels) != STRSXP)
                return ATOMIC_OTHER;
        for (SEXP a = ATTRIB(v); a != R_NilValue; a = CDR(a))
                if (TAG(a) != R_LevelsSymbol && TAG(a) != R_ClassSymbol && TAG(a) != R_NamesSymbol)
                        return ATOMIC_OTHER;
        return ATOMIC_FACTOR;
}

static SEXP factor_level(SEXP v, R_xlen_t i) {
        SEXP levels = attribute(v, R_LevelsSymbol);
        int k = INTEGER(v)[i];

        return k == NA_INTEGER || k < 1 || k > XLENGTH(levels) ? NA_STRING : STRING_ELT(levels, k - 1);
}

static size_t element_chars(SEXP v, R_xlen_t i, enum atomic_kind kind, bool exact) {
        if (kind == ATOMIC_FACTOR)
                return string_chars(factor_level(v, i), exact);
        switch (TYPEOF(v)) {
        case LGLSXP: return LOGICAL(v)[i] == FALSE ? 5 : 4;
        case INTSXP: return INTEGER(v)[i] == NA_INTEGER ? 4 : integer_chars(INTEGER(v)[i]);
        case REALSXP: return real_chars(REAL(v)[i], exact);
        case STRSXP: return string_chars(STRING_ELT(v, i), exact);
        default: return 0;
        }
}

static json_t *string_json(SEXP ch) {
        size_t len;
        _cleanup_free_ char *clean = NULL;

        if (ch == NA_STRING)
                return json_null();
        if (Rf_getCharCE(ch) != CE_LATIN1 && Rf_getCharCE(ch) != CE_BYTES &&
            utf8_valid(CHAR(ch), (size_t)LENGTH(ch), NULL))
                return json_stringn_nocheck(CHAR(ch), (size_t)LENGTH(ch));
        clean = charsxp_text(ch, VALUE_JSON_MAX, NULL, &len);
        return clean ? json_stringn_nocheck(clean, len) : NULL;
}

/* JSON of one element of a json_fast_path() vector, adding an
 * over-estimate of its encoded size (and a separator) to *size.  Matches
 * toJSON(auto_unbox = TRUE, na = "null", digits = NA): NA and the
 * non-finite doubles are null, whole doubles print without a fraction
 * (jsonlite writes 2, not 2.0; below 1e15 "%.15g" has no exponent). */
static json_t *element_json(SEXP v, R_xlen_t i, size_t *size) {
        *size += element_chars(v, i, ATOMIC_PLAIN, true) + 1;
        switch (TYPEOF(v)) {
        case LGLSXP: {
                int x = LOGICAL(v)[i];

                return x == NA_LOGICAL ? json_null() : json_boolean(x);
        }
        case INTSXP: {
                int x = INTEGER(v)[i];

                return x == NA_INTEGER ? json_null() : json_integer(x);
        }
        case REALSXP: {
                double x = REAL(v)[i];

                if (!isfinite(x))
                        return json_null();
                if (x == floor(x) && fabs(x) < 1e15)
                        return json_integer((json_int_t)x);
                return json_real(x);
        }
        case STRSXP:
                if (*size > VALUE_JSON_MAX)
                        return json_null(); /* the caller gives up anyway */
                return string_json(STRING_ELT(v, i));
        default:
                return NULL;
        }
}

/* Names that can be JSON keys as they are: all present, non-empty, valid
 * UTF-8 (uniqueness is checked as the object is built).  jsonlite makes
 * up keys for the others ("1", "a.1"): those values go to jsonlite. */
static bool names_are_keys(SEXP names, R_xlen_t n) {
        if (!names || TYPEOF(names) != STRSXP || XLENGTH(names) != n)
                return false;
        for (R_xlen_t i = 0; i < n; i++) {
                SEXP ch = STRING_ELT(names, i);

                if (ch == NA_STRING || LENGTH(ch) == 0 || Rf_getCharCE(ch) == CE_LATIN1 ||
                    Rf_getCharCE(ch) == CE_BYTES || !utf8_valid(CHAR(ch), (size_t)LENGTH(ch), NULL))
                        return false;
        }
        return true;
}

/* The rows of a data frame whose class is exactly "data.frame", from its
 * row.names attribute as stored (c(NA, -n) when automatic); -1 if it has
 * none that jsonlite reads as rows.  *named: character row names, which
 * jsonlite writes as a "_row" field. */
static R_xlen_t data_frame_rows(SEXP v, bool *named) {
        SEXP rn;

        *named = false;
        if (TYPEOF(v) != VECSXP || !class_is(v, "data.frame", NULL))
                return -1;
        rn = attribute(v, R_RowNamesSymbol);
        if (!rn)
                return -1;
        if (TYPEOF(rn) == INTSXP && XLENGTH(rn) == 2 && INTEGER(rn)[0] == NA_INTEGER)
                return INTEGER(rn)[1] == NA_INTEGER ? -1 : llabs((long long)INTEGER(rn)[1]);
        if (TYPEOF(rn) == STRSXP)
                *named = true;
        else if (TYPEOF(rn) != INTSXP)
                return -1;
        return XLENGTH(rn);
}

struct json_scan {
        size_t floor;  /* the JSON has at least this many bytes */
        size_t nodes;  /* elements walked */
        int depth;     /* deepest array or object */
        bool fast;     /* the C encoder covers all of it */
        bool stopped;  /* over the cap, the depth or the walk's own budget */
};

#define JSON_SCAN_NODES_MAX (4u << 20) /* a walk of a value shared with itself (list(l, l)) ends */

static bool scan_add(struct json_scan *s, size_t bytes) {
        s->floor += bytes;
        if (s->floor > VALUE_JSON_MAX || ++s->nodes > JSON_SCAN_NODES_MAX)
                s->stopped = true;
        return !s->stopped;
}

static void json_scan(SEXP v, int depth, struct json_scan *s);

/* A lower bound for one element of a vector jsonlite writes in a form of its
 * own (Date, POSIXct, a matrix, raw as base64...): a byte, unless it is NA
 * (which may be left out); a string of class "json" is written as it is. */
static size_t other_item_floor(SEXP v, R_xlen_t i) {
        switch (TYPEOF(v)) {
        case STRSXP: return STRING_ELT(v, i) == NA_STRING ? 0 : (size_t)LENGTH(STRING_ELT(v, i));
        case LGLSXP: return LOGICAL(v)[i] == NA_LOGICAL ? 0 : 1;
        case INTSXP: return INTEGER(v)[i] == NA_INTEGER ? 0 : 1;
        case REALSXP: return ISNAN(REAL(v)[i]) ? 0 : 1;
        default: return 1;
        }
}

/* A new level of nesting; false (and the walk stopped) past the limit. */
static bool scan_level(struct json_scan *s, int level) {
        s->depth = MAX(s->depth, level);
        if (level > VALUE_JSON_DEPTH_MAX)
                s->stopped = true;
        return !s->stopped;
}

/* The elements of an atomic vector, without brackets; separators: as
 * array items (a data frame's cells have theirs counted with the row). */
static void scan_atomic_items(SEXP v, bool separators, struct json_scan *s) {
        enum atomic_kind kind = atomic_kind(v);
        R_xlen_t n = XLENGTH(v);

        if (kind == ATOMIC_OTHER) {
                s->fast = false;
                /* A matrix or array without a class: jsonlite writes its
                 * elements as those of a plain vector, in nested arrays. */
                if (!OBJECT(v) && TYPEOF(v) != CPLXSXP && TYPEOF(v) != RAWSXP)
                        kind = ATOMIC_PLAIN;
        }
        for (R_xlen_t i = 0; i < n && !s->stopped; i++)
                if (kind == ATOMIC_OTHER)
                        scan_add(s, other_item_floor(v, i));
                else
                        scan_add(s, element_chars(v, i, kind, false) + (separators && i > 0 ? 1 : 0));
}

/* Only the depth, for a list jsonlite writes in a form of its own. */
static void scan_depth(SEXP v, int depth, struct json_scan *s) {
        if (s->stopped || TYPEOF(v) != VECSXP || !scan_level(s, depth + 1))
                return;
        for (R_xlen_t i = 0; i < XLENGTH(v) && !s->stopped; i++) {
                if (++s->nodes > JSON_SCAN_NODES_MAX)
                        s->stopped = true;
                scan_depth(VECTOR_ELT(v, i), depth + 1, s);
        }
}

static void scan_data_frame(SEXP v, R_xlen_t rows, bool named_rows, int depth, struct json_scan *s) {
        SEXP names = attribute(v, R_NamesSymbol);
        R_xlen_t ncol = XLENGTH(v);
        size_t per_row = 2, fast_cols = 0;

        if (!scan_level(s, depth + 2))
                return;
        if (!names_are_keys(names, ncol) || named_rows)
                s->fast = false;
        for (R_xlen_t j = 0; j < ncol; j++) {
                SEXP col = VECTOR_ELT(v, j);

                if (is_atomic_type(TYPEOF(col)) && XLENGTH(col) == rows && atomic_kind(col) != ATOMIC_OTHER) {
                        /* "name":value in every row, null for NA */
                        SEXP ch = names && TYPEOF(names) == STRSXP && j < XLENGTH(names) ? STRING_ELT(names, j)
                                                                                          : NA_STRING;
                        per_row += (ch == NA_STRING ? 0 : (size_t)LENGTH(ch)) + 3 + (fast_cols++ ? 1 : 0);
                } else {
                        s->fast = false;
                }
        }
        if (!scan_add(s, rows > 0 ? 2 + (size_t)(rows - 1) + (size_t)rows * per_row : 2))
                return;
        for (R_xlen_t j = 0; j < ncol && !s->stopped; j++) {
                SEXP col = VECTOR_ELT(v, j);

                if (XLENGTH(col) != rows)
                        continue; /* jsonlite's business */
                if (is_atomic_type(TYPEOF(col)))
                        scan_atomic_items(col, false, s);
                else if (TYPEOF(col) == VECSXP && !OBJECT(col))
                        for (R_xlen_t i = 0; i < rows && !s->stopped; i++)
                                json_scan(VECTOR_ELT(col, i), depth + 2, s);
        }
}

static void json_scan(SEXP v, int depth, struct json_scan *s) {
        bool named_rows;
        R_xlen_t n, rows;

        if (s->stopped)
                return;
        switch (TYPEOF(v)) {
        case NILSXP:
                scan_add(s, 4);
                return;
        case LGLSXP:
        case INTSXP:
        case REALSXP:
        case CPLXSXP:
        case STRSXP:
        case RAWSXP:
                n = XLENGTH(v);
                if ((n != 1 || attribute(v, R_DimSymbol)) && !scan_level(s, depth + 1))
                        return;
                if (n != 1 && !OBJECT(v) && !scan_add(s, 2))
                        return;
                scan_atomic_items(v, true, s);
                return;
        case VECSXP:
                n = XLENGTH(v);
                rows = data_frame_rows(v, &named_rows);
                if (rows >= 0) {
                        scan_data_frame(v, rows, named_rows, depth, s);
                        return;
                }
                if (OBJECT(v) || (ATTRIB(v) != R_NilValue &&
                                  (TAG(ATTRIB(v)) != R_NamesSymbol || CDR(ATTRIB(v)) != R_NilValue))) {
                        /* Classed (POSIXlt, ...) or with attributes
                         * jsonlite reads: its form is jsonlite's own. */
                        s->fast = false;
                        scan_depth(v, depth, s);
                        return;
                }
                if (!scan_level(s, depth + 1))
                        return;
                {
                        SEXP names = attribute(v, R_NamesSymbol);

                        if (names && !names_are_keys(names, n))
                                s->fast = false;
                        if (!scan_add(s, n > 0 ? 2 + (size_t)(n - 1) : 2))
                                return;
                        for (R_xlen_t i = 0; i < n && !s->stopped; i++) {
                                if (names) {
                                        SEXP ch = TYPEOF(names) == STRSXP && i < XLENGTH(names)
                                                          ? STRING_ELT(names, i)
                                                          : NA_STRING;
                                        if (!scan_add(s, (ch == NA_STRING ? 0 : (size_t)LENGTH(ch)) + 3))
                                                return;
                                }
                                json_scan(VECTOR_ELT(v, i), depth + 1, s);
                        }
                }
                return;
        default:
                /* Functions, environments, S4, language: no JSON form of
                 * their own (jsonlite says why, or converts what it can). */
                s->fast = false;
                return;
        }
}

/* The C encoder, for what json_scan() found it covers. */
enum encode_status { ENCODE_OK, ENCODE_TOO_BIG, ENCODE_JSONLITE, ENCODE_NO_MEMORY };

struct json_encode {
        size_t size; /* an over-estimate of the text so far */
        enum encode_status status;
};

static json_t *encode_failed(json_t *j, struct json_encode *e, enum encode_status status) {
        json_decref(j);
        if (e->status == ENCODE_OK)
                e->status = status;
        return NULL;
}

/* One element of a vector of a kind atomic_kind() accepts. */
static json_t *encode_element(SEXP v, R_xlen_t i, enum atomic_kind kind, struct json_encode *e) {
        json_t *j;

        if (kind == ATOMIC_FACTOR) {
                SEXP ch = factor_level(v, i);

                e->size += string_chars(ch, true) + 1;
                j = e->size > VALUE_JSON_MAX ? json_null() : string_json(ch);
        } else {
                j = element_json(v, i, &e->size);
        }
        if (!j)
                return encode_failed(NULL, e, ENCODE_NO_MEMORY);
        if (e->size > VALUE_JSON_MAX)
                return encode_failed(j, e, ENCODE_TOO_BIG);
        return j;
}

static json_t *encode_value(SEXP v, struct json_encode *e);

static json_t *encode_atomic(SEXP v, struct json_encode *e) {
        enum atomic_kind kind = atomic_kind(v);
        R_xlen_t n = XLENGTH(v);
        json_t *arr;

        if (kind == ATOMIC_OTHER)
                return encode_failed(NULL, e, ENCODE_JSONLITE);
        if (n == 1) /* auto_unbox */
                return encode_element(v, 0, kind, e);
        arr = json_array();
        e->size += 2;
        if (!arr)
                return encode_failed(NULL, e, ENCODE_NO_MEMORY);
        for (R_xlen_t i = 0; i < n; i++) {
                json_t *x = encode_element(v, i, kind, e);

                if (!x)
                        return encode_failed(arr, e, ENCODE_NO_MEMORY);
                if (json_array_append_new(arr, x) < 0)
                        return encode_failed(arr, e, ENCODE_NO_MEMORY);
        }
        return arr;
}

/* Add value under key; false if it failed or the key was there already
 * (jsonlite would have made the names unique: its business then). */
static bool encode_member(json_t *obj, SEXP key, json_t *value, struct json_encode *e) {
        size_t before = json_object_size(obj);

        if (!value)
                return false;
        e->size += (size_t)LENGTH(key) + 4;
        if (json_object_set_new_nocheck(obj, CHAR(key), value) < 0) {
                encode_failed(NULL, e, ENCODE_NO_MEMORY);
                return false;
        }
        if (json_object_size(obj) == before) {
                encode_failed(NULL, e, ENCODE_JSONLITE);
                return false;
        }
        if (e->size > VALUE_JSON_MAX) {
                encode_failed(NULL, e, ENCODE_TOO_BIG);
                return false;
        }
        return true;
}

/* dataframe = "rows": [{"col": value, ...}, ...], NA as null. */
static json_t *encode_data_frame(SEXP v, R_xlen_t rows, struct json_encode *e) {
        SEXP names = attribute(v, R_NamesSymbol);
        R_xlen_t ncol = XLENGTH(v);
        json_t *arr = json_array();

        e->size += 2;
        if (!arr)
                return encode_failed(NULL, e, ENCODE_NO_MEMORY);
        for (R_xlen_t i = 0; i < rows; i++) {
                json_t *row = json_object();

                e->size += 3;
                if (!row || json_array_append_new(arr, row) < 0)
                        return encode_failed(arr, e, ENCODE_NO_MEMORY);
                for (R_xlen_t j = 0; j < ncol; j++) {
                        SEXP col = VECTOR_ELT(v, j);

                        if (!encode_member(row, STRING_ELT(names, j), encode_element(col, i, atomic_kind(col), e), e))
                                return encode_failed(arr, e, ENCODE_NO_MEMORY);
                }
        }
        return arr;
}

static json_t *encode_value(SEXP v, struct json_encode *e) {
        SEXP names;
        R_xlen_t rows, n;
        bool named_rows;
        json_t *j;

        if (v == R_NilValue) {
                e->size += 5;
                return json_null();
        }
        if (TYPEOF(v) != VECSXP)
                return encode_atomic(v, e);
        rows = data_frame_rows(v, &named_rows);
        if (rows >= 0)
                return encode_data_frame(v, rows, e);
        n = XLENGTH(v);
        names = attribute(v, R_NamesSymbol);
        j = names ? json_object() : json_array();
        e->size += 2;
        if (!j)
                return encode_failed(NULL, e, ENCODE_NO_MEMORY);
        for (R_xlen_t i = 0; i < n; i++) {
                json_t *x = encode_value(VECTOR_ELT(v, i), e);

                if (!x)
                        return encode_failed(j, e, ENCODE_NO_MEMORY);
                if (names) {
                        if (!encode_member(j, STRING_ELT(names, i), x, e))
                                return encode_failed(j, e, ENCODE_NO_MEMORY);
                } else {
                        e->size++;
                        if (json_array_append_new(j, x) < 0)
                                return encode_failed(j, e, ENCODE_NO_MEMORY);
                }
        }
        return j;
}

static json_t *value_json(SEXP v, char **note) {
        static const char too_big[] = "value JSON over 4 MiB";
        struct json_scan scan = {.fast = true};
        SEXP res;

        *note = NULL;
        if (v == R_NilValue)
                return json_null();
        json_scan(v, 0, &scan);
        if (scan.depth > VALUE_JSON_DEPTH_MAX) {
                if (asprintf(note, "value nested more than %d levels deep: not converted to JSON",
                             VALUE_JSON_DEPTH_MAX) < 0)
                        *note = NULL;
                return json_null();
        }
        if (scan.stopped) {
                *note = strdup(scan.floor > VALUE_JSON_MAX ? "value JSON over 4 MiB: not converted"
                                                           : "value too large to convert to JSON");
                return json_null();
        }
        if (scan.fast) {
                struct json_encode e = {0};
                json_t *j = encode_value(v, &e);

                if (j)
                        return j;
                if (e.status != ENCODE_JSONLITE) {
                        *note = strdup(e.status == ENCODE_TOO_BIG ? too_big : "value JSON failed: out of memory");
                        return json_null();
                }
        }

        W.json_deadline_ns = now_ns() + VALUE_JSON_SECONDS * 1000000000ull;
        res = call_on_value(W.json_call, v);
        W.json_deadline_ns = 0;
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

static int r_int_var(SEXP sym) {
        SEXP x = Rf_findVarInFrame3(W.env, sym, TRUE);

        if (TYPEOF(x) == INTSXP && XLENGTH(x) == 1)
                return INTEGER(x)[0];
        if (TYPEOF(x) == LGLSXP && XLENGTH(x) == 1)
                return LOGICAL(x)[0] == TRUE;
        return 0;
}

/* Did an interrupt (the daemon's: the run's deadline or ctl interrupt) or
 * the CPU limit come during this run?  The flag of worker.R's handler
 * covers the SIGINT R's own Sys.sleep handler took. */
static bool run_stopped(void) {
        return got_sigint || got_sigxcpu || r_int_var(W.sym_interrupted);
}

/* The value's two presentations.  Formatting is part of the run: an
 * interrupt that comes during it ends the run as one during the evaluation
 * would (run_exec checks run_stopped() after this), and the JSON is not
 * made then. */
static void present_cb(void *data) {
        struct run *r = data;
        SEXP v = VECTOR_ELT(W.slots, SLOT_VALUE);

        r->output = format_value(v, &r->output_len);
        if (run_stopped())
                return;
        r->value = value_json(v, &r->value_note);
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

/* kind: the result's error_kind when status is not ok ("syntax", "runtime",
 * "tool", "interrupted": docs/protocol.md). */
static void send_result(struct run *r, const char *status, const char *kind, const char *error, const char *limit,
                        json_t *warnings) {
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
        if (strcmp(status, "ok"))
                json_object_set_new(msg, "error_kind", json_string(kind));
#ifdef WORKER_TIMING
        /* Benchmark aid, off in normal builds (the daemon knows the field
         * and ignores it): the worker's time from the exec frame to here. */
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
        } else if (strstr(text, "C stack usage")) {
                /* R's own check (cstack_update): deep recursion, stopped
                 * with the session's state intact. */
                *limit = "stack";
                if (r->limit[LIMIT_STACK] > 0 &&
                    asprintf(&out, "%s (stack limit: %lld KiB)", text, (long long)(r->limit[LIMIT_STACK] >> 10)) >= 0) {
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

/* The processes a run started end with it (docs/security.md, "The
 * processes of a run"), before its result is sent.  In strict mode the
 * worker is pid 1 of the session's pid namespace: every other process of
 * the session is in it, orphans and grandchildren included (the kernel
 * gives orphans to the namespace's init), and kill(-1) from init signals
 * every process of the namespace but the caller.  Then they are reaped, as
 * init must.  A run that started nothing pays one waitid(), which answers
 * ECHILD at once.  Not pid 1 (none mode: no namespaces), kill(-1) would
 * signal every process of the user: there only the daemon's own look
 * applies.  The daemon does not rely on this: it looks itself. */
static void end_run_processes(void) {
        siginfo_t si;

        if (getpid() != 1)
                return;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
                return;
        kill(-1, SIGKILL);
        for (;;) {
                pid_t p = waitpid(-1, NULL, 0);
                if (p < 0 && errno != EINTR)
                        break; /* ECHILD: none left */
        }
}

static void run_exec(struct run *r) {
        struct parse_job p = {.text = r->code, .len = r->code_len};
        _cleanup_json_ json_t *warnings = NULL;
        _cleanup_free_ char *error = NULL;
        const char *status = "ok", *limit = NULL, *kind = "runtime";
        SEXP exprs;

        got_sigint = got_sigxcpu = got_sigxfsz = 0;
        R_interrupts_pending = 0;
        cstack_update();
        W.seq = r->seq;
        W.console.len = 0;
        W.console.run_bytes = 0;
        W.console.truncated = false;
        W.console.last_send_ns = r->start_ns = now_ns();
        W.tool_id = 0;
        W.in_run = true;
        if (r_int_var(W.sym_interrupted))
                Rf_defineVar(W.sym_interrupted, Rf_ScalarLogical(FALSE), W.env);
        if (r_int_var(W.sym_tool_error))
                Rf_defineVar(W.sym_tool_error, Rf_ScalarLogical(FALSE), W.env);
        if (interrupt_queued(r->seq)) {
                status = "interrupted";
                error = strdup("interrupted");
                goto done;
        }

        if (memchr(r->code, '\0', r->code_len)) {
                status = "error";
                kind = "syntax";
                error = strdup("Syntax error: the code contains a NUL byte");
                goto done;
        }
        if (!R_ToplevelExec(parse_cb, &p)) {
                status = "error";
                kind = "syntax";
                error = strdup("Syntax error: the parser failed (out of memory?)");
                goto done;
        }
        exprs = VECTOR_ELT(W.slots, SLOT_EXPRS);
        if (p.status != PARSE_OK || TYPEOF(exprs) != EXPRSXP) {
                SEXP msg;

                status = "error";
                kind = "syntax";
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
                R_ToplevelExec(present_cb, r);
                capture_reset();
                W.json_deadline_ns = 0;
                /* Interrupted while formatting: the branches below say
                 * how, and the text and JSON made so far are dropped. */
                r->eval_ok = !run_stopped();
        }
        if (r->eval_ok) {
                if (!r->output) {
                        static const char failed[] = "<value could not be printed: formatting failed>";

                        r->output = utf8_clean_dup(failed, sizeof(failed) - 1, OUTPUT_MAX, NULL, &r->output_len);
                }
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
                /* A tool call's error that reached the top (worker.R). */
                if (r_int_var(W.sym_tool_error))
                        kind = "tool";
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
        end_run_processes();
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
        send_result(r, status, !strcmp(status, "interrupted") ? "interrupted" : kind,
                    !strcmp(status, "ok") ? "" : error ? error : "error", limit, warnings);
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

        /* First: this worker's own stack canary, not the zygote's that every
         * worker would otherwise share (sandbox/secrets.h).  Safe because
         * worker_main() never returns and the zygote's frames below it never
         * resume in this child. */
        if (worker_reseed_secrets() < 0)
                _exit(1);

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
