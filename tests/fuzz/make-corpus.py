#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

    python3 tests/fuzz/make-corpus.py

The seeds are the byte streams the servers of research/servers.md really
exchange (gunicorn sync and gthread, uWSGI http and uwsgi protocol behind
nginx or its router, wsgiref, ThreadingHTTPServer, Django runserver) plus
the odd inputs the unit tests use. The ELF seeds are small system files and
a tiny object built here with cc. Re-running it rewrites the same files;
files added by hand (or minimized from a run) are left alone.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


CRLF = "\r\n"


def head(lines):
    return CRLF.join(lines) + CRLF + CRLF


# ---- requests --------------------------------------------------------------

CLIENT = ["Host: 127.0.0.1:8000", "User-Agent: client.py", "Accept: */*"]

REQUESTS = {
    "get": head(["GET /slow?tag=A HTTP/1.1"] + CLIENT + ["Connection: close"]),
    "keepalive2": head(["GET /fast?tag=B1 HTTP/1.1"] + CLIENT)
    + head(["GET /fast?tag=B2 HTTP/1.1"] + CLIENT),
    "pipelined": head(["GET /slow?tag=G1 HTTP/1.1"] + CLIENT)
    + head(["GET /slow?tag=G2 HTTP/1.1"] + CLIENT),
    "post_100k_head": head(["POST /upload?tag=D HTTP/1.1"] + CLIENT
                           + ["Content-Type: application/octet-stream",
                              "Content-Length: 100000"]) + "x" * 200,
    "post_small_then_get": head(["POST /p HTTP/1.1", "Host: a",
                                 "Content-Length: 5"]) + "hello"
    + head(["GET /next HTTP/1.1", "Host: a"]),
    "head": head(["HEAD /slow?tag=F HTTP/1.1"] + CLIENT),
    "http10": head(["GET /old HTTP/1.0", "Host: proxied.example",
                    "Connection: close"]),
    "nginx_proxy": head(["GET /api/items?page=2 HTTP/1.0",
                         "Host: backend", "X-Real-IP: 10.0.0.7",
                         "X-Forwarded-For: 10.0.0.7", "Connection: close",
                         "user-agent: Mozilla/5.0", "accept-encoding: gzip"]),
    "chunked_post": head(["POST /c HTTP/1.1", "Host: h",
                          "Transfer-Encoding: gzip, chunked"])
    + "5\r\nhello\r\n0\r\n\r\n",
    "options_star": head(["OPTIONS * HTTP/1.1", "Host: h"]),
    "connect": head(["CONNECT example.com:443 HTTP/1.1",
                     "Host: example.com:443"]),
    "absolute": head(["GET http://example.com/x?y=1 HTTP/1.1",
                      "Host: example.com"]),
    "idle_crlf": "\r\n\r\n" + head(["GET / HTTP/1.1", "Host: h"]),
    "obs_fold": head(["GET / HTTP/1.1", "X-Long: a", " folded", "Host: h"]),
    "host_spaces": head(["GET / HTTP/1.1", "Host: \t spaced.example \t "]),
    "two_lengths": head(["POST / HTTP/1.1", "Content-Length: 3",
                         "Content-Length: 4"]) + "abcd",
    "bad_length": head(["POST / HTTP/1.1", "Content-Length: 1x"]) + "zz",
    "lf_only": "GET /lf HTTP/1.1\nHost: lf\n\nGET /lf2 HTTP/1.1\n\n",
    "injection": "GET /a\x1b[2J\rX-Log:\x07evil HTTP/1.1\r\n"
    "Host: ev\x1b]0;pwn\x07il\r\n\r\n",
    "long_target": "GET /" + "a" * 1500 + "%00\\" + " HTTP/1.1\r\nHost: h\r\n\r\n",
    "big_header": head(["GET /big HTTP/1.1", "Host: h",
                        "Cookie: " + "c" * 3000]),
    "django_runserver": head(["GET /admin/login/?next=/admin/ HTTP/1.1",
                              "Host: localhost:8000",
                              "Accept-Language: en-US,en;q=0.5",
                              "Cookie: csrftoken=abc"]),
    "tls_hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xde\xad",
    "lowercase": "hello there\n",
}

for name, data in REQUESTS.items():
    put("http_req", name, data)

# ---- responses ------------------------------------------------------------

DATE = "Date: Sat, 22 Nov 2025 02:42:00 GMT"
RESPONSES = {
    "gunicorn_close": head(["HTTP/1.1 200 OK", "Server: gunicorn", DATE,
                            "Connection: close", "Content-Type: text/plain",
                            "Content-Length: 5"]) + "hello",
    "gunicorn_stream": head(["HTTP/1.1 200 OK", "Server: gunicorn", DATE,
                             "Connection: close",
                             "Transfer-Encoding: chunked"])
    + "".join("6\r\nchunk%d\r\n" % i for i in range(5)) + "0\r\n\r\n",
    "gthread_keepalive2": head(["HTTP/1.1 200 OK", "Server: gunicorn", DATE,
                                "Connection: keep-alive",
                                "Content-Length: 3"]) + "ok\n"
    + head(["HTTP/1.1 200 OK", "Server: gunicorn", DATE,
            "Content-Length: 3"]) + "ok\n",
    "uwsgi_stream": head(["HTTP/1.1 200 OK", "Content-Type: text/plain"])
    + "chunk0chunk1chunk2",
    "uwsgi_head": head(["HTTP/1.1 200 OK", "Content-Type: text/plain",
                        "Content-Length: 1000000"]),
    "wsgiref": head(["HTTP/1.0 200 OK", DATE,
                     "Server: WSGIServer/0.2 CPython/3.11.2",
                     "Content-Type: text/plain", "Content-Length: 3"]) + "ok\n",
    "continue_then_200": "HTTP/1.1 100 Continue\r\n\r\n"
    + head(["HTTP/1.1 200 OK", "Content-Length: 2"]) + "ok",
    "no_content": head(["HTTP/1.1 204 No Content", DATE]),
    "not_modified": head(["HTTP/1.1 304 Not Modified", 'ETag: "x"',
                          "Content-Length: 99"]),
    "switching": head(["HTTP/1.1 101 Switching Protocols",
                       "Upgrade: websocket", "Connection: Upgrade"])
    + "\x81\x05hello",
    "chunked_trailers": head(["HTTP/1.1 200 OK",
                              "Transfer-Encoding: chunked"])
    + "a;name=value\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "te_not_chunked": head(["HTTP/1.1 200 OK", "Transfer-Encoding: gzip"])
    + "zzz",
    "bad_length": head(["HTTP/1.1 200 OK", "Content-Length: 5",
                        "Content-Length: 6"]) + "hello!",
    "lf_only": "HTTP/1.1 200 OK\nContent-Length: 2\n\nokHTTP/1.1 404 Not Found\n"
    "Content-Length: 0\n\n",
    "file_wrapper_head": head(["HTTP/1.1 200 OK", "Server: gunicorn",
                               "Content-Length: 10000"]),
    "django_500": head(["HTTP/1.1 500 Internal Server Error",
                        "Content-Type: text/html", "X-Frame-Options: DENY",
                        "Content-Length: 145", "Vary: Cookie"])
    + "<!doctype html>" + "x" * 130,
    "not_http": "\x15\x03\x03\x00\x02\x02\x28",
}

for name, data in RESPONSES.items():
    put("http_resp", name, data)

# ---- uwsgi ---------------------------------------------------------------


def uwsgi_packet(pairs, body=b""):
    block = b""
    for k, v in pairs:
        k = k.encode() if isinstance(k, str) else k
        v = v.encode() if isinstance(v, str) else v
        block += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return b"\0" + struct.pack("<H", len(block)) + b"\0" + block + body


NGINX = [  # nginx 1.22 uwsgi_params order, then the request headers
    ("QUERY_STRING", "tag=A"), ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
    ("REQUEST_URI", "/slow?tag=A"), ("PATH_INFO", "/slow"),
    ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
    ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"),
    ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "51234"),
    ("SERVER_PORT", "8080"), ("SERVER_NAME", "localhost"),
    ("HTTP_HOST", "127.0.0.1:8080"), ("HTTP_USER_AGENT", "client.py"),
    ("HTTP_ACCEPT", "*/*"),
]
ROUTER = [  # uWSGI --http router order
    ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_METHOD", "POST"),
    ("PATH_INFO", "/upload"), ("REQUEST_URI", "/upload?tag=D"),
    ("QUERY_STRING", "tag=D"), ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "9090"), ("UWSGI_ROUTER", "http"),
    ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "40000"),
    ("HTTP_HOST", "localhost:9090"), ("CONTENT_LENGTH", "100000"),
]
put("uwsgi", "nginx_get", uwsgi_packet(NGINX))
put("uwsgi", "router_post", uwsgi_packet(ROUTER, b"x" * 100))
put("uwsgi", "head", uwsgi_packet([("REQUEST_METHOD", "HEAD"),
                                   ("REQUEST_URI", "/h")]))
put("uwsgi", "path_and_query", uwsgi_packet([
    ("PATH_INFO", "/p"), ("QUERY_STRING", "a=1&b=\x1b"),
    ("REQUEST_METHOD", "GET")]))
put("uwsgi", "injection", uwsgi_packet([
    ("REQUEST_METHOD", "GET\0"), ("REQUEST_URI", "/a\r\nX-Injected: 1\x1b[2J"),
    ("HTTP_HOST", "h\nx")]))
put("uwsgi", "empty", b"\0\0\0\0")
put("uwsgi", "odd_keys", uwsgi_packet([("", ""), ("REQUEST_URI", ""),
                                       ("REQUEST_URI", "/second"),
                                       ("X" * 40, "long key")]))
# the text form (first byte not 0): KEY=VALUE lines, empty line, body
put("uwsgi", "text_nginx", b"\x01" + "\n".join(
    "%s=%s" % kv for kv in NGINX).encode() + b"\n\nbody")
put("uwsgi", "text_path_query", b"\x01PATH_INFO=/x\nQUERY_STRING=q=1\n"
    b"REQUEST_METHOD=HEAD\nHTTP_HOST=host\n")
put("uwsgi", "text_broken_size", b"\x85REQUEST_URI=/y\nREQUEST_METHOD=GET\n")

# ---- escape: two bytes of capacity, then the bytes --------------------------

for name, cap, s in [
    ("target", 512, b"/slow?tag=A&x=%20"),
    ("controls", 32, b"a\x1b[2J\r\n\\\x00\xff b"),
    ("cut_escape", 16, b"abcdefghijk\x01\x02\x03"),
    ("tiny", 3, b"\x01x"),
    ("host", 128, b"ev\x1b]0;pwn\x07il" * 8),
]:
    put("escape", name, struct.pack("<H", cap) + s)

# ---- config: NUL-separated values, in fuzz_config.c's order ----------------
# THRESHOLD LOG SIGNAL MAX_FRAMES STACK FORMAT REPEAT REPEAT_MAX IGNORE QUERY
# DEBUG DISABLE

CONFIGS = {
    "defaults": ["10s"],
    "all_good": ["500ms", "/var/log/slowdog.log", "SIGRTMIN+3", "64",
                 "merged", "json", "2s", "3", "/health*,/static/*", "strip",
                 "1", "0"],
    "odd": [" 1.5 s ", "stderr", "rtmax-2", "+12", "SPLIT", "Text", "off",
            "0", "", "keep", "yes", "maybe"],
    "bad": ["abc", "x" * 5000, "SIGUSR1", "99999", "both", "xml", "-1s",
            "1001", "*" * 2000, "drop", "2", "on"],
    "numbers": ["0.000000001h", "", "34", "4096", "", "", "1e3", " 5 ", "",
                "", "off", "no"],
}
for name, vals in CONFIGS.items():
    put("config", name, "\0".join(vals))

# ---- conn: programs (see fuzz_conn.c) -------------------------------------

KIND_BYTE = {  # first index in kind_of[] for each op
    "accept": 0, "read": 2, "read_none": 6, "readv": 8, "write": 9,
    "writev": 13, "sendfile": 15, "write_err": 16, "poll_in": 17,
    "epoll_ctl": 18, "epoll_wait": 20, "shutdown": 21, "close": 22,
    "close_range": 24, "dup2": 25, "dupfd": 26, "begin": 27, "end": 28,
    "reported": 29,
}
# canned_in / canned_out indices in fuzz_conn.c
IN_GET, IN_PIPE2, IN_POST3, IN_POST100, IN_CHUNKED, IN_HEAD, IN_HTTP10, \
    IN_PART1, IN_PART2, IN_CRLF, IN_TLS, IN_UWSGI, IN_UWSGI2, IN_INJECT, \
    IN_GARBAGE, IN_DIGITS = range(16)
OUT_FULL5, OUT_HEAD5, OUT_HELLO, OUT_100, OUT_204, OUT_304, OUT_CHUNKED, \
    OUT_CHUNK, OUT_LAST, OUT_HTTP10, OUT_HEAD10000, OUT_101, OUT_TWO, \
    OUT_ALERT, OUT_JUNK = range(15)


def op(kind, thread=0, fd=0, fd2=0, arg=0, raw=None):
    """fd, fd2: index into fds[] = 1000 1001 1002 1003 255 256 1004 7."""
    b = bytes([KIND_BYTE[kind], (thread & 3) | (fd & 7) << 2 | (fd2 & 7) << 5])
    if raw is not None:
        assert len(raw) < 128
        return b + bytes([len(raw)]) + raw
    return b + bytes([arg & 0xff])


def canned(i):
    return 0x80 | i


M, P1, P2 = 0, 1, 2
PROGRAMS = {
    # gunicorn sync: accept, recv, send head, send body, close
    "gunicorn_sync": [op("accept", M, 0), op("read", M, 0, arg=canned(IN_GET)),
                      op("write", M, 0, arg=canned(OUT_HEAD5)),
                      op("write", M, 0, arg=canned(OUT_HELLO)),
                      op("close", M, 0)],
    # gthread: M accepts, P1 serves and parks with epoll_ctl, P2 serves
    # the keep-alive second request, M closes at the timeout
    "gthread_keepalive": [
        op("epoll_wait", M), op("accept", M, 1),
        op("read", P1, 1, arg=canned(IN_GET)),
        op("write", P1, 1, arg=canned(OUT_FULL5)),
        op("epoll_ctl", P1, 1, arg=0x00),  # ADD EPOLLIN
        op("epoll_wait", M), op("epoll_ctl", M, 1, arg=0x02),  # DEL
        op("read", P2, 1, arg=canned(IN_HEAD)),
        op("write", P2, 1, arg=canned(OUT_HEAD5)),
        op("epoll_ctl", P2, 1, arg=0x00), op("close", M, 1)],
    # uWSGI http11: writev, poll, read of the next request
    "uwsgi_http11": [
        op("accept", M, 2), op("read", M, 2, arg=canned(IN_PART1)),
        op("read_none", M, 2), op("poll_in", M, 2),
        op("read", M, 2, arg=canned(IN_PART2)), op("read", M, 2, arg=canned(IN_CRLF)),
        op("writev", M, 2, arg=canned(OUT_FULL5)), op("poll_in", M, 2),
        op("read", M, 2, arg=canned(IN_GET)),
        op("write", M, 2, arg=canned(OUT_FULL5)), op("read_none", M, 2),
        op("close", M, 2)],
    # uwsgi protocol behind nginx, file_wrapper
    "uwsgi_sendfile": [
        op("accept", M, 3), op("read", M, 3, arg=canned(IN_UWSGI)),
        op("write", M, 3, arg=canned(OUT_HEAD10000)),
        op("sendfile", M, 3, arg=0x80 | 12), op("sendfile", M, 3, arg=0x80 | 12),
        op("sendfile", M, 3, arg=100), op("close", M, 3)],
    # pipelined, answered without a read in between
    "pipelined": [
        op("accept", M, 0), op("read", P1, 0, arg=canned(IN_PIPE2)),
        op("write", P1, 0, arg=canned(OUT_FULL5)),
        op("write", P1, 0, arg=canned(OUT_FULL5)), op("read_none", P1, 0),
        op("shutdown", P1, 0), op("close", P1, 0)],
    # chunked stream, 100-continue POST, client gone (EPIPE)
    "stream_epipe": [
        op("accept", M, 4), op("read", M, 4, arg=canned(IN_POST100)),
        op("write", M, 4, arg=canned(OUT_100)),
        op("read", M, 4, raw=b"x" * 100),
        op("write", M, 4, arg=canned(OUT_CHUNKED)),
        op("write", M, 4, arg=canned(OUT_CHUNK)),
        op("write_err", M, 4, arg=0), op("close", M, 4)],
    # dup2 and F_DUPFD over tracked fds, close_range across chunks
    "descriptors": [
        op("accept", M, 0), op("accept", M, 5), op("accept", M, 4),
        op("read", P1, 0, arg=canned(IN_GET)),
        op("dup2", P2, 5, 0), op("read", P1, 0, arg=canned(IN_HTTP10)),
        op("dupfd", P1, 0, 6), op("dup2", P2, 7, 0),
        op("read", P2, 4, arg=canned(IN_GET)),
        op("close_range", M, 4, 5, arg=1)],
    # an event loop (mux), labels, a reported request that ends
    "mux_and_labels": [
        op("accept", M, 0), op("accept", M, 1),
        op("epoll_ctl", M, 0, arg=0x00), op("epoll_ctl", M, 1, arg=0x00),
        op("read", M, 0, arg=canned(IN_GET)), op("epoll_wait", M),
        op("read", M, 1, arg=canned(IN_GET)),
        op("begin", P1, raw=b"job \n\x1b[1m 7"), op("reported", P1),
        op("end", P1), op("read", P2, 1, arg=canned(IN_GET)),
        op("reported", P2), op("write", P2, 1, arg=canned(OUT_FULL5)),
        op("close", M, 0), op("close", M, 1)],
    # bytes that are no request at all
    "garbage": [
        op("accept", M, 0), op("read", M, 0, arg=canned(IN_TLS)),
        op("write", M, 0, arg=canned(OUT_ALERT)),
        op("read", M, 0, raw=b"\x00\xff\xff\x07junk"),
        op("readv", M, 0, arg=canned(IN_INJECT)),
        # 0x48: canned 72 % 15 = OUT_TWO, with 0x40 set (a short writev)
        op("writev", M, 0, arg=0x80 | 0x48), op("close", M, 0)],
}
for name, ops in PROGRAMS.items():
    put("conn", name, b"".join(ops))

# ---- symtab: small ELF files --------------------------------------------

for name, path in [("libdl.so.2", "/usr/lib/x86_64-linux-gnu/libdl.so.2"),
                   ("true", "/usr/bin/true")]:
    if os.path.exists(path):
        with open(path, "rb") as f:
            put("symtab", name, f.read())

SRC = r"""
static int helper(int x) { return x * 3; }
__attribute__((noinline)) int slow_handler(int n)
{ int s = 0; for (int i = 0; i < n; i++) s += helper(i); return s; }
__asm__(".text\n.globl asm_label\nasm_label: ret\n.size asm_label, 1\n");
int wrapper(int n) __attribute__((alias("slow_handler")));
int main(void) { return slow_handler(3) & 1; }
"""
cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
if cc:
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "t.c")
        with open(c, "w") as f:
            f.write(SRC)
        steps = [
            ("tiny.o", [cc, "-O1", "-c", c, "-o", "tiny.o"]),
            ("tiny", [cc, "-O1", "-Wl,--build-id", c, "-o", "tiny"]),
            ("tiny.debug", ["objcopy", "--only-keep-debug", "tiny",
                            "tiny.debug"]),
            ("tiny.stripped", ["objcopy", "--strip-all",
                               "--add-gnu-debuglink=tiny.debug", "tiny",
                               "tiny.stripped"]),
            # MiniDebugInfo: the functions in an xz-packed ELF file in
            # .gnu_debugdata of the stripped program.
            ("tiny.mini", ["sh", "-c",
                           "nm tiny --format=posix --defined-only"
                           " | awk '$2 == \"T\" || $2 == \"t\" {print $1}'"
                           " > keep && objcopy -S --keep-symbols=keep"
                           " tiny.debug mini && xz --check=crc32 mini &&"
                           " objcopy --strip-all"
                           " --add-section .gnu_debugdata=mini.xz"
                           " tiny tiny.mini"]),
        ]
        for out, cmd in steps:
            if subprocess.run(cmd, cwd=tmp).returncode != 0:
                print("make-corpus: %s failed" % " ".join(cmd),
                      file=sys.stderr)
                continue
            with open(os.path.join(tmp, out), "rb") as f:
                put("symtab", out, f.read())

total = 0
for root, _, files in os.walk(CORPUS):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
print("corpus: %d bytes under %s" % (total, CORPUS))
