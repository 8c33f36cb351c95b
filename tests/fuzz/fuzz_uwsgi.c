/*
 * The uwsgi packet parser (uwsgi_req_feed).
 *
 * An input starting with a zero byte is a raw packet (what a worker reads
 * from nginx or the uWSGI router). Any other input is a packet described as
 * text, so that mutations reach deep into well-formed packets:
 *     <flags byte> KEY=VALUE\n KEY=VALUE\n ... \n\n <body>
 * built into a valid packet (datasize shifted by flags & 0x3f - 32 when
 * flags & 0x80, to break it). For well-formed packets the expected method,
 * target and host are computed from the variables (last one wins,
 * REQUEST_URI over PATH_INFO?QUERY_STRING) and compared.
 *
 * Each packet is fed once whole and once split at points drawn from the
 * input's hash; both must agree. After every call: used <= n, escaped and
 * NUL-terminated fields; DONE is sticky with used 0, ERROR is sticky.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "escape.h"
#include "fuzz.h"
#include "uwsgi.h"

struct drv {
	struct uwsgi_req u;
	struct reqraw raw;   /* what the parser fills */
	struct reqinfo info; /* ... as a report shows it */
	int result; /* UWSGI_MORE until DONE or ERROR */
	size_t done_at;
	size_t off;
};

static void check_info(const struct reqinfo *in)
{
	fuzz_check_escaped("method", in->method, sizeof(in->method), false);
	fuzz_check_escaped("target", in->target, sizeof(in->target), false);
	fuzz_check_escaped("host", in->host, sizeof(in->host), false);
}

static void drv_feed(struct drv *d, const char *buf, size_t n)
{
	size_t used = (size_t)-1;
	int ev = uwsgi_req_feed(&d->u, &d->raw, buf, n, &used);
	reqraw_render(&d->raw, &d->info);

	FUZZ_CHECK(used <= n, "used %zu > n %zu", used, n);
	check_info(&d->info);
	switch (ev) {
	case UWSGI_MORE:
		FUZZ_CHECK(d->result == UWSGI_MORE, "MORE after %d", d->result);
		FUZZ_CHECK(used == n, "MORE with used %zu of %zu", used, n);
		break;
	case UWSGI_ERROR:
		FUZZ_CHECK(d->result != UWSGI_DONE, "ERROR after DONE");
		FUZZ_CHECK(used == n, "ERROR with used %zu of %zu", used, n);
		d->result = UWSGI_ERROR;
		break;
	case UWSGI_DONE:
		if (d->result == UWSGI_DONE) {
			FUZZ_CHECK(used == 0, "DONE again with used %zu", used);
			break;
		}
		FUZZ_CHECK(d->result == UWSGI_MORE, "DONE after ERROR");
		FUZZ_CHECK(d->info.head_complete, "DONE, head incomplete");
		FUZZ_CHECK(d->info.proto == PROTO_UWSGI, "DONE, proto %u",
			   d->info.proto);
		FUZZ_CHECK(d->info.is_head ==
				   (strcmp(d->info.method, "HEAD") == 0),
			   "is_head %d for method \"%s\"", d->info.is_head,
			   d->info.method);
		d->result = UWSGI_DONE;
		d->done_at = d->off + used;
		break;
	default:
		FUZZ_CHECK(false, "unknown event %d", ev);
	}
	d->off += n;
}

/* ---- the text form ---- */

struct model {
	char method[REQ_METHOD_MAX];
	char target[REQ_TARGET_MAX];
	char host[REQ_HOST_MAX];
	size_t method_pos, host_pos;
	const char *uri, *path, *query;
	size_t uri_n, path_n, query_n;
	bool have_uri;
};

static bool key_is(const char *k, size_t n, const char *name)
{
	return strlen(name) == n && memcmp(k, name, n) == 0;
}

static void model_var(struct model *m, const char *k, size_t kn,
		      const char *v, size_t vn)
{
	if (key_is(k, kn, "REQUEST_METHOD")) {
		m->method[0] = '\0';
		m->method_pos = 0;
		escape_append(m->method, sizeof(m->method), &m->method_pos, v, vn);
	} else if (key_is(k, kn, "REQUEST_URI")) {
		m->uri = v;
		m->uri_n = vn;
		m->have_uri = true;
	} else if (key_is(k, kn, "PATH_INFO")) {
		if (!m->have_uri) {
			m->path = v;
			m->path_n = vn;
		}
	} else if (key_is(k, kn, "QUERY_STRING")) {
		m->query = v;
		m->query_n = vn;
	} else if (key_is(k, kn, "HTTP_HOST")) {
		m->host[0] = '\0';
		m->host_pos = 0;
		escape_append(m->host, sizeof(m->host), &m->host_pos, v, vn);
	}
}

static void model_finish(struct model *m)
{
	size_t pos = 0;

	m->target[0] = '\0';
	if (m->have_uri) {
		escape_append(m->target, sizeof(m->target), &pos, m->uri,
			      m->uri_n);
		return;
	}
	if (m->path)
		escape_append(m->target, sizeof(m->target), &pos, m->path,
			      m->path_n);
	if (m->query_n > 0) {
		escape_append(m->target, sizeof(m->target), &pos, "?", 1);
		escape_append(m->target, sizeof(m->target), &pos, m->query,
			      m->query_n);
	}
}

static uint8_t pkt[4 + 65535 + 65536];

/* Builds the packet described by text; returns its size, and the size of
 * the vars block in *datasize. */
static size_t build(const uint8_t *text, size_t n, struct model *m,
		    size_t *datasize)
{
	size_t o = 4, i = 0;

	memset(m, 0, sizeof(*m));
	while (i < n) {
		const uint8_t *nl = memchr(text + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - text) : n;
		if (end == i) { /* empty line: the body follows */
			i++;
			break;
		}
		const uint8_t *eq = memchr(text + i, '=', end - i);
		size_t kn = eq ? (size_t)(eq - text) - i : end - i;
		size_t vs = eq ? kn + 1 : kn;
		size_t vn = end - i - vs;
		if (o - 4 + 4 + kn + vn > 65535)
			break;
		pkt[o++] = (uint8_t)kn;
		pkt[o++] = (uint8_t)(kn >> 8);
		memcpy(pkt + o, text + i, kn);
		o += kn;
		pkt[o++] = (uint8_t)vn;
		pkt[o++] = (uint8_t)(vn >> 8);
		memcpy(pkt + o, text + i + vs, vn);
		model_var(m, (const char *)pkt + o - 2 - kn, kn,
			  (const char *)pkt + o, vn);
		o += vn;
		i = end + 1;
	}
	model_finish(m);
	*datasize = o - 4;
	pkt[0] = 0;
	pkt[1] = (uint8_t)*datasize;
	pkt[2] = (uint8_t)(*datasize >> 8);
	pkt[3] = 0;
	if (i < n) {
		size_t body = n - i;
		if (body > sizeof(pkt) - o)
			body = sizeof(pkt) - o;
		memcpy(pkt + o, text + i, body);
		o += body;
	}
	return o;
}

static struct drv whole, split;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct fuzz_rng rng;
	struct model m;
	size_t datasize = 0;
	bool well_formed = false;

	if (size == 0)
		return 0;
	fuzz_rng_init(&rng, data, size);
	if (data[0] != 0) {
		size = build(data + 1, size - 1, &m, &datasize);
		buf = (const char *)pkt;
		if (data[0] & 0x80) {
			int ds = (int)datasize + (data[0] & 0x3f) - 32;
			pkt[1] = (uint8_t)ds;
			pkt[2] = (uint8_t)(ds >> 8);
		} else {
			well_formed = true;
		}
	}

	memset(&whole, 0, sizeof(whole));
	memset(&split, 0, sizeof(split));
	uwsgi_req_init(&whole.u);
	uwsgi_req_init(&split.u);
	(void)uwsgi_looks_like_packet(buf, size);

	drv_feed(&whole, buf, size);
	if (whole.result != UWSGI_MORE) {
		struct drv again = whole;
		drv_feed(&again, buf, size); /* DONE and ERROR are sticky */
	}
	for (size_t off = 0; off < size;) {
		size_t k = fuzz_chunk(&rng, size - off);
		drv_feed(&split, buf + off, k);
		off += k;
	}

	FUZZ_CHECK(whole.result == split.result, "result %d whole, %d split",
		   whole.result, split.result);
	if (whole.result == UWSGI_DONE)
		FUZZ_CHECK(whole.done_at == split.done_at,
			   "DONE at %zu whole, %zu split", whole.done_at,
			   split.done_at);
	if (whole.result != UWSGI_ERROR) {
		FUZZ_CHECK(strcmp(whole.info.method, split.info.method) == 0 &&
				   strcmp(whole.info.target, split.info.target) == 0 &&
				   strcmp(whole.info.host, split.info.host) == 0,
			   "split run describes the request differently");
	}
	if (well_formed) {
		FUZZ_CHECK(whole.result == UWSGI_DONE,
			   "a well-formed packet was not parsed (%d)",
			   whole.result);
		FUZZ_CHECK(whole.done_at == 4 + datasize, "DONE at %zu, not %zu",
			   whole.done_at, 4 + datasize);
		FUZZ_CHECK(strcmp(whole.info.method, m.method) == 0,
			   "method \"%s\", expected \"%s\"", whole.info.method,
			   m.method);
		FUZZ_CHECK(strcmp(whole.info.target, m.target) == 0,
			   "target \"%s\", expected \"%s\"", whole.info.target,
			   m.target);
		FUZZ_CHECK(strcmp(whole.info.host, m.host) == 0,
			   "host \"%s\", expected \"%s\"", whole.info.host,
			   m.host);
	}
	return 0;
}
