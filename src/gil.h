/*
 * Who holds the GIL: for a thread asleep waiting for the GIL, the thread
 * that holds it, what it serves and where its Python code is.
 *
 * A thread waits for the GIL when it sleeps in a futex on the GIL's own
 * condition variable or mutex (from /proc, with no signal and no symbol:
 * a stripped interpreter is read the same). The GIL's locked and
 * last_holder fields name the holder's thread state, whose thread ids lead
 * to slowdog's record of it. The GIL is read before and after: if it
 * changed hands meanwhile, the holder is "unknown", never a wrong one.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "python.h"
#include "reqinfo.h"

struct sd_thread;

#define GIL_PY_MAX 5 /* the holder's innermost Python frames shown */

struct gil_wait {
	/* NULL when the holder is known; else why not ("the GIL changed
	 * hands during the capture", ...). */
	const char *unknown;
	pid_t tid;               /* the holder's kernel thread id, 0 unknown */
	char name[64];           /* its name (comm), name_len bytes, raw */
	int name_len;
	bool main;               /* the process's main thread */
	bool loop;               /* an event loop's thread: serves many */
	bool serving;            /* serves a request (below) */
	uint64_t req_id;
	bool have_info;          /* info is the request's */
	struct reqinfo info;
	char label[256];         /* explicit work (slowdog_begin), or "" */
	int64_t running_ns;
	/* Its innermost Python frames, innermost first: py[0..npy). */
	int npy;
	int py_total;            /* frames in its chain */
	bool py_damaged;
	bool py_read;            /* a walk was made */
	struct py_frame py[GIL_PY_MAX];
};

struct capture;

/* Watchdog, after t was captured into cap: true if t waits for the GIL,
 * with *g filled (the holder, or why it is unknown). */
bool gil_check(struct sd_thread *t, const struct capture *cap, struct gil_wait *g);
