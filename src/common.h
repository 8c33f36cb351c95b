/* Small shared helpers: export macro, branch hints, clocks. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SD_EXPORT __attribute__((visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define NS_PER_SEC 1000000000LL
#define NS_PER_MS 1000000LL

/* async-signal-safe (vDSO) */
static inline int64_t clock_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* async-signal-safe (vDSO). Coarse: a few ms resolution, a few ns cost;
 * good enough for request start and end times on the hot path. */
static inline int64_t clock_coarse_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

static inline int64_t clock_real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

/* The first 128 entries of a byte table, F(c) each: the rest of a static
 * table is zero. */
#define BYTE_ROW(F, b)                                                        \
	F((b) + 0), F((b) + 1), F((b) + 2), F((b) + 3), F((b) + 4),           \
	F((b) + 5), F((b) + 6), F((b) + 7), F((b) + 8), F((b) + 9),           \
	F((b) + 10), F((b) + 11), F((b) + 12), F((b) + 13), F((b) + 14),      \
	F((b) + 15)
#define ASCII_TABLE(F)                                                        \
	BYTE_ROW(F, 0x00), BYTE_ROW(F, 0x10), BYTE_ROW(F, 0x20),             \
	BYTE_ROW(F, 0x30), BYTE_ROW(F, 0x40), BYTE_ROW(F, 0x50),             \
	BYTE_ROW(F, 0x60), BYTE_ROW(F, 0x70)
