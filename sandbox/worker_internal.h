/* What the zygote (sandbox/zygote.c) and the worker proper (sandbox/worker.c)
 * share inside the securerfs-worker program.
 *
 * Process context: worker_r_init() and worker_r_shutdown() run in the zygote,
 * on the host, before any user code exists.  worker_main() runs in the child
 * jail_clone() made, first still privileged inside its new namespaces (until
 * jail_enter() returns), then as the untrusted worker. */
#pragma once

#include <stddef.h>

#include "jail.h"

/* Initialise embedded R once, in the zygote: R itself, the console hooks,
 * jsonlite, and sandbox/worker.R in its private environment.  ctl_fd is the
 * zygote's control socket: if R dies on its own during start-up
 * (R_Suicide) the zygote says "fatal MESSAGE" there itself.  Returns 0, or
 * -errno with a one-line reason in err. */
int worker_r_init(int ctl_fd, char *err, size_t errlen);

/* Zygote side, at the end: remove the zygote's own R temporary directory. */
void worker_r_shutdown(void);

/* Child side, right after jail_clone() returned 0 in the child: make sock
 * the worker's fd 3 and close every other fd, build the jail, answer
 * "ready" and serve exec frames until end of file.  Never returns. */
__attribute__((noreturn)) void worker_main(int sock, const struct jail_options *o);

/* Address space the build reserves before any user code (bytes): 0 in a
 * normal build; a sanitizer's shadow memory in an ASan one
 * (sandbox/sanitizer.c).  Sent in "ready": the daemon adds it to the
 * session's memory limit (RLIMIT_AS). */
long long worker_reserved_address_space(void);
