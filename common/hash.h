/* An intrusive hash table with chaining that grows: a struct hash_node
 * embedded in each element, the element's hash kept in it, the key compared
 * by the caller (HASH_FOR_EACH walks one hash's chain).  Lookups, inserts
 * and removals cost a chain's length, kept at about one by doubling the
 * buckets when the table is as full as it has buckets: constant time however
 * many elements there are (the cost of a growth is spread over the inserts
 * that led to it).
 *
 * A table is zeroed (HASH_INIT or = {0}) before use; hash_free() frees the
 * buckets only, never the elements. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hash_node {
        struct hash_node *next;
        uint64_t hash;
};

struct hash {
        struct hash_node **buckets;
        size_t n_buckets; /* a power of two, or 0 before the first insert */
        size_t n;
};

/* Add n under hash h.  0, or -ENOMEM when the first buckets cannot be made
 * (a failed growth keeps the table as it is: still correct, only slower). */
int hash_insert(struct hash *t, struct hash_node *n, uint64_t h);
/* Remove n (inserted before; a node not in t is ignored). */
void hash_remove(struct hash *t, struct hash_node *n);
void hash_free(struct hash *t);

/* The first node of hash h's bucket (then follow ->next, checking ->hash). */
static inline struct hash_node *hash_bucket(const struct hash *t, uint64_t h) {
        return t->n_buckets ? t->buckets[h & (t->n_buckets - 1)] : NULL;
}

/* 64-bit mixers: of an integer key (splitmix64's finaliser) and of a string
 * (FNV-1a, then mixed). */
static inline uint64_t hash_u64(uint64_t x) {
        x ^= x >> 30;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27;
        x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
}
static inline uint64_t hash_str(const char *s) {
        uint64_t h = 0xcbf29ce484222325ULL;

        while (*s)
                h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
        return hash_u64(h);
}

#define hash_entry(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
/* For each element pos (of type, whose struct hash_node is member) stored
 * under hash h. */
#define HASH_FOR_EACH(pos, t, h, type, member)                                                              \
        for (struct hash_node *pos##_n_ = hash_bucket((t), (h)); pos##_n_; pos##_n_ = pos##_n_->next)       \
                if (pos##_n_->hash == (h) && ((pos = hash_entry(pos##_n_, type, member)), 1))
