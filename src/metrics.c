/* statsd metrics. See metrics.h. */
#include "metrics.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "real.h"
#include "sys.h"

static int sock = -1;
static const struct config *conf;

void metrics_open(const struct config *cfg, void (*warn)(const char *line))
{
	conf = cfg;
	if (!cfg->statsd[0])
		return;
	const char *why = "";
	sock = sys_udp_open(cfg->statsd, &why);
	if (sock < 0) {
		char line[400];
		snprintf(line, sizeof(line),
			 "slowdog: SLOWDOG_STATSD=\"%s\": %s; no metrics", cfg->statsd,
			 why);
		warn(line);
	}
}

/* Metric names allow letters, digits, '_' and '-'; '.' separates parts. */
static void put_part(char *buf, size_t cap, size_t *pos, const char *s, size_t n)
{
	for (size_t i = 0; i < n && *pos + 1 < cap; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_';
		if (c == '/' && *pos > 0 && buf[*pos - 1] == '.')
			continue; /* "//": no empty name part */
		buf[(*pos)++] = ok ? c : c == '/' ? '.' : '_';
	}
	buf[*pos] = '\0';
}

/* The metric name part for a request: "GET.api.users",
 * "label.nightly_import". */
static void metrics_endpoint(char *buf, size_t cap, const struct reqinfo *info,
		      const char *label)
{
	size_t pos = 0;
	buf[0] = '\0';
	if (label) {
		put_part(buf, cap, &pos, "label", 5);
		if (pos + 1 < cap)
			buf[pos++] = '.';
		put_part(buf, cap, &pos, label, strlen(label));
		return;
	}
	if (!info || !info->method[0]) {
		put_part(buf, cap, &pos, "unknown", 7);
		return;
	}
	put_part(buf, cap, &pos, info->method, strlen(info->method));
	const char *t = info->target;
	size_t n = strcspn(t, "?");
	while (n > 0 && t[n - 1] == '/')
		n--; /* "/a/" and "/a" are one endpoint; "/" is the method alone */
	if (n > 100)
		n = 100; /* bound the name whatever the path */
	put_part(buf, cap, &pos, t, n);
}

/* A tag value must not end the tag, the tag list or the line. */
static void tag_value(char *dst, size_t cap, const char *src, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < cap && src[i]; i++) {
		char c = src[i];
		dst[i] = c == '|' || c == '#' || c == ',' || c == ' ' ||
				 (unsigned char)c < 0x20 ? '_' : c;
	}
	dst[i] = '\0';
}

static void send_metric(const char *name, const char *value,
			const struct reqinfo *info, const char *label)
{
	if (sock < 0)
		return;
	char msg[768], ep[160];
	int n;
	if (conf->statsd_tags) {
		/* DogStatsD: the endpoint as tags, the name fixed. */
		char a[128], b[128];
		if (label) {
			tag_value(a, sizeof(a), label, strlen(label));
			n = snprintf(msg, sizeof(msg), "%s.%s:%s|#label:%s",
				     conf->statsd_prefix, name, value, a);
		} else {
			bool known = info && info->method[0];
			tag_value(a, sizeof(a), known ? info->method : "unknown", 32);
			tag_value(b, sizeof(b), known ? info->target : "unknown",
				  known ? strcspn(info->target, "?") : 7);
			n = snprintf(msg, sizeof(msg), "%s.%s:%s|#method:%s,path:%s",
				     conf->statsd_prefix, name, value, a, b);
		}
	} else {
		metrics_endpoint(ep, sizeof(ep), info, label);
		n = snprintf(msg, sizeof(msg), "%s.%s.%s:%s", conf->statsd_prefix, name,
			     ep, value);
	}
	if (n <= 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	/* A full socket buffer drops the metric: statsd is lossy by design. */
	(void)!real_send(sock, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void metrics_died(const struct reqinfo *info)
{
	send_metric("died_requests", "1|c", info, NULL);
}

void metrics_slow(const struct reqinfo *info, const char *label)
{
	send_metric("slow_requests", "1|c", info, label);
}

void metrics_finished(const struct reqinfo *info, const char *label,
		      int64_t total_ns)
{
	char v[32];
	snprintf(v, sizeof(v), "%lld|ms", (long long)(total_ns / NS_PER_MS));
	send_metric("slow_request_duration", v, info, label);
}
