/* Native code for tests/sandbox/test_round10.py: memory the run's stop
 * does not free.
 *
 * hold_unmapped(mib, got): unmap the read-only pages of ICU's data (30 MiB
 * of address space the worker never touched, which RLIMIT_AS allows for),
 * then map and touch anonymous memory 1 MiB at a time, up to mib or until
 * a mapping fails, and keep it: *got, the MiB held.
 *
 * hold_later(mib, ms): the same from a thread of its own (a small stack:
 * the address space is the limit), ms after the call returns, past the
 * daemon's first look at the idle worker; and first every read-only page of
 * the libraries' data made the worker's own (written with what it holds),
 * so that what it holds is well past the limit, not at it.
 *
 * frame_later(ms) / exit_later(ms): ms after the call returns, between
 * runs, a thread writes a result frame on the worker's socket (a message the
 * worker may not send then), or ends the worker (_exit(3)). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "native_common.h"

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

/* Each r--p mapping of a file but ICU's data: written page by page with
 * what it holds, so that each page becomes a private copy. */
static void copy_read_only(void) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        long page = sysconf(_SC_PAGESIZE);

        while (f && fgets(line, sizeof(line), f)) {
                unsigned long a, b;
                char perms[8];

                if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) != 3 || strcmp(perms, "r--p") != 0 ||
                    !strchr(line, '/') || strstr(line, "libicudata"))
                        continue;
                if (mprotect((void *)a, b - a, PROT_READ | PROT_WRITE) != 0)
                        continue;
                for (unsigned long p = a; p < b; p += (unsigned long)page) {
                        volatile char *c = (volatile char *)p;
                        *c = *c;
                }
                mprotect((void *)a, b - a, PROT_READ);
        }
        if (f)
                fclose(f);
}

static void *hold_in_thread(void *arg) {
        struct timespec ts = {later_ms / 1000, (later_ms % 1000) * 1000000L};

        (void)arg;
        nanosleep(&ts, NULL);
        copy_read_only();
        hold_unmapped(&later_mib, &later_got);
        for (;;)
                pause();
        return NULL;
}

void hold_later(int *mib, int *ms) {
        pthread_attr_t attr;
        pthread_t t;

        later_mib = *mib;
        later_ms = *ms;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1 << 16);
        if (pthread_create(&t, &attr, hold_in_thread, NULL) == 0)
                pthread_detach(t);
        pthread_attr_destroy(&attr);
}

static int idle_ms;

static void *idle_act(void *arg) {
        struct timespec ts = {idle_ms / 1000, (idle_ms % 1000) * 1000000L};

        nanosleep(&ts, NULL);
        if (arg)
                _exit(3);
        send_frame("{\"type\":\"result\",\"seq\":1,\"status\":\"ok\",\"output\":\"forged\"}");
        for (;;)
                pause();
        return NULL;
}

static void idle_later(int ms, void *arg) {
        pthread_t t;

        idle_ms = ms;
        if (pthread_create(&t, NULL, idle_act, arg) == 0)
                pthread_detach(t);
}

void frame_later(int *ms) { idle_later(*ms, NULL); }

void exit_later(int *ms) { idle_later(*ms, (void *)1); }
