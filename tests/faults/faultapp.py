"""WSGI app for the fault tests: waits in ways that must not see EINTR."""
import ctypes
import os
import select
import signal
import socket
import time

libc_direct = ctypes.CDLL("libc.so.6", use_errno=True)   # bypasses the preload
libc_global = ctypes.CDLL(None, use_errno=True)          # goes through it


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class pollfd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short),
                ("revents", ctypes.c_short)]


def spin(s):
    t = time.time()
    while time.time() - t < s:
        pass


def c_sleep(lib):
    t = time.monotonic()
    r = lib.sleep(2)
    return "sleep=%d elapsed=%.1f" % (r, time.monotonic() - t)


def c_nanosleep(lib):
    ts = timespec(2, 0)
    t = time.monotonic()
    r = lib.nanosleep(ctypes.byref(ts), None)
    return "nanosleep=%d errno=%d elapsed=%.1f" % (
        r, ctypes.get_errno() if r else 0, time.monotonic() - t)


def c_poll(lib):
    a, b = socket.socketpair()
    p = pollfd(a.fileno(), select.POLLIN, 0)
    t = time.monotonic()
    r = lib.poll(ctypes.byref(p), 1, 2000)
    e = ctypes.get_errno() if r < 0 else 0
    a.close()
    b.close()
    return "poll=%d errno=%d elapsed=%.1f" % (r, e, time.monotonic() - t)


def take_signal():
    # The application takes slowdog's signal for itself, mid-run.
    # From a request thread, so through C (Python's signal.signal only
    # works on the main thread): ignore it, as some C libraries do.
    sig = int(os.environ["FAULT_SIGNAL"])
    libc_global.signal.restype = ctypes.c_void_p
    libc_global.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc_global.signal(sig, 1)  # SIG_IGN
    return "taken %d" % sig


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    which = {"/direct": libc_direct, "/global": libc_global}
    body = "ok"
    if path == "/spin":
        spin(1.5)
    elif path == "/take":
        body = take_signal()
    else:
        kind, _, how = path.strip("/").partition("/")
        lib = which.get("/" + how)
        if kind == "sleep" and lib:
            body = c_sleep(lib)
        elif kind == "nanosleep" and lib:
            body = c_nanosleep(lib)
        elif kind == "poll" and lib:
            body = c_poll(lib)
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    return [data]
