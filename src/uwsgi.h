/*
 * Incremental parser for the uwsgi binary protocol's request packet
 * (modifier1 0): 4-byte header, then key/value pairs each prefixed with a
 * little-endian 16-bit length. Extracts REQUEST_METHOD, REQUEST_URI (or
 * PATH_INFO and QUERY_STRING) and HTTP_HOST into a reqraw.
 *
 * Pure: no allocation, no system call; bounded state whatever the input.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reqinfo.h"

enum uwsgi_event {
	UWSGI_MORE = 0, /* all bytes consumed, packet not complete */
	UWSGI_DONE,     /* the vars block is complete after *used bytes (the rest
	                   is the request body) */
	UWSGI_ERROR,    /* not a uwsgi packet we understand: stop feeding */
};

struct uwsgi_req {
	uint8_t state;      /* private */
	uint8_t key_id;     /* private: which variable the current value is */
	uint16_t datasize;  /* private: size of the vars block */
	uint16_t need;      /* private: bytes left in the current key/value */
	uint16_t got;       /* private: bytes of the current header/length */
	uint32_t consumed;  /* private: vars bytes consumed */
	uint16_t qlen;      /* private: raw QUERY_STRING bytes seen */
	uint8_t hdr[4];     /* private */
	bool have_uri;      /* private */
	int16_t id_at;      /* private: the id being read (reqraw_id_open) */
	char key[40];       /* private */
	char query[REQ_TARGET_MAX]; /* private: raw QUERY_STRING, for when
	                               there is no REQUEST_URI */
};

void uwsgi_req_init(struct uwsgi_req *u);

/* True if buf can start a uwsgi request packet (first byte 0, modifier2 0). */
bool uwsgi_looks_like_packet(const char *buf, size_t n);

/* Feeds n bytes read from the connection. On UWSGI_DONE, *used is where the
 * vars block ends (later calls return UWSGI_DONE with *used 0); otherwise
 * *used is n. async-signal-safe. */
int uwsgi_req_feed(struct uwsgi_req *u, struct reqraw *info, const char *buf,
		   size_t n, size_t *used);
