/* A small event loop: epoll over file descriptors plus one-shot timers on
 * CLOCK_MONOTONIC.  Callbacks run on the loop's thread and must never block;
 * all session state is touched only from them, so nothing needs a lock. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h" /* timers are armed with absolute now_ns() times */

struct rusage;

struct loop;
struct loop_timer;

typedef void (*loop_fd_fn)(int fd, uint32_t events, void *data);
typedef void (*loop_timer_fn)(void *data);

int loop_new(struct loop **out);
void loop_free(struct loop *l);

/* Watch fd for EPOLL* events; fn gets them.  0 or -errno. */
int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_fn fn, void *data);
int loop_mod_fd(struct loop *l, int fd, uint32_t events);
/* Stop watching fd (before closing it).  Events already collected for it in
 * this iteration are dropped. */
void loop_del_fd(struct loop *l, int fd);

/* Timers: created disarmed; arm with an absolute now_ns() time, 0 disarms.
 * A timer armed for now from a callback fires at the next iteration of the
 * loop, after the events of the file descriptors: a callback that has done
 * its share of a long job yields by arming one.  The armed timers are a
 * binary heap: arming, disarming and each iteration's next-due cost
 * log(armed timers), whatever their number; of timers due at the same time
 * the first armed fires first.  loop_timer_new() is NULL when out of memory
 * (it reserves the timer's place in the heap, so arming never fails). */
struct loop_timer *loop_timer_new(struct loop *l, loop_timer_fn fn, void *data);
void loop_timer_arm(struct loop_timer *t, uint64_t due_ns);
/* The same, but the timer also fires as soon as the loop has nothing else
 * to do (no descriptor ready, no other timer due), if that comes first: for
 * work that yields to the rest of the loop only while the rest wants it.
 * Arming again (either way) or disarming drops that. */
void loop_timer_arm_idle(struct loop_timer *t, uint64_t due_ns);
/* When t fires (the now_ns() time it was armed for), 0 if disarmed: a timer
 * is disarmed before its callback runs. */
uint64_t loop_timer_due(const struct loop_timer *t);
void loop_timer_free(struct loop_timer *t);

/* Child exits.  The daemon reaps every child through the loop: on SIGCHLD
 * its signal handling calls loop_reap_children(), which wait4()s for each
 * exited child and calls the watch registered for its pid (then forgotten).
 * A child may exit before its owner learns its pid (a worker cloned by the
 * zygote with CLONE_PARENT dies before the zygote's answer arrives): such an
 * exit is kept (the last 64) and handed to a watch registered for that pid
 * later, at the next iteration of the loop.  Lookups are by a hash of the
 * pid: constant time however many children there are. */
typedef void (*loop_child_fn)(pid_t pid, int status, const struct rusage *ru, void *data);
/* Watch pid (one watch per pid: a second replaces the first).  0 or
 * -ENOMEM. */
int loop_watch_child(struct loop *l, pid_t pid, loop_child_fn fn, void *data);
/* Forget pid's watch: its exit is kept as unclaimed, also one that came
 * already and was waiting for the next iteration to be delivered. */
void loop_unwatch_child(struct loop *l, pid_t pid);
/* Take pid's exit if it came before any watch and is still kept: true with
 * *status and *ru (the exit is then gone from the loop), false otherwise.
 * For an owner that learns a pid late (a worker can die before the zygote's
 * word of its pid arrives) and must handle such an exit at once, before it
 * signals or limits a pid that is no longer the child's: it asks, and
 * watches only when this says false. */
bool loop_take_exit(struct loop *l, pid_t pid, int *status, struct rusage *ru);
/* Reap every exited child and dispatch its exit (call on SIGCHLD). */
void loop_reap_children(struct loop *l);

/* Run until loop_stop().  Returns 0 or -errno from epoll. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);
/* After descriptors were ready, look again without sleeping for up to ns
 * before blocking (0: never; the default).  A reply to a client or a frame
 * to a worker is often answered within that window, and a process that
 * sleeps in epoll_wait is woken through the scheduler, across CPUs: on a
 * VM with halted vCPUs that wake-up is the dearest part of a round trip
 * (docs/performance.md, "Fewer cross-CPU wake-ups").  It costs CPU only
 * for the window after each burst of events, none when idle; on one CPU it
 * would take the CPU from the process it waits for, so the caller sets it
 * only when it may run on several. */
void loop_set_spin(struct loop *l, uint64_t ns);
/* The loop's turns so far: one per pass of its due timers and then its
 * ready descriptors (a callback can tell what else ran in its turn). */
uint64_t loop_turn(const struct loop *l);
