/*
 * Python frames without the GIL. See python.h.
 *
 * The walker reads CPython's structures through a mem_reader only, with the
 * layout of the running interpreter: a constant table per minor version
 * (pyoffsets.c) for 3.8-3.12, _PyRuntime.debug_offsets for 3.13. Nothing here
 * calls into CPython except py_tstate_self.
 */
#include "python.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common.h"
#include "pyoffsets.h"

/* Bounds on reads that the tables could otherwise make arbitrary. */
#define HDR_MAX 256          /* frame and code object headers read */
#define INTERP_MAX 256       /* interpreters followed by py_tstate_find */
#define THREADS_MAX 65536    /* thread states followed per interpreter */
#define LINETABLE_MAX (256 * 1024)
#define CODE_BYTES_MAX (64 * 1024 * 1024) /* larger offsets are nonsense */
#define TSTATE_NEAR 4096 /* PyThreadState is smaller: a field is this near */

enum py_state {
	PY_NONE = 0,     /* no CPython found (yet) */
	PY_UNSUPPORTED,  /* found, but frames cannot be walked */
	PY_READY,
	/* 3.13+: debug offsets read and checked, not yet against the running
	 * interpreter (live_check): py_init tries again */
	PY_CHECKING,
};

/*
 * Written by py_init under init_lock, then published by the release store
 * of `state`; everyone else reads them only after an acquire load that saw
 * PY_READY (or PY_UNSUPPORTED for the strings). Never written again after
 * publication, so handlers read them without a lock.
 */
static struct py_offsets off;
static uintptr_t runtime_addr;
static uintptr_t code_type, unicode_type, bytes_type, frame_type_addr;
static void *(*gilstate_get)(void);
static void *py_lib; /* the handle CPython's symbols come from */
static char version_str[32];
static char unavailable_msg[160];
static char untested_msg[160];
static _Atomic int state;
/* 3.13+: fields only the check of the offsets reads (live_check). */
static struct {
	int ts_prev, ts_interp;
} live;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- symbols ------------------------------------------------------------ */

#define LIBPY_MAX 4
struct libpy_names {
	int n;
	char name[LIBPY_MAX][256];
};

static int libpy_collect(struct dl_phdr_info *info, size_t size, void *data)
{
	struct libpy_names *ln = data;
	(void)size;
	if (!info->dlpi_name || !strstr(info->dlpi_name, "libpython"))
		return 0;
	size_t len = strlen(info->dlpi_name);
	if (ln->n < LIBPY_MAX && len < sizeof(ln->name[0])) {
		memcpy(ln->name[ln->n], info->dlpi_name, len + 1);
		ln->n++;
	}
	return 0;
}

/*
 * The handle to resolve CPython's symbols from: the global scope when the
 * interpreter is there (a python executable, a libpython it links), else a
 * libpython loaded with RTLD_LOCAL (uWSGI's python plugin). A handle from
 * dlopen is kept open on purpose: the walker holds addresses inside it.
 */
static bool py_handle(void **handle)
{
	*handle = RTLD_DEFAULT; /* NULL */
	if (dlsym(RTLD_DEFAULT, "Py_GetVersion"))
		return true;
	/* Collect names first: no dlopen while dl_iterate_phdr holds the
	 * loader's lock. */
	static struct libpy_names ln;
	ln.n = 0;
	dl_iterate_phdr(libpy_collect, &ln);
	for (int i = 0; i < ln.n; i++) {
		void *h = dlopen(ln.name[i], RTLD_NOLOAD | RTLD_LAZY);
		if (!h)
			continue;
		if (dlsym(h, "Py_GetVersion")) {
			*handle = h;
			return true;
		}
		dlclose(h);
	}
	return false;
}

/* "3.11.7" and (major, minor) from the interpreter itself. */
static bool py_version(void *h, int *major, int *minor)
{
	const uint32_t *hex = dlsym(h, "Py_Version");
	if (hex) {
		uint32_t v;
		if (!mem_read_safe(&v, (uintptr_t)hex, sizeof(v)))
			return false;
		*major = (int)(v >> 24);
		*minor = (int)((v >> 16) & 0xff);
		unsigned level = (v >> 4) & 0xf, serial = v & 0xf;
		const char *lv = level == 0xa ? "a" : level == 0xb ? "b" :
				 level == 0xc ? "rc" : "";
		if (*lv)
			snprintf(version_str, sizeof(version_str), "%d.%d.%u%s%u",
				 *major, *minor, (v >> 8) & 0xff, lv, serial);
		else
			snprintf(version_str, sizeof(version_str), "%d.%d.%u",
				 *major, *minor, (v >> 8) & 0xff);
		return true;
	}
	const char *(*get)(void) = (const char *(*)(void))dlsym(h, "Py_GetVersion");
	if (!get)
		return false;
	/* "3.8.18 (default, ...)": a static string, safe without the GIL. */
	const char *s = get();
	size_t i = 0;
	while (s[i] && s[i] != ' ' && i + 1 < sizeof(version_str)) {
		version_str[i] = s[i];
		i++;
	}
	version_str[i] = '\0';
	return sscanf(version_str, "%d.%d", major, minor) == 2;
}

/* ---- 3.13+: _PyRuntime.debug_offsets ----------------------------------- */

/*
 * struct _Py_DebugOffsets (the first member of _PyRuntime since 3.13): the
 * cookie "xdebugpy", PY_VERSION_HEX, then uint64_t sizes and offsets of the
 * structures an outside reader needs. Its own layout changes with every
 * minor version and says nothing about itself, so where each value lies in
 * it comes from the table of that version (struct py_dbg_pos, generated
 * from the headers); a release newer than the newest table is read with
 * that table's positions, and everything read is checked: each structure's
 * size, each offset inside it and aligned, then (live_check) against the
 * running interpreter's own memory.
 */
#define DBG_MAX 4096     /* bytes of _Py_DebugOffsets read at most */
#define STRUCT_MAX (64u << 20) /* no structure described is larger */

struct dbg {
	const unsigned char *b;
	const struct py_dbg_pos *pos;
	bool ok;
};

/* The uint64_t at position pos, false if the version has none. */
static bool dbg_u64(const struct dbg *d, int pos, uint64_t *v)
{
	if (pos < 0 || pos + 8 > d->pos->struct_size)
		return false;
	memcpy(v, d->b + pos, sizeof(*v));
	return true;
}

/* A structure's size: sane or the whole read fails. */
static uint64_t dbg_size(struct dbg *d, int pos, uint64_t lo, uint64_t hi)
{
	uint64_t v = 0;
	if (!dbg_u64(d, pos, &v) || v < lo || v > hi)
		d->ok = false;
	return v;
}

/* The offset of a field of `width` bytes (aligned to its width, up to 8)
 * inside a structure of `size` bytes, into *out. */
static void dbg_field(struct dbg *d, int pos, uint64_t size, int width, int *out)
{
	uint64_t v;
	int align = width >= 8 || width == 0 ? 8 : width;
	if (!dbg_u64(d, pos, &v) || v >= STRUCT_MAX ||
	    v + (uint64_t)width > size || (width > 0 && v % (uint64_t)align)) {
		d->ok = false;
		return;
	}
	*out = (int)v;
}

/*
 * 3.14+ publish where an interpreter's GIL pointer and its own GIL lie, and
 * the GIL's locked and last_holder fields; the table adds the rest of the
 * GIL (switch_number, the condition variable and the mutex), trusted only
 * when the published fields are where the table has them. Otherwise the
 * GIL is not read (gil_why says so); the frames are not affected. 3.13
 * publishes none of it: the table alone, checked where it is read
 * (gil_find).
 */
static const char *gil_why;

static void gil_from_debug(const struct dbg *d, uint64_t is,
			   const struct py_offsets *t, struct py_offsets *o)
{
	const struct py_dbg_pos *p = d->pos;
	if (p->is_ceval_gil < 0)
		return;
	struct dbg g = *d;
	g.ok = true;
	int ceval = -1, own = -1, locked = -1, holder = -1;
	dbg_field(&g, p->is_ceval_gil, is, 8, &ceval);
	dbg_field(&g, p->is_gil, is, 0, &own);
	dbg_field(&g, p->is_gil_locked, is, 4, &locked);
	dbg_field(&g, p->is_gil_holder, is, 8, &holder);
	if (!g.ok || ceval != t->is_ceval_gil || own != t->is_gil ||
	    locked - own != t->gil_locked || holder - own != t->gil_holder ||
	    (uint64_t)own + (uint64_t)t->gil_mutex + (uint64_t)t->gil_mutex_size > is) {
		o->rt_gil = o->is_ceval_gil = o->is_gil = -1;
		gil_why = "its GIL's layout is not the one slowdog knows";
	}
}

/*
 * The walker's offsets from debug_offsets, read with the positions of table
 * t (the version's own, or the newest one for a newer version). What they
 * do not describe comes from t: where _co_firsttraceable lies (trusted only
 * when the code object's published fields are where t has them), the bit
 * layout of a string's state (likewise for the string header), the
 * _PyStackChunk header (unchanged since 3.11, checked live), the frame
 * owner values and f_executable's tag bits (checked live: every chain must
 * end on an entry frame). NULL, or why not.
 */
static const char *py_offsets_debug(const struct py_offsets *t, int major,
				    int minor, struct py_offsets *o)
{
	static unsigned char buf[DBG_MAX];
	const struct py_dbg_pos *p = &t->dbg;
	if (p->struct_size < 64 || p->struct_size > DBG_MAX)
		return " (no debug offsets layout for it)";
	if (!mem_read_safe(buf, runtime_addr, (size_t)p->struct_size))
		return " (its debug offsets cannot be read)";
	if (memcmp(buf, "xdebugpy", 8) != 0)
		return " (no debug offsets: cookie missing)";
	struct dbg d = {.b = buf, .pos = p, .ok = true};
	uint64_t version = 0, ft = 0;
	if (!dbg_u64(&d, p->version, &version) ||
	    (version >> 24) != (uint64_t)major ||
	    ((version >> 16) & 0xff) != (uint64_t)minor)
		return " (debug offsets of another version)";
	if (!dbg_u64(&d, p->free_threaded, &ft) || ft > 1)
		return " (malformed debug offsets)";
	/* Object headers, reference counts and bytecode (one copy per thread)
	 * of their own: no table describes them. */
	if (ft)
		return " (free-threaded build: its frames are not read)";

	*o = *t;
	uint64_t rt = dbg_size(&d, p->rt_size, 64, STRUCT_MAX);
	uint64_t is = dbg_size(&d, p->is_size, 64, STRUCT_MAX);
	uint64_t ts = dbg_size(&d, p->ts_size, 64, TSTATE_NEAR);
	uint64_t fr = dbg_size(&d, p->fr_size, 32, HDR_MAX);
	uint64_t co = dbg_size(&d, p->co_size, 64, HDR_MAX + 64);
	uint64_t ob = dbg_size(&d, p->ob_size, 16, 64);
	uint64_t by = dbg_size(&d, p->by_size, 24, HDR_MAX);
	uint64_t un = dbg_size(&d, p->un_size, 24, HDR_MAX);
	if (!d.ok)
		return " (malformed debug offsets: a structure size)";
	dbg_field(&d, p->rt_interp_head, rt, 8, &o->rt_interp_head);
	dbg_field(&d, p->is_next, is, 8, &o->is_next);
	dbg_field(&d, p->is_threads_head, is, 8, &o->is_threads_head);
	int ts_prev = -1, ts_interp = -1, fr_locals = -1, co_qualname = -1;
	dbg_field(&d, p->ts_prev, ts, 8, &ts_prev);
	dbg_field(&d, p->ts_next, ts, 8, &o->ts_next);
	dbg_field(&d, p->ts_interp, ts, 8, &ts_interp);
	dbg_field(&d, p->ts_current_frame, ts, 8, &o->ts_frame);
	dbg_field(&d, p->ts_thread_id, ts, 8, &o->ts_thread_id);
	dbg_field(&d, p->ts_native_thread_id, ts, 8, &o->ts_native_thread_id);
	dbg_field(&d, p->ts_datastack_chunk, ts, 16, &o->ts_datastack_chunk);
	dbg_field(&d, p->fr_previous, fr, 8, &o->fr_previous);
	dbg_field(&d, p->fr_executable, fr, 8, &o->fr_code);
	dbg_field(&d, p->fr_instr_ptr, fr, 8, &o->fr_instr);
	dbg_field(&d, p->fr_owner, fr, 1, &o->fr_owner);
	dbg_field(&d, p->fr_localsplus, fr + 8, 8, &fr_locals);
	dbg_field(&d, p->ob_type, ob, 8, &o->ob_type);
	dbg_field(&d, p->co_filename, co, 8, &o->co_filename);
	dbg_field(&d, p->co_name, co, 8, &o->co_name);
	dbg_field(&d, p->co_qualname, co, 8, &co_qualname);
	dbg_field(&d, p->co_linetable, co, 8, &o->co_linetable);
	dbg_field(&d, p->co_firstlineno, co, 4, &o->co_firstlineno);
	dbg_field(&d, p->co_code_adaptive, co, 0, &o->co_code_adaptive);
	dbg_field(&d, p->un_length, un, 8, &o->str_length);
	dbg_field(&d, p->un_state, un, 4, &o->str_state);
	dbg_field(&d, p->un_ascii_size, un, 0, &o->str_ascii_size);
	if (p->un_compact_size >= 0)
		dbg_field(&d, p->un_compact_size, un, 0, &o->str_compact_size);
	dbg_field(&d, p->by_ob_size, by, 8, &o->bytes_size);
	dbg_field(&d, p->by_ob_sval, by, 1, &o->bytes_sval);
	if (!d.ok)
		return " (malformed debug offsets: an offset)";
	o->ts_size = (int)ts;
	/* Fields of one structure are distinct, and what lies after them
	 * (a frame's locals, a code object's bytecode) comes after them. */
	int frf[] = {o->fr_previous, o->fr_code, o->fr_instr};
	int cof[] = {o->co_filename, o->co_name, co_qualname, o->co_linetable};
	int tsf[] = {ts_prev, o->ts_next, ts_interp, o->ts_frame,
		     o->ts_thread_id, o->ts_native_thread_id,
		     o->ts_datastack_chunk};
	for (size_t i = 0; i < ARRAY_LEN(frf); i++)
		for (size_t j = i + 1; j < ARRAY_LEN(frf); j++)
			d.ok &= frf[i] != frf[j];
	for (size_t i = 0; i < ARRAY_LEN(cof); i++)
		for (size_t j = i + 1; j < ARRAY_LEN(cof); j++)
			d.ok &= cof[i] != cof[j];
	for (size_t i = 0; i < ARRAY_LEN(tsf); i++)
		for (size_t j = i + 1; j < ARRAY_LEN(tsf); j++)
			d.ok &= tsf[i] != tsf[j];
	for (size_t i = 0; i < ARRAY_LEN(frf); i++)
		d.ok &= frf[i] + 8 <= fr_locals;
	d.ok &= o->fr_owner < fr_locals;
	for (size_t i = 0; i < ARRAY_LEN(cof); i++)
		d.ok &= cof[i] + 8 <= o->co_code_adaptive;
	d.ok &= o->co_firstlineno + 4 <= o->co_code_adaptive;
	d.ok &= o->ob_type + 8 <= o->str_length && o->ob_type + 8 <= o->bytes_size;
	d.ok &= o->str_length + 8 <= o->str_ascii_size &&
		o->str_state + 4 <= o->str_ascii_size &&
		o->str_ascii_size <= o->str_compact_size;
	d.ok &= o->bytes_size + 8 <= o->bytes_sval;
	if (!d.ok)
		return " (malformed debug offsets: fields overlap)";
	/* What the table adds holds only for the layout it was made from. */
	if (o->co_code_adaptive != t->co_code_adaptive ||
	    o->co_firstlineno != t->co_firstlineno ||
	    o->co_linetable != t->co_linetable ||
	    o->co_filename != t->co_filename || o->co_name != t->co_name)
		return " (a code object layout slowdog does not know)";
	if (o->str_ascii_size != t->str_ascii_size ||
	    o->str_state != t->str_state || o->ob_type != t->ob_type)
		return " (a string layout slowdog does not know)";
	/* datastack_top follows datastack_chunk as in the table. */
	o->ts_datastack_top = o->ts_datastack_chunk +
			      (t->ts_datastack_top - t->ts_datastack_chunk);
	if (o->ts_datastack_top + 8 > o->ts_size)
		return " (malformed debug offsets: the thread state)";
	o->fr_size = fr_locals;
	o->co_size = o->co_code_adaptive;
	gil_from_debug(&d, is, t, o);
	live.ts_prev = ts_prev;
	live.ts_interp = ts_interp;
	return NULL;
}

/* ---- init ---------------------------------------------------------------- */

static bool offsets_sane(const struct py_offsets *o)
{
	return o->fr_size > 0 && o->fr_size <= HDR_MAX && o->co_size > 0 &&
	       o->co_size <= HDR_MAX && o->str_ascii_size > 0 &&
	       o->str_compact_size >= o->str_ascii_size &&
	       o->str_compact_size <= HDR_MAX && o->bytes_sval > 0 &&
	       o->bytes_sval <= HDR_MAX && o->ts_size > 0 &&
	       o->ts_size <= TSTATE_NEAR &&
	       o->ts_datastack_chunk + 8 <= o->ts_size &&
	       o->ts_datastack_top + 8 <= o->ts_size;
}

static int live_check(const char **why);
static bool live_started(void);

static void py_set_unsupported(const char *version, const char *why)
{
	snprintf(unavailable_msg, sizeof(unavailable_msg),
		 "Python frames unavailable: CPython %s%s", version, why);
	atomic_store_explicit(&state, PY_UNSUPPORTED, memory_order_release);
}

/* Under init_lock, state PY_CHECKING: the offsets in `off` against the
 * running interpreter. */
static void py_confirm(void)
{
	const char *why = NULL;
	int r = live_check(&why);
	if (r > 0) {
		unavailable_msg[0] = '\0';
		atomic_store_explicit(&state, PY_READY, memory_order_release);
	} else if (r < 0) {
		untested_msg[0] = '\0';
		py_set_unsupported(version_str, why);
	}
	/* else: nothing runs Python yet; the next py_init looks again */
}

bool py_init(void)
{
	int s = atomic_load_explicit(&state, memory_order_acquire);
	if (s != PY_NONE && s != PY_CHECKING)
		return s == PY_READY;
	pthread_mutex_lock(&init_lock);
	s = atomic_load_explicit(&state, memory_order_acquire);
	if (s == PY_CHECKING) {
		py_confirm();
		goto out;
	}
	if (s != PY_NONE)
		goto out;
	void *h;
	if (!py_handle(&h))
		goto out;
	py_lib = h;
	int major, minor;
	if (!py_version(h, &major, &minor))
		goto out;
	runtime_addr = (uintptr_t)dlsym(h, "_PyRuntime");
	code_type = (uintptr_t)dlsym(h, "PyCode_Type");
	unicode_type = (uintptr_t)dlsym(h, "PyUnicode_Type");
	bytes_type = (uintptr_t)dlsym(h, "PyBytes_Type");
	frame_type_addr = (uintptr_t)dlsym(h, "PyFrame_Type");
	gilstate_get = (void *(*)(void))dlsym(h, "PyGILState_GetThisThreadState");
	const struct py_offsets *t = pyoffsets_get(major, minor);
	const struct py_offsets *newest = pyoffsets_newest();
	bool newer = major == newest->major && minor > newest->minor;
	if (newer)
		t = newest; /* its debug offsets, if it has the same layout */
	if (!t) {
		/* "CPython 3.7": the minor version is what is missing. */
		char mm[24];
		snprintf(mm, sizeof(mm), "%d.%d", major, minor);
		py_set_unsupported(mm, "");
		goto out;
	}
	if (!runtime_addr || !code_type || !unicode_type || !bytes_type ||
	    !gilstate_get) {
		py_set_unsupported(version_str, " (symbols missing)");
		goto out;
	}
	if (t->layout >= PY_LAYOUT_313) {
		const char *why = py_offsets_debug(t, major, minor, &off);
		if (!why && !offsets_sane(&off))
			why = " (malformed debug offsets)";
		if (why) {
			py_set_unsupported(version_str, why);
			goto out;
		}
		if (newer)
			snprintf(untested_msg, sizeof(untested_msg),
				 "CPython %s is newer than slowdog was tested "
				 "with (%d.%d): frames read from its debug offsets",
				 version_str, newest->major, newest->minor);
		snprintf(unavailable_msg, sizeof(unavailable_msg),
			 "Python frames unavailable: CPython %s (its debug "
			 "offsets not confirmed: no Python frame where they point)",
			 version_str);
		atomic_store_explicit(&state, PY_CHECKING, memory_order_release);
		py_confirm();
		goto out;
	}
	off = *t;
	if (!offsets_sane(&off)) {
		py_set_unsupported(version_str, " (bad layout table)");
		goto out;
	}
	atomic_store_explicit(&state, PY_READY, memory_order_release);
out:
	pthread_mutex_unlock(&init_lock);
	return atomic_load_explicit(&state, memory_order_acquire) == PY_READY;
}

uintptr_t py_symbol(const char *name)
{
	return py_present() ? (uintptr_t)dlsym(py_lib, name) : 0;
}

bool py_present(void)
{
	int s = atomic_load_explicit(&state, memory_order_acquire);
	return s == PY_READY || s == PY_UNSUPPORTED;
}

const char *py_unavailable(void)
{
	int s = atomic_load_explicit(&state, memory_order_acquire);
	if (s == PY_UNSUPPORTED)
		return unavailable_msg;
	/* Before the check could be made: only once an interpreter runs. */
	if (s == PY_CHECKING && live_started())
		return unavailable_msg;
	return NULL;
}

const char *py_untested(void)
{
	int s = atomic_load_explicit(&state, memory_order_acquire);
	return s == PY_READY && untested_msg[0] ? untested_msg : NULL;
}

const char *py_version_string(void)
{
	return atomic_load_explicit(&state, memory_order_acquire) != PY_NONE ?
		       version_str : "";
}

static bool ready(void)
{
	return atomic_load_explicit(&state, memory_order_acquire) == PY_READY;
}

/*
 * The pthread key of CPython's own thread-state slot (its gilstate TSS
 * key): PyGILState_GetThisThreadState is pthread_getspecific on it. Found
 * by looking at every key for the one, and only one, that holds the thread
 * state just returned; every later thread's first call checks it again,
 * and a key that ever disagrees is never used. -1: not looked for yet,
 * -2: not found or not trusted.
 */
#define TSS_KEYS_MAX 1024 /* glibc's PTHREAD_KEYS_MAX */
static _Atomic int tss_key = -1;

static void tss_key_check(uintptr_t ts)
{
	int k = atomic_load_explicit(&tss_key, memory_order_acquire);
	if (k == -2)
		return;
	if (k >= 0) {
		if ((uintptr_t)pthread_getspecific((pthread_key_t)k) != ts)
			atomic_store_explicit(&tss_key, -2, memory_order_release);
		return;
	}
	int found = -2;
	for (int i = 0; i < TSS_KEYS_MAX; i++) {
		if ((uintptr_t)pthread_getspecific((pthread_key_t)i) != ts)
			continue;
		if (found != -2) {
			found = -2; /* two: neither is trusted */
			break;
		}
		found = i;
	}
	int expect = -1;
	atomic_compare_exchange_strong(&tss_key, &expect, found);
}

/* async-signal-safe */
uintptr_t py_tstate_self(void)
{
	if (!ready())
		return 0;
	uintptr_t ts = (uintptr_t)gilstate_get();
	if (ts)
		tss_key_check(ts);
	return ts;
}

int py_tstate_key(void)
{
	return atomic_load_explicit(&tss_key, memory_order_acquire);
}

/* async-signal-safe */
uintptr_t py_tstate_self_fast(void)
{
	int k = atomic_load_explicit(&tss_key, memory_order_acquire);
	if (k < 0 || !ready())
		return py_tstate_self();
	return (uintptr_t)pthread_getspecific((pthread_key_t)k);
}

/* ---- reading ------------------------------------------------------------- */

/* async-signal-safe */
static uintptr_t get_ptr(const unsigned char *buf, int at)
{
	uintptr_t v;
	memcpy(&v, buf + at, sizeof(v));
	return v;
}

/* async-signal-safe */
static int32_t get_i32(const unsigned char *buf, int at)
{
	int32_t v;
	memcpy(&v, buf + at, sizeof(v));
	return v;
}

/* async-signal-safe */
static bool read_ptr(mem_reader rd, uintptr_t addr, uintptr_t *out)
{
	return (addr & 7) == 0 && rd(out, addr, sizeof(*out));
}

/*
 * The walk's reads. mem_read_mapped trusts a table of mappings taken before
 * the signal was sent, and memory changes meanwhile: CPython 3.11+ maps a
 * 16 KiB chunk of its frame stack whenever a call crosses the end of the
 * current one and unmaps it on the way back (recursion does both all the
 * time), pymalloc maps and unmaps arenas. Frames in a chunk mapped since
 * are missing from the table, and a pointer into a chunk unmapped since
 * faults: a crash of the host. Such pointers are on the chain of a stopped
 * 3.11+ thread: RETURN_GENERATOR pops its frame, unmapping the chunk, a
 * moment before it unlinks it (a signal that arrives during that munmap is
 * delivered right there), and a half-entered eval loop publishes stack
 * garbage. So 3.11+ walks read with process_vm_readv, which sees the
 * mappings as they are and fails with EFAULT. A call costs about a
 * microsecond, so whole pages are read and kept for the rest of the walk:
 * a chain's frames lie side by side in the frame stack, recursion reuses
 * its code objects, a file's functions share its name. One walk at a time
 * uses the pages (the handler and the watchdog take turns); another one
 * meanwhile reads uncached.
 */
#define PAGE_SIZE_ 4096
#define PAGES_MAX 16
#define PAGE_NONE UINTPTR_MAX /* never a page's address */

static struct {
	pid_t pid; /* getpid() once per walk, not per page */
	int n, next;
	uintptr_t addr[PAGES_MAX];
	unsigned char data[PAGES_MAX][PAGE_SIZE_];
} pages;
static _Atomic bool pages_busy;

/* async-signal-safe */
static bool page_fetch(unsigned char *dst, uintptr_t addr)
{
	struct iovec local = {.iov_base = dst, .iov_len = PAGE_SIZE_};
	struct iovec remote = {.iov_base = (void *)addr, .iov_len = PAGE_SIZE_};
	if (!pages.pid)
		pages.pid = getpid();
	ssize_t r = process_vm_readv(pages.pid, &local, 1, &remote, 1, 0);
	if (r == PAGE_SIZE_)
		return true;
	/* Forbidden (seccomp): the table is all there is. */
	return r < 0 && (errno == ENOSYS || errno == EPERM) &&
	       mem_read_mapped(dst, addr, PAGE_SIZE_);
}

/* async-signal-safe */
static const unsigned char *page_get(uintptr_t addr)
{
	for (int i = 0; i < pages.n; i++)
		if (pages.addr[i] == addr)
			return pages.data[i];
	int i = pages.n < PAGES_MAX ? pages.n++ : pages.next++ % PAGES_MAX;
	pages.addr[i] = PAGE_NONE;
	if (!page_fetch(pages.data[i], addr))
		return NULL;
	pages.addr[i] = addr;
	return pages.data[i];
}

/*
 * async-signal-safe: up to 3.10 every frame on a stopped thread's chain is
 * alive (f_back is a strong reference, tstate->frame moves off a frame
 * before it dies), and so are the code objects and names it leads to: no
 * pointer there leads into memory unmapped since the table was taken, the
 * table is safe, and only what was mapped since needs a system call.
 */
static bool read_table_first(void *dst, uintptr_t src, size_t n)
{
	return mem_read_mapped(dst, src, n) || mem_read_safe(dst, src, n);
}

/*
 * What the signal handler already holds, so the walk spends no system call
 * on it: the copy of the thread's live stack (where 3.11 and 3.12 keep
 * their _PyCFrame structures), and the thread's own current thread state,
 * alive while the thread is stopped, readable with a plain copy.
 */
#define LIVE_MAX 64 /* frame stack chunks followed at most */
static struct {
	uintptr_t stack_addr;
	const unsigned char *stack;
	size_t stack_len;
	uintptr_t tstate; /* 0: none trusted */
	/* 3.11+: the parts of the trusted thread state's frame stack in use,
	 * [lo, hi) each, filled by live_collect. */
	int live_n;
	uintptr_t live_lo[LIVE_MAX], live_hi[LIVE_MAX];
} known;

void py_walk_known(uintptr_t stack_addr, const void *stack, size_t len,
		   uintptr_t tstate)
{
	known.stack_addr = stack_addr;
	known.stack = stack;
	known.stack_len = len;
	known.tstate = tstate;
	known.live_n = 0;
}

/* async-signal-safe: a pointer-sized field of memory known to be alive. */
static uintptr_t live_ptr(uintptr_t addr)
{
	uintptr_t v;
	mem_copy_raw(&v, (const void *)addr, sizeof(v));
	return v;
}

/*
 * async-signal-safe, handler, 3.11+: the frame stack of the trusted thread
 * state. The thread state and its chunks are alive while the thread is
 * stopped (CPython moves tstate->datastack_chunk off a chunk before it
 * frees it), and every frame below a chunk's top was pushed and filled in:
 * all of it is read with a plain copy, no table, no system call.
 */
static void live_collect(void)
{
	known.live_n = 0;
	if (!known.tstate || off.ts_datastack_chunk < 0)
		return;
	uintptr_t chunk = live_ptr(known.tstate + (uintptr_t)off.ts_datastack_chunk);
	uintptr_t top = live_ptr(known.tstate + (uintptr_t)off.ts_datastack_top);
	while (chunk && !(chunk & 7) && known.live_n < LIVE_MAX) {
		uintptr_t lo = chunk + (uintptr_t)off.sc_data;
		uintptr_t size = live_ptr(chunk + (uintptr_t)off.sc_size);
		if (lo < chunk || top < lo || size > CODE_BYTES_MAX ||
		    top > chunk + size)
			return;
		known.live_lo[known.live_n] = lo;
		known.live_hi[known.live_n] = top;
		known.live_n++;
		/* An older chunk's top is kept in the chunk itself, written
		 * when the one after it was pushed. */
		uintptr_t prev = live_ptr(chunk + (uintptr_t)off.sc_previous);
		if (!prev || (prev & 7))
			return;
		uintptr_t used = live_ptr(prev + (uintptr_t)off.sc_top);
		if (used > CODE_BYTES_MAX)
			return;
		chunk = prev;
		top = prev + (uintptr_t)off.sc_data + used * sizeof(void *);
	}
}

/* async-signal-safe: [src, src+n) lies in use on the trusted frame stack. */
static bool in_live(uintptr_t src, size_t n)
{
	for (int i = 0; i < known.live_n; i++)
		if (src >= known.live_lo[i] && src < known.live_hi[i] &&
		    n <= known.live_hi[i] - src)
			return true;
	return false;
}

/* async-signal-safe: true if [src, src+n) was served from what is known. */
static bool read_known(void *dst, uintptr_t src, size_t n)
{
	if (known.stack && src >= known.stack_addr &&
	    src - known.stack_addr <= known.stack_len &&
	    n <= known.stack_len - (src - known.stack_addr)) {
		memcpy(dst, known.stack + (src - known.stack_addr), n);
		return true;
	}
	if (known.tstate && src >= known.tstate &&
	    src - known.tstate < TSTATE_NEAR &&
	    n <= TSTATE_NEAR - (src - known.tstate)) {
		/* Fields of a live thread state, or what follows it on the
		 * heap: mapped whatever the table says. */
		if (src - known.tstate + n <= (size_t)off.ts_size) {
			mem_copy_raw(dst, (const void *)src, n);
			return true;
		}
		return mem_read_mapped(dst, src, n);
	}
	return false;
}

/* async-signal-safe: a mem_reader over the pages. */
static bool read_paged(void *dst, uintptr_t src, size_t n)
{
	if (src + n < src)
		return false;
	if (read_known(dst, src, n))
		return true;
	unsigned char *d = dst;
	while (n > 0) {
		uintptr_t base = src & ~(uintptr_t)(PAGE_SIZE_ - 1);
		size_t at = src - base;
		size_t k = PAGE_SIZE_ - at < n ? PAGE_SIZE_ - at : n;
		const unsigned char *p = page_get(base);
		if (!p)
			return false;
		memcpy(d, p + at, k);
		d += k;
		src += k;
		n -= k;
	}
	return true;
}

/* async-signal-safe: the table, or else the pages. */
static bool read_table_paged(void *dst, uintptr_t src, size_t n)
{
	return mem_read_mapped(dst, src, n) || read_paged(dst, src, n);
}

/* async-signal-safe: the code object's header, type-checked. */
static bool read_code(mem_reader rd, uintptr_t code, unsigned char *buf)
{
	if (!code || (code & 7) || !rd(buf, code, (size_t)off.co_size))
		return false;
	return get_ptr(buf, off.ob_type) == code_type;
}

/* async-signal-safe: one code point as UTF-8 into dst if it fits. */
static size_t utf8_put(char *dst, size_t room, uint32_t c)
{
	if ((c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		c = '?'; /* lone surrogates (surrogateescape) are not UTF-8 */
	if (c < 0x80) {
		if (room < 1)
			return 0;
		dst[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		if (room < 2)
			return 0;
		dst[0] = (char)(0xc0 | (c >> 6));
		dst[1] = (char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		if (room < 3)
			return 0;
		dst[0] = (char)(0xe0 | (c >> 12));
		dst[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		dst[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	if (room < 4)
		return 0;
	dst[0] = (char)(0xf0 | (c >> 18));
	dst[1] = (char)(0x80 | ((c >> 12) & 0x3f));
	dst[2] = (char)(0x80 | ((c >> 6) & 0x3f));
	dst[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

/*
 * async-signal-safe: a str object as UTF-8, cut on a character boundary.
 * Only compact strings (all that CPython makes for code objects' names);
 * anything else gives "?" and false.
 */
static bool read_str(mem_reader rd, uintptr_t obj, char *dst, size_t cap)
{
	unsigned char hdr[HDR_MAX];
	size_t out = 0;
	dst[0] = '\0';
	if (!obj || (obj & 7) || !rd(hdr, obj, (size_t)off.str_ascii_size) ||
	    get_ptr(hdr, off.ob_type) != unicode_type)
		goto bad;
	uint32_t st;
	memcpy(&st, hdr + off.str_state, sizeof(st));
	int64_t len;
	memcpy(&len, hdr + off.str_length, sizeof(len));
	unsigned kind = (st >> off.str_kind_shift) & 7;
	bool compact = (st >> off.str_compact_bit) & 1;
	bool ascii = (st >> off.str_ascii_bit) & 1;
	if (!compact || len < 0 || (kind != 1 && kind != 2 && kind != 4) ||
	    (ascii && kind != 1))
		goto bad;
	uintptr_t data = obj + (uintptr_t)(ascii ? off.str_ascii_size :
						    off.str_compact_size);
	/* At most cap - 1 characters can fit. */
	uint64_t want = (uint64_t)len < cap - 1 ? (uint64_t)len : cap - 1;
	unsigned char chunk[256];
	size_t per = sizeof(chunk) / kind;
	for (uint64_t i = 0; i < want;) {
		size_t k = want - i < per ? (size_t)(want - i) : per;
		if (!rd(chunk, data + i * kind, k * kind))
			goto bad;
		for (size_t j = 0; j < k; j++) {
			uint32_t c;
			if (kind == 1) {
				c = chunk[j];
			} else if (kind == 2) {
				uint16_t c16;
				memcpy(&c16, chunk + 2 * j, 2);
				c = c16;
			} else {
				memcpy(&c, chunk + 4 * j, 4);
			}
			size_t w = utf8_put(dst + out, cap - 1 - out, c);
			if (w == 0) {
				dst[out] = '\0';
				return true;
			}
			out += w;
		}
		i += k;
	}
	dst[out] = '\0';
	return true;
bad:
	dst[0] = '?';
	dst[1] = '\0';
	return false;
}

/* ---- the walk ------------------------------------------------------------ */

/*
 * async-signal-safe: the innermost frame of tstate, 0 if none.
 *
 * 3.11 and 3.12 publish an eval loop's _PyCFrame (tstate->cframe = &cframe)
 * some instructions before they fill it in: a thread stopped in between has
 * stack garbage for tstate->cframe->current_frame (and ->previous). What
 * the thread runs then is a frame whose prologue has not run (incomplete,
 * not shown), so the stack to show is the enclosing _PyCFrame's. *outer
 * gets that one's current frame, and *check asks the walk to fall back on
 * it when the innermost group proves not to hang on it before any frame
 * was kept. The garbage can be zeros (a C stack depth reached for the
 * first time): only the thread state's own root _PyCFrame hangs on
 * nothing, and an eval loop's that seems to cannot tell where its thread
 * is (false: damaged).
 */
static bool first_frame(mem_reader rd, uintptr_t tstate, uintptr_t *frame,
			uintptr_t *outer, bool *check)
{
	uintptr_t p, prev;
	*outer = 0;
	*check = false;
	if (!read_ptr(rd, tstate + (uintptr_t)off.ts_frame, &p))
		return false;
	if (off.cf_current_frame < 0) { /* the frame itself */
		*frame = p;
		return true;
	}
	*frame = 0;
	if (!p)
		return true;
	if (!read_ptr(rd, p + (uintptr_t)off.cf_current_frame, frame) ||
	    !read_ptr(rd, p + (uintptr_t)off.cf_previous, &prev))
		return false;
	if (p - tstate < TSTATE_NEAR)
		return true; /* the root: nothing runs */
	/* Nothing or unreadable: garbage itself, no fallback then. */
	if (!prev || !read_ptr(rd, prev + (uintptr_t)off.cf_current_frame, outer))
		return false;
	*check = true;
	return true;
}

/*
 * The walk records 16 bytes a frame (struct py_record), and nothing else:
 * a handler's time goes on cache lines, and struct py_frame is 400 bytes.
 */
/* async-signal-safe: rotate r[a..b) left by k, in place. */
static void rotate(struct py_record *r, int a, int b, int k)
{
	struct py_record tmp;
	for (int lo = a, hi = a + k - 1; lo < hi; lo++, hi--) {
		tmp = r[lo], r[lo] = r[hi], r[hi] = tmp;
	}
	for (int lo = a + k, hi = b - 1; lo < hi; lo++, hi--) {
		tmp = r[lo], r[lo] = r[hi], r[hi] = tmp;
	}
	for (int lo = a, hi = b - 1; lo < hi; lo++, hi--) {
		tmp = r[lo], r[lo] = r[hi], r[hi] = tmp;
	}
}

/*
 * async-signal-safe: the names of out[0..n), from their code objects. A
 * code object that is not one (any more), or names that are not strings:
 * the thread was not still and the chain may hold stale frames.
 */
static void read_names(mem_reader rd, struct py_frame *out, int n,
		       struct py_walk_info *info)
{
	unsigned char cb[HDR_MAX];
	for (int i = 0; i < n; i++) {
		struct py_frame *f = &out[i];
		if (i > 0 && out[i - 1].code == f->code) {
			memcpy(f->file, out[i - 1].file, sizeof(f->file));
			memcpy(f->func, out[i - 1].func, sizeof(f->func));
			continue;
		}
		if (!read_code(rd, f->code, cb)) {
			strcpy(f->file, "?");
			strcpy(f->func, "?");
			info->damaged = true;
			continue;
		}
		bool file_ok = read_str(rd, get_ptr(cb, off.co_filename),
					f->file, sizeof(f->file));
		bool func_ok = read_str(rd, get_ptr(cb, off.co_name), f->func,
					sizeof(f->func));
		if (!file_ok || !func_ok)
			info->damaged = true;
	}
}

/* async-signal-safe: out[i] from rec[i], names empty. out may hold rec
 * packed at its start: spread from the last (no record lies past its
 * frame). */
static void spread(const struct py_record *rec, struct py_frame *out, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		struct py_record f;
		memcpy(&f, (const unsigned char *)rec + (size_t)i * sizeof(f),
		       sizeof(f));
		out[i].code = f.code;
		out[i].addr = f.addr;
		out[i].line = 0;
		out[i].flags = f.flags;
		out[i].file[0] = out[i].func[0] = '\0';
	}
}

/* Flags the walk keeps on a frame while it decides, never in the result. */
enum {
	FR_INCOMPLETE_CAND = 1u << 30, /* may not have run its prologue yet */
	FR_IP_LOW = 1u << 29,          /* instruction before the bytecode */
};

/*
 * async-signal-safe, 3.11+: the code objects of the frames kept by a walk
 * that deferred them. Type-checks each and drops the frames that had not
 * run their prologue yet (_PyFrame_IsIncomplete), as a walk that reads
 * code objects as it goes does on the way.
 */
static void deferred_codes(mem_reader rd, struct py_record *r,
			   struct py_walk_info *info, int *n, int *total, int *head,
			   int pending)
{
	unsigned char cb[HDR_MAX];
	uintptr_t cb_code = 0;
	int w = 0, head_drop = 0, kept_before = 0;
	for (int i = 0; i < *n; i++) {
		if (i == pending)
			kept_before = w;
		struct py_record f = r[i];
		uint32_t cand = f.flags & (FR_INCOMPLETE_CAND | FR_IP_LOW);
		f.flags &= ~(uint32_t)(FR_INCOMPLETE_CAND | FR_IP_LOW);
		if (f.code != cb_code) {
			cb_code = 0;
			if (!read_code(rd, f.code, cb)) {
				info->damaged = true; /* the names say "?" */
				r[w++] = f;
				continue;
			}
			cb_code = f.code;
		}
		int32_t first = get_i32(cb, off.co_firsttraceable);
		if ((cand & FR_INCOMPLETE_CAND) &&
		    ((cand & FR_IP_LOW) || first < 0 ||
		     (f.addr >= 0 && f.addr < first * 2))) {
			/* Not shown; an entry frame hands its mark to the
			 * frame kept before it. */
			if ((f.flags & PY_FRAME_ENTRY) && w > 0)
				r[w - 1].flags |= PY_FRAME_ENTRY;
			if (i < *head)
				head_drop++;
			continue;
		}
		r[w++] = f;
	}
	if (pending >= *n)
		kept_before = w;
	/* The innermost group's entry frame did not hang on the enclosing eval
	 * loop's frame, which was let pass because frames were kept before
	 * it; none of them was complete: the chain is stack garbage. */
	if (pending > 0 && kept_before == 0)
		info->damaged = true;
	*total -= *n - w;
	*head -= head_drop;
	*n = w;
}

void py_read_names(struct py_record *rec, struct py_frame *out,
		   struct py_walk_info *info)
{
	if (info->codes_left && ready())
		deferred_codes(mem_read_safe, rec, info, &info->n, &info->total,
			       &info->head, info->pending);
	info->codes_left = false;
	spread(rec, out, info->n);
	if (ready())
		read_names(mem_read_safe, out, info->n, info);
}

/*
 * async-signal-safe. One pass over the chain records code, addr and flags
 * into r[0..max).
 *
 * In a signal handler on 3.11+, with the thread's own thread state (see
 * py_walk_known), the pass reads frames from the stack copy and the live
 * frame stack with plain copies and leaves the code objects until the
 * chain has proved whole: a system call costs microseconds there, the
 * first one of a handler ten.
 */
static int walk(mem_reader rd, uintptr_t tstate, uintptr_t from,
		struct py_record *r, int max, bool leave_codes,
		struct py_walk_info *info)
{
	info->n = info->total = info->head = 0;
	info->damaged = false;
	info->codes_left = false;
	info->pending = -1;
	if (!ready() || (!tstate && !from) || max < 0)
		return 0;
	bool paged = false, handler = rd == mem_read_mapped;
	bool deferred = false;
	if (rd == mem_read_mapped && off.layout < PY_LAYOUT_311) {
		rd = read_table_first;
	} else if (rd == mem_read_mapped || rd == mem_read_safe) {
		paged = !atomic_exchange(&pages_busy, true);
		if (paged) {
			pages.pid = 0; /* getpid() on the first page read */
			pages.n = pages.next = 0;
			rd = read_paged;
			if (handler && known.tstate == tstate) {
				live_collect();
				/* Frames on the live frame stack are read
				 * where they are (below); the rest, and the
				 * thread state, through the pages. */
				deferred = known.live_n > 0;
			}
		} else {
			rd = mem_read_safe;
		}
	}

	/* Keep r[0..inner) for the innermost frames, a ring of `outer`
	 * slots after them for the outermost ones. */
	int inner = max - max / 2, outer = max / 2;
	uintptr_t frame, enclosing;
	bool check = false;
	if (from) {
		/* A suspended chain: no thread state, no enclosing loop. */
		frame = from;
		enclosing = 0;
	} else if (!first_frame(rd, tstate, &frame, &enclosing, &check)) {
		info->damaged = true;
		goto out;
	}
	unsigned char fb[HDR_MAX], cb[HDR_MAX];
	uintptr_t cb_code = 0; /* whose header cb holds */
	struct py_record *last; /* the frame stored last */
	bool group_open;       /* frames were kept since the last group ended */
	bool at_entry;         /* the frame walked last was its group's entry */
	uintptr_t saved;       /* Brent's cycle detection: cheap, no memory */
	long power, lam, steps;
	int total, ring;
	int sure;    /* frames kept that are complete for sure (deferred) */
	int pending; /* deferred: the entry check waits on the first pending
	                frames proving complete; -1: none */
restart:
	ring = 0;
	sure = 0;
	pending = -1;
	last = NULL;
	group_open = false;
	at_entry = false;
	saved = 0;
	power = 1;
	lam = 0;
	steps = 0;
	total = 0;
	while (frame) {
		if (++steps > 2L * PY_WALK_LIMIT || total >= PY_WALK_LIMIT ||
		    frame == saved || (frame & 7))
			goto bad;
		/* A frame on the live frame stack is read where it is. */
		const unsigned char *fp = fb;
		if (deferred && in_live(frame, (size_t)off.fr_size))
			fp = (const unsigned char *)frame;
		else if (!rd(fb, frame, (size_t)off.fr_size))
			goto bad;
		if (lam == power) {
			saved = frame;
			power *= 2;
			lam = 0;
		}
		lam++;
		uintptr_t prev = get_ptr(fp, off.fr_previous);
		/* 3.14+: a _PyStackRef, tag bits under the pointer. */
		uintptr_t code = get_ptr(fp, off.fr_code) & ~(uintptr_t)off.tag_bits;
		uint32_t flags = 0;
		int owner = off.fr_owner >= 0 ? fp[off.fr_owner] : -1;
		bool entry = off.fr_is_entry >= 0 && fp[off.fr_is_entry];
		/* The eval loop's entry frame (3.12+), the thread's base
		 * frame (3.15+). */
		bool shim = off.owner_entry >= 0 && owner >= off.owner_entry;
		if (shim)
			entry = true;
		if (entry && check) {
			/* The innermost group's entry frame hangs on the
			 * enclosing eval loop's frame; once frames were kept
			 * the chain is trusted as it is (greenlet, for one,
			 * moves frames between _PyCFrames). */
			if (prev != enclosing) {
				if (total == 0)
					goto bad;
				/* Frames kept so far may all prove incomplete
				 * (not shown): deferred_codes decides. */
				if (deferred && sure == 0)
					pending = total;
			}
			check = false;
		}
		if (shim) {
			/* 3.12+: a shim the eval loop pushes at its entry. The
			 * frame kept just before it is the outermost one that
			 * native eval frame runs. */
			if (last && group_open)
				last->flags |= PY_FRAME_ENTRY;
			group_open = false;
			at_entry = true;
			frame = prev;
			continue;
		}
		/* Recursion runs one code object many times: read it once. */
		if (!deferred && code != cb_code) {
			cb_code = 0;
			if (!read_code(rd, code, cb))
				goto bad;
			cb_code = code;
		}
		int32_t addr = -1;
		if (off.layout == PY_LAYOUT_38 || off.layout == PY_LAYOUT_310) {
			int32_t lasti = get_i32(fp, off.fr_instr);
			if (lasti >= 0 && lasti < CODE_BYTES_MAX)
				addr = off.layout == PY_LAYOUT_310 ? lasti * 2 : lasti;
			flags = PY_FRAME_ENTRY; /* one eval call per frame */
		} else {
			uintptr_t ip = get_ptr(fp, off.fr_instr);
			uintptr_t start = code + (uintptr_t)off.co_code_adaptive;
			if (ip >= start && ip - start < CODE_BYTES_MAX)
				addr = (int32_t)(ip - start);
			if (entry && off.fr_is_entry >= 0)
				flags = PY_FRAME_ENTRY;
			if (deferred) {
				/* deferred_codes decides. */
				if (owner != off.owner_generator)
					flags |= FR_INCOMPLETE_CAND;
				if (ip < start)
					flags |= FR_IP_LOW;
			} else {
				/* _PyFrame_IsIncomplete: pushed, prologue not
				 * run yet. Not shown; if it was its group's
				 * entry frame (3.11), the frame kept before it
				 * ends the group instead. */
				int32_t first = get_i32(cb, off.co_firsttraceable);
				if (owner != off.owner_generator &&
				    (ip < start || first < 0 ||
				     ip - start < (uintptr_t)first * 2)) {
					if (entry && last && group_open)
						last->flags |= PY_FRAME_ENTRY;
					if (entry)
						group_open = false;
					at_entry = entry;
					frame = prev;
					continue;
				}
			}
		}
		if (max > 0) {
			struct py_record *f;
			f = NULL;
			if (total < inner) {
				f = &r[total];
			} else if (outer > 0) {
				f = &r[inner + ring]; /* (total - inner) % outer */
				if (++ring == outer)
					ring = 0;
			}
			if (f) {
				f->code = code;
				f->addr = addr;
				f->flags = flags;
			}
			last = f;
		}
		group_open = !(flags & PY_FRAME_ENTRY);
		at_entry = entry;
		if (!(flags & FR_INCOMPLETE_CAND))
			sure++;
		total++;
		frame = prev;
	}
	/* 3.11+: each eval loop's outermost frame is an entry (is_entry, or
	 * the shim of 3.12+), and the thread's first one hangs on nothing. A
	 * chain that stops anywhere else is not the thread's stack, or not
	 * all of it. */
	if (off.layout >= PY_LAYOUT_311 && steps > 0 && !at_entry)
		goto bad;
	if (!check || total > 0)
		goto done;
bad:
	if (check && total == 0) {
		check = false;
		/* The innermost eval loop was caught half entered: its frame
		 * is not complete yet, so the stack is the enclosing one's. */
		if (enclosing) {
			frame = enclosing;
			goto restart;
		}
		/* With no enclosing frame, "no Python frames" would be right
		 * only for a thread entering its first eval loop; the same
		 * state comes from RETURN_GENERATOR, which pops the frame (and
		 * may unmap its chunk) a moment before it unlinks it, in a
		 * thread deep in Python. Which one it was cannot be known. */
	}
	info->damaged = true;
done:;
	int n = total < max ? total : max;
	int head = n;
	if (total > max) {
		head = inner;
		/* The oldest outer frame sits where the next one would go. */
		if (outer > 0)
			rotate(r, inner, max, (total - inner) % outer);
	}
	/* A chain that held together is the thread's own, alive while it is
	 * stopped, and so are its code objects: the table can read them. A
	 * damaged one may hold anything: only the pages. */
	if (deferred && leave_codes) {
		/* The watchdog reads them (py_read_names): fewer cache misses
		 * and no table search while the thread is stopped. */
		info->codes_left = true;
		info->pending = pending;
	} else if (deferred) {
		deferred_codes(info->damaged ? read_paged : read_table_paged, r,
			       info, &n, &total, &head, pending);
	}
	info->n = n;
	info->total = total;
	info->head = head;
out:
	if (paged)
		atomic_store(&pages_busy, false);
	return info->n;
}

int py_walk(mem_reader rd, uintptr_t tstate, struct py_frame *out, int max,
	    struct py_walk_info *info)
{
	_Static_assert(sizeof(struct py_record) <= sizeof(struct py_frame),
		       "records fit packed in the frames' buffer");
	struct py_record *rec = (struct py_record *)(void *)out;
	bool handler = rd == mem_read_mapped;
	int n = walk(rd, tstate, 0, rec, max, false, info);
	spread(rec, out, n);
	/* A chain that held together is the thread's own, alive while it is
	 * stopped, and so are its code objects and their names: in a
	 * handler, the table can read them. */
	if (handler)
		rd = info->damaged ? mem_read_safe : read_table_first;
	read_names(rd, out, n, info);
	return n;
}

int py_walk_records(uintptr_t tstate, struct py_record *rec, int max,
		    struct py_walk_info *info)
{
	return walk(mem_read_mapped, tstate, 0, rec, max, true, info);
}

int py_walk_suspended(uintptr_t frame, struct py_frame *out, int max,
		      struct py_walk_info *info)
{
	struct py_record *rec = (struct py_record *)(void *)out;
	int n = walk(mem_read_safe, 0, frame, rec, max, false, info);
	spread(rec, out, n);
	read_names(mem_read_safe, out, n, info);
	return n;
}

uintptr_t py_current_frame(uintptr_t tstate)
{
	uintptr_t frame, outer;
	bool check;
	if (!ready() || !tstate ||
	    !first_frame(mem_read_safe, tstate, &frame, &outer, &check))
		return 0;
	return frame;
}

bool py_frame_layout(uintptr_t *frame_type, int *f_frame)
{
	if (!ready() || !frame_type_addr)
		return false;
	*frame_type = frame_type_addr;
	/* PyFrameObject.f_frame (3.11-3.13: after ob_refcnt, ob_type,
	 * f_back); before 3.11 frame objects chain themselves. */
	*f_frame = off.layout >= PY_LAYOUT_311 ? 24 : -1;
	return off.layout <= PY_LAYOUT_313;
}

/*
 * Watchdog: the offsets against the running interpreter, through
 * fault-tolerant reads of memory other threads change meanwhile. Every
 * thread state links back to its interpreter and to the one before it,
 * one at least carries the kernel id of a thread of this process, each
 * frame stack's top lies in its chunk, and the frames of the threads lead
 * to code objects whose names are strings, whose line table is bytes and
 * whose bytecode holds the frame's instruction. 1: confirmed, 0: cannot
 * tell yet (no thread runs Python), -1: refuted (*why says how).
 */
static int live_check_once(const char **why)
{
	const struct py_offsets *o = &off;
	const mem_reader rd = mem_read_safe;
	uintptr_t interp;
	*why = " (debug offsets do not match the interpreter)";
	if (!read_ptr(rd, runtime_addr + (uintptr_t)o->rt_interp_head, &interp)) {
		*why = " (its interpreter list cannot be read)";
		return -1;
	}
	if (!interp)
		return 0; /* not initialised yet */
	int threads = 0, tids = 0, bad_stacks = 0, examined = 0, verified = 0;
	pid_t pid = getpid();
	for (int i = 0; interp && i < 16; i++) {
		uintptr_t ts, prev = 0;
		if (!read_ptr(rd, interp + (uintptr_t)o->is_threads_head, &ts))
			return -1;
		for (int j = 0; ts && j < 256; j++) {
			unsigned char tb[TSTATE_NEAR];
			if ((ts & 7) || !rd(tb, ts, (size_t)o->ts_size)) {
				*why = " (debug offsets do not match the thread list)";
				return -1;
			}
			if (get_ptr(tb, live.ts_interp) != interp ||
			    get_ptr(tb, live.ts_prev) != prev) {
				*why = " (debug offsets do not match the thread states)";
				return -1;
			}
			uintptr_t tid = get_ptr(tb, o->ts_native_thread_id);
			if (tid > 0 && tid < (1u << 30) &&
			    syscall(SYS_tgkill, pid, (pid_t)tid, 0) == 0)
				tids++;
			uintptr_t chunk = get_ptr(tb, o->ts_datastack_chunk);
			uintptr_t top = get_ptr(tb, o->ts_datastack_top);
			uintptr_t size;
			if (chunk && ((chunk & 7) ||
				      !read_ptr(rd, chunk + (uintptr_t)o->sc_size, &size) ||
				      size > CODE_BYTES_MAX ||
				      top < chunk + (uintptr_t)o->sc_data ||
				      top > chunk + size))
				bad_stacks++;
			uintptr_t frame = get_ptr(tb, o->ts_frame);
			for (int k = 0; frame && k < 32; k++) {
				unsigned char fb[HDR_MAX], cb[HDR_MAX];
				if ((frame & 7) || !rd(fb, frame, (size_t)o->fr_size))
					break;
				int owner = fb[o->fr_owner];
				uintptr_t code = get_ptr(fb, o->fr_code) &
						 ~(uintptr_t)o->tag_bits;
				uintptr_t ip = get_ptr(fb, o->fr_instr);
				frame = get_ptr(fb, o->fr_previous);
				if (owner >= o->owner_entry)
					continue; /* entry or base frame */
				examined++;
				uintptr_t name, file, lt, t1, t2, t3;
				int64_t units;
				if (!read_code(rd, code, cb))
					continue;
				name = get_ptr(cb, o->co_name);
				file = get_ptr(cb, o->co_filename);
				lt = get_ptr(cb, o->co_linetable);
				memcpy(&units, cb + o->bytes_size, sizeof(units));
				uintptr_t start = code + (uintptr_t)o->co_code_adaptive;
				int32_t first = get_i32(cb, o->co_firsttraceable);
				if (read_ptr(rd, name + (uintptr_t)o->ob_type, &t1) &&
				    read_ptr(rd, file + (uintptr_t)o->ob_type, &t2) &&
				    read_ptr(rd, lt + (uintptr_t)o->ob_type, &t3) &&
				    t1 == unicode_type && t2 == unicode_type &&
				    t3 == bytes_type && units > 0 &&
				    units < CODE_BYTES_MAX / 2 && first >= 0 &&
				    first <= units && ip >= start &&
				    ip <= start + (uintptr_t)units * 2)
					verified++;
			}
			threads++;
			prev = ts;
			ts = get_ptr(tb, o->ts_next);
		}
		if (!read_ptr(rd, interp + (uintptr_t)o->is_next, &interp))
			return -1;
	}
	if (threads == 0)
		return 0;
	if (tids == 0) {
		*why = " (debug offsets do not match the thread ids)";
		return -1;
	}
	if (bad_stacks == threads) {
		*why = " (debug offsets do not match the frame stacks)";
		return -1;
	}
	if (verified > 0)
		return 1;
	if (examined >= 3) {
		*why = " (debug offsets do not match its frames)";
		return -1;
	}
	return 0;
}

/* Watchdog: whether an interpreter exists yet (0 before Py_Initialize). */
static bool live_started(void)
{
	uintptr_t interp;
	return read_ptr(mem_read_safe, runtime_addr + (uintptr_t)off.rt_interp_head,
			&interp) && interp;
}

/* Threads run meanwhile: refuted only when three looks in a row say so. */
static int live_check(const char **why)
{
	int r = 0;
	for (int i = 0; i < 3; i++) {
		r = live_check_once(why);
		if (r >= 0)
			return r;
	}
	return r;
}

/* ---- thread states ------------------------------------------------------- */

/* Whether tstate has a Python frame: false also when it cannot be read. */
static bool tstate_running(mem_reader rd, uintptr_t ts)
{
	uintptr_t p, frame;
	if (!read_ptr(rd, ts + (uintptr_t)off.ts_frame, &p) || !p)
		return false;
	if (off.cf_current_frame < 0 && off.layout >= PY_LAYOUT_313) {
		/* 3.15+: an idle thread's current frame is its base frame,
		 * owned by the interpreter, with nothing before it. */
		unsigned char fb[HDR_MAX];
		if (!rd(fb, p, (size_t)off.fr_size))
			return false;
		return !(fb[off.fr_owner] >= off.owner_entry &&
			 get_ptr(fb, off.fr_previous) == 0);
	}
	if (off.cf_current_frame < 0)
		return true;
	return read_ptr(rd, p + (uintptr_t)off.cf_current_frame, &frame) &&
	       frame != 0;
}

/*
 * Up to 3.11 a thread state made for a new thread carries the ids of the
 * thread that made it (threading.Thread.start) until the new thread runs
 * and puts in its own: for a moment two states match the starting thread,
 * the new one first in the list, and it has no frame. So a match that runs
 * Python wins over an idle one; the first idle one otherwise.
 */
uintptr_t py_tstate_find(mem_reader rd, pid_t tid, unsigned long pthread_id)
{
	if (!ready())
		return 0;
	uintptr_t interp, found = 0;
	if (!read_ptr(rd, runtime_addr + (uintptr_t)off.rt_interp_head, &interp))
		return 0;
	for (int i = 0; interp && i < INTERP_MAX; i++) {
		uintptr_t ts;
		if (!read_ptr(rd, interp + (uintptr_t)off.is_threads_head, &ts))
			return found;
		for (int j = 0; ts && j < THREADS_MAX; j++) {
			uintptr_t id;
			/* 3.11+ records the kernel tid; before, only
			 * pthread_self() of the thread. */
			bool native = off.ts_native_thread_id >= 0;
			int at = native ? off.ts_native_thread_id : off.ts_thread_id;
			if (!read_ptr(rd, ts + (uintptr_t)at, &id))
				return found;
			if (id == (native ? (uintptr_t)tid : pthread_id)) {
				if (tstate_running(rd, ts))
					return ts;
				if (!found)
					found = ts;
			}
			if (!read_ptr(rd, ts + (uintptr_t)off.ts_next, &ts))
				return found;
		}
		if (!read_ptr(rd, interp + (uintptr_t)off.is_next, &interp))
			return found;
	}
	return found;
}

/* ---- line numbers -------------------------------------------------------- */

/* 3.8, 3.9: co_lnotab, (address delta, signed line delta) byte pairs. */
static int line_lnotab(const unsigned char *t, size_t n, int first, int addr)
{
	int line = first, a = 0;
	for (size_t i = 0; i + 1 < n; i += 2) {
		a += t[i];
		if (a > addr)
			break;
		line += (signed char)t[i + 1];
	}
	return line;
}

/* 3.10: co_linetable, (address delta, signed line delta) pairs where a line
 * delta of -128 means "no line" for that range. */
static int line_310(const unsigned char *t, size_t n, int first, int addr)
{
	int computed = first, start = 0;
	for (size_t i = 0; i + 1 < n; i += 2) {
		int end = start + t[i];
		int ld = (signed char)t[i + 1];
		int line = -1;
		if (ld != -128) {
			computed += ld;
			line = computed;
		}
		if (addr >= start && addr < end)
			return line;
		start = end;
	}
	return -1;
}

static unsigned varint(const unsigned char *t, size_t n, size_t *p)
{
	unsigned v = 0;
	for (int shift = 0; *p < n && shift < 32; shift += 6) {
		unsigned b = t[(*p)++];
		v |= (b & 63u) << shift;
		if (!(b & 64))
			break;
	}
	return v;
}

static int svarint(const unsigned char *t, size_t n, size_t *p)
{
	unsigned v = varint(t, n, p);
	return v & 1 ? -(int)(v >> 1) : (int)(v >> 1);
}

/* 3.11+: the location table (Objects/locations.md); only the start line
 * matters here. */
static int line_311(const unsigned char *t, size_t n, int first, int addr)
{
	int computed = first, start = 0;
	size_t p = 0;
	while (p < n) {
		unsigned b = t[p];
		if (!(b & 0x80))
			return -1; /* not at an entry: malformed */
		unsigned code = (b >> 3) & 15;
		int end = start + (int)((b & 7) + 1) * 2;
		size_t q = p + 1;
		int delta = 0;
		if (code == 13 || code == 14)
			delta = svarint(t, n, &q);
		else if (code >= 10 && code <= 12)
			delta = (int)code - 10;
		computed += delta;
		if (addr >= start && addr < end)
			return code == 15 ? -1 : computed;
		start = end;
		for (p++; p < n && !(t[p] & 0x80); p++)
			;
	}
	return -1;
}

/* Watchdog only: one decoded table at a time. */
static unsigned char lt_buf[LINETABLE_MAX];

static int line_of(mem_reader rd, uintptr_t code, int addr, uintptr_t *cached,
		   size_t *cached_n, int *first)
{
	unsigned char cb[HDR_MAX];
	if (code != *cached) {
		*cached = 0;
		if (!read_code(rd, code, cb))
			return 0;
		*first = get_i32(cb, off.co_firstlineno);
		uintptr_t lt = get_ptr(cb, off.co_linetable);
		unsigned char bh[HDR_MAX];
		if (!lt || (lt & 7) || !rd(bh, lt, (size_t)off.bytes_sval) ||
		    get_ptr(bh, off.ob_type) != bytes_type)
			return 0;
		int64_t size;
		memcpy(&size, bh + off.bytes_size, sizeof(size));
		if (size < 0)
			return 0;
		size_t n = (uint64_t)size < sizeof(lt_buf) ? (size_t)size :
							     sizeof(lt_buf);
		if (!rd(lt_buf, lt + (uintptr_t)off.bytes_sval, n))
			return 0;
		*cached = code;
		*cached_n = n;
	}
	if (addr < 0)
		return *first;
	int line;
	switch (off.layout) {
	case PY_LAYOUT_38:
		line = line_lnotab(lt_buf, *cached_n, *first, addr);
		break;
	case PY_LAYOUT_310:
		line = line_310(lt_buf, *cached_n, *first, addr);
		break;
	default:
		line = line_311(lt_buf, *cached_n, *first, addr);
		break;
	}
	return line > 0 ? line : 0;
}

void py_resolve_lines(mem_reader rd, struct py_frame *f, int n)
{
	if (!ready())
		return;
	uintptr_t cached = 0;
	size_t cached_n = 0;
	int first = 0;
	for (int i = 0; i < n; i++)
		f[i].line = line_of(rd, f[i].code, f[i].addr, &cached, &cached_n,
				    &first);
}

bool py_is_eval_symbol(const char *name)
{
	static const char eval[] = "_PyEval_EvalFrameDefault";
	size_t len = sizeof(eval) - 1;
	/* Also its hot/cold split parts (gcc's ".cold"). */
	return name && strncmp(name, eval, len) == 0 &&
	       (name[len] == '\0' || name[len] == '.');
}

/* ---- the GIL ------------------------------------------------------------- */

#define GIL_INTERP_MAX 64 /* interpreters looked at for a GIL */

const char *py_gil_unavailable(void)
{
	if (!ready())
		return "Python frames cannot be read";
	if (gil_why)
		return gil_why;
	if (off.rt_gil < 0 && off.is_ceval_gil < 0)
		return "no GIL layout for this version";
	return NULL;
}

bool py_gil_read(uintptr_t gil, struct py_gil *g)
{
	unsigned char b[HDR_MAX];
	int end = off.gil_switch + 8;
	if (end < off.gil_holder + 8)
		end = off.gil_holder + 8;
	if (end < off.gil_locked + 4)
		end = off.gil_locked + 4;
	if (!gil || (gil & 7) || end > HDR_MAX ||
	    !mem_read_safe(b, gil, (size_t)end))
		return false;
	g->addr = gil;
	g->locked = get_i32(b, off.gil_locked);
	g->holder = get_ptr(b, off.gil_holder);
	memcpy(&g->switches, b + off.gil_switch, sizeof(g->switches));
	/* -1 before the GIL was first created; nothing else is valid. */
	return g->locked >= -1 && g->locked <= 1 && !(g->holder & 7);
}

/* Whether uaddr lies in the condition variable or the mutex of gil. */
static bool gil_contains(uintptr_t gil, uintptr_t uaddr)
{
	uintptr_t c = gil + (uintptr_t)off.gil_cond;
	uintptr_t m = gil + (uintptr_t)off.gil_mutex;
	return (uaddr >= c && uaddr < c + (uintptr_t)off.gil_cond_size) ||
	       (uaddr >= m && uaddr < m + (uintptr_t)off.gil_mutex_size);
}

/*
 * 3.12+: the GIL an interpreter uses is its ceval.gil, its own _gil or
 * the main interpreter's. One whose condition variable or mutex holds
 * uaddr counts only if an interpreter in the list uses it.
 */
static uintptr_t gil_find(uintptr_t uaddr)
{
	if (off.rt_gil >= 0) {
		uintptr_t gil = runtime_addr + (uintptr_t)off.rt_gil;
		return gil_contains(gil, uaddr) ? gil : 0;
	}
	if (off.is_ceval_gil < 0 || off.is_gil < 0)
		return 0;
	uintptr_t interps[GIL_INTERP_MAX], head;
	int n = 0;
	if (!read_ptr(mem_read_safe, runtime_addr + (uintptr_t)off.rt_interp_head,
		      &head))
		return 0;
	for (uintptr_t i = head; i && n < GIL_INTERP_MAX;) {
		interps[n++] = i;
		if (!read_ptr(mem_read_safe, i + (uintptr_t)off.is_next, &i))
			return 0;
	}
	for (int k = 0; k < n; k++) {
		uintptr_t gil = interps[k] + (uintptr_t)off.is_gil;
		if (!gil_contains(gil, uaddr))
			continue;
		for (int j = 0; j < n; j++) {
			uintptr_t used;
			if (read_ptr(mem_read_safe,
				     interps[j] + (uintptr_t)off.is_ceval_gil, &used) &&
			    used == gil)
				return gil;
		}
		return 0;
	}
	return 0;
}

bool py_gil_waited(uintptr_t uaddr, struct py_gil *g)
{
	if (py_gil_unavailable())
		return false;
	uintptr_t gil = gil_find(uaddr);
	return gil && py_gil_read(gil, g);
}

bool py_tstate_ids(uintptr_t ts, pid_t *tid, unsigned long *pthread_id)
{
	*tid = 0;
	*pthread_id = 0;
	if (!ready() || !ts || (ts & 7))
		return false;
	uintptr_t interp;
	if (!read_ptr(mem_read_safe, runtime_addr + (uintptr_t)off.rt_interp_head,
		      &interp))
		return false;
	for (int i = 0; interp && i < INTERP_MAX; i++) {
		uintptr_t t;
		if (!read_ptr(mem_read_safe, interp + (uintptr_t)off.is_threads_head, &t))
			return false;
		for (int j = 0; t && j < THREADS_MAX; j++) {
			if (t == ts) {
				uintptr_t id;
				if (!read_ptr(mem_read_safe, ts + (uintptr_t)off.ts_thread_id,
					      &id))
					return false;
				*pthread_id = id;
				if (off.ts_native_thread_id >= 0 &&
				    read_ptr(mem_read_safe,
					     ts + (uintptr_t)off.ts_native_thread_id, &id) &&
				    id > 0 && id < (1u << 30))
					*tid = (pid_t)id;
				return true;
			}
			if (!read_ptr(mem_read_safe, t + (uintptr_t)off.ts_next, &t))
				return false;
		}
		if (!read_ptr(mem_read_safe, interp + (uintptr_t)off.is_next, &interp))
			return false;
	}
	return false;
}

bool py_gil_held_by(uintptr_t ts)
{
	if (!ts || py_gil_unavailable())
		return false;
	struct py_gil g;
	if (off.rt_gil >= 0)
		return py_gil_read(runtime_addr + (uintptr_t)off.rt_gil, &g) &&
		       g.locked == 1 && g.holder == ts;
	uintptr_t i;
	if (!read_ptr(mem_read_safe, runtime_addr + (uintptr_t)off.rt_interp_head, &i))
		return false;
	for (int n = 0; i && n < GIL_INTERP_MAX; n++) {
		uintptr_t gil;
		if (read_ptr(mem_read_safe, i + (uintptr_t)off.is_ceval_gil, &gil) &&
		    py_gil_read(gil, &g) && g.locked == 1 && g.holder == ts)
			return true;
		if (!read_ptr(mem_read_safe, i + (uintptr_t)off.is_next, &i))
			return false;
	}
	return false;
}
