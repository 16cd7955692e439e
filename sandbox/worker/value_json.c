/* The value's JSON, value.json, by jsonlite's conventions (worker.h).
 *
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
 *      VALUE_JSON_SECONDS (value_json_check_deadline(), from R_PolledEvents,
 *      raises an error after that).
 *
 * A value that is skipped or cut gets a value_note saying why. */
#include "worker.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "json_cleanup.h"
#include "macros.h"
#include "utf8.h"

/* value.json nests at most this deep: the R client's fromJSON(simplifyVector
 * = TRUE) needs about 30 KiB of C stack a level, and jsonlite on the host
 * cannot even write 200 levels with R's default 8 MiB stack. */
#define VALUE_JSON_DEPTH_MAX 200
#define VALUE_JSON_SECONDS 2 /* jsonlite's conversion, before it is given up */

static struct {
        SEXP json_call;       /* value_json(.value), preserved */
        uint64_t deadline_ns; /* jsonlite's conversion gives up after it; 0: none */
} J;

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
        SEXP names = attribute_of(v, R_NamesSymbol);
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

/* A list (unclassed, with names or none), as an array or an object. */
static void scan_list(SEXP v, int depth, struct json_scan *s) {
        SEXP names = attribute_of(v, R_NamesSymbol);
        R_xlen_t n = XLENGTH(v);

        if (!scan_level(s, depth + 1))
                return;
        if (names && !names_are_keys(names, n))
                s->fast = false;
        if (!scan_add(s, n > 0 ? 2 + (size_t)(n - 1) : 2))
                return;
        for (R_xlen_t i = 0; i < n && !s->stopped; i++) {
                if (names) {
                        SEXP ch = TYPEOF(names) == STRSXP && i < XLENGTH(names) ? STRING_ELT(names, i) : NA_STRING;

                        if (!scan_add(s, (ch == NA_STRING ? 0 : (size_t)LENGTH(ch)) + 3))
                                return;
                }
                json_scan(VECTOR_ELT(v, i), depth + 1, s);
        }
}

static void json_scan(SEXP v, int depth, struct json_scan *s) {
        bool named_rows;
        R_xlen_t n, rows;

        if (s->stopped)
                return;
        if (v == R_NilValue) {
                scan_add(s, 4);
                return;
        }
        if (is_atomic_type(TYPEOF(v))) {
                n = XLENGTH(v);
                if ((n != 1 || attribute_of(v, R_DimSymbol)) && !scan_level(s, depth + 1))
                        return;
                if (n != 1 && !OBJECT(v) && !scan_add(s, 2))
                        return;
                scan_atomic_items(v, true, s);
                return;
        }
        if (TYPEOF(v) != VECSXP) {
                /* Functions, environments, S4, language: no JSON form of
                 * their own (jsonlite says why, or converts what it can). */
                s->fast = false;
                return;
        }
        rows = data_frame_rows(v, &named_rows);
        if (rows >= 0) {
                scan_data_frame(v, rows, named_rows, depth, s);
        } else if (OBJECT(v) || (ATTRIB(v) != R_NilValue &&
                                 (TAG(ATTRIB(v)) != R_NamesSymbol || CDR(ATTRIB(v)) != R_NilValue))) {
                /* Classed (POSIXlt, ...) or with attributes jsonlite reads:
                 * its form is jsonlite's own. */
                s->fast = false;
                scan_depth(v, depth, s);
        } else {
                scan_list(v, depth, s);
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
                j = value_json_element(v, i, &e->size);
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
        SEXP names = attribute_of(v, R_NamesSymbol);
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
        names = attribute_of(v, R_NamesSymbol);
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

json_t *value_json(SEXP v, char **note) {
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

        J.deadline_ns = now_ns() + VALUE_JSON_SECONDS * 1000000000ull;
        res = r_call_on_value(J.json_call, v);
        J.deadline_ns = 0;
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

void value_json_check_deadline(void) {
        if (J.deadline_ns && now_ns() > J.deadline_ns) {
                J.deadline_ns = 0;
                /* Raised where an interrupt would be (R_CheckUserInterrupt),
                 * inside jsonlite, under R_tryEval. */
                Rf_error("the conversion took over %d s", VALUE_JSON_SECONDS);
        }
}

void value_json_deadline_clear(void) {
        J.deadline_ns = 0;
}

int value_json_init(char *err, size_t errlen) {
        return r_call("value_json", Rf_install(".value"), &J.json_call, err, errlen);
}
