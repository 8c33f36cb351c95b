/* Thread registry. See thread.h. */
#include "thread.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "real.h"

struct sd_thread thread_table[THREADS_MAX];
static _Atomic uint32_t bell_private;
_Atomic uint32_t *thread_bell = &bell_private;
static int bell_flags = FUTEX_PRIVATE_FLAG; /* 0 once shared */
_Atomic int thread_high;
int thread_keep_signal;

/* Initial-exec TLS: safe to read in a signal handler, no lazy allocation. */
__thread struct sd_thread *sd_tls_self;

_Static_assert(offsetof(struct sd_thread, call_seq) == SD_THREAD_SEQ_OFF,
	       "the entry stubs' offset of call_seq");
_Static_assert(offsetof(struct sd_thread, call_depth) == SD_THREAD_DEPTH_OFF,
	       "the entry stubs' offset of call_depth");
_Static_assert(offsetof(struct sd_thread, regs) == SD_THREAD_REGS_OFF,
	       "the entry stubs' offset of regs");
_Static_assert(offsetof(struct sd_thread, stack_lo) == SD_THREAD_STACK_LO_OFF &&
	       offsetof(struct sd_thread, stack_hi) == SD_THREAD_STACK_HI_OFF,
	       "the entry stubs' offsets of the stack bounds");
_Static_assert(offsetof(struct call_regs, cfa) == SD_REGS_CFA_OFF &&
	       offsetof(struct call_regs, ret) == SD_REGS_RET_OFF,
	       "the entry stubs' offsets of cfa and ret");
static __thread bool tls_internal __attribute__((tls_model("initial-exec")));
static __thread bool tls_full __attribute__((tls_model("initial-exec")));

static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static _Atomic uint64_t id_count;

uint64_t thread_take_ids(uint64_t n)
{
	return atomic_fetch_add_explicit(&id_count, n, memory_order_relaxed) + 1;
}

void thread_mark_internal(void)
{
	tls_internal = true;
}

/* Thread exit: give the record back. The watchdog may still be reading it;
 * that is harmless, the record is never unmapped and it checks req_id. */
static void thread_exit(void *arg)
{
	struct sd_thread *t = arg;
	atomic_store_explicit(&t->req_id, 0, memory_order_release);
	atomic_store_explicit(&t->tstate, 0, memory_order_relaxed);
	/* A finished line still to be written keeps the record until the
	 * watchdog has taken it (it frees the record then). */
	atomic_store_explicit(&t->state,
			      atomic_load(&t->done_id) ? THREAD_EXITED : THREAD_FREE,
			      memory_order_release);
	/* The watchdog may have taken it just now. */
	uint32_t exited = THREAD_EXITED;
	if (!atomic_load(&t->done_id))
		atomic_compare_exchange_strong(&t->state, &exited, THREAD_FREE);
	sd_tls_self = NULL;
}

static void exit_key_create(void)
{
	pthread_key_create(&exit_key, thread_exit);
}

static void stack_bounds(struct sd_thread *t)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;
	t->stack_lo = t->stack_hi = 0;
	if (pthread_getattr_np(pthread_self(), &attr) != 0)
		return;
	if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
		t->stack_lo = (uintptr_t)addr;
		t->stack_hi = (uintptr_t)addr + size;
	}
	pthread_attr_destroy(&attr);
}

struct sd_thread *thread_register(void)
{
	if (tls_internal || tls_full)
		return NULL;

	pthread_once(&exit_key_once, exit_key_create);
	for (int i = 0; i < THREADS_MAX; i++) {
		uint32_t want = THREAD_FREE;
		struct sd_thread *c = &thread_table[i];
		if (atomic_load_explicit(&c->state, memory_order_relaxed) != THREAD_FREE)
			continue;
		/* Claim with a value the watchdog ignores until it is filled. */
		if (!atomic_compare_exchange_strong(&c->state, &want, THREAD_CLAIMED))
			continue;
		int high = atomic_load(&thread_high);
		while (high < i + 1 &&
		       !atomic_compare_exchange_weak(&thread_high, &high, i + 1))
			;
		c->tid = (pid_t)syscall(SYS_gettid);
		c->pthread = (unsigned long)pthread_self();
		stack_bounds(c);
		c->call_depth = 0;
		c->req_next = c->req_end = 0;
		c->mux = false;
		c->tstate_misses = 0;
		c->share = share_entry(i);
		c->loop = false;
		c->loop_epfd = c->last_epfd = -1;
		atomic_store(&c->in_loop_wait, 0);
		atomic_store(&c->stall_at, 0);
		atomic_store(&c->stall_done, 0);
		c->fd = -1;
		atomic_store(&c->req_id, 0);
		atomic_store(&c->reported_id, 0);
		atomic_store(&c->done_id, 0);
		atomic_store(&c->tstate, 0);
		sd_tls_self = c;
		pthread_setspecific(exit_key, c);
		if (thread_keep_signal > 0) {
			sigset_t s;
			sigemptyset(&s);
			sigaddset(&s, thread_keep_signal);
			real_pthread_sigmask(SIG_UNBLOCK, &s, NULL);
		}
		atomic_store_explicit(&c->state, THREAD_LIVE, memory_order_release);
		return c;
	}
	tls_full = true;
	return NULL;
}

void thread_atfork_child(void)
{
	thread_bell = &bell_private;
	bell_flags = FUTEX_PRIVATE_FLAG;
	atomic_store(&bell_private, 0);
	struct sd_thread *me = sd_tls_self;
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		if (t == me)
			continue;
		atomic_store(&t->req_id, 0);
		atomic_store(&t->state, THREAD_FREE);
	}
	if (me) {
		/* Same thread, new process: new tid, no request, no report. */
		me->tid = (pid_t)syscall(SYS_gettid);
		atomic_store(&me->req_id, 0);
		atomic_store(&me->reported_id, 0);
		atomic_store(&me->done_id, 0);
		me->mux = false;
		me->share = NULL;
		me->loop = false;
		me->loop_epfd = me->last_epfd = -1;
		atomic_store(&me->in_loop_wait, 0);
		atomic_store(&me->stall_at, 0);
		atomic_store(&me->stall_done, 0);
	}
}

void thread_ring(void)
{
	atomic_fetch_add_explicit(thread_bell, 1, memory_order_release);
	syscall(SYS_futex, thread_bell, FUTEX_WAKE | bell_flags, 1, NULL, NULL, 0);
}

void thread_bell_share(_Atomic uint32_t *word)
{
	bell_flags = 0;
	thread_bell = word;
}

void thread_bell_wait(uint32_t seen, int64_t deadline_ns)
{
	struct timespec ts = {
		.tv_sec = deadline_ns / NS_PER_SEC,
		.tv_nsec = deadline_ns % NS_PER_SEC,
	};
	syscall(SYS_futex, thread_bell, FUTEX_WAIT_BITSET | bell_flags, seen, &ts,
		NULL, FUTEX_BITSET_MATCH_ANY);
}
