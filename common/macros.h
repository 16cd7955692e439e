/* Small helpers shared by the daemon and the worker: scope-bound clean-up
 * and explicit ownership transfer (the bubblewrap/systemd idiom). */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

#define _cleanup_free_ __attribute__((cleanup(freep)))
#define _cleanup_close_ __attribute__((cleanup(closep)))

/* Hand ownership out of a _cleanup_ variable. */
#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _taken = (p);     \
                (p) = NULL;                     \
                _taken;                         \
        })
#define TAKE_FD(fd)                             \
        ({                                      \
                int _taken = (fd);              \
                (fd) = -1;                      \
                _taken;                         \
        })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
