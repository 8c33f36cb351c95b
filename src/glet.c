/* Current greenlets through glibc's DTV. See glet.h. */
#include "glet.h"

#include <link.h>
#include <string.h>

#include "common.h"
#include "mem.h"

_Atomic size_t glet_modid;
size_t glet_ts_off;

static size_t found_modid;  /* greenlet's module id, layout not checked */
static uintptr_t main_type; /* type of a main greenlet (greenlet.greenlet) */

/* A look over the loaded objects: the loader's count of objects loaded
 * so far (dlpi_adds), as the last look saw it; a look that finds it
 * unchanged stops at the first object, since nothing was loaded since. */
struct look {
	bool first;
	unsigned long long adds; /* in: the last look's; out: this one's */
};
static struct look last_look;

static int find_module(struct dl_phdr_info *info, size_t size, void *data)
{
	struct look *l = data;
	if (l->first) {
		l->first = false;
		if (size >= offsetof(struct dl_phdr_info, dlpi_adds) +
				    sizeof(info->dlpi_adds)) {
			if (l->adds && info->dlpi_adds == l->adds)
				return 1;
			l->adds = info->dlpi_adds;
		}
	}
	const char *n = info->dlpi_name;
	if (n && strstr(n, "greenlet/_greenlet") && info->dlpi_tls_modid) {
		found_modid = info->dlpi_tls_modid;
		return 1;
	}
	return 0;
}

static bool rd(uintptr_t addr, uintptr_t *out)
{
	return addr >= 4096 && mem_read_safe(out, addr, sizeof(*out));
}

/* The type's tp_name is "greenlet.greenlet" (PyTypeObject: tp_name +24). */
static bool is_main_type(uintptr_t type)
{
	uintptr_t name;
	char buf[18];
	if (!rd(type + 24, &name) || !mem_read_safe(buf, name, sizeof(buf)))
		return false;
	return memcmp(buf, "greenlet.greenlet", 18) == 0;
}

bool glet_is_greenlet(uintptr_t obj)
{
	uintptr_t type;
	if (!main_type || !rd(obj + 8, &type))
		return false;
	/* tp_base at +256 on 3.8-3.13 (PyTypeObject is the same up to it) */
	for (int depth = 0; depth < 16 && type; depth++) {
		if (type == main_type)
			return true;
		if (!rd(type + 256, &type))
			return false;
	}
	return false;
}

/* The TLS block of module m of a thread, 0 if it has none. */
static uintptr_t tls_block(unsigned long pthread_id, size_t m)
{
	uintptr_t dtv, count, blk;
	if (!rd(pthread_id + 8, &dtv) || !rd(dtv - 16, &count) || m > count ||
	    !rd(dtv + 16 * m, &blk) || blk == (uintptr_t)-1)
		return 0;
	return blk;
}

static uintptr_t current_at(uintptr_t blk, size_t off, uintptr_t *main)
{
	uintptr_t ts, m, cur;
	if (!rd(blk + off, &ts) || ts < 4096 || !rd(ts, &m) || !rd(ts + 8, &cur))
		return 0;
	*main = m;
	return cur;
}

bool glet_setup(unsigned long pthread_id)
{
	if (atomic_load(&glet_modid))
		return true;
	if (!found_modid) {
		/* Looked for again at most once a second: most processes
		 * never load greenlet. */
		static int64_t last;
		int64_t now = clock_mono_ns();
		if (last && now - last < NS_PER_SEC)
			return false;
		last = now;
		last_look.first = true;
		dl_iterate_phdr(find_module, &last_look);
	}
	if (!found_modid)
		return false;
	uintptr_t blk = tls_block(pthread_id, found_modid);
	if (!blk)
		return false;
	/* The ThreadState pointer: its main and current greenlets are
	 * greenlets, the main one of type greenlet.greenlet. */
	for (size_t off = 0; off < 64; off += 8) {
		uintptr_t main = 0, cur = current_at(blk, off, &main), type;
		if (!cur || !rd(main + 8, &type) || !is_main_type(type))
			continue;
		main_type = type;
		if (!glet_is_greenlet(cur))
			continue;
		glet_ts_off = off;
		atomic_store(&glet_modid, found_modid);
		return true;
	}
	return false;
}

uintptr_t glet_current_of(unsigned long pthread_id, uintptr_t *main)
{
	size_t m = atomic_load(&glet_modid);
	*main = 0;
	if (!m)
		return 0;
	uintptr_t blk = tls_block(pthread_id, m);
	if (!blk)
		return 0;
	uintptr_t cur = current_at(blk, glet_ts_off, main);
	return cur && glet_is_greenlet(cur) ? cur : 0;
}
