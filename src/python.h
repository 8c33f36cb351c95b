/*
 * Python frames without the GIL: a walker of slowdog's own over CPython's
 * frame chain, for CPython 3.8 to 3.15 (per-version offset tables for
 * 3.8-3.12, _PyRuntime.debug_offsets for 3.13 and later, checked against
 * the running interpreter; a newer release whose debug offsets keep the
 * layout of the newest known one and pass the same checks is read too).
 *
 * Every read goes through a mem_reader, so the walk never faults; every
 * object is type-checked before use; the walk is bounded.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mem.h"

#define PY_FILE_MAX 256
#define PY_FUNC_MAX 128

enum py_frame_flags {
	/* The outermost Python frame run by one invocation of the interpreter's
	 * eval loop (_PyEval_EvalFrameDefault). On 3.8-3.10 every frame has it;
	 * on 3.11+ it marks where one native eval frame's group of Python frames
	 * ends (walking from the innermost frame outwards). */
	PY_FRAME_ENTRY = 1,
	/* Not a frame: a line between frames (func holds its text), such as
	 * where an asyncio chain goes on into another task (aio.c). */
	PY_FRAME_NOTE = 2,
};

struct py_frame {
	uintptr_t code;  /* address of the PyCodeObject */
	int32_t addr;    /* byte offset of the current instruction in the code's
	                    bytecode, -1 if unknown */
	int32_t line;    /* source line; 0 until py_resolve_lines, then 0 = unknown */
	uint32_t flags;  /* enum py_frame_flags */
	char file[PY_FILE_MAX]; /* co_filename as UTF-8, NUL-terminated, may be cut */
	char func[PY_FUNC_MAX]; /* co_name as UTF-8 */
};

struct py_walk_info {
	int n;        /* frames stored in out[] */
	int total;    /* frames in the chain (bounded by PY_WALK_LIMIT) */
	int head;     /* out[0..head) are the innermost frames in order, out[head..n)
	                 the outermost ones in order; total - n frames between them
	                 were left out (when total > max) */
	bool damaged; /* the chain ended on something invalid: the stack shown is
	                 a prefix (innermost side) and the report says so */
	/* py_walk_records: the code objects are left for py_read_names to
	 * check (see walk in python.c); pending is where its check of the
	 * innermost group's entry waits, -1 if it does not. */
	bool codes_left;
	int pending;
};

#define PY_WALK_LIMIT 100000 /* frames followed at most in one chain */

/*
 * Watchdog (or constructor) context: finds the interpreter in this process
 * (dlsym, also in a libpython loaded without RTLD_GLOBAL), its version and
 * the layout to use. Idempotent and cheap after the first success; retried
 * when no interpreter was found yet. Returns true when frames can be walked.
 */
bool py_init(void);

/* True once py_init found a CPython in the process (supported or not). */
bool py_present(void);

/* The address of one of CPython's symbols, looked up where py_init found
 * the interpreter (a libpython loaded RTLD_LOCAL too); 0 if none. */
uintptr_t py_symbol(const char *name);

/* NULL when frames are available; otherwise a line for the report, such as
 * "Python frames unavailable: CPython 3.7" or "... CPython 3.14.1
 * (free-threaded build: its frames are not read)". NULL too when no Python
 * (or none initialised yet). */
const char *py_unavailable(void);

/* NULL, or for a release newer than slowdog knows whose frames are read
 * all the same, a line for the report saying so. */
const char *py_untested(void);

/* "3.11.7" etc., "" before py_init found one. */
const char *py_version_string(void);

/* async-signal-safe: PyGILState_GetThisThreadState() of the calling thread,
 * 0 if there is none or py_init has not run. */
uintptr_t py_tstate_self(void);

/* async-signal-safe: the same, read straight from the pthread key CPython
 * keeps it under once py_tstate_self has found that key (in a signal
 * handler, libpython's code is far from the caches of a running thread). */
uintptr_t py_tstate_self_fast(void);

/* The key py_tstate_self_fast reads, or < 0 (for tests). */
int py_tstate_key(void);

/* Watchdog: the thread state of the thread with this kernel tid and
 * pthread_self() value, found in the interpreters' thread lists; 0 if none. */
uintptr_t py_tstate_find(mem_reader rd, pid_t tid, unsigned long pthread_id);

/*
 * async-signal-safe given an async-signal-safe reader. Walks the frames of
 * tstate from the innermost outwards into out[0..max), keeping both ends
 * when the chain is longer than max (see py_walk_info). Fills code, addr,
 * flags, file and func; line stays 0. Returns info->n.
 */
int py_walk(mem_reader rd, uintptr_t tstate, struct py_frame *out, int max,
	    struct py_walk_info *info);

/*
 * Watchdog: walks a chain no thread runs (a suspended greenlet's), from
 * frame: a _PyInterpreterFrame on 3.11+, a PyFrameObject before. Every
 * read fault tolerant, as py_walk; the chain ends at NULL. Returns info->n.
 */
int py_walk_suspended(uintptr_t frame, struct py_frame *out, int max,
		      struct py_walk_info *info);

/* Watchdog: the innermost frame of a running thread (fault-tolerant
 * reads: it may change under the reader), 0 if none. */
uintptr_t py_current_frame(uintptr_t tstate);

/* Watchdog: PyFrame_Type's address and the offset of PyFrameObject's
 * f_frame (-1 before 3.11, where frame objects are the chain); false when
 * frames cannot be walked. */
bool py_frame_layout(uintptr_t *frame_type, int *f_frame);

/* What a walk records of a frame; py_read_names makes a py_frame of it. */
struct py_record {
	uintptr_t code;
	int32_t addr;
	uint32_t flags;
};

/*
 * Signal handler: py_walk(mem_read_mapped, ...) doing the least a handler
 * must: code, addr and flags, 16 bytes a frame, into rec[0..max). The
 * watchdog turns them into frames with py_read_names, which on 3.11+ also
 * reads the code objects the handler did not (they live as long as the
 * names it reads from them).
 */
int py_walk_records(uintptr_t tstate, struct py_record *rec, int max,
		    struct py_walk_info *info);

/*
 * Signal handler, before py_walk_records or py_walk(mem_read_mapped, ...):
 * what it already
 * holds, so the walk reads it without a system call: a copy of len bytes of
 * the thread's stack taken at stack_addr while the thread is stopped, and
 * the thread's own current thread state (0: none). py_walk_known(0, NULL,
 * 0, 0) afterwards. async-signal-safe.
 */
void py_walk_known(uintptr_t stack_addr, const void *stack, size_t len,
		   uintptr_t tstate);

/* Watchdog, after py_walk_records: out[0..info->n) from rec (which it
 * may compact first: frames the code objects show were not complete), with
 * file and func read with fault-tolerant reads; a code object gone
 * meanwhile marks the walk damaged. */
void py_read_names(struct py_record *rec, struct py_frame *out,
		   struct py_walk_info *info);

/* Watchdog: fills f[i].line from each code object's line table. */
void py_resolve_lines(mem_reader rd, struct py_frame *f, int n);

/* Watchdog: true if the native symbol name is an eval-loop function whose
 * frames stand for Python frames in a merged stack (_PyEval_EvalFrameDefault,
 * and on 3.8-3.10 also what calls it per Python frame if needed). */
bool py_is_eval_symbol(const char *name);

/* The GIL (struct _gil_runtime_state) as read once. */
struct py_gil {
	uintptr_t addr;    /* where it lies */
	int32_t locked;    /* 1: held, 0: free, -1: not created yet */
	uintptr_t holder;  /* last_holder: the thread state that took it last */
	uint64_t switches; /* switch_number: bumped when the holder changes */
};

/* Watchdog: NULL when the GIL can be read on this interpreter; otherwise
 * why not. */
const char *py_gil_unavailable(void);

/* Watchdog: true if futex address uaddr lies in the condition variable or
 * the mutex of a GIL in use (a thread asleep on it waits for that GIL),
 * with *g read. Fault-tolerant reads, every value checked. */
bool py_gil_waited(uintptr_t uaddr, struct py_gil *g);

/* Watchdog: reads the GIL at addr again; false if it reads as nonsense. */
bool py_gil_read(uintptr_t addr, struct py_gil *g);

/* Watchdog: true if ts is in an interpreter's list of thread states, with
 * its pthread_self() value and (3.11+, else 0) its kernel thread id. */
bool py_tstate_ids(uintptr_t ts, pid_t *tid, unsigned long *pthread_id);

/* Watchdog: true if a GIL in use is held by thread state ts. */
bool py_gil_held_by(uintptr_t ts);
