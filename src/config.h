/* SLOWDOG_* settings, read once from the environment. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <limits.h>

enum stack_view {
	STACK_SPLIT = 0, /* Python traceback, then the native stack */
	STACK_MERGED,    /* one stack, eval frames replaced by Python frames */
};

enum log_format {
	FORMAT_TEXT = 0, /* blocks of lines, in the manner of dogslow */
	FORMAT_JSON,     /* one JSON object per line */
};

#define CONFIG_IGNORE_MAX 1024
#define CONFIG_HEADERS_MAX 512

struct config {
	bool disabled;           /* SLOWDOG_DISABLE */
	int64_t threshold_ns;    /* SLOWDOG_THRESHOLD */
	int64_t loop_threshold_ns; /* SLOWDOG_LOOP_THRESHOLD */
	char log_path[PATH_MAX]; /* SLOWDOG_LOG; "" = standard error */
	int signal;              /* SLOWDOG_SIGNAL; 0 = choose (SIGRTMIN+3 first) */
	int max_frames;          /* SLOWDOG_MAX_FRAMES */
	int stack_view;          /* SLOWDOG_STACK: enum stack_view */
	int format;              /* SLOWDOG_FORMAT: enum log_format */
	int64_t repeat_ns;       /* SLOWDOG_REPEAT; 0 = capture once */
	int repeat_max;          /* SLOWDOG_REPEAT_MAX: captures per request */
	char ignore[CONFIG_IGNORE_MAX]; /* SLOWDOG_IGNORE: comma-separated globs */
	bool strip_query;        /* SLOWDOG_QUERY=strip */
	bool debug;              /* SLOWDOG_DEBUG */
	char statsd[256];        /* SLOWDOG_STATSD: HOST:PORT, "" = none */
	char statsd_prefix[64];  /* SLOWDOG_STATSD_PREFIX */
	bool statsd_tags;        /* SLOWDOG_STATSD_TAGS: DogStatsD tags */
	int64_t last_words_ns;   /* SLOWDOG_LAST_WORDS: how long a dying
	                            worker may take for its report; 0 = off */
	char headers[CONFIG_HEADERS_MAX]; /* SLOWDOG_HEADERS: more headers to
	                            show, a comma list (reqids_setup reads it) */
	bool queue_count;        /* SLOWDOG_QUEUE=count: the threshold counts
	                            from the proxy's stamp */
};

#define CONFIG_DEFAULT_LAST_WORDS_NS (250LL * 1000000LL)
#define CONFIG_MAX_LAST_WORDS_NS (5LL * 1000000000LL)

#define CONFIG_DEFAULT_REPEAT_MAX 5
#define CONFIG_MAX_REPEAT_MAX 1000

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
