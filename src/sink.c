/* The log. See sink.h. */
#include "sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static int fd = -1;       /* -1: standard error */
static char path_buf[4096];
static dev_t dev;
static ino_t ino;
static bool full_said, err_said;
static unsigned long dropped;

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

void sink_open(const char *path)
{
	if (!path || !*path) {
		fd = -1;
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

void sink_write(const char *buf, size_t len)
{
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

void sink_atfork_child(void)
{
}
