/* The table a master and its workers share. See share.h. */
#include "share.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "sys.h"

struct share_slot *share_table;
struct share_slot *share_mine;

void share_create(void)
{
	if (share_table)
		return;
	void *p = mmap(NULL, sizeof(struct share_slot) * SHARE_SLOTS,
		       PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p != MAP_FAILED)
		share_table = p;
}

bool share_claim(void)
{
	if (!share_table)
		return false;
	if (share_mine)
		return true;
	pid_t me = getpid(), parent = getppid();
	for (int i = 0; i < SHARE_SLOTS; i++) {
		struct share_slot *s = &share_table[i];
		pid_t expect = 0;
		if (atomic_load_explicit(&s->pid, memory_order_relaxed) != 0 ||
		    !atomic_compare_exchange_strong(&s->pid, &expect, me))
			continue;
		s->parent = parent;
		if (!sys_oom_file(s->oom_file, sizeof(s->oom_file)))
			s->oom_file[0] = '\0';
		s->oom_base = sys_oom_kills(s->oom_file);
		atomic_store(&s->want_words, 0);
		atomic_store(&s->words_done, 0);
		atomic_store(&s->caught_sig, 0);
		atomic_store(&s->sent_first, 0);
		atomic_store(&s->sent_last, 0);
		for (int k = 0; k < SHARE_REQS; k++) {
			atomic_store(&s->req[k].req_id, 0);
			atomic_store(&s->req[k].line_id, 0);
			atomic_store(&s->req[k].fate, SHARE_OPEN);
		}
		share_mine = s;
		return true;
	}
	return false;
}

void share_atfork_child(void)
{
	share_mine = NULL;
}

struct share_req *share_entry(int i)
{
	return share_mine && i >= 0 && i < SHARE_REQS ? &share_mine->req[i] : NULL;
}

struct share_slot *share_child(pid_t pid)
{
	if (!share_table || pid <= 0)
		return NULL;
	pid_t me = getpid();
	for (int i = 0; i < SHARE_SLOTS; i++) {
		struct share_slot *s = &share_table[i];
		if (atomic_load_explicit(&s->pid, memory_order_acquire) == pid &&
		    s->parent == me)
			return s;
	}
	return NULL;
}

void share_release(struct share_slot *s)
{
	atomic_store_explicit(&s->pid, 0, memory_order_release);
}

void share_wake(_Atomic uint32_t *w)
{
	atomic_fetch_add_explicit(w, 1, memory_order_release);
	syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

void share_wait(_Atomic uint32_t *w, uint32_t seen, int64_t deadline_ns)
{
	struct timespec ts = {
		.tv_sec = deadline_ns / NS_PER_SEC,
		.tv_nsec = deadline_ns % NS_PER_SEC,
	};
	syscall(SYS_futex, w, FUTEX_WAIT_BITSET, seen, &ts, NULL,
		FUTEX_BITSET_MATCH_ANY);
}
