/* The growing intrusive hash table (common/hash.h). */
#include "hash.h"

#include <errno.h>
#include <stdlib.h>

static int grow(struct hash *t) {
        size_t n = t->n_buckets ? t->n_buckets * 2 : 16;
        struct hash_node **b = calloc(n, sizeof(*b));

        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < t->n_buckets; i++)
                while (t->buckets[i]) {
                        struct hash_node *e = t->buckets[i];
                        t->buckets[i] = e->next;
                        e->next = b[e->hash & (n - 1)];
                        b[e->hash & (n - 1)] = e;
                }
        free(t->buckets);
        t->buckets = b;
        t->n_buckets = n;
        return 0;
}

int hash_insert(struct hash *t, struct hash_node *n, uint64_t h) {
        struct hash_node **b;

        if (t->n >= t->n_buckets && grow(t) < 0 && !t->n_buckets)
                return -ENOMEM;
        n->hash = h;
        b = &t->buckets[h & (t->n_buckets - 1)];
        n->next = *b;
        *b = n;
        t->n++;
        return 0;
}

void hash_remove(struct hash *t, struct hash_node *n) {
        if (!t->n_buckets)
                return;
        for (struct hash_node **pp = &t->buckets[n->hash & (t->n_buckets - 1)]; *pp; pp = &(*pp)->next)
                if (*pp == n) {
                        *pp = n->next;
                        n->next = NULL;
                        t->n--;
                        return;
                }
}

void hash_free(struct hash *t) {
        free(t->buckets);
        *t = (struct hash){0};
}
