/*
 * The table that a master and its workers share, so that a worker's death
 * is never silent: each worker process holds a slot naming the requests
 * its threads have in flight; the master, which reaps the workers, reads
 * the slot of a worker that died and writes one record per request that
 * never finished. It also tells a worker it is about to SIGKILL to write
 * its report first.
 *
 * One MAP_SHARED anonymous region, made in a process the first time it
 * forks (so every child shares it), never unmapped. Slots are claimed by
 * a CAS on pid. Within a slot, each thread of the worker owns one entry
 * (by its index in the thread table): it alone writes req_id and start_ns
 * (release on req_id); the worker's watchdog writes the line (line_id
 * after it, release); the reaper reads.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Everything declared here lives in libslowdog.so itself: reached
 * without the GOT. */
#pragma GCC visibility push(hidden)

#define SHARE_SLOTS 512
#define SHARE_REQS 32   /* threads per worker with an entry */
#define SHARE_LINE 200

enum share_fate {
	SHARE_OPEN = 0,   /* nobody wrote its fate */
	SHARE_WRITTEN,    /* a death record was written for it */
};

struct share_req {
	_Atomic uint64_t req_id;  /* 0: no request in flight */
	int64_t start_ns;         /* CLOCK_MONOTONIC, system-wide */
	_Atomic uint64_t line_id; /* the request line below is req line_id's */
	_Atomic uint32_t fate;    /* enum share_fate, for req_id */
	char line[SHARE_LINE];    /* "GET /x", escaped */
};

struct share_slot {
	_Atomic pid_t pid;        /* 0: free */
	pid_t parent;
	/* Master -> worker: SIGKILL is coming, write your report (a shared
	 * futex word the worker's watchdog sleeps on), and the answer. */
	_Atomic uint32_t bell;
	_Atomic uint32_t want_words;
	_Atomic uint32_t words_done;
	char oom_file[200];       /* the worker's cgroup file of OOM kills, "" */
	long oom_base;            /* its count at the claim */
	/* Worker: the first deadly signal it caught, by whom, when. */
	_Atomic int caught_sig;
	pid_t caught_from;
	int64_t caught_ns;
	/* Master: the signals it sent this worker (the first and the last). */
	_Atomic int sent_first, sent_last;
	int64_t sent_first_ns, sent_last_ns;
	struct share_req req[SHARE_REQS];
};

extern struct share_slot *share_table; /* NULL until the first fork */
extern struct share_slot *share_mine;  /* this process's slot, or NULL */

/* The first fork's prepare handler: makes the table if there is none. */
void share_create(void);

/* A worker, at its first connection: claims a slot. False when there is
 * no table or it is full. */
bool share_claim(void);

/* Child after fork: the parent's slot is not ours. */
void share_atfork_child(void);

/* The entry of thread number i of the thread table, NULL if none. */
struct share_req *share_entry(int i);

/* The slot of a child of this process, NULL if none. */
struct share_slot *share_child(pid_t pid);

/* Marks the slot free. */
void share_release(struct share_slot *s);

/* Wakes the process that sleeps on w (a word of the shared table). */
void share_wake(_Atomic uint32_t *w);

/* Sleeps while *w == seen, until deadline_ns (CLOCK_MONOTONIC). */
void share_wait(_Atomic uint32_t *w, uint32_t seen, int64_t deadline_ns);

#pragma GCC visibility pop
