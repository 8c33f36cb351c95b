/*
 * Helpers shared by the libFuzzer targets in this directory.
 *
 * A failed check prints what broke and aborts, which libFuzzer reports as a
 * crash and saves the input. Split points and other choices come from a
 * generator seeded with a hash of the input, so that every input replays
 * the same way and the whole input stays the bytes under test (seeds are
 * plain requests and responses, and mutations keep their meaning).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...)                                               \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, \
				__LINE__, #cond);                           \
			fprintf(stderr, __VA_ARGS__);                       \
			fputc('\n', stderr);                                \
			abort();                                            \
		}                                                           \
	} while (0)

struct fuzz_rng {
	uint64_t s;
};

/* FNV-1a over the input: the seed of every choice a harness makes. */
static inline void fuzz_rng_init(struct fuzz_rng *r, const uint8_t *d, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ d[i]) * 0x100000001b3ull;
	r->s = h ? h : 1;
}

/* xorshift64* */
static inline uint64_t fuzz_rng_next(struct fuzz_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dull;
}

/* A chunk length in 1..left, mostly small, sometimes everything left:
 * servers read in anything from 1 byte to the whole buffer. */
static inline size_t fuzz_chunk(struct fuzz_rng *r, size_t left)
{
	uint64_t x = fuzz_rng_next(r);
	size_t k;

	if (left <= 1)
		return left;
	switch (x & 3) {
	case 0:
		k = left;
		break;
	case 1:
		k = 1 + (size_t)((x >> 8) % 4);
		break;
	default:
		k = 1 + (size_t)((x >> 8) % (left < 64 ? left : 64));
		break;
	}
	return k < left ? k : left;
}

static inline bool fuzz_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * A reqinfo field or any escaped value: NUL-terminated inside cap, every
 * byte in 0x21..0x7e (or also a space when spaces_ok), and every backslash
 * the start of a complete \xHH, so that no escape is ever cut in two.
 */
static inline void fuzz_check_escaped(const char *what, const char *s,
				      size_t cap, bool spaces_ok)
{
	const char *end = memchr(s, '\0', cap);

	FUZZ_CHECK(end != NULL, "%s is not NUL-terminated within %zu bytes",
		   what, cap);
	size_t n = (size_t)(end - s);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		FUZZ_CHECK((c >= 0x21 && c <= 0x7e) || (spaces_ok && c == ' '),
			   "%s has raw byte 0x%02x at %zu", what, c, i);
		if (c == '\\') {
			FUZZ_CHECK(i + 3 < n && s[i + 1] == 'x' &&
					   fuzz_hex(s[i + 2]) && fuzz_hex(s[i + 3]),
				   "%s: bad escape at %zu: \"%s\"", what, i, s);
			i += 3;
		}
	}
}

/* ---- structured inputs: a byte reader and an output buffer ---- */

struct fuzz_in {
	const uint8_t *d;
	size_t n, i;
};

/* The next input byte; 0 once the input is used up. */
static inline uint8_t fuzz_byte(struct fuzz_in *in)
{
	return in->i < in->n ? in->d[in->i++] : 0;
}

struct fuzz_out {
	char *b;
	size_t n, cap;
};

static inline void fuzz_put(struct fuzz_out *o, const void *p, size_t n)
{
	if (n > o->cap - o->n)
		n = o->cap - o->n; /* the checks account for o->n */
	memcpy(o->b + o->n, p, n);
	o->n += n;
}

static inline void fuzz_puts(struct fuzz_out *o, const char *s)
{
	fuzz_put(o, s, strlen(s));
}
