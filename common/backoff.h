/* Restart back-off for supervised helpers (the keeper, the zygote): a helper
 * that ran for a while and died is restarted at once; one that dies again
 * soon after waits 100 ms, then twice as long each time up to a cap; one
 * that never became ready (a broken installation, a kernel that refuses its
 * namespaces) waits at least a second, up to a longer cap, so that it cannot
 * make the daemon spin. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define BACKOFF_STABLE_NS (10ULL * 1000000000ULL)  /* ready this long: a fresh start */
#define BACKOFF_RUNNING_MIN_NS (100ULL * 1000000ULL)
#define BACKOFF_RUNNING_MAX_NS (5ULL * 1000000000ULL)
#define BACKOFF_START_MIN_NS (1000ULL * 1000000ULL)
#define BACKOFF_START_MAX_NS (30ULL * 1000000000ULL)

struct backoff {
        uint64_t delay_ns; /* the last delay given */
};

/* The delay before the next start of a helper that died after lived_ns,
 * having become ready (was_ready) or not. */
static inline uint64_t backoff_next(struct backoff *b, bool was_ready, uint64_t lived_ns) {
        uint64_t lo = was_ready ? BACKOFF_RUNNING_MIN_NS : BACKOFF_START_MIN_NS;
        uint64_t hi = was_ready ? BACKOFF_RUNNING_MAX_NS : BACKOFF_START_MAX_NS;

        if (was_ready && lived_ns >= BACKOFF_STABLE_NS) {
                b->delay_ns = 0;
                return 0;
        }
        b->delay_ns = b->delay_ns < lo ? lo : b->delay_ns * 2;
        if (b->delay_ns > hi)
                b->delay_ns = hi;
        return b->delay_ns;
}
