/*
 * The async-signal-safe half of capture: the one capture slot, the signal
 * handler that fills it, the restart of a system call the signal cut
 * short, and the setup of the signal. Everything here that a handler may
 * reach is marked async-signal-safe. The watchdog's half (capture.c)
 * sends the signal and reads the slot.
 */
#pragma once

#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <ucontext.h>

#include "config.h"
#include "python.h"

/* Everything declared here lives in libslowdog.so itself: reached
 * without the GOT. */
#pragma GCC visibility push(hidden)

#define SNAP_MAX (512 * 1024) /* stack bytes copied at most */

enum slot_state { SLOT_IDLE, SLOT_PENDING, SLOT_BUSY, SLOT_DONE, SLOT_CANCELLED };

/*
 * The one capture slot: the watchdog captures one thread at a time.
 * State machine: the watchdog moves IDLE -> PENDING and sends the signal;
 * the handler moves PENDING -> BUSY -> DONE; the watchdog, on timeout,
 * moves PENDING -> CANCELLED, so a late (stale) delivery finds nothing to
 * do, and a handler that already went BUSY is waited for. The buffers are
 * the watchdog's (capture_thread_init), written by the handler only
 * between PENDING and DONE.
 */
struct capture_slot {
	_Atomic int state;
	_Atomic int seq;
	pid_t tid;
	sem_t done;
	greg_t gregs[NGREG];
	uintptr_t stack_addr;
	size_t stack_len;
	uint8_t *stack;            /* SNAP_MAX bytes */
	struct py_frame *py;       /* max_frames */
	struct py_record *rec;     /* max_frames: the handler's walk */
	int py_max;
	struct py_walk_info pyinfo;
	bool py_walked;
	int64_t pause_ns;
};
extern struct capture_slot capture_slot;

struct sd_thread;

/* async-signal-safe: copies the interrupted registers (ucontext_t *uc),
 * the live stack (bounded) and the records of the Python frames of t, the
 * calling thread, into s, whose buffers must be there. */
void capture_snap(struct capture_slot *s, struct sd_thread *t, const void *uc);

/* At the first connection of the process (any thread): picks and installs
 * the signal. Messages go through warn. */
void capture_setup(const struct config *cfg, void (*warn)(const char *line));

/* The signal in use, 0 if none. async-signal-safe. */
int capture_signal_number(void);

/* The process that installed the signal handler. */
pid_t capture_signal_owner(void);

/* The application installs its own handler on our signal: stop using it. */
void capture_signal_taken(void);

/* Child after fork: the handler is inherited; the slot starts afresh. */
void capture_sig_atfork_child(void);

#pragma GCC visibility pop
