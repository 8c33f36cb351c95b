/* Last words: the handlers of deadly signals. See lastwords.h. */
#include "lastwords.h"

#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "real.h"
#include "share.h"
#include "thread.h"

struct lastwords_event lastwords_event;
struct capture_slot lastwords_slot;

static const int watched[] = {SIGABRT, SIGTERM, SIGINT, SIGQUIT,
			      SIGSEGV, SIGBUS, SIGFPE, SIGILL};

/*
 * What the application installed, per signal, as sigaction would have
 * answered it. Written by the interposed sigaction (the application's own
 * calls, which it serializes as it would for libc), read by the handler.
 */
static struct sigaction app[NSIG];
static bool armed;
static int64_t wait_for_ns;
static int64_t threshold;

bool lastwords_watched(int sig)
{
	for (size_t i = 0; i < ARRAY_LEN(watched); i++)
		if (watched[i] == sig)
			return true;
	return false;
}

bool lastwords_armed(void)
{
	return armed;
}

static bool is_fault(int sig)
{
	return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL;
}

/* async-signal-safe: whether a request of this process should have words
 * for sig: any in flight for SIGABRT and crashes, only those past the
 * threshold for the graceful ones. */
static bool words_due(bool all, int64_t now)
{
	int high = atomic_load_explicit(&thread_high, memory_order_acquire);
	for (int i = 0; i < high; i++) {
		struct sd_thread *t = &thread_table[i];
		if (atomic_load_explicit(&t->state, memory_order_acquire) != THREAD_LIVE ||
		    !atomic_load_explicit(&t->req_id, memory_order_acquire) || t->mux)
			continue;
		if (all || now - t->req_start_ns >= threshold)
			return true;
	}
	return false;
}

/* async-signal-safe: the first deadly signal of the process, while a
 * request is due words: record it, snapshot this thread if it serves one,
 * ring the watchdog, and wait for the reports, bounded. */
static void words(int sig, const siginfo_t *si, void *uc)
{
	if (!wait_for_ns)
		return;
	struct lastwords_event *ev = &lastwords_event;
	int64_t now = clock_mono_ns();
	bool all = sig == SIGABRT || is_fault(sig);
	if (atomic_load_explicit(&ev->state, memory_order_acquire) != LW_NONE ||
	    !words_due(all, now))
		return;
	uint32_t expect = LW_NONE;
	if (!atomic_compare_exchange_strong(&ev->state, &expect, LW_TAKING))
		return;
	struct sd_thread *t = thread_self();
	ev->sig = sig;
	ev->from = si->si_code <= 0 ? si->si_pid : 0; /* sent, not the kernel's */
	ev->code = si->si_code;
	ev->addr = (uintptr_t)si->si_addr;
	ev->at_ns = now;
	ev->tid = t ? t->tid : (pid_t)syscall(SYS_gettid);
	ev->all = all;
	ev->snapped = false;
	ev->req_id = t ? atomic_load_explicit(&t->req_id, memory_order_acquire) : 0;
	/* The capture signal is blocked here (our mask), so its slot is not
	 * being filled by this thread; another thread's capture in progress
	 * would share the walker's state: no snapshot then. */
	if (ev->req_id && lastwords_slot.stack &&
	    atomic_load(&capture_slot.state) != SLOT_BUSY) {
		capture_snap(&lastwords_slot, t, uc);
		ev->snapped = true;
	}
	if (share_mine) {
		share_mine->caught_from = ev->from;
		share_mine->caught_ns = now;
		atomic_store_explicit(&share_mine->caught_sig, sig, memory_order_release);
	}
	atomic_store_explicit(&ev->state, LW_PENDING, memory_order_release);
	thread_ring();
	int64_t deadline = now + wait_for_ns;
	for (;;) {
		uint32_t st = atomic_load_explicit(&ev->state, memory_order_acquire);
		int64_t left = deadline - clock_mono_ns();
		if (st == LW_DONE || left <= 0)
			break;
		struct timespec ts = {left / NS_PER_SEC, left % NS_PER_SEC};
		syscall(SYS_futex, &ev->state, FUTEX_WAIT_PRIVATE, st, &ts, NULL, 0);
	}
}

/* async-signal-safe: the default action of sig, as if no handler had
 * been there: the same signal, with the same siginfo. */
static void die_by_default(int sig, siginfo_t *si)
{
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	real_sigaction(sig, &dfl, NULL);
	/* A fault of this very instruction comes back when we return. */
	if (is_fault(sig) && si->si_code > 0)
		return;
	siginfo_t again = *si;
	syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), sig,
		&again);
	/* Blocked while this handler runs (unless SA_NODEFER): delivered,
	 * with its default action, when it returns. */
}

/* async-signal-safe */
static void handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	struct sigaction a = app[sig];
	if (a.sa_flags & SA_RESETHAND) {
		/* The kernel put SIG_DFL back for us: so it is for the
		 * application too. */
		app[sig].sa_handler = SIG_DFL;
		app[sig].sa_flags &= ~(SA_SIGINFO | SA_RESETHAND);
	}
	words(sig, si, uc);
	errno = saved;
	if (a.sa_handler == SIG_IGN)
		return;
	if (a.sa_handler == SIG_DFL) {
		die_by_default(sig, si);
		errno = saved;
		return;
	}
	if (a.sa_flags & SA_SIGINFO)
		a.sa_sigaction(sig, si, uc);
	else
		a.sa_handler(sig);
}

static bool is_ours(const struct sigaction *k)
{
	return (k->sa_flags & SA_SIGINFO) && k->sa_sigaction == handler;
}

/* Installs our handler in front of what act asks for; fills app[sig]. */
static int wrap(int sig, const struct sigaction *act)
{
	struct sigaction w = *act;
	w.sa_sigaction = handler;
	w.sa_flags |= SA_SIGINFO;
	int cap = capture_signal_number();
	if (cap > 0)
		sigaddset(&w.sa_mask, cap);
	if (real_sigaction(sig, &w, NULL) != 0)
		return -1;
	/* As the kernel would answer had act been installed itself. */
	struct sigaction k;
	real_sigaction(sig, NULL, &k);
	struct sigaction view = *act;
	view.sa_flags = (k.sa_flags & ~SA_SIGINFO) | (act->sa_flags & SA_SIGINFO);
	view.sa_restorer = k.sa_restorer;
	sigdelset(&view.sa_mask, SIGKILL);
	sigdelset(&view.sa_mask, SIGSTOP);
	app[sig] = view;
	return 0;
}

void lastwords_arm(int64_t wait_ns, int64_t threshold_ns)
{
	if (armed || wait_ns <= 0)
		return;
	wait_for_ns = wait_ns;
	threshold = threshold_ns;
	for (size_t i = 0; i < ARRAY_LEN(watched); i++) {
		int sig = watched[i];
		struct sigaction k;
		if (real_sigaction(sig, NULL, &k) != 0 || is_ours(&k))
			continue;
		if (!(k.sa_flags & SA_SIGINFO) && k.sa_handler == SIG_IGN)
			continue;
		wrap(sig, &k);
	}
	armed = true;
}

int lastwords_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	struct sigaction k;
	if (real_sigaction(sig, NULL, &k) != 0)
		return -1;
	/* A handler set past us (a raw system call) is the application's. */
	struct sigaction cur = is_ours(&k) ? app[sig] : k;
	if (act) {
		bool ign = !(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_IGN;
		int r = ign ? real_sigaction(sig, act, NULL) : wrap(sig, act);
		if (r != 0)
			return r;
	}
	if (old)
		*old = cur;
	return 0;
}

sighandler_t lastwords_signal(int sig, sighandler_t h)
{
	/* What glibc's signal() installs: BSD semantics. */
	struct sigaction act, old;
	memset(&act, 0, sizeof(act));
	act.sa_handler = h;
	sigemptyset(&act.sa_mask);
	sigaddset(&act.sa_mask, sig);
	act.sa_flags = SA_RESTART;
	if (lastwords_sigaction(sig, &act, &old) != 0)
		return SIG_ERR;
	return old.sa_handler;
}

void lastwords_finish(void)
{
	atomic_store_explicit(&lastwords_event.state, LW_DONE, memory_order_release);
	syscall(SYS_futex, &lastwords_event.state, FUTEX_WAKE_PRIVATE, 64, NULL, NULL, 0);
}

void lastwords_atfork_child(void)
{
	atomic_store(&lastwords_event.state, LW_NONE);
	atomic_store(&lastwords_slot.state, SLOT_IDLE);
}
