/*
 * Incremental HTTP/1.x parsers. See http.h.
 *
 * Both parsers are byte-driven state machines that may stop at any byte and
 * resume with the next buffer; nothing is buffered but the few header-name
 * bytes needed to recognise Host, Content-Length and Transfer-Encoding.
 * Runs of bytes that carry nothing we keep (bodies, uninteresting header
 * values, chunk data) are skipped with memchr or arithmetic, so the work is
 * O(1) per byte at worst. They are observers, not gatekeepers: what a server
 * would reject with 400 we skip when the framing stays clear, and give up
 * (ERROR) only where we could no longer tell where a message ends.
 *
 * async-signal-safe: no allocation, no system call, no lock, no stdio.
 */
#include "http.h"

#include <emmintrin.h>

#include <string.h>

#include "common.h"
#include "reqids.h"

/* A head bigger than this is not HTTP as any server speaks it (they refuse
 * a few tens of KiB). Past it we stop, rather than skip lines forever. */
#define HTTP_HEAD_MAX (1u << 20)
/* Empty lines tolerated before a request line (RFC 9112 2.2). */
#define HTTP_IDLE_CRLF_MAX 256
/* Longest method token accepted: standard ones are at most 17 bytes. */
#define HTTP_METHOD_TOKEN_MAX 32
/* Content-Length and chunk sizes saturate here: nobody sends 2^60 bytes. */
#define HTTP_LEN_MAX (1ull << 60)

enum hdr_field {
	FIELD_OTHER = 0,
	FIELD_HOST,
	FIELD_CLEN,        /* Content-Length, before its digits */
	FIELD_CLEN_DIGITS, /* ... in its digits */
	FIELD_CLEN_TRAIL,  /* ... after its digits (only OWS allowed) */
	FIELD_CLEN_BAD,    /* ... not a number */
	FIELD_TE,          /* Transfer-Encoding */
	FIELD_ID,          /* one of the request's ids (reqids.h): kept */
};

/* Character classes, one table lookup a byte. */
enum {
	CC_METHOD = 1, /* RFC 9110 token characters but lowercase letters:
	                  methods are case-sensitive and every registered one
	                  is uppercase, so a lowercase first word is another
	                  protocol (or text) and is refused at once */
	CC_TCHAR = 2,  /* token characters */
};

#define CC_UPPER_DIGIT_EXTRA(c)                                               \
	(((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9') ||          \
	 (c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' || \
	 (c) == '\'' || (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' || \
	 (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define CC_OF(c)                                                              \
	((CC_UPPER_DIGIT_EXTRA(c) ? CC_METHOD | CC_TCHAR : 0) |              \
	 ((c) >= 'a' && (c) <= 'z' ? CC_TCHAR : 0))
static const uint8_t cc[256] = {ASCII_TABLE(CC_OF)};

static inline bool http_method_char(unsigned char c)
{
	return cc[c] & CC_METHOD;
}

static inline bool http_tchar(unsigned char c)
{
	return cc[c] & CC_TCHAR;
}

static inline unsigned char http_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static inline bool http_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static inline int http_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = http_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Header names are matched case-insensitively from the lowercased prefix
 * kept in tok; longer names are never one of ours. */
static void name_push(char *tok, size_t toksz, uint16_t *len, unsigned char c)
{
	if (*len < toksz)
		tok[*len] = (char)http_lower(c);
	if (*len < UINT16_MAX)
		(*len)++;
}

/* The run of token characters at buf[i..n) into the name; returns where
 * it ends. */
static size_t name_run(char *tok, size_t toksz, uint16_t *len, const char *buf,
		       size_t i, size_t n)
{
	while (i < n && http_tchar((unsigned char)buf[i]))
		name_push(tok, toksz, len, (unsigned char)buf[i++]);
	return i;
}

enum { NAME_NO = -1, NAME_UNKNOWN = -2 };

struct hname {
	const char *s; /* lowercase */
	size_t len;
};
#define HNAME(lit) {lit, sizeof(lit) - 1}

/* The header fields each parser reads; the byte path matches the same
 * names (req_field_begin, resp_field_begin). */
struct hnames {
	const struct hname *v;
	int n;
};
enum { HN_HOST, HN_CLEN, HN_TE };     /* req_names, in order */
static const struct hname req_names_v[] = {
	HNAME("host"), HNAME("content-length"), HNAME("transfer-encoding")};
enum { HR_CLEN, HR_TE };              /* resp_names, in order */
static const struct hname resp_names_v[] = {
	HNAME("content-length"), HNAME("transfer-encoding")};
static const struct hnames req_names = {req_names_v, 3};
static const struct hnames resp_names = {resp_names_v, 2};

/* Whether a header name starting with c may be one of names. Every name
 * starts with a letter, and c | 0x20 is a lowercase letter only for that
 * letter and its capital. */
static inline bool name_may_be(unsigned char c, const struct hnames *names)
{
	c |= 0x20;
	for (int k = 0; k < names->n; k++)
		if (c == (unsigned char)names->v[k].s[0])
			return true;
	return false;
}

/* Moves *at after the LF that ends the line at buf[*at] and returns true
 * if it is here; else *at = n (the rest of the line is still to come). */
static inline bool line_skip(const char *buf, size_t *at, size_t n)
{
	const char *lf = memchr(buf + *at, '\n', n - *at);
	*at = lf ? (size_t)(lf - buf) + 1 : n;
	return lf != NULL;
}

/* 0x20 in each byte of a word of a name that is a letter (not '-'). */
static inline uint64_t name_fold(uint64_t w)
{
	uint64_t x = w ^ 0x2d2d2d2d2d2d2d2dull; /* zero where '-' */
	uint64_t nz = (((x & 0x7f7f7f7f7f7f7f7full) + 0x7f7f7f7f7f7f7f7full) | x) &
		      0x8080808080808080ull;
	return nz >> 2;
}

/* Whether buf[0..len) is name (lowercase letters and '-') in any case:
 * eight bytes at a time, a letter matching itself or its capital. */
static bool name_eq(const char *buf, const char *name, size_t len)
{
	if (len < 8) {
		if (len >= 4) { /* two words of four, overlapping */
			uint32_t b0, b1, w0, w1;
			memcpy(&b0, buf, 4);
			memcpy(&b1, buf + len - 4, 4);
			memcpy(&w0, name, 4);
			memcpy(&w1, name + len - 4, 4);
			return (b0 | (uint32_t)name_fold(w0)) == w0 &&
			       (b1 | (uint32_t)name_fold(w1)) == w1;
		}
		for (size_t j = 0; j < len; j++)
			if (http_lower((unsigned char)buf[j]) != (unsigned char)name[j])
				return false;
		return true;
	}
	for (size_t j = 0;; j += 8) {
		if (j + 8 > len)
			j = len - 8; /* the last word overlaps the one before */
		uint64_t b, w;
		memcpy(&b, buf + j, 8);
		memcpy(&w, name + j, 8);
		if ((b | name_fold(w)) != w)
			return false;
		if (j + 8 == len)
			return true;
	}
}

/*
 * A header line starting at buf[0..n), when it is all there: the index in
 * names of the one it names (the name, then ':'), NAME_NO if none,
 * NAME_UNKNOWN if the buffer ends too soon to tell.
 */
static int name_match(const char *buf, size_t n, const struct hnames *set)
{
	const struct hname *names = set->v;
	int count = set->n;
	int verdict = NAME_NO;
	unsigned char first = (unsigned char)buf[0] | 0x20; /* see name_may_be */
	for (int k = 0; k < count; k++) {
		const char *name = names[k].s;
		size_t len = names[k].len;
		if (first != (unsigned char)name[0])
			continue;
		if (len < n) {
			if (buf[len] == ':' && name_eq(buf, name, len))
				return k;
			continue;
		}
		/* The buffer ends within the name: can it still be? */
		size_t j = 1;
		while (j < n && http_lower((unsigned char)buf[j]) == (unsigned char)name[j])
			j++;
		if (j == n)
			verdict = NAME_UNKNOWN;
	}
	return verdict;
}

/*
 * A header line that may name one of ours and does not end in buf, from
 * its first byte at buf[*at] (whole lines are hlines_whole's): tok and len
 * take the name, at once if all of it is here (*at is then at the colon),
 * else the run of it that is (*at after it); the byte path goes on.
 */
static void name_start(char *tok, size_t toksz, uint16_t *len, const char *buf,
		       size_t *at, size_t n, const struct hnames *set)
{
	const struct hname *names = set->v;
	int k = name_match(buf + *at, n - *at, set);
	*len = 0;
	if (k < 0) {
		*at = name_run(tok, toksz, len, buf, *at, n);
		return;
	}
	memcpy(tok, names[k].s, names[k].len);
	*len = (uint16_t)names[k].len;
	*at += names[k].len;
}

/*
 * A header line starting at buf[i] (neither CR nor LF) that ends in buf:
 * returns the offset after its LF, with *k the index in set of the field it
 * names (the name, then ':') and *vs where its value starts (after OWS),
 * or *k = NAME_NO. Returns 0 if the LF is not here: the byte path reads the
 * line as it comes. The whole line at once, to the same effect as the byte
 * path's walk through it.
 */
enum { HN_ID = 16 }; /* k of an id header: HN_ID + its slot */

static inline __attribute__((always_inline)) size_t
hline_whole(const char *buf, size_t i, size_t n, const struct hnames *set,
	    bool ids, int *k, size_t *vs)
{
	const char *lf = memchr(buf + i, '\n', n - i);
	if (!lf)
		return 0;
	size_t end = (size_t)(lf - buf);
	unsigned char first = (unsigned char)buf[i] | 0x20; /* see name_may_be */
	*k = NAME_NO;
	for (int m = 0; m < set->n; m++) {
		size_t len = set->v[m].len;
		if (first != (unsigned char)set->v[m].s[0])
			continue;
		/* no two names of a set start alike */
		if (len < end - i && buf[i + len] == ':' &&
		    name_eq(buf + i, set->v[m].s, len)) {
			size_t v = i + len + 1;
			while (v < end && http_ows((unsigned char)buf[v]))
				v++;
			*k = m;
			*vs = v;
		}
		break;
	}
	unsigned letter = (unsigned)(first - 'a');
	if (ids && *k == NAME_NO && letter < 26 && reqid_names.by_letter[letter]) {
		/* The lengths of the names with that first letter, shortest
		 * first: the first with a colon after it is the name's. */
		uint64_t m = reqid_names.by_letter[letter];
		while (m) {
			size_t len = (size_t)__builtin_ctzll(m);
			m &= m - 1;
			if (len >= end - i)
				break;
			if (buf[i + len] != ':')
				continue;
			int s = reqid_slot_http(buf + i, len);
			if (s >= 0) {
				size_t v = i + len + 1;
				while (v < end && http_ows((unsigned char)buf[v]))
					v++;
				*k = HN_ID + s;
				*vs = v;
			}
			break;
		}
	}
	return end + 1;
}

/*
 * The whole header lines from buf[i] on, while their LF is here: each
 * field of set they name goes to field(ctx, k, value, length up to the
 * LF). Returns where it stopped: at n, at a line that starts with CR or
 * LF (the end of the head, or junk), or at a line not all here.
 */
static inline __attribute__((always_inline)) size_t
hlines_whole(const char *buf, size_t i, size_t n, const struct hnames *set,
	     bool ids, void (*field)(void *ctx, int k, const char *v, size_t len),
	     void *ctx)
{
	while (i < n && buf[i] != '\n' && buf[i] != '\r') {
		int k;
		size_t vs = 0, next = hline_whole(buf, i, n, set, ids, &k, &vs);
		if (!next)
			break;
		if (k != NAME_NO)
			field(ctx, k, buf + vs, next - 1 - vs);
		i = next;
	}
	return i;
}

static bool name_is(const char *tok, uint16_t len, const char *name)
{
	size_t n = strlen(name);
	return len == n && memcmp(tok, name, n) == 0;
}

/* Content-Length value, one byte at a time; *field walks the FIELD_CLEN_*
 * sub-states, *acc collects the number (saturating: a huge length is as
 * good as infinite for us). */
static inline void clen_byte(uint8_t *field, uint64_t *acc, unsigned char c)
{
	switch (*field) {
	case FIELD_CLEN:
		if (http_ows(c) || c == '\r')
			return;
		*acc = 0;
		*field = FIELD_CLEN_DIGITS;
		/* fall through */
	case FIELD_CLEN_DIGITS:
		if (c >= '0' && c <= '9') {
			if (*acc < HTTP_LEN_MAX)
				*acc = *acc * 10 + (uint64_t)(c - '0');
			return;
		}
		if (http_ows(c) || c == '\r') {
			*field = FIELD_CLEN_TRAIL;
			return;
		}
		*field = FIELD_CLEN_BAD;
		return;
	case FIELD_CLEN_TRAIL:
		if (!http_ows(c) && c != '\r')
			*field = FIELD_CLEN_BAD;
		return;
	default:
		return;
	}
}

/* A whole Content-Length value v[0..len) (after OWS, up to the LF). */
static void clen_value(uint8_t *field, uint64_t *acc, const char *v, size_t len)
{
	*field = FIELD_CLEN;
	*acc = 0;
	for (size_t j = 0; j < len; j++)
		clen_byte(field, acc, (unsigned char)v[j]);
}

/* Transfer-Encoding value: keeps the last coding of the list in tok (the
 * one that frames the message). OWS is dropped, a comma starts over. */
static void te_byte(char *tok, size_t toksz, uint16_t *len, unsigned char c)
{
	if (c == ',') {
		*len = 0;
		return;
	}
	if (http_ows(c) || c == '\r')
		return;
	name_push(tok, toksz, len, c);
}

/* ======================================================================
 * Requests
 * ====================================================================== */

enum req_state {
	RQ_IDLE = 0,    /* before a request line: empty lines skipped */
	RQ_METHOD,
	RQ_TARGET_SP,   /* spaces before the target */
	RQ_TARGET,
	RQ_VERSION,     /* "HTTP/1.", then one digit; len = bytes matched */
	RQ_VERSION_END, /* optional spaces, CR, LF */
	RQ_LINE_LF,     /* CR seen after the version */
	RQ_HLINE,       /* start of a header line (or of the empty line) */
	RQ_HNAME,
	RQ_HOWS,        /* after the colon */
	RQ_HVALUE,      /* value of a field we parse */
	RQ_HSKIP,       /* rest of a line we ignore */
	RQ_END_LF,      /* CR at the start of a line */
	RQ_BODY,        /* Content-Length body */
	RQ_SINK,        /* body we cannot frame: swallow everything */
	RQ_ERROR,
};
_Static_assert(RQ_BODY == HTTP_REQ_IN_BODY && RQ_SINK == HTTP_REQ_IN_SINK,
	       "http.h tells the body states");

enum req_flag {
	RQF_DONE = 1 << 0,     /* a head was reported: next request is NEXT */
	RQF_NO_NEXT = 1 << 1,  /* Transfer-Encoding or bad Content-Length */
	RQF_HAVE_CLEN = 1 << 2,
	RQF_HAVE_HOST = 1 << 3,
};

void http_req_init(struct http_req *p)
{
	memset(p, 0, sizeof(*p));
}

bool http_req_at_start(const struct http_req *p)
{
	return p->state == RQ_IDLE;
}

/* Whether a line that starts with LF or CR follows some LF in buf[0..e):
 * an empty line, or taken for one (a line does not start with CR). buf has
 * at least e + 1 bytes. Sixteen positions at a time (SSE2, in every
 * x86-64), the last block overlapping the one before. */
static bool blank_line_before(const char *buf, size_t e)
{
	if (e < 16) {
		for (size_t p = 0; p < e; p++)
			if (buf[p] == '\n' && (buf[p + 1] == '\n' || buf[p + 1] == '\r'))
				return true;
		return false;
	}
	const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');
	for (size_t i = 0;;) {
		/* positions i..i+15 < e, and the bytes after them, up to e */
		__m128i a = _mm_loadu_si128((const __m128i *)(const void *)(buf + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(buf + i + 1));
		__m128i blank = _mm_and_si128(
			_mm_cmpeq_epi8(a, lf),
			_mm_or_si128(_mm_cmpeq_epi8(b, lf), _mm_cmpeq_epi8(b, cr)));
		if (_mm_movemask_epi8(blank))
			return true;
		if (i + 16 >= e)
			return false;
		i = i + 32 <= e ? i + 16 : e - 16;
	}
}

bool http_req_one_head(const char *buf, size_t n)
{
	if (n < 2 || buf[n - 1] != '\n')
		return false;
	size_t e; /* the LF that ends the last line before the empty one */
	if (buf[n - 2] == '\n')
		e = n - 2;
	else if (n >= 3 && buf[n - 2] == '\r' && buf[n - 3] == '\n')
		e = n - 3;
	else
		return false;
	/* No empty line before: each LF before e is followed by a line. */
	return !blank_line_before(buf, e);
}

bool http_looks_like_request(const char *buf, size_t n)
{
	if (n == 0)
		return false;
	if (n >= 4) { /* most requests: one compare */
		uint32_t w;
		memcpy(&w, buf, sizeof(w));
		if (w == 0x20544547) /* "GET ", little-endian */
			return true;
	}
	for (size_t i = 0; i < n && i <= HTTP_METHOD_TOKEN_MAX; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c == ' ')
			return i > 0;
		if (!http_method_char(c))
			return false;
	}
	return n <= HTTP_METHOD_TOKEN_MAX;
}

static void req_start(struct http_req *p, struct reqraw *info)
{
	reqraw_clear(info);
	p->len = 0;
	p->state = RQ_METHOD;
}


/* Host value: trailing OWS (and a stray CR) must not be stored, but we only
 * know it was trailing at the end of the line. The pending run is kept in
 * tok (free once the name is matched) and flushed before the next visible
 * byte. A run longer than tok would fill the 128-byte host field by itself
 * (4 bytes per escaped space), so losing its tail changes nothing. */
static inline bool host_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static void host_flush(struct http_req *p, struct reqraw *info)
{
	size_t k = p->len < sizeof(p->tok) ? p->len : sizeof(p->tok);
	REQRAW_PUT(info, host, p->tok, k);
	p->len = 0;
}

static void req_field_end(struct http_req *p)
{
	switch (p->field) {
	case FIELD_HOST:
		p->flags |= RQF_HAVE_HOST;
		break;
	case FIELD_CLEN_DIGITS:
	case FIELD_CLEN_TRAIL:
		if ((p->flags & RQF_HAVE_CLEN) && p->clen != p->body_left)
			p->flags |= RQF_NO_NEXT; /* conflicting lengths */
		p->clen = p->body_left;
		p->body_left = 0;
		p->flags |= RQF_HAVE_CLEN;
		break;
	case FIELD_CLEN:
	case FIELD_CLEN_BAD:
		p->flags |= RQF_NO_NEXT;
		p->body_left = 0;
		break;
	default:
		break;
	}
	p->field = FIELD_OTHER;
}

static void req_field_begin(struct http_req *p, struct reqraw *info)
{
	uint16_t len = p->len;

	p->field = FIELD_OTHER;
	if (name_is(p->tok, len, "host")) {
		if (!(p->flags & RQF_HAVE_HOST))
			p->field = FIELD_HOST;
	} else if (name_is(p->tok, len, "content-length")) {
		p->field = FIELD_CLEN;
		p->body_left = 0; /* accumulator while the value is read */
	} else if (name_is(p->tok, len, "transfer-encoding")) {
		/* Any transfer coding on a request: the body is chunked (or
		 * the server answers 400 and closes). Either way we do not
		 * follow it. */
		p->flags |= RQF_NO_NEXT;
	} else if (reqid_may_start((unsigned char)p->tok[0]) &&
		   len <= sizeof(p->tok)) {
		int s = reqid_slot_http(p->tok, len);
		p->id_at = (int16_t)(s >= 0 ? reqraw_id_open(info, (unsigned)s) : -1);
		if (p->id_at >= 0)
			p->field = FIELD_ID;
	}
	p->len = 0;
}

/* A whole header line (hlines_whole): field k, value v[0..len) up to the
 * LF. */
struct req_ctx {
	struct http_req *p;
	struct reqraw *info;
};

static void req_hline(void *ctx, int k, const char *v, size_t len)
{
	struct http_req *p = ((struct req_ctx *)ctx)->p;
	struct reqraw *info = ((struct req_ctx *)ctx)->info;

	switch (k) {
	case HN_HOST:
		if (p->flags & RQF_HAVE_HOST)
			return;
		while (len > 0 && host_space(v[len - 1]))
			len--;
		info->host_len = 0;
		REQRAW_PUT(info, host, v, len);
		p->flags |= RQF_HAVE_HOST;
		return;
	case HN_CLEN:
		clen_value(&p->field, &p->body_left, v, len);
		req_field_end(p);
		return;
	case HN_TE:
		p->flags |= RQF_NO_NEXT; /* see req_field_begin */
		return;
	default:
		if (k >= HN_ID)
			reqraw_id_put(info, reqraw_id_open(info, (unsigned)(k - HN_ID)),
				      v, len);
		return;
	}
}

/* The empty line after the headers: decides how the body is skipped. */
static void req_head_end(struct http_req *p, struct reqraw *info)
{
	info->head_complete = true;
	p->flags |= RQF_DONE;
	p->len = 0;
	if (p->flags & RQF_NO_NEXT) {
		p->state = RQ_SINK;
	} else if ((p->flags & RQF_HAVE_CLEN) && p->clen > 0) {
		p->body_left = p->clen;
		p->state = RQ_BODY;
	} else {
		p->state = RQ_IDLE;
	}
}

/*
 * The request line when all of it is in buf[i..n) and it is as clients
 * send it: "METHOD SP target SP HTTP/1.d [OWS] [CR] LF", the byte path's
 * grammar, read a run at a time. Returns the offset after the LF, or 0 to
 * leave the line to the byte path (which decides what anything else is).
 */
static size_t req_line_fast(struct http_req *p, struct reqraw *info,
			    const char *buf, size_t i, size_t n)
{
	static const char version[] = "HTTP/1.";
	const char *lf = memchr(buf + i, '\n', n - i);
	if (!lf)
		return 0;
	size_t end = (size_t)(lf - buf), m = i;
	while (m < end && http_method_char((unsigned char)buf[m]))
		m++;
	if (m == i || m - i > HTTP_METHOD_TOKEN_MAX || m == end || buf[m] != ' ')
		return 0;
	size_t t = m + 1;
	while (t < end && buf[t] == ' ')
		t++;
	if (t == end || buf[t] == '\r')
		return 0;
	const char *sp = memchr(buf + t, ' ', end - t);
	if (!sp)
		return 0;
	size_t te = (size_t)(sp - buf), v = te + 1;
	while (v < end && buf[v] == ' ')
		v++;
	if (end - v < sizeof(version) ||
	    memcmp(buf + v, version, sizeof(version) - 1) != 0 ||
	    buf[v + sizeof(version) - 1] < '0' || buf[v + sizeof(version) - 1] > '9')
		return 0;
	size_t r = v + sizeof(version);
	while (r < end && http_ows((unsigned char)buf[r]))
		r++;
	if (r < end && !(buf[r] == '\r' && r + 1 == end))
		return 0;
	if (end + 1 - i > HTTP_HEAD_MAX)
		return 0;
	req_start(p, info);
	REQRAW_PUT(info, method, buf + i, m - i);
	info->is_head = m - i == 4 && memcmp(buf + i, "HEAD", 4) == 0;
	info->proto = PROTO_HTTP;
	REQRAW_PUT(info, target, buf + t, te - t);
	p->hdr_bytes += (uint32_t)(end + 1 - i);
	p->len = sizeof(version) - 1; /* as the byte path leaves it */
	p->state = RQ_HLINE;
	return end + 1;
}

/* async-signal-safe */
int http_req_feed(struct http_req *p, struct reqraw *info, const char *buf,
		  size_t n, size_t *used)
{
	static const char version[] = "HTTP/1.";
	size_t i = 0;

	if (p->state == RQ_ERROR)
		goto error;
	while (i < n) {
		unsigned char c = (unsigned char)buf[i];
		size_t start = i;

		switch (p->state) {
		case RQ_IDLE:
			if (c == '\r' || c == '\n') {
				if (++p->len > HTTP_IDLE_CRLF_MAX)
					goto error;
				i++;
				continue;
			}
			if (p->flags & RQF_DONE) {
				/* The byte belongs to the next request. */
				http_req_init(p);
				*used = i;
				return HTTP_REQ_NEXT;
			}
			if (!http_method_char(c))
				goto error;
			{
				size_t next = req_line_fast(p, info, buf, i, n);
				if (next) {
					i = next;
					continue;
				}
			}
			req_start(p, info);
			continue;
		case RQ_METHOD:
			if (c == ' ') {
				info->is_head = p->len == 4 &&
					memcmp(info->method, "HEAD", 4) == 0;
				info->proto = PROTO_HTTP;
				p->state = RQ_TARGET_SP;
				i++;
				break;
			}
			{
				size_t j = i;
				while (j < n && http_method_char((unsigned char)buf[j]) &&
				       p->len + (j - i) < HTTP_METHOD_TOKEN_MAX)
					j++;
				if (j == i)
					goto error; /* not a token, or too long */
				REQRAW_PUT(info, method, buf + i, j - i);
				p->len = (uint16_t)(p->len + (j - i));
				i = j;
			}
			break;
		case RQ_TARGET_SP:
			if (c == ' ') {
				i++;
				break;
			}
			if (c == '\n' || c == '\r')
				goto error; /* HTTP/0.9 or no target */
			p->state = RQ_TARGET;
			continue;
		case RQ_TARGET: {
			/* Anything but SP and LF is kept (escaped): servers
			 * differ on what they refuse, and a report should show
			 * what was sent. */
			size_t j = i;
			while (j < n && buf[j] != ' ' && buf[j] != '\n')
				j++;
			REQRAW_PUT(info, target, buf + i, j - i);
			i = j;
			if (i == n)
				break;
			if (buf[i] == '\n')
				goto error;
			p->state = RQ_VERSION;
			p->len = 0;
			i++;
			break;
		}
		case RQ_VERSION:
			if (p->len == 0 && c == ' ') {
				i++; /* more than one space */
				break;
			}
			if (p->len == 0 && n - i >= sizeof(version) &&
			    memcmp(buf + i, version, sizeof(version) - 1) == 0 &&
			    buf[i + sizeof(version) - 1] >= '0' &&
			    buf[i + sizeof(version) - 1] <= '9') {
				/* all of it at once */
				i += sizeof(version);
				p->len = sizeof(version) - 1;
				p->state = RQ_VERSION_END;
				break;
			}
			if (p->len < sizeof(version) - 1) {
				if (c != (unsigned char)version[p->len])
					goto error;
				p->len++;
			} else {
				if (c < '0' || c > '9')
					goto error;
				p->state = RQ_VERSION_END;
			}
			i++;
			break;
		case RQ_VERSION_END:
			if (c == '\r')
				p->state = RQ_LINE_LF;
			else if (c == '\n')
				p->state = RQ_HLINE;
			else if (!http_ows(c))
				goto error;
			i++;
			break;
		case RQ_LINE_LF:
			if (c != '\n')
				goto error;
			p->state = RQ_HLINE;
			i++;
			break;
		case RQ_HLINE: {
			struct req_ctx ctx = {p, info};
			i = hlines_whole(buf, i, n, &req_names, true, req_hline,
					 &ctx);
			if (i == n)
				break;
			c = (unsigned char)buf[i];
			if (c == '\n') {
				i++;
				if ((uint64_t)p->hdr_bytes + (i - start) > HTTP_HEAD_MAX)
					goto error;
				p->hdr_bytes += (uint32_t)(i - start);
				req_head_end(p, info);
				*used = i;
				return HTTP_REQ_HEAD;
			}
			if (c == '\r') {
				p->state = RQ_END_LF;
				i++;
				break;
			}
			if (!name_may_be(c, &req_names) && !reqid_may_start(c)) {
				/* A field we do not read, an obs-fold
				 * continuation or junk: skipped. */
				i = n;
				p->state = RQ_HSKIP;
			} else {
				name_start(p->tok, sizeof(p->tok), &p->len, buf,
					   &i, n, &req_names);
				p->state = RQ_HNAME;
			}
			break;
		}
		case RQ_END_LF:
			if (c == '\n') {
				i++;
				p->hdr_bytes += (uint32_t)(i - start);
				req_head_end(p, info);
				*used = i;
				return HTTP_REQ_HEAD;
			}
			p->state = RQ_HSKIP;
			continue;
		case RQ_HNAME:
			if (http_tchar(c)) {
				i = name_run(p->tok, sizeof(p->tok), &p->len, buf, i, n);
				break;
			}
			i++;
			if (c == ':') {
				req_field_begin(p, info);
				p->state = p->field == FIELD_OTHER ? RQ_HSKIP
								   : RQ_HOWS;
			} else if (c == '\n') {
				p->state = RQ_HLINE; /* no colon: ignored */
			} else {
				p->state = RQ_HSKIP;
			}
			break;
		case RQ_HOWS:
			if (http_ows(c)) {
				i++;
				break;
			}
			p->state = RQ_HVALUE;
			if (p->field == FIELD_HOST)
				info->host_len = 0;
			continue;
		case RQ_HVALUE:
			if (c == '\n') {
				i++;
				req_field_end(p);
				p->state = RQ_HLINE;
				break;
			}
			if (p->field == FIELD_ID) {
				const char *lf = memchr(buf + i, '\n', n - i);
				size_t j = lf ? (size_t)(lf - buf) : n;
				reqraw_id_put(info, p->id_at, buf + i, j - i);
				i = j;
			} else if (p->field == FIELD_HOST) {
				if (host_space((char)c)) {
					if (p->len < sizeof(p->tok))
						p->tok[p->len] = (char)c;
					if (p->len < UINT16_MAX)
						p->len++;
					i++;
					break;
				}
				if (p->len)
					host_flush(p, info);
				size_t j = i;
				while (j < n && !host_space(buf[j]) &&
				       buf[j] != '\n')
					j++;
				REQRAW_PUT(info, host, buf + i, j - i);
				i = j;
			} else {
				clen_byte(&p->field, &p->body_left, c);
				i++;
			}
			break;
		case RQ_HSKIP:
			if (line_skip(buf, &i, n))
				p->state = RQ_HLINE;
			break;
		case RQ_BODY: {
			uint64_t k = n - i;
			if (k > p->body_left)
				k = p->body_left;
			p->body_left -= k;
			i += (size_t)k;
			if (p->body_left == 0) {
				p->state = RQ_IDLE;
				p->len = 0;
			}
			continue; /* body bytes are not head bytes */
		}
		case RQ_SINK:
			*used = n;
			return HTTP_REQ_MORE;
		case RQ_ERROR:
		default:
			goto error;
		}
		if (p->state >= RQ_METHOD && p->state <= RQ_END_LF) {
			uint64_t hb = (uint64_t)p->hdr_bytes + (i - start);
			if (hb > HTTP_HEAD_MAX)
				goto error;
			p->hdr_bytes = (uint32_t)hb;
		}
	}
	*used = n;
	return HTTP_REQ_MORE;
error:
	p->state = RQ_ERROR;
	*used = n;
	return HTTP_REQ_ERROR;
}

/* ======================================================================
 * Responses
 * ====================================================================== */

enum resp_state {
	RS_VERSION = 0, /* "HTTP/1." then a digit; len = bytes matched */
	RS_STATUS_SP,   /* at least one space */
	RS_STATUS,      /* three digits; len = digits seen, clen = value */
	RS_STATUS_END,  /* SP, CR or LF after the code */
	RS_REASON,      /* up to LF */
	RS_HLINE,
	RS_HNAME,
	RS_HOWS,
	RS_HVALUE,
	RS_HSKIP,
	RS_END_LF,
	RS_BODY,        /* Content-Length body */
	RS_CHUNK_SIZE,  /* hex digits; len = digits seen, clen = value */
	RS_CHUNK_EXT,   /* rest of the chunk-size line */
	RS_CHUNK_DATA,
	RS_CHUNK_CR,    /* CRLF after the chunk data */
	RS_CHUNK_LF,
	RS_TRAILER,     /* start of a trailer line (or of the final CRLF) */
	RS_TRAILER_SKIP,
	RS_TRAILER_LF,
	RS_SINK,        /* close-delimited body or tunnel: never DONE */
	RS_DONE,
	RS_ERROR,
};

enum resp_flag {
	RSF_INTERIM = 1 << 0,   /* current head is 1xx */
	RSF_HAVE_CLEN = 1 << 1,
	RSF_BAD_CLEN = 1 << 2,  /* unusable or conflicting Content-Length */
	RSF_TE = 1 << 3,        /* Transfer-Encoding seen */
	RSF_CHUNKED = 1 << 4,   /* ... and its last coding is chunked */
	RSF_SWITCH = 1 << 5,    /* current head is 101 Switching Protocols */
};

void http_resp_init(struct http_resp *r, bool head_request)
{
	memset(r, 0, sizeof(*r));
	r->no_body = head_request;
}

bool http_resp_final_start(struct http_resp *r, const char *buf, size_t n)
{
	/* as the fast path of RS_VERSION then RS_STATUS reads it */
	if (r->state != RS_VERSION || r->len != 0 || n < 12)
		return false;
	uint64_t v;
	memcpy(&v, buf, sizeof(v)); /* "HTTP/1.x", little-endian */
	if ((v & 0x00ffffffffffffffULL) != 0x002e312f50545448ULL ||
	    (unsigned char)(buf[7] - '0') > 9 || buf[8] != ' ' ||
	    (unsigned char)(buf[9] - '2') > 7 ||
	    (unsigned char)(buf[10] - '0') > 9 ||
	    (unsigned char)(buf[11] - '0') > 9)
		return false;
	r->final = true;
	r->status = (uint16_t)((buf[9] - '0') * 100 + (buf[10] - '0') * 10 +
			       (buf[11] - '0'));
	return true;
}

/* Ready for the next head after a 1xx. */
static void resp_head_reset(struct http_resp *r)
{
	r->state = RS_VERSION;
	r->flags = 0;
	r->field = FIELD_OTHER;
	r->len = 0;
	r->hdr_bytes = 0;
	r->body_left = 0;
	r->clen = 0;
}

static void resp_field_begin(struct http_resp *r)
{
	uint16_t len = r->len;

	r->field = FIELD_OTHER;
	if (name_is(r->tok, len, "content-length")) {
		r->field = FIELD_CLEN;
		r->body_left = 0;
	} else if (name_is(r->tok, len, "transfer-encoding")) {
		r->field = FIELD_TE;
	}
	r->len = 0;
}

static void resp_field_end(struct http_resp *r)
{
	switch (r->field) {
	case FIELD_CLEN_DIGITS:
	case FIELD_CLEN_TRAIL:
		if ((r->flags & RSF_HAVE_CLEN) && r->clen != r->body_left)
			r->flags |= RSF_BAD_CLEN;
		r->clen = r->body_left;
		r->body_left = 0;
		r->flags |= RSF_HAVE_CLEN;
		break;
	case FIELD_CLEN:
	case FIELD_CLEN_BAD:
		r->flags |= RSF_BAD_CLEN;
		r->body_left = 0;
		break;
	case FIELD_TE:
		/* Several Transfer-Encoding lines make one list: the last
		 * coding of the last line is the one that frames. */
		r->flags |= RSF_TE;
		if (name_is(r->tok, r->len, "chunked"))
			r->flags |= RSF_CHUNKED;
		else
			r->flags &= (uint8_t)~RSF_CHUNKED;
		break;
	default:
		break;
	}
	r->field = FIELD_OTHER;
	r->len = 0;
}

/* A whole header line (hlines_whole): field k, value v[0..len) up to the
 * LF. */
static void resp_hline(void *ctx, int k, const char *v, size_t len)
{
	struct http_resp *r = ctx;

	if (k == HR_CLEN) {
		clen_value(&r->field, &r->body_left, v, len);
	} else if (k == HR_TE) {
		r->field = FIELD_TE;
		r->len = 0;
		for (size_t j = 0; j < len; j++)
			te_byte(r->tok, sizeof(r->tok), &r->len, (unsigned char)v[j]);
	} else {
		return;
	}
	resp_field_end(r);
}

enum resp_next {
	RN_CONTINUE, /* keep parsing this buffer */
	RN_DONE,     /* the response is complete */
};

/* The empty line after a head: which framing follows (RFC 9112 6.3). */
static int resp_head_end(struct http_resp *r)
{
	if (r->flags & RSF_INTERIM) {
		if (r->flags & RSF_SWITCH) {
			/* Switching Protocols: the connection is no longer
			 * HTTP; what follows ends only at close. */
			r->final = true;
			r->status = 101;
			r->close_delimited = true;
			r->state = RS_SINK;
			return RN_CONTINUE;
		}
		resp_head_reset(r);
		return RN_CONTINUE;
	}
	if (r->no_body || r->status == 204 || r->status == 304)
		return RN_DONE;
	if (r->flags & RSF_TE) {
		if (r->flags & RSF_CHUNKED) {
			r->state = RS_CHUNK_SIZE;
			r->len = 0;
			r->clen = 0;
			return RN_CONTINUE;
		}
		r->close_delimited = true;
		r->state = RS_SINK;
		return RN_CONTINUE;
	}
	if ((r->flags & RSF_HAVE_CLEN) && !(r->flags & RSF_BAD_CLEN)) {
		if (r->clen == 0)
			return RN_DONE;
		r->body_left = r->clen;
		r->state = RS_BODY;
		return RN_CONTINUE;
	}
	r->close_delimited = true;
	r->state = RS_SINK;
	return RN_CONTINUE;
}

/* async-signal-safe */
int http_resp_feed(struct http_resp *r, const char *buf, size_t n,
		   size_t *used)
{
	static const char version[] = "HTTP/1.";
	size_t i = 0;

	if (r->state == RS_DONE) {
		*used = 0;
		return HTTP_RESP_DONE;
	}
	if (r->state == RS_ERROR)
		goto error;
	while (i < n) {
		unsigned char c = (unsigned char)buf[i];
		size_t start = i;

		switch (r->state) {
		case RS_VERSION:
			if (r->len == 0 && n - i >= sizeof(version) + 4 &&
			    memcmp(buf + i, version, sizeof(version) - 1) == 0 &&
			    buf[i + sizeof(version) - 1] >= '0' &&
			    buf[i + sizeof(version) - 1] <= '9' &&
			    buf[i + sizeof(version)] == ' ') {
				/* "HTTP/1.x " at once */
				i += sizeof(version) + 1;
				r->state = RS_STATUS;
				r->len = 0;
				r->clen = 0;
				break;
			}
			if (r->len < sizeof(version) - 1) {
				if (c != (unsigned char)version[r->len])
					goto error;
				r->len++;
			} else {
				if (c < '0' || c > '9')
					goto error;
				r->state = RS_STATUS_SP;
				r->len = 0;
			}
			i++;
			break;
		case RS_STATUS_SP:
			if (c != ' ')
				goto error;
			r->state = RS_STATUS;
			r->len = 0;
			r->clen = 0;
			i++;
			break;
		case RS_STATUS:
			if (c == ' ' && r->len == 0) {
				i++; /* more than one space */
				break;
			}
			if (r->len == 0 && n - i >= 4 && c >= '2' && c <= '9' &&
			    buf[i + 1] >= '0' && buf[i + 1] <= '9' &&
			    buf[i + 2] >= '0' && buf[i + 2] <= '9') {
				/* a final status, all three digits at once, and
				 * the reason phrase when its end is here */
				r->final = true;
				r->status = (uint16_t)((c - '0') * 100 +
						       (buf[i + 1] - '0') * 10 +
						       (buf[i + 2] - '0'));
				r->clen = 0;
				r->state = RS_STATUS_END;
				i += 3;
				c = (unsigned char)buf[i];
				if (c == ' ' || c == '\r') {
					r->state = RS_REASON;
					if (line_skip(buf, &i, n))
						r->state = RS_HLINE;
				}
				break;
			}
			if (c < '0' || c > '9')
				goto error;
			if (r->len == 0) {
				if (c == '0')
					goto error;
				if (c == '1')
					r->flags |= RSF_INTERIM;
				else
					r->final = true;
			}
			r->clen = r->clen * 10 + (uint64_t)(c - '0');
			if (++r->len == 3) {
				/* status stays 0 through interim heads */
				if (!(r->flags & RSF_INTERIM))
					r->status = (uint16_t)r->clen;
				else if (r->clen == 101)
					r->flags |= RSF_SWITCH;
				r->clen = 0;
				r->len = 0;
				r->state = RS_STATUS_END;
			}
			i++;
			break;
		case RS_STATUS_END:
			if (c == '\n')
				r->state = RS_HLINE;
			else if (c == ' ' || c == '\r')
				r->state = RS_REASON;
			else
				goto error;
			i++;
			break;
		case RS_REASON:
		case RS_HSKIP:
			if (line_skip(buf, &i, n))
				r->state = RS_HLINE;
			break;
		case RS_HLINE:
			i = hlines_whole(buf, i, n, &resp_names, false, resp_hline, r);
			if (i == n)
				break;
			c = (unsigned char)buf[i];
			if (c == '\n') {
				i++;
				goto head_end;
			}
			if (c == '\r') {
				r->state = RS_END_LF;
				i++;
				break;
			}
			if (!name_may_be(c, &resp_names)) {
				/* not Content-Length nor Transfer-Encoding */
				i = n;
				r->state = RS_HSKIP;
			} else {
				name_start(r->tok, sizeof(r->tok), &r->len, buf,
					   &i, n, &resp_names);
				r->state = RS_HNAME;
			}
			break;
		case RS_END_LF:
			if (c == '\n') {
				i++;
				goto head_end;
			}
			r->state = RS_HSKIP;
			continue;
		case RS_HNAME:
			if (http_tchar(c)) {
				i = name_run(r->tok, sizeof(r->tok), &r->len, buf, i, n);
				break;
			}
			i++;
			if (c == ':') {
				resp_field_begin(r);
				r->state = r->field == FIELD_OTHER ? RS_HSKIP
								   : RS_HOWS;
			} else if (c == '\n') {
				r->state = RS_HLINE;
			} else {
				r->state = RS_HSKIP;
			}
			break;
		case RS_HOWS:
			if (http_ows(c)) {
				i++;
				break;
			}
			r->state = RS_HVALUE;
			continue;
		case RS_HVALUE:
			i++;
			if (c == '\n') {
				resp_field_end(r);
				r->state = RS_HLINE;
			} else if (r->field == FIELD_TE) {
				te_byte(r->tok, sizeof(r->tok), &r->len, c);
			} else {
				clen_byte(&r->field, &r->body_left, c);
			}
			break;
		case RS_BODY: {
			uint64_t k = n - i;
			if (k > r->body_left)
				k = r->body_left;
			r->body_left -= k;
			i += (size_t)k;
			if (r->body_left == 0) {
				r->state = RS_DONE;
				*used = i;
				return HTTP_RESP_DONE;
			}
			continue;
		}
		case RS_CHUNK_SIZE: {
			int v = http_hexval(c);
			if (v >= 0) {
				if (r->clen >= HTTP_LEN_MAX)
					goto error;
				r->clen = r->clen * 16 + (uint64_t)v;
				r->len = 1;
				i++;
				continue;
			}
			if (r->len == 0)
				goto error;
			if (c == '\n') {
				i++;
				goto chunk_line_end;
			}
			if (c != ';' && c != '\r' && !http_ows(c))
				goto error;
			r->state = RS_CHUNK_EXT;
			i++;
			continue;
		}
		case RS_CHUNK_EXT: {
			const char *lf = memchr(buf + i, '\n', n - i);
			if (!lf) {
				i = n;
				continue;
			}
			i = (size_t)(lf - buf) + 1;
			goto chunk_line_end;
		}
		case RS_CHUNK_DATA: {
			uint64_t k = n - i;
			if (k > r->body_left)
				k = r->body_left;
			r->body_left -= k;
			i += (size_t)k;
			if (r->body_left == 0)
				r->state = RS_CHUNK_CR;
			continue;
		}
		case RS_CHUNK_CR:
			if (c == '\r')
				r->state = RS_CHUNK_LF;
			else if (c == '\n')
				r->state = RS_CHUNK_SIZE;
			else
				goto error;
			r->len = 0;
			r->clen = 0;
			i++;
			continue;
		case RS_CHUNK_LF:
			if (c != '\n')
				goto error;
			r->state = RS_CHUNK_SIZE;
			i++;
			continue;
		case RS_TRAILER:
			i++;
			if (c == '\n')
				goto done;
			r->state = c == '\r' ? RS_TRAILER_LF : RS_TRAILER_SKIP;
			continue;
		case RS_TRAILER_LF:
			if (c == '\n') {
				i++;
				goto done;
			}
			r->state = RS_TRAILER_SKIP;
			continue;
		case RS_TRAILER_SKIP: {
			const char *lf = memchr(buf + i, '\n', n - i);
			if (!lf) {
				i = n;
				continue;
			}
			i = (size_t)(lf - buf) + 1;
			r->state = RS_TRAILER;
			continue;
		}
		case RS_SINK:
			*used = n;
			return HTTP_RESP_MORE;
		case RS_ERROR:
		default:
			goto error;
		}
		/* Only head states get here. */
		{
			uint64_t hb = (uint64_t)r->hdr_bytes + (i - start);
			if (hb > HTTP_HEAD_MAX)
				goto error;
			r->hdr_bytes = (uint32_t)hb;
		}
		continue;
head_end:
		if ((uint64_t)r->hdr_bytes + (i - start) > HTTP_HEAD_MAX)
			goto error;
		r->hdr_bytes += (uint32_t)(i - start);
		if (resp_head_end(r) == RN_DONE)
			goto done;
		continue;
chunk_line_end:
		if (r->clen == 0) {
			r->state = RS_TRAILER;
		} else {
			r->body_left = r->clen;
			r->state = RS_CHUNK_DATA;
		}
		continue;
	}
	*used = n;
	return HTTP_RESP_MORE;
done:
	r->state = RS_DONE;
	*used = i;
	return HTTP_RESP_DONE;
error:
	r->state = RS_ERROR;
	*used = n;
	return HTTP_RESP_ERROR;
}

int http_resp_skip(struct http_resp *r, uint64_t n)
{
	switch (r->state) {
	case RS_DONE:
		return HTTP_RESP_DONE;
	case RS_SINK:
		return HTTP_RESP_MORE;
	case RS_BODY:
		if (n >= r->body_left) {
			r->body_left = 0;
			r->state = RS_DONE;
			return HTTP_RESP_DONE;
		}
		r->body_left -= n;
		return HTTP_RESP_MORE;
	case RS_CHUNK_DATA:
		if (n <= r->body_left) {
			r->body_left -= n;
			if (r->body_left == 0)
				r->state = RS_CHUNK_CR;
			return HTTP_RESP_MORE;
		}
		break;
	default:
		if (n == 0)
			return r->state == RS_ERROR ? HTTP_RESP_ERROR
						    : HTTP_RESP_MORE;
		break;
	}
	/* Unseen bytes where framing had to be read: we lost track. */
	r->state = RS_ERROR;
	return HTTP_RESP_ERROR;
}
