/* A run (worker.h): an exec frame's code parsed, evaluated expression by
 * expression in the global environment, its value formatted (format.c,
 * value_json.c), a failure classified, and its result sent (docs/protocol.md,
 * "result").
 *
 * Formatting is part of the run: an interrupt during it ends the run as one
 * during the evaluation would.  The result's status is "ok", "error" or
 * "interrupted"; when it is not "ok", error_kind says what failed:
 *   syntax       the code did not parse (nothing was evaluated);
 *   tool         the error came from a tool call: worker.R's tool function
 *                raised it, with class securerfs_tool_error (the tool's own
 *                error, or arguments of the wrong type);
 *   interrupted  status "interrupted": the daemon's interrupt (a deadline,
 *                ctl interrupt, a limit of its own);
 *   runtime      any other R error, the worker's limits (cpu, memory, fsize,
 *                stack, nofile, nproc) included.
 * The daemon adds its own kinds (timeout, limit, killed, crashed) to
 * result.json; it believes none of this for anything but the message. */
#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "json_cleanup.h"
#include "macros.h"
#include "options.h"
#include "utf8.h"

/* R_ext/GraphicsDevice.h, which needs the whole graphics engine: the number
 * of open devices + 1 (the null device). */
extern int Rf_NumDevices(void);

struct run {
        long long seq;
        const char *code;
        size_t code_len;
        json_int_t limit[LIMIT_COUNT]; /* from the exec frame, for messages; -1: none */

        bool eval_ok;
        char *output;
        size_t output_len;
        json_t *value;
        char *value_note;
};

static struct {
        bool in_run;
        long long seq;
        /* worker.R's, preserved. */
        SEXP parse_error_call, summary_call, reset_warnings_call, add_handlers_call, graphics_off_call;
        SEXP sym_code, sym_warnings_count, sym_interrupted, sym_tool_error;
} X;

bool run_active(void) {
        return X.in_run;
}

long long run_seq(void) {
        return X.seq;
}

/* withCallingHandlers(warning = , interrupt = , error = ) without its frame:
 * the handlers are dropped when R_ToplevelExec returns. */
static void eval_cb(void *data) {
        SEXP exprs = r_held(R_SLOT_EXPRS);

        Rf_eval(X.add_handlers_call, R_GlobalEnv);
        r_hold(R_SLOT_VALUE, R_NilValue);
        for (R_xlen_t i = 0; i < XLENGTH(exprs); i++)
                r_hold(R_SLOT_VALUE, Rf_eval(VECTOR_ELT(exprs, i), R_GlobalEnv));
}

/* Did an interrupt (the daemon's: the run's deadline or ctl interrupt) or
 * the CPU limit come during this run?  The flag of worker.R's handler
 * covers the SIGINT R's own Sys.sleep handler took. */
static bool run_stopped(void) {
        return signal_seen(SIGINT) || signal_seen(SIGXCPU) || r_flag(X.sym_interrupted);
}

/* The value's two presentations.  Formatting is part of the run: an
 * interrupt that comes during it ends the run as one during the evaluation
 * would (run_exec checks run_stopped() after this), and the JSON is not
 * made then. */
static void present_cb(void *data) {
        struct run *r = data;
        SEXP v = r_held(R_SLOT_VALUE);

        r->output = format_value(v, &r->output_len);
        if (run_stopped())
                return;
        r->value = value_json(v, &r->value_note);
}

/* worker.R's flags of the last run, back to FALSE (under R_ToplevelExec: a
 * binding user code removed would be made again). */
static void clear_flags_cb(void *data) {
        Rf_defineVar(X.sym_interrupted, Rf_ScalarLogical(FALSE), r_env());
        Rf_defineVar(X.sym_tool_error, Rf_ScalarLogical(FALSE), r_env());
}

/* R's own message for code R_ParseVector refused, with its
 * <text>:line:column (worker.R's parse_error). */
struct parse_error_job {
        const struct run *r;
        char *error;
};

static void parse_error_cb(void *data) {
        struct parse_error_job *j = data;
        SEXP code = PROTECT(Rf_ScalarString(Rf_mkCharLenCE(j->r->code, (int)j->r->code_len, CE_UTF8))), msg;

        Rf_defineVar(X.sym_code, code, r_env());
        UNPROTECT(1);
        msg = r_call_on_value(X.parse_error_call, R_NilValue);
        PROTECT(msg ? msg : R_NilValue);
        Rf_defineVar(X.sym_code, R_NilValue, r_env());
        if (msg && TYPEOF(msg) == STRSXP && XLENGTH(msg) == 1) {
                size_t len;

                j->error = charsxp_text(STRING_ELT(msg, 0), ERROR_MAX, "...", &len);
        }
        UNPROTECT(1);
}

/* The run's warnings: the console block R would print at the end of the
 * top-level call, and each message for the result. */
static void warnings_cb(void *data) {
        json_t *arr = data;
        int failed = 0;
        SEXP res = R_tryEval(X.summary_call, r_env(), &failed);

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
        R_tryEval(X.reset_warnings_call, r_env(), &failed);
}

/* Empty when there were none (the common case: no R call). */
static json_t *collect_warnings(void) {
        json_t *arr = json_array();

        if (arr && r_flag(X.sym_warnings_count) != 0)
                R_ToplevelExec(warnings_cb, arr);
        return arr;
}

static void send_result(struct run *r, const char *status, const char *kind, const char *error, const char *limit,
                        json_t *warnings) {
        json_t *msg;
        int e;

        msg = json_pack("{s:s, s:I, s:s, s:s%, s:O, s:s, s:O}", "type", "result", "seq", (json_int_t)r->seq,
                        "status", status, "output", r->output ? r->output : "", r->output ? r->output_len : 0,
                        "value", r->value ? r->value : json_null(), "error", error, "warnings", warnings);
        if (!msg)
                worker_exit(1);
        if (kind)
                json_object_set_new(msg, "error_kind", json_string(kind));
        if (r->value_note)
                json_object_set_new(msg, "value_note", json_string(r->value_note));
        if (limit)
                json_object_set_new(msg, "limit", json_string(limit));
        e = channel_try_send(msg);
        if (e == -EMSGSIZE) {
                /* Escaping can grow the output and value past the frame
                 * limit; say so rather than lose the run. */
                json_object_set_new(msg, "value", json_null());
                json_object_set_new(msg, "value_note", json_string("value JSON too large to send"));
                json_object_set_new(msg, "output", json_string("<output too large to send>"));
                e = channel_try_send(msg);
        }
        json_decref(msg);
        if (e < 0)
                worker_exit(1);
}

/* R's error message, with the limit it names when it comes from one (for
 * "limit" in the result, and words the user can act on). */
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
        } else if (signal_seen(SIGXFSZ)) {
                *limit = "fsize";
                if (r->limit[LIMIT_FSIZE] >= 0 &&
                    asprintf(&out, "%s (file size limit: %lld bytes)", text, (long long)r->limit[LIMIT_FSIZE]) >= 0) {
                        free(text);
                        text = out;
                }
        } else if (strstr(text, "C stack usage")) {
                /* R's own check (cstack.c): deep recursion, stopped with the
                 * session's state intact. */
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
                struct pollfd p = {.fd = channel_fd(), .events = POLLIN};
                int e = channel_next(&m);

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
                channel_fill();
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
        R_tryEval(X.graphics_off_call, R_GlobalEnv, &failed);
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
        _cleanup_json_ json_t *warnings = NULL;
        _cleanup_free_ char *error = NULL;
        const char *status = "ok", *kind = NULL, *limit = NULL;
        ParseStatus parse_status = PARSE_ERROR;
        SEXP exprs;

        signals_clear();
        cstack_update();
        X.seq = r->seq;
        console_run_start(r->seq);
        tool_bridge_run_start();
        X.in_run = true;
        if (r_flag(X.sym_interrupted) || r_flag(X.sym_tool_error))
                R_ToplevelExec(clear_flags_cb, NULL);
        if (interrupt_queued(r->seq)) {
                status = "interrupted";
                kind = "interrupted";
                error = strdup("interrupted");
                goto done;
        }

        if (memchr(r->code, '\0', r->code_len)) {
                status = "error";
                kind = "syntax";
                error = strdup("Syntax error: the code contains a NUL byte");
                goto done;
        }
        exprs = r_parse(r->code, r->code_len, &parse_status);
        /* No expressions: R_ParseVector raised an error instead of
         * returning one (it does for some lexer errors, such as \u and \x
         * escapes mixed in one string).  parse() gives R's own message for
         * both. */
        if (!exprs || parse_status != PARSE_OK || TYPEOF(exprs) != EXPRSXP) {
                struct parse_error_job j = {.r = r};

                status = "error";
                kind = "syntax";
                R_ToplevelExec(parse_error_cb, &j);
                error = j.error ? j.error
                                : strdup(exprs ? "Syntax error" : "Syntax error: the parser failed (out of memory?)");
                goto done;
        }

        r->eval_ok = R_ToplevelExec(eval_cb, r);
        r_hold(R_SLOT_EXPRS, R_NilValue);
        if (r->eval_ok) {
                R_ToplevelExec(present_cb, r);
                capture_reset();
                value_json_deadline_clear();
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
        } else if (signal_seen(SIGXCPU)) {
                status = "error";
                kind = "runtime";
                limit = "cpu";
                if (r->limit[LIMIT_CPU] >= 0) {
                        if (asprintf(&error, "CPU time limit of %lld s reached (run interrupted)",
                                     (long long)r->limit[LIMIT_CPU]) < 0)
                                error = NULL;
                } else {
                        error = strdup("CPU time limit reached (run interrupted)");
                }
        } else if (signal_seen(SIGINT) || r_flag(X.sym_interrupted)) {
                status = "interrupted";
                kind = "interrupted";
                error = strdup("interrupted");
        } else {
                status = "error";
                error = error_text(r, &limit);
                /* worker.R's error handler saw the condition that ended the
                 * run; a limit's error is the worker's, whatever it says. */
                kind = !limit && r_flag(X.sym_tool_error) ? "tool" : "runtime";
        }
        r_hold(R_SLOT_VALUE, R_NilValue);

done:
        signals_restore_sigint();
        close_devices();
        warnings = collect_warnings();
        /* file() turns EMFILE into a warning plus "cannot open the
         * connection". */
        if (!strcmp(status, "error") && !limit) {
                size_t i;
                json_t *w;

                json_array_foreach(warnings, i, w) if (strstr(json_string_value(w), "Too many open files")) {
                        limit = "nofile";
                        if (!strcmp(kind, "tool"))
                                kind = "runtime"; /* a limit's error */
                }
        }
        end_run_processes();
        console_run_end();
        X.in_run = false;
        tool_bridge_run_end();
        if (strcmp(status, "ok")) {
                free(r->output);
                r->output = NULL;
                json_decref(r->value);
                r->value = NULL;
        }
        send_result(r, status, kind, !strcmp(status, "ok") ? "" : error ? error : "error", limit, warnings);
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

void run_warm(void) {
        static const char code[] = "1+1";
        struct run r = {.code = code, .code_len = sizeof(code) - 1};
        ParseStatus status = PARSE_ERROR;
        SEXP exprs;

        cstack_update();
        exprs = r_parse(r.code, r.code_len, &status);
        if (exprs && status == PARSE_OK && TYPEOF(exprs) == EXPRSXP && R_ToplevelExec(eval_cb, &r))
                R_ToplevelExec(present_cb, &r);
        r_hold(R_SLOT_EXPRS, R_NilValue);
        r_hold(R_SLOT_VALUE, R_NilValue);
        capture_reset();
        value_json_deadline_clear();
        free(r.output);
        json_decref(r.value);
        free(r.value_note);
}

int run_serve(json_t *exec) {
        struct run r;

        if (parse_exec(exec, &r) < 0)
                return -EBADMSG;
        run_exec(&r);
        return 0;
}

int run_init(char *err, size_t errlen) {
        SEXP handlers, graphics_off;
        int r;

        X.sym_code = Rf_install(".code");
        X.sym_warnings_count = Rf_install("warnings_count");
        X.sym_interrupted = Rf_install("interrupted");
        X.sym_tool_error = Rf_install("tool_error");
        if ((r = r_call("parse_error", X.sym_code, &X.parse_error_call, err, errlen)) < 0 ||
            (r = r_call("warning_summary", NULL, &X.summary_call, err, errlen)) < 0 ||
            (r = r_call("reset_warnings", NULL, &X.reset_warnings_call, err, errlen)) < 0)
                return r;
        handlers = Rf_findVarInFrame3(r_env(), Rf_install("add_handlers_call"), TRUE);
        if (TYPEOF(handlers) != LANGSXP) {
                snprintf(err, errlen, "worker.R defines no add_handlers_call");
                return -EINVAL;
        }
        X.add_handlers_call = r_preserve(handlers);
        /* grDevices::graphics.off() */
        graphics_off = PROTECT(Rf_lang3(Rf_install("::"), Rf_install("grDevices"), Rf_install("graphics.off")));
        X.graphics_off_call = r_preserve(Rf_lang1(graphics_off));
        UNPROTECT(1);
        return 0;
}
