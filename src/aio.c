/* asyncio tasks without the GIL, CPython 3.11. See aio.h. */
#include "aio.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "mem.h"
#include "python.h"
#include "thread.h"

/*
 * CPython 3.11 layouts (the headers of Include/cpython and Include/internal,
 * Modules/_asynciomodule.c), measured on 3.11 (research/eventloops.md):
 */
#define TS_INTERP 16          /* PyThreadState.interp */
#define OB_TYPE 8
#define TP_NAME 24            /* PyTypeObject.tp_name */
#define TP_BASE 256           /* PyTypeObject.tp_base */
#define MOD_DICT 16           /* PyModuleObject.md_dict */
#define DICT_KEYS 32          /* PyDictObject.ma_keys */
#define DICT_VALUES 40        /* PyDictObject.ma_values */
#define DK_LOG2_INDEX 9       /* PyDictKeysObject.dk_log2_index_bytes */
#define DK_KIND 10            /* .dk_kind: 0 general, else unicode keys */
#define DK_NENTRIES 24        /* .dk_nentries */
#define DK_INDICES 32         /* .dk_indices */
#define MANAGED_DICT (-24)    /* an instance's dict pointer */
#define MANAGED_VALUES (-32)  /* its values, keys in the type */
#define SET_MASK 32           /* PySetObject.mask */
#define SET_TABLE 40          /* PySetObject.table */
#define WR_OBJECT 16          /* PyWeakReference.wr_object */
#define TASK_CORO 136         /* TaskObj.task_coro */
#define FUTITER_FUTURE 16     /* futureiterobject.future */
#define GEN_FRAME_STATE 75    /* PyGenObject.gi_frame_state (int8) */
#define GEN_IFRAME 80         /* PyGenObject.gi_iframe */
#define FR_CODE 32            /* _PyInterpreterFrame.f_code */
#define FR_PREVIOUS 48        /* .previous */
#define FR_STACKTOP 64        /* .stacktop */
#define FR_LOCALS 72          /* .localsplus */
#define CO_NLOCALSPLUS 76     /* PyCodeObject.co_nlocalsplus */
#define STR_STATE 32          /* PyASCIIObject.state */
#define STR_ASCII_DATA 48     /* compact ASCII characters */
#define TUPLE_ITEMS 24
#define LONG_DIGITS 24
#define FRAME_SUSPENDED (-1)

#define CHAIN_MAX 64
#define SET_MAX (1 << 16)
#define DICT_MAX (1 << 16)
#define SCOPE_LOCALS_MAX 32

static uintptr_t t_dict, t_set, t_coro, t_gen, t_tuple, t_long, t_weakref, t_task;
static int modules_off = -1;
static bool types_ok;

static bool rd(uintptr_t a, uintptr_t *v)
{
	return a >= 4096 && !(a & 7) && mem_read_safe(v, a, sizeof(*v));
}

static uintptr_t type_of(uintptr_t obj)
{
	uintptr_t t;
	return rd(obj + OB_TYPE, &t) ? t : 0;
}

static bool find_types(void)
{
	if (types_ok)
		return true;
	t_dict = py_symbol("PyDict_Type");
	t_set = py_symbol("PySet_Type");
	t_coro = py_symbol("PyCoro_Type");
	t_gen = py_symbol("PyGen_Type");
	t_tuple = py_symbol("PyTuple_Type");
	t_long = py_symbol("PyLong_Type");
	t_weakref = py_symbol("_PyWeakref_RefType");
	types_ok = t_dict && t_set && t_coro && t_gen && t_tuple && t_long && t_weakref;
	return types_ok;
}

/* A compact ASCII str equal to s. */
static bool str_is(uintptr_t obj, const char *s)
{
	uintptr_t len, state;
	char buf[32];
	size_t n = strlen(s);
	if (n >= sizeof(buf) || !rd(obj + 16, &len) || len != n ||
	    !rd(obj + STR_STATE, &state))
		return false;
	/* interned:2 kind:3 compact:1 ascii:1 */
	if (!((state >> 5) & 1) || !((state >> 6) & 1))
		return false;
	return mem_read_safe(buf, obj + STR_ASCII_DATA, n) && memcmp(buf, s, n) == 0;
}

/* d[key] for a dict d with str keys; 0 if absent or unreadable. */
static uintptr_t dict_get(uintptr_t d, const char *key)
{
	uintptr_t keys, values, nentries, hdr;
	if (type_of(d) != t_dict || !rd(d + DICT_KEYS, &keys) ||
	    !rd(d + DICT_VALUES, &values) || !rd(keys + DK_NENTRIES, &nentries) ||
	    !rd(keys + 8, &hdr) || nentries > DICT_MAX)
		return 0;
	unsigned log2_index = (unsigned)(hdr >> ((DK_LOG2_INDEX - 8) * 8)) & 0xff;
	unsigned kind = (unsigned)(hdr >> ((DK_KIND - 8) * 8)) & 0xff;
	if (log2_index > 24)
		return 0;
	uintptr_t entries = keys + DK_INDICES + ((uintptr_t)1 << log2_index);
	size_t esz = kind ? 16 : 24, koff = kind ? 0 : 8;
	for (uintptr_t i = 0; i < nentries; i++) {
		uintptr_t k, v;
		if (!rd(entries + i * esz + koff, &k) || !k || !str_is(k, key))
			continue;
		if (values)
			return rd(values + 8 * i, &v) ? v : 0;
		return rd(entries + i * esz + koff + 8, &v) ? v : 0;
	}
	return 0;
}

/* A heap-type instance's attribute, 3.11: its dict if it has one, else
 * its values in the order the type's keys were first set (idx). */
static uintptr_t attr_get(uintptr_t obj, const char *name, int idx)
{
	uintptr_t d, values, v;
	if (rd(obj + (uintptr_t)(intptr_t)MANAGED_DICT, &d) && d)
		return dict_get(d, name);
	if (rd(obj + (uintptr_t)(intptr_t)MANAGED_VALUES, &values) && values &&
	    rd(values + 8 * (uintptr_t)idx, &v))
		return v;
	return 0;
}

/* Whether type derives from the one named name. */
static bool type_named(uintptr_t type, const char *name)
{
	for (int depth = 0; depth < 16 && type; depth++) {
		uintptr_t np;
		char buf[24];
		size_t n = strlen(name) + 1;
		if (rd(type + TP_NAME, &np) && n <= sizeof(buf) &&
		    mem_read_safe(buf, np, n) && memcmp(buf, name, n) == 0)
			return true;
		if (!rd(type + TP_BASE, &type))
			return false;
	}
	return false;
}

/* sys.modules of the interpreter of tstate: found once, the dict in the
 * interpreter state that holds "_asyncio". */
static uintptr_t sys_modules(uintptr_t tstate)
{
	uintptr_t interp, m;
	if (!rd(tstate + TS_INTERP, &interp))
		return 0;
	if (modules_off >= 0)
		return rd(interp + (uintptr_t)modules_off, &m) ? m : 0;
	static uintptr_t words[512];
	if (!mem_read_safe(words, interp, sizeof(words)))
		return 0;
	for (int i = 1; i < 512; i++) {
		if (words[i] < 4096 || (words[i] & 7) || type_of(words[i]) != t_dict)
			continue;
		if (dict_get(words[i], "_asyncio")) {
			modules_off = i * 8;
			return words[i];
		}
	}
	return 0;
}

/* The ASGI scope's client port among a frame's locals, 0 if none. */
static int scope_port(uintptr_t frame)
{
	uintptr_t code, nl;
	if (!rd(frame + FR_CODE, &code) || !rd(code + CO_NLOCALSPLUS - 4, &nl))
		return 0;
	int n = (int)(nl >> 32);
	if (n < 0 || n > SCOPE_LOCALS_MAX)
		n = n < 0 ? 0 : SCOPE_LOCALS_MAX;
	for (int i = 0; i < n; i++) {
		uintptr_t v, client, port, digit;
		if (!rd(frame + FR_LOCALS + 8 * (uintptr_t)i, &v) || type_of(v) != t_dict ||
		    !dict_get(v, "asgi"))
			continue;
		client = dict_get(v, "client");
		if (!client || type_of(client) != t_tuple ||
		    !rd(client + TUPLE_ITEMS + 8, &port) || type_of(port) != t_long ||
		    !rd(port + LONG_DIGITS, &digit))
			return 0;
		uintptr_t size;
		if (!rd(port + 16, &size) || size != 1)
			return 0;
		return (int)(digit & 0x3fffffff);
	}
	return 0;
}

static int peer_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

/* A suspended coroutine's chain of frames, outermost first: each awaits
 * the next (the object on top of its stack). */
static int chain_of(uintptr_t coro, uintptr_t *frames)
{
	int n = 0;
	while (n < CHAIN_MAX) {
		uintptr_t t = type_of(coro), st, top, next;
		if (t && t != t_coro && t != t_gen && type_named(t, "_asyncio.FutureIter")) {
			/* await task: on into the task's coroutine */
			uintptr_t fut;
			if (!rd(coro + FUTITER_FUTURE, &fut) ||
			    !type_named(type_of(fut), "_asyncio.Task") ||
			    !rd(fut + TASK_CORO, &coro))
				break;
			t = type_of(coro);
		}
		if (t != t_coro && t != t_gen)
			break;
		if (!rd(coro + GEN_FRAME_STATE - 3, &st) ||
		    (int8_t)(st >> 24) != FRAME_SUSPENDED)
			break;
		uintptr_t f = coro + GEN_IFRAME;
		frames[n++] = f;
		if (!rd(f + FR_STACKTOP, &top))
			break;
		int stacktop = (int)(int32_t)(top & 0xffffffff);
		if (stacktop <= 0 || stacktop > 4096 ||
		    !rd(f + FR_LOCALS + 8 * (uintptr_t)(stacktop - 1), &next))
			break;
		coro = next;
	}
	return n;
}

static const char *unsupported(void)
{
	const char *v = py_version_string();
	if (strncmp(v, "3.11.", 5) != 0)
		return "asyncio tasks are located on CPython 3.11 only";
	if (!find_types())
		return "CPython's types were not found";
	return NULL;
}

/* Every task of the interpreter of tstate (asyncio._all_tasks): the
 * callback's answer stops the walk when true. */
static const char *each_task(uintptr_t tstate, bool (*fn)(uintptr_t task, void *arg),
			     void *arg)
{
	uintptr_t mods = sys_modules(tstate);
	if (!mods)
		return "sys.modules was not found";
	uintptr_t mod = dict_get(mods, "_asyncio"), md, ws, data, mask, table;
	if (!mod || !rd(mod + MOD_DICT, &md))
		return "the _asyncio module was not found";
	ws = dict_get(md, "_all_tasks");
	if (!ws)
		return "_asyncio._all_tasks was not found";
	data = attr_get(ws, "data", 0);
	if (!data || type_of(data) != t_set || !rd(data + SET_MASK, &mask) ||
	    mask >= SET_MAX || !rd(data + SET_TABLE, &table))
		return "the set of tasks could not be read";
	for (uintptr_t i = 0; i <= mask; i++) {
		uintptr_t ref, task, type;
		if (!rd(table + 16 * i, &ref) || !ref || type_of(ref) != t_weakref ||
		    !rd(ref + WR_OBJECT, &task))
			continue;
		type = type_of(task);
		if (!type)
			continue;
		if (type != t_task) {
			if (!type_named(type, "_asyncio.Task"))
				continue;
			if (!t_task)
				t_task = type;
		}
		if (fn(task, arg))
			return NULL;
	}
	return "no task serves it";
}

struct match {
	int port;
	uintptr_t task;
	uintptr_t frames[CHAIN_MAX];
	int n;
	bool found;
};

static bool task_matches(uintptr_t task, void *arg)
{
	struct match *m = arg;
	uintptr_t coro;
	if (!rd(task + TASK_CORO, &coro))
		return false;
	m->n = chain_of(coro, m->frames);
	for (int i = 0; i < m->n; i++)
		if (scope_port(m->frames[i]) == m->port) {
			m->found = true;
			m->task = task;
			return true;
		}
	return false;
}

void aio_capture_task(struct sd_thread *t, int fd, struct capture *out)
{
	out->mode = CAPTURE_SUSPENDED;
	const char *why = unsupported();
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	static struct match m;
	if (!why && !ts)
		why = "the loop thread's Python state is not known";
	if (!why) {
		m.port = peer_port(fd);
		m.found = false;
		if (m.port <= 0)
			why = "the connection's peer is not known";
	}
	if (!why)
		why = each_task(ts, task_matches, &m);
	if (why || !m.found || !out->py) {
		snprintf(out->why, sizeof(out->why),
			 "suspended: its coroutine was not found (%s), so its stack "
			 "cannot be shown", why ? why : "no capture buffers");
		return;
	}
	/* Innermost first, one frame each (none hangs on another). */
	int k = 0;
	for (int i = m.n - 1; i >= 0 && k < CHAIN_MAX; i--) {
		struct py_walk_info one;
		if (py_walk_suspended(m.frames[i], &out->py[k], 1, &one) == 1)
			k++;
	}
	out->pyinfo.n = out->pyinfo.total = out->pyinfo.head = k;
	out->pyinfo.damaged = k != m.n;
	out->py_walked = true;
	py_resolve_lines(mem_read_safe, out->py, k);
	snprintf(out->why, sizeof(out->why),
		 "suspended asyncio task 0x%lx, matched by its ASGI scope's client "
		 "port %d (its coroutines, innermost awaited last)",
		 (unsigned long)m.task, m.port);
}

int aio_running_fd(struct sd_thread *t, const int *fds, int nfds, const char **why)
{
	*why = unsupported();
	uintptr_t ts = atomic_load_explicit(&t->tstate, memory_order_relaxed);
	if (*why)
		return -1;
	uintptr_t f = py_current_frame(ts);
	int port = 0;
	for (int depth = 0; f && depth < 256; depth++) {
		int p = scope_port(f);
		if (p > 0)
			port = p; /* the outermost one wins */
		if (!rd(f + FR_PREVIOUS, &f))
			break;
	}
	if (!port) {
		*why = "no ASGI scope among the running frames";
		return -1;
	}
	for (int i = 0; i < nfds; i++)
		if (peer_port(fds[i]) == port)
			return fds[i];
	*why = "no connection has the scope's client port";
	return -1;
}
