/* SLOWDOG_* parsing: every variable, good and bad, and the warning lines. */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

/* ---- duration ---- */

Test(config, duration_good)
{
	static const struct {
		const char *s;
		int64_t ns;
	} ok[] = {
		{"500ms", 500000000LL},
		{"2s", 2000000000LL},
		{"1.5s", 1500000000LL},
		{"250us", 250000LL},
		{"1m", 60000000000LL},
		{"0.25", 250000000LL},
		{"10", 10000000000LL},
		{"  3s\t", 3000000000LL},
		{"\n2\n", 2000000000LL},
		{"2 s", 2000000000LL},
		{".5s", 500000000LL},
		{"5.", 5000000000LL},
		{"1h", 3600000000000LL},
		{"1.5m", 90000000000LL},
		{"100ns", 100LL},
		{"1ns", 1LL},
		{"0.000000001", 1LL},
		{"0.0000000019", 1LL}, /* truncated to ns, not rounded */
		{"0.123456789123456789123s", 123456789LL},
		{"007s", 7000000000LL},
		{"8760h", 8760LL * 3600 * 1000000000LL},
		{"31536000", 31536000LL * 1000000000LL},
		{"2.000000000000000000000000000000000000s", 2000000000LL},
	};
	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		int64_t ns = -7;
		cr_assert(config_parse_duration(ok[k].s, &ns), "\"%s\"", ok[k].s);
		cr_assert_eq(ns, ok[k].ns, "\"%s\": %lld", ok[k].s, (long long)ns);
	}
}

Test(config, duration_bad)
{
	static const char *const bad[] = {
		"", " ", "s", "ms", ".", ".s", "2x", "1.2.3", "nan", "inf",
		"-1", "-1s", "+1s", "0", "0s", "0.0", "0.0000000001s", "1e3",
		"1,5s", "2S", "2 s x", "2s2", "2ss", "1sec", "0x10", "10000h",
		"367d", "99999999999999999999999999999999s",
		"18446744073709551617ns", "1 000s", "2\x01s", "1h1m", "\xff",
		"2s\n3s",
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		int64_t ns = -7;
		cr_assert(!config_parse_duration(bad[k], &ns), "\"%s\"", bad[k]);
		cr_assert_eq(ns, -7, "\"%s\" wrote the output", bad[k]);
	}
	int64_t ns;
	cr_assert(!config_parse_duration(NULL, &ns));
}

Test(config, duration_limit)
{
	int64_t ns;

	cr_assert(!config_parse_duration("366d", &ns)); /* no day unit */
	cr_assert(config_parse_duration("8784h", &ns)); /* 366 days */
	cr_assert(!config_parse_duration("8784.001h", &ns));
	cr_assert(config_parse_duration("527040m", &ns));
	cr_assert(!config_parse_duration("527041m", &ns));
}

/* ---- signal ---- */

Test(config, signal_good)
{
	int sig;
	char buf[32];

	static const char *const off[] = {"off", "OFF", "none", "None", "0",
					  " off "};
	for (size_t k = 0; k < sizeof(off) / sizeof(off[0]); k++) {
		sig = 99;
		cr_assert(config_parse_signal(off[k], &sig), "%s", off[k]);
		cr_assert_eq(sig, -1, "%s", off[k]);
	}
	cr_assert(config_parse_signal("auto", &sig));
	cr_assert_eq(sig, 0);

	struct {
		const char *s;
		int want;
	} ok[] = {
		{"SIGRTMIN", SIGRTMIN},
		{"sigrtmin", SIGRTMIN},
		{"RTMIN", SIGRTMIN},
		{"SIGRTMIN+3", SIGRTMIN + 3},
		{"rtmin+3", SIGRTMIN + 3},
		{"SigRtMin+0", SIGRTMIN},
		{"SIGRTMAX", SIGRTMAX},
		{"SIGRTMAX-2", SIGRTMAX - 2},
		{"RTMAX-1", SIGRTMAX - 1},
		{" SIGRTMIN+4 ", SIGRTMIN + 4},
	};
	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		sig = 99;
		cr_assert(config_parse_signal(ok[k].s, &sig), "%s", ok[k].s);
		cr_assert_eq(sig, ok[k].want, "%s", ok[k].s);
	}
	for (int s = SIGRTMIN; s <= SIGRTMAX; s++) {
		snprintf(buf, sizeof(buf), "%d", s);
		cr_assert(config_parse_signal(buf, &sig));
		cr_assert_eq(sig, s);
		snprintf(buf, sizeof(buf), "SIGRTMIN+%d", s - SIGRTMIN);
		cr_assert(config_parse_signal(buf, &sig));
		cr_assert_eq(sig, s);
		snprintf(buf, sizeof(buf), "SIGRTMAX-%d", SIGRTMAX - s);
		cr_assert(config_parse_signal(buf, &sig));
		cr_assert_eq(sig, s);
	}
}

Test(config, signal_bad)
{
	char buf[64];
	int sig = 99;
	static const char *const bad[] = {
		"", " ", "SIGUSR1", "USR2", "10", "12", "1", "-1", "+34",
		"34x", "x34", "SIGRTMIN+", "SIGRTMIN-1", "SIGRTMAX+1",
		"SIGRTMIN+100", "SIGRTMAX-100", "SIG", "SIG34", "RTMIN +1",
		"RTMIN+ 1", "RTMIN+-1", "RTMIN+1x", "SIGRTMINX", "offf",
		"99999999999999999999", "3 4", "SIGSIGRTMIN", "RT", "max",
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		cr_assert(!config_parse_signal(bad[k], &sig), "\"%s\"", bad[k]);
		cr_assert_eq(sig, 99);
	}
	snprintf(buf, sizeof(buf), "%d", SIGRTMIN - 1);
	cr_assert(!config_parse_signal(buf, &sig));
	snprintf(buf, sizeof(buf), "%d", SIGRTMAX + 1);
	cr_assert(!config_parse_signal(buf, &sig));
	snprintf(buf, sizeof(buf), "SIGRTMIN+%d", SIGRTMAX - SIGRTMIN + 1);
	cr_assert(!config_parse_signal(buf, &sig));
	snprintf(buf, sizeof(buf), "SIGRTMAX-%d", SIGRTMAX - SIGRTMIN + 1);
	cr_assert(!config_parse_signal(buf, &sig));
	cr_assert(!config_parse_signal(NULL, &sig));
	cr_assert_eq(sig, 99);
}

/* ---- config_load ---- */

#define MAXENV 16
#define MAXWARN 16

static struct {
	const char *name[MAXENV];
	const char *value[MAXENV];
	int n;
} env;

static char warns[MAXWARN][1024];
static int nwarn;

static const char *fake_get(const char *name)
{
	for (int k = 0; k < env.n; k++)
		if (strcmp(env.name[k], name) == 0)
			return env.value[k];
	return NULL;
}

static void fake_warn(const char *line)
{
	cr_assert_lt(nwarn, MAXWARN);
	cr_assert_lt(strlen(line), sizeof(warns[0]));
	cr_assert_null(strchr(line, '\n'), "newline in a warning");
	strcpy(warns[nwarn++], line);
}

static void setenv_fake(const char *name, const char *value)
{
	env.name[env.n] = name;
	env.value[env.n] = value;
	env.n++;
}

static void load(struct config *c)
{
	nwarn = 0;
	memset(c, 0x5a, sizeof(*c));
	config_load(c, fake_get, fake_warn);
	env.n = 0;
}

static void expect_defaults_except(const struct config *c, const char *which)
{
	if (strcmp(which, "disable"))
		cr_assert_eq(c->disabled, false);
	if (strcmp(which, "threshold"))
		cr_assert_eq(c->threshold_ns, CONFIG_DEFAULT_THRESHOLD_NS);
	if (strcmp(which, "log"))
		cr_assert_str_eq(c->log_path, "");
	if (strcmp(which, "signal"))
		cr_assert_eq(c->signal, 0);
	if (strcmp(which, "frames"))
		cr_assert_eq(c->max_frames, CONFIG_DEFAULT_MAX_FRAMES);
	if (strcmp(which, "stack"))
		cr_assert_eq(c->stack_view, STACK_SPLIT);
	if (strcmp(which, "format"))
		cr_assert_eq(c->format, FORMAT_TEXT);
	if (strcmp(which, "repeat")) {
		cr_assert_eq(c->repeat_ns, 0);
		cr_assert_eq(c->repeat_max, CONFIG_DEFAULT_REPEAT_MAX);
	}
	if (strcmp(which, "ignore"))
		cr_assert_str_eq(c->ignore, "");
	if (strcmp(which, "query"))
		cr_assert_eq(c->strip_query, false);
	if (strcmp(which, "debug"))
		cr_assert_eq(c->debug, false);
}

Test(config, defaults)
{
	struct config c;

	load(&c);
	cr_assert_eq(nwarn, 0);
	expect_defaults_except(&c, "");
	cr_assert_eq(CONFIG_DEFAULT_THRESHOLD_NS, 10000000000LL);
	cr_assert_eq(CONFIG_DEFAULT_MAX_FRAMES, 512);

	/* empty values mean unset */
	static const char *const vars[] = {
		"SLOWDOG_DISABLE", "SLOWDOG_THRESHOLD", "SLOWDOG_LOG",
		"SLOWDOG_SIGNAL", "SLOWDOG_MAX_FRAMES", "SLOWDOG_STACK",
	};
	for (size_t k = 0; k < sizeof(vars) / sizeof(vars[0]); k++)
		setenv_fake(vars[k], "");
	load(&c);
	cr_assert_eq(nwarn, 0);
	expect_defaults_except(&c, "");
}

Test(config, null_warn_and_real_getenv)
{
	struct config c;

	/* NULL get means getenv; NULL warn means silent */
	setenv("SLOWDOG_THRESHOLD", "250ms", 1);
	setenv("SLOWDOG_STACK", "bogus", 1);
	config_load(&c, NULL, NULL);
	cr_assert_eq(c.threshold_ns, 250000000LL);
	cr_assert_eq(c.stack_view, STACK_SPLIT);
	unsetenv("SLOWDOG_THRESHOLD");
	unsetenv("SLOWDOG_STACK");
}

Test(config, errno_preserved)
{
	struct config c;

	setenv_fake("SLOWDOG_MAX_FRAMES", "99999999999999999999999");
	errno = EAGAIN;
	load(&c);
	cr_assert_eq(errno, EAGAIN);
	cr_assert_eq(nwarn, 1);
}

Test(config, disable)
{
	struct config c;
	static const char *const no[] = {"0", "no", "NO", "false", "False",
					 "off", " 0 ", "  "};
	static const char *const yes[] = {"1", "yes", "YES", "true", "on",
					  " 1\n"};

	for (size_t k = 0; k < sizeof(no) / sizeof(no[0]); k++) {
		setenv_fake("SLOWDOG_DISABLE", no[k]);
		load(&c);
		cr_assert_eq(nwarn, 0, "%s", no[k]);
		expect_defaults_except(&c, "");
	}
	for (size_t k = 0; k < sizeof(yes) / sizeof(yes[0]); k++) {
		setenv_fake("SLOWDOG_DISABLE", yes[k]);
		load(&c);
		cr_assert_eq(nwarn, 0, "%s", yes[k]);
		cr_assert(c.disabled, "%s", yes[k]);
		expect_defaults_except(&c, "disable");
	}
	setenv_fake("SLOWDOG_DISABLE", "maybe");
	load(&c);
	cr_assert(c.disabled);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(warns[0],
			 "slowdog: SLOWDOG_DISABLE=\"maybe\" is not a boolean "
			 "(1/0, yes/no, true/false, on/off); using 1 (disabled)");
}

Test(config, loop_threshold)
{
	struct config c;

	load(&c);
	cr_assert_eq(c.loop_threshold_ns, CONFIG_DEFAULT_THRESHOLD_NS);
	setenv_fake("SLOWDOG_THRESHOLD", "2s");
	load(&c);
	cr_assert_eq(c.loop_threshold_ns, 2000000000LL, "follows SLOWDOG_THRESHOLD");
	setenv_fake("SLOWDOG_THRESHOLD", "2s");
	setenv_fake("SLOWDOG_LOOP_THRESHOLD", "300ms");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(c.threshold_ns, 2000000000LL);
	cr_assert_eq(c.loop_threshold_ns, 300000000LL);
	setenv_fake("SLOWDOG_THRESHOLD", "2s");
	setenv_fake("SLOWDOG_LOOP_THRESHOLD", "soon");
	load(&c);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(warns[0], "slowdog: SLOWDOG_LOOP_THRESHOLD=\"soon\" is "
				   "not a valid duration; using SLOWDOG_THRESHOLD");
	cr_assert_eq(c.loop_threshold_ns, 2000000000LL);
}

Test(config, threshold)
{
	struct config c;

	setenv_fake("SLOWDOG_THRESHOLD", "2s");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(c.threshold_ns, 2000000000LL);
	expect_defaults_except(&c, "threshold");

	setenv_fake("SLOWDOG_THRESHOLD", "1.5s");
	load(&c);
	cr_assert_eq(c.threshold_ns, 1500000000LL);

	setenv_fake("SLOWDOG_THRESHOLD", "abc");
	load(&c);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(warns[0], "slowdog: SLOWDOG_THRESHOLD=\"abc\" is not "
				   "a valid duration; using 10s");
	expect_defaults_except(&c, "");

	static const char *const bad[] = {"0", "-5s", "2x", "1.2.3", "nan",
					  "inf", "1e9", "400d", " "};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		char want[256];
		setenv_fake("SLOWDOG_THRESHOLD", bad[k]);
		load(&c);
		cr_assert_eq(nwarn, 1, "%s", bad[k]);
		snprintf(want, sizeof(want),
			 "slowdog: SLOWDOG_THRESHOLD=\"%s\" is not a valid "
			 "duration; using 10s",
			 bad[k]);
		cr_assert_str_eq(warns[0], want);
		cr_assert_eq(c.threshold_ns, CONFIG_DEFAULT_THRESHOLD_NS);
	}
}

Test(config, warning_value_is_escaped_and_bounded)
{
	struct config c;
	char big[300];

	setenv_fake("SLOWDOG_THRESHOLD", "a\nb\"c\\d\x1b[31m\xc3\xa9 e");
	load(&c);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(warns[0],
			 "slowdog: SLOWDOG_THRESHOLD=\"a\\x0ab\\x22c\\x5cd\\x1b[31m"
			 "\\xc3\\xa9 e\" is not a valid duration; using 10s");

	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	setenv_fake("SLOWDOG_STACK", big);
	load(&c);
	cr_assert_eq(nwarn, 1);
	char want[256];
	snprintf(want, sizeof(want),
		 "slowdog: SLOWDOG_STACK=\"%.64s...\" is not split or merged; "
		 "using split",
		 big);
	cr_assert_str_eq(warns[0], want);

	/* 64 control bytes: every one escaped, the line still whole */
	memset(big, '\x01', 100);
	big[100] = '\0';
	setenv_fake("SLOWDOG_STACK", big);
	load(&c);
	cr_assert_eq(nwarn, 1);
	cr_assert(strstr(warns[0], "...\" is not split or merged; using split"));
	for (const char *s = warns[0]; *s; s++)
		cr_assert((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f);
}

Test(config, log)
{
	struct config c;
	static char path[PATH_MAX + 10];

	setenv_fake("SLOWDOG_LOG", "/var/log/slowdog.log");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_str_eq(c.log_path, "/var/log/slowdog.log");
	expect_defaults_except(&c, "log");

	setenv_fake("SLOWDOG_LOG", "stderr");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_str_eq(c.log_path, "");

	setenv_fake("SLOWDOG_LOG", "relative dir/with space.log");
	load(&c);
	cr_assert_str_eq(c.log_path, "relative dir/with space.log");

	/* PATH_MAX - 1 bytes fit, PATH_MAX do not */
	memset(path, 'p', PATH_MAX - 1);
	path[0] = '/';
	path[PATH_MAX - 1] = '\0';
	setenv_fake("SLOWDOG_LOG", path);
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(strlen(c.log_path), PATH_MAX - 1);

	path[PATH_MAX - 1] = 'p';
	path[PATH_MAX] = '\0';
	setenv_fake("SLOWDOG_LOG", path);
	load(&c);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(c.log_path, "");
	char want[256];
	snprintf(want, sizeof(want),
		 "slowdog: SLOWDOG_LOG=\"%.64s...\" is too long a path; using "
		 "stderr",
		 path);
	cr_assert_str_eq(warns[0], want);
}

Test(config, signal)
{
	struct config c;
	char want[256];

	setenv_fake("SLOWDOG_SIGNAL", "SIGRTMIN+5");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(c.signal, SIGRTMIN + 5);
	expect_defaults_except(&c, "signal");

	setenv_fake("SLOWDOG_SIGNAL", "off");
	load(&c);
	cr_assert_eq(c.signal, -1);

	setenv_fake("SLOWDOG_SIGNAL", "0");
	load(&c);
	cr_assert_eq(c.signal, -1);

	snprintf(want, sizeof(want), "%d", SIGRTMAX);
	setenv_fake("SLOWDOG_SIGNAL", want);
	load(&c);
	cr_assert_eq(c.signal, SIGRTMAX);

	setenv_fake("SLOWDOG_SIGNAL", "SIGUSR1");
	load(&c);
	cr_assert_eq(nwarn, 1);
	cr_assert_eq(c.signal, 0);
	cr_assert_str_eq(warns[0],
			 "slowdog: SLOWDOG_SIGNAL=\"SIGUSR1\" is not a real-time "
			 "signal (SIGRTMIN+N, SIGRTMAX-N, a number, auto or off); "
			 "using auto");
}

Test(config, max_frames)
{
	struct config c;
	static const struct {
		const char *s;
		int want;
	} ok[] = {{"1", 1}, {"64", 64}, {"4096", 4096}, {" 100 ", 100},
		  {"0100", 100}};

	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		setenv_fake("SLOWDOG_MAX_FRAMES", ok[k].s);
		load(&c);
		cr_assert_eq(nwarn, 0, "%s", ok[k].s);
		cr_assert_eq(c.max_frames, ok[k].want, "%s", ok[k].s);
		expect_defaults_except(&c, "frames");
	}
	static const char *const bad[] = {
		"0", "-1", "4097", "+5", "5x", "x", "1.5", "0x10", " ",
		"99999999999999999999999", "-99999999999999999999999", "1 2",
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		char want[256];
		setenv_fake("SLOWDOG_MAX_FRAMES", bad[k]);
		load(&c);
		cr_assert_eq(nwarn, 1, "%s", bad[k]);
		cr_assert_eq(c.max_frames, CONFIG_DEFAULT_MAX_FRAMES);
		snprintf(want, sizeof(want),
			 "slowdog: SLOWDOG_MAX_FRAMES=\"%s\" is not an integer in "
			 "1..4096; using 512",
			 bad[k]);
		cr_assert_str_eq(warns[0], want);
	}
}

Test(config, stack)
{
	struct config c;

	setenv_fake("SLOWDOG_STACK", "merged");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(c.stack_view, STACK_MERGED);
	expect_defaults_except(&c, "stack");

	setenv_fake("SLOWDOG_STACK", "Split");
	load(&c);
	cr_assert_eq(c.stack_view, STACK_SPLIT);

	setenv_fake("SLOWDOG_STACK", "MERGED ");
	load(&c);
	cr_assert_eq(c.stack_view, STACK_MERGED);

	setenv_fake("SLOWDOG_STACK", "mixed");
	load(&c);
	cr_assert_eq(c.stack_view, STACK_SPLIT);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(warns[0], "slowdog: SLOWDOG_STACK=\"mixed\" is not "
				   "split or merged; using split");
}

Test(config, every_variable_bad_at_once)
{
	struct config c;

	setenv_fake("SLOWDOG_DISABLE", "perhaps");
	setenv_fake("SLOWDOG_THRESHOLD", "soon");
	setenv_fake("SLOWDOG_SIGNAL", "HUP");
	setenv_fake("SLOWDOG_MAX_FRAMES", "lots");
	setenv_fake("SLOWDOG_STACK", "both");
	load(&c);
	cr_assert_eq(nwarn, 5);
	cr_assert(strstr(warns[0], "SLOWDOG_DISABLE=\"perhaps\""));
	cr_assert(strstr(warns[1], "SLOWDOG_THRESHOLD=\"soon\""));
	cr_assert(strstr(warns[2], "SLOWDOG_SIGNAL=\"HUP\""));
	cr_assert(strstr(warns[3], "SLOWDOG_MAX_FRAMES=\"lots\""));
	cr_assert(strstr(warns[4], "SLOWDOG_STACK=\"both\""));
	for (int k = 0; k < 5; k++)
		cr_assert_eq(strncmp(warns[k], "slowdog: SLOWDOG_", 17), 0);
	cr_assert(c.disabled);
	expect_defaults_except(&c, "disable");
}

Test(config, format)
{
	struct config c;

	setenv_fake("SLOWDOG_FORMAT", "json");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(c.format, FORMAT_JSON);
	expect_defaults_except(&c, "format");

	setenv_fake("SLOWDOG_FORMAT", " Text");
	load(&c);
	cr_assert_eq(c.format, FORMAT_TEXT);
	cr_assert_eq(nwarn, 0);

	setenv_fake("SLOWDOG_FORMAT", "xml");
	load(&c);
	cr_assert_eq(c.format, FORMAT_TEXT);
	cr_assert_eq(nwarn, 1);
	cr_assert_str_eq(warns[0], "slowdog: SLOWDOG_FORMAT=\"xml\" is not "
				   "text or json; using text");
}

Test(config, repeat)
{
	struct config c;

	setenv_fake("SLOWDOG_REPEAT", "5s");
	setenv_fake("SLOWDOG_REPEAT_MAX", "3");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_eq(c.repeat_ns, 5000000000LL);
	cr_assert_eq(c.repeat_max, 3);
	expect_defaults_except(&c, "repeat");

	static const char *const off[] = {"off", "0", "no", "false"};
	for (size_t k = 0; k < sizeof(off) / sizeof(off[0]); k++) {
		setenv_fake("SLOWDOG_REPEAT", off[k]);
		load(&c);
		cr_assert_eq(c.repeat_ns, 0, "%s", off[k]);
		cr_assert_eq(nwarn, 0, "%s", off[k]);
	}

	setenv_fake("SLOWDOG_REPEAT", "often");
	setenv_fake("SLOWDOG_REPEAT_MAX", "0");
	load(&c);
	cr_assert_eq(c.repeat_ns, 0);
	cr_assert_eq(c.repeat_max, CONFIG_DEFAULT_REPEAT_MAX);
	cr_assert_eq(nwarn, 2);
	cr_assert_str_eq(warns[0], "slowdog: SLOWDOG_REPEAT=\"often\" is not a "
				   "valid duration or off; using off");
	cr_assert_str_eq(warns[1], "slowdog: SLOWDOG_REPEAT_MAX=\"0\" is not an "
				   "integer in 1..1000; using 5");

	setenv_fake("SLOWDOG_REPEAT_MAX", "1001");
	load(&c);
	cr_assert_eq(c.repeat_max, CONFIG_DEFAULT_REPEAT_MAX);
	cr_assert_eq(nwarn, 1);
}

Test(config, ignore_query_debug)
{
	struct config c;

	setenv_fake("SLOWDOG_IGNORE", "/healthz,/ws/*");
	setenv_fake("SLOWDOG_QUERY", "strip");
	setenv_fake("SLOWDOG_DEBUG", "1");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_str_eq(c.ignore, "/healthz,/ws/*");
	cr_assert(c.strip_query);
	cr_assert(c.debug);

	static char big[CONFIG_IGNORE_MAX + 10];
	memset(big, 'a', sizeof(big) - 1);
	setenv_fake("SLOWDOG_IGNORE", big);
	setenv_fake("SLOWDOG_QUERY", "hide");
	setenv_fake("SLOWDOG_DEBUG", "loud");
	load(&c);
	cr_assert_str_eq(c.ignore, "");
	cr_assert_eq(c.strip_query, false);
	cr_assert(c.debug);
	cr_assert_eq(nwarn, 3);
	cr_assert(strstr(warns[0], "SLOWDOG_IGNORE=") && strstr(warns[0], "is too long"));
	cr_assert_str_eq(warns[1], "slowdog: SLOWDOG_QUERY=\"hide\" is not keep "
				   "or strip; using keep");
	cr_assert_str_eq(warns[2], "slowdog: SLOWDOG_DEBUG=\"loud\" is not a "
				   "boolean (1/0, yes/no, true/false, on/off); using 1 (on)");
}

Test(config, headers_and_queue)
{
	struct config c;

	load(&c);
	cr_assert_str_eq(c.headers, "");
	cr_assert_eq(c.queue_count, false);
	setenv_fake("SLOWDOG_HEADERS", "X-Tenant, X-B3-SpanId");
	setenv_fake("SLOWDOG_QUEUE", "count");
	load(&c);
	cr_assert_eq(nwarn, 0);
	cr_assert_str_eq(c.headers, "X-Tenant, X-B3-SpanId");
	cr_assert(c.queue_count);
	setenv_fake("SLOWDOG_QUEUE", "SHOW");
	load(&c);
	cr_assert_eq(c.queue_count, false);

	static char big[CONFIG_HEADERS_MAX + 10];
	memset(big, 'a', sizeof(big) - 1);
	setenv_fake("SLOWDOG_HEADERS", big);
	setenv_fake("SLOWDOG_QUEUE", "always\n");
	load(&c);
	cr_assert_str_eq(c.headers, "");
	cr_assert_eq(c.queue_count, false);
	cr_assert_eq(nwarn, 2);
	cr_assert(strstr(warns[0], "SLOWDOG_HEADERS=") && strstr(warns[0], "is too long"),
		  "%s", warns[0]);
	cr_assert_str_eq(warns[1], "slowdog: SLOWDOG_QUEUE=\"always\\x0a\" is not show "
				   "or count; using show");
}
