/*
 * The watchdog thread: one per process, started at the first request,
 * restarted lazily after fork. It sleeps until the next deadline, captures
 * and reports requests past the threshold, and writes "finished" lines.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>

#include "python.h"
#include "thread.h"

extern bool slowdog_off;           /* SLOWDOG_DISABLE or setup failed */

/* Once per process, at the first accepted connection: reads the config
 * (warning on bad values) and prepares capture. After the first call, one
 * load and a compare. */
extern _Atomic int watchdog_ready __attribute__((visibility("hidden"))); /* the setup has run */
void watchdog_setup_once(void);
static inline void watchdog_setup(void)
{
	if (__builtin_expect(!atomic_load_explicit(&watchdog_ready,
						   memory_order_acquire), 0))
		watchdog_setup_once();
}

/* Starts the thread if it is not running in this process; t (or NULL)
 * is the thread whose request made it start: it gets its entry in the
 * table a master shares (share.h), which the process claims here. */
extern _Atomic int watchdog_running; /* 0: no thread in this process */
void watchdog_start(struct sd_thread *t);

/* A thread of C code has no Python thread state: after this many requests
 * without one, it is looked for no more (a capture still finds one by the
 * thread's id, and the signal handler asks on the thread itself). */
#define WATCHDOG_TSTATE_TRIES 16
void watchdog_learn_tstate(struct sd_thread *t);

/*
 * An entry point saw a request begin on thread t (a read on an idle
 * connection, or slowdog_begin): the watchdog must run in this process,
 * and t's Python thread state is learned once, on t itself.
 */
static inline void watchdog_began(struct sd_thread *t)
{
	if (__builtin_expect(!atomic_load_explicit(&watchdog_running,
						   memory_order_acquire), 0))
		watchdog_start(t);
	if (t && !atomic_load_explicit(&t->tstate, memory_order_relaxed) &&
	    t->tstate_misses < WATCHDOG_TSTATE_TRIES)
		watchdog_learn_tstate(t);
}

/* Child after fork. */
void watchdog_atfork_child(void);
