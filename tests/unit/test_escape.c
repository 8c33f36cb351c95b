/* escape_append: report-safe text from untrusted bytes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

/* The whole escaped form, without any limit. */
static size_t ref_escape(char *out, const char *src, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c >= 0x21 && c <= 0x7e && c != '\\') {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return o;
}

static void check_safe(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		cr_assert(c >= 0x21 && c <= 0x7e, "raw byte 0x%02x", c);
	}
}

Test(escape, plain)
{
	char buf[32] = "";
	size_t pos = 0;

	escape_append(buf, sizeof(buf), &pos, "GET", 3);
	cr_assert_str_eq(buf, "GET");
	cr_assert_eq(pos, 3);
	escape_append(buf, sizeof(buf), &pos, "/x?a=1", 6);
	cr_assert_str_eq(buf, "GET/x?a=1");
	cr_assert_eq(pos, 9);
}

Test(escape, every_unsafe_byte)
{
	for (int c = 0; c < 256; c++) {
		char buf[8] = "";
		size_t pos = 0;
		char in = (char)c;

		escape_append(buf, sizeof(buf), &pos, &in, 1);
		if (c >= 0x21 && c <= 0x7e && c != '\\') {
			cr_assert_eq(pos, 1);
			cr_assert_eq(buf[0], (char)c);
			cr_assert_eq(buf[1], '\0');
		} else {
			char want[8];
			snprintf(want, sizeof(want), "\\x%02x", c);
			cr_assert_str_eq(buf, want, "byte 0x%02x", c);
			cr_assert_eq(pos, 4);
		}
	}
}

Test(escape, crlf_nul_space_backslash)
{
	char buf[64] = "";
	size_t pos = 0;

	escape_append(buf, sizeof(buf), &pos, "a\r\nb\0c d\\e\x7f\xff", 12);
	cr_assert_str_eq(buf, "a\\x0d\\x0ab\\x00c\\x20d\\x5ce\\x7f\\xff");
	check_safe(buf);
}

Test(escape, empty_append_terminates)
{
	char buf[4] = {'x', 'x', 'x', 'x'};
	size_t pos = 0;

	escape_append(buf, sizeof(buf), &pos, "", 0);
	cr_assert_eq(buf[0], '\0');
	cr_assert_eq(pos, 0);
}

Test(escape, exact_fit_has_no_dots)
{
	char buf[8] = "";
	size_t pos = 0;

	escape_append(buf, sizeof(buf), &pos, "abcdefg", 7);
	cr_assert_str_eq(buf, "abcdefg");
	cr_assert_eq(pos, 7);
	/* One more byte: now it was too long. */
	escape_append(buf, sizeof(buf), &pos, "h", 1);
	cr_assert_str_eq(buf, "abcd...");
	cr_assert_eq(pos, sizeof(buf));
}

Test(escape, full_drops_later_bytes)
{
	char buf[16] = "";
	size_t pos = 0;

	escape_append(buf, sizeof(buf), &pos, "0123456789abcdefghij", 20);
	cr_assert_str_eq(buf, "0123456789ab...");
	cr_assert_eq(pos, sizeof(buf));
	escape_append(buf, sizeof(buf), &pos, "zz", 2);
	escape_append(buf, sizeof(buf), &pos, "", 0);
	cr_assert_str_eq(buf, "0123456789ab...");
	cr_assert_eq(pos, sizeof(buf));
}

Test(escape, dots_never_split_an_escape)
{
	/* cap 16: dots at 12..14. An escape at 10..13 must go entirely. */
	char buf[16] = "";
	size_t pos = 0;

	escape_append(buf, sizeof(buf), &pos, "0123456789\n12345", 16);
	cr_assert_str_eq(buf, "0123456789...");
	check_safe(buf);
}

Test(escape, tiny_capacities)
{
	char buf[4];
	size_t pos;

	for (size_t cap = 1; cap <= 4; cap++) {
		memset(buf, 'Z', sizeof(buf));
		buf[0] = '\0';
		pos = 0;
		escape_append(buf, cap, &pos, "abcdef", 6);
		cr_assert_eq(strlen(buf), cap - 1, "cap %zu", cap);
		for (size_t k = 0; k + 1 < cap; k++)
			cr_assert_eq(buf[k], '.');
		cr_assert_eq(pos, cap);
	}
	pos = 0;
	escape_append(buf, 0, &pos, "abc", 3); /* must not touch buf */
	cr_assert_eq(pos, 0);
}

/* Random inputs, random piece sizes, every capacity up to 40: the result is
 * the reference escaping if it fits, else a prefix of it that ends on an
 * escape boundary followed by "...", and nothing is written past cap. */
Test(escape, random_against_reference)
{
	srand(1234);
	for (int iter = 0; iter < 20000; iter++) {
		char src[64], want[64 * 4 + 1], buf[64 + 8];
		size_t n = (size_t)(rand() % 40);
		size_t cap = 1 + (size_t)(rand() % 40);
		size_t pos = 0;

		for (size_t i = 0; i < n; i++) {
			int r = rand() % 4;
			src[i] = r == 0 ? (char)(rand() % 256)
			       : r == 1 ? '\\' : (char)('a' + rand() % 26);
		}
		size_t wlen = ref_escape(want, src, n);
		memset(buf, 'Z', sizeof(buf));
		buf[0] = '\0';
		for (size_t i = 0; i < n;) {
			size_t k = 1 + (size_t)(rand() % 5);
			if (k > n - i)
				k = n - i;
			escape_append(buf, cap, &pos, src + i, k);
			i += k;
		}
		for (size_t k = cap; k < sizeof(buf); k++)
			cr_assert_eq(buf[k], 'Z', "wrote past cap");
		size_t len = strlen(buf);
		cr_assert_lt(len, cap);
		check_safe(buf);
		if (wlen < cap) {
			cr_assert_str_eq(buf, want);
			cr_assert_eq(pos, wlen);
			continue;
		}
		cr_assert_eq(pos, cap);
		size_t dots = cap - 1 < 3 ? cap - 1 : 3;
		cr_assert_geq(len, dots);
		cr_assert_eq(memcmp(buf + len - dots, "...", dots), 0);
		size_t keep = len - dots;
		cr_assert_eq(memcmp(buf, want, keep), 0, "%s vs %s", buf, want);
		/* The kept prefix is the longest one that ends on an escape
		 * boundary and leaves room for the dots. */
		size_t best = 0;
		for (size_t b = 0; b <= wlen; b += want[b] == '\\' ? 4 : 1) {
			if (cap >= 4 && b <= cap - 4)
				best = b;
			if (b == wlen)
				break;
		}
		cr_assert_eq(keep, best, "%s vs %s (cap %zu)", buf, want, cap);
	}
}
