/* Records of requests that never finished. See deaths.h. */
#include "deaths.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "metrics.h"
#include "real.h"
#include "report.h"
#include "share.h"
#include "sink.h"
#include "sys.h"

static struct config cfg;
static bool loaded;

static const char *env_get(const char *name)
{
	return secure_getenv(name);
}

static const struct config *conf(void)
{
	if (!loaded) {
		/* The workers say what is wrong with the settings. */
		config_load(&cfg, env_get, NULL);
		loaded = true;
	}
	return &cfg;
}

static bool in_flight(const struct share_slot *s)
{
	for (int k = 0; k < SHARE_REQS; k++)
		if (atomic_load_explicit(&s->req[k].req_id, memory_order_acquire))
			return true;
	return false;
}

/* At most a second of waiting in any second: a master with many stuck
 * workers must not stall. */
static int64_t budget_start, budget_used;

void deaths_sending(pid_t pid, int sig)
{
	struct share_slot *s = share_child(pid);
	if (!s || sig == 0)
		return;
	int64_t now = clock_mono_ns();
	if (!atomic_load_explicit(&s->sent_first, memory_order_relaxed)) {
		s->sent_first_ns = now;
		atomic_store_explicit(&s->sent_first, sig, memory_order_release);
	}
	s->sent_last_ns = now;
	atomic_store_explicit(&s->sent_last, sig, memory_order_release);
	if (sig != SIGKILL || !in_flight(s) ||
	    atomic_load_explicit(&s->words_done, memory_order_acquire))
		return;
	int64_t grace = conf()->last_words_ns;
	if (grace <= 0 || conf()->disabled)
		return;
	if (now - budget_start > NS_PER_SEC) {
		budget_start = now;
		budget_used = 0;
	}
	if (grace > NS_PER_SEC - budget_used)
		grace = NS_PER_SEC - budget_used;
	if (grace <= 0)
		return;
	atomic_store_explicit(&s->want_words, 1, memory_order_release);
	share_wake(&s->bell);
	int64_t deadline = now + grace;
	for (;;) {
		uint32_t done = atomic_load_explicit(&s->words_done, memory_order_acquire);
		if (done || clock_mono_ns() >= deadline)
			break;
		share_wait(&s->words_done, done, deadline);
	}
	budget_used += clock_mono_ns() - now;
}

static void out_line(const char *buf, size_t len)
{
	const char *path = conf()->log_path;
	if (strncmp(path, "syslog", 6) == 0) {
		static bool open;
		if (!open) {
			sink_open(path);
			open = true;
		}
		sink_write(buf, len, true);
		return;
	}
	int fd = path[0] ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
					     O_NOFOLLOW | O_NOCTTY, 0600)
			 : 2;
	if (fd < 0)
		fd = 2;
	(void)!real_write(fd, buf, len);
	if (fd != 2)
		real_close(fd);
}

/* statsd's counter of requests that died, by endpoint when known. */
static void count_death(const char *line)
{
	static bool open;
	if (!conf()->statsd[0])
		return;
	if (!open) {
		metrics_open(conf(), sys_warn);
		open = true;
	}
	struct reqinfo info;
	memset(&info, 0, sizeof(info));
	if (line) {
		size_t m = strcspn(line, " ");
		if (m < sizeof(info.method) && line[m] == ' ') {
			memcpy(info.method, line, m);
			snprintf(info.target, sizeof(info.target), "%s", line + m + 1);
			info.proto = PROTO_HTTP;
		}
	}
	metrics_died(line ? &info : NULL);
}

struct how {
	char what[160];    /* "killed by SIGKILL from the parent 1.002 s after SIGABRT" */
	char sig[32];      /* "SIGKILL", "" when it exited */
	int code;          /* exit status, -1 when killed */
	bool core;
	const char *sent_by; /* "parent", "self", "oom", "other", "kernel" */
	long oom_before, oom_after;
};

static void describe(const struct share_slot *s, int status, int64_t now,
		     struct how *h)
{
	memset(h, 0, sizeof(*h));
	h->code = -1;
	h->oom_before = h->oom_after = -1;
	if (WIFEXITED(status)) {
		h->code = WEXITSTATUS(status);
		h->sent_by = "self";
		snprintf(h->what, sizeof(h->what), "exited with status %d", h->code);
		return;
	}
	int sig = WTERMSIG(status);
	h->core = WCOREDUMP(status);
	report_signal_name(sig, h->sig, sizeof(h->sig));
	int sent = atomic_load(&s->sent_last), caught = atomic_load(&s->caught_sig);
	char from[96];
	if (sent == sig) {
		h->sent_by = "parent";
		snprintf(from, sizeof(from), " from the parent");
	} else if (caught == sig && s->caught_from > 0) {
		h->sent_by = s->caught_from == s->pid ? "self" : "other";
		snprintf(from, sizeof(from), " from pid %d", (int)s->caught_from);
	} else if (caught == sig) {
		h->sent_by = "kernel";
		snprintf(from, sizeof(from), " (a crash)");
	} else if (sig == SIGKILL) {
		h->oom_after = sys_oom_kills(s->oom_file);
		h->oom_before = s->oom_base;
		if (h->oom_after > h->oom_before && h->oom_before >= 0) {
			h->sent_by = "oom";
			snprintf(from, sizeof(from), " by the OOM killer (cgroup oom_kill %ld -> %ld)",
				 h->oom_before, h->oom_after);
		} else {
			h->sent_by = "other";
			snprintf(from, sizeof(from), ", not from the parent");
		}
	} else {
		h->sent_by = "other";
		snprintf(from, sizeof(from), ", not from the parent");
	}
	char after[64] = "";
	int first = atomic_load(&s->sent_first);
	if (first && first != sig) {
		char fs[32];
		snprintf(after, sizeof(after), " %.3f s after %s",
			 (double)(s->sent_last_ns - s->sent_first_ns) / NS_PER_SEC,
			 report_signal_name(first, fs, sizeof(fs)));
	} else if (caught && caught != sig) {
		char cs[32];
		snprintf(after, sizeof(after), " %.3f s after %s",
			 (double)(now - s->caught_ns) / NS_PER_SEC,
			 report_signal_name(caught, cs, sizeof(cs)));
	}
	snprintf(h->what, sizeof(h->what), "killed by %s%s%s%s", h->sig, from, after,
		 h->core ? " (core dumped)" : "");
}

static void write_record(const struct share_slot *s, const struct share_req *r,
			 uint64_t id, const struct how *h, int64_t now)
{
	char line[SHARE_LINE + 8];
	bool known = atomic_load_explicit(&r->line_id, memory_order_acquire) == id;
	if (known) {
		memcpy(line, r->line, SHARE_LINE);
		line[SHARE_LINE - 1] = '\0';
	}
	double running = (double)(now - r->start_ns) / NS_PER_SEC;
	char buf[1024];
	int n;
	if (conf()->format == FORMAT_JSON) {
		char t[40];
		time_t sec = (time_t)(clock_real_ns() / NS_PER_SEC);
		struct tm tm;
		gmtime_r(&sec, &tm);
		strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", &tm);
		char req[SHARE_LINE * 2 + 8] = "null";
		if (known) {
			/* The line is escaped already (no control bytes, no
			 * quotes unescaped): only " and \ need a backslash. */
			size_t o = 0;
			req[o++] = '"';
			for (const char *p = line; *p && o < sizeof(req) - 3; p++) {
				if (*p == '"' || *p == '\\')
					req[o++] = '\\';
				req[o++] = *p;
			}
			req[o++] = '"';
			req[o] = '\0';
		}
		char oom[64] = "null", sigf[40] = "null", codef[16] = "null";
		if (h->oom_after >= 0)
			snprintf(oom, sizeof(oom), "[%ld,%ld]", h->oom_before, h->oom_after);
		if (h->sig[0])
			snprintf(sigf, sizeof(sigf), "\"%s\"", h->sig);
		if (h->code >= 0)
			snprintf(codef, sizeof(codef), "%d", h->code);
		n = snprintf(buf, sizeof(buf),
			     "{\"schema\":1,\"type\":\"died\",\"time\":\"%s\","
			     "\"request_id\":\"%d-%llu\",\"pid\":%d,\"written_by\":%d,"
			     "\"running_s\":%.3f,\"death\":{\"signal\":%s,"
			     "\"exit_code\":%s,\"core\":%s,\"sent_by\":\"%s\","
			     "\"oom_kill\":%s,\"text\":\"%s\"},\"request\":%s}\n",
			     t, (int)s->pid, (unsigned long long)id, (int)s->pid,
			     (int)getpid(), running, sigf, codef,
			     h->core ? "true" : "false", h->sent_by, oom, h->what, req);
	} else {
		n = snprintf(buf, sizeof(buf),
			     "slowdog: request %d-%llu never finished: worker %d %s, "
			     "%.3f s into the request: %s\n",
			     (int)s->pid, (unsigned long long)id, (int)s->pid, h->what,
			     running, known ? line : "(not reported before it died)");
	}
	if (n > 0)
		out_line(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	count_death(known ? line : NULL);
}

void deaths_reaped(pid_t pid, int status, bool keep)
{
	if (!WIFEXITED(status) && !WIFSIGNALED(status))
		return; /* stopped or continued */
	struct share_slot *s = share_child(pid);
	if (!s)
		return;
	int64_t now = clock_mono_ns();
	struct how h;
	bool described = false;
	for (int k = 0; k < SHARE_REQS; k++) {
		struct share_req *r = &s->req[k];
		uint64_t id = atomic_load_explicit(&r->req_id, memory_order_acquire);
		uint32_t open = SHARE_OPEN;
		if (!id || !atomic_compare_exchange_strong(&r->fate, &open, SHARE_WRITTEN))
			continue;
		if (!described) {
			describe(s, status, now, &h);
			described = true;
		}
		write_record(s, r, id, &h, now);
	}
	if (!keep)
		share_release(s);
}

void deaths_reaped_info(const siginfo_t *si, bool keep)
{
	int status;
	switch (si->si_code) {
	case CLD_EXITED:
		status = (si->si_status & 0xff) << 8;
		break;
	case CLD_KILLED:
		status = si->si_status & 0x7f;
		break;
	case CLD_DUMPED:
		status = (si->si_status & 0x7f) | 0x80;
		break;
	default:
		return;
	}
	deaths_reaped(si->si_pid, status, keep);
}

void deaths_at_exit(void)
{
	if (!share_table)
		return;
	int64_t deadline = clock_mono_ns() + 100 * NS_PER_MS;
	pid_t me = getpid();
	for (int i = 0; i < SHARE_SLOTS; i++) {
		struct share_slot *s = &share_table[i];
		pid_t pid = atomic_load_explicit(&s->pid, memory_order_acquire);
		if (!pid || s->parent != me || !in_flight(s))
			continue;
		for (;;) {
			siginfo_t si;
			memset(&si, 0, sizeof(si));
			if (real_waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT | WNOHANG) != 0)
				break; /* not our child any more */
			if (si.si_pid == pid) {
				deaths_reaped_info(&si, true);
				break;
			}
			if (clock_mono_ns() >= deadline)
				break;
			struct timespec ms = {0, NS_PER_MS};
			real_nanosleep(&ms, NULL);
		}
	}
}
