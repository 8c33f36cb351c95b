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
  /regex?s=X                  long re.match, holds the GIL  regex_burn
  /hash?s=X                   pbkdf2_hmac, releases the GIL hash_burn
  /recv?s=X                   recv(), answered X s later    recv_late
  /child?s=X                  subprocess.run(["sleep", X])  child_wait
  /deep?n=N&s=X               N nested calls, then sleep    recurse, bottom
  /deepc?n=N&s=X              the same through map()        recurse_c, bottom
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
import os
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
    # The caller's stack, outermost first, as traceback.extract_stack()
    # has it, without reading source files: the thread must not still be
    # here when the report is taken.
    frames = traceback.StackSummary.extract(
        traceback.walk_stack(sys._getframe(1)), lookup_lines=False)
    _tls.stack = [[f.filename, f.lineno, f.name] for f in reversed(frames)]


def _threshold():
    v = os.environ.get("SLOWDOG_THRESHOLD", "0.5").strip()
    if v.endswith("ms"):
        return float(v[:-2]) / 1000
    return float(v.rstrip("s"))


# The CPU-bound endpoints start late, so that the other requests of a batch,
# sent at the same time, have reached the call they wait in before the GIL
# gets busy; the regex last, as a match holds the GIL for long. The report
# is taken at the threshold, or later on a loaded machine (the runner
# allows 1.5 s more): the thread must still be inside its call then. One
# match holds the GIL for _REGEX_STEP seconds of CPU time, one hash call
# (GIL released) lasts _HASH_STEP; they are timed in CPU time, which load
# on the machine does not inflate.
_T = _threshold()
_WARMUP = _T / 4
_REGEX_WARMUP = _T * 0.6
_REGEX_STEP = _T + 1.8
_HASH_STEP = 1.0
_BAD_REGEX = re.compile(r"(a+)+$")


def _cpu(f, *args):
    best = None
    for _ in range(3):
        t0 = time.thread_time()
        f(*args)
        took = max(time.thread_time() - t0, 1e-6)
        best = took if best is None else min(best, took)
    return best


def _calibrate_regex():
    # Each extra character doubles the backtracking: time a match of 50 ms
    # and extrapolate (calibrating on a long one would take seconds); each
    # character adds a little less than a doubling to a short match.
    n = 12
    while True:
        t0 = time.thread_time()
        _BAD_REGEX.match("a" * n + "!")
        if time.thread_time() - t0 >= 0.05 or n >= 40:
            break
        n += 1
    took = _cpu(_BAD_REGEX.match, "a" * n + "!")
    n += max(0, int(round(math.log2(_REGEX_STEP / took))))
    return "a" * n + "!"


def _calibrate_hash():
    n = 20000
    took = _cpu(hashlib.pbkdf2_hmac, "sha256", b"slowdog", b"salt", n)
    return max(1000, int(n * _HASH_STEP / took))


_REGEX_SUBJECT = _calibrate_regex()
_HASH_ROUNDS = _calibrate_hash()


def slow_sleep(s):
    _here(); time.sleep(s)  # LINE:sleep


def view_sleep(s, n):
    slow_sleep(s)  # LINE:view_sleep
    return "slept"


def spin_loop(s):
    _here(); end = time.monotonic() + s; time.sleep(_WARMUP)
    x = 0
    while time.monotonic() < end: x = (x * 31 + 7) & 0xFFFFFFFF  # LINE:spin
    return x


def view_spin(s, n):
    spin_loop(s)  # LINE:view_spin
    return "spun"


def regex_burn(s):
    _here(); end = time.monotonic() + s; time.sleep(_REGEX_WARMUP)
    while time.monotonic() < end: _BAD_REGEX.match(_REGEX_SUBJECT)  # LINE:regex


def view_regex(s, n):
    regex_burn(s)  # LINE:view_regex
    return "matched"


def hash_burn(s):
    _here(); end = time.monotonic() + s; time.sleep(_WARMUP)
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


def recurse_c(n, s):
    # Each level is called from C (map): a new eval loop entry per level on
    # every version.
    if n <= 1:
        return bottom(s)  # LINE:recurse_c_base
    return next(map(recurse_c, [n - 1], [s])) + 1  # LINE:recurse_c_step


def view_deepc(s, n):
    return "depth %d" % recurse_c(n, s)  # LINE:view_deepc


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
    "deepc": view_deepc,
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
