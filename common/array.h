/* Growable arrays: the one way the tree makes room in an array of n elements
 * that it appends to.
 *
 *     if (l->n == l->cap) {
 *             struct entry *v = array_grow(l->v, &l->cap, sizeof(*v), 64);
 *             if (!v)
 *                     return -ENOMEM;
 *             l->v = v;
 *     }
 *
 * Process context: anywhere malloc is allowed. */
#pragma once

#include <stddef.h>
#include <stdlib.h>

/* v (NULL at first) reallocated to hold twice *cap elements of elem bytes
 * (first when *cap is 0), *cap updated: the new array, or NULL when out of
 * memory or the size would overflow (then v and *cap are unchanged). */
static inline void *array_grow(void *v, size_t *cap, size_t elem, size_t first) {
        size_t n = *cap ? *cap * 2 : first;
        void *p = n > *cap ? reallocarray(v, n, elem) : NULL;

        if (p)
                *cap = n;
        return p;
}
