/* Small system helpers. See sys.h. */
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "real.h"

void sys_warn(const char *line)
{
	char buf[4400];
	int n = snprintf(buf, sizeof(buf), "%s\n", line);
	if (n <= 0)
		return;
	if ((size_t)n >= sizeof(buf)) {
		n = sizeof(buf) - 1;
		buf[n - 1] = '\n';
	}
	if (real_write)
		(void)!real_write(2, buf, (size_t)n);
}

void sys_warnf(const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	sys_warn(line);
}

int sys_udp_open(const char *spec, const char **why)
{
	char host[256], *port;
	snprintf(host, sizeof(host), "%s", spec);
	port = strrchr(host, ':');
	if (!port || port == host || !port[1]) {
		*why = "needs HOST:PORT";
		return -1;
	}
	*port++ = '\0';
	char *h = host;
	if (h[0] == '[' && port[-2] == ']') {
		h++;
		port[-2] = '\0';
	}
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *ai;
	if (getaddrinfo(h, port, &hints, &ai) != 0) {
		*why = "cannot resolve it";
		return -1;
	}
	int s = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s >= 0 && real_connect(s, ai->ai_addr, ai->ai_addrlen) != 0) {
		int e = errno;
		real_close(s);
		errno = e;
		s = -1;
	}
	freeaddrinfo(ai);
	if (s < 0)
		*why = strerror(errno);
	return s;
}

size_t sys_read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	size_t have = 0;
	while (have < cap) {
		ssize_t n = real_read(fd, buf + have, cap - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	real_close(fd);
	return have;
}

bool sys_oom_file(char *path, size_t cap)
{
	char cg[1024];
	size_t n = sys_read_small("/proc/self/cgroup", cg, sizeof(cg) - 1);
	cg[n] = '\0';
	/* cgroup v1's memory controller (memory.oom_control), else v2's
	 * unified hierarchy (memory.events); both count "oom_kill N". */
	const char *v1 = strstr(cg, ":memory:/");
	if (v1) {
		v1 += 8;
		int len = (int)strcspn(v1, "\n");
		snprintf(path, cap, "/sys/fs/cgroup/memory%.*s/memory.oom_control",
			 len == 1 ? 0 : len, v1);
		return true;
	}
	const char *v2 = strncmp(cg, "0::/", 4) == 0 ? cg + 3 : strstr(cg, "\n0::/");
	if (!v2)
		return false;
	if (v2[0] == '\n')
		v2 += 4;
	int len = (int)strcspn(v2, "\n");
	snprintf(path, cap, "/sys/fs/cgroup%.*s/memory.events",
		 len == 1 ? 0 : len, v2);
	return true;
}

long sys_oom_kills(const char *path)
{
	char buf[1024];
	if (!path[0])
		return -1;
	size_t n = sys_read_small(path, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	char *k = strstr(buf, "oom_kill ");
	return k ? strtol(k + 9, NULL, 10) : -1;
}
