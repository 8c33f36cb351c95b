/* Connection table and request state machine. See conn.h. */
#include "conn.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <poll.h>
#include <sys/select.h>

#include "common.h"
#include "escape.h"
#include "glet.h"
#include "thread.h"

_Atomic(struct conn *) conn_chunks[CONN_CHUNKS];
/* One past the highest chunk mapped so far (chunks stay mapped). */
static _Atomic unsigned conn_chunks_high;

uint64_t conn_next_id(void)
{
	return thread_take_ids(1);
}

/*
 * Loop sets: the epoll sets that hold a connection (epoll_ctl ADD/MOD of
 * one) or a listener (the set a thread waited in before it accepted). A
 * thread that waits in one while a request it read is unanswered serves
 * many connections: an event loop. A bit per fd number, cleared on close.
 */
#define LOOP_SETS_MAX 65536
static _Atomic uint64_t loop_sets[LOOP_SETS_MAX / 64];

static inline bool loop_set_has(int epfd)
{
	return (unsigned)epfd < LOOP_SETS_MAX &&
	       (atomic_load_explicit(&loop_sets[(unsigned)epfd / 64],
				     memory_order_relaxed) >> (epfd % 64) & 1);
}

static void loop_set_mark(int epfd)
{
	if ((unsigned)epfd < LOOP_SETS_MAX && !loop_set_has(epfd))
		atomic_fetch_or_explicit(&loop_sets[(unsigned)epfd / 64],
					 (uint64_t)1 << (epfd % 64),
					 memory_order_relaxed);
}

static struct conn *slot_of(int fd)
{
	return conn_slot(fd);
}

/* The seqlock around info[]: one writer (the thread serving the
 * connection), so plain increments, no locked instruction. */
static void info_begin(struct conn *c)
{
	uint32_t s = atomic_load_explicit(&c->info_seq, memory_order_relaxed);
	atomic_store_explicit(&c->info_seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static void info_end(struct conn *c)
{
	uint32_t s = atomic_load_explicit(&c->info_seq, memory_order_relaxed);
	atomic_store_explicit(&c->info_seq, s + 1, memory_order_release);
}

static void info_clear(struct reqraw *in)
{
	in->proto = PROTO_UNKNOWN;
	reqraw_clear(in);
}

static inline __attribute__((always_inline)) void req_publish(struct conn *c, struct sd_thread *t, int64_t now)
{
	uint64_t id = t ? thread_next_id(t) : conn_next_id();
	c->owner = t;
	c->req_id = id;
	c->state = CONN_REQ;
	c->start_ns = now;
	c->last_write_ns = 0;
	/* Bytes that are not HTTP get no HTTP answer either. */
	c->resp_unframed = c->info[c->cur].proto == PROTO_OTHER;
	c->pipelined = false;
	http_resp_init(&c->resp, c->info[c->cur].is_head);
	if (!t)
		return;
	c->glet = glet_current_self();
	t->fd = c->fd;
	t->conn_gen = atomic_load_explicit(&c->gen, memory_order_relaxed);
	t->req_start_ns = now;
	thread_share_begin(t, id, now);
	atomic_store_explicit(&t->req_id, id, memory_order_release);
}

static void req_start_next(struct conn *c, int64_t now);

/*
 * A pipelined request that the server shows it is not serving (it parks
 * the connection, waits for input on it, or turns to other work before
 * answering): gunicorn's gthread drops pipelined requests, for one. It
 * never ran: forget it, without a report or a finished line.
 */
static bool req_cancel_unserved(struct conn *c)
{
	if (c->state != CONN_REQ || !c->pipelined)
		return false;
	struct sd_thread *t = c->owner;
	if (t && atomic_load_explicit(&t->req_id, memory_order_relaxed) == c->req_id) {
		atomic_store_explicit(&t->req_id, 0, memory_order_release);
		thread_share_end(t);
	}
	c->owner = NULL;
	c->req_id = 0;
	c->state = CONN_IDLE;
	c->pipelined = false;
	c->next_ready = false;
	return true;
}

/* The request on c is over at end_ns. */
static void req_end(struct conn *c, int64_t end_ns)
{
	struct sd_thread *t = c->owner;
	uint64_t id = c->req_id;
	if (t && id && atomic_load_explicit(&t->req_id, memory_order_relaxed) == id) {
		atomic_store_explicit(&t->req_id, 0, memory_order_release);
		thread_share_end(t);
		if (unlikely(atomic_load_explicit(&t->reported_id,
						  memory_order_acquire) == id)) {
			t->done_ns = end_ns - c->start_ns;
			atomic_store_explicit(&t->done_id, id, memory_order_release);
			thread_ring();
		}
	}
	if (t && t->mux && id &&
	    unlikely(atomic_load_explicit(&c->reported_id, memory_order_acquire) == id)) {
		c->done_ns = end_ns - c->start_ns;
		atomic_store_explicit(&c->done_id, id, memory_order_release);
		thread_ring();
	}
	c->owner = NULL;
	c->req_id = 0;
	c->state = CONN_IDLE;
	if (c->next_ready)
		req_start_next(c, end_ns);
}

/* A pipelined request, already read, starts now on the same thread. */
static void req_start_next(struct conn *c, int64_t now)
{
	info_begin(c);
	c->cur ^= 1;
	c->next_ready = false;
	info_end(c);
	struct sd_thread *t = thread_get();
	req_publish(c, t, now);
	c->pipelined = true;
}

/* The thread t starts serving a request: it can't still own another. */
static void thread_takes(struct sd_thread *t, struct conn *c, int64_t now)
{
	uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
	if (!id)
		return;
	struct conn *o = slot_of(t->fd);
	if (o && o != c && o->req_id == id && o->owner == t) {
		if (req_cancel_unserved(o))
			return;
		if (o->state == CONN_REQ) {
			/* Reading a new request while the previous one has had
			 * no answer: this thread juggles connections, each
			 * request ends on its own connection. */
			t->mux = true;
		}
		if (t->mux)
			return;
		req_end(o, o->last_write_ns ? o->last_write_ns : now);
	} else if (!o || o != c) {
		atomic_store_explicit(&t->req_id, 0, memory_order_release);
		thread_share_end(t);
	}
}

static void uwsgi_unkeep(struct conn *c);

static inline __attribute__((always_inline)) void req_start(struct conn *c, int64_t now)
{
	struct sd_thread *t = thread_get();
	if (t)
		thread_takes(t, c, now);
	info_begin(c);
	if (unlikely(c->lazy_uwsgi))
		uwsgi_unkeep(c);
	c->fill = c->cur;
	if (c->info[c->cur].proto != PROTO_UNKNOWN &&
	    c->info[c->cur].proto != PROTO_HTTP) {
		/* uwsgi and unknown protocols: one request per connection is
		 * all we can name; keep the description. */
	} else {
		uint8_t proto = c->info[c->cur].proto;
		info_clear(&c->info[c->cur]);
		c->info[c->cur].proto = proto;
	}
	c->lazy_len = 0;
	info_end(c);
	req_publish(c, t, now);
}

static void parse_http(struct conn *c, const char *buf, size_t n)
{
	while (n > 0 && !c->parse_off) {
		size_t used = n;
		struct reqraw *in = &c->info[c->fill & 1];
		int ev = http_req_feed(&c->rp.http, in, buf, n, &used);
		if (used > n)
			used = n;
		switch (ev) {
		case HTTP_REQ_HEAD:
			if (c->fill == c->cur && c->state == CONN_REQ)
				c->resp.no_body = in->is_head;
			if (c->fill != c->cur)
				c->next_ready = true;
			break;
		case HTTP_REQ_NEXT:
			if (c->fill == c->cur && c->state != CONN_IDLE &&
			    !c->info[c->cur].head_complete) {
				/* The parser was between requests: this is the
				 * start of the request this read began. */
				info_clear(in);
				break;
			}
			if (c->state == CONN_IDLE || c->fill != c->cur) {
				if (c->fill != c->cur) {
					/* A third request in flight: stop naming. */
					c->parse_off = true;
					break;
				}
				info_clear(in);
			} else {
				c->fill = c->cur ^ 1;
				info_clear(&c->info[c->fill]);
			}
			break;
		case HTTP_REQ_ERROR:
			c->parse_off = true;
			break;
		default:
			break;
		}
		buf += used;
		n -= used;
		if (ev == HTTP_REQ_MORE)
			break;
	}
}

/* No other request was read with the current one (none pipelined). */
static bool conn_alone(const struct conn *c)
{
	return c->fill == c->cur && !c->next_ready;
}

/*
 * Whether buf, read on c, can be kept unparsed: it began the request being
 * served (nothing parsed for it yet, no other request in flight) and is
 * one whole head. Parsing it would cost the server more than everything
 * else slowdog does for the request, and the head is read only if the
 * request is reported, or when more bytes come before the response.
 */
static bool lazy_ok(const struct conn *c, const struct reqraw *in,
		    const char *buf, size_t n)
{
	return n <= CONN_LAZY_MAX && c->state == CONN_REQ && conn_alone(c) &&
	       in->method_len == 0 && !in->head_complete &&
	       http_req_at_start(&c->rp.http) && http_req_one_head(buf, n);
}

/* Whether a kept head (one whole head, so it ends with a line feed) is a
 * HEAD request, as the parser would tell: idle empty lines skipped. */
static bool kept_head_is_head(const char *buf, size_t n)
{
	size_t k = 0;
	while (buf[k] == '\r' || buf[k] == '\n')
		if (++k == n)
			return false;
	uint32_t w;
	if (n - k < 6)
		return false;
	memcpy(&w, buf + k, sizeof(w));
	return w == 0x44414548 /* "HEAD", little-endian */ && buf[k + 4] == ' ';
}

/*
 * Whether buf, read on c, is kept as a uwsgi packet (conn_lazy_uwsgi): it
 * began the request being served, by a thread that is no event loop (an
 * event loop reads the response's framing, which depends on the method),
 * and holds the packet's whole vars block, small enough. Parsing nginx's
 * variables would cost the server more than everything else slowdog does
 * for the request. The body (or whatever follows) is not kept, and
 * nothing more is parsed on this connection (as after a parsed packet).
 */
static inline __attribute__((always_inline)) bool uwsgi_keep(struct conn *c, const char *buf,
							      size_t n)
{
	if (n < 4 || buf[3] != 0 || c->state != CONN_REQ || c->cur != 0 ||
	    !conn_alone(c) || (c->owner && c->owner->mux))
		return false;
	size_t size = 4 + ((size_t)(unsigned char)buf[1] |
			   (size_t)(unsigned char)buf[2] << 8);
	if (size > n || size > CONN_LAZY_UWSGI_MAX)
		return false;
	memcpy(conn_lazy_uwsgi(c), buf, size);
	c->lazy_len = (uint16_t)size;
	c->lazy_uwsgi = true;
	c->parse_off = true;
	return true;
}

/* The kept packet's description, parsed into info[0] as the packet would
 * have been when it was read (within info_begin/info_end). */
static void uwsgi_unkeep(struct conn *c)
{
	char pkt[CONN_LAZY_UWSGI_MAX];
	size_t k = c->lazy_len < sizeof(pkt) ? c->lazy_len : sizeof(pkt);
	memcpy(pkt, conn_lazy_uwsgi(c), k);
	c->lazy_len = 0;
	c->lazy_uwsgi = false;
	struct reqraw *in = &c->info[0];
	info_clear(in);
	in->proto = PROTO_UWSGI;
	uwsgi_req_init(&c->rp.uwsgi);
	size_t used;
	uwsgi_req_feed(&c->rp.uwsgi, in, pkt, k, &used);
}

static void parse_request(struct conn *c, const char *buf, size_t n)
{
	if (c->parse_off || n == 0)
		return;
	struct reqraw *in = &c->info[c->fill & 1];
	/* Body bytes short of the body's end (an upload read in pieces):
	 * only counted, nothing to describe. */
	if (in->proto == PROTO_HTTP && !c->lazy_len &&
	    http_req_body_within(&c->rp.http, n))
		return;
	info_begin(c);
	if (in->proto == PROTO_UNKNOWN) {
		if ((unsigned char)buf[0] == 0) {
			if (uwsgi_keep(c, buf, n)) {
				info_end(c);
				return;
			}
			in->proto = PROTO_UWSGI;
			uwsgi_req_init(&c->rp.uwsgi);
		} else if (http_looks_like_request(buf, n)) {
			in->proto = PROTO_HTTP;
		} else {
			in->proto = PROTO_OTHER;
			c->parse_off = true;
		}
	}
	if (in->proto == PROTO_UWSGI) {
		size_t used;
		int ev = uwsgi_req_feed(&c->rp.uwsgi, in, buf, n, &used);
		if (ev != UWSGI_MORE)
			c->parse_off = true;
		if (ev == UWSGI_DONE && c->state == CONN_REQ)
			c->resp.no_body = in->is_head;
	} else if (in->proto == PROTO_HTTP) {
		if (c->lazy_len) {
			/* More bytes before the response: the kept head first,
			 * out of the slot the parser may fill next. */
			char head[CONN_LAZY_MAX];
			size_t k = c->lazy_len < sizeof(head) ? c->lazy_len : sizeof(head);
			memcpy(head, conn_lazy(c), k);
			c->lazy_len = 0;
			parse_http(c, head, k);
		} else if (lazy_ok(c, in, buf, n)) {
			memcpy(conn_lazy(c), buf, n);
			c->lazy_len = (uint16_t)n;
			in->is_head = kept_head_is_head(buf, n);
			c->resp.no_body = in->is_head;
			info_end(c);
			return;
		}
		parse_http(c, buf, n);
	}
	info_end(c);
}

static void slot_reset(int fd, bool accepted);

void conn_accepted(int fd)
{
	slot_reset(fd, true);
}

/* What slot_reset keeps: gen (cleared on its own) and gen_last. */
_Static_assert(offsetof(struct conn, state) == 2 * sizeof(uint32_t),
	       "gen and gen_last come first in struct conn");

static void slot_reset(int fd, bool accepted)
{
	if (fd < 0 || (unsigned)fd >= CONN_CHUNKS * CONN_CHUNK)
		return;
	unsigned ci = (unsigned)fd >> CONN_CHUNK_BITS;
	struct conn *chunk = atomic_load_explicit(&conn_chunks[ci],
						  memory_order_acquire);
	if (!chunk) {
		void *m = mmap(NULL, sizeof(struct conn) * CONN_CHUNK,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED)
			return;
		struct conn *expect = NULL;
		if (!atomic_compare_exchange_strong(&conn_chunks[ci], &expect, m)) {
			munmap(m, sizeof(struct conn) * CONN_CHUNK);
			chunk = expect;
		} else {
			chunk = m;
			unsigned h = atomic_load(&conn_chunks_high);
			while (h < ci + 1 &&
			       !atomic_compare_exchange_weak(&conn_chunks_high, &h, ci + 1))
				;
		}
	}
	struct conn *c = &chunk[fd & (CONN_CHUNK - 1)];

	/* The accepting thread is done with any answered request. */
	struct sd_thread *t = accepted ? thread_self() : NULL;
	if (t) {
		/* It waited for the listener there. */
		if (t->last_epfd >= 0)
			loop_set_mark(t->last_epfd);
		uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
		struct conn *o = id && !t->mux ? slot_of(t->fd) : NULL;
		if (o && o != c && o->req_id == id && !req_cancel_unserved(o)) {
			if (o->state == CONN_REQ)
				t->mux = true;
			else
				req_end(o, o->last_write_ns ? o->last_write_ns : clock_coarse_ns());
		}
	}

	/* The fd number is handed out again: whatever was on it is closed,
	 * even if we missed the close. */
	if (atomic_load_explicit(&c->gen, memory_order_relaxed))
		conn_shutdown(c);
	atomic_store_explicit(&c->gen, 0, memory_order_relaxed);
	/* The parsers' state is set up by its own init when used: the
	 * request parser's here (uwsgi's when a packet shows), the response
	 * parser's at each request. */
	memset((char *)c + offsetof(struct conn, state), 0,
	       offsetof(struct conn, rp) - offsetof(struct conn, state));
	c->fd = fd;
	c->epfd = -1;
	http_req_init(&c->rp.http);
	info_begin(c);
	info_clear(&c->info[0]);
	info_clear(&c->info[1]);
	info_end(c);
	uint32_t g = c->gen_last + 1;
	if (g == 0)
		g = 1;
	c->gen_last = g;
	atomic_store_explicit(&c->gen, g, memory_order_release);
}

void conn_read_enter_slow(struct conn *c)
{
	req_cancel_unserved(c);
	if (c->state == CONN_RESP)
		req_end(c, c->last_write_ns ? c->last_write_ns : clock_coarse_ns());
}

/*
 * The usual read that begins a request: a GET head, whole and alone. Kept
 * as parse_request keeps it (lazy_ok), without its general path: the
 * method is known, so is what the parser's first look would tell (an HTTP
 * request, not HEAD).
 */
static inline __attribute__((always_inline)) bool keep_get(struct conn *c, const char *buf,
							   size_t n)
{
	struct reqraw *in = &c->info[c->fill & 1];
	uint32_t w;
	if (c->parse_off || n < 4 || n > CONN_LAZY_MAX ||
	    (in->proto != PROTO_UNKNOWN && in->proto != PROTO_HTTP))
		return false;
	memcpy(&w, buf, sizeof(w));
	if (w != 0x20544547 /* "GET ", little-endian */ || !lazy_ok(c, in, buf, n))
		return false;
	info_begin(c);
	in->proto = PROTO_HTTP;
	memcpy(conn_lazy(c), buf, n);
	c->lazy_len = (uint16_t)n;
	in->is_head = false;
	c->resp.no_body = false;
	info_end(c);
	return true;
}

/* The same for a uwsgi packet that came whole (uwsgi_keep): parse_request
 * would keep it, having learned no more than that its first byte is 0. */
static inline __attribute__((always_inline)) bool keep_packet(struct conn *c, const char *buf,
							      size_t n)
{
	if (c->parse_off || n == 0 || buf[0] != 0 ||
	    c->info[c->fill & 1].proto != PROTO_UNKNOWN)
		return false;
	info_begin(c);
	bool kept = uwsgi_keep(c, buf, n);
	info_end(c);
	return kept;
}

void conn_read_begin(struct conn *c, const void *buf, size_t n)
{
	req_start(c, clock_coarse_ns());
	if (!keep_get(c, buf, n) && !keep_packet(c, buf, n))
		parse_request(c, buf, n);
}

void conn_read_more(struct conn *c, const void *buf, size_t n)
{
	parse_request(c, buf, n);
}

static void read_iov(struct conn *c, const struct iovec *iov, int cnt, size_t n)
{
	for (int i = 0; i < cnt && n > 0; i++) {
		size_t k = iov[i].iov_len < n ? iov[i].iov_len : n;
		parse_request(c, iov[i].iov_base, k);
		n -= k;
	}
}

void conn_read_iov_begin(struct conn *c, const struct iovec *iov, int cnt, size_t n)
{
	req_start(c, clock_coarse_ns());
	read_iov(c, iov, cnt, n);
}

void conn_read_iov_more(struct conn *c, const struct iovec *iov, int cnt, size_t n)
{
	read_iov(c, iov, cnt, n);
}

void conn_wait_input(struct conn *c)
{
	/* On an event loop the connection is polled for input all along
	 * (asyncio reads while it answers): its response ends by its
	 * framing, not here. */
	if (unlikely(c->owner && c->owner->mux)) {
		req_cancel_unserved(c);
		return;
	}
	conn_read_enter(c);
}

void conn_stall_end(struct sd_thread *t)
{
	/* A stall the watchdog reported ends here. */
	int64_t at = atomic_exchange(&t->stall_at, 0);
	if (at) {
		t->stall_end_ns = clock_coarse_ns();
		atomic_store_explicit(&t->stall_done, at, memory_order_release);
		thread_ring();
	}
}

bool conn_epoll_wait_slow(struct sd_thread *t, int epfd)
{
	uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
	struct conn *o = slot_of(t->fd);
	bool held = o && o->req_id == id && o->state == CONN_REQ;
	if (o && id && o->req_id == id && o->state == CONN_RESP &&
	    o->epfd == epfd && o->ep_in && o->owner == t) {
		/* Waiting for input on its own connection, in the set
		 * it serves from, once it has answered (an asyncio
		 * loop between one client's requests): the server's
		 * next step, the request is over. */
		req_end(o, o->last_write_ns ? o->last_write_ns : clock_coarse_ns());
		return false;
	}
	/* Waiting on the very epoll set that holds its own request's
	 * socket, or on one that holds connections, before answering
	 * its request: an event loop, not a request thread. */
	bool set = loop_set_has(epfd) || (held && o->epfd == epfd);
	if (!set || !(held || t->mux))
		return false;
	t->mux = true;
	t->loop_epfd = epfd;
	t->loop = true;
	conn_loop_enter(t);
	return true;
}


void conn_listener(int fd)
{
	loop_set_mark(fd);
}

/*
 * A poll or select wait of t's that conn_wait_maybe_loop let through: is
 * it an event loop's? The definition: a thread that waits on many
 * connections in one call. A thread that is already a poll loop waits in
 * its loop when the set holds a listener or a tracked connection; another
 * becomes one when it waits, its own request unanswered (or serving many
 * at once already), on a set that holds a listener or a connection other
 * than its own. A thread server waiting on its listener between requests
 * (gunicorn sync, socketserver), or on its own connection while it reads
 * a request (uWSGI, a Python socket's timeout), does not.
 */
static bool poll_loop_fd(struct sd_thread *t, struct conn *own, int fd)
{
	if (loop_set_has(fd))
		return true; /* a listener (or an epoll set that holds one) */
	struct conn *c = conn_get(fd);
	return c && (c != own || t->loop);
}

static bool poll_loop_mark(struct sd_thread *t, bool found)
{
	if (!found)
		return false;
	if (!t->loop) {
		uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
		struct conn *o = id ? slot_of(t->fd) : NULL;
		bool held = o && o->req_id == id && o->state == CONN_REQ;
		if (!held && !t->mux)
			return false;
		t->mux = true;
		t->loop_epfd = -1;
		t->loop = true;
	}
	conn_loop_enter(t);
	return true;
}

static struct conn *own_conn(struct sd_thread *t)
{
	uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
	struct conn *o = id ? slot_of(t->fd) : NULL;
	return o && o->req_id == id ? o : NULL;
}

bool conn_poll_wait(struct sd_thread *t, const struct pollfd *p, nfds_t n)
{
	struct conn *own = own_conn(t);
	bool found = false;
	for (nfds_t i = 0; i < n && !found; i++)
		if (p[i].events & (POLLIN | POLLRDNORM))
			found = poll_loop_fd(t, own, p[i].fd);
	return poll_loop_mark(t, found);
}

bool conn_select_wait(struct sd_thread *t, int nfds, const fd_set *rd)
{
	if (!rd || nfds <= 0)
		return false;
	if (nfds > FD_SETSIZE)
		nfds = FD_SETSIZE;
	struct conn *own = own_conn(t);
	const unsigned long *w = (const unsigned long *)rd;
	int bits = 8 * (int)sizeof(unsigned long);
	bool found = false;
	for (int i = 0; i * bits < nfds && !found; i++) {
		unsigned long word = w[i];
		while (word && !found) {
			int fd = i * bits + __builtin_ctzl(word);
			word &= word - 1;
			if (fd >= nfds)
				break;
			found = poll_loop_fd(t, own, fd);
		}
	}
	return poll_loop_mark(t, found);
}

void conn_epoll_ctl(struct conn *c, int epfd, int op, uint32_t events)
{
	if (op == EPOLL_CTL_DEL) {
		c->ep_in = false;
		return;
	}
	c->epfd = epfd;
	c->ep_in = (events & EPOLLIN) && !(events & EPOLLOUT);
	loop_set_mark(epfd);
	req_cancel_unserved(c);
	/* gthread parks a keep-alive connection this way after its response
	 * (an event loop's response ends by its framing). */
	if (c->state == CONN_RESP && (events & EPOLLIN) &&
	    !(c->owner && c->owner->mux))
		req_end(c, c->last_write_ns ? c->last_write_ns : clock_coarse_ns());
}

static inline __attribute__((always_inline)) void write_bytes(struct conn *c, const char *buf,
							       size_t n)
{
	while (n > 0) {
		if (c->state == CONN_IDLE)
			return;
		if (c->resp_unframed) {
			c->state = CONN_RESP;
			return;
		}
		/* Where a response ends matters only when another request,
		 * read with this one, waits its turn behind it, or on an event
		 * loop (whose next step on the connection may be long after).
		 * Otherwise the request ends at the server's next step, as one
		 * whose response has no framing does: no parsing on the way. */
		bool loop = c->owner && c->owner->mux;
		if (c->state == CONN_REQ && conn_alone(c) && !loop &&
		    http_resp_final_start(&c->resp, buf, n)) {
			c->resp_unframed = true;
			c->state = CONN_RESP;
			c->pipelined = false;
			return;
		}
		size_t used = n;
		int ev = http_resp_feed(&c->resp, buf, n, &used);
		if (used > n)
			used = n;
		if (ev == HTTP_RESP_ERROR) {
			c->resp_unframed = true;
			c->state = CONN_RESP;
			return;
		}
		if (c->resp.final) {
			c->state = CONN_RESP;
			c->pipelined = false;
			if (loop && c->resp.status == 101) {
				/* A WebSocket (or other protocol) from here on:
				 * the request was the upgrade. */
				c->upgraded = true;
				c->next_ready = false;
				req_end(c, c->last_write_ns);
				return;
			}
		}
		if (ev != HTTP_RESP_DONE)
			return;
		c->state = CONN_RESP;
		req_end(c, c->last_write_ns);
		buf += used;
		n -= used;
	}
}

static inline __attribute__((always_inline)) bool write_begin(struct conn *c)
{
	if (c->state == CONN_IDLE) {
		if (!c->next_ready)
			return false;
		req_start_next(c, clock_coarse_ns());
	}
	c->last_write_ns = clock_coarse_ns();
	return true;
}

void conn_write_first(struct conn *c, const void *buf, size_t n)
{
	if (n == 0 || !write_begin(c))
		return;
	write_bytes(c, buf, n);
}

void conn_write_iov_first(struct conn *c, const struct iovec *iov, int cnt, size_t n)
{
	if (n == 0 || !write_begin(c))
		return;
	for (int i = 0; i < cnt && n > 0; i++) {
		size_t k = iov[i].iov_len < n ? iov[i].iov_len : n;
		write_bytes(c, iov[i].iov_base, k);
		n -= k;
		/* the rest would change nothing (see write_bytes) */
		if (c->resp_unframed && c->state == CONN_RESP)
			break;
	}
}

void conn_sendfile_done(struct conn *c, size_t n)
{
	if (n == 0 || !write_begin(c))
		return;
	if (c->resp_unframed) {
		c->state = CONN_RESP;
		return;
	}
	int ev = http_resp_skip(&c->resp, n);
	c->state = CONN_RESP;
	if (ev == HTTP_RESP_ERROR)
		c->resp_unframed = true;
	else if (ev == HTTP_RESP_DONE)
		req_end(c, c->last_write_ns);
}

void conn_write_failed(struct conn *c, int err)
{
	if ((err == EPIPE || err == ECONNRESET) && c->state != CONN_IDLE) {
		c->next_ready = false;
		req_end(c, clock_coarse_ns());
	}
}

void conn_shutdown(struct conn *c)
{
	if (c->state != CONN_IDLE) {
		c->next_ready = false;
		req_end(c, c->last_write_ns ? c->last_write_ns : clock_coarse_ns());
	}
}

void conn_closed(int fd)
{
	if (unlikely(loop_set_has(fd))) {
		atomic_fetch_and(&loop_sets[(unsigned)fd / 64],
				 ~((uint64_t)1 << (fd % 64)));
		struct sd_thread *t = thread_self();
		if (t && t->last_epfd == fd)
			t->last_epfd = -1;
	}
	struct conn *c = conn_get(fd);
	if (!c)
		return;
	conn_shutdown(c);
	atomic_store_explicit(&c->gen, 0, memory_order_release);
}

void conn_close_range(unsigned lo, unsigned hi)
{
	if (lo >= CONN_CHUNKS * CONN_CHUNK)
		return;
	if (hi >= CONN_CHUNKS * CONN_CHUNK)
		hi = CONN_CHUNKS * CONN_CHUNK - 1;
	for (unsigned ci = lo >> CONN_CHUNK_BITS; ci <= hi >> CONN_CHUNK_BITS; ci++) {
		if (!atomic_load_explicit(&conn_chunks[ci], memory_order_acquire))
			continue;
		unsigned a = ci << CONN_CHUNK_BITS, b = a + CONN_CHUNK - 1;
		if (a < lo)
			a = lo;
		if (b > hi)
			b = hi;
		for (unsigned fd = a; fd <= b; fd++)
			conn_closed((int)fd);
	}
}

void conn_duped(int oldfd, int newfd)
{
	if (oldfd == newfd || (!conn_get(newfd) && !conn_get(oldfd)))
		return;
	conn_closed(newfd);
	if (conn_get(oldfd))
		slot_reset(newfd, false);
}

bool conn_describe(int fd, uint32_t gen, uint64_t req_id, struct reqinfo *out)
{
	struct conn *c = slot_of(fd);
	if (!c)
		return false;
	struct reqraw raw;
	static char head[CONN_LAZY_UWSGI_MAX]; /* the watchdog's alone */
	for (int tries = 0; tries < 100; tries++) {
		uint32_t s1 = atomic_load_explicit(&c->info_seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		if (atomic_load_explicit(&c->gen, memory_order_relaxed) != gen)
			return false;
		uint8_t cur = c->cur & 1;
		memcpy(&raw, &c->info[cur], sizeof(raw));
		bool uw = c->lazy_uwsgi;
		size_t lazy = c->lazy_len;
		if (lazy > (uw ? CONN_LAZY_UWSGI_MAX : CONN_LAZY_MAX))
			lazy = uw ? CONN_LAZY_UWSGI_MAX : CONN_LAZY_MAX;
		memcpy(head, uw ? conn_lazy_uwsgi(c) : (char *)&c->info[cur ^ 1], lazy);
		uint64_t id = c->req_id;
		atomic_thread_fence(memory_order_acquire);
		uint32_t s2 = atomic_load_explicit(&c->info_seq, memory_order_relaxed);
		if (s1 != s2)
			continue;
		if (id != req_id)
			return false;
		if (lazy && uw) {
			/* The packet as the serving thread would have parsed it. */
			struct uwsgi_req u;
			size_t used;
			uwsgi_req_init(&u);
			reqraw_clear(&raw);
			raw.proto = PROTO_UWSGI;
			uwsgi_req_feed(&u, &raw, head, lazy, &used);
		} else if (lazy) {
			/* The head as the serving thread would have parsed it. */
			struct http_req p;
			size_t used;
			http_req_init(&p);
			reqraw_clear(&raw);
			http_req_feed(&p, &raw, head, lazy, &used);
		}
		reqraw_render(&raw, out);
		return true;
	}
	return false;
}

int conn_fd_limit(void)
{
	return (int)atomic_load(&conn_chunks_high) * CONN_CHUNK;
}

void conn_atfork_child(void)
{
	for (unsigned ci = 0; ci < CONN_CHUNKS; ci++) {
		struct conn *chunk = atomic_load(&conn_chunks[ci]);
		if (!chunk)
			continue;
		for (unsigned i = 0; i < CONN_CHUNK; i++)
			atomic_store(&chunk[i].gen, 0);
	}
}

uint64_t conn_begin_label(struct sd_thread *t, const char *label)
{
	int64_t now = clock_coarse_ns();
	thread_takes(t, NULL, now);
	/* Spaces read well in a label; everything else as in requests. */
	size_t pos = 0;
	t->label[0] = '\0';
	for (const char *p = label ? label : ""; *p && pos < sizeof(t->label) - 1; p++) {
		if (*p == ' ') {
			t->label[pos++] = ' ';
			t->label[pos] = '\0';
		} else {
			escape_append(t->label, sizeof(t->label), &pos, p, 1);
		}
	}
	uint64_t id = thread_next_id(t);
	t->fd = -1;
	t->conn_gen = 0;
	t->req_start_ns = now;
	thread_share_begin(t, id, now);
	atomic_store_explicit(&t->req_id, id, memory_order_release);
	return id;
}

void conn_end_label(struct sd_thread *t)
{
	uint64_t id = atomic_load_explicit(&t->req_id, memory_order_relaxed);
	if (!id || t->fd != -1)
		return;
	atomic_store_explicit(&t->req_id, 0, memory_order_release);
	thread_share_end(t);
	if (atomic_load_explicit(&t->reported_id, memory_order_acquire) == id) {
		t->done_ns = clock_coarse_ns() - t->req_start_ns;
		atomic_store_explicit(&t->done_id, id, memory_order_release);
		thread_ring();
	}
}
