#!/usr/bin/env python3
"""Event-loop servers with libslowdog.so preloaded, under concurrent load.

    run.py BUILD_DIR [-k NAME]...

For each server (gunicorn -k gevent and -k eventlet, uWSGI --gevent,
uvicorn with asyncio and with uvloop, gunicorn with UvicornWorker; loops
that wait in poll or select: eventlet's poll and selects hubs, gevent's
libev select and poll backends (gunicorn, and uWSGI for poll), uvicorn on
asyncio's PollSelector, and
the standard library's asyncio (stdserver.py) on its SelectSelector and
PollSelector, on Debian's CPython and on pyenv's 3.8 and 3.13), two at a
time: while two clients keep sending fast requests, one request stalls
the loop (/spin: CPU) with others in flight (/starve, which ends as soon
as the stall does, and /starve_slow, which then awaits 1.2 s more), then
one awaits on a free loop (/sleep, through two functions); then idle
keep-alive, WebSockets held open and thread-pool work. The log must hold
exactly: one stall report naming its culprit and the starved requests
(with SLOWDOG_REPEAT, where set, one more every so long while it lasts),
its resume line, the awaiting reports with their stacks, /starve_slow's
once the stall is over, and nothing about the rest.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
THRESHOLD = 1.0


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


sys.path.insert(0, os.path.dirname(HERE))
from harness import free_port  # noqa: E402

JOBS = 2  # servers run side by side


# ---- servers ----

class Server(object):
    greenlets = True
    websockets = False
    env = {}
    repeat = None      # SLOWDOG_REPEAT, seconds
    aio_frames = True  # asyncio stacks and culprits are read (CPython 3.11)
    closes = False     # closes each connection after its response

    def __init__(self, name, argv, needs):
        self.name = name
        self.argv = argv
        self.needs = needs

    def missing(self):
        for path in self.needs:
            if not os.path.exists(path):
                return path
        return None


def gunicorn(name, worker, app, greenlets=True, env=None, repeat=None):
    # keep-alive past a stall: its timer, due during the stall, would
    # close the hammer's connection as the stall ends, its next request
    # unread (a reset)
    s = Server(name, lambda port: [PY, "/usr/bin/gunicorn", "-k", worker, "-w", "1",
                                   "--keep-alive", "10",
                                   "-b", "127.0.0.1:%d" % port, "--chdir", HERE, app],
               ["/usr/bin/gunicorn"])
    s.greenlets = greenlets
    s.env = env or {}
    s.repeat = repeat
    return s


def uvicorn(name, loop, http):
    s = Server(name, lambda port: [PY, "-m", "uvicorn", "--loop", loop, "--http", http,
                                   "--ws", "wsproto", "--port", str(port),
                                   "--app-dir", HERE, "asgiapp:app"],
               ["/usr/bin/uvicorn"])
    s.greenlets = False
    s.websockets = True
    return s


UVICORN_POLL = ("import selectors, sys; selectors.DefaultSelector = selectors.PollSelector; "
                "sys.argv[0] = 'uvicorn'; from uvicorn.main import main; main()")


def stdlib(name, python, selector, repeat=None):
    """The standard library's asyncio (stdserver.py) on python."""
    s = Server(name, lambda port: [python, os.path.join(HERE, "stdserver.py"),
                                   str(port), selector], [python])
    s.greenlets = False
    s.repeat = repeat
    s.aio_frames = python == PY
    return s


def pyenv(version):
    return os.path.expanduser("~/.pyenv/versions/%s/bin/python" % version)


def pyenv_latest(minor):
    root = os.path.expanduser("~/.pyenv/versions")
    found = sorted((v for v in os.listdir(root) if v.startswith(minor + "."))
                   if os.path.isdir(root) else [],
                   key=lambda v: [int(x) for x in v.split(".") if x.isdigit()])
    return pyenv(found[-1] if found else minor)


def uwsgi_gevent(name, env=None, repeat=None):
    uw = Server(name, lambda port: [
        "/usr/bin/uwsgi", "--plugin", "python3,gevent_python3", "--http-socket",
        "127.0.0.1:%d" % port, "--gevent", "100", "--gevent-monkey-patch",
        "--master", "--processes", "1", "--die-on-term", "--chdir", HERE,
        "--wsgi-file", os.path.join(HERE, "wsgiapp.py"), "--callable", "app",
        "--disable-logging"],
        ["/usr/bin/uwsgi", "/usr/lib/uwsgi/plugins/gevent_python3_plugin.so"])
    uw.closes = True
    uw.env = env or {}
    uw.repeat = repeat
    return uw


def servers():
    return [
        gunicorn("gunicorn-gevent", "gevent", "wsgiapp:app"),
        gunicorn("gunicorn-eventlet", "eventlet", "wsgiapp:app"),
        uwsgi_gevent("uwsgi-gevent"),
        uvicorn("uvicorn-asyncio", "asyncio", "h11"),
        uvicorn("uvicorn-uvloop", "uvloop", "httptools"),
        gunicorn("gunicorn-uvicornworker", "uvicorn.workers.UvicornWorker",
                 "asgiapp:app", greenlets=False),
    ] + poll_servers()


def poll_servers():
    """Loops that wait in poll or select (not epoll), with SLOWDOG_REPEAT:
    the hubs of eventlet, gevent's libev backends, asyncio's selectors."""
    uvp = Server("uvicorn-asyncio-poll", lambda port: [
        PY, "-c", UVICORN_POLL, "--loop", "asyncio", "--http", "h11",
        "--port", str(port), "--app-dir", HERE, "asgiapp:app"], ["/usr/bin/uvicorn"])
    uvp.greenlets = False
    uvp.repeat = 0.6
    return [
        gunicorn("gunicorn-eventlet-poll", "eventlet", "wsgiapp:app",
                 env={"EVENTLET_HUB": "poll"}, repeat=0.6),
        gunicorn("gunicorn-eventlet-selects", "eventlet", "wsgiapp:app",
                 env={"EVENTLET_HUB": "selects"}, repeat=0.6),
        gunicorn("gunicorn-gevent-select", "gevent", "wsgiapp:app",
                 env={"GEVENT_BACKEND": "select"}, repeat=0.6),
        gunicorn("gunicorn-gevent-poll", "gevent", "wsgiapp:app",
                 env={"GEVENT_BACKEND": "poll"}, repeat=0.6),
        uwsgi_gevent("uwsgi-gevent-poll", env={"GEVENT_BACKEND": "poll"}),
        uvp,
        stdlib("asyncio-select", PY, "select", repeat=0.6),
        stdlib("asyncio-poll-3.8", pyenv_latest("3.8"), "poll", repeat=0.6),
        stdlib("asyncio-select-3.13", pyenv_latest("3.13"), "select"),
    ]


# ---- clients ----

def get(port, path, sock=None, timeout=15):
    """One GET; on sock (kept alive) if given. Returns the body."""
    own = sock is None
    if own:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise IOError("closed during the head of %s" % path)
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    want = int(m.group(1)) if m else 0
    while len(body) < want:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    if own:
        sock.close()
    return body


def background(fn, *args):
    out = {}

    def run():
        try:
            out["body"] = fn(*args)
        except Exception as e:  # reported by the checks
            out["error"] = e
    t = threading.Thread(target=run)
    t.daemon = True
    t.start()
    t.out = out
    return t


def hammer(port, stop, counts, closes=False):
    """Fast requests, kept alive where the server keeps the connection
    (uWSGI's --http-socket closes it after each response), until stop."""
    s = None
    try:
        while not stop.is_set():
            if s is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=15)
            try:
                get(port, "/fast", s)
            except IOError as e:
                # a server that closes after each response: its FIN, or
                # its reset when the next request went out before the FIN
                # came
                if "closed during the head" not in str(e) and \
                        not (closes and isinstance(e, ConnectionResetError)):
                    raise
                s.close()
                s = None
                continue
            counts.append(1)
            time.sleep(0.01)
    except Exception as e:
        counts.append(e)
    if s is not None:
        s.close()


def websocket_held(port, secs):
    """Opens a WebSocket, sends a message now and then, closes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    if not data.startswith(b"HTTP/1.1 101"):
        raise IOError("no upgrade: %r" % data[:40])
    end = time.time() + secs
    while time.time() < end:
        # a masked text frame "hi"
        s.sendall(b"\x81\x82\x00\x00\x00\x00hi")
        s.recv(64)
        time.sleep(0.5)
    s.sendall(b"\x88\x80\x00\x00\x00\x00")  # close
    s.close()


def keepalive_idle(port, secs):
    """A connection idle between two requests for longer than the
    threshold (where the server keeps it that long)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    get(port, "/ka", s)
    time.sleep(secs)
    try:
        get(port, "/ka", s)
    except IOError as e:
        if "closed during the head" not in str(e):
            raise
    s.close()


def silent_peer():
    """A TCP server that accepts and never answers; it closes each
    connection after 2 s. Returns its port."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def serve():
        while True:
            c, _ = ls.accept()
            threading.Timer(2.0, c.close).start()
    t = threading.Thread(target=serve)
    t.daemon = True
    t.start()
    return ls.getsockname()[1]


def shapes(srv):
    """(path, kind, function that makes it slow): kind "stall" holds the
    loop, "await" waits on a free one."""
    peer = silent_peer()
    out = [("/spin", "stall", "spin_cpu"),
           ("/cpu_c", "stall", "cpu_in_c"),
           ("/sleep", "await", "await_level2"),
           ("/socket?%d" % peer, "await", "wait_socket")]
    # time.sleep: monkey-patched under greenlets (cooperative), blocking
    # on an asyncio loop
    out.append(("/block", "await" if srv.greenlets else "stall", "block_sleep"))
    if not srv.greenlets:
        # awaits a task of its own: its stack goes on into that task's
        out.append(("/subtask", "await", "await_level2"))
    return out


def scenario(srv, port):
    # idle keep-alive before the worker has served two requests at once
    keepalive_idle(port, 1.6)
    for _ in range(5):
        get(port, "/warm")
    stop = threading.Event()
    counts = []
    fast = [threading.Thread(target=hammer, args=(port, stop, counts, srv.closes))
            for _ in range(2)]
    for t in fast:
        t.daemon = True
        t.start()
    time.sleep(0.3)
    slow = []
    for path, kind, fn in srv.shapes:
        n = 1
        if kind == "stall":
            # it holds the loop while /starve waits for it (and
            # /starve_slow, which then awaits on its own)
            slow.append(background(get, port, "/starve"))
            n += 1
            if path == "/spin":
                slow.append(background(get, port, "/starve_slow"))
                n += 1
            time.sleep(0.1)
        slow.append(background(get, port, path))
        for t in slow[-n:]:
            t.join(20)
        time.sleep(0.4)
    # What must not be reported.
    quiet = [background(keepalive_idle, port, 1.6)]
    if srv.websockets:
        quiet.append(background(websocket_held, port, 2.5))
    for _ in range(2):
        pool = [background(get, port, "/pool") for _ in range(4)]
        for t in pool:
            t.join(20)
    for t in quiet:
        t.join(20)
    stop.set()
    for t in fast:
        t.join(20)
    errors = [e for e in counts if e != 1]
    for t in slow + quiet:
        if "error" in t.out:
            errors.append(t.out["error"])
    return len(counts) - len(errors), errors


# ---- the log ----

def blocks(text):
    """(kind, lines) per report block, and the other lines."""
    out, other, cur = [], [], None
    for line in text.splitlines():
        if line.startswith("--- slowdog: "):
            cur = (line[len("--- slowdog: "):-4], [])
            continue
        if cur is not None:
            if line.startswith("--- end of slowdog report"):
                out.append(cur)
                cur = None
            else:
                cur[1].append(line)
            continue
        if line.strip():
            other.append(line)
    return out, other


def field(lines, name):
    return [l[len(name) + 1:].strip() for l in lines if l.startswith(name + ":")]


def pyfuncs(lines):
    return re.findall(r'^  File "[^"]*", line \d+, in (\S+)$', "\n".join(lines), re.M)


def within(value_line, pat):
    m = re.match(pat, value_line[0] if value_line else "")
    return m and THRESHOLD <= float(m.group(1)) <= THRESHOLD + 0.5


def by_id(reps):
    """Reports grouped by Request-Id, in the order of their first."""
    out = {}
    for l in reps:
        out.setdefault(" ".join(field(l, "Request-Id")), []).append(l)
    return list(out.values())


def check_repeats(srv, what, group, total, pat):
    """The reports of one request or stall (group) that lasted total
    seconds: one, or with SLOWDOG_REPEAT one every so long while it
    lasted, each saying which it is; pat finds each report's elapsed time."""
    bad = []
    vals = []
    for i, l in enumerate(group):
        rep = field(l, "Repeat")
        if i == 0 and rep:
            bad.append("%s: the first report says Repeat: %s" % (what, rep))
        if i > 0 and not (rep and rep[0].startswith("%d " % (i + 1))):
            bad.append("%s: report %d says Repeat: %s" % (what, i + 1, rep))
        m = re.search(pat, "\n".join(l))
        vals.append(float(m.group(1)) if m else -1.0)
    if not srv.repeat:
        if len(group) != 1:
            bad.append("%s: %d reports, want 1" % (what, len(group)))
        return bad
    r = srv.repeat
    for i, v in enumerate(vals):
        # never early; late by as much as a loaded machine makes it
        if not -0.1 <= v - vals[0] - i * r <= 0.75:
            bad.append("%s: report %d at %.3f s, the first at %.3f s (SLOWDOG_REPEAT %g s)" %
                       (what, i + 1, v, vals[0], r))
    if total is None:
        bad.append("%s: no end line" % what)
    elif vals[-1] > total + 0.1:
        bad.append("%s: a report at %.3f s, after its end at %.3f s" % (what, vals[-1], total))
    elif vals[0] + len(vals) * r < total - 0.5:
        bad.append("%s: %d reports at %s, it lasted %.3f s: a repeat is missing" %
                   (what, len(vals), vals, total))
    return bad


def ended_after(lines, rid):
    for l in lines:
        m = re.match(r"slowdog: (?:event loop stall|request) %s .*?(?:ended|finished) after "
                     r"(\d+\.\d+) s" % re.escape(rid), l)
        if m:
            return float(m.group(1))
    return None


def check_log(srv, text):
    bad = []
    reps, other = blocks(text)
    stalls = [l for k, l in reps if k == "event loop stalled"]
    slows = [l for k, l in reps if k == "slow request"]
    fin = [l for l in other if re.match(r"slowdog: request \d+-\d+ finished after", l)]
    want_stalls = [s for s in srv.shapes if s[1] == "stall"]
    want_waits = [s for s in srv.shapes if s[1] == "await"]
    groups = by_id(stalls)
    if len(groups) != len(want_stalls):
        bad.append("%d stalls reported, want %d" % (len(groups), len(want_stalls)))
    for i, (path, _, fn) in enumerate(want_stalls):
        req = "GET " + path
        if srv.aio_frames:
            mine = [g for g in groups if field(g[0], "Request") == [req]]
        else:  # the culprit is not told apart: the stalls in their order
            mine = groups[i:i + 1]
        if len(mine) != 1:
            bad.append("%d stalls naming %s, want 1 (culprits: %s)" %
                       (len(mine), req, [field(g[0], "Culprit") for g in groups]))
            continue
        rid = field(mine[0][0], "Request-Id")[0]
        bad += check_repeats(srv, "stall of " + path, mine[0], ended_after(other, rid),
                             r"Loop: +stalled (\d+\.\d+) s")
        st = mine[0][0]
        if not within(field(st, "Loop"), r"stalled (\d+\.\d+) s"):
            bad.append("%s: stall reported late: %s" % (path, field(st, "Loop")))
        for k, one in enumerate(mine[0]):
            funcs = pyfuncs(one)
            if k and "did not run the signal handler" in " ".join(field(one, "Capture")):
                continue  # a repeat on an overloaded machine
            m = re.search(r"stalled (\d+\.\d+) s", " ".join(field(one, "Loop")))
            end = ended_after(other, rid)
            if k and m and end and float(m.group(1)) > end - 0.3:
                continue  # a repeat as the stall ends: the response is on its way
            if fn not in funcs:
                bad.append("%s: the stall's Python stack (report %d) lacks %s: %s" %
                           (path, k + 1, fn, funcs[-4:]))
        culprit = " ".join(field(st, "Culprit"))
        if srv.aio_frames and req not in culprit:
            bad.append("%s: the stall's culprit: %s" % (path, culprit))
        starved = " ".join(field(st, "Starved"))
        if "GET /starve " not in starved:
            bad.append("%s: /starve is not listed as starved: %s" % (path, starved))
        if path == "/spin" and "GET /starve_slow " not in starved:
            bad.append("%s: /starve_slow is not listed as starved: %s" % (path, starved))
        if "/sleep" in starved or "/pool" in starved:
            bad.append("%s: starved lists requests that came later: %s" % (path, starved))
        if srv.aio_frames and not any(l.endswith(req) for l in fin):
            bad.append("no finished line for %s" % req)
    ended = [l for l in other if re.match(r"slowdog: event loop stall \d+-\d+ on thread \d+ ended after", l)]
    if len(ended) != len(want_stalls):
        bad.append("%d stall end lines, want %d" % (len(ended), len(want_stalls)))
    for l in ended:
        secs = float(re.search(r"after (\d+\.\d+) s", l).group(1))
        if not 1.8 <= secs <= 3.5:
            bad.append("stall ended after %.3f s, want about 2" % secs)
    for path, _, fn in want_waits + [("/starve_slow", "await", "after_stall")]:
        req = "GET " + path
        waits = [l for l in slows if field(l, "Request") == [req]]
        if not waits:
            bad.append("%s: not reported" % req)
            continue
        rid = field(waits[0], "Request-Id")[0]
        bad += check_repeats(srv, req, waits, ended_after(other, rid),
                             r"Running: +(\d+\.\d+) s")
        w = waits[0]
        if not any("awaiting on the event loop" in l for l in field(w, "Loop")):
            bad.append("%s not reported as awaiting: %s" % (path, field(w, "Loop")))
        if path == "/starve_slow":
            m = re.search(r"starved (\d+\.\d+) s of its running time",
                          " ".join(field(w, "Loop")))
            if not m or not 1.5 <= float(m.group(1)) <= 2.5:
                bad.append("%s: its starved time: %s" % (path, field(w, "Loop")))
            run = field(w, "Running")
            m = re.match(r"(\d+\.\d+) s", run[0] if run else "")
            if not m or not 2.0 <= float(m.group(1)) <= 3.0:
                bad.append("%s: running %s" % (path, run))
        elif not within(field(w, "Running"), r"(\d+\.\d+) s"):
            bad.append("%s reported late: %s" % (path, field(w, "Running")))
        # greenlets: the greenlet's frames; asyncio: the task's coroutines,
        # innermost awaited last
        funcs = pyfuncs(w)
        if (srv.greenlets or srv.aio_frames) and fn not in funcs:
            bad.append("%s: the stack lacks %s: %s (%s)" %
                       (path, fn, funcs[-4:], " ".join(field(w, "Capture"))))
        if (srv.greenlets or srv.aio_frames) and path == "/sleep" and \
                ("await_level1", "await_level2") not in list(zip(funcs, funcs[1:])):
            bad.append("/sleep's stack lacks await_level1 -> await_level2: %s" % funcs[-4:])
        if not any(l.endswith(req) for l in fin):
            bad.append("no finished line for %s" % req)
    expected = set("GET " + s[0] for s in want_waits) | {"GET /starve_slow"}
    for l in slows:
        req = " ".join(field(l, "Request"))
        if req not in expected:
            bad.append("reported: %s (%s)" % (req, " ".join(field(l, "Loop"))))
    for l in other:
        if l.startswith("slowdog: event loop stall") or l.startswith("slowdog: request"):
            continue
        bad.append("unexpected line: %s" % l)
    return bad


def run_one(srv, lib, tmp):
    port = free_port()
    logpath = os.path.join(tmp, srv.name + ".log")
    outpath = os.path.join(tmp, srv.name + ".out")
    env = dict(os.environ)
    env.update({"LD_PRELOAD": lib, "SLOWDOG_THRESHOLD": "%gs" % THRESHOLD,
                "SLOWDOG_LOG": logpath, "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(srv.env)
    if srv.repeat:
        env["SLOWDOG_REPEAT"] = "%gs" % srv.repeat
    with open(outpath, "w") as out:
        proc = subprocess.Popen(srv.argv(port), env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=HERE,
                                start_new_session=True)
    bad = []
    try:
        deadline = time.time() + 30
        while True:
            try:
                # a connection, no request: the worker serves none yet
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except (IOError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    return ["server did not start: see %s" % outpath]
                time.sleep(0.2)
        served, errors = scenario(srv, port)
        if errors:
            bad.append("client errors: %s" % errors[:3])
        if served < 20:
            bad.append("only %d fast requests served" % served)
        time.sleep(0.5)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = open(logpath).read() if os.path.exists(logpath) else ""
    bad += check_log(srv, text)
    with open(outpath) as f:
        for line in f:
            if line.startswith("slowdog:") and "debug" not in line:
                bad.append("stderr: " + line.strip())
    if bad:
        bad.append("log: %s" % logpath)
    return bad


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    build = args[0]
    only = [args[i + 1] for i, a in enumerate(args) if a == "-k"]
    lib = os.path.abspath(os.path.join(build, "libslowdog.so"))
    tmp = tempfile.mkdtemp(prefix="slowdog-eventloop-")
    todo = [srv for srv in servers()
            if not only or any(k in srv.name for k in only)]
    lock = threading.Lock()
    failed = []

    def one(srv):
        miss = srv.missing()
        if miss:
            bad, took = ["%s is missing" % miss], 0.0
        else:
            t0 = time.time()
            srv.shapes = shapes(srv)
            try:
                bad = run_one(srv, lib, tmp)
            except Exception as e:  # reported, the others go on
                bad = ["%s: %s" % (type(e).__name__, e)]
            took = time.time() - t0
        with lock:
            if bad:
                failed.append(srv.name)
                log("FAIL %s (%.1f s)" % (srv.name, took))
                for b in bad:
                    log("     " + b)
            else:
                log("ok   %s (%.1f s)" % (srv.name, took))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                srv = todo.pop(0)
            one(srv)
    workers = [threading.Thread(target=worker) for _ in range(JOBS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = len(failed)
    log("event-loop servers: %s" % ("all passed" if not failed else "%d failed" % failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
