/* Exploit-mitigation secrets of a forked worker (docs/security.md, "What
 * workers share").
 *
 * Every worker is a fork of one zygote, so without this each would hold the
 * zygote's stack canary, and code that read one worker's (a session's own
 * native code can: it is at %fs:0x28) would know every other session's.
 * glibc's pointer guard (%fs:0x30) and the address-space layout cannot be
 * changed after start (see there for why) and stay shared.
 *
 * Process context: the worker, first thing in worker_main(), before it
 * builds its jail; single-threaded. */
#pragma once

/* Give this process a fresh stack canary from getrandom(2) (the lowest byte
 * zero, as glibc makes it, so that a string overflow cannot copy it out or
 * write it back), and fresh bytes where the kernel's AT_RANDOM pointed (what
 * glibc derived both guards from; nothing reads them after start, but a
 * library that seeds itself from them later gets this worker's own).
 *
 * Safe only because of how it is called, which the caller must keep true:
 * the function itself has no canary check (no_stack_protector), and no frame
 * that was entered before the change ever returns after it (their check
 * would compare the old canary with the new one and abort).  worker_main()
 * calls it and never returns, and the zygote's frames below worker_main()
 * (serve_spawn_requests(), main()) never resume in the child.  0, or -errno
 * when getrandom failed (the canary is then unchanged). */
int worker_reseed_secrets(void);
