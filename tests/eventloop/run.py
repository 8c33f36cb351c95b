#!/usr/bin/env python3
"""Event-loop servers with libslowdog.so preloaded, under concurrent load.

    run.py BUILD_DIR [-k NAME]...

For each server (gunicorn -k gevent and -k eventlet, uWSGI --gevent,
uvicorn with asyncio and with uvloop, gunicorn with UvicornWorker), from
Debian's packages and /usr/bin/python3: while two clients keep sending
fast requests, one request stalls the loop (/spin: CPU) with another in
flight (/starve), then one awaits on a free loop (/sleep, through two
functions); then idle keep-alive, WebSockets held open and thread-pool
work. The log must hold exactly: one stall report naming its culprit and
the starved request, its resume line, one awaiting report with its
stack, and nothing about the rest.
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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- servers ----

class Server(object):
    greenlets = True
    websockets = False

    def __init__(self, name, argv, needs):
        self.name = name
        self.argv = argv
        self.needs = needs

    def missing(self):
        for path in self.needs:
            if not os.path.exists(path):
                return path
        return None


def gunicorn(name, worker, app, greenlets=True):
    s = Server(name, lambda port: [PY, "/usr/bin/gunicorn", "-k", worker, "-w", "1",
                                   "-b", "127.0.0.1:%d" % port, "--chdir", HERE, app],
               ["/usr/bin/gunicorn"])
    s.greenlets = greenlets
    return s


def uvicorn(name, loop, http):
    s = Server(name, lambda port: [PY, "-m", "uvicorn", "--loop", loop, "--http", http,
                                   "--ws", "wsproto", "--port", str(port),
                                   "--app-dir", HERE, "asgiapp:app"],
               ["/usr/bin/uvicorn"])
    s.greenlets = False
    s.websockets = True
    return s


def servers():
    uw = Server("uwsgi-gevent", lambda port: [
        "/usr/bin/uwsgi", "--plugin", "python3,gevent_python3", "--http-socket",
        "127.0.0.1:%d" % port, "--gevent", "100", "--gevent-monkey-patch",
        "--master", "--processes", "1", "--die-on-term", "--chdir", HERE,
        "--wsgi-file", os.path.join(HERE, "wsgiapp.py"), "--callable", "app",
        "--disable-logging"],
        ["/usr/bin/uwsgi", "/usr/lib/uwsgi/plugins/gevent_python3_plugin.so"])
    return [
        gunicorn("gunicorn-gevent", "gevent", "wsgiapp:app"),
        gunicorn("gunicorn-eventlet", "eventlet", "wsgiapp:app"),
        uw,
        uvicorn("uvicorn-asyncio", "asyncio", "h11"),
        uvicorn("uvicorn-uvloop", "uvloop", "httptools"),
        gunicorn("gunicorn-uvicornworker", "uvicorn.workers.UvicornWorker",
                 "asgiapp:app", greenlets=False),
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


def hammer(port, stop, counts):
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
                if "closed during the head" not in str(e):
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
    fast = [threading.Thread(target=hammer, args=(port, stop, counts)) for _ in range(2)]
    for t in fast:
        t.daemon = True
        t.start()
    time.sleep(0.3)
    slow = []
    for path, kind, fn in srv.shapes:
        if kind == "stall":
            # it holds the loop while /starve waits for it
            slow.append(background(get, port, "/starve"))
            time.sleep(0.1)
        slow.append(background(get, port, path))
        for t in slow[-2:]:
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


def check_log(srv, text):
    bad = []
    reps, other = blocks(text)
    stalls = [l for k, l in reps if k == "event loop stalled"]
    slows = [l for k, l in reps if k == "slow request"]
    fin = [l for l in other if re.match(r"slowdog: request \d+-\d+ finished after", l)]
    want_stalls = [s for s in srv.shapes if s[1] == "stall"]
    want_waits = [s for s in srv.shapes if s[1] == "await"]
    if len(stalls) != len(want_stalls):
        bad.append("%d stall reports, want %d" % (len(stalls), len(want_stalls)))
    for path, _, fn in want_stalls:
        req = "GET " + path
        mine = [st for st in stalls if field(st, "Request") == [req]]
        if len(mine) != 1:
            bad.append("%d stall reports naming %s, want 1 (culprits: %s)" %
                       (len(mine), req, [field(st, "Culprit") for st in stalls]))
            continue
        st = mine[0]
        if not within(field(st, "Loop"), r"stalled (\d+\.\d+) s"):
            bad.append("%s: stall reported late: %s" % (path, field(st, "Loop")))
        funcs = pyfuncs(st)
        if fn not in funcs:
            bad.append("%s: the stall's Python stack lacks %s: %s" % (path, fn, funcs[-4:]))
        culprit = " ".join(field(st, "Culprit"))
        if req not in culprit:
            bad.append("%s: the stall's culprit: %s" % (path, culprit))
        starved = " ".join(field(st, "Starved"))
        if "GET /starve" not in starved:
            bad.append("%s: /starve is not listed as starved: %s" % (path, starved))
        if "/sleep" in starved or "/pool" in starved:
            bad.append("%s: starved lists requests that came later: %s" % (path, starved))
        if not any(l.endswith(req) for l in fin):
            bad.append("no finished line for %s" % req)
    ended = [l for l in other if re.match(r"slowdog: event loop stall \d+-\d+ on thread \d+ ended after", l)]
    if len(ended) != len(want_stalls):
        bad.append("%d stall end lines, want %d" % (len(ended), len(want_stalls)))
    for l in ended:
        secs = float(re.search(r"after (\d+\.\d+) s", l).group(1))
        if not 1.8 <= secs <= 3.5:
            bad.append("stall ended after %.3f s, want about 2" % secs)
    for path, _, fn in want_waits:
        req = "GET " + path
        waits = [l for l in slows if field(l, "Request") == [req]]
        if len(waits) != 1:
            bad.append("%d reports of %s, want 1" % (len(waits), req))
            continue
        w = waits[0]
        if not any("awaiting on the event loop" in l for l in field(w, "Loop")):
            bad.append("%s not reported as awaiting: %s" % (path, field(w, "Loop")))
        if not within(field(w, "Running"), r"(\d+\.\d+) s"):
            bad.append("%s reported late: %s" % (path, field(w, "Running")))
        # greenlets: the greenlet's frames; asyncio: the task's coroutines,
        # innermost awaited last
        funcs = pyfuncs(w)
        if fn not in funcs:
            bad.append("%s: the stack lacks %s: %s (%s)" %
                       (path, fn, funcs[-4:], " ".join(field(w, "Capture"))))
        if path == "/sleep" and ("await_level1", "await_level2") not in \
                list(zip(funcs, funcs[1:])):
            bad.append("/sleep's stack lacks await_level1 -> await_level2: %s" % funcs[-4:])
        if not any(l.endswith(req) for l in fin):
            bad.append("no finished line for %s" % req)
    expected = set("GET " + s[0] for s in want_waits)
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
    failed = 0
    for srv in servers():
        if only and not any(k in srv.name for k in only):
            continue
        miss = srv.missing()
        if miss:
            log("FAIL %s: %s is missing" % (srv.name, miss))
            failed += 1
            continue
        t0 = time.time()
        srv.shapes = shapes(srv)
        bad = run_one(srv, lib, tmp)
        if bad:
            failed += 1
            log("FAIL %s (%.1f s)" % (srv.name, time.time() - t0))
            for b in bad:
                log("     " + b)
        else:
            log("ok   %s (%.1f s)" % (srv.name, time.time() - t0))
    log("event-loop servers: %s" % ("all passed" if not failed else "%d failed" % failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
