"""The WSGI application scripts/bench serves (gunicorn, uWSGI).

  /            hello world: the request whose cost is measured
  /sleep?ms=N  a request that waits N ms (a blocked thread: no signal)
  /cpu?ms=N    a request that computes for N ms (a running thread: signal)
  /mark        hello world that also calls getsid(), which nothing else in
               the servers calls: scripts/bench has callgrind dump its
               counters there (tests/bench/lockstep.py)

Any other query parameter (id=...) is ignored; the benchmark uses it to
find its own request in the log.
"""

import os
import time

HELLO = b"Hello, World!\n"


def _ms(environ):
    for part in environ.get("QUERY_STRING", "").split("&"):
        k, _, v = part.partition("=")
        if k == "ms":
            try:
                return float(v)
            except ValueError:
                pass
    return 100.0


def _spin(ms):
    end = time.perf_counter() + ms / 1000.0
    x = 0
    while time.perf_counter() < end:
        for i in range(200):
            x += i * i
    return x


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        time.sleep(_ms(environ) / 1000.0)
    elif path == "/cpu":
        _spin(_ms(environ))
    elif path == "/mark":
        os.getsid(0)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


application = app
