"""What the Python test suites share: a free port, a server started with
libslowdog.so preloaded (and stopped, whatever it does), waiting for a
condition or a log line, a small HTTP/1.1 client. The log parser is
slowlog.py, next to this file.

A suite under tests/<name>/ reaches both with these lines (the first
keeps the source tree free of bytecode):

    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import harness  # noqa: E402
    from harness import slowlog  # noqa: E402

Standard library only, and nothing newer than Python 3.8: the suites run
under Debian's /usr/bin/python3 and under pyenv's 3.8 and later.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import slowlog  # noqa: F401  (harness.slowlog: the one log parser)

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
INTEGRATION = os.path.join(TESTS, "integration")
# The threaded standard library WSGI server; apps from tests/integration.
STDSERVER = os.path.join(INTEGRATION, "stdserver.py")
# Debian's gunicorn, uWSGI plugin and psycopg2 belong to this interpreter.
PY = "/usr/bin/python3"

CLOCK = time.monotonic


def build_dir(argv=None):
    """The build directory a suite was given: its first argument unless
    that is an option, else build; absolute."""
    argv = sys.argv if argv is None else argv
    return os.path.abspath(argv[1] if len(argv) > 1 and not argv[1].startswith("-")
                           else "build")


def library(build=None):
    """The preload library of a build directory (build_dir())."""
    return os.path.join(os.path.abspath(build or build_dir()), "libslowdog.so")


def free_port(kind=socket.SOCK_STREAM, family=socket.AF_INET, addr="127.0.0.1"):
    """A port nobody listens on at the moment."""
    s = socket.socket(family, kind)
    try:
        s.bind((addr, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def which(prog):
    """Like shutil.which, but also looks in /usr/sbin and /usr/bin."""
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":") + ["/usr/sbin", "/usr/bin"]:
        p = os.path.join(d, prog)
        if os.access(p, os.X_OK):
            return p
    return None


def wait_for(cond, timeout, step=0.05):
    """Calls cond() until it is true (True) or timeout seconds passed
    (False)."""
    end = CLOCK() + timeout
    while True:
        if cond():
            return True
        if CLOCK() > end:
            return False
        time.sleep(step)


def env(lib=None, log=None, threshold=None, **extra):
    """The environment for a server: ours without any SLOWDOG_*,
    LD_PRELOAD, PYTHONPATH or PYTHONHOME, with lib preloaded when given
    (SLOWDOG_LOG=log, SLOWDOG_THRESHOLD=threshold: "500ms", or seconds),
    then extra."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("SLOWDOG_") and
         k not in ("LD_PRELOAD", "PYTHONPATH", "PYTHONHOME")}
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    if lib:
        e["LD_PRELOAD"] = lib
        if log:
            e["SLOWDOG_LOG"] = log
        if threshold is not None:
            if not isinstance(threshold, str):
                threshold = "%dms" % round(threshold * 1000)
            e["SLOWDOG_THRESHOLD"] = threshold
    e.update(extra)
    return e


def read_log(path, binary=False):
    """The whole file (text: UTF-8, bad bytes replaced); empty when there
    is none."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    return data if binary else data.decode("utf-8", "replace")


def wait_log(path, pattern, timeout=5.0):
    """Whether the regular expression (str, or bytes to match the raw
    bytes) turns up in the file within timeout seconds."""
    binary = isinstance(pattern, bytes)
    return wait_for(lambda: re.search(pattern, read_log(path, binary)), timeout, 0.02)


def get(port, path, timeout=20):
    """GET http://127.0.0.1:port/path; the body (an HTTP error raises)."""
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                timeout=timeout) as r:
        return r.read()


def send(port, data, timeout=20):
    """Raw bytes in, everything the server says until it closes out."""
    s = socket.create_connection(("127.0.0.1", port), timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    finally:
        s.close()


def start_threads(fn, items):
    """fn(item) for every item, each in a daemon thread, all started."""
    ts = [threading.Thread(target=fn, args=(x,), daemon=True) for x in items]
    for t in ts:
        t.start()
    return ts


def at_once(fn, items):
    """fn(item) for every item at once; the results in order, the repr of
    its exception where a call raised."""
    out = [None] * len(items)

    def one(i):
        try:
            out[i] = fn(items[i])
        except Exception as e:
            out[i] = repr(e)
    for t in start_threads(one, range(len(items))):
        t.join()
    return out


class Server(object):
    """A server process, with the library preloaded when env says so.

    cmd: the command; "PORT" in its words stands for the port (a free one
    unless given). Standard error, and standard output unless stdout is
    "null" or "pipe", go to the file out. log: the slowdog log, for
    logtext() and wait_log() (SLOWDOG_LOG of env when not given).

    Waits up to wait seconds (None: not at all) for the port to take a
    connection or the process to exit; raises RuntimeError when it did not
    come up and must_start. session: the server leads a process group of
    its own, which stop() kills whole at the end (workers left behind).
    """

    def __init__(self, cmd, env, out, port=None, log=None, cwd=None,
                 stop_signal=signal.SIGTERM, session=False, umask=None,
                 stdout="merge", wait=15.0, must_start=True):
        self.port = free_port() if port is None else port
        self.env = env
        self.log = log or env.get("SLOWDOG_LOG")
        self.out = out
        self.stop_signal = stop_signal
        self.session = session
        self.cmd = [a.replace("PORT", str(self.port)) for a in cmd]
        self.alive = None       # at stop(): whether it still ran
        self.stop_problem = None
        self.returncode = None
        with open(out, "wb") as f:
            self.p = subprocess.Popen(
                self.cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stderr=f,
                stdout={"merge": f, "null": subprocess.DEVNULL,
                        "pipe": subprocess.PIPE}[stdout],
                start_new_session=session,
                preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
        self.pid = self.p.pid
        if wait is not None and not self.wait_up(wait) and must_start:
            self.stop()
            raise RuntimeError("server did not start: %s" % self.output()[-1000:])

    def up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def wait_up(self, timeout):
        """Whether the port takes connections within timeout seconds
        (False at once when the process exited)."""
        wait_for(lambda: self.p.poll() is not None or self.up(), timeout)
        return self.p.poll() is None and self.up()

    def output(self):
        """What the server wrote to out."""
        return read_log(self.out)

    def group_pids(self):
        """Live processes of the server's process group (itself and its
        workers; with session)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[2]) == self.pid:
                out.append(int(d))
        return out

    def stop(self, timeout=10.0, sig=None):
        """Sends the stop signal, waits timeout seconds, then kills (the
        whole group with session); returns output(). alive, returncode and
        stop_problem say how it went."""
        sig = self.stop_signal if sig is None else sig
        self.alive = self.p.poll() is None
        if self.alive:
            try:
                self.p.send_signal(sig)
            except OSError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_problem = "did not exit within %.0f s of %s" % (
                    timeout, signal.Signals(sig).name)
                self.p.kill()
        if self.session:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.p.stdout:
            self.p.stdout.close()
        self.returncode = self.p.returncode
        return self.output()

    def logtext(self):
        return read_log(self.log)

    def logbytes(self):
        return read_log(self.log, binary=True)

    def wait_log(self, pattern, timeout=5.0):
        return wait_log(self.log, pattern, timeout)

    def get(self, path, timeout=20):
        return get(self.port, path, timeout)

    def send(self, data, timeout=20):
        return send(self.port, data, timeout)


# ---------------------------------------------------------------- client

class HTTPError(Exception):
    pass


class Stale(HTTPError):
    """A kept-alive connection the server had closed."""


class Response(object):
    def __init__(self):
        self.status_line = None
        self.headers = []
        self.body = b""
        self.close = False      # the server will close (or did)
        self.t0 = self.t1 = None
        self.t_data = None      # when the last byte of the response came

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def status(self):
        return int(self.status_line.split()[1])

    def comparable(self):
        """What must not change with the library: all but Date."""
        return (self.status_line,
                tuple((k, v) for k, v in self.headers
                      if k.lower() not in ("date", "x-served-by")),
                self.body)

    @property
    def elapsed(self):
        return self.t1 - self.t0


class Client(object):
    """A minimal HTTP/1.1 client over one socket at a time, with the times
    of the request and of the response's last byte (CLOCK)."""

    def __init__(self, port, timeout=30.0):
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.used = False

    def connect(self):
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.used = False

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def send_head(self, method, target, body=None, extra=()):
        lines = ["%s %s HTTP/1.1" % (method, target),
                 "Host: 127.0.0.1:%d" % self.port,
                 "User-Agent: slowdog-tests"]
        lines += list(extra)
        if body is not None:
            lines += ["Content-Type: application/octet-stream",
                      "Content-Length: %d" % len(body)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def request(self, method, target, body=None, extra=(), split_body=0.0):
        """One request; like browsers, retried once on a fresh connection
        when a reused one turns out to be closed before any reply byte."""
        if self.sock is not None and self.used:
            try:
                return self._request(method, target, body, extra, split_body)
            except Stale:
                self.close()
        if self.sock is None:
            self.connect()
        return self._request(method, target, body, extra, split_body)

    def _request(self, method, target, body, extra, split_body):
        reused, self.used = self.used, True
        head = self.send_head(method, target, body, extra)
        t0 = CLOCK()
        try:
            if body is not None and split_body:
                self.sock.sendall(head + body[:1000])
                time.sleep(split_body)
                self.sock.sendall(body[1000:])
            else:
                self.sock.sendall(head + (body or b""))
        except (BrokenPipeError, ConnectionResetError):
            if reused:
                raise Stale()
            raise
        resp = self.read_response(method, reused)
        resp.t0 = t0
        resp.t1 = CLOCK()
        if not resp.close or resp.t_data is None:
            resp.t_data = resp.t1
        if resp.close:
            self.close()
        return resp

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        self.t_data = CLOCK()
        return True

    def _until(self, sep):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = self.buf[:i]
                self.buf = self.buf[i + len(sep):]
                return out
            if not self._fill():
                raise HTTPError("connection closed by the server (have %r)" % self.buf[:80])

    def _exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise HTTPError("connection closed after %d of %d body bytes"
                                % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, method, reused=False):
        r = Response()
        if reused and not self.buf:
            try:
                if not self._fill():
                    raise Stale()
            except ConnectionResetError:
                raise Stale()
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        r.status_line = head[0]
        if not r.status_line.startswith("HTTP/1."):
            raise HTTPError("bad status line %r" % r.status_line)
        for line in head[1:]:
            k, _, v = line.partition(":")
            r.headers.append((k, v.strip()))
        code = r.status
        conn = (r.header("Connection") or "").lower()
        r.close = conn == "close" or r.status_line.startswith("HTTP/1.0") and conn != "keep-alive"
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if method == "HEAD" or 100 <= code < 200 or code in (204, 304):
            pass
        elif "chunked" in te:
            parts = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n"):
                        pass
                    break
                parts.append(self._exact(size))
                if self._exact(2) != b"\r\n":
                    raise HTTPError("bad chunk framing")
            # Compare payloads, not framing: a proxy may regroup chunks.
            r.body = b"".join(parts)
        elif cl is not None:
            r.body = self._exact(int(cl))
        else:
            while self._fill():
                pass
            r.body, self.buf = self.buf, b""
            r.close = True
            r.t_data = self.t_data
        return r


def wait_ready(port, server, deadline):
    """For tests/integration/app.py: None once /fast answered "ok" three
    times in a row, else why not by deadline (CLOCK)."""
    ok = 0
    n = 0
    last = None
    while CLOCK() < deadline:
        if server.p.poll() is not None:
            return "server exited with %s during startup" % server.p.returncode
        n += 1
        c = Client(port, timeout=5)
        try:
            r = c.request("GET", "/fast?id=ready-%d" % n, extra=["Connection: close"])
            if r.status == 200 and r.body == b"ok\n":
                ok += 1
                if ok >= 3:
                    return None
            else:
                ok = 0
                last = r.status_line
        except (OSError, HTTPError) as e:
            ok = 0
            last = str(e)
            time.sleep(0.1)
        finally:
            c.close()
    return "not ready in time (last: %s)" % last
