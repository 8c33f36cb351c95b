/*
 * What a report says about the request. The protocol parsers keep the
 * request's own bytes (struct reqraw, a bounded copy: cheap on the hot
 * path); the watchdog renders them into report-safe text (struct reqinfo)
 * when it writes about the request.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum req_proto {
	PROTO_UNKNOWN = 0, /* nothing parsed yet */
	PROTO_HTTP,        /* HTTP/1.x request head */
	PROTO_UWSGI,       /* uwsgi binary protocol packet */
	PROTO_OTHER,       /* bytes that are neither: tracked, not named */
};

#define REQ_METHOD_MAX 16
#define REQ_TARGET_MAX 512
#define REQ_HOST_MAX 128

/*
 * All strings are NUL-terminated and already escaped by the parser: every
 * byte outside 0x21..0x7e (and the backslash) is written as \xHH, so no
 * request can put a control character, a newline or a NUL into a report.
 * A value too long for its field ends in "..." .
 */
struct reqinfo {
	uint8_t proto;      /* enum req_proto */
	bool is_head;       /* method is HEAD: the response has no body */
	bool head_complete; /* the whole request head (or uwsgi vars) was seen */
	char method[REQ_METHOD_MAX];
	char target[REQ_TARGET_MAX]; /* path with query string, as sent */
	char host[REQ_HOST_MAX];
};

/*
 * The same, as sent: the first bytes of each value (as many as its field
 * in struct reqinfo has room for: every byte takes at least one there, so
 * what is cut off here never shows), not terminated. Lengths never exceed
 * the arrays, whatever a torn read gives: the reader bounds them again.
 */
struct reqraw {
	uint8_t proto;      /* enum req_proto */
	bool is_head;
	bool head_complete;
	uint16_t method_len;
	uint16_t target_len;
	uint16_t host_len;
	char method[REQ_METHOD_MAX];
	char target[REQ_TARGET_MAX];
	char host[REQ_HOST_MAX];
};

/* Empties the three values. */
static inline void reqraw_clear(struct reqraw *r)
{
	r->is_head = false;
	r->head_complete = false;
	r->method_len = r->target_len = r->host_len = 0;
}

/* Appends src[0..n) to a value of capacity cap holding *len bytes; bytes
 * past the capacity are dropped. async-signal-safe. */
static inline void reqraw_put(char *dst, size_t cap, uint16_t *len,
			      const char *src, size_t n)
{
	size_t have = *len < cap ? *len : cap;
	size_t k = n < cap - have ? n : cap - have;
	memcpy(dst + have, src, k);
	*len = (uint16_t)(have + k);
}

/* Appends to one of a reqraw's values: REQRAW_PUT(info, host, src, n). */
#define REQRAW_PUT(info, field, src, n)                                    \
	reqraw_put((info)->field, sizeof((info)->field), &(info)->field##_len, \
		   (src), (n))

/* The report-safe text of raw (escaped, see struct reqinfo). */
void reqraw_render(const struct reqraw *raw, struct reqinfo *out);
