/* The watchdog thread. See watchdog.h. */
#include "watchdog.h"

#include <errno.h>
#include <fnmatch.h>
#include <malloc.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "aio.h"
#include "capture.h"
#include "capture_sig.h"
#include "common.h"
#include "conn.h"
#include "gil.h"
#include "glet.h"
#include "lastwords.h"
#include "metrics.h"
#include "python.h"
#include "real.h"
#include "report.h"
#include "reqids.h"
#include "share.h"
#include "sink.h"
#include "symbols.h"
#include "sys.h"
#include "thread.h"

static struct config watchdog_cfg; /* valid once watchdog_setup() ran */
bool slowdog_off;

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
_Atomic int watchdog_running;

__attribute__((format(printf, 1, 2)))
static void debug_line(const char *fmt, ...)
{
	if (!watchdog_cfg.debug)
		return;
	char line[1024];
	int n = snprintf(line, sizeof(line), "slowdog: debug: ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	sys_warn(line);
}

static const char *env_get(const char *name)
{
	return secure_getenv(name);
}

/* A worker of a master that forked it: its slot in the table they share,
 * and the bell the master can ring. Threads that take their record later
 * find their entry then (thread.c); t took it before, and has begun a
 * request. */
void watchdog_learn_tstate(struct sd_thread *t)
{
	uintptr_t ts = py_tstate_self();
	if (ts)
		atomic_store_explicit(&t->tstate, ts, memory_order_relaxed);
	else
		t->tstate_misses++;
}

static void share_join(struct sd_thread *t)
{
	if (!share_claim())
		return;
	thread_bell_share(&share_mine->bell);
	if (t && !t->share) {
		t->share = share_entry((int)(t - thread_table));
		uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
		if (id)
			thread_share_begin(t, id, t->req_start_ns);
	}
}

static void setup(void)
{
	config_load(&watchdog_cfg, env_get, sys_warn);
	if (watchdog_cfg.disabled) {
		slowdog_off = true;
		return;
	}
	/* Before any request is parsed: the parsers read the names. */
	reqids_setup(watchdog_cfg.headers, sys_warn);
	capture_setup(&watchdog_cfg, sys_warn);
	/* After the capture signal is known: it is kept out of the deadly
	 * signals' handlers. */
	lastwords_arm(watchdog_cfg.last_words_ns, watchdog_cfg.threshold_ns);
	/* Before the first request, so that every thread finds its entry. */
	share_join(NULL);
	/* Now, so that the first request already records its thread's Python
	 * thread state (uWSGI's workers have one thread state each). */
	py_init();
	/* And the greenlet each request begins in, from the first request
	 * on: an event loop of greenlets accepts on the thread that runs
	 * them. Once per process, at its first accepted connection. */
	glet_setup(pthread_self());
}

_Atomic int watchdog_ready;

void watchdog_setup_once(void)
{
	pthread_once(&setup_once, setup);
	atomic_store_explicit(&watchdog_ready, 1, memory_order_release);
}


/* ---- reported requests, for their "finished" lines ---- */

#define REPORTED_MAX 1024
static struct reported {
	uint64_t id;
	char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
	struct reqinfo info;
	bool have_info;
	char label[256];
	bool have_label;
} reported[REPORTED_MAX];
static unsigned reported_next;

static void reported_add(uint64_t id, const char *line,
			 const struct reqinfo *info, const char *label)
{
	struct reported *r = &reported[reported_next++ % REPORTED_MAX];
	r->id = id;
	snprintf(r->line, sizeof(r->line), "%s", line);
	r->have_info = info != NULL;
	if (info)
		r->info = *info;
	r->have_label = label != NULL;
	if (label)
		snprintf(r->label, sizeof(r->label), "%s", label);
}

static struct reported *reported_take(uint64_t id)
{
	for (int i = 0; i < REPORTED_MAX; i++)
		if (reported[i].id == id) {
			reported[i].id = 0;
			return &reported[i];
		}
	return NULL;
}

/* When each thread's current request is next due for a capture. */
static struct due {
	uint64_t id;
	int count; /* captures so far; -1: no more */
	int64_t at;
	bool queue_known; /* SLOWDOG_QUEUE=count: at counts from the stamp */
} dues[THREADS_MAX];

static char *report_buf;
#define REPORT_BUF (1 << 20)

/*
 * Reports cost memory (symbol tables, libunwind's and libelf's, the buffers'
 * pages): kept while reports come, so that a burst of them is fast, and
 * given back once none came for this long.
 */
#define RELEASE_AFTER_NS (5 * NS_PER_SEC)
static int64_t last_report_ns;
static bool holding;

static void release_memory(void)
{
	symbols_flush();
	capture_release();
	madvise(report_buf, REPORT_BUF, MADV_DONTNEED);
	malloc_trim(0);
	holding = false;
	debug_line("idle: memory of the last reports given back");
}

/* A record about request pid-id, with its ids as syslog's structured
 * data. */
static void write_sd(const char *buf, size_t n, bool report, uint64_t id,
		     pid_t pid, const struct reqinfo *info, const char *label)
{
	static char sd[2 * REQ_IDS_TEXT + 1024];
	if (!report_sd(sd, sizeof(sd), pid, id, info, label))
		sd[0] = '\0';
	sink_write_sd(buf, n, report, sd);
}

/*
 * SLOWDOG_QUEUE=count: how long the request waited before its first read
 * (at start, coarse monotonic clock), as its proxy's stamp tells; 0 when
 * there is no stamp, or none to believe (the report says which). *known:
 * the head was all read, so nothing more will come.
 */
static int64_t queued_ns(int fd, uint32_t gen, uint64_t id, int64_t start,
			 bool *known)
{
	struct reqinfo info;
	*known = true;
	if (fd < 0 || !conn_describe(fd, gen, id, &info))
		return 0;
	*known = info.head_complete;
	if (info.stamp != REQ_STAMP_OK)
		return 0;
	int64_t read_real = clock_real_ns() - (clock_mono_ns() - start), q;
	return reqid_queue(info.stamp_ns, read_real, &q) == REQID_QUEUE_OK ? q : 0;
}

static void drain_done(pid_t pid)
{
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		uint64_t id = atomic_load_explicit(&t->done_id, memory_order_acquire);
		if (!id)
			continue;
		int64_t total = t->done_ns;
		if (!atomic_compare_exchange_strong(&t->done_id, &id, 0))
			continue;
		uint32_t exited = THREAD_EXITED;
		atomic_compare_exchange_strong(&t->state, &exited, THREAD_FREE);
		struct reported *rep = reported_take(id);
		if (!rep)
			continue;
		struct finished f = {
			.id = id,
			.pid = pid,
			.now_real_ns = clock_real_ns(),
			.total_ns = total,
			.request_line = rep->line,
			.info = rep->have_info ? &rep->info : NULL,
			.label = rep->have_label ? rep->label : NULL,
		};
		char line[2 * (REQ_METHOD_MAX + REQ_TARGET_MAX + REQ_HOST_MAX) +
			  REQ_IDS_TEXT + 512];
		size_t n = report_finished(line, sizeof(line), &f, &watchdog_cfg);
		write_sd(line, n, false, id, pid, f.info, f.label);
		metrics_finished(f.info, f.label, total);
	}
}

/* The path part of a target (no query string) matches an SLOWDOG_IGNORE
 * pattern. */
static bool ignored(const struct reqinfo *info)
{
	const char *list = watchdog_cfg.ignore;
	if (!list[0] || !info)
		return false;
	char path[REQ_TARGET_MAX];
	snprintf(path, sizeof(path), "%s", info->target);
	char *q = strchr(path, '?');
	if (q)
		*q = '\0';
	while (*list) {
		while (*list == ',' || *list == ' ')
			list++;
		size_t n = strcspn(list, ",");
		char pat[CONFIG_IGNORE_MAX];
		memcpy(pat, list, n);
		pat[n] = '\0';
		while (n > 0 && pat[n - 1] == ' ')
			pat[--n] = '\0';
		if (n > 0 && fnmatch(pat, path, 0) == 0)
			return true;
		list += strcspn(list, ",");
	}
	return false;
}

enum { REPORTED, IGNORED, GONE };

/* The line of request id, where the master reads it if the worker dies. */
static void share_line(struct sd_thread *t, uint64_t id, const char *line)
{
	struct share_req *sh = t->share;
	if (!sh || atomic_load_explicit(&sh->line_id, memory_order_relaxed) == id)
		return;
	size_t n = strnlen(line, sizeof(sh->line) - 1);
	memcpy(sh->line, line, n);
	sh->line[n] = '\0';
	atomic_store_explicit(&sh->line_id, id, memory_order_release);
}

/* death: last words (NULL for a slow request); from_slot: the thread took
 * its own snapshot in the handler of the deadly signal. */
static int report_thread(struct sd_thread *t, uint64_t id, int64_t start,
			 int64_t now, pid_t pid, int repeat,
			 const struct report_death *death, bool from_slot)
{
	static struct capture cap;
	struct reqinfo info;
	bool have = t->fd >= 0 && conn_describe(t->fd, t->conn_gen, id, &info);
	const char *label = t->fd < 0 ? t->label : NULL;

	if (have && ignored(&info)) {
		debug_line("request %d-%llu ignored (SLOWDOG_IGNORE): %s", (int)pid,
			   (unsigned long long)id, info.target);
		return IGNORED;
	}
	if (have && watchdog_cfg.strip_query) {
		char *q = strchr(info.target, '?');
		if (q)
			*q = '\0';
	}

	atomic_store_explicit(&t->reported_id, id, memory_order_release);
	if (from_slot) {
		memset(&cap, 0, offsetof(struct capture, ip));
		capture_from_slot(&lastwords_slot, &cap);
	} else {
		capture_thread(t, &cap);
	}
	/* It ended while we looked: the stack may already be the next
	 * request's. Show nothing rather than a wrong stack; its finished
	 * line is skipped too if nothing was reported before. */
	if (atomic_load_explicit(&t->req_id, memory_order_acquire) != id) {
		debug_line("request %d-%llu ended during its capture", (int)pid,
			   (unsigned long long)id);
		return GONE;
	}
	if (cap.mode == CAPTURE_FAILED)
		debug_line("capture of thread %d failed: %s", (int)t->tid, cap.why);
	static struct gil_wait gil;
	bool gil_waited = !death && gil_check(t, &cap, &gil);

	int64_t real_now = clock_real_ns();
	int64_t mono_now = clock_mono_ns();
	struct report r = {
		.id = id,
		.pid = pid,
		.tid = t->tid,
		.now_real_ns = real_now,
		.start_real_ns = real_now - (mono_now - start),
		.running_ns = now - start,
		.repeat = repeat,
		.info = have ? &info : NULL,
		.label = label,
		.cap = &cap,
		.death = death,
		.gil = gil_waited ? &gil : NULL,
	};
	symbols_refresh();
	size_t n = report_format(report_buf, REPORT_BUF, &r, &watchdog_cfg);
	write_sd(report_buf, n, true, id, pid, r.info, label);
	last_report_ns = clock_mono_ns();
	holding = true;
	char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
	report_request_line(line, sizeof(line), r.info, label);
	share_line(t, id, line);
	if (repeat == 1) {
		reported_add(id, line, r.info, label);
		metrics_slow(r.info, label);
	}
	return REPORTED;
}

/* The request t serves (0: none, or an event loop's thread, whose
 * requests are on their connections), with its start, read consistently. */
static uint64_t live_request(struct sd_thread *t, int64_t *start)
{
	if (atomic_load_explicit(&t->state, memory_order_acquire) != THREAD_LIVE)
		return 0;
	uint64_t id = atomic_load_explicit(&t->req_id, memory_order_acquire);
	if (!id || t->mux || t->loop)
		return 0;
	*start = t->req_start_ns;
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&t->req_id, memory_order_relaxed) != id)
		return 0;
	return id;
}

static const char *sender_of(const struct lastwords_event *ev)
{
	if (ev->code > 0)
		return "kernel";
	if (ev->from == getppid())
		return "parent";
	return ev->from == getpid() ? "self" : "other";
}

/*
 * A deadly signal was caught (lastwords.c), or the master announced a
 * SIGKILL (share.h): a report for each request in flight that is due
 * words, with what is known of the death; then the dying side may go on.
 */
static void last_words(pid_t pid, int64_t threshold)
{
	struct lastwords_event *ev = &lastwords_event;
	bool caught = atomic_load_explicit(&ev->state, memory_order_acquire) == LW_PENDING;
	bool announced = share_mine &&
			 atomic_load_explicit(&share_mine->want_words, memory_order_acquire) &&
			 !atomic_load_explicit(&share_mine->words_done, memory_order_acquire);
	if (!caught && !announced)
		return;
	struct report_death d = {0};
	int64_t at = clock_mono_ns();
	bool all = true;
	if (caught) {
		d.sig = ev->sig;
		d.from = ev->from;
		d.sender = sender_of(ev);
		d.crash = ev->code > 0 && (ev->sig == SIGSEGV || ev->sig == SIGBUS ||
					   ev->sig == SIGFPE || ev->sig == SIGILL);
		d.addr = ev->addr;
		at = ev->at_ns;
		all = ev->all;
	} else {
		d.sig = SIGKILL;
		d.from = getppid();
		d.sender = "parent";
		d.announced = true;
	}
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		int64_t start;
		uint64_t id = live_request(t, &start);
		if (!id || (!all && at - start < threshold))
			continue;
		d.into_ns = at - start;
		bool from_slot = caught && ev->snapped && t->tid == ev->tid &&
				 id == ev->req_id;
		int repeat = dues[i].id == id && dues[i].count > 0 ? dues[i].count + 1 : 1;
		report_thread(t, id, start, clock_mono_ns(), pid, repeat, &d, from_slot);
		if (dues[i].id == id && dues[i].count >= 0)
			dues[i].count = -1; /* no more captures of it */
	}
	if (caught)
		lastwords_finish();
	if (share_mine) {
		atomic_store_explicit(&share_mine->words_done, 1, memory_order_release);
		share_wake(&share_mine->words_done);
	}
}


/* ---- event loops ----
 *
 * A loop thread (thread.h) serves many requests at once, each tracked on
 * its own connection. Two kinds of report: the loop stalled (out of its
 * wait past SLOWDOG_LOOP_THRESHOLD with requests in flight: one request's
 * code holds the thread, every other request waits), and a request past
 * the threshold while its loop is free (it awaits something: its stack is
 * a suspended greenlet or coroutine, on no thread).
 */

struct loopreq {
	struct conn *c;
	int fd;
	uint32_t gen;
	uint64_t id;
	int64_t start;
	uintptr_t glet;
};

#define LOOPREQ_MAX 1024
static struct loopreq loopreqs[LOOPREQ_MAX];
static int nloopreqs;

/* Per loop thread, the watchdog's own. */
static struct loopst {
	int64_t reported_left; /* loop_left_ns of the last stall reported */
	uint64_t stall_id;     /* its Request-Id */
	int64_t stall_start_real;
	int stall_count;       /* its reports so far; -1: no more */
	int64_t stall_next;    /* its next report (SLOWDOG_REPEAT) */
	int64_t ended_left;    /* the loop_left_ns of the last stall ended */
	int64_t ended_at;      /* and its end (coarse clock) */
} loopst[THREADS_MAX];

/* A request starved by a stall is reported on its own (as awaiting) only
 * if it is still in flight this long after the loop resumed: the loop's
 * first turns after a stall serve the requests it starved. */
#define STARVED_GRACE_NS (250 * NS_PER_MS)

/* A loop counts as stalled for the requests on it once it has been out of
 * its wait this long: shorter turns are the loop's ordinary work. */
#define LOOP_BUSY_NS (100 * NS_PER_MS)

static int64_t loop_threshold;

/* One pass over the connections: finished lines of reported loop requests,
 * and the requests in flight on loop threads, into loopreqs. */
static void loop_scan(pid_t pid)
{
	nloopreqs = 0;
	int limit = conn_fd_limit();
	for (int fd = 0; fd < limit; fd++) {
		struct conn *c = conn_slot(fd);
		if (!c)
			continue;
		uint64_t done = atomic_load_explicit(&c->done_id, memory_order_acquire);
		if (done) {
			int64_t total = c->done_ns;
			if (atomic_compare_exchange_strong(&c->done_id, &done, 0)) {
				struct reported *rep = reported_take(done);
				if (rep) {
					struct finished f = {
						.id = done,
						.pid = pid,
						.now_real_ns = clock_real_ns(),
						.total_ns = total,
						.request_line = rep->line,
						.info = rep->have_info ? &rep->info : NULL,
						.label = NULL,
					};
					char line[2 * (REQ_METHOD_MAX + REQ_TARGET_MAX + REQ_HOST_MAX) +
						  REQ_IDS_TEXT + 512];
					size_t n = report_finished(line, sizeof(line), &f, &watchdog_cfg);
					write_sd(line, n, false, done, pid, f.info, NULL);
					metrics_finished(f.info, NULL, total);
				}
			}
		}
		uint32_t gen = atomic_load_explicit(&c->gen, memory_order_acquire);
		if (!gen)
			continue;
		struct sd_thread *o = c->owner;
		uint64_t id = c->req_id;
		int64_t start = c->start_ns;
		uintptr_t glet = c->glet;
		uint8_t state = c->state;
		atomic_thread_fence(memory_order_acquire);
		if (!o || !id || state == CONN_IDLE || !o->loop ||
		    atomic_load_explicit(&c->gen, memory_order_relaxed) != gen ||
		    c->req_id != id)
			continue;
		if (nloopreqs == LOOPREQ_MAX)
			continue;
		loopreqs[nloopreqs++] = (struct loopreq){
			.c = c, .fd = fd, .gen = gen, .id = id, .start = start,
			.glet = glet,
		};
	}
}

/* Whether r is still in flight as it was scanned. */
static bool loopreq_alive(const struct loopreq *r)
{
	return atomic_load_explicit(&r->c->gen, memory_order_acquire) == r->gen &&
	       r->c->req_id == r->id && r->c->state != CONN_IDLE;
}

static void loopreq_line(const struct loopreq *r, pid_t pid, char *buf,
			 size_t cap, struct reqinfo *info, bool *have)
{
	*have = conn_describe(r->fd, r->gen, r->id, info);
	if (*have && watchdog_cfg.strip_query) {
		char *q = strchr(info->target, '?');
		if (q)
			*q = '\0';
	}
	char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
	report_request_line(line, sizeof(line), *have ? info : NULL, NULL);
	snprintf(buf, cap, "%d-%llu %s", (int)pid, (unsigned long long)r->id, line);
}

static void put_line(char *buf, size_t cap, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void put_line(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
	if (*len >= cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
	va_end(ap);
	if (n > 0)
		*len += (size_t)n < cap - *len ? (size_t)n : cap - *len - 1;
}

static char loop_lines[64 * 1024];

static void report_emit(struct report *r, bool first, const char *label)
{
	symbols_refresh();
	size_t n = report_format(report_buf, REPORT_BUF, r, &watchdog_cfg);
	write_sd(report_buf, n, true, r->id, r->pid, r->info, r->label);
	last_report_ns = clock_mono_ns();
	holding = true;
	if (first) {
		char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
		report_request_line(line, sizeof(line), r->info, label);
		reported_add(r->id, line, r->info, label);
		metrics_slow(r->info, label);
	}
}

/* A stall's end is known (drain_stalls): the time the requests it starved
 * spent waiting is added up, and each may be reported on its own again
 * (as awaiting, with its own stack) if it is still in flight a little
 * after the loop resumed. */
static void starved_resume(struct conn *c, const struct loopst *ls)
{
	int64_t d = ls->ended_at - c->wd_starved_from;
	if (d > 0)
		c->wd_starved_ns += d;
	c->wd_starved = 0;
	if (c->wd_at < ls->ended_at + STARVED_GRACE_NS)
		c->wd_at = ls->ended_at + STARVED_GRACE_NS;
}

/* r is listed as starved by the stall id of ls (since left): no report of
 * its own while that lasts. */
static void starve(struct loopreq *r, const struct loopst *ls, uint64_t id,
		   int64_t left)
{
	struct conn *c = r->c;
	if (c->wd_id != r->id) {
		c->wd_id = r->id;
		c->wd_count = 0;
		c->wd_at = r->start + watchdog_cfg.threshold_ns +
			   (loop_threshold - watchdog_cfg.loop_threshold_ns);
		c->wd_starved = 0;
		c->wd_starved_ns = 0;
	}
	if (c->wd_starved == id)
		return;
	if (c->wd_starved && ls->ended_left == ls->reported_left)
		starved_resume(c, ls); /* an earlier stall, over */
	c->wd_starved = id;
	c->wd_starved_from = r->start > left ? r->start : left;
}

/* The loop thread t has been out of its wait since left (coarse clock)
 * with requests in flight: one report (repeat: which one of the stall). */
static void report_stall(struct sd_thread *t, struct loopst *ls, int64_t left,
			 pid_t pid, int repeat)
{
	static struct capture cap;
	uintptr_t main1, main2;
	uintptr_t g1 = glet_current_of(t->pthread, &main1);
	capture_thread(t, &cap);
	uintptr_t g2 = glet_current_of(t->pthread, &main2);
	int64_t now = clock_mono_ns();
	/* Still the same stall? */
	bool ended = atomic_load_explicit(&t->in_loop_wait, memory_order_acquire) ||
		     atomic_load_explicit(&t->loop_left_ns, memory_order_relaxed) != left;

	struct loopreq *culprit = NULL;
	if (g1 && g1 == g2)
		for (int i = 0; i < nloopreqs; i++)
			if (loopreqs[i].c->owner == t && loopreqs[i].glet == g1 &&
			    loopreq_alive(&loopreqs[i]))
				culprit = &loopreqs[i];
	/* asyncio: the request whose ASGI scope the running frames hold,
	 * looked for before and after the capture. */
	const char *aio_why = NULL;
	if (!g1 && !atomic_load(&glet_modid)) {
		static int fds[LOOPREQ_MAX];
		int nfds = 0;
		for (int i = 0; i < nloopreqs; i++)
			if (loopreqs[i].c->owner == t)
				fds[nfds++] = loopreqs[i].fd;
		int fd = aio_running_fd(t, fds, nfds, &aio_why);
		for (int i = 0; fd >= 0 && i < nloopreqs; i++)
			if (loopreqs[i].fd == fd && loopreqs[i].c->owner == t &&
			    loopreq_alive(&loopreqs[i]))
				culprit = &loopreqs[i];
	}
	size_t len = 0;
	put_line(loop_lines, sizeof(loop_lines), &len,
		 "Loop:       stalled %.3f s: thread %d out of its wait since ",
		 (double)(now - left) / NS_PER_SEC, (int)t->tid);
	int64_t left_real = clock_real_ns() - (now - left);
	time_t sec = (time_t)(left_real / NS_PER_SEC);
	struct tm tm;
	gmtime_r(&sec, &tm);
	put_line(loop_lines, sizeof(loop_lines), &len,
		 "%02d:%02d:%02d.%03d UTC (loop threshold %.3f s)%s\n", tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(left_real % NS_PER_SEC / NS_PER_MS),
		 (double)watchdog_cfg.loop_threshold_ns / NS_PER_SEC,
		 ended ? "; it has resumed since" : "");
	struct reqinfo cinfo;
	bool chave = false;
	char rl[REQ_METHOD_MAX + REQ_TARGET_MAX + 64];
	if (culprit) {
		loopreq_line(culprit, pid, rl, sizeof(rl), &cinfo, &chave);
		if (g1)
			put_line(loop_lines, sizeof(loop_lines), &len,
				 "Culprit:    %s running %.3f s (its greenlet 0x%lx runs)\n",
				 rl, (double)(now - culprit->start) / NS_PER_SEC,
				 (unsigned long)g1);
		else
			put_line(loop_lines, sizeof(loop_lines), &len,
				 "Culprit:    %s running %.3f s (%s)\n",
				 rl, (double)(now - culprit->start) / NS_PER_SEC, aio_why);
	} else if (g1 && g1 == g2) {
		put_line(loop_lines, sizeof(loop_lines), &len,
			 "Culprit:    no request: greenlet 0x%lx runs (%s)\n",
			 (unsigned long)g1,
			 g1 == main1 ? "the main greenlet" : "the hub, or a greenlet that serves no request");
	} else if (atomic_load(&glet_modid)) {
		put_line(loop_lines, sizeof(loop_lines), &len,
			 "Culprit:    not known: the running greenlet changed during the capture\n");
	} else {
		put_line(loop_lines, sizeof(loop_lines), &len,
			 "Culprit:    not told apart (%s); the Python stack below "
			 "runs the culprit's code\n",
			 aio_why ? aio_why : "no greenlets");
	}
	/* A repeat keeps the stall's first id. */
	uint64_t id = repeat > 1 ? ls->stall_id :
		      culprit ? culprit->id : thread_take_ids(1);
	int starved = 0;
	for (int i = 0; i < nloopreqs; i++) {
		struct loopreq *r = &loopreqs[i];
		if (r->c->owner != t || r == culprit || !loopreq_alive(r))
			continue;
		struct reqinfo info;
		bool have;
		loopreq_line(r, pid, rl, sizeof(rl), &info, &have);
		if (starved++ < 50)
			put_line(loop_lines, sizeof(loop_lines), &len,
				 "Starved:    %s waiting %.3f s\n", rl,
				 (double)(now - r->start) / NS_PER_SEC);
		starve(r, ls, id, left);
	}
	if (starved > 50)
		put_line(loop_lines, sizeof(loop_lines), &len,
			 "Starved:    ... %d more\n", starved - 50);
	if (!starved)
		put_line(loop_lines, sizeof(loop_lines), &len,
			 "Starved:    none\n");

	if (culprit && culprit->id == id) {
		atomic_store_explicit(&culprit->c->reported_id, id, memory_order_release);
		culprit->c->wd_id = id;
		culprit->c->wd_count = -1;
		culprit->c->wd_starved = 0;
	}
	int64_t real_now = clock_real_ns();
	struct report r = {
		.id = id,
		.pid = pid,
		.tid = t->tid,
		.now_real_ns = real_now,
		.start_real_ns = culprit && culprit->id == id ?
					 real_now - (now - culprit->start) : left_real,
		.running_ns = culprit && culprit->id == id ? now - culprit->start : now - left,
		.repeat = repeat,
		/* A repeat names the first report's request, or the loop. */
		.info = chave && culprit->id == id ? &cinfo : NULL,
		.label = culprit && culprit->id == id ? NULL : "event loop",
		.cap = &cap,
		.loop_kind = "stall",
		.loop_lines = loop_lines,
	};
	static struct gil_wait gil;
	if (gil_check(t, &cap, &gil))
		r.gil = &gil;
	report_emit(&r, culprit != NULL && repeat == 1, NULL);
	if (culprit && repeat == 1 && !loopreq_alive(culprit))
		reported_take(id); /* ended meanwhile: no finished line */
	if (repeat > 1)
		return;
	ls->reported_left = left;
	ls->stall_id = id;
	ls->stall_count = 0;
	/* Its end: written by the loop thread as it enters its wait, or here
	 * if it did already. */
	atomic_store(&t->stall_at, left);
	if (atomic_load(&t->in_loop_wait) ||
	    atomic_load(&t->loop_left_ns) != left) {
		int64_t at = atomic_exchange(&t->stall_at, 0);
		if (at) {
			t->stall_end_ns = clock_coarse_ns();
			atomic_store_explicit(&t->stall_done, at, memory_order_release);
		}
	}
}

/* The "ended" lines of stalls; true if there was one (the requests it
 * starved may now be due). */
static bool drain_stalls(pid_t pid)
{
	bool any = false;
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		int64_t at = atomic_load_explicit(&t->stall_done, memory_order_acquire);
		if (!at)
			continue;
		int64_t end = t->stall_end_ns;
		if (!atomic_compare_exchange_strong(&t->stall_done, &at, 0))
			continue;
		loopst[i].ended_left = at;
		loopst[i].ended_at = end;
		any = true;
		char line[256];
		int n;
		if (watchdog_cfg.format == FORMAT_JSON)
			n = snprintf(line, sizeof(line),
				     "{\"schema\":1,\"type\":\"stall_ended\","
				     "\"request_id\":\"%d-%llu\",\"tid\":%d,"
				     "\"total_s\":%.3f}\n", (int)pid,
				     (unsigned long long)loopst[i].stall_id, (int)t->tid,
				     (double)(end - at) / NS_PER_SEC);
		else
			n = snprintf(line, sizeof(line),
				     "slowdog: event loop stall %d-%llu on thread %d ended "
				     "after %.3f s\n", (int)pid,
				     (unsigned long long)loopst[i].stall_id, (int)t->tid,
				     (double)(end - at) / NS_PER_SEC);
		if (n > 0)
			sink_write(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1, false);
	}
	return any;
}

/* A request on a free loop past the threshold. */
static bool report_awaiting(struct sd_thread *t, struct loopreq *q, pid_t pid,
			    int repeat)
{
	static struct capture cap;
	struct reqinfo info;
	bool have = conn_describe(q->fd, q->gen, q->id, &info);
	if (have && ignored(&info))
		return false;
	if (have && watchdog_cfg.strip_query) {
		char *qs = strchr(info.target, '?');
		if (qs)
			*qs = '\0';
	}
	atomic_store_explicit(&q->c->reported_id, q->id, memory_order_release);
	uintptr_t main;
	uintptr_t cur = glet_current_of(t->pthread, &main);
	size_t len = 0;
	bool live = false;
	if (q->glet && cur == q->glet) {
		/* Its greenlet runs right now: the thread's stack is its. */
		capture_thread(t, &cap);
		live = glet_current_of(t->pthread, &main) == q->glet;
	}
	if (!live && !q->glet && !atomic_load(&glet_modid)) {
		memset(&cap, 0, offsetof(struct capture, ip));
		cap.py = capture_py_buffer();
		aio_capture_task(t, q->fd, have ? &info : NULL, &cap);
	} else if (!live) {
		capture_suspended(t, q->glet, &cap);
	}
	put_line(loop_lines, sizeof(loop_lines), &len,
		 "Loop:      %s on the event loop of thread %d (the loop is free)\n",
		 live ? " running" : " awaiting", (int)t->tid);
	if (q->c->wd_starved_ns > 0)
		put_line(loop_lines, sizeof(loop_lines), &len,
			 "Loop:       starved %.3f s of its running time by stalls "
			 "of this loop (reported as such)\n",
			 (double)q->c->wd_starved_ns / NS_PER_SEC);
	if (!loopreq_alive(q)) {
		debug_line("request %d-%llu ended during its capture", (int)pid,
			   (unsigned long long)q->id);
		return false;
	}
	int64_t now = clock_mono_ns();
	int64_t real_now = clock_real_ns();
	struct report r = {
		.id = q->id,
		.pid = pid,
		.tid = t->tid,
		.now_real_ns = real_now,
		.start_real_ns = real_now - (now - q->start),
		.running_ns = now - q->start,
		.repeat = repeat,
		.info = have ? &info : NULL,
		.cap = &cap,
		.loop_kind = "await",
		.loop_lines = loop_lines,
	};
	report_emit(&r, repeat == 1, NULL);
	return true;
}

/* The thread is stopped (SIGSTOP, a debugger): its loop is not stalled
 * by a request. */
static bool thread_stopped(pid_t tid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	size_t n = sys_read_small(path, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
}

/* The stall of ls was reported (count times so far) at at: when next. */
static void stall_repeat_next(struct loopst *ls, int64_t at, int64_t now)
{
	ls->stall_count = ls->stall_count > 0 ? ls->stall_count + 1 : 1;
	if (!watchdog_cfg.repeat_ns || ls->stall_count >= watchdog_cfg.repeat_max) {
		ls->stall_count = -1;
		return;
	}
	ls->stall_next = at + watchdog_cfg.repeat_ns;
	if (ls->stall_next <= now)
		ls->stall_next = now + watchdog_cfg.repeat_ns;
}

/* The loop threads' part of a pass; returns the next time it is due. */
static int64_t loop_pass(pid_t pid, int64_t next)
{
	int64_t threshold = watchdog_cfg.threshold_ns + (loop_threshold - watchdog_cfg.loop_threshold_ns);
	bool any = false;
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		if (atomic_load_explicit(&t->state, memory_order_acquire) != THREAD_LIVE)
			continue;
		/* Before a thread is known to be a loop: the greenlet of each
		 * of its requests is recorded from the start. */
		if (!atomic_load_explicit(&glet_modid, memory_order_relaxed))
			glet_setup(t->pthread);
		any |= t->loop;
	}
	if (!any)
		return next;
	loop_scan(pid);
	int64_t now = clock_mono_ns();
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		if (!t->loop || atomic_load_explicit(&t->state, memory_order_acquire) != THREAD_LIVE)
			continue;
		int inflight = 0;
		for (int k = 0; k < nloopreqs; k++)
			inflight += loopreqs[k].c->owner == t;
		if (!inflight)
			continue;
		bool in_wait = atomic_load_explicit(&t->in_loop_wait, memory_order_acquire);
		int64_t left = atomic_load_explicit(&t->loop_left_ns, memory_order_relaxed);
		struct loopst *ls = &loopst[i];
		if (in_wait) {
			/* A stall may begin at any moment: look again then. */
			if (now + loop_threshold < next)
				next = now + loop_threshold;
		} else if (left != ls->reported_left) {
			int64_t due = left + loop_threshold;
			if (due <= now && thread_stopped(t->tid)) {
				ls->reported_left = left; /* not a request's doing */
				ls->stall_count = -1;
			} else if (due <= now) {
				report_stall(t, ls, left, pid, 1);
				now = clock_mono_ns();
				stall_repeat_next(ls, due, now);
			} else if (due < next) {
				next = due;
			}
		} else if (ls->stall_count > 0) {
			/* The same stall goes on: SLOWDOG_REPEAT. */
			if (ls->stall_next <= now) {
				report_stall(t, ls, left, pid, ls->stall_count + 1);
				now = clock_mono_ns();
				stall_repeat_next(ls, ls->stall_next, now);
			}
		}
		if (!in_wait && ls->stall_count > 0 && left == ls->reported_left &&
		    ls->stall_next < next)
			next = ls->stall_next;
		bool stalled = !in_wait && now - left >= LOOP_BUSY_NS;
		for (int k = 0; k < nloopreqs; k++) {
			struct loopreq *q = &loopreqs[k];
			struct conn *c = q->c;
			if (c->owner != t)
				continue;
			if (c->wd_id != q->id) {
				bool known;
				c->wd_id = q->id;
				c->wd_count = 0;
				c->wd_at = q->start + threshold;
				if (watchdog_cfg.queue_count)
					c->wd_at -= queued_ns(q->fd, q->gen, q->id,
							      q->start, &known);
				c->wd_starved = 0;
				c->wd_starved_ns = 0;
			}
			if (c->wd_starved && c->wd_starved != ls->stall_id) {
				/* A stall before the last one: over, its end
				 * not kept. */
				c->wd_starved = 0;
				if (c->wd_at < now + STARVED_GRACE_NS)
					c->wd_at = now + STARVED_GRACE_NS;
			} else if (c->wd_starved) {
				/* Listed by a stall: its own report waits for
				 * the stall's end. */
				if (ls->ended_left != ls->reported_left)
					continue;
				starved_resume(c, ls);
			}
			if (c->wd_count < 0)
				continue;
			if (c->wd_at > now) {
				if (c->wd_at < next)
					next = c->wd_at;
				continue;
			}
			if (stalled) {
				/* The stall's report names it, when due. */
				int64_t due = left + loop_threshold;
				if (due < now + NS_PER_MS)
					due = now + 10 * NS_PER_MS;
				if (due < next)
					next = due;
				continue;
			}
			if (!report_awaiting(t, q, pid, c->wd_count + 1)) {
				c->wd_count = -1;
				continue;
			}
			now = clock_mono_ns();
			c->wd_count++;
			if (!watchdog_cfg.repeat_ns || c->wd_count >= watchdog_cfg.repeat_max) {
				c->wd_count = -1;
				continue;
			}
			c->wd_at += watchdog_cfg.repeat_ns;
			if (c->wd_at <= now)
				c->wd_at = now + watchdog_cfg.repeat_ns;
			if (c->wd_at < next)
				next = c->wd_at;
		}
	}
	return next;
}

static void *watchdog_main(void *arg)
{
	(void)arg;
	thread_mark_internal();
	pthread_setname_np(pthread_self(), "slowdog");
	py_init();
	report_buf = mmap(NULL, REPORT_BUF, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (report_buf == MAP_FAILED || !capture_thread_init(&watchdog_cfg) ||
	    (watchdog_cfg.last_words_ns &&
	     !capture_slot_alloc(&lastwords_slot, watchdog_cfg.max_frames))) {
		sys_warn("slowdog: out of memory; slow requests will not be reported");
		return NULL;
	}
	sink_open(watchdog_cfg.log_path);
	metrics_open(&watchdog_cfg, sys_warn);
	pid_t pid = getpid();
	debug_line("watchdog started in process %d: threshold %.3f s, signal %d, "
		   "Python %s%s", (int)pid,
		   (double)watchdog_cfg.threshold_ns / NS_PER_SEC,
		   capture_signal_number(),
		   py_present() ? py_version_string() : "not found",
		   py_unavailable() ? " (frames unavailable)" : "");
	/* Request start times come from the coarse clock, which lags by up to
	 * its resolution: wait that much longer so that a request is never
	 * reported before it has really run for the threshold. */
	struct timespec res = {0, 4 * NS_PER_MS};
	clock_getres(CLOCK_MONOTONIC_COARSE, &res);
	const int64_t threshold = watchdog_cfg.threshold_ns +
				  res.tv_sec * NS_PER_SEC + res.tv_nsec;
	loop_threshold = watchdog_cfg.loop_threshold_ns +
			 res.tv_sec * NS_PER_SEC + res.tv_nsec;

	for (;;) {
		uint32_t seen = thread_bell_seen();
		last_words(pid, threshold);
		drain_done(pid);
		if (!py_present())
			py_init(); /* libpython may be loaded late (uWSGI plugin) */
		int64_t now = clock_mono_ns();
		int64_t next = now + threshold;
		int high = atomic_load(&thread_high);
		for (int i = 0; i < high; i++) {
			struct sd_thread *t = &thread_table[i];
			int64_t start;
			uint64_t id = live_request(t, &start);
			if (!id)
				continue;
			struct due *d = &dues[i];
			if (d->id != id) {
				d->id = id;
				d->count = 0;
				d->at = start + threshold;
				d->queue_known = !watchdog_cfg.queue_count;
			}
			if (!d->queue_known && d->count == 0)
				d->at = start + threshold -
					queued_ns(t->fd, t->conn_gen, id, start,
						  &d->queue_known);
			if (d->count < 0)
				continue; /* ignored, or done with */
			if (d->at > now) {
				if (d->at < next)
					next = d->at;
				continue;
			}
			int st = report_thread(t, id, start, now, pid, d->count + 1,
					       NULL, false);
			now = clock_mono_ns();
			if (st != REPORTED) {
				d->count = -1;
				continue;
			}
			d->count++;
			if (!watchdog_cfg.repeat_ns || d->count >= watchdog_cfg.repeat_max) {
				d->count = -1;
				continue;
			}
			d->at += watchdog_cfg.repeat_ns;
			if (d->at <= now)
				d->at = now + watchdog_cfg.repeat_ns;
			if (d->at < next)
				next = d->at;
		}
		drain_stalls(pid);
		next = loop_pass(pid, next);
		/* SLOWDOG_QUEUE=count: a request that waited may be due before
		 * the threshold has passed since its first read, and none tells
		 * the watchdog it began: look often enough. */
		if (watchdog_cfg.queue_count) {
			int64_t look = watchdog_cfg.threshold_ns / 10;
			if (look < 5 * NS_PER_MS)
				look = 5 * NS_PER_MS;
			if (look > NS_PER_SEC)
				look = NS_PER_SEC;
			if (clock_mono_ns() + look < next)
				next = clock_mono_ns() + look;
		}
		drain_done(pid);
		if (drain_stalls(pid))
			next = clock_mono_ns(); /* its starved requests: again */
		if (holding) {
			int64_t at = last_report_ns + RELEASE_AFTER_NS;
			if (clock_mono_ns() >= at)
				release_memory();
			else if (at < next)
				next = at;
		}
		thread_bell_wait(seen, next);
	}
	return NULL;
}

void watchdog_start(struct sd_thread *t)
{
	int expect = 0;
	if (!atomic_compare_exchange_strong(&watchdog_running, &expect, 1))
		return;
	if (slowdog_off)
		return;
	share_join(t);
	sigset_t all, old;
	sigfillset(&all);
	real_pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t th;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	int err = pthread_create(&th, &attr, watchdog_main, NULL);
	pthread_attr_destroy(&attr);
	real_pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		char line[160];
		snprintf(line, sizeof(line),
			 "slowdog: cannot start the watchdog thread (%s); slow "
			 "requests will not be reported", strerror(err));
		sys_warn(line);
	}
}

/*
 * At exit, finished lines still waiting for the watchdog (a job that calls
 * slowdog_end() and returns at once) would be lost: wake it and give it a
 * moment. Costs nothing when no reported request just ended.
 */
__attribute__((destructor)) static void watchdog_exit(void)
{
	if (!atomic_load(&watchdog_running))
		return;
	for (int tries = 0; tries < 200; tries++) {
		bool pending = false;
		int high = atomic_load(&thread_high);
		for (int i = 0; i < high && !pending; i++)
			pending = atomic_load(&thread_table[i].done_id) != 0;
		if (!pending)
			return;
		thread_ring();
		struct timespec ms = {0, NS_PER_MS};
		real_nanosleep(&ms, NULL);
	}
}

void watchdog_atfork_child(void)
{
	atomic_store(&watchdog_running, 0);
	capture_atfork_child();
	/* Clear only what was used: touching the whole tables would cost
	 * every forked worker a megabyte and a half of memory. */
	unsigned used = reported_next < REPORTED_MAX ? reported_next : REPORTED_MAX;
	for (unsigned i = 0; i < used; i++)
		reported[i].id = 0;
	reported_next = 0;
	int high = atomic_load(&thread_high);
	for (int i = 0; i < high; i++)
		dues[i].id = 0;
	report_flush_sources();
}
