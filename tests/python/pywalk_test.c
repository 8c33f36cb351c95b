/*
 * Test shim for the Python frame walker (src/python.c), loaded with ctypes
 * by test_pywalk.py into each interpreter. Output lines, innermost first:
 *   "#total n head damaged"
 *   "file\tline\tfunc\tflags" per frame
 */
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "python.h"

#define EXPORT __attribute__((visibility("default")))
#define FRAMES_MAX 4096

static struct py_frame frames[FRAMES_MAX];

EXPORT int sd_test_init(char *msg, int cap)
{
	bool ok = py_init();
	const char *u = py_unavailable();
	snprintf(msg, (size_t)cap, "%s|%s|%d", py_version_string(), u ? u : "",
		 py_present());
	return ok;
}

static int format(char *out, int cap, const struct py_walk_info *info,
		  const struct py_frame *f)
{
	int len = snprintf(out, (size_t)cap, "#%d %d %d %d\n", info->total,
			   info->n, info->head, info->damaged);
	for (int i = 0; i < info->n && len < cap; i++)
		len += snprintf(out + len, (size_t)(cap - len), "%s\t%d\t%s\t%u\n",
				f[i].file, f[i].line, f[i].func, f[i].flags);
	if (len >= cap)
		return -1;
	return info->n;
}

static int walk(mem_reader rd, uintptr_t ts, char *out, int cap, int max)
{
	struct py_walk_info info;
	if (max > FRAMES_MAX)
		max = FRAMES_MAX;
	if (rd == mem_read_mapped) {
		/* As the library's signal handler does, then its watchdog. */
		static struct py_record rec[FRAMES_MAX];
		py_walk_known(0, NULL, 0, ts == py_tstate_self() ? ts : 0);
		py_walk_records(ts, rec, max, &info);
		py_walk_known(0, NULL, 0, 0);
		py_read_names(rec, frames, &info);
	} else {
		py_walk(rd, ts, frames, max, &info);
	}
	py_resolve_lines(mem_read_safe, frames, info.n);
	return format(out, cap, &info, frames);
}

/* The calling thread's frames. reader: 0 mem_read_mapped, 1 mem_read_safe. */
EXPORT int sd_test_walk(char *out, int cap, int max, int reader)
{
	if (!py_init())
		return -2;
	uintptr_t ts = py_tstate_self();
	if (!ts)
		return -3;
	if (reader == 0) {
		if (mem_maps_refresh() != 0)
			return -4;
		return walk(mem_read_mapped, ts, out, cap, max);
	}
	return walk(mem_read_safe, ts, out, cap, max);
}

/* Another thread's frames, found by tid / pthread_self(). */
EXPORT int sd_test_walk_thread(long tid, unsigned long pthread_id, char *out,
			       int cap, int max)
{
	if (!py_init())
		return -2;
	uintptr_t ts = py_tstate_find(mem_read_safe, (pid_t)tid, pthread_id);
	if (!ts)
		return -3;
	return walk(mem_read_safe, ts, out, cap, max);
}

/* The lines py_resolve_lines gives for code object `code` at each of the
 * byte offsets addr[0..n). */
EXPORT int sd_test_lines(uintptr_t code, const int *addr, int *line, int n)
{
	if (n > FRAMES_MAX)
		return -1;
	if (!py_init())
		return -2;
	for (int i = 0; i < n; i++)
		frames[i] = (struct py_frame){.code = code, .addr = addr[i]};
	py_resolve_lines(mem_read_safe, frames, n);
	for (int i = 0; i < n; i++)
		line[i] = frames[i].line;
	return 0;
}

/* The calling thread's own thread state as the handler reads it
 * (py_tstate_self_fast) and as CPython gives it (py_tstate_self): 1 if
 * they agree and the fast one read CPython's key, 0 if it fell back, -1
 * if they differ. */
EXPORT int sd_test_tstate_fast(void)
{
	uintptr_t slow = py_tstate_self();
	uintptr_t fast = py_tstate_self_fast();
	if (!slow || fast != slow)
		return -1;
	return py_tstate_key() >= 0 ? 1 : 0;
}

EXPORT int sd_test_is_eval(const char *name)
{
	return py_is_eval_symbol(name);
}

/* Native _PyEval_EvalFrameDefault frames on the calling thread's stack,
 * named with the size-checked dynamic symbol table entry. */
EXPORT int sd_test_native_evals(void)
{
	static void *pcs[65536];
	int n = backtrace(pcs, 65536);
	int count = 0;
	for (int i = 1; i < n; i++) {
		Dl_info di;
		const ElfW(Sym) *sym = NULL;
		uintptr_t pc = (uintptr_t)pcs[i] - 1;
		if (!dladdr1((void *)pc, &di, (void **)&sym, RTLD_DL_SYMENT) ||
		    !di.dli_sname || !sym)
			continue;
		if (pc >= (uintptr_t)di.dli_saddr + sym->st_size)
			continue;
		count += py_is_eval_symbol(di.dli_sname);
	}
	return count;
}

static bool names_has(const char *names, const char *name)
{
	size_t len = strlen(name);
	const char *p = names;
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == len && memcmp(p, name, l) == 0)
			return true;
		p += l + (e ? 1 : 0);
	}
	return false;
}

/*
 * Tally one walk; the first implausible one is written to bad. With
 * `whole` (the thread was stopped), an undamaged walk must have all of the
 * thread's stack: the target always runs Python, down to its first frame,
 * threading's _bootstrap (kept: the walk keeps both ends). A walk racing
 * the thread may read a chain, or no chain, that changes under it.
 */
static void tally(const struct py_walk_info *info, const struct py_frame *f,
		  bool whole, const char *names, long *counts, char *bad,
		  int badcap)
{
	if (info->damaged) {
		counts[1]++;
		return;
	}
	bool ok = info->n <= info->total &&
		  (!whole || (info->n > 0 &&
			      strcmp(f[info->n - 1].func, "_bootstrap") == 0));
	for (int i = 0; i < info->n && ok; i++)
		ok = names_has(names, f[i].func) && f[i].line >= 0;
	counts[3] += info->n;
	if (ok)
		counts[0]++;
	else if (counts[2]++ == 0)
		format(bad, badcap, info, f);
}

/*
 * Stress: walk another thread `iters` times while it runs (GIL released by
 * the caller: ctypes.CDLL). Every frame's function must be in `names`
 * ("\n"-separated) unless the walk says damaged. counts[0] plausible,
 * counts[1] damaged, counts[2] implausible, counts[3] frames seen,
 * counts[4] walks that found no thread state. The first implausible walk
 * goes to `bad`.
 */
EXPORT int sd_test_stress(long tid, unsigned long pthread_id, int iters,
			  const char *names, long *counts, char *bad, int badcap)
{
	static struct py_frame sf[256];
	if (!py_init())
		return -2;
	bad[0] = '\0';
	for (int it = 0; it < iters; it++) {
		uintptr_t ts = py_tstate_find(mem_read_safe, (pid_t)tid, pthread_id);
		if (!ts) {
			counts[4]++;
			continue;
		}
		struct py_walk_info info;
		py_walk(mem_read_safe, ts, sf, (int)(it % 2 ? 256 : 16), &info);
		py_resolve_lines(mem_read_safe, sf, info.n);
		tally(&info, sf, false, names, counts, bad, badcap);
	}
	return 0;
}

/*
 * The capture path of the library: the target thread, interrupted by a
 * signal wherever it is, walks its own frames in the handler with
 * mem_read_mapped; the caller (GIL released: ctypes.CDLL) checks them.
 * Same counts as sd_test_stress; counts[4] are signals not handled in 1 s.
 */
#define SIG_FRAMES 64
static struct py_frame sig_frames[SIG_FRAMES];
static struct py_record sig_rec[SIG_FRAMES];
static struct py_walk_info sig_info;
static atomic_int sig_done;

static void sig_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	(void)sig, (void)si, (void)uc;
	uintptr_t ts = py_tstate_self();
	/* As the library's handler: the thread's own state is trusted, so
	 * 3.11+ frames come from the live frame stack. */
	py_walk_known(0, NULL, 0, ts);
	if (ts)
		py_walk_records(ts, sig_rec, SIG_FRAMES, &sig_info);
	else
		sig_info = (struct py_walk_info){.damaged = true};
	py_walk_known(0, NULL, 0, 0);
	atomic_store(&sig_done, 1);
	errno = saved;
}

EXPORT int sd_test_signal_stress(long tid, int iters, const char *names,
				 long *counts, char *bad, int badcap)
{
	if (!py_init())
		return -2;
	int sig = SIGRTMIN + 7;
	struct sigaction sa = {.sa_sigaction = sig_handler,
			       .sa_flags = SA_SIGINFO | SA_RESTART}, old;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, &old) != 0)
		return -errno;
	bad[0] = '\0';
	for (int it = 0; it < iters; it++) {
		if (mem_maps_refresh() != 0)
			return -4;
		/* The library reads /proc between taking the table and
		 * sending the signal; the thread runs on meanwhile and maps
		 * memory (frame stack chunks, arenas) the table lacks. */
		struct timespec gap = {0, (it % 4) * 20000};
		nanosleep(&gap, NULL);
		atomic_store(&sig_done, 0);
		if (syscall(SYS_tgkill, getpid(), (pid_t)tid, sig) != 0)
			return -5;
		int waited = 0;
		while (!atomic_load(&sig_done) && waited < 1000000) {
			struct timespec ts = {0, 1000};
			nanosleep(&ts, NULL);
			waited++;
		}
		if (!atomic_load(&sig_done)) {
			counts[4]++;
			break; /* a late handler would write sig_frames */
		}
		py_read_names(sig_rec, sig_frames, &sig_info);
		py_resolve_lines(mem_read_safe, sig_frames, sig_info.n);
		tally(&sig_info, sig_frames, true, names, counts, bad, badcap);
	}
	sigaction(sig, &old, NULL);
	return 0;
}
