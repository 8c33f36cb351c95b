/*
 * Incremental HTTP/1.x parsers: request heads (method, target, Host) on the
 * bytes a server reads, response framing on the bytes it writes.
 *
 * Pure functions of their state and input: no allocation, no system call,
 * no lock; safe on the interposed hot path. Memory per connection is the
 * size of these structs, whatever a client sends.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reqinfo.h"

/* ---- requests ---- */

enum http_req_event {
	HTTP_REQ_MORE = 0, /* all bytes consumed; nothing to report */
	HTTP_REQ_HEAD,     /* a request head completed after *used bytes */
	HTTP_REQ_NEXT,     /* the previous request (head and body) is complete and
	                      a new request starts at offset *used: the caller
	                      switches to a fresh reqraw and feeds the rest */
	HTTP_REQ_ERROR,    /* not HTTP/1.x (or unparseable): stop feeding */
};

struct http_req {
	uint8_t state;     /* private */
	uint8_t field;     /* private: which header is being read */
	uint8_t flags;     /* private */
	uint16_t len;      /* private: bytes of the current token / line */
	int16_t id_at;     /* private: the id being read (reqraw_id_open) */
	uint32_t hdr_bytes;/* private: size of the head so far */
	uint64_t body_left;/* private: body bytes still to skip (Content-Length) */
	uint64_t clen;     /* private */
	char tok[32];      /* private: header name being matched */
};

/* Resets to "expecting the first byte of a request". */
void http_req_init(struct http_req *p);

/* Whether p expects the first byte of a request (none begun, no body
 * left to skip). */
bool http_req_at_start(const struct http_req *p);

/*
 * Whether buf[0..n) is one whole request head and nothing else, as far as
 * its lines tell: it ends with an empty line (CRLF or LF) and has none
 * before (one idle empty line at its very start aside; a line that starts
 * with CR counts as empty: no head line does). Nothing more is checked:
 * the parser decides what the bytes are.
 */
bool http_req_one_head(const char *buf, size_t n);

/*
 * Feeds n bytes read from the client. On HTTP_REQ_HEAD and HTTP_REQ_NEXT,
 * *used is how many bytes were consumed; call again with the rest. On
 * HTTP_REQ_MORE and HTTP_REQ_ERROR, *used is n.
 * Request bodies with Content-Length are skipped; a chunked request body is
 * not followed (HTTP_REQ_NEXT is never returned after one).
 */
int http_req_feed(struct http_req *p, struct reqraw *info, const char *buf,
		  size_t n, size_t *used);

/* Whether n bytes read next are all body that p skips, short of its end
 * (or a body it cannot frame, chunked: all the rest is that): then they
 * are counted off and nothing else changes (what http_req_feed would do
 * with them, in a few instructions). Else false, nothing done. */
#define HTTP_REQ_IN_BODY 13 /* p->state while a body is skipped */
#define HTTP_REQ_IN_SINK 14 /* ... while all the rest is taken for body */
static inline bool http_req_body_within(struct http_req *p, size_t n)
{
	if (p->state == HTTP_REQ_IN_SINK)
		return true;
	if (p->state != HTTP_REQ_IN_BODY || n >= p->body_left)
		return false;
	p->body_left -= n;
	return true;
}

/* True if buf starts like an HTTP/1.x request line (a method token and a space,
 * as far as n allows). */
bool http_looks_like_request(const char *buf, size_t n);

/* ---- responses ---- */

enum http_resp_event {
	HTTP_RESP_MORE = 0, /* all bytes consumed, response not complete */
	HTTP_RESP_DONE,     /* the response is complete after *used bytes */
	HTTP_RESP_ERROR,    /* not an HTTP/1.x response: framing unknown */
};

struct http_resp {
	uint8_t state;      /* private */
	uint8_t flags;      /* private */
	uint8_t field;      /* private */
	bool no_body;       /* the request was HEAD */
	bool final;         /* a final (non-1xx) status line has begun: the
	                       response has started for real */
	bool close_delimited; /* final head complete and the body runs until
	                         the connection closes */
	uint16_t status;    /* status code of the current (final) head, 0 until known */
	uint16_t len;       /* private */
	uint32_t hdr_bytes; /* private */
	uint64_t body_left; /* private: Content-Length or chunk bytes left */
	uint64_t clen;      /* private */
	char tok[32];       /* private */
};

/* Resets for the response to one request; head_request: it was HEAD. */
void http_resp_init(struct http_resp *r, bool head_request);

/*
 * Feeds n bytes written to the client. 1xx interim responses are consumed
 * and parsing goes on with the next head. 204, 304, HEAD, Content-Length,
 * chunked (with trailers) and close-delimited bodies are understood.
 * On HTTP_RESP_DONE, *used bytes belonged to this response (the rest, if any,
 * is the next response of a pipelined connection).
 */
int http_resp_feed(struct http_resp *r, const char *buf, size_t n,
		   size_t *used);

/*
 * Whether buf starts a final response and r has read nothing of it yet:
 * "HTTP/1.x " and a status of 200 to 999, all in buf. Sets r->final and
 * r->status then. For a caller that needs to know no more of the response.
 */
bool http_resp_final_start(struct http_resp *r, const char *buf, size_t n);

/* Accounts n body bytes sent without being seen (sendfile). Returns
 * HTTP_RESP_DONE if that completes a Content-Length body, else HTTP_RESP_MORE
 * (or HTTP_RESP_ERROR if the parser was in error). */
int http_resp_skip(struct http_resp *r, uint64_t n);
