/* Who holds the GIL. See gil.h. */
#include "gil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "capture.h"
#include "common.h"
#include "conn.h"
#include "mem.h"
#include "real.h"
#include "sys.h"
#include "thread.h"

/* The futex address a thread sleeps on, per /proc: 1, 0 when it is in
 * another system call, -1 when it runs. */
static int futex_of_once(pid_t tid, uintptr_t *uaddr)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	size_t n = sys_read_small(path, buf, sizeof(buf) - 1);
	if (n == 0)
		return 0;
	buf[n] = '\0';
	char *end;
	long nr = strtol(buf, &end, 10);
	if (end == buf || nr < 0)
		return -1; /* "running" (or -1: stopped, not in a call) */
	if (nr != SYS_futex)
		return 0;
	char *p = end;
	unsigned long a = strtoul(p, &end, 16);
	if (end == p || a == 0)
		return 0;
	*uaddr = a;
	return 1;
}

/*
 * The same, looked at a few times while the thread runs: a thread that
 * waits for the GIL wakes every switch interval (5 ms) to ask for it,
 * and slowdog's signal, when its capture took that path, wakes it too.
 * A thread that runs holding the GIL is done with at once; one that runs
 * without it (C code that released it) costs 20 reads of /proc and 5 ms
 * of the watchdog's time.
 */
#define FUTEX_LOOKS 20
static bool futex_of(pid_t tid, uintptr_t tstate, uintptr_t *uaddr)
{
	for (int i = 0; i < FUTEX_LOOKS; i++) {
		int r = futex_of_once(tid, uaddr);
		if (r >= 0)
			return r == 1;
		/* It runs holding the GIL: not waiting for it. */
		if (py_gil_held_by(tstate))
			return false;
		struct timespec pause = {0, 250 * 1000};
		real_nanosleep(&pause, NULL);
	}
	return false;
}

/*
 * glibc keeps a thread's kernel id in its struct pthread, which
 * pthread_self() points to, at an offset of its own. Up to 3.10 a thread
 * state holds only pthread_self(): a holder slowdog has no record of is
 * named through that offset, found here once: the one place in the
 * watchdog's own struct pthread that holds its tid and, in every record
 * slowdog has, that thread's tid. -1: not yet, -2: none found.
 */
#define PT_SCAN 2048
static int pt_tid_off = -1;

static void pt_calibrate(void)
{
	static unsigned char self[PT_SCAN];
	pid_t me = (pid_t)syscall(SYS_gettid);
	if (!mem_read_safe(self, (uintptr_t)pthread_self(), sizeof(self))) {
		pt_tid_off = -2;
		return;
	}
	int found = -1, others = 0;
	for (int at = 0; at + 4 <= PT_SCAN; at += 4) {
		int32_t v;
		memcpy(&v, self + at, sizeof(v));
		if (v != me)
			continue;
		bool all = true;
		int seen = 0;
		int high = atomic_load(&thread_high);
		for (int i = 0; i < high && all; i++) {
			struct sd_thread *t = &thread_table[i];
			if (atomic_load_explicit(&t->state, memory_order_acquire) !=
			    THREAD_LIVE)
				continue;
			int32_t w;
			if (!mem_read_safe(&w, t->pthread + (uintptr_t)at, sizeof(w)))
				all = false;
			else if (w != t->tid)
				all = false;
			seen++;
		}
		if (!all || seen == 0)
			continue;
		if (found >= 0)
			return; /* two agree: not yet told apart */
		found = at;
		others = seen;
	}
	/* Nothing to compare with yet: try again next time. */
	if (found >= 0 && others > 0)
		pt_tid_off = found;
}

static pid_t tid_of_pthread(unsigned long pt)
{
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		if (atomic_load_explicit(&t->state, memory_order_acquire) == THREAD_LIVE &&
		    t->pthread == pt)
			return t->tid;
	}
	if (pt_tid_off == -1)
		pt_calibrate();
	int32_t v;
	if (pt_tid_off >= 0 && pt && !(pt & 7) &&
	    mem_read_safe(&v, pt + (uintptr_t)pt_tid_off, sizeof(v)) && v > 0)
		return (pid_t)v;
	return 0;
}

/* slowdog's record of thread tid, NULL if none. */
static struct sd_thread *record_of(pid_t tid)
{
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		if (atomic_load_explicit(&t->state, memory_order_acquire) == THREAD_LIVE &&
		    t->tid == tid)
			return &thread_table[i];
	}
	return NULL;
}

/* What holder thread h serves, read consistently (its request may end and
 * another begin meanwhile: then none is named). */
static void holder_request(struct sd_thread *h, struct gil_wait *g)
{
	if (h->mux || h->loop) {
		g->loop = true;
		return;
	}
	for (int tries = 0; tries < 2; tries++) {
		uint64_t id = atomic_load_explicit(&h->req_id, memory_order_acquire);
		if (!id)
			return;
		int fd = h->fd;
		uint32_t gen = h->conn_gen;
		int64_t start = h->req_start_ns;
		if (fd < 0) {
			memcpy(g->label, h->label, sizeof(g->label));
			g->label[sizeof(g->label) - 1] = '\0';
		} else {
			g->label[0] = '\0';
		}
		g->have_info = fd >= 0 && conn_describe(fd, gen, id, &g->info);
		if (atomic_load_explicit(&h->req_id, memory_order_acquire) != id)
			continue;
		g->serving = true;
		g->req_id = id;
		g->running_ns = clock_mono_ns() - start;
		return;
	}
}

static void holder_name(pid_t tid, struct gil_wait *g)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
	size_t n = sys_read_small(path, g->name, sizeof(g->name) - 1);
	while (n > 0 && (g->name[n - 1] == '\n' || g->name[n - 1] == '\0'))
		n--;
	g->name_len = (int)n;
}

/* The holder's innermost Python frames. It runs meanwhile: every read is
 * fault tolerant and checked, as for any running thread. */
static void holder_frames(uintptr_t ts, struct gil_wait *g)
{
	static struct py_frame buf[2 * GIL_PY_MAX];
	struct py_walk_info info;
	int n = py_walk(mem_read_safe, ts, buf, (int)ARRAY_LEN(buf), &info);
	int inner = info.head < n ? info.head : n;
	if (inner > GIL_PY_MAX)
		inner = GIL_PY_MAX;
	py_resolve_lines(mem_read_safe, buf, inner);
	memcpy(g->py, buf, (size_t)inner * sizeof(buf[0]));
	g->npy = inner;
	g->py_total = info.total;
	g->py_damaged = info.damaged;
	g->py_read = true;
}

bool gil_check(struct sd_thread *t, const struct capture *cap, struct gil_wait *g)
{
	uintptr_t uaddr;
	struct py_gil before, after;
	uintptr_t self = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	/* Inside an interposed call (recv, poll, sleep...), a thread does not
	 * wait for the GIL: it released it. */
	if (cap->mode == CAPTURE_BLOCKED || py_gil_unavailable() ||
	    !futex_of(t->tid, self, &uaddr) ||
	    !py_gil_waited(uaddr, &before))
		return false;
	memset(g, 0, offsetof(struct gil_wait, py));
	pid_t tid = 0;
	unsigned long pt = 0;
	if (before.locked != 1 || !before.holder || before.holder == self) {
		g->unknown = "the GIL changed hands during the capture";
		return true;
	}
	if (!py_tstate_ids(before.holder, &tid, &pt)) {
		g->unknown = "its thread state is not in the interpreter's list";
		return true;
	}
	if (!tid)
		tid = tid_of_pthread(pt);
	struct sd_thread *h = tid ? record_of(tid) : NULL;
	if (h)
		holder_request(h, g);
	holder_frames(before.holder, g);
	if (tid)
		holder_name(tid, g);
	/* Held all along by the same thread, and still waited for: otherwise
	 * what was read may be another holder's. */
	uintptr_t uaddr2;
	struct py_gil again;
	if (!py_gil_read(before.addr, &after) || after.locked != 1 ||
	    after.holder != before.holder || after.switches != before.switches ||
	    !futex_of(t->tid, self, &uaddr2) || !py_gil_waited(uaddr2, &again) ||
	    again.addr != before.addr) {
		memset(g, 0, offsetof(struct gil_wait, py));
		g->unknown = "the GIL changed hands during the capture";
		return true;
	}
	g->tid = tid;
	g->main = tid && tid == getpid();
	if (!tid)
		g->unknown = "its thread id cannot be told";
	return true;
}
