/*
 * Incremental parser for the uwsgi request packet. See uwsgi.h.
 *
 * Layout (all lengths little-endian):
 *   u8 modifier1 (0: WSGI), u16 datasize, u8 modifier2 (0),
 *   then datasize bytes of { u16 keylen, key, u16 vallen, value }.
 * A length that runs past datasize is an error, like in uWSGI itself. The
 * body, if any, follows the vars block.
 *
 * async-signal-safe: no allocation, no system call, no lock, no stdio.
 */
#include "uwsgi.h"

#include <stddef.h>
#include <string.h>

#include "common.h"
#include "reqids.h"

enum uwsgi_state {
	US_HDR = 0, /* the 4-byte packet header; got = bytes seen */
	US_KLEN,    /* 2 bytes; got = bytes seen */
	US_KEY,     /* need = bytes left */
	US_VLEN,
	US_VAL,
	US_DONE,
	US_ERROR,
};

enum uwsgi_key {
	UK_OTHER = 0,
	UK_METHOD,
	UK_URI,
	UK_PATH,
	UK_QUERY,
	UK_HOST,
	UK_ID = 8, /* + the slot (reqids.h) of one of the request's ids */
};
_Static_assert(UK_ID + REQID_SLOTS <= UINT8_MAX, "key_id holds every slot");


void uwsgi_req_init(struct uwsgi_req *u)
{
	/* query holds qlen bytes: the rest of it is never read */
	memset(u, 0, offsetof(struct uwsgi_req, query));
}

bool uwsgi_looks_like_packet(const char *buf, size_t n)
{
	return n >= 1 && buf[0] == 0 && (n < 4 || buf[3] == 0);
}

_Static_assert(sizeof(((struct uwsgi_req *)0)->key) >= 5 + REQID_NAME_MAX,
	       "u->key holds every name uwsgi_key_of knows");


/* Which of the variables we read key[0..len) is (enum uwsgi_key): by
 * length first, then the bytes (compares of a known size: a few
 * instructions each); custom: SLOWDOG_HEADERS named some. */
/* The key of one of the built-in ids, key[0..len) with len in
 * UWSGI_ID_LENS: the last eight bytes first (one compare rejects the
 * headers of the same length that browsers send), then the rest. */
#define UWSGI_ID_LENS (1ull << 7 | 1ull << 16 | 1ull << 17 | 1ull << 18 | \
		       1ull << 20 | 1ull << 21 | 1ull << 26)
static inline uint64_t tail8(const char *s, size_t len)
{
	uint64_t w;
	memcpy(&w, s + len - 8, 8);
	return w;
}
#define ID_IS(lit) (tail8(key, len) == tail8(lit, sizeof(lit) - 1) && \
		    memcmp(key, lit, sizeof(lit) - 1 - 8) == 0)

static uint8_t uwsgi_id_key(const char *key, size_t len)
{
	if (key[5] != 'X' && key[5] != 'T' && key[5] != 'S' && key[5] != 'B')
		return UK_OTHER; /* HTTP_X_..., HTTP_TRACEPARENT, ... */
	switch (len) {
	case 7:
		return memcmp(key, "HTTP_B3", 7) == 0 ? UK_ID + REQID_B3 : UK_OTHER;
	case 16:
		return ID_IS("HTTP_TRACEPARENT") ? UK_ID + REQID_TRACEPARENT : UK_OTHER;
	case 17:
		if (ID_IS("HTTP_X_REQUEST_ID"))
			return UK_ID + REQID_X_REQUEST_ID;
		if (ID_IS("HTTP_SENTRY_TRACE"))
			return UK_ID + REQID_SENTRY_TRACE;
		return ID_IS("HTTP_X_B3_TRACEID") ? UK_ID + REQID_X_B3_TRACEID : UK_OTHER;
	case 18:
		return ID_IS("HTTP_X_QUEUE_START") ? UK_ID + REQID_X_QUEUE_START : UK_OTHER;
	case 20:
		if (ID_IS("HTTP_X_REQUEST_START"))
			return UK_ID + REQID_X_REQUEST_START;
		return ID_IS("HTTP_X_AMZN_TRACE_ID") ? UK_ID + REQID_X_AMZN_TRACE_ID : UK_OTHER;
	case 21:
		return ID_IS("HTTP_X_CORRELATION_ID") ? UK_ID + REQID_X_CORRELATION_ID
						      : UK_OTHER;
	case 26:
		return ID_IS("HTTP_X_CLOUD_TRACE_CONTEXT")
			? UK_ID + REQID_X_CLOUD_TRACE_CONTEXT : UK_OTHER;
	default:
		return UK_OTHER;
	}
}

/* Which of the variables we read key[0..len) is (enum uwsgi_key): by
 * length first, then the bytes (compares of a known size: a few
 * instructions each). The ids only for lengths none of the others has;
 * custom: SLOWDOG_HEADERS named some. */
static inline __attribute__((always_inline)) uint8_t
uwsgi_key_of(const char *key, size_t len, bool custom)
{
	switch (len) {
	case 9:
		if (memcmp(key, "PATH_INFO", 9) == 0)
			return UK_PATH;
		return memcmp(key, "HTTP_HOST", 9) == 0 ? UK_HOST : UK_OTHER;
	case 11:
		return memcmp(key, "REQUEST_URI", 11) == 0 ? UK_URI : UK_OTHER;
	case 12:
		return memcmp(key, "QUERY_STRING", 12) == 0 ? UK_QUERY : UK_OTHER;
	case 14:
		return memcmp(key, "REQUEST_METHOD", 14) == 0 ? UK_METHOD : UK_OTHER;
	default:
		break;
	}
	/* (a length of 64 or more may pass: uwsgi_id_key tells) */
	if (UWSGI_ID_LENS >> (len & 63) & 1) {
		uint8_t id = uwsgi_id_key(key, len);
		if (id != UK_OTHER || !custom)
			return id;
	}
	if (custom) {
		int s = reqid_slot_uwsgi_custom(key, len);
		if (s >= 0)
			return (uint8_t)(UK_ID + s);
	}
	return UK_OTHER;
}

/* A value starts: a repeated variable replaces the earlier one. */
static void uwsgi_value_begin(struct uwsgi_req *u, struct reqraw *info)
{
	switch (u->key_id) {
	case UK_METHOD:
		info->method_len = 0;
		break;
	case UK_URI:
		u->have_uri = true;
		info->target_len = 0;
		break;
	case UK_PATH:
		if (u->have_uri)
			u->key_id = UK_OTHER;
		else
			info->target_len = 0;
		break;
	case UK_QUERY:
		u->qlen = 0;
		break;
	case UK_HOST:
		info->host_len = 0;
		break;
	default:
		if (u->key_id >= UK_ID)
			u->id_at = (int16_t)reqraw_id_open(info, u->key_id - UK_ID);
		break;
	}
}

static void uwsgi_value_bytes(struct uwsgi_req *u, struct reqraw *info,
			      const char *src, size_t n)
{
	switch (u->key_id) {
	case UK_METHOD:
		REQRAW_PUT(info, method, src, n);
		break;
	case UK_URI:
	case UK_PATH:
		REQRAW_PUT(info, target, src, n);
		break;
	case UK_QUERY: {
		/* Kept aside and appended to the target at the end (PATH_INFO
		 * may come later): a query longer than this buffer overflows
		 * the target anyway. */
		reqraw_put(u->query, sizeof(u->query), &u->qlen, src, n);
		break;
	}
	case UK_HOST:
		REQRAW_PUT(info, host, src, n);
		break;
	default:
		if (u->key_id >= UK_ID)
			reqraw_id_put(info, u->id_at, src, n);
		break;
	}
}

static void uwsgi_value_end(struct uwsgi_req *u, struct reqraw *info)
{
	if (u->key_id == UK_METHOD)
		info->is_head = info->method_len == 4 &&
				memcmp(info->method, "HEAD", 4) == 0;
}

/* The vars block is complete. */
static void uwsgi_finish(struct uwsgi_req *u, struct reqraw *info)
{
	if (!u->have_uri && u->qlen > 0) {
		REQRAW_PUT(info, target, "?", 1);
		REQRAW_PUT(info, target, u->query, u->qlen);
	}
	info->head_complete = true;
	u->state = US_DONE;
}

static inline uint16_t uwsgi_left(const struct uwsgi_req *u)
{
	return (uint16_t)(u->datasize - u->consumed);
}

static inline size_t le16(const unsigned char *p)
{
	return (size_t)p[0] | (size_t)p[1] << 8;
}

/*
 * A vars block of size bytes that is all in v (the usual: nginx sends the
 * packet in one write): walked in place, to the same effect as the byte
 * path of uwsgi_req_feed. One pass checks the lengths as the byte path
 * does and notes where the variables we read are; if a length fails (or
 * there are more of those than we note), nothing is changed and false
 * returned: the byte path then finds the same.
 */
static inline __attribute__((always_inline)) bool
uwsgi_whole_walk(struct uwsgi_req *u, struct reqraw *info,
		 const unsigned char *v, size_t size, bool custom)
{
	struct {
		uint16_t at; /* of the value's length */
		uint8_t id;
	} hit[32];
	size_t hits = 0, at = 0;
	while (at < size) {
		if (size - at < 2)
			return false; /* no room for a key length */
		size_t kl = le16(v + at);
		at += 2;
		if (kl > size - at || size - at - kl < 2)
			return false; /* no room for the key and a value length */
		uint8_t id = uwsgi_key_of((const char *)v + at, kl, custom);
		at += kl;
		if (id != UK_OTHER) {
			if (hits == ARRAY_LEN(hit))
				return false;
			hit[hits].at = (uint16_t)at;
			hit[hits++].id = id;
		}
		size_t vl = le16(v + at);
		at += 2;
		if (vl > size - at)
			return false;
		at += vl;
	}
	reqraw_clear(info);
	info->proto = PROTO_UWSGI;
	for (size_t h = 0; h < hits; h++) {
		size_t vl = le16(v + hit[h].at);
		u->key_id = hit[h].id;
		uwsgi_value_begin(u, info);
		if (vl > 0)
			uwsgi_value_bytes(u, info, (const char *)v + hit[h].at + 2, vl);
		uwsgi_value_end(u, info);
	}
	uwsgi_finish(u, info);
	return true;
}

/* The walk, without a look at SLOWDOG_HEADERS' names when it named none. */
static bool uwsgi_whole(struct uwsgi_req *u, struct reqraw *info,
			const unsigned char *v, size_t size)
{
	if (reqid_names.n > REQID_BUILTIN)
		return uwsgi_whole_walk(u, info, v, size, true);
	return uwsgi_whole_walk(u, info, v, size, false);
}

/* async-signal-safe */
int uwsgi_req_feed(struct uwsgi_req *u, struct reqraw *info, const char *buf,
		   size_t n, size_t *used)
{
	size_t i = 0;

	if (u->state == US_DONE) {
		*used = 0;
		return UWSGI_DONE;
	}
	if (u->state == US_ERROR)
		goto error;
	if (u->state == US_HDR && u->got == 0 && n >= 4 && buf[0] == 0 &&
	    buf[3] == 0) {
		const unsigned char *b = (const unsigned char *)buf;
		size_t size = le16(b + 1);
		if (n - 4 >= size && uwsgi_whole(u, info, b + 4, size)) {
			*used = 4 + size;
			return UWSGI_DONE;
		}
	}
	while (i < n) {
		switch (u->state) {
		case US_HDR:
			if (u->got == 0) {
				if (buf[i] != 0)
					goto error; /* modifier1: WSGI only */
				reqraw_clear(info);
			}
			u->hdr[u->got++] = (uint8_t)buf[i++];
			if (u->got < 4)
				break;
			if (u->hdr[3] != 0)
				goto error;
			u->datasize = (uint16_t)(u->hdr[1] | (u->hdr[2] << 8));
			info->proto = PROTO_UWSGI;
			u->got = 0;
			if (u->datasize == 0)
				goto done;
			u->state = US_KLEN;
			break;
		case US_KLEN:
		case US_VLEN:
			if (u->got == 0 && uwsgi_left(u) < 2)
				goto error;
			u->hdr[u->got++] = (uint8_t)buf[i++];
			u->consumed++;
			if (u->got < 2)
				break;
			u->got = 0;
			u->need = (uint16_t)(u->hdr[0] | (u->hdr[1] << 8));
			if (u->need > uwsgi_left(u))
				goto error;
			if (u->state == US_KLEN) {
				/* the key must leave room for a value length */
				if (uwsgi_left(u) - u->need < 2)
					goto error;
				u->state = US_KEY;
				if (u->need > 0)
					break;
				u->key_id = UK_OTHER;
				u->state = US_VLEN;
				break;
			}
			uwsgi_value_begin(u, info);
			u->state = US_VAL;
			if (u->need > 0)
				break;
			goto value_end;
		case US_KEY: {
			size_t k = n - i;
			if (k > u->need)
				k = u->need;
			uint16_t at = (uint16_t)(u->got);
			for (size_t j = 0; j < k; j++, at++)
				if (at < sizeof(u->key))
					u->key[at] = buf[i + j];
			u->got = at; /* key bytes so far, saturating below */
			u->need = (uint16_t)(u->need - k);
			u->consumed += (uint32_t)k;
			i += k;
			if (u->need > 0)
				break;
			/* u->key holds the first bytes, all of any we read */
			u->key_id = uwsgi_key_of(u->key, u->got,
						 reqid_names.n > REQID_BUILTIN);
			u->got = 0;
			u->state = US_VLEN;
			break;
		}
		case US_VAL: {
			size_t k = n - i;
			if (k > u->need)
				k = u->need;
			uwsgi_value_bytes(u, info, buf + i, k);
			u->need = (uint16_t)(u->need - k);
			u->consumed += (uint32_t)k;
			i += k;
			if (u->need > 0)
				break;
			goto value_end;
		}
		default:
			goto error;
		}
		continue;
value_end:
		uwsgi_value_end(u, info);
		if (u->consumed == u->datasize)
			goto done;
		if (uwsgi_left(u) < 2)
			goto error; /* a stray byte: no room for a key length */
		u->state = US_KLEN;
	}
	*used = n;
	return UWSGI_MORE;
done:
	uwsgi_finish(u, info);
	*used = i;
	return UWSGI_DONE;
error:
	u->state = US_ERROR;
	*used = n;
	return UWSGI_ERROR;
}
