/*
 * For tests/faults/security.py: a program linked with libslowdog.so (no
 * preload: the loader ignores LD_PRELOAD paths in a secure-execution
 * process) that runs once as is and once set-group-ID, where the kernel
 * sets AT_SECURE and slowdog must honour no SLOWDOG_* variable.
 *
 * Brackets 0.5 s of sleep with slowdog_begin("secure job") and prints
 * "secure=AT_SECURE begin=RESULT end=RESULT".
 */
#include <stdio.h>
#include <sys/auxv.h>
#include <time.h>

#include "slowdog.h"

int main(void)
{
	int b = slowdog_begin("secure job");
	struct timespec ts = {0, 500000000};

	while (nanosleep(&ts, &ts) != 0)
		;
	int e = slowdog_end();
	printf("secure=%lu begin=%d end=%d\n", getauxval(AT_SECURE), b, e);
	return 0;
}
