#include <criterion/criterion.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "symbols.h"

#define PYTHON "/usr/bin/python3.11"

/* A local symbol only .symtab names; called through a volatile pointer so
 * it keeps its own name and body. */
static __attribute__((noinline, used)) int sd_test_static_target(int x)
{
	int i, acc = x;

	for (i = 0; i < x; i++)
		acc = acc * 31 + i;
	return acc;
}

static int (*volatile static_target)(int) = sd_test_static_target;

static uintptr_t target_addr(void)
{
	return (uintptr_t)static_target;
}

static void *libc_sym(const char *name)
{
	void *h = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
	void *p;

	cr_assert_not_null(h, "libc.so.6 not loaded: %s", dlerror());
	p = dlsym(h, name);
	cr_assert_not_null(p, "no %s in libc", name);
	dlclose(h);
	return p;
}

static const char *self_exe(void)
{
	static char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	cr_assert_gt(n, 0);
	buf[n] = '\0';
	return buf;
}

/* The path symbols_lookup reports for libc (strdup'd). */
static char *libc_path(uintptr_t *bias)
{
	struct sym_info si;

	cr_assert(symbols_lookup((uintptr_t)libc_sym("getpid"), &si));
	cr_assert_not_null(si.object);
	if (bias)
		*bias = si.obj_base;
	return strdup(si.object);
}

static bool table_has(const struct symtab *t, const char *name,
		      uintptr_t *addr, uintptr_t *size)
{
	size_t i, n = symtab_count(t);
	uintptr_t a, s;
	const char *nm;

	for (i = 0; i < n; i++) {
		cr_assert(symtab_get(t, i, &a, &s, &nm));
		if (strcmp(nm, name) == 0) {
			if (addr)
				*addr = a;
			if (size)
				*size = s;
			return true;
		}
	}
	return false;
}

/* Every entry sorted, sized, named; every lookup consistent with them. */
static void table_check(const struct symtab *t)
{
	size_t i, n = symtab_count(t);
	uintptr_t prev = 0, a, s, off;
	const char *nm, *found;

	for (i = 0; i < n; i++) {
		cr_assert(symtab_get(t, i, &a, &s, &nm));
		cr_assert_gt(s, 0);
		cr_assert_gt(strlen(nm), 0);
		if (i > 0)
			cr_assert_gt(a, prev, "not sorted or duplicated");
		prev = a;
		found = symtab_find(t, a, &off);
		cr_assert_not_null(found);
		if (found == nm)
			cr_assert_eq(off, 0);
	}
	cr_assert_not(symtab_get(t, n, &a, &s, &nm));
}

static char tmpdir[] = "/tmp/sd-test-symbols.XXXXXX";
static bool tmpdir_made;

static void tmpdir_make(void)
{
	cr_assert_not_null(mkdtemp(tmpdir));
	tmpdir_made = true;
}

static void tmpdir_remove(void)
{
	char cmd[PATH_MAX + 16];

	if (!tmpdir_made)
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void file_write(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static void *file_read(const char *path, size_t *n)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(fstat(fd, &st), 0);
	p = malloc((size_t)st.st_size);
	cr_assert_not_null(p);
	cr_assert_eq(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*n = (size_t)st.st_size;
	return p;
}

static bool have_tool(const char *tool)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------------- */

TestSuite(symbols, .fini = symbols_flush);

Test(symbols, static_function_in_executable)
{
	struct sym_info si;

	cr_assert_eq(static_target(3), sd_test_static_target(3));
	cr_assert(symbols_lookup(target_addr(), &si));
	cr_assert_str_eq(si.object, self_exe());
	cr_assert_str_eq(si.name, "sd_test_static_target");
	cr_assert_eq(si.offset, 0);

	cr_assert(symbols_lookup(target_addr() + 3, &si));
	cr_assert_str_eq(si.name, "sd_test_static_target");
	cr_assert_eq(si.offset, 3);
}

Test(symbols, libc_function_entry)
{
	struct sym_info si;

	cr_assert(symbols_lookup((uintptr_t)libc_sym("getpid"), &si));
	cr_assert_not_null(strstr(si.object, "libc.so.6"), "%s", si.object);
	/* getpid over its alias __getpid. */
	cr_assert_str_eq(si.name, "getpid");
	cr_assert_eq(si.offset, 0);
	cr_assert_neq(si.obj_base, 0);
}

Test(symbols, inside_libc_function)
{
	struct sym_info si;

	cr_assert(symbols_lookup((uintptr_t)libc_sym("read") + 5, &si));
	cr_assert_str_eq(si.name, "read"); /* over __read, __libc_read */
	cr_assert_eq(si.offset, 5);
}

/* The symbol sizes are respected: one past the end of a function followed
 * by padding names nothing, but the object is still known. */
Test(symbols, gap_between_functions)
{
	uintptr_t bias, a, s, a2, s2, off;
	char *path = libc_path(&bias);
	struct symtab *t = symtab_load(path);
	struct sym_info si;
	const char *nm, *nm2;
	size_t i, n;
	bool done = false;

	cr_assert_not_null(t);
	n = symtab_count(t);
	cr_assert_gt(n, 1000);
	for (i = 0; i + 1 < n && !done; i++) {
		cr_assert(symtab_get(t, i, &a, &s, &nm));
		cr_assert(symtab_get(t, i + 1, &a2, &s2, &nm2));
		if (a + s >= a2 || symtab_find(t, a + s, NULL) != NULL ||
		    symtab_find(t, a + s - 1, NULL) != nm)
			continue;

		cr_assert(symbols_lookup(bias + a + s - 1, &si));
		cr_assert_str_eq(si.name, nm);
		cr_assert_eq(si.offset, s - 1);

		cr_assert(symbols_lookup(bias + a + s, &si), "object known");
		cr_assert_str_eq(si.object, path);
		cr_assert_null(si.name, "%s+%#lx past %s size %#lx", si.name,
			       si.offset, nm, s);
		cr_assert_null(symtab_find(t, a + s, &off));
		done = true;
	}
	cr_assert(done, "no gap found in libc");
	symtab_free(t);
	free(path);
}

Test(symbols, address_in_no_object)
{
	struct sym_info si;
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	cr_assert_not(symbols_lookup((uintptr_t)p + 100, &si));
	cr_assert_null(si.object);
	cr_assert_null(si.name);
	cr_assert_not(symbols_lookup(0, &si));
	cr_assert_not(symbols_lookup(UINTPTR_MAX, &si));
	cr_assert_null(si.object);
	munmap(p, 4096);
}

Test(symbols, vdso_function)
{
	void *h = dlopen("linux-vdso.so.1", RTLD_NOLOAD | RTLD_LAZY);
	void *fn = h ? dlsym(h, "__vdso_clock_gettime") : NULL;
	struct sym_info si;

	if (!fn)
		cr_skip_test("no vDSO clock_gettime to look up");
	cr_assert(symbols_lookup((uintptr_t)fn + 1, &si));
	cr_assert_str_eq(si.object, "[vdso]");
	cr_assert_not_null(si.name);
	cr_assert(strcmp(si.name, "clock_gettime") == 0 ||
		  strcmp(si.name, "__vdso_clock_gettime") == 0, "%s", si.name);
	cr_assert_eq(si.offset, 1);
}

Test(symbols, flush_then_lookup_again)
{
	struct sym_info a, b;

	cr_assert(symbols_lookup(target_addr(), &a));
	cr_assert_str_eq(a.name, "sd_test_static_target");
	symbols_flush();
	symbols_flush();
	cr_assert(symbols_lookup(target_addr(), &b));
	cr_assert_str_eq(b.name, "sd_test_static_target");
	cr_assert_eq(a.obj_base, b.obj_base);
	symbols_refresh();
	cr_assert(symbols_lookup(target_addr(), &b));
	cr_assert_str_eq(b.name, "sd_test_static_target");
}

/* An object loaded after the first scan is found on the miss; once it is
 * unloaded it is forgotten. What lookups handed out stays readable through
 * the rescans until symbols_refresh. */
Test(symbols, dlopen_after_first_scan)
{
	static const char *const libs[] = {
		"libm.so.6", "libz.so.1", "libresolv.so.2", "libbz2.so.1.0",
	};
	static const char *const fns[] = {
		"cos", "crc32", "ns_name_ntop", "BZ2_bzlibVersion",
	};
	struct sym_info first, si, in_lib;
	char *in_lib_name, *in_lib_object;
	void *h = NULL, *fn = NULL, *again, *anon;
	Dl_info di;
	size_t i;

	cr_assert(symbols_lookup(target_addr(), &first));
	for (i = 0; i < sizeof(libs) / sizeof(libs[0]) && !fn; i++) {
		if (dlopen(libs[i], RTLD_NOLOAD | RTLD_LAZY))
			continue; /* already loaded: proves nothing */
		h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
		fn = h ? dlsym(h, fns[i]) : NULL;
		/* Stub libraries whose functions moved into libc. */
		if (fn && (!dladdr(fn, &di) || !di.dli_fname ||
			   !strstr(di.dli_fname, libs[i])))
			fn = NULL;
		if (h && !fn)
			dlclose(h);
	}
	if (!fn)
		cr_skip_test("no unloaded library to dlopen");
	cr_assert(symbols_lookup((uintptr_t)fn, &in_lib));
	cr_assert_not_null(strstr(in_lib.object, libs[i - 1]), "%s",
			   in_lib.object);
	cr_assert_not_null(in_lib.name);
	/* The rescan kept what the first lookup returned. */
	cr_assert_str_eq(first.name, "sd_test_static_target");
	cr_assert_str_eq(first.object, self_exe());
	in_lib_name = strdup(in_lib.name);
	in_lib_object = strdup(in_lib.object);

	dlclose(h);
	again = dlopen(libs[i - 1], RTLD_NOLOAD | RTLD_LAZY);
	if (again)
		cr_skip_test("%s stays loaded after dlclose", libs[i - 1]);
	/* A hit trusts the cache until symbols_refresh; any miss rescans,
	 * and the unloaded object's strings live on. */
	anon = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(anon, MAP_FAILED);
	cr_assert_not(symbols_lookup((uintptr_t)anon, &si));
	munmap(anon, 4096);
	cr_assert_not(symbols_lookup((uintptr_t)fn, &si));
	cr_assert_null(si.object);
	cr_assert_str_eq(in_lib.name, in_lib_name);
	cr_assert_str_eq(in_lib.object, in_lib_object);
	cr_assert_str_eq(first.name, "sd_test_static_target");

	symbols_refresh();
	cr_assert_not(symbols_lookup((uintptr_t)fn, &si));
	cr_assert(symbols_lookup(target_addr(), &si));
	cr_assert_str_eq(si.name, "sd_test_static_target");
	free(in_lib_name);
	free(in_lib_object);
}

Test(symbols, lookups_are_fast)
{
	uintptr_t addr = (uintptr_t)libc_sym("read") + 7;
	struct sym_info si;
	const int n = 200000;
	double t0, per_ns;
	int i;

	cr_assert(symbols_lookup(addr, &si));
	t0 = now_ms();
	for (i = 0; i < n; i++)
		symbols_lookup(addr + (uintptr_t)(i & 63), &si);
	per_ns = (now_ms() - t0) * 1e6 / n;
	cr_log_info("symbols_lookup: %.1f ns per lookup", per_ns);
	fprintf(stderr, "symbols_lookup: %.1f ns per lookup\n", per_ns);
	/* Tens of ns normally; generous for sanitizer builds. */
	cr_assert_lt(per_ns, 2000.0);
}

Test(symbols, libc_loads_quickly)
{
	char *path = libc_path(NULL);
	struct symtab *t;
	double t0, best = 1e9, ms;
	int i;

	for (i = 0; i < 5; i++) {
		t0 = now_ms();
		t = symtab_load(path);
		ms = now_ms() - t0;
		cr_assert_not_null(t);
		if (ms < best)
			best = ms;
		symtab_free(t);
	}
	fprintf(stderr, "symtab_load(%s): %.2f ms\n", path, best);
	cr_assert_lt(best, 100.0);
	free(path);
}

/* ---------------------------------------------------------------------- */
/* symtab_load on whole files                                             */

Test(symbols, table_of_test_binary)
{
	struct sym_info si;
	struct symtab *t = symtab_load("/proc/self/exe");
	uintptr_t off, vaddr, a, s;

	cr_assert_not_null(t);
	table_check(t);
	cr_assert(symbols_lookup(target_addr(), &si));
	vaddr = target_addr() - si.obj_base;
	cr_assert_str_eq(symtab_find(t, vaddr, &off), "sd_test_static_target");
	cr_assert_eq(off, 0);
	cr_assert(table_has(t, "sd_test_static_target", &a, &s));
	cr_assert_eq(a, vaddr);
	cr_assert_str_eq(symtab_find(t, a + s - 1, &off),
			 "sd_test_static_target");
	cr_assert_eq(off, s - 1);
	/* The next function may start right at the end: never this one. */
	cr_assert(symtab_find(t, a + s, NULL) == NULL ||
		  strcmp(symtab_find(t, a + s, NULL),
			 "sd_test_static_target") != 0);
	symtab_free(t);
}

/* Debian's python3.11 is stripped: only .dynsym, sizes respected. Its debug
 * file is normally absent: the debuglink and build-id searches must just
 * come back empty. */
Test(symbols, stripped_python)
{
	struct symtab *t;
	uintptr_t a, s, off;
	const char *nm;
	FILE *p;
	char line[512];
	bool nm_checked = false;

	if (access(PYTHON, R_OK) != 0)
		cr_skip_test(PYTHON " not installed");
	t = symtab_load(PYTHON);
	cr_assert_not_null(t);
	table_check(t);
	cr_assert_gt(symtab_count(t), 1000);
	cr_assert(table_has(t, "PyObject_GetAttr", &a, &s));
	cr_assert_str_eq(symtab_find(t, a, &off), "PyObject_GetAttr");
	cr_assert_eq(off, 0);
	cr_assert_str_eq(symtab_find(t, a + s - 1, &off), "PyObject_GetAttr");
	cr_assert_eq(off, s - 1);
	nm = symtab_find(t, a + s, &off);
	cr_assert(!nm || strcmp(nm, "PyObject_GetAttr") != 0);

	/* An independent reader agrees on address and size. */
	if (have_tool("nm")) {
		p = popen("nm -D -S --defined-only " PYTHON, "r");
		cr_assert_not_null(p);
		while (fgets(line, sizeof(line), p)) {
			unsigned long na, ns;
			char ty, name[256];

			if (sscanf(line, "%lx %lx %c %255s", &na, &ns, &ty,
				   name) == 4 &&
			    strcmp(name, "PyObject_GetAttr") == 0) {
				cr_assert_eq(na, a);
				cr_assert_eq(ns, s);
				nm_checked = true;
			}
		}
		pclose(p);
		cr_assert(nm_checked);
	}
	symtab_free(t);
}

/* libc is stripped too; with libc6-dbg its build-id debug file adds the
 * static functions. */
Test(symbols, libc_debug_file_merged)
{
	char *path = libc_path(NULL);
	struct symtab *plain = symtab_load_nodebug(path);
	struct symtab *full = symtab_load(path);
	uintptr_t a, s, off;

	cr_assert_not_null(plain);
	cr_assert_not_null(full);
	table_check(full);
	cr_assert_geq(symtab_count(full), symtab_count(plain));
	/* .dynsym entries survive the merge. */
	cr_assert(table_has(full, "getpid", NULL, NULL));
	if (symtab_count(full) == symtab_count(plain))
		cr_skip_test("no debug file for %s", path);
	/* A static function of libc's stdio, with no alias. */
	cr_assert_not(table_has(plain, "new_do_write", NULL, NULL));
	cr_assert(table_has(full, "new_do_write", &a, &s));
	cr_assert_str_eq(symtab_find(full, a + 1, &off), "new_do_write");
	cr_assert_eq(off, 1);
	symtab_free(plain);
	symtab_free(full);
	free(path);
}

static int run(const char *cmd)
{
	int rc = system(cmd);

	if (rc != 0)
		fprintf(stderr, "failed (%d): %s\n", rc, cmd);
	return rc;
}

/* A stripped copy of the test binary with a .gnu_debuglink to a debug file
 * in .debug/: accepted by CRC, refused once the CRC no longer matches;
 * with build-ids present in both, accepted by build-id next to the file. */
Test(symbols, debuglink_found_and_checked, .init = tmpdir_make,
     .fini = tmpdir_remove)
{
	char cmd[4 * PATH_MAX], prog[PATH_MAX], prog2[PATH_MAX];
	char note[PATH_MAX];
	unsigned char *id;
	size_t id_len;
	struct symtab *t;
	int fd;

	if (!have_tool("objcopy") || !have_tool("strip"))
		cr_skip_test("objcopy/strip not installed");
	snprintf(prog, sizeof(prog), "%s/prog", tmpdir);
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd '%s'; mkdir .debug; cp /proc/%d/exe prog;"
		 " objcopy --only-keep-debug prog .debug/prog.dbg;"
		 " objcopy --remove-section=.note.gnu.build-id .debug/prog.dbg;"
		 " strip prog;"
		 " objcopy --add-gnu-debuglink=.debug/prog.dbg prog",
		 tmpdir, (int)getpid());
	cr_assert_eq(run(cmd), 0);

	t = symtab_load_nodebug(prog);
	cr_assert_not_null(t);
	cr_assert_not(table_has(t, "sd_test_static_target", NULL, NULL));
	symtab_free(t);

	t = symtab_load(prog);
	cr_assert_not_null(t);
	table_check(t);
	cr_assert(table_has(t, "sd_test_static_target", NULL, NULL),
		  "debug file by CRC not used");
	symtab_free(t);

	/* One more byte: same symbols, other CRC. */
	snprintf(cmd, sizeof(cmd), "%s/.debug/prog.dbg", tmpdir);
	fd = open(cmd, O_WRONLY | O_APPEND | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "x", 1), 1);
	close(fd);
	t = symtab_load(prog);
	cr_assert_not_null(t);
	cr_assert_not(table_has(t, "sd_test_static_target", NULL, NULL),
		      "debug file with a wrong CRC used");
	symtab_free(t);

	/* Build-ids in both, debug file next to the object. */
	snprintf(prog2, sizeof(prog2), "%s/prog2", tmpdir);
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd '%s'; cp /proc/%d/exe prog2;"
		 " objcopy --only-keep-debug prog2 prog2.debug;"
		 " strip prog2;"
		 " objcopy --add-gnu-debuglink=prog2.debug prog2;"
		 " printf x >> prog2.debug",
		 tmpdir, (int)getpid());
	cr_assert_eq(run(cmd), 0);
	t = symtab_load(prog2);
	cr_assert_not_null(t);
	cr_assert(table_has(t, "sd_test_static_target", NULL, NULL),
		  "debug file by build-id not used");
	symtab_free(t);

	/* The same debug file with another build-id, and a debuglink CRC
	 * made to match it: the build-id decides. */
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd '%s';"
		 " objcopy --dump-section .note.gnu.build-id=note.bin"
		 " prog2.debug",
		 tmpdir);
	cr_assert_eq(run(cmd), 0);
	snprintf(note, sizeof(note), "%s/note.bin", tmpdir);
	id = file_read(note, &id_len);
	cr_assert_gt(id_len, 16);
	id[id_len - 1] ^= 0x5a;
	file_write(note, id, id_len);
	free(id);
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd '%s';"
		 " objcopy --update-section .note.gnu.build-id=note.bin"
		 " prog2.debug;"
		 " objcopy --remove-section .gnu_debuglink prog2;"
		 " objcopy --add-gnu-debuglink=prog2.debug prog2",
		 tmpdir);
	cr_assert_eq(run(cmd), 0);
	t = symtab_load(prog2);
	cr_assert_not_null(t);
	cr_assert_not(table_has(t, "sd_test_static_target", NULL, NULL),
		      "debug file with another build-id used");
	symtab_free(t);
}

/*
 * MiniDebugInfo made as Fedora makes it (the recipe of gdb's manual): the
 * functions .dynsym lacks, in a .symtab of an xz-packed ELF file put into
 * .gnu_debugdata of the stripped object. Its table is read from a file and
 * from memory; a damaged or missing stream gives .dynsym alone, no crash.
 */
Test(symbols, minidebuginfo, .init = tmpdir_make, .fini = tmpdir_remove)
{
	char cmd[4 * PATH_MAX], path[PATH_MAX];
	struct symtab *t, *m;
	unsigned char *img;
	size_t n;

	if (!have_tool("objcopy") || !have_tool("strip") || !have_tool("xz") ||
	    !have_tool("nm"))
		cr_skip_test("binutils or xz not installed");
	snprintf(cmd, sizeof(cmd),
		 "set -e; cd '%s'; cp /proc/%d/exe prog;"
		 " nm -D prog --format=posix --defined-only | awk '{print $1}'"
		 " | sort > dynsyms;"
		 " nm prog --format=posix --defined-only"
		 " | awk '$2 == \"T\" || $2 == \"t\" {print $1}' | sort > funcs;"
		 " comm -13 dynsyms funcs > keep;"
		 " objcopy --only-keep-debug prog mini;"
		 " objcopy -S --remove-section .gdb_index --remove-section .comment"
		 " --keep-symbols=keep mini mini2;"
		 " xz -k mini2; strip prog; cp prog plain;"
		 " objcopy --add-section .gnu_debugdata=mini2.xz prog;"
		 " head -c 200 mini2.xz > cut.xz; cp plain cut;"
		 " objcopy --add-section .gnu_debugdata=cut.xz cut;"
		 " cp plain raw;"
		 " objcopy --add-section .gnu_debugdata=mini2 raw",
		 tmpdir, (int)getpid());
	cr_assert_eq(run(cmd), 0);

	snprintf(path, sizeof(path), "%s/prog", tmpdir);
	t = symtab_load_nodebug(path);
	cr_assert_not_null(t);
	table_check(t);
	cr_assert(symtab_full(t), "MiniDebugInfo not read");
	cr_assert(table_has(t, "sd_test_static_target", NULL, NULL));
	img = file_read(path, &n);
	m = symtab_load_mem(img, n);
	cr_assert_not_null(m);
	cr_assert(symtab_full(m));
	cr_assert_eq(symtab_count(m), symtab_count(t));
	cr_assert(table_has(m, "sd_test_static_target", NULL, NULL));
	symtab_free(m);
	symtab_free(t);
	free(img);

	/* Stripped without it, a truncated stream, an unpacked one. */
	static const char *const bad[] = { "plain", "cut", "raw" };
	size_t plain_n = 0;
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, bad[i]);
		t = symtab_load_nodebug(path);
		cr_assert_not_null(t, "%s", bad[i]);
		cr_assert_not(symtab_full(t), "%s", bad[i]);
		cr_assert_not(table_has(t, "sd_test_static_target", NULL, NULL));
		if (i == 0)
			plain_n = symtab_count(t);
		cr_assert_eq(symtab_count(t), plain_n, "%s: .dynsym lost",
			     bad[i]);
		symtab_free(t);
	}
}

/*
 * An object replaced or deleted on disk after it was loaded (a package
 * upgrade under a running server): the file's symbols describe other code
 * and must not be used; a debug file matching the mapped image may be.
 */
static void check_stale_object(const char *lib, bool replace)
{
	char path[PATH_MAX], other[PATH_MAX], cmd[3 * PATH_MAX];
	struct symtab *before, *plain;
	struct sym_info si;
	const char *expect;
	bool has_debug;
	void *h, *fn;
	Dl_info di;

	snprintf(path, sizeof(path), "%s/libsdtest-%d.so", tmpdir, replace);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", lib, path);
	cr_assert_eq(run(cmd), 0);
	before = symtab_load(path);
	plain = symtab_load_nodebug(path);
	cr_assert_not_null(before);
	cr_assert_not_null(plain);
	has_debug = symtab_count(before) > symtab_count(plain);

	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	cr_assert_not_null(h, "%s", dlerror());
	fn = dlsym(h, "cos");
	cr_assert_not_null(fn);
	cr_assert(dladdr(fn, &di) && strcmp(di.dli_fname, path) == 0,
		  "cos not from the copy");
	expect = symtab_find(before, (uintptr_t)fn - (uintptr_t)di.dli_fbase,
			     NULL);
	cr_assert_not_null(expect);

	if (replace) {
		snprintf(other, sizeof(other), "%s/other", tmpdir);
		snprintf(cmd, sizeof(cmd), "cp /proc/%d/exe '%s'",
			 (int)getpid(), other);
		cr_assert_eq(run(cmd), 0);
		cr_assert_eq(rename(other, path), 0);
	} else {
		cr_assert_eq(unlink(path), 0);
	}

	cr_assert(symbols_lookup((uintptr_t)fn, &si));
	cr_assert_str_eq(si.object, path);
	if (has_debug)
		cr_assert_str_eq(si.name, expect);
	else
		cr_assert_null(si.name, "%s from a stale file", si.name);
	symtab_free(before);
	symtab_free(plain);
	dlclose(h);
}

Test(symbols, replaced_object_file, .init = tmpdir_make,
     .fini = tmpdir_remove)
{
	const char *lib = "/lib/x86_64-linux-gnu/libm.so.6";

	if (access(lib, R_OK) != 0)
		cr_skip_test("no %s", lib);
	check_stale_object(lib, true);
}

Test(symbols, deleted_object_file, .init = tmpdir_make,
     .fini = tmpdir_remove)
{
	const char *lib = "/lib/x86_64-linux-gnu/libm.so.6";

	if (access(lib, R_OK) != 0)
		cr_skip_test("no %s", lib);
	check_stale_object(lib, false);
}

/* ---------------------------------------------------------------------- */
/* Malformed input: NULL or a valid table, never a crash.                 */

static void probe(struct symtab *t)
{
	uintptr_t off;
	uintptr_t probes[] = { 0, 1, 0x1000, 0x20000, 0x100000, UINTPTR_MAX,
			       UINTPTR_MAX - 1 };
	size_t i;

	if (!t)
		return;
	table_check(t);
	for (i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		symtab_find(t, probes[i], &off);
	symtab_free(t);
}

Test(symbols, bad_files, .init = tmpdir_make, .fini = tmpdir_remove)
{
	char path[PATH_MAX];
	static const char text[] = "#!/bin/sh\necho not an ELF file\n";
	unsigned char hdr[64] = { 0x7f, 'E', 'L', 'F', 2, 1, 1 };

	cr_assert_null(symtab_load(NULL));
	cr_assert_null(symtab_load("/nonexistent/libnothing.so"));
	cr_assert_null(symtab_load("/"));
	cr_assert_null(symtab_load("/dev/null"));
	cr_assert_null(symtab_load_mem(NULL, 0));
	cr_assert_null(symtab_load_mem(text, sizeof(text)));
	cr_assert_null(symtab_load_mem(hdr, 10));
	cr_assert_null(symtab_load_mem(hdr, sizeof(hdr)));
	cr_assert_null(symtab_find(NULL, 0x1000, NULL));
	symtab_free(NULL);

	snprintf(path, sizeof(path), "%s/empty", tmpdir);
	file_write(path, "", 0);
	cr_assert_null(symtab_load(path));

	snprintf(path, sizeof(path), "%s/script", tmpdir);
	file_write(path, text, sizeof(text));
	cr_assert_null(symtab_load(path));

	snprintf(path, sizeof(path), "%s/header-only", tmpdir);
	file_write(path, hdr, sizeof(hdr));
	cr_assert_null(symtab_load(path));

	/* Opening a FIFO for reading would block without O_NONBLOCK. */
	snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	cr_assert_eq(mkfifo(path, 0600), 0);
	cr_assert_null(symtab_load(path));
}

Test(symbols, truncated_libc, .init = tmpdir_make, .fini = tmpdir_remove)
{
	char *lib = libc_path(NULL);
	size_t size, i, n;
	unsigned char *img = file_read(lib, &size);
	char path[PATH_MAX];
	size_t cuts[40];
	size_t ncuts = 0;
	uint64_t shoff;

	memcpy(&shoff, img + 0x28, 8);
	{
		static const size_t fixed[] = { 1, 4, 16, 52, 63, 64, 65, 100,
						512, 4096, 65536 };

		for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			cuts[ncuts++] = fixed[i];
	}
	cuts[ncuts++] = size / 2;
	cuts[ncuts++] = size - 1;
	cuts[ncuts++] = size - 64;
	cuts[ncuts++] = size - 65;
	cuts[ncuts++] = (size_t)shoff;
	cuts[ncuts++] = (size_t)shoff + 1;
	cuts[ncuts++] = (size_t)shoff + 64 * 7 + 3;
	cuts[ncuts++] = size;

	snprintf(path, sizeof(path), "%s/libc-cut.so", tmpdir);
	for (i = 0; i < ncuts; i++) {
		n = cuts[i];
		if (n > size)
			continue;
		file_write(path, img, n);
		probe(symtab_load(path));
		probe(symtab_load_mem(img, n));
	}
	/* The whole file loads. */
	file_write(path, img, size);
	{
		struct symtab *t = symtab_load_nodebug(path);

		cr_assert_not_null(t);
		cr_assert(table_has(t, "getpid", NULL, NULL));
		symtab_free(t);
	}
	free(img);
	free(lib);
}

/* xorshift: deterministic, so a failure reproduces. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void mutate(unsigned char *p, size_t n)
{
	static const uint64_t magic[] = {
		0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0xffffffff,
		0x100000000ull, UINT64_MAX, UINT64_MAX / 2,
	};
	uint64_t shoff, v;
	size_t k, count = 1 + rng() % 8, off, span;

	memcpy(&shoff, p + 0x28, 8);
	for (k = 0; k < count; k++) {
		switch (rng() % 5) {
		case 0: /* anywhere */
			off = rng() % n;
			p[off] ^= (unsigned char)(1u << (rng() % 8));
			break;
		case 1: /* ELF header */
			off = rng() % 64;
			p[off] = (unsigned char)rng();
			break;
		case 2: /* section header table, a whole field */
		case 3:
			if (shoff >= n)
				break;
			span = n - (size_t)shoff;
			off = (size_t)shoff + (rng() % span & ~(size_t)3);
			v = magic[rng() % (sizeof(magic) / sizeof(magic[0]))];
			if (off + 8 <= n)
				memcpy(p + off, &v, (rng() & 1) ? 8 : 4);
			break;
		default: /* the tail, where .symtab and .strtab live */
			off = n - 1 - rng() % (n / 4);
			p[off] = (unsigned char)rng();
			break;
		}
	}
}

Test(symbols, mutated_elf, .init = tmpdir_make, .fini = tmpdir_remove,
     .timeout = 120)
{
	size_t size, i;
	unsigned char *orig = file_read("/proc/self/exe", &size);
	unsigned char *img = malloc(size);
	char path[PATH_MAX];
	int loaded = 0;

	cr_assert_not_null(img);
	snprintf(path, sizeof(path), "%s/mutant", tmpdir);
	for (i = 0; i < 600; i++) {
		struct symtab *t;

		memcpy(img, orig, size);
		mutate(img, size);
		t = symtab_load_mem(img, size);
		loaded += t != NULL;
		probe(t);
		if (i % 10 == 0) {
			file_write(path, img, size);
			probe(symtab_load(path));
		}
	}
	/* Most mutants still parse: the mutations reached the tables. */
	fprintf(stderr, "mutated_elf: %d/600 mutants loaded\n", loaded);
	cr_assert_gt(loaded, 0);
	free(img);
	free(orig);
}
