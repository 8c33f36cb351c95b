"""WSGI app for the last-words suite: requests that get their worker
killed, each stuck in a function of its own name."""

import ctypes
import faulthandler
import hashlib
import os
import re
import signal
import time

if os.environ.get("LW_FAULTHANDLER"):
    faulthandler.enable()


def nap(s):
    time.sleep(s)


def regex_burn():
    # Catastrophic backtracking: minutes in _sre, which checks signals.
    re.match(r"(a+)+b", "a" * 40)


def derive_key():
    # C code that never comes back to the interpreter for minutes.
    hashlib.pbkdf2_hmac("sha256", b"secret", b"salt", 500_000_000)


def crash_in_c():
    time.sleep(0.3)
    ctypes.string_at(0)


def hog_memory():
    time.sleep(0.5)  # reported first (the suite's threshold is 100 ms)
    chunks = []
    for _ in range(4096):  # 4 GiB at most, touched page by page
        chunks.append(bytearray(1 << 20))


def signals():
    out = []
    for name in ("SIGABRT", "SIGTERM", "SIGINT", "SIGQUIT", "SIGSEGV", "SIGBUS",
                 "SIGFPE", "SIGILL"):
        h = signal.getsignal(getattr(signal, name))
        out.append("%s=%s" % (name, getattr(h, "__qualname__", h)))
    out.append("faulthandler=%s" % faulthandler.is_enabled())
    return " ".join(out)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    q = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    body = b"ok\n"
    if path == "/sleep":
        nap(float(q.get("s", "20")))
    elif path == "/regex":
        regex_burn()
    elif path == "/pbkdf":
        derive_key()
    elif path == "/segv":
        crash_in_c()
    elif path == "/hog":
        hog_memory()
    elif path == "/signals":
        body = (signals() + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
