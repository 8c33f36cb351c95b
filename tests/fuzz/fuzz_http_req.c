/*
 * The HTTP request parser (http_req_feed), fed the input twice: in one
 * call, and split at points drawn from the input's hash, following HEAD and
 * NEXT the way conn.c does. Checks after every call:
 *   - used <= n (== n on MORE and ERROR), HEAD consumes something, no two
 *     NEXT in a row without progress, a bounded number of calls;
 *   - method, target and host are NUL-terminated in their arrays, hold no
 *     byte outside 0x21..0x7e and no cut \xHH escape;
 *   - at HEAD: head_complete, proto HTTP, is_head exactly when the method is
 *     HEAD;
 *   - ERROR is sticky;
 * and at the end that both runs saw the same events at the same offsets
 * with the same descriptions: a server may split its reads anywhere.
 *
 * An input starting with a zero byte (which no request starts with) is not
 * fed as is: the rest describes a few valid requests (method, target,
 * version, line ends, Host, Content-Length and other headers, bodies, empty
 * lines between requests), built into the bytes a client sends, with what
 * the parser must report: a HEAD event after each head and a NEXT event at
 * each next request, with the method, target and Host as sent (escaped).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "fuzz.h"
#include "http.h"

#define MAXEV 64

struct event {
	int type;
	size_t at;
	struct reqinfo info;
};

struct drv {
	struct http_req p;
	struct reqraw raw;   /* what the parser fills */
	struct reqinfo info; /* ... as a report shows it */
	struct event ev[MAXEV];
	size_t nev;
	size_t off;
	bool error;
	bool ever_http;
};

static void check_info(const struct reqinfo *in)
{
	fuzz_check_escaped("method", in->method, sizeof(in->method), false);
	fuzz_check_escaped("target", in->target, sizeof(in->target), false);
	fuzz_check_escaped("host", in->host, sizeof(in->host), false);
	FUZZ_CHECK(in->proto <= PROTO_OTHER, "proto %u", in->proto);
}

static void record(struct drv *d, int type, size_t at)
{
	if (d->nev < MAXEV) {
		d->ev[d->nev].type = type;
		d->ev[d->nev].at = at;
		d->ev[d->nev].info = d->info;
	}
	d->nev++;
}

static void drv_feed(struct drv *d, const char *buf, size_t n)
{
	size_t calls = 0, n0 = n;
	bool last_next_empty = false;

	while (!d->error) {
		size_t used = (size_t)-1;
		int ev = http_req_feed(&d->p, &d->raw, buf, n, &used);
		reqraw_render(&d->raw, &d->info);

		if (getenv("FUZZ_TRACE"))
			fprintf(stderr, "off %zu n %zu: event %d used %zu\n",
				d->off, n, ev, used);
		FUZZ_CHECK(++calls <= 2 * n0 + 4, "no progress after %zu calls",
			   calls);
		FUZZ_CHECK(used <= n, "used %zu > n %zu (event %d)", used, n, ev);
		check_info(&d->info);
		if (d->info.proto == PROTO_HTTP)
			d->ever_http = true;
		switch (ev) {
		case HTTP_REQ_MORE:
			FUZZ_CHECK(used == n, "MORE with used %zu of %zu", used, n);
			d->off += n;
			return;
		case HTTP_REQ_ERROR: {
			FUZZ_CHECK(used == n, "ERROR with used %zu of %zu", used,
				   n);
			d->off += n;
			d->error = true;
			size_t u2 = (size_t)-1;
			FUZZ_CHECK(http_req_feed(&d->p, &d->raw, buf, n, &u2) ==
					   HTTP_REQ_ERROR && u2 == n,
				   "ERROR is not sticky");
			return;
		}
		case HTTP_REQ_HEAD:
			FUZZ_CHECK(used > 0, "HEAD consumed nothing");
			FUZZ_CHECK(d->info.head_complete, "HEAD, head incomplete");
			FUZZ_CHECK(d->info.proto == PROTO_HTTP, "HEAD, proto %u",
				   d->info.proto);
			FUZZ_CHECK(d->info.is_head ==
					   (strcmp(d->info.method, "HEAD") == 0),
				   "is_head %d for method \"%s\"", d->info.is_head,
				   d->info.method);
			record(d, HTTP_REQ_HEAD, d->off + used);
			last_next_empty = false;
			break;
		case HTTP_REQ_NEXT:
			FUZZ_CHECK(!(last_next_empty && used == 0),
				   "NEXT twice without progress");
			last_next_empty = used == 0;
			record(d, HTTP_REQ_NEXT, d->off + used);
			/* The caller switches to a fresh reqraw. */
			memset(&d->raw, 0, sizeof(d->raw));
			memset(&d->info, 0, sizeof(d->info));
			break;
		default:
			FUZZ_CHECK(false, "unknown event %d", ev);
		}
		d->off += used;
		buf += used;
		n -= used;
		if (n == 0)
			return;
	}
}

static void same_info(const struct reqinfo *a, const struct reqinfo *b,
		      const char *when)
{
	FUZZ_CHECK(a->proto == b->proto && a->is_head == b->is_head &&
			   a->head_complete == b->head_complete,
		   "%s: flags differ when split (proto %u/%u head %d/%d "
		   "complete %d/%d)",
		   when, a->proto, b->proto, a->is_head, b->is_head,
		   a->head_complete, b->head_complete);
	FUZZ_CHECK(strcmp(a->method, b->method) == 0,
		   "%s: method \"%s\" whole, \"%s\" split", when, a->method,
		   b->method);
	FUZZ_CHECK(strcmp(a->target, b->target) == 0,
		   "%s: target \"%s\" whole, \"%s\" split", when, a->target,
		   b->target);
	FUZZ_CHECK(strcmp(a->host, b->host) == 0,
		   "%s: host \"%s\" whole, \"%s\" split", when, a->host, b->host);
}

/* ---- structured requests ---- */

#define MAXREQ 8

struct expect {
	size_t nreq;
	size_t head_at[MAXREQ]; /* offset just after each head */
	size_t start_at[MAXREQ]; /* offset of each request line */
	bool last_sink; /* the last request's body cannot be framed */
	struct reqinfo info[MAXREQ];
};

static void model_field(char *dst, size_t cap, const char *s, size_t n)
{
	size_t pos = 0;
	dst[0] = '\0';
	escape_append(dst, cap, &pos, s, n);
}

static char built[64 * 1024];

static const char *const methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "M-SEARCH",
	"PROPFIND", "X_LONGER_METHOD_TOKEN_OF_32_BYTE",
};

/* Other header names, some close to the ones the parser looks for. */
static const char *const other_names[] = {
	"User-Agent", "Accept", "Hostname", "X-Host", "Content-Lengths",
	"Content-Type", "Cookie", "Transfer-Encodin", "Hos",
};

/* Bytes of a header value or target: anything but LF (and, for a target,
 * SP). */
static void put_bytes(struct fuzz_in *in, struct fuzz_out *o, size_t n,
		      bool target, char *copy, size_t *copy_n)
{
	for (size_t k = 0; k < n; k++) {
		char c = (char)fuzz_byte(in);
		if (c == '\n' || (target && c == ' '))
			c = 'x';
		fuzz_put(o, &c, 1);
		if (copy)
			copy[(*copy_n)++] = c;
	}
}

static size_t build_requests(struct fuzz_in *in, struct expect *e)
{
	struct fuzz_out o = {built, 0, sizeof(built)};
	size_t nreq = 1 + fuzz_byte(in) % MAXREQ;

	memset(e, 0, sizeof(*e));
	for (size_t r = 0; r < nreq; r++) {
		struct reqinfo *info = &e->info[r];
		uint8_t f = fuzz_byte(in);
		const char *eol = f & 1 ? "\n" : "\r\n";
		char target[64], host[64];
		size_t tn = 0, hn = 0;
		bool have_host = false, sink = false;
		long clen = -1;

		/* Empty lines before a request are skipped. */
		for (int k = (f >> 1) & 3; k > 1; k--)
			fuzz_puts(&o, k & 1 ? "\n" : "\r\n");
		e->start_at[r] = o.n;
		const char *m = methods[fuzz_byte(in) % (sizeof(methods) /
							sizeof(methods[0]))];
		fuzz_puts(&o, m);
		model_field(info->method, sizeof(info->method), m, strlen(m));
		info->is_head = strcmp(m, "HEAD") == 0;
		fuzz_puts(&o, f & 8 ? "  " : " ");
		/* The target starts with '/' (a CR there is no request). */
		target[tn++] = '/';
		fuzz_puts(&o, "/");
		put_bytes(in, &o, fuzz_byte(in) % 48, true, target, &tn);
		model_field(info->target, sizeof(info->target), target, tn);
		fuzz_puts(&o, f & 16 ? "  " : " ");
		fuzz_puts(&o, f & 32 ? "HTTP/1.0" : "HTTP/1.1");
		if (f & 64)
			fuzz_puts(&o, " \t");
		fuzz_puts(&o, eol);

		size_t nh = fuzz_byte(in) % 8;
		for (size_t h = 0; h < nh; h++) {
			uint8_t k = fuzz_byte(in);
			const char *ows = k & 0x10 ? " \t" : k & 0x20 ? "" : " ";
			switch (k % 6) {
			case 0:
			case 1: { /* Host: the first one counts */
				char v[64];
				size_t vn = 0;
				fuzz_puts(&o, k & 0x40 ? "HOST:" : "Host:");
				fuzz_puts(&o, ows);
				put_bytes(in, &o, fuzz_byte(in) % 40, false, v, &vn);
				fuzz_puts(&o, ows);
				if (!have_host) {
					/* Value = between leading OWS and trailing
					 * OWS or CR. */
					size_t a = 0, z = vn;
					while (a < z && (v[a] == ' ' || v[a] == '\t'))
						a++;
					while (z > a && (v[z - 1] == ' ' ||
							 v[z - 1] == '\t' ||
							 v[z - 1] == '\r'))
						z--;
					memcpy(host, v + a, z - a);
					hn = z - a;
					have_host = true;
				}
				break;
			}
			case 2: { /* Content-Length: the same value twice is fine */
				long v = fuzz_byte(in) % 48;
				char num[32];
				if (clen >= 0 && (k & 0x40))
					v = clen;
				snprintf(num, sizeof(num), "%s%ld", k & 0x80 ? "00" : "",
					 v);
				fuzz_puts(&o, k & 0x40 ? "content-length:"
						       : "Content-Length:");
				fuzz_puts(&o, ows);
				fuzz_puts(&o, num);
				fuzz_puts(&o, ows);
				if (clen >= 0 && clen != v)
					sink = true;
				clen = v;
				break;
			}
			case 3: /* a body the parser does not follow */
				if (!(k & 0xc0)) {
					fuzz_puts(&o, "Transfer-Encoding: chunked");
					sink = true;
					break;
				}
				/* fall through */
			default:
				fuzz_puts(&o, other_names[fuzz_byte(in) %
							  (sizeof(other_names) /
							   sizeof(other_names[0]))]);
				fuzz_puts(&o, ":");
				fuzz_puts(&o, ows);
				put_bytes(in, &o, fuzz_byte(in) % 40, false, NULL,
					  NULL);
				break;
			}
			fuzz_puts(&o, eol);
		}
		fuzz_puts(&o, eol);
		e->head_at[r] = o.n;
		info->proto = PROTO_HTTP;
		info->head_complete = true;
		model_field(info->host, sizeof(info->host), have_host ? host : "",
			    have_host ? hn : 0);
		e->nreq = r + 1;
		if (clen > 0 && !sink)
			put_bytes(in, &o, (size_t)clen, false, NULL, NULL);
		if (sink) {
			/* Whatever follows is swallowed: no later event. */
			e->last_sink = true;
			put_bytes(in, &o, fuzz_byte(in) % 16, false, NULL, NULL);
			break;
		}
		if (o.n > sizeof(built) - 4096)
			break;
	}
	return o.n;
}

static void check_expected(const struct drv *d, const struct expect *e)
{
	/* Events: HEAD(0), then NEXT(1) HEAD(1), NEXT(2) HEAD(2)... */
	size_t want = 2 * e->nreq - 1;

	FUZZ_CHECK(!d->error, "valid requests: the parser gave up");
	FUZZ_CHECK(d->nev == want, "%zu requests: %zu events, want %zu", e->nreq,
		   d->nev, want);
	for (size_t r = 0; r < e->nreq; r++) {
		const struct event *h = &d->ev[r ? 2 * r : 0];
		FUZZ_CHECK(h->type == HTTP_REQ_HEAD && h->at == e->head_at[r],
			   "request %zu: event %d at %zu, want its head at %zu", r,
			   h->type, h->at, e->head_at[r]);
		same_info(&h->info, &e->info[r], "structured request");
		if (r > 0) {
			const struct event *nx = &d->ev[2 * r - 1];
			FUZZ_CHECK(nx->type == HTTP_REQ_NEXT &&
					   nx->at == e->start_at[r],
				   "request %zu: event %d at %zu, want NEXT at %zu",
				   r, nx->type, nx->at, e->start_at[r]);
		}
	}
}

static struct drv whole, split;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct fuzz_rng rng;
	static struct expect e;
	bool structured = size > 0 && data[0] == 0;

	fuzz_rng_init(&rng, data, size);
	if (structured) {
		struct fuzz_in in = {data + 1, size - 1, 0};
		size = build_requests(&in, &e);
		buf = built;
	}
	memset(&whole, 0, sizeof(whole));
	memset(&split, 0, sizeof(split));
	http_req_init(&whole.p);
	http_req_init(&split.p);

	drv_feed(&whole, buf, size);
	if (structured)
		check_expected(&whole, &e);

	for (size_t off = 0; off < size && !split.error;) {
		size_t k = fuzz_chunk(&rng, size - off);
		(void)http_looks_like_request(buf + off, k);
		drv_feed(&split, buf + off, k);
		off += k;
	}

	FUZZ_CHECK(whole.error == split.error, "error %d whole, %d split",
		   whole.error, split.error);
	FUZZ_CHECK(whole.nev == split.nev, "%zu events whole, %zu split",
		   whole.nev, split.nev);
	for (size_t i = 0; i < whole.nev && i < MAXEV; i++) {
		FUZZ_CHECK(whole.ev[i].type == split.ev[i].type &&
				   whole.ev[i].at == split.ev[i].at,
			   "event %zu: %d at %zu whole, %d at %zu split", i,
			   whole.ev[i].type, whole.ev[i].at, split.ev[i].type,
			   split.ev[i].at);
		same_info(&whole.ev[i].info, &split.ev[i].info, "event");
	}
	if (!whole.error)
		same_info(&whole.info, &split.info, "end");

	/* conn.c picks this parser when the first read looks like a request
	 * line; the parser must then at least take the method. */
	const char *sp = memchr(buf, ' ', size < 33 ? size : 33);
	if (sp && http_looks_like_request(buf, size))
		FUZZ_CHECK(whole.ever_http,
			   "looks like a request, but the method was refused");
	return 0;
}
