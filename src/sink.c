/* The log. See sink.h. */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

enum sink_kind { SINK_FILE, SINK_SYSLOG_LOCAL, SINK_SYSLOG_UDP };

static int kind = SINK_FILE;
static int fd = -1;       /* -1: standard error */
static char path_buf[4096];
static dev_t dev;
static ino_t ino;
static bool full_said, err_said;
static unsigned long dropped;
static bool stalled;

static void say(const char *fmt, const char *a, const char *b)
{
	char line[4400];
	int n = snprintf(line, sizeof(line), fmt, a, b);
	if (n > 0)
		(void)!write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static int open_log(const char *path)
{
	int f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
			 O_NOCTTY, 0600);
	if (f < 0)
		return -1;
	struct stat st;
	if (fstat(f, &st) == 0) {
		dev = st.st_dev;
		ino = st.st_ino;
	}
	/* Keep clear of the descriptors the server uses for stdio. */
	if (f < 3) {
		int g = fcntl(f, F_DUPFD_CLOEXEC, 3);
		close(f);
		f = g;
	}
	return f;
}

/*
 * syslog: one datagram a record, never blocking: a full socket buffer
 * drops the record (counted) rather than holding up the watchdog.
 */
static int open_syslog_local(void)
{
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -1;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", "/dev/log");
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(s);
		return -1;
	}
	return s;
}

/* "syslog://HOST:PORT" (HOST may be [v6]). */
static int open_syslog_udp(const char *spec, const char **why)
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
	if (s >= 0 && connect(s, ai->ai_addr, ai->ai_addrlen) != 0) {
		close(s);
		s = -1;
	}
	freeaddrinfo(ai);
	if (s < 0)
		*why = strerror(errno);
	return s;
}

void sink_open(const char *path)
{
	if (!path || !*path) {
		fd = -1;
		return;
	}
	if (strcmp(path, "syslog") == 0) {
		fd = open_syslog_local();
		if (fd >= 0) {
			kind = SINK_SYSLOG_LOCAL;
			return;
		}
		say("slowdog: cannot reach the local syslog at /dev/log (%s%s); "
		    "writing reports to standard error\n", strerror(errno), "");
		return;
	}
	if (strncmp(path, "syslog://", 9) == 0) {
		const char *why = "";
		fd = open_syslog_udp(path + 9, &why);
		if (fd >= 0) {
			kind = SINK_SYSLOG_UDP;
			return;
		}
		say("slowdog: SLOWDOG_LOG=\"%s\": %s; writing reports to standard "
		    "error\n", path, why);
		return;
	}
	snprintf(path_buf, sizeof(path_buf), "%s", path);
	fd = open_log(path_buf);
	if (fd < 0) {
		say("slowdog: cannot open SLOWDOG_LOG=\"%s\" (%s); writing reports "
		    "to standard error\n", path_buf, strerror(errno));
		path_buf[0] = '\0';
	}
}

/* logrotate renamed or removed the file: the next record goes to a new one. */
static void reopen_if_rotated(void)
{
	if (fd < 0 || !path_buf[0])
		return;
	struct stat st;
	if (stat(path_buf, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
		return;
	int f = open_log(path_buf);
	if (f < 0)
		return; /* keep writing to the old file */
	close(fd);
	fd = f;
}

static void syslog_write(const char *buf, size_t len, bool report)
{
	/* Severity warning (4) for reports, notice (5) for finished lines;
	 * facility user (1). */
	int pri = 8 + (report ? 4 : 5);
	char head[256];
	int h;
	int64_t now = clock_real_ns();
	time_t sec = (time_t)(now / NS_PER_SEC);
	struct tm tm;
	gmtime_r(&sec, &tm);
	while (len > 0 && buf[len - 1] == '\n')
		len--;
	if (kind == SINK_SYSLOG_LOCAL) {
		/* The local socket's traditional form, as syslog(3) sends it:
		 * journald and rsyslog both parse it. */
		char t[32];
		localtime_r(&sec, &tm);
		strftime(t, sizeof(t), "%b %e %H:%M:%S", &tm);
		h = snprintf(head, sizeof(head), "<%d>%s slowdog[%d]: ", pri, t,
			     (int)getpid());
	} else {
		char host[128] = "-";
		gethostname(host, sizeof(host) - 1);
		char t[40];
		strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
		h = snprintf(head, sizeof(head), "<%d>1 %s.%03dZ %s slowdog %d %s - ",
			     pri, t, (int)((now % NS_PER_SEC) / NS_PER_MS), host,
			     (int)getpid(), report ? "report" : "finished");
	}
	if (h < 0)
		return;
	/* A UDP datagram holds at most 65507 bytes: keep the start. */
	size_t room = 65000 - (size_t)h;
	if (len > room)
		len = room;
	struct iovec iov[2] = {{head, (size_t)h}, {(void *)buf, len}};
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t sent = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	/* A full /dev/log queue (net.unix.max_dgram_qlen, often 10) empties
	 * within moments: wait a little in this thread, never a worker's, but
	 * not again while the receiver stays stuck. */
	if (sent < 0 && errno == EAGAIN && !stalled) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, 50) == 1)
			sent = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	stalled = sent < 0 && errno == EAGAIN;
	/* The syslog daemon restarted: its new socket is another one. */
	if (sent < 0 && kind == SINK_SYSLOG_LOCAL &&
	    (errno == ECONNREFUSED || errno == ENOTCONN)) {
		int s = open_syslog_local();
		if (s >= 0) {
			dup3(s, fd, O_CLOEXEC);
			close(s);
			sent = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		}
	}
	if (sent < 0) {
		dropped++;
		if (!err_said) {
			err_said = true;
			say("slowdog: cannot send to syslog (%s%s); reports are "
			    "dropped while it lasts\n", strerror(errno), "");
		}
	}
}

void sink_write(const char *buf, size_t len, bool report)
{
	if (kind != SINK_FILE) {
		syslog_write(buf, len, report);
		return;
	}
	reopen_if_rotated();
	int out = fd >= 0 ? fd : 2;
	while (len > 0) {
		ssize_t n = write(out, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		dropped++;
		if (n < 0 && (errno == ENOSPC || errno == EDQUOT)) {
			if (!full_said) {
				full_said = true;
				say("slowdog: the log is full (%s%s); reports are dropped "
				    "until there is room\n", strerror(errno), "");
			}
		} else if (!err_said) {
			err_said = true;
			say("slowdog: cannot write the log (%s%s); reports are dropped\n",
			    n < 0 ? strerror(errno) : "short write", "");
		}
		return;
	}
}
