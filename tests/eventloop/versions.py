#!/usr/bin/env python3
"""asyncio tasks on every CPython, libslowdog.so preloaded, under load.

    versions.py BUILD_DIR [-k NAME]...

Side by side: a plain asyncio server (aioserver.py, asyncio.start_server)
and Debian's pure-Python uvicorn (h11, asyncio; through a PYTHONPATH of
symlinks) on each CPython 3.8-3.13 (pyenv) and 3.14, 3.15
(scripts/newer-python); and Debian's uvicorn (/usr/bin/python3) with
uvloop and with asyncio
behind a proxy's X-Forwarded-For, two of its slow clients on the same
port number from two hosts (127.0.0.2, 127.0.0.3). While two clients keep
sending fast requests (never to be reported), /spin stalls the loop
(its culprit named by its socket) and slow ones await
asyncio.sleep through coroutines, a socket that never answers, gather,
wait_for, shield and a TaskGroup (3.11+). Each must be reported once, awaiting,
with the innermost slow function in its Python stack, matched to its
task as the server allows (its socket; under uvloop the scope's client,
or its method and path when a proxy rewrote the client).
"""
import glob
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
sys.path.insert(0, HERE)
import run as el  # noqa: E402  (the helpers of the event-loop suite)

THRESHOLD = 1.0
NEWER = os.environ.get("SLOWDOG_NEWER_PYTHON", "/opt/slowdog-python")


def request(port, path, headers=b"", bind=None, timeout=20):
    s = socket.socket()
    if bind:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(bind)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise IOError("closed during the head of %s" % path)
        data += chunk
    s.close()
    return data


def shared_port():
    """A port free on both 127.0.0.2 and 127.0.0.3."""
    for _ in range(50):
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind(("127.0.0.2", 0))
        port = a.getsockname()[1]
        b = socket.socket()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            b.bind(("127.0.0.3", port))
        except OSError:
            a.close()
            b.close()
            continue
        a.close()
        b.close()
        return port
    raise IOError("no shared port")


class Case(object):
    def __init__(self, name, argv, slow, match, env=None):
        self.name = name
        self.argv = argv          # function of the port
        self.slow = slow          # [(path, innermost function, request kwargs, extra check)]
        self.match = match        # what the Capture line must say for each
        self.env = env or {}
        self.spin = False         # /spin stalls the loop: its culprit named


def aio_case(name, py, minor):
    peer = el.silent_peer()
    slow = [("/sleep", "sleep_leaf", {}, "sleep_level1"),
            ("/socket?%d" % peer, "silent_read", {}, None),
            ("/gather", "gathered_leaf", {}, "[awaits task"),
            ("/waitfor", "waitfor_leaf", {}, None),
            ("/shield", "shield_leaf", {}, "[awaits task")]
    if minor >= 11:
        slow.append(("/taskgroup", "taskgroup_leaf", {}, "[awaits task"))
    c = Case(name, lambda port: [py, os.path.join(HERE, "aioserver.py"), str(port)],
             slow, "matched by its socket")
    c.spin = True
    return c


def uvicorn_case(name, loop, http, slow, match, py="/usr/bin/python3", env=None):
    return Case(name, lambda port: [py, "-m", "uvicorn", "--loop", loop,
                                    "--http", http, "--ws", "none", "--port", str(port),
                                    "--app-dir", HERE, "asgiapp:app"], slow, match, env)


UVICORN_DEPS = ("uvicorn", "h11", "click", "asgiref")
DIST = "/usr/lib/python3/dist-packages"


def private_path():
    """A directory of symlinks to Debian's pure-Python uvicorn and what it
    imports, for the other interpreters' PYTHONPATH; None if absent."""
    if not all(os.path.isdir(os.path.join(DIST, m)) for m in UVICORN_DEPS[:3]):
        return None
    d = tempfile.mkdtemp(prefix="slowdog-aio-path-")
    import atexit
    import shutil
    atexit.register(shutil.rmtree, d, True)
    for m in UVICORN_DEPS:
        if os.path.isdir(os.path.join(DIST, m)):
            os.symlink(os.path.join(DIST, m), os.path.join(d, m))
    return d


def uvicorn_on(name, py, path):
    c = uvicorn_case(name, "asyncio", "h11", [
        ("/sleep", "await_level2", {}, "await_level1"),
        ("/socket?%d" % el.silent_peer(), "wait_socket", {}, None)],
        "matched by its socket", py=py, env={"PYTHONPATH": path})
    c.spin = True
    return c


def interpreters():
    out = []
    for d in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*"))):
        m = re.match(r"3\.(\d+)\.", os.path.basename(d))
        py = os.path.join(d, "bin", "python")
        if m and 8 <= int(m.group(1)) <= 13 and os.path.exists(py):
            out.append((int(m.group(1)), py))
    for minor in (14, 15):
        py = os.path.join(NEWER, "3.%d" % minor, "bin", "python3.%d" % minor)
        if os.path.exists(py):
            out.append((minor, py))
    return out


def cases():
    out = []
    path = private_path()
    for minor, py in interpreters():
        out.append(aio_case("asyncio-3.%d" % minor, py, minor))
        if path:
            out.append(uvicorn_on("uvicorn-h11-3.%d" % minor, py, path))
    if os.path.exists("/usr/bin/uvicorn"):
        xff = {"headers": b"X-Forwarded-For: 10.9.8.7\r\n"}
        port = shared_port()
        # uvloop's transports keep no socket object: the scope's client
        # (host and port), and behind a proxy its method and path
        out.append(uvicorn_case("uvicorn-uvloop-hosts", "uvloop", "httptools", [
            ("/sleep", "await_level2", {"bind": ("127.0.0.2", port)}, "client 127.0.0.2:%d" % port),
            ("/socket?%d" % el.silent_peer(), "wait_socket", {"bind": ("127.0.0.3", port)},
             "client 127.0.0.3:%d" % port)], "matched by its ASGI client"))
        out.append(uvicorn_case("uvicorn-uvloop-proxy", "uvloop", "httptools", [
            ("/sleep", "await_level2", xff, "the only ASGI scope of GET /sleep")],
            "matched by the only ASGI scope"))
        out.append(uvicorn_case("uvicorn-asyncio-proxy", "asyncio", "h11", [
            ("/sleep", "await_level2", xff, None),
            ("/socket?%d" % el.silent_peer(), "wait_socket", xff, None)],
            "matched by its socket"))
    return out


def check(case, text):
    bad = []
    reps, other = el.blocks(text)
    slows = [l for k, l in reps if k == "slow request"]
    stalls = [l for k, l in reps if k == "event loop stalled"]
    if [l for k, l in reps if k not in ("slow request", "event loop stalled")]:
        bad.append("other reports: %s" % [k for k, l in reps])
    if len(stalls) != (1 if case.spin else 0):
        bad.append("%d stall reports, want %d" % (len(stalls), 1 if case.spin else 0))
    elif case.spin:
        culprit = " ".join(el.field(stalls[0], "Culprit"))
        if "GET /spin" not in culprit or "transport's socket" not in culprit:
            bad.append("the stall's culprit: %s" % culprit)
        if "spin_cpu" not in el.pyfuncs(stalls[0]):
            bad.append("the stall's stack lacks spin_cpu")
    for path, fn, _, extra in case.slow:
        req = "GET " + path
        mine = [l for l in slows if el.field(l, "Request") == [req]]
        if len(mine) != 1:
            bad.append("%d reports of %s, want 1" % (len(mine), req))
            continue
        w = mine[0]
        cap = " ".join(el.field(w, "Capture"))
        if not any("awaiting on the event loop" in l for l in el.field(w, "Loop")):
            bad.append("%s not reported as awaiting: %s" % (path, el.field(w, "Loop")))
        funcs = el.pyfuncs(w)
        if fn not in funcs:
            bad.append("%s: the stack lacks %s: %s (%s)" % (path, fn, funcs[-5:], cap))
        if case.match not in cap:
            bad.append("%s: %r, want %r" % (path, cap, case.match))
        if extra and extra.startswith("["):
            if not any(l.strip().startswith(extra) for l in w):
                bad.append("%s: no %s line" % (path, extra))
        elif extra and extra not in funcs and extra not in cap:
            bad.append("%s: neither the stack nor the capture has %s: %s (%s)" %
                       (path, extra, funcs[-5:], cap))
    want = set("GET " + s[0] for s in case.slow)
    for l in slows:
        req = " ".join(el.field(l, "Request"))
        if req not in want:
            bad.append("reported: %s" % req)
    return bad


def run_case(case, lib, tmp, results):
    port = el.free_port()
    logpath = os.path.join(tmp, case.name + ".log")
    outpath = os.path.join(tmp, case.name + ".out")
    env = dict(os.environ)
    env.update({"LD_PRELOAD": lib, "SLOWDOG_THRESHOLD": "%gs" % THRESHOLD,
                "SLOWDOG_LOG": logpath, "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(case.env)
    t0 = time.time()
    with open(outpath, "w") as out:
        proc = subprocess.Popen(case.argv(port), env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=HERE,
                                start_new_session=True)
    bad = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except (IOError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    results[case.name] = (["server did not start: see %s" % outpath], 0)
                    return
                time.sleep(0.2)
        for _ in range(3):
            request(port, "/fast")
        stop = threading.Event()
        counts = []
        fast = [threading.Thread(target=el.hammer, args=(port, stop, counts)) for _ in range(2)]
        for t in fast:
            t.daemon = True
            t.start()
        time.sleep(0.3)
        slow = [el.background(request, port, path, kw.get("headers", b""), kw.get("bind"))
                for path, _, kw, _ in case.slow]
        for t in slow:
            t.join(30)
        if case.spin:
            spin = el.background(request, port, "/spin")
            spin.join(30)
            slow.append(spin)
        time.sleep(0.3)
        stop.set()
        for t in fast:
            t.join(20)
        errors = [e for e in counts if e != 1]
        errors += [t.out["error"] for t in slow if "error" in t.out]
        if errors:
            bad.append("client errors: %s" % errors[:3])
        if len(counts) < 20:
            bad.append("only %d fast requests served" % len(counts))
        time.sleep(0.5)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = open(logpath).read() if os.path.exists(logpath) else ""
    bad += check(case, text)
    if bad:
        bad.append("log: %s" % logpath)
    results[case.name] = (bad, time.time() - t0)


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    lib = os.path.abspath(os.path.join(args[0], "libslowdog.so"))
    only = [args[i + 1] for i, a in enumerate(args) if a == "-k"]
    tmp = tempfile.mkdtemp(prefix="slowdog-aio-")
    todo = [c for c in cases() if not only or any(k in c.name for k in only)]
    results = {}
    # four at a time: two cores, servers mostly waiting
    for i in range(0, len(todo), 4):
        ths = [threading.Thread(target=run_case, args=(c, lib, tmp, results))
               for c in todo[i:i + 4]]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
    failed = 0
    for c in todo:
        bad, secs = results.get(c.name, (["did not finish"], 0))
        if bad:
            failed += 1
            el.log("FAIL %s (%.1f s)" % (c.name, secs))
            for b in bad:
                el.log("     " + b)
        else:
            el.log("ok   %s (%.1f s)" % (c.name, secs))
    if len([c for c in todo if c.name.startswith("asyncio-")]) < 8 and not only:
        el.log("note: fewer than 8 CPythons found")
    el.log("asyncio on every CPython: %s" % ("all passed" if not failed else "%d failed" % failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
