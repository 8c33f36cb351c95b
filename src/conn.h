/*
 * The connection table and the request state machine.
 *
 * One process-wide table indexed by fd, two levels (chunks of 256 slots
 * mapped on first use), so memory follows the highest fd in use. Only fds
 * returned by accept/accept4 in this process are tracked. A slot's gen
 * tells a connection from a later one on the same fd number.
 *
 * Each slot is written by the thread operating on its fd (servers never
 * read one socket from two threads at once); the watchdog only reads a
 * slot's request text, under info_seq (a seqlock). Every index into the
 * slot is bounds-checked, so even a torn update can't overrun it.
 *
 * The hooks below are called by the interposer (preload.c) around the real
 * call: no system call, no lock, no allocation (except mapping a chunk on
 * accept of a new range of fds).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <sys/select.h>
#include <sys/uio.h>

#include "common.h"
#include "http.h"
#include "reqinfo.h"
#include "thread.h"
#include "uwsgi.h"

/* Everything declared here lives in libslowdog.so itself: reached
 * without the GOT. */
#pragma GCC visibility push(hidden)

struct sd_thread;

enum conn_state {
	CONN_IDLE = 0, /* between requests */
	CONN_REQ,      /* request started, no response yet */
	CONN_RESP,     /* response started */
};

struct conn {
	_Atomic uint32_t gen; /* 0: not a tracked connection */
	uint32_t gen_last;    /* the last gen this slot gave: gens are told
	                         apart per slot, with the fd */
	uint8_t state;        /* enum conn_state */
	uint8_t cur;          /* info[cur] describes the current request */
	bool next_ready;      /* info[cur ^ 1] holds a pipelined request */
	bool parse_off;       /* request parsing stopped (error or done) */
	int fd;
	int epfd;             /* epoll set the fd was last added to, -1 */
	uint8_t fill;         /* info[fill] is being filled by the parser */
	bool resp_unframed;   /* response framing unknown: ends by other signs */
	bool pipelined;       /* the current request was started from bytes
	                         read with the previous one, not by a read */
	uint16_t lazy_len;    /* >0: info[cur] is the head kept in
	                         info[cur ^ 1], not parsed yet (conn_lazy) */
	bool upgraded;        /* a loop thread answered 101: not HTTP any more,
	                         no further request on it */
	bool ep_in;           /* in epfd for input only (no EPOLLOUT) */
	bool lazy_uwsgi;      /* lazy_len bytes of a uwsgi packet are kept
	                         in info[] whole (conn_lazy_uwsgi) */
	uintptr_t glet;       /* loop threads: the greenlet current when the
	                         request began (glet.h), 0 unknown */
	struct sd_thread *owner;
	uint64_t req_id;
	int64_t start_ns;
	int64_t last_write_ns;
	union {
		struct http_req http;
		struct uwsgi_req uwsgi;
	} rp;
	struct http_resp resp;
	_Atomic uint32_t info_seq; /* odd while info[] is being written */
	/* info[cur ^ 1] holds the next (pipelined) request, or, while
	 * lazy_len > 0, the current request's head as it was read: a head that
	 * came whole in the read that began its request, parsed only if it
	 * must be (by the watchdog when it describes the request, or here when
	 * more bytes come before the response). */
	struct reqraw info[2];

	/*
	 * Requests of loop threads are reported from here (not from the
	 * thread's record, which holds one request). Not cleared with the
	 * slot: ids are unique in the process. The watchdog stores
	 * reported_id (release) when it reports the request; req_end then
	 * stores done_ns, then done_id (release), and rings.
	 */
	_Atomic uint64_t reported_id;
	int64_t done_ns;
	_Atomic uint64_t done_id;
	/* The watchdog's own: when the request wd_id is next due. */
	uint64_t wd_id;
	int wd_count;   /* reports so far; -1: no more */
	int64_t wd_at;
	uint64_t wd_starved;     /* the stall that starves it now, 0: none */
	int64_t wd_starved_from; /* since when (its start or the stall's) */
	int64_t wd_starved_ns;   /* starved by stalls that ended, in all */
};

/* Where a kept head is, and how long it can be. */
#define CONN_LAZY_MAX sizeof(struct reqraw)
static inline char *conn_lazy(struct conn *c)
{
	return (char *)&c->info[(c->cur & 1) ^ 1];
}

/* A uwsgi packet (header and vars, no more) that came whole in the read
 * that began its request is kept as read, parsed only if it must be (by
 * the watchdog when it describes the request, or here when the
 * connection starts another request): it takes the whole of info[], as a
 * uwsgi connection carries one request at a time, never pipelined. Its
 * first byte (modifier1, 0) reads as info[0].proto, PROTO_UNKNOWN. */
#define CONN_LAZY_UWSGI_MAX (2 * sizeof(struct reqraw))
static inline char *conn_lazy_uwsgi(struct conn *c)
{
	return (char *)c->info;
}

#define CONN_CHUNK_BITS 8
#define CONN_CHUNK (1 << CONN_CHUNK_BITS)
#define CONN_CHUNKS 4096 /* fds below 1 Mi */

extern _Atomic(struct conn *) conn_chunks[CONN_CHUNKS];

/* async-signal-safe: the tracked connection on fd, or NULL. */
static inline struct conn *conn_get(int fd)
{
	if ((unsigned)fd >= CONN_CHUNKS * CONN_CHUNK)
		return NULL;
	struct conn *chunk = atomic_load_explicit(
		&conn_chunks[(unsigned)fd >> CONN_CHUNK_BITS], memory_order_acquire);
	if (!chunk)
		return NULL;
	struct conn *c = &chunk[fd & (CONN_CHUNK - 1)];
	return atomic_load_explicit(&c->gen, memory_order_relaxed) ? c : NULL;
}

/* Hooks, each called on the thread making the call. */
void conn_accepted(int fd);                /* accept/accept4 returned fd */
void conn_read_enter_slow(struct conn *c);
/* A read-family call enters: ends an answered request, forgets an unserved
 * pipelined one. */
static inline void conn_read_enter(struct conn *c)
{
	if (c->state == CONN_RESP || (c->state == CONN_REQ && c->pipelined))
		conn_read_enter_slow(c);
}
/* Bytes read on c (n > 0), which begin a request on an idle connection:
 * true then, and the entry points see that the watchdog runs and that the
 * thread's Python state is known. Inline, so that telling the two apart
 * costs the caller nothing more. */
void conn_read_begin(struct conn *c, const void *buf, size_t n);
void conn_read_more(struct conn *c, const void *buf, size_t n);
static inline bool conn_read_done(struct conn *c, int fd, const void *buf, size_t n)
{
	(void)fd;
	if (n == 0)
		return false;
	if (c->state == CONN_IDLE) {
		if (c->upgraded)
			return false; /* past a 101: not HTTP any more */
		conn_read_begin(c, buf, n);
		return true;
	}
	conn_read_more(c, buf, n);
	return false;
}
void conn_read_iov_begin(struct conn *c, const struct iovec *iov, int cnt, size_t n);
void conn_read_iov_more(struct conn *c, const struct iovec *iov, int cnt, size_t n);
static inline bool conn_read_iov(struct conn *c, int fd, const struct iovec *iov,
				 int cnt, size_t n)
{
	(void)fd;
	if (n == 0)
		return false;
	if (c->state == CONN_IDLE) {
		if (c->upgraded)
			return false; /* past a 101: not HTTP any more */
		conn_read_iov_begin(c, iov, cnt, n);
		return true;
	}
	conn_read_iov_more(c, iov, cnt, n);
	return false;
}
void conn_wait_input(struct conn *c);      /* poll/select for input on fd */
/* accept/accept4 returned a connection from listener fd. */
void conn_listener(int fd);
/* A poll/select wait could be an event loop's: the thread is one already
 * (not an epoll one), or it has a request or serves many. A few loads:
 * every poll and select of thread servers comes here. */
static inline bool conn_wait_maybe_loop(const struct sd_thread *t)
{
	if (!t)
		return false;
	if (t->loop)
		return t->loop_epfd < 0;
	return t->mux || atomic_load_explicit(&t->req_id, memory_order_relaxed);
}
/* Then: true if it is its event loop's wait (conn_loop_left after it). */
bool conn_poll_wait(struct sd_thread *t, const struct pollfd *p, nfds_t n);
bool conn_select_wait(struct sd_thread *t, int nfds, const fd_set *rd);
/* The thread waits on epfd: true if that is its event loop's wait
 * (conn_loop_left after it). Inline for the two usual cases: a thread
 * with no request in hand (a sync worker waiting for its listener), and a
 * known event loop's wait in its own set. */
bool conn_epoll_wait_slow(struct sd_thread *t, int epfd);
void conn_stall_end(struct sd_thread *t);
static inline void conn_loop_enter(struct sd_thread *t)
{
	if (__builtin_expect(atomic_load_explicit(&t->stall_at, memory_order_relaxed) != 0, 0))
		conn_stall_end(t);
	atomic_store_explicit(&t->in_loop_wait, 1, memory_order_release);
}
static inline bool conn_epoll_wait(int epfd)
{
	struct sd_thread *t = thread_self();
	if (!t)
		return false;
	t->last_epfd = epfd;
	if (t->loop && t->loop_epfd == epfd) {
		conn_loop_enter(t);
		return true;
	}
	if (!atomic_load_explicit(&t->req_id, memory_order_relaxed) && !t->mux)
		return false;
	return conn_epoll_wait_slow(t, epfd);
}
/* A loop thread's wait returned. Leaves errno as it was. */
static inline void conn_loop_left(struct sd_thread *t)
{
	atomic_store_explicit(&t->loop_left_ns, clock_coarse_ns(), memory_order_relaxed);
	atomic_store_explicit(&t->in_loop_wait, 0, memory_order_release);
}
void conn_epoll_ctl(struct conn *c, int epfd, int op, uint32_t events);
void conn_write_first(struct conn *c, const void *buf, size_t n);
void conn_write_iov_first(struct conn *c, const struct iovec *iov, int cnt,
			  size_t n);
/* A response under way whose end slowdog does not look for (it ends at
 * the server's next step): each further write only notes its time.
 * Inline, so that the calls after a response's first cost the caller a
 * compare and a clock read. */
static inline bool conn_write_noted(struct conn *c, size_t n)
{
	if (n != 0 && c->resp_unframed && c->state == CONN_RESP) {
		c->last_write_ns = clock_coarse_ns();
		return true;
	}
	return false;
}
static inline void conn_write_done(struct conn *c, const void *buf, size_t n)
{
	if (!conn_write_noted(c, n))
		conn_write_first(c, buf, n);
}
static inline void conn_write_iov(struct conn *c, const struct iovec *iov,
				  int cnt, size_t n)
{
	if (!conn_write_noted(c, n))
		conn_write_iov_first(c, iov, cnt, n);
}
void conn_sendfile_done(struct conn *c, size_t n);
void conn_write_failed(struct conn *c, int err); /* EPIPE, ECONNRESET */
void conn_shutdown(struct conn *c);
void conn_closed(int fd);                  /* close, dup2 over, ... */
void conn_close_range(unsigned lo, unsigned hi);
/* newfd now refers to what oldfd refers to (dup, dup2, dup3,
 * fcntl F_DUPFD): whatever newfd was is closed, and it is a connection if
 * oldfd is one. */
void conn_duped(int oldfd, int newfd);

/* The thread starts explicit work (slowdog_begin) / ends it. */
uint64_t conn_begin_label(struct sd_thread *t, const char *label);
void conn_end_label(struct sd_thread *t);

/* Watchdog: copies the request's description if fd still carries the
 * connection gen and request req_id. */
bool conn_describe(int fd, uint32_t gen, uint64_t req_id, struct reqinfo *out);

/* Watchdog: the connection on fd, tracked or not (NULL: never mapped).
 * Inline: the watchdog asks for every slot of the table at each pass over
 * an event loop's connections. */
static inline struct conn *conn_slot(int fd)
{
	if ((unsigned)fd >= CONN_CHUNKS * CONN_CHUNK)
		return NULL;
	struct conn *chunk = atomic_load_explicit(
		&conn_chunks[(unsigned)fd >> CONN_CHUNK_BITS], memory_order_acquire);
	return chunk ? &chunk[fd & (CONN_CHUNK - 1)] : NULL;
}
/* Watchdog: one past the highest fd the table has room for so far. */
int conn_fd_limit(void);

/* Child after fork: forget every connection. */
void conn_atfork_child(void);

/* A request id for a thread without a record (see thread_next_id);
 * exposed for unit tests. */
uint64_t conn_next_id(void);

#pragma GCC visibility pop
