/* Escaping of untrusted request bytes into report-safe text. See escape.h. */
#include "escape.h"

#include <stdbool.h>
#include <string.h>

#include "common.h"
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
}
