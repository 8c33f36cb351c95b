/*
 * Which greenlet a thread runs (gevent, eventlet, uWSGI's gevent mode),
 * read without the GIL: greenlet keeps a thread_local pointer to its
 * ThreadState in the TLS block of its extension module; glibc's DTV gives
 * that block for any thread. ThreadState holds main_greenlet at +0 and
 * current_greenlet at +8 in greenlet 2 and 3 (greenlet_thread_state.hpp,
 * TThreadState.hpp). Where the pointer sits in the TLS block is found at
 * run time and checked on a live thread before the hot path reads it.
 * greenlet 1.x keeps no thread_local: current greenlets are then unknown.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The greenlet module's TLS module id once the layout was checked, else 0. */
extern _Atomic size_t glet_modid;
extern size_t glet_ts_off; /* ThreadState pointer's offset in the TLS block */

/* The calling thread's current greenlet, 0 if unknown. Plain loads of the
 * thread's own TLS: no system call, no lock. */
static inline uintptr_t glet_current_self(void)
{
	size_t m = atomic_load_explicit(&glet_modid, memory_order_relaxed);
	if (__builtin_expect(!m, 1))
		return 0;
	const uintptr_t *dtv;
	__asm__("movq %%fs:8, %0" : "=r"(dtv));
	/* dtv[-1].counter: entries allocated; 16 bytes an entry */
	if (m > dtv[-2])
		return 0;
	uintptr_t blk = dtv[2 * m];
	if (!blk || blk == (uintptr_t)-1)
		return 0;
	uintptr_t ts = *(const uintptr_t *)(blk + glet_ts_off);
	if (ts < 4096)
		return 0;
	return *(const uintptr_t *)(ts + 8);
}

/* Watchdog: the current greenlet of the thread whose pthread_self() is
 * pthread_id (fault-tolerant reads); *main gets its main greenlet. 0 if
 * unknown. */
uintptr_t glet_current_of(unsigned long pthread_id, uintptr_t *main);

/* Watchdog: finds greenlet's module and checks the layout on the thread
 * pthread_id (one that runs greenlets). True once glet_modid is set. */
bool glet_setup(unsigned long pthread_id);

/* Watchdog: whether obj is a greenlet (its type derives from the main
 * greenlet's type). */
bool glet_is_greenlet(uintptr_t obj);

/* Child after fork: nothing to forget (module ids and layouts stay). */
