/* The request's ids and the proxy's stamp. See reqids.h. */
#include "reqids.h"

#include <stdio.h>
#include <string.h>

#include "common.h"

#define BUILTIN(h, u) {sizeof(h) - 1, h, u}

struct reqid_names reqid_names = {
	.n = REQID_BUILTIN,
	/* b s t x */
	.letters = 1u << ('b' - 'a') | 1u << ('s' - 'a') | 1u << ('t' - 'a') |
		   1u << ('x' - 'a'),
	.lengths = 1ull << 2 | 1ull << 11 | 1ull << 12 | 1ull << 13 |
		   1ull << 15 | 1ull << 16 | 1ull << 21,
	.by_len = {
		[2] = 1u << REQID_B3,
		[11] = 1u << REQID_TRACEPARENT,
		[12] = 1u << REQID_X_REQUEST_ID | 1u << REQID_SENTRY_TRACE |
		       1u << REQID_X_B3_TRACEID,
		[13] = 1u << REQID_X_QUEUE_START,
		[15] = 1u << REQID_X_AMZN_TRACE_ID | 1u << REQID_X_REQUEST_START,
		[16] = 1u << REQID_X_CORRELATION_ID,
		[21] = 1u << REQID_X_CLOUD_TRACE_CONTEXT,
	},
	.by_letter = {
		['b' - 'a'] = 1ull << 2,
		['s' - 'a'] = 1ull << 12,
		['t' - 'a'] = 1ull << 11,
		['x' - 'a'] = 1ull << 12 | 1ull << 13 | 1ull << 15 | 1ull << 16 |
			      1ull << 21,
	},
	.v = {
		[REQID_TRACEPARENT] = BUILTIN("traceparent", "HTTP_TRACEPARENT"),
		[REQID_X_REQUEST_ID] = BUILTIN("x-request-id", "HTTP_X_REQUEST_ID"),
		[REQID_X_CORRELATION_ID] =
			BUILTIN("x-correlation-id", "HTTP_X_CORRELATION_ID"),
		[REQID_X_AMZN_TRACE_ID] =
			BUILTIN("x-amzn-trace-id", "HTTP_X_AMZN_TRACE_ID"),
		[REQID_SENTRY_TRACE] = BUILTIN("sentry-trace", "HTTP_SENTRY_TRACE"),
		[REQID_X_CLOUD_TRACE_CONTEXT] =
			BUILTIN("x-cloud-trace-context", "HTTP_X_CLOUD_TRACE_CONTEXT"),
		[REQID_X_B3_TRACEID] = BUILTIN("x-b3-traceid", "HTTP_X_B3_TRACEID"),
		[REQID_B3] = BUILTIN("b3", "HTTP_B3"),
		[REQID_X_REQUEST_START] =
			BUILTIN("x-request-start", "HTTP_X_REQUEST_START"),
		[REQID_X_QUEUE_START] = BUILTIN("x-queue-start", "HTTP_X_QUEUE_START"),
	},
};

static bool tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

static void say(void (*warn)(const char *line), const char *name, size_t n,
		const char *why)
{
	if (!warn)
		return;
	char q[REQID_NAME_MAX * 4 + 8];
	size_t o = 0;
	for (size_t i = 0; i < n && i < REQID_NAME_MAX + 8 && o + 5 < sizeof(q); i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
			o += (size_t)snprintf(q + o, sizeof(q) - o, "\\x%02x", c);
		else
			q[o++] = (char)c;
	}
	q[o] = '\0';
	char line[256];
	snprintf(line, sizeof(line), "slowdog: SLOWDOG_HEADERS: \"%s%s\" %s; left out",
		 q, n > REQID_NAME_MAX + 8 ? "..." : "", why);
	warn(line);
}

int reqids_setup(const char *list, void (*warn)(const char *line))
{
	int added = 0;
	const char *p = list ? list : "";
	while (*p) {
		size_t n = strcspn(p, ",");
		const char *name = p;
		p += n;
		if (*p == ',')
			p++;
		while (n > 0 && (*name == ' ' || *name == '\t')) {
			name++;
			n--;
		}
		while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
			n--;
		if (n == 0)
			continue;
		bool token = true;
		for (size_t i = 0; i < n; i++)
			token &= tchar((unsigned char)name[i]);
		if (!token) {
			say(warn, name, n, "is not a header name");
			continue;
		}
		if (n > REQID_NAME_MAX) {
			say(warn, name, n, "is longer than 32 bytes");
			continue;
		}
		char low[REQID_NAME_MAX + 1];
		for (size_t i = 0; i < n; i++)
			low[i] = lower(name[i]);
		low[n] = '\0';
		if (!((low[0] >= 'a' && low[0] <= 'z'))) {
			say(warn, name, n, "does not start with a letter");
			continue;
		}
		if (strcmp(low, "host") == 0 || strcmp(low, "content-length") == 0 ||
		    strcmp(low, "transfer-encoding") == 0) {
			say(warn, name, n, "is read for other ends");
			continue;
		}
		if (reqid_slot_http(low, n) >= 0)
			continue; /* already shown */
		if (reqid_names.n >= REQID_SLOTS) {
			say(warn, name, n, "is one name too many (at most 8)");
			continue;
		}
		struct reqid_name *v = &reqid_names.v[reqid_names.n];
		v->len = (uint8_t)n;
		memcpy(v->http, low, n + 1);
		memcpy(v->uwsgi, "HTTP_", 5);
		for (size_t i = 0; i < n; i++) {
			char c = name[i];
			if (c >= 'a' && c <= 'z')
				c = (char)(c - ('a' - 'A'));
			else if (c == '-')
				c = '_';
			v->uwsgi[5 + i] = c;
		}
		v->uwsgi[5 + n] = '\0';
		reqid_names.letters |= 1u << (low[0] - 'a');
		reqid_names.lengths |= 1ull << n;
		reqid_names.by_letter[low[0] - 'a'] |= 1ull << n;
		reqid_names.by_len[n] |= 1u << reqid_names.n;
		reqid_names.n++;
		added++;
	}
	return added;
}

int reqid_slot_http(const char *name, size_t n)
{
	if (n == 0 || n > REQID_NAME_MAX || !(reqid_names.lengths >> n & 1))
		return -1;
	char first = lower(name[0]), last = lower(name[n - 1]);
	for (uint32_t m = reqid_names.by_len[n]; m; m &= m - 1) {
		int s = __builtin_ctz(m);
		const struct reqid_name *v = &reqid_names.v[s];
		/* the last byte first: it tells apart names of a length */
		if (v->http[n - 1] != last || v->http[0] != first)
			continue;
		size_t i = 1;
		while (i < n && lower(name[i]) == v->http[i])
			i++;
		if (i == n)
			return s;
	}
	return -1;
}

int reqid_slot_uwsgi_custom(const char *key, size_t n)
{
	if (n < 6 || n > 5 + REQID_NAME_MAX || !(reqid_names.lengths >> (n - 5) & 1) ||
	    memcmp(key, "HTTP_", 5) != 0)
		return -1;
	for (int s = REQID_BUILTIN; s < reqid_names.n; s++) {
		const struct reqid_name *v = &reqid_names.v[s];
		if (v->len == n - 5 && memcmp(v->uwsgi + 5, key + 5, n - 5) == 0)
			return s;
	}
	return -1;
}

const char *reqid_name(int s)
{
	return s >= 0 && s < reqid_names.n ? reqid_names.v[s].http : "?";
}

static bool ows(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static int hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* uppercase is not valid in a traceparent */
}

/* n lowercase hex digits at v, not all zero if nonzero; into out. */
static bool hexrun(const char *v, size_t n, bool nonzero, char *out)
{
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		int h = hexv(v[i]);
		if (h < 0)
			return false;
		any |= h != 0;
		if (out)
			out[i] = v[i];
	}
	if (out)
		out[n] = '\0';
	return any || !nonzero;
}

bool reqid_traceparent(const char *v, size_t n, struct reqid_trace *t)
{
	while (n > 0 && ows(*v)) {
		v++;
		n--;
	}
	while (n > 0 && ows(v[n - 1]))
		n--;
	/* 00-<32 hex>-<16 hex>-<2 hex> */
	if (n < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
		return false;
	char ver[3], fl[3];
	if (!hexrun(v, 2, false, ver) || strcmp(ver, "ff") == 0)
		return false;
	if (!hexrun(v + 3, 32, true, t->trace_id) ||
	    !hexrun(v + 36, 16, true, t->span_id) || !hexrun(v + 53, 2, false, fl))
		return false;
	t->version = (uint8_t)(hexv(ver[0]) * 16 + hexv(ver[1]));
	t->flags = (uint8_t)(hexv(fl[0]) * 16 + hexv(fl[1]));
	if (n == 55)
		return true;
	return t->version != 0 && v[55] == '-';
}

bool reqid_stamp(const char *v, size_t n, int64_t *ns)
{
	size_t i = 0;
	while (i < n && ows(v[i]))
		i++;
	if (n - i >= 2 && v[i] == 't' && v[i + 1] == '=')
		i += 2;
	uint64_t whole = 0, frac = 0, div = 1;
	size_t digits = 0;
	for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
		if (++digits > 20)
			return false;
		unsigned d = (unsigned)(v[i] - '0');
		if (whole > (UINT64_MAX - d) / 10)
			return false;
		whole = whole * 10 + d;
	}
	if (!digits)
		return false;
	if (i < n && v[i] == '.') {
		size_t fd = 0;
		for (i++; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
			if (fd++ < 9) {
				frac = frac * 10 + (uint64_t)(v[i] - '0');
				div *= 10;
			}
		}
		if (!fd)
			return false;
	}
	if (i < n && !ows(v[i]) && v[i] != ',' && v[i] != ';')
		return false;
	/* the unit, by size; then nanoseconds, if they fit in 63 bits */
	uint64_t unit;
	if (whole < 100000000000ull)
		unit = NS_PER_SEC;
	else if (whole < 100000000000000ull)
		unit = NS_PER_MS;
	else if (whole < 100000000000000000ull)
		unit = 1000;
	else
		unit = 1;
	unsigned __int128 t = (unsigned __int128)whole * unit +
			      (unsigned __int128)frac * unit / div;
	if (t > (unsigned __int128)INT64_MAX)
		return false;
	*ns = (int64_t)t;
	return true;
}

int reqid_queue(int64_t stamp_ns, int64_t read_ns, int64_t *ns)
{
	/* both within 63 bits and non-negative: no overflow */
	if (read_ns < 0)
		read_ns = 0;
	if (stamp_ns > read_ns) {
		*ns = stamp_ns - read_ns;
		if (*ns > REQID_QUEUE_SLACK_NS)
			return REQID_QUEUE_FUTURE;
		*ns = 0;
		return REQID_QUEUE_OK;
	}
	*ns = read_ns - stamp_ns;
	return *ns > REQID_QUEUE_MAX_NS ? REQID_QUEUE_OLD : REQID_QUEUE_OK;
}
