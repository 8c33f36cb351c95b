/* The log. See sink.h. */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
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
#include "real.h"
#include "sys.h"

enum sink_kind { SINK_FILE, SINK_SYSLOG_LOCAL, SINK_SYSLOG_UDP };

static int kind = SINK_FILE;
static int fd = -1;       /* -1: standard error */
static char path_buf[4096];
static dev_t dev;
static ino_t ino;
static bool full_said, err_said;
static bool stalled;

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
		int g = real_fcntl(f, F_DUPFD_CLOEXEC, 3);
		real_close(f);
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
	if (real_connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		real_close(s);
		errno = e;
		return -1;
	}
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
		sys_warnf("slowdog: cannot reach the local syslog at /dev/log (%s); "
			  "writing reports to standard error", strerror(errno));
		return;
	}
	if (strncmp(path, "syslog://", 9) == 0) {
		const char *why = "";
		fd = sys_udp_open(path + 9, &why);
		if (fd >= 0) {
			kind = SINK_SYSLOG_UDP;
			return;
		}
		sys_warnf("slowdog: SLOWDOG_LOG=\"%s\": %s; writing reports to "
			  "standard error", path, why);
		return;
	}
	snprintf(path_buf, sizeof(path_buf), "%s", path);
	fd = open_log(path_buf);
	if (fd < 0) {
		sys_warnf("slowdog: cannot open SLOWDOG_LOG=\"%s\" (%s); writing "
			  "reports to standard error", path_buf, strerror(errno));
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
	real_close(fd);
	fd = f;
}

static void syslog_write(const char *buf, size_t len, bool report,
			 const char *sd)
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
		h = snprintf(head, sizeof(head), "<%d>1 %s.%03dZ %s slowdog %d %s ",
			     pri, t, (int)((now % NS_PER_SEC) / NS_PER_MS), host,
			     (int)getpid(), report ? "report" : "finished");
	}
	/* RFC 5424: STRUCTURED-DATA, then the message */
	const char *sdv = kind == SINK_SYSLOG_LOCAL ? "" : sd && sd[0] ? sd : "-";
	size_t sdn = strlen(sdv);
	if (h < 0)
		return;
	/* A UDP datagram holds at most 65507 bytes: keep the start. */
	size_t room = 65000 - (size_t)h - sdn - 1;
	if (len > room)
		len = room;
	struct iovec iov[4] = {{head, (size_t)h}, {(void *)sdv, sdn},
			       {(void *)" ", sdn ? 1 : 0}, {(void *)buf, len}};
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = 4};
	ssize_t sent = real_sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	/* A full /dev/log queue (net.unix.max_dgram_qlen, often 10) empties
	 * within moments: wait a little in this thread, never a worker's, but
	 * not again while the receiver stays stuck. */
	if (sent < 0 && errno == EAGAIN && !stalled) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (real_poll(&p, 1, 50) == 1)
			sent = real_sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	stalled = sent < 0 && errno == EAGAIN;
	/* The syslog daemon restarted: its new socket is another one. */
	if (sent < 0 && kind == SINK_SYSLOG_LOCAL &&
	    (errno == ECONNREFUSED || errno == ENOTCONN)) {
		int s = open_syslog_local();
		if (s >= 0) {
			real_dup3(s, fd, O_CLOEXEC);
			real_close(s);
			sent = real_sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
		}
	}
	if (sent < 0) {
		if (!err_said) {
			err_said = true;
			sys_warnf("slowdog: cannot send to syslog (%s); reports are "
				  "dropped while it lasts", strerror(errno));
		}
	}
}

void sink_write(const char *buf, size_t len, bool report)
{
	sink_write_sd(buf, len, report, NULL);
}

void sink_write_sd(const char *buf, size_t len, bool report, const char *sd)
{
	if (kind != SINK_FILE) {
		syslog_write(buf, len, report, sd);
		return;
	}
	reopen_if_rotated();
	int out = fd >= 0 ? fd : 2;
	while (len > 0) {
		ssize_t n = real_write(out, buf, len);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == ENOSPC || errno == EDQUOT)) {
			if (!full_said) {
				full_said = true;
				sys_warnf("slowdog: the log is full (%s); reports are "
					  "dropped until there is room", strerror(errno));
			}
		} else if (!err_said) {
			err_said = true;
			sys_warnf("slowdog: cannot write the log (%s); reports are dropped",
				  n < 0 ? strerror(errno) : "short write");
		}
		return;
	}
}
