/*
 * The ELF symbolizer on mutated files: symtab_load_mem on the input, and
 * symtab_load_nodebug on the same bytes as a file (a memfd), which takes
 * the pread/elf_begin path a real lookup takes. libelf is not instrumented,
 * but a wild read in it still faults and libFuzzer reports it; libFuzzer
 * also reports a target that writes to its input (elf_memory gets it
 * without const).
 *
 * Checks on a loaded table: entries sorted by strictly increasing address,
 * each with end > addr and a non-empty name of at most 1024 bytes; both
 * paths give the same table; symtab_find on every entry's start, its last
 * byte, its end and on addresses taken from the input answers what a plain
 * scan of the table answers (the nearest entry at or below the address, or
 * one of the 16 before it, that covers it).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "symbols.h"

#define NEST_SCAN 16 /* SYMTAB_NEST_SCAN in symbols.c */

static void check_find(const struct symtab *t, uintptr_t vaddr)
{
	size_t n = symtab_count(t), lo = 0;
	uintptr_t a, s, off = 0x5a5a;
	const char *name, *want = NULL;
	uintptr_t want_off = 0;

	/* Entries at or below vaddr: [0, lo). */
	size_t hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		symtab_get(t, mid, &a, &s, &name);
		if (a <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t j = lo, k = 0; j > 0 && k <= NEST_SCAN; j--, k++) {
		symtab_get(t, j - 1, &a, &s, &name);
		if (vaddr - a < s) {
			want = name;
			want_off = vaddr - a;
			break;
		}
	}
	const char *got = symtab_find(t, vaddr, &off);
	FUZZ_CHECK(got == want, "find(%#lx) = %s, want %s", (unsigned long)vaddr,
		   got ? got : "(none)", want ? want : "(none)");
	if (got)
		FUZZ_CHECK(off == want_off, "find(%#lx): offset %#lx, want %#lx",
			   (unsigned long)vaddr, (unsigned long)off,
			   (unsigned long)want_off);
	(void)symtab_find(t, vaddr, NULL);
}

static void check_table(const struct symtab *t)
{
	size_t n = symtab_count(t);
	uintptr_t a, s, prev = 0;
	const char *name;

	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(symtab_get(t, i, &a, &s, &name), "entry %zu missing", i);
		FUZZ_CHECK(i == 0 || a > prev, "entry %zu at %#lx after %#lx", i,
			   (unsigned long)a, (unsigned long)prev);
		FUZZ_CHECK(s > 0 && a + s > a, "entry %zu: size %#lx at %#lx", i,
			   (unsigned long)s, (unsigned long)a);
		size_t len = strlen(name);
		FUZZ_CHECK(len > 0 && len <= 1024, "entry %zu: name of %zu bytes",
			   i, len);
		prev = a;
	}
	FUZZ_CHECK(!symtab_get(t, n, &a, &s, &name), "entry past the end");
}

static bool same_tables(const struct symtab *x, const struct symtab *y)
{
	size_t n = symtab_count(x);
	uintptr_t a1, s1, a2, s2;
	const char *n1, *n2;

	if (symtab_count(y) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		symtab_get(x, i, &a1, &s1, &n1);
		symtab_get(y, i, &a2, &s2, &n2);
		if (a1 != a2 || s1 != s2 || strcmp(n1, n2) != 0)
			return false;
	}
	return true;
}

static int memfd = -1;

static struct symtab *load_as_file(const uint8_t *data, size_t size)
{
	char path[64];

	if (memfd < 0)
		memfd = memfd_create("fuzz_symtab", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, 0) != 0 ||
	    pwrite(memfd, data, size, 0) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	return symtab_load_nodebug(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct symtab *t = symtab_load_mem(data, size);
	struct symtab *f = load_as_file(data, size);

	FUZZ_CHECK(!t == !f || size == 0,
		   "loaded from memory: %s, from a file: %s", t ? "yes" : "no",
		   f ? "yes" : "no");
	if (t && f)
		FUZZ_CHECK(same_tables(t, f), "memory and file tables differ");
	symtab_free(f);
	if (!t)
		return 0;
	check_table(t);

	size_t n = symtab_count(t);
	uintptr_t a, s;
	const char *name;
	for (size_t i = 0; i < n && i < 4096; i++) {
		symtab_get(t, i, &a, &s, &name);
		check_find(t, a);
		check_find(t, a + s - 1);
		check_find(t, a + s);
		if (a > 0)
			check_find(t, a - 1);
	}
	/* Addresses from the input itself: whatever the file says. */
	for (size_t off = 0; off + 8 <= size && off < 64 * 8; off += 8) {
		uintptr_t v;
		memcpy(&v, data + off, sizeof(v));
		check_find(t, v);
	}
	check_find(t, 0);
	check_find(t, UINTPTR_MAX);
	symtab_free(t);
	return 0;
}
