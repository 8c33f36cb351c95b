/*
 * A native recursion 10,000 frames deep for the fault tests: deep(n, spin)
 * calls itself n times, then waits 1.5 s at the bottom, in nanosleep(2)
 * (spin == 0: a blocked capture) or running (spin != 0: a signal capture).
 * Built by tests/faults/run.py with cc -shared, loaded with ctypes.
 */
#include <time.h>

int deep(int n, int spin);

static volatile int sink;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) int deep(int n, int spin)
{
	volatile char pad[48];

	pad[0] = (char)n;
	if (n <= 1) {
		if (spin) {
			double end = now() + 1.5;
			while (now() < end)
				sink++;
		} else {
			struct timespec ts = {1, 500000000};
			while (nanosleep(&ts, &ts) != 0)
				;
		}
		return 1;
	}
	/* Not a tail call: the frame stays. */
	int r = deep(n - 1, spin) + 1;
	sink += pad[0];
	return r;
}
