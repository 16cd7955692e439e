/* Exploit-mitigation secrets of a forked worker (sandbox/secrets.h). */
#include "secrets.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/random.h>

/* getrandom(2) of exactly n bytes (it returns up to 256 bytes at once from
 * an initialised pool; retried on EINTR). */
static int random_bytes(void *buf, size_t n) {
        ssize_t got;

        do
                got = getrandom(buf, n, 0);
        while (got < 0 && errno == EINTR);
        if (got < 0)
                return -errno;
        return (size_t)got == n ? 0 : -EIO;
}

/* No canary of its own: its prologue would save the old value and its
 * epilogue compare it with the new one.  random_bytes() and getauxval()
 * return before the change, so their checks see the old value both times. */
__attribute__((no_stack_protector, noinline)) int worker_reseed_secrets(void) {
        unsigned char fresh[16];
        unsigned char *at_random = (unsigned char *)getauxval(AT_RANDOM);
        int r;

        if (at_random && random_bytes(fresh, sizeof(fresh)) == 0)
                memcpy(at_random, fresh, sizeof(fresh));
#if defined(__x86_64__)
        uint64_t guard;

        if ((r = random_bytes(&guard, sizeof(guard))) < 0)
                return r;
        /* glibc: _dl_setup_stack_chk_guard() zeroes the lowest byte. */
        guard &= ~(uint64_t)0xff;
        /* The TCB's stack_guard (tcbhead_t.stack_guard, %fs:0x28), which
         * every -fstack-protector prologue loads. */
        __asm__ volatile("movq %0, %%fs:0x28" : : "r"(guard) : "memory");
        r = 0;
#else
        /* Other architectures keep the guard elsewhere (a global on arm64):
         * not changed; docs/security.md says so. */
        r = -ENOTSUP;
#endif
        return r;
}
