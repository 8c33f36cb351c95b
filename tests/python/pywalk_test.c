/*
 * Test shim for the Python frame walker (src/python.c), loaded with ctypes
 * by test_pywalk.py into each interpreter. Output lines, innermost first:
 *   "#total n head damaged"
 *   "file\tline\tfunc\tflags" per frame
 */
#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

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
	py_walk(rd, ts, frames, max, &info);
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

/* The line py_resolve_lines gives for code object `code` at byte `addr`. */
EXPORT int sd_test_line(uintptr_t code, int addr)
{
	struct py_frame f = {.code = code, .addr = addr};
	py_resolve_lines(mem_read_safe, &f, 1);
	return f.line;
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
		if (info.damaged) {
			counts[1]++;
			continue;
		}
		bool ok = info.n <= info.total;
		for (int i = 0; i < info.n && ok; i++) {
			size_t len = strlen(sf[i].func);
			const char *p = names;
			bool found = false;
			while (*p && !found) {
				const char *e = strchr(p, '\n');
				size_t l = e ? (size_t)(e - p) : strlen(p);
				found = l == len && memcmp(p, sf[i].func, l) == 0;
				p += l + (e ? 1 : 0);
			}
			ok = found && sf[i].line >= 0;
		}
		counts[3] += info.n;
		if (ok) {
			counts[0]++;
		} else {
			if (counts[2]++ == 0)
				format(bad, badcap, &info, sf);
		}
	}
	return 0;
}
