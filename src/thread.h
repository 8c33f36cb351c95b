/*
 * The threads slowdog tracks: one record per thread that has served a
 * request, in a fixed process-wide array that is never freed, so the
 * watchdog can read any record at any time without a lock.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "share.h"

/* Everything declared here lives in libslowdog.so itself: reached
 * without the GOT. */
#pragma GCC visibility push(hidden)

/* What the interposer's entry stub records: where the caller resumes. */
struct call_regs {
	uint64_t rbx, rbp, r12, r13, r14, r15;
	uint64_t cfa; /* the caller's stack pointer after the call returns */
	uint64_t ret; /* the return address, at cfa - 8 */
};

#define THREADS_MAX 4096

struct sd_thread {
	/* Written once at registration, before state becomes LIVE (release). */
	_Atomic uint32_t state; /* THREAD_FREE, THREAD_LIVE */
	pid_t tid;
	unsigned long pthread; /* pthread_self() */
	uintptr_t stack_lo, stack_hi;

	/*
	 * Blocked-call record, a seqlock: the owner writes regs, then makes
	 * call_seq odd (release) when it enters an interposed call, and even
	 * when it leaves. The watchdog copies regs and stack while call_seq is
	 * odd and keeps the copy only if call_seq did not change meanwhile.
	 */
	_Atomic uint32_t call_seq;
	uint32_t call_depth;     /* owner only: nesting (a handler's calls) */
	uint16_t call_fn;        /* enum call_fn of the outermost call */
	struct call_regs regs;

	/* Python thread state of this thread, 0 if unknown. Owner writes. */
	_Atomic uintptr_t tstate;

	/*
	 * Current request. The owner fills the fields, then publishes req_id
	 * (release); it clears req_id (release) when the request ends. The
	 * watchdog reads req_id (acquire) first, then the fields, then req_id
	 * again.
	 */
	_Atomic uint64_t req_id; /* 0: no request */
	uint64_t req_next, req_end; /* owner only: ids [req_next, req_end)
	                               are this thread's to give out */
	int fd;
	uint32_t conn_gen;
	int64_t req_start_ns;    /* CLOCK_MONOTONIC */
	bool mux;                /* serves many connections at once (an event
	                            loop): its requests are tracked on their
	                            connections (conn.h), not here */
	uint8_t tstate_misses;   /* owner only: requests begun while tstate
	                            was not found (a thread of C code) */
	struct share_req *share; /* this thread's entry in the table the master
	                            reads when the worker dies, or NULL; the
	                            owner stores req_id/start_ns there too */

	/*
	 * Event loop. A mux thread that waits in an epoll set holding
	 * connections or a listener is a loop thread: loop is set and
	 * loop_epfd is that set (owner writes); one that waits in poll or
	 * select on a listener or connections (conn_poll_wait) is one with
	 * loop_epfd -1, each such wait its loop's. Around each wait in it the
	 * owner stores in_loop_wait = 1 (release) before, and after it
	 * loop_left_ns, then in_loop_wait = 0 (release); the watchdog reads
	 * in_loop_wait (acquire), then loop_left_ns.
	 * stall_at: the watchdog stores the loop_left_ns of a stall it
	 * reported; whoever exchanges it with 0 first writes the stall's end:
	 * the owner entering its wait stores stall_end_ns, then stall_done =
	 * that value (release), and rings.
	 */
	bool loop;
	int loop_epfd;
	int last_epfd;           /* owner: the epoll set of its last wait, -1 */
	_Atomic uint32_t in_loop_wait;
	_Atomic int64_t loop_left_ns; /* coarse clock */
	_Atomic int64_t stall_at;
	int64_t stall_end_ns;
	_Atomic int64_t stall_done;

	/* Written by the watchdog: the id of the request it has reported. */
	_Atomic uint64_t reported_id;

	/*
	 * Completion of a reported request, for the "finished" line: the owner
	 * stores done_ns then done_id (release) and wakes the watchdog; the
	 * watchdog takes it by exchanging done_id with 0.
	 */
	int64_t done_ns;
	_Atomic uint64_t done_id;

	/* Bumped by the signal handler each time it runs on this thread, so an
	 * interposed call can tell an EINTR that slowdog caused. */
	_Atomic uint32_t intr;

	/* Last, away from the fields every request touches. */
	char label[256];         /* fd == -1: explicit work (slowdog_begin), escaped */
};

enum {
	THREAD_FREE = 0,
	THREAD_LIVE = 1,
	THREAD_CLAIMED = 2, /* being filled by thread_get */
	THREAD_EXITED = 3,  /* gone, its finished line not written yet */
};

extern struct sd_thread thread_table[THREADS_MAX];
extern _Atomic int thread_high; /* records [0, thread_high) may be in use */

/* The calling thread's record, NULL if it has none. The interposer's entry
 * stubs read it too, and write regs when call_depth is 0 (or when the call
 * it counts is gone, left by a longjmp), at these offsets (checked in
 * thread.c). */
extern __thread struct sd_thread *sd_tls_self
	__attribute__((tls_model("initial-exec"), visibility("hidden")));
#define SD_THREAD_STACK_LO_OFF 16 /* offsetof(struct sd_thread, stack_lo) */
#define SD_THREAD_STACK_HI_OFF 24 /* offsetof(struct sd_thread, stack_hi) */
#define SD_THREAD_SEQ_OFF 32   /* offsetof(struct sd_thread, call_seq) */
#define SD_THREAD_DEPTH_OFF 36 /* offsetof(struct sd_thread, call_depth) */
#define SD_THREAD_REGS_OFF 48  /* offsetof(struct sd_thread, regs) */
#define SD_REGS_CFA_OFF 48     /* offsetof(struct call_regs, cfa) */
#define SD_REGS_RET_OFF 56     /* offsetof(struct call_regs, ret) */

/* async-signal-safe */
static inline struct sd_thread *thread_self(void)
{
	return sd_tls_self;
}

/* thread_get's first use in a thread. */
struct sd_thread *thread_register(void);

/* The calling thread's record, registering it on first use; NULL when the
 * table is full or the thread is one of slowdog's own. */
static inline struct sd_thread *thread_get(void)
{
	struct sd_thread *t = sd_tls_self;
	return t ? t : thread_register();
}

/* Takes n request ids in a row from the process's count (from 1): the
 * first. One locked instruction. */
uint64_t thread_take_ids(uint64_t n);

/*
 * A new request id for a request t serves: unique in the process. A thread
 * takes ids THREAD_ID_BLOCK at a time, so the locked instruction comes once
 * in that many requests; a worker that serves one request at a time
 * numbers its requests 1, 2, 3...
 */
#define THREAD_ID_BLOCK 64
static inline uint64_t thread_next_id(struct sd_thread *t)
{
	if (__builtin_expect(t->req_next == t->req_end, 0)) {
		t->req_next = thread_take_ids(THREAD_ID_BLOCK);
		t->req_end = t->req_next + THREAD_ID_BLOCK;
	}
	return t->req_next++;
}

/* The owner publishes its request in the shared table too: two stores at
 * its start, one at its end. */
static inline void thread_share_begin(struct sd_thread *t, uint64_t id, int64_t now)
{
	struct share_req *sh = t->share;
	if (sh) {
		sh->start_ns = now;
		atomic_store_explicit(&sh->req_id, id, memory_order_release);
	}
}
static inline void thread_share_end(struct sd_thread *t)
{
	if (t->share)
		atomic_store_explicit(&t->share->req_id, 0, memory_order_relaxed);
}

/* Marks the calling thread as slowdog's own: never tracked. */
void thread_mark_internal(void);

/* Called in the child after fork: forgets every thread but the caller. */
void thread_atfork_child(void);

/*
 * The doorbell between the threads that serve requests and the watchdog.
 * A request starting needs no ring: its deadline lies at or after the one
 * the watchdog sleeps until. A request the watchdog reported that ends
 * does (its "finished" line is due): thread_ring, one futex wake. The
 * watchdog takes thread_bell_seen() before it looks at the records, and
 * thread_bell_wait returns at once if a ring came since.
 */
extern _Atomic uint32_t *thread_bell;
void thread_ring(void);
static inline uint32_t thread_bell_seen(void)
{
	return atomic_load_explicit(thread_bell, memory_order_acquire);
}
/* The bell becomes the process's word in the shared table (share.h), so
 * that the master can ring it too. */
void thread_bell_share(_Atomic uint32_t *word);
/* Until rung after seen, or until deadline_ns (CLOCK_MONOTONIC). */
void thread_bell_wait(uint32_t seen, int64_t deadline_ns);

/* Set by capture_sig.c: a real-time signal that registered threads keep
 * unblocked (0: none). */
extern int thread_keep_signal;

#pragma GCC visibility pop
