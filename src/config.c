/*
 * SLOWDOG_* settings. See config.h and slowdog(7).
 *
 * config_load runs early (the first accepted connection, possibly inside a
 * constructor): it allocates nothing and writes nothing but through warn().
 * The parsers are written by hand rather than with strtod so that the
 * host's locale (a decimal comma) cannot change what a value means.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define NS_PER_US 1000LL
/* Longest threshold accepted: a year is already meaningless. */
#define DURATION_MAX_NS (366ull * 24 * 3600 * NS_PER_SEC)
/* Fraction digits kept: beyond 18, the next digit changes less than 1 ns
 * even in hours. */
#define FRACTION_DIGITS_MAX 18

/* The warnings below spell the defaults out. */
_Static_assert(CONFIG_DEFAULT_THRESHOLD_NS == 10LL * 1000000000LL,
	       "update the SLOWDOG_THRESHOLD warning");
_Static_assert(CONFIG_MAX_MAX_FRAMES == 4096,
	       "update the SLOWDOG_MAX_FRAMES warning");

static bool config_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}

static char config_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

/* Trims ASCII whitespace; returns the start, sets *len. */
static const char *config_trim(const char *s, size_t *len)
{
	size_t n;

	while (config_space(*s))
		s++;
	n = strlen(s);
	while (n > 0 && config_space(s[n - 1]))
		n--;
	*len = n;
	return s;
}

/* Case-insensitive compare of s[0..n) with a lowercase word. */
static bool config_word(const char *s, size_t n, const char *word)
{
	size_t k = strlen(word);

	if (n != k)
		return false;
	for (size_t i = 0; i < n; i++)
		if (config_lower(s[i]) != word[i])
			return false;
	return true;
}

static const struct {
	const char *suffix;
	unsigned long long ns;
} duration_units[] = {
	{"ns", 1},
	{"us", NS_PER_US},
	{"ms", NS_PER_MS},
	{"s", NS_PER_SEC},
	{"m", 60 * NS_PER_SEC},
	{"h", 3600 * NS_PER_SEC},
};

bool config_parse_duration(const char *s, int64_t *ns)
{
	unsigned __int128 whole = 0, frac = 0, frac_div = 1, unit = NS_PER_SEC;
	unsigned __int128 total;
	bool digits = false;
	size_t n, i = 0;

	if (!s)
		return false;
	s = config_trim(s, &n);
	/* Integer part; past 2^64 the value is out of range whatever the
	 * unit, so stop accumulating (still checking the digits). */
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		digits = true;
		if (whole < ((unsigned __int128)1 << 64))
			whole = whole * 10 + (unsigned)(s[i] - '0');
	}
	if (i < n && s[i] == '.') {
		int kept = 0;
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
			digits = true;
			if (kept++ < FRACTION_DIGITS_MAX) {
				frac = frac * 10 + (unsigned)(s[i] - '0');
				frac_div *= 10;
			}
		}
	}
	if (!digits)
		return false;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i < n) {
		size_t k;
		for (k = 0; k < ARRAY_LEN(duration_units); k++) {
			if (strlen(duration_units[k].suffix) == n - i &&
			    memcmp(duration_units[k].suffix, s + i, n - i) == 0)
				break;
		}
		if (k == ARRAY_LEN(duration_units))
			return false;
		unit = duration_units[k].ns;
	}
	/* whole < 2^68, unit < 2^42, frac < 10^18: no overflow in 128 bits */
	total = whole * unit + frac * unit / frac_div;
	if (total == 0 || total > DURATION_MAX_NS)
		return false;
	*ns = (int64_t)total;
	return true;
}

/* Strict unsigned decimal of s[0..n): no sign, no space, at most 9 digits. */
static bool config_small_uint(const char *s, size_t n, int *out)
{
	int v = 0;

	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* "RTMIN", "RTMIN+N", "RTMAX", "RTMAX-N" (the SIG prefix already gone). */
static bool config_rt_name(const char *s, size_t n, int *sig)
{
	int base, off = 0;
	char sign;

	if (n < 5)
		return false;
	if (config_word(s, 5, "rtmin")) {
		base = SIGRTMIN;
		sign = '+';
	} else if (config_word(s, 5, "rtmax")) {
		base = SIGRTMAX;
		sign = '-';
	} else {
		return false;
	}
	if (n > 5) {
		if (s[5] != sign || !config_small_uint(s + 6, n - 6, &off))
			return false;
	}
	*sig = sign == '+' ? base + off : base - off;
	return true;
}

bool config_parse_signal(const char *s, int *sig)
{
	size_t n;
	int v;

	if (!s)
		return false;
	s = config_trim(s, &n);
	if (config_word(s, n, "off") || config_word(s, n, "none") ||
	    (n == 1 && s[0] == '0')) {
		*sig = -1;
		return true;
	}
	if (config_word(s, n, "auto")) {
		*sig = 0;
		return true;
	}
	if (n > 3 && config_word(s, 3, "sig") && config_lower(s[3]) == 'r') {
		s += 3;
		n -= 3;
	}
	if (!config_small_uint(s, n, &v) && !config_rt_name(s, n, &v))
		return false;
	if (v < SIGRTMIN || v > SIGRTMAX)
		return false;
	*sig = v;
	return true;
}

/*
 * Writes value quoted for a warning: at most 64 bytes of it, with control
 * characters, quotes, backslashes and non-ASCII bytes as \xHH, so that a
 * hostile environment cannot forge log lines through us.
 */
static void config_quote(char *dst, size_t cap, const char *v)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	for (i = 0; v[i] && i < 64 && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		} else {
			dst[o++] = (char)c;
		}
	}
	if (v[i] && o + 4 < cap) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
}

static void config_warn(void (*warn)(const char *line), const char *name,
			const char *value, const char *problem,
			const char *instead)
{
	char quoted[64 * 4 + 8];
	char line[512];

	if (!warn)
		return;
	config_quote(quoted, sizeof(quoted), value);
	snprintf(line, sizeof(line), "slowdog: %s=\"%s\" %s; using %s", name,
		 quoted, problem, instead);
	warn(line);
}

static const char *config_getenv(const char *name)
{
	return getenv(name);
}

/* Unset and empty both mean "not configured". */
static const char *config_get(const char *(*get)(const char *name),
			      const char *name)
{
	const char *v = get(name);
	return v && v[0] ? v : NULL;
}

/* 1: yes, 0: no, -1: neither. */
static int config_bool(const char *v)
{
	static const char *const no[] = {"0", "no", "false", "off"};
	static const char *const yes[] = {"1", "yes", "true", "on"};
	size_t n;
	const char *s = config_trim(v, &n);

	if (n == 0)
		return 0;
	for (size_t k = 0; k < ARRAY_LEN(no); k++)
		if (config_word(s, n, no[k]))
			return 0;
	for (size_t k = 0; k < ARRAY_LEN(yes); k++)
		if (config_word(s, n, yes[k]))
			return 1;
	return -1;
}

static void config_load_disable(struct config *c,
				const char *(*get)(const char *name),
				void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_DISABLE");

	if (!v)
		return;
	int b = config_bool(v);
	c->disabled = b != 0;
	/* Someone asked for something: honour the likelier wish. */
	if (b < 0)
		config_warn(warn, "SLOWDOG_DISABLE", v,
			    "is not a boolean (1/0, yes/no, true/false, on/off)",
			    "1 (disabled)");
}

static void config_load_debug(struct config *c,
			      const char *(*get)(const char *name),
			      void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_DEBUG");

	if (!v)
		return;
	int b = config_bool(v);
	c->debug = b != 0;
	if (b < 0)
		config_warn(warn, "SLOWDOG_DEBUG", v,
			    "is not a boolean (1/0, yes/no, true/false, on/off)",
			    "1 (on)");
}

/* One of two words; false if v is neither. */
static bool config_choice(const char *v, const char *a, const char *b,
			  bool *is_b)
{
	size_t n;
	const char *s = config_trim(v, &n);

	if (config_word(s, n, a)) {
		*is_b = false;
		return true;
	}
	if (config_word(s, n, b)) {
		*is_b = true;
		return true;
	}
	return false;
}

static void config_load_format(struct config *c,
			       const char *(*get)(const char *name),
			       void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_FORMAT");
	bool json;

	if (!v)
		return;
	if (config_choice(v, "text", "json", &json))
		c->format = json ? FORMAT_JSON : FORMAT_TEXT;
	else
		config_warn(warn, "SLOWDOG_FORMAT", v, "is not text or json",
			    "text");
}

static void config_load_query(struct config *c,
			      const char *(*get)(const char *name),
			      void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_QUERY");
	bool strip;

	if (!v)
		return;
	if (config_choice(v, "keep", "strip", &strip))
		c->strip_query = strip;
	else
		config_warn(warn, "SLOWDOG_QUERY", v, "is not keep or strip",
			    "keep");
}

static void config_load_queue(struct config *c,
			      const char *(*get)(const char *name),
			      void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_QUEUE");
	bool count;

	if (!v)
		return;
	if (config_choice(v, "show", "count", &count))
		c->queue_count = count;
	else
		config_warn(warn, "SLOWDOG_QUEUE", v, "is not show or count",
			    "show");
}

static void config_load_headers(struct config *c,
				const char *(*get)(const char *name),
				void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_HEADERS");

	if (!v)
		return;
	size_t n = strlen(v);
	if (n >= sizeof(c->headers)) {
		config_warn(warn, "SLOWDOG_HEADERS", v, "is too long",
			    "the built-in headers only");
		return;
	}
	memcpy(c->headers, v, n + 1);
}

static void config_load_repeat(struct config *c,
			       const char *(*get)(const char *name),
			       void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_REPEAT");
	int64_t ns;
	bool on;

	if (v) {
		if (config_choice(v, "off", "no", &on) || config_bool(v) == 0)
			c->repeat_ns = 0;
		else if (config_parse_duration(v, &ns))
			c->repeat_ns = ns;
		else
			config_warn(warn, "SLOWDOG_REPEAT", v,
				    "is not a valid duration or off", "off");
	}
	v = config_get(get, "SLOWDOG_REPEAT_MAX");
	if (v) {
		char *end;
		errno = 0;
		long x = strtol(v, &end, 10);
		while (config_space(*end))
			end++;
		if (errno == 0 && end != v && *end == '\0' && x >= 1 &&
		    x <= CONFIG_MAX_REPEAT_MAX && strpbrk(v, "+-") == NULL) {
			c->repeat_max = (int)x;
		} else {
			char instead[16];
			snprintf(instead, sizeof(instead), "%d",
				 CONFIG_DEFAULT_REPEAT_MAX);
			config_warn(warn, "SLOWDOG_REPEAT_MAX", v,
				    "is not an integer in 1..1000", instead);
		}
	}
}

static void config_load_last_words(struct config *c,
				   const char *(*get)(const char *name),
				   void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_LAST_WORDS");
	int64_t ns;

	if (!v)
		return;
	if (config_bool(v) == 0) /* 0, off, no, false */
		c->last_words_ns = 0;
	else if (config_parse_duration(v, &ns) && ns <= CONFIG_MAX_LAST_WORDS_NS)
		c->last_words_ns = ns;
	else
		config_warn(warn, "SLOWDOG_LAST_WORDS", v,
			    "is not a duration up to 5s or off", "250ms");
}

static void config_load_ignore(struct config *c,
			       const char *(*get)(const char *name),
			       void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_IGNORE");

	if (!v)
		return;
	size_t n = strlen(v);
	if (n >= sizeof(c->ignore)) {
		config_warn(warn, "SLOWDOG_IGNORE", v, "is too long",
			    "no pattern (nothing ignored)");
		return;
	}
	memcpy(c->ignore, v, n + 1);
}

static void config_load_threshold(struct config *c,
				  const char *(*get)(const char *name),
				  void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_THRESHOLD");
	int64_t ns;

	if (!v)
		return;
	if (config_parse_duration(v, &ns)) {
		c->threshold_ns = ns;
		return;
	}
	config_warn(warn, "SLOWDOG_THRESHOLD", v, "is not a valid duration",
		    "10s");
}

/* After SLOWDOG_THRESHOLD: its default is the request threshold. */
static void config_load_loop_threshold(struct config *c,
				       const char *(*get)(const char *name),
				       void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_LOOP_THRESHOLD");
	int64_t ns;

	c->loop_threshold_ns = c->threshold_ns;
	if (!v)
		return;
	if (config_parse_duration(v, &ns)) {
		c->loop_threshold_ns = ns;
		return;
	}
	config_warn(warn, "SLOWDOG_LOOP_THRESHOLD", v, "is not a valid duration",
		    "SLOWDOG_THRESHOLD");
}

static void config_load_log(struct config *c,
			    const char *(*get)(const char *name),
			    void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_LOG");
	size_t n;

	if (!v || strcmp(v, "stderr") == 0)
		return;
	n = strlen(v);
	if (n >= sizeof(c->log_path)) {
		config_warn(warn, "SLOWDOG_LOG", v, "is too long a path",
			    "stderr");
		return;
	}
	memcpy(c->log_path, v, n + 1);
}

static void config_load_signal(struct config *c,
			       const char *(*get)(const char *name),
			       void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_SIGNAL");
	int sig;

	if (!v)
		return;
	if (config_parse_signal(v, &sig)) {
		c->signal = sig;
		return;
	}
	config_warn(warn, "SLOWDOG_SIGNAL", v,
		    "is not a real-time signal (SIGRTMIN+N, SIGRTMAX-N, a "
		    "number, auto or off)",
		    "auto");
}

static void config_load_max_frames(struct config *c,
				   const char *(*get)(const char *name),
				   void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_MAX_FRAMES");
	char instead[16];
	char *end;
	long x;

	if (!v)
		return;
	errno = 0;
	x = strtol(v, &end, 10);
	while (config_space(*end))
		end++;
	/* strtol takes a sign and leading space; only the digits count. */
	if (errno == 0 && end != v && *end == '\0' && x >= 1 &&
	    x <= CONFIG_MAX_MAX_FRAMES && strpbrk(v, "+-") == NULL) {
		c->max_frames = (int)x;
		return;
	}
	snprintf(instead, sizeof(instead), "%d", CONFIG_DEFAULT_MAX_FRAMES);
	config_warn(warn, "SLOWDOG_MAX_FRAMES", v,
		    "is not an integer in 1..4096", instead);
}

static void config_load_stack(struct config *c,
			      const char *(*get)(const char *name),
			      void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_STACK");
	const char *s;
	size_t n;

	if (!v)
		return;
	s = config_trim(v, &n);
	if (config_word(s, n, "split")) {
		c->stack_view = STACK_SPLIT;
		return;
	}
	if (config_word(s, n, "merged")) {
		c->stack_view = STACK_MERGED;
		return;
	}
	config_warn(warn, "SLOWDOG_STACK", v, "is not split or merged",
		    "split");
}

static void config_load_statsd(struct config *c,
			       const char *(*get)(const char *name),
			       void (*warn)(const char *line))
{
	const char *v = config_get(get, "SLOWDOG_STATSD");
	if (v) {
		size_t n = strlen(v);
		if (n >= sizeof(c->statsd) || !strchr(v, ':'))
			config_warn(warn, "SLOWDOG_STATSD", v, "is not HOST:PORT",
				    "no metrics");
		else
			memcpy(c->statsd, v, n + 1);
	}
	v = config_get(get, "SLOWDOG_STATSD_PREFIX");
	if (v) {
		size_t n = strlen(v);
		bool ok = n < sizeof(c->statsd_prefix);
		for (size_t i = 0; ok && i < n; i++)
			ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
			     (v[i] >= '0' && v[i] <= '9') || strchr("._-", v[i]);
		if (ok)
			memcpy(c->statsd_prefix, v, n + 1);
		else
			config_warn(warn, "SLOWDOG_STATSD_PREFIX", v,
				    "is not letters, digits, '.', '_' or '-' (at most 63)",
				    "slowdog");
	}
	v = config_get(get, "SLOWDOG_STATSD_TAGS");
	if (v) {
		int b = config_bool(v);
		c->statsd_tags = b == 1;
		if (b < 0)
			config_warn(warn, "SLOWDOG_STATSD_TAGS", v,
				    "is not a boolean (1/0, yes/no, true/false, on/off)",
				    "0 (names)");
	}
}

void config_load(struct config *c, const char *(*get)(const char *name),
		 void (*warn)(const char *line))
{
	int saved_errno = errno;

	if (!get)
		get = config_getenv;
	c->disabled = false;
	c->threshold_ns = CONFIG_DEFAULT_THRESHOLD_NS;
	c->log_path[0] = '\0';
	c->signal = 0;
	c->max_frames = CONFIG_DEFAULT_MAX_FRAMES;
	c->stack_view = STACK_SPLIT;
	c->format = FORMAT_TEXT;
	c->repeat_ns = 0;
	c->repeat_max = CONFIG_DEFAULT_REPEAT_MAX;
	c->last_words_ns = CONFIG_DEFAULT_LAST_WORDS_NS;
	c->ignore[0] = '\0';
	c->strip_query = false;
	c->debug = false;
	c->statsd[0] = '\0';
	strcpy(c->statsd_prefix, "slowdog");
	c->statsd_tags = false;
	c->headers[0] = '\0';
	c->queue_count = false;

	config_load_disable(c, get, warn);
	config_load_threshold(c, get, warn);
	config_load_loop_threshold(c, get, warn);
	config_load_log(c, get, warn);
	config_load_signal(c, get, warn);
	config_load_max_frames(c, get, warn);
	config_load_stack(c, get, warn);
	config_load_format(c, get, warn);
	config_load_repeat(c, get, warn);
	config_load_ignore(c, get, warn);
	config_load_query(c, get, warn);
	config_load_debug(c, get, warn);
	config_load_statsd(c, get, warn);
	config_load_last_words(c, get, warn);
	config_load_headers(c, get, warn);
	config_load_queue(c, get, warn);
	errno = saved_errno;
}
