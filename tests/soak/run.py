#!/usr/bin/python3
"""Soak test: a long mixed load through real servers with slowdog preloaded.

usage: tests/soak/run.py [BUILD_DIR] [--quick | --minutes N] [-k NAME]...
                         [--without JOB]... [--no-preload] [-v] [--keep]

For gunicorn (gthread, -w 2 --threads 4) and uWSGI (--processes 2
--threads 2, --http-socket, stopped with SIGINT), with the integration
app (tests/integration/app.py):

 1. a short baseline run without the library records the answer to every
    kind of request, each kind at least twice (the app's answers depend
    only on the request: a kind whose answers differ between its own runs
    is left out of the comparison, and named);
 2. the checked run, with LD_PRELOAD=libslowdog.so, SLOWDOG_THRESHOLD=300ms,
    SLOWDOG_REPEAT=200ms and SLOWDOG_REPEAT_MAX=3, sends about a thousand
    requests per second from several client threads: mostly fast ones on
    kept-alive connections, and HTTP/1.0, HEAD, POST, streamed answers,
    three pipelined requests, 64 KiB header lines and request lines, garbage
    bytes, heads cut in the middle; alongside, slow requests with unique
    ids (sleep 0.45 s or 0.8 s, CPU 0.5 s, HEAD, a slow one with a fast one
    pipelined behind it), slow requests whose client closes before the
    answer, and slowloris clients that trickle a head over 0.6 s.

Checked: every answer is the baseline's (Date and X-Served-By aside, the
request's id put back); the log parses; every slow request has one to three
reports (one per 200 ms from the threshold on), numbered, and its finished
line; nothing else is reported; no worker died or was replaced; the server
exits as it does without the library; its output names no crash and has
no slowdog line; each worker's VmRSS grew by less than 2 MiB from the end
of the first part (--quick: the first 4 s; long: the first minute) to the
end.

Decisions on what else may be reported:
  * a slowloris request, under its name or what its head held so far: the
    server really is busy with it (a thread reads its head for longer than
    the threshold); not required either;
  * a slow request whose client reset the connection (RST) before the
    server read it: the server may never see it;
  * a fast request that the client itself waited longer than the threshold
    for (the machine stalled the server): noted, not a failure.
A slow request whose client closed (FIN) after sending it is still run to
the end by the server: it must be reported (its finished line is optional).
On a machine so busy that slow requests overrun (or load average above
1.5 per CPU), up to 2% of the slow requests may miss a capture or their
report (noted); more is a failure.

--quick (CI): 12 s of load per server, about 60 s in all.
--minutes N: N minutes of load per server.
--without JOB leaves a kind of job out (pipeline, pipeline_slow, slowloris,
...: the j_ methods of Traffic) to tell which one a failure comes from;
--no-preload runs the checked part without the library too, to see the
servers' own memory growth (its log checks then fail).
Standard library only; run it with /usr/bin/python3.
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(HERE))
import harness  # noqa: E402
from harness import slowlog  # noqa: E402

INTEG = harness.INTEGRATION

THRESHOLD = 0.3
REPEAT = 0.2
REPEAT_MAX = 3
RSS_BOUND = 2 * 1024       # KiB
SLACK = 0.15               # a capture due this close to the end may be lost
OVERRUN = 0.25             # a slow request this much longer than asked: stalled
TIMEOUT = 20.0             # client socket timeout
# Words in a server's output that mean a crash (the integration list minus
# "Traceback" and the malloc ones, which the servers print for clients that
# went away; a Python "Fatal" or a C crash is still caught).
CRASH = ["Segmentation fault", "core dumped", "SIGSEGV", "signal 11",
         "DAMN ! worker", "WORKER TIMEOUT", "Worker failed to boot",
         "Aborted", "SIGABRT", "Fatal Python error", "stack smashing",
         "double free", "corrupted", "Booting worker", "respawned",
         "MemoryError"]
CLOCK = time.monotonic


def log(msg):
    print(msg)
    sys.stdout.flush()


# ---------------------------------------------------------------- servers

class Server(object):
    name = None
    stop_signal = signal.SIGTERM
    fast_lanes = 6
    slow_lanes = 2

    def command(self, port):
        raise NotImplementedError

    def available(self):
        return None


class Gunicorn(Server):
    name = "gunicorn-gthread"
    slow_lanes = 3

    def available(self):
        return None if os.path.exists("/usr/bin/gunicorn") else "no gunicorn"

    def command(self, port):
        return ["/usr/bin/gunicorn", "--chdir", INTEG, "-b", "127.0.0.1:%d" % port,
                "-w", "2", "-k", "gthread", "--threads", "4", "--timeout", "60",
                "--keep-alive", "2", "--log-level", "warning", "app:app"]


class UWSGI(Server):
    name = "uwsgi-threads"
    stop_signal = signal.SIGINT

    def available(self):
        if not harness.which("uwsgi"):
            return "no uwsgi"
        if not os.path.exists("/usr/lib/uwsgi/plugins/python3_plugin.so"):
            return "no uwsgi python3 plugin"
        return None

    def command(self, port):
        return [harness.which("uwsgi"), "--plugin", "python3",
                "--http-socket", "127.0.0.1:%d" % port, "--master",
                "--processes", "2", "--threads", "2",
                "--wsgi-file", os.path.join(INTEG, "app.py"), "--callable", "app",
                "--chdir", INTEG, "--need-app", "--disable-logging"]


SERVERS = [Gunicorn(), UWSGI()]


def server_env(preload, lib, log_path):
    if not preload:
        return harness.env(PYTHONUNBUFFERED="1")
    return harness.env(lib, log_path, THRESHOLD, PYTHONUNBUFFERED="1",
                       SLOWDOG_REPEAT="%dms" % int(REPEAT * 1000),
                       SLOWDOG_REPEAT_MAX=str(REPEAT_MAX))


def vmrss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def workers(proc):
    return sorted(p for p in proc.group_pids() if p != proc.pid)


# ---------------------------------------------------------------- traffic

HDR_RE = re.compile(rb"\r\n(?:Date|X-Served-By): [^\r\n]*", re.I)


def norm(data, ident):
    """An answer with what legitimately differs taken out."""
    data = HDR_RE.sub(b"", data)
    return data.replace(ident.encode(), b"<ID>") if ident else data


def norm_resp(r, ident):
    head = r.status_line + "".join("\r\n%s: %s" % kv for kv in r.headers)
    return norm(head.encode("latin-1") + b"\r\n\r\n" + r.body, ident)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def exchange(port, chunks, gap=0.0, shut=False, read=True):
    """Sends chunks (gap seconds apart), reads to the end. Returns the bytes
    read and how the connection ended: "eof" (FIN or RST: a server that
    closes with unread input resets, by chance of timing) or "timeout"."""
    s = connect(port)
    try:
        try:
            for i, c in enumerate(chunks):
                if i and gap:
                    time.sleep(gap)
                s.sendall(c)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed early; what it said is still there
        if not read:
            return b"", "unread"
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return out, "timeout"
            except OSError:
                return out, "eof"
            if not d:
                return out, "eof"
            out += d
    finally:
        s.close()


def head(method, target, extra=(), version="HTTP/1.1", host=True):
    lines = ["%s %s %s" % (method, target, version)]
    if host:
        lines.append("Host: soak.example")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


GARBAGE = []
_g = random.Random(1234)
for _n in (1, 7, 100, 3000):
    for _k in range(4):
        b = bytes(_g.getrandbits(8) for _ in range(_n))
        if _k == 1:
            b += b"\r\n\r\n"
        elif _k == 2:
            b = b"GET " + b + b" HTTP/1.1\r\n\r\n"
        elif _k == 3:
            b = b"\x16\x03\x01" + b  # a TLS client hello, sort of
        GARBAGE.append(b)


class Traffic(object):
    """Runs the job mix; records answers by kind and the expectations."""

    def __init__(self, port, seed):
        self.port = port
        self.seed = seed
        self.lock = threading.Lock()
        self.next = 0
        self.outcomes = collections.defaultdict(list)   # kind -> [(ident, outcome)]
        self.errors = []
        self.must = {}          # ident -> (kind, nominal seconds)
        self.may = set()        # idents that may be reported
        self.count = collections.Counter()
        self.requests = 0
        self.garbage_next = 0
        self.latency = {}       # ident -> seconds the client waited (not pipelined)
        self.served = {}        # slow ident -> "pid/tid" that ran it
        self.pipelined = set()  # "pid/tid" that answered a pipelined request

    def ident(self, prefix):
        with self.lock:
            self.next += 1
            return "%s%08d" % (prefix, self.next)

    def record(self, kind, ident, outcome, nreq=1, took=None):
        with self.lock:
            if took is not None:
                self.latency[ident] = took
            self.outcomes[kind].append((ident, outcome))
            self.count[kind] += 1
            self.requests += nreq

    def failed(self, kind, e):
        with self.lock:
            self.errors.append("%s: %s: %s" % (kind, type(e).__name__, e))
            self.count[kind] += 1

    def note_pipelined(self, data):
        with self.lock:
            self.pipelined.update(m.decode() for m in
                                  re.findall(rb"X-Served-By: (\d+/\d+)", data))

    # --- fast lane

    def j_keepalive(self, rng):
        c = harness.Client(self.port, TIMEOUT)
        try:
            for k in range(rng.randint(5, 20)):
                ident = self.ident("f-")
                extra = ["X-Pad: " + "x" * 1000] if k % 4 == 3 else []
                r = c.request("GET", "/fast?id=" + ident, extra=extra)
                self.record("fast-pad" if extra else "fast", ident, norm_resp(r, ident),
                            took=r.elapsed)
        finally:
            c.close()

    def j_http10(self, rng):
        ident = self.ident("h-")
        t0 = CLOCK()
        out = exchange(self.port, [head("GET", "/fast?id=" + ident, version="HTTP/1.0",
                                        host=False)])
        self.record("http10", ident, (norm(out[0], ident), out[1]), took=CLOCK() - t0)

    def j_head(self, rng):
        # One connection each: uWSGI sends the body of a HEAD response
        # (with or without the library), so nothing can follow on it.
        for kind, path in (("head", "/fast?"), ("head-stream", "/stream?n=2&s=0&")):
            ident = self.ident("hd-")
            c = harness.Client(self.port, TIMEOUT)
            try:
                r = c.request("HEAD", path + "id=" + ident)
                self.record(kind, ident, norm_resp(r, ident), took=r.elapsed)
            finally:
                c.close()

    def j_post(self, rng):
        ident = self.ident("p-")
        body = bytes(bytearray(random.Random(5).getrandbits(8) for _ in range(3000)))
        c = harness.Client(self.port, TIMEOUT)
        try:
            r = c.request("POST", "/post?id=" + ident, body=body)
            self.record("post", ident, norm_resp(r, ident), took=r.elapsed)
        finally:
            c.close()

    def j_stream(self, rng):
        ident = self.ident("st-")
        c = harness.Client(self.port, TIMEOUT)
        try:
            r = c.request("GET", "/stream?n=3&s=0&id=" + ident)
            self.record("stream", ident, norm_resp(r, ident), took=r.elapsed)
        finally:
            c.close()

    def j_pipeline(self, rng):
        ident = self.ident("")
        data = (head("GET", "/fast?id=pa-" + ident) + head("GET", "/fast?id=pb-" + ident) +
                head("GET", "/fast?id=pc-" + ident, ["Connection: close"]))
        out = exchange(self.port, [data])
        self.note_pipelined(out[0])
        self.record("pipeline", ident, (norm(out[0], ident), out[1]), 3)

    def j_bigheader(self, rng):
        ident = self.ident("bh-")
        t0 = CLOCK()
        data = head("GET", "/fast?id=" + ident, ["X-Big: " + "b" * 65536,
                                                  "Connection: close"])
        out = exchange(self.port, [data])
        self.record("big-header", ident, (norm(out[0], ident), out[1]), took=CLOCK() - t0)

    def j_bigline(self, rng):
        ident = self.ident("bl-")
        t0 = CLOCK()
        data = head("GET", "/fast?id=%s&pad=%s" % (ident, "l" * 65536),
                    ["Connection: close"])
        out = exchange(self.port, [data])
        self.record("big-line", ident, (norm(out[0], ident), out[1]), took=CLOCK() - t0)

    def j_garbage(self, rng):
        with self.lock:
            self.garbage_next += 1
            k = self.garbage_next % len(GARBAGE)
        out = exchange(self.port, [GARBAGE[k]], shut=True)
        self.record("garbage-%02d" % k, "", (norm(out[0], None), out[1]))

    def j_halfhead(self, rng):
        ident = self.ident("hh-")
        data = head("GET", "/fast?id=" + ident, ["User-Agent: soak"])
        exchange(self.port, [data[:len(data) // 2]], read=False)
        self.record("half-head", ident, None)

    # --- slow lane

    def slow(self, kind, prefix, method, path, secs, warm=False):
        ident = self.ident(prefix)
        with self.lock:
            self.must[ident] = (kind, secs)
        c = harness.Client(self.port, TIMEOUT)
        try:
            if warm:
                w = self.ident("w-")
                r = c.request("GET", "/fast?id=" + w)
                self.record("fast", w, norm_resp(r, w), took=r.elapsed)
            r = c.request(method, "%s&id=%s" % (path, ident))
            self.served[ident] = r.header("X-Served-By")
            self.record(kind, ident, norm_resp(r, ident))
        finally:
            c.close()

    def j_sleep(self, rng):
        self.slow("sleep", "s-", "GET", "/sleep?s=0.45", 0.45, warm=rng.random() < 0.5)

    def j_sleep_long(self, rng):
        self.slow("sleep-long", "sl-", "GET", "/sleep?s=0.8", 0.8)

    def j_spin(self, rng):
        self.slow("spin", "sp-", "GET", "/spin?s=0.5", 0.5)

    def j_head_slow(self, rng):
        self.slow("head-slow", "hs-", "HEAD", "/sleep?s=0.6", 0.6)

    def j_abort_slow(self, rng):
        ident = self.ident("as-")
        with self.lock:
            self.must[ident] = ("abort-slow", 0.6)
        s = connect(self.port)
        try:
            s.sendall(head("GET", "/sleep?s=0.6&id=" + ident))
            time.sleep(0.1)
        finally:
            s.close()
        self.record("abort-slow", ident, None)

    def j_abort_rst(self, rng):
        ident = self.ident("ar-")
        with self.lock:
            self.may.add(ident)
        s = connect(self.port)
        try:
            s.sendall(head("GET", "/sleep?s=0.6&id=" + ident))
            time.sleep(0.05)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        finally:
            s.close()
        self.record("abort-rst", ident, None)

    def j_slowloris(self, rng):
        ident = self.ident("lo-")
        with self.lock:
            self.may.add(ident)
        data = head("GET", "/fast?id=" + ident, ["User-Agent: slowloris",
                                                  "Connection: close"])
        step = (len(data) + 11) // 12
        out = exchange(self.port, [data[i:i + step] for i in range(0, len(data), step)],
                       gap=0.055)
        self.record("slowloris", ident, (norm(out[0], ident), out[1]))

    def j_pipeline_slow(self, rng):
        ident = self.ident("")
        with self.lock:
            self.must["ps-" + ident] = ("pipeline-slow", 0.45)
        data = (head("GET", "/sleep?s=0.45&id=ps-" + ident) +
                head("GET", "/fast?id=pf-" + ident, ["Connection: close"]))
        out = exchange(self.port, [data])
        self.note_pipelined(out[0])
        self.record("pipeline-slow", ident, (norm(out[0], ident), out[1]), 2)

    FAST = [("j_keepalive", 60), ("j_http10", 6), ("j_head", 5), ("j_post", 4),
            ("j_stream", 4), ("j_pipeline", 1), ("j_bigheader", 1), ("j_bigline", 1),
            ("j_garbage", 3), ("j_halfhead", 3)]
    SLOW = [("j_sleep", 4), ("j_sleep_long", 2), ("j_spin", 2), ("j_head_slow", 1),
            ("j_abort_slow", 2), ("j_abort_rst", 1), ("j_slowloris", 2),
            ("j_pipeline_slow", 1)]

    def lane(self, mix, seed, deadline, every=False):
        rng = random.Random(seed)
        names = [n for n, w in mix for _ in range(w)]
        # The baseline: each kind once, the garbage in all its variants.
        order = [n for n, _ in mix for _ in range(3 if n == "j_garbage" else 1)
                 ] if every else []
        while CLOCK() < deadline or order:
            name = order.pop(0) if order else rng.choice(names)
            try:
                getattr(self, name)(rng)
            except (OSError, harness.HTTPError) as e:
                self.failed(name, e)

    def run(self, seconds, fast_lanes, slow_lanes, every=0):
        """Load for `seconds`; with every=N each lane first runs each of its
        kinds N times (the baseline: then every kind runs at least twice,
        on as many lanes)."""
        deadline = CLOCK() + seconds
        ts = []
        for i in range(fast_lanes):
            ts.append(threading.Thread(target=self._lanes, args=(
                self.FAST, self.seed * 1000 + i, deadline, every)))
        for i in range(slow_lanes):
            ts.append(threading.Thread(target=self._lanes, args=(
                self.SLOW, self.seed * 1000 + 100 + i, deadline, every)))
        for t in ts:
            t.daemon = True
            t.start()
        for t in ts:
            t.join()

    def _lanes(self, mix, seed, deadline, every):
        for k in range(every):
            self.lane(mix, seed + k, 0, every=True)
        self.lane(mix, seed, deadline)


# ---------------------------------------------------------------- one server

class Result(object):
    def __init__(self):
        self.problems = []
        self.notes = []


def start(server, lib, preload, tmp, tag):
    port = harness.free_port()
    log_path = os.path.join(tmp, tag + ".log")
    proc = harness.Server(server.command(port), server_env(preload, lib, log_path),
                          os.path.join(tmp, tag + ".out"), port=port, cwd=tmp,
                          stop_signal=server.stop_signal, session=True, wait=None)
    err = harness.wait_ready(port, proc, CLOCK() + 30)
    if err:
        proc.stop(15.0)
        raise RuntimeError("%s: %s\n%s" % (tag, err, proc.output()[-2000:]))
    # Every worker must be up and serving before the load starts.
    deadline = CLOCK() + 15
    while CLOCK() < deadline and len(workers(proc)) < 2:
        time.sleep(0.1)
    time.sleep(0.5)
    return proc, port, log_path


def quiesce(tail=None):
    # Kept-alive connections close (gunicorn --keep-alive 2), stray
    # reports and finished lines arrive.
    time.sleep(2.5)


def baseline(server, tmp):
    proc, port, _ = start(server, None, False, tmp, "base")
    try:
        t = Traffic(port, 7)
        t.run(0, server.fast_lanes, server.slow_lanes, every=1)
    finally:
        proc.stop(15.0)
    return t, proc


def soak(server, lib, tmp, seconds, first):
    res = Result()
    proc, port, log_path = start(server, lib, lib is not None, tmp, "lib")
    t = Traffic(port, 11)
    rss0 = rss1 = {}
    w0 = w1 = []
    try:
        w0 = workers(proc)
        for pid in (w0 if lib else []):
            with open("/proc/%d/maps" % pid) as f:
                if "libslowdog.so" not in f.read():
                    res.problems.append("library not mapped in worker %d" % pid)
        t0 = CLOCK()
        t.run(first, server.fast_lanes, server.slow_lanes)
        quiesce()
        rss0 = {p: vmrss(p) for p in w0}
        n0 = t.requests
        t.run(max(0.0, seconds - first), server.fast_lanes, server.slow_lanes)
        took = CLOCK() - t0
        quiesce()
        rss1 = {p: vmrss(p) for p in w0}
        w1 = workers(proc)
        res.notes.append("%d requests in %.0f s (%d after the first sample), "
                         "%d slow ones" % (t.requests, took, t.requests - n0, len(t.must)))
    finally:
        proc.stop(15.0)
    res.traffic = t
    res.proc = proc
    if proc.stop_problem:
        res.problems.append("stop: " + proc.stop_problem)
    if w0 != w1:
        res.problems.append("workers changed: %s at the start, %s at the end" % (w0, w1))
    for p in w0:
        a, b = rss0.get(p), rss1.get(p)
        if a is None or b is None:
            res.problems.append("worker %d: no VmRSS (gone?)" % p)
            continue
        res.notes.append("worker %d VmRSS %d KiB -> %d KiB (%+d)" % (p, a, b, b - a))
        if b - a >= RSS_BOUND:
            res.problems.append("worker %d grew by %d KiB (bound %d KiB)"
                                % (p, b - a, RSS_BOUND))
    try:
        with open(log_path, "rb") as f:
            res.log_text = f.read().decode("utf-8", "replace")
    except OSError:
        res.log_text = ""
        res.problems.append("no log written")
    res.workers = set(w0)
    return res


ID_RE = re.compile(r"[?&]id=([a-z]+-\d{8})(?:$|&)")


def repeats(text):
    """Repeat: N of each report block, by request id, in log order."""
    out = collections.defaultdict(list)
    for block in text.split(slowlog.BEGIN + "\n")[1:]:
        rid = re.search(r"^Request-Id: (\S+)$", block, re.M)
        rep = re.search(r"^Repeat: +(\d+)", block, re.M)
        if rid:
            out[rid.group(1)].append(int(rep.group(1)) if rep else 1)
    return out


def check(server, base, bproc, res):
    p = res.problems
    t = res.traffic
    # answers
    ref = {}
    for kind, outs in sorted(base.outcomes.items()):
        vals = set(o for _, o in outs if o is not None)
        if len(vals) > 1:
            res.notes.append("baseline: %s answers vary (%d ways): not compared"
                             % (kind, len(vals)))
        elif vals:
            ref[kind] = vals.pop()
    compared = 0
    for kind, outs in sorted(t.outcomes.items()):
        if kind not in ref:
            if kind not in base.outcomes or any(o is not None for _, o in base.outcomes[kind]):
                if kind not in base.outcomes:
                    res.notes.append("%s: not in the baseline" % kind)
            continue
        bad = [(i, o) for i, o in outs if o != ref[kind]]
        compared += len(outs) - len(bad)
        if bad:
            p.append("%s: %d of %d answers differ from the baseline, e.g. %s: %r\n"
                     "        baseline: %r" % (kind, len(bad), len(outs), bad[0][0],
                                               bad[0][1], ref[kind]))
    res.notes.append("%d answers compared with the baseline" % compared)
    res.notes.append("load average %.1f at the end, %d CPUs" % (os.getloadavg()[0],
                                                              os.cpu_count()))
    for e in base.errors[:5]:
        p.append("baseline client error: " + e)
    for e in t.errors[:10]:
        p.append("client error: " + e)
    if len(t.errors) > 10:
        p.append("... %d client errors in all" % len(t.errors))

    # the log
    reports, finished, errors = slowlog.parse(res.log_text)
    failed_at = set(r.lineno for r in reports if r.capture.startswith("failed"))
    # slowlog.py knows no Repeat line, and wants a stack section even when
    # the capture failed (the library writes none): not our findings.
    errors = [e for e in errors if "unknown field 'Repeat'" not in e and not (
        "no native stack section" in e and
        int(re.search(r"report at line (\d+)", e).group(1)) in failed_at)]
    for e in errors[:10]:
        p.append("log: " + e)
    # The machine is too busy for the timing checks (how many captures,
    # none failing for want of an answer within 200 ms, every slow request
    # caught before its end) when slow requests overran or the load is
    # high: a few such problems become notes. Wrong answers, wrong or
    # malformed reports, reports of fast requests, crashes and growth never
    # do.
    busy = os.getloadavg()[0] > 1.5 * (os.cpu_count() or 1)
    timing = []
    reps_by = collections.defaultdict(list)
    other = []
    for r in reports:
        m = ID_RE.search(r.request or "")
        if m:
            reps_by[m.group(1)].append(r)
        else:
            other.append(r)
        if r.pid not in res.workers:
            p.append("report %s from pid %s, not a worker" % (r.request_id, r.pid))
        if r.running is not None and r.running < THRESHOLD:
            p.append("report %s at %.3f s, before the threshold" % (r.request_id, r.running))
        if r.capture.startswith("failed"):
            (timing if "did not answer" in r.capture else p).append(
                "report %s: Capture: %s" % (r.request_id, r.capture))
    rep_no = repeats(res.log_text)
    fin_by = collections.defaultdict(list)
    for f in finished:
        fin_by[f.request_id].append(f)
    missing = []
    overrun = []
    for ident, (kind, secs) in sorted(t.must.items()):
        reps = reps_by.get(ident, [])
        if not reps:
            missing.append("%s (%s)" % (ident, kind))
            continue
        ids = set(r.request_id for r in reps)
        if len(ids) != 1:
            p.append("%s: reports under several request ids %s" % (ident, sorted(ids)))
            continue
        rid = ids.pop()
        nums = rep_no.get(rid, [])
        fins = fin_by.get(rid, [])
        took = fins[0].seconds if fins else secs
        want = min(REPEAT_MAX, 1 + int(max(0.0, took - THRESHOLD - SLACK) / REPEAT))
        if took > secs + OVERRUN:
            overrun.append(ident)
        if nums != list(range(1, len(nums) + 1)) or len(nums) > REPEAT_MAX:
            p.append("%s (%s): captures numbered %s" % (ident, kind, nums))
        elif len(nums) < want:
            timing.append("%s (%s, ran %.3f s): %d captures, expected %d to %d"
                          % (ident, kind, took, len(nums), want, REPEAT_MAX))
        if kind != "abort-slow" and len(fins) != 1:
            p.append("%s (%s): %d finished lines" % (ident, kind, len(fins)))
    if overrun:
        res.notes.append("%d slow requests ran more than %.2f s longer than asked"
                         % (len(overrun), OVERRUN))
    if missing:
        kinds = collections.Counter(m.split("(")[1].rstrip(")") for m in missing)
        timing.append("%d of %d slow requests not reported (%s): %s"
                      % (len(missing), len(t.must),
                         ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items())),
                         ", ".join(missing[:10])))
    # ... but only a few: a library that drops many is not excused.
    ntiming = len(timing) - (1 if missing else 0) + len(missing)
    few = max(2, int(0.02 * len(t.must)))
    after_pipe = [m.split()[0] for m in missing
                  if t.served.get(m.split()[0]) in t.pipelined]
    if after_pipe:
        timing.append("%d of the slow requests not reported ran on threads that "
                      "had answered pipelined requests: %s"
                      % (len(after_pipe), ", ".join(after_pipe[:5])))
    if timing and (busy or overrun) and ntiming <= few:
        res.notes.append("the machine is busy (load %.1f, %d CPUs; %d slow requests "
                         "overran): %d timing problems (at most %d excused) are notes"
                         % (os.getloadavg()[0], os.cpu_count(), len(overrun),
                            ntiming, few))
        res.notes.extend("timing: " + x for x in timing)
    else:
        p.extend(timing)

    # Reports of requests that were not slow. A fast request that the
    # client itself saw take longer than the threshold (the machine stalled
    # it) may be reported: the server was busy with it that long.
    allowed = set(t.must) | t.may
    stalled = []
    for w in sorted(set(reps_by) - allowed):
        if t.latency.get(w, 0.0) >= THRESHOLD:
            stalled.append(w)
        else:
            p.append("a request that was not slow was reported: %s (%s), the "
                     "client had its answer in %s" % (
                         w, reps_by[w][0].request,
                         "%.3f s" % t.latency[w] if w in t.latency else "(pipelined)"))
    if stalled:
        res.notes.append("%d fast requests that took the client more than the "
                         "threshold were reported: %s" % (len(stalled), stalled[:5]))
    # A slowloris report may name what the head held so far.
    lo = ["GET /fast?id=" + i for i in t.may if i.startswith("lo-")]
    for r in other:
        if not any(x.startswith(r.request or "-") for x in lo):
            p.append("report of a request without an id: %s (%s)"
                     % (r.request_id, r.request))
    known = set(r.request_id for r in reports)
    stray = [f for f in finished if f.request_id not in known]
    if stray:
        p.append("%d finished lines of unreported requests, e.g. %s"
                 % (len(stray), stray[0].request))
    nmay = sum(1 for i in t.may if i in reps_by) + len(other)
    res.notes.append("%d reports (%d of requests that may be reported), %d finished lines"
                     % (len(reports), nmay, len(finished)))

    # the server
    out = res.proc.output()
    for line in out.splitlines():
        if "slowdog" in line:
            p.append("server output: " + line.strip()[:300])
            break
    for m in CRASH:
        if m in out and m not in bproc.output():
            p.append("server output mentions %r" % m)
    if res.proc.returncode != bproc.returncode:
        p.append("exit status %s with the library, %s without"
                 % (res.proc.returncode, bproc.returncode))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="bounded CI run")
    g.add_argument("--minutes", type=float, default=None,
                   help="minutes of load per server")
    ap.add_argument("-k", action="append", default=[], metavar="NAME")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--without", action="append", default=[], metavar="JOB",
                    help="leave a kind of job out (e.g. pipeline_slow), to "
                    "tell which one a failure comes from")
    ap.add_argument("--no-preload", action="store_true",
                    help="the checked run without the library too (to see "
                    "the servers' own memory growth; log checks fail)")
    args = ap.parse_args()

    for w in args.without:
        n = len(Traffic.FAST) + len(Traffic.SLOW)
        Traffic.FAST = [j for j in Traffic.FAST if j[0] != "j_" + w]
        Traffic.SLOW = [j for j in Traffic.SLOW if j[0] != "j_" + w]
        if n == len(Traffic.FAST) + len(Traffic.SLOW):
            log("error: no job kind %s" % w)
            return 2
    lib = os.path.join(os.path.abspath(args.build), "libslowdog.so")
    if not os.path.exists(lib):
        log("error: no %s (build first)" % lib)
        return 2
    if args.minutes:
        seconds, first = args.minutes * 60, 60.0
        if seconds < 2 * first:
            first = seconds / 3
    else:
        seconds, first = 12.0, 4.0
    tmp = tempfile.mkdtemp(prefix="sd-soak-")
    os.chmod(tmp, 0o755)
    fails = passes = 0
    t_all = CLOCK()
    try:
        for server in SERVERS:
            if args.k and not any(k in server.name for k in args.k):
                continue
            why = server.available()
            if why:
                log("SKIP %s (%s)" % (server.name, why))
                continue
            t0 = CLOCK()
            d = tempfile.mkdtemp(prefix=server.name + "-", dir=tmp)
            try:
                base, bproc = baseline(server, d)
                res = soak(server, None if args.no_preload else lib, d, seconds, first)
                check(server, base, bproc, res)
            except Exception as e:  # the harness reports, never dies
                res = Result()
                res.problems.append("harness: %s: %s" % (type(e).__name__, e))
                res.log_text = ""
            ok = not res.problems
            fails += not ok
            passes += ok
            log("%s %s (%.0f s)" % ("ok  " if ok else "FAIL", server.name, CLOCK() - t0))
            for n in res.notes:
                log("     " + n)
            for x in res.problems:
                log("     " + x)
            if not ok and args.verbose:
                for line in res.log_text.splitlines()[-80:]:
                    log("     | " + line)
    finally:
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log("%d passed, %d failed (%.0f s)" % (passes, fails, CLOCK() - t_all))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
