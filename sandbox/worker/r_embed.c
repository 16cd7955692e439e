/* R's start-up in the zygote, the console callbacks' registration, signals,
 * and the small R helpers the other files share (worker.h).
 *
 * R is initialised once, in the zygote (worker_r_init); each worker is a
 * copy-on-write clone of that process.  Configured before Rf_initEmbeddedR
 * as an embedding must be (littler's src/littler.c shows the shape): no R
 * signal handlers, no C stack check while it starts, not interactive,
 * console output through our callbacks, our own clean-up and suicide
 * hooks. */
#define R_INTERFACE_PTRS 1
#define CSTACK_DEFNS 1
#define HAVE_UINTPTR_T 1

#include "worker.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <Rembedded.h>
#include <Rinterface.h>
#include <R_ext/RStartup.h>
#include <R_ext/eventloop.h>

#include "config.h"
#include "macros.h"
#include "worker_r.h"

#define POLL_WAIT_USEC 20000 /* Sys.sleep wakes this often to flush the console */

static struct {
        int zygote_ctl; /* the zygote's control socket while R starts, else -1 */
        /* Kept alive with R_PreserveObject. */
        SEXP env;   /* worker.R's private environment */
        SEXP slots; /* VECSXP holding the run's parse and value */
        SEXP sym_value;
} R = {.zygote_ctl = -1};

static volatile sig_atomic_t got_sigint, got_sigxcpu, got_sigxfsz;

/* ---- R's hooks ----------------------------------------------------------- */

/* R's fatal error: R is unusable.  During start-up the zygote reports it on
 * its control socket; a worker just dies and the daemon reports a crash. */
static void r_suicide(const char *msg) {
        if (R.zygote_ctl >= 0) {
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
                        (void)!send(R.zygote_ctl, line, (size_t)n, MSG_NOSIGNAL);
                _exit(1);
        }
        _exit(2);
}

/* q() and quit() land here.  A session ends only through the daemon (rmdir,
 * ctl restart), so during a run they are an ordinary R error. */
static void r_clean_up(SA_TYPE saveact, int status, int run_last) {
        if (run_active() && saveact != SA_SUICIDE)
                Rf_error("quit() does not end a securerfs session; "
                         "write \"restart\" to its ctl file for a fresh one");
        _exit(status);
}

/* R calls this from R_CheckUserInterrupt(), so an error raised here is
 * raised where an interrupt would be: how setTimeLimit() works, without
 * touching the limits the user's code may have set. */
static void polled_events(void) {
        value_json_check_deadline();
        console_flush_due();
}

/* ---- Signals -------------------------------------------------------------
 * SIGINT and SIGXCPU ask R to unwind at its next check; R_SelectEx
 * (Sys.sleep) installs its own SIGINT handler for the wait and wakes at
 * once.  No SA_RESTART: a blocking call in user code returns EINTR and R
 * gets to check. */

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

void signals_install(void) {
        set_handler(SIGINT, on_sigint);
        set_handler(SIGXCPU, on_sigxcpu);
        set_handler(SIGXFSZ, on_sigxfsz);
        R_PolledEvents = polled_events;
        R_wait_usec = POLL_WAIT_USEC;
}

void signals_clear(void) {
        got_sigint = got_sigxcpu = got_sigxfsz = 0;
        R_interrupts_pending = 0;
}

void signals_restore_sigint(void) {
        set_handler(SIGINT, on_sigint);
}

bool signal_seen(int sig) {
        switch (sig) {
        case SIGINT: return got_sigint;
        case SIGXCPU: return got_sigxcpu;
        case SIGXFSZ: return got_sigxfsz;
        default: return false;
        }
}

void signal_interrupt_now(void) {
        got_sigint = 1;
        R_interrupts_pending = 1;
}

/* ---- R helpers -------------------------------------------------------------- */

SEXP r_env(void) {
        return R.env;
}

SEXP r_preserve(SEXP x) {
        PROTECT(x);
        R_PreserveObject(x);
        UNPROTECT(1);
        return x;
}

int r_call(const char *name, SEXP arg, SEXP *out, char *err, size_t errlen) {
        SEXP fn = Rf_findVarInFrame3(R.env, Rf_install(name), TRUE);

        if (TYPEOF(fn) != CLOSXP) {
                snprintf(err, errlen, "worker.R defines no function %s", name);
                return -EINVAL;
        }
        *out = r_preserve(arg ? Rf_lang2(fn, arg) : Rf_lang1(fn));
        return 0;
}

void r_define_native(const char *name, DL_FUNC fn) {
        SEXP ptr = PROTECT(R_MakeExternalPtrFn(fn, Rf_install("native symbol"), R_NilValue));

        Rf_defineVar(Rf_install(name), ptr, R.env);
        UNPROTECT(1);
}

SEXP r_call_on_value(SEXP call, SEXP value) {
        int failed = 0;
        SEXP res;

        Rf_defineVar(R.sym_value, value, R.env);
        res = R_tryEval(call, R.env, &failed);
        Rf_defineVar(R.sym_value, R_NilValue, R.env);
        return failed ? NULL : res;
}

int r_flag(SEXP sym) {
        SEXP x = Rf_findVarInFrame3(R.env, sym, TRUE);

        if (TYPEOF(x) == INTSXP && XLENGTH(x) == 1)
                return INTEGER(x)[0];
        if (TYPEOF(x) == LGLSXP && XLENGTH(x) == 1)
                return LOGICAL(x)[0] == TRUE;
        return 0;
}

SEXP r_held(enum r_slot slot) {
        return VECTOR_ELT(R.slots, slot);
}

void r_hold(enum r_slot slot, SEXP x) {
        SET_VECTOR_ELT(R.slots, slot, x);
}

struct parse_job {
        const char *text;
        size_t len;
        SEXP out; /* held in R_SLOT_EXPRS */
        ParseStatus status;
};

static void parse_cb(void *data) {
        struct parse_job *p = data;
        SEXP text = PROTECT(Rf_allocVector(STRSXP, 1));

        SET_STRING_ELT(text, 0, Rf_mkCharLenCE(p->text, (int)p->len, CE_UTF8));
        p->out = R_ParseVector(text, -1, &p->status, R_NilValue);
        r_hold(R_SLOT_EXPRS, p->out);
        UNPROTECT(1);
}

SEXP r_parse(const char *text, size_t len, ParseStatus *status) {
        struct parse_job p = {.text = text, .len = len, .status = PARSE_ERROR};

        if (!R_ToplevelExec(parse_cb, &p))
                return NULL;
        *status = p.status;
        return p.out;
}

/* FTW_PHYS: a symlink the code planted is removed, never followed. */
static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void)(type == FTW_DP ? rmdir(path) : unlink(path));
        return 0;
}

void r_tempdir_remove(void) {
        if (R_TempDir && *R_TempDir)
                nftw(R_TempDir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
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

static void set_error(char *err, size_t errlen, const char *what) {
        const char *msg = R_curErrorBuf();
        size_t n = strlen(msg);

        while (n > 0 && msg[n - 1] == '\n')
                n--;
        snprintf(err, errlen, "%s: %.*s", what, (int)n, msg);
}

/* Evaluate R source text in env, expression by expression. */
static int eval_text(const char *src, SEXP env, const char *what, char *err, size_t errlen) {
        ParseStatus status;
        SEXP exprs = r_parse(src, strlen(src), &status);

        if (!exprs || status != PARSE_OK) {
                snprintf(err, errlen, "%s: does not parse", what);
                return -EINVAL;
        }
        PROTECT(exprs);
        r_hold(R_SLOT_EXPRS, R_NilValue);
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

struct init_job {
        char *err;
        size_t errlen;
        int r;
};

/* After setup_Rmainloop(): worker.R and each file's R objects, under
 * R_ToplevelExec (an allocation failure here must not jump into
 * setup_Rmainloop's frame). */
static void init_cb(void *data) {
        /* Set here, not in worker.R, so that tests sourcing worker.R keep
         * R's defaults.  The error text goes into the result, not the
         * console; "Calls:" lines would only repeat the traceback. */
        static const char session_setup[] =
                "options(show.error.messages = FALSE, showErrorCalls = FALSE, keep.source = FALSE)\n"
                "loadNamespace('jsonlite')\n"
                /* Plots go to the workspace as PNG (cairo: there is no X
                 * server): plot() without a device writes Rplot001.png, ...
                 * in /work.  Every device is closed at the end of the run
                 * (run.c, close_devices), which writes the files. */
                "options(bitmapType = 'cairo', device = function(...) grDevices::png('Rplot%03d.png', ...))\n";
        struct init_job *j = data;

        R.slots = r_preserve(Rf_allocVector(VECSXP, R_SLOTS));
        R.sym_value = Rf_install(".value");
        /* worker.R's own environment: its parent is the base namespace, so
         * base comes before anything user code defines globally. */
        R.env = r_preserve(R_NewEnv(R_BaseNamespace, TRUE, 64));
        if ((j->r = eval_text(session_setup, R.env, "R session set-up", j->err, j->errlen)) < 0 ||
            (j->r = eval_text(worker_r_source, R.env, "worker.R", j->err, j->errlen)) < 0)
                return;
        if ((j->r = capture_init(j->err, j->errlen)) < 0 || (j->r = format_init(j->err, j->errlen)) < 0 ||
            (j->r = value_json_init(j->err, j->errlen)) < 0 || (j->r = run_init(j->err, j->errlen)) < 0 ||
            (j->r = tool_bridge_init(j->err, j->errlen)) < 0 ||
            (j->r = state_init(j->err, j->errlen)) < 0)
                return;
}

int worker_r_init(int ctl_fd, char *err, size_t errlen) {
        static char arg0[] = "R", arg1[] = "--vanilla", arg2[] = "--silent", arg3[] = "--no-echo",
                    arg4[] = "--no-readline";
        char *argv[] = {arg0, arg1, arg2, arg3, arg4, NULL};
        struct init_job j = {err, errlen, 0};

        R.zygote_ctl = ctl_fd;
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
        ptr_R_ShowMessage = console_show_message;
        ptr_R_ResetConsole = console_nothing;
        ptr_R_FlushConsole = console_nothing;
        ptr_R_ClearerrConsole = console_nothing;
        ptr_R_Suicide = r_suicide;
        ptr_R_CleanUp = r_clean_up;
        setup_Rmainloop();
        cstack_note();

        if (!R_ToplevelExec(init_cb, &j)) {
                snprintf(err, errlen, "R: the worker's set-up failed (out of memory?)");
                return -ENOMEM;
        }
        if (j.r < 0)
                return j.r;
        R.zygote_ctl = -1;
        return 0;
}
