/* What the files of the worker program (securerfs-worker) share.  The
 * program is the zygote (zygote.c) and, after each clone of it, one worker:
 * embedded R serving the daemon's frames (docs/protocol.md, "Worker
 * channel"; DESIGN sections 2 and 7).  Everything R-specific of securerfs
 * lives in these files; the jail they run in is ../jail.[ch].
 *
 *   zygote.c       serving spawn requests; main()
 *   r_embed.c      R's start-up in the zygote (configured before
 *                  Rf_initEmbeddedR), the console callbacks' registration,
 *                  signals, the R helpers below
 *   console.c      console capture and its frames
 *   capture.c      the line-budgeted capture of print() for the value's text
 *   format.c       the value's text (format_value)
 *   value_json.c   the value's JSON: the walk and the C encoder
 *   json_element.c one element of a vector in JSON: kinds, sizes, strings
 *   cstack.c       R's C stack check
 *   run.c          a run: parse, eval, classify errors, send the result
 *   tool_bridge.c  tool definitions, tool_call_native and the wait for replies
 *   worker_main.c  the worker process after the clone; the daemon's channel
 *   sanitizer.c    what a sanitizer build reserves
 *   worker.R       the R side, evaluated once in the zygote
 *
 * Process context: worker_r_init() and the *_init() functions run in the
 * zygote, on the host, before any user code exists.  Everything else runs
 * in a worker: worker_main() in the child jail_clone() made, first still
 * privileged inside its new namespaces (until the jail drops it all), then
 * as the untrusted worker, single-threaded.
 *
 * Every entry into R from C is under R_ToplevelExec() or R_tryEval(): an R
 * error (or an allocation failure under the memory limit) outside such a
 * context would long-jump into setup_Rmainloop()'s long-gone frame.  R's
 * console callbacks carry no context argument, so each file keeps its state
 * in one static struct of its own. */
#pragma once

#define R_NO_REMAP

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <Rinternals.h>
#include <R_ext/Parse.h>
#include <R_ext/Rdynload.h>

#include "sandbox/jail.h"

/* libR's, not in its public headers outside R_ext/GraphicsDevice.h (which
 * needs the whole graphics engine): set when an interrupt is to be taken at
 * R's next check. */
extern int R_interrupts_pending;

#define WORKER_FD 3 /* the daemon's stream socket in a worker */

/* The value's text (DESIGN section 2): at most this many lines and bytes
 * (plus a marker); worker.R's max_output_lines is the same 50. */
#define OUTPUT_MAX (1u << 20)
#define OUTPUT_LINES_MAX 50
#define ERROR_MAX (64u << 10)        /* a run's error message */
#define WARNING_TEXT_MAX (8u << 10)  /* one warning, or a value_note */

/* ---- zygote.c, worker_main.c: the two processes ---------------------- */

/* Initialise embedded R once, in the zygote: R itself (configured before
 * Rf_initEmbeddedR: no R signal handlers, no C stack check, not
 * interactive, the console callbacks and our own clean-up), jsonlite, and
 * worker.R in its private environment, then each file's R objects.
 * ctl_fd is the zygote's control socket: if R dies on its own during
 * start-up (R_Suicide) the zygote says "fatal MESSAGE" there itself.
 * Returns 0, or -errno with a one-line reason in err. */
int worker_r_init(int ctl_fd, char *err, size_t errlen);

/* Child side, right after jail_clone() returned 0 in the child (o with this
 * spawn's cgroup): make sock the worker's fd 3 and close every other fd,
 * build the jail, answer "ready", attach the workspace, answer "attached"
 * and serve the daemon's frames until end of file.  Never returns. */
__attribute__((noreturn)) void worker_main(int sock, const struct jail_options *o);

/* Remove this worker's temporary directories and _exit(status): 0 the daemon
 * closed the channel, 1 a system call failed, 2 the daemon broke the
 * protocol. */
__attribute__((noreturn)) void worker_exit(int status);

/* Address space the build reserves before any user code (bytes): 0 in a
 * normal build; a sanitizer's shadow memory in an ASan one
 * (sanitizer.c).  Sent in "ready": the daemon adds it to the session's
 * memory limit (RLIMIT_AS). */
long long worker_reserved_address_space(void);

/* ---- worker_main.c: the daemon's channel (fd 3) -------------------------
 * The daemon is trusted: a frame it sends that this program does not expect
 * means the two disagree, and the worker stops (worker_exit(2)). */

/* Send one frame; msg is consumed (NULL: out of memory building it).  A
 * failure to send ends the worker (worker_exit(1)). */
void channel_send(json_t *msg);
/* Send one frame, msg kept: 0 or -errno (-EMSGSIZE: over the frame limit). */
int channel_try_send(const json_t *msg);
/* Write bytes of already encoded frames; a failure ends the worker. */
void channel_write(const char *buf, size_t len);
/* The next frame already read from the daemon: 1 with *msg (the caller's),
 * 0 when more bytes are needed, -errno when the stream is broken. */
int channel_next(json_t **msg);
/* Read what the daemon sent (one read; EINTR is fine); end of file or an
 * error ends the worker. */
void channel_fill(void);
/* The socket, for poll(). */
int channel_fd(void);

/* ---- r_embed.c: R's start-up, signals, helpers ------------------------ */

/* Remove R's temporary directory (R_TempDir) without following links: the
 * zygote's at its end, a worker's at its exit. */
void r_tempdir_remove(void);

/* In a worker, after its jail: the handlers of SIGINT (the daemon's
 * interrupt) and SIGXCPU (the kernel, at the per-run CPU soft limit), which
 * ask R to unwind at its next check, and of SIGXFSZ, which only marks the
 * run (the write fails with EFBIG and R reports it); R_PolledEvents. */
void signals_install(void);
/* At a run's start: forget signals that came before it (a late SIGINT is
 * the previous run's) and any interrupt R still has pending. */
void signals_clear(void);
/* At a run's end: R_SelectEx (Sys.sleep) puts back the SIGINT handler with
 * signal(), which adds SA_RESTART, or leaves its own if it unwound early. */
void signals_restore_sigint(void);
/* Did SIGINT, SIGXCPU or SIGXFSZ come during this run? */
bool signal_seen(int sig);
/* The daemon's interrupt frame for this run arrived (its SIGINT follows or
 * came): behave as if the SIGINT had been taken, so that R unwinds even if
 * the signal was missed. */
void signal_interrupt_now(void);

/* The R objects the files keep.  worker.R's private environment, whose
 * parent is the base namespace. */
SEXP r_env(void);
/* Keep x alive for the process's life (R_PreserveObject), x protected
 * meanwhile.  Returns x. */
SEXP r_preserve(SEXP x);
/* A preserved call of worker.R's function name, with one argument (a
 * symbol bound in r_env()) or none.  0, or -EINVAL with a reason. */
int r_call(const char *name, SEXP arg, SEXP *out, char *err, size_t errlen);
/* Bind the C routine fn to name in r_env(), for .Call(name, ...) in
 * worker.R (.Call() takes an external pointer tagged "native symbol" as the
 * routine itself: no DLL registration needed). */
void r_define_native(const char *name, DL_FUNC fn);
/* Evaluate call (of a worker.R function on .value) with .value bound to
 * value in r_env(), under R_tryEval.  NULL if it failed (an error, an
 * interrupt, a memory error); the result is unprotected. */
SEXP r_call_on_value(SEXP call, SEXP value);
/* A logical or integer flag worker.R keeps in r_env() (0 when unset). */
int r_flag(SEXP sym);

/* The run's R objects, kept alive between R calls: its parse and its
 * value. */
enum r_slot { R_SLOT_EXPRS, R_SLOT_VALUE, R_SLOTS };
SEXP r_held(enum r_slot slot);
void r_hold(enum r_slot slot, SEXP x);
/* Parse text[0..len) (UTF-8) under R_ToplevelExec, the result held in
 * R_SLOT_EXPRS.  Returns it (an EXPRSXP when *status is PARSE_OK), or NULL
 * when the parser itself failed (out of memory). */
SEXP r_parse(const char *text, size_t len, ParseStatus *status);

/* ---- console.c: console output and its frames ------------------------- */

/* R's console callbacks (registered by worker_r_init). */
void console_write(const char *buf, int len, int otype);
int console_read(const char *prompt, unsigned char *buf, int len, int add_history);
void console_show_message(const char *msg);
void console_nothing(void);

/* A run starts: its console output is kept (at most 16 MiB, then a marker)
 * and sent as "console" frames of seq, from now on. */
void console_run_start(long long seq);
/* Send what is pending, if anything (before a tool_call, so that what the
 * code printed first comes first). */
void console_flush(void);
/* From R_PolledEvents: send a pending partial line once 10 ms passed. */
void console_flush_due(void);
/* The run ends: send everything pending (a character cut short by the end
 * of the output included); output is then dropped until the next run. */
void console_run_end(void);

/* ---- capture.c: print() within a line budget -------------------------- */

/* In the zygote: worker.R's capture_start_native and capture_stop_native,
 * and the restart call that stops the printing.  0 or -errno. */
int capture_init(char *err, size_t errlen);
/* Is a capture under way (stdout is then diverted to capture_write)? */
bool capture_active(void);
/* What R wrote to stdout while capturing; invokes the restart that stops
 * the printing once the budget is spent (so it may not return). */
void capture_write(const char *buf, size_t n);
/* Drop a capture an interrupt left under way. */
void capture_reset(void);

/* ---- format.c: the value's text --------------------------------------- */

int format_init(char *err, size_t errlen);
/* The text for output (DESIGN section 2), malloc'ed clean UTF-8 of at most
 * OUTPUT_MAX bytes plus a marker, or NULL when formatting failed or was
 * interrupted (the caller tells which).  v is held by the caller. */
char *format_value(SEXP v, size_t *len);
/* Text of a CHARSXP as clean UTF-8, at most max bytes (plus marker);
 * malloc'ed, NULL when out of memory.  May allocate R memory (a latin1
 * string is translated), so ch must be protected. */
char *charsxp_text(SEXP ch, size_t max, const char *marker, size_t *len);
/* LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, RAWSXP. */
bool is_atomic_type(int type);

/* ---- value_json.c: the value's JSON ----------------------------------- */

int value_json_init(char *err, size_t errlen);
/* value.json for v (jsonlite's conventions, at most 4 MiB and 200 levels),
 * or JSON null with *note saying why (malloc'ed; NULL when there is
 * nothing to say).  NULL only when out of memory. */
json_t *value_json(SEXP v, char **note);
/* From R_PolledEvents: raise an R error once jsonlite has had its 2 s. */
void value_json_check_deadline(void);
/* The run is over: no jsonlite deadline is pending any more. */
void value_json_deadline_clear(void);

/* ---- json_element.c: one element of a vector in JSON ------------------
 * None of these calls R or allocates R memory, but string_json() (a latin1
 * string is translated: the caller protects it). */

#define VALUE_JSON_MAX (4u << 20) /* value.json's cap */

/* An unclassed logical, integer, double or character vector whose only
 * attribute is names (jsonlite drops those): its JSON needs no R call. */
bool value_json_plain(SEXP v);
/* JSON of element i of such a vector, as toJSON(auto_unbox = TRUE, na =
 * "null", digits = NA) writes it: NA and the non-finite doubles null, whole
 * doubles without a fraction (2, not 2.0).  Adds an over-estimate of its
 * text and a separator to *size.  NULL when out of memory. */
json_t *value_json_element(SEXP v, R_xlen_t i, size_t *size);

/* The kinds of atomic vector the C encoder writes: plain (above), a factor
 * or ordered factor (each element written as its level), and the rest, which
 * jsonlite writes in a form of its own (Date, a matrix, raw as base64...). */
enum atomic_kind { ATOMIC_OTHER, ATOMIC_PLAIN, ATOMIC_FACTOR };
enum atomic_kind atomic_kind(SEXP v);
/* v's attribute name, or NULL. */
SEXP attribute_of(SEXP v, SEXP name);
/* Element i of a factor as its level; NA_STRING for NA (or out of range). */
SEXP factor_level(SEXP v, R_xlen_t i);
/* Text sizes as jansson writes them (JSON_REAL_PRECISION(15), as
 * common/frame.c sends it) of a string, and of element i of a vector of
 * kind: with exact, the size or an over-estimate of it; otherwise a lower
 * bound, cheap to compute. */
size_t string_chars(SEXP ch, bool exact);
size_t element_chars(SEXP v, R_xlen_t i, enum atomic_kind kind, bool exact);
/* A CHARSXP as a JSON string (null for NA), bad bytes as U+FFFD; NULL when
 * out of memory. */
json_t *string_json(SEXP ch);
/* Can names (of n elements) be JSON keys as they are: all present,
 * non-empty, valid UTF-8?  (Uniqueness is checked as the object is built.)
 * jsonlite makes up keys for the others ("1", "a.1"): those values go to
 * jsonlite. */
bool names_are_keys(SEXP names, R_xlen_t n);
/* The rows of a data frame whose class is exactly "data.frame", from its
 * row.names attribute as stored (c(NA, -n) when automatic); -1 if it has
 * none that jsonlite reads as rows.  *named: character row names, which
 * jsonlite writes as a "_row" field. */
R_xlen_t data_frame_rows(SEXP v, bool *named);

/* ---- cstack.c: R's C stack check -------------------------------------- */

/* In the zygote, once R is up: note the main stack's mapping, which every
 * worker (a copy-on-write clone) shares. */
void cstack_note(void);
/* At a run's start: R's stack limit from the RLIMIT_STACK and RLIMIT_AS the
 * daemon set on this worker. */
void cstack_update(void);

/* ---- run.c: a run ----------------------------------------------------- */

int run_init(char *err, size_t errlen);
/* Serve one "exec" frame: run its code and send its console and result
 * frames.  -EBADMSG when the frame is not a well-formed exec (the daemon
 * and this program disagree). */
int run_serve(json_t *exec);
/* A pooled worker's "warm" (docs/protocol.md): 1+1 parsed, evaluated and
 * presented as a run would, nothing sent, nothing kept; before the
 * workspace, so before any user code.  Its point is the pages a first run
 * writes: copied from the zygote's here, not on a session's first result. */
void run_warm(void);
/* Is a run under way (between its exec frame and its result)? */
bool run_active(void);
/* The seq of the run under way. */
long long run_seq(void);

/* ---- tool_bridge.c: tools (docs/tools.md) ----------------------------- */

int tool_bridge_init(char *err, size_t errlen);
/* A define_tool or remove_tool frame, between runs.  -EBADMSG when it is
 * not well-formed; an R failure (out of memory) only loses the
 * definition. */
int tool_bridge_define(json_t *msg);

/* ---- state.c: the session's state as a stream (docs/protocol.md) -------- */

/* A new descriptor (O_CLOEXEC) of the session's workspace as it was
 * attached, whatever the working directory is now; -ESTALE when the
 * worker's own descriptor of it is gone or is another directory. */
int worker_workspace(void);

int state_init(char *err, size_t errlen);
/* snapshot: write this session's state (the R global environment's
 * bindings, the attached packages, /work's files) into fd, close it and
 * answer snapshot_done with what could not be carried. */
void state_snapshot(int fd);
/* restore: read a state from fd into this session (R reads it all, /work's
 * files are staged and swapped in, then the global environment is
 * replaced; a failure before the swap changes nothing), close it and
 * answer restored.  check: unserialize it in a child process first (a state
 * from a file, which could be made to crash R). */
void state_restore(int fd, bool check);
/* A run starts (tool_call ids start again at 1) or ends (the last reply is
 * not kept). */
void tool_bridge_run_start(void);
void tool_bridge_run_end(void);
