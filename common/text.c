#include "text.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int text_reserve(struct text *t, size_t extra) {
        size_t cap = t->cap ? t->cap : 256;
        char *p;

        if (extra > SIZE_MAX / 2 - t->len - 1)
                return -ENOMEM;
        if (t->len + extra + 1 <= t->cap)
                return 0;
        while (cap < t->len + extra + 1)
                cap *= 2;
        p = realloc(t->data, cap);
        if (!p)
                return -ENOMEM;
        t->data = p;
        t->cap = cap;
        return 0;
}

int text_append(struct text *t, const char *data, size_t n) {
        int e = text_reserve(t, n);

        if (e < 0)
                return e;
        if (n)
                memcpy(t->data + t->len, data, n);
        t->len += n;
        t->data[t->len] = '\0';
        return 0;
}

int text_set(struct text *t, const char *data, size_t n) {
        int e;

        if (n > t->len && (e = text_reserve(t, n - t->len)) < 0)
                return e;
        t->len = 0;
        return text_append(t, data, n);
}

void text_consume(struct text *t, size_t n) {
        if (n >= t->len) {
                text_clear(t);
                return;
        }
        memmove(t->data, t->data + n, t->len - n);
        t->len -= n;
        t->data[t->len] = '\0';
}

void text_clear(struct text *t) {
        t->len = 0;
        if (t->data)
                t->data[0] = '\0';
}

void text_free(struct text *t) {
        free(t->data);
        *t = (struct text){0};
}

char *text_steal(struct text *t, size_t *len) {
        char *p = t->len ? t->data : NULL;

        if (len)
                *len = t->len;
        if (!p)
                free(t->data);
        *t = (struct text){0};
        return p;
}
