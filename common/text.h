/* One growable byte buffer for the whole project: the files a session
 * serves (output, console, result.json, log), tool definitions, write
 * buffers, the frame reader's input and the worker's console.
 *
 * data is always NUL-terminated when non-NULL (so text can be handed to
 * string functions), but may hold NUL bytes before len.  A zeroed struct is
 * an empty text.  Functions return 0 or -ENOMEM; on failure the text is
 * unchanged. */
#pragma once

#include <stddef.h>

struct text {
        char *data;
        size_t len, cap;
};

/* Make room for at least extra more bytes (and the NUL). */
int text_reserve(struct text *t, size_t extra);
/* Append n bytes. */
int text_append(struct text *t, const char *data, size_t n);
/* Replace the content with n bytes. */
int text_set(struct text *t, const char *data, size_t n);
/* Drop the first n bytes (n ≤ len); the rest moves to the front. */
void text_consume(struct text *t, size_t n);
/* Empty it, keeping the memory. */
void text_clear(struct text *t);
/* Free it; it is an empty text afterwards.  Accepts a zeroed struct. */
void text_free(struct text *t);
/* Hand the bytes out (caller frees; NULL when empty); t becomes empty. */
char *text_steal(struct text *t, size_t *len);
