/* The value's text, for `output` (DESIGN section 2; worker.h).
 *
 * The common case is kept in C: as.character of a length-one unclassed
 * atomic takes a few microseconds and calls no R closure.  Everything else
 * goes through worker.R's format_value(), which prints within a line budget
 * (capture.c). */
#include "worker.h"

#include <string.h>

#include "utf8.h"

static const char output_truncated_marker[] = "\n... (output truncated)";

static struct {
        SEXP format_call; /* format_value(.value), preserved */
} F;

bool is_atomic_type(int type) {
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

char *charsxp_text(SEXP ch, size_t max, const char *marker, size_t *len) {
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

char *format_value(SEXP v, size_t *len) {
        SEXP res;
        char *out;

        if (v == R_NilValue)
                return utf8_clean_dup("NULL", 4, OUTPUT_MAX, NULL, len);
        /* as.character() of a length-one atomic without a class is
         * coerceVector(): the same 15 significant digits. */
        if (!OBJECT(v) && is_atomic_type(TYPEOF(v)) && XLENGTH(v) == 1) {
                SEXP s = PROTECT(TYPEOF(v) == STRSXP ? v : Rf_coerceVector(v, STRSXP));
                SEXP ch = STRING_ELT(s, 0);

                out = ch == NA_STRING ? utf8_clean_dup("NA", 2, OUTPUT_MAX, NULL, len)
                                      : charsxp_text(ch, OUTPUT_MAX, output_truncated_marker, len);
                UNPROTECT(1);
                return out;
        }
        res = r_call_on_value(F.format_call, v);
        capture_reset(); /* if an interrupt left print_lines() early */
        if (!res || TYPEOF(res) != STRSXP || XLENGTH(res) != 1 || STRING_ELT(res, 0) == NA_STRING)
                return NULL;
        PROTECT(res);
        out = charsxp_text(STRING_ELT(res, 0), OUTPUT_MAX, output_truncated_marker, len);
        UNPROTECT(1);
        return out;
}

int format_init(char *err, size_t errlen) {
        return r_call("format_value", Rf_install(".value"), &F.format_call, err, errlen);
}
