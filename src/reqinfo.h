/* What a report says about the request: filled by the protocol parsers. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

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
