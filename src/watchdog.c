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

#include "capture.h"
#include "capture_sig.h"
#include "common.h"
#include "conn.h"
#include "lastwords.h"
#include "metrics.h"
#include "python.h"
#include "real.h"
#include "report.h"
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
	capture_setup(&watchdog_cfg, sys_warn);
	/* After the capture signal is known: it is kept out of the deadly
	 * signals' handlers. */
	lastwords_arm(watchdog_cfg.last_words_ns, watchdog_cfg.threshold_ns);
	/* Before the first request, so that every thread finds its entry. */
	share_join(NULL);
	/* Now, so that the first request already records its thread's Python
	 * thread state (uWSGI's workers have one thread state each). */
	py_init();
}

void watchdog_setup(void)
{
	pthread_once(&setup_once, setup);
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
		char line[2 * (REQ_METHOD_MAX + REQ_TARGET_MAX + REQ_HOST_MAX) + 512];
		size_t n = report_finished(line, sizeof(line), &f, &watchdog_cfg);
		sink_write(line, n, false);
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
	};
	symbols_refresh();
	size_t n = report_format(report_buf, REPORT_BUF, &r, &watchdog_cfg);
	sink_write(report_buf, n, true);
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

/* The request t serves (0: none, or a thread never reported: an event
 * loop's), with its start, read consistently. */
static uint64_t live_request(struct sd_thread *t, int64_t *start)
{
	if (atomic_load_explicit(&t->state, memory_order_acquire) != THREAD_LIVE)
		return 0;
	uint64_t id = atomic_load_explicit(&t->req_id, memory_order_acquire);
	if (!id || t->mux)
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
			}
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
		drain_done(pid);
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
