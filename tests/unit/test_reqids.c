/* The request's ids: the header table, SLOWDOG_HEADERS, traceparent,
 * the proxies' stamps, the queue's verdict. */
#include <criterion/criterion.h>
#include <string.h>

#include "reqids.h"

#define S(lit) lit, sizeof(lit) - 1

Test(reqids, builtin_table_is_consistent)
{
	uint32_t letters = 0;
	uint64_t lengths = 0;
	for (int s = 0; s < REQID_BUILTIN; s++) {
		const struct reqid_name *v = &reqid_names.v[s];
		cr_assert_eq(strlen(v->http), v->len);
		cr_assert_eq(strlen(v->uwsgi), 5u + v->len);
		letters |= 1u << (v->http[0] - 'a');
		lengths |= 1ull << v->len;
		cr_assert(reqid_names.by_len[v->len] >> s & 1);
		cr_assert(reqid_names.by_letter[v->http[0] - 'a'] >> v->len & 1);
		cr_assert_eq(reqid_slot_http(v->http, v->len), s);
		char up[64];
		for (size_t i = 0; i <= v->len; i++)
			up[i] = (char)(v->http[i] >= 'a' && v->http[i] <= 'z'
				       ? v->http[i] - 32 : v->http[i]);
		cr_assert_eq(reqid_slot_http(up, v->len), s);
	}
	cr_assert_eq(reqid_names.letters, letters);
	cr_assert_eq(reqid_names.lengths, lengths);
	cr_assert_eq(reqid_slot_http(S("x-request-idx")), -1);
	cr_assert_eq(reqid_slot_http(S("host")), -1);
}

static char warned[4096];
static void warn(const char *line)
{
	strncat(warned, line, sizeof(warned) - strlen(warned) - 2);
	strcat(warned, "\n");
}

Test(reqids, setup_custom_names)
{
	int n = reqids_setup(" X-Foo ,x-request-id,, bad name,Host,"
			     "this-name-is-far-too-long-for-a-header-x,"
			     "\x01" "ctl, 9x, A-1,a-2,a-3,a-4,a-5,a-6,a-7,a-8", warn);
	cr_assert_eq(n, 8, "%d added; %s", n, warned);
	cr_assert_eq(reqid_slot_http(S("X-FOO")), REQID_BUILTIN);
	cr_assert_eq(reqid_slot_http(S("a-1")), REQID_BUILTIN + 1);
	cr_assert_eq(reqid_slot_http(S("a-8")), -1);
	cr_assert_str_eq(reqid_name(REQID_BUILTIN), "x-foo");
	cr_assert_eq(reqid_slot_uwsgi_custom(S("HTTP_X_FOO")), REQID_BUILTIN);
	cr_assert_eq(reqid_slot_uwsgi_custom(S("HTTP_X_REQUEST_ID")), -1);
	cr_assert(reqid_may_start('X') && reqid_may_start('a') && !reqid_may_start('h'));
	cr_assert(strstr(warned, "\"bad\\x20name\" is not a header name"), "%s", warned);
	cr_assert(strstr(warned, "\"Host\" is read for other ends"), "%s", warned);
	cr_assert(strstr(warned, "longer than 32 bytes"), "%s", warned);
	cr_assert(strstr(warned, "\"\\x01ctl\" is not a header name"), "%s", warned);
	cr_assert(strstr(warned, "\"9x\" does not start with a letter"), "%s", warned);
	cr_assert(strstr(warned, "\"a-8\" is one name too many"), "%s", warned);
	cr_assert(!strchr(warned, '\x01'));
}

Test(reqids, traceparent)
{
	struct reqid_trace t;
	cr_assert(reqid_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &t));
	cr_assert_str_eq(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
	cr_assert_str_eq(t.span_id, "00f067aa0ba902b7");
	cr_assert_eq(t.flags, 1);
	cr_assert(reqid_traceparent(S(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r"), &t));
	/* a later version may carry more */
	cr_assert(reqid_traceparent(S("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"), &t));
	cr_assert(!reqid_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"), &t));
	cr_assert(!reqid_traceparent(S("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), &t));
	cr_assert(!reqid_traceparent(S("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), &t));
	cr_assert(!reqid_traceparent(S("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), &t));
	cr_assert(!reqid_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), &t));
	cr_assert(!reqid_traceparent(S("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"), &t));
	cr_assert(!reqid_traceparent(S("junk"), &t));
	cr_assert(!reqid_traceparent(S(""), &t));
}

static int64_t stamp(const char *v)
{
	int64_t ns = -1;
	return reqid_stamp(v, strlen(v), &ns) ? ns : -1;
}

Test(reqids, stamp_forms)
{
	/* nginx "t=${msec}" */
	cr_assert_eq(stamp("t=1700000000.123"), 1700000000123000000LL);
	/* Heroku: milliseconds, no t= */
	cr_assert_eq(stamp("1700000000123"), 1700000000123000000LL);
	/* HAProxy t=%Ts%ms: milliseconds */
	cr_assert_eq(stamp("t=1700000000123"), 1700000000123000000LL);
	/* Apache %t, New Relic: microseconds */
	cr_assert_eq(stamp("t=1700000000123456"), 1700000000123456000LL);
	cr_assert_eq(stamp("t=1700000000123456 D=42"), 1700000000123456000LL);
	/* seconds */
	cr_assert_eq(stamp("t=1700000000"), 1700000000000000000LL);
	cr_assert_eq(stamp(" 1700000000.5\r"), 1700000000500000000LL);
	/* nanoseconds */
	cr_assert_eq(stamp("1700000000123456789"), 1700000000123456789LL);
	cr_assert_eq(stamp("0"), 0);
	cr_assert_eq(stamp(""), -1);
	cr_assert_eq(stamp("t="), -1);
	cr_assert_eq(stamp("t=abc"), -1);
	cr_assert_eq(stamp("1700000000."), -1);
	cr_assert_eq(stamp("-5"), -1);
	cr_assert_eq(stamp("12x"), -1);
	cr_assert_eq(stamp("99999999999999999999"), -1);
	cr_assert_eq(stamp("999999999999999999999999"), -1);
}

Test(reqids, queue_verdicts)
{
	int64_t read = 1700000000LL * 1000000000LL, q;
	cr_assert_eq(reqid_queue(read - 250000000, read, &q), REQID_QUEUE_OK);
	cr_assert_eq(q, 250000000);
	cr_assert_eq(reqid_queue(read + 5000000, read, &q), REQID_QUEUE_OK);
	cr_assert_eq(q, 0);
	cr_assert_eq(reqid_queue(read + 3000000000LL, read, &q), REQID_QUEUE_FUTURE);
	cr_assert_eq(q, 3000000000LL);
	cr_assert_eq(reqid_queue(0, read, &q), REQID_QUEUE_OLD);
	cr_assert_eq(reqid_queue(INT64_MAX, read, &q), REQID_QUEUE_FUTURE);
	cr_assert_eq(reqid_queue(read - REQID_QUEUE_MAX_NS, read, &q), REQID_QUEUE_OK);
	cr_assert_eq(reqid_queue(read - REQID_QUEUE_MAX_NS - 1, read, &q), REQID_QUEUE_OLD);
}
