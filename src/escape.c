/* Escaping of untrusted request bytes into report-safe text. See escape.h. */
#include "escape.h"

#include <stdbool.h>
#include <string.h>

#include "common.h"
#include "reqids.h"
#include "reqinfo.h"

static const char hex_digits[] = "0123456789abcdef";

#define PLAIN(c) ((c) >= 0x21 && (c) <= 0x7e && (c) != '\\')
/* One lookup a byte: every request byte a report shows passes here. */
static const bool plain[256] = {ASCII_TABLE(PLAIN)};

static inline bool escape_plain(unsigned char c)
{
	return plain[c];
}

/*
 * Ends the value in "..." and marks it full (*pos = cap). The dots overwrite
 * the tail, moved back so that they never split an escape: every backslash
 * in dst starts a 4-byte \xHH, because a literal backslash is escaped too.
 * async-signal-safe
 */
static void escape_truncate(char *dst, size_t cap, size_t *pos)
{
	size_t q = cap > 4 ? cap - 4 : 0;

	if (q > *pos)
		q = *pos;
	for (size_t j = q >= 3 ? q - 3 : 0; j < q; j++) {
		if (dst[j] == '\\') {
			q = j;
			break;
		}
	}
	for (size_t k = 0; k < 3 && q + 1 < cap; k++)
		dst[q++] = '.';
	dst[q] = '\0';
	*pos = cap;
}

/* async-signal-safe */
void escape_append(char *dst, size_t cap, size_t *pos, const char *src,
		   size_t n)
{
	size_t p = *pos;

	if (cap == 0 || p >= cap)
		return; /* full (or truncated earlier): drop */
	for (size_t i = 0; i < n; i++) {
		/* A run of plain bytes that fits is copied at once. */
		size_t j = i;
		while (j < n && escape_plain((unsigned char)src[j]))
			j++;
		if (j > i && p + (j - i) <= cap - 1) {
			memcpy(dst + p, src + i, j - i);
			p += j - i;
			i = j;
			if (i == n)
				break;
		}
		unsigned char c = (unsigned char)src[i];
		size_t need = escape_plain(c) ? 1 : 4;

		if (p + need > cap - 1) {
			*pos = p;
			escape_truncate(dst, cap, pos);
			return;
		}
		if (need == 1) {
			dst[p++] = (char)c;
		} else {
			dst[p++] = '\\';
			dst[p++] = 'x';
			dst[p++] = hex_digits[c >> 4];
			dst[p++] = hex_digits[c & 15];
		}
	}
	dst[p] = '\0';
	*pos = p;
}

static void render_one(char *dst, size_t cap, const char *src, uint16_t len,
		       size_t raw_cap)
{
	size_t pos = 0;
	dst[0] = '\0';
	escape_append(dst, cap, &pos, src, len < raw_cap ? len : raw_cap);
}

/* The ids of raw, in slot order (the order of the table, not of the
 * head), each escaped into out->idtext; the traceparent's fields and the
 * stamp read from the bytes as sent. Lengths bounded again: raw may be a
 * torn copy. */
static void render_ids(const struct reqraw *raw, struct reqinfo *out)
{
	size_t used = raw->ids_len & (REQ_IDS_DROPPED - 1);
	size_t pos = 0;
	out->nids = 0;
	out->ids_dropped = (raw->ids_len & REQ_IDS_DROPPED) != 0;
	out->trace_ok = false;
	out->stamp = REQ_STAMP_NONE;
	out->stamp_slot = 0;
	out->stamp_ns = 0;
	out->idtext[0] = '\0';
	if (used > sizeof(raw->ids))
		used = sizeof(raw->ids);
	for (int s = 0; s < REQID_SLOTS; s++) {
		for (size_t at = 0; at + 3 <= used; at += 3 + (uint8_t)raw->ids[at + 2]) {
			if ((uint8_t)raw->ids[at] != s)
				continue;
			const char *v = raw->ids + at + 3;
			size_t n = (uint8_t)raw->ids[at + 2];
			uint8_t flags = (uint8_t)raw->ids[at + 1];
			if (n > used - at - 3)
				n = used - at - 3;
			while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' ||
					 v[n - 1] == '\r'))
				n--;
			if (out->nids >= REQ_IDS_SHOWN || pos + 8 > sizeof(out->idtext))
				break;
			struct reqinfo_id *id = &out->ids[out->nids++];
			id->slot = (uint8_t)s;
			id->flags = flags & (REQ_ID_REPEATED | REQ_ID_CUT);
			id->off = (uint16_t)pos;
			/* its own room: 4 a byte, and "..." when cut */
			size_t cap = 4 * n + 4;
			if (cap > sizeof(out->idtext) - pos)
				cap = sizeof(out->idtext) - pos;
			size_t p = 0;
			out->idtext[pos] = '\0';
			escape_append(out->idtext + pos, cap, &p, v, n);
			if (p >= cap) {
				id->flags |= REQ_ID_CUT;
				p = strlen(out->idtext + pos);
			} else if ((flags & REQ_ID_CUT) && p + 4 <= cap) {
				memcpy(out->idtext + pos + p, "...", 4);
				p += 3;
			}
			pos += p + 1;
			if (s == REQID_TRACEPARENT && !(flags & REQ_ID_CUT)) {
				struct reqid_trace t;
				if (reqid_traceparent(v, n, &t)) {
					out->trace_ok = true;
					memcpy(out->trace.trace_id, t.trace_id, sizeof(t.trace_id));
					memcpy(out->trace.span_id, t.span_id, sizeof(t.span_id));
					out->trace.flags = t.flags;
					out->trace.version = t.version;
				}
			}
			if ((s == REQID_X_REQUEST_START || s == REQID_X_QUEUE_START) &&
			    out->stamp != REQ_STAMP_OK) {
				/* X-Request-Start first, if it is a time */
				int64_t ns;
				bool ok = !(flags & REQ_ID_CUT) && reqid_stamp(v, n, &ns);
				if (ok || out->stamp == REQ_STAMP_NONE) {
					out->stamp = ok ? REQ_STAMP_OK : REQ_STAMP_BAD;
					out->stamp_slot = (uint8_t)s;
					out->stamp_ns = ok ? ns : 0;
				}
			}
			break;
		}
	}
}

void reqraw_render(const struct reqraw *raw, struct reqinfo *out)
{
	out->proto = raw->proto;
	out->is_head = raw->is_head;
	out->head_complete = raw->head_complete;
	render_one(out->method, sizeof(out->method), raw->method,
		   raw->method_len, sizeof(raw->method));
	render_one(out->target, sizeof(out->target), raw->target,
		   raw->target_len, sizeof(raw->target));
	render_one(out->host, sizeof(out->host), raw->host, raw->host_len,
		   sizeof(raw->host));
	render_ids(raw, out);
}
