/*
 * The connection table and request state machine (conn.c), driven by
 * programs: the input is a sequence of libc calls as preload.c hooks them
 * (accept, read, readv, write, writev, sendfile, a failed write, poll,
 * epoll_ctl, epoll_wait, shutdown, close, close_range, dup2, dup/F_DUPFD,
 * slowdog_begin/end) on a few fake fds, each run on one of three threads
 * (the fuzzer's and two workers that take turns, as in tests/unit/
 * test_conn.c). Read and written bytes are either raw input bytes or one of
 * a few real request/response fragments.
 *
 * After every call:
 *   - a thread's running request belongs to a live connection that carries
 *     it (same gen, same id, owned by that thread, not idle), which the
 *     watchdog can describe, in escaped text;
 *   - a tracked connection is idle exactly when it has no request id;
 *   - a reported request that ended has a duration >= 0;
 * and at the end of the program, once every fd is closed and every label
 * ended, no thread is left with a request.
 *
 * Each op is three bytes or more:
 *   kind, where (thread = bits 0-1 % 3, fd = bits 2-4, fd2 = bits 5-7),
 *   arg, then a payload for reads and writes: arg & 0x80 picks a canned
 *   fragment, else arg bytes of the input follow.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>

#include "conn.h"
#include "fuzz.h"
#include "thread.h"
#include "watchdog.h"

/* ---- fragments ---------------------------------------------------- */

struct bytes {
	const char *s;
	size_t n;
};
#define B(lit) {lit, sizeof(lit) - 1}

static const struct bytes canned_in[] = {
	B("GET /slow?tag=A HTTP/1.1\r\nHost: app.test\r\nUser-Agent: c\r\n"
	  "Accept: */*\r\n\r\n"),
	B("GET /f2 HTTP/1.1\r\nHost: h\r\n\r\nGET /f3 HTTP/1.1\r\n\r\n"),
	B("POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
	B("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"),
	B("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
	B("HEAD / HTTP/1.1\r\n\r\n"),
	B("GET /old HTTP/1.0\r\n\r\n"),
	B("GET /partial HTT"),
	B("P/1.1\r\nHost: x\r\n"),
	B("\r\n"),
	B("\x16\x03\x01\x02\x00\x01\x00"),
	B("\0\x2a\0\0\x0e\0REQUEST_METHOD\x03\0GET\x0b\0REQUEST_URI\x06\0/uwsgi"
	  "\x09\0HTTP_HOST\x01\0h"),
	B("\0\x10\0\0\x0b\0REQUEST_URI\x01\0/"),
	B("GET /a\x1b[2J\rX HTTP/1.1\r\nHost: ev\x1b]0;\x07il\r\n\r\n"),
	B("garbage"),
	B("0123456789"),
};

static const struct bytes canned_out[] = {
	B("HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Length: 5\r\n\r\nhello"),
	B("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
	B("hello"),
	B("HTTP/1.1 100 Continue\r\n\r\n"),
	B("HTTP/1.1 204 No Content\r\n\r\n"),
	B("HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"),
	B("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
	B("3\r\nabc\r\n"),
	B("0\r\n\r\n"),
	B("HTTP/1.0 200 OK\r\n\r\n"),
	B("HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"),
	B("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
	B("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n"
	  "Content-Length: 0\r\n\r\n"),
	B("\x15\x03\x03\x00\x02\x02\x28"),
	B("junk"),
};

#define NCANNED_IN (sizeof(canned_in) / sizeof(canned_in[0]))
#define NCANNED_OUT (sizeof(canned_out) / sizeof(canned_out[0]))

/* Fake fd numbers: four connections, two on either side of a chunk
 * boundary, and one fd that is never accepted (a file or a pipe). */
static const int fds[8] = {1000, 1001, 1002, 1003, 255, 256, 1004, 7};
enum { EPFD_A = 900, EPFD_B = 901, NTHREADS = 3 };

/* ---- ops ------------------------------------------------------------ */

enum op_kind {
	OP_ACCEPT,
	OP_READ,      /* read/recv returned n > 0 bytes */
	OP_READ_NONE, /* read/recv returned 0 or -1 (EAGAIN), or MSG_PEEK */
	OP_READV,
	OP_WRITE,
	OP_WRITEV,
	OP_SENDFILE,
	OP_WRITE_ERR,
	OP_POLL_IN,
	OP_EPOLL_CTL,
	OP_EPOLL_WAIT,
	OP_SHUTDOWN,
	OP_CLOSE,
	OP_CLOSE_RANGE,
	OP_DUP2,
	OP_DUPFD,     /* dup, fcntl(F_DUPFD*) returned fd2 */
	OP_BEGIN,     /* slowdog_begin(label) */
	OP_END,       /* slowdog_end */
	OP_REPORTED,  /* the watchdog reports the thread's request */
	OP_KINDS,
};

/* More reads and writes than anything else: that is what servers do. */
static const uint8_t kind_of[32] = {
	OP_ACCEPT,    OP_ACCEPT,     OP_READ,      OP_READ,      OP_READ,
	OP_READ,      OP_READ_NONE,  OP_READ_NONE, OP_READV,     OP_WRITE,
	OP_WRITE,     OP_WRITE,      OP_WRITE,     OP_WRITEV,    OP_WRITEV,
	OP_SENDFILE,  OP_WRITE_ERR,  OP_POLL_IN,   OP_EPOLL_CTL, OP_EPOLL_CTL,
	OP_EPOLL_WAIT, OP_SHUTDOWN,  OP_CLOSE,     OP_CLOSE,     OP_CLOSE_RANGE,
	OP_DUP2,      OP_DUPFD,      OP_BEGIN,     OP_END,       OP_REPORTED,
	OP_READ,      OP_WRITE,
};

struct op {
	int kind;
	int fd, fd2;
	uint8_t arg;
	const char *buf;
	size_t n;
	size_t cut;   /* readv/writev: first iovec length */
	size_t wrote; /* writev: bytes the call returned (<= n) */
};

static const char *op_names[OP_KINDS] = {
	"accept", "read", "read-none", "readv", "write", "writev", "sendfile",
	"write-err", "poll-in", "epoll_ctl", "epoll_wait", "shutdown", "close",
	"close_range", "dup2", "dupfd", "begin", "end", "reported",
};

static void exec_op(const struct op *o)
{
	struct conn *c = conn_get(o->fd);
	uint32_t g = c ? atomic_load(&c->gen) : 0;
#define STILL() (c && atomic_load(&c->gen) == g)

	switch (o->kind) {
	case OP_ACCEPT:
		conn_accepted(o->fd);
		break;
	case OP_READ:
		if (c)
			conn_read_enter(c);
		if (o->n > 0 && STILL())
			conn_read_done(c, o->fd, o->buf, o->n);
		break;
	case OP_READ_NONE:
		if (c)
			conn_read_enter(c);
		break;
	case OP_READV: {
		struct iovec iov[3] = {
			{.iov_base = (void *)o->buf, .iov_len = o->cut},
			{.iov_base = (void *)(o->buf + o->cut),
			 .iov_len = o->n - o->cut},
			{.iov_base = NULL, .iov_len = 4096}, /* not reached */
		};
		if (c)
			conn_read_enter(c);
		if (o->n > 0 && STILL())
			conn_read_iov(c, o->fd, iov, 3, o->n);
		break;
	}
	case OP_WRITE:
		if (o->n > 0 && STILL())
			conn_write_done(c, o->buf, o->n);
		break;
	case OP_WRITEV: {
		struct iovec iov[2] = {
			{.iov_base = (void *)o->buf, .iov_len = o->cut},
			{.iov_base = (void *)(o->buf + o->cut),
			 .iov_len = o->n - o->cut},
		};
		if (o->wrote > 0 && STILL())
			conn_write_iov(c, iov, 2, o->wrote);
		break;
	}
	case OP_SENDFILE: {
		size_t n = o->arg < 128 ? o->arg : (size_t)1 << (o->arg & 31);
		if (n > 0 && STILL())
			conn_sendfile_done(c, n);
		break;
	}
	case OP_WRITE_ERR: {
		static const int errs[4] = {EPIPE, ECONNRESET, EAGAIN, EINTR};
		if (STILL())
			conn_write_failed(c, errs[o->arg & 3]);
		break;
	}
	case OP_POLL_IN: {
		/* poll or select on fd and fd2, as preload.c makes them: maybe
		 * an event loop's wait; arg & 4 makes fd2 a listener first. */
		if (c)
			conn_wait_input(c);
		if (o->arg & 4)
			conn_listener(o->fd2);
		struct sd_thread *t = thread_self();
		if (!conn_wait_maybe_loop(t))
			break;
		if (o->arg & 1) {
			struct pollfd p[2] = {{.fd = o->fd, .events = POLLIN},
					      {.fd = o->fd2, .events = POLLIN}};
			if (conn_poll_wait(t, p, 2))
				conn_loop_left(t);
		} else if (o->fd >= 0 && o->fd < FD_SETSIZE && o->fd2 >= 0 &&
			   o->fd2 < FD_SETSIZE) {
			fd_set rd;
			FD_ZERO(&rd);
			FD_SET(o->fd, &rd);
			FD_SET(o->fd2, &rd);
			int nfds = (o->fd > o->fd2 ? o->fd : o->fd2) + 1;
			if (conn_select_wait(t, nfds, &rd))
				conn_loop_left(t);
		}
		break;
	}
	case OP_EPOLL_CTL: {
		static const int ops[3] = {EPOLL_CTL_ADD, EPOLL_CTL_MOD,
					   EPOLL_CTL_DEL};
		static const uint32_t evs[4] = {EPOLLIN, EPOLLOUT,
						EPOLLIN | EPOLLOUT, 0};
		if (c)
			conn_epoll_ctl(c, o->arg & 0x10 ? EPFD_B : EPFD_A,
				       ops[(o->arg & 3) % 3], evs[(o->arg >> 2) & 3]);
		break;
	}
	case OP_EPOLL_WAIT:
		conn_epoll_wait(o->arg & 1 ? EPFD_B : EPFD_A);
		break;
	case OP_SHUTDOWN:
		if (c)
			conn_shutdown(c);
		break;
	case OP_CLOSE:
		if (c)
			conn_closed(o->fd);
		break;
	case OP_CLOSE_RANGE: {
		unsigned lo = (unsigned)(o->fd < o->fd2 ? o->fd : o->fd2);
		unsigned hi = (unsigned)(o->fd < o->fd2 ? o->fd2 : o->fd);
		if (o->arg & 1)
			hi = ~0U;
		conn_close_range(lo, hi);
		break;
	}
	case OP_DUP2: /* dup2(fd, fd2), as preload.c hands it on */
		conn_duped(o->fd, o->fd2);
		break;
	case OP_DUPFD:
		conn_duped(o->fd, o->fd2);
		break;
	case OP_BEGIN: {
		char label[300];
		size_t n = o->n < sizeof(label) - 1 ? o->n : sizeof(label) - 1;
		memcpy(label, o->buf, n);
		label[n] = '\0';
		struct sd_thread *t = thread_get();
		if (t)
			conn_begin_label(t, label);
		break;
	}
	case OP_END: {
		struct sd_thread *t = thread_self();
		if (t)
			conn_end_label(t);
		break;
	}
	case OP_REPORTED: {
		struct sd_thread *t = thread_self();
		if (t)
			atomic_store(&t->reported_id, atomic_load(&t->req_id));
		break;
	}
	}
#undef STILL
}

/* ---- worker threads ------------------------------------------------- */

struct wt {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	const struct op *op;
	bool busy;
	struct sd_thread *rec;
};

static struct wt workers[NTHREADS]; /* [0] is the fuzzer's own thread */

static void *wt_main(void *arg)
{
	struct wt *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->busy)
			pthread_cond_wait(&w->cv, &w->mu);
		pthread_mutex_unlock(&w->mu);
		exec_op(w->op);
		pthread_mutex_lock(&w->mu);
		__atomic_store_n(&w->rec, thread_self(), __ATOMIC_RELEASE);
		w->busy = false;
		pthread_cond_broadcast(&w->cv);
	}
	return NULL;
}

static void run_on(int ti, const struct op *o)
{
	struct wt *w = &workers[ti];

	if (ti == 0) {
		exec_op(o);
		__atomic_store_n(&w->rec, thread_self(), __ATOMIC_RELEASE);
		return;
	}
	pthread_mutex_lock(&w->mu);
	w->op = o;
	w->busy = true;
	pthread_cond_broadcast(&w->cv);
	while (w->busy)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

/*
 * FUZZ_CONN_READER=1: one more thread plays the watchdog all along, reading
 * the running requests of the three threads with conn_describe while they
 * change, as the real one does at any time. A torn read shows as a value
 * that is not a whole escaped string. Off by default: its timing makes runs
 * not replay exactly.
 */
static void *reader_main(void *arg)
{
	(void)arg;
	for (;;) {
		for (int i = 0; i < NTHREADS; i++) {
			struct sd_thread *t = __atomic_load_n(&workers[i].rec,
							      __ATOMIC_ACQUIRE);
			if (!t)
				continue;
			uint64_t id = atomic_load(&t->req_id);
			int fd = t->fd;
			uint32_t gen = t->conn_gen;
			struct reqinfo in;
			if (!id || fd < 0 || !conn_describe(fd, gen, id, &in))
				continue;
			fuzz_check_escaped("method (reader)", in.method,
					   sizeof(in.method), false);
			fuzz_check_escaped("target (reader)", in.target,
					   sizeof(in.target), false);
			fuzz_check_escaped("host (reader)", in.host,
					   sizeof(in.host), false);
		}
	}
	return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	slowdog_off = true; /* watchdog_ensure starts no thread */
	if (getenv("FUZZ_CONN_READER")) {
		pthread_t th;
		if (pthread_create(&th, NULL, reader_main, NULL))
			abort();
	}
	for (int i = 1; i < NTHREADS; i++) {
		pthread_mutex_init(&workers[i].mu, NULL);
		pthread_cond_init(&workers[i].cv, NULL);
		if (pthread_create(&workers[i].th, NULL, wt_main, &workers[i]))
			abort();
	}
	return 0;
}

/* ---- invariants ----------------------------------------------------- */

static size_t step; /* for messages */

static void check_thread(int ti)
{
	struct sd_thread *t = workers[ti].rec;

	if (!t)
		return;
	uint64_t done = atomic_load(&t->done_id);
	if (done) {
		FUZZ_CHECK(done == atomic_load(&t->reported_id),
			   "step %zu: thread %d finished %llu, reported %llu",
			   step, ti, (unsigned long long)done,
			   (unsigned long long)atomic_load(&t->reported_id));
		FUZZ_CHECK(t->done_ns >= 0,
			   "step %zu: thread %d: request %llu took %lld ns", step,
			   ti, (unsigned long long)done, (long long)t->done_ns);
		atomic_store(&t->done_id, 0); /* as the watchdog takes it */
	}
	uint64_t id = atomic_load(&t->req_id);
	if (!id)
		return;
	if (t->fd == -1) {
		fuzz_check_escaped("label", t->label, sizeof(t->label), true);
		return;
	}
	struct conn *c = conn_get(t->fd);
	FUZZ_CHECK(c != NULL, "step %zu: thread %d: request %llu on gone fd %d",
		   step, ti, (unsigned long long)id, t->fd);
	FUZZ_CHECK(atomic_load(&c->gen) == t->conn_gen,
		   "step %zu: thread %d: request %llu on fd %d: stale gen", step,
		   ti, (unsigned long long)id, t->fd);
	FUZZ_CHECK(c->req_id == id,
		   "step %zu: thread %d runs %llu, fd %d carries %llu", step, ti,
		   (unsigned long long)id, t->fd, (unsigned long long)c->req_id);
	FUZZ_CHECK(c->owner == t,
		   "step %zu: thread %d runs %llu on fd %d owned by another",
		   step, ti, (unsigned long long)id, t->fd);
	FUZZ_CHECK(c->state != CONN_IDLE,
		   "step %zu: thread %d runs %llu on idle fd %d", step, ti,
		   (unsigned long long)id, t->fd);
	struct reqinfo in;
	FUZZ_CHECK(conn_describe(t->fd, t->conn_gen, id, &in),
		   "step %zu: thread %d: request %llu cannot be described", step,
		   ti, (unsigned long long)id);
	fuzz_check_escaped("method", in.method, sizeof(in.method), false);
	fuzz_check_escaped("target", in.target, sizeof(in.target), false);
	fuzz_check_escaped("host", in.host, sizeof(in.host), false);
}

static void check_conn(int fd)
{
	struct conn *c = conn_get(fd);

	if (!c)
		return;
	FUZZ_CHECK(c->fd == fd, "slot of fd %d says fd %d", fd, c->fd);
	FUZZ_CHECK(c->state <= CONN_RESP, "fd %d: state %u", fd, c->state);
	FUZZ_CHECK((c->state == CONN_IDLE) == (c->req_id == 0),
		   "step %zu: fd %d: state %u with request %llu", step, fd,
		   c->state, (unsigned long long)c->req_id);
	FUZZ_CHECK(c->cur <= 1 && c->fill <= 1, "fd %d: cur %u fill %u", fd,
		   c->cur, c->fill);
}

static void check_all(void)
{
	for (int i = 0; i < NTHREADS; i++)
		check_thread(i);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		check_conn(fds[i]);
}

/* ---- the program ---------------------------------------------------- */

static int trace = -1; /* FUZZ_CONN_TRACE=1: print each op */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t i = 0;

	if (trace < 0)
		trace = getenv("FUZZ_CONN_TRACE") != NULL;
	for (step = 0; i + 3 <= size && step < 4000; step++) {
		struct op o = {0};
		uint8_t where = data[i + 1];
		int ti = (where & 3) % NTHREADS;

		o.kind = kind_of[data[i] & 31];
		o.fd = fds[(where >> 2) & 7];
		o.fd2 = fds[(where >> 5) & 7];
		o.arg = data[i + 2];
		i += 3;
		if (o.kind == OP_READ || o.kind == OP_READV || o.kind == OP_WRITE ||
		    o.kind == OP_WRITEV || o.kind == OP_BEGIN) {
			bool out = o.kind == OP_WRITE || o.kind == OP_WRITEV;
			if (o.arg & 0x80) {
				const struct bytes *b =
					out ? &canned_out[(o.arg & 0x7f) % NCANNED_OUT]
					    : &canned_in[(o.arg & 0x7f) % NCANNED_IN];
				o.buf = b->s;
				o.n = b->n;
			} else {
				o.n = o.arg;
				if (o.n > size - i)
					o.n = size - i;
				o.buf = (const char *)data + i;
				i += o.n;
			}
			/* Where the iovecs split, and how much a writev wrote:
			 * from the data, so that they replay. */
			o.cut = o.n ? (o.arg * 7u + o.n) % (o.n + 1) : 0;
			o.wrote = o.n;
			if (o.kind == OP_WRITEV && (o.arg & 0x40) && o.n)
				o.wrote = (o.arg * 13u) % o.n + 1;
		}
		if (trace)
			fprintf(stderr, "step %zu: thread %d %s fd %d fd2 %d arg %#x "
				"n %zu\n", step, ti, op_names[o.kind], o.fd, o.fd2,
				o.arg, o.n);
		run_on(ti, &o);
		check_all();
	}

	/* Everything closed and every label ended: nothing may be running. */
	struct op end = {.kind = OP_END};
	for (int t = 0; t < NTHREADS; t++)
		run_on(t, &end);
	conn_close_range(0, 4095);
	check_all();
	for (int t = 0; t < NTHREADS; t++) {
		struct sd_thread *r = workers[t].rec;
		if (!r)
			continue;
		FUZZ_CHECK(atomic_load(&r->req_id) == 0,
			   "thread %d still runs request %llu on fd %d after all "
			   "closed", t, (unsigned long long)atomic_load(&r->req_id),
			   r->fd);
		/* An event loop stays one for good; the next program starts
		 * with plain threads. */
		r->mux = false;
		atomic_store(&r->reported_id, 0);
		atomic_store(&r->done_id, 0);
	}
	return 0;
}
