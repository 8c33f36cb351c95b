/*
 * Interposition cost: how many nanoseconds slowdog adds to one interposed
 * call. Run by scripts/bench with and without LD_PRELOAD=libslowdog.so.
 *
 *   interpose http|browser|bytes|upload|download|pipe ITERATIONS ROUNDS
 *
 * http: a connection accepted in this process (so slowdog tracks it, and
 *   the first accept has made it read its settings) serves one
 *   request-shaped exchange per iteration: the client writes a GET request,
 *   the server side recv()s it and send()s a complete response (with
 *   Content-Length, so slowdog sees the request start and end), the client
 *   reads it. Two interposed calls per iteration: recv and send on the
 *   accepted socket, each parsing an HTTP head.
 * browser: the same with the head a browser sends to a site it has
 *   cookies for (830 bytes: user agent, accept lists, cookies), too
 *   long to be kept unparsed: slowdog parses it as it is read.
 * bytes: the same on an accepted socket carrying 64 bytes each way that
 *   are not HTTP: slowdog tracks the connection (a request starts at each
 *   read after a write) but parses nothing. The cost of tracking alone.
 * upload: one request with a body of a terabyte (Content-Length) on an
 *   accepted socket, its head read first; then per iteration the client
 *   writes 64 bytes of the body and the server side recv()s them: one
 *   interposed call per iteration, on a tracked connection, within a
 *   request (no request starts or ends, the bytes are body).
 * download: one request answered with a terabyte body (Content-Length),
 *   head sent first; then per iteration the server side send()s 64 bytes
 *   of it and the client reads them: one interposed call per iteration,
 *   within a response.
 * pipe: write() one byte into a pipe and read() it back: two interposed
 *   calls per iteration on an fd slowdog does not track (after one request
 *   on the accepted socket, so that slowdog is fully started).
 *
 * Each round times two blocks of ITERATIONS, in turn: the calls made
 * through their ordinary symbols (slowdog's when it is preloaded), then the
 * same calls made straight into libc (looked up in libc's own handle, so
 * slowdog is bypassed even when preloaded). The client side of the tracked
 * exchange always goes straight to libc: only the server side's calls are
 * measured. One line per round:
 *
 *   round N sym NS_PER_CALL libc NS_PER_CALL
 *
 * The socket is a Unix stream socket: accept() returns it like a TCP one
 * and slowdog treats it the same, but the kernel's part of each call is
 * cheaper and steadier than TCP loopback, so the difference shows better.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char REQUEST[] =
	"GET /api/items?id=42&page=3 HTTP/1.1\r\n"
	"Host: 127.0.0.1:8000\r\n"
	"User-Agent: bench/1.0\r\n"
	"Accept: */*\r\n"
	"\r\n";
static const char BROWSER_REQUEST[] =
	"GET /shop/items?category=garden&page=2&sort=price HTTP/1.1\r\n"
	"Host: www.example.com\r\n"
	"Connection: keep-alive\r\n"
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
	"(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n"
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,"
	"image/avif,image/webp,*/*;q=0.8\r\n"
	"Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
	"Accept-Encoding: gzip, deflate, br\r\n"
	"Referer: https://www.example.com/shop/items?category=garden&page=1\r\n"
	"Cookie: sessionid=8f14e45fceea167a5a36dedd4bea2543; "
	"csrftoken=Zx9Qe1KbT3vYw7LmN2pR5sU8aC4dF6gH0jK3lM9nP1qS4tV7wX2yZ5bE8; "
	"_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; "
	"theme=dark; lang=en; cart=eyJpdGVtcyI6W3siaWQiOjQyLCJxdHkiOjF9XX0\r\n"
	"Sec-Fetch-Dest: document\r\n"
	"Sec-Fetch-Mode: navigate\r\n"
	"Sec-Fetch-Site: same-origin\r\n"
	"Upgrade-Insecure-Requests: 1\r\n"
	"\r\n";
static const char RESPONSE[] =
	"HTTP/1.1 200 OK\r\n"
	"Server: bench\r\n"
	"Content-Type: text/plain\r\n"
	"Content-Length: 14\r\n"
	"\r\n"
	"Hello, World!\n";

/* Lowercase first byte: not an HTTP method, not uwsgi (0): "other". */
static const char BYTES[65] =
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

static const char UPLOAD_HEAD[] =
	"POST /upload HTTP/1.1\r\n"
	"Host: 127.0.0.1:8000\r\n"
	"Content-Length: 1000000000000\r\n"
	"\r\n";
static const char DOWNLOAD_HEAD[] =
	"HTTP/1.1 200 OK\r\n"
	"Content-Type: application/octet-stream\r\n"
	"Content-Length: 1000000000000\r\n"
	"\r\n";

static const char *req_msg = REQUEST, *resp_msg = RESPONSE;
static size_t req_len = sizeof(REQUEST) - 1, resp_len = sizeof(RESPONSE) - 1;

static ssize_t (*libc_recv)(int, void *, size_t, int);
static ssize_t (*libc_send)(int, const void *, size_t, int);
static ssize_t (*libc_read)(int, void *, size_t);
static ssize_t (*libc_write)(int, const void *, size_t);

static void die(const char *what)
{
	fprintf(stderr, "interpose: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void libc_lookup(void)
{
	void *h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
	if (!h)
		die("dlopen libc.so.6");
	libc_recv = (ssize_t (*)(int, void *, size_t, int))dlsym(h, "recv");
	libc_send = (ssize_t (*)(int, const void *, size_t, int))dlsym(h, "send");
	libc_read = (ssize_t (*)(int, void *, size_t))dlsym(h, "read");
	libc_write = (ssize_t (*)(int, const void *, size_t))dlsym(h, "write");
	if (!libc_recv || !libc_send || !libc_read || !libc_write)
		die("dlsym");
}

/* A connected pair: cli (ours, untracked) and srv (returned by accept). */
static void accepted_pair(int *cli, int *srv)
{
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0)
		die("socket");
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	/* abstract name: nothing to clean up */
	snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "sd-bench-%d", (int)getpid());
	socklen_t al = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				   strlen(a.sun_path + 1));
	if (bind(l, (struct sockaddr *)&a, al) < 0 || listen(l, 1) < 0)
		die("bind/listen");
	*cli = socket(AF_UNIX, SOCK_STREAM, 0);
	if (*cli < 0 || connect(*cli, (struct sockaddr *)&a, al) < 0)
		die("connect");
	*srv = accept(l, NULL, NULL);
	if (*srv < 0)
		die("accept");
	close(l);
}

static char buf[4096];

static void must(ssize_t got, size_t want, const char *what)
{
	if (got != (ssize_t)want) {
		fprintf(stderr, "interpose: %s returned %zd, not %zu\n", what, got, want);
		exit(2);
	}
}

/* One request/response through the server side's ordinary symbols. */
static void tracked_sym(int cli, int srv, long n)
{
	for (long i = 0; i < n; i++) {
		must(libc_send(cli, req_msg, req_len, 0), req_len, "send");
		must(recv(srv, buf, sizeof(buf), 0), req_len, "recv");
		must(send(srv, resp_msg, resp_len, 0), resp_len, "send");
		must(libc_recv(cli, buf, sizeof(buf), 0), resp_len, "recv");
	}
}

static void tracked_libc(int cli, int srv, long n)
{
	for (long i = 0; i < n; i++) {
		must(libc_send(cli, req_msg, req_len, 0), req_len, "send");
		must(libc_recv(srv, buf, sizeof(buf), 0), req_len, "recv");
		must(libc_send(srv, resp_msg, resp_len, 0), resp_len, "send");
		must(libc_recv(cli, buf, sizeof(buf), 0), resp_len, "recv");
	}
}

/* 64 body bytes a call from fd w to fd r; the server side's call (the
 * recv of up, the send of down) through snd or rcv as given. */
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);

static void stream(int w, send_fn snd, int r, recv_fn rcv, long n)
{
	for (long i = 0; i < n; i++) {
		must(snd(w, BYTES, 64, 0), 64, "send");
		must(rcv(r, buf, 64, 0), 64, "recv");
	}
}

/* upload: the server side reads; download: it writes */
static void up_sym(int cli, int srv, long n)
{
	stream(cli, libc_send, srv, recv, n);
}

static void up_libc(int cli, int srv, long n)
{
	stream(cli, libc_send, srv, libc_recv, n);
}

static void down_sym(int cli, int srv, long n)
{
	stream(srv, send, cli, libc_recv, n);
}

static void down_libc(int cli, int srv, long n)
{
	stream(srv, libc_send, cli, libc_recv, n);
}

static void pipe_sym(int r, int w, long n)
{
	for (long i = 0; i < n; i++) {
		must(write(w, "x", 1), 1, "write");
		must(read(r, buf, sizeof(buf)), 1, "read");
	}
}

static void pipe_libc(int r, int w, long n)
{
	for (long i = 0; i < n; i++) {
		must(libc_write(w, "x", 1), 1, "write");
		must(libc_read(r, buf, sizeof(buf)), 1, "read");
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc == 4 ? argv[1] : "";
	bool up = strcmp(mode, "upload") == 0, down = strcmp(mode, "download") == 0;
	if (argc != 4 || (strcmp(mode, "http") && strcmp(mode, "browser") &&
			  strcmp(mode, "bytes") && strcmp(mode, "pipe") && !up && !down)) {
		fprintf(stderr, "usage: interpose http|browser|bytes|upload|download|pipe "
				"ITERATIONS ROUNDS\n");
		return 2;
	}
	long iters = atol(argv[2]);
	int rounds = atoi(argv[3]);
	if (iters <= 0 || rounds <= 0) {
		fprintf(stderr, "interpose: bad ITERATIONS or ROUNDS\n");
		return 2;
	}
	libc_lookup();
	bool tracked = strcmp(mode, "pipe") != 0;
	if (strcmp(mode, "browser") == 0) {
		req_msg = BROWSER_REQUEST;
		req_len = sizeof(BROWSER_REQUEST) - 1;
	}
	if (strcmp(mode, "bytes") == 0) {
		req_msg = resp_msg = BYTES;
		req_len = resp_len = sizeof(BYTES) - 1;
	}
	int a, b;
	/* The accept happens in both modes: slowdog reads its settings at the
	 * first accept, and the pipe mode is measured with slowdog active. */
	accepted_pair(&a, &b);
	if (!tracked) {
		/* One request on the accepted socket first, as a server would
		 * have served: with slowdog, its watchdog thread now runs. */
		tracked_sym(a, b, 1);
		int p[2];
		if (pipe(p) < 0)
			die("pipe");
		a = p[0];
		b = p[1];
	}
	void (*sym)(int, int, long) = tracked ? tracked_sym : pipe_sym;
	void (*lib)(int, int, long) = tracked ? tracked_libc : pipe_libc;
	int calls = 2; /* measured calls per iteration */
	if (up || down) {
		/* The request (and for down its response) begins, through the
		 * ordinary symbols: slowdog sees it start. */
		const char *head = up ? UPLOAD_HEAD : REQUEST;
		size_t hn = strlen(head);
		must(libc_send(a, head, hn, 0), hn, "send");
		must(recv(b, buf, sizeof(buf), 0), hn, "recv");
		if (down) {
			must(send(b, DOWNLOAD_HEAD, sizeof(DOWNLOAD_HEAD) - 1, 0),
			     sizeof(DOWNLOAD_HEAD) - 1, "send");
			must(libc_recv(a, buf, sizeof(buf), 0), sizeof(DOWNLOAD_HEAD) - 1,
			     "recv");
		}
		sym = up ? up_sym : down_sym;
		lib = up ? up_libc : down_libc;
		calls = 1;
	}
	/* Warm up both paths (caches, the watchdog's start, page faults). */
	sym(a, b, iters / 10 + 1);
	lib(a, b, iters / 10 + 1);
	for (int r = 0; r < rounds; r++) {
		int64_t t0 = now_ns();
		sym(a, b, iters);
		int64_t t1 = now_ns();
		lib(a, b, iters);
		int64_t t2 = now_ns();
		printf("round %d sym %.2f libc %.2f\n", r,
		       (double)(t1 - t0) / (double)iters / calls,
		       (double)(t2 - t1) / (double)iters / calls);
		fflush(stdout);
	}
	return 0;
}
