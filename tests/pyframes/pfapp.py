"""WSGI application for tests/pyframes/run.py (Python 3.8 and later).

Every slow endpoint waits in a function of its own, on a line ending in a
marker comment (LINE:name) that the runner looks up to know the line number
and source text a report must show, so no line number is written down
twice. Before it waits, each slow function records the stack as Python
itself sees it (_here) and the response carries it as a JSON line under the
first line, for the runner to compare with the report frame by frame.

  /ping                       "pong"
  /sleep?s=X                  time.sleep                    slow_sleep
  /spin?s=X                   pure Python loop              spin_loop
  /regex?s=X                  re.match in a loop, holds GIL regex_burn
  /hash?s=X                   pbkdf2_hmac, releases the GIL hash_burn
  /recv?s=X                   recv(), answered X s later    recv_late
  /child?s=X                  subprocess.run(["sleep", X])  child_wait
  /deep?n=N&s=X               N nested calls, then sleep    recurse, bottom
  /stream?n=K&s=X             K chunks X seconds apart      stream_chunks
  /nonascii?s=X               vues_été.attendre_données
  /lambda?s=X                 a lambda that sleeps
  /listcomp?s=X               a list comprehension that sleeps
  /exec?s=X                   exec'd code ("<string>") that sleeps
  /gen?s=X                    a generator that sleeps
  /async?s=X                  asyncio.run: coroutines, the inner one blocks
  /asyncwait?s=X              asyncio.run: a coroutine awaits asyncio.sleep

The first line of a body depends only on the request.
"""

import asyncio
import hashlib
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
from urllib.parse import parse_qs

_tls = threading.local()


def _here():
    # The caller's stack, outermost first, as traceback prints it.
    _tls.stack = [[f.filename, f.lineno, f.name]
                  for f in traceback.extract_stack(sys._getframe(1))]


# One match holds the GIL for about _REGEX_STEP seconds, one hash call
# (GIL released) lasts about _HASH_STEP: long enough that the report, taken
# at the threshold, finds the thread inside the call and not between two.
_REGEX_STEP = 0.8
_HASH_STEP = 0.25
_BAD_REGEX = re.compile(r"(a+)+$")


def _calibrate_regex():
    # Each extra character doubles the backtracking: time a short match and
    # extrapolate, calibrating on a long one would take seconds.
    n = 12
    while True:
        t0 = time.perf_counter()
        _BAD_REGEX.match("a" * n + "!")
        took = time.perf_counter() - t0
        if took >= 0.005 or n >= 40:
            break
        n += 1
    n += max(0, int(round(math.log2(_REGEX_STEP / max(took, 1e-6)))))
    return "a" * n + "!"


def _calibrate_hash():
    n = 1000
    for _ in range(2):
        t0 = time.perf_counter()
        hashlib.pbkdf2_hmac("sha256", b"slowdog", b"salt", n)
        took = max(time.perf_counter() - t0, 1e-6)
        n = max(1000, min(int(n * 0.02 / took), 100000000))
    return int(n * _HASH_STEP / 0.02)


_REGEX_SUBJECT = _calibrate_regex()
_HASH_ROUNDS = _calibrate_hash()


def slow_sleep(s):
    _here(); time.sleep(s)  # LINE:sleep


def view_sleep(s, n):
    slow_sleep(s)  # LINE:view_sleep
    return "slept"


def spin_loop(s):
    _here(); end = time.monotonic() + s
    x = 0
    while time.monotonic() < end: x = (x * 31 + 7) & 0xFFFFFFFF  # LINE:spin
    return x


def view_spin(s, n):
    spin_loop(s)  # LINE:view_spin
    return "spun"


def regex_burn(s):
    # Let the other requests of the batch start before holding the GIL for
    # long; the report (at 0.5 s) then catches the thread inside a match.
    _here(); end = time.monotonic() + s; time.sleep(0.3)
    while time.monotonic() < end: _BAD_REGEX.match(_REGEX_SUBJECT)  # LINE:regex


def view_regex(s, n):
    regex_burn(s)  # LINE:view_regex
    return "matched"


def hash_burn(s):
    _here(); end = time.monotonic() + s
    while time.monotonic() < end: hashlib.pbkdf2_hmac("sha256", b"slowdog", b"salt", _HASH_ROUNDS)  # LINE:hash


def view_hash(s, n):
    hash_burn(s)  # LINE:view_hash
    return "hashed"


def recv_late(s):
    # The peer answers s seconds later: the thread waits in recv() itself
    # (a blocking socket without timeout has no poll() first).
    a, b = socket.socketpair()
    answer = threading.Timer(s, b.sendall, (b"x",))
    answer.start()
    try:
        _here(); data = a.recv(1)  # LINE:recv
    finally:
        answer.join()
        a.close()
        b.close()
    return "got " + data.decode()


def view_recv(s, n):
    return recv_late(s)  # LINE:view_recv


def child_wait(s):
    _here(); r = subprocess.run(["sleep", str(s)])  # LINE:child
    return r.returncode


def view_child(s, n):
    return "exit %d" % child_wait(s)  # LINE:view_child


def bottom(s):
    _here(); time.sleep(s)  # LINE:bottom
    return 1


def recurse(n, s):
    if n <= 1:
        return bottom(s)  # LINE:recurse_base
    return recurse(n - 1, s) + 1  # LINE:recurse_step


def view_deep(s, n):
    return "depth %d" % recurse(n, s)  # LINE:view_deep


def stream_chunks(n, s, tag):
    for i in range(n):
        if i:
            _here(); time.sleep(s)  # LINE:stream
        yield ("chunk %d %s\n" % (i, tag)).encode()
    yield (json.dumps(getattr(_tls, "stack", None)) + "\n").encode()


def view_nonascii(s, n):
    import vues_été
    return vues_été.attendre_données(s, _here)  # LINE:view_nonascii


slow_lambda = lambda s: (_here(), time.sleep(s))  # LINE:lambda


def view_lambda(s, n):
    slow_lambda(s)  # LINE:view_lambda
    return "lambda"


def view_listcomp(s, n):
    done = [(_here(), time.sleep(s)) for _ in range(1)]  # LINE:listcomp
    return "listcomp %d" % len(done)


# Compiled as "<string>": its frame is "<module>", with no source line.
_EXEC_SRC = (
    "x = 1\n"
    "_here(); time.sleep(s)  # EXEC:sleep\n"
)


def view_exec(s, n):
    g = {"_here": _here, "time": time, "s": s}
    exec(compile(_EXEC_SRC, "<string>", "exec"), g)  # LINE:view_exec
    return "exec x=%d" % g["x"]


def gen_slow(s):
    yield "a"
    _here(); time.sleep(s)  # LINE:gen
    yield "b"


def view_gen(s, n):
    return "gen " + "".join(gen_slow(s))  # LINE:view_gen


async def coro_inner(s):
    # A blocking call in a coroutine: the coroutine frames are on the stack.
    _here(); time.sleep(s)  # LINE:coro_inner
    return "done"


async def coro_outer(s):
    await asyncio.sleep(0.01)
    return await coro_inner(s)  # LINE:coro_outer


def view_async(s, n):
    return "async " + asyncio.run(coro_outer(s))  # LINE:view_async


async def coro_wait(s):
    # Suspended in await: the thread runs the event loop, not this frame.
    await asyncio.sleep(s)
    return "waited"


def view_asyncwait(s, n):
    _here(); return "async " + asyncio.run(coro_wait(s))  # LINE:view_asyncwait


VIEWS = {
    "sleep": view_sleep,
    "spin": view_spin,
    "regex": view_regex,
    "hash": view_hash,
    "recv": view_recv,
    "child": view_child,
    "deep": view_deep,
    "nonascii": view_nonascii,
    "lambda": view_lambda,
    "listcomp": view_listcomp,
    "exec": view_exec,
    "gen": view_gen,
    "async": view_async,
    "asyncwait": view_asyncwait,
}


def _reply(start_response, body, status="200 OK"):
    body = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    qs = environ.get("QUERY_STRING", "")
    q = parse_qs(qs)
    s = float(q.get("s", ["0"])[0])
    n = int(q.get("n", ["3"])[0])
    _tls.stack = None
    if path == "/ping":
        return _reply(start_response, "pong\n")
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return stream_chunks(n, s, qs)
    view = VIEWS.get(path[1:])
    if view is None:
        return _reply(start_response, "not found\n", "404 Not Found")
    result = view(s, n)  # LINE:dispatch
    return _reply(start_response, "%s %s\n%s\n" % (result, qs, json.dumps(_tls.stack)))


application = app
