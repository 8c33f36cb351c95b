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
 * (warning on bad values) and prepares capture. Cheap after the first call. */
void watchdog_setup(void);

/* Starts the thread if it is not running in this process. */
extern _Atomic int watchdog_running; /* 0: no thread in this process */
void watchdog_start(void);
static inline void watchdog_ensure(void)
{
	if (__builtin_expect(!atomic_load_explicit(&watchdog_running,
						   memory_order_acquire), 0))
		watchdog_start();
}

/*
 * An entry point saw a request begin on thread t (a read on an idle
 * connection, or slowdog_begin): the watchdog must run in this process,
 * and t's Python thread state is learned once, on t itself.
 */
void watchdog_learn_share(struct sd_thread *t);
static inline void watchdog_began(struct sd_thread *t)
{
	watchdog_ensure();
	if (!t)
		return;
	if (!atomic_load_explicit(&t->tstate, memory_order_relaxed))
		atomic_store_explicit(&t->tstate, py_tstate_self(), memory_order_relaxed);
	if (__builtin_expect(!t->share && share_mine, 0))
		watchdog_learn_share(t);
}

/* Child after fork. */
void watchdog_atfork_child(void);
