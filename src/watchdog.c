/* The watchdog thread. See watchdog.h. */
#include "watchdog.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "capture.h"
#include "common.h"
#include "conn.h"
#include "preload.h"
#include "python.h"
#include "report.h"
#include "sink.h"
#include "symbols.h"
#include "thread.h"

struct config watchdog_cfg;
bool slowdog_off;

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static _Atomic int running;     /* 0: no thread in this process */
static _Atomic uint32_t kick_word;

static void warn_line(const char *line)
{
	char buf[1100];
	int n = snprintf(buf, sizeof(buf), "%s\n", line);
	if (n > 0)
		(void)!write(2, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static const char *env_get(const char *name)
{
	return secure_getenv(name);
}

static void setup(void)
{
	config_load(&watchdog_cfg, env_get, warn_line);
	if (watchdog_cfg.disabled) {
		slowdog_off = true;
		return;
	}
	capture_setup(&watchdog_cfg, warn_line);
}

void watchdog_setup(void)
{
	pthread_once(&setup_once, setup);
}

void watchdog_kick(void)
{
	atomic_fetch_add_explicit(&kick_word, 1, memory_order_release);
	syscall(SYS_futex, &kick_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- reported requests, for their "finished" lines ---- */

#define REPORTED_MAX 1024
static struct reported {
	uint64_t id;
	char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
} reported[REPORTED_MAX];
static unsigned reported_next;

static void reported_add(uint64_t id, const char *line)
{
	struct reported *r = &reported[reported_next++ % REPORTED_MAX];
	r->id = id;
	snprintf(r->line, sizeof(r->line), "%s", line);
}

static const char *reported_take(uint64_t id)
{
	for (int i = 0; i < REPORTED_MAX; i++)
		if (reported[i].id == id) {
			reported[i].id = 0;
			return reported[i].line;
		}
	return NULL;
}

static char *report_buf;
#define REPORT_BUF (1 << 20)

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
		const char *req = reported_take(id);
		if (!req)
			continue;
		char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 128];
		size_t n = report_finished(line, sizeof(line), pid, id, total, req);
		sink_write(line, n);
	}
}

static void report_thread(struct sd_thread *t, uint64_t id, int64_t start,
			  int64_t now, pid_t pid)
{
	static struct capture cap;
	struct reqinfo info;
	bool have = t->fd >= 0 && conn_describe(t->fd, t->conn_gen, id, &info);
	const char *label = t->fd < 0 ? t->label : NULL;

	atomic_store_explicit(&t->reported_id, id, memory_order_release);
	capture_thread(t, &cap);
	/* It ended while we looked: the stack may already be the next
	 * request's. Show nothing rather than a wrong stack; its finished
	 * line is skipped too (it is not in the reported table). */
	if (atomic_load_explicit(&t->req_id, memory_order_acquire) != id)
		return;

	int64_t real_now = clock_real_ns();
	int64_t mono_now = clock_mono_ns();
	struct report r = {
		.id = id,
		.pid = pid,
		.tid = t->tid,
		.now_real_ns = real_now,
		.start_real_ns = real_now - (mono_now - start),
		.running_ns = now - start,
		.info = have ? &info : NULL,
		.label = label,
		.cap = &cap,
	};
	symbols_refresh();
	size_t n = report_format(report_buf, REPORT_BUF, &r, &watchdog_cfg);
	sink_write(report_buf, n);
	char line[REQ_METHOD_MAX + REQ_TARGET_MAX + 8];
	report_request_line(line, sizeof(line), r.info, label);
	reported_add(id, line);
}

static void wait_until(int64_t deadline_ns, uint32_t seen)
{
	struct timespec ts = {
		.tv_sec = deadline_ns / NS_PER_SEC,
		.tv_nsec = deadline_ns % NS_PER_SEC,
	};
	syscall(SYS_futex, &kick_word, FUTEX_WAIT_BITSET_PRIVATE, seen, &ts,
		NULL, FUTEX_BITSET_MATCH_ANY);
}

static void *watchdog_main(void *arg)
{
	(void)arg;
	thread_mark_internal();
	pthread_setname_np(pthread_self(), "slowdog");
	py_init();
	report_buf = mmap(NULL, REPORT_BUF, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (report_buf == MAP_FAILED || !capture_thread_init(&watchdog_cfg)) {
		warn_line("slowdog: out of memory; slow requests will not be reported");
		return NULL;
	}
	sink_open(watchdog_cfg.log_path);
	pid_t pid = getpid();
	/* Request start times come from the coarse clock, which lags by up to
	 * its resolution: wait that much longer so that a request is never
	 * reported before it has really run for the threshold. */
	struct timespec res = {0, 4 * NS_PER_MS};
	clock_getres(CLOCK_MONOTONIC_COARSE, &res);
	const int64_t threshold = watchdog_cfg.threshold_ns +
				  res.tv_sec * NS_PER_SEC + res.tv_nsec;

	for (;;) {
		uint32_t seen = atomic_load_explicit(&kick_word, memory_order_acquire);
		drain_done(pid);
		if (!py_present())
			py_init(); /* libpython may be loaded late (uWSGI plugin) */
		int64_t now = clock_mono_ns();
		int64_t next = now + threshold;
		int high = atomic_load(&thread_high);
		for (int i = 0; i < high; i++) {
			struct sd_thread *t = &thread_table[i];
			if (atomic_load_explicit(&t->state, memory_order_acquire) != THREAD_LIVE)
				continue;
			uint64_t id = atomic_load_explicit(&t->req_id, memory_order_acquire);
			if (!id || t->mux)
				continue;
			int64_t start = t->req_start_ns;
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&t->req_id, memory_order_relaxed) != id)
				continue;
			if (atomic_load_explicit(&t->reported_id, memory_order_relaxed) == id)
				continue;
			int64_t due = start + threshold;
			if (due <= now) {
				report_thread(t, id, start, now, pid);
				now = clock_mono_ns();
			} else if (due < next) {
				next = due;
			}
		}
		drain_done(pid);
		wait_until(next, seen);
	}
	return NULL;
}

void watchdog_ensure(void)
{
	if (likely(atomic_load_explicit(&running, memory_order_acquire)))
		return;
	int expect = 0;
	if (!atomic_compare_exchange_strong(&running, &expect, 1))
		return;
	if (slowdog_off)
		return;
	sigset_t all, old;
	sigfillset(&all);
	preload_real_sigmask(SIG_SETMASK, &all, &old);
	pthread_t th;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	int err = pthread_create(&th, &attr, watchdog_main, NULL);
	pthread_attr_destroy(&attr);
	preload_real_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		char line[160];
		snprintf(line, sizeof(line),
			 "slowdog: cannot start the watchdog thread (%s); slow "
			 "requests will not be reported", strerror(err));
		warn_line(line);
	}
}

void watchdog_atfork_child(void)
{
	atomic_store(&running, 0);
	atomic_store(&kick_word, 0);
	capture_atfork_child();
	memset(reported, 0, sizeof(reported));
	report_flush_sources();
}
