/* What leaves the sandbox as text for people and as names for programs
 * (docs/security.md, "What leaves the sandbox").
 *
 * Text.  output, error, console and log are read with cat, and the daemon's
 * log goes to a terminal: a byte sequence a terminal obeys (ESC [2J clears
 * it, ESC ] 0; retitles it, ESC ] 52; writes the clipboard, CSI as the one
 * character U+009B does what ESC [ does) must reach it as visible text.  C0
 * controls (U+0000-U+001F, newline and tab kept where asked) and DEL become
 * \xHH, C1 controls (U+0080-U+009F, in UTF-8 the bytes C2 80-C2 9F) become
 * \u00HH, and a byte that is not part of valid UTF-8 becomes \xHH.  Within
 * JSON text (the log files, result.json, value.json) every one of them
 * becomes \u00HH, which is a JSON escape: the text still reads back as the
 * same JSON value.  The escapes of plain text are for display: a backslash
 * is not doubled, so the text is not meant to be decoded (result.json keeps
 * the exact text).
 *
 * Names.  A name in files/ crosses into programs (ls, shells, scripts), so
 * it must be shown escaped and taken back exactly: a name is "plain" when it
 * is valid UTF-8 with no C0 control, DEL, C1 control or backslash and does
 * not start with '-'; a plain name is shown as it is; any other name is
 * shown with each byte that breaks those rules (every byte of a control
 * character, each byte of invalid UTF-8, each backslash, a leading '-')
 * written as \xHH, two lowercase hex digits.  So a shown name has a
 * backslash exactly when it stands for an escaped name, and the mapping is a
 * bijection between names and shown names: name_take() accepts a string
 * only when showing what it decodes to gives that string back (\x41 for 'A'
 * is refused, as are uppercase hex, a lone backslash or a raw control
 * character).  A shown name is at most 4 times as long as its name: 255
 * bytes become at most 1020, within the kernel's FUSE_NAME_MAX (1024). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum text_escape_flags {
        ESCAPE_KEEP_LINES = 1, /* newline and tab stay as they are */
        ESCAPE_JSON = 2,       /* every escape as \u00HH (the text is JSON) */
};

/* An escaped text is at most this many times as long as the original
 * (DEL as \u007f in JSON). */
#define TEXT_ESCAPE_GROWTH 6

/* Would text_escape() change s[0..len)? */
bool text_needs_escape(const char *s, size_t len, unsigned flags);
/* Write s[0..len) escaped to out, which holds at least TEXT_ESCAPE_GROWTH *
 * len bytes; returns the bytes written (no NUL is added). */
size_t text_escape(const char *s, size_t len, char *out, unsigned flags);
/* A malloc'ed, NUL-terminated escaped copy; NULL only when out of memory. */
char *text_escape_dup(const char *s, size_t len, unsigned flags, size_t *out_len);

/* A shown name is at most this many times as long as the name. */
#define NAME_SHOW_GROWTH 4

/* Is raw[0..len) shown as something else than itself? */
bool name_needs_escape(const char *raw, size_t len);
/* Write the shown form of raw[0..len) (one path component) to out, which
 * holds at least NAME_SHOW_GROWTH * len + 1 bytes; NUL-terminated; returns
 * its length. */
size_t name_show(const char *raw, size_t len, char *out);
/* The name shown stands for, NUL-terminated in out (outcap bytes): 0; or
 * -EINVAL when shown is not the shown form of any name (an escape that is
 * not canonical, a raw control character, a decoded NUL or '/'); or
 * -ENAMETOOLONG when it does not fit. */
int name_take(const char *shown, char *out, size_t outcap);

/* The same for a relative path: each '/'-separated component shown or
 * taken as above, the separators kept.  0, -EINVAL, or -ENAMETOOLONG when
 * the result does not fit in outcap bytes with its NUL. */
int path_show(const char *raw, char *out, size_t outcap);
int path_take(const char *shown, char *out, size_t outcap);
