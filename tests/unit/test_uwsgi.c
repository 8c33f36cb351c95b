/*
 * uwsgi request packets, built the way nginx (uwsgi_pass with the stock
 * uwsgi_params) and the uWSGI http router send them, and broken ones.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ids_dump.h"
#include "uwsgi.h"

struct pkt {
	unsigned char b[70000];
	size_t n;
};

static void pkt_begin(struct pkt *p)
{
	p->n = 4;
	p->b[0] = 0;
	p->b[3] = 0;
}

static void pkt_u16(struct pkt *p, size_t v)
{
	p->b[p->n++] = (unsigned char)(v & 0xff);
	p->b[p->n++] = (unsigned char)(v >> 8);
}

static void pkt_varn(struct pkt *p, const char *k, size_t kn, const char *v,
		     size_t vn)
{
	pkt_u16(p, kn);
	memcpy(p->b + p->n, k, kn);
	p->n += kn;
	pkt_u16(p, vn);
	memcpy(p->b + p->n, v, vn);
	p->n += vn;
}

static void pkt_var(struct pkt *p, const char *k, const char *v)
{
	pkt_varn(p, k, strlen(k), v, strlen(v));
}

/* Sets datasize from what was added; returns the header+vars size. */
static size_t pkt_end(struct pkt *p)
{
	size_t ds = p->n - 4;
	p->b[1] = (unsigned char)(ds & 0xff);
	p->b[2] = (unsigned char)(ds >> 8);
	return p->n;
}

static void pkt_body(struct pkt *p, const char *body)
{
	memcpy(p->b + p->n, body, strlen(body));
	p->n += strlen(body);
}

/* nginx 1.22 uwsgi_params order, then the request headers */
static size_t pkt_nginx(struct pkt *p, const char *method, const char *uri,
			const char *path, const char *query, const char *host)
{
	pkt_begin(p);
	pkt_var(p, "QUERY_STRING", query);
	pkt_var(p, "REQUEST_METHOD", method);
	pkt_var(p, "CONTENT_TYPE", "");
	pkt_var(p, "CONTENT_LENGTH", "");
	if (uri)
		pkt_var(p, "REQUEST_URI", uri);
	pkt_var(p, "PATH_INFO", path);
	pkt_var(p, "DOCUMENT_ROOT", "/usr/share/nginx/html");
	pkt_var(p, "SERVER_PROTOCOL", "HTTP/1.1");
	pkt_var(p, "REQUEST_SCHEME", "http");
	pkt_var(p, "REMOTE_ADDR", "127.0.0.1");
	pkt_var(p, "REMOTE_PORT", "54321");
	pkt_var(p, "SERVER_PORT", "8080");
	pkt_var(p, "SERVER_NAME", "localhost");
	if (host)
		pkt_var(p, "HTTP_HOST", host);
	pkt_var(p, "HTTP_USER_AGENT", "curl/7.88.1");
	pkt_var(p, "HTTP_ACCEPT", "*/*");
	return pkt_end(p);
}

struct udrv {
	struct uwsgi_req u;
	struct reqraw raw;   /* what the parser fills */
	struct reqinfo info; /* ... as a report shows it */
	int ev;          /* last event */
	size_t done_at;  /* absolute offset just after the vars */
	size_t off;
};

static void udrv_init(struct udrv *d)
{
	memset(d, 0, sizeof(*d));
	uwsgi_req_init(&d->u);
}

static void udrv_feed(struct udrv *d, const void *buf, size_t n)
{
	size_t used = 12345;

	if (d->ev != UWSGI_MORE)
		return; /* the caller stops feeding vars after DONE/ERROR */
	d->ev = uwsgi_req_feed(&d->u, &d->raw, buf, n, &used);
	reqraw_render(&d->raw, &d->info);
	cr_assert_leq(used, n);
	if (d->ev == UWSGI_DONE) {
		d->done_at = d->off + used;
		cr_assert(d->info.head_complete);
	} else {
		cr_assert_eq(used, n);
		cr_assert(!d->info.head_complete);
	}
	d->off += used;
}

static void info_safe(const struct reqinfo *info)
{
	const char *fields[] = {info->method, info->target, info->host};
	size_t caps[] = {sizeof(info->method), sizeof(info->target),
			 sizeof(info->host)};
	for (int f = 0; f < 3; f++) {
		cr_assert_lt(strnlen(fields[f], caps[f]), caps[f]);
		for (const char *s = fields[f]; *s; s++)
			cr_assert((unsigned char)*s >= 0x21 &&
				  (unsigned char)*s <= 0x7e);
	}
}

static void udrv_same(const struct udrv *a, const struct udrv *b)
{
	cr_assert_eq(a->ev, b->ev);
	cr_assert_eq(a->done_at, b->done_at);
	cr_assert_str_eq(a->info.method, b->info.method);
	cr_assert_str_eq(a->info.target, b->info.target);
	cr_assert_str_eq(a->info.host, b->info.host);
	cr_assert_eq(a->info.proto, b->info.proto);
	cr_assert_eq(a->info.is_head, b->info.is_head);
	cr_assert_eq(a->info.head_complete, b->info.head_complete);
	info_safe(&a->info);
	char da[8192], db[8192];
	cr_assert_str_eq(ids_dump(&a->info, da, sizeof(da)),
			 ids_dump(&b->info, db, sizeof(db)));
	ids_safe(&a->info);
}

static void udrv_run(struct udrv *d, const void *buf, size_t n)
{
	udrv_init(d);
	udrv_feed(d, buf, n);
}

/* Byte by byte: the outcome want. */
static void same_byte_by_byte(const unsigned char *buf, size_t n,
			      const struct udrv *want)
{
	struct udrv d;

	udrv_init(&d);
	for (size_t i = 0; i < n; i++)
		udrv_feed(&d, buf + i, 1);
	udrv_same(want, &d);
}

/* Byte by byte and cut at every pair of points: same outcome. */
static void all_splits(const unsigned char *buf, size_t n,
		       const struct udrv *want)
{
	struct udrv d;

	same_byte_by_byte(buf, n, want);
	size_t step = n > 400 ? 5 : 1;
	for (size_t a = 0; a <= n; a++) {
		for (size_t b = a; b <= n; b += step) {
			udrv_init(&d);
			udrv_feed(&d, buf, a);
			udrv_feed(&d, buf + a, b - a);
			udrv_feed(&d, buf + b, n - b);
			udrv_same(want, &d);
		}
	}
}

static void expect(const struct udrv *d, const char *method,
		   const char *target, const char *host)
{
	cr_assert_eq(d->info.proto, PROTO_UWSGI);
	cr_assert_str_eq(d->info.method, method);
	cr_assert_str_eq(d->info.target, target);
	cr_assert_str_eq(d->info.host, host);
	info_safe(&d->info);
}

Test(uwsgi, nginx_get)
{
	static struct pkt p;
	size_t vars = pkt_nginx(&p, "GET", "/search?q=slow&x=1", "/search",
				"q=slow&x=1", "example.com:8080");
	struct udrv d;

	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_eq(d.done_at, vars);
	expect(&d, "GET", "/search?q=slow&x=1", "example.com:8080");
	cr_assert(!d.info.is_head);
	all_splits(p.b, p.n, &d);
}

Test(uwsgi, nginx_post_with_body_in_the_same_read)
{
	static struct pkt p;
	size_t vars = pkt_nginx(&p, "POST", "/api", "/api", "", "h");
	pkt_body(&p, "{\"k\": 1}\0\0\x10\0garbage that is body");
	struct udrv d;

	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_eq(d.done_at, vars);
	expect(&d, "POST", "/api", "h");
	all_splits(p.b, p.n, &d);
}

Test(uwsgi, head_sets_is_head)
{
	static struct pkt p;
	pkt_nginx(&p, "HEAD", "/", "/", "", "h");
	struct udrv d;

	udrv_run(&d, p.b, p.n);
	cr_assert(d.info.is_head);
	pkt_nginx(&p, "HEADS", "/", "/", "", "h");
	udrv_run(&d, p.b, p.n);
	cr_assert(!d.info.is_head);
}

Test(uwsgi, router_order)
{
	/* the uWSGI http router: method and URI first, host among headers */
	static struct pkt p;
	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	pkt_var(&p, "REQUEST_URI", "/r?tag=A");
	pkt_var(&p, "QUERY_STRING", "tag=A");
	pkt_var(&p, "PATH_INFO", "/r");
	pkt_var(&p, "SERVER_PROTOCOL", "HTTP/1.1");
	pkt_var(&p, "HTTP_HOST", "127.0.0.1:9090");
	pkt_var(&p, "HTTP_CONNECTION", "close");
	pkt_var(&p, "REMOTE_ADDR", "127.0.0.1");
	pkt_var(&p, "REMOTE_PORT", "40000");
	pkt_end(&p);
	struct udrv d;

	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_eq(d.done_at, p.n);
	expect(&d, "GET", "/r?tag=A", "127.0.0.1:9090");
	all_splits(p.b, p.n, &d);
}

Test(uwsgi, path_info_and_query_without_request_uri)
{
	static struct pkt p;
	struct udrv d;

	/* query before path (nginx order) */
	pkt_nginx(&p, "GET", NULL, "/p", "a=1&b=%20", NULL);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	expect(&d, "GET", "/p?a=1&b=%20", "");
	all_splits(p.b, p.n, &d);

	/* query after path */
	pkt_begin(&p);
	pkt_var(&p, "PATH_INFO", "/q");
	pkt_var(&p, "QUERY_STRING", "z=9");
	pkt_var(&p, "REQUEST_METHOD", "PUT");
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	expect(&d, "PUT", "/q?z=9", "");

	/* empty query: no "?" */
	pkt_nginx(&p, "GET", NULL, "/empty", "", NULL);
	udrv_run(&d, p.b, p.n);
	expect(&d, "GET", "/empty", "");

	/* a REQUEST_URI after PATH_INFO replaces it */
	pkt_begin(&p);
	pkt_var(&p, "PATH_INFO", "/script/x");
	pkt_var(&p, "QUERY_STRING", "y=1");
	pkt_var(&p, "REQUEST_URI", "/orig/x?y=1");
	pkt_var(&p, "PATH_INFO", "/again");
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	expect(&d, "", "/orig/x?y=1", "");

	/* query only */
	pkt_begin(&p);
	pkt_var(&p, "QUERY_STRING", "only");
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	expect(&d, "", "?only", "");
}

Test(uwsgi, query_is_escaped_once)
{
	static struct pkt p;
	struct udrv d;

	pkt_nginx(&p, "GET", NULL, "/p\r\n", "a\\b\x01 c", NULL);
	udrv_run(&d, p.b, p.n);
	expect(&d, "GET", "/p\\x0d\\x0a?a\\x5cb\\x01\\x20c", "");
}

Test(uwsgi, long_query_truncated)
{
	static struct pkt p;
	char q[2000], want[REQ_TARGET_MAX];
	struct udrv d;

	memset(q, 'q', sizeof(q) - 1);
	q[sizeof(q) - 1] = '\0';
	pkt_nginx(&p, "GET", NULL, "/p", q, NULL);
	udrv_run(&d, p.b, p.n);
	memcpy(want, "/p?", 3);
	memset(want + 3, 'q', REQ_TARGET_MAX - 7);
	memcpy(want + REQ_TARGET_MAX - 4, "...", 4);
	expect(&d, "GET", want, "");

	/* a query that just fits the raw buffer but not the target */
	q[REQ_TARGET_MAX] = '\0';
	pkt_nginx(&p, "GET", NULL, "", q, NULL);
	udrv_run(&d, p.b, p.n);
	want[0] = '?';
	memset(want + 1, 'q', REQ_TARGET_MAX - 5);
	memcpy(want + REQ_TARGET_MAX - 4, "...", 4);
	expect(&d, "GET", want, "");

	/* and one that fits exactly: no dots */
	q[REQ_TARGET_MAX - 2] = '\0';
	pkt_nginx(&p, "GET", NULL, "", q, NULL);
	udrv_run(&d, p.b, p.n);
	want[0] = '?';
	memset(want + 1, 'q', REQ_TARGET_MAX - 2);
	want[REQ_TARGET_MAX - 1] = '\0';
	expect(&d, "GET", want, "");
}

Test(uwsgi, long_values_truncated_and_escaped)
{
	static struct pkt p;
	char uri[5000], host[300];
	struct udrv d;

	memset(uri, 'u', sizeof(uri) - 1);
	uri[sizeof(uri) - 1] = '\0';
	uri[0] = '/';
	uri[1] = '\n';
	memset(host, 'h', sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	pkt_nginx(&p, "VERYLONGMETHODNAME", uri, "/", "", host);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_str_eq(d.info.method, "VERYLONGMETH...");
	cr_assert_eq(strncmp(d.info.target, "/\\x0auuu", 8), 0);
	cr_assert_eq(strlen(d.info.target), REQ_TARGET_MAX - 1);
	cr_assert_str_eq(d.info.target + REQ_TARGET_MAX - 4, "...");
	cr_assert_eq(strlen(d.info.host), REQ_HOST_MAX - 1);
	cr_assert_str_eq(d.info.host + REQ_HOST_MAX - 4, "...");
	info_safe(&d.info);
}

Test(uwsgi, injection_escaped)
{
	static struct pkt p;
	struct udrv d;

	pkt_begin(&p);
	pkt_varn(&p, "REQUEST_METHOD", 14, "GET\0", 4);
	pkt_var(&p, "REQUEST_URI", "/a\r\nX-Injected: 1\x1b[2J");
	pkt_var(&p, "HTTP_HOST", "evil host\n");
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	expect(&d, "GET\\x00", "/a\\x0d\\x0aX-Injected:\\x201\\x1b[2J",
	       "evil\\x20host\\x0a");
	cr_assert(!d.info.is_head);
}

Test(uwsgi, repeated_and_empty_and_odd_keys)
{
	static struct pkt p;
	struct udrv d;

	pkt_begin(&p);
	pkt_var(&p, "", "");
	pkt_var(&p, "REQUEST_METHOD", "GET");
	pkt_var(&p, "HTTP_HOST", "first");
	pkt_var(&p, "HTTP_HOST", "");
	pkt_var(&p, "REQUEST_METHOD", "HEAD");
	pkt_var(&p, "request_uri", "/lower-is-another-key");
	pkt_var(&p, "REQUEST_URIX", "/no");
	pkt_var(&p, "REQUEST_UR", "/no");
	pkt_var(&p, "A_VERY_LONG_KEY_NAME_LONGER_THAN_THE_BUFFER", "v");
	pkt_var(&p, "REQUEST_URI", "/yes");
	pkt_var(&p, "X", "");
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_eq(d.done_at, p.n);
	expect(&d, "HEAD", "/yes", "");
	cr_assert(d.info.is_head);
	all_splits(p.b, p.n, &d);
}

Test(uwsgi, empty_vars_block)
{
	static const unsigned char m[] = {0, 0, 0, 0, 'b', 'o', 'd', 'y'};
	struct udrv d;

	udrv_run(&d, m, sizeof(m));
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_eq(d.done_at, 4);
	expect(&d, "", "", "");
	all_splits(m, sizeof(m), &d);
}

Test(uwsgi, done_is_sticky_and_uses_nothing)
{
	static struct pkt p;
	struct uwsgi_req u;
	struct reqraw info = {0};
	size_t used;

	pkt_nginx(&p, "GET", "/", "/", "", "h");
	uwsgi_req_init(&u);
	cr_assert_eq(uwsgi_req_feed(&u, &info, (char *)p.b, p.n, &used),
		     UWSGI_DONE);
	cr_assert_eq(used, p.n);
	cr_assert_eq(uwsgi_req_feed(&u, &info, "xyz", 3, &used), UWSGI_DONE);
	cr_assert_eq(used, 0);
}

Test(uwsgi, bad_packets)
{
	static struct pkt p;
	struct udrv d;

	/* modifier1 other than 0 (e.g. 5, PSGI) */
	pkt_nginx(&p, "GET", "/", "/", "", "h");
	p.b[0] = 5;
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);
	udrv_run(&d, p.b, 1); /* rejected at the first byte */
	cr_assert_eq(d.ev, UWSGI_ERROR);
	/* modifier2 */
	pkt_nginx(&p, "GET", "/", "/", "", "h");
	p.b[3] = 1;
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);
	cr_assert_eq(d.info.proto, PROTO_UNKNOWN);

	/* key length past datasize */
	pkt_begin(&p);
	pkt_u16(&p, 100);
	memcpy(p.b + p.n, "KEY", 3);
	p.n += 3;
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);

	/* value length past datasize */
	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	pkt_u16(&p, 11);
	memcpy(p.b + p.n, "REQUEST_URI", 11);
	p.n += 11;
	pkt_u16(&p, 60000);
	memcpy(p.b + p.n, "/x", 2);
	p.n += 2;
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);
	cr_assert_str_eq(d.info.method, "GET");

	/* key ends exactly at datasize: no room for its value length */
	pkt_begin(&p);
	pkt_u16(&p, 3);
	memcpy(p.b + p.n, "KEY", 3);
	p.n += 3;
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);

	/* one stray byte at the end of the block */
	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	p.b[p.n++] = 7;
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);

	/* half a value length at the end */
	pkt_begin(&p);
	pkt_u16(&p, 1);
	p.b[p.n++] = 'K';
	p.b[p.n++] = 1;
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);

	/* HTTP sent to a uwsgi socket */
	udrv_run(&d, "GET / HTTP/1.1\r\n\r\n", 18);
	cr_assert_eq(d.ev, UWSGI_ERROR);

	/* errors are sticky */
	struct uwsgi_req u;
	struct reqraw info = {0};
	size_t used;
	uwsgi_req_init(&u);
	cr_assert_eq(uwsgi_req_feed(&u, &info, "G", 1, &used), UWSGI_ERROR);
	cr_assert_eq(uwsgi_req_feed(&u, &info, "\0\0\0\0", 4, &used),
		     UWSGI_ERROR);
	cr_assert_eq(uwsgi_req_feed(&u, &info, "", 0, &used), UWSGI_ERROR);
}

Test(uwsgi, bad_packets_split_everywhere)
{
	static struct pkt p;
	struct udrv d;

	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	pkt_var(&p, "HTTP_HOST", "h");
	pkt_u16(&p, 11);
	memcpy(p.b + p.n, "REQUEST_URI", 11);
	p.n += 11;
	pkt_u16(&p, 500);
	pkt_end(&p);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_ERROR);
	cr_assert_str_eq(d.info.host, "h");
	all_splits(p.b, p.n, &d);
}

Test(uwsgi, max_datasize)
{
	static struct pkt p;
	char big[65535];
	struct udrv d;

	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	/* fill to exactly 65535 bytes of vars */
	size_t used = p.n - 4 + (2 + 3 + 2) + (2 + 11 + 2 + 4);
	size_t vn = 65535 - used;
	memset(big, 'v', vn);
	pkt_varn(&p, "BIG", 3, big, vn);
	pkt_var(&p, "REQUEST_URI", "/end");
	size_t n = pkt_end(&p);
	cr_assert_eq(n, 4 + 65535);
	udrv_run(&d, p.b, p.n);
	cr_assert_eq(d.ev, UWSGI_DONE);
	cr_assert_eq(d.done_at, n);
	expect(&d, "GET", "/end", "");
	udrv_init(&d);
	for (size_t i = 0; i < p.n; i += 4100) /* uWSGI reads 4100 at a time */
		udrv_feed(&d, p.b + i, p.n - i < 4100 ? p.n - i : 4100);
	cr_assert_eq(d.ev, UWSGI_DONE);
	expect(&d, "GET", "/end", "");
}

Test(uwsgi, looks_like_packet)
{
	cr_assert(uwsgi_looks_like_packet("\0", 1));
	cr_assert(uwsgi_looks_like_packet("\0\x10\x01", 3));
	cr_assert(uwsgi_looks_like_packet("\0\x10\x01\0\x0e", 5));
	cr_assert(!uwsgi_looks_like_packet("\0\x10\x01\x01", 4));
	cr_assert(!uwsgi_looks_like_packet("G", 1));
	cr_assert(!uwsgi_looks_like_packet("\x05\0\0\0", 4));
	cr_assert(!uwsgi_looks_like_packet("", 0));
}

Test(uwsgi, fuzz)
{
	static struct pkt p;
	unsigned char m[600];
	struct udrv d;

	srand(99);
	pkt_nginx(&p, "GET", NULL, "/p", "q=1", "h");
	for (int iter = 0; iter < 30000; iter++) {
		size_t n;
		if (iter % 3 == 0) {
			n = (size_t)(rand() % (int)sizeof(m));
			for (size_t i = 0; i < n; i++)
				m[i] = (unsigned char)(rand() % 256);
			if (n)
				m[0] = 0;
			if (n > 3)
				m[3] = 0;
		} else {
			n = p.n < sizeof(m) ? p.n : sizeof(m);
			memcpy(m, p.b, n);
			for (int k = rand() % 4; k >= 0; k--)
				m[1 + rand() % (int)(n - 1)] =
					(unsigned char)(rand() % 256);
		}
		udrv_init(&d);
		for (size_t i = 0; i < n;) {
			size_t k = 1 + (size_t)(rand() % 40);
			if (k > n - i)
				k = n - i;
			udrv_feed(&d, m + i, k);
			i += k;
		}
		info_safe(&d.info);
		if (d.ev == UWSGI_DONE)
			cr_assert_leq(d.done_at, n);
		/* a whole packet in one read (walked in place) and the same
		 * byte by byte: one outcome */
		struct udrv whole;
		udrv_run(&whole, m, n);
		same_byte_by_byte(m, n, &whole);
	}
}

/* The packets nginx sends, mutated at random: read whole (walked in
 * place), byte by byte and in two parts, the same outcome every time. */
Test(uwsgi, whole_packet_same_as_byte_path)
{
	static struct pkt p;
	unsigned char m[2000];
	const char *methods[] = {"GET", "HEAD", "POST"};

	srand(7);
	for (int iter = 0; iter < 20000; iter++) {
		pkt_begin(&p);
		/* the variables in a random order, some many times (more than
		 * the walk in place notes: the byte path then), some left out */
		int vars = 4 + rand() % 25;
		for (int v = 0; v < vars; v++) {
			switch (rand() % 9) {
			case 0: pkt_var(&p, "REQUEST_METHOD", methods[rand() % 3]); break;
			case 1: pkt_var(&p, "REQUEST_URI", "/a/b?x=1"); break;
			case 2: pkt_var(&p, "PATH_INFO", "/a/b"); break;
			case 3: pkt_var(&p, "QUERY_STRING", "x=1&y=2"); break;
			case 4: pkt_var(&p, "HTTP_HOST", "h.example"); break;
			case 5: pkt_var(&p, "HTTP_HOSX", "no"); break;
			case 6: pkt_var(&p, "", "empty key"); break;
			case 7: pkt_var(&p, "REQUEST_METHOD_AND_MORE_THAN_24", "x"); break;
			default: pkt_var(&p, "SERVER_NAME", ""); break;
			}
		}
		size_t n = pkt_end(&p);
		if (n > sizeof(m))
			n = sizeof(m);
		memcpy(m, p.b, n);
		if (iter % 2)
			for (int k = rand() % 3; k >= 0; k--)
				m[rand() % (int)n] = (unsigned char)(rand() % 256);
		struct udrv whole, d;
		udrv_run(&whole, m, n);
		same_byte_by_byte(m, n, &whole);
		size_t cut = (size_t)rand() % (n + 1);
		udrv_init(&d);
		udrv_feed(&d, m, cut);
		udrv_feed(&d, m + cut, n - cut);
		udrv_same(&whole, &d);
	}
}

/* ---- the request's ids, as nginx passes headers ---- */

Test(uwsgi, ids_from_nginx_vars)
{
	static struct pkt p;
	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	pkt_var(&p, "REQUEST_URI", "/a");
	pkt_var(&p, "HTTP_ACCEPT_LANGUAGE", "en");
	pkt_var(&p, "HTTP_TRACEPARENT",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
	pkt_var(&p, "HTTP_X_REQUEST_ID", "r1");
	pkt_var(&p, "HTTP_X_REQUEST_ID", "r2");
	pkt_var(&p, "HTTP_X_CORRELATION_ID", "c\n1");
	pkt_var(&p, "HTTP_X_AMZN_TRACE_ID", "Root=1-x");
	pkt_var(&p, "HTTP_SENTRY_TRACE", "s");
	pkt_var(&p, "HTTP_X_CLOUD_TRACE_CONTEXT", "g/1");
	pkt_var(&p, "HTTP_X_B3_TRACEID", "b");
	pkt_var(&p, "HTTP_B3", "0");
	pkt_var(&p, "HTTP_X_QUEUE_START", "1700000000123456");
	pkt_var(&p, "X_REQUEST_ID", "not a header");
	size_t vars = pkt_end(&p);
	struct udrv d;
	udrv_run(&d, p.b, vars);
	cr_assert_eq(d.ev, UWSGI_DONE);
	char out[4096];
	cr_assert_str_eq(ids_dump(&d.info, out, sizeof(out)),
		"traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 "
		"x-request-id=r1+rep x-correlation-id=c\\x0a1 x-amzn-trace-id=Root=1-x "
		"sentry-trace=s x-cloud-trace-context=g/1 x-b3-traceid=b b3=0 "
		"x-queue-start=1700000000123456 "
		"T:4bf92f3577b34da6a3ce929d0e0e4736/00f067aa0ba902b7 S:1700000000123456000");
	all_splits(p.b, vars, &d);
}

Test(uwsgi, ids_long_values_cut)
{
	static struct pkt p;
	static char big[9000];
	memset(big, 'z', sizeof(big) - 1);
	pkt_begin(&p);
	pkt_var(&p, "REQUEST_METHOD", "GET");
	pkt_var(&p, "HTTP_X_REQUEST_ID", big);
	pkt_var(&p, "HTTP_TRACEPARENT", big);
	pkt_var(&p, "HTTP_B3", big);
	pkt_var(&p, "HTTP_X_CORRELATION_ID", big);
	pkt_var(&p, "HTTP_SENTRY_TRACE", "kept?");
	size_t vars = pkt_end(&p);
	struct udrv d;
	udrv_run(&d, p.b, vars);
	char out[4096];
	ids_dump(&d.info, out, sizeof(out));
	cr_assert(strstr(out, "x-request-id=zzzz"), "%s", out);
	cr_assert(strstr(out, "...+cut"), "%s", out);
	cr_assert(strstr(out, " !"), "%s", out);
	same_byte_by_byte(p.b, vars, &d);
}
