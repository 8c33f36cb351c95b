/* The signal half of capture. See capture_sig.h. */
#include "capture_sig.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "mem.h"
#include "real.h"
#include "sys.h"
#include "thread.h"

#define RED_ZONE 128

static _Atomic int sig_num;  /* 0: no signal captures */
static _Atomic bool sig_lost_said;
static pid_t sig_owner;

pid_t capture_signal_owner(void)
{
	return sig_owner;
}

struct capture_slot capture_slot;

int capture_signal_number(void)
{
	return atomic_load_explicit(&sig_num, memory_order_relaxed);
}

void capture_signal_taken(void)
{
	int s = atomic_exchange(&sig_num, 0);
	thread_keep_signal = 0;
	if (s > 0 && !atomic_exchange(&sig_lost_said, true))
		sys_warnf("slowdog: the application installed its own handler "
			  "for signal %d; capturing running threads is off", s);
}

/* async-signal-safe: whether a system call nr that a signal interrupted
 * (registers g) can be made again to the same effect: a wait until an
 * absolute time, until woken, or one whose time left the kernel wrote
 * back. A relative timeout it did not write back cannot be resumed. */
static bool restartable(uint32_t nr, const greg_t *g)
{
	switch (nr) {
	case SYS_futex: {
		int op = (int)g[REG_RSI] & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
		if (op == FUTEX_WAIT_BITSET)
			return true; /* sem_timedwait, pthread_cond_timedwait */
		return op == FUTEX_WAIT && g[REG_R10] == 0;
	}
	case SYS_clock_nanosleep:
		return (g[REG_RSI] & TIMER_ABSTIME) != 0;
	case SYS_poll:
		return (int)g[REG_RDX] < 0; /* no timeout */
	case SYS_epoll_wait:
		return (int)g[REG_R10] < 0;
	case SYS_pselect6: /* select(3) too */
	case SYS_ppoll:
		return true; /* the kernel wrote back the time left */
	default:
		return false;
	}
}

/*
 * async-signal-safe. A blocking system call with a timeout that our signal
 * interrupts returns EINTR, SA_RESTART or not, and code that calls libc
 * past slowdog's interposition (a library's own handle on libc) may not
 * retry. The thread can have entered such a call between the watchdog's
 * last look and the signal. When the interrupted instruction is glibc's
 * "mov $nr, %eax; syscall" and the call is restartable, the thread resumes
 * at the syscall instruction with nr again: it never sees the EINTR.
 */
static void restart_interrupted(ucontext_t *uc)
{
	greg_t *g = uc->uc_mcontext.gregs;
	if (g[REG_RAX] != -EINTR)
		return;
	uintptr_t pc = (uintptr_t)g[REG_RIP];
	unsigned char code[7];
	if (pc < sizeof(code) || !mem_read_mapped(code, pc - sizeof(code), sizeof(code)) ||
	    code[0] != 0xb8 || code[5] != 0x0f || code[6] != 0x05)
		return;
	uint32_t nr;
	memcpy(&nr, code + 1, sizeof(nr));
	if (!restartable(nr, g))
		return;
	g[REG_RIP] = (greg_t)(pc - 2);
	g[REG_RAX] = (greg_t)nr;
}

/* async-signal-safe: copies the interrupted registers, the live stack
 * (bounded) and the Python frames' records of t, interrupted at uc, into
 * slot s (its buffers must be there). */
void capture_snap(struct capture_slot *s, struct sd_thread *t, const void *ucv)
{
	int64_t t0 = clock_mono_ns();
	const ucontext_t *uc = ucv;
	memcpy(s->gregs, uc->uc_mcontext.gregs, sizeof(s->gregs));

	uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
	uintptr_t lo, hi;
	if (sp >= t->stack_lo && sp < t->stack_hi) {
		lo = t->stack_lo;
		hi = t->stack_hi;
	} else if (!mem_mapping_of(sp, &lo, &hi)) {
		lo = hi = sp;
	}
	uintptr_t from = sp - RED_ZONE < lo || sp < RED_ZONE ? lo : sp - RED_ZONE;
	size_t len = hi > from ? hi - from : 0;
	if (len > SNAP_MAX)
		len = SNAP_MAX;
	if (len)
		mem_copy_raw(s->stack, (const void *)from, len);
	s->stack_addr = from;
	s->stack_len = len;

	s->py_walked = false;
	s->pyinfo.n = 0;
	uintptr_t self = py_tstate_self_fast();
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	if (!ts)
		ts = self;
	if (ts) {
		/* The thread's current thread state is alive; one cached
		 * from an earlier request may not be. */
		py_walk_known(from, s->stack, len, ts == self ? ts : 0);
		py_walk_records(ts, s->rec, s->py_max, &s->pyinfo);
		py_walk_known(0, NULL, 0, 0);
		s->py_walked = true;
	}
	s->pause_ns = clock_mono_ns() - t0;
}

/* async-signal-safe */
static void handler(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	int saved = errno;
	struct sd_thread *t = thread_self();
	int expect = SLOT_PENDING;
	if (!t || si->si_code != SI_QUEUE ||
	    si->si_value.sival_int != atomic_load(&capture_slot.seq) ||
	    capture_slot.tid != t->tid ||
	    !atomic_compare_exchange_strong(&capture_slot.state, &expect, SLOT_BUSY))
		goto out;

	atomic_fetch_add_explicit(&t->intr, 1, memory_order_relaxed);
	capture_snap(&capture_slot, t, ucv);
	atomic_store_explicit(&capture_slot.state, SLOT_DONE, memory_order_release);
	sem_post(&capture_slot.done);
	/* The watchdog now has the rest of the work. When it shares this CPU
	 * (a busy machine, or a worker pinned to one core), the scheduler may
	 * let this thread finish its time slice first: up to a few ms more
	 * before the report. Giving the CPU up now costs the thread nothing it
	 * would not lose a moment later. */
	sched_yield();
out:
	/* Also for a late or stray delivery of the signal. */
	restart_interrupted(ucv);
	errno = saved;
}

static bool sig_free(int s)
{
	struct sigaction old;
	if (real_sigaction(s, NULL, &old) != 0)
		return false;
	return !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL;
}

void capture_setup(const struct config *cfg, void (*warn)(const char *line))
{
	char line[200];
	int want = cfg->signal;
	if (want < 0)
		return; /* SLOWDOG_SIGNAL=off */
	int first = want > 0 ? want : SIGRTMIN + 3;
	int chosen = 0;
	for (int s = first; s <= SIGRTMAX; s++) {
		if (sig_free(s)) {
			chosen = s;
			break;
		}
	}
	if (!chosen) {
		snprintf(line, sizeof(line),
			 "slowdog: no free real-time signal from %d up; capturing "
			 "running threads is off", first);
		warn(line);
		return;
	}
	if (want > 0 && chosen != want) {
		snprintf(line, sizeof(line),
			 "slowdog: SLOWDOG_SIGNAL=%d is taken by the application; "
			 "using %d", want, chosen);
		warn(line);
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigfillset(&sa.sa_mask); /* nothing nests inside the copy */
	if (real_sigaction(chosen, &sa, NULL) != 0) {
		snprintf(line, sizeof(line),
			 "slowdog: cannot install a handler for signal %d (%s); "
			 "capturing running threads is off", chosen, strerror(errno));
		warn(line);
		return;
	}
	thread_keep_signal = chosen;
	sig_owner = getpid();
	atomic_store(&sig_num, chosen);
}

void capture_sig_atfork_child(void)
{
	if (sig_owner)
		sig_owner = getpid();
	atomic_store(&capture_slot.state, SLOT_IDLE);
	sem_init(&capture_slot.done, 0, 0);
}
