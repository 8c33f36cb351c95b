"""WSGI application for the slowdog integration tests.

Pure standard library (psycopg2 only for /pg), Python 3.8 and later, for
gunicorn, uWSGI and tests/integration/stdserver.py. Each slow endpoint does
its waiting in a function with a known name so that reports can be matched
against Python tracebacks and native stacks:

  /fast                 "ok\\n"
  /sleep?s=X            time.sleep                      slow_sleep
  /spin?s=X             pure Python loop                spin_loop
  /regex?s=X            catastrophic regex, holds GIL   regex_burn
  /hash?s=X             pbkdf2_hmac, releases the GIL   hash_burn
  /recv?s=X             recv() on a socketpair          recv_wait
  /child?s=X            subprocess.run(['sleep', X])    child_wait
  /deep?n=N&s=X         N nested calls, then sleep      recurse
  /stream?n=K&s=X       K chunks X seconds apart        stream_chunks
  /post                 length and digest of the body
  /pg?s=X               SELECT pg_sleep(X) via psycopg2 pg_wait

Bodies depend only on the request, never on timing, so that the harness can
compare responses with and without the library preloaded.
"""

import hashlib
import os
import re
import socket
import struct
import subprocess
import threading
import time
from urllib.parse import parse_qs

# Each call of a burn function takes about this long, so that the GIL is
# never held for long in one piece and a loop ends close to its deadline.
_SLICE = 0.02


_BAD_REGEX = re.compile(r"^(a+)+$")


def _regex_step(n):
    return _BAD_REGEX.match("a" * n + "!")


def _hash_step(n):
    return hashlib.pbkdf2_hmac("sha256", b"slowdog", b"salt", n)


_regex_n = None
_hash_n = None


def slow_sleep(s):
    time.sleep(s)


def spin_loop(s):
    end = time.monotonic() + s
    x = 0
    while time.monotonic() < end:
        for i in range(2000):
            x = (x * 31 + i) & 0xFFFFFFFF
    return x


def _regex_size():
    # Each extra character doubles the backtracking: stop at the first size
    # that takes a slice.
    global _regex_n
    if _regex_n is None:
        n = 12
        while n < 40:
            t0 = time.perf_counter()
            _regex_step(n)
            if time.perf_counter() - t0 >= _SLICE / 2:
                break
            n += 1
        _regex_n = n
    return _regex_n


def _hash_size():
    global _hash_n
    if _hash_n is None:
        n = 1000
        for _ in range(3):
            t0 = time.perf_counter()
            _hash_step(n)
            took = max(time.perf_counter() - t0, 1e-6)
            n = max(1000, min(int(n * _SLICE / took), 10000000))
        _hash_n = n
    return _hash_n


def regex_burn(s):
    end = time.monotonic() + s
    n = _regex_size()
    while time.monotonic() < end:
        _regex_step(n)


def hash_burn(s):
    end = time.monotonic() + s
    n = _hash_size()
    while time.monotonic() < end:
        _hash_step(n)


def recv_wait(s):
    # SO_RCVTIMEO on a blocking socket: the thread waits inside recv()
    # itself. Python retries EINTR with the full timeout, so the reply
    # never changes; the C test server is the strict EINTR check.
    a, b = socket.socketpair()
    try:
        sec = int(s)
        usec = int(round((s - sec) * 1e6))
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, usec))
        try:
            data = a.recv(1)
        except BlockingIOError:
            return "timed out"
        return "got %r" % data
    finally:
        a.close()
        b.close()


def child_wait(s):
    r = subprocess.run(["sleep", str(s)])
    return r.returncode


def recurse(n, s):
    if n <= 1:
        slow_sleep(s)
        return 1
    return recurse(n - 1, s) + 1


def stream_chunks(n, s, tag):
    for i in range(n):
        if i:
            time.sleep(s)
        yield ("chunk %d %s\n" % (i, tag)).encode()


def pg_wait(s):
    import psycopg2

    dsn = os.environ.get("SLOWDOG_TEST_PG_DSN", "dbname=postgres")
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_sleep(%s)", (s,))
        cur.fetchall()
    finally:
        conn.close()
    return "ok"


def _served_by():
    # Which process and thread ran the request: the harness leaves this
    # header out of its comparisons and uses it to explain failures.
    tid = threading.get_native_id() if hasattr(threading, "get_native_id") else 0
    return ("X-Served-By", "%d/%d" % (os.getpid(), tid))


def _reply(start_response, body, status="200 OK"):
    if isinstance(body, str):
        body = body.encode()
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body))),
                            _served_by()])
    return [body]


def _read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    chunks = []
    while length > 0:
        data = stream.read(min(length, 65536))
        if not data:
            break
        chunks.append(data)
        length -= len(data)
    return b"".join(chunks)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    qs = environ.get("QUERY_STRING", "")
    q = parse_qs(qs)
    s = float(q.get("s", ["0"])[0])
    n = int(q.get("n", ["3"])[0])

    if path == "/fast":
        return _reply(start_response, "ok\n")
    if path == "/sleep":
        slow_sleep(s)
        return _reply(start_response, "slept %s\n" % qs)
    if path == "/spin":
        spin_loop(s)
        return _reply(start_response, "spun %s\n" % qs)
    if path == "/regex":
        regex_burn(s)
        return _reply(start_response, "matched %s\n" % qs)
    if path == "/hash":
        hash_burn(s)
        return _reply(start_response, "hashed %s\n" % qs)
    if path == "/recv":
        what = recv_wait(s)
        return _reply(start_response, "recv %s: %s\n" % (what, qs))
    if path == "/child":
        rc = child_wait(s)
        return _reply(start_response, "child exited %d: %s\n" % (rc, qs))
    if path == "/deep":
        depth = recurse(n, s)
        return _reply(start_response, "depth %d: %s\n" % (depth, qs))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain"), _served_by()])
        return stream_chunks(n, s, qs)
    if path == "/post":
        body = _read_body(environ)
        return _reply(start_response, "received %d bytes sha256 %s\n"
                      % (len(body), hashlib.sha256(body).hexdigest()[:16]))
    if path == "/pg":
        try:
            what = pg_wait(s)
        except ImportError:
            return _reply(start_response, "no psycopg2\n", "501 Not Implemented")
        return _reply(start_response, "pg %s: %s\n" % (what, qs))
    return _reply(start_response, "not found\n", "404 Not Found")


application = app
