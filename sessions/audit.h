/* The audit log: one JSON object per line, each with "time" (UTC, ISO 8601
 * with milliseconds) and "event".  The file (-o audit_log) is created with
 * mode 0600 and never through a symlink; sessions also keep their own lines
 * for sessions/N/log. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct audit;

/* Open path for appending.  0 or -errno (-ELOOP when it is a symlink). */
int audit_open(const char *path, struct audit **out);
void audit_close(struct audit *a);

/* Turn ev (stolen) into one line, "time" added, ending in "\n", with no
 * control character raw (DEL and U+0080-U+009F as \u00HH: the line is read
 * with cat).  NULL on allocation failure.  The caller frees it. */
char *audit_format(json_t *ev, size_t *len);
/* The two lines every run writes, byte for byte what audit_format() makes
 * of {"event":"run_start","seq":..,"code":..,"code_bytes":..,"session":..}
 * and {"event":"run_end","seq":..,"status":..,"elapsed_ms":..,"session":..}
 * ("time" added), without building and dumping a JSON tree: per run they
 * cost the loop about 10 µs that way.  code[0..code_len) and session must
 * be valid UTF-8.  NULL on allocation failure, and for an elapsed_ms that
 * would need an exponent (then audit_format() writes it).  The caller
 * frees the line. */
char *audit_format_run_start(const char *session, uint64_t seq, const char *code, size_t code_len, size_t code_bytes,
                             size_t *len);
char *audit_format_run_end(const char *session, uint64_t seq, const char *status, double elapsed_ms, size_t *len);
/* Append a line to the file; a NULL audit does nothing. */
void audit_write(struct audit *a, const char *line, size_t len);
