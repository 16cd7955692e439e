/* Unit tests of what keeps the daemon's paths independent of the number of
 * sessions: the growing hash table (common/hash.h) and the loop's timer
 * heap (common/loop.h). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hash.h"
#include "loop.h"

struct item {
        uint64_t key;
        struct hash_node node;
};

static struct item *find(struct hash *t, uint64_t key) {
        uint64_t h = hash_u64(key);
        struct item *it;

        HASH_FOR_EACH(it, t, h, struct item, node) {
                if (it->key == key)
                        return it;
        }
        return NULL;
}

static void test_hash(void) {
        enum { N = 20000 };
        struct item *items = calloc(N, sizeof(*items));
        struct hash t = {0};
        size_t longest = 0;
        bool all = true;

        CHECK(find(&t, 1) == NULL); /* an empty table answers */
        for (size_t i = 0; i < N; i++) {
                items[i].key = i * 16 + 16; /* the shape of session inode bases */
                CHECK(hash_insert(&t, &items[i].node, hash_u64(items[i].key)) == 0);
        }
        CHECK(t.n == N && t.n_buckets >= N);
        for (size_t i = 0; i < N; i++)
                all &= find(&t, items[i].key) == &items[i];
        CHECK(all);
        CHECK(find(&t, 17) == NULL && find(&t, (uint64_t)N * 16 + 16) == NULL);
        /* Chains stay short: the table grows with what it holds. */
        for (size_t b = 0; b < t.n_buckets; b++) {
                size_t n = 0;
                for (struct hash_node *e = t.buckets[b]; e; e = e->next)
                        n++;
                if (n > longest)
                        longest = n;
        }
        CHECK(longest <= 12);
        /* Removal: every other one goes, the rest are still found. */
        for (size_t i = 0; i < N; i += 2)
                hash_remove(&t, &items[i].node);
        all = true;
        for (size_t i = 0; i < N; i++)
                all &= find(&t, items[i].key) == (i % 2 ? &items[i] : NULL);
        CHECK(all && t.n == N / 2);
        hash_remove(&t, &items[0].node); /* not in it any more: ignored */
        CHECK(t.n == N / 2);
        CHECK(hash_str("a") != hash_str("b") && hash_str("session") == hash_str("session"));
        hash_free(&t);
        free(items);
}

static uint64_t fired[4096];
static size_t n_fired;
static struct loop_timer *timers[4096];
static struct loop *tl;

static void on_timer(void *data) {
        fired[n_fired++] = (uint64_t)(uintptr_t)data;
        if (n_fired == 1000)
                loop_stop(tl);
}

/* When timer i was armed in test_timers' scrambled order (7919 is prime
 * to 1200, so k -> k * 7919 % 1200 is a permutation). */
static size_t arm_rank(size_t i) {
        for (size_t k = 0; k < 1200; k++)
                if ((k * 7919) % 1200 == i)
                        return k;
        return 1200;
}

static void test_timers(void) {
        uint64_t base = now_ns() + 20000000; /* 20 ms from now */
        bool ordered = true;
        size_t disarmed = 0;

        CHECK(loop_new(&tl) == 0);
        /* 1,200 timers armed in a scrambled order, 200 of them disarmed or
         * re-armed later: the rest fire in due order, ties in arming order. */
        for (size_t i = 0; i < 1200; i++) {
                timers[i] = loop_timer_new(tl, on_timer, (void *)(uintptr_t)i);
                CHECK(timers[i] != NULL);
        }
        for (size_t k = 0; k < 1200; k++) {
                size_t i = (k * 7919) % 1200;
                loop_timer_arm(timers[i], base + (i / 2) * 10000); /* pairs share a due time */
        }
        for (size_t i = 0; i < 1200; i += 6) {
                loop_timer_arm(timers[i], 0);
                disarmed++;
        }
        CHECK(disarmed == 200);
        CHECK(loop_run(tl) == 0 && n_fired == 1000);
        /* In due order; of a pair due together, the one armed first. */
        for (size_t k = 1; k < n_fired; k++) {
                uint64_t a = fired[k - 1], b = fired[k];
                ordered &= a / 2 < b / 2 || (a / 2 == b / 2 && arm_rank(a) < arm_rank(b));
        }
        CHECK(ordered);
        ordered = true;
        for (size_t k = 0; k < n_fired; k++)
                ordered &= fired[k] % 6 != 0;
        CHECK(ordered);
        for (size_t i = 0; i < 1200; i++)
                loop_timer_free(timers[i]);
        loop_free(tl);
}

int main(void) {
        test_hash();
        test_timers();
        return check_summary("scale");
}
