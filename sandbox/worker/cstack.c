/* R's C stack check (worker.h).
 *
 * R checks its C stack in eval() and other recursive places
 * (R_CheckStack: usage = R_CStackDir * (R_CStackStart - sp) against
 * R_CStackLimit) and turns deep recursion into a catchable "C stack usage
 * is too close to the limit" error.  Without it deep recursion runs into
 * the end of the stack and the worker dies of SIGSEGV with the session's
 * state.  R's own set-up does not fit the worker: it reads RLIMIT_STACK once,
 * in the zygote, while the daemon sets each session's limit on the worker
 * with prlimit(2), and may change it between runs.
 *
 * The kernel lets the main thread's stack grow (on a fault below it) while
 * the whole stack mapping, measured from its top, stays within the soft
 * RLIMIT_STACK read at the time of the fault, and stays a guard gap
 * (stack_guard_gap, 256 pages) above the mapping below it; the growth also
 * counts against RLIMIT_AS.  A worker is a copy-on-write clone of the zygote
 * (jail_clone passes no new stack), so its stack mapping is the zygote's:
 * cstack_note() notes its top and the room below it once, and each run
 * sets R_CStackLimit from the limits in force (cstack_update; between runs,
 * for the worker's own tool definitions, the last run's stays).  The limit
 * keeps a margin inside what the kernel grants, for three reasons: R
 * raises the limit by a further 1/0.95 while it handles the overflow error
 * (R_SignalCStackOverflow), C code between two checks uses stack R never
 * sees (deparse, regex, a print method's C), and RLIMIT_AS may refuse the
 * growth first. */
#define CSTACK_DEFNS 1
#define HAVE_UINTPTR_T 1

#include "worker.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include <Rinterface.h>

/* Defn.h, not Rinterface.h: 1 when the C stack grows down.  An exported
 * int in libR, like R_CStackStart beside it. */
extern int R_CStackDir;

#define STACK_GUARD_GAP (1u << 20)      /* the kernel's default stack_guard_gap */
#define STACK_SLACK_MIN (128u << 10)    /* kept free below R's limit, at least */
#define STACK_ROOM_UNKNOWN (256u << 20) /* growth room when the mapping below is unknown */

static struct {
        uintptr_t top;  /* end of the main stack's mapping */
        size_t room;    /* bytes it can grow to before the guard gap of the mapping below */
        rlim_t stack, as; /* the limits R_CStackLimit was last computed from */
        bool known;
} cstack;

/* In the zygote, from /proc/self/maps: the [stack] mapping and the end of
 * the one below it.  Without /proc (it is the host's here, so only if it
 * is not mounted), R's own start of stack (glibc's __libc_stack_end) and a
 * fixed room stand in. */
void cstack_note(void) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        uintptr_t prev_end = 0;
        bool at_start = true; /* a long path is read in pieces */

        cstack.top = R_CStackStart;
        cstack.room = STACK_ROOM_UNKNOWN;
        while (f && fgets(line, sizeof(line), f)) {
                unsigned long start, end;
                bool was_start = at_start;

                at_start = strchr(line, '\n') != NULL;
                if (!was_start || sscanf(line, "%lx-%lx", &start, &end) != 2)
                        continue;
                if (strstr(line, "[stack]") && (uintptr_t)start <= (uintptr_t)&line &&
                    (uintptr_t)&line < (uintptr_t)end) {
                        cstack.top = (uintptr_t)end;
                        if (prev_end && (uintptr_t)end - prev_end > STACK_GUARD_GAP)
                                cstack.room = (size_t)((uintptr_t)end - prev_end - STACK_GUARD_GAP);
                        break;
                }
                prev_end = (uintptr_t)end;
        }
        if (f)
                fclose(f);
        cstack.stack = cstack.as = 0;
        cstack.known = false;
}

/* At the start of a run: R's limit from the soft RLIMIT_STACK and
 * RLIMIT_AS the daemon set.  Two getrlimit() calls when nothing changed. */
void cstack_update(void) {
        struct rlimit st, as;
        size_t usable, slack;

        if (getrlimit(RLIMIT_STACK, &st) < 0 || getrlimit(RLIMIT_AS, &as) < 0)
                return;
        if (cstack.known && st.rlim_cur == cstack.stack && as.rlim_cur == cstack.as)
                return;
        usable = cstack.room;
        if (st.rlim_cur != RLIM_INFINITY && st.rlim_cur < usable)
                usable = (size_t)st.rlim_cur;
        /* The heap needs the address space too. */
        if (as.rlim_cur != RLIM_INFINITY && as.rlim_cur / 4 < usable)
                usable = (size_t)(as.rlim_cur / 4);
        slack = STACK_SLACK_MIN + usable / 16;
        R_CStackStart = cstack.top;
        R_CStackDir = 1; /* down, on every architecture Linux runs this on but PA-RISC */
        R_CStackLimit = usable > slack ? (uintptr_t)((double)(usable - slack) * 0.95) : 0;
        cstack.stack = st.rlim_cur;
        cstack.as = as.rlim_cur;
        cstack.known = true;
}
