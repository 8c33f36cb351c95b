/*
 * config_load with a fake environment made of the input: NUL-separated
 * fields, field i the value of the i-th SLOWDOG_* variable below (missing
 * fields are unset). Each value lives in its own heap block of exactly its
 * size, so ASan sees any read past its NUL. config_parse_duration and
 * config_parse_signal also get every field.
 *
 * Checks: only SLOWDOG_* names are asked for; every warning is one line of
 * printable ASCII starting "slowdog: ", at most 511 bytes (a hostile
 * environment can forge no log line); every setting ends in its documented
 * range; a plain "<digits><unit>" duration parses to exactly digits * unit;
 * surrounding whitespace changes nothing; errno is preserved.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

static const char *const names[] = {
	"SLOWDOG_THRESHOLD", "SLOWDOG_LOG",      "SLOWDOG_SIGNAL",
	"SLOWDOG_MAX_FRAMES", "SLOWDOG_STACK",   "SLOWDOG_FORMAT",
	"SLOWDOG_REPEAT",    "SLOWDOG_REPEAT_MAX", "SLOWDOG_IGNORE",
	"SLOWDOG_QUERY",     "SLOWDOG_DEBUG",    "SLOWDOG_DISABLE",
};
#define NVARS (sizeof(names) / sizeof(names[0]))

static char *values[NVARS];

static const char *fake_getenv(const char *name)
{
	FUZZ_CHECK(strncmp(name, "SLOWDOG_", 8) == 0, "asked for %s", name);
	for (size_t i = 0; i < NVARS; i++)
		if (strcmp(name, names[i]) == 0)
			return values[i];
	return NULL;
}

static unsigned warnings;

static void fake_warn(const char *line)
{
	size_t n = strlen(line);

	warnings++;
	FUZZ_CHECK(strncmp(line, "slowdog: ", 9) == 0, "warning \"%s\"", line);
	FUZZ_CHECK(n < 512, "warning of %zu bytes", n);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)line[i];
		FUZZ_CHECK(c >= 0x20 && c <= 0x7e, "byte 0x%02x in warning \"%s\"",
			   c, line);
	}
}

#define YEAR_NS (366LL * 24 * 3600 * 1000000000LL)

/* "<1..9 digits><unit>" with nothing else: the exact value (which may be
 * out of range), or -1. */
static __int128 plain_duration(const char *s)
{
	static const struct {
		const char *u;
		int64_t ns;
	} units[] = {
		{"ns", 1}, {"us", 1000}, {"ms", 1000000}, {"s", 1000000000},
		{"m", 60000000000LL}, {"h", 3600000000000LL}, {"", 1000000000},
	};
	size_t d = 0;
	int64_t v = 0;

	while (s[d] >= '0' && s[d] <= '9' && d < 10)
		v = v * 10 + (s[d++] - '0');
	if (d == 0 || d > 9)
		return -1;
	for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++)
		if (strcmp(s + d, units[k].u) == 0)
			return (__int128)v * units[k].ns;
	return -1;
}

static void check_duration(const char *s)
{
	int64_t ns = -7, ns2 = -7;
	bool ok = config_parse_duration(s, &ns);

	if (ok)
		FUZZ_CHECK(ns > 0 && ns <= YEAR_NS, "duration \"%s\" = %lld", s,
			   (long long)ns);
	else
		FUZZ_CHECK(ns == -7, "failed parse of \"%s\" wrote %lld", s,
			   (long long)ns);
	__int128 want = plain_duration(s);
	if (want > 0 && want <= YEAR_NS)
		FUZZ_CHECK(ok && ns == want, "\"%s\": %d %lld, want %lld", s, ok,
			   (long long)ns, (long long)want);
	if (want == 0 || want > YEAR_NS)
		FUZZ_CHECK(!ok, "\"%s\" accepted as %lld", s, (long long)ns);

	/* Surrounding whitespace is trimmed. */
	size_t n = strlen(s);
	char *padded = malloc(n + 5);
	if (!padded)
		abort();
	memcpy(padded, " \t", 2);
	memcpy(padded + 2, s, n);
	memcpy(padded + 2 + n, " \n", 3);
	bool ok2 = config_parse_duration(padded, &ns2);
	FUZZ_CHECK(ok == ok2 && (!ok || ns == ns2),
		   "\"%s\": %d %lld, padded %d %lld", s, ok, (long long)ns, ok2,
		   (long long)ns2);
	free(padded);
}

static void check_signal(const char *s)
{
	int sig = -7;

	if (config_parse_signal(s, &sig))
		FUZZ_CHECK(sig == -1 || sig == 0 ||
				   (sig >= SIGRTMIN && sig <= SIGRTMAX),
			   "signal \"%s\" = %d", s, sig);
	else
		FUZZ_CHECK(sig == -7, "failed parse of \"%s\" wrote %d", s, sig);
}

static void check_config(const struct config *c)
{
	FUZZ_CHECK(c->threshold_ns > 0 && c->threshold_ns <= YEAR_NS,
		   "threshold %lld", (long long)c->threshold_ns);
	FUZZ_CHECK(memchr(c->log_path, '\0', sizeof(c->log_path)),
		   "log path not terminated");
	FUZZ_CHECK(c->signal == -1 || c->signal == 0 ||
			   (c->signal >= SIGRTMIN && c->signal <= SIGRTMAX),
		   "signal %d", c->signal);
	FUZZ_CHECK(c->max_frames >= 1 && c->max_frames <= CONFIG_MAX_MAX_FRAMES,
		   "max_frames %d", c->max_frames);
	FUZZ_CHECK(c->stack_view == STACK_SPLIT || c->stack_view == STACK_MERGED,
		   "stack_view %d", c->stack_view);
	FUZZ_CHECK(c->format == FORMAT_TEXT || c->format == FORMAT_JSON,
		   "format %d", c->format);
	FUZZ_CHECK(c->repeat_ns >= 0 && c->repeat_ns <= YEAR_NS, "repeat %lld",
		   (long long)c->repeat_ns);
	FUZZ_CHECK(c->repeat_max >= 1 && c->repeat_max <= CONFIG_MAX_REPEAT_MAX,
		   "repeat_max %d", c->repeat_max);
	FUZZ_CHECK(memchr(c->ignore, '\0', sizeof(c->ignore)),
		   "ignore not terminated");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config c;
	size_t i = 0, off = 0;

	for (i = 0; i < NVARS; i++)
		values[i] = NULL;
	for (i = 0; i < NVARS && off < size; i++) {
		const uint8_t *z = memchr(data + off, 0, size - off);
		size_t n = z ? (size_t)(z - data) - off : size - off;
		values[i] = malloc(n + 1);
		if (!values[i])
			abort();
		memcpy(values[i], data + off, n);
		values[i][n] = '\0';
		off += n + 1;
	}

	memset(&c, 0xa5, sizeof(c));
	warnings = 0;
	errno = 12345;
	config_load(&c, fake_getenv, fake_warn);
	FUZZ_CHECK(errno == 12345, "errno changed to %d", errno);
	check_config(&c);
	FUZZ_CHECK(warnings <= NVARS, "%u warnings", warnings);
	/* No warn callback: still a valid config. */
	config_load(&c, fake_getenv, NULL);
	check_config(&c);

	for (i = 0; i < NVARS; i++) {
		if (!values[i])
			continue;
		check_duration(values[i]);
		check_signal(values[i]);
		free(values[i]);
		values[i] = NULL;
	}
	return 0;
}
