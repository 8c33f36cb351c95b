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

/* The request's ids (reqids.h), as sent: each value's first
 * REQ_ID_VALUE_MAX bytes, REQ_IDS_RAW bytes in all (3 more a value). */
#define REQ_ID_VALUE_MAX 160
#define REQ_IDS_RAW 512
#define REQ_IDS_DROPPED 0x8000 /* in ids_len: a value found no room */
/* ... as a report shows them: every byte may take four, "..." and a NUL */
#define REQ_IDS_SHOWN (REQ_IDS_RAW / 4)
#define REQ_IDS_TEXT (4 * REQ_IDS_RAW + 4 * REQ_IDS_SHOWN)

enum req_id_flag {
	REQ_ID_REPEATED = 1, /* the header came more than once: the first kept */
	REQ_ID_CUT = 2,      /* longer than kept */
};

/* What the watchdog made of the ids: one of them. */
struct reqinfo_id {
	uint8_t slot;   /* enum reqid_slot, or a SLOWDOG_HEADERS name */
	uint8_t flags;  /* enum req_id_flag */
	uint16_t off;   /* its text in idtext */
};

enum req_stamp_state {
	REQ_STAMP_NONE = 0, /* no X-Request-Start nor X-Queue-Start */
	REQ_STAMP_OK,       /* stamp_ns is the proxy's time */
	REQ_STAMP_BAD,      /* a stamp header that is not a time */
};

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
	/* The ids, in slot order; their text escaped as above, a value cut
	 * short ends in "...". */
	uint8_t nids;
	bool ids_dropped;   /* some did not fit (see struct reqraw) */
	bool trace_ok;      /* the traceparent is valid: trace below */
	uint8_t stamp;      /* enum req_stamp_state */
	uint8_t stamp_slot; /* which header the stamp came from */
	int64_t stamp_ns;   /* REQ_STAMP_OK: ns since the epoch */
	struct {
		char trace_id[33], span_id[17];
		uint8_t flags, version;
	} trace;
	struct reqinfo_id ids[REQ_IDS_SHOWN];
	char idtext[REQ_IDS_TEXT];
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
	uint16_t ids_len;   /* bytes of ids in use, | REQ_IDS_DROPPED */
	char method[REQ_METHOD_MAX];
	char target[REQ_TARGET_MAX];
	char host[REQ_HOST_MAX];
	/* The ids as they came, each [slot][flags][length] then its bytes
	 * (a header's first occurrence; trailing whitespace kept). */
	char ids[REQ_IDS_RAW];
};

/* Empties the values. */
static inline void reqraw_clear(struct reqraw *r)
{
	r->is_head = false;
	r->head_complete = false;
	r->method_len = r->target_len = r->host_len = r->ids_len = 0;
}

/*
 * A header of slot s begins: returns where its entry is in r->ids, to
 * append its bytes to (reqraw_id_put), or -1 if nothing is to be kept
 * (a repeated header: its first entry is flagged; no room: ids_len says
 * so). async-signal-safe.
 */
static inline int reqraw_id_open(struct reqraw *r, unsigned s)
{
	size_t used = r->ids_len & (REQ_IDS_DROPPED - 1);
	if (used > sizeof(r->ids))
		used = sizeof(r->ids);
	for (size_t at = 0; at + 3 <= used; at += 3 + (uint8_t)r->ids[at + 2])
		if ((uint8_t)r->ids[at] == s) {
			r->ids[at + 1] |= REQ_ID_REPEATED;
			return -1;
		}
	if (used + 4 > sizeof(r->ids)) {
		r->ids_len |= REQ_IDS_DROPPED;
		return -1;
	}
	r->ids[used] = (char)s;
	r->ids[used + 1] = 0;
	r->ids[used + 2] = 0;
	r->ids_len = (uint16_t)((r->ids_len & REQ_IDS_DROPPED) | (used + 3));
	return (int)used;
}

/* Appends src[0..n) to the entry at (the last one, as reqraw_id_open gave
 * it); what finds no room is dropped and the entry flagged cut, unless it
 * is only whitespace (a line's end). async-signal-safe. */
static inline void reqraw_id_put(struct reqraw *r, int at, const char *src,
				 size_t n)
{
	if (at < 0 || (size_t)at + 3 > sizeof(r->ids))
		return;
	size_t len = (uint8_t)r->ids[at + 2];
	size_t end = (size_t)at + 3 + len;
	size_t room = REQ_ID_VALUE_MAX > len ? REQ_ID_VALUE_MAX - len : 0;
	if (end > sizeof(r->ids))
		return;
	if (room > sizeof(r->ids) - end)
		room = sizeof(r->ids) - end;
	size_t k = n < room ? n : room;
	memcpy(r->ids + end, src, k);
	r->ids[at + 2] = (char)(len + k);
	r->ids_len = (uint16_t)((r->ids_len & REQ_IDS_DROPPED) | (end + k));
	for (size_t j = k; j < n; j++)
		if (src[j] != ' ' && src[j] != '\t' && src[j] != '\r') {
			r->ids[at + 1] |= REQ_ID_CUT;
			break;
		}
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
