/*
 * Taking a thread's stack while it serves a request.
 *
 * Blocked path: a thread inside an interposed call (recv, poll, sleep, ...)
 * is captured with no signal: the watchdog copies its stack from where the
 * call's caller resumes, using the record the entry stub left, and keeps
 * the copy only if the thread stayed inside the call meanwhile.
 *
 * Syscall path: a thread asleep in any other system call (a futex: the
 * GIL, a lock) is captured with no signal either, from the stack and
 * instruction pointers /proc gives for it.
 *
 * Signal path: any other thread gets slowdog's real-time signal. The
 * handler copies the interrupted registers and the live stack (bounded)
 * into a preallocated slot and records which code object each Python frame
 * runs and where, nothing else: no unwinding, no names, no lock, no
 * allocation. The watchdog reads the names and unwinds the copy later.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "python.h"

struct sd_thread;

#define NATIVE_MAX 256 /* native frames shown at most */

enum capture_mode {
	CAPTURE_NONE = 0,
	CAPTURE_BLOCKED, /* no signal: blocked inside an interposed call */
	CAPTURE_SIGNAL,  /* snapshot taken by the signal handler */
	CAPTURE_SYSCALL, /* no signal: asleep in a system call slowdog does not
	                    interpose; call_fn is the system call number */
	CAPTURE_FAILED,
	CAPTURE_HANDLER, /* snapshot taken by slowdog's handler of a deadly
	                    signal, on the thread itself */
	CAPTURE_SUSPENDED, /* not a thread's stack: the Python frames of a
	                      suspended greenlet or coroutine (why says which,
	                      or why there are none) */
};

struct capture {
	int mode;
	char why[128];       /* CAPTURE_FAILED, or notes */
	int call_fn;         /* CAPTURE_BLOCKED: enum call_fn */
	int nip;
	bool native_truncated;
	uintptr_t ip[NATIVE_MAX];
	struct py_frame *py; /* capture_setup's buffer: valid until next capture */
	struct py_walk_info pyinfo;
	bool py_walked;      /* a Python walk was attempted */
	int64_t pause_ns;    /* signal path: how long the handler ran */
};

struct capture_slot;

/* Buffers for a slot (capture_sig.h), max_frames Python frames. */
bool capture_slot_alloc(struct capture_slot *s, int max_frames);

/* Watchdog: unwinds and names what a handler left in slot (DONE), into
 * out (mode CAPTURE_HANDLER); the slot is IDLE again. */
void capture_from_slot(struct capture_slot *slot, struct capture *out);

/* Watchdog thread, once: buffers, unwinder. */
bool capture_thread_init(const struct config *cfg);

/* Watchdog thread: captures t. Returns false with out->why set on failure. */
bool capture_thread(struct sd_thread *t, struct capture *out);

/*
 * Watchdog: the Python frames of greenlet glet (0: unknown) of thread t,
 * which is not running (suspended in its loop), into out as
 * CAPTURE_SUSPENDED; out->why says whose frames they are, or why there
 * are none.
 */
void capture_suspended(struct sd_thread *t, uintptr_t glet, struct capture *out);

/* Watchdog: the buffer of frames captures fill (capture_thread_init). */
struct py_frame *capture_py_buffer(void);

/* Watchdog, idle: gives the pages of the capture buffers back to the
 * system (they are zero when next touched). */
void capture_release(void);

/* Child after fork: the slot starts afresh (capture_sig.c). */
void capture_atfork_child(void);
