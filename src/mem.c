/* Fault-tolerant reads of our own memory. See mem.h. */
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common.h"
#include "real.h"

#if defined(__SANITIZE_ADDRESS__)
#define MEM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEM_ASAN 1
#endif
#endif

#ifdef MEM_ASAN
/* Unchecked, and through volatile pointers so that the compiler cannot turn
 * the loop back into a call to the (checking) memcpy interceptor. */
__attribute__((no_sanitize_address)) void mem_copy_raw(void *dst,
							 const void *src,
							 size_t n)
{
	volatile unsigned char *d = dst;
	const volatile unsigned char *s = src;
	size_t i = 0;

	if ((((uintptr_t)d | (uintptr_t)s) & 7) == 0)
		for (; i + 8 <= n; i += 8)
			*(volatile uint64_t *)(d + i) =
				*(const volatile uint64_t *)(s + i);
	for (; i < n; i++)
		d[i] = s[i];
}
#else
void mem_copy_raw(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
}
#endif

bool mem_read_safe(void *dst, uintptr_t src, size_t n)
{
	if (n == 0)
		return true;
	if (src + n < src)
		return false;
	struct iovec local = {.iov_base = dst, .iov_len = n};
	struct iovec remote = {.iov_base = (void *)src, .iov_len = n};
	ssize_t r = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	if (r == (ssize_t)n)
		return true;
	if (r >= 0 || (errno != ENOSYS && errno != EPERM))
		return false;
	/* process_vm_readv forbidden (seccomp): fall back to the maps table. */
	return mem_read_mapped(dst, src, n);
}

/*
 * The readable-mapping table. Two buffers: the watchdog fills the one not
 * published, then publishes it with a release store; a handler reads the
 * published one. The watchdog is the only writer and refreshes at most once
 * per capture, after the previous capture is over, so a handler never sees a
 * buffer being rewritten.
 */
#define MAPS_MAX 8192
struct maps {
	int n;
	uint32_t gen; /* which refresh filled it, never 0 */
	uintptr_t lo[MAPS_MAX];
	uintptr_t hi[MAPS_MAX];
};
static struct maps maps_buf[2];
static _Atomic(struct maps *) maps_cur;
static uint32_t maps_gen;

/* The mapping found last by this thread: a walk reads one heap and one
 * stack over and over, and a search costs a dozen cache misses. One word,
 * (table generation << 32) | index, so that a signal handler running the
 * same code in between never sees half of an update. 0: none. */
static __thread uint64_t last_hit __attribute__((tls_model("initial-exec")));

static bool parse_hex(const char **p, const char *end, uintptr_t *out)
{
	uintptr_t v = 0;
	const char *s = *p;
	if (s >= end)
		return false;
	for (; s < end; s++) {
		int d;
		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (*s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else
			break;
		v = (v << 4) | (uintptr_t)d;
	}
	if (s == *p)
		return false;
	*p = s;
	*out = v;
	return true;
}

/*
 * A file mapping's pages past the end of the file raise SIGBUS when read:
 * keep only the part the file covers. Device files are left out. rest
 * points after "lo-hi" on a /proc/self/maps line. False: leave it out.
 */
static void clip_forget(void);

static bool clip_to_file(const char *rest, const char *end, uintptr_t lo,
			 uintptr_t *hi)
{
	static char last_path[PATH_MAX];
	static int last_kind; /* 0 none, 1 regular (last_size), 2 other, 3 gone */
	static uint64_t last_size;
	if (!rest) {
		last_kind = 0;
		return true;
	}
	/* " perms offset dev inode   path" */
	const char *p = rest;
	while (p < end && *p == ' ')
		p++;
	while (p < end && *p != ' ')
		p++; /* perms */
	while (p < end && *p == ' ')
		p++;
	uintptr_t off;
	if (!parse_hex(&p, end, &off))
		return true;
	for (int field = 0; field < 2; field++) { /* dev, inode */
		while (p < end && *p == ' ')
			p++;
		while (p < end && *p != ' ')
			p++;
	}
	while (p < end && *p == ' ')
		p++;
	if (p >= end || *p != '/')
		return true; /* anonymous, [heap], [stack], ... */
	char path[PATH_MAX];
	size_t n = (size_t)(end - p);
	if (n >= sizeof(path))
		return false;
	memcpy(path, p, n);
	path[n] = '\0';
	if (strncmp(path, "/dev/", 5) == 0)
		return false;
	/* Consecutive lines are mostly the same file: stat it once. */
	if (!last_kind || strcmp(path, last_path) != 0) {
		struct stat st;
		memcpy(last_path, path, n + 1);
		if (stat(path, &st) != 0)
			last_kind = 3;
		else if (!S_ISREG(st.st_mode))
			last_kind = 2;
		else {
			last_kind = 1;
			last_size = (uint64_t)st.st_size;
		}
	}
	if (last_kind == 3)
		return true; /* replaced or deleted: an object still loaded */
	if (last_kind == 2)
		return false;
	uintptr_t page = 4096;
	uint64_t size = last_size;
	if (size <= off)
		return false;
	uint64_t covered = (size - off + page - 1) & ~(uint64_t)(page - 1);
	if (lo + covered < *hi)
		*hi = lo + covered;
	return *hi > lo;
}

static void clip_forget(void)
{
	/* Files change between refreshes. */
	clip_to_file(NULL, NULL, 0, NULL);
}

int mem_maps_refresh(void)
{
	clip_forget();
	struct maps *cur = atomic_load_explicit(&maps_cur, memory_order_acquire);
	struct maps *m = cur == &maps_buf[0] ? &maps_buf[1] : &maps_buf[0];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char buf[16384];
	size_t have = 0;
	m->n = 0;
	bool eof = false;
	while (!eof || have > 0) {
		if (!eof && have < sizeof(buf)) {
			ssize_t r = real_read(fd, buf + have, sizeof(buf) - have);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				eof = true;
			else
				have += (size_t)r;
		}
		char *nl = memchr(buf, '\n', have);
		if (!nl) {
			if (eof || have == sizeof(buf))
				break;
			continue;
		}
		const char *p = buf, *end = nl;
		uintptr_t lo, hi;
		if (parse_hex(&p, end, &lo) && p < end && *p == '-' &&
		    (p++, parse_hex(&p, end, &hi)) && p + 2 < end &&
		    p[1] == 'r' && m->n < MAPS_MAX && hi > lo) {
			/* Merge adjacent readable ranges. Skip [vvar] and
			 * [vvar_vclock]: reading some of their pages faults. */
			bool skip = memmem(p, (size_t)(end - p), "[vvar", 5) != NULL;
			if (!skip)
				skip = !clip_to_file(p, end, lo, &hi);
			if (!skip) {
				if (m->n > 0 && m->hi[m->n - 1] == lo)
					m->hi[m->n - 1] = hi;
				else {
					m->lo[m->n] = lo;
					m->hi[m->n] = hi;
					m->n++;
				}
			}
		}
		size_t used = (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, have - used);
		have -= used;
	}
	real_close(fd);
	if (++maps_gen == 0)
		maps_gen++; /* 0 is "no hit" */
	m->gen = maps_gen;
	atomic_store_explicit(&maps_cur, m, memory_order_release);
	return m->n > 0 ? 0 : -ENOENT;
}

/* async-signal-safe */
static int maps_find(const struct maps *m, uintptr_t addr)
{
	int a = 0, b = m->n;
	while (a < b) {
		int mid = a + (b - a) / 2;
		if (addr < m->lo[mid])
			b = mid;
		else if (addr >= m->hi[mid])
			a = mid + 1;
		else
			return mid;
	}
	return -1;
}

/* async-signal-safe */
bool mem_mapping_of(uintptr_t addr, uintptr_t *lo, uintptr_t *hi)
{
	const struct maps *m = atomic_load_explicit(&maps_cur, memory_order_acquire);
	if (!m)
		return false;
	uint64_t hit = last_hit;
	uint32_t gen = m->gen;
	int i = (int)(uint32_t)hit;
	if ((uint32_t)(hit >> 32) != gen || i >= m->n || addr < m->lo[i] ||
	    addr >= m->hi[i]) {
		i = maps_find(m, addr);
		if (i < 0)
			return false;
		last_hit = ((uint64_t)gen << 32) | (uint32_t)i;
	}
	*lo = m->lo[i];
	*hi = m->hi[i];
	return true;
}

/* async-signal-safe */
bool mem_read_mapped(void *dst, uintptr_t src, size_t n)
{
	if (n == 0)
		return true;
	if (src + n < src)
		return false;
	uintptr_t lo, hi;
	if (!mem_mapping_of(src, &lo, &hi) || src + n > hi)
		return false;
	mem_copy_raw(dst, (const void *)src, n);
	return true;
}
