/* Report formatting. See report.h and slowdog(7). */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "escape.h"
#include "python.h"
#include "real.h"
#include "reqids.h"
#include "symbols.h"
#include "sys.h"

struct out {
	char *b;
	size_t cap, len;
	bool cut;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->cut)
		return;
	if (o->len + n + 1 > o->cap) {
		o->cut = true;
		return;
	}
	memcpy(o->b + o->len, s, n);
	o->len += n;
	o->b[o->len] = '\0';
}

#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

__attribute__((format(printf, 2, 3)))
static void putf(struct out *o, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	put(o, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A UTC time: "2026-11-22 02:59:01.123 UTC" in text, or the JSON string
 * "2026-11-22T02:59:01.123Z". */
static void put_utc(struct out *o, int64_t ns, bool json)
{
	time_t s = (time_t)(ns / NS_PER_SEC);
	struct tm tm;
	gmtime_r(&s, &tm);
	char b[64];
	strftime(b, sizeof(b), json ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
	putf(o, json ? "\"%s.%03dZ\"" : "%s.%03d UTC", b,
	     (int)((ns % NS_PER_SEC) / NS_PER_MS));
}

static void put_time(struct out *o, int64_t ns)
{
	put_utc(o, ns, false);
}

/* Untrusted text (command line, thread name, source): control bytes
 * escaped, UTF-8 kept. */
static void put_text(struct out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f) {
			char e[8];
			snprintf(e, sizeof(e), "\\x%02x", c);
			put(o, e, 4);
		} else {
			put(o, (const char *)&s[i], 1);
		}
	}
}

/* The process's command line, arguments separated by spaces. */
static size_t read_cmdline(char *buf, size_t cap)
{
	size_t n = sys_read_small("/proc/self/cmdline", buf, cap - 1);
	while (n > 0 && buf[n - 1] == '\0')
		n--;
	for (size_t i = 0; i < n; i++)
		if (buf[i] == '\0')
			buf[i] = ' ';
	return n;
}

/* A thread's name. */
static size_t read_comm(pid_t tid, char *buf, size_t cap)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
	size_t n = sys_read_small(path, buf, cap - 1);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\0'))
		n--;
	return n;
}

/* ---- source lines ---- */

#define SRC_CACHE 8
#define SRC_MAX (8 << 20)
static struct src {
	char *path;
	char *data;
	size_t len;
	time_t mtime;
	unsigned long used;
} src_cache[SRC_CACHE];
static unsigned long src_clock;

void report_flush_sources(void)
{
	for (int i = 0; i < SRC_CACHE; i++) {
		free(src_cache[i].path);
		free(src_cache[i].data);
		memset(&src_cache[i], 0, sizeof(src_cache[i]));
	}
}

static struct src *src_get(const char *path)
{
	struct stat st;
	if (path[0] != '/' && path[0] != '.' ) {
		if (path[0] == '<')
			return NULL;
	}
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SRC_MAX)
		return NULL;
	struct src *victim = &src_cache[0];
	for (int i = 0; i < SRC_CACHE; i++) {
		struct src *s = &src_cache[i];
		if (s->path && strcmp(s->path, path) == 0) {
			if (s->mtime == st.st_mtime && s->len == (size_t)st.st_size) {
				s->used = ++src_clock;
				return s;
			}
			victim = s;
			break;
		}
		if (s->used < victim->used)
			victim = s;
	}
	free(victim->path);
	free(victim->data);
	memset(victim, 0, sizeof(*victim));
	char *data = malloc((size_t)st.st_size + 1);
	char *p = strdup(path);
	if (!data || !p) {
		free(data);
		free(p);
		return NULL;
	}
	size_t n = sys_read_small(path, data, (size_t)st.st_size);
	data[n] = '\0';
	victim->path = p;
	victim->data = data;
	victim->len = n;
	victim->mtime = st.st_mtime;
	victim->used = ++src_clock;
	return victim;
}

/* The text of a source line, stripped as Python's traceback does; false if
 * the file or the line can't be read. Lines longer than 300 bytes are cut
 * (*cut set). */
static bool get_source(const char *path, int line, const char **text,
		       size_t *len, bool *cut)
{
	if (line <= 0)
		return false;
	struct src *s = src_get(path);
	if (!s)
		return false;
	const char *p = s->data, *end = s->data + s->len;
	for (int l = 1; l < line && p < end; l++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			return false;
		p = nl + 1;
	}
	if (p >= end)
		return false;
	const char *e = memchr(p, '\n', (size_t)(end - p));
	if (!e)
		e = end;
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\f'))
		p++;
	while (e > p && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (p == e)
		return false;
	*text = p;
	*len = (size_t)(e - p);
	*cut = *len > 300;
	if (*cut)
		*len = 300;
	return true;
}

static void put_source(struct out *o, const char *path, int line,
		       const char *indent)
{
	const char *p;
	size_t n;
	bool cut;
	if (!get_source(path, line, &p, &n, &cut))
		return;
	put(o, indent, strlen(indent));
	PUTS(o, "  ");
	put_text(o, p, n);
	if (cut)
		PUTS(o, "...");
	PUTS(o, "\n");
}

static void put_pyframe(struct out *o, const struct py_frame *f,
			const char *indent)
{
	if (f->flags & PY_FRAME_NOTE) {
		putf(o, "%s", indent);
		put_text(o, f->func, strlen(f->func));
		PUTS(o, "\n");
		return;
	}
	putf(o, "%sFile \"", indent);
	put_text(o, f->file, strlen(f->file));
	if (f->line > 0)
		putf(o, "\", line %d, in ", f->line);
	else
		PUTS(o, "\", line ?, in ");
	put_text(o, f->func, strlen(f->func));
	PUTS(o, "\n");
	put_source(o, f->file, f->line, indent);
}

/* ---- native frames ---- */

static void put_native(struct out *o, int i, uintptr_t ip, bool exact,
		       const char *indent)
{
	struct sym_info si;
	uintptr_t look = exact ? ip : ip - 1;
	bool known = symbols_lookup(look, &si);
	putf(o, "%s#%-3d 0x%016lx ", indent, i, (unsigned long)ip);
	if (known && si.name)
		putf(o, "%s+0x%lx", si.name, (unsigned long)(si.offset + (ip - look)));
	else
		PUTS(o, "??");
	if (known && si.object && !si.name)
		/* The address in the object's own terms, for addr2line. */
		putf(o, " (%s+0x%lx)\n", si.object,
		     (unsigned long)(ip - si.obj_base));
	else if (known && si.object)
		putf(o, " (%s)\n", si.object);
	else
		PUTS(o, " (?\?)\n");
}

#define HELP_MAX 8 /* objects listed at most */

/* The objects without symbols that hold unnamed frames, in order of first
 * appearance: their count; ips[k] is an address in the k-th. */
static int unnamed_objects(const struct capture *c, uintptr_t *ips)
{
	const char *seen[HELP_MAX];
	int n = 0;
	for (int i = 0; i < c->nip && n < HELP_MAX; i++) {
		struct sym_info si;
		const char *id;
		uintptr_t look = i == 0 ? c->ip[i] : c->ip[i] - 1;
		if (!symbols_lookup(look, &si) || si.name || !si.object)
			continue;
		int k = 0;
		while (k < n && seen[k] != si.object)
			k++;
		if (k < n || !symbols_help(look, &id))
			continue;
		seen[n] = si.object;
		ips[n++] = look;
	}
	return n;
}

/* One line per object without symbols: what would name its frames. */
static void put_help(struct out *o, const struct capture *c)
{
	uintptr_t ips[HELP_MAX];
	int n = unnamed_objects(c, ips);
	if (n == 0)
		return;
	PUTS(o, "Objects without symbols (what would name their frames):\n");
	for (int k = 0; k < n; k++) {
		struct sym_info si;
		const char *id, *help;
		symbols_lookup(ips[k], &si);
		help = symbols_help(ips[k], &id);
		putf(o, "  %s build-id %s: %s\n", si.object, id ? id : "none",
		     help);
	}
}

static bool is_eval(uintptr_t ip, bool exact)
{
	struct sym_info si;
	if (!symbols_lookup(exact ? ip : ip - 1, &si) || !si.name)
		return false;
	return py_is_eval_symbol(si.name);
}

/* Python frames, outermost first (traceback order). */
static void put_traceback(struct out *o, const struct capture *c)
{
	const struct py_walk_info *w = &c->pyinfo;
	PUTS(o, "Traceback (most recent call last):\n");
	/* An interpreter newer than any tested, read all the same. */
	if (py_untested())
		putf(o, "  [%s]\n", py_untested());
	if (w->damaged)
		PUTS(o, "  [older frames unavailable: the frame chain is damaged]\n");
	for (int i = w->n - 1; i >= w->head; i--)
		put_pyframe(o, &c->py[i], "  ");
	if (w->total > w->n)
		putf(o, "  [... %d frames not shown (SLOWDOG_MAX_FRAMES) ...]\n",
		     w->total - w->n);
	for (int i = (w->head < w->n ? w->head : w->n) - 1; i >= 0; i--)
		put_pyframe(o, &c->py[i], "  ");
}

static void put_split(struct out *o, const struct capture *c)
{
	bool have_py = c->py_walked && (c->pyinfo.n > 0 || c->pyinfo.damaged);
	if (have_py) {
		put_traceback(o, c);
		/* The C code the innermost Python frame is waiting in. */
		int k = 0;
		while (k < c->nip && !is_eval(c->ip[k], k == 0))
			k++;
		if (k > 0 && k < c->nip) {
			PUTS(o, "  In native code (most recent call first):\n");
			for (int i = 0; i < k; i++)
				put_native(o, i, c->ip[i], i == 0, "    ");
		}
		PUTS(o, "\n");
	} else if (py_unavailable()) {
		putf(o, "%s\n\n", py_unavailable());
	} else if (c->py_walked) {
		PUTS(o, "No Python frames on this thread.\n\n");
	}
	PUTS(o, "Native stack (most recent call first):\n");
	for (int i = 0; i < c->nip; i++)
		put_native(o, i, c->ip[i], i == 0, "  ");
	if (c->nip == 0)
		PUTS(o, "  (no native frames could be unwound)\n");
	if (c->native_truncated)
		putf(o, "  [... more frames not shown: %d at most]\n", NATIVE_MAX);
}

/* One stack: native frames, each eval-loop frame replaced by the Python
 * frames it runs. Groups end at frames flagged PY_FRAME_ENTRY. When
 * SLOWDOG_MAX_FRAMES left frames out, the innermost frames kept are matched
 * from the top of the native stack and the outermost ones from the bottom;
 * the eval-loop frames between them ran the frames left out. */
static void put_merged(struct out *o, const struct capture *c)
{
	PUTS(o, "Stack (most recent call first, Python and native merged):\n");
	if (c->py_walked && py_untested())
		putf(o, "  [%s]\n", py_untested());
	const struct py_walk_info *w = &c->pyinfo;
	int n = c->py_walked ? w->n : 0;
	int omitted = c->py_walked && w->total > n ? w->total - n : 0;
	int head = omitted ? w->head : n;
	if (head > n)
		head = n;

	/* Python frames [lo[k], hi[k]) for the k-th eval-loop native frame. */
	static int evals[NATIVE_MAX], lo[NATIVE_MAX], hi[NATIVE_MAX];
	int ne = 0;
	for (int i = 0; i < c->nip; i++)
		if (is_eval(c->ip[i], i == 0))
			evals[ne++] = i;
	for (int k = 0; k < ne; k++)
		lo[k] = hi[k] = -1;
	int p = 0, k = 0;
	for (; k < ne && p < head; k++) {
		lo[k] = p;
		while (p < head && !(c->py[p++].flags & PY_FRAME_ENTRY))
			;
		hi[k] = p;
	}
	int gap_from = k, gap_to = k; /* eval frames that ran omitted frames */
	int q = head;
	int shared = -1; /* an eval frame whose group spans the cut */
	static int lo2[NATIVE_MAX], hi2[NATIVE_MAX];
	if (omitted) {
		int groups = 0;
		for (int j = head; j < n; j++)
			groups += (c->py[j].flags & PY_FRAME_ENTRY) != 0;
		if (n > head && !(c->py[n - 1].flags & PY_FRAME_ENTRY))
			groups++;
		/* If the innermost part ends inside a group and there are just
		 * enough eval frames, that group goes on through the frames left
		 * out into the outermost part (3.11+: one eval frame runs a whole
		 * recursion). */
		bool partial = head > 0 && !(c->py[head - 1].flags & PY_FRAME_ENTRY);
		int first = ne - groups;
		if (partial && k > 0 && first == k - 1)
			shared = k - 1;
		gap_to = first > k ? first : k;
		for (int j = shared >= 0 ? shared : gap_to; j < ne && q < n; j++) {
			int *l = j == shared ? lo2 : lo, *h = j == shared ? hi2 : hi;
			l[j] = q;
			while (q < n && !(c->py[q++].flags & PY_FRAME_ENTRY))
				;
			h[j] = q;
		}
	}

	int e = 0;
	bool gap_said = false;
	for (int i = 0; i < c->nip; i++) {
		if (e < ne && evals[e] == i) {
			int kk = e++;
			if (kk >= gap_from && kk < gap_to && omitted) {
				if (!gap_said)
					putf(o, "    [... %d Python frames not shown ...]\n",
					     omitted);
				gap_said = true;
				continue;
			}
			if (lo[kk] >= 0) {
				for (int j = lo[kk]; j < hi[kk]; j++)
					put_pyframe(o, &c->py[j], "    ");
				if (kk == shared) {
					putf(o, "    [... %d Python frames not shown ...]\n",
					     omitted);
					gap_said = true;
					for (int j = lo2[kk]; j < hi2[kk]; j++)
						put_pyframe(o, &c->py[j], "    ");
				}
				continue;
			}
		}
		put_native(o, i, c->ip[i], i == 0, "  ");
	}
	if (omitted && !gap_said)
		putf(o, "    [... %d Python frames not shown ...]\n", omitted);
	if (p < head || q < n) {
		PUTS(o, "  [Python frames not matched to a native frame:]\n");
		for (; p < head; p++)
			put_pyframe(o, &c->py[p], "    ");
		for (; q < n && omitted; q++)
			put_pyframe(o, &c->py[q], "    ");
	}
	if (c->py_walked && w->damaged)
		PUTS(o, "  [older Python frames unavailable: the frame chain is damaged]\n");
	if (!c->py_walked && py_unavailable())
		putf(o, "  %s\n", py_unavailable());
	if (c->native_truncated)
		putf(o, "  [... more frames not shown: %d at most]\n", NATIVE_MAX);
}

/* x86-64 numbers of the calls a thread is commonly found asleep in. */
static const char *syscall_name(int nr)
{
	static const struct {
		int nr;
		const char *name;
	} names[] = {
		{0, "read"}, {1, "write"}, {7, "poll"}, {17, "pread64"},
		{19, "readv"}, {20, "writev"}, {23, "select"}, {34, "pause"},
		{35, "nanosleep"}, {42, "connect"}, {43, "accept"},
		{44, "sendto"}, {45, "recvfrom"}, {46, "sendmsg"},
		{47, "recvmsg"}, {61, "wait4"}, {64, "semop"}, {72, "fcntl"},
		{128, "rt_sigtimedwait"}, {130, "rt_sigsuspend"}, {202, "futex"},
		{220, "semtimedop"}, {230, "clock_nanosleep"}, {232, "epoll_wait"},
		{247, "waitid"}, {270, "pselect6"}, {271, "ppoll"},
		{281, "epoll_pwait"}, {288, "accept4"}, {441, "epoll_pwait2"},
	};
	for (size_t i = 0; i < ARRAY_LEN(names); i++)
		if (names[i].nr == nr)
			return names[i].name;
	return "syscall";
}

void report_request_line(char *buf, size_t cap, const struct reqinfo *info,
			 const char *label)
{
	if (label) {
		snprintf(buf, cap, "%s", label); /* escaped when it was set */
		return;
	}
	if (!info || info->proto == PROTO_UNKNOWN || info->proto == PROTO_OTHER ||
	    !info->method[0]) {
		snprintf(buf, cap, "%s", info && info->proto == PROTO_OTHER
			 ? "(not HTTP)" : "(request not parsed)");
		return;
	}
	snprintf(buf, cap, "%s %s", info->method,
		 info->target[0] ? info->target : "-");
}

static size_t report_json(struct out *o, const struct report *r,
			  const struct config *cfg);

const char *report_signal_name(int sig, char *buf, size_t cap)
{
	static const char *const names[] = {
		[SIGHUP] = "SIGHUP", [SIGINT] = "SIGINT", [SIGQUIT] = "SIGQUIT",
		[SIGILL] = "SIGILL", [SIGTRAP] = "SIGTRAP", [SIGABRT] = "SIGABRT",
		[SIGBUS] = "SIGBUS", [SIGFPE] = "SIGFPE", [SIGKILL] = "SIGKILL",
		[SIGUSR1] = "SIGUSR1", [SIGSEGV] = "SIGSEGV", [SIGUSR2] = "SIGUSR2",
		[SIGPIPE] = "SIGPIPE", [SIGALRM] = "SIGALRM", [SIGTERM] = "SIGTERM",
		[SIGXCPU] = "SIGXCPU", [SIGXFSZ] = "SIGXFSZ", [SIGSYS] = "SIGSYS",
	};
	if (sig > 0 && (size_t)sig < ARRAY_LEN(names) && names[sig])
		snprintf(buf, cap, "%s", names[sig]);
	else if (sig >= SIGRTMIN && sig <= SIGRTMAX)
		snprintf(buf, cap, "SIGRTMIN+%d", sig - SIGRTMIN);
	else
		snprintf(buf, cap, "signal %d", sig);
	return buf;
}

static const char *sender_text(const char *sender)
{
	return strcmp(sender, "parent") == 0 ? "the parent" :
	       strcmp(sender, "self") == 0 ? "this process" :
	       strcmp(sender, "kernel") == 0 ? "the kernel" : "another process";
}

static void put_death(struct out *o, const struct report_death *d)
{
	char sig[32];
	report_signal_name(d->sig, sig, sizeof(sig));
	PUTS(o, "Last-Words: ");
	if (d->crash)
		putf(o, "%s in this thread (address 0x%llx), a crash", sig,
		     (unsigned long long)d->addr);
	else if (d->announced)
		putf(o, "%s coming from pid %d (the parent)", sig, (int)d->from);
	else if (d->from > 0)
		putf(o, "%s from pid %d (%s)", sig, (int)d->from,
		     sender_text(d->sender));
	else
		putf(o, "%s from %s", sig, sender_text(d->sender));
	putf(o, ", %.3f s into the request\n", (double)d->into_ns / NS_PER_SEC);
}


/* ---- the request's ids and its wait in the proxy ---- */

static bool is_stamp(int slot)
{
	return slot == REQID_X_REQUEST_START || slot == REQID_X_QUEUE_START;
}

size_t report_ids(char *buf, size_t cap, const struct reqinfo *info)
{
	struct out o = {buf, cap, 0, false};
	if (cap)
		buf[0] = '\0';
	if (!info)
		return 0;
	for (int i = 0; i < info->nids && i < REQ_IDS_SHOWN; i++) {
		const struct reqinfo_id *id = &info->ids[i];
		if (is_stamp(id->slot) || id->off >= sizeof(info->idtext))
			continue;
		const char *v = info->idtext + id->off;
		if (o.len)
			PUTS(&o, " ");
		if (id->slot == REQID_TRACEPARENT && info->trace_ok)
			putf(&o, "trace-id=%s span-id=%s", info->trace.trace_id,
			     info->trace.span_id);
		else
			putf(&o, "%s=%s", reqid_name(id->slot), v);
	}
	return o.cut ? 0 : o.len;
}

/* An SD-PARAM: name="value", with '"', '\\' and ']' escaped (RFC 5424
 * 6.3.3). */
static void put_sdparam(struct out *o, const char *name, const char *v)
{
	putf(o, " %s=\"", name);
	for (; *v; v++) {
		if (*v == '"' || *v == '\\' || *v == ']')
			PUTS(o, "\\");
		put(o, v, 1);
	}
	PUTS(o, "\"");
}

size_t report_sd(char *buf, size_t cap, pid_t pid, uint64_t id,
		 const struct reqinfo *info, const char *label)
{
	struct out o = {buf, cap, 0, false};
	if (cap)
		buf[0] = '\0';
	char rid[48];
	snprintf(rid, sizeof(rid), "%d-%llu", (int)pid, (unsigned long long)id);
	PUTS(&o, "[slowdog@32473");
	put_sdparam(&o, "request_id", rid);
	for (int i = 0; info && !label && i < info->nids && i < REQ_IDS_SHOWN; i++) {
		const struct reqinfo_id *x = &info->ids[i];
		if (is_stamp(x->slot) || x->off >= sizeof(info->idtext))
			continue;
		if (x->slot == REQID_TRACEPARENT && info->trace_ok) {
			put_sdparam(&o, "trace_id", info->trace.trace_id);
			put_sdparam(&o, "span_id", info->trace.span_id);
		} else {
			put_sdparam(&o, reqid_name(x->slot), info->idtext + x->off);
		}
	}
	PUTS(&o, "]");
	return o.cut ? 0 : o.len;
}

/* The Ids: and Queued: lines of a text report, when there is something
 * to say. */
static void put_ids_lines(struct out *o, const struct report *r,
			  const struct config *cfg)
{
	const struct reqinfo *info = r->info;
	char ids[REQ_IDS_TEXT + 256];
	size_t n = report_ids(ids, sizeof(ids), info);
	bool cut = false, rep = false, bad_tp = false;
	for (int i = 0; i < info->nids && i < REQ_IDS_SHOWN; i++) {
		const struct reqinfo_id *id = &info->ids[i];
		if (is_stamp(id->slot))
			continue;
		cut |= (id->flags & REQ_ID_CUT) != 0;
		rep |= (id->flags & REQ_ID_REPEATED) != 0;
		bad_tp |= id->slot == REQID_TRACEPARENT && !info->trace_ok;
	}
	if (n || info->ids_dropped) {
		PUTS(o, "Ids:        ");
		put(o, n ? ids : "-", n ? n : 1);
		const char *sep = " (";
		if (bad_tp) {
			putf(o, "%straceparent is not W3C trace context", sep);
			sep = "; ";
		}
		for (int i = 0; rep && i < info->nids && i < REQ_IDS_SHOWN; i++)
			if ((info->ids[i].flags & REQ_ID_REPEATED) && !is_stamp(info->ids[i].slot)) {
				putf(o, "%s%s repeated, the first shown", sep,
				     reqid_name(info->ids[i].slot));
				sep = "; ";
			}
		if (cut) {
			putf(o, "%svalues over %d bytes cut", sep, REQ_ID_VALUE_MAX);
			sep = "; ";
		}
		if (info->ids_dropped) {
			putf(o, "%smore than fit, left out", sep);
			sep = "; ";
		}
		if (sep[0] == ';')
			PUTS(o, ")\n");
		else
			PUTS(o, "\n");
	}
	if (info->stamp == REQ_STAMP_NONE)
		return;
	const char *hname = reqid_name(info->stamp_slot);
	const char *raw = "";
	for (int i = 0; i < info->nids && i < REQ_IDS_SHOWN; i++)
		if (info->ids[i].slot == info->stamp_slot &&
		    info->ids[i].off < sizeof(info->idtext))
			raw = info->idtext + info->ids[i].off;
	PUTS(o, "Queued:     ");
	if (info->stamp != REQ_STAMP_OK) {
		putf(o, "unknown: %s: %s is not a time stamp%s\n", hname, raw,
		     cfg->queue_count ? "; the threshold counts from the first read" : "");
		return;
	}
	int64_t q;
	int k = reqid_queue(info->stamp_ns, r->start_real_ns, &q);
	if (k == REQID_QUEUE_OK)
		putf(o, "%.3f s before the worker read it (%s: %s)%s\n",
		     (double)q / NS_PER_SEC, hname, raw,
		     cfg->queue_count ? "; the threshold counts from the stamp" : "");
	else
		putf(o, "unknown: %s: %s is %.3f s %s the worker's first read "
		     "(clocks differ, or not a time)%s\n", hname, raw,
		     (double)q / NS_PER_SEC, k == REQID_QUEUE_FUTURE ? "after" : "before",
		     cfg->queue_count ? "; the threshold counts from the first read" : "");
}

static void put_gil(struct out *o, const struct gil_wait *g, pid_t pid);

size_t report_format(char *buf, size_t cap, const struct report *r,
		     const struct config *cfg)
{
	struct out o = {buf, cap, 0, false};
	if (cap)
		buf[0] = '\0';
	if (cfg->format == FORMAT_JSON) {
		report_json(&o, r, cfg);
		if (!o.cut)
			return o.len;
		/* Too long for one line: the same without frames' sources would
		 * still be long; say so in a valid object instead. */
		o.len = 0;
		o.cut = false;
		putf(&o, "{\"schema\":1,\"type\":\"report\",\"request_id\":\"%d-%llu\","
		     "\"error\":\"report too long\"}\n", (int)r->pid,
		     (unsigned long long)r->id);
		return o.len;
	}
	char reqline[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
	report_request_line(reqline, sizeof(reqline), r->info, r->label);

	bool stall = r->loop_kind && strcmp(r->loop_kind, "stall") == 0;
	if (stall)
		PUTS(&o, "--- slowdog: event loop stalled ---\n");
	else
		PUTS(&o, "--- slowdog: slow request ---\n");
	PUTS(&o, "Time:       ");
	put_time(&o, r->now_real_ns);
	putf(&o, "\nRequest:    %s\n", reqline);
	putf(&o, "Host:       %s\n",
	     r->info && r->info->host[0] ? r->info->host : "-");
	if (r->info)
		put_ids_lines(&o, r, cfg);
	putf(&o, "Request-Id: %d-%llu\n", (int)r->pid, (unsigned long long)r->id);
	if (r->repeat > 1)
		putf(&o, "Repeat:     %d (capture %d of this request)\n", r->repeat,
		     r->repeat);

	char cmd[2048];
	size_t n = read_cmdline(cmd, sizeof(cmd));
	putf(&o, "Process:    %d ", (int)r->pid);
	put_text(&o, cmd, n);
	putf(&o, "\nParent:     %d\n", (int)getppid());

	char comm[64];
	n = read_comm(r->tid, comm, sizeof(comm));
	putf(&o, "Thread:     %d (", (int)r->tid);
	put_text(&o, comm, n);
	PUTS(&o, ")\nStarted:    ");
	put_time(&o, r->start_real_ns);
	putf(&o, "\nRunning:    %.3f s (threshold %.3f s)\n",
	     (double)r->running_ns / NS_PER_SEC,
	     (double)cfg->threshold_ns / NS_PER_SEC);
	if (r->loop_lines)
		put(&o, r->loop_lines, strlen(r->loop_lines));

	if (r->death)
		put_death(&o, r->death);
	const struct capture *c = r->cap;
	PUTS(&o, "Capture:    ");
	switch (c->mode) {
	case CAPTURE_SUSPENDED:
		putf(&o, "%s\n", c->why);
		break;
	case CAPTURE_BLOCKED:
		putf(&o, "blocked in %s()\n", real_call_name(c->call_fn));
		break;
	case CAPTURE_SYSCALL:
		putf(&o, "asleep in %s() (system call %d)\n",
		     syscall_name(c->call_fn), c->call_fn);
		break;
	case CAPTURE_SIGNAL:
		putf(&o, "signal (thread stopped for %.1f us)\n",
		     (double)c->pause_ns / 1000.0);
		break;
	case CAPTURE_HANDLER:
		putf(&o, "in the handler of the deadly signal (thread stopped for "
		     "%.1f us)\n", (double)c->pause_ns / 1000.0);
		break;
	default:
		putf(&o, "failed: %s\n", c->why[0] ? c->why : "unknown");
		break;
	}
	if (r->gil)
		put_gil(&o, r->gil, r->pid);
	PUTS(&o, "\n");
	if (c->mode == CAPTURE_SUSPENDED) {
		/* No thread runs it: Python frames only. */
		if (c->py_walked && (c->pyinfo.n > 0 || c->pyinfo.damaged))
			put_traceback(&o, c);
	} else if (c->mode != CAPTURE_FAILED && c->mode != CAPTURE_NONE) {
		if (cfg->stack_view == STACK_MERGED)
			put_merged(&o, c);
		else
			put_split(&o, c);
		put_help(&o, c);
	}

	/* Always close the record, even when the body was cut. */
	char tail[128];
	int tl = snprintf(tail, sizeof(tail), "%s--- end of slowdog report %d-%llu ---\n",
			  o.cut ? "[report cut: too long]\n" : "", (int)r->pid,
			  (unsigned long long)r->id);
	if (o.cut) {
		size_t keep = cap > (size_t)tl + 1 ? cap - (size_t)tl - 1 : 0;
		if (o.len > keep)
			o.len = keep;
		while (o.len > 0 && buf[o.len - 1] != '\n')
			o.len--;
		o.cut = false;
	}
	put(&o, tail, (size_t)tl);
	return o.len;
}

static void put_json_finished(struct out *o, const struct finished *f);

size_t report_finished(char *buf, size_t cap, const struct finished *f,
		       const struct config *cfg)
{
	struct out o = {buf, cap, 0, false};
	if (cap)
		buf[0] = '\0';
	if (cfg->format == FORMAT_JSON)
		put_json_finished(&o, f);
	else
	{
		char ids[REQ_IDS_TEXT + 256];
		/* after a request line only ("METHOD target") */
		size_t n = f->label || !f->info || !f->info->method[0] ? 0 :
			   report_ids(ids, sizeof(ids), f->info);
		putf(&o, "slowdog: request %d-%llu finished after %.3f s: %s%s%s%s\n",
		     (int)f->pid, (unsigned long long)f->id,
		     (double)f->total_ns / NS_PER_SEC, f->request_line,
		     n ? " [" : "", n ? ids : "", n ? "]" : "");
	}
	return o.cut ? 0 : o.len;
}

/* ---- JSON lines ---- */

/* A JSON string: quotes, backslashes and control characters escaped,
 * invalid UTF-8 replaced by U+FFFD, so every line parses whatever bytes a
 * request, a file name or a source file held. */
static void put_jstr(struct out *o, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	PUTS(o, "\"");
	while (p < end) {
		unsigned c = *p;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			put(o, e, 2);
			p++;
		} else if (c < 0x20 || c == 0x7f) {
			char e[8];
			snprintf(e, sizeof(e), "\\u%04x", c);
			put(o, e, 6);
			p++;
		} else if (c < 0x80) {
			put(o, (const char *)p, 1);
			p++;
		} else {
			/* length and minimum of a well-formed sequence */
			int len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 :
				  c >= 0xc2 && c <= 0xdf ? 2 : 0;
			if (c >= 0xf5)
				len = 0;
			bool ok = len > 0 && end - p >= len;
			for (int k = 1; ok && k < len; k++)
				ok = (p[k] & 0xc0) == 0x80;
			if (ok && len == 3) {
				unsigned cp = ((c & 0x0f) << 12) | ((p[1] & 0x3f) << 6) |
					      (p[2] & 0x3f);
				ok = cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff);
			} else if (ok && len == 4) {
				unsigned cp = ((c & 0x07) << 18) | ((p[1] & 0x3f) << 12) |
					      ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
				ok = cp >= 0x10000 && cp <= 0x10ffff;
			}
			if (ok) {
				put(o, (const char *)p, (size_t)len);
				p += len;
			} else {
				PUTS(o, "\\ufffd");
				p++;
			}
		}
	}
	PUTS(o, "\"");
}

static void put_jstrz(struct out *o, const char *s)
{
	if (s)
		put_jstr(o, s, strlen(s));
	else
		PUTS(o, "null");
}

/* A Python frame's object opened: "{"file":...,"line":...,"function":...". */
static void put_jframe_head(struct out *o, const struct py_frame *f)
{
	PUTS(o, "{\"file\":");
	put_jstrz(o, f->file);
	if (f->line > 0)
		putf(o, ",\"line\":%d", f->line);
	else
		PUTS(o, ",\"line\":null");
	PUTS(o, ",\"function\":");
	put_jstrz(o, f->func);
}

static void put_jtime(struct out *o, int64_t ns)
{
	put_utc(o, ns, true);
}

static void put_jrequest(struct out *o, const struct reqinfo *info,
			 const char *label)
{
	static const char *const protos[] = {"unknown", "http", "uwsgi", "other"};
	PUTS(o, "\"request\":{\"method\":");
	put_jstrz(o, info && info->method[0] ? info->method : NULL);
	PUTS(o, ",\"target\":");
	put_jstrz(o, info && info->method[0] ? info->target : NULL);
	PUTS(o, ",\"host\":");
	put_jstrz(o, info && info->host[0] ? info->host : NULL);
	PUTS(o, ",\"protocol\":");
	put_jstrz(o, label ? NULL : info && info->proto < 4 ? protos[info->proto]
							      : "unknown");
	PUTS(o, ",\"label\":");
	put_jstrz(o, label);
	PUTS(o, ",\"ids\":{");
	bool first = true;
	for (int i = 0; info && !label && i < info->nids && i < REQ_IDS_SHOWN; i++) {
		const struct reqinfo_id *id = &info->ids[i];
		if (is_stamp(id->slot) || id->off >= sizeof(info->idtext))
			continue;
		if (!first)
			PUTS(o, ",");
		first = false;
		put_jstrz(o, reqid_name(id->slot));
		PUTS(o, ":{\"value\":");
		put_jstrz(o, info->idtext + id->off);
		if (id->slot == REQID_TRACEPARENT) {
			putf(o, ",\"valid\":%s", info->trace_ok ? "true" : "false");
			if (info->trace_ok)
				putf(o, ",\"trace_id\":\"%s\",\"span_id\":\"%s\","
				     "\"sampled\":%s", info->trace.trace_id,
				     info->trace.span_id,
				     info->trace.flags & 1 ? "true" : "false");
		}
		putf(o, ",\"truncated\":%s,\"repeated\":%s}",
		     id->flags & REQ_ID_CUT ? "true" : "false",
		     id->flags & REQ_ID_REPEATED ? "true" : "false");
	}
	putf(o, "},\"ids_dropped\":%s}",
	     info && !label && info->ids_dropped ? "true" : "false");
}

/* The report's "queue" member: null without a stamp. */
static void put_jqueue(struct out *o, const struct report *r,
		       const struct config *cfg)
{
	const struct reqinfo *info = r->info;
	PUTS(o, "\"queue\":");
	if (!info || info->stamp == REQ_STAMP_NONE) {
		PUTS(o, "null,");
		return;
	}
	PUTS(o, "{\"header\":");
	put_jstrz(o, reqid_name(info->stamp_slot));
	PUTS(o, ",\"value\":");
	const char *raw = "";
	for (int i = 0; i < info->nids && i < REQ_IDS_SHOWN; i++)
		if (info->ids[i].slot == info->stamp_slot &&
		    info->ids[i].off < sizeof(info->idtext))
			raw = info->idtext + info->ids[i].off;
	put_jstrz(o, raw);
	int64_t q = 0;
	int k = info->stamp == REQ_STAMP_OK
		? reqid_queue(info->stamp_ns, r->start_real_ns, &q) : -1;
	PUTS(o, ",\"stamp\":");
	if (info->stamp == REQ_STAMP_OK)
		put_jtime(o, info->stamp_ns);
	else
		PUTS(o, "null");
	if (k == REQID_QUEUE_OK)
		putf(o, ",\"queued_s\":%.3f,\"problem\":null,\"skew_s\":null",
		     (double)q / NS_PER_SEC);
	else if (k < 0)
		PUTS(o, ",\"queued_s\":null,\"problem\":\"not a time stamp\",\"skew_s\":null");
	else
		putf(o, ",\"queued_s\":null,\"problem\":\"%s\",\"skew_s\":%.3f",
		     k == REQID_QUEUE_FUTURE ? "in the future" : "too old",
		     (double)(k == REQID_QUEUE_FUTURE ? q : -q) / NS_PER_SEC);
	putf(o, ",\"counted\":%s},",
	     cfg->queue_count && k == REQID_QUEUE_OK ? "true" : "false");
}

static void put_json_finished(struct out *o, const struct finished *f)
{
	PUTS(o, "{\"schema\":1,\"type\":\"finished\",\"time\":");
	put_jtime(o, f->now_real_ns);
	putf(o, ",\"request_id\":\"%d-%llu\",\"pid\":%d,\"duration_s\":%.3f,",
	     (int)f->pid, (unsigned long long)f->id, (int)f->pid,
	     (double)f->total_ns / NS_PER_SEC);
	put_jrequest(o, f->info, f->label);
	PUTS(o, "}\n");
}

static void put_jpyframe(struct out *o, const struct py_frame *f, bool *first)
{
	if (!*first)
		PUTS(o, ",");
	*first = false;
	if (f->flags & PY_FRAME_NOTE) {
		PUTS(o, "{\"note\":");
		put_jstrz(o, f->func);
		PUTS(o, "}");
		return;
	}
	put_jframe_head(o, f);
	PUTS(o, ",\"source\":");
	const char *p;
	size_t n;
	bool cut;
	if (get_source(f->file, f->line, &p, &n, &cut))
		put_jstr(o, p, n);
	else
		PUTS(o, "null");
	PUTS(o, "}");
}

static void put_jnative(struct out *o, const struct capture *c)
{
	PUTS(o, "\"native\":{\"frames\":[");
	for (int i = 0; i < c->nip; i++) {
		uintptr_t ip = c->ip[i];
		uintptr_t look = i == 0 ? ip : ip - 1;
		struct sym_info si;
		bool known = symbols_lookup(look, &si);
		putf(o, "%s{\"address\":\"0x%016lx\",\"symbol\":", i ? "," : "",
		     (unsigned long)ip);
		put_jstrz(o, known ? si.name : NULL);
		if (known && si.name)
			putf(o, ",\"offset\":%lu",
			     (unsigned long)(si.offset + (ip - look)));
		else
			PUTS(o, ",\"offset\":null");
		PUTS(o, ",\"object\":");
		put_jstrz(o, known ? si.object : NULL);
		if (known && si.object)
			putf(o, ",\"object_offset\":%lu",
			     (unsigned long)(ip - si.obj_base));
		else
			PUTS(o, ",\"object_offset\":null");
		PUTS(o, "}");
	}
	putf(o, "],\"truncated\":%s", c->native_truncated ? "true" : "false");
	PUTS(o, ",\"without_symbols\":[");
	uintptr_t ips[HELP_MAX];
	int n = unnamed_objects(c, ips);
	for (int k = 0; k < n; k++) {
		struct sym_info si;
		const char *id, *help;
		symbols_lookup(ips[k], &si);
		help = symbols_help(ips[k], &id);
		if (k)
			PUTS(o, ",");
		PUTS(o, "{\"object\":");
		put_jstrz(o, si.object);
		PUTS(o, ",\"build_id\":");
		put_jstrz(o, id);
		PUTS(o, ",\"help\":");
		put_jstrz(o, help);
		PUTS(o, "}");
	}
	PUTS(o, "]}");
}

static void put_jpython(struct out *o, const struct capture *c)
{
	const struct py_walk_info *w = &c->pyinfo;
	PUTS(o, "\"python\":{\"version\":");
	put_jstrz(o, py_present() ? py_version_string() : NULL);
	PUTS(o, ",\"unavailable\":");
	put_jstrz(o, py_unavailable());
	PUTS(o, ",\"untested\":");
	put_jstrz(o, py_untested());
	/* Traceback order: outermost first. */
	PUTS(o, ",\"frames\":[");
	bool first = true;
	int n = c->py_walked ? w->n : 0;
	int shown_outer = 0;
	for (int i = n - 1; i >= w->head; i--, shown_outer++)
		put_jpyframe(o, &c->py[i], &first);
	for (int i = (w->head < n ? w->head : n) - 1; i >= 0; i--)
		put_jpyframe(o, &c->py[i], &first);
	int omitted = c->py_walked && w->total > w->n ? w->total - w->n : 0;
	putf(o, "],\"omitted\":%d,\"omitted_after\":%d,\"damaged\":%s}",
	     omitted, omitted ? shown_outer : 0,
	     c->py_walked && w->damaged ? "true" : "false");
}

static void put_jdeath(struct out *o, const struct report_death *d)
{
	char sig[32];
	report_signal_name(d->sig, sig, sizeof(sig));
	PUTS(o, "\"last_words\":{\"signal\":");
	put_jstrz(o, sig);
	putf(o, ",\"from_pid\":%d,\"sender\":", (int)d->from);
	put_jstrz(o, d->sender);
	putf(o, ",\"into_s\":%.3f,\"announced\":%s,\"crash\":%s",
	     (double)d->into_ns / NS_PER_SEC, d->announced ? "true" : "false",
	     d->crash ? "true" : "false");
	if (d->crash)
		putf(o, ",\"address\":\"0x%llx\"", (unsigned long long)d->addr);
	PUTS(o, "},");
}

/* ---- the GIL ---- */

/* "GET /x (request 12-3, running 4.000 s) in thread 77 (name)" and the
 * like: what holds the GIL. */
static void put_gil_holder(struct out *o, const struct gil_wait *g, pid_t pid)
{
	if (g->unknown && !g->tid) {
		putf(o, "an unknown thread (%s)", g->unknown);
		return;
	}
	if (g->serving) {
		char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
		report_request_line(line, sizeof(line), g->have_info ? &g->info : NULL,
				    g->label[0] ? g->label : NULL);
		putf(o, "%s (request %d-%llu, running %.3f s) in ", line, (int)pid,
		     (unsigned long long)g->req_id, (double)g->running_ns / NS_PER_SEC);
	}
	putf(o, "thread %d (", (int)g->tid);
	put_text(o, g->name, (size_t)g->name_len);
	PUTS(o, ")");
	if (!g->serving)
		putf(o, "%s", g->loop ? ", an event loop's thread" :
			      g->main ? ", the main thread, serving no request" :
					", serving no request");
}

static void put_gil(struct out *o, const struct gil_wait *g, pid_t pid)
{
	PUTS(o, "GIL:        waiting, held by ");
	put_gil_holder(o, g, pid);
	PUTS(o, "\n");
	if (!g->py_read || (g->unknown && !g->tid))
		return;
	PUTS(o, "Holder:     ");
	if (g->npy == 0) {
		putf(o, "%s", g->py_damaged ? "its Python frames cannot be read\n"
					    : "no Python frames\n");
		return;
	}
	for (int i = 0; i < g->npy; i++) {
		const struct py_frame *f = &g->py[i];
		if (i)
			PUTS(o, " < ");
		putf(o, "%s (%s:", f->func, f->file);
		if (f->line > 0)
			putf(o, "%d)", f->line);
		else
			PUTS(o, "?)");
	}
	if (g->py_total > g->npy)
		putf(o, " < [%d outer frame%s]", g->py_total - g->npy,
		     g->py_total - g->npy == 1 ? "" : "s");
	if (g->py_damaged)
		PUTS(o, " [chain damaged]");
	PUTS(o, "\n");
}

static void put_jgil(struct out *o, const struct gil_wait *g, pid_t pid)
{
	if (!g) {
		PUTS(o, "\"gil\":null,");
		return;
	}
	PUTS(o, "\"gil\":{\"waiting\":true,\"unknown\":");
	put_jstrz(o, g->unknown);
	PUTS(o, ",\"holder\":");
	if (g->unknown && !g->tid) {
		PUTS(o, "null},");
		return;
	}
	putf(o, "{\"tid\":%d,\"name\":", (int)g->tid);
	put_jstr(o, g->name, (size_t)g->name_len);
	putf(o, ",\"main_thread\":%s,\"event_loop\":%s,\"request_id\":",
	     g->main ? "true" : "false", g->loop ? "true" : "false");
	if (g->serving) {
		putf(o, "\"%d-%llu\",", (int)pid, (unsigned long long)g->req_id);
		put_jrequest(o, g->have_info ? &g->info : NULL,
			     g->label[0] ? g->label : NULL);
		putf(o, ",\"running_s\":%.3f", (double)g->running_ns / NS_PER_SEC);
	} else {
		PUTS(o, "null,\"request\":null,\"running_s\":null");
	}
	PUTS(o, ",\"python\":");
	if (!g->py_read) {
		PUTS(o, "null");
	} else {
		PUTS(o, "{\"frames\":[");
		for (int i = 0; i < g->npy; i++) {
			const struct py_frame *f = &g->py[i];
			if (i)
				PUTS(o, ",");
			put_jframe_head(o, f);
			PUTS(o, "}");
		}
		putf(o, "],\"total\":%d,\"damaged\":%s}", g->py_total,
		     g->py_damaged ? "true" : "false");
	}
	PUTS(o, "}},");
}

static size_t report_json(struct out *o, const struct report *r,
			  const struct config *cfg)
{
	const struct capture *c = r->cap;
	PUTS(o, "{\"schema\":1,\"type\":\"report\",\"time\":");
	put_jtime(o, r->now_real_ns);
	putf(o, ",\"request_id\":\"%d-%llu\",\"repeat\":%d,", (int)r->pid,
	     (unsigned long long)r->id, r->repeat);
	put_jrequest(o, r->info, r->label);

	char cmd[2048];
	size_t n = read_cmdline(cmd, sizeof(cmd));
	putf(o, ",\"process\":{\"pid\":%d,\"ppid\":%d,\"cmdline\":", (int)r->pid,
	     (int)getppid());
	put_jstr(o, cmd, n);
	char comm[64];
	n = read_comm(r->tid, comm, sizeof(comm));
	putf(o, "},\"thread\":{\"tid\":%d,\"name\":", (int)r->tid);
	put_jstr(o, comm, n);
	PUTS(o, "},\"started\":");
	put_jtime(o, r->start_real_ns);
	putf(o, ",\"running_s\":%.3f,\"threshold_s\":%.3f,",
	     (double)r->running_ns / NS_PER_SEC,
	     (double)cfg->threshold_ns / NS_PER_SEC);
	put_jqueue(o, r, cfg);

	static const char *const modes[] = {"none", "blocked", "signal", "syscall",
					    "failed", "handler", "suspended"};
	int mode = c->mode >= 0 && c->mode <= CAPTURE_SUSPENDED ? c->mode : CAPTURE_FAILED;
	PUTS(o, "\"capture\":{\"mode\":");
	put_jstrz(o, modes[mode]);
	PUTS(o, ",\"call\":");
	put_jstrz(o, c->mode == CAPTURE_BLOCKED ? real_call_name(c->call_fn)
		      : c->mode == CAPTURE_SYSCALL ? syscall_name(c->call_fn) : NULL);
	if (c->mode == CAPTURE_SIGNAL || c->mode == CAPTURE_HANDLER)
		putf(o, ",\"pause_us\":%.1f", (double)c->pause_ns / 1000.0);
	else
		PUTS(o, ",\"pause_us\":null");
	PUTS(o, ",\"error\":");
	put_jstrz(o, c->mode == CAPTURE_FAILED || c->mode == CAPTURE_SUSPENDED ? c->why : NULL);
	PUTS(o, "},\"event_loop\":");
	if (r->loop_kind) {
		PUTS(o, "{\"kind\":");
		put_jstrz(o, r->loop_kind);
		PUTS(o, ",\"lines\":");
		put_jstrz(o, r->loop_lines);
		PUTS(o, "}");
	} else {
		PUTS(o, "null");
	}
	PUTS(o, ",");
	if (r->death)
		put_jdeath(o, r->death);
	put_jgil(o, r->gil, r->pid);
	put_jpython(o, c);
	PUTS(o, ",");
	put_jnative(o, c);
	PUTS(o, "}\n");
	return o->len;
}
