/* print() within a line budget: the capture behind the value's text
 * (worker.h; worker.R's print_lines()).
 *
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
#include "worker.h"

#include <string.h>

#include "text.h"

#define CAPTURE_BLANK_MAX 4096 /* empty lines past the budget before giving up on them */

static struct {
        bool active;
        bool full;        /* the budget is spent; the restart was invoked */
        struct text kept; /* the kept lines, as R wrote them */
        int line;         /* index of the line being written */
        int max_lines;
        int blank_after;  /* empty lines written past max_lines */
        SEXP output_full_call; /* invokeRestart("securerfs_output_full"), preserved */
} P;

static void capture_full(void) {
        if (P.full)
                return; /* on.exit() code printing while the jump unwinds */
        P.full = true;
        /* Does not return: the restart jumps, and without it (user code
         * calling the capture routines itself) the R error jumps.  We are
         * inside R's printing, under the run's R_ToplevelExec. */
        Rf_eval(P.output_full_call, R_BaseNamespace);
}

/* Append n bytes to the captured text, within OUTPUT_MAX (cut at a
 * character boundary).  NUL bytes are dropped: R strings cannot hold them.
 * Returns false when the bytes did not all fit. */
static bool capture_append(const char *buf, size_t n) {
        bool fits = P.kept.len + n <= OUTPUT_MAX;

        if (!fits) {
                n = OUTPUT_MAX - P.kept.len;
                while (n > 0 && ((unsigned char)buf[n] & 0xc0) == 0x80)
                        n--;
        }
        while (n > 0) {
                const char *nul = memchr(buf, '\0', n);
                size_t part = nul ? (size_t)(nul - buf) : n;

                if (text_append(&P.kept, buf, part) < 0)
                        return false;
                part += nul ? 1 : 0;
                buf += part;
                n -= part;
        }
        return fits;
}

bool capture_active(void) {
        return P.active;
}

void capture_write(const char *buf, size_t n) {
        if (P.full)
                return;
        while (n > 0) {
                const char *nl = memchr(buf, '\n', n);
                size_t text = nl ? (size_t)(nl - buf) : n, step = text + (nl ? 1 : 0);

                if (P.line >= P.max_lines) {
                        /* Past the budget: an empty line is only counted (it
                         * is dropped if nothing follows); text means the
                         * output is cut. */
                        if (text > 0 || ++P.blank_after > CAPTURE_BLANK_MAX) {
                                capture_full();
                                return;
                        }
                } else {
                        if (!capture_append(buf, step)) {
                                capture_full();
                                return;
                        }
                        if (nl)
                                P.line++;
                }
                buf += step;
                n -= step;
        }
}

void capture_reset(void) {
        P.active = false;
        P.full = false;
        text_clear(&P.kept);
}

/* .Call(capture_start_native, max_lines) from print_lines(): divert stdout
 * until capture_stop_native. */
static SEXP capture_start(SEXP max_lines) {
        int max = Rf_asInteger(max_lines);

        if (max == NA_INTEGER || max < 0 || max > OUTPUT_LINES_MAX)
                Rf_error("max_lines must be 0 to %d", OUTPUT_LINES_MAX);
        P.active = true;
        P.full = false;
        text_clear(&P.kept);
        P.line = 0;
        P.blank_after = 0;
        P.max_lines = max;
        return R_NilValue;
}

/* .Call(capture_stop_native): end the diversion; list(lines, truncated) as
 * print_lines() returns it, or NULL when no capture was under way. */
static SEXP capture_stop(void) {
        const char *buf = P.kept.data;
        size_t len = P.kept.len;
        SEXP out, lines;
        int n = 0;

        if (!P.active)
                return R_NilValue;
        P.active = false;
        /* Lines end at "\n"; a last line without one counts too. */
        for (size_t i = 0; i < len; i++)
                if (buf[i] == '\n')
                        n++;
        if (len > 0 && buf[len - 1] != '\n')
                n++;
        out = PROTECT(Rf_allocVector(VECSXP, 2));
        lines = Rf_allocVector(STRSXP, n);
        SET_VECTOR_ELT(out, 0, lines);
        for (size_t i = 0, start = 0, k = 0; i <= len && k < (size_t)n; i++)
                if (i == len || buf[i] == '\n') {
                        SET_STRING_ELT(lines, (R_xlen_t)k++, Rf_mkCharLenCE(buf + start, (int)(i - start), CE_NATIVE));
                        start = i + 1;
                }
        SET_VECTOR_ELT(out, 1, Rf_ScalarLogical(P.full));
        P.full = false;
        text_clear(&P.kept);
        UNPROTECT(1);
        return out;
}

int capture_init(char *err, size_t errlen) {
        SEXP restart = PROTECT(Rf_mkString("securerfs_output_full"));

        P.output_full_call = r_preserve(Rf_lang2(Rf_install("invokeRestart"), restart));
        UNPROTECT(1);
        r_define_native("capture_start_native", (DL_FUNC)(void (*)(void))capture_start);
        r_define_native("capture_stop_native", (DL_FUNC)(void (*)(void))capture_stop);
        return 0;
}
