/* Native code for tests/sandbox/test_round10.py: memory the run's stop
 * does not free.
 *
 * hold_unmapped(mib, got): unmap the read-only pages of ICU's data (30 MiB
 * of address space the worker never touched, which RLIMIT_AS allows for),
 * then map and touch anonymous memory 1 MiB at a time, up to mib or until
 * a mapping fails, and keep it: *got, the MiB held.
 *
 * hold_later(mib, ms): the same from a thread of its own, ms after the call
 * returns: past the daemon's first look at the idle worker. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

void hold_unmapped(int *mib, int *got) {
        FILE *f = fopen("/proc/self/maps", "re");
        unsigned long start[64], end[64];
        char line[512];
        int n = 0;

        while (f && n < 64 && fgets(line, sizeof(line), f)) {
                unsigned long a, b;
                char perms[8];

                if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3 && strcmp(perms, "r--p") == 0 &&
                    strstr(line, "libicudata")) {
                        start[n] = a;
                        end[n++] = b;
                }
        }
        if (f)
                fclose(f);
        for (int i = 0; i < n; i++)
                munmap((void *)start[i], end[i] - start[i]);
        for (*got = 0; *got < *mib; (*got)++) {
                void *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

                if (p == MAP_FAILED)
                        break;
                memset(p, 1, 1 << 20);
        }
}

static int later_mib, later_ms, later_got;

static void *hold_in_thread(void *arg) {
        struct timespec ts = {later_ms / 1000, (later_ms % 1000) * 1000000L};

        (void)arg;
        nanosleep(&ts, NULL);
        hold_unmapped(&later_mib, &later_got);
        for (;;)
                pause();
        return NULL;
}

void hold_later(int *mib, int *ms) {
        pthread_t t;

        later_mib = *mib;
        later_ms = *ms;
        if (pthread_create(&t, NULL, hold_in_thread, NULL) == 0)
                pthread_detach(t);
}
