/* asyncio tasks without the GIL, CPython 3.8-3.15. See aio.h. */
#include "aio.h"

#include <arpa/inet.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "mem.h"
#include "pyoffsets.h"
#include "python.h"
#include "real.h"
#include "sys.h"
#include "thread.h"

/*
 * The layouts asyncio's objects have per minor version: Modules/_asynciomodule.c
 * (TaskObj, futureiterobject), Include/cpython/genobject.h and
 * internal/pycore_frame.h (3.14+: pycore_interpframe_structs.h), the
 * PyFrameObject of 3.8-3.10, pycore_dict.h / dict-common.h, pycore_object.h
 * (where an instance keeps its attributes). Measured on each interpreter by
 * tests/eventloop/aio_layout.py, which the suite runs against this table.
 * What CPython publishes wins over the table: on 3.13+ where sys.modules
 * lies (_Py_DebugOffsets.interpreter_state.imports_modules), on 3.14+ the
 * task's coroutine, the per-thread task list and the running task
 * (_AsyncioDebug, the section .AsyncioDebug of the _asyncio module or of
 * libpython). Everything read is type-checked.
 */
enum stack_kind {
	STACK_PTR = 1,   /* a pointer past the top (3.8/3.9 f_stacktop, 3.14+ stackpointer) */
	STACK_DEPTH,     /* f_valuestack and f_stackdepth (3.10) */
	STACK_INDEX,     /* localsplus[stacktop] (3.11-3.13) */
};

struct aio_layout {
	int minor;
	int is_modules;      /* PyInterpreterState: modules / imports.modules */
	int dbg_is_modules;  /* its position in _Py_DebugOffsets (3.13+), else -1 */
	int ht_cached_keys;  /* PyHeapTypeObject.ht_cached_keys */
	int managed;         /* instance attributes: 0 dict at tp_dictoffset;
	                        11 dict at -24 or values at -32; 12 tagged
	                        dict-or-values at -24; 13 dict at -24 or values
	                        inline at tp_basicsize */
	int values_at;       /* the first value in a PyDictValues */
	bool dict_new;       /* 3.11+ dict keys (dk_log2_index_bytes, dk_kind) */
	int task_coro;       /* TaskObj.task_coro; -1: from _AsyncioDebug */
	int coro_frame;      /* cr_frame (a PyFrameObject *, <3.11) or gi_iframe */
	int frame_state;     /* gi_frame_state (3.11+), f_state (3.10), or -1 */
	int8_t st_suspended, st_yield_from, st_yield_from2;
	int fr_back;         /* f_back / previous */
	int fr_code;         /* f_code / f_executable */
	int fr_locals;       /* f_localsplus / localsplus */
	int fr_stack, fr_depth;
	int stack_kind;
	int await_below;     /* the awaited object is stack[top - await_below] */
	uintptr_t tag_mask;  /* _PyStackRef's tag bits cleared (3.14+) */
	int co_nlocals;      /* int co_nlocals (<3.11) / co_nlocalsplus */
	bool long_tag;       /* PyLongObject.lv_tag (3.12+), else ob_size */
	int tuple_items;     /* PyTupleObject.ob_item (3.14+: after ob_hash) */
};

#define NOTAG (~(uintptr_t)0)
static const struct aio_layout layouts[] = {
	{8, 56, -1, 872, 0, 0, false, 112, 16, -1, 0, 0, 0, 24, 32, 360, 72, -1,
	 STACK_PTR, 1, NOTAG, 28, false, 24},
	{9, 856, -1, 864, 0, 0, false, 152, 16, -1, 0, 0, 0, 24, 32, 360, 72, -1,
	 STACK_PTR, 1, NOTAG, 28, false, 24},
	{10, 856, -1, 872, 0, 0, false, 160, 16, 108, -1, -1, -1, 24, 32, 352, 64, 80,
	 STACK_DEPTH, 1, NOTAG, 28, false, 24},
	{11, 888, -1, 872, 11, 0, true, 136, 80, 75, -1, -1, -1, 48, 32, 72, 64, -1,
	 STACK_INDEX, 1, NOTAG, 76, false, 24},
	{12, 944, -1, 880, 12, 0, true, 136, 72, 67, -1, -1, -1, 8, 0, 72, 64, -1,
	 STACK_INDEX, 1, NOTAG, 72, true, 24},
	{13, 7656, 88, 880, 13, 8, true, 120, 72, 67, -2, -1, -1, 8, 0, 72, 64, -1,
	 STACK_INDEX, 1, NOTAG, 72, true, 24},
	{14, 7688, 96, 880, 13, 8, true, -1, 72, 67, -2, -1, -1, 8, 0, 80, 64, -1,
	 STACK_PTR, 1, ~(uintptr_t)3, 72, true, 32},
	/* 3.15 renumbered the frame states; FRAME_SUSPENDED_YIELD_FROM_LOCKED
	 * (3) also awaits; the awaited object lies below the value SEND left. */
	{15, 7592, 96, 888, 13, 8, true, -1, 72, 67, 1, 2, 3, 8, 0, 80, 64, -1,
	 STACK_PTR, 2, ~(uintptr_t)3, 72, true, 32},
};

/* Layouts common to every version. */
#define TS_INTERP 16          /* PyThreadState.interp */
#define OB_TYPE 8
#define TP_NAME 24            /* PyTypeObject.tp_name */
#define TP_BASICSIZE 32
#define TP_FLAGS 168
#define TP_BASE 256
#define TP_DICTOFFSET 288
#define FLAG_INLINE_VALUES (1UL << 2)  /* 3.13+ */
#define FLAG_MANAGED_DICT (1UL << 4)   /* 3.11+ */
#define MOD_DICT 16           /* PyModuleObject.md_dict */
#define DICT_KEYS 32          /* PyDictObject.ma_keys */
#define DICT_VALUES 40        /* PyDictObject.ma_values */
#define SET_MASK 32           /* PySetObject.mask */
#define SET_TABLE 40          /* PySetObject.table */
#define LIST_SIZE 16
#define LIST_ITEMS 24
#define LONG_DIGITS 24
#define WR_OBJECT 16          /* PyWeakReference.wr_object */
#define CELL_REF 16           /* PyCellObject.ob_ref */
#define FUTITER_FUTURE 16     /* futureiterobject.future */
#define SOCK_FD 16            /* PySocketSockObject.sock_fd */
#define FUT_CALLBACK0 24      /* FutureObj.fut_callback0 */
#define FUT_CALLBACKS 40      /* .fut_callbacks: a list of (callback, context) */
#define CO_CODE_OLD 48        /* PyCodeObject.co_code (3.8-3.10) */
#define CO_FREEVARS_OLD 80    /* .co_freevars (3.8-3.10) */
#define CO_CELLVARS_OLD 88    /* .co_cellvars (3.8-3.10) */
#define YIELD_FROM_OLD 72     /* the opcode an await suspends in (3.8-3.10) */

#define CHAIN_MAX 64          /* frames of one report */
#define TASKS_MAX 10000       /* tasks looked at */
#define FOLLOW_MAX 8          /* tasks followed from one gathering future */
#define SET_MAX (1 << 16)
#define DICT_MAX (1 << 16)
#define LOCALS_MAX 64
#define HINT_FRAMES 16        /* a task's frames searched for its connection */
#define STACK_MAX 4096

static const struct aio_layout *L;
static const struct py_offsets *P;
static uintptr_t t_dict, t_set, t_coro, t_gen, t_tuple, t_long, t_weakref, t_code,
	t_cell, t_list, t_str, t_bytes;
static uintptr_t t_task; /* _asyncio.Task, once seen */
static uintptr_t t_func;
static uintptr_t cur_ts; /* the loop thread's, while a capture runs */
static int modules_off = -1;

/*
 * Reads go through a small cache of 256-byte blocks (aligned: a block never
 * spans two pages), emptied before each task, coroutine or frame is read
 * (cache_drop): the fields of one object and its neighbours cost one
 * system call, and nothing read is older than the object being read.
 */
#define BLOCK 256
#define BLOCKS 16
static struct {
	uintptr_t base;
	unsigned gen;
	unsigned char b[BLOCK];
} cache[BLOCKS];
static unsigned cache_gen = 1;

static void cache_drop(void)
{
	if (++cache_gen == 0)
		cache_gen = 1;
}

static bool rd_n(uintptr_t a, void *v, size_t n)
{
	if (a < 4096 || (a & (n - 1)))
		return false;
	uintptr_t base = a & ~(uintptr_t)(BLOCK - 1);
	unsigned i = (unsigned)((base / BLOCK) % BLOCKS);
	if (cache[i].gen != cache_gen || cache[i].base != base) {
		if (!mem_read_safe(cache[i].b, base, BLOCK)) {
			cache[i].gen = 0;
			return mem_read_safe(v, a, n);
		}
		cache[i].base = base;
		cache[i].gen = cache_gen;
	}
	memcpy(v, cache[i].b + (a - base), n);
	return true;
}

static bool rd(uintptr_t a, uintptr_t *v)
{
	return rd_n(a, v, sizeof(*v));
}

static bool rd32(uintptr_t a, int32_t *v)
{
	return rd_n(a, v, sizeof(*v));
}

static bool rd8(uintptr_t a, int8_t *v)
{
	return rd_n(a, v, sizeof(*v));
}

static uintptr_t type_of(uintptr_t obj)
{
	uintptr_t t;
	return rd(obj + OB_TYPE, &t) ? t : 0;
}

/* ---- the version's layout ------------------------------------------------ */

/*
 * Where struct _Py_DebugOffsets (_PyRuntime's first member) keeps what the
 * table also holds, 3.14+ (pycore_debug_offsets.h; 3.16+ read with 3.15's
 * positions, as python.c does): the published value wins where the table
 * has one of its own (a newer release that moved a field), and must equal
 * the constants every version shares.
 */
struct dbg_pos {
	int minor, size;
	int localsplus, stackpointer, gi_iframe, gi_frame_state, tuple_item,
		set_table, set_mask, dict_keys, dict_values, long_digit, tp_flags;
};
static const struct dbg_pos dbg_pos[] = {
	{14, 760, 280, 296, 680, 688, 456, 512, 520, 536, 544, 584, 440},
	{15, 888, 344, 360, 808, 816, 552, 608, 616, 632, 640, 680, 504},
};

static const char *published(struct aio_layout *l)
{
	if (l->minor < 14)
		return NULL;
	const struct dbg_pos *d = &dbg_pos[ARRAY_LEN(dbg_pos) - 1];
	for (size_t i = 0; i < ARRAY_LEN(dbg_pos); i++)
		if (dbg_pos[i].minor == l->minor)
			d = &dbg_pos[i];
	static unsigned char b[1024];
	uint64_t version;
	uintptr_t rt = py_symbol("_PyRuntime");
	if (!rt || (size_t)d->size > sizeof(b) || !mem_read_safe(b, rt, (size_t)d->size) ||
	    memcmp(b, "xdebugpy", 8) != 0)
		return "the interpreter's debug offsets cannot be read";
	memcpy(&version, b + 8, 8);
	if ((version >> 24) != 3 || ((version >> 16) & 0xff) < 14)
		return "the interpreter's debug offsets are of another version";
	const int pos[] = {d->localsplus, d->stackpointer, d->gi_iframe, d->gi_frame_state,
			   d->tuple_item, d->set_table, d->set_mask, d->dict_keys,
			   d->dict_values, d->long_digit, d->tp_flags};
	uint64_t v[ARRAY_LEN(pos)];
	for (size_t i = 0; i < ARRAY_LEN(pos); i++) {
		memcpy(&v[i], b + pos[i], 8);
		if (v[i] >= 4096 || v[i] % (i == 3 ? 1 : 8))
			return "the interpreter's debug offsets are malformed";
	}
	if (v[5] != SET_TABLE || v[6] != SET_MASK || v[7] != DICT_KEYS ||
	    v[8] != DICT_VALUES || v[9] != LONG_DIGITS || v[10] != TP_FLAGS)
		return "the interpreter's debug offsets differ from slowdog's asyncio layout";
	l->fr_locals = (int)v[0];
	l->fr_stack = (int)v[1];
	l->coro_frame = (int)v[2];
	l->frame_state = (int)v[3];
	l->tuple_items = (int)v[4];
	if (l->fr_stack >= l->fr_locals || l->frame_state >= l->coro_frame)
		return "the interpreter's debug offsets are malformed";
	return NULL;
}

static const char *find_layout(void)
{
	if (L)
		return NULL;
	int major = 0, minor = 0;
	const char *v = py_version_string();
	if (!v[0] || sscanf(v, "%d.%d", &major, &minor) != 2)
		return "CPython's version is not known";
	if (major != 3 || minor < 8)
		return "asyncio tasks are located on CPython 3.8 and later only";
	if (py_unavailable())
		return "this CPython's frames are not read";
	const struct aio_layout *l = NULL;
	for (size_t i = 0; i < ARRAY_LEN(layouts); i++)
		if (layouts[i].minor == minor)
			l = &layouts[i];
	bool newer = !l && minor > layouts[ARRAY_LEN(layouts) - 1].minor;
	if (newer)
		l = &layouts[ARRAY_LEN(layouts) - 1];
	const struct py_offsets *p = pyoffsets_get(3, minor);
	if (!p && newer)
		p = pyoffsets_newest();
	if (!l || !p)
		return "no asyncio layout for this CPython";
	t_dict = py_symbol("PyDict_Type");
	t_set = py_symbol("PySet_Type");
	t_coro = py_symbol("PyCoro_Type");
	t_gen = py_symbol("PyGen_Type");
	t_tuple = py_symbol("PyTuple_Type");
	t_long = py_symbol("PyLong_Type");
	t_weakref = py_symbol("_PyWeakref_RefType");
	t_code = py_symbol("PyCode_Type");
	t_cell = py_symbol("PyCell_Type");
	t_list = py_symbol("PyList_Type");
	t_str = py_symbol("PyUnicode_Type");
	t_bytes = py_symbol("PyBytes_Type");
	t_func = py_symbol("PyFunction_Type");
	if (!(t_dict && t_set && t_coro && t_gen && t_tuple && t_long && t_weakref &&
	      t_code && t_cell && t_list && t_str && t_bytes && t_func))
		return "CPython's types were not found";
	static struct aio_layout cur;
	cur = *l;
	const char *why = published(&cur);
	if (why)
		return why;
	P = p;
	L = &cur;
	return NULL;
}

/* ---- strings, dicts, attributes ------------------------------------------- */

/* A compact ASCII str into buf (NUL-terminated); false if it is none or
 * longer than cap - 1. */
static bool str_read(uintptr_t obj, char *buf, size_t cap)
{
	uintptr_t len;
	uint32_t state;
	if (type_of(obj) != t_str || !rd(obj + (uintptr_t)P->str_length, &len) ||
	    len >= cap || !mem_read_safe(&state, obj + (uintptr_t)P->str_state, 4))
		return false;
	if (!((state >> P->str_compact_bit) & 1) || !((state >> P->str_ascii_bit) & 1))
		return false;
	if (!mem_read_safe(buf, obj + (uintptr_t)P->str_ascii_size, len))
		return false;
	buf[len] = '\0';
	return true;
}

static bool str_is(uintptr_t obj, const char *s)
{
	char buf[64];
	return strlen(s) < sizeof(buf) && str_read(obj, buf, sizeof(buf)) &&
	       strcmp(buf, s) == 0;
}

/* The entries of a dict's keys object: where they start, their size, the
 * key's place in one, how many. */
struct keys {
	uintptr_t entries;
	size_t esz, koff;
	uintptr_t n;
};

static bool keys_of(uintptr_t keys, struct keys *k)
{
	uintptr_t nentries, hdr;
	if (L->dict_new) {
		/* dk_refcnt; dk_log2_size, dk_log2_index_bytes, dk_kind (bytes
		 * 8-10); ...; dk_nentries at 24; dk_indices at 32 */
		if (!rd(keys + 24, &nentries) || !rd(keys + 8, &hdr))
			return false;
		unsigned log2_index = (unsigned)(hdr >> 8) & 0xff;
		unsigned kind = (unsigned)(hdr >> 16) & 0xff;
		if (log2_index > 24)
			return false;
		k->entries = keys + 32 + ((uintptr_t)1 << log2_index);
		k->esz = kind ? 16 : 24;
		k->koff = kind ? 0 : 8;
	} else {
		/* dk_refcnt, dk_size, dk_lookup, dk_usable, dk_nentries,
		 * dk_indices (1, 2, 4 or 8 bytes an index) */
		uintptr_t size;
		if (!rd(keys + 8, &size) || !rd(keys + 32, &nentries) || size > DICT_MAX * 2)
			return false;
		size_t w = size <= 0xff ? 1 : size <= 0xffff ? 2 : 4;
		k->entries = keys + 40 + size * w;
		k->esz = 24;
		k->koff = 8;
	}
	if (nentries > DICT_MAX)
		return false;
	k->n = nentries;
	return true;
}

/* For each of names[0..n), its index among keys' entries (-1 if absent),
 * each key read once. */
static void keys_find(uintptr_t keys, const char *const *names, int n, long *idx)
{
	struct keys k;
	for (int j = 0; j < n; j++)
		idx[j] = -1;
	if (!keys_of(keys, &k))
		return;
	for (uintptr_t i = 0; i < k.n; i++) {
		uintptr_t key;
		char buf[64];
		if (!rd(k.entries + i * k.esz + k.koff, &key) || !key ||
		    !str_read(key, buf, sizeof(buf)))
			continue;
		for (int j = 0; j < n; j++)
			if (idx[j] < 0 && strcmp(buf, names[j]) == 0)
				idx[j] = (long)i;
	}
}

#define NAMES_MAX 4

/* out[j] = d[names[j]] for a dict d with str keys; 0 if absent. */
static void dict_find(uintptr_t d, const char *const *names, int n, uintptr_t *out)
{
	uintptr_t keys, values;
	struct keys k;
	long idx[NAMES_MAX];
	for (int j = 0; j < n; j++)
		out[j] = 0;
	if (n > NAMES_MAX || type_of(d) != t_dict || !rd(d + DICT_KEYS, &keys) ||
	    !rd(d + DICT_VALUES, &values) || !keys_of(keys, &k))
		return;
	keys_find(keys, names, n, idx);
	for (int j = 0; j < n; j++) {
		uintptr_t v, i = (uintptr_t)idx[j];
		if (idx[j] < 0)
			continue;
		if (values ? rd(values + (uintptr_t)L->values_at + 8 * i, &v)
			   : rd(k.entries + i * k.esz + k.koff + 8, &v))
			out[j] = v;
	}
}

/* d[key] for a dict d with str keys; 0 if absent or unreadable. */
static uintptr_t dict_get(uintptr_t d, const char *key)
{
	uintptr_t v;
	dict_find(d, &key, 1, &v);
	return v;
}

/* out[j] = an instance's attribute names[j], from its dict or its
 * values; 0 if it has none. */
static void attr_find(uintptr_t obj, const char *const *names, int n, uintptr_t *out)
{
	uintptr_t type = type_of(obj), flags, d, keys;
	for (int j = 0; j < n; j++)
		out[j] = 0;
	if (n > NAMES_MAX || !type || !rd(type + TP_FLAGS, &flags))
		return;
	if (L->managed && (flags & FLAG_MANAGED_DICT)) {
		uintptr_t values = 0;
		if (!rd(obj - 24, &d))
			return;
		if (L->managed == 12 && (d & 1)) {
			values = d + 1;
			d = 0;
		}
		if (d) {
			dict_find(d, names, n, out);
			return;
		}
		if (L->managed == 11 && !rd(obj - 32, &values))
			return;
		if (L->managed == 13) {
			uintptr_t basic;
			uint8_t hdr[4];
			if (!(flags & FLAG_INLINE_VALUES) || !rd(type + TP_BASICSIZE, &basic) ||
			    basic > 4096 || !mem_read_safe(hdr, obj + basic, 4) || !hdr[3])
				return;
			values = obj + basic;
		}
		if (!values || !rd(type + (uintptr_t)L->ht_cached_keys, &keys))
			return;
		long idx[NAMES_MAX];
		keys_find(keys, names, n, idx);
		for (int j = 0; j < n; j++) {
			uintptr_t v;
			if (idx[j] >= 0 && !(L->managed == 13 && idx[j] >= 256) &&
			    rd(values + (uintptr_t)L->values_at + 8 * (uintptr_t)idx[j], &v))
				out[j] = v;
		}
		return;
	}
	intptr_t off;
	if (!mem_read_safe(&off, type + TP_DICTOFFSET, sizeof(off)) || off <= 0 || off > 4096 ||
	    !rd(obj + (uintptr_t)off, &d) || !d)
		return;
	dict_find(d, names, n, out);
}

static uintptr_t attr_get(uintptr_t obj, const char *name)
{
	uintptr_t v;
	attr_find(obj, &name, 1, &v);
	return v;
}

/* Whether type derives from the one named name. */
static bool type_named(uintptr_t type, const char *name)
{
	for (int depth = 0; depth < 16 && type; depth++) {
		uintptr_t np;
		char buf[32];
		size_t n = strlen(name) + 1;
		if (rd(type + TP_NAME, &np) && n <= sizeof(buf) &&
		    mem_read_safe(buf, np, n) && memcmp(buf, name, n) == 0)
			return true;
		if (!rd(type + TP_BASE, &type))
			return false;
	}
	return false;
}

static bool is_task(uintptr_t obj)
{
	uintptr_t type = type_of(obj), np;
	char buf[14];
	if (!type)
		return false;
	if (type == t_task)
		return true;
	if (!t_task && rd(type + TP_NAME, &np) && mem_read_safe(buf, np, sizeof(buf)) &&
	    memcmp(buf, "_asyncio.Task", sizeof(buf)) == 0) {
		t_task = type;
		return true;
	}
	return type_named(type, "_asyncio.Task");
}

/* A small int's value, -1 if obj is none (or negative, or large). */
static long small_int(uintptr_t obj)
{
	uintptr_t tag, digit;
	if (type_of(obj) != t_long || !rd(obj + 16, &tag))
		return -1;
	uintptr_t ndigits = L->long_tag ? tag >> 3 : tag;
	if (L->long_tag && (tag & 3) == 1)
		return 0;
	if (ndigits == 0)
		return 0;
	if (ndigits != 1 || (L->long_tag && (tag & 3) != 0) ||
	    !rd(obj + LONG_DIGITS, &digit))
		return -1;
	return (long)(digit & 0x3fffffff);
}

/* ---- the _AsyncioDebug offsets (3.14+) ------------------------------------ */

enum {
	AD_TASK_SIZE, AD_TASK_NAME, AD_AWAITED_BY, AD_IS_TASK, AD_AWAITED_BY_IS_SET,
	AD_TASK_CORO, AD_TASK_NODE, AD_IS_SIZE, AD_IS_HEAD, AD_TS_SIZE, AD_TS_LOOP,
	AD_TS_TASK, AD_TS_HEAD, AD_COUNT
};
static uint64_t adbg[AD_COUNT];
static bool adbg_ok;
static int64_t adbg_tried;

/* The address of section name in the ELF file path, loaded at bias. */
static uintptr_t elf_section(const char *path, uintptr_t bias, const char *name)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	uintptr_t found = 0;
	Elf64_Ehdr eh;
	Elf64_Shdr strs;
	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum > 1024 ||
	    eh.e_shstrndx >= eh.e_shnum ||
	    pread(fd, &strs, sizeof(strs),
		  (off_t)(eh.e_shoff + eh.e_shstrndx * sizeof(Elf64_Shdr))) != (ssize_t)sizeof(strs))
		goto out;
	size_t n = strlen(name) + 1;
	for (unsigned i = 0; i < eh.e_shnum && !found; i++) {
		Elf64_Shdr sh;
		char buf[32];
		if (pread(fd, &sh, sizeof(sh), (off_t)(eh.e_shoff + i * sizeof(sh))) !=
			    (ssize_t)sizeof(sh) ||
		    sh.sh_name >= strs.sh_size || n > sizeof(buf) ||
		    pread(fd, buf, n, (off_t)(strs.sh_offset + sh.sh_name)) != (ssize_t)n)
			continue;
		if (memcmp(buf, name, n) == 0 && sh.sh_addr && sh.sh_size >= sizeof(adbg))
			found = bias + sh.sh_addr;
	}
out:
	real_close(fd);
	return found;
}

struct adbg_search {
	uintptr_t addr;
	int index;
};

/* The file mapped at addr, from /proc/self/maps (the program, started by
 * the dynamic loader as a command, is not /proc/self/exe). */
static bool mapped_file(uintptr_t addr, char *path, size_t cap)
{
	static char maps[1 << 16];
	size_t n = sys_read_small("/proc/self/maps", maps, sizeof(maps) - 1);
	maps[n] = '\0';
	for (char *line = maps; line && *line;) {
		char *end = strchr(line, '\n');
		if (end)
			*end = '\0';
		unsigned long lo, hi;
		char *file = strchr(line, '/');
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && addr >= lo && addr < hi && file) {
			snprintf(path, cap, "%s", file);
			return true;
		}
		line = end ? end + 1 : NULL;
	}
	return false;
}

static int adbg_object(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	struct adbg_search *s = data;
	const char *name = info->dlpi_name;
	/* The program first (named "" unless started by the loader), where a
	 * static libpython has _asyncio built in (3.15), then the module or
	 * libpython. */
	bool program = s->index++ == 0;
	char path[512];
	if ((!name || !name[0]) && program) {
		name = "";
		for (int i = 0; i < info->dlpi_phnum; i++)
			if (info->dlpi_phdr[i].p_type == PT_LOAD) {
				if (mapped_file(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr,
						path, sizeof(path)))
					name = path;
				break;
			}
	}
	if (!name)
		name = "";
	if (!name[0] ||
	    (!program && !strstr(name, "_asyncio") && !strstr(name, "libpython3")))
		return 0;
	s->addr = elf_section(name, info->dlpi_addr, ".AsyncioDebug");
	return s->addr != 0;
}

static bool aligned_in(uint64_t off, uint64_t width, uint64_t size)
{
	return off % 8 == 0 && off + width <= size;
}

/* _AsyncioDebug found and checked: once, again at most once a second. */
static const char *asyncio_debug(void)
{
	if (adbg_ok)
		return NULL;
	int64_t now = clock_mono_ns();
	if (adbg_tried && now - adbg_tried < NS_PER_SEC)
		return "the _asyncio module's debug offsets were not found";
	adbg_tried = now;
	struct adbg_search s = {0};
	dl_iterate_phdr(adbg_object, &s);
	if (!s.addr || !mem_read_safe(adbg, s.addr, sizeof(adbg)))
		return "the _asyncio module's debug offsets were not found";
	uint64_t ts = adbg[AD_TS_SIZE], task = adbg[AD_TASK_SIZE];
	if (task < 64 || task > 4096 || ts < 256 || ts > 65536 ||
	    !aligned_in(adbg[AD_TASK_CORO], 8, task) ||
	    !aligned_in(adbg[AD_TASK_NODE], 16, task) ||
	    !aligned_in(adbg[AD_TS_TASK], 8, ts) || !aligned_in(adbg[AD_TS_HEAD], 16, ts))
		return "the _asyncio module's debug offsets are malformed";
	adbg_ok = true;
	return NULL;
}

static int task_coro_off(void)
{
	return L->task_coro >= 0 ? L->task_coro : (int)adbg[AD_TASK_CORO];
}

/* ---- frames --------------------------------------------------------------- */

/* A frame's code object (checked), 0 if none. */
static uintptr_t frame_code(uintptr_t f)
{
	uintptr_t code;
	if (!rd(f + (uintptr_t)L->fr_code, &code))
		return 0;
	code &= L->tag_mask;
	return type_of(code) == t_code ? code : 0;
}

/* Calls fn on each object among frame f's locals (cells read through),
 * until it returns true; returns that. */
/* What objects lead to (a socket's fd, or -1), remembered for one pass:
 * the loop and other objects many tasks share are read once. */
#define MEMO_SIZE 4096
static struct memo {
	uintptr_t obj;
	int fd;
	unsigned gen;
} memo[MEMO_SIZE];
static unsigned memo_gen;

static void memo_reset(void)
{
	if (++memo_gen == 0)
		memo_gen = 1;
}

static struct memo *memo_slot(uintptr_t obj)
{
	size_t h = (size_t)((obj >> 4) * 0x9E3779B97F4A7C15ull >> 52) % MEMO_SIZE;
	for (int i = 0; i < 8; i++) {
		struct memo *m = &memo[(h + (size_t)i) % MEMO_SIZE];
		if (m->gen != memo_gen || m->obj == obj)
			return m;
	}
	return NULL;
}

static bool memo_known(uintptr_t obj, int *fd)
{
	struct memo *m = memo_slot(obj);
	if (!m || m->gen != memo_gen || m->obj != obj)
		return false;
	*fd = m->fd;
	return true;
}

static void memo_put(uintptr_t obj, int fd)
{
	struct memo *m = memo_slot(obj);
	if (m) {
		m->obj = obj;
		m->fd = fd;
		m->gen = memo_gen;
	}
}

/* Code objects (many tasks run the same): how many locals each has, -1 if
 * it cannot be read; for one pass. */
static struct {
	uintptr_t code;
	int n;
	unsigned gen;
} codes[512];

static int code_locals(uintptr_t code)
{
	size_t h = (size_t)((code >> 4) * 0x9E3779B97F4A7C15ull >> 52) % ARRAY_LEN(codes);
	if (codes[h].gen == memo_gen && codes[h].code == code)
		return codes[h].n;
	int32_t n;
	if (!rd32(code + (uintptr_t)L->co_nlocals, &n) || n < 0)
		n = -1;
	/* 3.8-3.10: the cells (an argument a closure keeps is moved into its
	 * cell) and free variables follow the locals; what lies after them
	 * is the value stack, whose slots above its top are stale. */
	for (int i = 0; n >= 0 && L->minor < 11 && i < 2; i++) {
		uintptr_t tup, size;
		if (!rd(code + (i ? CO_CELLVARS_OLD : CO_FREEVARS_OLD), &tup) ||
		    type_of(tup) != t_tuple || !rd(tup + 16, &size) || size > 256)
			n = -1;
		else
			n += (int32_t)size;
	}
	codes[h].code = code;
	codes[h].n = n;
	codes[h].gen = memo_gen;
	return n;
}


static bool each_local(uintptr_t f, bool (*fn)(uintptr_t obj, void *arg), void *arg)
{
	uintptr_t code = frame_code(f), slots[LOCALS_MAX];
	int n = code ? code_locals(code) : -1;
	if (n <= 0)
		return false;
	if (n > LOCALS_MAX)
		n = LOCALS_MAX;
	if (!mem_read_safe(slots, f + (uintptr_t)L->fr_locals, 8 * (size_t)n))
		return false;
	for (int i = 0; i < n; i++) {
		uintptr_t v = slots[i] & L->tag_mask;
		int fd;
		if (v < 4096 || (v & 7) || (memo_known(v, &fd) && fd == -1))
			continue;
		if (type_of(v) == t_cell && (!rd(v + CELL_REF, &v) || v < 4096))
			continue;
		if (fn(v, arg))
			return true;
	}
	return false;
}

/* What a frame's locals say of the connection it serves. */
struct conn_hint {
	int fd;            /* its transport's socket, -1 if none */
	bool scope;        /* an ASGI scope */
	char host[64];     /* scope["client"], "" if none */
	long port;
	char method[16];
	char path[128];
};

/* A socket object's fd (asyncio's selector transports keep it as _sock),
 * -1 if obj is none. */
static int socket_fd(uintptr_t sock)
{
	int32_t fd;
	if (!sock || !type_named(type_of(sock), "_socket.socket") || !rd32(sock + SOCK_FD, &fd))
		return -1;
	return fd;
}

/* The fd of the socket obj is the transport of: a transport, or what
 * holds one (uvicorn's protocol and request cycle: transport; a
 * StreamWriter: _transport); -1 if none. */
static int object_fd(uintptr_t obj, int depth)
{
	int fd;
	if (memo_known(obj, &fd))
		return fd;
	static const char *const names[] = {"_sock", "transport", "_transport"};
	uintptr_t v[3];
	attr_find(obj, names, 3, v);
	fd = socket_fd(v[0]);
	if (fd < 0 && depth == 0)
		fd = object_fd(v[1] ? v[1] : v[2], 1);
	if (fd < 0 && depth == 0 && v[1] && v[2])
		fd = object_fd(v[2], 1);
	memo_put(obj, fd);
	return fd;
}

static bool hint_local(uintptr_t v, void *arg)
{
	struct conn_hint *h = arg;
	uintptr_t type = type_of(v);
	if (type == t_dict) {
		if (h->scope)
			return false;
		if (!dict_get(v, "asgi")) {
			memo_put(v, -1);
			return false;
		}
		h->scope = true;
		static const char *const names[] = {"client", "method", "path"};
		uintptr_t f[3], host, port;
		dict_find(v, names, 3, f);
		uintptr_t client = f[0];
		if (client && type_of(client) == t_tuple && rd(client + (uintptr_t)L->tuple_items, &host) &&
		    rd(client + (uintptr_t)L->tuple_items + 8, &port)) {
			if (!str_read(host, h->host, sizeof(h->host)))
				h->host[0] = '\0';
			h->port = small_int(port);
		}
		if (!str_read(f[1], h->method, sizeof(h->method)))
			h->method[0] = '\0';
		if (!str_read(f[2], h->path, sizeof(h->path)))
			h->path[0] = '\0';
		return false;
	}
	if (h->fd >= 0)
		return false;
	if (!type || type == t_str || type == t_long || type == t_tuple ||
	    type == t_list || type == t_set || type == t_coro || type == t_gen ||
	    type == t_code || type == t_func || type == t_bytes || type == t_weakref) {
		memo_put(v, -1);
		return false;
	}
	int fd = object_fd(v, 0);
	if (fd >= 0)
		h->fd = fd;
	return false;
}

static void frame_hint(uintptr_t f, struct conn_hint *h)
{
	each_local(f, hint_local, h);
}

/* The object a suspended frame awaits, 0 if it awaits nothing. */
static uintptr_t awaited(uintptr_t f)
{
	uintptr_t top, obj;
	uintptr_t base = f + (uintptr_t)L->fr_locals, slot;
	switch (L->stack_kind) {
	case STACK_PTR:
		if (!rd(f + (uintptr_t)L->fr_stack, &top) || top < base ||
		    top > base + 8 * STACK_MAX)
			return 0;
		slot = top - 8 * (uintptr_t)L->await_below;
		break;
	case STACK_DEPTH: {
		int32_t depth;
		if (!rd(f + (uintptr_t)L->fr_stack, &top) || top < base ||
		    top > base + 8 * STACK_MAX || !rd32(f + (uintptr_t)L->fr_depth, &depth) ||
		    depth <= 0 || depth > STACK_MAX)
			return 0;
		slot = top + 8 * (uintptr_t)(depth - 1);
		break;
	}
	default: {
		int32_t st;
		if (!rd32(f + (uintptr_t)L->fr_stack, &st) || st <= 0 || st > STACK_MAX)
			return 0;
		slot = base + 8 * (uintptr_t)(st - 1);
		break;
	}
	}
	if (slot < base || !rd(slot, &obj))
		return 0;
	return obj & L->tag_mask;
}

/* A suspended coroutine's frame, 0 if it is not suspended; *yf whether it
 * awaits (is suspended in an await, not a bare yield). */
static uintptr_t coro_frame(uintptr_t coro, bool *yf)
{
	uintptr_t t = type_of(coro), f;
	if (t != t_coro && t != t_gen)
		return 0;
	if (L->minor < 11) {
		if (!rd(coro + (uintptr_t)L->coro_frame, &f) || !f)
			return 0;
		if (L->frame_state >= 0) {
			int8_t st;
			if (!rd8(f + (uintptr_t)L->frame_state, &st) || st != L->st_suspended)
				return 0;
		} else {
			uintptr_t top;
			if (!rd(f + (uintptr_t)L->fr_stack, &top) || !top)
				return 0;
		}
		/* It awaits when its next instruction is YIELD_FROM (as
		 * _PyGen_yf tells); f_lasti counts bytes before 3.10. */
		int32_t lasti;
		uintptr_t code = frame_code(f), bytes, size;
		uint8_t op = 0;
		if (!code || !rd32(f + (uintptr_t)P->fr_instr, &lasti))
			return 0;
		long at = L->minor >= 10 ? ((long)lasti + 1) * 2 : (long)lasti + 2;
		*yf = lasti >= 0 && rd(code + CO_CODE_OLD, &bytes) && type_of(bytes) == t_bytes &&
		      rd(bytes + 16, &size) && (uintptr_t)at < size &&
		      mem_read_safe(&op, bytes + (uintptr_t)P->bytes_sval + (uintptr_t)at, 1) &&
		      op == YIELD_FROM_OLD;
	} else {
		int8_t st;
		if (!rd8(coro + (uintptr_t)L->frame_state, &st))
			return 0;
		*yf = st == L->st_yield_from || st == L->st_yield_from2;
		if (!*yf && st != L->st_suspended)
			return 0;
		f = coro + (uintptr_t)L->coro_frame;
	}
	return frame_code(f) ? f : 0;
}

/* ---- chains --------------------------------------------------------------- */

/* Frames (and notes) outermost first; a note's frame is 0. */
struct chain {
	uintptr_t frame[CHAIN_MAX];
	char note[CHAIN_MAX][PY_FUNC_MAX];
	int n;
	int tasks; /* tasks followed */
};

static void chain_note(struct chain *c, const char *fmt, uintptr_t task, const char *how)
{
	if (c->n >= CHAIN_MAX)
		return;
	c->frame[c->n] = 0;
	snprintf(c->note[c->n], sizeof(c->note[0]), fmt, (unsigned long)task, how);
	c->n++;
}

static void follow(uintptr_t coro, struct chain *c, int depth);

static bool frame_named(uintptr_t f, const char *name)
{
	uintptr_t code = frame_code(f), np;
	return code && rd(code + (uintptr_t)P->co_name, &np) && str_is(np, name);
}

/* The pending tasks a plain future stands for: a gathering future's
 * children; wait_for's inner task (3.8-3.11, where it awaits a waiter);
 * the tasks of a TaskGroup whose __aexit__ waits. */
struct pend {
	uintptr_t task[FOLLOW_MAX];
	int n;
};

static void pend_add(struct pend *p, uintptr_t task)
{
	bool yf;
	uintptr_t coro;
	if (p->n >= FOLLOW_MAX || !is_task(task) ||
	    !rd(task + (uintptr_t)task_coro_off(), &coro) || !coro_frame(coro, &yf))
		return;
	for (int i = 0; i < p->n; i++)
		if (p->task[i] == task)
			return;
	p->task[p->n++] = task;
}

static void pend_set(struct pend *p, uintptr_t set)
{
	uintptr_t mask, table;
	if (type_of(set) != t_set || !rd(set + SET_MASK, &mask) || mask >= SET_MAX ||
	    !rd(set + SET_TABLE, &table))
		return;
	for (uintptr_t i = 0; i <= mask && p->n < FOLLOW_MAX; i++) {
		uintptr_t k;
		if (rd(table + 16 * i, &k) && k >= 4096)
			pend_add(p, k);
	}
}

static bool pend_local(uintptr_t v, void *arg)
{
	struct pend *p = arg;
	if (is_task(v)) {
		pend_add(p, v);
	} else {
		uintptr_t tasks = attr_get(v, "_tasks");
		if (tasks)
			pend_set(p, tasks);
	}
	return false;
}

/* Whether cb is a function whose closure holds fut (PyFunctionObject's
 * func_closure: a tuple of cells). */
static bool closure_holds(uintptr_t cb, uintptr_t fut)
{
	uintptr_t clo, size;
	if (type_of(cb) != t_func ||
	    !rd(cb + (L->minor < 10 ? 48 : 72), &clo) || !clo || type_of(clo) != t_tuple ||
	    !rd(clo + 16, &size) || size > 32)
		return false;
	for (uintptr_t i = 0; i < size; i++) {
		uintptr_t cell, v;
		if (rd(clo + (uintptr_t)L->tuple_items + 8 * i, &cell) && type_of(cell) == t_cell &&
		    rd(cell + CELL_REF, &v) && v == fut)
			return true;
	}
	return false;
}

struct completer {
	uintptr_t fut;
	struct pend *p;
};

/* A task one of whose done callbacks closes over the future (shield's
 * inner task: its callback completes the outer future). */
static bool completes(uintptr_t task, void *arg)
{
	struct completer *k = arg;
	uintptr_t cb, list, size, items;
	if (rd(task + FUT_CALLBACK0, &cb) && closure_holds(cb, k->fut)) {
		pend_add(k->p, task);
		return k->p->n >= FOLLOW_MAX;
	}
	if (!rd(task + FUT_CALLBACKS, &list) || type_of(list) != t_list ||
	    !rd(list + LIST_SIZE, &size) || size > 64 || !rd(list + LIST_ITEMS, &items))
		return false;
	for (uintptr_t i = 0; i < size; i++) {
		uintptr_t pair;
		if (rd(items + 8 * i, &pair) && type_of(pair) == t_tuple &&
		    rd(pair + (uintptr_t)L->tuple_items, &cb) && closure_holds(cb, k->fut)) {
			pend_add(k->p, task);
			break;
		}
	}
	return k->p->n >= FOLLOW_MAX;
}

static const char *each_task(uintptr_t tstate, bool (*fn)(uintptr_t task, void *arg),
			     void *arg);

static void follow_future(uintptr_t fut, uintptr_t waiting, struct chain *c, int depth)
{
	struct pend p = {.n = 0};
	const char *how = NULL;
	uintptr_t children = attr_get(fut, "_children"), size, items;
	if (children && type_of(children) == t_list && rd(children + LIST_SIZE, &size) &&
	    size <= 4096 && rd(children + LIST_ITEMS, &items)) {
		how = "gathered";
		for (uintptr_t i = 0; i < size && p.n < FOLLOW_MAX; i++) {
			uintptr_t ch;
			if (rd(items + 8 * i, &ch))
				pend_add(&p, ch);
		}
	} else if (waiting && frame_named(waiting, "wait_for")) {
		how = "wait_for's";
		each_local(waiting, pend_local, &p);
	} else if (waiting && (frame_named(waiting, "__aexit__") ||
			       frame_named(waiting, "_aexit"))) {
		how = "the task group's";
		each_local(waiting, pend_local, &p);
	} else if (cur_ts) {
		struct completer k = {.fut = fut, .p = &p};
		how = "its done callback completes the awaited future";
		each_task(cur_ts, completes, &k);
	}
	for (int i = 0; i < p.n && c->n < CHAIN_MAX - 1; i++) {
		uintptr_t coro;
		if (!rd(p.task[i] + (uintptr_t)task_coro_off(), &coro))
			continue;
		chain_note(c, "[awaits task 0x%lx (%s): its coroutines follow]", p.task[i], how);
		c->tasks++;
		follow(coro, c, depth + 1);
	}
}

/* Appends coro's chain: each coroutine followed to the one it awaits, on
 * into an awaited task and the tasks a future stands for. */
static void follow(uintptr_t coro, struct chain *c, int depth)
{
	uintptr_t last = 0;
	while (c->n < CHAIN_MAX) {
		cache_drop();
		uintptr_t t = type_of(coro);
		if (t && t != t_coro && t != t_gen && type_named(t, "_asyncio.FutureIter")) {
			uintptr_t fut;
			if (!rd(coro + FUTITER_FUTURE, &fut) || !fut)
				return;
			if (!is_task(fut)) {
				if (depth < 4)
					follow_future(fut, last, c, depth);
				return;
			}
			if (!rd(fut + (uintptr_t)task_coro_off(), &coro))
				return;
			chain_note(c, "[awaits task 0x%lx (%s): its coroutines follow]", fut,
				   "awaited");
			c->tasks++;
			continue;
		}
		if (is_task(coro)) {
			/* A task awaited through a plain yield (rare). */
			return;
		}
		bool yf;
		uintptr_t f = coro_frame(coro, &yf);
		if (!f)
			return;
		c->frame[c->n++] = f;
		last = f;
		if (!yf)
			return;
		coro = awaited(f);
		if (!coro)
			return;
	}
}

/* ---- tasks ---------------------------------------------------------------- */

/* sys.modules of the interpreter of tstate. */
static uintptr_t sys_modules(uintptr_t tstate)
{
	uintptr_t interp, m;
	if (!rd(tstate + TS_INTERP, &interp))
		return 0;
	if (modules_off < 0) {
		int off = L->is_modules;
		uintptr_t rt = py_symbol("_PyRuntime");
		char cookie[8];
		uint64_t v = 0, dbg = 0;
		/* 3.13+: what the interpreter publishes, if it is of this version. */
		if (L->dbg_is_modules > 0 && rt && mem_read_safe(cookie, rt, 8) &&
		    memcmp(cookie, "xdebugpy", 8) == 0 && mem_read_safe(&v, rt + 8, 8) &&
		    (v >> 16) == (0x0300 | (uint64_t)L->minor) &&
		    mem_read_safe(&dbg, rt + (uintptr_t)L->dbg_is_modules, 8) && dbg < (1 << 20) &&
		    dbg % 8 == 0)
			off = (int)dbg;
		if (!rd(interp + (uintptr_t)off, &m) || type_of(m) != t_dict ||
		    !dict_get(m, "_asyncio"))
			return 0;
		modules_off = off;
	}
	return rd(interp + (uintptr_t)modules_off, &m) ? m : 0;
}

typedef bool (*task_fn)(uintptr_t task, void *arg);

/* A set's entries (weak: through weakrefs) to fn. */
static int each_in_set(uintptr_t set, bool weak, task_fn fn, void *arg, bool *stop)
{
	uintptr_t mask, table;
	if (type_of(set) != t_set || !rd(set + SET_MASK, &mask) || mask >= SET_MAX ||
	    !rd(set + SET_TABLE, &table))
		return -1;
	int n = 0;
	uintptr_t chunk[2 * 64];
	for (uintptr_t i = 0; i <= mask && !*stop && n < TASKS_MAX; i++) {
		uintptr_t k;
		/* 64 entries (key, hash) a read */
		if (i % 64 == 0 &&
		    !mem_read_safe(chunk, table + 16 * i,
				   16 * (mask + 1 - i < 64 ? (size_t)(mask + 1 - i) : 64)))
			return n;
		k = chunk[2 * (i % 64)];
		if (k < 4096)
			continue;
		cache_drop();
		if (weak && (type_of(k) != t_weakref || !rd(k + WR_OBJECT, &k) || k < 4096))
			continue;
		if (!is_task(k))
			continue;
		n++;
		*stop = fn(k, arg);
	}
	return n;
}

/* Every native task of the loop thread (tstate), to fn until it returns
 * true. NULL, or why the tasks cannot be read. */
static const char *each_task(uintptr_t tstate, task_fn fn, void *arg)
{
	bool stop = false;
	if (L->task_coro < 0) {
		/* 3.14+: the thread's list of tasks (llist_node next at 0). */
		const char *why = asyncio_debug();
		if (why)
			return why;
		uintptr_t head = tstate + adbg[AD_TS_HEAD], node;
		if (!rd(head, &node))
			return "the thread's task list could not be read";
		for (int n = 0; node != head && n < TASKS_MAX && !stop; n++) {
			uintptr_t task = node - adbg[AD_TASK_NODE];
			cache_drop();
			if (!is_task(task))
				return "the thread's task list is damaged";
			stop = fn(task, arg);
			if (!rd(node, &node))
				return "the thread's task list could not be read";
		}
		return NULL;
	}
	uintptr_t mods = sys_modules(tstate);
	if (!mods)
		return "sys.modules was not found";
	uintptr_t mod = dict_get(mods, "_asyncio"), md;
	if (!mod || !rd(mod + MOD_DICT, &md))
		return "the _asyncio module was not found";
	const char *ws_name = L->minor >= 12 ? "_scheduled_tasks" : "_all_tasks";
	uintptr_t ws = dict_get(md, ws_name);
	if (!ws)
		return L->minor >= 12 ? "_asyncio._scheduled_tasks was not found"
				      : "_asyncio._all_tasks was not found";
	if (each_in_set(attr_get(ws, "data"), true, fn, arg, &stop) < 0)
		return "the set of tasks could not be read";
	if (L->minor >= 12 && !stop) {
		uintptr_t eager = dict_get(md, "_eager_tasks");
		if (eager)
			each_in_set(eager, false, fn, arg, &stop);
	}
	return NULL;
}

/* ---- matching a connection to its task ------------------------------------ */

struct peer {
	int fd;
	char host[64];
	long port;
};

static bool peer_of(int fd, struct peer *p)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	p->fd = fd;
	p->host[0] = '\0';
	p->port = -1;
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
		return false;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, p->host, sizeof(p->host));
		p->port = ntohs(a->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, p->host, sizeof(p->host));
		p->port = ntohs(a->sin6_port);
	} else {
		return false;
	}
	return true;
}

enum how { BY_NONE, BY_FD, BY_CLIENT, BY_LINE };

struct match {
	struct peer peer;
	const struct reqinfo *info;
	uintptr_t by_fd, by_client, by_line;
	int n_client, n_line;
	int ntasks;
};

static bool line_matches(const struct conn_hint *h, const struct reqinfo *info)
{
	if (!info || !h->method[0] || !h->path[0] || strcmp(h->method, info->method) != 0)
		return false;
	size_t n = strcspn(info->target, "?");
	return strlen(h->path) == n && memcmp(h->path, info->target, n) == 0;
}

static bool task_matches(uintptr_t task, void *arg)
{
	struct match *m = arg;
	struct conn_hint h;
	uintptr_t coro, f;
	m->ntasks++;
	cache_drop();
	if (!rd(task + (uintptr_t)task_coro_off(), &coro))
		return false;
	memset(&h, 0, sizeof(h));
	h.fd = -1;
	h.port = -1;
	/* Its own coroutines only (a task it awaits is matched on its own),
	 * the outer ones, where a server keeps its transport and an ASGI
	 * application its scope; the first transport decides. */
	bool yf;
	for (int n = 0; n < HINT_FRAMES && h.fd < 0 && (f = coro_frame(coro, &yf)); n++) {
		frame_hint(f, &h);
		cache_drop();
		if (!yf || !(coro = awaited(f)))
			break;
	}
	if (h.fd >= 0) {
		/* The transport tells: this connection's, or another's. */
		if (h.fd == m->peer.fd) {
			m->by_fd = task;
			return true;
		}
		return false;
	}
	if (!h.scope)
		return false;
	if (m->peer.port >= 0 && h.port == m->peer.port && strcmp(h.host, m->peer.host) == 0) {
		m->by_client = task;
		m->n_client++;
	}
	if (line_matches(&h, m->info)) {
		m->by_line = task;
		m->n_line++;
	}
	return false;
}

void aio_capture_task(struct sd_thread *t, int fd, const struct reqinfo *info,
		      struct capture *out)
{
	out->mode = CAPTURE_SUSPENDED;
	const char *why = find_layout();
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	static struct match m;
	static struct chain c;
	memset(&m, 0, sizeof(m));
	m.info = info;
	memo_reset();
	cache_drop();
	if (!why && !ts)
		why = "the loop thread's Python state is not known";
	if (!why) {
		peer_of(fd, &m.peer);
		m.peer.fd = fd;
		why = each_task(ts, task_matches, &m);
	}
	uintptr_t task = 0;
	char how[96];
	how[0] = '\0';
	if (!why) {
		if (m.by_fd) {
			task = m.by_fd;
			snprintf(how, sizeof(how), "its socket, fd %d", fd);
		} else if (m.n_client == 1) {
			task = m.by_client;
			snprintf(how, sizeof(how), "its ASGI client %.46s:%ld", m.peer.host,
				 m.peer.port);
		} else if (m.n_line == 1) {
			task = m.by_line;
			snprintf(how, sizeof(how), "the only ASGI scope of %.15s %.32s",
				 info->method, info->target);
		} else if (m.n_client > 1 || m.n_line > 1) {
			why = "several tasks match, none by its socket";
		} else {
			why = m.ntasks ? "no task's transport or ASGI scope matches"
				       : "the loop thread has no tasks";
		}
	}
	uintptr_t coro = 0;
	if (task && !rd(task + (uintptr_t)task_coro_off(), &coro))
		why = "its task changed while it was read";
	if (!why) {
		c.n = 0;
		c.tasks = 0;
		cur_ts = ts;
		memo_reset(); /* each_local skips what the match found useless */
		follow(coro, &c, 0);
		cur_ts = 0;
		if (!c.n)
			why = "its task is not suspended";
	}
	if (why || !out->py) {
		snprintf(out->why, sizeof(out->why), "suspended: no stack (%s)",
			 why ? why : "no capture buffers");
		return;
	}
	/* Innermost first, one frame each (none hangs on another). */
	int k = 0, want = 0;
	for (int i = c.n - 1; i >= 0 && k < CHAIN_MAX; i--) {
		want++;
		if (!c.frame[i]) {
			struct py_frame *p = &out->py[k++];
			memset(p, 0, sizeof(*p));
			p->flags = PY_FRAME_NOTE;
			p->addr = -1;
			snprintf(p->func, sizeof(p->func), "%s", c.note[i]);
			continue;
		}
		struct py_walk_info one;
		if (py_walk_suspended(c.frame[i], &out->py[k], 1, &one) == 1)
			k++;
	}
	out->pyinfo.n = out->pyinfo.total = out->pyinfo.head = k;
	out->pyinfo.damaged = k != want;
	out->py_walked = true;
	py_resolve_lines(mem_read_safe, out->py, k);
	snprintf(out->why, sizeof(out->why), "suspended asyncio task 0x%lx (matched by %s)",
		 (unsigned long)task, how);
}

/* ---- the running request ---------------------------------------------------- */

int aio_running_fd(struct sd_thread *t, const int *fds, int nfds, const char **why)
{
	*why = find_layout();
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	if (*why)
		return -1;
	memo_reset();
	cache_drop();
	uintptr_t f = py_current_frame(ts);
	struct conn_hint h, outer;
	memset(&outer, 0, sizeof(outer));
	for (int depth = 0; f && depth < 256; depth++) {
		cache_drop();
		memset(&h, 0, sizeof(h));
		h.fd = -1;
		h.port = -1;
		frame_hint(f, &h);
		for (int i = 0; h.fd >= 0 && i < nfds; i++)
			if (fds[i] == h.fd) {
				*why = "its transport's socket is among the running frames' locals";
				return fds[i];
			}
		if (h.scope)
			outer = h; /* the outermost scope wins */
		if (!rd(f + (uintptr_t)L->fr_back, &f))
			break;
	}
	if (!outer.scope) {
		*why = "no transport or ASGI scope among the running frames";
		return -1;
	}
	for (int i = 0; i < nfds; i++) {
		struct peer p;
		if (peer_of(fds[i], &p) && p.port == outer.port &&
		    strcmp(p.host, outer.host) == 0) {
			*why = "its ASGI scope's client is in the running frames";
			return fds[i];
		}
	}
	*why = "no connection has the running ASGI scope's client";
	return -1;
}
