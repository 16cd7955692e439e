/* The one monotonic clock of both programs: the daemon's loop, its timers
 * and deadlines, and the worker's console pacing and jsonlite deadline.
 *
 * Process context: anywhere (clock_gettime is async-signal-safe and needs no
 * system call on this kernel: the vDSO answers it). */
#pragma once

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds: never goes back, counts from an arbitrary
 * point (boot), so only differences mean anything. */
uint64_t now_ns(void);
