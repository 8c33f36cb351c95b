/*
 * escape_append: the input's first two bytes choose the capacity (0..1023),
 * the rest is appended in pieces (split points from the input's hash) to a
 * buffer of exactly that size on the heap, so ASan sees any write past it.
 *
 * Checks: the result is NUL-terminated inside cap, holds only 0x21..0x7e,
 * every backslash starts a whole \xHH; *pos is strlen(dst) until the value
 * is cut, then cap; unescaped, the value is the input (or, when cut, a
 * prefix of it followed by "..."); once cut, later appends change nothing.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"
#include "fuzz.h"

static int hexval(char c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

/* Unescapes s[0..n) into out; returns the length. */
static size_t unescape(const char *s, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\') {
			out[o++] = (char)(hexval(s[i + 2]) * 16 + hexval(s[i + 3]));
			i += 3;
		} else {
			out[o++] = s[i];
		}
	}
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_rng rng;

	if (size < 2)
		return 0;
	size_t cap = ((size_t)data[0] | (size_t)data[1] << 8) % 1024;
	const char *src = (const char *)data + 2;
	size_t n = size - 2;

	fuzz_rng_init(&rng, data, size);
	char *dst = malloc(cap ? cap : 1);
	char *plain = malloc(n + 1);
	if (!dst || !plain)
		abort();
	if (cap)
		dst[0] = '\0';

	size_t pos = 0, fed = 0;
	bool cut = false;
	while (fed < n || fed == 0) {
		size_t k = n ? fuzz_chunk(&rng, n - fed) : 0;
		size_t before = pos;
		char *snap = NULL;
		if (cut) {
			snap = malloc(cap);
			memcpy(snap, dst, cap);
		}
		escape_append(dst, cap, &pos, src + fed, k);
		fed += k;
		if (cap == 0) {
			FUZZ_CHECK(pos == before, "cap 0: pos moved to %zu", pos);
			if (n == 0)
				break;
			continue;
		}
		if (cut) {
			FUZZ_CHECK(pos == cap && memcmp(snap, dst, cap) == 0,
				   "an append after the cut changed the value");
			free(snap);
		}
		fuzz_check_escaped("dst", dst, cap, false);
		size_t len = strlen(dst);
		if (pos == cap) {
			cut = true;
		} else {
			FUZZ_CHECK(pos == len, "pos %zu, strlen %zu", pos, len);
			FUZZ_CHECK(pos < cap, "pos %zu, cap %zu", pos, cap);
		}
		if (n == 0)
			break;
	}
	if (cap == 0)
		goto out;

	size_t len = strlen(dst), pn;
	if (!cut) {
		pn = unescape(dst, len, plain);
		FUZZ_CHECK(pn == n && memcmp(plain, src, n) == 0,
			   "the value does not unescape to the input");
	} else {
		/* "..." when it fits (cap >= 4); the rest is a prefix. */
		size_t dots = cap >= 4 ? 3 : (cap > 1 ? cap - 1 : 0);
		FUZZ_CHECK(len >= dots, "cut value \"%s\" shorter than its dots",
			   dst);
		for (size_t i = len - dots; i < len; i++)
			FUZZ_CHECK(dst[i] == '.', "cut value \"%s\" does not end in "
				   "dots", dst);
		pn = unescape(dst, len - dots, plain);
		FUZZ_CHECK(pn <= n && memcmp(plain, src, pn) == 0,
			   "the cut value is not a prefix of the input");
		/* Cut only when the input did not fit. */
		size_t need = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)src[i];
			need += (c >= 0x21 && c <= 0x7e && c != '\\') ? 1 : 4;
		}
		FUZZ_CHECK(need > cap - 1, "cut although %zu bytes fit in %zu",
			   need, cap);
	}
out:
	free(dst);
	free(plain);
	return 0;
}
