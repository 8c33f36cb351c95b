/*
 * A batch job that brackets its work with slowdog_begin()/slowdog_end(), the
 * way slowdog_begin(3) tells programs to: it links nothing of slowdog and
 * finds the functions with dlsym(RTLD_DEFAULT), so that it also runs without
 * the preload and then just does the work.
 *
 *   job [--expect-disabled] [SECONDS]       (default 1.0 s of work)
 *
 * Prints one line per check; exit status 1 when a return value is wrong.
 * tests/api/run.sh checks the report it leads to.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "slowdog.h"

static const char *(*sd_version)(void);
static int (*sd_begin)(const char *label);
static int (*sd_end)(void);

static int failures;

static void check(const char *what, int ok)
{
	printf("%s  %s\n", ok ? "ok  " : "FAIL", what);
	if (!ok)
		failures++;
}

/* The work: its name must show in the native stack of the report. */
__attribute__((noinline)) static void import_rows(double seconds)
{
	struct timespec ts = {
		.tv_sec = (time_t)seconds,
		.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9),
	};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	/* Keeps the call from being a tail call that leaves no frame. */
	__asm__ volatile("" ::: "memory");
}

static void *end_elsewhere(void *arg)
{
	int *ret = arg;

	*ret = sd_end();
	return NULL;
}

int main(int argc, char **argv)
{
	int expect_disabled = 0;
	double seconds = 1.0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--expect-disabled") == 0)
			expect_disabled = 1;
		else
			seconds = atof(argv[i]);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	*(void **)&sd_version = dlsym(RTLD_DEFAULT, "slowdog_version");
	*(void **)&sd_begin = dlsym(RTLD_DEFAULT, "slowdog_begin");
	*(void **)&sd_end = dlsym(RTLD_DEFAULT, "slowdog_end");
	if (!sd_version || !sd_begin || !sd_end) {
		printf("slowdog not loaded: doing the work unwatched\n");
		import_rows(seconds);
		return 0;
	}

	check("slowdog_version() is " SLOWDOG_VERSION,
	      strcmp(sd_version(), SLOWDOG_VERSION) == 0);
	check("slowdog_end() with nothing begun returns -1", sd_end() == -1);

	if (expect_disabled) {
		check("slowdog_begin() returns -1 when disabled",
		      sd_begin("nightly import") == -1);
		import_rows(seconds);
		check("slowdog_end() returns -1 when disabled", sd_end() == -1);
		return failures ? 1 : 0;
	}

	/* A second begin replaces the first: only "nightly import" may be
	 * reported. */
	check("slowdog_begin(\"replaced job\") returns 0",
	      sd_begin("replaced job") == 0);
	check("slowdog_begin(\"nightly import\") returns 0",
	      sd_begin("nightly import") == 0);

	/* Work begun here cannot be ended from another thread. */
	pthread_t th;
	int other = 0;
	if (pthread_create(&th, NULL, end_elsewhere, &other) == 0) {
		pthread_join(th, NULL);
		check("slowdog_end() on another thread returns -1", other == -1);
	}

	import_rows(seconds);
	check("slowdog_end() returns 0", sd_end() == 0);
	check("a second slowdog_end() returns -1", sd_end() == -1);

	/* Work that ends below the threshold is never reported. */
	check("slowdog_begin(\"quick task\") returns 0", sd_begin("quick task") == 0);
	check("slowdog_end() of the quick task returns 0", sd_end() == 0);
	return failures ? 1 : 0;
}
