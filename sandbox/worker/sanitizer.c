/* The worker program's build, as far as limits care (worker.h):
 * what address space a sanitizer reserves, and the sanitizer options a
 * worker needs (the zygote starts with a clean environment, so ASAN_OPTIONS
 * of the daemon's caller never reach it).
 *
 * Process context: worker_reserved_address_space() runs in a worker after
 * its jail is built and before it says "ready": no user code has run in the
 * process yet, which is why the daemon may believe the figure (bounded). */
#include <stdio.h>
#include <string.h>

#include "worker.h"

#if defined(__SANITIZE_ADDRESS__)
#define WORKER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WORKER_ASAN 1
#endif
#endif

#ifdef WORKER_ASAN
/* Options compiled into an ASan worker:
 * - no leak check at exit: R frees little at exit by design, and the
 *   check's ptrace-based stop-the-world cannot work inside the jail;
 * - allocator_may_return_null: an allocation over the memory limit must be
 *   R's ordinary "cannot allocate vector" error, not a sanitizer abort;
 * - a small quarantine: freed memory it holds counts against the worker's
 *   memory cgroup, which has the session's memory limit. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
        return "detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=16:malloc_context_size=10";
}

long long worker_reserved_address_space(void) {
        /* ASan's shadow memory, its shadow gap and its allocator's space are
         * mapped MAP_NORESERVE at start, about 20 TiB of address space that
         * RLIMIT_AS counts although no memory backs it; nothing else in the
         * worker maps NORESERVE ("nr" in smaps' VmFlags) before user code. */
        FILE *f = fopen("/proc/self/smaps", "re");
        char line[512];
        unsigned long long start = 0, end = 0, total = 0;

        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f)) {
                unsigned long long a, b;

                if (sscanf(line, "%llx-%llx ", &a, &b) == 2 && strchr(line, ':') > strchr(line, ' ')) {
                        start = a;
                        end = b;
                } else if (strncmp(line, "VmFlags:", 8) == 0 && end > start) {
                        char *p = line + 8, *tok, *save = NULL;

                        for (tok = strtok_r(p, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
                                if (strcmp(tok, "nr") == 0) {
                                        total += end - start;
                                        break;
                                }
                        start = end = 0;
                }
        }
        fclose(f);
        return (long long)total;
}
#else
long long worker_reserved_address_space(void) { return 0; }
#endif
