/* Stack capture, the watchdog's half: blocked, syscall and signal paths.
 * See capture.h; the handler and the slot are in capture_sig.c. */
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

#include "capture_sig.h"
#include "common.h"
#include "glet.h"
#include "mem.h"
#include "real.h"
#include "sys.h"
#include "thread.h"
#include "unwind.h"

bool capture_slot_alloc(struct capture_slot *s, int max_frames)
{
	if (s->stack)
		return true;
	s->py_max = max_frames;
	void *st = mmap(NULL, SNAP_MAX, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	void *py = mmap(NULL, sizeof(struct py_frame) * (size_t)max_frames,
			PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	void *rec = mmap(NULL, sizeof(struct py_record) * (size_t)max_frames,
			 PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (st == MAP_FAILED || py == MAP_FAILED || rec == MAP_FAILED) {
		if (st != MAP_FAILED)
			munmap(st, SNAP_MAX);
		if (py != MAP_FAILED)
			munmap(py, sizeof(struct py_frame) * (size_t)max_frames);
		if (rec != MAP_FAILED)
			munmap(rec, sizeof(struct py_record) * (size_t)max_frames);
		return false;
	}
	s->py = py;
	s->rec = rec;
	sem_init(&s->done, 0, 0);
	s->stack = st;
	return true;
}

bool capture_thread_init(const struct config *cfg)
{
	static bool done;
	if (done)
		return true;
	if (!capture_slot_alloc(&capture_slot, cfg->max_frames))
		return false;
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
		py_walk(mem_read_safe, ts, capture_slot.py, capture_slot.py_max, &out->pyinfo);
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
		if (!mem_read_safe(capture_slot.stack, sp, len))
			continue;

		walk_still_thread(t, out);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&t->call_seq, memory_order_relaxed) != s1)
			continue;
		if (out->py_walked)
			py_resolve_lines(mem_read_safe, capture_slot.py, out->pyinfo.n);

		struct uw_snapshot s = {0};
		s.regs[UW_RIP] = real_stub_addr(fn);
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
		s.stack = capture_slot.stack;
		s.stack_len = len;
		unwind_into(out, &s);
		/* Frame 0 is our entry stub: show libc's function instead. */
		uintptr_t real = real_call_addr(fn);
		if (out->nip > 0 && real)
			out->ip[0] = real;
		out->mode = CAPTURE_BLOCKED;
		out->call_fn = fn;
		out->py = capture_slot.py;
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
	size_t n = sys_read_small(path, buf, sizeof(buf) - 1);
	if (n == 0)
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
	size_t n = sys_read_small(path, buf, sizeof(buf) - 1);
	if (n == 0)
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
	if (!mem_read_safe(capture_slot.stack, sp, len))
		return false;
	walk_still_thread(t, out);
	/* Same call, same place, and it did not run meanwhile (an eval loop
	 * can leave and re-enter a call at the same stack pointer). */
	if (!read_syscall(t->tid, &nr2, &sp2, &pc2) || nr2 != nr || sp2 != sp ||
	    pc2 != pc || run_time(t->tid) != ran)
		return false;
	if (out->py_walked)
		py_resolve_lines(mem_read_safe, capture_slot.py, out->pyinfo.n);
	struct uw_snapshot s = {0};
	s.regs[UW_RIP] = pc;
	s.regs[UW_RSP] = sp;
	s.valid = (1u << UW_RIP) | (1u << UW_RSP);
	s.stack_addr = sp;
	s.stack = capture_slot.stack;
	s.stack_len = len;
	unwind_into(out, &s);
	out->mode = CAPTURE_SYSCALL;
	out->call_fn = (int)nr;
	out->py = capture_slot.py;
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
	while (sem_trywait(&capture_slot.done) == 0)
		;
	int seq = atomic_fetch_add(&capture_slot.seq, 1) + 1;
	capture_slot.tid = t->tid;
	atomic_store(&capture_slot.state, SLOT_PENDING);
	if (sigqueue_thread(t->tid, sig, seq) != 0) {
		atomic_store(&capture_slot.state, SLOT_IDLE);
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
	while (real_sem_timedwait(&capture_slot.done, &dl) != 0 && errno == EINTR)
		;
	int st = SLOT_PENDING;
	if (atomic_compare_exchange_strong(&capture_slot.state, &st, SLOT_CANCELLED)) {
		snprintf(out->why, sizeof(out->why),
			 "thread %d did not run the signal handler within 500 ms "
			 "(not scheduled, or it blocks the signal)",
			 (int)t->tid);
		return false;
	}
	/* BUSY or DONE: the handler is running or ran; it is short. */
	for (int i = 0; i < 1000 && atomic_load(&capture_slot.state) == SLOT_BUSY; i++) {
		struct timespec ms = {0, NS_PER_MS};
		real_nanosleep(&ms, NULL);
	}
	if (atomic_load_explicit(&capture_slot.state, memory_order_acquire) != SLOT_DONE) {
		snprintf(out->why, sizeof(out->why), "the signal handler did not finish");
		return false;
	}
	capture_from_slot(&capture_slot, out);
	out->mode = CAPTURE_SIGNAL;
	return true;
}

void capture_from_slot(struct capture_slot *slot, struct capture *out)
{
	struct uw_snapshot s;
	snap_from_gregs(&s, slot->gregs);
	s.stack_addr = slot->stack_addr;
	s.stack = slot->stack;
	s.stack_len = slot->stack_len;
	out->pyinfo = slot->pyinfo;
	out->py_walked = slot->py_walked;
	out->py = slot->py;
	out->pause_ns = slot->pause_ns;
	atomic_store(&slot->state, SLOT_IDLE);
	if (out->py_walked) {
		py_read_names(slot->rec, slot->py, &out->pyinfo);
		py_resolve_lines(mem_read_safe, slot->py, out->pyinfo.n);
	}
	unwind_into(out, &s);
	out->mode = CAPTURE_HANDLER;
}

/*
 * A damaged chain (caught mid-change) may end in records whose code object
 * could not be read: such frames would show as "?"; they are left out, the
 * report saying the chain is damaged. A whole chain keeps them: there they
 * are real frames of code that could not be read.
 */
static bool named_only(struct capture *out)
{
	struct py_walk_info *pi = &out->pyinfo;
	if (!out->py_walked || !pi->damaged || !out->py)
		return true;
	int k = 0, head = pi->head;
	for (int i = 0; i < pi->n; i++) {
		const struct py_frame *f = &out->py[i];
		if (!f->file[0] && !f->func[0]) {
			if (i < pi->head)
				head--;
			continue;
		}
		if (k != i)
			out->py[k] = *f;
		k++;
	}
	pi->total -= pi->n - k;
	pi->n = k;
	pi->head = head;
	return true;
}

bool capture_thread(struct sd_thread *t, struct capture *out)
{
	memset(out, 0, offsetof(struct capture, ip));
	out->py = capture_slot.py;
	if (!capture_slot.stack) {
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
			return named_only(out);
		if (capture_syscall(t, out))
			return named_only(out);
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
			again.py = capture_slot.py;
			mem_maps_refresh();
			bool ignored;
			bool ran = capture_signal(t, &again, &ignored);
			if (ran && !again.pyinfo.damaged)
				*out = again;
			else if (ran || atomic_load(&capture_slot.state) == SLOT_BUSY) {
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
		return named_only(out);
	}
	out->mode = CAPTURE_FAILED;
	return false;
}

void capture_release(void)
{
	if (capture_slot.stack)
		madvise(capture_slot.stack, SNAP_MAX, MADV_DONTNEED);
	if (capture_slot.py)
		madvise(capture_slot.py, sizeof(struct py_frame) * (size_t)capture_slot.py_max,
			MADV_DONTNEED);
	if (capture_slot.rec)
		madvise(capture_slot.rec, sizeof(struct py_record) * (size_t)capture_slot.py_max,
			MADV_DONTNEED);
}

void capture_atfork_child(void)
{
	capture_sig_atfork_child();
}

/* ---- suspended greenlets ----
 *
 * A greenlet is {PyObject_HEAD; weakreflist; dict; pimpl} (greenlet.h):
 * pimpl at +32, a C++ object whose layout changed between greenlet
 * releases. When a greenlet is switched out, its PythonState keeps
 * _top_frame (a frame object) and, on 3.11+, current_frame (the
 * _PyInterpreterFrame it resumes in): the first word of pimpl[16..256)
 * that is a frame object, and the word within 64 bytes after it equal to
 * that frame object's f_frame. Found once, on the first suspended greenlet
 * seen, and checked again at every read.
 */
static int gl_top_off = -1, gl_cur_off = -1;

static bool rdp(uintptr_t a, uintptr_t *v)
{
	return a >= 4096 && mem_read_safe(v, a, sizeof(*v));
}

/* The frame greenlet g resumes in, and its top frame object; NULL or why
 * not. */
static const char *glet_frame(uintptr_t g, uintptr_t *frame, uintptr_t *top_out)
{
	uintptr_t ftype;
	int ff;
	if (!py_frame_layout(&ftype, &ff))
		return "Python frames cannot be read in this interpreter";
	if (!glet_is_greenlet(g))
		return "it is not a greenlet any more";
	uintptr_t pimpl;
	if (!rdp(g + 32, &pimpl) || pimpl < 4096)
		return "the greenlet cannot be read";
	if (gl_top_off < 0) {
		for (int o = 16; o < 256 && gl_top_off < 0; o += 8) {
			uintptr_t f, ty, ifr;
			if (!rdp(pimpl + (uintptr_t)o, &f) || !rdp(f + 8, &ty) ||
			    ty != ftype)
				continue;
			if (ff < 0) {
				gl_top_off = o;
				break;
			}
			if (!rdp(f + (uintptr_t)ff, &ifr) || !ifr)
				continue;
			for (int k = o + 8; k <= o + 64; k += 8) {
				uintptr_t v;
				if (rdp(pimpl + (uintptr_t)k, &v) && v == ifr) {
					gl_top_off = o;
					gl_cur_off = k;
					break;
				}
			}
		}
		if (gl_top_off < 0)
			return "this greenlet version's layout is not recognised";
	}
	uintptr_t top, ty;
	if (!rdp(pimpl + (uintptr_t)gl_top_off, &top) || !top)
		return "the greenlet keeps no frame (not started, or running)";
	if (!rdp(top + 8, &ty) || ty != ftype)
		return "the greenlet's saved frame is not a frame";
	*top_out = top;
	if (ff < 0) {
		*frame = top;
		return NULL;
	}
	uintptr_t ifr, cur;
	if (!rdp(top + (uintptr_t)ff, &ifr) ||
	    !rdp(pimpl + (uintptr_t)gl_cur_off, &cur) || !cur || ifr != cur)
		return "the greenlet's saved frames disagree";
	*frame = cur;
	return NULL;
}

void capture_suspended(struct sd_thread *t, uintptr_t glet, struct capture *out)
{
	memset(out, 0, offsetof(struct capture, ip));
	out->py = capture_slot.py;
	out->mode = CAPTURE_SUSPENDED;
	if (!glet) {
		snprintf(out->why, sizeof(out->why),
			 "suspended: the coroutine that serves it is not known "
			 "(asyncio tasks are not located), so its stack cannot be shown");
		return;
	}
	if (!out->py) {
		snprintf(out->why, sizeof(out->why), "no capture buffers");
		return;
	}
	const char *why = NULL;
	for (int tries = 0; tries < 3; tries++) {
		uintptr_t frame = 0, top = 0, top2 = 0, pimpl = 0, main;
		why = glet_frame(glet, &frame, &top);
		if (why)
			break;
		py_walk_suspended(frame, out->py, capture_slot.py_max, &out->pyinfo);
		/* Still switched out, with the same frames, after the walk:
		 * the frames read were its own. */
		if (glet_current_of(t->pthread, &main) != glet &&
		    rdp(glet + 32, &pimpl) &&
		    rdp(pimpl + (uintptr_t)gl_top_off, &top2) && top2 == top) {
			out->py_walked = true;
			py_resolve_lines(mem_read_safe, out->py, out->pyinfo.n);
			snprintf(out->why, sizeof(out->why),
				 "suspended greenlet 0x%lx (its Python frames; it "
				 "waits in the loop)", (unsigned long)glet);
			return;
		}
		why = "the greenlet kept running while it was read";
		memset(&out->pyinfo, 0, sizeof(out->pyinfo));
	}
	snprintf(out->why, sizeof(out->why), "suspended greenlet 0x%lx: no frames: %s",
		 (unsigned long)glet, why);
}

struct py_frame *capture_py_buffer(void)
{
	return capture_slot.py;
}
