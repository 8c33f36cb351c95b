/*
 * The HTTP response parser (http_resp_feed, http_resp_skip), fed the input
 * as the bytes a server writes on one connection: response after response,
 * a fresh parser after each DONE (some of them for HEAD requests, chosen
 * from the input's hash). Once in one call, once split at points drawn from
 * the hash, where some pieces are first tried as sendfile (http_resp_skip).
 *
 * Checks: used <= n (== n on MORE and ERROR); DONE consumes something and
 * is sticky with used 0; ERROR is sticky; a skip of 0 bytes changes
 * nothing; a skip that succeeds ends in the state that feeding the same
 * number of bytes gives (sendfile is a write the parser does not see);
 * status is 0, 101 or a final code; the split run sees the same responses
 * end at the same offsets as the whole one.
 *
 * An input starting with a zero byte is not fed as is: the rest describes
 * a few valid responses (1xx heads first, status, Content-Length, chunked
 * bodies with extensions and trailers, answers to HEAD, 204 and 304,
 * LF-only heads), built into the bytes a server writes, with where each
 * must end: every response must be DONE exactly there, with its status,
 * until one whose end only the close can tell.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "http.h"

#define MAXEV 64

struct drv {
	struct http_resp r;
	unsigned idx; /* responses begun */
	uint8_t head_mask; /* bit idx % 8: response idx answers a HEAD */
	size_t done_at[MAXEV];
	uint16_t status[MAXEV];
	size_t ndone;
	size_t off;
	bool error;
	struct fuzz_rng *rng; /* NULL: no sendfile trials */
	size_t skips;
};

static bool head_of(const struct drv *d, unsigned idx)
{
	return (d->head_mask >> (idx % 8)) & 1;
}

static void check_resp(const struct http_resp *r)
{
	FUZZ_CHECK(r->status == 0 || r->status == 101 ||
			   (r->status >= 200 && r->status <= 999),
		   "status %u", r->status);
	FUZZ_CHECK(!r->close_delimited || r->final,
		   "close-delimited before a final head");
	FUZZ_CHECK(r->status == 0 || r->final, "status %u, not final",
		   r->status);
}

/* Tries the n bytes at buf as sent by sendfile. Returns true if the skip
 * was accepted (d->r then holds the result, and *ev, *used what feeding
 * them returned). */
static bool try_skip(struct drv *d, const char *buf, size_t n, int *ev,
		     size_t *used)
{
	struct http_resp skipped = d->r, fed = d->r;
	int es = http_resp_skip(&skipped, n);

	if (es == HTTP_RESP_ERROR)
		return false;
	FUZZ_CHECK(es == HTTP_RESP_MORE || es == HTTP_RESP_DONE, "skip: %d", es);
	*used = (size_t)-1;
	*ev = http_resp_feed(&fed, buf, n, used);
	FUZZ_CHECK(*ev == es, "skip of %zu returned %d, feeding them %d", n,
		   es, *ev);
	if (es == HTTP_RESP_MORE)
		FUZZ_CHECK(memcmp(&skipped, &fed, sizeof(fed)) == 0,
			   "skip of %zu and feeding them leave different states",
			   n);
	d->r = fed;
	d->skips++;
	return true;
}

static void drv_feed(struct drv *d, const char *buf, size_t n)
{
	size_t calls = 0, n0 = n;

	while (!d->error) {
		size_t used = (size_t)-1;
		int ev;

		FUZZ_CHECK(++calls <= n0 + 4, "no progress after %zu calls", calls);
		if (d->rng && (fuzz_rng_next(d->rng) & 7) == 0) {
			struct http_resp before = d->r;
			FUZZ_CHECK(http_resp_skip(&d->r, 0) != HTTP_RESP_ERROR ||
					   before.state == d->r.state,
				   "skip 0");
			FUZZ_CHECK(memcmp(&before, &d->r, sizeof(before)) == 0,
				   "a skip of 0 bytes changed the parser");
		}
		if (!(d->rng && (fuzz_rng_next(d->rng) & 3) == 0 &&
		      try_skip(d, buf, n, &ev, &used)))
			ev = http_resp_feed(&d->r, buf, n, &used);
		FUZZ_CHECK(used <= n, "used %zu > n %zu (event %d)", used, n, ev);
		check_resp(&d->r);
		switch (ev) {
		case HTTP_RESP_MORE:
			FUZZ_CHECK(used == n, "MORE with used %zu of %zu", used, n);
			d->off += n;
			return;
		case HTTP_RESP_ERROR: {
			FUZZ_CHECK(used == n, "ERROR with used %zu of %zu", used,
				   n);
			d->off += n;
			d->error = true;
			size_t u2 = (size_t)-1;
			FUZZ_CHECK(http_resp_feed(&d->r, buf, n, &u2) ==
					   HTTP_RESP_ERROR && u2 == n,
				   "ERROR is not sticky");
			FUZZ_CHECK(http_resp_skip(&d->r, n) == HTTP_RESP_ERROR,
				   "ERROR is not sticky for skip");
			return;
		}
		case HTTP_RESP_DONE: {
			FUZZ_CHECK(used > 0, "DONE consumed nothing");
			size_t u2 = (size_t)-1;
			FUZZ_CHECK(http_resp_feed(&d->r, buf, n, &u2) ==
					   HTTP_RESP_DONE && u2 == 0,
				   "DONE is not sticky");
			FUZZ_CHECK(http_resp_skip(&d->r, 1) == HTTP_RESP_DONE,
				   "DONE is not sticky for skip");
			if (d->ndone < MAXEV) {
				d->done_at[d->ndone] = d->off + used;
				d->status[d->ndone] = d->r.status;
			}
			d->ndone++;
			d->idx++;
			http_resp_init(&d->r, head_of(d, d->idx));
			break;
		}
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

/* ---- structured responses ---- */

#define MAXRESP 8

struct expect {
	size_t n; /* responses that end (DONE) */
	size_t done_at[MAXRESP];
	uint16_t status[MAXRESP];
	uint8_t head_mask;
};

static char built[64 * 1024];

static const uint16_t finals[] = {200, 201, 204, 206, 301, 304, 400, 404,
				  500, 599};

static void put_junk(struct fuzz_in *in, struct fuzz_out *o, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		char c = (char)fuzz_byte(in);
		if (c == '\n')
			c = '.';
		fuzz_put(o, &c, 1);
	}
}

static void put_other_header(struct fuzz_in *in, struct fuzz_out *o,
			     const char *eol)
{
	static const char *const names[] = {
		"Server", "Date", "Content-Type", "Content-Lengths", "X-Length",
		"Transfer-Encodings", "Connection", "Set-Cookie",
	};
	fuzz_puts(o, names[fuzz_byte(in) % (sizeof(names) / sizeof(names[0]))]);
	fuzz_puts(o, ": ");
	put_junk(in, o, fuzz_byte(in) % 24);
	fuzz_puts(o, eol);
}

static size_t build_responses(struct fuzz_in *in, struct expect *e)
{
	struct fuzz_out o = {built, 0, sizeof(built)};
	size_t nresp = 1 + fuzz_byte(in) % MAXRESP;

	memset(e, 0, sizeof(*e));
	for (size_t r = 0; r < nresp; r++) {
		uint8_t f = fuzz_byte(in);
		const char *eol = f & 1 ? "\n" : "\r\n";
		bool head = (f & 6) == 6; /* answers a HEAD request */
		char line[64];

		if (head)
			e->head_mask |= (uint8_t)(1u << r);
		/* Interim heads: consumed, then the real one follows. */
		for (int k = (f >> 3) & 3; k > 1; k--) {
			snprintf(line, sizeof(line), "HTTP/1.1 1%02d Info%s",
				 k == 3 ? 0 : 3, eol);
			fuzz_puts(&o, line);
			if (fuzz_byte(in) & 1)
				put_other_header(in, &o, eol);
			fuzz_puts(&o, eol);
		}
		uint16_t status = finals[fuzz_byte(in) % (sizeof(finals) /
							  sizeof(finals[0]))];
		snprintf(line, sizeof(line), "HTTP/1.%d %u ", f & 32 ? 0 : 1,
			 status);
		fuzz_puts(&o, line);
		put_junk(in, &o, fuzz_byte(in) % 12); /* reason */
		fuzz_puts(&o, eol);

		uint8_t framing = fuzz_byte(in);
		long clen = framing & 1 ? fuzz_byte(in) % 64 : -1;
		bool chunked = framing & 2;
		bool other_te = !chunked && (framing & 0x0c) == 0x0c;
		size_t nh = fuzz_byte(in) % 4;
		for (size_t h = 0; h <= nh; h++) {
			if (h == nh / 2) {
				char v[48];
				if (clen >= 0) {
					snprintf(v, sizeof(v), "%s: %s%ld%s",
						 framing & 0x10 ? "content-length"
								: "Content-Length",
						 framing & 0x20 ? "0" : "", clen,
						 eol);
					fuzz_puts(&o, v);
				}
				if (chunked)
					fuzz_puts(&o, framing & 0x40
							      ? "Transfer-Encoding: gzip, chunked"
							      : "transfer-encoding:chunked ");
				else if (other_te)
					fuzz_puts(&o, "Transfer-Encoding: gzip");
				if (chunked || other_te)
					fuzz_puts(&o, eol);
			} else {
				put_other_header(in, &o, eol);
			}
		}
		fuzz_puts(&o, eol);

		bool bodyless = head || status == 204 || status == 304;
		if (bodyless) {
			/* nothing follows the head */
		} else if (chunked) {
			size_t nchunks = fuzz_byte(in) % 4;
			for (size_t c = 0; c <= nchunks; c++) {
				size_t len = c == nchunks ? 0 : 1 + fuzz_byte(in) % 40;
				uint8_t cf = fuzz_byte(in);
				snprintf(line, sizeof(line), "%s%zx%s%s",
					 cf & 1 ? "0" : "", len,
					 cf & 2 ? ";ext=\"v\"" : "", eol);
				fuzz_puts(&o, line);
				if (len) {
					put_junk(in, &o, len);
					fuzz_puts(&o, eol);
				} else {
					if (cf & 4) {
						fuzz_puts(&o, "X-Trailer: t");
						fuzz_puts(&o, eol);
					}
					fuzz_puts(&o, eol);
				}
			}
		} else if (clen >= 0 && !other_te) {
			put_junk(in, &o, (size_t)clen);
		} else {
			/* Ends at the close: the parser can never say DONE. */
			put_junk(in, &o, fuzz_byte(in) % 16);
			break;
		}
		e->done_at[e->n] = o.n;
		e->status[e->n] = status;
		e->n++;
		if (o.n > sizeof(built) - 4096)
			break;
	}
	return o.n;
}

static void check_expected(const struct drv *d, const struct expect *e)
{
	FUZZ_CHECK(!d->error, "valid responses: the parser gave up");
	FUZZ_CHECK(d->ndone == e->n, "%zu responses ended, want %zu", d->ndone,
		   e->n);
	for (size_t i = 0; i < e->n; i++)
		FUZZ_CHECK(d->done_at[i] == e->done_at[i] &&
				   d->status[i] == e->status[i],
			   "response %zu: ended at %zu (%u), want %zu (%u)", i,
			   d->done_at[i], d->status[i], e->done_at[i],
			   e->status[i]);
}

static struct drv whole, split;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct fuzz_rng rng;
	static struct expect e;
	bool structured = size > 0 && data[0] == 0;

	fuzz_rng_init(&rng, data, size);
	uint64_t h = fuzz_rng_next(&rng);
	uint8_t mask = ((h >> 8) & 3) == 0 ? (uint8_t)h : 0;
	if (structured) {
		struct fuzz_in in = {data + 1, size - 1, 0};
		size = build_responses(&in, &e);
		buf = built;
		mask = e.head_mask;
	}

	memset(&whole, 0, sizeof(whole));
	memset(&split, 0, sizeof(split));
	whole.head_mask = split.head_mask = mask;
	http_resp_init(&whole.r, head_of(&whole, 0));
	http_resp_init(&split.r, head_of(&split, 0));
	split.rng = &rng;

	drv_feed(&whole, buf, size);
	if (structured)
		check_expected(&whole, &e);
	for (size_t off = 0; off < size && !split.error;) {
		size_t k = fuzz_chunk(&rng, size - off);
		drv_feed(&split, buf + off, k);
		off += k;
	}

	FUZZ_CHECK(whole.error == split.error, "error %d whole, %d split",
		   whole.error, split.error);
	FUZZ_CHECK(whole.ndone == split.ndone, "%zu responses whole, %zu split",
		   whole.ndone, split.ndone);
	for (size_t i = 0; i < whole.ndone && i < MAXEV; i++)
		FUZZ_CHECK(whole.done_at[i] == split.done_at[i] &&
				   whole.status[i] == split.status[i],
			   "response %zu: ends at %zu (%u) whole, %zu (%u) split",
			   i, whole.done_at[i], whole.status[i], split.done_at[i],
			   split.status[i]);
	if (!whole.error)
		FUZZ_CHECK(whole.r.state == split.r.state &&
				   whole.r.status == split.r.status &&
				   whole.r.final == split.r.final &&
				   whole.r.close_delimited ==
					   split.r.close_delimited,
			   "end state differs when split");
	return 0;
}
