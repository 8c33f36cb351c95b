/* Unwinding snapshots through an address space of our own. See unwind.h. */
#include "unwind.h"

#include <libunwind.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "common.h"
#include "mem.h"

/* Readable PT_LOAD segments of loaded objects: code and unwind tables. */
struct seg {
	uintptr_t lo, hi;
};
static struct seg *segs;
static int nsegs, segs_cap;
static unsigned long long seen_adds = ~0ULL, seen_subs = ~0ULL;

static unw_addr_space_t as;
static unw_accessors_t *local_acc;

static int seg_cmp(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int count_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	unsigned long long *v = data;
	v[0] = info->dlpi_adds;
	v[1] = info->dlpi_subs;
	return 1;
}

static int seg_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		/* PT_LOAD only: other segments lie inside them, and the binary
		 * search below needs ranges that do not overlap. */
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_R))
			continue;
		if (nsegs == segs_cap) {
			int cap = segs_cap ? segs_cap * 2 : 256;
			struct seg *n = realloc(segs, (size_t)cap * sizeof(*n));
			if (!n)
				return 1;
			segs = n;
			segs_cap = cap;
		}
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		segs[nsegs].lo = lo;
		segs[nsegs].hi = lo + ph->p_memsz;
		nsegs++;
	}
	return 0;
}

static void segs_refresh(void)
{
	unsigned long long v[2] = {0, 0};
	dl_iterate_phdr(count_cb, v);
	if (v[0] == seen_adds && v[1] == seen_subs)
		return;
	if (seen_subs != ~0ULL && v[1] != seen_subs && as)
		unw_flush_cache(as, 0, 0);
	nsegs = 0;
	dl_iterate_phdr(seg_cb, NULL);
	qsort(segs, (size_t)nsegs, sizeof(*segs), seg_cmp);
	seen_adds = v[0];
	seen_subs = v[1];
}

static bool in_segs(uintptr_t addr, size_t n)
{
	int a = 0, b = nsegs;
	while (a < b) {
		int m = a + (b - a) / 2;
		if (addr < segs[m].lo)
			b = m;
		else if (addr >= segs[m].hi)
			a = m + 1;
		else
			return segs[m].hi - addr >= n;
	}
	return false;
}

static int acc_find_proc_info(unw_addr_space_t a, unw_word_t ip,
			      unw_proc_info_t *pi, int need, void *arg)
{
	return local_acc->find_proc_info(a, ip, pi, need, arg);
}

static void acc_put_unwind_info(unw_addr_space_t a, unw_proc_info_t *pi,
				void *arg)
{
	local_acc->put_unwind_info(a, pi, arg);
}

static int acc_get_dyn_info_list_addr(unw_addr_space_t a, unw_word_t *dil,
				      void *arg)
{
	return local_acc->get_dyn_info_list_addr(a, dil, arg);
}

static int acc_access_mem(unw_addr_space_t a, unw_word_t addr, unw_word_t *val,
			  int write, void *arg)
{
	(void)a;
	const struct uw_snapshot *s = arg;
	if (write)
		return -UNW_EINVAL;
	if (s && addr >= s->stack_addr && s->stack_len >= sizeof(*val) &&
	    addr - s->stack_addr <= s->stack_len - sizeof(*val)) {
		memcpy(val, (const char *)s->stack + (addr - s->stack_addr),
		       sizeof(*val));
		return 0;
	}
	if (in_segs(addr, sizeof(*val))) {
		mem_copy_raw(val, (const void *)addr, sizeof(*val));
		return 0;
	}
	return -UNW_EINVAL;
}

static int acc_access_reg(unw_addr_space_t a, unw_regnum_t reg,
			  unw_word_t *val, int write, void *arg)
{
	(void)a;
	const struct uw_snapshot *s = arg;
	if (write || reg < 0 || reg >= UW_NREGS || !(s->valid & (1u << reg)))
		return -UNW_EBADREG;
	*val = s->regs[reg];
	return 0;
}

static int acc_access_fpreg(unw_addr_space_t a, unw_regnum_t reg,
			    unw_fpreg_t *val, int write, void *arg)
{
	(void)a;
	(void)reg;
	(void)val;
	(void)write;
	(void)arg;
	return -UNW_EBADREG;
}

static int acc_resume(unw_addr_space_t a, unw_cursor_t *c, void *arg)
{
	(void)a;
	(void)c;
	(void)arg;
	return -UNW_EINVAL;
}

static int acc_get_proc_name(unw_addr_space_t a, unw_word_t ip, char *buf,
			     size_t len, unw_word_t *off, void *arg)
{
	(void)a;
	(void)ip;
	(void)buf;
	(void)len;
	(void)off;
	(void)arg;
	return -UNW_ENOINFO;
}

/* Unwinds our own stack once so the first real capture is not the slow one. */
static void warm_up(void)
{
	unw_context_t ctx;
	unw_cursor_t cur;
	if (unw_getcontext(&ctx) != 0)
		return;
	if (unw_init_local(&cur, &ctx) != 0)
		return;
	for (int i = 0; i < 64 && unw_step(&cur) > 0; i++)
		;

	/* Same through our address space, from a copy of our stack. */
	static char copy[16384];
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	struct uw_snapshot s = {0};
	const mcontext_t *mc = &((ucontext_t *)&ctx)->uc_mcontext;
	s.regs[UW_RIP] = (uint64_t)mc->gregs[REG_RIP];
	s.regs[UW_RSP] = (uint64_t)mc->gregs[REG_RSP];
	s.regs[UW_RBP] = (uint64_t)mc->gregs[REG_RBP];
	s.regs[UW_RBX] = (uint64_t)mc->gregs[REG_RBX];
	s.regs[UW_R12] = (uint64_t)mc->gregs[REG_R12];
	s.regs[UW_R13] = (uint64_t)mc->gregs[REG_R13];
	s.regs[UW_R14] = (uint64_t)mc->gregs[REG_R14];
	s.regs[UW_R15] = (uint64_t)mc->gregs[REG_R15];
	s.valid = (1u << UW_RIP) | (1u << UW_RSP) | (1u << UW_RBP) |
		  (1u << UW_RBX) | (1u << UW_R12) | (1u << UW_R13) |
		  (1u << UW_R14) | (1u << UW_R15);
	uintptr_t from = s.regs[UW_RSP] < sp ? s.regs[UW_RSP] : sp;
	from &= ~(uintptr_t)7;
	/* Copy no further than our own stack's top. */
	pthread_attr_t attr;
	void *base;
	size_t size, len = 0;
	if (pthread_getattr_np(pthread_self(), &attr) != 0)
		return;
	if (pthread_attr_getstack(&attr, &base, &size) == 0 &&
	    from >= (uintptr_t)base && from < (uintptr_t)base + size)
		len = (uintptr_t)base + size - from;
	pthread_attr_destroy(&attr);
	if (len > sizeof(copy))
		len = sizeof(copy);
	mem_copy_raw(copy, (const void *)from, len);
	s.stack_addr = from;
	s.stack = copy;
	s.stack_len = len;
	uintptr_t ips[16];
	bool trunc;
	unwind_snapshot(&s, ips, 16, &trunc);
}

bool unwind_init(void)
{
	static unw_accessors_t acc;
	if (as)
		return true;
	local_acc = unw_get_accessors(unw_local_addr_space);
	if (!local_acc || !local_acc->find_proc_info)
		return false;
	acc.find_proc_info = acc_find_proc_info;
	acc.put_unwind_info = acc_put_unwind_info;
	acc.get_dyn_info_list_addr = acc_get_dyn_info_list_addr;
	acc.access_mem = acc_access_mem;
	acc.access_reg = acc_access_reg;
	acc.access_fpreg = acc_access_fpreg;
	acc.resume = acc_resume;
	acc.get_proc_name = acc_get_proc_name;
	as = unw_create_addr_space(&acc, 0);
	if (!as)
		return false;
	unw_set_caching_policy(as, UNW_CACHE_GLOBAL);
	unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
	warm_up();
	return true;
}

int unwind_snapshot(const struct uw_snapshot *s, uintptr_t *ips, int max,
		    bool *truncated)
{
	*truncated = false;
	if (!as || max <= 0)
		return 0;
	segs_refresh();
	unw_cursor_t cur;
	if (unw_init_remote(&cur, as, (void *)s) != 0)
		return 0;
	int n = 0;
	unw_word_t last_sp = 0;
	for (;;) {
		unw_word_t ip = 0, sp = 0;
		if (unw_get_reg(&cur, UNW_REG_IP, &ip) != 0 || ip == 0)
			break;
		unw_get_reg(&cur, UNW_REG_SP, &sp);
		if (n > 0 && sp < last_sp)
			break; /* going the wrong way: corrupt */
		if (n == max) {
			*truncated = true;
			break;
		}
		ips[n++] = ip;
		last_sp = sp;
		if (unw_step(&cur) <= 0)
			break;
	}
	return n;
}

