/* Tools in the worker (docs/tools.md; worker.h).
 *
 * The daemon defines tools between runs (define_tool, remove_tool: worker.R
 * builds the R functions); during a run a tool's R function calls
 * tool_call_native, which sends a tool_call frame and blocks on the socket
 * for its tool_result.  A SIGINT (the run's deadline, ctl interrupt) ends
 * the wait as an R interrupt; the reply, if it still comes, is dropped (its
 * id is not the one waited for, or it arrives between runs).  Nothing here
 * is trusted by the daemon, which checks every call again. */
#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "json_cleanup.h"
#include "macros.h"
#include "utf8.h"

#define TOOL_ARGS_MAX (1u << 20)

static struct {
        SEXP define_tool_fn, remove_tool_fn; /* worker.R's, preserved */
        json_int_t id;   /* last tool_call id of this run */
        json_t *reply;   /* the last tool_result, until the next call */
} T;

void tool_bridge_run_start(void) {
        T.id = 0;
}

void tool_bridge_run_end(void) {
        /* The last tool reply (up to a frame's size) is not kept between
         * runs. */
        json_decref(T.reply);
        T.reply = NULL;
}

/* ---- definitions ---------------------------------------------------------- */

/* Under R_ToplevelExec: an R failure (out of memory) only loses the
 * definition. */
static void definition_cb(void *data) {
        json_t *msg = data, *args = json_object_get(msg, "args"), *v;
        const char *name = json_string_value(json_object_get(msg, "name")), *key;
        SEXP call, argnames, argtypes, rname, rdesc;
        int failed = 0;
        R_xlen_t i = 0;

        if (strcmp(frame_type(msg), "define_tool")) {
                rname = PROTECT(Rf_mkString(name));
                call = PROTECT(Rf_lang2(T.remove_tool_fn, rname));
                R_tryEval(call, r_env(), &failed);
                UNPROTECT(2);
                return;
        }
        argnames = PROTECT(Rf_allocVector(STRSXP, (R_xlen_t)json_object_size(args)));
        argtypes = PROTECT(Rf_allocVector(STRSXP, (R_xlen_t)json_object_size(args)));
        json_object_foreach(args, key, v) {
                SET_STRING_ELT(argnames, i, Rf_mkCharCE(key, CE_UTF8));
                SET_STRING_ELT(argtypes, i, Rf_mkCharCE(json_string_value(v), CE_UTF8));
                i++;
        }
        /* Each allocation protected before the next: the order in which C
         * evaluates a call's arguments is unspecified. */
        rname = PROTECT(Rf_mkString(name));
        rdesc = PROTECT(Rf_ScalarString(Rf_mkCharCE(json_string_value(json_object_get(msg, "description")), CE_UTF8)));
        call = PROTECT(Rf_lang5(T.define_tool_fn, rname, argnames, argtypes, rdesc));
        R_tryEval(call, r_env(), &failed);
        UNPROTECT(5);
}

/* define_tool {name, args: {name: type}, description} and remove_tool
 * {name}: checked whole before any R call. */
int tool_bridge_define(json_t *msg) {
        const char *name = json_string_value(json_object_get(msg, "name")), *key;
        bool define = !strcmp(frame_type(msg), "define_tool");
        json_t *args = json_object_get(msg, "args"), *v;

        if (!name || (define && (!json_is_object(args) || !json_is_string(json_object_get(msg, "description")))))
                return -EBADMSG;
        if (define)
                json_object_foreach(args, key, v) if (!json_is_string(v)) return -EBADMSG;
        R_ToplevelExec(definition_cb, msg);
        return 0;
}

/* ---- calls ---------------------------------------------------------------- */

/* Wait for the tool_result of id.  Returns it (owned by T.reply).
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
                struct pollfd p = {.fd = channel_fd(), .events = POLLIN};
                int e = channel_next(&m), r;

                if (e < 0)
                        worker_exit(2);
                if (e == 1) {
                        json_t *jid = json_object_get(m, "id");
                        if (!strcmp(frame_type(m), "interrupt")) {
                                json_t *jseq = json_object_get(m, "seq");
                                /* Its SIGINT follows (or came): make sure R
                                 * unwinds even if the signal was missed. */
                                if (json_is_integer(jseq) && json_integer_value(jseq) == run_seq()) {
                                        signal_interrupt_now();
                                        checked = false;
                                }
                                json_decref(m);
                                continue;
                        }
                        if (strcmp(frame_type(m), "tool_result"))
                                worker_exit(2); /* nothing else comes during a call */
                        if (json_is_integer(jid) && json_integer_value(jid) == id) {
                                T.reply = m;
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
                channel_fill();
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
                } else if (!value_json_plain(v)) {
                        goto slow;
                } else if (XLENGTH(v) == 1) {
                        j = value_json_element(v, 0, &size);
                } else {
                        j = json_array();
                        for (R_xlen_t k = 0; j && k < XLENGTH(v); k++) {
                                json_t *x = value_json_element(v, k, &size);
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

/* JSON text (malloc'ed) as a length-one character vector; R_ExecWithCleanup
 * frees the text whether or not R long-jumps out of the allocation. */
static SEXP json_text_string(void *text) {
        return Rf_ScalarString(Rf_mkCharLenCE(text, (int)strlen(text), CE_UTF8));
}

/* .Call(tool_call_native, name, args) from worker.R's tool functions (and
 * from any user code: the daemon checks every call).  args is a named list
 * or one JSON object as text.  Returns NULL when the list needs jsonlite
 * (the R side encodes it and calls again); else list(kind, payload): kind
 * 0, the value; 1, JSON text for fromJSON(); 2, the tool's error message
 * (worker.R raises it as a condition of class securerfs_tool_error). */
static SEXP tool_call_native(SEXP name, SEXP args) {
        _cleanup_json_ json_t *msg = NULL;
        _cleanup_free_ char *buf = NULL;
        json_t *jargs, *reply, *v;
        json_int_t id;
        size_t len;
        SEXP out, payload;
        int kind, e;

        if (!run_active() || channel_fd() < 0)
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
        id = ++T.id;
        msg = json_pack("{s:s, s:I, s:I, s:s, s:o}", "type", "tool_call", "seq", (json_int_t)run_seq(), "id", id,
                        "tool", CHAR(STRING_ELT(name, 0)), "args", jargs);
        if (!msg)
                Rf_error("out of memory");
        e = frame_encode(msg, &buf, &len);
        /* Rf_error() jumps past the clean-up: free first. */
        json_decref(TAKE_PTR(msg));
        if (e < 0 || len > TOOL_ARGS_MAX + 4096) {
                free(TAKE_PTR(buf));
                Rf_error(e == -ENOMEM ? "out of memory" : "the tool call's arguments are over 1 MiB");
        }
        /* The daemon's bound on what its loop parses (common/frame.h): a
         * call over it would be taken for a hostile worker's. */
        if (frame_json_values(buf + FRAME_HEADER_BYTES, len - FRAME_HEADER_BYTES) > FRAME_TOOL_CALL_VALUES_MAX) {
                free(TAKE_PTR(buf));
                Rf_error("the tool call's arguments have over %u JSON values", FRAME_TOOL_CALL_VALUES_MAX);
        }
        /* What the code printed before the call comes first. */
        console_flush();
        json_decref(T.reply);
        T.reply = NULL;
        channel_write(buf, len);
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
                        payload = PROTECT(R_ExecWithCleanup(json_text_string, text, free, text));
                }
        }
        out = PROTECT(Rf_allocVector(VECSXP, 2));
        SET_VECTOR_ELT(out, 0, Rf_ScalarInteger(kind));
        SET_VECTOR_ELT(out, 1, payload);
        UNPROTECT(2);
        return out;
}

/* In the zygote: worker.R's tool functions and the native entry point. */
int tool_bridge_init(char *err, size_t errlen) {
        SEXP define_fn = Rf_findVarInFrame3(r_env(), Rf_install("define_tool"), TRUE);
        SEXP remove_fn = Rf_findVarInFrame3(r_env(), Rf_install("remove_tool"), TRUE);

        if (TYPEOF(define_fn) != CLOSXP || TYPEOF(remove_fn) != CLOSXP) {
                snprintf(err, errlen, "worker.R defines no define_tool or remove_tool");
                return -EINVAL;
        }
        T.define_tool_fn = r_preserve(define_fn);
        T.remove_tool_fn = r_preserve(remove_fn);
        r_define_native("tool_call_native", (DL_FUNC)(void (*)(void))tool_call_native);
        return 0;
}
