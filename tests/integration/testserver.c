/*
 * sd-testserver: a small threaded HTTP/1.1 server for the integration tests.
 *
 * One thread per connection, keep-alive, Content-Length or chunked
 * responses. It is deliberately naive about EINTR and short sleeps: when a
 * blocking call is cut short it says so in the response body, so that a
 * capture that leaks EINTR into the host changes the response and the
 * harness notices.
 *
 * Usage: sd-testserver PORT
 *
 *   /fast                 200 "ok\n"
 *   /sleep?ms=N           nanosleep N ms
 *   /spin?ms=N            burn CPU for N ms (no system calls)
 *   /recv?ms=N            block in recv() on a socketpair for N ms
 *   /vfork?ms=N           vfork a child that close()s every descriptor
 *                         (its copies, in this process's memory) and
 *                         exits, then nanosleep N ms
 *   /stream?n=K&ms=N      chunked response, K chunks N ms apart
 *   POST /post            respond with the length of the body
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define BODY_MAX 4096

struct conn {
	int fd;
	size_t len;		/* bytes buffered in buf */
	char buf[HEAD_MAX];
};

struct request {
	char method[16];
	char target[2048];
	char path[1024];
	const char *query;	/* points into target, after '?' or "" */
	long long content_length;
	bool keep_alive;
	bool head;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Integer value of query parameter `name`, or `def` when absent or bad. */
static long query_long(const char *query, const char *name, long def)
{
	size_t nlen = strlen(name);
	const char *p = query;

	while (p && *p) {
		if (strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
			char *end;
			long v = strtol(p + nlen + 1, &end, 10);

			if (end == p + nlen + 1 || (*end && *end != '&') ||
			    v < 0 || v > 600000)
				return def;
			return v;
		}
		p = strchr(p, '&');
		if (p)
			p++;
	}
	return def;
}

static bool header_is(const char *line, size_t len, const char *name,
		      const char **value)
{
	size_t nlen = strlen(name);

	if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen))
		return false;
	*value = line + nlen + 1;
	while (*value < line + len && (**value == ' ' || **value == '\t'))
		(*value)++;
	return true;
}

/*
 * Parses the head in c->buf[0..head_len). Returns 0 or -1 for a request we
 * refuse (the connection is then closed).
 */
static int parse_head(const char *buf, size_t head_len, struct request *req)
{
	const char *line_end = memmem(buf, head_len, "\r\n", 2);
	const char *sp1, *sp2, *p, *value;
	bool http10;

	memset(req, 0, sizeof(*req));
	if (!line_end)
		return -1;
	sp1 = memchr(buf, ' ', (size_t)(line_end - buf));
	if (!sp1 || (size_t)(sp1 - buf) >= sizeof(req->method))
		return -1;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1));
	if (!sp2 || (size_t)(sp2 - sp1 - 1) >= sizeof(req->target))
		return -1;
	memcpy(req->method, buf, (size_t)(sp1 - buf));
	memcpy(req->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
	http10 = (size_t)(line_end - sp2 - 1) == 8 &&
		 memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
	req->keep_alive = !http10;
	req->head = strcmp(req->method, "HEAD") == 0;

	p = strchr(req->target, '?');
	if (p) {
		size_t plen = (size_t)(p - req->target);

		if (plen >= sizeof(req->path))
			return -1;
		memcpy(req->path, req->target, plen);
		req->query = p + 1;
	} else {
		if (strlen(req->target) >= sizeof(req->path))
			return -1;
		strcpy(req->path, req->target);
		req->query = "";
	}

	p = line_end + 2;
	while (p < buf + head_len) {
		const char *e = memmem(p, (size_t)(buf + head_len - p), "\r\n", 2);
		size_t len;

		if (!e)
			break;
		len = (size_t)(e - p);
		if (header_is(p, len, "Content-Length", &value)) {
			char *end;

			req->content_length = strtoll(value, &end, 10);
			if (end == value || req->content_length < 0)
				return -1;
		} else if (header_is(p, len, "Connection", &value)) {
			if (!strncasecmp(value, "close", 5))
				req->keep_alive = false;
			else if (!strncasecmp(value, "keep-alive", 10))
				req->keep_alive = true;
		} else if (header_is(p, len, "Transfer-Encoding", &value)) {
			return -1;	/* chunked request bodies: not needed */
		}
		p = e + 2;
	}
	return 0;
}

/* Reads until a full head is buffered; returns its length, 0 on EOF, -1. */
static ssize_t read_head(struct conn *c)
{
	for (;;) {
		char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
		ssize_t r;

		if (end)
			return end + 4 - c->buf;
		if (c->len == sizeof(c->buf))
			return -1;
		r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0 && c->len == 0)
			return 0;
		if (r <= 0)
			return -1;
		c->len += (size_t)r;
	}
}

/* Consumes the head and `body` bytes of body, already buffered or not. */
static int read_body(struct conn *c, size_t head_len, long long body,
		     unsigned long long *sum)
{
	size_t have = c->len - head_len;
	size_t take = (long long)have < body ? have : (size_t)body;
	char tmp[BODY_MAX];

	for (size_t i = 0; i < take; i++)
		*sum = *sum * 31 + (unsigned char)c->buf[head_len + i];
	memmove(c->buf, c->buf + head_len + take, have - take);
	c->len = have - take;
	body -= (long long)take;
	while (body > 0) {
		size_t want = body < BODY_MAX ? (size_t)body : BODY_MAX;
		ssize_t r = recv(c->fd, tmp, want, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		for (ssize_t i = 0; i < r; i++)
			*sum = *sum * 31 + (unsigned char)tmp[i];
		body -= r;
	}
	return 0;
}

static int respond(int fd, const struct request *req, int status,
		   const char *body)
{
	char head[512];
	size_t blen = strlen(body);
	int n;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\n"
		     "Server: sd-testserver\r\n"
		     "Content-Type: text/plain\r\n"
		     "Content-Length: %zu\r\n"
		     "X-Served-By: %d/%d\r\n"
		     "%s"
		     "\r\n",
		     status, status == 200 ? "OK" : "Not Found", blen,
		     (int)getpid(), (int)gettid(),
		     req->keep_alive ? "" : "Connection: close\r\n");
	if (n < 0 || (size_t)n >= sizeof(head))
		return -1;
	if (send_all(fd, head, (size_t)n))
		return -1;
	if (req->head)
		return 0;
	return send_all(fd, body, blen);
}

/* Not restarted on EINTR on purpose: see the comment at the top. */
static void sleep_ms(long ms, char *out, size_t outlen)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	int64_t t0 = mono_ms();
	int rc = nanosleep(&ts, NULL);
	int64_t took = mono_ms() - t0;

	if (rc)
		snprintf(out, outlen, "sleep interrupted after %lld ms: %s\n",
			 (long long)took, strerror(errno));
	else if (took < ms)
		snprintf(out, outlen, "short sleep: %lld ms\n", (long long)took);
	else
		snprintf(out, outlen, "slept %ld ms\n", ms);
}

/* noinline so that the frame shows up by name in native stacks. */
static __attribute__((noinline)) uint64_t spin_for(long ms)
{
	int64_t end = mono_ms() + ms;
	volatile uint64_t x = 1;

	while (mono_ms() < end) {
		for (int i = 0; i < 10000; i++)
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
	}
	return x;
}

/* Blocks inside recv() itself (SO_RCVTIMEO), not in poll. */
static void recv_wait(long ms, char *out, size_t outlen)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	int sv[2];
	char b;
	ssize_t r;
	int64_t t0, took;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		snprintf(out, outlen, "socketpair: %s\n", strerror(errno));
		return;
	}
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	t0 = mono_ms();
	r = recv(sv[0], &b, 1, 0);
	took = mono_ms() - t0;
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && took + 5 >= ms)
		snprintf(out, outlen, "waited %ld ms\n", ms);
	else
		snprintf(out, outlen, "recv returned %zd after %lld ms: %s\n",
			 r, (long long)took, r < 0 ? strerror(errno) : "data");
	close(sv[0]);
	close(sv[1]);
}

/* What Python's subprocess does between vfork and exec, then a sleep: the
 * child's closes must not end this request. */
static void vfork_then_sleep(long ms, char *out, size_t outlen)
{
	pid_t pid = vfork();
	if (pid == 0) {
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		_exit(0);
	}
	int status = -1;
	if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0) {
		snprintf(out, outlen, "vfork child failed: %s\n", strerror(errno));
		return;
	}
	sleep_ms(ms, out, outlen);
}

static int stream(int fd, const struct request *req, long n, long ms)
{
	static const char head[] =
		"HTTP/1.1 200 OK\r\n"
		"Server: sd-testserver\r\n"
		"Content-Type: text/plain\r\n"
		"Transfer-Encoding: chunked\r\n"
		"\r\n";
	static const char head_close[] =
		"HTTP/1.1 200 OK\r\n"
		"Server: sd-testserver\r\n"
		"Content-Type: text/plain\r\n"
		"Transfer-Encoding: chunked\r\n"
		"Connection: close\r\n"
		"\r\n";

	if (req->keep_alive ? send_all(fd, head, sizeof(head) - 1) :
			      send_all(fd, head_close, sizeof(head_close) - 1))
		return -1;
	if (req->head)
		return 0;
	for (long i = 0; i < n; i++) {
		char text[160], frame[192], note[128] = "";
		int len;

		if (i > 0) {
			sleep_ms(ms, note, sizeof(note));
			if (!strncmp(note, "slept", 5))
				note[0] = '\0';
		}
		len = snprintf(text, sizeof(text), "chunk %ld%s%s\n", i,
			       note[0] ? " " : "", note);
		if (len < 0 || (size_t)len >= sizeof(text))
			return -1;
		/* one send per chunk, like WSGI servers do */
		len = snprintf(frame, sizeof(frame), "%x\r\n%s\r\n", len, text);
		if (len < 0 || (size_t)len >= sizeof(frame) ||
		    send_all(fd, frame, (size_t)len))
			return -1;
	}
	return send_all(fd, "0\r\n\r\n", 5);
}

static int handle(int fd, const struct request *req, unsigned long long body_len,
		  unsigned long long sum)
{
	char out[256];
	long ms = query_long(req->query, "ms", 0);

	if (!strcmp(req->path, "/fast"))
		return respond(fd, req, 200, "ok\n");
	if (!strcmp(req->path, "/sleep")) {
		sleep_ms(ms, out, sizeof(out));
		return respond(fd, req, 200, out);
	}
	if (!strcmp(req->path, "/spin")) {
		spin_for(ms);
		snprintf(out, sizeof(out), "spun %ld ms\n", ms);
		return respond(fd, req, 200, out);
	}
	if (!strcmp(req->path, "/recv")) {
		recv_wait(ms, out, sizeof(out));
		return respond(fd, req, 200, out);
	}
	if (!strcmp(req->path, "/vfork")) {
		vfork_then_sleep(ms, out, sizeof(out));
		return respond(fd, req, 200, out);
	}
	if (!strcmp(req->path, "/stream"))
		return stream(fd, req, query_long(req->query, "n", 3), ms);
	if (!strcmp(req->path, "/post")) {
		snprintf(out, sizeof(out), "received %llu bytes sum %016llx\n",
			 body_len, sum);
		return respond(fd, req, 200, out);
	}
	return respond(fd, req, 404, "not found\n");
}

static void *serve(void *arg)
{
	struct conn *c = arg;

	for (;;) {
		struct request req;
		unsigned long long sum = 0;
		ssize_t head_len = read_head(c);

		if (head_len <= 0)
			break;
		if (parse_head(c->buf, (size_t)head_len, &req))
			break;
		if (read_body(c, (size_t)head_len, req.content_length, &sum))
			break;
		if (handle(c->fd, &req, (unsigned long long)req.content_length,
			   sum))
			break;
		if (!req.keep_alive)
			break;
	}
	close(c->fd);
	free(c);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	pthread_attr_t attr;
	char *end;
	long port;
	int one = 1, lfd;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		return 2;
	}
	port = strtol(argv[1], &end, 10);
	if (*end || port < 0 || port > 65535) {
		fprintf(stderr, "%s: bad port %s\n", argv[0], argv[1]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_port = htons((uint16_t)port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(lfd, 128)) {
		perror("bind/listen");
		return 1;
	}

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (;;) {
		struct conn *c;
		pthread_t tid;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EMFILE || errno == ENFILE)
				continue;
			perror("accept4");
			return 1;
		}
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->len = 0;
		if (pthread_create(&tid, &attr, serve, c)) {
			close(fd);
			free(c);
		}
	}
}
