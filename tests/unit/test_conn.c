/*
 * The connection table and request state machine (conn.c), driven by the
 * call sequences the servers really make (research/servers.md), replayed
 * on real threads so that thread ownership is what the interposer sees.
 *
 * Each hook is called the way preload.c calls it around the real libc call
 * (enter before, done after with what the call returned). No real fd is
 * needed: connections are fake fd numbers from 1000 on.
 *
 * Tests marked KNOWN BUG describe a failing sequence in conn.c; they are
 * meant to fail until conn.c is fixed (see the comment on each). Until the
 * keep-alive one (keepalive_second_request_is_its_own) is fixed, every
 * scenario with a second request on one connection fails with it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>

#include "common.h"
#include "conn.h"
#include "thread.h"
#include "watchdog.h"

/* ---------------------------------------------------------------------
 * Server threads: each runs the steps given to it, one at a time, while
 * the test thread waits. Steps on different threads thus happen in the
 * order the test writes them, on threads with their own records.
 * --------------------------------------------------------------------- */

struct wt {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*fn)(void *);
	void *arg;
	bool busy, quit;
	struct sd_thread *rec; /* thread_self() after the last step */
};

static void *wt_main(void *arg)
{
	struct wt *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->busy && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->quit)
			break;
		pthread_mutex_unlock(&w->mu);
		w->fn(w->arg);
		pthread_mutex_lock(&w->mu);
		w->rec = thread_self();
		w->busy = false;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void wt_start(struct wt *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	cr_assert_eq(pthread_create(&w->th, NULL, wt_main, w), 0);
}

static void wt_run(struct wt *w, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&w->mu);
	w->fn = fn;
	w->arg = arg;
	w->busy = true;
	pthread_cond_broadcast(&w->cv);
	while (w->busy)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

static void wt_stop(struct wt *w)
{
	pthread_mutex_lock(&w->mu);
	w->quit = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->th, NULL);
}

/* M: a worker's main thread; P1..P3: pool threads (or any other thread). */
static struct wt wm, wp1, wp2, wp3;
#define M (&wm)
#define P1 (&wp1)
#define P2 (&wp2)
#define P3 (&wp3)

static void setup(void)
{
	slowdog_off = true; /* watchdog_ensure starts no thread */
	wt_start(M);
	wt_start(P1);
	wt_start(P2);
	wt_start(P3);
}

static void teardown(void)
{
	wt_stop(M);
	wt_stop(P1);
	wt_stop(P2);
	wt_stop(P3);
}

TestSuite(conn, .init = setup, .fini = teardown, .timeout = 60);

/* ---------------------------------------------------------------------
 * One step = one libc call as preload.c hooks it.
 * --------------------------------------------------------------------- */

enum op_kind {
	OP_ACCEPT,      /* accept4 returned fd */
	OP_READ,        /* read/recv returned n > 0 bytes */
	OP_READ_RET,    /* read/recv returned ret (0: EOF, -1: EAGAIN) */
	OP_READV,       /* readv/recvmsg returned n into iov */
	OP_WRITE,       /* write/send wrote n bytes */
	OP_WRITEV,      /* writev/sendmsg wrote n bytes of iov */
	OP_SENDFILE,    /* sendfile64 sent n bytes */
	OP_WRITE_ERR,   /* a write-family call failed with err */
	OP_POLL_IN,     /* poll/select with fd for input */
	OP_EPOLL_CTL,
	OP_EPOLL_WAIT,
	OP_SHUTDOWN,
	OP_CLOSE,
	OP_CLOSE_RANGE,
	OP_DUP2,        /* dup2(fd, fd2) */
	OP_DUPFD,       /* fcntl(fd, F_DUPFD_CLOEXEC) returned fd2 */
	OP_ACCEPT_FROM, /* accept4(fd2) returned fd */
	OP_POLL_SET,    /* poll on fd and fd2 (-1: none) for input */
	OP_SELECT_SET,  /* select on fd and fd2 (-1: none) for input */
};

struct op {
	enum op_kind kind;
	int fd, fd2;
	const void *buf;
	size_t n;
	long ret;
	const struct iovec *iov;
	int cnt;
	int err;
	int epop;
	uint32_t events;
};

static uint32_t gen_now(struct conn *c)
{
	return c ? atomic_load(&c->gen) : 0;
}

static void op_exec(void *arg)
{
	struct op *o = arg;
	struct conn *c = conn_get(o->fd);
	uint32_t g = gen_now(c);

	switch (o->kind) {
	case OP_ACCEPT:
		conn_accepted(o->fd);
		break;
	case OP_READ:
	case OP_READ_RET:
		if (c)
			conn_read_enter(c);
		if (o->kind == OP_READ && c && gen_now(c) == g)
			conn_read_done(c, o->fd, o->buf, o->n);
		break;
	case OP_READV:
		if (c)
			conn_read_enter(c);
		if (c && gen_now(c) == g)
			conn_read_iov(c, o->fd, o->iov, o->cnt, o->n);
		break;
	case OP_WRITE:
		if (c)
			conn_write_done(c, o->buf, o->n);
		break;
	case OP_WRITEV:
		if (c)
			conn_write_iov(c, o->iov, o->cnt, o->n);
		break;
	case OP_SENDFILE:
		if (c)
			conn_sendfile_done(c, o->n);
		break;
	case OP_WRITE_ERR:
		if (c)
			conn_write_failed(c, o->err);
		break;
	case OP_POLL_IN:
		if (c)
			conn_wait_input(c);
		break;
	case OP_EPOLL_CTL:
		if (c)
			conn_epoll_ctl(c, o->fd2, o->epop, o->events);
		break;
	case OP_EPOLL_WAIT:
		if (conn_epoll_wait(o->fd)) /* the loop's wait, returned */
			conn_loop_left(thread_self());
		break;
	case OP_ACCEPT_FROM:
		conn_listener(o->fd2);
		conn_accepted(o->fd);
		break;
	case OP_POLL_SET: {
		struct pollfd p[2] = {{.fd = o->fd, .events = POLLIN},
				      {.fd = o->fd2, .events = POLLIN}};
		nfds_t n = o->fd2 >= 0 ? 2 : 1;
		for (nfds_t i = 0; i < n; i++) {
			struct conn *pc = conn_get(p[i].fd);
			if (pc)
				conn_wait_input(pc);
		}
		struct sd_thread *t = thread_self();
		if (conn_wait_maybe_loop(t) && conn_poll_wait(t, p, n))
			conn_loop_left(t);
		break;
	}
	case OP_SELECT_SET: {
		fd_set rd;
		FD_ZERO(&rd);
		int nfds = 0;
		for (int i = 0; i < 2; i++) {
			int fd = i ? o->fd2 : o->fd;
			if (fd < 0)
				continue;
			FD_SET(fd, &rd);
			struct conn *pc = conn_get(fd);
			if (pc)
				conn_wait_input(pc);
			if (fd + 1 > nfds)
				nfds = fd + 1;
		}
		struct sd_thread *t = thread_self();
		if (conn_wait_maybe_loop(t) && conn_select_wait(t, nfds, &rd))
			conn_loop_left(t);
		break;
	}
	case OP_SHUTDOWN:
		if (c)
			conn_shutdown(c);
		break;
	case OP_CLOSE:
		if (c)
			conn_closed(o->fd);
		break;
	case OP_CLOSE_RANGE:
		conn_close_range((unsigned)o->fd, (unsigned)o->fd2);
		break;
	case OP_DUP2: /* dup2(fd, fd2), as preload.c hands it on */
		conn_duped(o->fd, o->fd2);
		break;
	case OP_DUPFD:
		conn_duped(o->fd, o->fd2);
		break;
	}
}

static void run(struct wt *w, struct op o)
{
	wt_run(w, op_exec, &o);
}

static void do_accept(struct wt *w, int fd)
{
	run(w, (struct op){.kind = OP_ACCEPT, .fd = fd});
}

static void do_readn(struct wt *w, int fd, const void *buf, size_t n)
{
	run(w, (struct op){.kind = OP_READ, .fd = fd, .buf = buf, .n = n});
}

static void do_read(struct wt *w, int fd, const char *s)
{
	do_readn(w, fd, s, strlen(s));
}

static void do_read_eof(struct wt *w, int fd)
{
	run(w, (struct op){.kind = OP_READ_RET, .fd = fd, .ret = 0});
}

static void do_read_eagain(struct wt *w, int fd)
{
	run(w, (struct op){.kind = OP_READ_RET, .fd = fd, .ret = -EAGAIN});
}

static void do_writen(struct wt *w, int fd, const void *buf, size_t n)
{
	run(w, (struct op){.kind = OP_WRITE, .fd = fd, .buf = buf, .n = n});
}

static void do_write(struct wt *w, int fd, const char *s)
{
	do_writen(w, fd, s, strlen(s));
}

/* writev of two buffers, all written */
static void do_writev2(struct wt *w, int fd, const char *a, const char *b)
{
	struct iovec iov[2] = {
		{.iov_base = (void *)a, .iov_len = strlen(a)},
		{.iov_base = (void *)b, .iov_len = strlen(b)},
	};
	run(w, (struct op){.kind = OP_WRITEV, .fd = fd, .iov = iov, .cnt = 2,
			   .n = iov[0].iov_len + iov[1].iov_len});
}

static void do_sendfile(struct wt *w, int fd, size_t n)
{
	run(w, (struct op){.kind = OP_SENDFILE, .fd = fd, .n = n});
}

static void do_write_err(struct wt *w, int fd, int err)
{
	run(w, (struct op){.kind = OP_WRITE_ERR, .fd = fd, .err = err});
}

static void do_poll_in(struct wt *w, int fd)
{
	run(w, (struct op){.kind = OP_POLL_IN, .fd = fd});
}

static void do_epoll_ctl(struct wt *w, int epfd, int op, int fd, uint32_t ev)
{
	run(w, (struct op){.kind = OP_EPOLL_CTL, .fd = fd, .fd2 = epfd,
			   .epop = op, .events = ev});
}

static void do_epoll_wait(struct wt *w, int epfd)
{
	run(w, (struct op){.kind = OP_EPOLL_WAIT, .fd = epfd});
}

static void do_accept_from(struct wt *w, int fd, int listener)
{
	run(w, (struct op){.kind = OP_ACCEPT_FROM, .fd = fd, .fd2 = listener});
}

static void do_poll2(struct wt *w, int fd, int fd2)
{
	run(w, (struct op){.kind = OP_POLL_SET, .fd = fd, .fd2 = fd2});
}

static void do_select2(struct wt *w, int fd, int fd2)
{
	run(w, (struct op){.kind = OP_SELECT_SET, .fd = fd, .fd2 = fd2});
}

static void do_shutdown(struct wt *w, int fd)
{
	run(w, (struct op){.kind = OP_SHUTDOWN, .fd = fd});
}

static void do_close(struct wt *w, int fd)
{
	run(w, (struct op){.kind = OP_CLOSE, .fd = fd});
}

static void do_close_range(struct wt *w, unsigned lo, unsigned hi)
{
	run(w, (struct op){.kind = OP_CLOSE_RANGE, .fd = (int)lo, .fd2 = (int)hi});
}

static void do_dup2(struct wt *w, int oldfd, int newfd)
{
	run(w, (struct op){.kind = OP_DUP2, .fd = oldfd, .fd2 = newfd});
}

static void do_dupfd(struct wt *w, int fd, int result)
{
	run(w, (struct op){.kind = OP_DUPFD, .fd = fd, .fd2 = result});
}

/* ---------------------------------------------------------------------
 * Observations: what the watchdog would see.
 * --------------------------------------------------------------------- */

static uint64_t req(struct wt *w)
{
	return w->rec ? atomic_load(&w->rec->req_id) : 0;
}

static bool mux(struct wt *w)
{
	return w->rec && w->rec->mux;
}

static uint32_t gen(int fd)
{
	return gen_now(conn_get(fd));
}

static int state(int fd)
{
	struct conn *c = conn_get(fd);
	cr_assert_not_null(c, "fd %d is not tracked", fd);
	return c->state;
}

/* No request is running on w (idle time is not request time). */
#define expect_idle(w) \
	cr_assert_eq(req(w), 0, "%s: a request is running (id %llu)", #w, \
		     (unsigned long long)req(w))

/* A request is running on w, on fd, and the watchdog can describe it as
 * method, target, host (NULL: not checked). Returns its id. */
#define expect_req(w, fd, method, target, host) \
	expect_req_at(w, #w, fd, method, target, host, __LINE__)

static uint64_t expect_req_at(struct wt *w, const char *wn, int fd,
			      const char *method, const char *target,
			      const char *host, int line)
{
	uint64_t id = req(w);
	cr_assert_neq(id, 0, "line %d: no request running on %s", line, wn);
	struct sd_thread *t = w->rec;
	cr_assert_eq(t->fd, fd, "line %d: %s serves fd %d, not %d", line, wn,
		     t->fd, fd);
	struct conn *c = conn_get(fd);
	cr_assert_not_null(c, "line %d", line);
	cr_assert_eq(t->conn_gen, gen(fd), "line %d: stale gen", line);
	cr_assert_eq(c->req_id, id, "line %d: conn has request %llu, thread %llu",
		     line, (unsigned long long)c->req_id, (unsigned long long)id);
	cr_assert_eq(c->owner, t, "line %d: conn owned by another thread", line);
	cr_assert_neq(c->state, CONN_IDLE, "line %d", line);

	struct reqinfo in;
	cr_assert(conn_describe(fd, t->conn_gen, id, &in),
		  "line %d: conn_describe failed", line);
	if (method)
		cr_assert_str_eq(in.method, method, "line %d: method '%s', want '%s'",
				 line, in.method, method);
	if (target)
		cr_assert_str_eq(in.target, target, "line %d: target '%s', want '%s'",
				 line, in.target, target);
	if (host)
		cr_assert_str_eq(in.host, host, "line %d: host '%s', want '%s'",
				 line, in.host, host);
	return id;
}

/*
 * w has answered its request on fd: the request is still w's until the
 * server's next step on the connection (a read or a wait for input on it,
 * parking it, shutting it down, closing it, or another connection), as
 * conn.c follows a response's framing only when a pipelined request waits
 * behind it.
 */
#define expect_answered(w, fd) expect_answered_at(w, #w, fd, __LINE__)

static uint64_t expect_answered_at(struct wt *w, const char *wn, int fd, int line)
{
	uint64_t id = expect_req_at(w, wn, fd, NULL, NULL, NULL, line);
	cr_assert_eq(state(fd), CONN_RESP, "line %d: %s: fd %d in state %d, not "
		     "answered", line, wn, fd, state(fd));
	return id;
}

/* fd is tracked and between requests. */
static void expect_conn_idle(int fd)
{
	struct conn *c = conn_get(fd);
	cr_assert_not_null(c, "fd %d is not tracked", fd);
	cr_assert_eq(c->state, CONN_IDLE, "fd %d: state %d", fd, c->state);
	cr_assert_eq(c->req_id, 0);
	cr_assert_null(c->owner);
}

/* fd still has request id in flight (a thread that serves many). */
static void expect_conn_req(int fd, uint64_t id)
{
	struct conn *c = conn_get(fd);
	cr_assert_not_null(c, "fd %d is not tracked", fd);
	cr_assert_eq(c->state, CONN_REQ, "fd %d: state %d", fd, c->state);
	cr_assert_eq(c->req_id, id);
}

static void expect_gone(int fd)
{
	cr_assert_null(conn_get(fd), "fd %d still tracked", fd);
}

/* Asks for the end time of request id on w, as for a reported request. */
static void want_done(struct wt *w, uint64_t id)
{
	atomic_store(&w->rec->reported_id, id);
}

static int64_t done_ns(struct wt *w, uint64_t id)
{
	cr_assert_eq(atomic_load(&w->rec->done_id), id, "no end recorded");
	return w->rec->done_ns;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* ---------------------------------------------------------------------
 * Messages
 * --------------------------------------------------------------------- */

#define REQ_GET(path) \
	"GET " path " HTTP/1.1\r\nHost: app.test\r\nUser-Agent: client.py\r\n" \
	"Accept: */*\r\n\r\n"
#define RESP_HEAD_5 \
	"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Type: text/plain\r\n" \
	"Content-Length: 5\r\n\r\n"
#define RESP_5 RESP_HEAD_5 "hello"

static const char post_head[] =
	"POST /upload?tag=D HTTP/1.1\r\nHost: app.test\r\n"
	"Content-Type: application/octet-stream\r\n"
	"Content-Length: 100000\r\n\r\n";

enum { L = 3, EPFD = 900, EPFD_LISTEN = 901 };

/* =====================================================================
 * a. gunicorn sync
 * ===================================================================== */

Test(conn, gunicorn_sync_get)
{
	int c = 1000;

	do_accept(M, c);
	expect_conn_idle(c);
	expect_idle(M); /* gunicorn accepts at connect: not a request yet */
	do_read(M, c, REQ_GET("/slow?tag=A"));
	uint64_t id = expect_req(M, c, "GET", "/slow?tag=A", "app.test");
	do_write(M, c,
		 "HTTP/1.1 200 OK\r\nServer: gunicorn\r\nConnection: close\r\n"
		 "Content-Length: 5\r\n\r\n");
	cr_assert_eq(expect_req(M, c, "GET", NULL, NULL), id);
	cr_assert_eq(state(c), CONN_RESP);
	do_write(M, c, "hello");
	cr_assert_eq(expect_answered(M, c), id);
	want_done(M, id);
	int64_t start = M->rec->req_start_ns;
	int64_t last = conn_get(c)->last_write_ns;
	sleep_ms(150); /* the app's close(), the access log */
	do_close(M, c); /* the worker's next step: the request is over */
	expect_idle(M);
	expect_gone(c);
	cr_assert_eq(done_ns(M, id), last - start,
		     "the total runs to the last byte of the response");

	/* next connection, same fd number, same thread */
	do_accept(M, c);
	do_read(M, c, REQ_GET("/again"));
	uint64_t id2 = expect_req(M, c, "GET", "/again", NULL);
	cr_assert_neq(id2, id);
	do_write(M, c, RESP_5);
	expect_answered(M, c);
	do_close(M, c);
	expect_idle(M);
}

Test(conn, gunicorn_sync_post_body_reads)
{
	int c = 1000;
	static char body[8192];

	memset(body, 'x', sizeof(body));
	do_accept(M, c);
	do_read(M, c, post_head);
	uint64_t id = expect_req(M, c, "POST", "/upload?tag=D", "app.test");
	size_t left = 100000;
	while (left > 0) { /* recv(c, 8192) x 13 while the app reads */
		size_t k = left < sizeof(body) ? left : sizeof(body);
		do_readn(M, c, body, k);
		left -= k;
		cr_assert_eq(expect_req(M, c, "POST", "/upload?tag=D", NULL), id);
	}
	cr_assert_eq(state(c), CONN_REQ);
	do_write(M, c, RESP_HEAD_5);
	do_write(M, c, "hello");
	cr_assert_eq(expect_answered(M, c), id);
	do_close(M, c);
	expect_idle(M);
	expect_gone(c);
}

Test(conn, gunicorn_sync_file_wrapper_sendfile)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/file?tag=H"));
	uint64_t id = expect_req(M, c, "GET", "/file?tag=H", NULL);
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n");
	do_sendfile(M, c, 4096);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_sendfile(M, c, 4096);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_sendfile(M, c, 10000 - 8192);
	cr_assert_eq(expect_answered(M, c), id);
	do_close(M, c);
	expect_idle(M);

	/* Behind a pipelined request, the body's length is followed: the
	 * second request starts with the first response's last byte. */
	do_accept(M, c);
	do_read(M, c, REQ_GET("/file?tag=H") REQ_GET("/next"));
	id = expect_req(M, c, "GET", "/file?tag=H", NULL);
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n");
	do_sendfile(M, c, 4096);
	do_sendfile(M, c, 4096);
	cr_assert_eq(expect_req(M, c, NULL, "/file?tag=H", NULL), id);
	do_sendfile(M, c, 10000 - 8192);
	cr_assert_neq(expect_req(M, c, "GET", "/next", NULL), id);
	do_close(M, c);
	expect_idle(M);
}

Test(conn, gunicorn_sync_one_big_send)
{
	int c = 1000;
	static char resp[1 << 20];
	const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
	size_t hn = strlen(h);

	memcpy(resp, h, hn);
	memset(resp + hn, 'E', 1000000);
	do_accept(M, c);
	do_read(M, c, REQ_GET("/big?tag=E"));
	expect_req(M, c, "GET", "/big?tag=E", NULL);
	do_writen(M, c, resp, hn + 999999); /* short write */
	expect_req(M, c, NULL, NULL, NULL);
	do_writen(M, c, resp + hn + 999999, 1);
	expect_answered(M, c);
	do_close(M, c);
	expect_idle(M);

	/* Behind a pipelined request, the short write is followed. */
	do_accept(M, c);
	do_read(M, c, REQ_GET("/big?tag=E") REQ_GET("/next"));
	uint64_t id = expect_req(M, c, "GET", "/big?tag=E", NULL);
	do_writen(M, c, resp, hn + 999999);
	cr_assert_eq(expect_req(M, c, NULL, "/big?tag=E", NULL), id);
	do_writen(M, c, resp + hn + 999999, 1);
	cr_assert_neq(expect_req(M, c, "GET", "/next", NULL), id);
	do_close(M, c);
	expect_idle(M);
}

/* =====================================================================
 * b. gunicorn gthread
 * ===================================================================== */

Test(conn, gthread_keepalive_moves_between_pool_threads)
{
	int c = 1000;

	do_epoll_wait(M, EPFD);
	do_accept(M, c); /* M accepts, hands off through a futex */
	expect_idle(M);
	expect_conn_idle(c);

	do_read(P1, c, REQ_GET("/one?tag=B"));
	uint64_t id1 = expect_req(P1, c, "GET", "/one?tag=B", "app.test");
	expect_idle(M);
	do_write(P1, c, RESP_HEAD_5);
	do_write(P1, c, "hello");
	cr_assert_eq(expect_answered(P1, c), id1);
	/* P1 parks the connection, then waits on the work queue */
	do_epoll_ctl(P1, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
	expect_idle(P1);
	cr_assert_not(mux(P1));

	/* M sees it readable, takes it out of its set, wakes a pool thread */
	do_epoll_wait(M, EPFD);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_DEL, c, 0);
	expect_idle(M);
	cr_assert_not(mux(M));

	do_read(P2, c, REQ_GET("/two?tag=B"));
	uint64_t id2 = expect_req(P2, c, "GET", "/two?tag=B", "app.test");
	cr_assert_neq(id1, id2);
	expect_idle(P1);
	do_write(P2, c, RESP_5);
	cr_assert_eq(expect_answered(P2, c), id2);
	do_epoll_ctl(P2, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
	expect_idle(P2);
	expect_conn_idle(c);

	/* keep-alive timeout: M drops and closes it */
	do_epoll_ctl(M, EPFD, EPOLL_CTL_DEL, c, 0);
	do_close(M, c);
	expect_gone(c);
	expect_idle(M);
	expect_idle(P1);
	expect_idle(P2);
	cr_assert_not(mux(P1) || mux(P2) || mux(M));
}

Test(conn, gthread_round_robin_four_requests)
{
	int c = 1000;
	struct wt *pool[4] = {P1, P2, P3, M};
	uint64_t ids[4];
	const char *reqs[4] = {REQ_GET("/j0"), REQ_GET("/j1"), REQ_GET("/j2"),
			       REQ_GET("/j3")};
	const char *tg[4] = {"/j0", "/j1", "/j2", "/j3"};

	do_accept(M, c);
	for (int i = 0; i < 4; i++) {
		struct wt *w = pool[i];
		do_read(w, c, reqs[i]);
		ids[i] = expect_req_at(w, "pool", c, "GET", tg[i], "app.test",
				       __LINE__);
		for (int j = 0; j < i; j++)
			cr_assert_neq(ids[i], ids[j]);
		do_write(w, c, RESP_5);
		cr_assert_eq(expect_answered_at(w, "pool", c, __LINE__), ids[i]);
		do_epoll_ctl(w, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
		expect_idle(w);
		do_epoll_wait(M, EPFD);
		do_epoll_ctl(M, EPFD, EPOLL_CTL_DEL, c, 0);
		expect_conn_idle(c);
	}
	for (int i = 0; i < 4; i++)
		cr_assert_not(mux(pool[i]));
}

Test(conn, gthread_client_eof_on_a_pool_thread)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/x"));
	expect_req(P1, c, "GET", "/x", NULL);
	do_write(P1, c, RESP_5);
	do_epoll_ctl(P1, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
	do_epoll_wait(M, EPFD);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_DEL, c, 0);
	/* some pool thread sees the client's FIN */
	do_read_eof(P3, c);
	expect_idle(P3);
	expect_conn_idle(c);
	do_close(P3, c);
	expect_gone(c);
	expect_idle(P1);
}

/* The app's response is not framed as the head said (short body): the
 * parking epoll_ctl(ADD, EPOLLIN) is what ends it. */
Test(conn, gthread_park_ends_an_unfinished_response)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/short"));
	uint64_t id = expect_req(P1, c, "GET", "/short", NULL);
	do_write(P1, c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
	cr_assert_eq(expect_req(P1, c, NULL, NULL, NULL), id);
	do_epoll_ctl(P1, EPFD, EPOLL_CTL_MOD, c, EPOLLOUT);
	cr_assert_eq(expect_req(P1, c, NULL, NULL, NULL), id,
		     "EPOLLOUT is not a wait for the next request");
	do_epoll_ctl(P1, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
	expect_idle(P1);
	expect_conn_idle(c);
}

/* gthread sends a pipelined second request's answer with no recv, and it
 * hits EPIPE (research b). */
Test(conn, gthread_pipelined_answer_epipe)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/g1?tag=G") REQ_GET("/g2?tag=G"));
	uint64_t id1 = expect_req(P1, c, "GET", "/g1?tag=G", NULL);
	do_write(P1, c, RESP_5);
	/* the second request, already read, is running now */
	uint64_t id2 = expect_req(P1, c, "GET", "/g2?tag=G", NULL);
	cr_assert_neq(id1, id2);
	do_epoll_ctl(P1, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
	/* gthread parks the connection without serving the pipelined request:
	 * it never runs, so it is forgotten, and P1 is free for other work. */
	cr_assert_eq(state(c), CONN_IDLE, "a parked pipelined request is dropped");
	expect_idle(P1);
	cr_assert_not(mux(P1));
	do_epoll_wait(M, EPFD);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_DEL, c, 0);
	do_write_err(P2, c, EPIPE);
	expect_idle(P1);
	expect_idle(P2);
	expect_conn_idle(c);
	do_close(P2, c);
	expect_gone(c);
}

/* =====================================================================
 * c. uWSGI --http-socket, d. --threads
 * ===================================================================== */

Test(conn, uwsgi_http_socket_writev)
{
	int c = 1000;

	do_epoll_wait(M, EPFD_LISTEN);
	do_accept(M, c);
	do_read(M, c, REQ_GET("/u?tag=A"));
	uint64_t id = expect_req(M, c, "GET", "/u?tag=A", "app.test");
	(void)id;
	do_writev2(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello");
	expect_answered(M, c);
	do_close(M, c);
	expect_idle(M);
	expect_gone(c);
	cr_assert_not(mux(M));
}

Test(conn, uwsgi_split_head_poll_between_reads)
{
	int c = 1000;
	const char *r = "GET /split?tag=L HTTP/1.1\r\nHost: app.test\r\nX-Pad: abcdefghijklmnopqrstuvwxyz\r\n\r\n";

	do_accept(M, c);
	do_readn(M, c, r, 20);
	uint64_t id = expect_req(M, c, "GET", NULL, NULL);
	do_poll_in(M, c); /* poll(c, IN, 4000): still the same request */
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_read(M, c, r + 20);
	cr_assert_eq(expect_req(M, c, "GET", "/split?tag=L", "app.test"), id);
	cr_assert(conn_get(c)->info[conn_get(c)->cur].head_complete);
	do_writev2(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok");
	cr_assert_eq(expect_answered(M, c), id);
	do_close(M, c);
	expect_idle(M);
}

/* read=EAGAIN, poll(c, IN), read: the app reading its body, not idleness:
 * the response has not started. */
Test(conn, uwsgi_post_body_eagain_poll_read)
{
	int c = 1000;
	static char body[100000];

	memset(body, 'b', sizeof(body));
	do_accept(M, c);
	do_read(M, c, post_head);
	uint64_t id = expect_req(M, c, "POST", "/upload?tag=D", "app.test");
	do_read_eagain(M, c);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_poll_in(M, c);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_readn(M, c, body, sizeof(body));
	cr_assert_eq(expect_req(M, c, "POST", "/upload?tag=D", NULL), id);
	cr_assert_eq(state(c), CONN_REQ);
	do_writev2(M, c, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n", "ok");
	cr_assert_eq(expect_answered(M, c), id);
	do_close(M, c);
	expect_idle(M);
}

/* Stream with no length and no chunking: close marks the end. */
Test(conn, uwsgi_stream_ends_at_close)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/stream?tag=C"));
	uint64_t id = expect_req(M, c, "GET", "/stream?tag=C", NULL);
	do_writev2(M, c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
		   "chunk0\n");
	for (int i = 0; i < 4; i++) {
		do_write(M, c, "chunk\n");
		cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	}
	do_close(M, c);
	expect_idle(M);
	expect_gone(c);
}

Test(conn, uwsgi_head_request_write_headers_only)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "HEAD /h?tag=F HTTP/1.1\r\nHost: app.test\r\n\r\n");
	expect_req(M, c, "HEAD", "/h?tag=F", "app.test");
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
		       "Content-Length: 1234\r\n\r\n");
	expect_answered(M, c);
	do_close(M, c);
	expect_idle(M);
}

/* d: every core thread accepts and handles its own connections. */
Test(conn, uwsgi_threads_each_core_accepts)
{
	struct wt *core[3] = {M, P1, P2};

	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3; i++) {
			int c = 1000 + i;
			do_epoll_wait(core[i], EPFD + i);
			do_accept(core[i], c);
			do_read(core[i], c, REQ_GET("/t"));
			expect_req_at(core[i], "core", c, "GET", "/t", NULL,
				      __LINE__);
		}
		for (int i = 0; i < 3; i++) {
			int c = 1000 + i;
			do_writev2(core[i], c, RESP_HEAD_5, "hello");
			expect_answered_at(core[i], "core", c, __LINE__);
			do_close(core[i], c);
			expect_idle(core[i]);
			expect_gone(c);
		}
	}
	for (int i = 0; i < 3; i++)
		cr_assert_not(mux(core[i]));
}

/* =====================================================================
 * c'. uWSGI --http11-socket keep-alive
 * ===================================================================== */

Test(conn, uwsgi_http11_keepalive_poll_then_read)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/k1"));
	uint64_t id1 = expect_req(M, c, "GET", "/k1", "app.test");
	do_writev2(M, c, RESP_HEAD_5, "hello");
	cr_assert_eq(expect_answered(M, c), id1);
	do_epoll_wait(M, EPFD_LISTEN); /* epoll_wait(listen-epoll, 0) */
	do_poll_in(M, c);              /* poll([c], IN, 4000): the next step */
	expect_idle(M);
	/* next request: a read with no accept */
	do_read(M, c, REQ_GET("/k2"));
	uint64_t id2 = expect_req(M, c, "GET", "/k2", "app.test");
	cr_assert_neq(id1, id2);
	do_writev2(M, c, RESP_HEAD_5, "hello");
	cr_assert_eq(expect_answered(M, c), id2);
	do_epoll_wait(M, EPFD_LISTEN);
	do_poll_in(M, c);
	expect_idle(M);
	do_read_eof(M, c);
	expect_idle(M);
	do_close(M, c);
	expect_gone(c);
	cr_assert_not(mux(M));
}

/* An unterminated stream on a keep-alive socket: the poll for the next
 * request ends it, at the time of the last write. */
Test(conn, uwsgi_http11_unframed_response_ends_at_poll)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/c"));
	uint64_t id = expect_req(M, c, "GET", "/c", NULL);
	do_writev2(M, c, "HTTP/1.1 200 OK\r\n\r\n", "part");
	want_done(M, id);
	int64_t start = M->rec->req_start_ns;
	int64_t last = conn_get(c)->last_write_ns;
	sleep_ms(150);
	do_epoll_wait(M, EPFD_LISTEN);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_poll_in(M, c);
	expect_idle(M);
	cr_assert_eq(done_ns(M, id), last - start,
		     "the end is the last write, not the poll");
}

/* =====================================================================
 * e. uwsgi protocol
 * ===================================================================== */

struct pkt {
	char b[16384];
	size_t n;
};

static void pkt_u16(struct pkt *p, size_t v)
{
	p->b[p->n++] = (char)(v & 0xff);
	p->b[p->n++] = (char)((v >> 8) & 0xff);
}

/* A packet as nginx's uwsgi_pass with the stock uwsgi_params sends it:
 * kv is a NULL-terminated list of name, value. */
static void pkt_build(struct pkt *p, const char *const *kv)
{
	p->n = 4;
	for (; kv[0]; kv += 2) {
		pkt_u16(p, strlen(kv[0]));
		memcpy(p->b + p->n, kv[0], strlen(kv[0]));
		p->n += strlen(kv[0]);
		pkt_u16(p, strlen(kv[1]));
		memcpy(p->b + p->n, kv[1], strlen(kv[1]));
		p->n += strlen(kv[1]);
	}
	size_t ds = p->n - 4;
	p->b[0] = 0;
	p->b[1] = (char)(ds & 0xff);
	p->b[2] = (char)(ds >> 8);
	p->b[3] = 0;
}

static const char *const nginx_post[] = {
	"QUERY_STRING", "tag=D",
	"REQUEST_METHOD", "POST",
	"CONTENT_TYPE", "application/octet-stream",
	"CONTENT_LENGTH", "100000",
	"REQUEST_URI", "/upload?tag=D",
	"PATH_INFO", "/upload",
	"DOCUMENT_URI", "/upload",
	"DOCUMENT_ROOT", "/usr/share/nginx/html",
	"SERVER_PROTOCOL", "HTTP/1.1",
	"REQUEST_SCHEME", "http",
	"REMOTE_ADDR", "127.0.0.1",
	"REMOTE_PORT", "51234",
	"SERVER_PORT", "80",
	"SERVER_NAME", "localhost",
	"HTTP_HOST", "app.test",
	"HTTP_USER_AGENT", "client.py",
	"HTTP_CONTENT_LENGTH", "100000",
	NULL,
};

Test(conn, uwsgi_protocol_behind_nginx)
{
	int c = 1000;
	static struct pkt p;
	static char rd[4100 + 96372];

	pkt_build(&p, nginx_post);
	memcpy(rd, p.b, p.n);
	memset(rd + p.n, 'b', sizeof(rd) - p.n);

	do_epoll_wait(M, EPFD_LISTEN);
	do_accept(M, c);
	do_readn(M, c, rd, 4100); /* vars and 4 kB of body */
	uint64_t id = expect_req(M, c, "POST", "/upload?tag=D", "app.test");
	struct reqinfo in;
	cr_assert(conn_describe(c, gen(c), id, &in));
	cr_assert_eq(in.proto, PROTO_UWSGI);
	do_readn(M, c, rd + 4100, 96372);
	cr_assert_eq(expect_req(M, c, "POST", "/upload?tag=D", "app.test"), id);
	do_writev2(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "ok");
	cr_assert_eq(expect_answered(M, c), id);
	do_close(M, c);
	expect_idle(M);
	expect_gone(c);
}

/* Behind the uWSGI router: small reads, each preceded by EAGAIN + poll;
 * the response (raw, unframed here) ends at close. */
Test(conn, uwsgi_protocol_behind_router_split)
{
	int c = 1000;
	static struct pkt p;
	static const char *const kv[] = {
		"REQUEST_METHOD", "GET",
		"PATH_INFO", "/r",
		"QUERY_STRING", "tag=A",
		"HTTP_HOST", "router.test",
		NULL,
	};

	pkt_build(&p, kv);
	do_accept(M, c);
	do_readn(M, c, p.b, 3); /* not even the whole 4-byte header */
	uint64_t id = expect_req(M, c, NULL, NULL, NULL);
	do_read_eagain(M, c);
	do_poll_in(M, c);
	do_readn(M, c, p.b + 3, p.n - 3);
	cr_assert_eq(expect_req(M, c, "GET", "/r?tag=A", "router.test"), id);
	do_write(M, c, "HTTP/1.1 200 OK\r\n\r\n");
	do_write(M, c, "body");
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_close(M, c);
	expect_idle(M);
}

Test(conn, uwsgi_protocol_head)
{
	int c = 1000;
	static struct pkt p;
	static const char *const kv[] = {
		"REQUEST_METHOD", "HEAD",
		"REQUEST_URI", "/h",
		"HTTP_HOST", "app.test",
		NULL,
	};

	pkt_build(&p, kv);
	do_accept(M, c);
	do_readn(M, c, p.b, p.n);
	expect_req(M, c, "HEAD", "/h", "app.test");
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
	expect_answered(M, c);
	do_close(M, c);
	expect_idle(M);
}

/* A packet read whole is kept as read (not parsed on the serving thread)
 * and described all the same; a later read on the connection starts a
 * request that keeps the packet's description, as a parsed packet's. */
Test(conn, uwsgi_protocol_kept_packet)
{
	int c = 1000;
	static struct pkt p;
	static char rd[4100];

	pkt_build(&p, nginx_post);
	memcpy(rd, p.b, p.n);
	memset(rd + p.n, 'b', sizeof(rd) - p.n);

	do_accept(M, c);
	do_readn(M, c, rd, sizeof(rd)); /* vars and some body */
	cr_assert(conn_get(c)->lazy_uwsgi, "the packet is kept");
	uint64_t id = expect_req(M, c, "POST", "/upload?tag=D", "app.test");
	do_readn(M, c, rd, 1000); /* more body: nothing parsed */
	cr_assert(conn_get(c)->lazy_uwsgi);
	cr_assert_eq(expect_req(M, c, "POST", "/upload?tag=D", "app.test"), id);
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	expect_answered(M, c);
	do_readn(M, c, "xy", 2);
	cr_assert(!conn_get(c)->lazy_uwsgi, "parsed when the next request starts");
	uint64_t id2 = expect_req(M, c, "POST", "/upload?tag=D", "app.test");
	cr_assert_neq(id2, id);
	do_close(M, c);
	expect_idle(M);
}

/* =====================================================================
 * f. Python standard library
 * ===================================================================== */

Test(conn, wsgiref_one_send_per_header_line)
{
	int c = 1000;
	static const char *const lines[] = {
		"HTTP/1.0 200 OK\r\n",
		"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
		"Server: WSGIServer/0.2 CPython/3.11.2\r\n",
		"Content-Type: text/plain\r\n",
		"Content-Length: 5\r\n",
		"\r\n",
	};

	do_accept(M, c);
	do_read(M, c, REQ_GET("/w?tag=A"));
	uint64_t id = expect_req(M, c, "GET", "/w?tag=A", "app.test");
	for (size_t i = 0; i < ARRAY_LEN(lines); i++) {
		do_write(M, c, lines[i]);
		cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	}
	do_write(M, c, "hel");
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_write(M, c, "lo");
	cr_assert_eq(expect_answered(M, c), id);
	do_shutdown(M, c);
	expect_idle(M);
	do_close(M, c);
	expect_gone(c);
}

/* No Content-Length: shutdown(SHUT_WR) is the end, timed at the last
 * write. */
Test(conn, wsgiref_no_length_ends_at_shutdown)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/w"));
	uint64_t id = expect_req(M, c, "GET", "/w", NULL);
	do_write(M, c, "HTTP/1.0 200 OK\r\n");
	do_write(M, c, "Content-Type: text/plain\r\n");
	do_write(M, c, "\r\n");
	do_write(M, c, "body");
	int64_t start = M->rec->req_start_ns;
	int64_t last = conn_get(c)->last_write_ns;
	want_done(M, id);
	sleep_ms(150);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_shutdown(M, c);
	expect_idle(M);
	cr_assert_eq(done_ns(M, id), last - start);
	do_shutdown(M, c); /* Django: a second shutdown, ENOTCONN */
	do_close(M, c);
	expect_gone(c);
}

Test(conn, threading_http_server_keepalive)
{
	int c = 1000;

	do_accept(M, c); /* then a new thread per connection */
	expect_idle(M);
	do_read(P1, c, REQ_GET("/t1?tag=B"));
	uint64_t id1 = expect_req(P1, c, "GET", "/t1?tag=B", "app.test");
	do_write(P1, c, RESP_HEAD_5);
	do_write(P1, c, "hello");
	cr_assert_eq(expect_answered(P1, c), id1);
	int64_t ended = clock_coarse_ns();

	/* P1 blocks in recv(c): idle time is not request time */
	do_read_eagain(P1, c); /* the recv entering (it returns later) */
	expect_idle(P1);
	sleep_ms(100);
	expect_idle(P1);
	do_read(P1, c, REQ_GET("/t2?tag=B"));
	uint64_t id2 = expect_req(P1, c, "GET", "/t2?tag=B", "app.test");
	cr_assert_neq(id1, id2);
	cr_assert_geq(P1->rec->req_start_ns, ended + 50 * NS_PER_MS,
		      "request 2 started at its read, not at request 1");
	do_write(P1, c, RESP_HEAD_5);
	do_write(P1, c, "hello");
	cr_assert_eq(expect_answered(P1, c), id2);

	do_read_eof(P1, c);
	expect_idle(P1);
	do_shutdown(P1, c);
	do_close(P1, c);
	expect_gone(c);
	cr_assert_not(mux(P1));
}

/*
 * KNOWN BUG (conn.c, parse_http, HTTP_REQ_NEXT): after a first request,
 * the HTTP parser waits between requests with its "a head was seen" flag
 * set, so the first byte of the next keep-alive request comes back as
 * HTTP_REQ_NEXT. By then req_start() has already made that request current
 * (state CONN_REQ, fill == cur), so parse_http takes the NEXT for a
 * *pipelined* request: it parses the new request into info[cur ^ 1] and
 * sets next_ready. Result: the running request is described with empty
 * method/target/host, and when its response completes, req_end() starts a
 * phantom request (the same one again) that stays active on the idle thread
 * until the next request: idle keep-alive time reported as a slow request.
 * Every keep-alive server hits it (gthread, uWSGI http11,
 * ThreadingHTTPServer, Django runserver); the scenario tests above with a
 * second request on a connection fail from this one cause.
 */
Test(conn, keepalive_second_request_is_its_own)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/first"));
	expect_req(P1, c, "GET", "/first", NULL);
	do_write(P1, c, RESP_5);
	expect_answered(P1, c);
	do_read(P1, c, REQ_GET("/second"));
	uint64_t id2 = req(P1);
	cr_assert_neq(id2, 0);
	cr_assert_not(conn_get(c)->next_ready,
		      "KNOWN BUG: the request just read is taken for a "
		      "pipelined one");
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id2,
		     "KNOWN BUG: a phantom request follows the answered one");
	do_read_eagain(P1, c);
	cr_assert_eq(req(P1), 0,
		     "KNOWN BUG: a phantom request runs on the idle thread");
}

/* A response the framing can't end (no length, HTTP/1.1): the recv that
 * enters for the next request ends it (rule 6a). */
Test(conn, threading_http_server_read_enter_ends_unframed)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/t1"));
	uint64_t id1 = expect_req(P1, c, "GET", "/t1", NULL);
	do_write(P1, c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
	do_write(P1, c, "body");
	cr_assert_eq(expect_req(P1, c, NULL, NULL, NULL), id1);
	do_read_eagain(P1, c); /* recv enters, blocks */
	expect_idle(P1);
	do_read(P1, c, REQ_GET("/t2"));
	uint64_t id2 = expect_req(P1, c, "GET", "/t2", "app.test");
	cr_assert_neq(id1, id2);
}

/* Python sockets with a timeout poll(POLLIN) before each recv: inside a
 * request that is no idleness. */
Test(conn, python_timeout_socket_polls_mid_request)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, post_head);
	uint64_t id = expect_req(P1, c, "POST", NULL, NULL);
	for (int i = 0; i < 3; i++) {
		do_poll_in(P1, c);
		do_readn(P1, c, "0123456789", 10);
		cr_assert_eq(expect_req(P1, c, NULL, NULL, NULL), id);
	}
}

/* =====================================================================
 * Response framing
 * ===================================================================== */

Test(conn, pipelined_two_requests_in_one_recv)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/p1?tag=G") REQ_GET("/p2?tag=G"));
	uint64_t id1 = expect_req(P1, c, "GET", "/p1?tag=G", "app.test");
	uint32_t g = gen(c);
	do_write(P1, c, RESP_HEAD_5);
	cr_assert_eq(expect_req(P1, c, NULL, "/p1?tag=G", NULL), id1);
	do_write(P1, c, "hello");
	/* the second starts when the first response completes */
	uint64_t id2 = expect_req(P1, c, "GET", "/p2?tag=G", "app.test");
	cr_assert_neq(id1, id2);
	struct reqinfo in;
	cr_assert_not(conn_describe(c, g, id1, &in),
		      "an ended request must not be described");
	do_write(P1, c, RESP_5);
	/* nothing waits behind the second: it ends at the next step */
	cr_assert_eq(expect_answered(P1, c), id2);
	do_read_eagain(P1, c);
	expect_idle(P1);
	expect_conn_idle(c);
	cr_assert_not(conn_describe(c, g, id2, &in));

	/* no phantom third request: the next recv starts a fresh one */
	do_read(P1, c, REQ_GET("/p3"));
	uint64_t id3 = expect_req(P1, c, "GET", "/p3", "app.test");
	cr_assert(id3 != id1 && id3 != id2);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id3);
}

/* The second request arrives in a later read, before the first is
 * answered: it waits its turn. */
Test(conn, pipelined_second_request_in_a_later_read)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, "POST /p1 HTTP/1.1\r\nHost: app.test\r\n"
		       "Content-Length: 4\r\n\r\nab");
	uint64_t id1 = expect_req(P1, c, "POST", "/p1", NULL);
	do_read(P1, c, "cd" REQ_GET("/p2"));
	cr_assert_eq(expect_req(P1, c, "POST", "/p1", "app.test"), id1);
	do_write(P1, c, RESP_5);
	uint64_t id2 = expect_req(P1, c, "GET", "/p2", "app.test");
	cr_assert_neq(id1, id2);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id2);
}

/* A head read alone is kept unparsed (lazy_len); the body and a pipelined
 * request in the next read make it parsed then, in order. */
Test(conn, kept_head_then_body_and_pipelined_request)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, "POST /p1 HTTP/1.1\r\nHost: app.test\r\n"
		       "Content-Length: 4\r\n\r\n");
	cr_assert_gt(conn_get(c)->lazy_len, 0, "a whole head alone is kept");
	uint64_t id1 = expect_req(P1, c, "POST", "/p1", "app.test");
	do_read(P1, c, "abcd" REQ_GET("/p2"));
	cr_assert_eq(conn_get(c)->lazy_len, 0);
	cr_assert_eq(expect_req(P1, c, "POST", "/p1", "app.test"), id1);
	do_write(P1, c, RESP_5);
	uint64_t id2 = expect_req(P1, c, "GET", "/p2", "app.test");
	cr_assert_neq(id1, id2);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id2);

	/* a body in a later read is the body, not a request */
	do_read(P1, c, "PUT /p3 HTTP/1.1\r\nHost: app.test\r\n"
		       "Content-Length: 29\r\n\r\n");
	uint64_t id3 = expect_req(P1, c, "PUT", "/p3", "app.test");
	do_read(P1, c, "GET /not-a-request ");
	do_read(P1, c, "HTTP/1.1\r\n"); /* 29 bytes of body */
	cr_assert_eq(expect_req(P1, c, "PUT", "/p3", "app.test"), id3);
	cr_assert_not(conn_get(c)->next_ready);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id3);
	do_read_eagain(P1, c);
	expect_idle(P1);
}

/* A body read in pieces is counted off piece by piece (a piece short of
 * the body's end changes nothing else): a request read with its last
 * piece, or after it, is the next request, and no byte of the body is. */
Test(conn, body_in_pieces_then_next_request)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, "POST /p1 HTTP/1.1\r\nHost: app.test\r\n"
		       "Content-Length: 40\r\n\r\n");
	uint64_t id1 = expect_req(P1, c, "POST", "/p1", "app.test");
	do_read(P1, c, "GET /a HTTP/1.1\r\n"); /* 17 of 40: the kept head first */
	do_read(P1, c, "\r\n");                /* 19 */
	do_read(P1, c, "GET /b HTTP/1.1\r\n"); /* 36 */
	cr_assert_eq(expect_req(P1, c, "POST", "/p1", "app.test"), id1);
	cr_assert_not(conn_get(c)->next_ready, "body bytes are not a request");
	do_read(P1, c, "\r\n\r\n" REQ_GET("/p2")); /* 40, and the next one */
	cr_assert(conn_get(c)->next_ready);
	do_write(P1, c, RESP_5);
	uint64_t id2 = expect_req(P1, c, "GET", "/p2", "app.test");
	cr_assert_neq(id1, id2);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id2);

	/* the last piece ends the body exactly; the next request comes
	 * after the response */
	do_read(P1, c, "PUT /p3 HTTP/1.1\r\nHost: app.test\r\n"
		       "Content-Length: 12\r\n\r\n");
	uint64_t id3 = expect_req(P1, c, "PUT", "/p3", "app.test");
	do_read(P1, c, "GET /c "); /* 7 of 12 */
	cr_assert_not(http_req_at_start(&conn_get(c)->rp.http));
	do_read(P1, c, "HTTP");    /* 11 */
	cr_assert_not(http_req_at_start(&conn_get(c)->rp.http));
	do_read(P1, c, "/");       /* 12 */
	cr_assert(http_req_at_start(&conn_get(c)->rp.http), "the body ends here");
	cr_assert_eq(expect_req(P1, c, "PUT", "/p3", "app.test"), id3);
	cr_assert_not(conn_get(c)->next_ready);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id3);
	do_read(P1, c, REQ_GET("/p4"));
	uint64_t id4 = expect_req(P1, c, "GET", "/p4", "app.test");
	cr_assert_neq(id3, id4);
}

/* A chunked request body is not followed: whatever comes after its head
 * is taken for body (a request in it is not one), read in any pieces,
 * until the response ends the request. */
Test(conn, chunked_body_in_pieces)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, "POST /up HTTP/1.1\r\nHost: app.test\r\n"
		       "Transfer-Encoding: chunked\r\n\r\n");
	uint64_t id = expect_req(P1, c, "POST", "/up", "app.test");
	do_read(P1, c, "5\r\nhello\r\n");
	do_read(P1, c, "0\r\n\r\n" REQ_GET("/in-the-body"));
	do_read(P1, c, REQ_GET("/in-the-body-too"));
	cr_assert_eq(expect_req(P1, c, "POST", "/up", "app.test"), id);
	cr_assert_not(conn_get(c)->next_ready);
	do_write(P1, c, RESP_5);
	cr_assert_eq(expect_answered(P1, c), id);
	do_close(P1, c);
	expect_idle(P1);
}

/* What is kept: one whole head, and no more than CONN_LAZY_MAX bytes. */
Test(conn, kept_head_only_when_whole_and_alone)
{
	int c = 1000;
	static char big[CONN_LAZY_MAX + 200];

	do_accept(M, c);
	/* not ending with the empty line */
	do_read(M, c, "GET /half HTTP/1.1\r\nHost: a");
	cr_assert_eq(conn_get(c)->lazy_len, 0);
	do_read(M, c, "pp.test\r\n\r\n");
	cr_assert_eq(conn_get(c)->lazy_len, 0, "not the read that began it");
	expect_req(M, c, "GET", "/half", "app.test");
	do_write(M, c, RESP_5);

	/* bare LF line ends */
	do_read(M, c, "GET /lf HTTP/1.1\nHost: app.test\n\n");
	cr_assert_gt(conn_get(c)->lazy_len, 0);
	expect_req(M, c, "GET", "/lf", "app.test");
	do_write(M, c, RESP_5);

	/* too big to keep: parsed as read */
	int n = snprintf(big, sizeof(big), "GET /big HTTP/1.1\r\nHost: app.test\r\nX-Pad: ");
	memset(big + n, 'p', sizeof(big) - (size_t)n - 5);
	memcpy(big + sizeof(big) - 5, "\r\n\r\n", 5);
	do_read(M, c, big);
	cr_assert_eq(conn_get(c)->lazy_len, 0);
	expect_req(M, c, "GET", "/big", "app.test");
	do_write(M, c, RESP_5);

	/* a HEAD kept: a 1xx makes the response followed, and it ends with
	 * its head */
	do_read(M, c, "HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n");
	cr_assert_gt(conn_get(c)->lazy_len, 0);
	expect_req(M, c, "HEAD", "/h", "app.test");
	do_write(M, c, "HTTP/1.1 103 Early Hints\r\n\r\n"
		       "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
	expect_idle(M);
	expect_conn_idle(c);

	/* the same after an idle empty line */
	do_read(M, c, "\r\nHEAD /h2 HTTP/1.1\r\nHost: app.test\r\n\r\n");
	cr_assert_gt(conn_get(c)->lazy_len, 0);
	expect_req(M, c, "HEAD", "/h2", "app.test");
	do_write(M, c, "HTTP/1.1 103 Early Hints\r\n\r\n"
		       "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n");
	expect_idle(M);
	expect_conn_idle(c);
	do_close(M, c);
}

/* A third request in one read is more than conn.c follows: no crash, the
 * first two are still right. */
Test(conn, pipelined_three_requests)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/q1") REQ_GET("/q2") REQ_GET("/q3"));
	expect_req(P1, c, "GET", "/q1", NULL);
	do_write(P1, c, RESP_5);
	expect_req(P1, c, "GET", "/q2", NULL);
	do_write(P1, c, RESP_5);
	do_write(P1, c, RESP_5);
	do_read_eof(P1, c);
	do_close(P1, c);
	expect_idle(P1);
	expect_gone(c);
}

/* Both responses in one writev. */
Test(conn, pipelined_two_responses_in_one_write)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/p1") REQ_GET("/p2"));
	uint64_t id1 = expect_req(P1, c, "GET", "/p1", NULL);
	do_writev2(P1, c, RESP_5, RESP_5);
	cr_assert_neq(expect_answered(P1, c), id1, "the second was answered");
	cr_assert_str_eq(conn_get(c)->info[conn_get(c)->cur].target, "/p2");
	do_read_eagain(P1, c);
	expect_idle(P1);
	expect_conn_idle(c);
}

/* The second pipelined request is a HEAD: its response has no body. */
Test(conn, pipelined_head_after_get)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/p1")
		"HEAD /p2 HTTP/1.1\r\nHost: app.test\r\n\r\n");
	uint64_t id1 = expect_req(P1, c, "GET", "/p1", NULL);
	do_write(P1, c, RESP_5);
	uint64_t id2 = expect_req(P1, c, "HEAD", "/p2", NULL);
	cr_assert_neq(id1, id2);
	do_write(P1, c, RESP_HEAD_5);
	cr_assert_eq(expect_answered(P1, c), id2);
	do_read_eagain(P1, c);
	expect_idle(P1);
}

/*
 * Response framing is followed when a pipelined request waits behind the
 * response: its last byte is where the next request starts. The cases
 * below put a GET /next behind each response.
 */
#define NEXT REQ_GET("/next")

static void expect_next(struct wt *w, int fd, uint64_t prev)
{
	cr_assert_neq(expect_req(w, fd, "GET", "/next", NULL), prev,
		      "the pipelined request runs once the response is over");
}

Test(conn, chunked_stream_ends_at_terminator)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/stream?tag=C") NEXT);
	uint64_t id = expect_req(M, c, "GET", "/stream?tag=C", NULL);
	do_write(M, c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 5; i++) {
		do_write(M, c, "7\r\nchunk\r\n\r\n");
		cr_assert_eq(expect_req(M, c, NULL, "/stream?tag=C", NULL), id);
	}
	do_write(M, c, "0\r\n");
	cr_assert_eq(expect_req(M, c, NULL, "/stream?tag=C", NULL), id);
	do_write(M, c, "\r\n");
	expect_next(M, c, id);
	do_write(M, c, RESP_5);
	do_read_eagain(M, c);
	expect_idle(M);
	expect_conn_idle(c);

	/* gunicorn's usual: terminator in one send */
	do_read(M, c, REQ_GET("/stream2") NEXT);
	id = expect_req(M, c, "GET", "/stream2", NULL);
	do_write(M, c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	do_write(M, c, "5\r\nhello\r\n");
	cr_assert_eq(expect_req(M, c, NULL, "/stream2", NULL), id);
	do_write(M, c, "0\r\n\r\n");
	expect_next(M, c, id);

	/* without one behind it, the stream ends at the next step */
	do_write(M, c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	id = expect_answered(M, c);
	do_write(M, c, "5\r\nhello\r\n");
	cr_assert_eq(expect_answered(M, c), id);
	do_write(M, c, "0\r\n\r\n");
	cr_assert_eq(expect_answered(M, c), id);
	do_read_eagain(M, c);
	expect_idle(M);
}

Test(conn, head_ends_at_end_of_head)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "HEAD /doc HTTP/1.1\r\nHost: app.test\r\n\r\n" NEXT);
	uint64_t id = expect_req(M, c, "HEAD", "/doc", "app.test");
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n");
	cr_assert_eq(expect_req(M, c, "HEAD", NULL, NULL), id);
	do_write(M, c, "\r\n");
	expect_next(M, c, id);
	do_write(M, c, RESP_5);
	do_read_eagain(M, c);
	expect_idle(M);

	/* keep-alive: a GET after it has a body again */
	do_read(M, c, REQ_GET("/doc") NEXT);
	id = expect_req(M, c, "GET", "/doc", NULL);
	do_write(M, c, RESP_HEAD_5);
	cr_assert_eq(expect_req(M, c, "GET", "/doc", NULL), id);
	do_write(M, c, "hello");
	expect_next(M, c, id);
}

Test(conn, expect_100_continue)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "PUT /up HTTP/1.1\r\nHost: app.test\r\n"
		      "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n");
	uint64_t id = expect_req(M, c, "PUT", "/up", "app.test");
	do_write(M, c, "HTTP/1.1 100 Continue\r\n\r\n");
	cr_assert_eq(state(c), CONN_REQ, "1xx is not the response");
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_poll_in(M, c);
	do_read(M, c, "0123456789");
	cr_assert_eq(expect_req(M, c, "PUT", "/up", NULL), id);
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	cr_assert_eq(expect_answered(M, c), id);

	/* 103 Early Hints, then the response, in one write: a response that
	 * starts with an interim one is followed to its end */
	do_read(M, c, REQ_GET("/hints"));
	expect_req(M, c, "GET", "/hints", NULL);
	do_write(M, c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
		       RESP_5);
	expect_idle(M);
	expect_conn_idle(c);
}

Test(conn, no_body_statuses_204_304)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "DELETE /x HTTP/1.1\r\nHost: app.test\r\n\r\n" NEXT);
	uint64_t id = expect_req(M, c, "DELETE", "/x", NULL);
	do_write(M, c, "HTTP/1.1 204 No Content\r\n\r\n");
	expect_next(M, c, id);
	do_write(M, c, RESP_5);
	do_read_eagain(M, c);

	do_read(M, c, "GET /y HTTP/1.1\r\nHost: app.test\r\n"
		      "If-None-Match: \"e\"\r\n\r\n" NEXT);
	id = expect_req(M, c, "GET", "/y", NULL);
	do_write(M, c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n"
		       "ETag: \"e\"\r\n\r\n");
	expect_next(M, c, id);
}

Test(conn, http10_close_delimited_ends_at_close)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "GET /old HTTP/1.0\r\n\r\n");
	uint64_t id = expect_req(M, c, "GET", "/old", "");
	do_write(M, c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n");
	do_write(M, c, "part one ");
	int64_t start = M->rec->req_start_ns;
	sleep_ms(60);
	do_write(M, c, "part two");
	int64_t last = conn_get(c)->last_write_ns;
	want_done(M, id);
	sleep_ms(150);
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_close(M, c);
	expect_idle(M);
	expect_gone(c);
	cr_assert_eq(done_ns(M, id), last - start);
	cr_assert_geq(done_ns(M, id), 40 * NS_PER_MS);
}

Test(conn, sendfile_body_with_content_length)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/f") NEXT);
	uint64_t id = expect_req(M, c, "GET", "/f", NULL);
	/* uWSGI file_wrapper: write(headers), sendfile64 */
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
	do_sendfile(M, c, 1048575);
	cr_assert_eq(expect_req(M, c, NULL, "/f", NULL), id);
	do_sendfile(M, c, 1);
	expect_next(M, c, id);
	do_write(M, c, RESP_5);
	do_read_eagain(M, c);
	expect_idle(M);
	/* sendfile on an idle connection starts nothing */
	do_sendfile(M, c, 100);
	expect_idle(M);
	expect_conn_idle(c);
}

Test(conn, epipe_and_econnreset_end_the_request)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, REQ_GET("/e"));
	expect_req(M, c, "GET", "/e", NULL);
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
	do_write_err(M, c, EAGAIN);
	expect_req(M, c, "GET", "/e", NULL);
	do_write_err(M, c, EPIPE);
	expect_idle(M);
	expect_conn_idle(c);
	do_write(M, c, "more body"); /* python may keep writing */
	expect_idle(M);

	/* before any response byte */
	do_read(M, c, REQ_GET("/r"));
	expect_req(M, c, "GET", "/r", NULL);
	do_write_err(M, c, ECONNRESET);
	expect_idle(M);
	do_close(M, c);
}

/* =====================================================================
 * Threads that juggle connections
 * ===================================================================== */

/* Reads request A, then request B on another fd before answering A. */
Test(conn, router_reads_second_request_before_answering)
{
	int a = 1000, b = 1001;

	do_accept(M, a);
	do_read(M, a, REQ_GET("/a"));
	uint64_t ida = expect_req(M, a, "GET", "/a", NULL);
	cr_assert_not(mux(M));
	do_accept(M, b); /* accepting with A unanswered */
	cr_assert(mux(M), "a thread accepting with an unanswered request "
			  "serves several connections");
	do_read(M, b, REQ_GET("/b"));
	cr_assert(mux(M));
	uint64_t idb = expect_req(M, b, "GET", "/b", NULL);
	cr_assert_neq(ida, idb);
	/* Each request stays in flight on its own connection. */
	expect_conn_req(a, ida);
}

Test(conn, router_reads_on_two_accepted_fds)
{
	int a = 1000, b = 1001;

	do_accept(M, a);
	do_accept(M, b);
	cr_assert_not(mux(M));
	do_read(M, a, REQ_GET("/a"));
	cr_assert_not(mux(M));
	uint64_t ida = conn_get(a)->req_id;
	do_read(M, b, REQ_GET("/b"));
	cr_assert(mux(M));
	expect_conn_req(a, ida);
	expect_req(M, b, "GET", "/b", NULL);
}

/* Waits in epoll_wait on the set its own unanswered request's fd is in. */
Test(conn, event_loop_epoll_wait_on_own_set_is_mux)
{
	int a = 1000;

	do_accept(M, a);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, a, EPOLLIN);
	do_read(M, a, "GET /a HTTP/1.1\r\n");
	expect_req(M, a, "GET", "/a", NULL);
	do_epoll_wait(M, EPFD_LISTEN); /* another set: a plain wait */
	cr_assert_not(mux(M));
	do_epoll_wait(M, EPFD);
	cr_assert(mux(M));
}

/* One client's requests on an asyncio loop, one after the other: the
 * connection waits in the loop's set for input only; going back to that
 * wait after the response is the server's next step. */
Test(conn, answered_then_waiting_for_input_in_its_set_ends)
{
	int a = 1000;

	do_accept(M, a);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, a, EPOLLIN);
	do_read(M, a, REQ_GET("/a"));
	do_write(M, a, RESP_5);
	do_epoll_wait(M, EPFD);
	expect_conn_idle(a);
	cr_assert_eq(atomic_load(&M->rec->req_id), 0);
}

/* An event loop: requests interleave, each tracked and ended on its own
 * connection, by its response's framing. */
Test(conn, event_loop_requests_end_each_on_their_connection)
{
	int a = 1000, b = 1001;

	do_accept(M, a);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, a, EPOLLIN);
	do_read(M, a, REQ_GET("/a"));
	uint64_t ida = expect_req(M, a, "GET", "/a", NULL);
	do_epoll_wait(M, EPFD);
	cr_assert(mux(M));
	cr_assert(M->rec->loop, "a loop thread");
	cr_assert_eq(M->rec->loop_epfd, EPFD);
	cr_assert_eq(atomic_load(&M->rec->in_loop_wait), 0);
	cr_assert_gt(atomic_load(&M->rec->loop_left_ns), 0);
	do_accept(M, b);
	do_read(M, b, REQ_GET("/b"));
	uint64_t idb = expect_req(M, b, "GET", "/b", NULL);
	expect_conn_req(a, ida);
	/* /b answered in full: over at its last byte, /a still runs. */
	do_write(M, b, RESP_5);
	expect_conn_idle(b);
	expect_conn_req(a, ida);
	cr_assert_neq(ida, idb);
	do_write(M, a, RESP_5);
	expect_conn_idle(a);
}

/* On a loop, 101 ends the request it answers; the WebSocket's frames
 * after it start none. */
Test(conn, event_loop_upgrade_ends_the_request)
{
	int a = 1000, b = 1001;

	do_accept(M, a);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, a, EPOLLIN);
	do_accept(M, b);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, b, EPOLLIN);
	do_read(M, b, REQ_GET("/b"));
	do_epoll_wait(M, EPFD);
	cr_assert(M->rec->loop);
	do_read(M, a, "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
		      "Connection: Upgrade\r\n\r\n");
	expect_req(M, a, "GET", "/ws", NULL);
	do_write(M, a, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		       "Connection: Upgrade\r\n\r\n");
	expect_conn_idle(a);
	do_read(M, a, "\x81\x82\x00\x00\x00\x00hi");
	expect_conn_idle(a);
}

/* poll and select loops (eventlet's hubs, gevent's libev select and poll
 * backends, asyncio's PollSelector and SelectSelector). */

/* gunicorn sync, socketserver: the listener polled between requests. */
Test(conn, poll_on_listener_between_requests_is_no_loop)
{
	int a = 100;

	do_poll2(M, L, -1); /* before any request */
	cr_assert_not(M->rec && M->rec->loop);
	do_accept_from(M, a, L);
	do_read(M, a, REQ_GET("/a"));
	do_write(M, a, RESP_5);
	do_poll2(M, L, -1); /* answered, not closed yet */
	cr_assert_not(M->rec->loop);
	do_close(M, a);
	do_poll2(M, L, -1);
	do_select2(M, L, 50);
	cr_assert_not(mux(M));
	cr_assert_not(M->rec->loop);
	/* the next request is the thread's, as before */
	do_accept_from(M, a, L);
	do_read(M, a, REQ_GET("/b"));
	expect_req(M, a, "GET", "/b", NULL);
}

/* uWSGI reading a body, a Python socket with a timeout: the thread polls
 * its own connection, its request unanswered. */
Test(conn, poll_on_own_connection_is_no_loop)
{
	int a = 100;

	do_accept_from(M, a, L);
	do_read(M, a, "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
	do_poll2(M, a, -1);
	do_select2(M, a, -1);
	cr_assert_not(mux(M));
	cr_assert_not(M->rec->loop);
	expect_req(M, a, "POST", "/a", NULL);
}

/* eventlet's selects hub: its request unanswered, the thread waits on the
 * listener (the acceptor greenlet's): a loop thread, its waits timed. */
Test(conn, select_on_listener_with_request_unanswered_is_a_loop)
{
	int a = 100;

	do_accept_from(M, a, L);
	do_read(M, a, REQ_GET("/a"));
	do_select2(M, L, -1);
	cr_assert(mux(M));
	cr_assert(M->rec->loop);
	cr_assert_lt(M->rec->loop_epfd, 0);
	cr_assert_eq(atomic_load(&M->rec->in_loop_wait), 0);
	int64_t left = atomic_load(&M->rec->loop_left_ns);
	cr_assert_gt(left, 0);
	/* a later wait on one connection of its own is the loop's too */
	do_poll2(M, a, -1);
	cr_assert_geq(atomic_load(&M->rec->loop_left_ns), left);
}

/* asyncio's PollSelector: connections polled for input all along; a
 * response ends by its framing, not by the next wait. */
Test(conn, poll_loop_response_ends_by_its_framing)
{
	int a = 100, b = 101;

	do_accept(M, a);
	do_accept(M, b);
	do_read(M, a, REQ_GET("/a"));
	uint64_t ida = expect_req(M, a, "GET", "/a", NULL);
	do_poll2(M, a, b); /* another connection in the set: a loop */
	cr_assert(M->rec->loop);
	do_write(M, a, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
	do_poll2(M, a, b);
	struct conn *c = conn_get(a);
	cr_assert_eq(c->state, CONN_RESP);
	cr_assert_eq(c->req_id, ida);
	do_write(M, a, "hello");
	expect_conn_idle(a);
}

/* A request thread that waits in an epoll set of its own (no connection
 * in it) is no loop. */
Test(conn, epoll_wait_on_a_private_set_is_no_loop)
{
	int a = 1000;

	do_accept(M, a);
	do_read(M, a, REQ_GET("/a"));
	do_epoll_wait(M, EPFD_LISTEN + 7);
	cr_assert_not(mux(M));
	cr_assert_not(M->rec->loop);
	expect_req(M, a, "GET", "/a", NULL);
}

/* The same wait after the response started is not multiplexing. */
Test(conn, epoll_wait_after_answering_is_not_mux)
{
	int a = 1000;

	do_accept(M, a);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, a, EPOLLIN | EPOLLOUT);
	do_read(M, a, REQ_GET("/a"));
	do_write(M, a, "HTTP/1.1 200 OK\r\n\r\n");
	do_epoll_wait(M, EPFD);
	cr_assert_not(mux(M));
	expect_req(M, a, "GET", "/a", NULL);
}

/* A pool thread that answered (unframed) on one connection and then reads
 * a request on another: the first is over, and this is no juggling. */
Test(conn, next_connection_ends_answered_request_without_mux)
{
	int a = 1000, b = 1001;

	do_accept(M, a);
	do_accept(M, b);
	do_read(P1, a, REQ_GET("/a"));
	do_write(P1, a, "HTTP/1.1 200 OK\r\n\r\nstream");
	uint64_t ida = expect_req(P1, a, "GET", "/a", NULL);
	do_read(P1, b, REQ_GET("/b"));
	uint64_t idb = expect_req(P1, b, "GET", "/b", NULL);
	cr_assert_neq(ida, idb);
	cr_assert_not(mux(P1));
	expect_conn_idle(a);
}

/* Another thread closes a connection whose request is running (an
 * app-level timeout, a server shutting down): the owner is free. */
Test(conn, close_by_another_thread_mid_request)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/slow"));
	expect_req(P1, c, "GET", "/slow", NULL);
	do_close(M, c);
	expect_idle(P1);
	expect_idle(M);
	expect_gone(c);
	/* P1 writes on the closed (maybe reused, untracked) fd: nothing */
	do_write(P1, c, RESP_5);
	expect_idle(P1);
}

/* Accepting after an answered (but unframed) response ends it, no mux. */
Test(conn, accept_after_answered_request_is_not_mux)
{
	int a = 1000, b = 1001;

	do_accept(M, a);
	do_read(M, a, REQ_GET("/a"));
	do_write(M, a, "HTTP/1.1 200 OK\r\n\r\nstream");
	expect_req(M, a, "GET", "/a", NULL);
	do_accept(M, b);
	expect_idle(M);
	cr_assert_not(mux(M));
	expect_conn_idle(a);
}

/* =====================================================================
 * Descriptors: dup2, close_range, reuse
 * ===================================================================== */

Test(conn, dup2_over_a_tracked_fd)
{
	int a = 1000, b = 1001, plain = 50;

	do_accept(M, a);
	do_accept(M, b);
	do_read(P1, a, REQ_GET("/a"));
	uint64_t ida = expect_req(P1, a, "GET", "/a", NULL);
	uint32_t ga = gen(a);

	do_dup2(P2, b, a); /* a now refers to b's socket */
	expect_idle(P1);
	struct reqinfo in;
	cr_assert_not(conn_describe(a, ga, ida, &in));
	cr_assert_not_null(conn_get(a));
	cr_assert_neq(gen(a), ga);
	expect_conn_idle(a);
	expect_conn_idle(b);

	/* dup2 of an untracked fd over a tracked one: no longer tracked */
	do_read(P1, a, REQ_GET("/a2"));
	expect_req(P1, a, "GET", "/a2", NULL);
	do_dup2(P2, plain, a);
	expect_idle(P1);
	expect_gone(a);
	/* dup2 onto itself changes nothing */
	do_read(P1, b, REQ_GET("/b"));
	uint64_t idb = expect_req(P1, b, "GET", "/b", NULL);
	do_dup2(P1, b, b);
	cr_assert_eq(expect_req(P1, b, "GET", "/b", NULL), idb);
}

/*
 * KNOWN BUG (conn.c, conn_dup): Python's sock.dup() / socket.fromfd() is
 * fcntl(F_DUPFD_CLOEXEC). Done by the thread serving a request on that very
 * connection, conn_dup() runs conn_accepted()'s "the accepting thread is
 * done with its request" step: the request ends mid-way and, since it was
 * unanswered, the thread is marked mux for good (never reported again).
 */
Test(conn, dup_of_own_connection_keeps_the_request)
{
	int a = 1000;

	do_accept(M, a);
	do_read(P1, a, REQ_GET("/a"));
	uint64_t id = expect_req(P1, a, "GET", "/a", NULL);
	do_dupfd(P1, a, 1005);
	cr_assert_not_null(conn_get(1005));
	cr_assert_not(mux(P1), "KNOWN BUG: a dup made the thread mux");
	cr_assert_eq(expect_req(P1, a, "GET", "/a", NULL), id,
		     "KNOWN BUG: a dup ended the request");
	do_write(P1, a, RESP_5);
	cr_assert_eq(expect_answered(P1, a), id);
	do_close(P1, a);
	expect_idle(P1);
	cr_assert_not_null(conn_get(1005), "the dup is still open");
}

Test(conn, close_range_over_a_range)
{
	int fds[] = {255, 256, 700, 1000, 1001, 1002, 5000};
	struct wt *ws[] = {M, P1, P2, P3};

	for (size_t i = 0; i < ARRAY_LEN(fds); i++)
		do_accept(M, fds[i]);
	do_read(P1, 1000, REQ_GET("/1000"));
	do_read(P2, 1001, REQ_GET("/1001"));
	do_read(P3, 1002, REQ_GET("/1002"));
	do_write(P3, 1002, "HTTP/1.1 200 OK\r\n\r\n");

	do_close_range(M, 1001, 1002);
	expect_req(P1, 1000, "GET", "/1000", NULL);
	expect_idle(P2);
	expect_idle(P3);
	expect_gone(1001);
	expect_gone(1002);
	cr_assert_not_null(conn_get(1000));
	cr_assert_not_null(conn_get(5000));

	/* across chunks, up to ~0U (as after fork/exec helpers) */
	do_read(M, 256, REQ_GET("/256"));
	do_close_range(P2, 256, ~0U);
	for (size_t i = 0; i < ARRAY_LEN(fds); i++)
		if (fds[i] >= 256)
			expect_gone(fds[i]);
	cr_assert_not_null(conn_get(255));
	for (size_t i = 0; i < ARRAY_LEN(ws); i++)
		expect_idle(ws[i]);

	/* beyond the table: nothing */
	do_close_range(M, CONN_CHUNKS * CONN_CHUNK, ~0U);
	cr_assert_not_null(conn_get(255));
	do_close_range(M, 0, 3);
	cr_assert_not_null(conn_get(255));
}

Test(conn, fd_reuse_new_gen)
{
	int c = 1000;
	struct reqinfo in;

	do_accept(M, c);
	uint32_t g1 = gen(c);
	do_read(P1, c, REQ_GET("/old"));
	uint64_t id1 = expect_req(P1, c, "GET", "/old", NULL);
	do_close(P1, c); /* unanswered: closed mid-request */
	expect_idle(P1);
	expect_gone(c);
	cr_assert_not(conn_describe(c, g1, id1, &in));

	do_accept(M, c);
	uint32_t g2 = gen(c);
	cr_assert_neq(g1, g2);
	cr_assert_neq(g2, 0);
	cr_assert_not(conn_describe(c, g1, id1, &in));
	do_read(P2, c, REQ_GET("/new"));
	uint64_t id2 = expect_req(P2, c, "GET", "/new", NULL);
	cr_assert_neq(id1, id2);
	cr_assert_not(conn_describe(c, g1, id2, &in), "old gen, new id");
	cr_assert_not(conn_describe(c, g2, id1, &in), "new gen, old id");
	cr_assert(conn_describe(c, g2, id2, &in));
	cr_assert_str_eq(in.target, "/new");
	/* untracked and out-of-range fds */
	cr_assert_not(conn_describe(-1, g2, id2, &in));
	cr_assert_not(conn_describe(1 << 30, g2, id2, &in));
}

/*
 * KNOWN BUG (conn.c, conn_accepted): accept returning an fd whose slot
 * still holds a request means its close was missed (a close the interposer
 * cannot see: glibc-internal __close_nocancel, a raw syscall, a close in a
 * vfork child...). conn_accepted wipes the slot without ending that
 * request: the owner thread keeps req_id forever, and the watchdog reports
 * a request that is long gone (with no description: the gen changed).
 */
Test(conn, accept_over_a_live_slot_ends_its_request)
{
	int c = 1000;

	do_accept(M, c);
	do_read(P1, c, REQ_GET("/lost"));
	expect_req(P1, c, "GET", "/lost", NULL);
	/* the close is not seen; the kernel hands out 1000 again */
	do_accept(M, c);
	expect_conn_idle(c);
	cr_assert_eq(req(P1), 0,
		     "KNOWN BUG: the old request is still running on P1");
}

/* =====================================================================
 * Untrusted bytes
 * ===================================================================== */

Test(conn, non_http_garbage)
{
	int c = 1000;
	static const unsigned char tls[] = {
		0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03,
		0x03, 0xde, 0xad, 0xbe, 0xef, 0x00, '\r', '\n', 0x1b, '[',
	};

	do_accept(M, c);
	do_readn(M, c, tls, sizeof(tls));
	uint64_t id = expect_req(M, c, "", "", "");
	struct reqinfo in;
	cr_assert(conn_describe(c, gen(c), id, &in));
	cr_assert_eq(in.proto, PROTO_OTHER);
	do_readn(M, c, tls, sizeof(tls));
	cr_assert_eq(expect_req(M, c, "", "", ""), id);
	do_writen(M, c, "\x15\x03\x03\x00\x02\x02\x28", 7); /* alert */
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_close(M, c);
	expect_idle(M);

	/* lowercase text, and a zero byte that is not a uwsgi packet */
	do_accept(M, c);
	do_read(M, c, "hello there\n");
	expect_req(M, c, "", "", "");
	do_close(M, c);
	do_accept(M, c);
	do_readn(M, c, "\0\xff\xff\x07garbage", 11);
	expect_req(M, c, "", "", "");
	do_write(M, c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
	expect_answered(M, c);
	do_close(M, c);
	expect_idle(M);
}

/* A text request line that goes bad after a good start. */
Test(conn, http_that_turns_into_garbage)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "GET /x HTTP/9.9\r\n\r\n");
	uint64_t id = expect_req(M, c, "GET", "/x", NULL);
	do_write(M, c, "not http at all");
	cr_assert_eq(expect_req(M, c, NULL, NULL, NULL), id);
	do_read_eagain(M, c); /* the next read entering ends it */
	expect_idle(M);
	do_read(M, c, REQ_GET("/y"));
	expect_req(M, c, NULL, NULL, NULL); /* running, whatever its name */
	do_close(M, c);
	expect_idle(M);
}

static void expect_printable(const char *s)
{
	for (; *s; s++)
		cr_assert((unsigned char)*s >= 0x21 && (unsigned char)*s <= 0x7e,
			  "control or space byte 0x%02x in a description",
			  (unsigned char)*s);
}

Test(conn, injection_is_described_escaped)
{
	int c = 1000;

	do_accept(M, c);
	do_read(M, c, "GET /a\x1b[2J\rX-Log:\x07" "evil HTTP/1.1\r\n"
		      "Host: ev\x1b]0;pwn\x07il\r\n\r\n");
	uint64_t id = expect_req(M, c, "GET",
				 "/a\\x1b[2J\\x0dX-Log:\\x07evil",
				 "ev\\x1b]0;pwn\\x07il");
	struct reqinfo in;
	cr_assert(conn_describe(c, gen(c), id, &in));
	expect_printable(in.method);
	expect_printable(in.target);
	expect_printable(in.host);
	do_write(M, c, RESP_5);
	cr_assert_eq(expect_answered(M, c), id);

	/* a raw LF inside the target: the line is cut, nothing injected */
	do_read(M, c, "GET /b\nInjected: yes HTTP/1.1\r\nHost: x\r\n\r\n");
	id = expect_req(M, c, "GET", NULL, NULL);
	cr_assert(conn_describe(c, gen(c), id, &in));
	expect_printable(in.target);
	cr_assert_null(strstr(in.target, "Injected"));
	do_close(M, c);

	/* a very long target is cut, with an ellipsis */
	static char big[8192];
	int n = snprintf(big, sizeof(big), "GET /");
	memset(big + n, 'a', 3000);
	snprintf(big + n + 3000, sizeof(big) - (size_t)n - 3000,
		 " HTTP/1.1\r\nHost: h\r\n\r\n");
	do_accept(M, c);
	do_read(M, c, big);
	id = expect_req(M, c, "GET", NULL, "h");
	cr_assert(conn_describe(c, gen(c), id, &in));
	cr_assert_lt(strlen(in.target), REQ_TARGET_MAX);
	cr_assert_str_eq(in.target + strlen(in.target) - 3, "...");
}

/* =====================================================================
 * readv / recvmsg paths and odd calls
 * ===================================================================== */

Test(conn, readv_split_across_iovecs)
{
	int c = 1000;
	const char *r = REQ_GET("/v?x=1") NEXT;
	size_t n = strlen(r);
	char a[7], b[4096];
	memcpy(a, r, sizeof(a));
	memcpy(b, r + sizeof(a), n - sizeof(a));
	struct iovec iov[3] = {
		{.iov_base = a, .iov_len = sizeof(a)},
		{.iov_base = b, .iov_len = sizeof(b)},
		{.iov_base = NULL, .iov_len = 100}, /* not reached */
	};

	do_accept(M, c);
	run(M, (struct op){.kind = OP_READV, .fd = c, .iov = iov, .cnt = 3,
			   .n = n});
	expect_req(M, c, "GET", "/v?x=1", "app.test");
	struct iovec w[2] = {
		{.iov_base = (void *)RESP_HEAD_5, .iov_len = strlen(RESP_HEAD_5)},
		{.iov_base = (void *)"hello world", .iov_len = 11},
	};
	/* sendmsg wrote the head and 4 of the body bytes */
	run(M, (struct op){.kind = OP_WRITEV, .fd = c, .iov = w, .cnt = 2,
			   .n = w[0].iov_len + 4});
	uint64_t id = expect_req(M, c, "GET", "/v?x=1", NULL);
	do_write(M, c, "o");
	expect_next(M, c, id);
}

Test(conn, writes_on_idle_connection_start_nothing)
{
	int c = 1000;

	do_accept(M, c);
	do_write(M, c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	expect_idle(M);
	expect_conn_idle(c);
	do_write_err(M, c, EPIPE);
	do_shutdown(M, c);
	do_poll_in(M, c);
	do_epoll_ctl(M, EPFD, EPOLL_CTL_ADD, c, EPOLLIN);
	do_read_eof(M, c);
	expect_conn_idle(c);
	expect_idle(M);
	do_accept(M, 2000000); /* beyond the table: ignored */
	do_accept(M, -1);
	cr_assert_null(conn_get(2000000));
	cr_assert_null(conn_get(-1));
}

Test(conn, ids_increase)
{
	uint64_t a = conn_next_id(), b = conn_next_id();
	cr_assert_gt(b, a);
}

/* A worker that serves one request at a time numbers them one after the
 * other, across its blocks of ids; another thread takes ids of its own. */
Test(conn, ids_count_up_per_thread)
{
	int c = 1000, d = 1001;
	uint64_t prev = 0;

	do_accept(M, c);
	for (int i = 0; i < 3 * THREAD_ID_BLOCK - 10; i++) {
		do_read(M, c, REQ_GET("/n"));
		uint64_t id = expect_req(M, c, "GET", "/n", "app.test");
		if (prev)
			cr_assert_eq(id, prev + 1, "request %d", i);
		else
			cr_assert_leq(id, THREAD_ID_BLOCK, "the process counts from 1");
		prev = id;
		do_write(M, c, RESP_5);
	}
	do_accept(P1, d);
	do_read(P1, d, REQ_GET("/o"));
	uint64_t o = expect_req(P1, d, "GET", "/o", "app.test");
	cr_assert_gt(o, prev, "P1 takes a block of its own");
	do_write(P1, d, RESP_5);
	do_read(M, c, REQ_GET("/n"));
	cr_assert_eq(expect_req(M, c, "GET", "/n", "app.test"), prev + 1,
		     "M goes on with its block");
	do_write(M, c, RESP_5);
}

Test(conn, atfork_child_forgets_connections)
{
	do_accept(M, 1000);
	do_accept(M, 1001);
	conn_atfork_child();
	expect_gone(1000);
	expect_gone(1001);
}

Test(conn, label_begin_end)
{
	struct sd_thread *t = thread_get();
	cr_assert_not_null(t);
	uint64_t id = conn_begin_label(t, "job\n\x1b[1m 7");
	cr_assert_neq(id, 0);
	cr_assert_eq(atomic_load(&t->req_id), id);
	cr_assert_eq(t->fd, -1);
	cr_assert_str_eq(t->label, "job\\x0a\\x1b[1m 7"); /* spaces kept */
	conn_end_label(t);
	cr_assert_eq(atomic_load(&t->req_id), 0);
	conn_end_label(t); /* twice: harmless */
}

/* =====================================================================
 * Random sequences: no crash, and a thread's request always belongs to a
 * live connection that carries it (else the watchdog would report a
 * request that is gone).
 * ===================================================================== */

struct bytes {
	const char *s;
	size_t n;
};
#define B(lit) {lit, sizeof(lit) - 1}

static const struct bytes fuzz_in[] = {
	B(REQ_GET("/f1")),
	B("GET /f2 HTTP/1.1\r\nHost: h\r\n\r\nGET /f3 HTTP/1.1\r\n\r\n"),
	B("POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
	B("HEAD / HTTP/1.1\r\n\r\n"),
	B("GET /partial HTT"),
	B("P/1.1\r\n\r\n"),
	B("\r\n"),
	B("\x16\x03\x01"),
	B("\0\x10\0\0\x0b\0REQUEST_URI\x01\0/"),
	B("garbage"),
};

static const char *const fuzz_out[] = {
	RESP_5,
	RESP_HEAD_5,
	"hello",
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	"3\r\nabc\r\n",
	"0\r\n\r\n",
	"HTTP/1.0 200 OK\r\n\r\n",
	"junk",
};

static void check_invariants(struct wt **ws, int nw)
{
	for (int i = 0; i < nw; i++) {
		struct sd_thread *t = ws[i]->rec;
		if (!t)
			continue;
		uint64_t id = atomic_load(&t->req_id);
		if (!id)
			continue;
		struct conn *c = conn_get(t->fd);
		cr_assert_not_null(c, "thread %d: request %llu on a gone fd %d",
				   i, (unsigned long long)id, t->fd);
		cr_assert_eq(gen_now(c), t->conn_gen, "thread %d: stale gen", i);
		cr_assert_eq(c->req_id, id, "thread %d: conn has %llu, thread %llu",
			     i, (unsigned long long)c->req_id,
			     (unsigned long long)id);
		struct reqinfo in;
		cr_assert(conn_describe(t->fd, t->conn_gen, id, &in));
		expect_printable(in.method);
		expect_printable(in.target);
		expect_printable(in.host);
	}
}

Test(conn, random_sequences_keep_invariants)
{
	struct wt *ws[4] = {M, P1, P2, P3};
	unsigned seed = 12345;
	uint32_t open_mask = 0;

	for (int step = 0; step < 20000; step++) {
		int r = rand_r(&seed);
		struct wt *w = ws[r % 4];
		int fd = 1000 + (r >> 3) % 5;
		int what = (r >> 6) % 16;
		const char *s;
		switch (what) {
		case 0:
			if (!(open_mask & (1u << (fd - 1000)))) {
				do_accept(w, fd);
				open_mask |= 1u << (fd - 1000);
			}
			break;
		case 1: case 2: case 3:
			do_readn(w, fd, fuzz_in[(r >> 10) % ARRAY_LEN(fuzz_in)].s,
				 fuzz_in[(r >> 10) % ARRAY_LEN(fuzz_in)].n);
			break;
		case 4: case 5: case 6: case 7:
			s = fuzz_out[(r >> 10) % ARRAY_LEN(fuzz_out)];
			do_write(w, fd, s);
			break;
		case 8:
			do_sendfile(w, fd, (size_t)((r >> 10) % 10));
			break;
		case 9:
			do_poll_in(w, fd);
			break;
		case 10:
			do_epoll_ctl(w, EPFD, (r >> 10) & 1 ? EPOLL_CTL_ADD
							    : EPOLL_CTL_DEL,
				     fd, EPOLLIN);
			break;
		case 11:
			do_epoll_wait(w, EPFD);
			break;
		case 12:
			do_write_err(w, fd, (r >> 10) & 1 ? EPIPE : EAGAIN);
			break;
		case 13:
			do_shutdown(w, fd);
			break;
		case 14:
			if ((r >> 10) % 8 == 0) {
				do_close(w, fd);
				open_mask &= ~(1u << (fd - 1000));
			} else {
				do_read_eagain(w, fd);
			}
			break;
		case 15:
			if ((r >> 10) % 4 == 0) {
				int nfd = 1000 + (r >> 13) % 5;
				do_dup2(w, fd, nfd);
				if (conn_get(nfd))
					open_mask |= 1u << (nfd - 1000);
				else
					open_mask &= ~(1u << (nfd - 1000));
			} else {
				do_read_eof(w, fd);
			}
			break;
		}
		check_invariants(ws, 4);
	}
}
