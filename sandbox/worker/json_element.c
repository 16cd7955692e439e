/* One element of a vector in JSON, by jsonlite's conventions: the kinds of
 * vector the C encoder writes, the size each element takes as text, its
 * encoding, and the facts about names and data frames the walk and the
 * encoder of value_json.c rest on (worker.h).  Also the tool bridge's fast
 * path for arguments. */
#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_cleanup.h"
#include "macros.h"
#include "utf8.h"

/* Text sizes (worker.h, string_chars). */
static size_t integer_chars(long long x) {
        unsigned long long u = x < 0 ? -(unsigned long long)x : (unsigned long long)x;
        size_t n = x < 0 ? 2 : 1;

        while (u >= 10) {
                u /= 10;
                n++;
        }
        return n;
}

size_t string_chars(SEXP ch, bool exact) {
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

SEXP attribute_of(SEXP v, SEXP name) {
        for (SEXP a = ATTRIB(v); a != R_NilValue; a = CDR(a))
                if (TAG(a) == name)
                        return CAR(a);
        return NULL;
}

static bool class_is(SEXP v, const char *a, const char *b) {
        SEXP cls = attribute_of(v, R_ClassSymbol);

        if (!cls || TYPEOF(cls) != STRSXP || XLENGTH(cls) != (b ? 2 : 1))
                return false;
        return !strcmp(CHAR(STRING_ELT(cls, 0)), a) && (!b || !strcmp(CHAR(STRING_ELT(cls, 1)), b));
}

bool value_json_plain(SEXP v) {
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

enum atomic_kind atomic_kind(SEXP v) {
        SEXP levels;

        if (value_json_plain(v))
                return ATOMIC_PLAIN;
        /* factor or ordered, with levels, class and perhaps names: jsonlite
         * writes each element as its level. */
        if (TYPEOF(v) != INTSXP || !(class_is(v, "factor", NULL) || class_is(v, "ordered", "factor")))
                return ATOMIC_OTHER;
        levels = attribute_of(v, R_LevelsSymbol);
        if (!levels || TYPEOF(levels) != STRSXP)
                return ATOMIC_OTHER;
        for (SEXP a = ATTRIB(v); a != R_NilValue; a = CDR(a))
                if (TAG(a) != R_LevelsSymbol && TAG(a) != R_ClassSymbol && TAG(a) != R_NamesSymbol)
                        return ATOMIC_OTHER;
        return ATOMIC_FACTOR;
}

SEXP factor_level(SEXP v, R_xlen_t i) {
        SEXP levels = attribute_of(v, R_LevelsSymbol);
        int k = INTEGER(v)[i];

        return k == NA_INTEGER || k < 1 || k > XLENGTH(levels) ? NA_STRING : STRING_ELT(levels, k - 1);
}

size_t element_chars(SEXP v, R_xlen_t i, enum atomic_kind kind, bool exact) {
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

json_t *string_json(SEXP ch) {
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

/* Below 1e15 "%.15g" has no exponent: a whole double is an integer. */
json_t *value_json_element(SEXP v, R_xlen_t i, size_t *size) {
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

bool names_are_keys(SEXP names, R_xlen_t n) {
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

R_xlen_t data_frame_rows(SEXP v, bool *named) {
        SEXP rn;

        *named = false;
        if (TYPEOF(v) != VECSXP || !class_is(v, "data.frame", NULL))
                return -1;
        rn = attribute_of(v, R_RowNamesSymbol);
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
