#!/usr/bin/python3
"""Integration tests: real WSGI servers with libslowdog.so really preloaded.

Usage: tests/integration/run.py [BUILD_DIR] [-k FILTER]... [-v] [--keep]
                                [--no-preload] [--list]

Each test starts one server twice, first without the library (to record
the responses) and then with LD_PRELOAD=BUILD_DIR/libslowdog.so, and drives
the same traffic at both: slow requests of several kinds (sleep, CPU,
socket wait, child process, ...) lasting about twice the threshold, fast
requests in a loop, a keep-alive connection left idle past the threshold,
an idle connection that sends nothing for a while, fast and slow streamed
responses, HEAD, and a POST with a body. It then checks that every slow
request got exactly one well-formed report in time, naming where it waits,
that it got its "finished after" line, that nothing else was reported, and
that every response is the same as without the library.

Standard library only; run it with /usr/bin/python3 (Debian's gunicorn,
uWSGI and psycopg2 belong to that interpreter).
"""

from __future__ import print_function

import argparse
import ast
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
from harness import Client, HTTPError, slowlog, which  # noqa: E402

THRESHOLD = 0.7         # SLOWDOG_THRESHOLD for every server
SLOW = 1.5              # how long a slow request takes (about 2x threshold)
IDLE = 1.2              # idle time on keep-alive connections (> threshold)
REPORT_SLACK = 1.0      # a report is due by start + threshold + this
RESPONSE_SLACK = 0.5    # ... and by the time the response arrived + this
FINISH_SLACK = 2.0      # a finished line is due by the response + this
POLL = 0.02             # log polling period
FAST_MIN = 8           # fast requests each run makes at least
SETTLE = THRESHOLD + 1.0  # quiet time before stopping, for stray reports
POST_SIZE = 150000

CLOCK = time.monotonic

# Native function names that show where a thread waits, after
# NativeFrame.base_name normalisation.
SLEEP_NAMES = {"clock_nanosleep", "nanosleep", "select", "pselect", "pselect6"}
RECV_NAMES = {"recv", "recvfrom", "recvmsg", "read", "poll", "ppoll", "select",
              "pselect"}
WAIT_NAMES = {"wait4", "waitpid", "waitid", "wait"}
PG_NAMES = {"poll", "ppoll", "select", "pselect", "recv", "recvfrom", "read",
            "epoll_wait"}
TOP_FRAMES = 8          # the wait must show within this many innermost frames

CRASH_MARKERS = ["Segmentation fault", "core dumped", "SIGSEGV", "signal 11",
                 "DAMN ! worker", "WORKER TIMEOUT", "Worker failed to boot",
                 "Aborted", "SIGABRT", "Fatal Python error", "Traceback",
                 "*** stack smashing", "double free", "malloc()", "free():"]


def log(msg):
    print(msg)
    sys.stdout.flush()


# ---------------------------------------------------------------- servers

class Slow(object):
    """A slow request and what its report must show."""

    def __init__(self, kind, target, waits=None, names=(), obj=None,
                 py_inner=(), py_has=(), depth=0, warm=False):
        self.kind = kind
        # sent as the second request of a keep-alive connection
        self.warm = warm
        self.method = "GET"
        self.target = target
        self.waits = waits          # a native frame among the top ones
        self.names = set(names)     # or: any frame with one of these names
        # or: any frame in an object whose name contains one of these
        self.obj = (obj,) if isinstance(obj, str) else tuple(obj or ())
        self.py_inner = set(py_inner)
        self.py_has = set(py_has)
        self.depth = depth

    @property
    def request(self):
        return "%s %s" % (self.method, self.target)


def python_slows(pg):
    s = "s=%g" % SLOW
    out = [
        Slow("sleep", "/sleep?%s&id=slow-sleep" % s, SLEEP_NAMES, py_inner=["slow_sleep"],
             warm=True),
        Slow("spin", "/spin?%s&id=slow-spin" % s, obj="python", py_inner=["spin_loop"]),
        Slow("recv", "/recv?%s&id=slow-recv" % s, RECV_NAMES, py_inner=["recv_wait"]),
        Slow("child", "/child?%s&id=slow-child" % s, WAIT_NAMES, py_has=["child_wait"]),
        Slow("regex", "/regex?%s&id=slow-regex" % s, obj="python",
             py_inner=["_regex_step", "regex_burn"]),
        # Running in libcrypto, or back in _hashlib waiting for the GIL
        Slow("hash", "/hash?%s&id=slow-hash" % s, obj=("libcrypto", "_hashlib"),
             names=["pbkdf2_hmac", "PKCS5_PBKDF2_HMAC"],
             py_inner=["_hash_step", "hash_burn"]),
        Slow("deep", "/deep?n=150&%s&id=slow-deep" % s, SLEEP_NAMES,
             py_inner=["slow_sleep"], depth=150),
        Slow("stream", "/stream?n=5&s=%g&id=slow-stream" % (SLOW / 4), SLEEP_NAMES,
             py_inner=["stream_chunks"], warm=True),
    ]
    if pg:
        out.append(Slow("pg", "/pg?%s&id=slow-pg" % s, PG_NAMES, py_inner=["pg_wait"]))
    return out


def c_slows():
    ms = "ms=%d" % int(SLOW * 1000)
    return [
        Slow("sleep", "/sleep?%s&id=slow-sleep" % ms, SLEEP_NAMES, warm=True),
        Slow("spin", "/spin?%s&id=slow-spin" % ms, names=["spin_for"], obj="sd-testserver"),
        Slow("recv", "/recv?%s&id=slow-recv" % ms, {"recv", "recvfrom"}),
        # a vfork child closing every descriptor in our memory first
        Slow("vfork", "/vfork?%s&id=slow-vfork" % ms, SLEEP_NAMES),
        Slow("stream", "/stream?n=5&ms=%d&id=slow-stream" % int(SLOW * 250), SLEEP_NAMES),
    ]


class Spec(object):
    """One server configuration of the matrix."""

    name = None
    app = "python"          # "python" (app.py) or "c" (sd-testserver)
    slow_parallel = 1       # slow requests at once in the checked run
    forks = False           # requests are served by children of the main pid
    serving_thread = None   # "main": tid == pid; "other": tid != pid; None
    stop_signal = signal.SIGTERM
    python = "/usr/bin/python3"
    cmd_word = "python"     # must appear in the report's Process line

    def available(self, ctx):
        return None         # or a reason to skip

    def command(self, ctx, port, tmp):
        raise NotImplementedError

    def aux(self, ctx, port, tmp):
        """Processes started without the library (nginx): (cmd, stop sig)."""
        return []

    def client_port(self, port):
        return port

    def expected_host(self, port):
        return "127.0.0.1:%d" % port


class Gunicorn(Spec):
    def __init__(self, name, args, slow_parallel, serving_thread):
        self.name = name
        self.args = args
        self.slow_parallel = slow_parallel
        self.serving_thread = serving_thread
        self.forks = True
        self.cmd_word = "gunicorn"

    def available(self, ctx):
        return None if os.path.exists("/usr/bin/gunicorn") else "no /usr/bin/gunicorn"

    def command(self, ctx, port, tmp):
        return ["/usr/bin/gunicorn", "--chdir", HERE, "-b", "127.0.0.1:%d" % port,
                "--log-level", "info", "--timeout", "60"] + self.args + ["app:app"]


class UWSGI(Spec):
    def __init__(self, name, args, slow_parallel, serving_thread, nginx=False):
        self.name = name
        self.args = args
        self.slow_parallel = slow_parallel
        self.serving_thread = serving_thread
        self.forks = True
        self.nginx = nginx
        self.ports = {}
        self.cmd_word = "uwsgi"

    def available(self, ctx):
        if not which("uwsgi"):
            return "no uwsgi"
        if not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"):
            return "no uwsgi python3 plugin"
        if self.nginx and not which("nginx"):
            return "no nginx"
        return None

    def command(self, ctx, port, tmp):
        if self.nginx:
            up = self.ports[port] = harness.free_port()
            listen = ["--socket", "127.0.0.1:%d" % up]
        else:
            listen = [self.args[0], "127.0.0.1:%d" % port]
        args = self.args[1:] if not self.nginx else self.args
        return [which("uwsgi"), "--plugin", "python3"] + listen + [
            "--master", "--wsgi-file", os.path.join(HERE, "app.py"), "--callable", "app",
            "--chdir", HERE, "--need-app", "--die-on-term", "--disable-logging",
            "--buffer-size", "32768"] + args

    def expected_host(self, port):
        # Debian's /etc/nginx/uwsgi_params passes HTTP_HOST as $host,
        # which has no port.
        return "127.0.0.1" if self.nginx else "127.0.0.1:%d" % port

    def aux(self, ctx, port, tmp):
        if not self.nginx:
            return []
        up = self.ports[port]
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {
                "tmp": tmp, "port": port, "up": up,
                "user": "user root;" if os.geteuid() == 0 else ""})
        return [([which("nginx"), "-p", tmp, "-c", conf, "-e",
                  os.path.join(tmp, "nginx-error.log")], signal.SIGTERM)]


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
%(user)s
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/client_body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_pass 127.0.0.1:%(up)d;
            uwsgi_buffering off;
            uwsgi_read_timeout 60s;
        }
    }
}
"""


class StdServer(Spec):
    slow_parallel = 4
    serving_thread = "other"
    cmd_word = "stdserver.py"

    def __init__(self, name, python):
        self.name = name
        self.python = python

    def available(self, ctx):
        return None if os.access(self.python, os.X_OK) else "no %s" % self.python

    def command(self, ctx, port, tmp):
        return [self.python, os.path.join(HERE, "stdserver.py"), str(port)]


class CServer(Spec):
    name = "c-testserver"
    app = "c"
    cmd_word = "sd-testserver"
    slow_parallel = 4
    serving_thread = "other"

    def available(self, ctx):
        return None if ctx.testserver else "no sd-testserver and no C compiler"

    def command(self, ctx, port, tmp):
        return [ctx.testserver, str(port)]


def pyenv_pythons():
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    out = []
    for minor in range(8, 14):
        v = "3.%d" % minor
        d = os.path.join(root, "versions")
        found = None
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                if name == v or name.startswith(v + "."):
                    found = os.path.join(d, name, "bin", "python3")
        out.append(("stdlib-py" + v, found or "/nonexistent/python" + v))
    return out


def matrix():
    specs = [
        Gunicorn("gunicorn-sync", ["-w", "2", "-k", "sync"], 1, "main"),
        Gunicorn("gunicorn-gthread", ["-w", "2", "-k", "gthread", "--threads", "4",
                                      "--keep-alive", "5"], 3, "other"),
        UWSGI("uwsgi-http-socket", ["--http-socket", "--processes", "2"], 1, "main"),
        UWSGI("uwsgi-threads", ["--http-socket", "--processes", "1", "--threads", "4"], 2, None),
        UWSGI("uwsgi-nginx", ["--processes", "2"], 1, "main", nginx=True),
        UWSGI("uwsgi-http11", ["--http11-socket", "--processes", "2", "--threads", "4"], 3, None),
        StdServer("stdlib", "/usr/bin/python3"),
        CServer(),
    ]
    for name, py in pyenv_pythons():
        specs.append(StdServer(name, py))
    return specs


# ---------------------------------------------------------------- one run

class Run(object):
    """What one start of one server produced."""

    def __init__(self, preload):
        self.preload = preload
        self.responses = {}     # (method, target) -> Response
        self.errors = []        # client side failures
        self.slow = {}          # request line -> Response
        self.log_text = ""
        self.tail = None
        self.output = ""
        self.returncode = None
        self.problems = []      # infrastructure problems (start, stop, load)
        self.pid = None
        self.client_port = None


def server_env(ctx, preload, log_path):
    env = harness.env(ctx.library if preload else None, log_path, THRESHOLD,
                      PYTHONUNBUFFERED="1")
    if ctx.pg_dsn:
        env["SLOWDOG_TEST_PG_DSN"] = ctx.pg_dsn
    return env


def start(cmd, env, tmp, tag, stop_signal, port):
    """A process of ours: its own process group, output in tmp/TAG.out."""
    return harness.Server(cmd, env, os.path.join(tmp, tag + ".out"), port=port,
                          cwd=tmp, stop_signal=stop_signal, session=True, wait=None)


def run_server(spec, ctx, preload, slows):
    run = Run(preload)
    tmp = tempfile.mkdtemp(prefix="%s-%s-" % (spec.name, "lib" if preload else "base"),
                           dir=ctx.tmp)
    log_path = os.path.join(tmp, "slow.log")
    port = harness.free_port()
    cport = spec.client_port(port)
    run.client_port = cport
    auxes = []
    proc = None
    try:
        # aux() needs the ports that command() picks: command first.
        cmd = spec.command(ctx, port, tmp)
        for i, (acmd, sig) in enumerate(spec.aux(ctx, port, tmp)):
            auxes.append(start(acmd, harness.env(), tmp, "aux%d" % i, sig, port))
        proc = start(cmd, server_env(ctx, preload and ctx.library is not None, log_path),
                     tmp, "server", spec.stop_signal, port)
        run.pid = proc.pid
        err = harness.wait_ready(cport, proc, CLOCK() + 30)
        if err:
            run.problems.append("start: " + err)
            return run
        # A second worker may still be importing the app.
        time.sleep(0.3)
        if preload and ctx.library:
            for pid in proc.group_pids():
                try:
                    with open("/proc/%d/maps" % pid) as f:
                        maps = f.read()
                    with open("/proc/%d/cmdline" % pid, "rb") as f:
                        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if "libslowdog.so" not in maps:
                    run.problems.append("library not mapped in pid %d (%s)" % (pid, cmdline))
        if preload and ctx.library:
            run.tail = slowlog.Tail(log_path, CLOCK)
        drive(spec, run, cport, slows, preload and ctx.library is not None)
    except Exception as e:  # the harness must report, not die
        run.problems.append("harness: %s: %s" % (type(e).__name__, e))
    finally:
        if proc:
            proc.stop(15.0)
            run.returncode = proc.returncode
            if proc.stop_problem:
                run.problems.append("stop: " + proc.stop_problem)
            run.output = proc.output()
        for a in auxes:
            a.stop(15.0)
        if run.tail:
            run.tail.poll()
        try:
            with open(log_path, "rb") as f:
                run.log_text = f.read().decode("utf-8", "replace")
        except OSError:
            run.log_text = None
        run.tmp = tmp
    return run


def drive(spec, run, port, slows, checked):
    """Sends the traffic; fills run.responses, run.slow, run.errors."""
    lock = threading.Lock()
    stop = threading.Event()
    tail = run.tail

    def record(method, target, resp):
        with lock:
            run.responses[(method, target)] = resp

    def failed(what, e):
        with lock:
            run.errors.append("%s: %s: %s" % (what, type(e).__name__, e))

    def poller():
        while not done.is_set():
            tail.poll()
            time.sleep(POLL)

    def fast_loop():
        c = Client(port)
        n = 0
        # At least FAST_MIN requests, so that a loaded machine (slow requests
        # ending early in wall time) still compares enough of them.
        end = time.monotonic() + 60
        while not stop.is_set() or (n < FAST_MIN and time.monotonic() < end):
            n += 1
            target = "/fast?id=fast-%d" % n
            try:
                r = c.request("GET", target)
                record("GET", target, r)
            except (OSError, HTTPError) as e:
                failed("GET " + target, e)
                c.close()
            if n % 5 == 0:
                c.close()
            time.sleep(0.03)
        c.close()

    def others(steps):
        for what, fn in steps:
            try:
                fn()
            except (OSError, HTTPError) as e:
                failed(what, e)

    def misc():
        others([
            ("fast stream", lambda: simple("GET", "/stream?n=3&s=0.01&id=fast-stream")),
            ("HEAD", lambda: simple("HEAD", "/fast?id=head-1")),
            ("HEAD stream", lambda: simple("HEAD", "/stream?n=3&s=0.01&id=head-stream")),
            ("POST", post),
            ("404", lambda: simple("GET", "/nope?id=missing")),
        ])

    def simple(method, target, body=None, split=0.0):
        c = Client(port)
        try:
            r = c.request(method, target, body=body, split_body=split)
            record(method, target, r)
        finally:
            c.close()

    def keepalive_idle():
        c = Client(port)
        try:
            r = c.request("GET", "/fast?id=keepalive-1")
            record("GET", "/fast?id=keepalive-1", r)
            time.sleep(IDLE)
            r = c.request("GET", "/fast?id=keepalive-2")
            record("GET", "/fast?id=keepalive-2", r)
            time.sleep(IDLE)
            r = c.request("GET", "/stream?n=2&s=0.01&id=keepalive-3")
            record("GET", "/stream?n=2&s=0.01&id=keepalive-3", r)
        finally:
            c.close()

    def idle_connection():
        c = Client(port)
        try:
            c.connect()
            time.sleep(IDLE)
            r = c.request("GET", "/fast?id=idle-1")
            record("GET", "/fast?id=idle-1", r)
        finally:
            c.close()

    def post():
        body = bytes(bytearray(random.Random(7).getrandbits(8) for _ in range(POST_SIZE)))
        simple("POST", "/post?id=post-1", body=body, split=0.1)

    def do_slow(s):
        c = Client(port)
        try:
            if s.warm:
                warm = "/fast?id=warm-" + s.kind
                record("GET", warm, c.request("GET", warm))
            r = c.request(s.method, s.target)
            record(s.method, s.target, r)
            with lock:
                run.slow[s.request] = r
            if checked:
                # Keep the connection open, as a browser would, until the
                # library has seen the end: it must not need our close.
                deadline = r.t1 + FINISH_SLACK
                while CLOCK() < deadline and s.request not in tail.finished_requests:
                    time.sleep(POLL)
        except (OSError, HTTPError) as e:
            failed(s.request, e)
        finally:
            c.close()

    done = threading.Event()
    threads = []
    if checked:
        threads.append(threading.Thread(target=poller))
    fast = threading.Thread(target=fast_loop)
    other = [threading.Thread(target=others, args=([(what, fn)],)) for what, fn in
             (("keep-alive idle", keepalive_idle), ("idle connection", idle_connection))]
    other.append(threading.Thread(target=misc))
    threads += [fast] + other
    for t in threads:
        t.daemon = True
        t.start()

    parallel = spec.slow_parallel if checked else len(slows)
    queue = list(slows)
    qlock = threading.Lock()

    def slow_worker():
        while True:
            with qlock:
                if not queue:
                    return
                s = queue.pop(0)
            do_slow(s)

    workers = [threading.Thread(target=slow_worker) for _ in range(parallel)]
    for t in workers:
        t.daemon = True
        t.start()
    for t in workers + other:
        t.join()
    stop.set()
    fast.join()
    if checked:
        # Nothing is running now; a request the library failed to end would
        # be reported within the threshold. Wait for that, then stop.
        time.sleep(SETTLE)
    done.set()
    for t in threads:
        t.join()


# ---------------------------------------------------------------- checks

_func_spans = {}


def func_spans(path):
    """{function name: [(first, last line)]} of a Python source file."""
    if path not in _func_spans:
        spans = {}
        try:
            with open(path) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    last = max(getattr(n, "lineno", node.lineno) for n in ast.walk(node))
                    spans.setdefault(node.name, []).append((node.lineno, last))
        except (OSError, SyntaxError, ValueError):
            spans = None
        _func_spans[path] = spans
    return _func_spans[path]


def source_line(path, lineno):
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if i == lineno:
                    return line.strip()
    except (OSError, UnicodeDecodeError):
        pass
    return None


def fmt_native(rep, n=TOP_FRAMES):
    return "; ".join("#%d %s%s" % (f.index, f.name or "??",
                                   " (%s)" % os.path.basename(f.obj) if f.obj else "")
                     for f in rep.native[:n])


def check_python_frames(rep, s, p):
    if rep.py_note:
        p.append("%s: %s" % (s.kind, rep.py_note))
        return
    if not rep.py_frames:
        p.append("%s: no Python traceback" % s.kind)
        return
    funcs = [f.func for f in rep.py_frames]
    inner = rep.py_frames[-1]
    if s.py_inner and inner.func not in s.py_inner:
        p.append("%s: innermost Python frame is %s, expected %s (frames: %s)"
                 % (s.kind, inner, "/".join(sorted(s.py_inner)), ", ".join(funcs[-6:])))
    for name in s.py_has:
        if name not in funcs:
            p.append("%s: no Python frame %s (frames: %s)" % (s.kind, name, ", ".join(funcs[-8:])))
    if s.depth:
        got = funcs.count("recurse")
        if got < s.depth and not rep.py_extra:
            p.append("%s: %d recurse frames, expected %d (and no note of omitted frames)"
                     % (s.kind, got, s.depth))
    if funcs and funcs[-1] != "app" and "app" not in funcs and s.kind != "stream":
        p.append("%s: the WSGI entry point app() is not in the traceback" % s.kind)
    # Every frame must point into its function; where the report quotes
    # the source line, it must be the line on disk.
    for f in rep.py_frames:
        if not f.file.startswith("/") or not os.path.exists(f.file):
            continue
        spans = func_spans(f.file)
        if spans and f.func in spans and f.func != "<module>":
            if not any(a <= f.line <= b for a, b in spans[f.func]):
                p.append("%s: frame %s: line %d is outside %s() in %s"
                         % (s.kind, f.func, f.line, f.func, f.file))
        if f.source is not None:
            want = source_line(f.file, f.line)
            if want is not None and want != f.source.strip():
                p.append("%s: frame %s line %d: source %r, file has %r"
                         % (s.kind, f.func, f.line, f.source.strip(), want))
    if rep.py_frames[-1].func == "slow_sleep" and rep.py_frames[-1].source is None:
        p.append("%s: no source line under the innermost frame" % s.kind)


def check_native(rep, s, p):
    if rep.native_note:
        p.append("%s: native stack unavailable: %s" % (s.kind, rep.native_note))
        return
    if not rep.native:
        p.append("%s: empty native stack" % s.kind)
        return
    if s.waits:
        top = [f.base_name for f in rep.native[:TOP_FRAMES]]
        if not any(n in s.waits for n in top):
            p.append("%s: no frame among the top %d names where it waits (%s); capture %r; "
                     "stack: %s" % (s.kind, TOP_FRAMES, "/".join(sorted(s.waits)),
                                    rep.capture, fmt_native(rep)))
    if s.names or s.obj:
        hit = any((f.base_name in s.names) or
                  (f.obj and any(o in os.path.basename(f.obj) for o in s.obj))
                  for f in rep.native)
        if not hit:
            p.append("%s: no frame named %s or in an object matching %s; stack: %s"
                     % (s.kind, "/".join(sorted(s.names)) or "-", "/".join(s.obj) or "-",
                        fmt_native(rep, 12)))


def thread_history(run, served, ref):
    """The requests one server thread ran around ref, times relative to it."""
    rows = sorted((r.t0, k) for k, r in run.responses.items()
                  if r.header("X-Served-By") == served and r.t1 > ref.t0 - 2.0
                  and r.t0 < ref.t1 + 0.5)
    return ", ".join("%s %s @%+.2f..%+.2f" % (k[0], k[1], r0 - ref.t0,
                                               run.responses[k].t1 - ref.t0)
                     for r0, k in rows)


def check_log(spec, run, slows, p):
    if run.log_text is None:
        p.append("log: no log file written")
        return
    reports, finished, errors = slowlog.parse(run.log_text)
    for e in errors[:20]:
        p.append("log: " + e)
    if len(errors) > 20:
        p.append("log: ... %d more parse errors" % (len(errors) - 20))

    by_request = {}
    for r in reports:
        by_request.setdefault(r.request, []).append(r)
    fin_by_id = {}
    for f in finished:
        fin_by_id.setdefault(f.request_id, []).append(f)
    slow_requests = {s.request for s in slows}

    for req, reps in sorted(by_request.items()):
        if req not in slow_requests:
            p.append("unexpected report for %s (running %s, capture %s)"
                     % (req, reps[0].fields.get("Running"), reps[0].capture))

    report_ids = set()
    for s in slows:
        resp = run.slow.get(s.request)
        reps = by_request.get(s.request, [])
        if len(reps) != 1:
            p.append("%s: %d reports for %s, expected 1%s" % (
                s.kind, len(reps), s.request,
                " (served by pid/tid %s)" % resp.header("X-Served-By")
                if resp and resp.header("X-Served-By") else ""))
            if not reps and resp and resp.header("X-Served-By"):
                p.append("note: that thread served, in this order: " + thread_history(
                    run, resp.header("X-Served-By"), resp))
            if not reps:
                continue
        rep = reps[0]
        report_ids.add(rep.request_id)
        # when
        arrivals = run.tail.reports.get(s.request) if run.tail else None
        if resp and arrivals:
            due = min(resp.t0 + THRESHOLD + REPORT_SLACK, resp.t1 + RESPONSE_SLACK)
            if arrivals[0] > due + POLL * 2:
                p.append("%s: report arrived %.2f s after the request was sent; due by %.2f s"
                         % (s.kind, arrivals[0] - resp.t0, due - resp.t0))
            if rep.running is not None and rep.running > arrivals[0] - resp.t0 + 0.1:
                p.append("%s: Running %.3f s exceeds the time since the request was sent (%.3f s)"
                         % (s.kind, rep.running, arrivals[0] - resp.t0))
        if rep.running is not None and rep.running < THRESHOLD - 0.005:
            p.append("%s: reported at %.3f s, before the threshold" % (s.kind, rep.running))
        if rep.threshold is not None and abs(rep.threshold - THRESHOLD) > 0.0005:
            p.append("%s: threshold shown as %.3f s, set to %.3f s"
                     % (s.kind, rep.threshold, THRESHOLD))
        # who
        want = spec.expected_host(run.client_port)
        if rep.fields.get("Host") != want:
            p.append("%s: Host %r, expected %r" % (s.kind, rep.fields.get("Host"), want))
        served = resp.header("X-Served-By") if resp else None
        if served and served != "%s/%s" % (rep.pid, rep.tid) and not served.endswith("/0"):
            p.append("%s: report names pid/tid %s/%s, the app ran in %s"
                     % (s.kind, rep.pid, rep.tid, served))
        if spec.forks:
            if rep.ppid != run.pid or rep.pid == run.pid:
                p.append("%s: Process %d / Parent %d: expected a worker of %d"
                         % (s.kind, rep.pid, rep.ppid, run.pid))
        elif rep.pid != run.pid:
            p.append("%s: Process %d, expected %d" % (s.kind, rep.pid, run.pid))
        if spec.serving_thread == "main" and rep.tid != rep.pid:
            p.append("%s: Thread %d, expected the main thread %d" % (s.kind, rep.tid, rep.pid))
        if spec.serving_thread == "other" and rep.tid == rep.pid:
            p.append("%s: Thread %d is the main thread; requests run on other threads"
                     % (s.kind, rep.tid))
        if spec.cmd_word not in rep.cmdline:
            p.append("%s: Process command line %r does not mention %s"
                     % (s.kind, rep.cmdline, spec.cmd_word))
        if rep.cut:
            p.append("%s: report cut (too long)" % s.kind)
        if rep.capture.startswith("failed"):
            p.append("%s: Capture: %s" % (s.kind, rep.capture))
        # what
        if spec.app == "python":
            check_python_frames(rep, s, p)
        elif rep.py_frames or rep.py_note:
            p.append("%s: Python section in a process without Python" % s.kind)
        check_native(rep, s, p)
        # end
        fins = fin_by_id.get(rep.request_id, [])
        if len(fins) != 1:
            p.append("%s: %d finished lines for %s, expected 1" % (s.kind, len(fins), rep.request_id))
            continue
        fin = fins[0]
        if fin.request != rep.request:
            p.append("%s: finished line names %r, report %r" % (s.kind, fin.request, rep.request))
        if fin.lineno < rep.lineno:
            p.append("%s: finished line before its report" % s.kind)
        if resp:
            # up to the last byte: an unframed body also waits for the close
            took = resp.t_data - resp.t0
            # Never more than the client saw; at least what the server
            # was asked to spend (SLOW), or close to what the client saw
            # (a loaded machine delays the client, not the server's clock).
            if not (min(took - 0.3, SLOW - 0.05) <= fin.seconds <= took + 0.05):
                p.append("%s: finished after %.3f s, but the client saw %.3f s"
                         % (s.kind, fin.seconds, took))
            at = run.tail.finished.get(rep.request_id) if run.tail else None
            if at is not None and at > resp.t1 + FINISH_SLACK:
                p.append("%s: finished line came %.2f s after the response"
                         % (s.kind, at - resp.t1))
    for rid, fins in sorted(fin_by_id.items()):
        if rid not in report_ids and not any(r.request_id == rid for r in reports):
            p.append("finished line for unreported request %s: %s" % (rid, fins[0].request))


def check(spec, base, lib, slows, ctx):
    p = []
    for r, tag in ((base, "baseline"), (lib, "preloaded")):
        for e in r.problems:
            p.append("%s: %s" % (tag, e))
        for e in r.errors[:10]:
            p.append("%s: request failed: %s" % (tag, e))
    if base.problems or any(e.startswith("start") for e in lib.problems):
        return p

    # the app itself, without the library
    for key, r in sorted(base.responses.items()):
        if r.status != 200 and "missing" not in key[1]:
            p.append("baseline: %s %s -> %s" % (key[0], key[1], r.status_line))
    for s in slows:
        r = base.slow.get(s.request)
        if r and r.elapsed < SLOW - 0.05:
            p.append("baseline: %s took only %.2f s" % (s.request, r.elapsed))

    # same responses with the library
    common = set(base.responses) & set(lib.responses)
    for key in sorted(set(base.responses) - set(lib.responses)):
        if not key[1].startswith("/fast?id=fast-"):
            p.append("preloaded: no response to %s %s" % key)
    nfast = sum(1 for k in common if k[1].startswith("/fast?id=fast-"))
    if nfast < FAST_MIN:
        p.append("only %d fast requests compared" % nfast)
    for key in sorted(common):
        a = base.responses[key].comparable()
        b = lib.responses[key].comparable()
        if a != b:
            p.append("response to %s %s differs: %r vs %r" % (key[0], key[1], a, b))

    # the server's own output and exit
    for line in lib.output.splitlines():
        if "slowdog:" in line:
            p.append("server output: %s" % line.strip()[:300])
    for m in CRASH_MARKERS:
        if m in lib.output and m not in base.output:
            p.append("server output mentions %r" % m)
    if base.returncode != lib.returncode:
        p.append("exit status %s with the library, %s without" % (lib.returncode, base.returncode))

    if lib.preload and ctx.library:
        check_log(spec, lib, slows, p)
    return p


# ---------------------------------------------------------------- setup

class Context(object):
    library = None
    testserver = None
    pg_dsn = None
    tmp = None


def build_testserver(ctx, build):
    exe = os.path.join(build, "tests", "sd-testserver")
    src = os.path.join(HERE, "testserver.c")
    if os.access(exe, os.X_OK) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    # Not built yet, or older than its source: build a private copy.
    cc = which("cc") or which("gcc") or which("clang")
    if not cc:
        return None
    out = os.path.join(ctx.tmp, "sd-testserver")
    rc = subprocess.call([cc, "-std=gnu11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra",
                          "-pthread", os.path.join(HERE, "testserver.c"), "-o", out])
    return out if rc == 0 else None


class Postgres(object):
    """A throwaway cluster on a Unix socket, when we are root and can."""

    def __init__(self, tmp):
        self.dir = None
        self.dsn = None
        self.bin = None
        bins = sorted(d for d in (os.listdir("/usr/lib/postgresql")
                                  if os.path.isdir("/usr/lib/postgresql") else []))
        if not bins or os.geteuid() != 0 or not which("runuser"):
            return
        try:
            import pwd
            pw = pwd.getpwnam("postgres")
        except (ImportError, KeyError):
            return
        if subprocess.call(["/usr/bin/python3", "-c", "import psycopg2"],
                           stderr=subprocess.DEVNULL) != 0:
            return
        self.bin = "/usr/lib/postgresql/%s/bin" % bins[-1]
        self.dir = tempfile.mkdtemp(prefix="pg-", dir=tmp)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(tmp, 0o755)
        port = harness.free_port()
        env = harness.env()
        env.pop("PGDATA", None)
        try:
            subprocess.check_call(["runuser", "-u", "postgres", "--", self.bin + "/initdb",
                                   "-D", self.dir + "/data", "-A", "trust", "-U", "postgres",
                                   "--no-sync"], stdout=subprocess.DEVNULL, env=env)
            subprocess.check_call(["runuser", "-u", "postgres", "--", self.bin + "/pg_ctl",
                                   "-D", self.dir + "/data", "-l", self.dir + "/log", "-w",
                                   "-o", "-k %s -p %d -c listen_addresses= -c fsync=off"
                                   % (self.dir, port), "start"],
                                  stdout=subprocess.DEVNULL, env=env)
            self.dsn = "host=%s port=%d dbname=postgres user=postgres" % (self.dir, port)
        except (OSError, subprocess.CalledProcessError) as e:
            log("note: no private PostgreSQL (%s); /pg requests skipped" % e)

    def stop(self):
        if self.dsn:
            subprocess.call(["runuser", "-u", "postgres", "--", self.bin + "/pg_ctl",
                             "-D", self.dir + "/data", "-m", "immediate", "stop"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build",
                    help="meson build directory (default: ./build)")
    ap.add_argument("-k", action="append", default=[], metavar="FILTER",
                    help="run only tests whose name contains FILTER (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print the log and server output of failed tests")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--no-preload", action="store_true",
                    help="run the checked server without the library (harness self-check)")
    ap.add_argument("--list", action="store_true", help="list the tests and exit")
    ap.add_argument("--no-pg", action="store_true", help="do not start PostgreSQL")
    args = ap.parse_args()

    specs = [s for s in matrix() if not args.k or any(k in s.name for k in args.k)]
    if args.list:
        for s in specs:
            print(s.name)
        return 0
    if not specs:
        log("no test matches %s" % args.k)
        return 2

    ctx = Context()
    build = os.path.abspath(args.build)
    if not args.no_preload:
        lib = os.path.join(build, "libslowdog.so")
        if not os.path.exists(lib):
            log("error: %s does not exist (build first, or use --no-preload)" % lib)
            return 2
        ctx.library = lib
    ctx.tmp = tempfile.mkdtemp(prefix="sd-it-")
    os.chmod(ctx.tmp, 0o755)
    started = CLOCK()
    results = {"pass": 0, "fail": 0, "skip": 0}
    pg = None
    try:
        ctx.testserver = build_testserver(ctx, build)
        if not args.no_pg and any(s.app == "python" and s.python == "/usr/bin/python3"
                                  for s in specs):
            pg = Postgres(ctx.tmp)
            ctx.pg_dsn = pg.dsn
        for spec in specs:
            why = spec.available(ctx)
            if why:
                log("SKIP %s (%s)" % (spec.name, why))
                results["skip"] += 1
                continue
            t0 = CLOCK()
            if spec.app == "c":
                slows = c_slows()
            else:
                slows = python_slows(ctx.pg_dsn is not None and spec.python == "/usr/bin/python3")
            base = run_server(spec, ctx, False, slows)
            lib = run_server(spec, ctx, True, slows)
            problems = check(spec, base, lib, slows, ctx)
            failures = [x for x in problems if not x.startswith("note:")]
            took = CLOCK() - t0
            if failures:
                results["fail"] += 1
                log("FAIL %s (%.1f s, %d problems)" % (spec.name, took, len(failures)))
            else:
                results["pass"] += 1
                log("ok   %s (%.1f s)" % (spec.name, took))
            for x in problems:
                log("     " + x)
            if failures and args.verbose:
                log("     --- log (%s)" % lib.tmp)
                for line in (lib.log_text or "").splitlines():
                    log("     | " + line)
                log("     --- server output")
                for line in lib.output.splitlines()[-40:]:
                    log("     | " + line)
    finally:
        if pg:
            pg.stop()
        if args.keep:
            log("kept %s" % ctx.tmp)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)
    log("%d passed, %d failed, %d skipped in %.0f s"
        % (results["pass"], results["fail"], results["skip"], CLOCK() - started))
    return 1 if results["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
