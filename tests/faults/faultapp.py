"""WSGI app for the fault tests: waits in ways that must not see EINTR,
forks, execs, blocks signals, juggles its socket, starts threads that die
while they are captured, recurses deep in C. Run by tests/faults/run.py
under tests/integration/stdserver.py, gunicorn and uWSGI."""
import ctypes
import json
import multiprocessing
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs

libc_direct = ctypes.CDLL("libc.so.6", use_errno=True)   # bypasses the preload
libc_global = ctypes.CDLL(None, use_errno=True)          # goes through it


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


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


class sem_t(ctypes.Structure):
    _fields_ = [("data", ctypes.c_char * 32)]  # glibc x86-64: 32 bytes


def _deadline(secs):
    now = time.time()
    sec = int(now + secs)
    return timespec(sec, int((now + secs - sec) * 1e9))


def c_sem(lib):
    # A POSIX semaphore nobody posts: sem_timedwait must wait the whole
    # 2 s and fail with ETIMEDOUT, never EINTR.
    sem = sem_t()
    lib.sem_init(ctypes.byref(sem), 0, 0)
    ts = _deadline(2.0)
    t = time.monotonic()
    r = lib.sem_timedwait(ctypes.byref(sem), ctypes.byref(ts))
    e = ctypes.get_errno() if r else 0
    lib.sem_destroy(ctypes.byref(sem))
    return "sem=%d errno=%d elapsed=%.1f" % (r, e, time.monotonic() - t)


def wait_loop(lib, kind, secs):
    """Many short waits between short bursts of CPU for secs seconds, so
    that captures (SLOWDOG_REPEAT) land at every moment, also just as a
    wait begins. Counts the waits that failed or ended early."""
    sem = sem_t()
    lib.sem_init(ctypes.byref(sem), 0, 0)
    n = bad = 0
    first = ""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        x = 0
        for i in range(random.randrange(50, 400)):
            x += i
        # Short sem waits: the more often a wait begins, the more often a
        # capture lands just as it does.
        want = 0.0005 if kind == "sem" else 0.002
        t = time.monotonic()
        if kind == "sem":
            ts = _deadline(want)
            r = lib.sem_timedwait(ctypes.byref(sem), ctypes.byref(ts))
            ok = r == -1 and ctypes.get_errno() == 110  # ETIMEDOUT
        elif kind == "usleep":
            # libc's usleep calls its own nanosleep, not the interposed one
            r = lib.usleep(int(want * 1e6))
            ok = r == 0
        elif kind == "nanosleep":
            ts = timespec(0, int(want * 1e9))
            r = lib.nanosleep(ctypes.byref(ts), None)
            ok = r == 0
        elif kind == "select":
            # no descriptors: a pure timeout, which Linux counts down
            tv = timeval(0, int(want * 1e6))
            r = lib.select(0, None, None, None, ctypes.byref(tv))
            ok = r == 0
        else:
            a, b = _pair()
            p = pollfd(a.fileno(), select.POLLIN, 0)
            r = lib.poll(ctypes.byref(p), 1, int(want * 1000))
            ok = r == 0
        took = time.monotonic() - t
        n += 1
        if not ok or took < want - 0.0001:
            bad += 1
            if not first:
                first = " first: r=%d errno=%d after %.4f s" % (
                    r, ctypes.get_errno(), took)
    lib.sem_destroy(ctypes.byref(sem))
    return "waits=%d bad=%d%s" % (n, bad, first)


_pairs = []


def _pair():
    if not _pairs:
        _pairs.append(socket.socketpair())
    return _pairs[0]


def _slowdog():
    proc = ctypes.CDLL(None, use_errno=True)
    proc.slowdog_begin.argtypes = [ctypes.c_char_p]
    proc.slowdog_begin.restype = ctypes.c_int
    proc.slowdog_end.restype = ctypes.c_int
    return proc


def doomed_work(label, secs, mode, tids):
    """A thread's whole life: begin, run about the threshold, exit without
    slowdog_end(), so that it dies around the moment it is captured."""
    sd = _slowdog()
    tids[label] = threading.get_native_id()
    sd.slowdog_begin(label.encode())
    if mode == "spin":
        spin(secs)
    elif mode == "lock":
        lk = threading.Lock()
        lk.acquire()
        lk.acquire(True, secs)
    else:
        time.sleep(secs)


def doomed(q):
    n = int(q.get("n", ["60"])[0])
    thr = float(os.environ.get("FAULT_THRESHOLD", "0.5"))
    tids = {}
    modes = ["sleep", "spin", "lock"]
    rng = random.Random(int(q.get("seed", ["1"])[0]))
    for wave in range(3):
        ts = []
        for i in range(n // 3):
            label = "doomed %d-%d" % (wave, i)
            secs = thr + rng.uniform(-0.004, 0.012)
            t = threading.Thread(target=doomed_work,
                                 args=(label, secs, modes[i % 3], tids))
            ts.append(t)
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return json.dumps(tids)


def block_all(how):
    every = set(signal.valid_signals())
    old = signal.pthread_sigmask(signal.SIG_BLOCK if how == "block"
                                 else signal.SIG_SETMASK, every)
    try:
        spin(1.0)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return "ok"


def fork_child(how):
    t = time.monotonic()
    pid = os.fork()
    if pid == 0:
        # The child of a request thread: it works past the threshold and
        # must not be reported as that request.
        time.sleep(0.8)
        if how == "libc":
            libc_global.exit(0)  # runs the library's destructors
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    return "child %d status %d elapsed=%.1f" % (pid, st, time.monotonic() - t)


def _mp_work(q):
    time.sleep(0.8)
    q.put(os.getpid())


def mp_child():
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_mp_work, args=(q,))
    p.start()
    pid = q.get(timeout=10)
    p.join()
    return "child %d exit %s" % (pid, p.exitcode)


def exec_child():
    # The child inherits LD_PRELOAD: another process with the library.
    r = subprocess.run([sys.executable, "-c",
                        "import os, time; time.sleep(0.8); print(os.getpid())"],
                       stdout=subprocess.PIPE)
    return "child %s exit %d" % (r.stdout.decode().strip(), r.returncode)


def dup_close(environ):
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return "no socket"
    d = sock.dup()
    d.close()
    spin(1.0)
    return "ok"


def dup2_dance(environ):
    # Over the request's own descriptor and back: for a moment fd is
    # /dev/null, then the socket again.
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return "no socket"
    fd = sock.fileno()
    saved = os.dup(fd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, fd)
    os.close(null)
    spin(0.3)
    os.dup2(saved, fd)
    os.close(saved)
    spin(1.0)
    return "ok"


def deep_native(mode):
    lib = ctypes.CDLL(os.environ["FAULT_DEEP_SO"])
    lib.deep.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.deep.restype = ctypes.c_int
    return "deep=%d" % lib.deep(10000, 1 if mode == "spin" else 0)


def jumped_then_sleep(secs):
    """C code left a read(2) by a longjmp from a signal handler; then the
    request sleeps: its report must show the sleep, not the read."""
    lib = ctypes.CDLL(os.environ["FAULT_DEEP_SO"])
    lib.jump_out_of_read.restype = ctypes.c_int
    jumped = lib.jump_out_of_read()
    time.sleep(secs)
    return "jumped=%d" % jumped


def c_nanosleep_for(secs):
    ts = timespec(int(secs), int((secs - int(secs)) * 1e9))
    t = time.monotonic()
    r = libc_global.nanosleep(ctypes.byref(ts), None)
    return "nanosleep=%d errno=%d elapsed_ok=%s" % (
        r, ctypes.get_errno() if r else 0, time.monotonic() - t >= secs)


def child_fds():
    # Without closing anything: only O_CLOEXEC keeps a descriptor out.
    r = subprocess.run(["ls", "-l", "/proc/self/fd/"], close_fds=False,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return "ls " + r.stdout.decode(errors="replace")


def take_signal():
    # The application takes slowdog's signal for itself, mid-run.
    # From a request thread, so through C (Python's signal.signal only
    # works on the main thread): ignore it, as some C libraries do.
    sig = int(os.environ["FAULT_SIGNAL"])
    libc_global.signal.restype = ctypes.c_void_p
    libc_global.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc_global.signal(sig, 1)  # SIG_IGN
    return "taken %d" % sig


def afterward_close(s):
    time.sleep(s)


class Afterward:
    """A response whose bytes are all sent before its close() (which the
    server calls after the last byte) takes s seconds: work the worker
    does after the response, as a Django request_finished handler."""

    def __init__(self, data, s):
        self.data, self.s = data, s

    def __iter__(self):
        yield self.data

    def close(self):
        afterward_close(self.s)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = parse_qs(environ.get("QUERY_STRING", ""))
    secs = float(q.get("s", ["0"])[0])
    which = {"/direct": libc_direct, "/global": libc_global}
    body = "ok"
    if path == "/spin":
        spin(secs or 1.5)
    elif path == "/sleep":
        time.sleep(secs)
    elif path == "/take":
        body = take_signal()
    elif path == "/doomed":
        body = doomed(q)
    elif path == "/blockall":
        body = block_all(q.get("how", ["block"])[0])
    elif path == "/fork":
        body = fork_child(q.get("exit", ["os"])[0])
    elif path == "/mp":
        body = mp_child()
    elif path == "/exec":
        body = exec_child()
    elif path == "/dupclose":
        body = dup_close(environ)
    elif path == "/dup2":
        body = dup2_dance(environ)
    elif path == "/deepnative":
        body = deep_native(q.get("mode", ["sleep"])[0])
    elif path == "/longjmp":
        body = jumped_then_sleep(secs)
    elif path == "/childfds":
        body = child_fds()
    elif path == "/csleep":
        body = c_nanosleep_for(secs)
    elif path == "/afterward":
        pass  # the time goes in close(), after the response
    elif path.startswith("/loop/"):
        kind, _, how = path[len("/loop/"):].partition("/")
        body = wait_loop(which["/" + how], kind, secs or 1.5)
    else:
        kind, _, how = path.strip("/").partition("/")
        lib = which.get("/" + how)
        if kind == "sleep" and lib:
            body = c_sleep(lib)
        elif kind == "nanosleep" and lib:
            body = c_nanosleep(lib)
        elif kind == "poll" and lib:
            body = c_poll(lib)
        elif kind == "sem" and lib:
            body = c_sem(lib)
        else:
            body = "not found"
    data = (body + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(data)))])
    if path == "/afterward":
        return Afterward(data, secs)
    return [data]
