/*
 * Last words: a worker that a deadly signal reaches while it serves a
 * request leaves a report of that request before it dies.
 *
 * Once armed (at the process's first connection), slowdog's handler sits
 * in front of the application's for the catchable deadly signals (SIGABRT,
 * SIGTERM, SIGINT, SIGQUIT) and the crashes (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL). The application still sees its own: sigaction and signal
 * answer with what it installed (its handler, flags and mask), and its
 * handler runs after ours, with the same arguments. SIG_IGN is never
 * wrapped; SIG_DFL is, and its default action is carried out as the
 * kernel would have (the same signal, so the same status and core).
 *
 * The handler (async-signal-safe) records the first such signal (which,
 * from whom, when), snapshots its own thread when it serves a request,
 * rings the watchdog and waits, bounded, until the watchdog has written
 * the reports; then it hands over to the application's handler.
 */
#pragma once

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capture_sig.h"

/* Everything declared here lives in libslowdog.so itself: reached
 * without the GOT. */
#pragma GCC visibility push(hidden)

enum lastwords_state {
	LW_NONE = 0,  /* no deadly signal yet */
	LW_TAKING,    /* a handler is filling the event */
	LW_PENDING,   /* for the watchdog to write */
	LW_DONE,      /* written (or given up): handlers go on at once */
};

struct lastwords_event {
	_Atomic uint32_t state; /* enum lastwords_state; a futex word */
	int sig;
	pid_t from;            /* si_pid */
	int code;              /* si_code */
	uintptr_t addr;        /* si_addr of a fault */
	int64_t at_ns;         /* CLOCK_MONOTONIC */
	pid_t tid;             /* the thread that took it */
	uint64_t req_id;       /* its request when it snapshotted itself */
	bool snapped;          /* lastwords_slot holds its stack */
	bool all;              /* every request in flight gets words (ABRT,
	                          crashes), not only those past the threshold */
};

extern struct lastwords_event lastwords_event;
extern struct capture_slot lastwords_slot; /* buffers: the watchdog's */

/* Whether sig is one of the signals slowdog wraps. */
bool lastwords_watched(int sig);

/* Once per process at its first connection: puts slowdog's handler in
 * front of the current ones. wait_ns bounds the handler's wait (0: no
 * last words at all), threshold_ns says which requests get words on a
 * graceful signal. */
void lastwords_arm(int64_t wait_ns, int64_t threshold_ns);
bool lastwords_armed(void);

/* The interposed sigaction and signal, for a watched signal once armed. */
int lastwords_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
sighandler_t lastwords_signal(int sig, sighandler_t handler);

/* Watchdog: the words are written; handlers waiting go on. */
void lastwords_finish(void);

/* Child after fork: a new process, no event yet. */
void lastwords_atfork_child(void);

#pragma GCC visibility pop
