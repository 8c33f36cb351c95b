/* SLOWDOG_* settings, read once from the environment. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <limits.h>

enum stack_view {
	STACK_SPLIT = 0, /* Python traceback, then the native stack */
	STACK_MERGED,    /* one stack, eval frames replaced by Python frames */
};

struct config {
	bool disabled;           /* SLOWDOG_DISABLE */
	int64_t threshold_ns;    /* SLOWDOG_THRESHOLD */
	char log_path[PATH_MAX]; /* SLOWDOG_LOG; "" = standard error */
	int signal;              /* SLOWDOG_SIGNAL; 0 = choose (SIGRTMIN+3 first) */
	int max_frames;          /* SLOWDOG_MAX_FRAMES */
	int stack_view;          /* SLOWDOG_STACK: enum stack_view */
};

#define CONFIG_DEFAULT_THRESHOLD_NS (10LL * 1000000000LL)
#define CONFIG_DEFAULT_MAX_FRAMES 512
#define CONFIG_MAX_MAX_FRAMES 4096

/* Parses "500ms", "2s", "1.5s", "250us", "1m", a bare number = seconds.
 * Returns false on anything else, on zero/negative and on overflow. */
bool config_parse_duration(const char *s, int64_t *ns);

/* Parses a signal: a number, "SIGRTMIN+N", "RTMIN+N", "SIGRTMAX-N", or
 * "off"/"none" (returns -1 then). Only real-time signals are accepted.
 * Returns false on anything else. */
bool config_parse_signal(const char *s, int *sig);

/*
 * Fills c from the environment (getenv is passed in so tests can fake it).
 * Each bad value is reported through warn() as one line
 * ("slowdog: SLOWDOG_THRESHOLD=\"abc\" is not a valid duration; using 10s") and
 * replaced by its default.
 */
void config_load(struct config *c, const char *(*get)(const char *name),
		 void (*warn)(const char *line));
