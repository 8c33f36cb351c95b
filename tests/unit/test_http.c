/*
 * HTTP/1.x request and response parsers, fed the way servers and clients
 * really split their bytes (see research/servers.md), and adversarially.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http.h"
#include "ids_dump.h"

#define MAXREQ 16

/* ---------------------------------------------------------------------
 * Request driver: feeds pieces, follows HEAD / NEXT like conn.c would.
 * --------------------------------------------------------------------- */

struct rdrv {
	struct http_req p;
	struct reqraw raw[MAXREQ]; /* what the parser fills */
	struct reqinfo info[MAXREQ]; /* ... as a report shows it */
	int cur;              /* reqraw being filled */
	int heads;            /* HEAD events */
	size_t head_at[MAXREQ]; /* absolute offset just after each head */
	int nexts;
	size_t next_at[MAXREQ]; /* absolute offset of each NEXT */
	bool error;
	size_t off;           /* absolute offset of the next byte fed */
};

static void rdrv_init(struct rdrv *d)
{
	memset(d, 0, sizeof(*d));
	http_req_init(&d->p);
}

static void rdrv_feed(struct rdrv *d, const char *buf, size_t n)
{
	int guard = 0;

	while (!d->error) {
		size_t used = 12345;
		int ev = http_req_feed(&d->p, &d->raw[d->cur], buf, n, &used);
		reqraw_render(&d->raw[d->cur], &d->info[d->cur]);

		cr_assert_leq(used, n);
		cr_assert_lt(++guard, 1000, "no progress");
		switch (ev) {
		case HTTP_REQ_MORE:
			cr_assert_eq(used, n);
			d->off += used;
			return;
		case HTTP_REQ_ERROR:
			cr_assert_eq(used, n);
			d->off += used;
			d->error = true;
			return;
		case HTTP_REQ_HEAD:
			cr_assert_gt(used, 0);
			cr_assert(d->info[d->cur].head_complete);
			cr_assert_lt(d->heads, MAXREQ);
			d->head_at[d->heads++] = d->off + used;
			break;
		case HTTP_REQ_NEXT:
			cr_assert_lt(d->cur + 1, MAXREQ);
			d->next_at[d->nexts++] = d->off + used;
			d->cur++;
			break;
		default:
			cr_assert_fail("event %d", ev);
		}
		d->off += used;
		buf += used;
		n -= used;
		if (n == 0)
			return;
	}
}

static void rdrv_run(struct rdrv *d, const char *buf, size_t n)
{
	rdrv_init(d);
	rdrv_feed(d, buf, n);
}

static void rdrv_run_split(struct rdrv *d, const char *buf, size_t n,
			   size_t a, size_t b)
{
	rdrv_init(d);
	rdrv_feed(d, buf, a);
	rdrv_feed(d, buf + a, b - a);
	rdrv_feed(d, buf + b, n - b);
}

static void rdrv_run_bytes(struct rdrv *d, const char *buf, size_t n)
{
	rdrv_init(d);
	for (size_t i = 0; i < n; i++)
		rdrv_feed(d, buf + i, 1);
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

static void rdrv_same(const struct rdrv *a, const struct rdrv *b)
{
	cr_assert_eq(a->error, b->error);
	cr_assert_eq(a->heads, b->heads);
	cr_assert_eq(a->nexts, b->nexts);
	cr_assert_eq(a->cur, b->cur);
	for (int k = 0; k < a->heads; k++)
		cr_assert_eq(a->head_at[k], b->head_at[k]);
	for (int k = 0; k < a->nexts; k++)
		cr_assert_eq(a->next_at[k], b->next_at[k]);
	for (int k = 0; k <= a->cur; k++) {
		const struct reqinfo *x = &a->info[k], *y = &b->info[k];
		cr_assert_str_eq(x->method, y->method);
		cr_assert_str_eq(x->target, y->target);
		cr_assert_str_eq(x->host, y->host);
		cr_assert_eq(x->proto, y->proto);
		cr_assert_eq(x->is_head, y->is_head);
		cr_assert_eq(x->head_complete, y->head_complete);
		info_safe(x);
		char dx[8192], dy[8192];
		cr_assert_str_eq(ids_dump(x, dx, sizeof(dx)), ids_dump(y, dy, sizeof(dy)));
		ids_safe(x);
	}
}

/* Same outcome whole, byte by byte, and cut at every pair of points. */
static void req_all_splits(const char *buf, size_t n, const struct rdrv *want)
{
	struct rdrv *d = malloc(sizeof(*d));

	rdrv_run_bytes(d, buf, n);
	rdrv_same(want, d);
	for (size_t a = 0; a <= n; a++) {
		size_t step = n > 300 ? 7 : 1; /* keep pairs affordable */
		for (size_t b = a; b <= n; b += step) {
			rdrv_run_split(d, buf, n, a, b);
			rdrv_same(want, d);
		}
	}
	free(d);
}

#define S(lit) lit, sizeof(lit) - 1

static void expect_info(const struct reqinfo *info, const char *method,
			const char *target, const char *host)
{
	cr_assert_eq(info->proto, PROTO_HTTP);
	cr_assert_str_eq(info->method, method);
	cr_assert_str_eq(info->target, target);
	cr_assert_str_eq(info->host, host);
	info_safe(info);
}

Test(http_req, simple_get)
{
	static const char m[] = "GET /index.html?a=1&b=2 HTTP/1.1\r\n"
				"User-Agent: curl/7.88\r\n"
				"Host: example.com:8000\r\n"
				"Accept: */*\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 1);
	cr_assert_eq(d.head_at[0], sizeof(m) - 1);
	cr_assert_eq(d.nexts, 0);
	expect_info(&d.info[0], "GET", "/index.html?a=1&b=2",
		    "example.com:8000");
	cr_assert(!d.info[0].is_head);
	cr_assert(d.info[0].head_complete);
	req_all_splits(S(m), &d);
}

Test(http_req, head_sets_is_head)
{
	static const char m[] = "HEAD / HTTP/1.0\r\nHost: h\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert_eq(d.heads, 1);
	expect_info(&d.info[0], "HEAD", "/", "h");
	cr_assert(d.info[0].is_head);

	static const char m2[] = "HEADX / HTTP/1.0\r\n\r\n";
	rdrv_run(&d, S(m2));
	cr_assert_eq(d.heads, 1);
	cr_assert(!d.info[0].is_head);
	static const char m3[] = "HEA / HTTP/1.0\r\n\r\n";
	rdrv_run(&d, S(m3));
	cr_assert(!d.info[0].is_head);
}

Test(http_req, bare_lf_and_no_host)
{
	static const char m[] = "DELETE /x HTTP/1.0\nX-A: b\n\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 1);
	cr_assert_eq(d.head_at[0], sizeof(m) - 1);
	expect_info(&d.info[0], "DELETE", "/x", "");
	req_all_splits(S(m), &d);
}

Test(http_req, host_ows_trimmed_and_case_insensitive)
{
	static const char m[] = "GET / HTTP/1.1\r\n"
				"hOsT: \t  example.org \t \r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	expect_info(&d.info[0], "GET", "/", "example.org");
	req_all_splits(S(m), &d);

	static const char m2[] = "GET / HTTP/1.1\r\nHOST:a b\t c  \r\n\r\n";
	rdrv_run(&d, S(m2));
	expect_info(&d.info[0], "GET", "/", "a\\x20b\\x09\\x20c");
	req_all_splits(S(m2), &d);

	static const char m3[] = "GET / HTTP/1.1\r\nHost:\r\n\r\n";
	rdrv_run(&d, S(m3));
	cr_assert_eq(d.heads, 1);
	expect_info(&d.info[0], "GET", "/", "");

	/* A stray CR inside the value is kept (escaped), a trailing one not */
	static const char m4[] = "GET / HTTP/1.1\r\nHost: a\rb\r\r\n\r\n";
	rdrv_run(&d, S(m4));
	expect_info(&d.info[0], "GET", "/", "a\\x0db");
}

Test(http_req, first_host_wins)
{
	static const char m[] = "GET / HTTP/1.1\r\nHost: one\r\n"
				"Host: two\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	expect_info(&d.info[0], "GET", "/", "one");
}

Test(http_req, similar_header_names_ignored)
{
	static const char m[] = "GET / HTTP/1.1\r\nHosts: no\r\nX-Host: no\r\n"
				"Hos: no\r\nHost : no\r\n"
				"Content-Lengthy: 5\r\n\r\n"
				"GET /2 HTTP/1.1\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert_eq(d.heads, 2);
	cr_assert_eq(d.nexts, 1);
	expect_info(&d.info[0], "GET", "/", "");
	expect_info(&d.info[1], "GET", "/2", "");
}

Test(http_req, pipelined_gets)
{
	static const char m[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
				"GET /2 HTTP/1.1\r\nHost: b\r\n\r\n"
				"HEAD /3 HTTP/1.1\r\nHost: c\r\n\r\n";
	struct rdrv d;
	size_t one = strlen("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 3);
	cr_assert_eq(d.nexts, 2);
	cr_assert_eq(d.head_at[0], one);
	cr_assert_eq(d.next_at[0], one);
	cr_assert_eq(d.head_at[1], 2 * one);
	cr_assert_eq(d.next_at[1], 2 * one);
	cr_assert_eq(d.head_at[2], sizeof(m) - 1);
	expect_info(&d.info[0], "GET", "/1", "a");
	expect_info(&d.info[1], "GET", "/2", "b");
	expect_info(&d.info[2], "HEAD", "/3", "c");
	cr_assert(d.info[2].is_head && !d.info[1].is_head);
	req_all_splits(S(m), &d);
}

Test(http_req, keepalive_next_request_in_a_later_read)
{
	struct rdrv d;

	rdrv_init(&d);
	rdrv_feed(&d, S("GET /1 HTTP/1.1\r\n\r\n"));
	cr_assert_eq(d.heads, 1);
	rdrv_feed(&d, S("GET /2 HTTP/1.1\r\n\r\n"));
	cr_assert_eq(d.nexts, 1);
	cr_assert_eq(d.next_at[0], strlen("GET /1 HTTP/1.1\r\n\r\n"));
	cr_assert_eq(d.heads, 2);
	expect_info(&d.info[1], "GET", "/2", "");
}

Test(http_req, post_body_then_pipelined_get)
{
	/* The body looks like a request: it must be skipped, not parsed. */
	static const char m[] = "POST /form HTTP/1.1\r\nHost: h\r\n"
				"Content-Type: text/plain\r\n"
				"content-length:  33 \r\n\r\n"
				"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n\r\n"
				"GET /next HTTP/1.1\r\nHost: h2\r\n\r\n";
	struct rdrv d;
	size_t head = strlen("POST /form HTTP/1.1\r\nHost: h\r\n"
			     "Content-Type: text/plain\r\n"
			     "content-length:  33 \r\n\r\n");

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 2);
	cr_assert_eq(d.nexts, 1);
	cr_assert_eq(d.head_at[0], head);
	cr_assert_eq(d.next_at[0], head + 33);
	expect_info(&d.info[0], "POST", "/form", "h");
	expect_info(&d.info[1], "GET", "/next", "h2");
	req_all_splits(S(m), &d);
}

Test(http_req, crlf_between_requests_skipped)
{
	static const char m[] = "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"
				"ok\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert_eq(d.nexts, 1);
	cr_assert_eq(d.next_at[0], sizeof(m) - 1 - strlen("GET /b HTTP/1.1\r\n\r\n"));
	expect_info(&d.info[1], "GET", "/b", "");

	/* and before the very first one */
	static const char m2[] = "\r\n\nGET /a HTTP/1.1\r\n\r\n";
	rdrv_run(&d, S(m2));
	cr_assert_eq(d.heads, 1);
	cr_assert_eq(d.nexts, 0);
	expect_info(&d.info[0], "GET", "/a", "");

	/* but not forever */
	char many[600];
	memset(many, '\n', sizeof(many));
	rdrv_run(&d, many, sizeof(many));
	cr_assert(d.error);
}

Test(http_req, chunked_request_body_never_next)
{
	static const char m[] = "POST /up HTTP/1.1\r\nHost: h\r\n"
				"Transfer-Encoding: chunked\r\n\r\n"
				"5\r\nhello\r\n0\r\n\r\n"
				"GET /next HTTP/1.1\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 1);
	cr_assert_eq(d.nexts, 0);
	expect_info(&d.info[0], "POST", "/up", "h");
	req_all_splits(S(m), &d);
	/* Content-Length does not override it */
	static const char m2[] = "POST /up HTTP/1.1\r\nContent-Length: 0\r\n"
				 "Transfer-Encoding: gzip\r\n\r\n"
				 "GET /next HTTP/1.1\r\n\r\n";
	rdrv_run(&d, S(m2));
	cr_assert_eq(d.nexts, 0);
}

Test(http_req, bad_or_conflicting_content_length_never_next)
{
	static const char *const heads[] = {
		"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(heads) / sizeof(heads[0]); k++) {
		char m[256];
		struct rdrv d;
		int len = snprintf(m, sizeof(m), "%sGET / HTTP/1.1\r\n\r\n",
				   heads[k]);
		rdrv_run(&d, m, (size_t)len);
		cr_assert(!d.error, "%s", heads[k]);
		cr_assert_eq(d.heads, 1, "%s", heads[k]);
		cr_assert_eq(d.nexts, 0, "%s", heads[k]);
	}
	/* the same length twice is fine */
	static const char m[] = "POST / HTTP/1.1\r\nContent-Length: 3\r\n"
				"Content-Length: 003\r\n\r\nabcGET /2 HTTP/1.1\r\n\r\n";
	struct rdrv d;
	rdrv_run(&d, S(m));
	cr_assert_eq(d.nexts, 1);
	expect_info(&d.info[1], "GET", "/2", "");
}

Test(http_req, huge_content_length_swallows)
{
	static const char m[] =
		"POST / HTTP/1.1\r\n"
		"Content-Length: 99999999999999999999999999999999999999\r\n\r\n"
		"GET / HTTP/1.1\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 1);
	cr_assert_eq(d.nexts, 0);
	/* 2^64 - 1 and 2^64 do not wrap to small numbers */
	static const char m2[] = "POST / HTTP/1.1\r\n"
				 "Content-Length: 18446744073709551616\r\n\r\n"
				 "GET / HTTP/1.1\r\n\r\n";
	rdrv_run(&d, S(m2));
	cr_assert_eq(d.nexts, 0);
}

Test(http_req, big_body_in_many_reads)
{
	static char m[300000];
	int len = snprintf(m, sizeof(m),
			   "PUT /big HTTP/1.1\r\nContent-Length: 200000\r\n\r\n");
	memset(m + len, 'G', 200000);
	static const char after[] = "GET /after HTTP/1.1\r\n\r\n";
	memcpy(m + len + 200000, after, sizeof(after) - 1);
	size_t n = (size_t)len + 200000 + sizeof(after) - 1;
	struct rdrv d;

	rdrv_init(&d);
	for (size_t i = 0; i < n; i += 4096)
		rdrv_feed(&d, m + i, n - i < 4096 ? n - i : 4096);
	cr_assert(!d.error);
	cr_assert_eq(d.nexts, 1);
	cr_assert_eq(d.next_at[0], (size_t)len + 200000);
	expect_info(&d.info[1], "GET", "/after", "");
}

#define B(lit) {lit, sizeof(lit) - 1}

Test(http_req, not_http_rejected_at_once)
{
	static const struct {
		const char *m;
		size_t n;
	} bad[] = {
		B("\x16\x03\x01\x02\x00"),   /* TLS ClientHello */
		B("\0\x10\0\0"),             /* uwsgi */
		B("get / HTTP/1.1\r\n"),     /* lowercase */
		B(" GET / HTTP/1.1\r\n"),
		B("GET\r\n"),
		B("G\x01T / HTTP/1.1\r\n"),
		B("GET\t/ HTTP/1.1\r\n"),
		B("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		B("GET / HTTP/2\r\n\r\n"),
		B("GET / HTTP/1.x\r\n\r\n"),
		B("GET / http/1.1\r\n\r\n"),
		B("GET / HTTP/1.1 x\r\n\r\n"),
		B("GET / HTTP/1.1\rX\n\r\n"),
		B("GET /\r\n"),               /* HTTP/0.9 */
		B("GET \r\n"),
		B("GET /a\nb HTTP/1.1\r\n\r\n"),
		B("SSH-2.0-OpenSSH_9.2p1\r\n"),
		B("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n"),
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		struct rdrv d;
		rdrv_run(&d, bad[k].m, bad[k].n);
		cr_assert(d.error, "case %zu", k);
		cr_assert_eq(d.heads, 0, "case %zu", k);
		rdrv_run_bytes(&d, bad[k].m, bad[k].n);
		cr_assert(d.error, "case %zu bytewise", k);
		info_safe(&d.info[0]);
	}
}

Test(http_req, error_is_sticky)
{
	struct http_req p;
	struct reqraw info = {0};
	size_t used;

	http_req_init(&p);
	cr_assert_eq(http_req_feed(&p, &info, S("\x16"), &used),
		     HTTP_REQ_ERROR);
	cr_assert_eq(http_req_feed(&p, &info, S("GET / HTTP/1.1\r\n\r\n"),
				   &used),
		     HTTP_REQ_ERROR);
	cr_assert_eq(http_req_feed(&p, &info, "", 0, &used), HTTP_REQ_ERROR);
	cr_assert_eq(used, 0);
}

Test(http_req, one_byte_is_not_rejected)
{
	struct http_req p;
	struct reqraw raw = {0};
	struct reqinfo info;
	size_t used;

	http_req_init(&p);
	cr_assert_eq(http_req_feed(&p, &raw, S("G"), &used), HTTP_REQ_MORE);
	cr_assert_eq(used, 1);
	cr_assert_eq(http_req_feed(&p, &raw, "", 0, &used), HTTP_REQ_MORE);
	cr_assert_eq(used, 0);
	cr_assert_eq(http_req_feed(&p, &raw, S("ET / HTTP/1.1\r\n\r\n"),
				   &used),
		     HTTP_REQ_HEAD);
	reqraw_render(&raw, &info);
	expect_info(&info, "GET", "/", "");
}

Test(http_req, long_method_truncated_or_refused)
{
	static const char m[] = "VERSION-CONTROLXX /x HTTP/1.1\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert_eq(d.heads, 1);
	expect_info(&d.info[0], "VERSION-CONT...", "/x", "");
	static const char m2[] = "M-SEARCH * HTTP/1.1\r\n\r\n";
	rdrv_run(&d, S(m2));
	expect_info(&d.info[0], "M-SEARCH", "*", "");
}

Test(http_req, control_bytes_and_injection_escaped)
{
	/* Raw CR, NUL, ESC, DEL, high bytes and a backslash in the target;
	 * a terminal escape in Host. None may reach a report raw. */
	static const char m[] = "GET /a\rSet-Cookie:\0x\x1b[31m\x7f\xff\\%0d%0a "
				"HTTP/1.1\r\nHost: ev\x1b]0;il\a\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 1);
	expect_info(&d.info[0], "GET",
		    "/a\\x0dSet-Cookie:\\x00x\\x1b[31m\\x7f\\xff\\x5c%0d%0a",
		    "ev\\x1b]0;il\\x07");
	req_all_splits(S(m), &d);
}

Test(http_req, lf_in_target_stops_with_escaped_prefix)
{
	static const char m[] = "GET /a\r\nSet-Cookie: x HTTP/1.1\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(d.error);
	cr_assert_str_eq(d.info[0].target, "/a\\x0d");
	info_safe(&d.info[0]);
}

Test(http_req, long_target_truncated)
{
	static char m[4096];
	char want[REQ_TARGET_MAX];
	int len = snprintf(m, sizeof(m), "GET /");

	memset(m + len, 'a', 2000);
	len += 2000;
	len += snprintf(m + len, sizeof(m) - (size_t)len,
			" HTTP/1.1\r\nHost: h\r\n\r\n");
	struct rdrv d;
	rdrv_run(&d, m, (size_t)len);
	cr_assert_eq(d.heads, 1);
	want[0] = '/';
	memset(want + 1, 'a', REQ_TARGET_MAX - 5);
	memcpy(want + REQ_TARGET_MAX - 4, "...", 4);
	expect_info(&d.info[0], "GET", want, "h");
	struct rdrv d2;
	rdrv_run_bytes(&d2, m, (size_t)len);
	rdrv_same(&d, &d2);
}

Test(http_req, target_exactly_full_has_no_dots)
{
	char m[1024], want[REQ_TARGET_MAX];
	int len = snprintf(m, sizeof(m), "GET ");

	memset(want, 'b', REQ_TARGET_MAX - 1);
	want[REQ_TARGET_MAX - 1] = '\0';
	len += snprintf(m + len, sizeof(m) - (size_t)len, "%s HTTP/1.1\r\n\r\n",
			want);
	struct rdrv d;
	rdrv_run(&d, m, (size_t)len);
	expect_info(&d.info[0], "GET", want, "");
}

Test(http_req, host_64k_and_other_64k_headers)
{
	static char m[200000];
	size_t n = 0;
	char want[REQ_HOST_MAX];

	n += (size_t)sprintf(m, "GET /x HTTP/1.1\r\nX-Big: ");
	memset(m + n, 'x', 65536);
	n += 65536;
	n += (size_t)sprintf(m + n, "\r\nHost: ");
	memset(m + n, 'h', 65536);
	n += 65536;
	n += (size_t)sprintf(m + n, "   \r\n%s: v\r\n\r\nGET /y HTTP/1.1\r\n\r\n",
			     "X-Long-Name-That-Is-Longer-Than-The-Token-Buffer");
	memset(want, 'h', REQ_HOST_MAX - 4);
	memcpy(want + REQ_HOST_MAX - 4, "...", 4);
	struct rdrv d;
	rdrv_run(&d, m, n);
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 2);
	cr_assert_eq(d.nexts, 1);
	expect_info(&d.info[0], "GET", "/x", want);
	expect_info(&d.info[1], "GET", "/y", "");
	struct rdrv d2;
	rdrv_run_bytes(&d2, m, n);
	rdrv_same(&d, &d2);
}

Test(http_req, trailing_host_spaces_do_not_truncate)
{
	/* 127 bytes fill the field; the trailing OWS must not push it over
	 * into "..." (OWS is trimmed, not stored then removed). */
	char m[1024], host[REQ_HOST_MAX];
	memset(host, 'q', REQ_HOST_MAX - 1);
	host[REQ_HOST_MAX - 1] = '\0';
	int len = snprintf(m, sizeof(m), "GET / HTTP/1.1\r\nHost: %s \t \r\n\r\n",
			   host);
	struct rdrv d;
	rdrv_run(&d, m, (size_t)len);
	expect_info(&d.info[0], "GET", "/", host);
	/* 40 inner spaces then a byte: overflow, with dots */
	len = snprintf(m, sizeof(m), "GET / HTTP/1.1\r\nHost: a%40sb\r\n\r\n",
		       "");
	rdrv_run(&d, m, (size_t)len);
	char want[REQ_HOST_MAX] = "a";
	for (int k = 0; k < 30; k++)
		strcat(want, "\\x20");
	strcat(want, "...");
	expect_info(&d.info[0], "GET", "/", want);
	/* a long run keeps its first bytes in order */
	len = snprintf(m, sizeof(m), "GET / HTTP/1.1\r\nHost: a\t%39sb\r\n\r\n",
		       "");
	rdrv_run(&d, m, (size_t)len);
	strcpy(want, "a\\x09");
	for (int k = 0; k < 29; k++)
		strcat(want, "\\x20");
	strcat(want, "...");
	expect_info(&d.info[0], "GET", "/", want);
}

Test(http_req, head_over_limit_is_an_error)
{
	size_t n = 3u << 20;
	char *m = malloc(n);
	int len = sprintf(m, "GET / HTTP/1.1\r\n");

	size_t i;
	for (i = (size_t)len; i + 64 <= n; i += 64) {
		memset(m + i, 'a', 62);
		memcpy(m + i, "X:", 2);
		m[i + 62] = '\r';
		m[i + 63] = '\n';
	}
	n = i;
	struct rdrv d;
	rdrv_run(&d, m, n);
	cr_assert(d.error);
	cr_assert_eq(d.heads, 0);
	free(m);
}

Test(http_req, obs_fold_and_junk_lines_ignored)
{
	static const char m[] = "GET / HTTP/1.1\r\nX: a\r\n  folded: Host: no\r\n"
				"no colon here\r\n: empty name\r\n\x01junk\r\n"
				"\rX\r\nHost: yes\r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	cr_assert_eq(d.heads, 1);
	expect_info(&d.info[0], "GET", "/", "yes");
	req_all_splits(S(m), &d);
}

Test(http_req, spaces_around_target)
{
	static const char m[] = "GET   /sp   HTTP/1.1  \r\n\r\n";
	struct rdrv d;

	rdrv_run(&d, S(m));
	cr_assert(!d.error);
	expect_info(&d.info[0], "GET", "/sp", "");
}

Test(http_req, looks_like_request)
{
	cr_assert(http_looks_like_request(S("GET / HTTP/1.1\r\n")));
	cr_assert(http_looks_like_request(S("G")));
	cr_assert(http_looks_like_request(S("POST")));
	cr_assert(http_looks_like_request(S("M-SEARCH ")));
	cr_assert(http_looks_like_request(S("PROPFIND /")));
	cr_assert(!http_looks_like_request("", 0));
	cr_assert(!http_looks_like_request(S(" GET")));
	cr_assert(!http_looks_like_request(S("get /")));
	cr_assert(!http_looks_like_request(S("\x16\x03\x01")));
	cr_assert(!http_looks_like_request("\0\x10\0\0", 4));
	cr_assert(!http_looks_like_request(S("GET\r\n")));
	cr_assert(http_looks_like_request(S("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA ")));
	cr_assert(!http_looks_like_request(S("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA ")));
	cr_assert(!http_looks_like_request(S("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")));
}

/* Random bytes and mutated requests, random cuts: never out of bounds
 * (run under ASan/UBSan), never raw bytes in the info, progress always. */
Test(http_req, fuzz)
{
	static const char base[] =
		"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
		"GET /g HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
	char m[512];
	struct rdrv *d = malloc(sizeof(*d));

	srand(42);
	for (int iter = 0; iter < 30000; iter++) {
		size_t n;
		if (iter % 3 == 0) {
			n = (size_t)(rand() % (int)sizeof(m));
			for (size_t i = 0; i < n; i++)
				m[i] = (char)(rand() % 256);
		} else {
			n = sizeof(base) - 1;
			memcpy(m, base, n);
			for (int k = rand() % 4; k >= 0; k--)
				m[rand() % (int)n] = (char)(rand() % 256);
		}
		rdrv_init(d);
		for (size_t i = 0; i < n;) {
			size_t k = 1 + (size_t)(rand() % 40);
			if (k > n - i)
				k = n - i;
			rdrv_feed(d, m + i, k);
			i += k;
		}
		for (int k = 0; k <= d->cur; k++)
			info_safe(&d->info[k]);
	}
	free(d);
}

/* ---------------------------------------------------------------------
 * Response driver: pipelined responses, each with its own request method.
 * --------------------------------------------------------------------- */

struct sdrv {
	struct http_resp r;
	bool heads[MAXREQ];   /* request k was HEAD */
	int cur;              /* response being parsed */
	size_t done_at[MAXREQ];
	uint16_t status[MAXREQ];
	bool error;
	size_t off;
};

static void sdrv_init(struct sdrv *d, const bool *heads)
{
	memset(d, 0, sizeof(*d));
	if (heads)
		memcpy(d->heads, heads, sizeof(d->heads));
	http_resp_init(&d->r, d->heads[0]);
}

static void sdrv_feed(struct sdrv *d, const char *buf, size_t n)
{
	int guard = 0;

	while (!d->error) {
		size_t used = 12345;
		int ev = http_resp_feed(&d->r, buf, n, &used);

		cr_assert_leq(used, n);
		cr_assert_lt(++guard, 1000);
		if (ev == HTTP_RESP_MORE) {
			cr_assert_eq(used, n);
			d->off += n;
			return;
		}
		if (ev == HTTP_RESP_ERROR) {
			cr_assert_eq(used, n);
			d->error = true;
			d->off += n;
			return;
		}
		cr_assert_eq(ev, HTTP_RESP_DONE);
		cr_assert(d->r.final);
		cr_assert(!d->r.close_delimited);
		cr_assert_lt(d->cur + 1, MAXREQ);
		d->status[d->cur] = d->r.status;
		d->done_at[d->cur++] = d->off + used;
		d->off += used;
		buf += used;
		n -= used;
		http_resp_init(&d->r, d->heads[d->cur]);
		if (n == 0)
			return;
	}
}

static void sdrv_same(const struct sdrv *a, const struct sdrv *b)
{
	cr_assert_eq(a->error, b->error);
	cr_assert_eq(a->cur, b->cur);
	for (int k = 0; k < a->cur; k++) {
		cr_assert_eq(a->done_at[k], b->done_at[k]);
		cr_assert_eq(a->status[k], b->status[k]);
	}
	cr_assert_eq(a->r.final, b->r.final);
	cr_assert_eq(a->r.close_delimited, b->r.close_delimited);
	cr_assert_eq(a->r.status, b->r.status);
}

static void resp_all_splits(const char *buf, size_t n, const bool *heads,
			    const struct sdrv *want)
{
	struct sdrv *d = malloc(sizeof(*d));

	sdrv_init(d, heads);
	for (size_t i = 0; i < n; i++)
		sdrv_feed(d, buf + i, 1);
	sdrv_same(want, d);
	size_t step = n > 300 ? 5 : 1;
	for (size_t a = 0; a <= n; a++) {
		for (size_t b = a; b <= n; b += step) {
			sdrv_init(d, heads);
			sdrv_feed(d, buf, a);
			sdrv_feed(d, buf + a, b - a);
			sdrv_feed(d, buf + b, n - b);
			sdrv_same(want, d);
		}
	}
	free(d);
}

static void sdrv_run(struct sdrv *d, const char *buf, size_t n,
		     const bool *heads)
{
	sdrv_init(d, heads);
	sdrv_feed(d, buf, n);
}

Test(http_resp, content_length)
{
	static const char m[] = "HTTP/1.1 200 OK\r\nServer: gunicorn\r\n"
				"Content-Length: 5\r\nConnection: close\r\n\r\n"
				"hello";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert(!d.error);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m) - 1);
	cr_assert_eq(d.status[0], 200);
	resp_all_splits(S(m), NULL, &d);
}

Test(http_resp, final_as_soon_as_the_status_digit)
{
	static const char m[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
	struct http_resp r;
	size_t used;

	http_resp_init(&r, false);
	for (size_t i = 0; i < sizeof(m) - 1; i++) {
		int ev = http_resp_feed(&r, m + i, 1, &used);
		cr_assert_eq(r.final, i >= 9, "byte %zu", i);
		cr_assert_eq(ev, i == sizeof(m) - 2 ? HTTP_RESP_DONE
						    : HTTP_RESP_MORE);
		if (i >= 11)
			cr_assert_eq(r.status, 404);
		else
			cr_assert_eq(r.status, 0);
	}
}

Test(http_req, one_head)
{
	static const struct {
		const char *m;
		bool one;
	} cases[] = {
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"GET / HTTP/1.1\r\n\r\n", true},
		{"GET / HTTP/1.0\n\n", true},
		{"GET / HTTP/1.1\nHost: a\r\n\r\n", true},
		{"\r\nGET / HTTP/1.1\r\n\r\n", true}, /* idle CRLF first */
		{"GET /a\nX: y HTTP/1.1\r\n\r\n", true}, /* LF in a line */
		{"GET / HTTP/1.1\r\nHost: a\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nx", false},
		{"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", false},
		{"GET / HTTP/1.1\n\nGET / HTTP/1.1\r\n\r\n", false},
		{"GET / HTTP/1.1\r\n\nGET / HTTP/1.1\r\n\r\n", false},
		{"GET / HTTP/1.1\r\n\rX: y\r\n\r\n", false}, /* CR starts no line */
		{"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r\n\r\n", false},
		{"\n", false},
		{"", false},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
		cr_assert_eq(http_req_one_head(cases[k].m, strlen(cases[k].m)),
			     cases[k].one, "case %zu", k);
}

/* The same as http_req_one_head, a byte at a time: an LF followed by LF or
 * CR before the head's last line ends it. */
static bool one_head_slow(const char *b, size_t n)
{
	size_t e;
	if (n >= 2 && b[n - 1] == '\n' && b[n - 2] == '\n')
		e = n - 2;
	else if (n >= 3 && b[n - 1] == '\n' && b[n - 2] == '\r' && b[n - 3] == '\n')
		e = n - 3;
	else
		return false;
	for (size_t p = 0; p < e; p++)
		if (b[p] == '\n' && (b[p + 1] == '\n' || b[p + 1] == '\r'))
			return false;
	return true;
}

/*
 * Every head length up to 200 bytes, with an empty line (LF LF, LF CR LF)
 * or a near miss (LF CR x) at every place, the buffer ending where a page
 * ends (reading a byte past it would crash): the same answer as a byte at
 * a time.
 */
Test(http_req, one_head_every_place)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(m, MAP_FAILED);
	cr_assert_eq(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
	static const char *marks[] = {"\n\n", "\n\r\n", "\n\rx", "\nx\n"};
	static const char *ends[] = {"\r\n\r\n", "\n\n", "\r\n", "\r\n\r\nx"};
	long agree = 0;
	for (size_t n = 2; n <= 200; n++) {
		char *b = m + pg - n;
		for (size_t k = 0; k < sizeof(ends) / sizeof(ends[0]); k++) {
			size_t el = strlen(ends[k]);
			if (el > n)
				continue;
			for (size_t at = 0; at <= n - el; at++) {
				for (size_t j = 0; j < sizeof(marks) / sizeof(marks[0]); j++) {
					memset(b, 'a', n);
					memcpy(b + n - el, ends[k], el);
					size_t ml = strlen(marks[j]);
					if (at + ml <= n - el)
						memcpy(b + at, marks[j], ml);
					bool want = one_head_slow(b, n);
					cr_assert_eq(http_req_one_head(b, n), want,
						     "length %zu, end %zu, mark %zu at %zu",
						     n, k, j, at);
					agree++;
				}
			}
		}
	}
	cr_assert_gt(agree, 100000);
	munmap(m, (size_t)pg * 2);
}

/* http_resp_final_start: a final status line at the start of a response
 * the parser has not begun, whole in the buffer, as the parser reads it. */
Test(http_resp, final_start)
{
	static const struct {
		const char *m;
		int status; /* 0: not a final start */
	} cases[] = {
		{"HTTP/1.1 200 OK\r\n", 200},
		{"HTTP/1.0 404 Not Found\r\n", 404},
		{"HTTP/1.1 599\r\n", 599},
		{"HTTP/1.1 204", 204},
		{"HTTP/1.1 100 Continue\r\n\r\n", 0},
		{"HTTP/1.1 103 Early Hints\r\n", 0},
		{"HTTP/1.1 20", 0},      /* not all here */
		{"HTTP/1.1  200 OK\r\n", 0}, /* the parser's slow path */
		{"HTTP/2.0 200 OK\r\n", 0},
		{"http/1.1 200 OK\r\n", 0},
		{"HTTP/1.x 200 OK\r\n", 0},
		{"HTTP/1.1 2x0 OK\r\n", 0},
		{"", 0},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct http_resp r;
		http_resp_init(&r, false);
		bool got = http_resp_final_start(&r, cases[k].m, strlen(cases[k].m));
		cr_assert_eq(got, cases[k].status != 0, "%s", cases[k].m);
		cr_assert_eq(r.final, got);
		cr_assert_eq(r.status, cases[k].status, "%s", cases[k].m);
		/* whatever the parser then makes of the same bytes agrees */
		if (got) {
			struct http_resp p;
			size_t used;
			http_resp_init(&p, false);
			http_resp_feed(&p, cases[k].m, strlen(cases[k].m), &used);
			cr_assert(p.final);
			cr_assert_eq(p.status, cases[k].status);
		}
	}
	/* not once the parser has begun the response */
	struct http_resp r;
	size_t used;
	http_resp_init(&r, false);
	http_resp_feed(&r, "HTTP", 4, &used);
	cr_assert_not(http_resp_final_start(&r, "HTTP/1.1 200 OK\r\n", 17));
}

Test(http_resp, gunicorn_chunked_stream_separate_terminator)
{
	static const char *const sends[] = {
		"HTTP/1.1 200 OK\r\nServer: gunicorn\r\n"
		"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nConnection: close\r\n"
		"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n",
		"6\r\nchunk0\r\n",
		"6\r\nchunk1\r\n",
		"A\r\n0123456789\r\n",
		"1f\r\n0123456789012345678901234567890\r\n",
		"0\r\n\r\n",
	};
	struct http_resp r;
	size_t used;
	char all[1024] = "";

	http_resp_init(&r, false);
	for (size_t k = 0; k < sizeof(sends) / sizeof(sends[0]); k++) {
		size_t n = strlen(sends[k]);
		int ev = http_resp_feed(&r, sends[k], n, &used);
		strcat(all, sends[k]);
		cr_assert(r.final);
		cr_assert(!r.close_delimited);
		if (k + 1 < sizeof(sends) / sizeof(sends[0])) {
			cr_assert_eq(ev, HTTP_RESP_MORE, "send %zu", k);
		} else {
			cr_assert_eq(ev, HTTP_RESP_DONE);
			cr_assert_eq(used, n);
		}
	}
	struct sdrv d;
	sdrv_run(&d, all, strlen(all), NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], strlen(all));
	resp_all_splits(all, strlen(all), NULL, &d);
}

Test(http_resp, chunked_extensions_trailers_and_case)
{
	static const char m[] = "HTTP/1.1 200 OK\r\ntransfer-ENCODING:  Chunked \r\n\r\n"
				"5;name=val;x=\"q\"\r\nhello\r\n"
				"3 ; ext\r\nabc\r\n"
				"0;last\r\nX-Trailer: 1\r\nX-T2: 2\r\n\r\n";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert(!d.error);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m) - 1);
	resp_all_splits(S(m), NULL, &d);
}

Test(http_resp, chunked_bare_lf_and_uppercase_hex)
{
	static const char m[] = "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
				"B\nhello world\n00\n\n";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert(!d.error);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m) - 1);
	resp_all_splits(S(m), NULL, &d);
}

Test(http_resp, chunked_data_looking_like_framing)
{
	static const char m[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				"7\r\n0\r\n\r\n\r\n\r\n"
				"0\r\n\r\n";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m) - 1);
}

Test(http_resp, transfer_coding_list)
{
	struct sdrv d;

	static const char m[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
				"1\r\nx\r\n0\r\n\r\n";
	sdrv_run(&d, S(m), NULL);
	cr_assert_eq(d.cur, 1);

	static const char m2[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"
				 "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
	sdrv_run(&d, S(m2), NULL);
	cr_assert_eq(d.cur, 1);

	/* chunked, then another coding on a later line: close-delimited */
	static const char m5[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
				 "Transfer-Encoding: gzip\r\n\r\n1\r\nx\r\n0\r\n\r\n";
	sdrv_run(&d, S(m5), NULL);
	cr_assert_eq(d.cur, 0);
	cr_assert(d.r.close_delimited);

	/* chunked not last: close-delimited */
	static const char m3[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
				 "1\r\nx\r\n0\r\n\r\n";
	sdrv_run(&d, S(m3), NULL);
	cr_assert_eq(d.cur, 0);
	cr_assert(d.r.close_delimited);
	cr_assert(!d.error);

	/* chunked wins over Content-Length */
	static const char m4[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
				 "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
	sdrv_run(&d, S(m4), NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m4) - 1);
}

Test(http_resp, bad_chunks_are_errors)
{
	static const char *const bad[] = {
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\rX",
		("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		 "fffffffffffffffffffffffffff\r\n"),
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		struct sdrv d;
		sdrv_run(&d, bad[k], strlen(bad[k]), NULL);
		cr_assert(d.error, "case %zu", k);
		cr_assert_eq(d.cur, 0);
	}
}

Test(http_resp, one_megabyte_single_send)
{
	size_t body = 1 << 20;
	char *m = malloc(body + 256);
	int len = sprintf(m, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
			  body);
	memset(m + len, 'x', body);
	struct sdrv d;

	/* headers then body (gunicorn), and all in one writev (uWSGI) */
	sdrv_init(&d, NULL);
	sdrv_feed(&d, m, (size_t)len);
	cr_assert_eq(d.cur, 0);
	sdrv_feed(&d, m + len, body);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], (size_t)len + body);

	sdrv_run(&d, m, (size_t)len + body, NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], (size_t)len + body);

	/* 1 MB chunked in one send */
	len = sprintf(m, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			 "%zx\r\n", body);
	memset(m + len, 'y', body);
	memcpy(m + len + body, "\r\n0\r\n\r\n", 7);
	sdrv_run(&d, m, (size_t)len + body + 7, NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], (size_t)len + body + 7);
	free(m);
}

Test(http_resp, head_request_done_at_end_of_head)
{
	static const char m[] = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n"
				"Content-Type: text/html\r\n\r\n";
	bool heads[MAXREQ] = {true};
	struct sdrv d;

	sdrv_run(&d, S(m), heads);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m) - 1);
	resp_all_splits(S(m), heads, &d);

	/* chunked header on a HEAD response: still no body */
	static const char m2[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	sdrv_run(&d, S(m2), heads);
	cr_assert_eq(d.cur, 1);
	/* and nothing at all: no body either */
	static const char m3[] = "HTTP/1.0 200 OK\r\n\r\n";
	sdrv_run(&d, S(m3), heads);
	cr_assert_eq(d.cur, 1);
}

Test(http_resp, continue_then_final)
{
	static const char m[] = "HTTP/1.1 100 Continue\r\n\r\n"
				"HTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
				"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
				"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
	struct http_resp r;
	size_t used;
	size_t final_at = sizeof(m) - 1 -
			  strlen("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok") + 9;

	http_resp_init(&r, false);
	for (size_t i = 0; i < sizeof(m) - 1; i++) {
		int ev = http_resp_feed(&r, m + i, 1, &used);
		cr_assert_eq(r.final, i >= final_at, "byte %zu", i);
		cr_assert_eq(r.status, i >= final_at + 2 ? 201 : 0, "byte %zu", i);
		cr_assert_eq(ev, i + 2 == sizeof(m) ? HTTP_RESP_DONE
						    : HTTP_RESP_MORE);
	}
	struct sdrv d;
	sdrv_run(&d, S(m), NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.status[0], 201);
	resp_all_splits(S(m), NULL, &d);

	/* 100 Continue to a HEAD: the interim head does not end it */
	bool heads[MAXREQ] = {true};
	static const char m2[] = "HTTP/1.1 100 Continue\r\n\r\n"
				 "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
	sdrv_run(&d, S(m2), heads);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], sizeof(m2) - 1);
}

Test(http_resp, switching_protocols_is_close_delimited)
{
	static const char m[] = "HTTP/1.1 101 Switching Protocols\r\n"
				"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
				"\x81\x05hello HTTP/1.1 200 OK\r\n\r\n";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert(!d.error);
	cr_assert_eq(d.cur, 0);
	cr_assert(d.r.final);
	cr_assert(d.r.close_delimited);
	cr_assert_eq(d.r.status, 101);
	resp_all_splits(S(m), NULL, &d);
}

Test(http_resp, no_body_statuses)
{
	static const char *const ms[] = {
		"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 999\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 204\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 000\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(ms) / sizeof(ms[0]); k++) {
		struct sdrv d;
		size_t n = strlen(ms[k]);
		sdrv_run(&d, ms[k], n, NULL);
		cr_assert_eq(d.cur, 1, "case %zu", k);
		cr_assert_eq(d.done_at[0], n, "case %zu", k);
		resp_all_splits(ms[k], n, NULL, &d);
	}
}

Test(http_resp, close_delimited_http10_per_line_sends)
{
	/* wsgiref: one send per header line, HTTP/1.0, no length */
	static const char *const sends[] = {
		"HTTP/1.0 200 OK\r\n",
		"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
		"Server: WSGIServer/0.2 CPython/3.11.2\r\n",
		"Content-Type: text/plain\r\n",
		"\r\n",
		"part one",
		"part two",
	};
	struct http_resp r;
	size_t used;

	http_resp_init(&r, false);
	for (size_t k = 0; k < sizeof(sends) / sizeof(sends[0]); k++) {
		int ev = http_resp_feed(&r, sends[k], strlen(sends[k]), &used);
		cr_assert_eq(ev, HTTP_RESP_MORE);
		cr_assert(r.final);
		cr_assert_eq(r.close_delimited, k >= 4, "send %zu", k);
	}
	/* wsgiref with a length: done at the body */
	static const char m[] = "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc";
	struct sdrv d;
	sdrv_run(&d, S(m), NULL);
	cr_assert_eq(d.cur, 1);
}

Test(http_resp, uwsgi_stream_without_length)
{
	/* uWSGI http-socket: writev(headers + first chunk), then writes */
	static const char m[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
				"chunk0";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert_eq(d.cur, 0);
	cr_assert(d.r.close_delimited);
	sdrv_feed(&d, S("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
	cr_assert_eq(d.cur, 0);
	cr_assert(!d.error);
	resp_all_splits(S(m), NULL, &d);
}

Test(http_resp, bad_content_length_is_close_delimited)
{
	static const char *const ms[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
	};
	for (size_t k = 0; k < sizeof(ms) / sizeof(ms[0]); k++) {
		struct sdrv d;
		sdrv_run(&d, ms[k], strlen(ms[k]), NULL);
		cr_assert(!d.error);
		cr_assert_eq(d.cur, 0);
		cr_assert(d.r.close_delimited, "case %zu", k);
	}
}

Test(http_resp, pipelined_responses_in_one_write)
{
	static const char m[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
				"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
				"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				"3\r\ntwo\r\n0\r\n\r\n"
				"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\n"
				"HTTP/1.1 100 Continue\r\n\r\n"
				"HTTP/1.1 204 No Content\r\n\r\n"
				"HTTP/1.1 200 OK\r\n\r\nrest";
	bool heads[MAXREQ] = {false, false, false, true};
	struct sdrv d;
	size_t one = strlen("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none");

	sdrv_run(&d, S(m), heads);
	cr_assert(!d.error);
	cr_assert_eq(d.cur, 5);
	cr_assert_eq(d.done_at[0], one);
	cr_assert_eq(d.status[3], 404);
	cr_assert_eq(d.status[4], 204);
	cr_assert(d.r.close_delimited);
	resp_all_splits(S(m), heads, &d);
}

Test(http_resp, done_parser_returns_done_with_nothing_used)
{
	struct http_resp r;
	size_t used;

	http_resp_init(&r, false);
	cr_assert_eq(http_resp_feed(&r, S("HTTP/1.1 204 x\r\n\r\nHTTP"), &used),
		     HTTP_RESP_DONE);
	cr_assert_eq(used, strlen("HTTP/1.1 204 x\r\n\r\n"));
	cr_assert_eq(http_resp_feed(&r, S("HTTP"), &used), HTTP_RESP_DONE);
	cr_assert_eq(used, 0);
	cr_assert_eq(http_resp_skip(&r, 10), HTTP_RESP_DONE);
}

Test(http_resp, sendfile_skip)
{
	struct http_resp r;
	size_t used;

	/* file_wrapper: headers written, body by sendfile64 */
	http_resp_init(&r, false);
	cr_assert_eq(http_resp_feed(&r, S("HTTP/1.1 200 OK\r\n"
					  "Content-Length: 100000\r\n\r\n"),
				    &used),
		     HTTP_RESP_MORE);
	cr_assert_eq(http_resp_skip(&r, 65536), HTTP_RESP_MORE);
	cr_assert_eq(http_resp_skip(&r, 0), HTTP_RESP_MORE);
	cr_assert_eq(http_resp_skip(&r, 100000 - 65536), HTTP_RESP_DONE);

	/* mixed: part written, part sent */
	http_resp_init(&r, false);
	http_resp_feed(&r, S("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
		       &used);
	cr_assert_eq(http_resp_skip(&r, 5), HTTP_RESP_MORE);
	cr_assert_eq(http_resp_feed(&r, S("xy"), &used), HTTP_RESP_DONE);
	cr_assert_eq(used, 2);

	/* close-delimited: never done */
	http_resp_init(&r, false);
	http_resp_feed(&r, S("HTTP/1.0 200 OK\r\n\r\n"), &used);
	cr_assert_eq(http_resp_skip(&r, 1 << 30), HTTP_RESP_MORE);
	cr_assert(r.close_delimited);

	/* inside a chunk, then the rest of the framing written */
	http_resp_init(&r, false);
	http_resp_feed(&r, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			     "a\r\n"),
		       &used);
	cr_assert_eq(http_resp_skip(&r, 10), HTTP_RESP_MORE);
	cr_assert_eq(http_resp_feed(&r, S("\r\n0\r\n\r\n"), &used),
		     HTTP_RESP_DONE);

	/* past a chunk, or before any head: framing lost */
	http_resp_init(&r, false);
	http_resp_feed(&r, S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			     "a\r\n"),
		       &used);
	cr_assert_eq(http_resp_skip(&r, 11), HTTP_RESP_ERROR);
	cr_assert_eq(http_resp_skip(&r, 1), HTTP_RESP_ERROR);
	cr_assert_eq(http_resp_skip(&r, 0), HTTP_RESP_ERROR);
	http_resp_init(&r, false);
	cr_assert_eq(http_resp_skip(&r, 100), HTTP_RESP_ERROR);
	cr_assert_eq(http_resp_feed(&r, S("HTTP/1.1 200 OK\r\n\r\n"), &used),
		     HTTP_RESP_ERROR);

	/* huge body, skipped in steps */
	http_resp_init(&r, false);
	http_resp_feed(&r, S("HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n"),
		       &used);
	for (int k = 0; k < 9; k++)
		cr_assert_eq(http_resp_skip(&r, 1000000000), HTTP_RESP_MORE);
	cr_assert_eq(http_resp_skip(&r, 1000000000), HTTP_RESP_DONE);
}

Test(http_resp, huge_content_length_never_done)
{
	static const char m[] = "HTTP/1.1 200 OK\r\n"
				"Content-Length: 999999999999999999999999999999\r\n\r\nabc";
	struct sdrv d;

	sdrv_run(&d, S(m), NULL);
	cr_assert(!d.error);
	cr_assert_eq(d.cur, 0);
}

Test(http_resp, not_http_responses)
{
	static const char *const bad[] = {
		"HTTP/2 200\r\n\r\n",
		"HTTP/1.1 20\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 099 X\r\n\r\n",
		"HTTP/1.1 abc\r\n\r\n",
		"HTTP/1.1200 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"\0\0\0\0",
		"SSH-2.0-x\r\n",
		" HTTP/1.1 200 OK\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		struct sdrv d;
		size_t n = strlen(bad[k]);
		if (n == 0)
			n = 4;
		sdrv_run(&d, bad[k], n, NULL);
		cr_assert(d.error, "case %zu", k);
		cr_assert_eq(d.cur, 0);
	}
}

Test(http_resp, odd_but_valid_status_lines)
{
	static const char *const ms[] = {
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1  200  OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 599 Whatever \x01\xff\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\nContent-Length: 0\n\n",
		"HTTP/1.1 200 OK\r\nX: \x00\x01\r\n  folded\r\nContent-Length:0\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(ms) / sizeof(ms[0]); k++) {
		struct sdrv d;
		size_t n = strlen(ms[k]);
		if (k == 5)
			n = sizeof("HTTP/1.1 200 OK\r\nX: \x00\x01\r\n  folded\r\n"
				   "Content-Length:0\r\n\r\n") - 1;
		sdrv_run(&d, ms[k], n, NULL);
		cr_assert(!d.error, "case %zu", k);
		cr_assert_eq(d.cur, 1, "case %zu", k);
		cr_assert_eq(d.done_at[0], n, "case %zu", k);
	}
}

Test(http_resp, big_headers)
{
	size_t n = 70000 + 200;
	char *m = malloc(n + 100);
	size_t len = (size_t)sprintf(m, "HTTP/1.1 200 OK\r\nSet-Cookie: ");
	memset(m + len, 'c', 70000);
	len += 70000;
	len += (size_t)sprintf(m + len, "\r\nContent-Length: 2\r\n\r\nok");
	struct sdrv d;

	sdrv_run(&d, m, len, NULL);
	cr_assert_eq(d.cur, 1);
	cr_assert_eq(d.done_at[0], len);
	free(m);

	/* a head that never ends */
	size_t big = 3u << 20;
	m = malloc(big);
	len = (size_t)sprintf(m, "HTTP/1.1 200 OK\r\n");
	for (size_t i = len; i + 4 <= big; i += 4)
		memcpy(m + i, "X:\r\n", 4);
	sdrv_run(&d, m, big - big % 4, NULL);
	cr_assert(d.error);
	free(m);
}

Test(http_resp, fuzz)
{
	static const char base[] =
		"HTTP/1.1 100 Continue\r\n\r\n"
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		"5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n"
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
	char m[512];
	struct sdrv *d = malloc(sizeof(*d));

	srand(7);
	for (int iter = 0; iter < 30000; iter++) {
		size_t n;
		if (iter % 3 == 0) {
			n = (size_t)(rand() % (int)sizeof(m));
			for (size_t i = 0; i < n; i++)
				m[i] = (char)(rand() % 256);
		} else {
			n = sizeof(base) - 1;
			memcpy(m, base, n);
			for (int k = rand() % 4; k >= 0; k--)
				m[rand() % (int)n] = (char)(rand() % 256);
		}
		sdrv_init(d, NULL);
		for (size_t i = 0; i < n;) {
			size_t k = 1 + (size_t)(rand() % 40);
			if (k > n - i)
				k = n - i;
			if (rand() % 10 == 0)
				http_resp_skip(&d->r, (uint64_t)(rand() % 5));
			sdrv_feed(d, m + i, k);
			i += k;
		}
	}
	free(d);
}

/* ---- the request's ids (reqids.h) ---- */

static const char *ids_of(const char *head, size_t n, int k)
{
	static char out[8192];
	struct rdrv *d = malloc(sizeof(*d));
	rdrv_run(d, head, n);
	if (n < 2000) {
		req_all_splits(head, n, d);
	} else {
		/* byte by byte, and cut at a sample of points */
		struct rdrv *e = malloc(sizeof(*e));
		rdrv_run_bytes(e, head, n);
		rdrv_same(d, e);
		for (size_t a = 0; a <= n; a += 97) {
			rdrv_run_split(e, head, n, a, a + (n - a) / 3);
			rdrv_same(d, e);
		}
		free(e);
	}
	ids_dump(&d->info[k], out, sizeof(out));
	free(d);
	return out;
}

Test(http_req, ids_every_header)
{
	static const char head[] =
		"GET /x HTTP/1.1\r\nHost: h\r\n"
		"TraceParent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
		"x-request-id:abc-123  \r\n"
		"X-Correlation-ID:\tcorr\r\n"
		"X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1\r\n"
		"sentry-trace: 771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1\r\n"
		"X-Cloud-Trace-Context: 105445aa7843bc8bf206b12000100000/1;o=1\r\n"
		"X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n"
		"b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n"
		"X-Request-Start: t=1700000000.250\r\n"
		"User-Agent: x\r\n\r\n";
	cr_assert_str_eq(ids_of(S(head), 0),
		"traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 "
		"x-request-id=abc-123 x-correlation-id=corr "
		"x-amzn-trace-id=Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1 "
		"sentry-trace=771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1 "
		"x-cloud-trace-context=105445aa7843bc8bf206b12000100000/1;o=1 "
		"x-b3-traceid=80f198ee56343ba864fe8b2a57d3eff7 "
		"b3=80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1 "
		"x-request-start=t=1700000000.250 "
		"T:4bf92f3577b34da6a3ce929d0e0e4736/00f067aa0ba902b7 "
		"S:1700000000250000000");
}

Test(http_req, ids_repeated_cut_hostile_and_dropped)
{
	static char head[40000];
	size_t n = 0;
	n += (size_t)sprintf(head + n, "POST /y HTTP/1.1\r\nX-Request-Id: first\r\n"
			     "x-request-id: second\r\ntraceparent: 00-zz\x01\r\n"
			     "X-Correlation-Id: ");
	memset(head + n, 'a', 8192);
	n += 8192;
	n += (size_t)sprintf(head + n, "\r\nx-amzn-trace-id: \x7f\xff\"]\\ x\r\n"
			     "sentry-trace: ");
	memset(head + n, 'b', 8192);
	n += 8192;
	n += (size_t)sprintf(head + n, "\r\nb3: ");
	memset(head + n, 'c', 8192);
	n += 8192;
	n += (size_t)sprintf(head + n, "\r\nX-B3-TraceId: late\r\n"
			     "X-Request-Start: soon\r\nContent-Length: 0\r\n\r\n");
	const char *got = ids_of(head, n, 0);
	char want[4096];
	snprintf(want, sizeof(want),
		 "traceparent=00-zz\\x01 x-request-id=first+rep x-correlation-id=%.160s...+cut "
		 "x-amzn-trace-id=\\x7f\\xff\"]\\x5c\\x20x sentry-trace=%.160s...+cut "
		 "b3=%.21s...+cut !",
		 head + 200, head + 8400, head + 16700);
	(void)want;
	/* the parts that do not depend on where the room ends */
	cr_assert(strstr(got, "traceparent=00-zz\\x01 x-request-id=first+rep ") == got, "%s", got);
	cr_assert(strstr(got, "x-amzn-trace-id=\\x7f\\xff\"]\\x5c\\x20x "), "%s", got);
	cr_assert(strstr(got, "...+cut"), "%s", got);
	cr_assert(strstr(got, " !"), "%s", got);
	cr_assert(!strstr(got, "T:"), "%s", got);
	cr_assert(!strstr(got, "late"), "%s", got);
}

Test(http_req, ids_not_taken_from_lookalikes)
{
	static const char head[] =
		"GET / HTTP/1.1\r\nx-request-idx: no\r\nx-request-i: no\r\n"
		"x-request-id : no\r\nX-Request-Id\r\nb3x: no\r\n"
		"traceparent2: no\r\n\r\n";
	cr_assert_str_eq(ids_of(S(head), 0), "");
}

Test(http_req, ids_per_pipelined_request)
{
	static const char head[] =
		"GET /1 HTTP/1.1\r\nX-Request-Id: one\r\n\r\n"
		"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
		"GET /3 HTTP/1.1\r\nx-request-id: three\r\n\r\n";
	cr_assert_str_eq(ids_of(S(head), 0), "x-request-id=one");
	cr_assert_str_eq(ids_of(S(head), 1), "");
	cr_assert_str_eq(ids_of(S(head), 2), "x-request-id=three");
}
