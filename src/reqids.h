/*
 * The request's own ids, as the client or a proxy sent them in headers
 * (W3C traceparent, X-Request-Id, ...; SLOWDOG_HEADERS names more), and
 * the proxy's time stamp (X-Request-Start, X-Queue-Start).
 *
 * The table of header names is set once, before the first request is
 * parsed (reqids_setup), and only read after: the parsers (http.c,
 * uwsgi.c) match names against it on the hot path, and keep the values
 * as sent in struct reqraw (reqinfo.h). The rest is for the watchdog:
 * what a traceparent and a stamp say. Pure, no allocation.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The headers always read, in the order a report shows them. */
enum reqid_slot {
	REQID_TRACEPARENT = 0,
	REQID_X_REQUEST_ID,
	REQID_X_CORRELATION_ID,
	REQID_X_AMZN_TRACE_ID,
	REQID_SENTRY_TRACE,
	REQID_X_CLOUD_TRACE_CONTEXT,
	REQID_X_B3_TRACEID,
	REQID_B3,
	REQID_X_REQUEST_START, /* the stamps: not ids, read for the queue time */
	REQID_X_QUEUE_START,
	REQID_BUILTIN,         /* SLOWDOG_HEADERS' names follow */
};

#define REQID_CUSTOM_MAX 8  /* names SLOWDOG_HEADERS may add */
#define REQID_NAME_MAX 32   /* longest name (what the parsers' buffers hold) */
#define REQID_SLOTS (REQID_BUILTIN + REQID_CUSTOM_MAX)
_Static_assert(REQID_SLOTS <= 32, "a slot is a bit of by_len");

struct reqid_name {
	uint8_t len;                          /* of http and of uwsgi - 5 */
	char http[REQID_NAME_MAX + 1];        /* "x-request-id" (lowercase) */
	char uwsgi[5 + REQID_NAME_MAX + 1];   /* "HTTP_X_REQUEST_ID" */
};

struct reqid_names {
	int n;                 /* slots in use: REQID_BUILTIN + custom */
	uint32_t letters;      /* bit c - 'a': a name starts with that letter */
	uint64_t lengths;      /* bit len: a name is that long */
	uint64_t by_letter[26]; /* bit len: a name starting with that letter is
	                           that long */
	uint32_t by_len[REQID_NAME_MAX + 1]; /* bit s: slot s's name has that
	                                        length */
	struct reqid_name v[REQID_SLOTS];
};

/* Read by the parsers; written by reqids_setup only. */
extern struct reqid_names reqid_names;

/* Whether a header name that starts with byte c may be one of the table's
 * (c | 0x20 is a lowercase letter only for that letter and its capital;
 * every name starts with a letter). */
static inline bool reqid_may_start(unsigned char c)
{
	unsigned k = (unsigned)((c | 0x20) - 'a');
	return k < 26 && (reqid_names.letters >> k & 1);
}

/*
 * Adds SLOWDOG_HEADERS' names to the table: list is a comma list of
 * header names (case-insensitive; spaces around names ignored). A name
 * that is not a token, longer than REQID_NAME_MAX, already in the table,
 * one of Host, Content-Length and Transfer-Encoding, or past the
 * REQID_CUSTOM_MAX-th, is left out with a warning through warn (which may
 * be NULL). Returns the number of names added. Call once, before any
 * request is parsed; the built-in names are there without it.
 */
int reqids_setup(const char *list, void (*warn)(const char *line));

/* The slot a header name (n bytes, any case, no colon) is in, or -1. */
int reqid_slot_http(const char *name, size_t n);
/* The slot of a SLOWDOG_HEADERS name whose uwsgi variable's key
 * ("HTTP_X_FOO") is key[0..n), or -1 (the built-in names are uwsgi.c's). */
int reqid_slot_uwsgi_custom(const char *key, size_t n);

/* The lowercase header name of slot s ("?" if none). */
const char *reqid_name(int s);

/* ---- for the watchdog ---- */

struct reqid_trace {
	char trace_id[33]; /* 32 lowercase hex digits */
	char span_id[17];  /* 16 */
	uint8_t flags;     /* trace-flags: bit 0 sampled */
	uint8_t version;
};

/* Whether v[0..n) is a W3C traceparent (version 00 exactly; a later
 * version as far as 00's fields go, then "-" and more, or the end): t
 * gets its fields. Optional whitespace around is allowed. */
bool reqid_traceparent(const char *v, size_t n, struct reqid_trace *t);

/*
 * A proxy's stamp v[0..n): optional whitespace, optional "t=", then a
 * decimal number of seconds, milliseconds, microseconds or nanoseconds
 * since the epoch (told by its size: the integer part is taken for
 * seconds below 10^11, milliseconds below 10^14, microseconds below
 * 10^17, nanoseconds below 10^20), an optional fraction, then the end, or
 * whitespace, ',' or ';' and anything. *ns gets the time in nanoseconds
 * since the epoch. False if v is none of these.
 */
bool reqid_stamp(const char *v, size_t n, int64_t *ns);

/* What a stamp says of the wait before the worker's first read. */
enum reqid_queue {
	REQID_QUEUE_OK = 0, /* *ns: the wait (0 if the stamp is a little late) */
	REQID_QUEUE_FUTURE, /* *ns: how far after the first read the stamp is */
	REQID_QUEUE_OLD,    /* *ns: how far before: more than anyone queues */
};
/* A stamp up to this much after the first read is no wait: the first
 * read's time is the coarse clock's, a tick behind or so. */
#define REQID_QUEUE_SLACK_NS (10LL * 1000000LL)
/* A wait longer than this is not one: a wrong clock, or not a time. */
#define REQID_QUEUE_MAX_NS (3600LL * 1000000000LL)

/* stamp_ns and read_ns: ns since the epoch. */
int reqid_queue(int64_t stamp_ns, int64_t read_ns, int64_t *ns);
