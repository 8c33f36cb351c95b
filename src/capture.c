/* Stack capture: blocked path and signal path. See capture.h. */
#include "capture.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "common.h"
#include "mem.h"
#include "preload.h"
#include "thread.h"
#include "unwind.h"

#define SNAP_MAX (512 * 1024) /* stack bytes copied at most */
#define RED_ZONE 128

static _Atomic int sig_num;  /* 0: no signal captures */
static _Atomic bool sig_lost_said;
static pid_t sig_owner;

pid_t capture_signal_owner(void)
{
	return sig_owner;
}

enum slot_state { SLOT_IDLE, SLOT_PENDING, SLOT_BUSY, SLOT_DONE, SLOT_CANCELLED };

/*
 * The one capture slot: the watchdog captures one thread at a time.
 * State machine: the watchdog moves IDLE -> PENDING and sends the signal;
 * the handler moves PENDING -> BUSY -> DONE; the watchdog, on timeout,
 * moves PENDING -> CANCELLED, so a late (stale) delivery finds nothing to
 * do, and a handler that already went BUSY is waited for.
 */
static struct {
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
} slot;

int capture_signal_number(void)
{
	return atomic_load_explicit(&sig_num, memory_order_relaxed);
}

void capture_signal_taken(void)
{
	int s = atomic_exchange(&sig_num, 0);
	thread_keep_signal = 0;
	if (s > 0 && !atomic_exchange(&sig_lost_said, true)) {
		char line[160];
		int n = snprintf(line, sizeof(line),
				 "slowdog: the application installed its own handler "
				 "for signal %d; capturing running threads is off\n", s);
		if (n > 0)
			(void)!write(2, line, (size_t)n);
	}
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

/* async-signal-safe */
static void handler(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	int saved = errno;
	struct sd_thread *t = thread_self();
	int expect = SLOT_PENDING;
	if (!t || si->si_code != SI_QUEUE ||
	    si->si_value.sival_int != atomic_load(&slot.seq) ||
	    slot.tid != t->tid ||
	    !atomic_compare_exchange_strong(&slot.state, &expect, SLOT_BUSY))
		goto out;

	int64_t t0 = clock_mono_ns();
	atomic_fetch_add_explicit(&t->intr, 1, memory_order_relaxed);
	const ucontext_t *uc = ucv;
	memcpy(slot.gregs, uc->uc_mcontext.gregs, sizeof(slot.gregs));

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
		mem_copy_raw(slot.stack, (const void *)from, len);
	slot.stack_addr = from;
	slot.stack_len = len;

	slot.py_walked = false;
	slot.pyinfo.n = 0;
	uintptr_t self = py_tstate_self_fast();
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	if (!ts)
		ts = self;
	if (ts) {
		/* The thread's current thread state is alive; one cached
		 * from an earlier request may not be. */
		py_walk_known(from, slot.stack, len, ts == self ? ts : 0);
		py_walk_records(ts, slot.rec, slot.py_max, &slot.pyinfo);
		py_walk_known(0, NULL, 0, 0);
		slot.py_walked = true;
	}
	slot.pause_ns = clock_mono_ns() - t0;
	atomic_store_explicit(&slot.state, SLOT_DONE, memory_order_release);
	sem_post(&slot.done);
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
	if (preload_real_sigaction(s, NULL, &old) != 0)
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
	if (preload_real_sigaction(chosen, &sa, NULL) != 0) {
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

bool capture_thread_init(const struct config *cfg)
{
	static bool done;
	if (done)
		return true;
	slot.stack = mmap(NULL, SNAP_MAX, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (slot.stack == MAP_FAILED) {
		slot.stack = NULL;
		return false;
	}
	slot.py_max = cfg->max_frames;
	slot.py = mmap(NULL, sizeof(struct py_frame) * (size_t)slot.py_max,
		       PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (slot.py == MAP_FAILED) {
		slot.py = NULL;
		return false;
	}
	slot.rec = mmap(NULL, sizeof(struct py_record) * (size_t)slot.py_max,
			PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (slot.rec == MAP_FAILED) {
		slot.rec = NULL;
		return false;
	}
	sem_init(&slot.done, 0, 0);
	unwind_init();
	done = true;
	return true;
}

static int sigqueue_thread(pid_t tid, int sig, int value)
{
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	si.si_signo = sig;
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_int = value;
	return (int)syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, sig, &si);
}

static void snap_from_gregs(struct uw_snapshot *s, const greg_t *g)
{
	static const int map[UW_NREGS] = {
		[UW_RAX] = REG_RAX, [UW_RDX] = REG_RDX, [UW_RCX] = REG_RCX,
		[UW_RBX] = REG_RBX, [UW_RSI] = REG_RSI, [UW_RDI] = REG_RDI,
		[UW_RBP] = REG_RBP, [UW_RSP] = REG_RSP, [UW_R8] = REG_R8,
		[UW_R9] = REG_R9, [UW_R10] = REG_R10, [UW_R11] = REG_R11,
		[UW_R12] = REG_R12, [UW_R13] = REG_R13, [UW_R14] = REG_R14,
		[UW_R15] = REG_R15, [UW_RIP] = REG_RIP,
	};
	for (int i = 0; i < UW_NREGS; i++)
		s->regs[i] = (uint64_t)g[map[i]];
	s->valid = (1u << UW_NREGS) - 1;
}

static void unwind_into(struct capture *out, const struct uw_snapshot *s)
{
	out->nip = unwind_snapshot(s, out->ip, NATIVE_MAX, &out->native_truncated);
}

/* The Python frames of a thread that is not running (blocked or asleep),
 * from the watchdog, with fault-tolerant reads. */
static void walk_still_thread(struct sd_thread *t, struct capture *out)
{
	out->py_walked = false;
	out->pyinfo.n = 0;
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	if (!ts && py_present())
		ts = py_tstate_find(mem_read_safe, t->tid, t->pthread);
	if (ts) {
		py_walk(mem_read_safe, ts, slot.py, slot.py_max, &out->pyinfo);
		out->py_walked = true;
	}
}

static bool capture_blocked(struct sd_thread *t, struct capture *out)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		uint32_t s1 = atomic_load_explicit(&t->call_seq, memory_order_acquire);
		if (!(s1 & 1))
			return false;
		struct call_regs r = t->regs;
		int fn = t->call_fn;
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&t->call_seq, memory_order_relaxed) != s1)
			continue;
		uintptr_t sp = (uintptr_t)r.cfa - 8;
		uintptr_t lo, hi;
		if (sp >= t->stack_lo && sp < t->stack_hi) {
			hi = t->stack_hi;
		} else if (!mem_mapping_of(sp, &lo, &hi)) {
			continue;
		}
		size_t len = hi - sp;
		if (len > SNAP_MAX)
			len = SNAP_MAX;
		if (!mem_read_safe(slot.stack, sp, len))
			continue;

		walk_still_thread(t, out);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&t->call_seq, memory_order_relaxed) != s1)
			continue;
		if (out->py_walked)
			py_resolve_lines(mem_read_safe, slot.py, out->pyinfo.n);

		struct uw_snapshot s = {0};
		s.regs[UW_RIP] = preload_stub_addr(fn);
		s.regs[UW_RSP] = sp;
		s.regs[UW_RBX] = r.rbx;
		s.regs[UW_RBP] = r.rbp;
		s.regs[UW_R12] = r.r12;
		s.regs[UW_R13] = r.r13;
		s.regs[UW_R14] = r.r14;
		s.regs[UW_R15] = r.r15;
		s.valid = (1u << UW_RIP) | (1u << UW_RSP) | (1u << UW_RBX) |
			  (1u << UW_RBP) | (1u << UW_R12) | (1u << UW_R13) |
			  (1u << UW_R14) | (1u << UW_R15);
		s.stack_addr = sp;
		s.stack = slot.stack;
		s.stack_len = len;
		unwind_into(out, &s);
		/* Frame 0 is our entry stub: show libc's function instead. */
		uintptr_t real = preload_call_addr(fn);
		if (out->nip > 0 && real)
			out->ip[0] = real;
		out->mode = CAPTURE_BLOCKED;
		out->call_fn = fn;
		out->py = slot.py;
		return true;
	}
	return false;
}

/*
 * Where a thread sleeps in a system call slowdog does not interpose (a
 * futex: the GIL, a lock; or a call that bypasses the dynamic symbol
 * table), per /proc: its syscall number, stack pointer and instruction
 * pointer. False when the thread is running, or on any error.
 */
static bool read_syscall(pid_t tid, long *nr, uintptr_t *sp, uintptr_t *pc)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *p = buf, *end;
	long v = strtol(p, &end, 10);
	if (end == p || v < 0)
		return false; /* "running", or -1: not in a system call */
	*nr = v;
	unsigned long vals[8];
	p = end;
	for (int i = 0; i < 8; i++) {
		vals[i] = strtoul(p, &end, 16);
		if (end == p)
			return false;
		p = end;
	}
	*sp = vals[6];
	*pc = vals[7];
	return *sp != 0 && *pc != 0;
}

/* A thread asleep in a system call: its stack can be copied and unwound
 * from /proc's stack and instruction pointers with no signal, so the call
 * is not interrupted. The copy counts only if /proc still shows the same
 * call afterwards. */
/* How long the thread has run on a CPU, in ns (0 on error). */
static unsigned long long run_time(pid_t tid)
{
	char path[64], buf[128];
	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return strtoull(buf, NULL, 10);
}

static bool capture_syscall(struct sd_thread *t, struct capture *out)
{
	long nr, nr2;
	uintptr_t sp, pc, sp2, pc2;
	unsigned long long ran = run_time(t->tid);
	if (!read_syscall(t->tid, &nr, &sp, &pc))
		return false;
	uintptr_t lo, hi;
	if (sp >= t->stack_lo && sp < t->stack_hi)
		hi = t->stack_hi;
	else if (!mem_mapping_of(sp, &lo, &hi))
		return false;
	size_t len = hi - sp;
	if (len > SNAP_MAX)
		len = SNAP_MAX;
	if (!mem_read_safe(slot.stack, sp, len))
		return false;
	walk_still_thread(t, out);
	/* Same call, same place, and it did not run meanwhile (an eval loop
	 * can leave and re-enter a call at the same stack pointer). */
	if (!read_syscall(t->tid, &nr2, &sp2, &pc2) || nr2 != nr || sp2 != sp ||
	    pc2 != pc || run_time(t->tid) != ran)
		return false;
	if (out->py_walked)
		py_resolve_lines(mem_read_safe, slot.py, out->pyinfo.n);
	struct uw_snapshot s = {0};
	s.regs[UW_RIP] = pc;
	s.regs[UW_RSP] = sp;
	s.valid = (1u << UW_RIP) | (1u << UW_RSP);
	s.stack_addr = sp;
	s.stack = slot.stack;
	s.stack_len = len;
	unwind_into(out, &s);
	out->mode = CAPTURE_SYSCALL;
	out->call_fn = (int)nr;
	out->py = slot.py;
	return true;
}

/* *still: false returned because the thread is in a system call now. */
static bool capture_signal(struct sd_thread *t, struct capture *out, bool *still)
{
	*still = false;
	int sig = capture_signal_number();
	if (sig <= 0) {
		snprintf(out->why, sizeof(out->why),
			 "the thread is running and signal captures are off");
		return false;
	}
	/* The thread may have entered a system call since it looked running
	 * (reading /proc/self/maps takes milliseconds): the signal would
	 * interrupt it. The paths without a signal take it then. */
	long nr;
	uintptr_t sp, pc;
	if ((atomic_load_explicit(&t->call_seq, memory_order_acquire) & 1) ||
	    read_syscall(t->tid, &nr, &sp, &pc)) {
		snprintf(out->why, sizeof(out->why), "entered a system call");
		*still = true;
		return false;
	}
	while (sem_trywait(&slot.done) == 0)
		;
	int seq = atomic_fetch_add(&slot.seq, 1) + 1;
	slot.tid = t->tid;
	atomic_store(&slot.state, SLOT_PENDING);
	if (sigqueue_thread(t->tid, sig, seq) != 0) {
		atomic_store(&slot.state, SLOT_IDLE);
		snprintf(out->why, sizeof(out->why), "cannot signal thread %d: %s",
			 (int)t->tid, strerror(errno));
		return false;
	}
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	/* A loaded machine may not run the thread for a while. */
	dl.tv_nsec += 500 * NS_PER_MS;
	while (dl.tv_nsec >= NS_PER_SEC) {
		dl.tv_sec++;
		dl.tv_nsec -= NS_PER_SEC;
	}
	while (sem_timedwait(&slot.done, &dl) != 0 && errno == EINTR)
		;
	int st = SLOT_PENDING;
	if (atomic_compare_exchange_strong(&slot.state, &st, SLOT_CANCELLED)) {
		snprintf(out->why, sizeof(out->why),
			 "thread %d did not run the signal handler within 500 ms "
			 "(not scheduled, or it blocks the signal)",
			 (int)t->tid);
		return false;
	}
	/* BUSY or DONE: the handler is running or ran; it is short. */
	for (int i = 0; i < 1000 && atomic_load(&slot.state) == SLOT_BUSY; i++) {
		struct timespec ms = {0, NS_PER_MS};
		nanosleep(&ms, NULL);
	}
	if (atomic_load_explicit(&slot.state, memory_order_acquire) != SLOT_DONE) {
		snprintf(out->why, sizeof(out->why), "the signal handler did not finish");
		return false;
	}
	struct uw_snapshot s;
	snap_from_gregs(&s, slot.gregs);
	s.stack_addr = slot.stack_addr;
	s.stack = slot.stack;
	s.stack_len = slot.stack_len;
	out->pyinfo = slot.pyinfo;
	out->py_walked = slot.py_walked;
	out->py = slot.py;
	out->pause_ns = slot.pause_ns;
	atomic_store(&slot.state, SLOT_IDLE);
	if (out->py_walked) {
		py_read_names(slot.rec, slot.py, &out->pyinfo);
		py_resolve_lines(mem_read_safe, slot.py, out->pyinfo.n);
	}
	unwind_into(out, &s);
	out->mode = CAPTURE_SIGNAL;
	return true;
}

bool capture_thread(struct sd_thread *t, struct capture *out)
{
	memset(out, 0, offsetof(struct capture, ip));
	out->py = slot.py;
	if (!slot.stack) {
		snprintf(out->why, sizeof(out->why), "no capture buffers");
		out->mode = CAPTURE_FAILED;
		return false;
	}
	/* The blocked and syscall paths read with process_vm_readv; only the
	 * handler needs the table of readable memory, freshly taken (reading
	 * /proc/self/maps costs milliseconds in a process with many threads). */
	bool ok = false, still = false;
	for (int round = 0; round < 3 && !ok; round++) {
		if (capture_blocked(t, out))
			return true;
		if (capture_syscall(t, out))
			return true;
		if (round == 0)
			mem_maps_refresh();
		ok = capture_signal(t, out, &still);
		if (!still)
			break;
	}
	if (ok) {
		/* A frame chain caught mid-change (a generator being created)
		 * is damaged for microseconds: one more look usually clears it. */
		if (out->py_walked && out->pyinfo.damaged) {
			static struct capture again;
			memset(&again, 0, offsetof(struct capture, ip));
			again.py = slot.py;
			mem_maps_refresh();
			bool ignored;
			bool ran = capture_signal(t, &again, &ignored);
			if (ran && !again.pyinfo.damaged)
				*out = again;
			else if (ran || atomic_load(&slot.state) == SLOT_BUSY) {
				/* the first walk's frames were overwritten */
				out->py_walked = again.py_walked;
				out->pyinfo = again.pyinfo;
				memcpy(out->ip, again.ip, sizeof(out->ip));
				out->nip = again.nip;
				out->native_truncated = again.native_truncated;
				out->pause_ns = again.pause_ns;
			}
			/* Else the second look did not happen (the thread had
			 * entered a system call, or did not answer the signal):
			 * the buffers hold the first, which stands, damaged as it
			 * says. */
		}
		return true;
	}
	out->mode = CAPTURE_FAILED;
	return false;
}

void capture_release(void)
{
	if (slot.stack)
		madvise(slot.stack, SNAP_MAX, MADV_DONTNEED);
	if (slot.py)
		madvise(slot.py, sizeof(struct py_frame) * (size_t)slot.py_max,
			MADV_DONTNEED);
	if (slot.rec)
		madvise(slot.rec, sizeof(struct py_record) * (size_t)slot.py_max,
			MADV_DONTNEED);
}

void capture_atfork_child(void)
{
	if (sig_owner)
		sig_owner = getpid();
	atomic_store(&slot.state, SLOT_IDLE);
	sem_init(&slot.done, 0, 0);
}
