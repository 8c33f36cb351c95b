"""The WSGI app of tests/gil/run.py: requests that hold the GIL in C for
seconds, and requests that need it meanwhile.

  /hold?s=X   waits for a /wait request to arrive, then holds the GIL for
              X seconds in one C call (libc's usleep through ctypes.PyDLL,
              which never releases the GIL)                     hold_gil
  /wait       lets /hold go on, then runs Python code until /hold is done:
              past the threshold it can only be waiting for the GIL
  /bg?s=X     a background thread holds the GIL for X seconds while this
              request runs Python code until it is done
  /main?s=X   the main thread holds the GIL for X seconds (in a handler
              of SIGUSR2, which Python runs there) while this request
              runs Python code until it is done; only where the app is
              imported in the main thread (the stdlib server)
  /churn?s=X  four threads and this request run Python code for X
              seconds: the GIL changes hands every switch interval; the
              body gives the churners' thread ids, as JSON
  /ping       "pong"
"""

import ctypes
import json
import os
import signal
import threading
import time

_libc = ctypes.PyDLL(None)  # a PyDLL call keeps the GIL all along
_libc.usleep.argtypes = [ctypes.c_uint]
_arrived = threading.Event()
_held = threading.Event()


def hold_gil(s):
    end = time.monotonic() + s
    while time.monotonic() < end:
        _libc.usleep(int((end - time.monotonic()) * 1e6) + 1)  # LINE:hold


def spin_until(ev):
    n = 0
    while not ev.is_set():  # LINE:spin
        n += 1
    return n


def view_hold(s):
    _arrived.wait(30)
    _arrived.clear()
    hold_gil(s)  # LINE:view_hold
    _held.set()
    return "held"


def view_wait(s):
    _held.clear()
    _arrived.set()
    spin_until(_held)  # LINE:view_wait
    return "waited"


def background(s, done):
    hold_gil(s)  # LINE:background
    done.set()


def view_bg(s):
    done = threading.Event()
    t = threading.Thread(target=background, args=(s, done), name="gil-bg",
                         daemon=True)
    t.start()
    spin_until(done)  # LINE:view_bg
    t.join()
    return "background held"


def churn0(end):
    n = 0
    while time.monotonic() < end:
        n += 1


def churn1(end):
    n = 0
    while time.monotonic() < end:
        n += 1


def churn2(end):
    n = 0
    while time.monotonic() < end:
        n += 1


def churn3(end):
    n = 0
    while time.monotonic() < end:
        n += 1


def churn_wait(end):
    n = 0
    while time.monotonic() < end:
        n += 1


def view_churn(s):
    end = time.monotonic() + s
    ts = [threading.Thread(target=fn, args=(end,), name="churn%d" % i, daemon=True)
          for i, fn in enumerate((churn0, churn1, churn2, churn3))]
    for t in ts:
        t.start()
    ids = {str(t.native_id): i for i, t in enumerate(ts)}
    churn_wait(end)
    for t in ts:
        t.join()
    return json.dumps(ids)


_main = {"s": 0.0, "done": threading.Event()}


def on_signal(signum, frame):
    hold_gil(_main["s"])  # LINE:on_signal
    _main["done"].set()


def view_main(s):
    _main["s"] = s
    _main["done"].clear()
    os.kill(os.getpid(), signal.SIGUSR2)
    spin_until(_main["done"])
    return "main held"


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGUSR2, on_signal)

VIEWS = {"/hold": view_hold, "/wait": view_wait, "/bg": view_bg, "/main": view_main,
         "/churn": view_churn}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ping":
        body = "pong"
    else:
        q = dict(kv.partition("=")[::2] for kv in environ["QUERY_STRING"].split("&") if kv)
        body = VIEWS[path](float(q.get("s", "0")))
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]
