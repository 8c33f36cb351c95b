/*
 * Capture pause, native side: a C thread recursing DEPTH frames deep, then
 * computing, bracketed with slowdog_begin()/slowdog_end() (looked up at run
 * time, so the program also runs without slowdog).
 *
 *   native DEPTH COUNT BURST_MS
 *
 * Each burst is captured by slowdog's signal once it passes the threshold;
 * the report's capture.pause_us says how long the handler stopped the
 * thread.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int (*sd_begin)(const char *);
static int (*sd_end)(void);

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t spin(int64_t ns)
{
	int64_t end = now_ns() + ns, n = 0;
	while (now_ns() < end)
		n++;
	return n;
}

/* Not a tail call, not inlined: one real frame per level. */
__attribute__((noinline)) static int64_t recurse(int n, int64_t ns)
{
	volatile char pad[48];
	pad[0] = (char)n;
	int64_t r = n <= 1 ? spin(ns) : recurse(n - 1, ns);
	return r + pad[0] * 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: native DEPTH COUNT BURST_MS\n");
		return 2;
	}
	int depth = atoi(argv[1]), count = atoi(argv[2]);
	int64_t burst = (int64_t)(atof(argv[3]) * 1e6);
	sd_begin = (int (*)(const char *))dlsym(RTLD_DEFAULT, "slowdog_begin");
	sd_end = (int (*)(void))dlsym(RTLD_DEFAULT, "slowdog_end");
	if (!sd_begin || !sd_end) {
		fprintf(stderr, "native: slowdog is not preloaded\n");
		return 2;
	}
	char label[64];
	snprintf(label, sizeof(label), "bench native depth %d", depth);
	/* main, __libc_start_call_main, __libc_start_main, _start: the rest
	 * is recurse() and spin(). */
	int own = depth > 5 ? depth - 5 : 1;
	for (int i = 0; i < count; i++) {
		if (sd_begin(label) != 0) {
			fprintf(stderr, "native: slowdog_begin failed\n");
			return 1;
		}
		recurse(own, burst);
		sd_end();
		struct timespec ms2 = {0, 2000000};
		nanosleep(&ms2, NULL);
	}
	return 0;
}
